//! End to end: the simulator's write of a live message to the moment a consumer sees the
//! update it carries, through the whole engine (socket, websocket, frames, parse, session,
//! core, registry, ring, wake-up), against bare readers of the same bytes in the same run.

use std::{sync::mpsc, time::Duration};

use hdrhistogram::Histogram;
use tvdatafeed::{
    ConsumerOptions, Interval, IoWait, LiveEvent, LiveFeed, RecvError, WaitStrategy, sim::Sim,
};

use crate::{
    Mode,
    bare::{self, Reader},
    common::{self, Seen, cells, cpu_between, dur, now, pause, thread_cpu},
};

/// How a consumer takes its events.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Take {
    /// `new_consumer`: a callback on a `tv-consumer-N` thread per seis.
    Callback,
    /// `subscribe`: pull handles, all polled by one thread of the caller's.
    Pull,
    /// `subscribe` as async `Stream`s: one task per subscription on a current-thread tokio
    /// runtime (the `async` feature).
    Async,
    /// `subscribe_many`: one consumer, one ring, for every seis, read by one thread of the
    /// caller's with `recv_timeout` (it parks when the ring is empty).
    Many,
    /// `new_consumer_many`: one consumer, one ring, one `tv-consumer-N` thread for every seis.
    ManyCallback,
    /// `new_consumer` per seis on 2 dispatcher threads (`callback_threads(2)`).
    Dispatch,
}

/// One engine configuration.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Setup {
    pub(crate) io: IoWait,
    pub(crate) wait: WaitStrategy,
    pub(crate) take: Take,
}

impl Setup {
    fn name(&self) -> String {
        let io = match self.io {
            IoWait::Block => "block",
            _ => "busy-poll (core 0)",
        };
        let wait = match self.wait {
            WaitStrategy::Spin => "spin".to_owned(),
            w if w == WaitStrategy::default() => "park".to_owned(),
            WaitStrategy::SpinYieldPark { spins, yields } => {
                format!("park ({spins} spins, {yields} yields)")
            }
            w => format!("{w:?}"),
        };
        let take = match self.take {
            Take::Callback => "callback",
            Take::Pull => "pull",
            Take::Async => "async Stream (tokio current-thread)",
            Take::Many => "one many-seis pull consumer",
            Take::ManyCallback => "one many-seis callback consumer",
            Take::Dispatch => "a callback per seis on 2 dispatcher threads",
        };
        format!("engine, {io}, {take}, {wait}")
    }
}

/// One measured run.
pub(crate) struct Outcome {
    pub(crate) name: String,
    pub(crate) hist: Histogram<u64>,
    pub(crate) unmatched: u64,
    /// CPU time of the engine's threads (tv-io, consumers, the pull or async thread) in the
    /// window.
    pub(crate) cpu_ns: u64,
    /// Live messages the simulator wrote in the window.
    pub(crate) sent: u64,
    pub(crate) lagged: u64,
}

/// The update period that gives each size a useful number of samples.
pub(crate) fn update_for(n: usize) -> Duration {
    match n {
        1 => Duration::from_millis(2),
        2..=100 => Duration::from_millis(20),
        _ => Duration::from_millis(50),
    }
}

