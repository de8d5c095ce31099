//! Market vocabulary: [`Symbol`], [`Interval`] and [`Bar`].
//!
//! Pure values: no I/O, no clocks. Bar-boundary arithmetic takes the time as a parameter.
#![forbid(unsafe_code)]

use std::{fmt, str::FromStr};

/// One OHLCV bar, as TradingView reports it.
///
/// `time` is the bar's **open** time in UTC seconds since the Unix epoch. `volume` is `None`
/// for symbols that have no volume (indices such as `SP:SPX`), whose bars arrive with five
/// values instead of six.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Bar {
    /// Open time of the bar, UTC seconds since the Unix epoch.
    pub time: i64,
    /// First price of the bar.
    pub open: f64,
    /// Highest price of the bar.
    pub high: f64,
    /// Lowest price of the bar.
    pub low: f64,
    /// Last price of the bar (the final close once the bar is closed).
    pub close: f64,
    /// Traded volume, `None` when the symbol has none.
    pub volume: Option<f64>,
}

/// A TradingView symbol, `EXCHANGE:TICKER`, validated and upper-cased.
///
/// Continuous futures are written with the contract number and a `!`: the front contract of
/// NYMEX crude oil is `NYMEX:CL1!` ([`Symbol::continuous`]).
///
/// # Examples
///
/// ```
/// use tvdatafeed::Symbol;
///
/// let btc: Symbol = "binance:btcusdt".parse()?;
/// assert_eq!(btc.as_str(), "BINANCE:BTCUSDT");
/// assert_eq!(btc.exchange(), "BINANCE");
/// assert_eq!(btc.ticker(), "BTCUSDT");
///
/// let cl = Symbol::continuous("NYMEX", "CL", 1)?;
/// assert_eq!(cl.as_str(), "NYMEX:CL1!");
/// assert!("BTCUSDT".parse::<Symbol>().is_err()); // no exchange
/// # Ok::<(), tvdatafeed::SymbolError>(())
/// ```
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Symbol {
    full: String,
    colon: usize,
}

/// Longest exchange name accepted.
const MAX_EXCHANGE_LEN: usize = 32;
/// Longest ticker accepted.
const MAX_TICKER_LEN: usize = 64;

/// Why a string is not a valid [`Symbol`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SymbolError {
    /// The string has no `:` between exchange and ticker.
    #[error("symbol {0:?} is not of the form EXCHANGE:TICKER")]
    MissingExchange(String),
    /// The exchange is empty, too long or has a character other than `A-Z`, `0-9`, `_`.
    #[error("invalid exchange {0:?}")]
    InvalidExchange(String),
    /// The ticker is empty, too long or has a character TradingView tickers do not use.
    #[error("invalid ticker {0:?}")]
    InvalidTicker(String),
    /// A continuous-futures contract number outside `1..=99`.
    #[error("continuous futures contract {0} is outside 1..=99")]
    InvalidContract(u32),
}

