//! The live engine against the running simulator: its contracts (DESIGN.md), each pinned by a
//! test named for it, and the seed's own tests (racing `new_seis`, `shutdown` while a callback
//! sleeps, many threads of mixed operations), every one bounded by a deadline.
#![allow(
    clippy::disallowed_types,
    reason = "the tests share state between their threads with std types; loom models the engine"
)]

mod util;

use std::{
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, AtomicU64, Ordering},
        mpsc,
    },
    time::Duration,
};

use tvdatafeed::{
    ConsumerOptions, Error, HistOptions, LiveEvent, LiveFeed, RecvError, Seis, SeriesFailure,
    sim::{Sim, SimConfig},
};
use util::now;

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

/// Sleeps without `std::thread::sleep` (forbidden in this crate): a timed wait on a channel
/// nobody sends on.
fn pause(d: Duration) {
    let (_tx, rx) = mpsc::channel::<()>();
    let _ = rx.recv_timeout(d);
}

#[test]
fn racing_new_seis_on_one_key_returns_one_arc() {
    let sim = sim();
    let feed = Arc::new(feed(&sim));
    let handles: Vec<_> = (0..10)
        .map(|i| {
            let feed = Arc::clone(&feed);
            std::thread::Builder::new()
                .name(format!("test-racer-{i}"))
                .spawn(move || feed.new_seis("BINANCE:BTCUSDT", "1S").unwrap())
                .unwrap()
        })
        .collect();
    let seises: Vec<_> = handles.into_iter().map(|h| h.join().unwrap()).collect();
    for s in &seises {
        assert!(Arc::ptr_eq(s, &seises[0]), "one object for one key");
    }
    assert_eq!(feed.stats().seises.len(), 1);
    // One series on the server, not ten.
    let deadline = now() + Duration::from_secs(5);
    while sim.counters().series_open != 1 && now() < deadline {
        pause(Duration::from_millis(10));
    }
    assert_eq!(sim.counters().series_open, 1);
}

#[test]
fn refusals_are_typed_errors_within_one_round_trip() {
    let sim = Sim::start(SimConfig::default().with_entitled_seconds(false)).unwrap();
    let feed = feed(&sim);
    let start = now();
    let err = feed.new_seis("BINANCE:INVALIDX", "1").unwrap_err();
    assert!(
        matches!(
            err.series_failure(),
            Some(SeriesFailure::UnknownSymbol { .. })
        ),
        "{err:?}"
    );
    let err = feed.new_seis("ECONOMICS:USGDP", "1D").unwrap_err();
    assert!(
        matches!(
            err.series_failure(),
            Some(SeriesFailure::PermissionDenied { .. })
        ),
        "{err:?}"
    );
    let err = feed.new_seis("BINANCE:BTCUSDT", "1S").unwrap_err();
    assert!(
        matches!(
            err.series_failure(),
            Some(SeriesFailure::IntervalNotEntitled { .. })
        ),
        "{err:?}"
    );
    assert!(now().duration_since(start) < Duration::from_secs(5));
    // A refused seis is not kept: asking again asks the server again.
    assert!(feed.stats().seises.is_empty());
    let err = feed.new_seis("NOT A SYMBOL", "1").unwrap_err();
    assert!(matches!(err, Error::InvalidRequest(_)), "{err:?}");
}

#[test]
fn closed_bars_reach_every_consumer_once_in_order_with_final_values() {
    let sim = sim();
    let feed = feed(&sim);
    let btc = feed.new_seis("BINANCE:BTCUSDT", "1S").unwrap();
    let seen = Arc::new(Mutex::new(Vec::new()));
    let s = Arc::clone(&seen);
    feed.new_consumer(&btc, move |e| {
        if let LiveEvent::Closed(b) = e {
            s.lock().unwrap().push(b);
        }
    })
    .unwrap();
    let mut pull = feed.subscribe(&btc).unwrap();
    let mut pulled = Vec::new();
    let deadline = now() + Duration::from_secs(10);
    while pulled.len() < 4 && now() < deadline {
        if let Ok(LiveEvent::Closed(b)) = pull.recv_timeout(Duration::from_secs(3)) {
            pulled.push(b);
        }
    }
    assert_eq!(pulled.len(), 4);
    pause(Duration::from_millis(200));
    let called = seen.lock().unwrap().clone();
    for bars in [&pulled, &called] {
        for w in bars.windows(2) {
            assert_eq!(
                btc.interval().next_bar_open(w[0].time),
                w[1].time,
                "once, in order"
            );
        }
        for b in bars.iter() {
            assert_eq!(*b, sim.expected_bar(btc.symbol(), btc.interval(), b.time));
        }
    }
    assert!(called.len() >= pulled.len() - 1);
    // The simulator published each of them.
    let published: Vec<_> = sim
        .published_closes()
        .into_iter()
        .filter(|p| p.symbol == "BINANCE:BTCUSDT")
        .map(|p| p.bar)
        .collect();
    for b in &pulled {
        assert!(published.contains(b), "{b:?} was not published");
    }
    // The built-in statistics saw them: the callback consumer's batch is published as soon
    // as its ring runs empty; the pull consumer's on its next timeout.
    let _ = pull.recv_timeout(Duration::from_millis(150));
    pause(Duration::from_millis(300));
    let stats = feed.stats();
    assert_eq!(stats.consumers.len(), 2);
    for c in &stats.consumers {
        let closes = c.close_to_callback;
        assert!(closes.count >= 3, "{c:?}");
        assert!(c.push_to_callback.count >= closes.count, "{c:?}");
        assert!(c.delivered >= closes.count, "{c:?}");
        // Nanoseconds, recorded as such: never zero, and loopback is far below 30 s.
        assert!(
            closes.p50 > Duration::ZERO && closes.max < Duration::from_secs(30),
            "{c:?}"
        );
        assert!(c.push_to_callback.p50 > Duration::ZERO, "{c:?}");
    }
}

