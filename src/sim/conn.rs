//! One simulated connection: the upgrade (plain or TLS), then a loop that reads client
//! messages with a short timeout, runs the protocol session, applies faults and writes.

use std::{
    io,
    net::{Shutdown, SocketAddr, TcpStream},
    os::fd::AsRawFd,
    time::{Duration, Instant},
};

use mio::{Events, Interest, Token, unix::SourceFd};
use tungstenite::{
    Message, WebSocket,
    handshake::server::{ErrorResponse, Request, Response},
    http::StatusCode,
    protocol::WebSocketConfig,
};

use super::{Armed, FaultKind, Shared, SimConfig, SimError, session::ServerSession};
use crate::{
    clock,
    protocol::frame::encode_frame,
    sync::plain::{Arc, atomic::Ordering},
    transport::{MaybeTls, TlsStream},
};

/// The client socket's token in the connection's poll.
const CLIENT: Token = Token(0);
/// The longest the loop blocks in a read before re-checking stop flags and faults.
const MAX_WAIT: Duration = Duration::from_millis(20);
/// A client that does not take our bytes for this long is dropped.
const WRITE_TIMEOUT: Duration = Duration::from_secs(5);
/// How long a closing connection waits for the client's answer to its close frame.
const CLOSE_LINGER: Duration = Duration::from_millis(500);

/// A self-signed certificate for `localhost` / `127.0.0.1` and the rustls config serving it.
pub(crate) fn tls_config() -> Result<(Arc<rustls::ServerConfig>, Vec<u8>, String), SimError> {
    let tls = |e: &dyn std::fmt::Display| SimError::Tls(e.to_string());
    let cert =
        rcgen::generate_simple_self_signed(vec!["localhost".to_owned(), "127.0.0.1".to_owned()])
            .map_err(|e| tls(&e))?;
    let der = cert.cert.der().to_vec();
    let pem = cert.cert.pem();
    let key = rustls::pki_types::PrivateKeyDer::Pkcs8(cert.signing_key.serialize_der().into());
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| tls(&e))?
        .with_no_client_auth()
        .with_single_cert(vec![der.clone().into()], key)
        .map_err(|e| tls(&e))?;
    Ok((Arc::new(config), der, pem))
}

type Stream = MaybeTls<rustls::ServerConnection, TcpStream>;

fn origin_ok(req: &Request) -> bool {
    req.headers()
        .get("origin")
        .and_then(|o| o.to_str().ok())
        .and_then(|o| o.strip_prefix("https://"))
        .is_some_and(|host| host == "tradingview.com" || host.ends_with(".tradingview.com"))
}

fn refuse(status: StatusCode, body: &str) -> ErrorResponse {
    let mut r = ErrorResponse::new(Some(body.to_owned()));
    *r.status_mut() = status;
    r
}

fn refuse_retry_after(status: StatusCode, retry_after: Option<u64>) -> ErrorResponse {
    let mut r = refuse(status, "refused");
    if let Some(secs) = retry_after {
        r.headers_mut()
            .insert("retry-after", tungstenite::http::HeaderValue::from(secs));
    }
    r
}

/// Runs one connection to its end. Never panics on client input.
pub(crate) fn run(
    id: u64,
    stream: TcpStream,
    peer: SocketAddr,
    shared: &Shared,
    cfg: &SimConfig,
    tls: Option<Arc<rustls::ServerConfig>>,
) {
    tracing::debug!(id, %peer, "tv-sim-conn started");
    shared.active.fetch_add(1, Ordering::Relaxed);
    shared.changed.notify_all();
    let result = serve(id, stream, shared, cfg, tls);
    if let Err(e) = result {
        tracing::debug!(id, error = %e, "connection ended with an error");
    }
    shared.active.fetch_sub(1, Ordering::Relaxed);
    shared.unregister(id);
    tracing::debug!(id, "tv-sim-conn ended");
}

