//! Supervised services (`[[services]]` in the machine config): what to run,
//! how to restart it, what it needs first, how to tell it is healthy and the
//! cgroup v2 limits it runs under. Validation names the field; the service's
//! own name is in the reason.
//!
//! Read from and written to a `toml::Table` by hand rather than with serde
//! derives: the derived visitors, monomorphized for toml's deserializer and
//! serializer, cost PID 1 ~40 KB; the `Table` path is already in it (config
//! diff).

use std::collections::BTreeMap;

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use toml::{Table, Value};

use super::machine::{field, ConfigError};

/// Where `outpost image build --extension FILE` puts service binaries in
/// the image (read-only, in the initramfs).
pub const EXTENSION_DIR: &str = "/usr/lib/outpost/ext";

/// Most services one board supervises: each costs a log ring (~64 KiB) and
/// a few tasks in PID 1.
pub const MAX_SERVICES: usize = 32;
/// Longest service name: it becomes a cgroup directory and a CLI argument.
pub const MAX_SERVICE_NAME: usize = 32;
/// Most arguments of one program (a command line, not a data channel).
pub const MAX_ARGS: usize = 64;
/// Most bytes of one argument, of a path, of one environment value.
pub const MAX_ARG_BYTES: usize = 1024;
/// Most environment variables of one service.
pub const MAX_ENV_VARS: usize = 64;
/// Most bytes of a service's whole environment (names and values).
pub const MAX_ENV_BYTES: usize = 8 * 1024;
/// Most dependencies of one service.
pub const MAX_AFTER: usize = 16;
/// Longest stop grace period: a board that reboots must not wait for ever.
pub const MAX_STOP_GRACE_MS: u64 = 120_000;
/// Longest back-off between restarts (one hour): longer is "never".
pub const MAX_BACKOFF_MS: u64 = 3_600_000;
/// Longest health probe timeout and interval.
pub const MAX_HEALTH_MS: u64 = 600_000;

/// When a service that exited is started again.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum RestartPolicy {
    /// After any exit, clean or not.
    #[default]
    Always,
    /// After a non-zero exit or a signal; a clean exit (0) stays stopped.
    OnFailure,
    /// Never: the service runs once.
    Never,
}

/// How health is judged.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HealthKind {
    /// Healthy while the process runs.
    Alive,
    /// Healthy while 127.0.0.1:`port` accepts a TCP connection.
    Tcp,
    /// Healthy while `command` exits 0 within `timeout_ms`.
    Exec,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HealthConfig {
    pub kind: HealthKind,
    pub port: Option<u16>,
    /// Exec probe: absolute program path, then its arguments.
    pub command: Vec<String>,
    pub timeout_ms: u64,
    pub interval_ms: u64,
}

fn default_probe_timeout() -> u64 {
    1000
}
fn default_probe_interval() -> u64 {
    1000
}

/// cgroup v2 limits, written verbatim to the service's cgroup files.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Limits {
    /// `memory.max`: bytes with an optional K/M/G suffix, or "max".
    pub memory_max: Option<String>,
    /// `cpu.max`: "QUOTA PERIOD" in µs ("50000 100000" = half a CPU), or "max".
    pub cpu_max: Option<String>,
    /// `pids.max`: most processes and threads.
    pub pids_max: Option<u64>,
}

