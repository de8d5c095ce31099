//! `Subscription` as an async `Stream` (the `async` feature) on a current-thread tokio
//! runtime, against the simulator on loopback: woken after idle, dropped mid-stream, under
//! churn, and ended by the feed's shutdown or a removal. Every wait is bounded by a timeout,
//! so a lost wake-up fails a test instead of hanging it.
//!
//! The tests call the feed's blocking methods (`new_seis`, `subscribe`, `shutdown`) from the
//! runtime's thread: each is one loopback round trip, short enough for a test; an application
//! would call them from `spawn_blocking` or before the runtime starts.
#![allow(
    clippy::disallowed_types,
    reason = "the tests count polls and wakes with std atomics shared through a std Arc"
)]

mod util;

use std::{
    pin::Pin,
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering},
    },
    task::{Context, Poll, Wake, Waker},
    time::Duration,
};

use futures_util::{FutureExt, Stream, StreamExt};
use tokio::time::{sleep, timeout};
use tvdatafeed::{
    Bar, ConsumerOptions, Error, LiveEvent, LiveFeed, Seis, Subscription,
    sim::{Sim, SimConfig},
};
use util::now;

/// Far above a healthy wait (a 1S bar, a loopback round trip), far below a hang.
const PATIENCE: Duration = Duration::from_secs(10);

fn sim() -> Sim {
    Sim::start(SimConfig::default().with_update_interval(Duration::from_millis(100))).unwrap()
}

fn feed(sim: &Sim) -> LiveFeed {
    let mut b = LiveFeed::builder()
        .endpoint(sim.url())
        .unwrap()
        .command_timeout(Duration::from_secs(10));
    if let Some(der) = sim.root_certificate_der() {
        b = b.root_certificate(der.to_vec());
    }
    b.build().unwrap()
}

/// A stream that counts its polls and the `Pending`s among them.
struct Counted<S> {
    inner: S,
    polls: Arc<AtomicU64>,
    pendings: Arc<AtomicU64>,
}

impl<S> Counted<S> {
    fn new(inner: S) -> Self {
        Self {
            inner,
            polls: Arc::default(),
            pendings: Arc::default(),
        }
    }
}

impl<S: Stream + Unpin> Stream for Counted<S> {
    type Item = S::Item;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<S::Item>> {
        self.polls.fetch_add(1, Ordering::SeqCst);
        let polled = Pin::new(&mut self.inner).poll_next(cx);
        if polled.is_pending() {
            self.pendings.fetch_add(1, Ordering::SeqCst);
        }
        polled
    }
}

/// The next closed bar, skipping other events; fails the test past [`PATIENCE`].
async fn next_closed(stream: &mut (impl Stream<Item = LiveEvent> + Unpin), what: &str) -> Bar {
    let deadline = now() + PATIENCE;
    loop {
        let left = deadline.saturating_duration_since(now());
        let next = timeout(left, stream.next()).await;
        // tokio's `timeout` polls its future once more when the time is up, and that poll
        // finds a bar that came without a wake-up: late is a failure too.
        assert!(
            now() < deadline,
            "{what}: no closed bar within {PATIENCE:?} (a lost wake-up?)"
        );
        match next {
            Ok(Some(LiveEvent::Closed(bar))) => return bar,
            Ok(Some(_)) => {}
            Ok(None) => panic!("{what}: the stream ended"),
            Err(_) => panic!("{what}: no closed bar within {PATIENCE:?} (a lost wake-up?)"),
        }
    }
}

/// Takes every event already queued, without waiting: what comes next must wake the task.
fn drain_queued(stream: &mut (impl Stream<Item = LiveEvent> + Unpin)) {
    while let Some(e) = stream.next().now_or_never() {
        assert!(e.is_some(), "the stream ended");
    }
}

