//! Counters and latency histograms of the engine, its seises and its consumers, cheap enough
//! to leave on: counters are relaxed atomics bumped by their one writer; a consumer thread
//! keeps its latencies as raw samples in a fixed buffer ([`LocalStats`]) and records them into
//! the shared histograms under a mutex once per batch of 64 events (never across a callback),
//! so [`LiveFeed::stats`](super::LiveFeed) reads a consistent copy.
//!
//! Memory: two histograms per consumer, 2 significant digits from 1 ns to an hour, 32-bit
//! counts, about 18 KiB each, allocated at the consumer's first samples (3 digits would be
//! 135 KiB each, and merging one histogram into another walks every bucket).

use std::{sync::PoisonError, time::Duration};

use hdrhistogram::Histogram;

use super::{ConnectFailure, ConnectionStatus};

use crate::sync::plain::{
    Mutex,
    atomic::{AtomicBool, AtomicU64, Ordering},
};

/// Latencies recorded up to an hour, in nanoseconds, with 2 significant digits (1%: enough
/// to tell a p99 of 40 µs from 41 µs; longer ones saturate at the hour).
const MAX_NS: u64 = 3_600_000_000_000;

/// A histogram bucket's count: 32 bits, which halves a consumer's histograms (two of 18 KiB,
/// not 36 KiB, allocated at its first samples). A bucket saturates at 4.29 billion samples
/// (hdrhistogram adds saturating), far beyond any consumer's life at one bucket.
type Count = u32;

/// Samples a consumer keeps before recording them into its shared histograms.
pub(crate) const BATCH: usize = 64;

pub(crate) fn histogram() -> Histogram<Count> {
    Histogram::new_with_bounds(1, MAX_NS, 2).unwrap_or_else(|_| {
        // The bounds above are valid; this fallback only keeps the type total.
        Histogram::new(2).unwrap_or_else(|_| unreachable!("2 significant digits is valid"))
    })
}

/// A consumer thread's latencies not yet in the shared histograms: at most [`BATCH`] raw
/// samples of each kind, in fixed arrays (no allocation, no bucket walk).
#[derive(Debug)]
pub(crate) struct LocalStats {
    push: [u64; BATCH],
    close: [u64; BATCH],
    n_push: usize,
    n_close: usize,
}

impl Default for LocalStats {
    fn default() -> Self {
        Self {
            push: [0; BATCH],
            close: [0; BATCH],
            n_push: 0,
            n_close: 0,
        }
    }
}

impl LocalStats {
    /// Keeps one delivery's latencies (ring push to now; for a closed bar, also its close time
    /// to now), flushing into `counters` when the batch is full.
    pub(crate) fn record(
        &mut self,
        d: &super::Delivery,
        interval: crate::Interval,
        counters: &ConsumerCounters,
    ) {
        let waited = crate::clock::monotonic().saturating_duration_since(d.pushed_at);
        self.push[self.n_push] = u64::try_from(waited.as_nanos()).unwrap_or(u64::MAX).max(1);
        self.n_push += 1;
        if let super::LiveEvent::Closed(bar) = &d.event {
            let close_ms =
                u64::try_from(interval.next_bar_open(bar.time).saturating_mul(1000)).unwrap_or(0);
            let late_ms = crate::clock::unix_ms().saturating_sub(close_ms);
            self.close[self.n_close] = late_ms.saturating_mul(1_000_000).max(1);
            self.n_close += 1;
        }
        // `n_close <= n_push`: one full buffer flushes both.
        if self.n_push == BATCH {
            self.flush(counters);
        }
    }

    /// Records what is kept into `counters` (and counts it as delivered).
    pub(crate) fn flush(&mut self, counters: &ConsumerCounters) {
        if self.n_push == 0 {
            return;
        }
        counters.record_delivered(self.n_push as u64);
        counters.merge(&self.push[..self.n_push], &self.close[..self.n_close]);
        self.n_push = 0;
        self.n_close = 0;
    }
}

/// A summary of one latency histogram.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub struct Latency {
    /// Samples recorded.
    pub count: u64,
    /// Median.
    pub p50: Duration,
    /// 99th percentile.
    pub p99: Duration,
    /// 99.9th percentile.
    pub p999: Duration,
    /// Largest.
    pub max: Duration,
}

impl Latency {
    pub(crate) fn of(h: &Histogram<Count>) -> Self {
        if h.is_empty() {
            return Self::default();
        }
        Self {
            count: h.len(),
            p50: Duration::from_nanos(h.value_at_quantile(0.5)),
            p99: Duration::from_nanos(h.value_at_quantile(0.99)),
            p999: Duration::from_nanos(h.value_at_quantile(0.999)),
            max: Duration::from_nanos(h.max()),
        }
    }
}

