//! The chart-session state machine: the series of one chart session, keyed by the caller.
//!
//! A [`ChartSession`] owns series only: it queues `resolve_symbol` / `create_series` /
//! `request_more_data` / `remove_series`, takes the server messages addressed to its session
//! (already framed and parsed by [`Connection`](super::Connection), which owns it), pages
//! history, follows live updates, detects bar closes and turns every refusal into a typed
//! [`SeriesFailure`]. Framing, parsing, heartbeats, auth and the idle deadline belong to the
//! connection.
//!
//! Pure, in the `quinn-proto` style: no sockets, threads or clock; time is a parameter.
//!
//! # Keys, wire ids and slots
//!
//! The caller names each series with a stable [`SeriesKey`] (the engine uses its seis id). On the
//! wire a series is `sds_<n>` with symbol `sds_sym_<n>`, where `n` comes from a counter that
//! never repeats within the session: a late message for a removed series can never be taken
//! for the series that reuses its slot. Slots are reused after [`ChartSession::remove_series`],
//! so memory follows the number of live series, not the number ever added.
#![forbid(unsafe_code)]

use std::{
    collections::VecDeque,
    time::{Duration, Instant},
};

use super::{
    message::{IndexedBar, SeriesData, ServerMessage, SymbolInfo},
    request::{Request, SeriesRange, SymbolSpec},
};
use crate::{Bar, Interval, Symbol, det::DetHashMap, timer::TimerWheel};

/// The turnaround id of every series: wire ids are never reused, so one turnaround suffices.
const TURNAROUND: &str = "s1";

/// Settings of a [`ChartSession`]. By-value setters; every default is documented.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct ChartConfig {
    /// `switch_timezone` sent after `chart_create_session`, default `None`. Bar times are UTC
    /// whatever the zone.
    pub timezone: Option<String>,
    /// How long a series may take from [`ChartSession::add_series`] to its history before it
    /// fails with [`SeriesFailure::LoadTimeout`]. Default 30 s.
    pub load_timeout: Duration,
    /// Most bars kept for one series while its history loads. Default 100,000.
    pub max_history_bars: usize,
    /// Bars asked per `request_more_data` page at most. Default 5,000.
    pub page_size: u32,
    /// Most closed bars [`ChartSession::resubscribe`] asks for to fill one series' gap.
    /// Default 5,000 (the anonymous history depth).
    pub max_gap_bars: u32,
    /// Resolve each symbol once per chart session: a series whose symbol spec this session
    /// already resolved reuses that `sds_sym_<n>` (one `create_series`, no `resolve_symbol`).
    /// The server keeps every symbol a session resolved until the session is deleted, so a
    /// session that opens many short series of few symbols (close confirmations) keeps its
    /// server-side state bounded by the symbols, not by the series. Default `false`.
    pub reuse_symbols: bool,
}

impl Default for ChartConfig {
    fn default() -> Self {
        Self {
            timezone: None,
            load_timeout: Duration::from_secs(30),
            max_history_bars: 100_000,
            page_size: 5_000,
            max_gap_bars: 5_000,
            reuse_symbols: false,
        }
    }
}

impl ChartConfig {
    /// Sets [`ChartConfig::timezone`].
    #[must_use]
    pub fn with_timezone(mut self, tz: Option<String>) -> Self {
        self.timezone = tz;
        self
    }

    /// Sets [`ChartConfig::load_timeout`].
    #[must_use]
    pub fn with_load_timeout(mut self, timeout: Duration) -> Self {
        self.load_timeout = timeout;
        self
    }

    /// Sets [`ChartConfig::max_history_bars`] (at least 1).
    #[must_use]
    pub fn with_max_history_bars(mut self, n: usize) -> Self {
        self.max_history_bars = n.max(1);
        self
    }

    /// Sets [`ChartConfig::page_size`] (at least 1).
    #[must_use]
    pub fn with_page_size(mut self, n: u32) -> Self {
        self.page_size = n.max(1);
        self
    }

    /// Sets [`ChartConfig::max_gap_bars`] (at least 1).
    #[must_use]
    pub fn with_max_gap_bars(mut self, n: u32) -> Self {
        self.max_gap_bars = n.max(1);
        self
    }

    /// Sets [`ChartConfig::reuse_symbols`].
    #[must_use]
    pub fn with_reuse_symbols(mut self, on: bool) -> Self {
        self.reuse_symbols = on;
        self
    }
}

/// What series to open.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct SeriesRequest {
    /// Symbol and presentation.
    pub spec: SymbolSpec,
    /// Bar resolution.
    pub interval: Interval,
    /// Which bars: `Count(n)` means `n` **closed** bars (the forming bar comes separately),
    /// unless [`SeriesRequest::forming_counted`].
    pub range: SeriesRange,
    /// `Count(n)` counts the forming bar, as the server's own count does: `n` bars in all,
    /// `n - 1` closed and the forming one when the market is live, `n` closed when the last
    /// bar has closed (tvDatafeed's `n_bars`). One request of `n` bars, where `n` closed bars
    /// and the forming one are `n + 1` (at a page size of `n`, a second request).
    pub forming_counted: bool,
}

