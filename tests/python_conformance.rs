//! Conformance: a real client nobody here wrote, the Python tvdatafeed 2.1.1 (`pip install
//! tradingview-datafeed==2.1.1`), fetches history from the simulator, and gets the simulator's
//! exact values. `tests/python/conformance.py` points its hard-coded TradingView URL at the
//! simulator.
//!
//! It needs Python and the package, so it is `#[ignore]`d: `cargo test --workspace` passes with
//! Rust alone. `.ci/run` installs the package and runs it as its own step:
//!
//! ```text
//! python3 -m pip install tradingview-datafeed==2.1.1 websocket-client pandas
//! cargo test --test python_conformance -- --ignored
//! ```

mod util;

use std::{
    io::Read,
    process::{Command, Stdio},
    sync::mpsc,
    time::Duration,
};

use tvdatafeed::sim::{Sim, SimConfig};
use util::{iv, sym, unix_s};

/// One row as the script prints it: epoch seconds, then o, h, l, c, v as Python reprs.
fn row(v: &serde_json::Value) -> (i64, [f64; 5]) {
    let a = v.as_array().expect("row array");
    let t = a[0].as_i64().expect("epoch seconds");
    let mut x = [0.0; 5];
    for (i, slot) in x.iter_mut().enumerate() {
        *slot = a[i + 1]
            .as_str()
            .expect("a repr string")
            .parse()
            .expect("a float");
    }
    (t, x)
}

#[test]
#[ignore = "needs Python and tradingview-datafeed==2.1.1; run with --ignored (CI does)"]
fn python_tvdatafeed_gets_the_simulators_exact_bars() {
    let sim = Sim::start(SimConfig::default().with_require_origin(true)).expect("sim");
    let before = unix_s();
    let mut child = Command::new("python3")
        .arg(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/python/conformance.py"
        ))
        .arg(sim.url())
        .args(["BINANCE:BTCUSDT", "SP:SPX"])
        .env("TZ", "UTC")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| {
            panic!(
                "cannot run python3 ({e}): install Python 3 and \
                 `python3 -m pip install tradingview-datafeed==2.1.1 websocket-client pandas`,"
            )
        });
    // Read its output on a thread, so that the wait has a deadline.
    let (mut out, mut err) = (
        child.stdout.take().expect("stdout"),
        child.stderr.take().expect("stderr"),
    );
    let (tx, rx) = mpsc::channel();
    let reader = std::thread::Builder::new()
        .name("python-output".into())
        .spawn(move || {
            let (mut o, mut e) = (String::new(), String::new());
            let _ = out.read_to_string(&mut o);
            let _ = err.read_to_string(&mut e);
            let _ = tx.send((o, e));
        })
        .expect("spawn reader");
    let Ok((stdout, stderr)) = rx.recv_timeout(Duration::from_secs(60)) else {
        let _ = child.kill();
        panic!("the python client did not finish within 60 s");
    };
    let _ = reader.join();
    let status = child.wait().expect("wait python");
    let after = unix_s();
    assert!(
        status.code() != Some(3),
        "the Python package is missing: `python3 -m pip install tradingview-datafeed==2.1.1 \
         websocket-client pandas`. stderr: {stderr}"
    );
    assert!(
        status.success(),
        "conformance.py failed ({status}): {stderr}"
    );
    let doc: serde_json::Value =
        serde_json::from_str(&stdout).unwrap_or_else(|e| panic!("bad output {e}: {stdout}"));
    assert_eq!(
        doc["urls"].as_array().map(Vec::len),
        Some(2),
        "one connection per get_hist: {doc}"
    );
    let c = sim.counters();
    assert!(
        c.connections >= 2 && c.refused == 0,
        "the Python client was accepted: {c:?}"
    );

    let hour = iv("60");
    for (name, has_volume) in [("BINANCE:BTCUSDT", true), ("SP:SPX", false)] {
        let symbol = sym(name);
        let rows: Vec<(i64, [f64; 5])> = doc["rows"][name]
            .as_array()
            .expect("rows")
            .iter()
            .map(row)
            .collect();
        // n_bars rows: 299 closed bars, then the forming bar.
        assert_eq!(rows.len(), 300, "{name}");
        for w in rows.windows(2) {
            assert_eq!(w[1].0, w[0].0 + 3600, "{name}: hourly and ascending");
        }
        let (forming_t, forming) = rows[299];
        assert!(
            (hour.bar_open(before)..=hour.bar_open(after)).contains(&forming_t),
            "{name}: the last row is the forming bar"
        );
        assert_eq!(
            forming[0],
            sim.expected_bar(&symbol, hour, forming_t).open,
            "{name}: forming open"
        );
        for (t, [o, h, l, c, v]) in &rows[..299] {
            let e = sim.expected_bar(&symbol, hour, *t);
            assert_eq!(
                (*o, *h, *l, *c),
                (e.open, e.high, e.low, e.close),
                "{name} at {t}"
            );
            if has_volume {
                assert_eq!(Some(*v), e.volume, "{name} volume at {t}");
            } else {
                assert_eq!((*v, e.volume), (0.0, None), "{name}: an index has volume 0");
            }
        }
    }
}
