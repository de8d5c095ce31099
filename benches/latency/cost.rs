//! Cost and throughput: idle CPU with many quiet seises, the built-in statistics' cost per
//! event, the most live messages per second through the engine against a decode-only reader,
//! and `get_hist` of 5,000 bars against Python's `TvDatafeed.get_hist`.

use std::{
    hint::black_box,
    io::ErrorKind,
    net::TcpStream,
    process::Command,
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    time::Duration,
};

use tungstenite::{Message, client::IntoClientRequest, http::HeaderValue};
use tvdatafeed::{
    Bar, Client, ClientConfig, ConsumerOptions, HistOptions, Interval, LiveEvent, LiveFeed,
    RecvError, WaitStrategy,
    internal::StatsProbe,
    protocol::{ChartEvent, Event, SeriesEvent},
    sim::{Sim, SimConfig},
};

use crate::{
    Mode,
    common::{self, cpu_between, dur, now, pause, thread_cpu},
};

/// Idle CPU: `n` quiet seises of 1-hour bars, default settings, a callback each.
fn idle(n: usize, run: Duration) {
    let symbols = common::symbols(n);
    let sim = Sim::start(
        SimConfig::default()
            .with_quiet_symbols(symbols.iter().map(|s| s.as_str().to_owned()).collect()),
    )
    .expect("sim");
    let feed = LiveFeed::builder()
        .endpoint(sim.url())
        .expect("url")
        .command_timeout(Duration::from_secs(60))
        .build()
        .expect("feed");
    let hour: Interval = "60".parse().expect("interval");
    let seises = common::subscribe_all(&feed, &symbols, hour);
    for s in &seises {
        feed.new_consumer(s, |e| {
            black_box(e);
        })
        .expect("consumer");
    }
    pause(Duration::from_millis(500));
    let t0 = thread_cpu();
    let start = now();
    pause(run);
    let t1 = thread_cpu();
    let secs = start.elapsed().as_secs_f64();
    let engine = cpu_between(&t0, &t1, &["tv-io", "tv-consumer"]);
    let whole = cpu_between(&t0, &t1, &[""]);
    println!(
        "| {n} quiet seises, 1-hour bars, `IoWait::Block`, parking callbacks | {:.1} s | {} per s \
         ({:.3} % of a core) | {} per s |",
        secs,
        dur((engine as f64 / secs) as u64),
        engine as f64 / secs / 1e7,
        dur((whole as f64 / secs) as u64),
    );
    feed.shutdown(Duration::from_secs(10));
}

/// The statistics' work per event, timed over `events` made-up events.
fn stats_cost(events: u32) {
    let sec: Interval = "1S".parse().expect("interval");
    let bar = Bar {
        time: 1_751_833_020,
        open: 1.0,
        high: 2.0,
        low: 0.5,
        close: 1.5,
        volume: Some(3.0),
    };
    for (what, make) in [
        (
            "an update (one clock read, one record)",
            LiveEvent::Update as fn(Bar) -> LiveEvent,
        ),
        (
            "a closed bar (two clock reads, two records)",
            LiveEvent::Closed,
        ),
    ] {
        let mut probe = StatsProbe::new(sec);
        let pushed = now();
        let start = now();
        for i in 0..events {
            let b = Bar {
                time: bar.time + i64::from(i % 64),
                ..bar
            };
            black_box(probe.take(make(b), pushed));
        }
        let with = start.elapsed();
        // The same loop without the statistics: what is left is their cost.
        let start = now();
        for i in 0..events {
            let b = Bar {
                time: bar.time + i64::from(i % 64),
                ..bar
            };
            black_box((make(b), pushed));
        }
        let without = start.elapsed();
        let per = with.saturating_sub(without).as_nanos() as f64 / f64::from(events);
        println!("| {what} | {per:.0} ns |");
    }
}

