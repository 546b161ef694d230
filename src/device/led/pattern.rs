//! What the status LED shows, as a pure function of time: no I/O, no clock
//! (the caller passes milliseconds), so every pattern is tested exactly.

/// One LED pattern. Priority, highest first: identify, upgrading, booting,
/// fallback, healthy (see [`Indicator::pattern`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LedPattern {
    /// From init's start until the slot is committed: fast blink.
    Booting,
    /// Committed: steady on.
    Healthy,
    /// A bundle is being written into the other slot: double blink.
    Upgrading,
    /// Committed, but this boot fell back from the primary slot: SOS.
    Fallback,
    /// `outpost identify`: triple flash, for a while.
    Identify,
}

/// Alternating on/off durations in ms, starting with on; the cycle repeats.
/// Empty: steady on.
const BOOTING: &[u16] = &[100, 100];
const UPGRADING: &[u16] = &[100, 150, 100, 650];
/// ··· ‒‒‒ ··· and a pause.
const FALLBACK: &[u16] = &[
    150, 150, 150, 150, 150, 450, 450, 150, 450, 150, 450, 450, 150, 150, 150, 150, 150, 1050,
];
const IDENTIFY: &[u16] = &[50, 50, 50, 50, 50, 750];

/// The longest the driver sleeps without looking again (an install that
/// started, an identify that ended).
pub const MAX_POLL_MS: u64 = 250;

impl LedPattern {
    pub fn name(self) -> &'static str {
        match self {
            LedPattern::Booting => "booting",
            LedPattern::Healthy => "healthy",
            LedPattern::Upgrading => "upgrading",
            LedPattern::Fallback => "fallback",
            LedPattern::Identify => "identify",
        }
    }

    fn timings(self) -> &'static [u16] {
        match self {
            LedPattern::Booting => BOOTING,
            LedPattern::Healthy => &[],
            LedPattern::Upgrading => UPGRADING,
            LedPattern::Fallback => FALLBACK,
            LedPattern::Identify => IDENTIFY,
        }
    }

    /// The level `elapsed_ms` into the pattern, and how long it stays so.
    pub fn level_at(self, elapsed_ms: u64) -> (bool, u64) {
        let t = self.timings();
        let cycle: u64 = t.iter().map(|&d| u64::from(d)).sum();
        if cycle == 0 {
            return (true, u64::MAX);
        }
        let mut at = elapsed_ms % cycle;
        for (i, &d) in t.iter().enumerate() {
            let d = u64::from(d);
            if at < d {
                return (i % 2 == 0, d - at);
            }
            at -= d;
        }
        (false, 1)
    }
}

/// What the driver does next: the level to show and how long to wait.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Step {
    pub on: bool,
    pub wait_ms: u64,
    /// Set when the pattern changed at this step.
    pub changed: Option<LedPattern>,
}

/// The board's state as far as the LED is concerned.
#[derive(Debug, Clone)]
pub struct Indicator {
    committed: bool,
    fallback: bool,
    installing: bool,
    identify_until_ms: Option<u64>,
    current: Option<LedPattern>,
    since_ms: u64,
}

impl Default for Indicator {
    fn default() -> Self {
        Self::new()
    }
}

impl Indicator {
    pub fn new() -> Self {
        Self {
            committed: false,
            fallback: false,
            installing: false,
            identify_until_ms: None,
            current: None,
            since_ms: 0,
        }
    }

    /// The slot is committed (healthy); `fallback`: this boot fell back.
    pub fn committed(&mut self, fallback: bool) {
        self.committed = true;
        self.fallback = fallback;
    }

    pub fn set_installing(&mut self, installing: bool) {
        self.installing = installing;
    }

    /// Show the identify pattern for `secs` from `now_ms`; 0 ends it.
    pub fn identify(&mut self, now_ms: u64, secs: u16) {
        self.identify_until_ms = (secs > 0).then(|| now_ms.saturating_add(u64::from(secs) * 1000));
    }

    /// The pattern in force at `now_ms`.
    pub fn pattern(&self, now_ms: u64) -> LedPattern {
        if self.identify_until_ms.is_some_and(|until| now_ms < until) {
            LedPattern::Identify
        } else if self.installing {
            LedPattern::Upgrading
        } else if !self.committed {
            LedPattern::Booting
        } else if self.fallback {
            LedPattern::Fallback
        } else {
            LedPattern::Healthy
        }
    }

