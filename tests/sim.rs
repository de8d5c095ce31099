//! The simulator against protocol.md: each test pins one behaviour of the real server, driving
//! the simulator with the crate's own `Connection` or with a plain websocket client.

mod util;

use std::time::Duration;

use tvdatafeed::{
    protocol::{
        AuthToken, ChartConfig, ConnectionConfig, Event, Request, SeriesEvent, SeriesFailure,
        SeriesRequest,
    },
    sim::{Sim, SimConfig},
};
use util::*;

const S: Duration = Duration::from_secs(1);

fn start(cfg: SimConfig) -> Sim {
    Sim::start(cfg).expect("simulator starts")
}

// ---------------------------------------------------------------- upgrade

#[test]
fn upgrade_without_origin_is_refused_with_403() {
    let sim = start(SimConfig::default());
    assert_eq!(refused_status(try_connect(&sim, PATH, None)), 403);
    // The counter moves once the server is done with the socket.
    assert!(sim.wait_idle(5 * S));
    assert_eq!(sim.counters().refused, 1);
    assert_eq!(sim.counters().connections, 0);
}

#[test]
fn upgrade_with_a_foreign_origin_is_refused_with_403() {
    let sim = start(SimConfig::default());
    for origin in [
        "https://evil.example.com",
        "http://www.tradingview.com",
        "https://tradingview.com.evil.example",
        "https://nottradingview.com",
    ] {
        assert_eq!(
            refused_status(try_connect(&sim, PATH, Some(origin))),
            403,
            "{origin}"
        );
    }
    // Any https subdomain of tradingview.com is accepted, and the query is ignored.
    for origin in [
        "https://data.tradingview.com",
        "https://www.tradingview.com",
    ] {
        assert!(
            try_connect(&sim, "/socket.io/websocket", Some(origin)).is_ok(),
            "{origin}"
        );
    }
}

#[test]
fn upgrade_on_a_wrong_path_is_refused_with_404() {
    let sim = start(SimConfig::default());
    assert_eq!(
        refused_status(try_connect(&sim, "/chart/websocket", Some(ORIGIN))),
        404
    );
    assert_eq!(refused_status(try_connect(&sim, "/", Some(ORIGIN))), 404);
    assert!(
        try_connect(
            &sim,
            "/socket.io/websocket?type=chart&date=2024_04_22-11_32",
            Some(ORIGIN)
        )
        .is_ok()
    );
}

#[test]
fn upgrade_is_refused_with_429_after_reject_next_with_429() {
    let sim = start(SimConfig::default());
    sim.reject_next_with_429(2);
    assert_eq!(refused_status(try_connect(&sim, PATH, Some(ORIGIN))), 429);
    assert_eq!(refused_status(try_connect(&sim, PATH, Some(ORIGIN))), 429);
    let third = try_connect(&sim, PATH, Some(ORIGIN));
    assert!(third.is_ok(), "only the next 2 are refused");
    drop(third);
    assert!(sim.wait_idle(5 * S));
    assert_eq!(sim.counters().refused, 2);
}

#[test]
fn origin_is_not_checked_when_not_required() {
    let sim = start(SimConfig::default().with_require_origin(false));
    assert!(try_connect(&sim, PATH, None).is_ok());
}

// ---------------------------------------------------------------- hello and loads

#[test]
fn hello_is_the_first_frame() {
    let sim = start(SimConfig::default().with_heartbeat_interval(Duration::from_millis(50)));
    let mut raw = Raw::connect(&sim);
    let first = raw.recv_until(5 * S, |_| true).expect("a first message");
    let frames = frames_of(&first);
    let Parsed::Json(hello) = &frames[0] else {
        panic!("first frame is not json: {first}")
    };
    assert!(hello.get("m").is_none(), "the hello has no method: {first}");
    assert!(hello["session_id"].as_str().is_some_and(|s| !s.is_empty()));
    assert_eq!(hello["protocol"], "json");
    assert_eq!(hello["auth_scheme_vsn"], 2);
    assert!(hello["timestampMs"].as_u64().is_some());
    assert!(hello["javastudies"].is_array());
    // The crate's session recognises it.
    let mut d = Driver::connect(&sim, "cs_hellotest01");
    assert!(d.run_until(5 * S, |d| !d.events.is_empty()));
    assert!(
        matches!(d.events[0], Event::Connected { .. }),
        "{:?}",
        d.events[0]
    );
}

