//! The simulator's per-connection protocol logic, without sockets: client messages and time
//! in, websocket messages out. The connection thread (`conn.rs`) drives it.

use std::collections::HashMap;

use super::{Market, Prices, Shared, SimConfig};
use crate::{
    Bar, Interval, Symbol,
    protocol::{
        ANONYMOUS_TOKEN,
        frame::{Frame, FrameDecoder},
        server::{ClientRequest, ResolvedSymbol, ServerWriter, Stamp, parse_client, spec_symbol},
    },
};

/// Why the session wants its connection closed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum CloseReason {
    /// `protocol_error` sent (bad token, wrong data).
    ProtocolError,
    /// The heartbeat echo did not arrive in time.
    HeartbeatTimeout,
}

#[derive(Debug)]
enum SymbolState {
    Resolved { symbol: Symbol, sent: bool },
    Error,
}

#[derive(Debug)]
struct Series {
    symbol: Symbol,
    interval: Interval,
    /// The market of this (symbol, interval), hashes computed once.
    prices: Prices,
    turnaround: String,
    /// Open time of the oldest bar sent.
    oldest: i64,
    /// Bars sent (history).
    sent: usize,
    /// Open time and index of the forming bar.
    forming: i64,
    index: i64,
    next_du_ms: u64,
    live: bool,
    /// The `skip_bars` fault: silent until this bar opens, then a jump to it.
    paused_until: Option<i64>,
}

#[derive(Debug, Default)]
struct Chart {
    symbols: HashMap<String, SymbolState>,
    series: HashMap<String, Series>,
}

#[derive(Debug, Default)]
struct Quotes {
    symbols: Vec<String>,
    next_ms: u64,
}

/// The state of one simulated connection.
#[derive(Debug)]
pub(crate) struct ServerSession {
    market: Market,
    depth: usize,
    charts: HashMap<String, Chart>,
    quotes: HashMap<String, Quotes>,
    /// Websocket messages to send, in order.
    pub(crate) out: Vec<Vec<u8>>,
    /// Set when the connection must close after `out` is sent.
    pub(crate) close: Option<CloseReason>,
    /// The next series to close a bar goes silent for this many bars, then jumps to the
    /// current one (a fault: a stream that lost bars; they stay in history).
    pub(crate) skip_bars: u32,
    heartbeat_n: u64,
    next_heartbeat_ms: u64,
    awaiting_echo: Option<(u64, u64)>,
    /// The awaited heartbeat is still queued (a stall or delay holds it): its echo clock
    /// starts when it is sent ([`ServerSession::sent`]).
    echo_unsent: bool,
    du_count: u64,
    /// Live `du` messages queued since the last call to `take_du_count`.
    du_pending: u64,
    /// With [`SimConfig::record_send_times`]: which entries of `out` are live messages, and
    /// what they carry (index in `out`, ascending).
    live_tags: Vec<(usize, LiveTag)>,
}

/// What one live message carries, for [`super::LiveSend`].
#[derive(Debug, Clone)]
pub(crate) struct LiveTag {
    pub(crate) symbol: Symbol,
    pub(crate) interval: Interval,
    pub(crate) bar: Bar,
}

/// Tags the message just pushed onto `out` as live (only when sends are recorded).
fn tag_live(
    tags: &mut Vec<(usize, LiveTag)>,
    cfg: &SimConfig,
    out: &[Vec<u8>],
    s: &Series,
    bar: Bar,
) {
    if cfg.record_send_times > 0 {
        tags.push((
            out.len() - 1,
            LiveTag {
                symbol: s.symbol.clone(),
                interval: s.interval,
                bar,
            },
        ));
    }
}

/// `now_ms` plus `period`, in ms, saturating: a period too long to count (up to
/// `Duration::MAX`) means "never", not a wrapped instant in the past.
fn after(now_ms: u64, period: std::time::Duration) -> u64 {
    now_ms.saturating_add(u64::try_from(period.as_millis()).unwrap_or(u64::MAX))
}

