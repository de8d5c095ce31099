//! Multi-threaded stress tests of `tvdatafeed::ring`: order, count, drops and wake-ups.
//!
//! Sized to stay within seconds in a debug build (like rtrb's `COUNT` under Miri); release
//! builds push five times more. loom (`loom-tests/tests/ring.rs`) carries the exhaustive proof;
//! these runs exercise the real `std` atomics, `park`/`unpark` and timing.
#![allow(
    clippy::disallowed_types,
    reason = "tests count drops with std atomics shared through a std Arc"
)]

use std::{
    sync::{
        Arc, Mutex, MutexGuard, PoisonError,
        atomic::{AtomicUsize, Ordering},
        mpsc,
    },
    thread::{self, JoinHandle},
    time::Duration,
};

mod util;

use tvdatafeed::ring::{self, CapacityError, PopError, PopTimeoutError, PushError, WaitStrategy};

const COUNT: u64 = if cfg!(debug_assertions) {
    200_000
} else {
    1_000_000
};

/// Long enough never to fire on a healthy run: a wait that times out is a failure.
const PATIENCE: Duration = Duration::from_secs(30);

/// How soon a wake-up must end a parked wait in the wake-up tests: far below [`PATIENCE`], so a
/// lost wake-up (which still ends the wait, when the patience runs out, with the item) fails
/// instead of only being slow. Generous for a loaded 2-core machine, where a wake-up takes
/// microseconds to milliseconds.
const WAKE_WITHIN: Duration = Duration::from_secs(5);

/// The tests below spin on both cores; run in parallel they starve each other's threads of
/// time slices (seconds of scheduler waits on a 2-core machine), so each takes this lock.
static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());

fn one_at_a_time() -> MutexGuard<'static, ()> {
    ONE_AT_A_TIME.lock().unwrap_or_else(PoisonError::into_inner)
}

const STRATEGIES: [WaitStrategy; 4] = [
    WaitStrategy::Spin,
    WaitStrategy::SpinYield { spins: 64 },
    WaitStrategy::SpinYieldPark {
        spins: 128,
        yields: 16,
    },
    // Parks at the first empty ring: the most wake-ups, where a lost one would show.
    WaitStrategy::SpinYieldPark {
        spins: 0,
        yields: 0,
    },
];

fn spawn<T: Send + 'static>(name: &str, f: impl FnOnce() -> T + Send + 'static) -> JoinHandle<T> {
    thread::Builder::new()
        .name(name.into())
        .spawn(f)
        .expect("spawn test thread")
}

/// Pushes `0..count`, retrying (with a yield) while the ring is full.
fn produce(mut producer: ring::Producer<u64>, count: u64) {
    for i in 0..count {
        let mut value = i;
        loop {
            match producer.push(value) {
                Ok(()) => break,
                Err(full) => {
                    value = full.into_inner();
                    thread::yield_now();
                }
            }
        }
    }
}

fn strategy_count(strategy: WaitStrategy) -> u64 {
    match strategy {
        // Every empty ring costs a park/unpark pair here: fewer items keep the run short.
        WaitStrategy::SpinYieldPark { spins: 0, .. } => COUNT / 4,
        _ => COUNT,
    }
}

#[test]
fn pop_timeout_sees_every_item_once_in_order_with_every_strategy() {
    let _serial = one_at_a_time();
    for capacity in [2, 64] {
        for strategy in STRATEGIES {
            // A capacity-2 ring hands over nearly every item alone: the slowest regime.
            let count = strategy_count(strategy) / if capacity == 2 { 4 } else { 1 };
            let (producer, mut consumer) =
                ring::with_strategy(capacity, strategy).expect("valid capacity");
            let producer = spawn("tv-test-producer", move || produce(producer, count));
            let consumer = spawn("tv-test-consumer", move || {
                let mut expected = 0;
                loop {
                    match consumer.pop_timeout(PATIENCE) {
                        Ok(v) => {
                            assert_eq!(v, expected, "{strategy:?}, capacity {capacity}");
                            expected += 1;
                        }
                        Err(PopTimeoutError::Abandoned) => break expected,
                        Err(e) => panic!("{strategy:?}, capacity {capacity}: {e}"),
                    }
                }
            });
            producer.join().expect("producer panicked");
            let seen = consumer.join().expect("consumer panicked");
            assert_eq!(seen, count, "{strategy:?}, capacity {capacity}");
        }
    }
}

