//! tungstenite over a non-blocking `mio` socket, plain or rustls: the live engine's transport.
//!
//! Nothing here blocks. The TCP connect, the TLS handshake and the websocket upgrade are
//! resumed on readiness events ([`NbSocket::drive`]); once open, reads are drained until the
//! socket says `WouldBlock` (mio is edge-triggered: a readiness not drained is never signalled
//! again), and writes are queued in tungstenite's buffer, bounded by
//! [`TransportConfig::max_write_buffer`], and flushed on every write and every writable event.
//! `WouldBlock` is never an error here and never a timeout: deadlines belong to the engine's
//! timer wheel, not to the socket.
//!
//! The socket is registered once for `READABLE | WRITABLE`; with edge-triggered readiness a
//! writable socket costs one event per transition, so there is no reregistration per write.

use std::{io, net::SocketAddr, time::Duration};

use mio::{Interest, Registry, Token, net::TcpStream};
use tungstenite::{
    HandshakeError, Message, WebSocket,
    client::client_with_config,
    handshake::{MidHandshake, client::ClientHandshake},
};

use super::{Closed, IoSource, MaybeTls, TlsStream, TransportConfig, TransportError, handshake};
use crate::vocab::Phase;

type Stream = MaybeTls<rustls::ClientConnection, TcpStream>;

enum State {
    /// The TCP connect is in progress; the upgrade starts once it completes.
    Connecting(Option<Stream>),
    /// The TLS handshake and the upgrade, resumed on readiness.
    Handshaking(Option<MidHandshake<ClientHandshake<Stream>>>),
    /// Upgraded: messages flow.
    Open(Box<WebSocket<Stream>>),
    /// Failed or closed; the socket is gone.
    Done,
}

/// What [`NbSocket::drive`] achieved.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Progress {
    /// Still connecting or upgrading: wait for the next readiness event.
    Pending,
    /// The upgrade completed: [`NbSocket::read`] and [`NbSocket::send`] work now.
    Open,
}

/// One websocket over a `mio` socket.
pub struct NbSocket {
    state: State,
    cfg: TransportConfig,
    /// The address connected to, for errors.
    addr: SocketAddr,
    /// The message being handed out, copied so that the parser may rewrite it in place; kept
    /// across messages so that reading allocates nothing of ours once warm.
    scratch: Vec<u8>,
}

impl std::fmt::Debug for NbSocket {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let state = match self.state {
            State::Connecting(_) => "connecting",
            State::Handshaking(_) => "handshaking",
            State::Open(_) => "open",
            State::Done => "done",
        };
        f.debug_struct("NbSocket")
            .field("endpoint", &self.cfg.endpoint)
            .field("state", &state)
            .finish()
    }
}

impl NbSocket {
    /// Starts connecting to `addr` (the endpoint's host, resolved by the caller) and registers
    /// the socket with `registry` under `token`. Returns at once; call [`NbSocket::drive`] on
    /// every readiness event of `token` until it says [`Progress::Open`].
    ///
    /// # Errors
    ///
    /// The socket could not be created, registered, or set up for TLS.
    pub fn connect(
        addr: SocketAddr,
        cfg: &TransportConfig,
        registry: &Registry,
        token: Token,
    ) -> Result<Self, TransportError> {
        let host = cfg.endpoint.host();
        let mut tcp = TcpStream::connect(addr).map_err(|e| connect_error(e, addr))?;
        registry
            .register(&mut tcp, token, Interest::READABLE | Interest::WRITABLE)
            .map_err(|e| connect_error(e, addr))?;
        let stream = if cfg.endpoint.is_tls() {
            let config = cfg.rustls()?;
            let name = rustls::pki_types::ServerName::try_from(host.to_owned()).map_err(|e| {
                TransportError::InvalidConfig(format!(
                    "bad tls server name {}: {e}",
                    crate::vocab::echo(host)
                ))
            })?;
            let conn = rustls::ClientConnection::new(config, name)
                .map_err(|e| handshake::tls_failure(&e, host))?;
            Stream::Tls(Box::new(TlsStream { conn, sock: tcp }))
        } else {
            Stream::plain_client(tcp)
        };
        Ok(Self {
            state: State::Connecting(Some(stream)),
            cfg: cfg.clone(),
            addr,
            scratch: Vec::new(),
        })
    }

    /// Whether the upgrade completed and the connection has not failed.
    pub fn is_open(&self) -> bool {
        matches!(self.state, State::Open(_))
    }

    /// The phase the connection is in, for timeouts.
    pub fn phase(&self) -> Phase {
        match self.state {
            State::Connecting(_) => Phase::Connect,
            State::Handshaking(_) => Phase::Upgrade,
            State::Open(_) | State::Done => Phase::Answer,
        }
    }

