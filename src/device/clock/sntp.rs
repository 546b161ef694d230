//! SNTP client messages (RFC 4330, RFC 5905 client mode), sans I/O: build a
//! request, check a reply, compute offset and delay. The caller owns the
//! socket and the clock.
//!
//! Header (48 bytes, big-endian): LI(2) VN(3) Mode(3) | stratum | poll |
//! precision | root delay(4) | root dispersion(4) | reference id(4) |
//! reference ts(8) | originate ts(8) | receive ts(8) | transmit ts(8).
//! Extension fields and a MAC may follow; a client that does not ask for
//! them ignores them.

use std::time::Duration;

/// The fixed header every request and reply has.
pub const PACKET_LEN: usize = 48;
/// Largest reply read from the socket: the header plus room for a MAC or an
/// extension field we ignore; anything longer is cut off by the read.
pub const MAX_REPLY_LEN: usize = 128;

const VERSION: u8 = 4;
const MODE_CLIENT: u8 = 3;
const MODE_SERVER: u8 = 4;
const LEAP_UNSYNCED: u8 = 3;
/// Seconds from the NTP epoch (1900) to the Unix epoch (1970).
const NTP_UNIX_DELTA: i64 = 2_208_988_800;
/// Offsets of the timestamps in the header.
const ORIGINATE: usize = 24;
const RECEIVE: usize = 32;
const TRANSMIT: usize = 40;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SntpError {
    #[error("reply is {0} bytes, shorter than the {PACKET_LEN}-byte header")]
    Short(usize),
    #[error("reply has mode {0}, not 4 (server)")]
    WrongMode(u8),
    #[error("reply has version {0}, not 1 to 4")]
    WrongVersion(u8),
    #[error("reply does not echo our request (originate timestamp differs)")]
    WrongOriginate,
    #[error("kiss-of-death from the server: {0}")]
    KissOfDeath(String),
    #[error("server stratum {0} is not 1 to 15")]
    BadStratum(u8),
    #[error("server is not synchronized (leap indicator 3)")]
    Unsynchronized,
    #[error("reply has a zero transmit timestamp")]
    ZeroTransmit,
}

/// A checked server reply: its receive (T2) and transmit (T3) times.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Reply {
    pub stratum: u8,
    /// Unix nanoseconds.
    pub receive_ns: i64,
    pub transmit_ns: i64,
}

/// A client request. `cookie` goes in the transmit timestamp and must come
/// back as the reply's originate: a random value, so that an off-path
/// sender cannot guess it (and our clock, maybe 1970, is not revealed).
pub fn encode_request(cookie: [u8; 8]) -> [u8; PACKET_LEN] {
    let mut p = [0u8; PACKET_LEN];
    p[0] = (VERSION << 3) | MODE_CLIENT;
    p[TRANSMIT..TRANSMIT + 8].copy_from_slice(&cookie);
    p
}

fn ts(packet: &[u8; PACKET_LEN], at: usize) -> [u8; 8] {
    let mut b = [0u8; 8];
    b.copy_from_slice(&packet[at..at + 8]);
    b
}

/// Check a reply to the request made with `cookie` (RFC 4330 section 5).
pub fn decode_reply(bytes: &[u8], cookie: [u8; 8]) -> Result<Reply, SntpError> {
    let packet: &[u8; PACKET_LEN] = bytes
        .get(..PACKET_LEN)
        .and_then(|h| h.try_into().ok())
        .ok_or(SntpError::Short(bytes.len()))?;
    let [first, stratum, ..] = *packet;
    let (leap, version, mode) = (first >> 6, (first >> 3) & 7, first & 7);
    if mode != MODE_SERVER {
        return Err(SntpError::WrongMode(mode));
    }
    if !(1..=4).contains(&version) {
        return Err(SntpError::WrongVersion(version));
    }
    // Before anything that changes what we do: a reply that is not to our
    // request (a late or forged one) is ignored, KoD or not.
    if ts(packet, ORIGINATE) != cookie {
        return Err(SntpError::WrongOriginate);
    }
    if stratum == 0 {
        // The reference id carries four ASCII letters ("RATE", "DENY").
        let code: String = packet[12..16]
            .iter()
            .map(|&b| {
                if b.is_ascii_graphic() {
                    char::from(b)
                } else {
                    '?'
                }
            })
            .collect();
        return Err(SntpError::KissOfDeath(code));
    }
    if stratum > 15 {
        return Err(SntpError::BadStratum(stratum));
    }
    if leap == LEAP_UNSYNCED {
        return Err(SntpError::Unsynchronized);
    }
    let transmit = ts(packet, TRANSMIT);
    if transmit == [0; 8] {
        return Err(SntpError::ZeroTransmit);
    }
    Ok(Reply {
        stratum,
        receive_ns: ntp_to_unix_ns(ts(packet, RECEIVE)),
        transmit_ns: ntp_to_unix_ns(transmit),
    })
}

