//! The baselines: the same simulator, the same subscriptions, the same bytes over the same
//! kind of loopback socket, read by clients that do nothing else.
//!
//! - [`Reader::Tungstenite`]: a bare `tungstenite` client: `read()` a message, take the time,
//!   keep the message; nothing else.
//! - [`Reader::Tcp`]: a bare TCP reader: `read()` bytes, take the time, keep the bytes; not
//!   even websocket framing.
//!
//! Each blocks in `read` or busy-polls a non-blocking socket (pinned to core 0, as the engine's
//! `tv-io` is in its busy-poll runs). What they received is decoded only afterwards, by the
//! crate's protocol `Connection` (the same session logic the engine runs), to know which seis
//! and which bar each message carried.

use std::{
    collections::HashMap,
    io::{ErrorKind, Read, Write},
    net::TcpStream,
    time::{Duration, Instant},
};

use tungstenite::{Message, client::IntoClientRequest, http::HeaderValue};
use tvdatafeed::{
    Interval, Symbol,
    protocol::{
        ChartConfig, ChartEvent, Connection, ConnectionConfig, Event, SeriesEvent, SeriesKey,
        SeriesRequest,
    },
    sim::Sim,
};

use crate::common::{Seen, now, own_cpu};

/// Which bare client.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Reader {
    Tungstenite,
    Tcp,
}

/// The requests that subscribe `symbols` (what the engine sends too), and the connection
/// that will decode the answers.
pub(crate) fn setup(symbols: &[Symbol], interval: Interval) -> (Connection, Vec<Vec<u8>>) {
    let t0 = now();
    let mut conn = Connection::new(t0, ConnectionConfig::default());
    let chart = conn.add_chart_named(t0, "cs_latencybase1", ChartConfig::default());
    for (i, s) in symbols.iter().enumerate() {
        conn.chart_mut(chart)
            .expect("chart")
            .add_series(
                t0,
                SeriesKey(i as u64),
                SeriesRequest::count(s.clone(), interval, 2),
            )
            .expect("series");
    }
    let mut out = Vec::new();
    while let Some(m) = conn.poll_transmit() {
        out.push(m);
    }
    (conn, out)
}

/// Decodes what a bare reader received (messages with their arrival) into what a consumer
/// would have seen.
fn decode(mut conn: Connection, messages: Vec<(Instant, Vec<u8>)>) -> Vec<Seen> {
    let mut seen = Vec::with_capacity(messages.len());
    for (at, mut m) in messages {
        let _ = conn.handle_message(at, &mut m);
        while let Some(e) = conn.poll_event() {
            if let Event::Chart {
                event:
                    ChartEvent::Series {
                        key,
                        event: SeriesEvent::Update(bar),
                    },
                ..
            } = e
            {
                seen.push(Seen {
                    seis: key.0 as u32,
                    bar,
                    at,
                });
            }
        }
        while conn.poll_transmit().is_some() {}
    }
    seen
}

/// What a bare reader received: each message with its arrival, when the window opened, and
/// the reader thread's CPU time within the window.
type Received = (Vec<(Instant, Vec<u8>)>, Instant, u64);

/// Runs one bare reader against `sim` for `run` (after the subscriptions are answered),
/// on a thread of its own (pinned to core 0 when `busy`). Returns what a consumer would have
/// seen, the instant the window opened, and the reader's CPU time (ns) within the window.
pub(crate) fn run(
    reader: Reader,
    busy: bool,
    sim: &Sim,
    symbols: &[Symbol],
    interval: Interval,
    warm: Duration,
    run: Duration,
) -> (Vec<Seen>, Instant, u64) {
    let (conn, requests) = setup(symbols, interval);
    let url = sim.url();
    let addr = sim.addr();
    let (messages, from, cpu) = std::thread::scope(|scope| {
        std::thread::Builder::new()
            .name("latency-bare".into())
            .spawn_scoped(scope, move || {
                if busy && !core_affinity::set_for_current(core_affinity::CoreId { id: 0 }) {
                    eprintln!("latency: could not pin the bare reader");
                }
                match reader {
                    Reader::Tungstenite => read_ws(&url, addr, &requests, busy, warm, run),
                    Reader::Tcp => read_tcp(addr, &requests, busy, warm, run),
                }
            })
            .expect("spawn")
            .join()
            .expect("bare reader")
    });
    (decode(conn, messages), from, cpu)
}

fn read_ws(
    url: &str,
    addr: std::net::SocketAddr,
    requests: &[Vec<u8>],
    busy: bool,
    warm: Duration,
    run: Duration,
) -> Received {
    let mut req = url.into_client_request().expect("request");
    req.headers_mut().insert(
        "Origin",
        HeaderValue::from_static("https://www.tradingview.com"),
    );
    let tcp = TcpStream::connect(addr).expect("connect");
    tcp.set_nodelay(true).expect("nodelay");
    let (mut ws, _) = tungstenite::client(req, tcp).expect("upgrade");
    for r in requests {
        ws.send(Message::text(String::from_utf8(r.clone()).expect("ascii")))
            .expect("send");
    }
    if busy {
        ws.get_ref().set_nonblocking(true).expect("nonblocking");
    } else {
        ws.get_ref()
            .set_read_timeout(Some(Duration::from_millis(50)))
            .expect("timeout");
    }
    let mut got = Vec::with_capacity(1 << 16);
    let from = now() + warm;
    let end = from + run;
    let mut cpu_from = None;
    loop {
        if cpu_from.is_none() && now() >= from {
            cpu_from = Some(own_cpu());
        }
        match ws.read() {
            Ok(Message::Text(t)) => {
                let at = now();
                got.push((at, t.as_bytes().to_vec()));
                if at >= end {
                    break;
                }
            }
            Ok(_) => {}
            Err(tungstenite::Error::Io(e))
                if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) =>
            {
                if busy {
                    std::hint::spin_loop();
                }
                if now() >= end {
                    break;
                }
            }
            Err(e) => panic!("bare websocket reader: {e}"),
        }
    }
    let cpu = own_cpu().saturating_sub(cpu_from.unwrap_or(0));
    (got, from, cpu)
}

