//! `publish` and `live --nats` against a real `nats-server` (loopback, a temp dir) and the
//! simulator: a round trip, `kill -9` of one publisher of a pair, and bad input refused before
//! anything is subscribed. Skipped, with the reason printed, when `nats-server` is absent.
#![allow(
    clippy::disallowed_methods,
    clippy::disallowed_types,
    clippy::print_stderr,
    missing_docs,
    reason = "integration tests"
)]

#[path = "../../nats/tests/util/mod.rs"]
mod util;

use std::{
    process::{Child, Command, Output, Stdio},
    time::{Duration, Instant},
};

use tvdatafeed::{
    Bar, Interval, Symbol,
    sim::{Sim, SimConfig},
};
use tvdatafeed_nats::{BarKind, BarMessage, BarStream, NatsConfig, StartAt};

fn bin() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_tvdatafeed"));
    c.env_remove("TVDATAFEED_URL")
        .env_remove("TV_AUTH_TOKEN")
        .env_remove("TVDATAFEED_NATS_URL")
        .env_remove("RUST_LOG");
    c
}

fn spawn(c: &mut Command) -> Child {
    c.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run tvdatafeed")
}

/// Waits for `child` at most `limit`, killing it and failing after.
fn finish(mut child: Child, limit: Duration) -> Output {
    let deadline = Instant::now() + limit;
    while child.try_wait().expect("wait").is_none() {
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("tvdatafeed did not end within {limit:?}");
        }
        util::pause(Duration::from_millis(50));
    }
    child.wait_with_output().expect("output")
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

const SPECS: [&str; 6] = [
    "NYSE:BRK.B@1S",
    "CME_MINI:ES1!@1S",
    "BINANCE:BTCUSDT@1S",
    "SIM:T0001@1S",
    "SIM:T0002@1S",
    "SIM:T0003@1S",
];

fn seises() -> Vec<(Symbol, Interval)> {
    SPECS
        .iter()
        .map(|s| {
            let (sym, iv) = s.rsplit_once('@').unwrap();
            (sym.parse().unwrap(), iv.parse().unwrap())
        })
        .collect()
}

/// Every close stored for `seis`, in stream order.
fn stored(url: &str, seis: &(Symbol, Interval)) -> Vec<Bar> {
    BarStream::open(
        &NatsConfig::new(url),
        "TVDATAFEED",
        "tvdatafeed",
        std::slice::from_ref(seis),
        StartAt::All,
    )
    .unwrap()
    .idle(Duration::from_secs(2))
    .map(|b| b.unwrap().message)
    .filter(|m| m.kind == BarKind::Closed)
    .map(|m| m.bar)
    .collect()
}

/// Ascending by one interval, no gap, no repeat, each the simulator's bar.
fn assert_exactly_once(sim: &Sim, seis: &(Symbol, Interval), bars: &[Bar]) {
    for w in bars.windows(2) {
        assert_eq!(
            seis.1.next_bar_open(w[0].time),
            w[1].time,
            "{seis:?}: gap or repeat"
        );
    }
    for b in bars {
        assert_eq!(*b, sim.expected_bar(&seis.0, seis.1, b.time), "{seis:?}");
    }
}

