//! What an operator sees when something goes wrong: `RUST_LOG`/`--log` logs on stderr (the
//! disconnect's cause, each reconnect attempt, the gap fill, the thread names) with stdout
//! unchanged; no credential at trace; `live --metrics` serving Prometheus text.

use std::{
    io::{BufRead, BufReader, Read, Write},
    net::TcpStream,
    process::{Child, Command, Output, Stdio},
    time::Duration,
};

use tvdatafeed::{
    Interval, Symbol,
    sim::{Fault, FaultKind, Sim, SimConfig, Trigger},
};

fn bin() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_tvdatafeed"));
    c.env_remove("TVDATAFEED_URL")
        .env_remove("TV_AUTH_TOKEN")
        .env_remove("RUST_LOG")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    c
}

/// Waits for a child that ends by itself (`--duration`); kills it and fails after `limit`.
/// Its pipes are drained meanwhile, so that a chatty log never blocks it.
fn finish(mut child: Child, limit: Duration) -> Output {
    let drain = |pipe: Option<Box<dyn Read + Send>>| {
        std::thread::Builder::new()
            .name("test-pipe".into())
            .spawn(move || {
                let mut all = Vec::new();
                if let Some(mut p) = pipe {
                    let _ = p.read_to_end(&mut all);
                }
                all
            })
            .unwrap()
    };
    let out = drain(child.stdout.take().map(|p| Box::new(p) as _));
    let err = drain(child.stderr.take().map(|p| Box::new(p) as _));
    let mut waited = Duration::ZERO;
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if waited > limit {
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "still running after {limit:?}: {}",
                text(&err.join().unwrap())
            );
        }
        // Polls the child: std offers no wait with a timeout on a process.
        std::thread::park_timeout(Duration::from_millis(50));
        waited += Duration::from_millis(50);
    };
    Output {
        status,
        stdout: out.join().unwrap(),
        stderr: err.join().unwrap(),
    }
}

fn text(b: &[u8]) -> String {
    String::from_utf8(b.to_vec()).unwrap()
}

/// `live --format json` lines by bar time.
fn rows(out: &str) -> Vec<(i64, &str)> {
    out.lines()
        .map(|l| {
            let v: serde_json::Value =
                serde_json::from_str(l).unwrap_or_else(|e| panic!("not a bar row ({e}): {l}"));
            (v["time"].as_i64().unwrap(), l)
        })
        .collect()
}

/// The number after `key=` on `line`.
fn field(line: &str, key: &str) -> Option<u64> {
    let at = line.find(&format!(" {key}="))? + key.len() + 2;
    line[at..]
        .split(|c: char| !c.is_ascii_digit())
        .next()?
        .parse()
        .ok()
}

