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
//!   [`protocol::Connection`] handles one websocket (heartbeats, auth, routing) and owns
//!   [`protocol::ChartSession`]s, which drive symbol resolution, history paging and live
//!   bar-close detection.
//! - [`Client::get_hist`]: historical bars over `ws`/`wss`, paging past one request's limit,
//!   with one deadline per call and a typed [`Error`] for every refusal;
//!   [`Client::get_hist_many`]: many histories over one connection, up to
//!   [`ClientConfig::max_in_flight`] series at once, each with its own result as it completes;
//!   [`http`] signs in (with the TOTP step) and searches symbols.
//! - [`sim`] (feature `sim`): a TradingView-protocol server on loopback with a deterministic
//!   market and fault injection, which every test, bench and the demo use.
//! - [`Interval`] and [`Symbol`]: every TradingView resolution and `EXCHANGE:TICKER` symbols
//!   (continuous futures included), validated.
//! - [`ring`]: a bounded single-producer single-consumer ring with a lost-wake-up-free
//!   park/unpark handshake, model-checked with loom.
//!
//! # Example: download history from the simulator
//!
//! ```
//! use tvdatafeed::{Client, ClientConfig, HistOptions, sim::{Sim, SimConfig}};
//!
//! let sim = Sim::start(SimConfig::default())?; // a TradingView-protocol server on loopback
//! let client = Client::new(ClientConfig::default().with_endpoint(sim.url())?);
//! let h = client.get_hist("BINANCE:BTCUSDT", "1H", 300, &HistOptions::default())?;
//! assert_eq!(h.bars.len(), 300);
//! assert_eq!(h.bars[0], sim.expected_bar(&h.symbol, h.interval, h.bars[0].time));
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
//! The live engine ([`LiveFeed`]: the `tv-io` loop, consumers, reconnect with gap fill) is built
//! on these layers; the README states its contracts and the state of each part.
//!
//! # Configuration
//!
//! Two conventions, on purpose, as in the standard library: a configuration *value* that is
//! passed to a constructor and may be kept or cloned ([`ClientConfig`], [`TransportConfig`],
//! `sim::SimConfig`, [`HistOptions`]) has `with_*` setters; a *builder* whose last call starts
//! something ([`LiveFeedBuilder`], like `std::thread::Builder`) has setters named after the
//! setting. Both take and return `self` by value, and every default is documented on its
//! setter.
//!
//! # Features
//!
//! No feature is on by default: a trading system that depends on `tvdatafeed` compiles the
//! library only (no command line, no simulator, no certificate generator).
//!
//! - `sim`: the protocol simulator, [`sim`], for tests, benches and demos.
//! - `async`: [`Subscription`] implements `futures_core::Stream` (items [`LiveEvent`]), for
//!   any executor: the library depends on `futures-core` only, never on a runtime.
//!
//! The `tvdatafeed` command line (`hist`, `search`, `sim`, `decode`) is the workspace's
//! `tvdatafeed-cli` package: `cargo run -- --help` in the repository.
#![doc(test(attr(deny(warnings))))]
#![cfg_attr(docsrs, feature(doc_cfg))]

mod auth;
mod clock;
mod det;
mod error;
mod history;
pub mod http;
mod live;
mod market;
#[cfg(test)]
mod prop_seed;
pub mod protocol;
mod registry;
pub mod ring;
#[cfg(feature = "sim")]
pub mod sim;
mod sync;
mod timer;
mod transport;
mod vocab;

#[doc(hidden)]
pub mod internal;

/// The README's Rust examples, compiled and run as doctests so that they stay true.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
pub struct ReadmeDoctests;

// The public interface is:
pub use auth::{ANONYMOUS_TOKEN, AuthToken};
pub use error::{Error, HumanDuration, Phase, Result};
pub use history::{
    Client, ClientConfig, DEFAULT_MAX_IN_FLIGHT, DEFAULT_TIMEOUT, HistMany, HistOptions,
    HistRequest, History, KEEP_CONNECTION, MAX_BARS, TOKEN_ENV, URL_ENV,
};
pub use live::{
    ConnectFailure, ConnectionStatus, ConsumerOptions, ConsumerStats, IoWait, Latency, LiveEvent,
    LiveFeed, LiveFeedBuilder, ManySubscription, RecvError, Seis, SeisEvent, SeisId, SeisStats,
    ShutdownReport, Stats, Subscription,
};
pub use market::{Bar, Interval, IntervalError, IntervalUnit, Symbol, SymbolError};
pub use protocol::{Adjustment, SeriesFailure, SymbolInfo, TradingSession};
pub use registry::ConsumerId;
pub use ring::WaitStrategy;
pub use transport::{
    Cause, Closed, Endpoint, EndpointError, IoSource, ORIGIN, TransportConfig, TransportError,
    USER_AGENT,
};
