//! The machine config in force and how a new one is applied (Talos's modes):
//! `no-reboot` (live fields only), `reboot`, `staged` (at the next boot) and
//! `try` (live, reverted unless confirmed in time; never written to DATA, so
//! a reboot or power cut during a try also reverts it).

use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use crate::config::{self, ConfigError, MachineConfig};
use crate::wire::{ApplyMode, ConfigPlan, WireError};

/// The config in force, on DATA.
pub const MACHINE_PATH: &str = "config/machine.toml";
/// A config applied with `staged`: it replaces [`MACHINE_PATH`] at the next boot.
pub const STAGED_PATH: &str = "config/staged.toml";
/// A staged config that failed validation at boot is kept here for the operator.
pub const REJECTED_PATH: &str = "config/staged.rejected.toml";

/// How long a `try` waits for `confirm` when the request does not say.
pub const DEFAULT_TRY_SECS: u16 = 60;
/// A try longer than an hour would leave a half-decided board for too long.
pub const MAX_TRY_SECS: u16 = 3600;

/// What the board does to apply a field without a reboot.
pub trait LiveApply: Send + Sync {
    fn hostname(&self, name: &str) -> Result<(), String>;
    /// `None`: back to the board's default timeout.
    fn watchdog_timeout(&self, secs: Option<u32>) -> Result<(), String>;
}

/// Host mode and boards without the hardware: nothing to change.
pub struct NoLive;

