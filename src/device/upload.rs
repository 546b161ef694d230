//! Offset-resumable uploads into DATA, keyed by the SHA-256 of the whole
//! artifact (the rule of Zephyr's SMP image upload).
//!
//! `<data>/staging/<hex>.part` grows by appends; `<hex>` is the finished,
//! verified artifact. A chunk is taken only at exactly the current offset;
//! any other offset is answered with the current state, so a client that lost
//! track (a cut link, a second connection) re-syncs without a byte written
//! twice. The table of active uploads lives in memory and is shared by every
//! connection; the part files on DATA are the truth: after a reboot, a new
//! `UploadBegin` re-reads the part to rebuild the hash and carries on from its
//! length.
//!
//! The file I/O is small synchronous writes (one chunk, at most `MAX_CHUNK`)
//! done in the request handler.

use std::collections::HashMap;
use std::fs::{File, OpenOptions};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

use ring::digest;

use crate::bundle::hex;
use crate::wire::{UploadState, WireError, MAX_CHUNK};

/// Largest artifact accepted. An OS bundle (kernel + initrd) is ~40 MiB; 512
/// MiB leaves room for application images while one upload cannot fill a
/// small SD card's DATA, and caps the re-hash after a reboot.
pub const MAX_ARTIFACT_BYTES: u64 = 512 << 20;
/// Uploads in progress at once: each holds an open file and a hash state, and
/// a board has few operators. A further `UploadBegin` is answered `Busy`.
pub const MAX_UPLOADS: usize = 4;
/// fsync the part after this many appended bytes. Not per chunk: an fsync
/// costs tens of ms on an SD card. Between syncs ext4 (data=ordered) keeps a
/// length whose bytes are on disk, so a power cut loses at most the unsynced
/// tail (plus the journal's commit interval) and the client resumes there.
const SYNC_EVERY: u64 = 4 << 20;
/// Free space left on DATA after an upload's reservation, so logs and config
/// writes keep working while a large artifact arrives.
const DATA_RESERVE: u64 = 16 << 20;
/// An upload untouched for this long may give its slot to a new one (its
/// part stays on DATA and can be resumed later). Matches the API's idle timeout.
const STALE_AFTER: Duration = Duration::from_secs(600);
/// Read size when re-hashing a part: large enough for SD-card throughput,
/// small enough for a 64 MiB board.
const REHASH_BUF: usize = 64 << 10;
/// Directory on DATA that holds parts and finished artifacts.
pub const STAGING_DIR: &str = "staging";
/// A part or artifact in staging untouched this long is removed when the
/// next upload begins: an abandoned rollout must not fill a small card's
/// DATA for good. (Installs remove what they used at once.) A week covers
/// a board that is offline over a long weekend mid-upload.
pub const STAGED_MAX_AGE: Duration = Duration::from_secs(7 * 24 * 3600);

