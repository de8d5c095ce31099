//! Errors a user can act on: each names the phase and the target, never a credential, and
//! echoes user input cut short.

mod util;

use std::time::Duration;

use tvdatafeed::{
    Client, ClientConfig, Error, HistOptions, TransportError,
    sim::{Sim, SimConfig},
};

fn get(config: ClientConfig) -> Error {
    Client::new(config.with_timeout(Duration::from_secs(10)))
        .get_hist("BINANCE:BTCUSDT", "1", 5, &HistOptions::default())
        .unwrap_err()
}

#[test]
fn a_refused_connection_names_the_address() {
    let err = get(ClientConfig::default()
        .with_endpoint("ws://127.0.0.1:1/socket.io/websocket")
        .unwrap());
    assert_eq!(err.to_string(), "connection refused by 127.0.0.1:1");
    assert!(err.is_retryable());
}

#[test]
fn a_ws_url_on_a_tls_server_says_use_wss() {
    let sim = Sim::start(SimConfig::default().with_tls(true)).unwrap();
    let url = sim.url().replacen("wss://", "ws://", 1);
    let err = get(ClientConfig::default().with_endpoint(url).unwrap());
    assert_eq!(
        err,
        Error::Transport(TransportError::TlsOnPlainUrl {
            host: "127.0.0.1".into()
        }),
        "{err}"
    );
    assert_eq!(
        err.to_string(),
        "ws:// URL but 127.0.0.1 speaks TLS (use wss://)"
    );
    assert!(!err.is_retryable());
}

#[test]
fn a_wss_url_on_a_plain_server_says_it_is_not_tls() {
    let sim = Sim::start(SimConfig::default()).unwrap();
    let url = sim.url().replacen("ws://", "wss://", 1);
    let err = get(ClientConfig::default().with_endpoint(url).unwrap());
    assert_eq!(
        err,
        Error::Transport(TransportError::NotTls {
            host: "127.0.0.1".into()
        }),
        "{err}"
    );
    assert_eq!(
        err.to_string(),
        "wss:// URL but 127.0.0.1 is not a TLS server (use ws://)"
    );
}

#[test]
fn an_untrusted_certificate_says_how_to_trust_it() {
    let sim = Sim::start(SimConfig::default().with_tls(true)).unwrap();
    let err = get(ClientConfig::default().with_endpoint(sim.url()).unwrap());
    assert!(
        matches!(
            err,
            Error::Transport(TransportError::CertificateNotTrusted { .. })
        ),
        "{err:?}"
    );
    let text = err.to_string();
    assert!(
        text.starts_with("certificate of 127.0.0.1 not trusted") && text.contains("--ca-cert"),
        "{text}"
    );
    assert!(
        std::error::Error::source(&err).is_some(),
        "rustls' verdict is kept"
    );
    // Trusting the simulator's root from its PEM works.
    let ok = ClientConfig::default()
        .with_endpoint(sim.url())
        .unwrap()
        .with_root_certificates_pem(sim.root_certificate_pem().unwrap())
        .unwrap();
    Client::new(ok)
        .get_hist("BINANCE:BTCUSDT", "1", 5, &HistOptions::default())
        .unwrap();
}

#[test]
fn bad_user_input_is_echoed_cut_short() {
    let huge = format!("BINANCE:{}", "X".repeat(10_000));
    let err = Client::new(ClientConfig::default())
        .get_hist(huge.as_str(), "1", 5, &HistOptions::default())
        .unwrap_err();
    assert!(matches!(err, Error::InvalidRequest(_)), "{err:?}");
    assert!(
        err.to_string().len() < 200,
        "{} bytes",
        err.to_string().len()
    );
    let err = ClientConfig::default()
        .with_endpoint(format!("ftp://{}", "h".repeat(10_000)))
        .unwrap_err();
    assert!(
        err.to_string().len() < 200,
        "{} bytes",
        err.to_string().len()
    );
    let err = ClientConfig::default()
        .with_root_certificates_pem("not a pem")
        .unwrap_err();
    assert!(matches!(err, Error::InvalidRequest(_)), "{err:?}");
}

