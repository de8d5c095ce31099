//! The server side of the codec: client requests parsed, server messages written.
//!
//! Used by the protocol simulator (`sim`) and by tests that play the server. The writers emit
//! the exact shapes of protocol.md §3 (compact ASCII JSON, `t`/`t_ms` where the real server puts
//! them), each as one frame appended to a buffer.
#![forbid(unsafe_code)]

use simd_json::{BorrowedValue, prelude::*};

use super::{
    frame::frame_in_place,
    json::{write_f64, write_i64, write_str, write_u64},
    message::MessageError,
};
use crate::Bar;

/// A client request as the server sees it: the method and its parameters, owned.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum ClientRequest {
    /// `set_auth_token [token]`. `Debug` shows the token: the simulator never logs it.
    SetAuthToken(String),
    /// `set_locale [lang, country]`.
    SetLocale,
    /// `set_data_quality [q]`.
    SetDataQuality,
    /// `chart_create_session [cs, …]`.
    ChartCreateSession {
        /// Chart session id.
        session: String,
    },
    /// `chart_delete_session [cs]`.
    ChartDeleteSession {
        /// Chart session id.
        session: String,
    },
    /// `switch_timezone [cs, tz]`.
    SwitchTimezone {
        /// Chart session id.
        session: String,
        /// The zone.
        timezone: String,
    },
    /// `resolve_symbol [cs, symbol_id, spec]`; `spec` is `={…}` or a plain `EXCH:TICKER`.
    ResolveSymbol {
        /// Chart session id.
        session: String,
        /// Client symbol id.
        symbol_id: String,
        /// The symbol named by the spec (`symbol` key, or the plain string).
        symbol: String,
        /// `session` key of the spec (`regular` when absent).
        trading_session: String,
    },
    /// `create_series [cs, series, turnaround, symbol_id, resolution, bars, range?]`.
    CreateSeries {
        /// Chart session id.
        session: String,
        /// Series id.
        series: String,
        /// Turnaround id.
        turnaround: String,
        /// Client symbol id.
        symbol_id: String,
        /// Resolution string as sent.
        resolution: String,
        /// Bar count (`["bar_count", t, n]` gives `n`).
        bars: u64,
        /// Range string (`""`, `"r,from:to"`, presets).
        range: String,
        /// The parameters after the session id, as `critical_error` quotes them.
        args: String,
    },
    /// `modify_series [cs, series, turnaround, symbol_id, resolution, range?…]`.
    ModifySeries {
        /// Chart session id.
        session: String,
        /// Series id.
        series: String,
        /// Turnaround id.
        turnaround: String,
        /// Client symbol id.
        symbol_id: String,
        /// Resolution string.
        resolution: String,
        /// Range string (the last string parameter).
        range: String,
        /// The parameters after the session id, as `critical_error` quotes them.
        args: String,
    },
    /// `remove_series [cs, series]`.
    RemoveSeries {
        /// Chart session id.
        session: String,
        /// Series id.
        series: String,
    },
    /// `request_more_data [cs, series, count]`.
    RequestMoreData {
        /// Chart session id.
        session: String,
        /// Series id.
        series: String,
        /// Older bars wanted.
        count: u64,
    },
    /// `quote_create_session [qs]`.
    QuoteCreateSession {
        /// Quote session id.
        session: String,
    },
    /// `quote_delete_session [qs]`.
    QuoteDeleteSession {
        /// Quote session id.
        session: String,
    },
    /// `quote_set_fields [qs, f…]`.
    QuoteSetFields {
        /// Quote session id.
        session: String,
        /// Field names.
        fields: Vec<String>,
    },
    /// `quote_add_symbols [qs, sym…]`; `flags` is true when a trailing object was sent.
    QuoteAddSymbols {
        /// Quote session id.
        session: String,
        /// Symbols as sent.
        symbols: Vec<String>,
        /// Whether the obsolete `{"flags":[…]}` object was appended.
        flags: bool,
    },
    /// `quote_remove_symbols [qs, sym…]`.
    QuoteRemoveSymbols {
        /// Quote session id.
        session: String,
        /// Symbols.
        symbols: Vec<String>,
    },
    /// `quote_fast_symbols [qs, sym…]`.
    QuoteFastSymbols {
        /// Quote session id.
        session: String,
        /// Symbols.
        symbols: Vec<String>,
    },
    /// Any other method, by name.
    Other(String),
}

fn s(v: &BorrowedValue<'_>, i: usize) -> Option<String> {
    v.get_idx(i).and_then(|x| x.as_str()).map(str::to_owned)
}