/// An NTP timestamp as Unix nanoseconds. Era rule of RFC 4330 section 3: a
/// seconds field with the top bit clear is after 2036 (era 1), so the range
/// is 1968..2104.
pub fn ntp_to_unix_ns(ts: [u8; 8]) -> i64 {
    let secs = u32::from_be_bytes([ts[0], ts[1], ts[2], ts[3]]);
    let frac = u32::from_be_bytes([ts[4], ts[5], ts[6], ts[7]]);
    let mut secs = i64::from(secs);
    if secs < 0x8000_0000 {
        secs += 1 << 32;
    }
    let nanos = (i64::from(frac) * 1_000_000_000) >> 32;
    (secs - NTP_UNIX_DELTA) * 1_000_000_000 + nanos
}

/// Unix nanoseconds as an NTP timestamp (the inverse of [`ntp_to_unix_ns`]
/// within its range; used by tests and the host-side test responder).
pub fn unix_ns_to_ntp(unix_ns: i64) -> [u8; 8] {
    let secs = unix_ns.div_euclid(1_000_000_000) + NTP_UNIX_DELTA;
    let nanos = unix_ns.rem_euclid(1_000_000_000);
    // Truncation to 32 bits is the NTP era wrap.
    #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
    let secs = secs as u32;
    #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
    let frac = ((nanos << 32) / 1_000_000_000) as u32;
    let mut out = [0u8; 8];
    out[..4].copy_from_slice(&secs.to_be_bytes());
    out[4..].copy_from_slice(&frac.to_be_bytes());
    out
}

/// What one exchange says about our clock.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Sample {
    /// Add this to our clock to get the server's (nanoseconds).
    pub offset_ns: i64,
    /// Round trip minus the server's processing time, never negative.
    pub delay: Duration,
}

