//! Client-chosen session ids: `cs_` (chart) and `qs_` (quote) followed by 12 lowercase letters,
//! the shape every TradingView client sends.
//!
//! Pure: the generator is seeded by the caller (the engine and the historical client seed it
//! from the clock, the process id and a counter; tests from a constant), so the protocol core
//! reads no clock.
#![forbid(unsafe_code)]

/// Generates distinct session ids from a seed.
///
/// The generator steps a full-period linear congruential generator and prints 12 base-26 digits
/// of its mixed state: ids are distinct with overwhelming probability (26^12 ≈ 10^17 values),
/// for one generator and across generators with different seeds.
///
/// # Examples
///
/// ```
/// use tvdatafeed::protocol::SessionIds;
///
/// let mut ids = SessionIds::new(7);
/// let chart = ids.chart();
/// assert!(chart.starts_with("cs_") && chart.len() == 15);
/// assert!(ids.quote().starts_with("qs_"));
/// assert_ne!(ids.chart(), chart);
/// ```
#[derive(Debug, Clone)]
pub struct SessionIds {
    state: u64,
}

impl SessionIds {
    /// A generator seeded with `seed`.
    pub const fn new(seed: u64) -> Self {
        Self { state: seed }
    }

    /// The next chart session id, `cs_` and 12 letters.
    pub fn chart(&mut self) -> String {
        self.next("cs_")
    }

    /// The next quote session id, `qs_` and 12 letters.
    pub fn quote(&mut self) -> String {
        self.next("qs_")
    }

    fn next(&mut self, prefix: &str) -> String {
        // Knuth's MMIX LCG: full period over u64, so the state never repeats within 2^64 steps.
        self.state = self
            .state
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        // Mix the state so that consecutive ids do not share their low digits.
        let mut x = self.state ^ (self.state >> 29);
        x = x.wrapping_mul(0xbf58_476d_1ce4_e5b9);
        x ^= x >> 32;
        let mut id = String::with_capacity(prefix.len() + 12);
        id.push_str(prefix);
        for _ in 0..12 {
            id.push(char::from(b'a' + (x % 26) as u8));
            x /= 26;
        }
        id
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashSet;

    use super::*;

    #[test]
    fn ids_are_well_formed_and_distinct() {
        let mut ids = SessionIds::new(0);
        let mut seen = HashSet::new();
        for _ in 0..10_000 {
            let id = ids.chart();
            assert_eq!(id.len(), 15);
            assert!(id[3..].bytes().all(|b| b.is_ascii_lowercase()), "{id}");
            assert!(seen.insert(id), "repeated id");
        }
        assert_ne!(SessionIds::new(1).chart(), SessionIds::new(2).chart());
    }
}