#[test]
fn forming_updates_go_only_to_consumers_that_ask() {
    let sim = sim();
    let feed = feed(&sim);
    let btc = feed.new_seis("BINANCE:BTCUSDT", "1S").unwrap();
    let mut with = feed
        .subscribe_with(&btc, ConsumerOptions::default().with_updates(true))
        .unwrap();
    let mut without = feed.subscribe(&btc).unwrap();
    let deadline = now() + Duration::from_secs(10);
    let mut updates = 0;
    while updates < 5 && now() < deadline {
        if let Ok(LiveEvent::Update(_)) = with.recv_timeout(Duration::from_secs(2)) {
            updates += 1;
        }
    }
    assert_eq!(updates, 5);
    let mut closed = 0;
    while closed < 2 && now() < deadline {
        match without.recv_timeout(Duration::from_secs(2)) {
            Ok(LiveEvent::Update(_)) => panic!("an update for a consumer that did not ask"),
            Ok(LiveEvent::Closed(_)) => closed += 1,
            _ => {}
        }
    }
    assert_eq!(closed, 2);
}

#[test]
fn a_full_ring_never_blocks_the_engine_and_loses_only_updates() {
    let sim = sim();
    let feed = LiveFeed::builder()
        .endpoint(sim.url())
        .unwrap()
        .ring_capacity(2)
        .build()
        .unwrap();
    let btc = feed.new_seis("BINANCE:BTCUSDT", "1S").unwrap();
    let eth = feed.new_seis("BINANCE:ETHUSDT", "1S").unwrap();
    // A pull consumer that does not read for a while, with updates: its ring overflows.
    let mut slow = feed
        .subscribe_with(&btc, ConsumerOptions::default().with_updates(true))
        .unwrap();
    // Meanwhile another consumer keeps receiving: the engine is not blocked.
    let mut fast = feed.subscribe(&eth).unwrap();
    let deadline = now() + Duration::from_secs(15);
    let mut fast_closed = 0;
    while fast_closed < 3 && now() < deadline {
        if let Ok(LiveEvent::Closed(_)) = fast.recv_timeout(Duration::from_secs(2)) {
            fast_closed += 1;
        }
    }
    assert_eq!(
        fast_closed, 3,
        "a full ring elsewhere never stalls delivery"
    );
    // The drops are counted when they happen, before the slow consumer reads anything.
    let dropped = feed
        .stats()
        .consumers
        .iter()
        .map(|c| c.lagged)
        .max()
        .unwrap_or(0);
    assert!(dropped > 0, "updates were dropped and counted at once");
    // It reads again: the updates it missed are told by a `Lagged` that lost no closed bar,
    // and its closed bars come contiguous, with the simulator's values.
    let mut lagged = None;
    let mut closed: Vec<i64> = Vec::new();
    while closed.len() < 5 && now() < deadline {
        match slow.recv_timeout(Duration::from_secs(2)) {
            Ok(LiveEvent::Lagged {
                missed,
                first_time,
                lost_closed,
            }) => {
                assert_eq!(lost_closed, 0, "no closed bar lost within the backlog");
                lagged.get_or_insert((missed, first_time));
            }
            Ok(LiveEvent::Closed(bar)) => {
                assert_eq!(
                    bar,
                    sim.expected_bar(btc.symbol(), btc.interval(), bar.time)
                );
                if let Some(last) = closed.last() {
                    assert_eq!(bar.time, last + 1, "closed bars contiguous: {closed:?}");
                }
                closed.push(bar.time);
            }
            Ok(_) => {}
            Err(e) => panic!("{e}"),
        }
    }
    assert!(closed.len() >= 5, "{closed:?}");
    let (missed, first_time) = lagged.expect("a Lagged event");
    assert!(missed > 0);
    assert!(
        first_time.is_some(),
        "the first missed event was about a bar"
    );
    let stats = feed.stats();
    assert!(
        stats
            .consumers
            .iter()
            .any(|c| c.lagged >= missed && c.lost_closed == 0),
        "{:?}",
        stats.consumers
    );
}

#[test]
fn a_removed_subscription_still_returns_what_was_delivered_before_closed() {
    // `RecvError::Closed` promises that events delivered before the end come out first.
    let sim = sim();
    let feed = feed(&sim);
    let btc = feed.new_seis("BINANCE:BTCUSDT", "1S").unwrap();
    let mut sub = feed
        .subscribe_with(&btc, ConsumerOptions::default().with_updates(true))
        .unwrap();
    // Let updates (every 100 ms) and closes pile up unread.
    let deadline = now() + Duration::from_secs(10);
    while feed.stats().consumers[0].pushed < 5 {
        assert!(now() < deadline, "nothing pushed");
        pause(Duration::from_millis(20));
    }
    let pushed = feed.stats().consumers[0].pushed;
    feed.del_consumer(sub.id()).unwrap();
    let mut got = 0;
    let end = loop {
        match sub.try_recv() {
            Ok(_) => got += 1,
            Err(e) => break e,
        }
    };
    assert_eq!(end, RecvError::Closed);
    assert!(
        got >= pushed,
        "{got} events returned after the removal, of {pushed} pushed before it"
    );
}

