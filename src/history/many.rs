//! [`Client::get_hist_many`]: many histories over one blocking connection, and the blocking
//! driver ([`Link`]) that [`Client::get_hist`] shares with it.
//!
//! The driver is the thin loop over the sans-I/O layers: it sends what the protocol
//! [`Connection`] transmits, waits for one message at most until the earliest deadline (the
//! batch's, a request's, the connection's idle timer), and hands what came to the connection
//! and its events to the [`HistBatch`]. Every syscall is bounded by the socket's deadline
//! (`transport::blocking`), so nothing here sleeps.

use std::{
    collections::VecDeque,
    iter::FusedIterator,
    time::{Duration, Instant},
};

use super::{
    Client, ClientConfig, HistOptions, History, MAX_BARS,
    batch::{BatchConfig, BatchRequest, HistBatch},
};
use crate::{
    Error, Interval, Symbol, TransportError, clock,
    error::Phase,
    protocol::{ChartConfig, ChartEvent, Connection, ConnectionConfig, Event},
    transport,
};

/// One download of [`Client::get_hist_many`]: a symbol, an interval, the last `bars` closed
/// bars (or the bars of a date range), and [`HistOptions`] — the arguments of
/// [`Client::get_hist`] as one value.
///
/// # Examples
///
/// ```
/// use tvdatafeed::{HistOptions, HistRequest};
///
/// let last_500 = HistRequest::new("BINANCE:BTCUSDT", "1H", 500)?;
/// let january = HistRequest::range("NASDAQ:AAPL", "1D", 1_704_067_200, 1_706_659_200)?
///     .with_options(HistOptions::default().with_extended_session(true));
/// assert_eq!(last_500.symbol.as_str(), "BINANCE:BTCUSDT");
/// assert!(january.options.range.is_some());
/// # Ok::<(), tvdatafeed::Error>(())
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct HistRequest {
    /// The symbol.
    pub symbol: Symbol,
    /// The interval.
    pub interval: Interval,
    /// Closed bars wanted (`1..=`[`MAX_BARS`]); with [`HistOptions::range`], the most bars
    /// kept.
    pub bars: u32,
    /// What to download besides the symbol and interval.
    pub options: HistOptions,
}

impl HistRequest {
    /// The last `bars` closed bars of `symbol` at `interval` (and the forming bar apart).
    /// `symbol` and `interval` are values or strings (`"BINANCE:BTCUSDT"`, `"1H"`).
    ///
    /// # Errors
    ///
    /// [`Error::InvalidRequest`] for a bad symbol or interval string. A bar count outside
    /// `1..=`[`MAX_BARS`] is that request's error in [`Client::get_hist_many`].
    pub fn new<S, I>(symbol: S, interval: I, bars: u32) -> Result<Self, Error>
    where
        S: TryInto<Symbol>,
        S::Error: Into<Error>,
        I: TryInto<Interval>,
        I::Error: Into<Error>,
    {
        Ok(Self {
            symbol: symbol.try_into().map_err(Into::into)?,
            interval: interval.try_into().map_err(Into::into)?,
            bars,
            options: HistOptions::default(),
        })
    }

    /// The bars of `symbol` at `interval` opening in `from..=to` (UTC seconds), at most
    /// [`MAX_BARS`] (the server sends at most the account's history depth).
    ///
    /// # Errors
    ///
    /// [`Error::InvalidRequest`] for a bad symbol or interval string. A reversed range is that
    /// request's error in [`Client::get_hist_many`].
    pub fn range<S, I>(symbol: S, interval: I, from: i64, to: i64) -> Result<Self, Error>
    where
        S: TryInto<Symbol>,
        S::Error: Into<Error>,
        I: TryInto<Interval>,
        I::Error: Into<Error>,
    {
        let mut r = Self::new(symbol, interval, MAX_BARS)?;
        r.options.range = Some((from, to));
        Ok(r)
    }

