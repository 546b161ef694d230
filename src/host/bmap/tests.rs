use super::*;
use std::process::Command;

fn sample() -> Bmap {
    Bmap {
        image_size: 10 * 4096 + 100,
        block_size: 4096,
        ranges: vec![
            Range {
                first: 0,
                last: 0,
                sha256: Some("ab".repeat(32)),
            },
            Range {
                first: 3,
                last: 5,
                sha256: Some("cd".repeat(32)),
            },
            Range {
                first: 10,
                last: 10,
                sha256: None,
            },
        ],
    }
}

#[test]
fn renders_and_parses_back() {
    let b = sample();
    let text = b.to_xml();
    assert!(text.contains("<bmap version=\"2.0\">"), "{text}");
    assert!(text.contains("<BlocksCount> 11 </BlocksCount>"), "{text}");
    assert!(
        text.contains("<MappedBlocksCount> 5 </MappedBlocksCount>"),
        "{text}"
    );
    assert!(text.contains(&format!(
        "<Range chksum=\"{}\"> 3-5 </Range>",
        "cd".repeat(32)
    )));
    assert!(text.contains("<Range> 10 </Range>"));
    assert_eq!(parse(text.as_bytes()).unwrap(), b);
    assert_eq!(
        b.mapped_bytes(),
        4096 + 3 * 4096 + 100,
        "last block is short"
    );
    assert_eq!(b.byte_range(&b.ranges[2]), (40960, 100));
}

#[test]
fn malformed_files_are_refused() {
    let good = sample().to_xml();
    // Any edit breaks the file's own checksum.
    let edited = good.replace("> 3-5 <", "> 3-6 <");
    assert_eq!(parse(edited.as_bytes()), Err(BmapError::FileChecksum));
    // Edits that are checked before it, or with the checksum redone.
    let redo = |t: String| {
        let sum = t
            .split("<BmapFileChecksum>")
            .nth(1)
            .unwrap()
            .split("</BmapFileChecksum>")
            .next()
            .unwrap()
            .trim()
            .to_owned();
        let zeroed = t.replacen(&sum, &"0".repeat(64), 1);
        let fresh = crate::bundle::sha256_hex(zeroed.as_bytes());
        zeroed.replacen(&"0".repeat(64), &fresh, 1)
    };
    type Check = fn(&BmapError) -> bool;
    let cases: Vec<(String, Check)> = vec![
        (good.replace("version=\"2.0\"", "version=\"1.4\""), |e| {
            matches!(e, BmapError::Version(_))
        }),
        (good.replace("sha256 </Ch", "sha1 </Ch"), |e| {
            matches!(e, BmapError::ChecksumType(_))
        }),
        (
            redo(good.replace("<BlocksCount> 11", "<BlocksCount> 12")),
            |e| matches!(e, BmapError::BlocksCount(..)),
        ),
        (
            redo(good.replace("<BlockSize> 4096", "<BlockSize> 4000")),
            |e| matches!(e, BmapError::BlockSize(_)),
        ),
        (redo(good.replace("> 3-5 <", "> 5-3 <")), |e| {
            matches!(e, BmapError::Range(_))
        }),
        (redo(good.replace("> 10 <", "> 11 <")), |e| {
            matches!(e, BmapError::Range(_))
        }),
        (redo(good.replace("> 3-5 <", "> 0-5 <")), |e| {
            matches!(e, BmapError::Range(_))
        }),
        (redo(good.replace("> 3-5 <", "> x <")), |e| {
            matches!(e, BmapError::Range(_))
        }),
        (redo(good.replace(&"cd".repeat(32), "cd")), |e| {
            matches!(e, BmapError::RangeChecksum(_))
        }),
        (
            redo(good.replace("<MappedBlocksCount> 5", "<MappedBlocksCount> 6")),
            |e| matches!(e, BmapError::MappedCount(6, 5)),
        ),
        (
            good.replace("<ImageSize>", "<Foo>")
                .replace("</ImageSize>", "</Foo>"),
            |e| matches!(e, BmapError::Missing("ImageSize")),
        ),
        (good.replace("</BlockMap>", ""), |e| {
            matches!(e, BmapError::Xml(..))
        }),
        (good.replace("<bmap ", "<map "), |e| {
            matches!(e, BmapError::NotBmap(_))
        }),
        (good.replace("<BlockMap>", "<BlockMap>&amp;"), |e| {
            matches!(e, BmapError::Xml(..))
        }),
        ("<!-- never ends".into(), |e| {
            matches!(e, BmapError::Xml(..))
        }),
        ("".into(), |e| matches!(e, BmapError::NotBmap(_))),
    ];
    for (text, want) in cases {
        let err = parse(text.as_bytes()).unwrap_err();
        assert!(want(&err), "{err:?} for\n{text}");
    }
    assert_eq!(parse(&[0xff, 0xfe]), Err(BmapError::NotText));
    let big = vec![b' '; MAX_BMAP_BYTES as usize + 1];
    assert_eq!(parse(&big), Err(BmapError::TooLarge));
    // Many comments do not recurse.
    let many = redo("<!-- x -->".repeat(200_000) + &good);
    assert_eq!(parse(many.as_bytes()).unwrap(), sample());
}