/// Closed bars `n` times in a row, checked consecutive and equal to the simulator's. Takes
/// what is queued first, so that at least one bar must come through a wake-up.
async fn consecutive_closes(
    sim: &Sim,
    seis: &Seis,
    stream: &mut (impl Stream<Item = LiveEvent> + Unpin),
    n: usize,
    what: &str,
) {
    drain_queued(stream);
    let mut bars: Vec<Bar> = Vec::new();
    for _ in 0..n {
        bars.push(next_closed(stream, what).await);
    }
    for w in bars.windows(2) {
        assert_eq!(
            seis.interval().next_bar_open(w[0].time),
            w[1].time,
            "{what}: once, in order"
        );
    }
    for b in &bars {
        assert_eq!(
            *b,
            sim.expected_bar(seis.symbol(), seis.interval(), b.time),
            "{what}"
        );
    }
}

/// Waits (on the runtime, so other tasks run) until `f` holds; fails past [`PATIENCE`].
async fn until(what: &str, mut f: impl FnMut() -> bool) {
    let deadline = now() + PATIENCE;
    while !f() {
        assert!(now() < deadline, "{what}: not within {PATIENCE:?}");
        sleep(Duration::from_millis(10)).await;
    }
}

/// Counts its wakes; its `Arc`'s strong count shows who still holds a clone.
#[derive(Default)]
struct Counter(AtomicUsize);

impl Wake for Counter {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }
    fn wake_by_ref(self: &Arc<Self>) {
        self.0.fetch_add(1, Ordering::SeqCst);
    }
}

#[tokio::test]
async fn a_stream_sleeps_while_idle_and_is_woken_by_the_next_bar() {
    let sim = sim();
    let feed = feed(&sim);
    let btc = feed.new_seis("BINANCE:BTCUSDT", "1S").unwrap();
    // Closed bars only: the engine pushes to this consumer once a second, and the stream is
    // idle (Pending, its task asleep) in between, while the updates go by every 100 ms.
    let mut stream = Counted::new(feed.subscribe(&btc).unwrap());
    consecutive_closes(&sim, &btc, &mut stream, 3, "after idle").await;
    let polls = stream.polls.load(Ordering::SeqCst);
    let pendings = stream.pendings.load(Ordering::SeqCst);
    assert!(
        pendings >= 2,
        "the stream never waited between bars: {pendings} Pending"
    );
    // Woken by the bars, not polled in a loop: each Pending is followed by one wake-up
    // (a few more for a `Revised` or a connection event, never one per update).
    assert!(
        polls <= 2 * pendings + 4,
        "{polls} polls for {pendings} waits: woken without an event"
    );
    assert!(feed.shutdown(Duration::from_secs(5)).is_clean());
}

#[tokio::test]
async fn a_stream_dropped_mid_stream_leaves_the_feed_and_other_consumers_running() {
    let sim = sim();
    let feed = feed(&sim);
    let btc = feed.new_seis("BINANCE:BTCUSDT", "1S").unwrap();
    let called = Arc::new(AtomicU64::new(0));
    let c = Arc::clone(&called);
    feed.new_consumer(&btc, move |e| {
        if matches!(e, LiveEvent::Closed(_)) {
            c.fetch_add(1, Ordering::SeqCst);
        }
    })
    .unwrap();
    let mut other = feed.subscribe(&btc).unwrap();
    let mut dropped = feed
        .subscribe_with(&btc, ConsumerOptions::default().with_updates(true))
        .unwrap();
    // Mid-stream: a few events taken, then a poll that leaves our waker in the ring.
    for _ in 0..3 {
        let e = timeout(PATIENCE, dropped.next()).await.expect("an event");
        assert!(e.is_some(), "the stream ended");
    }
    let waker_count = Arc::new(Counter::default());
    let waker = Waker::from(Arc::clone(&waker_count));
    while Pin::new(&mut dropped)
        .poll_next(&mut Context::from_waker(&waker))
        .is_ready()
    {}
    drop(waker);
    assert_eq!(
        Arc::strong_count(&waker_count),
        2,
        "the ring holds one clone"
    );
    drop(dropped);
    assert_eq!(
        feed.stats().consumers.len(),
        2,
        "the callback and the other stream"
    );
    // The ring goes with the consumer, and its clone of the waker with it: nothing leaks.
    until("the dropped stream's waker released", || {
        Arc::strong_count(&waker_count) == 1
    })
    .await;
    // The engine and the other consumers go on.
    let before = called.load(Ordering::SeqCst);
    consecutive_closes(&sim, &btc, &mut other, 2, "the other stream").await;
    until("the callback consumer after the drop", || {
        called.load(Ordering::SeqCst) >= before + 2
    })
    .await;
    assert!(feed.shutdown(Duration::from_secs(5)).is_clean());
}

