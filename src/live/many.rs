//! One consumer, many seises: [`ManySubscription`] and the [`SeisEvent`]s it yields.
//!
//! A strategy that trades 500 symbols holds one ring, not 500: every event of every seis it
//! takes comes out of that ring in the order `tv-io` produced them across seises, each tagged
//! with its seis.
//!
//! # How it is wired
//!
//! - **Delivery** (`tv-io`): one fanout slot per consumer whose ring items carry a *tag*
//!   (`Tagged`); the slow-consumer policy keeps its per-seis state per tag and one backlog
//!   for the consumer (see `fanout`'s "Many-seis consumers"). The ring stays single-producer:
//!   `tv-io` is its only writer.
//! - **Routing** (the registry): one route (a registry consumer id with a [`ConsumerSlot`] of
//!   the consumer's fanout index and the seis' tag) per (seis, consumer). A tag is taken from
//!   the feed's counter (never 0, never reused), so a route can only ever feed the consumer
//!   and seis it was made for.
//! - **The handle's side**: [`ManyShared`], the consumer's routes (tag → seis and route id),
//!   shared between its handle (which reads a local copy, refreshed when `version` moves) and
//!   the feed (`del_consumer`, `del_seis`, which change it).
//!
//! Adding a seis: the `AddSeises` command (and its reply) first, then the registry route, then
//! the routes table, so `tv-io` never routes a tag it has no state for. Removing one: the
//! registry route first, then the routes table, then the `RemoveSeis` command, after which
//! `tv-io` drops what of it waits and never pushes it again. Events of it already in the ring
//! are skipped by the handle: after [`ManySubscription::remove`] returns, none of them is
//! returned.
//!
//! # Locks
//!
//! `ManyShared::routes` is a leaf lock: held only to read or change the map, never while
//! the registry's writer lock or the feed's consumer table is taken, never across a wait.
//! The feed takes it while it holds the consumer table (table, then routes), never the other
//! way round.
//!
//! [`ConsumerSlot`]: super::ConsumerSlot

use std::{
    collections::HashMap,
    fmt,
    sync::PoisonError,
    task::{Context, Poll},
    time::Duration,
};

use super::{
    Command, ConsumerCounters, ConsumerEntry, ConsumerOptions, ConsumerSlot, LiveEvent, LiveFeed,
    RecvError, Seis, SeisId, Shared, Tagged, command, gate::Gate, stats::LocalStats,
};
use crate::{
    Error, Interval, Symbol, clock,
    registry::ConsumerId,
    ring::{Consumer, PopTimeoutError},
    sync::{
        self,
        plain::{
            self, Mutex,
            atomic::{AtomicU64, Ordering},
        },
    },
};

/// An event of one of a many-seis consumer's seises: the seis and the [`LiveEvent`].
///
/// Per seis the [`LiveEvent`] contract holds unchanged (closed bars once, in order, across
/// reconnects; `Revised`, `Lagged`, `Disconnected`, `Reconnected`, `Failed` are about this
/// seis). Holding the seis costs one `Arc` clone per event.
#[derive(Debug, Clone)]
pub struct SeisEvent {
    seis: sync::Arc<Seis>,
    event: LiveEvent,
}

impl SeisEvent {
    /// The seis this event is about.
    pub fn seis(&self) -> &sync::Arc<Seis> {
        &self.seis
    }

    /// The seis' number in the feed.
    pub fn id(&self) -> SeisId {
        self.seis.id()
    }

    /// The seis' symbol.
    pub fn symbol(&self) -> &Symbol {
        self.seis.symbol()
    }

    /// The seis' interval.
    pub fn interval(&self) -> Interval {
        self.seis.interval()
    }

    /// The event.
    pub fn event(&self) -> &LiveEvent {
        &self.event
    }

    /// The event, by value.
    pub fn into_event(self) -> LiveEvent {
        self.event
    }

    /// The seis and the event.
    pub fn into_parts(self) -> (sync::Arc<Seis>, LiveEvent) {
        (self.seis, self.event)
    }
}

/// One seis of a many-seis consumer.
#[derive(Debug, Clone)]
pub(crate) struct Route {
    seis: sync::Arc<Seis>,
    /// Its registry consumer id (the route `tv-io` finds it by).
    id: ConsumerId,
}

