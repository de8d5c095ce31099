//! The command line's contract, which scripts depend on: `hist` output formats and errors,
//! `--url`/`TVDATAFEED_URL`, `--out`, `search`, `decode`, and `sim` serving a client.

use std::{
    io::{BufRead, BufReader, Read, Write},
    net::TcpListener,
    os::unix::fs::FileTypeExt,
    path::{Path, PathBuf},
    process::{Command, Output, Stdio},
    time::Duration,
};

use tvdatafeed::{
    Interval, Symbol,
    sim::{Sim, SimConfig},
};

fn bin() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_tvdatafeed"));
    c.env_remove("TVDATAFEED_URL")
        .env_remove("TV_AUTH_TOKEN")
        .env_remove("RUST_LOG");
    c
}

fn run(c: &mut Command) -> Output {
    c.output().expect("run tvdatafeed")
}

/// Runs a command that must exit by itself; kills it and fails after `limit` (a regression
/// that makes `sim` start instead of refusing would otherwise serve, and hang the test, forever).
fn run_bounded(c: &mut Command, limit: Duration) -> Output {
    let mut child = c
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run tvdatafeed");
    #[expect(
        clippy::disallowed_methods,
        reason = "a test's own deadline on a child process"
    )]
    let start = std::time::Instant::now();
    loop {
        if child.try_wait().expect("wait for tvdatafeed").is_some() {
            return child.wait_with_output().expect("collect the output");
        }
        if start.elapsed() > limit {
            let _ = child.kill();
            let o = child.wait_with_output().expect("collect the output");
            panic!(
                "still running after {limit:?}; stdout: {}; stderr: {}",
                stdout(&o),
                stderr(&o)
            );
        }
        // Polls the child: std offers no wait with a timeout on a process.
        std::thread::park_timeout(Duration::from_millis(20));
    }
}

fn stdout(o: &Output) -> String {
    String::from_utf8(o.stdout.clone()).unwrap()
}

fn stderr(o: &Output) -> String {
    String::from_utf8(o.stderr.clone()).unwrap()
}

#[test]
fn hist_csv_rows_are_exact_ascending_and_parse_back() {
    let sim = Sim::start(SimConfig::default().with_seed(5)).unwrap();
    let o = run(bin().args([
        "hist",
        "BINANCE:BTCUSDT",
        "1H",
        "--bars",
        "50",
        "--url",
        &sim.url(),
    ]));
    assert!(o.status.success(), "{}", stderr(&o));
    let text = stdout(&o);
    let mut lines = text.lines();
    assert_eq!(lines.next(), Some("time,open,high,low,close,volume"));
    let sym: Symbol = "BINANCE:BTCUSDT".parse().unwrap();
    let iv: Interval = "1H".parse().unwrap();
    let rows: Vec<&str> = lines.collect();
    assert_eq!(rows.len(), 50);
    let mut last = i64::MIN;
    for row in rows {
        let f: Vec<&str> = row.split(',').collect();
        assert_eq!(f.len(), 6, "{row}");
        let time: i64 = f[0].parse().unwrap();
        assert!(time > last, "ascending");
        last = time;
        let want = sim.expected_bar(&sym, iv, time);
        let num = |s: &str| s.parse::<f64>().unwrap();
        assert_eq!(
            (num(f[1]), num(f[2]), num(f[3]), num(f[4]), Some(num(f[5]))),
            (want.open, want.high, want.low, want.close, want.volume),
            "{row}"
        );
    }
    assert!(
        stderr(&o).is_empty(),
        "nothing on stderr when it is not a terminal"
    );
}

#[test]
fn hist_json_with_forming_bar_and_no_volume_for_an_index_from_the_env_url() {
    let sim = Sim::start(SimConfig::default()).unwrap();
    let o = run(bin().env("TVDATAFEED_URL", sim.url()).args([
        "hist",
        "SP:SPX",
        "1D",
        "--bars",
        "3",
        "--format",
        "json",
        "--include-forming",
    ]));
    assert!(o.status.success(), "{}", stderr(&o));
    let text = stdout(&o);
    let rows: Vec<serde_json::Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(rows.len(), 4, "3 closed + the forming bar");
    let sym: Symbol = "SP:SPX".parse().unwrap();
    let iv: Interval = "1D".parse().unwrap();
    for r in &rows[..3] {
        assert_eq!(r["symbol"], "SP:SPX");
        assert_eq!(r["interval"], "1D");
        assert!(r["volume"].is_null());
        let want = sim.expected_bar(&sym, iv, r["time"].as_i64().unwrap());
        assert_eq!(r["close"].as_f64().unwrap(), want.close);
        assert_eq!(r["open"].as_f64().unwrap(), want.open);
    }
    assert!(rows[3]["time"].as_i64() > rows[2]["time"].as_i64());
    // Only the forming bar is marked.
    for r in &rows[..3] {
        assert!(r.get("forming").is_none(), "{r}");
    }
    assert_eq!(rows[3]["forming"], true);
}

#[test]
fn hist_csv_marks_the_forming_row_in_a_forming_column() {
    let sim = Sim::start(SimConfig::default()).unwrap();
    let url = sim.url();
    let o = run(bin().args([
        "hist",
        "BINANCE:BTCUSDT",
        "1H",
        "--bars",
        "3",
        "--url",
        &url,
        "--include-forming",
    ]));
    assert!(o.status.success(), "{}", stderr(&o));
    let text = stdout(&o);
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines[0], "time,open,high,low,close,volume,forming");
    assert_eq!(lines.len(), 5, "header, 3 closed, the forming bar: {text}");
    for row in &lines[1..4] {
        assert_eq!(row.split(',').count(), 7, "{row}");
        assert!(row.ends_with(",false"), "{row}");
    }
    assert!(lines[4].ends_with(",true"), "{}", lines[4]);
    // Without the flag, the format is unchanged: six columns, no forming bar.
    let o = run(bin().args([
        "hist",
        "BINANCE:BTCUSDT",
        "1H",
        "--bars",
        "3",
        "--url",
        &url,
    ]));
    let text = stdout(&o);
    assert_eq!(text.lines().next(), Some("time,open,high,low,close,volume"));
    assert_eq!(text.lines().count(), 4);
}

#[test]
fn hist_errors_are_one_line_on_stderr_with_nothing_on_stdout() {
    let sim = Sim::start(SimConfig::default()).unwrap();
    for args in [
        vec!["hist", "BINANCE:INVALIDX", "1", "--url", &sim.url()],
        vec!["hist", "BINANCE:BTCUSDT", "XX", "--url", &sim.url()],
        vec!["hist", "BTCUSDT", "1", "--url", &sim.url()],
        vec![
            "hist",
            "BINANCE:BTCUSDT",
            "1",
            "--bars",
            "0",
            "--url",
            &sim.url(),
        ],
        vec![
            "hist",
            "BINANCE:BTCUSDT",
            "1",
            "--url",
            "http://not-a-websocket",
        ],
    ] {
        let o = run(bin().args(&args));
        assert!(!o.status.success(), "{args:?}");
        assert!(o.stdout.is_empty(), "{args:?}: {}", stdout(&o));
        let err = stderr(&o);
        assert_eq!(err.lines().count(), 1, "{args:?}: {err}");
        assert!(err.starts_with("tvdatafeed: "), "{err}");
    }
    let o = run(bin().args(["hist", "BINANCE:INVALIDX", "1", "--url", &sim.url()]));
    assert_eq!(
        stderr(&o),
        "tvdatafeed: BINANCE:INVALIDX 1: unknown symbol (invalid symbol)\n"
    );
}

