//! `--metrics ADDR`: Prometheus text (format 0.0.4) over a tiny std-only HTTP server.
//!
//! The server is one named thread (`tv-metrics`) around a blocking [`TcpListener`], serving
//! one request at a time: `GET /metrics` gets the text that the `render` closure returns at
//! that moment; anything else a 404 or 405. Every read and write has a timeout, a request is
//! at most [`MAX_REQUEST`] bytes, and the closure runs before any byte is written, so no lock
//! of the feed is held across I/O. The exporter is command-agnostic (`live` today; a later
//! `publish` shares it): each command brings its own `render`, as [`live_text`] is `live`'s.
#![allow(
    clippy::disallowed_types,
    reason = "the exporter's stop flag; the loom shim is the library's"
)]

use std::{
    fmt::Write as _,
    io::{self, Read, Write},
    net::{Shutdown, SocketAddr, TcpListener, TcpStream},
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    thread::JoinHandle,
    time::Duration,
};

use tvdatafeed::{Latency, Stats};

/// The most bytes of a request read (its request line and headers); a longer one is refused.
const MAX_REQUEST: usize = 8 * 1024;
/// How long one read or write may wait, and (twice it) a whole request may take to arrive: a
/// client trickling bytes holds the one serving thread no longer.
const IO_TIMEOUT: Duration = Duration::from_secs(2);
/// The content type of the Prometheus text exposition format.
const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// Binds `addr`, refusing an address other than loopback unless `allow_remote`: the metrics
/// (symbols, rates) would be served to other hosts.
pub(crate) fn bind(addr: SocketAddr, allow_remote: bool) -> io::Result<TcpListener> {
    if !addr.ip().is_loopback() && !allow_remote {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!(
                "--metrics {addr} is not a loopback address: the metrics would be served to \
                 other hosts; pass --metrics-allow-remote to mean it"
            ),
        ));
    }
    TcpListener::bind(addr).map_err(|e| io::Error::new(e.kind(), format!("--metrics {addr}: {e}")))
}

/// A running exporter; dropping it stops its thread (within [`IO_TIMEOUT`] per request under
/// way).
pub(crate) struct Exporter {
    addr: SocketAddr,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Exporter {
    /// [`Exporter::start`] on `listener` when `--metrics` gave one, saying where on stderr
    /// (the port may have been 0).
    pub(crate) fn announced(
        listener: Option<TcpListener>,
        render: impl Fn() -> String + Send + 'static,
    ) -> io::Result<Option<Self>> {
        let Some(listener) = listener else {
            return Ok(None);
        };
        let e = Self::start(listener, render)?;
        let _ = writeln!(
            io::stderr(),
            "tvdatafeed: metrics at http://{}/metrics",
            e.addr()
        );
        Ok(Some(e))
    }

    /// Serves `GET /metrics` on `listener` with the text `render` returns.
    pub(crate) fn start(
        listener: TcpListener,
        render: impl Fn() -> String + Send + 'static,
    ) -> io::Result<Self> {
        let addr = listener.local_addr()?;
        let stop = Arc::new(AtomicBool::new(false));
        let flag = Arc::clone(&stop);
        let thread = std::thread::Builder::new()
            .name("tv-metrics".into())
            .spawn(move || {
                for conn in listener.incoming() {
                    // Acquire: pairs with `Drop`'s Release (nothing else is published).
                    if flag.load(Ordering::Acquire) {
                        break;
                    }
                    match conn {
                        Ok(s) => {
                            if let Err(e) = answer(s, &render) {
                                tracing::debug!(error = %e, "metrics request failed");
                            }
                        }
                        // A connection reset before accept, or out of descriptors: the next.
                        Err(e) => tracing::debug!(error = %e, "metrics accept failed"),
                    }
                }
            })?;
        tracing::info!(%addr, "metrics served at /metrics");
        Ok(Self {
            addr,
            stop,
            thread: Some(thread),
        })
    }

    /// Where it listens.
    pub(crate) fn addr(&self) -> SocketAddr {
        self.addr
    }
}

impl Drop for Exporter {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Release);
        // Wakes the blocking `accept` with a connection of our own (an unspecified bind
        // address is reached through loopback).
        let mut to = self.addr;
        if to.ip().is_unspecified() {
            to.set_ip(match to {
                SocketAddr::V4(_) => [127, 0, 0, 1].into(),
                SocketAddr::V6(_) => std::net::Ipv6Addr::LOCALHOST.into(),
            });
        }
        let woke = TcpStream::connect_timeout(&to, IO_TIMEOUT).is_ok();
        if let Some(t) = self.thread.take()
            && woke
        {
            let _ = t.join();
        }
    }
}

