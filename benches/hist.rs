//! Historical download and simulator throughput on loopback.
//!
//! - `hist_5000`: `Client::get_hist` of 4,999 closed bars (+ the forming one) from the
//!   simulator over ws: connect, upgrade, one 5,000-bar load, parse, close. Reported as bars/s.
//! - `sim_live_du`: live `du` messages per second the simulator pushes over ONE connection
//!   carrying 1,000 series, each updating every 5 ms (a 200,000 msg/s offered load), read and
//!   decoded by a `Connection` (framing, parsing, routing to its chart session). The simulator
//!   must never be the latency bench's bottleneck.
//!
//! `cargo bench --bench hist`; figures go in BENCHMARKS.md.
#![allow(
    missing_docs,
    clippy::print_stderr,
    reason = "a bench binary reports on stderr"
)]

use std::{
    hint::black_box,
    io::ErrorKind,
    net::TcpStream,
    time::{Duration, Instant},
};

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use tungstenite::{Message, client::IntoClientRequest, http::HeaderValue};
use tvdatafeed::{
    Client, ClientConfig, HistOptions,
    protocol::{
        ChartConfig, ChartEvent, Connection, ConnectionConfig, Event, SeriesEvent, SeriesKey,
        SeriesRequest,
    },
    sim::{Sim, SimConfig},
};

fn hist(c: &mut Criterion) {
    let sim = Sim::start(SimConfig::default()).expect("sim");
    let client = Client::new(
        ClientConfig::default()
            .with_endpoint(sim.url())
            .expect("url"),
    );
    let symbol: tvdatafeed::Symbol = "BINANCE:BTCUSDT".parse().expect("symbol");
    let interval: tvdatafeed::Interval = "1".parse().expect("interval");
    let mut g = c.benchmark_group("hist");
    g.throughput(Throughput::Elements(5_000));
    g.sample_size(20);
    g.bench_function("hist_5000", |b| {
        b.iter(|| {
            let h = client
                .get_hist(&symbol, interval, 4_999, &HistOptions::default())
                .expect("hist");
            assert_eq!(h.bars.len(), 4_999);
            black_box(h)
        })
    });
    g.finish();
}

#[allow(clippy::disallowed_methods, reason = "a bench measures wall time")]
fn now() -> Instant {
    Instant::now()
}

fn sim_live(c: &mut Criterion) {
    const SERIES: u32 = 1_000;
    let sim = Sim::start(SimConfig::default().with_update_interval(Duration::from_millis(5)))
        .expect("sim");
    let mut req = sim.url().into_client_request().expect("request");
    req.headers_mut().insert(
        "Origin",
        HeaderValue::from_static("https://www.tradingview.com"),
    );
    let tcp = TcpStream::connect(sim.addr()).expect("connect");
    tcp.set_nodelay(true).expect("nodelay");
    let (mut ws, _) = tungstenite::client(req, tcp).expect("upgrade");
    let t0 = now();
    let mut session = Connection::new(t0, ConnectionConfig::default());
    let chart = session.add_chart_named(t0, "cs_benchbenchbe", ChartConfig::default());
    for i in 0..SERIES {
        let symbol = format!("BINANCE:SYM{i}").parse().expect("symbol");
        session
            .chart_mut(chart)
            .expect("chart")
            .add_series(
                t0,
                SeriesKey(u64::from(i)),
                SeriesRequest::count(symbol, "1".parse().expect("interval"), 1),
            )
            .expect("series");
    }
    while let Some(out) = session.poll_transmit() {
        ws.send(Message::text(String::from_utf8(out).expect("ascii")))
            .expect("send");
    }
    ws.get_ref()
        .set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    let start = now();
    // Count live updates; returns how many arrived.
    let pump = |ws: &mut tungstenite::WebSocket<TcpStream>, session: &mut Connection, want: u64| {
        let mut got = 0u64;
        while got < want {
            let msg = match ws.read() {
                Ok(Message::Text(t)) => t,
                Ok(_) => continue,
                Err(tungstenite::Error::Io(e)) if e.kind() == ErrorKind::WouldBlock => {
                    panic!("stalled")
                }
                Err(e) => panic!("{e}"),
            };
            let mut bytes = msg.as_bytes().to_vec();
            session.handle_message(t0, &mut bytes).expect("decode");
            while let Some(e) = session.poll_event() {
                if let Event::Chart {
                    event:
                        ChartEvent::Series {
                            event: SeriesEvent::Update(_) | SeriesEvent::Closed(_),
                            ..
                        },
                    ..
                } = e
                {
                    got += 1;
                }
            }
            while let Some(out) = session.poll_transmit() {
                let _ = ws.send(Message::text(String::from_utf8(out).expect("ascii")));
            }
        }
    };
    // Warm up: every series loaded and streaming.
    pump(&mut ws, &mut session, u64::from(SERIES) * 2);
    let mut g = c.benchmark_group("sim");
    g.throughput(Throughput::Elements(10_000));
    g.sample_size(10);
    g.bench_function("sim_live_du_1000_series", |b| {
        b.iter_custom(|iters| {
            let t = now();
            pump(&mut ws, &mut session, iters * 10_000);
            t.elapsed()
        })
    });
    g.finish();
    let secs = start.elapsed().as_secs_f64();
    eprintln!(
        "sim: {} live messages in {secs:.1} s over one connection ({:.0}/s average incl. warm-up)",
        sim.counters().live_sent,
        sim.counters().live_sent as f64 / secs
    );
}

criterion_group!(benches, hist, sim_live);
criterion_main!(benches);
