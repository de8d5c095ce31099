//! A bounded single-producer single-consumer ring with a lost-wake-up-free blocking pop.
//!
//! The engine's I/O thread pushes every event for a consumer into that consumer's ring and never
//! blocks doing so: a full ring hands the value back ([`PushError::Full`]). The consumer pops
//! without blocking ([`Consumer::pop`], [`Consumer::pop_batch`]) or waits for the next item
//! with a timeout ([`Consumer::pop_timeout`]), following its [`WaitStrategy`]: spin, then yield,
//! then park. The producer unparks the consumer only when the consumer announced that it
//! sleeps, with a `fence(SeqCst)` handshake on both sides (the Dekker pattern of
//! `crossbeam-utils`' parker and `crossbeam-channel`'s `SyncWaker`), so a push never pays for a
//! system call while the consumer is awake, and a parked consumer is never left asleep next to
//! an item. The handshake and the index protocol are model-checked with loom (`loom-tests/`).
//!
//! The consumer may also wait as an async task: [`Consumer::poll_pop`] registers the task's
//! [`Waker`] where a parking thread registers its `Thread`, announces the sleep with the same
//! fence, re-checks, and returns `Pending` only if the ring is still empty; the push (or the
//! producer's drop) that finds the announcement wakes the task. Nothing here depends on an
//! executor: a `Waker` is `core`'s.
//!
//! The wake path takes no lock, so a push never waits on the consumer. The consumer's
//! `Thread` handle or `Waker` sits in a slot guarded by a three-state word (idle, borrowed by
//! the producer, being written by the consumer) instead of a mutex. The consumer writes the
//! slot only when it parks on a thread other than the one it registered last, or polls with a
//! waker that would not wake the task registered last (once per change, not once per wait),
//! after taking the word from idle to writing; if the producer is just then waking through the
//! old handle, the consumer waits out that one `unpark` (or waker clone). The producer
//! borrows the slot with one compare-and-swap from idle; if it finds the consumer writing, it
//! skips the wake-up: a consumer still registering has not announced the sleep yet, so its
//! re-check after the fence sees the push (see `Shared`'s `# Synchronization`).
//!
//! The layout follows `rtrb`: one constructor returns the two halves, so exactly one producer
//! and one consumer exist; head and tail sit on their own cache lines
//! ([`crossbeam_utils::CachePadded`]); each half caches the other's index and reads the shared
//! one only when its cache says full (producer) or empty (consumer). Unlike `rtrb` the capacity
//! is a power of two, so a slot is an index masked, not a branch.
//!
//! What this module may not do: block the producer, allocate after construction, or wake a
//! consumer that did not announce it sleeps.
//!
//! # Examples
//!
//! ```
//! use std::time::Duration;
//! use tvdatafeed::ring;
//!
//! let (mut producer, mut consumer) = ring::channel::<u64>(4);
//! let worker = std::thread::Builder::new()
//!     .name("tv-consumer-0".into())
//!     .spawn(move || {
//!         let mut sum = 0;
//!         // Returns `Abandoned` once the producer is gone and the ring is drained.
//!         while let Ok(v) = consumer.pop_timeout(Duration::from_secs(5)) {
//!             sum += v;
//!         }
//!         sum
//!     })?;
//! for v in 1..=100 {
//!     let mut v = v;
//!     // The producer never blocks: on a full ring it gets the value back.
//!     while let Err(full) = producer.push(v) {
//!         v = full.into_inner();
//!         std::thread::yield_now();
//!     }
//! }
//! drop(producer);
//! assert_eq!(worker.join().expect("consumer panicked"), 5050);
//! # Ok::<(), std::io::Error>(())
//! ```

use std::{
    cell::Cell,
    fmt,
    mem::MaybeUninit,
    task::{Context, Poll, Waker},
    time::Duration,
};

use crossbeam_utils::CachePadded;

use crate::sync::{
    Arc, Deadline, UnsafeCell,
    atomic::{AtomicBool, AtomicUsize, Ordering, fence},
    hint,
    thread::{self, Thread, ThreadId},
};

/// The largest capacity a ring can have: indices run free modulo `usize::MAX + 1`, and the
/// distance between them must stay below half that range.
pub const MAX_CAPACITY: usize = 1 << (usize::BITS - 2);

/// How often the wait loops read the clock: every this many spins or yields.
const DEADLINE_CHECK_EVERY: u64 = 16;

/// Creates a ring holding at least `capacity` items, with the default [`WaitStrategy`].
///
/// The capacity is rounded up to a power of two. The two halves are the only handles to the
/// ring: move them to the threads that use them.
///
/// # Panics
///
/// If `capacity` is 0, larger than [`MAX_CAPACITY`], or so large that the slots would not fit
/// in `isize::MAX` bytes; [`with_strategy`] returns a [`CapacityError`] instead.
///
/// # Examples
///
/// ```
/// let (mut producer, mut consumer) = tvdatafeed::ring::channel::<&str>(3);
/// assert_eq!(producer.capacity(), 4);
/// producer.push("bar").expect("ring has room");
/// assert_eq!(consumer.pop(), Ok("bar"));
/// ```
#[must_use]
pub fn channel<T>(capacity: usize) -> (Producer<T>, Consumer<T>) {
    match with_strategy(capacity, WaitStrategy::default()) {
        Ok(halves) => halves,
        Err(e) => panic!("ring::channel: {e}"),
    }
}

