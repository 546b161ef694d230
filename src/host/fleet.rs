//! Fan-out through the broker: one signed command to a group (one publish on
//! its group topic) or to a list of devices, answers collected until a
//! timeout; answers after it, within a grace period, are reported as late,
//! not lost. Each answer's signature is checked against its device's
//! certificate (retained on `outpost/<device>/cert`). Sealed (`--seal`):
//! one command per listed device, each sealed to that device's key; a group
//! publish cannot be sealed to many keys at once, so it is refused.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Result};

use super::broker::{self, BrokerLink, BrokerUrl, Operator};
use crate::wire::envelope::{topic, DeviceMessage, Target};
use crate::wire::seal::{OneUseKey, KEY_LEN};
use crate::wire::{Request, RequestFrame, Response, ResponseFrame, WireError};

/// Who a fan-out is for.
#[derive(Debug, Clone)]
pub enum Selection {
    Group(String),
    Devices(Vec<String>),
}

#[derive(Debug)]
pub struct Answer {
    /// Since the command went out.
    pub after: Duration,
    pub body: Result<Response, WireError>,
    /// Came after the timeout (within the grace period).
    pub late: bool,
}

#[derive(Debug, Default)]
pub struct Report {
    /// By device name.
    pub answers: BTreeMap<String, Answer>,
    /// Named devices that did not answer at all.
    pub missing: Vec<String>,
    /// Refusals the devices published (expired, replayed).
    pub refused: BTreeMap<String, String>,
    /// Command out → last answer in time.
    pub elapsed: Duration,
}

pub struct FanOut {
    link: BrokerLink,
    operator: Operator,
    trust: super::trust::SiteTrust,
    certs: HashMap<String, Vec<u8>>,
    /// Sealing: signed seal keys as published, and those checked.
    seal: bool,
    seal_msgs: HashMap<String, Vec<u8>>,
    seal_keys: HashMap<String, [u8; KEY_LEN]>,
}

/// How long a sealed fan-out waits for the listed devices' retained seal keys.
const SEAL_KEY_WAIT: Duration = Duration::from_secs(10);
/// What a sealed fan-out reports for a device that published no seal key.
pub const NO_SEAL_KEY: &str = "publishes no seal key: not sent (--seal)";

impl FanOut {
    pub fn connect(
        url: &BrokerUrl,
        tls: Arc<rustls::ClientConfig>,
        ca: &std::path::Path,
        operator: Operator,
    ) -> Result<Self> {
        Self::connect_as(url, tls, ca, operator, false)
    }

    /// As `connect`, sealing every command (`--seal`; device lists only).
    pub fn connect_sealed(
        url: &BrokerUrl,
        tls: Arc<rustls::ClientConfig>,
        ca: &std::path::Path,
        operator: Operator,
    ) -> Result<Self> {
        Self::connect_as(url, tls, ca, operator, true)
    }

    fn connect_as(
        url: &BrokerUrl,
        tls: Arc<rustls::ClientConfig>,
        ca: &std::path::Path,
        operator: Operator,
        seal: bool,
    ) -> Result<Self> {
        let mut filters = vec![
            "outpost/+/cert".to_owned(),
            "outpost/+/resp".to_owned(),
            "outpost/+/events".to_owned(),
        ];
        if seal {
            filters.push("outpost/+/seal".to_owned());
        }
        Ok(Self {
            link: BrokerLink::connect(
                url,
                tls,
                &broker::client_id("outpost-fleet"),
                &filters,
                crate::mqtt::QoS::AtMostOnce,
            )?,
            operator,
            trust: super::trust::SiteTrust::load(ca)?,
            certs: HashMap::new(),
            seal,
            seal_msgs: HashMap::new(),
            seal_keys: HashMap::new(),
        })
    }

    /// Take in a retained certificate or seal key; other messages come back.
    fn key_message(&mut self, on: &str, payload: Vec<u8>) -> Option<Vec<u8>> {
        let device = device_of(on)?.to_owned();
        if on.ends_with("/cert") {
            if self.trust.check_device_cert(&payload, &device).is_ok() {
                self.certs.insert(device.clone(), payload);
            }
        } else if on.ends_with("/seal") {
            self.seal_msgs.insert(device.clone(), payload);
        } else {
            return Some(payload);
        }
        if let (Some(cert), Some(msg)) = (self.certs.get(&device), self.seal_msgs.get(&device)) {
            if let Ok(key) = broker::open_seal_key(msg, cert, &device) {
                self.seal_keys.insert(device.clone(), key);
            }
            self.seal_msgs.remove(&device);
        }
        None
    }

    /// Wait (a little) for the seal keys of `list`.
    fn wait_for_seal_keys(&mut self, list: &[String]) -> Result<()> {
        let deadline = Instant::now() + SEAL_KEY_WAIT;
        while !list.iter().all(|d| self.seal_keys.contains_key(d)) {
            let Some((on, payload)) = self.link.next_message(deadline)? else {
                break;
            };
            let _ = self.key_message(&on, payload);
        }
        Ok(())
    }

    /// Leave the site's revocation list retained on the broker: every board
    /// takes it at its next connect, those away now included.
    pub fn retain_site_crl(&mut self, crl: &[u8]) -> Result<()> {
        self.link.publish(topic::SITE_CRL, crl, true)
    }

