//! The blocking historical client: [`Client::get_hist`] and its options.
//!
//! One call opens one connection, drives a [`ChartSession`] to the end of the history (paging
//! with `request_more_data` past one request's limit), and closes. Every blocking step is
//! bounded by the call's deadline; every server refusal is a typed [`Error`] as soon as the
//! server says it (a bad symbol never ends in a timeout).

use std::time::{Duration, Instant};

use crate::{
    Bar, Error, Interval, Symbol, clock,
    protocol::{
        Adjustment, AuthToken, ChartSession, SeriesEvent, SeriesFailure, SeriesRequest,
        SessionConfig, SessionEvent, SymbolInfo, SymbolSpec, TradingSession,
    },
    transport::{Connection, Endpoint, TransportConfig},
};

/// The environment variable [`ClientConfig::from_env`] reads a token from.
pub const TOKEN_ENV: &str = "TV_AUTH_TOKEN";

/// Settings of a [`Client`]. By-value setters; every default is documented.
#[derive(Clone, Default)]
#[non_exhaustive]
pub struct ClientConfig {
    /// Endpoint and TLS trust. Default: `wss://data.tradingview.com`, webpki roots.
    pub transport: TransportConfig,
    /// Auth token; `None` is anonymous (`unauthorized_user_token`). Never shown by `Debug`.
    pub token: Option<AuthToken>,
    /// Deadline of a whole call (connect, upgrade, every page). Default 60 s.
    pub timeout: Option<Duration>,
}

impl std::fmt::Debug for ClientConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClientConfig")
            .field("transport", &self.transport)
            .field("token", &self.token)
            .field("timeout", &self.timeout())
            .finish()
    }
}

impl ClientConfig {
    /// The defaults, with the token from [`TOKEN_ENV`] when it is set and not empty.
    pub fn from_env() -> Self {
        let token = std::env::var(TOKEN_ENV)
            .ok()
            .filter(|t| !t.trim().is_empty());
        Self::default().with_token(token.map(|t| AuthToken::new(t.trim())))
    }

    /// Sets the endpoint.
    #[must_use]
    pub fn with_endpoint(mut self, endpoint: Endpoint) -> Self {
        self.transport.endpoint = endpoint;
        self
    }

    /// Trusts one more root certificate (DER), e.g. the simulator's.
    #[must_use]
    pub fn with_root_certificate(mut self, der: impl Into<Vec<u8>>) -> Self {
        self.transport.extra_roots.push(der.into());
        self
    }

    /// Sets the auth token (`None`: anonymous).
    #[must_use]
    pub fn with_token(mut self, token: Option<AuthToken>) -> Self {
        self.token = token;
        self
    }

    /// Sets the deadline of a whole call.
    #[must_use]
    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = Some(timeout);
        self
    }

    /// The deadline of a whole call.
    pub fn timeout(&self) -> Duration {
        self.timeout.unwrap_or(Duration::from_secs(60))
    }
}

/// What to download besides the symbol and interval.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct HistOptions {
    /// Include pre- and post-market bars.
    pub extended_session: bool,
    /// Price adjustment (default: splits).
    pub adjustment: Adjustment,
    /// Back-adjust continuous futures at rolls.
    pub back_adjustment: bool,
    /// Convert prices to this currency.
    pub currency: Option<String>,
    /// Bars opening in `from..=to` (UTC seconds) instead of the last `n`.
    pub range: Option<(i64, i64)>,
}

impl HistOptions {
    /// Sets [`HistOptions::extended_session`].
    #[must_use]
    pub fn with_extended_session(mut self, on: bool) -> Self {
        self.extended_session = on;
        self
    }

    /// Sets [`HistOptions::adjustment`].
    #[must_use]
    pub fn with_adjustment(mut self, a: Adjustment) -> Self {
        self.adjustment = a;
        self
    }

    /// Sets [`HistOptions::back_adjustment`].
    #[must_use]
    pub fn with_back_adjustment(mut self, on: bool) -> Self {
        self.back_adjustment = on;
        self
    }

    /// Sets [`HistOptions::currency`].
    #[must_use]
    pub fn with_currency(mut self, c: impl Into<String>) -> Self {
        self.currency = Some(c.into());
        self
    }

