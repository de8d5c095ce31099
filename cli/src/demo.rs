//! `tvdatafeed demo`: the first command a newcomer types. It starts the embedded simulator on
//! loopback, subscribes a handful of seises (seconds bars, so something happens at once) on one
//! `LiveFeed` connection, shows the closed bars as they arrive, and ends with the latency
//! summary and the ground-truth check.
//!
//! - On a terminal: a small table (the first [`ROWS`] seises' last closed bar) redrawn in place,
//!   with a progress line under it. Otherwise: one plain line per closed bar of those seises,
//!   and a progress line every [`PLAIN_PROGRESS`].
//! - Every closed bar of every seis is checked against the simulator's ground truth
//!   (`Sim::expected_bar`), and each seis' bars must follow each other without a gap or a
//!   repeat. A mismatch fails the command (non-zero exit), so CI can use it as a smoke test.
//! - Latencies (hdrhistogram): a bar's close time (its interval boundary, wall clock) to the
//!   start of its callback, and the simulator's write of the message that closed it (the next
//!   bar's first message, `SimConfig::record_send_times`) to the start of its callback.
#![allow(
    clippy::disallowed_types,
    reason = "a command-line program sharing a Ctrl-C flag; the loom shim is the library's"
)]

use std::{
    collections::{HashMap, VecDeque},
    fmt::Write as _,
    io::{self, IsTerminal, Write},
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
        mpsc,
    },
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};

use hdrhistogram::Histogram;
use tvdatafeed::{
    Bar, Error, Interval, LiveEvent, LiveFeed, Seis, Symbol,
    sim::{Sim, SimConfig},
};

/// Most seises `--seises` accepts (one connection carries them all).
pub(crate) const MAX_SEISES: u32 = 1_000;
/// Seises shown in the table (or as plain lines); the others are checked and counted only.
const ROWS: usize = 8;
/// How often the table is redrawn.
const REDRAW: Duration = Duration::from_millis(200);
/// How often a plain progress line is printed when stdout is not a terminal.
const PLAIN_PROGRESS: Duration = Duration::from_secs(2);
/// A close whose closing message the simulator has not reported by then is counted unmatched.
const MATCH_WITHIN: Duration = Duration::from_secs(2);
/// The bars' resolution: one close per second per seis.
const INTERVAL: &str = "1S";
/// Symbols the first seises get; later ones are `SIM:T0009`, `SIM:T0010`, …
const NAMES: [&str; 8] = [
    "BINANCE:BTCUSDT",
    "BINANCE:ETHUSDT",
    "NASDAQ:AAPL",
    "NASDAQ:MSFT",
    "FX:EURUSD",
    "OANDA:XAUUSD",
    "NYSE:IBM",
    "COINBASE:SOLUSD",
];

/// The parsed command line of `demo`.
pub(crate) struct Args {
    pub(crate) seises: u32,
    pub(crate) duration: Duration,
    pub(crate) update_ms: u64,
}

#[expect(clippy::disallowed_methods, reason = "the demo measures wall time")]
fn now() -> Instant {
    Instant::now()
}

fn unix_ns() -> i128 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i128::try_from(d.as_nanos()).unwrap_or(i128::MAX))
}

fn to_io(e: Error) -> io::Error {
    io::Error::other(e.to_string())
}

fn histogram() -> Histogram<u64> {
    // 1 ns to an hour, 3 significant digits: valid bounds, so this cannot fail.
    Histogram::new_with_bounds(1, 3_600_000_000_000, 3).expect("valid histogram bounds")
}

/// What a consumer callback tells the main thread.
enum Note {
    /// A closed bar, with the instants its callback started (monotonic and wall clock).
    Closed {
        seis: usize,
        bar: Bar,
        at: Instant,
        wall_ns: i128,
    },
    /// Anything else worth saying (a revision, a lag, a reconnect, a failure).
    Other { seis: usize, text: String },
}

/// One seis as the demo tracks it.
struct Row {
    symbol: Symbol,
    interval: Interval,
    last: Option<Bar>,
    bars: u64,
    /// Close → callback of the last bar, ns.
    last_close_ns: u64,
}

/// A closed bar waiting for the simulator's record of the message that closed it.
struct Pending {
    seis: usize,
    next_open: i64,
    at: Instant,
    since: Instant,
}

