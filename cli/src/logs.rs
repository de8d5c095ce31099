//! Logs: the engine's `tracing` events on stderr, off unless `--log LEVEL` or `RUST_LOG` asks.
//!
//! Each line has a UTC timestamp, the level, the thread's name and id, the spans
//! (`conn{generation}`, `seis{symbol interval}`) with their fields, the target and the event's
//! fields; `--log-format json` writes the same as one JSON object a line. Standard output is
//! untouched, and an error is still one `tvdatafeed: ...` line on stderr.
//!
//! Only `tracing` events are shown: the `log` records of the dependencies are not bridged,
//! because tungstenite's at trace level print every frame sent (the auth token among them, in
//! hex) and ureq's the sign-in form. `async_nats` events stop at info: at debug they print the
//! NATS URL with its password.

use std::io;

use tracing_subscriber::EnvFilter;

/// How log lines are written.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default, clap::ValueEnum)]
pub(crate) enum LogFormat {
    /// `TIMESTAMP LEVEL THREAD-NAME THREAD-ID spans: target: message fields`.
    #[default]
    Text,
    /// One JSON object a line.
    Json,
}

/// Installs the stderr subscriber when `level` (a `RUST_LOG`-style filter, e.g. `debug` or
/// `tvdatafeed=trace`) or else `RUST_LOG` asks for logs; does nothing otherwise.
///
/// # Errors
///
/// The filter does not parse.
pub(crate) fn install(level: Option<&str>, format: LogFormat) -> io::Result<()> {
    let (directives, from) = match level {
        Some(l) => (l.to_owned(), "--log"),
        None => match std::env::var("RUST_LOG") {
            Ok(v) if !v.trim().is_empty() => (v, "RUST_LOG"),
            _ => return Ok(()),
        },
    };
    let filter = EnvFilter::builder()
        .parse(&directives)
        .map_err(|e| {
            io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("{from} {directives:?}: {e}"),
            )
        })?
        // async-nats logs each connection attempt at debug with the server's URL in `Debug`,
        // which shows its user and password: its events stop at info, whatever was asked.
        .add_directive("async_nats=info".parse().expect("a valid directive"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(io::stderr)
        .with_ansi(false)
        .with_thread_names(true)
        .with_thread_ids(true)
        .with_target(true);
    let installed = match format {
        LogFormat::Text => builder.try_init(),
        LogFormat::Json => builder
            .json()
            .with_current_span(true)
            .with_span_list(true)
            .try_init(),
    };
    installed.map_err(|e| io::Error::other(format!("cannot install the log subscriber: {e}")))
}
