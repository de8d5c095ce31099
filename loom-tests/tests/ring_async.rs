//! loom models of `tvdatafeed::ring::Consumer::poll_pop`, the async hand-off: one
//! `loom::model` per contract.
//!
//! The task's side runs on loom's main thread with a waker that records its wakes; a fresh
//! waker per poll makes "woken" mean "woken after that poll registered it". The contract: once
//! `poll_pop` returned `Pending`, a push or the producer's drop that this poll did not see wakes
//! the task (no lost wake-up), whatever the interleaving. `ring_async_task_parked_*` drives the
//! polls from a minimal executor that parks its thread between polls until woken, with one
//! waker for every poll (the `will_wake` path): there a lost wake-up is a loom deadlock.
//! `mutations.sh` breaks the handshake on purpose (`poll-pop-*`, `task-wake-skipped`) and
//! checks that a model here fails each time.
#![cfg(tvdatafeed_loom)]
#![allow(
    clippy::disallowed_types,
    reason = "`std::task::Wake` takes a std `Arc`; the count inside it is a loom atomic"
)]

use std::{
    sync::Arc as StdArc,
    task::{Context, Poll, Wake, Waker},
};

use loom::{
    sync::atomic::{AtomicUsize, Ordering},
    thread,
};
use tvdatafeed::ring::{self, WaitStrategy};

/// Parks (or, for a task, announces a wait) at the first empty ring.
const PARK_AT_ONCE: WaitStrategy = WaitStrategy::SpinYieldPark {
    spins: 0,
    yields: 0,
};

/// A waker that counts its wakes in a loom atomic, so loom sees the producer's wake.
struct Recorder(AtomicUsize);

impl Wake for Recorder {
    fn wake(self: StdArc<Self>) {
        self.wake_by_ref();
    }
    fn wake_by_ref(self: &StdArc<Self>) {
        // Relaxed: read after the producer thread was joined, which orders it.
        self.0.fetch_add(1, Ordering::Relaxed);
    }
}

/// Polls until `Pending` or the end, each poll with a new recording waker. Returns the items,
/// and the recorder of the poll that returned `Pending` (`None` if the stream ended).
fn poll_until_pending(consumer: &mut ring::Consumer<u32>) -> (Vec<u32>, Option<StdArc<Recorder>>) {
    let mut got = Vec::new();
    loop {
        let recorder = StdArc::new(Recorder(AtomicUsize::new(0)));
        let waker = Waker::from(StdArc::clone(&recorder));
        match consumer.poll_pop(&mut Context::from_waker(&waker)) {
            Poll::Ready(Some(v)) => got.push(v),
            Poll::Ready(None) => return (got, None),
            Poll::Pending => return (got, Some(recorder)),
        }
    }
}

/// Everything left, then the end (the producer is gone).
fn drain_to_the_end(consumer: &mut ring::Consumer<u32>, got: &mut Vec<u32>) {
    let mut cx = Context::from_waker(Waker::noop());
    loop {
        match consumer.poll_pop(&mut cx) {
            Poll::Ready(Some(v)) => got.push(v),
            Poll::Ready(None) => return,
            Poll::Pending => panic!("the producer is gone, yet poll_pop returned Pending"),
        }
    }
}

#[test]
fn ring_async_push_after_pending_always_wakes_the_task() {
    loom::model(|| {
        let (mut producer, mut consumer) =
            ring::with_strategy::<u32>(2, PARK_AT_ONCE).expect("valid capacity");
        // The producer is handed back alive: only its push can owe the task a wake-up.
        let pusher = thread::spawn(move || {
            producer.push(0).expect("room");
            producer
        });
        let (mut got, pending) = poll_until_pending(&mut consumer);
        let producer = pusher.join().expect("producer panicked");
        if let Some(recorder) = pending {
            if got.is_empty() {
                assert!(
                    recorder.0.load(Ordering::Relaxed) > 0,
                    "poll_pop returned Pending, then the push came, and the task was never woken"
                );
            }
        }
        drop(producer);
        drain_to_the_end(&mut consumer, &mut got);
        assert_eq!(got, [0]);
    });
}

#[test]
fn ring_async_producer_drop_after_pending_always_wakes_the_task() {
    loom::model(|| {
        let (mut producer, mut consumer) =
            ring::with_strategy::<u32>(2, PARK_AT_ONCE).expect("valid capacity");
        let pusher = thread::spawn(move || {
            producer.push(7).expect("room");
            drop(producer);
        });
        let (mut got, pending) = poll_until_pending(&mut consumer);
        pusher.join().expect("producer panicked");
        if let Some(recorder) = pending {
            // Pending came before the drop was seen: the drop (or the push) owes a wake-up.
            assert!(
                recorder.0.load(Ordering::Relaxed) > 0,
                "poll_pop returned Pending, then the producer left, and the task was never woken"
            );
        }
        drain_to_the_end(&mut consumer, &mut got);
        assert_eq!(got, [7], "the item pushed before the drop was lost");
    });
}

/// A waker that unparks the consumer's loom thread (loom parks have no spurious returns, so
/// a lost wake-up leaves the thread parked for ever: a deadlock that loom reports).
struct Unparker(thread::Thread);

impl Wake for Unparker {
    fn wake(self: StdArc<Self>) {
        self.wake_by_ref();
    }
    fn wake_by_ref(self: &StdArc<Self>) {
        self.0.unpark();
    }
}

#[test]
fn ring_async_task_parked_between_polls_streams_to_the_end() {
    loom::model(|| {
        let (mut producer, mut consumer) =
            ring::with_strategy::<u32>(2, PARK_AT_ONCE).expect("valid capacity");
        let pusher = thread::spawn(move || {
            producer.push(0).expect("room");
            drop(producer);
        });
        // A minimal executor: poll, and sleep after `Pending` until woken. One waker for
        // every poll (the `will_wake` path: registered once). The main thread only joins:
        // loom cannot deliver an unpark to a thread blocked in `join`.
        let task = thread::spawn(move || {
            let waker = Waker::from(StdArc::new(Unparker(thread::current())));
            let mut cx = Context::from_waker(&waker);
            let mut got = Vec::new();
            loop {
                match consumer.poll_pop(&mut cx) {
                    Poll::Ready(Some(v)) => got.push(v),
                    Poll::Ready(None) => return got,
                    Poll::Pending => thread::park(),
                }
            }
        });
        pusher.join().expect("producer panicked");
        let got = task.join().expect("task panicked");
        assert_eq!(got, [0], "the item was lost or duplicated");
    });
}
