//! The simulator's per-connection protocol logic, without sockets: client messages and time
//! in, websocket messages out. The connection thread (`conn.rs`) drives it.

use std::collections::VecDeque;

use crate::det::DetHashMap;

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
    /// A thin symbol: about one bar in this many has trades (and exists).
    thin: Option<u64>,
    /// When the stream next shows a new bar (ms): the next bar with trades opens and its first
    /// trade comes ([`SimConfig::tick_phase`]); `u64::MAX` when none is in sight.
    next_live_ms: u64,
}

#[derive(Debug, Default)]
struct Chart {
    symbols: DetHashMap<String, SymbolState>,
    series: DetHashMap<String, Series>,
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
    charts: DetHashMap<String, Chart>,
    quotes: DetHashMap<String, Quotes>,
    /// Websocket messages to send, in order.
    pub(crate) out: Vec<Vec<u8>>,
    /// Set when the connection must close after `out` is sent.
    pub(crate) close: Option<CloseReason>,
    /// The next series to close a bar goes silent for this many bars, then jumps to the
    /// current one (a fault: a stream that lost bars; they stay in history).
    pub(crate) skip_bars: u32,
    /// A fault: the stream closes each bar with the values of its last update before the
    /// close instead of its final ones (history keeps the final values), as a client sees
    /// when the closing trade's update never came.
    pub(crate) stale_close: bool,
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
    /// With [`SimConfig::request_service_time`]: client requests not served yet, with their
    /// arrival (ms), in arrival order.
    queue: VecDeque<(u64, ClientRequest)>,
    /// When the last request that asks something was answered (ms).
    last_answer_ms: Option<u64>,
    /// [`SimConfig::request_service_time`], kept for [`ServerSession::next_deadline`].
    service_time: std::time::Duration,
    /// The chart session the client deleted last, for [`FaultKind::LateCriticalError`](super::FaultKind).
    deleted: Option<String>,
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

/// Most bars a thin symbol's scan for bars with trades looks at, back or forward: past it the
/// symbol has no bar (a `thin_trade_one_in` absurdly large is a market that never trades).
const THIN_SCAN_MAX: u64 = 1 << 22;

/// The instant (ms) bar time `t` starts.
fn open_ms(t: i64) -> u64 {
    u64::try_from(t).unwrap_or(0).saturating_mul(1000)
}

/// How long after its open the bar opening at `open` sees its first trade (ms).
fn delay_ms(cfg: &SimConfig, interval: Interval, open: i64) -> u64 {
    u64::try_from(cfg.first_trade_delay(interval, open).as_millis()).unwrap_or(u64::MAX)
}

/// The open of the latest bar whose first trade has come at `now_ms`: the bar containing
/// `now_ms`, or the one before it during [`SimConfig::tick_phase`].
fn phased_open(cfg: &SimConfig, interval: Interval, now_ms: u64) -> i64 {
    let t = interval.bar_open((now_ms / 1000) as i64);
    if now_ms < open_ms(t).saturating_add(delay_ms(cfg, interval, t)) {
        Market::previous_open(interval, t)
    } else {
        t
    }
}

/// Whether bar `t` exists: always, or for a thin symbol (`Some(one_in)`) when it has trades.
fn exists(prices: &Prices, thin: Option<u64>, t: i64) -> bool {
    thin.is_none_or(|one_in| prices.has_trades(t, one_in))
}

/// When the stream shows the bar after `forming` (ms): the next bar that exists opens and its
/// first trade comes; `u64::MAX` when a thin symbol has none in sight.
fn next_live_ms(
    cfg: &SimConfig,
    interval: Interval,
    prices: &Prices,
    thin: Option<u64>,
    forming: i64,
) -> u64 {
    let mut t = interval.next_bar_open(forming);
    let mut scanned = 0;
    while !exists(prices, thin, t) {
        scanned += 1;
        if scanned > THIN_SCAN_MAX {
            return u64::MAX;
        }
        t = interval.next_bar_open(t);
    }
    open_ms(t).saturating_add(delay_ms(cfg, interval, t))
}

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
    /// Queues a `critical_error` naming the chart session the client deleted last, as a
    /// server sends for a request of it that it served after the delete. Whether one was.
    pub(crate) fn late_critical_error(&mut self) -> bool {
        let Some(cs) = self.deleted.clone() else {
            return false;
        };
        let mut w = ServerWriter::new();
        w.critical_error(
            &cs,
            "invalid parameters",
            "method: request_more_data. args: \"[sds_1,100]\"",
        );
        self.out.push(w.out);
        true
    }

