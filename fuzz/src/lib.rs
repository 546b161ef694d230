//! What each fuzz target checks. The targets in `fuzz_targets/` are one line
//! each; the checks live here so that `examples/seeds.rs` can run them over
//! the seed corpus and a plain `cargo test` can too.
//!
//! Every check is: decoding any bytes returns a value or an error, never a
//! panic (ASan catches memory errors, debug assertions catch overflow); and
//! what decodes re-encodes to the same value. Where the re-encoding cannot be
//! the same *bytes*, the reason is written beside the check, and the
//! `strict` feature asserts the byte-exact form anyway (see README.md).

use outpost::bootstate::{
    decode_copy, BootState, CopyId, Current, Env, Event, Layout, Slot, STATE_SIZE,
};
use outpost::config::MachineConfig;
use outpost::device::net::{dhcp, netlink};
use outpost::wire::serial;
use outpost::wire::{
    encode_frame, FeedResult, FrameDecoder, FrameError, RequestFrame, ResponseFrame,
    MAX_REQUEST_FRAME,
};

pub mod seeds;

/// `again`, the re-encoding of what `input` decoded to, must be `input`.
///
/// postcard reads varints without checking that they are minimal (`85 00`
/// decodes as 5, like `05`), and so does our frame-length prefix, so two
/// byte strings can decode to one value. That is the only freedom either
/// decoder allows (bools and `Option` tags must be 0 or 1, strings valid
/// UTF-8, lengths exact), and a minimal varint is strictly shorter than any
/// other form of the same number. So without `strict`: the re-encoding is
/// strictly shorter than the input, or it is the input. (Serial link frames
/// get the same check; COBS has no shorter form either, and `strict` has
/// found no longer one.)
pub fn same_bytes(what: &str, input: &[u8], again: &[u8]) {
    if cfg!(feature = "strict") {
        assert!(
            input == again,
            "{what}: re-encoding differs\n  input {input:02x?}\n  again {again:02x?}"
        );
    }
    assert!(
        again.len() < input.len() || input == again,
        "{what}: re-encoding differs and is not shorter\n  input {input:02x?}\n  again {again:02x?}"
    );
}

// ------------------------------------------------------------------ frames

/// What the frame decoder produced, with the stream offset a frame ended at.
#[derive(Debug, PartialEq, Eq)]
enum FrameEvent {
    Frame { end: usize, payload: Vec<u8> },
    Error(FrameError),
}

/// Feed `stream` to a fresh decoder in chunks of the given sizes (cycled; an
/// empty list feeds it whole; a size 0 feeds an empty slice, then one byte)
/// and record what comes out, up to the first error.
fn decode_stream(stream: &[u8], chunks: &[u8]) -> Vec<FrameEvent> {
    let mut decoder: Box<FrameDecoder<MAX_REQUEST_FRAME>> = Box::default();
    let mut events = Vec::new();
    let mut fed = 0; // stream bytes handed to `feed` so far
    let mut sizes = chunks.iter().map(|&s| usize::from(s)).cycle();
    while fed < stream.len() {
        let mut size = if chunks.is_empty() {
            stream.len()
        } else {
            sizes.next().unwrap_or(0)
        };
        if size == 0 {
            // An empty read: nothing happens. Then go on a byte at a time.
            assert!(matches!(decoder.feed(&[]), FeedResult::Consumed));
            size = 1;
        }
        let end = stream.len().min(fed + size);
        let mut input = &stream[fed..end];
        fed = end;
        loop {
            match decoder.feed(input) {
                FeedResult::Consumed => break,
                FeedResult::Frame { payload, rest } => {
                    assert!(
                        !payload.is_empty() && payload.len() <= MAX_REQUEST_FRAME,
                        "frame of {} bytes",
                        payload.len()
                    );
                    events.push(FrameEvent::Frame {
                        end: fed - rest.len(),
                        payload: payload.to_vec(),
                    });
                    if rest.is_empty() {
                        break;
                    }
                    input = rest;
                }
                FeedResult::Error(e) => {
                    events.push(FrameEvent::Error(e));
                    return events;
                }
            }
        }
    }
    events
}