#[derive(Debug, thiserror::Error)]
pub enum UploadError {
    #[error("an artifact of 0 bytes cannot be uploaded")]
    Empty,
    #[error("artifact of {size} bytes is larger than the limit of {MAX_ARTIFACT_BYTES} bytes")]
    TooLarge { size: u64 },
    #[error("DATA has {free} bytes free; this upload needs {needed}")]
    NoSpace { free: u64, needed: u64 },
    #[error("{MAX_UPLOADS} uploads are already in progress")]
    Busy,
    #[error("no upload with handle {0} (send UploadBegin again)")]
    UnknownHandle(u16),
    #[error("chunk of {0} bytes is larger than the limit of {MAX_CHUNK} bytes")]
    ChunkTooLarge(usize),
    #[error("chunk at {offset} of {len} bytes runs past the artifact's {size} bytes")]
    PastEnd { offset: u64, len: usize, size: u64 },
    #[error("artifact {sha256} is {known} bytes, not {asked}")]
    SizeMismatch {
        sha256: String,
        known: u64,
        asked: u64,
    },
    #[error("sha256 mismatch: received {got}, expected {want}; the part was deleted")]
    HashMismatch { got: String, want: String },
    #[error("{what} {}: {source}", path.display())]
    Io {
        what: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

impl From<UploadError> for WireError {
    fn from(e: UploadError) -> Self {
        match e {
            UploadError::Busy => WireError::Busy,
            UploadError::NoSpace { .. } | UploadError::Io { .. } => {
                WireError::Device(e.to_string())
            }
            _ => WireError::Invalid(e.to_string()),
        }
    }
}

/// How much space is free for us on the filesystem holding a path (statvfs on
/// a board; a fake in tests).
pub type FreeSpace = dyn Fn(&Path) -> std::io::Result<u64> + Send + Sync;

/// The uploads of this device, shared by all connections.
pub struct Uploads {
    dir: PathBuf,
    free_space: Box<FreeSpace>,
    table: Mutex<Table>,
}

#[derive(Default)]
struct Table {
    active: HashMap<u16, Active>,
    /// Handles are handed out in turn (never 0), so a stale handle from an
    /// old connection rarely names a newer upload.
    last_handle: u16,
}

struct Active {
    sha256: [u8; 32],
    size: u64,
    offset: u64,
    file: File,
    path: PathBuf,
    hash: digest::Context,
    unsynced: u64,
    last_used: Instant,
}

impl Uploads {
    /// Uploads staged in `<data_dir>/staging`, created on first use (DATA may
    /// be mounted after this is built).
    pub fn new(data_dir: &Path) -> Self {
        Self::with_free_space(data_dir, Box::new(statvfs_free))
    }

    /// As `new`, with another source of the free space (tests).
    pub fn with_free_space(data_dir: &Path, free_space: Box<FreeSpace>) -> Self {
        Self {
            dir: data_dir.join(STAGING_DIR),
            free_space,
            table: Mutex::new(Table::default()),
        }
    }

    /// The finished artifact with this SHA-256, if it was uploaded.
    pub fn artifact(&self, sha256: &[u8; 32]) -> Option<PathBuf> {
        let path = self.final_path(sha256);
        path.is_file().then_some(path)
    }

    /// Start an upload, or find the one already running or stored for this
    /// SHA-256; the answer says where to continue.
    pub fn begin(&self, sha256: &[u8; 32], size: u64) -> Result<UploadState, UploadError> {
        self.begin_at(sha256, size, Instant::now())
    }

    /// Append one chunk if it is at the current offset; otherwise answer the
    /// current state so the client re-syncs.
    pub fn chunk(&self, handle: u16, offset: u64, data: &[u8]) -> Result<UploadState, UploadError> {
        self.chunk_at(handle, offset, data, Instant::now())
    }

    fn begin_at(
        &self,
        sha256: &[u8; 32],
        size: u64,
        now: Instant,
    ) -> Result<UploadState, UploadError> {
        if size == 0 {
            return Err(UploadError::Empty);
        }
        if size > MAX_ARTIFACT_BYTES {
            return Err(UploadError::TooLarge { size });
        }
        let mut table = self.lock();
        self.sweep(&table, std::time::SystemTime::now());
        if let Some((&handle, upload)) = table.active.iter_mut().find(|(_, u)| u.sha256 == *sha256)
        {
            check_size(sha256, upload.size, size)?;
            upload.last_used = now;
            return Ok(upload.state(handle));
        }
        if let Some(done) = self.finished(sha256, size)? {
            return Ok(done);
        }
        table.make_room(now)?;
        let reserved = table.active.values().map(|u| u.size - u.offset).sum();
        let upload = self.open_part(sha256, size, reserved, now)?;
        let handle = table.next_handle();
        if upload.offset == size {
            // Every byte arrived before a restart, but the check did not run.
            return finish(handle, upload);
        }
        let state = upload.state(handle);
        tracing::info!(
            "upload {}: {} of {size} bytes here, handle {handle}",
            hex(sha256),
            upload.offset
        );
        table.active.insert(handle, upload);
        Ok(state)
    }

    fn chunk_at(
        &self,
        handle: u16,
        offset: u64,
        data: &[u8],
        now: Instant,
    ) -> Result<UploadState, UploadError> {
        if data.len() > MAX_CHUNK {
            return Err(UploadError::ChunkTooLarge(data.len()));
        }
        let mut table = self.lock();
        let upload = table
            .active
            .get_mut(&handle)
            .ok_or(UploadError::UnknownHandle(handle))?;
        upload.last_used = now;
        if offset != upload.offset || data.is_empty() {
            return Ok(upload.state(handle));
        }
        let end = offset.saturating_add(data.len() as u64);
        if end > upload.size {
            return Err(UploadError::PastEnd {
                offset,
                len: data.len(),
                size: upload.size,
            });
        }
        if let Err(e) = upload.append(data) {
            // The part may hold some of the chunk now; forget the in-memory
            // state and let the next `UploadBegin` re-read the part.
            table.active.remove(&handle);
            return Err(e);
        }
        if end < upload.size {
            return Ok(upload.state(handle));
        }
        match table.active.remove(&handle) {
            Some(upload) => finish(handle, upload),
            None => Err(UploadError::UnknownHandle(handle)),
        }
    }

    /// The table; if a handler panicked while holding it, start from an
    /// empty table: the parts on DATA are the truth and are re-read on the
    /// next `UploadBegin`.
    fn lock(&self) -> MutexGuard<'_, Table> {
        self.table.lock().unwrap_or_else(|poisoned| {
            tracing::error!("upload table poisoned by a panic; reloading from DATA");
            let mut table = poisoned.into_inner();
            table.active.clear();
            self.table.clear_poison();
            table
        })
    }

    /// The answer for an artifact already stored under this SHA-256.
    fn finished(&self, sha256: &[u8; 32], size: u64) -> Result<Option<UploadState>, UploadError> {
        let path = self.final_path(sha256);
        match std::fs::metadata(&path) {
            Ok(meta) => {
                check_size(sha256, meta.len(), size)?;
                Ok(Some(UploadState {
                    handle: 0,
                    offset: size,
                    size,
                    complete: true,
                }))
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(source) => Err(io_error("reading", &path, source)),
        }
    }

    /// Open (or create) the part, check the space it still needs, and
    /// rebuild its hash state from the bytes it already holds.
    fn open_part(
        &self,
        sha256: &[u8; 32],
        size: u64,
        reserved: u64,
        now: Instant,
    ) -> Result<Active, UploadError> {
        std::fs::create_dir_all(&self.dir).map_err(|e| io_error("creating", &self.dir, e))?;
        let path = self.dir.join(format!("{}.part", hex(sha256)));
        let mut have = match std::fs::metadata(&path) {
            Ok(meta) => meta.len(),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => 0,
            Err(e) => return Err(io_error("reading", &path, e)),
        };
        if have > size {
            // Longer than the artifact: not a prefix of it. Start over.
            tracing::warn!(
                "upload {}: part longer than {size} bytes; discarded",
                hex(sha256)
            );
            std::fs::remove_file(&path).map_err(|e| io_error("removing", &path, e))?;
            have = 0;
        }
        let needed = (size - have)
            .saturating_add(reserved)
            .saturating_add(DATA_RESERVE);
        let free = (self.free_space)(&self.dir).map_err(|e| io_error("statvfs", &self.dir, e))?;
        if free < needed {
            return Err(UploadError::NoSpace { free, needed });
        }
        let mut file = OpenOptions::new()
            .read(true)
            .append(true)
            .create(true)
            .open(&path)
            .map_err(|e| io_error("opening", &path, e))?;
        let (hash, offset) = rehash(&mut file, size).map_err(|e| io_error("reading", &path, e))?;
        Ok(Active {
            sha256: *sha256,
            size,
            offset,
            file,
            path,
            hash,
            unsynced: 0,
            last_used: now,
        })
    }

    fn final_path(&self, sha256: &[u8; 32]) -> PathBuf {
        self.dir.join(hex(sha256))
    }

    /// Remove staged files (parts and artifacts) last modified more than
    /// `STAGED_MAX_AGE` before `now`, except those of active uploads.
    /// Returns how many went.
    fn sweep(&self, table: &Table, now: std::time::SystemTime) -> usize {
        let Ok(dir) = std::fs::read_dir(&self.dir) else {
            return 0;
        };
        let active: Vec<&Path> = table.active.values().map(|u| u.path.as_path()).collect();
        let mut removed = 0;
        for entry in dir.flatten() {
            let path = entry.path();
            let old = entry
                .metadata()
                .and_then(|m| m.modified())
                .ok()
                .and_then(|t| now.duration_since(t).ok())
                .is_some_and(|age| age > STAGED_MAX_AGE);
            if !old || active.contains(&path.as_path()) || !entry.path().is_file() {
                continue;
            }
            match std::fs::remove_file(&path) {
                Ok(()) => {
                    removed += 1;
                    tracing::info!("upload: removed stale {}", path.display());
                }
                Err(e) => tracing::warn!("upload: removing stale {}: {e}", path.display()),
            }
        }
        removed
    }

    /// An install is done with this staged file.
    pub fn discard(path: &Path) {
        match std::fs::remove_file(path) {
            Ok(()) => tracing::info!("upload: removed {} (installed)", path.display()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => tracing::warn!("upload: removing {}: {e}", path.display()),
        }
    }
}

impl Table {
    /// Make room for one more upload: evict the longest-idle one if it is
    /// stale, else refuse.
    fn make_room(&mut self, now: Instant) -> Result<(), UploadError> {
        if self.active.len() < MAX_UPLOADS {
            return Ok(());
        }
        let stalest = self
            .active
            .iter()
            .filter(|(_, u)| now.saturating_duration_since(u.last_used) >= STALE_AFTER)
            .min_by_key(|(_, u)| u.last_used)
            .map(|(&h, _)| h);
        match stalest.and_then(|h| self.active.remove(&h)) {
            Some(old) => {
                tracing::info!(
                    "upload {}: idle, slot given to a new upload",
                    hex(&old.sha256)
                );
                Ok(())
            }
            None => Err(UploadError::Busy),
        }
    }

    fn next_handle(&mut self) -> u16 {
        loop {
            self.last_handle = self.last_handle.wrapping_add(1).max(1);
            if !self.active.contains_key(&self.last_handle) {
                return self.last_handle;
            }
        }
    }
}

impl Active {
    fn state(&self, handle: u16) -> UploadState {
        UploadState {
            handle,
            offset: self.offset,
            size: self.size,
            complete: false,
        }
    }

    fn append(&mut self, data: &[u8]) -> Result<(), UploadError> {
        self.file
            .write_all(data)
            .map_err(|e| io_error("writing", &self.path, e))?;
        self.hash.update(data);
        self.offset += data.len() as u64;
        self.unsynced += data.len() as u64;
        if self.unsynced >= SYNC_EVERY {
            self.file
                .sync_data()
                .map_err(|e| io_error("syncing", &self.path, e))?;
            self.unsynced = 0;
        }
        Ok(())
    }
}

/// All bytes are in: compare the hash, then publish the artifact (fsync the
/// file and the directory, so the rename survives a power cut) or delete it.
fn finish(handle: u16, upload: Active) -> Result<UploadState, UploadError> {
    let Active {
        sha256,
        size,
        file,
        path,
        hash,
        ..
    } = upload;
    let got = hash.finish();
    if got.as_ref() != sha256 {
        drop(file);
        let _ = std::fs::remove_file(&path);
        tracing::warn!("upload {}: sha256 mismatch; part deleted", hex(&sha256));
        return Err(UploadError::HashMismatch {
            got: hex(got.as_ref()),
            want: hex(&sha256),
        });
    }
    file.sync_all().map_err(|e| io_error("syncing", &path, e))?;
    drop(file);
    let done = path.with_extension("");
    std::fs::rename(&path, &done).map_err(|e| io_error("renaming", &path, e))?;
    if let Some(dir) = done.parent() {
        File::open(dir)
            .and_then(|d| d.sync_all())
            .map_err(|e| io_error("syncing", dir, e))?;
    }
    tracing::info!("upload {}: complete, {size} bytes", hex(&sha256));
    Ok(UploadState {
        handle,
        offset: size,
        size,
        complete: true,
    })
}

/// Hash the bytes already in a part (at most `size`); returns the running
/// hash and the number of bytes it covers.
fn rehash(file: &mut File, size: u64) -> std::io::Result<(digest::Context, u64)> {
    let mut hash = digest::Context::new(&digest::SHA256);
    let mut buf = vec![0u8; REHASH_BUF];
    let mut done = 0u64;
    let mut reader = file.take(size);
    loop {
        let n = match reader.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        let read = buf.get(..n).unwrap_or_default();
        hash.update(read);
        done += n as u64;
    }
    Ok((hash, done))
}

fn check_size(sha256: &[u8; 32], known: u64, asked: u64) -> Result<(), UploadError> {
    if known == asked {
        return Ok(());
    }
    Err(UploadError::SizeMismatch {
        sha256: hex(sha256),
        known,
        asked,
    })
}

fn statvfs_free(path: &Path) -> std::io::Result<u64> {
    let st = rustix::fs::statvfs(path)?;
    Ok(st.f_bavail.saturating_mul(st.f_frsize))
}

fn io_error(what: &'static str, path: &Path, source: std::io::Error) -> UploadError {
    UploadError::Io {
        what,
        path: path.to_path_buf(),
        source,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sha(data: &[u8]) -> [u8; 32] {
        let mut out = [0u8; 32];
        out.copy_from_slice(digest::digest(&digest::SHA256, data).as_ref());
        out
    }

    fn plenty(_: &Path) -> std::io::Result<u64> {
        Ok(u64::MAX)
    }

    fn store(dir: &Path) -> Uploads {
        Uploads::with_free_space(dir, Box::new(plenty))
    }

    fn artifact(len: usize, seed: u8) -> Vec<u8> {
        (0..len)
            .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed))
            .collect()
    }

    /// Send `data[from..to]` in `MAX_CHUNK` pieces; the last answer.
    fn send(up: &Uploads, handle: u16, data: &[u8], from: usize, to: usize) -> UploadState {
        let mut last = None;
        let mut at = from;
        while at < to {
            let end = (at + MAX_CHUNK).min(to);
            last = Some(up.chunk(handle, at as u64, &data[at..end]).unwrap());
            at = end;
        }
        last.unwrap()
    }

    fn part_len(dir: &Path, sha256: &[u8; 32]) -> u64 {
        std::fs::metadata(dir.join(STAGING_DIR).join(format!("{}.part", hex(sha256))))
            .map(|m| m.len())
            .unwrap_or(0)
    }

    #[test]
    fn stale_staged_files_go_when_an_upload_begins_active_ones_stay() {
        let tmp = tempfile::tempdir().unwrap();
        let up = store(tmp.path());
        let data = artifact(3 * MAX_CHUNK, 1);
        let state = up.begin(&sha(&data), data.len() as u64).unwrap();
        send(&up, state.handle, &data, 0, MAX_CHUNK);
        let staging = tmp.path().join(STAGING_DIR);
        let old = std::time::SystemTime::now() - STAGED_MAX_AGE - Duration::from_secs(60);
        let age = |name: &str, when| {
            std::fs::write(staging.join(name), b"x").unwrap();
            File::options()
                .write(true)
                .open(staging.join(name))
                .unwrap()
                .set_modified(when)
                .unwrap();
        };
        age("aa.part", old);
        age("bb", old);
        age("cc.part", std::time::SystemTime::now());
        // The active upload's part is old too, but in use.
        let active = staging.join(format!("{}.part", hex(&sha(&data))));
        File::options()
            .write(true)
            .open(&active)
            .unwrap()
            .set_modified(old)
            .unwrap();
        let other = artifact(10, 2);
        up.begin(&sha(&other), 10).unwrap();
        let mut left: Vec<String> = std::fs::read_dir(&staging)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        left.sort();
        let mut want = vec![
            "cc.part".to_owned(),
            format!("{}.part", hex(&sha(&data))),
            format!("{}.part", hex(&sha(&other))),
        ];
        want.sort();
        assert_eq!(left, want);
        assert_eq!(part_len(tmp.path(), &sha(&data)), MAX_CHUNK as u64);
    }

    #[test]
    fn size_zero_and_too_large_are_refused() {
        let tmp = tempfile::tempdir().unwrap();
        let up = store(tmp.path());
        assert!(matches!(up.begin(&[1; 32], 0), Err(UploadError::Empty)));
        assert!(matches!(
            up.begin(&[1; 32], MAX_ARTIFACT_BYTES + 1),
            Err(UploadError::TooLarge { .. })
        ));
        assert!(!tmp.path().join(STAGING_DIR).join(hex(&[1; 32])).exists());
    }

    #[test]
    fn not_enough_space_on_data_is_refused() {
        let tmp = tempfile::tempdir().unwrap();
        let up = Uploads::with_free_space(tmp.path(), Box::new(|_| Ok(DATA_RESERVE + 100)));
        assert!(up.begin(&[2; 32], 100).is_ok());
        let err = up.begin(&[3; 32], 101).unwrap_err();
        assert!(matches!(err, UploadError::NoSpace { .. }), "{err}");
        assert!(matches!(WireError::from(err), WireError::Device(_)));
    }

    #[test]
    fn unknown_handle_and_oversized_chunk_are_refused() {
        let tmp = tempfile::tempdir().unwrap();
        let up = store(tmp.path());
        let err = up.chunk(9, 0, b"x").unwrap_err();
        assert!(matches!(err, UploadError::UnknownHandle(9)));
        assert!(matches!(WireError::from(err), WireError::Invalid(_)));
        let st = up.begin(&[4; 32], 100_000).unwrap();
        let big = vec![0u8; MAX_CHUNK + 1];
        assert!(matches!(
            up.chunk(st.handle, 0, &big),
            Err(UploadError::ChunkTooLarge(_))
        ));
        assert!(matches!(
            up.chunk(st.handle, 0, &[0u8; 100]),
            Ok(UploadState { offset: 100, .. })
        ));
    }

    #[test]
    fn chunk_past_the_end_is_refused_and_writes_nothing() {
        let tmp = tempfile::tempdir().unwrap();
        let up = store(tmp.path());
        let st = up.begin(&[5; 32], 10).unwrap();
        assert!(matches!(
            up.chunk(st.handle, 0, &[0u8; 11]),
            Err(UploadError::PastEnd { .. })
        ));
        assert_eq!(part_len(tmp.path(), &[5; 32]), 0);
    }

    #[test]
    fn a_wrong_offset_answers_the_current_state_and_writes_nothing() {
        let tmp = tempfile::tempdir().unwrap();
        let up = store(tmp.path());
        let data = artifact(3 * MAX_CHUNK, 1);
        let st = up.begin(&sha(&data), data.len() as u64).unwrap();
        assert_eq!((st.offset, st.complete), (0, false));
        let h = st.handle;
        assert_eq!(
            up.chunk(h, 0, &data[..MAX_CHUNK]).unwrap().offset,
            MAX_CHUNK as u64
        );
        // Replayed, ahead, behind: all answered with offset 8192, nothing written.
        for off in [0, MAX_CHUNK as u64 + 1, 2 * MAX_CHUNK as u64, 1] {
            let st = up.chunk(h, off, b"garbage").unwrap();
            assert_eq!((st.offset, st.complete), (MAX_CHUNK as u64, false));
        }
        assert_eq!(part_len(tmp.path(), &sha(&data)), MAX_CHUNK as u64);
        let st = send(&up, h, &data, MAX_CHUNK, data.len());
        assert!(st.complete);
    }

    #[test]
    fn hash_mismatch_deletes_the_part() {
        let tmp = tempfile::tempdir().unwrap();
        let up = store(tmp.path());
        let data = artifact(MAX_CHUNK + 10, 2);
        let claimed = [0xee; 32];
        let st = up.begin(&claimed, data.len() as u64).unwrap();
        send(&up, st.handle, &data, 0, MAX_CHUNK);
        let err = up
            .chunk(st.handle, MAX_CHUNK as u64, &data[MAX_CHUNK..])
            .unwrap_err();
        assert!(matches!(err, UploadError::HashMismatch { .. }), "{err}");
        assert!(WireError::from(err).to_string().contains("sha256 mismatch"));
        assert_eq!(part_len(tmp.path(), &claimed), 0);
        assert!(up.artifact(&claimed).is_none());
        // The handle is gone; a new begin starts from 0.
        assert!(up.chunk(st.handle, 0, b"x").is_err());
        assert_eq!(up.begin(&claimed, data.len() as u64).unwrap().offset, 0);
    }

    #[test]
    fn a_complete_upload_is_published_and_found_again() {
        let tmp = tempfile::tempdir().unwrap();
        let up = store(tmp.path());
        let data = artifact(2 * MAX_CHUNK + 5, 3);
        let sum = sha(&data);
        let st = up.begin(&sum, data.len() as u64).unwrap();
        let done = send(&up, st.handle, &data, 0, data.len());
        assert!(done.complete && done.offset == data.len() as u64);
        let path = up.artifact(&sum).unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), data);
        assert_eq!(part_len(tmp.path(), &sum), 0);
        let again = up.begin(&sum, data.len() as u64).unwrap();
        assert!(again.complete && again.offset == data.len() as u64);
        assert!(matches!(
            up.begin(&sum, 7),
            Err(UploadError::SizeMismatch { .. })
        ));
    }

