//! The connection-level protocol core's seams: stable caller keys, slot reuse under churn,
//! several chart sessions on one connection, the timer table, and the replay of a chart onto a
//! fresh connection after a reconnect. Deterministic: a virtual clock, no sockets.

mod util;

use std::time::{Duration, Instant};

use tvdatafeed::protocol::{
    ChartConfig, ChartEvent, Connection, ConnectionConfig, Event, SeriesEvent, SeriesKey,
    SeriesRequest, SessionError, frame,
};
use util::frames::*;

const CS: &str = "cs_kjvmuwkghjuz";

fn btc(n: u32) -> SeriesRequest {
    SeriesRequest::count("BINANCE:BTCUSDT".parse().unwrap(), "1".parse().unwrap(), n)
}

fn sent(conn: &mut Connection) -> Vec<String> {
    std::iter::from_fn(|| conn.poll_transmit())
        .map(|m| String::from_utf8(m).unwrap())
        .collect()
}

fn events(conn: &mut Connection) -> Vec<Event> {
    std::iter::from_fn(|| conn.poll_event()).collect()
}

fn series(events: &[Event]) -> Vec<(SeriesKey, SeriesEvent)> {
    events
        .iter()
        .filter_map(|e| match e {
            Event::Chart {
                event: ChartEvent::Series { key, event },
                ..
            } => Some((*key, event.clone())),
            _ => None,
        })
        .collect()
}

fn frames(payloads: &[&str]) -> Vec<u8> {
    let mut m = Vec::new();
    for p in payloads {
        frame::encode_frame(p.as_bytes(), &mut m);
    }
    m
}

#[test]
fn churn_of_100_000_series_reuses_a_bounded_number_of_slots() {
    let t0 = util::now();
    let mut conn = Connection::new(t0, ConnectionConfig::default());
    let chart = conn.add_chart_named(t0, CS, ChartConfig::default());
    let c = conn.chart_mut(chart).unwrap();
    // 24/7 subscribe/unsubscribe churn: at most 8 series open at once.
    let mut open = std::collections::VecDeque::new();
    for k in 0..100_000u64 {
        c.add_series(t0, SeriesKey(k), btc(2)).unwrap();
        open.push_back(SeriesKey(k));
        if open.len() > 8 {
            let old = open.pop_front().unwrap();
            c.remove_series(old).unwrap();
        }
        if k % 1_000 == 0 {
            // Drop the queued requests as a driver sends them.
            while c.poll_transmit().is_some() {}
        }
    }
    assert_eq!(c.len(), 8);
    assert!(c.slot_count() <= 9, "slots grew to {}", c.slot_count());
    // Every removed series' load timer is gone: only the open ones are left.
    let deadline = conn.poll_timeout().unwrap();
    assert!(deadline <= t0 + Duration::from_secs(30));
}