impl Symbol {
    /// Builds `EXCHANGE:TICKER` from its two parts.
    ///
    /// # Errors
    ///
    /// [`SymbolError::InvalidExchange`] or [`SymbolError::InvalidTicker`] when a part is empty,
    /// too long, or holds a character TradingView does not use (whitespace, quotes, `:`).
    pub fn new(exchange: &str, ticker: &str) -> Result<Self, SymbolError> {
        let exchange = exchange.trim().to_ascii_uppercase();
        let ticker = ticker.trim().to_ascii_uppercase();
        if exchange.is_empty()
            || exchange.len() > MAX_EXCHANGE_LEN
            || !exchange
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'_')
        {
            return Err(SymbolError::InvalidExchange(crate::error::echo(&exchange)));
        }
        if ticker.is_empty()
            || ticker.len() > MAX_TICKER_LEN
            || !ticker.bytes().all(|b| {
                b.is_ascii_alphanumeric()
                    || matches!(b, b'.' | b'_' | b'!' | b'&' | b'-' | b'/' | b'+')
            })
        {
            return Err(SymbolError::InvalidTicker(crate::error::echo(&ticker)));
        }
        let colon = exchange.len();
        Ok(Self {
            full: format!("{exchange}:{ticker}"),
            colon,
        })
    }

    /// The continuous futures contract `contract` (1 = front month) of `root` on `exchange`:
    /// `Symbol::continuous("NYMEX", "CL", 1)` is `NYMEX:CL1!`, as Python tvdatafeed's
    /// `fut_contract=1` builds it.
    ///
    /// # Errors
    ///
    /// [`SymbolError::InvalidContract`] outside `1..=99`, or an invalid exchange or root.
    pub fn continuous(exchange: &str, root: &str, contract: u32) -> Result<Self, SymbolError> {
        if !(1..=99).contains(&contract) {
            return Err(SymbolError::InvalidContract(contract));
        }
        let root = root.trim();
        if root.ends_with('!') {
            return Err(SymbolError::InvalidTicker(crate::error::echo(root)));
        }
        Self::new(exchange, &format!("{root}{contract}!"))
    }

    /// The whole symbol, `EXCHANGE:TICKER`.
    pub fn as_str(&self) -> &str {
        &self.full
    }

    /// The exchange part, before the `:`.
    pub fn exchange(&self) -> &str {
        &self.full[..self.colon]
    }

    /// The ticker part, after the `:`.
    pub fn ticker(&self) -> &str {
        &self.full[self.colon + 1..]
    }

    /// The contract number when this is a continuous future (`CL1!` → `Some(1)`).
    pub fn continuous_contract(&self) -> Option<u32> {
        let t = self.ticker().strip_suffix('!')?;
        let digits = t.len() - t.trim_end_matches(|c: char| c.is_ascii_digit()).len();
        t[t.len() - digits..].parse().ok()
    }
}

impl FromStr for Symbol {
    type Err = SymbolError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let (exchange, ticker) = s
            .split_once(':')
            .ok_or_else(|| SymbolError::MissingExchange(crate::error::echo(s)))?;
        Self::new(exchange, ticker)
    }
}

impl TryFrom<&str> for Symbol {
    type Error = SymbolError;

    fn try_from(s: &str) -> Result<Self, Self::Error> {
        s.parse()
    }
}

impl TryFrom<&String> for Symbol {
    type Error = SymbolError;

    fn try_from(s: &String) -> Result<Self, Self::Error> {
        s.parse()
    }
}

impl TryFrom<String> for Symbol {
    type Error = SymbolError;

    fn try_from(s: String) -> Result<Self, Self::Error> {
        s.parse()
    }
}

impl From<&Symbol> for Symbol {
    fn from(s: &Symbol) -> Self {
        s.clone()
    }
}

impl fmt::Display for Symbol {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.full)
    }
}

impl fmt::Debug for Symbol {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Symbol({})", self.full)
    }
}

/// The unit of an [`Interval`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[non_exhaustive]
pub enum IntervalUnit {
    /// Seconds (`1S` … `30S`; a paid plan on TradingView).
    Second,
    /// Minutes (`1` … `240`, or any custom count up to a day). Hours are minute counts.
    Minute,
    /// Days (`1D`, …).
    Day,
    /// Weeks (`1W`, …), bars open on Monday 00:00 UTC.
    Week,
    /// Calendar months (`1M`, `3M`, `6M`, `12M`).
    Month,
}

/// A TradingView bar resolution.
///
/// Parsed from what users type (`"1"`, `"5m"`, `"1h"`, `"4H"`, `"D"`, `"1W"`, `"1M"`, `"15S"`)
/// and written as the server expects (`"1"`, `"5"`, `"60"`, `"240"`, `"1D"`, `"1W"`, `"1M"`,
/// `"15S"`). Hours are minute counts on the wire. `M` in upper case is a month; minutes may be
/// written `5m` or `5min`.
///
/// # Examples
///
/// ```
/// use tvdatafeed::{Interval, IntervalUnit};
///
/// let h: Interval = "1H".parse()?;
/// assert_eq!(h, Interval::minutes(60)?);
/// assert_eq!(h.to_string(), "60");
/// assert_eq!(h.unit(), IntervalUnit::Minute);
///
/// let m: Interval = "1M".parse()?;
/// assert_eq!(m.unit(), IntervalUnit::Month);
/// assert!("XX".parse::<Interval>().is_err());
///
/// // Bar boundaries for fixed-length intervals.
/// let five: Interval = "5".parse()?;
/// assert_eq!(five.bar_open(1_751_833_123), 1_751_832_900);
/// assert_eq!(five.next_bar_open(1_751_833_123), 1_751_833_200);
/// # Ok::<(), tvdatafeed::IntervalError>(())
/// ```
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Interval {
    unit: IntervalUnit,
    count: u32,
}