impl SeriesRequest {
    /// The last `n` closed bars, then live updates.
    pub fn count(symbol: Symbol, interval: Interval, n: u32) -> Self {
        Self {
            spec: SymbolSpec::new(symbol),
            interval,
            range: SeriesRange::Count(n),
            forming_counted: false,
        }
    }

    /// Bars opening in `from..=to` (UTC seconds), at most `max_bars`.
    pub fn range(symbol: Symbol, interval: Interval, from: i64, to: i64, max_bars: u32) -> Self {
        Self {
            spec: SymbolSpec::new(symbol),
            interval,
            range: SeriesRange::Range { from, to, max_bars },
            forming_counted: false,
        }
    }

    /// Sets [`SeriesRequest::forming_counted`].
    #[must_use]
    pub fn with_forming_counted(mut self, on: bool) -> Self {
        self.forming_counted = on;
        self
    }

    /// Replaces the symbol spec (adjustment, session, currency…).
    #[must_use]
    pub fn with_spec(mut self, spec: SymbolSpec) -> Self {
        self.spec = spec;
        self
    }

    /// The symbol.
    pub fn symbol(&self) -> &Symbol {
        &self.spec.symbol
    }
}

/// The caller's name for a series: stable for the series' life, chosen by the caller (the live
/// engine uses its seis id), unique within one [`ChartSession`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SeriesKey(pub u64);

/// Why a series failed. Final: the series receives nothing more.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SeriesFailure {
    /// `symbol_error "invalid symbol"` (or another symbol reason). Do not retry.
    #[error("unknown symbol ({reason})")]
    UnknownSymbol {
        /// The server's reason.
        reason: String,
    },
    /// `symbol_error "permission denied"`: the account may not see this symbol. Sign in with an
    /// account that has the data group.
    #[error("permission denied ({kind}: {detail})")]
    PermissionDenied {
        /// `group` or `symbol`.
        kind: String,
        /// The group (`economics_paid`) or symbol.
        detail: String,
    },
    /// `series_error` about the resolution: `seconds_not_entitled`, `custom_resolution`,
    /// `resolution_not_entitled`, `unsupported resolution: …`, `ticks_not_entitled`.
    #[error("interval not entitled ({reason})")]
    IntervalNotEntitled {
        /// The server's reason.
        reason: String,
    },
    /// `critical_error` naming this series' request, e.g. `invalid parameters` for a bad
    /// resolution.
    #[error("invalid parameters: {reason} ({detail})")]
    InvalidParameters {
        /// The server's reason.
        reason: String,
        /// The server's detail (`method: create_series. args: "[…]"`).
        detail: String,
    },
    /// Any other `series_error` reason.
    #[error("series error: {reason}")]
    Server {
        /// The server's reason.
        reason: String,
    },
    /// History did not complete within [`ChartConfig::load_timeout`]. Retrying may help.
    #[error("history did not complete within {}", crate::HumanDuration(*timeout))]
    LoadTimeout {
        /// The timeout.
        timeout: Duration,
    },
}

impl SeriesFailure {
    /// Whether asking again (later, or on a new connection) may succeed: only a load timeout.
    pub fn is_retryable(&self) -> bool {
        matches!(self, Self::LoadTimeout { .. })
    }
}

/// What happened to one series.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum SeriesEvent {
    /// The symbol resolved.
    Resolved(Box<SymbolInfo>),
    /// A page of history arrived; `bars` is how many distinct bars are loaded so far.
    Progress {
        /// Bars loaded so far.
        bars: usize,
    },
    /// History is complete: closed bars ascending by time, deduplicated, then the forming bar.
    History {
        /// Closed bars, ascending, at most the count asked for.
        bars: Vec<Bar>,
        /// The bar still forming, if the market is live.
        forming: Option<Bar>,
        /// `streaming`, `delayed_streaming_900`…
        update_mode: String,
    },
    /// New values of the forming bar.
    Update(Bar),
    /// A bar closed, with the last values seen for it.
    Closed(Bar),
    /// Values for a bar that already closed here (a late or repeated `du` for an older
    /// index): compare them with what was delivered to detect a correction.
    Late(Bar),
    /// The series failed; nothing follows.
    Failed(SeriesFailure),
}

/// An output of [`ChartSession::poll_event`].
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum ChartEvent {
    /// Something happened to a series.
    Series {
        /// The caller's key of the series.
        key: SeriesKey,
        /// What.
        event: SeriesEvent,
    },
    /// A `critical_error` for this chart that names no series (`invalid timezone`…).
    CriticalError {
        /// The server's reason.
        reason: String,
        /// The server's detail.
        detail: Option<String>,
    },
}

/// A call a [`ChartSession`] could not take.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SessionError {
    /// No series has this key here.
    #[error("no series {0:?} in this chart session")]
    UnknownSeries(SeriesKey),
    /// A series with this key is already open here.
    #[error("series {0:?} is already open in this chart session")]
    DuplicateSeries(SeriesKey),
    /// More than `u32::MAX` series are open at once.
    #[error("too many series in one chart session")]
    TooManySeries,
    /// The chart session was removed from its connection.
    #[error("no such chart session")]
    UnknownChart,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// Requests sent; waiting for the first page.
    Loading,
    /// `request_more_data` sent; waiting for the next page.
    Paging,
    /// History delivered; following the forming bar.
    Live,
    /// Failed; ignores everything.
    Failed,
}

