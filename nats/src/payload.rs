//! The message body: the JSON object of `tvdatafeed live --format json`, plus `"kind"`.
//!
//! `{"symbol":"NYSE:BRK.B","interval":"1","time":1700000000,"open":1.5,"high":2,"low":1,
//! "close":1.75,"volume":1200,"kind":"closed"}`: `time` is the bar's open in UTC seconds,
//! `volume` is `null` when the symbol has none, `kind` is `closed` or `revised`.

use tvdatafeed::{Bar, Interval, Symbol};

/// Whether a message carries a bar's close or a correction of it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum BarKind {
    /// The bar closed with these final values ([`tvdatafeed::LiveEvent::Closed`]).
    Closed,
    /// The server changed a closed bar; these are its new values
    /// ([`tvdatafeed::LiveEvent::Revised`]).
    Revised,
}

impl BarKind {
    /// `closed` or `revised`, as in the payload.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Closed => "closed",
            Self::Revised => "revised",
        }
    }
}

/// One bar as published: the seis, the bar, and whether it is a close or a revision.
#[derive(Debug, Clone, PartialEq)]
pub struct BarMessage {
    /// The symbol.
    pub symbol: Symbol,
    /// The interval.
    pub interval: Interval,
    /// The bar (`time` is its open).
    pub bar: Bar,
    /// Close or revision.
    pub kind: BarKind,
}

impl BarMessage {
    /// The JSON body (see the module doc).
    pub fn to_json(&self) -> String {
        let b = &self.bar;
        let volume = b.volume.map_or_else(|| "null".to_owned(), num);
        // Symbols and intervals are validated ASCII without quotes or backslashes.
        format!(
            r#"{{"symbol":"{}","interval":"{}","time":{},"open":{},"high":{},"low":{},"close":{},"volume":{volume},"kind":"{}"}}"#,
            self.symbol,
            self.interval,
            b.time,
            num(b.open),
            num(b.high),
            num(b.low),
            num(b.close),
            self.kind.as_str()
        )
    }

    /// Parses a JSON body; `None` when it is not one [`BarMessage::to_json`] writes.
    pub fn from_json(body: &[u8]) -> Option<Self> {
        let v: serde_json::Value = serde_json::from_slice(body).ok()?;
        let f = |k: &str| v.get(k)?.as_f64();
        let kind = match v.get("kind")?.as_str()? {
            "closed" => BarKind::Closed,
            "revised" => BarKind::Revised,
            _ => return None,
        };
        let volume = match v.get("volume")? {
            serde_json::Value::Null => None,
            x => Some(x.as_f64()?),
        };
        Some(Self {
            symbol: v.get("symbol")?.as_str()?.parse().ok()?,
            interval: v.get("interval")?.as_str()?.parse().ok()?,
            bar: Bar {
                time: v.get("time")?.as_i64()?,
                open: f("open")?,
                high: f("high")?,
                low: f("low")?,
                close: f("close")?,
                volume,
            },
            kind,
        })
    }

    /// The `Nats-Msg-Id`: `SYMBOL@INTERVAL@TIME` for a close, so the two publishers of a
    /// pair give the same close the same id and JetStream stores it once. A revision gets
    /// `SYMBOL@INTERVAL@TIME@r` and a hash of its values: both publishers of a pair see the
    /// same revision and give it the same id, and a later, different revision of the same bar
    /// gets another.
    pub fn msg_id(&self) -> String {
        match self.kind {
            BarKind::Closed => format!("{}@{}@{}", self.symbol, self.interval, self.bar.time),
            BarKind::Revised => {
                let b = &self.bar;
                let mut h: u64 = 0xcbf2_9ce4_8422_2325;
                for x in [b.open, b.high, b.low, b.close, b.volume.unwrap_or(f64::NAN)] {
                    for byte in x.to_bits().to_le_bytes() {
                        h ^= u64::from(byte);
                        h = h.wrapping_mul(0x0100_0000_01b3);
                    }
                }
                format!(
                    "{}@{}@{}@r{h:016x}",
                    self.symbol, self.interval, self.bar.time
                )
            }
        }
    }
}

/// `Display` of an `f64` is the shortest string that parses back to the same value.
fn num(x: f64) -> String {
    format!("{x}")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn msg(kind: BarKind, volume: Option<f64>) -> BarMessage {
        BarMessage {
            symbol: "CME_MINI:ES1!".parse().unwrap(),
            interval: "1S".parse().unwrap(),
            bar: Bar {
                time: 1_700_000_000,
                open: 0.1 + 0.2,
                high: 1e21,
                low: -0.0,
                close: 123.456_789,
                volume,
            },
            kind,
        }
    }

    #[test]
    fn json_round_trips_exactly() {
        for m in [
            msg(BarKind::Closed, Some(12.5)),
            msg(BarKind::Revised, None),
        ] {
            let json = m.to_json();
            assert_eq!(BarMessage::from_json(json.as_bytes()), Some(m), "{json}");
        }
        assert!(
            msg(BarKind::Closed, None)
                .to_json()
                .contains(r#""volume":null"#)
        );
        assert_eq!(BarMessage::from_json(b"{}"), None);
        assert_eq!(BarMessage::from_json(b"not json"), None);
    }

    #[test]
    fn ids_match_for_a_pair_and_differ_for_revisions() {
        let c = msg(BarKind::Closed, Some(1.0));
        assert_eq!(c.msg_id(), "CME_MINI:ES1!@1S@1700000000");
        let r1 = msg(BarKind::Revised, Some(1.0));
        let mut r2 = r1.clone();
        r2.bar.close += 1.0;
        assert_ne!(r1.msg_id(), c.msg_id());
        assert_ne!(r1.msg_id(), r2.msg_id());
        assert_eq!(r1.msg_id(), r1.clone().msg_id());
    }
}
