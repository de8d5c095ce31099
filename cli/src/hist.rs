//! `tvdatafeed hist`: download closed bars as CSV or JSON lines, of one symbol or of many over
//! one connection (`Client::get_hist_many`).
//!
//! The output is built in memory and written only once the downloads ended, so an error never
//! leaves partial rows on stdout or in `--out`. Where `--out` writes is checked before the
//! download starts (see `out.rs`).
//!
//! With `--include-forming`, CSV rows get a last column, `forming`: `false` on closed bars,
//! `true` on the bar still forming (the last row); JSON puts `"forming":true` on that row only.
//!
//! With more than one symbol, CSV rows start with a `symbol` column (JSON rows always carry
//! `"symbol"`), symbols in the order given, each one's bars ascending. A symbol that fails is
//! one line on stderr; the others are still written, and the exit code is non-zero.

use std::{
    collections::{HashMap, HashSet},
    fmt::Write as _,
    io::{self, IsTerminal, Write},
    path::PathBuf,
    time::Duration,
};

use crate::out::Out;

use tvdatafeed::{
    AuthToken, Bar, Client, ClientConfig, Endpoint, Error, HistOptions, HistRequest, History,
    Interval, Symbol,
    http::{self, HttpConfig},
};

/// Most symbols one command downloads: more is refused, not truncated.
const MAX_SYMBOLS: usize = 10_000;
/// Largest `--symbols-file` read (ten thousand symbols of a hundred bytes).
const MAX_SYMBOLS_FILE: u64 = 1 << 20;

