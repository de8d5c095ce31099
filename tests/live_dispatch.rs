//! Callbacks on a few threads (`LiveFeedBuilder::callback_threads`, issue 19), against the
//! simulator: 1,000 consumers on 2 threads get every close once, in order, each on one thread;
//! del/add churn from 8 threads never runs a removed callback, and neither does a consumer removed
//! with events waiting while its thread is held; a panicking callback ends only
//! itself; a callback blocked past `shutdown`'s timeout is named in the report.
#![allow(
    clippy::disallowed_types,
    reason = "the tests share state between their threads with std types; loom models the engine"
)]

mod util;

use std::{
    collections::{HashMap, HashSet},
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, AtomicU64, Ordering},
        mpsc,
    },
    time::Duration,
};

use tvdatafeed::{
    ConsumerOptions, LiveEvent, LiveFeed, Seis,
    sim::{Sim, SimConfig},
};
use util::{now, pause, unix_s, wait_for};

fn sim() -> Sim {
    Sim::start(SimConfig::default().with_update_interval(Duration::from_millis(500))).unwrap()
}

fn feed(sim: &Sim, threads: usize) -> LiveFeed {
    LiveFeed::builder()
        .endpoint(sim.url())
        .unwrap()
        .callback_threads(threads)
        .command_timeout(Duration::from_secs(60))
        .build()
        .unwrap()
}

fn seises(feed: &LiveFeed, n: usize) -> Vec<Arc<Seis>> {
    (0..n)
        .map(|i| feed.new_seis(format!("BINANCE:SYM{i}"), "1S").unwrap())
        .collect()
}

fn thread_name() -> String {
    std::thread::current().name().unwrap_or("?").to_owned()
}

/// What one consumer saw: its closes' times, and every thread its callback ran on.
#[derive(Default)]
struct Seen {
    closes: Vec<i64>,
    threads: HashSet<String>,
}

#[test]
fn a_thousand_callback_consumers_on_two_threads_get_every_close_once_in_order() {
    let sim = sim();
    let feed = feed(&sim, 2);
    let all = seises(&feed, 50);
    let seen: Arc<Mutex<HashMap<u64, Seen>>> = Arc::default();
    let mut ids = Vec::new();
    for i in 0..1_000 {
        let seis = &all[i % all.len()];
        let s = Arc::clone(&seen);
        let slot = u64::try_from(i).unwrap();
        let id = feed
            .new_consumer(seis, move |e| {
                let mut seen = s.lock().unwrap();
                let mine = seen.entry(slot).or_default();
                mine.threads.insert(thread_name());
                if let LiveEvent::Closed(b) = e {
                    mine.closes.push(b.time);
                }
            })
            .unwrap();
        ids.push(id);
    }
    let to = unix_s() + 3;
    wait_for(
        Duration::from_secs(60),
        "every consumer's closes up to 3 s from now",
        || {
            let seen = seen.lock().unwrap();
            seen.len() == 1_000
                && seen
                    .values()
                    .all(|s| s.closes.last().is_some_and(|&t| t >= to))
        },
    );
    let seen = seen.lock().unwrap();
    let mut threads = HashSet::new();
    for (i, s) in seen.iter() {
        let seis = &all[usize::try_from(*i).unwrap() % all.len()];
        assert_eq!(s.threads.len(), 1, "consumer {i} ran on {:?}", s.threads);
        threads.extend(s.threads.iter().cloned());
        for w in s.closes.windows(2) {
            assert_eq!(w[1], w[0] + 1, "consumer {i} ({seis}): gap or repeat");
        }
    }
    assert_eq!(
        threads,
        HashSet::from(["tv-dispatch-0".to_owned(), "tv-dispatch-1".to_owned()]),
        "the callbacks ran on the two dispatcher threads only"
    );
    drop(seen);
    let stats = feed.stats();
    assert_eq!(stats.consumers.len(), 1_000);
    assert!(stats.consumers.iter().all(|c| !c.panicked));
    let report = feed.shutdown(Duration::from_secs(10));
    assert!(report.is_clean(), "{report:?}");
}

