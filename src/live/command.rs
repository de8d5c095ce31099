//! User calls reach the `tv-io` thread as [`Command`]s through a bounded lock-free queue and a
//! `mio::Waker`; each carries a [`Reply`] the caller waits on with a timeout.
//!
//! No user call can stall `tv-io` (pushing a command never blocks it, and `tv-io` never waits
//! for a caller), and no I/O can hold a caller past its timeout (the caller's wait is bounded;
//! a reply that comes after the caller gave up is dropped).

use std::{
    sync::PoisonError,
    time::{Duration, Instant},
};

use crossbeam_queue::ArrayQueue;

use super::{Delivery, Seis, Tagged};
use crate::{
    Error,
    ring::Producer,
    sync::{
        Arc as SeisArc,
        plain::{Arc, Condvar, Mutex},
    },
};

/// A one-shot reply slot: `tv-io` fills it once, the caller waits for it with a timeout.
///
/// # Synchronization
///
/// `value` and `done` are under one mutex, held only to store or take the value (never across
/// I/O, a callback or a wait: the waiter's `Condvar::wait_timeout` releases it). The sender
/// notifies after storing, so a waiter that checked `None` under the lock and then waits cannot
/// miss it.
#[derive(Debug)]
pub(crate) struct Reply<T> {
    slot: Arc<Slot<T>>,
}

#[derive(Debug)]
struct Slot<T> {
    value: Mutex<Option<T>>,
    ready: Condvar,
}

/// The caller's end of a [`Reply`].
#[derive(Debug)]
pub(crate) struct Waiter<T> {
    slot: Arc<Slot<T>>,
}

/// A new reply slot and its waiter.
pub(crate) fn reply<T>() -> (Reply<T>, Waiter<T>) {
    let slot = Arc::new(Slot {
        value: Mutex::new(None),
        ready: Condvar::new(),
    });
    (
        Reply {
            slot: Arc::clone(&slot),
        },
        Waiter { slot },
    )
}

impl<T> Reply<T> {
    /// Fills the slot and wakes the waiter (if it still waits).
    pub(crate) fn send(self, value: T) {
        *self
            .slot
            .value
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = Some(value);
        self.slot.ready.notify_all();
    }
}

impl<T> Waiter<T> {
    /// The reply if it came; never waits.
    #[cfg(test)]
    pub(crate) fn try_take(&self) -> Option<T> {
        self.slot
            .value
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take()
    }

    /// The reply, waiting at most until `deadline` (`None`: no deadline).
    pub(crate) fn wait(self, deadline: Option<Instant>) -> Option<T> {
        let mut value = self
            .slot
            .value
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        loop {
            if let Some(v) = value.take() {
                return Some(v);
            }
            let left = match deadline {
                None => Duration::from_secs(3600),
                Some(d) => {
                    let left = d.saturating_duration_since(crate::clock::monotonic());
                    if left.is_zero() {
                        return None;
                    }
                    left
                }
            };
            value = match self.slot.ready.wait_timeout(value, left) {
                Ok((v, _)) => v,
                Err(e) => e.into_inner().0,
            };
        }
    }
}

/// A request from a user thread to `tv-io`.
pub(crate) enum Command {
    /// Subscribe `seis` (idempotent); the reply comes when the server validated it.
    Subscribe {
        seis: SeisArc<Seis>,
        reply: Reply<Result<(), Error>>,
    },
    /// Remove the server subscription of `seis`.
    Unsubscribe {
        seis: SeisArc<Seis>,
        reply: Reply<Result<(), Error>>,
    },
    /// Give `tv-io` the producer half of a new consumer's ring; the reply is its slot.
    AddConsumer {
        producer: Producer<Delivery>,
        updates: bool,
        counters: Arc<super::ConsumerCounters>,
        reply: Reply<u32>,
    },
    /// Drop the producer of consumer slot `slot` (after the consumer left the registry).
    RemoveConsumer { slot: u32 },
    /// Give `tv-io` the producer half of a new many-seis consumer's ring (no seis yet); the
    /// reply is its slot.
    AddManyConsumer {
        producer: Producer<Tagged>,
        updates: bool,
        counters: Arc<super::ConsumerCounters>,
        reply: Reply<u32>,
    },
    /// Give the many-seis consumer in `slot` the seises routed under `tags` (before the
    /// registry routes them); the reply says it is done.
    AddSeises {
        slot: u32,
        tags: Vec<u64>,
        reply: Reply<()>,
    },
    /// Take seis `tag` from the many-seis consumer in `slot` (after the registry stopped
    /// routing it there): its waiting events are dropped and none is pushed again.
    RemoveSeis { slot: u32, tag: u64 },
    /// A history download over the live connection.
    GetHist {
        request: Box<crate::history::batch::BatchRequest>,
        timeout: Duration,
        reply: Reply<Result<crate::History, Error>>,
    },
}

impl std::fmt::Debug for Command {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Subscribe { seis, .. } => write!(f, "Subscribe({seis:?})"),
            Self::Unsubscribe { seis, .. } => write!(f, "Unsubscribe({seis:?})"),
            Self::AddConsumer { updates, .. } => write!(f, "AddConsumer(updates: {updates})"),
            Self::RemoveConsumer { slot } => write!(f, "RemoveConsumer({slot})"),
            Self::AddManyConsumer { updates, .. } => {
                write!(f, "AddManyConsumer(updates: {updates})")
            }
            Self::AddSeises { slot, tags, .. } => write!(f, "AddSeises({slot}, {tags:?})"),
            Self::RemoveSeis { slot, tag } => write!(f, "RemoveSeis({slot}, {tag})"),
            Self::GetHist { request, .. } => write!(f, "GetHist({request:?})"),
        }
    }
}

/// The command queue: bounded, lock-free, multi-producer; `tv-io` drains it after its waker
/// fires.
pub(crate) struct Commands {
    queue: ArrayQueue<Command>,
    waker: Arc<mio::Waker>,
}

impl std::fmt::Debug for Commands {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Commands")
            .field("queued", &self.queue.len())
            .finish_non_exhaustive()
    }
}

impl Commands {
    pub(crate) fn new(capacity: usize, waker: Arc<mio::Waker>) -> Self {
        Self {
            queue: ArrayQueue::new(capacity.max(1)),
            waker,
        }
    }

    /// Queues `cmd` and wakes `tv-io`. A full queue (`tv-io` far behind) is retried, yielding,
    /// until `deadline`; then the command is dropped and [`Error::Overloaded`] returned.
    pub(crate) fn send(&self, mut cmd: Command, deadline: Option<Instant>) -> Result<(), Error> {
        let mut round = 0u32;
        loop {
            match self.queue.push(cmd) {
                Ok(()) => break,
                Err(back) => cmd = back,
            }
            if deadline.is_some_and(|d| crate::clock::monotonic() >= d) {
                return Err(Error::Overloaded);
            }
            round = round.saturating_add(1);
            if round < 64 {
                std::thread::yield_now();
            } else {
                crate::sync::plain::thread::park_timeout(Duration::from_micros(200));
            }
        }
        // A failed wake means the poll is gone (shut down); the caller's wait then times out.
        let _ = self.waker.wake();
        Ok(())
    }

    /// Wakes `tv-io` without a command (shutdown).
    pub(crate) fn wake(&self) {
        let _ = self.waker.wake();
    }

    /// The next queued command.
    pub(crate) fn pop(&self) -> Option<Command> {
        self.queue.pop()
    }
}
