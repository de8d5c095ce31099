//! `tvdatafeed::Error` as the typed exceptions of `tvdatafeed_rs.errors`.
//!
//! The exception classes are defined in Python (`py_src/tvdatafeed_rs/errors.py`) so that they
//! can inherit from both our base and a builtin (`Timeout` is a `TimeoutError`, `InvalidRequest`
//! a `ValueError`); this module only picks the class and fills its attributes.

use pyo3::{prelude::*, sync::PyOnceLock, types::PyModule};
use tvdatafeed::{Error, SeriesFailure};

static ERRORS: PyOnceLock<Py<PyModule>> = PyOnceLock::new();

/// An instance of `tvdatafeed_rs.errors.<class>(message)`, with `attrs` set on it.
fn build(py: Python<'_>, class: &str, message: &str, attrs: &[(&str, Py<PyAny>)]) -> PyErr {
    let made = (|| -> PyResult<PyErr> {
        let module = crate::py_module(py, &ERRORS, "tvdatafeed_rs.errors")?;
        let exc = module.getattr(class)?.call1((message,))?;
        for (k, v) in attrs {
            exc.setattr(*k, v)?;
        }
        Ok(PyErr::from_value(exc))
    })();
    made.unwrap_or_else(|e| e)
}

/// `tvdatafeed_rs.errors.<class>(message)` with no attributes.
pub(crate) fn native_error(py: Python<'_>, class: &str, message: &str) -> PyErr {
    build(py, class, message, &[])
}

/// The exception class for `e`.
fn class_of(e: &Error) -> &'static str {
    match e {
        Error::Series { failure, .. } => match failure {
            SeriesFailure::UnknownSymbol { .. } => "SymbolError",
            SeriesFailure::PermissionDenied { .. } => "PermissionDenied",
            SeriesFailure::IntervalNotEntitled { .. } => "EntitlementError",
            SeriesFailure::LoadTimeout { .. } => "Timeout",
            _ => "SeriesError",
        },
        Error::Timeout { .. } => "Timeout",
        Error::Transport(_)
        | Error::Io { .. }
        | Error::HttpStatus { .. }
        | Error::GaveUp { .. } => "TransportError",
        Error::RateLimited { .. } => "RateLimited",
        Error::Protocol(_) | Error::Http(_) => "ProtocolError",
        Error::AuthRejected
        | Error::WrongCredentials
        | Error::TwoFactorRequired
        | Error::CaptchaRequired => "AuthError",
        Error::InvalidRequest(_) | Error::InvalidParameters { .. } => "InvalidRequest",
        Error::Shutdown => "ShutdownError",
        Error::NotSubscribed { .. } => "NotSubscribed",
        _ => "TvDatafeedError",
    }
}

/// `e` as a Python exception: its class, its message (the crate's `Display`, which never
/// holds a credential), `retryable`, and for a series refusal `symbol` and `interval`.
pub(crate) fn to_py(py: Python<'_>, e: &Error) -> PyErr {
    let mut attrs: Vec<(&str, Py<PyAny>)> = vec![(
        "retryable",
        e.is_retryable()
            .into_pyobject(py)
            .map(|b| b.to_owned().into_any().unbind())
            .unwrap_or_else(|_| py.None()),
    )];
    let str_obj = |s: &str| -> Py<PyAny> {
        s.into_pyobject(py)
            .map(|s| s.into_any().unbind())
            .unwrap_or_else(|_| py.None())
    };
    if let Error::Series {
        symbol, interval, ..
    } = e
    {
        attrs.push(("symbol", str_obj(symbol.as_str())));
        attrs.push(("interval", str_obj(&interval.to_string())));
    }
    build(py, class_of(e), &e.to_string(), &attrs)
}

/// `Result<T, Error>` into `PyResult<T>`.
pub(crate) trait IntoPy<T> {
    /// Raises the typed exception for an error.
    fn py_err(self, py: Python<'_>) -> PyResult<T>;
}

impl<T> IntoPy<T> for Result<T, Error> {
    fn py_err(self, py: Python<'_>) -> PyResult<T> {
        self.map_err(|e| to_py(py, &e))
    }
}
