//! `NativeFeed`: the live engine, its seises, callback consumers and pull subscriptions.
//!
//! # Deadlocks at the boundary
//!
//! A consumer thread (`tv-consumer-N`) attaches to the interpreter for each callback, and a
//! Python thread may at the same moment wait on the engine (`del_consumer` waits for a running
//! callback to return). Every such wait runs detached ([`crate::wait`], `Python::detach`), so
//! the callback can always attach, finish, and let the wait end. No lock of this module is
//! held while attaching: the subscription's mutex is taken only inside detached closures.

use std::{
    sync::{Arc, Mutex, OnceLock, PoisonError, Weak},
    time::Instant,
};

use pyo3::{
    exceptions::PyStopIteration,
    prelude::*,
    sync::PyOnceLock,
    types::{PyDict, PyList, PyModule},
};
use tvdatafeed::{ConsumerId, LiveEvent, LiveFeed, RecvError, Seis, Subscription};

use crate::{
    errors::{IntoPy, to_py},
    hist::{Token, client_config, history_to_py, options},
};

static EVENTS: PyOnceLock<Py<PyModule>> = PyOnceLock::new();

/// `event` as an instance of `tvdatafeed_rs.events`.
pub(crate) fn event_to_py(py: Python<'_>, event: &LiveEvent) -> PyResult<Py<PyAny>> {
    let m = crate::py_module(py, &EVENTS, "tvdatafeed_rs.events")?;
    let bar = |b: &tvdatafeed::Bar| -> PyResult<Bound<'_, PyAny>> {
        m.getattr("Bar")?
            .call1((b.time, b.open, b.high, b.low, b.close, b.volume))
    };
    let obj = match event {
        LiveEvent::Closed(b) => m.getattr("Closed")?.call1((bar(b)?,))?,
        LiveEvent::Revised(b) => m.getattr("Revised")?.call1((bar(b)?,))?,
        LiveEvent::Update(b) => m.getattr("Update")?.call1((bar(b)?,))?,
        LiveEvent::Lagged {
            missed,
            first_time,
            lost_closed,
        } => m
            .getattr("Lagged")?
            .call1((*missed, *first_time, *lost_closed))?,
        LiveEvent::Disconnected { cause } => m.getattr("Disconnected")?.call1((cause.as_str(),))?,
        LiveEvent::Reconnected { down, gap_bars } => m
            .getattr("Reconnected")?
            .call1((down.as_secs_f64(), *gap_bars))?,
        LiveEvent::Failed(e) => m.getattr("Failed")?.call1((to_py(py, e).into_value(py),))?,
        // A variant added to the engine later: its debug text, not a crash.
        other => m.getattr("Other")?.call1((format!("{other:?}"),))?,
    };
    Ok(obj.unbind())
}

/// A subscription to one symbol at one interval, shared by every `new_seis` of the pair.
#[pyclass(module = "tvdatafeed_rs._native", frozen)]
pub(crate) struct NativeSeis {
    pub(crate) seis: Arc<Seis>,
}

#[pymethods]
impl NativeSeis {
    /// `EXCHANGE:TICKER`.
    #[getter]
    fn symbol(&self) -> &str {
        self.seis.symbol().as_str()
    }

    /// The resolution the server is asked for (`"60"`, `"1D"`, `"1S"`).
    #[getter]
    fn interval(&self) -> String {
        self.seis.interval().to_string()
    }

    /// The engine's id of this seis (unique in its feed).
    #[getter]
    fn id(&self) -> u64 {
        self.seis.id().get()
    }

    /// `new_seis` calls not yet matched by `del_seis`.
    #[getter]
    fn holds(&self) -> usize {
        self.seis.holds()
    }

    fn __eq__(&self, other: &Bound<'_, PyAny>) -> bool {
        other
            .cast::<NativeSeis>()
            .is_ok_and(|o| Arc::ptr_eq(&o.get().seis, &self.seis))
    }

    fn __hash__(&self) -> u64 {
        self.seis.id().get()
    }

    fn __repr__(&self) -> String {
        format!(
            "NativeSeis({} {}, holds={})",
            self.seis.symbol().as_str(),
            self.seis.interval(),
            self.seis.holds()
        )
    }
}

/// The live engine: one connection for every seis, reconnects with gap fill.
#[pyclass(module = "tvdatafeed_rs._native", frozen)]
pub(crate) struct NativeFeed {
    feed: Arc<LiveFeed>,
}

