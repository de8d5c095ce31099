//! Typed server messages, parsed with `simd-json` into borrowed views.
//!
//! [`MessageParser`] keeps `simd-json`'s buffers, its tape and the scratch space for bars
//! across calls, so parsing a `du` allocates nothing once they have grown to the size of the
//! traffic (the decode benchmark counts allocations per message). The price is that a
//! [`ServerMessage`] borrows the parser and the payload: handle it before parsing the next one.
//!
//! Unknown methods, studies and everything else a datafeed does not act on come back as
//! [`ServerMessage::Other`], never as an error. Malformed input is a [`MessageError`].
#![forbid(unsafe_code)]

use std::ops::Range;

use simd_json::{
    Buffers,
    prelude::*,
    tape::{Tape, Value},
};

use crate::Bar;

/// A server payload that is not valid JSON or not of the shape its method requires.
///
/// Not fatal: the parser stays usable for the next payload. Treat repeated errors as a
/// misbehaving server.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum MessageError {
    /// The payload is not valid JSON.
    #[error("invalid json: {0}")]
    Json(String),
    /// The payload is JSON but not a message object (neither `{"m":…,"p":[…]}` nor a hello).
    #[error("not a message object")]
    NotAMessage,
    /// A parameter of a known method is missing or of the wrong type.
    #[error("{method}: parameter {what} is missing or malformed")]
    Shape {
        /// The method.
        method: &'static str,
        /// Which parameter.
        what: &'static str,
    },
    /// A bar is not `[time, open, high, low, close]` plus an optional volume, all finite
    /// numbers, with a time within ±10^11 seconds.
    #[error("{method}: malformed bar in series {series:?}")]
    InvalidBar {
        /// The method.
        method: &'static str,
        /// The series key the bar was under (at most 64 characters).
        series: String,
    },
}

/// The first server frame after the upgrade: a bare object without `m`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct Hello<'a> {
    /// Opaque server session id.
    pub session_id: &'a str,
    /// Server clock, UTC seconds.
    pub timestamp: Option<i64>,
    /// Server release (`release_208-65`).
    pub release: Option<&'a str>,
    /// `"json"`.
    pub protocol: Option<&'a str>,
    /// `ip:port` of the front end.
    pub via: Option<&'a str>,
    /// `auth_scheme_vsn`, 2 in every capture.
    pub auth_scheme_version: Option<i64>,
}

/// A bar with the index TradingView gave it (`i`), which is only meaningful within one load:
/// key bars by `bar.time`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct IndexedBar {
    /// The `i` field.
    pub index: i64,
    /// The values.
    pub bar: Bar,
}

#[derive(Debug, Clone)]
struct RawEntry {
    key: Range<usize>,
    turnaround: Option<Range<usize>>,
    study: bool,
    bars: Range<usize>,
    bar_close_time: Option<i64>,
}

/// The series part of a `timescale_update` or `du`: one entry per series or study key.
#[derive(Debug, Clone, Copy)]
pub struct SeriesData<'a> {
    text: &'a str,
    entries: &'a [RawEntry],
    bars: &'a [IndexedBar],
}

/// One key of a [`SeriesData`].
#[derive(Debug, Clone, Copy, PartialEq)]
#[non_exhaustive]
pub struct SeriesUpdate<'a> {
    /// The series (or study) id the client chose (`sds_1`).
    pub key: &'a str,
    /// The turnaround it belongs to (`t`), when sent.
    pub turnaround: Option<&'a str>,
    /// Whether this is study data (`st`); studies carry no [`Bar`]s here.
    pub is_study: bool,
    /// Bars in the order the server sent them (oldest first).
    pub bars: &'a [IndexedBar],
    /// `lbs.bar_close_time`: when the last (forming) bar closes, UTC seconds.
    pub bar_close_time: Option<i64>,
}

impl<'a> SeriesData<'a> {
    /// The keys in the order the server sent them.
    pub fn iter(&self) -> impl Iterator<Item = SeriesUpdate<'a>> + 'a {
        let (text, bars) = (self.text, self.bars);
        self.entries.iter().map(move |e| SeriesUpdate {
            key: &text[e.key.clone()],
            turnaround: e.turnaround.clone().map(|r| &text[r]),
            is_study: e.study,
            bars: &bars[e.bars.clone()],
            bar_close_time: e.bar_close_time,
        })
    }