#[test]
fn churn_from_eight_threads_never_runs_a_removed_callback_and_a_steady_consumer_loses_nothing() {
    let sim = sim();
    let feed = Arc::new(feed(&sim, 2));
    let all = seises(&feed, 8);
    // A consumer that stays through the churn, on the same dispatcher threads.
    let steady: Arc<Mutex<Vec<i64>>> = Arc::default();
    let st = Arc::clone(&steady);
    feed.new_consumer(&all[0], move |e| {
        if let LiveEvent::Closed(b) = e {
            st.lock().unwrap().push(b.time);
        }
    })
    .unwrap();
    let after_removal = Arc::new(AtomicU64::new(0));
    let calls = Arc::new(AtomicU64::new(0));
    let start = now();
    let churners: Vec<_> = (0..8)
        .map(|t| {
            let (feed, all) = (Arc::clone(&feed), all.clone());
            let (after, calls) = (Arc::clone(&after_removal), Arc::clone(&calls));
            std::thread::Builder::new()
                .name(format!("churn-{t}"))
                .spawn(move || {
                    let mut rounds = 0u64;
                    while now().duration_since(start) < Duration::from_secs(10) {
                        let removed = Arc::new(AtomicBool::new(false));
                        let (r, a, c) =
                            (Arc::clone(&removed), Arc::clone(&after), Arc::clone(&calls));
                        let seis = &all[(t + usize::try_from(rounds).unwrap()) % all.len()];
                        // Forming-bar updates too: callbacks run often enough to race the
                        // removal.
                        let id = feed
                            .new_consumer_with(
                                seis,
                                ConsumerOptions::default().with_updates(true),
                                move |_| {
                                    c.fetch_add(1, Ordering::SeqCst);
                                    if r.load(Ordering::SeqCst) {
                                        a.fetch_add(1, Ordering::SeqCst);
                                    }
                                },
                            )
                            .unwrap();
                        pause(Duration::from_millis(u64::try_from(t).unwrap() * 7 % 50));
                        feed.del_consumer(id).unwrap();
                        removed.store(true, Ordering::SeqCst);
                        rounds += 1;
                    }
                    rounds
                })
                .unwrap()
        })
        .collect();
    let rounds: u64 = churners.into_iter().map(|h| h.join().unwrap()).sum();
    assert!(rounds >= 80, "only {rounds} add/remove rounds in 10 s");
    assert!(
        calls.load(Ordering::SeqCst) > 0,
        "no churned callback ever ran"
    );
    // A removed callback running late would most likely do so right after its removal.
    pause(Duration::from_millis(500));
    assert_eq!(
        after_removal.load(Ordering::SeqCst),
        0,
        "a callback ran after its del_consumer returned"
    );
    let steady = steady.lock().unwrap().clone();
    assert!(
        steady.len() >= 8,
        "the steady consumer got {} closes",
        steady.len()
    );
    for w in steady.windows(2) {
        assert_eq!(w[1], w[0] + 1, "the steady consumer: gap or repeat");
    }
    for b in &steady {
        let bar = sim.expected_bar(all[0].symbol(), all[0].interval(), *b);
        assert_eq!(bar.time, *b);
    }
    assert_eq!(
        feed.stats().consumers.len(),
        1,
        "a churned consumer was left behind"
    );
    let report = feed.shutdown(Duration::from_secs(10));
    assert!(report.is_clean(), "{report:?}");
}

