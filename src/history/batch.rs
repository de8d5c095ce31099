//! Many historical downloads over one connection, sans I/O: the state machine behind
//! [`Client::get_hist_many`](super::Client::get_hist_many) and [`Client::get_hist`](super::Client::get_hist),
//! and the one the live engine drives on its own connection.
//!
//! A [`HistBatch`] opens the series of its requests in a chart session of a
//! [`Connection`], at most [`BatchConfig::max_in_flight`] at a time, consumes the connection's
//! events, and queues one result per request as each series completes, fails or misses its
//! deadline; a finished series is removed from the chart at once, so its slot goes to the next
//! request. Paging past one request's limit is the chart session's.
//!
//! What it may not do: sockets, threads, clocks (time is a parameter), or blocking. It owns
//! nothing of the connection: the caller sends what the connection transmits and feeds it what
//! arrives.
#![forbid(unsafe_code)]

use std::{
    collections::VecDeque,
    time::{Duration, Instant},
};

use super::{HistOptions, HistRequest, History, MAX_BARS};
use crate::{
    Error, Interval, Symbol,
    error::Phase,
    protocol::{
        ChartEvent, ChartId, Connection, Event, SeriesEvent, SeriesFailure, SeriesKey,
        SeriesRequest, SymbolInfo, SymbolSpec, TradingSession,
    },
};

/// One download of a batch, validated: what to open and what to answer with.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct BatchRequest {
    symbol: Symbol,
    interval: Interval,
    series: SeriesRequest,
    /// Closed bars asked for (`None` for a date range).
    requested: Option<u32>,
}

impl BatchRequest {
    /// The last `n` closed bars of `symbol` at `interval`, or, with `options.range`, the bars
    /// of that range (at most `n`), as [`Client::get_hist`](super::Client::get_hist) means them.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidRequest`] for `n == 0` or above [`MAX_BARS`] (count mode), or a
    /// reversed range.
    pub(crate) fn new(
        symbol: Symbol,
        interval: Interval,
        n: u32,
        options: &HistOptions,
    ) -> Result<Self, Error> {
        if options.range.is_none() && !(1..=MAX_BARS).contains(&n) {
            return Err(Error::InvalidRequest(format!(
                "bar count {n} is outside 1..={MAX_BARS}"
            )));
        }
        if let Some((from, to)) = options.range
            && from > to
        {
            return Err(Error::InvalidRequest(format!(
                "range start {from} is after its end {to}"
            )));
        }
        let mut spec = SymbolSpec::new(symbol.clone())
            .with_adjustment(options.adjustment)
            .with_back_adjustment(options.back_adjustment)
            .with_session(if options.extended_session {
                TradingSession::Extended
            } else {
                TradingSession::Regular
            });
        if let Some(c) = &options.currency {
            spec = spec.with_currency(c.clone());
        }
        let series = match options.range {
            Some((from, to)) => {
                SeriesRequest::range(symbol.clone(), interval, from, to, n.clamp(1, MAX_BARS))
            }
            None => SeriesRequest::count(symbol.clone(), interval, n)
                .with_forming_counted(options.forming_counted),
        };
        Ok(Self {
            symbol,
            interval,
            series: series.with_spec(spec),
            requested: options.range.is_none().then_some(n),
        })
    }

    /// The download a public [`HistRequest`] asks for.
    ///
    /// # Errors
    ///
    /// As [`BatchRequest::new`].
    pub(crate) fn from_request(r: &HistRequest) -> Result<Self, Error> {
        Self::new(r.symbol.clone(), r.interval, r.bars, &r.options)
    }
}

/// Settings of a [`HistBatch`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct BatchConfig {
    /// Most series open at once (at least 1).
    pub(crate) max_in_flight: usize,
    /// Deadline of each request, counted from the moment its series is opened; past it the
    /// request fails with [`Error::Timeout`] (`during` [`Phase::Answer`]). [`Duration::MAX`]
    /// (or any span too large to add to the clock): none.
    pub(crate) request_timeout: Duration,
    /// Queue `(index, bars loaded)` after each page for [`HistBatch::poll_progress`].
    pub(crate) progress: bool,
}