fn load_300_hourly(tls: bool) {
    let sim = start(SimConfig::default().with_tls(tls));
    assert_eq!(sim.url().starts_with("wss://"), tls);
    let (btc, hour) = (sym("BINANCE:BTCUSDT"), iv("60"));
    let before = unix_s();
    let mut d = Driver::connect(&sim, "cs_loadtest0001");
    let id = d.load(SeriesRequest::count(btc.clone(), hour, 300), 10 * S);
    let after = unix_s();
    let (bars, forming) = d
        .history(id)
        .unwrap_or_else(|| panic!("no history: {:?}", d.failure(id)));
    assert_eq!(bars.len(), 300);
    assert_market_bars(&sim, &btc, hour, &bars);
    let forming = forming.expect("a forming bar");
    assert_eq!(forming.time, hour.next_bar_open(bars[299].time));
    assert!((hour.bar_open(before)..=hour.bar_open(after)).contains(&forming.time));
    assert_eq!(
        forming.open,
        sim.expected_bar(&btc, hour, forming.time).open
    );
    assert!(
        d.series(id)
            .any(|e| matches!(e, SeriesEvent::Resolved(i) if i.name == "BTCUSDT"))
    );
    // The load came as one websocket message of several frames, as the real server sends it.
    let load = d
        .messages
        .iter()
        .find(|m| m.contains("\"series_completed\""))
        .expect("a message with series_completed");
    let methods: Vec<_> = frames_of(load)
        .iter()
        .filter_map(|f| f.method().map(str::to_owned))
        .collect();
    assert_eq!(
        methods,
        [
            "series_loading",
            "symbol_resolved",
            "timescale_update",
            "series_completed"
        ],
        "the load's frames"
    );
}

#[test]
fn history_over_ws_equals_the_market_and_arrives_in_one_message() {
    load_300_hourly(false);
}

#[test]
fn history_over_wss_equals_the_market_and_arrives_in_one_message() {
    load_300_hourly(true);
}

#[test]
fn unbatched_load_arrives_one_frame_per_message() {
    let sim = start(SimConfig::default().with_batch_frames(false));
    let mut d = Driver::connect(&sim, "cs_unbatched001");
    let id = d.load(
        SeriesRequest::count(sym("BINANCE:ETHUSDT"), iv("5"), 50),
        10 * S,
    );
    assert_eq!(d.history(id).expect("history").0.len(), 50);
    assert!(d.messages.iter().all(|m| frames_of(m).len() == 1));
}

#[test]
fn index_symbol_bars_have_no_volume() {
    let sim = start(SimConfig::default());
    let (spx, day) = (sym("SP:SPX"), iv("1D"));
    let mut d = Driver::connect(&sim, "cs_indextest001");
    let id = d.load(SeriesRequest::count(spx.clone(), day, 100), 10 * S);
    let (bars, forming) = d.history(id).expect("history");
    assert_eq!(bars.len(), 100);
    assert!(
        bars.iter()
            .chain(forming.as_ref())
            .all(|b| b.volume.is_none())
    );
    assert_market_bars(&sim, &spx, day, &bars);
    // On the wire: five values per bar.
    let load = d
        .messages
        .iter()
        .find(|m| m.contains("timescale_update"))
        .expect("load");
    let ts = frames_of(load)
        .into_iter()
        .find(|f| f.method() == Some("timescale_update"))
        .expect("frame");
    let first = &ts.param(1).expect("p[1]")["sds_1"]["s"][0]["v"];
    assert_eq!(first.as_array().map(Vec::len), Some(5), "{first}");
}

#[test]
fn unknown_symbol_fails_promptly_without_completion() {
    let sim = start(SimConfig::default());
    let mut d = Driver::connect(&sim, "cs_badsymbol001");
    let t0 = now();
    let id = d.load(
        SeriesRequest::count(sym("BINANCE:INVALIDX"), iv("60"), 300),
        5 * S,
    );
    assert!(
        t0.elapsed() < 4 * S,
        "the failure is prompt, not a load timeout"
    );
    assert!(
        matches!(d.failure(id), Some(SeriesFailure::UnknownSymbol { ref reason }) if reason == "invalid symbol"),
        "{:?}",
        d.failure(id)
    );
    // The server follows with series_error "resolve error", and never completes.
    d.run_for(Duration::from_millis(300));
    let all: Vec<Parsed> = d.messages.iter().flat_map(|m| frames_of(m)).collect();
    assert!(all.iter().any(|f| f.method() == Some("symbol_error")));
    assert!(
        all.iter()
            .any(|f| f.method() == Some("series_error") && f.param_str(3) == Some("resolve error"))
    );
    assert!(!all.iter().any(|f| matches!(
        f.method(),
        Some("series_completed" | "timescale_update" | "du")
    )));
}

