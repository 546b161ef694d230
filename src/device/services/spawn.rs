//! Start one service's process: its program, arguments and environment
//! (nothing inherited from PID 1), user, group and directory, its own
//! process group, stdout/stderr piped to its log, joined to its cgroup
//! before it execs, and registered with the reaper so its exit status is
//! ours to collect.

use std::os::unix::process::CommandExt as _;
use std::process::Stdio;

use crate::config::ServiceConfig;
use crate::device::reaper::ChildRegistry;
use crate::device::sys;

use super::cgroup::{CgroupError, Cgroups};

#[derive(Debug, thiserror::Error)]
pub enum SpawnError {
    #[error("{0}")]
    Cgroup(#[from] CgroupError),
    #[error("starting {program}: {source}")]
    Exec {
        program: String,
        source: std::io::Error,
    },
}

/// Spawn `config`'s program. When cgroups are enabled, limits are written
/// and the child joins `outpost/<name>` before exec.
pub fn spawn(
    config: &ServiceConfig,
    cgroups: &Cgroups,
    registry: &ChildRegistry,
) -> Result<std::process::Child, SpawnError> {
    let mut command = std::process::Command::new(&config.program);
    command
        .args(&config.args)
        .env_clear()
        .envs(&config.env)
        // Its own group: a stop signals the service and what it forked.
        .process_group(0);
    if let Some(dir) = &config.working_dir {
        command.current_dir(dir);
    }
    if let Some(gid) = config.group {
        command.gid(gid);
    }
    if let Some(uid) = config.user {
        command.uid(uid);
    }
    let procs = cgroups.prepare(&config.name, &config.limits)?;
    sys::service_pre_exec(&mut command, procs);
    command
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    registry
        .spawn_std(&mut command)
        .map_err(|source| SpawnError::Exec {
            program: config.program.clone(),
            source,
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_missing_program_is_a_clear_error() {
        let cfg = ServiceConfig::new("x", "/nonexistent/outpost-test-binary");
        let err = spawn(&cfg, &Cgroups::disabled(), &ChildRegistry::new()).unwrap_err();
        let text = err.to_string();
        assert!(
            text.contains("/nonexistent/outpost-test-binary") && text.contains("No such file"),
            "{text}"
        );
    }

    #[test]
    fn env_is_exactly_the_configured_one() {
        let mut cfg = ServiceConfig::new("x", "/usr/bin/env");
        cfg.env.insert("ONLY".into(), "this".into());
        let registry = ChildRegistry::new();
        let mut child = spawn(&cfg, &Cgroups::disabled(), &registry).unwrap();
        let pid = i32::try_from(child.id()).unwrap();
        assert!(registry.contains(pid));
        let mut out = String::new();
        use std::io::Read as _;
        child
            .stdout
            .take()
            .unwrap()
            .read_to_string(&mut out)
            .unwrap();
        let status = smol::block_on(super::super::child::wait(&mut child)).unwrap();
        assert!(status.success());
        assert_eq!(out, "ONLY=this\n");
    }
}
