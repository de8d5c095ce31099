//! Many symbols' history, three ways, against the same simulator in the same run, over ws and
//! over wss:
//!
//! - `get_hist_many`: ours, one connection, [`DEFAULT_MAX_IN_FLIGHT`] series in flight;
//! - `get_hist_many K=1`: ours, one connection, one series at a time;
//! - `python 5 threads`: the seed's pattern, Python tvdatafeed 2.1.1 `get_hist` in a
//!   `ThreadPoolExecutor(max_workers=5)`, one websocket (and, over wss, one TLS handshake) per
//!   symbol (`benches/python/hist_many.py`).
//!
//! Each symbol is 5,000 one-minute bars (the anonymous depth: 4,999 closed + the forming one,
//! what the Python call returns as 5,000 rows). Every answer is checked (bar count; ours also
//! value by value against the simulator's truth in the first round) outside the timing.
//!
//! A second table runs ours over ws through a relay (`tvdatafeed::sim::Relay`) that delays
//! every chunk of bytes by 25 ms each way (a 50 ms round trip, as to a distant server; loopback
//! has none), at several in-flight limits: what [`DEFAULT_MAX_IN_FLIGHT`] buys where round
//! trips cost.
//!
//! `cargo bench --bench hist_many` runs 100 symbols, 5 rounds (3 through the relay); the Python
//! pattern needs `python3 -m pip install tradingview-datafeed==2.1.1 websocket-client pandas`
//! (without it its rows say so; `-- --no-python` skips it). Without `--bench`
//! (`cargo test --benches`) it runs 3 small symbols once, ours only, with a 2 ms relay, as a
//! smoke test. Prints Markdown tables; figures go in BENCHMARKS.md.
//!
//! Besides wall time, each contender's client CPU time is measured (ours: the calling
//! thread, from `/proc/thread-self/stat`, 10 ms resolution; Python: `getrusage` of its whole
//! process), because the simulator is not free: its one thread per connection formats every
//! bar, and on this rig it can bound ours' wall time.
#![allow(
    missing_docs,
    clippy::print_stdout,
    clippy::print_stderr,
    reason = "a bench binary prints its table"
)]

use std::{
    process::Command,
    time::{Duration, Instant},
};

use tvdatafeed::{
    Client, ClientConfig, DEFAULT_MAX_IN_FLIGHT, HistRequest,
    sim::{Relay, Sim, SimConfig},
};

#[allow(clippy::disallowed_methods, reason = "a bench measures wall time")]
fn now() -> Instant {
    Instant::now()
}

struct Plan {
    symbols: usize,
    /// Closed bars asked of ours (the Python call asks `bars + 1` rows).
    bars: u32,
    rounds: usize,
    python: bool,
}

