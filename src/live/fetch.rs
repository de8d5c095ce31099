//! The fetcher: close confirmations and gap fills over the live connection, as a sans-I/O
//! state machine of its own beside [`Core`](super::core::Core).
//!
//! It owns the fetch chart session's life, the fetches in flight (at most
//! `max_fetches`), the queue of those waiting for room, and one [`State`] per seis. The core
//! says what a seis *needs* ([`Fetcher::want`]); the fetcher decides when a fetch goes out,
//! and asks the core, at that moment, what the fetch must cover ([`Fetcher::pump`]'s plan), so
//! a decision is always taken on the current state, never on a stale one.
//!
//! # No confirmation is lost
//!
//! A need that arrives while a fetch of the same seis is queued is merged into it; one that
//! arrives while a fetch is in flight is kept as that fetch's follow-up and queued the moment
//! the fetch ends (answered, failed or cancelled), when the plan decides again whether it is
//! still needed. So a bar whose close timer fires while an older fetch is in flight is
//! confirmed after it, never dropped (the old core returned early and the bar waited for the
//! next trade).
//!
//! # Small requests
//!
//! A confirmation asks for the bars from the last one delivered (its anchor, included, so the
//! answer shows it reached back) to now, plus [`SLACK_BARS`] for an answer served late: a
//! count of 2 or 3 in the usual case, not a gap fill's `max_gap_bars`. An answer that does not
//! reach back to its anchor (a server that filled the window from a later "now") delivers
//! nothing and is asked again with the full window. Each symbol is resolved once per fetch
//! chart session ([`ChartConfig::reuse_symbols`]), ahead of its first fetch
//! ([`Fetcher::prepare`]): a confirmation costs one `create_series` (and a `remove_series`,
//! which the server does not answer), and the server keeps one resolved symbol per seis. When
//! the stream closes a bar first, the confirmation in flight for it is cancelled at once
//! (`remove_series`), freeing its slot.
//!
//! # The close grace, learned per seis, and the race
//!
//! See [`Grace`]. Where a fetch at the floor is answered sooner than a seis' stream usually
//! closes its bars, the close races the stream (a fetch at the floor) while the
//! [`RaceBudget`] holds one ([`Fetcher::close_grace`]).

use std::{
    cell::Cell,
    collections::VecDeque,
    time::{Duration, Instant},
};

use super::stats::EngineCounters;
use crate::{
    det::DetHashMap,
    protocol::{ChartConfig, ChartId, Connection, SeriesKey, SeriesRequest, SymbolSpec},
    sync::plain::Arc,
};

/// Bars a confirmation asks beyond those from its anchor to now, for an answer served late.
pub(crate) const SLACK_BARS: u64 = 2;
/// Stream-close observations kept per seis for its grace.
const GRACE_WINDOW: usize = 16;
/// An observation: the stream did not close the bar before a fetch did, and has not since.
const MISS: u32 = u32::MAX;

/// What a seis needs fetched.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Need {
    /// Confirm every bar up to the one opening at this time (a close), or, for a gap, the bar
    /// after which the gap starts is delivered and everything since is wanted.
    pub(crate) upto: i64,
    /// A gap fill: the main series is held until its answer.
    pub(crate) gap: bool,
    /// Ask the full `max_gap_bars` window (a short one did not reach back).
    pub(crate) wide: bool,
}

impl Need {
    fn merge(self, other: Self) -> Self {
        Self {
            upto: self.upto.max(other.upto),
            gap: self.gap || other.gap,
            wide: self.wide || other.wide,
        }
    }
}

/// One seis' fetch state. Invariant: `Queued` iff the seis is in [`Fetcher::queue`] (once);
/// `InFlight { key, .. }` iff [`Fetcher::inflight`] has `key` for it; at most one fetch in
/// flight per seis.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum State {
    /// Nothing wanted.
    Idle,
    /// Waiting for room.
    Queued(Need),
    /// Asked; `next` is what was wanted since (queued when this one ends).
    InFlight { key: u64, next: Option<Need> },
}

/// A fetch in flight.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Fetch {
    pub(crate) seis: u64,
    /// The newest bar it confirms (a close) or the bar its gap starts after.
    pub(crate) upto: i64,
    /// The first open time it asked for (the last bar delivered when it was asked).
    pub(crate) anchor: i64,
    /// Wall-clock ms when it was asked: a bar that closed before it is final.
    pub(crate) asked_at: i64,
    /// It fills a reconnect's or a skip's gap (the main series is held meanwhile).
    pub(crate) gap: bool,
    /// It asked the full window (not a confirmation's short count).
    pub(crate) wide: bool,
}