    /// Replaces the options. A range already set is kept unless `options` sets one.
    #[must_use]
    pub fn with_options(mut self, options: HistOptions) -> Self {
        let range = options.range.or(self.options.range);
        self.options = HistOptions { range, ..options };
        self
    }
}

/// How a [`Link`] treats a `critical_error` that names no series of its batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum ChartErrors {
    /// Fatal: with one request in flight it can only be about that one ([`Client::get_hist`]).
    Fatal,
    /// Logged: the server keeps the session usable, and failing every request in flight for
    /// one of them would be worse; an affected request meets its own deadline.
    Logged,
}

/// A connection that [`Client::get_hist`] kept for the next call: its chart session was
/// deleted (the server sends nothing more of it) and everything queued was sent.
#[derive(Debug)]
pub(super) struct Parked {
    ws: transport::Connection,
    proto: Connection,
    /// When it was parked.
    pub(super) since: Instant,
    /// It was kept from an earlier call (not just opened): it must show it is alive.
    kept: bool,
    /// The chart sessions earlier calls deleted on it, newest last, at most [`RETIRED_KEPT`].
    retired: Vec<String>,
}

/// How many deleted chart sessions a kept connection remembers, to tell a late
/// `critical_error` about one of them (a request the server served after the delete) from one
/// about the call in progress.
const RETIRED_KEPT: usize = 8;

/// How soon a kept connection must say something (any message) once a call uses it again,
/// at most half the call's timeout: a connection a middlebox dropped without a word would
/// otherwise hold the call to its deadline. Past it the call starts over on a new one.
const KEPT_PROBE: Duration = Duration::from_secs(2);

impl Parked {
    /// Closes the kept connection politely (at most a moment).
    pub(super) fn close(self) {
        self.ws.close();
    }
}

/// One blocking websocket carrying one [`HistBatch`] in a chart session of its own.
#[derive(Debug)]
pub(super) struct Link {
    ws: transport::Connection,
    proto: Connection,
    pub(super) batch: HistBatch,
    /// The whole batch's deadline (`None`: none) and its span, for the error.
    deadline: Option<Instant>,
    budget: Duration,
    /// The deadline the socket is armed with (`None` until first armed).
    armed: Option<Option<Instant>>,
    chart_errors: ChartErrors,
    /// The batch's limit, for a debug check.
    max_in_flight: usize,
    /// [`ClientConfig::timeout`]: how long a send may block.
    request_timeout: Duration,
    /// A kept connection must say something by then ([`KEPT_PROBE`]); `None` once it did (or
    /// for a new one).
    probe: Option<Instant>,
    /// [`Parked::retired`]: a `critical_error` naming one of these is not this call's.
    retired: Vec<String>,
}

impl Link {
    /// Connects and opens the batch's first series, all before `deadline` (`None`: none),
    /// which is `budget` after `start`. Every request's own deadline starts when its series
    /// opens; `config.timeout` also bounds the connect and the connection's silence.
    ///
    /// # Errors
    ///
    /// What connecting failed with (timeouts name the phase).
    pub(super) fn open(
        config: &ClientConfig,
        start: Instant,
        (deadline, budget): (Option<Instant>, Duration),
        requests: Vec<BatchRequest>,
        batch: BatchConfig,
        chart_errors: ChartErrors,
    ) -> Result<Self, Error> {
        // The connect ends by the batch's deadline or one request timeout, whichever is first.
        let (connect_deadline, connect_budget) = match (deadline, config.deadline(start)) {
            (Some(d), Some(r)) if r < d => (Some(r), config.timeout),
            (None, Some(r)) => (Some(r), config.timeout),
            _ => (deadline, budget),
        };
        let ws =
            transport::Connection::connect(&config.transport, connect_deadline, connect_budget)?;
        let now = clock::monotonic();
        let conn_config = ConnectionConfig::default()
            .with_auth_token(config.token.clone())
            .with_idle_timeout(config.timeout)
            .with_id_seed(clock::id_seed());
        let proto = Connection::new(now, conn_config);
        Ok(Self::resume(
            Parked {
                ws,
                proto,
                since: now,
                kept: false,
                retired: Vec::new(),
            },
            config,
            (deadline, budget),
            requests,
            batch,
            chart_errors,
        ))
    }

