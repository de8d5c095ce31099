//! The consuming ends of the rings: a callback consumer's `tv-consumer-N` thread, and the pull
//! handle [`Subscription`] a user polls from a thread of their own.

use std::{
    cell::Cell,
    panic::{AssertUnwindSafe, catch_unwind},
    task::{Context, Poll},
    time::Duration,
};

use super::{ConsumerCounters, Delivery, LiveEvent, gate::Gate, stats::LocalStats};
use crate::{
    ring::{Consumer, PopTimeoutError},
    sync::plain::Arc,
};

/// How long an idle consumer sleeps before it re-checks its gate on its own. Nothing waits
/// for it: the consumer publishes its latencies whenever its ring runs empty, and a removal or
/// a shutdown drops the ring's producer, which wakes it. It only bounds the wait if that wake
/// never came. (It was 100 ms: 1,000 idle consumers then woke 10,000 times a second, more than
/// half a core on a VM, for nothing.)
pub(crate) const IDLE_WAKE: Duration = Duration::from_secs(5);

/// The per-event work of the built-in statistics, exactly as a consumer does it (keep both
/// latencies, count, record them into the shared histograms every 64 events), on events made up
/// by the caller: for the latency harness to time (`tvdatafeed::internal::StatsProbe`).
#[derive(Debug)]
pub struct StatsProbe {
    counters: ConsumerCounters,
    interval: crate::Interval,
    stats: LocalStats,
}

impl StatsProbe {
    /// A probe for events of a seis at `interval`.
    pub fn new(interval: crate::Interval) -> Self {
        Self {
            counters: ConsumerCounters::default(),
            interval,
            stats: LocalStats::default(),
        }
    }

    /// Takes `event`, pushed at `pushed_at`, as a consumer takes a delivery: the statistics'
    /// work only (no ring, no callback).
    pub fn take(&mut self, event: LiveEvent, pushed_at: std::time::Instant) -> LiveEvent {
        let d = Delivery { event, pushed_at };
        self.stats.record(&d, self.interval, &self.counters);
        d.event
    }
}

thread_local! {
    /// On a `tv-consumer-N` thread, for its whole life (the callback's drop at its end
    /// included): the feed ([`Shared::feed_id`](super::Shared::feed_id)) and the consumer it
    /// runs. `None` on every other thread. A call the callback makes into its own feed reads it
    /// to avoid waiting for this very thread (`del_consumer` of itself, `del_seis` of its seis,
    /// `shutdown`, `Drop`), which could only end at its timeout, or never.
    static RUNNING: Cell<Option<(u64, super::ConsumerId)>> = const { Cell::new(None) };
}

/// The consumer of feed `feed` whose thread this is, if the caller runs on one (a callback,
/// or its drop).
pub(crate) fn running(feed: u64) -> Option<super::ConsumerId> {
    match RUNNING.get() {
        Some((f, id)) if f == feed => Some(id),
        _ => None,
    }
}

/// Marks this thread as consumer `me`'s for the rest of its life (see [`running`]): for a
/// callback thread that does not go through [`run_callback`] (a many-seis one).
pub(crate) fn mark_running(me: (u64, super::ConsumerId)) {
    RUNNING.set(Some(me));
}

/// Runs `f` marked as consumer `me`'s callback (see [`running`]), then restores the mark: for
/// a dispatcher thread, which runs many consumers' callbacks in turn.
pub(crate) fn with_running<R>(me: (u64, super::ConsumerId), f: impl FnOnce() -> R) -> R {
    let before = RUNNING.replace(Some(me));
    let out = f();
    RUNNING.set(before);
    out
}

/// A source of events a callback consumer takes: a [`Subscription`] or a
/// [`ManySubscription`](super::ManySubscription).
pub(crate) trait Source: Send + 'static {
    type Item: Send;
    /// As [`Subscription::poll_event`].
    fn poll_event(&mut self, cx: &mut Context<'_>) -> Poll<Option<Self::Item>>;
    /// Whether `item` is the consumer's last (a single seis' `Failed`).
    fn is_last(item: &Self::Item) -> bool;
}