/// Most bars one tick opens and closes for a series that fell behind; past it the stream
/// jumps to the current bar (after hours without a tick, history has the rest).
const MAX_CATCH_UP: u32 = 1_000;

fn stamp(now_ms: u64) -> Stamp {
    Stamp { ms: now_ms }
}

fn valid_timezone(tz: &str) -> bool {
    const AREAS: &[&str] = &[
        "Africa/",
        "America/",
        "Antarctica/",
        "Asia/",
        "Atlantic/",
        "Australia/",
        "Europe/",
        "Indian/",
        "Pacific/",
        "Etc/",
    ];
    matches!(tz, "exchange" | "UTC" | "Etc/UTC")
        || AREAS
            .iter()
            .any(|a| tz.starts_with(a) && tz.len() > a.len())
}

fn jwt_shaped(token: &str) -> bool {
    let parts: Vec<&str> = token.split('.').collect();
    parts.len() == 3
        && parts.iter().all(|p| {
            !p.is_empty()
                && p.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        })
}

impl ServerSession {
    pub(crate) fn new(cfg: &SimConfig, now_ms: u64, conn_id: u64) -> Self {
        let mut s = Self {
            market: Market::new(cfg.seed),
            depth: cfg.history_depth_anonymous,
            charts: HashMap::new(),
            quotes: HashMap::new(),
            out: Vec::new(),
            close: None,
            skip_bars: 0,
            heartbeat_n: 0,
            next_heartbeat_ms: after(now_ms, cfg.heartbeat_interval),
            awaiting_echo: None,
            echo_unsent: false,
            du_count: 0,
            du_pending: 0,
            live_tags: Vec::new(),
        };
        let mut w = ServerWriter::new();
        w.hello(
            &format!("0.{conn_id}.1507_sim-charts-free-1"),
            stamp(now_ms),
            "127.0.0.1:443",
        );
        s.out.push(w.out);
        s
    }

    /// Series open on this connection (every chart session).
    pub(crate) fn series_count(&self) -> u64 {
        self.charts.values().map(|c| c.series.len() as u64).sum()
    }

    /// Symbols resolved and still kept, over every chart session of this connection.
    #[cfg(test)]
    pub(crate) fn resolved_symbols(&self) -> usize {
        self.charts.values().map(|c| c.symbols.len()).sum()
    }

    /// Live `du` messages queued since the last call.
    pub(crate) fn take_du_count(&mut self) -> u64 {
        std::mem::take(&mut self.du_pending)
    }

    /// The live messages among `out` (index, what it carries), ascending by index; empty
    /// unless [`SimConfig::record_send_times`] is on.
    pub(crate) fn take_live_tags(&mut self) -> Vec<(usize, LiveTag)> {
        std::mem::take(&mut self.live_tags)
    }

    /// Handles one websocket text message from the client.
    pub(crate) fn handle_text(
        &mut self,
        cfg: &SimConfig,
        shared: &Shared,
        now_ms: u64,
        msg: &mut [u8],
    ) {
        let decoder = FrameDecoder::new().with_max_frame_len(1 << 20);
        for frame in decoder.frames(msg) {
            match frame {
                Ok(Frame::Heartbeat(n)) => {
                    if self.awaiting_echo.is_some_and(|(want, _)| n >= want) {
                        self.awaiting_echo = None;
                    }
                }
                Ok(Frame::Json(payload)) => match parse_client(payload) {
                    Ok(req) => self.handle_request(cfg, shared, now_ms, req),
                    Err(_) => return self.protocol_error("wrong data"),
                },
                Err(_) => return self.protocol_error("wrong data"),
            }
            if self.close.is_some() {
                return;
            }
        }
    }

    fn protocol_error(&mut self, text: &str) {
        let mut w = ServerWriter::new();
        w.protocol_error(text);
        self.out.push(w.out);
        self.close = Some(CloseReason::ProtocolError);
    }

