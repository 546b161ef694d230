//! The service supervisor: the rules live in [`machine`] (sans-io); this
//! file drives them — one task feeds events in and carries actions out
//! (spawn, signal), a waiter task per child reports its exit, a probe task
//! per checked service reports health, and the API reads the state and sends
//! commands.

pub mod cgroup;
pub mod child;
pub mod health;
pub mod logs;
pub mod machine;
pub mod spawn;

use std::os::fd::OwnedFd;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use smol::channel::{Receiver, Sender};
use smol::future::FutureExt as _;
use smol::{Executor, Timer};

use crate::config::{HealthKind, ServiceConfig};
use crate::device::log::{self, LogRing};
use crate::device::reaper::ChildRegistry;
use crate::wire::{LogLevel, ServiceAction, ServiceInfo, WireError};

use cgroup::Cgroups;
use machine::{Action, Command, Event, Exit, Machine, Signal};

/// Events queued for the driver (exits, probes, commands); senders wait when
/// it is full, so a burst slows down instead of growing memory.
const EVENT_QUEUE: usize = 64;
/// Until a checked service first passes (for at most [`FAST_PROBE_FOR_MS`]
/// of its run), probe this often: dependants and the boot's commit wait for it.
const FIRST_PROBE_INTERVAL: Duration = Duration::from_millis(100);
const FAST_PROBE_FOR_MS: u64 = 10_000;
/// A healthy service turns unhealthy after this many failed probes in a row
/// (one slow answer on a busy board is not an outage).
const HEALTH_RETRIES: u32 = 3;
/// The driver wakes at least this often even with no timer due.
const IDLE_WAKE: Duration = Duration::from_secs(3600);

pub struct Supervisor {
    machine: Mutex<Machine>,
    logs: Vec<LogRing>,
    events: Sender<Event>,
    cgroups: Cgroups,
    registry: ChildRegistry,
}

/// Milliseconds on the supervisor's clock (monotonic, since boot).
fn now_ms() -> u64 {
    log::uptime_ms()
}

impl Supervisor {
    /// Start supervising `configs` (validated: see `config::validate_services`).
    pub fn start(
        ex: &Arc<Executor<'static>>,
        configs: Vec<ServiceConfig>,
        cgroups: Cgroups,
        registry: ChildRegistry,
    ) -> Arc<Self> {
        if !cgroups.enabled() {
            let limited: Vec<&str> = configs
                .iter()
                .filter(|c| !c.limits.is_empty())
                .map(|c| c.name.as_str())
                .collect();
            if !limited.is_empty() {
                tracing::warn!(
                    "services: no cgroups here; limits of {} are not applied",
                    limited.join(", ")
                );
            }
        }
        let (tx, rx) = smol::channel::bounded(EVENT_QUEUE);
        let sup = Arc::new(Self {
            logs: configs.iter().map(|_| logs::ring()).collect(),
            machine: Mutex::new(Machine::new(configs)),
            events: tx,
            cgroups,
            registry,
        });
        let checked: Vec<(usize, crate::config::HealthConfig)> = sup
            .lock()
            .units
            .iter()
            .enumerate()
            .filter_map(|(i, u)| u.config.health.clone().map(|h| (i, h)))
            .filter(|(_, h)| h.kind != HealthKind::Alive)
            .collect();
        for (i, check) in checked {
            ex.spawn(probe_loop(sup.clone(), i, check)).detach();
        }
        ex.spawn(drive(sup.clone(), ex.clone(), rx)).detach();
        sup
    }

    fn lock(&self) -> MutexGuard<'_, Machine> {
        self.machine.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Every service, in config order.
    pub fn list(&self) -> Vec<ServiceInfo> {
        let now = now_ms();
        self.lock()
            .units
            .iter()
            .map(|u| ServiceInfo {
                name: u.config.name.clone(),
                state: u.state_name().into(),
                pid: u.pid(),
                restarts: u.restarts,
                last_exit: u.last_exit.clone(),
                uptime_ms: u.uptime_ms(now),
            })
            .collect()
    }

    fn index(&self, name: &str) -> Result<usize, WireError> {
        self.lock().find(name).ok_or_else(|| unknown(name))
    }

    /// Start, stop or restart `name`; done by the driver right after.
    pub fn command(&self, name: &str, action: ServiceAction) -> Result<(), WireError> {
        let service = self.index(name)?;
        let command = match action {
            ServiceAction::Start => Command::Start,
            ServiceAction::Stop => Command::Stop,
            ServiceAction::Restart => Command::Restart,
        };
        self.events
            .try_send(Event::Command { service, command })
            .map_err(|_| WireError::Busy)
    }

