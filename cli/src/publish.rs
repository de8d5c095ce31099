//! `tvdatafeed publish`: closed bars to NATS JetStream; and `live --nats`: read them back.
//!
//! `publish` checks everything before it subscribes anything: the NATS URL (connected), the
//! stream (created, or its settings checked), then every spec (validated by the server). Each
//! failure is one stderr line and a non-zero exit. It runs until Ctrl-C or `--duration`, then
//! waits (up to 30 s) for every bar it took in to be acknowledged: exit 0 only when all were.
#![allow(
    clippy::disallowed_types,
    reason = "a command-line program sharing a Ctrl-C flag; the loom shim is the library's"
)]

use std::{
    fmt::Write as _,
    io::{self, Write},
    path::PathBuf,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
        mpsc,
    },
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};

use tvdatafeed::LiveFeed;
use tvdatafeed_nats::{
    BarKind, BarStream, NatsConfig, Publisher, PublisherConfig, PublisherStats, StartAt,
    StreamSettings, subject::shard_of,
};

/// How long `publish` waits at the end for the last acknowledgements.
const DRAIN: Duration = Duration::from_secs(30);

/// The parsed command line of `publish`.
pub(crate) struct Args {
    pub(crate) specs: Vec<String>,
    pub(crate) nats: String,
    pub(crate) stream: String,
    pub(crate) shard: Option<(u32, u32)>,
    pub(crate) url: Option<String>,
    pub(crate) token: Option<String>,
    pub(crate) ca_cert: Option<PathBuf>,
    pub(crate) duration: Option<u64>,
    pub(crate) metrics: Option<(std::net::SocketAddr, bool)>,
}

fn invalid(msg: String) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidInput, msg)
}

/// `i/n` with `0 <= i < n`.
pub(crate) fn parse_shard(s: &str) -> Result<(u32, u32), String> {
    let bad = || format!("--shard {s:?} is not i/n with 0 <= i < n (e.g. 0/4)");
    let (i, n) = s.split_once('/').ok_or_else(bad)?;
    let (i, n): (u32, u32) = (
        i.trim().parse().map_err(|_| bad())?,
        n.trim().parse().map_err(|_| bad())?,
    );
    if n == 0 || i >= n {
        return Err(bad());
    }
    Ok((i, n))
}

fn duration_of(secs: Option<u64>) -> io::Result<Option<Duration>> {
    match secs {
        Some(0) => Err(invalid(
            "--duration 0 would end before the first bar: give at least 1 second, or leave it \
             out to run until Ctrl-C"
                .into(),
        )),
        Some(s) => Ok(Some(crate::timeout(s))),
        None => Ok(None),
    }
}

/// Ctrl-C: before `streaming` is set it ends the process at once (exit 130); after, the first
/// sets the returned flag and a second ends the process.
fn ctrl_c() -> (Arc<AtomicBool>, Arc<AtomicBool>) {
    let stop = Arc::new(AtomicBool::new(false));
    let streaming = Arc::new(AtomicBool::new(false));
    let (s, st) = (Arc::clone(&stop), Arc::clone(&streaming));
    let _ = ctrlc::set_handler(move || {
        if !st.load(Ordering::SeqCst) || s.swap(true, Ordering::SeqCst) {
            let _ = writeln!(io::stderr(), "tvdatafeed: interrupted");
            std::process::exit(130);
        }
    });
    (stop, streaming)
}

/// Waits until Ctrl-C or `end`, checking every 100 ms.
fn wait(stop: &AtomicBool, end: Option<Instant>, mut each: impl FnMut()) {
    let (_keep, tick) = mpsc::channel::<()>();
    while !stop.load(Ordering::SeqCst) && end.is_none_or(|e| crate::live::now() < e) {
        let _ = tick.recv_timeout(Duration::from_millis(100));
        each();
    }
}