/// Everything counted and measured.
struct Tally {
    rows: Vec<Row>,
    received: u64,
    mismatches: u64,
    missing: u64,
    repeats: u64,
    unmatched: u64,
    notes: u64,
    first_mismatch: Option<String>,
    close_to_cb: Histogram<u64>,
    socket_to_cb: Histogram<u64>,
    /// Bar close to the simulator's write of the message that closed it: the server's share.
    close_to_send: Histogram<u64>,
    /// A monotonic instant and the wall clock read together, to put sends on the wall clock.
    anchor: (Instant, i128),
    /// (seis, bar open time) → when the simulator wrote the first message of that bar.
    opened: HashMap<(usize, i64), Instant>,
    pending: VecDeque<Pending>,
}

/// The symbols of `n` seises.
fn symbols(n: u32) -> Vec<Symbol> {
    (0..n as usize)
        .map(|i| {
            let name = NAMES
                .get(i)
                .map_or_else(|| format!("SIM:T{:04}", i + 1), |s| (*s).to_owned());
            name.parse().expect("demo symbols are valid")
        })
        .collect()
}

/// `HH:MM:SS` (UTC) of a Unix time.
fn hms(t: i64) -> String {
    let s = t.rem_euclid(86_400);
    format!("{:02}:{:02}:{:02}", s / 3600, s / 60 % 60, s % 60)
}

/// A latency in the unit that reads best.
fn dur(ns: u64) -> String {
    match ns {
        0..=999 => format!("{ns} ns"),
        1_000..=9_999 => format!("{:.1} µs", ns as f64 / 1e3),
        10_000..=999_999 => format!("{:.0} µs", ns as f64 / 1e3),
        1_000_000..=999_999_999 => format!("{:.2} ms", ns as f64 / 1e6),
        _ => format!("{:.2} s", ns as f64 / 1e9),
    }
}

