//! Staged rollouts in waves, as a state machine: no I/O, time passed in.
//! The caller does the [`Work`] that `next` and `tick` return (an upgrade
//! through the broker, or a soak re-check), reports each outcome, and calls
//! `tick` as time passes.
//!
//! Policy: waves cover cumulative percentages of the fleet, each at least
//! `min_per_wave` devices. A wave whose devices have all reported, with at
//! least `success_threshold` of them succeeded, soaks for `soak`; then every
//! device of it that succeeded is asked again (still committed on the new
//! version, in the slot it committed?): one that fell back now counts as
//! failed, and the threshold is applied once more before the next wave
//! starts (after the last wave: finished). The rollout aborts as soon as,
//! with at least `min_sample` outcomes known, the failure rate passes
//! `abort_failure_rate`, when a wave misses the success threshold, or when
//! the operator aborts it. A device that does not report (or answer its
//! re-check) within `device_timeout` has failed. (Boards still roll back on
//! their own when an upgrade does not come up healthy: this only decides
//! whether to go on.)

use std::time::Duration;

use anyhow::{bail, Result};

#[derive(Debug, Clone)]
pub struct Policy {
    /// Cumulative percentages, ascending, ending at 100: `[1, 10, 50, 100]`.
    pub waves: Vec<u8>,
    pub min_per_wave: usize,
    pub soak: Duration,
    /// Share of a wave that must succeed to go on (0.0..=1.0).
    pub success_threshold: f64,
    /// Share of failures, over all outcomes so far, that aborts (0.0..=1.0).
    pub abort_failure_rate: f64,
    /// Outcomes needed before the failure rate may abort.
    pub min_sample: usize,
    pub device_timeout: Duration,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    Succeeded,
    Failed(String),
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Device {
    Pending,
    Running {
        since: Duration,
    },
    /// Succeeded; being asked again at the end of its wave's soak.
    Checking {
        since: Duration,
    },
    Done(Outcome),
}

/// A device's state as `states` reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DeviceState {
    Pending,
    Running,
    /// Succeeded, its soak re-check not answered yet.
    Checking,
    Succeeded,
    Failed(String),
}

/// What the caller does for a device.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Work {
    /// Upgrade it (report with [`Rollout::report`]).
    Upgrade(String),
    /// Its wave's soak is over: ask it again (report with
    /// [`Rollout::report_check`]).
    Check(String),
}

#[derive(Debug, Clone, PartialEq)]
pub enum Phase {
    /// Wave `n` (0-based) has devices running.
    Running(usize),
    /// Wave `n` finished well; its re-check starts at `until`.
    Soaking {
        wave: usize,
        until: Duration,
    },
    /// Wave `n` soaked; its succeeded devices are asked again.
    Checking(usize),
    Finished,
    Aborted(String),
}

/// A device's state when a rollout is taken up again (`restore`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Restored {
    /// Not started (or handed out and never begun).
    Pending,
    /// It was being upgraded when the rollout stopped: `next` hands it out
    /// again (the caller re-checks it before upgrading).
    InFlight,
    Done(Outcome),
}

/// Where a restored rollout stood.
#[derive(Debug, Clone, PartialEq)]
pub enum RestoredPhase {
    Running(usize),
    /// Soaking wave `wave` for `left` more (zero: its re-check is due).
    Soaking {
        wave: usize,
        left: Duration,
    },
}

#[derive(Debug, Clone, PartialEq)]
pub struct Progress {
    pub phase: Phase,
    pub waves: usize,
    pub succeeded: usize,
    pub failed: usize,
    pub running: usize,
    pub pending: usize,
}

pub struct Rollout {
    policy: Policy,
    names: Vec<String>,
    devices: Vec<Device>,
    /// End index (exclusive) of each wave in `names`.
    ends: Vec<usize>,
    phase: Phase,
    started: bool,
}