/// The bars of a loading series: ascending by open time, one per time, the last value received
/// for a time winning. A sorted `Vec`, not a map: a page arrives in order and older than what
/// is loaded (or newer, the first), so it goes in with one move, not 5,000 tree inserts.
#[derive(Debug, Default)]
struct HistoryBars {
    bars: Vec<Bar>,
}

impl HistoryBars {
    /// Adds a page of bars; returns how many open times were new.
    fn insert_page(&mut self, page: &[IndexedBar]) -> usize {
        let ascending = page.windows(2).all(|w| w[0].bar.time < w[1].bar.time);
        if let (true, Some(first), Some(last)) = (ascending, page.first(), page.last()) {
            if self.bars.last().is_none_or(|l| first.bar.time > l.time) {
                self.bars.extend(page.iter().map(|b| b.bar));
                return page.len();
            }
            if self.bars.first().is_some_and(|f| last.bar.time < f.time) {
                self.bars.splice(0..0, page.iter().map(|b| b.bar));
                return page.len();
            }
        }
        page.iter().filter(|b| self.insert(b.bar)).count()
    }

    /// Adds or replaces one bar; returns whether its open time was new.
    fn insert(&mut self, bar: Bar) -> bool {
        match self.bars.binary_search_by_key(&bar.time, |b| b.time) {
            Ok(i) => {
                self.bars[i] = bar;
                false
            }
            Err(i) => {
                self.bars.insert(i, bar);
                true
            }
        }
    }

    /// Drops the oldest bars past `cap`.
    fn keep_newest(&mut self, cap: usize) {
        let excess = self.bars.len().saturating_sub(cap);
        self.bars.drain(..excess);
    }

    fn len(&self) -> usize {
        self.bars.len()
    }

    fn clear(&mut self) {
        self.bars.clear();
    }

    fn into_vec(self) -> Vec<Bar> {
        self.bars
    }
}

#[derive(Debug)]
struct SeriesState {
    key: SeriesKey,
    request: SeriesRequest,
    /// The `n` of `sds_<n>` / `sds_sym_<n>`; never reused within the session.
    wire: u64,
    phase: Phase,
    /// What the current load asks for (the request, or a resubscription's gap window).
    range: SeriesRange,
    history: HistoryBars,
    page_added: usize,
    bar_close_time: Option<i64>,
    forming: Option<Bar>,
    load_timer: Option<crate::timer::TimerKey>,
}

impl SeriesState {
    /// Closed bars wanted plus the forming bar (the bars in all, for
    /// [`SeriesRequest::forming_counted`]).
    fn wanted(&self) -> usize {
        match self.range {
            SeriesRange::Count(n) => n as usize + usize::from(!self.request.forming_counted),
            SeriesRange::Range { max_bars, .. } => max_bars as usize,
        }
    }
}

/// The load-timeout timer of a series: its slot and its wire id (a stale timer of a removed
/// series finds another wire id in the slot and is ignored).
#[derive(Debug, Clone, Copy)]
struct LoadTimer {
    slot: u32,
    wire: u64,
}

/// One chart session's series: requests out, parsed server messages in, events out.
///
/// Usually owned by a [`Connection`](super::Connection), which frames and parses the bytes,
/// routes each message here by session id and drains this session's transmits and events. It
/// can also be driven alone with parsed messages (the tests do).
///
/// # Driving it
///
/// 1. Add series with [`ChartSession::add_series`] at any time; remove them with
///    [`ChartSession::remove_series`].
/// 2. Send every message [`ChartSession::poll_transmit`] returns, each as one websocket text
///    message, after the connection's own (auth first).
/// 3. Feed it every parsed server message for its session ([`ChartSession::handle_message`]).
/// 4. Drain [`ChartSession::poll_event`].
/// 5. Call [`ChartSession::handle_timeout`] when [`ChartSession::poll_timeout`] is reached.
///
/// Times must not go backwards.
///
/// # Bars
///
/// Bars are keyed by open time (UTC seconds), deduplicated and ascending. A `du` replaces the
/// forming bar; a bar with a later time, from a `du` or a `timescale_update`, closes the
/// forming bar with the last values seen ([`SeriesEvent::Closed`]).
#[derive(Debug)]
pub struct ChartSession {
    id: String,
    config: ChartConfig,
    /// The instant time 0 of `timers` stands for.
    epoch: Instant,
    slots: Vec<Option<SeriesState>>,
    /// Free slot indices (LIFO).
    free: Vec<u32>,
    by_key: DetHashMap<SeriesKey, u32>,
    by_wire: DetHashMap<u64, u32>,
    next_wire: u64,
    /// Load deadlines, in milliseconds since `epoch`.
    timers: TimerWheel<LoadTimer>,
    transmit: VecDeque<Vec<u8>>,
    events: VecDeque<ChartEvent>,
    /// Keys removed since the owning connection last looked, so that it can drop the events
    /// of theirs it already queued.
    removed: Vec<SeriesKey>,
    /// Symbols this session asked the server to resolve: spec → the wire number `n` of its
    /// `sds_sym_<n>`. Only reused with [`ChartConfig::reuse_symbols`]; counted either way
    /// ([`ChartSession::resolved_symbols`]). A symbol that failed to resolve is forgotten.
    resolved: DetHashMap<SymbolSpec, u64>,
    /// `resolve_symbol` requests sent by this session (what the server keeps for it).
    resolves: usize,
}

