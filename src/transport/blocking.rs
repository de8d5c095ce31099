//! A blocking websocket connection whose whole life is bounded by one deadline.
//!
//! Every syscall under tungstenite and rustls goes through [`DeadlineTcp`], which sets the
//! socket's timeout to the time left before each read and write: a server that trickles one
//! byte at a time (inside the upgrade, or inside a message) cannot hold a call past its
//! deadline, because tungstenite's internal read loops end on the first `TimedOut`.

use std::{
    net::{Shutdown, TcpStream, ToSocketAddrs},
    time::{Duration, Instant},
};

use tungstenite::{HandshakeError, Message, WebSocket};

use super::{IoSource, MaybeTls, TlsStream, TransportConfig, TransportError, handshake};
use crate::{clock, vocab::Phase};

type Stream = MaybeTls<rustls::ClientConnection, DeadlineTcp>;

pub(crate) use super::stream::DeadlineTcp;

/// One websocket connection.
pub(crate) struct Connection {
    ws: WebSocket<Stream>,
    cfg: TransportConfig,
    /// The call's deadline, for error messages.
    budget: Duration,
}

impl std::fmt::Debug for Connection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Connection")
            .field("endpoint", &self.cfg.endpoint)
            .finish_non_exhaustive()
    }
}

/// Time left before `deadline` (`None`: no deadline), or a timeout in `phase`.
fn remaining(
    deadline: Option<Instant>,
    budget: Duration,
    phase: Phase,
    host: &str,
) -> Result<Option<Duration>, TransportError> {
    let Some(deadline) = deadline else {
        return Ok(None);
    };
    let left = deadline.saturating_duration_since(clock::monotonic());
    if left.is_zero() {
        Err(TransportError::Timeout {
            host: host.to_owned(),
            after: budget,
            during: phase,
        })
    } else {
        Ok(Some(left))
    }
}

impl Connection {
    /// Connects, upgrades (with TLS for `wss`), all before `deadline` (`None`: no deadline).
    ///
    /// Name resolution uses the system resolver, which `std` cannot bound: a host name whose
    /// lookup hangs can outlast the deadline. Addresses (the simulator, `127.0.0.1`) never do.
    pub(crate) fn connect(
        cfg: &TransportConfig,
        deadline: Option<Instant>,
        budget: Duration,
    ) -> Result<Self, TransportError> {
        let ep = &cfg.endpoint;
        let host = ep.host();
        let addrs: Vec<_> = (host, ep.port())
            .to_socket_addrs()
            .map_err(|e| TransportError::Resolve {
                host: host.to_owned(),
                source: IoSource::from(e),
            })?
            .collect();
        let mut last = TransportError::NoAddress {
            host: host.to_owned(),
        };
        let mut tcp = None;
        for addr in addrs {
            let left = remaining(deadline, budget, Phase::Connect, host)?;
            let attempt = match left {
                Some(left) => TcpStream::connect_timeout(&addr, left),
                None => TcpStream::connect(addr),
            };
            match attempt {
                Ok(s) => {
                    tcp = Some(s);
                    break;
                }
                Err(e) => last = connect_error(e, addr, budget, host),
            }
        }
        let tcp = tcp.ok_or(last)?;
        tcp.set_nodelay(true)
            .map_err(|e| handshake::io_error(e, host, ep.is_tls(), Phase::Connect, budget))?;
        let sock = DeadlineTcp::new(tcp, deadline);
        let stream = if ep.is_tls() {
            let config = cfg.rustls()?;
            let name = rustls::pki_types::ServerName::try_from(host.to_owned()).map_err(|e| {
                TransportError::InvalidConfig(format!(
                    "bad tls server name {}: {e}",
                    crate::vocab::echo(host)
                ))
            })?;
            let conn = rustls::ClientConnection::new(config, name)
                .map_err(|e| handshake::tls_failure(&e, host))?;
            Stream::Tls(Box::new(TlsStream { conn, sock }))
        } else {
            Stream::plain_client(sock)
        };
        let req = handshake::request(cfg)?;
        let ws_config = handshake::ws_config(cfg);
        // With a deadline-bound socket a handshake never returns `Interrupted`: every read
        // blocks until data or the deadline (`TimedOut`, a failure).
        match tungstenite::client::client_with_config(req, stream, Some(ws_config)) {
            Ok((ws, _response)) => Ok(Self {
                ws,
                cfg: cfg.clone(),
                budget,
            }),
            Err(HandshakeError::Failure(e)) => {
                let phase = phase_of(&e);
                Err(handshake::ws_error(e, cfg, phase, budget))
            }
            Err(HandshakeError::Interrupted(_)) => Err(TransportError::Timeout {
                host: host.to_owned(),
                after: budget,
                during: Phase::Upgrade,
            }),
        }
    }

