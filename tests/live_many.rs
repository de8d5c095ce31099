//! One consumer, many seises (issue 19), against the simulator: the order across seises is the
//! engine's, per seis every closed bar once, in order, with the simulator's values, across a
//! forced reconnect; a removed seis is never seen again; a stalled many-seis consumer slows
//! no other consumer.
#![allow(
    clippy::disallowed_types,
    reason = "the tests share state between their threads with std types; loom models the engine"
)]

mod util;

use std::{
    collections::{HashMap, HashSet},
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, Ordering},
        mpsc,
    },
    time::Duration,
};

use tvdatafeed::{
    Bar, Error, LiveEvent, LiveFeed, ManySubscription, RecvError, Seis, SeisId,
    sim::{Fault, FaultKind, Sim, SimConfig},
};
use util::{now, pause, unix_s, wait_for};

fn unix_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

fn sim() -> Sim {
    Sim::start(SimConfig::default().with_update_interval(Duration::from_millis(500))).unwrap()
}

fn feed(sim: &Sim, ring: usize) -> LiveFeed {
    LiveFeed::builder()
        .endpoint(sim.url())
        .unwrap()
        .ring_capacity(ring)
        .command_timeout(Duration::from_secs(60))
        .stall_timeout(Duration::from_secs(3))
        .reconnect_backoff(Duration::from_millis(20), Duration::from_millis(500))
        .build()
        .unwrap()
}

fn seises(feed: &LiveFeed, n: usize) -> Vec<Arc<Seis>> {
    (0..n)
        .map(|i| feed.new_seis(format!("BINANCE:SYM{i}"), "1S").unwrap())
        .collect()
}

type Log = Arc<Mutex<Vec<(SeisId, LiveEvent)>>>;

/// Drains `sub` on a thread of its own into a log until `stop`.
fn drain(
    mut sub: ManySubscription,
    stop: &Arc<AtomicBool>,
) -> (Log, std::thread::JoinHandle<ManySubscription>) {
    let log: Log = Arc::default();
    let (l, stop) = (Arc::clone(&log), Arc::clone(stop));
    let h = std::thread::Builder::new()
        .name("drain".into())
        .spawn(move || {
            while !stop.load(Ordering::Acquire) {
                match sub.recv_timeout(Duration::from_millis(50)) {
                    Ok(e) => {
                        let id = e.id();
                        l.lock().unwrap().push((id, e.into_event()));
                    }
                    Err(RecvError::Timeout) => {}
                    Err(_) => break,
                }
            }
            sub
        });
    (log, h.unwrap())
}

fn closed_of(log: &[(SeisId, LiveEvent)], id: SeisId) -> Vec<Bar> {
    log.iter()
        .filter_map(|(s, e)| match e {
            LiveEvent::Closed(b) if *s == id => Some(*b),
            _ => None,
        })
        .collect()
}

/// Per seis: closed bars contiguous (once, in order), the simulator's values, every bar it
/// published in the range delivered, reaching `to`, and one `Disconnected` then
/// `Reconnected` whose `gap_bars` counts the bars between them.
fn check_seis(sim: &Sim, seis: &Seis, log: &[(SeisId, LiveEvent)], to: i64) {
    let who = seis.to_string();
    let closed = closed_of(log, seis.id());
    assert!(!closed.is_empty(), "{who}: no closed bar");
    for w in closed.windows(2) {
        assert_eq!(
            seis.interval().next_bar_open(w[0].time),
            w[1].time,
            "{who}: a gap or a duplicate in {:?}",
            closed.iter().map(|b| b.time).collect::<Vec<_>>()
        );
    }
    for b in &closed {
        assert_eq!(
            *b,
            sim.expected_bar(seis.symbol(), seis.interval(), b.time),
            "{who}: values"
        );
    }
    let (first, last) = (closed[0].time, closed.last().unwrap().time);
    assert!(last >= to, "{who}: ended early ({last} < {to})");
    let times: HashSet<i64> = closed.iter().map(|b| b.time).collect();
    for p in sim.published_closes() {
        if p.symbol == seis.symbol().as_str() && (first..=last).contains(&p.bar.time) {
            assert!(times.contains(&p.bar.time), "{who}: {} lost", p.bar.time);
        }
    }
    let (mut down, mut up, mut since) = (0, 0, None::<u64>);
    for (s, e) in log {
        if *s != seis.id() {
            continue;
        }
        match e {
            LiveEvent::Closed(_) => {
                if let Some(n) = since.as_mut() {
                    *n += 1;
                }
            }
            LiveEvent::Disconnected { .. } => {
                assert!(since.is_none(), "{who}: two Disconnected");
                down += 1;
                since = Some(0);
            }
            LiveEvent::Reconnected { gap_bars, .. } => {
                let n = since.take().expect("Reconnected without Disconnected");
                assert_eq!(*gap_bars, n, "{who}: gap_bars");
                up += 1;
            }
            other => panic!("{who}: unexpected {other:?}"),
        }
    }
    assert!(down >= 1 && up == down, "{who}: {down} down, {up} up");
}

