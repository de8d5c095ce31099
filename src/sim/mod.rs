//! A TradingView-protocol simulator: a faithful server on loopback for tests, benches and demos.
//!
//! No machine here can reach TradingView, so everything that talks to it is tested against this
//! server. It shares the crate's [`protocol`](crate::protocol) codec and follows protocol.md:
//! the upgrade checks (`/socket.io/websocket`, an `https://*.tradingview.com` `Origin`, else
//! 403; 429 on demand), the hello, heartbeats whose echo is required, several frames per
//! websocket message, chart sessions with many series, history paging, live `du` updates and
//! new-bar `timescale_update`s, quote sessions, and every error message.
//!
//! Prices come from a deterministic [`Market`]: the final values of every bar are a pure
//! function of the seed, so tests can assert exact bars. Live bars follow the wall clock: a `1S`
//! series closes a bar every second, with a final `du` carrying the bar's final values before
//! the new bar is announced.
//!
//! Faults ([`Fault`]) can be injected per connection or for all: clean and abrupt closes,
//! stalls, delays, malformed frames, wrong or absurd lengths, garbage JSON, unknown messages and
//! a server restart, each after a delay or after a number of messages.
//!
//! # Threads
//!
//! `tv-sim-accept` accepts connections; each connection gets a `tv-sim-conn-N` thread that owns
//! its socket and its protocol state. Shared state is a few atomics (counters, stop flag) and
//! mutexes that are never held across I/O. [`Sim::stop`] (or drop) returns within its timeout.
//!
//! # Examples
//!
//! ```
//! use tvdatafeed::sim::{Sim, SimConfig};
//!
//! let sim = Sim::start(SimConfig::default())?;
//! assert!(sim.url().starts_with("ws://127.0.0.1:"));
//! sim.stop(std::time::Duration::from_secs(2));
//! # Ok::<(), tvdatafeed::sim::SimError>(())
//! ```

mod conn;
mod market;
mod relay;
pub(crate) mod session;

use std::{
    collections::{HashMap, VecDeque},
    net::{SocketAddr, TcpListener, TcpStream},
    time::{Duration, Instant},
};

pub use market::{Market, Prices};
pub use relay::Relay;

use crate::{
    Bar, Interval, Symbol,
    sync::plain::{
        Arc, Condvar, Mutex,
        atomic::{AtomicBool, AtomicU64, Ordering},
        thread,
    },
};

