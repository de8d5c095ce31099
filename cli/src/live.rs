//! `tvdatafeed live`: stream closed bars, one line each, flushed per line.
//!
//! Every spec is parsed, then every seis subscribed (and so validated by the server), before
//! anything is printed: each refused spec is one line on stderr, then a non-zero exit, nothing
//! on stdout. A spec repeating another seis (`@1s` and `@1S`, `@60` and `@1H`) is streamed once,
//! said in one note. Connection events go to stderr, never to stdout, whose lines stay exactly
//! once and in order per seis: one line when the connection drops and one when every seis is
//! back, for all the seises together. Ending while the connection is down is an error that
//! names the seises not back.
#![allow(
    clippy::disallowed_types,
    reason = "a command-line program sharing a Ctrl-C flag; the loom shim is the library's"
)]

use std::{
    collections::{BTreeSet, HashMap},
    io::{self, Write},
    path::PathBuf,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::{Duration, Instant},
};

use tvdatafeed::{
    AuthToken, Bar, ConsumerOptions, Endpoint, Error, HumanDuration, Interval, LiveEvent, LiveFeed,
    LiveFeedBuilder, RecvError, Seis, SeisEvent, SeisId, Symbol, internal::echo,
};

/// The shortest `--stall-secs` that a quiet connection to TradingView survives: two of its
/// 10 s heartbeats (one may come late). Below it a warning is printed (a server that beats
/// faster, such as `sim --heartbeat-secs 1`, may want less).
pub(crate) const MIN_QUIET_STALL: Duration = Duration::from_secs(20);

/// The first reconnect backoff's scale (the engine's default).
const RECONNECT_BASE: Duration = Duration::from_millis(250);

/// How many seises a connection line names before "and N more".
const NAMED: usize = 8;

/// The parsed command line of `live`.
pub(crate) struct Args {
    pub(crate) specs: Vec<String>,
    pub(crate) url: Option<String>,
    pub(crate) token: Option<String>,
    /// Seconds (`None`: until Ctrl-C); 0 is refused.
    pub(crate) duration: Option<u64>,
    pub(crate) json: bool,
    pub(crate) updates: bool,
    pub(crate) ca_cert: Option<PathBuf>,
    pub(crate) stall: Duration,
    /// Give up after an outage this long (`None`: reconnect for ever).
    pub(crate) max_outage: Option<Duration>,
    /// The longest wait between two reconnect attempts (`--reconnect-max-ms`).
    pub(crate) reconnect_cap: Duration,
    /// `--close-race-per-minute N`.
    pub(crate) race_per_minute: u32,
    /// `--close-grace-ms MS`.
    pub(crate) close_grace: Duration,
    /// `--metrics ADDR` and whether a non-loopback address is allowed.
    pub(crate) metrics: Option<(std::net::SocketAddr, bool)>,
}

/// The most often a failed reconnect attempt is told on stderr: a server refusing at once is
/// retried within milliseconds at first, and each attempt's line would flood the terminal.
const ATTEMPT_LINE_EVERY: Duration = Duration::from_secs(1);

/// Tells each failed connection attempt on stderr, at most one line per
/// [`ATTEMPT_LINE_EVERY`]; attempts in between are counted in the next line.
struct Attempts {
    host: String,
    /// `failed_attempts` already told (or skipped).
    seen: u64,
    last_line: Option<Instant>,
}

impl Attempts {
    fn poll(&mut self, feed: &LiveFeed) {
        let link = feed.connection();
        if link.failed_attempts <= self.seen {
            return;
        }
        let Some(f) = link.last_failure else {
            return;
        };
        let final_one = f.retry_in.is_none();
        if !final_one
            && self
                .last_line
                .is_some_and(|t| now().duration_since(t) < ATTEMPT_LINE_EVERY)
        {
            return; // told with the next line
        }
        let skipped = link.failed_attempts - self.seen - 1;
        self.seen = link.failed_attempts;
        self.last_line = Some(now());
        let next = f.retry_in.map_or_else(
            || "giving up".to_owned(),
            |d| format!("next attempt in {}", HumanDuration(d)),
        );
        let more = if skipped > 0 {
            format!(" ({skipped} more failed since the last line)")
        } else {
            String::new()
        };
        let _ = writeln!(
            io::stderr(),
            "tvdatafeed: reconnect attempt {} to {} failed: {}; {next}{more}",
            f.attempt,
            self.host,
            f.error
        );
    }
}

#[expect(clippy::disallowed_methods, reason = "the command's own deadline")]
pub(crate) fn now() -> Instant {
    Instant::now()
}

fn invalid(msg: String) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidInput, msg)
}

