//! Sign-in and symbol search against a loopback HTTP server that answers like TradingView:
//! headers sent, the two-factor step with the first answer's cookies, every refusal typed, and
//! no credential in any error or `Debug`.

use std::{
    io::{BufRead, BufReader, Read, Write},
    net::TcpListener,
    sync::mpsc,
    time::Duration,
};

use tvdatafeed::{
    Error, Phase,
    http::{HttpConfig, Password, search, sign_in},
};

/// A request as the mock saw it.
#[derive(Debug, Clone)]
struct Seen {
    line: String,
    headers: Vec<(String, String)>,
    body: String,
}

impl Seen {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// A canned answer: status, extra headers, body.
type Answer = (u16, Vec<(&'static str, &'static str)>, &'static str);

/// Serves `answers` (status, extra headers, body) to successive connections and reports each
/// request on the channel.
fn mock(answers: Vec<Answer>) -> (String, mpsc::Receiver<Seen>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let (tx, rx) = mpsc::channel();
    std::thread::Builder::new()
        .name("mock-http".into())
        .spawn(move || {
            for (status, headers, body) in answers {
                let Ok((stream, _)) = listener.accept() else { return };
                stream.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
                let mut reader = BufReader::new(stream);
                let mut line = String::new();
                reader.read_line(&mut line).unwrap();
                let mut seen = Seen {
                    line: line.trim().to_owned(),
                    headers: Vec::new(),
                    body: String::new(),
                };
                loop {
                    let mut h = String::new();
                    reader.read_line(&mut h).unwrap();
                    let h = h.trim();
                    if h.is_empty() {
                        break;
                    }
                    let (k, v) = h.split_once(':').unwrap();
                    seen.headers.push((k.trim().to_owned(), v.trim().to_owned()));
                }
                if let Some(len) = seen.header("content-length").and_then(|l| l.parse::<usize>().ok()) {
                    let mut body = vec![0; len];
                    reader.read_exact(&mut body).unwrap();
                    seen.body = String::from_utf8(body).unwrap();
                }
                let mut stream = reader.into_inner();
                let mut resp = format!(
                    "HTTP/1.1 {status} X\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n",
                    body.len()
                );
                for (k, v) in headers {
                    resp.push_str(&format!("{k}: {v}\r\n"));
                }
                resp.push_str("\r\n");
                resp.push_str(body);
                stream.write_all(resp.as_bytes()).unwrap();
                tx.send(seen).unwrap();
            }
        })
        .unwrap();
    (base, rx)
}

fn config(base: &str) -> HttpConfig {
    HttpConfig::default()
        .with_base_url(base)
        .with_search_url(format!("{base}/symbol_search/v3/"))
        .with_timeout(Duration::from_secs(5))
}

const PASSWORD: &str = "s3cr3t-pa55word";

fn no_secret(e: &Error) {
    for text in [e.to_string(), format!("{e:?}")] {
        assert!(!text.contains(PASSWORD), "password leaked: {text}");
        assert!(!text.contains("eyJ"), "token leaked: {text}");
    }
}

#[test]
fn sign_in_returns_the_token_and_sends_the_form_and_headers() {
    let (base, rx) = mock(vec![(
        200,
        vec![],
        r#"{"error":"","user":{"username":"u","auth_token":"eyJhbGc.payload.sig"}}"#,
    )]);
    let token = sign_in(&config(&base), "trader", &Password::new(PASSWORD), None).unwrap();
    assert_eq!(token.expose(), "eyJhbGc.payload.sig");
    assert_eq!(format!("{token:?}"), "AuthToken(<redacted>)");
    let seen = rx.recv_timeout(Duration::from_secs(5)).unwrap();
    assert_eq!(seen.line, "POST /accounts/signin/ HTTP/1.1");
    assert_eq!(seen.header("origin"), Some("https://www.tradingview.com"));
    assert_eq!(seen.header("referer"), Some("https://www.tradingview.com"));
    assert!(
        seen.header("user-agent")
            .unwrap()
            .starts_with("Mozilla/5.0")
    );
    assert_eq!(
        seen.body,
        format!("username=trader&password={PASSWORD}&remember=on")
    );
}

#[test]
fn two_factor_sends_the_code_with_the_first_answers_cookies() {
    let (base, rx) = mock(vec![
        (
            200,
            vec![
                ("Set-Cookie", "sessionid=abc123; Path=/; HttpOnly"),
                ("Set-Cookie", "sessionid_sign=v2:xyz; Path=/"),
            ],
            r#"{"error":"2FA required","code":"2FA_required","two_factor_types":[{"name":"totp"}]}"#,
        ),
        (200, vec![], r#"{"user":{"auth_token":"eyJ2fa.p.s"}}"#),
    ]);
    let token = sign_in(
        &config(&base),
        "trader",
        &Password::new(PASSWORD),
        Some("123456"),
    )
    .unwrap();
    assert_eq!(token.expose(), "eyJ2fa.p.s");
    let _first = rx.recv_timeout(Duration::from_secs(5)).unwrap();
    let second = rx.recv_timeout(Duration::from_secs(5)).unwrap();
    assert_eq!(
        second.line,
        "POST /accounts/two-factor/signin/totp/ HTTP/1.1"
    );
    assert_eq!(
        second.header("cookie"),
        Some("sessionid=abc123; sessionid_sign=v2:xyz")
    );
    assert_eq!(second.body, "code=123456");
}

#[test]
fn sign_in_refusals_are_distinct_errors_without_credentials() {
    let host = String::new(); // filled in per case: each mock has its own port
    let cases: Vec<(u16, &'static str, Error)> = vec![
        (
            200,
            r#"{"error":"Invalid username or password","code":"invalid_credentials"}"#,
            Error::WrongCredentials,
        ),
        (
            200,
            r#"{"error":"robot?","code":"recaptcha_required"}"#,
            Error::CaptchaRequired,
        ),
        (
            200,
            r#"{"error":"slow down","code":"rate_limit"}"#,
            Error::RateLimited {
                host: host.clone(),
                retry_after: None,
            },
        ),
        (
            429,
            "<html>too many</html>",
            Error::RateLimited {
                host: host.clone(),
                retry_after: None,
            },
        ),
        (
            500,
            "<html>oops</html>",
            Error::HttpStatus {
                host: host.clone(),
                status: 500,
            },
        ),
        (
            200,
            r#"{"error":"2FA required","code":"2FA_required"}"#,
            Error::TwoFactorRequired,
        ),
    ];
    for (status, body, mut want) in cases {
        let (base, _rx) = mock(vec![(status, vec![], body)]);
        // Each mock listens on its own port: name it in the expected error.
        let here = base.trim_start_matches("http://").to_owned();
        match &mut want {
            Error::RateLimited { host, .. } | Error::HttpStatus { host, .. } => *host = here,
            _ => {}
        }
        let err = sign_in(&config(&base), "trader", &Password::new(PASSWORD), None).unwrap_err();
        assert_eq!(err, want, "{body}");
        no_secret(&err);
    }
}

#[test]
fn search_sends_the_required_headers_and_parses_v3() {
    let (base, rx) = mock(vec![(
        200,
        vec![],
        r#"{"symbols":[{"symbol":"<em>BTC</em>USDT","description":"Bitcoin / TetherUS","type":"spot","exchange":"BINANCE","currency_code":"USDT"},{"symbol":"BTCUSD","description":"Bitcoin","type":"spot","exchange":"COINBASE"}],"symbols_remaining":0}"#,
    )]);
    let results = search(&config(&base), "btc usd", Some("BINANCE")).unwrap();
    assert_eq!(results.len(), 2);
    assert_eq!(results[0].symbol().unwrap().as_str(), "BINANCE:BTCUSDT");
    let seen = rx.recv_timeout(Duration::from_secs(5)).unwrap();
    assert!(
        seen.line
            .starts_with("GET /symbol_search/v3/?text=btc%20usd&hl=1&exchange=BINANCE&"),
        "{}",
        seen.line
    );
    assert_eq!(seen.header("origin"), Some("https://www.tradingview.com"));
    assert_eq!(seen.header("referer"), Some("https://www.tradingview.com/"));
}

#[test]
fn search_refusals_and_garbage_are_typed() {
    let (base, _rx) = mock(vec![(403, vec![], "forbidden"), (200, vec![], "not json")]);
    assert_eq!(
        search(&config(&base), "x", None).unwrap_err(),
        Error::HttpStatus {
            host: base.trim_start_matches("http://").to_owned(),
            status: 403
        }
    );
    assert!(matches!(
        search(&config(&base), "x", None).unwrap_err(),
        Error::Http(_)
    ));
}

#[test]
fn an_unanswered_call_hits_its_timeout() {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let cfg = config(&base).with_timeout(Duration::from_millis(500));
    let err = search(&cfg, "x", None).unwrap_err();
    assert_eq!(
        err,
        Error::Timeout {
            after: Duration::from_millis(500),
            during: Phase::Http
        }
    );
    drop(listener);
}