/// The parsed command line of `hist`.
pub(crate) struct Args {
    /// `SYMBOL... INTERVAL`.
    pub(crate) args: Vec<String>,
    pub(crate) symbols_file: Option<PathBuf>,
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

/// The symbols asked for: the positional ones, then the file's, without repeats, in order.
fn symbols(positional: &[String], file: Option<&PathBuf>) -> io::Result<Vec<Symbol>> {
    let mut out: Vec<Symbol> = Vec::new();
    let mut seen: HashSet<Symbol> = HashSet::new();
    let mut push = |sym: Symbol, out: &mut Vec<Symbol>| -> io::Result<()> {
        if seen.insert(sym.clone()) {
            if out.len() == MAX_SYMBOLS {
                return Err(invalid(format!(
                    "more than {MAX_SYMBOLS} symbols: split the download"
                )));
            }
            out.push(sym);
        }
        Ok(())
    };
    // Every malformed symbol is named, not only the first.
    let mut bad = Vec::new();
    for text in positional {
        match text.parse() {
            Ok(sym) => push(sym, &mut out)?,
            Err(e) => bad.push(format!("{e}")),
        }
    }
    each_refused(bad)?;
    if let Some(path) = file {
        let text = read_symbols_file(path)?;
        for (i, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let sym = line
                .parse()
                .map_err(|e| invalid(format!("{}:{}: {e}", path.display(), i + 1)))?;
            push(sym, &mut out)?;
        }
    }
    if out.is_empty() {
        return Err(invalid(
            "no symbol: give EXCHANGE:TICKER... before the interval, or --symbols-file".into(),
        ));
    }
    Ok(out)
}

/// Fails when `refused` is not empty, with one stderr line per refusal: all but the last are
/// written here, the last is the error (which `main` writes as the last line).
pub(crate) fn each_refused(mut refused: Vec<String>) -> io::Result<()> {
    let Some(last) = refused.pop() else {
        return Ok(());
    };
    for line in refused {
        let _ = writeln!(io::stderr(), "tvdatafeed: {line}");
    }
    Err(invalid(last))
}

/// `e` as one line that names what it was about: a timeout, whose own message names only
/// the phase, gets the host, and the symbol and interval when there is one. Other errors
/// already name their host (transport) or their series.
pub(crate) fn describe(e: &Error, seis: Option<(&Symbol, Interval)>, host: &str) -> String {
    let host = tvdatafeed::internal::echo(host);
    match (e, seis) {
        (Error::Timeout { .. }, Some((symbol, interval))) => {
            format!("{symbol} {interval} from {host}: {e}")
        }
        (Error::Timeout { .. } | Error::RateLimited { .. }, None) => format!("{host}: {e}"),
        _ => e.to_string(),
    }
}

/// The host of a `scheme://[user@]host[:port]/…` URL, for a timeout's message (never the
/// user part, which may hold a credential).
fn url_host(url: &str) -> &str {
    let rest = url.split_once("://").map_or(url, |(_, r)| r);
    let authority = rest.split(['/', '?', '#']).next().unwrap_or(rest);
    let authority = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
    match authority.rsplit_once(':') {
        Some((h, port)) if !port.is_empty() && port.bytes().all(|b| b.is_ascii_digit()) => h,
        _ => authority,
    }
}

/// A `--symbols-file` (`-`: standard input), at most `MAX_SYMBOLS_FILE` bytes of UTF-8.
fn read_symbols_file(path: &PathBuf) -> io::Result<String> {
    use std::io::Read as _;
    let mut bytes = Vec::new();
    let limit = MAX_SYMBOLS_FILE + 1;
    if path.as_os_str() == "-" {
        io::stdin().lock().take(limit).read_to_end(&mut bytes)?;
    } else {
        let f = std::fs::File::open(path).map_err(|e| crate::out::at(path, e))?;
        f.take(limit)
            .read_to_end(&mut bytes)
            .map_err(|e| crate::out::at(path, e))?;
    }
    if bytes.len() as u64 > MAX_SYMBOLS_FILE {
        return Err(invalid(format!(
            "{}: larger than {MAX_SYMBOLS_FILE} bytes",
            path.display()
        )));
    }
    String::from_utf8(bytes).map_err(|_| invalid(format!("{}: not UTF-8 text", path.display())))
}

/// Parses the arguments, downloads, and writes the rows.
pub(crate) fn run(args: Args) -> io::Result<()> {
    let Some((interval_text, positional)) = args.args.split_last() else {
        return Err(invalid("give EXCHANGE:TICKER... then the interval".into()));
    };
    let interval: Interval = interval_text.parse().map_err(|e| {
        invalid(format!(
            "{e} (the last argument is the interval: hist SYMBOL... INTERVAL)"
        ))
    })?;
    let symbols = symbols(positional, args.symbols_file.as_ref())?;
    if args.bars == 0 {
        return Err(invalid("--bars must be at least 1".into()));
    }
    let mut config = ClientConfig::default().with_timeout(args.timeout);
    let mut host = Endpoint::data().host().to_owned();
    if let Some(token) = args.token.as_deref().filter(|t| !t.trim().is_empty()) {
        config = config.with_token(AuthToken::new(token.trim()));
    }
    // An empty URL (e.g. `TVDATAFEED_URL=`) means the default, like an empty token.
    if let Some(url) = args.url.as_deref().filter(|u| !u.trim().is_empty()) {
        let endpoint: Endpoint = url.parse().map_err(|e| invalid(format!("{e}")))?;
        endpoint.host().clone_into(&mut host);
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
    if let [symbol] = symbols.as_slice() {
        let client = Client::new(config);
        return one(&client, symbol, interval, &options, &args, out, &host);
    }
    let client = Client::new(config);
    many(&client, &symbols, interval, &options, &args, out, &host)
}

/// One symbol: its rows, or its error and nothing written.
fn one(
    client: &Client,
    symbol: &Symbol,
    interval: Interval,
    options: &HistOptions,
    args: &Args,
    out: Out,
    host: &str,
) -> io::Result<()> {
    let bar = progress_bar(args.bars);
    let result = client.get_hist_with_progress(symbol, interval, args.bars, options, |n| {
        if let Some(b) = &bar {
            b.set_position(n as u64);
        }
    });
    if let Some(b) = bar {
        b.finish_and_clear();
    }
    let history = result.map_err(|e| {
        let line = describe(&e, Some((symbol, interval)), host);
        io::Error::new(to_io(e).kind(), line)
    })?;
    note_fewer(symbol, interval, &history, args.bars);
    let forming = args.include_forming.then_some(history.forming.as_ref());
    let text = if args.json {
        json(symbol, interval, &history.bars, forming)
    } else {
        let mut s = csv_header(false, args.include_forming);
        csv_rows(&mut s, None, &history.bars, forming);
        s
    };
    out.finish(text.as_bytes())
}

/// Many symbols over one connection: every success written, in the order given; each
/// failure one stderr line; an error (non-zero exit) if any failed.
fn many(
    client: &Client,
    symbols: &[Symbol],
    interval: Interval,
    options: &HistOptions,
    args: &Args,
    out: Out,
    host: &str,
) -> io::Result<()> {
    let requests = symbols
        .iter()
        .map(|s| {
            HistRequest::new(s.clone(), interval, args.bars)
                .map(|r| r.with_options(options.clone()))
        })
        .collect::<Result<Vec<_>, _>>()
        .map_err(to_io)?;
    let index: HashMap<&Symbol, usize> = symbols.iter().enumerate().map(|(i, s)| (s, i)).collect();
    let mut results: Vec<Option<Result<History, Error>>> = symbols.iter().map(|_| None).collect();
    let bar = symbols_progress(symbols.len());
    for (request, result) in client.get_hist_many(requests) {
        if let Some(&i) = index.get(&request.symbol) {
            results[i] = Some(result);
        }
        if let Some(b) = &bar {
            b.inc(1);
        }
    }
    if let Some(b) = bar {
        b.finish_and_clear();
    }
    let mut text = if args.json {
        String::new()
    } else {
        csv_header(true, args.include_forming)
    };
    let mut failed = 0;
    for (symbol, result) in symbols.iter().zip(results) {
        match result {
            Some(Ok(history)) => {
                note_fewer(symbol, interval, &history, args.bars);
                let forming = args.include_forming.then_some(history.forming.as_ref());
                if args.json {
                    text.push_str(&json(symbol, interval, &history.bars, forming));
                } else {
                    csv_rows(&mut text, Some(symbol), &history.bars, forming);
                }
            }
            Some(Err(e)) => {
                failed += 1;
                // A series error already names the symbol and interval, a timeout gets them.
                let _ = if e.series_failure().is_some() || matches!(e, Error::Timeout { .. }) {
                    let line = describe(&e, Some((symbol, interval)), host);
                    writeln!(io::stderr(), "tvdatafeed: {line}")
                } else {
                    writeln!(io::stderr(), "tvdatafeed: {symbol} {interval}: {e}")
                };
            }
            None => {
                failed += 1;
                let _ = writeln!(io::stderr(), "tvdatafeed: {symbol} {interval}: no answer");
            }
        }
    }
    if failed < symbols.len() {
        out.finish(text.as_bytes())?;
    }
    if failed > 0 {
        return Err(io::Error::other(format!(
            "{failed} of {} symbols failed",
            symbols.len()
        )));
    }
    Ok(())
}

/// Not an error (the rows are what exists), but a script asking for more should know.
fn note_fewer(symbol: &Symbol, interval: Interval, history: &History, asked: u32) {
    let got = history.bars.len();
    if got < asked as usize {
        let _ = writeln!(
            io::stderr(),
            "tvdatafeed: {symbol} {interval}: {got} of {asked} bars asked (history depth of \
             this account or symbol)"
        );
    }
}

fn to_io(e: Error) -> io::Error {
    let kind = match &e {
        Error::Timeout { .. } => io::ErrorKind::TimedOut,
        Error::InvalidRequest(_) => io::ErrorKind::InvalidInput,
        _ => io::ErrorKind::Other,
    };
    io::Error::new(kind, e.to_string())
}

/// A progress bar counting symbols on stderr, when it is a terminal.
fn symbols_progress(n: usize) -> Option<indicatif::ProgressBar> {
    if !io::stderr().is_terminal() {
        return None;
    }
    let b = indicatif::ProgressBar::new(n as u64);
    b.set_style(
        indicatif::ProgressStyle::with_template("{bar:40} {pos}/{len} symbols {elapsed}")
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
    );
    Some(b)
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

/// The CSV header: `symbol` first with several symbols, `forming` last with
/// `--include-forming`.
fn csv_header(symbol: bool, forming: bool) -> String {
    let mut s = String::new();
    if symbol {
        s.push_str("symbol,");
    }
    s.push_str("time,open,high,low,close,volume");
    s.push_str(if forming { ",forming\n" } else { "\n" });
    s
}

/// The closed bars, then (when `forming` is `Some`, i.e. `--include-forming`) the forming bar,
/// if any, with a `forming` column (`false` on closed bars, `true` on it); each row starts
/// with `symbol` when given.
fn csv_rows(
    s: &mut String,
    symbol: Option<&Symbol>,
    closed: &[Bar],
    forming: Option<Option<&Bar>>,
) {
    let mark = forming.is_some();
    let rows = closed
        .iter()
        .map(|b| (b, false))
        .chain(forming.flatten().map(|b| (b, true)));
    for (b, is_forming) in rows {
        if let Some(sym) = symbol {
            // Validated symbols have no comma, quote or newline.
            let _ = write!(s, "{sym},");
        }
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
    let default_url = config.search_url.clone();
    // An empty URL (e.g. `TVDATAFEED_SEARCH_URL=`) means the default.
    if let Some(u) = url.filter(|u| !u.trim().is_empty()) {
        config = config.with_search_url(u);
    }
    let results = http::search(&config, text.trim(), exchange).map_err(|e| {
        let host = url_host(if config.search_url.is_empty() {
            &default_url
        } else {
            &config.search_url
        });
        let line = describe(&e, None, host);
        io::Error::new(to_io(e).kind(), line)
    })?;
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