/// `frame` target: a byte stream in arbitrary splits through the device's
/// request frame decoder, then each whole frame through `RequestFrame::decode`.
///
/// Input: `n = data[0] % 8`, then `n` chunk sizes, then the stream. The frames
/// (and the first error) must not depend on how the stream was split; each
/// frame must re-frame to its bytes on the stream; each request that decodes
/// must re-encode to its payload.
pub fn frame(data: &[u8]) {
    let Some((&n, rest)) = data.split_first() else {
        return;
    };
    let (chunks, stream) = rest.split_at(rest.len().min(usize::from(n % 8)));
    let whole = decode_stream(stream, &[]);
    let split = decode_stream(stream, chunks);
    assert_eq!(
        whole, split,
        "framing depends on the split points {chunks:?}"
    );
    let mut start = 0;
    for event in &whole {
        let FrameEvent::Frame { end, payload } = event else {
            break;
        };
        let again = encode_frame(payload, MAX_REQUEST_FRAME)
            .unwrap_or_else(|e| panic!("a decoded frame does not re-frame: {e}"));
        same_bytes("frame", &stream[start..*end], &again);
        start = *end;
        request(payload);
    }
}

/// A request payload: decodes → re-encodes to the same bytes.
pub fn request(payload: &[u8]) {
    let Ok(req) = RequestFrame::decode(payload) else {
        return;
    };
    let _ = (req.body.name(), req.body.required_role());
    let again = req.encode();
    assert_eq!(
        RequestFrame::decode(&again).ok().as_ref(),
        Some(&req),
        "request does not decode back"
    );
    same_bytes("request", payload, &again);
}

/// `response` target: `ResponseFrame::decode` on any bytes; what decodes
/// re-encodes to the same bytes (the CLI decodes what a device sends).
pub fn response(data: &[u8]) {
    let Ok(resp) = ResponseFrame::decode(data) else {
        return;
    };
    let again = resp.encode();
    assert_eq!(
        ResponseFrame::decode(&again).ok().as_ref(),
        Some(&resp),
        "response does not decode back"
    );
    same_bytes("response", data, &again);
}

// ------------------------------------------------------------------ serial

/// What the serial link decoder produced, with the line offset it ended at.
#[derive(Debug, PartialEq, Eq)]
enum LinkEvent {
    Frame { end: usize, payload: Vec<u8> },
    TooLong { end: usize },
    Bad { end: usize, why: serial::BadFrame },
}

/// Feed `line` to a fresh link decoder in chunks (as `decode_stream`).
fn decode_line(line: &[u8], chunks: &[u8]) -> Vec<LinkEvent> {
    let mut decoder: Box<serial::LinkDecoder> = Box::default();
    let mut events = Vec::new();
    let mut fed = 0;
    let mut sizes = chunks.iter().map(|&s| usize::from(s)).cycle();
    while fed < line.len() {
        let mut size = if chunks.is_empty() {
            line.len()
        } else {
            sizes.next().unwrap_or(0)
        };
        if size == 0 {
            assert!(matches!(decoder.feed(&[]), serial::Feed::Consumed));
            size = 1;
        }
        let end = line.len().min(fed + size);
        let mut input = &line[fed..end];
        fed = end;
        loop {
            let (event, rest) = match decoder.feed(input) {
                serial::Feed::Consumed => break,
                serial::Feed::Frame { payload, rest } => {
                    assert!(
                        !payload.is_empty() && payload.len() <= serial::MAX_LINK_PAYLOAD,
                        "link frame of {} bytes",
                        payload.len()
                    );
                    let end = fed - rest.len();
                    let payload = payload.to_vec();
                    (LinkEvent::Frame { end, payload }, rest)
                }
                serial::Feed::TooLong { rest } => (
                    LinkEvent::TooLong {
                        end: fed - rest.len(),
                    },
                    rest,
                ),
                serial::Feed::Bad { why, rest } => (
                    LinkEvent::Bad {
                        end: fed - rest.len(),
                        why,
                    },
                    rest,
                ),
            };
            events.push(event);
            if rest.is_empty() {
                break;
            }
            input = rest;
        }
    }
    events
}

