//! The byte streams under tungstenite: plain TCP, or rustls over TCP, generic over the socket
//! (`std::net::TcpStream` for the historical client and the simulator, `mio::net::TcpStream`
//! for the live engine), plus a TCP socket whose every read and write is bounded by one
//! deadline.

use std::{
    io::{self, Read, Write},
    net::TcpStream,
    ops::{Deref, DerefMut},
    time::{Duration, Instant},
};

use rustls::{ConnectionCommon, SideData};

use crate::clock;

/// Plain, or TLS over the socket `S`; `C` is `rustls::ClientConnection` or
/// `rustls::ServerConnection`.
pub(crate) enum MaybeTls<C, S> {
    /// `ws://`, with what is left to look at in the first bytes read.
    Plain(S, Sniff),
    /// `wss://`.
    Tls(Box<TlsStream<C, S>>),
}

impl<C, S> MaybeTls<C, S> {
    /// `ws://` on a server's side (the simulator's): what the peer sends is read as it comes.
    #[cfg(feature = "sim")]
    pub(crate) fn plain(sock: S) -> Self {
        Self::Plain(sock, Sniff::Done)
    }

    /// `ws://` on a client's side: a server that answers with TLS records fails the first
    /// read with [`TlsReply`] instead of handing them to the HTTP parser, which could only
    /// say "not HTTP".
    pub(crate) fn plain_client(sock: S) -> Self {
        Self::Plain(sock, Sniff::First)
    }

    /// The socket under either form.
    pub(crate) fn socket(&self) -> &S {
        match self {
            Self::Plain(s, _) => s,
            Self::Tls(t) => &t.sock,
        }
    }

    /// The socket under either form, mutably.
    pub(crate) fn socket_mut(&mut self) -> &mut S {
        match self {
            Self::Plain(s, _) => s,
            Self::Tls(t) => &mut t.sock,
        }
    }
}

#[cfg(feature = "sim")]
impl<C> MaybeTls<C, TcpStream> {
    /// The TCP socket under either form (for timeouts and shutdown; the simulator's).
    pub(crate) fn tcp(&self) -> &TcpStream {
        self.socket()
    }
}

impl<C, S, D> Read for MaybeTls<C, S>
where
    C: DerefMut + Deref<Target = ConnectionCommon<D>>,
    S: Read + Write,
    D: SideData,
{
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Self::Plain(s, sniff) => read_plain(s, sniff, buf),
            Self::Tls(s) => s.read(buf),
        }
    }
}

impl<C, S, D> Write for MaybeTls<C, S>
where
    C: DerefMut + Deref<Target = ConnectionCommon<D>>,
    S: Read + Write,
    D: SideData,
{
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Self::Plain(s, _) => s.write(buf),
            Self::Tls(s) => s.write(buf),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        match self {
            Self::Plain(s, _) => s.flush(),
            Self::Tls(s) => s.flush(),
        }
    }
}

/// How far a plain client has looked at the first bytes its server sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Sniff {
    /// Nothing read yet.
    First,
    /// The first read gave one byte, a TLS record type; the next byte decides.
    Held(u8),
    /// Looked at (or not to be looked at): reads pass through.
    Done,
}

/// A TLS record begins with its content type (20 change_cipher_spec, 21 alert, 22 handshake,
/// 23 application_data, 24 heartbeat), then the major version 3 (RFC 8446 §5.1). An HTTP
/// answer begins with `HTTP/`.
fn is_tls_record(first: u8, second: u8) -> bool {
    (20..=24).contains(&first) && second == 3
}

/// The server of a `ws://` URL answered with TLS records: it speaks TLS.
#[derive(Debug, Clone, Copy, thiserror::Error)]
#[error("the server answered with tls records")]
pub(crate) struct TlsReply;

/// A plain read that, until the first two bytes are seen, fails with [`TlsReply`] when they
/// are the head of a TLS record. Nothing is lost otherwise: a byte held while the second is
/// awaited (a `WouldBlock` in between keeps it) is handed out in front of what follows.
fn read_plain<S: Read>(sock: &mut S, sniff: &mut Sniff, buf: &mut [u8]) -> io::Result<usize> {
    let tls = || io::Error::new(io::ErrorKind::InvalidData, TlsReply);
    match *sniff {
        Sniff::Done => sock.read(buf),
        _ if buf.len() < 2 => {
            // Too small to look at two bytes: hand out what is held, or pass through.
            if let (Sniff::Held(b), Some(slot)) = (*sniff, buf.first_mut()) {
                *slot = b;
                *sniff = Sniff::Done;
                return Ok(1);
            }
            sock.read(buf)
        }
        Sniff::First => {
            let n = sock.read(buf)?;
            match buf[..n] {
                [] => Ok(0),
                [a] if (20..=24).contains(&a) => {
                    *sniff = Sniff::Held(a);
                    read_plain(sock, sniff, buf)
                }
                [a, b, ..] if is_tls_record(a, b) => Err(tls()),
                _ => {
                    *sniff = Sniff::Done;
                    Ok(n)
                }
            }
        }
        Sniff::Held(a) => {
            let n = sock.read(&mut buf[1..])?;
            if n > 0 && is_tls_record(a, buf[1]) {
                return Err(tls());
            }
            buf[0] = a;
            *sniff = Sniff::Done;
            Ok(n + 1)
        }
    }
}

