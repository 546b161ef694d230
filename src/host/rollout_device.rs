//! A rollout's work on devices, through the broker: one device's upgrade
//! (first asking where it stands: already on the target costs no upload; a
//! device in flight when an earlier rollout process died is re-checked), and
//! a wave's soak re-check. The waits poll `Slots` on one held broker
//! session, not a new one per poll: the board's MQTT session is persistent,
//! so a request sent while it reboots is answered when it is back.

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _, Result};

use super::broker::{BrokerUrl, DeviceLink, Operator};
use super::cli::Format;
use super::client::Client;
use super::context::Context;
use super::fleet::{FanOut, Selection};
use super::rollout::Outcome;
use crate::wire::{Request, Response, SlotsInfo};

/// How often a wait asks the device again.
const POLL: Duration = Duration::from_secs(2);
/// One fan-out round of a soak re-check waits this long for answers; the
/// silent devices are asked again until their timeout.
const CHECK_ROUND: Duration = Duration::from_secs(20);

/// How a worker reaches devices through the broker.
#[derive(Clone)]
pub struct Reach {
    pub url: BrokerUrl,
    pub tls: Arc<rustls::ClientConfig>,
    pub ctx: Context,
    /// Command expiry.
    pub expiry: Duration,
}

impl Reach {
    pub fn connect(&self, device: &str) -> Result<Client> {
        let operator = Operator::load(&self.ctx.cert, &self.ctx.key)?;
        let mut link = DeviceLink::connect(
            &self.url,
            self.tls.clone(),
            &self.ctx.ca,
            operator,
            device,
            self.expiry,
        )
        .with_context(|| format!("broker {}:{}", self.url.host, self.url.port))?;
        link.set_seal(self.ctx.seal);
        Ok(Client::via_broker(link))
    }
}

/// One device's result.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Finished {
    pub outcome: Outcome,
    /// How it succeeded, when not by an upgrade now ("already on 1.1.0").
    pub note: Option<String>,
    /// The slot it runs the target from.
    pub slot: Option<String>,
    /// Broker sessions opened for it.
    pub sessions: usize,
}

impl Finished {
    fn failed(why: String, sessions: usize) -> Self {
        Self {
            outcome: Outcome::Failed(why),
            note: None,
            slot: None,
            sessions,
        }
    }
}

/// What to install, and how.
pub struct Target<'a> {
    pub bundle: &'a Path,
    pub version: &'a str,
    pub force: bool,
    /// From the start of the device's work to its outcome.
    pub timeout: Duration,
}

/// A broker session to one device, kept across requests; a failed request
/// drops it and the next one opens a new session.
struct Session<'a> {
    reach: &'a Reach,
    device: &'a str,
    client: Option<Client>,
    /// Sessions opened (the state file shows it per device).
    opened: usize,
}

impl<'a> Session<'a> {
    fn new(reach: &'a Reach, device: &'a str) -> Self {
        Self {
            reach,
            device,
            client: None,
            opened: 0,
        }
    }

    fn client(&mut self) -> Result<Client> {
        match self.client.take() {
            Some(c) => Ok(c),
            None => {
                self.opened += 1;
                self.reach.connect(self.device)
            }
        }
    }

    fn slots(&mut self) -> Result<SlotsInfo> {
        let mut c = self.client()?;
        let answer = c.call(Request::Slots)?;
        self.client = Some(c);
        match answer {
            Response::Slots(s) => Ok(s),
            other => bail!("unexpected answer to slots: {other:?}"),
        }
    }

    /// `slots`, asked again until `deadline` while the device is away.
    fn slots_until(&mut self, deadline: Instant) -> Result<SlotsInfo> {
        loop {
            match self.slots() {
                Ok(s) => return Ok(s),
                Err(e) if Instant::now() + POLL >= deadline => return Err(e),
                Err(_) => std::thread::sleep(POLL),
            }
        }
    }
}