impl ChartSession {
    /// A chart session named `id` (`cs_` and 12 letters, see
    /// [`SessionIds`](super::SessionIds)). Queues `chart_create_session` and, when configured,
    /// `switch_timezone`.
    pub fn new(now: Instant, id: impl Into<String>, config: ChartConfig) -> Self {
        let mut s = Self {
            id: id.into(),
            config,
            epoch: now,
            slots: Vec::new(),
            free: Vec::new(),
            by_key: DetHashMap::default(),
            by_wire: DetHashMap::default(),
            next_wire: 1,
            timers: TimerWheel::new(0),
            transmit: VecDeque::new(),
            events: VecDeque::new(),
            removed: Vec::new(),
            resolved: DetHashMap::default(),
            resolves: 0,
        };
        s.queue_create();
        s
    }

    /// How many `resolve_symbol` requests this session sent since it was (re)created: the
    /// symbols the server keeps for it.
    pub fn resolved_symbols(&self) -> usize {
        self.resolves
    }

    /// How many series are still loading (asked, not answered, not failed): one load timer
    /// each, so this is counted without a scan.
    pub fn loading(&self) -> usize {
        self.timers.len()
    }

    /// Asks the server to resolve `spec` now, ahead of the first series that needs it, so
    /// that series costs only its `create_series` (the `resolve_symbol` is off its path).
    /// Only with [`ChartConfig::reuse_symbols`], and only once per session and spec: returns
    /// whether a `resolve_symbol` was queued. A symbol that fails to resolve is forgotten, and
    /// the next series asks again (and learns why); a series created while the resolution was
    /// still unanswered learns of the failure from the server's `series_error`, or else from
    /// its load timeout.
    pub fn resolve_ahead(&mut self, spec: &SymbolSpec) -> bool {
        if !self.config.reuse_symbols || self.resolved.contains_key(spec) {
            return false;
        }
        // A wire number of its own: no series answers to it, so the server's
        // `symbol_resolved` for it is ignored and a `symbol_error` only forgets it.
        let n = self.next_wire;
        self.next_wire += 1;
        let mut resolve = Vec::with_capacity(160);
        Request::ResolveSymbol {
            session: &self.id,
            symbol_id: &format!("sds_sym_{n}"),
            spec,
        }
        .encode(&mut resolve);
        self.transmit.push_back(resolve);
        self.resolves += 1;
        self.resolved.insert(spec.clone(), n);
        true
    }

    /// The chart session id.
    pub fn id(&self) -> &str {
        &self.id
    }

    /// The configuration.
    pub fn config(&self) -> &ChartConfig {
        &self.config
    }

    /// How many series are open (loading, live or failed but not removed).
    pub fn len(&self) -> usize {
        self.by_key.len()
    }

    /// Whether no series is open.
    pub fn is_empty(&self) -> bool {
        self.by_key.is_empty()
    }

    /// Slots allocated for series: the peak number open at once, never the number ever added.
    pub fn slot_count(&self) -> usize {
        self.slots.len()
    }

    /// Whether a series with `key` is open.
    pub fn contains(&self, key: SeriesKey) -> bool {
        self.by_key.contains_key(&key)
    }

    /// The request a series was opened with.
    pub fn request(&self, key: SeriesKey) -> Option<&SeriesRequest> {
        let slot = *self.by_key.get(&key)?;
        self.slots[slot as usize].as_ref().map(|s| &s.request)
    }

    fn ms(&self, now: Instant) -> u64 {
        u64::try_from(now.saturating_duration_since(self.epoch).as_millis()).unwrap_or(u64::MAX)
    }

    /// Queues `chart_create_session`: a new session on the server, which has resolved
    /// nothing for it yet.
    fn queue_create(&mut self) {
        self.resolved.clear();
        self.resolves = 0;
        let session = self.id.clone();
        self.send(Request::ChartCreateSession { session: &session });
        if let Some(timezone) = self.config.timezone.clone() {
            self.send(Request::SwitchTimezone {
                session: &session,
                timezone: &timezone,
            });
        }
    }

    /// Opens a series under `key`: queues `resolve_symbol` and `create_series`, and arms its
    /// load timeout from `now`.
    ///
    /// # Errors
    ///
    /// [`SessionError::DuplicateSeries`] when `key` is open here;
    /// [`SessionError::TooManySeries`] past `u32::MAX` open series.
    pub fn add_series(
        &mut self,
        now: Instant,
        key: SeriesKey,
        request: SeriesRequest,
    ) -> Result<(), SessionError> {
        if self.by_key.contains_key(&key) {
            return Err(SessionError::DuplicateSeries(key));
        }
        let slot = match self.free.pop() {
            Some(slot) => slot,
            None => {
                let slot =
                    u32::try_from(self.slots.len()).map_err(|_| SessionError::TooManySeries)?;
                self.slots.push(None);
                slot
            }
        };
        let range = request.range;
        self.slots[slot as usize] = Some(SeriesState {
            key,
            request,
            wire: 0,
            phase: Phase::Loading,
            range,
            history: HistoryBars::default(),
            page_added: 0,
            bar_close_time: None,
            forming: None,
            load_timer: None,
        });
        self.by_key.insert(key, slot);
        self.start_load(now, slot, range);
        Ok(())
    }

