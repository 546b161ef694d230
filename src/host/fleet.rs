//! Fan-out through the broker: one signed command to a group (one publish on
//! its group topic) or to a list of devices, answers collected until a
//! timeout; answers after it, within a grace period, are reported as late,
//! not lost. Each answer's signature is checked against its device's
//! certificate (retained on `outpost/<device>/cert`).

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Result};
use rustls::pki_types::CertificateDer;

use super::broker::{self, BrokerLink, BrokerUrl, Operator};
use crate::wire::envelope::{topic, DeviceMessage, Target};
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
    roots: Vec<CertificateDer<'static>>,
    certs: HashMap<String, Vec<u8>>,
}

impl FanOut {
    pub fn connect(
        url: &BrokerUrl,
        tls: Arc<rustls::ClientConfig>,
        ca: &std::path::Path,
        operator: Operator,
    ) -> Result<Self> {
        let filters = vec![
            "outpost/+/cert".to_owned(),
            "outpost/+/resp".to_owned(),
            "outpost/+/events".to_owned(),
        ];
        Ok(Self {
            link: BrokerLink::connect(
                url,
                tls,
                &broker::client_id("outpost-fleet"),
                &filters,
                crate::mqtt::QoS::AtMostOnce,
            )?,
            operator,
            roots: broker::load_roots(ca)?,
            certs: HashMap::new(),
        })
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
        let start = Instant::now();
        match who {
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
            Selection::Devices(list) => Some(list.len()),
        };
        let deadline = start + timeout;
        let mut report = Report::default();
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
            let Some(device) = device_of(&on) else {
                continue;
            };
            if on.ends_with("/cert") {
                if broker::check_device_cert(&payload, device, &self.roots).is_ok() {
                    self.certs.insert(device.to_owned(), payload);
                }
                continue;
            }
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
            match says.message {
                DeviceMessage::Answer { seq, response } if for_us(seq) => {
                    let Ok(frame) = ResponseFrame::decode(response) else {
                        continue;
                    };
                    let after = start.elapsed();
                    report.elapsed = after;
                    report.answers.entry(device.to_owned()).or_insert(Answer {
                        after,
                        body: frame.body,
                        late: after > timeout,
                    });
                }
                DeviceMessage::Refused { seq, reason } if for_us(seq) => {
                    report.refused.insert(device.to_owned(), reason.to_owned());
                }
                _ => {}
            }
        }
        if let Selection::Devices(list) = who {
            report.missing = list
                .iter()
                .filter(|d| !report.answers.contains_key(*d))
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
