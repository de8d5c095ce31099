//! A hierarchical timer wheel: O(1) insert and cancel, deadlines from 1 ms to years.
//!
//! The I/O thread keeps every deadline here (bar-interval boundaries, heartbeat and read
//! timeouts, reconnect backoff, command timeouts) and polls with [`TimerWheel::next_deadline`]
//! as its timeout. The design is tokio's (`tokio/src/runtime/time/wheel`): six levels of 64
//! slots, one tick per slot at level 0 and 64× more per level up, an occupancy bitmap per level
//! so finding the next busy slot is a rotate and a `trailing_zeros`, and entries cascading down
//! a level when their slot comes due. Entries live in a slab and slots hold doubly linked lists
//! of slab indices, so the module is `forbid(unsafe_code)` and has no intrusive pointer.
//!
//! Time is a parameter, in ticks (the engine uses milliseconds): the wheel never reads a clock.
//!
//! What this module may not do: read a clock, allocate per tick, opt out of
//! `forbid(unsafe_code)`, or fire a timer before its deadline or out of deadline order.
//!
//! # Layout
//!
//! | level | slot width | level span |
//! | ----- | ---------- | ---------- |
//! | 0     | 1 tick     | 64 ticks (64 ms) |
//! | 1     | 64         | 4 096 (~4 s) |
//! | 2     | 4 096      | 262 144 (~4.4 min) |
//! | 3     | 2^18       | 2^24 (~4.7 h) |
//! | 4     | 2^24       | 2^30 (~12.4 days) |
//! | 5     | 2^30       | 2^36 (~2.2 years) |
//!
//! An entry sits at the level of the highest 6-bit digit in which its deadline differs from
//! the wheel's current time. Deadlines 2^36 ticks or more ahead wait in an overflow list and
//! move into the wheel once they come within range, so any `u64` deadline fires correctly.
//!
//! # Invariants
//!
//! - `elapsed` only grows. Every wheel entry's placement time, `max(when, elapsed at insert)`,
//!   is less than `elapsed + 2^36`; every overflow entry's deadline is at least
//!   `elapsed + 2^36` when it was placed there.
//! - A level's `occupied` bit `s` is set exactly when slot `s` of that level is non-empty.
//! - A wheel entry's slot has not come due: its start is after `elapsed`, except at level 0
//!   (where it may equal `elapsed`) and at the top level, whose slots wrap around (a slot
//!   "before" `elapsed` is one rotation ahead).
//! - A live [`TimerKey`] names a used slab node with the same generation; cancelling or firing
//!   a timer bumps its node's generation, so stale keys are rejected.
#![forbid(unsafe_code)]

use std::fmt;

/// log2 of the slots per level.
const SLOT_BITS: u32 = 6;
/// Slots per level.
const SLOTS: usize = 1 << SLOT_BITS;
/// Levels in the wheel.
const LEVELS: usize = 6;
/// Ticks the whole wheel spans: deadlines this far ahead or more go to the overflow list.
const WHEEL_RANGE: u64 = 1 << (SLOT_BITS * LEVELS as u32);
/// "No node" in the slab's links.
const NIL: u32 = u32::MAX;

/// Identifies one inserted timer; returned by [`TimerWheel::insert`], taken by
/// [`TimerWheel::cancel`]. A key goes stale when its timer fires or is cancelled.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct TimerKey {
    /// Slab index.
    index: u32,
    /// The slab node's generation when the timer was inserted. 64 bits so that it never wraps:
    /// at one insert/cancel cycle per nanosecond a slot would need 584 years to come back to
    /// a generation a stale key holds (a `u32` came back after 2^32 cycles, about an hour at a
    /// million cycles a second, and let a stale key cancel an unrelated timer).
    generation: u64,
}

/// Where a timer's node is linked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Location {
    Wheel { level: u8, slot: u8 },
    Overflow,
}

/// A doubly linked list of slab nodes, oldest first.
#[derive(Debug, Clone, Copy)]
struct List {
    head: u32,
    tail: u32,
}