/// The removal contract made deterministic (the churn above finds a broken gate only when a
/// removal happens to race a turn): a consumer removed while events wait in its ring, with its
/// thread held up by another consumer's callback, never has its callback run once the holder
/// lets go.
#[test]
fn a_consumer_removed_with_events_waiting_on_a_busy_thread_never_runs_again() {
    let sim = sim();
    // One thread: the holder and the removed consumer share it.
    let feed = feed(&sim, 1);
    let seis = feed.new_seis("BINANCE:BTCUSDT", "1S").unwrap();
    let updates = || ConsumerOptions::default().with_updates(true);
    let (held_tx, held) = mpsc::channel::<()>();
    let (release, released) = mpsc::channel::<()>();
    let released = Mutex::new(released);
    let holder_calls = Arc::new(AtomicU64::new(0));
    let hc = Arc::clone(&holder_calls);
    feed.new_consumer_with(&seis, updates(), move |_| {
        if hc.fetch_add(1, Ordering::SeqCst) == 0 {
            let _ = held_tx.send(());
            // Holds the thread until the test lets go (bounded, so a failed test ends).
            let _ = released
                .lock()
                .unwrap()
                .recv_timeout(Duration::from_secs(30));
        }
    })
    .unwrap();
    let removed = Arc::new(AtomicBool::new(false));
    let after_removal = Arc::new(AtomicU64::new(0));
    let (r, a) = (Arc::clone(&removed), Arc::clone(&after_removal));
    let victim = feed
        .new_consumer_with(&seis, updates(), move |_| {
            if r.load(Ordering::SeqCst) {
                a.fetch_add(1, Ordering::SeqCst);
            }
        })
        .unwrap();
    held.recv_timeout(Duration::from_secs(10))
        .expect("the holder's callback never ran");
    // Events pushed to the victim from now on wait in its ring: its only thread is held.
    let pushed = |feed: &LiveFeed| {
        feed.stats()
            .consumers
            .iter()
            .find(|c| c.id == victim)
            .map_or(0, |c| c.pushed)
    };
    let before = pushed(&feed);
    wait_for(
        Duration::from_secs(10),
        "two events pushed to the victim while its thread is held",
        || pushed(&feed) >= before + 2,
    );
    feed.del_consumer(victim).unwrap();
    removed.store(true, Ordering::SeqCst);
    release.send(()).unwrap();
    // A consumer placed now is polled after the victim's turn (the ready queue is FIFO and the
    // victim's key went on it while the thread was held): once its callback runs, the victim's
    // turn is over.
    let (later_tx, later) = mpsc::channel::<()>();
    let later_tx = Mutex::new(later_tx);
    feed.new_consumer_with(&seis, updates(), move |_| {
        let _ = later_tx.lock().unwrap().send(());
    })
    .unwrap();
    later
        .recv_timeout(Duration::from_secs(10))
        .expect("a consumer placed after the release never ran");
    assert_eq!(
        after_removal.load(Ordering::SeqCst),
        0,
        "a callback ran after its del_consumer returned"
    );
    assert!(
        holder_calls.load(Ordering::SeqCst) >= 2,
        "the holder never went on"
    );
    let report = feed.shutdown(Duration::from_secs(10));
    assert!(report.is_clean(), "{report:?}");
}

#[test]
fn a_panicking_callback_ends_alone_on_a_shared_thread_and_the_others_there_go_on() {
    let sim = sim();
    // One thread: the panicking consumer and the others share it.
    let feed = feed(&sim, 1);
    let all = seises(&feed, 2);
    let panicker = feed
        .new_consumer(&all[0], |e| {
            if matches!(e, LiveEvent::Closed(_)) {
                panic!("a callback that panics (on purpose)");
            }
        })
        .unwrap();
    let closes: Arc<Mutex<Vec<(usize, i64, String)>>> = Arc::default();
    for (i, seis) in all.iter().enumerate() {
        let c = Arc::clone(&closes);
        feed.new_consumer(seis, move |e| {
            if let LiveEvent::Closed(b) = e {
                c.lock().unwrap().push((i, b.time, thread_name()));
            }
        })
        .unwrap();
    }
    wait_for(
        Duration::from_secs(20),
        "four closes of each seis after the panic",
        || {
            let c = closes.lock().unwrap();
            (0..2).all(|i| c.iter().filter(|(s, ..)| *s == i).count() >= 4)
        },
    );
    let stats = feed.stats();
    let p = stats.consumers.iter().find(|c| c.id == panicker).unwrap();
    assert!(p.panicked, "the panic was not counted");
    let closes = closes.lock().unwrap().clone();
    assert!(closes.iter().all(|(.., t)| t == "tv-dispatch-0"));
    for i in 0..2 {
        let times: Vec<i64> = closes
            .iter()
            .filter(|(s, ..)| *s == i)
            .map(|(_, t, _)| *t)
            .collect();
        for w in times.windows(2) {
            assert_eq!(w[1], w[0] + 1, "seis {i}: gap or repeat after the panic");
        }
    }
    feed.del_consumer(panicker).unwrap();
    assert!(feed.shutdown(Duration::from_secs(5)).is_clean());
}