    /// A batch on a connection a previous call parked ([`Link::park`]), or one just opened: a
    /// fresh chart session, no connect.
    pub(super) fn resume(
        parked: Parked,
        config: &ClientConfig,
        (deadline, budget): (Option<Instant>, Duration),
        requests: Vec<BatchRequest>,
        batch: BatchConfig,
        chart_errors: ChartErrors,
    ) -> Self {
        let Parked {
            ws,
            mut proto,
            kept,
            retired,
            ..
        } = parked;
        let now = clock::monotonic();
        proto.restart_idle(now);
        let probe = kept
            .then(|| now.checked_add(KEPT_PROBE.min(config.timeout / 2)))
            .flatten();
        let chart = proto.add_chart(
            now,
            ChartConfig::default().with_load_timeout(config.timeout),
        );
        let max_in_flight = batch.max_in_flight.max(1);
        let batch = HistBatch::new(&mut proto, chart, now, requests, batch);
        Self {
            max_in_flight,
            request_timeout: config.timeout,
            ws,
            proto,
            batch,
            deadline,
            budget,
            armed: None,
            chart_errors,
            probe,
            retired,
        }
    }

    /// Keeps the connection for the next call: deletes the batch's chart session (the server
    /// stops its series' updates) and sends what is queued, each send bounded by one request
    /// timeout and the batch's deadline. `None` (the connection closed) when a send fails.
    pub(super) fn park(mut self) -> Option<Parked> {
        if let Some(chart) = self.proto.chart(self.batch.chart()) {
            if self.retired.len() == RETIRED_KEPT {
                self.retired.remove(0);
            }
            self.retired.push(chart.id().to_owned());
        }
        self.proto.remove_chart(self.batch.chart());
        let send_deadline = self.send_deadline();
        while let Some(msg) = self.proto.poll_transmit() {
            self.arm(send_deadline);
            if self.ws.send(msg).is_err() {
                self.ws.close();
                return None;
            }
        }
        Some(Parked {
            ws: self.ws,
            proto: self.proto,
            since: clock::monotonic(),
            kept: true,
            retired: self.retired,
        })
    }

    /// Closes the websocket politely (at most a moment).
    pub(super) fn close(self) {
        self.ws.close();
    }

    fn arm(&mut self, deadline: Option<Instant>) {
        if self.armed != Some(deadline) {
            self.ws.set_deadline(deadline);
            self.armed = Some(deadline);
        }
    }

    /// How long the sends starting now may block: a send blocks only on a server that
    /// stopped reading, dead after one request timeout (or at the batch's deadline).
    fn send_deadline(&self) -> Option<Instant> {
        let stuck = clock::monotonic().checked_add(self.request_timeout);
        match (self.deadline, stuck) {
            (Some(d), Some(s)) => Some(d.min(s)),
            (d, s) => d.or(s),
        }
    }

    /// A kept connection said nothing within [`KEPT_PROBE`] of its reuse: probably dropped
    /// on the way without a word.
    pub(super) fn kept_but_silent(&self) -> bool {
        self.probe.is_some_and(|p| clock::monotonic() >= p)
    }

    /// The batch's deadline passed.
    fn expired(&self) -> Error {
        Error::Timeout {
            after: self.budget,
            during: Phase::Answer,
        }
    }

