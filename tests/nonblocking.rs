//! The live engine's transport, driven through a `mio::Poll` loop as the `tv-io` thread does:
//! a full upgrade and a 5,000-bar load over ws and wss, a peer that stops reading (bounded
//! write buffer, typed backpressure), a peer that closes in the middle of a message, and a
//! refused connect.

mod util;

use std::{
    io::Write,
    net::TcpListener,
    sync::mpsc,
    time::{Duration, Instant},
};

use mio::{Events, Poll, Token};
use tvdatafeed::{
    Error, TransportConfig, TransportError,
    internal::transport::{NbSocket, Progress},
    protocol::{
        ChartConfig, ChartEvent, Connection, ConnectionConfig, Event, SeriesEvent, SeriesKey,
        SeriesRequest,
    },
    sim::{Sim, SimConfig},
};
use util::now;

const TOKEN: Token = Token(7);

fn config(url: &str, root: Option<&[u8]>) -> TransportConfig {
    let mut c = TransportConfig::default().with_endpoint(url.parse().unwrap());
    if let Some(der) = root {
        c = c.with_root_certificate(der.to_vec());
    }
    c
}

/// Polls until the socket is open or `timeout` passes.
fn open(poll: &mut Poll, sock: &mut NbSocket, timeout: Duration) -> Result<(), Error> {
    let deadline = now() + timeout;
    let mut events = Events::with_capacity(16);
    loop {
        if sock.drive()? == Progress::Open {
            return Ok(());
        }
        let left = deadline.saturating_duration_since(now());
        assert!(!left.is_zero(), "not open within {timeout:?}");
        poll.poll(&mut events, Some(left)).unwrap();
    }
}

fn load_5000_bars(tls: bool) {
    let sim = Sim::start(SimConfig::default().with_tls(tls)).unwrap();
    let cfg = config(&sim.url(), sim.root_certificate_der());
    let mut poll = Poll::new().unwrap();
    let mut sock = NbSocket::connect(sim.addr(), &cfg, poll.registry(), TOKEN).unwrap();
    assert!(!sock.is_open());
    open(&mut poll, &mut sock, Duration::from_secs(10)).unwrap();

    let t0 = now();
    let mut conn = Connection::new(t0, ConnectionConfig::default());
    let chart = conn.add_chart(t0, ChartConfig::default());
    let symbol: tvdatafeed::Symbol = "BINANCE:BTCUSDT".parse().unwrap();
    let interval: tvdatafeed::Interval = "1".parse().unwrap();
    conn.chart_mut(chart)
        .unwrap()
        .add_series(
            t0,
            SeriesKey(1),
            SeriesRequest::count(symbol.clone(), interval, 4_999),
        )
        .unwrap();
    let deadline = t0 + Duration::from_secs(20);
    let mut events = Events::with_capacity(64);
    let mut history = None;
    while history.is_none() {
        while let Some(m) = conn.poll_transmit() {
            sock.send(m).unwrap();
        }
        let left = deadline.saturating_duration_since(now());
        assert!(!left.is_zero(), "no history within 20 s");
        poll.poll(&mut events, Some(left)).unwrap();
        for e in events.iter() {
            assert_eq!(e.token(), TOKEN);
        }
        // Edge-triggered: drain everything, then flush what is pending.
        sock.read(|msg| conn.handle_message(now(), msg).unwrap())
            .unwrap();
        sock.flush().unwrap();
        while let Some(e) = conn.poll_event() {
            if let Event::Chart {
                event:
                    ChartEvent::Series {
                        event: SeriesEvent::History { bars, forming, .. },
                        ..
                    },
                ..
            } = e
            {
                history = Some((bars, forming));
            }
        }
    }
    let (bars, forming) = history.unwrap();
    assert_eq!(bars.len(), 4_999);
    assert!(forming.is_some());
    for b in &bars {
        assert_eq!(*b, sim.expected_bar(&symbol, interval, b.time));
    }
    sock.close(poll.registry());
}

#[test]
fn a_5000_bar_load_over_ws_through_a_mio_poll_loop() {
    load_5000_bars(false);
}

#[test]
fn a_5000_bar_load_over_wss_through_a_mio_poll_loop() {
    load_5000_bars(true);
}