/// Where a device stands with respect to the target version.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Standing {
    /// Booted from `slot`, which runs the target and is marked good.
    Committed(String),
    /// Booted the target, its health checks not passed yet.
    OnTrial,
    /// The other slot holds the target and is next to boot, with attempts
    /// left: the device installed it and reboots (or is rebooting) into it.
    Switching,
    /// The other slot holds the target but the device runs the old one and
    /// is not heading there: it fell back (or was rolled back).
    FellBack(String),
    /// Nothing of the target: an upgrade is needed.
    Old,
}

fn standing(s: &SlotsInfo, version: &str) -> Standing {
    let booted = s.slots.iter().find(|x| x.name == s.booted);
    let other = s.slots.iter().find(|x| x.name != s.booted);
    if let Some(b) = booted.filter(|b| b.version.as_deref() == Some(version)) {
        return if b.state == "active" {
            Standing::Committed(b.name.clone())
        } else {
            Standing::OnTrial
        };
    }
    match other.filter(|o| o.version.as_deref() == Some(version)) {
        Some(o) if s.primary == o.name && o.attempts_left > 0 && o.state != "bad" => {
            Standing::Switching
        }
        Some(o) => Standing::FellBack(format!(
            "runs slot {} again, not {version} from slot {} ({}{})",
            s.booted,
            o.name,
            o.state,
            s.last_event
                .as_deref()
                .map(|e| format!("; {e}"))
                .unwrap_or_default()
        )),
        None => Standing::Old,
    }
}

/// Upgrade `device` to `target`, unless it is there already. `recheck`: it
/// was in flight when an earlier rollout process died — committed on the
/// target counts as succeeded, fallen back as failed, still on the old
/// version is upgraded again.
pub fn upgrade(reach: &Reach, device: &str, target: &Target<'_>, recheck: bool) -> Finished {
    let deadline = Instant::now() + target.timeout;
    let mut session = Session::new(reach, device);
    let mut before = match session.slots_until(deadline) {
        Ok(s) => s,
        Err(e) => return Finished::failed(format!("{e:#}"), session.opened),
    };
    if recheck && matches!(standing(&before, target.version), Standing::FellBack(_)) {
        // Asked again: an install shows this for a moment before it switches.
        std::thread::sleep(POLL);
        if let Ok(s) = session.slots() {
            before = s;
        }
    }
    let how = match standing(&before, target.version) {
        Standing::Committed(slot) => {
            return Finished {
                outcome: Outcome::Succeeded,
                note: Some(if recheck {
                    format!("committed {} (found on resume)", target.version)
                } else {
                    format!("already on {}: nothing uploaded", target.version)
                }),
                slot: Some(slot),
                sessions: session.opened,
            }
        }
        Standing::FellBack(why) if recheck => return Finished::failed(why, session.opened),
        Standing::OnTrial | Standing::Switching => Some("found switching on resume"),
        Standing::FellBack(_) | Standing::Old => None,
    };
    if how.is_none() {
        // The first request of the upload reuses the session that asked.
        let mut held = session.client.take();
        let mut opened = 0;
        let mut connect = || match held.take() {
            Some(c) => Ok(c),
            None => {
                opened += 1;
                reach.connect(device)
            }
        };
        let install = super::remote::Install {
            stage: false,
            force: target.force,
            full: false,
        };
        let sent = super::remote::send_install(
            &mut connect,
            device,
            target.bundle,
            &install,
            Format::Json,
        );
        session.opened += opened;
        if let Err(e) = sent {
            return Finished::failed(format!("{e:#}"), session.opened);
        }
    }
    match wait_committed(&mut session, &before, target.version, deadline) {
        Ok(slot) => Finished {
            outcome: Outcome::Succeeded,
            note: how.map(str::to_owned),
            slot: Some(slot),
            sessions: session.opened,
        },
        Err(e) => Finished::failed(format!("{e:#}"), session.opened),
    }
}

