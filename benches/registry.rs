//! Registry read latency (load + lookup + walk the consumers), ours against `RwLock<HashMap>`
//! and `Mutex<HashMap>`, idle and while a background writer churns subscriptions, in the same
//! run (the shape of arc-swap's `benches/background.rs`). After the criterion groups, an
//! hdrhistogram of single-read latency prints p50/p99/p99.9/max per table, idle and under
//! churn. Figures and commands: BENCHMARKS.md.
#![allow(
    clippy::disallowed_methods,
    clippy::disallowed_types,
    clippy::print_stderr,
    reason = "a benchmark: std locks are the rivals, the clock times reads, the report goes to stderr"
)]

use std::{
    collections::HashMap,
    hint::black_box,
    sync::{
        Arc, Mutex, RwLock,
        atomic::{AtomicBool, Ordering},
    },
    thread,
    time::{Duration, Instant},
};

use criterion::{Criterion, criterion_group, criterion_main};
use hdrhistogram::Histogram;
use tvdatafeed::internal::{ConsumerId, Registry};

/// Seises in the table (the engine's scale target).
const KEYS: u32 = 1_000;
/// Consumers per seis.
const CONSUMERS: u64 = 2;

/// A key → consumers table with one writer operation: swap one consumer of a key.
trait Table: Send + Sync + 'static {
    const NAME: &'static str;
    /// The writer thread's own bookkeeping.
    type Writer: Send + 'static;
    fn build() -> (Self, Self::Writer)
    where
        Self: Sized;
    /// Load, look `key` up, and walk its consumers (what the I/O thread does per message).
    fn read(&self, key: u32) -> u64;
    /// Remove the oldest consumer of `key` and add a new one.
    fn churn(&self, writer: &mut Self::Writer, key: u32, round: u64);
}

impl Table for Registry<u32, u32, u64> {
    const NAME: &'static str = "tvdatafeed_arcswap";
    type Writer = HashMap<u32, Vec<ConsumerId>>;
    fn build() -> (Self, Self::Writer) {
        let registry = Registry::new();
        let mut ids = HashMap::new();
        for key in 0..KEYS {
            registry.get_or_insert(key, || key);
            let list = (0..CONSUMERS)
                .map(|c| registry.insert_consumer(&key, c).expect("key exists"))
                .collect();
            ids.insert(key, list);
        }
        (registry, ids)
    }
    fn read(&self, key: u32) -> u64 {
        let snapshot = self.load();
        let entry = snapshot.get(&key).expect("key exists");
        entry.consumers().map(|(_, c)| *c).sum::<u64>() + u64::from(**entry.value())
    }
    fn churn(&self, writer: &mut Self::Writer, key: u32, round: u64) {
        let ids = writer.get_mut(&key).expect("key exists");
        ids.push(self.insert_consumer(&key, round).expect("key exists"));
        let oldest = ids.remove(0);
        drop(self.remove_consumer(oldest));
    }
}

/// The rivals' entry: the same content as ours, mutated in place under the lock.
struct LockedEntry {
    value: Arc<u32>,
    consumers: Vec<(u64, Arc<u64>)>,
}

fn locked_map() -> HashMap<u32, LockedEntry> {
    (0..KEYS)
        .map(|key| {
            let consumers = (0..CONSUMERS).map(|c| (c, Arc::new(c))).collect();
            let entry = LockedEntry {
                value: Arc::new(key),
                consumers,
            };
            (key, entry)
        })
        .collect()
}

fn read_locked(map: &HashMap<u32, LockedEntry>, key: u32) -> u64 {
    let entry = map.get(&key).expect("key exists");
    entry.consumers.iter().map(|(_, c)| **c).sum::<u64>() + u64::from(*entry.value)
}

fn churn_locked(map: &mut HashMap<u32, LockedEntry>, key: u32, round: u64) {
    let entry = map.get_mut(&key).expect("key exists");
    entry.consumers.push((round, Arc::new(round)));
    entry.consumers.remove(0);
}

impl Table for RwLock<HashMap<u32, LockedEntry>> {
    const NAME: &'static str = "rwlock_hashmap";
    type Writer = ();
    fn build() -> (Self, Self::Writer) {
        (RwLock::new(locked_map()), ())
    }
    fn read(&self, key: u32) -> u64 {
        read_locked(&self.read().expect("not poisoned"), key)
    }
    fn churn(&self, _: &mut (), key: u32, round: u64) {
        churn_locked(&mut self.write().expect("not poisoned"), key, round);
    }
}

impl Table for Mutex<HashMap<u32, LockedEntry>> {
    const NAME: &'static str = "mutex_hashmap";
    type Writer = ();
    fn build() -> (Self, Self::Writer) {
        (Mutex::new(locked_map()), ())
    }
    fn read(&self, key: u32) -> u64 {
        read_locked(&self.lock().expect("not poisoned"), key)
    }
    fn churn(&self, _: &mut (), key: u32, round: u64) {
        churn_locked(&mut self.lock().expect("not poisoned"), key, round);
    }
}

/// A writer thread churning subscriptions until dropped: as fast as it can, or one operation
/// per `pace` (a rate still far above real subscription traffic).
struct Churn {
    stop: Arc<AtomicBool>,
    handle: Option<thread::JoinHandle<u64>>,
}