/// One engine run: `n` seises of 1-minute bars (updates, few closes), a consumer per seis
/// with updates, `warm` then `run` measured.
pub(crate) fn engine(n: usize, setup: Setup, warm: Duration, run: Duration) -> Outcome {
    let sim = Sim::start(common::sim_config(update_for(n))).expect("sim");
    let interval: Interval = "1".parse().expect("interval");
    let symbols = common::symbols(n);
    let index = bare::index(&symbols);
    let mut builder = LiveFeed::builder()
        .endpoint(sim.url())
        .expect("url")
        .io_wait(setup.io)
        .wait_strategy(setup.wait)
        .ring_capacity(4096)
        .command_timeout(Duration::from_secs(60));
    if setup.io == IoWait::BusyPoll {
        builder = builder.io_core(Some(0));
    }
    if setup.take == Take::Dispatch {
        builder = builder.callback_threads(2);
    }
    let feed = builder.build().expect("feed");
    let seises = common::subscribe_all(&feed, &symbols, interval);
    let options = ConsumerOptions::default().with_updates(true);
    let per_seis =
        (((warm + run).as_millis() as usize) / update_for(n).as_millis().max(1) as usize + 64)
            .min(1 << 20);
    let (tx, rx) = mpsc::channel::<(Vec<Seen>, u64)>();
    let mut pull = None;
    match setup.take {
        Take::Callback | Take::Dispatch => {
            for (i, seis) in seises.iter().enumerate() {
                let mut rec = Recorder {
                    seen: Vec::with_capacity(per_seis),
                    lagged: 0,
                    tx: tx.clone(),
                };
                let seis_no = i as u32;
                feed.new_consumer_with(seis, options, move |e| match e {
                    LiveEvent::Update(bar) => {
                        let at = now();
                        rec.seen.push(Seen {
                            seis: seis_no,
                            bar,
                            at,
                        });
                    }
                    LiveEvent::Lagged { missed, .. } => rec.lagged += missed,
                    _ => {}
                })
                .expect("consumer");
            }
        }
        Take::Pull => {
            let subs: Vec<_> = seises
                .iter()
                .map(|s| feed.subscribe_with(s, options).expect("subscribe"))
                .collect();
            let spin = setup.wait == WaitStrategy::Spin;
            let cap = per_seis * subs.len();
            pull = Some(
                std::thread::Builder::new()
                    .name("latency-pull".into())
                    .spawn(move || pull_loop(subs, spin, cap))
                    .expect("spawn"),
            );
        }
        Take::Async => {
            let subs: Vec<_> = seises
                .iter()
                .map(|s| feed.subscribe_with(s, options).expect("subscribe"))
                .collect();
            pull = Some(
                std::thread::Builder::new()
                    .name("latency-async".into())
                    .spawn(move || async_loop(subs, per_seis))
                    .expect("spawn"),
            );
        }
        Take::Many => {
            let refs: Vec<&tvdatafeed::Seis> = seises.iter().map(|s| &**s).collect();
            let mut sub = feed
                .subscribe_many_with(&refs, options)
                .expect("subscribe_many");
            let number: std::collections::HashMap<tvdatafeed::SeisId, u32> = seises
                .iter()
                .enumerate()
                .map(|(i, s)| (s.id(), i as u32))
                .collect();
            let cap = per_seis * seises.len();
            pull = Some(
                std::thread::Builder::new()
                    .name("latency-pull".into())
                    .spawn(move || {
                        let mut seen = Vec::with_capacity(cap);
                        let mut lagged = 0;
                        loop {
                            match sub.recv_timeout(Duration::from_millis(100)) {
                                Ok(e) => match e.event() {
                                    LiveEvent::Update(bar) => {
                                        let at = now();
                                        seen.push(Seen {
                                            seis: number[&e.id()],
                                            bar: *bar,
                                            at,
                                        });
                                    }
                                    LiveEvent::Lagged { missed, .. } => lagged += missed,
                                    _ => {}
                                },
                                Err(RecvError::Timeout) => {}
                                Err(_) => break,
                            }
                        }
                        (seen, lagged)
                    })
                    .expect("spawn"),
            );
        }
        Take::ManyCallback => {
            let refs: Vec<&tvdatafeed::Seis> = seises.iter().map(|s| &**s).collect();
            let number: std::collections::HashMap<tvdatafeed::SeisId, u32> = seises
                .iter()
                .enumerate()
                .map(|(i, s)| (s.id(), i as u32))
                .collect();
            let mut rec = Recorder {
                seen: Vec::with_capacity(per_seis * seises.len()),
                lagged: 0,
                tx: tx.clone(),
            };
            feed.new_consumer_many(&refs, options, move |e| match e.event() {
                LiveEvent::Update(bar) => {
                    let at = now();
                    rec.seen.push(Seen {
                        seis: number[&e.id()],
                        bar: *bar,
                        at,
                    });
                }
                LiveEvent::Lagged { missed, .. } => rec.lagged += missed,
                _ => {}
            })
            .expect("consumer");
        }
    }
    drop(tx);
    pause(warm);
    let _ = sim.take_live_sends();
    let from = now();
    let cpu0 = thread_cpu();
    pause(run);
    let cpu1 = thread_cpu();
    let to = now();
    let sends = sim.take_live_sends();
    let sent = sends.iter().filter(|s| s.at >= from && s.at < to).count() as u64;
    let sends = common::sends_by_key(sends, &index);
    feed.shutdown(Duration::from_secs(10));
    let mut seen = Vec::new();
    let mut lagged = 0;
    while let Ok((s, l)) = rx.recv_timeout(Duration::from_secs(5)) {
        seen.extend(s);
        lagged += l;
    }
    if let Some(h) = pull {
        let (s, l) = h.join().expect("pull thread");
        seen.extend(s);
        lagged += l;
    }
    let seen: Vec<Seen> = seen.into_iter().filter(|s| s.at < to).collect();
    let (hist, unmatched) = common::match_seen(&seen, &sends, from);
    Outcome {
        name: setup.name(),
        hist,
        unmatched,
        cpu_ns: cpu_between(
            &cpu0,
            &cpu1,
            &[
                "tv-io",
                "tv-consumer",
                "tv-dispatch",
                "latency-pull",
                "latency-async",
            ],
        ),
        sent,
        lagged,
    }
}

