//! No credential in the library's logs, even at trace: a subscriber at `trace` records
//! everything the library says while it signs in with a password (answered with a token) and
//! while a live feed connects with that token, subscribes and shuts down; neither secret
//! appears, as text or as hex. The capture is checked to have worked (the sign-in and the
//! connection are in it), so an empty log cannot pass for a clean one.
//!
//! Its own test binary: it installs the process' global subscriber.
#![allow(
    clippy::disallowed_types,
    reason = "a test's shared log buffer, outside the loom shim"
)]

use std::{
    io::{BufRead, BufReader, Read, Write},
    net::TcpListener,
    sync::{Arc, Mutex},
    time::Duration,
};

use tvdatafeed::{
    AuthToken, LiveFeed,
    http::{HttpConfig, Password, sign_in},
    sim::{Sim, SimConfig},
};

const PASSWORD: &str = "s3cr3t-pa55word";
/// JWT-shaped, so the simulator accepts it.
const TOKEN: &str = "eyJhbGciOiJIUzI1NiJ9.eyJzZWNyZXQiOiJ0b2tlbiJ9.c2VjcmV0LXNpZ25hdHVyZQ";

/// Everything the subscriber writes.
#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Answers one sign-in request with `body`.
fn sign_in_server(body: &'static str) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    std::thread::Builder::new()
        .name("mock-http".into())
        .spawn(move || {
            let (stream, _) = listener.accept().unwrap();
            stream
                .set_read_timeout(Some(Duration::from_secs(5)))
                .unwrap();
            let mut reader = BufReader::new(stream);
            let mut len = 0;
            loop {
                let mut h = String::new();
                reader.read_line(&mut h).unwrap();
                if h.trim().is_empty() {
                    break;
                }
                if let Some((k, v)) = h.split_once(':')
                    && k.eq_ignore_ascii_case("content-length")
                {
                    len = v.trim().parse().unwrap();
                }
            }
            let mut form = vec![0; len];
            reader.read_exact(&mut form).unwrap();
            let resp = format!(
                "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\
                 Connection: close\r\n\r\n{body}",
                body.len()
            );
            reader.into_inner().write_all(resp.as_bytes()).unwrap();
        })
        .unwrap();
    base
}

fn hex(s: &str) -> String {
    s.bytes().map(|b| format!("{b:02x}")).collect()
}

#[test]
fn neither_the_password_nor_the_token_appears_in_trace_logs() {
    let log = Captured::default();
    let writer = log.clone();
    tracing::subscriber::set_global_default(
        tracing_subscriber::fmt()
            .with_max_level(tracing::Level::TRACE)
            .with_writer(move || writer.clone())
            .with_ansi(false)
            .finish(),
    )
    .unwrap();

    let base = sign_in_server(
        r#"{"error":"","user":{"username":"u","auth_token":"eyJhbGciOiJIUzI1NiJ9.eyJzZWNyZXQiOiJ0b2tlbiJ9.c2VjcmV0LXNpZ25hdHVyZQ"}}"#,
    );
    let config = HttpConfig::default()
        .with_base_url(&base)
        .with_timeout(Duration::from_secs(5));
    let token = sign_in(&config, "trader", &Password::new(PASSWORD), None).unwrap();
    assert_eq!(token.expose(), TOKEN);

    let sim = Sim::start(SimConfig::default()).unwrap();
    let feed = LiveFeed::builder()
        .endpoint(sim.url().as_str())
        .unwrap()
        .token(AuthToken::new(TOKEN))
        .build()
        .unwrap();
    let seis = feed.new_seis("BINANCE:BTCUSDT", "1S").unwrap();
    feed.new_consumer(&seis, |_| {}).unwrap();
    std::thread::park_timeout(Duration::from_millis(1500));
    assert!(feed.stats().connected);
    feed.shutdown(Duration::from_secs(5));
    sim.stop(Duration::from_secs(2));

    let text = String::from_utf8(log.0.lock().unwrap().clone()).unwrap();
    for said in [
        "signing in",
        "sign-in answered",
        "connected",
        "auth token and locale queued authenticated=true",
        "subscribed",
    ] {
        assert!(text.contains(said), "the capture missed {said:?}:\n{text}");
    }
    for secret in [PASSWORD, TOKEN, "c2VjcmV0LXNpZ25hdHVyZQ"] {
        assert!(!text.contains(secret), "{secret} leaked:\n{text}");
        assert!(
            !text.contains(&hex(secret)),
            "{secret} leaked as hex:\n{text}"
        );
    }
}
