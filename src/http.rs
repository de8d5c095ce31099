//! The two HTTPS calls a datafeed needs: sign-in (with the TOTP two-factor step) and symbol
//! search. Answers are parsed defensively ([`parse_sign_in`], [`parse_search`], both fuzzed):
//! any body gives a typed result, never a panic, and nothing read is unbounded.
//!
//! The password and the token never reach `Debug`, logs or errors.

use std::{fmt, time::Duration};

use simd_json::{BorrowedValue, prelude::*};

use crate::{AuthToken, Error, error::Phase, transport::USER_AGENT};

/// Largest HTTP body read.
const MAX_BODY: u64 = 4 << 20;
/// Most search results kept.
const MAX_RESULTS: usize = 1_000;

/// A password: shown as `<redacted>` by `Debug`, never logged.
#[derive(Clone, PartialEq, Eq)]
pub struct Password(String);

impl Password {
    /// Wraps a password.
    pub fn new(p: impl Into<String>) -> Self {
        Self(p.into())
    }

    fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Password {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Password(<redacted>)")
    }
}

/// Where the HTTPS calls go, and their deadline.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct HttpConfig {
    /// Sign-in base, default `https://www.tradingview.com`.
    pub base_url: String,
    /// Search endpoint, default `https://symbol-search.tradingview.com/symbol_search/v3/`.
    pub search_url: String,
    /// Deadline of each call, default 20 s.
    pub timeout: Duration,
}

impl Default for HttpConfig {
    fn default() -> Self {
        Self {
            base_url: "https://www.tradingview.com".into(),
            search_url: "https://symbol-search.tradingview.com/symbol_search/v3/".into(),
            timeout: Duration::from_secs(20),
        }
    }
}

impl HttpConfig {
    /// Sets [`HttpConfig::base_url`] (no trailing slash needed).
    #[must_use]
    pub fn with_base_url(mut self, url: impl Into<String>) -> Self {
        self.base_url = url.into().trim_end_matches('/').to_owned();
        self
    }

    /// Sets [`HttpConfig::search_url`].
    #[must_use]
    pub fn with_search_url(mut self, url: impl Into<String>) -> Self {
        self.search_url = url.into();
        self
    }

    /// Sets [`HttpConfig::timeout`].
    #[must_use]
    pub fn with_timeout(mut self, t: Duration) -> Self {
        self.timeout = t;
        self
    }

    fn agent(&self) -> ureq::Agent {
        ureq::Agent::config_builder()
            .timeout_global(Some(self.timeout))
            .http_status_as_error(false)
            .user_agent(USER_AGENT)
            .build()
            .into()
    }
}

/// One symbol-search result.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct SearchResult {
    /// The ticker (`BTCUSDT`), highlight tags removed.
    pub ticker: String,
    /// The exchange (`BINANCE`).
    pub exchange: String,
    /// Description.
    pub description: String,
    /// `spot`, `stock`, `index`, `futures`, `forex`, `crypto`…
    pub kind: String,
    /// Currency code, when given.
    pub currency: Option<String>,
}

impl SearchResult {
    /// `EXCHANGE:TICKER`, when both parts are valid.
    pub fn symbol(&self) -> Option<crate::Symbol> {
        crate::Symbol::new(&self.exchange, &self.ticker).ok()
    }
}

/// What a sign-in answer says.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum SignIn {
    /// Signed in: the token.
    Token(AuthToken),
    /// A two-factor code is needed.
    TwoFactor,
}

fn strip_em(s: &str) -> String {
    s.replace("<em>", "").replace("</em>", "")
}

/// The host of an `https://host[:port]/…` URL, for error messages.
fn url_host(url: &str) -> String {
    let rest = url.split_once("://").map_or(url, |(_, r)| r);
    crate::error::echo(rest.split(['/', '?']).next().unwrap_or(rest))
}

fn http_error(e: ureq::Error, timeout: Duration, host: &str) -> Error {
    match e {
        ureq::Error::Timeout(_) => Error::Timeout {
            after: timeout,
            during: Phase::Http,
        },
        ureq::Error::Io(io) => Error::Io {
            host: host.to_owned(),
            source: io.into(),
        },
        ureq::Error::StatusCode(status) => status_error(status, host),
        other => Error::Http(format!("{host}: {other}")),
    }
}

/// `rate_limit` answers name no host; give them the one asked.
fn with_host(e: Error, host: &str) -> Error {
    match e {
        Error::RateLimited { retry_after, .. } => Error::RateLimited {
            host: host.to_owned(),
            retry_after,
        },
        e => e,
    }
}

/// Percent-encodes a query value.
fn encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

fn read_body(resp: &mut ureq::http::Response<ureq::Body>) -> Result<Vec<u8>, Error> {
    resp.body_mut()
        .with_config()
        .limit(MAX_BODY)
        .read_to_vec()
        .map_err(|e| Error::Http(format!("reading the body: {e}")))
}