impl LiveApply for NoLive {
    fn hostname(&self, _: &str) -> Result<(), String> {
        Ok(())
    }
    fn watchdog_timeout(&self, _: Option<u32>) -> Result<(), String> {
        Ok(())
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ApplyError {
    #[error("{0}")]
    Invalid(#[from] ConfigError),
    #[error("{0} (use --force to apply it anyway)")]
    CutOff(String),
    #[error("{fields} only take effect at boot: use --mode reboot or --mode staged")]
    NeedsReboot { fields: String },
    #[error("a config try is pending: confirm it or let it revert first")]
    TryPending,
    #[error("no config try is pending")]
    NoTry,
    #[error("try timeout {0} s is not 1 to {MAX_TRY_SECS}")]
    TryTimeout(u16),
    #[error("applying {what}: {why}")]
    Live { what: &'static str, why: String },
    #[error("writing {}: {source}", path.display())]
    Storage {
        path: PathBuf,
        source: std::io::Error,
    },
}

impl From<ApplyError> for WireError {
    fn from(e: ApplyError) -> Self {
        match e {
            ApplyError::Invalid(_)
            | ApplyError::CutOff(_)
            | ApplyError::NeedsReboot { .. }
            | ApplyError::NoTry
            | ApplyError::TryPending
            | ApplyError::TryTimeout(_) => WireError::Invalid(e.to_string()),
            ApplyError::Live { .. } | ApplyError::Storage { .. } => {
                WireError::Device(e.to_string())
            }
        }
    }
}

/// One apply request, as it came from the API.
pub struct Apply<'a> {
    pub text: &'a str,
    pub mode: ApplyMode,
    pub dry_run: bool,
    pub force: bool,
    /// 0 = [`DEFAULT_TRY_SECS`].
    pub try_secs: u16,
}

/// What the board looks like now, for the cut-off check.
pub struct Board<'a> {
    pub addresses: &'a [String],
    pub links: &'a [String],
}

/// After a successful apply: whether the caller must reboot the board.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum After {
    Nothing,
    Reboot,
}

struct Trial {
    previous: MachineConfig,
    deadline: Instant,
    secs: u16,
}

struct State {
    current: MachineConfig,
    trial: Option<Trial>,
}

pub struct ConfigManager {
    data_dir: PathBuf,
    state: Mutex<State>,
    live: Box<dyn LiveApply>,
}

impl ConfigManager {
    pub fn new(data_dir: &Path, current: MachineConfig, live: Box<dyn LiveApply>) -> Self {
        Self {
            data_dir: data_dir.to_path_buf(),
            state: Mutex::new(State {
                current,
                trial: None,
            }),
            live,
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The config in force (a tried one while a try is pending).
    pub fn current(&self) -> MachineConfig {
        self.lock().current.clone()
    }

    pub fn hostname(&self) -> String {
        self.lock().current.hostname.clone()
    }

    pub fn try_pending(&self) -> bool {
        self.lock().trial.is_some()
    }

    /// Validate, plan and (unless a dry run) apply `req`.
    pub fn apply(
        &self,
        req: &Apply,
        board: &Board,
        now: Instant,
    ) -> Result<(ConfigPlan, After), ApplyError> {
        let new = MachineConfig::from_toml(req.text)?;
        let mut state = self.lock();
        let plan = config::plan(&state.current, &new);
        let answer = |applied| ConfigPlan {
            changes: plan.changes.clone(),
            needs_reboot: plan.needs_reboot(),
            applied,
        };
        if !req.force {
            if let Some(why) = config::cut_off(&state.current, &new, board.addresses, board.links) {
                return Err(ApplyError::CutOff(why));
            }
        }
        let live_only = matches!(req.mode, ApplyMode::NoReboot | ApplyMode::Try);
        if live_only && plan.needs_reboot() {
            return Err(ApplyError::NeedsReboot {
                fields: plan.reboot_fields.join(", "),
            });
        }
        let secs = match req.try_secs {
            0 => DEFAULT_TRY_SECS,
            s if s > MAX_TRY_SECS => return Err(ApplyError::TryTimeout(s)),
            s => s,
        };
        if req.dry_run {
            return Ok((answer(false), After::Nothing));
        }
        if state.trial.is_some() {
            return Err(ApplyError::TryPending);
        }
        if plan.changes.is_empty() && req.mode != ApplyMode::Staged {
            return Ok((answer(false), After::Nothing));
        }
        let after = match req.mode {
            ApplyMode::NoReboot => {
                self.go_live(&state.current, &new)?;
                if let Err(e) = self.persist(MACHINE_PATH, req.text) {
                    let _ = self.go_live(&new, &state.current);
                    return Err(e);
                }
                state.current = new;
                After::Nothing
            }
            ApplyMode::Reboot => {
                self.persist(MACHINE_PATH, req.text)?;
                After::Reboot
            }
            ApplyMode::Staged => {
                self.persist(STAGED_PATH, req.text)?;
                After::Nothing
            }
            ApplyMode::Try => {
                self.go_live(&state.current, &new)?;
                let previous = std::mem::replace(&mut state.current, new);
                state.trial = Some(Trial {
                    previous,
                    deadline: now + Duration::from_secs(u64::from(secs)),
                    secs,
                });
                tracing::warn!("config try applied; reverts in {secs} s unless confirmed");
                After::Nothing
            }
        };
        if req.mode != ApplyMode::Try {
            tracing::info!(
                "config applied ({:?}): {}",
                req.mode,
                plan.changes.join("; ")
            );
        }
        Ok((answer(true), after))
    }

    /// Keep the config under try: write it to DATA.
    pub fn confirm(&self) -> Result<(), ApplyError> {
        let mut state = self.lock();
        if state.trial.is_none() {
            return Err(ApplyError::NoTry);
        }
        self.persist(MACHINE_PATH, &state.current.to_toml())?;
        state.trial = None;
        tracing::info!("config try confirmed");
        Ok(())
    }

    /// Revert a try whose deadline passed. Returns whether it did.
    pub fn revert_if_due(&self, now: Instant) -> bool {
        let mut state = self.lock();
        let Some(trial) = state.trial.take_if(|t| now >= t.deadline) else {
            return false;
        };
        if let Err(e) = self.go_live(&state.current, &trial.previous) {
            tracing::error!("config try revert: {e}");
        }
        state.current = trial.previous;
        tracing::warn!("config try not confirmed within {} s: reverted", trial.secs);
        true
    }

    /// Check for an expired try once a second, for as long as the board runs.
    pub async fn watch_tries(self: std::sync::Arc<Self>) {
        loop {
            smol::Timer::after(Duration::from_secs(1)).await;
            self.revert_if_due(Instant::now());
        }
    }

    /// Apply the live fields that differ between `from` and `to`.
    fn go_live(&self, from: &MachineConfig, to: &MachineConfig) -> Result<(), ApplyError> {
        if from.hostname != to.hostname {
            self.live
                .hostname(&to.hostname)
                .map_err(|why| ApplyError::Live {
                    what: "hostname",
                    why,
                })?;
        }
        if from.watchdog != to.watchdog {
            self.live
                .watchdog_timeout(to.watchdog.timeout_secs)
                .map_err(|why| ApplyError::Live {
                    what: "watchdog.timeout_secs",
                    why,
                })?;
        }
        Ok(())
    }

    fn persist(&self, rel: &str, text: &str) -> Result<(), ApplyError> {
        let path = self.data_dir.join(rel);
        super::durable::write_durably(&path, text.as_bytes())
            .map_err(|source| ApplyError::Storage { path, source })
    }
}

/// At boot, before the config is loaded: a staged config replaces the one in
/// force (one rename: a power cut leaves either). An invalid one is set
/// aside, named in the log, and the old config stays.
pub fn promote_staged(data_dir: &Path) {
    let staged = data_dir.join(STAGED_PATH);
    let Ok(text) = std::fs::read_to_string(&staged) else {
        return;
    };
    match MachineConfig::from_toml(&text) {
        Ok(_) => match std::fs::rename(&staged, data_dir.join(MACHINE_PATH)) {
            Ok(()) => tracing::info!("config: the staged config is now in force"),
            Err(e) => tracing::error!("config: promoting {}: {e}", staged.display()),
        },
        Err(e) => {
            tracing::error!("config: staged config refused, old one kept: {e}");
            let _ = std::fs::rename(&staged, data_dir.join(REJECTED_PATH));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    #[derive(Default, Clone)]
    struct Recorder(Arc<Mutex<Vec<String>>>);

    impl LiveApply for Recorder {
        fn hostname(&self, name: &str) -> Result<(), String> {
            if name == "refused" {
                return Err("EPERM".into());
            }
            self.0.lock().unwrap().push(format!("hostname {name}"));
            Ok(())
        }
        fn watchdog_timeout(&self, secs: Option<u32>) -> Result<(), String> {
            self.0.lock().unwrap().push(format!("watchdog {secs:?}"));
            Ok(())
        }
    }

    const BASE: &str = "hostname = \"edge\"\n";

    fn manager() -> (tempfile::TempDir, ConfigManager, Recorder) {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("config")).unwrap();
        std::fs::write(dir.path().join(MACHINE_PATH), BASE).unwrap();
        let rec = Recorder::default();
        let m = ConfigManager::new(
            dir.path(),
            MachineConfig::from_toml(BASE).unwrap(),
            Box::new(rec.clone()),
        );
        (dir, m, rec)
    }

    fn apply(
        m: &ConfigManager,
        text: &str,
        mode: ApplyMode,
    ) -> Result<(ConfigPlan, After), ApplyError> {
        let addresses = ["eth0 10.0.2.15/24".to_owned()];
        let links = ["eth0 up".to_owned()];
        let board = Board {
            addresses: &addresses,
            links: &links,
        };
        let req = Apply {
            text,
            mode,
            dry_run: false,
            force: false,
            try_secs: 5,
        };
        m.apply(&req, &board, Instant::now())
    }

    fn on_disk(dir: &tempfile::TempDir, rel: &str) -> Option<String> {
        std::fs::read_to_string(dir.path().join(rel)).ok()
    }

    #[test]
    fn bad_configs_name_the_field_and_change_nothing() {
        let (dir, m, rec) = manager();
        let e = apply(&m, "hostname = \"a b\"", ApplyMode::NoReboot).unwrap_err();
        assert!(e.to_string().contains("hostname"), "{e}");
        let e = apply(&m, "hostname = \"x\"\nbogus = 1", ApplyMode::Reboot).unwrap_err();
        assert!(e.to_string().contains("bogus"), "{e}");
        let cut = "hostname = \"edge\"\n[network]\nmode = \"static\"\naddress = \"192.0.2.4/24\"";
        let e = apply(&m, cut, ApplyMode::Reboot).unwrap_err();
        assert!(matches!(e, ApplyError::CutOff(_)), "{e}");
        assert_eq!(on_disk(&dir, MACHINE_PATH).unwrap(), BASE);
        assert!(rec.0.lock().unwrap().is_empty());
    }

    #[test]
    fn no_reboot_applies_live_fields_and_refuses_boot_fields() {
        let (dir, m, rec) = manager();
        let new = "hostname = \"edge-2\"\n[watchdog]\ntimeout_secs = 20\n";
        let (plan, after) = apply(&m, new, ApplyMode::NoReboot).unwrap();
        assert!(plan.applied && !plan.needs_reboot && after == After::Nothing);
        assert_eq!(on_disk(&dir, MACHINE_PATH).unwrap(), new);
        assert_eq!(m.hostname(), "edge-2");
        assert_eq!(
            *rec.0.lock().unwrap(),
            ["hostname edge-2", "watchdog Some(20)"]
        );
        let e = apply(
            &m,
            "hostname = \"edge-2\"\n[api]\nport = 50001",
            ApplyMode::NoReboot,
        );
        // The port change is also a cut-off; forced, it still needs a reboot.
        assert!(matches!(e, Err(ApplyError::CutOff(_))));
        let e = apply(
            &m,
            "hostname = \"edge-2\"\n[network]\ninterface = \"eth0\"",
            ApplyMode::NoReboot,
        )
        .unwrap_err();
        assert!(e.to_string().contains("network.interface"), "{e}");
        // A live failure leaves the old config in force and on disk.
        assert!(apply(&m, "hostname = \"refused\"", ApplyMode::NoReboot).is_err());
        assert_eq!(m.hostname(), "edge-2");
        assert_eq!(on_disk(&dir, MACHINE_PATH).unwrap(), new);
    }

    #[test]
    fn reboot_writes_and_asks_for_a_reboot_staged_waits_for_boot() {
        let (dir, m, _) = manager();
        let new = "hostname = \"edge\"\n[network]\ninterface = \"eth0\"\n";
        let (plan, after) = apply(&m, new, ApplyMode::Reboot).unwrap();
        assert!(plan.applied && plan.needs_reboot && after == After::Reboot);
        assert_eq!(on_disk(&dir, MACHINE_PATH).unwrap(), new);

        let (dir, m, _) = manager();
        let (_, after) = apply(&m, new, ApplyMode::Staged).unwrap();
        assert_eq!(after, After::Nothing);
        assert_eq!(on_disk(&dir, MACHINE_PATH).unwrap(), BASE);
        promote_staged(dir.path());
        assert_eq!(on_disk(&dir, MACHINE_PATH).unwrap(), new);
        assert!(on_disk(&dir, STAGED_PATH).is_none());
        // A staged file that does not validate is set aside at boot.
        std::fs::write(dir.path().join(STAGED_PATH), "nonsense = [").unwrap();
        promote_staged(dir.path());
        assert_eq!(on_disk(&dir, MACHINE_PATH).unwrap(), new);
        assert!(on_disk(&dir, REJECTED_PATH).is_some());
    }

    #[test]
    fn try_reverts_on_timeout_and_keeps_on_confirm() {
        let (dir, m, rec) = manager();
        let t0 = Instant::now();
        apply(&m, "hostname = \"tried\"", ApplyMode::Try).unwrap();
        assert_eq!(m.hostname(), "tried");
        assert_eq!(
            on_disk(&dir, MACHINE_PATH).unwrap(),
            BASE,
            "a try is never on disk"
        );
        assert!(matches!(
            apply(&m, "hostname = \"other\"", ApplyMode::NoReboot),
            Err(ApplyError::TryPending)
        ));
        assert!(!m.revert_if_due(t0 + Duration::from_secs(4)));
        assert!(m.revert_if_due(t0 + Duration::from_secs(6)));
        assert_eq!(m.hostname(), "edge");
        assert_eq!(*rec.0.lock().unwrap(), ["hostname tried", "hostname edge"]);
        assert!(matches!(m.confirm(), Err(ApplyError::NoTry)));

        apply(&m, "hostname = \"kept\"", ApplyMode::Try).unwrap();
        m.confirm().unwrap();
        assert!(!m.revert_if_due(t0 + Duration::from_secs(3600)));
        assert_eq!(m.hostname(), "kept");
        assert!(on_disk(&dir, MACHINE_PATH).unwrap().contains("kept"));
    }

    #[test]
    fn dry_run_and_force() {
        let (dir, m, _) = manager();
        let cut = "hostname = \"edge\"\n[api]\nport = 50001";
        let addresses = ["eth0 10.0.2.15/24".to_owned()];
        let board = Board {
            addresses: &addresses,
            links: &[],
        };
        let mut req = Apply {
            text: cut,
            mode: ApplyMode::Reboot,
            dry_run: true,
            force: true,
            try_secs: 0,
        };
        let (plan, after) = m.apply(&req, &board, Instant::now()).unwrap();
        assert!(!plan.applied && plan.needs_reboot && after == After::Nothing);
        assert_eq!(on_disk(&dir, MACHINE_PATH).unwrap(), BASE);
        req.dry_run = false;
        let (plan, after) = m.apply(&req, &board, Instant::now()).unwrap();
        assert!(plan.applied && after == After::Reboot);
        req.try_secs = MAX_TRY_SECS + 1;
        assert!(matches!(
            m.apply(&req, &board, Instant::now()),
            Err(ApplyError::TryTimeout(_))
        ));
    }
}