impl Rollout {
    pub fn new(names: Vec<String>, policy: Policy) -> Result<Self> {
        if names.is_empty() {
            bail!("a rollout needs at least one device");
        }
        if policy.waves.is_empty()
            || policy.waves.last() != Some(&100)
            || policy.waves.windows(2).any(|w| w[0] >= w[1])
            || policy.waves.first() == Some(&0)
        {
            bail!("waves must be ascending percentages ending at 100, e.g. 1,10,50,100");
        }
        check_shares(&policy)?;
        let n = names.len();
        let mut ends = Vec::new();
        let mut last = 0;
        for &pct in &policy.waves {
            let by_pct = (n * usize::from(pct)).div_ceil(100);
            let end = by_pct.max(last + policy.min_per_wave.max(1)).min(n);
            if end > last {
                ends.push(end);
                last = end;
            }
        }
        Ok(Self {
            devices: vec![Device::Pending; n],
            names,
            ends,
            phase: Phase::Running(0),
            started: false,
            policy,
        })
    }

    /// A rollout taken up again: the waves as they were cut, each device's
    /// state, and where it stood. `next` then hands out the devices of the
    /// running wave that have no outcome yet (none when it was soaking).
    pub fn restore(
        waves: Vec<Vec<String>>,
        policy: Policy,
        state: impl Fn(&str) -> Restored,
        phase: RestoredPhase,
    ) -> Result<Self> {
        check_shares(&policy)?;
        let mut names = Vec::new();
        let mut ends = Vec::new();
        for w in waves.into_iter().filter(|w| !w.is_empty()) {
            names.extend(w);
            ends.push(names.len());
        }
        if names.is_empty() {
            bail!("a rollout needs at least one device");
        }
        let wave = match phase {
            RestoredPhase::Running(w) | RestoredPhase::Soaking { wave: w, .. } => w,
        };
        if wave >= ends.len() {
            bail!("wave {} of {} does not exist", wave + 1, ends.len());
        }
        let devices = names
            .iter()
            .map(|n| match state(n) {
                Restored::Pending => Device::Pending,
                Restored::InFlight => Device::Running {
                    since: Duration::ZERO,
                },
                Restored::Done(o) => Device::Done(o),
            })
            .collect();
        let phase = match phase {
            RestoredPhase::Running(w) => Phase::Running(w),
            RestoredPhase::Soaking { wave, left } => Phase::Soaking { wave, until: left },
        };
        Ok(Self {
            policy,
            names,
            devices,
            ends,
            phase,
            started: false,
        })
    }

    /// Devices to upgrade now: the first wave on a fresh rollout; on a
    /// restored one, the running wave's devices without an outcome. Later
    /// waves come from `tick`.
    pub fn next(&mut self, now: Duration) -> Vec<Work> {
        if self.started {
            return Vec::new();
        }
        self.started = true;
        let Phase::Running(wave) = self.phase else {
            return Vec::new();
        };
        self.start_wave(wave, now)
    }

    fn range(&self, wave: usize) -> std::ops::Range<usize> {
        let start = if wave == 0 {
            0
        } else {
            self.ends.get(wave - 1).copied().unwrap_or(0)
        };
        start..self.ends.get(wave).copied().unwrap_or(start)
    }

    /// Start every device of `wave` without an outcome.
    fn start_wave(&mut self, wave: usize, now: Duration) -> Vec<Work> {
        self.phase = Phase::Running(wave);
        let mut out = Vec::new();
        for i in self.range(wave) {
            if let (Some(d), Some(name)) = (self.devices.get_mut(i), self.names.get(i)) {
                if matches!(d, Device::Pending | Device::Running { .. }) {
                    *d = Device::Running { since: now };
                    out.push(Work::Upgrade(name.clone()));
                }
            }
        }
        out
    }

    fn index(&self, device: &str) -> Option<usize> {
        self.names.iter().position(|n| n == device)
    }

