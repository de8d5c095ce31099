//! `Client::get_hist` against the simulator over ws and wss: exact values, paging past one
//! request's maximum, typed failures that come as soon as the server speaks, and deadlines.

mod util;

use std::time::Duration;

use tvdatafeed::{
    AuthToken, Client, ClientConfig, Error, HistOptions, Interval, Phase, SeriesFailure, Symbol,
    TransportError,
    sim::{Fault, FaultKind, Sim, SimConfig, Target},
};
use util::now;

fn client_for(sim: &Sim) -> ClientConfig {
    let mut c = ClientConfig::default()
        .with_endpoint(sim.url())
        .unwrap()
        .with_timeout(Duration::from_secs(20));
    if let Some(der) = sim.root_certificate_der() {
        c = c.with_root_certificate(der.to_vec());
    }
    c
}

fn sym(s: &str) -> Symbol {
    s.parse().unwrap()
}

fn iv(s: &str) -> Interval {
    s.parse().unwrap()
}

/// `get_hist` with default options.
fn hist(
    client: &Client,
    symbol: &str,
    interval: Interval,
    n: u32,
) -> Result<tvdatafeed::History, Error> {
    client.get_hist(sym(symbol), interval, n, &HistOptions::default())
}

/// Asserts `n` closed bars, ascending and contiguous, each equal to the simulator's truth,
/// and a forming bar right after them.
fn assert_exact(sim: &Sim, h: &tvdatafeed::History, n: usize) {
    assert_eq!(h.bars.len(), n, "closed bars");
    for w in h.bars.windows(2) {
        assert_eq!(
            tvdatafeed::sim::Market::previous_open(h.interval, w[1].time),
            w[0].time,
            "contiguous"
        );
    }
    for b in &h.bars {
        assert_eq!(*b, sim.expected_bar(&h.symbol, h.interval, b.time));
    }
    let forming = h.forming.expect("forming bar");
    assert_eq!(
        forming.time,
        h.interval.next_bar_open(h.bars.last().unwrap().time)
    );
}

#[test]
fn history_over_ws_has_the_exact_values() {
    let sim = Sim::start(SimConfig::default().with_seed(11)).unwrap();
    let client = Client::new(client_for(&sim));
    let h = hist(&client, "BINANCE:BTCUSDT", iv("1H"), 300).unwrap();
    assert_exact(&sim, &h, 300);
    assert_eq!(h.update_mode, "streaming");
    assert_eq!(h.info.as_ref().unwrap().pro_name, "BINANCE:BTCUSDT");
    assert!(h.bars.iter().all(|b| b.volume.is_some()));
}

#[test]
fn history_over_wss_trusting_the_simulator_root() {
    let sim = Sim::start(SimConfig::default().with_tls(true)).unwrap();
    assert!(sim.url().starts_with("wss://"));
    let h = hist(
        &Client::new(client_for(&sim)),
        "BINANCE:ETHUSDT",
        iv("15"),
        50,
    )
    .unwrap();
    assert_exact(&sim, &h, 50);
    // Without the simulator's root the handshake fails with a typed TLS error.
    let untrusted = ClientConfig::default()
        .with_endpoint(sim.url())
        .unwrap()
        .with_timeout(Duration::from_secs(10));
    let err = hist(&Client::new(untrusted), "BINANCE:ETHUSDT", iv("15"), 5).unwrap_err();
    assert!(
        matches!(
            err,
            Error::Transport(TransportError::CertificateNotTrusted { ref host, .. }) if host == "127.0.0.1"
        ),
        "{err:?}"
    );
    assert!(err.to_string().contains("--ca-cert"), "{err}");
}

#[test]
fn history_pages_past_one_requests_maximum() {
    let sim = Sim::start(
        SimConfig::default()
            .with_max_bars_per_request(5_000)
            .with_history_depth_authenticated(20_000),
    )
    .unwrap();
    let config = client_for(&sim).with_token(AuthToken::new("aaa.bbb.ccc"));
    let client = Client::new(config);
    for n in [4_999usize, 5_000, 12_000] {
        let h = client
            .get_hist(
                sym("BINANCE:BTCUSDT"),
                iv("1"),
                n as u32,
                &HistOptions::default(),
            )
            .unwrap();
        assert_exact(&sim, &h, n);
    }
}

#[test]
fn anonymous_history_stops_at_the_account_depth() {
    let sim = Sim::start(SimConfig::default().with_max_bars_per_request(2_000)).unwrap();
    let h = hist(
        &Client::new(client_for(&sim)),
        "BINANCE:BTCUSDT",
        iv("5"),
        6_000,
    )
    .unwrap();
    // 5,000 bars of depth, the forming one included.
    assert_exact(&sim, &h, 4_999);
}

