//! The blocking historical client: [`Client::get_hist`], [`Client::get_hist_many`] and their
//! options.
//!
//! Both drive the same sans-I/O batch ([`batch::HistBatch`]) over one blocking connection
//! ([`many::Link`]): `get_hist` is a batch of one whose one deadline bounds everything
//! (connect, TLS, upgrade, every message), however the server trickles; `get_hist_many` keeps
//! up to [`ClientConfig::max_in_flight`] series loading at once on one connection. Series page
//! with `request_more_data` past one request's limit, and every server refusal is a typed
//! [`Error`] as soon as the server says it (a bad symbol never ends in a timeout).
//!
//! [`Connection`]: crate::protocol::Connection

use std::{
    sync::PoisonError,
    time::{Duration, Instant},
};

// The live engine drives the batch on its own connection.
pub(crate) mod batch;
mod many;

pub use many::{HistMany, HistRequest};

use self::{
    batch::{BatchConfig, BatchRequest},
    many::{ChartErrors, Link, Parked},
};
use crate::{
    AuthToken, Bar, Error, Interval, Symbol, clock,
    protocol::{Adjustment, SymbolInfo},
    sync::plain::{Arc, Mutex},
    transport::{Endpoint, TransportConfig},
};

/// The environment variable [`ClientConfig::from_env`] reads a token from.
pub const TOKEN_ENV: &str = "TV_AUTH_TOKEN";

/// The environment variable [`ClientConfig::from_env`] reads an endpoint from.
pub const URL_ENV: &str = "TVDATAFEED_URL";

/// The default deadline of a whole call.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(60);

/// The default of [`ClientConfig::max_in_flight`]: series loading at once on one connection.
///
/// 16 keeps the connection busy: while the server builds one answer, the others are already
/// asked, so a round trip to TradingView (~100 ms) is paid about once per 16 series, not once
/// per series. It also bounds what one batch holds in memory (16 histories loading) and how
/// hard one connection pushes a server that publishes no limit on series per chart session;
/// a burst of a few dozen `create_series` is what a browser with several charts sends.
pub const DEFAULT_MAX_IN_FLIGHT: usize = 16;

/// Settings of a [`Client`]. By-value setters; every default is documented.
#[derive(Clone)]
#[non_exhaustive]
pub struct ClientConfig {
    /// Endpoint and TLS trust. Default: `wss://data.tradingview.com`, webpki roots.
    pub transport: TransportConfig,
    /// Auth token. Default: anonymous (`unauthorized_user_token`). Never shown by `Debug`.
    pub token: AuthToken,
    /// Deadline of a whole [`Client::get_hist`] call (connect, TLS, upgrade, every page), and
    /// of each request of [`Client::get_hist_many`] (counted from the moment its series
    /// opens; connecting and the connection's silence are bounded by it too). Default
    /// [`DEFAULT_TIMEOUT`] (60 s). [`Duration::MAX`] (or any span too large to add to the
    /// clock) means no deadline.
    pub timeout: Duration,
    /// Most series loading at once on the one connection of [`Client::get_hist_many`] (at
    /// least 1). Default [`DEFAULT_MAX_IN_FLIGHT`] (16); 1 asks one series at a time.
    pub max_in_flight: usize,
    /// Deadline of a whole [`Client::get_hist_many`] batch, from its first `next` to its last
    /// answer; past it every request not yet answered fails with [`Error::Timeout`]. Default
    /// none ([`Duration::MAX`], or any span too large to add to the clock): each request has
    /// its own deadline and a silent connection fails the rest after [`ClientConfig::timeout`],
    /// so a dead server cannot hold a batch; set one to bound the batch's wall time.
    pub batch_timeout: Duration,
}

impl Default for ClientConfig {
    fn default() -> Self {
        Self {
            transport: TransportConfig::default(),
            token: AuthToken::anonymous(),
            timeout: DEFAULT_TIMEOUT,
            max_in_flight: DEFAULT_MAX_IN_FLIGHT,
            batch_timeout: Duration::MAX,
        }
    }
}

