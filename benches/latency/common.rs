//! What every section shares: clocks, histograms, the simulator's configuration, subscribing
//! many seises, matching a consumer's events with the simulator's record of its writes, and the
//! CPU time of named threads.

use std::{
    collections::HashMap,
    fs,
    sync::Arc,
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};

use hdrhistogram::Histogram;
use tvdatafeed::{
    Bar, Interval, LiveFeed, Seis, Symbol,
    sim::{LiveSend, SimConfig},
};

/// The monotonic clock.
#[expect(clippy::disallowed_methods, reason = "a benchmark measures wall time")]
pub(crate) fn now() -> Instant {
    Instant::now()
}

/// Wall-clock nanoseconds since the Unix epoch.
pub(crate) fn unix_ns() -> i128 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i128::try_from(d.as_nanos()).unwrap_or(i128::MAX))
}

/// Sleeps `d` (a benchmark's own pacing; no library code waits like this).
pub(crate) fn pause(d: Duration) {
    let end = now() + d;
    // `park_timeout` may return early: wait again for what is left.
    while now() < end {
        std::thread::park_timeout(end.saturating_duration_since(now()));
    }
}

/// A latency histogram: 1 ns to an hour, 3 significant digits.
pub(crate) fn histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 3_600_000_000_000, 3).expect("valid histogram bounds")
}

/// Records `ns` (at least 1: the histogram's lowest value).
pub(crate) fn record(h: &mut Histogram<u64>, ns: i128) {
    h.saturating_record(u64::try_from(ns.max(1)).unwrap_or(u64::MAX));
}

/// A duration in the unit that reads best.
pub(crate) fn dur(ns: u64) -> String {
    match ns {
        0..=999 => format!("{ns} ns"),
        1_000..=9_999 => format!("{:.2} µs", ns as f64 / 1e3),
        10_000..=999_999 => format!("{:.1} µs", ns as f64 / 1e3),
        1_000_000..=999_999_999 => format!("{:.2} ms", ns as f64 / 1e6),
        _ => format!("{:.2} s", ns as f64 / 1e9),
    }
}

/// `p50 / p99 / p99.9 / max (count)` of a histogram, as table cells.
pub(crate) fn cells(h: &Histogram<u64>) -> String {
    if h.is_empty() {
        return "| - | - | - | - | 0 |".to_owned();
    }
    format!(
        "| {} | {} | {} | {} | {} |",
        dur(h.value_at_quantile(0.5)),
        dur(h.value_at_quantile(0.99)),
        dur(h.value_at_quantile(0.999)),
        dur(h.max()),
        h.len()
    )
}

/// The simulator for a latency run: live updates every `update`, each live write recorded,
/// heartbeats out of the way (a bare reader does not echo them).
pub(crate) fn sim_config(update: Duration) -> SimConfig {
    SimConfig::default()
        .with_update_interval(update)
        .with_record_send_times(4 << 20)
        .with_heartbeat_interval(Duration::from_secs(3_600))
        .with_heartbeat_timeout(Duration::from_secs(7_200))
}

/// The symbols of `n` seises.
pub(crate) fn symbols(n: usize) -> Vec<Symbol> {
    (0..n)
        .map(|i| format!("BINANCE:SYM{i}").parse().expect("valid symbol"))
        .collect()
}

/// Subscribes every symbol at `interval`, four callers at a time.
pub(crate) fn subscribe_all(
    feed: &LiveFeed,
    symbols: &[Symbol],
    interval: Interval,
) -> Vec<Arc<Seis>> {
    let chunk = symbols.len().div_ceil(4).max(1);
    std::thread::scope(|scope| {
        let handles: Vec<_> = symbols
            .chunks(chunk)
            .enumerate()
            .map(|(i, part)| {
                std::thread::Builder::new()
                    .name(format!("latency-subscribe-{i}"))
                    .spawn_scoped(scope, move || {
                        part.iter()
                            .map(|s| feed.new_seis(s, interval).expect("subscribe"))
                            .collect::<Vec<_>>()
                    })
                    .expect("spawn")
            })
            .collect();
        handles
            .into_iter()
            .flat_map(|h| h.join().expect("subscriber"))
            .collect()
    })
}