/// CPU time (user + system) of the calling thread so far, on Linux.
fn thread_cpu() -> Option<Duration> {
    let stat = std::fs::read_to_string("/proc/thread-self/stat").ok()?;
    // Fields after `(comm)`: state is field 3, utime 14, stime 15, in USER_HZ (100) ticks.
    let rest = &stat[stat.rfind(')')? + 1..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks: u64 = fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?;
    Some(Duration::from_millis(ticks * 10))
}

/// One run: wall time, client CPU time, bars received (closed + forming).
struct Run {
    wall: Duration,
    cpu: Option<Duration>,
    bars: usize,
}

/// Runs ours once, against `url` (the simulator's, or a relay's in front of it).
fn ours(sim: &Sim, url: &str, plan: &Plan, k: usize, check: bool) -> Run {
    let mut config = ClientConfig::default()
        .with_endpoint(url)
        .expect("url")
        .with_max_in_flight(k);
    if let Some(der) = sim.root_certificate_der() {
        config = config.with_root_certificate(der.to_vec());
    }
    let client = Client::new(config);
    let requests: Vec<HistRequest> = (0..plan.symbols)
        .map(|i| HistRequest::new(format!("BINANCE:SYM{i}"), "1", plan.bars).expect("request"))
        .collect();
    let (cpu0, start) = (thread_cpu(), now());
    let results: Vec<_> = client.get_hist_many(requests).collect();
    let (wall, cpu1) = (start.elapsed(), thread_cpu());
    let mut bars = 0;
    for (request, result) in results {
        let h = result.unwrap_or_else(|e| panic!("{}: {e}", request.symbol));
        assert_eq!(h.bars.len(), plan.bars as usize, "{}", request.symbol);
        assert!(h.forming.is_some());
        if check {
            for b in &h.bars {
                assert_eq!(*b, sim.expected_bar(&h.symbol, h.interval, b.time));
            }
        }
        bars += h.bars.len() + 1;
    }
    Run {
        wall,
        cpu: cpu0.zip(cpu1).map(|(a, b)| b.saturating_sub(a)),
        bars,
    }
}

/// Runs the Python pattern once, or says why it could not run.
fn python(sim: &Sim, plan: &Plan, ca_file: &str) -> Result<Run, String> {
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/benches/python/hist_many.py");
    let rows = plan.bars + 1;
    let out = Command::new("python3")
        .arg(script)
        .arg(sim.url())
        .arg(rows.to_string())
        .arg("5")
        .arg(ca_file)
        .args((0..plan.symbols).map(|i| format!("BINANCE:SYM{i}")))
        .output()
        .map_err(|e| format!("cannot run python3: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "hist_many.py failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
                .trim()
                .replace('\n', " ")
        ));
    }
    let doc: serde_json::Value =
        serde_json::from_slice(&out.stdout).map_err(|e| format!("bad output: {e}"))?;
    let ok = doc["ok"].as_u64().unwrap_or(0);
    if ok != plan.symbols as u64 {
        return Err(format!("only {ok} calls returned {rows} rows: {doc}"));
    }
    let secs = |k: &str| Duration::from_secs_f64(doc[k].as_f64().unwrap_or(0.0).max(0.0));
    Ok(Run {
        wall: secs("wall_s"),
        cpu: Some(secs("cpu_s")),
        bars: doc["rows"].as_u64().unwrap_or(0) as usize,
    })
}

