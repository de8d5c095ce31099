//! Helpers shared by the integration tests.
#![allow(dead_code, unreachable_pub)]

pub mod frames;

use std::{
    io::{self, Read, Write},
    net::{IpAddr, TcpStream},
    time::{Duration, Instant},
};

use tungstenite::{
    HandshakeError, Message, WebSocket, client::IntoClientRequest, http::HeaderValue,
    protocol::WebSocketConfig,
};
use tvdatafeed::{
    Bar, Interval, Symbol,
    protocol::{
        ChartConfig, ChartEvent, ChartId, ChartSession, Connection, ConnectionConfig,
        ConnectionError, Event, Request, SeriesEvent, SeriesFailure, SeriesKey,
        frame::{Frame, FrameDecoder},
    },
    sim::Sim,
};

/// The `Origin` our clients send.
pub const ORIGIN: &str = "https://www.tradingview.com";
/// The path and query real clients use.
pub const PATH: &str = "/socket.io/websocket?from=chart&type=chart";

/// The monotonic clock of the tests.
pub fn now() -> Instant {
    #[expect(
        clippy::disallowed_methods,
        reason = "tests measure wall time for their deadlines"
    )]
    let t = Instant::now();
    t
}

/// Wall-clock seconds since the Unix epoch.
/// Sleeps without `std::thread::sleep` (forbidden in this crate): a timed wait on a channel
/// nobody sends on. For waits between polls of a condition, or a fault's own duration.
pub fn pause(d: Duration) {
    let (_tx, rx) = std::sync::mpsc::channel::<()>();
    let _ = rx.recv_timeout(d);
}

/// Waits for `cond` up to `limit`, polling every 20 ms, panicking with `what` at the limit.
pub fn wait_for(limit: Duration, what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = now() + limit;
    while !cond() {
        assert!(now() < deadline, "{what} (waited {limit:?})");
        pause(Duration::from_millis(20));
    }
}

pub fn unix_s() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}

pub fn sym(s: &str) -> Symbol {
    s.parse().expect("valid symbol")
}

pub fn iv(s: &str) -> Interval {
    s.parse().expect("valid interval")
}

/// A plain or TLS client stream.
#[derive(Debug)]
pub enum Conn {
    Plain(TcpStream),
    Tls(Box<rustls::StreamOwned<rustls::ClientConnection, TcpStream>>),
}

impl Conn {
    pub fn tcp(&self) -> &TcpStream {
        match self {
            Self::Plain(s) => s,
            Self::Tls(s) => &s.sock,
        }
    }
}

impl Read for Conn {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Self::Plain(s) => s.read(buf),
            Self::Tls(s) => s.read(buf),
        }
    }
}

impl Write for Conn {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Self::Plain(s) => s.write(buf),
            Self::Tls(s) => s.write(buf),
        }
    }
    fn flush(&mut self) -> io::Result<()> {
        match self {
            Self::Plain(s) => s.flush(),
            Self::Tls(s) => s.flush(),
        }
    }
}

pub type Ws = WebSocket<Conn>;

#[allow(
    clippy::disallowed_types,
    reason = "rustls takes a std Arc; the crate's loom shim is private"
)]
fn tls_stream(
    der: &[u8],
    tcp: TcpStream,
) -> io::Result<rustls::StreamOwned<rustls::ClientConnection, TcpStream>> {
    use std::sync::Arc;
    let mut roots = rustls::RootCertStore::empty();
    roots
        .add(rustls::pki_types::CertificateDer::from(der.to_vec()))
        .map_err(io::Error::other)?;
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .map_err(io::Error::other)?
    .with_root_certificates(roots)
    .with_no_client_auth();
    let name = rustls::pki_types::ServerName::IpAddress(IpAddr::from([127, 0, 0, 1]).into());
    let conn = rustls::ClientConnection::new(Arc::new(config), name).map_err(io::Error::other)?;
    Ok(rustls::StreamOwned::new(conn, tcp))
}

