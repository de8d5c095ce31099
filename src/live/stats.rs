//! Counters and latency histograms of the engine, its seises and its consumers, cheap enough
//! to leave on: counters are relaxed atomics bumped by their one writer; a consumer thread
//! records latencies in its own histogram and merges it into the shared one under a mutex once
//! per batch of events (never across a callback), so [`LiveFeed::stats`](super::LiveFeed)
//! reads a consistent copy.

use std::{sync::PoisonError, time::Duration};

use hdrhistogram::Histogram;

use crate::sync::plain::{
    Mutex,
    atomic::{AtomicBool, AtomicU64, Ordering},
};

/// Latencies recorded up to an hour, in nanoseconds, with 3 significant digits.
const MAX_NS: u64 = 3_600_000_000_000;

pub(crate) fn histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, MAX_NS, 3).unwrap_or_else(|_| {
        // The bounds above are valid; this fallback only keeps the type total.
        Histogram::new(3).unwrap_or_else(|_| unreachable!("3 significant digits is valid"))
    })
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
    pub(crate) fn of(h: &Histogram<u64>) -> Self {
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
}

// Relaxed everywhere below: counters publish no other memory; readers want a recent value.
impl SeisCounters {
    pub(crate) fn record_closed(&self) {
        self.closed.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn record_revised(&self) {
        self.revised.fetch_add(1, Ordering::Relaxed);
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
    delivered: AtomicU64,
    panicked: AtomicBool,
    push_to_callback: Mutex<Histogram<u64>>,
    close_to_callback: Mutex<Histogram<u64>>,
}

impl Default for ConsumerCounters {
    fn default() -> Self {
        Self {
            pushed: AtomicU64::new(0),
            lagged: AtomicU64::new(0),
            delivered: AtomicU64::new(0),
            panicked: AtomicBool::new(false),
            push_to_callback: Mutex::new(histogram()),
            close_to_callback: Mutex::new(histogram()),
        }
    }
}

impl ConsumerCounters {
    pub(crate) fn record_pushed(&self) {
        self.pushed.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn unrecord_pushed(&self) {
        self.pushed.fetch_sub(1, Ordering::Relaxed);
    }

    pub(crate) fn record_lagged(&self, missed: u64) {
        self.lagged.fetch_add(missed, Ordering::Relaxed);
    }

    pub(crate) fn unrecord_lagged(&self, missed: u64) {
        self.lagged.fetch_sub(missed, Ordering::Relaxed);
    }

    pub(crate) fn record_delivered(&self, n: u64) {
        self.delivered.fetch_add(n, Ordering::Relaxed);
    }

    pub(crate) fn record_panic(&self) {
        self.panicked.store(true, Ordering::Relaxed);
    }

    /// Merges a batch of latencies recorded by the consumer thread.
    pub(crate) fn merge(&self, push: &mut Histogram<u64>, close: &mut Histogram<u64>) {
        if !push.is_empty() {
            let _ = self
                .push_to_callback
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .add(&*push);
            push.reset();
        }
        if !close.is_empty() {
            let _ = self
                .close_to_callback
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .add(&*close);
            close.reset();
        }
    }

    pub(crate) fn snapshot(&self) -> (u64, u64, u64, bool, Histogram<u64>, Histogram<u64>) {
        (
            self.pushed.load(Ordering::Relaxed),
            self.delivered.load(Ordering::Relaxed),
            self.lagged.load(Ordering::Relaxed),
            self.panicked.load(Ordering::Relaxed),
            self.push_to_callback
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .clone(),
            self.close_to_callback
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .clone(),
        )
    }
}

/// The engine's counters (written by `tv-io`).
#[derive(Debug, Default)]
pub(crate) struct EngineCounters {
    pub(crate) connected: AtomicBool,
    pub(crate) reconnects: AtomicU64,
    pub(crate) bad_messages: AtomicU64,
    pub(crate) messages: AtomicU64,
}