    /// How many keys.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether no key is present (the "future axis points" `timescale_update`).
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

/// A value in a `qsd` quote update.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum QuoteValue {
    /// A number (`lp`, `ch`, `volume`…).
    Number(f64),
    /// A string (`description`, `update_mode`…).
    Text(String),
    /// A boolean (`is_tradable`…).
    Bool(bool),
    /// `null`.
    Null,
    /// An array or object, kept as its kind only.
    Nested,
}

/// Identity and trading facts of a resolved symbol (`symbol_resolved`'s info object).
///
/// The fields clients act on; the rest of the object is not kept.
#[derive(Debug, Clone, PartialEq, Default)]
#[non_exhaustive]
pub struct SymbolInfo {
    /// `name` (`BTCUSDT`).
    pub name: String,
    /// `full_name` (`BINANCE:BTCUSDT`; `HOSE_DLY:VCB` for delayed data).
    pub full_name: String,
    /// `pro_name`, the canonical `EXCHANGE:TICKER`.
    pub pro_name: String,
    /// `description`.
    pub description: String,
    /// `exchange` as displayed (`Binance`).
    pub exchange: String,
    /// `listed_exchange` (`BINANCE`).
    pub listed_exchange: String,
    /// `type` (`spot`, `stock`, `index`, `futures`…).
    pub kind: String,
    /// `currency_code`.
    pub currency_code: String,
    /// `session` hours (`24x7`, `0930-1600`).
    pub session: String,
    /// `timezone` (`Etc/UTC`, `America/New_York`).
    pub timezone: String,
    /// `pricescale`: prices are multiples of `minmov / pricescale`.
    pub pricescale: f64,
    /// `minmov`.
    pub minmov: f64,
    /// `pointvalue`.
    pub pointvalue: f64,
    /// `has_intraday`.
    pub has_intraday: bool,
    /// `fractional`.
    pub fractional: bool,
    /// `is_tradable`.
    pub is_tradable: bool,
    /// `delay` in seconds for delayed feeds.
    pub delay: Option<i64>,
}

