//! Callbacks on a few threads: the dispatcher pool of
//! [`LiveFeedBuilder::callback_threads`](super::LiveFeedBuilder::callback_threads).
//!
//! Each `tv-dispatch-K` thread runs many callback consumers. A consumer is placed on one
//! thread for its whole life (the least loaded when it is added), so its callback runs on one
//! thread at a time and its events keep their order. The thread takes ready consumers from its
//! ready queue, runs each for at most [`BUDGET`] events (so that one busy consumer does not
//! starve the others on its thread), and parks when the queue is empty.
//!
//! # The hand-off: several rings, one sleeper
//!
//! A consumer is polled with [`Consumer::poll_pop`](crate::ring::Consumer::poll_pop) and a
//! waker of its own [`Bell`]. The ring's producer (`tv-io`) wakes that waker only when the
//! consumer announced a wait (the ring's Dekker handshake, model-checked in `ring_async`). The
//! bell then puts the consumer's key on its thread's ready queue, once (`queued`), and unparks
//! the thread:
//!
//! - **Bell** (any thread): `queued.swap(true)`; if it was `false`, push the key, then unpark.
//! - **Dispatcher**: pop a key; `queued.swap(false)`; poll the consumer until `Pending` (its
//!   waker registered, the wait announced, the ring re-checked), its budget, or its end. When
//!   the queue is empty, park.
//!
//! No wake-up is lost:
//!
//! - A wake that finds `queued` already `true` is covered by a poll still to come: the key is
//!   on the queue, or the dispatcher popped it and has not yet cleared `queued`. Its `AcqRel`
//!   swap reads that wake's `true` (or a later one), so it synchronizes with it and the poll
//!   that follows sees the item the wake was for.
//! - A key pushed after the dispatcher found the queue empty comes with an `unpark` after the
//!   push: the park that follows returns at once (a thread's unpark token is kept until its
//!   next park).
//!
//! `loom-tests/tests/dispatch.rs` checks this with this module's own [`Dispatcher`] loop and the
//! ring's real `poll_pop`; `mutations.sh` shows that a bell that forgets to unpark, and a
//! dispatcher that clears `queued` after its poll instead of before, each fail it.
//!
//! The ready queue is crossbeam's lock-free `SegQueue` (`tv-io` never waits for a lock to wake
//! a consumer); under loom, which cannot see inside it, a loom `Mutex<VecDeque>` stands in, so
//! the model checks the protocol around a linearizable queue.
//!
//! # Invariants
//!
//! - A live bell's key is on its ready queue at most once (`queued` guards the push), so the
//!   queue never holds more keys than consumers were ever placed on the thread at once.
//! - A consumer's callback runs only on its dispatcher thread, between its gate's `enter` and
//!   `exit` (the removal contract is the gate's, as on a thread of its own).
//! - An ended consumer's bell stays `queued` forever: a late wake through it (the ring still
//!   holds its waker until the producer drops) pushes nothing.

use std::{
    sync::OnceLock,
    task::{Context, Wake, Waker},
    time::Duration,
};

use crate::sync::{
    Arc,
    atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering, fence},
    thread,
};

/// Events a consumer runs in one turn before the others on its thread get theirs.
pub const BUDGET: usize = 64;

/// A multi-producer, single-consumer queue: crossbeam's lock-free `SegQueue`; under loom, a
/// loom `Mutex<VecDeque>` (loom cannot see inside crossbeam's queue).
pub(crate) struct Queue<T> {
    #[cfg(not(tvdatafeed_loom))]
    inner: crossbeam_queue::SegQueue<T>,
    #[cfg(tvdatafeed_loom)]
    inner: crate::sync::Mutex<std::collections::VecDeque<T>>,
}

impl<T> Default for Queue<T> {
    fn default() -> Self {
        Self {
            inner: Default::default(),
        }
    }
}

impl<T> Queue<T> {
    /// Appends `value`.
    pub(crate) fn push(&self, value: T) {
        #[cfg(not(tvdatafeed_loom))]
        self.inner.push(value);
        #[cfg(tvdatafeed_loom)]
        self.inner
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .push_back(value);
    }

    /// Takes the oldest value, if any.
    pub(crate) fn pop(&self) -> Option<T> {
        #[cfg(not(tvdatafeed_loom))]
        return self.inner.pop();
        #[cfg(tvdatafeed_loom)]
        return self
            .inner
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .pop_front();
    }
}

