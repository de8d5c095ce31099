//! Bar close → JetStream acknowledgement and → a subscriber on another connection, beside bar
//! close → `LiveFeed` callback, in one run against the simulator and a `nats-server` started
//! here (loopback, file storage in a temp dir). Prints p50/p99, the publish rate and CPU.
//!
//! `cargo run --release -p tvdatafeed-nats --example bus_latency -- SEISES SECS [dispatch]`
//!
//! With `dispatch`, the feed runs the publisher's callbacks on 2 dispatcher threads
//! (`callback_threads(2)`, as `tvdatafeed publish` does) instead of a thread per seis.
//!
//! The baseline, in the same run and against the same server, with the feed still streaming:
//! a plain async-nats JetStream client with no engine and no publisher, sending the same burst
//! (SEISES messages of a bar's size, one per subject, each with a message id, all in flight at
//! once) at every second boundary. Its start → ack is what the bus itself costs for one burst
//! on this machine; what the publisher adds is measured against it.
#![allow(
    clippy::disallowed_methods,
    clippy::disallowed_types,
    clippy::print_stdout,
    clippy::print_stderr,
    missing_docs,
    reason = "a benchmark program"
)]

#[path = "../tests/util/mod.rs"]
mod util;

use std::{
    sync::{Arc, Mutex},
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use futures_util::StreamExt;
use hdrhistogram::Histogram;
use tvdatafeed::{
    Interval, LiveFeed, Symbol,
    sim::{Sim, SimConfig},
};
use tvdatafeed_nats::{BarKind, BarMessage, NatsConfig, Publisher, PublisherConfig};

fn unix_us() -> i64 {
    i64::try_from(
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_micros(),
    )
    .unwrap()
}

/// CPU seconds (user + system) of this process' threads whose name starts with `prefix`.
fn cpu(prefix: &str) -> f64 {
    let mut ticks = 0u64;
    for t in std::fs::read_dir("/proc/self/task").unwrap().flatten() {
        let stat = std::fs::read_to_string(t.path().join("stat")).unwrap_or_default();
        let (Some(open), Some(close)) = (stat.find('('), stat.rfind(')')) else {
            continue;
        };
        if !stat[open + 1..close].starts_with(prefix) {
            continue;
        }
        let f: Vec<&str> = stat[close + 2..].split(' ').collect();
        ticks += f[11].parse::<u64>().unwrap_or(0) + f[12].parse::<u64>().unwrap_or(0);
    }
    ticks as f64 / 100.0
}

/// The baseline: at each of `secs` second boundaries, `n` JetStream publishes (a bar's size,
/// one subject each, a message id each) sent at once by a plain async-nats client on its own
/// connection; the burst's start → acknowledgement of each.
async fn bare(url: String, n: usize, secs: u64) -> Histogram<u64> {
    use std::future::IntoFuture;

    use futures_util::FutureExt;

    use async_nats::jetstream::{self, message::PublishMessage, stream};
    let client = async_nats::connect(url).await.unwrap();
    let js = jetstream::new(client);
    js.create_stream(stream::Config {
        name: "BARE".to_owned(),
        subjects: vec!["bare.>".to_owned()],
        storage: stream::StorageType::File,
        duplicate_window: Duration::from_secs(120),
        ..Default::default()
    })
    .await
    .unwrap();
    // The size of a bar's message (`BarMessage` JSON).
    let payload = bytes::Bytes::from(format!(
        r#"{{"kind":"closed","symbol":"SIM:T0000","interval":"1S","time":{},"open":100.0,"high":101.5,"low":99.25,"close":100.75,"volume":12345.0}}"#,
        unix_us() / 1_000_000
    ));
    let subjects: Vec<String> = (0..n).map(|k| format!("bare.T{k:04}")).collect();
    let mut hist = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3).unwrap();
    for _ in 0..secs {
        let boundary = (unix_us() / 1_000_000 + 1) * 1_000_000;
        tokio::time::sleep(Duration::from_micros(
            u64::try_from(boundary - unix_us()).unwrap_or(0),
        ))
        .await;
        // From the burst's start, not the boundary: the timer's own lateness is not the bus'.
        let start = unix_us();
        let mut acks = futures_util::stream::FuturesUnordered::new();
        for s in &subjects {
            let msg = PublishMessage::build()
                .payload(payload.clone())
                .message_id(format!("{s}-{boundary}"));
            let ack = js.send_publish(s.clone(), msg).await.unwrap();
            acks.push(ack.into_future());
            // Acknowledgements already in are timed now, not after the last send.
            while let Some(Some(a)) = acks.next().now_or_never() {
                a.unwrap();
                hist.saturating_record(u64::try_from(unix_us() - start).unwrap_or(1).max(1));
            }
        }
        while let Some(a) = acks.next().await {
            a.unwrap();
            hist.saturating_record(u64::try_from(unix_us() - start).unwrap_or(1).max(1));
        }
    }
    hist
}

