//! The clock file on DATA: the last known time, so a board without an RTC
//! starts where it stopped rather than in 1970. One line, Unix seconds.

use std::path::Path;
use std::time::Duration;

/// Where the clock file lives, relative to DATA.
pub const CLOCK_FILE: &str = "state/clock";
/// A Unix time in decimal is at most 20 digits; anything longer is not ours.
const MAX_CLOCK_FILE_BYTES: u64 = 32;
/// 2100-01-01: a saved time later than this is corruption, not a clock. Left
/// in, it would pin the clock in the future (restore never goes backwards).
const LATEST_PLAUSIBLE_SECS: u64 = 4_102_444_800;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("reading {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("{path} is larger than {MAX_CLOCK_FILE_BYTES} bytes: not a clock file")]
    TooLarge { path: String },
    #[error("{path} does not hold a Unix time (`{text}`)")]
    Garbage { path: String, text: String },
    #[error("{path} holds {secs}, after 2100: ignored")]
    Implausible { path: String, secs: u64 },
    #[error("writing {path}: {source}")]
    Write {
        path: String,
        source: std::io::Error,
    },
}

/// The saved time, `Ok(None)` when there is no clock file yet.
pub fn load(data: &Path) -> Result<Option<Duration>, StoreError> {
    use std::io::Read;
    let path = data.join(CLOCK_FILE);
    let shown = || path.display().to_string();
    let file = match std::fs::File::open(&path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(source) => {
            return Err(StoreError::Read {
                path: shown(),
                source,
            })
        }
    };
    let mut bytes = Vec::new();
    file.take(MAX_CLOCK_FILE_BYTES + 1)
        .read_to_end(&mut bytes)
        .map_err(|source| StoreError::Read {
            path: shown(),
            source,
        })?;
    if bytes.len() as u64 > MAX_CLOCK_FILE_BYTES {
        return Err(StoreError::TooLarge { path: shown() });
    }
    let text = String::from_utf8_lossy(&bytes);
    let secs: u64 = text.trim().parse().map_err(|_| StoreError::Garbage {
        path: shown(),
        text: text.escape_debug().to_string(),
    })?;
    if secs > LATEST_PLAUSIBLE_SECS {
        return Err(StoreError::Implausible {
            path: shown(),
            secs,
        });
    }
    Ok(Some(Duration::from_secs(secs)))
}

/// Save `now` (temporary file, fsync, rename: a power cut leaves the old
/// file or the new one).
pub fn save(data: &Path, now: Duration) -> Result<(), StoreError> {
    let path = data.join(CLOCK_FILE);
    crate::device::durable::write_durably(&path, format!("{}\n", now.as_secs()).as_bytes()).map_err(
        |source| StoreError::Write {
            path: path.display().to_string(),
            source,
        },
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn garbage_oversized_and_implausible_files_are_errors() {
        let dir = tempfile::tempdir().unwrap();
        assert!(load(dir.path()).unwrap().is_none());
        let path = dir.path().join(CLOCK_FILE);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();

        std::fs::write(&path, "yesterday\n").unwrap();
        let e = load(dir.path()).unwrap_err();
        assert!(matches!(e, StoreError::Garbage { .. }), "{e}");
        assert!(e.to_string().contains("does not hold a Unix time"), "{e}");

        std::fs::write(&path, "1".repeat(10_000)).unwrap();
        assert!(matches!(load(dir.path()), Err(StoreError::TooLarge { .. })));

        std::fs::write(&path, "99999999999\n").unwrap();
        assert!(matches!(
            load(dir.path()),
            Err(StoreError::Implausible { .. })
        ));

        std::fs::write(&path, [0xff, 0xfe, b'1']).unwrap();
        assert!(matches!(load(dir.path()), Err(StoreError::Garbage { .. })));
    }

    #[test]
    fn save_then_load_round_trips_to_the_second() {
        let dir = tempfile::tempdir().unwrap();
        save(dir.path(), Duration::from_millis(1_700_000_000_999)).unwrap();
        assert_eq!(
            load(dir.path()).unwrap(),
            Some(Duration::from_secs(1_700_000_000))
        );
        assert!(!dir.path().join("state/clock.tmp").exists());
    }
}