    /// The output ring of `name`.
    pub fn log(&self, name: &str) -> Result<LogRing, WireError> {
        let i = self.index(name)?;
        self.logs.get(i).cloned().ok_or_else(|| unknown(name))
    }

    /// Services with a health check that are not healthy now, by name.
    pub fn unhealthy(&self) -> Vec<String> {
        self.lock()
            .units
            .iter()
            .filter(|u| !u.healthy_for_commit())
            .map(|u| u.config.name.clone())
            .collect()
    }

    /// Wait until every checked service is healthy, or `timeout`; returns
    /// the ones still unhealthy (empty = all healthy).
    pub async fn wait_healthy(&self, timeout: Duration) -> Vec<String> {
        let start = Instant::now();
        loop {
            let bad = self.unhealthy();
            if bad.is_empty() || start.elapsed() >= timeout {
                return bad;
            }
            Timer::after(Duration::from_millis(100)).await;
        }
    }

    /// Stop every service (SIGTERM, SIGKILL after its grace) and wait until
    /// none runs, at most the longest grace period and a second: before a
    /// reboot or power-off, so services can save their state.
    pub async fn stop_all(&self) {
        let (count, grace_ms) = {
            let m = self.lock();
            let grace = m.units.iter().map(|u| u.config.stop_grace_ms).max();
            (m.units.len(), grace.unwrap_or(0))
        };
        for service in 0..count {
            let _ = self
                .events
                .send(Event::Command {
                    service,
                    command: Command::Stop,
                })
                .await;
        }
        let deadline = Instant::now() + Duration::from_millis(grace_ms.saturating_add(1000));
        while Instant::now() < deadline && self.lock().units.iter().any(|u| u.pid().is_some()) {
            Timer::after(Duration::from_millis(50)).await;
        }
    }

    fn name(&self, i: usize) -> String {
        self.lock()
            .units
            .get(i)
            .map(|u| u.config.name.clone())
            .unwrap_or_default()
    }
}

/// The error an unknown service name gets.
pub fn unknown(name: &str) -> WireError {
    WireError::Invalid(format!("no service named `{name}`"))
}

/// The driver: events in, actions out, timers in between.
async fn drive(sup: Arc<Supervisor>, ex: Arc<Executor<'static>>, rx: Receiver<Event>) {
    let mut queue = vec![Event::Tick];
    // When each service's last exit was seen: restart latency, for the log.
    let mut exit_seen: Vec<Option<Instant>> = vec![None; sup.logs.len()];
    loop {
        while let Some(event) = queue.pop() {
            if let Event::Exited { service, .. } = &event {
                if let Some(slot) = exit_seen.get_mut(*service) {
                    *slot = Some(Instant::now());
                }
            }
            let actions = sup.lock().handle(now_ms(), event);
            for action in actions {
                if let Some(next) = perform(&sup, &ex, action, &mut exit_seen) {
                    queue.push(next);
                }
            }
        }
        let wait = sup
            .lock()
            .next_deadline()
            .map(|at| Duration::from_millis(at.saturating_sub(now_ms())))
            .unwrap_or(IDLE_WAKE);
        let next = async { rx.recv().await.ok() };
        let timer = async {
            Timer::after(wait).await;
            Some(Event::Tick)
        };
        match next.or(timer).await {
            Some(event) => queue.push(event),
            // All senders gone: cannot happen while `sup` is alive.
            None => {
                Timer::after(IDLE_WAKE).await;
            }
        }
    }
}