/// A request that has its series open.
#[derive(Debug)]
struct InFlight {
    symbol: Symbol,
    interval: Interval,
    requested: Option<u32>,
    /// [`SeriesRequest::forming_counted`]: `requested` counts the forming bar.
    forming_counted: bool,
    info: Option<SymbolInfo>,
}

#[derive(Debug)]
enum Slot {
    Queued(BatchRequest),
    InFlight(InFlight),
    Answered,
}

/// A batch of historical downloads sharing one chart session of one [`Connection`].
///
/// Request `i` (its position in the list given to [`HistBatch::new`]) is the series
/// [`SeriesKey`]`(i)` of the batch's chart session while it is open. Requests are opened in
/// order, at most [`BatchConfig::max_in_flight`] at a time; results come in completion order.
///
/// # Driving it
///
/// 1. Open a chart session for the batch alone ([`Connection::add_chart`]) and create the
///    batch with [`HistBatch::new`], which opens the first series.
/// 2. Send every message [`Connection::poll_transmit`] returns.
/// 3. Feed every websocket message received to [`Connection::handle_message`], then every
///    [`Connection::poll_event`] to [`HistBatch::handle_event`]; it hands back the events that
///    are not its own (other charts, the connection's own events, a `critical_error` naming no
///    series of its chart).
/// 4. Call [`HistBatch::handle_timeout`] when [`HistBatch::poll_timeout`] is reached (and
///    [`Connection::handle_timeout`] at [`Connection::poll_timeout`], first).
/// 5. Drain [`HistBatch::poll_result`] (and [`HistBatch::poll_progress`] if asked for).
/// 6. If the connection dies (closed, protocol error, the caller's own deadline), call
///    [`HistBatch::handle_connection_lost`]: every request not yet answered gets the error.
///
/// Repeat 2-5 until [`HistBatch::is_finished`], then remove the chart session (or close the
/// connection). Times must not go backwards.
///
/// After a reconnect ([`Connection::reset`]), either replay the batch's chart session with
/// [`ChartSession::resubscribe`](crate::protocol::ChartSession::resubscribe) and no last-seen
/// bar (each open series is asked again from the start; the requests' deadlines keep running
/// from their first opening), or call [`HistBatch::handle_connection_lost`].
#[derive(Debug)]
pub(crate) struct HistBatch {
    chart: ChartId,
    config: BatchConfig,
    slots: Vec<Slot>,
    /// The first queued request: requests open in order.
    next: usize,
    in_flight: usize,
    /// Requests without a result queued yet.
    unanswered: usize,
    /// `(deadline, index)` of opened requests, in opening order, which is deadline order (one
    /// timeout, times never go backwards). Entries of answered requests are dropped lazily, but
    /// never left at the front.
    deadlines: VecDeque<(Instant, usize)>,
    results: VecDeque<(usize, Result<History, Error>)>,
    progress: VecDeque<(usize, usize)>,
}

impl HistBatch {
    /// A batch of `requests` in the chart session `chart` of `conn`: opens the first
    /// [`BatchConfig::max_in_flight`] series at `now`. The chart session must be the batch's
    /// alone while it runs.
    pub(crate) fn new(
        conn: &mut Connection,
        chart: ChartId,
        now: Instant,
        requests: Vec<BatchRequest>,
        config: BatchConfig,
    ) -> Self {
        let unanswered = requests.len();
        let mut batch = Self {
            chart,
            config: BatchConfig {
                max_in_flight: config.max_in_flight.max(1),
                ..config
            },
            slots: requests.into_iter().map(Slot::Queued).collect(),
            next: 0,
            in_flight: 0,
            unanswered,
            deadlines: VecDeque::new(),
            results: VecDeque::new(),
            progress: VecDeque::new(),
        };
        batch.open_more(conn, now);
        batch
    }

    /// How many series are open now (at most [`BatchConfig::max_in_flight`]).
    pub(crate) fn chart(&self) -> ChartId {
        self.chart
    }

    pub(crate) fn in_flight(&self) -> usize {
        self.in_flight
    }

    /// Whether every request has its result queued (they may not all be polled yet).
    pub(crate) fn is_finished(&self) -> bool {
        self.unanswered == 0
    }

