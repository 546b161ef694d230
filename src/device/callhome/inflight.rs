//! Answers the broker has not acknowledged yet. MQTT QoS 1 is "at least
//! once" only if the sender keeps a publish until its PUBACK and sends it
//! again (DUP set) after a reconnect: an answer written just before the link
//! dropped would otherwise be lost, and the operator's command, which already
//! ran, could not be asked again (the replay guard refuses the copy).
//!
//! Bounded, because the link may stay down for days while commands queued at
//! the broker keep arriving on each short reconnect: past the caps the oldest
//! answer goes, with a warning naming its command.

use std::collections::VecDeque;

use crate::mqtt::{self, MqttError, Packet, Publish, QoS};

/// Answers kept. The broker's in-flight window for one client is about this
/// size too (mosquitto's `max_inflight_messages` default is 20).
pub(super) const MAX_MESSAGES: usize = 16;
/// Bytes kept: four answers of the largest frame (64 KiB) with their
/// envelopes; answers are usually a few hundred bytes.
pub(super) const MAX_BYTES: usize = 4 * 68 * 1024;

struct Pending {
    pid: u16,
    topic: String,
    payload: Vec<u8>,
    /// The command this answers (or refuses).
    seq: u64,
}

#[derive(Default)]
pub(super) struct Inflight {
    pending: VecDeque<Pending>,
    bytes: usize,
}

impl Inflight {
    /// Keep a publish until its PUBACK. Returns the sequence numbers of the
    /// commands whose answers had to go to make room.
    pub(super) fn keep(&mut self, pid: u16, topic: &str, payload: &[u8], seq: u64) -> Vec<u64> {
        self.pending.retain(|p| p.pid != pid);
        self.pending.push_back(Pending {
            pid,
            topic: topic.to_owned(),
            payload: payload.to_vec(),
            seq,
        });
        self.bytes = self.pending.iter().map(|p| p.payload.len()).sum();
        let mut dropped = Vec::new();
        while self.pending.len() > MAX_MESSAGES
            || (self.bytes > MAX_BYTES && self.pending.len() > 1)
        {
            if let Some(old) = self.pending.pop_front() {
                self.bytes -= old.payload.len();
                dropped.push(old.seq);
            }
        }
        dropped
    }

    /// The broker has it.
    pub(super) fn acked(&mut self, pid: u16) {
        if let Some(i) = self.pending.iter().position(|p| p.pid == pid) {
            if let Some(p) = self.pending.remove(i) {
                self.bytes -= p.payload.len();
            }
        }
    }

    /// An answer to command `seq` is still on its way.
    pub(super) fn answers(&self, seq: u64) -> bool {
        self.pending.iter().any(|p| p.seq == seq)
    }

    /// Whether a packet id is taken by a kept publish.
    pub(super) fn holds(&self, pid: u16) -> bool {
        self.pending.iter().any(|p| p.pid == pid)
    }

    pub(super) fn len(&self) -> usize {
        self.pending.len()
    }

    pub(super) fn is_empty(&self) -> bool {
        self.pending.is_empty()
    }

    /// Encode every kept publish again, oldest first, with DUP set.
    pub(super) fn resend(&self, out: &mut Vec<u8>) -> Result<(), MqttError> {
        for p in &self.pending {
            mqtt::encode(
                &Packet::Publish(Publish {
                    topic: &p.topic,
                    qos: QoS::AtLeastOnce,
                    pid: p.pid,
                    retain: false,
                    dup: true,
                    payload: &p.payload,
                }),
                out,
            )?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn decoded(bytes: &[u8]) -> Vec<(u16, bool, Vec<u8>)> {
        let mut at = 0;
        let mut out = Vec::new();
        while let Some((packet, len)) = mqtt::decode(&bytes[at..], 1 << 20).unwrap() {
            at += len;
            match packet {
                Packet::Publish(p) => out.push((p.pid, p.dup, p.payload.to_vec())),
                other => panic!("{other:?}"),
            }
        }
        out
    }

    #[test]
    fn kept_until_acked_and_resent_with_dup_in_order() {
        let mut f = Inflight::default();
        assert!(f.keep(1, "outpost/d/resp", b"a", 10).is_empty());
        assert!(f.keep(2, "outpost/d/events", b"b", 11).is_empty());
        assert!(f.keep(3, "outpost/d/resp", b"c", 12).is_empty());
        f.acked(2);
        f.acked(9); // unknown: ignored
        assert!(f.answers(10) && !f.answers(11) && f.answers(12));
        assert!(f.holds(3) && !f.holds(2));
        let mut out = Vec::new();
        f.resend(&mut out).unwrap();
        assert_eq!(
            decoded(&out),
            vec![(1, true, b"a".to_vec()), (3, true, b"c".to_vec())]
        );
        f.acked(1);
        f.acked(3);
        assert_eq!(f.len(), 0);
        out.clear();
        f.resend(&mut out).unwrap();
        assert!(out.is_empty());
    }

    #[test]
    fn the_oldest_go_past_the_caps() {
        let mut f = Inflight::default();
        for i in 0..MAX_MESSAGES as u16 {
            assert!(f.keep(i + 1, "t", b"x", u64::from(i)).is_empty());
        }
        assert_eq!(f.keep(100, "t", b"x", 99), vec![0]);
        assert_eq!(f.len(), MAX_MESSAGES);

        let mut f = Inflight::default();
        let big = vec![0u8; MAX_BYTES / 2];
        assert!(f.keep(1, "t", &big, 1).is_empty());
        assert!(f.keep(2, "t", &big, 2).is_empty());
        assert_eq!(f.keep(3, "t", b"small", 3), vec![1]);
        // One message larger than the byte cap is still kept: the cap
        // bounds what piles up, not a single answer (already capped).
        let mut f = Inflight::default();
        assert!(f.keep(1, "t", &vec![0u8; MAX_BYTES + 1], 1).is_empty());
        assert_eq!(f.len(), 1);
    }

    #[test]
    fn a_reused_packet_id_replaces_the_old_entry() {
        let mut f = Inflight::default();
        f.keep(5, "t", b"old", 1);
        f.keep(5, "t", b"new", 2);
        assert_eq!(f.len(), 1);
        assert!(f.answers(2) && !f.answers(1));
    }
}