impl Limits {
    pub fn is_empty(&self) -> bool {
        self.memory_max.is_none() && self.cpu_max.is_none() && self.pids_max.is_none()
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServiceConfig {
    pub name: String,
    /// Absolute path of a static binary: the image's extension directory
    /// (`/usr/lib/outpost/ext`) or DATA (`/data/...`).
    pub program: String,
    pub args: Vec<String>,
    /// The whole environment (nothing is inherited from PID 1).
    pub env: BTreeMap<String, String>,
    /// Numeric uid/gid to run as (default: root's, as PID 1).
    pub user: Option<u32>,
    pub group: Option<u32>,
    pub working_dir: Option<String>,
    pub restart: RestartPolicy,
    /// Delay before the second restart in a row (the first is immediate);
    /// it doubles with each further one up to `backoff_max_ms`.
    pub backoff_initial_ms: u64,
    pub backoff_max_ms: u64,
    /// Services that must be up (running, and healthy if they have a
    /// check) or have finished cleanly before this one starts.
    pub after: Vec<String>,
    pub health: Option<HealthConfig>,
    pub limits: Limits,
    /// SIGTERM, then SIGKILL after this long.
    pub stop_grace_ms: u64,
}

fn default_backoff_initial() -> u64 {
    100
}
fn default_backoff_max() -> u64 {
    30_000
}
fn default_stop_grace() -> u64 {
    5_000
}

impl ServiceConfig {
    /// A service with every optional field at its default.
    pub fn new(name: &str, program: &str) -> Self {
        Self {
            name: name.into(),
            program: program.into(),
            args: Vec::new(),
            env: BTreeMap::new(),
            user: None,
            group: None,
            working_dir: None,
            restart: RestartPolicy::default(),
            backoff_initial_ms: default_backoff_initial(),
            backoff_max_ms: default_backoff_max(),
            after: Vec::new(),
            health: None,
            limits: Limits::default(),
            stop_grace_ms: default_stop_grace(),
        }
    }
}

fn bad(name: &str, f: &'static str, reason: impl std::fmt::Display) -> ConfigError {
    field(f, format!("service `{name}`: {reason}"))
}

/// Validate the whole list: each service, unique names, known dependencies,
/// no dependency cycle.
pub fn validate_services(services: &[ServiceConfig]) -> Result<(), ConfigError> {
    if services.len() > MAX_SERVICES {
        return Err(field(
            "services",
            format!("{} services, at most {MAX_SERVICES}", services.len()),
        ));
    }
    for (i, s) in services.iter().enumerate() {
        validate_one(s)?;
        if services[..i].iter().any(|o| o.name == s.name) {
            return Err(bad(&s.name, "services.name", "defined twice"));
        }
    }
    for s in services {
        for dep in &s.after {
            if dep == &s.name {
                return Err(bad(&s.name, "services.after", "depends on itself"));
            }
            if !services.iter().any(|o| &o.name == dep) {
                return Err(bad(
                    &s.name,
                    "services.after",
                    format!("unknown service `{dep}`"),
                ));
            }
        }
    }
    if let Some(name) = find_cycle(services) {
        return Err(bad(
            &name,
            "services.after",
            "is part of a dependency cycle",
        ));
    }
    Ok(())
}

/// Kahn's algorithm: a service left over once no more can be ordered is on
/// (or behind) a cycle.
fn find_cycle(services: &[ServiceConfig]) -> Option<String> {
    start_order(services).err()
}

/// Services in an order that starts each after its dependencies, or the name
/// of a service on a cycle.
pub fn start_order(services: &[ServiceConfig]) -> Result<Vec<usize>, String> {
    let mut done = vec![false; services.len()];
    let mut order = Vec::with_capacity(services.len());
    loop {
        let before = order.len();
        for (i, s) in services.iter().enumerate() {
            let ready = !done.get(i).copied().unwrap_or(true)
                && s.after.iter().all(|d| {
                    services
                        .iter()
                        .position(|o| &o.name == d)
                        .is_none_or(|j| done.get(j).copied().unwrap_or(false))
                });
            if ready {
                if let Some(d) = done.get_mut(i) {
                    *d = true;
                }
                order.push(i);
            }
        }
        if order.len() == services.len() {
            return Ok(order);
        }
        if order.len() == before {
            let stuck = done.iter().position(|d| !d).unwrap_or(0);
            return Err(services
                .get(stuck)
                .map(|s| s.name.clone())
                .unwrap_or_default());
        }
    }
}

fn validate_one(s: &ServiceConfig) -> Result<(), ConfigError> {
    let n = s.name.as_str();
    if n.is_empty()
        || n.len() > MAX_SERVICE_NAME
        || !n
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        || n.starts_with('-')
    {
        return Err(field(
            "services.name",
            format!(
                "`{n}` must be 1 to {MAX_SERVICE_NAME} letters, digits, '-' or '_' (not starting with '-')"
            ),
        ));
    }
    check_path(n, "services.program", &s.program)?;
    if s.args.len() > MAX_ARGS {
        return Err(bad(
            n,
            "services.args",
            format!("more than {MAX_ARGS} arguments"),
        ));
    }
    if s.args
        .iter()
        .any(|a| a.len() > MAX_ARG_BYTES || a.contains('\0'))
    {
        return Err(bad(
            n,
            "services.args",
            format!("an argument is longer than {MAX_ARG_BYTES} bytes or has a NUL"),
        ));
    }
    if s.env.len() > MAX_ENV_VARS {
        return Err(bad(
            n,
            "services.env",
            format!("more than {MAX_ENV_VARS} variables"),
        ));
    }
    let env_bytes: usize = s.env.iter().map(|(k, v)| k.len() + v.len() + 2).sum();
    if env_bytes > MAX_ENV_BYTES {
        return Err(bad(
            n,
            "services.env",
            format!("{env_bytes} bytes, at most {MAX_ENV_BYTES}"),
        ));
    }
    for (k, v) in &s.env {
        if k.is_empty() || k.contains(['=', '\0']) || v.contains('\0') {
            return Err(bad(n, "services.env", format!("bad variable `{k}`")));
        }
    }
    if let Some(dir) = &s.working_dir {
        check_path(n, "services.working_dir", dir)?;
    }
    if s.backoff_initial_ms == 0 || s.backoff_initial_ms > MAX_BACKOFF_MS {
        return Err(bad(
            n,
            "services.backoff_initial_ms",
            format!("must be 1 to {MAX_BACKOFF_MS}"),
        ));
    }
    if s.backoff_max_ms < s.backoff_initial_ms || s.backoff_max_ms > MAX_BACKOFF_MS {
        return Err(bad(
            n,
            "services.backoff_max_ms",
            format!("must be between backoff_initial_ms and {MAX_BACKOFF_MS}"),
        ));
    }
    if s.after.len() > MAX_AFTER {
        return Err(bad(
            n,
            "services.after",
            format!("more than {MAX_AFTER} dependencies"),
        ));
    }
    if s.stop_grace_ms > MAX_STOP_GRACE_MS {
        return Err(bad(
            n,
            "services.stop_grace_ms",
            format!("at most {MAX_STOP_GRACE_MS}"),
        ));
    }
    if let Some(h) = &s.health {
        validate_health(n, h)?;
    }
    validate_limits(n, &s.limits)
}

fn check_path(n: &str, f: &'static str, path: &str) -> Result<(), ConfigError> {
    if !path.starts_with('/')
        || path.len() > MAX_ARG_BYTES
        || path.contains('\0')
        || path.split('/').any(|c| c == "..")
    {
        return Err(bad(
            n,
            f,
            format!("`{path}` must be an absolute path without `..`"),
        ));
    }
    Ok(())
}

fn validate_health(n: &str, h: &HealthConfig) -> Result<(), ConfigError> {
    match h.kind {
        HealthKind::Alive => {}
        HealthKind::Tcp => {
            if h.port.is_none_or(|p| p == 0) {
                return Err(bad(
                    n,
                    "services.health.port",
                    "kind = \"tcp\" needs a port 1-65535",
                ));
            }
        }
        HealthKind::Exec => {
            let Some(prog) = h.command.first() else {
                return Err(bad(
                    n,
                    "services.health.command",
                    "kind = \"exec\" needs a command",
                ));
            };
            check_path(n, "services.health.command", prog)?;
            if h.command.len() > MAX_ARGS
                || h.command
                    .iter()
                    .any(|a| a.len() > MAX_ARG_BYTES || a.contains('\0'))
            {
                return Err(bad(n, "services.health.command", "too long or has a NUL"));
            }
        }
    }
    if h.timeout_ms == 0 || h.timeout_ms > MAX_HEALTH_MS {
        return Err(bad(
            n,
            "services.health.timeout_ms",
            format!("must be 1 to {MAX_HEALTH_MS}"),
        ));
    }
    if h.interval_ms < 10 || h.interval_ms > MAX_HEALTH_MS {
        return Err(bad(
            n,
            "services.health.interval_ms",
            format!("must be 10 to {MAX_HEALTH_MS}"),
        ));
    }
    Ok(())
}

fn validate_limits(n: &str, l: &Limits) -> Result<(), ConfigError> {
    if let Some(m) = &l.memory_max {
        let digits = m.strip_suffix(['K', 'M', 'G']).unwrap_or(m);
        let ok = m == "max"
            || (!digits.is_empty()
                && digits.len() <= 20
                && digits.bytes().all(|b| b.is_ascii_digit()));
        if !ok {
            return Err(bad(
                n,
                "services.limits.memory_max",
                format!("`{m}` must be bytes with an optional K/M/G suffix, or \"max\""),
            ));
        }
    }
    if let Some(c) = &l.cpu_max {
        let mut parts = c.split(' ');
        let quota = parts.next().unwrap_or_default();
        let period = parts.next();
        let num = |s: &str| !s.is_empty() && s.len() <= 10 && s.bytes().all(|b| b.is_ascii_digit());
        let ok = (quota == "max" || num(quota)) && period.is_none_or(num) && parts.next().is_none();
        if !ok {
            return Err(bad(
                n,
                "services.limits.cpu_max",
                format!("`{c}` must be \"QUOTA PERIOD\" in microseconds, or \"max\""),
            ));
        }
    }
    if l.pids_max == Some(0) {
        return Err(bad(n, "services.limits.pids_max", "must be at least 1"));
    }
    Ok(())
}

impl RestartPolicy {
    fn name(self) -> &'static str {
        match self {
            RestartPolicy::Always => "always",
            RestartPolicy::OnFailure => "on-failure",
            RestartPolicy::Never => "never",
        }
    }
}

impl HealthKind {
    fn name(self) -> &'static str {
        match self {
            HealthKind::Alive => "alive",
            HealthKind::Tcp => "tcp",
            HealthKind::Exec => "exec",
        }
    }
}

