//! The SNTP task: ask the configured servers in turn over UDP, step the clock
//! on the first answer (or a large offset), re-sync every `interval`, back off
//! (doubling, capped) while servers fail.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::sntp::{self, SntpError, MAX_REPLY_LEN};
use super::TimeKeeper;
use crate::config::TimeConfig;

/// Wait this long for a reply: beyond an LTE link's worst round trips.
const REPLY_TIMEOUT: Duration = Duration::from_secs(5);
/// First retry delay after a failure.
const MIN_BACKOFF: Duration = Duration::from_secs(2);
/// Offsets above this are stepped (ntpd's step threshold); smaller ones are
/// left until they grow (no slewing: nothing here needs sub-second time).
pub const STEP_THRESHOLD: Duration = Duration::from_millis(128);
/// Replies with a longer delay carry too much uncertainty to step on.
const MAX_DELAY: Duration = Duration::from_secs(4);

#[derive(Debug, thiserror::Error)]
pub enum SyncError {
    #[error("{what}: {source}")]
    Io {
        what: &'static str,
        source: std::io::Error,
    },
    #[error("no reply within {} s", REPLY_TIMEOUT.as_secs())]
    Timeout,
    #[error("bad reply: {0}")]
    Reply(#[from] SntpError),
    #[error("delay {0} ms is more than 4 s")]
    TooSlow(u128),
    #[error("no random cookie available")]
    Random,
    #[error("{0}")]
    Clock(#[from] super::ClockError),
}

fn io(what: &'static str) -> impl FnOnce(std::io::Error) -> SyncError {
    move |source| SyncError::Io { what, source }
}

/// One request/reply exchange with `server`.
pub async fn query(server: SocketAddr, keeper: &TimeKeeper) -> Result<sntp::Sample, SyncError> {
    let bind = SocketAddr::from((std::net::Ipv4Addr::UNSPECIFIED, 0));
    // `Async<UdpSocket>` over a plain address: smol::net's resolver
    // machinery would cost PID 1 several KiB for nothing.
    let sock = smol::Async::<std::net::UdpSocket>::bind(bind).map_err(io("bind"))?;
    // Connected: the kernel drops datagrams from anyone else.
    sock.get_ref().connect(server).map_err(io("connect"))?;
    let mut cookie = [0u8; 8];
    ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut cookie)
        .map_err(|_| SyncError::Random)?;
    let sent = keeper.now();
    let start = Instant::now();
    sock.send(&sntp::encode_request(cookie))
        .await
        .map_err(io("send"))?;
    let mut buf = [0u8; MAX_REPLY_LEN];
    let recv = async { Some(sock.recv(&mut buf).await) };
    let timeout = async {
        smol::Timer::after(REPLY_TIMEOUT).await;
        None
    };
    let n = smol::future::or(recv, timeout)
        .await
        .ok_or(SyncError::Timeout)?
        .map_err(io("receive"))?;
    let round_trip = start.elapsed();
    let reply = sntp::decode_reply(buf.get(..n).unwrap_or_default(), cookie)?;
    let sent_ns = i64::try_from(sent.as_nanos()).unwrap_or(i64::MAX);
    let sample = sntp::sample(sent_ns, round_trip, &reply);
    if sample.delay > MAX_DELAY {
        return Err(SyncError::TooSlow(sample.delay.as_millis()));
    }
    Ok(sample)
}

/// The next retry delay: double, capped.
fn next_backoff(current: Duration, cap: Duration) -> Duration {
    current.saturating_mul(2).min(cap).max(MIN_BACKOFF.min(cap))
}

/// Run forever (returns at once when no server is configured).
pub async fn run(keeper: Arc<TimeKeeper>, config: TimeConfig) {
    let servers = config.server_addrs();
    if servers.is_empty() {
        tracing::info!("time: no SNTP servers configured; the clock is restored only");
        return;
    }
    let interval = Duration::from_secs(config.interval_secs.into());
    let cap = Duration::from_secs(config.max_backoff_secs.into());
    // `synced` survives two missed re-syncs and the retries in between.
    let valid_for = interval.saturating_mul(2).saturating_add(cap);
    let mut backoff = MIN_BACKOFF.min(cap);
    let mut index = 0usize;
    loop {
        let Some(&server) = servers.get(index % servers.len()) else {
            return;
        };
        let wait = match query(server, &keeper).await {
            Ok(sample) => {
                let first = keeper.source() != super::Source::Sntp;
                match keeper.apply_sync(server, sample, STEP_THRESHOLD, valid_for) {
                    Ok(stepped) => {
                        let msg = format!(
                            "time: {server} offset {} ms, delay {} ms{}",
                            sample.offset_ns / 1_000_000,
                            sample.delay.as_millis(),
                            if stepped { ", clock stepped" } else { "" }
                        );
                        if stepped || first {
                            tracing::info!("{msg}");
                            // A good time is worth keeping at once.
                            super::save_off_thread(&keeper);
                        } else {
                            tracing::debug!("{msg}");
                        }
                        backoff = MIN_BACKOFF.min(cap);
                        interval
                    }
                    Err(e) => {
                        tracing::error!("time: {server}: {e}");
                        interval
                    }
                }
            }
            Err(e) => {
                tracing::warn!("time: {server}: {e}; next try in {} s", backoff.as_secs());
                index = index.wrapping_add(1);
                let wait = backoff;
                backoff = next_backoff(backoff, cap);
                wait
            }
        };
        smol::Timer::after(wait).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_up_to_the_cap() {
        let cap = Duration::from_secs(30);
        let mut b = MIN_BACKOFF;
        let mut seen = vec![];
        for _ in 0..6 {
            seen.push(b.as_secs());
            b = next_backoff(b, cap);
        }
        assert_eq!(seen, vec![2, 4, 8, 16, 30, 30]);
        assert_eq!(
            next_backoff(Duration::from_secs(1), Duration::from_secs(1)).as_secs(),
            1
        );
    }

    /// A responder on 127.0.0.1 that answers `reply(request)`.
    fn responder(reply: impl Fn(&[u8]) -> Vec<u8> + Send + 'static) -> SocketAddr {
        let sock = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let addr = sock.local_addr().unwrap();
        std::thread::spawn(move || {
            let mut buf = [0u8; 256];
            while let Ok((n, from)) = sock.recv_from(&mut buf) {
                let _ = sock.send_to(&reply(&buf[..n]), from);
            }
        });
        addr
    }

    fn keeper() -> TimeKeeper {
        TimeKeeper::boot(
            Arc::new(super::super::FakeClock::at(Duration::from_secs(1_000))),
            None,
            Duration::ZERO,
        )
    }

    #[test]
    fn query_against_a_loopback_server() {
        let ahead_ns = 2_000_000_000_000_000_000i64;
        let addr = responder(move |req| {
            let mut p = [0u8; 48];
            p[0] = 0x24;
            p[1] = 1;
            p[24..32].copy_from_slice(&req[40..48]);
            p[32..40].copy_from_slice(&sntp::unix_ns_to_ntp(ahead_ns));
            p[40..48].copy_from_slice(&sntp::unix_ns_to_ntp(ahead_ns));
            p.to_vec()
        });
        let k = keeper();
        let s = smol::block_on(query(addr, &k)).unwrap();
        let expect = ahead_ns - 1_000_000_000_000;
        assert!((s.offset_ns - expect).abs() < 1_000_000_000, "{s:?}");

        let garbage = responder(|_| vec![0x24; 30]);
        match smol::block_on(query(garbage, &k)) {
            Err(SyncError::Reply(SntpError::Short(30))) => {}
            other => panic!("{other:?}"),
        }
    }
}