/// Creates a ring holding at least `capacity` items whose consumer waits with `strategy`.
///
/// The strategy is fixed for the ring's life because it binds both halves: with a strategy
/// that parks, every push pays one `fence(SeqCst)` to check for a sleeping consumer; with
/// [`WaitStrategy::Spin`] or [`WaitStrategy::SpinYield`] the consumer never sleeps and pushes
/// skip the fence.
///
/// The slots' memory (capacity × `size_of::<T>()` bytes) is written once here, so that it is
/// resident from the start: no push ever takes a page fault, and the ring's memory does not
/// creep up as it fills for the first time.
///
/// # Errors
///
/// [`CapacityError`] if `capacity` is 0, larger than [`MAX_CAPACITY`], or (rounded up) too
/// large for its slots to fit in `isize::MAX` bytes, the most one allocation can hold.
///
/// # Examples
///
/// ```
/// use tvdatafeed::ring::{self, CapacityError, WaitStrategy};
///
/// let (producer, consumer) = ring::with_strategy::<u32>(1000, WaitStrategy::Spin)?;
/// assert_eq!(producer.capacity(), 1024);
/// assert_eq!(consumer.wait_strategy(), WaitStrategy::Spin);
/// assert_eq!(ring::with_strategy::<u32>(0, WaitStrategy::Spin).err(), Some(CapacityError::Zero));
/// assert!(matches!(
///     ring::with_strategy::<u64>(1 << 61, WaitStrategy::Spin),
///     Err(CapacityError::TooManyBytes { .. })
/// ));
/// # Ok::<(), CapacityError>(())
/// ```
pub fn with_strategy<T>(
    capacity: usize,
    strategy: WaitStrategy,
) -> Result<(Producer<T>, Consumer<T>), CapacityError> {
    if capacity == 0 {
        return Err(CapacityError::Zero);
    }
    let capacity = capacity
        .checked_next_power_of_two()
        .filter(|&c| c <= MAX_CAPACITY)
        .ok_or(CapacityError::TooLarge(capacity))?;
    // Checked before allocating: a slice of more than `isize::MAX` bytes cannot exist, and
    // `collect` would panic ("capacity overflow") rather than fail. Zero-sized items take no
    // bytes, whatever the capacity.
    let slot_bytes = size_of::<UnsafeCell<MaybeUninit<T>>>();
    if capacity
        .checked_mul(slot_bytes)
        .is_none_or(|bytes| bytes > isize::MAX as usize)
    {
        return Err(CapacityError::TooManyBytes {
            capacity,
            item_bytes: slot_bytes,
        });
    }
    let slots: Box<[UnsafeCell<MaybeUninit<T>>]> = (0..capacity)
        .map(|_| UnsafeCell::new(MaybeUninit::uninit()))
        .collect();
    // Fault every page of the slots in now, not on the producer's hot path: a fresh
    // allocation's pages are mapped on first write, so each new page costs the first push that
    // reaches it a page fault (microseconds), and the process's resident memory would creep up
    // for as long as the ring takes to wrap once (an hour at one bar a second and 1,024 slots).
    if slot_bytes > 0 {
        for slot in &slots {
            slot.with_mut(|p| {
                // SAFETY: `p` is this slot's storage, which nothing else can reach yet (the
                // ring is not shared until it is returned), and a `MaybeUninit<T>` may hold any
                // byte. The write is volatile so that it is not elided, nor folded into an
                // allocation whose pages stay unmapped until written.
                unsafe { p.cast::<u8>().write_volatile(0) }
            });
        }
    }
    let shared = Arc::new(Shared {
        head: CachePadded::new(AtomicUsize::new(0)),
        tail: CachePadded::new(AtomicUsize::new(0)),
        sleeper: CachePadded::new(Sleeper {
            sleeping: AtomicBool::new(false),
            access: AtomicUsize::new(IDLE),
            waiter: UnsafeCell::new(None),
        }),
        disconnected: AtomicBool::new(false),
        slots,
        mask: capacity - 1,
        strategy,
    });
    let producer = Producer {
        shared: Arc::clone(&shared),
        tail: Cell::new(0),
        cached_head: Cell::new(0),
        wakes: strategy.parks(),
    };
    let consumer = Consumer {
        shared,
        head: Cell::new(0),
        cached_tail: Cell::new(0),
        registered: None,
        announced: false,
    };
    Ok((producer, consumer))
}

/// How a consumer waits in [`Consumer::pop_timeout`] while the ring is empty.
///
/// Each phase re-checks the ring, the producer's presence and the deadline.
#[non_exhaustive]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WaitStrategy {
    /// Busy-spin with `spin_loop` hints. The lowest latency; burns its core, so use it on a
    /// pinned, dedicated core only. Pushes skip the wake-up fence.
    Spin,
    /// Spin `spins` times, then `yield_now` until an item arrives. Never sleeps, so pushes skip
    /// the wake-up fence; still keeps a core busy when the machine is idle.
    SpinYield {
        /// Spins before the first yield.
        spins: u32,
    },
    /// Spin `spins` times, yield `yields` times, then park until the producer wakes the thread
    /// (or the timeout ends). Idle CPU near zero; a wake-up costs a system call on both sides.
    SpinYieldPark {
        /// Spins before the first yield.
        spins: u32,
        /// Yields before parking.
        yields: u32,
    },
}

impl Default for WaitStrategy {
    /// `SpinYieldPark { spins: 128, yields: 16 }`: a few microseconds of spinning and yielding
    /// cover back-to-back events, then the thread sleeps.
    fn default() -> Self {
        Self::SpinYieldPark {
            spins: 128,
            yields: 16,
        }
    }
}

impl WaitStrategy {
    /// Whether a consumer with this strategy may park, so that pushes must check for it.
    const fn parks(self) -> bool {
        matches!(self, Self::SpinYieldPark { .. })
    }
}

/// The state both halves share.
///
/// # Invariants
///
/// - `slots.len()` is a power of two, `mask == slots.len() - 1`, and the capacity is at most
///   [`MAX_CAPACITY`]. Index `i` lives in slot `i & mask`.
/// - `head` and `tail` run free (wrapping at `usize::MAX`); `tail.wrapping_sub(head)` is in
///   `0..=capacity`: the number of items in the ring.
/// - Slots `head..tail` (wrapping) hold initialized values owned by the ring; all other slots are
///   uninitialized. Only the consumer reads slots `head..tail`; only the producer writes slots
///   `tail..head + capacity`. So no slot is ever accessed by both halves at once.
/// - `head` is written only by the consumer, `tail` only by the producer; `sleeping` is written
///   only by the consumer; `disconnected` goes from `false` to `true` once, when the first half
///   drops.
/// - `sleeper.access` is `IDLE`, `BORROWED` or `WRITING`. Only the producer moves it
///   `IDLE -> BORROWED -> IDLE`, only the consumer `IDLE -> WRITING -> IDLE`, each with a
///   compare-and-swap from `IDLE`, so at most one of them is past it at a time:
///   `sleeper.waiter` is read by the producer only while it holds `BORROWED`, and written
///   only by the consumer while it holds `WRITING` (the consumer, its only writer, may read it
///   at any time: reads do not race reads).
/// - `sleeper.waiter`, while `sleeping` is `true`, is what the consumer registered before that
///   announcement: its current thread (it re-registers before it parks on any other thread)
///   or a waker of the task that returned `Pending` (it re-registers unless the registered
///   waker `will_wake` the polling task).
///
/// # Synchronization
///
/// - Items: the producer writes a slot, then stores `tail` with `Release`; the consumer's
///   `Acquire` load of `tail` pairs with it, so the slot's contents are visible before it reads
///   them.
/// - Slot reuse: the consumer moves a value out, then stores `head` with `Release`; the
///   producer's `Acquire` load of `head` pairs with it, so the read is done before the slot is
///   overwritten.
/// - Wake-up (Dekker): the consumer stores `sleeping = true`, `fence(SeqCst)`, then loads `tail`
///   and `disconnected`; the producer stores `tail` (or `disconnected`), `fence(SeqCst)`, then
///   loads `sleeping`. The two fences are totally ordered, so at least one side sees the other's
///   store: either the consumer sees the item and does not park (or returns it instead of
///   `Pending`), or the producer sees `sleeping` and wakes it (an unpark before the park makes
///   the park return at once; a wake before `Pending` is returned makes the executor poll the
///   task again).
/// - Waiter handle (no lock): the consumer writes `waiter` between its `Acquire` CAS
///   `IDLE -> WRITING` and its `Release` store of `IDLE`; the producer reads it between its
///   `Acquire` CAS `IDLE -> BORROWED` and its `Release` store of `IDLE`. Each Acquire CAS reads
///   the other side's Release store (or an older `IDLE`), so the producer sees the handle the
///   consumer wrote last, and the consumer overwrites it only after the producer's `unpark`
///   through it returned. The producer never waits: if its CAS finds `WRITING`, it skips the
///   unpark. That loses no wake-up: the consumer registers before it stores `sleeping = true`
///   and fences, so if its fence came first in the total order the producer's CAS (after the
///   producer's fence) would read that registration's `IDLE` or later, not `WRITING`. Reading
///   `WRITING` means the consumer's fence comes after the producer's, and its re-check sees the
///   push. The consumer may wait for the producer (one `unpark` or waker clone long), never the
///   reverse. A task's waker is cloned under `BORROWED` and woken after the producer released
///   the slot, so a waker that polls the task at once on the producer's thread cannot find the
///   slot borrowed by its own caller.
/// - Disconnect: a half's `Release` store of `disconnected` pairs with the other's `Acquire`
///   load, so a consumer that sees the producer gone also sees all its pushes.
/// - Drop: the last `Arc` owner drops the items left in `head..tail`; the `Arc`'s own counter
///   orders both halves' last accesses before that.
struct Shared<T> {
    /// Index of the next item to pop. Consumer-owned.
    head: CachePadded<AtomicUsize>,
    /// Index of the next slot to push into. Producer-owned.
    tail: CachePadded<AtomicUsize>,
    /// The consumer's "I am about to sleep" announcement and the thread to unpark. The producer
    /// reads `sleeping` on every push of a parking ring, so it has its own cache line, which
    /// stays shared and quiet while the consumer is awake (the handle is written once per
    /// thread change, not per park).
    sleeper: CachePadded<Sleeper>,
    /// Set by whichever half is dropped first.
    disconnected: AtomicBool,
    /// The storage; see the invariants for which slots are initialized.
    slots: Box<[UnsafeCell<MaybeUninit<T>>]>,
    /// `capacity - 1`.
    mask: usize,
    /// The consumer's wait strategy, fixed at construction (it decides whether pushes fence).
    strategy: WaitStrategy,
}

