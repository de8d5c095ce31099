//! The engine's decisions, as a sans-I/O state machine: commands, socket events, bytes and the
//! time in; bytes to send, connection actions, deliveries and the next deadline out.
//!
//! No sockets, threads or clocks: the `tv-io` thread (`io.rs`) is a thin driver around it, and
//! the deterministic simulation test drives it against the simulator's server session in
//! memory with a virtual clock. Every deadline lives in one timer wheel (milliseconds since
//! `epoch`), beside the protocol connection's own (load and idle deadlines).
//!
//! # Exactly once, in order
//!
//! For each seis the core keeps the last closed bar it delivered (`last_closed`) and the values
//! of the last 64 (`recent`). A bar reaches consumers as [`LiveEvent::Closed`] only if it opens
//! after `last_closed`, whichever path reported it:
//!
//! - the stream: the next bar appears (the chart session's `Closed`), at once;
//! - a quiet market: when the bar's close time plus the grace passes with the bar still
//!   forming, a fetch over the existing connection (a second chart session) confirms it;
//! - a reconnect: the gap fill (the replayed series' history from `last_closed`) delivers every
//!   bar that closed while the connection was down, in order, between
//!   [`LiveEvent::Disconnected`] and [`LiveEvent::Reconnected`].
//!
//! A value for a bar already delivered that differs from what was delivered is a
//! [`LiveEvent::Revised`]; an equal one is dropped. The stream's own `Closed` for a bar a fetch
//! already confirmed is dropped even if it differs: it carries the last `du` seen before the
//! fetch, never newer values.

use std::{
    collections::VecDeque,
    time::{Duration, Instant},
};

use super::{
    ConnectFailure, LiveEvent, Seis,
    command::Reply,
    fetch::{FetchConfig, Fetcher, GraceConfig, Need, Plan, SLACK_BARS, fetch_chart},
    stats::EngineCounters,
};
use crate::{
    AuthToken, Bar, Error, History, TransportError,
    det::DetHashMap,
    error::Phase,
    history::batch::{BatchConfig, BatchRequest, HistBatch},
    protocol::{
        ChartConfig, ChartEvent, ChartId, Connection, ConnectionConfig, Event, SeriesEvent,
        SeriesKey, SeriesRequest, SymbolSpec,
    },
    sync::{Arc, plain},
    timer::TimerWheel,
};

/// How many delivered closed bars per seis are kept to recognise revisions.
const RECENT: usize = 64;
/// How many of them a replay after a reconnect reads again, to catch revisions made while the
/// connection was down.
const REREAD: usize = 16;
/// Bars asked when subscribing: the last closed one is the baseline (not delivered).
const BASELINE_BARS: u32 = 2;
/// A connection that stayed up this long resets the reconnect backoff.
const STABLE_AFTER: Duration = Duration::from_secs(5);
/// How many fetches a minute may race the stream by default: a 30-seis watchlist of
/// 1-minute bars races every close, a 1,000-seis one about one close in eight (the others are
/// closed by their stream), so that racing never costs TradingView more than this a minute
/// per feed.
pub(crate) const DEFAULT_RACE_PER_MINUTE: u32 = 120;

/// A failed confirmation fetch is retried after this.
const FETCH_RETRY: Duration = Duration::from_secs(1);

/// The engine's settings (the public builder fills them).
#[derive(Debug, Clone)]
pub(crate) struct CoreConfig {
    pub(crate) token: AuthToken,
    /// After a bar's close time, the least a seis waits for the stream to show the next bar
    /// before a fetch confirms the close (a quiet seis' grace).
    pub(crate) close_grace: Duration,
    /// The most it waits: a streaming seis' grace is learned between the two
    /// ([`Grace`](super::fetch::Grace)); equal to `close_grace`, it is fixed.
    pub(crate) close_grace_ceiling: Duration,
    /// Most fetches a minute that race the stream: at the floor whenever that beats it (see
    /// `LiveFeedBuilder::close_race_per_minute`). 0: no racing; `u32::MAX`: no limit.
    pub(crate) race_per_minute: u32,
    /// Silence after which the connection counts as stalled and is replaced.
    pub(crate) stall_timeout: Duration,
    /// Connect + TLS + upgrade must finish within this.
    pub(crate) connect_timeout: Duration,
    /// Reconnect backoff: full jitter in `0..=min(cap, base * 2^attempt)`.
    pub(crate) backoff_base: Duration,
    pub(crate) backoff_cap: Duration,
    /// Give up after this many failed attempts in one outage (`None`: never).
    pub(crate) max_reconnect_attempts: Option<u64>,
    /// Give up at the first failed attempt once an outage lasted this long (`None`: never).
    pub(crate) max_outage: Option<Duration>,
    /// Retry a server certificate that is not trusted (by default it ends the feed: a
    /// certificate does not become trusted by waiting).
    pub(crate) retry_certificate_errors: bool,
    /// Most closed bars one gap fill asks for.
    pub(crate) max_gap_bars: u32,
    /// Most fetches (close confirmations and gap fills) in flight on the connection; the rest
    /// wait in a FIFO, one entry per seis, and are dropped if the stream answers first.
    pub(crate) max_fetches: usize,
    /// The server keeps every symbol a chart session resolved until the session is deleted.
    /// The fetch chart session resolves each seis' symbol once, so its state is bounded by the
    /// seises; once it resolved more than this and twice the seises (seises came and went),
    /// it is replaced by a fresh one as soon as it is idle.
    pub(crate) rotate_chart_after: u64,
    /// Seed of the jitter and of the session ids.
    pub(crate) seed: u64,
    pub(crate) max_frame_len: usize,
}

impl Default for CoreConfig {
    fn default() -> Self {
        Self {
            token: AuthToken::anonymous(),
            close_grace: Duration::ZERO,
            close_grace_ceiling: Duration::from_millis(250),
            race_per_minute: DEFAULT_RACE_PER_MINUTE,
            stall_timeout: Duration::from_secs(30),
            connect_timeout: Duration::from_secs(10),
            backoff_base: Duration::from_millis(250),
            backoff_cap: Duration::from_secs(30),
            max_reconnect_attempts: None,
            max_outage: None,
            retry_certificate_errors: false,
            max_gap_bars: 5_000,
            max_fetches: 64,
            rotate_chart_after: 256,
            seed: 0,
            max_frame_len: crate::protocol::frame::DEFAULT_MAX_FRAME_LEN,
        }
    }
}

/// A command's answer: an output of the core, like its deliveries and actions. The driver
/// hands it to the caller waiting for it ([`Answer::send`]) once the turn's writes went out;
/// the core itself never wakes a thread.
#[derive(Debug)]
pub(crate) enum Answer {
    /// `new_seis` (validated or refused) and `del_seis` (the server was told).
    Done(Reply<Result<(), Error>>, Result<(), Error>),
    /// `get_hist` (boxed: a history is large, and rare here).
    Hist(Reply<Result<History, Error>>, Box<Result<History, Error>>),
}

impl Answer {
    /// Wakes the caller with its result (if it still waits).
    pub(crate) fn send(self) {
        match self {
            Self::Done(r, v) => r.send(v),
            Self::Hist(r, v) => r.send(*v),
        }
    }
}

/// What the driver must do with the socket.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Action {
    /// Open a connection (resolve, connect, TLS, upgrade), then call
    /// [`Core::handle_connected`] or [`Core::handle_connect_failed`].
    Connect,
    /// Drop the current connection (stalled, bad frames, a connect timeout), then call
    /// [`Core::handle_closed`] with `cause`.
    Disconnect { cause: Error },
}

