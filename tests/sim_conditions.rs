//! The simulator's server conditions over real sockets: the relay's added round trip, and the
//! serial service time of the threaded simulator as a client sees it.

mod util;

use std::{
    io::{Read, Write},
    net::{SocketAddr, TcpListener, TcpStream},
    time::{Duration, Instant},
};

use tvdatafeed::sim::{Relay, Sim, SimConfig, SimError};
use util::*;

const MS: Duration = Duration::from_millis(1);

/// A loopback echo server for one connection, on its own thread.
fn echo_server() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    std::thread::Builder::new()
        .name("test-echo".into())
        .spawn(move || {
            let Ok((mut s, _)) = listener.accept() else {
                return;
            };
            let mut buf = [0u8; 1024];
            while let Ok(n @ 1..) = s.read(&mut buf) {
                if s.write_all(&buf[..n]).is_err() {
                    return;
                }
            }
        })
        .unwrap();
    addr
}

/// One round trip of `ping` through `addr`; its duration.
fn round_trip(s: &mut TcpStream) -> Duration {
    let t = now();
    s.write_all(b"ping").unwrap();
    let mut back = [0u8; 4];
    s.read_exact(&mut back).unwrap();
    assert_eq!(&back, b"ping");
    t.elapsed()
}

#[test]
fn a_round_trip_through_the_relay_takes_twice_its_one_way_delay() {
    let one_way = 60 * MS;
    let relay = Relay::start(echo_server(), one_way).unwrap();
    let mut s = TcpStream::connect(relay.addr()).unwrap();
    s.set_nodelay(true).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    for _ in 0..3 {
        let rtt = round_trip(&mut s);
        assert!(rtt >= 2 * one_way, "{rtt:?}");
        assert!(rtt < 2 * one_way + 500 * MS, "{rtt:?}");
    }
    assert_eq!(relay.connections(), 1);
    let t = now();
    assert!(
        relay.stop(Duration::from_secs(2)),
        "every relay thread ended"
    );
    assert!(t.elapsed() < Duration::from_secs(2));
    // The relayed connection is closed with it.
    let mut rest = Vec::new();
    assert!(matches!(s.read_to_end(&mut rest), Ok(0) | Err(_)));
}

#[test]
fn a_client_reaches_the_simulator_through_the_relay_a_round_trip_later() {
    let sim = Sim::start(SimConfig::default()).unwrap();
    let one_way = 50 * MS;
    let relay = Relay::start(sim.addr(), one_way).unwrap();
    let url = relay.url_for(&sim);
    assert_eq!(
        url,
        format!(
            "ws://{}/socket.io/websocket?from=chart&type=chart",
            relay.addr()
        )
    );
    // The websocket upgrade is a round trip: its answer comes no sooner than 2 × one way.
    let tcp = TcpStream::connect(relay.addr()).unwrap();
    let mut req =
        tungstenite::client::IntoClientRequest::into_client_request(url.as_str()).unwrap();
    req.headers_mut().insert("Origin", ORIGIN.parse().unwrap());
    let t = now();
    let (mut ws, _) = tungstenite::client::client(req, tcp).unwrap();
    assert!(t.elapsed() >= 2 * one_way, "{:?}", t.elapsed());
    let hello = ws.read().unwrap();
    assert!(hello.to_text().unwrap().contains("session_id"));
    drop(ws);
    drop(relay);
}

#[test]
fn the_relay_only_relays_to_loopback() {
    let err = Relay::start("192.0.2.1:80".parse().unwrap(), MS).unwrap_err();
    assert!(matches!(err, SimError::NotLoopback(_)), "{err}");
    assert_eq!(
        err.to_string(),
        "relay target 192.0.2.1:80 is not a loopback address"
    );
}

/// When each frame with `method` for `series` arrived, from `log`.
fn arrivals(log: &[(Instant, String)], method: &str, series: &str) -> Vec<Instant> {
    log.iter()
        .filter(|(_, m)| {
            frames_of(m).iter().any(|f| {
                f.method() == Some(method)
                    && (f.param_str(1) == Some(series)
                        || f.param(1).and_then(|p| p.get(series)).is_some())
            })
        })
        .map(|(at, _)| *at)
        .collect()
}

#[test]
fn the_threaded_simulator_serves_requests_one_at_a_time_while_streaming() {
    let service = 300 * MS;
    let sim = Sim::start(
        SimConfig::default()
            .with_request_service_time(service)
            .with_update_interval(50 * MS),
    )
    .unwrap();
    let mut raw = Raw::connect(&sim);
    let chart = r#"{"m":"chart_create_session","p":["cs_svc",""]}"#;
    let resolve =
        r#"{"m":"resolve_symbol","p":["cs_svc","sym","={\"symbol\":\"BINANCE:BTCUSDT\"}"]}"#;
    let create = |s: &str| {
        frame(&format!(
            r#"{{"m":"create_series","p":["cs_svc","{s}","{s}","sym","1S",10,""]}}"#
        ))
    };
    let t = now();
    raw.send(&format!(
        "{}{}{}{}{}",
        frame(chart),
        frame(resolve),
        create("s1"),
        create("s2"),
        create("s3")
    ));
    raw.recv_until(Duration::from_secs(5), |m| {
        frames_of(m)
            .iter()
            .any(|f| f.method() == Some("series_completed") && f.param_str(1) == Some("s3"))
    })
    .expect("s3 loads");
    // The resolve takes one service time, then each series one more, in order.
    let done: Vec<Duration> = ["s1", "s2", "s3"]
        .iter()
        .map(|s| {
            let at = arrivals(&raw.log, "series_completed", s);
            assert_eq!(at.len(), 1, "{s}");
            at[0] - t
        })
        .collect();
    for (i, d) in done.iter().enumerate() {
        let want = service * (i as u32 + 2);
        assert!(
            *d >= want,
            "series {} answered after {d:?}, before {want:?}",
            i + 1
        );
        assert!(
            *d < want + 400 * MS,
            "series {} answered after {d:?}",
            i + 1
        );
    }
    // s1 kept streaming while s2 and s3 waited: several updates between their answers.
    let s1_t = t + done[0];
    let s3_t = t + done[2];
    let du = arrivals(&raw.log, "du", "s1")
        .into_iter()
        .filter(|at| (s1_t..s3_t).contains(at))
        .count();
    assert!(du >= 5, "{du} updates of s1 while the others waited");
}
