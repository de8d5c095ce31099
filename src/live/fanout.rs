//! `tv-io`'s side of the consumers: the producer half of every consumer's ring, and the push
//! that never blocks and never loses a closed bar to a slow consumer.
//!
//! # The slow-consumer policy
//!
//! The engine never waits for a consumer. When a consumer's ring is full:
//!
//! - **Updates** (the forming bar) are coalesced, latest wins: the newest one is set aside and
//!   delivered when room frees, unless its bar closed meanwhile. Each update replaced or made
//!   stale this way is dropped and counted.
//! - **Closed bars, revisions and connection events** wait in the consumer's *backlog*, in
//!   order, and reach its ring, oldest first, as soon as it has room: at its next event, or at
//!   `tv-io`'s next retry ([`Fanout::flush_pending`], every [`RETRY`] while any backlog waits).
//!   A revision of a bar still waiting as `Closed` is folded into it: the consumer gets one
//!   `Closed` with the final values, never a `Revised` of a bar it was not given.
//! - Nothing newer overtakes what waits: while a backlog, a set-aside update or a lag report is
//!   pending, new events queue behind them.
//! - The backlog holds at most `limit` events
//!   ([`LiveFeedBuilder::consumer_backlog`](super::LiveFeedBuilder::consumer_backlog)). Only
//!   past it is the oldest waiting event dropped; if that is a closed bar it is lost for this
//!   consumer, with its revisions, and counted in [`LiveEvent::Lagged`]'s `lost_closed`.
//! - Whatever was dropped is reported by one [`LiveEvent::Lagged`], placed where the drops
//!   happened (before the backlog that follows them), and counted in the consumer's stats the
//!   moment it is dropped.

use std::{collections::VecDeque, time::Duration, time::Instant};

use super::{ConsumerCounters, Delivery, LiveEvent};
use crate::{
    ring::{Producer, PushError},
    sync::plain::Arc,
};

/// How often `tv-io` retries the backlogs while any waits (a consumer that drained its ring
/// gets them within this, even when its seis has nothing new).
pub(crate) const RETRY: Duration = Duration::from_millis(5);

/// The default [`Fanout`] backlog limit per consumer: 4,096 events, 68 hours of one-minute
/// bars or 68 minutes of one-second bars.
pub(crate) const DEFAULT_BACKLOG: usize = 4_096;

/// One consumer's ring and what waits for room in it.
///
/// Invariants (kept by [`Slot::offer`] and [`Slot::flush`], on `tv-io` only):
/// - events enter the ring in the order the engine produced them; only updates are coalesced;
/// - while [`Slot::is_pending`], nothing bypasses the backlog: new events queue behind it;
/// - the backlog holds at most one entry per bar time among `Closed`/`Revised` (a revision
///   of a waiting bar is folded into it), and at most `limit` entries;
/// - every event the engine offered is either in the ring, waiting here, or counted in
///   `dropped` (and in the counters) at the moment it was dropped.
#[derive(Debug)]
struct Slot {
    producer: Producer<Delivery>,
    updates: bool,
    /// Events waiting for room, in order (never updates).
    backlog: VecDeque<Delivery>,
    /// The newest update set aside while the ring was full.
    update: Option<Delivery>,
    /// Events dropped since the last `Lagged`, and how many of them were closed bars.
    dropped: u64,
    dropped_closed: u64,
    /// The bar time of the first of them, if it was about a bar.
    first_dropped: Option<i64>,
    /// The first closed bar offered to it: revisions of older bars (closed before it joined)
    /// are not its business.
    first_closed: Option<i64>,
    /// The newest closed bar offered to it: an update of this bar or an older one is stale.
    last_closed: Option<i64>,
    /// Whether its index is in `Fanout::pending`.
    listed: bool,
    counters: Arc<ConsumerCounters>,
}

impl Slot {
    fn is_pending(&self) -> bool {
        self.dropped > 0 || !self.backlog.is_empty() || self.update.is_some()
    }