    fn handle_request(
        &mut self,
        cfg: &SimConfig,
        shared: &Shared,
        now_ms: u64,
        req: ClientRequest,
    ) {
        let mut w = ServerWriter::new();
        match req {
            ClientRequest::SetAuthToken(token) => {
                if token == ANONYMOUS_TOKEN {
                    self.depth = cfg.history_depth_anonymous;
                } else if jwt_shaped(&token)
                    && (cfg.valid_tokens.is_empty() || cfg.valid_tokens.contains(&token))
                    && !shared.is_revoked(&token)
                {
                    self.depth = cfg.history_depth_authenticated;
                } else {
                    return self.protocol_error("bad auth token");
                }
            }
            ClientRequest::ChartCreateSession { session } => {
                self.charts.entry(session).or_default();
            }
            ClientRequest::ChartDeleteSession { session } => {
                self.charts.remove(&session);
            }
            ClientRequest::SwitchTimezone { session, timezone } => {
                if !valid_timezone(&timezone) {
                    w.critical_error(
                        &session,
                        "invalid timezone",
                        &format!("method: switch_timezone. args: \"[{timezone}]\""),
                    );
                }
            }
            ClientRequest::ResolveSymbol {
                session,
                symbol_id,
                symbol,
                ..
            } => {
                let state = match symbol.parse::<Symbol>() {
                    Ok(sym)
                        if cfg
                            .denied_exchanges
                            .iter()
                            .any(|(e, _)| e == sym.exchange()) =>
                    {
                        let group = cfg
                            .denied_exchanges
                            .iter()
                            .find(|(e, _)| e == sym.exchange())
                            .map_or("", |(_, g)| g.as_str());
                        w.symbol_error(
                            &session,
                            &symbol_id,
                            &["permission denied", "group", group],
                            stamp(now_ms),
                        );
                        SymbolState::Error
                    }
                    Ok(sym) if cfg.knows(&sym) => SymbolState::Resolved {
                        symbol: sym,
                        sent: false,
                    },
                    _ => {
                        w.symbol_error(&session, &symbol_id, &["invalid symbol"], stamp(now_ms));
                        SymbolState::Error
                    }
                };
                self.charts
                    .entry(session)
                    .or_default()
                    .symbols
                    .insert(symbol_id, state);
            }
            ClientRequest::CreateSeries {
                session,
                series,
                turnaround,
                symbol_id,
                resolution,
                bars,
                range,
                args,
            } => {
                self.load(
                    cfg,
                    shared,
                    &mut w,
                    now_ms,
                    &session,
                    &series,
                    &turnaround,
                    &symbol_id,
                    &resolution,
                    bars,
                    &range,
                    "create_series",
                    &args,
                    false,
                );
            }
            ClientRequest::ModifySeries {
                session,
                series,
                turnaround,
                symbol_id,
                resolution,
                range,
                args,
            } => {
                let bars = self
                    .charts
                    .get(&session)
                    .and_then(|c| c.series.get(&series))
                    .map_or(300, |s| s.sent.max(1) as u64);
                self.load(
                    cfg,
                    shared,
                    &mut w,
                    now_ms,
                    &session,
                    &series,
                    &turnaround,
                    &symbol_id,
                    &resolution,
                    bars,
                    &range,
                    "modify_series",
                    &args,
                    true,
                );
            }
            ClientRequest::RemoveSeries { session, series } => {
                if let Some(c) = self.charts.get_mut(&session) {
                    c.series.remove(&series);
                }
            }
            ClientRequest::RequestMoreData {
                session,
                series,
                count,
            } => {
                self.more(cfg, shared, &mut w, now_ms, &session, &series, count);
            }
            ClientRequest::QuoteCreateSession { session } => {
                self.quotes.entry(session).or_default();
            }
            ClientRequest::QuoteDeleteSession { session } => {
                self.quotes.remove(&session);
            }
            ClientRequest::QuoteAddSymbols {
                session,
                symbols,
                flags,
            } => {
                if flags {
                    w.critical_error(&session, "invalid_parameters", "quote_add_symbols");
                } else {
                    for name in symbols {
                        // Only symbols that exist get deltas after their snapshot.
                        if self.quote_snapshot(cfg, &mut w, now_ms, &session, &name) {
                            self.quotes
                                .entry(session.clone())
                                .or_default()
                                .symbols
                                .push(name);
                        }
                    }
                }
            }
            ClientRequest::QuoteRemoveSymbols { session, symbols } => {
                if let Some(q) = self.quotes.get_mut(&session) {
                    q.symbols.retain(|s| !symbols.contains(s));
                }
            }
            ClientRequest::SetLocale
            | ClientRequest::SetDataQuality
            | ClientRequest::QuoteSetFields { .. }
            | ClientRequest::QuoteFastSymbols { .. }
            | ClientRequest::Other(_) => {}
        }
        if !w.out.is_empty() {
            self.push_frames(cfg, w.out);
        }
    }

