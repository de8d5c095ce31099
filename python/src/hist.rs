//! `NativeClient`: historical bars, sign-in and symbol search.
//!
//! A history crosses the boundary as raw column buffers (`bytes` of native-endian `int64` and
//! `float64`), which the Python side wraps with `numpy.frombuffer`: no per-bar Python object
//! is ever made, whatever the number of bars.

use std::time::Duration;

use pyo3::{
    prelude::*,
    types::{PyBytes, PyDict, PyList, PyTuple},
};
use tvdatafeed::{
    AuthToken, Bar, Client, ClientConfig, HistOptions, HistRequest, History, Interval, Symbol,
    http::{self, HttpConfig, Password},
};

use crate::errors::{IntoPy, to_py};

/// A column of `n` values as native-endian bytes.
fn column<'py>(
    py: Python<'py>,
    bars: &[Bar],
    value: impl Fn(&Bar) -> [u8; 8],
) -> PyResult<Bound<'py, PyBytes>> {
    PyBytes::new_with(py, bars.len() * 8, |buf| {
        for (chunk, bar) in buf.chunks_exact_mut(8).zip(bars) {
            chunk.copy_from_slice(&value(bar));
        }
        Ok(())
    })
}

/// A bar as the tuple `(time, open, high, low, close, volume)`, `volume` `None` when the
/// symbol has none.
pub(crate) fn bar_tuple<'py>(py: Python<'py>, b: &Bar) -> PyResult<Bound<'py, PyTuple>> {
    (b.time, b.open, b.high, b.low, b.close, b.volume).into_pyobject(py)
}

/// A history as a dict of column buffers (closed bars) plus the forming bar apart.
pub(crate) fn history_to_py<'py>(py: Python<'py>, h: &History) -> PyResult<Bound<'py, PyDict>> {
    let d = PyDict::new(py);
    let bars = &h.bars;
    d.set_item("symbol", h.symbol.as_str())?;
    d.set_item("interval", h.interval.to_string())?;
    d.set_item("time", column(py, bars, |b| b.time.to_ne_bytes())?)?;
    d.set_item("open", column(py, bars, |b| b.open.to_ne_bytes())?)?;
    d.set_item("high", column(py, bars, |b| b.high.to_ne_bytes())?)?;
    d.set_item("low", column(py, bars, |b| b.low.to_ne_bytes())?)?;
    d.set_item("close", column(py, bars, |b| b.close.to_ne_bytes())?)?;
    d.set_item(
        "volume",
        column(py, bars, |b| b.volume.unwrap_or(f64::NAN).to_ne_bytes())?,
    )?;
    let forming = match &h.forming {
        Some(b) => bar_tuple(py, b)?.into_any(),
        None => py.None().into_bound(py),
    };
    d.set_item("forming", forming)?;
    d.set_item("update_mode", &h.update_mode)?;
    d.set_item("missing", h.missing())?;
    Ok(d)
}

/// Options of one history request.
pub(crate) fn options(
    extended_session: bool,
    range: Option<(i64, i64)>,
    forming_counted: bool,
) -> HistOptions {
    let mut o = HistOptions::default()
        .with_extended_session(extended_session)
        .with_forming_counted(forming_counted);
    if let Some((from, to)) = range {
        o = o.with_range(from, to);
    }
    o
}

/// A token that never shows itself: `repr` and `str` say `<redacted>`.
#[pyclass(module = "tvdatafeed_rs._native", frozen, name = "Token")]
pub(crate) struct Token(pub(crate) AuthToken);

#[pymethods]
impl Token {
    #[new]
    fn new(token: String) -> Self {
        Self(AuthToken::new(token))
    }

    fn __repr__(&self) -> &'static str {
        "Token(<redacted>)"
    }

    fn __str__(&self) -> &'static str {
        "<redacted>"
    }
}

/// The endpoint and token: arguments first, then `TVDATAFEED_URL` and `TV_AUTH_TOKEN`, then
/// TradingView anonymously.
pub(crate) fn client_config(
    url: Option<&str>,
    token: Option<&Token>,
    timeout: Option<Duration>,
) -> Result<ClientConfig, tvdatafeed::Error> {
    let mut config = ClientConfig::from_env()?;
    if let Some(url) = url {
        config = config.with_endpoint(url)?;
    }
    if let Some(t) = token {
        config = config.with_token(t.0.clone());
    }
    if let Some(t) = timeout {
        config = config.with_timeout(t);
    }
    Ok(config)
}

/// A blocking history client: one connection per call (several series share one in
/// `get_hist_many`).
#[pyclass(module = "tvdatafeed_rs._native", frozen)]
pub(crate) struct NativeClient {
    client: Client,
}

#[pymethods]
impl NativeClient {
    #[new]
    #[pyo3(signature = (url=None, token=None, timeout=None, max_in_flight=None))]
    fn new(
        py: Python<'_>,
        url: Option<&str>,
        token: Option<PyRef<'_, Token>>,
        timeout: Option<f64>,
        max_in_flight: Option<usize>,
    ) -> PyResult<Self> {
        let timeout = timeout.map(|t| crate::seconds(py, t)).transpose()?;
        let mut config = client_config(url, token.as_deref(), timeout).py_err(py)?;
        if let Some(n) = max_in_flight {
            config = config.with_max_in_flight(n);
        }
        Ok(Self {
            client: Client::new(config),
        })
    }