#[test]
fn hist_out_writes_the_file_only_on_success() {
    let sim = Sim::start(SimConfig::default()).unwrap();
    let dir = std::env::temp_dir().join(format!("tvdatafeed-cli-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let good = dir.join("good.csv");
    let o = run(bin()
        .args([
            "hist",
            "BINANCE:ETHUSDT",
            "5",
            "--bars",
            "7",
            "--url",
            &sim.url(),
            "--out",
        ])
        .arg(&good));
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(o.stdout.is_empty());
    assert_eq!(std::fs::read_to_string(&good).unwrap().lines().count(), 8);
    let bad = dir.join("bad.csv");
    let o = run(bin()
        .args([
            "hist",
            "BINANCE:INVALIDX",
            "5",
            "--url",
            &sim.url(),
            "--out",
        ])
        .arg(&bad));
    assert!(!o.status.success());
    assert!(!bad.exists(), "no partial file on error");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn search_prints_symbols_from_the_search_endpoint() {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!(
        "http://{}/symbol_search/v3/",
        listener.local_addr().unwrap()
    );
    let server = std::thread::Builder::new()
        .name("mock-search".into())
        .spawn(move || {
            let (mut s, _) = listener.accept().unwrap();
            s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
            let mut head = Vec::new();
            let mut byte = [0u8; 1];
            while !head.ends_with(b"\r\n\r\n") && s.read(&mut byte).unwrap() == 1 {
                head.push(byte[0]);
            }
            let body = r#"{"symbols":[{"symbol":"<em>BTC</em>USDT","description":"Bitcoin, TetherUS","type":"spot","exchange":"BINANCE"}]}"#;
            write!(s, "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}", body.len()).unwrap();
            String::from_utf8(head).unwrap()
        })
        .unwrap();
    let o = run(bin()
        .env("TVDATAFEED_SEARCH_URL", &url)
        .args(["search", "btc"]));
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(
        stdout(&o),
        "symbol,exchange,ticker,type,description\nBINANCE:BTCUSDT,BINANCE,BTCUSDT,spot,\"Bitcoin, TetherUS\"\n"
    );
    let head = server.join().unwrap();
    assert!(
        head.starts_with("GET /symbol_search/v3/?text=btc&"),
        "{head}"
    );
}

#[test]
fn decode_prints_typed_messages_and_errors_per_line() {
    let mut child = bin()
        .arg("decode")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(b"~m~4~m~~h~7\n~m~45~m~{\"m\":\"protocol_error\",\"p\":[\"bad auth token\"]}\ngarbage\n")
        .unwrap();
    let o = child.wait_with_output().unwrap();
    assert!(o.status.success());
    assert_eq!(
        stdout(&o),
        "1: heartbeat 7\n2: ProtocolError { text: \"bad auth token\" }\n3: frame error: frame does not start with ~m~ (at byte 0)\n"
    );
}

#[test]
fn sim_serves_until_killed_and_prints_its_url_first() {
    let mut child = bin()
        .args(["sim", "--bind", "127.0.0.1:0", "--seed", "3"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut url = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut url)
        .unwrap();
    let url = url.trim().to_owned();
    assert!(
        url.starts_with("ws://127.0.0.1:")
            && url.ends_with("/socket.io/websocket?from=chart&type=chart")
    );
    let o = run(bin().args(["hist", "BINANCE:BTCUSDT", "1", "--bars", "5", "--url", &url]));
    child.kill().unwrap();
    let _ = child.wait();
    assert!(o.status.success(), "{}", stderr(&o));
    let sym: Symbol = "BINANCE:BTCUSDT".parse().unwrap();
    let market = tvdatafeed::sim::Market::new(3);
    let last = stdout(&o).lines().last().unwrap().to_owned();
    let time: i64 = last.split(',').next().unwrap().parse().unwrap();
    let close: f64 = last.split(',').nth(4).unwrap().parse().unwrap();
    assert_eq!(close, market.bar(&sym, "1".parse().unwrap(), time).close);
}

#[test]
fn sim_with_server_conditions_serves_thin_bars_late_through_a_relay() {
    let mut child = bin()
        .args([
            "sim",
            "--seed",
            "4",
            "--thin",
            "nyse:thin",
            "--thin-one-in",
            "3",
            "--service-ms",
            "100",
            "--tick-phase-ms",
            "20",
            "--tick-jitter-ms",
            "10",
            "--relay-ms",
            "250",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut url = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut url)
        .unwrap();
    let url = url.trim().to_owned();
    assert!(url.starts_with("ws://127.0.0.1:"), "{url}");
    #[expect(clippy::disallowed_methods, reason = "the test measures wall time")]
    let t = std::time::Instant::now();
    let o = run(bin().args(["hist", "NYSE:THIN", "1", "--bars", "6", "--url", &url]));
    let took = t.elapsed();
    child.kill().unwrap();
    let _ = child.wait();
    assert!(o.status.success(), "{}", stderr(&o));
    // Through the relay (500 ms a round trip: the upgrade's and the load's, at least) and two
    // requests served 100 ms each (the resolve, the series).
    assert!(took >= Duration::from_millis(1_200), "{took:?}");
    // Only bars with trades, as the market says for a thin symbol one in 3.
    let (sym, iv): (Symbol, Interval) = ("NYSE:THIN".parse().unwrap(), "1".parse().unwrap());
    let market = tvdatafeed::sim::Market::new(4);
    let times: Vec<i64> = stdout(&o)
        .lines()
        .skip(1)
        .map(|l| l.split(',').next().unwrap().parse().unwrap())
        .collect();
    assert_eq!(times.len(), 6, "{}", stdout(&o));
    assert!(times.iter().all(|t| market.has_trades(&sym, iv, *t, 3)));
    let traded = (times[0]..=times[5])
        .step_by(60)
        .filter(|t| market.has_trades(&sym, iv, *t, 3))
        .count();
    assert_eq!(traded, 6, "no traded bar left out: {times:?}");
    assert!(times[5] - times[0] > 5 * 60, "with gaps: {times:?}");
}

#[test]
fn sim_refuses_a_thin_symbol_without_an_exchange() {
    let o = run_bounded(
        bin().args(["sim", "--thin", "THIN"]),
        Duration::from_secs(20),
    );
    assert!(!o.status.success());
    assert!(o.stdout.is_empty(), "it started: {}", stdout(&o));
    assert!(stderr(&o).contains("--thin"), "{}", stderr(&o));
}

/// A fresh directory under the system temp dir, removed on drop.
struct TempDir(PathBuf);

impl TempDir {
    fn new(name: &str) -> Self {
        let dir =
            std::env::temp_dir().join(format!("tvdatafeed-cli-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        Self(dir)
    }

    fn join(&self, name: &str) -> PathBuf {
        self.0.join(name)
    }

    /// The names in the directory, sorted.
    fn names(&self) -> Vec<String> {
        let mut names: Vec<String> = std::fs::read_dir(&self.0)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        names
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// `hist BINANCE:ETHUSDT 5 --bars 7` against `sim`, written to `out`.
fn hist_out(sim: &Sim, out: &Path) -> Output {
    run(bin()
        .args([
            "hist",
            "BINANCE:ETHUSDT",
            "5",
            "--bars",
            "7",
            "--url",
            &sim.url(),
            "--out",
        ])
        .arg(out))
}

#[test]
fn hist_out_writes_through_a_symlink_and_keeps_the_link() {
    let sim = Sim::start(SimConfig::default()).unwrap();
    let dir = TempDir::new("symlink");
    let real = dir.join("real.csv");
    std::fs::write(&real, "old\n").unwrap();
    let link = dir.join("link.csv");
    std::os::unix::fs::symlink("real.csv", &link).unwrap();
    let o = hist_out(&sim, &link);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(
        std::fs::symlink_metadata(&link)
            .unwrap()
            .file_type()
            .is_symlink(),
        "the link was replaced"
    );
    assert_eq!(std::fs::read_to_string(&real).unwrap().lines().count(), 8);
    // A dangling link names the file to create.
    let dangling = dir.join("dangling.csv");
    std::os::unix::fs::symlink("new.csv", &dangling).unwrap();
    let o = hist_out(&sim, &dangling);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(
        std::fs::symlink_metadata(&dangling)
            .unwrap()
            .file_type()
            .is_symlink()
    );
    assert_eq!(
        std::fs::read_to_string(dir.join("new.csv"))
            .unwrap()
            .lines()
            .count(),
        8
    );
    assert_eq!(
        dir.names(),
        ["dangling.csv", "link.csv", "new.csv", "real.csv"]
    );
}

#[test]
fn hist_out_writes_into_a_fifo_for_its_reader() {
    let sim = Sim::start(SimConfig::default()).unwrap();
    let dir = TempDir::new("fifo");
    let fifo = dir.join("rows.fifo");
    let made = Command::new("mkfifo").arg(&fifo).status().unwrap();
    assert!(made.success(), "mkfifo");
    let (tx, rx) = std::sync::mpsc::channel();
    let reader = {
        let fifo = fifo.clone();
        std::thread::Builder::new()
            .name("fifo-reader".into())
            .spawn(move || {
                // Blocks until the writer opens the FIFO, then reads to its close.
                let _ = tx.send(std::fs::read_to_string(fifo).unwrap());
            })
            .unwrap()
    };
    let o = hist_out(&sim, &fifo);
    assert!(o.status.success(), "{}", stderr(&o));
    let got = match rx.recv_timeout(Duration::from_secs(20)) {
        Ok(got) => got,
        // Nobody wrote to the FIFO (it was replaced, and its reader waits on the old inode
        // forever): fail without joining the reader.
        Err(_) => panic!("the FIFO's reader got nothing"),
    };
    reader.join().unwrap();
    assert_eq!(got.lines().count(), 8, "{got}");
    assert!(got.starts_with("time,open,high,low,close,volume\n"));
    assert!(
        std::fs::symlink_metadata(&fifo)
            .unwrap()
            .file_type()
            .is_fifo(),
        "the FIFO was replaced"
    );
    assert_eq!(dir.names(), ["rows.fifo"]);
}

#[test]
fn hist_out_to_a_device_writes_through_and_keeps_the_device() {
    // A null device of our own in a temp dir (root can make one: CI and this machine run as
    // root), not /dev/null itself: a regression that replaces the device must not break the
    // machine's /dev/null.
    let dir = TempDir::new("device");
    let null = dir.join("null");
    let made = Command::new("mknod")
        .arg(&null)
        .args(["c", "1", "3"])
        .status()
        .is_ok_and(|s| s.success());
    if !made {
        let _ = writeln!(
            std::io::stderr(),
            "skipped: mknod needs root to make a device node"
        );
        return;
    }
    let sim = Sim::start(SimConfig::default()).unwrap();
    let o = hist_out(&sim, &null);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(o.stdout.is_empty());
    let meta = std::fs::symlink_metadata(&null).unwrap();
    assert!(
        meta.file_type().is_char_device(),
        "the device was replaced by a regular file"
    );
    // Through a symlink to it too.
    let link = dir.join("link");
    std::os::unix::fs::symlink("null", &link).unwrap();
    let o = hist_out(&sim, &link);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(
        std::fs::symlink_metadata(&null)
            .unwrap()
            .file_type()
            .is_char_device()
    );
    assert!(
        std::fs::symlink_metadata(&link)
            .unwrap()
            .file_type()
            .is_symlink()
    );
    assert_eq!(dir.names(), ["link", "null"]);
}

#[test]
fn hist_out_leaves_an_existing_tmp_sibling_alone_and_no_temporary_behind() {
    let sim = Sim::start(SimConfig::default()).unwrap();
    let dir = TempDir::new("sibling");
    let target = dir.join("bars.csv");
    // The names a fixed-suffix temporary would take.
    for sibling in ["bars.tmp-tvdatafeed", "bars.csv.tmp-tvdatafeed"] {
        std::fs::write(dir.join(sibling), "precious\n").unwrap();
    }
    std::fs::write(&target, "old\n").unwrap();
    let o = hist_out(&sim, &target);
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(std::fs::read_to_string(&target).unwrap().lines().count(), 8);
    for sibling in ["bars.tmp-tvdatafeed", "bars.csv.tmp-tvdatafeed"] {
        assert_eq!(
            std::fs::read_to_string(dir.join(sibling)).unwrap(),
            "precious\n",
            "{sibling} was touched"
        );
    }
    assert_eq!(
        dir.names(),
        ["bars.csv", "bars.csv.tmp-tvdatafeed", "bars.tmp-tvdatafeed"]
    );
    // A failed download leaves no temporary either.
    let o = run(bin()
        .args([
            "hist",
            "BINANCE:INVALIDX",
            "5",
            "--url",
            &sim.url(),
            "--out",
        ])
        .arg(&target));
    assert!(!o.status.success());
    assert_eq!(std::fs::read_to_string(&target).unwrap().lines().count(), 8);
    assert_eq!(
        dir.names(),
        ["bars.csv", "bars.csv.tmp-tvdatafeed", "bars.tmp-tvdatafeed"]
    );
}

#[test]
fn hist_out_that_cannot_be_written_fails_before_any_network_work() {
    let sim = Sim::start(SimConfig::default()).unwrap();
    let dir = TempDir::new("unwritable");
    let missing = dir.join("no-such-dir").join("bars.csv");
    let o = hist_out(&sim, &missing);
    assert!(!o.status.success());
    let err = stderr(&o);
    assert!(
        err.starts_with(&format!("tvdatafeed: {}: ", missing.display())),
        "the error names the path: {err}"
    );
    assert_eq!(err.lines().count(), 1, "{err}");
    // A directory is no file to write.
    let o = hist_out(&sim, &dir.0);
    assert!(!o.status.success());
    assert!(
        stderr(&o).contains(&dir.0.display().to_string()),
        "{}",
        stderr(&o)
    );
    assert_eq!(sim.counters().connections, 0, "a download started anyway");
    assert!(dir.names().is_empty());
}

#[test]
fn hist_out_dash_is_standard_output() {
    let sim = Sim::start(SimConfig::default()).unwrap();
    let dir = TempDir::new("dash");
    let o = run(bin().current_dir(&dir.0).args([
        "hist",
        "BINANCE:ETHUSDT",
        "5",
        "--bars",
        "7",
        "--url",
        &sim.url(),
        "--out",
        "-",
    ]));
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(stdout(&o).lines().count(), 8);
    assert!(dir.names().is_empty(), "wrote a file named -");
}

#[test]
fn an_empty_tvdatafeed_url_means_the_default_endpoint() {
    // The endpoint is read before `--out` is checked, and both before any network work: an
    // empty URL that were parsed would fail as an invalid endpoint; taken as the default, the
    // run goes on to the (unwritable) output and fails there, without a connection.
    let dir = TempDir::new("empty-url");
    let missing = dir.join("no-such-dir").join("bars.csv");
    let o = run(bin()
        .env("TVDATAFEED_URL", "")
        .env("TV_AUTH_TOKEN", "")
        .args(["hist", "BINANCE:ETHUSDT", "5", "--out"])
        .arg(&missing));
    assert!(!o.status.success());
    let err = stderr(&o);
    assert!(
        err.starts_with(&format!("tvdatafeed: {}: ", missing.display())),
        "the empty URL was not taken as the default: {err}"
    );
}

#[test]
fn hist_says_on_stderr_when_fewer_bars_came_back_than_asked() {
    let sim = Sim::start(SimConfig::default().with_history_depth_anonymous(100)).unwrap();
    let o = run(bin().args([
        "hist",
        "BINANCE:BTCUSDT",
        "1H",
        "--bars",
        "150",
        "--url",
        &sim.url(),
    ]));
    assert!(o.status.success(), "{}", stderr(&o));
    // The depth counts the forming bar too: 99 closed bars come back.
    let got = stdout(&o).lines().count() - 1;
    assert_eq!(got, 99);
    assert_eq!(
        stderr(&o),
        "tvdatafeed: BINANCE:BTCUSDT 60: 99 of 150 bars asked (history depth of this account or \
         symbol)\n"
    );
}

#[test]
fn hist_with_the_largest_timeout_means_no_practical_deadline() {
    let sim = Sim::start(SimConfig::default()).unwrap();
    let o = run(bin().args([
        "hist",
        "BINANCE:BTCUSDT",
        "1",
        "--bars",
        "5",
        "--url",
        &sim.url(),
        "--timeout-secs",
        "18446744073709551615",
    ]));
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(stdout(&o).lines().count(), 6);
}

#[test]
fn search_takes_a_timeout_and_a_silent_server_hits_it() {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!(
        "http://{}/symbol_search/v3/",
        listener.local_addr().unwrap()
    );
    // Accepts, reads nothing, answers nothing; holds the connection until the client leaves.
    let server = std::thread::Builder::new()
        .name("silent-search".into())
        .spawn(move || {
            let (mut s, _) = listener.accept().unwrap();
            s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
            let mut sink = Vec::new();
            let _ = s.read_to_end(&mut sink);
        })
        .unwrap();
    let o = run(bin().args(["search", "btc", "--url", &url, "--timeout-secs", "1"]));
    assert!(!o.status.success());
    assert_eq!(
        stderr(&o),
        "tvdatafeed: 127.0.0.1: timed out after 1 s (the https request)\n"
    );
    assert!(o.stdout.is_empty());
    server.join().unwrap();
    // And the largest value is accepted (capped), not an overflow.
    let o = run(bin().args([
        "search",
        "btc",
        "--url",
        "http://127.0.0.1:1/",
        "--timeout-secs",
        "18446744073709551615",
    ]));
    assert!(!o.status.success());
    assert!(!stderr(&o).contains("panicked"), "{}", stderr(&o));
}

#[test]
fn decode_with_the_largest_max_frame_len_decodes_normally() {
    let mut child = bin()
        .args(["decode", "--max-frame-len", "18446744073709551615"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(b"~m~4~m~~h~7\n")
        .unwrap();
    let o = child.wait_with_output().unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(stdout(&o), "1: heartbeat 7\n");
}

#[test]
fn sim_refuses_an_absurd_heartbeat_period_with_a_clear_error() {
    let o = run_bounded(
        bin().args(["sim", "--heartbeat-secs", "18446744073709551615"]),
        Duration::from_secs(20),
    );
    assert!(!o.status.success());
    assert!(o.stdout.is_empty(), "it started: {}", stdout(&o));
    let err = stderr(&o);
    assert!(
        err.contains("--heartbeat-secs") && !err.contains("panicked"),
        "{err}"
    );
}

#[test]
fn a_simulator_with_a_heartbeat_too_long_to_count_keeps_its_clients() {
    // The library side of the same arithmetic: `Duration::MAX` means "never", not an instant
    // that wrapped into the past (which closed every client at once).
    let sim = Sim::start(
        SimConfig::default()
            .with_heartbeat_interval(Duration::MAX)
            .with_heartbeat_timeout(Duration::MAX),
    )
    .unwrap();
    let o = run(bin().args([
        "hist",
        "BINANCE:BTCUSDT",
        "1",
        "--bars",
        "5",
        "--url",
        &sim.url(),
    ]));
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(stdout(&o).lines().count(), 6);
}

#[test]
fn sim_needs_allow_remote_for_a_non_loopback_bind() {
    let o = run_bounded(
        bin().args(["sim", "--bind", "0.0.0.0:0"]),
        Duration::from_secs(20),
    );
    assert!(!o.status.success());
    assert!(o.stdout.is_empty(), "it started: {}", stdout(&o));
    assert_eq!(
        stderr(&o),
        "tvdatafeed: --bind 0.0.0.0:0 is not a loopback address: the simulator would serve \
         other hosts; pass --allow-remote to mean it\n"
    );
    let mut child = bin()
        .args(["sim", "--bind", "0.0.0.0:0", "--allow-remote"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut url = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut url)
        .unwrap();
    child.kill().unwrap();
    let _ = child.wait();
    assert!(url.starts_with("ws://"), "{url}");
}

#[test]
fn sim_cert_out_without_tls_is_an_error() {
    let dir = TempDir::new("cert-out");
    let o = run_bounded(
        bin().args(["sim", "--cert-out"]).arg(dir.join("root.pem")),
        Duration::from_secs(20),
    );
    assert!(!o.status.success());
    assert!(o.stdout.is_empty(), "it started: {}", stdout(&o));
    assert!(stderr(&o).contains("--tls"), "{}", stderr(&o));
    assert!(dir.names().is_empty());
}

#[test]
fn a_closed_standard_output_is_a_failure_without_a_panic() {
    let sim = Sim::start(SimConfig::default()).unwrap();
    let mut child = bin()
        .args([
            "hist",
            "BINANCE:BTCUSDT",
            "1",
            "--bars",
            "5",
            "--url",
            &sim.url(),
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Close the reading end before the rows are written (they come after a download).
    drop(child.stdout.take());
    let o = child.wait_with_output().unwrap();
    assert!(!o.status.success(), "a lost output exited 0");
    assert_eq!(o.status.code(), Some(1));
    let err = stderr(&o);
    assert!(
        err.starts_with("tvdatafeed: standard output: ") && !err.contains("panicked"),
        "{err}"
    );
    // The same for decode, whose rows stream.
    let mut child = bin()
        .arg("decode")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    drop(child.stdout.take());
    child
        .stdin
        .take()
        .unwrap()
        .write_all(b"~m~4~m~~h~7\n")
        .unwrap();
    let o = child.wait_with_output().unwrap();
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    assert!(!stderr(&o).contains("panicked"), "{}", stderr(&o));
}

// ---------------------------------------------------------------------------------- live

/// Parses `live --format json` lines: (symbol, bar).
fn live_rows(out: &str) -> Vec<(String, tvdatafeed::Bar)> {
    out.lines()
        .map(|l| {
            let v: serde_json::Value =
                serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}"));
            let bar = tvdatafeed::Bar {
                time: v["time"].as_i64().unwrap(),
                open: v["open"].as_f64().unwrap(),
                high: v["high"].as_f64().unwrap(),
                low: v["low"].as_f64().unwrap(),
                close: v["close"].as_f64().unwrap(),
                volume: v["volume"].as_f64(),
            };
            (v["symbol"].as_str().unwrap().to_owned(), bar)
        })
        .collect()
}

#[test]
fn live_prints_each_closed_bar_once_in_order_with_the_markets_values() {
    let sim =
        Sim::start(SimConfig::default().with_update_interval(Duration::from_millis(100))).unwrap();
    let o = run_bounded(
        bin().args([
            "live",
            "BINANCE:BTCUSDT@1S",
            "SP:SPX@1S",
            "--format",
            "json",
            "--duration",
            "4",
            "--url",
            &sim.url(),
        ]),
        Duration::from_secs(30),
    );
    assert!(o.status.success(), "{}", stderr(&o));
    let rows = live_rows(&stdout(&o));
    let second: Interval = "1S".parse().unwrap();
    for name in ["BINANCE:BTCUSDT", "SP:SPX"] {
        let symbol: Symbol = name.parse().unwrap();
        let bars: Vec<_> = rows
            .iter()
            .filter(|(s, _)| s == name)
            .map(|(_, b)| *b)
            .collect();
        assert!(bars.len() >= 2, "{name}: {bars:?}");
        for w in bars.windows(2) {
            assert_eq!(
                second.next_bar_open(w[0].time),
                w[1].time,
                "{name}: once, in order"
            );
        }
        for b in &bars {
            assert_eq!(*b, sim.expected_bar(&symbol, second, b.time));
        }
    }
    assert!(
        rows.iter().any(|(_, b)| b.volume.is_none()),
        "SPX has no volume: null"
    );
}

#[test]
fn live_refuses_an_unknown_symbol_before_printing_anything() {
    let sim = Sim::start(SimConfig::default()).unwrap();
    let o = run_bounded(
        bin().args([
            "live",
            "BINANCE:BTCUSDT@1S",
            "BINANCE:INVALIDX@1S",
            "--duration",
            "30",
            "--url",
            &sim.url(),
        ]),
        Duration::from_secs(30),
    );
    assert!(!o.status.success());
    assert!(o.stdout.is_empty(), "{}", stdout(&o));
    assert_eq!(
        stderr(&o),
        "tvdatafeed: BINANCE:INVALIDX 1S: unknown symbol (invalid symbol)\n"
    );
    let o = run_bounded(bin().args(["live", "BTCUSDT-1S"]), Duration::from_secs(10));
    assert!(!o.status.success());
    assert!(
        stderr(&o).contains("EXCHANGE:TICKER@INTERVAL"),
        "{}",
        stderr(&o)
    );
}

#[test]
fn live_survives_a_server_close_and_a_stall_with_its_output_exactly_once_and_contiguous() {
    use tvdatafeed::sim::{Fault, FaultKind, Target, Trigger};
    let sim =
        Sim::start(SimConfig::default().with_update_interval(Duration::from_millis(100))).unwrap();
    let mut child = bin()
        .args([
            "live",
            "BINANCE:BTCUSDT@1S",
            "--format",
            "json",
            "--duration",
            "12",
            "--stall-secs",
            "2",
            "--url",
            &sim.url(),
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    assert!(sim.wait_connections(1, Duration::from_secs(10)));
    // Close the connection after 2 s, then stall the next one once it has streamed a while
    // (silence: no message, no heartbeat), until the client gives up on it.
    sim.inject(Fault::now(FaultKind::CloseClean).when(Trigger::After(Duration::from_secs(2))));
    sim.inject(
        Fault::now(FaultKind::Stall(None))
            .when(Trigger::AfterMessages(20))
            .on(Target::Next),
    );
    let o = {
        let deadline = Duration::from_secs(40);
        let mut waited = Duration::ZERO;
        loop {
            if child.try_wait().unwrap().is_some() {
                break child.wait_with_output().unwrap();
            }
            assert!(waited < deadline, "live did not end");
            std::thread::park_timeout(Duration::from_millis(50));
            waited += Duration::from_millis(50);
        }
    };
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(
        sim.counters().connections >= 3,
        "it reconnected after the close and after the stall"
    );
    let err = stderr(&o);
    assert!(
        err.matches("disconnected").count() >= 2 && err.matches("reconnected").count() >= 2,
        "{err}"
    );
    assert!(err.contains("timed out"), "the stall is named: {err}");
    let rows = live_rows(&stdout(&o));
    let second: Interval = "1S".parse().unwrap();
    let symbol: Symbol = "BINANCE:BTCUSDT".parse().unwrap();
    assert!(rows.len() >= 4, "{rows:?}");
    for w in rows.windows(2) {
        assert_eq!(
            second.next_bar_open(w[0].1.time),
            w[1].1.time,
            "exactly once, contiguous"
        );
    }
    for (_, b) in &rows {
        assert_eq!(*b, sim.expected_bar(&symbol, second, b.time));
    }
}

/// Issue 18, item 1, as it was reported (`live ... --updates | (sleep 25; cat)`): a reader
/// that stops reading for a while behind updates every 2 ms. The pipe fills at once and the
/// consumers block on it; updates may then be dropped (and it says so on stderr), closed bars
/// never: each one comes out once, in order, with the market's values, and the run succeeds.
#[test]
fn live_behind_a_reader_that_stops_reading_keeps_every_closed_bar() {
    let sim =
        Sim::start(SimConfig::default().with_update_interval(Duration::from_millis(2))).unwrap();
    let names = ["BINANCE:BTCUSDT", "BINANCE:ETHUSDT", "SP:SPX"];
    let mut child = bin()
        .arg("live")
        .args(names.map(|n| format!("{n}@1S")))
        .args(["--updates", "--format", "json", "--duration", "16"])
        .args(["--url", &sim.url()])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut err_pipe = child.stderr.take().unwrap();
    let err_reader = std::thread::Builder::new()
        .name("stderr-reader".into())
        .spawn(move || {
            let mut s = String::new();
            let _ = err_pipe.read_to_string(&mut s);
            s
        })
        .unwrap();
    // The process's end, as an event (a thread blocked in `wait`).
    let (ended_tx, ended) = std::sync::mpsc::channel();
    // The reader's stall is the fault under test, so it is a fixed time: nobody reads stdout
    // for 8 s (the pipe is full within half a second of it). A timed wait on the end of the
    // process: the run lasts 16 s, so it cannot end during the stall.
    let mut out_pipe = child.stdout.take().unwrap();
    let waiter = std::thread::Builder::new()
        .name("child-waiter".into())
        .spawn(move || {
            let status = child.wait();
            let _ = ended_tx.send(());
            status
        })
        .unwrap();
    assert!(
        ended.recv_timeout(Duration::from_secs(8)).is_err(),
        "live ended during the reader's stall"
    );
    let out_reader = std::thread::Builder::new()
        .name("stdout-reader".into())
        .spawn(move || {
            let mut s = String::new();
            let _ = out_pipe.read_to_string(&mut s);
            s
        })
        .unwrap();
    ended
        .recv_timeout(Duration::from_secs(60))
        .expect("live did not end within 60 s of the stall");
    let status = waiter.join().unwrap().unwrap();
    let out = out_reader.join().unwrap();
    let err = err_reader.join().unwrap();
    assert!(status.success(), "{status}: {err}");
    assert!(
        err.contains("updates dropped (closed bars are kept)"),
        "the stalled reader made the engine drop updates: {err}"
    );
    assert!(!err.contains("closed bars lost"), "{err}");
    let second: Interval = "1S".parse().unwrap();
    for name in names {
        let symbol: Symbol = name.parse().unwrap();
        let mut last_closed: Option<i64> = None;
        let mut closed = 0;
        for line in out.lines() {
            let v: serde_json::Value =
                serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}: {line}"));
            if v["symbol"] != name {
                continue;
            }
            let time = v["time"].as_i64().unwrap();
            if v["forming"] == true {
                assert!(
                    last_closed.is_none_or(|l| time > l),
                    "{name}: an update of bar {time} after its close"
                );
                continue;
            }
            if let Some(l) = last_closed {
                assert_eq!(
                    second.next_bar_open(l),
                    time,
                    "{name}: exactly once, in order"
                );
            }
            let bar = live_rows(line).remove(0).1;
            assert_eq!(
                bar,
                sim.expected_bar(&symbol, second, time),
                "{name} bar {time}"
            );
            last_closed = Some(time);
            closed += 1;
        }
        assert!(closed >= 12, "{name}: {closed} closed bars in 16 s");
    }
}

#[test]
fn hist_of_several_symbols_shares_one_connection_with_a_symbol_column_in_the_order_given() {
    let sim = Sim::start(SimConfig::default().with_seed(9)).unwrap();
    let names = ["NYSE:IBM", "BINANCE:BTCUSDT", "BINANCE:ETHUSDT"];
    let o = run(bin()
        .args(["hist"])
        .args(names)
        .args(["1H", "--bars", "40", "--url", &sim.url()]));
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(stderr(&o).is_empty(), "{}", stderr(&o));
    let text = stdout(&o);
    let mut lines = text.lines();
    assert_eq!(lines.next(), Some("symbol,time,open,high,low,close,volume"));
    let iv: Interval = "1H".parse().unwrap();
    let rows: Vec<Vec<&str>> = lines.map(|l| l.split(',').collect()).collect();
    assert_eq!(rows.len(), 3 * 40);
    for (k, name) in names.iter().enumerate() {
        let sym: Symbol = name.parse().unwrap();
        let mine = &rows[k * 40..(k + 1) * 40];
        let mut last = i64::MIN;
        for f in mine {
            assert_eq!(f.len(), 7);
            assert_eq!(f[0], *name, "grouped in the order given");
            let time: i64 = f[1].parse().unwrap();
            assert!(time > last, "ascending");
            last = time;
            let want = sim.expected_bar(&sym, iv, time);
            assert_eq!(f[5].parse::<f64>().unwrap(), want.close, "{f:?}");
        }
    }
    assert_eq!(sim.counters().connections, 1, "one connection for all");
}

#[test]
fn hist_symbols_file_failures_are_one_stderr_line_each_and_the_rest_is_written() {
    let sim = Sim::start(SimConfig::default()).unwrap();
    let dir = TempDir::new("symbols-file");
    let list = dir.join("symbols.txt");
    std::fs::write(
        &list,
        "# a watchlist\nBINANCE:BTCUSDT\n\nBINANCE:INVALIDX\n  ECONOMICS:USGDP  \nBINANCE:BTCUSDT\n",
    )
    .unwrap();
    let o = run(bin().args([
        "hist",
        "SP:SPX",
        "1D",
        "--bars",
        "10",
        "--symbols-file",
        list.to_str().unwrap(),
        "--format",
        "json",
        "--url",
        &sim.url(),
    ]));
    assert!(!o.status.success(), "a failed symbol fails the command");
    let err = stderr(&o);
    let lines: Vec<&str> = err.lines().collect();
    assert_eq!(lines.len(), 3, "{err}");
    assert!(
        lines[0].contains("BINANCE:INVALIDX") && lines[0].contains("unknown symbol"),
        "{err}"
    );
    assert!(lines[1].contains("ECONOMICS:USGDP"), "{err}");
    assert_eq!(lines[2], "tvdatafeed: 2 of 4 symbols failed");
    // The others are written, positional first, then the file's, a repeat once.
    let out = stdout(&o);
    let symbols: Vec<String> = out
        .lines()
        .map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).unwrap();
            v["symbol"].as_str().unwrap().to_owned()
        })
        .collect();
    assert_eq!(symbols.len(), 20, "{out}");
    assert!(symbols[..10].iter().all(|s| s == "SP:SPX"));
    assert!(symbols[10..].iter().all(|s| s == "BINANCE:BTCUSDT"));
}

#[test]
fn hist_bad_symbols_file_line_is_named_before_any_network_work() {
    let sim = Sim::start(SimConfig::default()).unwrap();
    let dir = TempDir::new("bad-symbols-file");
    let list = dir.join("symbols.txt");
    std::fs::write(&list, "BINANCE:BTCUSDT\n# fine\nnot a symbol\n").unwrap();
    let o = run(bin().args([
        "hist",
        "1H",
        "--symbols-file",
        list.to_str().unwrap(),
        "--url",
        &sim.url(),
    ]));
    assert!(!o.status.success());
    let err = stderr(&o);
    assert!(err.contains("symbols.txt:3:"), "{err}");
    assert!(o.stdout.is_empty());
    assert_eq!(sim.counters().connections, 0, "nothing downloaded");
    // A forgotten interval says which argument it wanted.
    let o = run(bin().args(["hist", "BINANCE:BTCUSDT", "--url", &sim.url()]));
    assert!(!o.status.success());
    assert!(
        stderr(&o).contains("the last argument is the interval"),
        "{}",
        stderr(&o)
    );
    // No symbol at all.
    let o = run(bin().args(["hist", "1H", "--url", &sim.url()]));
    assert!(stderr(&o).contains("no symbol"), "{}", stderr(&o));
}

// ---------------------------------------------------------------------------------- demo

/// The number in `line` right after `before` (e.g. "closed bars: 12 received" → 12).
fn number_after(text: &str, before: &str) -> u64 {
    let at = text
        .find(before)
        .unwrap_or_else(|| panic!("{before:?} not in: {text}"));
    text[at + before.len()..]
        .split(|c: char| !c.is_ascii_digit())
        .next()
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no number after {before:?} in: {text}"))
}

#[test]
fn demo_checks_every_closed_bar_against_the_ground_truth_and_prints_the_latency_summary() {
    let o = run_bounded(
        bin().args(["demo", "--duration", "3", "--seises", "5"]),
        Duration::from_secs(60),
    );
    let out = stdout(&o);
    assert!(o.status.success(), "stdout: {out}\nstderr: {}", stderr(&o));
    // Not a terminal: plain lines, no cursor movement.
    assert!(!out.contains('\x1b'), "{out}");
    let received = number_after(&out, "closed bars: ");
    assert!(received >= 5, "five seises of 1-second bars for 3 s: {out}");
    assert_eq!(
        number_after(
            &out,
            &format!("{received} checked against the simulator's ground truth: ")
        ),
        0,
        "mismatches: {out}"
    );
    assert!(
        out.contains(" 0 mismatches, 0 missing, 0 repeated"),
        "{out}"
    );
    // One plain line per closed bar (five seises are all shown), each checked.
    let lines = out.lines().filter(|l| l.contains(" 1S ok ")).count();
    assert_eq!(lines as u64, received, "{out}");
    assert!(!out.contains("MISMATCH"), "{out}");
    for row in ["  bar close → callback ", "  socket → callback "] {
        let line = out
            .lines()
            .find(|l| l.starts_with(row))
            .unwrap_or_else(|| panic!("no {row:?} line: {out}"));
        assert_eq!(
            line.split_whitespace()
                .last()
                .and_then(|n| n.parse::<u64>().ok()),
            Some(received),
            "every close measured: {line}"
        );
    }
    assert!(
        out.contains("engine stats (LiveFeed::stats, built in)"),
        "{out}"
    );
}

#[test]
fn demo_refuses_more_than_a_thousand_seises() {
    let o = run_bounded(
        bin().args(["demo", "--seises", "1001"]),
        Duration::from_secs(10),
    );
    assert!(!o.status.success());
    assert!(stdout(&o).is_empty(), "{}", stdout(&o));
    assert!(
        stderr(&o).contains("1001 is not in 1..=1000"),
        "{}",
        stderr(&o)
    );
}

/// Waits for `child` to end, killing it and failing after `limit`.
fn wait_bounded(mut child: std::process::Child, limit: Duration) -> Output {
    let mut waited = Duration::ZERO;
    loop {
        if child.try_wait().unwrap().is_some() {
            return child.wait_with_output().unwrap();
        }
        if waited > limit {
            let _ = child.kill();
            let o = child.wait_with_output().unwrap();
            panic!("still running after {limit:?}; stderr: {}", stderr(&o));
        }
        std::thread::park_timeout(Duration::from_millis(50));
        waited += Duration::from_millis(50);
    }
}

#[test]
fn live_names_every_refused_spec_and_the_spec_a_bad_interval_came_from() {
    let sim = Sim::start(SimConfig::default()).unwrap();
    // Malformed specs: each named, before connecting.
    let o = run_bounded(
        bin().args(["live", "BINANCE:A@1X", "BINANCE:BTCUSDT@1S", "NOEXCHANGE@1"]),
        Duration::from_secs(10),
    );
    assert_eq!(o.status.code(), Some(1));
    assert!(o.stdout.is_empty(), "{}", stdout(&o));
    assert_eq!(
        stderr(&o),
        "tvdatafeed: BINANCE:A@1X: invalid interval \"1X\"\n\
         tvdatafeed: NOEXCHANGE@1: symbol \"NOEXCHANGE\" is not of the form EXCHANGE:TICKER\n"
    );
    // Refused by the server: every one named, nothing printed.
    let o = run_bounded(
        bin().args([
            "live",
            "BINANCE:INVALIDA@1S",
            "BINANCE:BTCUSDT@1S",
            "BINANCE:INVALIDB@1S",
            "--duration",
            "30",
            "--url",
            &sim.url(),
        ]),
        Duration::from_secs(30),
    );
    assert_eq!(o.status.code(), Some(1));
    assert!(o.stdout.is_empty(), "{}", stdout(&o));
    assert_eq!(
        stderr(&o),
        "tvdatafeed: BINANCE:INVALIDA 1S: unknown symbol (invalid symbol)\n\
         tvdatafeed: BINANCE:INVALIDB 1S: unknown symbol (invalid symbol)\n"
    );
}

#[test]
fn live_refuses_duration_0_and_a_closed_stdout_before_connecting() {
    // Nobody listens there: a refusal must come before any connection attempt.
    let url = "ws://127.0.0.1:1/socket.io/websocket";
    let o = run_bounded(
        bin().args([
            "live",
            "BINANCE:BTCUSDT@1S",
            "--duration",
            "0",
            "--url",
            url,
        ]),
        Duration::from_secs(10),
    );
    assert_eq!(o.status.code(), Some(1));
    let err = stderr(&o);
    assert!(
        err.starts_with("tvdatafeed: --duration 0 ") && err.lines().count() == 1,
        "{err}"
    );
    // `>&-`: the runtime puts /dev/null there; rows would vanish with exit 0.
    let sim = Sim::start(SimConfig::default()).unwrap();
    for command in [
        format!("live BINANCE:BTCUSDT@1S --duration 2 --url '{}'", sim.url()),
        format!("hist BINANCE:BTCUSDT 1 --bars 2 --url '{}'", sim.url()),
    ] {
        let o = run_bounded(
            Command::new("sh").args([
                "-c",
                &format!("exec '{}' {command} >&-", env!("CARGO_BIN_EXE_tvdatafeed")),
            ]),
            Duration::from_secs(20),
        );
        assert_eq!(o.status.code(), Some(1), "{command}: {}", stderr(&o));
        assert!(
            stderr(&o).starts_with("tvdatafeed: standard output: closed"),
            "{command}: {}",
            stderr(&o)
        );
    }
    // A chosen /dev/null is not closed.
    let o = run_bounded(
        Command::new("sh").args([
            "-c",
            &format!(
                "exec '{}' hist BINANCE:BTCUSDT 1 --bars 2 --url '{}' >/dev/null",
                env!("CARGO_BIN_EXE_tvdatafeed"),
                sim.url()
            ),
        ]),
        Duration::from_secs(20),
    );
    assert!(o.status.success(), "{}", stderr(&o));
}

#[test]
fn live_streams_a_repeated_seis_once_with_one_note_and_warns_of_a_short_stall() {
    let sim =
        Sim::start(SimConfig::default().with_update_interval(Duration::from_millis(100))).unwrap();
    let o = run_bounded(
        bin().args([
            "live",
            "BINANCE:BTCUSDT@1S",
            "BINANCE:BTCUSDT@1s",
            "SP:SPX@60",
            "SP:SPX@1H",
            "--format",
            "json",
            "--duration",
            "4",
            "--stall-secs",
            "5",
            "--url",
            &sim.url(),
        ]),
        Duration::from_secs(30),
    );
    assert!(o.status.success(), "{}", stderr(&o));
    let err = stderr(&o);
    assert_eq!(
        err.lines().next(),
        Some(
            "tvdatafeed: 2 repeated specs streamed once: BINANCE:BTCUSDT@1s = BINANCE:BTCUSDT@1S, \
             SP:SPX@1H = SP:SPX@60"
        ),
        "{err}"
    );
    assert!(
        err.lines()
            .nth(1)
            .is_some_and(|l| l.starts_with("tvdatafeed: warning: --stall-secs 5 is under 20 s")),
        "{err}"
    );
    assert_eq!(err.lines().count(), 2, "{err}");
    let rows = live_rows(&stdout(&o));
    assert!(rows.len() >= 2, "{rows:?}");
    let second: Interval = "1S".parse().unwrap();
    for w in rows.windows(2) {
        assert_eq!(second.next_bar_open(w[0].1.time), w[1].1.time, "once each");
    }
}

#[test]
fn live_says_one_line_per_outage_for_all_its_seises_and_fails_ending_during_one() {
    use tvdatafeed::sim::{Fault, FaultKind, Trigger};
    let sim =
        Sim::start(SimConfig::default().with_update_interval(Duration::from_millis(100))).unwrap();
    let specs = [
        "BINANCE:BTCUSDT@1S",
        "BINANCE:ETHUSDT@1S",
        "NYSE:IBM@1S",
        "SP:SPX@1S",
        "FX:EURUSD@1S",
    ];
    let child = bin()
        .arg("live")
        .args(specs)
        .args(["--format", "json", "--duration", "8", "--url", &sim.url()])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    assert!(sim.wait_connections(1, Duration::from_secs(10)));
    sim.inject(Fault::now(FaultKind::CloseClean).when(Trigger::After(Duration::from_secs(2))));
    let o = wait_bounded(child, Duration::from_secs(40));
    assert!(o.status.success(), "{}", stderr(&o));
    let err = stderr(&o);
    let lines: Vec<&str> = err.lines().collect();
    assert_eq!(lines.len(), 2, "one line per event, not per seis: {err}");
    assert!(
        lines[0].starts_with("tvdatafeed: disconnected from 127.0.0.1: ")
            && lines[0].ends_with("; 5 seises waiting"),
        "{err}"
    );
    assert!(
        lines[1].starts_with("tvdatafeed: reconnected to 127.0.0.1 after ")
            && lines[1].contains(": 5 seises back, ")
            && lines[1].ends_with(" bars filled in"),
        "{err}"
    );
    // The server goes away for longer than the run: the end is an error naming the seises.
    let sim =
        Sim::start(SimConfig::default().with_update_interval(Duration::from_millis(100))).unwrap();
    let child = bin()
        .args([
            "live",
            "BINANCE:BTCUSDT@1S",
            "NYSE:IBM@1S",
            "--duration",
            "5",
            "--url",
            &sim.url(),
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut child = child;
    // Once a bar is out (every seis subscribed), the server goes (a restart fires at once).
    first_rows_then_drain(&mut child, 2);
    sim.inject(Fault::now(FaultKind::Restart(Duration::from_secs(60))));
    let o = wait_bounded(child, Duration::from_secs(40));
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    let err = stderr(&o);
    let last = err.lines().last().unwrap_or_default();
    assert!(
        last.starts_with("tvdatafeed: ended while disconnected from 127.0.0.1")
            && last.contains("2 of 2 seises not reconnected")
            && last.contains("BINANCE:BTCUSDT 1S, NYSE:IBM 1S"),
        "{err}"
    );
    assert_eq!(err.matches("disconnected from").count(), 2, "{err}");
}

#[test]
fn a_timeout_names_the_host_and_the_symbol_in_human_units() {
    // Accepts and never answers: the upgrade times out.
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!(
        "ws://{}/socket.io/websocket",
        listener.local_addr().unwrap()
    );
    let o = run_bounded(
        bin().args([
            "hist",
            "BINANCE:BTCUSDT",
            "1",
            "--timeout-secs",
            "1",
            "--url",
            &url,
        ]),
        Duration::from_secs(20),
    );
    drop(listener);
    assert_eq!(o.status.code(), Some(1));
    assert_eq!(
        stderr(&o),
        "tvdatafeed: BINANCE:BTCUSDT 1 from 127.0.0.1: timed out after 1 s (the websocket upgrade)\n"
    );
}

/// Waits for `n` lines on `child`'s stdout (the header and a row: everything subscribed), then
/// drains the rest on a thread so that the child never blocks on a full pipe.
fn first_rows_then_drain(child: &mut std::process::Child, n: usize) {
    let mut rows = BufReader::new(child.stdout.take().unwrap());
    let mut line = String::new();
    for _ in 0..n {
        line.clear();
        assert!(rows.read_line(&mut line).unwrap() > 0, "no row");
    }
    std::thread::Builder::new()
        .name("test-drain-rows".into())
        .spawn(move || std::io::copy(&mut rows, &mut std::io::sink()))
        .unwrap();
}

/// Sends SIGINT to `child` (with `kill`, as a terminal's Ctrl-C would signal it).
fn interrupt(child: &std::process::Child) {
    let ok = Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()
        .unwrap()
        .success();
    assert!(ok, "kill -INT");
}

/// SIGINT to `child` after `after`; returns how long it took to exit, and its output.
fn interrupted(mut child: std::process::Child, after: Duration) -> (Duration, Output) {
    std::thread::park_timeout(after);
    // The child must still be waiting (the phase under test), not done.
    assert!(child.try_wait().unwrap().is_none(), "ended before Ctrl-C");
    #[expect(clippy::disallowed_methods, reason = "the test measures the exit")]
    let t0 = std::time::Instant::now();
    interrupt(&child);
    let o = wait_bounded(child, Duration::from_secs(30));
    (t0.elapsed(), o)
}

#[test]
fn live_ends_at_ctrl_c_while_connecting_to_a_silent_server() {
    // Accepts and never answers: `build` would wait its 10 s connect timeout.
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!(
        "ws://{}/socket.io/websocket",
        listener.local_addr().unwrap()
    );
    let child = bin()
        .args(["live", "BINANCE:BTCUSDT@1S", "--url", &url])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let (took, o) = interrupted(child, Duration::from_millis(700));
    // The contract is 200 ms; the bound leaves room for a loaded machine, far under the 10 s
    // the connect would wait.
    assert!(
        took < Duration::from_secs(2),
        "exited {took:?} after Ctrl-C"
    );
    assert_eq!(o.status.code(), Some(130), "{}", stderr(&o));
    assert!(o.stdout.is_empty(), "{}", stdout(&o));
    assert!(stderr(&o).contains("interrupted"), "{}", stderr(&o));
    drop(listener);
}

#[test]
fn live_ends_at_ctrl_c_while_subscribing_to_a_server_that_does_not_answer() {
    // Upgrades, then serves each request after 60 s: `new_seis` would wait its 10 s.
    let sim = Sim::start(SimConfig::default().with_request_service_time(Duration::from_secs(60)))
        .unwrap();
    let child = bin()
        .args(["live", "BINANCE:BTCUSDT@1S", "--url", &sim.url()])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    assert!(sim.wait_connections(1, Duration::from_secs(10)));
    let (took, o) = interrupted(child, Duration::from_millis(500));
    assert!(
        took < Duration::from_secs(2),
        "exited {took:?} after Ctrl-C"
    );
    assert_eq!(o.status.code(), Some(130), "{}", stderr(&o));
    assert!(o.stdout.is_empty(), "{}", stdout(&o));
}

#[test]
fn live_tells_each_failed_reconnect_attempt_and_gives_up_at_max_outage() {
    use tvdatafeed::sim::{Fault, FaultKind};
    let sim =
        Sim::start(SimConfig::default().with_update_interval(Duration::from_millis(100))).unwrap();
    let mut child = bin()
        .args([
            "live",
            "BINANCE:BTCUSDT@1S",
            "--max-outage-secs",
            "4",
            "--url",
            &sim.url(),
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    first_rows_then_drain(&mut child, 2);
    // The server refuses connections for a minute: the engine retries (from 250 ms, doubling),
    // and gives up at 4 s.
    sim.inject(Fault::now(FaultKind::Restart(Duration::from_secs(60))));
    let o = wait_bounded(child, Duration::from_secs(30));
    let err = stderr(&o);
    assert_eq!(o.status.code(), Some(1), "{err}");
    let attempts: Vec<&str> = err
        .lines()
        .filter(|l| l.starts_with("tvdatafeed: reconnect attempt "))
        .collect();
    assert!(attempts.len() >= 2, "a line per failed attempt: {err}");
    // At most one a second (the run lasts about 4 s after the drop), plus the final one.
    assert!(attempts.len() <= 7, "rate-limited: {err}");
    for l in &attempts {
        assert!(
            l.contains(" to 127.0.0.1 failed: connection refused by 127.0.0.1:"),
            "{err}"
        );
    }
    assert!(
        attempts[..attempts.len() - 1]
            .iter()
            .all(|l| l.contains("; next attempt in ")),
        "{err}"
    );
    assert!(
        attempts.last().unwrap().ends_with("; giving up")
            || attempts.last().unwrap().contains("; giving up ("),
        "{err}"
    );
    let last = err.lines().last().unwrap_or_default();
    assert!(last.contains("gave up reconnecting after "), "{err}");
}