/// What the core decides a queued need becomes when its turn comes.
#[derive(Debug, Clone)]
pub(crate) struct Plan {
    /// The seis' span, the parent of the fetch's log events.
    pub(crate) span: tracing::Span,
    pub(crate) request: SeriesRequest,
    pub(crate) anchor: i64,
    pub(crate) need: Need,
}

/// The settings of the fetcher.
#[derive(Debug, Clone, Copy)]
pub(crate) struct FetchConfig {
    pub(crate) max_fetches: usize,
    /// Most fetches a minute that race the stream ([`RaceBudget`]).
    pub(crate) race_per_minute: u32,
    /// The fetch chart session is replaced (when idle) once it resolved more symbols than
    /// this and than twice the seises: bounds the server's state when seises come and go.
    pub(crate) rotate_after: u64,
    pub(crate) grace: GraceConfig,
}

#[derive(Debug)]
struct SeisFetch {
    state: Option<State>,
    grace: Grace,
    /// What its fetches resolve, and what [`Fetcher::prepare`] resolves ahead.
    spec: SymbolSpec,
    /// In [`Fetcher::ahead`] (once).
    ahead: bool,
}

/// The fetches of the live connection. See the module docs.
#[derive(Debug)]
pub(crate) struct Fetcher {
    cfg: FetchConfig,
    chart: ChartId,
    inflight: DetHashMap<u64, Fetch>,
    /// Seises whose state is `Queued`, oldest first (each once).
    queue: VecDeque<u64>,
    /// Seises whose symbol the fetch chart session should resolve ahead of their first fetch
    /// ([`Fetcher::prepare`]), each once: sent when no main series is loading.
    ahead: VecDeque<u64>,
    seises: DetHashMap<u64, SeisFetch>,
    next_key: u64,
    /// Fetches ever asked, and confirmations cancelled because the stream closed first.
    pub(crate) asked: u64,
    pub(crate) cancelled: u64,
    /// How long fetches take to be answered (ms, a moving average, ask to answer): a fetch
    /// that cannot beat the stream is not worth its request. `None` until a fetch was
    /// answered: nothing races blindly (on a slow server a race would only queue ahead of
    /// the quiet seises' confirmations). A seis' first bar, shown by its subscription's
    /// history, is confirmed by a fetch at the floor, which measures it.
    answer_ms: Option<u32>,
    /// Where the number in flight is published, each time it changes.
    stats: Arc<EngineCounters>,
    /// What racing the stream may still spend. A `Cell`: the grace is looked up through a
    /// shared borrow while the core holds a seis mutably (one thread, `tv-io`, owns it all).
    budget: Cell<RaceBudget>,
}

/// How many fetches racing the stream may still go out: a token bucket holding
/// `per_minute`, refilled at `per_minute` a minute (`u32::MAX`: no limit; 0: no racing).
#[derive(Debug, Clone, Copy)]
pub(crate) struct RaceBudget {
    per_minute: u32,
    /// In 1/60,000 of a fetch: a millisecond refills `per_minute` of them.
    credit: u64,
    /// When it was last refilled (wall-clock ms).
    at_ms: Option<i64>,
}

/// A fetch, in [`RaceBudget::credit`]'s unit.
const RACE_COST: u64 = 60_000;

impl RaceBudget {
    /// A full bucket of `per_minute`.
    pub(crate) fn new(per_minute: u32) -> Self {
        Self {
            per_minute,
            credit: u64::from(per_minute).saturating_mul(RACE_COST),
            at_ms: None,
        }
    }

    /// Takes one fetch at `unix_ms` if the bucket holds one.
    fn take(&mut self, unix_ms: i64) -> bool {
        match self.per_minute {
            0 => return false,
            u32::MAX => return true,
            _ => {}
        }
        let cap = u64::from(self.per_minute).saturating_mul(RACE_COST);
        if let Some(at) = self.at_ms {
            let elapsed = u64::try_from(unix_ms.saturating_sub(at)).unwrap_or(0);
            self.credit = self
                .credit
                .saturating_add(elapsed.saturating_mul(u64::from(self.per_minute)))
                .min(cap);
        }
        // A wall clock stepped back refills nothing until it is past `at` again.
        self.at_ms = Some(self.at_ms.map_or(unix_ms, |at| at.max(unix_ms)));
        if self.credit >= RACE_COST {
            self.credit -= RACE_COST;
            true
        } else {
            false
        }
    }
}