    /// Takes one event of `conn`, received at `now`. Returns it when it is not this batch's:
    /// events of other chart sessions, the connection's own (`protocol_error`, idle…), and a
    /// chart-level `critical_error` of its chart, which names no series (the server keeps the
    /// session usable; the caller decides).
    pub(crate) fn handle_event(
        &mut self,
        conn: &mut Connection,
        now: Instant,
        event: Event,
    ) -> Option<Event> {
        let (key, event) = match event {
            Event::Chart {
                chart,
                event: ChartEvent::Series { key, event },
            } if chart == self.chart => (key, event),
            other => return Some(other),
        };
        // A key past the list is none of ours, but on the batch's chart: dropped.
        let i = usize::try_from(key.0)
            .ok()
            .filter(|&i| i < self.slots.len())?;
        let Slot::InFlight(f) = &mut self.slots[i] else {
            // A late event of a series already answered (and removed): nothing to do.
            return None;
        };
        match event {
            SeriesEvent::Resolved(info) => f.info = Some(*info),
            SeriesEvent::Progress { bars } => {
                if self.config.progress {
                    self.progress.push_back((i, bars));
                }
            }
            SeriesEvent::History {
                bars,
                forming,
                update_mode,
            } => {
                let history = History {
                    symbol: f.symbol.clone(),
                    interval: f.interval,
                    bars,
                    forming,
                    info: f.info.take(),
                    update_mode,
                    // The closed bars asked for: one fewer where the forming bar counted.
                    requested: f
                        .requested
                        .map(|n| n - u32::from(f.forming_counted && forming.is_some() && n > 0)),
                };
                self.answer(conn, i, Ok(history));
            }
            SeriesEvent::Failed(failure) => {
                let error = match failure {
                    // The chart session's own load timer: the same thing as our deadline.
                    SeriesFailure::LoadTimeout { timeout } => Error::Timeout {
                        after: timeout,
                        during: Phase::Answer,
                    },
                    failure => Error::Series {
                        symbol: f.symbol.clone(),
                        interval: f.interval,
                        failure,
                    },
                };
                self.answer(conn, i, Err(error));
            }
            // History comes first and the series is removed with it: live events never
            // reach an open request. Ignored should a server send them anyway.
            SeriesEvent::Update(_) | SeriesEvent::Closed(_) | SeriesEvent::Late(_) => {}
        }
        self.open_more(conn, now);
        None
    }

    /// Fails the requests whose deadline is at or before `now` with [`Error::Timeout`], and
    /// opens the next ones in their slots.
    pub(crate) fn handle_timeout(&mut self, conn: &mut Connection, now: Instant) {
        while let Some(&(deadline, i)) = self.deadlines.front() {
            if deadline > now {
                break;
            }
            self.deadlines.pop_front();
            if matches!(self.slots[i], Slot::InFlight(_)) {
                let error = Error::Timeout {
                    after: self.config.request_timeout,
                    during: Phase::Answer,
                };
                self.answer(conn, i, Err(error));
            }
        }
        self.open_more(conn, now);
    }

    /// The connection is gone: every request not yet answered, open or queued, gets `error`.
    pub(crate) fn handle_connection_lost(&mut self, error: &Error) {
        // Open requests first (they were asked first), then the queued ones, each in order.
        let open = (0..self.next).filter(|&i| matches!(self.slots[i], Slot::InFlight(_)));
        let order: Vec<usize> = open.chain(self.next..self.slots.len()).collect();
        for i in order {
            if !matches!(self.slots[i], Slot::Answered) {
                self.slots[i] = Slot::Answered;
                self.results.push_back((i, Err(error.clone())));
            }
        }
        self.next = self.slots.len();
        self.in_flight = 0;
        self.unanswered = 0;
        self.deadlines.clear();
    }

    /// The earliest deadline of an open request, if any.
    #[must_use]
    pub(crate) fn poll_timeout(&self) -> Option<Instant> {
        self.deadlines.front().map(|&(deadline, _)| deadline)
    }

