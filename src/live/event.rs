//! What a consumer receives: [`LiveEvent`]s, in order, one seis per consumer.

use std::time::{Duration, Instant};

use crate::{Bar, Error};

/// One event of a seis, as a consumer receives it.
///
/// For each consumer the events of its seis arrive in order: closed bars ascending by time,
/// each exactly once (also across reconnects), a correction of a bar already delivered as an
/// explicit [`LiveEvent::Revised`], never as a second [`LiveEvent::Closed`].
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum LiveEvent {
    /// A bar closed, with the final values the server reported. `bar.time` is its open time.
    Closed(Bar),
    /// The server changed a bar this consumer already received as [`LiveEvent::Closed`]; these
    /// are its new values.
    Revised(Bar),
    /// New values of the bar still forming. Only for consumers that asked for updates
    /// ([`ConsumerOptions::updates`]).
    Update(Bar),
    /// This consumer fell behind: its ring was full, and `missed` events were dropped for it
    /// (the engine never waits for a consumer). Only updates are dropped while the consumer's
    /// backlog has room (coalesced: the newest is still delivered unless its bar closed);
    /// closed bars, revisions and connection events wait in order and are delivered late, not
    /// lost. Past the backlog's limit
    /// ([`LiveFeedBuilder::consumer_backlog`](super::LiveFeedBuilder::consumer_backlog)) the
    /// oldest waiting events are dropped too: `lost_closed` counts the closed bars among them,
    /// which this consumer will never receive (fetch them with `get_hist` from `first_time`).
    /// It comes where the drops happened, before the events that waited.
    Lagged {
        /// How many events were dropped.
        missed: u64,
        /// The open time of the first bar among them.
        first_time: Option<i64>,
        /// How many of them were closed bars (0 unless the backlog limit was passed).
        lost_closed: u64,
    },
    /// The connection to the server was lost. Closed bars keep their promise: what closes
    /// while the engine reconnects is delivered after [`LiveEvent::Reconnected`]'s gap fill.
    Disconnected {
        /// Why, in words (the [`Error`] it came from, displayed).
        cause: String,
    },
    /// The connection is back and this seis' gap was filled: `gap_bars` closed bars that
    /// closed while it was down were delivered just before this event.
    Reconnected {
        /// How long the connection was down.
        down: Duration,
        /// How many closed bars the gap fill delivered.
        gap_bars: u64,
    },
    /// The seis ended for good: the token was rejected, the server refused the symbol after a
    /// reconnect, a reconnect met an error waiting cannot mend (an untrusted certificate, a
    /// 401), the engine gave up reconnecting ([`Error::GaveUp`]), or the feed shut down. Nothing follows: a callback consumer's thread ends
    /// after it, and a [`Subscription`](super::Subscription) returns
    /// [`RecvError::Closed`](super::RecvError::Closed) from then on.
    Failed(Error),
}

impl LiveEvent {
    /// The bar this event is about, if any.
    pub fn bar(&self) -> Option<&Bar> {
        match self {
            Self::Closed(b) | Self::Revised(b) | Self::Update(b) => Some(b),
            _ => None,
        }
    }
}

/// What a consumer wants. By-value setters; every default is documented.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub struct ConsumerOptions {
    /// Also receive [`LiveEvent::Update`]s of the forming bar. Default `false`: closed bars
    /// (and revisions, lags and connection events) only.
    pub updates: bool,
    /// Run this callback consumer on a thread of its own (`tv-consumer-N`) even when the feed
    /// has dispatcher threads ([`LiveFeedBuilder::callback_threads`]): for a callback that
    /// blocks (on I/O, a lock, a sleep), which on a dispatcher thread would hold up the other
    /// consumers there. Default `false`. Without dispatcher threads every callback consumer
    /// has its own thread, and this changes nothing; a pull consumer has no thread.
    ///
    /// [`LiveFeedBuilder::callback_threads`]: super::LiveFeedBuilder::callback_threads
    pub own_thread: bool,
}

impl ConsumerOptions {
    /// Sets [`ConsumerOptions::own_thread`].
    #[must_use]
    pub fn with_own_thread(mut self, on: bool) -> Self {
        self.own_thread = on;
        self
    }

    /// Sets [`ConsumerOptions::updates`].
    #[must_use]
    pub fn with_updates(mut self, on: bool) -> Self {
        self.updates = on;
        self
    }
}

/// An event in a consumer's ring, stamped with the instant it was pushed (for the push to
/// callback latency in [`ConsumerStats`](super::ConsumerStats)).
#[derive(Debug)]
pub(crate) struct Delivery {
    pub(crate) event: LiveEvent,
    pub(crate) pushed_at: Instant,
}

/// An event in a many-seis consumer's ring: a [`Delivery`] and the tag its seis is routed to
/// this consumer under (see `fanout`'s "Many-seis consumers").
#[derive(Debug)]
pub(crate) struct Tagged {
    pub(crate) tag: u64,
    pub(crate) delivery: Delivery,
}