/// The fetch chart session's configuration.
pub(crate) fn fetch_chart() -> ChartConfig {
    ChartConfig::default()
        .with_load_timeout(Duration::from_secs(10))
        .with_reuse_symbols(true)
}

impl Fetcher {
    pub(crate) fn new(cfg: FetchConfig, chart: ChartId, stats: Arc<EngineCounters>) -> Self {
        Self {
            cfg,
            chart,
            inflight: DetHashMap::default(),
            queue: VecDeque::new(),
            ahead: VecDeque::new(),
            seises: DetHashMap::default(),
            // Fetch keys live in the fetch chart's key space only; they start high so that a
            // mixed-up key never names a main-series seis.
            next_key: 1 << 62,
            asked: 0,
            cancelled: 0,
            answer_ms: None,
            budget: Cell::new(RaceBudget::new(cfg.race_per_minute)),
            stats,
        }
    }

    /// The fetch chart session.
    pub(crate) fn chart(&self) -> ChartId {
        self.chart
    }

    /// Takes fetch `key` out of flight and tells the server to drop its series.
    fn drop_series(&mut self, conn: &mut Connection, key: u64) -> Option<Fetch> {
        let f = self.inflight.remove(&key);
        self.stats.set_fetches_in_flight(self.inflight.len());
        if let Some(c) = conn.chart_mut(self.chart) {
            let _ = c.remove_series(SeriesKey(key));
        }
        f
    }

    pub(crate) fn add_seis(&mut self, id: u64, spec: SymbolSpec) {
        self.seises.entry(id).or_insert_with(|| SeisFetch {
            state: None,
            grace: Grace::new(),
            spec,
            ahead: false,
        });
    }

    /// Seis `id` is live on this connection: its symbol is resolved in the fetch chart session
    /// ahead of its first fetch (once no main series is loading, so that it never delays a
    /// subscription), and a confirmation then costs one request on the server, not two. The
    /// resolutions go out together once the subscriptions loaded: on a serial server a
    /// boundary that comes before they were served waits behind them, once.
    pub(crate) fn prepare(&mut self, id: u64) {
        if let Some(s) = self.seises.get_mut(&id)
            && !s.ahead
        {
            s.ahead = true;
            self.ahead.push_back(id);
        }
    }

    /// Sends the resolutions [`Fetcher::prepare`] asked for, unless `main_loading`.
    fn resolve_ahead(&mut self, conn: &mut Connection, main_loading: bool) {
        if main_loading || self.ahead.is_empty() {
            return;
        }
        let Some(chart) = conn.chart_mut(self.chart) else {
            return;
        };
        while let Some(id) = self.ahead.pop_front() {
            if let Some(s) = self.seises.get_mut(&id) {
                s.ahead = false;
                chart.resolve_ahead(&s.spec);
            }
        }
    }

    /// Forgets seis `id`, cancelling its fetch in flight.
    pub(crate) fn remove_seis(&mut self, conn: &mut Connection, id: u64) {
        if let Some(sf) = self.seises.remove(&id) {
            match sf.state {
                Some(State::InFlight { key, .. }) => {
                    self.drop_series(conn, key);
                }
                Some(State::Queued(_)) => self.queue.retain(|s| *s != id),
                _ => {}
            }
            if sf.ahead {
                self.ahead.retain(|s| *s != id);
            }
        }
    }

    pub(crate) fn state(&self, id: u64) -> State {
        self.seises
            .get(&id)
            .and_then(|s| s.state)
            .unwrap_or(State::Idle)
    }

    fn set(&mut self, id: u64, state: State) {
        if let Some(s) = self.seises.get_mut(&id) {
            s.state = (state != State::Idle).then_some(state);
        }
    }

    /// Seis `id` needs `need`: queued, merged into what is queued, or kept as the follow-up
    /// of the fetch in flight. Never dropped.
    pub(crate) fn want(&mut self, id: u64, need: Need) {
        match self.state(id) {
            State::Idle => {
                if self.seises.contains_key(&id) {
                    self.set(id, State::Queued(need));
                    self.queue.push_back(id);
                }
            }
            State::Queued(n) => self.set(id, State::Queued(n.merge(need))),
            State::InFlight { key, next } => self.set(
                id,
                State::InFlight {
                    key,
                    next: Some(next.map_or(need, |n| n.merge(need))),
                },
            ),
        }
    }

    /// The fetch in flight for seis `id`, if any.
    pub(crate) fn in_flight_mut(&mut self, id: u64) -> Option<&mut Fetch> {
        match self.state(id) {
            State::InFlight { key, .. } => self.inflight.get_mut(&key),
            _ => None,
        }
    }