#[test]
fn pop_batch_sees_every_item_once_in_order() {
    let _serial = one_at_a_time();
    for strategy in STRATEGIES {
        let count = strategy_count(strategy);
        let (producer, mut consumer) = ring::with_strategy(64, strategy).expect("valid capacity");
        let producer = spawn("tv-test-producer", move || produce(producer, count));
        let consumer = spawn("tv-test-consumer", move || {
            let mut expected = 0;
            loop {
                // Block for the first item, then drain the burst in one batch.
                match consumer.pop_timeout(PATIENCE) {
                    Ok(v) => {
                        assert_eq!(v, expected);
                        expected += 1;
                    }
                    Err(PopTimeoutError::Abandoned) => break expected,
                    Err(e) => panic!("{strategy:?}: {e}"),
                }
                consumer.pop_batch(usize::MAX, |v| {
                    assert_eq!(v, expected);
                    expected += 1;
                });
            }
        });
        producer.join().expect("producer panicked");
        assert_eq!(consumer.join().expect("consumer panicked"), count);
    }
}

/// Counts its drops.
struct Tracked(Arc<AtomicUsize>);

impl Drop for Tracked {
    fn drop(&mut self) {
        self.0.fetch_add(1, Ordering::Relaxed);
    }
}

#[test]
fn dropping_both_halves_drops_each_remaining_item_exactly_once() {
    let _serial = one_at_a_time();
    for producer_first in [true, false] {
        // Start at several offsets so the remaining items wrap around the buffer's end.
        for offset in 0..8 {
            let drops = Arc::new(AtomicUsize::new(0));
            let (mut producer, mut consumer) = ring::channel(8);
            for _ in 0..offset {
                producer
                    .push(Tracked(Arc::clone(&drops)))
                    .expect("room in ring");
                drop(consumer.pop().expect("just pushed"));
            }
            for _ in 0..7 {
                producer
                    .push(Tracked(Arc::clone(&drops)))
                    .expect("room in ring");
            }
            drop(consumer.pop().expect("just pushed"));
            drop(consumer.pop().expect("just pushed"));
            assert_eq!(drops.load(Ordering::Relaxed), offset + 2);
            if producer_first {
                drop(producer);
                drop(consumer);
            } else {
                drop(consumer);
                drop(producer);
            }
            assert_eq!(drops.load(Ordering::Relaxed), offset + 7);
        }
    }
}

#[test]
fn pop_batch_panic_keeps_unread_items_and_drops_the_rest_once() {
    let _serial = one_at_a_time();
    let drops = Arc::new(AtomicUsize::new(0));
    let (mut producer, mut consumer) = ring::channel(8);
    for _ in 0..6 {
        producer
            .push(Tracked(Arc::clone(&drops)))
            .expect("room in ring");
    }
    let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        let mut seen = 0;
        consumer.pop_batch(usize::MAX, |item| {
            seen += 1;
            drop(item);
            assert!(seen < 3, "callback fails on the third item");
        })
    }));
    assert!(result.is_err());
    // Three items reached the callback (and were dropped by it); three are still queued.
    assert_eq!(drops.load(Ordering::Relaxed), 3);
    assert_eq!(consumer.len(), 3);
    drop(producer);
    drop(consumer);
    assert_eq!(drops.load(Ordering::Relaxed), 6);
}