impl Source for Subscription {
    type Item = LiveEvent;

    fn poll_event(&mut self, cx: &mut Context<'_>) -> Poll<Option<LiveEvent>> {
        Subscription::poll_event(self, cx)
    }

    fn is_last(item: &LiveEvent) -> bool {
        matches!(item, LiveEvent::Failed(_))
    }
}

/// A callback consumer run by a dispatcher thread (`LiveFeedBuilder::callback_threads`): the
/// same contract as [`run_callback`]'s thread of its own (the gate around every call, a panic
/// ends this consumer only, the thread marked as this consumer's while its callback runs or
/// is dropped).
pub(crate) struct Dispatched<S: Source, F: FnMut(S::Item) + Send + 'static> {
    pub(crate) source: S,
    /// `None` once dropped (in `Drop`, marked as running).
    pub(crate) callback: Option<F>,
    pub(crate) shared: CallbackShared,
    pub(crate) me: (u64, super::ConsumerId),
}

impl<S: Source, F: FnMut(S::Item) + Send + 'static> super::dispatch::Dispatchable
    for Dispatched<S, F>
{
    fn id(&self) -> u64 {
        self.me.1.get()
    }

    fn run(&mut self, cx: &mut Context<'_>, budget: usize) -> super::dispatch::Step {
        use super::dispatch::Step;
        let Some(callback) = self.callback.as_mut() else {
            return Step::Ended;
        };
        for _ in 0..budget {
            if !self.shared.gate.is_open() {
                return Step::Ended;
            }
            let item = match self.source.poll_event(cx) {
                Poll::Pending => return Step::Idle,
                Poll::Ready(None) => return Step::Ended,
                Poll::Ready(Some(item)) => item,
            };
            let last = S::is_last(&item);
            if !self.shared.gate.enter() {
                return Step::Ended;
            }
            let result = with_running(self.me, || {
                catch_unwind(AssertUnwindSafe(|| callback(item)))
            });
            self.shared.gate.exit();
            if let Err(payload) = result {
                drop_payload(payload);
                self.shared.counters.record_panic();
                tracing::error!(
                    consumer = self.me.1.get(),
                    "consumer callback panicked: consumer ended"
                );
                return Step::Ended;
            }
            if last {
                return Step::Ended;
            }
        }
        Step::More
    }
}

impl<S: Source, F: FnMut(S::Item) + Send + 'static> Drop for Dispatched<S, F> {
    fn drop(&mut self) {
        let callback = self.callback.take();
        // The callback's drop runs user code: marked as this consumer's, and a panic in it
        // must not end the dispatcher thread (and the other consumers on it).
        let dropped = with_running(self.me, || {
            catch_unwind(AssertUnwindSafe(|| drop(callback)))
        });
        if let Err(payload) = dropped {
            drop_payload(payload);
            tracing::error!(
                consumer = self.me.1.get(),
                "consumer callback's drop panicked"
            );
        }
    }
}

/// Drops a caught panic's payload on a shared thread: a payload whose own drop panics
/// (`panic_any` of such a value) must not unwind through the dispatcher and end the other
/// consumers on its thread; that second payload is leaked instead.
fn drop_payload(payload: Box<dyn std::any::Any + Send>) {
    if let Err(again) = catch_unwind(AssertUnwindSafe(move || drop(payload))) {
        std::mem::forget(again);
    }
}

/// What a callback consumer thread shares with the feed.
#[derive(Debug)]
pub(crate) struct CallbackShared {
    pub(crate) gate: Arc<Gate>,
    pub(crate) counters: Arc<ConsumerCounters>,
}