    /// The fetch `key` is in flight.
    pub(crate) fn get(&self, key: u64) -> Option<Fetch> {
        self.inflight.get(&key).copied()
    }

    /// Whether a fetch may start: fewer than `max_fetches` in flight, and the fetch chart
    /// session not due for replacement.
    fn room(&self, conn: &Connection) -> bool {
        self.inflight.len() < self.cfg.max_fetches && !self.rotation_due(conn)
    }

    fn rotation_due(&self, conn: &Connection) -> bool {
        let resolved = conn.chart(self.chart).map_or(0, |c| c.resolved_symbols()) as u64;
        let bound = self
            .cfg
            .rotate_after
            .max(2 * self.seises.len() as u64)
            .max(1);
        resolved >= bound
    }

    /// Starts the queued fetches there is room for, oldest first: `plan` decides, at this
    /// moment, what each must ask (or that it is no longer needed). Then, unless
    /// `main_loading`, resolves the symbols [`Fetcher::prepare`] asked for.
    pub(crate) fn pump(
        &mut self,
        conn: &mut Connection,
        now: Instant,
        unix_ms: i64,
        main_loading: bool,
        mut plan: impl FnMut(u64, Need) -> Option<Plan>,
    ) {
        self.rotate(conn, now);
        self.start(conn, now, unix_ms, &mut plan);
        self.resolve_ahead(conn, main_loading);
    }

    fn start(
        &mut self,
        conn: &mut Connection,
        now: Instant,
        unix_ms: i64,
        plan: &mut impl FnMut(u64, Need) -> Option<Plan>,
    ) {
        while self.room(conn) {
            let Some(id) = self.queue.pop_front() else {
                return;
            };
            let State::Queued(need) = self.state(id) else {
                continue;
            };
            self.set(id, State::Idle);
            let Some(Plan {
                span,
                request,
                anchor,
                need,
            }) = plan(id, need)
            else {
                continue;
            };
            self.next_key += 1;
            let key = self.next_key;
            let added = conn
                .chart_mut(self.chart)
                .map(|c| c.add_series(now, SeriesKey(key), request));
            if let Some(Ok(())) = added {
                self.asked += 1;
                self.stats.record_fetch();
                tracing::debug!(
                    parent: &span,
                    upto = need.upto,
                    anchor,
                    gap = need.gap,
                    wide = need.wide,
                    grace_ms = u64::try_from(self.grace(id, false).as_millis()).unwrap_or(u64::MAX),
                    in_flight = self.inflight.len() + 1,
                    "fetch asked"
                );
                self.inflight.insert(
                    key,
                    Fetch {
                        seis: id,
                        upto: need.upto,
                        anchor,
                        asked_at: unix_ms,
                        gap: need.gap,
                        wide: need.wide,
                    },
                );
                self.stats.set_fetches_in_flight(self.inflight.len());
                self.set(id, State::InFlight { key, next: None });
            }
        }
    }

    /// Replaces the fetch chart session by a fresh one once it resolved more symbols than it
    /// should keep and nothing is in flight (`chart_delete_session` frees what the server
    /// keeps for it). New fetches wait meanwhile, so it drains within one round trip.
    fn rotate(&mut self, conn: &mut Connection, now: Instant) {
        if self.inflight.is_empty() && self.rotation_due(conn) {
            conn.remove_chart(self.chart);
            self.chart = conn.add_chart(now, fetch_chart());
            // The new session has resolved nothing: every seis is resolved ahead again.
            for (id, s) in &mut self.seises {
                if !s.ahead {
                    s.ahead = true;
                    self.ahead.push_back(*id);
                }
            }
        }
    }

    /// Fetch `key` ended (answered or failed): its series goes, and the seis' follow-up need,
    /// if any, is queued. Returns what it was.
    pub(crate) fn end(&mut self, conn: &mut Connection, key: u64) -> Option<Fetch> {
        if !self.inflight.contains_key(&key) {
            return None;
        }
        let f = self.drop_series(conn, key)?;
        if let State::InFlight { key: k, next } = self.state(f.seis)
            && k == key
        {
            self.set(f.seis, State::Idle);
            if let Some(n) = next {
                self.want(f.seis, n);
            }
        }
        Some(f)
    }