/// How the simulator behaves. By-value setters; every default is documented.
#[derive(Clone)]
#[non_exhaustive]
pub struct SimConfig {
    /// Address to bind. Default `127.0.0.1:0` (a free port, so tests run in parallel).
    pub bind: SocketAddr,
    /// Serve `wss://` with a self-signed certificate generated at start. Default `false`.
    pub tls: bool,
    /// Market seed. Default 1.
    pub seed: u64,
    /// Heartbeat period. Default 10 s.
    pub heartbeat_interval: Duration,
    /// Close the connection when a heartbeat's echo has not come within this. Default 20 s.
    pub heartbeat_timeout: Duration,
    /// Period of live `du` updates per series (and quote deltas). Default 250 ms.
    pub update_interval: Duration,
    /// Send every n-th `du` twice, as observed on the real server. Default 0 (never).
    pub duplicate_du_every: u64,
    /// Pack the frames of a load into one websocket message, as the real server does.
    /// Default `true`.
    pub batch_frames: bool,
    /// Most bars one `create_series` or `request_more_data` returns. Default 5,000.
    pub max_bars_per_request: usize,
    /// History depth of anonymous sessions, in bars. Default 5,000.
    pub history_depth_anonymous: usize,
    /// History depth of sessions with a valid token. Default 20,000.
    pub history_depth_authenticated: usize,
    /// Tokens accepted besides the anonymous one; empty accepts any JWT-shaped token. A token
    /// that is not accepted gets `protocol_error "bad auth token"` and a close.
    pub valid_tokens: Vec<String>,
    /// Whether seconds resolutions are served (else `series_error seconds_not_entitled`).
    /// Default `true`.
    pub entitled_seconds: bool,
    /// Whether custom minute counts are served (else `series_error custom_resolution`).
    /// Default `true`.
    pub entitled_custom: bool,
    /// Answer the upgrade with 403 unless `Origin` is `https://*.tradingview.com`. Default `true`.
    pub require_origin: bool,
    /// Symbols (`EXCH:TICKER`) that send no live update at all: a quiet market.
    pub quiet_symbols: Vec<String>,
    /// `(exchange, group)`: symbols of these exchanges get `symbol_error "permission denied",
    /// "group", group`. Default `[("ECONOMICS", "economics_paid")]`.
    pub denied_exchanges: Vec<(String, String)>,
    /// Symbols that do not exist besides the built-in rule (tickers starting with `INVALID`,
    /// exchange `NOWHERE`).
    pub unknown_symbols: Vec<String>,
    /// Record every live message as it is sent ([`Sim::take_live_sends`]: the instant just
    /// before its bytes were written, the connection, the series and the bar it carries), for
    /// latency measurements; at most this many are held until taken, later ones are not
    /// recorded. Default 0 (off). While on, each live message is written and flushed on its
    /// own (one `write` each), so that its instant is its own, not its batch's.
    pub record_send_times: usize,
    /// Revise about one bar in n after its live close: right after the close, a `du` for the
    /// closed bar's index carries new values ([`Prices::revise`]) on every series streaming
    /// it, and history and [`Sim::expected_bar`] return them from then on. Which bars are
    /// revised is a pure function of the bar and the seed. Default 0 (never).
    pub revise_every: u64,
    /// Serve the requests of a connection one at a time, each taking this long, as a busy
    /// real server does: a request that the server answers (`resolve_symbol`, `create_series`,
    /// `modify_series`, `request_more_data`, `quote_add_symbols`) is answered no sooner than
    /// this after the previous one's answer or after its own arrival, whichever is later, in
    /// arrival order. Other messages (`remove_series`, which has no answer and frees state,
    /// session deletes) keep their place in the queue but take no time; heartbeat echoes are
    /// read at once, and the live stream keeps flowing meanwhile.
    /// Default zero (every request answered on arrival).
    pub request_service_time: Duration,
    /// How long after a bar boundary the stream's first trade comes: the `du` showing the new
    /// bar, which is what closes the previous bar for a client, is sent this long after the
    /// boundary (plus [`SimConfig::tick_phase_jitter`]) instead of at it. Nothing is sent for
    /// the series in between, and history loaded in between still ends at the previous bar.
    /// Capped just below the bar's length. Default zero (at the boundary).
    pub tick_phase: Duration,
    /// A delay added to [`SimConfig::tick_phase`], uniform in `0..=jitter` (whole
    /// milliseconds), a pure function of the seed and the bar's open time. Default zero.
    pub tick_phase_jitter: Duration,
    /// Symbols (`EXCH:TICKER`) of a thin market: as on TradingView, an interval without trades
    /// has no bar. About one bar in [`SimConfig::thin_trade_one_in`] has trades
    /// ([`SimConfig::has_bar`]); history, paging and ranges hold only those, a load's last bar
    /// is the last traded one even when it closed long ago, and the stream shows a new bar only
    /// when a traded one opens. Unlike [`SimConfig::quiet_symbols`], which have every bar but
    /// no live update. Default empty.
    pub thin_symbols: Vec<String>,
    /// For [`SimConfig::thin_symbols`]: about one bar in n has trades (0 and 1: every bar).
    /// Default 4.
    pub thin_trade_one_in: u64,
}

impl std::fmt::Debug for SimConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SimConfig")
            .field("bind", &self.bind)
            .field("tls", &self.tls)
            .field("seed", &self.seed)
            .field("heartbeat_interval", &self.heartbeat_interval)
            .field("heartbeat_timeout", &self.heartbeat_timeout)
            .field("update_interval", &self.update_interval)
            .field("max_bars_per_request", &self.max_bars_per_request)
            .field("request_service_time", &self.request_service_time)
            .field("tick_phase", &self.tick_phase)
            .field("tick_phase_jitter", &self.tick_phase_jitter)
            .field("thin_symbols", &self.thin_symbols)
            .field("thin_trade_one_in", &self.thin_trade_one_in)
            .field(
                "valid_tokens",
                &format_args!("<{} redacted>", self.valid_tokens.len()),
            )
            .finish_non_exhaustive()
    }
}

impl Default for SimConfig {
    fn default() -> Self {
        Self {
            bind: SocketAddr::from(([127, 0, 0, 1], 0)),
            tls: false,
            seed: 1,
            heartbeat_interval: Duration::from_secs(10),
            heartbeat_timeout: Duration::from_secs(20),
            update_interval: Duration::from_millis(250),
            duplicate_du_every: 0,
            batch_frames: true,
            max_bars_per_request: 5_000,
            history_depth_anonymous: 5_000,
            history_depth_authenticated: 20_000,
            valid_tokens: Vec::new(),
            entitled_seconds: true,
            entitled_custom: true,
            require_origin: true,
            quiet_symbols: Vec::new(),
            denied_exchanges: vec![("ECONOMICS".into(), "economics_paid".into())],
            unknown_symbols: Vec::new(),
            record_send_times: 0,
            revise_every: 0,
            request_service_time: Duration::ZERO,
            tick_phase: Duration::ZERO,
            tick_phase_jitter: Duration::ZERO,
            thin_symbols: Vec::new(),
            thin_trade_one_in: 4,
        }
    }
}

