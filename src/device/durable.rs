//! Durable writes on the device: the ONE way PID 1 replaces a file that must
//! survive a power cut whole (boot record, upgrade record, slot versions,
//! host-mode boot-state copies). New persisted files (clock, logs, ...) use
//! [`write_durably`] too, so there is one place to get it right.

use std::ffi::OsString;
use std::io::Write as _;
use std::path::{Path, PathBuf};

/// Replace `path` with `bytes` so that after a power cut it holds the old or
/// the new contents, never a mix: write a temporary file in the same
/// directory (a rename is atomic only within one file system), fsync it,
/// rename it over `path`, then fsync the directory (only that makes the
/// rename itself durable). Creates the directory if it is missing.
pub fn write_durably(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    write_with_mode(path, bytes, 0o666)
}

/// As [`write_durably`], readable by its owner only (0600 from creation:
/// a secret never sits in a world-readable temporary).
pub fn write_private(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    write_with_mode(path, bytes, 0o600)
}

fn write_with_mode(path: &Path, bytes: &[u8], mode: u32) -> std::io::Result<()> {
    use std::os::unix::fs::OpenOptionsExt as _;
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    std::fs::create_dir_all(dir)?;
    let tmp = temp_path(path);
    // A temporary left by a power cut may carry another mode: start afresh.
    let _ = std::fs::remove_file(&tmp);
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(&tmp)?;
    file.write_all(bytes)?;
    file.sync_all()?;
    drop(file);
    std::fs::rename(&tmp, path)?;
    std::fs::File::open(dir)?.sync_all()
}

/// `.NAME.tmp` beside `path`: hidden, and in the same directory.
fn temp_path(path: &Path) -> PathBuf {
    let mut name = OsString::from(".");
    name.push(path.file_name().unwrap_or_default());
    name.push(".tmp");
    path.with_file_name(name)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_blocked_directory_is_an_error_and_the_old_file_stays() {
        let tmp = tempfile::tempdir().unwrap();
        std::fs::write(tmp.path().join("state"), "a file, not a directory").unwrap();
        assert!(write_durably(&tmp.path().join("state/x"), b"new").is_err());
        let old = tmp.path().join("old");
        std::fs::write(&old, "old").unwrap();
        // The temporary name is taken by a directory: the write fails whole.
        std::fs::create_dir(tmp.path().join(".old.tmp")).unwrap();
        assert!(write_durably(&old, b"new").is_err());
        assert_eq!(std::fs::read_to_string(&old).unwrap(), "old");
    }

    #[test]
    fn replaces_whole_creates_the_directory_and_leaves_no_temporary() {
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join("state/last.toml");
        write_durably(&path, b"first, and longer").unwrap();
        write_durably(&path, b"second").unwrap();
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "second");
        let names: Vec<_> = std::fs::read_dir(tmp.path().join("state"))
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, ["last.toml"]);
    }
}
