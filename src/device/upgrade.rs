//! The A/B slot manager behind the API: slot status, install of an uploaded
//! bundle into the inactive slot, switch, rollback. Long work (writing a
//! slot) runs on its own thread; the API answers at once and `slots` tells
//! how it went.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};

use super::delta;
use super::durable::write_durably;
use super::install::{self, Trust};
use super::slots::{SlotHealth, Slots, LAST_BOOT_FILE};
use super::upload::{Uploads, STAGING_DIR};
use crate::bootstate::{Slot, DEFAULT_ATTEMPTS};
use crate::bundle::format::BundleHeader;
use crate::wire::{SlotInfo, SlotsInfo, WireError};

/// Record of the last upgrade or rollback, on DATA (survives the reboot).
const LAST_EVENT_FILE: &str = "state/last-upgrade.txt";
/// Versions installed per slot, on DATA.
const SLOT_VERSION_FILE: &str = "state/slot-{}.version";

pub struct Ab {
    pub slots: Arc<Slots>,
    /// Block devices (or files, in host mode) of slots A and B.
    pub devices: [PathBuf; 2],
    pub trust: Trust,
    pub data_dir: PathBuf,
    /// An install in progress, so a second one is refused.
    busy: Mutex<bool>,
}

/// What an upgrade installs from (both uploaded to staging).
pub enum Source {
    /// A whole bundle.
    Bundle(PathBuf),
    /// A bundle's signed header and a delta payload of the chunks the
    /// device did not hold.
    Delta {
        manifest: PathBuf,
        manifest_sha: [u8; 32],
        payload: PathBuf,
    },
}

/// What to do once a new slot is in place.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum After {
    Reboot,
    Stay,
}

impl Ab {
    pub fn new(slots: Arc<Slots>, devices: [PathBuf; 2], trust: Trust, data_dir: PathBuf) -> Self {
        Self {
            slots,
            devices,
            trust,
            data_dir,
            busy: Mutex::new(false),
        }
    }

    fn device(&self, slot: Slot) -> &Path {
        match slot {
            Slot::A => &self.devices[0],
            Slot::B => &self.devices[1],
        }
    }

    /// Slot status for the API.
    pub fn info(&self) -> SlotsInfo {
        let st = self.slots.state();
        let version = |slot: Slot| {
            if st.booted == Some(slot) {
                return Some(self.trust.running_version.clone());
            }
            let path = self
                .data_dir
                .join(SLOT_VERSION_FILE.replace("{}", slot.name()));
            super::status::read_small(&path)
                .map(|v| v.trim().to_owned())
                .filter(|v| !v.is_empty())
        };
        let slots = st
            .slots
            .iter()
            .map(|s| SlotInfo {
                name: s.slot.name().to_owned(),
                state: match (s.active, s.health) {
                    (true, SlotHealth::Good) => "active".into(),
                    (true, _) => "active-trial".into(),
                    (false, SlotHealth::Good) => "good".into(),
                    (false, SlotHealth::Trial) => "trial".into(),
                    (false, SlotHealth::Bad) => "bad".into(),
                },
                attempts_left: s.attempts_left,
                version: version(s.slot),
            })
            .collect();
        let mut events = Vec::new();
        if let Some(e) = super::status::read_small(&self.data_dir.join(LAST_EVENT_FILE)) {
            events.push(e.trim().to_owned());
        }
        if let Some(b) = super::status::read_small(&self.data_dir.join(LAST_BOOT_FILE)) {
            if b.contains("fallback = true") {
                let reason = b
                    .lines()
                    .find_map(|l| l.strip_prefix("reason = "))
                    .unwrap_or("\"\"")
                    .trim_matches('"');
                events.push(format!(
                    "this boot fell back to {}: {reason}",
                    st.booted.map(|s| s.name()).unwrap_or("?")
                ));
            }
        }
        SlotsInfo {
            booted: st.booted.map(|s| s.name().to_owned()).unwrap_or_default(),
            primary: st.primary.name().to_owned(),
            slots,
            last_event: (!events.is_empty()).then(|| events.join("; ")),
        }
    }