#[test]
fn a_forced_disconnect_is_logged_with_its_cause_each_attempt_and_the_gap_fill_and_stdout_is_unchanged()
 {
    let sim =
        Sim::start(SimConfig::default().with_update_interval(Duration::from_millis(100))).unwrap();
    let live = |logs: bool| {
        let mut c = bin();
        c.args([
            "live",
            "BINANCE:BTCUSDT@1S",
            "--format",
            "json",
            "--duration",
            "12",
            "--url",
            &sim.url(),
            // Attempts at most 600 ms apart: back within 600 ms of the 2.5 s outage's end,
            // however the jitter falls (at the default 30 s cap, five quick failures could
            // draw a wait past the run's end).
            "--reconnect-max-ms",
            "600",
        ]);
        if logs {
            c.env("RUST_LOG", "tvdatafeed=debug");
        }
        c.spawn().unwrap()
    };
    // The same bars at the same time, with and without logs.
    let (logged, plain) = (live(true), live(false));
    assert!(sim.wait_connections(2, Duration::from_secs(10)));
    // Once both stream (subscribed, bars closing): both connections close, and the server
    // refuses connections for 2.5 s (longer than any first backoff), so at least two attempts
    // are made, and bars close meanwhile (the gap).
    std::thread::park_timeout(Duration::from_secs(3));
    sim.inject(Fault::now(FaultKind::Restart(Duration::from_millis(2500))).when(Trigger::Now));
    let (logged, plain) = (
        finish(logged, Duration::from_secs(40)),
        finish(plain, Duration::from_secs(40)),
    );
    assert!(logged.status.success(), "{}", text(&logged.stderr));
    assert!(plain.status.success(), "{}", text(&plain.stderr));
    let log = text(&logged.stderr);

    // The cause, on the connection's span.
    assert!(
        log.lines()
            .any(|l| l.contains("conn{generation=1}") && l.contains("disconnected cause=")),
        "the disconnect and its cause: {log}"
    );
    // Each attempt, numbered 1, 2, ... in order; the failed ones with their error.
    let scheduled: Vec<u64> = log
        .lines()
        .filter(|l| l.contains("reconnect attempt scheduled"))
        .map(|l| field(l, "attempt").expect("an attempt number"))
        .collect();
    assert!(scheduled.len() >= 2, "{scheduled:?}: {log}");
    assert_eq!(
        scheduled,
        (1..=scheduled.len() as u64).collect::<Vec<_>>(),
        "{log}"
    );
    assert!(
        log.lines().any(|l| l.contains("connection attempt failed")
            && field(l, "attempt") == Some(1)
            && l.contains("error=")),
        "{log}"
    );
    assert!(log.lines().any(|l| l.contains("backoff_ms=")), "{log}");
    // The gap fill with its size, on the seis' span.
    let gap = log
        .lines()
        .find(|l| l.contains("gap filled"))
        .unwrap_or_else(|| panic!("no gap fill: {log}"));
    assert!(
        gap.contains("seis{symbol=BINANCE:BTCUSDT interval=1S}"),
        "{gap}"
    );
    assert!(field(gap, "gap_bars").is_some_and(|n| n >= 1), "{gap}");
    // The threads that did it (`live` reads its one many-seis consumer on `main`).
    for thread in [" tv-io ", " main "] {
        assert!(log.contains(thread), "thread {thread:?}: {log}");
    }
    // Logs off: stderr has only the command's own notes.
    let quiet = text(&plain.stderr);
    assert!(
        quiet.lines().all(|l| l.starts_with("tvdatafeed: ")),
        "{quiet}"
    );

    // Stdout: bar rows only, byte for byte those of the run without logs over the bars both
    // printed (they ran side by side; the simulator's bars are deterministic), each once, in
    // order, with the market's values.
    let (a, b) = (text(&logged.stdout), text(&plain.stdout));
    let (a, b) = (rows(&a), rows(&b));
    let common: Vec<_> = a
        .iter()
        .filter(|(t, _)| b.iter().any(|(u, _)| u == t))
        .collect();
    assert!(common.len() >= 6, "{a:?} / {b:?}");
    for (t, line) in &common {
        let other = b.iter().find(|(u, _)| u == t).unwrap().1;
        assert_eq!(*line, other, "bar {t}");
    }
    let second: Interval = "1S".parse().unwrap();
    let symbol: Symbol = "BINANCE:BTCUSDT".parse().unwrap();
    for w in a.windows(2) {
        assert_eq!(second.next_bar_open(w[0].0), w[1].0, "once, in order");
    }
    for l in logged
        .stdout
        .split(|b| *b == b'\n')
        .filter(|l| !l.is_empty())
    {
        let v: serde_json::Value = serde_json::from_slice(l).unwrap();
        let t = v["time"].as_i64().unwrap();
        assert_eq!(
            v["close"].as_f64().unwrap(),
            sim.expected_bar(&symbol, second, t).close
        );
    }
}

/// Hex, as tungstenite's trace log would print a frame's payload.
fn hex(s: &str) -> String {
    s.bytes().map(|b| format!("{b:02x}")).collect()
}