/// A sparse file with data in blocks 1, 5-6 and a short last block.
fn sparse_file(dir: &Path) -> PathBuf {
    let p = dir.join("disk.img");
    let f = File::create(&p).unwrap();
    f.set_len(20 * 4096 + 10).unwrap();
    f.write_all_at(&[1u8; 4096], 4096).unwrap();
    f.write_all_at(&[2u8; 8192], 5 * 4096).unwrap();
    f.write_all_at(&[3u8; 10], 20 * 4096).unwrap();
    f.sync_all().unwrap();
    p
}

fn bmaptool() -> bool {
    if Command::new("bmaptool").arg("--version").output().is_err() {
        eprintln!("SKIP: bmaptool not installed (scripts/setup installs bmap-tools)");
        return false;
    }
    true
}

/// What `bmaptool create` writes, we read: same ranges (from the file's
/// extents) and checksums as ours.
#[test]
fn reads_what_bmaptool_creates() {
    if !bmaptool() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let img = sparse_file(dir.path());
    let out = dir.path().join("theirs.bmap");
    let st = Command::new("bmaptool")
        .args(["create", "-o"])
        .arg(&out)
        .arg(&img)
        .status()
        .unwrap();
    assert!(st.success());
    let theirs = Bmap::read(&out).unwrap();
    let ours = Bmap::compute(&img, &[(1, 1), (5, 6), (20, 20)]).unwrap();
    assert_eq!(theirs, ours);
}

/// What we write, `bmaptool copy` takes (and it checks our checksums: a
/// wrong one makes it fail).
#[test]
fn bmaptool_copies_with_ours() {
    if !bmaptool() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let img = sparse_file(dir.path());
    let bmap = Bmap::compute(&img, &[(1, 1), (5, 6), (20, 20)]).unwrap();
    let map = dir.path().join("ours.bmap");
    std::fs::write(&map, bmap.to_xml()).unwrap();
    let dest = dir.path().join("dest.img");
    std::fs::write(&dest, vec![0xaa; 21 * 4096]).unwrap();
    let copy = || {
        Command::new("bmaptool")
            .args(["copy", "--bmap"])
            .arg(&map)
            .arg(&img)
            .arg(&dest)
            .output()
            .unwrap()
    };
    let out = copy();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let got = std::fs::read(&dest).unwrap();
    assert_eq!(&got[4096..8192], &[1u8; 4096][..]);
    assert_eq!(&got[5 * 4096..7 * 4096], &[2u8; 8192][..]);
    // (bmaptool truncates a regular-file destination: unmapped blocks read 0.)

    let mut wrong = bmap.clone();
    wrong.ranges[1].sha256 = Some("00".repeat(32));
    std::fs::write(&map, wrong.to_xml()).unwrap();
    let out = copy();
    assert!(
        !out.status.success(),
        "bmaptool must check our range checksums"
    );
}