    /// Takes one event: into the ring if nothing waits and it has room, else aside.
    fn offer(&mut self, d: Delivery, limit: usize, now: Instant) {
        if let LiveEvent::Closed(b) = &d.event {
            self.first_closed.get_or_insert(b.time);
            self.last_closed = Some(self.last_closed.map_or(b.time, |l| l.max(b.time)));
        }
        // A revision of a bar still waiting: fold its values in (latest wins).
        if let LiveEvent::Revised(b) = &d.event
            && let Some(waiting) = self.backlog.iter_mut().rev().find(|w| {
                matches!(&w.event, LiveEvent::Closed(x) | LiveEvent::Revised(x) if x.time == b.time)
            })
        {
            waiting.event = match waiting.event {
                LiveEvent::Closed(_) => LiveEvent::Closed(*b),
                _ => LiveEvent::Revised(*b),
            };
            return;
        }
        self.flush(now);
        let d = if self.is_pending() {
            d
        } else {
            match self.push(d) {
                Ok(()) => return,
                Err(d) => d,
            }
        };
        self.set_aside(d, limit);
    }

    /// Puts an event that found no room aside, dropping what the policy drops.
    fn set_aside(&mut self, d: Delivery, limit: usize) {
        match &d.event {
            LiveEvent::Update(_) => {
                if let Some(old) = self.update.replace(d) {
                    self.drop_event(&old.event);
                }
            }
            event => {
                // A closed bar makes the set-aside update of it (or of an older bar) stale.
                if let LiveEvent::Closed(b) = event
                    && self
                        .update
                        .as_ref()
                        .and_then(|u| u.event.bar())
                        .is_some_and(|u| u.time <= b.time)
                    && let Some(old) = self.update.take()
                {
                    self.drop_event(&old.event);
                }
                self.backlog.push_back(d);
                while self.backlog.len() > limit.max(1) {
                    let Some(old) = self.backlog.pop_front() else {
                        break;
                    };
                    if let LiveEvent::Closed(b) = &old.event {
                        // Its revisions go with it: never a `Revised` of a bar not given.
                        let t = b.time;
                        let before = self.backlog.len();
                        self.backlog
                            .retain(|w| !matches!(&w.event, LiveEvent::Revised(x) if x.time == t));
                        for _ in self.backlog.len()..before {
                            self.dropped += 1;
                            self.counters.record_lagged(1);
                        }
                    }
                    self.drop_event(&old.event);
                }
            }
        }
    }

    fn drop_event(&mut self, event: &LiveEvent) {
        self.dropped += 1;
        if let LiveEvent::Closed(b) = event {
            self.dropped_closed += 1;
            self.counters.record_lost_closed(1);
            // A bar time older than the first recorded one may come from the backlog's front.
            self.first_dropped = Some(self.first_dropped.map_or(b.time, |f| f.min(b.time)));
        } else if self.first_dropped.is_none() {
            self.first_dropped = event.bar().map(|b| b.time);
        }
        self.counters.record_lagged(1);
    }

    /// Moves what waits into the ring, as far as it has room: the lag report first, then the
    /// backlog in order, then the set-aside update.
    fn flush(&mut self, now: Instant) {
        if self.dropped > 0 {
            let lagged = Delivery {
                event: LiveEvent::Lagged {
                    missed: self.dropped,
                    first_time: self.first_dropped,
                    lost_closed: self.dropped_closed,
                },
                pushed_at: now,
            };
            if self.push(lagged).is_err() {
                return;
            }
            // Once per lag report, not per dropped event. Dropped updates are the policy for
            // a slow reader (debug); closed bars lost for good are not (error).
            if self.dropped_closed > 0 {
                tracing::error!(
                    missed = self.dropped,
                    lost_closed = self.dropped_closed,
                    first_time = self.first_dropped,
                    "a consumer fell behind past its backlog: closed bars lost"
                );
            } else {
                tracing::debug!(
                    missed = self.dropped,
                    first_time = self.first_dropped,
                    "a consumer fell behind: updates dropped"
                );
            }
            self.dropped = 0;
            self.dropped_closed = 0;
            self.first_dropped = None;
        }
        while let Some(d) = self.backlog.pop_front() {
            if let Err(d) = self.push(d) {
                self.backlog.push_front(d);
                return;
            }
        }
        if let Some(u) = self.update.take()
            && let Err(u) = self.push(u)
        {
            self.update = Some(u);
        }
    }

    fn push(&mut self, d: Delivery) -> Result<(), Delivery> {
        match self.producer.push(d) {
            Ok(()) => {
                self.counters.record_pushed();
                Ok(())
            }
            Err(PushError::Full(d)) => Err(d),
        }
    }
}

/// The producers, by slot (a consumer's slot is its index here, given when it is added), and
/// the slots whose backlog waits for room.
#[derive(Debug)]
pub(crate) struct Fanout {
    slots: Vec<Option<Slot>>,
    free: Vec<u32>,
    /// Slots with something pending (each listed once: `Slot::listed`).
    pending: Vec<u32>,
    /// Most events one consumer's backlog holds.
    limit: usize,
}