pub(crate) fn run(args: Args) -> io::Result<()> {
    if args.specs.is_empty() {
        return Err(invalid("give at least one EXCHANGE:TICKER@INTERVAL".into()));
    }
    let mut specs = crate::live::parse_specs(&args.specs)?;
    if let Some((i, n)) = args.shard {
        let all = specs.len();
        specs.retain(|(s, iv)| shard_of(s, *iv, n) == i);
        let _ = writeln!(
            io::stderr(),
            "tvdatafeed: shard {i}/{n}: {} of the {all} seises",
            specs.len()
        );
        if specs.is_empty() {
            return Err(invalid(format!(
                "shard {i}/{n} holds none of the {all} seises given"
            )));
        }
    }
    let end = duration_of(args.duration)?.and_then(|d| crate::live::now().checked_add(d));
    let metrics = args
        .metrics
        .map(|(addr, remote)| crate::metrics::bind(addr, remote))
        .transpose()?;
    let (stop, streaming) = ctrl_c();
    // NATS and the stream first: a wrong URL or a conflicting stream subscribes nothing.
    let publisher = Publisher::start(
        PublisherConfig::new(NatsConfig::new(args.nats))
            .stream(StreamSettings::default().name(args.stream.clone())),
    )
    .map_err(|e| io::Error::other(e.to_string()))?;
    let (builder, host) = crate::live::connection_settings(
        LiveFeed::builder(),
        args.url.as_deref(),
        args.token.as_deref(),
        args.ca_cert.as_deref(),
    )?;
    let feed = Arc::new(
        builder
            .build()
            .map_err(|e| io::Error::other(crate::hist::describe(&e, None, &host)))?,
    );
    let seises = crate::live::subscribe_all(&feed, &specs, &host)?;
    for seis in &seises {
        publisher
            .add(&feed, seis)
            .map_err(|e| io::Error::other(e.to_string()))?;
    }
    let publisher = Arc::new(publisher);
    let _exporter = {
        let (feed, publisher) = (Arc::clone(&feed), Arc::clone(&publisher));
        crate::metrics::Exporter::announced(metrics, move || {
            publish_text(&publisher.stats(), feed.connection().reconnects)
        })?
    };
    let _ = writeln!(
        io::stderr(),
        "tvdatafeed: publishing {} seises to stream {}",
        seises.len(),
        args.stream
    );
    streaming.store(true, Ordering::SeqCst);
    let mut full_seen = 0;
    wait(&stop, end, || {
        let s = publisher.stats();
        if s.buffer_full > full_seen {
            full_seen = s.buffer_full;
            let _ = writeln!(
                io::stderr(),
                "tvdatafeed: publish buffer full ({} waiting): NATS is slow or unreachable",
                s.buffered
            );
        }
    });
    drop(_exporter);
    let publisher = Arc::into_inner(publisher).expect("the exporter is gone");
    let report = publisher.stop(DRAIN);
    drop(seises);
    feed.shutdown(Duration::from_secs(5));
    let s = &report.stats;
    let _ = writeln!(
        io::stderr(),
        "tvdatafeed: {} taken in, {} stored, {} duplicates acknowledged, {} status messages, {} \
         not acknowledged",
        s.taken_in,
        s.published,
        s.duplicates,
        s.status_published,
        s.buffered
    );
    if report.is_complete() {
        Ok(())
    } else {
        Err(io::Error::other(format!(
            "{} messages were not acknowledged within {}",
            s.buffered,
            tvdatafeed::HumanDuration(DRAIN)
        )))
    }
}

/// `publish`'s metrics as Prometheus text.
pub(crate) fn publish_text(s: &PublisherStats, tv_reconnects: u64) -> String {
    let mut out = String::with_capacity(2048);
    let rows: [(&str, &str, &str, u64); 8] = [
        (
            "tvdatafeed_nats_published_total",
            "counter",
            "Bars stored by JetStream.",
            s.published,
        ),
        (
            "tvdatafeed_nats_duplicates_total",
            "counter",
            "Bars acknowledged as duplicates (stored already by the pair's other publisher, or a retry).",
            s.duplicates,
        ),
        (
            "tvdatafeed_nats_status_published_total",
            "counter",
            "Connection events published on the status subjects.",
            s.status_published,
        ),
        (
            "tvdatafeed_nats_buffer_depth",
            "gauge",
            "Messages taken in and not acknowledged yet (buffered or in flight).",
            s.buffered,
        ),
        (
            "tvdatafeed_nats_buffer_full_total",
            "counter",
            "Times the publish buffer was found full.",
            s.buffer_full,
        ),
        (
            "tvdatafeed_nats_publish_errors_total",
            "counter",
            "Publishes that failed and were retried.",
            s.publish_errors,
        ),
        (
            "tvdatafeed_nats_reconnects_total",
            "counter",
            "Times the NATS connection came back.",
            s.nats_reconnects,
        ),
        (
            "tvdatafeed_reconnects_total",
            "counter",
            "TradingView connections lost (and replaced).",
            tv_reconnects,
        ),
    ];
    for (name, kind, help, v) in rows {
        crate::metrics::family(&mut out, name, kind, help);
        let _ = writeln!(out, "{name} {v}");
    }
    let name = "tvdatafeed_nats_close_to_ack_seconds";
    crate::metrics::family(
        &mut out,
        name,
        "summary",
        "Bar close (wall clock) to JetStream's acknowledgement.",
    );
    let (p50, p99, _, count) = s.close_to_ack_us;
    #[allow(clippy::cast_precision_loss, reason = "microseconds as seconds")]
    let secs = |us: u64| us as f64 / 1e6;
    let _ = writeln!(out, "{name}{{quantile=\"0.5\"}} {}", secs(p50));
    let _ = writeln!(out, "{name}{{quantile=\"0.99\"}} {}", secs(p99));
    let _ = writeln!(out, "{name}_count {count}");
    out
}

