//! Host mode: the two copies as files in a directory (same names as on
//! BOOT). A write replaces the older copy whole or not at all
//! (`device::durable`).

use std::io::Read as _;
use std::path::{Path, PathBuf};

use super::{Backend, SlotsError};
use crate::bootstate::{initial_copies, BootState, CopyId, STATE_SIZE};
use crate::device::durable::write_durably;

pub struct FileBackend {
    dir: PathBuf,
}

impl FileBackend {
    pub fn new(dir: &Path) -> Self {
        Self {
            dir: dir.to_owned(),
        }
    }

    /// A directory holding a fresh card's copies (as the image builder writes
    /// them); existing copies are left alone.
    pub fn create(dir: &Path) -> Result<Self, SlotsError> {
        std::fs::create_dir_all(dir).map_err(|e| SlotsError::io(dir, e))?;
        let backend = Self::new(dir);
        let copies = initial_copies(&BootState::initial()).map_err(SlotsError::Env)?;
        for (id, blob) in CopyId::BOTH.into_iter().zip(copies) {
            if !backend.path(id).exists() {
                backend.write_copy(id, &blob)?;
            }
        }
        Ok(backend)
    }

    fn path(&self, copy: CopyId) -> PathBuf {
        self.dir.join(copy.file())
    }
}

impl Backend for FileBackend {
    fn read_copy(&self, copy: CopyId) -> Result<Vec<u8>, SlotsError> {
        let path = self.path(copy);
        let file = std::fs::File::open(&path).map_err(|e| SlotsError::io(&path, e))?;
        let mut out = Vec::with_capacity(STATE_SIZE);
        // One byte more than a copy, so an oversized file shows (and fails its check).
        file.take(STATE_SIZE as u64 + 1)
            .read_to_end(&mut out)
            .map_err(|e| SlotsError::io(&path, e))?;
        Ok(out)
    }

    fn write_copy(&self, copy: CopyId, blob: &[u8]) -> Result<(), SlotsError> {
        if blob.len() != STATE_SIZE {
            return Err(SlotsError::Size(blob.len()));
        }
        let path = self.path(copy);
        write_durably(&path, blob).map_err(|e| SlotsError::io(&path, e))
    }

    fn describe(&self) -> String {
        format!("boot-state files in {}", self.dir.display())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn missing_and_oversized_files() {
        let dir = tempfile::tempdir().unwrap();
        let b = FileBackend::new(dir.path());
        assert!(matches!(
            b.read_copy(CopyId::First),
            Err(SlotsError::Io { .. })
        ));
        std::fs::write(dir.path().join("state.env"), vec![0u8; STATE_SIZE + 100]).unwrap();
        assert_eq!(b.read_copy(CopyId::First).unwrap().len(), STATE_SIZE + 1);
        assert!(matches!(
            b.write_copy(CopyId::First, b"x"),
            Err(SlotsError::Size(1))
        ));
    }

    #[test]
    fn create_writes_a_fresh_card_once() {
        let dir = tempfile::tempdir().unwrap();
        let b = FileBackend::create(&dir.path().join("boot")).unwrap();
        let first = b.read_copy(CopyId::First).unwrap();
        let copies = initial_copies(&BootState::initial()).unwrap();
        assert_eq!(first, copies[0]);
        b.write_copy(CopyId::First, &vec![1u8; STATE_SIZE]).unwrap();
        FileBackend::create(&dir.path().join("boot")).unwrap();
        assert_eq!(b.read_copy(CopyId::First).unwrap(), vec![1u8; STATE_SIZE]);
        assert!(!dir.path().join("boot/.state.env.tmp").exists());
    }
}