fn serve(
    id: u64,
    tcp: TcpStream,
    shared: &Shared,
    cfg: &SimConfig,
    tls: Option<Arc<rustls::ServerConfig>>,
) -> io::Result<()> {
    tcp.set_nodelay(true)?;
    // The handshake is bounded in time: a client that opens a socket and says nothing is cut.
    tcp.set_read_timeout(Some(Duration::from_secs(5)))?;
    tcp.set_write_timeout(Some(WRITE_TIMEOUT))?;
    let stream = match tls {
        Some(config) => {
            let conn = rustls::ServerConnection::new(config).map_err(io::Error::other)?;
            Stream::Tls(Box::new(TlsStream { conn, sock: tcp }))
        }
        None => Stream::plain(tcp),
    };
    // The generation this connection belongs to, read before the upgrade: a restart injected
    // once the client has seen the upgrade's answer (while this thread has yet to return from
    // the handshake) must still close it. Read after, it was missed, and the connection outlived
    // the restart.
    let generation = shared.generation();
    let reject = shared.take_reject();
    #[expect(
        clippy::result_large_err,
        reason = "tungstenite's handshake callback signature"
    )]
    let check = |req: &Request, resp: Response| -> Result<Response, ErrorResponse> {
        if !req.uri().path().starts_with("/socket.io/websocket") {
            return Err(refuse(StatusCode::NOT_FOUND, "not found"));
        }
        if cfg.require_origin && !origin_ok(req) {
            return Err(refuse(StatusCode::FORBIDDEN, "forbidden"));
        }
        if let Some((status, retry_after)) = reject {
            let status = StatusCode::from_u16(status).unwrap_or(StatusCode::SERVICE_UNAVAILABLE);
            return Err(refuse_retry_after(status, retry_after));
        }
        Ok(resp)
    };
    let ws_config = WebSocketConfig::default()
        .max_message_size(Some(1 << 20))
        .max_frame_size(Some(1 << 20));
    let mut ws = match tungstenite::accept_hdr_with_config(stream, check, Some(ws_config)) {
        Ok(ws) => ws,
        Err(e) => {
            shared.refused.fetch_add(1, Ordering::Relaxed);
            return Err(io::Error::other(format!("upgrade refused or failed: {e}")));
        }
    };
    shared.connections.fetch_add(1, Ordering::Relaxed);
    shared.changed.notify_all();
    // Readiness of the client's socket, for precise waits (see the end of the loop).
    // A blocking read outside the loop's own (a TLS write that must read) stays short.
    ws.get_ref().tcp().set_read_timeout(Some(MAX_WAIT))?;
    let mut poll = mio::Poll::new()?;
    let fd = ws.get_ref().tcp().as_raw_fd();
    poll.registry()
        .register(&mut SourceFd(&fd), CLIENT, Interest::READABLE)?;
    let mut events = Events::with_capacity(4);
    // The last turn read a client message: there may be more, so do not wait.
    let mut more_input = false;
    let mut session = ServerSession::new(cfg, clock::unix_ms(), id);
    let mut series = SeriesGauge { shared, counted: 0 };
    let mut faults: Vec<Armed> = Vec::new();
    let mut hold_until: Option<Instant> = None;
    let mut stalled_forever = false;
    let mut trickle: Option<Duration> = None;
    let mut sent_since_inject: u64 = 0;
    loop {
        if shared.stopping() {
            close_gracefully(&mut ws, Duration::from_millis(200));
            return Ok(());
        }
        if shared.generation() != generation {
            let _ = ws.get_ref().tcp().shutdown(Shutdown::Both);
            return Ok(());
        }
        let fresh = shared.take_faults(id);
        if !fresh.is_empty() {
            sent_since_inject = 0;
            faults.extend(fresh);
        }
        let now = clock::monotonic();
        // Faults due by time.
        let mut i = 0;
        while i < faults.len() {
            let f = faults[i];
            let due = match (f.at, f.after_messages) {
                (Some(at), _) => now >= at,
                (None, Some(n)) => sent_since_inject >= n,
                (None, None) => true,
            };
            if !due {
                i += 1;
                continue;
            }
            faults.swap_remove(i);
            tracing::debug!(id, kind = ?f.kind, "fault fires");
            match f.kind {
                FaultKind::CloseClean => {
                    close_gracefully(&mut ws, CLOSE_LINGER);
                    return Ok(());
                }
                FaultKind::CloseAbrupt => {
                    let _ = ws.get_ref().tcp().shutdown(Shutdown::Both);
                    return Ok(());
                }
                FaultKind::Stall(None) => stalled_forever = true,
                FaultKind::Stall(Some(d)) | FaultKind::Delay(d) => hold_until = Some(now + d),
                FaultKind::MalformedFrame => session.out.push(b"~m~garbage".to_vec()),
                FaultKind::WrongLengthPrefix => {
                    let p = r#"{"m":"quote_completed","p":["qs_x","A:B"]}"#;
                    session
                        .out
                        .push(format!("~m~{}~m~{p}", p.len() + 3).into_bytes());
                }
                FaultKind::AbsurdLength => session.out.push(b"~m~99999999999~m~{}".to_vec()),
                FaultKind::GarbageJson => {
                    let mut m = Vec::new();
                    encode_frame(b"{not json!}", &mut m);
                    session.out.push(m);
                }
                FaultKind::UnknownMessage => {
                    let mut m = Vec::new();
                    encode_frame(br#"{"m":"sim_unknown_message","p":[1,"two"]}"#, &mut m);
                    session.out.push(m);
                }
                FaultKind::LateCriticalError => {
                    if !session.late_critical_error() {
                        tracing::debug!(id, "no chart session deleted yet: nothing to report");
                    }
                }
                FaultKind::Restart(_) => {}
                FaultKind::Trickle(gap) => trickle = Some(gap),
            }
        }
        let now_ms = clock::unix_ms();
        session.tick(cfg, shared, now_ms);
        // With a service time, series come and go as queued requests are served.
        series.set(session.series_count());
        let holding = stalled_forever || hold_until.is_some_and(|h| now < h);
        if !holding {
            hold_until = None;
            let live = session.take_du_count();
            let mut tags = session.take_live_tags().into_iter().peekable();
            let mut n = 0u64;
            // Indexes of `out` as the live tags count them (a trickled first message is gone).
            let mut first = 0;
            if let Some(gap) = trickle.filter(|_| !session.out.is_empty()) {
                trickle = None;
                let msg = session.out.remove(0);
                first = 1;
                let _ = tags.next_if(|(at, _)| *at == 0);
                let len = msg.len() as u64;
                if !write_trickling(&mut ws, shared, msg, gap)? {
                    return Ok(());
                }
                n += 1;
                shared.bytes_sent.fetch_add(len, Ordering::Relaxed);
            }
            for (i, msg) in session.out.drain(..).enumerate() {
                let i = i + first;
                let len = msg.len() as u64;
                // Frames are ASCII (the writer escapes everything else); faults write ASCII too.
                let text = String::from_utf8(msg).unwrap_or_default();
                let tag = tags.next_if(|(at, _)| *at == i).map(|(_, t)| t);
                if let Some(tag) = tag {
                    // Recorded: what was queued before goes first, then this message alone,
                    // stamped just before its own write.
                    ws.flush().map_err(io::Error::other)?;
                    let at = clock::monotonic();
                    ws.send(Message::text(text)).map_err(io::Error::other)?;
                    shared.record_send(
                        cfg,
                        super::LiveSend {
                            at,
                            connection: id,
                            symbol: tag.symbol,
                            interval: tag.interval,
                            bar: tag.bar,
                        },
                    );
                } else {
                    ws.write(Message::text(text)).map_err(io::Error::other)?;
                }
                n += 1;
                shared.bytes_sent.fetch_add(len, Ordering::Relaxed);
            }
            if n > 0 {
                ws.flush().map_err(io::Error::other)?;
                shared.messages_sent.fetch_add(n, Ordering::Relaxed);
                shared.live_sent.fetch_add(live, Ordering::Relaxed);
                sent_since_inject += n;
            }
            session.sent(cfg, clock::unix_ms());
            if session.close.is_some() {
                tracing::debug!(id, reason = ?session.close, "session asks to close");
                close_gracefully(&mut ws, CLOSE_LINGER);
                return Ok(());
            }
        }
        // Wait for the client or the next deadline (or MAX_WAIT), then go round again.
        let wait_ms = session.next_deadline().saturating_sub(clock::unix_ms());
        let mut wait = Duration::from_millis(wait_ms).clamp(Duration::from_millis(1), MAX_WAIT);
        if let Some(h) = hold_until {
            wait = wait.min(
                h.saturating_duration_since(clock::monotonic())
                    .max(Duration::from_millis(1)),
            );
        }
        if faults
            .iter()
            .any(|f| f.at.is_some() || f.after_messages.is_some())
        {
            wait = wait.min(Duration::from_millis(5));
        }
        if more_input {
            wait = Duration::ZERO;
        }
        // `epoll_wait`, not a socket read timeout: a read timeout sleeps in whole scheduler
        // ticks (8-12 ms for a 1 ms timeout on a 250 Hz kernel), which would make every bar
        // close and every update late by that much; the poll wakes within about a millisecond.
        if let Err(e) = poll.poll(&mut events, Some(wait))
            && e.kind() != io::ErrorKind::Interrupted
        {
            return Err(e);
        }
        // One client message per turn, as a blocking read gave it (faults count messages
        // between turns), without blocking. Edge-triggered: while there may be more (also
        // what the websocket or TLS layer holds already), the next turn does not wait.
        ws.get_ref().tcp().set_nonblocking(true)?;
        let read = read_one(&mut ws);
        ws.get_ref().tcp().set_nonblocking(false)?;
        match read? {
            Read::Text(mut text) => {
                shared.messages_received.fetch_add(1, Ordering::Relaxed);
                session.handle_text(cfg, shared, clock::unix_ms(), &mut text);
                series.set(session.series_count());
                more_input = true;
            }
            Read::Control => more_input = true,
            Read::Empty => more_input = false,
        }
    }
}