impl Default for Fanout {
    fn default() -> Self {
        Self::new(DEFAULT_BACKLOG)
    }
}

impl Fanout {
    /// A fanout whose consumers' backlogs hold at most `limit` events each (at least 1).
    pub(crate) fn new(limit: usize) -> Self {
        Self {
            slots: Vec::new(),
            free: Vec::new(),
            pending: Vec::new(),
            limit: limit.max(1),
        }
    }

    /// Takes a new consumer's producer; returns its slot.
    pub(crate) fn add(
        &mut self,
        producer: Producer<Delivery>,
        updates: bool,
        counters: Arc<ConsumerCounters>,
    ) -> u32 {
        let slot = Slot {
            producer,
            updates,
            backlog: VecDeque::new(),
            update: None,
            dropped: 0,
            dropped_closed: 0,
            first_dropped: None,
            first_closed: None,
            last_closed: None,
            listed: false,
            counters,
        };
        match self.free.pop() {
            Some(i) => {
                self.slots[i as usize] = Some(slot);
                i
            }
            None => {
                self.slots.push(Some(slot));
                u32::try_from(self.slots.len() - 1).unwrap_or(u32::MAX)
            }
        }
    }

    /// Drops a consumer's producer (its ring reads as abandoned once drained) and whatever
    /// waited for it.
    pub(crate) fn remove(&mut self, slot: u32) {
        if let Some(s) = self.slots.get_mut(slot as usize)
            && s.take().is_some()
        {
            self.pending.retain(|&p| p != slot);
            self.free.push(slot);
        }
    }

    /// Offers `event` to the consumer in `slot`, never blocking: it goes into the ring, or
    /// waits (see the module's policy). Updates go only to consumers that asked for them, and
    /// revisions only to consumers that were offered the bar. Returns whether the event is
    /// this consumer's (pushed or waiting).
    pub(crate) fn push(&mut self, slot: u32, event: &LiveEvent, now: Instant) -> bool {
        let limit = self.limit;
        let Some(s) = self.slots.get_mut(slot as usize).and_then(Option::as_mut) else {
            return false;
        };
        match event {
            LiveEvent::Update(_) if !s.updates => return false,
            LiveEvent::Revised(b) if s.first_closed.is_none_or(|first| b.time < first) => {
                return false;
            }
            _ => {}
        }
        s.offer(
            Delivery {
                event: event.clone(),
                pushed_at: now,
            },
            limit,
            now,
        );
        if s.is_pending() && !s.listed {
            s.listed = true;
            self.pending.push(slot);
        }
        true
    }

    /// Whether some consumer's backlog waits for room (`tv-io` then comes back within
    /// [`RETRY`]).
    pub(crate) fn has_pending(&self) -> bool {
        !self.pending.is_empty()
    }