#[tokio::test]
async fn streams_created_and_dropped_under_churn_leave_a_long_stream_intact() {
    let sim = sim();
    let feed = Arc::new(feed(&sim));
    let btc = feed.new_seis("BINANCE:BTCUSDT", "1S").unwrap();
    let eth = feed.new_seis("BINANCE:ETHUSDT", "1S").unwrap();
    let mut long = Counted::new(feed.subscribe(&btc).unwrap());
    let stop = Arc::new(AtomicBool::new(false));
    // The churn runs on a thread of its own with its own runtime, so that the long stream's
    // task sleeps on this one and every bar it gets comes through a wake-up.
    let churn = {
        let (feed, btc, eth, stop) = (
            Arc::clone(&feed),
            Arc::clone(&btc),
            Arc::clone(&eth),
            Arc::clone(&stop),
        );
        std::thread::Builder::new()
            .name("churn".into())
            .spawn(move || {
                let rt = tokio::runtime::Builder::new_current_thread()
                    .enable_time()
                    .build()
                    .unwrap();
                let mut churned = 0u64;
                rt.block_on(async {
                    while !stop.load(Ordering::SeqCst) {
                        let i = churned;
                        let seis = if i.is_multiple_of(2) { &btc } else { &eth };
                        let options = ConsumerOptions::default().with_updates(!i.is_multiple_of(3));
                        let mut sub: Subscription = feed.subscribe_with(seis, options).unwrap();
                        // Some dropped at once, some after a wait (Pending, woken or not), some
                        // after an event: every stage of a stream's life, racing the pushes.
                        if !i.is_multiple_of(4) {
                            let wait = Duration::from_millis(3 * (i % 7));
                            let _ = timeout(wait, sub.next()).await;
                            if i % 4 == 3 {
                                let _ = timeout(wait, sub.next()).await;
                            }
                        }
                        drop(sub);
                        churned += 1;
                    }
                });
                churned
            })
            .unwrap()
    };
    // The long stream sees every closed bar once, in order, while the churn goes on.
    consecutive_closes(&sim, &btc, &mut long, 3, "the long stream under churn").await;
    stop.store(true, Ordering::SeqCst);
    let churned = churn.join().expect("the churn panicked");
    assert!(churned >= 20, "only {churned} subscriptions churned");
    until("every churned consumer removed", || {
        feed.stats().consumers.len() == 1
    })
    .await;
    consecutive_closes(&sim, &btc, &mut long, 2, "the long stream after the churn").await;
    assert!(feed.shutdown(Duration::from_secs(5)).is_clean());
}

/// Spawns a task that drains `sub` to its end, and returns once it is waiting (Pending).
async fn drain_in_a_task(
    sub: Subscription,
) -> tokio::task::JoinHandle<(Vec<LiveEvent>, Counted<Subscription>)> {
    let mut stream = Counted::new(sub);
    let pendings = Arc::clone(&stream.pendings);
    let task = tokio::spawn(async move {
        let mut events = Vec::new();
        while let Some(e) = stream.next().await {
            events.push(e);
        }
        (events, stream)
    });
    until("the task waits on its stream", || {
        pendings.load(Ordering::SeqCst) > 0
    })
    .await;
    task
}

#[tokio::test]
async fn a_pending_stream_ends_on_the_feeds_shutdown() {
    let sim = sim();
    let feed = feed(&sim);
    let btc = feed.new_seis("BINANCE:BTCUSDT", "1S").unwrap();
    let task = drain_in_a_task(feed.subscribe(&btc).unwrap()).await;
    assert!(feed.shutdown(Duration::from_secs(5)).is_clean());
    // Woken by the end: without that wake-up the task would wait for ever.
    let (events, mut stream) = timeout(PATIENCE, task)
        .await
        .expect("the stream did not end after shutdown (a lost wake-up?)")
        .expect("the task panicked");
    assert!(
        matches!(events.last(), Some(LiveEvent::Failed(Error::Shutdown))),
        "{events:?}"
    );
    assert!(stream.next().await.is_none(), "the end is final");
}