/// Why a string or count is not a valid [`Interval`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum IntervalError {
    /// The text is not an interval TradingView knows.
    #[error("invalid interval {0:?}")]
    Invalid(String),
    /// The count is zero or larger than the unit allows.
    #[error("interval count {count} is out of range for {unit:?} (1..={max})")]
    OutOfRange {
        /// The unit asked for.
        unit: IntervalUnit,
        /// The count asked for.
        count: u64,
        /// The largest count allowed for this unit.
        max: u32,
    },
}

const SECONDS_PER_DAY: i64 = 86_400;
/// 1970-01-05, the first Monday of the epoch, in seconds.
const FIRST_MONDAY: i64 = 4 * SECONDS_PER_DAY;

impl Interval {
    /// The largest count for `unit`.
    const fn max_count(unit: IntervalUnit) -> u32 {
        match unit {
            IntervalUnit::Second => 59,
            IntervalUnit::Minute => 1440,
            IntervalUnit::Day => 365,
            IntervalUnit::Week => 52,
            IntervalUnit::Month => 12,
        }
    }

    /// An interval of `count` `unit`s.
    ///
    /// # Errors
    ///
    /// [`IntervalError::OutOfRange`] when `count` is 0 or above the unit's maximum (59 seconds,
    /// 1440 minutes, 365 days, 52 weeks, 12 months).
    pub const fn new(unit: IntervalUnit, count: u32) -> Result<Self, IntervalError> {
        let max = Self::max_count(unit);
        if count == 0 || count > max {
            return Err(IntervalError::OutOfRange {
                unit,
                count: count as u64,
                max,
            });
        }
        Ok(Self { unit, count })
    }

    /// `count` seconds.
    ///
    /// # Errors
    ///
    /// See [`Interval::new`].
    pub const fn seconds(count: u32) -> Result<Self, IntervalError> {
        Self::new(IntervalUnit::Second, count)
    }

    /// `count` minutes (hours are minute counts: one hour is `minutes(60)`).
    ///
    /// # Errors
    ///
    /// See [`Interval::new`].
    pub const fn minutes(count: u32) -> Result<Self, IntervalError> {
        Self::new(IntervalUnit::Minute, count)
    }

    /// `count` days.
    ///
    /// # Errors
    ///
    /// See [`Interval::new`].
    pub const fn days(count: u32) -> Result<Self, IntervalError> {
        Self::new(IntervalUnit::Day, count)
    }

    /// `count` weeks.
    ///
    /// # Errors
    ///
    /// See [`Interval::new`].
    pub const fn weeks(count: u32) -> Result<Self, IntervalError> {
        Self::new(IntervalUnit::Week, count)
    }

    /// `count` calendar months.
    ///
    /// # Errors
    ///
    /// See [`Interval::new`].
    pub const fn months(count: u32) -> Result<Self, IntervalError> {
        Self::new(IntervalUnit::Month, count)
    }

    /// The unit.
    pub const fn unit(self) -> IntervalUnit {
        self.unit
    }

    /// How many units one bar spans.
    pub const fn count(self) -> u32 {
        self.count
    }

    /// Whether TradingView lists this resolution in its standard menu (`1S 5S 10S 15S 30S`,
    /// `1 3 5 15 30 45 60 120 180 240`, `1D 1W 1M 3M 6M 12M`). Anonymous and free accounts get
    /// `series_error "custom_resolution"` for others, and `seconds_not_entitled` for seconds.
    pub fn is_standard(self) -> bool {
        let allowed: &[u32] = match self.unit {
            IntervalUnit::Second => &[1, 5, 10, 15, 30],
            IntervalUnit::Minute => &[1, 3, 5, 15, 30, 45, 60, 120, 180, 240],
            IntervalUnit::Day | IntervalUnit::Week => &[1],
            IntervalUnit::Month => &[1, 3, 6, 12],
        };
        allowed.contains(&self.count)
    }