/// Reads one request (bounded, with a timeout) and answers it.
fn answer(mut s: TcpStream, render: &impl Fn() -> String) -> io::Result<()> {
    s.set_read_timeout(Some(IO_TIMEOUT))?;
    s.set_write_timeout(Some(IO_TIMEOUT))?;
    #[expect(clippy::disallowed_methods, reason = "the exporter's own deadline")]
    let start = std::time::Instant::now();
    let mut buf = [0u8; MAX_REQUEST];
    let mut len = 0;
    let head_end = loop {
        if let Some(i) = buf[..len].windows(4).position(|w| w == b"\r\n\r\n") {
            break Some(i);
        }
        if len == buf.len() {
            break None;
        }
        if start.elapsed() > 2 * IO_TIMEOUT {
            return Err(io::Error::new(
                io::ErrorKind::TimedOut,
                "the request took too long to arrive",
            ));
        }
        let n = s.read(&mut buf[len..])?;
        if n == 0 {
            return Ok(()); // closed before a whole request (e.g. the exporter's own wake-up)
        }
        len += n;
    };
    let (status, body) = match head_end {
        None => ("431 Request Header Fields Too Large", String::new()),
        Some(end) => {
            let head = String::from_utf8_lossy(&buf[..end]);
            let mut words = head.lines().next().unwrap_or("").split_whitespace();
            match (words.next(), words.next()) {
                (Some("GET"), Some("/metrics")) => ("200 OK", render()),
                (Some("GET"), _) => ("404 Not Found", "try /metrics\n".to_owned()),
                _ => ("405 Method Not Allowed", String::new()),
            }
        }
    };
    write!(
        s,
        "HTTP/1.1 {status}\r\nContent-Type: {CONTENT_TYPE}\r\nContent-Length: {}\r\n\
         Connection: close\r\n\r\n{body}",
        body.len()
    )?;
    s.flush()?;
    let _ = s.shutdown(Shutdown::Both);
    Ok(())
}

