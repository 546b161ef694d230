//! The link watchdog's ladder: what to do after the n-th failure in a row
//! of a modem link (a failed dial, or a connected link whose probe has
//! failed): re-dial twice, then reset the modem (`AT+CFUN=1,1`), then cut
//! its power through a GPIO if the board names one, alternating the two;
//! after `reboot_after` failures (if set), reboot the board. A success
//! starts the ladder again.

/// One step.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    Redial,
    ResetModem,
    PowerCycle,
    Reboot,
}

impl Step {
    pub fn name(self) -> &'static str {
        match self {
            Self::Redial => "re-dial",
            Self::ResetModem => "modem reset (AT+CFUN=1,1)",
            Self::PowerCycle => "modem power cycle (GPIO)",
            Self::Reboot => "reboot",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ladder {
    pub failures: u32,
    /// Failures in a row before a reboot; 0 = never.
    pub reboot_after: u32,
    pub has_power_gpio: bool,
}

impl Ladder {
    pub fn new(reboot_after: u32, has_power_gpio: bool) -> Self {
        Self {
            failures: 0,
            reboot_after,
            has_power_gpio,
        }
    }

    /// One more failure: the step to take.
    pub fn failed(&mut self) -> Step {
        self.failures = self.failures.saturating_add(1);
        let n = self.failures;
        if self.reboot_after > 0 && n >= self.reboot_after {
            return Step::Reboot;
        }
        match n {
            0..=2 => Step::Redial,
            _ if self.has_power_gpio && n % 2 == 0 => Step::PowerCycle,
            _ => Step::ResetModem,
        }
    }

    pub fn succeeded(&mut self) {
        self.failures = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn steps(mut l: Ladder, n: usize) -> Vec<Step> {
        (0..n).map(|_| l.failed()).collect()
    }

    #[test]
    fn the_ladder_escalates() {
        use Step::*;
        assert_eq!(
            steps(Ladder::new(0, false), 5),
            [Redial, Redial, ResetModem, ResetModem, ResetModem]
        );
        assert_eq!(
            steps(Ladder::new(0, true), 6),
            [Redial, Redial, ResetModem, PowerCycle, ResetModem, PowerCycle]
        );
        assert_eq!(
            steps(Ladder::new(5, true), 6),
            [Redial, Redial, ResetModem, PowerCycle, Reboot, Reboot]
        );
        let mut l = Ladder::new(3, false);
        l.failed();
        l.failed();
        l.succeeded();
        assert_eq!(l.failed(), Redial, "a success starts over");
    }
}