    /// (Re)starts the load of the series in `slot` under a fresh wire id: queues its requests
    /// and arms its load timer.
    fn start_load(&mut self, now: Instant, slot: u32, range: SeriesRange) {
        let now_ms = self.ms(now);
        let deadline = now_ms.saturating_add(
            u64::try_from(self.config.load_timeout.as_millis()).unwrap_or(u64::MAX),
        );
        let wire = self.next_wire;
        self.next_wire += 1;
        let page_size = self.config.page_size as usize;
        let Some(s) = self.slots[slot as usize].as_mut() else {
            return;
        };
        if s.wire != 0 {
            self.by_wire.remove(&s.wire);
        }
        if let Some(t) = s.load_timer.take() {
            self.timers.cancel(t);
        }
        s.wire = wire;
        s.phase = Phase::Loading;
        s.range = range;
        s.history.clear();
        s.page_added = 0;
        s.bar_close_time = None;
        s.forming = None;
        s.load_timer = Some(self.timers.insert(deadline, LoadTimer { slot, wire }));
        self.by_wire.insert(wire, slot);
        let first_page = s.wanted().min(page_size) as u32;
        let wire_range = match range {
            SeriesRange::Count(_) => SeriesRange::Count(first_page.max(1)),
            r => r,
        };
        let Some(s) = self.slots[slot as usize].as_ref() else {
            return;
        };
        let reused = self
            .config
            .reuse_symbols
            .then(|| self.resolved.get(&s.request.spec).copied())
            .flatten();
        let (session, series_id, symbol_id) = (
            self.id.clone(),
            format!("sds_{wire}"),
            format!("sds_sym_{}", reused.unwrap_or(wire)),
        );
        if reused.is_none() {
            let mut resolve = Vec::with_capacity(160);
            Request::ResolveSymbol {
                session: &session,
                symbol_id: &symbol_id,
                spec: &s.request.spec,
            }
            .encode(&mut resolve);
            self.transmit.push_back(resolve);
            self.resolves += 1;
            if self.config.reuse_symbols {
                self.resolved.insert(s.request.spec.clone(), wire);
            }
        }
        let mut create = Vec::with_capacity(128);
        Request::CreateSeries {
            session: &session,
            series_id: &series_id,
            turnaround: TURNAROUND,
            symbol_id: &symbol_id,
            interval: s.request.interval,
            range: wire_range,
        }
        .encode(&mut create);
        self.transmit.push_back(create);
    }

    /// Closes the series `key`: queues `remove_series` and drops its queued events; nothing of
    /// it follows, and its slot is reused by the next [`ChartSession::add_series`].
    ///
    /// # Errors
    ///
    /// [`SessionError::UnknownSeries`] when `key` is not open here.
    pub fn remove_series(&mut self, key: SeriesKey) -> Result<(), SessionError> {
        let slot = self
            .by_key
            .remove(&key)
            .ok_or(SessionError::UnknownSeries(key))?;
        let Some(state) = self.slots[slot as usize].take() else {
            return Err(SessionError::UnknownSeries(key));
        };
        self.by_wire.remove(&state.wire);
        if let Some(t) = state.load_timer {
            self.timers.cancel(t);
        }
        self.free.push(slot);
        let session = self.id.clone();
        self.send(Request::RemoveSeries {
            session: &session,
            series_id: &format!("sds_{}", state.wire),
        });
        self.events
            .retain(|e| !matches!(e, ChartEvent::Series { key: k, .. } if *k == key));
        self.removed.push(key);
        Ok(())
    }

    /// The keys removed since the last call (for the owning connection).
    pub(crate) fn take_removed(&mut self) -> Option<Vec<SeriesKey>> {
        (!self.removed.is_empty()).then(|| std::mem::take(&mut self.removed))
    }

    /// Replays this chart session onto a fresh connection (after a reconnect): drops whatever
    /// was queued for the old one, queues `chart_create_session` again, and re-opens every
    /// series that has not failed, each under a new wire id and with its load timer re-armed.
    ///
    /// For a series whose caller saw bars up to open time `t` (`last_seen(key) == Some(t)`,
    /// UTC seconds), the new load asks for every bar from `t` to `unix_now` (bar `t` included,
    /// so the caller can check it), at most [`ChartConfig::max_gap_bars`] closed bars; the
    /// [`SeriesEvent::History`] that answers it is the gap fill, and live updates follow. Other
    /// series are re-opened with their original request.
    pub fn resubscribe(
        &mut self,
        now: Instant,
        unix_now: i64,
        mut last_seen: impl FnMut(SeriesKey) -> Option<i64>,
    ) {
        self.transmit.clear();
        self.events.clear();
        self.queue_create();
        for slot in 0..self.slots.len() {
            let Some(s) = self.slots[slot].as_ref() else {
                continue;
            };
            if s.phase == Phase::Failed {
                continue;
            }
            let range = self.gap_range(s, last_seen(s.key), unix_now);
            self.start_load(now, slot as u32, range);
        }
    }