/// The body of a `tv-consumer-N` thread: pop, pass the gate, run the callback, until the
/// ring is abandoned (the producer dropped: unsubscribed or shut down), the gate closes, or
/// the callback panics (which ends this consumer only: logged, counted, reported).
///
/// `me` is (the feed's id, this consumer's id): it marks the thread for [`running`] until the
/// thread ends.
pub(crate) fn run_callback(
    name: &str,
    me: (u64, super::ConsumerId),
    mut rx: Consumer<Delivery>,
    shared: &CallbackShared,
    interval: crate::Interval,
    mut callback: impl FnMut(LiveEvent),
) {
    RUNNING.set(Some(me));
    tracing::debug!(thread = name, "consumer started");
    let mut stats = LocalStats::default();
    loop {
        if !shared.gate.is_open() {
            break;
        }
        // Caught up: publish what was measured before waiting, so that `stats()` is current
        // whenever the consumer is idle.
        let next = match rx.pop() {
            Ok(d) => Ok(d),
            Err(_) => {
                stats.flush(&shared.counters);
                rx.pop_timeout(IDLE_WAKE)
            }
        };
        match next {
            Ok(d) => {
                stats.record(&d, interval, &shared.counters);
                if !shared.gate.enter() {
                    break;
                }
                // `Failed` is the seis' last event: the thread ends after it.
                let last = matches!(d.event, LiveEvent::Failed(_));
                let result = catch_unwind(AssertUnwindSafe(|| callback(d.event)));
                shared.gate.exit();
                if result.is_err() {
                    shared.counters.record_panic();
                    tracing::error!(thread = name, "consumer callback panicked: consumer ended");
                    break;
                }
                if last {
                    break;
                }
            }
            Err(PopTimeoutError::Timeout) => {}
            Err(PopTimeoutError::Abandoned) => break,
        }
    }
    stats.flush(&shared.counters);
    tracing::debug!(thread = name, "consumer ended");
}

/// The next item of a pull handle's ring (a [`Subscription`]'s or a many-seis one's), waiting
/// at most `wait`. Once the consumer's gate closed (`open` false: removed, its seis removed,
/// or the feed shut down) what was delivered before still comes out, in order, without
/// waiting; then `Abandoned`. `before_wait` runs when the ring is empty and the call is about
/// to wait (to publish statistics while idle).
pub(crate) fn next_from<T>(
    rx: &mut Consumer<T>,
    open: bool,
    wait: Duration,
    before_wait: impl FnOnce(),
) -> Result<T, PopTimeoutError> {
    if !open {
        return rx.pop().map_err(|_| PopTimeoutError::Abandoned);
    }
    match rx.pop() {
        Ok(item) => Ok(item),
        Err(_) if wait.is_zero() => {
            if rx.is_abandoned() {
                rx.pop().map_err(|_| PopTimeoutError::Abandoned)
            } else {
                Err(PopTimeoutError::Timeout)
            }
        }
        Err(_) => {
            before_wait();
            rx.pop_timeout(wait)
        }
    }
}

/// [`next_from`] for a task: the next item, the end, or `Pending` with the task registered
/// (never waits).
pub(crate) fn poll_from<T>(
    rx: &mut Consumer<T>,
    open: bool,
    cx: &mut Context<'_>,
) -> Poll<Option<T>> {
    if open {
        rx.poll_pop(cx)
    } else {
        Poll::Ready(rx.pop().ok())
    }
}

/// Why [`Subscription::recv`] returned no event.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum RecvError {
    /// No event within the timeout ([`Subscription::recv_timeout`], [`Subscription::try_recv`]).
    /// Not final.
    #[error("no event within the timeout")]
    Timeout,
    /// The subscription ended: it was removed, its seis was removed, or the feed shut down.
    /// Events delivered before are not lost: they were returned first. Final.
    #[error("the subscription ended")]
    Closed,
}

