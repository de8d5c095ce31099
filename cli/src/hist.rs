//! `tvdatafeed hist`: download closed bars as CSV or JSON lines.
//!
//! The output is built in memory and written only once the download succeeded, so an error
//! never leaves partial rows on stdout or in `--out`. Where `--out` writes is checked before
//! the download starts (see `out.rs`).
//!
//! With `--include-forming`, CSV rows get a seventh column, `forming`: `false` on closed bars,
//! `true` on the bar still forming (the last row); JSON puts `"forming":true` on that row only.

use std::{
    fmt::Write as _,
    io::{self, IsTerminal, Write},
    path::PathBuf,
    time::Duration,
};

use crate::out::Out;

use tvdatafeed::{
    AuthToken, Bar, Client, ClientConfig, Endpoint, Error, HistOptions, Interval, Symbol,
    http::{self, HttpConfig},
};

/// The parsed command line of `hist`.
pub(crate) struct Args {
    pub(crate) symbol: String,
    pub(crate) interval: String,
    pub(crate) bars: u32,
    pub(crate) url: Option<String>,
    pub(crate) token: Option<String>,
    pub(crate) json: bool,
    pub(crate) include_forming: bool,
    pub(crate) extended: bool,
    pub(crate) out: Option<PathBuf>,
    pub(crate) ca_cert: Option<PathBuf>,
    pub(crate) timeout: Duration,
}

fn invalid(msg: String) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidInput, msg)
}

/// Parses the arguments, downloads, and writes the rows.
pub(crate) fn run(args: Args) -> io::Result<()> {
    let symbol: Symbol = args.symbol.parse().map_err(|e| invalid(format!("{e}")))?;
    let interval: Interval = args.interval.parse().map_err(|e| invalid(format!("{e}")))?;
    if args.bars == 0 {
        return Err(invalid("--bars must be at least 1".into()));
    }
    let mut config = ClientConfig::default().with_timeout(args.timeout);
    if let Some(token) = args.token.filter(|t| !t.trim().is_empty()) {
        config = config.with_token(AuthToken::new(token.trim()));
    }
    // An empty URL (e.g. `TVDATAFEED_URL=`) means the default, like an empty token.
    if let Some(url) = args.url.as_deref().filter(|u| !u.trim().is_empty()) {
        let endpoint: Endpoint = url.parse().map_err(|e| invalid(format!("{e}")))?;
        config = config.with_endpoint(endpoint).map_err(to_io)?;
    }
    if let Some(path) = &args.ca_cert {
        for der in read_pem_certs(path)? {
            config = config.with_root_certificate(der);
        }
    }
    // Before any network work: a destination we cannot write fails now, not after the download.
    let out = Out::prepare(args.out.as_deref())?;
    let options = HistOptions::default().with_extended_session(args.extended);
    let client = Client::new(config);
    let bar = progress_bar(args.bars);
    let result = client.get_hist_with_progress(&symbol, interval, args.bars, &options, |n| {
        if let Some(b) = &bar {
            b.set_position(n as u64);
        }
    });
    if let Some(b) = bar {
        b.finish_and_clear();
    }
    let history = result.map_err(to_io)?;
    let got = history.bars.len();
    if got < args.bars as usize {
        // Not an error (the rows are what exists), but a script asking for more should know.
        let _ = writeln!(
            io::stderr(),
            "tvdatafeed: {symbol} {interval}: {got} of {} bars asked (history depth of this \
             account or symbol)",
            args.bars
        );
    }
    let forming = if args.include_forming {
        Some(history.forming.as_ref())
    } else {
        None
    };
    let text = if args.json {
        json(&symbol, interval, &history.bars, forming)
    } else {
        csv(&history.bars, forming)
    };
    out.finish(text.as_bytes())
}

fn to_io(e: Error) -> io::Error {
    let kind = match &e {
        Error::Timeout { .. } => io::ErrorKind::TimedOut,
        Error::InvalidRequest(_) => io::ErrorKind::InvalidInput,
        _ => io::ErrorKind::Other,
    };
    io::Error::new(kind, e.to_string())
}

/// A progress bar on stderr when it is a terminal and the download spans pages.
fn progress_bar(bars: u32) -> Option<indicatif::ProgressBar> {
    if !io::stderr().is_terminal() || bars <= 5_000 {
        return None;
    }
    let b = indicatif::ProgressBar::new(u64::from(bars) + 1);
    b.set_style(
        indicatif::ProgressStyle::with_template("{bar:40} {pos}/{len} bars {elapsed}")
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
    );
    Some(b)
}