#[test]
fn a_callback_blocked_past_the_shutdown_timeout_is_named_and_shutdown_returns_in_time() {
    let sim = sim();
    let feed = feed(&sim, 1);
    let seis = feed.new_seis("BINANCE:BTCUSDT", "1S").unwrap();
    let (entered_tx, entered) = mpsc::channel::<()>();
    let (release, released) = mpsc::channel::<()>();
    let released = Mutex::new(released);
    let stuck = feed
        .new_consumer(&seis, move |e| {
            if matches!(e, LiveEvent::Closed(_)) {
                let _ = entered_tx.send(());
                // Blocks until the test lets go (bounded, so a failed test ends).
                let _ = released
                    .lock()
                    .unwrap()
                    .recv_timeout(Duration::from_secs(30));
            }
        })
        .unwrap();
    entered
        .recv_timeout(Duration::from_secs(10))
        .expect("the callback never ran");
    let start = now();
    let report = feed.shutdown(Duration::from_millis(500));
    let took = now().duration_since(start);
    assert!(took < Duration::from_secs(3), "shutdown took {took:?}");
    assert_eq!(
        report.unfinished,
        vec![format!("tv-consumer-{} (on tv-dispatch-0)", stuck.get())],
        "{report:?}"
    );
    release.send(()).unwrap();
}

#[test]
fn own_thread_many_seis_and_a_callback_removing_itself_on_a_dispatcher() {
    let sim = sim();
    let feed = Arc::new(feed(&sim, 2));
    let all = seises(&feed, 3);
    let refs: Vec<&Seis> = all.iter().map(|s| &**s).collect();
    let names: Arc<Mutex<HashSet<String>>> = Arc::default();
    let n = Arc::clone(&names);
    let own = feed
        .new_consumer_with(
            &all[0],
            ConsumerOptions::default().with_own_thread(true),
            move |_| {
                n.lock().unwrap().insert(thread_name());
            },
        )
        .unwrap();
    // A many-seis callback consumer on the pool: every seis' closes, in order, on one thread.
    let many: Arc<Mutex<Vec<(u64, i64, String)>>> = Arc::default();
    let m = Arc::clone(&many);
    feed.new_consumer_many(&refs, ConsumerOptions::default(), move |e| {
        if let LiveEvent::Closed(b) = e.event() {
            m.lock()
                .unwrap()
                .push((e.id().get(), b.time, thread_name()));
        }
    })
    .unwrap();
    // One that removes itself from its callback: returns at once, never runs again.
    let me = Arc::new(Mutex::new(None));
    let (tx, rx) = mpsc::channel::<(bool, Duration)>();
    let (weak, mine) = (Arc::downgrade(&feed), Arc::clone(&me));
    let runs_after = Arc::new(AtomicU64::new(0));
    let gone = Arc::new(AtomicBool::new(false));
    let (ra, g) = (Arc::clone(&runs_after), Arc::clone(&gone));
    let remover = feed
        .new_consumer(&all[1], move |e| {
            if g.load(Ordering::SeqCst) {
                ra.fetch_add(1, Ordering::SeqCst);
                return;
            }
            if !matches!(e, LiveEvent::Closed(_)) {
                return;
            }
            let (Some(id), Some(feed)) = (*mine.lock().unwrap(), weak.upgrade()) else {
                return;
            };
            let start = now();
            let ok = feed.del_consumer(id).is_ok();
            g.store(true, Ordering::SeqCst);
            let _ = tx.send((ok, now().duration_since(start)));
        })
        .unwrap();
    *me.lock().unwrap() = Some(remover);
    let (ok, took) = rx
        .recv_timeout(Duration::from_secs(20))
        .expect("no self-removal");
    assert!(
        ok && took < Duration::from_secs(1),
        "del_consumer of itself: {ok} in {took:?}"
    );
    wait_for(
        Duration::from_secs(20),
        "three closes of every seis",
        || {
            let m = many.lock().unwrap();
            all.iter()
                .all(|s| m.iter().filter(|(id, ..)| *id == s.id().get()).count() >= 3)
        },
    );
    assert_eq!(
        runs_after.load(Ordering::SeqCst),
        0,
        "ran after removing itself"
    );
    let own_name = format!("tv-consumer-{}", own.get());
    assert_eq!(*names.lock().unwrap(), HashSet::from([own_name]));
    let many = many.lock().unwrap().clone();
    let threads: HashSet<&str> = many.iter().map(|(.., t)| t.as_str()).collect();
    assert_eq!(
        threads.len(),
        1,
        "the many-seis consumer moved: {threads:?}"
    );
    assert!(threads.iter().all(|t| t.starts_with("tv-dispatch-")));
    for s in &all {
        let times: Vec<i64> = many
            .iter()
            .filter(|(id, ..)| *id == s.id().get())
            .map(|(_, t, _)| *t)
            .collect();
        for w in times.windows(2) {
            assert_eq!(w[1], w[0] + 1, "{s}: gap or repeat");
        }
    }
    assert!(feed.shutdown(Duration::from_secs(5)).is_clean());
}
