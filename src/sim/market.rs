//! The simulator's deterministic market: every (symbol, resolution, bar open time) has fixed
//! final values, a pure function of the seed, so tests can assert exact bars.

use crate::{Bar, Interval, Symbol};

/// Exchanges whose symbols are indices: their bars have no volume (five values).
const INDEX_EXCHANGES: &[&str] = &["SP", "TVC", "INDEX", "DJ", "CBOE", "NSE_INDEX"];

/// A deterministic market.
///
/// Prices follow a smooth wave plus hashed noise around a per-symbol base; a bar's open is the
/// previous bar's close, its high and low bracket both. Prices have two decimals, volumes five.
///
/// # Examples
///
/// ```
/// use tvdatafeed::sim::Market;
///
/// let m = Market::new(7);
/// let sym = "BINANCE:BTCUSDT".parse()?;
/// let one = "1".parse()?;
/// let a = m.bar(&sym, one, 1_751_833_020);
/// assert_eq!(a, m.bar(&sym, one, 1_751_833_020)); // same inputs, same bar
/// assert_eq!(m.bar(&sym, one, 1_751_833_080).open, a.close);
/// assert!(a.low <= a.open.min(a.close) && a.high >= a.open.max(a.close));
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Market {
    seed: u64,
}

fn splitmix(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

fn fnv(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(*b)).wrapping_mul(0x100_0000_01b3)
    })
}

/// A uniform value in `[0, 1)` from a hash.
fn unit_f(h: u64) -> f64 {
    (h >> 11) as f64 / (1u64 << 53) as f64
}

fn round_to(x: f64, decimals: i32) -> f64 {
    let k = 10f64.powi(decimals);
    (x * k).round() / k
}

impl Market {
    /// A market from `seed`.
    pub const fn new(seed: u64) -> Self {
        Self { seed }
    }

    /// The seed.
    pub const fn seed(&self) -> u64 {
        self.seed
    }

    /// Whether `symbol`'s bars carry a volume (index exchanges do not).
    pub fn has_volume(symbol: &Symbol) -> bool {
        !INDEX_EXCHANGES.contains(&symbol.exchange())
    }

    /// The price generator of one (symbol, interval), with its hashes computed once: what a
    /// live series keeps so that each update costs no allocation and no string hashing.
    pub fn prices(&self, symbol: &Symbol, interval: Interval) -> Prices {
        let name = fnv(symbol.as_str().as_bytes());
        let unit = interval.unit() as u64;
        Prices {
            key: splitmix(
                self.seed ^ name ^ (unit << 32 | u64::from(interval.count())).rotate_left(17),
            ),
            base: 10f64.powf(1.0 + 4.0 * unit_f(splitmix(self.seed ^ name))),
            interval,
            volume: Self::has_volume(symbol),
        }
    }

    /// The open time of the bar before the one opening at `t`.
    pub fn previous_open(interval: Interval, t: i64) -> i64 {
        match interval.fixed_seconds() {
            Some(len) => t - len,
            None => interval.bar_open(t - 1),
        }
    }

    /// The final values of the bar of `symbol` at `interval` opening at `t`.
    pub fn bar(&self, symbol: &Symbol, interval: Interval, t: i64) -> Bar {
        self.prices(symbol, interval).bar(t)
    }

    /// Whether the bar of `symbol` at `interval` opening at `t` has trades when about one bar
    /// in `one_in` does (a thin market, [`SimConfig::thin_symbols`](super::SimConfig)): a
    /// pure function of the seed, the symbol, the interval and `t`. `one_in` 0 or 1 means
    /// every bar trades.
    ///
    /// # Examples
    ///
    /// ```
    /// use tvdatafeed::sim::Market;
    ///
    /// let m = Market::new(7);
    /// let (sym, one) = ("NYSE:THIN".parse()?, "1".parse()?);
    /// let t0 = 1_751_833_020;
    /// let traded = (0..400).filter(|i| m.has_trades(&sym, one, t0 + 60 * i, 4)).count();
    /// assert!((60..140).contains(&traded)); // about one in 4
    /// assert!(m.has_trades(&sym, one, t0, 1));
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn has_trades(&self, symbol: &Symbol, interval: Interval, t: i64, one_in: u64) -> bool {
        self.prices(symbol, interval).has_trades(t, one_in)
    }

    /// The values of the bar opening at `t` while it forms, `fraction` (0..=1) of the way
    /// through: the close moves from the open towards the final close, high and low stay within
    /// the final ones, the volume grows. At `fraction >= 1` this is [`Market::bar`].
    pub fn forming(&self, symbol: &Symbol, interval: Interval, t: i64, fraction: f64) -> Bar {
        self.prices(symbol, interval).forming(t, fraction)
    }
}

/// The prices of one (symbol, interval) of a [`Market`]; see [`Market::prices`].
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Prices {
    key: u64,
    base: f64,
    interval: Interval,
    volume: bool,
}

impl Prices {
    /// The close of the bar opening at `t` (a pure function, no recursion).
    fn close(&self, t: i64) -> f64 {
        let len = self.interval.fixed_seconds().unwrap_or(30 * 86_400) as f64;
        let phase = t as f64 / (len * 150.0);
        let noise = unit_f(splitmix(self.key ^ t as u64)) - 0.5;
        round_to(
            self.base * (1.0 + 0.05 * (phase * std::f64::consts::TAU).sin() + 0.004 * noise),
            2,
        )
    }