    /// The endpoint, as a URL (no credential in it).
    #[getter]
    fn url(&self) -> String {
        self.client.config().transport.endpoint.to_string()
    }

    /// `bars` closed bars of `symbol` at `interval`, and the forming bar apart;
    /// `forming_counted`: `bars` in all, the forming one among them (tvDatafeed's `n_bars`).
    #[pyo3(signature = (symbol, interval, bars, extended_session=false, range=None, forming_counted=false))]
    #[expect(
        clippy::too_many_arguments,
        reason = "Python's keyword arguments, one per history option"
    )]
    fn get_hist<'py>(
        &self,
        py: Python<'py>,
        symbol: String,
        interval: String,
        bars: u32,
        extended_session: bool,
        range: Option<(i64, i64)>,
        forming_counted: bool,
    ) -> PyResult<Bound<'py, PyDict>> {
        let client = self.client.clone();
        let opts = options(extended_session, range, forming_counted);
        let h = crate::wait(
            py,
            None,
            move || client.get_hist(symbol.as_str(), interval.as_str(), bars, &opts),
            drop,
        )?
        .py_err(py)?;
        history_to_py(py, &h)
    }

    /// One result per request, in the order asked: a history dict, or the exception for that
    /// request (not raised). `requests` holds `(symbol, interval, bars)` tuples.
    fn get_hist_many<'py>(
        &self,
        py: Python<'py>,
        requests: Vec<(String, String, u32)>,
    ) -> PyResult<Bound<'py, PyList>> {
        let mut parsed: Vec<Result<HistRequest, tvdatafeed::Error>> = Vec::new();
        for (s, i, n) in &requests {
            parsed.push(HistRequest::new(s.as_str(), i.as_str(), *n));
        }
        let good: Vec<HistRequest> = parsed.iter().filter_map(|r| r.clone().ok()).collect();
        let client = self.client.clone();
        let answers = crate::wait(
            py,
            None,
            move || client.get_hist_many(good).collect::<Vec<_>>(),
            drop,
        )?;
        // Back to the order asked: each answer fills the first open slot of its request.
        let mut slots: Vec<Option<Result<History, tvdatafeed::Error>>> =
            parsed.iter().map(|_| None).collect();
        for (req, result) in answers {
            if let Some(i) = parsed
                .iter()
                .enumerate()
                .position(|(i, p)| slots[i].is_none() && p.as_ref().is_ok_and(|p| *p == req))
            {
                slots[i] = Some(result);
            }
        }
        let out = PyList::empty(py);
        for (p, slot) in parsed.into_iter().zip(slots) {
            let item = match (p, slot) {
                (Err(e), _) => to_py(py, &e).into_value(py).into_any().into_bound(py),
                (Ok(_), Some(Ok(h))) => history_to_py(py, &h)?.into_any(),
                (Ok(_), Some(Err(e))) => to_py(py, &e).into_value(py).into_any().into_bound(py),
                (Ok(_), None) => crate::errors::native_error(py, "TvDatafeedError", "no answer")
                    .into_value(py)
                    .into_any()
                    .into_bound(py),
            };
            out.append(item)?;
        }
        Ok(out)
    }
}

/// Signs in to TradingView; the token comes back opaque.
#[pyfunction]
#[pyo3(signature = (username, password, totp=None, timeout=20.0))]
pub(crate) fn sign_in(
    py: Python<'_>,
    username: String,
    password: String,
    totp: Option<String>,
    timeout: f64,
) -> PyResult<Token> {
    let config = HttpConfig::default().with_timeout(crate::seconds(py, timeout)?);
    let password = Password::new(password);
    crate::wait(
        py,
        None,
        move || http::sign_in(&config, &username, &password, totp.as_deref()),
        drop,
    )?
    .py_err(py)
    .map(Token)
}

/// Symbol search: a list of dicts with the original's keys (`symbol`, `exchange`,
/// `description`, `type`) and `currency_code`.
#[pyfunction]
#[pyo3(signature = (text, exchange=None, timeout=20.0))]
pub(crate) fn search<'py>(
    py: Python<'py>,
    text: String,
    exchange: Option<String>,
    timeout: f64,
) -> PyResult<Bound<'py, PyList>> {
    let config = HttpConfig::default().with_timeout(crate::seconds(py, timeout)?);
    let found = crate::wait(
        py,
        None,
        move || {
            http::search(
                &config,
                &text,
                exchange.as_deref().filter(|e| !e.is_empty()),
            )
        },
        drop,
    )?
    .py_err(py)?;
    let out = PyList::empty(py);
    for r in found {
        let d = PyDict::new(py);
        d.set_item("symbol", &r.ticker)?;
        d.set_item("exchange", &r.exchange)?;
        d.set_item("description", &r.description)?;
        d.set_item("type", &r.kind)?;
        d.set_item("currency_code", r.currency.as_deref())?;
        out.append(d)?;
    }
    Ok(out)
}

/// Parses a symbol and an interval the way the engine does, for early errors in Python.
#[pyfunction]
pub(crate) fn canonical(
    py: Python<'_>,
    symbol: &str,
    interval: &str,
) -> PyResult<(String, String)> {
    let s: Symbol = symbol
        .parse()
        .map_err(|e: tvdatafeed::SymbolError| to_py(py, &e.into()))?;
    let i: Interval = interval
        .parse()
        .map_err(|e: tvdatafeed::IntervalError| to_py(py, &e.into()))?;
    Ok((s.as_str().to_owned(), i.to_string()))
}
