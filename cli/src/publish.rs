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
        // The publisher's callbacks only hand a bar to the NATS task: on a dispatcher thread
        // per core, not a thread per seis (1,000 threads waking at every boundary took the
        // cores the NATS task needed; BENCHMARKS.md, issue 21).
        LiveFeed::builder().callback_threads(0),
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

/// `--since`: UTC seconds, `-N[smhd]` before now, or an RFC 3339 time
/// (`2026-12-06T14:30:00Z`, `2026-12-06T15:30:00+01:00`; a fraction of a second is cut).
pub(crate) fn parse_since(s: &str) -> Result<i64, String> {
    let bad = || {
        format!(
            "--since {:?} is not UTC seconds (1700000000), -N[s|m|h|d] (-15m) nor an RFC 3339 \
             time (2026-12-06T14:30:00Z)",
            tvdatafeed::internal::echo(s)
        )
    };
    if s.len() >= 20 && s.as_bytes().get(4) == Some(&b'-') {
        return rfc3339(s).ok_or_else(bad);
    }
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

/// An RFC 3339 date-time (`YYYY-MM-DDTHH:MM:SS[.frac](Z|±HH:MM)`, `T` or a space, `z`
/// accepted) as UTC seconds; `None` for anything else, a field out of range included (a
/// leap second's `:60` is taken as the next second's `:00`).
fn rfc3339(s: &str) -> Option<i64> {
    let b = s.as_bytes();
    let num = |from: usize, len: usize| -> Option<i64> {
        let digits = b.get(from..from + len)?;
        digits.iter().try_fold(0i64, |n, &d| {
            d.is_ascii_digit().then(|| n * 10 + i64::from(d - b'0'))
        })
    };
    let sep = |at: usize, c: &[u8]| b.get(at).is_some_and(|x| c.contains(x));
    if !(sep(4, b"-") && sep(7, b"-") && sep(10, b"Tt ") && sep(13, b":") && sep(16, b":")) {
        return None;
    }
    let (year, month, day) = (num(0, 4)?, num(5, 2)?, num(8, 2)?);
    let (hour, minute, second) = (num(11, 2)?, num(14, 2)?, num(17, 2)?);
    let leap = |y: i64| (y % 4 == 0 && y % 100 != 0) || y % 400 == 0;
    let days_in = match month {
        1 | 3 | 5 | 7 | 8 | 10 | 12 => 31,
        4 | 6 | 9 | 11 => 30,
        2 if leap(year) => 29,
        2 => 28,
        _ => return None,
    };
    if day < 1 || day > days_in || hour > 23 || minute > 59 || second > 60 {
        return None;
    }
    // A fraction of a second: digits after a dot, cut.
    let mut at = 19;
    if sep(at, b".") {
        at += 1;
        let start = at;
        while b.get(at).is_some_and(u8::is_ascii_digit) {
            at += 1;
        }
        if at == start {
            return None;
        }
    }
    let offset = match b.get(at..)? {
        b"Z" | b"z" => 0,
        [sign @ (b'+' | b'-'), ..] if b.len() == at + 6 && sep(at + 3, b":") => {
            let (h, m) = (num(at + 1, 2)?, num(at + 4, 2)?);
            if h > 23 || m > 59 {
                return None;
            }
            let o = h * 3600 + m * 60;
            if *sign == b'+' { o } else { -o }
        }
        _ => return None,
    };
    // Days from 1970-01-01 to the date (Howard Hinnant's `days_from_civil`).
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (month + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    Some(days * 86_400 + hour * 3600 + minute * 60 + second - offset)
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
    // A NATS outage is one stderr line when it starts and one when it ends (stdout goes on
    // with the bars stored meanwhile, in order, once the connection is back).
    let mut down_since: Option<Instant> = None;
    while !stop.load(Ordering::SeqCst) && end.is_none_or(|e| crate::live::now() < e) {
        let link = bars.link();
        match (link.connected, down_since) {
            (false, None) => {
                down_since = Some(crate::live::now());
                let _ = writeln!(
                    io::stderr(),
                    "tvdatafeed: NATS connection lost; reconnecting (the bars stored meanwhile \
                     follow once it is back)"
                );
            }
            (true, Some(t)) => {
                down_since = None;
                let _ = writeln!(
                    io::stderr(),
                    "tvdatafeed: NATS connection back after {}",
                    tvdatafeed::HumanDuration(crate::live::now().saturating_duration_since(t))
                );
            }
            _ => {}
        }
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
    // As `live` from TradingView: ending during an outage is an error, since what was stored
    // meanwhile was not printed.
    if let Some(t) = down_since {
        return Err(io::Error::other(format!(
            "ended during a NATS outage ({} long): the bars stored since were not printed",
            tvdatafeed::HumanDuration(crate::live::now().saturating_duration_since(t))
        )));
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

    #[test]
    fn since_takes_rfc_3339_times() {
        // `date -u -d 2026-12-06T14:30:00Z +%s`
        assert_eq!(parse_since("2026-12-06T14:30:00Z"), Ok(1_796_567_400));
        assert_eq!(parse_since("2026-12-06T15:30:00+01:00"), Ok(1_796_567_400));
        assert_eq!(
            parse_since("2026-12-06t09:00:00.123456-05:30"),
            Ok(1_796_567_400)
        );
        assert_eq!(parse_since("2026-12-06 14:30:00z"), Ok(1_796_567_400));
        assert_eq!(parse_since("1970-01-01T00:00:00Z"), Ok(0));
        assert_eq!(parse_since("2024-02-29T00:00:00Z"), Ok(1_709_164_800));
        assert_eq!(parse_since("2000-03-01T00:00:00Z"), Ok(951_868_800));
        for bad in [
            "2026-12-06T14:30:00",
            "2026-12-06",
            "2026-13-06T14:30:00Z",
            "2026-02-29T00:00:00Z",
            "2026-12-06T24:00:00Z",
            "2026-12-06T14:30:00.Z",
            "2026-12-06T14:30:00+0100",
            "2026-12-06T14:30:00+24:00",
            "2026-12-06T14:3a:00Z",
            "2026-12-06T14:30:00Zjunk",
        ] {
            let e = parse_since(bad).unwrap_err();
            assert!(e.contains("RFC 3339"), "{bad}: {e}");
        }
    }
}