    /// Sets [`HistOptions::range`].
    #[must_use]
    pub fn with_range(mut self, from: i64, to: i64) -> Self {
        self.range = Some((from, to));
        self
    }
}

/// A downloaded history.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct History {
    /// The symbol.
    pub symbol: Symbol,
    /// The interval.
    pub interval: Interval,
    /// Closed bars, ascending by open time, deduplicated, UTC seconds.
    pub bars: Vec<Bar>,
    /// The bar still forming, apart so that appending downloads never duplicates a bar.
    pub forming: Option<Bar>,
    /// What the server said about the symbol.
    pub info: Option<SymbolInfo>,
    /// `streaming`, `delayed_streaming_900`…
    pub update_mode: String,
}

/// A blocking client for historical bars.
///
/// # Examples
///
/// ```no_run
/// use tvdatafeed::{Client, ClientConfig, HistOptions};
///
/// let client = Client::new(ClientConfig::from_env());
/// let h = client.get_hist(&"BINANCE:BTCUSDT".parse()?, "1H".parse()?, 500, &HistOptions::default())?;
/// for bar in &h.bars {
///     println!("{} {}", bar.time, bar.close);
/// }
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug, Clone)]
pub struct Client {
    config: ClientConfig,
}

/// Largest number of closed bars one call accepts.
pub const MAX_BARS: u32 = 1_000_000;

impl Client {
    /// A client with `config`.
    pub fn new(config: ClientConfig) -> Self {
        Self { config }
    }

    /// The configuration.
    pub fn config(&self) -> &ClientConfig {
        &self.config
    }

    /// The last `n` closed bars of `symbol` at `interval` (or those of `options.range`), and
    /// the forming bar apart.
    ///
    /// # Errors
    ///
    /// [`Error::UnknownSymbol`], [`Error::PermissionDenied`], [`Error::IntervalNotEntitled`],
    /// [`Error::InvalidParameters`] as the server answers; [`Error::AuthRejected`];
    /// [`Error::Timeout`] when the whole call exceeds [`ClientConfig::timeout`];
    /// [`Error::HttpStatus`] when the upgrade is refused; [`Error::Io`], [`Error::Tls`],
    /// [`Error::Closed`], [`Error::Protocol`]; [`Error::InvalidRequest`] for `n == 0` or
    /// above [`MAX_BARS`].
    pub fn get_hist(
        &self,
        symbol: &Symbol,
        interval: Interval,
        n: u32,
        options: &HistOptions,
    ) -> Result<History, Error> {
        self.get_hist_with_progress(symbol, interval, n, options, |_| {})
    }

    /// [`Client::get_hist`], calling `progress(bars_loaded)` after each page.
    ///
    /// # Errors
    ///
    /// As [`Client::get_hist`].
    pub fn get_hist_with_progress(
        &self,
        symbol: &Symbol,
        interval: Interval,
        n: u32,
        options: &HistOptions,
        mut progress: impl FnMut(usize),
    ) -> Result<History, Error> {
        if options.range.is_none() && !(1..=MAX_BARS).contains(&n) {
            return Err(Error::InvalidRequest(format!(
                "bar count {n} is outside 1..={MAX_BARS}"
            )));
        }
        if let Some((from, to)) = options.range
            && from > to
        {
            return Err(Error::InvalidRequest(format!(
                "range start {from} is after its end {to}"
            )));
        }
        let budget = self.config.timeout();
        let start = clock::monotonic();
        let deadline = start + budget;
        let mut spec = SymbolSpec::new(symbol.clone())
            .with_adjustment(options.adjustment)
            .with_back_adjustment(options.back_adjustment)
            .with_session(if options.extended_session {
                TradingSession::Extended
            } else {
                TradingSession::Regular
            });
        if let Some(c) = &options.currency {
            spec = spec.with_currency(c.clone());
        }
        let request = match options.range {
            Some((from, to)) => {
                SeriesRequest::range(symbol.clone(), interval, from, to, n.clamp(1, MAX_BARS))
            }
            None => SeriesRequest::count(symbol.clone(), interval, n),
        }
        .with_spec(spec);
        let session_config = SessionConfig::default()
            .with_auth_token(Some(
                self.config
                    .token
                    .clone()
                    .unwrap_or_else(AuthToken::anonymous),
            ))
            .with_load_timeout_ms(budget.as_millis() as u64)
            .with_idle_timeout_ms(budget.as_millis() as u64);
        let mut session = ChartSession::with_config(session_id(), session_config);
        let ms = |at: Instant| at.saturating_duration_since(start).as_millis() as u64;
        let series = session
            .add_series(0, request)
            .map_err(|e| Error::InvalidRequest(e.to_string()))?;
        let mut conn = Connection::connect(&self.config.transport, deadline, budget)?;
        let result = drive(
            &mut conn,
            &mut session,
            deadline,
            ms,
            &mut progress,
            symbol,
            interval,
            series,
        );
        conn.close();
        result
    }
}