    /// The next result, `(index, result)`, in the order requests were answered.
    #[must_use]
    pub(crate) fn poll_result(&mut self) -> Option<(usize, Result<History, Error>)> {
        self.results.pop_front()
    }

    /// The next `(index, bars loaded so far)` after a page, when [`BatchConfig::progress`] is
    /// set.
    #[must_use]
    pub(crate) fn poll_progress(&mut self) -> Option<(usize, usize)> {
        self.progress.pop_front()
    }

    /// Queues the result of open request `i` and closes its series.
    fn answer(&mut self, conn: &mut Connection, i: usize, result: Result<History, Error>) {
        self.slots[i] = Slot::Answered;
        self.in_flight -= 1;
        self.unanswered -= 1;
        if let Some(chart) = conn.chart_mut(self.chart) {
            // Stops the server's live updates of the series and frees its slot.
            let _ = chart.remove_series(SeriesKey(i as u64));
        }
        self.results.push_back((i, result));
        self.prune();
    }

    /// Opens queued requests while there is room.
    fn open_more(&mut self, conn: &mut Connection, now: Instant) {
        while self.in_flight < self.config.max_in_flight && self.next < self.slots.len() {
            let i = self.next;
            self.next += 1;
            let Slot::Queued(request) = std::mem::replace(&mut self.slots[i], Slot::Answered)
            else {
                continue;
            };
            let forming_counted = request.series.forming_counted;
            let opened = match conn.chart_mut(self.chart) {
                Some(chart) => chart
                    .add_series(now, SeriesKey(i as u64), request.series)
                    .map_err(|e| Error::Protocol(format!("cannot open the series: {e}"))),
                None => Err(Error::Protocol("the chart session was closed".into())),
            };
            if let Err(e) = opened {
                self.unanswered -= 1;
                self.results.push_back((i, Err(e)));
                continue;
            }
            self.slots[i] = Slot::InFlight(InFlight {
                symbol: request.symbol,
                interval: request.interval,
                requested: request.requested,
                forming_counted,
                info: None,
            });
            self.in_flight += 1;
            if let Some(deadline) = now.checked_add(self.config.request_timeout) {
                self.deadlines.push_back((deadline, i));
            }
        }
        self.prune();
    }

