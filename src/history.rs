//! The blocking historical client: [`Client::get_hist`] and its options.
//!
//! One call opens one connection, drives a [`Connection`] with one chart session to the end of
//! the history (paging with `request_more_data` past one request's limit), and closes. The
//! call's one deadline bounds everything (connect, TLS, upgrade, every message), however the
//! server trickles; every server refusal is a typed [`Error`] as soon as the server says it (a
//! bad symbol never ends in a timeout).

use std::time::{Duration, Instant};

use crate::{
    AuthToken, Bar, Error, Interval, Symbol, clock,
    protocol::{
        Adjustment, ChartConfig, ChartEvent, Connection, ConnectionConfig, Event, SeriesEvent,
        SeriesKey, SeriesRequest, SymbolInfo, SymbolSpec, TradingSession,
    },
    transport::{self, Endpoint, TransportConfig},
};

/// The environment variable [`ClientConfig::from_env`] reads a token from.
pub const TOKEN_ENV: &str = "TV_AUTH_TOKEN";

/// The environment variable [`ClientConfig::from_env`] reads an endpoint from.
pub const URL_ENV: &str = "TVDATAFEED_URL";

/// The default deadline of a whole call.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(60);

/// Settings of a [`Client`]. By-value setters; every default is documented.
#[derive(Clone)]
#[non_exhaustive]
pub struct ClientConfig {
    /// Endpoint and TLS trust. Default: `wss://data.tradingview.com`, webpki roots.
    pub transport: TransportConfig,
    /// Auth token. Default: anonymous (`unauthorized_user_token`). Never shown by `Debug`.
    pub token: AuthToken,
    /// Deadline of a whole call (connect, TLS, upgrade, every page). Default
    /// [`DEFAULT_TIMEOUT`] (60 s). [`Duration::MAX`] (or any span too large to add to the
    /// clock) means no deadline.
    pub timeout: Duration,
}

impl Default for ClientConfig {
    fn default() -> Self {
        Self {
            transport: TransportConfig::default(),
            token: AuthToken::anonymous(),
            timeout: DEFAULT_TIMEOUT,
        }
    }
}

impl std::fmt::Debug for ClientConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClientConfig")
            .field("transport", &self.transport)
            .field("token", &self.token)
            .field("timeout", &self.timeout)
            .finish()
    }
}

impl ClientConfig {
    /// The defaults, with the token from [`TOKEN_ENV`] (`TV_AUTH_TOKEN`) and the endpoint
    /// from [`URL_ENV`] (`TVDATAFEED_URL`) when they are set and not empty.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidRequest`] when `TVDATAFEED_URL` is not a `ws://` or `wss://` URL.
    pub fn from_env() -> Result<Self, Error> {
        let var = |name| {
            std::env::var(name)
                .ok()
                .map(|v| v.trim().to_owned())
                .filter(|v| !v.is_empty())
        };
        let mut config = Self::default();
        if let Some(token) = var(TOKEN_ENV) {
            config.token = AuthToken::new(token);
        }
        if let Some(url) = var(URL_ENV) {
            config.transport.endpoint = url.parse().map_err(|e: crate::EndpointError| {
                Error::InvalidRequest(format!("{URL_ENV}: {e}"))
            })?;
        }
        Ok(config)
    }

    /// Sets the endpoint: an [`Endpoint`], or a `ws://`/`wss://` URL string.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidRequest`] when the string is not such a URL.
    pub fn with_endpoint<E>(mut self, endpoint: E) -> Result<Self, Error>
    where
        E: TryInto<Endpoint>,
        E::Error: Into<Error>,
    {
        self.transport.endpoint = endpoint.try_into().map_err(Into::into)?;
        Ok(self)
    }

    /// Trusts one more root certificate (DER), e.g. the simulator's.
    #[must_use]
    pub fn with_root_certificate(mut self, der: impl Into<Vec<u8>>) -> Self {
        self.transport.extra_roots.push(der.into());
        self
    }

    /// Trusts every certificate of a PEM bundle, e.g. the file `tvdatafeed sim --tls
    /// --cert-out FILE` writes.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidRequest`] when the text holds no certificate or a malformed one.
    pub fn with_root_certificates_pem(mut self, pem: &str) -> Result<Self, Error> {
        self.transport = self.transport.with_root_certificates_pem(pem)?;
        Ok(self)
    }

    /// Sets the auth token.
    #[must_use]
    pub fn with_token(mut self, token: AuthToken) -> Self {
        self.token = token;
        self
    }