#[test]
fn denied_exchange_fails_with_permission_denied() {
    let sim = start(SimConfig::default());
    let mut d = Driver::connect(&sim, "cs_denied000001");
    let id = d.load(
        SeriesRequest::count(sym("ECONOMICS:USGDP"), iv("1M"), 10),
        5 * S,
    );
    assert_eq!(
        d.failure(id),
        Some(SeriesFailure::PermissionDenied {
            kind: "group".into(),
            detail: "economics_paid".into()
        })
    );
}

#[test]
fn paging_with_a_token_delivers_12000_bars_equal_to_the_market() {
    let sim = start(SimConfig::default().with_max_bars_per_request(5_000));
    let (btc, minute) = (sym("BINANCE:BTCUSDT"), iv("1"));
    let cfg = ConnectionConfig::default().with_auth_token(AuthToken::new("aaa.bbb.ccc"));
    let mut d = Driver::connect_with(&sim, "cs_pagingtest01", cfg, ChartConfig::default());
    let id = d.load(SeriesRequest::count(btc.clone(), minute, 12_000), 30 * S);
    let (bars, forming) = d
        .history(id)
        .unwrap_or_else(|| panic!("no history: {:?}", d.failure(id)));
    assert_eq!(bars.len(), 12_000);
    assert!(forming.is_some());
    assert_market_bars(&sim, &btc, minute, &bars);
    // It took pages: create_series plus request_more_data, no page above the maximum.
    let loads: Vec<usize> = d
        .messages
        .iter()
        .flat_map(|m| frames_of(m))
        .filter(|f| f.method() == Some("timescale_update"))
        .map(|f| {
            f.param(1)
                .and_then(|p| p["sds_1"]["s"].as_array().map(Vec::len))
                .unwrap_or(0)
        })
        .collect();
    assert!(loads.len() >= 3, "pages: {loads:?}");
    assert!(loads.iter().all(|n| *n <= 5_000), "pages: {loads:?}");
    assert_eq!(loads.iter().sum::<usize>(), 12_001, "pages: {loads:?}");
}

#[test]
fn anonymous_history_depth_caps_a_6000_bar_request_at_5000() {
    let sim = start(SimConfig::default());
    let (btc, minute) = (sym("BINANCE:BTCUSDT"), iv("1"));
    let mut d = Driver::connect(&sim, "cs_depthtest001");
    let id = d.load(SeriesRequest::count(btc.clone(), minute, 6_000), 30 * S);
    let (bars, forming) = d.history(id).expect("history");
    assert_eq!(
        bars.len() + usize::from(forming.is_some()),
        5_000,
        "the depth counts the forming bar"
    );
    assert_market_bars(&sim, &btc, minute, &bars);
}

#[test]
fn bad_or_unlisted_token_gets_protocol_error_and_close() {
    for (cfg, token) in [
        (SimConfig::default(), "not a jwt"),
        (
            SimConfig::default().with_valid_tokens(vec!["aaa.bbb.ccc".into()]),
            "xxx.yyy.zzz",
        ),
    ] {
        let sim = start(cfg);
        let scfg = ConnectionConfig::default().with_auth_token(AuthToken::new(token));
        let mut d = Driver::connect_with(&sim, "cs_badtoken0001", scfg, ChartConfig::default());
        assert!(d.run_until(5 * S, |d| d.end.is_some()), "the server closes");
        assert_eq!(
            d.end,
            Some(Recv::Closed),
            "with a close frame, after the error"
        );
        assert!(
            d.events.contains(&Event::ProtocolError {
                text: "bad auth token".into()
            }),
            "{:?}",
            d.events
        );
        assert!(sim.wait_idle(5 * S));
    }
}

#[test]
fn range_request_returns_exactly_the_bars_in_range() {
    let sim = start(SimConfig::default());
    let (btc, hour) = (sym("BINANCE:BTCUSDT"), iv("60"));
    let to = hour.bar_open(unix_s()) - 50 * 3600;
    let from = to - 100 * 3600;
    let mut d = Driver::connect(&sim, "cs_rangetest001");
    let id = d.load(
        SeriesRequest::range(btc.clone(), hour, from, to, 5_000),
        10 * S,
    );
    let (bars, forming) = d.history(id).expect("history");
    assert_eq!(forming, None);
    assert_eq!(bars.len(), 101);
    assert_eq!((bars[0].time, bars[100].time), (from, to));
    assert_market_bars(&sim, &btc, hour, &bars);
    // A range older than the history window gives no bars and no error.
    let old = hour.bar_open(unix_s()) - 10_000 * 3600;
    let id = d.load(
        SeriesRequest::range(btc, hour, old - 3600, old, 5_000),
        10 * S,
    );
    assert_eq!(d.history(id).map(|h| h.0.len()), Some(0));
}

