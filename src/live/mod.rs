//! The live engine: [`LiveFeed`], one `mio` event loop owning one persistent connection that
//! multiplexes every subscription, and consumers fed through SPSC rings.
//!
//! ```text
//! user threads ──commands──▶ [ArrayQueue + mio::Waker] ──▶ tv-io (pinned if asked)
//!                                                            │ owns: Poll, socket, protocol
//!                                                            │       Connection, Core, timers
//! socket ─▶ frames ─▶ parse ─▶ chart session ─▶ Core (close? revision? gap?)
//!                                                            │ registry.load() (lock-free)
//!                                                            ▼
//!                                   one SPSC ring per consumer (push never blocks)
//!                                                            ▼
//!    tv-consumer-N: pop, callback  or  tv-dispatch-K: many consumers' callbacks  or
//!    Subscription / ManySubscription (a user's thread, or a task as a `Stream`)
//! ```
//!
//! - [`LiveFeed::new_seis`] subscribes a (symbol, interval) once, however many callers race on
//!   it, and returns when the server accepted or refused it.
//! - [`LiveFeed::new_consumer`] runs a callback on its own thread, or on one of a few shared
//!   dispatcher threads ([`LiveFeedBuilder::callback_threads`], module `dispatch`);
//!   [`LiveFeed::subscribe`] returns a pull handle instead.
//! - Every closed bar reaches every consumer once, in order, with the server's final values,
//!   across reconnects ([`LiveEvent`]).
//! - [`LiveFeed::shutdown`] returns within its timeout whatever the callbacks do.
//!
//! # Locks
//!
//! The hot path takes none: `tv-io` reads the registry with one `arc-swap` load and pushes to
//! rings. The registry's writer mutex serializes subscribe/unsubscribe/consumer changes (user
//! threads only). The consumer table (`Shared::consumers`) is a mutex taken by user calls only,
//! never while the registry's writer lock is held and never across a wait.
//!
//! # Who owns what
//!
//! A consumer has three records, each with one owner and one job; none is a copy of another:
//!
//! - **Routing** (the registry's [`ConsumerSlot`]: seis → the consumers' fanout indices). Written
//!   by user threads under the registry's writer lock, read by `tv-io` with one lock-free load
//!   per turn: the design card's copy-on-write map.
//! - **Delivery** (`fanout::Fanout`: each consumer's ring producer, backlog and lag report).
//!   Owned by `tv-io` alone and changed only through commands (`AddConsumer`,
//!   `RemoveConsumer`), as a mio program owns its connections' state.
//! - **The handle's side** (`Shared::consumers`: its gate, its thread, its counters). Used by
//!   user calls only (`del_consumer`, `shutdown`, `stats`), never by `tv-io`, so removal and
//!   shutdown never wait for the event loop's turn.
//!
//! A consumer's delivery record is made before its routing and dropped after it (the
//! `RemoveConsumer` command follows the registry removal), so `tv-io` never routes to a slot
//! it does not have.
//!
//! The link has two state machines, split as quinn splits `quinn-proto` from `quinn`: the core
//! decides (up, down, when to retry, when to give up, what a reconnect replays), and the driver
//! (`io.rs`'s `Link`) only holds the resource it is told to open (nothing, a name being
//! resolved, a socket) and reports what happened to it. Neither reads the other's state.
//!
//! Statistics are published one way: each counter is an atomic written by its one writer where
//! the event happens (the core for the link and fetches, the core for a seis' closes, `tv-io`'s
//! fanout and each consumer thread for a consumer), and [`LiveFeed::stats`] only reads them.

mod command;
mod consumer;
mod core;
pub(crate) mod dispatch;
#[cfg(all(test, feature = "sim"))]
mod dst;
mod event;
mod fanout;
mod fetch;
// The core's fuzz harness: built for `cargo fuzz` (which sets `--cfg fuzzing`) and the
// crate's own tests only, never into a user's build.
#[cfg(any(test, fuzzing))]
pub(crate) mod fuzz;
pub(crate) mod gate;
mod io;
mod many;
mod stats;

use std::{
    collections::HashMap,
    fmt,
    sync::PoisonError,
    time::{Duration, Instant},
};

pub(crate) use self::core::{Core, CoreConfig};
use self::gate::Gate;
use self::{
    command::{Command, Commands},
    consumer::CallbackShared,
    stats::{ConsumerCounters, EngineCounters, SeisCounters},
};
pub use self::{
    consumer::{RecvError, StatsProbe, Subscription},
    event::{ConsumerOptions, LiveEvent},
    many::{ManySubscription, SeisEvent},
    stats::Latency,
};
use crate::{
    AuthToken, Endpoint, Error, HistOptions, History, Interval, Symbol, clock,
    error::Phase,
    registry::{ConsumerId, Registry},
    ring::{self, WaitStrategy},
    sync::{
        self,
        plain::{
            self, Mutex,
            atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering},
        },
    },
    transport::TransportConfig,
};
pub(crate) use event::{Delivery, Tagged};

/// A seis' identity: one per (symbol, interval) in a feed.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(crate) struct SeisKey {
    symbol: Symbol,
    interval: Interval,
}

/// A seis' number, unique within its feed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SeisId(u64);

impl SeisId {
    /// The raw number.
    pub fn get(self) -> u64 {
        self.0
    }
}

/// A subscription to one (symbol, interval): what [`LiveFeed::new_seis`] returns. Shared
/// (`Arc`) by every caller that asked for the same pair.
///
/// # Holds
///
/// A seis is held, not owned: each [`LiveFeed::new_seis`] call that returns it (the first, and
/// every idempotent repeat) takes one hold, and each [`LiveFeed::del_seis`] releases one. The
/// server subscription lives until the last hold is released; only then is it removed, with
/// every consumer of the seis (see [`LiveFeed::del_seis`]). So two parts of a program that
/// subscribe the same pair independently never end each other's consumers: each calls
/// `del_seis` once for its one `new_seis`. A consumer takes no hold of its own (see
/// [`LiveFeed::new_consumer`]); cloning the `Arc` takes none either.
///
/// # Invariants
///
/// `holds` is the number of holds taken and not released, in `0..RELEASED`, or `RELEASED`
/// once the last one was released (terminal: the seis is then being removed, or was, and can
/// never be held again; `new_seis` makes a new one). It is 0 only between the registry
/// insertion of a new seis and its first hold. `feed` is the feed it belongs to, for ever.
#[derive(Debug)]
pub struct Seis {
    key: SeisKey,
    id: SeisId,
    feed: u64,
    holds: AtomicUsize,
    pub(crate) counters: SeisCounters,
}

/// [`Seis::holds`]' terminal value: the last hold was released.
const RELEASED: usize = usize::MAX;

/// Why a hold could not be released.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum NotHeld {
    /// Every hold was released already (or none was ever taken).
    Released,
}

impl Seis {
    /// The error of a call on this seis where it is not subscribed.
    fn not_subscribed(&self, other_feed: bool) -> Error {
        Error::NotSubscribed {
            symbol: self.key.symbol.clone(),
            interval: self.key.interval,
            other_feed,
        }
    }

    /// A seis of no feed (feed 0), for the core's own tests and fuzzing.
    #[cfg(any(test, fuzzing))]
    fn new(key: SeisKey, id: u64) -> Self {
        Self::in_feed(key, id, 0)
    }

    fn in_feed(key: SeisKey, id: u64, feed: u64) -> Self {
        Self {
            key,
            id: SeisId(id),
            feed,
            holds: AtomicUsize::new(0),
            counters: SeisCounters::default(),
        }
    }

    /// The symbol.
    pub fn symbol(&self) -> &Symbol {
        &self.key.symbol
    }

    /// The interval.
    pub fn interval(&self) -> Interval {
        self.key.interval
    }

    /// Its number in the feed.
    pub fn id(&self) -> SeisId {
        self.id
    }

    /// How many holds are outstanding: [`LiveFeed::new_seis`] calls that returned it, less
    /// [`LiveFeed::del_seis`] calls on it. 0 once the last was released (the seis is then
    /// unsubscribed). A snapshot: other threads may change it at once.
    pub fn holds(&self) -> usize {
        // Relaxed: a report, nothing is read on the strength of it.
        match self.holds.load(Ordering::Relaxed) {
            RELEASED => 0,
            n => n,
        }
    }

