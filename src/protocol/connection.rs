//! One websocket's protocol state: frames in, parse once, heartbeats echoed, auth and locale
//! sent once, the hello and `protocol_error` handled, an idle deadline, and every parsed message
//! routed by session id to the chart sessions it owns.
//!
//! Pure, in the `quinn-proto` style (its `Connection` and its streams): no sockets, threads or
//! clock; time is a parameter and every output is polled. The historical client drives one of
//! these per call; the live engine drives one per websocket and replays it onto the next after
//! a reconnect ([`Connection::reset`] and [`ChartSession::resubscribe`]).
#![forbid(unsafe_code)]

use std::{
    collections::VecDeque,
    time::{Duration, Instant},
};

use super::{
    ChartConfig, ChartEvent, ChartSession, SessionIds,
    frame::{self, Frame, FrameDecoder, FrameError},
    message::{MessageError, MessageParser, ServerMessage},
    request::Request,
};
use crate::AuthToken;

/// Settings of a [`Connection`]. By-value setters; every default is documented.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct ConnectionConfig {
    /// Sent first as `set_auth_token`. Default: the anonymous token. Never shown by `Debug`.
    pub auth_token: AuthToken,
    /// `set_locale`, default `("en", "US")`; `None` sends none.
    pub locale: Option<(String, String)>,
    /// Largest frame accepted, default [`frame::DEFAULT_MAX_FRAME_LEN`].
    pub max_frame_len: usize,
    /// Silence after which [`Event::Idle`] fires, counted from the connection's start or the
    /// last message received, whichever is later. Heartbeats count as traffic. Default 45 s:
    /// TradingView beats every 10-20 s (protocol.md §1.4), so two missed beats and some slack.
    pub idle_timeout: Duration,
    /// Seed of the chart-session id generator ([`SessionIds`]). Default 0; give each
    /// connection a different one (the clients seed it from the clock).
    pub id_seed: u64,
}

impl Default for ConnectionConfig {
    fn default() -> Self {
        Self {
            auth_token: AuthToken::anonymous(),
            locale: Some(("en".into(), "US".into())),
            max_frame_len: frame::DEFAULT_MAX_FRAME_LEN,
            idle_timeout: Duration::from_secs(45),
            id_seed: 0,
        }
    }
}

impl ConnectionConfig {
    /// Sets [`ConnectionConfig::auth_token`].
    #[must_use]
    pub fn with_auth_token(mut self, token: AuthToken) -> Self {
        self.auth_token = token;
        self
    }

    /// Sets [`ConnectionConfig::locale`].
    #[must_use]
    pub fn with_locale(mut self, locale: Option<(String, String)>) -> Self {
        self.locale = locale;
        self
    }

    /// Sets [`ConnectionConfig::max_frame_len`].
    #[must_use]
    pub fn with_max_frame_len(mut self, max: usize) -> Self {
        self.max_frame_len = max;
        self
    }

    /// Sets [`ConnectionConfig::idle_timeout`].
    #[must_use]
    pub fn with_idle_timeout(mut self, timeout: Duration) -> Self {
        self.idle_timeout = timeout;
        self
    }

    /// Sets [`ConnectionConfig::id_seed`].
    #[must_use]
    pub fn with_id_seed(mut self, seed: u64) -> Self {
        self.id_seed = seed;
        self
    }
}

/// Names a chart session within its [`Connection`]. A removed chart's id is never valid again,
/// even when its slot is reused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ChartId {
    slot: u32,
    generation: u32,
}