macro_rules! setter {
    ($(#[$doc:meta] $name:ident : $field:ident : $ty:ty),* $(,)?) => {$(
        #[$doc]
        #[must_use]
        pub fn $name(mut self, v: $ty) -> Self {
            self.$field = v;
            self
        }
    )*};
}

impl SimConfig {
    setter! {
        /// Sets [`SimConfig::bind`].
        with_bind: bind: SocketAddr,
        /// Sets [`SimConfig::tls`].
        with_tls: tls: bool,
        /// Sets [`SimConfig::seed`].
        with_seed: seed: u64,
        /// Sets [`SimConfig::heartbeat_interval`].
        with_heartbeat_interval: heartbeat_interval: Duration,
        /// Sets [`SimConfig::heartbeat_timeout`].
        with_heartbeat_timeout: heartbeat_timeout: Duration,
        /// Sets [`SimConfig::update_interval`].
        with_update_interval: update_interval: Duration,
        /// Sets [`SimConfig::duplicate_du_every`].
        with_duplicate_du_every: duplicate_du_every: u64,
        /// Sets [`SimConfig::batch_frames`].
        with_batch_frames: batch_frames: bool,
        /// Sets [`SimConfig::max_bars_per_request`].
        with_max_bars_per_request: max_bars_per_request: usize,
        /// Sets [`SimConfig::history_depth_anonymous`].
        with_history_depth_anonymous: history_depth_anonymous: usize,
        /// Sets [`SimConfig::history_depth_authenticated`].
        with_history_depth_authenticated: history_depth_authenticated: usize,
        /// Sets [`SimConfig::valid_tokens`].
        with_valid_tokens: valid_tokens: Vec<String>,
        /// Sets [`SimConfig::entitled_seconds`].
        with_entitled_seconds: entitled_seconds: bool,
        /// Sets [`SimConfig::entitled_custom`].
        with_entitled_custom: entitled_custom: bool,
        /// Sets [`SimConfig::require_origin`].
        with_require_origin: require_origin: bool,
        /// Sets [`SimConfig::quiet_symbols`].
        with_quiet_symbols: quiet_symbols: Vec<String>,
        /// Sets [`SimConfig::denied_exchanges`].
        with_denied_exchanges: denied_exchanges: Vec<(String, String)>,
        /// Sets [`SimConfig::unknown_symbols`].
        with_unknown_symbols: unknown_symbols: Vec<String>,
        /// Sets [`SimConfig::record_send_times`].
        with_record_send_times: record_send_times: usize,
        /// Sets [`SimConfig::revise_every`].
        with_revise_every: revise_every: u64,
        /// Sets [`SimConfig::request_service_time`].
        with_request_service_time: request_service_time: Duration,
        /// Sets [`SimConfig::tick_phase`].
        with_tick_phase: tick_phase: Duration,
        /// Sets [`SimConfig::tick_phase_jitter`].
        with_tick_phase_jitter: tick_phase_jitter: Duration,
        /// Sets [`SimConfig::thin_symbols`].
        with_thin_symbols: thin_symbols: Vec<String>,
        /// Sets [`SimConfig::thin_trade_one_in`].
        with_thin_trade_one_in: thin_trade_one_in: u64,
    }

    /// Whether `symbol` is one of [`SimConfig::thin_symbols`].
    pub fn is_thin(&self, symbol: &Symbol) -> bool {
        self.thin_symbols.iter().any(|t| t == symbol.as_str())
    }

    /// Whether the bar of `symbol` at `interval` containing `t` exists: always, except for a
    /// [thin](SimConfig::thin_symbols) symbol's bars without trades.
    ///
    /// # Examples
    ///
    /// ```
    /// use tvdatafeed::sim::SimConfig;
    ///
    /// let cfg = SimConfig::default().with_thin_symbols(vec!["NYSE:THIN".into()]);
    /// let (thin, busy, one) = ("NYSE:THIN".parse()?, "NYSE:IBM".parse()?, "1".parse()?);
    /// let t0 = 1_751_833_020;
    /// assert!((0..100).all(|i| cfg.has_bar(&busy, one, t0 + 60 * i)));
    /// assert!((0..100).any(|i| !cfg.has_bar(&thin, one, t0 + 60 * i)));
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn has_bar(&self, symbol: &Symbol, interval: Interval, t: i64) -> bool {
        !self.is_thin(symbol)
            || Market::new(self.seed).has_trades(
                symbol,
                interval,
                interval.bar_open(t),
                self.thin_trade_one_in,
            )
    }