    /// Takes one hold; `false` when the last hold was released already (the seis is on its
    /// way out of the registry: make a new one).
    fn hold(&self) -> bool {
        // Relaxed loads: the compare-exchange below decides, on the one location.
        let mut n = self.holds.load(Ordering::Relaxed);
        loop {
            if n == RELEASED {
                return false;
            }
            debug_assert!(n < RELEASED - 1, "hold count overflow");
            // Relaxed: the count guards no other data (the registry has its own lock); the
            // read-modify-writes on `holds` are totally ordered, which is all that decides
            // who releases last.
            match self
                .holds
                .compare_exchange_weak(n, n + 1, Ordering::Relaxed, Ordering::Relaxed)
            {
                Ok(_) => return true,
                Err(now) => n = now,
            }
        }
    }

    /// Releases one hold; `Ok(true)` when it was the last (the caller then removes the seis).
    fn release(&self) -> Result<bool, NotHeld> {
        let mut n = self.holds.load(Ordering::Relaxed);
        loop {
            if n == 0 || n == RELEASED {
                return Err(NotHeld::Released);
            }
            let next = if n == 1 { RELEASED } else { n - 1 };
            // AcqRel, as `Arc`'s count: the last releaser, which goes on to remove the seis,
            // comes after every other holder's release in the count's order, and sees what
            // they did before releasing.
            match self
                .holds
                .compare_exchange_weak(n, next, Ordering::AcqRel, Ordering::Relaxed)
            {
                Ok(_) => return Ok(next == RELEASED),
                Err(now) => n = now,
            }
        }
    }

    pub(crate) fn key(&self) -> &SeisKey {
        &self.key
    }
}

impl fmt::Display for Seis {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.key.symbol, self.key.interval)
    }
}

/// A consumer as the registry holds it: where `tv-io` pushes its events.
///
/// A many-seis consumer has one `ConsumerSlot` (one registry consumer id, a *route*) per seis,
/// all with its `fanout` index and each with the `tag` its ring items carry for that seis.
#[derive(Debug, Clone, Copy)]
pub(crate) struct ConsumerSlot {
    pub(crate) fanout: u32,
    /// The seis' tag in a many-seis consumer (never reused by it); 0 for a single-seis one.
    pub(crate) tag: u64,
}

/// How `tv-io` waits for the socket.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum IoWait {
    /// Block in `epoll_wait` until the socket or a deadline needs it. Idle CPU near zero; a
    /// wake-up costs tens of microseconds on a VM. The default.
    #[default]
    Block,
    /// Poll with a zero timeout in a loop: the lowest latency, and one core at 100 %. Give it
    /// a core of its own ([`LiveFeedBuilder::io_core`]).
    BusyPoll,
}

/// Builds a [`LiveFeed`]. By-value setters; every default is documented.
#[derive(Clone)]
#[must_use]
pub struct LiveFeedBuilder {
    transport: TransportConfig,
    token: AuthToken,
    ring_capacity: usize,
    consumer_backlog: usize,
    wait_strategy: WaitStrategy,
    io_core: Option<usize>,
    io_wait: IoWait,
    command_timeout: Duration,
    hist_timeout: Duration,
    close_grace: Duration,
    close_grace_ceiling: Duration,
    race_per_minute: u32,
    stall_timeout: Duration,
    connect_timeout: Duration,
    backoff_base: Duration,
    backoff_cap: Duration,
    max_reconnect_attempts: Option<u64>,
    max_outage: Option<Duration>,
    retry_certificate_errors: bool,
    max_gap_bars: u32,
    max_fetches: usize,
    command_queue: usize,
    callback_threads: Option<usize>,
}

impl fmt::Debug for LiveFeedBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LiveFeedBuilder")
            .field("transport", &self.transport)
            .field("token", &self.token)
            .field("ring_capacity", &self.ring_capacity)
            .field("consumer_backlog", &self.consumer_backlog)
            .field("wait_strategy", &self.wait_strategy)
            .field("io_core", &self.io_core)
            .field("io_wait", &self.io_wait)
            .field("close_grace", &self.close_grace)
            .field("close_grace_ceiling", &self.close_grace_ceiling)
            .field("race_per_minute", &self.race_per_minute)
            .field("max_reconnect_attempts", &self.max_reconnect_attempts)
            .field("max_outage", &self.max_outage)
            .field("retry_certificate_errors", &self.retry_certificate_errors)
            .field("callback_threads", &self.callback_threads)
            .finish_non_exhaustive()
    }
}

impl Default for LiveFeedBuilder {
    fn default() -> Self {
        // The engine's defaults are written once, in `CoreConfig::default`.
        let c = CoreConfig::default();
        Self {
            transport: TransportConfig::default(),
            token: AuthToken::anonymous(),
            ring_capacity: Self::DEFAULT_RING_CAPACITY,
            consumer_backlog: fanout::DEFAULT_BACKLOG,
            wait_strategy: WaitStrategy::default(),
            io_core: None,
            io_wait: IoWait::Block,
            command_timeout: Duration::from_secs(10),
            hist_timeout: crate::DEFAULT_TIMEOUT,
            close_grace: c.close_grace,
            close_grace_ceiling: c.close_grace_ceiling,
            race_per_minute: c.race_per_minute,
            stall_timeout: c.stall_timeout,
            connect_timeout: c.connect_timeout,
            backoff_base: c.backoff_base,
            backoff_cap: c.backoff_cap,
            max_reconnect_attempts: c.max_reconnect_attempts,
            max_outage: c.max_outage,
            retry_certificate_errors: c.retry_certificate_errors,
            max_gap_bars: c.max_gap_bars,
            max_fetches: c.max_fetches,
            command_queue: 1024,
            callback_threads: None,
        }
    }
}

impl LiveFeedBuilder {
    /// [`ring_capacity`](Self::ring_capacity)'s default: 256 events, 28 KiB a consumer
    /// (1,024 cost 112 KiB, resident from the ring's creation, for every consumer of every
    /// seis; BENCHMARKS.md, "Memory"). A consumer that falls behind loses no closed bar for a
    /// small ring: they wait in its backlog.
    pub const DEFAULT_RING_CAPACITY: usize = 256;

    /// The endpoint: an [`Endpoint`] or a `ws://`/`wss://` URL. Default TradingView's data
    /// host.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidRequest`] when the string is not such a URL.
    pub fn endpoint<E>(mut self, endpoint: E) -> Result<Self, Error>
    where
        E: TryInto<Endpoint>,
        E::Error: Into<Error>,
    {
        self.transport.endpoint = endpoint.try_into().map_err(Into::into)?;
        Ok(self)
    }

    /// The transport configuration (endpoint, trusted roots, limits) whole.
    pub fn transport(mut self, transport: TransportConfig) -> Self {
        self.transport = transport;
        self
    }

    /// Trusts one more root certificate (DER), e.g. the simulator's.
    pub fn root_certificate(mut self, der: impl Into<Vec<u8>>) -> Self {
        self.transport.extra_roots.push(der.into());
        self
    }

    /// The auth token. Default anonymous.
    pub fn token(mut self, token: AuthToken) -> Self {
        self.token = token;
        self
    }

    /// Events each consumer's ring holds (rounded up to a power of two). Default
    /// [`DEFAULT_RING_CAPACITY`](Self::DEFAULT_RING_CAPACITY), 256. Raise it for a consumer
    /// that reads in long bursts and wants every update of a fast seis. A consumer that falls
    /// this far behind never stalls the engine: its updates are coalesced
    /// and its closed bars wait in its backlog ([`LiveFeedBuilder::consumer_backlog`]).
    pub fn ring_capacity(mut self, n: usize) -> Self {
        self.ring_capacity = n.clamp(2, ring::MAX_CAPACITY);
        self
    }

    /// Most events that wait for one consumer whose ring is full: its closed bars, revisions
    /// and connection events, delivered in order as soon as it reads again (its updates are
    /// coalesced instead, latest wins). Default 4,096 (68 hours of one-minute bars, 68
    /// minutes of one-second bars). Only past it does a consumer lose closed bars, each
    /// counted in [`LiveEvent::Lagged`]'s `lost_closed` and [`ConsumerStats::lost_closed`].
    /// Memory is spent only while a consumer is behind (about 80 bytes an event). At least 1.
    pub fn consumer_backlog(mut self, n: usize) -> Self {
        self.consumer_backlog = n.max(1);
        self
    }