/// See [`Shared`]'s `# Invariants` and `# Synchronization`.
struct Sleeper {
    /// `true` from the consumer's announcement until it wakes up (a parked thread) or is
    /// polled again and finds an item or the end (a task).
    sleeping: AtomicBool,
    /// Who may touch `waiter`: [`IDLE`], [`BORROWED`] or [`WRITING`].
    access: AtomicUsize,
    /// What to wake, registered before the consumer first waits that way (a consumer that
    /// moved to another thread, or is polled by another task, registers again). `None` until
    /// the first wait.
    waiter: UnsafeCell<Option<Waiter>>,
}

/// A consumer waiting for the ring: a parked thread or an async task.
enum Waiter {
    /// A thread in [`Consumer::pop_timeout`]'s park phase.
    Thread(Thread),
    /// A task that got `Pending` from [`Consumer::poll_pop`].
    Task(Waker),
}

/// [`Sleeper::access`]: nobody touches the thread handle.
const IDLE: usize = 0;
/// [`Sleeper::access`]: the producer is reading the handle to unpark the consumer.
const BORROWED: usize = 1;
/// [`Sleeper::access`]: the consumer is writing its new thread into the handle.
const WRITING: usize = 2;

impl Sleeper {
    /// The consumer's side: makes `waiter` the one the producer wakes. Waits only while the
    /// producer is inside one `unpark` (or waker clone) through the old handle.
    #[cold]
    fn register(&self, waiter: Waiter) {
        // Acquire: pairs with the producer's Release store of `IDLE` after its borrow, so its
        // read of the old handle is done before we overwrite it.
        while self
            .access
            .compare_exchange_weak(IDLE, WRITING, Ordering::Acquire, Ordering::Relaxed)
            .is_err()
        {
            hint::spin_loop();
        }
        let old = self.waiter.with_mut(|p| {
            // SAFETY: we hold `WRITING`, so the producer does not read the handle (it reads
            // only while holding `BORROWED`, which it cannot take from `WRITING`); we are the
            // only consumer, so nobody else writes it.
            unsafe { p.replace(Some(waiter)) }
        });
        // Release: a producer whose Acquire CAS reads this `IDLE` sees the handle just written.
        self.access.store(IDLE, Ordering::Release);
        // Dropped outside the slot: a waker's drop runs the executor's code.
        drop(old);
    }

    /// The consumer's side: whether the registered waiter is a waker that wakes the same task
    /// as `waker`, so that registering again can be skipped.
    fn holds_waker_for(&self, waker: &Waker) -> bool {
        self.waiter.with(|p| {
            // SAFETY: only the consumer (our caller) writes the handle, so no write races this
            // read; the producer's concurrent reads are reads.
            matches!(unsafe { &*p }, Some(Waiter::Task(w)) if w.will_wake(waker))
        })
    }

    /// The producer's side: unparks the registered consumer thread. Never waits.
    #[cold]
    fn unpark(&self) {
        // Acquire: pairs with the consumer's Release store of `IDLE` after it wrote the handle.
        match self
            .access
            .compare_exchange(IDLE, BORROWED, Ordering::Acquire, Ordering::Relaxed)
        {
            Ok(_) => {
                let task = self.waiter.with(|p| {
                    // SAFETY: we hold `BORROWED`, so the consumer does not write the handle
                    // until we store `IDLE` below.
                    match unsafe { &*p } {
                        Some(Waiter::Thread(thread)) => {
                            thread.unpark();
                            None
                        }
                        Some(Waiter::Task(waker)) => Some(waker.clone()),
                        None => None,
                    }
                });
                // Release: our read of the handle happens before the consumer's Acquire CAS
                // lets it overwrite the handle.
                self.access.store(IDLE, Ordering::Release);
                // Woken after the slot is released: an executor may poll the task right here,
                // on this thread, and that poll may register a new waker.
                if let Some(waker) = task {
                    waker.wake();
                }
            }
            // The consumer is registering: it has not announced the park that this wake-up is
            // for, and its re-check after the fence will see what we published (see
            // `# Synchronization`).
            Err(state) => debug_assert_eq!(state, WRITING, "one producer borrows at a time"),
        }
    }
}

// SAFETY: `Shared` is shared between exactly one producer and one consumer. Values of `T` are
// moved from the producer's thread to the consumer's (hence `T: Send`), never shared: the
// invariants give each slot to one half at a time, with the Release/Acquire pairs on `head` and
// `tail` ordering the hand-over. The waiter handle (`Thread` and `Waker` are `Send + Sync`) is
// written only by the consumer under the `access` protocol, which keeps the producer's reads
// out while it writes. Every other field is an atomic.
unsafe impl<T: Send> Sync for Shared<T> {}