    pub(crate) fn new(cfg: &SimConfig, now_ms: u64, conn_id: u64) -> Self {
        let mut s = Self {
            market: Market::new(cfg.seed),
            depth: cfg.history_depth_anonymous,
            charts: DetHashMap::default(),
            deleted: None,
            quotes: DetHashMap::default(),
            out: Vec::new(),
            close: None,
            skip_bars: 0,
            stale_close: false,
            heartbeat_n: 0,
            next_heartbeat_ms: after(now_ms, cfg.heartbeat_interval),
            awaiting_echo: None,
            echo_unsent: false,
            du_count: 0,
            du_pending: 0,
            live_tags: Vec::new(),
            queue: VecDeque::new(),
            last_answer_ms: None,
            service_time: cfg.request_service_time,
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

    /// Changes how long each request takes from now on (what is queued is served by the new
    /// time): the simulation's way to end a slow-server condition.
    #[cfg(test)]
    pub(crate) fn set_service_time(&mut self, t: std::time::Duration) {
        self.service_time = t;
    }

    /// Ends the `skip_bars` fault: one still pending never starts, and a series silent
    /// because of it jumps to its current bar on the next tick (as it would when the pause
    /// ran out), so that the client sees the skip and can fetch what it lost.
    #[cfg(test)]
    pub(crate) fn end_skipped_bars(&mut self) {
        self.skip_bars = 0;
        for s in self.charts.values_mut().flat_map(|c| c.series.values_mut()) {
            if s.paused_until.is_some() {
                s.paused_until = Some(i64::MIN);
            }
        }
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
                    Ok(req) if !self.service_time.is_zero() => {
                        self.queue.push_back((now_ms, req));
                    }
                    Ok(req) => self.handle_request(cfg, shared, now_ms, req),
                    Err(_) => return self.protocol_error("wrong data"),
                },
                Err(_) => return self.protocol_error("wrong data"),
            }
            if self.close.is_some() {
                return;
            }
        }
        self.serve_queue(cfg, shared, now_ms);
    }

    /// When the request at the head of the queue is due to be answered (ms), if it asks
    /// something; `None` when the queue is empty or its head takes no time.
    fn queue_due(&self) -> Option<u64> {
        let (arrival, req) = self.queue.front()?;
        asks(req).then(|| {
            after(
                (*arrival).max(self.last_answer_ms.unwrap_or(0)),
                self.service_time,
            )
        })
    }

    /// Serves the queued requests that are due at `now_ms`, in order: one that asks something
    /// when its service time has passed, the others as soon as they reach the head.
    fn serve_queue(&mut self, cfg: &SimConfig, shared: &Shared, now_ms: u64) {
        while self.close.is_none() && !self.queue.is_empty() {
            if let Some(due) = self.queue_due() {
                if now_ms < due {
                    return;
                }
                self.last_answer_ms = Some(now_ms);
            }
            let Some((_, req)) = self.queue.pop_front() else {
                return;
            };
            self.handle_request(cfg, shared, now_ms, req);
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
                self.deleted = Some(session);
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
                // A statistic: no other memory hangs on it.
                shared
                    .pages_requested
                    .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
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

    /// Open times of up to `n` bars that exist, ending at (and including, if it exists)
    /// `last`, oldest first: every bar, or only a thin symbol's bars with trades.
    fn bars_back(
        interval: Interval,
        prices: &Prices,
        thin: Option<u64>,
        last: i64,
        n: usize,
    ) -> Vec<i64> {
        let Some(one_in) = thin else {
            return Self::times_back(interval, last, n);
        };
        let budget = (n as u64)
            .saturating_mul(one_in.max(1))
            .saturating_mul(4)
            .saturating_add(256)
            .min(THIN_SCAN_MAX);
        let mut times = Vec::with_capacity(n);
        let mut cur = last;
        for _ in 0..budget {
            if times.len() == n {
                break;
            }
            if prices.has_trades(cur, one_in) {
                times.push(cur);
            }
            cur = Market::previous_open(interval, cur);
        }
        times.reverse();
        times
    }

    fn fraction(interval: Interval, open: i64, now_ms: u64) -> f64 {
        let close = interval.next_bar_open(open);
        let len_ms = ((close - open) * 1000) as f64;
        ((now_ms as f64 - open as f64 * 1000.0) / len_ms).clamp(0.0, 0.999)
    }

    /// The bar opening at `t`: forming at `now_ms` if `t == forming` and its time has not
    /// ended, else final (revised if the simulator revised it).
    ///
    /// `shared` is `None` when nothing was revised (looked up once for a whole history, not
    /// once a bar); `last` is [`Prices::bar_after`]'s.
    #[allow(
        clippy::too_many_arguments,
        reason = "the bar's key, its clock and the two per-history shortcuts"
    )]
    fn bar_at(
        shared: Option<&Shared>,
        symbol: &Symbol,
        prices: &Prices,
        interval: Interval,
        t: i64,
        forming: i64,
        now_ms: u64,
        last: &mut Option<(i64, f64)>,
    ) -> Bar {
        // A forming bar whose time has ended (no trade since: the next bar's first trade comes
        // later, see `SimConfig::tick_phase`) has all its trades: its values are final.
        let ended = u64::try_from(interval.next_bar_open(t))
            .is_ok_and(|close| now_ms >= close.saturating_mul(1000));
        if t == forming && !ended {
            prices.forming(t, Self::fraction(interval, t, now_ms))
        } else {
            shared
                .and_then(|s| s.revised(symbol.as_str(), interval, t))
                .unwrap_or_else(|| prices.bar_after(t, last))
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
        let prices = self.market.prices(&sym, interval);
        let thin = cfg.is_thin(&sym).then_some(cfg.thin_trade_one_in);
        // The last bar whose first trade has come (and, for a thin symbol, that has trades, even
        // if it closed long ago): what the client sees forming.
        let window = Self::bars_back(
            interval,
            &prices,
            thin,
            phased_open(cfg, interval, now_ms),
            self.depth,
        );
        let forming = window
            .last()
            .copied()
            .unwrap_or_else(|| phased_open(cfg, interval, now_ms));
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
        let mut payload = Vec::with_capacity(times.len());
        let revisions = shared.has_revisions().then_some(shared);
        let mut last = None;
        for (i, t) in times.iter().enumerate() {
            payload.push((
                i as i64,
                Self::bar_at(
                    revisions, &sym, &prices, interval, *t, forming, now_ms, &mut last,
                ),
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
                next_live_ms: next_live_ms(cfg, interval, &prices, thin, forming),
                prices,
                thin,
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
            let times = Self::bars_back(
                s.interval,
                &s.prices,
                s.thin,
                Market::previous_open(s.interval, s.oldest),
                n,
            );
            for (i, t) in times.iter().enumerate() {
                let bar = shared
                    .revised(s.symbol.as_str(), s.interval, *t)
                    .unwrap_or_else(|| s.prices.bar(*t));
                page.push((i as i64, bar));
            }
            if let Some(first) = times.first() {
                s.oldest = *first;
            }
            s.sent += times.len();
        }
        let n = page.len();
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
                // No trade after the forming bar's end: its updates stop there.
                if s.next_du_ms < open_ms(s.interval.next_bar_open(s.forming)) {
                    d = d.min(s.next_du_ms);
                }
                d = d.min(s.next_live_ms);
            }
        }
        for q in self.quotes.values().filter(|q| !q.symbols.is_empty()) {
            d = d.min(q.next_ms);
        }
        if let Some(due) = self.queue_due() {
            d = d.min(due);
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
        self.serve_queue(cfg, shared, now_ms);
        if self.close.is_some() {
            return;
        }
        let update_ms = cfg.update_interval.as_millis() as u64;
        let now_s = (now_ms / 1000) as i64;
        let mut w = ServerWriter::new();
        for (cs, chart) in &mut self.charts {
            for (key, s) in chart.series.iter_mut().filter(|(_, s)| s.live) {
                // A new bar shows when the next one that exists opens and its first trade comes
                // (`next_live_ms`); until then there is nothing to close.
                let moving = now_ms >= s.next_live_ms || s.paused_until.is_some();
                let mut current = if moving {
                    phased_open(cfg, s.interval, now_ms)
                } else {
                    s.forming
                };
                // A thin symbol's latest bar is its latest with trades.
                while current > s.forming && !exists(&s.prices, s.thin, current) {
                    current = Market::previous_open(s.interval, current);
                }
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
                    let fin = if self.stale_close {
                        s.prices.forming(s.forming, 0.5)
                    } else {
                        shared
                            .revised(s.symbol.as_str(), s.interval, s.forming)
                            .unwrap_or_else(|| s.prices.bar(s.forming))
                    };
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
                        // The next bar that exists (a thin symbol's next with trades).
                        let mut t = close_time;
                        while t < current && !exists(&s.prices, s.thin, t) {
                            t = s.interval.next_bar_open(t);
                        }
                        t
                    };
                    jump_pending = false;
                    // Bars jumped over: their opens and closes are lost, but a correction of one
                    // still comes (a `du` for its index), as on every series streaming it.
                    let mut skipped = Vec::new();
                    while s.interval.next_bar_open(s.forming) < next {
                        s.forming = s.interval.next_bar_open(s.forming);
                        // A thin symbol's bars without trades have no index.
                        if !exists(&s.prices, s.thin, s.forming) {
                            continue;
                        }
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
                if moving {
                    s.next_live_ms = next_live_ms(cfg, s.interval, &s.prices, s.thin, s.forming);
                }
                let bar_end_ms = open_ms(s.interval.next_bar_open(s.forming));
                if now_ms >= s.next_du_ms && now_ms >= bar_end_ms {
                    // No trade after the forming bar's end (the tick phase, or a thin symbol's
                    // old bar): no update until the next bar shows.
                    s.next_du_ms = bar_end_ms;
                } else if now_ms >= s.next_du_ms {
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

/// Whether a client request asks something of the server, and so takes
/// [`SimConfig::request_service_time`] to answer (`remove_series` has no answer: it frees
/// state and costs a busy server next to nothing).
fn asks(req: &ClientRequest) -> bool {
    matches!(
        req,
        ClientRequest::ResolveSymbol { .. }
            | ClientRequest::CreateSeries { .. }
            | ClientRequest::ModifySeries { .. }
            | ClientRequest::RequestMoreData { .. }
            | ClientRequest::QuoteAddSymbols { .. }
    )
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

#[cfg(test)]
mod tests {
    //! The server conditions of [`SimConfig`], driven in memory on a virtual clock, as
    //! `live/dst.rs` drives the session.

    use std::time::Duration;

    use super::*;
    use crate::protocol::{MessageParser, ServerMessage, frame::encode_frame};

    /// 2025-07-06 20:16:40 UTC, on a whole second.
    const T0: u64 = 1_751_833_000_000;

    /// One server message as the client saw it: when, what, which series, which bar times.
    #[derive(Debug, Clone)]
    struct Seen {
        at: u64,
        method: &'static str,
        series: String,
        times: Vec<i64>,
    }

    struct Pair {
        cfg: SimConfig,
        shared: Shared,
        server: ServerSession,
        now: u64,
        seen: Vec<Seen>,
        parser: MessageParser,
    }

    impl Pair {
        fn new(cfg: SimConfig) -> Self {
            // No heartbeat in the way: nobody echoes them here.
            let cfg = cfg.with_heartbeat_interval(Duration::from_secs(86_400));
            let server = ServerSession::new(&cfg, T0, 1);
            let mut p = Self {
                cfg,
                shared: Shared::default(),
                server,
                now: T0,
                seen: Vec::new(),
                parser: MessageParser::new(),
            };
            p.collect();
            p
        }

        /// Sends JSON payloads as one websocket message.
        fn send(&mut self, payloads: &[String]) {
            let mut msg = Vec::new();
            for p in payloads {
                encode_frame(p.as_bytes(), &mut msg);
            }
            self.server
                .handle_text(&self.cfg, &self.shared, self.now, &mut msg);
            self.collect();
        }

        /// Runs the server to `end` (ms since `T0`), deadline by deadline.
        fn run_to(&mut self, end: u64) {
            let end = T0 + end;
            loop {
                self.server.tick(&self.cfg, &self.shared, self.now);
                self.collect();
                assert!(self.server.close.is_none(), "{:?}", self.server.close);
                if self.now >= end {
                    return;
                }
                self.now = self.server.next_deadline().max(self.now + 1).min(end);
            }
        }

        fn collect(&mut self) {
            for mut m in std::mem::take(&mut self.server.out) {
                for f in crate::protocol::frame::FrameDecoder::new().frames(&mut m) {
                    let Ok(crate::protocol::frame::Frame::Json(payload)) = f else {
                        continue;
                    };
                    let seen = match self.parser.parse(payload).expect("a valid message") {
                        ServerMessage::TimescaleUpdate { data, .. } => data
                            .iter()
                            .map(|u| ("timescale_update", u.key, u.bars))
                            .collect::<Vec<_>>(),
                        ServerMessage::DataUpdate { data, .. } => {
                            data.iter().map(|u| ("du", u.key, u.bars)).collect()
                        }
                        ServerMessage::SeriesCompleted { series, .. } => {
                            vec![("series_completed", series, &[][..])]
                        }
                        _ => Vec::new(),
                    };
                    for (method, series, bars) in seen {
                        self.seen.push(Seen {
                            at: self.now - T0,
                            method,
                            series: series.to_owned(),
                            times: bars.iter().map(|b| b.bar.time).collect(),
                        });
                    }
                }
            }
            self.server.sent(&self.cfg, self.now);
        }

        fn of(&self, series: &str, method: &str) -> Vec<Seen> {
            self.seen
                .iter()
                .filter(|s| s.series == series && s.method == method)
                .cloned()
                .collect()
        }
    }

    fn chart() -> String {
        r#"{"m":"chart_create_session","p":["cs_test",""]}"#.to_owned()
    }

    fn resolve(id: &str, symbol: &str) -> String {
        format!(r#"{{"m":"resolve_symbol","p":["cs_test","{id}","={{\"symbol\":\"{symbol}\"}}"]}}"#)
    }

    fn create(series: &str, symbol_id: &str, interval: &str, bars: u64, range: &str) -> String {
        format!(
            r#"{{"m":"create_series","p":["cs_test","{series}","{series}","{symbol_id}","{interval}",{bars},"{range}"]}}"#
        )
    }

    #[test]
    fn requests_are_served_one_at_a_time_while_the_stream_flows() {
        let mut p = Pair::new(
            SimConfig::default()
                .with_request_service_time(Duration::from_millis(900))
                .with_update_interval(Duration::from_millis(250)),
        );
        p.send(&[
            chart(),
            resolve("sym", "BINANCE:BTCUSDT"),
            create("s0", "sym", "1S", 10, ""),
        ]);
        // The resolve takes 900 ms, then the series 900 more.
        assert!(p.seen.is_empty());
        p.run_to(1_799);
        assert!(p.seen.is_empty(), "{:?}", p.seen);
        p.run_to(2_000);
        let loads = p.of("s0", "series_completed");
        assert_eq!(loads.len(), 1);
        assert_eq!(loads[0].at, 1_800);
        // Three requests at once: answered 900, 1800 and 2700 ms later, in order.
        p.send(&[
            create("s1", "sym", "1S", 10, ""),
            create("s2", "sym", "5S", 10, ""),
            create("s3", "sym", "1", 10, ""),
        ]);
        p.run_to(5_000);
        for (series, at) in [("s1", 2_900), ("s2", 3_800), ("s3", 4_700)] {
            let done = p.of(series, "series_completed");
            assert_eq!(done.len(), 1, "{series}");
            assert_eq!(done[0].at, at, "{series}");
            let first = p.seen.iter().find(|s| s.series == series).unwrap();
            assert_eq!(first.at, at, "nothing of {series} before its answer");
        }
        // Meanwhile s0 streamed at its cadence: an update every 250 ms, never a gap of a
        // service time.
        let du: Vec<u64> = p
            .of("s0", "du")
            .iter()
            .map(|s| s.at)
            .filter(|at| (2_000..=4_700).contains(at))
            .collect();
        assert!(du.len() >= 10, "{du:?}");
        assert!(du.windows(2).all(|w| w[1] - w[0] <= 250), "{du:?}");
    }

    #[test]
    fn the_first_trade_of_a_bar_comes_a_tick_phase_after_its_boundary() {
        let mut p = Pair::new(
            SimConfig::default()
                .with_tick_phase(Duration::from_millis(50))
                .with_update_interval(Duration::from_millis(250)),
        );
        p.send(&[
            chart(),
            resolve("sym", "BINANCE:BTCUSDT"),
            create("s0", "sym", "1S", 10, ""),
        ]);
        p.run_to(10_000);
        let new_bars = p.of("s0", "timescale_update");
        // History first, then one new bar a second.
        assert_eq!(new_bars[0].times.len(), 10);
        let new_bars = &new_bars[1..];
        assert_eq!(new_bars.len(), 10, "{new_bars:?}");
        for nb in new_bars {
            let boundary = nb.times[0] as u64 * 1000 - T0;
            assert_eq!(nb.at, boundary + 50, "{nb:?}");
            // Nothing in between: the old bar's last update came before its end.
            assert!(
                !p.of("s0", "du")
                    .iter()
                    .any(|d| (boundary..boundary + 50).contains(&d.at)),
                "an update inside the phase of {boundary}"
            );
        }
        // Updates within a bar keep their cadence from the first trade.
        let du: Vec<u64> = p.of("s0", "du").iter().map(|s| s.at).collect();
        assert!(du.contains(&1_300) && du.contains(&1_550), "{du:?}");
        // A load between a boundary and its first trade ends at the bar before.
        p.run_to(11_020);
        p.send(&[create("s1", "sym", "1S", 5, "")]);
        let hist = &p.of("s1", "timescale_update")[0];
        assert_eq!(*hist.times.last().unwrap(), (T0 / 1000) as i64 + 10);
        p.run_to(11_050);
        let opened = p.of("s1", "timescale_update");
        assert_eq!(opened.len(), 2, "{opened:?}");
        assert_eq!(
            (opened[1].at, opened[1].times[0]),
            (11_050, (T0 / 1000) as i64 + 11)
        );
    }

    #[test]
    fn a_jittered_phase_stays_in_its_window_and_varies() {
        let cfg = SimConfig::default()
            .with_tick_phase(Duration::from_millis(50))
            .with_tick_phase_jitter(Duration::from_millis(100));
        let mut p = Pair::new(cfg.clone());
        p.send(&[
            chart(),
            resolve("sym", "BINANCE:BTCUSDT"),
            create("s0", "sym", "1S", 10, ""),
        ]);
        p.run_to(20_000);
        let mut delays = Vec::new();
        for nb in &p.of("s0", "timescale_update")[1..] {
            let boundary = nb.times[0] as u64 * 1000 - T0;
            let delay = nb.at - boundary;
            assert!((50..=150).contains(&delay), "{nb:?}");
            let interval: Interval = "1S".parse().unwrap();
            assert_eq!(
                Duration::from_millis(delay),
                cfg.first_trade_delay(interval, nb.times[0])
            );
            delays.push(delay);
        }
        delays.sort_unstable();
        delays.dedup();
        assert!(delays.len() > 5, "{delays:?}");
    }

    #[test]
    fn a_thin_symbol_has_bars_only_where_it_traded() {
        let cfg = SimConfig::default()
            .with_thin_symbols(vec!["NYSE:THIN".into()])
            .with_thin_trade_one_in(4);
        let (sym, iv): (Symbol, Interval) = ("NYSE:THIN".parse().unwrap(), "1S".parse().unwrap());
        let mut p = Pair::new(cfg.clone());
        let now_s = (T0 / 1000) as i64;
        // History: 30 bars, each traded, and none traded left out between them.
        p.send(&[
            chart(),
            resolve("sym", "NYSE:THIN"),
            create("s0", "sym", "1S", 30, ""),
        ]);
        let hist = p.of("s0", "timescale_update")[0].times.clone();
        assert_eq!(hist.len(), 30);
        let last_traded = (0..)
            .map(|i| now_s - i)
            .find(|t| cfg.has_bar(&sym, iv, *t))
            .unwrap();
        assert_eq!(
            *hist.last().unwrap(),
            last_traded,
            "the load ends at the last traded bar"
        );
        let traded: Vec<i64> = (hist[0]..=now_s)
            .filter(|t| cfg.has_bar(&sym, iv, *t))
            .collect();
        assert_eq!(hist, traded);
        assert!(
            hist.windows(2).any(|w| w[1] - w[0] > 1),
            "there are gaps: {hist:?}"
        );
        // Paging goes on from there, over traded bars only.
        p.send(&[r#"{"m":"request_more_data","p":["cs_test","s0",20]}"#.to_owned()]);
        let page = p.of("s0", "timescale_update")[1].times.clone();
        assert_eq!(page.len(), 20);
        let traded: Vec<i64> = (page[0]..hist[0])
            .filter(|t| cfg.has_bar(&sym, iv, *t))
            .collect();
        assert_eq!(page, traded);
        // A range holds the traded bars in it.
        let (from, to) = (now_s - 40, now_s - 10);
        p.send(&[create("s1", "sym", "1S", 0, &format!("r,{from}:{to}"))]);
        let ranged = p.of("s1", "timescale_update")[0].times.clone();
        let traded: Vec<i64> = (from..=to).filter(|t| cfg.has_bar(&sym, iv, *t)).collect();
        assert_eq!(ranged, traded);
        // The stream: a new bar for each traded second, none for the others, and updates only
        // of traded bars.
        p.run_to(60_000);
        let opened: Vec<i64> = p.of("s0", "timescale_update")[2..]
            .iter()
            .map(|s| s.times[0])
            .collect();
        let traded: Vec<i64> = (now_s + 1..=now_s + 60)
            .filter(|t| cfg.has_bar(&sym, iv, *t))
            .collect();
        assert_eq!(opened, traded);
        assert!(opened.len() < 40, "about one in four: {}", opened.len());
        // A load while the current bar has no trade ends at the last traded one, long closed.
        let k = (61..)
            .find(|k| (0..3).all(|i| !cfg.has_bar(&sym, iv, now_s + k - i)))
            .unwrap();
        p.run_to(k as u64 * 1000 + 500);
        p.send(&[create("s2", "sym", "1S", 5, "")]);
        let last = *p.of("s2", "timescale_update")[0].times.last().unwrap();
        assert!(last <= now_s + k - 3);
        assert_eq!(
            last,
            (0..)
                .map(|i| now_s + k - i)
                .find(|t| cfg.has_bar(&sym, iv, *t))
                .unwrap()
        );
        for d in p.of("s0", "du") {
            assert!(d.times.iter().all(|t| cfg.has_bar(&sym, iv, *t)), "{d:?}");
        }
        // A busy symbol on the same server still has every bar.
        let mut busy = Pair::new(cfg);
        busy.send(&[
            chart(),
            resolve("sym", "NYSE:IBM"),
            create("s0", "sym", "1S", 30, ""),
        ]);
        let hist = busy.of("s0", "timescale_update")[0].times.clone();
        assert_eq!(hist, (now_s - 29..=now_s).collect::<Vec<_>>());
    }
}