    /// An upgrade's outcome for `device` (unknown or already decided: ignored).
    pub fn report(&mut self, device: &str, outcome: Outcome) {
        if let Some(d @ Device::Running { .. }) =
            self.index(device).and_then(|i| self.devices.get_mut(i))
        {
            *d = Device::Done(outcome);
        }
    }

    /// A soak re-check's answer: `Err(why)` when the device is no longer
    /// committed on the new version (it now counts as failed).
    pub fn report_check(&mut self, device: &str, check: Result<(), String>) {
        if let Some(d @ Device::Checking { .. }) =
            self.index(device).and_then(|i| self.devices.get_mut(i))
        {
            *d = Device::Done(match check {
                Ok(()) => Outcome::Succeeded,
                Err(why) => Outcome::Failed(why),
            });
        }
    }

    /// The operator stops the rollout: no further device starts; those
    /// upgrading still report. A re-check not answered yet keeps the
    /// device's success. (Finished or aborted: nothing changes.)
    pub fn abort(&mut self, why: String) {
        if matches!(self.phase, Phase::Finished | Phase::Aborted(_)) {
            return;
        }
        for d in &mut self.devices {
            if let Device::Checking { .. } = d {
                *d = Device::Done(Outcome::Succeeded);
            }
        }
        self.phase = Phase::Aborted(why);
    }

    /// Time passed: time-outs fail, the abort rule and wave ends are
    /// checked; returns the work to do now (a wave's re-checks, the next
    /// wave's upgrades).
    pub fn tick(&mut self, now: Duration) -> Vec<Work> {
        let limit = self.policy.device_timeout;
        for d in &mut self.devices {
            match d {
                Device::Running { since } if now.saturating_sub(*since) >= limit => {
                    *d = Device::Done(Outcome::Failed("timed out".into()));
                }
                Device::Checking { since } if now.saturating_sub(*since) >= limit => {
                    *d = Device::Done(Outcome::Failed(format!(
                        "did not answer its soak re-check within {} s",
                        limit.as_secs()
                    )));
                }
                _ => {}
            }
        }
        let p = self.progress();
        let known = p.succeeded + p.failed;
        if matches!(
            self.phase,
            Phase::Running(_) | Phase::Soaking { .. } | Phase::Checking(_)
        ) && known >= self.policy.min_sample
            && known > 0
            && p.failed as f64 / known as f64 > self.policy.abort_failure_rate
        {
            self.abort(format!(
                "{} of {known} devices failed (abort above {:.0} %)",
                p.failed,
                self.policy.abort_failure_rate * 100.0
            ));
            return Vec::new();
        }
        match self.phase.clone() {
            Phase::Running(wave) => {
                if !self.wave_done(wave) {
                    return Vec::new();
                }
                if !self.wave_meets_threshold(wave) {
                    return Vec::new();
                }
                self.phase = Phase::Soaking {
                    wave,
                    until: now + self.policy.soak,
                };
                // A zero soak re-checks at once.
                self.tick(now)
            }
            Phase::Soaking { wave, until } if now >= until => {
                self.phase = Phase::Checking(wave);
                let mut out = Vec::new();
                for i in self.range(wave) {
                    if let (Some(d), Some(name)) = (self.devices.get_mut(i), self.names.get(i)) {
                        if *d == Device::Done(Outcome::Succeeded) {
                            *d = Device::Checking { since: now };
                            out.push(Work::Check(name.clone()));
                        }
                    }
                }
                if out.is_empty() {
                    return self.tick(now);
                }
                out
            }
            Phase::Checking(wave) => {
                if !self.wave_done(wave) || !self.wave_meets_threshold(wave) {
                    return Vec::new();
                }
                if wave + 1 >= self.ends.len() {
                    self.phase = Phase::Finished;
                    return Vec::new();
                }
                self.start_wave(wave + 1, now)
            }
            _ => Vec::new(),
        }
    }

