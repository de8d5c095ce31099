//! loom models of the consumer-removal contract: after `del_consumer` returns, the callback
//! never runs again, even if it was running at the call.
//!
//! The contract is three steps, each checked here with the engine's own types:
//! 1. the registry removes the consumer (later snapshots do not contain it),
//! 2. quiescence: `Removed::wait_unused` returns once no snapshot containing it is held (the
//!    I/O thread delivers only from a snapshot it holds),
//! 3. the consumer's `Gate` closes, waiting for a callback that is running to return.
#![cfg(tvdatafeed_loom)]

use std::time::Duration;

use loom::{
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
    thread,
};
use tvdatafeed::internal::{Gate, Registry};

/// What the registry holds for a consumer in this model: its gate and a mailbox the "I/O
/// thread" fills (standing for its ring).
struct Consumer {
    gate: Gate,
    delivered: AtomicUsize,
}

#[test]
fn consumer_removal_then_quiescence_then_gate_means_no_callback_runs_again() {
    loom::model(|| {
        let registry: Arc<Registry<u8, (), Arc<Consumer>>> = Arc::new(Registry::new());
        registry.get_or_insert(1, || ());
        let consumer = Arc::new(Consumer {
            gate: Gate::new(),
            delivered: AtomicUsize::new(0),
        });
        let id = registry
            .insert_consumer(&1, Arc::clone(&consumer))
            .expect("key exists");
        let runs = Arc::new(AtomicUsize::new(0));

        // tv-io: delivers from the snapshot it holds.
        let io = {
            let registry = Arc::clone(&registry);
            thread::spawn(move || {
                let snapshot = registry.load();
                if let Some(entry) = snapshot.get(&1) {
                    for (_, c) in entry.consumers() {
                        c.delivered.fetch_add(1, Ordering::Release);
                    }
                }
            })
        };
        // tv-consumer: runs the callback for what was delivered, through the gate.
        let callback = {
            let consumer = Arc::clone(&consumer);
            let runs = Arc::clone(&runs);
            thread::spawn(move || {
                for _ in 0..2 {
                    if consumer.delivered.load(Ordering::Acquire) == 0 {
                        thread::yield_now();
                        continue;
                    }
                    if !consumer.gate.enter() {
                        return;
                    }
                    runs.fetch_add(1, Ordering::Relaxed);
                    consumer.gate.exit();
                }
            })
        };

        // del_consumer.
        let removed = registry.remove_consumer(id).expect("registered");
        let removed = removed
            .wait_unused(Duration::from_secs(60))
            .unwrap_or_else(|_| panic!("a snapshot still holds the consumer"));
        assert!(
            removed.gate.close(Duration::from_secs(60)),
            "the gate did not close"
        );
        let at_return = runs.load(Ordering::Relaxed);

        io.join().expect("io panicked");
        callback.join().expect("callback panicked");
        assert_eq!(
            runs.load(Ordering::Relaxed),
            at_return,
            "the callback ran after del_consumer returned"
        );
        assert!(registry.load().get(&1).expect("key").consumers().len() == 0);
    });
}

#[test]
fn gate_close_waits_for_a_running_callback() {
    loom::model(|| {
        let gate = Arc::new(Gate::new());
        let inside = Arc::new(AtomicUsize::new(0));
        let callback = {
            let gate = Arc::clone(&gate);
            let inside = Arc::clone(&inside);
            thread::spawn(move || {
                if gate.enter() {
                    inside.store(1, Ordering::Relaxed);
                    thread::yield_now();
                    inside.store(0, Ordering::Relaxed);
                    gate.exit();
                }
            })
        };
        assert!(gate.close(Duration::from_secs(60)));
        assert_eq!(
            inside.load(Ordering::Relaxed),
            0,
            "close returned while the callback was still inside"
        );
        assert!(!gate.enter(), "entered after close");
        callback.join().expect("callback panicked");
    });
}