/// Subscribes every seis, four at a time (each `new_seis` waits for the server's answer).
fn subscribe_all(
    feed: &LiveFeed,
    symbols: &[Symbol],
    interval: Interval,
) -> io::Result<Vec<Arc<Seis>>> {
    const WORKERS: usize = 4;
    let chunk = symbols.len().div_ceil(WORKERS).max(1);
    let results: Vec<io::Result<Vec<Arc<Seis>>>> = std::thread::scope(|scope| {
        let handles: Vec<_> = symbols
            .chunks(chunk)
            .enumerate()
            .map(|(i, part)| {
                std::thread::Builder::new()
                    .name(format!("demo-subscribe-{i}"))
                    .spawn_scoped(scope, move || {
                        part.iter()
                            .map(|s| feed.new_seis(s, interval).map_err(to_io))
                            .collect::<io::Result<Vec<_>>>()
                    })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| match h {
                Ok(h) => h
                    .join()
                    .unwrap_or_else(|_| Err(io::Error::other("a subscribing thread panicked"))),
                Err(e) => Err(e),
            })
            .collect()
    });
    let mut seises = Vec::with_capacity(symbols.len());
    for r in results {
        seises.extend(r?);
    }
    Ok(seises)
}

/// Runs the demo.
pub(crate) fn run(args: Args) -> io::Result<()> {
    if !(1..=MAX_SEISES).contains(&args.seises) {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("--seises must be 1 to {MAX_SEISES}"),
        ));
    }
    let interval: Interval = INTERVAL.parse().expect("a valid interval");
    let tty = io::stdout().is_terminal();
    let stop = Arc::new(AtomicBool::new(false));
    {
        let stop = Arc::clone(&stop);
        // A second Ctrl-C while shutting down falls back to the default: the process ends.
        let _ = ctrlc::set_handler(move || stop.store(true, Ordering::SeqCst));
    }
    let sim = Sim::start(
        SimConfig::default()
            .with_update_interval(Duration::from_millis(args.update_ms.max(1)))
            .with_record_send_times(1 << 20),
    )
    .map_err(io::Error::other)?;
    let mut out = crate::stdout();
    writeln!(
        out,
        "tvdatafeed demo: {} seis{} of {INTERVAL} bars on one connection to the embedded \
         simulator ({}), default LiveFeed settings",
        args.seises,
        if args.seises == 1 { "" } else { "es" },
        sim.url()
    )?;
    out.flush()?;
    let feed = LiveFeed::builder()
        .endpoint(sim.url())
        .map_err(to_io)?
        .build()
        .map_err(to_io)?;
    let symbols = symbols(args.seises);
    let start = now();
    let seises = match subscribe_all(&feed, &symbols, interval) {
        Ok(s) => s,
        Err(e) => {
            feed.shutdown(Duration::from_secs(5));
            return Err(e);
        }
    };
    let index: HashMap<Symbol, usize> = symbols
        .iter()
        .enumerate()
        .map(|(i, s)| (s.clone(), i))
        .collect();
    let (tx, rx) = mpsc::sync_channel::<Note>(65_536);
    for (i, seis) in seises.iter().enumerate() {
        let tx = tx.clone();
        feed.new_consumer(seis, move |event| {
            let note = match event {
                LiveEvent::Closed(bar) => {
                    // Both clocks first: this is the instant the callback sees the bar.
                    let at = now();
                    let wall_ns = unix_ns();
                    Note::Closed {
                        seis: i,
                        bar,
                        at,
                        wall_ns,
                    }
                }
                LiveEvent::Failed(Error::Shutdown) => return,
                other => Note::Other {
                    seis: i,
                    text: format!("{other:?}"),
                },
            };
            // Blocks this consumer only (its ring absorbs the engine's side).
            let _ = tx.send(note);
        })
        .map_err(to_io)?;
    }
    drop(tx);
    let mut tally = Tally {
        rows: symbols
            .iter()
            .map(|s| Row {
                symbol: s.clone(),
                interval,
                last: None,
                bars: 0,
                last_close_ns: 0,
            })
            .collect(),
        received: 0,
        mismatches: 0,
        missing: 0,
        repeats: 0,
        unmatched: 0,
        notes: 0,
        first_mismatch: None,
        close_to_cb: histogram(),
        socket_to_cb: histogram(),
        close_to_send: histogram(),
        anchor: (now(), unix_ns()),
        opened: HashMap::new(),
        pending: VecDeque::new(),
    };
    let subscribed = start.elapsed();
    writeln!(
        out,
        "subscribed in {:.0} ms; running for {} s (Ctrl-C stops)",
        subscribed.as_secs_f64() * 1e3,
        args.duration.as_secs()
    )?;
    out.flush()?;
    let run_start = now();
    let end = run_start.checked_add(args.duration);
    let mut drawn = 0usize;
    let mut next_draw = run_start;
    let mut next_progress = run_start + PLAIN_PROGRESS;
    loop {
        if stop.load(Ordering::SeqCst) || end.is_some_and(|e| now() >= e) {
            break;
        }
        match rx.recv_timeout(Duration::from_millis(50)) {
            Ok(note) => {
                if let Some(line) = take(&mut tally, &sim, note, tty)
                    && !tty
                {
                    writeln!(out, "{line}")?;
                }
                // Drain what else is waiting before drawing.
                while let Ok(note) = rx.try_recv() {
                    if let Some(line) = take(&mut tally, &sim, note, tty)
                        && !tty
                    {
                        writeln!(out, "{line}")?;
                    }
                }
            }
            Err(mpsc::RecvTimeoutError::Timeout) => {}
            Err(mpsc::RecvTimeoutError::Disconnected) => break,
        }
        match_sends(&mut tally, &sim, &index);
        let t = now();
        if tty && t >= next_draw {
            drawn = draw(&mut out, &tally, drawn, run_start.elapsed(), args.duration)?;
            next_draw = t + REDRAW;
        } else if !tty && t >= next_progress {
            writeln!(
                out,
                "{}",
                progress(&tally, run_start.elapsed(), args.duration)
            )?;
            next_progress = t + PLAIN_PROGRESS;
        }
        out.flush()?;
    }
    let elapsed = run_start.elapsed();
    let stats = feed.stats();
    drop(rx);
    let report = feed.shutdown(Duration::from_secs(5));
    // The last closes' sends may still be on their way into the record.
    match_sends(&mut tally, &sim, &index);
    tally.unmatched += tally.pending.len() as u64;
    if tty {
        draw(&mut out, &tally, drawn, elapsed, args.duration)?;
    }
    summary(&mut out, &tally, &args, elapsed, &stats)?;
    out.flush()?;
    drop(out);
    sim.stop(Duration::from_secs(2));
    if !report.is_clean() {
        let _ = writeln!(
            io::stderr(),
            "tvdatafeed: shutdown left threads running: {}",
            report.unfinished.join(", ")
        );
    }
    if tally.mismatches + tally.missing + tally.repeats > 0 {
        return Err(io::Error::other(format!(
            "demo: the ground-truth check failed ({} mismatches, {} missing, {} repeated){}",
            tally.mismatches,
            tally.missing,
            tally.repeats,
            tally
                .first_mismatch
                .as_deref()
                .map_or_else(String::new, |m| format!("; first: {m}"))
        )));
    }
    if tally.received == 0 {
        return Err(io::Error::other("demo: no bar closed"));
    }
    Ok(())
}

