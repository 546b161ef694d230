//! A cpio "newc" archive writer, the format the kernel unpacks an initramfs
//! from. Entries are kept sorted by path (parents before children) and every
//! header carries the same owner (root) and mtime, so equal inputs give
//! byte-identical archives.

use std::collections::BTreeMap;

use anyhow::{bail, Result};

const S_IFDIR: u32 = 0o040_000;
const S_IFREG: u32 = 0o100_000;
const S_IFCHR: u32 = 0o020_000;
const S_IFLNK: u32 = 0o120_000;

#[derive(Debug, Clone)]
enum Node {
    Dir { mode: u32 },
    File { mode: u32, data: Vec<u8> },
    CharDev { mode: u32, major: u32, minor: u32 },
    Symlink { target: Vec<u8> },
}

/// An archive being assembled. Paths are relative (`etc/outpost-release`).
#[derive(Debug, Default)]
pub(crate) struct Archive {
    entries: BTreeMap<String, Node>,
}

impl Archive {
    pub(crate) fn new() -> Self {
        Self::default()
    }

    pub(crate) fn dir(&mut self, path: &str, mode: u32) -> Result<()> {
        self.insert(path, Node::Dir { mode })
    }

    pub(crate) fn file(&mut self, path: &str, mode: u32, data: Vec<u8>) -> Result<()> {
        self.insert(path, Node::File { mode, data })
    }

    pub(crate) fn char_dev(&mut self, path: &str, mode: u32, major: u32, minor: u32) -> Result<()> {
        self.insert(path, Node::CharDev { mode, major, minor })
    }

    /// A symbolic link at `path` to `target` (the link's data is its target).
    pub(crate) fn symlink(&mut self, path: &str, target: &str) -> Result<()> {
        self.insert(
            path,
            Node::Symlink {
                target: target.as_bytes().to_vec(),
            },
        )
    }

    /// Add `path`, creating missing parent directories (0755).
    fn insert(&mut self, path: &str, node: Node) -> Result<()> {
        if path.is_empty()
            || path.starts_with('/')
            || path.ends_with('/')
            || path
                .split('/')
                .any(|c| c.is_empty() || c == "." || c == "..")
        {
            bail!("initramfs path `{path}` is not a clean relative path");
        }
        let mut parent = String::new();
        for part in path
            .split('/')
            .collect::<Vec<_>>()
            .split_last()
            .map_or(&[][..], |(_, p)| p)
        {
            if !parent.is_empty() {
                parent.push('/');
            }
            parent.push_str(part);
            match self.entries.get(&parent) {
                None => {
                    self.entries
                        .insert(parent.clone(), Node::Dir { mode: 0o755 });
                }
                Some(Node::Dir { .. }) => {}
                Some(_) => bail!("initramfs: `{parent}` is a file, cannot hold `{path}`"),
            }
        }
        match (self.entries.get(path), &node) {
            (Some(Node::Dir { .. }), Node::Dir { .. }) | (None, _) => {}
            _ => bail!("initramfs: `{path}` added twice"),
        }
        self.entries.insert(path.to_owned(), node);
        Ok(())
    }

    /// The archive bytes (uncompressed), entries stamped with `mtime`.
    pub(crate) fn finish(&self, mtime: u64) -> Result<Vec<u8>> {
        let mtime = u32::try_from(mtime).unwrap_or(u32::MAX);
        let mut out = Vec::new();
        for (ino, (path, node)) in (1u32..).zip(&self.entries) {
            let (mode, nlink, data, rdev): (u32, u32, &[u8], (u32, u32)) = match node {
                Node::Dir { mode } => (S_IFDIR | mode, 2, &[], (0, 0)),
                Node::File { mode, data } => (S_IFREG | mode, 1, data, (0, 0)),
                Node::CharDev { mode, major, minor } => (S_IFCHR | mode, 1, &[], (*major, *minor)),
                Node::Symlink { target } => (S_IFLNK | 0o777, 1, target, (0, 0)),
            };
            let header = Header {
                ino,
                mode,
                nlink,
                mtime,
                size: len32(data.len())?,
                rdev,
            };
            header.write(&mut out, path)?;
            out.extend_from_slice(data);
            pad4(&mut out);
        }
        Header {
            ino: 0,
            mode: 0,
            nlink: 1,
            mtime: 0,
            size: 0,
            rdev: (0, 0),
        }
        .write(&mut out, "TRAILER!!!")?;
        Ok(out)
    }
}

