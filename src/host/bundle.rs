//! `outpost bundle build`: one signed bundle per board and version, for every
//! device of a site (a slot holds no device identity).

use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::{Context as _, Result};
use serde::Serialize;

use super::board::Board;
use super::image::{self, SlotInputs};
use super::pki::Site;
use crate::bundle::format::{
    encode_signed_part, signed_part_len, BundleHeader, ChunkEntry, PREAMBLE_LEN, SIGNATURE_LEN,
};

/// FastCDC average chunk for slot images (min a quarter, max four times it), chosen by measurement
/// (docs/benchmarks.md, "Delta upgrades"): small enough that a one-file change
/// moves little, large enough that the header (38 bytes a chunk) stays small.
/// 8 KiB beat 16/32/64/256 on all three benchmark pairs: the header doubles
/// against 16 KiB (~53 KB for a 12 MB image) but less is sent around changes.
pub const CDC_AVG: u32 = 8 * 1024;
/// The slot image is cut after its last non-zero byte, rounded up to this.
const TRIM_TO: usize = 4096;

pub struct BundleOptions {
    pub board: Board,
    pub site_dir: PathBuf,
    pub init_binary: PathBuf,
    /// Service binaries for the extension directory (as `image build`).
    pub extensions: Vec<PathBuf>,
    pub version: String,
    pub min_version: String,
    pub output: PathBuf,
    /// Average content-defined chunk (`CDC_AVG` unless measuring).
    pub chunk_avg: u32,
}

#[derive(Debug, Serialize)]
pub struct BundleReport {
    pub bundle: PathBuf,
    pub board: String,
    pub version: String,
    pub image_size: u64,
    pub bundle_size: u64,
    pub chunks: usize,
    /// Signed header with its signature: what a delta upgrade sends first.
    pub header_size: u64,
    pub sha256: String,
}

pub fn build(opts: &BundleOptions) -> Result<BundleReport> {
    let site = Site::open(&opts.site_dir)?;
    let key = site.release_key()?;
    let build_time = image::build_time(&opts.init_binary)?;
    let volume_id = image::slot_volume_id(&opts.board.name, &opts.version);
    let slot = image::build_slot(&SlotInputs {
        board: &opts.board,
        site_dir: &opts.site_dir,
        init_binary: &opts.init_binary,
        version: &opts.version,
        build_time,
        volume_id,
        extensions: &opts.extensions,
    })?;
    let image = trim(&slot.image, TRIM_TO);
    let release = Release {
        board: opts.board.name.clone(),
        version: opts.version.clone(),
        min_version: opts.min_version.clone(),
        build_time,
    };
    sign_image_with(image, &release, &key, &opts.output, opts.chunk_avg)
}

/// What a bundle says about itself.
pub struct Release {
    pub board: String,
    pub version: String,
    pub min_version: String,
    pub build_time: u64,
}

/// Cut a slot image into content-defined chunks: (offset, length).
pub fn cut(image: &[u8], avg: u32) -> Vec<(usize, usize)> {
    fastcdc::v2020::FastCDC::new(image, avg / 4, avg, avg * 4)
        .map(|c| (c.offset, c.length))
        .collect()
}

/// One chunk as it goes into the payload: raw deflate, or the bytes
/// themselves when deflate does not make them smaller.
pub fn compress_chunk(data: &[u8]) -> Vec<u8> {
    let mut enc = flate2::write::DeflateEncoder::new(Vec::new(), flate2::Compression::best());
    let packed = enc
        .write_all(data)
        .and_then(|()| enc.finish())
        .unwrap_or_default();
    if packed.is_empty() || packed.len() >= data.len() {
        data.to_vec()
    } else {
        packed
    }
}

/// The header and payload of a slot image, cut with average chunk `avg`.
pub fn chunk_image(image: &[u8], release: &Release, avg: u32) -> (BundleHeader, Vec<u8>) {
    let mut payload = Vec::new();
    let mut chunks = Vec::new();
    for (at, len) in cut(image, avg) {
        let data = &image[at..at + len];
        let packed = compress_chunk(data);
        chunks.push(ChunkEntry {
            sha256: sha256(data),
            len: u32::try_from(len).unwrap_or(u32::MAX),
            clen: u32::try_from(packed.len()).unwrap_or(u32::MAX),
        });
        payload.extend_from_slice(&packed);
    }
    let header = BundleHeader {
        board: release.board.clone(),
        version: release.version.clone(),
        min_version: release.min_version.clone(),
        build_time: release.build_time,
        image_size: image.len() as u64,
        image_sha256: sha256(image),
        chunks,
        payload_size: payload.len() as u64,
    };
    (header, payload)
}