    /// How long after its open the bar of `interval` opening at `open` sees its first trade
    /// on the stream: [`SimConfig::tick_phase`] plus this bar's share of
    /// [`SimConfig::tick_phase_jitter`], capped 1 ms below the bar's length. Zero by default.
    pub fn first_trade_delay(&self, interval: Interval, open: i64) -> Duration {
        use std::hash::{Hash, Hasher};
        if self.tick_phase.is_zero() && self.tick_phase_jitter.is_zero() {
            return Duration::ZERO;
        }
        let ms = |d: Duration| u64::try_from(d.as_millis()).unwrap_or(u64::MAX);
        let jitter = ms(self.tick_phase_jitter);
        let extra = if jitter == 0 {
            0
        } else {
            // SipHash with fixed keys: the same answer in every run and on every connection.
            let mut h = std::collections::hash_map::DefaultHasher::new();
            (self.seed, open, "tick_phase").hash(&mut h);
            h.finish() % jitter.saturating_add(1)
        };
        let len_ms = (interval.next_bar_open(open) - open).max(1) as u64 * 1000;
        Duration::from_millis(ms(self.tick_phase).saturating_add(extra).min(len_ms - 1))
    }

    /// Whether `symbol` exists on this server.
    pub fn knows(&self, symbol: &Symbol) -> bool {
        !(symbol.ticker().starts_with("INVALID")
            || symbol.exchange() == "NOWHERE"
            || self.unknown_symbols.iter().any(|u| u == symbol.as_str()))
    }
}

/// What a fault does to a connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum FaultKind {
    /// Send a websocket close frame (1000) and end the connection.
    CloseClean,
    /// Drop the TCP connection without a close frame.
    CloseAbrupt,
    /// Send nothing (heartbeats included) for the duration, or until the client leaves.
    Stall(Option<Duration>),
    /// Hold every outgoing message for this long, then send them all in order.
    Delay(Duration),
    /// A websocket message that is not a frame (`~m~garbage`).
    MalformedFrame,
    /// A JSON frame whose length prefix is 3 more than its payload.
    WrongLengthPrefix,
    /// A frame declaring 99,999,999,999 bytes.
    AbsurdLength,
    /// A frame whose payload is not JSON.
    GarbageJson,
    /// A well-formed message with a method no client knows.
    UnknownMessage,
    /// Close every connection abruptly, refuse connections for the duration, then serve again
    /// on the same port.
    Restart(Duration),
    /// Write the next message one byte every `gap`: bytes keep arriving, yet no message
    /// completes until its last byte is out (everything else waits behind it). A client whose
    /// stall deadline counts bytes instead of messages never notices.
    Trickle(Duration),
    /// A `critical_error` naming the chart session the client deleted last on this
    /// connection, as a server sends when it serves, after the delete, a request it had queued
    /// for that session. Nothing when none was deleted.
    LateCriticalError,
}

/// When a fault fires.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Trigger {
    /// At the next loop turn.
    Now,
    /// This long after injection.
    After(Duration),
    /// After the connection has sent this many more websocket messages.
    AfterMessages(u64),
}

/// Which connections a fault hits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Target {
    /// Every connection open at injection.
    All,
    /// One connection, by its number (1 for the first accepted).
    Connection(u64),
    /// The next connection to be accepted (armed before its hello is sent).
    Next,
}

/// A fault to inject with [`Sim::inject`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct Fault {
    /// What.
    pub kind: FaultKind,
    /// When.
    pub trigger: Trigger,
    /// Where.
    pub target: Target,
}

impl Fault {
    /// `kind` now, on every open connection.
    pub const fn now(kind: FaultKind) -> Self {
        Self {
            kind,
            trigger: Trigger::Now,
            target: Target::All,
        }
    }

    /// Sets the trigger.
    #[must_use]
    pub const fn when(mut self, trigger: Trigger) -> Self {
        self.trigger = trigger;
        self
    }

    /// Sets the target.
    #[must_use]
    pub const fn on(mut self, target: Target) -> Self {
        self.target = target;
        self
    }
}

/// A fault armed on one connection, with its deadline resolved.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Armed {
    pub(crate) kind: FaultKind,
    pub(crate) at: Option<Instant>,
    pub(crate) after_messages: Option<u64>,
}

/// Counters of a running simulator.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct Counters {
    /// Connections accepted (upgrade completed).
    pub connections: u64,
    /// Connections open now.
    pub active: u64,
    /// Upgrades refused (403, 404, 429).
    pub refused: u64,
    /// Websocket messages sent.
    pub messages_sent: u64,
    /// Payload bytes sent in websocket messages.
    pub bytes_sent: u64,
    /// Live `du` / new-bar messages sent.
    pub live_sent: u64,
    /// Websocket messages received from clients.
    pub messages_received: u64,
    /// `request_more_data` requests served: the pages of history past the first that clients
    /// asked for.
    pub pages_requested: u64,
    /// Series open now, over every connection (created and neither removed nor closed with
    /// their connection).
    pub series_open: u64,
}