/// Carry out one action; a spawn's outcome comes back as the next event.
fn perform(
    sup: &Arc<Supervisor>,
    ex: &Arc<Executor<'static>>,
    action: Action,
    exit_seen: &mut [Option<Instant>],
) -> Option<Event> {
    match action {
        Action::Spawn(service) => {
            let config = sup.lock().units.get(service).map(|u| u.config.clone())?;
            let oom_before = sup.cgroups.oom_kills(&config.name);
            match spawn::spawn(&config, &sup.cgroups, &sup.registry) {
                Ok(child) => {
                    let pid = child.id();
                    match exit_seen.get_mut(service).and_then(Option::take) {
                        Some(t) => tracing::info!(
                            "service {}: started, pid {pid} ({} us after the last exit)",
                            config.name,
                            t.elapsed().as_micros()
                        ),
                        None => tracing::info!("service {}: started, pid {pid}", config.name),
                    }
                    watch(sup, ex, service, config.name, child, oom_before);
                    Some(Event::Spawned { service, pid })
                }
                Err(e) => {
                    tracing::error!("service {}: {e}", config.name);
                    Some(Event::SpawnFailed {
                        service,
                        reason: e.to_string(),
                    })
                }
            }
        }
        Action::Signal {
            service,
            pid,
            signal,
        } => {
            let name = sup.name(service);
            let Ok(raw) = i32::try_from(pid) else {
                return None;
            };
            // Only a child we have not collected yet: its pid cannot have
            // been reused.
            if sup.registry.contains(raw) {
                let sig = match signal {
                    Signal::Term => nix::sys::signal::Signal::SIGTERM,
                    Signal::Kill => nix::sys::signal::Signal::SIGKILL,
                };
                tracing::info!("service {name}: sending {sig} to pid {pid}");
                let _ = nix::sys::signal::killpg(nix::unistd::Pid::from_raw(raw), sig);
            }
            if signal == Signal::Kill {
                sup.cgroups.kill_all(&name);
            }
            None
        }
    }
}

/// Pump the child's output into its ring and report its exit.
fn watch(
    sup: &Arc<Supervisor>,
    ex: &Arc<Executor<'static>>,
    service: usize,
    name: String,
    mut child: std::process::Child,
    oom_before: u64,
) {
    if let Some(ring) = sup.logs.get(service) {
        // Both pipes as plain files: one `pump` in the binary, not two.
        let pipes = [
            (child.stdout.take().map(OwnedFd::from), LogLevel::Info),
            (child.stderr.take().map(OwnedFd::from), LogLevel::Warn),
        ];
        for (fd, level) in pipes {
            if let Some(pipe) = fd.and_then(|fd| smol::Async::new(std::fs::File::from(fd)).ok()) {
                ex.spawn(logs::pump(pipe, ring.clone(), level)).detach();
            }
        }
    }
    let sup = sup.clone();
    ex.spawn(async move {
        let pid = child.id();
        let exit = match child::wait(&mut child).await {
            Ok(status) => exit_of(status),
            Err(e) => {
                tracing::error!("service {name}: waiting for pid {pid}: {e}");
                Exit::Code(-1)
            }
        };
        let exit = if sup.cgroups.oom_kills(&name) > oom_before {
            Exit::OutOfMemory
        } else {
            exit
        };
        if let Ok(raw) = i32::try_from(pid) {
            sup.registry.forget(raw);
        }
        // Leftovers of the service (forked helpers) go with it.
        sup.cgroups.kill_all(&name);
        tracing::info!("service {name}: pid {pid} ended ({})", exit.describe());
        let _ = sup.events.send(Event::Exited { service, pid, exit }).await;
    })
    .detach();
}

fn exit_of(status: std::process::ExitStatus) -> Exit {
    use std::os::unix::process::ExitStatusExt as _;
    match (status.code(), status.signal()) {
        (Some(code), _) => Exit::Code(code),
        (None, Some(sig)) => Exit::Signal(sig),
        (None, None) => Exit::Code(-1),
    }
}

/// Probe a checked service while it runs; report each answer.
async fn probe_loop(sup: Arc<Supervisor>, service: usize, check: crate::config::HealthConfig) {
    let interval = Duration::from_millis(check.interval_ms);
    let mut failures = 0u32;
    loop {
        let (pid, fast, was_healthy) = {
            let m = sup.lock();
            match m.units.get(service).map(|u| &u.state) {
                Some(machine::State::Running {
                    pid,
                    healthy,
                    since_ms,
                }) => (
                    Some(*pid),
                    *healthy != Some(true)
                        && now_ms().saturating_sub(*since_ms) < FAST_PROBE_FOR_MS,
                    *healthy == Some(true),
                ),
                _ => (None, false, false),
            }
        };
        let Some(pid) = pid else {
            failures = 0;
            Timer::after(FIRST_PROBE_INTERVAL).await;
            continue;
        };
        let ok = health::probe(&check, &sup.registry).await;
        failures = if ok { 0 } else { failures.saturating_add(1) };
        if ok || !was_healthy || failures >= HEALTH_RETRIES {
            let _ = sup.events.send(Event::Health { service, pid, ok }).await;
        }
        Timer::after(if fast && !ok {
            FIRST_PROBE_INTERVAL.min(interval)
        } else {
            interval
        })
        .await;
    }
}