    /// `DeltaPlan`: check the uploaded signed header `manifest` (as an
    /// upgrade would) and answer which chunks this device holds.
    pub fn plan(
        &self,
        manifest: &Path,
        manifest_sha: &[u8; 32],
        force: bool,
    ) -> Result<Vec<u8>, WireError> {
        let target = self.target()?;
        let (header, _) = install::verify(manifest, &self.trust, force, false)
            .map_err(|e| WireError::Invalid(e.to_string()))?;
        let local = self.local(&header, manifest_sha, target);
        Ok(delta::have(&header, &local))
    }

    fn target(&self) -> Result<Slot, WireError> {
        self.slots
            .booted()
            .map(Slot::other)
            .ok_or_else(|| WireError::Device("booted slot unknown".into()))
    }

    fn local(&self, header: &BundleHeader, manifest: &[u8; 32], target: Slot) -> delta::Local {
        let active = target.other();
        let idx = |s| delta::index_path(&self.data_dir, s);
        let (ai, ti) = (idx(active), idx(target));
        delta::find(
            header,
            manifest,
            [(self.device(active), &ai), (self.device(target), &ti)],
            &self.data_dir.join(STAGING_DIR),
        )
    }

    /// Check the bundle (or, for a delta, its signed header) now: signature,
    /// board, version; write the inactive slot on a thread; switch to it;
    /// then `done(after)`.
    pub fn upgrade(
        self: &Arc<Self>,
        what: Source,
        force: bool,
        after: After,
        done: impl FnOnce(After) + Send + 'static,
    ) -> Result<(), WireError> {
        let target = self.target()?;
        let (file, whole) = match &what {
            Source::Bundle(b) => (b, true),
            Source::Delta { manifest, .. } => (manifest, false),
        };
        let (header, payload_at) = install::verify(file, &self.trust, force, whole)
            .map_err(|e| WireError::Invalid(e.to_string()))?;
        {
            let mut busy = self.busy.lock().unwrap_or_else(PoisonError::into_inner);
            if *busy {
                return Err(WireError::Invalid(
                    "an upgrade is already being installed".into(),
                ));
            }
            *busy = true;
        }
        let ab = self.clone();
        tracing::info!("upgrade: installing {} into slot {target}", header.version);
        let spawned = std::thread::Builder::new()
            .name("install".into())
            .spawn(move || {
                let result = ab.install(&what, &header, payload_at, target);
                *ab.busy.lock().unwrap_or_else(PoisonError::into_inner) = false;
                match result {
                    Ok(()) => {
                        ab.record(&format!(
                            "installed {} in slot {target}; switching to it",
                            header.version
                        ));
                        // Written to the slot: the staged copy only fills DATA.
                        match &what {
                            Source::Bundle(b) => Uploads::discard(b),
                            Source::Delta {
                                manifest, payload, ..
                            } => {
                                Uploads::discard(manifest);
                                Uploads::discard(payload);
                            }
                        }
                        done(after);
                    }
                    Err(e) => {
                        tracing::error!("upgrade: {e}");
                        ab.record(&format!(
                            "install of {} into slot {target} failed: {e}",
                            header.version
                        ));
                    }
                }
            });
        spawned
            .map(|_| ())
            .map_err(|e| WireError::Device(format!("starting the install: {e}")))
    }