    /// Queues frames as one websocket message, or one message per frame when batching is off.
    fn push_frames(&mut self, cfg: &SimConfig, frames: Vec<u8>) {
        if cfg.batch_frames {
            self.out.push(frames);
            return;
        }
        let mut buf = frames;
        for f in FrameDecoder::new()
            .with_max_frame_len(usize::MAX)
            .frames(&mut buf)
            .flatten()
        {
            let mut one = Vec::new();
            match f {
                Frame::Json(p) => crate::protocol::frame::encode_frame(p, &mut one),
                Frame::Heartbeat(n) => crate::protocol::frame::encode_heartbeat(n, &mut one),
            }
            self.out.push(one);
        }
    }

    /// Open times of up to `n` bars ending at (and including) `last`, oldest first.
    fn times_back(interval: Interval, last: i64, n: usize) -> Vec<i64> {
        let mut t = Vec::with_capacity(n);
        let mut cur = last;
        for _ in 0..n {
            t.push(cur);
            cur = Market::previous_open(interval, cur);
        }
        t.reverse();
        t
    }

    fn fraction(interval: Interval, open: i64, now_ms: u64) -> f64 {
        let close = interval.next_bar_open(open);
        let len_ms = ((close - open) * 1000) as f64;
        ((now_ms as f64 - open as f64 * 1000.0) / len_ms).clamp(0.0, 0.999)
    }

    /// The bar opening at `t`: forming at `now_ms` if `t == forming`, else final (revised if
    /// the simulator revised it).
    fn bar_at(
        shared: &Shared,
        symbol: &Symbol,
        prices: &Prices,
        interval: Interval,
        t: i64,
        forming: i64,
        now_ms: u64,
    ) -> Bar {
        if t == forming {
            prices.forming(t, Self::fraction(interval, t, now_ms))
        } else {
            shared
                .revised(symbol.as_str(), interval, t)
                .unwrap_or_else(|| prices.bar(t))
        }
    }

