//! Subjects: `<prefix>.bars.<EXCHANGE>.<TICKER>.<INTERVAL>`, each part one NATS token.
//!
//! A NATS token cannot hold `.`, whitespace, `*` or `>`, and tickers hold `.` (`NYSE:BRK.B`)
//! and `!` (`CME_MINI:ES1!`). Each part is encoded byte by byte: ASCII letters, digits, `_`
//! and `-` stay as they are; every other byte, `~` included, becomes `~` and two upper-case
//! hex digits. So `BRK.B` is `BRK~2EB` and `ES1!` is `ES1~21`. The encoding is reversible
//! ([`decode_token`]), its output is never empty for a non-empty input, and it never holds a
//! character NATS gives a meaning to.

use tvdatafeed::{Interval, Symbol};

/// The default subject prefix.
pub const DEFAULT_PREFIX: &str = "tvdatafeed";

/// `part` as one NATS token (see the module doc).
///
/// # Examples
///
/// ```
/// use tvdatafeed_nats::subject::{decode_token, encode_token};
///
/// assert_eq!(encode_token("BRK.B"), "BRK~2EB");
/// assert_eq!(encode_token("ES1!"), "ES1~21");
/// assert_eq!(decode_token("ES1~21").as_deref(), Some("ES1!"));
/// ```
pub fn encode_token(part: &str) -> String {
    let mut out = String::with_capacity(part.len());
    for b in part.bytes() {
        if b.is_ascii_alphanumeric() || b == b'_' || b == b'-' {
            out.push(char::from(b));
        } else {
            out.push('~');
            out.push(char::from(HEX[usize::from(b >> 4)]));
            out.push(char::from(HEX[usize::from(b & 0xf)]));
        }
    }
    out
}

const HEX: &[u8; 16] = b"0123456789ABCDEF";

/// The inverse of [`encode_token`]; `None` for a token it cannot have produced.
pub fn decode_token(token: &str) -> Option<String> {
    let bytes = token.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let b = bytes[i];
        if b == b'~' {
            let hex = |c: u8| HEX.iter().position(|&h| h == c);
            let hi = hex(*bytes.get(i + 1)?)?;
            let lo = hex(*bytes.get(i + 2)?)?;
            let v = u8::try_from(hi * 16 + lo).ok()?;
            // Only bytes the encoder escapes: keeps the encoding one-to-one.
            if v.is_ascii_alphanumeric() || v == b'_' || v == b'-' {
                return None;
            }
            out.push(v);
            i += 3;
        } else if b.is_ascii_alphanumeric() || b == b'_' || b == b'-' {
            out.push(b);
            i += 1;
        } else {
            return None;
        }
    }
    String::from_utf8(out).ok()
}

/// The subject of a seis' bars: `<prefix>.bars.<EXCHANGE>.<TICKER>.<INTERVAL>`.
///
/// # Examples
///
/// ```
/// use tvdatafeed::{Interval, Symbol};
/// use tvdatafeed_nats::subject::bar_subject;
///
/// let brk: Symbol = "NYSE:BRK.B".parse()?;
/// let one_minute: Interval = "1".parse()?;
/// assert_eq!(bar_subject("tvdatafeed", &brk, one_minute), "tvdatafeed.bars.NYSE.BRK~2EB.1");
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub fn bar_subject(prefix: &str, symbol: &Symbol, interval: Interval) -> String {
    seis_subject(prefix, "bars", symbol, interval)
}

/// The subject of a seis' connection events (`Disconnected`, `Reconnected` from TradingView):
/// `<prefix>.status.<EXCHANGE>.<TICKER>.<INTERVAL>`.
pub fn status_subject(prefix: &str, symbol: &Symbol, interval: Interval) -> String {
    seis_subject(prefix, "status", symbol, interval)
}

fn seis_subject(prefix: &str, kind: &str, symbol: &Symbol, interval: Interval) -> String {
    format!(
        "{prefix}.{kind}.{}.{}.{}",
        encode_token(symbol.exchange()),
        encode_token(symbol.ticker()),
        encode_token(&interval.to_string())
    )
}

/// The seis a bar or status subject names, `None` when `subject` is not one under `prefix`.
pub fn parse_subject(prefix: &str, subject: &str) -> Option<(Symbol, Interval)> {
    let rest = subject.strip_prefix(prefix)?.strip_prefix('.')?;
    let mut parts = rest.split('.');
    let kind = parts.next()?;
    if kind != "bars" && kind != "status" {
        return None;
    }
    let exchange = decode_token(parts.next()?)?;
    let ticker = decode_token(parts.next()?)?;
    let interval = decode_token(parts.next()?)?;
    if parts.next().is_some() {
        return None;
    }
    let symbol = Symbol::new(&exchange, &ticker).ok()?;
    Some((symbol, interval.parse().ok()?))
}

/// Which of `n` shards a seis belongs to: a stable hash (FNV-1a, 64 bits) of
/// `EXCHANGE:TICKER@INTERVAL` modulo `n`, the same on every host and in every version.
///
/// # Panics
///
/// When `n` is 0.
pub fn shard_of(symbol: &Symbol, interval: Interval, n: u32) -> u32 {
    assert!(n > 0, "shard count 0");
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in format!("{symbol}@{interval}").bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    u32::try_from(h % u64::from(n)).expect("below n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn awkward_tickers_round_trip_and_stay_one_token() {
        for spec in [
            "NYSE:BRK.B",
            "CME_MINI:ES1!",
            "NYMEX:CL1!",
            "FX:EUR/USD",
            "TVC:A~B",
            "BINANCE:BTCUSDT",
            "OANDA:XAU*USD",
            "X:A>B",
            "X:A B",
        ] {
            let Ok(symbol) = spec.parse::<Symbol>() else {
                continue;
            };
            for iv in ["1S", "1", "60", "1D", "1W", "1M"] {
                let interval: Interval = iv.parse().unwrap();
                let s = bar_subject(DEFAULT_PREFIX, &symbol, interval);
                assert_eq!(s.split('.').count(), 5, "{s}");
                assert!(!s.contains([' ', '*', '>', '\t']), "{s}");
                assert_eq!(
                    parse_subject(DEFAULT_PREFIX, &s),
                    Some((symbol.clone(), interval)),
                    "{s}"
                );
            }
        }
    }

    #[test]
    fn encoding_is_one_to_one() {
        assert_eq!(encode_token("~"), "~7E");
        assert_eq!(decode_token("~7E").as_deref(), Some("~"));
        assert_eq!(decode_token("~41"), None, "an escaped letter is not ours");
        assert_eq!(decode_token("~2"), None);
        assert_eq!(decode_token("a.b"), None);
        for s in ["", "a", "BRK.B", "~~", "ÄÖ", "A!~.B"] {
            assert_eq!(decode_token(&encode_token(s)).as_deref(), Some(s));
        }
    }

    #[test]
    fn shards_are_stable_and_spread() {
        let s: Symbol = "BINANCE:BTCUSDT".parse().unwrap();
        let i: Interval = "1S".parse().unwrap();
        assert_eq!(shard_of(&s, i, 4), shard_of(&s, i, 4));
        let mut counts = [0u32; 4];
        for k in 0..1000 {
            let sym = Symbol::new("SIM", &format!("T{k}")).unwrap();
            counts[shard_of(&sym, i, 4) as usize] += 1;
        }
        assert!(counts.iter().all(|&c| c > 200), "{counts:?}");
    }
}
