//! The gate a consumer's callback passes through: after [`Gate::close`] returns (without
//! timing out) the callback never runs again, even if it was running when `close` was called.
//!
//! The consumer thread calls [`Gate::enter`] before each callback and [`Gate::exit`] after it;
//! `del_consumer`, `del_seis` and `shutdown` call [`Gate::close`], which stops new entries and
//! waits for a running callback to leave. It is the last step of the consumer-removal contract
//! (registry removal, quiescence of `tv-io`'s snapshot, then this), model-checked with loom
//! (`loom-tests/tests/consumer.rs`). When the running callback is the caller (it removes its
//! own consumer), they call [`Gate::close_from_inside`] instead, which only stops new entries:
//! a thread cannot wait for itself to leave, and its own invocation ends when it returns.
//!
//! # Synchronization
//!
//! `state` holds two bits: `OPEN` (cleared once, by `close`) and `RUNNING` (set by `enter`,
//! cleared by `exit`, only by the consumer thread). `enter` sets `RUNNING` with a
//! compare-and-swap that requires `OPEN`, so a callback either started before `close`'s
//! `fetch_and` (and `close` sees `RUNNING` and waits) or it never starts. Both are `SeqCst`
//! read-modify-writes on one location, so they are totally ordered: there is no window in which
//! `close` reads "not running" while an `enter` that read "open" is about to succeed.
//!
//! The closer parks until `RUNNING` clears: it stores its `Thread` in `waiter` before clearing
//! `OPEN`, and `exit` unparks it when it sees `OPEN` cleared (Dekker style: `exit`'s `fetch_and`
//! and `close`'s `fetch_and` are `SeqCst` RMWs on `state`, so `exit` either sees `OPEN` cleared,
//! and unparks, or `close` sees `RUNNING` cleared and does not wait). The waiter slot is a
//! mutex taken only on this cold path.

use std::time::Duration;

use crate::sync::{
    Deadline, Mutex,
    atomic::{AtomicUsize, Ordering},
    thread::{self, Thread},
};

const OPEN: usize = 1;
const RUNNING: usize = 2;

/// See the module docs.
#[derive(Debug)]
pub struct Gate {
    state: AtomicUsize,
    waiter: Mutex<Option<Thread>>,
}

impl Default for Gate {
    fn default() -> Self {
        Self::new()
    }
}

impl Gate {
    /// An open gate.
    pub fn new() -> Self {
        Self {
            state: AtomicUsize::new(OPEN),
            waiter: Mutex::new(None),
        }
    }

    /// Enters the gate before running a callback; `false` once the gate is closed (do not run
    /// it). Only the consumer thread calls this, and never twice without [`Gate::exit`].
    pub fn enter(&self) -> bool {
        // SeqCst: totally ordered with `close`'s fetch_and (see # Synchronization).
        self.state
            .compare_exchange(OPEN, OPEN | RUNNING, Ordering::SeqCst, Ordering::SeqCst)
            .is_ok()
    }

    /// Leaves the gate after the callback returned (or panicked).
    pub fn exit(&self) {
        // SeqCst: pairs with `close`'s fetch_and; the callback's effects happen before a
        // closer that sees RUNNING cleared returns.
        let before = self.state.fetch_and(!RUNNING, Ordering::SeqCst);
        debug_assert!(before & RUNNING != 0, "exit without enter");
        if before & OPEN == 0 {
            // A closer may be parked waiting for us.
            let waiter = self
                .waiter
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            if let Some(t) = waiter.as_ref() {
                t.unpark();
            }
        }
    }

    /// Whether the gate is still open.
    pub fn is_open(&self) -> bool {
        // Acquire: a caller that sees the gate closed also sees what the closer did before.
        self.state.load(Ordering::Acquire) & OPEN != 0
    }

    /// Closes the gate without waiting, for the consumer's own thread (a callback removing its
    /// own consumer, while running or while its thread ends): no callback enters after this,
    /// and the one running (the caller's, if any) finishes on its own. Idempotent.
    pub fn close_from_inside(&self) {
        // SeqCst: totally ordered with `enter`'s CAS (see # Synchronization); no waiter is
        // registered, since nobody waits.
        self.state.fetch_and(!OPEN, Ordering::SeqCst);
    }

    /// Closes the gate and waits up to `timeout` for a running callback to leave. Returns
    /// `true` when no callback runs any more (and none ever will), `false` if one was still
    /// running at the timeout (it will not run again after it returns). Idempotent.
    pub fn close(&self, timeout: Duration) -> bool {
        *self
            .waiter
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = Some(thread::current());
        // SeqCst: totally ordered with `enter`'s CAS and `exit`'s fetch_and.
        let before = self.state.fetch_and(!OPEN, Ordering::SeqCst);
        if before & RUNNING == 0 {
            return true;
        }
        let deadline = Deadline::after(timeout);
        loop {
            // SeqCst: see # Synchronization; an exit after our fetch_and unparks us.
            if self.state.load(Ordering::SeqCst) & RUNNING == 0 {
                return true;
            }
            match deadline.remaining() {
                None => return false,
                Some(left) => thread::park_timeout(left),
            }
        }
    }
}