/// A parsed server message, borrowing the payload and the parser.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub enum ServerMessage<'a> {
    /// The hello that opens every connection.
    Hello(Hello<'a>),
    /// `series_loading [cs, series, turnaround]`.
    SeriesLoading {
        /// Chart session id.
        session: &'a str,
        /// Series id.
        series: &'a str,
        /// Turnaround id.
        turnaround: &'a str,
    },
    /// `symbol_resolved [cs, symbol_id, info]`.
    SymbolResolved {
        /// Chart session id.
        session: &'a str,
        /// Symbol id the client chose.
        symbol_id: &'a str,
        /// The info object.
        info: Box<SymbolInfo>,
    },
    /// `timescale_update [cs, {series…}, axis]`: history, or a new bar opening.
    TimescaleUpdate {
        /// Chart session id.
        session: &'a str,
        /// Per-series data.
        data: SeriesData<'a>,
    },
    /// `du [cs, {series…}]`: the full values of the forming bar.
    DataUpdate {
        /// Chart session id.
        session: &'a str,
        /// Per-series data.
        data: SeriesData<'a>,
    },
    /// `series_completed [cs, series, update_mode, turnaround, …]`.
    SeriesCompleted {
        /// Chart session id.
        session: &'a str,
        /// Series id.
        series: &'a str,
        /// `streaming`, `delayed_streaming_900`…
        update_mode: &'a str,
        /// Turnaround id.
        turnaround: Option<&'a str>,
    },
    /// `series_timeframe [cs, series, turnaround, left, right, range, final]`.
    SeriesTimeframe {
        /// Chart session id.
        session: &'a str,
        /// Series id.
        series: &'a str,
    },
    /// `symbol_error [cs, symbol_id, reason, kind?, detail?]`.
    SymbolError {
        /// Chart session id.
        session: &'a str,
        /// Symbol id the client chose.
        symbol_id: &'a str,
        /// `invalid symbol`, `permission denied`…
        reason: &'a str,
        /// For `permission denied`: `symbol` or `group`.
        kind: Option<&'a str>,
        /// For `permission denied`: the group (`economics_paid`) or symbol.
        detail: Option<&'a str>,
    },
    /// `series_error [cs, series, turnaround, reason, node]`.
    SeriesError {
        /// Chart session id.
        session: &'a str,
        /// Series id.
        series: &'a str,
        /// Turnaround id.
        turnaround: Option<&'a str>,
        /// `resolve error`, `seconds_not_entitled`, `custom_resolution`…
        reason: &'a str,
    },
    /// `critical_error [session, reason, detail]`: the server rejected a call's arguments.
    CriticalError {
        /// Chart or quote session id (may be empty).
        session: &'a str,
        /// `invalid parameters`, `invalid timezone`, `invalid_parameters`…
        reason: &'a str,
        /// `method: create_series. args: "[…]"`, when sent.
        detail: Option<&'a str>,
    },
    /// `protocol_error [text]`; the server closes the connection after it.
    ProtocolError {
        /// `bad auth token`, `wrong data`…
        text: &'a str,
    },
    /// `qsd [qs, {"n": symbol, "s": status, "v": {…}}]`: a sparse quote delta.
    QuoteData {
        /// Quote session id.
        session: &'a str,
        /// The symbol string exactly as added.
        symbol: &'a str,
        /// `ok`, `error`, `permission_denied`…
        status: &'a str,
        /// The fields in this delta.
        fields: Vec<(&'a str, QuoteValue)>,
    },
    /// `quote_completed [qs, symbol]`.
    QuoteCompleted {
        /// Quote session id.
        session: &'a str,
        /// The symbol string as added.
        symbol: &'a str,
    },
    /// Any other method (studies, `series_deleted`, …), kept by name.
    Other {
        /// The method name.
        method: &'a str,
    },
}

impl ServerMessage<'_> {
    /// The chart or quote session the message is addressed to, if it names one.
    pub fn session(&self) -> Option<&str> {
        match self {
            Self::SeriesLoading { session, .. }
            | Self::SymbolResolved { session, .. }
            | Self::TimescaleUpdate { session, .. }
            | Self::DataUpdate { session, .. }
            | Self::SeriesCompleted { session, .. }
            | Self::SeriesTimeframe { session, .. }
            | Self::SymbolError { session, .. }
            | Self::SeriesError { session, .. }
            | Self::CriticalError { session, .. }
            | Self::QuoteData { session, .. }
            | Self::QuoteCompleted { session, .. } => Some(session),
            Self::Hello(_) | Self::ProtocolError { .. } | Self::Other { .. } => None,
        }
    }
}

/// Parses server JSON payloads, reusing its buffers across calls.
///
/// # Examples
///
/// ```
/// use tvdatafeed::protocol::{MessageParser, ServerMessage};
///
/// let mut parser = MessageParser::new();
/// let mut payload = br#"{"m":"protocol_error","p":["bad auth token"]}"#.to_vec();
/// match parser.parse(&mut payload)? {
///     ServerMessage::ProtocolError { text } => assert_eq!(text, "bad auth token"),
///     other => panic!("{other:?}"),
/// }
/// # Ok::<(), tvdatafeed::protocol::MessageError>(())
/// ```
pub struct MessageParser {
    buffers: Buffers,
    tape: Tape<'static>,
    entries: Vec<RawEntry>,
    bars: Vec<IndexedBar>,
    text: String,
}

impl std::fmt::Debug for MessageParser {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MessageParser")
            .field("bars_capacity", &self.bars.capacity())
            .finish_non_exhaustive()
    }
}

impl Default for MessageParser {
    fn default() -> Self {
        Self::new()
    }
}

/// Times beyond ±10^11 s (year ±5000) are not bar times.
const MAX_ABS_TIME: f64 = 1e11;

impl MessageParser {
    /// A parser with empty buffers; they grow to fit the traffic and are kept.
    pub fn new() -> Self {
        Self {
            buffers: Buffers::new(512),
            tape: Tape(Vec::new()),
            entries: Vec::new(),
            bars: Vec::new(),
            text: String::new(),
        }
    }

