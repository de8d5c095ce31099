//! The `tv-io` thread: a thin driver around [`Core`]. It owns the `mio::Poll`, the socket and
//! the consumers' producers, blocks only in `Poll::poll` (whose timeout is the core's next
//! deadline; zero in busy-poll mode), and moves bytes, time and commands into the core and
//! deliveries out to the rings.
//!
//! Per turn: poll; drive the connect or the upgrade; drain the command queue; drain the socket
//! (edge-triggered: to `WouldBlock`); fire due timers; carry out the core's connection actions;
//! send what the core queued; fan the deliveries out to each consumer's ring (one registry
//! `load` per turn with deliveries, never a lock); answer the commands whose writes went out.

use std::{
    net::{IpAddr, SocketAddr, ToSocketAddrs},
    sync::PoisonError,
    time::{Duration, Instant},
};

use mio::{Events, Poll, Token};

use super::{Command, Core, IoWait, LiveEvent, Shared, core::Action, fanout, fanout::Fanout};
use crate::{
    Error, TransportError, clock,
    sync::plain::{Arc, Mutex},
    transport::{IoSource, nonblocking::NbSocket, nonblocking::Progress},
};

/// The socket's token.
const SOCKET: Token = Token(0);
/// The waker's token (commands, shutdown, a resolved address).
pub(crate) const WAKER: Token = Token(1);
/// The longest `poll` blocks even with nothing due (the core always has a deadline while it
/// runs; this only bounds a wait in a state that has none).
const MAX_WAIT: Duration = Duration::from_secs(60);
/// Messages read per loop turn before commands, deadlines and writes get their turn. At about
/// 2 µs a message through the whole engine (BENCHMARKS.md, throughput) a full budget is half
/// a millisecond: the most a command or a deadline waits behind a server that never pauses.
const READ_BUDGET: usize = 256;

/// A host name being resolved on a `tv-resolve` thread (the system resolver blocks; `tv-io`
/// must not).
type Resolved = Arc<Mutex<Option<Result<SocketAddr, Error>>>>;

#[allow(
    clippy::large_enum_variant,
    reason = "one value on tv-io's stack; the socket variant is the common one"
)]
enum Link {
    Idle,
    Resolving(Resolved),
    Socket(NbSocket),
}

/// Everything the thread owns.
pub(crate) struct Driver {
    pub(crate) shared: Arc<Shared>,
    pub(crate) core: Core,
    pub(crate) poll: Poll,
    pub(crate) wait: IoWait,
    pub(crate) waker: Arc<mio::Waker>,
    /// Most events one consumer's backlog holds.
    pub(crate) backlog_limit: usize,
    /// The last `tv-resolve` thread and its slot. At most one runs: while a resolution hangs
    /// (a DNS server that does not answer outlives the connect timeout), later attempts wait
    /// on it instead of each starting a thread that would pile up.
    pub(crate) resolver: Option<(Resolved, crate::sync::plain::thread::JoinHandle<()>)>,
}