/// The events both logs must agree on, in order: closed bars opening at `from` or later and
/// connection events (`Lagged` is a consumer's own; a revision may be folded into a close that
/// waited).
fn comparable(log: &[(SeisId, LiveEvent)], from: i64) -> Vec<(SeisId, LiveEvent)> {
    log.iter()
        .filter(|(_, e)| match e {
            LiveEvent::Closed(b) => b.time >= from,
            LiveEvent::Disconnected { .. } | LiveEvent::Reconnected { .. } => true,
            _ => false,
        })
        .cloned()
        .collect()
}

#[test]
fn twenty_seises_on_one_consumer_keep_the_engine_order_and_every_close_across_a_reconnect() {
    let sim = sim();
    // A small ring, so that the stalled consumer's events wait in its backlog.
    let feed = feed(&sim, 8);
    let all = seises(&feed, 20);
    let refs: Vec<&Seis> = all.iter().map(|s| &**s).collect();
    let fast = feed.subscribe_many(&refs).unwrap();
    // The same seises on a consumer nobody reads until the end: its events wait in its
    // backlog, across seises, and must come out in the very same order.
    let mut slow = feed.subscribe_many(&refs).unwrap();
    let from = unix_s() + 1;
    let stop = Arc::new(AtomicBool::new(false));
    let (log, handle) = drain(fast, &stop);
    let every_seis_past = |t: i64| {
        let log = log.lock().unwrap();
        all.iter()
            .all(|s| closed_of(&log, s.id()).last().is_some_and(|b| b.time >= t))
    };
    wait_for(Duration::from_secs(30), "a close of every seis", || {
        every_seis_past(from)
    });
    sim.inject(Fault::now(FaultKind::CloseAbrupt));
    let to = unix_s() + 3;
    wait_for(
        Duration::from_secs(60),
        "closes after the reconnect",
        || every_seis_past(to),
    );
    stop.store(true, Ordering::Release);
    let _fast = handle.join().unwrap();
    let log = log.lock().unwrap().clone();
    for s in &all {
        check_seis(&sim, s, &log, to);
    }

    // The stalled consumer: drained now, everything it was given in order.
    let mut slow_log = Vec::new();
    let deadline = now() + Duration::from_secs(30);
    loop {
        let done = all.iter().all(|s| {
            closed_of(&slow_log, s.id())
                .last()
                .is_some_and(|b| b.time >= to)
        });
        if done {
            break;
        }
        assert!(
            now() < deadline,
            "the stalled consumer's backlog never drained"
        );
        match slow.recv_timeout(Duration::from_millis(200)) {
            Ok(e) => {
                if let LiveEvent::Lagged { lost_closed, .. } = e.event() {
                    assert_eq!(*lost_closed, 0, "closed bars lost: {e:?}");
                }
                slow_log.push((e.id(), e.into_event()));
            }
            Err(RecvError::Timeout) => {}
            Err(e) => panic!("{e}"),
        }
    }
    let (a, b) = (comparable(&log, from), comparable(&slow_log, from));
    let n = a.len().min(b.len());
    assert!(n > 20 * 3, "too little to compare: {n}");
    assert_eq!(
        a[..n],
        b[..n],
        "the order across seises differs between a consumer that kept up and one that waited"
    );
    // The order is not per seis only: the log interleaves seises.
    let switches = a.windows(2).filter(|w| w[0].0 != w[1].0).count();
    assert!(switches > 20, "seises not interleaved: {switches}");
    assert!(feed.shutdown(Duration::from_secs(5)).is_clean());
}