#[test]
fn duration_max_means_no_deadline_not_a_panic() {
    let sim = Sim::start(SimConfig::default()).unwrap();
    let h = Client::new(
        ClientConfig::default()
            .with_endpoint(sim.url())
            .unwrap()
            .with_timeout(Duration::MAX),
    )
    .get_hist("BINANCE:BTCUSDT", "1", 5, &HistOptions::default())
    .unwrap();
    assert_eq!(h.bars.len(), 5);
}

/// A server on loopback that answers every connection by running `drip` on it: it trickles
/// bytes, so every single read of the client succeeds and only a deadline on the whole call
/// can end it.
fn dripping_server(drip: impl Fn(std::net::TcpStream) + Copy + Send + 'static) -> String {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!(
        "ws://{}/socket.io/websocket",
        listener.local_addr().unwrap()
    );
    std::thread::Builder::new()
        .name("test-drip-server".into())
        .spawn(move || {
            for tcp in listener.incoming().flatten() {
                std::thread::Builder::new()
                    .name("test-drip-conn".into())
                    .spawn(move || drip(tcp))
                    .unwrap();
            }
        })
        .unwrap();
    url
}

/// Writes `bytes` one at a time (cycling), `every` apart, until the client goes away or 20 s
/// pass (so that a client without a working deadline fails the test instead of hanging it).
#[expect(
    clippy::disallowed_methods,
    reason = "a test peer that trickles on purpose"
)]
fn trickle(mut tcp: &std::net::TcpStream, bytes: &[u8], every: Duration) {
    use std::io::Write;
    let end = util::now() + Duration::from_secs(20);
    for b in bytes.iter().cycle() {
        if util::now() >= end || tcp.write_all(&[*b]).is_err() {
            return;
        }
        std::thread::sleep(every);
    }
}

fn read_request(tcp: &std::net::TcpStream) -> String {
    use std::io::{BufRead, BufReader};
    let mut reader = BufReader::new(tcp);
    let mut request = String::new();
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line).unwrap_or(0) == 0 || line == "\r\n" {
            return request;
        }
        request.push_str(&line);
    }
}

#[test]
fn a_server_dripping_inside_the_upgrade_cannot_outlast_the_deadline() {
    let url = dripping_server(|tcp| {
        let _ = read_request(&tcp);
        trickle(
            &tcp,
            b"HTTP/1.1 101 Switching Protocols\r\nX-Drip: ",
            Duration::from_millis(100),
        );
    });
    let start = util::now();
    let err = Client::new(
        ClientConfig::default()
            .with_endpoint(url)
            .unwrap()
            .with_timeout(Duration::from_secs(2)),
    )
    .get_hist("BINANCE:BTCUSDT", "1", 5, &HistOptions::default())
    .unwrap_err();
    let took = util::now().duration_since(start);
    assert_eq!(
        err,
        Error::Timeout {
            after: Duration::from_secs(2),
            during: tvdatafeed::Phase::Upgrade
        }
    );
    assert!(took < Duration::from_secs(4), "took {took:?}");
}

#[test]
fn a_server_dripping_a_message_after_the_upgrade_cannot_outlast_the_deadline() {
    let url = dripping_server(|tcp| {
        let request = read_request(&tcp);
        let key = request
            .lines()
            .find_map(|l| {
                l.strip_prefix("Sec-WebSocket-Key: ")
                    .or_else(|| l.strip_prefix("sec-websocket-key: "))
            })
            .unwrap_or("")
            .trim()
            .to_owned();
        let accept = tungstenite::handshake::derive_accept_key(key.as_bytes());
        let response = format!(
            "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: {accept}\r\n\r\n"
        );
        use std::io::Write;
        let mut w = &tcp;
        if w.write_all(response.as_bytes()).is_err() {
            return;
        }
        // A text frame announcing 60,000 bytes, sent one byte every 50 ms (50 minutes).
        let mut frame = vec![0x81u8, 126, 0xEA, 0x60];
        frame.extend_from_slice(b"~m~59995~m~{");
        trickle(&tcp, &frame, Duration::from_millis(50));
    });
    let start = util::now();
    let err = Client::new(
        ClientConfig::default()
            .with_endpoint(url)
            .unwrap()
            .with_timeout(Duration::from_secs(2)),
    )
    .get_hist("BINANCE:BTCUSDT", "1", 5, &HistOptions::default())
    .unwrap_err();
    let took = util::now().duration_since(start);
    assert_eq!(
        err,
        Error::Timeout {
            after: Duration::from_secs(2),
            during: tvdatafeed::Phase::Answer
        }
    );
    assert!(took < Duration::from_secs(4), "took {took:?}");
}