/// Opens a websocket to the simulator at `path` (path and query) with `origin`, over TLS when
/// the simulator serves TLS (trusting its certificate). The upgrade's HTTP error, if any, is
/// `tungstenite::Error::Http`.
pub fn try_connect(sim: &Sim, path: &str, origin: Option<&str>) -> Result<Ws, tungstenite::Error> {
    let addr = sim.addr();
    let tcp = TcpStream::connect_timeout(&addr, Duration::from_secs(5))?;
    tcp.set_nodelay(true)?;
    tcp.set_read_timeout(Some(Duration::from_secs(5)))?;
    tcp.set_write_timeout(Some(Duration::from_secs(5)))?;
    let scheme = if sim.root_certificate_der().is_some() {
        "wss"
    } else {
        "ws"
    };
    let mut req = format!("{scheme}://{addr}{path}").into_client_request()?;
    if let Some(o) = origin {
        req.headers_mut()
            .insert("Origin", HeaderValue::from_str(o).expect("header value"));
    }
    let conn = match sim.root_certificate_der() {
        Some(der) => Conn::Tls(Box::new(tls_stream(der, tcp)?)),
        None => Conn::Plain(tcp),
    };
    let config = WebSocketConfig::default()
        .max_message_size(Some(64 << 20))
        .max_frame_size(Some(64 << 20));
    match tungstenite::client::client_with_config(req, conn, Some(config)) {
        Ok((ws, _)) => Ok(ws),
        Err(HandshakeError::Failure(e)) => Err(e),
        Err(HandshakeError::Interrupted(_)) => Err(tungstenite::Error::Io(io::Error::new(
            io::ErrorKind::TimedOut,
            "handshake interrupted",
        ))),
    }
}

/// Opens a websocket the way a real client does; panics when refused.
pub fn connect(sim: &Sim) -> Ws {
    try_connect(sim, PATH, Some(ORIGIN)).expect("websocket upgrade")
}

/// The HTTP status of a refused upgrade.
pub fn refused_status(r: Result<Ws, tungstenite::Error>) -> u16 {
    match r {
        Err(tungstenite::Error::Http(resp)) => resp.status().as_u16(),
        Err(e) => panic!("expected an HTTP refusal, got {e}"),
        Ok(_) => panic!("expected an HTTP refusal, the upgrade succeeded"),
    }
}

/// One read from a websocket.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Recv {
    /// A text (or binary) message.
    Text(String),
    /// Nothing within the wait (or a control frame).
    Timeout,
    /// The server sent a websocket close frame (or the close handshake is over).
    Closed,
    /// The connection ended without a close frame.
    Gone(String),
}

pub fn recv(ws: &mut Ws, wait: Duration) -> Recv {
    let _ = ws
        .get_ref()
        .tcp()
        .set_read_timeout(Some(wait.max(Duration::from_millis(1))));
    match ws.read() {
        Ok(Message::Text(t)) => Recv::Text(t.as_str().to_owned()),
        Ok(Message::Binary(b)) => Recv::Text(String::from_utf8_lossy(&b).into_owned()),
        Ok(Message::Close(_)) => {
            let _ = ws.flush();
            Recv::Closed
        }
        Ok(_) => Recv::Timeout,
        Err(tungstenite::Error::Io(e))
            if matches!(
                e.kind(),
                io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
            ) =>
        {
            Recv::Timeout
        }
        Err(tungstenite::Error::ConnectionClosed | tungstenite::Error::AlreadyClosed) => {
            Recv::Closed
        }
        Err(e) => Recv::Gone(e.to_string()),
    }
}

/// A frame of a received message, decoded for assertions.
#[derive(Debug, Clone, PartialEq)]
pub enum Parsed {
    Heartbeat(u64),
    Json(serde_json::Value),
    Bad(String),
}