    /// Drops the deadlines of answered requests from the front.
    fn prune(&mut self) {
        while let Some(&(_, i)) = self.deadlines.front() {
            if matches!(self.slots[i], Slot::InFlight(_)) {
                break;
            }
            self.deadlines.pop_front();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::{ChartConfig, ConnectionConfig};

    const CS: &str = "cs_batchbatchb";

    fn frame(payload: &str) -> Vec<u8> {
        format!("~m~{}~m~{payload}", payload.len()).into_bytes()
    }

    /// A batch of `n` one-minute requests of 2 closed bars, `k` at a time.
    fn batch(n: usize, k: usize, timeout: Duration) -> (Connection, HistBatch, Instant) {
        let t0 = crate::clock::monotonic();
        let mut conn = Connection::new(t0, ConnectionConfig::default());
        let chart = conn.add_chart_named(t0, CS, ChartConfig::default());
        let requests = (0..n)
            .map(|i| {
                let symbol = format!("BINANCE:SYM{i}").parse().unwrap();
                BatchRequest::new(symbol, "1".parse().unwrap(), 2, &HistOptions::default()).unwrap()
            })
            .collect();
        let config = BatchConfig {
            max_in_flight: k,
            request_timeout: timeout,
            progress: false,
        };
        let batch = HistBatch::new(&mut conn, chart, t0, requests, config);
        (conn, batch, t0)
    }

    /// The methods of every message the connection queued.
    fn sent(conn: &mut Connection) -> Vec<String> {
        std::iter::from_fn(|| conn.poll_transmit())
            .filter_map(|m| {
                let s = String::from_utf8(m).unwrap();
                let at = s.find(r#""m":""#)? + 5;
                Some(s[at..].split('"').next()?.to_owned())
            })
            .collect()
    }

    fn feed(conn: &mut Connection, batch: &mut HistBatch, now: Instant, payload: &str) {
        conn.handle_message(now, &mut frame(payload)).unwrap();
        while let Some(e) = conn.poll_event() {
            assert_eq!(batch.handle_event(conn, now, e), None);
        }
    }

    /// The server's whole answer to the series opened `wire`-th: 2 closed bars and the
    /// forming one.
    fn complete(conn: &mut Connection, batch: &mut HistBatch, now: Instant, wire: usize) {
        let bars = r#"[{"i":0,"v":[60.0,1.0,2.0,0.5,1.5,10.0]},{"i":1,"v":[120.0,1.5,2.0,1.0,1.2,11.0]},{"i":2,"v":[180.0,1.2,1.3,1.1,1.25,1.0]}]"#;
        feed(
            conn,
            batch,
            now,
            &format!(
                r#"{{"m":"timescale_update","p":["{CS}",{{"sds_{wire}":{{"s":{bars},"ns":{{"d":"","indexes":[]}},"t":"s1","lbs":{{"bar_close_time":240}}}}}},{{"index":0,"zoffset":0,"changes":[],"marks":[],"index_diff":[]}}]}}"#
            ),
        );
        feed(
            conn,
            batch,
            now,
            &format!(r#"{{"m":"series_completed","p":["{CS}","sds_{wire}","streaming","s1"]}}"#),
        );
    }

    #[test]
    fn at_most_k_series_are_open_and_finished_slots_are_reused() {
        let (mut conn, mut b, t0) = batch(5, 2, Duration::from_secs(30));
        let first = sent(&mut conn);
        assert_eq!(first.iter().filter(|m| *m == "create_series").count(), 2);
        assert_eq!(b.in_flight(), 2);
        let mut open = 2usize;
        for wire in 1..=5 {
            complete(&mut conn, &mut b, t0, wire);
            let out = sent(&mut conn);
            open += out.iter().filter(|m| *m == "create_series").count();
            open -= out.iter().filter(|m| *m == "remove_series").count();
            assert!(open <= 2 && b.in_flight() <= 2, "{out:?}");
            let (i, r) = b.poll_result().expect("a result per completion");
            assert_eq!(i, wire - 1, "opened and answered in order here");
            let h = r.unwrap();
            assert_eq!(h.symbol.as_str(), format!("BINANCE:SYM{i}"));
            assert_eq!(h.bars.iter().map(|b| b.time).collect::<Vec<_>>(), [60, 120]);
            assert_eq!(h.forming.map(|f| f.time), Some(180));
            assert_eq!(h.requested, Some(2));
        }
        assert!(b.is_finished() && b.poll_result().is_none());
        assert_eq!((open, b.in_flight()), (0, 0));
    }

    #[test]
    fn a_refused_symbol_fails_only_its_request() {
        let (mut conn, mut b, t0) = batch(3, 3, Duration::from_secs(30));
        let _ = sent(&mut conn);
        feed(
            &mut conn,
            &mut b,
            t0,
            &format!(r#"{{"m":"symbol_error","p":["{CS}","sds_sym_2","invalid symbol"]}}"#),
        );
        let (i, r) = b.poll_result().unwrap();
        assert_eq!(i, 1);
        assert_eq!(
            r.unwrap_err(),
            Error::Series {
                symbol: "BINANCE:SYM1".parse().unwrap(),
                interval: "1".parse().unwrap(),
                failure: SeriesFailure::UnknownSymbol {
                    reason: "invalid symbol".into()
                }
            }
        );
        assert_eq!(sent(&mut conn), ["remove_series"]);
        complete(&mut conn, &mut b, t0, 3);
        complete(&mut conn, &mut b, t0, 1);
        let rest: Vec<usize> = std::iter::from_fn(|| b.poll_result())
            .map(|(i, r)| {
                assert!(r.is_ok());
                i
            })
            .collect();
        assert_eq!(rest, [2, 0], "completion order");
        assert!(b.is_finished());
    }

    #[test]
    fn a_late_request_times_out_alone_and_frees_its_slot() {
        let timeout = Duration::from_secs(10);
        let (mut conn, mut b, t0) = batch(2, 1, timeout);
        let _ = sent(&mut conn);
        assert_eq!(b.poll_timeout(), Some(t0 + timeout));
        b.handle_timeout(&mut conn, t0 + Duration::from_secs(9));
        assert!(b.poll_result().is_none());
        let t1 = t0 + timeout;
        b.handle_timeout(&mut conn, t1);
        assert_eq!(
            b.poll_result(),
            Some((
                0,
                Err(Error::Timeout {
                    after: timeout,
                    during: Phase::Answer
                })
            ))
        );
        // Its series is closed and the next request opened in its slot, with its own deadline.
        assert_eq!(
            sent(&mut conn),
            ["remove_series", "resolve_symbol", "create_series"]
        );
        assert_eq!(b.poll_timeout(), Some(t1 + timeout));
        // A late answer of the removed series is ignored; the open one completes.
        complete(&mut conn, &mut b, t1, 1);
        assert!(b.poll_result().is_none());
        complete(&mut conn, &mut b, t1, 2);
        assert!(matches!(b.poll_result(), Some((1, Ok(_)))));
        assert!(b.is_finished() && b.poll_timeout().is_none());
    }

    #[test]
    fn a_resubscribed_chart_carries_the_batch_over_a_reconnect() {
        let (mut conn, mut b, t0) = batch(3, 2, Duration::from_secs(30));
        let _ = sent(&mut conn);
        // The websocket dies with requests 0 and 1 open; the chart is replayed on the next.
        conn.reset(t0);
        let charts: Vec<ChartId> = conn.charts().map(|(id, _)| id).collect();
        for chart in charts {
            conn.chart_mut(chart).unwrap().resubscribe(t0, 0, |_| None);
        }
        let replay = sent(&mut conn);
        assert_eq!(replay.iter().filter(|m| *m == "create_series").count(), 2);
        // The replayed series are wire ids 3 and 4; the batch knows them by key.
        complete(&mut conn, &mut b, t0, 4);
        complete(&mut conn, &mut b, t0, 3);
        complete(&mut conn, &mut b, t0, 5);
        let order: Vec<usize> = std::iter::from_fn(|| b.poll_result())
            .map(|(i, r)| {
                assert!(r.is_ok());
                i
            })
            .collect();
        assert_eq!(order, [1, 0, 2]);
        assert!(b.is_finished());
    }

    #[test]
    fn no_deadline_past_the_clock() {
        let (mut conn, mut b, t0) = batch(2, 2, Duration::MAX);
        assert_eq!(b.poll_timeout(), None);
        b.handle_timeout(&mut conn, t0 + Duration::from_secs(1_000_000));
        assert!(b.poll_result().is_none() && b.in_flight() == 2);
    }

    #[test]
    fn a_lost_connection_answers_every_request_once() {
        let (mut conn, mut b, t0) = batch(5, 2, Duration::from_secs(30));
        complete(&mut conn, &mut b, t0, 2);
        assert!(matches!(b.poll_result(), Some((1, Ok(_)))));
        let lost = Error::Protocol("gone".into());
        b.handle_connection_lost(&lost);
        let rest: Vec<usize> = std::iter::from_fn(|| b.poll_result())
            .map(|(i, r)| {
                assert_eq!(r.unwrap_err(), lost);
                i
            })
            .collect();
        assert_eq!(rest, [0, 2, 3, 4], "open first, then queued");
        assert!(b.is_finished() && b.poll_timeout().is_none());
        b.handle_connection_lost(&lost);
        assert!(b.poll_result().is_none(), "never answered twice");
    }

    #[test]
    fn other_events_are_handed_back() {
        let (mut conn, mut b, t0) = batch(1, 1, Duration::from_secs(30));
        let other = conn.add_chart_named(t0, "cs_otherotherot", ChartConfig::default());
        let event = Event::Chart {
            chart: other,
            event: ChartEvent::Series {
                key: SeriesKey(0),
                event: SeriesEvent::Progress { bars: 1 },
            },
        };
        assert_eq!(b.handle_event(&mut conn, t0, event.clone()), Some(event));
        let idle = Event::Idle {
            silent: Duration::from_secs(1),
        };
        assert_eq!(b.handle_event(&mut conn, t0, idle.clone()), Some(idle));
        assert!(b.poll_result().is_none() && !b.is_finished());
    }
}
