//! # tvdatafeed
//!
//! TradingView market data for Rust trading systems: historical bars on demand and live bars
//! pushed to consumers the moment they exist, on a lock-free, low-latency engine.
//!
//! This is the Rust successor of the Python `tvdatafeed` / `TvDatafeedLive`. The crate is built
//! in layers, each usable alone:
//!
//! - [`protocol`]: a sans-I/O implementation of TradingView's websocket protocol. Bytes in,
//!   typed events out; no sockets, threads or clocks. [`protocol::frame`] splits
//!   `~m~<len>~m~<payload>` frames in place, [`protocol::Request`] builds client requests,
//!   [`protocol::MessageParser`] parses server messages with `simd-json` (reusing its buffers),
//!   and [`protocol::ChartSession`] drives symbol resolution, history paging and live bar-close
//!   detection.
//! - [`Client::get_hist`]: historical bars over `ws`/`wss`, paging past one request's limit,
//!   with one deadline per call and a typed [`Error`] for every refusal; [`http`] signs in
//!   (with the TOTP step) and searches symbols.
//! - [`sim`] (feature `sim`): a TradingView-protocol server on loopback with a deterministic
//!   market and fault injection, which every test, bench and the demo use.
//! - [`Interval`] and [`Symbol`]: every TradingView resolution and `EXCHANGE:TICKER` symbols
//!   (continuous futures included), validated.
//! - [`ring`]: a bounded single-producer single-consumer ring with a lost-wake-up-free
//!   park/unpark handshake, model-checked with loom.
//!
//! # Example: decode a live update
//!
//! ```
//! use tvdatafeed::protocol::{ChartSession, SeriesEvent, SessionEvent, SeriesRequest};
//! use tvdatafeed::{Interval, Symbol};
//!
//! let mut session = ChartSession::new("cs_kjvmuwkghjuz");
//! let symbol: Symbol = "BINANCE:BTCUSDT".parse()?;
//! let interval: Interval = "1".parse()?;
//! let series = session.add_series(0, SeriesRequest::count(symbol, interval, 300))?;
//!
//! // The bytes a server sends: one websocket text message, one frame.
//! let mut msg = br#"~m~205~m~{"m":"du","p":["cs_kjvmuwkghjuz",{"sds_1":{"s":[{"i":299,"v":[1751833020.0,108756.4,108756.41,108756.4,108756.41,0.031]}],"ns":{"d":"","indexes":"nochange"},"t":"s1","lbs":{"bar_close_time":1751833080}}}]}"#.to_vec();
//! session.handle_message(0, &mut msg)?;
//! while let Some(event) = session.poll_event() {
//!     if let SessionEvent::Series { id, event: SeriesEvent::Update(bar) } = event {
//!         assert_eq!(id, series);
//!         assert_eq!(bar.time, 1751833020);
//!         assert_eq!(bar.close, 108756.41);
//!     }
//! }
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! # Design overview
//!
//! ```text
//! user threads ──commands──▶ [bounded queue + waker] ──▶ tv-io thread (pinned if asked)
//!                                                          │ owns: poll, sockets, sessions,
//!                                                          │       timer wheel
//! socket bytes ─▶ frame decode ─▶ message parse ─▶ session ─▶ closed bar / update
//!                                                          │ registry.load() (lock-free)
//!                                                          ▼
//!                                    per consumer: SPSC ring push (never blocks)
//!                                                          ▼
//!                          tv-consumer-N thread: pop, run callback   (or a pull handle)
//! ```
//!
//! The live engine (the `tv-io` loop, consumers, reconnect with gap fill) is built on these layers
//! and arrives next; see the README for the state of each part.
//!
//! # Features
//!
//! - `cli` (default): the `tvdatafeed` binary (`hist`, `search`, `sim`, `decode`); implies `sim`.
//! - `sim` (default through `cli`): the protocol simulator, [`sim`].
#![doc(test(attr(deny(warnings))))]
#![cfg_attr(docsrs, feature(doc_cfg))]

mod auth;
mod clock;
mod error;
mod history;
pub mod http;
mod market;
pub mod protocol;
mod registry;
pub mod ring;
#[cfg(feature = "sim")]
pub mod sim;
mod sync;
mod timer;
mod transport;

#[doc(hidden)]
pub mod internal;

// The public interface is:
pub use auth::{ANONYMOUS_TOKEN, AuthToken};
pub use error::{Error, Phase, Result};
pub use history::{
    Client, ClientConfig, DEFAULT_TIMEOUT, HistOptions, History, MAX_BARS, TOKEN_ENV, URL_ENV,
};
pub use market::{Bar, Interval, IntervalError, IntervalUnit, Symbol, SymbolError};
pub use protocol::{Adjustment, SeriesFailure, SymbolInfo, TradingSession};
pub use transport::{
    Cause, Closed, Endpoint, EndpointError, IoSource, ORIGIN, TransportConfig, TransportError,
    USER_AGENT,
};