/// The state of the link to the server.
#[derive(Debug)]
enum Link {
    /// No connection; the next attempt is armed in the wheel.
    Down,
    /// The driver is connecting (`Action::Connect` was handed out).
    Connecting,
    /// Upgraded and talking.
    Up { since: Instant },
    /// No more connections: the token was rejected, a reconnect failed for a reason waiting
    /// cannot mend (an untrusted certificate, a 401), or the engine gave up
    /// ([`Error::GaveUp`]).
    Terminal(Error),
    /// Shut down.
    Closed,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Timer {
    /// The close time (plus grace) of the bar opening at `bar` passed.
    Close { seis: u64, bar: i64 },
    /// Retry a failed confirmation fetch.
    FetchRetry { seis: u64, bar: i64 },
    /// Retry a failed gap fetch.
    GapRetry { seis: u64 },
    /// Ask a live seis' main series again after a retryable failure (a load timeout).
    Reload { seis: u64 },
    /// Look for a bar newer than the last one closed, when nothing shows one (see
    /// `Core::after_quiet_answer`); stale unless `generation` is the seis' `check_gen`.
    Check { seis: u64, generation: u64 },
    /// Start the next connection attempt.
    Reconnect,
    /// Connection attempt `attempt` took too long.
    ConnectTimeout { attempt: u64 },
}

#[derive(Debug)]
enum SeisPhase {
    /// Subscribed, waiting for the server's first answer (history or refusal).
    Validating(Vec<Reply<Result<(), Error>>>),
    /// Streaming.
    Live,
    /// Refused or ended: nothing more.
    Failed(Error),
}

/// Where a disconnected seis stands in its gap fill.
#[derive(Debug, Clone, Copy)]
struct Gap {
    down_since: Instant,
}

#[derive(Debug)]
struct SeisState {
    seis: Arc<Seis>,
    phase: SeisPhase,
    last_closed: Option<Bar>,
    recent: VecDeque<Bar>,
    forming: Option<Bar>,
    gap: Option<Gap>,
    /// While a gap fetch is in flight after a reconnect whose replayed history did not reach
    /// back to `last_closed`: the main series' events, replayed in order once the gap is
    /// filled (so that nothing newer is delivered before the gap). Bounded by `HOLD_MAX`.
    hold: Option<VecDeque<SeriesEvent>>,
    /// Closed bars the gap fill delivered so far (for `Reconnected`).
    gap_bars: u64,
    /// During a reconnect: the first bar the replay must show (`REREAD` bars before the last
    /// delivered), so that a revision made while the connection was down is seen. A replay
    /// answered late (its window is a count from when it was sent) may start after it; then
    /// the gap fetch reaches back to it.
    reread: Option<i64>,
    /// The stream has shown this seis' bars (a market that trades, however thinly): when
    /// nothing is forming, it waits for the stream's next bar, with only a slow check.
    streamed: bool,
    /// Checks since the last one that found something (their delay doubles).
    empty_checks: u32,
    /// The generation of the armed `Timer::Check`; bumped when the stream shows a bar.
    check_gen: u64,
    /// Its main series failed to load in time and must be asked again (at `Timer::Reload`, or
    /// on the next connection if the link went down first).
    reload: bool,
    /// The parent of its log events (`seis{symbol, interval}`): created once, at subscribe,
    /// so that logging allocates nothing per event.
    span: tracing::Span,
}

/// Most main-series events held during one gap fetch; past it, updates are dropped (the
/// closes and revisions are kept).
const HOLD_MAX: usize = 4_096;

/// A `get_hist` over the live connection: a batch of one (the machinery of
/// `Client::get_hist_many`, paging and deadline included) on a chart session of its own,
/// deleted when it is answered, so the server keeps nothing of it.
#[derive(Debug)]
struct LiveHist {
    chart: ChartId,
    batch: HistBatch,
    reply: Option<Reply<Result<History, Error>>>,
}

/// The engine core. See the module docs.
#[derive(Debug)]
pub(crate) struct Core {
    cfg: CoreConfig,
    epoch: Instant,
    conn: Connection,
    main: ChartId,
    /// Close confirmations and gap fills: their chart session, queue and states.
    fetcher: Fetcher,
    link: Link,
    /// Connection attempts since the last stable connection.
    attempt: u64,
    /// Attempts ever (to tell a stale connect timeout).
    attempts_total: u64,
    /// Attempts started since the connection was last up (the number a failure reports).
    outage_attempts: u64,
    /// When the connection went down (`None` while up, and before the first connection).
    down_since: Option<Instant>,
    /// The engine's statistics, published here where each event happens (the link up or
    /// down, a failed attempt, a bad message, a fetch started or ended; see
    /// [`EngineCounters`]).
    stats: plain::Arc<EngineCounters>,
    /// The connection has been up at least once (so a drop is a `Disconnected`).
    was_up: bool,
    seises: DetHashMap<u64, SeisState>,
    timers: TimerWheel<Timer>,
    deliveries: VecDeque<(u64, LiveEvent)>,
    actions: VecDeque<Action>,
    /// `get_hist` calls in progress (each blocks its caller, so few).
    hists: Vec<LiveHist>,
    rng: u64,
    /// Timers due, reused across calls.
    due: Vec<Timer>,
    /// Unsubscriptions to answer once this turn's writes went out.
    acks: Vec<Reply<Result<(), Error>>>,
    /// Answers to commands, for the driver ([`Core::poll_answer`]).
    answers: VecDeque<Answer>,
    /// The last wall-clock time seen, in milliseconds.
    unix_ms: i64,
    /// The wall-clock time the charts were last replayed onto a new connection (ms).
    replayed_at: i64,
    /// A 429's `Retry-After`, applied to the next backoff.
    retry_after: Option<Duration>,
}

fn new_connection(now: Instant, cfg: &CoreConfig, seed: u64) -> (Connection, ChartId, ChartId) {
    let mut conn = Connection::new(
        now,
        ConnectionConfig::default()
            .with_auth_token(cfg.token.clone())
            .with_idle_timeout(cfg.stall_timeout)
            .with_max_frame_len(cfg.max_frame_len)
            .with_id_seed(seed),
    );
    let main = conn.add_chart(
        now,
        ChartConfig::default()
            .with_max_gap_bars(cfg.max_gap_bars)
            .with_load_timeout(cfg.stall_timeout.max(Duration::from_secs(10))),
    );
    let fetch = conn.add_chart(now, fetch_chart());
    (conn, main, fetch)
}

/// The chart session of one `get_hist` (its batch has the request's deadline).
fn hist_chart() -> ChartConfig {
    ChartConfig::default().with_load_timeout(Duration::from_secs(3_600))
}

/// Whether a failed reconnect ends the feed instead of being retried: waiting does not mend
/// a rejected token, a 401, or (unless `retry_certificates`) a certificate that is not trusted
/// (a server restarted with a new certificate, or a man in the middle).
fn final_on_reconnect(cause: &Error, retry_certificates: bool) -> bool {
    match cause {
        Error::AuthRejected => true,
        Error::Transport(TransportError::UpgradeRefused { status: 401, .. }) => true,
        Error::Transport(TransportError::CertificateNotTrusted { .. }) => !retry_certificates,
        _ => false,
    }
}

fn ms_of(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

impl Core {
    /// A core starting at `now`, disconnected, with its first connection attempt due at once.
    pub(crate) fn new(now: Instant, unix_ms: i64, cfg: CoreConfig) -> Self {
        let (conn, main, fetch) = new_connection(now, &cfg, cfg.seed);
        let mut timers = TimerWheel::new(0);
        timers.insert(0, Timer::Reconnect);
        let stats = plain::Arc::new(EngineCounters::default());
        let fetcher = Fetcher::new(
            FetchConfig {
                max_fetches: cfg.max_fetches.max(1),
                race_per_minute: cfg.race_per_minute,
                rotate_after: cfg.rotate_chart_after,
                grace: GraceConfig {
                    floor: cfg.close_grace,
                    ceiling: cfg.close_grace_ceiling.max(cfg.close_grace),
                    race: cfg.race_per_minute > 0,
                },
            },
            fetch,
            plain::Arc::clone(&stats),
        );
        Self {
            rng: cfg.seed | 1,
            cfg,
            epoch: now,
            conn,
            main,
            fetcher,
            link: Link::Down,
            attempt: 0,
            attempts_total: 0,
            outage_attempts: 0,
            down_since: None,
            stats,
            was_up: false,
            seises: DetHashMap::default(),
            timers,
            deliveries: VecDeque::new(),
            actions: VecDeque::new(),
            hists: Vec::new(),
            due: Vec::new(),
            acks: Vec::new(),
            answers: VecDeque::new(),
            unix_ms,
            replayed_at: 0,
            retry_after: None,
        }
    }

    /// The statistics this core publishes, to share with the feed's handles.
    pub(crate) fn stats(&self) -> plain::Arc<EngineCounters> {
        plain::Arc::clone(&self.stats)
    }

    /// Moves the link to `link`, and publishes whether it is up.
    fn set_link(&mut self, link: Link) {
        self.stats.set_connected(matches!(link, Link::Up { .. }));
        self.link = link;
    }

    fn ms(&self, t: Instant) -> u64 {
        ms_of(t.saturating_duration_since(self.epoch))
    }

    fn arm(&mut self, now: Instant, after: Duration, t: Timer) {
        let when = self.ms(now).saturating_add(ms_of(after));
        self.timers.insert(when, t);
    }

    /// A uniformly random duration in `0..=max` (xorshift64*; seeded, so tests replay).
    fn jitter(&mut self, max: Duration) -> Duration {
        self.rng ^= self.rng >> 12;
        self.rng ^= self.rng << 25;
        self.rng ^= self.rng >> 27;
        let r = self.rng.wrapping_mul(0x2545_f491_4f6c_dd1d);
        let max_ms = ms_of(max);
        Duration::from_millis(if max_ms == u64::MAX {
            r
        } else {
            r % (max_ms + 1)
        })
    }

    /// Fetches waiting for room (for the fuzz harness's bound check).
    #[cfg(any(test, fuzzing))]
    pub(crate) fn pending_fetches(&self) -> usize {
        self.fetcher.queued()
    }

    /// Fetches in flight (for stats and the simulation's bound check).
    #[cfg(test)]
    pub(crate) fn fetches_in_flight(&self) -> usize {
        self.fetcher.in_flight()
    }

    /// Fetches asked since the start, and confirmations the stream made useless (cancelled).
    #[cfg(test)]
    pub(crate) fn fetch_counts(&self) -> (u64, u64) {
        (self.fetcher.asked, self.fetcher.cancelled)
    }

    /// (bars whose close raced the stream, races the budget refused).
    #[cfg(test)]
    pub(crate) fn race_counts(&self) -> (u64, u64) {
        let (_, raced, refused) = self.stats.fetch_counts();
        (raced, refused)
    }

    /// The number of the connection attempt in progress or last made (1 for the first): the
    /// generation of the connection, in logs.
    pub(crate) fn generation(&self) -> u64 {
        self.attempts_total
    }

    /// Whether a connection is up.
    pub(crate) fn is_up(&self) -> bool {
        matches!(self.link, Link::Up { .. })
    }

    /// A subscribed seis.
    pub(crate) fn seis(&self, id: u64) -> Option<&Arc<Seis>> {
        self.seises.get(&id).map(|s| &s.seis)
    }

    fn closed_error(&self) -> Option<Error> {
        match &self.link {
            Link::Terminal(e) => Some(e.clone()),
            Link::Closed => Some(Error::Shutdown),
            _ => None,
        }
    }

    // ------------------------------------------------------------------ commands

    /// Subscribes `seis` (idempotent): its series is opened on the main chart session, and
    /// `reply` gets `Ok` with the server's history or the server's refusal.
    pub(crate) fn subscribe(
        &mut self,
        now: Instant,
        seis: Arc<Seis>,
        reply: Reply<Result<(), Error>>,
    ) {
        if let Some(e) = self.closed_error() {
            return self.answers.push_back(Answer::Done(reply, Err(e)));
        }
        let id = seis.id().get();
        if let Some(st) = self.seises.get_mut(&id) {
            match &mut st.phase {
                SeisPhase::Validating(waiters) => waiters.push(reply),
                SeisPhase::Live => self.answers.push_back(Answer::Done(reply, Ok(()))),
                SeisPhase::Failed(e) => {
                    self.answers.push_back(Answer::Done(reply, Err(e.clone())));
                }
            }
            return;
        }
        let seis_log = Arc::clone(&seis);
        let req = SeriesRequest::count(seis.symbol().clone(), seis.interval(), BASELINE_BARS);
        let added = self
            .conn
            .chart_mut(self.main)
            .map(|c| c.add_series(now, SeriesKey(id), req));
        if let Some(Err(e)) = added {
            tracing::warn!(parent: &seis_span(&seis), error = %e, "subscription refused locally");
            return self.answers.push_back(Answer::Done(
                reply,
                Err(Error::InvalidRequest(e.to_string())),
            ));
        }
        let span = seis_span(&seis_log);
        tracing::debug!(parent: &span, generation = self.attempts_total, "subscribing");
        let spec = SymbolSpec::new(seis.symbol().clone());
        self.seises.insert(
            id,
            SeisState {
                seis,
                phase: SeisPhase::Validating(vec![reply]),
                last_closed: None,
                // Its working size at once: growing it on a later close would allocate on the
                // live path.
                recent: VecDeque::with_capacity(RECENT),
                forming: None,
                gap: None,
                reread: None,
                streamed: false,
                empty_checks: 0,
                check_gen: 0,
                reload: false,
                hold: None,
                gap_bars: 0,
                span,
            },
        );
        self.fetcher.add_seis(id, spec);
    }

    /// Removes the subscription of seis `id`: `remove_series` goes out, waiters get an error,
    /// and nothing of it is delivered any more.
    pub(crate) fn unsubscribe(&mut self, id: u64, reply: Reply<Result<(), Error>>) {
        if let Some(st) = self.seises.remove(&id) {
            tracing::info!(parent: &st.span, "unsubscribed");
            if let Some(c) = self.conn.chart_mut(self.main) {
                let _ = c.remove_series(SeriesKey(id));
            }
            self.fetcher.remove_seis(&mut self.conn, id);
            if let SeisPhase::Validating(waiters) = st.phase {
                let e = Error::InvalidRequest(format!(
                    "{} {} was removed while it was being subscribed",
                    st.seis.symbol(),
                    st.seis.interval()
                ));
                for w in waiters {
                    self.answers.push_back(Answer::Done(w, Err(e.clone())));
                }
            }
            self.deliveries.retain(|(s, _)| *s != id);
        }
        // Answered after the driver's next writes, so that the server was told when the caller
        // learns it (see `complete_acks`).
        self.acks.push(reply);
    }

    /// Answers the unsubscriptions whose `remove_series` the driver has now written (or that
    /// had nothing to write: no connection, the server forgot them): they join the answers.
    pub(crate) fn complete_acks(&mut self) {
        self.answers
            .extend(self.acks.drain(..).map(|a| Answer::Done(a, Ok(()))));
    }

    /// The next answer to a command, for the driver to hand to its caller
    /// ([`Answer::send`]). Drained after the turn's writes (and after `complete_acks`).
    pub(crate) fn poll_answer(&mut self) -> Option<Answer> {
        self.answers.pop_front()
    }

    /// Downloads history over the live connection, on a chart session of its own; `reply`
    /// gets the history, the server's refusal, or a timeout `timeout` after its series opened.
    pub(crate) fn get_hist(
        &mut self,
        now: Instant,
        request: BatchRequest,
        timeout: Duration,
        reply: Reply<Result<History, Error>>,
    ) {
        if let Some(e) = self.closed_error() {
            return self
                .answers
                .push_back(Answer::Hist(reply, Box::new(Err(e))));
        }
        let chart = self.conn.add_chart(now, hist_chart());
        let batch = HistBatch::new(
            &mut self.conn,
            chart,
            now,
            vec![request],
            BatchConfig {
                max_in_flight: 1,
                request_timeout: timeout,
                progress: false,
            },
        );
        self.hists.push(LiveHist {
            chart,
            batch,
            reply: Some(reply),
        });
        self.finish_hists();
    }

    /// Answers the `get_hist` calls whose batch has a result, and deletes their chart
    /// sessions.
    fn finish_hists(&mut self) {
        let (conn, answers) = (&mut self.conn, &mut self.answers);
        self.hists.retain_mut(|h| {
            while let Some((_, result)) = h.batch.poll_result() {
                if let Some(r) = h.reply.take() {
                    answers.push_back(Answer::Hist(r, Box::new(result)));
                }
            }
            if h.batch.is_finished() {
                conn.remove_chart(h.chart);
                false
            } else {
                true
            }
        });
    }

    /// Every `get_hist` in progress fails with `e` (the feed ended).
    fn fail_hists(&mut self, e: &Error) {
        for mut h in self.hists.drain(..) {
            h.batch.handle_connection_lost(e);
            while let Some((_, result)) = h.batch.poll_result() {
                if let Some(r) = h.reply.take() {
                    self.answers.push_back(Answer::Hist(r, Box::new(result)));
                }
            }
            self.conn.remove_chart(h.chart);
        }
    }

    /// Ends everything: waiters get [`Error::Shutdown`], no more connections are made.
    pub(crate) fn shutdown(&mut self) {
        self.set_link(Link::Closed);
        for st in self.seises.values_mut() {
            if let SeisPhase::Validating(waiters) =
                std::mem::replace(&mut st.phase, SeisPhase::Failed(Error::Shutdown))
            {
                for w in waiters {
                    self.answers
                        .push_back(Answer::Done(w, Err(Error::Shutdown)));
                }
            }
        }
        self.fail_hists(&Error::Shutdown);
    }

    // ------------------------------------------------------------------ the link

    /// The driver's connection attempt succeeded (upgraded) at `now` (wall clock `unix_ms`):
    /// replay every chart session onto it, the seises with a gap window from the last bar
    /// they delivered. The wall clock is taken here, not the last one seen: a connect that
    /// took seconds after the last timer would otherwise date the replay (and so decide which
    /// bars closed before it) seconds too early.
    pub(crate) fn handle_connected(&mut self, now: Instant, unix_ms: i64) {
        if !matches!(self.link, Link::Connecting) {
            return;
        }
        self.unix_ms = unix_ms;
        self.set_link(Link::Up { since: now });
        self.was_up = true;
        self.outage_attempts = 0;
        self.down_since = None;
        self.conn.reset(now);
        // The token itself never: only whether there is one.
        tracing::debug!(
            authenticated = !self.cfg.token.is_anonymous(),
            "auth token and locale queued"
        );
        tracing::info!(
            attempt = self.attempt,
            seises = self.seises.len(),
            "connected; replaying the subscriptions"
        );
        self.replayed_at = self.unix_ms;
        let unix_s = self.unix_ms.div_euclid(1000);
        // The replay reaches back `REREAD` bars before the last one delivered: the server may
        // have revised one of them while we were away (or while its messages were lost).
        let seen: DetHashMap<u64, i64> = self
            .seises
            .iter()
            .filter_map(|(id, st)| {
                let back = st.recent.len().saturating_sub(REREAD);
                let t = st
                    .recent
                    .get(back)
                    .map(|b| b.time)
                    .or(st.last_closed.map(|b| b.time))?;
                Some((*id, t))
            })
            .collect();
        if let Some(c) = self.conn.chart_mut(self.main) {
            c.resubscribe(now, unix_s, |k| seen.get(&k.0).copied());
        }
        for (id, st) in &mut self.seises {
            st.reread = seen.get(id).copied();
        }
        // A series whose load timed out is not replayed with the others (failed series are
        // not): asked again here, never left behind.
        let reloads: Vec<(u64, Option<i64>)> = self
            .seises
            .iter_mut()
            .filter(|(_, st)| st.reload && matches!(st.phase, SeisPhase::Live))
            .map(|(id, st)| {
                st.reload = false;
                (*id, st.reread.or(st.last_closed.map(|b| b.time)))
            })
            .collect();
        if let Some(c) = self.conn.chart_mut(self.main) {
            for (id, last) in reloads {
                c.reload(now, SeriesKey(id), last, unix_s);
            }
        }
        // Fetches in flight are dropped: the gap fill covers their bars. Events held for a
        // gap fetch are dropped too: the replay starts over from `last_closed`.
        self.fetcher.clear();
        for st in self.seises.values_mut() {
            st.hold = None;
        }
        if let Some(c) = self.conn.chart_mut(self.fetcher.chart()) {
            c.clear();
            c.resubscribe(now, unix_s, |_| None);
        }
        // A `get_hist` asks again from the start; its deadline keeps running.
        for h in &self.hists {
            if let Some(c) = self.conn.chart_mut(h.chart) {
                c.resubscribe(now, unix_s, |_| None);
            }
        }
    }

    /// The driver's connection attempt failed with `cause`.
    pub(crate) fn handle_connect_failed(&mut self, now: Instant, unix_ms: i64, cause: Error) {
        if !matches!(self.link, Link::Connecting) {
            return;
        }
        self.unix_ms = unix_ms;
        self.attempt_failed(now, cause);
    }

    /// The connection (or the attempt) ended with `cause`: tell the consumers, reconnect with
    /// backoff.
    pub(crate) fn handle_closed(&mut self, now: Instant, unix_ms: i64, cause: Error) {
        self.unix_ms = unix_ms;
        match self.link {
            Link::Up { since } => {
                let up = now.saturating_duration_since(since);
                tracing::warn!(cause = %cause, up_ms = ms_of(up), "disconnected");
                if up >= STABLE_AFTER {
                    self.attempt = 0;
                }
                self.stats.record_reconnect();
                self.down_since = Some(now);
                self.set_link(Link::Down);
                self.notify_down(now, &cause);
                self.schedule_reconnect(now, self.cfg.max_outage);
            }
            Link::Connecting => self.attempt_failed(now, cause),
            Link::Down | Link::Terminal(_) | Link::Closed => {}
        }
    }

    /// Connection attempt `outage_attempts` failed with `cause`: the next one is armed, or, when
    /// the cause is final or the limits are reached, every seis ends. Either way the failure is
    /// recorded for [`ConnectionStatus`](super::ConnectionStatus).
    fn attempt_failed(&mut self, now: Instant, cause: Error) {
        if let Error::RateLimited {
            retry_after: Some(d),
            ..
        } = cause
        {
            self.retry_after = Some(d);
        }
        self.set_link(Link::Down);
        self.notify_down(now, &cause);
        let attempt = self.outage_attempts;
        let down = self
            .down_since
            .map(|t| now.saturating_duration_since(t))
            .unwrap_or_default();
        // Only once the connection was up: a first attempt's failure is `build`'s error.
        let end = if !self.was_up {
            None
        } else if final_on_reconnect(&cause, self.cfg.retry_certificate_errors) {
            Some(cause.clone())
        } else if self
            .cfg
            .max_reconnect_attempts
            .is_some_and(|n| attempt >= n)
            || self.cfg.max_outage.is_some_and(|d| down >= d)
        {
            Some(Error::GaveUp {
                attempts: attempt,
                down,
                last: Box::new(cause.clone()),
            })
        } else {
            None
        };
        let retry_in = match end {
            Some(e) => {
                tracing::error!(attempt, error = %e, "reconnecting stopped; every seis ends");
                self.terminal(e);
                None
            }
            None => {
                // The last attempt comes at the outage limit, not a backoff past it.
                let left = self.cfg.max_outage.map(|d| d.saturating_sub(down));
                let delay = self.schedule_reconnect(now, left);
                tracing::warn!(attempt, error = %cause, retry_in = ?delay, "connection attempt failed");
                Some(delay)
            }
        };
        self.stats.record_failure(ConnectFailure {
            attempt,
            error: cause,
            retry_in,
            at_unix_ms: self.unix_ms,
        });
    }

    /// Tells every live seis that the connection is gone (once per outage).
    fn notify_down(&mut self, now: Instant, cause: &Error) {
        if !self.was_up {
            return; // never connected: subscriptions simply wait
        }
        let text = cause.to_string();
        for (id, st) in &mut self.seises {
            if matches!(st.phase, SeisPhase::Live) && st.gap.is_none() {
                st.gap = Some(Gap { down_since: now });
                st.gap_bars = 0;
                self.deliveries.push_back((
                    *id,
                    LiveEvent::Disconnected {
                        cause: text.clone(),
                    },
                ));
            }
        }
    }

    /// Arms the next attempt, at most `cap` from now; returns how long until it starts.
    fn schedule_reconnect(&mut self, now: Instant, cap: Option<Duration>) -> Duration {
        let exp = self
            .cfg
            .backoff_base
            .saturating_mul(1 << self.attempt.min(20))
            .min(self.cfg.backoff_cap);
        let mut delay = self.jitter(exp);
        if let Some(d) = self.retry_after.take() {
            delay = delay.max(d);
        }
        if let Some(cap) = cap {
            delay = delay.min(cap);
        }
        self.attempt += 1;
        tracing::info!(
            attempt = self.attempt,
            backoff_ms = ms_of(delay),
            "reconnect attempt scheduled"
        );
        self.arm(now, delay, Timer::Reconnect);
        delay
    }

    // ------------------------------------------------------------------ inputs

    /// One websocket message received at `now` (wall clock `unix_ms`).
    pub(crate) fn handle_message(&mut self, now: Instant, unix_ms: i64, msg: &mut [u8]) {
        self.unix_ms = unix_ms;
        if !self.is_up() {
            return;
        }
        if let Err(e) = self.conn.handle_message(now, msg) {
            self.stats.record_bad_message();
            if e.is_fatal() {
                // The byte stream cannot be trusted (an absurd length, a broken frame): drop
                // the connection and start over, never allocate what it claims.
                self.actions.push_back(Action::Disconnect {
                    cause: Error::Protocol(format!("bad frame from the server: {e}")),
                });
            }
        }
        self.process_events(now);
    }

    /// Fires what is due at `now` (wall clock `unix_ms`).
    pub(crate) fn handle_timeout(&mut self, now: Instant, unix_ms: i64) {
        self.unix_ms = unix_ms;
        if self.is_up() && self.conn.poll_timeout().is_some_and(|t| t <= now) {
            self.conn.handle_timeout(now);
            self.process_events(now);
        }
        for h in &mut self.hists {
            if h.batch.poll_timeout().is_some_and(|t| t <= now) {
                h.batch.handle_timeout(&mut self.conn, now);
            }
        }
        self.finish_hists();
        let now_ms = self.ms(now);
        let mut due = std::mem::take(&mut self.due);
        due.extend(self.timers.advance(now_ms).map(|(_, t)| t));
        for t in due.drain(..) {
            match t {
                Timer::Reconnect => {
                    if matches!(self.link, Link::Down) {
                        self.set_link(Link::Connecting);
                        self.attempts_total += 1;
                        self.outage_attempts += 1;
                        tracing::info!(
                            attempt = self.outage_attempts,
                            generation = self.attempts_total,
                            "connecting"
                        );
                        self.actions.push_back(Action::Connect);
                        let attempt = self.attempts_total;
                        self.arm(
                            now,
                            self.cfg.connect_timeout,
                            Timer::ConnectTimeout { attempt },
                        );
                    }
                }
                Timer::ConnectTimeout { attempt } => {
                    if let Link::Connecting = self.link
                        && attempt == self.attempts_total
                    {
                        self.actions.push_back(Action::Disconnect {
                            cause: Error::Timeout {
                                after: self.cfg.connect_timeout,
                                during: Phase::Connect,
                            },
                        });
                    }
                }
                Timer::Close { seis, bar } | Timer::FetchRetry { seis, bar } => {
                    self.close_due(now, seis, bar);
                }
                Timer::Check { seis, generation } => {
                    let due = self
                        .seises
                        .get(&seis)
                        .filter(|st| st.check_gen == generation && st.forming.is_none())
                        .and_then(|st| st.last_closed)
                        .map(|b| st_next(self.seises.get(&seis), b.time));
                    if let Some(Some(next)) = due {
                        self.close_due(now, seis, next);
                    }
                }
                Timer::Reload { seis } => {
                    let unix_s = self.unix_ms.div_euclid(1000);
                    let up = self.is_up();
                    let last = self
                        .seises
                        .get_mut(&seis)
                        .filter(|st| st.reload && matches!(st.phase, SeisPhase::Live) && up)
                        .map(|st| {
                            st.reload = false;
                            st.reread.or(st.last_closed.map(|b| b.time))
                        });
                    if let Some(last) = last
                        && let Some(c) = self.conn.chart_mut(self.main)
                    {
                        c.reload(now, SeriesKey(seis), last, unix_s);
                    }
                }
                Timer::GapRetry { seis } => {
                    let anchor = self
                        .seises
                        .get(&seis)
                        .filter(|st| st.hold.is_some())
                        .and_then(|st| st.last_closed)
                        .map(|b| b.time);
                    if let Some(t) = anchor
                        && self.is_up()
                    {
                        self.fetcher.want(seis, gap_need(t));
                    }
                }
            }
        }
        self.due = due;
        if self.is_up() {
            self.process_events(now);
        }
    }

    /// The close time (plus grace) of bar `bar` of seis `id` passed: if the stream has not
    /// closed it, it needs a confirmation (queued, merged, or kept as the follow-up of the
    /// fetch in flight: never dropped).
    ///
    /// A timer that fires before the wall clock shows the bar closed waits for it: timers run
    /// on the monotonic clock, and a deadline worked out from two clocks read apart, each
    /// truncated to the millisecond, can come up to a millisecond before the wall-clock close.
    /// With a grace of 0 that would ask the fetch before the close, and an answer whose newest
    /// bar is the one that just ended (no trade since) would not show it closed: the race
    /// would be lost to the stream.
    fn close_due(&mut self, now: Instant, id: u64, bar: i64) {
        if !self.is_up() {
            return; // the gap fill after the reconnect covers it
        }
        let Some(st) = self.seises.get(&id) else {
            return;
        };
        if !matches!(st.phase, SeisPhase::Live) || st.last_closed.is_some_and(|b| b.time >= bar) {
            return;
        }
        let close_ms = st.seis.interval().next_bar_open(bar).saturating_mul(1000);
        if self.unix_ms < close_ms {
            let early = u64::try_from(close_ms.saturating_sub(self.unix_ms)).unwrap_or(u64::MAX);
            self.arm(
                now,
                Duration::from_millis(early),
                Timer::Close { seis: id, bar },
            );
            return;
        }
        self.fetcher.want(
            id,
            Need {
                upto: bar,
                gap: false,
                wide: false,
            },
        );
    }

    /// Starts the fetches there is room for, each planned on the seis' state of this moment:
    /// a confirmation the stream made useless is dropped; a gap fill asks from the last bar
    /// delivered; a confirmation asks from it to now plus a little slack.
    fn pump(&mut self, now: Instant) {
        if !self.is_up() {
            return;
        }
        let unix_ms = self.unix_ms;
        let unix_s = unix_ms.div_euclid(1000);
        let max_gap_bars = self.cfg.max_gap_bars;
        let seises = &self.seises;
        let main_loading = self.conn.chart(self.main).is_some_and(|c| c.loading() > 0);
        self.fetcher
            .pump(&mut self.conn, now, unix_ms, main_loading, |id, need| {
                let st = seises.get(&id)?;
                if !matches!(st.phase, SeisPhase::Live) {
                    return None;
                }
                let anchor = if need.gap {
                    st.hold.as_ref()?;
                    let last = st.last_closed?.time;
                    st.reread.map_or(last, |r| r.min(last))
                } else {
                    if st.last_closed.is_some_and(|l| l.time >= need.upto) {
                        return None;
                    }
                    st.last_closed.map_or(need.upto, |b| b.time)
                };
                let interval = st.seis.interval();
                let count = fetch_count(interval, anchor, unix_s, need.wide, max_gap_bars);
                Some(Plan {
                    span: st.span.clone(),
                    request: SeriesRequest::range(
                        st.seis.symbol().clone(),
                        interval,
                        anchor,
                        unix_s.saturating_add(86_400),
                        count,
                    ),
                    anchor,
                    need,
                })
            });
    }

    // ------------------------------------------------------------------ outputs

    /// The next instant [`Core::handle_timeout`] has work.
    pub(crate) fn poll_timeout(&self) -> Option<Instant> {
        let wheel = self
            .timers
            .next_deadline()
            .and_then(|ms| self.epoch.checked_add(Duration::from_millis(ms)));
        let conn = if self.is_up() {
            self.conn.poll_timeout()
        } else {
            None
        };
        let hists = self
            .hists
            .iter()
            .filter_map(|h| h.batch.poll_timeout())
            .min();
        [wheel, conn, hists].into_iter().flatten().min()
    }

    /// The next websocket message to send (only while a connection is up).
    pub(crate) fn poll_transmit(&mut self) -> Option<Vec<u8>> {
        if self.is_up() {
            self.conn.poll_transmit()
        } else {
            None
        }
    }

    /// The next thing the driver must do with the socket.
    pub(crate) fn poll_action(&mut self) -> Option<Action> {
        self.actions.pop_front()
    }

    /// The next event for the consumers of seis `id`.
    pub(crate) fn poll_delivery(&mut self) -> Option<(u64, LiveEvent)> {
        self.deliveries.pop_front()
    }

    // ------------------------------------------------------------------ events

    fn process_events(&mut self, now: Instant) {
        self.process_events_inner(now);
        self.finish_hists();
        self.pump(now);
    }

    fn process_events_inner(&mut self, now: Instant) {
        while let Some(e) = self.conn.poll_event() {
            if let Event::Chart { chart, .. } = &e
                && let Some(h) = self.hists.iter_mut().find(|h| h.chart == *chart)
            {
                // What the batch hands back (a chart-level `critical_error`) fails nothing
                // else: the request meets its own deadline.
                if let Some(other) = h.batch.handle_event(&mut self.conn, now, e) {
                    tracing::debug!(event = ?other, "get_hist chart event ignored");
                }
                continue;
            }
            match e {
                Event::ProtocolError { text } if text == "bad auth token" => {
                    tracing::error!("the server rejected the auth token; no more connections");
                    self.terminal(Error::AuthRejected);
                }
                Event::ProtocolError { text } => self.actions.push_back(Action::Disconnect {
                    cause: Error::Protocol(format!(
                        "the server reported a protocol error: {}",
                        crate::error::echo(&text)
                    )),
                }),
                Event::Idle { silent } => self.actions.push_back(Action::Disconnect {
                    cause: Error::Timeout {
                        after: silent,
                        during: Phase::Answer,
                    },
                }),
                Event::Chart {
                    chart,
                    event: ChartEvent::Series { key, event },
                } => {
                    if chart == self.main {
                        self.on_main(now, key.0, event);
                    } else if chart == self.fetcher.chart() {
                        self.on_fetch(now, key.0, event);
                    }
                }
                _ => {}
            }
        }
    }

    /// No more connections (the token was rejected, or see [`Link::Terminal`]): every seis
    /// fails.
    fn terminal(&mut self, e: Error) {
        self.set_link(Link::Terminal(e.clone()));
        self.actions
            .push_back(Action::Disconnect { cause: e.clone() });
        for (id, st) in &mut self.seises {
            match std::mem::replace(&mut st.phase, SeisPhase::Failed(e.clone())) {
                SeisPhase::Validating(waiters) => {
                    for w in waiters {
                        self.answers.push_back(Answer::Done(w, Err(e.clone())));
                    }
                }
                SeisPhase::Live => self
                    .deliveries
                    .push_back((*id, LiveEvent::Failed(e.clone()))),
                SeisPhase::Failed(_) => {}
            }
        }
        self.fail_hists(&e);
    }

    /// An event of seis `id`'s main series: held while a gap fetch is in flight; a replayed
    /// history that does not reach back to the last bar delivered starts that fetch.
    fn on_main(&mut self, now: Instant, id: u64, event: SeriesEvent) {
        let Some(st) = self.seises.get_mut(&id) else {
            return;
        };
        if let Some(hold) = st.hold.as_mut() {
            if hold.len() < HOLD_MAX || !matches!(event, SeriesEvent::Update(_)) {
                hold.push_back(event);
            }
            return;
        }
        if let SeriesEvent::History { bars, .. } = &event
            && st.gap.is_some()
            && let Some(last) = st.last_closed
            && bars
                .first()
                .is_none_or(|b| b.time > st.reread.unwrap_or(last.time).min(last.time))
        {
            // The replayed window (a count of bars) does not reach back to the bars it must
            // read again: a slow answer shifted it, or the gap is longer. Fill the gap (and
            // read those again, for revisions made meanwhile) from an anchored fetch first,
            // and hold the main series until then.
            st.hold = Some(VecDeque::from([event]));
            self.fetcher.want(id, gap_need(last.time));
            return;
        }
        self.apply_main(now, id, event);
    }

    fn apply_main(&mut self, now: Instant, id: u64, event: SeriesEvent) {
        let unix_ms = self.unix_ms;
        let replayed_at = self.replayed_at;
        let now_ms = self.ms(now);
        if matches!(event, SeriesEvent::History { .. }) && self.seises.contains_key(&id) {
            // Live on this connection: its fetches' symbol is resolved ahead.
            self.fetcher.prepare(id);
        }
        // Its grace is looked up only when a new bar arms a close timer, not per message.
        let fetcher = &self.fetcher;
        let Some(st) = self.seises.get_mut(&id) else {
            return;
        };
        let out = &mut self.deliveries;
        match event {
            SeriesEvent::History { bars, forming, .. } => {
                if let SeisPhase::Validating(waiters) =
                    std::mem::replace(&mut st.phase, SeisPhase::Live)
                {
                    tracing::info!(parent: &st.span, baseline_bars = bars.len(), "subscribed: the server validated it");
                    for w in waiters {
                        self.answers.push_back(Answer::Done(w, Ok(())));
                    }
                }
                if st.last_closed.is_none() {
                    // The baseline: the last bar that closed before the subscription.
                    if let Some(b) = bars.last() {
                        remember(st, *b);
                    }
                } else {
                    for b in bars {
                        offer_closed(st, out, id, b, true);
                    }
                }
                if let Some(f) = forming {
                    // The server's latest bar closed before the replay was asked: no trade
                    // since (else a newer bar would exist), so it is final and the gap fill
                    // delivers it. A bar closing after the request may still change: it is
                    // followed as forming.
                    let closed_before_request = st
                        .seis
                        .interval()
                        .next_bar_open(f.time)
                        .saturating_mul(1000)
                        <= replayed_at;
                    if st.gap.is_some() && closed_before_request {
                        offer_closed(st, out, id, f, true);
                    } else if let Some(t) = on_update(st, out, id, f, unix_ms, || {
                        fetcher.close_grace(id, false, unix_ms)
                    }) {
                        self.timers.insert(
                            now_ms.saturating_add(t),
                            Timer::Close {
                                seis: id,
                                bar: f.time,
                            },
                        );
                    }
                }
                if let Some(g) = st.gap.take() {
                    st.reread = None;
                    tracing::info!(
                        parent: &st.span,
                        gap_bars = st.gap_bars,
                        down_ms = ms_of(now.saturating_duration_since(g.down_since)),
                        "gap filled from the replayed history"
                    );
                    out.push_back((
                        id,
                        LiveEvent::Reconnected {
                            down: now.saturating_duration_since(g.down_since),
                            gap_bars: std::mem::take(&mut st.gap_bars),
                        },
                    ));
                }
                // Its forming bar closed before the replay: nothing forms now, and a seis the
                // stream does not show needs a check to see the next bar.
                if st.forming.is_none() {
                    self.after_quiet_answer(now, id, true);
                }
            }
            SeriesEvent::Update(b) if st.last_closed.is_some_and(|l| b.time <= l.time) => {
                // The stream still updating a bar a fetch already confirmed (the stream has not
                // shown the next bar yet): its values are older than the fetch's, asked after
                // the close; dropped like the stream's own close of it. A correction comes as
                // an update of an older bar once the stream moved on (`Late`).
            }
            SeriesEvent::Update(b) => {
                // A new bar that is not the next one after the last closed bar: the stream may
                // have skipped bars (a market session gap, or bars lost on the way). Before
                // anything newer closes, an anchored fetch delivers whatever is missing.
                let skipped = st
                    .last_closed
                    .is_some_and(|l| st.seis.interval().next_bar_open(l.time) < b.time)
                    && st.forming.map(|f| f.time) != Some(b.time);
                // The stream shows bars: a pending check is not needed.
                if st.forming.map(|f| f.time) != Some(b.time) {
                    st.streamed = true;
                    st.empty_checks = 0;
                    st.check_gen += 1;
                }
                if let Some(t) = on_update(st, out, id, b, unix_ms, || {
                    fetcher.close_grace(id, true, unix_ms)
                }) {
                    self.timers.insert(
                        now_ms.saturating_add(t),
                        Timer::Close {
                            seis: id,
                            bar: b.time,
                        },
                    );
                }
                if skipped && let Some(last) = st.last_closed {
                    st.hold = Some(VecDeque::new());
                    // A fetch in flight is anchored at or before `last`: its answer (if it
                    // reaches back to its anchor) fills the gap and releases the hold; else a
                    // new one does.
                    match self.fetcher.in_flight_mut(id) {
                        Some(f) => f.gap = true,
                        None => self.fetcher.want(id, gap_need(last.time)),
                    }
                }
            }
            SeriesEvent::Closed(b) => {
                offer_closed(st, out, id, b, false);
                // How late the stream closed it (its grace learns from it), and a confirmation
                // in flight for it is useless now: cancelled, its slot freed.
                let close_ms = st
                    .seis
                    .interval()
                    .next_bar_open(b.time)
                    .saturating_mul(1000);
                let len_ms = close_ms.saturating_sub(b.time.saturating_mul(1000));
                self.fetcher.observe_stream_close(
                    id,
                    b.time,
                    unix_ms.saturating_sub(close_ms),
                    len_ms,
                );
                let cancelled = self.fetcher.cancelled;
                self.fetcher.stream_closed(&mut self.conn, id, b.time);
                if self.fetcher.cancelled != cancelled {
                    tracing::debug!(parent: &st.span, bar = b.time, "fetch cancelled: the stream closed the bar first");
                }
            }
            SeriesEvent::Late(b) => revise(st, out, id, b),
            SeriesEvent::Failed(failure)
                if failure.is_retryable() && matches!(st.phase, SeisPhase::Live) =>
            {
                // A live seis' series timed out (a slow server, often after a reconnect): asked
                // again, never failed for good; its gap, if any, is filled by the answer.
                tracing::debug!(
                    parent: &st.span,
                    ?failure,
                    "main series load failed; asking again"
                );
                st.reload = true;
                self.timers.insert(
                    now_ms.saturating_add(ms_of(FETCH_RETRY)),
                    Timer::Reload { seis: id },
                );
            }
            SeriesEvent::Failed(failure) => {
                let e = Error::Series {
                    symbol: st.seis.symbol().clone(),
                    interval: st.seis.interval(),
                    failure,
                };
                tracing::warn!(parent: &st.span, error = %e, "refused by the server");
                match std::mem::replace(&mut st.phase, SeisPhase::Failed(e.clone())) {
                    SeisPhase::Validating(waiters) => {
                        for w in waiters {
                            self.answers.push_back(Answer::Done(w, Err(e.clone())));
                        }
                    }
                    SeisPhase::Live => out.push_back((id, LiveEvent::Failed(e))),
                    SeisPhase::Failed(_) => {}
                }
                if let Some(c) = self.conn.chart_mut(self.main) {
                    let _ = c.remove_series(SeriesKey(id));
                }
            }
            _ => {}
        }
    }

    /// A fetch answered and nothing is forming any more for seis `id` (its last bar closed,
    /// and no newer one exists yet): nothing will arm a close timer until a newer bar shows.
    ///
    /// It is checked at the next bar's close plus its grace, as if that bar were forming (the
    /// stream may have lost it, or a fetch closed this bar before the stream's next trade
    /// came), and again at each close while the checks find bars. While they find nothing:
    /// - a seis whose bars the stream never showed (its live updates are not sent, e.g. not
    ///   entitled) is checked at doubling intervals;
    /// - a seis the stream has shown (a thin market: no trade, no bar) waits for the stream's
    ///   next bar, with only a slow check (from 16 intervals or a minute on, doubling, at most
    ///   an hour apart).
    fn after_quiet_answer(&mut self, now: Instant, id: u64, found: bool) {
        let unix_ms = self.unix_ms;
        let Some(st) = self.seises.get_mut(&id) else {
            return;
        };
        if st.forming.is_some() || !matches!(st.phase, SeisPhase::Live) || st.hold.is_some() {
            return;
        }
        let Some(last) = st.last_closed else {
            return;
        };
        if found {
            st.empty_checks = 0;
        } else {
            st.empty_checks = st.empty_checks.saturating_add(1);
        }
        let interval = st.seis.interval();
        let len_ms = (interval.next_bar_open(last.time) - last.time).max(1) as u64 * 1000;
        // Something was found (or this is the first look): the next bar's close. Then, while
        // the checks find nothing, doubling from there (a seis the stream never showed), or
        // from the slow period (one the stream showed: it will show the next traded bar).
        let delay = match (st.empty_checks, st.streamed) {
            (0, _) => len_ms,
            (k, false) => len_ms.saturating_mul(1 << k.min(12)),
            (k, true) => (16 * len_ms)
                .max(60_000)
                .saturating_mul(1 << (k - 1).min(12)),
        }
        .min(len_ms.max(3_600_000));
        // At a bar's close plus the floor grace, so that the check sees that bar whole: the
        // close of the bar forming now (no check found nothing yet), or of one later.
        let now_s = unix_ms.div_euclid(1000);
        let later_s = (delay.saturating_sub(len_ms) / 1000) as i64;
        let target = interval.bar_open(now_s.saturating_add(later_s));
        let close_ms = interval.next_bar_open(target).saturating_mul(1000);
        let wait = u64::try_from(close_ms.saturating_sub(unix_ms)).unwrap_or(0)
            + ms_of(self.fetcher.grace(id, false));
        st.check_gen += 1;
        let generation = st.check_gen;
        self.arm(
            now,
            Duration::from_millis(wait),
            Timer::Check {
                seis: id,
                generation,
            },
        );
    }

    fn on_fetch(&mut self, now: Instant, key: u64, event: SeriesEvent) {
        let Some(f) = self.fetcher.get(key) else {
            return;
        };
        let id = f.seis;
        match event {
            SeriesEvent::History { bars, forming, .. } => {
                self.fetcher.end(&mut self.conn, key);
                self.fetcher
                    .observe_answer(self.unix_ms.saturating_sub(f.asked_at));
                if let Some(st) = self.seises.get(&id) {
                    tracing::debug!(
                        parent: &st.span,
                        bars = bars.len() + usize::from(forming.is_some()),
                        answer_ms = self.unix_ms.saturating_sub(f.asked_at),
                        gap = f.gap,
                        "fetch answered"
                    );
                }
                // The answer must show its anchor (the last bar delivered when it was asked):
                // a short window that a late answer filled from a later "now" may have a hole
                // after it. Nothing of it is delivered; the full window is asked instead.
                let first = bars.first().or(forming.as_ref()).map(|b| b.time);
                if !f.wide && first.is_none_or(|t| t > f.anchor) {
                    self.fetcher.want(
                        id,
                        Need {
                            upto: f.upto,
                            gap: f.gap,
                            wide: true,
                        },
                    );
                    self.pump(now);
                    return;
                }
                let unix_ms = self.unix_ms;
                let now_ms = self.ms(now);
                let fetcher = &self.fetcher;
                let mut held = None;
                // The newest bar this answer speaks of: events held for a gap fetch that speak
                // of it or older bars are older than this answer (one connection keeps its
                // messages in order), so they are dropped rather than taken as revisions.
                let newest = forming
                    .map(|b| b.time)
                    .or_else(|| bars.last().map(|b| b.time));
                let covered = newest.map(|n| f.anchor..=n);
                // The newest bar a fetch closed before the stream did.
                let mut fetched = None;
                if let Some(st) = self.seises.get_mut(&id) {
                    let out = &mut self.deliveries;
                    for b in bars {
                        if offer_closed(st, out, id, b, true) {
                            fetched = Some(b.time);
                        }
                    }
                    if let Some(fm) = forming {
                        // A bar that closed before the fetch was asked is final: no trade since
                        // (else a newer bar would exist).
                        let closed = st
                            .seis
                            .interval()
                            .next_bar_open(fm.time)
                            .saturating_mul(1000)
                            <= f.asked_at;
                        if closed {
                            if offer_closed(st, out, id, fm, true) {
                                fetched = Some(fm.time);
                            }
                        } else if let Some(t) = on_update(st, out, id, fm, unix_ms, || {
                            fetcher.close_grace(id, false, unix_ms)
                        }) {
                            self.timers.insert(
                                now_ms.saturating_add(t),
                                Timer::Close {
                                    seis: id,
                                    bar: fm.time,
                                },
                            );
                        }
                    }
                    if f.gap {
                        held = st.hold.take();
                    }
                }
                // A miss for its grace.
                if let Some(t) = fetched {
                    self.fetcher.observe_fetch_close(id, t);
                }
                self.after_quiet_answer(now, id, fetched.is_some());
                if let Some(held) = held {
                    // The gap is filled: replay what the main series said meanwhile, in order,
                    // without what this answer superseded; then the reconnect is complete.
                    for e in held {
                        if let Some(e) = not_superseded(e, covered.as_ref()) {
                            // `on_main`, not `apply_main`: a replayed event may start another
                            // hold, and what follows must wait for it too.
                            self.on_main(now, id, e);
                        }
                    }
                    if let Some(st) = self.seises.get_mut(&id)
                        && let Some(g) = st.gap.take()
                    {
                        st.reread = None;
                        tracing::info!(
                            parent: &st.span,
                            gap_bars = st.gap_bars,
                            down_ms = ms_of(now.saturating_duration_since(g.down_since)),
                            "gap filled by a fetch"
                        );
                        self.deliveries.push_back((
                            id,
                            LiveEvent::Reconnected {
                                down: now.saturating_duration_since(g.down_since),
                                gap_bars: std::mem::take(&mut st.gap_bars),
                            },
                        ));
                    }
                }
            }
            SeriesEvent::Failed(failure) => {
                self.fetcher.end(&mut self.conn, key);
                if let Some(st) = self.seises.get(&id) {
                    tracing::debug!(parent: &st.span, ?failure, gap = f.gap, "fetch failed; asking again");
                }
                let t = if f.gap {
                    Timer::GapRetry { seis: id }
                } else {
                    Timer::FetchRetry {
                        seis: id,
                        bar: f.upto,
                    }
                };
                self.arm(now, FETCH_RETRY, t);
            }
            _ => return,
        }
        self.pump(now);
    }
}

/// The parent span of a seis' log events.
fn seis_span(seis: &Seis) -> tracing::Span {
    tracing::info_span!(parent: None, "seis", symbol = %seis.symbol(), interval = %seis.interval())
}

/// The open time of the bar after `t` for seis `st`.
fn st_next(st: Option<&SeisState>, t: i64) -> Option<i64> {
    st.map(|st| st.seis.interval().next_bar_open(t))
}

/// A gap fill from the bar opening at `last` (delivered) on: the bars from it to now plus a
/// little slack (an answer that does not reach back is asked again with the full window).
fn gap_need(last: i64) -> Need {
    Need {
        upto: last,
        gap: true,
        wide: false,
    }
}

/// Bars a fetch from `anchor` asks at `unix_s`: the full `max_gap_bars` window when `wide`,
/// else those from the anchor to now plus [`SLACK_BARS`].
fn fetch_count(interval: crate::Interval, anchor: i64, unix_s: i64, wide: bool, max: u32) -> u32 {
    let cap = max.saturating_add(2);
    if wide {
        return cap;
    }
    let span = interval.bars_spanning(anchor, unix_s, u64::from(cap));
    u32::try_from(span.saturating_add(SLACK_BARS))
        .unwrap_or(u32::MAX)
        .min(cap)
}

/// A held main-series event without what a newer answer `covered` (the open times it spoke
/// of, from its anchor to its newest bar) superseded; `None` when nothing is left. Values of
/// bars outside that span (older than the anchor) are kept: the answer says nothing of them.
fn not_superseded(
    event: SeriesEvent,
    covered: Option<&std::ops::RangeInclusive<i64>>,
) -> Option<SeriesEvent> {
    let Some(c) = covered else {
        return Some(event);
    };
    match event {
        SeriesEvent::History {
            bars,
            forming,
            update_mode,
        } => Some(SeriesEvent::History {
            bars: bars.into_iter().filter(|b| !c.contains(&b.time)).collect(),
            forming: forming.filter(|b| !c.contains(&b.time)),
            update_mode,
        }),
        SeriesEvent::Update(b) | SeriesEvent::Closed(b) | SeriesEvent::Late(b)
            if c.contains(&b.time) =>
        {
            None
        }
        other => Some(other),
    }
}

/// Records `bar` as the last closed bar delivered.
fn remember(st: &mut SeisState, bar: Bar) {
    st.last_closed = Some(bar);
    if st.recent.len() == RECENT {
        st.recent.pop_front();
    }
    st.recent.push_back(bar);
}

/// Delivers `bar` as closed if it opens after the last closed bar; otherwise, when
/// `authoritative` (a fetch or a gap fill, not the stream's own close), checks it for a
/// revision. Returns whether it was delivered as closed.
fn offer_closed(
    st: &mut SeisState,
    out: &mut VecDeque<(u64, LiveEvent)>,
    id: u64,
    bar: Bar,
    authoritative: bool,
) -> bool {
    if st.last_closed.is_none_or(|l| bar.time > l.time) {
        remember(st, bar);
        st.seis.counters.record_closed();
        out.push_back((id, LiveEvent::Closed(bar)));
        // Every closed bar between `Disconnected` and `Reconnected` is counted, whatever path
        // delivered it (the replay, a gap fetch, a held stream event): `gap_bars` is what the
        // consumer received in between.
        if st.gap.is_some() {
            st.gap_bars += 1;
        }
        if st.forming.is_some_and(|f| f.time <= bar.time) {
            st.forming = None;
        }
        true
    } else {
        if authoritative {
            revise(st, out, id, bar);
        }
        false
    }
}

/// A value for a bar already delivered: a revision if it differs from what was delivered.
fn revise(st: &mut SeisState, out: &mut VecDeque<(u64, LiveEvent)>, id: u64, bar: Bar) {
    if let Some(known) = st.recent.iter_mut().find(|b| b.time == bar.time)
        && *known != bar
    {
        *known = bar;
        if st.last_closed.is_some_and(|l| l.time == bar.time) {
            st.last_closed = Some(bar);
        }
        st.seis.counters.record_revised();
        out.push_back((id, LiveEvent::Revised(bar)));
    }
}

/// New values of the forming bar. Returns, when `bar` is a new forming bar, the delay (ms)
/// after which its close time plus `grace` has passed (for the close timer).
fn on_update(
    st: &mut SeisState,
    out: &mut VecDeque<(u64, LiveEvent)>,
    id: u64,
    bar: Bar,
    unix_ms: i64,
    grace: impl FnOnce() -> Duration,
) -> Option<u64> {
    if st.last_closed.is_some_and(|l| bar.time <= l.time) {
        revise(st, out, id, bar);
        return None;
    }
    let new_bar = st.forming.map(|f| f.time) != Some(bar.time);
    st.forming = Some(bar);
    st.seis.counters.record_update();
    out.push_back((id, LiveEvent::Update(bar)));
    if !new_bar {
        return None;
    }
    let close_ms = st
        .seis
        .interval()
        .next_bar_open(bar.time)
        .saturating_mul(1000)
        .saturating_add(i64::try_from(ms_of(grace())).unwrap_or(i64::MAX));
    Some(u64::try_from(close_ms.saturating_sub(unix_ms)).unwrap_or(0))
}