/// A many-seis consumer's routes, shared by its handle and its feed.
///
/// Invariant: `routes` holds exactly the tags whose registry route was inserted and not yet
/// removed by this consumer's handle or feed; `version` moves (`Release`, under the lock) after
/// every change, so a handle that sees it unmoved (`Acquire`) may use its local copy.
#[derive(Debug)]
pub(crate) struct ManyShared {
    pub(crate) slot: u32,
    routes: Mutex<HashMap<u64, Route>>,
    version: AtomicU64,
}

impl ManyShared {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<u64, Route>> {
        self.routes.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Changes the routes and moves the version.
    fn change<T>(&self, f: impl FnOnce(&mut HashMap<u64, Route>) -> T) -> T {
        let mut routes = self.lock();
        let out = f(&mut routes);
        // Release: a handle that loads the new version (Acquire) and then locks sees this
        // change; the lock alone orders it too, the version only saves the handle the lock.
        self.version.fetch_add(1, Ordering::Release);
        out
    }

    /// Takes the route with registry id `route` out, if it is this consumer's; its tag.
    pub(crate) fn take_route(&self, route: ConsumerId) -> Option<u64> {
        self.change(|routes| {
            let tag = routes
                .iter()
                .find(|(_, r)| r.id == route)
                .map(|(t, _)| *t)?;
            routes.remove(&tag);
            Some(tag)
        })
    }

    /// Takes every route out; their registry ids.
    pub(crate) fn take_all(&self) -> Vec<ConsumerId> {
        self.change(|routes| routes.drain().map(|(_, r)| r.id).collect())
    }
}

/// A pull consumer of many seises: one ring, the events of all its seises in the order the
/// engine produced them, each a [`SeisEvent`] naming its seis. From
/// [`LiveFeed::subscribe_many`].
///
/// # Guarantees
///
/// - **Across seises**: closed bars, revisions and connection events come out in the order
///   `tv-io` produced them, whatever the seis; a slow reader changes when, never in which
///   order (one backlog per consumer: nothing newer of any seis overtakes what waits).
///   Updates (if asked for) are coalesced per seis when the ring is full, and a
///   set-aside update comes after what waited; a [`LiveEvent::Lagged`] names its seis and
///   comes before what waited.
/// - **Per seis**: exactly the [`LiveEvent`] contract of a single-seis [`Subscription`]
///   (every closed bar once, in order, with the server's final values, across reconnects,
///   each seis with its own `Disconnected`/`Reconnected`).
/// - **Add and remove**: a seis added with [`ManySubscription::add`] is delivered from the
///   moment it returns; after [`ManySubscription::remove`] returns (or a
///   [`LiveFeed::del_seis`] that released the seis' last hold), none of its events is
///   returned, and the others go on.
/// - A full ring of this consumer never slows the engine or any other consumer.
///
/// It is `Send` but not `Sync`. Dropping it removes the consumer (its seises stay
/// subscribed). A consumer takes no hold on its seises (see [`Seis`]'s `# Holds`).
///
/// [`Subscription`]: super::Subscription
///
/// # Examples
///
/// ```
/// use std::time::Duration;
/// use tvdatafeed::{LiveEvent, LiveFeed, sim::{Sim, SimConfig}};
///
/// let sim = Sim::start(SimConfig::default())?;
/// let feed = LiveFeed::builder().endpoint(sim.url())?.build()?;
/// let btc = feed.new_seis("BINANCE:BTCUSDT", "1S")?;
/// let eth = feed.new_seis("BINANCE:ETHUSDT", "1S")?;
/// let mut bars = feed.subscribe_many(&[&btc, &eth])?;
/// let mut closed = 0;
/// while closed < 2 {
///     let e = bars.recv_timeout(Duration::from_secs(5))?;
///     if let LiveEvent::Closed(bar) = e.event() {
///         assert_eq!(*bar, sim.expected_bar(e.symbol(), e.interval(), bar.time));
///         closed += 1;
///     }
/// }
/// bars.remove(&eth)?; // no ETHUSDT event from here on
/// assert!(feed.shutdown(Duration::from_secs(5)).is_clean());
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub struct ManySubscription {
    id: ConsumerId,
    rx: Option<Consumer<Tagged>>,
    gate: plain::Arc<Gate>,
    counters: plain::Arc<ConsumerCounters>,
    feed: std::sync::Weak<Shared>,
    many: plain::Arc<ManyShared>,
    /// The handle's copy of `many.routes`, as of `version`.
    local: HashMap<u64, sync::Arc<Seis>>,
    version: u64,
    stats: LocalStats,
    /// Owned by a callback consumer's thread ([`LiveFeed::new_consumer_many`]): the feed
    /// removes the consumer (`del_consumer`, `shutdown`), never this handle's drop, so that a
    /// consumer ended by a panic stays in `stats()` (`panicked`) until then.
    callback: bool,
}

impl fmt::Debug for ManySubscription {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ManySubscription")
            .field("id", &self.id)
            .field("seises", &self.local.len())
            .finish_non_exhaustive()
    }
}

