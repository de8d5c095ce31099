//! The command line's contract, which scripts depend on: `hist` output formats and errors,
//! `--url`/`TVDATAFEED_URL`, `--out`, `search`, `decode`, and `sim` serving a client.

use std::{
    io::{BufRead, BufReader, Read, Write},
    net::TcpListener,
    process::{Command, Output, Stdio},
    time::Duration,
};

use tvdatafeed::{
    Interval, Symbol,
    sim::{Sim, SimConfig},
};

fn bin() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_tvdatafeed"));
    c.env_remove("TVDATAFEED_URL").env_remove("TV_AUTH_TOKEN");
    c
}

fn run(c: &mut Command) -> Output {
    c.output().expect("run tvdatafeed")
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