/// Counts the updates a decode-only reader (a protocol `Connection` on a plain tungstenite
/// socket, no engine) takes per second from `sim`, carrying `symbols`.
fn decode_only(sim: &Sim, n: usize, warm: Duration, run: Duration) -> f64 {
    let symbols = common::symbols(n);
    let minute: Interval = "1".parse().expect("interval");
    let mut req = sim.url().into_client_request().expect("request");
    req.headers_mut().insert(
        "Origin",
        HeaderValue::from_static("https://www.tradingview.com"),
    );
    let tcp = TcpStream::connect(sim.addr()).expect("connect");
    tcp.set_nodelay(true).expect("nodelay");
    let (mut ws, _) = tungstenite::client(req, tcp).expect("upgrade");
    let (mut conn, requests) = crate::bare::setup(&symbols, minute);
    for r in requests {
        ws.send(Message::text(String::from_utf8(r).expect("ascii")))
            .expect("subscribe");
    }
    ws.get_ref()
        .set_read_timeout(Some(Duration::from_millis(100)))
        .expect("timeout");
    let mut updates = 0u64;
    let mut counting = false;
    let warm_end = now() + warm;
    let mut start = warm_end;
    loop {
        while let Some(out) = conn.poll_transmit() {
            let _ = ws.send(Message::text(String::from_utf8(out).expect("ascii")));
        }
        let t = now();
        if !counting && t >= warm_end {
            counting = true;
            start = t;
            updates = 0;
        }
        if counting && t >= start + run {
            break;
        }
        let msg = match ws.read() {
            Ok(Message::Text(m)) => m,
            Ok(_) => continue,
            Err(tungstenite::Error::Io(e))
                if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) =>
            {
                continue;
            }
            Err(e) => panic!("decode-only reader: {e}"),
        };
        let mut bytes = msg.as_bytes().to_vec();
        let _ = conn.handle_message(t, &mut bytes);
        while let Some(e) = conn.poll_event() {
            if let Event::Chart {
                event:
                    ChartEvent::Series {
                        event: SeriesEvent::Update(_),
                        ..
                    },
                ..
            } = e
            {
                updates += 1;
            }
        }
    }
    updates as f64 / start.elapsed().as_secs_f64()
}

/// Updates per second through the whole engine to consumers, `n` seises, the simulator as
/// fast as it goes; consumers take every update.
/// How the throughput run's consumers take their events (one consumer per seis unless
/// "many").
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Consumers {
    /// One thread pulling every subscription with `try_recv` (spinning ring strategy).
    PullSpin,
    /// A parking callback per seis, each on its own `tv-consumer-N` thread.
    CallbackThreads,
    /// A callback per seis on `n` dispatcher threads (`callback_threads(n)`).
    Dispatch(usize),
    /// One many-seis pull consumer, read by one thread with `recv_timeout` (parks).
    ManyPull,
    /// One many-seis callback consumer on its own thread.
    ManyCallback,
}

impl Consumers {
    pub(crate) fn label(self) -> String {
        match self {
            Self::PullSpin => {
                "LiveFeed, one thread pulling every subscription (`try_recv`, spin)".into()
            }
            Self::CallbackThreads => "LiveFeed, a parking callback per seis, a thread each".into(),
            Self::Dispatch(n) => {
                format!("LiveFeed, a callback per seis on {n} dispatcher threads")
            }
            Self::ManyPull => "LiveFeed, one many-seis pull consumer (parks)".into(),
            Self::ManyCallback => "LiveFeed, one many-seis callback consumer".into(),
        }
    }
}

/// What a throughput run measured.
pub(crate) struct Throughput {
    pub(crate) rate: f64,
    pub(crate) lagged: u64,
    /// tv-io's CPU per message.
    pub(crate) io_per_msg: f64,
    /// Every engine and reader thread's CPU per delivered update.
    pub(crate) all_per_update: f64,
    /// The process' threads during the run.
    pub(crate) threads: usize,
}