impl Parsed {
    /// `m` of a JSON message.
    pub fn method(&self) -> Option<&str> {
        match self {
            Self::Json(v) => v.get("m").and_then(|m| m.as_str()),
            _ => None,
        }
    }

    /// `p[i]`.
    pub fn param(&self, i: usize) -> Option<&serde_json::Value> {
        match self {
            Self::Json(v) => v.get("p").and_then(|p| p.get(i)),
            _ => None,
        }
    }

    pub fn param_str(&self, i: usize) -> Option<&str> {
        self.param(i).and_then(|v| v.as_str())
    }
}

/// The frames of one websocket message.
pub fn frames_of(msg: &str) -> Vec<Parsed> {
    let mut buf = msg.as_bytes().to_vec();
    let mut out = Vec::new();
    for f in FrameDecoder::new().frames(&mut buf) {
        match f {
            Ok(Frame::Heartbeat(n)) => out.push(Parsed::Heartbeat(n)),
            Ok(Frame::Json(p)) => match serde_json::from_slice(p) {
                Ok(v) => out.push(Parsed::Json(v)),
                Err(e) => out.push(Parsed::Bad(e.to_string())),
            },
            Err(e) => {
                out.push(Parsed::Bad(e.to_string()));
                break;
            }
        }
    }
    out
}

/// Encodes a request as one frame.
pub fn encode(req: Request<'_>) -> String {
    let mut out = Vec::new();
    req.encode(&mut out);
    String::from_utf8(out).expect("ascii frame")
}

/// Frames a raw JSON payload.
pub fn frame(payload: &str) -> String {
    format!("~m~{}~m~{payload}", payload.len())
}

/// A websocket client that speaks raw frames and keeps every message it receives.
#[derive(Debug)]
pub struct Raw {
    pub ws: Ws,
    /// Every message received, with its arrival time.
    pub log: Vec<(Instant, String)>,
    /// How the connection ended, if it did.
    pub end: Option<Recv>,
}

impl Raw {
    pub fn new(ws: Ws) -> Self {
        Self {
            ws,
            log: Vec::new(),
            end: None,
        }
    }

    pub fn connect(sim: &Sim) -> Self {
        Self::new(connect(sim))
    }

    /// Sends one websocket text message.
    pub fn send(&mut self, text: &str) {
        self.ws.send(Message::text(text)).expect("send");
    }

    pub fn send_request(&mut self, req: Request<'_>) {
        let text = encode(req);
        self.send(&text);
    }

    /// Reads once; records what came. `None` after the end.
    pub fn pump(&mut self, wait: Duration) -> Option<String> {
        if self.end.is_some() {
            return None;
        }
        match recv(&mut self.ws, wait) {
            Recv::Text(t) => {
                self.log.push((now(), t.clone()));
                Some(t)
            }
            Recv::Timeout => None,
            end => {
                self.end = Some(end);
                None
            }
        }
    }

    /// Reads until a received message satisfies `pred` (returned), the connection ends or
    /// `timeout` passes.
    pub fn recv_until(
        &mut self,
        timeout: Duration,
        mut pred: impl FnMut(&str) -> bool,
    ) -> Option<String> {
        let deadline = now() + timeout;
        while self.end.is_none() {
            let left = deadline.saturating_duration_since(now());
            if left.is_zero() {
                return None;
            }
            if let Some(t) = self.pump(left.min(Duration::from_millis(50)))
                && pred(&t)
            {
                return Some(t);
            }
        }
        None
    }

    /// Reads until a message holds a frame with method `m`.
    pub fn recv_method(&mut self, m: &str, timeout: Duration) -> Option<Vec<Parsed>> {
        self.recv_until(timeout, |t| {
            frames_of(t).iter().any(|f| f.method() == Some(m))
        })
        .map(|t| frames_of(&t))
    }

    /// Reads (recording) until the connection ends or `timeout` passes.
    pub fn run_for(&mut self, timeout: Duration) {
        let _ = self.recv_until(timeout, |_| false);
    }

