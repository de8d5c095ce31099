//! The protocol core against the real frames of protocol.md: parsing, the session state
//! machine, errors, and property tests of the codec.

mod util;

use std::time::{Duration, Instant};

use proptest::prelude::*;

#[path = "../src/prop_seed.rs"]
mod prop_seed;
use tvdatafeed::{
    Bar,
    internal::fuzzing,
    protocol::{
        ChartConfig, ChartEvent, ChartId, Connection, ConnectionConfig, ConnectionError, Event,
        MessageParser, QuoteValue, SeriesEvent, SeriesFailure, SeriesKey, SeriesRequest,
        ServerMessage, SessionError,
        frame::{self, Frame, FrameDecoder, FrameError},
    },
};
use util::frames::*;

const CS: &str = "cs_kjvmuwkghjuz";

/// The payload of a single-frame message.
fn payload(frame: &str) -> Vec<u8> {
    let mut msg = frame.as_bytes().to_vec();
    let mut frames = FrameDecoder::new().frames(&mut msg);
    match frames.next() {
        Some(Ok(Frame::Json(p))) => p.to_vec(),
        other => panic!("not one json frame: {other:?}"),
    }
}

fn bar(time: i64, o: f64, h: f64, l: f64, c: f64, v: Option<f64>) -> Bar {
    Bar {
        time,
        open: o,
        high: h,
        low: l,
        close: c,
        volume: v,
    }
}

#[test]
fn hello_parses_with_its_fields() {
    let mut parser = MessageParser::new();
    let mut p = payload(HELLO);
    let ServerMessage::Hello(h) = parser.parse(&mut p).unwrap() else {
        panic!()
    };
    assert_eq!(h.session_id, "0.15285.1507_lax1-charts-free-4-tvbs-1om9o-3");
    assert_eq!(h.timestamp, Some(1751833034));
    assert_eq!(h.release, Some("release_208-65"));
    assert_eq!(h.protocol, Some("json"));
    assert_eq!(h.auth_scheme_version, Some(2));
    assert_eq!(h.via, Some("23.19.148.73:443"));
}

#[test]
fn history_and_live_frames_parse_to_bars() {
    let mut parser = MessageParser::new();
    let mut p = payload(TIMESCALE_LOAD);
    let ServerMessage::TimescaleUpdate { session, data } = parser.parse(&mut p).unwrap() else {
        panic!()
    };
    assert_eq!(session, CS);
    let u = data.iter().next().unwrap();
    assert_eq!(
        (u.key, u.turnaround, u.is_study),
        ("sds_1", Some("s1"), false)
    );
    assert_eq!(u.bar_close_time, Some(1751833080));
    let times: Vec<_> = u.bars.iter().map(|b| (b.index, b.bar.time)).collect();
    assert_eq!(times, [(0, 1751832900), (1, 1751832960), (2, 1751833020)]);
    assert_eq!(
        u.bars[0].bar,
        bar(
            1751832900,
            108780.01,
            108790.0,
            108751.2,
            108760.5,
            Some(3.20417)
        )
    );

    for (frame, index, close) in [
        (DU_299, 299, 108756.41),
        (DU_300, 300, 108756.41),
        (NEW_BAR, 300, 108756.4),
    ] {
        let mut p = payload(frame);
        let data = match parser.parse(&mut p).unwrap() {
            ServerMessage::DataUpdate { data, .. }
            | ServerMessage::TimescaleUpdate { data, .. } => data,
            other => panic!("{other:?}"),
        };
        let u = data.iter().next().unwrap();
        assert_eq!(u.bars.len(), 1);
        assert_eq!(u.bars[0].index, index);
        assert_eq!(u.bars[0].bar.close, close);
    }
    // The 2022 sample uses the series key "s1".
    let mut p = payload(DU_2022);
    let ServerMessage::DataUpdate { data, .. } = parser.parse(&mut p).unwrap() else {
        panic!()
    };
    assert_eq!(data.iter().next().unwrap().key, "s1");
}

