//! The `tvdatafeed` command line.
//!
//! - `tvdatafeed sim --bind 127.0.0.1:PORT [--tls [--cert-out FILE]] [--allow-remote]` runs
//!   the TradingView-protocol simulator, prints its URL and serves until stopped. A
//!   non-loopback `--bind` needs `--allow-remote`.
//! - `tvdatafeed decode [FILE]` reads TradingView websocket messages, one per line (a capture
//!   log, or `-`/nothing for standard input), and prints each frame as a typed message.
//!
//! - `tvdatafeed hist EXCHANGE:TICKER INTERVAL [--bars N] [--url URL] [--token T]
//!   [--format csv|json] [--include-forming] [--extended] [--out FILE|-] [--timeout-secs S]`
//!   downloads closed bars. CSV has the header `time,open,high,low,close,volume` (`time`: the
//!   bar's open, integer UTC seconds; `volume` empty when the symbol has none), plus a
//!   `forming` column (`true` on the forming bar) with `--include-forming`; JSON is one object
//!   per line, the forming bar with `"forming":true`. Rows ascend by time. Fewer bars than
//!   asked is said on stderr (exit 0). On error: one line on stderr, a non-zero exit, nothing
//!   on stdout.
//! - `tvdatafeed search TEXT [--exchange E] [--format csv|json] [--timeout-secs S]` searches
//!   symbols.
//! - `tvdatafeed live EXCHANGE:TICKER@INTERVAL... [--url URL] [--token T] [--duration SECS]
//!   [--format csv|json] [--updates]` streams closed bars, one line each, flushed per line
//!   (`hist`'s fields plus `symbol` and `interval`); reconnects and lags are said on stderr.
//!   Every symbol is validated first: an unknown one is one line on stderr, a non-zero exit,
//!   nothing on stdout.
//!
//! - `tvdatafeed publish EXCHANGE:TICKER@INTERVAL... --nats URL [--stream NAME] [--shard i/n]
//!   [--duration SECS] [--metrics ADDR]` publishes closed bars to NATS JetStream (crate
//!   `tvdatafeed-nats`); `live ... --nats URL [--since TIME]` reads them back with `live`'s
//!   output. NATS, the stream and every spec are checked before anything is subscribed; the
//!   exit is 0 only when every bar taken in was acknowledged.
//!
//! - `tvdatafeed demo [--seises N] [--duration SECS]` starts the embedded simulator, streams
//!   N seises (default 8, at most 1,000) of 1-second bars on one connection, shows the closed
//!   bars (a table redrawn in place on a terminal, plain lines otherwise), and ends with the
//!   latency summary and the check of every closed bar against the simulator's ground truth
//!   (a mismatch is a non-zero exit).
//!
//! A closed standard output is an error (exit 1), as is any failed write.
//!
//! Logs: `--log LEVEL` (or `RUST_LOG`; a filter such as `debug` or `tvdatafeed=trace`) sends
//! the engine's logs to stderr, `--log-format json` as one JSON object a line. Off by default.
//! `live --metrics ADDR` serves Prometheus text at `/metrics` (loopback unless
//! `--metrics-allow-remote`).

use std::{
    fs::File,
    io::{self, BufRead, BufReader, Write},
    path::PathBuf,
    process::ExitCode,
    time::Duration,
};

mod demo;
mod hist;
mod live;
mod logs;
mod metrics;
mod out;
mod publish;

use clap::{Parser, Subcommand};
use tvdatafeed::{
    protocol::{
        MessageParser, ServerMessage,
        frame::{Frame, FrameDecoder},
    },
    sim::{Relay, Sim, SimConfig},
};

