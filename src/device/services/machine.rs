//! The supervisor's rules, without I/O: events in (a child exited, a spawn
//! worked or failed, a probe answered, an operator asked, time passed),
//! actions out (spawn, signal). Time is the `now_ms` each call passes in, so
//! tests drive it with a fake clock.

use crate::config::{HealthKind, RestartPolicy, ServiceConfig};

/// A run longer than this was not a crash loop: the back-off starts over.
pub const STABLE_RUN_MS: u64 = 10_000;

/// How a process ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Exit {
    Code(i32),
    Signal(i32),
    /// The kernel's OOM killer ended it (the cgroup's `oom_kill` grew).
    OutOfMemory,
}

impl Exit {
    pub fn success(&self) -> bool {
        *self == Exit::Code(0)
    }
    pub fn describe(&self) -> String {
        match self {
            Exit::Code(c) => format!("exit {c}"),
            Exit::Signal(s) => format!("signal {s}"),
            Exit::OutOfMemory => "killed: out of memory".into(),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Command {
    Start,
    Stop,
    Restart,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    Spawned {
        service: usize,
        pid: u32,
    },
    SpawnFailed {
        service: usize,
        reason: String,
    },
    Exited {
        service: usize,
        pid: u32,
        exit: Exit,
    },
    Health {
        service: usize,
        pid: u32,
        ok: bool,
    },
    Command {
        service: usize,
        command: Command,
    },
    /// Time passed (timers: back-off, stop grace).
    Tick,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Signal {
    Term,
    Kill,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    Spawn(usize),
    /// Signal the service's process group (and, for `Kill`, its cgroup).
    Signal {
        service: usize,
        pid: u32,
        signal: Signal,
    },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum State {
    /// Wanted, waiting for its dependencies.
    Waiting,
    /// A spawn was asked for; no pid yet.
    Starting,
    Running {
        pid: u32,
        since_ms: u64,
        /// None until the first probe answers (always Some for `alive`).
        healthy: Option<bool>,
    },
    /// SIGTERM sent; SIGKILL at `kill_at_ms`.
    Stopping {
        pid: u32,
        kill_at_ms: u64,
        killed: bool,
    },
    /// Waiting to restart at `until_ms`.
    Backoff { until_ms: u64 },
    /// Not running, by request or after a clean exit.
    Stopped,
    /// Not running after a failure it will not be restarted from.
    Failed,
}

impl State {
    pub fn name(&self, has_check: bool) -> &'static str {
        match self {
            State::Waiting => "waiting",
            State::Starting => "starting",
            State::Running { healthy: None, .. } if has_check => "starting",
            State::Running {
                healthy: Some(false),
                ..
            } => "unhealthy",
            State::Running { .. } => "running",
            State::Stopping { .. } => "stopping",
            State::Backoff { .. } => "backoff",
            State::Stopped => "stopped",
            State::Failed => "failed",
        }
    }
}

#[derive(Debug, Clone)]
pub struct Unit {
    pub config: ServiceConfig,
    pub state: State,
    /// The operator (or boot) wants it running.
    pub wanted: bool,
    /// Restart once the current stop completes.
    restart_after_stop: bool,
    /// Restarts in a row without a stable run: the back-off exponent.
    failures: u32,
    /// Restarts since boot (shown to operators).
    pub restarts: u32,
    pub last_exit: Option<String>,
}

impl Unit {
    fn has_check(&self) -> bool {
        self.config
            .health
            .as_ref()
            .is_some_and(|h| h.kind != HealthKind::Alive)
    }
    pub fn state_name(&self) -> &'static str {
        self.state.name(self.has_check())
    }
    pub fn pid(&self) -> Option<u32> {
        match self.state {
            State::Running { pid, .. } | State::Stopping { pid, .. } => Some(pid),
            _ => None,
        }
    }
    pub fn uptime_ms(&self, now_ms: u64) -> u64 {
        match self.state {
            State::Running { since_ms, .. } => now_ms.saturating_sub(since_ms),
            _ => 0,
        }
    }
    /// Up for its dependants: running (and healthy, if checked) or finished
    /// cleanly.
    fn satisfies_dependants(&self) -> bool {
        match &self.state {
            State::Running { healthy, .. } => !self.has_check() || *healthy == Some(true),
            State::Stopped => self.last_exit.as_deref() == Some("exit 0"),
            _ => false,
        }
    }
    /// Healthy for the boot's commit: only services with a check count.
    pub fn healthy_for_commit(&self) -> bool {
        !self.has_check()
            || matches!(
                self.state,
                State::Running {
                    healthy: Some(true),
                    ..
                }
            )
    }
}

/// Delay before restart number `failures` in a row (1-based): the first is
/// immediate, then `initial`, doubling, capped at `max`.
pub fn backoff_ms(config: &ServiceConfig, failures: u32) -> u64 {
    if failures <= 1 {
        return 0;
    }
    let shift = (failures - 2).min(40);
    config
        .backoff_initial_ms
        .saturating_mul(1u64 << shift)
        .min(config.backoff_max_ms)
}

pub struct Machine {
    pub units: Vec<Unit>,
}

impl Machine {
    /// All services wanted; they start as their dependencies allow (the
    /// first `Tick`).
    pub fn new(configs: Vec<ServiceConfig>) -> Self {
        let units = configs
            .into_iter()
            .map(|config| Unit {
                config,
                state: State::Waiting,
                wanted: true,
                restart_after_stop: false,
                failures: 0,
                restarts: 0,
                last_exit: None,
            })
            .collect();
        Self { units }
    }

    pub fn find(&self, name: &str) -> Option<usize> {
        self.units.iter().position(|u| u.config.name == name)
    }

    /// The earliest timer, if any (the driver sleeps until then at most).
    pub fn next_deadline(&self) -> Option<u64> {
        self.units
            .iter()
            .filter_map(|u| match u.state {
                State::Backoff { until_ms } => Some(until_ms),
                State::Stopping {
                    kill_at_ms,
                    killed: false,
                    ..
                } => Some(kill_at_ms),
                _ => None,
            })
            .min()
    }

    pub fn handle(&mut self, now_ms: u64, event: Event) -> Vec<Action> {
        let mut out = Vec::new();
        match event {
            Event::Spawned { service, pid } => {
                if let Some(u) = self.units.get_mut(service) {
                    let alive = u
                        .config
                        .health
                        .as_ref()
                        .is_none_or(|h| h.kind == HealthKind::Alive);
                    u.state = State::Running {
                        pid,
                        since_ms: now_ms,
                        healthy: alive.then_some(true),
                    };
                    if !u.wanted {
                        // Stopped while the spawn was under way.
                        stop(u, service, now_ms, &mut out);
                    }
                }
            }
            Event::SpawnFailed { service, reason } => {
                if let Some(u) = self.units.get_mut(service) {
                    // A missing or broken binary will not fix itself: no
                    // retry; `service start` tries again once it is fixed.
                    u.state = State::Failed;
                    u.last_exit = Some(reason);
                }
            }
            Event::Exited { service, pid, exit } => {
                if let Some(u) = self.units.get_mut(service) {
                    exited(u, now_ms, pid, exit);
                }
            }
            Event::Health { service, pid, ok } => {
                if let Some(u) = self.units.get_mut(service) {
                    if let State::Running {
                        pid: p, healthy, ..
                    } = &mut u.state
                    {
                        if *p == pid {
                            *healthy = Some(ok);
                        }
                    }
                }
            }
            Event::Command { service, command } => {
                if let Some(u) = self.units.get_mut(service) {
                    command_unit(u, service, now_ms, command, &mut out);
                }
            }
            Event::Tick => {}
        }
        self.advance(now_ms, &mut out);
        out
    }

    /// Timers and dependencies: start what may start, kill what overstayed.
    fn advance(&mut self, now_ms: u64, out: &mut Vec<Action>) {
        for i in 0..self.units.len() {
            let ready = self.deps_ready(i);
            let Some(u) = self.units.get_mut(i) else {
                continue;
            };
            match u.state {
                State::Waiting if ready => {
                    u.state = State::Starting;
                    out.push(Action::Spawn(i));
                }
                State::Backoff { until_ms } if now_ms >= until_ms => {
                    u.state = if ready {
                        out.push(Action::Spawn(i));
                        State::Starting
                    } else {
                        State::Waiting
                    };
                }
                State::Stopping {
                    pid,
                    kill_at_ms,
                    killed: false,
                } if now_ms >= kill_at_ms => {
                    u.state = State::Stopping {
                        pid,
                        kill_at_ms,
                        killed: true,
                    };
                    out.push(Action::Signal {
                        service: i,
                        pid,
                        signal: Signal::Kill,
                    });
                }
                _ => {}
            }
        }
    }

    fn deps_ready(&self, i: usize) -> bool {
        self.units.get(i).is_some_and(|u| {
            u.config.after.iter().all(|d| {
                self.units
                    .iter()
                    .find(|o| &o.config.name == d)
                    .is_none_or(Unit::satisfies_dependants)
            })
        })
    }
}

fn stop(u: &mut Unit, service: usize, now_ms: u64, out: &mut Vec<Action>) {
    match u.state {
        State::Running { pid, .. } => {
            u.state = State::Stopping {
                pid,
                kill_at_ms: now_ms.saturating_add(u.config.stop_grace_ms),
                killed: false,
            };
            out.push(Action::Signal {
                service,
                pid,
                signal: Signal::Term,
            });
        }
        State::Waiting | State::Backoff { .. } => u.state = State::Stopped,
        // Starting: the `Spawned` event stops it; Stopping: under way.
        _ => {}
    }
}

fn command_unit(
    u: &mut Unit,
    service: usize,
    now_ms: u64,
    command: Command,
    out: &mut Vec<Action>,
) {
    match command {
        Command::Start => {
            u.wanted = true;
            u.failures = 0;
            if matches!(
                u.state,
                State::Stopped | State::Failed | State::Backoff { .. }
            ) {
                u.state = State::Waiting;
            }
        }
        Command::Stop => {
            u.wanted = false;
            u.restart_after_stop = false;
            stop(u, service, now_ms, out);
        }
        Command::Restart => {
            u.failures = 0;
            if matches!(u.state, State::Running { .. } | State::Stopping { .. }) {
                u.wanted = false;
                u.restart_after_stop = true;
                stop(u, service, now_ms, out);
            } else if !matches!(u.state, State::Starting) {
                u.wanted = true;
                u.state = State::Waiting;
            }
        }
    }
}

fn exited(u: &mut Unit, now_ms: u64, pid: u32, exit: Exit) {
    let ran_ms = match u.state {
        State::Running {
            pid: p, since_ms, ..
        } if p == pid => now_ms.saturating_sub(since_ms),
        State::Stopping { pid: p, .. } if p == pid => {
            u.last_exit = Some(exit.describe());
            if u.restart_after_stop {
                u.restart_after_stop = false;
                u.wanted = true;
                u.state = State::Waiting;
            } else {
                u.state = State::Stopped;
            }
            return;
        }
        // Not the pid we know (a stale event): ignore.
        _ => return,
    };
    let restart = match u.config.restart {
        RestartPolicy::Always => true,
        RestartPolicy::OnFailure => !exit.success(),
        RestartPolicy::Never => false,
    };
    u.last_exit = Some(exit.describe());
    if !restart {
        u.state = if exit.success() {
            State::Stopped
        } else {
            State::Failed
        };
        return;
    }
    u.failures = if ran_ms >= STABLE_RUN_MS {
        1
    } else {
        u.failures.saturating_add(1)
    };
    u.restarts = u.restarts.saturating_add(1);
    let delay = backoff_ms(&u.config, u.failures);
    u.state = State::Backoff {
        until_ms: now_ms.saturating_add(delay),
    };
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::HealthConfig;

    fn svc(name: &str, restart: RestartPolicy, after: &[&str]) -> ServiceConfig {
        let mut s = ServiceConfig::new(name, "/x");
        s.restart = restart;
        s.backoff_initial_ms = 100;
        s.backoff_max_ms = 1000;
        s.after = after.iter().map(|a| (*a).to_owned()).collect();
        s
    }

    /// Run a spawn action: the fake process gets pid `pid`.
    fn spawned(m: &mut Machine, now: u64, service: usize, pid: u32) -> Vec<Action> {
        m.handle(now, Event::Spawned { service, pid })
    }

    #[test]
    fn backoff_grows_and_caps() {
        let s = svc("a", RestartPolicy::Always, &[]);
        let delays: Vec<u64> = (1..=8).map(|n| backoff_ms(&s, n)).collect();
        assert_eq!(delays, [0, 100, 200, 400, 800, 1000, 1000, 1000]);
        assert_eq!(backoff_ms(&s, u32::MAX), 1000);
    }

    #[test]
    fn crash_loop_backs_off_with_a_fake_clock() {
        let mut m = Machine::new(vec![svc("a", RestartPolicy::Always, &[])]);
        let mut now = 0;
        assert_eq!(m.handle(now, Event::Tick), [Action::Spawn(0)]);
        let mut pid = 10;
        let mut waits = Vec::new();
        for _ in 0..6 {
            spawned(&mut m, now, 0, pid);
            now += 5;
            let out = m.handle(
                now,
                Event::Exited {
                    service: 0,
                    pid,
                    exit: Exit::Signal(6),
                },
            );
            if out == [Action::Spawn(0)] {
                // The first restart in a row is immediate.
                waits.push(0);
                assert_eq!(m.units[0].state_name(), "starting");
            } else {
                assert!(out.is_empty());
                let State::Backoff { until_ms } = m.units[0].state else {
                    panic!("{:?}", m.units[0].state)
                };
                waits.push(until_ms - now);
                assert_eq!(m.units[0].state_name(), "backoff");
                assert!(m.handle(until_ms - 1, Event::Tick).is_empty());
                now = until_ms;
                assert_eq!(m.handle(now, Event::Tick), [Action::Spawn(0)]);
            }
            pid += 1;
        }
        assert_eq!(waits, [0, 100, 200, 400, 800, 1000]);
        assert_eq!(m.units[0].restarts, 6);
        assert_eq!(m.units[0].last_exit.as_deref(), Some("signal 6"));
        // A long, stable run resets the back-off.
        spawned(&mut m, now, 0, pid);
        now += STABLE_RUN_MS;
        let out = m.handle(
            now,
            Event::Exited {
                service: 0,
                pid,
                exit: Exit::Code(1),
            },
        );
        assert_eq!(out, [Action::Spawn(0)]);
    }

    #[test]
    fn on_failure_does_not_restart_a_clean_exit() {
        let mut m = Machine::new(vec![svc("a", RestartPolicy::OnFailure, &[])]);
        m.handle(0, Event::Tick);
        spawned(&mut m, 0, 0, 7);
        assert!(m
            .handle(
                50,
                Event::Exited {
                    service: 0,
                    pid: 7,
                    exit: Exit::Code(0)
                }
            )
            .is_empty());
        assert_eq!(
            (m.units[0].state_name(), m.units[0].restarts),
            ("stopped", 0)
        );
        assert!(m.handle(10_000, Event::Tick).is_empty());
        // ... but does restart a failure.
        m.handle(
            10_000,
            Event::Command {
                service: 0,
                command: Command::Start,
            },
        );
        spawned(&mut m, 10_000, 0, 8);
        let out = m.handle(
            10_010,
            Event::Exited {
                service: 0,
                pid: 8,
                exit: Exit::Code(3),
            },
        );
        assert_eq!(out, [Action::Spawn(0)]);
        assert_eq!(m.units[0].restarts, 1);
    }

    #[test]
    fn never_means_never() {
        let mut m = Machine::new(vec![svc("a", RestartPolicy::Never, &[])]);
        m.handle(0, Event::Tick);
        spawned(&mut m, 0, 0, 7);
        assert!(m
            .handle(
                5,
                Event::Exited {
                    service: 0,
                    pid: 7,
                    exit: Exit::OutOfMemory
                }
            )
            .is_empty());
        assert_eq!(m.units[0].state_name(), "failed");
        assert_eq!(
            m.units[0].last_exit.as_deref(),
            Some("killed: out of memory")
        );
        assert!(m.handle(1_000_000, Event::Tick).is_empty());
    }

    #[test]
    fn dependencies_start_in_order_and_wait_for_health() {
        let mut db = svc("db", RestartPolicy::Always, &[]);
        db.health = Some(HealthConfig {
            kind: HealthKind::Tcp,
            port: Some(5432),
            command: vec![],
            timeout_ms: 100,
            interval_ms: 100,
        });
        let web = svc("web", RestartPolicy::Always, &["cache", "db"]);
        let cache = svc("cache", RestartPolicy::Always, &["db"]);
        let mut m = Machine::new(vec![web, db, cache]);
        assert_eq!(m.handle(0, Event::Tick), [Action::Spawn(1)]);
        assert!(
            spawned(&mut m, 1, 1, 100).is_empty(),
            "db is not healthy yet"
        );
        assert_eq!(m.units[1].state_name(), "starting");
        assert_eq!(m.units[0].state_name(), "waiting");
        assert!(
            m.handle(
                2,
                Event::Health {
                    service: 1,
                    pid: 99,
                    ok: true
                }
            )
            .is_empty(),
            "stale pid"
        );
        assert_eq!(
            m.handle(
                3,
                Event::Health {
                    service: 1,
                    pid: 100,
                    ok: true
                }
            ),
            [Action::Spawn(2)]
        );
        assert_eq!(spawned(&mut m, 4, 2, 101), [Action::Spawn(0)]);
        spawned(&mut m, 5, 0, 102);
        assert!(m.units.iter().all(|u| u.state_name() == "running"));
        assert!(m.units.iter().all(Unit::healthy_for_commit));
    }

    #[test]
    fn stop_terms_then_kills_after_grace_and_restart_starts_again() {
        let mut s = svc("a", RestartPolicy::Always, &[]);
        s.stop_grace_ms = 500;
        let mut m = Machine::new(vec![s]);
        m.handle(0, Event::Tick);
        spawned(&mut m, 0, 0, 7);
        let term = Action::Signal {
            service: 0,
            pid: 7,
            signal: Signal::Term,
        };
        assert_eq!(
            m.handle(
                10,
                Event::Command {
                    service: 0,
                    command: Command::Stop
                }
            ),
            [term]
        );
        assert_eq!(m.next_deadline(), Some(510));
        assert!(m.handle(509, Event::Tick).is_empty());
        let kill = Action::Signal {
            service: 0,
            pid: 7,
            signal: Signal::Kill,
        };
        assert_eq!(m.handle(510, Event::Tick), [kill]);
        assert!(m.handle(520, Event::Tick).is_empty(), "one SIGKILL");
        assert!(m
            .handle(
                530,
                Event::Exited {
                    service: 0,
                    pid: 7,
                    exit: Exit::Signal(9)
                }
            )
            .is_empty());
        assert_eq!(
            (m.units[0].state_name(), m.units[0].restarts),
            ("stopped", 0)
        );
        // Restart of a stopped service starts it; of a running one stops first.
        assert_eq!(
            m.handle(
                600,
                Event::Command {
                    service: 0,
                    command: Command::Restart
                }
            ),
            [Action::Spawn(0)]
        );
        spawned(&mut m, 600, 0, 8);
        let term8 = Action::Signal {
            service: 0,
            pid: 8,
            signal: Signal::Term,
        };
        assert_eq!(
            m.handle(
                700,
                Event::Command {
                    service: 0,
                    command: Command::Restart
                }
            ),
            [term8]
        );
        assert_eq!(
            m.handle(
                710,
                Event::Exited {
                    service: 0,
                    pid: 8,
                    exit: Exit::Signal(15)
                }
            ),
            [Action::Spawn(0)]
        );
    }

    #[test]
    fn spawn_failure_is_final_until_started_again() {
        let mut m = Machine::new(vec![svc("a", RestartPolicy::Always, &[])]);
        m.handle(0, Event::Tick);
        let reason = "spawn /x: No such file or directory".to_owned();
        assert!(m
            .handle(
                1,
                Event::SpawnFailed {
                    service: 0,
                    reason: reason.clone()
                }
            )
            .is_empty());
        assert_eq!(m.units[0].state_name(), "failed");
        assert_eq!(m.units[0].last_exit, Some(reason));
        assert!(m.handle(100_000, Event::Tick).is_empty());
        assert_eq!(
            m.handle(
                100_001,
                Event::Command {
                    service: 0,
                    command: Command::Start
                }
            ),
            [Action::Spawn(0)]
        );
    }

    #[test]
    fn stop_during_backoff_or_spawn() {
        let mut m = Machine::new(vec![svc("a", RestartPolicy::Always, &[])]);
        m.handle(0, Event::Tick);
        // Stopped while starting: stopped as soon as the pid is known.
        m.handle(
            1,
            Event::Command {
                service: 0,
                command: Command::Stop,
            },
        );
        let out = spawned(&mut m, 2, 0, 5);
        assert_eq!(
            out,
            [Action::Signal {
                service: 0,
                pid: 5,
                signal: Signal::Term
            }]
        );
        m.handle(
            3,
            Event::Exited {
                service: 0,
                pid: 5,
                exit: Exit::Signal(15),
            },
        );
        assert_eq!(m.units[0].state_name(), "stopped");
    }
}