    /// Sets the deadline of a whole call ([`Duration::MAX`]: none).
    #[must_use]
    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// The instant a call starting at `start` must end by, or `None` for no deadline.
    fn deadline(&self, start: Instant) -> Option<Instant> {
        start.checked_add(self.timeout)
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
    /// The closed bars asked for (`None` for a date range).
    pub requested: Option<u32>,
}

impl History {
    /// How many of the closed bars asked for did not come back: the server had no more (a
    /// young symbol) or the account's history depth stopped it (5,000 bars anonymous). Always
    /// 0 for a date range.
    pub fn missing(&self) -> u32 {
        self.requested.map_or(0, |n| {
            n.saturating_sub(u32::try_from(self.bars.len()).unwrap_or(u32::MAX))
        })
    }
}

/// A blocking client for historical bars. Every call blocks the calling thread until the
/// history is complete, the server refuses, or [`ClientConfig::timeout`] passes; it holds no
/// lock and shares nothing, so calls from several threads run in parallel.
///
/// # Examples
///
/// ```no_run
/// use tvdatafeed::{Client, ClientConfig, HistOptions};
///
/// let client = Client::new(ClientConfig::from_env()?);
/// let h = client.get_hist("BINANCE:BTCUSDT", "1H", 500, &HistOptions::default())?;
/// for bar in &h.bars {
///     println!("{} {}", bar.time, bar.close);
/// }
/// # Ok::<(), tvdatafeed::Error>(())
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
    /// the forming bar apart. `symbol` and `interval` are values or strings
    /// (`"BINANCE:BTCUSDT"`, `"1H"`).
    ///
    /// # Errors
    ///
    /// [`Error::Series`] with the server's refusal (unknown symbol, permission denied, interval
    /// not entitled, invalid parameters); [`Error::AuthRejected`]; [`Error::Timeout`] when the
    /// whole call exceeds [`ClientConfig::timeout`]; [`Error::RateLimited`] on a 429;
    /// [`Error::Transport`] (connect, TLS, upgrade refused, connection closed);
    /// [`Error::Protocol`]; [`Error::InvalidRequest`] for a bad symbol or interval string, `n
    /// == 0` or above [`MAX_BARS`], or a reversed range.
    pub fn get_hist<S, I>(
        &self,
        symbol: S,
        interval: I,
        n: u32,
        options: &HistOptions,
    ) -> Result<History, Error>
    where
        S: TryInto<Symbol>,
        S::Error: Into<Error>,
        I: TryInto<Interval>,
        I::Error: Into<Error>,
    {
        self.get_hist_with_progress(symbol, interval, n, options, |_| {})
    }

    /// [`Client::get_hist`], calling `progress(bars_loaded)` after each page.
    ///
    /// # Errors
    ///
    /// As [`Client::get_hist`].
    pub fn get_hist_with_progress<S, I>(
        &self,
        symbol: S,
        interval: I,
        n: u32,
        options: &HistOptions,
        mut progress: impl FnMut(usize),
    ) -> Result<History, Error>
    where
        S: TryInto<Symbol>,
        S::Error: Into<Error>,
        I: TryInto<Interval>,
        I::Error: Into<Error>,
    {
        let symbol: Symbol = symbol.try_into().map_err(Into::into)?;
        let interval: Interval = interval.try_into().map_err(Into::into)?;
        let request = series_request(&symbol, interval, n, options)?;
        let budget = self.config.timeout;
        let start = clock::monotonic();
        let deadline = self.config.deadline(start);
        let conn_config = ConnectionConfig::default()
            .with_auth_token(self.config.token.clone())
            .with_idle_timeout(budget)
            .with_id_seed(clock::id_seed());
        let mut proto = Connection::new(start, conn_config);
        let chart = proto.add_chart(start, ChartConfig::default().with_load_timeout(budget));
        proto
            .chart_mut(chart)
            .ok_or_else(|| Error::Protocol("chart session lost".into()))?
            .add_series(start, SeriesKey(0), request)
            .map_err(|e| Error::InvalidRequest(e.to_string()))?;
        let mut ws = transport::Connection::connect(&self.config.transport, deadline, budget)?;
        let result = drive(
            &mut ws,
            &mut proto,
            &mut progress,
            &symbol,
            interval,
            n,
            options,
        );
        ws.close();
        result
    }
}

/// The series request of one `get_hist` call, validated.
pub(crate) fn series_request(
    symbol: &Symbol,
    interval: Interval,
    n: u32,
    options: &HistOptions,
) -> Result<SeriesRequest, Error> {
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
    };
    Ok(request.with_spec(spec))
}

/// The error a connection-level event means for a call in flight, if any.
pub(crate) fn connection_error(event: &Event) -> Option<Error> {
    match event {
        Event::ProtocolError { text } if text == "bad auth token" => Some(Error::AuthRejected),
        Event::ProtocolError { text } => Some(Error::Protocol(format!(
            "the server reported a protocol error: {}",
            crate::error::echo(text)
        ))),
        Event::CriticalError { reason, detail } => Some(Error::InvalidParameters {
            reason: crate::error::echo(reason),
            detail: crate::error::echo(detail.as_deref().unwrap_or("")),
        }),
        Event::Chart {
            event: ChartEvent::CriticalError { reason, detail },
            ..
        } => Some(Error::InvalidParameters {
            reason: crate::error::echo(reason),
            detail: crate::error::echo(detail.as_deref().unwrap_or("")),
        }),
        _ => None,
    }
}

fn drive(
    ws: &mut transport::Connection,
    proto: &mut Connection,
    progress: &mut impl FnMut(usize),
    symbol: &Symbol,
    interval: Interval,
    n: u32,
    options: &HistOptions,
) -> Result<History, Error> {
    let mut info = None;
    loop {
        while let Some(msg) = proto.poll_transmit() {
            ws.send(msg)?;
        }
        while let Some(event) = proto.poll_event() {
            if let Some(e) = connection_error(&event) {
                return Err(e);
            }
            let Event::Chart {
                event: ChartEvent::Series { event, .. },
                ..
            } = event
            else {
                continue;
            };
            match event {
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
                        requested: options.range.is_none().then_some(n),
                    });
                }
                SeriesEvent::Failed(failure) => {
                    return Err(Error::Series {
                        symbol: symbol.clone(),
                        interval,
                        failure,
                    });
                }
                SeriesEvent::Update(_) | SeriesEvent::Closed(_) | SeriesEvent::Late(_) => {}
            }
        }
        let mut msg = ws.recv()?;
        let now = clock::monotonic();
        proto
            .handle_message(now, &mut msg)
            .map_err(|e| Error::Protocol(e.to_string()))?;
        if proto.poll_timeout().is_some_and(|t| t <= now) {
            proto.handle_timeout(now);
        }
    }
}
