//! Persisted logs as text: whole lines only. The device reads its logs back
//! this way (`BootLogs`), and a client that pages a log's raw bytes
//! (`BootLogBytes`) cuts them the same way.

/// Whole, clean lines of `buf` (`partial`: the first line is cut).
pub fn whole_lines(buf: &[u8], partial: bool) -> String {
    let mut out = String::with_capacity(buf.len());
    let mut lines = buf.split(|&b| b == b'\n');
    if partial {
        lines.next();
    }
    // The piece after the last newline is a torn line (or empty).
    let mut lines = lines.peekable();
    while let Some(line) = lines.next() {
        if lines.peek().is_none() {
            break;
        }
        if line.contains(&0) {
            continue;
        }
        out.push_str(&String::from_utf8_lossy(line));
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn torn_cut_and_zeroed_lines_are_left_out() {
        assert_eq!(whole_lines(b"a\nb\x00\nc\ntorn", false), "a\nc\n");
        assert_eq!(whole_lines(b"cut\nwhole\n", true), "whole\n");
        assert_eq!(whole_lines(b"x\xff\n", false), "x\u{fffd}\n");
        assert_eq!(whole_lines(b"", false), "");
    }
}