    /// Moves waiting events into the rings that have room again.
    pub(crate) fn flush_pending(&mut self, now: Instant) {
        let slots = &mut self.slots;
        self.pending.retain(|&i| {
            let Some(s) = slots.get_mut(i as usize).and_then(Option::as_mut) else {
                return false;
            };
            s.flush(now);
            s.listed = s.is_pending();
            s.listed
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Bar, ring};

    fn bar(time: i64, close: f64) -> Bar {
        Bar {
            time,
            open: 1.0,
            high: 2.0,
            low: 0.5,
            close,
            volume: Some(1.0),
        }
    }

    fn fanout(limit: usize, cap: usize) -> (Fanout, u32, ring::Consumer<Delivery>) {
        let (p, c) = ring::with_strategy(cap, ring::WaitStrategy::Spin).unwrap();
        let mut f = Fanout::new(limit);
        let slot = f.add(p, true, Arc::new(ConsumerCounters::default()));
        (f, slot, c)
    }

    fn drain(c: &mut ring::Consumer<Delivery>) -> Vec<LiveEvent> {
        let mut v = Vec::new();
        c.pop_batch(usize::MAX, |d| v.push(d.event));
        v
    }

    #[test]
    fn a_full_ring_keeps_every_closed_bar_and_the_latest_update() {
        let (mut f, s, mut c) = fanout(64, 2);
        let now = crate::clock::monotonic();
        f.push(s, &LiveEvent::Update(bar(1, 1.0)), now);
        f.push(s, &LiveEvent::Update(bar(1, 2.0)), now);
        // Full from here.
        f.push(s, &LiveEvent::Update(bar(1, 3.0)), now);
        f.push(s, &LiveEvent::Closed(bar(1, 4.0)), now);
        f.push(s, &LiveEvent::Update(bar(2, 5.0)), now);
        f.push(s, &LiveEvent::Update(bar(2, 6.0)), now);
        f.push(s, &LiveEvent::Closed(bar(2, 7.0)), now);
        f.push(s, &LiveEvent::Update(bar(3, 8.0)), now);
        assert!(f.has_pending());
        let mut got = drain(&mut c);
        while f.has_pending() {
            f.flush_pending(now);
            got.extend(drain(&mut c));
        }
        assert_eq!(
            got,
            vec![
                LiveEvent::Update(bar(1, 1.0)),
                LiveEvent::Update(bar(1, 2.0)),
                // Update(1, 3.0) went stale at Closed(1); Update(2, 5.0) was replaced by 6.0,
                // which went stale at Closed(2).
                LiveEvent::Lagged {
                    missed: 3,
                    first_time: Some(1),
                    lost_closed: 0
                },
                LiveEvent::Closed(bar(1, 4.0)),
                LiveEvent::Closed(bar(2, 7.0)),
                LiveEvent::Update(bar(3, 8.0)),
            ]
        );
    }

    #[test]
    fn a_revision_of_a_waiting_close_is_folded_into_it() {
        let (mut f, s, mut c) = fanout(64, 2);
        let now = crate::clock::monotonic();
        f.push(s, &LiveEvent::Closed(bar(1, 1.0)), now);
        f.push(s, &LiveEvent::Closed(bar(2, 2.0)), now);
        f.push(s, &LiveEvent::Closed(bar(3, 3.0)), now); // waits
        f.push(s, &LiveEvent::Revised(bar(3, 3.5)), now); // folded into the waiting close
        f.push(s, &LiveEvent::Revised(bar(1, 1.5)), now); // waits: bar 1 was given
        f.push(s, &LiveEvent::Revised(bar(1, 1.6)), now); // folded into the waiting revision
        let mut got = drain(&mut c);
        f.flush_pending(now);
        got.extend(drain(&mut c));
        f.flush_pending(now);
        assert!(!f.has_pending());
        assert_eq!(
            got,
            vec![
                LiveEvent::Closed(bar(1, 1.0)),
                LiveEvent::Closed(bar(2, 2.0)),
                LiveEvent::Closed(bar(3, 3.5)),
                LiveEvent::Revised(bar(1, 1.6)),
            ]
        );
    }

    #[test]
    fn past_the_limit_the_oldest_close_is_lost_and_said() {
        let (mut f, s, mut c) = fanout(2, 2);
        let now = crate::clock::monotonic();
        for t in 1..=6 {
            f.push(s, &LiveEvent::Closed(bar(t, t as f64)), now);
        }
        // Ring: 1, 2. Backlog (limit 2): 5, 6; 3 and 4 lost.
        let mut got = drain(&mut c);
        while f.has_pending() {
            f.flush_pending(now);
            got.extend(drain(&mut c));
        }
        assert_eq!(
            got,
            vec![
                LiveEvent::Closed(bar(1, 1.0)),
                LiveEvent::Closed(bar(2, 2.0)),
                LiveEvent::Lagged {
                    missed: 2,
                    first_time: Some(3),
                    lost_closed: 2
                },
                LiveEvent::Closed(bar(5, 5.0)),
                LiveEvent::Closed(bar(6, 6.0)),
            ]
        );
    }

    #[test]
    fn nothing_overtakes_what_waits() {
        let (mut f, s, mut c) = fanout(64, 2);
        let now = crate::clock::monotonic();
        f.push(s, &LiveEvent::Closed(bar(1, 1.0)), now);
        f.push(s, &LiveEvent::Closed(bar(2, 2.0)), now);
        f.push(s, &LiveEvent::Closed(bar(3, 3.0)), now);
        // One slot frees; the next offer first moves bar 3, so bar 4 waits behind it.
        assert!(c.pop().is_ok());
        f.push(s, &LiveEvent::Closed(bar(4, 4.0)), now);
        let mut got = drain(&mut c);
        f.flush_pending(now);
        got.extend(drain(&mut c));
        assert_eq!(
            got,
            vec![
                LiveEvent::Closed(bar(2, 2.0)),
                LiveEvent::Closed(bar(3, 3.0)),
                LiveEvent::Closed(bar(4, 4.0)),
            ]
        );
        assert!(!f.has_pending());
    }
}
