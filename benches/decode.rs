//! Decode cost of a live update (`du`): our frame split + simd-json tape parse against
//! `serde_json::Value`, `sonic_rs::Value`, and serde_json / sonic-rs into a borrowed struct, all
//! on the same bytes in the same run. Also counts heap allocations per message for each.
//!
//! `cargo bench --bench decode`; figures go in BENCHMARKS.md.
#![allow(
    missing_docs,
    clippy::print_stderr,
    reason = "a bench binary reports on stderr"
)]
#![allow(
    clippy::disallowed_types,
    reason = "a plain allocation counter, outside the loom-modelled engine"
)]

use std::{collections::BTreeMap, hint::black_box, time::Instant};

use criterion::{BatchSize, Criterion, Throughput, criterion_group, criterion_main};
use serde::Deserialize;
use tvdatafeed::protocol::{
    ChartConfig, Connection, ConnectionConfig, MessageParser, SeriesKey, SeriesRequest,
    ServerMessage,
    frame::{Frame, FrameDecoder},
};

#[allow(
    clippy::disallowed_methods,
    reason = "the base instant of a virtual clock"
)]
fn now() -> Instant {
    Instant::now()
}

#[path = "../tests/util/counting_alloc.rs"]
mod counting_alloc;

use counting_alloc::allocations;

/// A real `du` (protocol.md §3.4), 215 bytes on the wire.
const DU: &[u8] = br#"~m~205~m~{"m":"du","p":["cs_kjvmuwkghjuz",{"sds_1":{"s":[{"i":299,"v":[1751833020.0,108756.4,108756.41,108756.4,108756.41,0.031]}],"ns":{"d":"","indexes":"nochange"},"t":"s1","lbs":{"bar_close_time":1751833080}}}]}"#;

/// What a typed rival decodes into: the same fields our parser extracts.
#[derive(Deserialize)]
struct DuMsg<'a> {
    #[serde(borrow)]
    m: &'a str,
    #[serde(borrow)]
    p: (&'a str, BTreeMap<&'a str, SeriesRaw<'a>>),
}

#[derive(Deserialize)]
struct SeriesRaw<'a> {
    #[serde(default)]
    s: Vec<BarRaw>,
    #[serde(borrow)]
    t: Option<&'a str>,
}

#[derive(Deserialize)]
struct BarRaw {
    i: f64,
    v: Vec<f64>,
}

fn payload_range() -> std::ops::Range<usize> {
    let start = DU[3..]
        .windows(3)
        .position(|w| w == b"~m~")
        .map(|p| p + 6)
        .unwrap_or(0);
    start..DU.len()
}

/// Ours: split the frame in place, parse with simd-json's tape, read the bar.
fn ours(parser: &mut MessageParser, msg: &mut [u8]) -> f64 {
    let mut close = 0.0;
    for frame in FrameDecoder::new().frames(msg) {
        if let Ok(Frame::Json(p)) = frame
            && let Ok(ServerMessage::DataUpdate { data, .. }) = parser.parse(p)
        {
            for u in data.iter() {
                close += u.bars.iter().map(|b| b.bar.close).sum::<f64>();
            }
        }
    }
    close
}

fn serde_value(payload: &[u8]) -> f64 {
    let v: serde_json::Value = serde_json::from_slice(payload).unwrap_or_default();
    v["p"][1]["sds_1"]["s"][0]["v"][4].as_f64().unwrap_or(0.0)
}

fn sonic_value(payload: &[u8]) -> f64 {
    use sonic_rs::{JsonContainerTrait as _, JsonValueTrait as _};
    let v: sonic_rs::Value = sonic_rs::from_slice(payload).unwrap_or_default();
    v.get("p")
        .and_then(|p| p.get(1))
        .and_then(|p| p.get("sds_1"))
        .and_then(|s| s.get("s"))
        .and_then(|s| s.as_array().and_then(|a| a.first().cloned()))
        .and_then(|b| b.get("v").and_then(|v| v.get(4)).and_then(|c| c.as_f64()))
        .unwrap_or(0.0)
}

fn close_of(d: &DuMsg<'_>) -> f64 {
    d.p.1
        .values()
        .flat_map(|s| s.s.iter())
        .map(|b| b.v.get(4).copied().unwrap_or(b.i))
        .sum()
}