impl<T> Shared<T> {
    /// The number of slots.
    #[inline]
    fn capacity(&self) -> usize {
        self.mask + 1
    }

    /// The slot holding index `index`.
    #[inline]
    fn slot(&self, index: usize) -> &UnsafeCell<MaybeUninit<T>> {
        debug_assert!(self.slots.len().is_power_of_two() && self.mask == self.slots.len() - 1);
        &self.slots[index & self.mask]
    }

    /// Items from `head` to `tail`; checks the ring invariant.
    #[inline]
    fn distance(&self, head: usize, tail: usize) -> usize {
        let d = tail.wrapping_sub(head);
        debug_assert!(
            d <= self.capacity(),
            "ring invariant broken: head {head}, tail {tail}, capacity {}",
            self.capacity()
        );
        d
    }

    /// The producer's half of the wake-up handshake, after it published `tail` or
    /// `disconnected`.
    #[inline]
    fn wake_if_sleeping(&self) {
        // SeqCst: the Dekker fence, paired with the consumer's fence in `park_until`: either it
        // sees what we just stored, or we see its `sleeping = true` below.
        fence(Ordering::SeqCst);
        // Relaxed: the fence above orders this load for the handshake; the thread handle is
        // published by the `access` protocol in `Sleeper::unpark`, not by this flag.
        if self.sleeper.sleeping.load(Ordering::Relaxed) {
            self.sleeper.unpark();
        }
    }
}

impl<T> Drop for Shared<T> {
    fn drop(&mut self) {
        // Relaxed: we are the last owner; the Arc's release/acquire on its counter already
        // ordered both halves' index stores before this drop.
        let head = self.head.load(Ordering::Relaxed);
        let tail = self.tail.load(Ordering::Relaxed);
        let _ = self.distance(head, tail);
        let mut index = head;
        while index != tail {
            self.slot(index).with_mut(|p| {
                // SAFETY: `index` is in `head..tail`, so the slot holds an initialized value
                // that nobody moved out (invariants); it is dropped here once, and the ring is
                // going away, so it is never read again.
                unsafe { p.cast::<T>().drop_in_place() }
            });
            index = index.wrapping_add(1);
        }
    }
}

/// The pushing half of a ring.
///
/// Can be moved between threads, but references from different threads are not allowed: it is
/// `Send` (when `T: Send`) but not `Sync`. It cannot be cloned, so there is one producer.
///
/// ```
/// fn assert_send<T: Send>() {}
/// assert_send::<tvdatafeed::ring::Producer<String>>();
/// ```
///
/// ```compile_fail
/// fn assert_sync<T: Sync>() {}
/// assert_sync::<tvdatafeed::ring::Producer<String>>();
/// ```
///
/// ```compile_fail
/// let (producer, _consumer) = tvdatafeed::ring::channel::<u8>(1);
/// let _second = producer.clone();
/// ```
pub struct Producer<T> {
    shared: Arc<Shared<T>>,
    /// Our copy of `shared.tail` (we are its only writer).
    tail: Cell<usize>,
    /// The last `shared.head` we loaded: a lower bound on the real head.
    cached_head: Cell<usize>,
    /// `shared.strategy.parks()`, kept here so the push path reads no shared line for it.
    wakes: bool,
}

impl<T> Producer<T> {
    /// Pushes `value`, or hands it back if the ring is full. Never blocks.
    ///
    /// With a parking [`WaitStrategy`], a push that finds the consumer asleep wakes it.
    ///
    /// # Errors
    ///
    /// [`PushError::Full`] with `value` when the ring is full.
    ///
    /// # Examples
    ///
    /// ```
    /// use tvdatafeed::ring::{self, PushError};
    ///
    /// let (mut producer, _consumer) = ring::channel(1);
    /// assert_eq!(producer.push(1), Ok(()));
    /// assert!(matches!(producer.push(2), Err(PushError::Full(2))));
    /// ```
    #[inline]
    pub fn push(&mut self, value: T) -> Result<(), PushError<T>> {
        let shared = &*self.shared;
        let tail = self.tail.get();
        if shared.distance(self.cached_head.get(), tail) == shared.capacity() {
            // Acquire: pairs with the consumer's Release store of `head`, so its reads of the
            // slots it freed are done before we overwrite them.
            let head = shared.head.load(Ordering::Acquire);
            self.cached_head.set(head);
            if shared.distance(head, tail) == shared.capacity() {
                return Err(PushError::Full(value));
            }
        }
        shared.slot(tail).with_mut(|p| {
            // SAFETY: `tail - head < capacity`, so slot `tail` is outside `head..tail`: it is
            // uninitialized and the consumer will not touch it until we publish `tail + 1`.
            unsafe { p.write(MaybeUninit::new(value)) }
        });
        let next = tail.wrapping_add(1);
        // Release: publishes the slot write above to the consumer's Acquire load of `tail`.
        shared.tail.store(next, Ordering::Release);
        self.tail.set(next);
        if self.wakes {
            shared.wake_if_sleeping();
        }
        Ok(())
    }