    /// Runs callback consumers ([`LiveFeed::new_consumer`], [`LiveFeed::new_consumer_many`])
    /// on `n` shared dispatcher threads, `tv-dispatch-0` to `tv-dispatch-{n-1}`, instead of a
    /// thread each; `0` sizes the pool to the machine (one per core the process may use).
    /// Default: no pool, a thread per callback consumer.
    ///
    /// A thousand consumers then cost `n` threads, not a thousand, and one parked thread
    /// wakes for whichever of its consumers has an event (BENCHMARKS.md, "Callbacks on a few
    /// threads"). Each consumer stays on one thread for its whole life, so its events keep
    /// their order; a thread runs one consumer for at most 64 events before the next ready one.
    ///
    /// The contracts of a callback consumer are unchanged: after
    /// [`LiveFeed::del_consumer`] returns its callback never runs again; a panicking callback
    /// ends its own consumer only; [`LiveFeed::shutdown`] names a consumer whose callback did
    /// not return in time (`tv-consumer-N (on tv-dispatch-K)`); a callback may call the feed,
    /// its own consumer included. One difference: a callback that blocks holds up the other
    /// consumers on its thread. Give such a consumer its own thread with
    /// [`ConsumerOptions::own_thread`].
    pub fn callback_threads(mut self, n: usize) -> Self {
        self.callback_threads = Some(n);
        self
    }

    /// How consumers wait for events (spin, yield, park). Default
    /// [`WaitStrategy::default`] (spin briefly, then park: idle CPU near zero).
    pub fn wait_strategy(mut self, s: WaitStrategy) -> Self {
        self.wait_strategy = s;
        self
    }

    /// Pins `tv-io` to this core (`core_affinity`'s numbering, 0-based). Default: not pinned.
    pub fn io_core(mut self, core: Option<usize>) -> Self {
        self.io_core = core;
        self
    }

    /// How `tv-io` waits for the socket. Default [`IoWait::Block`].
    pub fn io_wait(mut self, wait: IoWait) -> Self {
        self.io_wait = wait;
        self
    }

    /// How long a call (`new_seis`, `del_seis`, consumer changes) waits for `tv-io`'s answer.
    /// Default 10 s. A `new_seis` made while the connection is down waits for it this long.
    pub fn command_timeout(mut self, t: Duration) -> Self {
        self.command_timeout = t;
        self
    }

    /// The deadline of [`LiveFeed::get_hist`]. Default 60 s.
    pub fn hist_timeout(mut self, t: Duration) -> Self {
        self.hist_timeout = t;
        self
    }

    /// The floor of the close grace: a quiet seis' grace, and when a racing fetch goes out.
    /// Default 0: at the close time itself.
    ///
    /// After a bar's close time, the engine waits for the stream to show the next bar (which
    /// closes it) before a fetch over the same connection confirms the close. How long is
    /// learned per seis, between this floor and [`LiveFeedBuilder::close_grace_ceiling`]:
    ///
    /// - a streaming seis waits the 90th percentile of how late the stream closed its last 16
    ///   bars, plus an eighth (at least 2 ms): it is closed by its own next trade, and fetched
    ///   only when that trade is later than usual, so a liquid market costs the server almost
    ///   no requests however far away it is;
    /// - unless a fetch at the floor is answered sooner than that trade usually comes: then
    ///   the close races the stream, within a budget
    ///   ([`LiveFeedBuilder::close_race_per_minute`]);
    /// - a quiet seis (more than a quarter of its recent bars were closed by a fetch before
    ///   the stream showed them, or nothing observed yet) waits the floor: its close comes
    ///   within the floor plus one round trip plus the server's service time.
    ///
    /// A fetch's answer is the server's bar as of when the server serves it: a floor above 0
    /// leaves room for a trade stamped just before the close that reaches the server just
    /// after it (the engine delivers such a late change as [`LiveEvent::Revised`]). A grace
    /// below the floor is never used; [`LiveFeedBuilder::close_grace_fixed`] turns the
    /// learning off.
    pub fn close_grace(mut self, t: Duration) -> Self {
        self.close_grace = t;
        self
    }

    /// The ceiling of the learned close grace (see [`LiveFeedBuilder::close_grace`]). Default
    /// 250 ms: a streaming seis whose next trade is later than this is fetched then.
    pub fn close_grace_ceiling(mut self, t: Duration) -> Self {
        self.close_grace_ceiling = t;
        self
    }

    /// Race the stream for the lowest close latency, with no limit (`true`), or never
    /// (`false`). The default races within a budget: see
    /// [`LiveFeedBuilder::close_race_per_minute`].
    pub fn close_race(self, on: bool) -> Self {
        self.close_race_per_minute(if on { u32::MAX } else { 0 })
    }

    /// Race the stream for the lowest close latency, at most `n` fetches a minute across the
    /// feed. Default 120; 0 turns racing off, `u32::MAX` removes the limit.
    ///
    /// A streaming seis is fetched at the floor ([`LiveFeedBuilder::close_grace`]) whenever a
    /// fetch is answered sooner than its stream usually closes the bar (measured: the
    /// fetches' answer time against the stream's recent lateness), so its close comes at the
    /// floor plus one round trip and the server's queue instead of at its next trade. Each
    /// such close costs one request (a `create_series`; its `remove_series` is answered by
    /// nothing). Where a fetch cannot win (a far server, a stream that closes its bars
    /// promptly) nothing is fetched. The budget is a bucket of `n` refilled at `n` a minute:
    /// a bar that finds it empty waits for its stream as if racing were off, so racing never
    /// costs the server more than `n` requests a minute per feed, however large the
    /// watchlist (a 30-seis watchlist of 1-minute bars races every close with the default;
    /// the Python library opens a connection per seis and bar). Not counted: what the close
    /// needs whatever the policy (a quiet seis' confirmation, a gap fill, a symbol resolved
    /// ahead). [`LiveFeed::stats`]' counters tell how
    /// many closes raced and how many the budget refused.
    pub fn close_race_per_minute(mut self, n: u32) -> Self {
        self.race_per_minute = n;
        self
    }

    /// One fixed close grace for every seis (floor and ceiling both `t`): nothing learned.
    pub fn close_grace_fixed(mut self, t: Duration) -> Self {
        self.close_grace = t;
        self.close_grace_ceiling = t;
        self
    }

    /// Silence (no message, no heartbeat) after which the connection counts as stalled and is
    /// replaced. Default 30 s: TradingView sends a heartbeat every 10 s, so three in a row
    /// missed.
    pub fn stall_timeout(mut self, t: Duration) -> Self {
        self.stall_timeout = t;
        self
    }

    /// Connect, TLS and upgrade must finish within this. Default 10 s.
    pub fn connect_timeout(mut self, t: Duration) -> Self {
        self.connect_timeout = t;
        self
    }

    /// Reconnect backoff: attempt `n` waits a random time in `0..=min(cap, base * 2^n)` (full
    /// jitter), at least a 429's `Retry-After`. Defaults 250 ms and 30 s.
    pub fn reconnect_backoff(mut self, base: Duration, cap: Duration) -> Self {
        self.backoff_base = base;
        self.backoff_cap = cap.max(base);
        self
    }

    /// Stop reconnecting after `n` failed attempts in one outage (at least 1): every seis ends
    /// with [`LiveEvent::Failed`]`(`[`Error::GaveUp`]`)`, and later calls return that error.
    /// Default: retry for ever (each failure is visible in [`LiveFeed::connection`]).
    pub fn max_reconnect_attempts(mut self, n: u64) -> Self {
        self.max_reconnect_attempts = Some(n.max(1));
        self
    }

    /// Stop reconnecting once an outage lasted `d`: the backoff is cut so that an attempt
    /// starts at `d`, and the first attempt that fails from then on ends every seis with
    /// [`LiveEvent::Failed`]`(`[`Error::GaveUp`]`)`. An attempt in progress at `d` is given
    /// its [`connect_timeout`](Self::connect_timeout). Default: retry for ever.
    pub fn max_outage(mut self, d: Duration) -> Self {
        self.max_outage = Some(d);
        self
    }

    /// Whether a reconnect that meets a certificate that is not trusted is retried. Default
    /// `false`: the feed ends every seis with [`LiveEvent::Failed`] carrying
    /// [`TransportError::CertificateNotTrusted`](crate::TransportError::CertificateNotTrusted),
    /// as it does for a rejected token (or a 401 on the upgrade), since waiting mends none of
    /// them and a man in the middle should be loud. Say `true` for a server known to restart
    /// with a new certificate that becomes trusted later.
    pub fn retry_certificate_errors(mut self, on: bool) -> Self {
        self.retry_certificate_errors = on;
        self
    }