    /// The stream closed seis `id`'s bar `bar`: a confirmation in flight that covers nothing
    /// newer is cancelled (its slot frees at once); a queued one is left for the plan to drop.
    pub(crate) fn stream_closed(&mut self, conn: &mut Connection, id: u64, bar: i64) {
        if let State::InFlight { key, next } = self.state(id)
            && let Some(f) = self.inflight.get(&key)
            && !f.gap
            && f.upto <= bar
        {
            self.cancelled += 1;
            if let Some(s) = self.seises.get_mut(&id) {
                s.grace.useless(bar);
            }
            self.drop_series(conn, key);
            self.set(id, State::Idle);
            if let Some(n) = next.filter(|n| n.gap || n.upto > bar) {
                self.want(id, n);
            }
        }
    }

    /// The connection is gone: nothing is in flight or queued any more (the gap fill covers
    /// their bars); the chart session itself is cleared and replayed by the core.
    pub(crate) fn clear(&mut self) {
        self.inflight.clear();
        self.stats.set_fetches_in_flight(0);
        self.queue.clear();
        // Each seis is prepared again when its history is replayed on the new connection.
        self.ahead.clear();
        for s in self.seises.values_mut() {
            s.state = None;
            s.ahead = false;
        }
    }

    /// Fetches waiting for room.
    #[cfg(any(test, fuzzing))]
    pub(crate) fn queued(&self) -> usize {
        self.queue.len()
    }

    /// Fetches in flight.
    #[cfg(test)]
    pub(crate) fn in_flight(&self) -> usize {
        self.inflight.len()
    }

    /// Seis `id`'s close grace without racing the stream, for a bar first seen now from the
    /// stream (`streamed`) or from history or a fetch.
    pub(crate) fn grace(&self, id: u64, streamed: bool) -> Duration {
        self.graces(id, streamed).0
    }

    /// (the grace without racing, whether a fetch at the floor would beat the stream).
    fn graces(&self, id: u64, streamed: bool) -> (Duration, bool) {
        let g = &self.cfg.grace;
        let seis = self.seises.get(&id);
        match seis.and_then(|s| s.grace.current) {
            Some(c) => (c.wait, c.race),
            // Nothing learned yet: a bar the stream opened is closed by the stream's next one
            // (wait the ceiling), or raced where a fetch beats the latest the stream has closed
            // a bar so far (the ceiling before it closed any); one only history or a fetch
            // showed is quiet (the floor).
            None if streamed => {
                let stream = seis
                    .and_then(|s| s.grace.latest_seen())
                    .unwrap_or(g.ceiling);
                (
                    g.ceiling.max(g.floor),
                    g.race && beats(g.floor, self.answer_ms, stream),
                )
            }
            None => (g.floor, false),
        }
    }

    /// The grace of seis `id`'s bar first seen now (at `unix_ms`): where a fetch at the floor
    /// beats the stream and the race budget holds one, the floor (and the budget pays);
    /// otherwise [`Fetcher::grace`]. Worked out once per bar, not per message.
    pub(crate) fn close_grace(&self, id: u64, streamed: bool, unix_ms: i64) -> Duration {
        let (wait, race) = self.graces(id, streamed);
        let floor = self.cfg.grace.floor;
        if !race || wait <= floor {
            return wait;
        }
        let mut b = self.budget.get();
        let took = b.take(unix_ms);
        self.budget.set(b);
        self.stats.record_race(took);
        if took { floor } else { wait }
    }

    /// The stream showed seis `id`'s bar `bar` (of `len_ms`) closed `late_ms` after its
    /// close time.
    pub(crate) fn observe_stream_close(&mut self, id: u64, bar: i64, late_ms: i64, len_ms: i64) {
        let answer_ms = self.answer_ms;
        if let Some(s) = self.seises.get_mut(&id) {
            s.grace
                .stream(bar, late_ms, len_ms, &self.cfg.grace, answer_ms);
        }
    }

    /// A fetch closed seis `id`'s bar `bar` before the stream did.
    pub(crate) fn observe_fetch_close(&mut self, id: u64, bar: i64) {
        let answer_ms = self.answer_ms;
        if let Some(s) = self.seises.get_mut(&id) {
            s.grace.fetched(bar, &self.cfg.grace, answer_ms);
        }
    }

    /// A fetch was answered `ms` after it was asked.
    pub(crate) fn observe_answer(&mut self, ms: i64) {
        let ms = u32::try_from(ms.max(0)).unwrap_or(u32::MAX);
        // A moving average over about four answers.
        self.answer_ms = Some(self.answer_ms.map_or(ms, |a| a - a / 4 + ms / 4));
    }
}