    /// Pushes items from `items` while the ring has room, and returns how many it took.
    /// Never blocks; items the ring had no room for stay in the iterator.
    ///
    /// The batch is published with one `tail` store and, for a parking [`WaitStrategy`], one
    /// wake-up check: the `fence(SeqCst)` that [`Producer::push`] pays per item is paid once
    /// per batch. If `items` panics, the items already taken are published.
    ///
    /// # Examples
    ///
    /// ```
    /// let (mut producer, mut consumer) = tvdatafeed::ring::channel(4);
    /// let mut items = 0..6;
    /// assert_eq!(producer.push_iter(&mut items), 4);
    /// assert_eq!(items.next(), Some(4)); // the ring was full: 4 and 5 stayed behind
    /// assert_eq!(consumer.pop(), Ok(0));
    /// ```
    pub fn push_iter(&mut self, items: &mut impl Iterator<Item = T>) -> usize {
        let shared = &*self.shared;
        let tail = self.tail.get();
        let mut free = shared.capacity() - shared.distance(self.cached_head.get(), tail);
        if free < shared.capacity() {
            // Acquire: as in `push`; refreshed once so that the batch can use all the room.
            let head = shared.head.load(Ordering::Acquire);
            self.cached_head.set(head);
            free = shared.capacity() - shared.distance(head, tail);
        }

        /// Publishes what was written when the batch ends, also if `items` unwinds.
        struct Publish<'a, T> {
            shared: &'a Shared<T>,
            tail: &'a Cell<usize>,
            written: usize,
            wakes: bool,
        }
        impl<T> Drop for Publish<'_, T> {
            fn drop(&mut self) {
                if self.written == 0 {
                    return;
                }
                let next = self.tail.get().wrapping_add(self.written);
                // Release: publishes every slot write of the batch to the consumer's Acquire
                // load of `tail`.
                self.shared.tail.store(next, Ordering::Release);
                self.tail.set(next);
                if self.wakes {
                    self.shared.wake_if_sleeping();
                }
            }
        }

        let mut publish = Publish {
            shared,
            tail: &self.tail,
            written: 0,
            wakes: self.wakes,
        };
        while publish.written < free {
            let Some(value) = items.next() else { break };
            shared
                .slot(tail.wrapping_add(publish.written))
                .with_mut(|p| {
                    // SAFETY: `written < free`, so `tail + written` is below `head + capacity` for a
                    // `head` no newer than the real one: the slot is outside `head..tail`,
                    // uninitialized, and the consumer will not touch it until `tail` is published.
                    unsafe { p.write(MaybeUninit::new(value)) }
                });
            publish.written += 1;
        }
        publish.written
    }

    /// The number of items in the ring, at some instant during the call.
    ///
    /// # Examples
    ///
    /// ```
    /// let (mut producer, _consumer) = tvdatafeed::ring::channel(2);
    /// producer.push('a').expect("room");
    /// assert_eq!(producer.len(), 1);
    /// ```
    #[must_use]
    pub fn len(&self) -> usize {
        // Relaxed: a size estimate publishes nothing and reads no slot.
        let head = self.shared.head.load(Ordering::Relaxed);
        self.shared.distance(head, self.tail.get())
    }

    /// Whether the ring holds no item, at some instant during the call.
    ///
    /// # Examples
    ///
    /// ```
    /// let (producer, _consumer) = tvdatafeed::ring::channel::<u8>(2);
    /// assert!(producer.is_empty());
    /// ```
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// How many items the ring holds at most (the requested capacity rounded up to a power of
    /// two).
    ///
    /// # Examples
    ///
    /// ```
    /// let (producer, _consumer) = tvdatafeed::ring::channel::<u8>(5);
    /// assert_eq!(producer.capacity(), 8);
    /// ```
    #[must_use]
    pub fn capacity(&self) -> usize {
        self.shared.capacity()
    }

    /// Whether the [`Consumer`] has been dropped: pushes still succeed until the ring is full,
    /// but nobody will read them.
    ///
    /// # Examples
    ///
    /// ```
    /// let (producer, consumer) = tvdatafeed::ring::channel::<u8>(2);
    /// assert!(!producer.is_abandoned());
    /// drop(consumer);
    /// assert!(producer.is_abandoned());
    /// ```
    #[must_use]
    pub fn is_abandoned(&self) -> bool {
        // Acquire: pairs with the consumer's Release store in its Drop.
        self.shared.disconnected.load(Ordering::Acquire)
    }
}

impl<T> Drop for Producer<T> {
    fn drop(&mut self) {
        // Release: a consumer that sees the flag (Acquire) also sees every push we made.
        self.shared.disconnected.store(true, Ordering::Release);
        // Whatever the strategy: a consumer parked (or about to) must learn we are gone.
        self.shared.wake_if_sleeping();
    }
}

impl<T> fmt::Debug for Producer<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Producer")
            .field("len", &self.len())
            .field("capacity", &self.capacity())
            .field("strategy", &self.shared.strategy)
            .finish_non_exhaustive()
    }
}

/// The popping half of a ring.
///
/// Can be moved between threads, but references from different threads are not allowed: it is
/// `Send` (when `T: Send`) but not `Sync`. It cannot be cloned, so there is one consumer.
///
/// ```
/// fn assert_send<T: Send>() {}
/// assert_send::<tvdatafeed::ring::Consumer<String>>();
/// ```
///
/// ```compile_fail
/// fn assert_sync<T: Sync>() {}
/// assert_sync::<tvdatafeed::ring::Consumer<String>>();
/// ```
///
/// ```compile_fail
/// let (_producer, consumer) = tvdatafeed::ring::channel::<u8>(1);
/// let _second = consumer.clone();
/// ```
pub struct Consumer<T> {
    shared: Arc<Shared<T>>,
    /// Our copy of `shared.head` (we are its only writer).
    head: Cell<usize>,
    /// The last `shared.tail` we loaded: a lower bound on the real tail.
    cached_tail: Cell<usize>,
    /// The thread registered in `shared.sleeper.waiter`, if it is a thread: we register again
    /// when we park on another one (or after a task registered its waker).
    registered: Option<ThreadId>,
    /// We left `shared.sleeper.sleeping` set when [`Consumer::poll_pop`] returned `Pending`:
    /// the next poll that returns an item or the end clears it.
    announced: bool,
}

impl<T> Consumer<T> {
    /// Pops the oldest item. Never blocks.
    ///
    /// # Errors
    ///
    /// [`PopError::Empty`] when the ring holds no item. That is not final; check
    /// [`is_abandoned`](Self::is_abandoned) to know whether more can come.
    ///
    /// # Examples
    ///
    /// ```
    /// use tvdatafeed::ring::{self, PopError};
    ///
    /// let (mut producer, mut consumer) = ring::channel(2);
    /// producer.push(7).expect("room");
    /// assert_eq!(consumer.pop(), Ok(7));
    /// assert_eq!(consumer.pop(), Err(PopError::Empty));
    /// ```
    #[inline]
    pub fn pop(&mut self) -> Result<T, PopError> {
        let shared = &*self.shared;
        let head = self.head.get();
        if head == self.cached_tail.get() {
            // Acquire: pairs with the producer's Release store of `tail`, so the slots it
            // filled are visible.
            let tail = shared.tail.load(Ordering::Acquire);
            let _ = shared.distance(head, tail);
            self.cached_tail.set(tail);
            if head == tail {
                return Err(PopError::Empty);
            }
        }
        let value = shared.slot(head).with(|p| {
            // SAFETY: `head` is in `head..tail` for a `tail` we loaded with Acquire, so the slot
            // was initialized and published by the producer, and stays ours until we store
            // `head + 1`. Reading moves the value out; the store below marks the slot free, so
            // it is not read or dropped again.
            unsafe { p.cast::<T>().read() }
        });
        // Release: our read of the slot happens before the producer's Acquire load of `head`
        // lets it overwrite the slot.
        shared.head.store(head.wrapping_add(1), Ordering::Release);
        self.head.set(head.wrapping_add(1));
        Ok(value)
    }