/// Parses a sign-in answer (`/accounts/signin/` or the two-factor step).
///
/// # Errors
///
/// [`Error::WrongCredentials`], [`Error::CaptchaRequired`], [`Error::RateLimited`], or
/// [`Error::Http`] for an answer of another shape. Server text is never copied into errors
/// that could carry a credential.
pub fn parse_sign_in(body: &[u8]) -> Result<SignIn, Error> {
    let mut buf = body.to_vec();
    let v = simd_json::to_borrowed_value(&mut buf)
        .map_err(|_| Error::Http("sign-in answer is not json".into()))?;
    if let Some(token) = v
        .get("user")
        .and_then(|u| u.get("auth_token"))
        .and_then(|t| t.as_str())
        .filter(|t| !t.is_empty() && t.len() < 16_384)
    {
        return Ok(SignIn::Token(AuthToken::new(token)));
    }
    let code = v.get("code").and_then(|c| c.as_str()).unwrap_or("");
    let error = v.get("error").and_then(|c| c.as_str()).unwrap_or("");
    match code {
        "2FA_required" => Ok(SignIn::TwoFactor),
        "recaptcha_required" => Err(Error::CaptchaRequired),
        "rate_limit" | "too_many_requests" => Err(Error::RateLimited {
            host: "the sign-in service".into(),
            retry_after: None,
        }),
        "invalid_credentials" | "wrong_credentials" | "invalid_code" => {
            Err(Error::WrongCredentials)
        }
        _ if error
            .to_ascii_lowercase()
            .contains("invalid username or password") =>
        {
            Err(Error::WrongCredentials)
        }
        _ if v.is_object() && !error.is_empty() => Err(Error::Http(format!(
            "sign-in refused ({})",
            code.chars()
                .filter(|c| c.is_ascii_alphanumeric() || *c == '_')
                .take(40)
                .collect::<String>()
        ))),
        _ => Err(Error::Http("sign-in answer has no token".into())),
    }
}

fn search_item(x: &BorrowedValue<'_>) -> Option<SearchResult> {
    let s = |k: &str| x.get(k).and_then(|v| v.as_str()).map(strip_em);
    let ticker = s("symbol")?;
    let exchange = s("exchange").or_else(|| s("source_id")).unwrap_or_default();
    Some(SearchResult {
        ticker,
        exchange,
        description: s("description").unwrap_or_default(),
        kind: s("type").unwrap_or_default(),
        currency: s("currency_code"),
    })
}

/// Parses a symbol-search answer: the v3 `{"symbols":[…]}` object, or the older bare array.
///
/// # Errors
///
/// [`Error::Http`] when the body is not JSON of either shape.
pub fn parse_search(body: &[u8]) -> Result<Vec<SearchResult>, Error> {
    let mut buf = body.to_vec();
    let v = simd_json::to_borrowed_value(&mut buf)
        .map_err(|_| Error::Http("search answer is not json".into()))?;
    let list = match v.get("symbols") {
        Some(l) => l.as_array(),
        None => v.as_array(),
    }
    .ok_or_else(|| Error::Http("search answer has no symbol list".into()))?;
    Ok(list
        .iter()
        .filter_map(search_item)
        .take(MAX_RESULTS)
        .collect())
}

/// Signs in with a username and password, and a TOTP code when the account has two-factor
/// authentication.
///
/// # Errors
///
/// [`Error::TwoFactorRequired`] when the account needs a code and none was given;
/// [`Error::WrongCredentials`], [`Error::CaptchaRequired`] (sign in with a browser and pass its
/// token instead), [`Error::RateLimited`], [`Error::HttpStatus`], [`Error::Timeout`],
/// [`Error::Io`], [`Error::Http`].
pub fn sign_in(
    config: &HttpConfig,
    username: &str,
    password: &Password,
    totp: Option<&str>,
) -> Result<AuthToken, Error> {
    let agent = config.agent();
    let base = config.base_url.trim_end_matches('/');
    let host = url_host(base);
    // Neither the user name nor the password, at any level.
    tracing::debug!(%host, "signing in");
    let mut resp = agent
        .post(format!("{base}/accounts/signin/"))
        .header("Referer", "https://www.tradingview.com")
        .header("Origin", "https://www.tradingview.com")
        .send_form([
            ("username", username),
            ("password", password.expose()),
            ("remember", "on"),
        ])
        .map_err(|e| http_error(e, config.timeout, &host))?;
    let status = resp.status().as_u16();
    let cookies: Vec<String> = resp
        .headers()
        .get_all("set-cookie")
        .iter()
        .filter_map(|c| c.to_str().ok())
        .filter_map(|c| c.split(';').next().map(str::to_owned))
        .collect();
    let body = read_body(&mut resp)?;
    tracing::debug!(%host, status, "sign-in answered");
    let first = match parse_sign_in(&body) {
        Err(Error::Http(_)) if status >= 400 => return Err(status_error(status, &host)),
        other => other.map_err(|e| with_host(e, &host))?,
    };
    match first {
        SignIn::Token(t) => Ok(t),
        SignIn::TwoFactor => {
            let code = totp.ok_or(Error::TwoFactorRequired)?;
            if code.len() != 6 || !code.bytes().all(|b| b.is_ascii_digit()) {
                return Err(Error::InvalidRequest("a TOTP code is six digits".into()));
            }
            let mut resp = agent
                .post(format!("{base}/accounts/two-factor/signin/totp/"))
                .header("Referer", "https://www.tradingview.com")
                .header("Origin", "https://www.tradingview.com")
                .header("Cookie", cookies.join("; "))
                .send_form([("code", code)])
                .map_err(|e| http_error(e, config.timeout, &host))?;
            let status = resp.status().as_u16();
            let body = read_body(&mut resp)?;
            match parse_sign_in(&body) {
                Ok(SignIn::Token(t)) => Ok(t),
                Ok(SignIn::TwoFactor) => Err(Error::WrongCredentials),
                Err(Error::Http(_)) if status >= 400 => Err(status_error(status, &host)),
                Err(e) => Err(with_host(e, &host)),
            }
        }
    }
}

