//! loom models of the dispatcher threads' hand-off (`LiveFeedBuilder::callback_threads`):
//! several rings, one sleeper.
//!
//! Each model runs the engine's own dispatcher loop (`Dispatcher::turn`, with its `Home`,
//! bells and ready queue) on one loom thread, over consumers that poll real rings with
//! `poll_pop`, while the model's main thread, the one producer (as `tv-io` is), pushes into
//! the rings and drops them. The dispatcher parks
//! (without a timeout under loom) whenever its ready queue is empty, so a lost wake-up is a
//! loom deadlock, and an item it never ran is a failed assertion. `mutations.sh` breaks the
//! hand-off on purpose (`bell-no-unpark`, `queued-cleared-after-poll`) and checks that a model
//! here fails each time.
#![cfg(tvdatafeed_loom)]

use std::{
    task::{Context, Poll},
    time::Duration,
};

use loom::{
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
    thread,
};
use tvdatafeed::{
    internal::dispatch::{Dispatchable, Dispatcher, Home, Step},
    ring::{self, WaitStrategy},
};

/// Parks (announces a wait) at the first empty ring.
const PARK_AT_ONCE: WaitStrategy = WaitStrategy::SpinYieldPark {
    spins: 0,
    yields: 0,
};

/// A consumer standing for a callback one: it counts what it ran, and ends at its ring's end.
struct Counting {
    id: u64,
    rx: ring::Consumer<u32>,
    ran: Arc<AtomicUsize>,
    /// Ends after this many items (as a callback consumer ends after its last event).
    limit: usize,
}

impl Dispatchable for Counting {
    fn id(&self) -> u64 {
        self.id
    }

    fn run(&mut self, cx: &mut Context<'_>, budget: usize) -> Step {
        for _ in 0..budget {
            match self.rx.poll_pop(cx) {
                Poll::Ready(Some(_)) => {
                    // Relaxed: read after the dispatcher thread was joined.
                    if self.ran.fetch_add(1, Ordering::Relaxed) + 1 == self.limit {
                        return Step::Ended;
                    }
                }
                Poll::Ready(None) => return Step::Ended,
                Poll::Pending => return Step::Idle,
            }
        }
        Step::More
    }
}

/// Starts a dispatcher thread on a fresh home, with its thread recorded (as the pool does
/// before it places anything).
fn start() -> (Arc<Home<Counting>>, thread::JoinHandle<()>) {
    let home: Arc<Home<Counting>> = Arc::new(Home::default());
    let mine = Arc::clone(&home);
    let handle = thread::spawn(move || {
        let mut dispatcher = Dispatcher::new(mine);
        while dispatcher.turn(Duration::from_secs(5)) {}
    });
    home.set_thread(handle.thread().clone());
    (home, handle)
}

/// Two rings on one dispatcher, fed by one producer (as `tv-io` feeds every ring): a push
/// into each, then each producer's drop. The dispatcher runs both items and sees both ends,
/// whatever the interleaving, then ends at `stop`.
///
/// Explored with at most 5 preemptions (25 s here; every interleaving took more than 10
/// minutes on this machine); the single-ring model below explores every interleaving.
#[test]
fn dispatch_two_rings_one_sleeper_never_loses_a_wakeup() {
    let mut model = loom::model::Builder::new();
    model.preemption_bound = Some(5);
    model.check(|| {
        let (home, dispatcher) = start();
        let mut producers = Vec::new();
        let mut counts = Vec::new();
        for id in 0..2 {
            let (tx, rx) = ring::with_strategy::<u32>(2, PARK_AT_ONCE).expect("capacity");
            let ran = Arc::new(AtomicUsize::new(0));
            counts.push(Arc::clone(&ran));
            home.place(Counting {
                id,
                rx,
                ran,
                limit: usize::MAX,
            });
            producers.push(tx);
        }
        for tx in &mut producers {
            tx.push(7).expect("room");
        }
        drop(producers);
        home.stop();
        dispatcher.join().expect("dispatcher");
        for (i, ran) in counts.iter().enumerate() {
            assert_eq!(
                ran.load(Ordering::Relaxed),
                1,
                "ring {i}: its item was never run"
            );
        }
    });
}

/// One ring pushed twice by a producer racing the dispatcher's polls, and kept alive (its
/// drop would wake the consumer too, and hide a lost wake-up): the second push may land
/// between the dispatcher taking the consumer's key and its poll, or after the poll announced
/// a wait; either way it is run. The consumer ends after its two items, and the dispatcher,
/// already asked to stop, ends with it.
#[test]
fn dispatch_a_push_racing_a_turn_is_run() {
    loom::model(|| {
        let (home, dispatcher) = start();
        let (mut tx, rx) = ring::with_strategy::<u32>(4, PARK_AT_ONCE).expect("capacity");
        let ran = Arc::new(AtomicUsize::new(0));
        home.place(Counting {
            id: 0,
            rx,
            ran: Arc::clone(&ran),
            limit: 2,
        });
        home.stop();
        tx.push(1).expect("room");
        tx.push(2).expect("room");
        // The producer stays alive until the dispatcher ended: only the pushes' wake-ups
        // can end its waits.
        dispatcher.join().expect("dispatcher");
        drop(tx);
        assert_eq!(ran.load(Ordering::Relaxed), 2);
    });
}