impl List {
    const EMPTY: Self = Self {
        head: NIL,
        tail: NIL,
    };
}

/// One level: 64 slot lists and the bitmap of the non-empty ones.
#[derive(Debug, Clone, Copy)]
struct Level {
    occupied: u64,
    slots: [List; SLOTS],
}

/// A pending timer.
struct Timer<T> {
    /// The deadline, as given.
    when: u64,
    /// Insertion order, breaking ties between equal deadlines.
    seq: u64,
    payload: T,
    prev: u32,
    next: u32,
    location: Location,
}

enum Node<T> {
    Free { next_free: u32 },
    Used(Timer<T>),
}

struct SlabSlot<T> {
    /// Bumped each time the node is freed; see `TimerKey::generation`.
    generation: u64,
    node: Node<T>,
}

/// A timer that came due, before it is handed out in deadline order.
struct Fired<T> {
    when: u64,
    seq: u64,
    key: TimerKey,
    payload: T,
}

/// The next slot to process: its level, index and start time.
#[derive(Debug, Clone, Copy)]
struct Expiration {
    level: usize,
    slot: usize,
    deadline: u64,
}

/// A hierarchical timer wheel over ticks, holding a payload `T` per timer.
///
/// See the module docs for the layout and `# Invariants`.
pub struct TimerWheel<T> {
    /// The wheel's current time: every deadline before it has fired.
    elapsed: u64,
    levels: Box<[Level; LEVELS]>,
    /// Deadlines at least `WHEEL_RANGE` ahead of `elapsed` when placed.
    overflow: List,
    /// A time at or before which the overflow list must be rescanned (its earliest deadline
    /// comes within range then); `u64::MAX` when it is empty. May be early, never late.
    overflow_rescan_at: u64,
    slab: Vec<SlabSlot<T>>,
    free_head: u32,
    len: usize,
    next_seq: u64,
    /// Reused buffer for the timers one `advance` fires.
    fired: Vec<Fired<T>>,
}

impl<T> TimerWheel<T> {
    /// An empty wheel whose current time is `now`.
    #[must_use]
    pub fn new(now: u64) -> Self {
        Self {
            elapsed: now,
            levels: Box::new(
                [Level {
                    occupied: 0,
                    slots: [List::EMPTY; SLOTS],
                }; LEVELS],
            ),
            overflow: List::EMPTY,
            overflow_rescan_at: u64::MAX,
            slab: Vec::new(),
            free_head: NIL,
            len: 0,
            next_seq: 0,
            fired: Vec::new(),
        }
    }

    /// The wheel's current time: the last `now` passed to [`advance`](Self::advance) (or to
    /// [`new`](Self::new)).
    #[must_use]
    pub fn now(&self) -> u64 {
        self.elapsed
    }

    /// The number of pending timers.
    #[must_use]
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether no timer is pending.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Adds a timer due at `when` (in ticks) and returns its key. O(1).
    ///
    /// A deadline at or before [`now`](Self::now) fires on the next `advance`.
    ///
    /// # Panics
    ///
    /// If `u32::MAX - 1` timers are pending at once.
    pub fn insert(&mut self, when: u64, payload: T) -> TimerKey {
        let seq = self.next_seq;
        self.next_seq += 1;
        let timer = Timer {
            when,
            seq,
            payload,
            prev: NIL,
            next: NIL,
            location: Location::Overflow,
        };
        let index = if self.free_head == NIL {
            let index = u32::try_from(self.slab.len())
                .ok()
                .filter(|&i| i != NIL)
                .expect("timer wheel: too many pending timers");
            self.slab.push(SlabSlot {
                generation: 0,
                node: Node::Used(timer),
            });
            index
        } else {
            let index = self.free_head;
            let slot = &mut self.slab[index as usize];
            let Node::Free { next_free } = slot.node else {
                unreachable!("free list names a used node");
            };
            self.free_head = next_free;
            slot.node = Node::Used(timer);
            index
        };
        self.len += 1;
        self.place(index);
        TimerKey {
            index,
            generation: self.slab[index as usize].generation,
        }
    }