#[test]
fn publish_then_live_nats_prints_what_was_published() {
    let Some(server) = util::server_or_skip("publish_then_live_nats") else {
        return;
    };
    let sim = Sim::start(SimConfig::default()).unwrap();
    let out = finish(
        spawn(bin().args([
            "publish",
            SPECS[0],
            SPECS[1],
            "--nats",
            &server.url(),
            "--url",
            &sim.url(),
            "--duration",
            "3",
        ])),
        Duration::from_secs(60),
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(out.stdout.is_empty(), "publish prints nothing on stdout");
    let out = finish(
        spawn(bin().args([
            "live",
            SPECS[1],
            "--nats",
            &server.url(),
            "--since",
            "0",
            "--duration",
            "2",
            "--format",
            "json",
        ])),
        Duration::from_secs(30),
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    let lines: Vec<String> = text(&out.stdout).lines().map(str::to_owned).collect();
    let want = stored(&server.url(), &seises()[1]);
    assert!(want.len() >= 2, "{want:?}");
    assert_eq!(lines.len(), want.len(), "{lines:?}");
    for (line, bar) in lines.iter().zip(&want) {
        // The `live --format json` object, and nothing else.
        let with_kind = format!("{},\"kind\":\"closed\"}}", line.trim_end_matches('}'));
        let m = BarMessage::from_json(with_kind.as_bytes()).expect(line);
        assert_eq!(m.bar, *bar);
        assert_eq!(m.symbol.as_str(), "CME_MINI:ES1!");
    }
    assert_exactly_once(&sim, &seises()[1], &want);
}

/// Reads a child's pipe into a shared string, for a test to watch while the child runs.
fn collect(
    pipe: impl std::io::Read + Send + 'static,
) -> (
    std::sync::Arc<std::sync::Mutex<String>>,
    std::thread::JoinHandle<()>,
) {
    use std::io::BufRead as _;
    let text = std::sync::Arc::new(std::sync::Mutex::new(String::new()));
    let into = std::sync::Arc::clone(&text);
    let reader = std::thread::Builder::new()
        .name("pipe-reader".into())
        .spawn(move || {
            for line in std::io::BufReader::new(pipe).lines() {
                let Ok(line) = line else { break };
                let mut t = into.lock().unwrap();
                t.push_str(&line);
                t.push('\n');
            }
        })
        .unwrap();
    (text, reader)
}

/// `live --nats` says on stderr when NATS goes away and when it is back (one line each), and
/// exits non-zero, saying why, when it ends during an outage.
#[test]
fn live_nats_reports_a_nats_outage_on_stderr() {
    let Some(mut server) = util::server_or_skip("live_nats_reports_a_nats_outage") else {
        return;
    };
    let sim = Sim::start(SimConfig::default()).unwrap();
    // A stream with bars in it.
    let out = finish(
        spawn(bin().args([
            "publish",
            SPECS[0],
            "--nats",
            &server.url(),
            "--url",
            &sim.url(),
            "--duration",
            "2",
        ])),
        Duration::from_secs(60),
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    let mut child = spawn(bin().args([
        "live",
        SPECS[0],
        "--nats",
        &server.url(),
        "--since",
        "0",
        "--duration",
        "14",
        "--format",
        "json",
    ]));
    let (stdout, out_reader) = collect(child.stdout.take().unwrap());
    let (stderr, err_reader) = collect(child.stderr.take().unwrap());
    let has =
        |pipe: &std::sync::Arc<std::sync::Mutex<String>>, s: &str| pipe.lock().unwrap().contains(s);
    // It reads the stream (the stored bars are printed), then NATS goes away...
    util::wait_for(Duration::from_secs(10), "the stored bars printed", || {
        has(&stdout, "\"time\"")
    });
    server.stop();
    util::wait_for(Duration::from_secs(10), "the outage said", || {
        has(&stderr, "NATS connection lost")
    });
    // ...and comes back.
    server.restart();
    util::wait_for(Duration::from_secs(10), "the return said", || {
        has(&stderr, "NATS connection back after")
    });
    // Gone again until the end.
    server.stop();
    let status = {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(s) = child.try_wait().unwrap() {
                break s;
            }
            assert!(Instant::now() < deadline, "live --nats did not end");
            util::pause(Duration::from_millis(50));
        }
    };
    // The pipes close with the child: the readers end with its last lines.
    out_reader.join().unwrap();
    err_reader.join().unwrap();
    let err = stderr.lock().unwrap().clone();
    assert!(!status.success(), "ended during an outage: {err}");
    assert_eq!(err.matches("NATS connection lost").count(), 2, "{err}");
    assert_eq!(
        err.matches("NATS connection back after").count(),
        1,
        "{err}"
    );
    assert!(
        err.contains("ended during a NATS outage"),
        "the last line says why: {err}"
    );
}

#[test]
fn kill_9_of_one_publisher_of_a_pair_loses_nothing() {
    let Some(server) = util::server_or_skip("kill_9_of_one_publisher") else {
        return;
    };
    let sim = Sim::start(SimConfig::default()).unwrap();
    let args = |secs: &str| {
        let mut c = bin();
        c.arg("publish").args(SPECS).args([
            "--nats",
            &server.url(),
            "--url",
            &sim.url(),
            "--duration",
            secs,
        ]);
        c
    };
    let mut victim = spawn(&mut args("60"));
    let survivor = spawn(&mut args("9"));
    // Killed once the pair is publishing: every seis has bars on the stream.
    util::wait_for(Duration::from_secs(30), "bars on the stream", || {
        seises().iter().all(|s| {
            // The stream exists once a publisher created it.
            BarStream::open(
                &NatsConfig::new(server.url()),
                "TVDATAFEED",
                "tvdatafeed",
                std::slice::from_ref(s),
                StartAt::All,
            )
            .map(|st| st.idle(Duration::from_millis(500)).take(2).count() >= 2)
            .unwrap_or(false)
        })
    });
    victim.kill().unwrap(); // SIGKILL
    let _ = victim.wait();
    let killed_at = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let out = finish(survivor, Duration::from_secs(60));
    assert!(
        out.status.success(),
        "the survivor carries on: {}",
        text(&out.stderr)
    );
    for seis in seises() {
        let bars = stored(&server.url(), &seis);
        assert_exactly_once(&sim, &seis, &bars);
        let last = bars.last().expect("bars").time;
        assert!(
            u64::try_from(last).unwrap() >= killed_at + 3,
            "{seis:?}: bars after the kill ({last} vs {killed_at})"
        );
    }
}

#[test]
fn bad_input_is_one_line_and_subscribes_nothing() {
    let Some(server) = util::server_or_skip("bad_input_cli") else {
        return;
    };
    let sim = Sim::start(SimConfig::default()).unwrap();
    let dead = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        format!(
            "nats://user:hunter2@127.0.0.1:{}",
            l.local_addr().unwrap().port()
        )
    };
    let url = server.url();
    let cases: [(Vec<&str>, &str); 3] = [
        (
            vec!["publish", SPECS[0], "--nats", &dead],
            "cannot connect to NATS",
        ),
        (
            vec!["publish", SPECS[0], "--nats", "nats://127.0.0.1:99999"],
            "NATS",
        ),
        (
            vec!["publish", "SIM:INVALIDX@1S", "--nats", &url],
            "SIM:INVALIDX",
        ),
    ];
    for (argv, says) in cases {
        let out = finish(
            spawn(
                bin()
                    .args(&argv)
                    .args(["--url", &sim.url(), "--duration", "2"]),
            ),
            Duration::from_secs(30),
        );
        let err = text(&out.stderr);
        assert!(!out.status.success(), "{argv:?}");
        assert_eq!(err.lines().count(), 1, "{argv:?}: one line: {err}");
        assert!(err.contains(says), "{argv:?}: {err}");
        assert!(
            !err.contains("hunter2"),
            "{argv:?}: a password printed: {err}"
        );
        // With every log on, the password still stays out.
        let out = finish(
            spawn(bin().args(&argv).args([
                "--url",
                &sim.url(),
                "--duration",
                "2",
                "--log",
                "trace",
            ])),
            Duration::from_secs(30),
        );
        let err = text(&out.stderr);
        assert!(!out.status.success(), "{argv:?}");
        assert!(
            !err.contains("hunter2"),
            "{argv:?}: a password logged: {err}"
        );
    }
    // A stream whose subjects overlap ours under another name: refused before subscribing.
    let out = finish(
        spawn(bin().args([
            "publish",
            SPECS[0],
            "--nats",
            &server.url(),
            "--url",
            &sim.url(),
            "--duration",
            "1",
        ])),
        Duration::from_secs(30),
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    let series_before = sim.counters().series_open;
    let out = finish(
        spawn(bin().args([
            "publish",
            SPECS[0],
            "--nats",
            &server.url(),
            "--stream",
            "OTHER",
            "--url",
            &sim.url(),
            "--duration",
            "1",
        ])),
        Duration::from_secs(30),
    );
    let err = text(&out.stderr);
    assert!(!out.status.success());
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(err.contains("OTHER"), "{err}");
    assert_eq!(
        sim.counters().series_open,
        series_before,
        "nothing subscribed"
    );
}

#[test]
fn publish_metrics_are_served() {
    use std::io::{BufRead, BufReader, Read, Write};
    let Some(server) = util::server_or_skip("publish_metrics") else {
        return;
    };
    let sim = Sim::start(SimConfig::default()).unwrap();
    let mut child = spawn(bin().args([
        "publish",
        SPECS[0],
        SPECS[1],
        "--nats",
        &server.url(),
        "--url",
        &sim.url(),
        "--duration",
        "5",
        "--metrics",
        "127.0.0.1:0",
    ]));
    let mut err = BufReader::new(child.stderr.take().unwrap());
    let mut line = String::new();
    let addr = loop {
        line.clear();
        assert!(err.read_line(&mut line).unwrap() > 0, "no metrics line");
        if let Some(rest) = line.trim().strip_prefix("tvdatafeed: metrics at http://") {
            break rest.trim_end_matches("/metrics").to_owned();
        }
    };
    // Scraped until bars have been published (the counters move as bars close).
    let scrape_text = || {
        let mut s = std::net::TcpStream::connect(&addr).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        write!(s, "GET /metrics HTTP/1.1\r\nHost: {addr}\r\n\r\n").unwrap();
        let mut all = String::new();
        s.read_to_string(&mut all).unwrap();
        all.split_once("\r\n\r\n").unwrap().1.to_owned()
    };
    let mut body = String::new();
    util::wait_for(Duration::from_secs(30), "bars published", || {
        body = scrape_text();
        body.lines()
            .find_map(|l| l.strip_prefix("tvdatafeed_nats_published_total "))
            .and_then(|v| v.trim().parse::<f64>().ok())
            .is_some_and(|v| v >= 2.0)
    });
    let body = body.as_str();
    let scrape = prometheus_parse::Scrape::parse(body.lines().map(|l| Ok(l.to_owned()))).unwrap();
    let value = |name: &str| {
        scrape
            .samples
            .iter()
            .find(|s| s.metric == name)
            .map(|s| match s.value {
                prometheus_parse::Value::Counter(v)
                | prometheus_parse::Value::Gauge(v)
                | prometheus_parse::Value::Untyped(v) => v,
                _ => -1.0,
            })
            .unwrap_or_else(|| panic!("no {name} in {body}"))
    };
    assert!(value("tvdatafeed_nats_published_total") >= 2.0, "{body}");
    for name in [
        "tvdatafeed_nats_duplicates_total",
        "tvdatafeed_nats_buffer_depth",
        "tvdatafeed_nats_buffer_full_total",
        "tvdatafeed_nats_reconnects_total",
        "tvdatafeed_reconnects_total",
    ] {
        assert!(value(name) >= 0.0, "{name}");
    }
    assert!(
        body.contains("tvdatafeed_nats_close_to_ack_seconds{quantile=\"0.99\"}"),
        "{body}"
    );
    let out = finish(child, Duration::from_secs(60));
    assert!(out.status.success());
}