    /// One round: sends what is queued, waits for one message until the earliest deadline,
    /// and hands what came (or the deadline) to the connection and the batch.
    ///
    /// # Errors
    ///
    /// The connection is unusable: closed, failed, the batch's deadline passed, the connection
    /// was silent for the request timeout, or the server sent a fatal error.
    pub(super) fn step(&mut self) -> Result<(), Error> {
        let send_deadline = self.send_deadline();
        while let Some(msg) = self.proto.poll_transmit() {
            self.arm(send_deadline);
            if let Err(e) = self.ws.send(msg) {
                return Err(match e {
                    TransportError::Timeout { .. }
                        if self.deadline.is_some_and(|d| clock::monotonic() >= d) =>
                    {
                        self.expired()
                    }
                    TransportError::Timeout { .. } => Error::Timeout {
                        after: self.request_timeout,
                        during: Phase::Answer,
                    },
                    e => e.into(),
                });
            }
        }
        let wake = [
            self.batch.poll_timeout(),
            self.proto.poll_timeout(),
            self.probe,
        ]
        .into_iter()
        .flatten()
        .min();
        let until = match (self.deadline, wake) {
            (Some(d), Some(w)) => Some(d.min(w)),
            (d, w) => d.or(w),
        };
        self.arm(until);
        match self.ws.recv() {
            Ok(mut msg) => {
                self.probe = None;
                let now = clock::monotonic();
                if let Err(e) = self.proto.handle_message(now, &mut msg) {
                    if e.is_fatal() {
                        return Err(Error::Protocol(e.to_string()));
                    }
                    // The well-formed frames around it were handled; the connection goes on.
                    tracing::debug!(error = %e, "a malformed frame was skipped");
                }
            }
            // A wake-up for a deadline of ours, unless it is the batch's.
            Err(TransportError::Timeout { .. }) => {
                if self.deadline.is_some_and(|d| clock::monotonic() >= d) {
                    return Err(self.expired());
                }
            }
            Err(e) => return Err(e.into()),
        }
        let now = clock::monotonic();
        if self.proto.poll_timeout().is_some_and(|t| t <= now) {
            self.proto.handle_timeout(now);
        }
        while let Some(event) = self.proto.poll_event() {
            if let Some(event) = self.batch.handle_event(&mut self.proto, now, event) {
                self.connection_event(event)?;
            }
        }
        if self.batch.poll_timeout().is_some_and(|t| t <= now) {
            self.batch.handle_timeout(&mut self.proto, now);
        }
        debug_assert!(self.batch.in_flight() <= self.max_in_flight);
        Ok(())
    }

    /// What an event that is not the batch's means for it.
    fn connection_event(&self, event: Event) -> Result<(), Error> {
        let critical = |reason: &str, detail: Option<&str>| Error::InvalidParameters {
            reason: crate::error::echo(reason),
            detail: crate::error::echo(detail.unwrap_or("")),
        };
        match event {
            Event::ProtocolError { text } if text == "bad auth token" => Err(Error::AuthRejected),
            Event::ProtocolError { text } => Err(Error::Protocol(format!(
                "the server reported a protocol error: {}",
                crate::error::echo(&text)
            ))),
            Event::Idle { .. } => Err(Error::Timeout {
                after: self.proto.config().idle_timeout,
                during: Phase::Answer,
            }),
            Event::CriticalError {
                session, reason, ..
            } if self.retired.contains(&session) => {
                tracing::debug!(
                    session = %crate::error::echo(&session),
                    reason = %crate::error::echo(&reason),
                    "a critical_error about a chart session an earlier call deleted: not this call's"
                );
                Ok(())
            }
            Event::CriticalError { reason, detail, .. }
            | Event::Chart {
                event: ChartEvent::CriticalError { reason, detail },
                ..
            } => {
                let error = critical(&reason, detail.as_deref());
                match self.chart_errors {
                    ChartErrors::Fatal => Err(error),
                    ChartErrors::Logged => {
                        tracing::warn!(%error, "the server rejected a request of no known series");
                        Ok(())
                    }
                }
            }
            _ => Ok(()),
        }
    }
}