    /// Pops up to `max` items into `f`, oldest first, and returns how many. Never blocks.
    ///
    /// The shared indices are read at most once and written once per call, so draining a
    /// burst costs one cache-line hand-over instead of one per item. If `f` panics, the items
    /// already passed to it count as popped and the rest stay in the ring.
    ///
    /// # Examples
    ///
    /// ```
    /// let (mut producer, mut consumer) = tvdatafeed::ring::channel(8);
    /// for v in 0..5 {
    ///     producer.push(v).expect("room");
    /// }
    /// let mut got = Vec::new();
    /// assert_eq!(consumer.pop_batch(3, |v| got.push(v)), 3);
    /// assert_eq!(consumer.pop_batch(usize::MAX, |v| got.push(v)), 2);
    /// assert_eq!(got, [0, 1, 2, 3, 4]);
    /// ```
    pub fn pop_batch(&mut self, max: usize, mut f: impl FnMut(T)) -> usize {
        let shared = &*self.shared;
        let head = self.head.get();
        let mut available = shared.distance(head, self.cached_tail.get());
        if available < max {
            // Acquire: as in `pop`.
            let tail = shared.tail.load(Ordering::Acquire);
            self.cached_tail.set(tail);
            available = shared.distance(head, tail);
        }
        let n = available.min(max);
        if n == 0 {
            return 0;
        }

        /// Publishes the new head when the batch ends, also if `f` unwinds.
        struct Publish<'a, T> {
            shared: &'a Shared<T>,
            head: &'a Cell<usize>,
            popped: usize,
        }
        impl<T> Drop for Publish<'_, T> {
            fn drop(&mut self) {
                let next = self.head.get().wrapping_add(self.popped);
                // Release: as in `pop`, for every slot of the batch at once.
                self.shared.head.store(next, Ordering::Release);
                self.head.set(next);
            }
        }

        let mut publish = Publish {
            shared,
            head: &self.head,
            popped: 0,
        };
        for offset in 0..n {
            let value = shared.slot(head.wrapping_add(offset)).with(|p| {
                // SAFETY: `head + offset` is in `head..tail` for a `tail` loaded with Acquire,
                // and below the head we will publish, so the slot is initialized, ours, and
                // (counted in `popped` before `f` runs) moved out exactly once.
                unsafe { p.cast::<T>().read() }
            });
            publish.popped = offset + 1;
            f(value);
        }
        n
    }

    /// Pops the oldest item, waiting up to `timeout` for one with the ring's [`WaitStrategy`].
    ///
    /// Items pushed before the producer was dropped are still returned; only an empty ring
    /// whose producer is gone yields [`PopTimeoutError::Abandoned`], so a wait never hangs on a
    /// dead producer. A parked consumer is woken by the push that ends its wait (no timeout is
    /// needed for progress; the timeout only bounds the wait).
    ///
    /// # Errors
    ///
    /// - [`PopTimeoutError::Timeout`] if nothing arrived in time.
    /// - [`PopTimeoutError::Abandoned`] if the ring is empty and the producer dropped.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::time::Duration;
    /// use tvdatafeed::ring::{self, PopTimeoutError};
    ///
    /// let (mut producer, mut consumer) = ring::channel(2);
    /// producer.push(1).expect("room");
    /// assert_eq!(consumer.pop_timeout(Duration::from_millis(10)), Ok(1));
    /// assert_eq!(consumer.pop_timeout(Duration::from_millis(1)), Err(PopTimeoutError::Timeout));
    /// drop(producer);
    /// assert_eq!(consumer.pop_timeout(Duration::from_secs(60)), Err(PopTimeoutError::Abandoned));
    /// ```
    pub fn pop_timeout(&mut self, timeout: Duration) -> Result<T, PopTimeoutError> {
        if let Some(result) = self.poll_once() {
            return result;
        }
        let deadline = Deadline::after(timeout);
        let mut round: u64 = 0;
        loop {
            round += 1;
            if round % DEADLINE_CHECK_EVERY == 1 && deadline.remaining().is_none() {
                return Err(PopTimeoutError::Timeout);
            }
            match self.shared.strategy {
                WaitStrategy::Spin => hint::spin_loop(),
                WaitStrategy::SpinYield { spins } => {
                    if round <= u64::from(spins) {
                        hint::spin_loop();
                    } else {
                        thread::yield_now();
                    }
                }
                WaitStrategy::SpinYieldPark { spins, yields } => {
                    if round <= u64::from(spins) {
                        hint::spin_loop();
                    } else if round <= u64::from(spins) + u64::from(yields) {
                        thread::yield_now();
                    } else {
                        return self.park_until(deadline);
                    }
                }
            }
            if let Some(result) = self.poll_once() {
                return result;
            }
        }
    }

    /// One non-blocking attempt: an item, `Abandoned`, or `None` (keep waiting).
    #[inline]
    fn poll_once(&mut self) -> Option<Result<T, PopTimeoutError>> {
        if let Ok(value) = self.pop() {
            return Some(Ok(value));
        }
        // Acquire: pairs with the producer's Release store in its Drop, so the pop below sees
        // every item it pushed before leaving.
        if self.shared.disconnected.load(Ordering::Acquire) {
            return Some(self.pop().map_err(|_| PopTimeoutError::Abandoned));
        }
        None
    }

    /// Pops the oldest item, or registers the polling task to be woken when one is pushed or
    /// the producer is dropped: the async counterpart of [`pop_timeout`](Self::pop_timeout),
    /// for any executor.
    ///
    /// Returns `Ready(Some(item))`, `Ready(None)` once the producer is gone and every item it
    /// pushed was returned (final: later polls return `Ready(None)` too), or `Pending`. Before
    /// it returns `Pending` it has registered `cx`'s waker, announced the wait and re-checked
    /// the ring after a `fence(SeqCst)` (the handshake of a parking thread), so a push or drop
    /// that this poll did not see wakes the task: no wake-up is lost. The producer wakes only
    /// a task that announced a wait, never on a push while the task is awake; between that
    /// wake and the next poll, each push wakes it again (for tokio, one atomic operation on an
    /// already-notified task). The waker is cloned only when it changes ([`Waker::will_wake`]).
    ///
    /// With a strategy that never parks ([`WaitStrategy::Spin`], [`WaitStrategy::SpinYield`])
    /// pushes skip the wake-up check, so `Pending` comes with the task woken at once: the
    /// executor polls it again, busy-polling as the strategy asks. The producer's drop wakes
    /// the task whatever the strategy.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::task::{Context, Poll, Waker};
    ///
    /// let (mut producer, mut consumer) = tvdatafeed::ring::channel(2);
    /// let mut cx = Context::from_waker(Waker::noop());
    /// assert_eq!(consumer.poll_pop(&mut cx), Poll::Pending);
    /// producer.push(1).expect("room");
    /// assert_eq!(consumer.poll_pop(&mut cx), Poll::Ready(Some(1)));
    /// drop(producer);
    /// assert_eq!(consumer.poll_pop(&mut cx), Poll::Ready(None));
    /// ```
    #[must_use = "a `Pending` registered the task; an item returned here is lost if unused"]
    pub fn poll_pop(&mut self, cx: &mut Context<'_>) -> Poll<Option<T>> {
        if let Some(result) = self.poll_once() {
            return self.ready(result);
        }
        if !self.shared.strategy.parks() {
            // The producer never looks for a sleeper on a push: ask to be polled again.
            cx.waker().wake_by_ref();
            return Poll::Pending;
        }
        let sleeper = &self.shared.sleeper;
        if !sleeper.holds_waker_for(cx.waker()) {
            // A new task (or the first wait, or a thread parked last): the producer must wake
            // this one. Done before the announcement below, which the handshake relies on.
            self.registered = None;
            sleeper.register(Waiter::Task(cx.waker().clone()));
        }
        if !self.announced {
            // Relaxed: the fence below orders this store for the handshake.
            sleeper.sleeping.store(true, Ordering::Relaxed);
            self.announced = true;
        }
        // SeqCst: the Dekker fence, paired with the producer's in `wake_if_sleeping`: either
        // the re-check below sees its `tail`/`disconnected` store, or it sees our
        // `sleeping = true` and wakes the waker registered above.
        fence(Ordering::SeqCst);
        match self.poll_once() {
            Some(result) => self.ready(result),
            None => Poll::Pending,
        }
    }

    /// `poll_pop`'s answer for a non-blocking attempt that found something; clears a wait
    /// announced by an earlier `Pending`, so pushes stop waking the task.
    #[inline]
    fn ready(&mut self, result: Result<T, PopTimeoutError>) -> Poll<Option<T>> {
        if self.announced {
            // Relaxed: clearing the flag only spares the producer needless wake-ups; a stale
            // `true` costs one spurious wake, which a poll absorbs.
            self.shared.sleeper.sleeping.store(false, Ordering::Relaxed);
            self.announced = false;
        }
        Poll::Ready(result.ok())
    }

    /// The park phase: announce, re-check, park; until an item, abandonment or the deadline.
    #[cold]
    fn park_until(&mut self, deadline: Deadline) -> Result<T, PopTimeoutError> {
        let shared = Arc::clone(&self.shared);
        let sleeper = &shared.sleeper;
        let me = thread::current();
        if self.registered != Some(me.id()) {
            // First park, or the consumer moved: the producer must unpark this thread now.
            // Done before the announcement below, which the handshake argument relies on.
            self.registered = Some(me.id());
            sleeper.register(Waiter::Thread(me));
        }
        // This loop leaves `sleeping` cleared, whatever a task's last `Pending` left.
        self.announced = false;
        loop {
            // Relaxed: the fence below orders this store for the handshake.
            sleeper.sleeping.store(true, Ordering::Relaxed);
            // SeqCst: the Dekker fence, paired with the producer's in `wake_if_sleeping`:
            // either the re-check below sees its `tail`/`disconnected` store, or it sees our
            // `sleeping = true` and unparks us.
            fence(Ordering::SeqCst);
            let result = match self.poll_once() {
                Some(result) => Some(result),
                None => deadline
                    .remaining()
                    .map_or(Some(Err(PopTimeoutError::Timeout)), |left| {
                        thread::park_timeout(left);
                        None
                    }),
            };
            // Relaxed: clearing the flag only spares the producer needless unparks; a stale
            // `true` costs one spurious wake-up, which the loop absorbs.
            sleeper.sleeping.store(false, Ordering::Relaxed);
            if let Some(result) = result.or_else(|| self.poll_once()) {
                return result;
            }
        }
    }

    /// The number of items in the ring, at some instant during the call.
    ///
    /// # Examples
    ///
    /// ```
    /// let (mut producer, consumer) = tvdatafeed::ring::channel(2);
    /// producer.push(1).expect("room");
    /// assert_eq!(consumer.len(), 1);
    /// ```
    #[must_use]
    pub fn len(&self) -> usize {
        // Relaxed: a size estimate publishes nothing and reads no slot.
        let tail = self.shared.tail.load(Ordering::Relaxed);
        self.shared.distance(self.head.get(), tail)
    }

    /// Whether the ring holds no item, at some instant during the call.
    ///
    /// # Examples
    ///
    /// ```
    /// let (_producer, consumer) = tvdatafeed::ring::channel::<u8>(2);
    /// assert!(consumer.is_empty());
    /// ```
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// How many items the ring holds at most.
    ///
    /// # Examples
    ///
    /// ```
    /// let (_producer, consumer) = tvdatafeed::ring::channel::<u8>(3);
    /// assert_eq!(consumer.capacity(), 4);
    /// ```
    #[must_use]
    pub fn capacity(&self) -> usize {
        self.shared.capacity()
    }

    /// Whether the [`Producer`] has been dropped. Items it pushed may still be in the ring.
    ///
    /// # Examples
    ///
    /// ```
    /// let (mut producer, mut consumer) = tvdatafeed::ring::channel(2);
    /// producer.push(1).expect("room");
    /// drop(producer);
    /// assert!(consumer.is_abandoned());
    /// assert_eq!(consumer.pop(), Ok(1));
    /// ```
    #[must_use]
    pub fn is_abandoned(&self) -> bool {
        // Acquire: pairs with the producer's Release store in its Drop.
        self.shared.disconnected.load(Ordering::Acquire)
    }

    /// The strategy [`pop_timeout`](Self::pop_timeout) waits with.
    ///
    /// # Examples
    ///
    /// ```
    /// use tvdatafeed::ring::{self, WaitStrategy};
    ///
    /// let (_producer, consumer) = ring::channel::<u8>(2);
    /// assert_eq!(consumer.wait_strategy(), WaitStrategy::default());
    /// ```
    #[must_use]
    pub fn wait_strategy(&self) -> WaitStrategy {
        self.shared.strategy
    }
}