/// `serial` target: bytes from a UART through the link decoder (COBS, CRC),
/// then each frame through `LinkMsg::decode`.
///
/// Input: `n = data[0] % 8`, then `n` chunk sizes, then the line. What comes
/// out must not depend on how the line was cut; each frame re-encodes to its
/// bytes on the line (leading delimiters aside); each link message
/// re-encodes to its frame. A bad frame never stops the decoder: the line is
/// decoded to its end.
pub fn serial(data: &[u8]) {
    let Some((&n, rest)) = data.split_first() else {
        return;
    };
    let (chunks, line) = rest.split_at(rest.len().min(usize::from(n % 8)));
    let whole = decode_line(line, &[]);
    let split = decode_line(line, chunks);
    assert_eq!(
        whole, split,
        "link framing depends on the split points {chunks:?}"
    );
    let mut start = 0;
    for event in &whole {
        let end = match event {
            LinkEvent::Frame { end, payload } => {
                let mut again = Vec::new();
                serial::encode_frame(payload, &mut again)
                    .unwrap_or_else(|e| panic!("a decoded link frame does not re-encode: {e}"));
                let on_line = &line[start..*end];
                let first = on_line.iter().position(|&b| b != serial::DELIMITER);
                let on_line = &on_line[first.unwrap_or(on_line.len())..];
                same_bytes("link frame", on_line, &again);
                if let Ok(msg) = serial::LinkMsg::decode(payload) {
                    let mut framed = Vec::new();
                    msg.encode(&mut framed)
                        .unwrap_or_else(|e| panic!("{msg:?} does not encode: {e}"));
                    assert_eq!(framed, again, "{msg:?} encodes to another frame");
                }
                end
            }
            LinkEvent::TooLong { end } | LinkEvent::Bad { end, .. } => end,
        };
        start = *end;
    }
}

// --------------------------------------------------------------- bootstate

/// The env's CRC-32 (zlib's, U-Boot's): the crate outpost computes it with.
static ENV_CRC: crc::Crc<u32> = crc::Crc::<u32>::new(&crc::CRC_32_ISO_HDLC);

/// Bytes before the data area: CRC, and the flags byte if redundant.
fn header_len(redundant: bool) -> usize {
    if redundant {
        5
    } else {
        4
    }
}

/// Write the right CRC into `blob`, so the fuzzer gets past the CRC check.
fn fix_crc(blob: &mut [u8], redundant: bool) {
    let header = header_len(redundant);
    if blob.len() >= header.max(5) {
        let crc = ENV_CRC.checksum(&blob[header..]).to_le_bytes();
        blob[..4].copy_from_slice(&crc);
    }
}

/// `bootstate` target: the U-Boot env blob decoder, the two boot-state
/// copies and the A/B chooser.
///
/// Input: a mode byte, then the blob(s). Bit 1: fix up the CRC first (so the
/// fuzzer gets past it). Bit 2 clear: one env blob, in the redundant layout
/// if bit 0 is set. Bit 2 set: the rest cut in two: a redundant pair for
/// `decode_redundant` if bit 0 is clear, else, each half zero-padded to
/// `STATE_SIZE`, the two copies for `Current::read` (16 KiB CRCs make these
/// inputs slow, hence not every pair). Bits 3..=5: the chooser event to
/// apply; bits 6..=7: `SwitchTo`'s attempts (0, 5, 10, 15).
pub fn bootstate(data: &[u8]) {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    let redundant = mode & 1 != 0;
    let fix = mode & 2 != 0;
    let attempts = (mode >> 6) * 5;
    let event = match (mode >> 3) & 7 {
        0 => Event::Boot,
        1 => Event::MarkGood(Slot::A),
        2 => Event::MarkGood(Slot::B),
        3 => Event::SwitchTo {
            slot: Slot::A,
            attempts,
        },
        4 => Event::SwitchTo {
            slot: Slot::B,
            attempts,
        },
        _ => Event::Rollback,
    };
    if mode & 4 != 0 {
        let half = rest.len() / 2;
        let (a, b) = (&rest[..half], &rest[half..2 * half]);
        if !redundant {
            let (mut a, mut b) = (a.to_vec(), b.to_vec());
            if fix {
                fix_crc(&mut a, true);
                fix_crc(&mut b, true);
            }
            redundant_pair(&a, &b);
            return;
        }
        let copy = |half: &[u8]| {
            let mut blob = half.to_vec();
            blob.resize(STATE_SIZE, 0);
            if fix {
                fix_crc(&mut blob, false);
            }
            blob
        };
        copies(copy(a), copy(b), event);
    } else {
        let mut blob = rest.to_vec();
        if fix {
            fix_crc(&mut blob, redundant);
        }
        if let Some(env) = env_blob(&blob, redundant) {
            chooser(&env, event);
        }
    }
}

