//! Typed client requests, written as `{"m":<method>,"p":[…]}` frames.
//!
//! Wire shapes follow protocol.md §2; each variant's doc quotes the parameter list.
#![forbid(unsafe_code)]

use super::{frame::frame_in_place, json};
use crate::{Interval, Symbol};

/// How prices are adjusted for corporate actions (`resolve_symbol`'s `adjustment`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
#[non_exhaustive]
pub enum Adjustment {
    /// Adjusted for splits, TradingView's default.
    #[default]
    Splits,
    /// Adjusted for splits and dividends.
    Dividends,
    /// Raw prices.
    None,
}

impl Adjustment {
    /// The wire value.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Splits => "splits",
            Self::Dividends => "dividends",
            Self::None => "none",
        }
    }
}

/// Which trading session a series covers (`resolve_symbol`'s `session`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
#[non_exhaustive]
pub enum TradingSession {
    /// Regular trading hours.
    #[default]
    Regular,
    /// Regular plus pre- and post-market hours.
    Extended,
}

impl TradingSession {
    /// The wire value.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Regular => "regular",
            Self::Extended => "extended",
        }
    }
}

/// What `resolve_symbol` asks for: the symbol and how its prices are presented.
///
/// Written as the `=`-prefixed JSON string the server expects:
/// `={"adjustment":"splits","session":"regular","symbol":"BINANCE:BTCUSDT"}`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub struct SymbolSpec {
    /// The symbol.
    pub symbol: Symbol,
    /// Price adjustment.
    pub adjustment: Adjustment,
    /// Trading session.
    pub session: TradingSession,
    /// Convert prices to this currency (`"USD"`, `"EUR"`…); `None` keeps the symbol's own.
    pub currency: Option<String>,
    /// Back-adjust continuous futures at contract rolls (`"backadjustment":"default"`).
    pub back_adjustment: bool,
}

impl SymbolSpec {
    /// The spec TradingView's web client sends by default: split-adjusted, regular session.
    pub fn new(symbol: Symbol) -> Self {
        Self {
            symbol,
            adjustment: Adjustment::default(),
            session: TradingSession::default(),
            currency: None,
            back_adjustment: false,
        }
    }

    /// Sets the adjustment.
    #[must_use]
    pub fn with_adjustment(mut self, adjustment: Adjustment) -> Self {
        self.adjustment = adjustment;
        self
    }

    /// Sets the trading session.
    #[must_use]
    pub fn with_session(mut self, session: TradingSession) -> Self {
        self.session = session;
        self
    }

    /// Converts prices to `currency` (an ISO code such as `"USD"`).
    #[must_use]
    pub fn with_currency(mut self, currency: impl Into<String>) -> Self {
        self.currency = Some(currency.into());
        self
    }

    /// Back-adjusts continuous futures.
    #[must_use]
    pub fn with_back_adjustment(mut self, on: bool) -> Self {
        self.back_adjustment = on;
        self
    }

    /// The `=`-prefixed JSON text (not yet quoted as a JSON string).
    pub fn to_wire(&self) -> String {
        let mut out = b"={".to_vec();
        out.extend_from_slice(b"\"adjustment\":");
        json::write_str(&mut out, self.adjustment.as_str());
        if self.back_adjustment {
            out.extend_from_slice(b",\"backadjustment\":\"default\"");
        }
        if let Some(c) = &self.currency {
            out.extend_from_slice(b",\"currency-id\":");
            json::write_str(&mut out, c);
        }
        out.extend_from_slice(b",\"session\":");
        json::write_str(&mut out, self.session.as_str());
        out.extend_from_slice(b",\"symbol\":");
        json::write_str(&mut out, self.symbol.as_str());
        out.push(b'}');
        // Only ASCII was written: `write_str` escapes everything else.
        String::from_utf8(out).unwrap_or_default()
    }
}