/// A bar whose close the simulator published live (its final `du`).
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct PublishedBar {
    /// `EXCH:TICKER`.
    pub symbol: String,
    /// Resolution.
    pub interval: Interval,
    /// The final values sent.
    pub bar: Bar,
}

/// One live message as the simulator sent it (with [`SimConfig::record_send_times`]).
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct LiveSend {
    /// The instant just before its bytes were written to the socket.
    pub at: Instant,
    /// The connection it went out on (1 for the first accepted).
    pub connection: u64,
    /// The series' symbol.
    pub symbol: Symbol,
    /// The series' resolution.
    pub interval: Interval,
    /// The bar it carries (a forming bar's values, a bar's final values, or a new bar).
    pub bar: Bar,
}

/// The simulator could not start.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SimError {
    /// Binding or configuring the listener failed.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// The cause.
        source: std::io::Error,
    },
    /// Generating the TLS certificate or configuration failed.
    #[error("tls setup failed: {0}")]
    Tls(String),
    /// The accept thread could not be spawned.
    #[error("cannot spawn the accept thread: {0}")]
    Spawn(std::io::Error),
    /// A [`Relay`] was asked to forward to an address that is not loopback: it only relays
    /// within the machine. Fatal for that call; pass the simulator's address.
    #[error("relay target {0} is not a loopback address")]
    NotLoopback(SocketAddr),
}

const MAX_PUBLISHED: usize = 100_000;

/// State shared by the accept thread, the connection threads and the handle.
#[derive(Debug, Default)]
pub(crate) struct Shared {
    stop: AtomicBool,
    /// Bumped by a restart: connections of an older generation close.
    generation: AtomicU64,
    next_conn: AtomicU64,
    /// Upgrades to refuse: the HTTP status and the `Retry-After` seconds to send with it.
    rejects: Mutex<VecDeque<(u16, Option<u64>)>>,
    pub(crate) connections: AtomicU64,
    pub(crate) active: AtomicU64,
    pub(crate) refused: AtomicU64,
    pub(crate) messages_sent: AtomicU64,
    pub(crate) bytes_sent: AtomicU64,
    pub(crate) live_sent: AtomicU64,
    pub(crate) messages_received: AtomicU64,
    pub(crate) pages_requested: AtomicU64,
    pub(crate) series_open: AtomicU64,
    /// Faults waiting for their connection to pick them up.
    faults: Mutex<HashMap<u64, Vec<Armed>>>,
    /// Open connection numbers.
    open: Mutex<Vec<u64>>,
    /// Faults for the next connection accepted.
    next_faults: Mutex<Vec<Armed>>,
    /// Signalled when a connection ends or a restart is asked.
    changed: Condvar,
    restart: Mutex<Option<Duration>>,
    published: Mutex<VecDeque<PublishedBar>>,
    live_sends: Mutex<Vec<LiveSend>>,
    /// Bars revised after their close: (symbol, interval, open time) → new values.
    revisions: Mutex<HashMap<(String, Interval, i64), Bar>>,
    /// Auth tokens revoked since the start: `set_auth_token` with one gets `bad auth token`.
    revoked: Mutex<Vec<String>>,
}

// Orderings: every atomic here is a counter or a flag read by polling loops that re-check it
// every turn; none publishes other memory, so Relaxed suffices (the mutexes order the rest).
impl Shared {
    pub(crate) fn stopping(&self) -> bool {
        self.stop.load(Ordering::Relaxed)
    }

    pub(crate) fn generation(&self) -> u64 {
        self.generation.load(Ordering::Relaxed)
    }

    pub(crate) fn take_faults(&self, conn: u64) -> Vec<Armed> {
        let mut map = self.faults.lock().unwrap_or_else(|e| e.into_inner());
        map.remove(&conn).unwrap_or_default()
    }

    pub(crate) fn publish_close(&self, symbol: &str, interval: Interval, bar: Bar) {
        let mut p = self.published.lock().unwrap_or_else(|e| e.into_inner());
        if p.len() == MAX_PUBLISHED {
            p.pop_front();
        }
        p.push_back(PublishedBar {
            symbol: symbol.to_owned(),
            interval,
            bar,
        });
    }

    /// Records a revision of a closed bar.
    pub(crate) fn revise(&self, symbol: &str, interval: Interval, bar: Bar) {
        let mut r = self.revisions.lock().unwrap_or_else(|e| e.into_inner());
        if r.len() < MAX_PUBLISHED {
            r.insert((symbol.to_owned(), interval, bar.time), bar);
        }
    }

    /// Whether any bar was revised yet.
    pub(crate) fn has_revisions(&self) -> bool {
        !self
            .revisions
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .is_empty()
    }