/// The device's read of the two copies, one event, and its write: the write
/// goes to the copy not read from, and reading back gives the new state.
fn copies(mut first: Vec<u8>, mut second: Vec<u8>, event: Event) {
    let current = Current::read(&first, &second);
    for (blob, id) in [(&first, CopyId::First), (&second, CopyId::Second)] {
        assert_eq!(
            current.errors[id.index()].is_none(),
            decode_copy(blob).is_ok()
        );
    }
    if current.from.is_none() {
        assert_eq!(current.state, BootState::initial());
    }
    roundtrip(&current.state);
    let Ok(planned) = current.apply(event) else {
        return;
    };
    let write = &planned.write;
    assert_eq!(write.copy, current.target());
    assert_ne!(
        Some(write.copy),
        current.from,
        "a write over the copy in use"
    );
    let copy = decode_copy(&write.blob)
        .unwrap_or_else(|e| panic!("the written copy does not decode: {e}"));
    assert_eq!(copy.seq, write.seq);
    match write.copy {
        CopyId::First => first.clone_from(&write.blob),
        CopyId::Second => second.clone_from(&write.blob),
    }
    let again = Current::read(&first, &second);
    assert_eq!(
        again.from,
        Some(write.copy),
        "the new copy is not the one read"
    );
    assert_eq!(
        again.state, planned.state,
        "the new state is not the one read"
    );
}

fn env_blob(blob: &[u8], redundant: bool) -> Option<Env> {
    let size = blob.len();
    let (env, layout) = Env::decode(blob, size, redundant).ok()?;
    assert_eq!(matches!(layout, Layout::Redundant { .. }), redundant);
    // What `encode` writes: `key=value\0` per variable, then a closing `\0`.
    let needed = env
        .iter()
        .map(|(k, v)| k.len() + v.len() + 2)
        .sum::<usize>()
        + 1;
    match env.encode(size, layout) {
        Ok(again) => {
            assert_eq!(again.len(), size);
            assert_eq!(
                Env::decode(&again, size, redundant),
                Ok((env.clone(), layout)),
                "env does not decode back"
            );
        }
        // `decode` accepts data areas that `encode` cannot write back at
        // the same size: one the variables fill to the last byte, without
        // the closing empty entry (`a=b\0` in 4 bytes), since `encode` always
        // writes it; and one with bytes that are not UTF-8, which `decode`
        // reads as U+FFFD, 3 bytes each (README.md, findings). Either way the
        // env must really need more bytes than there are.
        Err(e) => {
            if cfg!(feature = "strict") {
                panic!("a decoded env does not re-encode at its size: {e}");
            }
            assert!(
                needed > size - header_len(redundant),
                "env of {needed} bytes does not fit {size}: {e}"
            );
        }
    }
    Some(env)
}

/// `from_env` reads any env (garbled values as boot.cmd reads them); the
/// state it gives, and the state after an event, are normalized: they
/// round-trip through `to_env`.
fn chooser(env: &Env, event: Event) {
    let (state, _issues) = BootState::from_env(env);
    roundtrip(&state);
    if let Ok((next, _choice)) = state.apply(event) {
        roundtrip(&next);
    }
}

fn roundtrip(state: &BootState) {
    let (again, issues) = BootState::from_env(&state.to_env());
    assert_eq!(
        &again, state,
        "boot state does not round-trip through the env"
    );
    assert!(
        issues.is_empty(),
        "a state's own env reads with issues: {issues:?}"
    );
}