/// The results of [`Client::get_hist_many`], in completion order: each request given back with
/// its own result.
///
/// Lazy: nothing happens until the first [`Iterator::next`], which connects; each `next`
/// drives the one connection until some request is answered. The connection closes as soon
/// as every request is answered, or when this is dropped. Yields exactly one item per request.
/// It can be moved to another thread.
///
/// The connection is serviced only inside `next` (that is the backpressure: at most
/// [`ClientConfig::max_in_flight`] histories load while you work on one), so keep calling it:
/// TradingView closes a connection that leaves its heartbeats unanswered for long (about a
/// minute), and the requests left would then fail with that transport error. To work on results
/// at leisure, `collect` them first.
#[derive(Debug)]
pub struct HistMany {
    config: ClientConfig,
    /// The requests, each taken when its result is yielded.
    requests: Vec<Option<HistRequest>>,
    /// Results ready to yield, by request index.
    ready: VecDeque<(usize, Result<History, Error>)>,
    state: State,
    /// Request index of each batch index.
    index: Vec<usize>,
    /// Items not yielded yet.
    left: usize,
}

#[derive(Debug)]
enum State {
    NotStarted,
    Running(Box<Link>),
    Done,
}

impl HistMany {
    pub(super) fn new(config: ClientConfig, requests: Vec<HistRequest>) -> Self {
        Self {
            config,
            left: requests.len(),
            requests: requests.into_iter().map(Some).collect(),
            ready: VecDeque::new(),
            state: State::NotStarted,
            index: Vec::new(),
        }
    }

    /// Validates the requests (the invalid ones are answered at once), connects, and opens
    /// the first series.
    fn start(&mut self) {
        let mut valid = Vec::new();
        for (i, r) in self.requests.iter().enumerate() {
            let Some(r) = r else { continue };
            match BatchRequest::from_request(r) {
                Ok(b) => {
                    valid.push(b);
                    self.index.push(i);
                }
                Err(e) => self.ready.push_back((i, Err(e))),
            }
        }
        self.state = State::Done;
        if valid.is_empty() {
            return;
        }
        let start = clock::monotonic();
        let batch = BatchConfig {
            max_in_flight: self.config.max_in_flight,
            request_timeout: self.config.timeout,
            progress: false,
        };
        let deadline = (
            start.checked_add(self.config.batch_timeout),
            self.config.batch_timeout,
        );
        match Link::open(
            &self.config,
            start,
            deadline,
            valid,
            batch,
            ChartErrors::Logged,
        ) {
            Ok(link) => self.state = State::Running(Box::new(link)),
            Err(e) => {
                tracing::debug!(error = %e, "get_hist_many: cannot connect");
                for &i in &self.index {
                    self.ready.push_back((i, Err(e.clone())));
                }
            }
        }
    }

    /// Closes the connection; the batch's remaining results become ready.
    fn finish(&mut self) {
        if let State::Running(mut link) = std::mem::replace(&mut self.state, State::Done) {
            while let Some((j, r)) = link.batch.poll_result() {
                self.ready.push_back((self.index[j], r));
            }
            link.close();
        }
    }
}

impl Iterator for HistMany {
    type Item = (HistRequest, Result<History, Error>);

    fn next(&mut self) -> Option<Self::Item> {
        loop {
            if let Some((i, result)) = self.ready.pop_front() {
                // Each index is answered once, so its request is there.
                if let Some(request) = self.requests.get_mut(i).and_then(Option::take) {
                    self.left -= 1;
                    return Some((request, result));
                }
                continue;
            }
            match &mut self.state {
                State::NotStarted => self.start(),
                State::Done => return None,
                State::Running(link) => {
                    if link.batch.is_finished() {
                        self.finish();
                    } else if let Some((j, result)) = link.batch.poll_result() {
                        self.ready.push_back((self.index[j], result));
                    } else if let Err(e) = link.step() {
                        tracing::debug!(error = %e, "get_hist_many: the connection failed");
                        link.batch.handle_connection_lost(&e);
                    }
                }
            }
        }
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        (self.left, Some(self.left))
    }
}

impl ExactSizeIterator for HistMany {}

