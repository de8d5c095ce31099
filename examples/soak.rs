//! Soak: many seises on one live connection for a long time, with a random fault injected
//! every few seconds, every closed bar checked against the simulator's ground truth.
//!
//! ```text
//! cargo run --release --features sim --example soak -- [--seises 1000] [--duration 60]
//!     [--fault-every 5] [--seed 1]
//! ```
//!
//! At the end it prints the bars delivered, duplicates, gaps and wrong values (each must be
//! 0), reconnects, faults injected, the resident memory over time (start, middle, end, peak)
//! and the bar-close to callback latency (live bars, and bars delivered by a gap fill), and
//! exits non-zero if anything was lost, duplicated or wrong, or if memory kept growing.
#![allow(
    clippy::disallowed_types,
    clippy::disallowed_methods,
    clippy::print_stdout,
    clippy::print_stderr,
    reason = "a command-line program: std threads, clocks and locks, and output, are its job"
)]

use std::{
    process::ExitCode,
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, Ordering},
        mpsc,
    },
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};

use hdrhistogram::Histogram;
use tvdatafeed::{
    Bar, LiveEvent, LiveFeed, Seis,
    sim::{Fault, FaultKind, Sim, SimConfig},
};

struct Args {
    seises: usize,
    duration: Duration,
    fault_every: Duration,
    seed: u64,
}

fn usage() -> ! {
    eprintln!(
        "usage: soak [--seises N (1..=5000, default 1000)] [--duration SECS (default 60)] \
         [--fault-every SECS (default 5)] [--seed N]"
    );
    std::process::exit(2)
}

fn parse_args() -> Args {
    let mut a = Args {
        seises: 1_000,
        duration: Duration::from_secs(60),
        fault_every: Duration::from_secs(5),
        seed: 1,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let Some(value) = it.next() else { usage() };
        let Ok(n) = value.parse::<u64>() else {
            eprintln!("soak: {flag}: not a number: {value:?}");
            usage()
        };
        match flag.as_str() {
            "--seises" if (1..=5_000).contains(&n) => a.seises = n as usize,
            "--duration" if n >= 1 => a.duration = Duration::from_secs(n),
            "--fault-every" if n >= 1 => a.fault_every = Duration::from_secs(n),
            "--seed" => a.seed = n,
            _ => {
                eprintln!("soak: bad flag or value: {flag} {value}");
                usage()
            }
        }
    }
    a
}

/// Sleeps without `thread::sleep`: a timed wait on a channel nobody sends on.
fn pause(d: Duration) {
    let (_tx, rx) = mpsc::channel::<()>();
    let _ = rx.recv_timeout(d);
}

fn unix_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

/// The resident set of this process, in KiB (Linux; 0 elsewhere).
fn rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|v| v.parse().ok())
        })
        .unwrap_or(0)
}

/// What one consumer saw, checked as it arrives (constant memory per seis, so that the
/// soak's own bookkeeping never looks like a leak).
#[derive(Default)]
struct Check {
    last: Option<Bar>,
    delivered: u64,
    duplicates: u64,
    gaps: u64,
    wrong: u64,
    in_outage: bool,
    disconnects: u64,
    other: Vec<String>,
}

/// xorshift64*: the fault schedule is a function of the seed.
fn next_rand(state: &mut u64) -> u64 {
    *state ^= *state >> 12;
    *state ^= *state << 25;
    *state ^= *state >> 27;
    state.wrapping_mul(0x2545_f491_4f6c_dd1d)
}

/// The faults drawn from, with a name for the report.
fn fault(i: u64) -> (&'static str, Option<FaultKind>) {
    match i % 12 {
        0 => ("close frame", Some(FaultKind::CloseClean)),
        1 => ("abrupt drop", Some(FaultKind::CloseAbrupt)),
        2 => ("stall", Some(FaultKind::Stall(None))),
        3 => (
            "delay 500 ms",
            Some(FaultKind::Delay(Duration::from_millis(500))),
        ),
        4 => ("malformed frame", Some(FaultKind::MalformedFrame)),
        5 => ("wrong length", Some(FaultKind::WrongLengthPrefix)),
        6 => ("absurd length", Some(FaultKind::AbsurdLength)),
        7 => ("non-JSON payload", Some(FaultKind::GarbageJson)),
        8 => ("unknown method", Some(FaultKind::UnknownMessage)),
        9 => (
            "restart 1 s",
            Some(FaultKind::Restart(Duration::from_secs(1))),
        ),
        10 => (
            "trickle",
            Some(FaultKind::Trickle(Duration::from_millis(300))),
        ),
        _ => ("429 on the upgrade", None),
    }
}