    /// Most closed bars one seis' gap fill asks for after a reconnect. Default 5,000 (the
    /// anonymous history depth); a longer outage delivers the newest 5,000 and a
    /// [`LiveEvent::Lagged`]-free gap report in [`LiveEvent::Reconnected`].
    pub fn max_gap_bars(mut self, n: u32) -> Self {
        self.max_gap_bars = n.max(1);
        self
    }

    /// Most fetches over the connection at once: close confirmations of quiet markets and
    /// gap fills after a reconnect (each is a series on a second chart session). Default 64.
    /// When a thousand quiet seises close at one boundary, the rest wait their turn in order
    /// (and are dropped if the stream shows the next bar first), so the server never sees a
    /// burst of a thousand requests; a larger value confirms a large quiet watchlist sooner.
    /// At least 1.
    pub fn max_fetches_in_flight(mut self, n: usize) -> Self {
        self.max_fetches = n.max(1);
        self
    }

    /// Starts `tv-io` and connects: it returns once the first connection is up (or failed).
    ///
    /// The first connection is treated differently from every later one, on purpose: a
    /// failure here (a wrong URL, port, certificate or token) is almost always configuration,
    /// and is returned at once rather than retried for ever. Once a connection has been up,
    /// every failure is retried with backoff (seen in [`LiveFeed::connection`], bounded with
    /// [`max_reconnect_attempts`](Self::max_reconnect_attempts) and
    /// [`max_outage`](Self::max_outage)). To start while the server may be down, retry
    /// `build` (its errors say whether that can help: [`Error::is_retryable`]).
    ///
    /// # Errors
    ///
    /// The first connection attempt failed (refused, TLS, upgrade refused, timeout):
    /// [`Error::Transport`], [`Error::Timeout`], [`Error::RateLimited`]; or the poll could not
    /// be created ([`Error::Transport`]) or `tv-io` not started ([`Error::Spawn`]).
    pub fn build(self) -> Result<LiveFeed, Error> {
        let io_error = |e: std::io::Error| {
            Error::Transport(crate::TransportError::Io {
                host: self.transport.endpoint.host().to_owned(),
                source: e.into(),
            })
        };
        let poll = mio::Poll::new().map_err(io_error)?;
        let waker = plain::Arc::new(mio::Waker::new(poll.registry(), io::WAKER).map_err(io_error)?);
        let now = clock::monotonic();
        let unix = i64::try_from(clock::unix_ms()).unwrap_or(i64::MAX);
        let seed = clock::id_seed();
        let core = Core::new(
            now,
            unix,
            CoreConfig {
                token: self.token.clone(),
                close_grace: self.close_grace,
                close_grace_ceiling: self.close_grace_ceiling,
                race_per_minute: self.race_per_minute,
                stall_timeout: self.stall_timeout,
                connect_timeout: self.connect_timeout,
                backoff_base: self.backoff_base,
                backoff_cap: self.backoff_cap,
                max_reconnect_attempts: self.max_reconnect_attempts,
                max_outage: self.max_outage,
                retry_certificate_errors: self.retry_certificate_errors,
                max_gap_bars: self.max_gap_bars,
                max_fetches: self.max_fetches,
                rotate_chart_after: CoreConfig::default().rotate_chart_after,
                seed,
                max_frame_len: crate::protocol::frame::DEFAULT_MAX_FRAME_LEN
                    .min(self.transport.max_message_size),
            },
        );
        let dispatch = match self.callback_threads {
            None => None,
            Some(n) => {
                let n = if n == 0 {
                    std::thread::available_parallelism().map_or(1, std::num::NonZero::get)
                } else {
                    n
                };
                Some(dispatch::Pool::start(n, self.command_timeout)?)
            }
        };
        let shared = plain::Arc::new(Shared {
            commands: Commands::new(self.command_queue, plain::Arc::clone(&waker)),
            registry: Registry::new(),
            transport: self.transport.clone(),
            engine: core.stats(),
            // Relaxed: only uniqueness matters.
            feed_id: NEXT_FEED.fetch_add(1, Ordering::Relaxed),
            stop: AtomicBool::new(false),
            next_seis: AtomicU64::new(1),
            next_tag: AtomicU64::new(1),
            consumers: Mutex::new(HashMap::new()),
            stragglers: Mutex::new(Vec::new()),
            dispatch,
            first: Mutex::new(None),
            builder: self.clone(),
        });
        let (first, first_wait) = command::reply();
        *shared.first.lock().unwrap_or_else(PoisonError::into_inner) = Some(first);
        let driver = io::Driver {
            shared: plain::Arc::clone(&shared),
            core,
            poll,
            wait: self.io_wait,
            waker,
            backlog_limit: self.consumer_backlog,
            resolver: None,
        };
        let pin = self.io_core;
        let io = plain::thread::Builder::new()
            .name("tv-io".into())
            .spawn(move || {
                if let Some(id) = pin
                    && !core_affinity::set_for_current(core_affinity::CoreId { id })
                {
                    tracing::warn!(core = id, "tv-io could not be pinned");
                }
                driver.run();
            })
            .map_err(|e| Error::Spawn {
                thread: "tv-io".into(),
                source: e.into(),
            })?;
        let feed = LiveFeed {
            shared,
            io: Mutex::new(Some(io)),
            report: Mutex::new(None),
        };
        let deadline = clock::monotonic().checked_add(self.connect_timeout.saturating_mul(2));
        match first_wait.wait(deadline) {
            Some(Ok(())) => Ok(feed),
            Some(Err(e)) => {
                feed.shutdown(Duration::from_secs(2));
                Err(e)
            }
            None => {
                feed.shutdown(Duration::from_secs(2));
                Err(Error::Timeout {
                    after: self.connect_timeout,
                    during: Phase::Connect,
                })
            }
        }
    }
}

/// One consumer, as the feed keeps it for removal and shutdown.
struct ConsumerEntry {
    seis: SeisKey,
    gate: plain::Arc<Gate>,
    counters: plain::Arc<ConsumerCounters>,
    fanout: u32,
    thread: Option<(String, plain::thread::JoinHandle<()>)>,
    /// A many-seis consumer's routes (`None` for a single-seis consumer).
    many: Option<plain::Arc<many::ManyShared>>,
}

/// A callback thread that did not finish when its consumer was removed.
struct Straggler {
    name: String,
    handle: plain::thread::JoinHandle<()>,
}

/// The next [`Shared::feed_id`].
static NEXT_FEED: AtomicU64 = AtomicU64::new(1);

/// What the feed's handles and `tv-io` share.
pub(crate) struct Shared {
    pub(crate) commands: Commands,
    pub(crate) registry: Registry<SeisKey, Seis, ConsumerSlot>,
    pub(crate) transport: TransportConfig,
    /// The engine's statistics, written by the core where each event happens.
    pub(crate) engine: plain::Arc<EngineCounters>,
    /// This feed's number in the process (never 0, never reused): which feed a [`Seis`]
    /// belongs to, and whether a call comes from one of this feed's consumer threads.
    pub(crate) feed_id: u64,
    stop: AtomicBool,
    next_seis: AtomicU64,
    /// The next many-seis route tag (from 1: tag 0 is every single-seis consumer's).
    next_tag: AtomicU64,
    consumers: Mutex<HashMap<ConsumerId, ConsumerEntry>>,
    stragglers: Mutex<Vec<Straggler>>,
    /// The dispatcher threads ([`LiveFeedBuilder::callback_threads`]), if asked for.
    dispatch: Option<dispatch::Pool>,
    /// Answered by `tv-io` with the first connection attempt's outcome.
    pub(crate) first: Mutex<Option<command::Reply<Result<(), Error>>>>,
    builder: LiveFeedBuilder,
}

impl Shared {
    pub(crate) fn stopping(&self) -> bool {
        // Acquire: pairs with `shutdown`'s Release store; nothing else rides on it.
        self.stop.load(Ordering::Acquire)
    }

    fn deadline(&self, timeout: Duration) -> Option<Instant> {
        clock::monotonic().checked_add(timeout)
    }
}

/// What [`LiveFeed::shutdown`] did.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
#[non_exhaustive]
pub struct ShutdownReport {
    /// Threads still running at the timeout (a callback that does not return), by name.
    pub unfinished: Vec<String>,
    /// The consumer thread `shutdown` was called from (by a callback, or a `LiveFeed` dropped
    /// in one), by name: it was stopped like the others but not waited for, since it cannot
    /// wait for itself; it ends when its callback returns. `None` when called from any other
    /// thread. Not counted in [`ShutdownReport::unfinished`].
    pub caller: Option<String>,
    /// How long the shutdown took.
    pub elapsed: Duration,
}