/// An output of [`Connection::poll_event`].
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum Event {
    /// The server's hello arrived.
    Connected {
        /// The server's opaque session id.
        server_session: String,
    },
    /// A heartbeat arrived; its echo is queued for [`Connection::poll_transmit`].
    Heartbeat(u64),
    /// Something happened in a chart session.
    Chart {
        /// Which chart session.
        chart: ChartId,
        /// What.
        event: ChartEvent,
    },
    /// A `critical_error` that names no chart session of this connection.
    #[non_exhaustive]
    CriticalError {
        /// The session it names (empty when none): another kind of session, or a chart
        /// session already removed.
        session: String,
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
    /// Nothing arrived for [`ConnectionConfig::idle_timeout`]: the connection is probably dead.
    /// Fires once per silence.
    Idle {
        /// How long nothing arrived.
        silent: Duration,
    },
}

/// A websocket message [`Connection::handle_message`] could not fully take. Not fatal: the
/// frames before a framing error and every well-formed frame around a malformed payload were
/// handled, and the connection goes on. A server that keeps sending them is misbehaving.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ConnectionError {
    /// Bad framing; the rest of the websocket message was dropped.
    #[error(transparent)]
    Frame(#[from] FrameError),
    /// A frame whose JSON is bad or of the wrong shape; other frames were handled.
    #[error(transparent)]
    Message(#[from] MessageError),
}

impl ConnectionError {
    /// Whether the byte stream itself can no longer be trusted (a framing error, which may
    /// hide an absurd length), so the connection should be dropped and re-established; a
    /// malformed JSON payload in a well-framed message is not.
    pub fn is_fatal(&self) -> bool {
        matches!(self, Self::Frame(_))
    }
}

#[derive(Debug)]
struct ChartSlot {
    generation: u32,
    chart: Option<ChartSession>,
}

/// One websocket's TradingView protocol state.
///
/// # Driving it
///
/// 1. Create it with [`Connection::new`] (queues `set_auth_token` and `set_locale`); open
///    chart sessions with [`Connection::add_chart`] and use them through
///    [`Connection::chart_mut`].
/// 2. Send every message [`Connection::poll_transmit`] returns, each as one websocket text
///    message, in order.
/// 3. Feed every websocket text message received to [`Connection::handle_message`].
/// 4. Drain [`Connection::poll_event`].
/// 5. Call [`Connection::handle_timeout`] when [`Connection::poll_timeout`] is reached.
///
/// Repeat 2-5 after every input. Times must not go backwards.
///
/// # Examples
///
/// ```
/// use std::time::Instant;
/// use tvdatafeed::protocol::{
///     ChartConfig, ChartEvent, Connection, ConnectionConfig, Event, SeriesEvent, SeriesKey,
///     SeriesRequest,
/// };
///
/// let t0 = Instant::now();
/// let mut conn = Connection::new(t0, ConnectionConfig::default());
/// let chart = conn.add_chart_named(t0, "cs_kjvmuwkghjuz", ChartConfig::default());
/// let req = SeriesRequest::count("BINANCE:BTCUSDT".parse()?, "1".parse()?, 1);
/// conn.chart_mut(chart).expect("open").add_series(t0, SeriesKey(7), req)?;
/// while let Some(msg) = conn.poll_transmit() {
///     // Send `msg` as one websocket text message: set_auth_token, set_locale,
///     // chart_create_session, resolve_symbol, create_series.
///     assert!(msg.starts_with(b"~m~"));
/// }
/// // The server's answer: the history (one closed bar and the forming one), then a `du`.
/// let load = r#"{"m":"timescale_update","p":["cs_kjvmuwkghjuz",{"sds_1":{"s":[{"i":0,"v":[1751832960.0,1.0,2.0,0.5,1.5,3.0]},{"i":1,"v":[1751833020.0,1.5,1.5,1.5,1.5,0.1]}],"t":"s1","lbs":{"bar_close_time":1751833080}}},{}]}"#;
/// let done = r#"{"m":"series_completed","p":["cs_kjvmuwkghjuz","sds_1","streaming","s1",{}]}"#;
/// let du = r#"{"m":"du","p":["cs_kjvmuwkghjuz",{"sds_1":{"s":[{"i":1,"v":[1751833020.0,1.5,1.7,1.5,1.6,0.2]}],"t":"s1"}}]}"#;
/// let mut msg = Vec::new();
/// for payload in [load, done, du] {
///     tvdatafeed::protocol::frame::encode_frame(payload.as_bytes(), &mut msg);
/// }
/// conn.handle_message(t0, &mut msg)?;
/// let mut updates = Vec::new();
/// while let Some(event) = conn.poll_event() {
///     if let Event::Chart { event: ChartEvent::Series { key: SeriesKey(7), event }, .. } = event {
///         match event {
///             SeriesEvent::History { bars, forming, .. } => {
///                 assert_eq!(bars.len(), 1);
///                 assert_eq!(forming.map(|b| b.time), Some(1751833020));
///             }
///             SeriesEvent::Update(bar) => updates.push(bar.close),
///             _ => {}
///         }
///     }
/// }
/// assert_eq!(updates, [1.6]);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug)]
pub struct Connection {
    config: ConnectionConfig,
    decoder: FrameDecoder,
    parser: MessageParser,
    ids: SessionIds,
    charts: Vec<ChartSlot>,
    /// Free chart slots (LIFO).
    free: Vec<u32>,
    transmit: VecDeque<Vec<u8>>,
    events: VecDeque<Event>,
    /// The later of the connection's start and the last message received.
    last_rx: Instant,
    idle_reported: bool,
}

impl Connection {
    /// A connection starting at `now`: queues `set_auth_token` and, when configured,
    /// `set_locale`, and arms the idle deadline.
    pub fn new(now: Instant, config: ConnectionConfig) -> Self {
        let mut c = Self {
            decoder: FrameDecoder::new().with_max_frame_len(config.max_frame_len),
            parser: MessageParser::new(),
            ids: SessionIds::new(config.id_seed),
            config,
            charts: Vec::new(),
            free: Vec::new(),
            transmit: VecDeque::new(),
            events: VecDeque::new(),
            last_rx: now,
            idle_reported: false,
        };
        c.queue_hello();
        c
    }

    /// The configuration.
    pub fn config(&self) -> &ConnectionConfig {
        &self.config
    }

    fn queue_hello(&mut self) {
        let mut out = Vec::with_capacity(96);
        Request::SetAuthToken {
            token: self.config.auth_token.expose(),
        }
        .encode(&mut out);
        self.transmit.push_back(out);
        if let Some((language, country)) = &self.config.locale {
            let mut out = Vec::with_capacity(64);
            Request::SetLocale { language, country }.encode(&mut out);
            self.transmit.push_back(out);
        }
    }

    /// Starts over on a fresh websocket at `now` (after a reconnect): drops every message
    /// queued for the old one, queues `set_auth_token` and `set_locale` again, and re-arms the
    /// idle deadline. Chart sessions are kept, with nothing queued; replay each one with
    /// [`ChartSession::resubscribe`] (or remove it).
    pub fn reset(&mut self, now: Instant) {
        self.transmit.clear();
        self.events.clear();
        self.last_rx = now;
        self.idle_reported = false;
        self.queue_hello();
        for slot in &mut self.charts {
            if let Some(chart) = slot.chart.as_mut() {
                while chart.poll_transmit().is_some() {}
                while chart.poll_event().is_some() {}
            }
        }
    }

    /// Opens a chart session with a generated id (`cs_` and 12 letters); queues
    /// `chart_create_session`.
    pub fn add_chart(&mut self, now: Instant, config: ChartConfig) -> ChartId {
        let id = self.ids.chart();
        self.add_chart_named(now, id, config)
    }

    /// Opens a chart session named `name` (tests use fixed names); queues
    /// `chart_create_session`.
    pub fn add_chart_named(
        &mut self,
        now: Instant,
        name: impl Into<String>,
        config: ChartConfig,
    ) -> ChartId {
        let chart = ChartSession::new(now, name, config);
        match self.free.pop() {
            Some(slot) => {
                let s = &mut self.charts[slot as usize];
                s.chart = Some(chart);
                ChartId {
                    slot,
                    generation: s.generation,
                }
            }
            None => {
                let slot = u32::try_from(self.charts.len()).unwrap_or(u32::MAX);
                self.charts.push(ChartSlot {
                    generation: 0,
                    chart: Some(chart),
                });
                ChartId {
                    slot,
                    generation: 0,
                }
            }
        }
    }

    /// Closes a chart session: queues `chart_delete_session` (the server drops its series);
    /// nothing of it follows. Returns whether it was open.
    pub fn remove_chart(&mut self, id: ChartId) -> bool {
        let Some(slot) = self.slot_mut(id) else {
            return false;
        };
        let Some(mut chart) = slot.chart.take() else {
            return false;
        };
        slot.generation = slot.generation.wrapping_add(1);
        // What it queued still goes out (its requests precede the delete), then the delete.
        while let Some(m) = chart.poll_transmit() {
            self.transmit.push_back(m);
        }
        chart.queue_delete();
        while let Some(m) = chart.poll_transmit() {
            self.transmit.push_back(m);
        }
        self.events
            .retain(|e| !matches!(e, Event::Chart { chart: c, .. } if *c == id));
        self.free.push(id.slot);
        true
    }

    /// Drops the queued events of series removed (through [`Connection::chart_mut`]) since the
    /// last input or poll, so that nothing of a removed series comes out. Called first by every
    /// entry point that queues or pops events; costs one emptiness check per chart otherwise.
    fn purge_removed(&mut self) {
        for (i, slot) in self.charts.iter_mut().enumerate() {
            let Some(removed) = slot.chart.as_mut().and_then(ChartSession::take_removed) else {
                continue;
            };
            let id = ChartId {
                slot: i as u32,
                generation: slot.generation,
            };
            self.events.retain(|e| {
                !matches!(
                    e,
                    Event::Chart { chart, event: ChartEvent::Series { key, .. } }
                        if *chart == id && removed.contains(key)
                )
            });
        }
    }

    fn slot_mut(&mut self, id: ChartId) -> Option<&mut ChartSlot> {
        self.charts
            .get_mut(id.slot as usize)
            .filter(|s| s.generation == id.generation && s.chart.is_some())
    }

    /// A chart session, if open.
    pub fn chart(&self, id: ChartId) -> Option<&ChartSession> {
        self.charts
            .get(id.slot as usize)
            .filter(|s| s.generation == id.generation)
            .and_then(|s| s.chart.as_ref())
    }

    /// A chart session, to add and remove series or resubscribe; what it queues goes out
    /// through [`Connection::poll_transmit`].
    pub fn chart_mut(&mut self, id: ChartId) -> Option<&mut ChartSession> {
        self.slot_mut(id).and_then(|s| s.chart.as_mut())
    }

    /// The open chart sessions.
    pub fn charts(&self) -> impl Iterator<Item = (ChartId, &ChartSession)> + '_ {
        self.charts.iter().enumerate().filter_map(|(i, s)| {
            s.chart.as_ref().map(|c| {
                (
                    ChartId {
                        slot: i as u32,
                        generation: s.generation,
                    },
                    c,
                )
            })
        })
    }

    /// Feeds one websocket text message (one or more frames) received at `now`. Heartbeats are
    /// echoed; every other frame is parsed once and handled here or by the chart session it
    /// names.
    ///
    /// # Errors
    ///
    /// The first [`ConnectionError`] met. Frames before a framing error, and every well-formed
    /// frame around a malformed JSON payload, are still handled.
    pub fn handle_message(&mut self, now: Instant, msg: &mut [u8]) -> Result<(), ConnectionError> {
        self.purge_removed();
        self.last_rx = self.last_rx.max(now);
        self.idle_reported = false;
        let mut first_err = None;
        let Self {
            decoder,
            parser,
            charts,
            transmit,
            events,
            ..
        } = self;
        for frame in decoder.frames(msg) {
            match frame {
                Err(e) => {
                    first_err.get_or_insert(ConnectionError::Frame(e));
                    break;
                }
                Ok(Frame::Heartbeat(n)) => {
                    let mut echo = Vec::with_capacity(24);
                    frame::encode_heartbeat(n, &mut echo);
                    transmit.push_back(echo);
                    events.push_back(Event::Heartbeat(n));
                }
                Ok(Frame::Json(payload)) => match parser.parse(payload) {
                    Ok(m) => route(now, &m, charts, events),
                    Err(e) => {
                        first_err.get_or_insert(ConnectionError::Message(e));
                    }
                },
            }
        }
        first_err.map_or(Ok(()), Err)
    }

    /// Counts the connection's silence from `now` (a connection kept idle between calls, whose
    /// messages nobody read meanwhile, starts its idle deadline afresh when it is used again).
    pub fn restart_idle(&mut self, now: Instant) {
        self.last_rx = now;
        self.idle_reported = false;
    }

    /// Fires the deadlines due at `now`: the idle deadline and the charts' load timeouts.
    pub fn handle_timeout(&mut self, now: Instant) {
        self.purge_removed();
        let silent = now.saturating_duration_since(self.last_rx);
        if !self.idle_reported && silent >= self.config.idle_timeout {
            self.idle_reported = true;
            self.events.push_back(Event::Idle { silent });
        }
        for (i, slot) in self.charts.iter_mut().enumerate() {
            let Some(chart) = slot.chart.as_mut() else {
                continue;
            };
            if chart.poll_timeout().is_some_and(|d| d <= now) {
                chart.handle_timeout(now);
                let id = ChartId {
                    slot: i as u32,
                    generation: slot.generation,
                };
                while let Some(event) = chart.poll_event() {
                    self.events.push_back(Event::Chart { chart: id, event });
                }
            }
        }
    }

    /// The next instant [`Connection::handle_timeout`] has work, if any: the idle deadline or a
    /// chart's earliest load deadline (each chart keeps its deadlines in a timer wheel).
    #[must_use]
    pub fn poll_timeout(&self) -> Option<Instant> {
        let idle = (!self.idle_reported)
            .then(|| self.last_rx.checked_add(self.config.idle_timeout))
            .flatten();
        self.charts
            .iter()
            .filter_map(|s| s.chart.as_ref()?.poll_timeout())
            .chain(idle)
            .min()
    }

    /// The next websocket text message to send, if any: the connection's own first (auth,
    /// locale, heartbeat echoes), then each chart session's in the order they were opened.
    #[must_use]
    pub fn poll_transmit(&mut self) -> Option<Vec<u8>> {
        if let Some(m) = self.transmit.pop_front() {
            return Some(m);
        }
        self.charts
            .iter_mut()
            .find_map(|s| s.chart.as_mut()?.poll_transmit())
    }

    /// The next event, if any, in the order the messages that caused them arrived.
    #[must_use]
    pub fn poll_event(&mut self) -> Option<Event> {
        self.purge_removed();
        if let Some(e) = self.events.pop_front() {
            return Some(e);
        }
        // Events a chart queued outside `handle_message` (none today; kept for safety).
        for (i, slot) in self.charts.iter_mut().enumerate() {
            if let Some(event) = slot.chart.as_mut().and_then(ChartSession::poll_event) {
                return Some(Event::Chart {
                    chart: ChartId {
                        slot: i as u32,
                        generation: slot.generation,
                    },
                    event,
                });
            }
        }
        None
    }
}

/// Hands one parsed message to the connection or to the chart session it names, moving that
/// chart's events into the connection's queue so that events keep the order of the messages.
/// A connection holds a handful of chart sessions (the engine: one for its seises, one for
/// confirmations, one per history call), so the session is found by a scan.
fn route(
    now: Instant,
    msg: &ServerMessage<'_>,
    charts: &mut [ChartSlot],
    events: &mut VecDeque<Event>,
) {
    match msg {
        ServerMessage::Hello(h) => events.push_back(Event::Connected {
            server_session: h.session_id.to_owned(),
        }),
        ServerMessage::ProtocolError { text } => events.push_back(Event::ProtocolError {
            text: (*text).to_owned(),
        }),
        _ => {
            let Some(session) = msg.session() else {
                return;
            };
            let found = charts
                .iter_mut()
                .enumerate()
                .find(|(_, s)| s.chart.as_ref().is_some_and(|c| c.id() == session));
            match found {
                Some((i, slot)) => {
                    let id = ChartId {
                        slot: i as u32,
                        generation: slot.generation,
                    };
                    let Some(chart) = slot.chart.as_mut() else {
                        return;
                    };
                    chart.handle_message(now, msg);
                    while let Some(event) = chart.poll_event() {
                        events.push_back(Event::Chart { chart: id, event });
                    }
                }
                None => {
                    if let ServerMessage::CriticalError {
                        session,
                        reason,
                        detail,
                    } = msg
                    {
                        events.push_back(Event::CriticalError {
                            session: (*session).to_owned(),
                            reason: (*reason).to_owned(),
                            detail: detail.map(str::to_owned),
                        });
                    }
                }
            }
        }
    }
}
