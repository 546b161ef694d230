//! Health probes: a TCP connect to 127.0.0.1:port, or a program that must
//! exit 0, each within the check's timeout. (`alive` needs no probe.)

use std::net::{Ipv4Addr, SocketAddr, TcpStream};
use std::process::Stdio;
use std::time::Duration;

use smol::future::FutureExt as _;
use smol::{Async, Timer};

use crate::config::{HealthConfig, HealthKind};
use crate::device::reaper::ChildRegistry;

/// One probe; false on failure or timeout.
pub async fn probe(check: &HealthConfig, registry: &ChildRegistry) -> bool {
    let timeout = Duration::from_millis(check.timeout_ms);
    match check.kind {
        HealthKind::Alive => true,
        HealthKind::Tcp => {
            let Some(port) = check.port else {
                return false;
            };
            let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
            let connect = async { Async::<TcpStream>::connect(addr).await.is_ok() };
            connect.or(expire(timeout)).await
        }
        HealthKind::Exec => exec(check, registry, timeout).await,
    }
}

async fn expire(after: Duration) -> bool {
    Timer::after(after).await;
    false
}

async fn exec(check: &HealthConfig, registry: &ChildRegistry, timeout: Duration) -> bool {
    let Some((program, args)) = check.command.split_first() else {
        return false;
    };
    let mut command = std::process::Command::new(program);
    command
        .args(args)
        .env_clear()
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    let Ok(mut child) = registry.spawn_std(&mut command) else {
        return false;
    };
    let pid = i32::try_from(child.id()).unwrap_or(0);
    let ok = {
        let status = async {
            super::child::wait(&mut child)
                .await
                .is_ok_and(|s| s.success())
        };
        status.or(expire(timeout)).await
    };
    if !ok {
        let _ = child.kill();
    }
    // Collect it (it was killed if it overran) before the pid is forgotten.
    let _ = super::child::wait(&mut child).await;
    registry.forget(pid);
    ok
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(kind: HealthKind) -> HealthConfig {
        HealthConfig {
            kind,
            port: None,
            command: vec![],
            timeout_ms: 2000,
            interval_ms: 100,
        }
    }

    #[test]
    fn tcp_probe_sees_a_listener() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let mut c = check(HealthKind::Tcp);
        c.port = Some(port);
        let reg = ChildRegistry::new();
        assert!(smol::block_on(probe(&c, &reg)));
        drop(listener);
        assert!(!smol::block_on(probe(&c, &reg)));
    }

    #[test]
    fn exec_probe_exit_code_and_timeout() {
        let reg = ChildRegistry::new();
        let mut c = check(HealthKind::Exec);
        c.command = vec!["/bin/sh".into(), "-c".into(), "exit 0".into()];
        assert!(smol::block_on(probe(&c, &reg)));
        c.command = vec!["/bin/sh".into(), "-c".into(), "exit 3".into()];
        assert!(!smol::block_on(probe(&c, &reg)));
        c.command = vec!["/bin/sleep".into(), "5".into()];
        c.timeout_ms = 100;
        let start = std::time::Instant::now();
        assert!(!smol::block_on(probe(&c, &reg)));
        assert!(start.elapsed() < Duration::from_secs(3));
    }
}
