//! The bmap XML text: written in the layout of bmap-tools' `BmapCreate`,
//! read with a small scanner that takes only this format (elements, text,
//! attributes, comments and the XML declaration; no entities, no DTD).

use std::fmt::Write as _;

use super::{Bmap, Range};

/// A bmap of a 1 TB image fragmented into 100,000 runs is ~10 MB of text;
/// nothing we write or flash comes near.
pub const MAX_BMAP_BYTES: u64 = 16 << 20;
/// Most ranges accepted (each is at least ~25 bytes of text).
const MAX_RANGES: usize = 1 << 20;
/// Block sizes bmap-tools could have used (page size up to 1 MiB).
const MIN_BLOCK: u64 = 512;
const MAX_BLOCK: u64 = 1 << 20;
/// A SHA-256 in hex.
const SHA256_HEX: usize = 64;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum BmapError {
    #[error("larger than {MAX_BMAP_BYTES} bytes")]
    TooLarge,
    #[error("not UTF-8 text")]
    NotText,
    #[error("malformed XML at byte {0}: {1}")]
    Xml(usize, &'static str),
    #[error("not a bmap file (root element `{0}`)")]
    NotBmap(String),
    #[error("bmap format version `{0}` is not supported (2.x with sha256 is)")]
    Version(String),
    #[error("checksum type `{0}` is not supported (sha256 is)")]
    ChecksumType(String),
    #[error("element <{0}> is missing")]
    Missing(&'static str),
    #[error("<{0}> `{1}` is not a valid number")]
    Number(&'static str, String),
    #[error("block size {0} is not a power of two in {MIN_BLOCK}..={MAX_BLOCK}")]
    BlockSize(u64),
    #[error("BlocksCount {0} does not match ImageSize {1} / BlockSize {2}")]
    BlocksCount(u64, u64, u64),
    #[error("range `{0}` is malformed, out of order, or past the image's end")]
    Range(String),
    #[error("more than {MAX_RANGES} ranges")]
    TooManyRanges,
    #[error("range checksum `{0}` is not a SHA-256 in hex")]
    RangeChecksum(String),
    #[error("MappedBlocksCount {0} but the ranges map {1} blocks")]
    MappedCount(u64, u64),
    #[error("the file's own checksum does not match (file damaged or edited)")]
    FileChecksum,
}

const ZEROS: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// The file, with `BmapFileChecksum` computed as bmap-tools does: the
/// SHA-256 of the file with that value written as 64 `0`s.
pub(super) fn render(b: &Bmap) -> String {
    let mapped = b.mapped_blocks();
    let total = b.blocks_count();
    let mut x = String::new();
    x.push_str("<?xml version=\"1.0\" ?>\n");
    x.push_str("<!-- Block map of an Outpost disk image, written by `outpost image`:\n");
    x.push_str("     only the mapped blocks need to be copied. Tools: `outpost flash`,\n");
    x.push_str("     `bmaptool copy` (bmap-tools). -->\n\n");
    x.push_str("<bmap version=\"2.0\">\n");
    let _ = writeln!(x, "    <ImageSize> {} </ImageSize>", b.image_size);
    let _ = writeln!(x, "    <BlockSize> {} </BlockSize>", b.block_size);
    let _ = writeln!(x, "    <BlocksCount> {total} </BlocksCount>");
    let percent = if total == 0 {
        0.0
    } else {
        mapped as f64 * 100.0 / total as f64
    };
    let _ = writeln!(
        x,
        "    <!-- Count of mapped blocks: {} MiB or {percent:.1}% -->",
        (mapped * b.block_size) >> 20
    );
    let _ = writeln!(x, "    <MappedBlocksCount> {mapped} </MappedBlocksCount>");
    x.push_str("    <ChecksumType> sha256 </ChecksumType>\n");
    x.push_str("    <BmapFileChecksum> ");
    let at = x.len();
    x.push_str(ZEROS);
    x.push_str(" </BmapFileChecksum>\n");
    x.push_str("    <BlockMap>\n");
    for r in &b.ranges {
        let chk = r
            .sha256
            .as_ref()
            .map(|s| format!(" chksum=\"{s}\""))
            .unwrap_or_default();
        if r.first == r.last {
            let _ = writeln!(x, "        <Range{chk}> {} </Range>", r.first);
        } else {
            let _ = writeln!(x, "        <Range{chk}> {}-{} </Range>", r.first, r.last);
        }
    }
    x.push_str("    </BlockMap>\n</bmap>\n");
    let sum = crate::bundle::sha256_hex(x.as_bytes());
    x.replace_range(at..at + SHA256_HEX, &sum);
    x
}

/// Parse and check a bmap file: version 2.x, sha256, consistent counts,
/// ascending ranges inside the image, and the file's own checksum.
pub fn parse(bytes: &[u8]) -> Result<Bmap, BmapError> {
    if bytes.len() as u64 > MAX_BMAP_BYTES {
        return Err(BmapError::TooLarge);
    }
    let text = std::str::from_utf8(bytes).map_err(|_| BmapError::NotText)?;
    let mut s = Scanner { text, pos: 0 };
    let mut fields = Fields::default();
    let mut stack: Vec<&str> = Vec::new();
    let mut ranges: Vec<(String, Option<String>)> = Vec::new();
    let mut pending_chk: Option<Option<String>> = None;
    let mut root_seen = false;
    while let Some(tok) = s.next()? {
        match tok {
            Token::Start(name, attrs, empty) => {
                if stack.is_empty() {
                    if root_seen || name != "bmap" {
                        return Err(BmapError::NotBmap(name.to_owned()));
                    }
                    root_seen = true;
                    let v = attr(attrs, "version").unwrap_or_default();
                    if v.split('.').next() != Some("2") {
                        return Err(BmapError::Version(v));
                    }
                }
                if name == "Range" {
                    pending_chk = Some(attr(attrs, "chksum"));
                }
                if !empty {
                    stack.push(name);
                } else if name == "Range" {
                    return Err(BmapError::Range(String::new()));
                }
            }
            Token::End(name) => {
                if stack.pop() != Some(name) {
                    return Err(BmapError::Xml(s.pos, "mismatched end tag"));
                }
            }
            Token::Text(t) => {
                let t = t.trim();
                if t.is_empty() {
                    continue;
                }
                match stack.as_slice() {
                    ["bmap", field] => fields.set(field, t),
                    ["bmap", "BlockMap", "Range"] => {
                        if ranges.len() >= MAX_RANGES {
                            return Err(BmapError::TooManyRanges);
                        }
                        ranges.push((t.to_owned(), pending_chk.take().flatten()));
                    }
                    _ => return Err(BmapError::Xml(s.pos, "text outside an element")),
                }
            }
        }
    }
    if !root_seen {
        return Err(BmapError::NotBmap(String::new()));
    }
    if !stack.is_empty() {
        return Err(BmapError::Xml(s.pos, "unclosed element"));
    }
    let chk_type = fields.get("ChecksumType")?;
    if !chk_type.eq_ignore_ascii_case("sha256") {
        return Err(BmapError::ChecksumType(chk_type.to_owned()));
    }
    let image_size = fields.number("ImageSize")?;
    let block_size = fields.number("BlockSize")?;
    if !(MIN_BLOCK..=MAX_BLOCK).contains(&block_size) || !block_size.is_power_of_two() {
        return Err(BmapError::BlockSize(block_size));
    }
    let blocks = fields.number("BlocksCount")?;
    if blocks != image_size.div_ceil(block_size) {
        return Err(BmapError::BlocksCount(blocks, image_size, block_size));
    }
    let mapped = fields.number("MappedBlocksCount")?;
    let file_sum = fields.get("BmapFileChecksum")?.to_owned();
    check_file_checksum(text, &file_sum)?;

    let mut out: Vec<Range> = Vec::with_capacity(ranges.len());
    for (t, chk) in ranges {
        let bad = || BmapError::Range(t.clone());
        let (first, last) = match t.split_once('-') {
            Some((a, b)) => (a.trim(), b.trim()),
            None => (t.as_str(), t.as_str()),
        };
        let first: u64 = first.parse().map_err(|_| bad())?;
        let last: u64 = last.parse().map_err(|_| bad())?;
        let after_prev = out.last().is_none_or(|p| first > p.last);
        if first > last || last >= blocks || !after_prev {
            return Err(bad());
        }
        if let Some(c) = &chk {
            if c.len() != SHA256_HEX || !c.bytes().all(|b| b.is_ascii_hexdigit()) {
                return Err(BmapError::RangeChecksum(c.clone()));
            }
        }
        out.push(Range {
            first,
            last,
            sha256: chk.map(|c| c.to_ascii_lowercase()),
        });
    }
    let bmap = Bmap {
        image_size,
        block_size,
        ranges: out,
    };
    if bmap.mapped_blocks() != mapped {
        return Err(BmapError::MappedCount(mapped, bmap.mapped_blocks()));
    }
    Ok(bmap)
}

/// bmap-tools' rule: the first occurrence of the stored value replaced by
/// `0`s, the whole file hashed.
fn check_file_checksum(text: &str, sum: &str) -> Result<(), BmapError> {
    if sum.len() != SHA256_HEX || !sum.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(BmapError::FileChecksum);
    }
    let zeroed = text.replacen(sum, ZEROS, 1);
    if crate::bundle::sha256_hex(zeroed.as_bytes()) != sum.to_ascii_lowercase() {
        return Err(BmapError::FileChecksum);
    }
    Ok(())
}

#[derive(Default)]
struct Fields {
    values: Vec<(String, String)>,
}

impl Fields {
    fn set(&mut self, name: &str, value: &str) {
        self.values.push((name.to_owned(), value.to_owned()));
    }

    fn get(&self, name: &'static str) -> Result<&str, BmapError> {
        self.values
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
            .ok_or(BmapError::Missing(name))
    }

    fn number(&self, name: &'static str) -> Result<u64, BmapError> {
        let v = self.get(name)?;
        v.parse().map_err(|_| BmapError::Number(name, v.to_owned()))
    }
}

/// `name="value"` (or single quotes) in a start tag's attribute text.
fn attr(attrs: &str, name: &str) -> Option<String> {
    let mut rest = attrs;
    while let Some(eq) = rest.find('=') {
        let key = rest[..eq].trim();
        let after = rest[eq + 1..].trim_start();
        let quote = after.chars().next()?;
        if quote != '"' && quote != '\'' {
            return None;
        }
        let body = &after[1..];
        let end = body.find(quote)?;
        if key == name {
            return Some(body[..end].to_owned());
        }
        rest = &body[end + 1..];
    }
    None
}

enum Token<'a> {
    /// Name, attribute text, self-closing.
    Start(&'a str, &'a str, bool),
    End(&'a str),
    Text(&'a str),
}

struct Scanner<'a> {
    text: &'a str,
    pos: usize,
}

impl<'a> Scanner<'a> {
    fn next(&mut self) -> Result<Option<Token<'a>>, BmapError> {
        let mut rest = &self.text[self.pos..];
        // Comments and declarations are skipped (a loop, not recursion:
        // a file of many comments must not grow the stack).
        'skip: loop {
            for (open, close) in [("<!--", "-->"), ("<?", "?>")] {
                if rest.starts_with(open) {
                    let end = rest
                        .find(close)
                        .ok_or(BmapError::Xml(self.pos, "unterminated comment"))?;
                    self.pos += end + close.len();
                    rest = &self.text[self.pos..];
                    continue 'skip;
                }
            }
            break;
        }
        if rest.is_empty() {
            return Ok(None);
        }
        if !rest.starts_with('<') {
            let end = rest.find('<').unwrap_or(rest.len());
            self.pos += end;
            let t = &rest[..end];
            if t.contains('&') {
                return Err(BmapError::Xml(self.pos, "entities are not supported"));
            }
            return Ok(Some(Token::Text(t)));
        }
        if rest.starts_with("<!") {
            return Err(BmapError::Xml(self.pos, "DTDs and CDATA are not supported"));
        }
        let end = rest
            .find('>')
            .ok_or(BmapError::Xml(self.pos, "unterminated tag"))?;
        let inner = &rest[1..end];
        self.pos += end + 1;
        if let Some(name) = inner.strip_prefix('/') {
            return Ok(Some(Token::End(name.trim())));
        }
        let (inner, empty) = match inner.strip_suffix('/') {
            Some(i) => (i, true),
            None => (inner, false),
        };
        let name_end = inner
            .find(|c: char| c.is_ascii_whitespace())
            .unwrap_or(inner.len());
        let name = &inner[..name_end];
        if name.is_empty() {
            return Err(BmapError::Xml(self.pos, "empty tag name"));
        }
        Ok(Some(Token::Start(name, &inner[name_end..], empty)))
    }
}