    /// The revised values of a bar, if it was revised.
    pub(crate) fn revised(&self, symbol: &str, interval: Interval, t: i64) -> Option<Bar> {
        let r = self.revisions.lock().unwrap_or_else(|e| e.into_inner());
        if r.is_empty() {
            return None;
        }
        r.get(&(symbol.to_owned(), interval, t)).copied()
    }

    pub(crate) fn record_send(&self, cfg: &SimConfig, send: LiveSend) {
        let mut t = self.live_sends.lock().unwrap_or_else(|e| e.into_inner());
        if t.len() < cfg.record_send_times {
            t.push(send);
        }
    }

    /// Whether `token` was revoked with [`Sim::revoke_token`].
    pub(crate) fn is_revoked(&self, token: &str) -> bool {
        self.revoked
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .any(|t| t == token)
    }

    pub(crate) fn take_reject(&self) -> Option<(u16, Option<u64>)> {
        self.rejects
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .pop_front()
    }

    fn register(&self) -> u64 {
        let id = self.next_conn.fetch_add(1, Ordering::Relaxed) + 1;
        self.open.lock().unwrap_or_else(|e| e.into_inner()).push(id);
        let next: Vec<Armed> =
            std::mem::take(&mut *self.next_faults.lock().unwrap_or_else(|e| e.into_inner()));
        if !next.is_empty() {
            self.faults
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .entry(id)
                .or_default()
                .extend(next);
        }
        id
    }

    pub(crate) fn unregister(&self, id: u64) {
        self.open
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .retain(|c| *c != id);
        self.changed.notify_all();
    }
}

/// A running simulator. Stops on [`Sim::stop`] or drop.
#[derive(Debug)]
pub struct Sim {
    shared: Arc<Shared>,
    cfg: Arc<SimConfig>,
    addr: SocketAddr,
    cert_der: Option<Vec<u8>>,
    cert_pem: Option<String>,
    accept: Option<thread::JoinHandle<()>>,
}

impl Sim {
    /// Binds, generates the TLS certificate when asked, and starts serving.
    ///
    /// # Errors
    ///
    /// [`SimError`] when the address cannot be bound or TLS cannot be set up.
    pub fn start(cfg: SimConfig) -> Result<Self, SimError> {
        let listener = TcpListener::bind(cfg.bind).map_err(|source| SimError::Bind {
            addr: cfg.bind,
            source,
        })?;
        let addr = listener.local_addr().map_err(|source| SimError::Bind {
            addr: cfg.bind,
            source,
        })?;
        let (tls, cert_der, cert_pem) = if cfg.tls {
            let (config, der, pem) = conn::tls_config()?;
            (Some(config), Some(der), Some(pem))
        } else {
            (None, None, None)
        };
        let shared = Arc::new(Shared::default());
        let cfg = Arc::new(cfg);
        let accept = {
            let (shared, cfg) = (Arc::clone(&shared), Arc::clone(&cfg));
            thread::Builder::new()
                .name("tv-sim-accept".into())
                .spawn(move || accept_loop(listener, addr, shared, cfg, tls))
                .map_err(SimError::Spawn)?
        };
        tracing::info!(%addr, tls = cfg.tls, "simulator listening");
        Ok(Self {
            shared,
            cfg,
            addr,
            cert_der,
            cert_pem,
            accept: Some(accept),
        })
    }

    /// The websocket URL clients connect to, with the query string real clients send.
    pub fn url(&self) -> String {
        let scheme = if self.cfg.tls { "wss" } else { "ws" };
        format!(
            "{scheme}://{}/socket.io/websocket?from=chart&type=chart",
            self.addr
        )
    }

    /// The bound address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The self-signed certificate (DER) a `wss` client must trust; `None` without TLS.
    pub fn root_certificate_der(&self) -> Option<&[u8]> {
        self.cert_der.as_deref()
    }

    /// The same certificate in PEM form.
    pub fn root_certificate_pem(&self) -> Option<&str> {
        self.cert_pem.as_deref()
    }

    /// The configuration it runs with.
    pub fn config(&self) -> &SimConfig {
        &self.cfg
    }

    /// The market: the ground truth of every bar's final values.
    pub fn market(&self) -> Market {
        Market::new(self.cfg.seed)
    }

    /// The final values of a bar, as history and the live close publish them (revised when
    /// the simulator revised it, see [`SimConfig::revise_every`]). A
    /// [thin](SimConfig::thin_symbols) symbol's bar without trades does not exist: check
    /// [`Sim::has_bar`] first, or use [`Sim::expected_bar_opt`].
    pub fn expected_bar(&self, symbol: &Symbol, interval: Interval, open_time: i64) -> Bar {
        self.shared
            .revised(symbol.as_str(), interval, open_time)
            .unwrap_or_else(|| self.market().bar(symbol, interval, open_time))
    }