/// Reads typed fields of one TOML table; errors name `services.<key>`.
struct Fields<'a> {
    table: &'a Table,
    prefix: &'static str,
}

impl<'a> Fields<'a> {
    fn new(table: &'a Table, prefix: &'static str, known: &[&str]) -> Result<Self, String> {
        if let Some(k) = table.keys().find(|k| !known.contains(&k.as_str())) {
            return Err(format!("unknown field `{prefix}.{k}`"));
        }
        Ok(Self { table, prefix })
    }
    fn wrong(&self, key: &str, what: &str) -> String {
        format!("`{}.{key}` must be {what}", self.prefix)
    }
    fn string(&self, key: &str) -> Result<Option<String>, String> {
        match self.table.get(key) {
            None => Ok(None),
            Some(Value::String(s)) => Ok(Some(s.clone())),
            Some(_) => Err(self.wrong(key, "a string")),
        }
    }
    fn required(&self, key: &str) -> Result<String, String> {
        self.string(key)?
            .ok_or_else(|| format!("missing field `{}.{key}`", self.prefix))
    }
    fn number(&self, key: &str, max: u64) -> Result<Option<u64>, String> {
        match self.table.get(key) {
            None => Ok(None),
            Some(Value::Integer(i)) => u64::try_from(*i)
                .ok()
                .filter(|n| *n <= max)
                .map(Some)
                .ok_or_else(|| self.wrong(key, &format!("an integer from 0 to {max}"))),
            Some(_) => Err(self.wrong(key, "an integer")),
        }
    }
    fn strings(&self, key: &str) -> Result<Vec<String>, String> {
        match self.table.get(key) {
            None => Ok(Vec::new()),
            Some(Value::Array(items)) => items
                .iter()
                .map(|v| v.as_str().map(str::to_owned))
                .collect::<Option<Vec<_>>>()
                .ok_or_else(|| self.wrong(key, "an array of strings")),
            Some(_) => Err(self.wrong(key, "an array of strings")),
        }
    }
    fn table(&self, key: &str) -> Result<Option<&'a Table>, String> {
        match self.table.get(key) {
            None => Ok(None),
            Some(Value::Table(t)) => Ok(Some(t)),
            Some(_) => Err(self.wrong(key, "a table")),
        }
    }
}