/// Poll until the device runs `version` committed (its slot), fails its
/// install, or falls back; one held session.
fn wait_committed(
    session: &mut Session<'_>,
    before: &SlotsInfo,
    version: &str,
    deadline: Instant,
) -> Result<String> {
    // A fallback counts when it is new: the switch was seen since, or the
    // device had nothing of the target before and shows it twice in a row
    // (an install writes the slot's version a moment before it switches).
    // One that fell back from an earlier try shows that until this install
    // switches.
    let was = standing(before, version);
    let mut switched = matches!(was, Standing::OnTrial | Standing::Switching);
    let old_fallback = matches!(was, Standing::FellBack(_));
    let mut fell_before = false;
    let mut last = None;
    loop {
        std::thread::sleep(POLL);
        // Away (rebooting): the session is dropped, the next poll opens one.
        if let Ok(s) = session.slots() {
            let now = standing(&s, version);
            match now {
                Standing::Committed(slot) => return Ok(slot),
                Standing::OnTrial | Standing::Switching => switched = true,
                Standing::FellBack(why) if switched || (fell_before && !old_fallback) => {
                    bail!("{why}")
                }
                Standing::FellBack(_) | Standing::Old => {}
            }
            fell_before = matches!(now, Standing::FellBack(_));
            let failed = s.last_event != before.last_event
                && s.last_event
                    .as_deref()
                    .is_some_and(|e| e.contains("failed"));
            if failed {
                bail!(
                    "upgrade failed: {}",
                    s.last_event.clone().unwrap_or_default()
                );
            }
            last = Some(s);
        }
        if Instant::now() > deadline {
            bail!(
                "not back committed on {version} in time (last answer: {})",
                last.map(|s| format!("booted {}, primary {}", s.booted, s.primary))
                    .unwrap_or_else(|| "none".into())
            );
        }
    }
}

/// A wave's soak re-check: each device must still be booted from the slot
/// it committed `version` in (`None`: any slot), marked good, and about to
/// boot it again (primary). One fan-out session per round; devices that do
/// not answer are asked again until `timeout`. `verdict` gets each answer
/// (`Err(why)`: it fell back or left), and the silent ones at the end.
pub fn soak_check(
    reach: &Reach,
    devices: Vec<(String, Option<String>)>,
    version: &str,
    timeout: Duration,
    verdict: &mut dyn FnMut(String, Result<(), String>),
) {
    let deadline = Instant::now() + timeout;
    let mut left = devices;
    while !left.is_empty() {
        let now = Instant::now();
        if now >= deadline {
            break;
        }
        let round = CHECK_ROUND.min(deadline - now);
        let report = reach_fan_out(reach).and_then(|mut fan| {
            let names = left.iter().map(|(d, _)| d.clone()).collect();
            fan.run(
                &Selection::Devices(names),
                Request::Slots,
                reach.expiry,
                round,
                Duration::ZERO,
            )
        });
        let Ok(report) = report else {
            std::thread::sleep(POLL.min(deadline.saturating_duration_since(Instant::now())));
            continue;
        };
        left.retain(|(device, slot)| {
            let Some(answer) = report.answers.get(device) else {
                return true;
            };
            let check = match &answer.body {
                Ok(Response::Slots(s)) => still_committed(s, version, slot.as_deref()),
                Ok(other) => Err(format!("soak re-check: unexpected answer {other:?}")),
                Err(e) => Err(format!("soak re-check refused: {e}")),
            };
            verdict(device.clone(), check);
            false
        });
    }
    for (device, _) in left {
        verdict(
            device,
            Err(format!(
                "did not answer its soak re-check within {} s",
                timeout.as_secs()
            )),
        );
    }
}

fn reach_fan_out(reach: &Reach) -> Result<FanOut> {
    let operator = Operator::load(&reach.ctx.cert, &reach.ctx.key)?;
    if reach.ctx.seal {
        FanOut::connect_sealed(&reach.url, reach.tls.clone(), &reach.ctx.ca, operator)
    } else {
        FanOut::connect(&reach.url, reach.tls.clone(), &reach.ctx.ca, operator)
    }
}