    /// Parses one JSON payload (a [`Frame::Json`](super::frame::Frame::Json)). The payload is
    /// rewritten in place (string unescaping).
    ///
    /// # Errors
    ///
    /// [`MessageError`] when the payload is not JSON or a known method has the wrong shape.
    pub fn parse<'p>(
        &'p mut self,
        payload: &'p mut [u8],
    ) -> Result<ServerMessage<'p>, MessageError> {
        let Self {
            buffers,
            tape: tape_slot,
            entries,
            bars,
            text,
        } = self;
        entries.clear();
        bars.clear();
        text.clear();
        // Recycle the tape's allocation for this payload's lifetime.
        let mut tape: Tape<'p> = std::mem::replace(tape_slot, Tape(Vec::new())).reset();
        let filled = simd_json::fill_tape(payload, buffers, &mut tape);
        let result = match filled {
            Err(e) => Err(MessageError::Json(e.to_string())),
            Ok(()) => Walker {
                entries,
                bars,
                text,
            }
            .message(tape.as_value()),
        };
        *tape_slot = tape.reset();
        let kind = result?;
        let data = SeriesData {
            text: text.as_str(),
            entries: entries.as_slice(),
            bars: bars.as_slice(),
        };
        Ok(match kind {
            Parsed::Done(m) => m,
            Parsed::TimescaleUpdate { session } => ServerMessage::TimescaleUpdate { session, data },
            Parsed::DataUpdate { session } => ServerMessage::DataUpdate { session, data },
        })
    }
}

/// A message, or a series-data message whose data is still in the scratch vectors.
enum Parsed<'p> {
    Done(ServerMessage<'p>),
    TimescaleUpdate { session: &'p str },
    DataUpdate { session: &'p str },
}

struct Walker<'s> {
    entries: &'s mut Vec<RawEntry>,
    bars: &'s mut Vec<IndexedBar>,
    text: &'s mut String,
}

fn shape(method: &'static str, what: &'static str) -> MessageError {
    MessageError::Shape { method, what }
}

/// `p[i]` as a string.
fn str_at<'t, 'i>(
    p: &Value<'t, 'i>,
    i: usize,
    method: &'static str,
    what: &'static str,
) -> Result<&'i str, MessageError> {
    p.get_idx(i)
        .and_then(|v| v.into_string())
        .ok_or(shape(method, what))
}

/// `p[i]` as a string when present and a string.
fn opt_str<'i>(p: &Value<'_, 'i>, i: usize) -> Option<&'i str> {
    p.get_idx(i).and_then(|v| v.into_string())
}

