//! The chart-session state machine: resolve, create series, load and page history, follow live
//! updates, detect bar closes, echo heartbeats, surface every error as a typed event.
//!
//! Pure, in the `quinn-proto` style: no sockets, no threads, no clock. Time is a `u64` count of
//! milliseconds on any monotonic clock the caller picks, passed into every input.
#![forbid(unsafe_code)]

use std::collections::{BTreeMap, VecDeque};

use super::{
    frame::{self, Frame, FrameDecoder, FrameError},
    message::{MessageError, MessageParser, SeriesData, ServerMessage, SymbolInfo},
    request::{Request, SeriesRange, SymbolSpec},
};
use crate::{Bar, Interval, Symbol};

/// The token anonymous sessions send.
pub const ANONYMOUS_TOKEN: &str = "unauthorized_user_token";

/// An authentication token (a JWT or [`ANONYMOUS_TOKEN`]). Its `Debug` never shows it.
#[derive(Clone, PartialEq, Eq)]
pub struct AuthToken(String);

impl AuthToken {
    /// Wraps a token.
    pub fn new(token: impl Into<String>) -> Self {
        Self(token.into())
    }

    /// The anonymous token.
    pub fn anonymous() -> Self {
        Self(ANONYMOUS_TOKEN.to_owned())
    }

    /// Whether this is the anonymous token.
    pub fn is_anonymous(&self) -> bool {
        self.0 == ANONYMOUS_TOKEN
    }

    /// The token text, to be sent to the server and nowhere else.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for AuthToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.is_anonymous() {
            f.write_str("AuthToken(anonymous)")
        } else {
            f.write_str("AuthToken(<redacted>)")
        }
    }
}

/// Settings of a [`ChartSession`]. By-value setters; every default is documented.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct SessionConfig {
    /// Sent first as `set_auth_token` when `Some`. Default: the anonymous token. Set `None` when
    /// another session on the same connection already authenticated.
    pub auth_token: Option<AuthToken>,
    /// `set_locale`, default `("en", "US")`.
    pub locale: Option<(String, String)>,
    /// `switch_timezone`, default `None`. Bar times are UTC whatever the zone.
    pub timezone: Option<String>,
    /// Largest frame accepted, default [`frame::DEFAULT_MAX_FRAME_LEN`].
    pub max_frame_len: usize,
    /// How long a series may take from `add_series` to its history, in ms. Default 30,000.
    pub load_timeout_ms: u64,
    /// Silence after which [`SessionEvent::Idle`] fires, in ms, counted from the last message
    /// received (the timer is armed by the first one). Heartbeats count as traffic.
    /// Default 45,000 (the server beats every 10-20 s).
    pub idle_timeout_ms: u64,
    /// Most bars kept for one series while its history loads. Default 100,000.
    pub max_history_bars: usize,
    /// Bars asked per `request_more_data` page at most. Default 5,000.
    pub page_size: u32,
}

impl Default for SessionConfig {
    fn default() -> Self {
        Self {
            auth_token: Some(AuthToken::anonymous()),
            locale: Some(("en".into(), "US".into())),
            timezone: None,
            max_frame_len: frame::DEFAULT_MAX_FRAME_LEN,
            load_timeout_ms: 30_000,
            idle_timeout_ms: 45_000,
            max_history_bars: 100_000,
            page_size: 5_000,
        }
    }
}

impl SessionConfig {
    /// Sets the token sent with `set_auth_token` (`None`: send none).
    #[must_use]
    pub fn with_auth_token(mut self, token: Option<AuthToken>) -> Self {
        self.auth_token = token;
        self
    }

    /// Sets the `switch_timezone` zone.
    #[must_use]
    pub fn with_timezone(mut self, tz: Option<String>) -> Self {
        self.timezone = tz;
        self
    }

    /// Sets the largest frame accepted.
    #[must_use]
    pub fn with_max_frame_len(mut self, max: usize) -> Self {
        self.max_frame_len = max;
        self
    }

    /// Sets the history load timeout in milliseconds.
    #[must_use]
    pub fn with_load_timeout_ms(mut self, ms: u64) -> Self {
        self.load_timeout_ms = ms;
        self
    }

