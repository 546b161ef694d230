//! `logs --follow` through the broker. On the direct API a stream lives as
//! long as its connection; through a broker there is no connection to the
//! operator, so a follow lives on a lease instead: every command from the
//! same operator certificate (the CLI pings every minute while following)
//! renews it, and one that hears nothing for `LEASE` ends with `End`. A
//! `Cancel { id }` from that operator ends it at once.
//!
//! Lines are read from the log ring by position, so lines logged while the
//! link was down go out after the reconnect (as far as the ring kept them).
//! A sealed command's follow seals each message with the command's stream
//! key under its own number (the nonce), from 1, `End` included.

use std::time::{Duration, Instant};

use super::replay::KeyId;
use crate::device::api::server::FOLLOW_BATCH;
use crate::device::log::LogRing;
use crate::wire::seal::StreamKey;
use crate::wire::Response;

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
    /// A sealed follow's stream key, and the number of the last message
    /// sealed with it (each number once: it is the nonce).
    sealed: Option<(StreamKey, u32)>,
}

/// One message a follow has to say.
pub(super) struct Emit<'a> {
    /// Of the command that started the follow.
    pub seq: u64,
    pub id: u32,
    /// `Logs` or `End`.
    pub body: Response,
    /// Sealed follows: the key and this message's number.
    pub seal: Option<(&'a StreamKey, u32)>,
}

impl Follow {
    fn emit(&mut self, body: Response, say: &mut impl FnMut(Emit<'_>)) {
        let seal = self.sealed.as_mut().map(|(key, n)| {
            *n += 1;
            (&*key, *n)
        });
        say(Emit {
            seq: self.seq,
            id: self.id,
            body,
            seal,
        });
    }
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
    /// so no line falls between the tail and the stream); a sealed command's
    /// follow seals with its `stream` key.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn start(
        &mut self,
        seq: u64,
        id: u32,
        operator: KeyId,
        ring: LogRing,
        next: u64,
        stream: Option<StreamKey>,
        now: Instant,
    ) {
        self.list.push(Follow {
            seq,
            id,
            operator,
            ring,
            next,
            until: now + LEASE,
            sealed: stream.map(|k| (k, 0)),
        });
    }

    /// A command from `operator` arrived: its follows live on.
    pub(super) fn renew(&mut self, operator: &KeyId, now: Instant) {
        for f in self.list.iter_mut().filter(|f| &f.operator == operator) {
            f.until = now + LEASE;
        }
    }

    /// `Cancel { id }` from `operator`: that follow says `End` and goes.
    /// False if `operator` has no follow `id`.
    pub(super) fn cancel(
        &mut self,
        operator: &KeyId,
        id: u32,
        mut say: impl FnMut(Emit<'_>),
    ) -> bool {
        let Some(i) = self
            .list
            .iter()
            .position(|f| &f.operator == operator && f.id == id)
        else {
            return false;
        };
        let mut f = self.list.remove(i);
        f.emit(Response::End, &mut say);
        true
    }

    /// New lines of every follow, and `End` for those whose lease ran out.
    pub(super) fn tick(&mut self, now: Instant, mut say: impl FnMut(Emit<'_>)) {
        self.list.retain_mut(|f| {
            let (lines, next) = f.ring.since(f.next, FOLLOW_BATCH);
            f.next = next;
            if !lines.is_empty() {
                f.emit(Response::Logs(lines), &mut say);
            }
            if now >= f.until {
                tracing::info!(
                    "callhome: log follow seq {} ended: its operator went quiet",
                    f.seq
                );
                f.emit(Response::End, &mut say);
                return false;
            }
            true
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::seal::SealKeys;
    use crate::wire::{LogLevel, LogLine};

    fn line(text: &str) -> LogLine {
        LogLine {
            at_ms: 1,
            level: LogLevel::Info,
            text: text.into(),
        }
    }

    /// (seq, id, texts or "<end>", message number if sealed)
    type Said = (u64, u32, Vec<String>, Option<u32>);

    fn record(out: &mut Vec<Said>) -> impl FnMut(Emit<'_>) + '_ {
        |e: Emit<'_>| {
            let texts = match e.body {
                Response::Logs(lines) => lines.into_iter().map(|l| l.text).collect(),
                _ => vec!["<end>".into()],
            };
            out.push((e.seq, e.id, texts, e.seal.map(|(_, n)| n)));
        }
    }

    #[test]
    fn new_lines_flow_until_the_lease_ends_unless_renewed() {
        let ring = LogRing::new();
        ring.push(line("old"));
        let (_, next) = ring.tail_with_seq(0);
        let t0 = Instant::now();
        let mut f = Follows::default();
        f.start(7, 3, [1; 16], ring.clone(), next, None, t0);
        let mut said = Vec::new();
        f.tick(t0, record(&mut said));
        assert!(said.is_empty(), "nothing new yet");
        ring.push(line("a"));
        ring.push(line("b"));
        f.tick(t0, record(&mut said));
        assert_eq!(said, [(7, 3, vec!["a".into(), "b".into()], None)]);

        // Another operator's commands do not keep it alive; its own do.
        f.renew(&[2; 16], t0 + LEASE / 2);
        f.renew(&[1; 16], t0 + LEASE / 2);
        said.clear();
        f.tick(t0 + LEASE, record(&mut said));
        assert!(said.is_empty());
        ring.push(line("c"));
        f.tick(t0 + LEASE / 2 + LEASE, record(&mut said));
        let texts: Vec<_> = said.iter().map(|s| s.2.clone()).collect();
        assert_eq!(texts, [vec!["c"], vec!["<end>"]]);
        assert!(f.is_empty());
    }

    #[test]
    fn a_sealed_follow_numbers_its_messages_from_one_end_included() {
        let keys = SealKeys::derive(&[9; 32], &[1; 32], &[2; 32]).unwrap();
        let ring = LogRing::new();
        let now = Instant::now();
        let mut f = Follows::default();
        f.start(7, 3, [1; 16], ring.clone(), 0, Some(keys.stream), now);
        let mut said = Vec::new();
        ring.push(line("a"));
        f.tick(now, record(&mut said));
        ring.push(line("b"));
        f.tick(now, record(&mut said));
        assert!(f.cancel(&[1; 16], 3, record(&mut said)));
        let numbers: Vec<_> = said.iter().map(|s| s.3).collect();
        assert_eq!(numbers, [Some(1), Some(2), Some(3)]);
        assert_eq!(said[2].2, ["<end>"]);
    }

    #[test]
    fn cancel_needs_the_same_operator_and_id() {
        let ring = LogRing::new();
        let now = Instant::now();
        let mut f = Follows::default();
        for i in 0..MAX_FOLLOWS as u32 {
            f.start(u64::from(i) + 10, i, [1; 16], ring.clone(), 0, None, now);
        }
        assert!(f.full());
        let mut said = Vec::new();
        assert!(!f.cancel(&[2; 16], 1, record(&mut said)));
        assert!(!f.cancel(&[1; 16], 9, record(&mut said)));
        assert!(f.cancel(&[1; 16], 1, record(&mut said)));
        assert_eq!(said, [(11, 1, vec!["<end>".to_owned()], None)]);
        assert!(!f.full());
    }
}