fn engine_throughput(
    sim: &Sim,
    n: usize,
    how: Consumers,
    warm: Duration,
    run: Duration,
) -> Throughput {
    let symbols = common::symbols(n);
    let minute: Interval = "1".parse().expect("interval");
    let mut builder = LiveFeed::builder()
        .endpoint(sim.url())
        .expect("url")
        .ring_capacity(4096)
        .wait_strategy(if how == Consumers::PullSpin {
            WaitStrategy::Spin
        } else {
            WaitStrategy::default()
        })
        .command_timeout(Duration::from_secs(60));
    if let Consumers::Dispatch(k) = how {
        builder = builder.callback_threads(k);
    }
    let feed = builder.build().expect("feed");
    let seises = common::subscribe_all(&feed, &symbols, minute);
    let options = ConsumerOptions::default().with_updates(true);
    let updates = Arc::new(AtomicU64::new(0));
    let lagged = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let mut puller = None;
    let count = {
        let (updates, lagged) = (Arc::clone(&updates), Arc::clone(&lagged));
        move |e: &LiveEvent| match e {
            LiveEvent::Update(_) => {
                updates.fetch_add(1, Ordering::Relaxed);
            }
            LiveEvent::Lagged { missed, .. } => {
                lagged.fetch_add(*missed, Ordering::Relaxed);
            }
            _ => {}
        }
    };
    match how {
        Consumers::PullSpin => {
            let mut subs: Vec<_> = seises
                .iter()
                .map(|s| feed.subscribe_with(s, options).expect("subscribe"))
                .collect();
            let (updates, lagged, stop) =
                (Arc::clone(&updates), Arc::clone(&lagged), Arc::clone(&stop));
            puller = Some(
                std::thread::Builder::new()
                    .name("latency-pull".into())
                    .spawn(move || {
                        let (mut u, mut l) = (0u64, 0u64);
                        while !stop.load(Ordering::Relaxed) {
                            for s in &mut subs {
                                match s.try_recv() {
                                    Ok(LiveEvent::Update(_)) => u += 1,
                                    Ok(LiveEvent::Lagged { missed, .. }) => l += missed,
                                    Ok(_) | Err(RecvError::Timeout) => {}
                                    Err(_) => return,
                                }
                            }
                            updates.store(u, Ordering::Relaxed);
                            lagged.store(l, Ordering::Relaxed);
                        }
                    })
                    .expect("spawn"),
            );
        }
        Consumers::CallbackThreads | Consumers::Dispatch(_) => {
            for s in &seises {
                let count = count.clone();
                feed.new_consumer_with(s, options, move |e| count(&e))
                    .expect("consumer");
            }
        }
        Consumers::ManyPull => {
            let refs: Vec<&tvdatafeed::Seis> = seises.iter().map(|s| &**s).collect();
            let mut sub = feed
                .subscribe_many_with(&refs, options)
                .expect("subscribe_many");
            let stop = Arc::clone(&stop);
            let count = count.clone();
            puller = Some(
                std::thread::Builder::new()
                    .name("latency-pull".into())
                    .spawn(move || {
                        while !stop.load(Ordering::Relaxed) {
                            match sub.recv_timeout(Duration::from_millis(100)) {
                                Ok(e) => count(e.event()),
                                Err(RecvError::Timeout) => {}
                                Err(_) => return,
                            }
                        }
                    })
                    .expect("spawn"),
            );
        }
        Consumers::ManyCallback => {
            let refs: Vec<&tvdatafeed::Seis> = seises.iter().map(|s| &**s).collect();
            let count = count.clone();
            feed.new_consumer_many(&refs, options, move |e| count(e.event()))
                .expect("consumer");
        }
    }
    pause(warm);
    let (u0, l0, m0, c0) = (
        updates.load(Ordering::Relaxed),
        lagged.load(Ordering::Relaxed),
        feed.stats().messages,
        thread_cpu(),
    );
    let start = now();
    pause(run);
    let secs = start.elapsed().as_secs_f64();
    let (u1, l1, m1, c1) = (
        updates.load(Ordering::Relaxed),
        lagged.load(Ordering::Relaxed),
        feed.stats().messages,
        thread_cpu(),
    );
    let threads = c1.len();
    stop.store(true, Ordering::Relaxed);
    feed.shutdown(Duration::from_secs(10));
    if let Some(p) = puller {
        let _ = p.join();
    }
    let io = cpu_between(&c0, &c1, &["tv-io"]);
    let all = cpu_between(
        &c0,
        &c1,
        &["tv-io", "tv-consumer", "tv-dispatch", "latency-pull"],
    );
    let msgs = (m1 - m0).max(1);
    Throughput {
        rate: (u1 - u0) as f64 / secs,
        lagged: l1 - l0,
        io_per_msg: io as f64 / msgs as f64,
        all_per_update: all as f64 / (u1 - u0).max(1) as f64,
        threads,
    }
}

pub(crate) fn section(mode: &Mode) {
    println!("\n## Cost\n");
    let (idle_n, idle_run, events) = if mode.full {
        (1000, Duration::from_secs(10), 5_000_000)
    } else {
        (10, Duration::from_millis(300), 10_000)
    };
    println!("| what | measured for | engine threads' CPU | whole process (simulator included) |");
    println!("| --- | ---: | ---: | ---: |");
    idle(idle_n, idle_run);
    println!(
        "\nThe built-in statistics (`LiveFeed::stats`), always on: per event a consumer takes \
         (`internal::StatsProbe`: the consumer's own code, timed over {events} events, minus \
         the same loop without it):\n"
    );
    println!("| event | cost |");
    println!("| --- | ---: |");
    stats_cost(events);
}