/// Answers the upgrade request with `reply`, all at once when `every` is zero, else one byte
/// `every` apart.
fn replying_server(reply: &'static [u8], every: Duration) -> String {
    dripping_server(move |tcp| {
        let _ = read_request(&tcp);
        if every.is_zero() {
            use std::io::Write;
            let _ = (&tcp).write_all(reply);
            // Keep the connection open: the client must decide from the bytes alone.
            let _ = read_request(&tcp);
        } else {
            trickle(&tcp, reply, every);
        }
    })
}

fn get_from(url: String) -> Error {
    Client::new(
        ClientConfig::default()
            .with_endpoint(url)
            .unwrap()
            .with_timeout(Duration::from_secs(5)),
    )
    .get_hist("BINANCE:BTCUSDT", "1", 5, &HistOptions::default())
    .unwrap_err()
}

#[test]
fn a_ws_url_on_a_server_answering_tls_records_says_use_wss_whole_or_byte_by_byte() {
    // A TLS alert (decode_error), what a TLS server sends for an HTTP request, and the head of
    // a ServerHello.
    let alert: &[u8] = &[0x15, 0x03, 0x03, 0x00, 0x02, 0x02, 0x32];
    let hello: &[u8] = &[
        0x16, 0x03, 0x03, 0x00, 0x4a, 0x02, 0x00, 0x00, 0x46, 0x03, 0x03,
    ];
    for (reply, every) in [
        (alert, Duration::ZERO),
        (hello, Duration::ZERO),
        (alert, Duration::from_millis(50)),
    ] {
        let err = get_from(replying_server(reply, every));
        assert_eq!(
            err,
            Error::Transport(TransportError::TlsOnPlainUrl {
                host: "127.0.0.1".into()
            }),
            "{reply:?} every {every:?}: {err}"
        );
    }
}

#[test]
fn a_server_answering_garbage_is_not_an_http_server_not_a_tls_one() {
    let garbage: &[&'static [u8]] = &[
        b"SSH-2.0-OpenSSH_9.6\r\n",
        // A TLS record type, but not followed by a TLS version.
        &[0x16, b'x', b'y', b'z', b'\r', b'\n'],
        &[0x00, 0xff, 0x13, 0x37],
    ];
    for reply in garbage {
        for every in [Duration::ZERO, Duration::from_millis(50)] {
            let err = get_from(replying_server(reply, every));
            assert_eq!(
                err,
                Error::Transport(TransportError::NotHttp {
                    host: "127.0.0.1".into()
                }),
                "{reply:?} every {every:?}: {err}"
            );
            assert_eq!(
                err.to_string(),
                "127.0.0.1 is not an HTTP/websocket server (its answer to the upgrade is not HTTP)"
            );
            assert!(!err.is_retryable());
        }
    }
}

#[test]
fn a_huge_url_is_echoed_cut_short() {
    let sim = Sim::start(SimConfig::default()).unwrap();
    let base = sim.url();
    let base = &base[..base.find("/socket.io").unwrap()];
    // Too long for an HTTP request (refused before sending), and long but sent (404 from the
    // simulator): neither error repeats it whole.
    for len in [100_000, 30_000] {
        let err = get_from(format!("{base}/{}", "a".repeat(len)));
        let text = err.to_string();
        assert!(
            text.len() < 300,
            "{len}: {} bytes: {:?}",
            text.len(),
            &text[..300]
        );
        assert!(text.contains('…'), "{text}");
    }
}
