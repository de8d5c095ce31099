//! `Simulator`: the crate's TradingView-protocol server on loopback, for examples and tests
//! that need no network.

use std::{net::SocketAddr, sync::Mutex};

use pyo3::{prelude::*, types::PyTuple};
use tvdatafeed::{
    Interval, Symbol,
    sim::{Fault, FaultKind, Relay, Sim, SimConfig, Target},
};

use crate::hist::bar_tuple;

/// A simulator: `with Simulator() as sim:` then point a client at `sim.url`.
#[pyclass(module = "tvdatafeed_rs._native", frozen)]
pub(crate) struct Simulator {
    /// In front of `sim` when asked for (`relay_one_way`): `url` is then its address. Declared
    /// first: dropped (stopped) before the server, as `stop` does.
    relay: Mutex<Option<Relay>>,
    sim: Mutex<Option<Sim>>,
    url: String,
}

impl Simulator {
    fn with<T>(&self, py: Python<'_>, f: impl FnOnce(&Sim) -> T) -> PyResult<T> {
        let g = self
            .sim
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        match g.as_ref() {
            Some(s) => Ok(f(s)),
            None => Err(crate::errors::native_error(
                py,
                "ShutdownError",
                "the simulator is stopped",
            )),
        }
    }
}

fn parse(py: Python<'_>, symbol: &str, interval: &str) -> PyResult<(Symbol, Interval)> {
    let s: Symbol = symbol
        .parse()
        .map_err(|e: tvdatafeed::SymbolError| crate::errors::to_py(py, &e.into()))?;
    let i: Interval = interval
        .parse()
        .map_err(|e: tvdatafeed::IntervalError| crate::errors::to_py(py, &e.into()))?;
    Ok((s, i))
}