fn serde_struct(payload: &[u8]) -> f64 {
    serde_json::from_slice::<DuMsg<'_>>(payload).map_or(0.0, |d| close_of(&d) + d.m.len() as f64)
}

fn sonic_struct(payload: &[u8]) -> f64 {
    sonic_rs::from_slice::<DuMsg<'_>>(payload).map_or(0.0, |d| {
        close_of(&d) + d.m.len() as f64 + d.p.1.values().filter_map(|s| s.t).count() as f64
    })
}

/// Allocations per message in the steady state (after 100 warm-up messages), for each decoder.
fn report_allocations() {
    const N: u64 = 1_000;
    let range = payload_range();
    let count = |f: &mut dyn FnMut(&mut [u8]) -> f64| {
        let mut buf = DU.to_vec();
        for _ in 0..100 {
            buf.copy_from_slice(DU);
            black_box(f(&mut buf));
        }
        let before = allocations();
        for _ in 0..N {
            buf.copy_from_slice(DU);
            black_box(f(&mut buf));
        }
        (allocations() - before) as f64 / N as f64
    };
    let mut parser = MessageParser::new();
    let t0 = now();
    let mut session = Connection::new(t0, ConnectionConfig::default());
    let chart = session.add_chart_named(t0, "cs_kjvmuwkghjuz", ChartConfig::default());
    if let Some(c) = session.chart_mut(chart) {
        let _ = c.add_series(
            t0,
            SeriesKey(0),
            SeriesRequest::count(
                "BINANCE:BTCUSDT".parse().unwrap_or_else(|_| unreachable!()),
                "1".parse().unwrap_or_else(|_| unreachable!()),
                1,
            ),
        );
    }
    let r = range.clone();
    let rows: [(&str, f64); 6] = [
        (
            "tvdatafeed frame+parse",
            count(&mut |b| ours(&mut parser, b)),
        ),
        (
            "tvdatafeed Connection",
            count(&mut |b| {
                let _ = session.handle_message(t0, b);
                while session.poll_event().is_some() {}
                0.0
            }),
        ),
        (
            "serde_json::Value",
            count(&mut |b| serde_value(&b[r.clone()])),
        ),
        (
            "sonic_rs::Value",
            count(&mut |b| sonic_value(&b[range.clone()])),
        ),
        (
            "serde_json struct",
            count(&mut |b| serde_struct(&b[payload_range()])),
        ),
        (
            "sonic_rs struct",
            count(&mut |b| sonic_struct(&b[payload_range()])),
        ),
    ];
    eprintln!("\nallocations per du message (steady state, {N} messages):");
    for (name, n) in rows {
        eprintln!("  {name:<26} {n:>6.2}");
    }
}

fn bench(c: &mut Criterion) {
    report_allocations();
    let range = payload_range();
    let mut g = c.benchmark_group("decode_du");
    g.throughput(Throughput::Bytes(DU.len() as u64));
    let mut parser = MessageParser::new();
    let fresh = || DU.to_vec();
    // Every contender gets a fresh copy of the bytes (simd-json rewrites its input), made
    // outside the timed routine.
    g.bench_function("tvdatafeed_frame_simd_tape", |b| {
        b.iter_batched_ref(fresh, |m| ours(&mut parser, m), BatchSize::SmallInput)
    });
    g.bench_function("serde_json_value", |b| {
        b.iter_batched_ref(
            fresh,
            |m| serde_value(&m[range.clone()]),
            BatchSize::SmallInput,
        )
    });
    g.bench_function("sonic_rs_value", |b| {
        b.iter_batched_ref(
            fresh,
            |m| sonic_value(&m[range.clone()]),
            BatchSize::SmallInput,
        )
    });
    g.bench_function("serde_json_borrowed_struct", |b| {
        b.iter_batched_ref(
            fresh,
            |m| serde_struct(&m[range.clone()]),
            BatchSize::SmallInput,
        )
    });
    g.bench_function("sonic_rs_borrowed_struct", |b| {
        b.iter_batched_ref(
            fresh,
            |m| sonic_struct(&m[range.clone()]),
            BatchSize::SmallInput,
        )
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