impl FusedIterator for HistMany {}

impl Drop for HistMany {
    fn drop(&mut self) {
        self.finish();
    }
}

impl Client {
    /// The histories of many requests over **one** connection, as they complete.
    ///
    /// TradingView multiplexes many series over one websocket, so this opens one connection
    /// (one TLS handshake) and keeps up to [`ClientConfig::max_in_flight`] series loading at
    /// once, opening the next as each completes; each series pages past one request's limit as
    /// in [`Client::get_hist`]. Results come in completion order, each request given back with
    /// its own result: one refused symbol fails that request, never the batch.
    ///
    /// The returned iterator is lazy (it connects on the first `next`), yields exactly one item
    /// per request, and closes the connection when every request is answered or when dropped.
    ///
    /// # Deadlines
    ///
    /// - Each request: [`ClientConfig::timeout`], counted from the moment its series is
    ///   opened (a request waiting for a slot does not use it up).
    /// - The connection: connecting must finish within `timeout`, and a connection that stays
    ///   silent (not even a heartbeat) for `timeout` is dead.
    /// - The whole batch: [`ClientConfig::batch_timeout`], counted from the first `next`.
    ///
    /// # Errors
    ///
    /// Per request, in its item:
    /// - [`Error::InvalidRequest`]: bar count `0` or above [`MAX_BARS`], a reversed range
    ///   (answered first, before any I/O);
    /// - [`Error::Series`]: the server refused this series (unknown symbol, permission denied,
    ///   interval not entitled, invalid parameters);
    /// - [`Error::Timeout`] `during` [`Phase::Answer`]: this request's deadline passed;
    /// - when the connection fails (connect, TLS or upgrade refused, [`Error::RateLimited`],
    ///   closed, [`Error::Protocol`], [`Error::AuthRejected`], the batch's deadline or the
    ///   connection's silence as [`Error::Timeout`]), every request not yet answered gets a
    ///   copy of that error, and the iterator ends after them. Nothing is dropped silently.
    ///
    /// # Examples
    ///
    /// ```no_run
    /// use tvdatafeed::{Client, ClientConfig, HistRequest};
    ///
    /// let client = Client::new(ClientConfig::from_env()?);
    /// let requests = ["BINANCE:BTCUSDT", "BINANCE:ETHUSDT", "NASDAQ:AAPL"]
    ///     .into_iter()
    ///     .map(|s| HistRequest::new(s, "1D", 1_000))
    ///     .collect::<Result<Vec<_>, _>>()?;
    /// for (request, result) in client.get_hist_many(requests) {
    ///     match result {
    ///         Ok(h) => println!("{}: {} bars", request.symbol, h.bars.len()),
    ///         Err(e) => eprintln!("{}: {e}", request.symbol),
    ///     }
    /// }
    /// # Ok::<(), tvdatafeed::Error>(())
    /// ```
    pub fn get_hist_many<R>(&self, requests: R) -> HistMany
    where
        R: IntoIterator<Item = HistRequest>,
    {
        HistMany::new(self.config.clone(), requests.into_iter().collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn results_can_move_to_another_thread() {
        fn send<T: Send>() {}
        send::<HistMany>();
        send::<HistRequest>();
    }

    #[test]
    fn requests_accept_strings_and_keep_a_range() {
        let r = HistRequest::range("BINANCE:BTCUSDT", "1D", 10, 20)
            .unwrap()
            .with_options(HistOptions::default().with_extended_session(true));
        assert_eq!(r.options.range, Some((10, 20)));
        assert!(r.options.extended_session);
        assert_eq!(r.bars, MAX_BARS);
        assert!(matches!(
            HistRequest::new("NO COLON", "1D", 5),
            Err(Error::InvalidRequest(_))
        ));
        assert!(matches!(
            HistRequest::new("BINANCE:BTCUSDT", "7Q", 5),
            Err(Error::InvalidRequest(_))
        ));
    }
}
