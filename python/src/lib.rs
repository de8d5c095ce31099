//! `tvdatafeed_rs._native`: the PyO3 binding of the `tvdatafeed` engine.
//!
//! The Python package (`py_src/tvdatafeed_rs`) builds its public classes on these: the
//! drop-in `TvDatafeed`/`TvDatafeedLive` and the Pythonic `Client`/`LiveFeed`. This layer only
//! crosses the boundary; every rule about that crossing lives here:
//!
//! - Every wait on the engine runs with the interpreter detached (`Python::detach`), so a
//!   consumer thread that needs the interpreter for a callback is never stuck behind a
//!   Python thread waiting on the engine.
//! - Waits are cut into short slices with `Python::check_signals` between them, so Ctrl-C
//!   interrupts them (`wait`).
//! - Callbacks run through `Python::try_attach`: after the interpreter finalized they are
//!   skipped, not a panic. A callback's exception goes to `sys.unraisablehook` and ends its
//!   own consumer only.
//! - Every `#[pyclass]` is `frozen` and `Sync` (its mutable state behind a `Mutex`), as a
//!   free-threaded build requires.
//! - No token or password reaches a `repr`, a log line or an exception message.

#![allow(
    clippy::disallowed_types,
    clippy::disallowed_methods,
    reason = "a binding outside the engine: the loom shim and the one clock are the library's; \
              here waits are bounded by the caller's own timeout"
)]

mod errors;
mod hist;
mod live;
mod sim;

/// The extension's Rust allocations go to mimalloc; Python's own stay with Python's allocator.
/// With glibc's, each `get_hist` of 5,000 bars gave its megabytes of buffers back to the system
/// on return and faulted them in again on the next call (a quarter of the call's time, by
/// `perf`); mimalloc keeps freed pages for reuse.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

use std::{
    sync::mpsc,
    time::{Duration, Instant},
};

use pyo3::{prelude::*, sync::PyOnceLock, types::PyModule};

/// How long one detached wait lasts before signals are checked again.
const SLICE: Duration = Duration::from_millis(50);

/// `tvdatafeed_rs.<name>` (a pure-Python module of the package), imported once.
fn py_module<'py>(
    py: Python<'py>,
    cell: &'static PyOnceLock<Py<PyModule>>,
    name: &str,
) -> PyResult<Bound<'py, PyModule>> {
    cell.get_or_try_init(py, || PyModule::import(py, name).map(Bound::unbind))
        .map(|m| m.bind(py).clone())
}

/// Runs `f` on a helper thread and waits for it with the interpreter detached, checking for
/// signals every [`SLICE`]: a Ctrl-C during a blocking engine call raises `KeyboardInterrupt`
/// at once, and past `deadline` (the caller's own timeout) it raises `Timeout`. The engine call
/// itself goes on to its own deadline; its result is then handed to `abandon` (a `new_seis`
/// releases its hold there), so nothing leaks.
fn wait<T, F, A>(py: Python<'_>, deadline: Option<Instant>, f: F, abandon: A) -> PyResult<T>
where
    T: Send + 'static,
    F: FnOnce() -> T + Send + 'static,
    A: FnOnce(T) + Send + 'static,
{
    let (tx, rx) = mpsc::sync_channel(1);
    std::thread::Builder::new()
        .name("tv-py-call".into())
        .spawn(move || {
            let out = f();
            if let Err(mpsc::SendError(out)) = tx.send(out) {
                abandon(out);
            }
        })
        .map_err(|e| {
            errors::native_error(
                py,
                "TvDatafeedError",
                &format!("cannot start a thread: {e}"),
            )
        })?;
    // In a mutex only so that a reference to it may cross `detach` (a receiver is not `Sync`).
    let rx = std::sync::Mutex::new(rx);
    loop {
        let got = py.detach(|| {
            rx.lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .recv_timeout(SLICE)
        });
        match got {
            Ok(out) => return Ok(out),
            Err(mpsc::RecvTimeoutError::Timeout) => {
                py.check_signals()?;
                if deadline.is_some_and(|d| Instant::now() >= d) {
                    return Err(errors::native_error(
                        py,
                        "Timeout",
                        "the call did not finish within its timeout",
                    ));
                }
            }
            Err(mpsc::RecvTimeoutError::Disconnected) => {
                return Err(errors::native_error(
                    py,
                    "TvDatafeedError",
                    "the engine call ended without an answer (it panicked)",
                ));
            }
        }
    }
}

/// A `timeout` argument in seconds: `None` or negative means no limit.
fn deadline(timeout: Option<f64>) -> Option<Instant> {
    timeout
        .filter(|t| *t >= 0.0 && t.is_finite())
        .and_then(|t| Instant::now().checked_add(Duration::from_secs_f64(t)))
}

/// A duration argument in seconds (finite, not negative).
fn seconds(py: Python<'_>, s: f64) -> PyResult<Duration> {
    Duration::try_from_secs_f64(s).map_err(|_| {
        errors::native_error(
            py,
            "InvalidRequest",
            &format!("a duration in seconds, finite and not negative, not {s}"),
        )
    })
}

#[pymodule]
fn _native(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add("__version__", env!("CARGO_PKG_VERSION"))?;
    m.add_class::<hist::NativeClient>()?;
    m.add_class::<live::NativeFeed>()?;
    m.add_class::<live::NativeSeis>()?;
    m.add_class::<live::NativeConsumer>()?;
    m.add_class::<hist::Token>()?;
    m.add_function(wrap_pyfunction!(hist::sign_in, m)?)?;
    m.add_function(wrap_pyfunction!(hist::search, m)?)?;
    m.add_function(wrap_pyfunction!(hist::canonical, m)?)?;
    m.add_class::<live::NativeSubscription>()?;
    m.add_class::<sim::Simulator>()?;
    Ok(())
}