/// This connection's share of [`Shared::series_open`], given back when the connection ends.
struct SeriesGauge<'a> {
    shared: &'a Shared,
    counted: u64,
}

impl SeriesGauge<'_> {
    fn set(&mut self, n: u64) {
        if n > self.counted {
            self.shared
                .series_open
                .fetch_add(n - self.counted, Ordering::Relaxed);
        } else {
            self.shared
                .series_open
                .fetch_sub(self.counted - n, Ordering::Relaxed);
        }
        self.counted = n;
    }
}

impl Drop for SeriesGauge<'_> {
    fn drop(&mut self) {
        self.set(0);
    }
}

/// Sends a close frame, then reads (and drops) what the peer still sends until it answers the
/// close or `linger` passes. Dropping a socket with unread bytes makes the kernel reset the
/// connection, which can destroy what the peer has not read yet (the last replies, a
/// `protocol_error`, the close frame itself); draining first makes the close orderly.
fn close_gracefully(ws: &mut WebSocket<Stream>, linger: Duration) {
    let _ = ws.close(None);
    let _ = ws.flush();
    let deadline = clock::monotonic() + linger;
    loop {
        let left = deadline.saturating_duration_since(clock::monotonic());
        if left.is_zero() || ws.get_ref().tcp().set_read_timeout(Some(left)).is_err() {
            return;
        }
        if ws.read().is_err() {
            return;
        }
    }
}