    /// Every device of `wave` has an outcome (none upgrading or re-checked).
    fn wave_done(&self, wave: usize) -> bool {
        self.devices
            .get(self.range(wave))
            .unwrap_or_default()
            .iter()
            .all(|d| matches!(d, Device::Done(_)))
    }

    /// Whether enough of `wave` succeeded; if not, the rollout aborts.
    fn wave_meets_threshold(&mut self, wave: usize) -> bool {
        let range = self.range(wave);
        let ok = self
            .devices
            .get(range.clone())
            .unwrap_or_default()
            .iter()
            .filter(|d| **d == Device::Done(Outcome::Succeeded))
            .count();
        let share = ok as f64 / range.len().max(1) as f64;
        if share < self.policy.success_threshold {
            self.abort(format!(
                "wave {} : {ok} of {} succeeded (need {:.0} %)",
                wave + 1,
                range.len(),
                self.policy.success_threshold * 100.0
            ));
            return false;
        }
        true
    }

    /// `device`'s work really starts now (it waited behind the CLI's
    /// concurrency cap): its timeout counts from here.
    pub fn begin(&mut self, device: &str, now: Duration) {
        if let Some(Device::Running { since }) =
            self.index(device).and_then(|i| self.devices.get_mut(i))
        {
            *since = now;
        }
    }

    /// The devices of each wave, in order.
    pub fn waves(&self) -> Vec<Vec<String>> {
        (0..self.ends.len())
            .map(|w| self.names.get(self.range(w)).unwrap_or_default().to_vec())
            .collect()
    }

    /// Each device's state, in `names` order.
    pub fn states(&self) -> Vec<(&str, DeviceState)> {
        self.names
            .iter()
            .zip(&self.devices)
            .map(|(n, d)| {
                let s = match d {
                    Device::Pending => DeviceState::Pending,
                    Device::Running { .. } => DeviceState::Running,
                    Device::Checking { .. } => DeviceState::Checking,
                    Device::Done(Outcome::Succeeded) => DeviceState::Succeeded,
                    Device::Done(Outcome::Failed(why)) => DeviceState::Failed(why.clone()),
                };
                (n.as_str(), s)
            })
            .collect()
    }

    /// Counts so far (a device under re-check counts as succeeded).
    pub fn progress(&self) -> Progress {
        let mut p = Progress {
            phase: self.phase.clone(),
            waves: self.ends.len(),
            succeeded: 0,
            failed: 0,
            running: 0,
            pending: 0,
        };
        for d in &self.devices {
            match d {
                Device::Pending => p.pending += 1,
                Device::Running { .. } => p.running += 1,
                Device::Checking { .. } | Device::Done(Outcome::Succeeded) => p.succeeded += 1,
                Device::Done(Outcome::Failed(_)) => p.failed += 1,
            }
        }
        p
    }
}