    /// Whether bars are shorter than a day.
    pub const fn is_intraday(self) -> bool {
        matches!(self.unit, IntervalUnit::Second | IntervalUnit::Minute)
    }

    /// The length of one bar in seconds, `None` for months (their length varies).
    pub const fn fixed_seconds(self) -> Option<i64> {
        let unit = match self.unit {
            IntervalUnit::Second => 1,
            IntervalUnit::Minute => 60,
            IntervalUnit::Day => SECONDS_PER_DAY,
            IntervalUnit::Week => 7 * SECONDS_PER_DAY,
            IntervalUnit::Month => return None,
        };
        Some(unit * self.count as i64)
    }

    /// The open time of the bar that contains `t` (UTC seconds).
    ///
    /// Seconds, minutes and days are aligned to multiples of the bar length since the epoch,
    /// weeks to Mondays 00:00 UTC, months to the first day of a month whose index since
    /// January 1970 is a multiple of the count. This is UTC arithmetic: daily and weekly bars of
    /// exchanges whose session does not start at midnight UTC carry the exchange's own open time,
    /// which only the server knows; use this for 24x7 markets and as a bound elsewhere.
    pub fn bar_open(self, t: i64) -> i64 {
        match self.unit {
            IntervalUnit::Month => {
                let (y, m, _) = civil_from_days(t.div_euclid(SECONDS_PER_DAY));
                let month_index = (y - 1970) * 12 + (m as i64 - 1);
                let aligned = month_index - month_index.rem_euclid(self.count as i64);
                days_from_civil(
                    1970 + aligned.div_euclid(12),
                    (aligned.rem_euclid(12) + 1) as u32,
                    1,
                ) * SECONDS_PER_DAY
            }
            IntervalUnit::Week => {
                let len = 7 * SECONDS_PER_DAY * self.count as i64;
                t - (t - FIRST_MONDAY).rem_euclid(len)
            }
            _ => {
                let len = self.fixed_seconds().unwrap_or(1);
                t - t.rem_euclid(len)
            }
        }
    }

    /// How many bars open from the bar containing `from` to the bar containing `to`, both
    /// included, at most `cap` (0 when `to < from`).
    ///
    /// # Examples
    ///
    /// ```
    /// let minute: tvdatafeed::Interval = "1".parse()?;
    /// assert_eq!(minute.bars_spanning(60, 185, u64::MAX), 3); // bars at 60, 120, 180
    /// assert_eq!(minute.bars_spanning(60, 0, u64::MAX), 0);
    /// assert_eq!(minute.bars_spanning(0, i64::MAX, 10), 10);
    /// # Ok::<(), tvdatafeed::IntervalError>(())
    /// ```
    pub fn bars_spanning(self, from: i64, to: i64, cap: u64) -> u64 {
        if to < from {
            return 0;
        }
        let (first, last) = (self.bar_open(from), self.bar_open(to));
        match self.fixed_seconds() {
            Some(len) => {
                let n = (last as i128 - first as i128) / len as i128 + 1;
                u64::try_from(n).unwrap_or(u64::MAX).min(cap)
            }
            None => {
                let mut n = 0;
                let mut t = first;
                while t <= last && n < cap {
                    n += 1;
                    t = self.next_bar_open(t);
                }
                n
            }
        }
    }

    /// The open time of the bar after the one that contains `t`: the instant the current bar
    /// closes.
    pub fn next_bar_open(self, t: i64) -> i64 {
        let open = self.bar_open(t);
        match self.fixed_seconds() {
            Some(len) => open + len,
            None => {
                let (y, m, _) = civil_from_days(open.div_euclid(SECONDS_PER_DAY));
                let index = (y - 1970) * 12 + (m as i64 - 1) + self.count as i64;
                days_from_civil(
                    1970 + index.div_euclid(12),
                    (index.rem_euclid(12) + 1) as u32,
                    1,
                ) * SECONDS_PER_DAY
            }
        }
    }
}

/// Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's algorithm).
fn days_from_civil(y: i64, m: u32, d: u32) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let m = m as i64;
    let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + d as i64 - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// The proleptic Gregorian date of a day count since 1970-01-01.
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (if m <= 2 { y + 1 } else { y }, m, d)
}