#[tokio::test]
async fn a_pending_stream_ends_on_del_consumer_and_the_feed_goes_on() {
    let sim = sim();
    let feed = feed(&sim);
    let btc = feed.new_seis("BINANCE:BTCUSDT", "1S").unwrap();
    let sub = feed.subscribe(&btc).unwrap();
    let id = sub.id();
    let task = drain_in_a_task(sub).await;
    feed.del_consumer(id).unwrap();
    let (_events, mut stream) = timeout(PATIENCE, task)
        .await
        .expect("the stream did not end after del_consumer (a lost wake-up?)")
        .expect("the task panicked");
    assert!(stream.next().await.is_none(), "the end is final");
    let mut next = feed.subscribe(&btc).unwrap();
    consecutive_closes(&sim, &btc, &mut next, 2, "a new stream after the removal").await;
    assert!(feed.shutdown(Duration::from_secs(5)).is_clean());
}

#[tokio::test]
async fn a_removed_stream_returns_what_was_delivered_before_its_end() {
    // `None` comes only after the events delivered before the removal, as `RecvError::Closed`.
    let sim = sim();
    let feed = feed(&sim);
    let btc = feed.new_seis("BINANCE:BTCUSDT", "1S").unwrap();
    let mut stream = feed
        .subscribe_with(&btc, ConsumerOptions::default().with_updates(true))
        .unwrap();
    // Let updates (every 100 ms) and closes pile up unread.
    until("events pushed", || feed.stats().consumers[0].pushed >= 5).await;
    let pushed = feed.stats().consumers[0].pushed;
    feed.del_consumer(stream.id()).unwrap();
    let mut got = 0;
    while timeout(PATIENCE, stream.next())
        .await
        .expect("the stream did not end after del_consumer")
        .is_some()
    {
        got += 1;
    }
    assert!(
        got >= pushed,
        "{got} events returned after the removal, of {pushed} pushed before it"
    );
}

/// A many-seis consumer as a `Stream`: every seis' closes, in order, each naming its seis;
/// woken after idle; ended by a shutdown while pending.
#[tokio::test]
async fn a_many_seis_stream_yields_every_seis_in_order_and_ends_at_shutdown() {
    let sim = sim();
    let feed = feed(&sim);
    let a = feed.new_seis("BINANCE:BTCUSDT", "1S").unwrap();
    let b = feed.new_seis("BINANCE:ETHUSDT", "1S").unwrap();
    let mut stream = feed.subscribe_many(&[&a, &b]).unwrap();
    let mut closes: Vec<(tvdatafeed::SeisId, i64)> = Vec::new();
    while [&a, &b]
        .iter()
        .any(|s| closes.iter().filter(|(id, _)| *id == s.id()).count() < 3)
    {
        let e = timeout(PATIENCE, stream.next())
            .await
            .expect("no event within the patience")
            .expect("the stream ended early");
        if let LiveEvent::Closed(bar) = e.event() {
            assert_eq!(*bar, sim.expected_bar(e.symbol(), e.interval(), bar.time));
            closes.push((e.id(), bar.time));
        }
    }
    for s in [&a, &b] {
        let times: Vec<i64> = closes
            .iter()
            .filter(|(id, _)| *id == s.id())
            .map(|(_, t)| *t)
            .collect();
        for w in times.windows(2) {
            assert_eq!(w[1], w[0] + 1, "{s}: gap or repeat");
        }
    }
    // Pending on an empty ring, then the shutdown ends it (after what was queued).
    while stream.next().now_or_never().flatten().is_some() {}
    let ended = tokio::spawn(async move {
        while timeout(PATIENCE, stream.next())
            .await
            .expect("never ended")
            .is_some()
        {}
    });
    assert!(feed.shutdown(Duration::from_secs(5)).is_clean());
    timeout(PATIENCE, ended)
        .await
        .expect("the stream did not end")
        .unwrap();
}