/// RFC 4330 section 5: with T1 = `sent_ns` (our clock when sending), T4 =
/// T1 + `round_trip` (measured on the monotonic clock, so a clock step in
/// between does not matter), offset = ((T2 - T1) + (T3 - T4)) / 2 and
/// delay = (T4 - T1) - (T3 - T2).
///
/// Saturating i64 nanoseconds: every timestamp is within 1968..2104 (under
/// 2^62 ns), so only absurd round trips saturate.
pub fn sample(sent_ns: i64, round_trip: Duration, reply: &Reply) -> Sample {
    let rtt = i64::try_from(round_trip.as_nanos()).unwrap_or(i64::MAX);
    let t1 = sent_ns;
    let t4 = t1.saturating_add(rtt);
    let (t2, t3) = (reply.receive_ns, reply.transmit_ns);
    // Halve each term first: their sum cannot overflow then.
    let offset = (t2.saturating_sub(t1) / 2).saturating_add(t3.saturating_sub(t4) / 2);
    let delay = rtt.saturating_sub(t3.saturating_sub(t2));
    Sample {
        offset_ns: offset,
        // A negative delay is clock granularity (or a lying server): zero.
        delay: Duration::from_nanos(u64::try_from(delay).unwrap_or(0)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const COOKIE: [u8; 8] = [1, 2, 3, 4, 5, 6, 7, 8];

    /// A good reply to COOKIE: stratum 2, T2 = T3 = `at_ns`.
    fn reply(at_ns: i64) -> [u8; PACKET_LEN] {
        let mut p = [0u8; PACKET_LEN];
        p[0] = (4 << 3) | MODE_SERVER;
        p[1] = 2;
        p[ORIGINATE..ORIGINATE + 8].copy_from_slice(&COOKIE);
        p[RECEIVE..RECEIVE + 8].copy_from_slice(&unix_ns_to_ntp(at_ns));
        p[TRANSMIT..TRANSMIT + 8].copy_from_slice(&unix_ns_to_ntp(at_ns));
        p
    }

    #[test]
    fn malformed_replies_are_refused() {
        let good = reply(1_700_000_000_000_000_000);
        assert_eq!(decode_reply(&[], COOKIE), Err(SntpError::Short(0)));
        assert_eq!(decode_reply(&good[..47], COOKIE), Err(SntpError::Short(47)));

        let mut p = good;
        p[0] = (4 << 3) | MODE_CLIENT;
        assert_eq!(decode_reply(&p, COOKIE), Err(SntpError::WrongMode(3)));
        p[0] = MODE_SERVER; // version 0
        assert_eq!(decode_reply(&p, COOKIE), Err(SntpError::WrongVersion(0)));

        let mut p = good;
        p[TRANSMIT..].fill(0);
        assert_eq!(decode_reply(&p, COOKIE), Err(SntpError::ZeroTransmit));

        let mut p = good;
        p[ORIGINATE] ^= 1;
        assert_eq!(decode_reply(&p, COOKIE), Err(SntpError::WrongOriginate));

        let mut p = good;
        p[1] = 0;
        p[12..16].copy_from_slice(b"RATE");
        assert_eq!(
            decode_reply(&p, COOKIE),
            Err(SntpError::KissOfDeath("RATE".into()))
        );
        // A KoD that does not echo our request is just a stray packet.
        p[ORIGINATE] ^= 1;
        assert_eq!(decode_reply(&p, COOKIE), Err(SntpError::WrongOriginate));

        let mut p = good;
        p[1] = 16;
        assert_eq!(decode_reply(&p, COOKIE), Err(SntpError::BadStratum(16)));

        let mut p = good;
        p[0] |= LEAP_UNSYNCED << 6;
        assert_eq!(decode_reply(&p, COOKIE), Err(SntpError::Unsynchronized));
    }

    #[test]
    fn good_reply_decodes_and_trailing_mac_is_ignored() {
        let at = 1_700_000_000_250_000_000;
        let mut long = reply(at).to_vec();
        long.extend_from_slice(&[0xAA; 20]);
        let r = decode_reply(&long, COOKIE).unwrap();
        assert_eq!(r.stratum, 2);
        // NTP fractions are 2^-32 s: within a nanosecond.
        assert!((r.transmit_ns - at).abs() <= 1, "{}", r.transmit_ns - at);
        assert_eq!(r.receive_ns, r.transmit_ns);
    }

    #[test]
    fn request_carries_version_mode_and_cookie() {
        let p = encode_request(COOKIE);
        assert_eq!(p[0], 0x23);
        assert_eq!(&p[TRANSMIT..], &COOKIE);
        assert!(p[1..TRANSMIT].iter().all(|&b| b == 0));
    }

    #[test]
    fn timestamps_convert_across_eras() {
        // 1970, 2024, and after the 2036 NTP era wrap.
        for unix_s in [0i64, 1_700_000_000, 2_100_000_000, 4_000_000_000] {
            let ns = unix_s * 1_000_000_000 + 500_000_000;
            assert!(
                (ntp_to_unix_ns(unix_ns_to_ntp(ns)) - ns).abs() <= 1,
                "{unix_s}"
            );
        }
        // The NTP epoch's first second of era 0 is 1900 → out of our range,
        // read as era 1 (2036): the documented 1968..2104 window.
        assert!(ntp_to_unix_ns([0; 8]) > 2_000_000_000 * 1_000_000_000);
    }

    #[test]
    fn offset_and_delay() {
        let s = 1_000_000_000i64;
        // We send at 100 s; the server is 10 s ahead; 200 ms each way;
        // the server holds it 50 ms.
        let r = Reply {
            stratum: 1,
            receive_ns: 110 * s + 200_000_000,
            transmit_ns: 110 * s + 250_000_000,
        };
        let smp = sample(100 * s, Duration::from_millis(450), &r);
        assert_eq!(smp.offset_ns, 10 * s);
        assert_eq!(smp.delay, Duration::from_millis(400));
        // Server behind us by a year.
        let year = 365 * 86_400 * s;
        let r = Reply {
            stratum: 1,
            receive_ns: 100 * s - year,
            transmit_ns: 100 * s - year,
        };
        let smp = sample(100 * s, Duration::ZERO, &r);
        assert_eq!(smp.offset_ns, -year);
        assert_eq!(smp.delay, Duration::ZERO);
        // A server that claims more processing time than the round trip.
        let r = Reply {
            stratum: 1,
            receive_ns: 0,
            transmit_ns: 5 * s,
        };
        assert_eq!(sample(0, Duration::from_secs(1), &r).delay, Duration::ZERO);
    }
}
