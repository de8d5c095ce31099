//! The seis registry: key → entry (a shared value plus its consumers), read without locks.
//!
//! The I/O thread looks up the consumers of a seis on every message, so reads must never wait
//! for a writer. The registry keeps an immutable map behind an `arc_swap::ArcSwap`: a reader
//! `load`s the current snapshot (wait-free in practice, no lock, no shared counter bumped) and
//! looks the key up in it. Writers (subscribe, unsubscribe, add or remove a consumer) take the
//! one writer mutex, clone the map, change the clone and publish it with `swap`; the map
//! clone copies `Arc` pointers only. Work that may be slow (building a value, allocating a
//! consumer) happens before the lock is taken.
//!
//! What this module may not do: block a reader, do I/O or call user code under the writer
//! lock, or hand out a consumer that a finished `remove_consumer` removed.
//!
//! # Synchronization
//!
//! - `snapshot` (`ArcSwap`): `swap` publishes a fully built map; a `load` that starts after a
//!   `swap` returned sees that map or a later one (arc-swap's own `SeqCst` protocol). So a
//!   removal is linearizable: once [`Registry::remove_consumer`] returns, no reader that loads
//!   afterwards finds the consumer.
//! - `writer` (`Mutex`): serializes the load-clone-modify-swap sequence, so no writer's update
//!   is lost and publishing needs no compare-and-swap loop (hence no `rcu`). It also guards the
//!   consumer-id counter and the id → key index. It is the only lock; no other lock is taken
//!   while it is held. Each writer loads the snapshot it modifies only after taking it.
//!
//! # Key methods and panics
//!
//! The key type's `Hash`, `Eq` and `Clone` run under the writer lock (cloning the map clones
//! every key; looking a key up hashes it), so they must not block or take this registry's
//! writer paths. If one panics, the registry is left as it was: a writer builds the whole next
//! map and clones every key it needs before it publishes anything, then publishes with one
//! `swap`, then updates the id → key index with operations that cannot panic (they hash only
//! [`ConsumerId`]s). The panic poisons the lock, which the next writer takes over.
//! - In-flight readers: a reader that loaded an older snapshot may still deliver to a consumer
//!   that was just removed. Such a reader keeps that snapshot, and through it the consumer's
//!   `Arc`, alive until it drops the snapshot. So the [`Removed`] handle's `Arc` becomes unique
//!   exactly when no snapshot that contains the consumer is left: [`Removed::is_quiescent`]
//!   checks that (with `Arc::get_mut`, whose `Acquire` pairs with each reader's `Release`
//!   decrement, so every delivery happened before), and [`Removed::wait_unused`] waits for it.
//!   Readers must therefore not keep clones of a consumer beyond the snapshot; the API hands
//!   out `&C` borrowed from the snapshot for that reason.
//! - Under `--cfg tvdatafeed_loom`, `ArcSwap` (which loom cannot see into) is replaced by a
//!   stand-in over `sync::Mutex<Arc<_>>` with the same `load`/`swap` surface, so loom checks
//!   this module's protocol rather than arc-swap's internals.

use std::{collections::HashMap, fmt, hash::Hash, sync::PoisonError, time::Duration};

use crate::sync::{Arc, Deadline, Mutex, MutexGuard, thread};

#[cfg(not(tvdatafeed_loom))]
mod cell {
    use crate::sync::Arc;

    /// The published map: `arc_swap::ArcSwap` outside loom.
    pub(super) type SnapshotCell<T> = arc_swap::ArcSwap<T>;
    /// What `load` returns.
    pub(super) type Guard<T> = arc_swap::Guard<Arc<T>>;

    /// The map a guard points to.
    pub(super) fn get<T>(guard: &Guard<T>) -> &T {
        guard
    }
}

#[cfg(tvdatafeed_loom)]
mod cell {
    use std::sync::PoisonError;

    use crate::sync::{Arc, Mutex};

    /// The loom stand-in for `ArcSwap`: the same `load`/`swap` surface over a mutex, so loom
    /// sees every publication and every read.
    pub(super) struct SnapshotCell<T> {
        current: Mutex<Arc<T>>,
    }

    /// What `load` returns.
    pub(super) type Guard<T> = Arc<T>;