/// What one dispatcher thread shares with the bells of its consumers and with the feed.
pub struct Home<C> {
    /// Keys of consumers to poll (see the module's hand-off).
    ready: Queue<u32>,
    /// Consumers placed here and not yet taken in by the thread.
    inbox: Queue<C>,
    /// The dispatcher thread, set once right after it is spawned and before any consumer is
    /// placed on it (so before any bell can ring).
    thread: OnceLock<thread::Thread>,
    /// Set by the feed's shutdown: the thread ends once its consumers have ended.
    stop: AtomicBool,
    /// Set by the thread as it ends: nothing placed afterwards would run.
    closed: AtomicBool,
    /// One more than the id of the consumer whose callback runs now (0: none), for the
    /// shutdown report.
    running: AtomicU64,
    /// Consumers placed here and not yet ended, for placement.
    load: AtomicUsize,
}

impl<C> std::fmt::Debug for Home<C> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Home")
            .field("load", &self.load())
            .field("running", &self.running())
            .finish_non_exhaustive()
    }
}

impl<C> Default for Home<C> {
    fn default() -> Self {
        Self {
            ready: Queue::default(),
            inbox: Queue::default(),
            thread: OnceLock::new(),
            stop: AtomicBool::new(false),
            closed: AtomicBool::new(false),
            running: AtomicU64::new(0),
            load: AtomicUsize::new(0),
        }
    }
}

impl<C> Home<C> {
    /// Records the dispatcher thread (once, before any consumer is placed).
    pub fn set_thread(&self, t: thread::Thread) {
        let _ = self.thread.set(t);
    }

    fn unpark(&self) {
        if let Some(t) = self.thread.get() {
            t.unpark();
        }
    }

    /// Places `consumer` on this thread.
    ///
    /// After the thread ended (the feed shut down, a race with a consumer being added), the
    /// consumer is dropped here instead: it would never run, and its ring's producer is gone.
    pub fn place(&self, consumer: C) {
        // Relaxed: a placement estimate, nothing is published through it.
        self.load.fetch_add(1, Ordering::Relaxed);
        self.inbox.push(consumer);
        // SeqCst: the Dekker pair of `Dispatcher::close` (see there).
        fence(Ordering::SeqCst);
        if self.closed.load(Ordering::SeqCst) {
            while let Some(late) = self.inbox.pop() {
                drop(late);
            }
            return;
        }
        self.unpark();
    }

    /// Asks the thread to end once its consumers have ended.
    pub fn stop(&self) {
        // Release: pairs with the dispatcher's Acquire load; the unpark makes it look.
        self.stop.store(true, Ordering::Release);
        self.unpark();
    }

    /// Consumers placed here and not yet ended.
    pub fn load(&self) -> usize {
        // Relaxed: an estimate for placement; a stale value only places less evenly.
        self.load.load(Ordering::Relaxed)
    }

    /// The consumer whose callback runs on this thread now, if any.
    pub fn running(&self) -> Option<u64> {
        // Relaxed: a report, read after a timeout; nothing depends on its freshness.
        self.running.load(Ordering::Relaxed).checked_sub(1)
    }
}

/// A consumer's doorbell: its ring's waker, which puts its key on its thread's ready queue.
pub(crate) struct Bell<C> {
    /// Whether the key is on the ready queue (or popped and not yet polled): see the module's
    /// hand-off.
    queued: AtomicBool,
    key: u32,
    home: Arc<Home<C>>,
}

impl<C: Send + 'static> Bell<C> {
    /// A bell for consumer `key` of `home`, queued (its first poll is due), and its waker.
    #[expect(
        clippy::disallowed_types,
        reason = "`std::task::Wake` takes a std `Arc`; the bell's state inside is the shim's"
    )]
    fn new(key: u32, home: Arc<Home<C>>) -> (std::sync::Arc<Self>, Waker) {
        let bell = std::sync::Arc::new(Self {
            queued: AtomicBool::new(true),
            key,
            home,
        });
        let waker = Waker::from(std::sync::Arc::clone(&bell));
        (bell, waker)
    }
}

impl<C> Bell<C> {
    fn ring(&self) {
        // AcqRel: Release hands what the waker's caller did before (the ring's push) to the
        // dispatcher's AcqRel swap that clears the flag; Acquire orders this after that clear.
        if !self.queued.swap(true, Ordering::AcqRel) {
            self.home.ready.push(self.key);
            self.home.unpark();
        }
    }
}

#[expect(
    clippy::disallowed_types,
    reason = "`std::task::Wake` takes a std `Arc`; the bell's state inside is the shim's"
)]
impl<C: Send + 'static> Wake for Bell<C> {
    fn wake(self: std::sync::Arc<Self>) {
        self.ring();
    }

    fn wake_by_ref(self: &std::sync::Arc<Self>) {
        self.ring();
    }
}

/// What a dispatched consumer did in one turn.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    /// Its ring is empty: its waker is registered and its wait announced.
    Idle,
    /// It used its budget with events left: run it again after the others.
    More,
    /// It ended (its ring was abandoned, its gate closed, its callback panicked, or its last
    /// event came): drop it.
    Ended,
}