/// A seis' counters (written by `tv-io` only).
#[derive(Debug, Default)]
pub(crate) struct SeisCounters {
    closed: AtomicU64,
    revised: AtomicU64,
    updates: AtomicU64,
}

// Relaxed everywhere below: counters publish no other memory; readers want a recent value.
impl SeisCounters {
    pub(crate) fn record_closed(&self) {
        self.closed.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn record_revised(&self) {
        self.revised.fetch_add(1, Ordering::Relaxed);
    }

    /// New values of the forming bar, from the stream (delivered to the consumers that want
    /// them).
    pub(crate) fn record_update(&self) {
        self.updates.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn updates(&self) -> u64 {
        self.updates.load(Ordering::Relaxed)
    }

    pub(crate) fn closed(&self) -> u64 {
        self.closed.load(Ordering::Relaxed)
    }

    pub(crate) fn revised(&self) -> u64 {
        self.revised.load(Ordering::Relaxed)
    }
}

/// A consumer's counters and histograms: `pushed`/`lagged` written by `tv-io`, the rest by
/// the consumer's own thread (or pull handle).
#[derive(Debug)]
pub(crate) struct ConsumerCounters {
    pushed: AtomicU64,
    lagged: AtomicU64,
    lost_closed: AtomicU64,
    delivered: AtomicU64,
    panicked: AtomicBool,
    /// Allocated at the first batch of samples: an idle consumer (a quiet seis) costs no
    /// histogram memory (two are about 37 KiB).
    push_to_callback: Mutex<Option<Histogram<Count>>>,
    close_to_callback: Mutex<Option<Histogram<Count>>>,
}

impl Default for ConsumerCounters {
    fn default() -> Self {
        Self {
            pushed: AtomicU64::new(0),
            lagged: AtomicU64::new(0),
            lost_closed: AtomicU64::new(0),
            delivered: AtomicU64::new(0),
            panicked: AtomicBool::new(false),
            push_to_callback: Mutex::new(None),
            close_to_callback: Mutex::new(None),
        }
    }
}

impl ConsumerCounters {
    pub(crate) fn record_pushed(&self) {
        self.pushed.fetch_add(1, Ordering::Relaxed);
    }

    /// An event dropped for this consumer, counted when it is dropped (not when the
    /// `Lagged` that reports it is read).
    pub(crate) fn record_lagged(&self, missed: u64) {
        self.lagged.fetch_add(missed, Ordering::Relaxed);
    }

    /// A closed bar this consumer will never receive (its backlog overflowed).
    pub(crate) fn record_lost_closed(&self, n: u64) {
        self.lost_closed.fetch_add(n, Ordering::Relaxed);
    }

    pub(crate) fn record_delivered(&self, n: u64) {
        self.delivered.fetch_add(n, Ordering::Relaxed);
    }

    pub(crate) fn record_panic(&self) {
        self.panicked.store(true, Ordering::Relaxed);
    }

    /// Records a batch of latency samples (nanoseconds) taken by the consumer thread.
    fn merge(&self, push: &[u64], close: &[u64]) {
        for (samples, h) in [
            (push, &self.push_to_callback),
            (close, &self.close_to_callback),
        ] {
            if samples.is_empty() {
                continue;
            }
            let mut h = h.lock().unwrap_or_else(PoisonError::into_inner);
            let h = h.get_or_insert_with(histogram);
            for &v in samples {
                h.saturating_record(v);
            }
        }
    }

    pub(crate) fn snapshot(&self) -> CounterSnapshot {
        CounterSnapshot {
            pushed: self.pushed.load(Ordering::Relaxed),
            delivered: self.delivered.load(Ordering::Relaxed),
            lagged: self.lagged.load(Ordering::Relaxed),
            lost_closed: self.lost_closed.load(Ordering::Relaxed),
            panicked: self.panicked.load(Ordering::Relaxed),
            // Summarised under the lock (a few quantile walks), not cloned: `stats()` on a
            // thousand consumers would otherwise copy 72 MB of buckets.
            push: summary(&self.push_to_callback),
            close: summary(&self.close_to_callback),
        }
    }
}

fn summary(h: &Mutex<Option<Histogram<Count>>>) -> Latency {
    h.lock()
        .unwrap_or_else(PoisonError::into_inner)
        .as_ref()
        .map_or_else(Latency::default, Latency::of)
}

/// One read of a consumer's counters.
pub(crate) struct CounterSnapshot {
    pub(crate) pushed: u64,
    pub(crate) delivered: u64,
    pub(crate) lagged: u64,
    pub(crate) lost_closed: u64,
    pub(crate) panicked: bool,
    pub(crate) push: Latency,
    pub(crate) close: Latency,
}

/// The engine's counters and gauges: written on `tv-io` where each event happens (the core
/// when the link goes up or down, an attempt fails, a message is bad or a fetch starts or
/// ends; the driver when it reads messages), read by any thread through
/// [`LiveFeed::stats`](super::LiveFeed::stats) and
/// [`LiveFeed::connection`](super::LiveFeed::connection). This is the one way the engine's
/// statistics are published, as a seis' counters ([`SeisCounters`]) and a consumer's
/// ([`ConsumerCounters`]) are: nothing is copied from one place to another afterwards.
///
/// Orderings: each field is an independent counter or gauge, so `Relaxed` (a reader sees each
/// one's latest value soon, never a torn one), except the failure pair: `last_failure` is
/// written under its lock before `failed_attempts` is bumped with `Release`, so a reader that
/// loads the count with `Acquire` finds a failure at least that new.
#[derive(Debug, Default)]
pub(crate) struct EngineCounters {
    connected: AtomicBool,
    reconnects: AtomicU64,
    bad_messages: AtomicU64,
    messages: AtomicU64,
    failed_attempts: AtomicU64,
    fetches_in_flight: AtomicU64,
    fetches: AtomicU64,
    races: AtomicU64,
    races_refused: AtomicU64,
    /// The last failed connection attempt (rare, never on the hot path; the lock is held for a
    /// clone only, never across I/O or a callback).
    last_failure: Mutex<Option<ConnectFailure>>,
}

impl EngineCounters {
    pub(crate) fn set_connected(&self, up: bool) {
        self.connected.store(up, Ordering::Relaxed);
    }

    pub(crate) fn record_reconnect(&self) {
        self.reconnects.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn record_bad_message(&self) {
        self.bad_messages.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn record_messages(&self, n: u64) {
        self.messages.fetch_add(n, Ordering::Relaxed);
    }

    pub(crate) fn set_fetches_in_flight(&self, n: usize) {
        self.fetches_in_flight.store(n as u64, Ordering::Relaxed);
    }

    pub(crate) fn record_fetch(&self) {
        self.fetches.fetch_add(1, Ordering::Relaxed);
    }

    /// A bar's close raced the stream (`true`), or the race budget refused it.
    pub(crate) fn record_race(&self, raced: bool) {
        if raced {
            &self.races
        } else {
            &self.races_refused
        }
        .fetch_add(1, Ordering::Relaxed);
    }

    /// (fetches asked, closes that raced, races the budget refused).
    pub(crate) fn fetch_counts(&self) -> (u64, u64, u64) {
        (
            self.fetches.load(Ordering::Relaxed),
            self.races.load(Ordering::Relaxed),
            self.races_refused.load(Ordering::Relaxed),
        )
    }

    /// A connection attempt failed: kept, then counted (see the type's orderings).
    pub(crate) fn record_failure(&self, failure: ConnectFailure) {
        *self
            .last_failure
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = Some(failure);
        // Release: a reader that sees this count (Acquire) finds the failure stored above.
        self.failed_attempts.fetch_add(1, Ordering::Release);
    }

    pub(crate) fn messages(&self) -> u64 {
        self.messages.load(Ordering::Relaxed)
    }

    pub(crate) fn bad_messages(&self) -> u64 {
        self.bad_messages.load(Ordering::Relaxed)
    }

    pub(crate) fn fetches_in_flight(&self) -> u64 {
        self.fetches_in_flight.load(Ordering::Relaxed)
    }

    /// The link's state as [`LiveFeed::connection`](super::LiveFeed::connection) reports it.
    pub(crate) fn connection(&self) -> ConnectionStatus {
        // Acquire: pairs with `record_failure`'s Release, so the failure read below is at
        // least as new as the count.
        let failed_attempts = self.failed_attempts.load(Ordering::Acquire);
        let last_failure = if failed_attempts == 0 {
            None
        } else {
            self.last_failure
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .clone()
        };
        ConnectionStatus {
            connected: self.connected.load(Ordering::Relaxed),
            reconnects: self.reconnects.load(Ordering::Relaxed),
            failed_attempts,
            last_failure,
        }
    }
}