    /// Asks the series `key` again (a failed load, e.g. a timeout on a slow server) under a
    /// new wire id, from open time `last_seen` to `unix_now` like
    /// [`ChartSession::resubscribe`] (or with its original request when `None`). Returns
    /// whether `key` is open here.
    pub fn reload(
        &mut self,
        now: Instant,
        key: SeriesKey,
        last_seen: Option<i64>,
        unix_now: i64,
    ) -> bool {
        let Some(&slot) = self.by_key.get(&key) else {
            return false;
        };
        let Some(s) = self.slots[slot as usize].as_ref() else {
            return false;
        };
        let range = self.gap_range(s, last_seen, unix_now);
        // The old wire id's series goes on the server (its answer, if late, names a wire id
        // no longer known, and is ignored).
        let session = self.id.clone();
        let old = format!("sds_{}", s.wire);
        self.send(Request::RemoveSeries {
            session: &session,
            series_id: &old,
        });
        self.start_load(now, slot, range);
        true
    }

    /// What a series asks when it is loaded again: for a caller that saw bars up to open time
    /// `last_seen`, every bar from it to `unix_now` (it included, so the caller can check it;
    /// `Count` asks closed bars), at most [`ChartConfig::max_gap_bars`]; else its request.
    fn gap_range(&self, s: &SeriesState, last_seen: Option<i64>, unix_now: i64) -> SeriesRange {
        let Some(t) = last_seen else {
            return s.request.range;
        };
        let span =
            s.request
                .interval
                .bars_spanning(t, unix_now, u64::from(self.config.max_gap_bars) + 1);
        let closed = span.saturating_sub(1).max(1);
        SeriesRange::Count(
            u32::try_from(closed)
                .unwrap_or(u32::MAX)
                .min(self.config.max_gap_bars),
        )
    }

    /// Forgets every series without telling the server, for a connection that is gone: the
    /// chart session is empty afterwards, with nothing queued. [`ChartSession::resubscribe`]
    /// then re-creates it on the next connection.
    pub fn clear(&mut self) {
        self.transmit.clear();
        self.events.clear();
        self.removed.clear();
        self.slots.clear();
        self.free.clear();
        self.by_key.clear();
        self.by_wire.clear();
        self.resolved.clear();
        self.resolves = 0;
        self.timers = TimerWheel::new(0);
    }

    /// Takes one parsed server message. Messages for other sessions, quotes and studies are
    /// ignored.
    pub fn handle_message(&mut self, now: Instant, msg: &ServerMessage<'_>) {
        let _ = now;
        match msg {
            ServerMessage::SymbolResolved {
                session,
                symbol_id,
                info,
            } if *session == self.id => {
                if let Some(i) = self.by_symbol_id(symbol_id) {
                    self.emit(i, SeriesEvent::Resolved(info.clone()));
                }
            }
            ServerMessage::TimescaleUpdate { session, data }
            | ServerMessage::DataUpdate { session, data }
                if *session == self.id =>
            {
                self.series_data(data);
            }
            ServerMessage::SeriesCompleted {
                session,
                series,
                update_mode,
                turnaround,
            } if *session == self.id => self.completed(series, update_mode, *turnaround),
            ServerMessage::SymbolError {
                session,
                symbol_id,
                reason,
                kind,
                detail,
            } if *session == self.id => {
                // A symbol that did not resolve is asked again by its next series.
                if let Some(n) = symbol_id
                    .strip_prefix("sds_sym_")
                    .and_then(|n| n.parse::<u64>().ok())
                {
                    self.resolved.retain(|_, w| *w != n);
                }
                if let Some(i) = self.by_symbol_id(symbol_id) {
                    let failure = if *reason == "permission denied" {
                        SeriesFailure::PermissionDenied {
                            kind: kind.unwrap_or("").to_owned(),
                            detail: detail.unwrap_or("").to_owned(),
                        }
                    } else {
                        SeriesFailure::UnknownSymbol {
                            reason: (*reason).to_owned(),
                        }
                    };
                    self.fail(i, failure);
                }
            }
            ServerMessage::SeriesError {
                session,
                series,
                reason,
                ..
            } if *session == self.id => {
                // A `resolve error` after a `symbol_error` finds the series already failed.
                if let Some(i) = self.by_series_id(series) {
                    self.fail(i, series_failure(reason));
                }
            }
            ServerMessage::CriticalError {
                session,
                reason,
                detail,
            } if *session == self.id => {
                match detail
                    .and_then(critical_error_series)
                    .and_then(|k| self.by_series_id(k))
                {
                    Some(i) => self.fail(
                        i,
                        SeriesFailure::InvalidParameters {
                            reason: (*reason).to_owned(),
                            detail: detail.unwrap_or("").to_owned(),
                        },
                    ),
                    None => self.events.push_back(ChartEvent::CriticalError {
                        reason: (*reason).to_owned(),
                        detail: detail.map(str::to_owned),
                    }),
                }
            }
            _ => {}
        }
    }