    impl<T> SnapshotCell<T> {
        pub(super) fn from_pointee(value: T) -> Self {
            Self {
                current: Mutex::new(Arc::new(value)),
            }
        }

        pub(super) fn load(&self) -> Guard<T> {
            Arc::clone(&self.current.lock().unwrap_or_else(PoisonError::into_inner))
        }

        pub(super) fn swap(&self, value: Arc<T>) -> Arc<T> {
            std::mem::replace(
                &mut *self.current.lock().unwrap_or_else(PoisonError::into_inner),
                value,
            )
        }
    }

    /// The map a guard points to.
    pub(super) fn get<T>(guard: &Guard<T>) -> &T {
        guard
    }
}

/// Identifies one consumer in a [`Registry`], like mio's `Token`. Never reused by a registry.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ConsumerId(u64);

impl ConsumerId {
    /// The raw number, for logs.
    #[must_use]
    pub fn get(self) -> u64 {
        self.0
    }
}

/// One key's value and its consumers, as of one snapshot. Immutable: a change publishes a new
/// entry that shares the same value `Arc`.
pub struct Entry<V, C> {
    /// The same `Arc` for the key's whole life in the registry (until `remove`).
    value: Arc<V>,
    /// In the order they were added.
    consumers: Box<[(ConsumerId, Arc<C>)]>,
}

impl<V, C> Entry<V, C> {
    /// The key's value.
    #[must_use]
    pub fn value(&self) -> &Arc<V> {
        &self.value
    }

    /// The consumers to deliver to, oldest first. Borrowed from the snapshot, so the snapshot
    /// (and with it the removal bookkeeping) outlives every delivery.
    pub fn consumers(&self) -> impl ExactSizeIterator<Item = (ConsumerId, &C)> + '_ {
        self.consumers.iter().map(|(id, c)| (*id, &**c))
    }
}

impl<V: fmt::Debug, C> fmt::Debug for Entry<V, C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Entry")
            .field("value", &self.value)
            .field(
                "consumers",
                &self.consumers.iter().map(|(id, _)| id).collect::<Vec<_>>(),
            )
            .finish()
    }
}

type Map<K, V, C> = HashMap<K, Arc<Entry<V, C>>>;

/// A consistent, immutable view of the registry, from [`Registry::load`].
///
/// Hold it only while delivering: it keeps the consumers it contains alive (see the module's
/// `# Synchronization`). Outside loom it is an arc-swap guard, which is cheapest when dropped
/// soon and not stored.
pub struct Snapshot<K, V, C> {
    guard: cell::Guard<Map<K, V, C>>,
}

impl<K: Hash + Eq, V, C> Snapshot<K, V, C> {
    /// The entry for `key`, if the key is registered.
    #[must_use]
    pub fn get(&self, key: &K) -> Option<&Entry<V, C>> {
        cell::get(&self.guard).get(key).map(|e| &**e)
    }

    /// Every key and its entry, in no particular order.
    pub fn iter(&self) -> impl Iterator<Item = (&K, &Entry<V, C>)> + '_ {
        cell::get(&self.guard).iter().map(|(k, e)| (k, &**e))
    }

    /// The number of keys.
    #[must_use]
    pub fn len(&self) -> usize {
        cell::get(&self.guard).len()
    }

    /// Whether no key is registered.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl<K, V, C> fmt::Debug for Snapshot<K, V, C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Snapshot")
            .field("keys", &cell::get(&self.guard).len())
            .finish_non_exhaustive()
    }
}

/// What only writers touch, under the writer lock.
struct Writer<K> {
    /// The next [`ConsumerId`]; ids are never reused.
    next_id: u64,
    /// Which key each live consumer belongs to, so removal needs only the id.
    owners: HashMap<ConsumerId, K>,
}

/// The copy-on-write registry of keys (seises), their values and their consumers.
///
/// Readers call [`load`](Self::load) and never block; writers serialize on one mutex. See the
/// module docs for the `# Synchronization` argument.
pub struct Registry<K, V, C> {
    /// The current map. See the module's `# Synchronization`.
    snapshot: cell::SnapshotCell<Map<K, V, C>>,
    /// The writer lock and the writers' bookkeeping.
    writer: Mutex<Writer<K>>,
}