    /// The level at `now_ms` and how long until the next look. A new
    /// pattern starts at its beginning (on).
    pub fn step(&mut self, now_ms: u64) -> Step {
        let pattern = self.pattern(now_ms);
        let changed = (self.current != Some(pattern)).then_some(pattern);
        if changed.is_some() {
            self.current = Some(pattern);
            self.since_ms = now_ms;
        }
        let (on, mut wait_ms) = pattern.level_at(now_ms.saturating_sub(self.since_ms));
        if let Some(until) = self.identify_until_ms.filter(|u| *u > now_ms) {
            wait_ms = wait_ms.min(until - now_ms);
        }
        Step {
            on,
            wait_ms: wait_ms.clamp(1, MAX_POLL_MS),
            changed,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The levels of `pattern` sampled every 50 ms for `ms`.
    fn trace(pattern: LedPattern, ms: u64) -> String {
        (0..ms / 50)
            .map(|i| if pattern.level_at(i * 50).0 { '#' } else { '.' })
            .collect()
    }

    #[test]
    fn patterns_look_as_documented() {
        assert_eq!(trace(LedPattern::Booting, 800), "##..##..##..##..");
        assert_eq!(trace(LedPattern::Healthy, 400), "########");
        assert_eq!(
            trace(LedPattern::Upgrading, 2000),
            "##...##.............##...##............."
        );
        assert_eq!(
            trace(LedPattern::Identify, 2000),
            "#.#.#...............#.#.#..............."
        );
        let sos = trace(LedPattern::Fallback, 6000);
        assert!(sos.starts_with("###...###...###.........#########...#########...#########.........###...###...###....................."), "{sos}");
        // Every pattern is distinct over a few seconds.
        let all = [
            LedPattern::Booting,
            LedPattern::Healthy,
            LedPattern::Upgrading,
            LedPattern::Fallback,
            LedPattern::Identify,
        ];
        for a in all {
            for b in all {
                assert_eq!(a == b, trace(a, 6000) == trace(b, 6000), "{a:?} {b:?}");
            }
        }
    }

    #[test]
    fn level_at_reports_time_to_the_next_edge() {
        assert_eq!(LedPattern::Booting.level_at(0), (true, 100));
        assert_eq!(LedPattern::Booting.level_at(130), (false, 70));
        assert_eq!(LedPattern::Booting.level_at(200), (true, 100));
        assert_eq!(LedPattern::Healthy.level_at(12345), (true, u64::MAX));
    }

    #[test]
    fn states_follow_the_boot() {
        let mut ind = Indicator::new();
        let s = ind.step(1_000);
        assert_eq!(s.changed, Some(LedPattern::Booting));
        assert!(s.on);
        assert_eq!(ind.step(1_150).changed, None);
        ind.committed(false);
        let s = ind.step(2_000);
        assert_eq!(s.changed, Some(LedPattern::Healthy));
        assert!(s.on);
        assert_eq!(s.wait_ms, MAX_POLL_MS);
        ind.set_installing(true);
        assert_eq!(ind.step(3_000).changed, Some(LedPattern::Upgrading));
        ind.set_installing(false);
        assert_eq!(ind.step(4_000).changed, Some(LedPattern::Healthy));

        let mut fell_back = Indicator::new();
        fell_back.committed(true);
        assert_eq!(fell_back.pattern(0), LedPattern::Fallback);
        fell_back.set_installing(true);
        assert_eq!(fell_back.pattern(0), LedPattern::Upgrading);
    }

    #[test]
    fn identify_wins_for_its_seconds_then_the_state_returns() {
        let mut ind = Indicator::new();
        ind.committed(false);
        ind.step(0);
        ind.identify(10_000, 3);
        let s = ind.step(10_000);
        assert_eq!(s.changed, Some(LedPattern::Identify));
        assert!(s.on);
        assert_eq!(s.wait_ms, 50);
        // Waits never run past the end of identify.
        let near_end = ind.step(12_990);
        assert!(near_end.wait_ms <= 10, "{near_end:?}");
        assert_eq!(ind.step(12_999).changed, None);
        assert_eq!(ind.step(13_000).changed, Some(LedPattern::Healthy));
        // Even over an upgrade; 0 seconds ends it at once.
        ind.set_installing(true);
        ind.identify(20_000, 60);
        assert_eq!(ind.pattern(20_001), LedPattern::Identify);
        ind.identify(20_002, 0);
        assert_eq!(ind.pattern(20_003), LedPattern::Upgrading);
        // An identify at the end of time does not overflow.
        ind.identify(u64::MAX - 5, u16::MAX);
        assert_eq!(ind.pattern(u64::MAX - 1), LedPattern::Identify);
    }
}