impl<T> Drop for Consumer<T> {
    fn drop(&mut self) {
        // Release: pairs with the producer's Acquire load in `is_abandoned`.
        self.shared.disconnected.store(true, Ordering::Release);
    }
}

impl<T> fmt::Debug for Consumer<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Consumer")
            .field("len", &self.len())
            .field("capacity", &self.capacity())
            .field("strategy", &self.shared.strategy)
            .finish_non_exhaustive()
    }
}

/// [`Producer::push`] failed; the value is handed back.
#[non_exhaustive]
#[derive(Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum PushError<T> {
    /// The ring is full. Not fatal: retry later, or drop the value and count it as missed.
    #[error("full ring buffer")]
    Full(T),
}

impl<T> PushError<T> {
    /// The value that could not be pushed.
    ///
    /// # Examples
    ///
    /// ```
    /// let (mut producer, _consumer) = tvdatafeed::ring::channel(1);
    /// producer.push(1).expect("room");
    /// assert_eq!(producer.push(2).map_err(|e| e.into_inner()), Err(2));
    /// ```
    pub fn into_inner(self) -> T {
        match self {
            Self::Full(value) => value,
        }
    }
}

/// Prints `Full(_)`, so `T` need not be `Debug` (and no payload reaches a log).
impl<T> fmt::Debug for PushError<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Full(_) => f.write_str("Full(_)"),
        }
    }
}

/// [`Consumer::pop`] found nothing.
#[non_exhaustive]
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum PopError {
    /// The ring is empty. Not fatal: more may come unless the producer is gone
    /// ([`Consumer::is_abandoned`]).
    #[error("empty ring buffer")]
    Empty,
}

