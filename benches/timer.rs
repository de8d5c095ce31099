//! Timer wheel against `BinaryHeap`: insert a batch of timers, then advance through all of
//! them; and insert-then-cancel (the common fate of a timeout). Same inputs, same run.
//! Figures and commands: BENCHMARKS.md.

use std::{
    cmp::Reverse,
    collections::{BinaryHeap, HashSet},
    hint::black_box,
};

use criterion::{BatchSize, Criterion, Throughput, criterion_group, criterion_main};
use tvdatafeed::internal::TimerWheel;

const TIMERS: usize = 10_000;
const START: u64 = 1_700_000_000_000;

/// Deterministic deadlines over 1 ms .. ~1 h, like the engine's mix of timeouts and bar ends.
fn deadlines() -> Vec<u64> {
    let mut x = 0x9E37_79B9_7F4A_7C15_u64;
    (0..TIMERS)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            START + 1 + x % 3_600_000
        })
        .collect()
}

/// Advances in 1 ms steps through a 1 s window, then in 1 s steps to the end, as a poll loop
/// would; returns how many fired.
fn steps() -> impl Iterator<Item = u64> {
    (1..=1_000)
        .map(|ms| START + ms)
        .chain((2..=3_601).map(|s| START + s * 1_000))
}

fn benches(c: &mut Criterion) {
    let deadlines = deadlines();
    let elements = u64::try_from(TIMERS).expect("fits");

    let mut group = c.benchmark_group("timer_insert_then_fire_all");
    group.throughput(Throughput::Elements(elements));
    group.bench_function("wheel", |b| {
        b.iter(|| {
            let mut wheel = TimerWheel::new(START);
            for (i, &when) in deadlines.iter().enumerate() {
                wheel.insert(when, i);
            }
            let mut fired = 0;
            for now in steps() {
                fired += wheel.advance(now).count();
            }
            assert_eq!(fired, TIMERS);
            black_box(fired)
        });
    });
    group.bench_function("binary_heap", |b| {
        b.iter(|| {
            let mut heap = BinaryHeap::with_capacity(TIMERS);
            for (i, &when) in deadlines.iter().enumerate() {
                heap.push(Reverse((when, i)));
            }
            let mut fired = 0;
            for now in steps() {
                while heap.peek().is_some_and(|Reverse((when, _))| *when <= now) {
                    black_box(heap.pop());
                    fired += 1;
                }
            }
            assert_eq!(fired, TIMERS);
            black_box(fired)
        });
    });
    group.finish();

    // The heap cannot remove an arbitrary entry: it cancels lazily (a tombstone set checked on
    // pop), the usual workaround.
    let mut group = c.benchmark_group("timer_insert_then_cancel_all");
    group.throughput(Throughput::Elements(elements));
    group.bench_function("wheel", |b| {
        b.iter_batched_ref(
            || TimerWheel::new(START),
            |wheel| {
                let keys: Vec<_> = deadlines
                    .iter()
                    .map(|&when| wheel.insert(when, ()))
                    .collect();
                for key in keys {
                    black_box(wheel.cancel(key));
                }
                assert!(wheel.is_empty());
            },
            BatchSize::SmallInput,
        );
    });
    group.bench_function("binary_heap", |b| {
        b.iter(|| {
            let mut heap = BinaryHeap::with_capacity(TIMERS);
            let mut cancelled = HashSet::with_capacity(TIMERS);
            for (i, &when) in deadlines.iter().enumerate() {
                heap.push(Reverse((when, i)));
            }
            for i in 0..TIMERS {
                cancelled.insert(i);
            }
            // The tombstones are only reclaimed when the deadlines pass.
            while let Some(Reverse((_, i))) = heap.pop() {
                black_box(cancelled.remove(&i));
            }
            black_box(heap.len())
        });
    });
    group.finish();
}

criterion_group!(timer_benches, benches);
criterion_main!(timer_benches);