    #[test]
    fn begin_twice_gives_the_same_upload() {
        let tmp = tempfile::tempdir().unwrap();
        let up = store(tmp.path());
        let data = artifact(3 * MAX_CHUNK, 4);
        let sum = sha(&data);
        let a = up.begin(&sum, data.len() as u64).unwrap();
        send(&up, a.handle, &data, 0, MAX_CHUNK);
        let b = up.begin(&sum, data.len() as u64).unwrap();
        assert_eq!((b.handle, b.offset), (a.handle, MAX_CHUNK as u64));
        assert!(matches!(
            up.begin(&sum, 1),
            Err(UploadError::SizeMismatch { .. })
        ));
        assert!(send(&up, b.handle, &data, MAX_CHUNK, data.len()).complete);
    }

    #[test]
    fn resumes_from_the_part_after_the_store_is_recreated() {
        let tmp = tempfile::tempdir().unwrap();
        let data = artifact(5 * MAX_CHUNK + 123, 5);
        let sum = sha(&data);
        let cut = 2 * MAX_CHUNK + 77;
        {
            let up = store(tmp.path());
            let st = up.begin(&sum, data.len() as u64).unwrap();
            send(&up, st.handle, &data, 0, cut);
        } // "reboot": the in-memory table is gone
        let up = store(tmp.path());
        let st = up.begin(&sum, data.len() as u64).unwrap();
        assert_eq!((st.offset, st.complete), (cut as u64, false));
        assert!(send(&up, st.handle, &data, cut, data.len()).complete);
        assert_eq!(std::fs::read(up.artifact(&sum).unwrap()).unwrap(), data);
    }