/// Takes one note: checks a closed bar against the ground truth and measures it. Returns the
/// plain line to print for it, if its seis is shown.
fn take(t: &mut Tally, sim: &Sim, note: Note, tty: bool) -> Option<String> {
    let (seis, bar, at, wall_ns) = match note {
        Note::Closed {
            seis,
            bar,
            at,
            wall_ns,
        } => (seis, bar, at, wall_ns),
        Note::Other { seis, text } => {
            t.notes += 1;
            let row = &t.rows[seis];
            return (!tty).then(|| format!("{} {}: {text}", row.symbol, row.interval));
        }
    };
    t.received += 1;
    let row = &mut t.rows[seis];
    let expected = sim.expected_bar(&row.symbol, row.interval, bar.time);
    let ok = bar == expected;
    if !ok {
        t.mismatches += 1;
        t.first_mismatch.get_or_insert_with(|| {
            format!(
                "{} {} at {}: got {bar:?}, the simulator says {expected:?}",
                row.symbol, row.interval, bar.time
            )
        });
    }
    if let Some(last) = row.last {
        let step = row.interval.next_bar_open(last.time);
        if bar.time <= last.time {
            t.repeats += 1;
        } else if bar.time > step {
            // Bars skipped: count them (fixed-length intervals here).
            let len = (step - last.time).max(1);
            t.missing += u64::try_from((bar.time - step) / len).unwrap_or(0);
        }
    }
    let next_open = row.interval.next_bar_open(bar.time);
    let close_ns = i128::from(next_open) * 1_000_000_000;
    let late = u64::try_from((wall_ns - close_ns).max(1)).unwrap_or(u64::MAX);
    t.close_to_cb.saturating_record(late);
    row.last = Some(bar);
    row.bars += 1;
    row.last_close_ns = late;
    t.pending.push_back(Pending {
        seis,
        next_open,
        at,
        since: now(),
    });
    (!tty && seis < ROWS).then(|| {
        format!(
            "{} {} {} {} o={} h={} l={} c={} v={} {} close→callback {}",
            hms(bar.time),
            row.symbol,
            row.interval,
            if ok { "ok" } else { "MISMATCH" },
            bar.open,
            bar.high,
            bar.low,
            bar.close,
            bar.volume.map_or_else(|| "-".to_owned(), |v| v.to_string()),
            row.bars,
            dur(late)
        )
    })
}

/// Takes the simulator's record of its live messages, and matches each pending close with the
/// write of the message that closed it (the first message of the next bar).
fn match_sends(t: &mut Tally, sim: &Sim, index: &HashMap<Symbol, usize>) {
    for s in sim.take_live_sends() {
        if let Some(&i) = index.get(&s.symbol) {
            t.opened.entry((i, s.bar.time)).or_insert(s.at);
        }
    }
    let now = now();
    let mut left = VecDeque::with_capacity(t.pending.len());
    while let Some(p) = t.pending.pop_front() {
        match t.opened.remove(&(p.seis, p.next_open)) {
            Some(sent) => {
                let ns = p.at.saturating_duration_since(sent).as_nanos();
                t.socket_to_cb
                    .saturating_record(u64::try_from(ns).unwrap_or(u64::MAX).max(1));
                let (i0, w0) = t.anchor;
                let sent_wall = w0
                    + i128::try_from(sent.saturating_duration_since(i0).as_nanos())
                        .unwrap_or(i128::MAX);
                let late = sent_wall - i128::from(p.next_open) * 1_000_000_000;
                t.close_to_send
                    .saturating_record(u64::try_from(late.max(1)).unwrap_or(u64::MAX));
            }
            None if now.saturating_duration_since(p.since) > MATCH_WITHIN => t.unmatched += 1,
            None => left.push_back(p),
        }
    }
    t.pending = left;
    // Forget the openings of bars long gone (their close was matched or never comes).
    let horizon = (SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs()) as i64)
        - 10;
    t.opened.retain(|&(_, open), _| open >= horizon);
}

fn quantiles(h: &Histogram<u64>) -> String {
    if h.is_empty() {
        return format!("{:>10} {:>10} {:>10} {:>8}", "-", "-", "-", 0);
    }
    format!(
        "{:>10} {:>10} {:>10} {:>8}",
        dur(h.value_at_quantile(0.5)),
        dur(h.value_at_quantile(0.99)),
        dur(h.max()),
        h.len()
    )
}