impl ManySubscription {
    /// This consumer's id (for [`LiveFeed::del_consumer`] and [`super::ConsumerStats`]).
    pub fn id(&self) -> ConsumerId {
        self.id
    }

    /// The seises this consumer takes now, in no particular order.
    pub fn seises(&mut self) -> Vec<sync::Arc<Seis>> {
        self.refresh();
        self.local.values().cloned().collect()
    }

    /// Re-reads the routes if the feed or this handle changed them.
    fn refresh(&mut self) {
        // Acquire: pairs with `ManyShared::change`'s Release.
        let v = self.many.version.load(Ordering::Acquire);
        if v != self.version {
            let routes = self.many.lock();
            self.local = routes
                .iter()
                .map(|(t, r)| (*t, sync::Arc::clone(&r.seis)))
                .collect();
            // Read again under the lock: a change after our load is in the copy too.
            self.version = self.many.version.load(Ordering::Acquire);
        }
    }

    /// Adds `seis` to this consumer: its events follow from when this returns (a closed bar
    /// the engine delivered before is not replayed). A no-op for a seis it takes already.
    ///
    /// # Errors
    ///
    /// [`Error::NotSubscribed`] when `seis` is not subscribed in this feed (or belongs to
    /// another); [`Error::Timeout`]; [`Error::Overloaded`]; [`Error::Shutdown`].
    pub fn add(&mut self, seis: &Seis) -> Result<(), Error> {
        let feed = self.feed.upgrade().ok_or(Error::Shutdown)?;
        self.refresh();
        if self.local.values().any(|s| std::ptr::eq(&**s, seis)) {
            return Ok(());
        }
        add_seises(&feed, &self.many, &[seis])?;
        self.refresh();
        Ok(())
    }

    /// Removes `seis` from this consumer: after this returns, none of its events is returned
    /// (those already in the ring are skipped), and the other seises go on. The seis stays
    /// subscribed.
    ///
    /// # Errors
    ///
    /// [`Error::NotSubscribed`] when this consumer does not take `seis`; [`Error::Shutdown`].
    pub fn remove(&mut self, seis: &Seis) -> Result<(), Error> {
        let feed = self.feed.upgrade().ok_or(Error::Shutdown)?;
        self.refresh();
        let tag = self
            .local
            .iter()
            .find(|(_, s)| std::ptr::eq(&***s, seis))
            .map(|(t, _)| *t);
        let removed = tag.and_then(|tag| {
            self.many
                .change(|routes| routes.remove(&tag))
                .map(|r| (tag, r))
        });
        let Some((tag, route)) = removed else {
            return Err(seis.not_subscribed(seis.feed != feed.feed_id));
        };
        self.local.remove(&tag);
        drop_route(&feed, &self.many, tag, route.id);
        self.refresh();
        Ok(())
    }

    /// The next event if one is waiting; never blocks.
    ///
    /// # Errors
    ///
    /// [`RecvError::Timeout`] when none is waiting; [`RecvError::Closed`] once the consumer
    /// ended (removed, or the feed shut down) and its ring is drained.
    pub fn try_recv(&mut self) -> Result<SeisEvent, RecvError> {
        self.recv_timeout(Duration::ZERO)
    }

    /// The next event, waiting at most `timeout` with the ring's wait strategy.
    ///
    /// # Errors
    ///
    /// [`RecvError::Timeout`] when nothing arrived in time; [`RecvError::Closed`] once the
    /// consumer ended and its ring is drained.
    pub fn recv_timeout(&mut self, timeout: Duration) -> Result<SeisEvent, RecvError> {
        let deadline = clock::monotonic().checked_add(timeout);
        loop {
            let left = deadline.map_or(Duration::from_secs(3600), |d| {
                d.saturating_duration_since(clock::monotonic())
            });
            let Some(rx) = self.rx.as_mut() else {
                return Err(RecvError::Closed);
            };
            let open = self.gate.is_open();
            let result = super::consumer::next_from(rx, open, left, || {
                self.stats.flush(&self.counters);
            });
            match result {
                Ok(tagged) => {
                    // A seis removed since it was pushed: skipped.
                    if let Some(event) = self.take(tagged) {
                        return Ok(event);
                    }
                }
                Err(PopTimeoutError::Timeout) => {
                    self.stats.flush(&self.counters);
                    return Err(RecvError::Timeout);
                }
                Err(PopTimeoutError::Abandoned) => {
                    self.stats.flush(&self.counters);
                    return Err(RecvError::Closed);
                }
            }
        }
    }