#[allow(clippy::too_many_arguments, reason = "the call's state, passed once")]
fn drive(
    conn: &mut Connection,
    session: &mut ChartSession,
    deadline: Instant,
    ms: impl Fn(Instant) -> u64,
    progress: &mut impl FnMut(usize),
    symbol: &Symbol,
    interval: Interval,
    series: crate::protocol::SeriesId,
) -> Result<History, Error> {
    let mut out = Vec::with_capacity(256);
    let mut info = None;
    loop {
        while session.poll_transmit(&mut out) {
            conn.send(&out, deadline)?;
            out.clear();
        }
        while let Some(event) = session.poll_event() {
            match event {
                SessionEvent::Series { id, event } if id == series => match event {
                    SeriesEvent::Resolved(i) => info = Some(*i),
                    SeriesEvent::Progress { bars } => progress(bars),
                    SeriesEvent::History {
                        bars,
                        forming,
                        update_mode,
                    } => {
                        progress(bars.len() + usize::from(forming.is_some()));
                        return Ok(History {
                            symbol: symbol.clone(),
                            interval,
                            bars,
                            forming,
                            info,
                            update_mode,
                        });
                    }
                    SeriesEvent::Failed(f) => return Err(failure(f, symbol, interval)),
                    SeriesEvent::Update(_) | SeriesEvent::Closed(_) => {}
                },
                SessionEvent::ProtocolError { text } if text == "bad auth token" => {
                    return Err(Error::AuthRejected);
                }
                SessionEvent::ProtocolError { text } => return Err(Error::Protocol(text)),
                SessionEvent::CriticalError { reason, detail } => {
                    return Err(Error::InvalidParameters {
                        reason,
                        detail: detail.unwrap_or_default(),
                    });
                }
                _ => {}
            }
        }
        let mut msg = conn.recv(deadline)?;
        session
            .handle_message(ms(clock::monotonic()), &mut msg)
            .map_err(|e| Error::Protocol(e.to_string()))?;
    }
}

fn failure(f: SeriesFailure, symbol: &Symbol, interval: Interval) -> Error {
    match f {
        SeriesFailure::UnknownSymbol { reason } => Error::UnknownSymbol {
            symbol: symbol.to_string(),
            reason,
        },
        SeriesFailure::PermissionDenied { kind, detail } => Error::PermissionDenied {
            symbol: symbol.to_string(),
            kind,
            detail,
        },
        SeriesFailure::IntervalNotEntitled { reason } => Error::IntervalNotEntitled {
            interval: interval.to_string(),
            reason,
        },
        SeriesFailure::InvalidParameters { reason, detail } => {
            Error::InvalidParameters { reason, detail }
        }
        SeriesFailure::LoadTimeout { timeout_ms } => {
            Error::Timeout(Duration::from_millis(timeout_ms))
        }
        SeriesFailure::Server { reason } => Error::Protocol(format!("series error: {reason}")),
    }
}

/// `cs_` and 12 characters from `[a-z]`, unique per process and call.
fn session_id() -> String {
    use std::sync::atomic::Ordering;
    #[expect(
        clippy::disallowed_types,
        reason = "a process-wide id counter, not loom-modelled"
    )]
    static COUNTER: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    // Relaxed: only uniqueness matters.
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let mut x =
        clock::unix_ms() ^ n.rotate_left(32) ^ u64::from(std::process::id()).rotate_left(16);
    let mut id = String::from("cs_");
    for _ in 0..12 {
        x = x
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        id.push(char::from(b'a' + ((x >> 33) % 26) as u8));
    }
    id
}