impl Walker<'_> {
    fn message<'p>(self, root: Value<'_, 'p>) -> Result<Parsed<'p>, MessageError> {
        if root.as_object().is_none() {
            return Err(MessageError::NotAMessage);
        }
        let Some(method) = root.get("m").and_then(|m| m.into_string()) else {
            return hello(&root).map(Parsed::Done);
        };
        let p = root.get("p").filter(|p| p.as_array().is_some());
        let Some(p) = p else {
            return Ok(Parsed::Done(ServerMessage::Other { method }));
        };
        let msg = match method {
            "du" => {
                let session = str_at(&p, 0, "du", "session")?;
                self.series_data("du", &p)?;
                return Ok(Parsed::DataUpdate { session });
            }
            "timescale_update" => {
                let session = str_at(&p, 0, "timescale_update", "session")?;
                self.series_data("timescale_update", &p)?;
                return Ok(Parsed::TimescaleUpdate { session });
            }
            "series_loading" => ServerMessage::SeriesLoading {
                session: str_at(&p, 0, "series_loading", "session")?,
                series: str_at(&p, 1, "series_loading", "series")?,
                turnaround: opt_str(&p, 2).unwrap_or(""),
            },
            "symbol_resolved" => ServerMessage::SymbolResolved {
                session: str_at(&p, 0, "symbol_resolved", "session")?,
                symbol_id: str_at(&p, 1, "symbol_resolved", "symbol id")?,
                info: Box::new(symbol_info(
                    &p.get_idx(2).ok_or(shape("symbol_resolved", "info"))?,
                )?),
            },
            "series_completed" => ServerMessage::SeriesCompleted {
                session: str_at(&p, 0, "series_completed", "session")?,
                series: str_at(&p, 1, "series_completed", "series")?,
                update_mode: opt_str(&p, 2).unwrap_or(""),
                turnaround: opt_str(&p, 3),
            },
            "series_timeframe" => ServerMessage::SeriesTimeframe {
                session: str_at(&p, 0, "series_timeframe", "session")?,
                series: str_at(&p, 1, "series_timeframe", "series")?,
            },
            "symbol_error" => ServerMessage::SymbolError {
                session: str_at(&p, 0, "symbol_error", "session")?,
                symbol_id: str_at(&p, 1, "symbol_error", "symbol id")?,
                reason: opt_str(&p, 2).unwrap_or(""),
                kind: opt_str(&p, 3),
                detail: opt_str(&p, 4),
            },
            "series_error" => ServerMessage::SeriesError {
                session: str_at(&p, 0, "series_error", "session")?,
                series: str_at(&p, 1, "series_error", "series")?,
                turnaround: opt_str(&p, 2),
                reason: opt_str(&p, 3).unwrap_or(""),
            },
            "critical_error" => ServerMessage::CriticalError {
                // TVKIT assumes an object-only variant: keep it, with an empty session.
                session: opt_str(&p, 0).unwrap_or(""),
                reason: opt_str(&p, 1).unwrap_or(""),
                detail: opt_str(&p, 2),
            },
            "protocol_error" => ServerMessage::ProtocolError {
                text: opt_str(&p, 0).unwrap_or(""),
            },
            "qsd" => quote_data(&p)?,
            "quote_completed" => ServerMessage::QuoteCompleted {
                session: str_at(&p, 0, "quote_completed", "session")?,
                symbol: opt_str(&p, 1).unwrap_or(""),
            },
            _ => ServerMessage::Other { method },
        };
        Ok(Parsed::Done(msg))
    }

    fn push_text(&mut self, s: &str) -> Range<usize> {
        let start = self.text.len();
        self.text.push_str(s);
        start..self.text.len()
    }

    /// Fills `entries`, `bars` and `text` from `p[1]`, the `{key: {s|st, t, lbs}}` object.
    fn series_data(mut self, method: &'static str, p: &Value<'_, '_>) -> Result<(), MessageError> {
        let obj = p
            .get_idx(1)
            .and_then(|v| v.as_object())
            .ok_or(shape(method, "series object"))?;
        for (key, v) in obj.iter() {
            let key_range = self.push_text(key);
            let turnaround = v
                .get("t")
                .and_then(|t| t.into_string())
                .map(|t| self.push_text(t));
            let bar_close_time = v
                .get("lbs")
                .and_then(|l| l.get("bar_close_time"))
                .and_then(|t| t.cast_f64())
                .filter(|t| t.is_finite() && t.abs() < MAX_ABS_TIME)
                .map(|t| t as i64);
            let start = self.bars.len();
            let study = v.get("s").is_none() && v.get("st").is_some();
            if let Some(s) = v.get("s") {
                let arr = s.as_array().ok_or(shape(method, "s"))?;
                self.bars.reserve(arr.len());
                for item in arr.iter() {
                    let bar = parse_bar(&item).ok_or_else(|| MessageError::InvalidBar {
                        method,
                        series: key.chars().take(64).collect(),
                    })?;
                    self.bars.push(bar);
                }
            }
            self.entries.push(RawEntry {
                key: key_range,
                turnaround,
                study,
                bars: start..self.bars.len(),
                bar_close_time,
            });
        }
        Ok(())
    }
}