    /// Turns a ring item into its event: `None` for a seis removed since it was pushed.
    fn take(&mut self, Tagged { tag, delivery }: Tagged) -> Option<SeisEvent> {
        self.refresh();
        let seis = self.local.get(&tag).cloned()?;
        self.stats
            .record(&delivery, seis.interval(), &self.counters);
        if matches!(delivery.event, LiveEvent::Failed(_)) {
            // The seis ended: nothing of it follows; let go of its route.
            self.stats.flush(&self.counters);
            if let Some(feed) = self.feed.upgrade()
                && let Some(route) = self.many.change(|routes| routes.remove(&tag))
            {
                self.local.remove(&tag);
                drop_route(&feed, &self.many, tag, route.id);
            }
        }
        Some(SeisEvent {
            seis,
            event: delivery.event,
        })
    }

    /// The next event, `None` at the end (where `recv` returns `Closed`), or `Pending` with
    /// the task registered to be woken by the next event or the end: the handshake of
    /// [`Subscription`](super::Subscription)'s `# Async`.
    pub(crate) fn poll_event(&mut self, cx: &mut Context<'_>) -> Poll<Option<SeisEvent>> {
        loop {
            let Some(rx) = self.rx.as_mut() else {
                return Poll::Ready(None);
            };
            let polled = super::consumer::poll_from(rx, self.gate.is_open(), cx);
            match polled {
                Poll::Ready(Some(tagged)) => {
                    if let Some(event) = self.take(tagged) {
                        return Poll::Ready(Some(event));
                    }
                }
                Poll::Ready(None) => {
                    self.stats.flush(&self.counters);
                    return Poll::Ready(None);
                }
                Poll::Pending => {
                    // Caught up: publish what was measured while the task waits.
                    self.stats.flush(&self.counters);
                    return Poll::Pending;
                }
            }
        }
    }

    /// The next event, waiting until one comes or the consumer ends (never past
    /// [`LiveFeed::shutdown`]).
    ///
    /// # Errors
    ///
    /// [`RecvError::Closed`] once the consumer ended and its ring is drained.
    pub fn recv(&mut self) -> Result<SeisEvent, RecvError> {
        loop {
            match self.recv_timeout(Duration::from_secs(1)) {
                Err(RecvError::Timeout) => {}
                other => return other,
            }
        }
    }

    /// An iterator over the events, blocking like [`ManySubscription::recv`]; it ends when the
    /// consumer ends.
    pub fn iter(&mut self) -> impl Iterator<Item = SeisEvent> + '_ {
        std::iter::from_fn(move || self.recv().ok())
    }
}

impl super::consumer::Source for ManySubscription {
    type Item = SeisEvent;

    fn poll_event(&mut self, cx: &mut Context<'_>) -> Poll<Option<SeisEvent>> {
        ManySubscription::poll_event(self, cx)
    }

    /// A seis' `Failed` ends that seis, not the consumer.
    fn is_last(_: &SeisEvent) -> bool {
        false
    }
}

/// A [`ManySubscription`] is a `futures_core::Stream` of [`SeisEvent`]s with the `async`
/// feature, on the terms of [`Subscription`](super::Subscription)'s `# Async`: the events
/// `recv` would return, in the same order, ending (`None`) where `recv` returns
/// [`RecvError::Closed`]; a poll never blocks and no wake-up is lost.
#[cfg(feature = "async")]
#[cfg_attr(docsrs, doc(cfg(feature = "async")))]
impl futures_core::Stream for ManySubscription {
    type Item = SeisEvent;