    #[test]
    fn a_full_part_left_by_a_crash_is_checked_on_begin() {
        let tmp = tempfile::tempdir().unwrap();
        let data = artifact(1000, 6);
        let sum = sha(&data);
        let staging = tmp.path().join(STAGING_DIR);
        std::fs::create_dir_all(&staging).unwrap();
        std::fs::write(staging.join(format!("{}.part", hex(&sum))), &data).unwrap();
        let st = store(tmp.path()).begin(&sum, 1000).unwrap();
        assert!(st.complete);
        // A part longer than the artifact is not a prefix of it: start over.
        let other = [7u8; 32];
        std::fs::write(staging.join(format!("{}.part", hex(&other))), [0u8; 50]).unwrap();
        assert_eq!(store(tmp.path()).begin(&other, 10).unwrap().offset, 0);
        assert_eq!(part_len(tmp.path(), &other), 0);
    }

    #[test]
    fn two_uploads_interleaved() {
        let tmp = tempfile::tempdir().unwrap();
        let up = store(tmp.path());
        let (a, b) = (artifact(4 * MAX_CHUNK + 1, 7), artifact(3 * MAX_CHUNK, 8));
        let ha = up.begin(&sha(&a), a.len() as u64).unwrap().handle;
        let hb = up.begin(&sha(&b), b.len() as u64).unwrap().handle;
        assert_ne!(ha, hb);
        let (mut oa, mut ob) = (0, 0);
        while oa < a.len() || ob < b.len() {
            if oa < a.len() {
                let end = (oa + MAX_CHUNK).min(a.len());
                oa = up.chunk(ha, oa as u64, &a[oa..end]).unwrap().offset as usize;
            }
            if ob < b.len() {
                let end = (ob + MAX_CHUNK).min(b.len());
                ob = up.chunk(hb, ob as u64, &b[ob..end]).unwrap().offset as usize;
            }
        }
        assert_eq!(std::fs::read(up.artifact(&sha(&a)).unwrap()).unwrap(), a);
        assert_eq!(std::fs::read(up.artifact(&sha(&b)).unwrap()).unwrap(), b);
    }

