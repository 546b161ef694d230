//! Who is online, without a byte to any board: each board keeps its signed
//! `Presence` retained on `outpost/<device>/presence` while a session is up,
//! and the broker replaces it with the board's signed last will (`online:
//! false`) when that session dies without a goodbye. Reading them is one
//! subscription: the broker hands over every retained message at once.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Result;

use super::broker::{self, BrokerLink, BrokerUrl};
use crate::wire::envelope::DeviceMessage;

/// After the last retained message, this much quiet means the broker has
/// sent them all (it sends them back to back after the SUBACK).
const QUIET: Duration = Duration::from_millis(700);

/// One board's last word, checked against its certificate.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Seen {
    pub online: bool,
    pub boot_id: String,
    pub version: String,
    pub slot: String,
    /// Unix seconds (the board's clock) when the session began.
    pub since: u64,
}

#[derive(Debug, Default, serde::Serialize)]
pub struct Roster {
    pub seen: BTreeMap<String, Seen>,
    /// A presence that does not verify (no or a bad certificate, a foreign
    /// signature): the device and why.
    pub unverified: BTreeMap<String, String>,
    /// Asked for by name and never seen on this broker.
    pub never_seen: Vec<String>,
}

/// Every board's presence, or only those `only` names; waits at most `max`.
pub fn collect(
    url: &BrokerUrl,
    tls: Arc<rustls::ClientConfig>,
    ca: &std::path::Path,
    only: Option<&[String]>,
    max: Duration,
) -> Result<Roster> {
    let trust = super::trust::SiteTrust::load(ca)?;
    let filters = vec!["outpost/+/cert".to_owned(), "outpost/+/presence".to_owned()];
    let mut link = BrokerLink::connect(
        url,
        tls,
        &broker::client_id("outpost-presence"),
        &filters,
        crate::mqtt::QoS::AtMostOnce,
    )?;
    let wanted = |d: &str| only.is_none_or(|list| list.iter().any(|n| n == d));
    let mut certs: HashMap<String, Vec<u8>> = HashMap::new();
    let mut presences: HashMap<String, Vec<u8>> = HashMap::new();
    let end = Instant::now() + max;
    loop {
        let until = (Instant::now() + QUIET).min(end);
        let Some((on, payload)) = link.next_message(until)? else {
            break;
        };
        let Some((device, kind)) = device_and_kind(&on) else {
            continue;
        };
        if !wanted(device) {
            continue;
        }
        match kind {
            "cert" => certs.insert(device.to_owned(), payload),
            "presence" => presences.insert(device.to_owned(), payload),
            _ => None,
        };
    }
    let mut roster = Roster::default();
    for (device, payload) in presences {
        match verify(&device, &payload, certs.get(&device), &trust) {
            Ok(seen) => {
                roster.seen.insert(device, seen);
            }
            Err(e) => {
                roster.unverified.insert(device, format!("{e:#}"));
            }
        }
    }
    if let Some(list) = only {
        roster.never_seen = list
            .iter()
            .filter(|d| !roster.seen.contains_key(*d) && !roster.unverified.contains_key(*d))
            .cloned()
            .collect();
    }
    Ok(roster)
}

fn verify(
    device: &str,
    payload: &[u8],
    cert: Option<&Vec<u8>>,
    trust: &super::trust::SiteTrust,
) -> Result<Seen> {
    let cert = cert.ok_or_else(|| anyhow::anyhow!("no certificate retained"))?;
    trust.check_device_cert(cert, device)?;
    let says = broker::open_device_message(payload, cert)?;
    if says.device != device {
        anyhow::bail!("signed for {}", says.device);
    }
    match says.message {
        DeviceMessage::Presence {
            online,
            boot_id,
            version,
            slot,
            since,
        } => Ok(Seen {
            online,
            boot_id: boot_id.to_owned(),
            version: version.to_owned(),
            slot: slot.to_owned(),
            since,
        }),
        _ => anyhow::bail!("not a presence message"),
    }
}

/// `outpost/<device>/<kind>` → (device, kind).
fn device_and_kind(topic: &str) -> Option<(&str, &str)> {
    let mut parts = topic.split('/');
    match (parts.next(), parts.next(), parts.next(), parts.next()) {
        (Some("outpost"), Some(d), Some(kind), None) if d != "group" => Some((d, kind)),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn topics() {
        assert_eq!(
            device_and_kind("outpost/edge-1/presence"),
            Some(("edge-1", "presence"))
        );
        assert_eq!(device_and_kind("outpost/group/g/req"), None);
        assert_eq!(device_and_kind("outpost/a/b/c"), None);
        assert_eq!(device_and_kind("x/a/cert"), None);
    }

    #[test]
    fn a_presence_without_a_certificate_does_not_verify() {
        let none = super::super::trust::SiteTrust::without_list(vec![]);
        let e = verify("d", &[0], None, &none).unwrap_err();
        assert!(e.to_string().contains("no certificate"), "{e}");
    }
}
