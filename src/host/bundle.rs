//! `outpost bundle build`: one signed bundle per board and version, for every
//! device of a site (a slot holds no device identity).

use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::{Context as _, Result};
use serde::Serialize;

use super::board::Board;
use super::image::{self, SlotInputs};
use super::pki::Site;
use crate::bundle::format::{encode_signed_part, BundleHeader, Compression, DEFAULT_CHUNK};

pub struct BundleOptions {
    pub board: Board,
    pub site_dir: PathBuf,
    pub init_binary: PathBuf,
    pub version: String,
    pub min_version: String,
    pub output: PathBuf,
}

#[derive(Debug, Serialize)]
pub struct BundleReport {
    pub bundle: PathBuf,
    pub board: String,
    pub version: String,
    pub image_size: u64,
    pub bundle_size: u64,
    pub chunks: usize,
    pub sha256: String,
}

pub fn build(opts: &BundleOptions) -> Result<BundleReport> {
    let site = Site::open(&opts.site_dir)?;
    let key = site.release_key()?;
    let build_time = image::build_time()?;
    // The FAT volume id only has to be stable per release.
    let volume_id = u32::from_le_bytes(
        ring::digest::digest(
            &ring::digest::SHA256,
            format!("{} {}", opts.board.name, opts.version).as_bytes(),
        )
        .as_ref()[..4]
            .try_into()
            .unwrap_or_default(),
    );
    let slot = image::build_slot(&SlotInputs {
        board: &opts.board,
        site_dir: &opts.site_dir,
        init_binary: &opts.init_binary,
        version: &opts.version,
        build_time,
        volume_id,
    })?;
    let image = trim(&slot.image, DEFAULT_CHUNK as usize);
    let release = Release {
        board: opts.board.name.clone(),
        version: opts.version.clone(),
        min_version: opts.min_version.clone(),
        build_time,
    };
    sign_image(image, &release, &key, &opts.output)
}

/// What a bundle says about itself.
pub struct Release {
    pub board: String,
    pub version: String,
    pub min_version: String,
    pub build_time: u64,
}

/// Compress, hash and sign a slot image into a bundle file.
pub fn sign_image(
    image: &[u8],
    release: &Release,
    key: &ring::signature::Ed25519KeyPair,
    output: &Path,
) -> Result<BundleReport> {
    let chunks: Vec<[u8; 32]> = image.chunks(DEFAULT_CHUNK as usize).map(sha256).collect();
    let mut enc = flate2::write::DeflateEncoder::new(Vec::new(), flate2::Compression::default());
    enc.write_all(image).context("compressing the slot image")?;
    let payload = enc.finish().context("compressing the slot image")?;
    let header = BundleHeader {
        board: release.board.clone(),
        version: release.version.clone(),
        min_version: release.min_version.clone(),
        build_time: release.build_time,
        image_size: image.len() as u64,
        image_sha256: sha256(image),
        chunk_size: DEFAULT_CHUNK,
        chunks,
        compression: Compression::Deflate,
        payload_size: payload.len() as u64,
    };
    header.validate()?;
    let signed = encode_signed_part(&header);
    let signature = key.sign(&signed);

    let tmp = output.with_extension("bundle.tmp");
    let mut file =
        std::fs::File::create(&tmp).with_context(|| format!("creating {}", tmp.display()))?;
    for part in [&signed[..], signature.as_ref(), &payload] {
        file.write_all(part)
            .with_context(|| format!("writing {}", tmp.display()))?;
    }
    file.sync_all()?;
    std::fs::rename(&tmp, output).with_context(|| format!("writing {}", output.display()))?;
    Ok(BundleReport {
        bundle: output.to_path_buf(),
        board: release.board.clone(),
        version: release.version.clone(),
        image_size: image.len() as u64,
        bundle_size: std::fs::metadata(output)?.len(),
        chunks: header.chunks.len(),
        sha256: crate::bundle::hex(&file_sha256(output)?),
    })
}

fn sha256(data: &[u8]) -> [u8; 32] {
    let d = ring::digest::digest(&ring::digest::SHA256, data);
    let mut out = [0u8; 32];
    out.copy_from_slice(d.as_ref());
    out
}

/// Drop the all-zero tail of a slot image, in whole chunks: free FAT space
/// need not be written (stale data there is never read), so neither sent
/// nor written to the card.
fn trim(image: &[u8], chunk: usize) -> &[u8] {
    match image.iter().rposition(|&b| b != 0) {
        None => &[],
        Some(last) => &image[..((last / chunk + 1) * chunk).min(image.len())],
    }
}

/// The bundle file's SHA-256 (what `upload` keys it by).
pub fn file_sha256(path: &Path) -> Result<[u8; 32]> {
    let f = std::fs::File::open(path).with_context(|| format!("opening {}", path.display()))?;
    super::upload::sha256_of(&f).with_context(|| format!("hashing {}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn trim_keeps_whole_chunks_up_to_the_last_data() {
        let mut img = vec![0u8; 10 * 16];
        img[37] = 1;
        assert_eq!(trim(&img, 16).len(), 48);
        assert_eq!(trim(&[0u8; 64], 16).len(), 0);
        let full = vec![1u8; 40];
        assert_eq!(trim(&full, 16).len(), 40);
    }
}