fn main() -> ExitCode {
    let args = parse_args();
    let started = Instant::now();
    let sim = match Sim::start(
        SimConfig::default()
            .with_seed(args.seed)
            .with_update_interval(Duration::from_secs(1)),
    ) {
        Ok(s) => Arc::new(s),
        Err(e) => {
            eprintln!("soak: the simulator did not start: {e}");
            return ExitCode::FAILURE;
        }
    };
    let stall = Duration::from_secs(3);
    let feed = match LiveFeed::builder().endpoint(sim.url()).and_then(|b| {
        b.stall_timeout(stall)
            .command_timeout(Duration::from_secs(60))
            .reconnect_backoff(Duration::from_millis(50), Duration::from_secs(1))
            .build()
    }) {
        Ok(f) => Arc::new(f),
        Err(e) => {
            eprintln!("soak: the feed did not start: {e}");
            return ExitCode::FAILURE;
        }
    };

    // Subscribe in parallel (each new_seis is a round trip).
    let n = args.seises;
    let seises: Vec<Arc<Seis>> = match std::thread::scope(|s| {
        let handles: Vec<_> = (0..4)
            .map(|k| {
                let feed = Arc::clone(&feed);
                s.spawn(move || {
                    (k..n)
                        .step_by(4)
                        .map(|i| {
                            feed.new_seis(format!("BINANCE:SOAK{i}"), "1S")
                                .map(|s| (i, s))
                        })
                        .collect::<Result<Vec<_>, _>>()
                })
            })
            .collect();
        let mut all = Vec::new();
        for h in handles {
            all.extend(h.join().expect("a subscriber thread panicked")?);
        }
        all.sort_by_key(|(i, _)| *i);
        Ok::<_, tvdatafeed::Error>(all.into_iter().map(|(_, s)| s).collect())
    }) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("soak: subscribing failed: {e}");
            return ExitCode::FAILURE;
        }
    };
    println!(
        "soak: {n} seises subscribed over one connection in {:.1?}; running {:?} with a fault every ~{:?}",
        started.elapsed(),
        args.duration,
        args.fault_every
    );

    // One callback consumer per seis, checking as bars arrive.
    let live_lat = Arc::new(Mutex::new(
        Histogram::<u64>::new_with_bounds(1, 3_600_000, 3).expect("valid bounds"),
    ));
    let gap_lat = Arc::new(Mutex::new(
        Histogram::<u64>::new_with_bounds(1, 3_600_000, 3).expect("valid bounds"),
    ));
    let checks: Vec<Arc<Mutex<Check>>> = (0..n).map(|_| Arc::default()).collect();
    for (seis, check) in seises.iter().zip(&checks) {
        let check = Arc::clone(check);
        let live_lat = Arc::clone(&live_lat);
        let gap_lat = Arc::clone(&gap_lat);
        let interval = seis.interval();
        let symbol = seis.symbol().clone();
        let truth = Arc::clone(&sim);
        let r = feed.new_consumer(seis, move |e| {
            let mut c = check.lock().unwrap_or_else(|e| e.into_inner());
            match e {
                LiveEvent::Closed(b) => {
                    let close_ms = interval.next_bar_open(b.time) * 1000;
                    let late = u64::try_from(unix_ms() - close_ms).unwrap_or(0).max(1);
                    let h = if c.in_outage { &gap_lat } else { &live_lat };
                    let _ = h.lock().unwrap_or_else(|e| e.into_inner()).record(late);
                    if let Some(last) = c.last {
                        if b.time <= last.time {
                            c.duplicates += 1;
                            return;
                        }
                        if interval.next_bar_open(last.time) != b.time {
                            c.gaps += 1;
                        }
                    }
                    if b != truth.expected_bar(&symbol, interval, b.time) {
                        c.wrong += 1;
                    }
                    c.delivered += 1;
                    c.last = Some(b);
                }
                LiveEvent::Disconnected { .. } => {
                    c.in_outage = true;
                    c.disconnects += 1;
                }
                LiveEvent::Reconnected { .. } => c.in_outage = false,
                LiveEvent::Update(_) => {}
                other => c.other.push(format!("{other:?}")),
            }
        });
        if let Err(e) = r {
            eprintln!("soak: a consumer did not start: {e}");
            return ExitCode::FAILURE;
        }
    }

    // The fault thread.
    let stop = Arc::new(AtomicBool::new(false));
    let faults = {
        let stop = Arc::clone(&stop);
        let sim = Arc::clone(&sim);
        let every = args.fault_every;
        let mut rng = args.seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
        std::thread::Builder::new()
            .name("soak-faults".into())
            .spawn(move || {
                let mut injected: Vec<&'static str> = Vec::new();
                loop {
                    // every/2 ..= 3*every/2
                    let ms = every.as_millis() as u64;
                    let wait = ms / 2 + next_rand(&mut rng) % (ms + 1);
                    let until = Instant::now() + Duration::from_millis(wait);
                    while Instant::now() < until {
                        if stop.load(Ordering::Relaxed) {
                            return injected;
                        }
                        pause(Duration::from_millis(50));
                    }
                    let (name, kind) = fault(next_rand(&mut rng));
                    match kind {
                        Some(k) => sim.inject(Fault::now(k)),
                        None => {
                            sim.reject_next_with_retry_after(429, 1, Duration::from_secs(1));
                            sim.inject(Fault::now(FaultKind::CloseAbrupt));
                        }
                    }
                    injected.push(name);
                }
            })
            .expect("spawn the fault thread")
    };

    // Memory over time.
    let rss_start = rss_kib();
    let mut rss_mid = 0;
    let mut rss_peak = rss_start;
    let half = args.duration / 2;
    while started.elapsed() < args.duration + Duration::from_secs(1) {
        pause(Duration::from_millis(500));
        let r = rss_kib();
        rss_peak = rss_peak.max(r);
        if rss_mid == 0 && started.elapsed() >= half {
            rss_mid = r;
        }
    }
    stop.store(true, Ordering::Relaxed);
    let injected = faults.join().unwrap_or_default();

    // Recovery: every seis closes a bar that opened after the last fault's effects.
    let settle_to = unix_ms() / 1000 + 3;
    let deadline = Instant::now() + Duration::from_secs(60);
    let recovered = loop {
        let done = checks.iter().all(|c| {
            c.lock()
                .unwrap_or_else(|e| e.into_inner())
                .last
                .is_some_and(|b| b.time >= settle_to)
        });
        if done {
            break true;
        }
        if Instant::now() > deadline {
            break false;
        }
        pause(Duration::from_millis(100));
    };
    let rss_end = rss_kib();
    let stats = feed.stats();

    // Totals. A gap is a bar missing between two delivered ones (the simulator's market has a
    // bar every second), so no gap, no duplicate and `recovered` mean every bar the simulator
    // closed reached every consumer, once, in order; `wrong` compares each with the truth.
    let mut delivered = 0u64;
    let mut duplicates = 0u64;
    let mut gaps = 0u64;
    let mut wrong = 0u64;
    let mut disconnects = 0u64;
    let mut other = Vec::new();
    for (seis, check) in seises.iter().zip(&checks) {
        let c = check.lock().unwrap_or_else(|e| e.into_inner());
        delivered += c.delivered;
        duplicates += c.duplicates;
        gaps += c.gaps;
        wrong += c.wrong;
        disconnects += c.disconnects;
        other.extend(c.other.iter().take(3).map(|o| format!("{seis}: {o}")));
    }
    // After the totals: shutting down sends every consumer its last event, `Failed(Shutdown)`.
    let report = feed.shutdown(Duration::from_secs(10));
    let quantiles = |h: &Mutex<Histogram<u64>>| {
        let h = h.lock().unwrap_or_else(|e| e.into_inner());
        format!(
            "n={} p50={} ms p99={} ms p99.9={} ms max={} ms",
            h.len(),
            h.value_at_quantile(0.5),
            h.value_at_quantile(0.99),
            h.value_at_quantile(0.999),
            h.max()
        )
    };
    // Growth: the second half may not add more than a quarter of the first half's footprint
    // plus 32 MiB (allocator noise); a leak grows linearly and fails this on a long run.
    let growth_ok = rss_end <= rss_mid + rss_mid / 4 + 32 * 1024;
    println!("seises:              {n}");
    println!("duration:            {:.1?}", started.elapsed());
    println!(
        "faults injected:     {} ({})",
        injected.len(),
        summarize(&injected)
    );
    println!("reconnects:          {}", stats.reconnects);
    println!("bad messages:        {}", stats.bad_messages);
    println!("bars delivered:      {delivered}");
    println!("duplicates:          {duplicates}");
    println!("gaps:                {gaps}");
    println!("wrong values:        {wrong}");
    println!("outages seen (sum):  {disconnects}");
    println!("recovered at end:    {recovered}");
    println!(
        "RSS KiB:             start {rss_start}, middle {rss_mid}, end {rss_end}, peak {rss_peak}{}",
        if growth_ok { "" } else { "  <- still growing" }
    );
    println!(
        "close -> callback:   live bars     {}",
        quantiles(&live_lat)
    );
    println!("                     gap-fill bars {}", quantiles(&gap_lat));
    println!(
        "shutdown:            {:?}, clean {}",
        report.elapsed,
        report.is_clean()
    );
    for o in other.iter().take(10) {
        println!("unexpected event:    {o}");
    }
    let ok = duplicates == 0
        && gaps == 0
        && wrong == 0
        && recovered
        && growth_ok
        && other.is_empty()
        && report.is_clean()
        && delivered > 0;
    if ok {
        println!("soak: OK");
        ExitCode::SUCCESS
    } else {
        println!("soak: FAILED");
        ExitCode::FAILURE
    }
}

/// "close frame x3, stall x2, ..." in first-seen order.
fn summarize(names: &[&str]) -> String {
    let mut seen: Vec<(&str, usize)> = Vec::new();
    for n in names {
        match seen.iter_mut().find(|(s, _)| s == n) {
            Some((_, c)) => *c += 1,
            None => seen.push((n, 1)),
        }
    }
    seen.iter()
        .map(|(s, c)| format!("{s} x{c}"))
        .collect::<Vec<_>>()
        .join(", ")
}