    /// Whether the bar of `symbol` at `interval` containing `t` exists (see
    /// [`SimConfig::has_bar`]): false only for a thin symbol's bar without trades.
    pub fn has_bar(&self, symbol: &Symbol, interval: Interval, t: i64) -> bool {
        self.cfg.has_bar(symbol, interval, t)
    }

    /// [`Sim::expected_bar`] for a bar that exists, `None` for a thin symbol's bar without
    /// trades.
    pub fn expected_bar_opt(
        &self,
        symbol: &Symbol,
        interval: Interval,
        open_time: i64,
    ) -> Option<Bar> {
        self.has_bar(symbol, interval, open_time)
            .then(|| self.expected_bar(symbol, interval, open_time))
    }

    /// How many bars the simulator revised so far.
    pub fn revision_count(&self) -> usize {
        self.shared
            .revisions
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .len()
    }

    /// Bars closed live so far (their final `du`), oldest first, at most the last 100,000.
    pub fn published_closes(&self) -> Vec<PublishedBar> {
        let p = self
            .shared
            .published
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        p.iter().cloned().collect()
    }

    /// The send instant of each live message recorded and not yet taken, in send order (see
    /// [`SimConfig::record_send_times`]).
    pub fn send_times(&self) -> Vec<Instant> {
        self.shared
            .live_sends
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .map(|s| s.at)
            .collect()
    }

    /// Takes the live messages recorded so far, in send order (see
    /// [`SimConfig::record_send_times`]); recording goes on into an empty buffer.
    pub fn take_live_sends(&self) -> Vec<LiveSend> {
        std::mem::take(
            &mut *self
                .shared
                .live_sends
                .lock()
                .unwrap_or_else(|e| e.into_inner()),
        )
    }

    /// A snapshot of the counters.
    pub fn counters(&self) -> Counters {
        let s = &self.shared;
        let l = |a: &AtomicU64| a.load(Ordering::Relaxed);
        Counters {
            connections: l(&s.connections),
            active: l(&s.active),
            refused: l(&s.refused),
            messages_sent: l(&s.messages_sent),
            bytes_sent: l(&s.bytes_sent),
            live_sent: l(&s.live_sent),
            messages_received: l(&s.messages_received),
            pages_requested: l(&s.pages_requested),
            series_open: l(&s.series_open),
        }
    }

    /// Answers the next `n` upgrades with HTTP 429.
    pub fn reject_next_with_429(&self, n: u64) {
        self.reject_next_with(429, n);
    }

    /// Answers the next `n` upgrades with HTTP `status` (403, 429, 503…), after the path and
    /// `Origin` checks.
    pub fn reject_next_with(&self, status: u16, n: u64) {
        self.push_rejects(status, None, n);
    }

    /// Answers the next `n` upgrades with HTTP `status` and a `Retry-After` header of
    /// `retry_after` (whole seconds, rounded up).
    pub fn reject_next_with_retry_after(&self, status: u16, n: u64, retry_after: Duration) {
        let secs = retry_after
            .as_secs()
            .saturating_add(u64::from(retry_after.subsec_nanos() > 0));
        self.push_rejects(status, Some(secs), n);
    }

    fn push_rejects(&self, status: u16, retry_after: Option<u64>, n: u64) {
        let mut r = self
            .shared
            .rejects
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        // Bounded: a caller asking for more refusals than memory holds gets as many as fit
        // in the counter (the queue grows by one small entry per refusal).
        let n = usize::try_from(n).unwrap_or(usize::MAX).min(1 << 20);
        r.extend(std::iter::repeat_n((status, retry_after), n));
    }

    /// Revokes an auth token: from now on, a connection that sends it is answered
    /// `protocol_error "bad auth token"` (connections already signed in keep going, as a
    /// server checks the token when it is set).
    pub fn revoke_token(&self, token: &str) {
        self.shared
            .revoked
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(token.to_owned());
    }

    /// Injects a fault.
    pub fn inject(&self, fault: Fault) {
        if let FaultKind::Restart(down) = fault.kind {
            *self
                .shared
                .restart
                .lock()
                .unwrap_or_else(|e| e.into_inner()) = Some(down);
            self.shared.generation.fetch_add(1, Ordering::Relaxed);
            self.shared.changed.notify_all();
            // Wake the accept thread blocked in accept().
            let _ = TcpStream::connect_timeout(&self.addr, Duration::from_millis(200));
            return;
        }
        let now = crate::clock::monotonic();
        let armed = Armed {
            kind: fault.kind,
            at: match fault.trigger {
                Trigger::After(d) => Some(now + d),
                _ => None,
            },
            after_messages: match fault.trigger {
                Trigger::AfterMessages(n) => Some(n),
                _ => None,
            },
        };
        let targets = match fault.target {
            Target::All => self
                .shared
                .open
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .clone(),
            Target::Connection(id) => vec![id],
            Target::Next => {
                self.shared
                    .next_faults
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .push(armed);
                return;
            }
        };
        let mut map = self.shared.faults.lock().unwrap_or_else(|e| e.into_inner());
        for id in targets {
            map.entry(id).or_default().push(armed);
        }
    }