    fn phase_error(&self, e: tungstenite::Error) -> TransportError {
        handshake::ws_error(e, &self.cfg, Phase::Answer, self.budget)
    }

    /// Sends one text message (ASCII frames).
    pub(crate) fn send(&mut self, text: Vec<u8>) -> Result<(), TransportError> {
        let text = String::from_utf8(text).map_err(|_| TransportError::Internal {
            host: self.cfg.endpoint.host().to_owned(),
            what: "a request is not utf-8".into(),
        })?;
        self.ws
            .send(Message::text(text))
            .map_err(|e| self.phase_error(e))
    }

    /// The next text message. Pings are answered by tungstenite.
    pub(crate) fn recv(&mut self) -> Result<Vec<u8>, TransportError> {
        loop {
            match self.ws.read() {
                Ok(Message::Text(t)) => return Ok(t.as_bytes().to_vec()),
                Ok(Message::Binary(b)) => return Ok(b.to_vec()),
                Ok(Message::Close(frame)) => {
                    return Err(TransportError::Closed {
                        host: self.cfg.endpoint.host().to_owned(),
                        how: super::Closed::CloseFrame(frame.map(|f| u16::from(f.code))),
                    });
                }
                Ok(_) => {}
                Err(e) => return Err(self.phase_error(e)),
            }
        }
    }

    /// Replaces the deadline of every later read and write (`None`: none). A read or write that
    /// reaches it fails with [`TransportError::Timeout`] and can be retried with a later deadline:
    /// tungstenite and rustls keep what they had buffered.
    pub(crate) fn set_deadline(&mut self, deadline: Option<Instant>) {
        self.ws.get_mut().socket_mut().set_deadline(deadline);
    }

    /// Closes politely, waiting at most a moment for the server's answer.
    pub(crate) fn close(mut self) {
        let quick = clock::monotonic() + Duration::from_millis(200);
        self.ws.get_mut().socket_mut().set_deadline(Some(quick));
        if self.ws.close(None).is_ok() {
            while self.ws.read().is_ok() {}
        }
        let _ = self.ws.get_ref().socket().get().shutdown(Shutdown::Both);
    }
}

/// Where a handshake failure happened: rustls errors come from the TLS handshake, the rest
/// from the upgrade (which, for `wss://`, runs over TLS).
fn phase_of(e: &tungstenite::Error) -> Phase {
    match e {
        tungstenite::Error::Io(io)
            if io
                .get_ref()
                .is_some_and(|i| i.downcast_ref::<rustls::Error>().is_some()) =>
        {
            Phase::Tls
        }
        _ => Phase::Upgrade,
    }
}

fn connect_error(
    e: std::io::Error,
    addr: std::net::SocketAddr,
    budget: Duration,
    host: &str,
) -> TransportError {
    match e.kind() {
        std::io::ErrorKind::ConnectionRefused => TransportError::Refused {
            addr: addr.to_string(),
        },
        std::io::ErrorKind::TimedOut | std::io::ErrorKind::WouldBlock => TransportError::Timeout {
            host: host.to_owned(),
            after: budget,
            during: Phase::Connect,
        },
        _ => TransportError::Connect {
            addr: addr.to_string(),
            source: IoSource::from(e),
        },
    }
}