#[test]
fn del_consumer_of_a_callback_running_past_the_command_timeout_says_timeout() {
    // The gate's close must wait for the running callback (up to the timeout) and say when it
    // could not: `Ok` here would promise that the callback no longer runs while it does.
    let sim = sim();
    let feed = LiveFeed::builder()
        .endpoint(sim.url())
        .unwrap()
        .command_timeout(Duration::from_millis(200))
        .build()
        .unwrap();
    let btc = feed.new_seis("BINANCE:BTCUSDT", "1S").unwrap();
    let running = Arc::new(AtomicBool::new(false));
    let runs = Arc::new(AtomicU64::new(0));
    let (ru, r) = (Arc::clone(&running), Arc::clone(&runs));
    let id = feed
        .new_consumer_with(
            &btc,
            ConsumerOptions::default().with_updates(true),
            move |_| {
                r.fetch_add(1, Ordering::SeqCst);
                ru.store(true, Ordering::SeqCst);
                pause(Duration::from_secs(2));
                ru.store(false, Ordering::SeqCst);
            },
        )
        .unwrap();
    let deadline = now() + Duration::from_secs(10);
    while !running.load(Ordering::SeqCst) {
        assert!(now() < deadline, "the callback never ran");
        pause(Duration::from_millis(5));
    }
    let t0 = now();
    let result = feed.del_consumer(id);
    let took = now().duration_since(t0);
    assert!(running.load(Ordering::SeqCst), "the callback still runs");
    assert!(
        matches!(result, Err(Error::Timeout { .. })),
        "del_consumer while its callback runs past the timeout: {result:?}"
    );
    assert!(took < Duration::from_secs(1), "took {took:?}");
    // And it never runs again once the running call returns.
    pause(Duration::from_millis(2_500));
    assert_eq!(runs.load(Ordering::SeqCst), 1);
    assert!(feed.shutdown(Duration::from_secs(5)).is_clean());
}

#[test]
fn after_del_consumer_returns_the_callback_never_runs_again_even_if_it_was_running() {
    let sim = sim();
    let feed = feed(&sim);
    let btc = feed.new_seis("BINANCE:BTCUSDT", "1S").unwrap();
    let runs = Arc::new(AtomicU64::new(0));
    let running = Arc::new(AtomicBool::new(false));
    let (r, ru) = (Arc::clone(&runs), Arc::clone(&running));
    let id = feed
        .new_consumer_with(
            &btc,
            ConsumerOptions::default().with_updates(true),
            move |_| {
                ru.store(true, Ordering::SeqCst);
                pause(Duration::from_millis(300));
                r.fetch_add(1, Ordering::SeqCst);
                ru.store(false, Ordering::SeqCst);
            },
        )
        .unwrap();
    // Wait until the callback is inside a run, then remove it.
    let deadline = now() + Duration::from_secs(10);
    while !running.load(Ordering::SeqCst) {
        assert!(now() < deadline, "the callback never ran");
        pause(Duration::from_millis(5));
    }
    feed.del_consumer(id).unwrap();
    assert!(
        !running.load(Ordering::SeqCst),
        "del_consumer waited for the running callback"
    );
    let after = runs.load(Ordering::SeqCst);
    pause(Duration::from_millis(1_500));
    assert_eq!(
        runs.load(Ordering::SeqCst),
        after,
        "the callback ran after del_consumer"
    );
    assert!(matches!(
        feed.del_consumer(id),
        Err(Error::InvalidRequest(_))
    ));
}

#[test]
fn after_del_seis_returns_no_callback_runs_and_the_server_subscription_is_gone() {
    let sim = sim();
    let feed = feed(&sim);
    let btc = feed.new_seis("BINANCE:BTCUSDT", "1S").unwrap();
    let eth = feed.new_seis("BINANCE:ETHUSDT", "1S").unwrap();
    let runs = Arc::new(AtomicU64::new(0));
    for _ in 0..3 {
        let r = Arc::clone(&runs);
        feed.new_consumer_with(
            &btc,
            ConsumerOptions::default().with_updates(true),
            move |_| {
                r.fetch_add(1, Ordering::SeqCst);
            },
        )
        .unwrap();
    }
    let mut pull = feed.subscribe(&btc).unwrap();
    let deadline = now() + Duration::from_secs(10);
    while runs.load(Ordering::SeqCst) < 3 {
        assert!(now() < deadline);
        pause(Duration::from_millis(10));
    }
    feed.del_seis(&btc).unwrap();
    let after = runs.load(Ordering::SeqCst);
    // The server was told: one series left (ETH).
    while sim.counters().series_open != 1 {
        assert!(
            now() < deadline,
            "series open: {}",
            sim.counters().series_open
        );
        pause(Duration::from_millis(10));
    }
    pause(Duration::from_millis(1_200));
    assert_eq!(
        runs.load(Ordering::SeqCst),
        after,
        "a callback ran after del_seis"
    );
    // The pull handle drains what it had, then says the subscription ended.
    let mut end = None;
    for _ in 0..10_000 {
        match pull.try_recv() {
            Ok(_) => {}
            Err(e) => {
                end = Some(e);
                break;
            }
        }
    }
    assert_eq!(end, Some(RecvError::Closed));
    assert!(matches!(
        feed.del_seis(&btc),
        Err(Error::NotSubscribed { .. })
    ));
    assert!(matches!(
        feed.new_consumer(&btc, |_| {}),
        Err(Error::NotSubscribed { .. })
    ));
    // The other seis is untouched.
    let mut e = feed.subscribe(&eth).unwrap();
    assert!(e.recv_timeout(Duration::from_secs(3)).is_ok());
}