fn flags_of(layout: Layout) -> u8 {
    match layout {
        Layout::Redundant { flags } => flags,
        Layout::Single => panic!("a redundant copy decoded as single"),
    }
}

fn redundant_pair(a: &[u8], b: &[u8]) {
    let size = a.len();
    let picked = Env::decode_redundant(a, b, size);
    let (x, y) = (Env::decode(a, size, true), Env::decode(b, size, true));
    match (&picked, &x, &y) {
        (Err(_), Err(_), Err(_)) => {}
        (Ok(p), Ok(only), Err(_)) | (Ok(p), Err(_), Ok(only)) => assert_eq!(p, only),
        (Ok(p), Ok(xa), Ok(yb)) => {
            // libubootenv: the copy whose flags counter is one ahead wins.
            let (fa, fb) = (flags_of(xa.1), flags_of(yb.1));
            if fb == fa.wrapping_add(1) {
                assert_eq!(p, yb, "flags {fa} then {fb}: the second copy is newer");
            } else if fa == fb.wrapping_add(1) {
                assert_eq!(p, xa, "flags {fa} then {fb}: the first copy is newer");
            } else {
                assert!(p == xa || p == yb);
            }
        }
        _ => panic!("decode_redundant {picked:?} from copies {x:?} and {y:?}"),
    }
}

// ------------------------------------------------------------------ config

/// `config` target: the TOML documents a device reads: machine config, its
/// diff, the release file and the slot manifest. Each that parses
/// re-serializes to text that parses to the same value. Not UTF-8: skipped
/// (callers check UTF-8 before these functions see the text).
pub fn config(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    assert!(
        outpost::config::diff(text, text).is_empty(),
        "a config differs from itself"
    );
    if let Ok(cfg) = MachineConfig::from_toml(text) {
        let again = cfg.to_toml();
        assert_eq!(
            MachineConfig::from_toml(&again).as_ref(),
            Ok(&cfg),
            "machine config does not round-trip through\n{again}"
        );
    }
    if let Ok(release) = outpost::config::Release::from_toml(text) {
        let again = release.to_toml();
        assert_eq!(
            outpost::config::Release::from_toml(&again).as_ref(),
            Ok(&release),
            "release file does not round-trip through\n{again}"
        );
    }
    if let Ok(manifest) = outpost::bundle::Manifest::from_toml(text) {
        let again = manifest.to_toml();
        assert_eq!(
            outpost::bundle::Manifest::from_toml(&again).as_ref(),
            Ok(&manifest),
            "manifest does not round-trip through\n{again}"
        );
    }
}

// ------------------------------------------------------------------ bundle

/// The release key of the `bundle` target (a fixed test seed, not a real key).
pub(crate) fn bundle_key() -> ring::signature::Ed25519KeyPair {
    match ring::signature::Ed25519KeyPair::from_seed_unchecked(&[0x42; 32]) {
        Ok(key) => key,
        Err(e) => panic!("test key: {e}"),
    }
}

/// `bundle` target: the start of a signed bundle, as a device reads it.
///
/// Input: a mode byte, then bytes. Mode bit 0 clear: the bytes are a bundle
/// start (preamble, header, signature), read by `signed_part_len` and
/// `parse`. Bit 0 set: the bytes are a header body; the target frames and
/// signs it with its test key, so that `parse` gets past the signature and
/// decodes it. A header that parses re-encodes to the signed part it came
/// from, and the version rules agree with themselves.
pub fn bundle(data: &[u8]) {
    use outpost::bundle::format;
    use ring::signature::KeyPair;
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    let key = bundle_key();
    let public: [u8; 32] = match key.public_key().as_ref().try_into() {
        Ok(public) => public,
        Err(e) => panic!("public key: {e}"),
    };
    let start = if mode & 1 == 0 {
        let _ = format::signed_part_len(rest);
        rest.to_vec()
    } else {
        let mut start = format::MAGIC.to_vec();
        start.push(format::FORMAT_VERSION);
        let len = u32::try_from(rest.len()).unwrap_or(u32::MAX);
        start.extend(len.to_le_bytes());
        start.extend(rest);
        let signature = key.sign(&start);
        start.extend(signature.as_ref());
        start
    };
    let Ok((header, payload_at)) = format::parse(&start, &[public]) else {
        return;
    };
    let signed_part = &start[..payload_at - format::SIGNATURE_LEN];
    same_bytes(
        "bundle header",
        signed_part,
        &format::encode_signed_part(&header),
    );
    let (v, min) = (header.version.as_str(), header.min_version.as_str());
    assert_eq!(
        format::version_cmp(v, min),
        format::version_cmp(min, v).reverse()
    );
    assert!(format::version_cmp(v, v).is_eq());
    let _ = format::check_install(&header, &header.board, v, false);
    let _ = format::check_install(&header, "other-board", min, true);
}