impl ShutdownReport {
    /// Whether every thread finished in time.
    pub fn is_clean(&self) -> bool {
        self.unfinished.is_empty()
    }
}

/// Statistics of a feed, from [`LiveFeed::stats`].
#[derive(Debug, Clone, Default)]
#[non_exhaustive]
pub struct Stats {
    /// Whether a connection is up.
    pub connected: bool,
    /// Connections lost (and replaced) so far.
    pub reconnects: u64,
    /// Websocket messages received.
    pub messages: u64,
    /// Messages the engine could not take (bad frames or JSON).
    pub bad_messages: u64,
    /// Failed connection attempts and the last one ([`ConnectionStatus`]).
    pub failed_attempts: u64,
    /// The last failed connection attempt.
    pub last_failure: Option<ConnectFailure>,
    /// Close confirmations and gap fills in flight on the connection now.
    pub fetches_in_flight: u64,
    /// Close confirmations and gap fills asked since the feed started (each one request on
    /// the server).
    pub fetches: u64,
    /// Bars whose close was set to race the stream when the bar opened (a fetch at the floor,
    /// sent unless the stream closes the bar first; see
    /// [`LiveFeedBuilder::close_race_per_minute`]).
    pub races: u64,
    /// Bars that would have raced but found the race budget empty (closed by their stream).
    pub races_refused: u64,
    /// Per seis.
    pub seises: Vec<SeisStats>,
    /// Per consumer.
    pub consumers: Vec<ConsumerStats>,
}

/// The link to the server, from [`LiveFeed::connection`] (and in [`Stats`]): cheap to read
/// often (no per-seis work), so a program can report each failed reconnect attempt.
#[derive(Debug, Clone, PartialEq, Default)]
#[non_exhaustive]
pub struct ConnectionStatus {
    /// Whether a connection is up.
    pub connected: bool,
    /// Connections lost (and replaced) so far.
    pub reconnects: u64,
    /// Connection attempts that failed so far (refused, TLS, a refused upgrade, a timeout): a
    /// counter that moves once per failure, so a reader that polls sees each one.
    pub failed_attempts: u64,
    /// The last failed attempt.
    pub last_failure: Option<ConnectFailure>,
}

/// A connection attempt that failed.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct ConnectFailure {
    /// Its number in the outage: 1 for the first attempt after the connection was lost.
    pub attempt: u64,
    /// Why it failed.
    pub error: Error,
    /// When the next attempt starts, counted from this failure. `None`: no next attempt; the
    /// error is final on a reconnect (see [`LiveFeedBuilder::retry_certificate_errors`]) or a
    /// limit was reached ([`Error::GaveUp`]), and every seis ended with [`LiveEvent::Failed`].
    pub retry_in: Option<Duration>,
    /// When it failed: wall-clock milliseconds since the Unix epoch.
    pub at_unix_ms: i64,
}

/// One seis' statistics.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct SeisStats {
    /// The symbol.
    pub symbol: Symbol,
    /// The interval.
    pub interval: Interval,
    /// Closed bars delivered.
    pub closed: u64,
    /// Revisions delivered.
    pub revised: u64,
    /// New values of its forming bar received from the stream (delivered to the consumers
    /// that asked for updates).
    pub updates: u64,
    /// Holds outstanding ([`Seis::holds`]): `new_seis` calls not yet matched by `del_seis`.
    pub holds: usize,
}

/// One consumer's statistics.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct ConsumerStats {
    /// The consumer.
    pub id: ConsumerId,
    /// Its seis' symbol.
    pub symbol: Symbol,
    /// Its seis' interval.
    pub interval: Interval,
    /// Events pushed into its ring.
    pub pushed: u64,
    /// Events it consumed (callbacks run, or events received).
    pub delivered: u64,
    /// Events dropped because it fell behind, counted when dropped (each reported by a
    /// [`LiveEvent::Lagged`]): coalesced updates, and past its backlog's limit, older events.
    pub lagged: u64,
    /// Closed bars it will never receive because its backlog overflowed (0 for a consumer
    /// that keeps up, or catches up within
    /// [`LiveFeedBuilder::consumer_backlog`]).
    pub lost_closed: u64,
    /// Whether its callback panicked (which ended it).
    pub panicked: bool,
    /// Ring push to callback start (or to `recv`).
    pub push_to_callback: Latency,
    /// A closed bar's close time (wall clock) to its callback.
    pub close_to_callback: Latency,
}

/// The live feed: TradingView's `TvDatafeedLive`, rebuilt as an event-loop engine.
///
/// `Send` and `Sync`: share it (`&LiveFeed` or an `Arc`) between threads; every method takes
/// `&self`, never blocks `tv-io`, and waits for its answer at most the configured timeout.
///
/// # Examples
///
/// ```
/// use std::time::Duration;
/// use tvdatafeed::{LiveEvent, LiveFeed, sim::{Sim, SimConfig}};
///
/// let sim = Sim::start(SimConfig::default())?; // a TradingView-protocol server on loopback
/// let feed = LiveFeed::builder().endpoint(sim.url())?.build()?;
/// let btc = feed.new_seis("BINANCE:BTCUSDT", "1S")?;
/// let mut bars = feed.subscribe(&btc)?;
/// while let Ok(event) = bars.recv_timeout(Duration::from_secs(5)) {
///     if let LiveEvent::Closed(bar) = event {
///         assert_eq!(bar, sim.expected_bar(btc.symbol(), btc.interval(), bar.time));
///         break;
///     }
/// }
/// assert!(feed.shutdown(Duration::from_secs(5)).is_clean());
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub struct LiveFeed {
    shared: plain::Arc<Shared>,
    io: Mutex<Option<plain::thread::JoinHandle<()>>>,
    report: Mutex<Option<ShutdownReport>>,
}

impl fmt::Debug for LiveFeed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LiveFeed")
            .field("endpoint", &self.shared.transport.endpoint)
            .field("seises", &self.shared.registry.load().len())
            .field("stopping", &self.shared.stopping())
            .finish_non_exhaustive()
    }
}

impl LiveFeed {
    /// A builder with every default.
    pub fn builder() -> LiveFeedBuilder {
        LiveFeedBuilder::default()
    }

    fn check_open(&self) -> Result<(), Error> {
        if self.shared.stopping() {
            Err(Error::Shutdown)
        } else {
            Ok(())
        }
    }

    fn timeout_error(&self) -> Error {
        Error::Timeout {
            after: self.shared.builder.command_timeout,
            during: Phase::Answer,
        }
    }

    /// Subscribes `symbol` at `interval`, or returns the existing subscription: callers racing
    /// on one pair all get the same `Arc`. Returns once the server accepted it (its history
    /// arrived), so a refusal is a typed error within one round trip.
    ///
    /// Every call that returns the seis takes one hold on it (see [`Seis`]'s `# Holds`),
    /// which a [`LiveFeed::del_seis`] releases: call `del_seis` once for each successful
    /// `new_seis`. The seis is unsubscribed when its last hold is released, so a part of the
    /// program that subscribed a pair keeps receiving it whatever other parts do with the same
    /// pair. A call that fails takes no hold.
    ///
    /// # Errors
    ///
    /// [`Error::Series`] with the server's refusal (unknown symbol, permission denied,
    /// interval not entitled); [`Error::InvalidRequest`] for a malformed symbol or interval;
    /// [`Error::Timeout`] when no answer came within the command timeout (the subscription is
    /// then removed unless another caller holds it); [`Error::AuthRejected`];
    /// [`Error::Shutdown`].
    pub fn new_seis<S, I>(&self, symbol: S, interval: I) -> Result<sync::Arc<Seis>, Error>
    where
        S: TryInto<Symbol>,
        S::Error: Into<Error>,
        I: TryInto<Interval>,
        I::Error: Into<Error>,
    {
        self.check_open()?;
        let key = SeisKey {
            symbol: symbol.try_into().map_err(Into::into)?,
            interval: interval.try_into().map_err(Into::into)?,
        };
        let shared = &self.shared;
        let deadline = shared.deadline(shared.builder.command_timeout);
        let seis = loop {
            let seis = shared.registry.get_or_insert(key.clone(), || {
                // Relaxed: only uniqueness matters.
                let id = shared.next_seis.fetch_add(1, Ordering::Relaxed);
                Seis::in_feed(key.clone(), id, shared.feed_id)
            });
            if seis.hold() {
                break seis;
            }
            // Its last holder released it and is taking it out of the registry (the next step
            // of its `del_seis`, one writer-lock turn): wait for that, then subscribe anew.
            if deadline.is_some_and(|d| clock::monotonic() >= d) {
                return Err(self.timeout_error());
            }
            plain::thread::park_timeout(Duration::from_micros(50));
        };
        let (reply, waiter) = command::reply();
        let outcome = shared
            .commands
            .send(
                Command::Subscribe {
                    seis: sync::Arc::clone(&seis),
                    reply,
                },
                deadline,
            )
            .and_then(|()| {
                waiter
                    .wait(deadline)
                    .unwrap_or_else(|| Err(self.timeout_error()))
            });
        match outcome {
            Ok(()) => Ok(seis),
            Err(e) => {
                // This call's hold goes; the seis with it if nobody else holds it.
                if seis.release() == Ok(true) {
                    let _ = self.remove_seis(&seis, Duration::from_secs(1));
                }
                Err(e)
            }
        }
    }

