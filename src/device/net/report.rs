//! The links for the API ([`infos`]) and the data-use accounting task
//! ([`account`]).

use std::path::PathBuf;

use crate::wire::{LinkInfo, ModemInfo};

use super::links::metric;
use super::usage;
use super::Links;

/// Every link as the API shows it.
pub fn infos(links: &Links) -> Vec<LinkInfo> {
    links
        .iter()
        .map(|l| {
            let st = l.state();
            let iface = st
                .iface
                .as_ref()
                .map(|i| i.name.clone())
                .unwrap_or_default();
            let (rx_bytes, tx_bytes) = if iface.is_empty() {
                (0, 0)
            } else {
                usage::counters(&iface)
            };
            let address = st.addr.map_or_else(String::new, |a| match a.gateway {
                Some(g) => format!("{}/{} via {g}", a.address, a.prefix),
                None => format!("{}/{}", a.address, a.prefix),
            });
            let mut note = st.note.clone();
            if st.over_budget {
                note.push_str(" (over its monthly budget: probes slowed)");
            }
            LinkInfo {
                name: l.config.name.clone(),
                iface,
                metric: metric(l.config.priority, st.healthy),
                healthy: st.healthy,
                carrier: st.health.carrier,
                probe_misses: st.health.misses,
                downs: st.downs,
                address,
                dns: st.dns.iter().map(|d| d.to_string()).collect(),
                note,
                rx_bytes,
                tx_bytes,
                month_bytes: st.month_bytes,
                budget_bytes: l.config.budget_mb.map(|mb| u64::from(mb) * 1_000_000),
                modem: st.modem.as_ref().map(|(state, m)| ModemInfo {
                    state: state.clone(),
                    sim: m.sim.clone(),
                    registration: m.registration.clone(),
                    operator: m.operator.clone(),
                    signal_dbm: m.signal_dbm.and_then(|v| i16::try_from(v).ok()),
                    rsrp_dbm: m.rsrp_dbm.and_then(|v| i16::try_from(v).ok()),
                }),
                events: st.events.iter().cloned().collect(),
            }
        })
        .collect()
}

/// Data-use accounting: [`Accounting::sample`] every [`usage::SAMPLE`]
/// (the monitor calls it) adds every link's counters to this month's
/// record, saves it now and then, and watches budgets.
pub struct Accounting {
    record: usage::Usage,
    samples: u32,
    data: Option<PathBuf>,
    now_secs: Box<dyn Fn() -> u64 + Send + Sync>,
}

impl Accounting {
    pub fn new(data: Option<PathBuf>, now_secs: Box<dyn Fn() -> u64 + Send + Sync>) -> Self {
        Self {
            record: data.as_deref().map(usage::load).unwrap_or_default(),
            samples: 0,
            data,
            now_secs,
        }
    }

    pub fn sample(&mut self, links: &Links) {
        let month = usage::month_of((self.now_secs)());
        let turned = self.record.month != month;
        for l in links.iter() {
            let iface = l.state().iface.as_ref().map(|i| i.name.clone());
            let Some(iface) = iface else { continue };
            let (rx, tx) = usage::counters(&iface);
            let now = rx.saturating_add(tx);
            let mut st = l.state();
            let delta = st.last_counter.map_or(0, |last| usage::delta(last, now));
            st.last_counter = Some(now);
            self.record.add(&month, &l.config.name, delta);
            st.month_bytes = self.record.get(&l.config.name);
            let over = l
                .config
                .budget_mb
                .is_some_and(|mb| st.month_bytes > u64::from(mb) * 1_000_000);
            if over != st.over_budget {
                st.over_budget = over;
                let text = if over {
                    "over its monthly budget"
                } else {
                    "within its monthly budget"
                };
                tracing::warn!("network: link {} is {text}", l.config.name);
                st.event(crate::device::log::uptime_ms(), text.into());
            }
        }
        self.samples = self.samples.wrapping_add(1);
        if let Some(dir) = &self.data {
            if turned || self.samples % usage::SAVE_EVERY == 0 {
                usage::save(dir, &self.record);
            }
        }
    }
}