/// Whether a fetch sent `at` after a close and answered in `answer_ms` (not known yet: no)
/// comes at least 2 ms sooner than `stream`, when the stream closes the bar.
fn beats(at: Duration, answer_ms: Option<u32>, stream: Duration) -> bool {
    answer_ms.is_some_and(|a| {
        at.as_millis()
            .saturating_add(u128::from(a))
            .saturating_add(2)
            < stream.as_millis()
    })
}

/// The grace policy's knobs.
#[derive(Debug, Clone, Copy)]
pub(crate) struct GraceConfig {
    /// The least grace, and a quiet seis' grace.
    pub(crate) floor: Duration,
    /// The most grace. Equal to `floor`: a fixed grace, nothing learned.
    pub(crate) ceiling: Duration,
    /// Race the stream: fetch at the floor whenever a fetch is answered sooner than the stream
    /// usually closes the bar (the lowest latency, at a request per close), within the
    /// [`RaceBudget`].
    pub(crate) race: bool,
}

/// What a seis' [`Grace`] learned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Learned {
    /// How long after a close to wait for the stream before a fetch confirms it.
    pub(crate) wait: Duration,
    /// Racing is on and a fetch at the floor is answered sooner than the stream usually
    /// closes the bar (the budget decides, bar by bar, whether it goes).
    pub(crate) race: bool,
}

/// How late the stream closes one seis' bars, learned from its recent bars.
///
/// After a bar's close time, the engine waits this seis' grace for the stream to show the next
/// bar (which closes it) before a fetch confirms the close. The grace is:
///
/// - the floor while fewer than 3 of its last [`GRACE_WINDOW`] bars were observed;
/// - the floor when more than a quarter of them were closed by a fetch that the stream never
///   caught up with before the next bar (or later than the ceiling): a quiet market, fetched
///   at once;
/// - otherwise the 90th percentile of how late the stream closed them, plus an eighth (at
///   least 2 ms), between the floor and the ceiling: a streaming market is closed by its own
///   next trade, and a fetch goes out only when that trade is later than usual.
#[derive(Debug, Clone)]
pub(crate) struct Grace {
    /// (bar open time, ms late or [`MISS`]), oldest first; its capacity is reserved up front
    /// (nothing allocates per bar).
    seen: VecDeque<(i64, u32)>,
    /// Bars (of the last [`GRACE_WINDOW`]) whose confirmation the stream beat: the fetch was
    /// sent and was useless.
    useless: VecDeque<i64>,
    /// The grace worked out from `seen`; `None` until enough was seen (or learning is off).
    current: Option<Learned>,
    /// The length of this seis' bars (ms), as last seen.
    len_ms: u32,
}

impl Grace {
    fn new() -> Self {
        Self {
            seen: VecDeque::with_capacity(GRACE_WINDOW),
            useless: VecDeque::with_capacity(GRACE_WINDOW),
            current: None,
            len_ms: u32::MAX,
        }
    }

    fn push(&mut self, bar: i64, late: u32) {
        if let Some(last) = self.seen.back_mut()
            && last.0 == bar
        {
            // The same bar again: the stream's close after a fetch's replaces the miss.
            if late != MISS {
                last.1 = late;
            }
            return;
        }
        if self.seen.back().is_some_and(|l| l.0 > bar) {
            return;
        }
        if self.seen.len() == GRACE_WINDOW {
            self.seen.pop_front();
        }
        self.seen.push_back((bar, late));
    }

    /// The stream closed `bar` (of `len_ms`) `late_ms` after its close time. Later than the
    /// bar's own length is a miss: the next bar had no trade (a thin market).
    fn stream(
        &mut self,
        bar: i64,
        late_ms: i64,
        len_ms: i64,
        cfg: &GraceConfig,
        answer_ms: Option<u32>,
    ) {
        self.len_ms = u32::try_from(len_ms.max(1)).unwrap_or(u32::MAX);
        let late = if late_ms >= len_ms.max(1) {
            MISS
        } else {
            u32::try_from(late_ms.max(0)).unwrap_or(MISS - 1)
        };
        self.push(bar, late);
        self.current = self.grace(cfg, answer_ms);
    }

    /// The latest the stream closed one of the bars seen, if it closed any.
    fn latest_seen(&self) -> Option<Duration> {
        self.seen
            .iter()
            .map(|s| s.1)
            .filter(|l| *l != MISS)
            .max()
            .map(|l| Duration::from_millis(u64::from(l)))
    }

    /// The stream closed `bar` while its confirmation was in flight.
    fn useless(&mut self, bar: i64) {
        if self.useless.len() == GRACE_WINDOW {
            self.useless.pop_front();
        }
        self.useless.push_back(bar);
    }