/// `{"i": index, "v": [t, o, h, l, c, vol?, …]}`.
///
/// One pass over the object and one over the array (a tape's `get` walks from the start each
/// time): this runs 5,000 times for a history page.
fn parse_bar(item: &Value<'_, '_>) -> Option<IndexedBar> {
    let (mut index, mut values) = (None, None);
    for (k, x) in item.as_object()?.iter() {
        match k {
            "i" if index.is_none() => index = Some(x),
            "v" if values.is_none() => values = Some(x),
            _ => {}
        }
    }
    let index = index?.cast_f64()?;
    let v = values?;
    let v = v.as_array()?;
    if v.len() < 5 || !index.is_finite() || index.abs() > 1e15 {
        return None;
    }
    let mut items = [None; 6];
    for (slot, x) in items.iter_mut().zip(v.iter()) {
        *slot = Some(x);
    }
    let num = |i: usize| {
        items[i]
            .and_then(|x| x.cast_f64())
            .filter(|x| x.is_finite())
    };
    let time = num(0)?;
    if time.abs() >= MAX_ABS_TIME {
        return None;
    }
    let volume = match items[5] {
        None => None,
        Some(x) if x.is_null() => None,
        Some(x) => Some(x.cast_f64().filter(|x| x.is_finite())?),
    };
    Some(IndexedBar {
        index: index as i64,
        bar: Bar {
            time: time.floor() as i64,
            open: num(1)?,
            high: num(2)?,
            low: num(3)?,
            close: num(4)?,
            volume,
        },
    })
}

fn hello<'p>(root: &Value<'_, 'p>) -> Result<ServerMessage<'p>, MessageError> {
    let session_id = root
        .get("session_id")
        .and_then(|v| v.into_string())
        .ok_or(MessageError::NotAMessage)?;
    let s = |k: &str| root.get(k).and_then(|v| v.into_string());
    let i = |k: &str| root.get(k).and_then(|v| v.cast_f64()).map(|x| x as i64);
    Ok(ServerMessage::Hello(Hello {
        session_id,
        timestamp: i("timestamp"),
        release: s("release"),
        protocol: s("protocol"),
        via: s("via"),
        auth_scheme_version: i("auth_scheme_vsn"),
    }))
}

fn symbol_info(v: &Value<'_, '_>) -> Result<SymbolInfo, MessageError> {
    if v.as_object().is_none() {
        return Err(shape("symbol_resolved", "info"));
    }
    let s = |k: &str| {
        v.get(k)
            .and_then(|x| x.into_string())
            .unwrap_or_default()
            .to_owned()
    };
    let f = |k: &str, d: f64| v.get(k).and_then(|x| x.cast_f64()).unwrap_or(d);
    let b = |k: &str| v.get(k).and_then(|x| x.as_bool()).unwrap_or(false);
    Ok(SymbolInfo {
        name: s("name"),
        full_name: s("full_name"),
        pro_name: s("pro_name"),
        description: s("description"),
        exchange: s("exchange"),
        listed_exchange: s("listed_exchange"),
        kind: s("type"),
        currency_code: s("currency_code"),
        session: s("session"),
        timezone: s("timezone"),
        pricescale: f("pricescale", 1.0),
        minmov: f("minmov", 1.0),
        pointvalue: f("pointvalue", 1.0),
        has_intraday: b("has_intraday"),
        fractional: b("fractional"),
        is_tradable: b("is_tradable"),
        delay: v.get("delay").and_then(|x| x.cast_f64()).map(|x| x as i64),
    })
}

fn quote_data<'p>(p: &Value<'_, 'p>) -> Result<ServerMessage<'p>, MessageError> {
    let session = str_at(p, 0, "qsd", "session")?;
    let body = p
        .get_idx(1)
        .filter(|b| b.as_object().is_some())
        .ok_or(shape("qsd", "body"))?;
    let symbol = body.get("n").and_then(|v| v.into_string()).unwrap_or("");
    let status = body.get("s").and_then(|v| v.into_string()).unwrap_or("");
    let mut fields = Vec::new();
    if let Some(values) = body.get("v").and_then(|v| v.as_object()) {
        for (k, x) in values.iter() {
            let value = if let Some(n) = x.cast_f64() {
                QuoteValue::Number(n)
            } else if let Some(s) = x.into_string() {
                QuoteValue::Text(s.to_owned())
            } else if let Some(b) = x.as_bool() {
                QuoteValue::Bool(b)
            } else if x.is_null() {
                QuoteValue::Null
            } else {
                QuoteValue::Nested
            };
            fields.push((k, value));
        }
    }
    Ok(ServerMessage::QuoteData {
        session,
        symbol,
        status,
        fields,
    })
}