/// A bar's identity across the wire: its seis and every value, bit for bit.
pub(crate) type Key = (u32, i64, [u64; 5]);

pub(crate) fn key(seis: u32, b: &Bar) -> Key {
    (
        seis,
        b.time,
        [
            b.open.to_bits(),
            b.high.to_bits(),
            b.low.to_bits(),
            b.close.to_bits(),
            b.volume.map_or(u64::MAX, f64::to_bits),
        ],
    )
}

/// The first write of each bar value the simulator recorded, by key.
pub(crate) fn sends_by_key(
    sends: Vec<LiveSend>,
    index: &HashMap<Symbol, u32>,
) -> HashMap<Key, Instant> {
    let mut map = HashMap::with_capacity(sends.len());
    for s in sends {
        if let Some(&i) = index.get(&s.symbol) {
            // The first write of a value: the session reports a repeat of it as nothing.
            map.entry(key(i, &s.bar)).or_insert(s.at);
        }
    }
    map
}

/// What a consumer saw: which seis, the bar, and when (monotonic).
#[derive(Debug, Clone, Copy)]
pub(crate) struct Seen {
    pub(crate) seis: u32,
    pub(crate) bar: Bar,
    pub(crate) at: Instant,
}

/// Matches what consumers saw after `from` with the simulator's writes: the latency of every
/// event whose write was recorded. Returns the histogram and how many were not matched.
pub(crate) fn match_seen(
    seen: &[Seen],
    sends: &HashMap<Key, Instant>,
    from: Instant,
) -> (Histogram<u64>, u64) {
    let mut h = histogram();
    let mut unmatched = 0;
    for s in seen.iter().filter(|s| s.at >= from) {
        match sends.get(&key(s.seis, &s.bar)) {
            Some(sent) if *sent >= from => {
                record(
                    &mut h,
                    s.at.saturating_duration_since(*sent).as_nanos() as i128,
                );
            }
            Some(_) => {} // written before the window: part of the warm-up
            None => unmatched += 1,
        }
    }
    (h, unmatched)
}

/// CPU time (ns) each thread of this process has run so far, by thread id, with its name.
pub(crate) fn thread_cpu() -> HashMap<u64, (String, u64)> {
    let mut out = HashMap::new();
    let Ok(dir) = fs::read_dir("/proc/self/task") else {
        return out;
    };
    for e in dir.flatten() {
        let Some(tid) = e.file_name().to_str().and_then(|s| s.parse::<u64>().ok()) else {
            continue;
        };
        let path = e.path();
        let name = fs::read_to_string(path.join("comm")).unwrap_or_default();
        // schedstat: time on the CPU (ns), time waiting, timeslices.
        let ns = fs::read_to_string(path.join("schedstat"))
            .ok()
            .and_then(|s| s.split_whitespace().next().and_then(|n| n.parse().ok()))
            .unwrap_or(0);
        out.insert(tid, (name.trim().to_owned(), ns));
    }
    out
}

/// CPU time (ns) that threads whose name starts with one of `prefixes` used between two
/// snapshots (threads born in between count from zero).
pub(crate) fn cpu_between(
    before: &HashMap<u64, (String, u64)>,
    after: &HashMap<u64, (String, u64)>,
    prefixes: &[&str],
) -> u64 {
    after
        .iter()
        .filter(|(_, (name, _))| prefixes.iter().any(|p| name.starts_with(p)))
        .map(|(tid, (_, ns))| ns.saturating_sub(before.get(tid).map_or(0, |b| b.1)))
        .sum()
}

/// CPU time (ns) of the calling thread so far.
pub(crate) fn own_cpu() -> u64 {
    fs::read_to_string("/proc/thread-self/schedstat")
        .ok()
        .and_then(|s| s.split_whitespace().next().and_then(|n| n.parse().ok()))
        .unwrap_or(0)
}

/// The machine, for the report.
pub(crate) fn machine() -> String {
    let cpu = fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split(':').nth(1))
                .map(|m| m.trim().to_owned())
        })
        .unwrap_or_else(|| "unknown CPU".into());
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    format!("{cpu}, {cores} cores available")
}

/// The load average (1, 5, 15 min).
pub(crate) fn load() -> String {
    fs::read_to_string("/proc/loadavg")
        .ok()
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|| "unknown".into())
}