/// A consumer a dispatcher thread can run.
pub trait Dispatchable: Send + 'static {
    /// Its id, for the shutdown report.
    fn id(&self) -> u64;

    /// Runs at most `budget` events, polling its ring with `cx`; see [`Step`].
    fn run(&mut self, cx: &mut Context<'_>, budget: usize) -> Step;
}

struct Slot<C> {
    consumer: C,
    #[expect(
        clippy::disallowed_types,
        reason = "`std::task::Wake` takes a std `Arc`"
    )]
    bell: std::sync::Arc<Bell<C>>,
    waker: Waker,
}

/// One dispatcher thread's loop state: its consumers, by key.
pub struct Dispatcher<C> {
    home: Arc<Home<C>>,
    slots: Vec<Option<Slot<C>>>,
    free: Vec<u32>,
}

impl<C> std::fmt::Debug for Dispatcher<C> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Dispatcher")
            .field("slots", &self.slots.len())
            .finish_non_exhaustive()
    }
}

impl<C: Dispatchable> Dispatcher<C> {
    /// The loop state of the thread that runs `home`'s consumers.
    pub fn new(home: Arc<Home<C>>) -> Self {
        Self {
            home,
            slots: Vec::new(),
            free: Vec::new(),
        }
    }

    /// Takes in newly placed consumers: each gets a slot and a bell, and is polled once (its
    /// ring may already hold events, and the poll registers its waker). Whether it took any.
    fn admit(&mut self) -> bool {
        let mut any = false;
        while let Some(consumer) = self.home.inbox.pop() {
            any = true;
            let key = self
                .free
                .pop()
                .unwrap_or_else(|| u32::try_from(self.slots.len()).unwrap_or(u32::MAX));
            let (bell, waker) = Bell::new(key, Arc::clone(&self.home));
            let slot = Slot {
                consumer,
                bell,
                waker,
            };
            match self.slots.get_mut(key as usize) {
                Some(s) => *s = Some(slot),
                None => self.slots.push(Some(slot)),
            }
            self.home.ready.push(key);
        }
        any
    }

    /// Runs consumer `key` for one turn.
    fn run_one(&mut self, key: u32) {
        let Some(Some(slot)) = self.slots.get_mut(key as usize) else {
            return;
        };
        // AcqRel: see the module's hand-off. Before the poll: a wake after this pushes the key
        // again.
        slot.bell.queued.swap(false, Ordering::AcqRel);
        let id = slot.consumer.id();
        // Relaxed: a report (see `Home::running`).
        self.home
            .running
            .store(id.saturating_add(1), Ordering::Relaxed);
        let step = slot
            .consumer
            .run(&mut Context::from_waker(&slot.waker), BUDGET);
        match step {
            Step::Idle => {}
            Step::More => slot.bell.ring(),
            Step::Ended => {
                // Never pushed again (see # Invariants). Relaxed: only this bell's own
                // swaps read the flag, and the modification order of one location keeps
                // every later swap seeing `true`; at most one wake between the clear above
                // and this store pushes the key once more (one extra poll of whoever holds
                // the key next, harmless).
                slot.bell.queued.store(true, Ordering::Relaxed);
                // The consumer (its callback) is dropped here, on its thread, still named as
                // running (a drop that blocks is reported as this consumer).
                self.slots[key as usize] = None;
                self.free.push(key);
                // Relaxed: a placement estimate (see `Home::place`).
                self.home.load.fetch_sub(1, Ordering::Relaxed);
            }
        }
        self.home.running.store(0, Ordering::Relaxed);
    }

    /// The thread's end: consumers placed from now on are dropped by their placer (see
    /// [`Home::place`]); those already in the inbox are dropped here. Whoever pops a consumer
    /// drops it, once.
    fn close(&mut self) {
        // SeqCst, and the fence: the Dekker pair of `place`'s push, fence, `closed` load. Either
        // the drain below sees the placed consumer, or its placer sees `closed` and drains.
        self.home.closed.store(true, Ordering::SeqCst);
        fence(Ordering::SeqCst);
        while let Some(late) = self.home.inbox.pop() {
            drop(late);
        }
    }

    /// Consumers on this thread that have not ended.
    pub fn live(&self) -> usize {
        self.slots.iter().filter(|s| s.is_some()).count()
    }