/// A label value, escaped as the text format wants (backslash, quote, newline).
fn label(v: &str) -> String {
    v.replace('\\', r"\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

/// One metric family's `# HELP` and `# TYPE` lines.
pub(crate) fn family(out: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(out, "# HELP {name} {help}");
    let _ = writeln!(out, "# TYPE {name} {kind}");
}

/// A latency summary: the quantiles the built-in histogram keeps (the maximum as quantile 1)
/// and its count. The histograms keep no sum, so there is no `_sum`.
fn latency(out: &mut String, name: &str, labels: &str, l: &Latency) {
    for (q, d) in [
        ("0.5", l.p50),
        ("0.99", l.p99),
        ("0.999", l.p999),
        ("1", l.max),
    ] {
        let _ = writeln!(
            out,
            "{name}{{{labels},quantile=\"{q}\"}} {}",
            d.as_secs_f64()
        );
    }
    let _ = writeln!(out, "{name}_count{{{labels}}} {}", l.count);
}

/// `live`'s metrics: [`Stats`] as Prometheus text.
pub(crate) fn live_text(s: &Stats) -> String {
    let mut out = String::with_capacity(1024 + 512 * (s.seises.len() + 2 * s.consumers.len()));
    let engine: [(&str, &str, &str, u64); 8] = [
        (
            "tvdatafeed_connected",
            "gauge",
            "Whether the connection to the server is up (1) or not (0).",
            u64::from(s.connected),
        ),
        (
            "tvdatafeed_reconnects_total",
            "counter",
            "Connections lost (and replaced) since the start.",
            s.reconnects,
        ),
        (
            "tvdatafeed_messages_total",
            "counter",
            "Websocket messages received from the server.",
            s.messages,
        ),
        (
            "tvdatafeed_bad_messages_total",
            "counter",
            "Messages the engine could not take (bad frames or JSON).",
            s.bad_messages,
        ),
        (
            "tvdatafeed_fetches_in_flight",
            "gauge",
            "Close confirmations and gap fills in flight on the connection.",
            s.fetches_in_flight,
        ),
        (
            "tvdatafeed_fetches_total",
            "counter",
            "Close confirmations and gap fills asked (one request each on the server).",
            s.fetches,
        ),
        (
            "tvdatafeed_close_races_total",
            "counter",
            "Bar closes that raced the stream with a fetch at the close grace's floor.",
            s.races,
        ),
        (
            "tvdatafeed_close_races_refused_total",
            "counter",
            "Bar closes that would have raced but found the race budget empty.",
            s.races_refused,
        ),
    ];
    for (name, kind, help, v) in engine {
        family(&mut out, name, kind, help);
        let _ = writeln!(out, "{name} {v}");
    }
    let seis = |sym: &tvdatafeed::Symbol, i: tvdatafeed::Interval| {
        format!(
            "symbol=\"{}\",interval=\"{}\"",
            label(sym.as_str()),
            label(&i.to_string())
        )
    };
    type SeisField = fn(&tvdatafeed::SeisStats) -> u64;
    let per_seis: [(&str, &str, SeisField); 3] = [
        (
            "tvdatafeed_seis_closed_total",
            "Closed bars delivered, per seis.",
            |x| x.closed,
        ),
        (
            "tvdatafeed_seis_revised_total",
            "Revisions of delivered bars, per seis.",
            |x| x.revised,
        ),
        (
            "tvdatafeed_seis_updates_total",
            "Updates of the forming bar received, per seis.",
            |x| x.updates,
        ),
    ];
    for (name, help, f) in per_seis {
        family(&mut out, name, "counter", help);
        for x in &s.seises {
            let _ = writeln!(out, "{name}{{{}}} {}", seis(&x.symbol, x.interval), f(x));
        }
    }
    let consumer = |c: &tvdatafeed::ConsumerStats| {
        format!(
            "consumer=\"{}\",{}",
            c.id.get(),
            seis(&c.symbol, c.interval)
        )
    };
    type ConsumerField = fn(&tvdatafeed::ConsumerStats) -> u64;
    let per_consumer: [(&str, &str, &str, ConsumerField); 5] = [
        (
            "tvdatafeed_consumer_pushed_total",
            "counter",
            "Events pushed into the consumer's ring.",
            |c| c.pushed,
        ),
        (
            "tvdatafeed_consumer_delivered_total",
            "counter",
            "Events the consumer took (callbacks run).",
            |c| c.delivered,
        ),
        (
            "tvdatafeed_consumer_lagged_total",
            "counter",
            "Events dropped because the consumer fell behind (coalesced updates first).",
            |c| c.lagged,
        ),
        (
            "tvdatafeed_consumer_lost_closed_total",
            "counter",
            "Closed bars dropped for good because the consumer's backlog overflowed.",
            |c| c.lost_closed,
        ),
        (
            "tvdatafeed_consumer_panicked",
            "gauge",
            "Whether the consumer's callback panicked (which ended it).",
            |c| u64::from(c.panicked),
        ),
    ];
    for (name, kind, help, f) in per_consumer {
        family(&mut out, name, kind, help);
        for c in &s.consumers {
            let _ = writeln!(out, "{name}{{{}}} {}", consumer(c), f(c));
        }
    }
    type LatencyField = fn(&tvdatafeed::ConsumerStats) -> &Latency;
    let latencies: [(&str, &str, LatencyField); 2] = [
        (
            "tvdatafeed_consumer_push_to_callback_seconds",
            "Ring push to callback start (quantile 1 is the maximum; no _sum is kept).",
            |c| &c.push_to_callback,
        ),
        (
            "tvdatafeed_consumer_close_to_callback_seconds",
            "A closed bar's close time (wall clock) to its callback (quantile 1 is the \
             maximum; no _sum is kept).",
            |c| &c.close_to_callback,
        ),
    ];
    for (name, help, f) in latencies {
        family(&mut out, name, "summary", help);
        for c in &s.consumers {
            latency(&mut out, name, &consumer(c), f(c));
        }
    }
    out
}
