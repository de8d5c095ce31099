//! SPSC ring: cross-thread throughput and ping-pong latency, ours against `rtrb`,
//! `crossbeam_queue::ArrayQueue` and `std::sync::mpsc::sync_channel`, in the same run.
//!
//! Every queue runs the same generic body (`throughput::<Q>`, `ping_pong::<Q>`); the
//! `rivals!` macro registers each body for each queue, as rtrb's `performance-comparison` does.
//! Figures and commands: BENCHMARKS.md.
#![allow(
    clippy::disallowed_methods,
    clippy::disallowed_types,
    reason = "a benchmark: std threads, Arc and the clock measure the rivals on equal terms"
)]

use std::{
    hint::{black_box, spin_loop},
    sync::{Arc, mpsc},
    thread,
    time::{Duration, Instant},
};

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use tvdatafeed::ring::{self, WaitStrategy};

const CAPACITY: usize = 4096;

/// One SPSC queue, driven by non-blocking push and pop (busy-waiting on both sides, so every
/// rival is measured on its data path, not on its blocking machinery).
trait Spsc {
    const NAME: &'static str;
    type Producer: Send + 'static;
    type Consumer: Send + 'static;
    fn new(capacity: usize) -> (Self::Producer, Self::Consumer);
    fn push(p: &mut Self::Producer, v: u64) -> bool;
    fn pop(c: &mut Self::Consumer) -> Option<u64>;
}

/// Ours with `WaitStrategy::Spin`: pushes skip the wake-up fence.
struct Ours;
impl Spsc for Ours {
    const NAME: &'static str = "tvdatafeed_spin";
    type Producer = ring::Producer<u64>;
    type Consumer = ring::Consumer<u64>;
    fn new(capacity: usize) -> (Self::Producer, Self::Consumer) {
        ring::with_strategy(capacity, WaitStrategy::Spin).expect("valid capacity")
    }
    fn push(p: &mut Self::Producer, v: u64) -> bool {
        p.push(v).is_ok()
    }
    fn pop(c: &mut Self::Consumer) -> Option<u64> {
        c.pop().ok()
    }
}

/// Ours with the default (parking) strategy: every push pays `fence(SeqCst)` + a flag load.
struct OursParking;
impl Spsc for OursParking {
    const NAME: &'static str = "tvdatafeed_park";
    type Producer = ring::Producer<u64>;
    type Consumer = ring::Consumer<u64>;
    fn new(capacity: usize) -> (Self::Producer, Self::Consumer) {
        ring::channel(capacity)
    }
    fn push(p: &mut Self::Producer, v: u64) -> bool {
        p.push(v).is_ok()
    }
    fn pop(c: &mut Self::Consumer) -> Option<u64> {
        c.pop().ok()
    }
}

struct Rtrb;
impl Spsc for Rtrb {
    const NAME: &'static str = "rtrb";
    type Producer = rtrb::Producer<u64>;
    type Consumer = rtrb::Consumer<u64>;
    fn new(capacity: usize) -> (Self::Producer, Self::Consumer) {
        rtrb::RingBuffer::new(capacity)
    }
    fn push(p: &mut Self::Producer, v: u64) -> bool {
        p.push(v).is_ok()
    }
    fn pop(c: &mut Self::Consumer) -> Option<u64> {
        c.pop().ok()
    }
}

struct ArrayQueue;
impl Spsc for ArrayQueue {
    const NAME: &'static str = "crossbeam_array_queue";
    type Producer = Arc<crossbeam_queue::ArrayQueue<u64>>;
    type Consumer = Arc<crossbeam_queue::ArrayQueue<u64>>;
    fn new(capacity: usize) -> (Self::Producer, Self::Consumer) {
        let q = Arc::new(crossbeam_queue::ArrayQueue::new(capacity));
        (Arc::clone(&q), q)
    }
    fn push(p: &mut Self::Producer, v: u64) -> bool {
        p.push(v).is_ok()
    }
    fn pop(c: &mut Self::Consumer) -> Option<u64> {
        c.pop()
    }
}

struct StdSyncChannel;
impl Spsc for StdSyncChannel {
    const NAME: &'static str = "std_sync_channel";
    type Producer = mpsc::SyncSender<u64>;
    type Consumer = mpsc::Receiver<u64>;
    fn new(capacity: usize) -> (Self::Producer, Self::Consumer) {
        mpsc::sync_channel(capacity)
    }
    fn push(p: &mut Self::Producer, v: u64) -> bool {
        p.try_send(v).is_ok()
    }
    fn pop(c: &mut Self::Consumer) -> Option<u64> {
        c.try_recv().ok()
    }
}