fn status_error(status: u16, host: &str) -> Error {
    match status {
        429 => Error::RateLimited {
            host: host.to_owned(),
            retry_after: None,
        },
        _ => Error::HttpStatus {
            host: host.to_owned(),
            status,
        },
    }
}

/// Searches symbols by text, optionally on one exchange.
///
/// # Errors
///
/// [`Error::HttpStatus`] (the endpoint refuses requests without the TradingView `Origin`,
/// which this sends), [`Error::RateLimited`], [`Error::Timeout`], [`Error::Io`],
/// [`Error::Http`].
pub fn search(
    config: &HttpConfig,
    text: &str,
    exchange: Option<&str>,
) -> Result<Vec<SearchResult>, Error> {
    let url = format!(
        "{}?text={}&hl=1&exchange={}&lang=en&search_type=undefined&domain=production&sort_by_country=US",
        config.search_url,
        encode(text),
        encode(exchange.unwrap_or(""))
    );
    let mut resp = config
        .agent()
        .get(url)
        .header("Origin", "https://www.tradingview.com")
        .header("Referer", "https://www.tradingview.com/")
        .call()
        .map_err(|e| http_error(e, config.timeout, &url_host(&config.search_url)))?;
    let status = resp.status().as_u16();
    if status >= 400 {
        let retry_after = resp
            .headers()
            .get("retry-after")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse().ok())
            .map(Duration::from_secs);
        return Err(match status_error(status, &url_host(&config.search_url)) {
            Error::RateLimited { host, .. } => Error::RateLimited { host, retry_after },
            e => e,
        });
    }
    parse_search(&read_body(&mut resp)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sign_in_answers_map_to_typed_results() {
        let ok = br#"{"error":"","user":{"id":1,"username":"u","auth_token":"eyJ.a.b"}}"#;
        assert_eq!(
            parse_sign_in(ok).unwrap(),
            SignIn::Token(AuthToken::new("eyJ.a.b"))
        );
        assert_eq!(
            parse_sign_in(br#"{"error":"2FA required","code":"2FA_required","two_factor_types":[{"name":"totp"}]}"#).unwrap(),
            SignIn::TwoFactor
        );
        assert!(matches!(
            parse_sign_in(br#"{"error":"Please confirm that you are not a robot","code":"recaptcha_required"}"#),
            Err(Error::CaptchaRequired)
        ));
        assert!(matches!(
            parse_sign_in(br#"{"error":"slow down","code":"rate_limit"}"#),
            Err(Error::RateLimited { .. })
        ));
        assert!(matches!(
            parse_sign_in(
                br#"{"error":"Invalid username or password","code":"invalid_credentials"}"#
            ),
            Err(Error::WrongCredentials)
        ));
        assert!(matches!(parse_sign_in(b"<html>"), Err(Error::Http(_))));
        assert!(matches!(
            parse_sign_in(br#"{"user":{"auth_token":""}}"#),
            Err(Error::Http(_))
        ));
    }

    #[test]
    fn search_answers_parse_and_lose_their_highlights() {
        let v3 = br#"{"symbols":[{"symbol":"<em>BTC</em>USDT","description":"Bitcoin / TetherUS","type":"spot","exchange":"BINANCE","currency_code":"USDT"},{"description":"no symbol"}],"symbols_remaining":0}"#;
        let r = parse_search(v3).unwrap();
        assert_eq!(r.len(), 1);
        assert_eq!(r[0].ticker, "BTCUSDT");
        assert_eq!(r[0].symbol().unwrap().as_str(), "BINANCE:BTCUSDT");
        assert_eq!(r[0].currency.as_deref(), Some("USDT"));
        let old =
            br#"[{"symbol":"AAPL","exchange":"NASDAQ","type":"stock","description":"Apple"}]"#;
        assert_eq!(parse_search(old).unwrap()[0].exchange, "NASDAQ");
        assert!(parse_search(b"{}").is_err());
        assert!(parse_search(b"").is_err());
    }

    #[test]
    fn query_values_are_percent_encoded() {
        assert_eq!(encode("BTC USD&x=é"), "BTC%20USD%26x%3D%C3%A9");
    }

    #[test]
    fn passwords_never_show() {
        let p = Password::new("hunter2");
        assert_eq!(format!("{p:?}"), "Password(<redacted>)");
    }
}