#[test]
fn invalid_resolution_gets_critical_error_invalid_parameters() {
    let sim = start(SimConfig::default());
    let mut raw = Raw::connect(&sim);
    let cs = "cs_kjvmuwkghjuz";
    raw.send(&encode(Request::ChartCreateSession { session: cs }));
    raw.send(&frame(
        r#"{"m":"resolve_symbol","p":["cs_kjvmuwkghjuz","sds_sym_1","={\"symbol\":\"BINANCE:BTCUSDT\"}"]}"#,
    ));
    raw.send(&frame(
        r#"{"m":"create_series","p":["cs_kjvmuwkghjuz","sds_1","s1","sds_sym_1","XX",300,""]}"#,
    ));
    let frames = raw
        .recv_method("critical_error", 5 * S)
        .expect("critical_error");
    let ce = frames
        .iter()
        .find(|f| f.method() == Some("critical_error"))
        .expect("frame");
    assert_eq!(ce.param_str(0), Some(cs));
    assert_eq!(ce.param_str(1), Some("invalid parameters"));
    assert_eq!(
        ce.param_str(2),
        Some(r#"method: create_series. args: "[sds_1, s1, sds_sym_1, XX, 300, ]""#)
    );
    // The session stays usable: a good series on it still loads.
    raw.send(&frame(
        r#"{"m":"create_series","p":["cs_kjvmuwkghjuz","sds_2","s1","sds_sym_1","60",10,""]}"#,
    ));
    assert!(raw.recv_method("series_completed", 5 * S).is_some());
    assert!(raw.end.is_none());
}

#[test]
fn seconds_without_entitlement_get_series_error() {
    let sim = start(SimConfig::default().with_entitled_seconds(false));
    let mut d = Driver::connect(&sim, "cs_secondstest1");
    let id = d.load(
        SeriesRequest::count(sym("BINANCE:BTCUSDT"), iv("1S"), 100),
        5 * S,
    );
    assert_eq!(
        d.failure(id),
        Some(SeriesFailure::IntervalNotEntitled {
            reason: "seconds_not_entitled".into()
        })
    );
}

#[test]
fn custom_resolution_without_entitlement_gets_series_error() {
    let sim = start(SimConfig::default().with_entitled_custom(false));
    let mut d = Driver::connect(&sim, "cs_customtest01");
    let id = d.load(
        SeriesRequest::count(sym("BINANCE:BTCUSDT"), iv("20"), 100),
        5 * S,
    );
    assert_eq!(
        d.failure(id),
        Some(SeriesFailure::IntervalNotEntitled {
            reason: "custom_resolution".into()
        })
    );
}

#[test]
fn invalid_timezone_gets_critical_error() {
    let sim = start(SimConfig::default());
    let cfg = ChartConfig::default().with_timezone(Some("Nowhere/Nowhere".into()));
    let mut d = Driver::connect_with(&sim, "cs_timezone0001", ConnectionConfig::default(), cfg);
    assert!(d.run_until(5 * S, |d| !d.critical_errors().is_empty()));
    assert_eq!(
        d.critical_errors(),
        [(
            "invalid timezone".to_owned(),
            Some(r#"method: switch_timezone. args: "[Nowhere/Nowhere]""#.to_owned())
        )]
    );
    // A valid zone is accepted silently.
    let cfg = ChartConfig::default().with_timezone(Some("America/New_York".into()));
    let mut d = Driver::connect_with(&sim, "cs_timezone0002", ConnectionConfig::default(), cfg);
    let id = d.load(
        SeriesRequest::count(sym("BINANCE:BTCUSDT"), iv("60"), 5),
        5 * S,
    );
    assert!(d.history(id).is_some());
    assert!(d.critical_errors().is_empty());
}

// ---------------------------------------------------------------- live

#[test]
fn live_1s_series_closes_bars_equal_to_the_market_and_published() {
    let sim = start(SimConfig::default().with_update_interval(Duration::from_millis(100)));
    let (btc, sec) = (sym("BINANCE:BTCUSDT"), iv("1S"));
    let mut d = Driver::connect(&sim, "cs_livetest0001");
    let id = d.load(SeriesRequest::count(btc.clone(), sec, 10), 5 * S);
    assert!(d.history(id).is_some());
    assert!(
        d.run_until(8 * S, |d| d.closed(id).len() >= 2),
        "two bars close within 8 s"
    );
    let closed = d.closed(id);
    assert!(
        closed.windows(2).all(|w| w[1].time == w[0].time + 1),
        "{closed:?}"
    );
    let published = sim.published_closes();
    for b in &closed {
        assert_eq!(
            *b,
            sim.expected_bar(&btc, sec, b.time),
            "closed bar {}",
            b.time
        );
        assert!(
            published
                .iter()
                .any(|p| p.symbol == "BINANCE:BTCUSDT" && p.interval == sec && p.bar == *b),
            "bar {} not in published_closes",
            b.time
        );
    }
    // Updates arrived between closes, each for the forming bar.
    assert!(
        d.series(id)
            .filter(|e| matches!(e, SeriesEvent::Update(_)))
            .count()
            >= 2
    );
    assert!(sim.counters().live_sent > 0);
}

#[test]
fn recorded_live_sends_are_the_live_messages_in_send_order() {
    let sim = start(
        SimConfig::default()
            .with_update_interval(Duration::from_millis(50))
            .with_record_send_times(100_000),
    );
    let (btc, sec) = (sym("BINANCE:BTCUSDT"), iv("1S"));
    let mut d = Driver::connect(&sim, "cs_recordtest01");
    let id = d.load(SeriesRequest::count(btc.clone(), sec, 10), 5 * S);
    let forming = d.history(id).expect("history").1;
    assert!(
        d.run_until(8 * S, |d| d.closed(id).len() >= 2),
        "two bars close within 8 s"
    );
    let sends = sim.take_live_sends();
    assert!(sim.take_live_sends().len() < sends.len(), "taking drains");
    // What was sent before the take arrives within a few turns.
    d.run_for(Duration::from_millis(300));
    assert!(sends.len() >= 20, "{} live messages recorded", sends.len());
    assert!(
        sends.windows(2).all(|w| w[0].at <= w[1].at),
        "in send order"
    );
    assert!(
        sends
            .iter()
            .all(|s| s.connection == 1 && s.symbol == btc && s.interval == sec)
    );
    // The session reports every live bar that differs from the one before as an update: the
    // recorded bars, repeats removed, are exactly the updates received, in order.
    let mut sent: Vec<_> = sends.iter().map(|s| s.bar).collect();
    sent.dedup();
    if sent.first().copied() == forming {
        sent.remove(0);
    }
    let updates: Vec<_> = d
        .series(id)
        .filter_map(|e| match e {
            SeriesEvent::Update(b) => Some(*b),
            _ => None,
        })
        .collect();
    assert!(
        updates.len() >= sent.len(),
        "{} < {}",
        updates.len(),
        sent.len()
    );
    assert_eq!(updates[..sent.len()], sent[..]);
    // Every close is a recorded final value.
    for b in d.closed(id) {
        assert!(sent.contains(&b), "close {} recorded", b.time);
    }
    assert_eq!(sim.send_times().len(), sim.take_live_sends().len());
}

#[test]
fn live_sends_are_not_recorded_by_default() {
    let sim = start(SimConfig::default().with_update_interval(Duration::from_millis(50)));
    let mut d = Driver::connect(&sim, "cs_norecord0001");
    d.load(
        SeriesRequest::count(sym("BINANCE:BTCUSDT"), iv("1S"), 10),
        5 * S,
    );
    d.run_for(Duration::from_millis(300));
    assert!(sim.counters().live_sent > 0);
    assert!(sim.take_live_sends().is_empty() && sim.send_times().is_empty());
}

#[test]
fn duplicated_du_frames_create_no_extra_closed_bars() {
    let sim = start(
        SimConfig::default()
            .with_update_interval(Duration::from_millis(100))
            .with_duplicate_du_every(1),
    );
    let (btc, sec) = (sym("BINANCE:BTCUSDT"), iv("1S"));
    let mut d = Driver::connect(&sim, "cs_duptest00001");
    let id = d.load(SeriesRequest::count(btc.clone(), sec, 10), 5 * S);
    assert!(
        d.run_until(8 * S, |d| d.closed(id).len() >= 2),
        "two bars close within 8 s"
    );
    let dups = d
        .messages
        .windows(2)
        .filter(|w| w[0] == w[1] && w[0].contains("\"du\""))
        .count();
    assert!(dups >= 1, "the server sent duplicated du messages");
    let closed = d.closed(id);
    assert!(
        closed.windows(2).all(|w| w[1].time == w[0].time + 1),
        "one close per bar: {closed:?}"
    );
    for b in &closed {
        assert_eq!(*b, sim.expected_bar(&btc, sec, b.time));
    }
}

#[test]
fn new_bar_is_announced_by_a_one_bar_timescale_update_at_index_plus_one() {
    let sim = start(SimConfig::default());
    let mut d = Driver::connect(&sim, "cs_newbartest01");
    let id = d.load(
        SeriesRequest::count(sym("BINANCE:BTCUSDT"), iv("1S"), 5),
        5 * S,
    );
    assert!(d.run_until(5 * S, |d| !d.closed(id).is_empty()));
    let frames: Vec<Parsed> = d.messages.iter().flat_map(|m| frames_of(m)).collect();
    let ts: Vec<&Parsed> = frames
        .iter()
        .filter(|f| f.method() == Some("timescale_update"))
        .collect();
    assert!(ts.len() >= 2, "load + new bar");
    let bars_of = |f: &Parsed| {
        f.param(1).expect("p[1]")["sds_1"]["s"]
            .as_array()
            .expect("s")
            .clone()
    };
    let loaded = bars_of(ts[0]);
    let last_index = loaded.last().expect("bars")["i"].as_i64().expect("i");
    let new_bar = ts[1];
    let s = bars_of(new_bar);
    assert_eq!(s.len(), 1);
    assert_eq!(
        s[0]["i"].as_i64(),
        Some(last_index + 1),
        "the forming bar's index + 1"
    );
    assert_eq!(
        new_bar.param(2).expect("p[2]")["index"].as_i64(),
        Some(last_index + 1)
    );
    let v = s[0]["v"].as_array().expect("v");
    assert!(
        v[1] == v[2] && v[2] == v[3] && v[3] == v[4],
        "o = h = l = c: {v:?}"
    );
}

#[test]
fn quiet_symbol_sends_no_live_updates() {
    let sim = start(
        SimConfig::default()
            .with_update_interval(Duration::from_millis(50))
            .with_quiet_symbols(vec!["BINANCE:QUIETUSDT".into()]),
    );
    let mut d = Driver::connect(&sim, "cs_quiettest001");
    let id = d.load(
        SeriesRequest::count(sym("BINANCE:QUIETUSDT"), iv("1S"), 5),
        5 * S,
    );
    d.run_for(Duration::from_millis(1_500));
    assert!(!d.messages.iter().any(|m| m.contains("\"du\"")));
    assert!(d.closed(id).is_empty());
}

#[test]
fn remove_series_stops_that_series_du() {
    let sim = start(SimConfig::default().with_update_interval(Duration::from_millis(50)));
    let mut d = Driver::connect(&sim, "cs_removetest01");
    let a = d.load(
        SeriesRequest::count(sym("BINANCE:BTCUSDT"), iv("1"), 5),
        5 * S,
    );
    let b = d.load(
        SeriesRequest::count(sym("BINANCE:ETHUSDT"), iv("1"), 5),
        5 * S,
    );
    let du_of = |m: &str, key: &str| {
        frames_of(m)
            .iter()
            .any(|f| f.method() == Some("du") && f.param(1).is_some_and(|p| p.get(key).is_some()))
    };
    assert!(
        d.run_until(5 * S, |d| d.messages.iter().any(|m| du_of(m, "sds_1"))),
        "sds_1 is live"
    );
    d.session().remove_series(a).expect("remove");
    // A marker the server answers after it has handled the removal (requests are in order).
    d.send_raw(&encode(Request::QuoteCreateSession {
        session: "qs_marker00001",
    }));
    d.send_raw(&encode(Request::QuoteAddSymbols {
        session: "qs_marker00001",
        symbols: &["NOWHERE:MARK"],
    }));
    assert!(d.run_until(5 * S, |d| {
        d.messages.iter().any(|m| m.contains("quote_completed"))
    }));
    let marker = d
        .messages
        .iter()
        .position(|m| m.contains("quote_completed"))
        .expect("marker");
    d.run_for(Duration::from_millis(500));
    let after = &d.messages[marker + 1..];
    assert!(
        !after.iter().any(|m| du_of(m, "sds_1")),
        "no du for the removed series"
    );
    assert!(
        after.iter().filter(|m| du_of(m, "sds_2")).count() >= 2,
        "the other series goes on"
    );
    assert!(d.history(b).is_some());
}

#[test]
fn chart_delete_session_stops_its_du() {
    let sim = start(SimConfig::default().with_update_interval(Duration::from_millis(50)));
    let mut raw = Raw::connect(&sim);
    let cs = "cs_deletetest01";
    raw.send(&encode(Request::ChartCreateSession { session: cs }));
    raw.send(&frame(
        r#"{"m":"resolve_symbol","p":["cs_deletetest01","sds_sym_1","BINANCE:BTCUSDT"]}"#,
    ));
    raw.send(&frame(
        r#"{"m":"create_series","p":["cs_deletetest01","sds_1","s1","sds_sym_1","1",5,""]}"#,
    ));
    assert!(
        raw.recv_method("du", 5 * S).is_some(),
        "live after the load (plain symbol form)"
    );
    raw.send(&encode(Request::ChartDeleteSession { session: cs }));
    raw.send(&encode(Request::QuoteCreateSession {
        session: "qs_marker00001",
    }));
    raw.send(&encode(Request::QuoteAddSymbols {
        session: "qs_marker00001",
        symbols: &["NOWHERE:MARK"],
    }));
    assert!(raw.recv_method("quote_completed", 5 * S).is_some());
    let n = raw.log.len();
    raw.run_for(Duration::from_millis(400));
    assert!(!raw.log[n..].iter().any(|(_, m)| m.contains("\"du\"")));
}

// ---------------------------------------------------------------- heartbeats

#[test]
fn chart_session_echoes_heartbeats_and_the_connection_stays_open() {
    let sim = start(
        SimConfig::default()
            .with_heartbeat_interval(Duration::from_millis(200))
            .with_heartbeat_timeout(Duration::from_millis(800)),
    );
    let mut d = Driver::connect(&sim, "cs_heartbeat001");
    d.run_for(Duration::from_millis(1_500));
    assert_eq!(d.end, None, "still open after 1.5 s");
    let beats = d.heartbeats();
    assert!(beats.len() >= 3, "heartbeats: {beats:?}");
    assert!(
        beats.windows(2).all(|w| w[1] == w[0] + 1),
        "numbered 1, 2, 3…: {beats:?}"
    );
    assert_eq!(beats[0], 1);
    assert!(
        d.messages.iter().any(|m| m == "~m~4~m~~h~1"),
        "a heartbeat is its own message"
    );
    assert_eq!(sim.counters().active, 1);
}

#[test]
fn client_that_never_echoes_is_closed_after_the_heartbeat_timeout() {
    let sim = start(
        SimConfig::default()
            .with_heartbeat_interval(Duration::from_millis(200))
            .with_heartbeat_timeout(Duration::from_millis(500)),
    );
    let mut raw = Raw::connect(&sim);
    let t0 = now();
    let end = raw
        .wait_end(10 * S)
        .expect("the server closes a silent client");
    assert!(t0.elapsed() < 8 * S);
    assert!(matches!(end, Recv::Closed | Recv::Gone(_)));
    assert!(
        raw.log.iter().any(|(_, m)| m.contains("~h~1")),
        "a heartbeat came first"
    );
    assert!(sim.wait_idle(5 * S));
}

// ---------------------------------------------------------------- quotes

#[test]
fn quote_add_symbols_gets_a_snapshot_then_quote_completed_then_deltas() {
    let sim = start(SimConfig::default().with_update_interval(Duration::from_millis(100)));
    let mut raw = Raw::connect(&sim);
    let qs = "qs_bctctzvicqaf";
    raw.send(&encode(Request::QuoteCreateSession { session: qs }));
    raw.send(&encode(Request::QuoteSetFields {
        session: qs,
        fields: &["lp", "ch", "volume"],
    }));
    raw.send(&encode(Request::QuoteAddSymbols {
        session: qs,
        symbols: &["BINANCE:BTCUSDT"],
    }));
    raw.send(&encode(Request::QuoteFastSymbols {
        session: qs,
        symbols: &["BINANCE:BTCUSDT"],
    }));
    let frames = raw
        .recv_method("quote_completed", 5 * S)
        .expect("quote_completed");
    let methods: Vec<_> = frames.iter().filter_map(Parsed::method).collect();
    assert_eq!(methods, ["qsd", "quote_completed"]);
    let snap = frames[0].param(1).expect("p[1]");
    assert_eq!(
        (snap["n"].as_str(), snap["s"].as_str()),
        (Some("BINANCE:BTCUSDT"), Some("ok"))
    );
    assert!(snap["v"]["lp"].as_f64().is_some() && snap["v"]["ch"].as_f64().is_some());
    assert_eq!(frames[1].param_str(1), Some("BINANCE:BTCUSDT"));
    // Then sparse deltas.
    let delta = raw.recv_method("qsd", 5 * S).expect("a delta");
    assert!(
        delta[0].param(1).expect("p[1]")["v"]["lp"]
            .as_f64()
            .is_some()
    );
}

#[test]
fn quote_of_an_unknown_symbol_has_status_error() {
    let sim = start(SimConfig::default().with_update_interval(Duration::from_millis(50)));
    let mut raw = Raw::connect(&sim);
    let qs = "qs_unknownsym01";
    raw.send(&encode(Request::QuoteCreateSession { session: qs }));
    raw.send(&encode(Request::QuoteAddSymbols {
        session: qs,
        symbols: &["BINANCE:INVALIDX"],
    }));
    let frames = raw
        .recv_method("quote_completed", 5 * S)
        .expect("quote_completed");
    let qsd = frames[0].param(1).expect("p[1]");
    assert_eq!(
        (qsd["n"].as_str(), qsd["s"].as_str()),
        (Some("BINANCE:INVALIDX"), Some("error"))
    );
    // And no "ok" deltas follow for it.
    let n = raw.log.len();
    raw.run_for(Duration::from_millis(400));
    assert!(
        !raw.log[n..].iter().any(|(_, m)| m.contains("\"qsd\"")),
        "{:?}",
        &raw.log[n..]
    );
}

#[test]
fn quote_add_symbols_with_a_flags_object_gets_critical_error() {
    let sim = start(SimConfig::default());
    let mut raw = Raw::connect(&sim);
    raw.send(&encode(Request::QuoteCreateSession {
        session: "qs_flagstest001",
    }));
    raw.send(&frame(
        r#"{"m":"quote_add_symbols","p":["qs_flagstest001","BINANCE:BTCUSDT",{"flags":["force_permission"]}]}"#,
    ));
    let frames = raw
        .recv_method("critical_error", 5 * S)
        .expect("critical_error");
    let ce = frames
        .iter()
        .find(|f| f.method() == Some("critical_error"))
        .expect("frame");
    assert_eq!(ce.param_str(0), Some("qs_flagstest001"));
    assert_eq!(ce.param_str(1), Some("invalid_parameters"));
    assert_eq!(ce.param_str(2), Some("quote_add_symbols"));
    assert!(raw.end.is_none(), "the connection stays open");
}

#[test]
fn spec_form_quote_symbols_are_echoed_and_updated() {
    let sim = start(SimConfig::default().with_update_interval(Duration::from_millis(50)));
    let mut raw = Raw::connect(&sim);
    let spec = r#"={"session":"regular","symbol":"NASDAQ:AAPL"}"#;
    raw.send(&encode(Request::QuoteCreateSession {
        session: "qs_spectest0001",
    }));
    raw.send(&encode(Request::QuoteAddSymbols {
        session: "qs_spectest0001",
        symbols: &[spec],
    }));
    let frames = raw
        .recv_method("quote_completed", 5 * S)
        .expect("quote_completed");
    assert_eq!(frames[0].param(1).expect("p[1]")["n"].as_str(), Some(spec));
    assert_eq!(frames[0].param(1).expect("p[1]")["s"].as_str(), Some("ok"));
    let delta = raw
        .recv_method("qsd", 5 * S)
        .expect("a delta for a spec-form symbol");
    assert_eq!(delta[0].param(1).expect("p[1]")["n"].as_str(), Some(spec));
}

// ---------------------------------------------------------------- counters and stop

#[test]
fn counters_count_connections_messages_and_bytes() {
    let sim = start(SimConfig::default().with_quiet_symbols(vec!["BINANCE:BTCUSDT".into()]));
    assert_eq!(sim.counters().connections, 0);
    let mut d = Driver::connect(&sim, "cs_counterstest");
    let id = d.load(
        SeriesRequest::count(sym("BINANCE:BTCUSDT"), iv("60"), 20),
        5 * S,
    );
    assert!(d.history(id).is_some());
    let (msgs, bytes, sent) = (
        d.messages.len() as u64,
        d.messages.iter().map(|m| m.len() as u64).sum::<u64>(),
        d.sent,
    );
    // The counters move after the bytes are written: give them a moment, on socket reads.
    let ok = d.run_until(5 * S, |_| {
        let c = sim.counters();
        c.messages_sent == msgs && c.bytes_sent == bytes && c.messages_received == sent
    });
    let c = sim.counters();
    assert!(
        ok,
        "counters {c:?} vs received {msgs} msgs / {bytes} bytes, sent {sent}"
    );
    assert_eq!((c.connections, c.active, c.refused), (1, 1, 0));
    assert!(msgs >= 2 && sent >= 4);
    let _second = connect(&sim);
    assert!(sim.wait_connections(2, 5 * S));
    assert_eq!(sim.counters().connections, 2);
}

#[test]
fn stop_returns_true_within_its_timeout_with_clients_connected() {
    let sim = start(SimConfig::default().with_update_interval(Duration::from_millis(50)));
    let mut d = Driver::connect(&sim, "cs_stoptest0001");
    d.load(
        SeriesRequest::count(sym("BINANCE:BTCUSDT"), iv("1S"), 5),
        5 * S,
    );
    let mut raw = Raw::connect(&sim);
    assert!(sim.wait_connections(2, 5 * S));
    let t0 = now();
    assert!(sim.stop(3 * S), "stop reports every thread stopped");
    assert!(t0.elapsed() < 4 * S, "stop took {:?}", t0.elapsed());
    assert!(raw.wait_end(5 * S).is_some(), "clients see the end");
    assert!(d.run_until(5 * S, |d| d.end.is_some()));
}