#[pymethods]
impl NativeFeed {
    #[new]
    #[pyo3(signature = (url=None, token=None, command_timeout=10.0, hist_timeout=60.0, reconnect_backoff=None, consumer_backlog=None, callback_threads=None))]
    #[expect(
        clippy::too_many_arguments,
        reason = "Python's keyword arguments, one per builder option"
    )]
    fn new(
        py: Python<'_>,
        url: Option<&str>,
        token: Option<PyRef<'_, Token>>,
        command_timeout: f64,
        hist_timeout: f64,
        reconnect_backoff: Option<(f64, f64)>,
        consumer_backlog: Option<usize>,
        callback_threads: Option<usize>,
    ) -> PyResult<Self> {
        let config = client_config(url, token.as_deref(), None).py_err(py)?;
        let mut b = LiveFeed::builder()
            .transport(config.transport)
            .token(config.token)
            .command_timeout(crate::seconds(py, command_timeout)?)
            .hist_timeout(crate::seconds(py, hist_timeout)?);
        if let Some((base, cap)) = reconnect_backoff {
            b = b.reconnect_backoff(crate::seconds(py, base)?, crate::seconds(py, cap)?);
        }
        if let Some(n) = consumer_backlog {
            b = b.consumer_backlog(n);
        }
        // `None`: a thread per callback consumer, as the original has.
        if let Some(n) = callback_threads {
            b = b.callback_threads(n);
        }
        let feed = crate::wait(py, None, move || b.build(), drop)?.py_err(py)?;
        Ok(Self {
            feed: Arc::new(feed),
        })
    }

    /// Subscribes (or returns the existing subscription, taking one more hold).
    #[pyo3(signature = (symbol, interval, timeout=None))]
    fn new_seis(
        &self,
        py: Python<'_>,
        symbol: String,
        interval: String,
        timeout: Option<f64>,
    ) -> PyResult<NativeSeis> {
        let feed = Arc::clone(&self.feed);
        let abandoned = Arc::clone(&self.feed);
        let seis = crate::wait(
            py,
            crate::deadline(timeout),
            move || feed.new_seis(symbol.as_str(), interval.as_str()),
            // Interrupted: the hold this call took goes back.
            move |r| {
                if let Ok(s) = r {
                    let _ = abandoned.del_seis(&s);
                }
            },
        )?
        .py_err(py)?;
        Ok(NativeSeis { seis })
    }

    /// Releases one hold; the last one unsubscribes and ends the seis' consumers.
    #[pyo3(signature = (seis, timeout=None))]
    fn del_seis(
        &self,
        py: Python<'_>,
        seis: PyRef<'_, NativeSeis>,
        timeout: Option<f64>,
    ) -> PyResult<()> {
        let feed = Arc::clone(&self.feed);
        let s = Arc::clone(&seis.seis);
        crate::wait(
            py,
            crate::deadline(timeout),
            move || feed.del_seis(&s),
            drop,
        )?
        .py_err(py)
    }

    /// Runs `callback(event)` for every event of `seis`: on a thread of its own, or with
    /// `callback_threads`, on a dispatcher thread it shares with other consumers. The callback
    /// returning `False` ends this consumer; raising ends it too, after the exception went to
    /// `sys.unraisablehook`.
    #[pyo3(signature = (seis, callback, timeout=None))]
    fn new_consumer(
        &self,
        py: Python<'_>,
        seis: PyRef<'_, NativeSeis>,
        callback: Py<PyAny>,
        timeout: Option<f64>,
    ) -> PyResult<NativeConsumer> {
        let me: Arc<OnceLock<ConsumerId>> = Arc::new(OnceLock::new());
        let mut handler = Handler {
            callback,
            feed: Arc::downgrade(&self.feed),
            me: Arc::clone(&me),
            ended: false,
        };
        let feed = Arc::clone(&self.feed);
        let abandoned = Arc::clone(&self.feed);
        let s = Arc::clone(&seis.seis);
        let id = crate::wait(
            py,
            crate::deadline(timeout),
            move || feed.new_consumer(&s, move |ev| handler.call(&ev)),
            move |r| {
                if let Ok(id) = r {
                    let _ = abandoned.del_consumer(id);
                }
            },
        )?
        .py_err(py)?;
        let _ = me.set(id);
        Ok(NativeConsumer { id })
    }

    /// Removes a consumer: after this returns its callback does not run again (unless called
    /// from that very callback, which then returns as usual).
    #[pyo3(signature = (consumer, timeout=None))]
    fn del_consumer(
        &self,
        py: Python<'_>,
        consumer: PyRef<'_, NativeConsumer>,
        timeout: Option<f64>,
    ) -> PyResult<()> {
        let feed = Arc::clone(&self.feed);
        let id = consumer.id;
        crate::wait(
            py,
            crate::deadline(timeout),
            move || feed.del_consumer(id),
            drop,
        )?
        .py_err(py)
    }

    /// A pull consumer of `seis`.
    #[pyo3(signature = (seis, timeout=None))]
    fn subscribe(
        &self,
        py: Python<'_>,
        seis: PyRef<'_, NativeSeis>,
        timeout: Option<f64>,
    ) -> PyResult<NativeSubscription> {
        let feed = Arc::clone(&self.feed);
        let s = Arc::clone(&seis.seis);
        let sub = crate::wait(
            py,
            crate::deadline(timeout),
            move || feed.subscribe(&s),
            drop,
        )?
        .py_err(py)?;
        Ok(NativeSubscription {
            id: sub.id().get(),
            inner: Mutex::new(Some(sub)),
        })
    }

    /// History through the live connection.
    #[pyo3(signature = (symbol, interval, bars, extended_session=false, range=None, timeout=None, forming_counted=false))]
    #[allow(clippy::too_many_arguments)]
    fn get_hist<'py>(
        &self,
        py: Python<'py>,
        symbol: String,
        interval: String,
        bars: u32,
        extended_session: bool,
        range: Option<(i64, i64)>,
        timeout: Option<f64>,
        forming_counted: bool,
    ) -> PyResult<Bound<'py, PyDict>> {
        let feed = Arc::clone(&self.feed);
        let opts = options(extended_session, range, forming_counted);
        let h = crate::wait(
            py,
            crate::deadline(timeout),
            move || feed.get_hist(symbol.as_str(), interval.as_str(), bars, &opts),
            drop,
        )?
        .py_err(py)?;
        history_to_py(py, &h)
    }

    /// Counters, per seis and per consumer, as a dict.
    fn stats<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        let s = self.feed.stats();
        let d = PyDict::new(py);
        d.set_item("connected", s.connected)?;
        d.set_item("reconnects", s.reconnects)?;
        d.set_item("messages", s.messages)?;
        d.set_item("bad_messages", s.bad_messages)?;
        d.set_item("failed_attempts", s.failed_attempts)?;
        d.set_item(
            "last_failure",
            s.last_failure.as_ref().map(|f| f.error.to_string()),
        )?;
        let seises = PyList::empty(py);
        for x in &s.seises {
            let e = PyDict::new(py);
            e.set_item("symbol", x.symbol.as_str())?;
            e.set_item("interval", x.interval.to_string())?;
            e.set_item("closed", x.closed)?;
            e.set_item("revised", x.revised)?;
            e.set_item("updates", x.updates)?;
            e.set_item("holds", x.holds)?;
            seises.append(e)?;
        }
        d.set_item("seises", seises)?;
        let consumers = PyList::empty(py);
        for c in &s.consumers {
            let e = PyDict::new(py);
            e.set_item("id", c.id.get())?;
            e.set_item("symbol", c.symbol.as_str())?;
            e.set_item("interval", c.interval.to_string())?;
            e.set_item("pushed", c.pushed)?;
            e.set_item("delivered", c.delivered)?;
            e.set_item("lagged", c.lagged)?;
            e.set_item("lost_closed", c.lost_closed)?;
            e.set_item("panicked", c.panicked)?;
            e.set_item(
                "close_to_callback_p50",
                c.close_to_callback.p50.as_secs_f64(),
            )?;
            e.set_item(
                "close_to_callback_max",
                c.close_to_callback.max.as_secs_f64(),
            )?;
            e.set_item("push_to_callback_p50", c.push_to_callback.p50.as_secs_f64())?;
            consumers.append(e)?;
        }
        d.set_item("consumers", consumers)?;
        Ok(d)
    }

    /// Whether a connection is up, reconnects so far.
    fn connection(&self) -> (bool, u64, u64) {
        let c = self.feed.connection();
        (c.connected, c.reconnects, c.failed_attempts)
    }

    /// Stops everything within `timeout` seconds: `(clean, unfinished thread names, the
    /// calling consumer thread if called from a callback, seconds taken)`.
    fn shutdown(
        &self,
        py: Python<'_>,
        timeout: f64,
    ) -> PyResult<(bool, Vec<String>, Option<String>, f64)> {
        let t = crate::seconds(py, timeout)?;
        let feed = Arc::clone(&self.feed);
        let r = py.detach(move || feed.shutdown(t));
        Ok((
            r.is_clean(),
            r.unfinished.clone(),
            r.caller.clone(),
            r.elapsed.as_secs_f64(),
        ))
    }
}