#[test]
fn index_symbols_have_no_volume() {
    let sim = Sim::start(SimConfig::default()).unwrap();
    let h = hist(&Client::new(client_for(&sim)), "SP:SPX", iv("1D"), 20).unwrap();
    assert_exact(&sim, &h, 20);
    assert!(h.bars.iter().all(|b| b.volume.is_none()));
}

#[test]
fn a_bad_symbol_fails_fast_with_the_typed_error() {
    let sim = Sim::start(SimConfig::default()).unwrap();
    let client = Client::new(client_for(&sim).with_timeout(Duration::from_secs(30)));
    let start = now();
    let err = hist(&client, "BINANCE:INVALIDX", iv("1"), 10).unwrap_err();
    assert_eq!(
        err,
        Error::Series {
            symbol: sym("BINANCE:INVALIDX"),
            interval: iv("1"),
            failure: SeriesFailure::UnknownSymbol {
                reason: "invalid symbol".into()
            }
        }
    );
    assert_eq!(
        err.to_string(),
        "BINANCE:INVALIDX 1: unknown symbol (invalid symbol)"
    );
    // Far below the 30 s deadline: the server's answer ended the call.
    assert!(now().duration_since(start) < Duration::from_secs(10));
    let err = hist(&client, "ECONOMICS:USGDP", iv("1D"), 10).unwrap_err();
    assert!(
        matches!(
            err.series_failure(),
            Some(SeriesFailure::PermissionDenied { detail, .. }) if detail == "economics_paid"
        ),
        "{err:?}"
    );
}

#[test]
fn unentitled_intervals_are_typed_errors() {
    let sim = Sim::start(
        SimConfig::default()
            .with_entitled_seconds(false)
            .with_entitled_custom(false),
    )
    .unwrap();
    let client = Client::new(client_for(&sim));
    let err = hist(&client, "BINANCE:BTCUSDT", iv("1S"), 10).unwrap_err();
    assert!(
        matches!(
            err.series_failure(),
            Some(SeriesFailure::IntervalNotEntitled { reason }) if reason == "seconds_not_entitled"
        ),
        "{err:?}"
    );
    let err = hist(&client, "BINANCE:BTCUSDT", iv("20"), 10).unwrap_err();
    assert!(
        matches!(
            err.series_failure(),
            Some(SeriesFailure::IntervalNotEntitled { reason }) if reason == "custom_resolution"
        ),
        "{err:?}"
    );
}

#[test]
fn a_stalled_server_hits_the_deadline() {
    let sim = Sim::start(SimConfig::default()).unwrap();
    // The next connection stalls from its first byte: not even the hello arrives.
    sim.inject(Fault::now(FaultKind::Stall(None)).on(Target::Next));
    let client = Client::new(client_for(&sim).with_timeout(Duration::from_millis(1_500)));
    let start = now();
    let err = hist(&client, "BINANCE:BTCUSDT", iv("1"), 10).unwrap_err();
    assert_eq!(
        err,
        Error::Timeout {
            after: Duration::from_millis(1_500),
            during: Phase::Answer
        }
    );
    assert!(
        now().duration_since(start) < Duration::from_secs(6),
        "the deadline covers the whole call"
    );
    // The next call gets a healthy connection.
    assert!(hist(&client, "BINANCE:BTCUSDT", iv("1"), 10).is_ok());

    // A server that accepts TCP but never answers the upgrade: the whole call is bounded.
    let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("ws://{}/socket.io/websocket", silent.local_addr().unwrap());
    let config = ClientConfig::default()
        .with_endpoint(url)
        .unwrap()
        .with_timeout(Duration::from_millis(800));
    let start = now();
    let err = hist(&Client::new(config), "BINANCE:BTCUSDT", iv("1"), 10).unwrap_err();
    assert_eq!(
        err,
        Error::Timeout {
            after: Duration::from_millis(800),
            during: Phase::Upgrade
        }
    );
    assert!(now().duration_since(start) < Duration::from_secs(5));
}