    /// Send `request` to `who`, wait `timeout` for answers, then `grace`
    /// more for late ones (a group's size is unknown: it waits the full
    /// timeout; a device list ends early when all have answered).
    pub fn run(
        &mut self,
        who: &Selection,
        request: Request<'_>,
        expiry: Duration,
        timeout: Duration,
        grace: Duration,
    ) -> Result<Report> {
        let frame = RequestFrame {
            id: 1,
            body: request,
        }
        .encode();
        let expires = broker::expires_in(expiry);
        let mut seqs: HashMap<u64, Option<String>> = HashMap::new();
        let mut answer_keys: HashMap<u64, OneUseKey> = HashMap::new();
        let mut report = Report::default();
        if let (true, Selection::Devices(list)) = (self.seal, who) {
            self.wait_for_seal_keys(list)?;
        }
        let start = Instant::now();
        match who {
            Selection::Group(_) if self.seal => bail!(
                "--seal cannot go to a --group: one group publish cannot be sealed to \
                 each member's key; name the boards with --devices or --label"
            ),
            Selection::Devices(list) if self.seal => {
                for d in list {
                    let Some(key) = self.seal_keys.get(d) else {
                        report.refused.insert(d.clone(), NO_SEAL_KEY.to_owned());
                        continue;
                    };
                    let t = topic::req(d);
                    let mut ciphertext = Vec::new();
                    let (body, answer, _) = broker::seal_request(key, &frame, &mut ciphertext)?;
                    let (seq, msg) =
                        self.operator
                            .sign_as(Target::Device(d), &t, expires, body, true);
                    self.link.publish(&t, &msg, false)?;
                    seqs.insert(seq, Some(d.clone()));
                    answer_keys.insert(seq, answer);
                }
            }
            Selection::Group(g) => {
                let t = topic::group_req(g);
                let (seq, msg) = self.operator.sign(Target::Group(g), &t, expires, &frame);
                self.link.publish(&t, &msg, false)?;
                seqs.insert(seq, None);
            }
            Selection::Devices(list) => {
                for d in list {
                    let t = topic::req(d);
                    let (seq, msg) = self.operator.sign(Target::Device(d), &t, expires, &frame);
                    self.link.publish(&t, &msg, false)?;
                    seqs.insert(seq, Some(d.clone()));
                }
            }
        }
        let expected = match who {
            Selection::Group(_) => None,
            Selection::Devices(_) => Some(seqs.len()),
        };
        let deadline = start + timeout;
        loop {
            let now = Instant::now();
            let all_in = expected.is_some_and(|n| report.answers.len() >= n);
            if all_in || now >= deadline + grace {
                break;
            }
            let until = if now < deadline {
                deadline
            } else {
                deadline + grace
            };
            let Some((on, payload)) = self.link.next_message(until)? else {
                continue;
            };
            let Some(payload) = self.key_message(&on, payload) else {
                continue;
            };
            let Some(device) = device_of(&on) else {
                continue;
            };
            let Some(cert) = self.certs.get(device) else {
                continue;
            };
            let Ok(says) = broker::open_device_message(&payload, cert) else {
                continue;
            };
            if says.device != device {
                continue;
            }
            let for_us = |seq: u64| match seqs.get(&seq) {
                Some(None) => true,
                Some(Some(d)) => d == device,
                None => false,
            };
            let frame = match says.message {
                DeviceMessage::Answer { seq, response }
                    if for_us(seq) && !answer_keys.contains_key(&seq) =>
                {
                    ResponseFrame::decode(response).ok()
                }
                DeviceMessage::SealedAnswer { seq, ciphertext } if for_us(seq) => answer_keys
                    .get(&seq)
                    .and_then(|k| broker::open_answer(k, ciphertext).ok()),
                DeviceMessage::Refused { seq, reason } if for_us(seq) => {
                    report.refused.insert(device.to_owned(), reason.to_owned());
                    None
                }
                _ => None,
            };
            if let Some(frame) = frame {
                let after = start.elapsed();
                report.elapsed = after;
                report.answers.entry(device.to_owned()).or_insert(Answer {
                    after,
                    body: frame.body,
                    late: after > timeout,
                });
            }
        }
        if let Selection::Devices(list) = who {
            let unsent = |d: &String| report.refused.get(d).is_some_and(|r| r == NO_SEAL_KEY);
            report.missing = list
                .iter()
                .filter(|d| !report.answers.contains_key(*d) && !unsent(d))
                .cloned()
                .collect();
        }
        Ok(report)
    }
}

/// `outpost/<device>/…` → device.
fn device_of(topic: &str) -> Option<&str> {
    let mut parts = topic.split('/');
    match (parts.next(), parts.next()) {
        (Some("outpost"), Some(d)) if d != "group" => Some(d),
        _ => None,
    }
}

/// Parse `--devices a,b,c` / `--group g`.
pub fn selection(group: Option<String>, devices: Option<String>) -> Result<Selection> {
    match (group, devices) {
        (Some(g), None) => {
            if !crate::config::callhome::valid_group(&g) {
                bail!("group `{g}`: letters, digits, '-', '_' or '.'");
            }
            Ok(Selection::Group(g))
        }
        (None, Some(list)) => {
            let names: Vec<String> = list
                .split(',')
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .map(str::to_owned)
                .collect();
            if names.is_empty() {
                bail!("--devices names no device");
            }
            Ok(Selection::Devices(names))
        }
        _ => bail!("give --group G or --devices A,B,..."),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn topics_and_selections() {
        assert_eq!(device_of("outpost/edge-1/resp"), Some("edge-1"));
        assert_eq!(device_of("outpost/group/x/req"), None);
        assert_eq!(device_of("other/edge-1/resp"), None);
        assert!(matches!(
            selection(None, Some("a, b,".into())).unwrap(),
            Selection::Devices(v) if v == ["a", "b"]
        ));
        assert!(selection(Some("a/b".into()), None).is_err());
        assert!(selection(None, None).is_err());
    }
}
