//! A loopback TCP relay that adds a round trip: every chunk of bytes reaches the other side a
//! fixed one-way delay after it was read, in both directions.

use std::{
    io::{self, Read, Write},
    net::{Ipv4Addr, Ipv6Addr, Shutdown, SocketAddr, TcpListener, TcpStream},
    sync::mpsc,
    time::{Duration, Instant},
};

use super::{Sim, SimError};
use crate::{
    clock,
    sync::plain::{
        Arc, Mutex,
        atomic::{AtomicBool, AtomicU64, Ordering},
        thread,
    },
};

/// The longest any relay thread blocks before re-checking the stop flag.
const MAX_WAIT: Duration = Duration::from_millis(20);
/// How long the relay tries to reach its target for each accepted connection.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
/// A peer that does not take our bytes for this long is dropped.
const WRITE_TIMEOUT: Duration = Duration::from_secs(5);
/// The longest one-way delay a relay adds; longer ones are cut to it.
const MAX_ONE_WAY: Duration = Duration::from_secs(86_400);
/// Chunks in flight per direction before the reader waits for the writer (backpressure).
const IN_FLIGHT: usize = 256;

/// A TCP relay on loopback in front of `target` that delays every chunk of bytes by `one_way`
/// in each direction: a round trip of twice that, with unlimited bandwidth. Put it in front of
/// a [`Sim`] to measure a client over a network's latency. The TCP handshake to the relay
/// itself is not delayed.
///
/// Threads: `tv-relay-accept`, and for connection `N` four threads `tv-relay-N-…` (a reader
/// and a timed writer per direction). Every wait is bounded, so [`Relay::stop`] (or drop) shuts
/// every relayed socket and returns within its timeout. `Relay` is `Send` and `Sync`; its
/// methods take `&self` except [`Relay::stop`].
///
/// # Examples
///
/// ```
/// use std::time::Duration;
/// use tvdatafeed::sim::{Relay, Sim, SimConfig};
///
/// let sim = Sim::start(SimConfig::default())?;
/// let relay = Relay::start(sim.addr(), Duration::from_millis(5))?;
/// let url = relay.url_for(&sim); // connect clients here: 10 ms more per round trip
/// assert!(url.starts_with(&format!("ws://{}/", relay.addr())));
/// relay.stop(Duration::from_secs(2));
/// # Ok::<(), tvdatafeed::sim::SimError>(())
/// ```
#[derive(Debug)]
pub struct Relay {
    addr: SocketAddr,
    target: SocketAddr,
    one_way: Duration,
    shared: Arc<RelayShared>,
    accept: Option<thread::JoinHandle<()>>,
}

#[derive(Debug, Default)]
struct RelayShared {
    stop: AtomicBool,
    connections: AtomicU64,
    /// The relayed connections: their sockets (to shut on stop) and threads (to join).
    live: Mutex<Vec<Relayed>>,
}

#[derive(Debug)]
struct Relayed {
    sockets: [TcpStream; 2],
    threads: Vec<thread::JoinHandle<()>>,
}

// Orderings: `stop` is a flag every relay thread re-reads at least every MAX_WAIT; it
// publishes no other memory, so Relaxed suffices. `connections` is a counter.
impl RelayShared {
    fn stopping(&self) -> bool {
        self.stop.load(Ordering::Relaxed)
    }
}

impl Relay {
    /// Listens on a free loopback port and relays every connection to `target`, delaying each
    /// direction by `one_way` (at most a day; a longer delay is cut to a day).
    ///
    /// # Errors
    ///
    /// [`SimError::NotLoopback`] when `target` is not a loopback address (the relay is a test
    /// tool, never a path off the machine), [`SimError::Bind`] when the relay cannot listen,
    /// [`SimError::Spawn`] when its accept thread cannot be started.
    pub fn start(target: SocketAddr, one_way: Duration) -> Result<Self, SimError> {
        if !target.ip().is_loopback() {
            return Err(SimError::NotLoopback(target));
        }
        let one_way = one_way.min(MAX_ONE_WAY);
        let bind = if target.is_ipv4() {
            SocketAddr::from((Ipv4Addr::LOCALHOST, 0))
        } else {
            SocketAddr::from((Ipv6Addr::LOCALHOST, 0))
        };
        let bind_err = |source| SimError::Bind { addr: bind, source };
        let listener = TcpListener::bind(bind).map_err(bind_err)?;
        let addr = listener.local_addr().map_err(bind_err)?;
        let shared = Arc::new(RelayShared::default());
        let accept = {
            let shared = Arc::clone(&shared);
            thread::Builder::new()
                .name("tv-relay-accept".into())
                .spawn(move || accept_loop(&listener, target, one_way, &shared))
                .map_err(SimError::Spawn)?
        };
        tracing::info!(%addr, %target, ?one_way, "relay listening");
        Ok(Self {
            addr,
            target,
            one_way,
            shared,
            accept: Some(accept),
        })
    }

    /// The address clients connect to.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The address every connection is relayed to.
    pub fn target(&self) -> SocketAddr {
        self.target
    }

    /// The delay added in each direction.
    pub fn one_way(&self) -> Duration {
        self.one_way
    }

    /// `sim`'s websocket URL ([`Sim::url`]) with the relay's address in place of the
    /// simulator's: what a client connects to so that its traffic goes through the relay.
    /// Meaningful when the relay's target is `sim.addr()`. A `wss` simulator's certificate
    /// names `127.0.0.1`, as the relay's address does.
    pub fn url_for(&self, sim: &Sim) -> String {
        sim.url()
            .replacen(&sim.addr().to_string(), &self.addr.to_string(), 1)
    }

    /// Connections relayed so far.
    pub fn connections(&self) -> u64 {
        self.shared.connections.load(Ordering::Relaxed)
    }