/// Every certificate of a PEM file, as DER.
fn read_pem_certs(path: &PathBuf) -> io::Result<Vec<Vec<u8>>> {
    use rustls_pki_types::{CertificateDer, pem::PemObject};
    let certs: Result<Vec<_>, _> = CertificateDer::pem_file_iter(path)
        .map_err(|e| invalid(format!("{}: {e}", path.display())))?
        .map(|c| c.map(|c| c.to_vec()))
        .collect();
    let certs = certs.map_err(|e| invalid(format!("{}: {e}", path.display())))?;
    if certs.is_empty() {
        return Err(invalid(format!("{}: no certificate", path.display())));
    }
    Ok(certs)
}

/// `f64` as the shortest text that parses back to the same value.
fn num(x: f64) -> String {
    format!("{x}")
}

/// The closed bars, then (when `forming` is `Some`, i.e. `--include-forming`) a `forming`
/// column and the forming bar, if any, marked `true`.
fn csv(closed: &[Bar], forming: Option<Option<&Bar>>) -> String {
    let mark = forming.is_some();
    let mut s = String::from("time,open,high,low,close,volume");
    s.push_str(if mark { ",forming\n" } else { "\n" });
    let rows = closed
        .iter()
        .map(|b| (b, false))
        .chain(forming.flatten().map(|b| (b, true)));
    for (b, is_forming) in rows {
        let volume = b.volume.map(num).unwrap_or_default();
        let _ = write!(
            s,
            "{},{},{},{},{},{volume}",
            b.time,
            num(b.open),
            num(b.high),
            num(b.low),
            num(b.close)
        );
        if mark {
            let _ = write!(s, ",{is_forming}");
        }
        s.push('\n');
    }
    s
}

/// One object per line; the forming bar (with `--include-forming`) has `"forming":true`.
fn json(
    symbol: &Symbol,
    interval: Interval,
    closed: &[Bar],
    forming: Option<Option<&Bar>>,
) -> String {
    // Symbols and intervals are validated ASCII without quotes or backslashes.
    let mut s = String::new();
    let rows = closed
        .iter()
        .map(|b| (b, false))
        .chain(forming.flatten().map(|b| (b, true)));
    for (b, is_forming) in rows {
        let volume = b.volume.map_or_else(|| "null".to_owned(), num);
        let mark = if is_forming { r#","forming":true"# } else { "" };
        let _ = writeln!(
            s,
            r#"{{"symbol":"{symbol}","interval":"{interval}","time":{},"open":{},"high":{},"low":{},"close":{},"volume":{volume}{mark}}}"#,
            b.time,
            num(b.open),
            num(b.high),
            num(b.low),
            num(b.close)
        );
    }
    s
}

/// `tvdatafeed search`: one row per result (`symbol,exchange,ticker,type,description`), or
/// JSON lines.
pub(crate) fn search(
    text: &str,
    exchange: Option<&str>,
    as_json: bool,
    url: Option<String>,
    timeout: Duration,
) -> io::Result<()> {
    if text.trim().is_empty() {
        return Err(invalid("the search text is empty".into()));
    }
    let mut config = HttpConfig::default().with_timeout(timeout);
    // An empty URL (e.g. `TVDATAFEED_SEARCH_URL=`) means the default.
    if let Some(u) = url.filter(|u| !u.trim().is_empty()) {
        config = config.with_search_url(u);
    }
    let results = http::search(&config, text.trim(), exchange).map_err(to_io)?;
    let mut s = String::new();
    if !as_json {
        s.push_str("symbol,exchange,ticker,type,description\n");
    }
    for r in &results {
        let symbol = r.symbol().map(|s| s.to_string()).unwrap_or_default();
        if as_json {
            let _ = writeln!(
                s,
                r#"{{"symbol":{},"exchange":{},"ticker":{},"type":{},"description":{}}}"#,
                quote(&symbol),
                quote(&r.exchange),
                quote(&r.ticker),
                quote(&r.kind),
                quote(&r.description)
            );
        } else {
            let _ = writeln!(
                s,
                "{},{},{},{},{}",
                csv_field(&symbol),
                csv_field(&r.exchange),
                csv_field(&r.ticker),
                csv_field(&r.kind),
                csv_field(&r.description)
            );
        }
    }
    let mut out = crate::stdout();
    out.write_all(s.as_bytes())?;
    out.flush()
}

/// A JSON string literal.
fn quote(s: &str) -> String {
    let mut out = String::from("\"");
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if (c as u32) < 0x20 => {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// A CSV field, quoted when it holds a separator, a quote or a line break.
fn csv_field(s: &str) -> String {
    if s.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", s.replace('"', "\"\""))
    } else {
        s.to_owned()
    }
}
