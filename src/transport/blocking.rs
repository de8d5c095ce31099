//! A blocking websocket connection whose every call is bounded by a deadline.

use std::{
    io,
    net::{Shutdown, TcpStream, ToSocketAddrs},
    time::{Duration, Instant},
};

use tungstenite::{
    HandshakeError, Message, WebSocket, client::IntoClientRequest, http::HeaderValue,
    protocol::WebSocketConfig,
};

use super::{MaybeTls, ORIGIN, TransportConfig, USER_AGENT};
use crate::{Error, clock};

type Stream = MaybeTls<rustls::ClientConnection>;

/// One websocket connection.
pub(crate) struct Connection {
    ws: WebSocket<Stream>,
    /// The timeout of the call, for error messages.
    budget: Duration,
}

impl std::fmt::Debug for Connection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Connection").finish_non_exhaustive()
    }
}

/// Time left before `deadline`, or a timeout error.
fn remaining(deadline: Instant, budget: Duration) -> Result<Duration, Error> {
    let left = deadline.saturating_duration_since(clock::monotonic());
    if left.is_zero() {
        Err(Error::Timeout(budget))
    } else {
        Ok(left)
    }
}

fn is_timeout(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
    )
}

fn ws_error(e: tungstenite::Error, budget: Duration) -> Error {
    match e {
        tungstenite::Error::Io(io) if is_timeout(&io) => Error::Timeout(budget),
        tungstenite::Error::Io(io) => Error::from(io),
        tungstenite::Error::Http(resp) => Error::HttpStatus {
            status: resp.status().as_u16(),
        },
        tungstenite::Error::ConnectionClosed | tungstenite::Error::AlreadyClosed => Error::Closed,
        other => Error::Protocol(other.to_string()),
    }
}

impl Connection {
    /// Connects, upgrades (with TLS for `wss`), all before `deadline`.
    ///
    /// Name resolution uses the system resolver, which `std` cannot bound: a host name whose
    /// lookup hangs can outlast the deadline. Addresses (the simulator, `127.0.0.1`) never do.
    pub(crate) fn connect(
        cfg: &TransportConfig,
        deadline: Instant,
        budget: Duration,
    ) -> Result<Self, Error> {
        let ep = &cfg.endpoint;
        let addrs: Vec<_> = (ep.host(), ep.port()).to_socket_addrs()?.collect();
        let mut last = Error::InvalidRequest(format!("{} resolves to no address", ep.host()));
        let mut tcp = None;
        for addr in addrs {
            match TcpStream::connect_timeout(&addr, remaining(deadline, budget)?) {
                Ok(s) => {
                    tcp = Some(s);
                    break;
                }
                Err(e) if is_timeout(&e) => last = Error::Timeout(budget),
                Err(e) => last = e.into(),
            }
        }
        let tcp = tcp.ok_or(last)?;
        tcp.set_nodelay(true)?;
        let stream = if ep.is_tls() {
            let config = cfg.rustls().map_err(Error::Tls)?;
            let name =
                rustls::pki_types::ServerName::try_from(ep.host().to_owned()).map_err(|e| {
                    Error::InvalidRequest(format!("bad tls server name {}: {e}", ep.host()))
                })?;
            let conn = rustls::ClientConnection::new(config, name)
                .map_err(|e| Error::Tls(e.to_string()))?;
            Stream::Tls(Box::new(rustls::StreamOwned::new(conn, tcp)))
        } else {
            Stream::Plain(tcp)
        };
        let mut req = ep
            .to_string()
            .into_client_request()
            .map_err(|e| Error::InvalidRequest(e.to_string()))?;
        let headers = req.headers_mut();
        for (k, v) in [
            ("Origin", ORIGIN),
            ("User-Agent", USER_AGENT),
            ("Accept-Language", "en-US,en;q=0.9"),
            ("Cache-Control", "no-cache"),
            ("Pragma", "no-cache"),
        ] {
            headers.insert(k, HeaderValue::from_static(v));
        }
        let ws_config = WebSocketConfig::default()
            .max_message_size(Some(cfg.max_message_size))
            .max_frame_size(Some(cfg.max_message_size))
            .max_write_buffer_size(cfg.max_message_size);
        let set_timeouts = |s: &Stream| -> Result<(), Error> {
            let left = remaining(deadline, budget)?;
            s.tcp().set_read_timeout(Some(left))?;
            s.tcp().set_write_timeout(Some(left))?;
            Ok(())
        };
        set_timeouts(&stream)?;
        let mut attempt = tungstenite::client::client_with_config(req, stream, Some(ws_config));
        loop {
            match attempt {
                Ok((ws, _response)) => return Ok(Self { ws, budget }),
                Err(HandshakeError::Failure(e)) => return Err(ws_error(e, budget)),
                Err(HandshakeError::Interrupted(mid)) => {
                    // A read timed out mid-handshake: resume while time is left.
                    set_timeouts(mid.get_ref().get_ref())?;
                    attempt = mid.handshake();
                }
            }
        }
    }

    fn arm(&self, deadline: Instant) -> Result<(), Error> {
        let left = remaining(deadline, self.budget)?;
        let tcp = self.ws.get_ref().tcp();
        tcp.set_read_timeout(Some(left))?;
        tcp.set_write_timeout(Some(left))?;
        Ok(())
    }

    /// Sends one text message (ASCII frames).
    pub(crate) fn send(&mut self, text: &[u8], deadline: Instant) -> Result<(), Error> {
        self.arm(deadline)?;
        let text =
            std::str::from_utf8(text).map_err(|_| Error::Protocol("non-utf8 request".into()))?;
        self.ws
            .send(Message::text(text))
            .map_err(|e| ws_error(e, self.budget))
    }

    /// The next text message, before `deadline`. Pings are answered by tungstenite.
    pub(crate) fn recv(&mut self, deadline: Instant) -> Result<Vec<u8>, Error> {
        loop {
            self.arm(deadline)?;
            match self.ws.read() {
                Ok(Message::Text(t)) => return Ok(t.as_bytes().to_vec()),
                Ok(Message::Binary(b)) => return Ok(b.to_vec()),
                Ok(Message::Close(_)) => return Err(Error::Closed),
                Ok(_) => {}
                Err(e) => return Err(ws_error(e, self.budget)),
            }
        }
    }

    /// Closes politely, waiting at most a moment for the server's answer.
    pub(crate) fn close(mut self) {
        let quick = clock::monotonic() + Duration::from_millis(200);
        if self.arm(quick).is_ok() && self.ws.close(None).is_ok() {
            while self.ws.read().is_ok() {}
        }
        let _ = self.ws.get_ref().tcp().shutdown(Shutdown::Both);
    }
}
