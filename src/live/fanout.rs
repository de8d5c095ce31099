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

//!
//! # Many-seis consumers
//!
//! A consumer may take several seises into one ring ([`Fanout::add_many`]); each of its
//! seises is routed to it under a *tag* (the registry's [`ConsumerSlot::tag`]: never 0, and
//! never reused in the feed, so a route that outlives its consumer feeds nobody), and each ring item carries that tag
//! ([`Tagged`]). The policy is the same, with its state split where it is per seis:
//!
//! - per seis (per tag): the set-aside update (latest wins *within its seis*), the first
//!   closed bar offered (revisions of older bars are not its business), and the lag report
//!   (one [`LiveEvent::Lagged`] per seis that dropped something, tagged with that seis);
//! - per consumer: one backlog, so that closed bars, revisions and connection events of all
//!   its seises enter the ring in the order the engine produced them, and nothing newer of
//!   any seis overtakes what waits (while anything waits, every new event queues behind it).
//!
//! A revision is folded only into a waiting `Closed`/`Revised` of the *same seis* and bar
//! time. The flush order is: the lag reports (in the order their seises first dropped), the
//! backlog, then the set-aside updates (in the order they were first set aside).
//!
//! [`ConsumerSlot::tag`]: super::ConsumerSlot::tag

use std::{collections::VecDeque, time::Duration, time::Instant};

use super::{ConsumerCounters, Delivery, LiveEvent, Tagged};
use crate::{
    det::DetHashMap,
    ring::{Producer, PushError},
    sync::plain::Arc,
};

/// How often `tv-io` retries the backlogs while any waits (a consumer that drained its ring
/// gets them within this, even when its seis has nothing new).
pub(crate) const RETRY: Duration = Duration::from_millis(5);

/// The default [`Fanout`] backlog limit per consumer: 4,096 events, 68 hours of one-minute
/// bars or 68 minutes of one-second bars.
pub(crate) const DEFAULT_BACKLOG: usize = 4_096;

/// The policy state of one seis of a consumer.
#[derive(Debug, Default)]
struct SeisState {
    /// The newest update set aside while the ring was full.
    update: Option<Delivery>,
    /// Events of this seis dropped since its last `Lagged`, and how many were closed bars.
    dropped: u64,
    dropped_closed: u64,
    /// The bar time of the first of them, if it was about a bar.
    first_dropped: Option<i64>,
    /// The first closed bar offered to it: revisions of older bars (closed before it joined)
    /// are not its business.
    first_closed: Option<i64>,
}

/// A consumer's ring: of one seis (the items carry no tag: a single-seis consumer's cost is
/// unchanged), or of many (each item names its seis' tag).
#[derive(Debug)]
enum Ring {
    One(Producer<Delivery>),
    Many(Producer<Tagged>),
}

/// The per-seis states of a consumer: exactly one for a single-seis consumer (no lookup on
/// its path), one per tag for a many-seis consumer.
#[derive(Debug)]
enum Seises {
    One(SeisState),
    Many(DetHashMap<u64, SeisState>),
}

impl Seises {
    /// The state of seis `tag`. A single-seis consumer's seis has tag 0; many-seis tags are
    /// never 0 and unique in the feed, so a stale route can never feed another consumer.
    fn get(&mut self, tag: u64) -> Option<&mut SeisState> {
        match self {
            Self::One(s) if tag == 0 => Some(s),
            Self::One(_) => None,
            Self::Many(m) => m.get_mut(&tag),
        }
    }
}

/// One consumer's ring and what waits for room in it.
///
/// Invariants (kept by [`Slot::offer`] and [`Slot::flush`], on `tv-io` only):
/// - events enter the ring in the order the engine produced them, across all the
///   consumer's seises; only updates are coalesced (per seis);
/// - while [`Slot::is_pending`], nothing bypasses the backlog: new events of any seis queue
///   behind it;
/// - the backlog holds at most one entry per (seis, bar time) among `Closed`/`Revised` (a
///   revision of a waiting bar of the same seis is folded into it), and at most `limit`
///   entries;
/// - every event the engine offered is either in the ring, waiting here, counted in its
///   seis' `dropped` (and in the counters) at the moment it was dropped, or was of a seis the
///   consumer let go of ([`Slot::remove_seis`]: its waiting events go with it, uncounted);
/// - `lags` lists exactly the tags whose state has `dropped > 0`, and `updates` exactly the
///   tags whose state has an update set aside, each once.
#[derive(Debug)]
struct Slot {
    ring: Ring,
    updates: bool,
    /// Events waiting for room, in order (never updates), with their seis' tag.
    backlog: VecDeque<(u64, Delivery)>,
    seises: Seises,
    /// Tags with a lag report pending, in the order of their first drop.
    lags: Vec<u64>,
    /// Tags with an update set aside, in the order it was first set aside.
    waiting_updates: Vec<u64>,
    /// Whether its index is in `Fanout::pending`.
    listed: bool,
    counters: Arc<ConsumerCounters>,
}