    /// Sets the idle timeout in milliseconds.
    #[must_use]
    pub fn with_idle_timeout_ms(mut self, ms: u64) -> Self {
        self.idle_timeout_ms = ms;
        self
    }

    /// Sets the bar cap per loading series.
    #[must_use]
    pub fn with_max_history_bars(mut self, n: usize) -> Self {
        self.max_history_bars = n.max(1);
        self
    }

    /// Sets the largest page asked with `request_more_data`.
    #[must_use]
    pub fn with_page_size(mut self, n: u32) -> Self {
        self.page_size = n.max(1);
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
    /// Which bars: `Count(n)` means `n` **closed** bars (the forming bar comes separately).
    pub range: SeriesRange,
}

impl SeriesRequest {
    /// The last `n` closed bars, then live updates.
    pub fn count(symbol: Symbol, interval: Interval, n: u32) -> Self {
        Self {
            spec: SymbolSpec::new(symbol),
            interval,
            range: SeriesRange::Count(n),
        }
    }

    /// Bars opening in `from..=to` (UTC seconds), at most `max_bars`.
    pub fn range(symbol: Symbol, interval: Interval, from: i64, to: i64, max_bars: u32) -> Self {
        Self {
            spec: SymbolSpec::new(symbol),
            interval,
            range: SeriesRange::Range { from, to, max_bars },
        }
    }

    /// Replaces the symbol spec (adjustment, session, currency…).
    #[must_use]
    pub fn with_spec(mut self, spec: SymbolSpec) -> Self {
        self.spec = spec;
        self
    }
}

/// Handle of a series within its [`ChartSession`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SeriesId(u32);

impl SeriesId {
    /// The series key on the wire (`sds_<n>`).
    pub fn wire_key(self) -> String {
        format!("sds_{}", self.0 + 1)
    }
}

/// Why a series failed. Final: the series receives nothing more.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SeriesFailure {
    /// `symbol_error "invalid symbol"` (or another symbol reason).
    #[error("unknown symbol: {reason}")]
    UnknownSymbol {
        /// The server's reason.
        reason: String,
    },
    /// `symbol_error "permission denied"`: the account may not see this symbol.
    #[error("permission denied ({kind}: {detail})")]
    PermissionDenied {
        /// `group` or `symbol`.
        kind: String,
        /// The group (`economics_paid`) or symbol.
        detail: String,
    },
    /// `series_error` about the resolution: `seconds_not_entitled`, `custom_resolution`,
    /// `resolution_not_entitled`, `unsupported resolution: …`, `ticks_not_entitled`.
    #[error("interval not entitled: {reason}")]
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
    /// History did not complete within [`SessionConfig::load_timeout_ms`].
    #[error("history did not complete within {timeout_ms} ms")]
    LoadTimeout {
        /// The timeout.
        timeout_ms: u64,
    },
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
    /// The series failed; nothing follows.
    Failed(SeriesFailure),
}

/// An output of [`ChartSession::poll_event`].
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum SessionEvent {
    /// The server's hello arrived.
    Connected {
        /// The server's opaque session id.
        server_session: String,
    },
    /// A heartbeat arrived; its echo is queued for [`ChartSession::poll_transmit`].
    Heartbeat(u64),
    /// Something happened to a series.
    Series {
        /// Which series.
        id: SeriesId,
        /// What.
        event: SeriesEvent,
    },
    /// A `critical_error` not attributable to one series (`invalid timezone`…).
    CriticalError {
        /// The server's reason.
        reason: String,
        /// The server's detail.
        detail: Option<String>,
    },
    /// A `protocol_error`: the server is about to close the connection (`bad auth token`).
    ProtocolError {
        /// The server's text.
        text: String,
    },
    /// Nothing arrived for [`SessionConfig::idle_timeout_ms`]; the connection is probably
    /// dead. Fires once per silence.
    Idle {
        /// Milliseconds since the last message.
        silent_ms: u64,
    },
}