#[test]
fn a_removed_seis_is_never_seen_again_and_the_others_go_on() {
    let sim = sim();
    let feed = feed(&sim, 256);
    let all = seises(&feed, 5);
    let refs: Vec<&Seis> = all.iter().map(|s| &**s).collect();
    let mut many = feed.subscribe_many(&refs).unwrap();
    // A consumer of the removed seis alone, added after `many`: when it has a close, `many`'s
    // ring holds that close too (`tv-io` pushes to the seis' consumers in the order they were
    // added), unread.
    let mut witness = feed.subscribe(&all[0]).unwrap();
    loop {
        if let LiveEvent::Closed(_) = witness.recv_timeout(Duration::from_secs(10)).unwrap() {
            break;
        }
    }
    many.remove(&all[0]).unwrap();
    let gone = all[0].id();
    let until = unix_s() + 3;
    let mut seen: HashMap<SeisId, i64> = HashMap::new();
    while all[1..]
        .iter()
        .any(|s| seen.get(&s.id()).is_none_or(|t| *t < until))
    {
        let e = many.recv_timeout(Duration::from_secs(10)).unwrap();
        assert_ne!(e.id(), gone, "an event of the removed seis: {e:?}");
        if let LiveEvent::Closed(b) = e.event() {
            seen.insert(e.id(), b.time);
        }
    }
    // The seis itself goes on for its other consumer.
    loop {
        if let LiveEvent::Closed(b) = witness.recv_timeout(Duration::from_secs(10)).unwrap()
            && b.time >= until
        {
            break;
        }
    }
    assert!(matches!(
        many.remove(&all[0]),
        Err(Error::NotSubscribed { .. })
    ));
    // And it can be added back.
    many.add(&all[0]).unwrap();
    loop {
        let e = many.recv_timeout(Duration::from_secs(10)).unwrap();
        if e.id() == gone && matches!(e.event(), LiveEvent::Closed(_)) {
            break;
        }
    }
    assert!(feed.shutdown(Duration::from_secs(5)).is_clean());
}

#[test]
fn a_stalled_many_seis_consumer_slows_no_other_consumer() {
    let sim = sim();
    let feed = feed(&sim, 4);
    let all = seises(&feed, 20);
    let refs: Vec<&Seis> = all.iter().map(|s| &**s).collect();
    // Never read while the other runs: its 4-slot ring is full within a second.
    let mut stalled = feed.subscribe_many(&refs).unwrap();
    let mut normal = feed.subscribe(&all[7]).unwrap();
    let start = unix_s() + 1;
    let mut bars = Vec::new();
    while bars.len() < 8 {
        if let LiveEvent::Closed(b) = normal.recv_timeout(Duration::from_secs(10)).unwrap() {
            let late_ms = unix_ms() - (b.time + 1) * 1000;
            assert!(
                b.time < start || late_ms < 1_500,
                "a close came {late_ms} ms after its bar ended"
            );
            bars.push(b);
        }
    }
    for w in bars.windows(2) {
        assert_eq!(w[0].time + 1, w[1].time, "a gap or a duplicate");
    }
    // The stalled one lost nothing: its closes waited, in order.
    let end = bars.last().unwrap().time;
    let mut got: HashMap<SeisId, Vec<i64>> = HashMap::new();
    while all.iter().any(|s| {
        got.get(&s.id())
            .and_then(|v| v.last())
            .is_none_or(|t| *t < end)
    }) {
        let e = stalled.recv_timeout(Duration::from_secs(10)).unwrap();
        match e.event() {
            LiveEvent::Closed(b) => got.entry(e.id()).or_default().push(b.time),
            LiveEvent::Lagged { lost_closed, .. } => assert_eq!(*lost_closed, 0),
            _ => {}
        }
    }
    for v in got.values() {
        for w in v.windows(2) {
            assert_eq!(w[0] + 1, w[1], "the stalled consumer: a gap or a duplicate");
        }
    }
    assert!(feed.shutdown(Duration::from_secs(5)).is_clean());
}

#[test]
fn a_seis_of_another_feed_or_unsubscribed_is_a_typed_error() {
    let sim = sim();
    let a = feed(&sim, 64);
    let b = feed(&sim, 64);
    let x = a.new_seis("BINANCE:SYM1", "1S").unwrap();
    let y = b.new_seis("BINANCE:SYM2", "1S").unwrap();
    assert!(matches!(
        a.subscribe_many(&[&x, &y]),
        Err(Error::NotSubscribed {
            other_feed: true,
            ..
        })
    ));
    assert!(matches!(
        a.subscribe_many(&[]),
        Err(Error::InvalidRequest(_))
    ));
    let mut m = a.subscribe_many(&[&x]).unwrap();
    assert!(matches!(m.add(&y), Err(Error::NotSubscribed { .. })));
    assert!(matches!(m.remove(&y), Err(Error::NotSubscribed { .. })));
    // The last hold released: the seis leaves the consumer, which goes on empty.
    a.del_seis(&x).unwrap();
    assert!(m.seises().is_empty());
    assert!(matches!(m.add(&x), Err(Error::NotSubscribed { .. })));
    // Stats name the consumer.
    assert!(a.stats().consumers.iter().any(|c| c.id == m.id()));
    drop(m);
    assert!(a.stats().consumers.is_empty());
}