/// Which bars a series loads: the last `n`, or those between two instants.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum SeriesRange {
    /// The last `n` bars (the forming bar included), range `""`.
    Count(u32),
    /// Bars whose open time is in `from..=to` (UTC seconds), range `"r,<from>:<to>"`, with
    /// `max_bars` in the count slot.
    Range {
        /// First open time wanted.
        from: i64,
        /// Last open time wanted.
        to: i64,
        /// Upper bound on bars sent (the account's history depth is a natural choice).
        max_bars: u32,
    },
}

impl SeriesRange {
    fn count(self) -> u32 {
        match self {
            Self::Count(n) => n,
            Self::Range { max_bars, .. } => max_bars,
        }
    }

    fn write_range(self, out: &mut Vec<u8>) {
        match self {
            Self::Count(_) => out.extend_from_slice(b"\"\""),
            Self::Range { from, to, .. } => {
                out.extend_from_slice(b"\"r,");
                json::write_i64(out, from);
                out.push(b':');
                json::write_i64(out, to);
                out.push(b'"');
            }
        }
    }
}

/// A client → server request. [`Request::encode`] appends it as one frame.
///
/// Session, series, symbol and turnaround ids are the client's own strings; the server echoes
/// them back.
#[derive(Debug, Clone, Copy, PartialEq)]
#[non_exhaustive]
pub enum Request<'a> {
    /// `set_auth_token [token]`: a JWT or `"unauthorized_user_token"`. `Debug` shows the token:
    /// never log a `Request` that holds a real one.
    SetAuthToken {
        /// The token.
        token: &'a str,
    },
    /// `set_locale [language, country]`.
    SetLocale {
        /// `"en"`.
        language: &'a str,
        /// `"US"`.
        country: &'a str,
    },
    /// `chart_create_session [cs, ""]`.
    ChartCreateSession {
        /// Chart session id (`cs_…`).
        session: &'a str,
    },
    /// `chart_delete_session [cs]`.
    ChartDeleteSession {
        /// Chart session id.
        session: &'a str,
    },
    /// `switch_timezone [cs, tz]`; bar times stay UTC whatever the zone.
    SwitchTimezone {
        /// Chart session id.
        session: &'a str,
        /// IANA name, `"Etc/UTC"` or `"exchange"`.
        timezone: &'a str,
    },
    /// `resolve_symbol [cs, symbol_id, "={…spec…}"]`.
    ResolveSymbol {
        /// Chart session id.
        session: &'a str,
        /// Client id for the resolved symbol (`sds_sym_1`).
        symbol_id: &'a str,
        /// What to resolve.
        spec: &'a SymbolSpec,
    },
    /// `create_series [cs, series_id, turnaround, symbol_id, resolution, bars, range]`.
    CreateSeries {
        /// Chart session id.
        session: &'a str,
        /// Client id for the series (`sds_1`).
        series_id: &'a str,
        /// Turnaround id echoed in replies (`s1`).
        turnaround: &'a str,
        /// A resolved symbol id.
        symbol_id: &'a str,
        /// Bar resolution.
        interval: Interval,
        /// Which bars.
        range: SeriesRange,
    },
    /// `modify_series [cs, series_id, turnaround, symbol_id, resolution, range]`.
    ModifySeries {
        /// Chart session id.
        session: &'a str,
        /// Series id.
        series_id: &'a str,
        /// A new turnaround id, so that stale replies can be told apart.
        turnaround: &'a str,
        /// A resolved symbol id.
        symbol_id: &'a str,
        /// Bar resolution.
        interval: Interval,
        /// Which bars (the count of a `Count` is not sent: the server keeps the series' own).
        range: SeriesRange,
    },
    /// `remove_series [cs, series_id]`.
    RemoveSeries {
        /// Chart session id.
        session: &'a str,
        /// Series id.
        series_id: &'a str,
    },
    /// `request_more_data [cs, series_id, count]`: `count` more bars, older than those loaded.
    RequestMoreData {
        /// Chart session id.
        session: &'a str,
        /// Series id.
        series_id: &'a str,
        /// Additional bars wanted.
        count: u32,
    },
    /// `quote_create_session [qs]`.
    QuoteCreateSession {
        /// Quote session id (`qs_…`).
        session: &'a str,
    },
    /// `quote_set_fields [qs, field, field, …]` (flat).
    QuoteSetFields {
        /// Quote session id.
        session: &'a str,
        /// Field names (`lp`, `ch`, `volume`…).
        fields: &'a [&'a str],
    },
    /// `quote_add_symbols [qs, sym, …]`. Never with the old `force_permission` flags object,
    /// which the server now rejects.
    QuoteAddSymbols {
        /// Quote session id.
        session: &'a str,
        /// `EXCH:TICKER` or `=`-spec strings; `qsd` echoes each in `n`.
        symbols: &'a [&'a str],
    },
    /// `quote_remove_symbols [qs, sym, …]`.
    QuoteRemoveSymbols {
        /// Quote session id.
        session: &'a str,
        /// Symbols as added.
        symbols: &'a [&'a str],
    },
    /// `quote_fast_symbols [qs, sym, …]`: high-frequency updates for these.
    QuoteFastSymbols {
        /// Quote session id.
        session: &'a str,
        /// Symbols as added.
        symbols: &'a [&'a str],
    },
    /// `quote_delete_session [qs]`.
    QuoteDeleteSession {
        /// Quote session id.
        session: &'a str,
    },
}