fn to_io(e: Error) -> io::Error {
    io::Error::other(e.to_string())
}

/// `EXCHANGE:TICKER@INTERVAL`; an error names the spec.
fn parse_spec(spec: &str) -> Result<(Symbol, Interval), String> {
    let (symbol, interval) = spec.rsplit_once('@').ok_or_else(|| {
        format!(
            "{:?} is not EXCHANGE:TICKER@INTERVAL (e.g. BINANCE:BTCUSDT@1S)",
            echo(spec)
        )
    })?;
    let named = |e: &dyn std::fmt::Display| format!("{}: {e}", echo(spec));
    let symbol: Symbol = symbol.parse().map_err(|e| named(&e))?;
    let interval: Interval = interval.parse().map_err(|e| named(&e))?;
    Ok((symbol, interval))
}

/// Every spec parsed, each seis once: every malformed spec is refused (one stderr line each),
/// and specs naming a seis already asked for are dropped with one note naming them.
pub(crate) fn parse_specs(specs: &[String]) -> io::Result<Vec<(Symbol, Interval)>> {
    let mut seises: Vec<(Symbol, Interval)> = Vec::with_capacity(specs.len());
    let mut first: HashMap<(Symbol, Interval), &str> = HashMap::new();
    let (mut bad, mut repeats) = (Vec::new(), Vec::new());
    for spec in specs {
        match parse_spec(spec) {
            Err(e) => bad.push(e),
            Ok(seis) => match first.get(&seis) {
                Some(earlier) => repeats.push(format!("{} = {}", echo(spec), echo(earlier))),
                None => {
                    first.insert(seis.clone(), spec);
                    seises.push(seis);
                }
            },
        }
    }
    crate::hist::each_refused(bad)?;
    if !repeats.is_empty() {
        let _ = writeln!(
            io::stderr(),
            "tvdatafeed: {} repeated specs streamed once: {}",
            repeats.len(),
            named(&repeats)
        );
    }
    Ok(seises)
}

/// The first [`NAMED`] of `items`, comma-separated, then how many more.
fn named(items: &[String]) -> String {
    let mut s = items
        .iter()
        .take(NAMED)
        .map(String::as_str)
        .collect::<Vec<_>>()
        .join(", ");
    if items.len() > NAMED {
        s.push_str(&format!(" and {} more", items.len() - NAMED));
    }
    s
}

/// A line for stdout, a note for stderr, or a connection event of seis `.0` (an index into
/// the seises subscribed).
enum Line {
    Out(String),
    Note(String),
    Down(usize, String),
    Up(usize, Duration, u64),
    /// Closed bars lost for good (a backlog overflowed): printed, and the exit is non-zero.
    Lost(String),
    Fatal(String),
}

pub(crate) fn row(
    json: bool,
    symbol: &Symbol,
    interval: Interval,
    b: &Bar,
    forming: Option<bool>,
) -> String {
    let num = |x: f64| format!("{x}");
    if json {
        let volume = b.volume.map_or_else(|| "null".to_owned(), num);
        let mark = if forming == Some(true) {
            r#","forming":true"#
        } else {
            ""
        };
        // Symbols and intervals are validated ASCII without quotes or backslashes.
        format!(
            r#"{{"symbol":"{symbol}","interval":"{interval}","time":{},"open":{},"high":{},"low":{},"close":{},"volume":{volume}{mark}}}"#,
            b.time,
            num(b.open),
            num(b.high),
            num(b.low),
            num(b.close)
        )
    } else {
        let volume = b.volume.map(num).unwrap_or_default();
        let mut s = format!(
            "{symbol},{interval},{},{},{},{},{},{volume}",
            b.time,
            num(b.open),
            num(b.high),
            num(b.low),
            num(b.close)
        );
        if let Some(f) = forming {
            s.push_str(if f { ",true" } else { ",false" });
        }
        s
    }
}

/// The connection's state as the seises' events tell it, for one stderr line per connection
/// event instead of one per seis: every seis of a feed shares its one connection, so each
/// reports the same drop (and comes back after its own gap fill).
struct Link {
    host: String,
    names: Vec<String>,
    /// The seises whose `Disconnected` came and whose `Reconnected` has not.
    waiting: BTreeSet<usize>,
    /// This outage so far: the bars the gap fills brought, the longest time down.
    gap_bars: u64,
    down: Duration,
    /// The last cause given.
    cause: String,
}

impl Link {
    fn new(host: &str, names: Vec<String>) -> Self {
        Self {
            host: echo(host),
            names,
            waiting: BTreeSet::new(),
            gap_bars: 0,
            down: Duration::ZERO,
            cause: String::new(),
        }
    }

