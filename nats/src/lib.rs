//! Closed bars from [`tvdatafeed::LiveFeed`] to NATS JetStream, and back.
//!
//! [`Publisher`] publishes every closed and revised bar of its seises to JetStream, one subject
//! per seis ([`subject`]), with a `Nats-Msg-Id` that two redundant publishers share, so the
//! stream stores each bar once ([`BarMessage::msg_id`]). [`BarStream`] reads a seis' bars back
//! on any host, from a time or from the latest.
//!
//! # Design overview
//!
//! ```text
//!  LiveFeed consumer threads ──try_send──▶ bounded intake ──▶ tv-nats runtime (1 worker)
//!   (one per seis; block when full:         (buffer)          per-subject FIFO queues
//!    the engine's own backlog takes over)                      ≤ 1 publish in flight per
//!                                                              subject, ≤ max_in_flight in
//!                                                              all; failed publishes retried
//!                                                              in order with backoff
//! ```
//!
//! Tokio stays inside this crate: its API is blocking, every call bounded by a timeout.
//!
//! # What it guarantees
//!
//! - Exactly once within the duplicate window: a close published by both publishers of a pair
//!   (or retried after a lost acknowledgement) is stored once, and acknowledged as a duplicate
//!   the second time.
//! - Order per subject: a seis' next bar is published only when the previous one is
//!   acknowledged.
//! - Not: two copies of a bar arriving further apart than the duplicate window (a publisher
//!   cut off from NATS longer than that, then flushing its buffer) are both stored.
#![allow(
    clippy::disallowed_types,
    clippy::disallowed_methods,
    reason = "the loom shim is the engine's; this crate's threads are tokio's and consumers'"
)]

mod error;
pub mod payload;
mod publisher;
mod read;
pub mod stream;
pub mod subject;

pub use error::Error;
pub use payload::{BarKind, BarMessage};
pub use publisher::{PublishReport, Publisher, PublisherConfig, PublisherStats};
pub use read::{BarStream, LinkStatus, StartAt, StatusMessage, StreamBar, read_status};
pub use stream::{NatsConfig, StreamSettings};