/// [`Consumer::pop_timeout`] returned without an item.
#[non_exhaustive]
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum PopTimeoutError {
    /// Nothing arrived before the timeout. Not fatal: wait again.
    #[error("timed out waiting on ring buffer")]
    Timeout,
    /// The ring is empty and the producer was dropped: nothing will ever arrive. Fatal for
    /// this consumer; drop it.
    #[error("ring buffer abandoned by its producer")]
    Abandoned,
}

/// A ring could not be created with the requested capacity.
#[non_exhaustive]
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum CapacityError {
    /// A capacity of 0 was requested; a ring holds at least one item.
    #[error("ring buffer capacity must be at least 1")]
    Zero,
    /// The capacity (here the requested one) rounds up past [`MAX_CAPACITY`].
    #[error("ring buffer capacity {0} is too large")]
    TooLarge(usize),
    /// The capacity (rounded up) times the size of a slot exceeds `isize::MAX` bytes, the
    /// most one allocation can hold. Ask for fewer items, or box large items.
    #[error("ring buffer capacity {capacity} of {item_bytes}-byte slots exceeds isize::MAX bytes")]
    TooManyBytes {
        /// The capacity, rounded up to a power of two.
        capacity: usize,
        /// The size of one slot, in bytes.
        item_bytes: usize,
    },
}

#[cfg(test)]
mod tests {
    //! `poll_pop`'s wake-up contract, with a waker that counts its wakes: the exhaustive proof
    //! is loom's (`loom-tests/tests/ring_async.rs`); these pin the counts on real atomics.

    use std::{
        task::{Context, Poll, Wake, Waker},
        time::Duration,
    };

    use super::{WaitStrategy, channel, with_strategy};
    use crate::sync::plain::{
        Arc,
        atomic::{AtomicUsize, Ordering::Relaxed},
    };

    /// A waker that counts how often it was woken.
    #[derive(Debug, Default)]
    struct Counter {
        wakes: AtomicUsize,
    }

    impl Wake for Counter {
        fn wake(self: Arc<Self>) {
            self.wake_by_ref();
        }
        fn wake_by_ref(self: &Arc<Self>) {
            self.wakes.fetch_add(1, Relaxed);
        }
    }

    fn counter() -> (Arc<Counter>, Waker) {
        let c = Arc::new(Counter::default());
        (Arc::clone(&c), Waker::from(c))
    }

    fn wakes(c: &Counter) -> usize {
        c.wakes.load(Relaxed)
    }

    #[test]
    fn ring_poll_pop_woken_by_the_push_after_pending_and_not_while_awake() {
        let (mut producer, mut consumer) = channel::<u32>(4);
        let (count, waker) = counter();
        let mut cx = Context::from_waker(&waker);
        assert_eq!(consumer.poll_pop(&mut cx), Poll::Pending);
        assert_eq!(wakes(&count), 0, "no wake before a push");
        producer.push(0).expect("room");
        assert_eq!(wakes(&count), 1, "the push after Pending wakes the task");
        assert_eq!(consumer.poll_pop(&mut cx), Poll::Ready(Some(0)));
        // Awake (the last poll returned an item): pushes do not wake.
        producer.push(1).expect("room");
        producer.push(2).expect("room");
        assert_eq!(wakes(&count), 1, "a push woke a task that was awake");
        assert_eq!(consumer.poll_pop(&mut cx), Poll::Ready(Some(1)));
        assert_eq!(consumer.poll_pop(&mut cx), Poll::Ready(Some(2)));
        assert_eq!(consumer.poll_pop(&mut cx), Poll::Pending);
        drop(producer);
        assert_eq!(wakes(&count), 2, "the producer's drop wakes a pending task");
        assert_eq!(consumer.poll_pop(&mut cx), Poll::Ready(None));
        assert_eq!(
            consumer.poll_pop(&mut cx),
            Poll::Ready(None),
            "the end is final"
        );
    }

    #[test]
    fn ring_poll_pop_returns_items_pushed_before_the_drop_then_the_end() {
        let (mut producer, mut consumer) = channel::<u32>(4);
        producer.push(7).expect("room");
        drop(producer);
        let mut cx = Context::from_waker(Waker::noop());
        assert_eq!(consumer.poll_pop(&mut cx), Poll::Ready(Some(7)));
        assert_eq!(consumer.poll_pop(&mut cx), Poll::Ready(None));
    }

    #[test]
    fn ring_poll_pop_keeps_one_waker_per_task_and_none_after_the_ring() {
        let (mut producer, mut consumer) = channel::<u32>(4);
        let (first, waker) = counter();
        let mut cx = Context::from_waker(&waker);
        assert_eq!(consumer.poll_pop(&mut cx), Poll::Pending);
        assert_eq!(consumer.poll_pop(&mut cx), Poll::Pending);
        // Ours, the waker's, and the ring's one clone: polling again did not clone again.
        assert_eq!(Arc::strong_count(&first), 3);
        let (second, other) = counter();
        let mut cx = Context::from_waker(&other);
        assert_eq!(consumer.poll_pop(&mut cx), Poll::Pending);
        assert_eq!(
            Arc::strong_count(&first),
            2,
            "the replaced waker was not dropped"
        );
        producer.push(1).expect("room");
        assert_eq!(
            (wakes(&first), wakes(&second)),
            (0, 1),
            "the new task is woken"
        );
        drop(producer);
        drop(consumer);
        assert_eq!(Arc::strong_count(&second), 2, "the ring leaked its waker");
    }

    #[test]
    fn ring_poll_pop_with_a_strategy_that_never_parks_wakes_itself() {
        let (mut producer, mut consumer) =
            with_strategy::<u32>(4, WaitStrategy::Spin).expect("valid capacity");
        let (count, waker) = counter();
        let mut cx = Context::from_waker(&waker);
        assert_eq!(consumer.poll_pop(&mut cx), Poll::Pending);
        assert_eq!(
            wakes(&count),
            1,
            "Pending without a wake-up to come must wake at once"
        );
        producer.push(3).expect("room");
        assert_eq!(consumer.poll_pop(&mut cx), Poll::Ready(Some(3)));
    }

    #[test]
    fn ring_a_thread_parks_after_a_task_waited_and_is_still_woken() {
        let (mut producer, mut consumer) = channel::<u32>(4);
        let (_count, waker) = counter();
        assert_eq!(
            consumer.poll_pop(&mut Context::from_waker(&waker)),
            Poll::Pending
        );
        let pusher = crate::sync::plain::thread::Builder::new()
            .name("tv-test-pusher".into())
            .spawn(move || {
                // Lets the consumer reach its park first, most of the time.
                crate::sync::plain::thread::park_timeout(Duration::from_millis(50));
                producer.push(9).expect("room");
                producer
            })
            .expect("spawn");
        let deadline = crate::sync::Deadline::after(Duration::from_secs(4));
        assert_eq!(consumer.pop_timeout(Duration::from_secs(5)), Ok(9));
        assert!(
            deadline.remaining().is_some(),
            "the park after a task's wait was not woken by the push"
        );
        drop(pusher.join().expect("pusher panicked"));
    }
}