// -------------------------------------------------------------------- role

/// `role` target: the DER walk that reads the role from a client certificate.
/// A role found is one the certificate names (`O=os:<role>`).
pub fn role(data: &[u8]) {
    if let Ok(role) = outpost::device::api::auth::role_of(data) {
        let named = format!("os:{}", role.name());
        assert!(
            data.windows(named.len()).any(|w| w == named.as_bytes()),
            "role {role:?} read from a certificate that does not name it"
        );
    }
}

// -------------------------------------------------------------------- dhcp

/// `dhcp` target: a datagram on port 68. `parse_reply` with the packet's own
/// xid and hardware address (so the checks after them are reached), and
/// `Packet::decode` → `encode` → `decode` gives the same packet.
pub fn dhcp(data: &[u8]) {
    let xid = data
        .get(4..8)
        .and_then(|b| <[u8; 4]>::try_from(b).ok())
        .map_or(0, u32::from_be_bytes);
    let mac = data
        .get(28..34)
        .and_then(|b| <[u8; 6]>::try_from(b).ok())
        .unwrap_or_default();
    if let Ok(dhcp::Reply::Offer(lease) | dhcp::Reply::Ack(lease)) =
        dhcp::parse_reply(data, xid, mac)
    {
        assert!(lease.prefix <= 32, "{lease:?}");
        assert!(lease.dns.len() <= dhcp::MAX_DNS_SERVERS, "{lease:?}");
        assert!(
            lease.renew_secs <= lease.rebind_secs && lease.rebind_secs <= lease.lease_secs,
            "T1 <= T2 <= lease: {lease:?}"
        );
        let _ = lease.to_string();
    }
    if let Ok(packet) = dhcp::Packet::decode(data) {
        let again = packet.encode();
        let back = dhcp::Packet::decode(&again);
        if cfg!(feature = "strict") {
            assert_eq!(back.as_ref(), Ok(&packet), "packet does not round-trip");
        } else {
            // An option with an empty value (client id, host name, message:
            // code, length 0) decodes as `Some("")`, and `encode` leaves empty
            // values out, so it comes back as `None` (README.md, findings).
            let mut expected = packet.clone();
            let o = &mut expected.options;
            for text in [&mut o.hostname, &mut o.message] {
                if text.as_deref() == Some("") {
                    *text = None;
                }
            }
            if o.client_id.as_deref() == Some(&[]) {
                o.client_id = None;
            }
            assert_eq!(back.as_ref(), Ok(&expected), "packet does not round-trip");
        }
    }
}

// ----------------------------------------------------------------- netlink

