//! `tvdatafeed live`: stream closed bars, one line each, flushed per line.
//!
//! Every symbol is subscribed (and so validated by the server) before anything is printed: an
//! unknown one is one line on stderr and a non-zero exit, nothing on stdout. Connection events
//! (a reconnect, a lag) go to stderr, never to stdout, whose lines stay exactly once and in
//! order per seis.
#![allow(
    clippy::disallowed_types,
    reason = "a command-line program sharing a Ctrl-C flag; the loom shim is the library's"
)]

use std::{
    io::{self, Write},
    path::PathBuf,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
        mpsc,
    },
    time::{Duration, Instant},
};

use tvdatafeed::{
    AuthToken, Bar, ConsumerOptions, Endpoint, Error, Interval, LiveEvent, LiveFeed, Symbol,
};

/// The parsed command line of `live`.
pub(crate) struct Args {
    pub(crate) specs: Vec<String>,
    pub(crate) url: Option<String>,
    pub(crate) token: Option<String>,
    pub(crate) duration: Option<Duration>,
    pub(crate) json: bool,
    pub(crate) updates: bool,
    pub(crate) ca_cert: Option<PathBuf>,
    pub(crate) stall: Duration,
    /// `--metrics ADDR` and whether a non-loopback address is allowed.
    pub(crate) metrics: Option<(std::net::SocketAddr, bool)>,
}

#[expect(clippy::disallowed_methods, reason = "the command's own deadline")]
fn now() -> Instant {
    Instant::now()
}

fn invalid(msg: String) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidInput, msg)
}

fn to_io(e: Error) -> io::Error {
    io::Error::other(e.to_string())
}

/// `EXCHANGE:TICKER@INTERVAL`.
fn parse_spec(spec: &str) -> io::Result<(Symbol, Interval)> {
    let (symbol, interval) = spec.rsplit_once('@').ok_or_else(|| {
        invalid(format!(
            "{:?} is not EXCHANGE:TICKER@INTERVAL (e.g. BINANCE:BTCUSDT@1S)",
            tvdatafeed_echo(spec)
        ))
    })?;
    let symbol: Symbol = symbol.parse().map_err(|e| invalid(format!("{e}")))?;
    let interval: Interval = interval.parse().map_err(|e| invalid(format!("{e}")))?;
    Ok((symbol, interval))
}

/// User input cut to 80 characters, as the library's errors echo it.
fn tvdatafeed_echo(s: &str) -> String {
    match s.char_indices().nth(80) {
        None => s.to_owned(),
        Some((at, _)) => format!("{}…", &s[..at]),
    }
}

/// A line for stdout, or a note for stderr.
enum Line {
    Out(String),
    Note(String),
    /// Closed bars lost for good (a backlog overflowed): printed, and the exit is non-zero.
    Lost(String),
    Fatal(String),
}