/// A message [`ChartSession::handle_message`] could not take. Not fatal: the frames before the
/// bad one were handled, and the session goes on.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SessionError {
    /// Bad framing; the rest of the websocket message was dropped.
    #[error(transparent)]
    Frame(#[from] FrameError),
    /// A frame whose JSON is bad or of the wrong shape; other frames were handled.
    #[error(transparent)]
    Message(#[from] MessageError),
    /// A [`SeriesId`] this session does not hold.
    #[error("unknown series")]
    UnknownSeries,
    /// More than `u32::MAX` series were added.
    #[error("too many series")]
    TooManySeries,
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

#[derive(Debug)]
struct SeriesState {
    request: SeriesRequest,
    key: String,
    symbol_id: String,
    turnaround: String,
    phase: Phase,
    history: BTreeMap<i64, Bar>,
    page_added: usize,
    bar_close_time: Option<i64>,
    forming: Option<Bar>,
    deadline: Option<u64>,
}

impl SeriesState {
    /// Closed bars wanted plus the forming bar.
    fn wanted(&self) -> usize {
        match self.request.range {
            SeriesRange::Count(n) => n as usize + 1,
            SeriesRange::Range { max_bars, .. } => max_bars as usize,
        }
    }
}

/// Everything but the codec, so that a parsed message (which borrows the parser) can be
/// dispatched while the state is mutated.
#[derive(Debug)]
struct Core {
    id: String,
    config: SessionConfig,
    series: Vec<Option<SeriesState>>,
    transmit: VecDeque<Vec<u8>>,
    events: VecDeque<SessionEvent>,
    last_rx: Option<u64>,
    idle_reported: bool,
}

/// A TradingView chart session over one connection: bytes in, events and bytes out.
///
/// # Driving it
///
/// 1. Create it with [`ChartSession::new`] or [`ChartSession::with_config`]; add series with
///    [`ChartSession::add_series`] at any time.
/// 2. Send every message [`ChartSession::poll_transmit`] produces, each as one websocket text
///    message, until it returns `false`.
/// 3. Feed every websocket text message received to [`ChartSession::handle_message`].
/// 4. Drain [`ChartSession::poll_event`].
/// 5. Call [`ChartSession::handle_timeout`] when [`ChartSession::poll_timeout`] is reached.
///
/// Repeat 2-5 after every input. Times must not go backwards.
///
/// # Bars
///
/// Bars are keyed by open time (UTC seconds), deduplicated and ascending. A `du` replaces the
/// forming bar; a bar with a later time, from a `du` or a `timescale_update`, closes the
/// forming bar with the last values seen ([`SeriesEvent::Closed`]).
#[derive(Debug)]
pub struct ChartSession {
    decoder: FrameDecoder,
    parser: MessageParser,
    core: Core,
}

impl ChartSession {
    /// A session with the default [`SessionConfig`] (anonymous).
    pub fn new(id: impl Into<String>) -> Self {
        Self::with_config(id, SessionConfig::default())
    }

    /// A session with `config`. Queues `set_auth_token`, `set_locale`, `chart_create_session`
    /// and `switch_timezone` as configured.
    pub fn with_config(id: impl Into<String>, config: SessionConfig) -> Self {
        let mut core = Core {
            id: id.into(),
            config,
            series: Vec::new(),
            transmit: VecDeque::new(),
            events: VecDeque::new(),
            last_rx: None,
            idle_reported: false,
        };
        let c = core.config.clone();
        if let Some(token) = &c.auth_token {
            core.send(Request::SetAuthToken {
                token: token.expose(),
            });
        }
        if let Some((language, country)) = &c.locale {
            core.send(Request::SetLocale { language, country });
        }
        let session = core.id.clone();
        core.send(Request::ChartCreateSession { session: &session });
        if let Some(timezone) = &c.timezone {
            core.send(Request::SwitchTimezone {
                session: &session,
                timezone,
            });
        }
        Self {
            decoder: FrameDecoder::new().with_max_frame_len(c.max_frame_len),
            parser: MessageParser::new(),
            core,
        }
    }

    /// The chart session id.
    pub fn id(&self) -> &str {
        &self.core.id
    }

    /// Opens a series: queues `resolve_symbol` and `create_series`, and arms its load timeout
    /// from `now`.
    ///
    /// # Errors
    ///
    /// [`SessionError::TooManySeries`] after `u32::MAX` series.
    pub fn add_series(
        &mut self,
        now: u64,
        request: SeriesRequest,
    ) -> Result<SeriesId, SessionError> {
        let n = u32::try_from(self.core.series.len()).map_err(|_| SessionError::TooManySeries)?;
        let id = SeriesId(n);
        let state = SeriesState {
            key: id.wire_key(),
            symbol_id: format!("sds_sym_{}", n + 1),
            turnaround: "s1".to_owned(),
            phase: Phase::Loading,
            history: BTreeMap::new(),
            page_added: 0,
            bar_close_time: None,
            forming: None,
            deadline: Some(now.saturating_add(self.core.config.load_timeout_ms)),
            request,
        };
        let session = self.core.id.clone();
        let first_page = state.wanted().min(self.core.config.page_size as usize) as u32;
        let range = match state.request.range {
            SeriesRange::Count(_) => SeriesRange::Count(first_page.max(1)),
            r => r,
        };
        self.core.send(Request::ResolveSymbol {
            session: &session,
            symbol_id: &state.symbol_id,
            spec: &state.request.spec,
        });
        self.core.send(Request::CreateSeries {
            session: &session,
            series_id: &state.key,
            turnaround: &state.turnaround,
            symbol_id: &state.symbol_id,
            interval: state.request.interval,
            range,
        });
        self.core.series.push(Some(state));
        Ok(id)
    }

    /// Closes a series: queues `remove_series`; no event of it follows.
    ///
    /// # Errors
    ///
    /// [`SessionError::UnknownSeries`] when `id` is not open here.
    pub fn remove_series(&mut self, id: SeriesId) -> Result<(), SessionError> {
        let slot = self
            .core
            .series
            .get_mut(id.0 as usize)
            .ok_or(SessionError::UnknownSeries)?;
        let state = slot.take().ok_or(SessionError::UnknownSeries)?;
        let session = self.core.id.clone();
        self.core.send(Request::RemoveSeries {
            session: &session,
            series_id: &state.key,
        });
        self.core
            .events
            .retain(|e| !matches!(e, SessionEvent::Series { id: i, .. } if *i == id));
        Ok(())
    }

    /// Feeds one websocket text message (one or more frames) received at `now`.
    ///
    /// # Errors
    ///
    /// The first [`SessionError`] met. Frames before a framing error, and every well-formed
    /// frame around a malformed JSON payload, are still handled.
    pub fn handle_message(&mut self, now: u64, msg: &mut [u8]) -> Result<(), SessionError> {
        self.core.last_rx = Some(now);
        self.core.idle_reported = false;
        let mut first_err = None;
        for frame in self.decoder.frames(msg) {
            match frame {
                Err(e) => {
                    first_err.get_or_insert(SessionError::Frame(e));
                    break;
                }
                Ok(Frame::Heartbeat(n)) => {
                    let mut echo = Vec::with_capacity(16);
                    frame::encode_heartbeat(n, &mut echo);
                    self.core.transmit.push_back(echo);
                    self.core.events.push_back(SessionEvent::Heartbeat(n));
                }
                Ok(Frame::Json(payload)) => match self.parser.parse(payload) {
                    Ok(m) => self.core.dispatch(m),
                    Err(e) => {
                        first_err.get_or_insert(SessionError::Message(e));
                    }
                },
            }
        }
        first_err.map_or(Ok(()), Err)
    }

    /// Fires the timers due at `now`: load timeouts and the idle timeout.
    pub fn handle_timeout(&mut self, now: u64) {
        let core = &mut self.core;
        for (i, slot) in core.series.iter_mut().enumerate() {
            let Some(s) = slot else { continue };
            if s.deadline.is_some_and(|d| d <= now)
                && matches!(s.phase, Phase::Loading | Phase::Paging)
            {
                s.phase = Phase::Failed;
                s.deadline = None;
                s.history = BTreeMap::new();
                core.events.push_back(SessionEvent::Series {
                    id: SeriesId(i as u32),
                    event: SeriesEvent::Failed(SeriesFailure::LoadTimeout {
                        timeout_ms: core.config.load_timeout_ms,
                    }),
                });
            }
        }
        if let Some(last) = core.last_rx {
            let silent = now.saturating_sub(last);
            if !core.idle_reported && silent >= core.config.idle_timeout_ms {
                core.idle_reported = true;
                core.events
                    .push_back(SessionEvent::Idle { silent_ms: silent });
            }
        }
    }

    /// The next instant [`ChartSession::handle_timeout`] has work, if any.
    #[must_use]
    pub fn poll_timeout(&self) -> Option<u64> {
        let core = &self.core;
        let loads = core
            .series
            .iter()
            .flatten()
            .filter(|s| matches!(s.phase, Phase::Loading | Phase::Paging))
            .filter_map(|s| s.deadline);
        let idle = core
            .last_rx
            .filter(|_| !core.idle_reported)
            .map(|t| t.saturating_add(core.config.idle_timeout_ms));
        loads.chain(idle).min()
    }

    /// Appends the next websocket text message to send to `out`; `false` when none is queued.
    #[must_use]
    pub fn poll_transmit(&mut self, out: &mut Vec<u8>) -> bool {
        match self.core.transmit.pop_front() {
            Some(m) => {
                out.extend_from_slice(&m);
                true
            }
            None => false,
        }
    }

    /// The next event, if any.
    #[must_use]
    pub fn poll_event(&mut self) -> Option<SessionEvent> {
        self.core.events.pop_front()
    }
}

impl Core {
    fn send(&mut self, req: Request<'_>) {
        let mut out = Vec::with_capacity(96);
        req.encode(&mut out);
        self.transmit.push_back(out);
    }

    fn emit(&mut self, id: usize, event: SeriesEvent) {
        self.events.push_back(SessionEvent::Series {
            id: SeriesId(id as u32),
            event,
        });
    }

    /// The slot of a series by its wire key (`sds_<n>`), if open and not failed.
    fn by_key(&self, key: &str) -> Option<usize> {
        let n: usize = key.strip_prefix("sds_")?.parse().ok()?;
        let i = n.checked_sub(1)?;
        match self.series.get(i)? {
            Some(s) if s.key == key && s.phase != Phase::Failed => Some(i),
            _ => None,
        }
    }

    fn by_symbol_id(&self, symbol_id: &str) -> Option<usize> {
        let n: usize = symbol_id.strip_prefix("sds_sym_")?.parse().ok()?;
        let i = n.checked_sub(1)?;
        match self.series.get(i)? {
            Some(s) if s.symbol_id == symbol_id && s.phase != Phase::Failed => Some(i),
            _ => None,
        }
    }

    fn fail(&mut self, i: usize, failure: SeriesFailure) {
        if let Some(s) = self.series[i].as_mut() {
            s.phase = Phase::Failed;
            s.deadline = None;
            s.history = BTreeMap::new();
            s.forming = None;
        }
        self.emit(i, SeriesEvent::Failed(failure));
    }

    fn dispatch(&mut self, msg: ServerMessage<'_>) {
        match msg {
            ServerMessage::Hello(h) => self.events.push_back(SessionEvent::Connected {
                server_session: h.session_id.to_owned(),
            }),
            ServerMessage::ProtocolError { text } => {
                self.events.push_back(SessionEvent::ProtocolError {
                    text: text.to_owned(),
                })
            }
            ServerMessage::SymbolResolved {
                session,
                symbol_id,
                info,
            } if session == self.id => {
                if let Some(i) = self.by_symbol_id(symbol_id) {
                    self.emit(i, SeriesEvent::Resolved(info));
                }
            }
            ServerMessage::TimescaleUpdate { session, data }
            | ServerMessage::DataUpdate { session, data }
                if session == self.id =>
            {
                self.series_data(data);
            }
            ServerMessage::SeriesCompleted {
                session,
                series,
                update_mode,
                turnaround,
            } if session == self.id => self.completed(series, update_mode, turnaround),
            ServerMessage::SymbolError {
                session,
                symbol_id,
                reason,
                kind,
                detail,
            } if session == self.id => {
                if let Some(i) = self.by_symbol_id(symbol_id) {
                    let failure = if reason == "permission denied" {
                        SeriesFailure::PermissionDenied {
                            kind: kind.unwrap_or("").to_owned(),
                            detail: detail.unwrap_or("").to_owned(),
                        }
                    } else {
                        SeriesFailure::UnknownSymbol {
                            reason: reason.to_owned(),
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
            } if session == self.id => {
                // A `resolve error` after a `symbol_error` finds the series already failed.
                if let Some(i) = self.by_key(series) {
                    self.fail(i, series_failure(reason));
                }
            }
            ServerMessage::CriticalError {
                session,
                reason,
                detail,
            } if session == self.id || session.is_empty() => {
                match detail
                    .and_then(critical_error_series)
                    .and_then(|k| self.by_key(k))
                {
                    Some(i) => self.fail(
                        i,
                        SeriesFailure::InvalidParameters {
                            reason: reason.to_owned(),
                            detail: detail.unwrap_or("").to_owned(),
                        },
                    ),
                    None => self.events.push_back(SessionEvent::CriticalError {
                        reason: reason.to_owned(),
                        detail: detail.map(str::to_owned),
                    }),
                }
            }
            // Other sessions' traffic, quotes, studies: not this state machine's business.
            _ => {}
        }
    }

    fn series_data(&mut self, data: SeriesData<'_>) {
        let max_history = self.config.max_history_bars;
        for update in data.iter() {
            if update.is_study {
                continue;
            }
            let Some(i) = self.by_key(update.key) else {
                continue;
            };
            // Split borrows: the series is mutated while events are pushed.
            let Core { series, events, .. } = self;
            let Some(s) = series[i].as_mut() else {
                continue;
            };
            if update.turnaround.is_some_and(|t| t != s.turnaround) {
                continue; // stale: from before a modify_series
            }
            if let Some(t) = update.bar_close_time {
                s.bar_close_time = Some(t);
            }
            match s.phase {
                Phase::Loading | Phase::Paging => {
                    for b in update.bars {
                        if s.history.insert(b.bar.time, b.bar).is_none() {
                            s.page_added += 1;
                        }
                    }
                    // Bound memory: keep the newest bars only.
                    let cap = s.wanted().min(max_history).max(1);
                    while s.history.len() > cap {
                        s.history.pop_first();
                    }
                }
                Phase::Live => {
                    let id = SeriesId(i as u32);
                    for b in update.bars {
                        live_bar(s, b.bar, |event| {
                            events.push_back(SessionEvent::Series { id, event })
                        });
                    }
                }
                Phase::Failed => {}
            }
        }
    }

    fn completed(&mut self, key: &str, update_mode: &str, turnaround: Option<&str>) {
        let Some(i) = self.by_key(key) else { return };
        let session = self.id.clone();
        let page_size = self.config.page_size;
        let Some(s) = self.series[i].as_mut() else {
            return;
        };
        if turnaround.is_some_and(|t| t != s.turnaround) {
            return;
        }
        match s.phase {
            Phase::Loading | Phase::Paging => {}
            Phase::Live | Phase::Failed => return,
        }
        let have = s.history.len();
        let more = matches!(s.request.range, SeriesRange::Count(_))
            && have < s.wanted()
            && s.page_added > 0;
        if more {
            let count = (s.wanted() - have).min(page_size as usize) as u32;
            s.phase = Phase::Paging;
            s.page_added = 0;
            let key = s.key.clone();
            self.emit(i, SeriesEvent::Progress { bars: have });
            self.send(Request::RequestMoreData {
                session: &session,
                series_id: &key,
                count,
            });
            return;
        }
        // History is complete.
        let history = std::mem::take(&mut s.history);
        let mut bars: Vec<Bar> = history.into_values().collect();
        let forming = match bars.last() {
            Some(last) => {
                let is_forming = match (s.bar_close_time, s.request.range) {
                    (Some(close), _) => s.request.interval.next_bar_open(last.time) >= close,
                    (None, SeriesRange::Count(_)) => true,
                    (None, SeriesRange::Range { .. }) => false,
                };
                if is_forming { bars.pop() } else { None }
            }
            None => None,
        };
        if let SeriesRange::Count(n) = s.request.range {
            let excess = bars.len().saturating_sub(n as usize);
            bars.drain(..excess);
        }
        s.phase = Phase::Live;
        s.deadline = None;
        s.forming = forming;
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
        Some(f) if bar.time < f.time => {} // a late value of an already closed bar
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

    #[test]
    fn auth_token_debug_is_redacted() {
        let t = AuthToken::new("eyJhbGciOiJSUzUxMiJ9.secret.sig");
        assert_eq!(format!("{t:?}"), "AuthToken(<redacted>)");
        let c = SessionConfig::default().with_auth_token(Some(t));
        assert!(!format!("{c:?}").contains("secret"));
    }
}
