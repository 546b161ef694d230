//! The link probe: a TCP connect to the configured target out of one
//! interface only (SO_BINDTODEVICE: the probe must not take the default
//! route through another link), closed with a reset (SO_LINGER 0), so one
//! probe is SYN, SYN-ACK, ACK, RST: ~212 bytes of IP.
//! An answer of any kind (accepted or refused) proves the path works.

use std::net::{SocketAddrV4, TcpStream};
use std::os::fd::AsRawFd;
use std::sync::Arc;
use std::time::Duration;

use nix::errno::Errno;
use nix::sys::socket::{
    connect, setsockopt, socket, sockopt, AddressFamily, SockFlag, SockType, SockaddrIn,
};
use smol::Async;

use crate::config::network::ProbeConfig;

use super::links::LinkRuntime;
use super::Netlink;

/// Probe `target` out of `iface` within `timeout`: true if it answered.
pub async fn tcp(iface: &str, target: SocketAddrV4, timeout: Duration) -> bool {
    let attempt = async {
        let fd = socket(
            AddressFamily::Inet,
            SockType::Stream,
            SockFlag::SOCK_CLOEXEC | SockFlag::SOCK_NONBLOCK,
            None,
        )
        .ok()?;
        setsockopt(&fd, sockopt::BindToDevice, &std::ffi::OsString::from(iface)).ok()?;
        let reset = nix::libc::linger {
            l_onoff: 1,
            l_linger: 0,
        };
        setsockopt(&fd, sockopt::Linger, &reset).ok()?;
        match connect(fd.as_raw_fd(), &SockaddrIn::from(target)) {
            Ok(()) | Err(Errno::EINPROGRESS) => {}
            Err(Errno::ECONNREFUSED) => return Some(true),
            Err(_) => return Some(false),
        }
        let stream = Async::new(TcpStream::from(fd)).ok()?;
        stream.writable().await.ok()?;
        Some(match stream.get_ref().take_error() {
            Ok(None) => true,
            Ok(Some(e)) => e.raw_os_error() == Some(Errno::ECONNREFUSED as i32),
            Err(_) => false,
        })
    };
    let expired = async {
        smol::Timer::after(timeout).await;
        Some(false)
    };
    smol::future::or(attempt, expired).await.unwrap_or(false)
}

/// The probe task of one link: every `interval_secs` while it has an
/// interface and carrier, one probe; health and routes follow at once.
pub async fn run(link: Arc<LinkRuntime>, config: ProbeConfig) {
    let target = config.target;
    let interval = Duration::from_secs(u64::from(config.interval_secs));
    let timeout = Duration::from_millis(u64::from(config.timeout_ms));
    loop {
        smol::Timer::after(interval).await;
        let (iface, carrier, over_budget) = {
            let st = link.state();
            (
                st.iface.as_ref().map(|i| i.name.clone()),
                st.health.carrier,
                st.over_budget,
            )
        };
        // Past the budget, probes are non-essential traffic: a tenth as many.
        if over_budget {
            smol::Timer::after(interval.saturating_mul(9)).await;
        }
        // Without carrier the link is down anyway; a probe would only cost.
        let Some(iface) = iface.filter(|_| carrier) else {
            continue;
        };
        let ok = tcp(&iface, target, timeout).await;
        link.state().health.probe(ok, config.failures);
        if let Ok(mut nl) = Netlink::open() {
            super::refresh(&mut nl, &link);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_probes() {
        // SO_BINDTODEVICE needs CAP_NET_RAW; as an ordinary user the probe
        // cannot be set up and reports failure, never panics.
        let root = rustix::process::geteuid().is_root();
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let std::net::SocketAddr::V4(open) = listener.local_addr().unwrap() else {
            panic!()
        };
        assert_eq!(
            smol::block_on(tcp("lo", open, Duration::from_secs(2))),
            root
        );
        drop(listener);
        // Refused is an answer: the path works.
        assert_eq!(
            smol::block_on(tcp("lo", open, Duration::from_secs(2))),
            root
        );
        // No such interface: a failure.
        assert!(!smol::block_on(tcp(
            "nosuch0",
            open,
            Duration::from_secs(1)
        )));
    }
}