/// A masked client text frame (the mask is zero: allowed, and the payload stays as is).
fn client_frame(payload: &[u8]) -> Vec<u8> {
    let mut f = vec![0x81];
    match payload.len() {
        n @ 0..=125 => f.push(0x80 | n as u8),
        n @ 126..=0xffff => {
            f.push(0x80 | 126);
            f.extend_from_slice(&(n as u16).to_be_bytes());
        }
        n => {
            f.push(0x80 | 127);
            f.extend_from_slice(&(n as u64).to_be_bytes());
        }
    }
    f.extend_from_slice(&[0, 0, 0, 0]);
    f.extend_from_slice(payload);
    f
}

fn read_tcp(
    addr: std::net::SocketAddr,
    requests: &[Vec<u8>],
    busy: bool,
    warm: Duration,
    run: Duration,
) -> Received {
    let mut tcp = TcpStream::connect(addr).expect("connect");
    tcp.set_nodelay(true).expect("nodelay");
    // The upgrade by hand, reading the answer one byte at a time so that nothing after it is
    // taken from the socket.
    write!(
        tcp,
        "GET /socket.io/websocket?from=chart&type=chart HTTP/1.1\r\nHost: {addr}\r\n\
         Upgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\
         Sec-WebSocket-Version: 13\r\nOrigin: https://www.tradingview.com\r\n\r\n"
    )
    .expect("upgrade request");
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        tcp.read_exact(&mut byte).expect("upgrade answer");
        head.push(byte[0]);
    }
    assert!(head.starts_with(b"HTTP/1.1 101"), "upgrade refused");
    for r in requests {
        tcp.write_all(&client_frame(r)).expect("send");
    }
    if busy {
        tcp.set_nonblocking(true).expect("nonblocking");
    } else {
        tcp.set_read_timeout(Some(Duration::from_millis(50)))
            .expect("timeout");
    }
    let mut chunks: Vec<(Instant, Vec<u8>)> = Vec::with_capacity(1 << 16);
    let mut buf = vec![0u8; 1 << 16];
    let from = now() + warm;
    let end = from + run;
    let mut cpu_from = None;
    loop {
        if cpu_from.is_none() && now() >= from {
            cpu_from = Some(own_cpu());
        }
        match tcp.read(&mut buf) {
            Ok(0) => panic!("the simulator closed the bare TCP reader"),
            Ok(n) => {
                let at = now();
                chunks.push((at, buf[..n].to_vec()));
                if at >= end {
                    break;
                }
            }
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                if busy {
                    std::hint::spin_loop();
                }
                if now() >= end {
                    break;
                }
            }
            Err(e) => panic!("bare TCP reader: {e}"),
        }
    }
    let cpu = own_cpu().saturating_sub(cpu_from.unwrap_or(0));
    (unframe(chunks), from, cpu)
}

/// Websocket messages out of the raw byte chunks: each one timed by the read that completed
/// it. Server frames are unmasked; messages here are single text frames.
fn unframe(chunks: Vec<(Instant, Vec<u8>)>) -> Vec<(Instant, Vec<u8>)> {
    let mut stream: Vec<u8> = Vec::new();
    // Where each chunk ends in `stream`, with its instant.
    let mut ends: Vec<(usize, Instant)> = Vec::with_capacity(chunks.len());
    for (at, c) in chunks {
        stream.extend_from_slice(&c);
        ends.push((stream.len(), at));
    }
    let arrival = |end: usize| {
        let i = ends.partition_point(|(e, _)| *e < end);
        ends.get(i).map(|(_, at)| *at)
    };
    let mut out = Vec::new();
    let mut pos = 0;
    while pos + 2 <= stream.len() {
        let (b0, b1) = (stream[pos], stream[pos + 1]);
        let (len, head) = match b1 & 0x7f {
            126 if pos + 4 <= stream.len() => (
                u16::from_be_bytes([stream[pos + 2], stream[pos + 3]]) as usize,
                4,
            ),
            127 if pos + 10 <= stream.len() => {
                let mut b = [0u8; 8];
                b.copy_from_slice(&stream[pos + 2..pos + 10]);
                (u64::from_be_bytes(b) as usize, 10)
            }
            126 | 127 => break,
            n => (n as usize, 2),
        };
        let end = pos + head + len;
        if end > stream.len() {
            break;
        }
        // Text frames only (opcode 1); pings and closes are not data.
        if b0 & 0x0f == 1
            && let Some(at) = arrival(end)
        {
            out.push((at, stream[pos + head..end].to_vec()));
        }
        pos = end;
    }
    out
}

/// Maps each symbol to its seis number (its position).
pub(crate) fn index(symbols: &[Symbol]) -> HashMap<Symbol, u32> {
    symbols
        .iter()
        .enumerate()
        .map(|(i, s)| (s.clone(), i as u32))
        .collect()
}