    fn fetched(&mut self, bar: i64, cfg: &GraceConfig, answer_ms: Option<u32>) {
        self.push(bar, MISS);
        self.current = self.grace(cfg, answer_ms);
    }

    /// Whether the stream beat more than two of the recent bars' confirmations (sent at the
    /// ceiling: a busy server answers them later than the stream closes the bar).
    fn fetches_lose(&self) -> bool {
        let oldest = self.seen.front().map_or(i64::MIN, |s| s.0);
        self.useless.iter().filter(|b| **b >= oldest).count() > 2
    }

    fn grace(&self, cfg: &GraceConfig, answer_ms: Option<u32>) -> Option<Learned> {
        if cfg.ceiling <= cfg.floor {
            return Some(Learned {
                wait: cfg.floor,
                race: false,
            });
        }
        if self.seen.len() < 3 {
            return None;
        }
        let ceiling_ms = u32::try_from(cfg.ceiling.as_millis()).unwrap_or(MISS - 1);
        let floor_ms = u32::try_from(cfg.floor.as_millis()).unwrap_or(MISS - 1);
        // On the stack: at most `GRACE_WINDOW` observations.
        let mut late = [0u32; GRACE_WINDOW];
        let mut n = 0;
        for l in self.seen.iter().map(|s| s.1).filter(|l| *l != MISS) {
            late[n] = l;
            n += 1;
        }
        let misses = self.seen.len() - n;
        if misses * 4 > self.seen.len() || n == 0 {
            return Some(Learned {
                wait: cfg.floor,
                race: false,
            });
        }
        let late = &mut late[..n];
        late.sort_unstable();
        let q90 = late[(n * 9).div_ceil(10) - 1];
        let q50 = late[(n - 1) / 2];
        let want = q90.saturating_add((q90 / 8).max(2)).max(floor_ms);
        // Whether a fetch sent `at` ms after the close is answered sooner than the stream
        // usually closes the bar (no answer seen yet: assumed quick, a fetch at the ceiling
        // is not a race).
        let sooner = |at: u32| at.saturating_add(answer_ms.unwrap_or(0)).saturating_add(2) < q50;
        // Racing is on, and a fetch sent at the floor is known to be answered sooner.
        let race = cfg.race
            && beats(cfg.floor, answer_ms, Duration::from_millis(u64::from(q50)))
            && !self.fetches_lose();
        let ms = if want <= ceiling_ms {
            want
        } else if q50.saturating_add((q50 / 8).max(2)) <= ceiling_ms {
            // Usually on time, sometimes very late (a stall, a lull): the late ones are
            // fetched at the ceiling.
            ceiling_ms
        } else if sooner(ceiling_ms) && !self.fetches_lose() {
            // The stream is usually later than the ceiling, and a fetch sent then is answered
            // sooner than the stream's close: worth its request.
            ceiling_ms
        } else {
            // The stream is usually later than the ceiling and a fetch could not beat it: wait
            // for it, and fetch only when it is later than usual (never a whole bar later).
            want.min(self.len_ms.saturating_sub(1).max(ceiling_ms))
        };
        Some(Learned {
            wait: Duration::from_millis(u64::from(ms)),
            race,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg() -> GraceConfig {
        GraceConfig {
            floor: Duration::from_millis(5),
            ceiling: Duration::from_millis(250),
            race: false,
        }
    }

    #[test]
    fn racing_fetches_at_the_floor_only_while_a_fetch_wins() {
        let race = GraceConfig {
            race: true,
            ..cfg()
        };
        let mut g = Grace::new();
        for bar in 0..16 {
            g.stream(bar, 50, 1_000, &race, Some(2));
        }
        assert_eq!(
            g.current,
            Some(Learned {
                wait: Duration::from_millis(56),
                race: true
            }),
            "2 ms answers beat a 50 ms tick"
        );
        let mut g = Grace::new();
        for bar in 0..16 {
            g.stream(bar, 50, 1_000, &race, Some(60));
        }
        assert_eq!(
            g.current,
            Some(Learned {
                wait: Duration::from_millis(56),
                race: false
            }),
            "60 ms answers do not"
        );
        let mut g = Grace::new();
        for bar in 0..16 {
            g.stream(bar, 50, 1_000, &cfg(), Some(2));
        }
        assert!(!g.current.is_some_and(|c| c.race), "racing is off");
        let mut g = Grace::new();
        for bar in 0..16 {
            g.stream(bar, 50, 1_000, &race, None);
        }
        assert!(
            !g.current.is_some_and(|c| c.race),
            "no answer seen yet: nothing races blindly"
        );
    }

    #[test]
    fn the_race_budget_refills_at_its_rate_and_holds_no_more_than_a_minute() {
        let mut b = RaceBudget::new(3);
        assert!((0..3).all(|_| b.take(1_000)), "a full bucket of 3");
        assert!(!b.take(1_000), "empty");
        assert!(!b.take(20_999), "a third of a minute later: not yet one");
        assert!(b.take(21_000), "one refilled after 20 s");
        assert!(!b.take(21_000));
        // An hour idle refills a minute's worth, no more.
        assert!((0..3).all(|_| b.take(3_621_000)));
        assert!(!b.take(3_621_000));
        // A clock stepped back refills nothing.
        assert!(!b.take(0));
        assert!(!b.take(3_621_000));
        let mut off = RaceBudget::new(0);
        assert!(!off.take(0) && !off.take(i64::MAX));
        let mut unlimited = RaceBudget::new(u32::MAX);
        assert!((0..10_000).all(|_| unlimited.take(0)));
    }

    #[test]
    fn a_streaming_seis_learns_its_phase() {
        let mut g = Grace::new();
        assert_eq!(g.grace(&cfg(), Some(1)), None, "nothing seen yet");
        for bar in 0..16 {
            g.stream(bar, 37 + bar % 3, 1_000, &cfg(), Some(1));
        }
        // q90 of 37..=39 is 39, plus max(39/8, 2) = 4.
        assert_eq!(g.current.map(|c| c.wait), Some(Duration::from_millis(43)));
    }

    #[test]
    fn a_quiet_seis_is_fetched_at_the_floor() {
        let mut g = Grace::new();
        for bar in 0..16 {
            if bar % 2 == 0 {
                g.fetched(bar, &cfg(), Some(1));
            } else {
                g.stream(bar, 40, 1_000, &cfg(), Some(1));
            }
        }
        assert_eq!(g.current.map(|c| c.wait), Some(Duration::from_millis(5)));
    }

    #[test]
    fn a_stream_close_after_a_fetch_replaces_the_miss() {
        let mut g = Grace::new();
        for bar in 0..16 {
            g.fetched(bar, &cfg(), Some(1));
            g.stream(bar, 30, 1_000, &cfg(), Some(1));
        }
        assert_eq!(g.current.map(|c| c.wait), Some(Duration::from_millis(33)));
    }

    #[test]
    fn the_ceiling_bounds_it_and_a_fixed_grace_learns_nothing() {
        let mut g = Grace::new();
        for bar in 0..16 {
            g.stream(bar, 240, 1_000, &cfg(), Some(1));
        }
        // 240 + 240/8 = 270, past the ceiling: but the stream is sooner than a fetch sent at
        // the ceiling could be, so it waits for the stream.
        assert_eq!(g.current.map(|c| c.wait), Some(Duration::from_millis(270)));
        // A stream later than the ceiling: fetched at the ceiling while a fetch is answered
        // sooner than the stream closes, waited for when fetches are slower.
        let mut g = Grace::new();
        for bar in 0..16 {
            g.stream(bar, 400, 1_000, &cfg(), Some(1));
        }
        assert_eq!(g.current.map(|c| c.wait), Some(Duration::from_millis(250)));
        let mut g = Grace::new();
        for bar in 0..16 {
            g.stream(bar, 400, 1_000, &cfg(), Some(900));
        }
        assert_eq!(g.current.map(|c| c.wait), Some(Duration::from_millis(450)));
        // Usually on time, once 3 s late (a stall): the late one is fetched at the ceiling, the
        // grace does not grow to the outlier.
        let mut g = Grace::new();
        for bar in 0..5 {
            g.stream(
                bar,
                if bar == 3 { 3_000 } else { 0 },
                5_000,
                &cfg(),
                Some(1),
            );
        }
        assert_eq!(g.current.map(|c| c.wait), Some(Duration::from_millis(250)));
        // Later than a whole bar: the next bar had no trade, a miss (a thin market).
        let mut g = Grace::new();
        for bar in 0..16 {
            g.stream(bar, 3_000, 1_000, &cfg(), Some(1));
        }
        assert_eq!(g.current.map(|c| c.wait), Some(Duration::from_millis(5)));
        let fixed = GraceConfig {
            floor: Duration::from_millis(20),
            ceiling: Duration::from_millis(20),
            race: false,
        };
        assert_eq!(
            g.grace(&fixed, Some(1)).map(|c| c.wait),
            Some(Duration::from_millis(20))
        );
    }
}
