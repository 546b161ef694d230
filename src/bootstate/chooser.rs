//! The A/B chooser state kept in the env (RAUC bootchooser shape). U-Boot's
//! `boot.cmd` runs the same rule; this side reads and writes it.

use super::Env;

/// Boot attempts a slot gets when it is (re)armed.
pub const DEFAULT_ATTEMPTS: u8 = 3;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Slot {
    A,
    B,
}

impl Slot {
    pub fn name(self) -> &'static str {
        match self {
            Slot::A => "A",
            Slot::B => "B",
        }
    }
    pub fn parse(s: &str) -> Option<Slot> {
        match s {
            "A" => Some(Slot::A),
            "B" => Some(Slot::B),
            _ => None,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BootState {
    /// Slots in the order U-Boot tries them.
    pub order: Vec<Slot>,
    pub a_left: u8,
    pub b_left: u8,
}

impl BootState {
    /// Fresh card: slot A first with full attempts, B empty.
    pub fn initial() -> Self {
        Self {
            order: vec![Slot::A, Slot::B],
            a_left: DEFAULT_ATTEMPTS,
            b_left: 0,
        }
    }

    pub fn to_env(&self) -> Env {
        let mut env = Env::new();
        let order: Vec<&str> = self.order.iter().map(|s| s.name()).collect();
        env.set("BOOT_ORDER", order.join(" "));
        env.set("BOOT_A_LEFT", self.a_left.to_string());
        env.set("BOOT_B_LEFT", self.b_left.to_string());
        env
    }

    /// Read the chooser variables; a missing or garbled value is an error
    /// naming the variable.
    pub fn from_env(env: &Env) -> Result<Self, String> {
        let order_text = env.get("BOOT_ORDER").ok_or("BOOT_ORDER is missing")?;
        let mut order = Vec::new();
        for word in order_text.split_whitespace() {
            let slot = Slot::parse(word)
                .ok_or_else(|| format!("BOOT_ORDER names unknown slot `{word}`"))?;
            if order.contains(&slot) || order.len() >= 2 {
                return Err(format!("BOOT_ORDER `{order_text}` repeats a slot"));
            }
            order.push(slot);
        }
        let left = |key: &str| -> Result<u8, String> {
            let v = env.get(key).ok_or_else(|| format!("{key} is missing"))?;
            // U-Boot's setexpr writes hex without prefix; accept both forms.
            u8::from_str_radix(v.trim_start_matches("0x"), 16)
                .map_err(|_| format!("{key} = `{v}` is not a number"))
        };
        Ok(Self {
            order,
            a_left: left("BOOT_A_LEFT")?,
            b_left: left("BOOT_B_LEFT")?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn initial_state_round_trips() {
        let s = BootState::initial();
        assert_eq!(BootState::from_env(&s.to_env()).unwrap(), s);
    }

    #[test]
    fn garbled_state_names_the_variable() {
        let mut env = BootState::initial().to_env();
        env.set("BOOT_ORDER", "A C");
        assert!(BootState::from_env(&env).unwrap_err().contains("`C`"));
        let mut env = BootState::initial().to_env();
        env.set("BOOT_B_LEFT", "zz");
        assert!(BootState::from_env(&env)
            .unwrap_err()
            .contains("BOOT_B_LEFT"));
    }
}