#[test]
fn a_panicking_callback_ends_its_own_consumer_only() {
    let sim = sim();
    let feed = feed(&sim);
    let btc = feed.new_seis("BINANCE:BTCUSDT", "1S").unwrap();
    let bad = feed
        .new_consumer_with(&btc, ConsumerOptions::default().with_updates(true), |_| {
            panic!("a bug in user code")
        })
        .unwrap();
    let good = Arc::new(AtomicU64::new(0));
    let g = Arc::clone(&good);
    feed.new_consumer(&btc, move |e| {
        if matches!(e, LiveEvent::Closed(_)) {
            g.fetch_add(1, Ordering::SeqCst);
        }
    })
    .unwrap();
    let deadline = now() + Duration::from_secs(10);
    while good.load(Ordering::SeqCst) < 3 {
        assert!(now() < deadline, "the other consumer stopped");
        pause(Duration::from_millis(20));
    }
    let stats = feed.stats();
    let c = stats.consumers.iter().find(|c| c.id == bad).unwrap();
    assert!(c.panicked, "the panic is counted and reported");
    assert!(feed.shutdown(Duration::from_secs(5)).is_clean());
}

#[test]
fn shutdown_while_a_callback_sleeps_returns_within_its_timeout_and_names_the_thread() {
    let sim = sim();
    let feed = feed(&sim);
    let btc = feed.new_seis("BINANCE:BTCUSDT", "1S").unwrap();
    let entered = Arc::new(AtomicBool::new(false));
    let e = Arc::clone(&entered);
    let id = feed
        .new_consumer_with(
            &btc,
            ConsumerOptions::default().with_updates(true),
            move |_| {
                e.store(true, Ordering::SeqCst);
                pause(Duration::from_secs(30));
            },
        )
        .unwrap();
    let deadline = now() + Duration::from_secs(10);
    while !entered.load(Ordering::SeqCst) {
        assert!(now() < deadline);
        pause(Duration::from_millis(5));
    }
    let start = now();
    let report = feed.shutdown(Duration::from_millis(500));
    let took = now().duration_since(start);
    assert!(took < Duration::from_secs(2), "shutdown took {took:?}");
    assert_eq!(report.unfinished, [format!("tv-consumer-{}", id.get())]);
    // Idempotent, and every later call is refused.
    assert_eq!(feed.shutdown(Duration::from_millis(10)), report);
    assert!(matches!(
        feed.new_seis("BINANCE:ETHUSDT", "1S"),
        Err(Error::Shutdown)
    ));
    assert!(matches!(feed.del_seis(&btc), Err(Error::Shutdown)));
    assert!(matches!(
        feed.get_hist("BINANCE:BTCUSDT", "1", 5, &HistOptions::default()),
        Err(Error::Shutdown)
    ));
}

#[test]
fn pull_consumers_end_with_a_failed_shutdown_event_and_closed() {
    let sim = sim();
    let feed = feed(&sim);
    let btc = feed.new_seis("BINANCE:BTCUSDT", "1S").unwrap();
    let mut sub = feed.subscribe(&btc).unwrap();
    assert!(feed.shutdown(Duration::from_secs(5)).is_clean());
    let mut last = None;
    loop {
        match sub.recv_timeout(Duration::from_secs(5)) {
            Ok(e) => last = Some(e),
            Err(e) => {
                assert_eq!(e, RecvError::Closed);
                break;
            }
        }
    }
    assert!(
        matches!(last, Some(LiveEvent::Failed(Error::Shutdown))),
        "{last:?}"
    );
}

#[test]
fn get_hist_goes_over_the_live_connection() {
    let sim = sim();
    let feed = feed(&sim);
    let _btc = feed.new_seis("BINANCE:BTCUSDT", "1S").unwrap();
    let h = feed
        .get_hist("BINANCE:ETHUSDT", "1H", 300, &HistOptions::default())
        .unwrap();
    assert_eq!(h.bars.len(), 300);
    for b in &h.bars {
        assert_eq!(*b, sim.expected_bar(&h.symbol, h.interval, b.time));
    }
    let err = feed
        .get_hist("BINANCE:INVALIDX", "1H", 10, &HistOptions::default())
        .unwrap_err();
    assert!(matches!(
        err.series_failure(),
        Some(SeriesFailure::UnknownSymbol { .. })
    ));
    assert_eq!(sim.counters().connections, 1, "no new connection");
}

#[test]
fn get_hist_over_the_live_connection_pages_past_one_request_and_leaves_nothing_open() {
    let sim = sim();
    // An authenticated token: the simulator's history depth is then 20,000 bars.
    let feed = LiveFeed::builder()
        .endpoint(sim.url())
        .unwrap()
        .token(tvdatafeed::AuthToken::new("aaa.bbb.ccc"))
        .build()
        .unwrap();
    let _btc = feed.new_seis("BINANCE:BTCUSDT", "1S").unwrap();
    let h = feed
        .get_hist("BINANCE:ETHUSDT", "1", 12_000, &HistOptions::default())
        .unwrap();
    assert_eq!(h.bars.len(), 12_000);
    assert_eq!(h.requested, Some(12_000));
    for w in h.bars.windows(2) {
        assert_eq!(h.interval.next_bar_open(w[0].time), w[1].time);
    }
    for b in h.bars.iter().step_by(97) {
        assert_eq!(*b, sim.expected_bar(&h.symbol, h.interval, b.time));
    }
    // Its chart session is gone: only the seis is open on the server (a confirmation fetch
    // may add one for a moment).
    let deadline = now() + Duration::from_secs(5);
    while sim.counters().series_open != 1 {
        assert!(
            now() < deadline,
            "{} series open",
            sim.counters().series_open
        );
        pause(Duration::from_millis(20));
    }
    assert_eq!(sim.counters().connections, 1, "no new connection");
    assert!(feed.shutdown(Duration::from_secs(5)).is_clean());
}