    fn poll_next(self: std::pin::Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<SeisEvent>> {
        self.get_mut().poll_event(cx)
    }
}

impl Drop for ManySubscription {
    fn drop(&mut self) {
        self.stats.flush(&self.counters);
        if self.callback {
            return;
        }
        if let Some(feed) = self.feed.upgrade() {
            super::drop_consumer(&feed, self.id);
        }
    }
}

/// Takes `route` (tag `tag`) of a many-seis consumer out of the registry, then tells `tv-io`
/// to drop the seis' state from the consumer's slot. The caller already took it out of the
/// consumer's routes.
pub(crate) fn drop_route(shared: &Shared, many: &ManyShared, tag: u64, route: ConsumerId) {
    let _ = shared.registry.remove_consumer(route);
    let deadline = shared.deadline(Duration::from_secs(1));
    let _ = shared.commands.send(
        Command::RemoveSeis {
            slot: many.slot,
            tag,
        },
        deadline,
    );
}

/// Gives `seises` to the many-seis consumer `many`: state on `tv-io` first (one command, one
/// reply), then a registry route per seis, then its routes table.
fn add_seises(shared: &Shared, many: &ManyShared, seises: &[&Seis]) -> Result<(), Error> {
    let deadline = shared.deadline(shared.builder.command_timeout);
    // Each seis as the registry holds it (its `Arc`), this feed's and registered.
    let snapshot = shared.registry.load();
    let mut arcs = Vec::with_capacity(seises.len());
    for seis in seises {
        match snapshot
            .get(seis.key())
            .filter(|e| std::ptr::eq(&**e.value(), *seis))
        {
            Some(e) => arcs.push(sync::Arc::clone(e.value())),
            None => return Err(seis.not_subscribed(seis.feed != shared.feed_id)),
        }
    }
    drop(snapshot);
    let tags: Vec<u64> = arcs
        .iter()
        // Relaxed: only uniqueness matters. Starts at 1: tag 0 is a single-seis consumer's.
        .map(|_| shared.next_tag.fetch_add(1, Ordering::Relaxed))
        .collect();
    let (reply, waiter) = command::reply();
    shared.commands.send(
        Command::AddSeises {
            slot: many.slot,
            tags: tags.clone(),
            reply,
        },
        deadline,
    )?;
    waiter.wait(deadline).ok_or(Error::Timeout {
        after: shared.builder.command_timeout,
        during: crate::error::Phase::Answer,
    })?;
    let mut failed = None;
    for (seis, tag) in arcs.into_iter().zip(tags) {
        let routed = shared.registry.insert_consumer(
            seis.key(),
            ConsumerSlot {
                fanout: many.slot,
                tag,
            },
        );
        match routed {
            Some(id) => {
                many.change(|routes| routes.insert(tag, Route { seis, id }));
            }
            None => {
                // Removed (its last hold released) while it was being added.
                let _ = shared.commands.send(
                    Command::RemoveSeis {
                        slot: many.slot,
                        tag,
                    },
                    deadline,
                );
                failed.get_or_insert_with(|| seis.not_subscribed(false));
            }
        }
    }
    failed.map_or(Ok(()), Err)
}

impl LiveFeed {
    /// One pull consumer of many seises: the events of all of them from one ring, in the
    /// engine's order across seises, each naming its seis (see [`ManySubscription`]). Add and
    /// remove seises later with [`ManySubscription::add`] and [`ManySubscription::remove`].
    ///
    /// # Errors
    ///
    /// [`Error::InvalidRequest`] for an empty list; [`Error::NotSubscribed`] when a seis is
    /// not subscribed here (nothing is then left behind); [`Error::Timeout`];
    /// [`Error::Overloaded`]; [`Error::Shutdown`].
    pub fn subscribe_many(&self, seises: &[&Seis]) -> Result<ManySubscription, Error> {
        self.subscribe_many_with(seises, ConsumerOptions::default())
    }