    fn say(line: &str) {
        let _ = writeln!(io::stderr(), "tvdatafeed: {line}");
    }

    /// A seis lost the connection. The first one of an outage says it for all of them; a
    /// seis that was back while others were still waiting means the connection dropped again.
    fn down(&mut self, seis: usize, cause: &str) {
        let again = !self.waiting.is_empty() && !self.waiting.contains(&seis);
        let first = self.waiting.is_empty();
        if first || again {
            Self::say(&format!(
                "disconnected from {}{}: {cause}; {} seises waiting",
                self.host,
                if again { " again" } else { "" },
                self.names.len()
            ));
            // Every seis shares the connection: all of them wait, whatever their events say.
            self.waiting = (0..self.names.len()).collect();
            if first {
                self.gap_bars = 0;
                self.down = Duration::ZERO;
            }
        }
        cause.clone_into(&mut self.cause);
    }

    /// A seis is back with its gap filled; the last one says it for all.
    fn up(&mut self, seis: usize, down: Duration, gap_bars: u64) {
        if !self.waiting.remove(&seis) {
            return;
        }
        self.gap_bars = self.gap_bars.saturating_add(gap_bars);
        self.down = self.down.max(down);
        if self.waiting.is_empty() {
            Self::say(&format!(
                "reconnected to {} after {}: {} seises back, {} bars filled in",
                self.host,
                HumanDuration(self.down),
                self.names.len(),
                self.gap_bars
            ));
        }
    }

    /// The run's verdict at the end: an error naming the seises not back when the feed was
    /// down (`connected` is the engine's own view, for a drop whose events had not come yet).
    fn at_end(&self, connected: bool) -> io::Result<()> {
        let missing: Vec<String> = if connected {
            self.waiting
                .iter()
                .map(|&i| self.names[i].clone())
                .collect()
        } else {
            self.names.clone()
        };
        if missing.is_empty() {
            return Ok(());
        }
        let cause = if self.cause.is_empty() {
            String::new()
        } else {
            format!(" ({})", self.cause)
        };
        let what = if connected {
            format!(
                "ended before every seis was back after a reconnect to {}",
                self.host
            )
        } else {
            format!("ended while disconnected from {}{cause}", self.host)
        };
        Err(io::Error::other(format!(
            "{what}: {} of {} seises not reconnected, their bars since the drop not printed: {}",
            missing.len(),
            self.names.len(),
            named(&missing)
        )))
    }
}

/// `builder` with the flags `live` and `publish` share: `--url` (an empty value means the
/// default), `--token` (blank means anonymous) and `--ca-cert`. Returns it with the host it
/// connects to, for messages.
pub(crate) fn connection_settings(
    mut builder: LiveFeedBuilder,
    url: Option<&str>,
    token: Option<&str>,
    ca_cert: Option<&std::path::Path>,
) -> io::Result<(LiveFeedBuilder, String)> {
    let mut host = Endpoint::data().host().to_owned();
    if let Some(token) = token.filter(|t| !t.trim().is_empty()) {
        builder = builder.token(AuthToken::new(token.trim()));
    }
    if let Some(url) = url.filter(|u| !u.trim().is_empty()) {
        let endpoint: Endpoint = url.parse().map_err(|e| invalid(format!("{e}")))?;
        endpoint.host().clone_into(&mut host);
        builder = builder.endpoint(endpoint).map_err(to_io)?;
    }
    if let Some(path) = ca_cert {
        let pem = std::fs::read_to_string(path)
            .map_err(|e| io::Error::new(e.kind(), format!("{}: {e}", path.display())))?;
        let transport = tvdatafeed::TransportConfig::default()
            .with_root_certificates_pem(&pem)
            .map_err(|e| invalid(format!("{}: {e}", path.display())))?;
        for der in transport.extra_roots {
            builder = builder.root_certificate(der);
        }
    }
    Ok((builder, host))
}

/// Subscribes every spec (each validated by the server). Every refusal of a seis is named,
/// one stderr line each; any other failure (the connection, a timeout) ends the checks at
/// once. On an error the feed is shut down and nothing was printed.
pub(crate) fn subscribe_all(
    feed: &LiveFeed,
    specs: &[(Symbol, Interval)],
    host: &str,
) -> io::Result<Vec<std::sync::Arc<tvdatafeed::Seis>>> {
    let mut seises = Vec::with_capacity(specs.len());
    let mut refused = Vec::new();
    for (symbol, interval) in specs {
        match feed.new_seis(symbol, *interval) {
            Ok(s) => seises.push(s),
            Err(e @ Error::Series { .. }) => refused.push(e.to_string()),
            Err(e) => {
                feed.shutdown(Duration::from_secs(5));
                let line = crate::hist::describe(&e, Some((symbol, *interval)), host);
                return Err(io::Error::other(line));
            }
        }
    }
    if !refused.is_empty() {
        feed.shutdown(Duration::from_secs(5));
        crate::hist::each_refused(refused)?;
    }
    Ok(seises)
}