/// A callback's record; handed back when the callback is dropped (its consumer ended).
struct Recorder {
    seen: Vec<Seen>,
    lagged: u64,
    tx: mpsc::Sender<(Vec<Seen>, u64)>,
}

impl Drop for Recorder {
    fn drop(&mut self) {
        let _ = self.tx.send((std::mem::take(&mut self.seen), self.lagged));
    }
}

/// The pull thread: one subscription blocks in `recv`; many are swept with `try_recv`.
fn pull_loop(mut subs: Vec<tvdatafeed::Subscription>, spin: bool, cap: usize) -> (Vec<Seen>, u64) {
    let mut seen = Vec::with_capacity(cap);
    let mut lagged = 0;
    let mut closed = vec![false; subs.len()];
    let mut open = subs.len();
    let one = subs.len() == 1 && !spin;
    while open > 0 {
        for (i, sub) in subs.iter_mut().enumerate() {
            if closed[i] {
                continue;
            }
            let r = if one {
                sub.recv_timeout(Duration::from_millis(100))
            } else {
                sub.try_recv()
            };
            match r {
                Ok(LiveEvent::Update(bar)) => {
                    let at = now();
                    seen.push(Seen {
                        seis: i as u32,
                        bar,
                        at,
                    });
                }
                Ok(LiveEvent::Lagged { missed, .. }) => lagged += missed,
                Ok(_) | Err(RecvError::Timeout) => {}
                Err(_) => {
                    closed[i] = true;
                    open -= 1;
                }
            }
        }
        if !one {
            std::hint::spin_loop();
        }
    }
    (seen, lagged)
}

/// The async thread: a current-thread tokio runtime, one task per subscription awaiting
/// `StreamExt::next`; the task sleeps while its ring is empty and the push wakes it.
fn async_loop(subs: Vec<tvdatafeed::Subscription>, per_seis: usize) -> (Vec<Seen>, u64) {
    use futures_util::StreamExt;

    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .expect("runtime");
    rt.block_on(async move {
        let tasks: Vec<_> = subs
            .into_iter()
            .enumerate()
            .map(|(i, mut sub)| {
                tokio::spawn(async move {
                    let mut seen = Vec::with_capacity(per_seis);
                    let mut lagged = 0;
                    while let Some(e) = sub.next().await {
                        match e {
                            LiveEvent::Update(bar) => {
                                let at = now();
                                seen.push(Seen {
                                    seis: i as u32,
                                    bar,
                                    at,
                                });
                            }
                            LiveEvent::Lagged { missed, .. } => lagged += missed,
                            _ => {}
                        }
                    }
                    (seen, lagged)
                })
            })
            .collect();
        let mut seen = Vec::new();
        let mut lagged = 0;
        for t in tasks {
            let (s, l) = t.await.expect("stream task");
            seen.extend(s);
            lagged += l;
        }
        (seen, lagged)
    })
}