fn progress(t: &Tally, elapsed: Duration, total: Duration) -> String {
    let mut s = format!(
        "[{:5.1} s / {} s] {} bars closed, {} checked: {} mismatches",
        elapsed.as_secs_f64(),
        total.as_secs(),
        t.received,
        t.received,
        t.mismatches
    );
    if !t.close_to_cb.is_empty() {
        let _ = write!(
            s,
            " · close→callback p50 {}",
            dur(t.close_to_cb.value_at_quantile(0.5))
        );
    }
    if !t.socket_to_cb.is_empty() {
        let _ = write!(
            s,
            " · socket→callback p50 {}",
            dur(t.socket_to_cb.value_at_quantile(0.5))
        );
    }
    s
}

/// Redraws the table in place (the cursor goes back up over the `drawn` lines of the last
/// draw). Returns the number of lines drawn.
fn draw(
    out: &mut impl Write,
    t: &Tally,
    drawn: usize,
    elapsed: Duration,
    total: Duration,
) -> io::Result<usize> {
    let mut lines = Vec::with_capacity(ROWS + 3);
    lines.push(format!(
        "{:<18} {:<4} {:<8} {:>11} {:>11} {:>11} {:>11} {:>10} {:>5} {:>14}",
        "symbol", "int", "bar", "open", "high", "low", "close", "volume", "bars", "close→callback"
    ));
    for row in t.rows.iter().take(ROWS) {
        lines.push(match row.last {
            None => format!(
                "{:<18} {:<4} {:<8}",
                row.symbol.as_str(),
                row.interval.to_string(),
                "…"
            ),
            Some(b) => format!(
                "{:<18} {:<4} {:<8} {:>11.2} {:>11.2} {:>11.2} {:>11.2} {:>10} {:>5} {:>14}",
                row.symbol.as_str(),
                row.interval.to_string(),
                hms(b.time),
                b.open,
                b.high,
                b.low,
                b.close,
                b.volume
                    .map_or_else(|| "-".to_owned(), |v| format!("{v:.3}")),
                row.bars,
                dur(row.last_close_ns)
            ),
        });
    }
    if t.rows.len() > ROWS {
        lines.push(format!(
            "… and {} more seises, every bar checked",
            t.rows.len() - ROWS
        ));
    }
    lines.push(progress(t, elapsed, total));
    if drawn > 0 {
        write!(out, "\x1b[{drawn}A")?;
    }
    for l in &lines {
        writeln!(out, "\r\x1b[2K{l}")?;
    }
    Ok(lines.len())
}

fn summary(
    out: &mut impl Write,
    t: &Tally,
    args: &Args,
    elapsed: Duration,
    stats: &tvdatafeed::Stats,
) -> io::Result<()> {
    writeln!(out)?;
    writeln!(
        out,
        "summary: {} seises × {INTERVAL} bars for {:.1} s over one connection",
        args.seises,
        elapsed.as_secs_f64()
    )?;
    writeln!(
        out,
        "closed bars: {} received, {} checked against the simulator's ground truth: {} mismatches, \
         {} missing, {} repeated",
        t.received, t.received, t.mismatches, t.missing, t.repeats
    )?;
    writeln!(
        out,
        "latency (hdrhistogram)        {:>10} {:>10} {:>10} {:>8}",
        "p50", "p99", "max", "bars"
    )?;
    writeln!(
        out,
        "  bar close → callback       {}",
        quantiles(&t.close_to_cb)
    )?;
    writeln!(
        out,
        "  socket → callback          {}",
        quantiles(&t.socket_to_cb)
    )?;
    writeln!(
        out,
        "  (bar close → the simulator's write of the closing message: {})",
        quantiles(&t.close_to_send).trim_start()
    )?;
    // The engine's own histograms (LiveFeed::stats), always on: the worst consumer's p99.
    let worst = |f: fn(&tvdatafeed::ConsumerStats) -> Duration| {
        stats.consumers.iter().map(f).max().unwrap_or_default()
    };
    writeln!(
        out,
        "engine stats (LiveFeed::stats, built in): {} messages, {} reconnects; worst consumer p99: \
         ring push → callback {}, close → callback {}",
        stats.messages,
        stats.reconnects,
        dur(u64::try_from(worst(|c| c.push_to_callback.p99).as_nanos()).unwrap_or(u64::MAX)),
        dur(u64::try_from(worst(|c| c.close_to_callback.p99).as_nanos()).unwrap_or(u64::MAX)),
    )?;
    if t.unmatched > 0 || t.notes > 0 {
        writeln!(
            out,
            "notes: {} closes without a recorded closing message, {} other events",
            t.unmatched, t.notes
        )?;
    }
    Ok(())
}