fn spawn<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> thread::JoinHandle<T> {
    thread::Builder::new()
        .name("tv-bench-peer".into())
        .spawn(f)
        .expect("spawn bench thread")
}

fn push_spin<Q: Spsc>(p: &mut Q::Producer, v: u64) {
    while !Q::push(p, v) {
        spin_loop();
    }
}

fn pop_spin<Q: Spsc>(c: &mut Q::Consumer) -> u64 {
    loop {
        if let Some(v) = Q::pop(c) {
            return v;
        }
        spin_loop();
    }
}

/// `iters` items from this thread to a consumer thread; time until the consumer has them all.
fn throughput<Q: Spsc>(iters: u64) -> Duration {
    let (mut producer, mut consumer) = Q::new(CAPACITY);
    let peer = spawn(move || {
        let mut sum = 0_u64;
        for _ in 0..iters {
            sum = sum.wrapping_add(pop_spin::<Q>(&mut consumer));
        }
        black_box(sum)
    });
    let start = Instant::now();
    for i in 0..iters {
        push_spin::<Q>(&mut producer, i);
    }
    let sum = peer.join().expect("consumer panicked");
    let elapsed = start.elapsed();
    assert_eq!(sum, (0..iters).fold(0_u64, u64::wrapping_add));
    elapsed
}

/// Ours with the default (parking) strategy, pushing through `push_iter` in batches of 16: one
/// fence per batch instead of one per item.
fn throughput_park_batched(iters: u64) -> Duration {
    let (mut producer, mut consumer) = ring::channel::<u64>(CAPACITY);
    let peer = spawn(move || {
        let mut sum = 0_u64;
        for _ in 0..iters {
            sum = sum.wrapping_add(pop_spin::<OursParking>(&mut consumer));
        }
        black_box(sum)
    });
    let start = Instant::now();
    let mut items = 0..iters;
    while !items.is_empty() {
        let mut batch = items.by_ref().take(16).peekable();
        while batch.peek().is_some() {
            if producer.push_iter(&mut batch) == 0 {
                spin_loop();
            }
        }
    }
    let sum = peer.join().expect("consumer panicked");
    let elapsed = start.elapsed();
    assert_eq!(sum, (0..iters).fold(0_u64, u64::wrapping_add));
    elapsed
}

/// `iters` round trips through two rings and an echo thread; returns RTT/2 per iteration.
fn ping_pong<Q: Spsc>(iters: u64) -> Duration {
    let (mut ping_tx, mut ping_rx) = Q::new(CAPACITY);
    let (mut pong_tx, mut pong_rx) = Q::new(CAPACITY);
    let echo = spawn(move || {
        for _ in 0..iters {
            let v = pop_spin::<Q>(&mut ping_rx);
            push_spin::<Q>(&mut pong_tx, v);
        }
    });
    let start = Instant::now();
    for i in 0..iters {
        push_spin::<Q>(&mut ping_tx, i);
        assert_eq!(pop_spin::<Q>(&mut pong_rx), i);
    }
    let elapsed = start.elapsed();
    echo.join().expect("echo panicked");
    elapsed / 2
}

/// Registers one generic body for every rival, in the same group and run.
macro_rules! rivals {
    ($group:expr, $body:ident, [$($queue:ty),+ $(,)?]) => {
        $(
            $group.bench_function(<$queue as Spsc>::NAME, |b| b.iter_custom($body::<$queue>));
        )+
    };
}

fn benches(c: &mut Criterion) {
    let mut group = c.benchmark_group("ring_throughput");
    group.throughput(Throughput::Elements(1));
    rivals!(
        group,
        throughput,
        [Ours, OursParking, Rtrb, ArrayQueue, StdSyncChannel]
    );
    group.bench_function("tvdatafeed_park_batch16", |b| {
        b.iter_custom(throughput_park_batched)
    });
    group.finish();

    let mut group = c.benchmark_group("ring_ping_pong_one_way");
    rivals!(
        group,
        ping_pong,
        [Ours, OursParking, Rtrb, ArrayQueue, StdSyncChannel]
    );
    group.finish();
}

criterion_group!(ring_benches, benches);
criterion_main!(ring_benches);