/// One bare-reader run with the same simulator settings.
pub(crate) fn baseline(
    n: usize,
    reader: Reader,
    busy: bool,
    warm: Duration,
    run: Duration,
) -> Outcome {
    let sim = Sim::start(common::sim_config(update_for(n))).expect("sim");
    let interval: Interval = "1".parse().expect("interval");
    let symbols = common::symbols(n);
    let index = bare::index(&symbols);
    let (seen, from, cpu_ns) = bare::run(reader, busy, &sim, &symbols, interval, warm, run);
    let to = from + run;
    let sends = sim.take_live_sends();
    let sent = sends.iter().filter(|s| s.at >= from && s.at < to).count() as u64;
    let sends = common::sends_by_key(sends, &index);
    let seen: Vec<Seen> = seen.into_iter().filter(|s| s.at < to).collect();
    let (hist, unmatched) = common::match_seen(&seen, &sends, from);
    let what = match reader {
        Reader::Tungstenite => "bare tungstenite",
        Reader::Tcp => "bare TCP",
    };
    Outcome {
        name: format!(
            "{what}, {}",
            if busy { "busy-poll (core 0)" } else { "block" }
        ),
        hist,
        unmatched,
        cpu_ns,
        sent,
        lagged: 0,
    }
}

/// The table row of an outcome; `base` is the bare tungstenite reader of the same mode.
pub(crate) fn row(n: usize, o: &Outcome, base: Option<&Histogram<u64>>) -> String {
    let added = match base {
        Some(b) if !o.hist.is_empty() && !b.is_empty() => format!(
            "+{} / +{}",
            dur(o
                .hist
                .value_at_quantile(0.5)
                .saturating_sub(b.value_at_quantile(0.5))),
            dur(o
                .hist
                .value_at_quantile(0.99)
                .saturating_sub(b.value_at_quantile(0.99)))
        ),
        _ => "-".into(),
    };
    let cpu = if o.sent > 0 && o.cpu_ns > 0 {
        dur(o.cpu_ns.saturating_mul(1000) / o.sent)
    } else {
        "-".into()
    };
    format!(
        "| {n} | {} {} {added} | {cpu} | {} | {} | {} |",
        o.name,
        cells(&o.hist),
        o.sent,
        o.unmatched,
        o.lagged
    )
}