impl FromStr for Interval {
    type Err = IntervalError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let invalid = || IntervalError::Invalid(crate::error::echo(s));
        let t = s.trim();
        let digits_end = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
        let (num, suffix) = t.split_at(digits_end);
        if num.len() > 6 {
            return Err(invalid());
        }
        let count: Option<u32> = if num.is_empty() {
            None
        } else {
            Some(num.parse().map_err(|_| invalid())?)
        };
        let (unit, factor) = match suffix {
            "" => (IntervalUnit::Minute, 1),
            "m" | "min" | "MIN" | "Min" | "T" => (IntervalUnit::Minute, 1),
            "s" | "S" => (IntervalUnit::Second, 1),
            "h" | "H" => (IntervalUnit::Minute, 60),
            "d" | "D" => (IntervalUnit::Day, 1),
            "w" | "W" => (IntervalUnit::Week, 1),
            "M" => (IntervalUnit::Month, 1),
            _ => return Err(invalid()),
        };
        let count = match (count, suffix) {
            (Some(c), _) => c,
            // `D`, `W`, `M` alone mean one of them, as the TradingView UI writes them.
            (None, "d" | "D" | "w" | "W" | "M") => 1,
            (None, _) => return Err(invalid()),
        };
        let total = u64::from(count) * factor;
        let max = Self::max_count(unit);
        if total == 0 || total > u64::from(max) {
            return Err(IntervalError::OutOfRange {
                unit,
                count: total,
                max,
            });
        }
        Ok(Self {
            unit,
            count: total as u32,
        })
    }
}

impl TryFrom<&str> for Interval {
    type Error = IntervalError;

    fn try_from(s: &str) -> Result<Self, Self::Error> {
        s.parse()
    }
}

impl TryFrom<&String> for Interval {
    type Error = IntervalError;

    fn try_from(s: &String) -> Result<Self, Self::Error> {
        s.parse()
    }
}

impl TryFrom<String> for Interval {
    type Error = IntervalError;

    fn try_from(s: String) -> Result<Self, Self::Error> {
        s.parse()
    }
}

impl fmt::Display for Interval {
    /// The resolution string the server expects (`"60"`, `"1D"`, `"15S"`, …).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.unit {
            IntervalUnit::Second => write!(f, "{}S", self.count),
            IntervalUnit::Minute => write!(f, "{}", self.count),
            IntervalUnit::Day => write!(f, "{}D", self.count),
            IntervalUnit::Week => write!(f, "{}W", self.count),
            IntervalUnit::Month => write!(f, "{}M", self.count),
        }
    }
}