impl Churn {
    fn start<T: Table>(table: &Arc<T>, writer: T::Writer) -> Self {
        Self::paced(table, writer, None)
    }

    fn paced<T: Table>(table: &Arc<T>, writer: T::Writer, pace: Option<Duration>) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let handle = {
            let table = Arc::clone(table);
            let stop = Arc::clone(&stop);
            thread::Builder::new()
                .name("tv-bench-writer".into())
                .spawn(move || {
                    let mut writer = writer;
                    let mut round = 0_u64;
                    // Relaxed: a stop flag; the join publishes the count.
                    while !stop.load(Ordering::Relaxed) {
                        let key = u32::try_from(round % u64::from(KEYS)).expect("fits");
                        table.churn(&mut writer, key, round);
                        round += 1;
                        if let Some(pace) = pace {
                            // Woken early by `finish`/`drop` through `unpark`.
                            thread::park_timeout(pace);
                        }
                    }
                    round
                })
                .expect("spawn writer")
        };
        Self {
            stop,
            handle: Some(handle),
        }
    }

    /// Stops the writer and returns how many churn operations it made.
    fn finish(mut self) -> u64 {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(h) = &self.handle {
            h.thread().unpark();
        }
        self.handle
            .take()
            .map_or(0, |h| h.join().expect("writer panicked"))
    }
}

impl Drop for Churn {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(h) = self.handle.take() {
            h.thread().unpark();
            let _ = h.join();
        }
    }
}

/// Criterion: mean read cost, idle and under churn, for table `T`.
fn criterion_reads<T: Table>(c: &mut Criterion) {
    let mut group = c.benchmark_group("registry_read");
    let (table, writer) = T::build();
    let table = Arc::new(table);
    let mut key = 0_u32;
    group.bench_function(format!("{}/idle", T::NAME), |b| {
        b.iter(|| {
            key = (key + 7) % KEYS;
            black_box(table.read(black_box(key)))
        });
    });
    let churn = Churn::start(&table, writer);
    group.bench_function(format!("{}/churn", T::NAME), |b| {
        b.iter(|| {
            key = (key + 7) % KEYS;
            black_box(table.read(black_box(key)))
        });
    });
    drop(churn);
    group.finish();
}

/// hdrhistogram of single-read latency (ns), each read timed alone.
fn histogram<T: Table>(table: &T, reads: u64) -> Histogram<u64> {
    let mut hist = Histogram::<u64>::new_with_bounds(1, 1_000_000_000, 3).expect("valid bounds");
    let mut key = 0_u32;
    for _ in 0..reads {
        key = (key + 7) % KEYS;
        let start = Instant::now();
        black_box(table.read(black_box(key)));
        let ns = u64::try_from(start.elapsed().as_nanos()).unwrap_or(u64::MAX);
        hist.saturating_record(ns);
    }
    hist
}

fn report_row(name: &str, mode: &str, hist: &Histogram<u64>, churn_ops: Option<u64>) {
    eprintln!(
        "{name:<22} {mode:<6} p50 {:>7} ns  p99 {:>7} ns  p99.9 {:>8} ns  max {:>9} ns{}",
        hist.value_at_quantile(0.5),
        hist.value_at_quantile(0.99),
        hist.value_at_quantile(0.999),
        hist.max(),
        churn_ops.map_or(String::new(), |n| format!("  (writer: {n} churn ops)")),
    );
}

fn report_table<T: Table>(reads: u64) {
    let (table, writer) = T::build();
    let table = Arc::new(table);
    report_row(T::NAME, "idle", &histogram(&*table, reads), None);
    let churn = Churn::paced(&table, writer, Some(Duration::from_millis(1)));
    let hist = histogram(&*table, reads);
    report_row(T::NAME, "paced", &hist, Some(churn.finish()));
    let (table, writer) = T::build();
    let table = Arc::new(table);
    let churn = Churn::start(&table, writer);
    let hist = histogram(&*table, reads);
    let ops = churn.finish();
    report_row(T::NAME, "churn", &hist, Some(ops));
}

fn benches(c: &mut Criterion) {
    criterion_reads::<Registry<u32, u32, u64>>(c);
    criterion_reads::<RwLock<HashMap<u32, LockedEntry>>>(c);
    criterion_reads::<Mutex<HashMap<u32, LockedEntry>>>(c);

    // `cargo bench` passes `--bench`; `cargo test --benches` does not (one quick pass).
    let reads = if std::env::args().any(|a| a == "--bench") {
        2_000_000
    } else {
        10_000
    };
    let clock = {
        let mut hist = Histogram::<u64>::new_with_bounds(1, 1_000_000_000, 3).expect("valid");
        for _ in 0..reads {
            let start = Instant::now();
            hist.saturating_record(u64::try_from(start.elapsed().as_nanos()).unwrap_or(0));
        }
        hist
    };
    eprintln!(
        "\nregistry single-read latency, {reads} reads per row, {KEYS} keys x {CONSUMERS} consumers:"
    );
    report_row("(clock overhead)", "", &clock, None);
    report_table::<Registry<u32, u32, u64>>(reads);
    report_table::<RwLock<HashMap<u32, LockedEntry>>>(reads);
    report_table::<Mutex<HashMap<u32, LockedEntry>>>(reads);
}

criterion_group!(registry_benches, benches);
criterion_main!(registry_benches);