    /// Stops accepting, shuts every relayed connection, and waits for the threads at most
    /// `timeout`. Returns whether every thread ended in time.
    pub fn stop(mut self, timeout: Duration) -> bool {
        self.shutdown(timeout)
    }

    fn shutdown(&mut self, timeout: Duration) -> bool {
        let Some(accept) = self.accept.take() else {
            return true;
        };
        let deadline = clock::monotonic() + timeout;
        self.shared.stop.store(true, Ordering::Relaxed);
        // Wake the accept thread blocked in accept().
        let _ = TcpStream::connect_timeout(&self.addr, Duration::from_millis(200));
        // The accept thread first, so that no connection is added after the list is taken.
        let mut all = join_by(accept, deadline);
        let live = std::mem::take(&mut *self.shared.live.lock().unwrap_or_else(|e| e.into_inner()));
        let mut threads = Vec::new();
        for r in live {
            for s in &r.sockets {
                let _ = s.shutdown(Shutdown::Both);
            }
            threads.extend(r.threads);
        }
        for t in threads {
            all &= join_by(t, deadline);
        }
        tracing::info!(addr = %self.addr, all, "relay stopped");
        all
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        self.shutdown(Duration::from_secs(2));
    }
}

/// Joins `t` if it ends by `deadline`; else leaves it detached. Whether it was joined.
fn join_by(t: thread::JoinHandle<()>, deadline: Instant) -> bool {
    while !t.is_finished() {
        let left = deadline.saturating_duration_since(clock::monotonic());
        if left.is_zero() {
            return false;
        }
        thread::park_timeout(left.min(Duration::from_millis(5)));
    }
    t.join().is_ok()
}

fn accept_loop(
    listener: &TcpListener,
    target: SocketAddr,
    one_way: Duration,
    shared: &Arc<RelayShared>,
) {
    for client in listener.incoming() {
        if shared.stopping() {
            break;
        }
        let Ok(client) = client else {
            continue;
        };
        let n = shared.connections.fetch_add(1, Ordering::Relaxed) + 1;
        match relay(n, client, target, one_way, shared) {
            Ok(r) => {
                let mut live = shared.live.lock().unwrap_or_else(|e| e.into_inner());
                live.retain(|r| !r.threads.iter().all(thread::JoinHandle::is_finished));
                live.push(r);
            }
            Err(e) => tracing::debug!(n, error = %e, "relay connection failed"),
        }
    }
    tracing::debug!("tv-relay-accept ended");
}

/// Connects to `target` and starts the four threads relaying connection `n`.
fn relay(
    n: u64,
    client: TcpStream,
    target: SocketAddr,
    one_way: Duration,
    shared: &Arc<RelayShared>,
) -> io::Result<Relayed> {
    let server = TcpStream::connect_timeout(&target, CONNECT_TIMEOUT)?;
    for s in [&client, &server] {
        s.set_nodelay(true)?;
        s.set_read_timeout(Some(MAX_WAIT))?;
        s.set_write_timeout(Some(WRITE_TIMEOUT))?;
    }
    let mut threads = Vec::with_capacity(4);
    for (dir, from, to) in [
        ("up", client.try_clone()?, server.try_clone()?),
        ("dn", server.try_clone()?, client.try_clone()?),
    ] {
        let (tx, rx) = mpsc::sync_channel::<(Instant, Vec<u8>)>(IN_FLIGHT);
        let reader = Arc::clone(shared);
        threads.push(
            thread::Builder::new()
                .name(format!("tv-relay-{n}-{dir}-r"))
                .spawn(move || read_side(from, &tx, one_way, &reader))?,
        );
        let writer = Arc::clone(shared);
        threads.push(
            thread::Builder::new()
                .name(format!("tv-relay-{n}-{dir}-w"))
                .spawn(move || write_side(to, &rx, &writer))?,
        );
    }
    Ok(Relayed {
        sockets: [client, server],
        threads,
    })
}

/// Reads chunks from `from` and hands each to the writer with its due instant, until EOF, an
/// error or a stop.
fn read_side(
    mut from: TcpStream,
    tx: &mpsc::SyncSender<(Instant, Vec<u8>)>,
    one_way: Duration,
    shared: &RelayShared,
) {
    let mut buf = vec![0u8; 64 << 10];
    while !shared.stopping() {
        match from.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => {
                let due = clock::monotonic() + one_way;
                // Blocks while IN_FLIGHT chunks wait; fails once the writer is gone.
                if tx.send((due, buf[..n].to_vec())).is_err() {
                    break;
                }
            }
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock
                        | io::ErrorKind::TimedOut
                        | io::ErrorKind::Interrupted
                ) => {}
            Err(_) => break,
        }
    }
}

/// Writes each chunk to `to` at its due instant; at the end (the reader saw EOF, or a stop),
/// half-closes `to` so the peer sees the end too.
fn write_side(mut to: TcpStream, rx: &mpsc::Receiver<(Instant, Vec<u8>)>, shared: &RelayShared) {
    'chunks: loop {
        let (due, bytes) = match rx.recv_timeout(MAX_WAIT) {
            Ok(chunk) => chunk,
            Err(mpsc::RecvTimeoutError::Timeout) if !shared.stopping() => continue,
            Err(_) => break,
        };
        // The network's latency: wait for the due instant, a bounded wait at a time.
        loop {
            if shared.stopping() {
                break 'chunks;
            }
            let left = due.saturating_duration_since(clock::monotonic());
            if left.is_zero() {
                break;
            }
            thread::park_timeout(left.min(MAX_WAIT));
        }
        if to.write_all(&bytes).is_err() {
            break;
        }
    }
    let _ = to.shutdown(Shutdown::Write);
}