/// Subscribes everything, then prints until `--duration` passes or Ctrl-C.
pub(crate) fn run(args: Args) -> io::Result<()> {
    if args.specs.is_empty() {
        return Err(invalid("give at least one EXCHANGE:TICKER@INTERVAL".into()));
    }
    let specs = parse_specs(&args.specs)?;
    let duration = match args.duration {
        Some(0) => {
            return Err(invalid(
                "--duration 0 would end before the first bar: give at least 1 second, or \
                 leave it out to run until Ctrl-C"
                    .into(),
            ));
        }
        Some(secs) => Some(crate::timeout(secs)),
        None => None,
    };
    // Rows written to a closed descriptor would vanish without an error.
    crate::out::stdout_is_open()?;
    if args.stall < MIN_QUIET_STALL {
        let _ = writeln!(
            io::stderr(),
            "tvdatafeed: warning: --stall-secs {} is under {}, two of TradingView's 10 s \
             heartbeats: a quiet connection will be replaced every {} (meant for a server \
             that beats faster)",
            args.stall.as_secs(),
            HumanDuration(MIN_QUIET_STALL),
            HumanDuration(args.stall)
        );
    }
    let (mut builder, host) = connection_settings(
        LiveFeed::builder().stall_timeout(args.stall),
        args.url.as_deref(),
        args.token.as_deref(),
        args.ca_cert.as_deref(),
    )?;
    if let Some(d) = args.max_outage {
        builder = builder.max_outage(d);
    }
    builder = builder
        .reconnect_backoff(RECONNECT_BASE.min(args.reconnect_cap), args.reconnect_cap)
        .close_race_per_minute(args.race_per_minute)
        .close_grace(args.close_grace);
    // Bound before any network work: a taken port is one error line, nothing on stdout.
    let metrics = args
        .metrics
        .map(|(addr, remote)| crate::metrics::bind(addr, remote))
        .transpose()?;
    // Ctrl-C: while connecting and subscribing (calls that wait up to their timeouts) it
    // ends the process at once, printing nothing on stdout; while streaming, the first one
    // stops the loop (which checks it every 100 ms) for a clean summary, and a second one ends
    // the process at once.
    let stop = Arc::new(AtomicBool::new(false));
    let streaming = Arc::new(AtomicBool::new(false));
    {
        let (stop, streaming) = (Arc::clone(&stop), Arc::clone(&streaming));
        let _ = ctrlc::set_handler(move || {
            if !streaming.load(Ordering::SeqCst) || stop.swap(true, Ordering::SeqCst) {
                let _ = writeln!(io::stderr(), "tvdatafeed: interrupted");
                std::process::exit(130);
            }
        });
    }
    let feed = Arc::new(
        builder
            .build()
            .map_err(|e| io::Error::other(crate::hist::describe(&e, None, &host)))?,
    );
    let _exporter = {
        let feed = Arc::clone(&feed);
        crate::metrics::Exporter::announced(metrics, move || {
            crate::metrics::live_text(&feed.stats())
        })?
    };
    let options = ConsumerOptions::default().with_updates(args.updates);
    // Subscribe every seis first: a refusal prints nothing on stdout.
    let seises = subscribe_all(&feed, &specs, &host)?;
    let mut out = crate::stdout();
    if !args.json {
        let header = if args.updates {
            "symbol,interval,time,open,high,low,close,volume,forming"
        } else {
            "symbol,interval,time,open,high,low,close,volume"
        };
        writeln!(out, "{header}")?;
        out.flush()?;
    }
    // One consumer for every seis, read on this thread: the lines come out in the order the
    // engine produced the bars across seises, and a slow stdout fills that one ring (updates
    // coalesced, closed bars kept: the engine's slow-consumer policy), never the engine.
    let index: HashMap<SeisId, usize> = seises
        .iter()
        .enumerate()
        .map(|(i, s)| (s.id(), i))
        .collect();
    let refs: Vec<&Seis> = seises.iter().map(|s| &**s).collect();
    let mut sub = feed.subscribe_many_with(&refs, options).map_err(to_io)?;
    let (json, updates) = (args.json, args.updates);
    let line_of = |e: SeisEvent| -> Option<Line> {
        let (symbol, interval) = (e.symbol(), e.interval());
        let forming = |f: bool| updates.then_some(f);
        let i = index.get(&e.id()).copied().unwrap_or(0);
        Some(match e.event() {
            LiveEvent::Closed(b) => Line::Out(row(json, symbol, interval, b, forming(false))),
            LiveEvent::Update(b) => Line::Out(row(json, symbol, interval, b, forming(true))),
            LiveEvent::Revised(b) => Line::Note(format!(
                "{symbol} {interval}: bar {} revised: close {}",
                b.time, b.close
            )),
            LiveEvent::Lagged {
                lost_closed: 0,
                missed,
                ..
            } => Line::Note(format!(
                "{symbol} {interval}: output too slow: {missed} updates dropped (closed bars are kept)"
            )),
            LiveEvent::Lagged {
                lost_closed,
                first_time,
                ..
            } => Line::Lost(format!(
                "{symbol} {interval}: output too slow: {lost_closed} closed bars lost, from bar {}",
                first_time.map_or_else(|| "-".to_owned(), |t| t.to_string())
            )),
            LiveEvent::Disconnected { cause } => Line::Down(i, cause.clone()),
            LiveEvent::Reconnected { down, gap_bars } => Line::Up(i, *down, *gap_bars),
            LiveEvent::Failed(Error::Shutdown) => return None,
            LiveEvent::Failed(e) => Line::Fatal(format!("{symbol} {interval}: {e}")),
            other => Line::Note(format!("{symbol} {interval}: {other:?}")),
        })
    };
    let end = duration.and_then(|d| now().checked_add(d));
    let names: Vec<String> = seises
        .iter()
        .map(|s| format!("{} {}", s.symbol(), s.interval()))
        .collect();
    let mut link = Link::new(&host, names);
    let mut attempts = Attempts {
        host: echo(&host),
        seen: feed.connection().failed_attempts,
        last_line: None,
    };
    streaming.store(true, Ordering::SeqCst);
    let mut result = Ok(());
    let mut lost = false;
    let mut handle = |line: Line, result: &mut io::Result<()>| -> bool {
        match line {
            Line::Out(l) => {
                if let Err(e) = writeln!(out, "{l}").and_then(|()| out.flush()) {
                    *result = Err(e);
                    return false;
                }
            }
            Line::Note(n) => {
                let _ = writeln!(io::stderr(), "tvdatafeed: {n}");
            }
            Line::Down(i, cause) => link.down(i, &cause),
            Line::Up(i, down, gap_bars) => link.up(i, down, gap_bars),
            Line::Lost(n) => {
                let _ = writeln!(io::stderr(), "tvdatafeed: {n}");
                lost = true;
            }
            Line::Fatal(f) => {
                *result = Err(io::Error::other(f));
                return false;
            }
        }
        true
    };
    loop {
        if stop.load(Ordering::SeqCst) || end.is_some_and(|e| now() >= e) {
            // What already arrived is still handled (a disconnect in the ring counts), for
            // at most a moment: the engine keeps delivering.
            let until = now() + Duration::from_millis(200);
            while now() < until
                && let Ok(e) = sub.try_recv()
            {
                if let Some(line) = line_of(e)
                    && !handle(line, &mut result)
                {
                    break;
                }
            }
            break;
        }
        attempts.poll(&feed);
        match sub.recv_timeout(Duration::from_millis(100)) {
            Ok(e) => {
                if let Some(line) = line_of(e)
                    && !handle(line, &mut result)
                {
                    break;
                }
            }
            Err(RecvError::Timeout) => {}
            // The consumer ended (the feed shut down): nothing more comes.
            Err(_) => break,
        }
    }
    drop(sub);
    // The last failed attempt (the one that gave up, or one inside the rate limit) is told.
    attempts.last_line = None;
    attempts.poll(&feed);
    // Ending while the connection is down (or some seises' gap not yet filled) leaves a gap
    // in the output that a reader cannot see: it fails the run and says which seises.
    if result.is_ok() {
        result = link.at_end(feed.stats().connected);
    }
    // A closed bar lost for good (told by a `Lagged` or only counted so far) fails the run.
    let lost_closed: u64 = feed.stats().consumers.iter().map(|c| c.lost_closed).sum();
    if (lost || lost_closed > 0) && result.is_ok() {
        result = Err(io::Error::other(format!(
            "{lost_closed} closed bars were lost because the output was too slow"
        )));
    }
    let report = feed.shutdown(Duration::from_secs(5));
    if !report.is_clean() {
        let _ = writeln!(
            io::stderr(),
            "tvdatafeed: shutdown left threads running: {}",
            report.unfinished.join(", ")
        );
    }
    result
}