#[derive(Parser, Debug)]
#[command(
    name = "tvdatafeed",
    version,
    about = "TradingView market data from the command line"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
    /// Send the engine's logs to stderr at this level or filter (`info`, `debug`,
    /// `tvdatafeed=trace`, ...; overrides RUST_LOG). Off by default.
    #[arg(long, global = true, value_name = "LEVEL")]
    log: Option<String>,
    /// How log lines are written: text, or one JSON object a line.
    #[arg(long, global = true, value_enum, default_value_t = logs::LogFormat::Text)]
    log_format: logs::LogFormat,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
enum Format {
    Csv,
    Json,
}

/// The longest timeout the command line passes on: larger values (up to `u64::MAX` seconds)
/// mean "no practical deadline" and are capped here, where deadline arithmetic cannot overflow.
const MAX_TIMEOUT_SECS: u64 = 365 * 24 * 3600;

/// The largest heartbeat period the simulator accepts, in seconds: a year.
const MAX_HEARTBEAT_SECS: u64 = 365 * 24 * 3600;

#[derive(Subcommand, Debug)]
enum Command {
    /// Start the embedded simulator and stream live bars from it: closed bars as they come,
    /// then the latency summary and the ground-truth check. No network needed.
    Demo {
        /// How many seises (symbol × 1-second bars) to stream on the one connection, 1 to 1000.
        #[arg(long, default_value_t = 8,
              value_parser = clap::value_parser!(u32).range(1..=i64::from(demo::MAX_SEISES)))]
        seises: u32,
        /// Stop after this many seconds (or at Ctrl-C).
        #[arg(long, default_value_t = 20,
              value_parser = clap::value_parser!(u64).range(1..=MAX_TIMEOUT_SECS))]
        duration: u64,
        /// The simulator's live update period per seis, in milliseconds.
        #[arg(long, default_value_t = 100,
              value_parser = clap::value_parser!(u64).range(1..=60_000))]
        update_ms: u64,
    },
    /// Search symbols by text.
    Search {
        /// What to look for (ticker or name).
        text: String,
        /// Only this exchange.
        #[arg(long)]
        exchange: Option<String>,
        /// Output format.
        #[arg(long, value_enum, default_value_t = Format::Csv)]
        format: Format,
        /// Search endpoint (default: TradingView's v3 symbol search; an empty value means the
        /// default).
        #[arg(long, env = "TVDATAFEED_SEARCH_URL")]
        url: Option<String>,
        /// Deadline of the whole search, in seconds (values above a year mean a year).
        #[arg(long, default_value_t = 20)]
        timeout_secs: u64,
    },
    /// Download historical bars of one or more symbols (all over one connection).
    Hist {
        /// One or more EXCHANGE:TICKER, then the interval (1S 1 5 15 60 1H 4H 1D 1W 1M ...):
        /// `hist BINANCE:BTCUSDT BINANCE:ETHUSDT 1H`. With --symbols-file, only the interval
        /// is required.
        #[arg(required = true, value_name = "SYMBOL... INTERVAL")]
        args: Vec<String>,
        /// Also download every symbol of this file: one EXCHANGE:TICKER a line (blank lines
        /// and lines starting with `#` are skipped; `-` reads standard input).
        #[arg(long)]
        symbols_file: Option<PathBuf>,
        /// Number of closed bars wanted.
        #[arg(long, default_value_t = 100)]
        bars: u32,
        /// Websocket endpoint (default: TradingView's data host; an empty value means the
        /// default).
        #[arg(long, env = "TVDATAFEED_URL")]
        url: Option<String>,
        /// Auth token (default: TV_AUTH_TOKEN, else anonymous).
        #[arg(long, env = "TV_AUTH_TOKEN", hide_env_values = true)]
        token: Option<String>,
        /// Output format.
        #[arg(long, value_enum, default_value_t = Format::Csv)]
        format: Format,
        /// Also print the bar still forming, last, marked: CSV gets a 7th column `forming`
        /// (`false` on closed bars, `true` on the forming one); JSON puts `"forming":true` on
        /// the forming bar only.
        #[arg(long)]
        include_forming: bool,
        /// Include extended-hours bars.
        #[arg(long)]
        extended: bool,
        /// Write to this file instead of standard output (`-`: standard output). A regular file
        /// is replaced atomically; a symlink is followed; a device or FIFO is written in place.
        #[arg(long)]
        out: Option<PathBuf>,
        /// Trust this PEM root certificate too (e.g. the simulator's, from `sim --cert-out`).
        #[arg(long)]
        ca_cert: Option<PathBuf>,
        /// Deadline of each symbol's download, in seconds (values above a year mean a year).
        #[arg(long, default_value_t = 60)]
        timeout_secs: u64,
    },
    /// Stream closed bars of one or more EXCHANGE:TICKER@INTERVAL, one line each, until
    /// --duration passes or Ctrl-C.
    Live {
        /// What to stream: EXCHANGE:TICKER@INTERVAL (e.g. BINANCE:BTCUSDT@1S), one or more.
        #[arg(required = true)]
        specs: Vec<String>,
        /// Websocket endpoint (default: TradingView's data host; an empty value means the
        /// default).
        #[arg(long, env = "TVDATAFEED_URL")]
        url: Option<String>,
        /// Auth token (default: TV_AUTH_TOKEN, else anonymous).
        #[arg(long, env = "TV_AUTH_TOKEN", hide_env_values = true)]
        token: Option<String>,
        /// Stop after this many seconds, at least 1 (default: run until Ctrl-C).
        #[arg(long)]
        duration: Option<u64>,
        /// Output format: CSV (a header, then `symbol,interval,time,open,high,low,close,volume`)
        /// or JSON (one object per line).
        #[arg(long, value_enum, default_value_t = Format::Csv)]
        format: Format,
        /// Also print the forming bar's updates, marked (CSV: a `forming` column; JSON:
        /// `"forming":true`).
        #[arg(long)]
        updates: bool,
        /// Trust this PEM root certificate too (e.g. the simulator's, from `sim --cert-out`).
        #[arg(long)]
        ca_cert: Option<PathBuf>,
        /// Seconds without any message (heartbeats included) after which the connection
        /// counts as stalled and is replaced (TradingView beats every 10 s: under 20 is
        /// warned about). At least 1.
        #[arg(long, default_value_t = 30, value_parser = clap::value_parser!(u64).range(1..=86_400))]
        stall_secs: u64,
        /// Give up when the connection stays down this many seconds: exit non-zero naming
        /// the last error (default: reconnect for ever, one stderr line per failed attempt).
        #[arg(long, value_parser = clap::value_parser!(u64).range(1..=31_536_000))]
        max_outage_secs: Option<u64>,
        /// The longest wait between two reconnect attempts, in milliseconds: attempt n waits a
        /// random time up to min(this, 250 ms x 2^n). Lower it to come back sooner after an
        /// outage, at the cost of more attempts against a server that is down.
        #[arg(long, value_name = "MS", default_value_t = 30_000,
              value_parser = clap::value_parser!(u64).range(1..=3_600_000))]
        reconnect_max_ms: u64,
        /// At most this many bar closes a minute race the stream: a fetch at the close time
        /// where one is answered sooner than the stream usually closes the bar (one request
        /// each). 0 turns racing off (each bar is closed by its stream, or fetched after its
        /// learned grace).
        #[arg(long, value_name = "N", default_value_t = 120,
              value_parser = clap::value_parser!(u32).range(0..=1_000_000))]
        close_race_per_minute: u32,
        /// The least time after a bar's close before a fetch may confirm it, in milliseconds
        /// (a quiet market's grace, and when a race goes out).
        #[arg(long, value_name = "MS", default_value_t = 0,
              value_parser = clap::value_parser!(u64).range(0..=60_000))]
        close_grace_ms: u64,
        /// Serve Prometheus metrics at http://ADDR/metrics (loopback unless
        /// --metrics-allow-remote; port 0 picks one, said on stderr).
        #[arg(long, value_name = "ADDR")]
        metrics: Option<std::net::SocketAddr>,
        /// Allow a --metrics address other than loopback: the metrics are then served to
        /// other hosts.
        #[arg(long, requires = "metrics")]
        metrics_allow_remote: bool,
        /// Read the bars from this NATS JetStream (what `publish` stored) instead of
        /// TradingView, with the same output. Credentials in the URL are never printed.
        #[arg(long, value_name = "URL", env = "TVDATAFEED_NATS_URL", hide_env_values = true,
              conflicts_with_all = ["updates", "metrics", "max_outage_secs"])]
        nats: Option<String>,
        /// With --nats: the stream's name.
        #[arg(long, default_value = "TVDATAFEED", requires = "nats")]
        stream: String,
        /// With --nats: start at bars opening at or after this time (UTC seconds,
        /// -N[s|m|h|d] before now, or RFC 3339 such as 2026-12-06T14:30:00Z) instead of the
        /// next bar to close.
        #[arg(long, value_name = "TIME", requires = "nats", allow_hyphen_values = true,
              value_parser = publish::parse_since)]
        since: Option<i64>,
    },
    /// Publish closed bars of EXCHANGE:TICKER@INTERVAL specs to NATS JetStream until
    /// --duration passes or Ctrl-C; exit 0 only when every bar taken in was acknowledged.
    Publish {
        /// What to publish: EXCHANGE:TICKER@INTERVAL, one or more.
        #[arg(required = true)]
        specs: Vec<String>,
        /// The NATS server(s): nats://HOST:PORT, comma-separated for several; credentials in
        /// the URL are never printed.
        #[arg(
            long,
            value_name = "URL",
            env = "TVDATAFEED_NATS_URL",
            hide_env_values = true
        )]
        nats: String,
        /// The JetStream stream, created (file storage, a 2-minute duplicate window, 7 days)
        /// or checked.
        #[arg(long, default_value = "TVDATAFEED")]
        stream: String,
        /// Publish only shard i of n (0 <= i < n) of the specs, split by a stable hash.
        #[arg(long, value_name = "i/n", value_parser = publish::parse_shard)]
        shard: Option<(u32, u32)>,
        /// Websocket endpoint (default: TradingView's data host).
        #[arg(long, env = "TVDATAFEED_URL")]
        url: Option<String>,
        /// Auth token (default: TV_AUTH_TOKEN, else anonymous).
        #[arg(long, env = "TV_AUTH_TOKEN", hide_env_values = true)]
        token: Option<String>,
        /// Trust this PEM root certificate too.
        #[arg(long)]
        ca_cert: Option<PathBuf>,
        /// Stop after this many seconds, at least 1 (default: run until Ctrl-C).
        #[arg(long)]
        duration: Option<u64>,
        /// Serve Prometheus metrics at http://ADDR/metrics (loopback unless
        /// --metrics-allow-remote).
        #[arg(long, value_name = "ADDR")]
        metrics: Option<std::net::SocketAddr>,
        /// Allow a --metrics address other than loopback.
        #[arg(long, requires = "metrics")]
        metrics_allow_remote: bool,
    },
    /// Run the TradingView-protocol simulator on loopback until stopped (Ctrl-C).
    Sim {
        /// Address to listen on (loopback unless --allow-remote).
        #[arg(long, default_value = "127.0.0.1:0")]
        bind: std::net::SocketAddr,
        /// Allow a --bind address other than loopback: the simulator then serves other hosts.
        #[arg(long)]
        allow_remote: bool,
        /// Serve wss:// with a self-signed certificate (its PEM goes to --cert-out or stderr).
        #[arg(long)]
        tls: bool,
        /// Write the TLS root certificate (PEM) here (needs --tls).
        #[arg(long, requires = "tls")]
        cert_out: Option<PathBuf>,
        /// Market seed: the same seed gives the same bars.
        #[arg(long, default_value_t = 1)]
        seed: u64,
        /// Live update period per series, in milliseconds.
        #[arg(long, default_value_t = 250)]
        update_ms: u64,
        /// Heartbeat period in seconds, 1 to 31536000 (a year); the echo timeout is twice it.
        #[arg(long, default_value_t = 10,
              value_parser = clap::value_parser!(u64).range(1..=MAX_HEARTBEAT_SECS))]
        heartbeat_secs: u64,
        /// Accept any Origin header (by default only https://*.tradingview.com).
        #[arg(long)]
        any_origin: bool,
        /// Serve each connection's requests one at a time, each taking this many milliseconds
        /// (a busy server); 0 answers at once. The live stream keeps flowing meanwhile.
        #[arg(long, default_value_t = 0)]
        service_ms: u64,
        /// Send the first trade of every bar (what closes the previous bar for a client) this
        /// many milliseconds after the bar boundary instead of at it.
        #[arg(long, default_value_t = 0)]
        tick_phase_ms: u64,
        /// Add to --tick-phase-ms a delay in 0..=this many milliseconds, fixed per bar by the
        /// seed.
        #[arg(long, default_value_t = 0)]
        tick_jitter_ms: u64,
        /// A thin symbol (EXCHANGE:TICKER; repeatable): as on TradingView, an interval without
        /// trades has no bar, in history or in the stream.
        #[arg(long = "thin", value_name = "SYMBOL")]
        thin: Vec<tvdatafeed::Symbol>,
        /// For --thin symbols: about one bar in N has trades (0 and 1: every bar).
        #[arg(long, default_value_t = 4, value_name = "N")]
        thin_one_in: u64,
        /// Put a loopback relay in front of the simulator that delays each direction by this
        /// many milliseconds (0 to 60000; 0: no relay), and print the relay's URL instead.
        #[arg(long, default_value_t = 0,
              value_parser = clap::value_parser!(u64).range(0..=60_000))]
        relay_ms: u64,
    },
    /// Decode TradingView websocket messages (one per line) into typed messages.
    Decode {
        /// A file of messages, one per line; standard input when absent or `-`.
        file: Option<PathBuf>,
        /// Largest frame accepted, in bytes.
        #[arg(long, default_value_t = tvdatafeed::protocol::frame::DEFAULT_MAX_FRAME_LEN)]
        max_frame_len: usize,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    if let Err(e) = logs::install(cli.log.as_deref(), cli.log_format) {
        let _ = writeln!(io::stderr(), "tvdatafeed: {e}");
        return ExitCode::FAILURE;
    }
    let result = match cli.command {
        Command::Demo {
            seises,
            duration,
            update_ms,
        } => demo::run(demo::Args {
            seises,
            duration: Duration::from_secs(duration),
            update_ms,
        }),
        Command::Search {
            text,
            exchange,
            format,
            url,
            timeout_secs,
        } => hist::search(
            &text,
            exchange.as_deref(),
            format == Format::Json,
            url,
            timeout(timeout_secs),
        ),
        Command::Hist {
            args,
            symbols_file,
            bars,
            url,
            token,
            format,
            include_forming,
            extended,
            out,
            ca_cert,
            timeout_secs,
        } => hist::run(hist::Args {
            args,
            symbols_file,
            bars,
            url,
            token,
            json: format == Format::Json,
            include_forming,
            extended,
            out,
            ca_cert,
            timeout: timeout(timeout_secs),
        }),
        Command::Decode {
            file,
            max_frame_len,
        } => decode(file, max_frame_len),
        Command::Live {
            specs,
            duration,
            format,
            nats: Some(nats),
            stream,
            since,
            ..
        } => publish::live(
            &specs,
            nats,
            &stream,
            since,
            duration,
            format == Format::Json,
        ),
        Command::Publish {
            specs,
            nats,
            stream,
            shard,
            url,
            token,
            ca_cert,
            duration,
            metrics,
            metrics_allow_remote,
        } => publish::run(publish::Args {
            specs,
            nats,
            stream,
            shard,
            url,
            token,
            ca_cert,
            duration,
            metrics: metrics.map(|a| (a, metrics_allow_remote)),
        }),
        Command::Live {
            specs,
            url,
            token,
            duration,
            format,
            updates,
            ca_cert,
            stall_secs,
            max_outage_secs,
            reconnect_max_ms,
            close_race_per_minute,
            close_grace_ms,
            metrics,
            metrics_allow_remote,
            nats: None,
            ..
        } => live::run(live::Args {
            specs,
            url,
            token,
            duration,
            json: format == Format::Json,
            updates,
            ca_cert,
            stall: Duration::from_secs(stall_secs),
            max_outage: max_outage_secs.map(Duration::from_secs),
            reconnect_cap: Duration::from_millis(reconnect_max_ms),
            race_per_minute: close_race_per_minute,
            close_grace: Duration::from_millis(close_grace_ms),
            metrics: metrics.map(|a| (a, metrics_allow_remote)),
        }),
        Command::Sim {
            bind,
            allow_remote,
            tls,
            cert_out,
            seed,
            update_ms,
            heartbeat_secs,
            any_origin,
            service_ms,
            tick_phase_ms,
            tick_jitter_ms,
            thin,
            thin_one_in,
            relay_ms,
        } => {
            // 1..=MAX_HEARTBEAT_SECS (the parser's range), so doubling it cannot overflow.
            let cfg = SimConfig::default()
                .with_bind(bind)
                .with_tls(tls)
                .with_seed(seed)
                .with_update_interval(Duration::from_millis(update_ms.max(1)))
                .with_heartbeat_interval(Duration::from_secs(heartbeat_secs))
                .with_heartbeat_timeout(Duration::from_secs(heartbeat_secs * 2))
                .with_require_origin(!any_origin)
                .with_request_service_time(Duration::from_millis(service_ms))
                .with_tick_phase(Duration::from_millis(tick_phase_ms))
                .with_tick_phase_jitter(Duration::from_millis(tick_jitter_ms))
                .with_thin_symbols(thin.iter().map(|s| s.as_str().to_owned()).collect())
                .with_thin_trade_one_in(thin_one_in);
            if bind.ip().is_loopback() || allow_remote {
                sim(cfg, cert_out, Duration::from_millis(relay_ms))
            } else {
                Err(io::Error::new(
                    io::ErrorKind::InvalidInput,
                    format!(
                        "--bind {bind} is not a loopback address: the simulator would serve \
                         other hosts; pass --allow-remote to mean it"
                    ),
                ))
            }
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        // A closed standard output included (BrokenPipe): the output did not reach its reader,
        // so the command failed. Rust ignores SIGPIPE, so this is an error value, not a signal.
        Err(e) => {
            let _ = writeln!(io::stderr(), "tvdatafeed: {e}");
            ExitCode::FAILURE
        }
    }
}

/// `secs` as a timeout, at least a second and at most [`MAX_TIMEOUT_SECS`].
fn timeout(secs: u64) -> Duration {
    Duration::from_secs(secs.clamp(1, MAX_TIMEOUT_SECS))
}

/// Standard output, locked, whose errors say "standard output" (a closed pipe is then
/// reported as such, not as a bare "Broken pipe").
pub(crate) fn stdout() -> impl Write {
    struct Named(io::StdoutLock<'static>);
    impl Write for Named {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            self.0.write(buf).map_err(named)
        }
        fn flush(&mut self) -> io::Result<()> {
            self.0.flush().map_err(named)
        }
    }
    fn named(e: io::Error) -> io::Error {
        io::Error::new(e.kind(), format!("standard output: {e}"))
    }
    Named(io::stdout().lock())
}

/// Decodes every line of `file`; lines longer than a frame of `max_frame_len` plus its header
/// are reported and skipped without being held in memory.
fn decode(file: Option<PathBuf>, max_frame_len: usize) -> io::Result<()> {
    let input: Box<dyn BufRead> = match file {
        Some(p) if p.as_os_str() != "-" => {
            Box::new(BufReader::new(File::open(&p).map_err(|e| {
                io::Error::new(e.kind(), format!("{}: {e}", p.display()))
            })?))
        }
        _ => Box::new(io::stdin().lock()),
    };
    let decoder = FrameDecoder::new().with_max_frame_len(max_frame_len);
    let mut parser = MessageParser::new();
    let mut out = io::BufWriter::new(stdout());
    // Saturating: `--max-frame-len` may be as large as `usize::MAX` ("no limit").
    let max_line = u64::try_from(max_frame_len.saturating_add(32)).unwrap_or(u64::MAX);
    let mut line = Vec::new();
    let mut input = input;
    let mut n = 0usize;
    loop {
        line.clear();
        let read =
            io::Read::take(&mut input, max_line.saturating_add(1)).read_until(b'\n', &mut line)?;
        if read == 0 {
            break;
        }
        n += 1;
        if line.len() as u64 > max_line {
            writeln!(
                out,
                "{n}: error: line longer than {max_line} bytes, skipped"
            )?;
            // Skip the rest of the over-long line without holding it in memory.
            while !line.ends_with(b"\n") {
                line.clear();
                if io::Read::take(&mut input, 8192).read_until(b'\n', &mut line)? == 0 {
                    break;
                }
            }
            continue;
        }
        while matches!(line.last(), Some(b'\n' | b'\r')) {
            line.pop();
        }
        if line.is_empty() {
            continue;
        }
        for frame in decoder.frames(&mut line) {
            match frame {
                Err(e) => writeln!(out, "{n}: frame error: {e}")?,
                Ok(Frame::Heartbeat(h)) => writeln!(out, "{n}: heartbeat {h}")?,
                Ok(Frame::Json(payload)) => match parser.parse(payload) {
                    Err(e) => writeln!(out, "{n}: message error: {e}")?,
                    Ok(
                        ServerMessage::DataUpdate { session, data }
                        | ServerMessage::TimescaleUpdate { session, data },
                    ) => {
                        for u in data.iter() {
                            writeln!(
                                out,
                                "{n}: {session} {} bars={} close_time={:?}",
                                u.key,
                                u.bars.len(),
                                u.bar_close_time
                            )?;
                            for b in u.bars {
                                writeln!(out, "{n}:   i={} {:?}", b.index, b.bar)?;
                            }
                        }
                    }
                    Ok(m) => writeln!(out, "{n}: {m:?}")?,
                },
            }
        }
    }
    out.flush()
}

/// Serves until the process is stopped; prints the URL first so scripts can read it (the
/// relay's, when `relay` is not zero: a relay in front of the simulator adds it each way).
fn sim(cfg: SimConfig, cert_out: Option<PathBuf>, relay: Duration) -> io::Result<()> {
    let sim = Sim::start(cfg).map_err(io::Error::other)?;
    let relay = if relay.is_zero() {
        None
    } else {
        Some(Relay::start(sim.addr(), relay).map_err(io::Error::other)?)
    };
    if let Some(pem) = sim.root_certificate_pem() {
        match &cert_out {
            Some(path) => std::fs::write(path, pem)?,
            None => write!(io::stderr(), "{pem}")?,
        }
    }
    let mut out = stdout();
    let url = relay
        .as_ref()
        .map_or_else(|| sim.url(), |r| r.url_for(&sim));
    writeln!(out, "{url}")?;
    out.flush()?;
    drop(out);
    // Serve until killed: the simulator's threads do the work; this thread only waits.
    loop {
        std::thread::park();
    }
}