    /// Fires the load timeouts due at `now`.
    pub fn handle_timeout(&mut self, now: Instant) {
        let now_ms = self.ms(now);
        let mut due = Vec::new();
        due.extend(self.timers.advance(now_ms).map(|(_, t)| t));
        for t in due {
            let Some(s) = self.slots.get_mut(t.slot as usize).and_then(Option::as_mut) else {
                continue;
            };
            if s.wire != t.wire || !matches!(s.phase, Phase::Loading | Phase::Paging) {
                continue;
            }
            s.load_timer = None;
            let timeout = self.config.load_timeout;
            self.fail(t.slot as usize, SeriesFailure::LoadTimeout { timeout });
        }
    }

    /// The next instant [`ChartSession::handle_timeout`] has work, if any: the earliest load
    /// deadline, from the timer wheel (no scan of the series). A deadline too far to represent
    /// (a [`Duration::MAX`] timeout) is none.
    #[must_use]
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.timers
            .next_deadline()
            .and_then(|ms| self.epoch.checked_add(Duration::from_millis(ms)))
    }

    /// The next websocket text message to send, if any.
    #[must_use]
    pub fn poll_transmit(&mut self) -> Option<Vec<u8>> {
        self.transmit.pop_front()
    }

    /// The next event, if any.
    #[must_use]
    pub fn poll_event(&mut self) -> Option<ChartEvent> {
        self.events.pop_front()
    }

    /// Queues `chart_delete_session` (for a connection removing this chart).
    pub(crate) fn queue_delete(&mut self) {
        let session = self.id.clone();
        self.send(Request::ChartDeleteSession { session: &session });
    }

    fn send(&mut self, req: Request<'_>) {
        let mut out = Vec::with_capacity(96);
        req.encode(&mut out);
        self.transmit.push_back(out);
    }

    fn emit(&mut self, slot: usize, event: SeriesEvent) {
        if let Some(s) = self.slots[slot].as_ref() {
            self.events
                .push_back(ChartEvent::Series { key: s.key, event });
        }
    }

    /// The slot of a live (not failed) series by its wire id number.
    fn by_wire_number(&self, n: Option<u64>) -> Option<usize> {
        let slot = *self.by_wire.get(&n?)? as usize;
        match self.slots[slot].as_ref() {
            Some(s) if s.phase != Phase::Failed => Some(slot),
            _ => None,
        }
    }

    /// `sds_<n>`.
    fn by_series_id(&self, id: &str) -> Option<usize> {
        self.by_wire_number(id.strip_prefix("sds_").and_then(|n| n.parse().ok()))
    }

    /// `sds_sym_<n>`.
    fn by_symbol_id(&self, id: &str) -> Option<usize> {
        self.by_wire_number(id.strip_prefix("sds_sym_").and_then(|n| n.parse().ok()))
    }

    fn fail(&mut self, slot: usize, failure: SeriesFailure) {
        if let Some(s) = self.slots[slot].as_mut() {
            s.phase = Phase::Failed;
            s.history = HistoryBars::default();
            s.forming = None;
            if let Some(t) = s.load_timer.take() {
                self.timers.cancel(t);
            }
        }
        self.emit(slot, SeriesEvent::Failed(failure));
    }

    fn series_data(&mut self, data: &SeriesData<'_>) {
        let max_history = self.config.max_history_bars;
        for update in data.iter() {
            if update.is_study {
                continue;
            }
            let Some(i) = self.by_series_id(update.key) else {
                continue;
            };
            // Split borrows: the series is mutated while events are pushed.
            let Self { slots, events, .. } = self;
            let Some(s) = slots[i].as_mut() else {
                continue;
            };
            if update.turnaround.is_some_and(|t| t != TURNAROUND) {
                continue; // not ours: a turnaround we never sent
            }
            if let Some(t) = update.bar_close_time {
                s.bar_close_time = Some(t);
            }
            match s.phase {
                Phase::Loading | Phase::Paging => {
                    s.page_added += s.history.insert_page(update.bars);
                    // Bound memory: keep the newest bars only.
                    let cap = s.wanted().min(max_history).max(1);
                    s.history.keep_newest(cap);
                }
                Phase::Live => {
                    let key = s.key;
                    for b in update.bars {
                        live_bar(s, b.bar, |event| {
                            events.push_back(ChartEvent::Series { key, event });
                        });
                    }
                }
                Phase::Failed => {}
            }
        }
    }

    fn completed(&mut self, series: &str, update_mode: &str, turnaround: Option<&str>) {
        let Some(i) = self.by_series_id(series) else {
            return;
        };
        if turnaround.is_some_and(|t| t != TURNAROUND) {
            return;
        }
        let session = self.id.clone();
        let page_size = self.config.page_size;
        let Some(s) = self.slots[i].as_mut() else {
            return;
        };
        if !matches!(s.phase, Phase::Loading | Phase::Paging) {
            return;
        }
        let have = s.history.len();
        let more =
            matches!(s.range, SeriesRange::Count(_)) && have < s.wanted() && s.page_added > 0;
        if more {
            let count = (s.wanted() - have).min(page_size as usize) as u32;
            s.phase = Phase::Paging;
            s.page_added = 0;
            let series_id = format!("sds_{}", s.wire);
            self.emit(i, SeriesEvent::Progress { bars: have });
            self.send(Request::RequestMoreData {
                session: &session,
                series_id: &series_id,
                count,
            });
            return;
        }
        // History is complete.
        let mut bars: Vec<Bar> = std::mem::take(&mut s.history).into_vec();
        let forming = match bars.last() {
            Some(last) => {
                let is_forming = match (s.bar_close_time, s.range) {
                    (Some(close), _) => s.request.interval.next_bar_open(last.time) >= close,
                    (None, SeriesRange::Count(_)) => true,
                    (None, SeriesRange::Range { .. }) => false,
                };
                if is_forming { bars.pop() } else { None }
            }
            None => None,
        };
        if let SeriesRange::Count(n) = s.range {
            // With `forming_counted` the history was capped at `n` bars already (`wanted`).
            let excess = bars.len().saturating_sub(n as usize);
            bars.drain(..excess);
        }
        s.phase = Phase::Live;
        s.forming = forming;
        if let Some(t) = s.load_timer.take() {
            self.timers.cancel(t);
        }
        self.emit(
            i,
            SeriesEvent::History {
                bars,
                forming,
                update_mode: update_mode.to_owned(),
            },
        );
    }
}

