//! loom models of `tvdatafeed::ring`: one `loom::model` per contract.
//!
//! Run with `RUSTFLAGS="--cfg tvdatafeed_loom" CARGO_TARGET_DIR=target/loom cargo test -p
//! loom-tests --release` (no preemption bound: every interleaving). Under loom the ring's park
//! has no timeout and its deadlines never pass (see `src/sync.rs`), so a lost wake-up is a
//! deadlock that loom reports, not a slow test. A data race on a slot or on the consumer's
//! thread handle is a causality violation that loom reports. `mutations.sh` breaks the ring
//! on purpose, one way at a time, and checks that a model here fails each time.
#![cfg(tvdatafeed_loom)]

use std::time::Duration;

use loom::{
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
    thread,
};
use tvdatafeed::ring::{self, PopTimeoutError, WaitStrategy};

/// Parks at the first empty ring: the wake-up handshake is on every path.
const PARK_AT_ONCE: WaitStrategy = WaitStrategy::SpinYieldPark {
    spins: 0,
    yields: 0,
};

/// Never reached under loom (the clock is frozen); a wait ends only by its event.
const FOREVER: Duration = Duration::from_secs(3600);

fn push_all(mut producer: ring::Producer<u32>, items: u32) {
    for i in 0..items {
        let mut value = i;
        while let Err(full) = producer.push(value) {
            value = full.into_inner();
            thread::yield_now();
        }
    }
}

type Waits = (Result<u32, PopTimeoutError>, Result<u32, PopTimeoutError>);

/// A consumer thread that waits for two items (or their absence), with no usable timeout.
fn wait_twice(mut consumer: ring::Consumer<u32>) -> thread::JoinHandle<Waits> {
    thread::spawn(move || {
        let first = consumer.pop_timeout(FOREVER);
        let second = consumer.pop_timeout(FOREVER);
        (first, second)
    })
}

#[test]
fn ring_fifo_no_loss_no_duplicate() {
    loom::model(|| {
        let (producer, mut consumer) =
            ring::with_strategy::<u32>(2, WaitStrategy::Spin).expect("valid capacity");
        let pusher = thread::spawn(move || push_all(producer, 3));
        let mut got = Vec::new();
        while got.len() < 3 {
            match consumer.pop() {
                Ok(v) => got.push(v),
                Err(_) => thread::yield_now(),
            }
        }
        pusher.join().expect("producer panicked");
        assert_eq!(got, [0, 1, 2]);
        assert!(consumer.pop().is_err());
    });
}

#[test]
fn ring_pop_batch_fifo_no_loss_no_duplicate() {
    loom::model(|| {
        let (producer, mut consumer) =
            ring::with_strategy::<u32>(2, WaitStrategy::Spin).expect("valid capacity");
        let pusher = thread::spawn(move || push_all(producer, 3));
        let mut got = Vec::new();
        while got.len() < 3 {
            if consumer.pop_batch(2, |v| got.push(v)) == 0 {
                thread::yield_now();
            }
        }
        pusher.join().expect("producer panicked");
        assert_eq!(got, [0, 1, 2]);
    });
}

#[test]
fn ring_push_then_park_never_loses_wakeup() {
    loom::model(|| {
        let (mut producer, consumer) =
            ring::with_strategy::<u32>(2, PARK_AT_ONCE).expect("valid capacity");
        let waiter = wait_twice(consumer);
        producer.push(0).expect("room");
        producer.push(1).expect("room");
        // The producer stays alive until both waits ended, so they can only end by a push (a
        // wake-up the drop would otherwise supply).
        let (first, second) = waiter.join().expect("consumer panicked");
        drop(producer);
        assert_eq!(first, Ok(0));
        assert_eq!(second, Ok(1));
    });
}

#[test]
fn ring_producer_drop_wakes_parked_consumer() {
    loom::model(|| {
        let (mut producer, consumer) =
            ring::with_strategy::<u32>(2, PARK_AT_ONCE).expect("valid capacity");
        let waiter = wait_twice(consumer);
        producer.push(7).expect("room");
        drop(producer);
        let (first, second) = waiter.join().expect("consumer panicked");
        // The item pushed before the drop is delivered, then the wait ends: no hang.
        assert_eq!(first, Ok(7));
        assert_eq!(second, Err(PopTimeoutError::Abandoned));
    });
}

/// Counts its drops.
struct Tracked(Arc<AtomicUsize>);

impl Drop for Tracked {
    fn drop(&mut self) {
        self.0.fetch_add(1, Ordering::Relaxed);
    }
}