#[test]
fn study_data_is_kept_apart_and_study_lifecycle_is_other() {
    let mut parser = MessageParser::new();
    let mut p = payload(STUDY_DU);
    let ServerMessage::DataUpdate { data, .. } = parser.parse(&mut p).unwrap() else {
        panic!()
    };
    let u = data.iter().next().unwrap();
    assert!(u.is_study);
    assert!(u.bars.is_empty());
    for f in [STUDY_LOADING, STUDY_COMPLETED, SERIES_TIMEFRAME] {
        let mut p = payload(f);
        assert!(matches!(
            parser.parse(&mut p).unwrap(),
            ServerMessage::Other { .. } | ServerMessage::SeriesTimeframe { .. }
        ));
    }
    let mut p = br#"{"m":"some_new_message","p":[1,2,3]}"#.to_vec();
    assert!(matches!(
        parser.parse(&mut p).unwrap(),
        ServerMessage::Other {
            method: "some_new_message"
        }
    ));
}

#[test]
fn error_frames_parse_to_typed_messages() {
    let mut parser = MessageParser::new();
    let mut p = payload(SYMBOL_ERROR);
    assert!(matches!(
        parser.parse(&mut p).unwrap(),
        ServerMessage::SymbolError {
            symbol_id: "sds_sym_1",
            reason: "invalid symbol",
            kind: None,
            ..
        }
    ));
    let mut p = payload(SERIES_ERROR_SECONDS);
    assert!(matches!(
        parser.parse(&mut p).unwrap(),
        ServerMessage::SeriesError {
            series: "sds_1",
            reason: "seconds_not_entitled",
            turnaround: Some("s1"),
            ..
        }
    ));
    let mut p = payload(CRITICAL_ERROR_TZ);
    let ServerMessage::CriticalError { reason, detail, .. } = parser.parse(&mut p).unwrap() else {
        panic!()
    };
    assert_eq!(reason, "invalid timezone");
    assert_eq!(
        detail,
        Some(r#"method: switch_timezone. args: "[Nowhere/Nowhere]""#)
    );
    for (f, text) in [
        (PROTOCOL_ERROR_AUTH, "bad auth token"),
        (PROTOCOL_ERROR_WRONG, "wrong data"),
    ] {
        let mut p = payload(f);
        let ServerMessage::ProtocolError { text: t } = parser.parse(&mut p).unwrap() else {
            panic!()
        };
        assert_eq!(t, text);
    }
    let mut p = br#"{"m":"symbol_error","p":["cs_test","sds_sym_1","permission denied","group","economics_paid"]}"#.to_vec();
    assert!(matches!(
        parser.parse(&mut p).unwrap(),
        ServerMessage::SymbolError {
            reason: "permission denied",
            kind: Some("group"),
            detail: Some("economics_paid"),
            ..
        }
    ));
}

#[test]
fn quote_frames_parse() {
    let mut parser = MessageParser::new();
    let mut p = payload(QSD_FULL);
    let ServerMessage::QuoteData {
        symbol,
        status,
        fields,
        ..
    } = parser.parse(&mut p).unwrap()
    else {
        panic!()
    };
    assert_eq!((symbol, status), ("BINANCE:BTCUSDT", "ok"));
    assert_eq!(
        fields,
        [
            ("volume", QuoteValue::Number(4800.73942)),
            ("lp", QuoteValue::Number(108756.4)),
            ("ch", QuoteValue::Number(558.28))
        ]
    );
    let mut p = payload(QUOTE_COMPLETED);
    assert!(matches!(
        parser.parse(&mut p).unwrap(),
        ServerMessage::QuoteCompleted {
            symbol: "BINANCE:BTCUSDT",
            ..
        }
    ));
    let mut p = payload(SYMBOL_RESOLVED);
    let ServerMessage::SymbolResolved {
        symbol_id, info, ..
    } = parser.parse(&mut p).unwrap()
    else {
        panic!()
    };
    assert_eq!(symbol_id, "sds_sym_1");
    assert_eq!(info.pro_name, "BINANCE:BTCUSDT");
    assert_eq!(info.kind, "spot");
    assert_eq!(info.pricescale, 100.0);
    assert_eq!(info.timezone, "Etc/UTC");
    assert!(info.has_intraday && info.is_tradable);
}

#[test]
fn malformed_payloads_are_typed_errors_and_the_parser_goes_on() {
    let mut parser = MessageParser::new();
    for bad in [&b"{"[..], b"[1,2]", b"{\"x\":1}", b"nul", b""] {
        let mut p = bad.to_vec();
        assert!(
            parser.parse(&mut p).is_err(),
            "{:?}",
            String::from_utf8_lossy(bad)
        );
    }
    for bad in [
        &br#"{"m":"du","p":["cs",{"sds_1":{"s":[{"i":1,"v":[1,2,3]}]}}]}"#[..],
        br#"{"m":"du","p":["cs",{"sds_1":{"s":[{"i":1,"v":[1e300,2,3,4,5]}]}}]}"#,
        br#"{"m":"du","p":["cs",{"sds_1":{"s":[{"i":1,"v":[1,"2",3,4,5]}]}}]}"#,
        br#"{"m":"du","p":["cs",{"sds_1":{"s":5}}]}"#,
        br#"{"m":"du","p":["cs"]}"#,
        br#"{"m":"series_loading","p":[1]}"#,
    ] {
        let mut p = bad.to_vec();
        assert!(
            parser.parse(&mut p).is_err(),
            "{}",
            String::from_utf8_lossy(bad)
        );
    }
    let mut p = payload(DU_299);
    assert!(matches!(
        parser.parse(&mut p),
        Ok(ServerMessage::DataUpdate { .. })
    ));
}

#[test]
fn five_value_bars_have_no_volume() {
    let mut parser = MessageParser::new();
    let mut p = br#"{"m":"timescale_update","p":["cs_x",{"sds_2":{"s":[{"i":0,"v":[1686355200.0,14500.25,14510.5,14490.0,14505.75]},{"i":1,"v":[1686355260.0,14505.75,14506.0,14501.0,14502.5,null]}],"ns":{"d":"","indexes":[]},"t":"s1"}},{"index":0,"zoffset":0,"changes":[],"marks":[],"index_diff":[]}]}"#.to_vec();
    let ServerMessage::TimescaleUpdate { data, .. } = parser.parse(&mut p).unwrap() else {
        panic!()
    };
    let u = data.iter().next().unwrap();
    assert_eq!(
        u.bars[0].bar,
        bar(1686355200, 14500.25, 14510.5, 14490.0, 14505.75, None)
    );
    assert_eq!(u.bars[1].bar.volume, None);
}

// ---------------------------------------------------------------- the session

/// The load exactly as the real server sends it: six frames in one websocket message.
fn load_message() -> Vec<u8> {
    [
        SERIES_LOADING,
        SYMBOL_RESOLVED,
        QSD_FULL,
        QUOTE_COMPLETED,
        TIMESCALE_LOAD,
        SERIES_COMPLETED,
    ]
    .concat()
    .into_bytes()
}

/// A connection with one chart session named [`CS`], driven on a virtual clock: times are
/// milliseconds after a fixed base instant.
struct Session {
    conn: Connection,
    chart: ChartId,
    t0: Instant,
    next_key: u64,
}

impl Session {
    fn new(conn: ConnectionConfig, chart: ChartConfig) -> Self {
        let t0 = util::now();
        let mut c = Connection::new(t0, conn);
        let chart = c.add_chart_named(t0, CS, chart);
        Self {
            conn: c,
            chart,
            t0,
            next_key: 0,
        }
    }

    fn at(&self, ms: u64) -> Instant {
        self.t0 + Duration::from_millis(ms)
    }

    fn add_series(&mut self, ms: u64, req: SeriesRequest) -> Result<SeriesKey, SessionError> {
        let key = SeriesKey(self.next_key);
        self.next_key += 1;
        let now = self.at(ms);
        self.conn
            .chart_mut(self.chart)
            .expect("chart")
            .add_series(now, key, req)
            .map(|()| key)
    }

    fn remove_series(&mut self, key: SeriesKey) -> Result<(), SessionError> {
        self.conn
            .chart_mut(self.chart)
            .expect("chart")
            .remove_series(key)
    }

    fn handle_message(&mut self, ms: u64, msg: &mut [u8]) -> Result<(), ConnectionError> {
        let now = self.at(ms);
        self.conn.handle_message(now, msg)
    }

    fn handle_timeout(&mut self, ms: u64) {
        let now = self.at(ms);
        self.conn.handle_timeout(now);
    }

    /// The next deadline, in ms after the base.
    fn poll_timeout(&self) -> Option<u64> {
        self.conn
            .poll_timeout()
            .map(|t| t.duration_since(self.t0).as_millis() as u64)
    }

    fn poll_event(&mut self) -> Option<Event> {
        self.conn.poll_event()
    }
}

fn drain(s: &mut Session) -> Vec<Event> {
    std::iter::from_fn(|| s.poll_event()).collect()
}

fn transmitted(s: &mut Session) -> Vec<String> {
    std::iter::from_fn(|| s.conn.poll_transmit())
        .map(|m| String::from_utf8(m).unwrap())
        .collect()
}

fn series_events(events: Vec<Event>, want: SeriesKey) -> Vec<SeriesEvent> {
    events
        .into_iter()
        .map(|e| match e {
            Event::Chart {
                event: ChartEvent::Series { key, event },
                ..
            } => {
                assert_eq!(key, want);
                event
            }
            other => panic!("unexpected event {other:?}"),
        })
        .collect()
}

fn btc_session(closed_bars: u32) -> (Session, SeriesKey) {
    let mut s = Session::new(ConnectionConfig::default(), ChartConfig::default());
    let req = SeriesRequest::count(
        "BINANCE:BTCUSDT".parse().unwrap(),
        "1".parse().unwrap(),
        closed_bars,
    );
    let id = s.add_series(0, req).unwrap();
    (s, id)
}

#[test]
fn session_sends_the_canonical_opening() {
    let (mut s, _) = btc_session(2);
    assert_eq!(
        transmitted(&mut s),
        [
            r#"~m~54~m~{"m":"set_auth_token","p":["unauthorized_user_token"]}"#,
            r#"~m~34~m~{"m":"set_locale","p":["en","US"]}"#,
            r#"~m~55~m~{"m":"chart_create_session","p":["cs_kjvmuwkghjuz",""]}"#,
            r#"~m~144~m~{"m":"resolve_symbol","p":["cs_kjvmuwkghjuz","sds_sym_1","={\"adjustment\":\"splits\",\"session\":\"regular\",\"symbol\":\"BINANCE:BTCUSDT\"}"]}"#,
            r#"~m~79~m~{"m":"create_series","p":["cs_kjvmuwkghjuz","sds_1","s1","sds_sym_1","1",3,""]}"#,
        ]
    );
}

#[test]
fn the_real_load_message_yields_exactly_the_bars_and_the_completion() {
    let (mut s, id) = btc_session(2);
    let _ = transmitted(&mut s);
    let mut msg = load_message();
    s.handle_message(1, &mut msg).unwrap();
    let events = series_events(drain(&mut s), id);
    assert_eq!(events.len(), 2, "{events:?}");
    assert!(
        matches!(&events[0], SeriesEvent::Resolved(info) if info.full_name == "BINANCE:BTCUSDT")
    );
    assert_eq!(
        events[1],
        SeriesEvent::History {
            bars: vec![
                bar(
                    1751832900,
                    108780.01,
                    108790.0,
                    108751.2,
                    108760.5,
                    Some(3.20417)
                ),
                bar(
                    1751832960,
                    108760.5,
                    108771.3,
                    108740.0,
                    108744.9,
                    Some(2.11873)
                ),
            ],
            forming: Some(bar(
                1751833020,
                108744.9,
                108756.41,
                108744.9,
                108756.4,
                Some(0.02891)
            )),
            update_mode: "streaming".into(),
        }
    );
    assert!(transmitted(&mut s).is_empty(), "nothing more to ask");
}

#[test]
fn a_du_then_a_new_bar_closes_the_bar_with_the_last_du_values() {
    let (mut s, id) = btc_session(2);
    let mut msg = load_message();
    s.handle_message(1, &mut msg).unwrap();
    let _ = drain(&mut s);

    let mut du = DU_299.as_bytes().to_vec();
    s.handle_message(2, &mut du).unwrap();
    let last_du = bar(
        1751833020,
        108756.4,
        108756.41,
        108756.4,
        108756.41,
        Some(0.031),
    );
    assert_eq!(
        series_events(drain(&mut s), id),
        [SeriesEvent::Update(last_du)]
    );
    // The same frame twice (as observed) changes nothing.
    let mut du = DU_299.as_bytes().to_vec();
    s.handle_message(3, &mut du).unwrap();
    assert!(drain(&mut s).is_empty());

    let mut new_bar = NEW_BAR.as_bytes().to_vec();
    s.handle_message(4, &mut new_bar).unwrap();
    let opened = bar(
        1751833080,
        108756.4,
        108756.4,
        108756.4,
        108756.4,
        Some(0.0),
    );
    assert_eq!(
        series_events(drain(&mut s), id),
        [SeriesEvent::Closed(last_du), SeriesEvent::Update(opened)]
    );
    let mut du = DU_300.as_bytes().to_vec();
    s.handle_message(5, &mut du).unwrap();
    assert_eq!(
        series_events(drain(&mut s), id),
        [SeriesEvent::Update(bar(
            1751833080,
            108756.4,
            108756.41,
            108756.4,
            108756.41,
            Some(0.04904)
        ))]
    );
}

#[test]
fn history_pages_with_request_more_data_until_a_page_adds_nothing() {
    let (mut s, id) = btc_session(300);
    let _ = transmitted(&mut s);
    let mut msg = load_message();
    s.handle_message(1, &mut msg).unwrap();
    let events = series_events(drain(&mut s), id);
    assert!(
        matches!(events[1], SeriesEvent::Progress { bars: 3 }),
        "{events:?}"
    );
    assert_eq!(
        transmitted(&mut s),
        [r#"~m~61~m~{"m":"request_more_data","p":["cs_kjvmuwkghjuz","sds_1",298]}"#]
    );
    // An older page: two bars, one of them a duplicate of a known bar.
    let page = r#"{"m":"timescale_update","p":["cs_kjvmuwkghjuz",{"sds_1":{"s":[{"i":0,"v":[1751832840.0,1.0,2.0,0.5,1.5,7.0]},{"i":1,"v":[1751832900.0,108780.01,108790.0,108751.2,108760.5,3.20417]}],"ns":{"d":"","indexes":[]},"t":"s1"}},{"index":0,"zoffset":2,"changes":[],"marks":[],"index_diff":[]}]}"#;
    let done = r#"{"m":"series_completed","p":["cs_kjvmuwkghjuz","sds_1","streaming","s1",{"rt_update_period":5}]}"#;
    let empty = r#"{"m":"timescale_update","p":["cs_kjvmuwkghjuz",{"sds_1":{"s":[],"ns":{"d":"","indexes":[]},"t":"s1"}},{"index":0,"zoffset":0,"changes":[],"marks":[],"index_diff":[]}]}"#;
    let mut m = Vec::new();
    frame::encode_frame(page.as_bytes(), &mut m);
    frame::encode_frame(done.as_bytes(), &mut m);
    s.handle_message(2, &mut m).unwrap();
    assert!(matches!(
        series_events(drain(&mut s), id)[..],
        [SeriesEvent::Progress { bars: 4 }]
    ));
    assert_eq!(
        transmitted(&mut s).len(),
        1,
        "asks again: the page added a bar"
    );
    let mut m = Vec::new();
    frame::encode_frame(empty.as_bytes(), &mut m);
    frame::encode_frame(done.as_bytes(), &mut m);
    s.handle_message(3, &mut m).unwrap();
    let events = series_events(drain(&mut s), id);
    let [SeriesEvent::History { bars, forming, .. }] = &events[..] else {
        panic!("{events:?}")
    };
    let times: Vec<_> = bars.iter().map(|b| b.time).collect();
    assert_eq!(times, [1751832840, 1751832900, 1751832960]);
    assert_eq!(forming.unwrap().time, 1751833020);
    assert!(transmitted(&mut s).is_empty());
}

/// `forming_counted` (tvDatafeed's `n_bars`): `Count(3)` asks the server for 3 bars, not 4,
/// and 3 bars need no second request: 2 closed and the forming one when the market is live, 3
/// closed when the last bar has closed (the server's `bar_close_time` is past it). Without it
/// the same count is 3 closed bars: 4 asked, and a page for the one more.
#[test]
fn a_count_with_the_forming_bar_counted_is_one_request_of_that_many_bars() {
    let live = load_message();
    // The same load, its bar_close_time two bars past the last bar: the last bar has closed.
    let closed = String::from_utf8(live.clone())
        .unwrap()
        .replace(
            r#""bar_close_time":1751833080"#,
            r#""bar_close_time":1751833200"#,
        )
        .into_bytes();
    assert_ne!(closed, live);
    // At 2 the server's 3 bars are one more than asked: the oldest goes.
    for (n, msg, forming) in [
        (3, &live, true),
        (3, &closed, false),
        (2, &live, true),
        (2, &closed, false),
    ] {
        let closed_bars = n as usize - usize::from(forming);
        let mut s = Session::new(ConnectionConfig::default(), ChartConfig::default());
        let req = SeriesRequest::count("BINANCE:BTCUSDT".parse().unwrap(), "1".parse().unwrap(), n)
            .with_forming_counted(true);
        let id = s.add_series(0, req).unwrap();
        let sent = transmitted(&mut s);
        assert!(
            sent.last()
                .unwrap()
                .ends_with(&format!(r#""sds_sym_1","1",{n},""]}}"#)),
            "{sent:?}"
        );
        let mut msg = msg.clone();
        s.handle_message(1, &mut msg).unwrap();
        let events = series_events(drain(&mut s), id);
        let Some(SeriesEvent::History {
            bars, forming: f, ..
        }) = events.last()
        else {
            panic!("{events:?}")
        };
        assert_eq!(bars.len(), closed_bars, "{bars:?}");
        assert_eq!(f.is_some(), forming);
        assert_eq!(
            bars.last().unwrap().time + 60 * i64::from(forming),
            1751833020
        );
        assert!(transmitted(&mut s).is_empty(), "one request");
    }
    // Counted apart (the default): 3 closed bars are 4 with the forming one, so a page.
    let (mut s, _) = btc_session(3);
    let sent = transmitted(&mut s);
    assert!(
        sent.last().unwrap().ends_with(r#""sds_sym_1","1",4,""]}"#),
        "{sent:?}"
    );
    let mut msg = load_message();
    s.handle_message(1, &mut msg).unwrap();
    assert_eq!(
        transmitted(&mut s),
        [r#"~m~59~m~{"m":"request_more_data","p":["cs_kjvmuwkghjuz","sds_1",1]}"#]
    );
}

#[test]
fn a_bad_symbol_fails_at_once_with_one_typed_event() {
    let (mut s, id) = btc_session(10);
    let mut m = [SERIES_LOADING, SYMBOL_ERROR, SERIES_ERROR_RESOLVE]
        .concat()
        .into_bytes();
    s.handle_message(1, &mut m).unwrap();
    assert_eq!(
        series_events(drain(&mut s), id),
        [SeriesEvent::Failed(SeriesFailure::UnknownSymbol {
            reason: "invalid symbol".into()
        })]
    );
    // Nothing after: not even the later completion or data.
    let mut m = [TIMESCALE_LOAD, SERIES_COMPLETED, DU_299]
        .concat()
        .into_bytes();
    s.handle_message(2, &mut m).unwrap();
    assert!(drain(&mut s).is_empty());
    assert_eq!(
        s.poll_timeout(),
        Some(45_002),
        "only the idle timer is left"
    );
}

#[test]
fn every_error_message_is_a_typed_event() {
    let (mut s, id) = btc_session(10);
    let mut m = SERIES_ERROR_SECONDS.as_bytes().to_vec();
    s.handle_message(1, &mut m).unwrap();
    assert_eq!(
        series_events(drain(&mut s), id),
        [SeriesEvent::Failed(SeriesFailure::IntervalNotEntitled {
            reason: "seconds_not_entitled".into()
        })]
    );

    let (mut s, id) = btc_session(10);
    let mut m = CRITICAL_ERROR_XX.as_bytes().to_vec();
    s.handle_message(1, &mut m).unwrap();
    let events = series_events(drain(&mut s), id);
    assert!(
        matches!(&events[..], [SeriesEvent::Failed(SeriesFailure::InvalidParameters { reason, .. })] if reason == "invalid parameters"),
        "{events:?}"
    );

    let mut m = [CRITICAL_ERROR_TZ, PROTOCOL_ERROR_AUTH]
        .concat()
        .into_bytes();
    s.handle_message(2, &mut m).unwrap();
    let chart = s.chart;
    assert_eq!(
        drain(&mut s),
        [
            Event::Chart {
                chart,
                event: ChartEvent::CriticalError {
                    reason: "invalid timezone".into(),
                    detail: Some(r#"method: switch_timezone. args: "[Nowhere/Nowhere]""#.into())
                }
            },
            Event::ProtocolError {
                text: "bad auth token".into()
            }
        ]
    );

    let (mut s, id) = btc_session(10);
    let mut m = Vec::new();
    frame::encode_frame(
        br#"{"m":"symbol_error","p":["cs_kjvmuwkghjuz","sds_sym_1","permission denied","group","mcx_free"]}"#,
        &mut m,
    );
    s.handle_message(1, &mut m).unwrap();
    assert_eq!(
        series_events(drain(&mut s), id),
        [SeriesEvent::Failed(SeriesFailure::PermissionDenied {
            kind: "group".into(),
            detail: "mcx_free".into()
        })]
    );
}

#[test]
fn heartbeats_are_echoed_exactly() {
    let (mut s, _) = btc_session(1);
    let _ = transmitted(&mut s);
    let mut hb = b"~m~5~m~~h~16".to_vec();
    s.handle_message(1, &mut hb).unwrap();
    assert_eq!(drain(&mut s), [Event::Heartbeat(16)]);
    assert_eq!(transmitted(&mut s), ["~m~5~m~~h~16"]);
}

#[test]
fn a_malformed_frame_does_not_lose_the_frames_around_it() {
    let (mut s, id) = btc_session(2);
    // Garbage JSON between good frames, then a frame with a wrong length prefix.
    let mut m = [
        SERIES_LOADING,
        SYMBOL_RESOLVED,
        "~m~5~m~{nope",
        TIMESCALE_LOAD,
        SERIES_COMPLETED,
        "~m~9~m~{}",
    ]
    .concat()
    .into_bytes();
    let err = s.handle_message(1, &mut m).unwrap_err();
    assert!(matches!(err, ConnectionError::Message(_)), "{err:?}");
    let events = series_events(drain(&mut s), id);
    assert!(matches!(events.last(), Some(SeriesEvent::History { bars, .. }) if bars.len() == 2));

    let mut m = [DU_299, "~m~99999999~m~x"].concat().into_bytes();
    let err = s.handle_message(2, &mut m).unwrap_err();
    assert!(
        matches!(err, ConnectionError::Frame(FrameError::TooLong { .. })),
        "{err:?}"
    );
    assert_eq!(
        series_events(drain(&mut s), id).len(),
        1,
        "the du before it was handled"
    );
}

#[test]
fn load_and_idle_timeouts_fire_from_poll_timeout() {
    let mut s = Session::new(
        ConnectionConfig::default().with_idle_timeout(Duration::from_secs(60)),
        ChartConfig::default().with_load_timeout(Duration::from_secs(5)),
    );
    let id = s
        .add_series(
            100,
            SeriesRequest::count("BINANCE:BTCUSDT".parse().unwrap(), "1".parse().unwrap(), 5),
        )
        .unwrap();
    assert_eq!(s.poll_timeout(), Some(5_100));
    s.handle_timeout(5_099);
    assert!(drain(&mut s).is_empty());
    s.handle_timeout(5_100);
    assert_eq!(
        series_events(drain(&mut s), id),
        [SeriesEvent::Failed(SeriesFailure::LoadTimeout {
            timeout: Duration::from_secs(5)
        })]
    );
    let mut hb = b"~m~4~m~~h~1".to_vec();
    s.handle_message(6_000, &mut hb).unwrap();
    let _ = drain(&mut s);
    assert_eq!(s.poll_timeout(), Some(66_000));
    s.handle_timeout(66_000);
    assert_eq!(
        drain(&mut s),
        [Event::Idle {
            silent: Duration::from_secs(60)
        }]
    );
    s.handle_timeout(70_000);
    assert!(drain(&mut s).is_empty(), "idle fires once per silence");
}

#[test]
fn removed_series_get_no_more_events_and_the_server_is_told() {
    let (mut s, id) = btc_session(2);
    let _ = transmitted(&mut s);
    let mut msg = load_message();
    s.handle_message(1, &mut msg).unwrap();
    s.remove_series(id).unwrap();
    assert!(
        drain(&mut s).is_empty(),
        "queued events of the series are dropped"
    );
    assert_eq!(
        transmitted(&mut s),
        [r#"~m~53~m~{"m":"remove_series","p":["cs_kjvmuwkghjuz","sds_1"]}"#]
    );
    let mut du = DU_299.as_bytes().to_vec();
    s.handle_message(2, &mut du).unwrap();
    assert!(drain(&mut s).is_empty());
    assert_eq!(s.remove_series(id), Err(SessionError::UnknownSeries(id)));
}

#[test]
fn several_series_share_one_session() {
    let mut s = Session::new(ConnectionConfig::default(), ChartConfig::default());
    let a = s
        .add_series(
            0,
            SeriesRequest::count("BINANCE:BTCUSDT".parse().unwrap(), "1".parse().unwrap(), 2),
        )
        .unwrap();
    let b = s
        .add_series(
            0,
            SeriesRequest::count("SP:SPX".parse().unwrap(), "1".parse().unwrap(), 1),
        )
        .unwrap();
    let mut m = load_message();
    s.handle_message(1, &mut m).unwrap();
    let two = r#"{"m":"timescale_update","p":["cs_kjvmuwkghjuz",{"sds_2":{"s":[{"i":0,"v":[1751832960.0,6200.0,6201.0,6199.0,6200.5]},{"i":1,"v":[1751833020.0,6200.5,6202.0,6200.0,6201.0]}],"ns":{"d":"","indexes":[]},"t":"s1","lbs":{"bar_close_time":1751833080}},"sds_1":{"s":[{"i":2,"v":[1751833020.0,1.0,1.0,1.0,1.0,1.0]}],"t":"s1"}},{}]}"#;
    let done = r#"{"m":"series_completed","p":["cs_kjvmuwkghjuz","sds_2","delayed_streaming_900","s1",{}]}"#;
    let mut m = Vec::new();
    frame::encode_frame(two.as_bytes(), &mut m);
    frame::encode_frame(done.as_bytes(), &mut m);
    s.handle_message(2, &mut m).unwrap();
    let events = drain(&mut s);
    let for_b: Vec<_> = events
        .iter()
        .filter_map(|e| match e {
            Event::Chart {
                event: ChartEvent::Series { key, event },
                ..
            } if *key == b => Some(event.clone()),
            _ => None,
        })
        .collect();
    assert_eq!(
        for_b,
        [SeriesEvent::History {
            bars: vec![bar(1751832960, 6200.0, 6201.0, 6199.0, 6200.5, None)],
            forming: Some(bar(1751833020, 6200.5, 6202.0, 6200.0, 6201.0, None)),
            update_mode: "delayed_streaming_900".into(),
        }]
    );
    // Series a got its live update from the same message.
    assert!(events.iter().any(|e| matches!(
        e,
        Event::Chart { event: ChartEvent::Series { key, event: SeriesEvent::Update(bar) }, .. }
            if *key == a && bar.close == 1.0
    )));
}

// ---------------------------------------------------------------- properties

/// A JSON-ish payload without the frame marker inside, ASCII or not.
fn payload_strategy() -> impl Strategy<Value = String> {
    "[ -~é😀]{0,64}".prop_filter("no ~m~ inside", |s| {
        !s.contains("~m~") && !s.starts_with("~h~")
    })
}

proptest! {
    #![proptest_config(prop_seed::config(512))]

    #[test]
    fn encode_then_decode_round_trips(payloads in proptest::collection::vec(payload_strategy(), 1..6), hb in any::<u64>()) {
        let mut msg = Vec::new();
        for p in &payloads {
            frame::encode_frame(p.as_bytes(), &mut msg);
        }
        frame::encode_heartbeat(hb, &mut msg);
        let mut got = Vec::new();
        for f in FrameDecoder::new().frames(&mut msg) {
            match f.unwrap() {
                Frame::Json(p) => got.push(String::from_utf8(p.to_vec()).unwrap()),
                Frame::Heartbeat(n) => prop_assert_eq!(n, hb),
            }
        }
        prop_assert_eq!(got, payloads);
    }

    #[test]
    fn the_decoder_never_panics_nor_overconsumes(data in proptest::collection::vec(any::<u8>(), 0..256)) {
        fuzzing::frame_decoder(&data);
    }

    #[test]
    fn the_decoder_survives_frame_shaped_noise(parts in proptest::collection::vec((0usize..40, "[~mh0-9{}a]{0,12}"), 0..8)) {
        let mut data = String::new();
        for (n, body) in parts {
            data.push_str(&format!("~m~{n}~m~{body}"));
        }
        fuzzing::frame_decoder(data.as_bytes());
        let len = (data.len() as u16).to_le_bytes();
        fuzzing::session(&[&[0u8, len[0], len[1]][..], data.as_bytes()].concat());
    }

    #[test]
    fn the_parser_never_panics(data in proptest::collection::vec(any::<u8>(), 0..256)) {
        fuzzing::message_parser(&data);
    }

    #[test]
    fn the_session_keeps_its_contracts_on_arbitrary_input(data in proptest::collection::vec(any::<u8>(), 0..512)) {
        fuzzing::session(&data);
    }
}

/// The session harness on real traffic with the ops the fuzzer would pick, so that the
/// property checks are known to see histories, updates and closes.
#[test]
fn session_harness_accepts_real_traffic() {
    let mut ops = vec![3u8, 1, 0, 2];
    for f in [
        [SERIES_LOADING, SYMBOL_RESOLVED].concat(),
        [TIMESCALE_LOAD, SERIES_COMPLETED].concat(),
        DU_299.to_owned(),
        NEW_BAR.to_owned(),
        DU_300.to_owned(),
    ] {
        ops.push(0);
        ops.extend_from_slice(&(f.len() as u16).to_le_bytes());
        ops.extend_from_slice(f.as_bytes());
    }
    fuzzing::session(&ops);
}