/// Applies one live bar to the forming bar, emitting what it means.
fn live_bar(s: &mut SeriesState, bar: Bar, mut emit: impl FnMut(SeriesEvent)) {
    match s.forming {
        Some(f) if bar.time < f.time => emit(SeriesEvent::Late(bar)),
        Some(f) if bar.time == f.time => {
            if f != bar {
                s.forming = Some(bar);
                emit(SeriesEvent::Update(bar));
            }
        }
        Some(f) => {
            s.forming = Some(bar);
            emit(SeriesEvent::Closed(f));
            emit(SeriesEvent::Update(bar));
        }
        None => {
            s.forming = Some(bar);
            emit(SeriesEvent::Update(bar));
        }
    }
}

fn series_failure(reason: &str) -> SeriesFailure {
    let entitlement = matches!(
        reason,
        "seconds_not_entitled"
            | "ticks_not_entitled"
            | "custom_resolution"
            | "resolution_not_entitled"
    ) || reason.starts_with("unsupported resolution");
    if entitlement {
        SeriesFailure::IntervalNotEntitled {
            reason: reason.to_owned(),
        }
    } else if reason == "resolve error" {
        SeriesFailure::UnknownSymbol {
            reason: reason.to_owned(),
        }
    } else {
        SeriesFailure::Server {
            reason: reason.to_owned(),
        }
    }
}

/// The series key a `critical_error` detail names: `method: create_series. args: "[sds_1, …]"`
/// lists the arguments after the session id, the series first for series methods.
fn critical_error_series(detail: &str) -> Option<&str> {
    let rest = detail.strip_prefix("method: ")?;
    let (method, rest) = rest.split_once('.')?;
    if !matches!(
        method,
        "create_series" | "modify_series" | "remove_series" | "request_more_data"
    ) {
        return None;
    }
    let args = rest.split_once('[')?.1;
    let first = args.split([',', ']']).next()?.trim();
    (!first.is_empty()).then_some(first)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `HistoryBars` keeps what a `BTreeMap` by open time would (the last value per time wins,
    /// new times counted, the newest kept under a cap), for pages in order, older, newer,
    /// overlapping, unordered and with repeats.
    #[test]
    fn history_bars_behave_as_a_map_by_time() {
        use std::collections::BTreeMap;
        let bar = |t: i64, c: f64| IndexedBar {
            index: 0,
            bar: Bar {
                time: t,
                open: c,
                high: c,
                low: c,
                close: c,
                volume: None,
            },
        };
        let mut rng = 0x9e37_79b9_7f4a_7c15_u64;
        let mut next = move |n: u64| {
            rng ^= rng << 13;
            rng ^= rng >> 7;
            rng ^= rng << 17;
            rng % n
        };
        for round in 0..500 {
            let (mut ours, mut map) = (HistoryBars::default(), BTreeMap::new());
            for page_no in 0..6 {
                let start = next(200) as i64 - 100;
                let len = next(40) as usize;
                let mut page: Vec<IndexedBar> = (0..len)
                    .map(|i| bar(start + i as i64, (round * 100 + page_no) as f64))
                    .collect();
                match next(4) {
                    0 => page.reverse(),
                    1 if len > 1 => page.swap(0, len - 1),
                    2 if len > 0 => page.push(page[0]),
                    _ => {}
                }
                let added = ours.insert_page(&page);
                let before = map.len();
                for b in &page {
                    map.insert(b.bar.time, b.bar);
                }
                assert_eq!(added, map.len() - before, "new times counted");
                let cap = 1 + next(60) as usize;
                ours.keep_newest(cap);
                while map.len() > cap {
                    map.pop_first();
                }
                assert_eq!(ours.bars, map.values().copied().collect::<Vec<_>>());
            }
        }
    }

    #[test]
    fn critical_error_details_name_the_series() {
        assert_eq!(
            critical_error_series(
                r#"method: create_series. args: "[sds_1, s1, sds_sym_1, XX, 300, ]""#
            ),
            Some("sds_1")
        );
        assert_eq!(
            critical_error_series(r#"method: switch_timezone. args: "[Nowhere/Nowhere]""#),
            None
        );
        assert_eq!(critical_error_series("garbage"), None);
    }
}