    fn install(
        &self,
        what: &Source,
        header: &BundleHeader,
        payload_at: u64,
        target: Slot,
    ) -> Result<(), String> {
        let (mut sources, locs) = match what {
            Source::Bundle(bundle) => (
                install::Sources::new(vec![bundle.clone()]),
                install::payload_locs(header, payload_at, 0),
            ),
            Source::Delta {
                manifest_sha,
                payload,
                ..
            } => {
                let mut local = self.local(header, manifest_sha, target);
                delta::use_payload(header, manifest_sha, payload, &mut local)
                    .map_err(|e| e.to_string())?;
                (local.sources, local.locs)
            }
        };
        // The slot's chunk list goes first: from here on its bytes change.
        let index = delta::index_path(&self.data_dir, target);
        remove_durably(&index).map_err(|e| format!("{}: {e}", index.display()))?;
        let device = self.device(target).to_path_buf();
        let mut last_pct = 0;
        install::write_slot(header, &mut sources, &locs, &device, &mut |written| {
            let pct = written * 100 / header.image_size.max(1);
            if pct >= last_pct + 25 {
                last_pct = pct;
                tracing::info!("upgrade: {pct}% written to slot {target}");
            }
        })
        .map_err(|e| e.to_string())?;
        // The signed start of what was installed (never the payload: a
        // bundle is megabytes): the slot's chunk list.
        let file = match what {
            Source::Bundle(b) => b,
            Source::Delta { manifest, .. } => manifest,
        };
        let mut start = Vec::new();
        let kept = std::fs::File::open(file)
            .and_then(|f| {
                std::io::Read::read_to_end(&mut std::io::Read::take(f, payload_at), &mut start)
            })
            .and_then(|_| write_durably(&index, &start));
        if let Err(e) = kept {
            tracing::warn!("upgrade: keeping the chunk list of slot {target}: {e}");
        }
        let version_file = self
            .data_dir
            .join(SLOT_VERSION_FILE.replace("{}", target.name()));
        let _ = write_durably(&version_file, header.version.as_bytes());
        // The one write that makes the new slot bootable, on trial.
        self.slots
            .switch_to(target, DEFAULT_ATTEMPTS)
            .map_err(|e| e.to_string())?;
        tracing::info!(
            "upgrade: slot {target} ({}) is primary on trial",
            header.version
        );
        Ok(())
    }

    /// An install is writing a slot now (a reboot would cut it short).
    pub fn installing(&self) -> bool {
        *self.busy.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Make the other slot primary, if it is good.
    pub fn rollback(&self) -> Result<(), WireError> {
        let st = self.slots.state();
        let booted = st
            .booted
            .ok_or_else(|| WireError::Device("booted slot unknown".into()))?;
        let other = booted.other();
        let good = st
            .slots
            .iter()
            .any(|s| s.slot == other && s.health == SlotHealth::Good);
        if !good {
            return Err(WireError::Invalid(format!(
                "slot {other} is not a good slot to roll back to"
            )));
        }
        self.slots
            .rollback()
            .map_err(|e| WireError::Device(e.to_string()))?;
        self.record(&format!("rolled back from {booted} to {other} on request"));
        Ok(())
    }

    fn record(&self, text: &str) {
        tracing::info!("upgrade: {text}");
        if let Err(e) = write_durably(&self.data_dir.join(LAST_EVENT_FILE), text.as_bytes()) {
            tracing::warn!("recording the upgrade: {e}");
        }
    }
}

/// Remove a file and make the removal survive a power cut.
fn remove_durably(path: &Path) -> std::io::Result<()> {
    match std::fs::remove_file(path) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        other => other?,
    }
    match path.parent() {
        Some(dir) => std::fs::File::open(dir)?.sync_all(),
        None => Ok(()),
    }
}

/// `/dev/vda1` (BOOT) → slot devices `/dev/vda2`, `/dev/vda3` (the image layout).
pub fn slot_devices(boot_device: &str) -> Option<[PathBuf; 2]> {
    let base = boot_device.strip_suffix('1')?;
    Some([
        PathBuf::from(format!("{base}2")),
        PathBuf::from(format!("{base}3")),
    ])
}

/// The answer to `Slots` when the A/B manager is unavailable.
pub fn unavailable() -> WireError {
    WireError::Device("A/B slots are unavailable on this boot (see the log)".into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slot_devices_follow_the_layout() {
        let [a, b] = slot_devices("/dev/vda1").unwrap();
        assert_eq!(
            (a.to_str().unwrap(), b.to_str().unwrap()),
            ("/dev/vda2", "/dev/vda3")
        );
        let [a, _] = slot_devices("/dev/mmcblk0p1").unwrap();
        assert_eq!(a.to_str().unwrap(), "/dev/mmcblk0p2");
        assert!(slot_devices("/dev/vda4").is_none());
    }
}