impl<K: Hash + Eq + Clone, V, C> Default for Registry<K, V, C> {
    fn default() -> Self {
        Self::new()
    }
}

impl<K: Hash + Eq + Clone, V, C> Registry<K, V, C> {
    /// An empty registry.
    #[must_use]
    pub fn new() -> Self {
        Self {
            snapshot: cell::SnapshotCell::from_pointee(HashMap::new()),
            writer: Mutex::new(Writer {
                next_id: 0,
                owners: HashMap::new(),
            }),
        }
    }

    /// The current snapshot. Never blocks, never allocates.
    #[must_use]
    pub fn load(&self) -> Snapshot<K, V, C> {
        Snapshot {
            guard: self.snapshot.load(),
        }
    }

    /// The value for `key`, inserting `make()` if the key is absent.
    ///
    /// Callers racing on one key all get the same `Arc` (pointer-equal). `make` runs outside
    /// the writer lock, so it may run in a caller that then loses the race; its value is
    /// dropped.
    pub fn get_or_insert(&self, key: K, make: impl FnOnce() -> V) -> Arc<V> {
        if let Some(entry) = self.load().get(&key) {
            return Arc::clone(&entry.value);
        }
        let value = Arc::new(make());
        let writer = self.lock_writer();
        let current = self.snapshot.load();
        if let Some(entry) = cell::get(&current).get(&key) {
            return Arc::clone(&entry.value);
        }
        let entry = Arc::new(Entry {
            value: Arc::clone(&value),
            consumers: Box::new([]),
        });
        let next = Self::modified(current, |map| {
            map.insert(key, entry);
        });
        self.publish(&writer, next);
        value
    }

    /// Adds `consumer` to `key`'s entry and returns its id, or `None` (dropping `consumer`) if
    /// the key is not registered.
    ///
    /// If the key's `Hash` or `Clone` panics, the panic propagates and the registry is
    /// unchanged (see the module's `# Key methods and panics`).
    pub fn insert_consumer(&self, key: &K, consumer: C) -> Option<ConsumerId> {
        let consumer = Arc::new(consumer);
        let mut writer = self.lock_writer();
        let current = self.snapshot.load();
        let old = Arc::clone(cell::get(&current).get(key)?);
        let id = ConsumerId(writer.next_id);
        let consumers = old
            .consumers
            .iter()
            .cloned()
            .chain(std::iter::once((id, consumer)))
            .collect();
        let entry = Arc::new(Entry {
            value: Arc::clone(&old.value),
            consumers,
        });
        drop(old);
        // Everything that runs key methods comes before the publish: the index's copy of the
        // key, then the next map.
        let owner_key = key.clone();
        let next = Self::modified(current, |map| replace_entry(map, key, entry));
        writer.owners.reserve(1);
        self.publish(&writer, next);
        // Cannot panic: hashes a `ConsumerId`, and the room is reserved.
        writer.owners.insert(id, owner_key);
        writer.next_id += 1;
        Some(id)
    }

    /// A fresh consumer id that names no registered consumer (and never will: ids are never
    /// reused), for an owner of several consumers to be known by (a many-seis consumer).
    pub fn reserve_id(&self) -> ConsumerId {
        let mut writer = self.lock_writer();
        let id = ConsumerId(writer.next_id);
        writer.next_id += 1;
        id
    }

    /// Removes consumer `id`; `None` if it is not (or no longer) registered.
    ///
    /// Linearizable: once this returns, no [`load`](Self::load) that starts afterwards sees the
    /// consumer. Readers that loaded before may still be delivering to it; the returned
    /// [`Removed`] tells when they are done.
    ///
    /// If the key's `Hash` panics, the panic propagates and the registry is unchanged.
    pub fn remove_consumer(&self, id: ConsumerId) -> Option<Removed<C>> {
        let mut writer = self.lock_writer();
        let key = writer.owners.get(&id)?;
        // Loaded under the lock: a snapshot loaded before it could miss a concurrent writer's
        // update, which our publish would then undo.
        let current = self.snapshot.load();
        let Some(old) = cell::get(&current).get(key).cloned() else {
            debug_assert!(false, "owner index names a missing key");
            return None;
        };
        let removed = old
            .consumers
            .iter()
            .find(|(c, _)| *c == id)
            .map(|(_, c)| Arc::clone(c));
        debug_assert!(removed.is_some(), "owner index names a missing consumer");
        let consumers = old
            .consumers
            .iter()
            .filter(|(c, _)| *c != id)
            .cloned()
            .collect();
        let entry = Arc::new(Entry {
            value: Arc::clone(&old.value),
            consumers,
        });
        drop(old);
        let next = Self::modified(current, |map| replace_entry(map, key, entry));
        self.publish(&writer, next);
        // Cannot panic: hashes a `ConsumerId`.
        writer.owners.remove(&id);
        removed.map(|consumer| Removed { id, consumer })
    }