    /// One round: takes in new consumers and runs every ready one; parks (at most `idle`) when
    /// none was ready. Returns `false` when the thread should end: stopped, with no consumer
    /// left.
    pub fn turn(&mut self, idle: Duration) -> bool {
        self.admit();
        let mut ran = false;
        while let Some(key) = self.home.ready.pop() {
            ran = true;
            self.run_one(key);
            self.admit();
        }
        if ran {
            return true;
        }
        // Acquire: pairs with `Home::stop`'s Release, so a consumer placed before the stop is
        // in the inbox now. (loom found the consumer placed between the `admit` above and this
        // load: the thread ended with it unrun.)
        if self.home.stop.load(Ordering::Acquire) {
            if self.admit() {
                return true;
            }
            if self.live() == 0 {
                self.close();
                return false;
            }
        }
        // An unpark since the queue was found empty makes this return at once.
        thread::park_timeout(idle);
        true
    }
}

impl<T: Dispatchable + ?Sized> Dispatchable for Box<T> {
    fn id(&self) -> u64 {
        (**self).id()
    }

    fn run(&mut self, cx: &mut Context<'_>, budget: usize) -> Step {
        (**self).run(cx, budget)
    }
}

/// A feed's dispatcher threads (`tv-dispatch-K`) and the homes consumers are placed in.
pub(crate) struct Pool {
    homes: Vec<Arc<Home<Box<dyn Dispatchable>>>>,
    threads: crate::sync::plain::Mutex<Vec<(String, crate::sync::plain::thread::JoinHandle<()>)>>,
}

impl std::fmt::Debug for Pool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pool")
            .field("threads", &self.homes.len())
            .finish_non_exhaustive()
    }
}

impl Pool {
    /// Starts `n` dispatcher threads (at least one), each ready to take consumers when this
    /// returns.
    ///
    /// # Errors
    ///
    /// [`Error::Spawn`](crate::Error::Spawn) when a thread could not be started, or did not
    /// start within `timeout` (the threads already started end).
    pub(crate) fn start(n: usize, timeout: Duration) -> Result<Self, crate::Error> {
        let pool = Self {
            homes: Vec::new(),
            threads: crate::sync::plain::Mutex::new(Vec::new()),
        };
        let mut pool = pool;
        for k in 0..n.max(1) {
            let home: Arc<Home<Box<dyn Dispatchable>>> = Arc::new(Home::default());
            let name = format!("tv-dispatch-{k}");
            let (started, waiter) = super::command::reply::<()>();
            let mine = Arc::clone(&home);
            let thread_name = name.clone();
            let spawned = crate::sync::plain::thread::Builder::new()
                .name(name.clone())
                .spawn(move || {
                    mine.set_thread(thread::current());
                    started.send(());
                    tracing::debug!(thread = thread_name, "dispatcher started");
                    let mut dispatcher = Dispatcher::new(mine);
                    while dispatcher.turn(super::consumer::IDLE_WAKE) {}
                    tracing::debug!(thread = thread_name, "dispatcher ended");
                });
            let spawn_error = |source: std::io::Error| crate::Error::Spawn {
                thread: name.clone(),
                source: source.into(),
            };
            let handle = match spawned {
                Ok(h) => h,
                Err(e) => {
                    pool.stop();
                    return Err(spawn_error(e));
                }
            };
            pool.homes.push(home);
            pool.lock().push((name.clone(), handle));
            if waiter
                .wait(crate::clock::monotonic().checked_add(timeout))
                .is_none()
            {
                pool.stop();
                return Err(spawn_error(std::io::Error::new(
                    std::io::ErrorKind::TimedOut,
                    "the dispatcher thread did not start in time",
                )));
            }
        }
        Ok(pool)
    }

    fn lock(
        &self,
    ) -> std::sync::MutexGuard<'_, Vec<(String, crate::sync::plain::thread::JoinHandle<()>)>> {
        self.threads
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Places `consumer` on the least loaded thread, for its whole life.
    pub(crate) fn place(&self, consumer: Box<dyn Dispatchable>) {
        if let Some(home) = self.homes.iter().min_by_key(|h| h.load()) {
            home.place(consumer);
        }
    }

    /// Asks every thread to end once its consumers have ended (they end when `tv-io` drops
    /// their rings' producers).
    pub(crate) fn stop(&self) {
        for home in &self.homes {
            home.stop();
        }
    }

    /// The threads not yet taken, each with the name to report if it does not finish: the
    /// thread's, and the consumer whose callback it runs, if any.
    pub(crate) fn take_threads(
        &self,
    ) -> Vec<(
        String,
        crate::sync::plain::thread::JoinHandle<()>,
        impl Fn() -> String,
    )> {
        let threads: Vec<_> = self.lock().drain(..).collect();
        threads
            .into_iter()
            .zip(self.homes.iter().map(Arc::clone))
            .map(|((name, handle), home)| {
                let thread = name.clone();
                let report = move || match home.running() {
                    Some(id) => format!("tv-consumer-{id} (on {thread})"),
                    None => thread.clone(),
                };
                (name, handle, report)
            })
            .collect()
    }
}