    #[test]
    fn a_fifth_upload_is_busy_until_one_goes_stale() {
        let tmp = tempfile::tempdir().unwrap();
        let up = store(tmp.path());
        let t0 = Instant::now();
        for i in 0..MAX_UPLOADS as u8 {
            up.begin_at(&[i; 32], 10, t0).unwrap();
        }
        let err = up.begin_at(&[99; 32], 10, t0).unwrap_err();
        assert!(matches!(err, UploadError::Busy));
        assert_eq!(WireError::from(err), WireError::Busy);
        // One upload keeps going; the others fall idle.
        let later = t0 + STALE_AFTER;
        let kept = up.begin_at(&[0; 32], 10, later).unwrap();
        let late = later + Duration::from_secs(1);
        let fifth = up.begin_at(&[99; 32], 10, late).unwrap();
        assert!(!fifth.complete && fifth.handle != kept.handle);
        assert_eq!(up.begin_at(&[0; 32], 10, late).unwrap().handle, kept.handle);
    }

    #[test]
    fn a_poisoned_table_is_reloaded_from_data() {
        let tmp = tempfile::tempdir().unwrap();
        let up = std::sync::Arc::new(store(tmp.path()));
        let data = artifact(2 * MAX_CHUNK, 9);
        let sum = sha(&data);
        let st = up.begin(&sum, data.len() as u64).unwrap();
        send(&up, st.handle, &data, 0, MAX_CHUNK);
        let up2 = up.clone();
        let _ = std::thread::spawn(move || {
            let _guard = up2.table.lock();
            panic!("handler bug");
        })
        .join();
        let again = up.begin(&sum, data.len() as u64).unwrap();
        assert_eq!(again.offset, MAX_CHUNK as u64);
        assert!(send(&up, again.handle, &data, MAX_CHUNK, data.len()).complete);
    }
}