impl std::fmt::Debug for ClientConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClientConfig")
            .field("transport", &self.transport)
            .field("token", &self.token)
            .field("timeout", &self.timeout)
            .field("max_in_flight", &self.max_in_flight)
            .field("batch_timeout", &self.batch_timeout)
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

    /// Sets the deadline of a whole call, and of each request of a batch ([`Duration::MAX`]:
    /// none).
    #[must_use]
    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// Sets [`ClientConfig::max_in_flight`], the series loading at once in a batch (0 counts
    /// as 1).
    #[must_use]
    pub fn with_max_in_flight(mut self, n: usize) -> Self {
        self.max_in_flight = n.max(1);
        self
    }

    /// Sets [`ClientConfig::batch_timeout`], the deadline of a whole batch ([`Duration::MAX`]:
    /// none).
    #[must_use]
    pub fn with_batch_timeout(mut self, timeout: Duration) -> Self {
        self.batch_timeout = timeout;
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
    /// The count of bars includes the forming one, as tvDatafeed's `n_bars` and the server's
    /// own count do: `n` bars, `n - 1` closed and the forming one (or `n` closed when the last
    /// bar has closed), in one request. By default `n` means closed bars, the forming one
    /// apart: `n + 1` bars, so 5,000 of them take a second request for one bar.
    pub forming_counted: bool,
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

    /// Sets [`HistOptions::forming_counted`].
    #[must_use]
    pub fn with_forming_counted(mut self, on: bool) -> Self {
        self.forming_counted = on;
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
    /// The connection of the last [`Client::get_hist`], kept for the next one (shared by the
    /// clones). The lock is held only to take or put it back, never across I/O.
    parked: Arc<Mutex<Option<Parked>>>,
}

/// How long after a call [`Client::get_hist`] reuses its connection for the next one: well
/// under TradingView's 10 s heartbeat, so that no heartbeat waits unanswered for long. The
/// connection stays open until the next call (which closes it when older than this) or until
/// the last clone of the [`Client`] is dropped.
pub const KEEP_CONNECTION: Duration = Duration::from_secs(5);

/// Largest number of closed bars one call accepts.
pub const MAX_BARS: u32 = 1_000_000;

impl Client {
    /// A client with `config`.
    pub fn new(config: ClientConfig) -> Self {
        Self {
            config,
            parked: Arc::default(),
        }
    }

    /// The parked connection, if one is fresh enough to reuse: parked less than
    /// [`KEEP_CONNECTION`] ago and less than half the timeout (the connection's silence
    /// timer kept running while it was parked). A stale one is closed.
    fn take_parked(&self) -> Option<Parked> {
        let parked = self
            .parked
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take()?;
        let idle = clock::monotonic().saturating_duration_since(parked.since);
        if idle < KEEP_CONNECTION.min(self.config.timeout / 2) {
            Some(parked)
        } else {
            parked.close();
            None
        }
    }

    /// Keeps `link`'s connection for the next call, unless one is kept already.
    fn park(&self, link: Link) {
        let Some(parked) = link.park() else {
            return;
        };
        let extra = {
            let mut slot = self.parked.lock().unwrap_or_else(PoisonError::into_inner);
            if slot.is_none() {
                *slot = Some(parked);
                None
            } else {
                Some(parked)
            }
        };
        if let Some(p) = extra {
            p.close();
        }
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
    /// The call's connection is kept for the next one for [`KEEP_CONNECTION`] (its chart
    /// session deleted, so the server sends nothing more of it): back-to-back calls skip the
    /// connect, TLS and upgrade. A kept connection the server closed meanwhile, or that says
    /// nothing within 2 s of its reuse (at most half the timeout), is replaced by a new one
    /// within the call's deadline.
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
        let request = BatchRequest::new(symbol, interval, n, options)?;
        // A batch of one whose deadline is the call's: connect, upgrade and every page.
        let start = clock::monotonic();
        let deadline = (self.config.deadline(start), self.config.timeout);
        let batch = BatchConfig {
            max_in_flight: 1,
            request_timeout: self.config.timeout,
            progress: true,
        };
        let open = || {
            Link::open(
                &self.config,
                start,
                deadline,
                vec![request.clone()],
                batch,
                ChartErrors::Fatal,
            )
        };
        let (mut link, mut reused) = match self.take_parked() {
            Some(parked) => (
                Link::resume(
                    parked,
                    &self.config,
                    deadline,
                    vec![request.clone()],
                    batch,
                    ChartErrors::Fatal,
                ),
                true,
            ),
            None => (open()?, false),
        };
        // Whether this call's answer has begun to arrive (then a lost connection is its error).
        let mut answered = false;
        loop {
            while let Some((_, bars)) = link.batch.poll_progress() {
                answered = true;
                progress(bars);
            }
            if let Some((_, result)) = link.batch.poll_result() {
                if let Ok(h) = &result {
                    progress(h.bars.len() + usize::from(h.forming.is_some()));
                    self.park(link);
                } else {
                    link.close();
                }
                return result;
            }
            match link.step() {
                // The kept connection said nothing since it was used again (a middlebox may
                // have dropped it without a word): the call starts over on a new one.
                Ok(()) if reused && !answered && link.kept_but_silent() => {
                    tracing::debug!("the kept connection is silent; connecting again");
                    link.close();
                    link = open()?;
                    reused = false;
                }
                Ok(()) => {}
                // The kept connection was closed by the server while it was parked: the call
                // starts over on a new one (nothing of its answer came on the old one).
                Err(Error::Transport(e)) if reused && !answered => {
                    tracing::debug!(error = %e, "the kept connection was closed; connecting again");
                    link.close();
                    link = open()?;
                    reused = false;
                }
                Err(e) => {
                    link.close();
                    return Err(e);
                }
            }
        }
    }
}
