//! The steady-state live path allocates nothing: parsing a `du`, and a `Connection` (framing,
//! parsing, routing to its chart session) turning it into an `Update` event. Its own test binary, because it installs a counting allocator.

mod util;

#[path = "util/counting_alloc.rs"]
mod counting_alloc;

use counting_alloc::allocations;
use std::time::Duration;

use tvdatafeed::protocol::{
    ChartConfig, ChartEvent, Connection, ConnectionConfig, Event, MessageParser, SeriesEvent,
    SeriesKey, SeriesRequest, ServerMessage,
    frame::{Frame, FrameDecoder},
};
use util::frames::*;

/// Two du frames with different values, so that every one of them is a real update.
fn du(i: usize) -> &'static str {
    if i.is_multiple_of(2) {
        DU_299
    } else {
        DU_299_ALT
    }
}

const DU_299_ALT: &str = r#"~m~205~m~{"m":"du","p":["cs_kjvmuwkghjuz",{"sds_1":{"s":[{"i":299,"v":[1751833020.0,108756.4,108756.49,108756.4,108756.45,0.032]}],"ns":{"d":"","indexes":"nochange"},"t":"s1","lbs":{"bar_close_time":1751833080}}}]}"#;

#[test]
fn steady_state_live_updates_allocate_nothing() {
    // The parser alone.
    let mut parser = MessageParser::new();
    let mut buf = Vec::with_capacity(512);
    let parse = |buf: &mut Vec<u8>, parser: &mut MessageParser, i: usize| {
        buf.clear();
        buf.extend_from_slice(du(i).as_bytes());
        let Some(Ok(Frame::Json(p))) = FrameDecoder::new().frames(buf).next() else {
            panic!()
        };
        let ServerMessage::DataUpdate { data, .. } = parser.parse(p).unwrap() else {
            panic!()
        };
        data.iter().map(|u| u.bars.len()).sum::<usize>()
    };
    for i in 0..16 {
        assert_eq!(parse(&mut buf, &mut parser, i), 1);
    }
    let before = allocations();
    for i in 0..1_000 {
        assert_eq!(parse(&mut buf, &mut parser, i), 1);
    }
    assert_eq!(allocations() - before, 0, "allocations in 1000 parsed du");

    // The whole connection: load, then live updates turned into events.
    let t0 = util::now();
    let mut s = Connection::new(t0, ConnectionConfig::default());
    let chart = s.add_chart_named(t0, "cs_kjvmuwkghjuz", ChartConfig::default());
    let id = SeriesKey(42);
    s.chart_mut(chart)
        .unwrap()
        .add_series(
            t0,
            id,
            SeriesRequest::count("BINANCE:BTCUSDT".parse().unwrap(), "1".parse().unwrap(), 2),
        )
        .unwrap();
    let mut load = [
        SERIES_LOADING,
        SYMBOL_RESOLVED,
        TIMESCALE_LOAD,
        SERIES_COMPLETED,
    ]
    .concat()
    .into_bytes();
    s.handle_message(t0, &mut load).unwrap();
    while s.poll_event().is_some() {}
    while s.poll_transmit().is_some() {}
    let feed = |buf: &mut Vec<u8>, s: &mut Connection, i: usize| {
        buf.clear();
        buf.extend_from_slice(du(i).as_bytes());
        s.handle_message(t0 + Duration::from_millis(2 + i as u64), buf)
            .unwrap();
        let mut updates = 0;
        while let Some(e) = s.poll_event() {
            assert!(matches!(
                e,
                Event::Chart {
                    event: ChartEvent::Series { key, event: SeriesEvent::Update(_) },
                    ..
                } if key == id
            ));
            updates += 1;
        }
        updates
    };
    for i in 0..16 {
        assert_eq!(feed(&mut buf, &mut s, i), 1);
    }
    let before = allocations();
    for i in 0..1_000 {
        assert_eq!(feed(&mut buf, &mut s, i), 1);
    }
    assert_eq!(
        allocations() - before,
        0,
        "allocations in 1000 session updates"
    );
}