/// `netlink` target: datagrams from the kernel. Input: a byte `k`, then the
/// first datagram (`4k` bytes), then the second (the rest). Each datagram is
/// walked into messages, every payload is read as a link and as an address,
/// and both datagrams are fed to `Replies` as `Netlink` does. Each message
/// re-encodes (through `Request`) to a datagram that walks back to it.
pub fn netlink(data: &[u8]) {
    let Some((&k, rest)) = data.split_first() else {
        return;
    };
    let (first, second) = rest.split_at(rest.len().min(usize::from(k) * 4));
    let sequence = netlink::messages(first)
        .ok()
        .and_then(|m| m.first().map(|m| m.sequence))
        .unwrap_or(1);
    let mut links =
        netlink::Replies::new(sequence, Some(netlink::RTM_NEWLINK), netlink::parse_link);
    let mut addrs =
        netlink::Replies::new(sequence, Some(netlink::RTM_NEWADDR), netlink::parse_address);
    let (mut links_done, mut addrs_done) = (false, false);
    for datagram in [first, second] {
        if !links_done {
            links_done = matches!(links.feed(datagram), Ok(Some(_)) | Err(_));
        }
        if !addrs_done {
            addrs_done = matches!(addrs.feed(datagram), Ok(Some(_)) | Err(_));
        }
        let Ok(messages) = netlink::messages(datagram) else {
            continue;
        };
        for m in &messages {
            let _ = netlink::parse_link(m.payload);
            let _ = netlink::parse_address(m.payload);
            let again = netlink::Request {
                kind: m.kind,
                flags: m.flags,
                body: m.payload.to_vec(),
            }
            .encode(m.sequence);
            let back = netlink::messages(&again);
            assert_eq!(
                back.as_deref(),
                Ok(std::slice::from_ref(m)),
                "netlink message does not walk back"
            );
        }
    }
}

#[cfg(test)]
mod tests {
    /// Every seed passes its target's checks.
    #[test]
    fn seeds_pass() {
        for (target, seeds) in super::seeds::all() {
            let check = super::seeds::check_for(target);
            for (name, bytes) in seeds {
                eprintln!("{target}/{name}");
                check(&bytes);
            }
        }
    }
}

/// SNTP replies. Input: 8 bytes of request cookie, then the reply datagram.
/// A reply that passes is from a synchronized server (stratum 1..15) and
/// echoes the cookie; offset/delay maths never overflow, delay is never
/// negative, and its timestamps survive NTP → Unix → NTP within 1 ns.
pub fn sntp(data: &[u8]) {
    use outpost::device::clock::sntp;
    let cookie = data
        .get(..8)
        .and_then(|b| <[u8; 8]>::try_from(b).ok())
        .unwrap_or_default();
    let reply_bytes = data.get(8..).unwrap_or_default();
    let Ok(reply) = sntp::decode_reply(reply_bytes, cookie) else {
        return;
    };
    assert!((1..=15).contains(&reply.stratum), "{reply:?}");
    assert_eq!(reply_bytes.get(24..32), Some(&cookie[..]));
    for rtt in [0u64, 1, 4_000_000_000, u64::MAX] {
        let s = sntp::sample(
            reply.transmit_ns,
            std::time::Duration::from_nanos(rtt),
            &reply,
        );
        let _ = s.delay;
    }
    for ns in [reply.receive_ns, reply.transmit_ns] {
        let back = sntp::ntp_to_unix_ns(sntp::unix_ns_to_ntp(ns));
        assert!((back - ns).abs() <= 1, "{ns} -> {back}");
    }
}

// -------------------------------------------------------------------- mqtt

/// `mqtt` target: bytes from a broker. `mqtt::decode` returns a packet, "not
/// yet", or an error; a packet re-encodes to the bytes it was read from
/// (shorter only if the remaining length was not minimal) and decodes back.
pub fn mqtt(data: &[u8]) {
    let max = outpost::wire::envelope::MAX_COMMAND_PAYLOAD + 512;
    let Ok(Some((packet, used))) = outpost::mqtt::decode(data, max) else {
        return;
    };
    let mut again = Vec::new();
    outpost::mqtt::encode(&packet, &mut again).expect("a decoded packet must encode");
    let back = outpost::mqtt::decode(&again, max).expect("re-encoding must decode");
    assert_eq!(
        back,
        Some((packet, again.len())),
        "mqtt packet does not decode back"
    );
    same_bytes("mqtt", data.get(..used).unwrap_or_default(), &again);
}

/// `envelope` target: a signed command as a device receives it. It decodes
/// (with the command inside) or is an error; what decodes re-encodes.
pub fn envelope(data: &[u8]) {
    use outpost::wire::envelope::{decode, encode, Command, SignedCommand};
    let Ok(signed) = decode::<SignedCommand>(data) else {
        return;
    };
    same_bytes("envelope", data, &encode(&signed));
    if let Ok(command) = decode::<Command>(signed.command) {
        same_bytes("command", signed.command, &encode(&command));
    }
}