    /// Removes `key` with all its consumers; `None` if absent. Linearizable like
    /// [`remove_consumer`](Self::remove_consumer).
    ///
    /// If the key's `Hash`, `Eq` or `Clone` panics, the panic propagates and the registry is
    /// unchanged.
    pub fn remove(&self, key: &K) -> Option<(Arc<V>, Vec<Removed<C>>)> {
        let mut writer = self.lock_writer();
        let current = self.snapshot.load();
        let old = Arc::clone(cell::get(&current).get(key)?);
        let removed: Vec<Removed<C>> = old
            .consumers
            .iter()
            .map(|(id, c)| Removed {
                id: *id,
                consumer: Arc::clone(c),
            })
            .collect();
        let value = Arc::clone(&old.value);
        drop(old);
        let next = Self::modified(current, |map| {
            map.remove(key);
        });
        self.publish(&writer, next);
        for r in &removed {
            // Cannot panic: hashes a `ConsumerId`.
            writer.owners.remove(&r.id);
        }
        Some((value, removed))
    }

    fn lock_writer(&self) -> MutexGuard<'_, Writer<K>> {
        // A writer that panicked left no half-published state (publication is one `swap`),
        // so a poisoned lock is safe to take over.
        self.writer.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Clone-modify: the next map, built aside. Runs key methods (the clone, and whatever
    /// `modify` looks up), so a panic here leaves the registry as it was.
    fn modified(
        current: cell::Guard<Map<K, V, C>>,
        modify: impl FnOnce(&mut Map<K, V, C>),
    ) -> Map<K, V, C> {
        let mut next = cell::get(&current).clone();
        // Release our own hold on the old map before publishing, so it can be freed at once.
        drop(current);
        modify(&mut next);
        next
    }

    /// Publishes `next` with one `swap`, which runs no key method. The `MutexGuard` argument
    /// proves the caller holds the writer lock, so `next` was built from the latest map and
    /// nobody else stores meanwhile.
    fn publish(&self, _writer: &MutexGuard<'_, Writer<K>>, next: Map<K, V, C>) {
        let old = self.snapshot.swap(Arc::new(next));
        reclaim(old);
    }
}

/// Replaces the entry of `key`, which the map holds, without cloning the key.
fn replace_entry<K: Hash + Eq, V, C>(map: &mut Map<K, V, C>, key: &K, entry: Arc<Entry<V, C>>) {
    match map.get_mut(key) {
        Some(slot) => *slot = entry,
        None => debug_assert!(false, "the entry to replace is missing"),
    }
}

/// Drops a replaced map on the writer's thread rather than a reader's.
///
/// Freeing a map of a thousand entries costs microseconds; if a reader held the last
/// reference, that reader (the I/O thread) would pay it. Readers hold a snapshot for
/// nanoseconds, so a few yields usually see them gone. Under loom the wait is skipped: it only
/// moves work between threads, and loom needs no extra schedules.
fn reclaim<T>(old: Arc<T>) {
    #[cfg(not(tvdatafeed_loom))]
    let old = {
        let mut old = old;
        for _ in 0..64 {
            if Arc::get_mut(&mut old).is_some() {
                break;
            }
            thread::yield_now();
        }
        old
    };
    drop(old);
}

impl<K, V, C> fmt::Debug for Registry<K, V, C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Registry")
            .field("keys", &cell::get(&self.snapshot.load()).len())
            .finish_non_exhaustive()
    }
}

/// A consumer taken out of the registry, kept until no in-flight reader can still use it.
pub struct Removed<C> {
    id: ConsumerId,
    consumer: Arc<C>,
}