    /// Waits until `n` connections have been accepted in total, at most `timeout`.
    pub fn wait_connections(&self, n: u64, timeout: Duration) -> bool {
        self.wait_until(timeout, |s| s.connections.load(Ordering::Relaxed) >= n)
    }

    /// Waits until no connection is open, at most `timeout`.
    pub fn wait_idle(&self, timeout: Duration) -> bool {
        self.wait_until(timeout, |s| s.active.load(Ordering::Relaxed) == 0)
    }

    fn wait_until(&self, timeout: Duration, done: impl Fn(&Shared) -> bool) -> bool {
        let deadline = crate::clock::monotonic() + timeout;
        let mut guard = self.shared.open.lock().unwrap_or_else(|e| e.into_inner());
        loop {
            if done(&self.shared) {
                return true;
            }
            let now = crate::clock::monotonic();
            if now >= deadline {
                return false;
            }
            // Connections notify on open and close; the cap re-checks counters that move
            // without a notification.
            let wait = (deadline - now).min(Duration::from_millis(20));
            guard = match self.shared.changed.wait_timeout(guard, wait) {
                Ok((g, _)) => g,
                Err(e) => e.into_inner().0,
            };
        }
    }

    /// Stops accepting, closes every connection, and waits for the threads at most `timeout`.
    /// Returns whether everything stopped in time.
    pub fn stop(mut self, timeout: Duration) -> bool {
        self.shutdown(timeout)
    }

    fn shutdown(&mut self, timeout: Duration) -> bool {
        let Some(accept) = self.accept.take() else {
            return true;
        };
        self.shared.stop.store(true, Ordering::Relaxed);
        self.shared.changed.notify_all();
        let _ = TcpStream::connect_timeout(&self.addr, Duration::from_millis(200));
        let idle = self.wait_idle(timeout);
        let joined = if accept.is_finished()
            || self.wait_until(timeout.min(Duration::from_secs(1)), |_| {
                accept.is_finished()
            }) {
            accept.join().is_ok()
        } else {
            false
        };
        tracing::info!(addr = %self.addr, idle, joined, "simulator stopped");
        idle && joined
    }
}

impl Drop for Sim {
    fn drop(&mut self) {
        self.shutdown(Duration::from_secs(2));
    }
}

fn accept_loop(
    mut listener: TcpListener,
    addr: SocketAddr,
    shared: Arc<Shared>,
    cfg: Arc<SimConfig>,
    tls: Option<Arc<rustls::ServerConfig>>,
) {
    tracing::debug!("tv-sim-accept started");
    loop {
        let (stream, peer) = match listener.accept() {
            Ok(s) => s,
            Err(e) => {
                tracing::warn!(error = %e, "accept failed");
                if shared.stopping() {
                    break;
                }
                continue;
            }
        };
        if shared.stopping() {
            break;
        }
        let down = shared
            .restart
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take();
        if let Some(down) = down {
            drop(stream);
            drop(listener);
            tracing::info!(?down, "simulated restart");
            // Wait out the downtime on the condvar, so that a stop interrupts it.
            let deadline = crate::clock::monotonic() + down;
            let mut guard = shared.open.lock().unwrap_or_else(|e| e.into_inner());
            while !shared.stopping() {
                let now = crate::clock::monotonic();
                if now >= deadline {
                    break;
                }
                guard = match shared.changed.wait_timeout(guard, deadline - now) {
                    Ok((g, _)) => g,
                    Err(e) => e.into_inner().0,
                };
            }
            drop(guard);
            if shared.stopping() {
                return;
            }
            listener = match TcpListener::bind(addr) {
                Ok(l) => l,
                Err(e) => {
                    tracing::error!(error = %e, "cannot rebind after restart");
                    return;
                }
            };
            continue;
        }
        let id = shared.register();
        let (shared2, cfg2, tls2) = (Arc::clone(&shared), Arc::clone(&cfg), tls.clone());
        let spawned = thread::Builder::new()
            .name(format!("tv-sim-conn-{id}"))
            .spawn(move || conn::run(id, stream, peer, &shared2, &cfg2, tls2));
        if let Err(e) = spawned {
            tracing::error!(error = %e, "cannot spawn a connection thread");
            shared.unregister(id);
        }
    }
    tracing::debug!("tv-sim-accept ended");
}