    /// Releases one hold on `seis` (one [`LiveFeed::new_seis`] call's). When it was the last,
    /// the seis is removed: after this returns, none of its consumers' callbacks runs again
    /// (a callback consumer's thread ends without a further call: no event tells it, the last
    /// holder chose this), its [`Subscription`]s return [`RecvError::Closed`], and the server
    /// subscription is removed (its `remove_series` was written). While other holds remain, this only releases the
    /// caller's: every consumer goes on.
    ///
    /// From a callback (of this seis or another), it returns without waiting for the calling
    /// callback to return: if the caller is one of the removed consumers, its callback never
    /// runs again after the current invocation.
    ///
    /// # Errors
    ///
    /// [`Error::NotSubscribed`] when every hold on `seis` was released already (more
    /// `del_seis` than `new_seis` calls), or `seis` belongs to another feed: nothing is
    /// changed; [`Error::Timeout`] when a callback was still running at the command timeout (it
    /// will not run again); [`Error::Shutdown`].
    pub fn del_seis(&self, seis: &Seis) -> Result<(), Error> {
        self.check_open()?;
        if seis.feed != self.shared.feed_id {
            return Err(seis.not_subscribed(true));
        }
        match seis.release() {
            Err(NotHeld::Released) => Err(seis.not_subscribed(false)),
            Ok(false) => Ok(()),
            Ok(true) => self
                .remove_seis(seis, self.shared.builder.command_timeout)
                .map(|_| ()),
        }
    }

    /// Removes `seis` from the registry (if this very seis is there), its consumers, and its
    /// server subscription. Returns whether it was there. Called by the releaser of its last
    /// hold only.
    fn remove_seis(&self, seis: &Seis, timeout: Duration) -> Result<bool, Error> {
        let shared = &self.shared;
        let deadline = shared.deadline(timeout);
        let same = shared
            .registry
            .load()
            .get(seis.key())
            .is_some_and(|e| std::ptr::eq(&**e.value(), seis));
        if !same {
            return Ok(false);
        }
        let Some((value, removed)) = shared.registry.remove(seis.key()) else {
            return Ok(false);
        };
        let mut result = Ok(());
        for r in removed {
            if let Err(e) = finish_removal(shared, r.id(), Some(r), deadline) {
                result = Err(e);
            }
        }
        let (reply, waiter) = command::reply();
        shared
            .commands
            .send(Command::Unsubscribe { seis: value, reply }, deadline)?;
        match waiter.wait(deadline) {
            Some(r) => r?,
            None => return Err(self.timeout_error()),
        }
        result.map(|()| true)
    }

    /// Runs `callback` for every event of `seis` (closed bars, revisions, lags, connection
    /// events; no forming-bar updates) on a thread of its own, `tv-consumer-N`. Returns its id
    /// for [`LiveFeed::del_consumer`].
    ///
    /// A callback that panics ends its own consumer only: it is logged, counted
    /// ([`ConsumerStats::panicked`]) and the others go on.
    ///
    /// A consumer takes no hold on its seis (see [`Seis`]'s `# Holds`): it lives until
    /// [`LiveFeed::del_consumer`], or until the last hold on its seis is released
    /// ([`LiveFeed::del_seis`]), or shutdown. Hold the seis (keep your `new_seis` unreleased)
    /// for as long as you consume it; another part of the program releasing its own hold never
    /// ends your consumer.
    ///
    /// The callback may call this feed's methods, including on its own consumer or seis
    /// ([`LiveFeed::del_consumer`], [`LiveFeed::del_seis`], [`LiveFeed::shutdown`], dropping
    /// the last `LiveFeed`): none of them waits for the calling callback to return.
    ///
    /// # Errors
    ///
    /// [`Error::NotSubscribed`] when `seis` is not subscribed here; [`Error::Timeout`];
    /// [`Error::Overloaded`]; [`Error::Shutdown`]; [`Error::Spawn`] when the consumer's thread
    /// could not be started.
    pub fn new_consumer(
        &self,
        seis: &Seis,
        callback: impl FnMut(LiveEvent) + Send + 'static,
    ) -> Result<ConsumerId, Error> {
        self.new_consumer_with(seis, ConsumerOptions::default(), callback)
    }

    /// [`LiveFeed::new_consumer`] with options (forming-bar updates).
    ///
    /// # Errors
    ///
    /// As [`LiveFeed::new_consumer`].
    pub fn new_consumer_with(
        &self,
        seis: &Seis,
        options: ConsumerOptions,
        callback: impl FnMut(LiveEvent) + Send + 'static,
    ) -> Result<ConsumerId, Error> {
        self.check_open()?;
        let shared = &self.shared;
        if let Some(pool) = shared.dispatch.as_ref().filter(|_| !options.own_thread) {
            // A pull handle (in the table before it is placed, so a callback that removes its
            // own consumer at once finds it) run by a dispatcher thread.
            let mut source = self.subscribe_with(seis, options)?;
            source.callback = true;
            let id = source.id;
            let cb = CallbackShared {
                gate: plain::Arc::clone(&source.gate),
                counters: plain::Arc::clone(&source.counters),
            };
            pool.place(Box::new(consumer::Dispatched {
                source,
                callback: Some(callback),
                shared: cb,
                me: (shared.feed_id, id),
            }));
            return Ok(id);
        }
        let (producer, rx) = self.ring()?;
        let counters = plain::Arc::new(ConsumerCounters::default());
        let gate = plain::Arc::new(Gate::new());
        let cb = CallbackShared {
            gate: plain::Arc::clone(&gate),
            counters: plain::Arc::clone(&counters),
        };
        let interval = seis.interval();
        let (id, slot) = self.attach(seis, producer, options, &counters)?;
        let me = (shared.feed_id, id);
        let name = format!("tv-consumer-{}", id.get());
        let thread_name = name.clone();
        let spawned = plain::thread::Builder::new()
            .name(name.clone())
            .spawn(move || {
                consumer::run_callback(&thread_name, me, rx, &cb, interval, callback);
            });
        let (thread, spawn_error) = match spawned {
            Ok(h) => (Some((name, h)), None),
            Err(e) => (None, Some((name, e))),
        };
        self.table().insert(
            id,
            ConsumerEntry {
                seis: seis.key().clone(),
                gate,
                counters,
                fanout: slot,
                thread,
                many: None,
            },
        );
        if let Some((name_of_failed, e)) = spawn_error {
            let _ = finish_removal(shared, id, shared.registry.remove_consumer(id), None);
            return Err(Error::Spawn {
                thread: name_of_failed,
                source: e.into(),
            });
        }
        Ok(id)
    }

    /// A pull handle on `seis`' events: poll it from a thread you own with
    /// [`Subscription::recv`], [`Subscription::try_recv`], [`Subscription::recv_timeout`] or
    /// its iterator. Dropping it removes this consumer (not the seis).
    ///
    /// Like a callback consumer, it takes no hold on `seis` and ends (with
    /// [`RecvError::Closed`]) when the last hold is released: see [`LiveFeed::new_consumer`].
    ///
    /// # Errors
    ///
    /// As [`LiveFeed::new_consumer`].
    pub fn subscribe(&self, seis: &Seis) -> Result<Subscription, Error> {
        self.subscribe_with(seis, ConsumerOptions::default())
    }