#[test]
fn items_are_dropped_exactly_once_when_the_consumer_leaves_mid_stream() {
    let _serial = one_at_a_time();
    let drops = Arc::new(AtomicUsize::new(0));
    let total = COUNT / 10;
    let (mut producer, mut consumer) = ring::channel(16);
    let counter = Arc::clone(&drops);
    let producer = spawn("tv-test-producer", move || {
        for _ in 0..total {
            let mut item = Tracked(Arc::clone(&counter));
            while let Err(full) = producer.push(item) {
                item = full.into_inner();
                if producer.is_abandoned() {
                    // Nobody will read it: drop it here, as the engine would count a miss.
                    break;
                }
                thread::yield_now();
            }
        }
    });
    // Pop about half, then drop the consumer with whatever is left in the ring.
    let mut popped = 0;
    while popped < total / 2 {
        if consumer.pop().is_ok() {
            popped += 1;
        }
    }
    drop(consumer);
    producer.join().expect("producer panicked");
    let total = usize::try_from(total).expect("fits in usize");
    assert_eq!(drops.load(Ordering::Relaxed), total);
}

/// Starts a consumer parked (strategy parks at once) on an empty ring and returns the handle
/// plus a receiver that fires just before it starts waiting.
fn parked_consumer(
    consumer: ring::Consumer<u64>,
) -> (JoinHandle<Result<u64, PopTimeoutError>>, mpsc::Receiver<()>) {
    let (ready_tx, ready_rx) = mpsc::channel();
    let handle = spawn("tv-test-consumer", move || {
        let mut consumer = consumer;
        ready_tx.send(()).expect("main thread waits for this");
        consumer.pop_timeout(PATIENCE)
    });
    (handle, ready_rx)
}

const PARK_AT_ONCE: WaitStrategy = WaitStrategy::SpinYieldPark {
    spins: 0,
    yields: 0,
};

#[test]
fn push_wakes_a_parked_consumer() {
    let _serial = one_at_a_time();
    let rounds = if cfg!(debug_assertions) { 200 } else { 1000 };
    for round in 0..rounds {
        let (mut producer, consumer) = ring::with_strategy(2, PARK_AT_ONCE).expect("valid");
        let (handle, ready) = parked_consumer(consumer);
        ready.recv().expect("consumer thread started");
        // Vary how far the consumer got: before, during or after its announcement.
        for _ in 0..(round % 7) {
            thread::yield_now();
        }
        let pushed = util::now();
        producer.push(round).expect("room in ring");
        assert_eq!(handle.join().expect("consumer panicked"), Ok(round));
        let took = pushed.elapsed();
        assert!(
            took < WAKE_WITHIN,
            "round {round}: the push did not wake the parked consumer ({took:?})"
        );
    }
}

#[test]
fn producer_drop_wakes_a_parked_consumer() {
    let _serial = one_at_a_time();
    let rounds = if cfg!(debug_assertions) { 200 } else { 1000 };
    for round in 0..rounds {
        let (producer, consumer) = ring::with_strategy(2, PARK_AT_ONCE).expect("valid");
        let (handle, ready) = parked_consumer(consumer);
        ready.recv().expect("consumer thread started");
        for _ in 0..(round % 7) {
            thread::yield_now();
        }
        let dropped = util::now();
        drop(producer);
        assert_eq!(
            handle.join().expect("consumer panicked"),
            Err(PopTimeoutError::Abandoned)
        );
        let took = dropped.elapsed();
        assert!(
            took < WAKE_WITHIN,
            "round {round}: the drop did not wake the parked consumer ({took:?})"
        );
    }
}

#[test]
fn items_pushed_before_the_producer_drops_are_still_delivered() {
    let _serial = one_at_a_time();
    for strategy in STRATEGIES {
        let (mut producer, mut consumer) = ring::with_strategy(4, strategy).expect("valid");
        producer.push(1).expect("room");
        producer.push(2).expect("room");
        drop(producer);
        assert!(consumer.is_abandoned());
        assert_eq!(consumer.pop_timeout(PATIENCE), Ok(1));
        assert_eq!(consumer.pop_timeout(PATIENCE), Ok(2));
        assert_eq!(
            consumer.pop_timeout(PATIENCE),
            Err(PopTimeoutError::Abandoned)
        );
    }
}