    /// Cancels the timer `key` and returns its payload, or `None` if the key is stale (the
    /// timer fired or was cancelled). O(1).
    pub fn cancel(&mut self, key: TimerKey) -> Option<T> {
        let slot = self.slab.get(key.index as usize)?;
        if slot.generation != key.generation || !matches!(slot.node, Node::Used(_)) {
            return None;
        }
        self.unlink(key.index);
        Some(self.free(key.index).payload)
    }

    /// The earliest pending deadline, or `None` if no timer is pending.
    ///
    /// Exact, not a lower bound, and may be before [`now`](Self::now) for a timer inserted in
    /// the past. Costs one bitmap scan per level plus the entries of the earliest slot (a scan
    /// of the overflow list if only far deadlines are pending).
    #[must_use]
    pub fn next_deadline(&self) -> Option<u64> {
        let list = match self.next_expiration() {
            Some(e) => self.levels[e.level].slots[e.slot],
            None if self.overflow.head != NIL => self.overflow,
            None => return None,
        };
        let mut earliest = u64::MAX;
        let mut index = list.head;
        while index != NIL {
            let timer = self.timer(index);
            earliest = earliest.min(timer.when);
            index = timer.next;
        }
        Some(earliest)
    }

    /// Moves the wheel's time to `now` and returns every timer due at or before it, as
    /// `(key, payload)`, in deadline order (equal deadlines in insertion order).
    ///
    /// A `now` at or before the current time moves nothing but still fires timers inserted
    /// with a deadline in the past. Dropping the iterator early drops the remaining payloads.
    pub fn advance(&mut self, now: u64) -> impl ExactSizeIterator<Item = (TimerKey, T)> + '_ {
        debug_assert!(self.fired.is_empty());
        if now > self.elapsed {
            loop {
                let wheel = self.next_expiration().filter(|e| e.deadline <= now);
                let rescan = (self.overflow.head != NIL && self.overflow_rescan_at <= now)
                    .then_some(self.overflow_rescan_at);
                match (wheel, rescan) {
                    (Some(e), Some(at)) if e.deadline < at => self.process(e),
                    (_, Some(at)) => {
                        // Nothing in the wheel is due before `at`, so time may jump there.
                        self.elapsed = self.elapsed.max(at);
                        self.rescan_overflow();
                    }
                    (Some(e), None) => self.process(e),
                    (None, None) => break,
                }
            }
            self.elapsed = now;
        } else if let Some(e) = self
            .next_expiration()
            .filter(|e| e.deadline <= self.elapsed)
        {
            // Timers inserted at or before the current time sit in its level-0 slot.
            self.process(e);
        }
        self.fired.sort_unstable_by_key(|f| (f.when, f.seq));
        self.fired.drain(..).map(|f| (f.key, f.payload))
    }

    /// Checks every invariant in the module docs. O(timers); for tests.
    #[doc(hidden)]
    pub fn check_invariants(&self) {
        let mut linked = 0;
        for (level, l) in self.levels.iter().enumerate() {
            for (slot, list) in l.slots.iter().enumerate() {
                assert_eq!(l.occupied >> slot & 1 == 1, list.head != NIL);
                let mut prev = NIL;
                let mut index = list.head;
                while index != NIL {
                    let t = self.timer(index);
                    assert_eq!(t.prev, prev);
                    let expected = Location::Wheel {
                        level: level as u8,
                        slot: slot as u8,
                    };
                    assert_eq!(t.location, expected);
                    linked += 1;
                    prev = index;
                    index = t.next;
                }
                assert_eq!(list.tail, prev);
            }
        }
        let mut index = self.overflow.head;
        while index != NIL {
            let t = self.timer(index);
            assert_eq!(t.location, Location::Overflow);
            assert!(self.overflow_rescan_at <= t.when - (WHEEL_RANGE - 1));
            linked += 1;
            index = t.next;
        }
        assert_eq!(linked, self.len);
        let used = self
            .slab
            .iter()
            .filter(|s| matches!(s.node, Node::Used(_)))
            .count();
        assert_eq!(used, self.len);
    }

    /// Ages slab node `index` by `cycles` insert/cancel cycles at once, so a test can reach a
    /// generation's wrap point without running billions of cycles.
    #[cfg(test)]
    fn age_slot(&mut self, index: u32, cycles: u64) {
        let slot = &mut self.slab[index as usize];
        slot.generation = slot.generation.wrapping_add(cycles as _);
    }

    /// Links node `index` into the level, slot or overflow list its deadline calls for.
    fn place(&mut self, index: u32) {
        let when = self.timer(index).when;
        let at = when.max(self.elapsed);
        if at - self.elapsed >= WHEEL_RANGE {
            self.overflow_rescan_at = self.overflow_rescan_at.min(when - (WHEEL_RANGE - 1));
            self.link(index, Location::Overflow);
            return;
        }
        let level = level_for(self.elapsed, at);
        let slot = ((at >> (level as u32 * SLOT_BITS)) as usize) & (SLOTS - 1);
        self.link(
            index,
            Location::Wheel {
                level: level as u8,
                slot: slot as u8,
            },
        );
    }

    /// The earliest non-empty slot over all levels, with its start time.
    fn next_expiration(&self) -> Option<Expiration> {
        // Lower levels first: a level's slots all end before the next level's first due slot.
        self.levels.iter().enumerate().find_map(|(level, l)| {
            if l.occupied == 0 {
                return None;
            }
            let shift = level as u32 * SLOT_BITS;
            let now_slot = ((self.elapsed >> shift) as usize) & (SLOTS - 1);
            let level_range = 1_u64 << (shift + SLOT_BITS);
            let level_start = self.elapsed & !(level_range - 1);
            let now_bit = 1_u64 << now_slot;
            // The slot holding `elapsed` comes first if it starts now (level 0, or an aligned
            // `elapsed`); if it started earlier it can only be the top level's slot one
            // rotation ahead, so it comes last.
            let now_slot_due = level_start + ((now_slot as u64) << shift) >= self.elapsed;
            let others = l.occupied & !now_bit;
            let slot = if l.occupied & now_bit != 0 && (now_slot_due || others == 0) {
                now_slot
            } else {
                let ahead = others.rotate_right(now_slot as u32).trailing_zeros() as usize;
                (now_slot + ahead) & (SLOTS - 1)
            };
            let mut deadline = level_start + ((slot as u64) << shift);
            if deadline < self.elapsed {
                // Only the top level wraps: its slot lies in the next rotation.
                debug_assert_eq!(level, LEVELS - 1, "a lower-level slot was skipped");
                deadline += level_range;
            }
            Some(Expiration {
                level,
                slot,
                deadline,
            })
        })
    }

    /// Processes one due slot: level 0 fires, higher levels cascade down.
    fn process(&mut self, e: Expiration) {
        debug_assert!(e.deadline >= self.elapsed, "time went backwards");
        self.elapsed = e.deadline;
        let list = &mut self.levels[e.level].slots[e.slot];
        let mut index = list.head;
        *list = List::EMPTY;
        self.levels[e.level].occupied &= !(1 << e.slot);
        while index != NIL {
            let next = self.timer(index).next;
            if e.level == 0 {
                debug_assert!(self.timer(index).when <= e.deadline, "fired early");
                let generation = self.slab[index as usize].generation;
                let timer = self.free(index);
                self.fired.push(Fired {
                    when: timer.when,
                    seq: timer.seq,
                    key: TimerKey { index, generation },
                    payload: timer.payload,
                });
            } else {
                self.place(index);
            }
            index = next;
        }
    }

    /// Moves overflow timers that came within the wheel's range into the wheel.
    fn rescan_overflow(&mut self) {
        let mut index = self.overflow.head;
        self.overflow_rescan_at = u64::MAX;
        while index != NIL {
            let timer = self.timer(index);
            let (next, when) = (timer.next, timer.when);
            if when - self.elapsed < WHEEL_RANGE {
                self.unlink(index);
                self.place(index);
            } else {
                self.overflow_rescan_at = self.overflow_rescan_at.min(when - (WHEEL_RANGE - 1));
            }
            index = next;
        }
    }

    fn timer(&self, index: u32) -> &Timer<T> {
        match &self.slab[index as usize].node {
            Node::Used(timer) => timer,
            Node::Free { .. } => unreachable!("linked node {index} is free"),
        }
    }

    fn timer_mut(&mut self, index: u32) -> &mut Timer<T> {
        match &mut self.slab[index as usize].node {
            Node::Used(timer) => timer,
            Node::Free { .. } => unreachable!("linked node {index} is free"),
        }
    }

    fn list_mut(&mut self, location: Location) -> &mut List {
        match location {
            Location::Wheel { level, slot } => {
                &mut self.levels[level as usize].slots[slot as usize]
            }
            Location::Overflow => &mut self.overflow,
        }
    }

    /// Appends node `index` to `location`'s list.
    fn link(&mut self, index: u32, location: Location) {
        let tail = self.list_mut(location).tail;
        let timer = self.timer_mut(index);
        timer.prev = tail;
        timer.next = NIL;
        timer.location = location;
        if tail == NIL {
            self.list_mut(location).head = index;
        } else {
            self.timer_mut(tail).next = index;
        }
        self.list_mut(location).tail = index;
        if let Location::Wheel { level, slot } = location {
            self.levels[level as usize].occupied |= 1 << slot;
        }
    }

    /// Takes node `index` out of its list.
    fn unlink(&mut self, index: u32) {
        let Timer {
            prev,
            next,
            location,
            ..
        } = *self.timer(index);
        if prev == NIL {
            self.list_mut(location).head = next;
        } else {
            self.timer_mut(prev).next = next;
        }
        if next == NIL {
            self.list_mut(location).tail = prev;
        } else {
            self.timer_mut(next).prev = prev;
        }
        if let Location::Wheel { level, slot } = location
            && self.list_mut(location).head == NIL
        {
            self.levels[level as usize].occupied &= !(1 << slot);
        }
    }

    /// Frees an unlinked node, bumping its generation, and returns its timer.
    fn free(&mut self, index: u32) -> Timer<T> {
        let slot = &mut self.slab[index as usize];
        let node = std::mem::replace(
            &mut slot.node,
            Node::Free {
                next_free: self.free_head,
            },
        );
        // Cannot overflow in practice (2^64 cycles); wrapping keeps `free` panic-free anyway.
        slot.generation = slot.generation.wrapping_add(1);
        self.free_head = index;
        self.len -= 1;
        match node {
            Node::Used(timer) => timer,
            Node::Free { .. } => unreachable!("freed a free node"),
        }
    }
}

