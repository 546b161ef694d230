//! Packets: `encode` appends one to a `Vec`, `decode` reads one from the
//! front of a buffer (or says it needs more bytes). Only what a client
//! receives is decoded (CONNACK, PUBLISH, PUBACK, SUBACK, PINGREQ/RESP,
//! DISCONNECT); CONNECT and SUBSCRIBE are encode-only.

use super::reader::Reader;
use super::{MAX_REMAINING, MAX_SUBSCRIBE_TOPICS, MAX_TOPIC};

#[derive(Debug, thiserror::Error, PartialEq, Eq, Clone)]
pub enum MqttError {
    #[error("MQTT packet of {len} bytes exceeds the limit of {max}")]
    TooLong { len: usize, max: usize },
    #[error("malformed MQTT packet: {0}")]
    Malformed(&'static str),
    #[error("MQTT packet type {0} is not handled here")]
    Unexpected(u8),
    #[error("MQTT QoS 2 is not supported")]
    QoS2,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum QoS {
    AtMostOnce = 0,
    AtLeastOnce = 1,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Will<'a> {
    pub topic: &'a str,
    pub payload: &'a [u8],
    pub qos: QoS,
    pub retain: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Connect<'a> {
    pub client_id: &'a str,
    /// Seconds; 0 turns keepalive off (we never do).
    pub keepalive: u16,
    /// false: the broker keeps our subscriptions and queues QoS 1 messages
    /// while we are away.
    pub clean_session: bool,
    pub will: Option<Will<'a>>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Publish<'a> {
    pub topic: &'a str,
    pub qos: QoS,
    /// Packet id (QoS 1 only; 0 with QoS 0).
    pub pid: u16,
    pub retain: bool,
    pub dup: bool,
    pub payload: &'a [u8],
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Packet<'a> {
    Connect(Connect<'a>),
    Connack {
        session_present: bool,
        code: u8,
    },
    Publish(Publish<'a>),
    Puback {
        pid: u16,
    },
    Subscribe {
        pid: u16,
        topics: &'a [(&'a str, QoS)],
    },
    /// Return codes per filter: 0/1 = granted QoS, 0x80 = refused.
    Suback {
        pid: u16,
        codes: &'a [u8],
    },
    Pingreq,
    Pingresp,
    Disconnect,
}

const CONNECT: u8 = 1;
const CONNACK: u8 = 2;
const PUBLISH: u8 = 3;
const PUBACK: u8 = 4;
const SUBSCRIBE: u8 = 8;
const SUBACK: u8 = 9;
const PINGREQ: u8 = 12;
const PINGRESP: u8 = 13;
const DISCONNECT: u8 = 14;

/// Read one packet from the front of `buf`. `Ok(None)`: not all of it is
/// here yet. A packet whose remaining length exceeds `max` is refused as soon
/// as its header is read, before any of it is buffered.
pub fn decode(buf: &[u8], max: usize) -> Result<Option<(Packet<'_>, usize)>, MqttError> {
    let Some((&first, after)) = buf.split_first() else {
        return Ok(None);
    };
    // Remaining length: 1 to 4 bytes, 7 bits each (MQTT 2.2.3).
    let mut len = 0usize;
    let mut header = 1usize;
    let mut complete = false;
    for (i, &b) in after.iter().take(4).enumerate() {
        len |= usize::from(b & 0x7f) << (7 * i);
        header += 1;
        if b & 0x80 == 0 {
            complete = true;
            break;
        }
    }
    if !complete {
        return if after.len() >= 4 {
            Err(MqttError::Malformed("remaining length longer than 4 bytes"))
        } else {
            Ok(None)
        };
    }
    if len > max {
        return Err(MqttError::TooLong { len, max });
    }
    let Some(body) = buf.get(header..header.saturating_add(len)) else {
        return Ok(None);
    };
    let packet = decode_body(first >> 4, first & 0x0f, body)?;
    Ok(Some((packet, header + len)))
}

fn decode_body(kind: u8, flags: u8, body: &[u8]) -> Result<Packet<'_>, MqttError> {
    let mut r = Reader::new(body);
    if kind != PUBLISH && flags != 0 {
        return Err(MqttError::Malformed("reserved header flags set"));
    }
    let packet = match kind {
        CONNACK => {
            let ack = r.u8()?;
            if ack & 0xfe != 0 {
                return Err(MqttError::Malformed("CONNACK reserved flags set"));
            }
            Packet::Connack {
                session_present: ack == 1,
                code: r.u8()?,
            }
        }
        PUBLISH => {
            let qos = match (flags >> 1) & 3 {
                0 => QoS::AtMostOnce,
                1 => QoS::AtLeastOnce,
                2 => return Err(MqttError::QoS2),
                _ => return Err(MqttError::Malformed("QoS 3")),
            };
            let dup = flags & 8 != 0;
            if qos == QoS::AtMostOnce && dup {
                return Err(MqttError::Malformed("DUP set on QoS 0"));
            }
            let topic = r.str()?;
            check_topic(topic)?;
            let pid = match qos {
                QoS::AtMostOnce => 0,
                QoS::AtLeastOnce => nonzero(r.u16()?)?,
            };
            return Ok(Packet::Publish(Publish {
                topic,
                qos,
                pid,
                retain: flags & 1 != 0,
                dup,
                payload: r.rest(),
            }));
        }
        PUBACK => Packet::Puback { pid: r.u16()? },
        SUBACK => {
            let pid = r.u16()?;
            let codes = r.rest();
            if codes.is_empty() || codes.len() > MAX_SUBSCRIBE_TOPICS {
                return Err(MqttError::Malformed("SUBACK with no or too many codes"));
            }
            if codes.iter().any(|&c| c > 2 && c != 0x80) {
                return Err(MqttError::Malformed("SUBACK return code"));
            }
            return Ok(Packet::Suback { pid, codes });
        }
        PINGREQ => Packet::Pingreq,
        PINGRESP => Packet::Pingresp,
        DISCONNECT => Packet::Disconnect,
        other => return Err(MqttError::Unexpected(other)),
    };
    r.finish()?;
    Ok(packet)
}

fn nonzero(pid: u16) -> Result<u16, MqttError> {
    if pid == 0 {
        Err(MqttError::Malformed("packet id 0"))
    } else {
        Ok(pid)
    }
}

/// A topic name we publish to or accept: 1..=MAX_TOPIC bytes, no wildcards.
fn check_topic(topic: &str) -> Result<(), MqttError> {
    if topic.is_empty() || topic.len() > MAX_TOPIC {
        return Err(MqttError::Malformed("topic empty or too long"));
    }
    if topic.contains(['+', '#']) {
        return Err(MqttError::Malformed("wildcard in a topic name"));
    }
    Ok(())
}

/// Append `packet` to `out`.
pub fn encode(packet: &Packet<'_>, out: &mut Vec<u8>) -> Result<(), MqttError> {
    let mut body = Vec::new();
    let (kind, flags) = match packet {
        Packet::Connect(c) => {
            put_str(&mut body, "MQTT")?;
            body.push(4); // protocol level 3.1.1
            let mut f = 0u8;
            if c.clean_session {
                f |= 0x02;
            }
            if let Some(w) = &c.will {
                f |= 0x04 | ((w.qos as u8) << 3);
                if w.retain {
                    f |= 0x20;
                }
            }
            body.push(f);
            body.extend_from_slice(&c.keepalive.to_be_bytes());
            put_str(&mut body, c.client_id)?;
            if let Some(w) = &c.will {
                check_topic(w.topic)?;
                put_str(&mut body, w.topic)?;
                put_bytes(&mut body, w.payload)?;
            }
            (CONNECT, 0)
        }
        Packet::Connack {
            session_present,
            code,
        } => {
            body.extend_from_slice(&[u8::from(*session_present), *code]);
            (CONNACK, 0)
        }
        Packet::Publish(p) => {
            check_topic(p.topic)?;
            put_str(&mut body, p.topic)?;
            if p.qos == QoS::AtLeastOnce {
                body.extend_from_slice(&nonzero(p.pid)?.to_be_bytes());
            } else if p.dup {
                return Err(MqttError::Malformed("DUP set on QoS 0"));
            }
            body.extend_from_slice(p.payload);
            let flags = (u8::from(p.dup) << 3) | ((p.qos as u8) << 1) | u8::from(p.retain);
            (PUBLISH, flags)
        }
        Packet::Puback { pid } => {
            body.extend_from_slice(&pid.to_be_bytes());
            (PUBACK, 0)
        }
        Packet::Subscribe { pid, topics } => {
            if topics.is_empty() || topics.len() > MAX_SUBSCRIBE_TOPICS {
                return Err(MqttError::Malformed(
                    "SUBSCRIBE with no or too many filters",
                ));
            }
            body.extend_from_slice(&nonzero(*pid)?.to_be_bytes());
            for (filter, qos) in *topics {
                if filter.is_empty() || filter.len() > MAX_TOPIC {
                    return Err(MqttError::Malformed("topic filter empty or too long"));
                }
                put_str(&mut body, filter)?;
                body.push(*qos as u8);
            }
            (SUBSCRIBE, 2)
        }
        Packet::Suback { pid, codes } => {
            body.extend_from_slice(&pid.to_be_bytes());
            body.extend_from_slice(codes);
            (SUBACK, 0)
        }
        Packet::Pingreq => (PINGREQ, 0),
        Packet::Pingresp => (PINGRESP, 0),
        Packet::Disconnect => (DISCONNECT, 0),
    };
    if body.len() > MAX_REMAINING {
        return Err(MqttError::TooLong {
            len: body.len(),
            max: MAX_REMAINING,
        });
    }
    out.push((kind << 4) | flags);
    let mut len = body.len();
    loop {
        let byte = (len & 0x7f) as u8;
        len >>= 7;
        if len == 0 {
            out.push(byte);
            break;
        }
        out.push(byte | 0x80);
    }
    out.extend_from_slice(&body);
    Ok(())
}

fn put_bytes(out: &mut Vec<u8>, bytes: &[u8]) -> Result<(), MqttError> {
    let n = u16::try_from(bytes.len()).map_err(|_| MqttError::Malformed("string over 64 KiB"))?;
    out.extend_from_slice(&n.to_be_bytes());
    out.extend_from_slice(bytes);
    Ok(())
}

fn put_str(out: &mut Vec<u8>, s: &str) -> Result<(), MqttError> {
    put_bytes(out, s.as_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn enc(p: &Packet) -> Vec<u8> {
        let mut out = Vec::new();
        encode(p, &mut out).unwrap();
        out
    }

    #[test]
    fn truncated_and_malformed_input_is_an_error_or_incomplete() {
        assert_eq!(decode(&[], 100), Ok(None));
        assert_eq!(decode(&[0x30], 100), Ok(None));
        assert_eq!(decode(&[0x30, 0x80, 0x80], 100), Ok(None));
        assert!(decode(&[0x30, 0x80, 0x80, 0x80, 0x80, 0x01], usize::MAX).is_err());
        // Claims more than the cap: refused before the body arrives.
        assert_eq!(
            decode(&[0x30, 0xff, 0x7f], 1000),
            Err(MqttError::TooLong {
                len: 16383,
                max: 1000
            })
        );
        // QoS 2 and QoS 3 publishes.
        assert_eq!(decode(&[0x34, 3, 0, 1, b'a'], 100), Err(MqttError::QoS2));
        assert!(decode(&[0x36, 3, 0, 1, b'a'], 100).is_err());
        // Packet id 0 on QoS 1.
        assert!(decode(&[0x32, 5, 0, 1, b'a', 0, 0], 100).is_err());
        // Wildcards in a topic name.
        assert!(decode(&[0x30, 3, 0, 1, b'#'], 100).is_err());
        // Topic longer than the body.
        assert!(decode(&[0x30, 3, 0, 9, b'a'], 100).is_err());
        // Reserved flags, trailing bytes, unknown or client-only types.
        assert!(decode(&[0xd1, 0], 100).is_err());
        assert!(decode(&[0xd0, 1, 0], 100).is_err());
        assert_eq!(decode(&[0x10, 0], 100), Err(MqttError::Unexpected(1)));
        assert!(
            decode(&[0x90, 2, 0, 1], 100).is_err(),
            "SUBACK without codes"
        );
        assert!(decode(&[0x90, 3, 0, 1, 7], 100).is_err(), "bad SUBACK code");
        assert!(decode(&[0x30, 3, 0, 1, 0xff], 100).is_err(), "not UTF-8");
    }

    #[test]
    fn packets_pinned_and_round_trip() {
        let publish = Packet::Publish(Publish {
            topic: "a/b",
            qos: QoS::AtLeastOnce,
            pid: 10,
            retain: false,
            dup: true,
            payload: b"hi",
        });
        let cases: Vec<(Packet, Vec<u8>)> = vec![
            (Packet::Pingreq, vec![0xc0, 0]),
            (Packet::Pingresp, vec![0xd0, 0]),
            (Packet::Disconnect, vec![0xe0, 0]),
            (Packet::Puback { pid: 258 }, vec![0x40, 2, 1, 2]),
            (
                Packet::Connack {
                    session_present: true,
                    code: 0,
                },
                vec![0x20, 2, 1, 0],
            ),
            (
                Packet::Suback {
                    pid: 1,
                    codes: &[1, 0x80],
                },
                vec![0x90, 4, 0, 1, 1, 0x80],
            ),
            (
                publish,
                vec![0x3a, 9, 0, 3, b'a', b'/', b'b', 0, 10, b'h', b'i'],
            ),
        ];
        for (p, bytes) in cases {
            assert_eq!(enc(&p), bytes, "{p:?}");
            let (back, n) = decode(&bytes, 100).unwrap().unwrap();
            assert_eq!((back, n), (p, bytes.len()));
        }
    }

    #[test]
    fn connect_and_subscribe_bytes_are_pinned() {
        let connect = Packet::Connect(Connect {
            client_id: "d",
            keepalive: 200,
            clean_session: false,
            will: Some(Will {
                topic: "t",
                payload: b"x",
                qos: QoS::AtLeastOnce,
                retain: true,
            }),
        });
        assert_eq!(
            enc(&connect),
            vec![
                0x10, 19, 0, 4, b'M', b'Q', b'T', b'T', 4, 0x2c, 0, 200, 0, 1, b'd', 0, 1, b't', 0,
                1, b'x'
            ]
        );
        let sub = Packet::Subscribe {
            pid: 1,
            topics: &[("a/#", QoS::AtLeastOnce)],
        };
        assert_eq!(enc(&sub), vec![0x82, 8, 0, 1, 0, 3, b'a', b'/', b'#', 1]);
        assert!(encode(
            &Packet::Subscribe {
                pid: 1,
                topics: &[]
            },
            &mut Vec::new()
        )
        .is_err());
    }

    #[test]
    fn large_publish_uses_a_multi_byte_length_and_splits_anywhere() {
        let payload = vec![7u8; 20_000];
        let bytes = enc(&Packet::Publish(Publish {
            topic: "outpost/x/req",
            qos: QoS::AtMostOnce,
            pid: 0,
            retain: false,
            dup: false,
            payload: &payload,
        }));
        assert_eq!(&bytes[1..4], &[0xaf, 0x9c, 0x01]);
        for cut in [0, 1, 2, 3, 10, bytes.len() - 1] {
            assert_eq!(decode(&bytes[..cut], 30_000), Ok(None), "cut {cut}");
        }
        let mut two = bytes.clone();
        two.extend_from_slice(&[0xc0, 0]);
        let (p, n) = decode(&two, 30_000).unwrap().unwrap();
        assert!(matches!(p, Packet::Publish(ref p) if p.payload.len() == 20_000));
        assert_eq!(decode(&two[n..], 30_000), Ok(Some((Packet::Pingreq, 2))));
        assert!(decode(&bytes, 19_000).is_err());
    }

    #[test]
    fn random_bytes_never_panic() {
        let mut rng = 0x9e37_79b9u32;
        for _ in 0..20_000 {
            let mut buf = [0u8; 24];
            for b in &mut buf {
                rng ^= rng << 13;
                rng ^= rng >> 17;
                rng ^= rng << 5;
                *b = rng as u8;
            }
            if let Ok(Some((p, n))) = decode(&buf, 1 << 20) {
                assert!(n <= buf.len());
                let mut again = Vec::new();
                if encode(&p, &mut again).is_ok() {
                    assert_eq!(decode(&again, 1 << 20).unwrap().unwrap().0, p);
                }
            }
        }
    }
}
