//! TradingView's websocket protocol as pure code: bytes in, typed events out.
//!
//! - [`frame`]: `~m~<len>~m~<payload>` frames and `~h~<n>` heartbeats, decoded in place.
//! - [`Request`]: every client request a datafeed sends, encoded as frames.
//! - [`MessageParser`] / [`ServerMessage`]: server messages parsed with `simd-json` into borrowed
//!   views, with no allocation per live update once warm.
//! - [`Connection`]: one websocket's protocol state (framing, one parse per frame, heartbeat
//!   echo, auth and locale, hello, `protocol_error`, idle deadline), routing each message to the
//!   chart sessions it owns; driven `quinn-proto` style.
//! - [`ChartSession`]: one chart session's series, keyed by the caller (resolve, history paging,
//!   live bars, bar-close detection, typed failures, resubscription after a reconnect).
//! - [`SessionIds`]: `cs_`/`qs_` session ids.
//!
//! Nothing in this module does I/O, spawns threads, reads a clock or logs payloads; every
//! buffer it grows is bounded by a configured limit.
#![forbid(unsafe_code)]

mod connection;
pub mod frame;
mod ids;
mod json;
mod message;
mod request;
#[cfg(feature = "sim")]
pub mod server;
mod session;

#[doc(hidden)]
pub mod fuzzing;

// The public interface is:
pub use connection::{ChartId, Connection, ConnectionConfig, ConnectionError, Event};
pub use ids::SessionIds;
pub use message::{
    Hello, IndexedBar, MessageError, MessageParser, QuoteValue, SeriesData, SeriesUpdate,
    ServerMessage, SymbolInfo,
};
pub use request::{Adjustment, Request, SeriesRange, SymbolSpec, TradingSession};
pub use session::{
    ChartConfig, ChartEvent, ChartSession, SeriesEvent, SeriesFailure, SeriesKey, SeriesRequest,
    SessionError,
};

pub use crate::auth::{ANONYMOUS_TOKEN, AuthToken};