    #[allow(
        clippy::too_many_arguments,
        reason = "one parameter per create_series field"
    )]
    fn load(
        &mut self,
        cfg: &SimConfig,
        shared: &Shared,
        w: &mut ServerWriter,
        now_ms: u64,
        cs: &str,
        series: &str,
        turnaround: &str,
        symbol_id: &str,
        resolution: &str,
        bars: u64,
        range: &str,
        method: &str,
        args: &str,
        modify: bool,
    ) {
        let Ok(interval) = resolution.parse::<Interval>() else {
            w.critical_error(
                cs,
                "invalid parameters",
                &format!("method: {method}. args: \"{args}\""),
            );
            return;
        };
        if interval.unit() == crate::IntervalUnit::Second && !cfg.entitled_seconds {
            w.series_error(cs, series, turnaround, "seconds_not_entitled", "undefined");
            return;
        }
        if !interval.is_standard()
            && interval.unit() != crate::IntervalUnit::Second
            && !cfg.entitled_custom
        {
            w.series_error(cs, series, turnaround, "custom_resolution", "undefined");
            return;
        }
        let chart = self.charts.entry(cs.to_owned()).or_default();
        let sym = match chart.symbols.get_mut(symbol_id) {
            Some(SymbolState::Resolved { symbol, sent }) => {
                let first = !*sent;
                *sent = true;
                Some((symbol.clone(), first))
            }
            _ => None,
        };
        let Some((sym, first_resolve)) = sym else {
            w.series_error(
                cs,
                series,
                turnaround,
                "resolve error",
                "sim-charts-free-1-series-1",
            );
            return;
        };
        if modify {
            w.timescale_update(cs, series, turnaround, &[], None, 0, 0, stamp(now_ms));
        }
        w.series_loading(cs, series, turnaround, stamp(now_ms));
        if first_resolve {
            let desc = format!("{} (simulated)", sym.ticker());
            let has_volume = Market::has_volume(&sym);
            let info = ResolvedSymbol {
                full_name: sym.as_str(),
                ticker: sym.ticker(),
                exchange: sym.exchange(),
                description: &desc,
                kind: if has_volume { "spot" } else { "index" },
                currency: "USD",
                session: "24x7",
                subsession: "regular",
                timezone: "Etc/UTC",
                pricescale: 100,
                has_volume,
            };
            w.symbol_resolved(cs, symbol_id, &info, stamp(now_ms));
        }
        let forming = interval.bar_open((now_ms / 1000) as i64);
        let window = Self::times_back(interval, forming, self.depth);
        let times: Vec<i64> = match parse_range(range) {
            Some((from, to)) => window
                .into_iter()
                .filter(|t| (from..=to).contains(t))
                .collect(),
            None => {
                let n = (bars as usize)
                    .min(cfg.max_bars_per_request)
                    .min(self.depth)
                    .max(1);
                window[window.len().saturating_sub(n)..].to_vec()
            }
        };
        let k = times.len() as i64;
        let prices = self.market.prices(&sym, interval);
        let mut payload = Vec::with_capacity(times.len());
        for (i, t) in times.iter().enumerate() {
            payload.push((
                i as i64,
                Self::bar_at(shared, &sym, &prices, interval, *t, forming, now_ms),
            ));
        }
        let close_time = interval.next_bar_open(forming);
        w.timescale_update(
            cs,
            series,
            turnaround,
            &payload,
            Some(close_time),
            0,
            0,
            stamp(now_ms),
        );
        w.series_completed(cs, series, "streaming", turnaround, stamp(now_ms));
        let live =
            times.last() == Some(&forming) && !cfg.quiet_symbols.iter().any(|q| q == sym.as_str());
        let oldest = times.first().copied().unwrap_or(forming);
        self.charts.entry(cs.to_owned()).or_default().series.insert(
            series.to_owned(),
            Series {
                prices: self.market.prices(&sym, interval),
                symbol: sym,
                interval,
                turnaround: turnaround.to_owned(),
                oldest,
                sent: times.len(),
                forming,
                index: k - 1,
                next_du_ms: now_ms + cfg.update_interval.as_millis() as u64,
                live,
                paused_until: None,
            },
        );
    }

    #[allow(
        clippy::too_many_arguments,
        reason = "one parameter per request_more_data field"
    )]
    fn more(
        &mut self,
        cfg: &SimConfig,
        shared: &Shared,
        w: &mut ServerWriter,
        now_ms: u64,
        cs: &str,
        series: &str,
        count: u64,
    ) {
        let depth = self.depth;
        let Some(s) = self
            .charts
            .get_mut(cs)
            .and_then(|c| c.series.get_mut(series))
        else {
            return;
        };
        let left = depth.saturating_sub(s.sent);
        let n = (count as usize).min(cfg.max_bars_per_request).min(left);
        let mut page = Vec::with_capacity(n);
        if n > 0 {
            let times =
                Self::times_back(s.interval, Market::previous_open(s.interval, s.oldest), n);
            for (i, t) in times.iter().enumerate() {
                let bar = shared
                    .revised(s.symbol.as_str(), s.interval, *t)
                    .unwrap_or_else(|| s.prices.bar(*t));
                page.push((i as i64, bar));
            }
            s.oldest = times[0];
            s.sent += n;
        }
        let (turnaround, close) = (s.turnaround.clone(), s.interval.next_bar_open(s.forming));
        w.timescale_update(
            cs,
            series,
            &turnaround,
            &page,
            Some(close),
            0,
            n as i64,
            stamp(now_ms),
        );
        w.series_completed(cs, series, "streaming", &turnaround, stamp(now_ms));
    }

    /// Writes the first `qsd` and the `quote_completed` of `name`; whether the symbol exists.
    fn quote_snapshot(
        &mut self,
        cfg: &SimConfig,
        w: &mut ServerWriter,
        now_ms: u64,
        qs: &str,
        name: &str,
    ) -> bool {
        let known = match quote_symbol(name) {
            Some(sym) if cfg.knows(&sym) => {
                let b = self.market.forming(
                    &sym,
                    "1D".parse().unwrap_or_else(|_| unreachable!()),
                    (now_ms / 86_400_000 * 86_400) as i64,
                    0.5,
                );
                let ch = ((b.close - b.open) * 100.0).round() / 100.0;
                w.qsd(
                    qs,
                    name,
                    "ok",
                    &[
                        ("lp", b.close),
                        ("ch", ch),
                        ("volume", b.volume.unwrap_or(0.0)),
                    ],
                    &[("description", sym.ticker()), ("update_mode", "streaming")],
                );
                true
            }
            _ => {
                w.qsd(qs, name, "error", &[], &[("errmsg", "invalid symbol")]);
                false
            }
        };
        w.quote_completed(qs, name);
        known
    }

    /// Everything queued went out at `now_ms`: the echo clock of a heartbeat among it starts
    /// now, so that a stall or a delay never blames the client for an echo it could not send.
    pub(crate) fn sent(&mut self, cfg: &SimConfig, now_ms: u64) {
        if std::mem::take(&mut self.echo_unsent)
            && let Some((n, _)) = self.awaiting_echo
        {
            self.awaiting_echo = Some((n, after(now_ms, cfg.heartbeat_timeout)));
        }
    }

    /// The next instant `tick` has work (ms).
    pub(crate) fn next_deadline(&self) -> u64 {
        let mut d = self.next_heartbeat_ms;
        if let Some((_, deadline)) = self.awaiting_echo.filter(|_| !self.echo_unsent) {
            d = d.min(deadline);
        }
        for c in self.charts.values() {
            for s in c.series.values().filter(|s| s.live) {
                d = d
                    .min(s.next_du_ms)
                    .min(s.interval.next_bar_open(s.forming) as u64 * 1000);
            }
        }
        for q in self.quotes.values().filter(|q| !q.symbols.is_empty()) {
            d = d.min(q.next_ms);
        }
        d
    }

    /// Heartbeats, live updates, new bars, quote deltas due at `now_ms`.
    pub(crate) fn tick(&mut self, cfg: &SimConfig, shared: &Shared, now_ms: u64) {
        if self.close.is_some() {
            return;
        }
        if let Some((_, deadline)) = self.awaiting_echo
            && !self.echo_unsent
            && now_ms > deadline
        {
            self.close = Some(CloseReason::HeartbeatTimeout);
            return;
        }
        if now_ms >= self.next_heartbeat_ms {
            self.heartbeat_n += 1;
            let mut w = ServerWriter::new();
            w.heartbeat(self.heartbeat_n);
            self.out.push(w.out);
            if self.awaiting_echo.is_none() {
                self.awaiting_echo = Some((self.heartbeat_n, after(now_ms, cfg.heartbeat_timeout)));
                self.echo_unsent = true;
            }
            self.next_heartbeat_ms = after(now_ms, cfg.heartbeat_interval);
        }
        let update_ms = cfg.update_interval.as_millis() as u64;
        let now_s = (now_ms / 1000) as i64;
        let mut w = ServerWriter::new();
        for (cs, chart) in &mut self.charts {
            for (key, s) in chart.series.iter_mut().filter(|(_, s)| s.live) {
                let current = s.interval.bar_open(now_s);
                // The `skip_bars` fault: this series says nothing for that many bars, then
                // jumps to the current one, as an overloaded server that lost them would.
                if current > s.forming && s.paused_until.is_none() && self.skip_bars > 0 {
                    let mut until = current;
                    for _ in 0..std::mem::take(&mut self.skip_bars) {
                        until = s.interval.next_bar_open(until);
                    }
                    s.paused_until = Some(until);
                }
                let paused = s.paused_until.is_some();
                if let Some(until) = s.paused_until {
                    if current < until {
                        continue;
                    }
                    s.paused_until = None;
                }
                let jump = current;
                let mut jump_pending = paused;
                // Every bar opens and closes in the stream, even when this tick is late by
                // several bars (a busy simulator): a bounded catch-up, oldest first.
                let mut catch_up = 0;
                while current > s.forming && catch_up < MAX_CATCH_UP {
                    catch_up += 1;
                    // Bar close: the final values, then the new bar, as the real server does.
                    let fin = shared
                        .revised(s.symbol.as_str(), s.interval, s.forming)
                        .unwrap_or_else(|| s.prices.bar(s.forming));
                    let close_time = s.interval.next_bar_open(s.forming);
                    let fin_index = s.index;
                    w.du(cs, key, &s.turnaround, s.index, &fin, Some(close_time));
                    self.out.push(std::mem::take(&mut w.out));
                    tag_live(&mut self.live_tags, cfg, &self.out, s, fin);
                    shared.publish_close(s.symbol.as_str(), s.interval, fin);
                    // After a pause the stream jumps to the current bar; a tick merely late
                    // opens the next one.
                    let next = if catch_up == MAX_CATCH_UP || jump_pending {
                        jump
                    } else {
                        close_time
                    };
                    jump_pending = false;
                    // Bars jumped over: their opens and closes are lost, but a correction of one
                    // still comes (a `du` for its index), as on every series streaming it.
                    let mut skipped = Vec::new();
                    while s.interval.next_bar_open(s.forming) < next {
                        s.forming = s.interval.next_bar_open(s.forming);
                        s.index += 1;
                        if revises(cfg, &s.symbol, s.interval, s.forming) {
                            skipped.push((s.index, s.forming));
                        }
                    }
                    s.forming = next;
                    s.index += 1;
                    let opened = s.prices.forming(next, 0.0);
                    let close_time = s.interval.next_bar_open(next);
                    w.timescale_update(
                        cs,
                        key,
                        &s.turnaround,
                        &[(s.index, opened)],
                        Some(close_time),
                        s.index,
                        0,
                        stamp(now_ms),
                    );
                    self.out.push(std::mem::take(&mut w.out));
                    tag_live(&mut self.live_tags, cfg, &self.out, s, opened);
                    self.du_count += 2;
                    self.du_pending += 2;
                    s.next_du_ms = now_ms + update_ms;
                    for (index, t) in skipped {
                        let revised = Prices::revise(&s.prices.bar(t));
                        shared.revise(s.symbol.as_str(), s.interval, revised);
                        let closed_at = s.interval.next_bar_open(t);
                        w.du(cs, key, &s.turnaround, index, &revised, Some(closed_at));
                        self.out.push(std::mem::take(&mut w.out));
                        tag_live(&mut self.live_tags, cfg, &self.out, s, revised);
                        self.du_count += 1;
                        self.du_pending += 1;
                    }
                    if revises(cfg, &s.symbol, s.interval, fin.time) {
                        // A late correction of the bar that just closed: a `du` for its index.
                        let revised = Prices::revise(&s.prices.bar(fin.time));
                        shared.revise(s.symbol.as_str(), s.interval, revised);
                        let closed_at = s.interval.next_bar_open(fin.time);
                        w.du(cs, key, &s.turnaround, fin_index, &revised, Some(closed_at));
                        self.out.push(std::mem::take(&mut w.out));
                        tag_live(&mut self.live_tags, cfg, &self.out, s, revised);
                        self.du_count += 1;
                        self.du_pending += 1;
                    }
                }
                if now_ms >= s.next_du_ms {
                    let bar = s
                        .prices
                        .forming(s.forming, Self::fraction(s.interval, s.forming, now_ms));
                    w.du(
                        cs,
                        key,
                        &s.turnaround,
                        s.index,
                        &bar,
                        Some(s.interval.next_bar_open(s.forming)),
                    );
                    let msg = std::mem::take(&mut w.out);
                    self.du_count += 1;
                    self.du_pending += 1;
                    if cfg.duplicate_du_every > 0
                        && self.du_count.is_multiple_of(cfg.duplicate_du_every)
                    {
                        self.out.push(msg.clone());
                        tag_live(&mut self.live_tags, cfg, &self.out, s, bar);
                        self.du_pending += 1;
                    }
                    self.out.push(msg);
                    tag_live(&mut self.live_tags, cfg, &self.out, s, bar);
                    // Keep the cadence, but never queue a backlog after a pause.
                    s.next_du_ms = (s.next_du_ms + update_ms).max(now_ms.saturating_sub(update_ms));
                    if s.next_du_ms <= now_ms {
                        s.next_du_ms = now_ms + update_ms;
                    }
                }
            }
        }
        for (qs, q) in &mut self.quotes {
            if q.symbols.is_empty() || now_ms < q.next_ms {
                continue;
            }
            q.next_ms = now_ms + update_ms.max(1);
            for name in &q.symbols {
                if let Some(sym) = quote_symbol(name) {
                    let day: Interval = "1D".parse().unwrap_or_else(|_| unreachable!());
                    let open = day.bar_open(now_s);
                    let b = self
                        .market
                        .forming(&sym, day, open, Self::fraction(day, open, now_ms));
                    w.qsd(qs, name, "ok", &[("lp", b.close)], &[]);
                    self.out.push(std::mem::take(&mut w.out));
                }
            }
        }
    }
}

/// Whether the simulator revises bar `t` of `symbol` at `interval` after its close: a pure
/// function of the bar (about one in [`SimConfig::revise_every`]), so that every series and
/// every connection that streams the bar corrects it the same way.
fn revises(cfg: &SimConfig, symbol: &Symbol, interval: Interval, t: i64) -> bool {
    use std::hash::{Hash, Hasher};
    if cfg.revise_every == 0 {
        return false;
    }
    // SipHash with fixed keys: the same answer in every run.
    let mut h = std::collections::hash_map::DefaultHasher::new();
    (symbol.as_str(), interval.to_string(), t, cfg.seed).hash(&mut h);
    h.finish().is_multiple_of(cfg.revise_every)
}

/// The symbol a quote session names: `EXCH:TICKER` or an `={…}` spec (`qsd` echoes the name).
fn quote_symbol(name: &str) -> Option<Symbol> {
    spec_symbol(name)?.0.parse().ok()
}

/// `"r,<from>:<to>"` → (from, to).
fn parse_range(range: &str) -> Option<(i64, i64)> {
    let (from, to) = range.strip_prefix("r,")?.split_once(':')?;
    Some((from.trim().parse().ok()?, to.trim().parse().ok()?))
}
