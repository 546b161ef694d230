//! `logs --follow` through the broker. On the direct API a stream lives as
//! long as its connection; through a broker there is no connection to the
//! operator, so a follow lives on a lease instead: every command from the
//! same operator certificate (the CLI pings every minute while following)
//! renews it, and one that hears nothing for `LEASE` ends with `End`. A
//! `Cancel { id }` from that operator ends it at once.
//!
//! Lines are read from the log ring by position, so lines logged while the
//! link was down go out after the reconnect (as far as the ring kept them).

use std::time::{Duration, Instant};

use super::replay::KeyId;
use crate::device::api::server::FOLLOW_BATCH;
use crate::device::log::LogRing;
use crate::wire::LogLine;

/// Follows one board serves at once (the direct API allows as many per
/// connection).
pub(super) const MAX_FOLLOWS: usize = 4;
/// Three missed CLI pings (one a minute) end a follow: the operator is gone.
pub(super) const LEASE: Duration = Duration::from_secs(180);
/// New lines are gathered this long into one publish (~100 bytes of MQTT,
/// TLS and signature per publish on a metered link).
pub(super) const TICK: Duration = Duration::from_secs(1);

struct Follow {
    /// The command that started it: its answers carry this seq.
    seq: u64,
    /// Its request id, for `Cancel { id }`.
    id: u32,
    operator: KeyId,
    ring: LogRing,
    /// Ring position of the next line to send.
    next: u64,
    until: Instant,
}

/// What one tick has to say for one follow.
pub(super) enum Step {
    Lines {
        seq: u64,
        id: u32,
        lines: Vec<LogLine>,
    },
    Ended {
        seq: u64,
        id: u32,
    },
}

#[derive(Default)]
pub(super) struct Follows {
    list: Vec<Follow>,
}

impl Follows {
    pub(super) fn is_empty(&self) -> bool {
        self.list.is_empty()
    }

    /// Room for one more?
    pub(super) fn full(&self) -> bool {
        self.list.len() >= MAX_FOLLOWS
    }

    /// Follow `ring` from position `next` (taken before the tail was read,
    /// so no line falls between the tail and the stream).
    pub(super) fn start(
        &mut self,
        seq: u64,
        id: u32,
        operator: KeyId,
        ring: LogRing,
        next: u64,
        now: Instant,
    ) {
        self.list.push(Follow {
            seq,
            id,
            operator,
            ring,
            next,
            until: now + LEASE,
        });
    }

    /// A command from `operator` arrived: its follows live on.
    pub(super) fn renew(&mut self, operator: &KeyId, now: Instant) {
        for f in self.list.iter_mut().filter(|f| &f.operator == operator) {
            f.until = now + LEASE;
        }
    }

    /// `Cancel { id }` from `operator`: the seq of the follow it ends.
    pub(super) fn cancel(&mut self, operator: &KeyId, id: u32) -> Option<u64> {
        let i = self
            .list
            .iter()
            .position(|f| &f.operator == operator && f.id == id)?;
        Some(self.list.remove(i).seq)
    }

    /// New lines of every follow, and the follows whose lease ran out.
    pub(super) fn tick(&mut self, now: Instant) -> Vec<Step> {
        let mut steps = Vec::new();
        self.list.retain_mut(|f| {
            let (lines, next) = f.ring.since(f.next, FOLLOW_BATCH);
            f.next = next;
            if !lines.is_empty() {
                steps.push(Step::Lines {
                    seq: f.seq,
                    id: f.id,
                    lines,
                });
            }
            if now >= f.until {
                steps.push(Step::Ended {
                    seq: f.seq,
                    id: f.id,
                });
                return false;
            }
            true
        });
        steps
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::LogLevel;

    fn line(text: &str) -> LogLine {
        LogLine {
            at_ms: 1,
            level: LogLevel::Info,
            text: text.into(),
        }
    }

    fn texts(step: &Step) -> Vec<String> {
        match step {
            Step::Lines { lines, .. } => lines.iter().map(|l| l.text.clone()).collect(),
            Step::Ended { .. } => vec!["<end>".into()],
        }
    }

    #[test]
    fn new_lines_flow_until_the_lease_ends_unless_renewed() {
        let ring = LogRing::new();
        ring.push(line("old"));
        let (_, next) = ring.tail_with_seq(0);
        let t0 = Instant::now();
        let mut f = Follows::default();
        f.start(7, 3, [1; 16], ring.clone(), next, t0);
        assert!(f.tick(t0).is_empty(), "nothing new yet");
        ring.push(line("a"));
        ring.push(line("b"));
        let steps = f.tick(t0);
        assert_eq!(steps.len(), 1);
        assert_eq!(texts(&steps[0]), ["a", "b"]);
        assert!(matches!(steps[0], Step::Lines { seq: 7, id: 3, .. }));

        // Another operator's commands do not keep it alive; its own do.
        f.renew(&[2; 16], t0 + LEASE / 2);
        f.renew(&[1; 16], t0 + LEASE / 2);
        assert!(f.tick(t0 + LEASE).is_empty());
        ring.push(line("c"));
        let steps = f.tick(t0 + LEASE / 2 + LEASE);
        assert_eq!(
            steps.iter().map(texts).collect::<Vec<_>>(),
            [vec!["c"], vec!["<end>"]]
        );
        assert!(f.is_empty());
    }

    #[test]
    fn cancel_needs_the_same_operator_and_id() {
        let ring = LogRing::new();
        let now = Instant::now();
        let mut f = Follows::default();
        for i in 0..MAX_FOLLOWS as u32 {
            f.start(u64::from(i) + 10, i, [1; 16], ring.clone(), 0, now);
        }
        assert!(f.full());
        assert_eq!(f.cancel(&[2; 16], 1), None);
        assert_eq!(f.cancel(&[1; 16], 9), None);
        assert_eq!(f.cancel(&[1; 16], 1), Some(11));
        assert!(!f.full());
    }
}
