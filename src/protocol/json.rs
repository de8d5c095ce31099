//! A tiny ASCII-only JSON writer for the messages we send.
//!
//! Every non-ASCII character is written as a `\uXXXX` escape (surrogate pairs above the BMP),
//! so a frame's byte length equals its character length for every peer (see `frame`).
#![forbid(unsafe_code)]

use super::frame::push_decimal;

/// Appends `s` as a JSON string literal, quotes included.
pub(crate) fn write_str(out: &mut Vec<u8>, s: &str) {
    out.push(b'"');
    for c in s.chars() {
        match c {
            '"' => out.extend_from_slice(b"\\\""),
            '\\' => out.extend_from_slice(b"\\\\"),
            '\n' => out.extend_from_slice(b"\\n"),
            '\r' => out.extend_from_slice(b"\\r"),
            '\t' => out.extend_from_slice(b"\\t"),
            c if (c as u32) < 0x20 || (c as u32) > 0x7e => {
                let mut units = [0u16; 2];
                for u in c.encode_utf16(&mut units) {
                    write_u_escape(out, *u);
                }
            }
            c => out.push(c as u8),
        }
    }
    out.push(b'"');
}

fn write_u_escape(out: &mut Vec<u8>, u: u16) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    out.extend_from_slice(b"\\u");
    for shift in [12, 8, 4, 0] {
        out.push(HEX[usize::from((u >> shift) & 0xf)]);
    }
}

/// Appends an unsigned integer.
pub(crate) fn write_u64(out: &mut Vec<u8>, n: u64) {
    push_decimal(n, out);
}

/// Appends a signed integer.
pub(crate) fn write_i64(out: &mut Vec<u8>, n: i64) {
    if n < 0 {
        out.push(b'-');
    }
    push_decimal(n.unsigned_abs(), out);
}

/// Appends a float the way TradingView writes prices: shortest round-trip form, with a `.0`
/// on integral values (`1751833020.0`), and `null` for non-finite values (JSON has none).
#[cfg(any(test, feature = "sim"))]
pub(crate) fn write_f64(out: &mut Vec<u8>, x: f64) {
    use std::io::Write as _;
    if !x.is_finite() {
        out.extend_from_slice(b"null");
        return;
    }
    // `{:?}` is the shortest representation that parses back to the same f64, and keeps `.0`.
    let _ = write!(out, "{x:?}");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strings_are_escaped_to_ascii() {
        let mut out = Vec::new();
        write_str(&mut out, "a\"b\\c\n\u{1}é😀");
        assert_eq!(out, br#""a\"b\\c\n\u0001\u00e9\ud83d\ude00""#);
        assert!(out.is_ascii());
        let back: String = serde_json::from_slice(&out).unwrap();
        assert_eq!(back, "a\"b\\c\n\u{1}é😀");
    }

    #[test]
    fn numbers_round_trip() {
        for x in [1751833020.0, 108756.41, 0.031, 0.0, -1.5e-7, 1e100] {
            let mut out = Vec::new();
            write_f64(&mut out, x);
            let back: f64 = std::str::from_utf8(&out).unwrap().parse().unwrap();
            assert_eq!(back, x);
        }
        let mut out = Vec::new();
        write_f64(&mut out, 1751833020.0);
        assert_eq!(out, b"1751833020.0");
        let mut out = Vec::new();
        write_i64(&mut out, -42);
        write_u64(&mut out, 7);
        assert_eq!(out, b"-427");
    }
}