fn strings_from(v: &BorrowedValue<'_>, from: usize) -> Vec<String> {
    v.as_array()
        .map(|a| {
            a.iter()
                .skip(from)
                .filter_map(|x| x.as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default()
}

/// How the server quotes arguments in `critical_error`: `[a, b, c]`.
fn quoted_args(v: &BorrowedValue<'_>) -> String {
    let parts: Vec<String> = v
        .as_array()
        .map(|a| {
            a.iter()
                .skip(1)
                .map(|x| match x.as_str() {
                    Some(s) => s.to_owned(),
                    None => x.to_string(),
                })
                .collect()
        })
        .unwrap_or_default();
    format!("[{}]", parts.join(", "))
}

/// The symbol of a `resolve_symbol` spec: `={"symbol":…}`, `={"symbol":{…"symbol":…}}`, or
/// plain text.
pub(crate) fn spec_symbol(spec: &str) -> Option<(String, String)> {
    let Some(json) = spec.strip_prefix('=') else {
        return Some((spec.to_owned(), "regular".to_owned()));
    };
    let mut bytes = json.as_bytes().to_vec();
    let v = simd_json::to_borrowed_value(&mut bytes).ok()?;
    let inner = match v.get("symbol") {
        Some(x) if x.is_object() => x.clone(),
        _ => v.clone(),
    };
    let symbol = inner.get("symbol").and_then(|x| x.as_str())?.to_owned();
    let session = inner
        .get("session")
        .and_then(|x| x.as_str())
        .unwrap_or("regular")
        .to_owned();
    Some((symbol, session))
}

/// Parses one client JSON payload.
///
/// # Errors
///
/// [`MessageError`] when it is not JSON, not `{"m":…,"p":[…]}`, or a known method's parameters
/// have the wrong shape.
pub fn parse_client(payload: &mut [u8]) -> Result<ClientRequest, MessageError> {
    let v = simd_json::to_borrowed_value(payload).map_err(|e| MessageError::Json(e.to_string()))?;
    let method = v
        .get("m")
        .and_then(|m| m.as_str())
        .ok_or(MessageError::NotAMessage)?;
    let p = v
        .get("p")
        .filter(|p| p.is_array())
        .ok_or(MessageError::NotAMessage)?;
    let bad = |what: &'static str| MessageError::Shape {
        method: "client request",
        what,
    };
    let session = || s(p, 0).ok_or(bad("session"));
    Ok(match method {
        "set_auth_token" => ClientRequest::SetAuthToken(s(p, 0).ok_or(bad("token"))?),
        "set_locale" => ClientRequest::SetLocale,
        "set_data_quality" => ClientRequest::SetDataQuality,
        "chart_create_session" => ClientRequest::ChartCreateSession {
            session: session()?,
        },
        "chart_delete_session" => ClientRequest::ChartDeleteSession {
            session: session()?,
        },
        "switch_timezone" => ClientRequest::SwitchTimezone {
            session: session()?,
            timezone: s(p, 1).ok_or(bad("timezone"))?,
        },
        "resolve_symbol" => {
            let spec = s(p, 2).ok_or(bad("spec"))?;
            let (symbol, trading_session) = spec_symbol(&spec).ok_or(bad("spec"))?;
            ClientRequest::ResolveSymbol {
                session: session()?,
                symbol_id: s(p, 1).ok_or(bad("symbol id"))?,
                symbol,
                trading_session,
            }
        }
        "create_series" => {
            let bars = match p.get_idx(5) {
                Some(x) if x.is_array() => x.get_idx(2).and_then(|n| n.cast_f64()),
                Some(x) => x.cast_f64(),
                None => None,
            };
            ClientRequest::CreateSeries {
                session: session()?,
                series: s(p, 1).ok_or(bad("series"))?,
                turnaround: s(p, 2).ok_or(bad("turnaround"))?,
                symbol_id: s(p, 3).ok_or(bad("symbol id"))?,
                resolution: s(p, 4).ok_or(bad("resolution"))?,
                bars: bars
                    .filter(|b| b.is_finite() && *b >= 0.0)
                    .ok_or(bad("bars"))? as u64,
                range: s(p, 6).unwrap_or_default(),
                args: quoted_args(p),
            }
        }
        "modify_series" => {
            let len = p.as_array().map_or(0, |a| a.len());
            let range = (5..len).rev().find_map(|i| s(p, i)).unwrap_or_default();
            ClientRequest::ModifySeries {
                session: session()?,
                series: s(p, 1).ok_or(bad("series"))?,
                turnaround: s(p, 2).ok_or(bad("turnaround"))?,
                symbol_id: s(p, 3).ok_or(bad("symbol id"))?,
                resolution: s(p, 4).ok_or(bad("resolution"))?,
                range,
                args: quoted_args(p),
            }
        }
        "remove_series" => ClientRequest::RemoveSeries {
            session: session()?,
            series: s(p, 1).ok_or(bad("series"))?,
        },
        "request_more_data" => ClientRequest::RequestMoreData {
            session: session()?,
            series: s(p, 1).ok_or(bad("series"))?,
            count: p
                .get_idx(2)
                .and_then(|n| n.cast_f64())
                .filter(|n| n.is_finite() && *n >= 0.0)
                .ok_or(bad("count"))? as u64,
        },
        "quote_create_session" => ClientRequest::QuoteCreateSession {
            session: session()?,
        },
        "quote_delete_session" => ClientRequest::QuoteDeleteSession {
            session: session()?,
        },
        "quote_set_fields" => ClientRequest::QuoteSetFields {
            session: session()?,
            fields: strings_from(p, 1),
        },
        "quote_add_symbols" => ClientRequest::QuoteAddSymbols {
            session: session()?,
            symbols: strings_from(p, 1),
            flags: p
                .as_array()
                .is_some_and(|a| a.iter().skip(1).any(|x| x.is_object())),
        },
        "quote_remove_symbols" => ClientRequest::QuoteRemoveSymbols {
            session: session()?,
            symbols: strings_from(p, 1),
        },
        "quote_fast_symbols" => ClientRequest::QuoteFastSymbols {
            session: session()?,
            symbols: strings_from(p, 1),
        },
        other => ClientRequest::Other(other.to_owned()),
    })
}

/// Server clock stamps: `t` (seconds) and `t_ms`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stamp {
    /// Milliseconds since the Unix epoch.
    pub ms: u64,
}

/// Writes server messages as frames into a buffer.
#[derive(Debug, Default)]
pub struct ServerWriter {
    /// The frames written so far; take them with [`std::mem::take`] or clear after sending.
    pub out: Vec<u8>,
}

impl ServerWriter {
    /// A writer with an empty buffer.
    pub fn new() -> Self {
        Self::default()
    }

    fn open(&mut self, method: &str) -> usize {
        let start = self.out.len();
        self.out.extend_from_slice(b"{\"m\":");
        write_str(&mut self.out, method);
        self.out.extend_from_slice(b",\"p\":[");
        start
    }

    fn close(&mut self, start: usize, stamp: Option<Stamp>) {
        self.out.push(b']');
        if let Some(st) = stamp {
            self.out.extend_from_slice(b",\"t\":");
            write_u64(&mut self.out, st.ms / 1000);
            self.out.extend_from_slice(b",\"t_ms\":");
            write_u64(&mut self.out, st.ms);
        }
        self.out.push(b'}');
        frame_in_place(&mut self.out, start);
    }

    fn strs(&mut self, items: &[&str]) {
        for (i, x) in items.iter().enumerate() {
            if i > 0 {
                self.out.push(b',');
            }
            write_str(&mut self.out, x);
        }
    }

    /// The hello: a bare object, first frame of a connection.
    pub fn hello(&mut self, session_id: &str, now: Stamp, via: &str) {
        let start = self.out.len();
        self.out.extend_from_slice(b"{\"session_id\":");
        write_str(&mut self.out, session_id);
        self.out.extend_from_slice(b",\"timestamp\":");
        write_u64(&mut self.out, now.ms / 1000);
        self.out.extend_from_slice(b",\"timestampMs\":");
        write_u64(&mut self.out, now.ms);
        self.out.extend_from_slice(
            b",\"release\":\"release_208-65\",\"studies_metadata_hash\":\"546dd4c54266ca5cb916ea61bb48bb5b34fbd89e\",\"auth_scheme_vsn\":2,\"protocol\":\"json\",\"via\":",
        );
        write_str(&mut self.out, via);
        self.out.extend_from_slice(b",\"javastudies\":[\"3.66\"]}");
        frame_in_place(&mut self.out, start);
    }

    /// A heartbeat `~h~n`.
    pub fn heartbeat(&mut self, n: u64) {
        super::frame::encode_heartbeat(n, &mut self.out);
    }

    /// `series_loading [cs, series, turnaround]`.
    pub fn series_loading(&mut self, cs: &str, series: &str, turnaround: &str, now: Stamp) {
        let st = self.open("series_loading");
        self.strs(&[cs, series, turnaround]);
        self.close(st, Some(now));
    }

    /// `symbol_resolved [cs, symbol_id, info]` with a realistic info object.
    pub fn symbol_resolved(
        &mut self,
        cs: &str,
        symbol_id: &str,
        info: &ResolvedSymbol<'_>,
        now: Stamp,
    ) {
        let st = self.open("symbol_resolved");
        self.strs(&[cs, symbol_id]);
        let o = &mut self.out;
        o.extend_from_slice(b",{\"name\":");
        write_str(o, info.ticker);
        for (k, v) in [
            ("full_name", info.full_name),
            ("pro_name", info.full_name),
            ("description", info.description),
            ("exchange", info.exchange),
            ("listed_exchange", info.exchange),
            ("type", info.kind),
            ("currency_code", info.currency),
            ("session", info.session),
            ("timezone", info.timezone),
            ("subsession_id", info.subsession),
        ] {
            o.push(b',');
            write_str(o, k);
            o.push(b':');
            write_str(o, v);
        }
        o.extend_from_slice(b",\"pricescale\":");
        write_u64(o, info.pricescale);
        o.extend_from_slice(b",\"minmov\":1,\"minmove2\":0,\"pointvalue\":1.0,\"has_intraday\":true,\"fractional\":false,\"is_tradable\":true,\"has_adjustment\":false,\"has_extended_hours\":false,\"visible_plots_set\":");
        write_str(o, if info.has_volume { "ohlcv" } else { "ohlc" });
        o.extend_from_slice(b",\"aliases\":[],\"alternatives\":[]}");
        self.close(st, Some(now));
    }

    fn bar_obj(o: &mut Vec<u8>, index: i64, bar: &Bar) {
        o.extend_from_slice(b"{\"i\":");
        write_i64(o, index);
        o.extend_from_slice(b",\"v\":[");
        write_f64(o, bar.time as f64);
        for x in [bar.open, bar.high, bar.low, bar.close] {
            o.push(b',');
            write_f64(o, x);
        }
        if let Some(v) = bar.volume {
            o.push(b',');
            write_f64(o, v);
        }
        o.extend_from_slice(b"]}");
    }

    fn series_obj(
        &mut self,
        series: &str,
        turnaround: &str,
        bars: &[(i64, Bar)],
        indexes: bool,
        close_time: Option<i64>,
    ) {
        let o = &mut self.out;
        o.push(b'{');
        write_str(o, series);
        o.extend_from_slice(b":{\"s\":[");
        for (i, (index, bar)) in bars.iter().enumerate() {
            if i > 0 {
                o.push(b',');
            }
            Self::bar_obj(o, *index, bar);
        }
        o.extend_from_slice(if indexes {
            b"],\"ns\":{\"d\":\"\",\"indexes\":[]},\"t\":"
        } else {
            b"],\"ns\":{\"d\":\"\",\"indexes\":\"nochange\"},\"t\":"
        });
        write_str(o, turnaround);
        if let Some(t) = close_time {
            o.extend_from_slice(b",\"lbs\":{\"bar_close_time\":");
            write_i64(o, t);
            o.push(b'}');
        }
        o.extend_from_slice(b"}}");
    }

    /// `timescale_update [cs, {series: {s: bars…}}, {index, zoffset, changes, marks, index_diff}]`.
    ///
    /// `bars` are `(i, bar)` pairs, oldest first; `axis_index` is `p[2].index`.
    #[allow(
        clippy::too_many_arguments,
        reason = "mirrors the wire message's fields"
    )]
    pub fn timescale_update(
        &mut self,
        cs: &str,
        series: &str,
        turnaround: &str,
        bars: &[(i64, Bar)],
        close_time: Option<i64>,
        axis_index: i64,
        zoffset: i64,
        now: Stamp,
    ) {
        // A bar takes about 90 bytes here (its object and its time in `changes`): one
        // allocation for a long history instead of a dozen that copy it as it grows.
        self.out
            .reserve(bars.len().saturating_mul(112).saturating_add(512));
        let st = self.open("timescale_update");
        self.strs(&[cs]);
        self.out.push(b',');
        self.series_obj(series, turnaround, bars, axis_index == 0, close_time);
        let o = &mut self.out;
        o.extend_from_slice(b",{\"index\":");
        write_i64(o, axis_index);
        o.extend_from_slice(b",\"zoffset\":");
        write_i64(o, zoffset);
        o.extend_from_slice(b",\"changes\":[");
        for (i, (_, b)) in bars.iter().enumerate() {
            if i > 0 {
                o.push(b',');
            }
            write_f64(o, b.time as f64);
        }
        o.extend_from_slice(b"],\"marks\":[],\"index_diff\":[]}");
        self.close(st, Some(now));
    }

    /// `du [cs, {series: {s: [bar]}}]`: the forming bar's full values.
    pub fn du(
        &mut self,
        cs: &str,
        series: &str,
        turnaround: &str,
        index: i64,
        bar: &Bar,
        close_time: Option<i64>,
    ) {
        let st = self.open("du");
        self.strs(&[cs]);
        self.out.push(b',');
        self.series_obj(series, turnaround, &[(index, *bar)], false, close_time);
        self.close(st, None);
    }

    /// `series_completed [cs, series, mode, turnaround, {"rt_update_period":5}]`.
    pub fn series_completed(
        &mut self,
        cs: &str,
        series: &str,
        mode: &str,
        turnaround: &str,
        now: Stamp,
    ) {
        let st = self.open("series_completed");
        self.strs(&[cs, series, mode, turnaround]);
        self.out.extend_from_slice(b",{\"rt_update_period\":5}");
        self.close(st, Some(now));
    }

    /// `symbol_error [cs, symbol_id, reason, extra…]`.
    pub fn symbol_error(&mut self, cs: &str, symbol_id: &str, reason: &[&str], now: Stamp) {
        let st = self.open("symbol_error");
        self.strs(&[cs, symbol_id]);
        for r in reason {
            self.out.push(b',');
            write_str(&mut self.out, r);
        }
        self.close(st, Some(now));
    }

    /// `series_error [cs, series, turnaround, reason, node]`.
    pub fn series_error(
        &mut self,
        cs: &str,
        series: &str,
        turnaround: &str,
        reason: &str,
        node: &str,
    ) {
        let st = self.open("series_error");
        self.strs(&[cs, series, turnaround, reason, node]);
        self.close(st, None);
    }

    /// `critical_error [session, reason, detail]`.
    pub fn critical_error(&mut self, session: &str, reason: &str, detail: &str) {
        let st = self.open("critical_error");
        self.strs(&[session, reason, detail]);
        self.close(st, None);
    }

    /// `protocol_error [text]`.
    pub fn protocol_error(&mut self, text: &str) {
        let st = self.open("protocol_error");
        self.strs(&[text]);
        self.close(st, None);
    }

    /// `qsd [qs, {"n": symbol, "s": status, "v": {field: number…}}]`.
    pub fn qsd(
        &mut self,
        qs: &str,
        symbol: &str,
        status: &str,
        fields: &[(&str, f64)],
        text: &[(&str, &str)],
    ) {
        let st = self.open("qsd");
        self.strs(&[qs]);
        let o = &mut self.out;
        o.extend_from_slice(b",{\"n\":");
        write_str(o, symbol);
        o.extend_from_slice(b",\"s\":");
        write_str(o, status);
        o.extend_from_slice(b",\"v\":{");
        let mut first = true;
        for (k, v) in fields {
            if !first {
                o.push(b',');
            }
            first = false;
            write_str(o, k);
            o.push(b':');
            write_f64(o, *v);
        }
        for (k, v) in text {
            if !first {
                o.push(b',');
            }
            first = false;
            write_str(o, k);
            o.push(b':');
            write_str(o, v);
        }
        o.extend_from_slice(b"}}");
        self.close(st, None);
    }

    /// `quote_completed [qs, symbol]`.
    pub fn quote_completed(&mut self, qs: &str, symbol: &str) {
        let st = self.open("quote_completed");
        self.strs(&[qs, symbol]);
        self.close(st, None);
    }

    /// Appends a frame with raw payload bytes (fault injection: garbage JSON, unknown methods).
    pub fn raw(&mut self, payload: &[u8]) {
        super::frame::encode_frame(payload, &mut self.out);
    }
}

/// What [`ServerWriter::symbol_resolved`] says about a symbol.
#[derive(Debug, Clone, Copy)]
pub struct ResolvedSymbol<'a> {
    /// `EXCHANGE:TICKER`.
    pub full_name: &'a str,
    /// Ticker.
    pub ticker: &'a str,
    /// Exchange.
    pub exchange: &'a str,
    /// Description.
    pub description: &'a str,
    /// `spot`, `stock`, `index`, `futures`…
    pub kind: &'a str,
    /// Currency code.
    pub currency: &'a str,
    /// Session hours (`24x7`).
    pub session: &'a str,
    /// `regular` or `extended`.
    pub subsession: &'a str,
    /// Timezone.
    pub timezone: &'a str,
    /// Price scale.
    pub pricescale: u64,
    /// Whether bars carry a volume.
    pub has_volume: bool,
}