#[test]
fn ring_concurrent_drop_of_both_halves_drops_each_item_once() {
    loom::model(|| {
        let drops = Arc::new(AtomicUsize::new(0));
        let (mut producer, mut consumer) = ring::channel::<Tracked>(2);
        let counter = Arc::clone(&drops);
        let pusher = thread::spawn(move || {
            for _ in 0..2 {
                producer
                    .push(Tracked(Arc::clone(&counter)))
                    .expect("room: capacity 2");
            }
        });
        // Pop at most one, racing the pushes, then drop with whatever is left.
        drop(consumer.pop());
        drop(consumer);
        pusher.join().expect("producer panicked");
        assert_eq!(drops.load(Ordering::Relaxed), 2);
    });
}

#[test]
fn ring_push_iter_then_park_never_loses_wakeup() {
    loom::model(|| {
        let (mut producer, consumer) =
            ring::with_strategy::<u32>(2, PARK_AT_ONCE).expect("valid capacity");
        let waiter = wait_twice(consumer);
        // One batch, one publish, one wake-up check for both items.
        assert_eq!(producer.push_iter(&mut (0..2)), 2);
        let (first, second) = waiter.join().expect("consumer panicked");
        drop(producer);
        assert_eq!(first, Ok(0));
        assert_eq!(second, Ok(1));
    });
}

/// A consumer that waits twice for the items of a producer that pushes one item then drops,
/// with a strategy that never parks: no fence of the consumer's hides a weak `disconnected`.
fn push_then_drop_delivers_the_item_then_abandons(strategy: WaitStrategy) {
    loom::model(move || {
        let (mut producer, consumer) =
            ring::with_strategy::<u32>(2, strategy).expect("valid capacity");
        let waiter = wait_twice(consumer);
        producer.push(7).expect("room");
        drop(producer);
        let (first, second) = waiter.join().expect("consumer panicked");
        assert_eq!(first, Ok(7), "the item pushed before the drop was lost");
        assert_eq!(second, Err(PopTimeoutError::Abandoned));
    });
}

#[test]
fn ring_producer_drop_never_hides_an_item_spin() {
    push_then_drop_delivers_the_item_then_abandons(WaitStrategy::Spin);
}

#[test]
fn ring_producer_drop_never_hides_an_item_spin_yield() {
    push_then_drop_delivers_the_item_then_abandons(WaitStrategy::SpinYield { spins: 1 });
}

#[test]
fn ring_push_iter_through_a_full_ring_never_overwrites_an_unread_slot() {
    loom::model(|| {
        let (mut producer, mut consumer) =
            ring::with_strategy::<u32>(2, WaitStrategy::Spin).expect("valid capacity");
        // Three items through two slots: the later batches reuse slots the consumer frees,
        // after `push_iter` re-reads `head`.
        let pusher = thread::spawn(move || {
            let mut items = 0..3;
            while !items.is_empty() {
                if producer.push_iter(&mut items) == 0 {
                    thread::yield_now();
                }
            }
        });
        let mut got = Vec::new();
        while got.len() < 3 {
            match consumer.pop() {
                Ok(v) => got.push(v),
                Err(_) => thread::yield_now(),
            }
        }
        pusher.join().expect("producer panicked");
        assert_eq!(got, [0, 1, 2], "lost, duplicated or reordered");
    });
}

#[test]
fn ring_consumer_moved_to_another_thread_is_woken_there() {
    loom::model(|| {
        let (mut producer, consumer) =
            ring::with_strategy::<u32>(2, PARK_AT_ONCE).expect("valid capacity");
        // The producer runs on its own thread and hands itself back, so it stays alive until
        // both waits ended: only a push can end them.
        let pusher = thread::spawn(move || {
            producer.push(0).expect("room");
            producer.push(1).expect("room");
            producer
        });
        // The consumer waits (and may park) on one thread, then moves to a second thread and
        // waits (and may park) there: the second wait's wake-up must reach the second thread,
        // not the one registered first. (The main thread, which joins, never registers: loom
        // cannot take an unpark aimed at a thread blocked in `join`.)
        let (first, consumer) = thread::spawn(move || {
            let mut consumer = consumer;
            (consumer.pop_timeout(FOREVER), consumer)
        })
        .join()
        .expect("first consumer thread panicked");
        let second = thread::spawn(move || {
            let mut consumer = consumer;
            consumer.pop_timeout(FOREVER)
        })
        .join()
        .expect("second consumer thread panicked");
        let producer = pusher.join().expect("producer panicked");
        drop(producer);
        assert_eq!(first, Ok(0));
        assert_eq!(second, Ok(1));
    });
}