#[test]
fn pop_timeout_times_out_on_an_idle_ring_with_every_strategy() {
    let _serial = one_at_a_time();
    for strategy in STRATEGIES {
        let (_producer, mut consumer) = ring::with_strategy::<u8>(4, strategy).expect("valid");
        assert_eq!(
            consumer.pop_timeout(Duration::from_millis(5)),
            Err(PopTimeoutError::Timeout)
        );
        assert_eq!(
            consumer.pop_timeout(Duration::ZERO),
            Err(PopTimeoutError::Timeout)
        );
    }
}

#[test]
fn full_ring_hands_the_value_back_and_capacity_rounds_up() {
    let _serial = one_at_a_time();
    let (mut producer, mut consumer) = ring::channel(3);
    assert_eq!(producer.capacity(), 4);
    for v in 0..4 {
        producer.push(v).expect("room");
    }
    assert!(matches!(producer.push(9), Err(PushError::Full(9))));
    assert_eq!(format!("{:?}", producer.push(9)), "Err(Full(_))");
    assert_eq!(PushError::Full(9).to_string(), "full ring buffer");
    assert_eq!(consumer.pop(), Ok(0));
    producer.push(4).expect("room after a pop");
    let mut got = Vec::new();
    assert_eq!(consumer.pop_batch(10, |v| got.push(v)), 4);
    assert_eq!(got, [1, 2, 3, 4]);
    assert_eq!(consumer.pop(), Err(PopError::Empty));
}

#[test]
fn capacity_zero_and_overflow_are_typed_errors() {
    let _serial = one_at_a_time();
    assert_eq!(
        ring::with_strategy::<u8>(0, WaitStrategy::Spin).err(),
        Some(CapacityError::Zero)
    );
    assert_eq!(
        ring::with_strategy::<()>(usize::MAX, WaitStrategy::Spin).err(),
        Some(CapacityError::TooLarge(usize::MAX))
    );
    assert_eq!(
        ring::with_strategy::<()>(ring::MAX_CAPACITY + 1, WaitStrategy::Spin).err(),
        Some(CapacityError::TooLarge(ring::MAX_CAPACITY + 1))
    );
}

#[test]
fn capacity_whose_bytes_overflow_is_a_typed_error_not_a_panic() {
    let _serial = one_at_a_time();
    // 2^61 slots of 8 bytes: 2^64 bytes, past `isize::MAX` (and `usize`).
    assert_eq!(
        ring::with_strategy::<u64>(1 << 61, WaitStrategy::Spin).err(),
        Some(CapacityError::TooManyBytes {
            capacity: 1 << 61,
            item_bytes: 8,
        })
    );
    // Fits `usize` but not `isize::MAX`: 2^60 slots of 8 bytes.
    assert!(matches!(
        ring::with_strategy::<u64>(1 << 60, WaitStrategy::Spin),
        Err(CapacityError::TooManyBytes { .. })
    ));
    // Rounded up before the check: 2^58 + 1 slots of 32 bytes is 2^59 slots, 2^64 bytes.
    assert_eq!(
        ring::with_strategy::<[u64; 4]>((1 << 58) + 1, WaitStrategy::Spin).err(),
        Some(CapacityError::TooManyBytes {
            capacity: 1 << 59,
            item_bytes: 32,
        })
    );
    let e = ring::with_strategy::<u64>(1 << 61, WaitStrategy::Spin).expect_err("too many bytes");
    assert_eq!(
        e.to_string(),
        "ring buffer capacity 2305843009213693952 of 8-byte slots exceeds isize::MAX bytes"
    );
    // Zero-sized items take no bytes: the byte check never rejects them (building a ring of
    // `MAX_CAPACITY` of them would take a while, as each slot is initialized).
    let (producer, _consumer) =
        ring::with_strategy::<()>(1 << 16, WaitStrategy::Spin).expect("no bytes");
    assert_eq!(producer.capacity(), 1 << 16);
}