fn row(json: bool, symbol: &Symbol, interval: Interval, b: &Bar, forming: Option<bool>) -> String {
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

/// Subscribes everything, then prints until `--duration` passes or Ctrl-C.
pub(crate) fn run(args: Args) -> io::Result<()> {
    if args.specs.is_empty() {
        return Err(invalid("give at least one EXCHANGE:TICKER@INTERVAL".into()));
    }
    let specs: Vec<(Symbol, Interval)> = args
        .specs
        .iter()
        .map(|s| parse_spec(s))
        .collect::<io::Result<_>>()?;
    let mut builder = LiveFeed::builder().stall_timeout(args.stall);
    if let Some(token) = args.token.filter(|t| !t.trim().is_empty()) {
        builder = builder.token(AuthToken::new(token.trim()));
    }
    if let Some(url) = args.url.as_deref().filter(|u| !u.trim().is_empty()) {
        let endpoint: Endpoint = url.parse().map_err(|e| invalid(format!("{e}")))?;
        builder = builder.endpoint(endpoint).map_err(to_io)?;
    }
    if let Some(path) = &args.ca_cert {
        let pem = std::fs::read_to_string(path)
            .map_err(|e| io::Error::new(e.kind(), format!("{}: {e}", path.display())))?;
        let transport = tvdatafeed::TransportConfig::default()
            .with_root_certificates_pem(&pem)
            .map_err(|e| invalid(format!("{}: {e}", path.display())))?;
        for der in transport.extra_roots {
            builder = builder.root_certificate(der);
        }
    }
    // Bound before any network work: a taken port is one error line, nothing on stdout.
    let metrics = args
        .metrics
        .map(|(addr, remote)| crate::metrics::bind(addr, remote))
        .transpose()?;
    let stop = Arc::new(AtomicBool::new(false));
    {
        let stop = Arc::clone(&stop);
        // A second Ctrl-C while shutting down falls back to the default: the process ends.
        let _ = ctrlc::set_handler(move || stop.store(true, Ordering::SeqCst));
    }
    let feed = Arc::new(builder.build().map_err(to_io)?);
    let _exporter = match metrics {
        Some(listener) => {
            let feed = Arc::clone(&feed);
            let e = crate::metrics::Exporter::start(listener, move || {
                crate::metrics::live_text(&feed.stats())
            })?;
            let _ = writeln!(
                io::stderr(),
                "tvdatafeed: metrics at http://{}/metrics",
                e.addr()
            );
            Some(e)
        }
        None => None,
    };
    let (tx, rx) = mpsc::sync_channel::<Line>(4096);
    let options = ConsumerOptions::default().with_updates(args.updates);
    // Subscribe every seis first: a refusal prints nothing on stdout.
    let mut seises = Vec::with_capacity(specs.len());
    for (symbol, interval) in &specs {
        match feed.new_seis(symbol, *interval) {
            Ok(s) => seises.push(s),
            Err(e) => {
                feed.shutdown(Duration::from_secs(5));
                return Err(to_io(e));
            }
        }
    }
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
    for seis in &seises {
        let tx = tx.clone();
        let (symbol, interval, json, updates) = (
            seis.symbol().clone(),
            seis.interval(),
            args.json,
            args.updates,
        );
        let forming = move |f: bool| updates.then_some(f);
        feed.new_consumer_with(seis, options, move |event| {
            let line = match event {
                LiveEvent::Closed(b) => Line::Out(row(json, &symbol, interval, &b, forming(false))),
                LiveEvent::Update(b) => Line::Out(row(json, &symbol, interval, &b, forming(true))),
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
                LiveEvent::Disconnected { cause } => Line::Note(format!(
                    "{symbol} {interval}: disconnected ({cause}); reconnecting"
                )),
                LiveEvent::Reconnected { down, gap_bars } => Line::Note(format!(
                    "{symbol} {interval}: reconnected after {down:?}, {gap_bars} bars filled in"
                )),
                LiveEvent::Failed(Error::Shutdown) => return,
                LiveEvent::Failed(e) => Line::Fatal(format!("{symbol} {interval}: {e}")),
                other => Line::Note(format!("{symbol} {interval}: {other:?}")),
            };
            // Blocks this consumer only (its ring absorbs the engine's side).
            let _ = tx.send(line);
        })
        .map_err(to_io)?;
    }
    drop(tx);
    let end = args.duration.and_then(|d| now().checked_add(d));
    let mut result = Ok(());
    let mut lost = false;
    loop {
        if stop.load(Ordering::SeqCst) || end.is_some_and(|e| now() >= e) {
            break;
        }
        match rx.recv_timeout(Duration::from_millis(100)) {
            Ok(Line::Out(l)) => {
                if let Err(e) = writeln!(out, "{l}").and_then(|()| out.flush()) {
                    result = Err(e);
                    break;
                }
            }
            Ok(Line::Note(n)) => {
                let _ = writeln!(io::stderr(), "tvdatafeed: {n}");
            }
            Ok(Line::Lost(n)) => {
                let _ = writeln!(io::stderr(), "tvdatafeed: {n}");
                lost = true;
            }
            Ok(Line::Fatal(f)) => {
                result = Err(io::Error::other(f));
                break;
            }
            Err(mpsc::RecvTimeoutError::Timeout) => {}
            Err(mpsc::RecvTimeoutError::Disconnected) => break,
        }
    }
    // Consumers blocked on a full channel return once it is gone.
    drop(rx);
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