/// The callback form: one `tv-consumer-N` thread for many seises, every closed bar of each
/// once, in order, with the simulator's values; after `del_consumer` returns it never runs
/// again; `shutdown` is clean.
#[test]
fn a_callback_many_seis_consumer_gets_every_close_and_stops_at_del_consumer() {
    let sim = sim();
    let feed = feed(&sim, 256);
    let all = seises(&feed, 5);
    let refs: Vec<&Seis> = all.iter().map(|s| &**s).collect();
    let log: Log = Arc::default();
    let removed = Arc::new(AtomicBool::new(false));
    let after = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let (l, r, a) = (Arc::clone(&log), Arc::clone(&removed), Arc::clone(&after));
    let id = feed
        .new_consumer_many(&refs, tvdatafeed::ConsumerOptions::default(), move |e| {
            if r.load(Ordering::SeqCst) {
                a.fetch_add(1, Ordering::SeqCst);
            }
            let thread = std::thread::current();
            assert!(thread.name().is_some_and(|n| n.starts_with("tv-consumer-")));
            l.lock().unwrap().push((e.id(), e.into_event()));
        })
        .unwrap();
    let to = unix_s() + 3;
    wait_for(
        Duration::from_secs(20),
        "three closes of every seis",
        || {
            let log = log.lock().unwrap();
            all.iter()
                .all(|s| closed_of(&log, s.id()).last().is_some_and(|b| b.time >= to))
        },
    );
    feed.del_consumer(id).unwrap();
    removed.store(true, Ordering::SeqCst);
    pause(Duration::from_millis(1_500));
    assert_eq!(
        after.load(Ordering::SeqCst),
        0,
        "it ran after del_consumer returned"
    );
    let log = log.lock().unwrap().clone();
    for s in &all {
        let closed = closed_of(&log, s.id());
        for w in closed.windows(2) {
            assert_eq!(
                s.interval().next_bar_open(w[0].time),
                w[1].time,
                "{s}: gap or repeat"
            );
        }
        for b in &closed {
            assert_eq!(
                *b,
                sim.expected_bar(s.symbol(), s.interval(), b.time),
                "{s}"
            );
        }
    }
    assert!(feed.shutdown(Duration::from_secs(5)).is_clean());
}

/// A panicking callback ends its own many-seis consumer only (counted in its stats); a
/// second consumer of the same seises goes on; `del_consumer` of itself from its callback
/// returns at once.
#[test]
fn a_callback_many_seis_consumer_that_panics_ends_alone_and_one_that_removes_itself_returns_at_once()
 {
    let sim = sim();
    let feed = Arc::new(feed(&sim, 256));
    let all = seises(&feed, 3);
    let refs: Vec<&Seis> = all.iter().map(|s| &**s).collect();
    let panicker = feed
        .new_consumer_many(&refs, tvdatafeed::ConsumerOptions::default(), |e| {
            if matches!(e.event(), LiveEvent::Closed(_)) {
                panic!("a callback that panics (on purpose)");
            }
        })
        .unwrap();
    let own = Arc::new(Mutex::new(None));
    let (tx, rx) = mpsc::channel::<(Result<(), Error>, Duration)>();
    let (weak, o) = (Arc::downgrade(&feed), Arc::clone(&own));
    let closes = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let c = Arc::clone(&closes);
    let remover = feed
        .new_consumer_many(&refs, tvdatafeed::ConsumerOptions::default(), move |e| {
            if !matches!(e.event(), LiveEvent::Closed(_)) {
                return;
            }
            // Three closes after the other consumer panicked, then it removes itself.
            if c.fetch_add(1, Ordering::SeqCst) + 1 < 9 {
                return;
            }
            let Some(id) = *o.lock().unwrap() else { return };
            let Some(feed) = weak.upgrade() else { return };
            let start = now();
            let r = feed.del_consumer(id);
            let _ = tx.send((r, now().duration_since(start)));
        })
        .unwrap();
    *own.lock().unwrap() = Some(remover);
    let (r, took) = rx
        .recv_timeout(Duration::from_secs(20))
        .expect("del_consumer from its own callback did not return");
    assert!(r.is_ok(), "{r:?}");
    assert!(took < Duration::from_secs(2), "del_consumer took {took:?}");
    let stats = feed.stats();
    let p = stats
        .consumers
        .iter()
        .find(|c| c.id == panicker)
        .expect("the panicked consumer is still listed until removed");
    assert!(p.panicked);
    assert!(!stats.consumers.iter().any(|c| c.id == remover));
    feed.del_consumer(panicker).unwrap();
    assert!(feed.shutdown(Duration::from_secs(5)).is_clean());
}