/// The soak rule on one `Slots` answer.
fn still_committed(s: &SlotsInfo, version: &str, slot: Option<&str>) -> Result<(), String> {
    let fell = |what: String| {
        Err(format!(
            "fell back during the soak: {what}{}",
            s.last_event
                .as_deref()
                .map(|e| format!(" ({e})"))
                .unwrap_or_default()
        ))
    };
    if let Some(slot) = slot.filter(|x| *x != s.booted) {
        return fell(format!("booted slot {} again, not {slot}", s.booted));
    }
    match standing(s, version) {
        Standing::Committed(_) if s.primary != s.booted => fell(format!(
            "slot {} is next to boot, not {}",
            s.primary, s.booted
        )),
        Standing::Committed(_) => Ok(()),
        _ => fell(format!(
            "slot {} does not run {version} committed",
            s.booted
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::SlotInfo;

    fn slots(booted: &str, primary: &str, a: (&str, u8, &str), b: (&str, u8, &str)) -> SlotsInfo {
        let slot = |name: &str, (state, left, v): (&str, u8, &str)| SlotInfo {
            name: name.into(),
            state: state.into(),
            attempts_left: left,
            version: (!v.is_empty()).then(|| v.to_owned()),
        };
        SlotsInfo {
            booted: booted.into(),
            primary: primary.into(),
            slots: vec![slot("A", a), slot("B", b)],
            last_event: None,
        }
    }

    #[test]
    fn where_a_device_stands() {
        let v = "1.1.0";
        let old = slots("A", "A", ("active", 3, "1.0.0"), ("empty", 0, ""));
        assert_eq!(standing(&old, v), Standing::Old);
        let switching = slots("A", "B", ("active", 3, "1.0.0"), ("trial", 3, v));
        assert_eq!(standing(&switching, v), Standing::Switching);
        let trial = slots("B", "B", ("good", 3, "1.0.0"), ("active-trial", 2, v));
        assert_eq!(standing(&trial, v), Standing::OnTrial);
        let done = slots("B", "B", ("good", 3, "1.0.0"), ("active", 3, v));
        assert_eq!(standing(&done, v), Standing::Committed("B".into()));
        // Started on the target: committed in A.
        let born = slots("A", "A", ("active", 3, v), ("empty", 0, ""));
        assert_eq!(standing(&born, v), Standing::Committed("A".into()));
        // B burned its attempts; U-Boot booted A.
        let fell = slots("A", "B", ("active", 3, "1.0.0"), ("good", 0, v));
        assert!(matches!(standing(&fell, v), Standing::FellBack(w) if w.contains("slot A")));
        // Another version entirely: an upgrade is needed.
        assert_eq!(standing(&done, "2.0.0"), Standing::Old);
    }

    #[test]
    fn the_soak_rule_wants_the_same_slot_committed_and_next_to_boot() {
        let v = "1.1.0";
        let done = slots("B", "B", ("good", 3, "1.0.0"), ("active", 3, v));
        assert_eq!(still_committed(&done, v, Some("B")), Ok(()));
        assert_eq!(still_committed(&done, v, None), Ok(()));
        let fell = slots("A", "B", ("active", 3, "1.0.0"), ("good", 0, v));
        let why = still_committed(&fell, v, Some("B")).unwrap_err();
        assert!(why.contains("booted slot A again, not B"), "{why}");
        assert!(still_committed(&fell, v, None).is_err());
        // Rolled back on request, reboot pending.
        let leaving = slots("B", "A", ("good", 3, "1.0.0"), ("active", 3, v));
        let why = still_committed(&leaving, v, Some("B")).unwrap_err();
        assert!(why.contains("slot A is next to boot"), "{why}");
    }
}