#[test]
fn ten_threads_of_a_hundred_mixed_operations_finish_without_deadlock() {
    let sim = sim();
    let feed = Arc::new(feed(&sim));
    let symbols = ["BINANCE:BTCUSDT", "BINANCE:ETHUSDT", "BINANCE:SOLUSDT"];
    let (tx, rx) = mpsc::channel();
    for t in 0..10 {
        let feed = Arc::clone(&feed);
        let tx = tx.clone();
        std::thread::Builder::new()
            .name(format!("test-mixed-{t}"))
            .spawn(move || {
                for i in 0..100 {
                    let sym = symbols[(t + i) % symbols.len()];
                    let result = match i % 5 {
                        0 | 1 => feed.new_seis(sym, "1S").map(|_| ()),
                        2 => feed.new_seis(sym, "1S").and_then(|s| {
                            let id = feed.new_consumer(&s, |_| {})?;
                            feed.del_consumer(id)
                        }),
                        3 => feed.new_seis(sym, "1S").and_then(|s| {
                            let sub = feed.subscribe(&s)?;
                            drop(sub);
                            Ok(())
                        }),
                        _ => feed.new_seis(sym, "1S").and_then(|s| feed.del_seis(&s)),
                    };
                    // Races between del_seis and the others may refuse an operation; what
                    // matters is that every call returns.
                    if let Err(e) = result {
                        assert!(
                            matches!(e, Error::NotSubscribed { .. } | Error::InvalidRequest(_)),
                            "unexpected error {e:?}"
                        );
                    }
                }
                let _ = tx.send(t);
            })
            .unwrap();
    }
    drop(tx);
    let mut done = 0;
    let deadline = now() + Duration::from_secs(120);
    while done < 10 {
        let left = deadline.saturating_duration_since(now());
        match rx.recv_timeout(left) {
            Ok(_) => done += 1,
            Err(_) => panic!("deadlock: {done} of 10 threads finished in 120 s"),
        }
    }
    assert!(feed.shutdown(Duration::from_secs(5)).is_clean());
}