    fn host(&self) -> &str {
        self.cfg.endpoint.host()
    }

    fn internal(&self, what: &str) -> TransportError {
        TransportError::Internal {
            host: self.host().to_owned(),
            what: what.to_owned(),
        }
    }

    fn fail(&mut self, e: TransportError) -> TransportError {
        self.state = State::Done;
        e
    }

    /// Advances the connect, the TLS handshake and the upgrade after a readiness event. Once
    /// open it does nothing and says [`Progress::Open`].
    ///
    /// # Errors
    ///
    /// The connect was refused, TLS failed, the upgrade was refused: the socket is done.
    pub fn drive(&mut self) -> Result<Progress, TransportError> {
        loop {
            match &mut self.state {
                State::Done => {
                    return Err(TransportError::Closed {
                        host: self.host().to_owned(),
                        how: Closed::Eof,
                    });
                }
                State::Open(_) => return Ok(Progress::Open),
                State::Connecting(stream) => {
                    let Some(s) = stream.as_ref() else {
                        return Err(self.fail(self.internal("connect state lost")));
                    };
                    let sock = s.socket();
                    // mio: a connect is complete once the socket is writable and has a peer;
                    // `take_error` reports a refusal.
                    match sock.take_error() {
                        Ok(Some(e)) | Err(e) => {
                            let err = connect_error(e, self.addr);
                            return Err(self.fail(err));
                        }
                        Ok(None) => {}
                    }
                    match sock.peer_addr() {
                        Ok(_) => {}
                        Err(e)
                            if e.kind() == io::ErrorKind::NotConnected
                                || e.kind() == io::ErrorKind::WouldBlock =>
                        {
                            return Ok(Progress::Pending);
                        }
                        Err(e) => {
                            let err = connect_error(e, self.addr);
                            return Err(self.fail(err));
                        }
                    }
                    if let Err(e) = sock.set_nodelay(true) {
                        let err = connect_error(e, self.addr);
                        return Err(self.fail(err));
                    }
                    tracing::debug!(
                        addr = %self.addr,
                        tls = self.cfg.endpoint.is_tls(),
                        "tcp connected; tls handshake and websocket upgrade under way"
                    );
                    let Some(stream) = stream.take() else {
                        continue;
                    };
                    let req = match handshake::request(&self.cfg) {
                        Ok(r) => r,
                        Err(e) => return Err(self.fail(e)),
                    };
                    let config = handshake::ws_config(&self.cfg);
                    let attempt = client_with_config(req, stream, Some(config));
                    self.after_handshake_step(attempt)?;
                }
                State::Handshaking(mid) => {
                    let Some(m) = mid.take() else {
                        return Err(self.fail(self.internal("handshake state lost")));
                    };
                    let attempt = m.handshake();
                    self.after_handshake_step(attempt)?;
                    if matches!(self.state, State::Handshaking(_)) {
                        return Ok(Progress::Pending);
                    }
                }
            }
        }
    }

    fn after_handshake_step(
        &mut self,
        attempt: Result<
            (WebSocket<Stream>, tungstenite::handshake::client::Response),
            HandshakeError<ClientHandshake<Stream>>,
        >,
    ) -> Result<(), TransportError> {
        match attempt {
            Ok((ws, response)) => {
                tracing::debug!(
                    status = response.status().as_u16(),
                    "websocket upgrade accepted"
                );
                self.state = State::Open(Box::new(ws));
                Ok(())
            }
            Err(HandshakeError::Interrupted(mid)) => {
                self.state = State::Handshaking(Some(mid));
                Ok(())
            }
            Err(HandshakeError::Failure(e)) => {
                let phase = match &e {
                    tungstenite::Error::Io(io)
                        if io
                            .get_ref()
                            .is_some_and(|i| i.downcast_ref::<rustls::Error>().is_some()) =>
                    {
                        Phase::Tls
                    }
                    _ => Phase::Upgrade,
                };
                let err = handshake::ws_error(e, &self.cfg, phase, Duration::ZERO);
                tracing::debug!(?phase, error = %err, "tls handshake or websocket upgrade failed");
                Err(self.fail(err))
            }
        }
    }

    /// Reads every complete message the socket holds, until it would block, handing each
    /// text (or binary) message to `on_message` as a mutable slice (the parser rewrites it in
    /// place). Returns how many messages were read. Pings are answered by tungstenite.
    ///
    /// A peer that writes faster than `on_message` consumes keeps this call going for as long
    /// as it does: an event loop with other work should use [`NbSocket::read_at_most`].
    ///
    /// # Errors
    ///
    /// The connection closed (close frame, EOF, reset) or broke the protocol; the socket is
    /// done. Messages read before the error were handed out.
    pub fn read(&mut self, on_message: impl FnMut(&mut [u8])) -> Result<usize, TransportError> {
        self.read_at_most(usize::MAX, on_message)
    }