    /// Reads until the connection ends; `None` when it did not within `timeout`.
    pub fn wait_end(&mut self, timeout: Duration) -> Option<Recv> {
        self.run_for(timeout);
        self.end.clone()
    }
}

/// Drives a [`Connection`] with one chart session over a websocket: sends what it transmits,
/// feeds it what comes, collects its events and errors.
#[derive(Debug)]
pub struct Driver {
    pub ws: Ws,
    pub conn: Connection,
    pub chart: ChartId,
    pub events: Vec<Event>,
    pub errors: Vec<ConnectionError>,
    /// Every message received, in order.
    pub messages: Vec<String>,
    /// Websocket messages sent.
    pub sent: u64,
    /// How the connection ended, if it did.
    pub end: Option<Recv>,
    /// The first failed send (the connection may still have bytes to read).
    pub send_error: Option<String>,
    next_key: u64,
}

impl Driver {
    pub fn new(ws: Ws, chart_id: &str) -> Self {
        Self::with_config(
            ws,
            chart_id,
            ConnectionConfig::default(),
            ChartConfig::default(),
        )
    }

    pub fn with_config(ws: Ws, chart_id: &str, conn: ConnectionConfig, chart: ChartConfig) -> Self {
        let t = now();
        let mut conn = Connection::new(t, conn);
        let chart = conn.add_chart_named(t, chart_id, chart);
        Self {
            ws,
            conn,
            chart,
            events: Vec::new(),
            errors: Vec::new(),
            messages: Vec::new(),
            sent: 0,
            end: None,
            send_error: None,
            next_key: 0,
        }
    }

    pub fn connect(sim: &Sim, chart_id: &str) -> Self {
        Self::new(connect(sim), chart_id)
    }

    pub fn connect_with(
        sim: &Sim,
        chart_id: &str,
        conn: ConnectionConfig,
        chart: ChartConfig,
    ) -> Self {
        Self::with_config(connect(sim), chart_id, conn, chart)
    }

    /// The driven chart session.
    pub fn session(&mut self) -> &mut ChartSession {
        self.conn.chart_mut(self.chart).expect("chart open")
    }

    pub fn add(&mut self, req: tvdatafeed::protocol::SeriesRequest) -> SeriesKey {
        let key = SeriesKey(self.next_key);
        self.next_key += 1;
        self.session()
            .add_series(now(), key, req)
            .expect("add_series");
        key
    }

    /// Sends a raw text message (after what the session has queued).
    pub fn send_raw(&mut self, text: &str) {
        self.flush();
        if self.end.is_none() && self.send_error.is_none() {
            self.ws.send(Message::text(text)).expect("send");
            self.sent += 1;
        }
    }

    /// Sends everything the connection has queued.
    pub fn flush(&mut self) {
        while let Some(out) = self.conn.poll_transmit() {
            let text = String::from_utf8(out).expect("ascii");
            if self.end.is_none() && self.send_error.is_none() {
                match self.ws.send(Message::text(text)) {
                    Ok(()) => self.sent += 1,
                    Err(e) => self.send_error = Some(e.to_string()),
                }
            }
        }
    }

    /// One read of at most `wait`, fed to the connection.
    pub fn pump(&mut self, wait: Duration) {
        self.flush();
        if self.end.is_some() {
            return;
        }
        match recv(&mut self.ws, wait) {
            Recv::Text(t) => {
                let mut bytes = t.clone().into_bytes();
                self.messages.push(t);
                if let Err(e) = self.conn.handle_message(now(), &mut bytes) {
                    self.errors.push(e);
                }
            }
            Recv::Timeout => {}
            end => self.end = Some(end),
        }
        let t = now();
        if self.conn.poll_timeout().is_some_and(|d| d <= t) {
            self.conn.handle_timeout(t);
        }
        while let Some(e) = self.conn.poll_event() {
            self.events.push(e);
        }
        self.flush();
    }