#[test]
fn refused_upgrades_report_the_status() {
    let sim = Sim::start(SimConfig::default()).unwrap();
    sim.reject_next_with_429(1);
    sim.reject_next_with(403, 1);
    let client = Client::new(client_for(&sim));
    let err = hist(&client, "BINANCE:BTCUSDT", iv("1"), 5).unwrap_err();
    assert_eq!(
        err,
        Error::RateLimited {
            host: "127.0.0.1".into(),
            retry_after: None
        }
    );
    let err = hist(&client, "BINANCE:BTCUSDT", iv("1"), 5).unwrap_err();
    assert!(
        matches!(
            err,
            Error::Transport(TransportError::UpgradeRefused { status: 403, .. })
        ),
        "{err:?}"
    );
    // A wrong path is refused by the server's router: 404, and the message says where.
    let url = format!("ws://{}/elsewhere", sim.addr());
    let err = hist(
        &Client::new(client_for(&sim).with_endpoint(url).unwrap()),
        "BINANCE:BTCUSDT",
        iv("1"),
        5,
    )
    .unwrap_err();
    assert_eq!(
        err.to_string(),
        "upgrade refused by 127.0.0.1: 404 at /elsewhere"
    );
    // And the client's headers pass the Origin check (403 otherwise).
    assert!(hist(&client, "BINANCE:BTCUSDT", iv("1"), 5).is_ok());
}

#[test]
fn a_bad_token_is_rejected_and_never_shown() {
    let sim =
        Sim::start(SimConfig::default().with_valid_tokens(vec!["good.token.here".into()])).unwrap();
    let secret = "eyJhbGciOiJSUzUxMiJ9.c2VjcmV0.c2lnbmF0dXJl";
    let config = client_for(&sim).with_token(AuthToken::new(secret));
    assert!(
        !format!("{config:?}").contains("c2VjcmV0"),
        "token in Debug"
    );
    let err = hist(&Client::new(config), "BINANCE:BTCUSDT", iv("1"), 5).unwrap_err();
    assert_eq!(err, Error::AuthRejected);
    assert!(!err.to_string().contains("c2VjcmV0") && !format!("{err:?}").contains("c2VjcmV0"));
    let ok = client_for(&sim).with_token(AuthToken::new("good.token.here"));
    assert!(hist(&Client::new(ok), "BINANCE:BTCUSDT", iv("1"), 5).is_ok());
}

#[test]
fn a_date_range_returns_the_bars_inside_it() {
    let sim = Sim::start(SimConfig::default()).unwrap();
    let client = Client::new(client_for(&sim));
    let day = iv("1D");
    let now = day.bar_open(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs() as i64,
    );
    let (from, to) = (now - 40 * 86_400, now - 30 * 86_400);
    let h = client
        .get_hist(
            sym("BINANCE:BTCUSDT"),
            day,
            5_000,
            &HistOptions::default().with_range(from, to),
        )
        .unwrap();
    let times: Vec<i64> = h.bars.iter().map(|b| b.time).collect();
    let want: Vec<i64> = (0..=10).map(|k| from + k * 86_400).collect();
    assert_eq!(times, want);
    assert!(h.forming.is_none(), "the range is in the past");
    for b in &h.bars {
        assert_eq!(*b, sim.expected_bar(&h.symbol, day, b.time));
    }
    let err = client
        .get_hist(
            sym("BINANCE:BTCUSDT"),
            day,
            10,
            &HistOptions::default().with_range(to, from),
        )
        .unwrap_err();
    assert!(matches!(err, Error::InvalidRequest(_)));
}

#[test]
fn bad_requests_are_rejected_before_any_io() {
    let client = Client::new(
        ClientConfig::default()
            .with_endpoint("ws://127.0.0.1:9/socket.io/websocket")
            .unwrap()
            .with_timeout(Duration::from_secs(1)),
    );
    let err = hist(&client, "BINANCE:BTCUSDT", iv("1"), 0).unwrap_err();
    assert!(matches!(err, Error::InvalidRequest(_)));
}

/// Back-to-back calls share one connection (`KEEP_CONNECTION`): the second skips the connect
/// and upgrade, and the first's chart session is deleted when it ends, so the server keeps
/// nothing of it (no series open while the connection waits for the next call).
#[test]
fn back_to_back_calls_share_one_connection_and_the_server_keeps_nothing_of_the_last() {
    let sim = Sim::start(SimConfig::default()).unwrap();
    let client = Client::new(client_for(&sim));
    for n in [300, 10, 2_000] {
        let h = hist(&client, "BINANCE:BTCUSDT", iv("1"), n).unwrap();
        assert_exact(&sim, &h, n as usize);
    }
    let c = sim.counters();
    assert_eq!(c.connections, 1, "three calls, one connection");
    util::wait_for(
        Duration::from_secs(5),
        "the kept connection's series closed",
        || sim.counters().series_open == 0,
    );
    assert_eq!(sim.counters().active, 1, "the connection is kept");
    // A clone shares the kept connection.
    let h = hist(&client.clone(), "BINANCE:ETHUSDT", iv("5"), 20).unwrap();
    assert_exact(&sim, &h, 20);
    assert_eq!(sim.counters().connections, 1);
}

