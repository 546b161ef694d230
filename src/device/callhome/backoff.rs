//! When to reconnect and how often to ping: no I/O, randomness passed in.

use std::time::Duration;

/// First retry after a failed connect or a drop.
const MIN_BACKOFF: Duration = Duration::from_secs(1);
/// Longest wait between attempts: a board back on the network is reachable
/// again within this, and a broker outage of a fleet does not become a
/// thundering herd (jitter spreads the boards over half of it).
const MAX_BACKOFF: Duration = Duration::from_secs(300);
/// Floor of the adapted keepalive: below it pings cost more than the NAT
/// timeouts they dodge (no carrier drops a flow within 30 s).
pub(super) const MIN_ADAPTED_KEEPALIVE: u16 = 30;
/// After this long without an unexplained drop, the keepalive creeps back up
/// towards the configured value.
const STABLE_FOR: Duration = Duration::from_secs(6 * 3600);

/// Exponential back-off with jitter: attempt n waits a random time in
/// [b/2, b], b = min(MIN * 2^n, MAX).
#[derive(Debug, Default)]
pub struct Backoff {
    attempt: u32,
}

impl Backoff {
    pub fn next(&mut self, random: u32) -> Duration {
        let base = MIN_BACKOFF
            .saturating_mul(1u32 << self.attempt.min(16))
            .min(MAX_BACKOFF);
        self.attempt = self.attempt.saturating_add(1);
        let half = base / 2;
        let spread = u64::try_from(half.as_millis()).unwrap_or(u64::MAX).max(1);
        half + Duration::from_millis(u64::from(random) % (spread + 1))
    }

    /// A session came up: the next drop starts from the shortest wait.
    pub fn reset(&mut self) {
        self.attempt = 0;
    }
}

/// The MQTT keepalive in force: the configured one until the link drops
/// without an explanation (a ping unanswered, a reset), then a quarter lower
/// each time, down to [`MIN_ADAPTED_KEEPALIVE`]; an eighth back up per
/// [`STABLE_FOR`] of sessions that ended cleanly or still run.
#[derive(Debug)]
pub struct Keepalive {
    configured: u16,
    current: u16,
    stable: Duration,
}

impl Keepalive {
    pub fn new(configured: u16) -> Self {
        Self {
            configured,
            current: configured,
            stable: Duration::ZERO,
        }
    }

    pub fn secs(&self) -> u16 {
        self.current
    }

    /// The session ended after `lived`; `unexplained`: nobody closed it.
    pub fn on_drop(&mut self, lived: Duration, unexplained: bool) {
        if unexplained {
            let lower = self.current - self.current / 4;
            self.current = lower.max(MIN_ADAPTED_KEEPALIVE.min(self.configured));
            self.stable = Duration::ZERO;
            return;
        }
        self.on_stable(lived);
    }

    /// Time spent connected without trouble.
    pub fn on_stable(&mut self, lived: Duration) {
        self.stable = self.stable.saturating_add(lived);
        while self.stable >= STABLE_FOR && self.current < self.configured {
            self.stable -= STABLE_FOR;
            let up = (self.current / 8).max(1);
            self.current = self.current.saturating_add(up).min(self.configured);
        }
        if self.current == self.configured {
            self.stable = Duration::ZERO;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_with_jitter_and_caps() {
        let mut b = Backoff::default();
        let first = b.next(0);
        assert_eq!(first, Duration::from_millis(500));
        assert!(b.next(u32::MAX) <= Duration::from_secs(2));
        for _ in 0..40 {
            let d = b.next(12345);
            assert!(d >= MAX_BACKOFF / 2 || d >= Duration::from_secs(2), "{d:?}");
            assert!(d <= MAX_BACKOFF, "{d:?}");
        }
        // Different random inputs spread the boards out.
        let (mut x, mut y) = (Backoff::default(), Backoff::default());
        for _ in 0..5 {
            x.next(1);
            y.next(1);
        }
        assert_ne!(x.next(1), y.next(90_000));
        b.reset();
        assert!(b.next(7) <= Duration::from_secs(1));
    }

    #[test]
    fn keepalive_adapts_down_on_unexplained_drops_and_recovers() {
        let mut k = Keepalive::new(200);
        k.on_drop(Duration::from_secs(5), false);
        assert_eq!(k.secs(), 200, "a clean close changes nothing");
        k.on_drop(Duration::from_secs(900), true);
        assert_eq!(k.secs(), 150);
        k.on_drop(Duration::from_secs(900), true);
        assert_eq!(k.secs(), 113);
        for _ in 0..20 {
            k.on_drop(Duration::from_secs(60), true);
        }
        assert_eq!(k.secs(), MIN_ADAPTED_KEEPALIVE);
        k.on_stable(STABLE_FOR);
        assert_eq!(k.secs(), 33);
        k.on_stable(STABLE_FOR * 100);
        assert_eq!(k.secs(), 200);
        // A configured keepalive below the floor is kept as it is.
        let mut low = Keepalive::new(15);
        low.on_drop(Duration::ZERO, true);
        assert_eq!(low.secs(), 15);
    }
}