/// A websocket server on loopback that upgrades one client, then runs `after` on the socket
/// and holds it until the test ends.
fn one_shot_server(
    after: impl FnOnce(&mut tungstenite::WebSocket<std::net::TcpStream>) + Send + 'static,
) -> (String, mpsc::Sender<()>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!(
        "ws://{}/socket.io/websocket",
        listener.local_addr().unwrap()
    );
    let (done_tx, done_rx) = mpsc::channel::<()>();
    std::thread::Builder::new()
        .name("test-ws-server".into())
        .spawn(move || {
            let (tcp, _) = listener.accept().unwrap();
            let mut ws = tungstenite::accept(tcp).unwrap();
            after(&mut ws);
            // Hold the socket (without reading) until the test is done.
            let _ = done_rx.recv_timeout(Duration::from_secs(60));
        })
        .unwrap();
    (url, done_tx)
}

#[test]
fn a_peer_that_stops_reading_is_typed_backpressure_with_bounded_memory() {
    let (url, done) = one_shot_server(|_| {});
    let cfg = config(&url, None).with_max_write_buffer(256 << 10);
    let mut poll = Poll::new().unwrap();
    let addr = url
        .trim_start_matches("ws://")
        .split('/')
        .next()
        .unwrap()
        .parse()
        .unwrap();
    let mut sock = NbSocket::connect(addr, &cfg, poll.registry(), TOKEN).unwrap();
    open(&mut poll, &mut sock, Duration::from_secs(10)).unwrap();
    let chunk = "x".repeat(64 << 10);
    let mut sent = 0usize;
    let err = loop {
        match sock.send(chunk.clone().into_bytes()) {
            Ok(()) => sent += chunk.len(),
            Err(e) => break e,
        }
        // The kernel's buffers take a few MB on loopback; then ours fill up to the bound.
        assert!(sent < 256 << 20, "sent {sent} bytes without backpressure");
    };
    assert!(
        matches!(
            err,
            TransportError::Backpressure { limit, .. } if limit == 256 << 10
        ),
        "{err:?}"
    );
    assert!(err.to_string().contains("is not reading"), "{err}");
    assert!(!sock.is_open(), "the socket is done after backpressure");
    let _ = done.send(());
}

#[test]
fn a_peer_that_closes_in_the_middle_of_a_message_is_a_typed_close() {
    let (url, done) = one_shot_server(|ws| {
        // A text frame header announcing 1,000 bytes, then 10 of them, then the end.
        let mut raw = vec![0x81, 126, 0x03, 0xE8];
        raw.extend_from_slice(b"~m~995~m~{");
        let tcp = ws.get_mut();
        tcp.write_all(&raw).unwrap();
        tcp.flush().unwrap();
        tcp.shutdown(std::net::Shutdown::Both).unwrap();
    });
    let cfg = config(&url, None);
    let mut poll = Poll::new().unwrap();
    let addr = url
        .trim_start_matches("ws://")
        .split('/')
        .next()
        .unwrap()
        .parse()
        .unwrap();
    let mut sock = NbSocket::connect(addr, &cfg, poll.registry(), TOKEN).unwrap();
    open(&mut poll, &mut sock, Duration::from_secs(10)).unwrap();
    let deadline: Instant = now() + Duration::from_secs(10);
    let mut events = Events::with_capacity(16);
    let mut messages = 0;
    let err = loop {
        match sock.read(|_| messages += 1) {
            Ok(_) => {}
            Err(e) => break e,
        }
        let left = deadline.saturating_duration_since(now());
        assert!(!left.is_zero(), "the close was never noticed");
        poll.poll(&mut events, Some(left)).unwrap();
    };
    assert_eq!(messages, 0, "half a message is no message");
    assert!(matches!(err, TransportError::Closed { .. }), "{err:?}");
    assert!(!sock.is_open());
    let _ = done.send(());
}

#[test]
fn a_refused_connect_names_the_address() {
    // Bind then drop: nobody listens on that port any more.
    let addr = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let cfg = config(&format!("ws://{addr}/socket.io/websocket"), None);
    let mut poll = Poll::new().unwrap();
    let mut sock = NbSocket::connect(addr, &cfg, poll.registry(), TOKEN).unwrap();
    let err = open(&mut poll, &mut sock, Duration::from_secs(10)).unwrap_err();
    assert_eq!(err.to_string(), format!("connection refused by {addr}"));
    assert!(err.is_retryable());
}