fn main() {
    let mut args = std::env::args().skip(1);
    let n: usize = args.next().and_then(|a| a.parse().ok()).unwrap_or(30);
    let secs: u64 = args.next().and_then(|a| a.parse().ok()).unwrap_or(20);
    let dispatch = args.next().is_some_and(|a| a == "dispatch");
    let Some(server) = util::server_or_skip("bus_latency") else {
        return;
    };
    let sim = Sim::start(SimConfig::default()).unwrap();
    let one_s: Interval = "1S".parse().unwrap();
    let feed = Arc::new(
        {
            let b = LiveFeed::builder().endpoint(sim.url()).unwrap();
            if dispatch { b.callback_threads(2) } else { b }
        }
        .build()
        .unwrap(),
    );
    let publisher =
        Publisher::start(PublisherConfig::new(NatsConfig::new(server.url())).max_in_flight(1024))
            .unwrap();
    let held: Vec<_> = (0..n)
        .map(|k| {
            let s = Symbol::new("SIM", &format!("T{k:04}")).unwrap();
            feed.new_seis(&s, one_s).unwrap()
        })
        .collect();
    // The subscriber: a core subscription on another connection, on its own runtime.
    let sub_hist = Arc::new(Mutex::new(
        Histogram::<u64>::new_with_bounds(1, 60_000_000, 3).unwrap(),
    ));
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .thread_name("bench-sub")
        .enable_all()
        .build()
        .unwrap();
    let h = Arc::clone(&sub_hist);
    let url = server.url();
    rt.block_on(async {
        let client = async_nats::connect(url).await.unwrap();
        let mut sub = client.subscribe("tvdatafeed.bars.>").await.unwrap();
        client.flush().await.unwrap();
        tokio::spawn(async move {
            let _client = client;
            while let Some(m) = sub.next().await {
                let now = unix_us();
                if let Some(b) = BarMessage::from_json(&m.payload)
                    && b.kind == BarKind::Closed
                {
                    let close = b.interval.next_bar_open(b.bar.time) * 1_000_000;
                    if let Ok(us) = u64::try_from(now - close) {
                        h.lock().unwrap().saturating_record(us.max(1));
                    }
                }
            }
        });
    });
    for s in &held {
        publisher.add(&feed, s).unwrap();
    }
    // Warm-up: the first bars include the subscription itself.
    std::thread::sleep(Duration::from_secs(3));
    sub_hist.lock().unwrap().reset();
    let before = publisher.stats();
    let (cpu_nats0, cpu_all0) = (cpu("tv-nats"), cpu(""));
    let (cpu_cons0, cpu_io0) = (cpu("tv-consumer") + cpu("tv-dispatch"), cpu("tv-io"));
    std::thread::sleep(Duration::from_secs(secs));
    let after = publisher.stats();
    let (cpu_nats, cpu_all) = (cpu("tv-nats") - cpu_nats0, cpu("") - cpu_all0);
    let (cpu_cons, cpu_io) = (
        cpu("tv-consumer") + cpu("tv-dispatch") - cpu_cons0,
        cpu("tv-io") - cpu_io0,
    );
    let report = publisher.stop(Duration::from_secs(30));
    // The baseline, with the feed still streaming (the same load on the machine, minus the
    // publisher).
    let bare_hist = rt.block_on(bare(server.url(), n, secs));
    drop(held);
    feed.shutdown(Duration::from_secs(5));
    let ms = |us: u64| us as f64 / 1000.0;
    let s = &report.stats;
    let sub = sub_hist.lock().unwrap();
    println!(
        "{n} seises of 1S bars, {secs} s measured (after 3 s warm-up), release build, {}",
        if dispatch {
            "callbacks on 2 dispatcher threads"
        } else {
            "a callback thread per seis"
        }
    );
    println!("                                   p50        p99       bars (whole run)");
    let (a50, a99, _, ac) = s.close_to_callback_us;
    println!(
        "  bar close → LiveFeed callback   {:>7.2} ms {:>7.2} ms {ac:>8}",
        ms(a50),
        ms(a99)
    );
    let (b50, b99, _, bc) = s.close_to_ack_us;
    println!(
        "  bar close → JetStream ack       {:>7.2} ms {:>7.2} ms {bc:>8}",
        ms(b50),
        ms(b99)
    );
    println!(
        "  bar close → subscriber (2nd conn) {:>5.2} ms {:>7.2} ms {:>8} (measured window only)",
        ms(sub.value_at_quantile(0.5)),
        ms(sub.value_at_quantile(0.99)),
        sub.len()
    );
    println!(
        "  baseline: burst start → JetStream ack {:>5.2} ms {:>7.2} ms {:>8} (plain async-nats client, {n} messages at each boundary)",
        ms(bare_hist.value_at_quantile(0.5)),
        ms(bare_hist.value_at_quantile(0.99)),
        bare_hist.len()
    );
    println!(
        "  the publisher adds over the baseline at p50: {:+.2} ms (p50s subtracted: ack − callback − baseline; the baseline covers the measured window only)",
        ms(b50) - ms(a50) - ms(bare_hist.value_at_quantile(0.5))
    );
    let rate = (after.published + after.duplicates - before.published - before.duplicates) as f64
        / secs as f64;
    println!(
        "publish rate {rate:.0} bars/s acknowledged; buffer full {} times; unacknowledged at stop {}",
        s.buffer_full, s.buffered
    );
    println!(
        "CPU over the window (share of one core): tv-nats runtime {:.1}%, publisher callbacks (tv-consumer-*, tv-dispatch-*) {:.1}%, engine tv-io {:.1}%, whole process (sim and subscriber included) {:.1}%",
        100.0 * cpu_nats / secs as f64,
        100.0 * cpu_cons / secs as f64,
        100.0 * cpu_io / secs as f64,
        100.0 * cpu_all / secs as f64
    );
    assert!(report.is_complete(), "{report:?}");
    rt.shutdown_timeout(Duration::from_secs(1));
}
