//! `Client::get_hist_many` against the simulator: many series in flight over one connection,
//! exact values, paging, refusals that fail their request alone, the in-flight limit (seen on
//! the wire by a relay), the batch deadline and the silent-connection rule under a stall, and
//! every request answered once whatever fails.

mod util;

use std::{
    collections::HashSet,
    net::{SocketAddr, TcpListener},
    thread::JoinHandle,
    time::Duration,
};

use tungstenite::Message;
use tvdatafeed::{
    AuthToken, Client, ClientConfig, Error, HistOptions, HistRequest, History, Phase,
    SeriesFailure, TransportError,
    sim::{Fault, FaultKind, Market, Sim, SimConfig, Target, Trigger},
};
use util::{Recv, frames_of, now, recv};

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

fn req(symbol: &str, interval: &str, n: u32) -> HistRequest {
    HistRequest::new(symbol, interval, n).unwrap()
}

/// `n` hourly requests of 300 bars: `BINANCE:SYM0`…
fn hourly(n: usize) -> Vec<HistRequest> {
    (0..n)
        .map(|i| req(&format!("BINANCE:SYM{i}"), "1H", 300))
        .collect()
}

/// Asserts `n` closed bars, ascending and contiguous, each equal to the simulator's truth,
/// and a forming bar right after them.
fn assert_exact(sim: &Sim, h: &History, n: usize) {
    assert_eq!(h.bars.len(), n, "{}: closed bars", h.symbol);
    for w in h.bars.windows(2) {
        assert_eq!(
            Market::previous_open(h.interval, w[1].time),
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

/// Every request answered exactly once: returns the results by symbol.
fn collect(
    results: impl Iterator<Item = (HistRequest, Result<History, Error>)>,
    n: usize,
) -> Vec<(HistRequest, Result<History, Error>)> {
    let all: Vec<_> = results.collect();
    assert_eq!(all.len(), n, "one result per request");
    let symbols: HashSet<&str> = all.iter().map(|(r, _)| r.symbol.as_str()).collect();
    assert_eq!(symbols.len(), n, "each request answered once");
    all
}

/// What a [`relay`] saw the client do.
#[derive(Debug, Default, Clone, Copy)]
struct Seen {
    /// `create_series` sent.
    created: usize,
    /// `remove_series` sent.
    removed: usize,
    /// Most series open at once (created and not yet removed).
    peak: usize,
}

/// A websocket relay for one connection between a client and the simulator (plain ws), which
/// counts the series the client keeps open from the requests it sends: what the server sees.
fn relay(sim: &Sim) -> (String, JoinHandle<Seen>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr: SocketAddr = listener.local_addr().unwrap();
    let mut upstream = util::connect(sim);
    let handle = std::thread::Builder::new()
        .name("relay".into())
        .spawn(move || {
            let (tcp, _) = listener.accept().unwrap();
            tcp.set_nodelay(true).unwrap();
            let mut client = tungstenite::accept(util::Conn::Plain(tcp)).unwrap();
            let mut seen = Seen::default();
            let mut open = 0usize;
            loop {
                match recv(&mut client, Duration::from_millis(1)) {
                    Recv::Text(t) => {
                        for f in frames_of(&t) {
                            match f.method() {
                                Some("create_series") => {
                                    seen.created += 1;
                                    open += 1;
                                    seen.peak = seen.peak.max(open);
                                }
                                Some("remove_series") => {
                                    seen.removed += 1;
                                    open -= 1;
                                }
                                _ => {}
                            }
                        }
                        upstream.send(Message::text(t)).unwrap();
                    }
                    Recv::Timeout => {}
                    _ => return seen,
                }
                match recv(&mut upstream, Duration::from_millis(1)) {
                    Recv::Text(t) => {
                        if client.send(Message::text(t)).is_err() {
                            return seen;
                        }
                    }
                    Recv::Timeout => {}
                    _ => return seen,
                }
            }
        })
        .unwrap();
    (
        format!("ws://{addr}/socket.io/websocket?from=chart&type=chart"),
        handle,
    )
}

#[test]
fn a_hundred_series_in_flight_on_one_connection_are_exact() {
    let sim = Sim::start(
        SimConfig::default()
            .with_seed(5)
            .with_max_bars_per_request(5_000)
            .with_history_depth_authenticated(20_000),
    )
    .unwrap();
    let (url, relay) = relay(&sim);
    let config = client_for(&sim)
        .with_endpoint(url)
        .unwrap()
        .with_token(AuthToken::new("aaa.bbb.ccc"))
        .with_max_in_flight(100);
    // Three that page past 5,000 bars (12,000 one-minute bars: three pages), in flight with
    // 97 hourly ones; the last three hourly ones take the first free slots.
    let mut requests: Vec<HistRequest> = (0..3)
        .map(|i| req(&format!("BINANCE:PAGED{i}"), "1", 12_000))
        .collect();
    requests.extend(hourly(100));
    let all = collect(Client::new(config).get_hist_many(requests), 103);
    for (request, result) in &all {
        let h = result
            .as_ref()
            .unwrap_or_else(|e| panic!("{}: {e}", request.symbol));
        assert_eq!((&h.symbol, h.interval), (&request.symbol, request.interval));
        assert_exact(&sim, h, request.bars as usize);
        assert_eq!(h.requested, Some(request.bars));
    }
    let seen = relay.join().unwrap();
    assert_eq!(seen.created, 103, "{seen:?}");
    assert_eq!(seen.peak, 100, "100 series in flight at once: {seen:?}");
    assert_eq!(sim.counters().connections, 1, "one connection");
}

#[test]
fn refused_symbols_fail_alone_and_fast() {
    let sim = Sim::start(SimConfig::default()).unwrap();
    let client = Client::new(client_for(&sim).with_timeout(Duration::from_secs(30)));
    let mut requests = hourly(48);
    requests.insert(10, req("BINANCE:INVALIDX", "1H", 300));
    requests.insert(30, req("ECONOMICS:USGDP", "1D", 300));
    let start = now();
    let all = collect(client.get_hist_many(requests), 50);
    // All 50 answers came far below the 30 s deadline: the refusals did not wait for it.
    assert!(now().duration_since(start) < Duration::from_secs(10));
    let mut refused = 0;
    for (request, result) in &all {
        match request.symbol.as_str() {
            "BINANCE:INVALIDX" => {
                refused += 1;
                assert_eq!(
                    result.as_ref().unwrap_err(),
                    &Error::Series {
                        symbol: request.symbol.clone(),
                        interval: request.interval,
                        failure: SeriesFailure::UnknownSymbol {
                            reason: "invalid symbol".into()
                        }
                    }
                );
            }
            "ECONOMICS:USGDP" => {
                refused += 1;
                assert_eq!(
                    result.as_ref().unwrap_err().series_failure(),
                    Some(&SeriesFailure::PermissionDenied {
                        kind: "group".into(),
                        detail: "economics_paid".into()
                    })
                );
            }
            _ => assert_exact(&sim, result.as_ref().unwrap(), 300),
        }
    }
    assert_eq!(refused, 2);
    assert_eq!(sim.counters().connections, 1);
}

#[test]
fn at_most_k_series_are_open_at_once() {
    let sim = Sim::start(SimConfig::default()).unwrap();
    let (url, relay) = relay(&sim);
    let config = client_for(&sim)
        .with_endpoint(url)
        .unwrap()
        .with_max_in_flight(4);
    let all = collect(Client::new(config).get_hist_many(hourly(30)), 30);
    for (_, result) in &all {
        assert_exact(&sim, result.as_ref().unwrap(), 300);
    }
    let seen = relay.join().unwrap();
    assert_eq!(seen.created, 30, "{seen:?}");
    assert_eq!(seen.peak, 4, "never more than 4 open, and 4 used: {seen:?}");
    // Each answered series is removed at once (the last ones may go with the connection).
    assert!(seen.removed >= 26, "{seen:?}");
}

/// A simulator that stalls (sends nothing, heartbeats included) after its hello and `answers`
/// series loads on its next connection. Live updates are off, so every message it sends
/// before the stall is a load's answer.
fn stalling_sim(answers: u64) -> Sim {
    let sim =
        Sim::start(SimConfig::default().with_update_interval(Duration::from_secs(3_600))).unwrap();
    sim.inject(
        Fault::now(FaultKind::Stall(None))
            .on(Target::Next)
            .when(Trigger::AfterMessages(1 + answers)),
    );
    sim
}

#[test]
fn a_stall_mid_batch_meets_the_batch_deadline() {
    let sim = stalling_sim(10);
    let deadline = Duration::from_secs(2);
    let config = client_for(&sim)
        .with_timeout(Duration::from_secs(30))
        .with_batch_timeout(deadline)
        .with_max_in_flight(4);
    let start = now();
    let all = collect(Client::new(config).get_hist_many(hourly(30)), 30);
    let took = now().duration_since(start);
    assert!(
        took >= deadline && took < deadline + Duration::from_millis(1_500),
        "{took:?}"
    );
    let (ok, failed): (Vec<_>, Vec<_>) = all.iter().partition(|(_, r)| r.is_ok());
    assert_eq!(ok.len(), 10, "the answers before the stall");
    for (_, result) in ok {
        assert_exact(&sim, result.as_ref().unwrap(), 300);
    }
    for (_, result) in failed {
        assert_eq!(
            result.as_ref().unwrap_err(),
            &Error::Timeout {
                after: deadline,
                during: Phase::Answer
            }
        );
    }
}

#[test]
fn a_silent_connection_fails_the_rest_after_one_request_timeout() {
    // No batch deadline: each request has 1 s, and a connection silent for 1 s is dead. Without
    // the silence rule the 25 unanswered requests would time out 4 at a time, 1 s per wave.
    let sim = stalling_sim(5);
    let timeout = Duration::from_secs(1);
    let config = client_for(&sim).with_timeout(timeout).with_max_in_flight(4);
    let start = now();
    let all = collect(Client::new(config).get_hist_many(hourly(30)), 30);
    let took = now().duration_since(start);
    assert!(took < timeout + Duration::from_millis(1_500), "{took:?}");
    let failed: Vec<&Error> = all.iter().filter_map(|(_, r)| r.as_ref().err()).collect();
    assert_eq!(failed.len(), 25);
    for e in failed {
        assert_eq!(
            e,
            &Error::Timeout {
                after: timeout,
                during: Phase::Answer
            }
        );
    }
}

#[test]
fn invalid_requests_are_answered_first_without_io() {
    let sim = Sim::start(SimConfig::default()).unwrap();
    let client = Client::new(client_for(&sim));
    let bad_count = req("BINANCE:ZERO", "1H", 0);
    let bad_range = HistRequest::range("BINANCE:BACKWARDS", "1D", 20, 10).unwrap();
    let mut results = client.get_hist_many([
        req("BINANCE:SYM0", "1H", 300),
        bad_count.clone(),
        bad_range.clone(),
    ]);
    assert_eq!(results.len(), 3);
    let first: Vec<_> = results.by_ref().take(2).collect();
    assert_eq!(first[0].0, bad_count);
    assert_eq!(first[1].0, bad_range);
    assert!(
        first
            .iter()
            .all(|(_, r)| matches!(r, Err(Error::InvalidRequest(_))))
    );
    let (_, last) = results.next().unwrap();
    assert_exact(&sim, &last.unwrap(), 300);
    assert!(results.next().is_none() && results.next().is_none());

    // A batch with nothing valid, and an empty one, never connect.
    let none_valid: Vec<_> = client.get_hist_many([bad_count]).collect();
    assert!(matches!(
        none_valid[..],
        [(_, Err(Error::InvalidRequest(_)))]
    ));
    assert_eq!(client.get_hist_many([]).count(), 0);
    assert_eq!(sim.counters().connections, 1);
}

#[test]
fn a_failed_connection_answers_every_request() {
    // Nothing listens on port 9: every request gets the connect error, the iterator ends.
    let refused = Client::new(
        ClientConfig::default()
            .with_endpoint("ws://127.0.0.1:9/socket.io/websocket")
            .unwrap()
            .with_timeout(Duration::from_secs(5)),
    );
    for (_, result) in collect(refused.get_hist_many(hourly(5)), 5) {
        assert!(
            matches!(
                result,
                Err(Error::Transport(TransportError::Refused { .. }))
            ),
            "{result:?}"
        );
    }
    // Rate limited on the upgrade, and a token the server rejects.
    let sim =
        Sim::start(SimConfig::default().with_valid_tokens(vec!["good.token.here".into()])).unwrap();
    sim.reject_next_with_429(1);
    let client = Client::new(client_for(&sim));
    for (_, result) in collect(client.get_hist_many(hourly(3)), 3) {
        assert!(
            matches!(result, Err(Error::RateLimited { .. })),
            "{result:?}"
        );
    }
    let rejected = Client::new(client_for(&sim).with_token(AuthToken::new("bad.token.value")));
    for (_, result) in collect(rejected.get_hist_many(hourly(20)), 20) {
        assert_eq!(result.unwrap_err(), Error::AuthRejected);
    }
}

#[test]
fn the_connection_closes_when_done_or_dropped() {
    let sim = Sim::start(SimConfig::default()).unwrap();
    let client = Client::new(client_for(&sim).with_max_in_flight(2));
    let mut results = client.get_hist_many(hourly(10));
    assert!(results.next().unwrap().1.is_ok());
    assert!(sim.wait_connections(1, Duration::from_secs(5)));
    assert_eq!(sim.counters().active, 1);
    drop(results);
    assert!(sim.wait_idle(Duration::from_secs(5)), "closed on drop");

    // Done: closed as soon as the last request is answered, before its result is taken.
    let mut results = client.get_hist_many(hourly(3));
    let first = results.next().unwrap();
    let rest: Vec<_> = results.by_ref().collect();
    assert!(first.1.is_ok() && rest.iter().all(|(_, r)| r.is_ok()));
    assert!(sim.wait_idle(Duration::from_secs(5)));
    assert_eq!(sim.counters().connections, 2);
}

#[test]
fn many_over_wss_are_exact_on_one_tls_connection() {
    let sim = Sim::start(SimConfig::default().with_tls(true)).unwrap();
    let client = Client::new(client_for(&sim));
    let requests: Vec<HistRequest> = (0..20)
        .map(|i| {
            req(&format!("BINANCE:TLS{i}"), "15", 200)
                .with_options(HistOptions::default().with_extended_session(i % 2 == 0))
        })
        .collect();
    for (request, result) in collect(client.get_hist_many(requests), 20) {
        let h = result.unwrap();
        assert_eq!(h.symbol, request.symbol);
        assert_exact(&sim, &h, 200);
    }
    assert_eq!(sim.counters().connections, 1);
}
