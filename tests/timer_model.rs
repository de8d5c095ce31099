//! The timer wheel checked against a `BTreeMap` model (a sorted reference queue) with proptest.
//!
//! Random insert / cancel / advance sequences, with deadlines from "already past" through 1 ms
//! to beyond the wheel's top level, must fire exactly the model's timers, in deadline order
//! (ties in insertion order), and agree on `next_deadline` and `cancel` after every step.
#![allow(
    clippy::disallowed_types,
    reason = "proptest's macros expand to std::sync::Arc"
)]

use std::collections::BTreeMap;

use proptest::prelude::*;

#[path = "../src/prop_seed.rs"]
mod prop_seed;
use tvdatafeed::internal::{TimerKey, TimerWheel};

/// The wheel's span (6 levels of 64 slots): deadlines past it go to the overflow list.
const WHEEL_RANGE: u64 = 1 << 36;

#[derive(Debug, Clone)]
enum Op {
    /// Insert at `now + delta`, or `now - delta` when `past`.
    Insert { delta: u64, past: bool },
    /// Cancel the n-th key ever returned (modulo their count).
    Cancel(usize),
    /// Advance time by `delta`.
    Advance(u64),
}

/// Distances covering every level, the top-level boundary and the overflow list.
fn distance() -> impl Strategy<Value = u64> {
    prop_oneof![
        0..70_u64,
        0..5_000_u64,
        0..(1_u64 << 25),
        (WHEEL_RANGE - 70)..(WHEEL_RANGE + 70),
        0..(1_u64 << 40),
    ]
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => (distance(), prop::bool::weighted(0.1)).prop_map(|(delta, past)| Op::Insert { delta, past }),
        1 => any::<usize>().prop_map(Op::Cancel),
        3 => distance().prop_map(Op::Advance),
    ]
}

proptest! {
    #![proptest_config(prop_seed::config(if cfg!(debug_assertions) { 256 } else { 1024 }))]

    #[test]
    fn wheel_fires_like_a_sorted_queue(
        start in prop_oneof![Just(0_u64), 0..(1_u64 << 45)],
        ops in prop::collection::vec(op(), 1..120),
    ) {
        let mut wheel = TimerWheel::new(start);
        // (deadline, insertion seq) -> payload; the model's order is the wheel's contract.
        let mut model: BTreeMap<(u64, u64), u64> = BTreeMap::new();
        let mut keys: Vec<(TimerKey, u64, u64)> = Vec::new();
        let mut now = start;
        for (seq, op) in (0_u64..).zip(ops) {
            match op {
                Op::Insert { delta, past } => {
                    let when = if past { now.saturating_sub(delta) } else { now.saturating_add(delta) };
                    let key = wheel.insert(when, seq);
                    model.insert((when, seq), seq);
                    keys.push((key, when, seq));
                }
                Op::Cancel(n) if !keys.is_empty() => {
                    let (key, when, seq) = keys[n % keys.len()];
                    prop_assert_eq!(wheel.cancel(key), model.remove(&(when, seq)));
                }
                Op::Cancel(_) => {}
                Op::Advance(delta) => {
                    now = now.saturating_add(delta);
                    let fired: Vec<u64> = wheel.advance(now).map(|(_, payload)| payload).collect();
                    let due: Vec<(u64, u64)> = model.range(..=(now, u64::MAX)).map(|(k, _)| *k).collect();
                    let expected: Vec<u64> = due.iter().map(|k| model.remove(k).expect("present")).collect();
                    prop_assert_eq!(fired, expected);
                    prop_assert_eq!(wheel.now(), now);
                }
            }
            wheel.check_invariants();
            prop_assert_eq!(wheel.len(), model.len());
            prop_assert_eq!(wheel.next_deadline(), model.keys().next().map(|(when, _)| *when));
        }
        // Everything left fires by the end of time, in order.
        let fired: Vec<u64> = wheel.advance(u64::MAX).map(|(_, payload)| payload).collect();
        let expected: Vec<u64> = model.values().copied().collect();
        prop_assert_eq!(fired, expected);
        prop_assert!(wheel.is_empty());
        for (key, _, _) in keys {
            prop_assert_eq!(wheel.cancel(key), None, "every key is stale once its timer is gone");
        }
    }
}