impl<C> Removed<C> {
    /// The removed consumer's id.
    #[must_use]
    pub fn id(&self) -> ConsumerId {
        self.id
    }

    /// Whether every snapshot that contained the consumer has been released, so no reader can
    /// deliver to it any more (and every delivery happened before this returned `true`).
    #[must_use]
    pub fn is_quiescent(&mut self) -> bool {
        // `get_mut` loads the count with Acquire, pairing with each reader's Release decrement
        // when it dropped its snapshot.
        Arc::get_mut(&mut self.consumer).is_some()
    }

    /// Waits up to `timeout` until [`is_quiescent`](Self::is_quiescent), then returns the
    /// consumer; on timeout, hands `self` back.
    ///
    /// Readers do not signal when they drop a snapshot, so this polls: it yields, then sleeps
    /// in steps of at most 100 µs (`park_timeout`). Under loom it only yields, since loom's
    /// park has no timeout.
    ///
    /// # Errors
    ///
    /// `Err(self)` if a reader still held the consumer after `timeout`.
    pub fn wait_unused(mut self, timeout: Duration) -> Result<C, Self> {
        let deadline = Deadline::after(timeout);
        let mut round = 0_u32;
        loop {
            if self.is_quiescent() {
                return Arc::try_unwrap(self.consumer).map_err(|consumer| Self {
                    id: self.id,
                    consumer,
                });
            }
            let Some(left) = deadline.remaining() else {
                return Err(self);
            };
            round = round.saturating_add(1);
            if cfg!(tvdatafeed_loom) || round < 64 {
                thread::yield_now();
            } else {
                thread::park_timeout(left.min(Duration::from_micros(100)));
            }
        }
    }
}

impl<C> fmt::Debug for Removed<C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Removed")
            .field("id", &self.id)
            .finish_non_exhaustive()
    }
}

#[cfg(all(test, not(tvdatafeed_loom)))]
mod tests {
    use std::collections::HashSet;

    use super::*;
    use crate::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

    const ROUNDS: usize = if cfg!(debug_assertions) {
        2_000
    } else {
        20_000
    };