impl Driver {
    /// Runs until shutdown.
    pub(crate) fn run(mut self) {
        tracing::info!("tv-io started");
        let mut events = Events::with_capacity(64);
        let mut link = Link::Idle;
        let mut fanout = Fanout::new(self.backlog_limit);
        // The last turn stopped reading at its budget: the socket may hold more, and no
        // readiness event will say so (edge-triggered), so this turn must not wait.
        let mut backlog = false;
        // `conn{generation}`: the current connection's span, entered for each turn (a clone
        // costs nothing while it is disabled; enabled, a reference count).
        let mut conn_span = tracing::Span::none();
        loop {
            let now = clock::monotonic();
            let timeout = match self.wait {
                IoWait::BusyPoll => Duration::ZERO,
                IoWait::Block if backlog => Duration::ZERO,
                IoWait::Block => {
                    let core = self
                        .core
                        .poll_timeout()
                        .map_or(MAX_WAIT, |t| t.saturating_duration_since(now).min(MAX_WAIT));
                    // A consumer's backlog waits for room: come back to move it (its reader
                    // gives no signal; a bounded retry, not a spin).
                    if fanout.has_pending() {
                        core.min(fanout::RETRY)
                    } else {
                        core
                    }
                }
            };
            if let Err(e) = self.poll.poll(&mut events, Some(timeout))
                && e.kind() != std::io::ErrorKind::Interrupted
            {
                tracing::error!(error = %e, "poll failed; tv-io stops");
                break;
            }
            let turn_span = conn_span.clone();
            let _in_conn = turn_span.enter();
            let now = clock::monotonic();
            let unix = unix_ms();
            let socket_ready = events.iter().any(|e| e.token() == SOCKET);

            // A name resolved: start the TCP connect.
            if let Link::Resolving(slot) = &link {
                let done = slot.lock().unwrap_or_else(PoisonError::into_inner).take();
                if let Some(result) = done {
                    link = Link::Idle;
                    match result.and_then(|addr| self.connect(addr)) {
                        Ok(sock) => {
                            tracing::debug!("resolved; tcp connect started");
                            link = Link::Socket(sock);
                        }
                        Err(e) => self.connect_failed(now, e),
                    }
                }
            }
            // Connect, TLS and upgrade progress.
            if socket_ready
                && let Link::Socket(sock) = &mut link
                && !sock.is_open()
            {
                match sock.drive() {
                    Ok(Progress::Open) => {
                        self.core.handle_connected(now, unix);
                        self.first_outcome(Ok(()));
                    }
                    Ok(Progress::Pending) => {}
                    Err(e) => {
                        sock.deregister(self.poll.registry());
                        link = Link::Idle;
                        self.connect_failed(now, e.into());
                    }
                }
            }
            // Commands.
            while let Some(cmd) = self.shared.commands.pop() {
                self.command(now, cmd, &mut fanout);
            }
            // Reads, drained up to a budget: a server writing faster than the engine reads
            // must not keep commands, deadlines and writes waiting (a firehose once held a
            // `new_consumer` for minutes and froze `now` for the whole drain).
            backlog = false;
            if let Link::Socket(sock) = &mut link
                && sock.is_open()
            {
                let (core, shared) = (&mut self.core, &self.shared);
                let fanout = &mut fanout;
                let mut n = 0u64;
                let read = sock.read_at_most(READ_BUDGET, |msg| {
                    n += 1;
                    core.handle_message(now, unix, msg);
                    // Each message's events go out before the next message is decoded: the
                    // first update of a burst does not wait for the last one's decoding.
                    deliver(core, shared, fanout);
                });
                self.shared.engine.record_messages(n);
                backlog = matches!(read, Ok(READ_BUDGET));
                if let Err(e) = read {
                    sock.deregister(self.poll.registry());
                    link = Link::Idle;
                    self.core.handle_closed(now, unix, e.into());
                }
            }
            // Deadlines.
            if self.core.poll_timeout().is_some_and(|t| t <= now) {
                self.core.handle_timeout(now, unix);
            }
            // The core's connection actions (each may lead to more).
            while let Some(action) = self.core.poll_action() {
                match action {
                    Action::Connect => {
                        conn_span = tracing::info_span!(
                            parent: None,
                            "conn",
                            generation = self.core.generation()
                        );
                        let _new = conn_span.enter();
                        match self.start_connect() {
                            Ok(l) => link = l,
                            Err(e) => self.connect_failed(now, e),
                        }
                    }
                    Action::Disconnect { cause } => {
                        tracing::debug!(cause = %cause, "closing the connection");
                        let open = matches!(&link, Link::Socket(s) if s.is_open());
                        if let Link::Socket(sock) = &mut link {
                            sock.close(self.poll.registry());
                        }
                        link = Link::Idle;
                        if !open {
                            self.first_outcome(Err(cause.clone()));
                        }
                        self.core.handle_closed(now, unix, cause);
                    }
                }
            }
            // Writes.
            if let Link::Socket(sock) = &mut link
                && sock.is_open()
            {
                let mut failed = None;
                while let Some(msg) = self.core.poll_transmit() {
                    if let Err(e) = sock.send(msg) {
                        failed = Some(e);
                        break;
                    }
                }
                if failed.is_none() && socket_ready {
                    failed = sock.flush().err();
                }
                if let Some(e) = failed {
                    sock.deregister(self.poll.registry());
                    link = Link::Idle;
                    self.core.handle_closed(now, unix, e.into());
                }
            }
            // Deliveries (of timers, commands and connection events; messages' went out as
            // they were read).
            deliver(&mut self.core, &self.shared, &mut fanout);
            if fanout.has_pending() {
                fanout.flush_pending(clock::monotonic());
            }
            // Answers go out after the writes: an unsubscription is answered once its
            // `remove_series` went out, a subscription once the server validated it.
            self.core.complete_acks();
            while let Some(a) = self.core.poll_answer() {
                a.send();
            }
            if self.shared.stopping() {
                break;
            }
        }
        // Shutdown: waiters fail, every consumer learns it, then the producers go (their rings
        // read as abandoned once drained) and the socket closes.
        self.core.shutdown();
        self.core.complete_acks();
        while let Some(a) = self.core.poll_answer() {
            a.send();
        }
        deliver(&mut self.core, &self.shared, &mut fanout);
        let snapshot = self.shared.registry.load();
        for (_, entry) in snapshot.iter() {
            for (_, c) in entry.consumers() {
                fanout.push(
                    c.fanout,
                    c.tag,
                    &LiveEvent::Failed(Error::Shutdown),
                    clock::monotonic(),
                );
            }
        }
        drop(snapshot);
        drop(fanout);
        if let Link::Socket(mut sock) = link {
            sock.close(self.poll.registry());
        }
        tracing::info!("tv-io ended");
    }