    /// [`LiveFeed::subscribe_many`] with options (forming-bar updates).
    ///
    /// # Errors
    ///
    /// As [`LiveFeed::subscribe_many`].
    pub fn subscribe_many_with(
        &self,
        seises: &[&Seis],
        options: ConsumerOptions,
    ) -> Result<ManySubscription, Error> {
        self.check_open()?;
        let Some(first) = seises.first() else {
            return Err(Error::InvalidRequest(
                "subscribe_many needs at least one seis".into(),
            ));
        };
        for seis in seises {
            if seis.feed != self.shared.feed_id {
                return Err(seis.not_subscribed(true));
            }
        }
        let shared = &self.shared;
        let deadline = shared.deadline(shared.builder.command_timeout);
        let (producer, rx) = crate::ring::with_strategy::<Tagged>(
            shared.builder.ring_capacity,
            shared.builder.wait_strategy,
        )
        .map_err(|e| Error::InvalidRequest(e.to_string()))?;
        let counters = plain::Arc::new(ConsumerCounters::default());
        let (reply, waiter) = command::reply();
        shared.commands.send(
            Command::AddManyConsumer {
                producer,
                updates: options.updates,
                counters: plain::Arc::clone(&counters),
                reply,
            },
            deadline,
        )?;
        let slot = waiter.wait(deadline).ok_or_else(|| self.timeout_error())?;
        let id = shared.registry.reserve_id();
        let gate = plain::Arc::new(Gate::new());
        let many = plain::Arc::new(ManyShared {
            slot,
            routes: Mutex::new(HashMap::new()),
            version: AtomicU64::new(0),
        });
        // In the table before any route exists: a `del_seis` that removes a route finds it.
        self.table().insert(
            id,
            ConsumerEntry {
                seis: first.key().clone(),
                gate: plain::Arc::clone(&gate),
                counters: plain::Arc::clone(&counters),
                fanout: slot,
                thread: None,
                many: Some(plain::Arc::clone(&many)),
            },
        );
        let mut sub = ManySubscription {
            id,
            rx: Some(rx),
            gate,
            counters,
            feed: plain::Arc::downgrade(&self.shared),
            many,
            local: HashMap::new(),
            version: u64::MAX,
            stats: LocalStats::default(),
            callback: false,
        };
        // On an error, dropping `sub` removes the consumer and whatever routes it got.
        add_seises(shared, &sub.many, seises)?;
        sub.refresh();
        Ok(sub)
    }
}

impl LiveFeed {
    /// Runs `callback` for every event of `seises` (one consumer, one ring, the engine's order
    /// across seises, each [`SeisEvent`] naming its seis) on a thread of its own,
    /// `tv-consumer-N`. Returns its id for [`LiveFeed::del_consumer`].
    ///
    /// The contracts of [`LiveFeed::new_consumer`] hold: after `del_consumer` returns the
    /// callback never runs again; a panicking callback ends this consumer only (logged,
    /// counted in [`ConsumerStats::panicked`](super::ConsumerStats::panicked)); `shutdown`
    /// names its thread if the callback does not return in time; the callback may call this
    /// feed's methods, its own consumer's and seises' included, without waiting for itself.
    /// Per seis, the [`LiveEvent`] contract is unchanged; a `Failed` ends that seis, not the
    /// consumer. Add and remove seises later with [`LiveFeed::add_to_consumer`] and
    /// [`LiveFeed::remove_from_consumer`] (from any thread, the callback included). With
    /// [`LiveFeedBuilder::callback_threads`](super::LiveFeedBuilder::callback_threads) it runs
    /// on a dispatcher thread instead of its own (unless
    /// [`ConsumerOptions::own_thread`](super::ConsumerOptions::own_thread)).
    ///
    /// # Errors
    ///
    /// As [`LiveFeed::subscribe_many`]; [`Error::Spawn`] when the thread could not be started
    /// (nothing is left behind).
    pub fn new_consumer_many(
        &self,
        seises: &[&Seis],
        options: ConsumerOptions,
        mut callback: impl FnMut(SeisEvent) + Send + 'static,
    ) -> Result<ConsumerId, Error> {
        let mut sub = self.subscribe_many_with(seises, options)?;
        sub.callback = true;
        let shared = &self.shared;
        let id = sub.id;
        let gate = plain::Arc::clone(&sub.gate);
        let counters = plain::Arc::clone(&sub.counters);
        let me = (shared.feed_id, id);
        if let Some(pool) = shared.dispatch.as_ref().filter(|_| !options.own_thread) {
            pool.place(Box::new(super::consumer::Dispatched {
                source: sub,
                callback: Some(callback),
                shared: super::consumer::CallbackShared { gate, counters },
                me,
            }));
            return Ok(id);
        }
        let name = format!("tv-consumer-{}", id.get());
        let thread_name = name.clone();
        let spawned = plain::thread::Builder::new()
            .name(name.clone())
            .spawn(move || {
                super::consumer::mark_running(me);
                tracing::debug!(thread = thread_name, "consumer started");
                // Invariant: the callback runs only between `gate.enter()` and `gate.exit()`, so
                // `del_consumer`'s `gate.close` waits for a running one and none runs after it.
                while gate.is_open() {
                    match sub.recv_timeout(super::consumer::IDLE_WAKE) {
                        Ok(event) => {
                            if !gate.enter() {
                                break;
                            }
                            let result =
                                std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                                    callback(event);
                                }));
                            gate.exit();
                            if result.is_err() {
                                counters.record_panic();
                                tracing::error!(
                                    thread = thread_name,
                                    "consumer callback panicked: consumer ended"
                                );
                                break;
                            }
                        }
                        Err(RecvError::Timeout) => {}
                        // Removed or shut down: its ring is abandoned and drained.
                        Err(RecvError::Closed) => break,
                    }
                }
                drop(sub);
                tracing::debug!(thread = thread_name, "consumer ended");
            });
        match spawned {
            Ok(handle) => {
                if let Some(entry) = self.table().get_mut(&id) {
                    entry.thread = Some((name, handle));
                }
                Ok(id)
            }
            Err(e) => {
                // The handle was moved into the closure that never ran, and dropped with it
                // (as a callback one: nothing removed); remove the consumer here.
                let _ = super::remove_consumer(shared, id, Duration::from_secs(1));
                Err(Error::Spawn {
                    thread: name,
                    source: e.into(),
                })
            }
        }
    }
}