impl fmt::Debug for Interval {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Interval({self})")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_tradingview_resolution_parses_and_writes_as_the_server_expects() {
        let cases = [
            ("1S", "1S"),
            ("5S", "5S"),
            ("10S", "10S"),
            ("15S", "15S"),
            ("30S", "30S"),
            ("1", "1"),
            ("3", "3"),
            ("5", "5"),
            ("15", "15"),
            ("30", "30"),
            ("45", "45"),
            ("60", "60"),
            ("120", "120"),
            ("180", "180"),
            ("240", "240"),
            ("20", "20"),
            ("188", "188"),
            ("1H", "60"),
            ("2H", "120"),
            ("3H", "180"),
            ("4h", "240"),
            ("1D", "1D"),
            ("D", "1D"),
            ("1W", "1W"),
            ("W", "1W"),
            ("1M", "1M"),
            ("M", "1M"),
            ("3M", "3M"),
            ("6M", "6M"),
            ("12M", "12M"),
            ("5m", "5"),
            ("15min", "15"),
            (" 1d ", "1D"),
        ];
        for (input, wire) in cases {
            let i: Interval = input.parse().unwrap_or_else(|e| panic!("{input}: {e}"));
            assert_eq!(i.to_string(), wire, "{input}");
            // What we write parses back to the same interval.
            assert_eq!(wire.parse::<Interval>().unwrap(), i, "{wire}");
        }
    }

    #[test]
    fn bad_intervals_are_typed_errors() {
        for bad in [
            "", "XX", "1X", "H", "S", "m", "-1", "1.5", "99999999", "1 D",
        ] {
            assert!(
                matches!(bad.parse::<Interval>(), Err(IntervalError::Invalid(_))),
                "{bad:?}"
            );
        }
        for bad in ["0", "0S", "60S", "25H", "1441", "13M", "0D"] {
            assert!(
                matches!(
                    bad.parse::<Interval>(),
                    Err(IntervalError::OutOfRange { .. })
                ),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn standard_resolutions_are_flagged() {
        assert!("1S".parse::<Interval>().unwrap().is_standard());
        assert!("4H".parse::<Interval>().unwrap().is_standard());
        assert!(!"20".parse::<Interval>().unwrap().is_standard());
        assert!(!"2D".parse::<Interval>().unwrap().is_standard());
        assert!(!"7S".parse::<Interval>().unwrap().is_standard());
    }

    #[test]
    fn fixed_length_bar_boundaries() {
        let m1: Interval = "1".parse().unwrap();
        // The real new-bar frame: the 1751833020 bar closes at 1751833080.
        assert_eq!(m1.bar_open(1_751_833_079), 1_751_833_020);
        assert_eq!(m1.next_bar_open(1_751_833_020), 1_751_833_080);
        let s5: Interval = "5S".parse().unwrap();
        assert_eq!(s5.bar_open(12), 10);
        assert_eq!(s5.bar_open(-3), -5);
        let d: Interval = "1D".parse().unwrap();
        assert_eq!(d.bar_open(1_751_833_079), 1_751_760_000);
        let w: Interval = "1W".parse().unwrap();
        // 2025-07-06 is a Sunday; its week opened Monday 2025-06-30.
        assert_eq!(w.bar_open(1_751_833_079), 1_751_241_600);
        assert_eq!(w.next_bar_open(1_751_833_079), 1_751_846_400);
    }

    #[test]
    fn month_boundaries_follow_the_calendar() {
        let m: Interval = "1M".parse().unwrap();
        // 2024-02-29 12:00 UTC → 2024-02-01, next 2024-03-01.
        assert_eq!(m.bar_open(1_709_208_000), 1_706_745_600);
        assert_eq!(m.next_bar_open(1_709_208_000), 1_709_251_200);
        let q: Interval = "3M".parse().unwrap();
        // 2025-05-15 → quarter opened 2025-04-01, next 2025-07-01.
        assert_eq!(q.bar_open(1_747_267_200), 1_743_465_600);
        assert_eq!(q.next_bar_open(1_747_267_200), 1_751_328_000);
        for day in [-800_000i64, -1, 0, 1, 19_000, 2_000_000] {
            let (y, mo, d) = civil_from_days(day);
            assert_eq!(days_from_civil(y, mo, d), day);
        }
    }

    #[test]
    fn symbols_validate_and_normalise() {
        let s: Symbol = "nasdaq:aapl".parse().unwrap();
        assert_eq!(s.as_str(), "NASDAQ:AAPL");
        assert_eq!(s.continuous_contract(), None);
        let f = Symbol::continuous("MCX", "CRUDEOIL", 1).unwrap();
        assert_eq!(f.as_str(), "MCX:CRUDEOIL1!");
        assert_eq!(f.continuous_contract(), Some(1));
        assert_eq!(
            Symbol::continuous("NYMEX", "CL", 2).unwrap().as_str(),
            "NYMEX:CL2!"
        );
        assert!(matches!(
            Symbol::continuous("NYMEX", "CL", 0),
            Err(SymbolError::InvalidContract(0))
        ));
        assert!(matches!(
            "AAPL".parse::<Symbol>(),
            Err(SymbolError::MissingExchange(_))
        ));
        assert!(matches!(
            ":AAPL".parse::<Symbol>(),
            Err(SymbolError::InvalidExchange(_))
        ));
        assert!(matches!(
            "NASDAQ:".parse::<Symbol>(),
            Err(SymbolError::InvalidTicker(_))
        ));
        assert!(matches!(
            "NAS DAQ:X".parse::<Symbol>(),
            Err(SymbolError::InvalidExchange(_))
        ));
        assert!(matches!(
            "A:B\"C".parse::<Symbol>(),
            Err(SymbolError::InvalidTicker(_))
        ));
        assert!(matches!(
            "A:B:C".parse::<Symbol>(),
            Err(SymbolError::InvalidTicker(_))
        ));
        assert_eq!("NYSE:BRK.B".parse::<Symbol>().unwrap().ticker(), "BRK.B");
    }
}