/// The medians of wall and CPU time of some runs.
fn median(runs: &[Run]) -> (Duration, Option<Duration>) {
    let mid = |mut v: Vec<Duration>| {
        v.sort();
        v[v.len() / 2]
    };
    let cpus: Option<Vec<Duration>> = runs.iter().map(|r| r.cpu).collect();
    (mid(runs.iter().map(|r| r.wall).collect()), cpus.map(mid))
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let heavy = args.iter().any(|a| a == "--bench");
    let plan = if heavy {
        Plan {
            symbols: 100,
            bars: 4_999,
            rounds: 5,
            python: !args.iter().any(|a| a == "--no-python"),
        }
    } else {
        Plan {
            symbols: 3,
            bars: 299,
            rounds: 1,
            python: false,
        }
    };
    println!(
        "{} symbols x {} bars (1-minute, {} closed + the forming one), median of {} rounds\n",
        plan.symbols,
        plan.bars + 1,
        plan.bars,
        plan.rounds
    );
    println!(
        "| transport | contender | connections | wall (median) | bars/s | bars/s vs python | client CPU (median) | CPU vs python |"
    );
    println!("| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: |");
    for tls in [false, true] {
        let sim = Sim::start(SimConfig::default().with_tls(tls)).expect("sim");
        let ca_file = match sim.root_certificate_pem() {
            Some(pem) => {
                let path = std::env::temp_dir().join(format!(
                    "tvdatafeed-bench-hist-many-{}.pem",
                    std::process::id()
                ));
                std::fs::write(&path, pem).expect("write the simulator's root");
                path.display().to_string()
            }
            None => "-".to_owned(),
        };
        let (mut many, mut one, mut py) = (Vec::new(), Vec::new(), Vec::new());
        let mut python_error = None;
        // Rounds interleave the contenders, so that drift on a shared machine hits all three.
        for round in 0..plan.rounds {
            many.push(ours(
                &sim,
                &sim.url(),
                &plan,
                DEFAULT_MAX_IN_FLIGHT,
                round == 0,
            ));
            one.push(ours(&sim, &sim.url(), &plan, 1, false));
            if plan.python && python_error.is_none() {
                match python(&sim, &plan, &ca_file) {
                    Ok(run) => {
                        assert_eq!(run.bars, many[0].bars, "the same bars");
                        py.push(run);
                    }
                    Err(e) => python_error = Some(e),
                }
            }
        }
        let total = many[0].bars;
        let transport = if tls { "wss" } else { "ws" };
        let py_median = (!py.is_empty()).then(|| median(&py));
        let ms = |d: Duration| format!("{:.1} ms", d.as_secs_f64() * 1e3);
        let row = |name: &str, connections: usize, (wall, cpu): (Duration, Option<Duration>)| {
            let rate = total as f64 / wall.as_secs_f64();
            let ratio = |ours: Duration, theirs: Duration| {
                format!("**{:.1}x**", theirs.as_secs_f64() / ours.as_secs_f64())
            };
            let (vs_wall, vs_cpu) = match py_median {
                Some((p_wall, p_cpu)) => (
                    ratio(wall, p_wall),
                    cpu.zip(p_cpu).map_or("-".into(), |(c, p)| ratio(c, p)),
                ),
                None => ("-".into(), "-".into()),
            };
            println!(
                "| {transport} | {name} | {connections} | {} | {rate:.0} | {vs_wall} | {} | {vs_cpu} |",
                ms(wall),
                cpu.map_or("-".into(), ms),
            );
        };
        row(
            &format!("get_hist_many (K={DEFAULT_MAX_IN_FLIGHT})"),
            1,
            median(&many),
        );
        row("get_hist_many (K=1)", 1, median(&one));
        match (py_median, &python_error) {
            (Some(p), _) => row("python tvdatafeed, 5 threads", plan.symbols, p),
            (None, Some(e)) => {
                println!(
                    "| {transport} | python tvdatafeed, 5 threads | - | not run: {e} | | | | |"
                )
            }
            (None, None) => {}
        }
        if tls {
            let _ = std::fs::remove_file(&ca_file);
        }
    }
    // Where round trips cost: ours through a latency relay, ws.
    let (one_way, ks, rounds): (Duration, &[usize], usize) = if heavy {
        (Duration::from_millis(25), &[1, 4, 16, 64], 3)
    } else {
        (Duration::from_millis(1), &[1, DEFAULT_MAX_IN_FLIGHT], 1)
    };
    let sim = Sim::start(SimConfig::default()).expect("sim");
    let relay = Relay::start(sim.addr(), one_way).expect("relay");
    let url = relay.url_for(&sim);
    println!(
        "\nours over ws through a relay adding {} ms each way ({} ms round trip), median of {rounds} rounds\n",
        one_way.as_millis(),
        2 * one_way.as_millis()
    );
    println!("| max_in_flight | wall (median) | bars/s | vs K=1 |");
    println!("| ---: | ---: | ---: | ---: |");
    let mut first = None;
    for &k in ks {
        let runs: Vec<Run> = (0..rounds)
            .map(|_| ours(&sim, &url, &plan, k, false))
            .collect();
        let (wall, _) = median(&runs);
        let base = *first.get_or_insert(wall);
        println!(
            "| {k} | {:.1} ms | {:.0} | **{:.1}x** |",
            wall.as_secs_f64() * 1e3,
            runs[0].bars as f64 / wall.as_secs_f64(),
            base.as_secs_f64() / wall.as_secs_f64()
        );
    }
}