/// A callback consumer, for `del_consumer`.
#[pyclass(module = "tvdatafeed_rs._native", frozen)]
pub(crate) struct NativeConsumer {
    id: ConsumerId,
}

#[pymethods]
impl NativeConsumer {
    /// The engine's id (its thread is `tv-consumer-<id>`).
    #[getter]
    fn id(&self) -> u64 {
        self.id.get()
    }

    fn __repr__(&self) -> String {
        format!("NativeConsumer(tv-consumer-{})", self.id.get())
    }
}

/// One callback consumer's Python side.
struct Handler {
    callback: Py<PyAny>,
    feed: Weak<LiveFeed>,
    me: Arc<OnceLock<ConsumerId>>,
    /// The callback asked to stop, raised, or the interpreter is gone: never call it again.
    ended: bool,
}

impl Handler {
    fn call(&mut self, event: &LiveEvent) {
        if self.ended {
            return;
        }
        // `None`: the interpreter is finalizing or gone; nothing can run any more.
        let keep = Python::try_attach(|py| {
            let cb = self.callback.bind(py);
            let result = event_to_py(py, event).and_then(|obj| cb.call1((obj,)));
            match result {
                Ok(v) => !v.is(&*pyo3::types::PyBool::new(py, false)),
                Err(e) => {
                    // sys.unraisablehook, with the callback as the object it concerns.
                    e.write_unraisable(py, Some(cb));
                    false
                }
            }
        });
        if keep != Some(true) {
            self.ended = true;
            // Ends this consumer only; from its own callback this does not wait for itself.
            if let (Some(feed), Some(id)) = (self.feed.upgrade(), self.me.get()) {
                let _ = feed.del_consumer(*id);
            }
        }
    }
}