/// Writes `msg` as one websocket text frame, one byte every `gap`, straight to the stream
/// under the websocket (after flushing what the websocket holds, so the byte stream stays
/// well formed). `Ok(false)` when the simulator stops or restarts meanwhile.
fn write_trickling(
    ws: &mut WebSocket<Stream>,
    shared: &Shared,
    msg: Vec<u8>,
    gap: Duration,
) -> io::Result<bool> {
    use std::io::Write as _;
    ws.flush().map_err(io::Error::other)?;
    let mut frame = Vec::with_capacity(msg.len() + 10);
    tungstenite::protocol::frame::Frame::message(
        msg,
        tungstenite::protocol::frame::coding::OpCode::Data(
            tungstenite::protocol::frame::coding::Data::Text,
        ),
        true,
    )
    .format(&mut frame)
    .map_err(io::Error::other)?;
    let generation = shared.generation();
    for byte in frame {
        let stream = ws.get_mut();
        stream.write_all(&[byte])?;
        stream.flush()?;
        let until = clock::monotonic() + gap;
        loop {
            if shared.stopping() || shared.generation() != generation {
                return Ok(false);
            }
            let left = until.saturating_duration_since(clock::monotonic());
            if left.is_zero() {
                break;
            }
            crate::sync::plain::thread::park_timeout(left.min(MAX_WAIT));
        }
    }
    Ok(true)
}

/// What one read from the client gave.
enum Read {
    /// A data message.
    Text(Vec<u8>),
    /// A control frame (ping, pong): there may be more to read.
    Control,
    /// Nothing more for now.
    Empty,
}

/// One client message; `Err` when the client is gone.
fn read_one(ws: &mut WebSocket<Stream>) -> io::Result<Read> {
    match ws.read() {
        Ok(Message::Text(t)) => Ok(Read::Text(t.as_bytes().to_vec())),
        Ok(Message::Binary(b)) => Ok(Read::Text(b.to_vec())),
        Ok(Message::Close(_)) => Err(io::Error::new(
            io::ErrorKind::ConnectionAborted,
            "client closed",
        )),
        Ok(_) => Ok(Read::Control),
        Err(tungstenite::Error::Io(e))
            if matches!(
                e.kind(),
                io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
            ) =>
        {
            Ok(Read::Empty)
        }
        Err(e) => Err(io::Error::other(e.to_string())),
    }
}