/// The level for a placement time `at` (`elapsed <= at < elapsed + WHEEL_RANGE`): that of the
/// highest 6-bit digit in which the two differ, clamped to the top level (whose slots wrap).
fn level_for(elapsed: u64, at: u64) -> usize {
    debug_assert!(at >= elapsed && at - elapsed < WHEEL_RANGE);
    let masked = ((elapsed ^ at) | (SLOTS as u64 - 1)).min(WHEEL_RANGE - 1);
    let significant = 63 - masked.leading_zeros();
    (significant / SLOT_BITS) as usize
}

impl<T> fmt::Debug for TimerWheel<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TimerWheel")
            .field("now", &self.elapsed)
            .field("len", &self.len)
            .field("next_deadline", &self.next_deadline())
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fire(wheel: &mut TimerWheel<u32>, now: u64) -> Vec<u32> {
        let fired: Vec<u32> = wheel.advance(now).map(|(_, v)| v).collect();
        wheel.check_invariants();
        fired
    }

    #[test]
    fn fires_in_deadline_order_with_ties_in_insertion_order() {
        let mut wheel = TimerWheel::new(0);
        for (v, when) in [(0, 100), (1, 5), (2, 100), (3, 4_000), (4, 5)] {
            wheel.insert(when, v);
        }
        assert_eq!(wheel.next_deadline(), Some(5));
        assert_eq!(fire(&mut wheel, 4), Vec::<u32>::new());
        assert_eq!(fire(&mut wheel, 100), [1, 4, 0, 2]);
        assert_eq!(wheel.next_deadline(), Some(4_000));
        assert_eq!(fire(&mut wheel, 10_000), [3]);
        assert!(wheel.is_empty());
    }

    #[test]
    fn level_layout_matches_the_docs() {
        assert_eq!(level_for(0, 0), 0);
        assert_eq!(level_for(0, 63), 0);
        assert_eq!(level_for(0, 64), 1);
        assert_eq!(level_for(0, 4_095), 1);
        assert_eq!(level_for(0, 4_096), 2);
        assert_eq!(level_for(0, WHEEL_RANGE - 1), 5);
        // Across a top-level rotation boundary: clamped to the top level.
        assert_eq!(level_for(WHEEL_RANGE - 1, WHEEL_RANGE + 5), 5);
    }

    #[test]
    fn months_and_beyond_the_top_level_fire_on_time() {
        let month = 30 * 24 * 3_600 * 1_000;
        let far = WHEEL_RANGE * 3 + 17;
        let mut wheel = TimerWheel::new(1_700_000_000_000);
        let start = wheel.now();
        wheel.insert(start + month, 1);
        wheel.insert(start + far, 2);
        wheel.insert(u64::MAX, 3);
        wheel.check_invariants();
        assert_eq!(wheel.next_deadline(), Some(start + month));
        assert_eq!(fire(&mut wheel, start + month - 1), Vec::<u32>::new());
        assert_eq!(fire(&mut wheel, start + month), [1]);
        assert_eq!(wheel.next_deadline(), Some(start + far));
        assert_eq!(fire(&mut wheel, start + far - 1), Vec::<u32>::new());
        assert_eq!(fire(&mut wheel, start + far), [2]);
        assert_eq!(fire(&mut wheel, u64::MAX - 1), Vec::<u32>::new());
        assert_eq!(fire(&mut wheel, u64::MAX), [3]);
    }

    #[test]
    fn stale_keys_are_rejected_and_past_deadlines_fire_next() {
        let mut wheel = TimerWheel::new(1_000);
        let a = wheel.insert(2_000, 1);
        assert_eq!(wheel.cancel(a), Some(1));
        assert_eq!(wheel.cancel(a), None);
        let b = wheel.insert(2_000, 2);
        assert_eq!(a.index, b.index, "slab slot reused");
        assert_eq!(wheel.cancel(a), None, "old generation");
        wheel.insert(10, 3);
        wheel.insert(1_000, 4);
        assert_eq!(wheel.next_deadline(), Some(10));
        assert_eq!(fire(&mut wheel, 1_000), [3, 4]);
        assert_eq!(fire(&mut wheel, 2_000), [2]);
        assert_eq!(wheel.cancel(b), None, "fired");
    }

    #[test]
    fn a_stale_key_never_matches_after_2_pow_32_cycles_on_its_slot() {
        let mut wheel = TimerWheel::new(0);
        let stale = wheel.insert(100, 1);
        assert_eq!(wheel.cancel(stale), Some(1));
        // 2^32 - 1 more insert/cancel cycles on the same slot: with a 32-bit generation the
        // slot would be back at the stale key's generation.
        wheel.age_slot(stale.index, (1 << 32) - 1);
        let live = wheel.insert(200, 2);
        assert_eq!(
            live.index, stale.index,
            "the LIFO free list reuses the slot"
        );
        assert_eq!(
            wheel.cancel(stale),
            None,
            "a stale key cancelled a live timer"
        );
        assert_eq!(wheel.len(), 1);
        assert_eq!(wheel.cancel(live), Some(2));
    }
}