#[test]
fn at_trace_the_token_appears_nowhere_on_stderr() {
    // JWT-shaped, so the simulator accepts it.
    const TOKEN: &str = "eyJhbGciOiJIUzI1NiJ9.eyJ0cmFjZSI6InNlY3JldCJ9.dHJhY2Utc2lnbmF0dXJl";
    let sim = Sim::start(SimConfig::default()).unwrap();
    // Every target at trace, dependencies included; by flag and by RUST_LOG, text and JSON.
    for (how, format) in [("flag", "text"), ("env", "json")] {
        let mut c = bin();
        c.args([
            "live",
            "BINANCE:BTCUSDT@1S",
            "--duration",
            "2",
            "--log-format",
            format,
            "--url",
            &sim.url(),
        ]);
        if how == "flag" {
            c.args(["--log", "trace", "--token", TOKEN]);
        } else {
            c.env("RUST_LOG", "trace").env("TV_AUTH_TOKEN", TOKEN);
        }
        let o = finish(c.spawn().unwrap(), Duration::from_secs(30));
        assert!(o.status.success(), "{}", text(&o.stderr));
        let err = text(&o.stderr);
        assert!(
            err.contains("authenticated=true") || err.contains(r#""authenticated":true"#),
            "signed in, and logged: {err}"
        );
        for secret in [TOKEN, "dHJhY2Utc2lnbmF0dXJl"] {
            assert!(!err.contains(secret), "{how}/{format}: leaked: {err}");
            assert!(
                !err.contains(&hex(secret)),
                "{how}/{format}: leaked as hex: {err}"
            );
        }
    }
}

#[test]
fn json_logs_are_one_object_a_line_with_the_thread_and_spans() {
    let sim = Sim::start(SimConfig::default()).unwrap();
    let o = finish(
        bin()
            .args([
                "live",
                "BINANCE:BTCUSDT@1S",
                "--duration",
                "2",
                "--log",
                "tvdatafeed=debug",
                "--log-format",
                "json",
                "--url",
                &sim.url(),
            ])
            .spawn()
            .unwrap(),
        Duration::from_secs(30),
    );
    assert!(o.status.success(), "{}", text(&o.stderr));
    let err = text(&o.stderr);
    let lines: Vec<serde_json::Value> = err
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect();
    let connected = lines
        .iter()
        .find(|v| v["fields"]["message"] == "connected; replaying the subscriptions")
        .unwrap_or_else(|| panic!("{err}"));
    assert_eq!(connected["threadName"], "tv-io");
    assert_eq!(connected["span"]["generation"], 1);
    assert!(connected["timestamp"].as_str().unwrap().ends_with('Z'));
    // Stdout: the CSV header and rows only.
    assert!(text(&o.stdout).starts_with("symbol,interval,time,"));
}

#[test]
fn a_bad_log_filter_is_one_error_line_and_nothing_on_stdout() {
    let o = finish(
        bin()
            .args(["live", "BINANCE:BTCUSDT@1S", "--log", "tvdatafeed=loud"])
            .spawn()
            .unwrap(),
        Duration::from_secs(10),
    );
    assert!(!o.status.success());
    assert!(o.stdout.is_empty());
    let err = text(&o.stderr);
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(
        err.starts_with("tvdatafeed: --log \"tvdatafeed=loud\""),
        "{err}"
    );
}

/// `GET path` on `addr`: (status line, body).
fn get(addr: &str, path: &str) -> (String, String) {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    write!(s, "GET {path} HTTP/1.1\r\nHost: {addr}\r\n\r\n").unwrap();
    let mut all = String::new();
    s.read_to_string(&mut all).unwrap();
    let (head, body) = all.split_once("\r\n\r\n").unwrap();
    let status = head.lines().next().unwrap().to_owned();
    if status.contains("200") {
        assert!(
            head.contains("Content-Type: text/plain; version=0.0.4"),
            "{head}"
        );
    }
    (status, body.to_owned())
}

/// The value of the sample `name{labels...}` whose labels include `with`.
fn sample(scrape: &prometheus_parse::Scrape, name: &str, with: (&str, &str)) -> f64 {
    let s = scrape
        .samples
        .iter()
        .find(|s| s.metric == name && s.labels.get(with.0) == Some(with.1))
        .unwrap_or_else(|| panic!("no {name} with {with:?}"));
    match s.value {
        prometheus_parse::Value::Counter(v)
        | prometheus_parse::Value::Gauge(v)
        | prometheus_parse::Value::Untyped(v) => v,
        ref other => panic!("{name}: {other:?}"),
    }
}

fn parse(body: &str) -> prometheus_parse::Scrape {
    // The parser is lenient: each line is also checked to be a comment or `name{...} value`.
    for l in body.lines() {
        if l.starts_with("# HELP ") || l.starts_with("# TYPE ") {
            continue;
        }
        let (series, value) = l.rsplit_once(' ').unwrap_or_else(|| panic!("{l}"));
        assert!(value.parse::<f64>().is_ok(), "{l}");
        let name = series.split('{').next().unwrap();
        assert!(
            name.starts_with("tvdatafeed_")
                && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_'),
            "{l}"
        );
        assert_eq!(series.contains('{'), series.ends_with('}'), "{l}");
    }
    prometheus_parse::Scrape::parse(body.lines().map(|l| Ok(l.to_owned()))).unwrap()
}

#[test]
fn live_metrics_serve_prometheus_text_whose_counters_move_as_bars_close() {
    let sim =
        Sim::start(SimConfig::default().with_update_interval(Duration::from_millis(100))).unwrap();
    let mut child = bin()
        .args([
            "live",
            "BINANCE:BTCUSDT@1S",
            "--updates",
            "--duration",
            "8",
            "--metrics",
            "127.0.0.1:0",
            "--url",
            &sim.url(),
        ])
        .spawn()
        .unwrap();
    let mut err = BufReader::new(child.stderr.take().unwrap());
    let mut line = String::new();
    err.read_line(&mut line).unwrap();
    let addr = line
        .trim()
        .strip_prefix("tvdatafeed: metrics at http://")
        .and_then(|r| r.strip_suffix("/metrics"))
        .unwrap_or_else(|| panic!("{line}"))
        .to_owned();
    let seis = ("symbol", "BINANCE:BTCUSDT");
    std::thread::park_timeout(Duration::from_millis(2500));
    let (status, first) = get(&addr, "/metrics");
    assert_eq!(status, "HTTP/1.1 200 OK");
    let first = parse(&first);
    std::thread::park_timeout(Duration::from_millis(2500));
    let second = parse(&get(&addr, "/metrics").1);
    for name in [
        "tvdatafeed_seis_closed_total",
        "tvdatafeed_seis_updates_total",
        "tvdatafeed_consumer_pushed_total",
        "tvdatafeed_consumer_delivered_total",
    ] {
        let (a, b) = (sample(&first, name, seis), sample(&second, name, seis));
        assert!(b > a, "{name}: {a} then {b}");
    }
    assert!(sample(&second, "tvdatafeed_seis_closed_total", seis) >= 3.0);
    assert!(
        second
            .samples
            .iter()
            .any(|s| s.metric == "tvdatafeed_connected"
                && matches!(s.value, prometheus_parse::Value::Gauge(v) if v == 1.0)),
        "connected"
    );
    for name in [
        "tvdatafeed_reconnects_total",
        "tvdatafeed_messages_total",
        "tvdatafeed_fetches_in_flight",
    ] {
        assert!(
            second.samples.iter().any(|s| s.metric == name),
            "{name} is served"
        );
    }
    for name in [
        "tvdatafeed_consumer_lagged_total",
        "tvdatafeed_consumer_lost_closed_total",
    ] {
        assert_eq!(sample(&second, name, seis), 0.0, "{name}");
    }
    let quantiles = second
        .samples
        .iter()
        .find(|s| s.metric == "tvdatafeed_consumer_push_to_callback_seconds")
        .expect("the latency summary");
    assert!(
        matches!(&quantiles.value, prometheus_parse::Value::Summary(q) if q.len() == 4),
        "{:?}",
        quantiles.value
    );
    assert_eq!(get(&addr, "/").0, "HTTP/1.1 404 Not Found");
    let o = finish(child, Duration::from_secs(30));
    assert!(o.status.success());
    assert!(text(&o.stdout).starts_with("symbol,interval,time,"));
}

#[test]
fn metrics_on_a_non_loopback_address_need_an_explicit_flag() {
    let o = finish(
        bin()
            .args(["live", "BINANCE:BTCUSDT@1S", "--metrics", "0.0.0.0:0"])
            .spawn()
            .unwrap(),
        Duration::from_secs(10),
    );
    assert!(!o.status.success());
    assert!(o.stdout.is_empty());
    assert_eq!(
        text(&o.stderr),
        "tvdatafeed: --metrics 0.0.0.0:0 is not a loopback address: the metrics would be \
         served to other hosts; pass --metrics-allow-remote to mean it\n"
    );
}