fn check_shares(policy: &Policy) -> Result<()> {
    for (what, v) in [
        ("success threshold", policy.success_threshold),
        ("abort failure rate", policy.abort_failure_rate),
    ] {
        if !(0.0..=1.0).contains(&v) {
            bail!("{what} {v} is not between 0 and 1");
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy() -> Policy {
        Policy {
            waves: vec![1, 10, 50, 100],
            min_per_wave: 5,
            soak: Duration::from_secs(60),
            success_threshold: 0.9,
            abort_failure_rate: 0.05,
            min_sample: 20,
            device_timeout: Duration::from_secs(600),
        }
    }

    /// `n` boards in two waves of half each, no soak, no early abort.
    fn halves_without_soak(n: usize) -> Rollout {
        Rollout::new(
            names(n),
            Policy {
                waves: vec![50, 100],
                min_per_wave: 1,
                min_sample: 100,
                soak: Duration::ZERO,
                ..policy()
            },
        )
        .unwrap()
    }

    fn names(n: usize) -> Vec<String> {
        (0..n).map(|i| format!("b{i:04}")).collect()
    }

    fn upgrades(work: &[Work]) -> Vec<String> {
        work.iter()
            .filter_map(|w| match w {
                Work::Upgrade(d) => Some(d.clone()),
                Work::Check(_) => None,
            })
            .collect()
    }

    fn checks(work: &[Work]) -> Vec<String> {
        work.iter()
            .filter_map(|w| match w {
                Work::Check(d) => Some(d.clone()),
                Work::Upgrade(_) => None,
            })
            .collect()
    }

    /// Run a rollout where `fails(name)` decides each upgrade's outcome
    /// and `falls_back(name)` each re-check's; devices answer 10 s after
    /// they start, re-checks at once. Returns the end state.
    fn simulate_with(
        n: usize,
        policy: Policy,
        fails: impl Fn(usize) -> bool,
        falls_back: impl Fn(usize) -> bool,
    ) -> Progress {
        let mut r = Rollout::new(names(n), policy).unwrap();
        let mut now = Duration::ZERO;
        let mut running: Vec<(String, Duration)> = upgrades(&r.next(now))
            .into_iter()
            .map(|d| (d, now))
            .collect();
        let num = |d: &str| d[1..].parse::<usize>().unwrap();
        for _ in 0..10_000 {
            now += Duration::from_secs(1);
            for (d, _) in running
                .iter()
                .filter(|(_, at)| now - *at == Duration::from_secs(10))
            {
                r.report(
                    d,
                    if fails(num(d)) {
                        Outcome::Failed("unhealthy".into())
                    } else {
                        Outcome::Succeeded
                    },
                );
            }
            let work = r.tick(now);
            for d in checks(&work) {
                let check = if falls_back(num(&d)) {
                    Err("fell back to A".to_owned())
                } else {
                    Ok(())
                };
                r.report_check(&d, check);
            }
            running.extend(upgrades(&work).into_iter().map(|d| (d, now)));
            if matches!(r.progress().phase, Phase::Finished | Phase::Aborted(_)) {
                break;
            }
        }
        r.progress()
    }

    fn simulate(n: usize, fails: impl Fn(usize) -> bool) -> Progress {
        simulate_with(n, policy(), fails, |_| false)
    }

    #[test]
    fn waves_cover_percentages_with_a_minimum_count() {
        let r = Rollout::new(names(1000), policy()).unwrap();
        assert_eq!(r.ends, vec![10, 100, 500, 1000]);
        let small = Rollout::new(names(12), policy()).unwrap();
        assert_eq!(small.ends, vec![5, 10, 12]);
        assert!(Rollout::new(
            names(3),
            Policy {
                waves: vec![50, 40, 100],
                ..policy()
            }
        )
        .is_err());
        assert!(Rollout::new(
            names(3),
            Policy {
                waves: vec![50],
                ..policy()
            }
        )
        .is_err());
        assert!(Rollout::new(vec![], policy()).is_err());
    }

    #[test]
    fn a_healthy_fleet_finishes_every_wave_after_soaking() {
        let p = simulate(1000, |_| false);
        assert_eq!(p.phase, Phase::Finished);
        assert_eq!((p.succeeded, p.failed, p.pending), (1000, 0, 0));
    }

    #[test]
    fn ten_percent_failures_trip_the_abort_after_the_minimum_sample() {
        // Every tenth board fails: 10 % > 5 % once 20 outcomes are in.
        let p = simulate(1000, |i| i % 10 == 3);
        let Phase::Aborted(why) = &p.phase else {
            panic!("{p:?}")
        };
        assert!(why.contains("failed"), "{why}");
        assert!(p.pending >= 500, "later waves never started: {p:?}");
        assert!(p.succeeded + p.failed <= 100, "{p:?}");
    }

    #[test]
    fn a_fallback_found_by_the_soak_re_check_fails_the_wave() {
        // Wave 1 is 5 boards; all install well, b0002 falls back while
        // soaking: 4 of 5 < 100 %.
        let strict = Policy {
            waves: vec![50, 100],
            success_threshold: 1.0,
            min_sample: 100,
            ..policy()
        };
        let p = simulate_with(10, strict.clone(), |_| false, |i| i == 2);
        assert!(
            matches!(p.phase, Phase::Aborted(ref w) if w.contains("wave 1 : 4 of 5")),
            "{p:?}"
        );
        assert_eq!((p.succeeded, p.failed, p.pending), (4, 1, 5), "{p:?}");
        // The same fallback trips the failure-rate rule too: 1 of 5 > 10 %.
        let rate = Policy {
            success_threshold: 0.5,
            abort_failure_rate: 0.1,
            min_sample: 5,
            ..strict.clone()
        };
        let p = simulate_with(10, rate, |_| false, |i| i == 2);
        assert!(
            matches!(p.phase, Phase::Aborted(ref w) if w.contains("1 of 5 devices failed")),
            "{p:?}"
        );
        // Nobody falls back: both waves finish, each re-checked.
        let p = simulate_with(10, strict, |_| false, |_| false);
        assert_eq!(p.phase, Phase::Finished);
    }

    #[test]
    fn the_soak_waits_then_re_checks_only_the_succeeded() {
        let mut r = Rollout::new(
            names(4),
            Policy {
                waves: vec![50, 100],
                min_per_wave: 1,
                success_threshold: 0.5,
                min_sample: 100,
                ..policy()
            },
        )
        .unwrap();
        let first = upgrades(&r.next(Duration::ZERO));
        assert_eq!(first, ["b0000", "b0001"]);
        r.report("b0000", Outcome::Succeeded);
        r.report("b0001", Outcome::Failed("refused".into()));
        assert!(r.tick(Duration::from_secs(5)).is_empty());
        assert!(matches!(r.progress().phase, Phase::Soaking { wave: 0, .. }));
        assert!(r.tick(Duration::from_secs(64)).is_empty(), "still soaking");
        let work = r.tick(Duration::from_secs(65));
        assert_eq!(work, [Work::Check("b0000".into())]);
        assert_eq!(r.states()[0].1, DeviceState::Checking);
        // An upgrade report does not settle a re-check; its answer does.
        r.report("b0000", Outcome::Failed("late".into()));
        assert!(r.tick(Duration::from_secs(66)).is_empty());
        r.report_check("b0000", Ok(()));
        let next = r.tick(Duration::from_secs(67));
        assert_eq!(upgrades(&next), ["b0002", "b0003"]);
    }

    #[test]
    fn a_re_check_nobody_answers_fails_by_timeout() {
        let mut r = halves_without_soak(2);
        r.next(Duration::ZERO);
        r.report("b0000", Outcome::Succeeded);
        assert_eq!(
            r.tick(Duration::from_secs(1)),
            [Work::Check("b0000".into())],
            "a zero soak re-checks at once"
        );
        r.tick(Duration::from_secs(601));
        let s = r.states();
        assert!(
            matches!(&s[0].1, DeviceState::Failed(w) if w.contains("soak re-check")),
            "{s:?}"
        );
        assert!(matches!(r.progress().phase, Phase::Aborted(_)));
    }

    #[test]
    fn an_operator_abort_starts_nothing_more_and_keeps_in_flight_outcomes() {
        let mut r = halves_without_soak(4);
        r.next(Duration::ZERO);
        r.report("b0000", Outcome::Succeeded);
        r.abort("aborted by ops: metrics".into());
        // b0001 was in flight: its outcome still counts.
        r.report("b0001", Outcome::Succeeded);
        assert!(r.tick(Duration::from_secs(1)).is_empty());
        let p = r.progress();
        assert_eq!(p.phase, Phase::Aborted("aborted by ops: metrics".into()));
        assert_eq!((p.succeeded, p.pending), (2, 2), "{p:?}");
        // A second abort, or one after the end, changes nothing.
        r.abort("again".into());
        assert_eq!(r.progress().phase, p.phase);
    }

    #[test]
    fn a_restored_rollout_hands_out_what_was_in_flight_and_keeps_outcomes() {
        let waves = vec![names(4)[..2].to_vec(), names(4)[2..].to_vec()];
        let pol = Policy {
            min_sample: 100,
            success_threshold: 0.5,
            ..policy()
        };
        let state = |d: &str| match d {
            "b0000" => Restored::Done(Outcome::Succeeded),
            "b0001" => Restored::InFlight,
            _ => Restored::Pending,
        };
        let mut r =
            Rollout::restore(waves.clone(), pol.clone(), state, RestoredPhase::Running(0)).unwrap();
        assert_eq!(upgrades(&r.next(Duration::ZERO)), ["b0001"]);
        assert!(r.next(Duration::ZERO).is_empty());
        r.report("b0001", Outcome::Succeeded);
        assert!(r.tick(Duration::from_secs(1)).is_empty());
        assert!(matches!(r.progress().phase, Phase::Soaking { wave: 0, .. }));

        // Stopped while soaking, 10 s left: nothing to hand out; the
        // re-check comes when the rest of the soak is over.
        let soaked = |d: &str| match d {
            "b0000" | "b0001" => Restored::Done(Outcome::Succeeded),
            _ => Restored::Pending,
        };
        let mut r = Rollout::restore(
            waves.clone(),
            pol.clone(),
            soaked,
            RestoredPhase::Soaking {
                wave: 0,
                left: Duration::from_secs(10),
            },
        )
        .unwrap();
        assert!(r.next(Duration::ZERO).is_empty());
        assert!(r.tick(Duration::from_secs(9)).is_empty());
        assert_eq!(checks(&r.tick(Duration::from_secs(10))).len(), 2);
        assert!(Rollout::restore(waves, pol, soaked, RestoredPhase::Running(2)).is_err());
    }

    #[test]
    fn the_timeout_counts_from_begin_and_states_follow_waves() {
        let mut r = Rollout::new(
            names(12),
            Policy {
                min_sample: 100,
                ..policy()
            },
        )
        .unwrap();
        assert_eq!(
            r.waves().iter().map(Vec::len).collect::<Vec<_>>(),
            [5, 5, 2]
        );
        let first = upgrades(&r.next(Duration::ZERO));
        // b0000 waited behind the concurrency cap until 500 s.
        r.begin(&first[0], Duration::from_secs(500));
        r.tick(Duration::from_secs(600));
        let s = r.states();
        assert_eq!(s[0].1, DeviceState::Running, "{s:?}");
        assert_eq!(s[1].1, DeviceState::Failed("timed out".into()));
        assert_eq!(s[5].1, DeviceState::Pending);
    }

    #[test]
    fn a_device_that_never_answers_fails_by_timeout() {
        let mut r = Rollout::new(
            names(5),
            Policy {
                min_sample: 100,
                ..policy()
            },
        )
        .unwrap();
        let first = upgrades(&r.next(Duration::ZERO));
        assert_eq!(first.len(), 5);
        for d in &first[..4] {
            r.report(d, Outcome::Succeeded);
        }
        assert!(r.tick(Duration::from_secs(10)).is_empty());
        assert!(matches!(r.progress().phase, Phase::Running(0)));
        r.tick(Duration::from_secs(600));
        let p = r.progress();
        assert_eq!((p.succeeded, p.failed), (4, 1));
        // 4 of 5 = 80 % < 90 %: the wave misses its threshold.
        assert!(
            matches!(p.phase, Phase::Aborted(ref w) if w.contains("4 of 5")),
            "{p:?}"
        );
    }
}