pub(crate) fn throughput_section(mode: &Mode) {
    println!("\n## Throughput: one connection, 1,000 seises, the simulator as fast as it goes\n");
    let (n, warm, run) = if mode.full {
        (1000, Duration::from_secs(1), Duration::from_secs(10))
    } else {
        (10, Duration::from_millis(200), Duration::from_millis(300))
    };
    let cfg = || SimConfig::default().with_update_interval(Duration::from_millis(1));
    println!(
        "{n} seises updating every 1 ms (an offered {} updates/s, more than the simulator \
         writes), {} s per run after {} s of warm-up; each reader in its own run.\n",
        n * 1000,
        run.as_secs_f64(),
        warm.as_secs_f64()
    );
    println!(
        "| reader | updates/s | vs decode-only | vs the pull row | lagged (dropped for a slow consumer) | tv-io CPU per message | engine + reader CPU per update | threads in the process |"
    );
    println!("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |");
    let sim = Sim::start(cfg()).expect("sim");
    let base = decode_only(&sim, n, warm, run);
    drop(sim);
    println!(
        "| decode only (protocol `Connection` on a tungstenite socket, no engine) | {base:.0} | 1.00 | - | - | - | - | - |"
    );
    let modes = [
        Consumers::PullSpin,
        Consumers::CallbackThreads,
        Consumers::Dispatch(2),
        Consumers::ManyPull,
        Consumers::ManyCallback,
    ];
    let mut pull_rate = None;
    for how in modes {
        let sim = Sim::start(cfg()).expect("sim");
        let t = engine_throughput(&sim, n, how, warm, run);
        let what = how.label();
        let pull = *pull_rate.get_or_insert(t.rate);
        println!(
            "| {what} | {:.0} | {:.2} | {:.2} | {} | {} | {} | {} |",
            t.rate,
            t.rate / base,
            t.rate / pull,
            t.lagged,
            dur(t.io_per_msg as u64),
            dur(t.all_per_update as u64),
            t.threads
        );
        assert!(t.rate > 0.0, "{what}: nothing delivered");
    }
}

/// `get_hist` of 5,000 bars, ours against Python's, both in-process, on one simulator.
pub(crate) fn hist_section(mode: &Mode) {
    println!("\n## History: 5,000 bars, in-process\n");
    let repeats = if mode.full { 30 } else { 2 };
    let sim = Sim::start(SimConfig::default()).expect("sim");
    let client = Client::new(
        ClientConfig::default()
            .with_endpoint(sim.url())
            .expect("url"),
    );
    let mut ours = Vec::with_capacity(repeats);
    for i in 0..=repeats {
        let t = now();
        let h = client
            .get_hist("BINANCE:BTCUSDT", "1", 4_999, &HistOptions::default())
            .expect("hist");
        let d = t.elapsed();
        assert_eq!(h.bars.len() + usize::from(h.forming.is_some()), 5_000);
        if i > 0 {
            ours.push(d.as_nanos() as u64);
        }
    }
    ours.sort_unstable();
    let median = |v: &[u64]| v[v.len() / 2];
    println!(
        "5,000 bars on the wire (ours: 4,999 closed + the forming one; Python: `n_bars=5000`), \
         `BINANCE:BTCUSDT` 1-minute, {repeats} timed calls each after one untimed.\n"
    );
    println!("| client | median | min | max | Python / ours (median) |");
    println!("| --- | ---: | ---: | ---: | ---: |");
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/benches/python/hist.py");
    let py = Command::new("python3")
        .args([
            script,
            &sim.url(),
            "BINANCE:BTCUSDT",
            "5000",
            &repeats.to_string(),
        ])
        .env("TZ", "UTC")
        .output();
    let py: Option<Vec<u64>> = match py {
        Ok(o) if o.status.success() => serde_json::from_slice::<serde_json::Value>(&o.stdout)
            .ok()
            .and_then(|v| {
                v["ns"]
                    .as_array()
                    .map(|a| a.iter().filter_map(serde_json::Value::as_u64).collect())
            }),
        Ok(o) => {
            println!(
                "(Python skipped: {})\n",
                String::from_utf8_lossy(&o.stderr).trim()
            );
            None
        }
        Err(e) => {
            println!("(Python skipped: cannot run python3: {e})\n");
            None
        }
    };
    let ratio = py
        .as_ref()
        .map(|p| {
            let mut p = p.clone();
            p.sort_unstable();
            format!("{:.1}×", median(&p) as f64 / median(&ours) as f64)
        })
        .unwrap_or_else(|| "-".into());
    println!(
        "| tvdatafeed `Client::get_hist` | {} | {} | {} | {ratio} |",
        dur(median(&ours)),
        dur(ours[0]),
        dur(ours[ours.len() - 1])
    );
    if let Some(mut p) = py {
        p.sort_unstable();
        println!(
            "| Python `TvDatafeed.get_hist` | {} | {} | {} | - |",
            dur(median(&p)),
            dur(p[0]),
            dur(p[p.len() - 1])
        );
    }
}