    fn spawn<T: Send + 'static>(
        name: &str,
        f: impl FnOnce() -> T + Send + 'static,
    ) -> thread::JoinHandle<T> {
        thread::Builder::new()
            .name(name.into())
            .spawn(f)
            .expect("spawn test thread")
    }

    #[test]
    fn get_or_insert_race_yields_one_pointer_equal_value() {
        let registry: Arc<Registry<u32, String, ()>> = Arc::new(Registry::new());
        let made = Arc::new(AtomicUsize::new(0));
        let handles: Vec<_> = (0..3)
            .map(|t| {
                let registry = Arc::clone(&registry);
                let made = Arc::clone(&made);
                spawn(&format!("tv-test-writer-{t}"), move || {
                    (0..200)
                        .map(|key| {
                            registry.get_or_insert(key, || {
                                made.fetch_add(1, Ordering::Relaxed);
                                format!("seis {key}")
                            })
                        })
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        let results: Vec<Vec<Arc<String>>> = handles
            .into_iter()
            .map(|h| h.join().expect("writer panicked"))
            .collect();
        for key in 0..200 {
            let winner = registry.get_or_insert(key as u32, || unreachable!("key exists"));
            for result in &results {
                assert!(Arc::ptr_eq(&result[key], &winner), "key {key}");
            }
        }
        assert!(made.load(Ordering::Relaxed) >= 200);
        assert_eq!(registry.load().len(), 200);
    }

    #[test]
    fn removed_consumer_is_invisible_to_later_loads() {
        let registry: Registry<&str, (), u32> = Registry::new();
        registry.get_or_insert("BINANCE:BTCUSDT 1", || ());
        let a = registry
            .insert_consumer(&"BINANCE:BTCUSDT 1", 1)
            .expect("key exists");
        let b = registry
            .insert_consumer(&"BINANCE:BTCUSDT 1", 2)
            .expect("key exists");
        assert_eq!(registry.insert_consumer(&"missing", 3), None);
        let removed = registry.remove_consumer(a).expect("registered");
        assert_eq!(removed.id(), a);
        let snapshot = registry.load();
        let ids: Vec<_> = snapshot
            .get(&"BINANCE:BTCUSDT 1")
            .expect("key still there")
            .consumers()
            .map(|(id, c)| (id, *c))
            .collect();
        assert_eq!(ids, [(b, 2)]);
        assert!(registry.remove_consumer(a).is_none(), "removal is once");
        assert_eq!(removed.wait_unused(Duration::ZERO).ok(), Some(1));
    }

    #[test]
    fn removed_consumer_is_quiescent_only_after_older_snapshots_drop() {
        let registry: Registry<u8, (), String> = Registry::new();
        registry.get_or_insert(1, || ());
        let id = registry
            .insert_consumer(&1, "cb".to_owned())
            .expect("key exists");
        let in_flight = registry.load();
        let mut removed = registry.remove_consumer(id).expect("registered");
        assert!(!removed.is_quiescent(), "an older snapshot still holds it");
        let removed = removed
            .wait_unused(Duration::from_millis(2))
            .expect_err("still held: must time out");
        assert_eq!(in_flight.get(&1).map(|e| e.consumers().len()), Some(1));
        drop(in_flight);
        assert_eq!(
            removed.wait_unused(Duration::from_secs(5)).ok().as_deref(),
            Some("cb")
        );
    }

    #[test]
    fn remove_key_returns_its_consumers() {
        let registry: Registry<u8, &str, u8> = Registry::new();
        let value = registry.get_or_insert(1, || "seis");
        let ids: HashSet<_> = (0..3)
            .map(|c| registry.insert_consumer(&1, c).expect("key exists"))
            .collect();
        let (removed_value, removed) = registry.remove(&1).expect("present");
        assert!(Arc::ptr_eq(&value, &removed_value));
        assert_eq!(removed.iter().map(Removed::id).collect::<HashSet<_>>(), ids);
        assert!(registry.load().is_empty());
        assert!(registry.remove(&1).is_none());
        for id in ids {
            assert!(registry.remove_consumer(id).is_none());
        }
    }

    /// A key whose `Hash` or `Clone` panics on demand: at the `n`-th call on this thread after
    /// [`arm`], counting from 0.
    #[derive(Debug, PartialEq, Eq)]
    struct Touchy(u8);

    thread_local! {
        static ARMED: std::cell::Cell<Option<(&'static str, u32)>> =
            const { std::cell::Cell::new(None) };
    }

    fn arm(method: &'static str, nth: u32) {
        ARMED.with(|a| a.set(Some((method, nth))));
    }

    fn disarm() {
        ARMED.with(|a| a.set(None));
    }

    fn maybe_panic(method: &'static str) {
        ARMED.with(|a| match a.get() {
            Some((m, 0)) if m == method => {
                a.set(None);
                panic!("Touchy::{method} panics on demand");
            }
            Some((m, n)) if m == method => a.set(Some((m, n - 1))),
            _ => {}
        });
    }

    impl std::hash::Hash for Touchy {
        fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
            maybe_panic("hash");
            self.0.hash(state);
        }
    }

    impl Clone for Touchy {
        fn clone(&self) -> Self {
            maybe_panic("clone");
            Self(self.0)
        }
    }

    /// The id → key index names exactly the consumers of the published snapshot.
    fn assert_index_matches_snapshot(registry: &Registry<Touchy, (), u32>, context: &str) {
        let writer = registry.lock_writer();
        let snapshot = registry.load();
        let mut published = 0;
        for (key, entry) in snapshot.iter() {
            for (id, _) in entry.consumers() {
                published += 1;
                assert_eq!(
                    writer.owners.get(&id),
                    Some(key),
                    "{context}: consumer {id:?} is published but not indexed"
                );
            }
        }
        assert_eq!(
            writer.owners.len(),
            published,
            "{context}: the index names consumers that are not published"
        );
    }

    #[test]
    fn a_panicking_key_method_leaves_the_index_and_the_snapshot_in_step() {
        type Op = fn(&Registry<Touchy, (), u32>, ConsumerId);
        let ops: [(&str, Op); 4] = [
            ("insert_consumer", |r, _| {
                let _ = r.insert_consumer(&Touchy(1), 11);
            }),
            ("remove_consumer", |r, id| {
                let _ = r.remove_consumer(id);
            }),
            ("remove", |r, _| {
                let _ = r.remove(&Touchy(1));
            }),
            ("get_or_insert", |r, _| {
                let _ = r.get_or_insert(Touchy(7), || ());
            }),
        ];
        let mut panics = 0;
        for method in ["hash", "clone"] {
            // Every call of the method during the operation, in turn, is the one that panics.
            for nth in 0..12 {
                for (name, op) in ops {
                    let registry: Registry<Touchy, (), u32> = Registry::new();
                    for k in 0..3 {
                        registry.get_or_insert(Touchy(k), || ());
                    }
                    let id = registry.insert_consumer(&Touchy(1), 10).expect("key");
                    registry.insert_consumer(&Touchy(2), 20).expect("key");
                    arm(method, nth);
                    let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                        op(&registry, id)
                    }));
                    disarm();
                    panics += usize::from(result.is_err());
                    let context = format!("{name} with {method} call {nth} panicking");
                    assert_index_matches_snapshot(&registry, &context);
                    // And the registry still works: the lock's poison is taken over.
                    let again = registry.insert_consumer(&Touchy(0), 1).expect("key");
                    assert!(registry.remove_consumer(again).is_some(), "{context}");
                    assert_index_matches_snapshot(&registry, &context);
                }
            }
        }
        assert!(panics > 20, "the key methods panicked only {panics} times");
    }

    /// Writers churn consumers while readers check every snapshot is consistent and that a
    /// removed consumer is never delivered to after its removal became quiescent.
    #[test]
    fn readers_see_consistent_snapshots_under_writer_churn() {
        struct Consumer {
            retired: AtomicBool,
            deliveries: AtomicUsize,
        }
        let registry: Arc<Registry<u8, u8, Consumer>> = Arc::new(Registry::new());
        for key in 0..4 {
            registry.get_or_insert(key, || key);
        }
        let stop = Arc::new(AtomicBool::new(false));
        let readers: Vec<_> = (0..2)
            .map(|r| {
                let registry = Arc::clone(&registry);
                let stop = Arc::clone(&stop);
                spawn(&format!("tv-test-reader-{r}"), move || {
                    let mut loads = 0_u64;
                    // Relaxed: a stop flag; the join publishes the results.
                    while !stop.load(Ordering::Relaxed) {
                        let snapshot = registry.load();
                        for key in 0..4 {
                            let entry = snapshot.get(&key).expect("keys are never removed");
                            assert_eq!(**entry.value(), key);
                            let mut seen = HashSet::new();
                            for (id, consumer) in entry.consumers() {
                                assert!(seen.insert(id), "duplicate consumer {id:?}");
                                // Acquire: pairs with the writer's Release store below.
                                assert!(
                                    !consumer.retired.load(Ordering::Acquire),
                                    "delivered to a consumer after it became quiescent"
                                );
                                consumer.deliveries.fetch_add(1, Ordering::Relaxed);
                            }
                        }
                        loads += 1;
                    }
                    loads
                })
            })
            .collect();
        let writer = {
            let registry = Arc::clone(&registry);
            spawn("tv-test-writer", move || {
                let mut live = Vec::new();
                for round in 0..ROUNDS {
                    let key = (round % 4) as u8;
                    let consumer = Consumer {
                        retired: AtomicBool::new(false),
                        deliveries: AtomicUsize::new(0),
                    };
                    live.push(
                        registry
                            .insert_consumer(&key, consumer)
                            .expect("key exists"),
                    );
                    if live.len() > 3 {
                        let id = live.remove(round % live.len());
                        let mut removed = registry.remove_consumer(id).expect("registered");
                        let deadline = Deadline::after(Duration::from_secs(10));
                        while !removed.is_quiescent() {
                            assert!(deadline.remaining().is_some(), "reader never released");
                            thread::yield_now();
                        }
                        // Release: a reader that still found it would see the flag (it cannot).
                        removed.consumer.retired.store(true, Ordering::Release);
                    }
                }
            })
        };
        writer.join().expect("writer panicked");
        stop.store(true, Ordering::Relaxed);
        for reader in readers {
            assert!(reader.join().expect("reader panicked") > 0);
        }
    }
}