#[pymethods]
impl Simulator {
    /// Starts a simulator on `127.0.0.1` (a free port unless `port` is given).
    /// `update_interval`: seconds between live updates of each series. `require_origin`:
    /// refuse clients that do not send TradingView's `Origin`, as the real server does.
    /// `entitled_seconds=False` refuses seconds intervals, as an account without them.
    /// A server we did not write, as options: `tick_phase` (seconds) delays the stream's first
    /// trade after each boundary; `request_service_time` (seconds) answers requests one at a
    /// time, each taking that long; `relay_one_way` (seconds) puts a relay in front that
    /// delays each direction by that long (a round trip of twice it): `url` is the relay's.
    #[new]
    #[pyo3(signature = (seed=1, port=0, update_interval=0.25, require_origin=true, quiet_symbols=None, entitled_seconds=true, tick_phase=0.0, request_service_time=0.0, relay_one_way=0.0))]
    #[expect(
        clippy::too_many_arguments,
        reason = "Python's keyword arguments, one per simulator option"
    )]
    fn new(
        py: Python<'_>,
        seed: u64,
        port: u16,
        update_interval: f64,
        require_origin: bool,
        quiet_symbols: Option<Vec<String>>,
        entitled_seconds: bool,
        tick_phase: f64,
        request_service_time: f64,
        relay_one_way: f64,
    ) -> PyResult<Self> {
        let one_way = crate::seconds(py, relay_one_way)?;
        let cfg = SimConfig::default()
            .with_bind(SocketAddr::from(([127, 0, 0, 1], port)))
            .with_seed(seed)
            .with_update_interval(crate::seconds(py, update_interval)?)
            .with_require_origin(require_origin)
            .with_quiet_symbols(quiet_symbols.unwrap_or_default())
            .with_entitled_seconds(entitled_seconds)
            .with_tick_phase(crate::seconds(py, tick_phase)?)
            .with_request_service_time(crate::seconds(py, request_service_time)?);
        let sim = py.detach(move || Sim::start(cfg)).map_err(|e| {
            crate::errors::native_error(py, "TransportError", &format!("simulator: {e}"))
        })?;
        let relay = if one_way.is_zero() {
            None
        } else {
            let addr = sim.addr();
            match py.detach(move || Relay::start(addr, one_way)) {
                Ok(r) => Some(r),
                Err(e) => {
                    py.detach(|| sim.stop(std::time::Duration::from_secs(5)));
                    return Err(crate::errors::native_error(
                        py,
                        "TransportError",
                        &format!("simulator relay: {e}"),
                    ));
                }
            }
        };
        let url = relay
            .as_ref()
            .map_or_else(|| sim.url(), |r| r.url_for(&sim));
        Ok(Self {
            relay: Mutex::new(relay),
            sim: Mutex::new(Some(sim)),
            url,
        })
    }

    /// `ws://127.0.0.1:PORT/socket.io/websocket`.
    #[getter]
    fn url(&self) -> &str {
        &self.url
    }

    /// The simulator's ground truth: the bar of `symbol` at `interval` opening at `time` (UTC
    /// seconds), as `(time, open, high, low, close, volume)`; `None` if it has no such bar.
    fn expected_bar<'py>(
        &self,
        py: Python<'py>,
        symbol: &str,
        interval: &str,
        time: i64,
    ) -> PyResult<Option<Bound<'py, PyTuple>>> {
        let (s, i) = parse(py, symbol, interval)?;
        let bar = self.with(py, |sim| sim.expected_bar_opt(&s, i, time))?;
        bar.map(|b| bar_tuple(py, &b)).transpose()
    }

    /// Closes every connection abruptly, refuses connections for `down` seconds, then serves
    /// again on the same port.
    fn restart(&self, py: Python<'_>, down: f64) -> PyResult<()> {
        let d = crate::seconds(py, down)?;
        self.with(py, |sim| sim.inject(Fault::now(FaultKind::Restart(d))))
    }

    /// Drops every open connection without a close frame.
    fn disconnect(&self, py: Python<'_>) -> PyResult<()> {
        self.with(py, |sim| sim.inject(Fault::now(FaultKind::CloseAbrupt)))
    }

    /// Injects a fault: `kind` is `"close_clean"`, `"close_abrupt"`, `"malformed_frame"`,
    /// `"garbage_json"`, `"absurd_length"`, `"stall"` or `"late_critical_error"` (about the
    /// chart session the client deleted last); `target` is `"all"` (every open
    /// connection, now) or `"next"` (the next connection accepted).
    #[pyo3(signature = (kind, target="all"))]
    fn fault(&self, py: Python<'_>, kind: &str, target: &str) -> PyResult<()> {
        let kind = match kind {
            "close_clean" => FaultKind::CloseClean,
            "close_abrupt" => FaultKind::CloseAbrupt,
            "malformed_frame" => FaultKind::MalformedFrame,
            "garbage_json" => FaultKind::GarbageJson,
            "absurd_length" => FaultKind::AbsurdLength,
            "stall" => FaultKind::Stall(None),
            "late_critical_error" => FaultKind::LateCriticalError,
            other => {
                return Err(crate::errors::native_error(
                    py,
                    "InvalidRequest",
                    &format!("unknown fault kind {other:?}"),
                ));
            }
        };
        let target = match target {
            "all" => Target::All,
            "next" => Target::Next,
            other => {
                return Err(crate::errors::native_error(
                    py,
                    "InvalidRequest",
                    &format!("unknown fault target {other:?}"),
                ));
            }
        };
        self.with(py, |sim| sim.inject(Fault::now(kind).on(target)))
    }

    /// Connections accepted so far.
    #[getter]
    fn connections(&self, py: Python<'_>) -> PyResult<u64> {
        self.with(py, |sim| sim.counters().connections)
    }

    /// `request_more_data` requests served so far: the pages of history past the first that
    /// clients asked for.
    #[getter]
    fn pages_requested(&self, py: Python<'_>) -> PyResult<u64> {
        self.with(py, |sim| sim.counters().pages_requested)
    }

    /// Stops the server (waiting at most `timeout` seconds); idempotent.
    #[pyo3(signature = (timeout=5.0))]
    fn stop(&self, py: Python<'_>, timeout: f64) -> PyResult<bool> {
        let t = crate::seconds(py, timeout)?;
        let relay = self
            .relay
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .take();
        let sim = self
            .sim
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .take();
        Ok(py.detach(move || {
            // One deadline for both: the relay first (its clients go), then the server.
            let deadline = std::time::Instant::now() + t;
            let relayed = relay.is_none_or(|r| r.stop(t));
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            let served = sim.is_none_or(|s| s.stop(left));
            relayed && served
        }))
    }

    fn __enter__(slf: PyRef<'_, Self>) -> PyRef<'_, Self> {
        slf
    }

    #[pyo3(signature = (*_args))]
    fn __exit__(&self, py: Python<'_>, _args: &Bound<'_, PyTuple>) -> PyResult<bool> {
        self.stop(py, 5.0)?;
        Ok(false)
    }

    fn __repr__(&self) -> String {
        format!("Simulator({})", self.url)
    }
}