/// A kept connection that the server closed while it waited (cleanly or not) is replaced
/// within the next call: the call succeeds on a new connection, with the exact bars.
#[test]
fn a_kept_connection_the_server_closed_is_replaced_within_the_call() {
    let sim = Sim::start(SimConfig::default()).unwrap();
    let client = Client::new(client_for(&sim));
    hist(&client, "BINANCE:BTCUSDT", iv("1"), 50).unwrap();
    for (i, kind) in [FaultKind::CloseAbrupt, FaultKind::CloseClean]
        .into_iter()
        .enumerate()
    {
        sim.inject(Fault::now(kind));
        assert!(
            sim.wait_idle(Duration::from_secs(5)),
            "the server closed it"
        );
        let h = hist(&client, "BINANCE:BTCUSDT", iv("1"), 50).unwrap();
        assert_exact(&sim, &h, 50);
        assert_eq!(sim.counters().connections, 2 + i as u64);
    }
}

/// A kept connection that went silent while it waited (a middlebox that dropped it without a
/// word: here the server stops sending anything on it) does not hold the next call to its
/// deadline: after `KEPT_PROBE` without a message the call starts over on a new connection.
#[test]
fn a_kept_connection_gone_silent_is_replaced_long_before_the_deadline() {
    let sim = Sim::start(SimConfig::default()).unwrap();
    let client = Client::new(client_for(&sim));
    hist(&client, "BINANCE:BTCUSDT", iv("1"), 50).unwrap();
    sim.inject(Fault::now(FaultKind::Stall(None)));
    let start = now();
    let h = hist(&client, "BINANCE:BTCUSDT", iv("1"), 50).unwrap();
    assert_exact(&sim, &h, 50);
    assert_eq!(sim.counters().connections, 2, "a new connection");
    assert!(
        start.elapsed() < Duration::from_secs(10),
        "replaced after {:?}, the call's timeout is 20 s",
        start.elapsed()
    );
}

/// A `critical_error` about the chart session the previous call deleted (a server serving,
/// after the delete, a request it had queued for it) reaches the next call on the kept
/// connection first: it is not that call's, which succeeds on the same connection.
#[test]
fn a_late_critical_error_about_the_previous_calls_session_does_not_fail_the_next_call() {
    let sim = Sim::start(SimConfig::default()).unwrap();
    let client = Client::new(client_for(&sim));
    hist(&client, "BINANCE:BTCUSDT", iv("1"), 50).unwrap();
    util::wait_for(
        Duration::from_secs(5),
        "the server deleted the first call's chart session",
        || sim.counters().series_open == 0,
    );
    let sent = sim.counters().messages_sent;
    sim.inject(Fault::now(FaultKind::LateCriticalError));
    util::wait_for(
        Duration::from_secs(5),
        "the late critical_error sent",
        || sim.counters().messages_sent > sent,
    );
    for _ in 0..2 {
        let h = hist(&client, "BINANCE:BTCUSDT", iv("1"), 50).unwrap();
        assert_exact(&sim, &h, 50);
    }
    assert_eq!(
        sim.counters().connections,
        1,
        "the kept connection served both"
    );
}

/// `HistOptions::forming_counted` (tvDatafeed's `n_bars`): 5,000 bars in all are one request
/// (no page asked past the first), 4,999 closed and the forming one, nothing reported missing;
/// by default 5,000 closed bars take a second request, which an anonymous account's depth
/// (5,000 bars) leaves empty.
#[test]
fn a_count_with_the_forming_bar_counted_is_one_request_and_misses_nothing() {
    let sim = Sim::start(SimConfig::default()).unwrap();
    let client = Client::new(client_for(&sim));
    let counted = HistOptions::default().with_forming_counted(true);
    let get = |n: u32, options: &HistOptions| {
        let before = sim.counters().pages_requested;
        let h = client
            .get_hist(sym("BINANCE:BTCUSDT"), iv("1"), n, options)
            .unwrap();
        (h, sim.counters().pages_requested - before)
    };
    let (h, pages) = get(5_000, &counted);
    assert_exact(&sim, &h, 4_999);
    assert_eq!(h.missing(), 0);
    assert_eq!(pages, 0, "one request");
    let (h, pages) = get(1, &counted);
    assert!(h.bars.is_empty() && h.forming.is_some() && pages == 0);
    let (h, pages) = get(5_000, &HistOptions::default());
    assert_exact(&sim, &h, 4_999);
    assert_eq!(h.missing(), 1);
    assert_eq!(pages, 1, "5,001 bars: a page of 5,000, then one more asked");
}