/// A pull consumer of one seis: the events come out of its ring on the thread that polls it.
///
/// No other TradingView client offers this: a trading loop that already owns a thread (and
/// maybe a core) polls its bars with [`Subscription::try_recv`] between its own work, with no
/// callback thread and no context switch, or blocks in [`Subscription::recv_timeout`].
///
/// It is `Send` (move it to the thread that polls) but not `Sync`. Dropping it removes this
/// consumer (its seis stays subscribed).
///
/// # Async
///
/// With the `async` feature it is a `futures_core::Stream` of [`LiveEvent`]s, for any
/// executor (the crate depends on no runtime). The stream yields exactly the events
/// [`Subscription::recv`] would return, in the same order, and ends (`None`) exactly where
/// `recv` would return [`RecvError::Closed`]: after everything delivered before the end (a
/// removal, its seis' removal, the feed's shutdown, or a [`LiveEvent::Failed`]) was returned.
///
/// A poll never blocks. When the ring is empty it registers the task's waker, announces the
/// wait, and re-checks the ring before it returns `Pending` (the handshake of a parked
/// consumer thread, model-checked with loom), so the push of the next event wakes the task and
/// no wake-up is lost; a task that is awake costs the engine no wake-up per push. The end
/// wakes the task too, so a pending stream returns `None` when the feed shuts down. With a
/// [`WaitStrategy`](crate::ring::WaitStrategy) that never parks, a `Pending` poll wakes its
/// own task at once (the executor busy-polls, as the strategy asks). Dropping the stream
/// mid-way removes the consumer as any drop does; the feed and its other consumers go on.
///
/// # Examples
///
/// ```no_run
/// # #[allow(dead_code)]
/// # fn demo(feed: &tvdatafeed::LiveFeed) -> tvdatafeed::Result<()> {
/// use tvdatafeed::LiveEvent;
///
/// let btc = feed.new_seis("BINANCE:BTCUSDT", "1")?;
/// let mut sub = feed.subscribe(&btc)?;
/// // Ends when the subscription ends (removed, shut down, or after a `Failed`).
/// for event in sub.iter() {
///     if let LiveEvent::Closed(bar) = event {
///         println!("{} closed at {}", bar.time, bar.close);
///     }
/// }
/// # Ok(()) }
/// ```
#[derive(Debug)]
pub struct Subscription {
    pub(crate) id: super::ConsumerId,
    pub(crate) rx: Option<Consumer<Delivery>>,
    pub(crate) gate: Arc<Gate>,
    pub(crate) counters: Arc<ConsumerCounters>,
    pub(crate) feed: std::sync::Weak<super::Shared>,
    pub(crate) interval: crate::Interval,
    stats: LocalStats,
    /// A [`LiveEvent::Failed`] was returned: the seis ended, nothing follows.
    ended: bool,
    /// Owned by a dispatched callback consumer: the feed removes the consumer (`del_consumer`,
    /// `shutdown`), never this handle's drop, so that a consumer ended by a panic stays in
    /// `stats()` (`panicked`) until then.
    pub(crate) callback: bool,
}

impl Subscription {
    pub(crate) fn new(
        id: super::ConsumerId,
        rx: Consumer<Delivery>,
        gate: Arc<Gate>,
        counters: Arc<ConsumerCounters>,
        feed: std::sync::Weak<super::Shared>,
        interval: crate::Interval,
    ) -> Self {
        Self {
            id,
            rx: Some(rx),
            gate,
            counters,
            feed,
            interval,
            stats: LocalStats::default(),
            ended: false,
            callback: false,
        }
    }

    /// This consumer's id (for [`LiveFeed::del_consumer`](super::LiveFeed::del_consumer)).
    pub fn id(&self) -> super::ConsumerId {
        self.id
    }

    fn take(&mut self, d: Delivery) -> LiveEvent {
        self.stats.record(&d, self.interval, &self.counters);
        d.event
    }

    fn flush_stats(&mut self) {
        self.stats.flush(&self.counters);
    }