#[test]
fn a_late_message_for_a_removed_series_never_reaches_the_one_in_its_slot() {
    let t0 = util::now();
    let mut conn = Connection::new(t0, ConnectionConfig::default());
    let chart = conn.add_chart_named(t0, CS, ChartConfig::default());
    let c = conn.chart_mut(chart).unwrap();
    c.add_series(t0, SeriesKey(1), btc(2)).unwrap();
    c.remove_series(SeriesKey(1)).unwrap();
    // The new series takes slot 0 again, but not the wire id `sds_1`.
    c.add_series(t0, SeriesKey(2), btc(2)).unwrap();
    assert_eq!(c.slot_count(), 1);
    let out = sent(&mut conn);
    assert!(
        out.iter()
            .any(|m| m.contains(r#""sds_2","s1","sds_sym_2""#)),
        "{out:?}"
    );
    // The server answers the removed series' requests (sds_1) late: nothing comes out.
    let mut late = [
        SERIES_LOADING,
        SYMBOL_RESOLVED,
        TIMESCALE_LOAD,
        SERIES_COMPLETED,
    ]
    .concat()
    .into_bytes();
    conn.handle_message(t0, &mut late).unwrap();
    assert!(series(&events(&mut conn)).is_empty());
}

#[test]
fn keys_are_the_callers_and_duplicates_are_refused() {
    let t0 = util::now();
    let mut conn = Connection::new(t0, ConnectionConfig::default());
    let chart = conn.add_chart_named(t0, CS, ChartConfig::default());
    let c = conn.chart_mut(chart).unwrap();
    c.add_series(t0, SeriesKey(77), btc(2)).unwrap();
    assert_eq!(
        c.add_series(t0, SeriesKey(77), btc(2)),
        Err(SessionError::DuplicateSeries(SeriesKey(77)))
    );
    assert!(c.contains(SeriesKey(77)));
    let mut load = [
        SERIES_LOADING,
        SYMBOL_RESOLVED,
        TIMESCALE_LOAD,
        SERIES_COMPLETED,
    ]
    .concat()
    .into_bytes();
    conn.handle_message(t0, &mut load).unwrap();
    let got = series(&events(&mut conn));
    assert!(got.iter().all(|(k, _)| *k == SeriesKey(77)), "{got:?}");
    assert!(matches!(got.last(), Some((_, SeriesEvent::History { .. }))));
}

#[test]
fn the_timer_table_gives_the_earliest_of_1000_load_deadlines() {
    let t0 = util::now();
    let mut conn = Connection::new(
        t0,
        ConnectionConfig::default().with_idle_timeout(Duration::from_secs(3_600)),
    );
    let chart = conn.add_chart_named(
        t0,
        CS,
        ChartConfig::default().with_load_timeout(Duration::from_secs(10)),
    );
    // Series added over a second, newest first in the key order: the deadline is the oldest's.
    for k in 0..1_000u64 {
        let at = t0 + Duration::from_millis(k);
        conn.chart_mut(chart)
            .unwrap()
            .add_series(at, SeriesKey(1_000 - k), btc(2))
            .unwrap();
    }
    assert_eq!(conn.poll_timeout(), Some(t0 + Duration::from_secs(10)));
    conn.handle_timeout(t0 + Duration::from_millis(10_499));
    let failed = series(&events(&mut conn));
    assert_eq!(
        failed.len(),
        500,
        "the 500 series due by then fail, in order"
    );
    assert!(
        failed
            .iter()
            .all(|(_, e)| matches!(e, SeriesEvent::Failed(f) if f.is_retryable()))
    );
    assert_eq!(failed[0].0, SeriesKey(1_000));
    assert_eq!(
        conn.poll_timeout(),
        Some(t0 + Duration::from_millis(10_500))
    );
}

#[test]
fn two_chart_sessions_share_one_connection_and_auth_is_sent_once() {
    let t0 = util::now();
    let mut conn = Connection::new(t0, ConnectionConfig::default());
    let a = conn.add_chart_named(t0, CS, ChartConfig::default());
    let b = conn.add_chart(t0, ChartConfig::default());
    assert_ne!(a, b);
    let b_name = conn.chart(b).unwrap().id().to_owned();
    assert!(b_name.starts_with("cs_") && b_name.len() == 15);
    conn.chart_mut(a)
        .unwrap()
        .add_series(t0, SeriesKey(1), btc(2))
        .unwrap();
    conn.chart_mut(b)
        .unwrap()
        .add_series(t0, SeriesKey(1), btc(2))
        .unwrap();
    let out = sent(&mut conn);
    assert_eq!(
        out.iter().filter(|m| m.contains("set_auth_token")).count(),
        1
    );
    assert!(out[0].contains("set_auth_token"), "auth first: {out:?}");
    assert_eq!(
        out.iter()
            .filter(|m| m.contains("chart_create_session"))
            .count(),
        2
    );
    // A message for chart b reaches b only.
    let load = [
        SERIES_LOADING,
        SYMBOL_RESOLVED,
        TIMESCALE_LOAD,
        SERIES_COMPLETED,
    ]
    .concat()
    .replace(CS, &b_name);
    let mut load = load.into_bytes();
    conn.handle_message(t0, &mut load).unwrap();
    let got = events(&mut conn);
    assert!(!got.is_empty());
    assert!(
        got.iter()
            .all(|e| matches!(e, Event::Chart { chart, .. } if *chart == b)),
        "{got:?}"
    );
    // Removing b tells the server and invalidates its id.
    assert!(conn.remove_chart(b));
    assert!(conn.chart(b).is_none());
    assert!(!conn.remove_chart(b));
    let mut delete = Vec::new();
    frame::encode_frame(
        format!(r#"{{"m":"chart_delete_session","p":["{b_name}"]}}"#).as_bytes(),
        &mut delete,
    );
    assert_eq!(sent(&mut conn), [String::from_utf8(delete).unwrap()]);
    let c = conn.add_chart(t0, ChartConfig::default());
    assert!(conn.chart(b).is_none(), "a reused slot is a new id");
    assert!(conn.chart(c).is_some());
}

/// The load message of series `sds_<n>` with the given bars (open time, close).
fn load_of(n: u64, bars: &[(i64, f64)], close_time: i64) -> Vec<u8> {
    let s: Vec<String> = bars
        .iter()
        .enumerate()
        .map(|(i, (t, c))| format!(r#"{{"i":{i},"v":[{t}.0,{c},{c},{c},{c},1.0]}}"#))
        .collect();
    let ts = format!(
        r#"{{"m":"timescale_update","p":["{CS}",{{"sds_{n}":{{"s":[{}],"ns":{{"d":"","indexes":[]}},"t":"s1","lbs":{{"bar_close_time":{close_time}}}}}}},{{}}]}}"#,
        s.join(",")
    );
    let done =
        format!(r#"{{"m":"series_completed","p":["{CS}","sds_{n}","streaming","s1",{{}}]}}"#);
    frames(&[&ts, &done])
}

#[test]
fn resubscribe_replays_the_chart_with_a_gap_window_from_the_last_bar_seen() {
    let t0 = util::now();
    let mut conn = Connection::new(t0, ConnectionConfig::default());
    let chart = conn.add_chart_named(t0, CS, ChartConfig::default().with_max_gap_bars(1_000));
    let c = conn.chart_mut(chart).unwrap();
    c.add_series(t0, SeriesKey(9), btc(300)).unwrap();
    c.add_series(t0, SeriesKey(10), btc(5)).unwrap();
    let _ = sent(&mut conn);
    let mut m = load_of(1, &[(600, 1.0), (660, 2.0), (720, 3.0)], 780);
    conn.handle_message(t0, &mut m).unwrap();
    let _ = events(&mut conn);

    // The connection drops; a new one comes up 10 minutes of bars later.
    let t1 = t0 + Duration::from_secs(1);
    conn.reset(t1);
    let unix_now = 720 + 10 * 60 + 5; // the bar opening at 1320 is forming
    conn.chart_mut(chart)
        .unwrap()
        .resubscribe(t1, unix_now, |key| (key == SeriesKey(9)).then_some(660));
    let out = sent(&mut conn);
    assert!(out[0].contains("set_auth_token"), "{out:?}");
    assert!(out[1].contains("set_locale"), "{out:?}");
    assert!(out[2].contains("chart_create_session"), "{out:?}");
    // Series 9 saw bar 660: it asks for 660..=1320, 11 closed bars and the forming one (12
    // on the wire), under a fresh wire id; series 10 (nothing seen) asks again what it asked
    // first (5 closed, 6 on the wire).
    assert!(
        out.iter().any(|m| m.contains(
            r#""create_series","p":["cs_kjvmuwkghjuz","sds_3","s1","sds_sym_3","1",12,""]"#
        )),
        "{out:?}"
    );
    assert!(
        out.iter()
            .any(|m| m.contains(r#""sds_4","s1","sds_sym_4","1",6,""]"#)),
        "{out:?}"
    );
    // The answer to the replay is the gap fill: a History event for key 9.
    let bars: Vec<(i64, f64)> = (0..12).map(|k| (660 + 60 * k, k as f64)).collect();
    let mut m = load_of(3, &bars, 1380);
    conn.handle_message(t1, &mut m).unwrap();
    let got = series(&events(&mut conn));
    let Some((SeriesKey(9), SeriesEvent::History { bars, forming, .. })) = got.last() else {
        panic!("{got:?}")
    };
    assert_eq!(bars.first().map(|b| b.time), Some(660));
    assert_eq!(bars.len(), 11);
    assert_eq!(forming.map(|b| b.time), Some(1320));
    // A message for the old wire id of series 9 (sds_1) is ignored.
    let mut stale = load_of(1, &[(1320, 9.0)], 1380);
    conn.handle_message(t1, &mut stale).unwrap();
    assert!(series(&events(&mut conn)).is_empty());
}

#[test]
fn the_gap_window_is_bounded() {
    let t0 = util::now();
    let mut conn = Connection::new(t0, ConnectionConfig::default());
    let chart = conn.add_chart_named(t0, CS, ChartConfig::default().with_max_gap_bars(500));
    conn.chart_mut(chart)
        .unwrap()
        .add_series(t0, SeriesKey(1), btc(10))
        .unwrap();
    conn.reset(t0);
    // A week down on 1-minute bars: 10,080 bars missed, 500 closed asked (501 on the wire).
    conn.chart_mut(chart)
        .unwrap()
        .resubscribe(t0, 7 * 86_400, |_| Some(0));
    let out = sent(&mut conn);
    assert!(out.iter().any(|m| m.contains(r#""1",501,""]"#)), "{out:?}");
}

#[test]
fn the_idle_deadline_runs_from_the_start_so_a_silent_server_is_noticed() {
    let t0 = util::now();
    let mut conn = Connection::new(
        t0,
        ConnectionConfig::default().with_idle_timeout(Duration::from_secs(5)),
    );
    assert_eq!(conn.poll_timeout(), Some(t0 + Duration::from_secs(5)));
    conn.handle_timeout(t0 + Duration::from_secs(5));
    assert_eq!(
        events(&mut conn),
        [Event::Idle {
            silent: Duration::from_secs(5)
        }]
    );
    // A heartbeat re-arms it.
    let mut hb = b"~m~4~m~~h~1".to_vec();
    conn.handle_message(t0 + Duration::from_secs(6), &mut hb)
        .unwrap();
    assert_eq!(conn.poll_timeout(), Some(t0 + Duration::from_secs(11)));
    // Reset (a new websocket) re-arms it from the reset.
    let t2 = t0 + Duration::from_secs(20);
    conn.reset(t2);
    assert_eq!(conn.poll_timeout(), Some(t2 + Duration::from_secs(5)));
}

#[test]
fn an_instant_far_in_the_future_does_not_overflow() {
    let t0 = util::now();
    let mut conn = Connection::new(
        t0,
        ConnectionConfig::default().with_idle_timeout(Duration::MAX),
    );
    let chart = conn.add_chart_named(
        t0,
        CS,
        ChartConfig::default().with_load_timeout(Duration::MAX),
    );
    conn.chart_mut(chart)
        .unwrap()
        .add_series(t0, SeriesKey(1), btc(1))
        .unwrap();
    // No deadline can be represented: none fires.
    let later: Instant = t0 + Duration::from_secs(10 * 365 * 86_400);
    conn.handle_timeout(later);
    assert!(series(&events(&mut conn)).is_empty());
}