/// The section: every size, every I/O mode, the baselines first.
pub(crate) fn section(mode: &Mode) {
    let (warm, run) = if mode.full {
        (Duration::from_secs(2), Duration::from_secs(10))
    } else {
        (Duration::from_millis(300), Duration::from_millis(500))
    };
    let sizes: &[usize] = if mode.full { &[1, 100, 1000] } else { &[1] };
    println!("\n## End to end: simulator write → consumer sees the update\n");
    println!(
        "Per run: {} s warm-up, {} s measured; 1-minute bars, every update delivered \
         (`ConsumerOptions::with_updates`); the simulator writes each live message on its own \
         and stamps it just before the write. Update period per seis: 2 ms at 1 seis, 20 ms \
         at 100, 50 ms at 1,000. \"added\" = this row minus the bare tungstenite reader of the \
         same I/O mode, at p50 / p99. \"CPU/1k\" = CPU time of the engine's threads per 1,000 \
         live messages written.\n",
        warm.as_secs_f64(),
        run.as_secs_f64()
    );
    println!(
        "| seises | reader | p50 | p99 | p99.9 | max | samples | added p50 / p99 | CPU/1k | \
         written | unmatched | lagged |"
    );
    println!(
        "| ---: | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"
    );
    let modes: &[bool] = if mode.full { &[false, true] } else { &[false] };
    for &n in sizes {
        for &busy in modes {
            let tcp = baseline(n, Reader::Tcp, busy, warm, run);
            println!("{}", row(n, &tcp, None));
            let ws = baseline(n, Reader::Tungstenite, busy, warm, run);
            println!("{}", row(n, &ws, None));
            let io = if busy {
                IoWait::BusyPoll
            } else {
                IoWait::Block
            };
            let mut setups = vec![
                Setup {
                    io,
                    wait: WaitStrategy::default(),
                    take: Take::Callback,
                },
                Setup {
                    io,
                    wait: WaitStrategy::Spin,
                    take: Take::Pull,
                },
            ];
            if !busy {
                // The default parks after 128 spins and 16 yields; without the yields.
                setups.push(Setup {
                    io,
                    wait: WaitStrategy::SpinYieldPark {
                        spins: 128,
                        yields: 0,
                    },
                    take: Take::Callback,
                });
            }
            if n == 1 {
                setups.push(Setup {
                    io,
                    wait: WaitStrategy::Spin,
                    take: Take::Callback,
                });
                setups.push(Setup {
                    io,
                    wait: WaitStrategy::default(),
                    take: Take::Pull,
                });
            }
            // Beside the pull row: the same handles as async streams, parking strategy (the
            // task sleeps; the push wakes it).
            let async_row = Setup {
                io,
                wait: WaitStrategy::default(),
                take: Take::Async,
            };
            if !mode.full {
                // Test mode: the first row, and the async path end to end.
                setups.truncate(1);
                setups.push(async_row);
            } else if n == 1 || !busy {
                setups.push(async_row);
            }
            for s in setups {
                let o = engine(n, s, warm, run);
                assert!(
                    !o.hist.is_empty(),
                    "{}: no update matched the simulator's writes",
                    o.name
                );
                println!("{}", row(n, &o, Some(&ws.hist)));
            }
        }
    }
}

/// Issue 19's rows: at 1, 100 and 1,000 seises, the thread-per-seis callbacks of today beside
/// one many-seis consumer (pull, then callback), all parking, blocking I/O, against the bare
/// tungstenite reader of the same run.
pub(crate) fn many_section(mode: &Mode) {
    let (warm, run) = if mode.full {
        (Duration::from_secs(2), Duration::from_secs(10))
    } else {
        (Duration::from_millis(300), Duration::from_millis(500))
    };
    let sizes: &[usize] = if mode.full { &[1, 100, 1000] } else { &[1] };
    println!("\n## End to end: one consumer for many seises\n");
    println!(
        "As the section above (same update periods, every update delivered), blocking I/O, the \
         default parking strategy: a callback thread per seis (today's), a callback per seis on \
         2 dispatcher threads, one many-seis pull consumer read by one thread, one many-seis \
         callback consumer (one thread).\n"
    );
    println!(
        "| seises | reader | p50 | p99 | p99.9 | max | samples | added p50 / p99 | CPU/1k | \
         written | unmatched | lagged |"
    );
    println!(
        "| ---: | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"
    );
    for &n in sizes {
        let ws = baseline(n, Reader::Tungstenite, false, warm, run);
        println!("{}", row(n, &ws, None));
        let takes: &[Take] = if mode.full {
            &[
                Take::Callback,
                Take::Dispatch,
                Take::Many,
                Take::ManyCallback,
            ]
        } else {
            &[Take::Many, Take::ManyCallback, Take::Dispatch]
        };
        for &take in takes {
            let o = engine(
                n,
                Setup {
                    io: IoWait::Block,
                    wait: WaitStrategy::default(),
                    take,
                },
                warm,
                run,
            );
            assert!(
                !o.hist.is_empty(),
                "{}: no update matched the simulator's writes",
                o.name
            );
            println!("{}", row(n, &o, Some(&ws.hist)));
        }
    }
}
