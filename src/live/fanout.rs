//! `tv-io`'s side of the consumers: the producer half of every consumer's ring, and the push
//! that never blocks.
//!
//! A full ring never stalls the engine: the event is dropped for that consumer and counted, and
//! the consumer's next event is [`LiveEvent::Lagged`] with the count and the first bar time it
//! missed, so nothing is dropped silently.

use std::time::Instant;

use super::{ConsumerCounters, Delivery, LiveEvent};
use crate::{ring::Producer, sync::plain::Arc};

/// One consumer's ring and what it missed.
#[derive(Debug)]
struct Slot {
    producer: Producer<Delivery>,
    updates: bool,
    /// Events dropped since the last successful push.
    missed: u64,
    /// The bar time of the first of them, if it was about a bar.
    first_missed: Option<i64>,
    /// The first closed bar pushed to it: revisions of older bars (closed before it joined)
    /// are not its business.
    first_closed: Option<i64>,
    counters: Arc<ConsumerCounters>,
}

/// The producers, by slot (a consumer's slot is its index here, given when it is added).
#[derive(Debug, Default)]
pub(crate) struct Fanout {
    slots: Vec<Option<Slot>>,
    free: Vec<u32>,
}

impl Fanout {
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
            missed: 0,
            first_missed: None,
            first_closed: None,
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

    /// Drops a consumer's producer (its ring reads as abandoned once drained).
    pub(crate) fn remove(&mut self, slot: u32) {
        if let Some(s) = self.slots.get_mut(slot as usize)
            && s.take().is_some()
        {
            self.free.push(slot);
        }
    }

    /// Pushes `event` to the consumer in `slot`, never blocking. Updates go only to consumers
    /// that asked for them. Returns whether the event was accepted.
    pub(crate) fn push(&mut self, slot: u32, event: &LiveEvent, now: Instant) -> bool {
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
        if s.missed > 0 {
            let lagged = Delivery {
                event: LiveEvent::Lagged {
                    missed: s.missed,
                    first_time: s.first_missed,
                },
                pushed_at: now,
            };
            // Counted before the push, so that a consumer that reads the event and then the
            // stats sees the count (undone if the push fails).
            s.counters.record_lagged(s.missed);
            if s.producer.push(lagged).is_ok() {
                s.missed = 0;
                s.first_missed = None;
            } else {
                s.counters.unrecord_lagged(s.missed);
            }
        }
        if s.missed == 0 {
            let d = Delivery {
                event: event.clone(),
                pushed_at: now,
            };
            s.counters.record_pushed();
            if s.producer.push(d).is_ok() {
                if let LiveEvent::Closed(b) = event {
                    s.first_closed.get_or_insert(b.time);
                }
                return true;
            }
            s.counters.unrecord_pushed();
        }
        if s.missed == 0 {
            s.first_missed = event.bar().map(|b| b.time);
        }
        if let LiveEvent::Closed(b) = event {
            // It missed this close: revisions of it are still its business.
            s.first_closed.get_or_insert(b.time);
        }
        s.missed += 1;
        false
    }
}