/// `--since`: UTC seconds, or `-N[smhd]` before now.
pub(crate) fn parse_since(s: &str) -> Result<i64, String> {
    let bad = || format!("--since {s:?} is not UTC seconds (1700000000) nor -N[s|m|h|d] (-15m)");
    if let Some(rel) = s.strip_prefix('-') {
        let (num, unit) = rel.split_at(rel.len().saturating_sub(1));
        let n: i64 = num.parse().map_err(|_| bad())?;
        let mult = match unit {
            "s" => 1,
            "m" => 60,
            "h" => 3600,
            "d" => 86_400,
            _ => return Err(bad()),
        };
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX));
        return n
            .checked_mul(mult)
            .and_then(|d| now.checked_sub(d))
            .ok_or_else(bad);
    }
    s.parse().map_err(|_| bad())
}

/// `live --nats`: the same stdout as `live`, read from JetStream.
pub(crate) fn live(
    specs: &[String],
    nats: String,
    stream: &str,
    since: Option<i64>,
    duration: Option<u64>,
    json: bool,
) -> io::Result<()> {
    if specs.is_empty() {
        return Err(invalid("give at least one EXCHANGE:TICKER@INTERVAL".into()));
    }
    let specs = crate::live::parse_specs(specs)?;
    let end = duration_of(duration)?.and_then(|d| crate::live::now().checked_add(d));
    crate::out::stdout_is_open()?;
    let (stop, streaming) = ctrl_c();
    let start = since.map_or(StartAt::New, StartAt::Since);
    let prefix = StreamSettings::default().prefix;
    let mut bars = BarStream::open(&NatsConfig::new(nats), stream, &prefix, &specs, start)
        .map_err(|e| io::Error::other(e.to_string()))?;
    let mut out = crate::stdout();
    if !json {
        writeln!(out, "symbol,interval,time,open,high,low,close,volume")?;
        out.flush()?;
    }
    streaming.store(true, Ordering::SeqCst);
    while !stop.load(Ordering::SeqCst) && end.is_none_or(|e| crate::live::now() < e) {
        let Some(b) = bars
            .recv_timeout(Duration::from_millis(100))
            .map_err(|e| io::Error::other(e.to_string()))?
        else {
            continue;
        };
        let m = &b.message;
        match m.kind {
            BarKind::Closed => {
                writeln!(
                    out,
                    "{}",
                    crate::live::row(json, &m.symbol, m.interval, &m.bar, None)
                )?;
                out.flush()?;
            }
            BarKind::Revised => {
                let _ = writeln!(
                    io::stderr(),
                    "tvdatafeed: {} {}: bar {} revised: close {}",
                    m.symbol,
                    m.interval,
                    m.bar.time,
                    m.bar.close
                );
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shards_and_since_parse() {
        assert_eq!(parse_shard("0/4"), Ok((0, 4)));
        assert!(parse_shard("4/4").is_err());
        assert!(parse_shard("1/0").is_err());
        assert!(parse_shard("x").is_err());
        assert_eq!(parse_since("1700000000"), Ok(1_700_000_000));
        assert!(parse_since("-15m").unwrap() > 1_700_000_000);
        assert!(parse_since("-15x").is_err());
        assert!(parse_since("yesterday").is_err());
    }
}
