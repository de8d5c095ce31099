//! A tiny ASCII-only JSON writer for the messages we send.
//!
//! Every non-ASCII character is written as a `\uXXXX` escape (surrogate pairs above the BMP),
//! so a frame's byte length equals its character length for every peer (see `frame`).
#![forbid(unsafe_code)]

#[cfg(any(test, feature = "sim"))]
use super::frame::decimal_digits;
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
///
/// The output is exactly `{x:?}`'s. Prices and volumes have a few decimals, and for those the
/// digits come from integer arithmetic (`x` is `m / 10^k` for the smallest such `k`); anything
/// else goes to `{:?}`. Formatting floats with `{:?}` (about 130 ns a number here) was most of
/// the time the simulator took to write a 5,000-bar history.
#[cfg(any(test, feature = "sim"))]
pub(crate) fn write_f64(out: &mut Vec<u8>, x: f64) {
    if !x.is_finite() {
        out.extend_from_slice(b"null");
        return;
    }
    if !write_decimal(out, x) {
        use std::io::Write as _;
        // `{:?}` is the shortest representation that parses back to the same f64, and keeps
        // `.0`.
        let _ = write!(out, "{x:?}");
    }
}

/// Powers of ten exactly representable as `f64`, for [`write_decimal`].
#[cfg(any(test, feature = "sim"))]
const POW10: [f64; 10] = [1e0, 1e1, 1e2, 1e3, 1e4, 1e5, 1e6, 1e7, 1e8, 1e9];

/// Writes `x` as `m / 10^k` in plain decimal notation when some `k < 10` makes `m` a whole
/// number whose quotient `m / 10^k` (one correctly rounded division of exact operands) is `x`
/// again: then the text parses back to `x`. With `m < 2^51`, `x`'s spacing (ulp) is below half
/// of `10^-k`, so no other decimal with `k` places rounds to `x`, and none with fewer places
/// does either (the smaller `k` tried first would have found it): the text is the unique
/// shortest round-trip form, the one `{:?}` writes. Only where `{:?}` uses plain notation
/// (`1e-4 <= |x| < 1e16`, and zero). Returns whether it wrote.
#[cfg(any(test, feature = "sim"))]
fn write_decimal(out: &mut Vec<u8>, x: f64) -> bool {
    let a = x.abs();
    if a == 0.0 {
        out.extend_from_slice(if x.is_sign_negative() {
            b"-0.0"
        } else {
            b"0.0"
        });
        return true;
    }
    if !(1e-4..1e16).contains(&a) {
        return false;
    }
    for (k, &p) in POW10.iter().enumerate() {
        let scaled = a * p;
        if scaled >= 2_251_799_813_685_248.0 {
            return false;
        }
        // Below 2^51 the spacing of `scaled` is at most 1/4, so `scaled + 0.5` is exact and
        // the truncation is `round` (half away from zero), without a libm call.
        let m = (scaled + 0.5) as u64;
        let mf = m as f64;
        // A cheap test first: `m / p` rounding to `a` means `a = (m / p)(1 + d)`, `|d| <=
        // 2^-53`, so `scaled = a * p` (rounded once more) is within `m * 2^-52` of `m`. A
        // `scaled` further from its integer than `m * 1e-15` cannot pass the exact test below,
        // and most `k` that do not fit are rejected here without a division.
        if (scaled - mf).abs() > mf * 1e-15 || mf / p != a {
            continue;
        }
        write_fixed(out, m, k, x < 0.0);
        return true;
    }
    false
}

/// Appends `m / 10^k` in plain decimal notation, `.0` when `k` is 0 and a `0` before the point
/// when `m < 10^k`: `{:?}`'s layout for the numbers [`write_decimal`] takes.
#[cfg(any(test, feature = "sim"))]
fn write_fixed(out: &mut Vec<u8>, m: u64, k: usize, negative: bool) {
    let mut digits = [0u8; 20];
    let start = decimal_digits(m, &mut digits);
    let digits = &digits[start..];
    if negative {
        out.push(b'-');
    }
    if k == 0 {
        out.extend_from_slice(digits);
        out.extend_from_slice(b".0");
    } else if digits.len() > k {
        let (int, frac) = digits.split_at(digits.len() - k);
        out.extend_from_slice(int);
        out.push(b'.');
        out.extend_from_slice(frac);
    } else {
        out.extend_from_slice(b"0.");
        out.extend(std::iter::repeat_n(b'0', k - digits.len()));
        out.extend_from_slice(digits);
    }
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

    /// The decimal path writes exactly what `{:?}` writes, for the values prices and volumes
    /// take and for arbitrary bit patterns.
    #[test]
    fn floats_are_written_as_debug_writes_them() {
        let mut rng = 0x2545_f491_4f6c_dd1d_u64;
        let mut next = move || {
            rng ^= rng << 13;
            rng ^= rng >> 7;
            rng ^= rng << 17;
            rng
        };
        let mut values = vec![
            0.0,
            -0.0,
            1.0,
            -1.0,
            0.1,
            0.2,
            0.30000000000000004,
            1e-4,
            9.9e-5,
            1e15,
            1e16,
            9_999_999_999_999_998.0,
            1751833020.0,
            108756.41,
            0.031,
            0.00001,
            123.456789,
            f64::MAX,
            f64::MIN_POSITIVE,
            5e-324,
            4503599627370497.5,
            9007199254740993.0,
        ];
        for _ in 0..200_000 {
            let r = next();
            let cents = (r % 100_000_000_000) as f64;
            values.push(cents / 100.0);
            values.push(-(((r >> 20) % 10_000_000_000) as f64) / 100_000.0);
            values.push((r % 1_000_000) as f64 / 10f64.powi((r >> 40) as i32 % 12));
            values.push(f64::from_bits(next()));
        }
        for x in values.into_iter().filter(|x| x.is_finite()) {
            let mut out = Vec::new();
            write_f64(&mut out, x);
            assert_eq!(
                std::str::from_utf8(&out).unwrap(),
                format!("{x:?}"),
                "{x:e}"
            );
        }
    }

    #[test]
    fn numbers_round_trip() {
        for x in [
            1751833020.0,
            108756.41,
            0.031,
            0.0,
            -1.5e-7,
            1e100,
            5e-324,
            f64::MAX,
            123_456_789_012_345_680.0,
        ] {
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