    /// [`LiveFeed::subscribe`] with options (forming-bar updates).
    ///
    /// # Errors
    ///
    /// As [`LiveFeed::new_consumer`].
    pub fn subscribe_with(
        &self,
        seis: &Seis,
        options: ConsumerOptions,
    ) -> Result<Subscription, Error> {
        self.check_open()?;
        let (producer, rx) = self.ring()?;
        let counters = plain::Arc::new(ConsumerCounters::default());
        let (id, slot) = self.attach(seis, producer, options, &counters)?;
        let gate = plain::Arc::new(Gate::new());
        self.table().insert(
            id,
            ConsumerEntry {
                seis: seis.key().clone(),
                gate: plain::Arc::clone(&gate),
                counters: plain::Arc::clone(&counters),
                fanout: slot,
                thread: None,
                many: None,
            },
        );
        Ok(Subscription::new(
            id,
            rx,
            gate,
            counters,
            plain::Arc::downgrade(&self.shared),
            seis.interval(),
        ))
    }

    fn ring(&self) -> Result<(ring::Producer<Delivery>, ring::Consumer<Delivery>), Error> {
        ring::with_strategy(
            self.shared.builder.ring_capacity,
            self.shared.builder.wait_strategy,
        )
        .map_err(|e| Error::InvalidRequest(e.to_string()))
    }

    fn table(&self) -> std::sync::MutexGuard<'_, HashMap<ConsumerId, ConsumerEntry>> {
        self.shared
            .consumers
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// Hands the producer to `tv-io`, then publishes the consumer in the registry.
    fn attach(
        &self,
        seis: &Seis,
        producer: ring::Producer<Delivery>,
        options: ConsumerOptions,
        counters: &plain::Arc<ConsumerCounters>,
    ) -> Result<(ConsumerId, u32), Error> {
        let shared = &self.shared;
        let deadline = shared.deadline(shared.builder.command_timeout);
        let registered = shared
            .registry
            .load()
            .get(seis.key())
            .is_some_and(|e| std::ptr::eq(&**e.value(), seis));
        if !registered {
            return Err(seis.not_subscribed(seis.feed != shared.feed_id));
        }
        let (reply, waiter) = command::reply();
        shared.commands.send(
            Command::AddConsumer {
                producer,
                updates: options.updates,
                counters: plain::Arc::clone(counters),
                reply,
            },
            deadline,
        )?;
        let slot = waiter.wait(deadline).ok_or_else(|| self.timeout_error())?;
        match shared.registry.insert_consumer(
            seis.key(),
            ConsumerSlot {
                fanout: slot,
                tag: 0,
            },
        ) {
            Some(id) => Ok((id, slot)),
            None => {
                let _ = shared
                    .commands
                    .send(Command::RemoveConsumer { slot }, deadline);
                // Removed (its last hold released) while the consumer was being added.
                Err(seis.not_subscribed(false))
            }
        }
    }

    /// Removes a consumer: after it returns, its callback never runs again (if it was running
    /// at the call, this waited for it to return, at most the command timeout), and a
    /// [`Subscription`]'s `recv` reports [`RecvError::Closed`].
    ///
    /// From the consumer's own callback it returns at once: the consumer is removed, and its
    /// callback never runs again after the current invocation returns.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidRequest`] for an unknown id; [`Error::Timeout`] when the callback was
    /// still running at the timeout (it will not run again after it returns);
    /// [`Error::Shutdown`].
    pub fn del_consumer(&self, id: ConsumerId) -> Result<(), Error> {
        self.check_open()?;
        remove_consumer(&self.shared, id, self.shared.builder.command_timeout)
    }

    /// History through the live connection (its own chart session), with the same typed
    /// errors as [`Client::get_hist`](crate::Client::get_hist). No new connection is opened.
    ///
    /// # Errors
    ///
    /// As [`Client::get_hist`](crate::Client::get_hist); [`Error::Shutdown`].
    pub fn get_hist<S, I>(
        &self,
        symbol: S,
        interval: I,
        n: u32,
        options: &HistOptions,
    ) -> Result<History, Error>
    where
        S: TryInto<Symbol>,
        S::Error: Into<Error>,
        I: TryInto<Interval>,
        I::Error: Into<Error>,
    {
        self.check_open()?;
        let symbol: Symbol = symbol.try_into().map_err(Into::into)?;
        let interval: Interval = interval.try_into().map_err(Into::into)?;
        let request = crate::history::batch::BatchRequest::new(symbol, interval, n, options)?;
        let timeout = self.shared.builder.hist_timeout;
        let deadline = self.shared.deadline(timeout);
        let (reply, waiter) = command::reply();
        self.shared.commands.send(
            Command::GetHist {
                request: Box::new(request),
                timeout,
                reply,
            },
            deadline,
        )?;
        // The engine answers at its own deadline; this one only guards against a lost answer.
        let guard = deadline.and_then(|d| d.checked_add(Duration::from_secs(1)));
        waiter.wait(guard).unwrap_or(Err(Error::Timeout {
            after: timeout,
            during: Phase::Answer,
        }))
    }

    /// The feed's counters and latency histograms (per seis and per consumer).
    pub fn stats(&self) -> Stats {
        let e = &self.shared.engine;
        let link = self.connection();
        let (fetches, races, races_refused) = e.fetch_counts();
        let mut stats = Stats {
            connected: link.connected,
            reconnects: link.reconnects,
            messages: e.messages(),
            bad_messages: e.bad_messages(),
            failed_attempts: link.failed_attempts,
            last_failure: link.last_failure,
            fetches_in_flight: e.fetches_in_flight(),
            fetches,
            races,
            races_refused,
            ..Stats::default()
        };
        for (key, entry) in self.shared.registry.load().iter() {
            stats.seises.push(SeisStats {
                symbol: key.symbol.clone(),
                interval: key.interval,
                closed: entry.value().counters.closed(),
                revised: entry.value().counters.revised(),
                updates: entry.value().counters.updates(),
                holds: entry.value().holds(),
            });
        }
        let table = self.table();
        for (id, c) in table.iter() {
            let s = c.counters.snapshot();
            stats.consumers.push(ConsumerStats {
                id: *id,
                symbol: c.seis.symbol.clone(),
                interval: c.seis.interval,
                pushed: s.pushed,
                delivered: s.delivered,
                lagged: s.lagged,
                lost_closed: s.lost_closed,
                panicked: s.panicked,
                push_to_callback: s.push,
                close_to_callback: s.close,
            });
        }
        stats
    }

    /// The link to the server: up or not, reconnects, and every failed connection attempt
    /// (its number in the outage, its error, when the next one starts). Cheap: a few atomic
    /// loads and, once an attempt has failed, a short lock never held by `tv-io` across I/O.
    ///
    /// # Examples
    ///
    /// Report each failed attempt once, polling:
    ///
    /// ```no_run
    /// # #[allow(dead_code)]
    /// # fn report(feed: &tvdatafeed::LiveFeed, seen: &mut u64) {
    /// let link = feed.connection();
    /// if link.failed_attempts > *seen {
    ///     *seen = link.failed_attempts;
    ///     if let Some(f) = &link.last_failure {
    ///         eprintln!("attempt {} failed: {} (next in {:?})", f.attempt, f.error, f.retry_in);
    ///     }
    /// }
    /// # }
    /// ```
    pub fn connection(&self) -> ConnectionStatus {
        self.shared.engine.connection()
    }

