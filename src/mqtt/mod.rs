//! MQTT 3.1.1, sans-io: the packets call-home needs (CONNECT/CONNACK,
//! PUBLISH QoS 0/1, PUBACK, SUBSCRIBE/SUBACK, PINGREQ/PINGRESP, DISCONNECT),
//! encoded into a `Vec` and decoded from a byte slice through one cursor.
//! Shared by the device (call-home session) and the CLI (broker client); no
//! I/O, no runtime. Why our own codec and not a crate: docs/callhome.md.

mod codec;
mod reader;

pub use codec::{decode, encode, Connect, MqttError, Packet, Publish, QoS, Will};

/// Longest topic we send or accept: `outpost/<253-char hostname>/events`
/// fits, and nothing of ours is longer.
pub const MAX_TOPIC: usize = 320;
/// Most topic filters in one SUBSCRIBE (a device's own topic plus its groups).
pub const MAX_SUBSCRIBE_TOPICS: usize = 16;
/// Largest remaining length MQTT can express (4-byte varint).
pub const MAX_REMAINING: usize = 268_435_455;