#[test]
fn zero_sized_items_are_counted() {
    let _serial = one_at_a_time();
    let (mut producer, mut consumer) = ring::channel(2);
    producer.push(()).expect("room");
    producer.push(()).expect("room");
    assert!(producer.push(()).is_err());
    assert_eq!(consumer.pop(), Ok(()));
    assert_eq!(consumer.len(), 1);
}

/// Pushes `0..count` in batches of up to `batch` through `push_iter`, yielding when full.
fn produce_batches(mut producer: ring::Producer<u64>, count: u64, batch: u64) {
    let mut items = (0..count).peekable();
    while items.peek().is_some() {
        let mut chunk = items.by_ref().take(batch as usize).peekable();
        while chunk.peek().is_some() {
            if producer.push_iter(&mut chunk) == 0 {
                thread::yield_now();
            }
        }
    }
}

#[test]
fn push_iter_batches_arrive_once_in_order_and_wake_parked_consumers() {
    let _serial = one_at_a_time();
    for strategy in STRATEGIES {
        let count = strategy_count(strategy);
        let (producer, mut consumer) = ring::with_strategy(64, strategy).expect("valid capacity");
        let producer = spawn("tv-test-producer", move || {
            produce_batches(producer, count, 16)
        });
        let consumer = spawn("tv-test-consumer", move || {
            let mut expected = 0;
            loop {
                match consumer.pop_timeout(PATIENCE) {
                    Ok(v) => {
                        assert_eq!(v, expected, "{strategy:?}");
                        expected += 1;
                    }
                    Err(PopTimeoutError::Abandoned) => break expected,
                    Err(e) => panic!("{strategy:?}: {e}"),
                }
            }
        });
        producer.join().expect("producer panicked");
        assert_eq!(
            consumer.join().expect("consumer panicked"),
            count,
            "{strategy:?}"
        );
    }
}

#[test]
fn push_iter_takes_only_what_fits_and_leaves_the_rest() {
    let (mut producer, mut consumer) = ring::channel::<u64>(4);
    let mut items = 0..10;
    assert_eq!(producer.push_iter(&mut items), 4);
    assert_eq!(producer.push_iter(&mut items), 0, "full");
    assert_eq!(consumer.pop(), Ok(0));
    assert_eq!(producer.push_iter(&mut items), 1);
    assert_eq!(items.next(), Some(5));
    let mut got = Vec::new();
    consumer.pop_batch(usize::MAX, |v| got.push(v));
    assert_eq!(got, [1, 2, 3, 4]);
    assert_eq!(producer.push_iter(&mut std::iter::empty()), 0);
}

/// Resident memory of this process, in bytes (Linux `/proc/self/statm`: pages).
fn resident_bytes() -> u64 {
    let statm = std::fs::read_to_string("/proc/self/statm").expect("statm");
    let pages: u64 = statm
        .split_whitespace()
        .nth(1)
        .and_then(|p| p.parse().ok())
        .expect("resident pages");
    pages * 4096
}

/// A ring's slots are resident from its creation: no push takes a page fault, and memory does
/// not creep up while the ring fills for the first time (the soak's 1,000 rings of 112 KiB grew
/// the process by 7 MB a minute for an hour before this). A 256 MiB ring must add at least
/// 200 MiB to the resident set at once; with lazily mapped slots it adds almost nothing.
/// Release only (CI runs it so): a debug build copies each uninitialised slot into place,
/// which writes every page whatever the ring does (8 KiB in release without the prefault).
#[test]
#[cfg_attr(
    debug_assertions,
    ignore = "a debug build writes the slots while collecting them: run with --release"
)]
fn a_new_rings_memory_is_resident_at_once() {
    let _one = one_at_a_time();
    let before = resident_bytes();
    let (producer, consumer) =
        ring::with_strategy::<u64>(32 << 20, WaitStrategy::Spin).expect("a 256 MiB ring");
    let grown = resident_bytes().saturating_sub(before);
    assert!(
        grown >= 200 << 20,
        "a 256 MiB ring added only {} KiB to the resident set",
        grown >> 10
    );
    drop((producer, consumer));
}