struct Header {
    ino: u32,
    mode: u32,
    nlink: u32,
    mtime: u32,
    size: u32,
    rdev: (u32, u32),
}

impl Header {
    /// `070701` then 13 fields of 8 hex digits, the NUL-terminated name, and
    /// padding to 4 bytes.
    fn write(&self, out: &mut Vec<u8>, name: &str) -> Result<()> {
        let namesize = len32(name.len() + 1)?;
        let fields = [
            self.ino,
            self.mode,
            0,
            0,
            self.nlink,
            self.mtime,
            self.size,
            0,
            0,
            self.rdev.0,
            self.rdev.1,
            namesize,
            0,
        ];
        out.extend_from_slice(b"070701");
        for f in fields {
            out.extend_from_slice(format!("{f:08X}").as_bytes());
        }
        out.extend_from_slice(name.as_bytes());
        out.push(0);
        pad4(out);
        Ok(())
    }
}

fn len32(n: usize) -> Result<u32> {
    u32::try_from(n)
        .map_err(|_| anyhow::anyhow!("initramfs entry of {n} bytes is too large for cpio"))
}

fn pad4(out: &mut Vec<u8>) {
    while out.len() % 4 != 0 {
        out.push(0);
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;
    use std::io::Write;
    use std::process::{Command, Stdio};

    fn sample() -> Archive {
        let mut a = Archive::new();
        a.file("init", 0o755, b"#!fake\n".to_vec()).unwrap();
        a.file("lib/modules/6.1/kernel/fs/x.ko", 0o644, vec![1, 2, 3])
            .unwrap();
        a.dir("proc", 0o755).unwrap();
        a.char_dev("dev/console", 0o600, 5, 1).unwrap();
        a.symlink("etc/resolv.conf", "/run/resolv.conf").unwrap();
        a
    }

    #[test]
    fn refuses_bad_paths_and_duplicates() {
        let mut a = sample();
        assert!(a.file("/etc/x", 0o644, vec![]).is_err());
        assert!(a.file("etc/../x", 0o644, vec![]).is_err());
        assert!(a.file("init", 0o644, vec![]).is_err());
        assert!(a.file("init/x", 0o644, vec![]).is_err());
        assert!(a.dir("lib/modules", 0o755).is_ok());
    }

    #[test]
    fn deterministic() {
        assert_eq!(sample().finish(7).unwrap(), sample().finish(7).unwrap());
    }

    /// GNU cpio lists and extracts what we wrote.
    #[test]
    fn cpio_reads_it() {
        let bytes = sample().finish(1_700_000_000).unwrap();
        let mut child = match Command::new("cpio")
            .args(["-t", "-v", "--quiet"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
        {
            Ok(c) => c,
            Err(_) => {
                eprintln!("SKIP: cpio not installed");
                return;
            }
        };
        child.stdin.take().unwrap().write_all(&bytes).unwrap();
        let out = child.wait_with_output().unwrap();
        assert!(out.status.success(), "{out:?}");
        let text = String::from_utf8_lossy(&out.stdout);
        let names: Vec<&str> = text
            .lines()
            .filter_map(|l| l.split_whitespace().last())
            .collect();
        assert_eq!(
            names,
            [
                "dev",
                "dev/console",
                "etc",
                "/run/resolv.conf",
                "init",
                "lib",
                "lib/modules",
                "lib/modules/6.1",
                "lib/modules/6.1/kernel",
                "lib/modules/6.1/kernel/fs",
                "lib/modules/6.1/kernel/fs/x.ko",
                "proc"
            ]
        );
        assert!(
            text.lines()
                .any(|l| l.starts_with("-rwxr-xr-x") && l.ends_with(" init")),
            "{text}"
        );
        assert!(text.lines().any(|l| l.starts_with("crw-------")), "{text}");
        assert!(
            text.lines().any(|l| l.starts_with("lrwxrwxrwx")
                && l.ends_with("etc/resolv.conf -> /run/resolv.conf")),
            "{text}"
        );
    }
}