    /// A connection attempt failed before the upgrade completed.
    fn connect_failed(&mut self, now: Instant, e: Error) {
        let unix = unix_ms();
        self.first_outcome(Err(e.clone()));
        self.core.handle_connect_failed(now, unix, e);
    }

    /// Answers `build()` with the first attempt's outcome (once).
    fn first_outcome(&self, r: Result<(), Error>) {
        let first = self
            .shared
            .first
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        if let Some(f) = first {
            f.send(r);
        }
    }

    fn command(&mut self, now: Instant, cmd: Command, fanout: &mut Fanout) {
        match cmd {
            Command::Subscribe { seis, reply } => self.core.subscribe(now, seis, reply),
            Command::Unsubscribe { seis, reply } => self.core.unsubscribe(seis.id().get(), reply),
            Command::AddConsumer {
                producer,
                updates,
                counters,
                reply,
            } => reply.send(fanout.add(producer, updates, counters)),
            Command::RemoveConsumer { slot } => fanout.remove(slot),
            Command::AddManyConsumer {
                producer,
                updates,
                counters,
                reply,
            } => reply.send(fanout.add_many(producer, updates, counters)),
            Command::AddSeises { slot, tags, reply } => {
                for tag in tags {
                    fanout.add_seis(slot, tag);
                }
                reply.send(());
            }
            Command::RemoveSeis { slot, tag } => fanout.remove_seis(slot, tag),
            Command::GetHist {
                request,
                timeout,
                reply,
            } => self.core.get_hist(now, *request, timeout, reply),
        }
    }

    fn connect(&self, addr: SocketAddr) -> Result<NbSocket, Error> {
        NbSocket::connect(addr, &self.shared.transport, self.poll.registry(), SOCKET)
            .map_err(Error::from)
    }

    /// Starts a connection attempt: an address connects at once; a host name is resolved on a
    /// `tv-resolve` thread first.
    fn start_connect(&mut self) -> Result<Link, Error> {
        let ep = &self.shared.transport.endpoint;
        let host = ep.host().trim_start_matches('[').trim_end_matches(']');
        if let Ok(ip) = host.parse::<IpAddr>() {
            let sock = self.connect(SocketAddr::new(ip, ep.port()))?;
            tracing::debug!("tcp connect started");
            return Ok(Link::Socket(sock));
        }
        if let Some((slot, handle)) = &self.resolver
            && !handle.is_finished()
        {
            return Ok(Link::Resolving(Arc::clone(slot)));
        }
        let slot: Resolved = Arc::new(Mutex::new(None));
        let (host, port) = (ep.host().to_owned(), ep.port());
        let out = Arc::clone(&slot);
        let waker = Arc::clone(&self.waker);
        let handle = crate::sync::plain::thread::Builder::new()
            .name("tv-resolve".into())
            .spawn(move || {
                tracing::debug!(%host, "resolving");
                let result = (host.as_str(), port)
                    .to_socket_addrs()
                    .map_err(|e| {
                        Error::Transport(TransportError::Resolve {
                            host: host.clone(),
                            source: IoSource::from(e),
                        })
                    })
                    .and_then(|mut a| {
                        a.next().ok_or_else(|| {
                            Error::Transport(TransportError::NoAddress { host: host.clone() })
                        })
                    });
                *out.lock().unwrap_or_else(PoisonError::into_inner) = Some(result);
                let _ = waker.wake();
            })
            .map_err(|e| Error::Spawn {
                thread: "tv-resolve".into(),
                source: IoSource::from(e),
            })?;
        self.resolver = Some((Arc::clone(&slot), handle));
        Ok(Link::Resolving(slot))
    }
}

/// Fans the core's deliveries out to the consumers' rings (one registry `load`, only when
/// there is something to deliver), stamped with the instant of the push.
fn deliver(core: &mut Core, shared: &Shared, fanout: &mut Fanout) {
    let Some(first) = core.poll_delivery() else {
        return;
    };
    let now = clock::monotonic();
    let snapshot = shared.registry.load();
    let mut next = Some(first);
    while let Some((id, event)) = next {
        if let Some(seis) = core.seis(id)
            && let Some(entry) = snapshot.get(seis.key())
        {
            for (_, c) in entry.consumers() {
                fanout.push(c.fanout, c.tag, &event, now);
            }
        }
        next = core.poll_delivery();
    }
}

/// Wall-clock milliseconds since the Unix epoch, as the core wants them.
fn unix_ms() -> i64 {
    i64::try_from(clock::unix_ms()).unwrap_or(i64::MAX)
}
