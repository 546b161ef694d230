//! Staged rollouts in waves, as a state machine: no I/O, time passed in.
//! The caller starts what `next` returns on the devices (an upgrade through
//! the broker), reports each outcome, and calls `tick` as time passes.
//!
//! Policy: waves cover cumulative percentages of the fleet, each at least
//! `min_per_wave` devices; a wave that finishes with at least
//! `success_threshold` of its devices succeeded soaks for `soak`, then the
//! next starts. The rollout aborts as soon as, with at least `min_sample`
//! outcomes known, the failure rate passes `abort_failure_rate`, or when a
//! finished wave misses the success threshold. A device that does not
//! report within `device_timeout` has failed. (Boards still roll back on
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
    Running { since: Duration },
    Done(Outcome),
}

/// A device's state as `states` reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DeviceState {
    Pending,
    Running,
    Succeeded,
    Failed(String),
}

#[derive(Debug, Clone, PartialEq)]
pub enum Phase {
    /// Wave `n` (0-based) has devices running.
    Running(usize),
    /// Wave `n` finished well; the next starts at `until`.
    Soaking {
        wave: usize,
        until: Duration,
    },
    Finished,
    Aborted(String),
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
        for (what, v) in [
            ("success threshold", policy.success_threshold),
            ("abort failure rate", policy.abort_failure_rate),
        ] {
            if !(0.0..=1.0).contains(&v) {
                bail!("{what} {v} is not between 0 and 1");
            }
        }
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

    /// Devices to start now (the first wave at once; later waves when their
    /// soak is over, from `tick`).
    pub fn next(&mut self, now: Duration) -> Vec<String> {
        if self.started {
            return Vec::new();
        }
        self.started = true;
        self.start_wave(0, now)
    }

    fn range(&self, wave: usize) -> std::ops::Range<usize> {
        let start = if wave == 0 {
            0
        } else {
            self.ends.get(wave - 1).copied().unwrap_or(0)
        };
        start..self.ends.get(wave).copied().unwrap_or(start)
    }

    fn start_wave(&mut self, wave: usize, now: Duration) -> Vec<String> {
        self.phase = Phase::Running(wave);
        let range = self.range(wave);
        let mut out = Vec::new();
        for i in range {
            if let (Some(d), Some(name)) = (self.devices.get_mut(i), self.names.get(i)) {
                *d = Device::Running { since: now };
                out.push(name.clone());
            }
        }
        out
    }

    /// An outcome for `device` (unknown or already decided: ignored).
    pub fn report(&mut self, device: &str, outcome: Outcome) {
        if let Some(i) = self.names.iter().position(|n| n == device) {
            if let Some(d @ Device::Running { .. }) = self.devices.get_mut(i) {
                *d = Device::Done(outcome);
            }
        }
    }

    /// Time passed: time-outs fail, the abort rule and wave ends are
    /// checked; returns devices to start now (the next wave).
    pub fn tick(&mut self, now: Duration) -> Vec<String> {
        for d in &mut self.devices {
            if let Device::Running { since } = d {
                if now.saturating_sub(*since) >= self.policy.device_timeout {
                    *d = Device::Done(Outcome::Failed("timed out".into()));
                }
            }
        }
        let p = self.progress();
        let known = p.succeeded + p.failed;
        if matches!(self.phase, Phase::Running(_) | Phase::Soaking { .. })
            && known >= self.policy.min_sample
            && known > 0
            && p.failed as f64 / known as f64 > self.policy.abort_failure_rate
        {
            self.phase = Phase::Aborted(format!(
                "{} of {known} devices failed (abort above {:.0} %)",
                p.failed,
                self.policy.abort_failure_rate * 100.0
            ));
            return Vec::new();
        }
        match self.phase.clone() {
            Phase::Running(wave) => {
                let range = self.range(wave);
                let mut ok = 0;
                for d in self.devices.get(range.clone()).unwrap_or_default() {
                    match d {
                        Device::Done(Outcome::Succeeded) => ok += 1,
                        Device::Done(_) => {}
                        _ => return Vec::new(),
                    }
                }
                let share = ok as f64 / range.len().max(1) as f64;
                if share < self.policy.success_threshold {
                    self.phase = Phase::Aborted(format!(
                        "wave {} : {ok} of {} succeeded (need {:.0} %)",
                        wave + 1,
                        range.len(),
                        self.policy.success_threshold * 100.0
                    ));
                } else if wave + 1 >= self.ends.len() {
                    self.phase = Phase::Finished;
                } else {
                    self.phase = Phase::Soaking {
                        wave,
                        until: now + self.policy.soak,
                    };
                }
                Vec::new()
            }
            Phase::Soaking { wave, until } if now >= until => self.start_wave(wave + 1, now),
            _ => Vec::new(),
        }
    }

    /// `device`'s work really starts now (it waited behind the CLI's
    /// concurrency cap): its timeout counts from here.
    pub fn begin(&mut self, device: &str, now: Duration) {
        if let Some(i) = self.names.iter().position(|n| n == device) {
            if let Some(Device::Running { since }) = self.devices.get_mut(i) {
                *since = now;
            }
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
                    Device::Done(Outcome::Succeeded) => DeviceState::Succeeded,
                    Device::Done(Outcome::Failed(why)) => DeviceState::Failed(why.clone()),
                };
                (n.as_str(), s)
            })
            .collect()
    }

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
                Device::Done(Outcome::Succeeded) => p.succeeded += 1,
                Device::Done(Outcome::Failed(_)) => p.failed += 1,
            }
        }
        p
    }
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

    fn names(n: usize) -> Vec<String> {
        (0..n).map(|i| format!("b{i:04}")).collect()
    }

    /// Run a rollout where `fails(name)` decides each outcome; devices
    /// answer 10 s after they start. Returns the end state.
    fn simulate(n: usize, fails: impl Fn(usize) -> bool) -> Progress {
        let mut r = Rollout::new(names(n), policy()).unwrap();
        let mut now = Duration::ZERO;
        let mut running: Vec<(String, Duration)> =
            r.next(now).into_iter().map(|d| (d, now)).collect();
        for _ in 0..10_000 {
            now += Duration::from_secs(1);
            for (d, at) in running
                .iter()
                .filter(|(_, at)| now - *at == Duration::from_secs(10))
            {
                let i: usize = d[1..].parse().unwrap();
                let _ = at;
                r.report(
                    d,
                    if fails(i) {
                        Outcome::Failed("unhealthy".into())
                    } else {
                        Outcome::Succeeded
                    },
                );
            }
            running.extend(r.tick(now).into_iter().map(|d| (d, now)));
            if matches!(r.progress().phase, Phase::Finished | Phase::Aborted(_)) {
                break;
            }
        }
        r.progress()
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
        let first = r.next(Duration::ZERO);
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
        let first = r.next(Duration::ZERO);
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