    /// A correction of a closed bar, as [`SimConfig::revise_every`](super::SimConfig) sends
    /// it: the close one cent higher (and the high with it when needed).
    pub fn revise(bar: &Bar) -> Bar {
        let close = round_to(bar.close + 0.01, 2);
        Bar {
            close,
            high: bar.high.max(close),
            ..*bar
        }
    }

    /// Whether the bar opening at `t` has trades when about one bar in `one_in` does; see
    /// [`Market::has_trades`].
    pub fn has_trades(&self, t: i64, one_in: u64) -> bool {
        // A hash of its own (rotated time, salted key): independent of the bar's prices.
        one_in <= 1
            || splitmix(self.key ^ 0x7468_696e_5f74_7264 ^ (t as u64).rotate_left(41))
                .is_multiple_of(one_in)
    }

    /// The final values of the bar opening at `t`.
    pub fn bar(&self, t: i64) -> Bar {
        self.bar_after(t, &mut None)
    }

    /// [`Prices::bar`] for bars taken in order: `last` is the `(open time, close)` of the
    /// previous call's bar, so a bar that follows it takes its open from there instead of
    /// computing that close again; `last` is then this bar's. The same values as `bar(t)`.
    pub fn bar_after(&self, t: i64, last: &mut Option<(i64, f64)>) -> Bar {
        let previous = Market::previous_open(self.interval, t);
        let open = match *last {
            Some((at, close)) if at == previous => close,
            _ => self.close(previous),
        };
        let close = self.close(t);
        *last = Some((t, close));
        let h = splitmix(self.key ^ (t as u64).rotate_left(29));
        let up = unit_f(h) * 0.002;
        let down = unit_f(splitmix(h)) * 0.002;
        let volume = self
            .volume
            .then(|| round_to(unit_f(splitmix(h ^ 0x5555)) * 1000.0, 5));
        Bar {
            time: t,
            open,
            high: round_to(open.max(close) * (1.0 + up), 2),
            low: round_to(open.min(close) * (1.0 - down), 2),
            close,
            volume,
        }
    }

    /// The values of the bar opening at `t`, `fraction` of the way through it.
    pub fn forming(&self, t: i64, fraction: f64) -> Bar {
        let fin = self.bar(t);
        if fraction >= 1.0 {
            return fin;
        }
        let f = fraction.clamp(0.0, 1.0);
        let close = round_to(fin.open + (fin.close - fin.open) * f, 2);
        Bar {
            time: t,
            open: fin.open,
            high: fin.open.max(close),
            low: fin.open.min(close),
            close,
            volume: fin.volume.map(|v| round_to(v * f, 5)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Bars taken in order with the previous close carried over are the bars taken alone,
    /// whether the times follow each other, skip bars (a thin market) or go back.
    #[test]
    fn bars_taken_in_order_equal_bars_taken_alone() {
        let m = Market::new(9);
        for (sym, iv) in [
            ("BINANCE:BTCUSDT", "1"),
            ("SP:SPX", "1W"),
            ("NYMEX:CL1!", "1M"),
        ] {
            let iv: Interval = iv.parse().unwrap();
            let p = m.prices(&sym.parse().unwrap(), iv);
            let mut times = vec![iv.bar_open(1_751_833_020)];
            for step in [1, 1, 3, 1, 2, 1, 1] {
                let mut t = *times.last().unwrap();
                for _ in 0..step {
                    t = iv.next_bar_open(t);
                }
                times.push(t);
            }
            times.push(times[2]); // back in time: the carried close is not its open's
            times.push(times[3]);
            let mut last = None;
            for &t in &times {
                assert_eq!(p.bar_after(t, &mut last), p.bar(t), "{sym} {iv} {t}");
            }
        }
    }

    #[test]
    fn bars_are_consistent_and_chain() {
        let m = Market::new(42);
        for (sym, iv) in [
            ("BINANCE:BTCUSDT", "1"),
            ("SP:SPX", "1D"),
            ("NYMEX:CL1!", "1M"),
            ("FX:EURUSD", "5S"),
        ] {
            let sym: Symbol = sym.parse().unwrap();
            let iv: Interval = iv.parse().unwrap();
            let mut t = iv.bar_open(1_751_833_020);
            for _ in 0..50 {
                let b = m.bar(&sym, iv, t);
                assert!(
                    b.low <= b.open.min(b.close) && b.high >= b.open.max(b.close),
                    "{b:?}"
                );
                assert_eq!(b.volume.is_some(), Market::has_volume(&sym));
                let prev = Market::previous_open(iv, t);
                assert_eq!(m.bar(&sym, iv, prev).close, b.open);
                for f in [0.0, 0.3, 0.99] {
                    let p = m.forming(&sym, iv, t, f);
                    assert!(p.high <= b.high && p.low >= b.low && p.open == b.open);
                }
                t = prev;
            }
        }
        assert_ne!(
            Market::new(1).bar(&"A:B".parse().unwrap(), "1".parse().unwrap(), 60),
            Market::new(2).bar(&"A:B".parse().unwrap(), "1".parse().unwrap(), 60)
        );
    }
}