    /// The next event if one is waiting; never blocks.
    ///
    /// # Errors
    ///
    /// [`RecvError::Timeout`] when none is waiting; [`RecvError::Closed`] once the subscription
    /// ended and its ring is drained.
    pub fn try_recv(&mut self) -> Result<LiveEvent, RecvError> {
        self.recv_timeout(Duration::ZERO)
    }

    /// The next event, waiting at most `timeout` with the ring's wait strategy.
    ///
    /// # Errors
    ///
    /// [`RecvError::Timeout`] when nothing arrived in time; [`RecvError::Closed`] once the
    /// subscription ended and its ring is drained.
    pub fn recv_timeout(&mut self, timeout: Duration) -> Result<LiveEvent, RecvError> {
        if self.ended {
            return Err(RecvError::Closed);
        }
        let Some(rx) = self.rx.as_mut() else {
            return Err(RecvError::Closed);
        };
        let open = self.gate.is_open();
        let result = next_from(rx, open, timeout, || self.stats.flush(&self.counters));
        match result {
            Ok(d) => {
                let event = self.take(d);
                if matches!(event, LiveEvent::Failed(_)) {
                    self.ended = true;
                    self.flush_stats();
                }
                Ok(event)
            }
            Err(PopTimeoutError::Timeout) => {
                self.flush_stats();
                Err(RecvError::Timeout)
            }
            Err(PopTimeoutError::Abandoned) => {
                self.flush_stats();
                Err(RecvError::Closed)
            }
        }
    }

    /// The next event, waiting until one comes or the subscription ends (the feed shutting
    /// down ends it: this never waits past [`LiveFeed::shutdown`](super::LiveFeed::shutdown)).
    ///
    /// # Errors
    ///
    /// [`RecvError::Closed`] once the subscription ended and its ring is drained.
    pub fn recv(&mut self) -> Result<LiveEvent, RecvError> {
        loop {
            match self.recv_timeout(Duration::from_secs(1)) {
                Err(RecvError::Timeout) => {}
                other => return other,
            }
        }
    }

    /// An iterator over the events, blocking like [`Subscription::recv`]; it ends when the
    /// subscription ends.
    pub fn iter(&mut self) -> impl Iterator<Item = LiveEvent> + '_ {
        std::iter::from_fn(move || self.recv().ok())
    }

    /// The next event, `None` at the end (where `recv` returns `Closed`), or `Pending` with the
    /// task registered to be woken by the next event or the end (see `# Async`).
    pub(crate) fn poll_event(&mut self, cx: &mut Context<'_>) -> Poll<Option<LiveEvent>> {
        if self.ended {
            return Poll::Ready(None);
        }
        let Some(rx) = self.rx.as_mut() else {
            return Poll::Ready(None);
        };
        let polled = poll_from(rx, self.gate.is_open(), cx);
        match polled {
            Poll::Ready(Some(d)) => {
                let event = self.take(d);
                if matches!(event, LiveEvent::Failed(_)) {
                    self.ended = true;
                    self.flush_stats();
                }
                Poll::Ready(Some(event))
            }
            Poll::Ready(None) => {
                self.flush_stats();
                Poll::Ready(None)
            }
            Poll::Pending => {
                // Caught up: publish what was measured, so that `stats()` is current while
                // the task waits (as a blocking consumer does before it waits).
                self.flush_stats();
                Poll::Pending
            }
        }
    }
}

/// `Subscription` is `Unpin` (it holds no self-reference), so the stream is polled through
/// `Pin::get_mut`.
#[cfg(feature = "async")]
#[cfg_attr(docsrs, doc(cfg(feature = "async")))]
impl futures_core::Stream for Subscription {
    type Item = LiveEvent;

    fn poll_next(self: std::pin::Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<LiveEvent>> {
        self.get_mut().poll_event(cx)
    }
}

impl Drop for Subscription {
    fn drop(&mut self) {
        self.flush_stats();
        if self.callback {
            return;
        }
        if let Some(feed) = self.feed.upgrade() {
            super::drop_consumer(&feed, self.id);
        }
    }
}
