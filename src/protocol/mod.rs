//! TradingView's websocket protocol as pure code: bytes in, typed events out.
//!
//! - [`frame`]: `~m~<len>~m~<payload>` frames and `~h~<n>` heartbeats, decoded in place.
//! - [`Request`]: every client request a datafeed sends, encoded as frames.
//! - [`MessageParser`] / [`ServerMessage`]: server messages parsed with `simd-json` into borrowed
//!   views, with no allocation per live update once warm.
//! - [`ChartSession`]: the chart-session state machine (resolve, history paging, live bars,
//!   bar-close detection, heartbeat echo, typed errors), driven `quinn-proto` style.
//!
//! Nothing in this module does I/O, spawns threads, reads a clock or logs payloads; every
//! buffer it grows is bounded by a configured limit.
#![forbid(unsafe_code)]

pub mod frame;
mod json;
mod message;
mod request;
pub mod server;
mod session;

#[doc(hidden)]
pub mod fuzzing;

// The public interface is:
pub use message::{
    Hello, IndexedBar, MessageError, MessageParser, QuoteValue, SeriesData, SeriesUpdate,
    ServerMessage, SymbolInfo,
};
pub use request::{Adjustment, Request, SeriesRange, SymbolSpec, TradingSession};
pub use session::{
    ANONYMOUS_TOKEN, AuthToken, ChartSession, SeriesEvent, SeriesFailure, SeriesId, SeriesRequest,
    SessionConfig, SessionError, SessionEvent,
};