fn u32_field(f: &Fields<'_>, key: &str) -> Result<Option<u32>, String> {
    Ok(f.number(key, u64::from(u32::MAX))?
        .and_then(|n| u32::try_from(n).ok()))
}

impl ServiceConfig {
    /// One `[[services]]` table.
    pub fn from_table(table: &Table) -> Result<Self, String> {
        let f = Fields::new(
            table,
            "services",
            &[
                "name",
                "program",
                "args",
                "env",
                "user",
                "group",
                "working_dir",
                "restart",
                "backoff_initial_ms",
                "backoff_max_ms",
                "after",
                "health",
                "limits",
                "stop_grace_ms",
            ],
        )?;
        let mut env = BTreeMap::new();
        if let Some(t) = f.table("env")? {
            for (k, v) in t {
                let v = v
                    .as_str()
                    .ok_or_else(|| format!("`services.env.{k}` must be a string"))?;
                env.insert(k.clone(), v.to_owned());
            }
        }
        let restart = match f.string("restart")?.as_deref() {
            None | Some("always") => RestartPolicy::Always,
            Some("on-failure") => RestartPolicy::OnFailure,
            Some("never") => RestartPolicy::Never,
            Some(other) => {
                return Err(format!(
                    "`services.restart` is `{other}`: must be always, on-failure or never"
                ))
            }
        };
        let health = f.table("health")?.map(health_from_table).transpose()?;
        let limits = match f.table("limits")? {
            None => Limits::default(),
            Some(t) => {
                let l = Fields::new(t, "services.limits", &["memory_max", "cpu_max", "pids_max"])?;
                Limits {
                    memory_max: l.string("memory_max")?,
                    cpu_max: l.string("cpu_max")?,
                    pids_max: l.number("pids_max", u64::MAX)?,
                }
            }
        };
        Ok(Self {
            name: f.required("name")?,
            program: f.required("program")?,
            args: f.strings("args")?,
            env,
            user: u32_field(&f, "user")?,
            group: u32_field(&f, "group")?,
            working_dir: f.string("working_dir")?,
            restart,
            backoff_initial_ms: f
                .number("backoff_initial_ms", u64::MAX)?
                .unwrap_or_else(default_backoff_initial),
            backoff_max_ms: f
                .number("backoff_max_ms", u64::MAX)?
                .unwrap_or_else(default_backoff_max),
            after: f.strings("after")?,
            health,
            limits,
            stop_grace_ms: f
                .number("stop_grace_ms", u64::MAX)?
                .unwrap_or_else(default_stop_grace),
        })
    }

