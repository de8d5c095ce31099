//! Fuzz harness bodies, shared by the `fuzz/` targets and the property tests.
//!
//! Each function feeds arbitrary bytes to one layer and asserts the properties that layer
//! promises, so a fuzz finding is a broken contract, not only a panic. Not public API.
#![forbid(unsafe_code)]

use std::{collections::HashMap, time::Duration};

use super::{
    ChartConfig, ChartEvent, Connection, ConnectionConfig, Event, SeriesEvent, SeriesKey,
    SeriesRequest,
    frame::{self, Frame, FrameDecoder},
    message::{MessageParser, ServerMessage},
};
use crate::{Bar, Interval, Symbol};

/// Frame decoder properties: `decode` never consumes more than it was given and consumes
/// nothing on "need more"; `frames` yields payloads that lie within the message; frames that
/// decode cleanly re-encode to bytes that decode to the same frames.
pub fn frame_decoder(data: &[u8]) {
    let dec = FrameDecoder::new().with_max_frame_len(1 << 16);
    let mut buf = data.to_vec();
    let mut at = 0;
    while at < buf.len() {
        match dec.decode(&mut buf[at..]) {
            Ok(Some((_, used))) => {
                assert!(
                    used > 0 && used <= data.len() - at,
                    "consumed {used} of {}",
                    data.len() - at
                );
                at += used;
            }
            Ok(None) | Err(_) => break,
        }
    }
    let mut msg = data.to_vec();
    let mut reencoded = Vec::new();
    let mut decoded: Vec<Result<Vec<u8>, u64>> = Vec::new();
    let mut clean = true;
    for f in dec.frames(&mut msg) {
        match f {
            Ok(Frame::Json(p)) => {
                assert!(p.len() <= data.len());
                frame::encode_frame(p, &mut reencoded);
                decoded.push(Ok(p.to_vec()));
            }
            Ok(Frame::Heartbeat(n)) => {
                frame::encode_heartbeat(n, &mut reencoded);
                decoded.push(Err(n));
            }
            Err(_) => {
                clean = false;
                break;
            }
        }
    }
    if clean {
        // What we encode decodes to the same frames (lengths may differ from the input's:
        // leading zeros, or a character-counted length re-encoded in bytes).
        let again: Vec<Result<Vec<u8>, u64>> = dec
            .frames(&mut reencoded)
            .map(|f| match f {
                Ok(Frame::Json(p)) => Ok(p.to_vec()),
                Ok(Frame::Heartbeat(n)) => Err(n),
                Err(e) => panic!("our own encoding does not decode: {e}"),
            })
            .collect();
        assert_eq!(again, decoded, "encode/decode round trip");
    }
}

/// Message parser properties: no panic; series data keeps finite bars with sane times and
/// bar ranges within bounds; the parser is reusable after any input.
pub fn message_parser(data: &[u8]) {
    let mut parser = MessageParser::new();
    for _ in 0..2 {
        let mut payload = data.to_vec();
        if let Ok(
            ServerMessage::DataUpdate { data, .. } | ServerMessage::TimescaleUpdate { data, .. },
        ) = parser.parse(&mut payload)
        {
            for u in data.iter() {
                for b in u.bars {
                    check_bar(&b.bar);
                }
            }
        }
    }
    // The parser still parses a valid message afterwards.
    let mut ok = br#"{"m":"quote_completed","p":["qs_x","A:B"]}"#.to_vec();
    assert!(matches!(
        parser.parse(&mut ok),
        Ok(ServerMessage::QuoteCompleted { .. })
    ));
}

fn check_bar(b: &Bar) {
    assert!(b.open.is_finite() && b.high.is_finite() && b.low.is_finite() && b.close.is_finite());
    assert!(b.volume.is_none_or(f64::is_finite));
    assert!(b.time.abs() < 100_000_000_000);
}

/// Per-series bookkeeping of what a consumer has seen.
#[derive(Default)]
struct Seen {
    failed: bool,
    history: bool,
    last_closed: Option<i64>,
    forming: Option<i64>,
}