/// A pull consumer: `recv` blocks (detached, Ctrl-C-interruptible) for the next event.
#[pyclass(module = "tvdatafeed_rs._native", frozen)]
pub(crate) struct NativeSubscription {
    id: u64,
    inner: Mutex<Option<Subscription>>,
}

#[pymethods]
impl NativeSubscription {
    /// The consumer id.
    #[getter]
    fn id(&self) -> u64 {
        self.id
    }

    /// The next event; `None` when `timeout` seconds passed without one (no timeout: wait);
    /// `StopIteration` once the subscription ended and everything delivered was returned.
    #[pyo3(signature = (timeout=None))]
    fn recv(&self, py: Python<'_>, timeout: Option<f64>) -> PyResult<Option<Py<PyAny>>> {
        let deadline = crate::deadline(timeout);
        loop {
            let slice = match deadline {
                Some(d) => d
                    .saturating_duration_since(Instant::now())
                    .min(crate::SLICE),
                None => crate::SLICE,
            };
            let got = py.detach(|| {
                let mut g = self.inner.lock().unwrap_or_else(PoisonError::into_inner);
                match g.as_mut() {
                    Some(s) => s.recv_timeout(slice),
                    None => Err(RecvError::Closed),
                }
            });
            match got {
                Ok(ev) => return event_to_py(py, &ev).map(Some),
                Err(RecvError::Closed) => return Err(PyStopIteration::new_err(())),
                Err(_) => {
                    if deadline.is_some_and(|d| Instant::now() >= d) {
                        return Ok(None);
                    }
                    py.check_signals()?;
                }
            }
        }
    }

    /// Ends this subscription (its seis stays subscribed). Idempotent.
    fn close(&self, py: Python<'_>) {
        let sub = py.detach(|| {
            self.inner
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .take()
        });
        // Dropping it removes the consumer (O(1), no wait).
        drop(sub);
    }

    fn __iter__(slf: PyRef<'_, Self>) -> PyRef<'_, Self> {
        slf
    }

    fn __next__(&self, py: Python<'_>) -> PyResult<Option<Py<PyAny>>> {
        self.recv(py, None)
    }
}