    /// The table `from_table` reads back (defaults left out where optional).
    pub fn to_table(&self) -> Table {
        let mut t = Table::new();
        let int = |n: u64| Value::Integer(i64::try_from(n).unwrap_or(i64::MAX));
        let strings = |v: &[String]| Value::Array(v.iter().cloned().map(Value::String).collect());
        t.insert("name".into(), Value::String(self.name.clone()));
        t.insert("program".into(), Value::String(self.program.clone()));
        if !self.args.is_empty() {
            t.insert("args".into(), strings(&self.args));
        }
        if !self.env.is_empty() {
            let env = self
                .env
                .iter()
                .map(|(k, v)| (k.clone(), Value::String(v.clone())))
                .collect();
            t.insert("env".into(), Value::Table(env));
        }
        if let Some(u) = self.user {
            t.insert("user".into(), int(u64::from(u)));
        }
        if let Some(g) = self.group {
            t.insert("group".into(), int(u64::from(g)));
        }
        if let Some(d) = &self.working_dir {
            t.insert("working_dir".into(), Value::String(d.clone()));
        }
        t.insert("restart".into(), Value::String(self.restart.name().into()));
        t.insert("backoff_initial_ms".into(), int(self.backoff_initial_ms));
        t.insert("backoff_max_ms".into(), int(self.backoff_max_ms));
        if !self.after.is_empty() {
            t.insert("after".into(), strings(&self.after));
        }
        t.insert("stop_grace_ms".into(), int(self.stop_grace_ms));
        if let Some(h) = &self.health {
            let mut ht = Table::new();
            ht.insert("kind".into(), Value::String(h.kind.name().into()));
            if let Some(p) = h.port {
                ht.insert("port".into(), int(u64::from(p)));
            }
            if !h.command.is_empty() {
                ht.insert("command".into(), strings(&h.command));
            }
            ht.insert("timeout_ms".into(), int(h.timeout_ms));
            ht.insert("interval_ms".into(), int(h.interval_ms));
            t.insert("health".into(), Value::Table(ht));
        }
        if !self.limits.is_empty() {
            let mut lt = Table::new();
            if let Some(m) = &self.limits.memory_max {
                lt.insert("memory_max".into(), Value::String(m.clone()));
            }
            if let Some(c) = &self.limits.cpu_max {
                lt.insert("cpu_max".into(), Value::String(c.clone()));
            }
            if let Some(p) = self.limits.pids_max {
                lt.insert("pids_max".into(), int(p));
            }
            t.insert("limits".into(), Value::Table(lt));
        }
        t
    }
}