impl Request<'_> {
    /// The method name on the wire.
    pub const fn method(&self) -> &'static str {
        match self {
            Self::SetAuthToken { .. } => "set_auth_token",
            Self::SetLocale { .. } => "set_locale",
            Self::ChartCreateSession { .. } => "chart_create_session",
            Self::ChartDeleteSession { .. } => "chart_delete_session",
            Self::SwitchTimezone { .. } => "switch_timezone",
            Self::ResolveSymbol { .. } => "resolve_symbol",
            Self::CreateSeries { .. } => "create_series",
            Self::ModifySeries { .. } => "modify_series",
            Self::RemoveSeries { .. } => "remove_series",
            Self::RequestMoreData { .. } => "request_more_data",
            Self::QuoteCreateSession { .. } => "quote_create_session",
            Self::QuoteSetFields { .. } => "quote_set_fields",
            Self::QuoteAddSymbols { .. } => "quote_add_symbols",
            Self::QuoteRemoveSymbols { .. } => "quote_remove_symbols",
            Self::QuoteFastSymbols { .. } => "quote_fast_symbols",
            Self::QuoteDeleteSession { .. } => "quote_delete_session",
        }
    }

    /// Appends the request to `out` as one frame, `~m~<len>~m~{"m":…,"p":[…]}`.
    ///
    /// # Examples
    ///
    /// ```
    /// use tvdatafeed::protocol::Request;
    ///
    /// let mut out = Vec::new();
    /// Request::SetAuthToken { token: "unauthorized_user_token" }.encode(&mut out);
    /// assert_eq!(out, br#"~m~54~m~{"m":"set_auth_token","p":["unauthorized_user_token"]}"#);
    /// ```
    pub fn encode(&self, out: &mut Vec<u8>) {
        let start = out.len();
        out.extend_from_slice(b"{\"m\":");
        json::write_str(out, self.method());
        out.extend_from_slice(b",\"p\":[");
        self.write_params(out);
        out.extend_from_slice(b"]}");
        frame_in_place(out, start);
    }

    fn write_params(&self, out: &mut Vec<u8>) {
        let strs = |out: &mut Vec<u8>, items: &[&str]| {
            for (i, s) in items.iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                json::write_str(out, s);
            }
        };
        match *self {
            Self::SetAuthToken { token } => strs(out, &[token]),
            Self::SetLocale { language, country } => strs(out, &[language, country]),
            Self::ChartCreateSession { session } => strs(out, &[session, ""]),
            Self::ChartDeleteSession { session }
            | Self::QuoteCreateSession { session }
            | Self::QuoteDeleteSession { session } => strs(out, &[session]),
            Self::SwitchTimezone { session, timezone } => strs(out, &[session, timezone]),
            Self::ResolveSymbol {
                session,
                symbol_id,
                spec,
            } => strs(out, &[session, symbol_id, &spec.to_wire()]),
            Self::CreateSeries {
                session,
                series_id,
                turnaround,
                symbol_id,
                interval,
                range,
            } => {
                let res = interval.to_string();
                strs(out, &[session, series_id, turnaround, symbol_id, &res]);
                out.push(b',');
                json::write_u64(out, u64::from(range.count()));
                out.push(b',');
                range.write_range(out);
            }
            Self::ModifySeries {
                session,
                series_id,
                turnaround,
                symbol_id,
                interval,
                range,
            } => {
                let res = interval.to_string();
                strs(out, &[session, series_id, turnaround, symbol_id, &res]);
                out.push(b',');
                range.write_range(out);
            }
            Self::RemoveSeries { session, series_id } => strs(out, &[session, series_id]),
            Self::RequestMoreData {
                session,
                series_id,
                count,
            } => {
                strs(out, &[session, series_id]);
                out.push(b',');
                json::write_u64(out, u64::from(count));
            }
            Self::QuoteSetFields {
                session,
                fields: items,
            }
            | Self::QuoteAddSymbols {
                session,
                symbols: items,
            }
            | Self::QuoteRemoveSymbols {
                session,
                symbols: items,
            }
            | Self::QuoteFastSymbols {
                session,
                symbols: items,
            } => {
                strs(out, &[session]);
                for s in items {
                    out.push(b',');
                    json::write_str(out, s);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const CS: &str = "cs_kjvmuwkghjuz";
    const QS: &str = "qs_bctctzvicqaf";

    fn enc(r: Request<'_>) -> String {
        let mut out = Vec::new();
        r.encode(&mut out);
        String::from_utf8(out).unwrap()
    }

    /// Every sample frame of protocol.md §2, byte for byte.
    #[test]
    fn requests_match_the_protocol_samples() {
        let btc: Symbol = "BINANCE:BTCUSDT".parse().unwrap();
        let spec = SymbolSpec::new(btc);
        let one: Interval = "1".parse().unwrap();
        let cases: Vec<(Request<'_>, &str)> = vec![
            (
                Request::SetAuthToken {
                    token: "unauthorized_user_token",
                },
                r#"~m~54~m~{"m":"set_auth_token","p":["unauthorized_user_token"]}"#,
            ),
            (
                Request::SetLocale {
                    language: "en",
                    country: "US",
                },
                r#"~m~34~m~{"m":"set_locale","p":["en","US"]}"#,
            ),
            (
                Request::ChartCreateSession { session: CS },
                r#"~m~55~m~{"m":"chart_create_session","p":["cs_kjvmuwkghjuz",""]}"#,
            ),
            (
                Request::ChartDeleteSession { session: CS },
                r#"~m~52~m~{"m":"chart_delete_session","p":["cs_kjvmuwkghjuz"]}"#,
            ),
            (
                Request::SwitchTimezone {
                    session: CS,
                    timezone: "Etc/UTC",
                },
                r#"~m~57~m~{"m":"switch_timezone","p":["cs_kjvmuwkghjuz","Etc/UTC"]}"#,
            ),
            (
                Request::ResolveSymbol {
                    session: CS,
                    symbol_id: "sds_sym_1",
                    spec: &spec,
                },
                r#"~m~144~m~{"m":"resolve_symbol","p":["cs_kjvmuwkghjuz","sds_sym_1","={\"adjustment\":\"splits\",\"session\":\"regular\",\"symbol\":\"BINANCE:BTCUSDT\"}"]}"#,
            ),
            (
                Request::CreateSeries {
                    session: CS,
                    series_id: "sds_1",
                    turnaround: "s1",
                    symbol_id: "sds_sym_1",
                    interval: one,
                    range: SeriesRange::Count(300),
                },
                r#"~m~81~m~{"m":"create_series","p":["cs_kjvmuwkghjuz","sds_1","s1","sds_sym_1","1",300,""]}"#,
            ),
            (
                Request::ModifySeries {
                    session: CS,
                    series_id: "sds_1",
                    turnaround: "s2",
                    symbol_id: "sds_sym_2",
                    interval: "15".parse().unwrap(),
                    range: SeriesRange::Count(300),
                },
                r#"~m~78~m~{"m":"modify_series","p":["cs_kjvmuwkghjuz","sds_1","s2","sds_sym_2","15",""]}"#,
            ),
            (
                Request::RemoveSeries {
                    session: CS,
                    series_id: "sds_1",
                },
                r#"~m~53~m~{"m":"remove_series","p":["cs_kjvmuwkghjuz","sds_1"]}"#,
            ),
            (
                Request::RequestMoreData {
                    session: CS,
                    series_id: "sds_1",
                    count: 1000,
                },
                r#"~m~62~m~{"m":"request_more_data","p":["cs_kjvmuwkghjuz","sds_1",1000]}"#,
            ),
            (
                Request::QuoteCreateSession { session: QS },
                r#"~m~52~m~{"m":"quote_create_session","p":["qs_bctctzvicqaf"]}"#,
            ),
            (
                Request::QuoteSetFields {
                    session: QS,
                    fields: &[
                        "lp",
                        "ch",
                        "chp",
                        "volume",
                        "lp_time",
                        "bid",
                        "ask",
                        "description",
                        "currency_code",
                        "update_mode",
                    ],
                },
                r#"~m~139~m~{"m":"quote_set_fields","p":["qs_bctctzvicqaf","lp","ch","chp","volume","lp_time","bid","ask","description","currency_code","update_mode"]}"#,
            ),
            (
                Request::QuoteAddSymbols {
                    session: QS,
                    symbols: &["BINANCE:BTCUSDT"],
                },
                r#"~m~67~m~{"m":"quote_add_symbols","p":["qs_bctctzvicqaf","BINANCE:BTCUSDT"]}"#,
            ),
            (
                Request::QuoteFastSymbols {
                    session: QS,
                    symbols: &["BINANCE:BTCUSDT"],
                },
                r#"~m~68~m~{"m":"quote_fast_symbols","p":["qs_bctctzvicqaf","BINANCE:BTCUSDT"]}"#,
            ),
            (
                Request::QuoteRemoveSymbols {
                    session: QS,
                    symbols: &["BINANCE:BTCUSDT"],
                },
                r#"~m~70~m~{"m":"quote_remove_symbols","p":["qs_bctctzvicqaf","BINANCE:BTCUSDT"]}"#,
            ),
            (
                Request::QuoteDeleteSession { session: QS },
                r#"~m~52~m~{"m":"quote_delete_session","p":["qs_bctctzvicqaf"]}"#,
            ),
        ];
        for (req, wire) in cases {
            assert_eq!(enc(req), wire, "{}", req.method());
        }
    }

    #[test]
    fn spec_options_and_range_form() {
        let cl = Symbol::continuous("NYMEX", "CL", 1).unwrap();
        let spec = SymbolSpec::new(cl)
            .with_adjustment(Adjustment::Dividends)
            .with_session(TradingSession::Extended)
            .with_currency("EUR")
            .with_back_adjustment(true);
        assert_eq!(
            spec.to_wire(),
            r#"={"adjustment":"dividends","backadjustment":"default","currency-id":"EUR","session":"extended","symbol":"NYMEX:CL1!"}"#
        );
        let req = Request::CreateSeries {
            session: CS,
            series_id: "sds_1",
            turnaround: "s1",
            symbol_id: "sds_sym_1",
            interval: "1D".parse().unwrap(),
            range: SeriesRange::Range {
                from: 1_704_067_200,
                to: 1_735_603_200,
                max_bars: 5000,
            },
        };
        let s = enc(req);
        assert!(
            s.ends_with(r#""sds_sym_1","1D",5000,"r,1704067200:1735603200"]}"#),
            "{s}"
        );
        // The declared length is the payload's byte length.
        let (head, body) = s[3..].split_once("~m~").unwrap();
        assert_eq!(head.parse::<usize>().unwrap(), body.len());
    }
}