impl Slot {
    fn new(ring: Ring, seises: Seises, updates: bool, counters: Arc<ConsumerCounters>) -> Self {
        Self {
            ring,
            updates,
            backlog: VecDeque::new(),
            seises,
            lags: Vec::new(),
            waiting_updates: Vec::new(),
            listed: false,
            counters,
        }
    }

    fn is_pending(&self) -> bool {
        !self.lags.is_empty() || !self.backlog.is_empty() || !self.waiting_updates.is_empty()
    }

    /// Takes one event of seis `tag`: into the ring if nothing waits and it has room, else
    /// aside.
    fn offer(&mut self, tag: u64, d: Delivery, limit: usize, now: Instant) {
        // A revision of a bar of this seis still waiting: fold its values in (latest wins).
        if let LiveEvent::Revised(b) = &d.event
            && let Some((_, waiting)) = self.backlog.iter_mut().rev().find(|(t, w)| {
                *t == tag
                    && matches!(&w.event, LiveEvent::Closed(x) | LiveEvent::Revised(x) if x.time == b.time)
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
            match self.push(tag, d) {
                Ok(()) => return,
                Err(d) => d,
            }
        };
        self.set_aside(tag, d, limit);
    }

    /// Puts an event that found no room aside, dropping what the policy drops.
    fn set_aside(&mut self, tag: u64, d: Delivery, limit: usize) {
        match &d.event {
            LiveEvent::Update(_) => {
                let Some(st) = self.seises.get(tag) else {
                    return;
                };
                match st.update.replace(d) {
                    Some(old) => self.drop_event(tag, &old.event),
                    None => self.waiting_updates.push(tag),
                }
            }
            event => {
                // A closed bar makes the set-aside update of it (or of an older bar) of its
                // seis stale.
                if let LiveEvent::Closed(b) = event
                    && let Some(st) = self.seises.get(tag)
                    && st
                        .update
                        .as_ref()
                        .and_then(|u| u.event.bar())
                        .is_some_and(|u| u.time <= b.time)
                    && let Some(old) = st.update.take()
                {
                    self.waiting_updates.retain(|&t| t != tag);
                    self.drop_event(tag, &old.event);
                }
                self.backlog.push_back((tag, d));
                while self.backlog.len() > limit.max(1) {
                    let Some((old_tag, old)) = self.backlog.pop_front() else {
                        break;
                    };
                    if let LiveEvent::Closed(b) = &old.event {
                        // Its revisions go with it: never a `Revised` of a bar not given.
                        let t = b.time;
                        let before = self.backlog.len();
                        self.backlog.retain(|(wt, w)| {
                            !(*wt == old_tag
                                && matches!(&w.event, LiveEvent::Revised(x) if x.time == t))
                        });
                        for _ in self.backlog.len()..before {
                            self.count_drop(old_tag);
                            self.counters.record_lagged(1);
                        }
                    }
                    self.drop_event(old_tag, &old.event);
                }
            }
        }
    }

    /// Counts one dropped event of seis `tag` for its next lag report.
    fn count_drop(&mut self, tag: u64) -> Option<&mut SeisState> {
        let st = self.seises.get(tag)?;
        if st.dropped == 0 {
            self.lags.push(tag);
        }
        st.dropped += 1;
        Some(st)
    }

    fn drop_event(&mut self, tag: u64, event: &LiveEvent) {
        self.counters.record_lagged(1);
        let closed = if let LiveEvent::Closed(b) = event {
            self.counters.record_lost_closed(1);
            Some(b.time)
        } else {
            None
        };
        let Some(st) = self.count_drop(tag) else {
            return;
        };
        if let Some(t) = closed {
            st.dropped_closed += 1;
            // A bar time older than the first recorded one may come from the backlog's front.
            st.first_dropped = Some(st.first_dropped.map_or(t, |f| f.min(t)));
        } else if st.first_dropped.is_none() {
            st.first_dropped = event.bar().map(|b| b.time);
        }
    }

    /// Moves what waits into the ring, as far as it has room: the lag reports first, then
    /// the backlog in order, then the set-aside updates.
    fn flush(&mut self, now: Instant) {
        while let Some(&tag) = self.lags.first() {
            let Some(st) = self.seises.get(tag) else {
                self.lags.remove(0);
                continue;
            };
            let (dropped, dropped_closed, first_dropped) =
                (st.dropped, st.dropped_closed, st.first_dropped);
            let lagged = Delivery {
                event: LiveEvent::Lagged {
                    missed: dropped,
                    first_time: first_dropped,
                    lost_closed: dropped_closed,
                },
                pushed_at: now,
            };
            if self.push(tag, lagged).is_err() {
                return;
            }
            // Once per lag report, not per dropped event. Dropped updates are the policy for
            // a slow reader (debug); closed bars lost for good are not (error).
            if dropped_closed > 0 {
                tracing::error!(
                    missed = dropped,
                    lost_closed = dropped_closed,
                    first_time = first_dropped,
                    "a consumer fell behind past its backlog: closed bars lost"
                );
            } else {
                tracing::debug!(
                    missed = dropped,
                    first_time = first_dropped,
                    "a consumer fell behind: updates dropped"
                );
            }
            if let Some(st) = self.seises.get(tag) {
                st.dropped = 0;
                st.dropped_closed = 0;
                st.first_dropped = None;
            }
            self.lags.remove(0);
        }
        while let Some((tag, d)) = self.backlog.pop_front() {
            if let Err(d) = self.push(tag, d) {
                self.backlog.push_front((tag, d));
                return;
            }
        }
        while let Some(&tag) = self.waiting_updates.first() {
            if let Some(u) = self.seises.get(tag).and_then(|st| st.update.take())
                && let Err(u) = self.push(tag, u)
            {
                if let Some(st) = self.seises.get(tag) {
                    st.update = Some(u);
                }
                return;
            }
            self.waiting_updates.remove(0);
        }
    }

    fn push(&mut self, tag: u64, d: Delivery) -> Result<(), Delivery> {
        let pushed = match &mut self.ring {
            Ring::One(p) => p.push(d).map_err(|PushError::Full(d)| d),
            Ring::Many(p) => p
                .push(Tagged { tag, delivery: d })
                .map_err(|PushError::Full(t)| t.delivery),
        };
        if pushed.is_ok() {
            self.counters.record_pushed();
        }
        pushed
    }

    /// A many-seis consumer takes seis `tag` (fresh state). No-op for a single-seis one.
    fn add_seis(&mut self, tag: u64) {
        if let Seises::Many(m) = &mut self.seises {
            m.insert(tag, SeisState::default());
        }
    }

    /// A many-seis consumer lets go of seis `tag`: its state and whatever of it waits are
    /// dropped (not counted as lag: the consumer asked), and nothing of it is pushed again.
    fn remove_seis(&mut self, tag: u64) {
        if let Seises::Many(m) = &mut self.seises
            && m.remove(&tag).is_some()
        {
            self.backlog.retain(|(t, _)| *t != tag);
            self.lags.retain(|&t| t != tag);
            self.waiting_updates.retain(|&t| t != tag);
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

    /// Takes a new single-seis consumer's producer; returns its slot.
    pub(crate) fn add(
        &mut self,
        producer: Producer<Delivery>,
        updates: bool,
        counters: Arc<ConsumerCounters>,
    ) -> u32 {
        self.insert(Slot::new(
            Ring::One(producer),
            Seises::One(SeisState::default()),
            updates,
            counters,
        ))
    }

    /// Takes a new many-seis consumer's producer, with no seis yet ([`Fanout::add_seis`]
    /// gives it its seises); returns its slot.
    pub(crate) fn add_many(
        &mut self,
        producer: Producer<Tagged>,
        updates: bool,
        counters: Arc<ConsumerCounters>,
    ) -> u32 {
        self.insert(Slot::new(
            Ring::Many(producer),
            Seises::Many(DetHashMap::default()),
            updates,
            counters,
        ))
    }

    fn insert(&mut self, slot: Slot) -> u32 {
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

    /// Gives the many-seis consumer in `slot` a seis under `tag` (before the registry routes
    /// the seis to it).
    pub(crate) fn add_seis(&mut self, slot: u32, tag: u64) {
        if let Some(s) = self.slots.get_mut(slot as usize).and_then(Option::as_mut) {
            s.add_seis(tag);
        }
    }

    /// Takes seis `tag` from the many-seis consumer in `slot` (after the registry stopped
    /// routing it there): nothing of it reaches the ring from now on.
    pub(crate) fn remove_seis(&mut self, slot: u32, tag: u64) {
        if let Some(s) = self.slots.get_mut(slot as usize).and_then(Option::as_mut) {
            s.remove_seis(tag);
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

    /// Offers `event` of the seis routed under `tag` to the consumer in `slot`, never
    /// blocking: it goes into the ring, or waits (see the module's policy). Updates go only
    /// to consumers that asked for them, and revisions only to consumers that were offered
    /// the bar. Returns whether the event is this consumer's (pushed or waiting); `false` for
    /// a seis a many-seis consumer does not (or no longer) take.
    pub(crate) fn push(&mut self, slot: u32, tag: u64, event: &LiveEvent, now: Instant) -> bool {
        let limit = self.limit;
        let Some(s) = self.slots.get_mut(slot as usize).and_then(Option::as_mut) else {
            return false;
        };
        if matches!(event, LiveEvent::Update(_)) && !s.updates {
            return false;
        }
        let Some(st) = s.seises.get(tag) else {
            return false;
        };
        match event {
            LiveEvent::Revised(b) if st.first_closed.is_none_or(|first| b.time < first) => {
                return false;
            }
            LiveEvent::Closed(b) => {
                st.first_closed.get_or_insert(b.time);
            }
            _ => {}
        }
        s.offer(
            tag,
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
        f.push(s, 0, &LiveEvent::Update(bar(1, 1.0)), now);
        f.push(s, 0, &LiveEvent::Update(bar(1, 2.0)), now);
        // Full from here.
        f.push(s, 0, &LiveEvent::Update(bar(1, 3.0)), now);
        f.push(s, 0, &LiveEvent::Closed(bar(1, 4.0)), now);
        f.push(s, 0, &LiveEvent::Update(bar(2, 5.0)), now);
        f.push(s, 0, &LiveEvent::Update(bar(2, 6.0)), now);
        f.push(s, 0, &LiveEvent::Closed(bar(2, 7.0)), now);
        f.push(s, 0, &LiveEvent::Update(bar(3, 8.0)), now);
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
        f.push(s, 0, &LiveEvent::Closed(bar(1, 1.0)), now);
        f.push(s, 0, &LiveEvent::Closed(bar(2, 2.0)), now);
        f.push(s, 0, &LiveEvent::Closed(bar(3, 3.0)), now); // waits
        f.push(s, 0, &LiveEvent::Revised(bar(3, 3.5)), now); // folded into the waiting close
        f.push(s, 0, &LiveEvent::Revised(bar(1, 1.5)), now); // waits: bar 1 was given
        f.push(s, 0, &LiveEvent::Revised(bar(1, 1.6)), now); // folded into the waiting revision
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
            f.push(s, 0, &LiveEvent::Closed(bar(t, t as f64)), now);
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
        f.push(s, 0, &LiveEvent::Closed(bar(1, 1.0)), now);
        f.push(s, 0, &LiveEvent::Closed(bar(2, 2.0)), now);
        f.push(s, 0, &LiveEvent::Closed(bar(3, 3.0)), now);
        // One slot frees; the next offer first moves bar 3, so bar 4 waits behind it.
        assert!(c.pop().is_ok());
        f.push(s, 0, &LiveEvent::Closed(bar(4, 4.0)), now);
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

    #[test]
    fn many_seises_keep_the_arrival_order_and_their_own_policy_state() {
        let (p, mut c) = ring::with_strategy::<Tagged>(2, ring::WaitStrategy::Spin).unwrap();
        let mut f = Fanout::new(64);
        let s = f.add_many(p, true, Arc::new(ConsumerCounters::default()));
        f.add_seis(s, 1);
        f.add_seis(s, 2);
        let now = crate::clock::monotonic();
        // Not this consumer's: tag 0 (a single-seis route) and an unknown tag.
        assert!(!f.push(s, 0, &LiveEvent::Closed(bar(1, 0.0)), now));
        assert!(!f.push(s, 3, &LiveEvent::Closed(bar(1, 0.0)), now));
        f.push(s, 1, &LiveEvent::Closed(bar(1, 1.0)), now);
        f.push(s, 2, &LiveEvent::Closed(bar(1, 2.0)), now);
        // Full from here: everything waits in one backlog, in arrival order.
        f.push(s, 2, &LiveEvent::Closed(bar(2, 2.1)), now);
        f.push(s, 1, &LiveEvent::Update(bar(2, 1.1)), now);
        f.push(s, 1, &LiveEvent::Update(bar(2, 1.2)), now); // replaces 1.1: seis 1 lagged
        f.push(s, 1, &LiveEvent::Closed(bar(2, 1.3)), now);
        f.push(s, 2, &LiveEvent::Revised(bar(2, 2.2)), now); // folded into seis 2's close
        f.push(s, 1, &LiveEvent::Revised(bar(1, 1.5)), now); // seis 1's bar 1 was given
        f.push(s, 2, &LiveEvent::Update(bar(3, 2.5)), now);
        f.push(s, 2, &LiveEvent::Closed(bar(3, 2.6)), now); // makes 2.5 stale: seis 2 lagged
        let mut got = Vec::new();
        let mut take = |c: &mut ring::Consumer<Tagged>| {
            c.pop_batch(usize::MAX, |t| got.push((t.tag, t.delivery.event)));
        };
        take(&mut c);
        while f.has_pending() {
            f.flush_pending(now);
            take(&mut c);
        }
        assert_eq!(
            got,
            vec![
                (1, LiveEvent::Closed(bar(1, 1.0))),
                (2, LiveEvent::Closed(bar(1, 2.0))),
                (
                    1,
                    LiveEvent::Lagged {
                        missed: 2,
                        first_time: Some(2),
                        lost_closed: 0
                    }
                ),
                (
                    2,
                    LiveEvent::Lagged {
                        missed: 1,
                        first_time: Some(3),
                        lost_closed: 0
                    }
                ),
                (2, LiveEvent::Closed(bar(2, 2.2))),
                (1, LiveEvent::Closed(bar(2, 1.3))),
                (1, LiveEvent::Revised(bar(1, 1.5))),
                (2, LiveEvent::Closed(bar(3, 2.6))),
            ]
        );
    }

    #[test]
    fn a_removed_seis_leaves_nothing_waiting() {
        let (p, mut c) = ring::with_strategy::<Tagged>(2, ring::WaitStrategy::Spin).unwrap();
        let mut f = Fanout::new(64);
        let s = f.add_many(p, false, Arc::new(ConsumerCounters::default()));
        f.add_seis(s, 1);
        f.add_seis(s, 2);
        let now = crate::clock::monotonic();
        for t in 1..=4 {
            f.push(s, 1, &LiveEvent::Closed(bar(t, 1.0)), now);
            f.push(s, 2, &LiveEvent::Closed(bar(t, 2.0)), now);
        }
        f.remove_seis(s, 1);
        assert!(!f.push(s, 1, &LiveEvent::Closed(bar(5, 1.0)), now));
        let mut got = Vec::new();
        let mut take = |c: &mut ring::Consumer<Tagged>| {
            c.pop_batch(usize::MAX, |t| {
                got.push((t.tag, t.delivery.event.bar().map(|b| b.time)))
            });
        };
        take(&mut c);
        while f.has_pending() {
            f.flush_pending(now);
            take(&mut c);
        }
        // The two that were in the ring before the removal, then seis 2 only.
        assert_eq!(
            got,
            vec![
                (1, Some(1)),
                (2, Some(1)),
                (2, Some(2)),
                (2, Some(3)),
                (2, Some(4))
            ]
        );
    }
}