/// rustls over a socket, correct on blocking and non-blocking sockets alike.
///
/// `rustls::StreamOwned` drives the connection with `complete_io`, which is written for
/// blocking sockets. This adapter does one step at a time instead, and lets the socket's
/// `WouldBlock` (or `TimedOut`) surface unchanged, with nothing lost: what rustls buffered stays
/// buffered for the next call.
///
/// - `read`: return decrypted plaintext if any; else send what rustls queued (handshake
///   messages, alerts; a full socket is not an error here), read TLS records from the socket,
///   process them, and try again. A clean `close_notify` reads as `Ok(0)`; an EOF without it
///   as `UnexpectedEof`; a TLS error as `InvalidData` with the rustls error inside.
/// - `write`: hand the plaintext to rustls (bounded by its buffer limit) and push TLS records
///   out until the socket would block; `WouldBlock` only when rustls took nothing.
/// - `flush`: push every queued TLS record out, or `WouldBlock`.
pub(crate) struct TlsStream<C, S> {
    /// The rustls connection.
    pub(crate) conn: C,
    /// The socket.
    pub(crate) sock: S,
}

impl<C, S, D> TlsStream<C, S>
where
    C: DerefMut + Deref<Target = ConnectionCommon<D>>,
    S: Read + Write,
    D: SideData,
{
    /// Writes queued TLS records until none is left or the socket would block.
    fn write_pending(&mut self) -> io::Result<()> {
        while self.conn.wants_write() {
            if self.conn.write_tls(&mut self.sock)? == 0 {
                break;
            }
        }
        Ok(())
    }
}

impl<C, S, D> Read for TlsStream<C, S>
where
    C: DerefMut + Deref<Target = ConnectionCommon<D>>,
    S: Read + Write,
    D: SideData,
{
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        loop {
            match self.conn.reader().read(buf) {
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                other => return other,
            }
            match self.write_pending() {
                Err(e) if e.kind() != io::ErrorKind::WouldBlock => return Err(e),
                _ => {}
            }
            let n = self.conn.read_tls(&mut self.sock)?;
            if let Err(e) = self.conn.process_new_packets() {
                // Send the alert rustls queued, best effort, then fail.
                let _ = self.write_pending();
                return Err(io::Error::new(io::ErrorKind::InvalidData, e));
            }
            if n == 0 {
                if self.conn.is_handshaking() {
                    return Err(io::Error::new(io::ErrorKind::UnexpectedEof, HandshakeEof));
                }
                // EOF: the reader now says `Ok(0)` (close_notify seen) or `UnexpectedEof`.
                return self.conn.reader().read(buf);
            }
        }
    }
}

/// The peer ended the stream before the TLS handshake completed: most likely not a TLS server
/// (it closed on our ClientHello).
#[derive(Debug, Clone, Copy, thiserror::Error)]
#[error("the stream ended during the tls handshake")]
pub(crate) struct HandshakeEof;

impl<C, S, D> Write for TlsStream<C, S>
where
    C: DerefMut + Deref<Target = ConnectionCommon<D>>,
    S: Read + Write,
    D: SideData,
{
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.conn.writer().write(buf)?;
        match self.write_pending() {
            Err(e) if e.kind() != io::ErrorKind::WouldBlock => return Err(e),
            _ => {}
        }
        if n == 0 && !buf.is_empty() {
            // rustls' buffer is full and the socket takes nothing now.
            return Err(io::ErrorKind::WouldBlock.into());
        }
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.conn.writer().flush()?;
        self.write_pending()?;
        self.sock.flush()
    }
}

/// How much later than its last arming a read or write re-arms the socket's timeout. A
/// syscall that starts `REARM` after the arming may overshoot the deadline by at most that.
const REARM: Duration = Duration::from_millis(5);

/// A blocking TCP socket whose reads and writes all end by one deadline, however the peer
/// trickles: before each syscall the socket's timeout is set to the time left (re-armed at
/// most every [`REARM`]), and once the deadline has passed every call fails with `TimedOut`.
#[derive(Debug)]
pub(crate) struct DeadlineTcp {
    sock: TcpStream,
    /// `None`: no deadline.
    deadline: Option<Instant>,
    /// When the socket's timeouts were last set.
    armed_at: Option<Instant>,
}

impl DeadlineTcp {
    pub(crate) fn new(sock: TcpStream, deadline: Option<Instant>) -> Self {
        Self {
            sock,
            deadline,
            armed_at: None,
        }
    }

    /// The socket.
    pub(crate) fn get(&self) -> &TcpStream {
        &self.sock
    }

    /// Replaces the deadline.
    pub(crate) fn set_deadline(&mut self, deadline: Option<Instant>) {
        self.deadline = deadline;
        self.armed_at = None;
    }

    fn arm(&mut self) -> io::Result<()> {
        let Some(deadline) = self.deadline else {
            if self.armed_at.is_none() {
                self.sock.set_read_timeout(None)?;
                self.sock.set_write_timeout(None)?;
                self.armed_at = Some(clock::monotonic());
            }
            return Ok(());
        };
        let now = clock::monotonic();
        let left = deadline.saturating_duration_since(now);
        if left.is_zero() {
            return Err(io::Error::new(io::ErrorKind::TimedOut, "deadline passed"));
        }
        if self
            .armed_at
            .is_none_or(|at| now.saturating_duration_since(at) >= REARM)
        {
            self.sock.set_read_timeout(Some(left))?;
            self.sock.set_write_timeout(Some(left))?;
            self.armed_at = Some(now);
        }
        Ok(())
    }
}

impl Read for DeadlineTcp {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.arm()?;
        self.sock.read(buf)
    }
}

impl Write for DeadlineTcp {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.arm()?;
        self.sock.write(buf)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.sock.flush()
    }
}