    /// [`NbSocket::read`], stopping after `limit` messages. A return of `limit` means the
    /// socket may hold more: the caller must read again without waiting for a readiness event
    /// (mio's events are edge-triggered, and the edge was spent on this read).
    ///
    /// # Errors
    ///
    /// As [`NbSocket::read`].
    pub fn read_at_most(
        &mut self,
        limit: usize,
        mut on_message: impl FnMut(&mut [u8]),
    ) -> Result<usize, TransportError> {
        let State::Open(ws) = &mut self.state else {
            return Ok(0);
        };
        let mut n = 0;
        loop {
            if n >= limit {
                return Ok(n);
            }
            match ws.read() {
                Ok(Message::Text(t)) => {
                    self.scratch.clear();
                    self.scratch.extend_from_slice(t.as_bytes());
                    n += 1;
                    on_message(&mut self.scratch);
                }
                Ok(Message::Binary(b)) => {
                    self.scratch.clear();
                    self.scratch.extend_from_slice(&b);
                    n += 1;
                    on_message(&mut self.scratch);
                }
                Ok(Message::Close(frame)) => {
                    let how = Closed::CloseFrame(frame.map(|f| u16::from(f.code)));
                    let host = self.host().to_owned();
                    return Err(self.fail(TransportError::Closed { host, how }));
                }
                Ok(_) => {}
                Err(tungstenite::Error::Io(e)) if e.kind() == io::ErrorKind::WouldBlock => {
                    return Ok(n);
                }
                Err(e) => {
                    let err = handshake::ws_error(e, &self.cfg, Phase::Answer, Duration::ZERO);
                    return Err(self.fail(err));
                }
            }
        }
    }

    /// Queues one text message (ASCII frames) and writes what the socket takes now; the rest
    /// goes out on the next [`NbSocket::flush`] (call it on writable events).
    ///
    /// # Errors
    ///
    /// [`TransportError::Backpressure`] when the queue would pass its bound (the server does
    /// not read); the connection is then unusable and should be dropped. Other write errors
    /// end the socket.
    pub fn send(&mut self, msg: Vec<u8>) -> Result<(), TransportError> {
        let text = String::from_utf8(msg).map_err(|_| self.internal("a request is not utf-8"))?;
        let State::Open(ws) = &mut self.state else {
            return Err(TransportError::Closed {
                host: self.host().to_owned(),
                how: Closed::Eof,
            });
        };
        match ws.write(Message::text(text)) {
            Ok(()) => {}
            Err(tungstenite::Error::Io(e)) if e.kind() == io::ErrorKind::WouldBlock => {}
            Err(e) => {
                let err = handshake::ws_error(e, &self.cfg, Phase::Answer, Duration::ZERO);
                return Err(self.fail(err));
            }
        }
        self.flush().map(|_| ())
    }

    /// Writes queued bytes until the socket would block. Returns whether everything went out.
    ///
    /// # Errors
    ///
    /// A write error: the socket is done.
    pub fn flush(&mut self) -> Result<bool, TransportError> {
        let State::Open(ws) = &mut self.state else {
            return Ok(true);
        };
        match ws.flush() {
            Ok(()) => Ok(true),
            Err(tungstenite::Error::Io(e)) if e.kind() == io::ErrorKind::WouldBlock => Ok(false),
            Err(e) => {
                let err = handshake::ws_error(e, &self.cfg, Phase::Answer, Duration::ZERO);
                Err(self.fail(err))
            }
        }
    }

    /// Queues a close frame and writes what the socket takes (best effort), then deregisters
    /// and drops the socket.
    pub fn close(&mut self, registry: &Registry) {
        if let State::Open(ws) = &mut self.state {
            let _ = ws.close(None);
            let _ = ws.flush();
        }
        self.deregister(registry);
    }

    /// Deregisters and drops the socket.
    pub fn deregister(&mut self, registry: &Registry) {
        let mut state = std::mem::replace(&mut self.state, State::Done);
        let sock = match &mut state {
            State::Connecting(Some(s)) => Some(s),
            State::Handshaking(Some(m)) => Some(m.get_mut().get_mut()),
            State::Open(ws) => Some(ws.get_mut()),
            _ => None,
        };
        if let Some(s) = sock {
            let _ = registry.deregister(s.socket_mut());
            let _ = s.socket().shutdown(std::net::Shutdown::Both);
        }
    }
}

/// A connect failure at `addr`.
fn connect_error(e: io::Error, addr: SocketAddr) -> TransportError {
    let addr = addr.to_string();
    match e.kind() {
        io::ErrorKind::ConnectionRefused => TransportError::Refused { addr },
        _ => TransportError::Connect {
            addr,
            source: IoSource::from(e),
        },
    }
}