    /// Pumps until `pred` holds (true), or the deadline passes or the connection ends (false,
    /// unless `pred` holds then).
    pub fn run_until(&mut self, timeout: Duration, mut pred: impl FnMut(&Self) -> bool) -> bool {
        let deadline = now() + timeout;
        loop {
            if pred(self) {
                return true;
            }
            let left = deadline.saturating_duration_since(now());
            if self.end.is_some() || left.is_zero() {
                return false;
            }
            self.pump(left.min(Duration::from_millis(20)));
        }
    }

    /// Pumps for `d` (or until the connection ends).
    pub fn run_for(&mut self, d: Duration) {
        let _ = self.run_until(d, |_| false);
    }

    /// The events of one series.
    pub fn series(&self, id: SeriesKey) -> impl Iterator<Item = &SeriesEvent> {
        self.events.iter().filter_map(move |e| match e {
            Event::Chart {
                event: ChartEvent::Series { key, event },
                ..
            } if *key == id => Some(event),
            _ => None,
        })
    }

    /// The chart-level critical errors.
    pub fn critical_errors(&self) -> Vec<(String, Option<String>)> {
        self.events
            .iter()
            .filter_map(|e| match e {
                Event::Chart {
                    event: ChartEvent::CriticalError { reason, detail },
                    ..
                }
                | Event::CriticalError { reason, detail, .. } => {
                    Some((reason.clone(), detail.clone()))
                }
                _ => None,
            })
            .collect()
    }

    /// The history of a series, once complete.
    pub fn history(&self, id: SeriesKey) -> Option<(Vec<Bar>, Option<Bar>)> {
        self.series(id).find_map(|e| match e {
            SeriesEvent::History { bars, forming, .. } => Some((bars.clone(), *forming)),
            _ => None,
        })
    }

    pub fn failure(&self, id: SeriesKey) -> Option<SeriesFailure> {
        self.series(id).find_map(|e| match e {
            SeriesEvent::Failed(f) => Some(f.clone()),
            _ => None,
        })
    }

    /// Whether the series has a history or a failure.
    pub fn settled(&self, id: SeriesKey) -> bool {
        self.series(id)
            .any(|e| matches!(e, SeriesEvent::History { .. } | SeriesEvent::Failed(_)))
    }

    /// Bars the series closed live.
    pub fn closed(&self, id: SeriesKey) -> Vec<Bar> {
        self.series(id)
            .filter_map(|e| match e {
                SeriesEvent::Closed(b) => Some(*b),
                _ => None,
            })
            .collect()
    }

    /// Loads a series, panicking if it does not settle within `timeout`.
    pub fn load(
        &mut self,
        req: tvdatafeed::protocol::SeriesRequest,
        timeout: Duration,
    ) -> SeriesKey {
        let id = self.add(req);
        assert!(
            self.run_until(timeout, |d| d.settled(id)),
            "series did not settle within {timeout:?}; end {:?}, errors {:?}",
            self.end,
            self.errors
        );
        id
    }

    pub fn heartbeats(&self) -> Vec<u64> {
        self.events
            .iter()
            .filter_map(|e| match e {
                Event::Heartbeat(n) => Some(*n),
                _ => None,
            })
            .collect()
    }
}

/// Asserts that `bars` are ascending, contiguous at `interval`, and each equal to the market.
pub fn assert_market_bars(sim: &Sim, symbol: &Symbol, interval: Interval, bars: &[Bar]) {
    for w in bars.windows(2) {
        assert_eq!(
            interval.next_bar_open(w[0].time),
            w[1].time,
            "bars not ascending and contiguous at {}",
            w[0].time
        );
    }
    for b in bars {
        assert_eq!(
            *b,
            sim.expected_bar(symbol, interval, b.time),
            "bar at {}",
            b.time
        );
    }
}
