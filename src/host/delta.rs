//! Delta upgrades from the CLI's side: what a board must be sent
//! (`outpost bundle diff`, and the plan shown before `outpost upgrade`) and
//! the delta payload file that carries the missing chunks.

use std::fs::File;
use std::io::Write as _;
use std::os::unix::fs::FileExt as _;
use std::path::Path;

use anyhow::{Context as _, Result};
use serde::Serialize;

use super::bundle::BundleFile;
use crate::bundle::delta::{self, bit, DELTA_PREFIX};
use crate::bundle::format::BundleHeader;

/// What a delta upgrade costs, against a full one.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct Transfer {
    pub chunks: usize,
    pub chunks_to_send: usize,
    /// The signed header (sent first: the board needs it to answer).
    pub header_bytes: u64,
    /// The delta payload: prefix, bitmap and the missing chunks.
    pub payload_bytes: u64,
    /// header + payload.
    pub delta_bytes: u64,
    /// The whole bundle, as a full upgrade sends it.
    pub full_bytes: u64,
}

impl Transfer {
    pub fn percent(&self) -> f64 {
        self.delta_bytes as f64 * 100.0 / self.full_bytes.max(1) as f64
    }

    pub fn summary(&self) -> String {
        format!(
            "delta: {} of {} chunks, {} bytes to send ({} header + {} chunks) vs {} for the full bundle ({:.1} %)",
            self.chunks_to_send,
            self.chunks,
            self.delta_bytes,
            self.header_bytes,
            self.payload_bytes,
            self.full_bytes,
            self.percent()
        )
    }
}

/// The cost of sending `new` to a board that answered `have`.
pub fn transfer(new: &BundleFile, have: &[u8]) -> Transfer {
    let sent = delta::missing(&new.header, have);
    let n = new.header.chunks.len();
    let payload = (DELTA_PREFIX + sent.len()) as u64 + delta::sent_bytes(&new.header, &sent);
    let header_bytes = new.signed.len() as u64;
    Transfer {
        chunks: n,
        chunks_to_send: (0..n).filter(|&i| bit(&sent, i)).count(),
        header_bytes,
        payload_bytes: payload,
        delta_bytes: header_bytes + payload,
        full_bytes: new.size,
    }
}

/// What a board holding `old` in a slot would answer for `new` (the
/// device's rule without the device: chunks of `old`, and repeats).
pub fn have_from(old: &BundleHeader, new: &BundleHeader) -> Vec<u8> {
    let local: std::collections::HashSet<[u8; 32]> = old.chunks.iter().map(|c| c.sha256).collect();
    delta::have(new, |i| {
        new.chunks.get(i).is_some_and(|c| local.contains(&c.sha256))
    })
}

/// Write the delta payload for `have` to `out`: prefix, bitmap, then the
/// missing chunks copied from the bundle's payload.
pub fn write_payload(bundle: &BundleFile, have: &[u8], out: &Path) -> Result<()> {
    let sent = delta::missing(&bundle.header, have);
    let src =
        File::open(&bundle.path).with_context(|| format!("opening {}", bundle.path.display()))?;
    let mut file = std::io::BufWriter::new(
        File::create(out).with_context(|| format!("creating {}", out.display()))?,
    );
    file.write_all(&delta::prefix(&bundle.manifest_sha256(), &sent))?;
    let mut buf = Vec::new();
    for (i, (c, (_, at))) in bundle
        .header
        .chunks
        .iter()
        .zip(bundle.header.offsets())
        .enumerate()
    {
        if bit(&sent, i) {
            buf.resize(c.clen as usize, 0);
            src.read_exact_at(&mut buf, bundle.payload_at + at)
                .with_context(|| format!("reading chunk {i} of {}", bundle.path.display()))?;
            file.write_all(&buf)?;
        }
    }
    file.into_inner()
        .map_err(|e| e.into_error())?
        .sync_all()
        .with_context(|| format!("writing {}", out.display()))
}