/// Session properties, for an operation sequence decoded from `data` and fed to a
/// [`Connection`] with one chart session: events of a series stop after `Failed`; history is
/// ascending, deduplicated and no longer than asked; closed bars strictly ascend and follow the
/// history; no event names a removed series; every transmitted message is well-formed frames;
/// queued events stay bounded when drained; slots never outnumber the series open at once.
pub fn session(data: &[u8]) {
    // Only offsets from this base matter: every input is relative to it.
    let t0 = crate::clock::monotonic();
    let mut conn = Connection::new(t0, ConnectionConfig::default());
    let chart_config = ChartConfig::default()
        .with_max_history_bars(64)
        .with_load_timeout(Duration::from_secs(1));
    let chart = conn.add_chart_named(t0, "cs_fuzz", chart_config);
    let symbol: Symbol = "BINANCE:BTCUSDT".parse().unwrap_or_else(|_| unreachable!());
    let interval: Interval = "1".parse().unwrap_or_else(|_| unreachable!());
    let mut seen: HashMap<SeriesKey, Seen> = HashMap::new();
    let mut wanted: HashMap<SeriesKey, usize> = HashMap::new();
    let mut next_key = 0u64;
    let mut peak_open = 0usize;
    let mut now = t0;
    let mut ops = data;
    while let Some((&op, rest)) = ops.split_first() {
        // Each op: a code byte, a little-endian u16 length, then that many bytes (or fewer).
        let len = usize::from(u16::from_le_bytes([
            rest.first().copied().unwrap_or(0),
            rest.get(1).copied().unwrap_or(0),
        ]));
        let body = rest.get(2..).unwrap_or(&[]);
        let (chunk, tail) = body.split_at(len.min(body.len()));
        ops = tail;
        match op % 6 {
            0 | 1 => {
                let mut msg = chunk.to_vec();
                let _ = conn.handle_message(now, &mut msg);
            }
            2 => {
                now += Duration::from_millis(u64::from(chunk.first().copied().unwrap_or(1)) * 50);
                conn.handle_timeout(now);
            }
            3 => {
                let n = u32::from(chunk.first().copied().unwrap_or(3) % 8);
                let key = SeriesKey(next_key);
                next_key += 1;
                let req = SeriesRequest::count(symbol.clone(), interval, n);
                if let Some(c) = conn.chart_mut(chart)
                    && c.add_series(now, key, req).is_ok()
                {
                    wanted.insert(key, n as usize);
                    peak_open = peak_open.max(wanted.len());
                }
            }
            4 => {
                if let Some(&key) = wanted.keys().min() {
                    if let Some(c) = conn.chart_mut(chart) {
                        let _ = c.remove_series(key);
                    }
                    wanted.remove(&key);
                    seen.remove(&key);
                }
            }
            _ => {
                // A reconnect: replay the chart; every series loads again from scratch.
                conn.reset(now);
                if let Some(c) = conn.chart_mut(chart) {
                    c.resubscribe(now, 1_751_833_080, |_| None);
                }
                for st in seen.values_mut() {
                    if !st.failed {
                        *st = Seen::default();
                    }
                }
            }
        }
        if let Some(c) = conn.chart(chart) {
            assert!(
                c.slot_count() <= peak_open.max(1),
                "slots grew past the open series"
            );
        }
        while let Some(out) = conn.poll_transmit() {
            let mut copy = out.clone();
            for f in FrameDecoder::new().frames(&mut copy) {
                assert!(f.is_ok(), "we sent a malformed frame: {out:?}");
            }
        }
        let mut events = 0;
        while let Some(ev) = conn.poll_event() {
            events += 1;
            assert!(events < 1_000_000);
            let Event::Chart {
                event: ChartEvent::Series { key, event },
                ..
            } = ev
            else {
                continue;
            };
            assert!(wanted.contains_key(&key), "event for a removed series");
            let st = seen.entry(key).or_default();
            assert!(!st.failed, "event after Failed: {event:?}");
            match event {
                SeriesEvent::Failed(_) => st.failed = true,
                SeriesEvent::History { bars, forming, .. } => {
                    assert!(!st.history, "history twice");
                    st.history = true;
                    assert!(bars.len() <= wanted[&key]);
                    assert!(bars.windows(2).all(|w| w[0].time < w[1].time));
                    if let (Some(l), Some(f)) = (bars.last(), forming) {
                        assert!(l.time < f.time);
                    }
                    bars.iter().for_each(check_bar);
                    st.last_closed = bars.last().map(|b| b.time);
                    st.forming = forming.map(|b| b.time);
                }
                SeriesEvent::Closed(b) => {
                    assert!(st.history, "closed bar before history");
                    assert!(st.last_closed.is_none_or(|t| t < b.time));
                    assert_eq!(
                        st.forming,
                        Some(b.time),
                        "closed bar was not the forming bar"
                    );
                    st.last_closed = Some(b.time);
                }
                SeriesEvent::Late(b) => {
                    assert!(st.history, "late bar before history");
                    assert!(st.forming.is_some_and(|f| b.time < f), "late bar not older");
                    check_bar(&b);
                }
                SeriesEvent::Update(b) => {
                    assert!(st.history, "update before history");
                    assert!(st.last_closed.is_none_or(|t| t < b.time));
                    st.forming = Some(b.time);
                }
                SeriesEvent::Resolved(_) | SeriesEvent::Progress { .. } => {}
            }
        }
    }
}