fn health_from_table(t: &Table) -> Result<HealthConfig, String> {
    let f = Fields::new(
        t,
        "services.health",
        &["kind", "port", "command", "timeout_ms", "interval_ms"],
    )?;
    let kind = match f.required("kind")?.as_str() {
        "alive" => HealthKind::Alive,
        "tcp" => HealthKind::Tcp,
        "exec" => HealthKind::Exec,
        other => {
            return Err(format!(
                "`services.health.kind` is `{other}`: must be alive, tcp or exec"
            ))
        }
    };
    Ok(HealthConfig {
        kind,
        port: f
            .number("port", u64::from(u16::MAX))?
            .and_then(|p| u16::try_from(p).ok()),
        command: f.strings("command")?,
        timeout_ms: f
            .number("timeout_ms", u64::MAX)?
            .unwrap_or_else(default_probe_timeout),
        interval_ms: f
            .number("interval_ms", u64::MAX)?
            .unwrap_or_else(default_probe_interval),
    })
}

impl<'de> Deserialize<'de> for ServiceConfig {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let table = Table::deserialize(d)?;
        Self::from_table(&table).map_err(serde::de::Error::custom)
    }
}

impl Serialize for ServiceConfig {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        self.to_table().serialize(s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::MachineConfig;

    fn err_field(services: &str) -> (&'static str, String) {
        match MachineConfig::from_toml(&format!("hostname = \"x\"\n{services}")) {
            Err(ConfigError::Field { field, reason }) => (field, reason),
            other => panic!("expected a field error, got {other:?}"),
        }
    }

    const OK: &str = "[[services]]\nname = \"a\"\nprogram = \"/usr/lib/outpost/ext/a\"\n";

    #[test]
    fn a_full_service_parses_and_round_trips() {
        let text = "hostname = \"x\"\n[[services]]\nname = \"db\"\nprogram = \"/data/bin/db\"\n\
            [[services]]\nname = \"web\"\nprogram = \"/usr/lib/outpost/ext/web\"\nargs = [\"-p\", \"80\"]\n\
            env = { RUST_LOG = \"info\" }\nuser = 1000\ngroup = 1000\nworking_dir = \"/data/web\"\n\
            restart = \"on-failure\"\nbackoff_initial_ms = 50\nbackoff_max_ms = 5000\nafter = [\"db\"]\n\
            stop_grace_ms = 2000\nhealth = { kind = \"tcp\", port = 8080 }\n\
            limits = { memory_max = \"64M\", cpu_max = \"50000 100000\", pids_max = 32 }\n";
        let c = MachineConfig::from_toml(text).unwrap();
        assert_eq!(c.services.len(), 2);
        let web = &c.services[1];
        assert_eq!(web.restart, RestartPolicy::OnFailure);
        assert_eq!(web.health.as_ref().unwrap().port, Some(8080));
        assert_eq!(web.limits.pids_max, Some(32));
        assert_eq!(MachineConfig::from_toml(&c.to_toml()).unwrap(), c);
        let d = &c.services[0];
        assert_eq!(
            (d.restart, d.backoff_initial_ms, d.stop_grace_ms),
            (RestartPolicy::Always, 100, 5000)
        );
    }

    #[test]
    fn bad_services_name_the_field() {
        assert_eq!(
            err_field("[[services]]\nname = \"a b\"\nprogram = \"/x\"").0,
            "services.name"
        );
        assert_eq!(
            err_field("[[services]]\nname = \"a\"\nprogram = \"rel/x\"").0,
            "services.program"
        );
        assert_eq!(
            err_field("[[services]]\nname = \"a\"\nprogram = \"/a/../x\"").0,
            "services.program"
        );
        let (f, why) = err_field(&format!("{OK}after = [\"nope\"]"));
        assert_eq!(f, "services.after");
        assert!(why.contains("`a`") && why.contains("nope"), "{why}");
        assert_eq!(err_field(&format!("{OK}{OK}")).0, "services.name");
        assert_eq!(
            err_field(&format!("{OK}health = {{ kind = \"tcp\" }}")).0,
            "services.health.port"
        );
        assert_eq!(
            err_field(&format!("{OK}health = {{ kind = \"exec\" }}")).0,
            "services.health.command"
        );
        assert_eq!(
            err_field(&format!("{OK}limits = {{ memory_max = \"lots\" }}")).0,
            "services.limits.memory_max"
        );
        assert_eq!(
            err_field(&format!("{OK}limits = {{ cpu_max = \"1 2 3\" }}")).0,
            "services.limits.cpu_max"
        );
        assert_eq!(
            err_field(&format!("{OK}backoff_initial_ms = 0")).0,
            "services.backoff_initial_ms"
        );
        assert_eq!(
            err_field(&format!(
                "{OK}backoff_initial_ms = 500\nbackoff_max_ms = 100"
            ))
            .0,
            "services.backoff_max_ms"
        );
        assert_eq!(
            err_field(&format!("{OK}stop_grace_ms = 999999999")).0,
            "services.stop_grace_ms"
        );
        let many = format!("{OK}args = [{}]", vec!["\"x\""; MAX_ARGS + 1].join(","));
        assert_eq!(err_field(&many).0, "services.args");
        let big_env = format!("{OK}env = {{ A = \"{}\" }}", "v".repeat(MAX_ENV_BYTES));
        assert_eq!(err_field(&big_env).0, "services.env");
        let too_many: String = (0..=MAX_SERVICES)
            .map(|i| format!("[[services]]\nname = \"s{i}\"\nprogram = \"/x\"\n"))
            .collect();
        assert_eq!(err_field(&too_many).0, "services");
    }

    #[test]
    fn wrong_types_name_the_key() {
        for (text, key) in [
            ("args = \"x\"", "services.args"),
            ("user = -1", "services.user"),
            ("env = { A = 1 }", "services.env.A"),
            ("health = { kind = \"maybe\" }", "services.health.kind"),
            (
                "health = { kind = \"tcp\", port = 70000 }",
                "services.health.port",
            ),
            ("limits = { memory = \"1M\" }", "services.limits.memory"),
        ] {
            let err =
                MachineConfig::from_toml(&format!("hostname = \"x\"\n{OK}{text}")).unwrap_err();
            assert!(err.to_string().contains(key), "{text}: {err}");
        }
        let err =
            MachineConfig::from_toml("hostname = \"x\"\n[[services]]\nname = \"a\"").unwrap_err();
        assert!(err.to_string().contains("services.program"), "{err}");
    }

    #[test]
    fn unknown_keys_are_refused() {
        let err = MachineConfig::from_toml(&format!("hostname = \"x\"\n{OK}restrat = \"never\""))
            .unwrap_err();
        assert!(err.to_string().contains("restrat"), "{err}");
        let err =
            MachineConfig::from_toml(&format!("hostname = \"x\"\n{OK}restart = \"sometimes\""))
                .unwrap_err();
        assert!(err.to_string().contains("sometimes"), "{err}");
    }

    #[test]
    fn cycles_are_rejected_and_order_follows_dependencies() {
        let svc = |n: &str, after: &[&str]| {
            let mut s = ServiceConfig::new(n, "/x");
            s.after = after.iter().map(|a| (*a).to_owned()).collect();
            s
        };
        let list = [
            svc("web", &["db", "cache"]),
            svc("db", &[]),
            svc("cache", &["db"]),
        ];
        validate_services(&list).unwrap();
        assert_eq!(start_order(&list).unwrap(), [1, 2, 0]);
        let cycle = [
            svc("a", &["c"]),
            svc("b", &["a"]),
            svc("c", &["b"]),
            svc("d", &[]),
        ];
        match validate_services(&cycle) {
            Err(ConfigError::Field { field, reason }) => {
                assert_eq!(field, "services.after");
                assert!(reason.contains("cycle"), "{reason}");
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(
            validate_services(&[svc("a", &["a"])]).map_err(|e| e.to_string()),
            Err("machine config field `services.after`: service `a`: depends on itself".into())
        );
    }
}