/// The chunk list of an image alone (every chunk "stored"): what DATA keeps
/// for a slot, so only hashes and lengths matter.
pub fn index_image(image: &[u8], board: &str, version: &str) -> BundleHeader {
    let chunks: Vec<ChunkEntry> = cut(image, CDC_AVG)
        .into_iter()
        .map(|(at, len)| {
            let len32 = u32::try_from(len).unwrap_or(u32::MAX);
            ChunkEntry {
                sha256: sha256(&image[at..at + len]),
                len: len32,
                clen: len32,
            }
        })
        .collect();
    BundleHeader {
        board: board.to_owned(),
        version: version.to_owned(),
        min_version: "0".into(),
        build_time: 0,
        image_size: image.len() as u64,
        image_sha256: sha256(image),
        chunks,
        payload_size: image.len() as u64,
    }
}

/// Chunk, compress, hash and sign a slot image into a bundle file.
pub fn sign_image(
    image: &[u8],
    release: &Release,
    key: &ring::signature::Ed25519KeyPair,
    output: &Path,
) -> Result<BundleReport> {
    sign_image_with(image, release, key, output, CDC_AVG)
}

/// `sign_image` with another average chunk size.
pub fn sign_image_with(
    image: &[u8],
    release: &Release,
    key: &ring::signature::Ed25519KeyPair,
    output: &Path,
    avg: u32,
) -> Result<BundleReport> {
    let (header, payload) = chunk_image(image, release, avg);
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
        header_size: signed.len() as u64 + 64,
        sha256: crate::bundle::hex(&file_sha256(output)?),
    })
}

pub fn sha256(data: &[u8]) -> [u8; 32] {
    let d = ring::digest::digest(&ring::digest::SHA256, data);
    let mut out = [0u8; 32];
    out.copy_from_slice(d.as_ref());
    out
}

/// Drop the all-zero tail of a slot image, in whole blocks: free FAT space
/// need not be written (stale data there is never read), so neither sent
/// nor written to the card.
pub fn trim(image: &[u8], chunk: usize) -> &[u8] {
    match image.iter().rposition(|&b| b != 0) {
        None => &[],
        Some(last) => &image[..((last / chunk + 1) * chunk).min(image.len())],
    }
}

/// A bundle file read back on the host (no signature check: the device does
/// that; the CLI only needs the chunk list).
pub struct BundleFile {
    pub path: PathBuf,
    pub header: BundleHeader,
    /// Preamble, header and signature: the artifact a delta upgrade uploads.
    pub signed: Vec<u8>,
    pub payload_at: u64,
    pub size: u64,
}

impl BundleFile {
    pub fn open(path: &Path) -> Result<BundleFile> {
        let bytes = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
        let signed_len = signed_part_len(&bytes)
            .with_context(|| format!("{} is not a bundle of this format", path.display()))?;
        let end = signed_len + SIGNATURE_LEN;
        let (Some(body), Some(signed)) = (bytes.get(PREAMBLE_LEN..signed_len), bytes.get(..end))
        else {
            anyhow::bail!("{}: truncated header", path.display());
        };
        let header: BundleHeader =
            postcard::from_bytes(body).with_context(|| format!("{}: header", path.display()))?;
        header.validate()?;
        if bytes.len() as u64 != end as u64 + header.payload_size {
            anyhow::bail!(
                "{} is truncated or padded: its payload is not as long as the header says",
                path.display()
            );
        }
        Ok(BundleFile {
            path: path.to_path_buf(),
            signed: signed.to_vec(),
            payload_at: end as u64,
            size: bytes.len() as u64,
            header,
        })
    }

    /// The slot image the bundle carries, each chunk checked (for tools and
    /// benchmarks: `outpost bundle extract`).
    pub fn image(&self) -> Result<Vec<u8>> {
        use std::io::Read as _;
        let bytes = std::fs::read(&self.path)?;
        let mut image = Vec::with_capacity(usize::try_from(self.header.image_size)?);
        for (i, (c, (_, at))) in self
            .header
            .chunks
            .iter()
            .zip(self.header.offsets())
            .enumerate()
        {
            let start = usize::try_from(self.payload_at + at)?;
            let packed = bytes
                .get(start..start + c.clen as usize)
                .context("payload shorter than its header")?;
            let before = image.len();
            if c.stored() {
                image.extend_from_slice(packed);
            } else {
                flate2::read::DeflateDecoder::new(packed)
                    .take(u64::from(c.len))
                    .read_to_end(&mut image)?;
            }
            if image.get(before..).map(sha256) != Some(c.sha256) {
                anyhow::bail!("{}: chunk {i} does not match its hash", self.path.display());
            }
        }
        Ok(image)
    }

    /// SHA-256 of the signed part: the name of the manifest artifact.
    pub fn manifest_sha256(&self) -> [u8; 32] {
        sha256(&self.signed)
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