/// A callback many-seis consumer changed while it runs: a seis added through the feed is
/// delivered from then on, one removed from another thread never starts the callback again,
/// and one removed from the callback itself never reaches it again.
#[test]
fn seises_added_to_and_removed_from_a_live_callback_consumer() {
    let sim = sim();
    let feed = Arc::new(feed(&sim, 256));
    let all = seises(&feed, 3);
    let log: Log = Arc::default();
    let gone: Arc<Mutex<HashSet<SeisId>>> = Arc::default();
    let late = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let me = Arc::new(Mutex::new(None));
    let (l, g, lt, m, weak) = (
        Arc::clone(&log),
        Arc::clone(&gone),
        Arc::clone(&late),
        Arc::clone(&me),
        Arc::downgrade(&feed),
    );
    let third = Arc::clone(&all[2]);
    let id = feed
        .new_consumer_many(
            &[&all[0]],
            tvdatafeed::ConsumerOptions::default(),
            move |e| {
                if g.lock().unwrap().contains(&e.id()) {
                    lt.fetch_add(1, Ordering::SeqCst);
                    return;
                }
                let closed_third =
                    e.id() == third.id() && matches!(e.event(), LiveEvent::Closed(_));
                l.lock().unwrap().push((e.id(), e.into_event()));
                // The third seis removes itself from the callback after its second close.
                let thirds = closed_of(&l.lock().unwrap(), third.id()).len();
                if closed_third
                    && thirds == 2
                    && let (Some(id), Some(feed)) = (*m.lock().unwrap(), weak.upgrade())
                {
                    feed.remove_from_consumer(id, &third).unwrap();
                    g.lock().unwrap().insert(third.id());
                }
            },
        )
        .unwrap();
    *me.lock().unwrap() = Some(id);
    wait_for(
        Duration::from_secs(20),
        "two closes of the first seis",
        || closed_of(&log.lock().unwrap(), all[0].id()).len() >= 2,
    );
    let refs: Vec<&Seis> = all[1..].iter().map(|s| &**s).collect();
    feed.add_to_consumer(id, &refs).unwrap();
    // Adding what it takes already changes nothing.
    feed.add_to_consumer(id, &[&all[0]]).unwrap();
    wait_for(
        Duration::from_secs(20),
        "three closes of the second seis",
        || closed_of(&log.lock().unwrap(), all[1].id()).len() >= 3,
    );
    feed.remove_from_consumer(id, &all[1]).unwrap();
    gone.lock().unwrap().insert(all[1].id());
    let before = closed_of(&log.lock().unwrap(), all[0].id()).len();
    wait_for(
        Duration::from_secs(20),
        "three more closes of the first seis",
        || closed_of(&log.lock().unwrap(), all[0].id()).len() >= before + 3,
    );
    assert_eq!(
        late.load(Ordering::SeqCst),
        0,
        "a removed seis reached the callback"
    );
    let log = log.lock().unwrap().clone();
    assert_eq!(closed_of(&log, all[2].id()).len(), 2);
    for s in &all {
        let closed = closed_of(&log, s.id());
        assert!(!closed.is_empty(), "{s}: nothing");
        for w in closed.windows(2) {
            assert_eq!(
                s.interval().next_bar_open(w[0].time),
                w[1].time,
                "{s}: gap or repeat"
            );
        }
    }
    // Typed errors: a seis it does not take, a single-seis consumer, an unknown id.
    assert!(matches!(
        feed.remove_from_consumer(id, &all[1]),
        Err(Error::NotSubscribed { .. })
    ));
    let single = feed.new_consumer(&all[0], |_| {}).unwrap();
    assert!(matches!(
        feed.add_to_consumer(single, &[&all[1]]),
        Err(Error::InvalidRequest(_))
    ));
    feed.del_consumer(single).unwrap();
    assert!(matches!(
        feed.remove_from_consumer(single, &all[0]),
        Err(Error::InvalidRequest(_))
    ));
    assert!(feed.shutdown(Duration::from_secs(5)).is_clean());
}