/// `new_seis` of `BINANCE:SYM0`…`SYM{n-1}` at `interval` from four threads; panics with the
/// seis and the error on any failure.
fn subscribe_in_parallel(feed: &Arc<LiveFeed>, n: usize, interval: &str) -> Vec<Arc<Seis>> {
    std::thread::scope(|s| {
        let handles: Vec<_> = (0..4)
            .map(|k| {
                let feed = Arc::clone(feed);
                s.spawn(move || {
                    (k..n)
                        .step_by(4)
                        .map(|i| {
                            feed.new_seis(format!("BINANCE:SYM{i}"), interval)
                                .unwrap_or_else(|e| panic!("new_seis SYM{i}: {e}"))
                        })
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        handles
            .into_iter()
            .flat_map(|h| h.join().unwrap())
            .collect()
    })
}

/// Subscribes `n` seises (in parallel), then checks every closed bar each one's consumer got
/// against the simulator's truth for a few bar closes.
fn many_seises(tls: bool, n: usize) {
    // Updates of the forming bars are rare: the closes are what is checked, and a debug build
    // of the simulator serves a thousand series on one connection thread.
    let sim = Sim::start(
        SimConfig::default()
            .with_tls(tls)
            .with_update_interval(Duration::from_secs(5)),
    )
    .unwrap();
    let mut builder = LiveFeed::builder()
        .endpoint(sim.url())
        .unwrap()
        .command_timeout(Duration::from_secs(60));
    if let Some(der) = sim.root_certificate_der() {
        builder = builder.root_certificate(der.to_vec());
    }
    let feed = Arc::new(builder.build().unwrap());
    let seises = subscribe_in_parallel(&feed, n, "1S");
    assert_eq!(seises.len(), n);
    let got: Vec<Arc<Mutex<Vec<tvdatafeed::Bar>>>> =
        (0..n).map(|_| Arc::new(Mutex::new(Vec::new()))).collect();
    for (s, g) in seises.iter().zip(&got) {
        let g = Arc::clone(g);
        let name = s.to_string();
        feed.new_consumer(s, move |e| match e {
            LiveEvent::Closed(b) => g.lock().unwrap().push(b),
            other => {
                #[expect(clippy::print_stderr, reason = "what a consumer saw, for a failure")]
                {
                    eprintln!("{name}: {other:?}");
                }
            }
        })
        .unwrap();
    }
    let deadline = now() + Duration::from_secs(30);
    while got.iter().any(|g| g.lock().unwrap().len() < 3) {
        assert!(now() < deadline, "not every seis closed 3 bars in 30 s");
        pause(Duration::from_millis(50));
    }
    for (s, g) in seises.iter().zip(&got) {
        let bars = g.lock().unwrap();
        for w in bars.windows(2) {
            assert_eq!(s.interval().next_bar_open(w[0].time), w[1].time, "{s}");
        }
        for b in bars.iter() {
            assert_eq!(
                *b,
                sim.expected_bar(s.symbol(), s.interval(), b.time),
                "{s}"
            );
        }
    }
    assert_eq!(
        sim.counters().connections,
        1,
        "one connection carries every seis"
    );
    assert!(feed.shutdown(Duration::from_secs(10)).is_clean());
}

/// A server that writes faster than the engine reads must not hold commands: `tv-io` reads a
/// budget of messages per turn, then serves commands and deadlines. Reading until
/// `WouldBlock` held every command behind such a server for as long as it kept writing (a
/// `new_consumer` waited minutes in the latency harness): here `new_seis` timed out from
/// about the 64th seis on. 150 seises updating every millisecond offer 150,000 messages a
/// second, more than a debug build reads. The timeout is generous because each answer still
/// queues behind the updates already in the socket buffers; the bug's wait had no end.
#[test]
fn a_server_that_never_pauses_does_not_hold_commands() {
    let sim =
        Sim::start(SimConfig::default().with_update_interval(Duration::from_millis(1))).unwrap();
    let feed = Arc::new(
        LiveFeed::builder()
            .endpoint(sim.url())
            .unwrap()
            .command_timeout(Duration::from_secs(20))
            .build()
            .unwrap(),
    );
    // Subscribed from four threads, so that the round trips (each answer queued behind the
    // updates already in the socket buffers) overlap. A timeout fails it.
    let seises = subscribe_in_parallel(&feed, 150, "1");
    // The server is ahead of the engine now: it has sent more than the engine has read.
    pause(Duration::from_millis(500));
    let (sent, read) = (sim.counters().messages_sent, feed.stats().messages);
    assert!(
        sent > read + 1000,
        "no backlog to test against: sent {sent}, read {read}"
    );
    for (i, s) in seises.iter().take(20).enumerate() {
        let id = feed
            .new_consumer(s, |_| {})
            .unwrap_or_else(|e| panic!("new_consumer {i} behind the firehose: {e}"));
        feed.del_consumer(id)
            .unwrap_or_else(|e| panic!("del_consumer {i} behind the firehose: {e}"));
    }
    assert!(feed.shutdown(Duration::from_secs(5)).is_clean());
}

#[test]
fn one_seis_over_ws() {
    many_seises(false, 1);
}

#[test]
fn a_hundred_seises_over_ws_on_one_connection() {
    many_seises(false, 100);
}

#[test]
fn a_hundred_seises_over_wss_on_one_connection() {
    many_seises(true, 100);
}

#[test]
#[ignore = "two minutes in a debug build: CI runs it in release (cargo test --release --features sim --test live -- --ignored)"]
fn a_thousand_seises_over_ws_on_one_connection() {
    many_seises(false, 1_000);
}

// ------------------------------------------------------------------ counted holds (issue 18)

/// Waits (bounded) until the simulator has `n` series open.
fn wait_series_open(sim: &Sim, n: u64, within: Duration) {
    let deadline = now() + within;
    while sim.counters().series_open != n {
        assert!(
            now() < deadline,
            "{} series open, expected {n}",
            sim.counters().series_open
        );
        pause(Duration::from_millis(10));
    }
}

/// Waits (bounded) until `count` reaches `n`.
fn wait_count(count: &AtomicU64, n: u64, within: Duration, what: &str) {
    let deadline = now() + within;
    while count.load(Ordering::SeqCst) < n {
        assert!(
            now() < deadline,
            "{what}: {} of {n}",
            count.load(Ordering::SeqCst)
        );
        pause(Duration::from_millis(10));
    }
}

#[test]
fn one_holders_del_seis_leaves_the_other_holders_consumers_running() {
    let sim = sim();
    let feed = feed(&sim);
    let a = feed.new_seis("BINANCE:BTCUSDT", "1S").unwrap();
    let b = feed.new_seis("BINANCE:BTCUSDT", "1S").unwrap();
    assert!(Arc::ptr_eq(&a, &b), "one seis, two holds");
    assert_eq!(a.holds(), 2);
    let closed = Arc::new(AtomicU64::new(0));
    let c = Arc::clone(&closed);
    feed.new_consumer(&b, move |e| {
        if matches!(e, LiveEvent::Closed(_)) {
            c.fetch_add(1, Ordering::SeqCst);
        }
    })
    .unwrap();
    let mut pull = feed.subscribe(&b).unwrap();
    feed.del_seis(&a).unwrap();
    // B's consumers go on: its callback and its pull handle keep receiving closed bars.
    let before = closed.load(Ordering::SeqCst);
    wait_count(
        &closed,
        before + 2,
        Duration::from_secs(10),
        "B's callback after A's del_seis",
    );
    let deadline = now() + Duration::from_secs(10);
    loop {
        match pull.recv_timeout(Duration::from_secs(3)) {
            Ok(LiveEvent::Closed(_)) => break,
            Ok(_) => {}
            Err(e) => panic!("B's subscription after A's del_seis: {e:?}"),
        }
        assert!(now() < deadline, "B's subscription got no closed bar");
    }
    // B can still add consumers, and the server still has the series.
    let more = Arc::new(AtomicU64::new(0));
    let m = Arc::clone(&more);
    feed.new_consumer(&b, move |e| {
        if matches!(e, LiveEvent::Closed(_)) {
            m.fetch_add(1, Ordering::SeqCst);
        }
    })
    .unwrap();
    wait_count(&more, 1, Duration::from_secs(10), "B's new consumer");
    assert_eq!(sim.counters().series_open, 1);
    let stats = feed.stats();
    assert_eq!(stats.seises.len(), 1);
    assert_eq!(stats.seises[0].holds, 1, "B's hold");
    assert!(feed.shutdown(Duration::from_secs(5)).is_clean());
}

#[test]
fn the_last_holders_del_seis_unsubscribes_and_ends_the_consumers() {
    let sim = sim();
    let feed = feed(&sim);
    let a = feed.new_seis("BINANCE:BTCUSDT", "1S").unwrap();
    let b = feed.new_seis("BINANCE:BTCUSDT", "1S").unwrap();
    let _eth = feed.new_seis("BINANCE:ETHUSDT", "1S").unwrap();
    let runs = Arc::new(AtomicU64::new(0));
    let r = Arc::clone(&runs);
    feed.new_consumer_with(
        &b,
        ConsumerOptions::default().with_updates(true),
        move |_| {
            r.fetch_add(1, Ordering::SeqCst);
        },
    )
    .unwrap();
    let mut pull = feed.subscribe(&b).unwrap();
    wait_count(&runs, 1, Duration::from_secs(10), "B's callback");
    feed.del_seis(&a).unwrap();
    wait_series_open(&sim, 2, Duration::from_secs(5));
    feed.del_seis(&b).unwrap();
    // Now the seis is gone: unsubscribed on the server, out of the feed's stats.
    wait_series_open(&sim, 1, Duration::from_secs(5));
    let stats = feed.stats();
    assert_eq!(stats.seises.len(), 1, "only ETH is left");
    assert!(stats.consumers.is_empty(), "its consumers ended");
    // Its consumers ended: the callback never runs again, the pull handle says Closed.
    let after = runs.load(Ordering::SeqCst);
    pause(Duration::from_millis(1_200));
    assert_eq!(
        runs.load(Ordering::SeqCst),
        after,
        "a callback ran after the last del_seis"
    );
    let mut end = None;
    for _ in 0..10_000 {
        if let Err(e) = pull.try_recv() {
            end = Some(e);
            break;
        }
    }
    assert_eq!(end, Some(RecvError::Closed));
    // A release beyond the holds taken is a typed error, not a second unsubscription.
    assert!(matches!(
        feed.del_seis(&b),
        Err(Error::NotSubscribed { .. })
    ));
    assert!(matches!(
        feed.new_consumer(&b, |_| {}),
        Err(Error::NotSubscribed { .. })
    ));
    assert_eq!(sim.counters().series_open, 1);
    assert!(feed.shutdown(Duration::from_secs(5)).is_clean());
}

#[test]
fn racing_new_seis_and_del_seis_keeps_a_consistent_count() {
    let sim = sim();
    let feed = Arc::new(feed(&sim));
    // With a holder that stays: the seis is never unsubscribed by the others' churn.
    let keeper = feed.new_seis("BINANCE:BTCUSDT", "1S").unwrap();
    let churn = |symbol: &'static str| {
        std::thread::scope(|s| {
            for t in 0..4 {
                let feed = Arc::clone(&feed);
                s.spawn(move || {
                    for i in 0..25 {
                        let seis = feed
                            .new_seis(symbol, "1S")
                            .unwrap_or_else(|e| panic!("thread {t} round {i}: new_seis: {e:?}"));
                        if i % 5 == 0 {
                            let id = feed.new_consumer(&seis, |_| {}).unwrap_or_else(|e| {
                                panic!("thread {t} round {i}: new_consumer: {e:?}")
                            });
                            feed.del_consumer(id).unwrap();
                        }
                        feed.del_seis(&seis)
                            .unwrap_or_else(|e| panic!("thread {t} round {i}: del_seis: {e:?}"));
                    }
                });
            }
        });
    };
    churn("BINANCE:BTCUSDT");
    let stats = feed.stats();
    assert_eq!(stats.seises.len(), 1);
    assert_eq!(stats.seises[0].holds, 1, "only the keeper's hold is left");
    assert_eq!(keeper.holds(), 1);
    wait_series_open(&sim, 1, Duration::from_secs(5));
    let mut pull = feed.subscribe(&keeper).unwrap();
    assert!(pull.recv_timeout(Duration::from_secs(5)).is_ok());
    drop(pull);
    feed.del_seis(&keeper).unwrap();
    wait_series_open(&sim, 0, Duration::from_secs(5));
    assert!(feed.stats().seises.is_empty());
    assert_eq!(keeper.holds(), 0);
    assert!(matches!(
        feed.del_seis(&keeper),
        Err(Error::NotSubscribed { .. })
    ));
    // With no holder that stays: the seis comes and goes; at the end nothing is left.
    churn("BINANCE:ETHUSDT");
    assert!(feed.stats().seises.is_empty(), "{:?}", feed.stats().seises);
    wait_series_open(&sim, 0, Duration::from_secs(5));
    assert!(feed.shutdown(Duration::from_secs(5)).is_clean());
}

// ------------------------------------------------------------------ calls from a callback

/// A feed shared with its own callbacks (they get a `Weak`, so the feed is not kept alive by
/// them), and a channel the callback reports on.
type Report<T> = (mpsc::Sender<T>, mpsc::Receiver<T>);

#[test]
fn del_consumer_of_its_own_id_from_its_callback_returns_at_once() {
    let sim = sim();
    let feed = Arc::new(feed(&sim));
    let btc = feed.new_seis("BINANCE:BTCUSDT", "1S").unwrap();
    let own = Arc::new(Mutex::new(None));
    let (tx, rx): Report<(Result<(), Error>, Duration)> = mpsc::channel();
    let deleted = Arc::new(AtomicBool::new(false));
    let runs_after = Arc::new(AtomicU64::new(0));
    let (weak, o, d, ra) = (
        Arc::downgrade(&feed),
        Arc::clone(&own),
        Arc::clone(&deleted),
        Arc::clone(&runs_after),
    );
    let id = feed
        .new_consumer_with(
            &btc,
            ConsumerOptions::default().with_updates(true),
            move |_| {
                if d.load(Ordering::SeqCst) {
                    ra.fetch_add(1, Ordering::SeqCst);
                    return;
                }
                let Some(id) = *o.lock().unwrap() else { return };
                let Some(feed) = weak.upgrade() else { return };
                let start = now();
                let r = feed.del_consumer(id);
                let took = now().duration_since(start);
                d.store(true, Ordering::SeqCst);
                let _ = tx.send((r, took));
            },
        )
        .unwrap();
    *own.lock().unwrap() = Some(id);
    let (r, took) = rx
        .recv_timeout(Duration::from_secs(5))
        .expect("del_consumer from its own callback did not return within 5 s");
    assert!(r.is_ok(), "{r:?}");
    assert!(took < Duration::from_secs(2), "del_consumer took {took:?}");
    pause(Duration::from_millis(1_500));
    assert_eq!(runs_after.load(Ordering::SeqCst), 0, "it ran again");
    assert!(feed.stats().consumers.is_empty());
    assert!(matches!(
        feed.del_consumer(id),
        Err(Error::InvalidRequest(_))
    ));
    assert!(feed.shutdown(Duration::from_secs(5)).is_clean());
}

#[test]
fn del_seis_from_a_callback_of_that_seis_returns_at_once() {
    let sim = sim();
    let feed = Arc::new(feed(&sim));
    let btc = feed.new_seis("BINANCE:BTCUSDT", "1S").unwrap();
    let (tx, rx): Report<(Result<(), Error>, Duration)> = mpsc::channel();
    let done = Arc::new(AtomicBool::new(false));
    let runs_after = Arc::new(AtomicU64::new(0));
    let (weak, seis, d, ra) = (
        Arc::downgrade(&feed),
        Arc::clone(&btc),
        Arc::clone(&done),
        Arc::clone(&runs_after),
    );
    feed.new_consumer_with(
        &btc,
        ConsumerOptions::default().with_updates(true),
        move |_| {
            if d.load(Ordering::SeqCst) {
                ra.fetch_add(1, Ordering::SeqCst);
                return;
            }
            let Some(feed) = weak.upgrade() else { return };
            let start = now();
            let r = feed.del_seis(&seis);
            let took = now().duration_since(start);
            d.store(true, Ordering::SeqCst);
            let _ = tx.send((r, took));
        },
    )
    .unwrap();
    let (r, took) = rx
        .recv_timeout(Duration::from_secs(5))
        .expect("del_seis from its own callback did not return within 5 s");
    assert!(r.is_ok(), "{r:?}");
    assert!(took < Duration::from_secs(2), "del_seis took {took:?}");
    wait_series_open(&sim, 0, Duration::from_secs(5));
    pause(Duration::from_millis(1_500));
    assert_eq!(runs_after.load(Ordering::SeqCst), 0, "it ran again");
    let stats = feed.stats();
    assert!(stats.seises.is_empty() && stats.consumers.is_empty());
    assert!(feed.shutdown(Duration::from_secs(5)).is_clean());
}

#[test]
fn shutdown_from_a_callback_stops_everything_and_returns_at_once() {
    let sim = sim();
    let feed = Arc::new(feed(&sim));
    let btc = feed.new_seis("BINANCE:BTCUSDT", "1S").unwrap();
    // Another consumer, which shutdown must stop and join.
    let other_failed = Arc::new(AtomicBool::new(false));
    let of = Arc::clone(&other_failed);
    feed.new_consumer(&btc, move |e| {
        if matches!(e, LiveEvent::Failed(Error::Shutdown)) {
            of.store(true, Ordering::SeqCst);
        }
    })
    .unwrap();
    let (tx, rx): Report<(tvdatafeed::ShutdownReport, Duration)> = mpsc::channel();
    let called = Arc::new(AtomicBool::new(false));
    let (weak, c) = (Arc::downgrade(&feed), Arc::clone(&called));
    let id = feed
        .new_consumer_with(
            &btc,
            ConsumerOptions::default().with_updates(true),
            move |_| {
                if c.swap(true, Ordering::SeqCst) {
                    return;
                }
                let Some(feed) = weak.upgrade() else { return };
                let start = now();
                let report = feed.shutdown(Duration::MAX);
                let _ = tx.send((report, now().duration_since(start)));
            },
        )
        .unwrap();
    let (report, took) = rx
        .recv_timeout(Duration::from_secs(5))
        .expect("shutdown(Duration::MAX) from a callback did not return within 5 s");
    assert!(took < Duration::from_secs(2), "shutdown took {took:?}");
    assert!(report.is_clean(), "{report:?}");
    // The calling thread is reported as the caller, not as unfinished.
    assert_eq!(report.caller, Some(format!("tv-consumer-{}", id.get())));
    assert!(
        other_failed.load(Ordering::SeqCst),
        "the other consumer was stopped"
    );
    assert!(matches!(
        feed.new_seis("BINANCE:ETHUSDT", "1S"),
        Err(Error::Shutdown)
    ));
    assert_eq!(feed.shutdown(Duration::from_millis(10)), report);
}

#[test]
fn dropping_the_last_feed_inside_a_callback_returns_promptly() {
    let sim = sim();
    let feed = Arc::new(feed(&sim));
    let btc = feed.new_seis("BINANCE:BTCUSDT", "1S").unwrap();
    let slot: Arc<Mutex<Option<Arc<LiveFeed>>>> = Arc::new(Mutex::new(None));
    let (tx, rx): Report<Duration> = mpsc::channel();
    let s = Arc::clone(&slot);
    feed.new_consumer_with(
        &btc,
        ConsumerOptions::default().with_updates(true),
        move |_| {
            let last = s.lock().unwrap().take();
            if let Some(feed) = last {
                let start = now();
                drop(feed);
                let _ = tx.send(now().duration_since(start));
            }
        },
    )
    .unwrap();
    // The callback's is now the only handle.
    *slot.lock().unwrap() = Some(feed);
    let took = rx
        .recv_timeout(Duration::from_secs(5))
        .expect("dropping the last feed in a callback did not return within 5 s");
    // The old code waited out Drop's whole 1 s shutdown timeout on its own thread.
    assert!(took < Duration::from_millis(800), "drop took {took:?}");
    wait_series_open(&sim, 0, Duration::from_secs(5));
}