impl LiveFeed {
    /// The routes of many-seis consumer `id` (from [`LiveFeed::new_consumer_many`] or
    /// [`LiveFeed::subscribe_many`]).
    fn many_of(&self, id: ConsumerId) -> Result<plain::Arc<ManyShared>, Error> {
        let table = self.table();
        let entry = table.get(&id).ok_or_else(|| {
            Error::InvalidRequest(format!("no consumer {} in this feed", id.get()))
        })?;
        entry.many.as_ref().map(plain::Arc::clone).ok_or_else(|| {
            Error::InvalidRequest(format!(
                "consumer {} takes one seis: only a many-seis consumer takes seises added",
                id.get()
            ))
        })
    }

    /// Adds `seises` to the many-seis consumer `id`, a callback one included: their events
    /// reach it from when this returns (a closed bar delivered before is not replayed). A
    /// seis it takes already is left as it is. Callable from any thread, its own callback
    /// included.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidRequest`] when `id` is not a many-seis consumer of this feed;
    /// [`Error::NotSubscribed`] when a seis is not subscribed here; [`Error::Timeout`];
    /// [`Error::Overloaded`]; [`Error::Shutdown`].
    pub fn add_to_consumer(&self, id: ConsumerId, seises: &[&Seis]) -> Result<(), Error> {
        self.check_open()?;
        let many = self.many_of(id)?;
        let taken: Vec<sync::Arc<Seis>> = many
            .lock()
            .values()
            .map(|r| sync::Arc::clone(&r.seis))
            .collect();
        let new: Vec<&Seis> = seises
            .iter()
            .copied()
            .filter(|s| !taken.iter().any(|t| std::ptr::eq(&**t, *s)))
            .collect();
        if new.is_empty() {
            return Ok(());
        }
        add_seises(&self.shared, &many, &new)
    }

    /// Removes `seis` from the many-seis consumer `id`, a callback one included; the seis
    /// stays subscribed and the consumer's other seises go on.
    ///
    /// From the consumer's own callback, no event of `seis` reaches the callback after this
    /// returns (those already in its ring are skipped). From another thread, the consumer may
    /// already have taken one event of `seis` out of its ring when the call came: that one
    /// event may still reach the callback (or be running in it) after this returns; none
    /// after it.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidRequest`] when `id` is not a many-seis consumer of this feed;
    /// [`Error::NotSubscribed`] when the consumer does not take `seis`; [`Error::Shutdown`].
    pub fn remove_from_consumer(&self, id: ConsumerId, seis: &Seis) -> Result<(), Error> {
        self.check_open()?;
        let many = self.many_of(id)?;
        let removed = many.change(|routes| {
            let tag = routes
                .iter()
                .find(|(_, r)| std::ptr::eq(&*r.seis, seis))
                .map(|(t, _)| *t)?;
            routes.remove(&tag).map(|r| (tag, r))
        });
        let Some((tag, route)) = removed else {
            return Err(seis.not_subscribed(seis.feed != self.shared.feed_id));
        };
        drop_route(&self.shared, &many, tag, route.id);
        Ok(())
    }
}