    /// Stops the feed: `tv-io` ends (the socket closes, waiters get [`Error::Shutdown`],
    /// every consumer gets a final [`LiveEvent::Failed`]), and the consumer threads are joined.
    /// Returns within `timeout` whatever the callbacks do, naming every thread that did not
    /// finish. Idempotent: later calls return the first report. `Drop` calls it with a 1 s
    /// timeout; every other call afterwards returns [`Error::Shutdown`].
    ///
    /// From a callback of this feed (or a `LiveFeed` dropped in one) it stops everything the
    /// same way but does not wait for the calling thread: that thread is named in
    /// [`ShutdownReport::caller`], and ends when the callback returns (after one more call,
    /// with the final [`LiveEvent::Failed`]). If another thread's shutdown is already under
    /// way, a callback's call returns at once (that shutdown is waiting for this callback).
    pub fn shutdown(&self, timeout: Duration) -> ShutdownReport {
        let start = clock::monotonic();
        let deadline = start.checked_add(timeout);
        let caller = consumer::running(self.shared.feed_id);
        // Release: pairs with `stopping`'s Acquire in tv-io and the API calls.
        if self.shared.stop.swap(true, Ordering::AcqRel) {
            // Already stopping: wait (bounded) for the first call's report; on a consumer
            // thread, not at all: the first call may be waiting for this very thread.
            loop {
                if let Some(r) = self
                    .report
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .clone()
                {
                    return r;
                }
                if caller.is_some() || deadline.is_some_and(|d| clock::monotonic() >= d) {
                    return ShutdownReport {
                        unfinished: vec!["shutdown in progress".into()],
                        caller: caller.map(|id| format!("tv-consumer-{}", id.get())),
                        elapsed: start.elapsed(),
                    };
                }
                plain::thread::park_timeout(Duration::from_millis(1));
            }
        }
        tracing::info!("live feed shutting down");
        self.shared.commands.wake();
        let mut unfinished = Vec::new();
        let mut caller_thread = None;
        let io = self
            .io
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        if let Some(h) = io {
            if wait_finished(&h, deadline) {
                let _ = h.join();
            } else {
                tracing::warn!(
                    thread = "tv-io",
                    "tv-io did not finish within the shutdown timeout"
                );
                unfinished.push("tv-io".to_owned());
            }
        }
        // The dispatcher threads end once their consumers end (`tv-io`, gone, dropped their
        // rings' producers); each is named with the consumer it is stuck in, if any.
        let dispatchers = self
            .shared
            .dispatch
            .as_ref()
            .map(|pool| {
                pool.stop();
                pool.take_threads()
            })
            .unwrap_or_default();
        let me = plain::thread::current().id();
        for (_, h, report) in dispatchers {
            if h.thread().id() == me {
                // Called from a callback on this dispatcher thread: it cannot join itself.
                caller_thread = Some(report());
                continue;
            }
            if wait_finished(&h, deadline) {
                let _ = h.join();
            } else {
                let name = report();
                tracing::warn!(thread = %name, "dispatcher did not finish within the shutdown timeout");
                unfinished.push(name);
            }
        }
        let entries: Vec<ConsumerEntry> = self.table().drain().map(|(_, e)| e).collect();
        let stragglers: Vec<Straggler> = self
            .shared
            .stragglers
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .drain(..)
            .collect();
        let threads = entries
            .into_iter()
            .filter_map(|e| e.thread)
            .chain(stragglers.into_iter().map(|s| (s.name, s.handle)));
        for (name, h) in threads {
            if h.thread().id() == me {
                // Called from this consumer's callback: it cannot be joined from itself. Its
                // handle is dropped (the thread detaches and ends when the callback returns).
                caller_thread = Some(name);
                continue;
            }
            if wait_finished(&h, deadline) {
                let _ = h.join();
            } else {
                tracing::warn!(thread = %name, "consumer did not finish within the shutdown timeout");
                unfinished.push(name);
            }
        }
        let report = ShutdownReport {
            unfinished,
            caller: caller_thread.or_else(|| caller.map(|id| format!("tv-consumer-{}", id.get()))),
            elapsed: start.elapsed(),
        };
        *self.report.lock().unwrap_or_else(PoisonError::into_inner) = Some(report.clone());
        tracing::info!(
            clean = report.is_clean(),
            unfinished = ?report.unfinished,
            elapsed_ms = u64::try_from(report.elapsed.as_millis()).unwrap_or(u64::MAX),
            "live feed shut down"
        );
        report
    }
}

impl Drop for LiveFeed {
    fn drop(&mut self) {
        let _ = self.shutdown(Duration::from_secs(1));
    }
}

/// Waits for a thread to finish, at most until `deadline`.
fn wait_finished(h: &plain::thread::JoinHandle<()>, deadline: Option<Instant>) -> bool {
    loop {
        if h.is_finished() {
            return true;
        }
        let left = match deadline {
            None => Duration::from_millis(2),
            Some(d) => d.saturating_duration_since(clock::monotonic()),
        };
        if left.is_zero() {
            return false;
        }
        plain::thread::park_timeout(left.min(Duration::from_millis(2)));
    }
}

/// Removes consumer `id` (for `del_consumer` and a dropped [`Subscription`]).
pub(crate) fn remove_consumer(
    shared: &Shared,
    id: ConsumerId,
    timeout: Duration,
) -> Result<(), Error> {
    let deadline = shared.deadline(timeout);
    let removed = shared.registry.remove_consumer(id);
    finish_removal(shared, id, removed, deadline)
}

/// Removes a pull consumer whose handle is being dropped, without waiting: nobody can read
/// its ring any more, so `tv-io` may keep pushing into it until its `RemoveConsumer` command
/// (queued here, behind the registry removal) drops the producer. O(1): one registry update,
/// one table removal, one command.
pub(crate) fn drop_consumer(shared: &Shared, id: ConsumerId) {
    let _ = shared.registry.remove_consumer(id);
    let entry = shared
        .consumers
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .remove(&id);
    if let Some(entry) = entry {
        // No callback runs behind a pull handle: the gate closes at once.
        entry.gate.close_from_inside();
        // A many-seis consumer's routes leave the registry before its slot is freed.
        if let Some(many) = &entry.many {
            for route in many.take_all() {
                let _ = shared.registry.remove_consumer(route);
            }
        }
        let deadline = shared.deadline(Duration::from_secs(1));
        let _ = shared
            .commands
            .send(Command::RemoveConsumer { slot: entry.fanout }, deadline);
    }
}

/// The rest of the consumer-removal contract, after the registry let go of it: wait until
/// `tv-io` no longer holds a snapshot with it, close its gate (waiting for a running callback),
/// drop its producer, and reap its thread.
fn finish_removal(
    shared: &Shared,
    id: ConsumerId,
    removed: Option<crate::registry::Removed<ConsumerSlot>>,
    deadline: Option<Instant>,
) -> Result<(), Error> {
    let entry = shared
        .consumers
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .remove(&id);
    let Some(entry) = entry else {
        // Not a consumer but a many-seis consumer's route (its seis was removed): only that
        // seis leaves the consumer.
        if removed.is_some() {
            remove_many_route(shared, id, deadline);
            return Ok(());
        }
        return Err(Error::InvalidRequest(format!(
            "no consumer {} in this feed",
            id.get()
        )));
    };
    // A many-seis consumer's routes leave the registry before its slot is freed.
    if let Some(many) = &entry.many {
        for route in many.take_all() {
            let _ = shared.registry.remove_consumer(route);
        }
    }
    let left = |d: Option<Instant>| {
        d.map_or(Duration::from_secs(3600), |d| {
            d.saturating_duration_since(clock::monotonic())
        })
    };
    // Called from this consumer's own callback (`del_consumer` of itself, `del_seis` of its
    // seis): its callback is the one running, and would wait for itself until the timeout.
    let own = consumer::running(shared.feed_id) == Some(id);
    let mut timed_out = false;
    if let Some(r) = removed
        && r.wait_unused(left(deadline)).is_err()
    {
        timed_out = true;
    }
    if own {
        entry.gate.close_from_inside();
    } else if !entry.gate.close(left(deadline)) {
        timed_out = true;
    }
    let _ = shared
        .commands
        .send(Command::RemoveConsumer { slot: entry.fanout }, deadline);
    if let Some((name, handle)) = entry.thread {
        if own {
            // It ends when the calling callback returns; `shutdown` joins it.
            shared
                .stragglers
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .push(Straggler { name, handle });
        } else if wait_finished(&handle, deadline) {
            let _ = handle.join();
        } else {
            shared
                .stragglers
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .push(Straggler { name, handle });
        }
    }
    if timed_out {
        return Err(Error::Timeout {
            after: shared.builder.command_timeout,
            during: Phase::Answer,
        });
    }
    Ok(())
}

/// A many-seis consumer's route left the registry (its seis was removed): takes it out of its
/// consumer's routes (whose handle then skips the seis' events) and tells `tv-io` to drop the
/// seis from the consumer's slot.
fn remove_many_route(shared: &Shared, route: ConsumerId, deadline: Option<Instant>) {
    // Table, then routes (the lock order of `many`'s `# Locks`).
    let found = shared
        .consumers
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .values()
        .filter_map(|e| e.many.as_ref())
        .find_map(|m| m.take_route(route).map(|tag| (m.slot, tag)));
    if let Some((slot, tag)) = found {
        let _ = shared
            .commands
            .send(Command::RemoveSeis { slot, tag }, deadline);
    }
}
