//! Waiting for a child without async-process: a pidfd becomes readable
//! when the child exits, then `try_wait` collects it (by pid, so the orphan
//! reaper's rule holds). Kernels without pidfd (< 5.3) are polled.

use std::process::{Child, ExitStatus};
use std::time::Duration;

use smol::{Async, Timer};

/// How often a child is polled when there is no pidfd.
const POLL: Duration = Duration::from_millis(50);

/// Wait for `child` to exit and collect its status.
pub async fn wait(child: &mut Child) -> std::io::Result<ExitStatus> {
    let pid = rustix::process::Pid::from_child(child);
    let pidfd = rustix::process::pidfd_open(pid, rustix::process::PidfdFlags::empty())
        .ok()
        .and_then(|fd| Async::new(fd).ok());
    loop {
        if let Some(status) = child.try_wait()? {
            return Ok(status);
        }
        match &pidfd {
            Some(fd) => fd.readable().await?,
            None => {
                Timer::after(POLL).await;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn waits_for_exit_code_and_signal() {
        use std::os::unix::process::ExitStatusExt as _;
        let mut c = std::process::Command::new("/bin/sh")
            .args(["-c", "sleep 0.2; exit 7"])
            .spawn()
            .unwrap();
        let start = std::time::Instant::now();
        let status = smol::block_on(wait(&mut c)).unwrap();
        assert_eq!(status.code(), Some(7));
        assert!(start.elapsed() >= Duration::from_millis(150));
        let mut c = std::process::Command::new("/bin/sleep")
            .arg("10")
            .spawn()
            .unwrap();
        c.kill().unwrap();
        assert_eq!(smol::block_on(wait(&mut c)).unwrap().signal(), Some(9));
    }
}
