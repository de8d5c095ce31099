//! The words every layer's errors share, so that each layer depends on none above it: the
//! step a call was in ([`Phase`]), a duration as a person reads it ([`HumanDuration`]), and
//! user or server input cut short for a message ([`echo`]). The transport's errors use them,
//! and so does the crate's [`Error`](crate::Error), which wraps the transport's.

use std::{fmt, time::Duration};

/// The longest piece of user or server input an error message repeats; longer input is cut
/// with an ellipsis, so that a 10 KB symbol does not become a 10 KB error line.
pub(crate) const MAX_ECHO: usize = 80;

/// `s`, cut to at most `MAX_ECHO` (80) characters with `…` when longer (the command line cuts
/// what it echoes with this too, through `internal::echo`).
pub fn echo(s: &str) -> String {
    match s.char_indices().nth(MAX_ECHO) {
        None => s.to_owned(),
        Some((at, _)) => format!("{}…", &s[..at]),
    }
}

/// A [`Duration`] as a person reads it: `250 ms`, `1.0 s`, `10 s`, `2.5 min`, never
/// `1.000843207s`. Every message of this crate (and of the command line) that names a
/// duration prints it through this.
///
/// Whole values print without a fraction (`10 s`); others keep one decimal below ten units
/// (`1.0 s`, `1.5 ms`) and are rounded above (`42 s`). Units: µs, ms, s, min (from 2 min),
/// h (from 2 h).
///
/// # Examples
///
/// ```
/// use std::time::Duration;
/// use tvdatafeed::HumanDuration;
///
/// assert_eq!(HumanDuration(Duration::from_nanos(1_000_843_207)).to_string(), "1.0 s");
/// assert_eq!(HumanDuration(Duration::from_secs(10)).to_string(), "10 s");
/// assert_eq!(HumanDuration(Duration::from_millis(250)).to_string(), "250 ms");
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HumanDuration(pub Duration);

impl fmt::Display for HumanDuration {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let d = self.0;
        if d.is_zero() {
            return f.write_str("0 s");
        }
        // The unit and its length in nanoseconds.
        let (unit, per): (&str, u128) = if d < Duration::from_millis(1) {
            ("µs", 1_000)
        } else if d < Duration::from_secs(1) {
            ("ms", 1_000_000)
        } else if d < Duration::from_secs(120) {
            ("s", 1_000_000_000)
        } else if d < Duration::from_secs(7_200) {
            ("min", 60_000_000_000)
        } else {
            ("h", 3_600_000_000_000)
        };
        let nanos = d.as_nanos();
        if nanos.is_multiple_of(per) {
            return write!(f, "{} {unit}", nanos / per);
        }
        #[expect(
            clippy::cast_precision_loss,
            reason = "a display value: f64's 52 bits are far more than the digits printed"
        )]
        let value = nanos as f64 / per as f64;
        if value < 10.0 {
            write!(f, "{value:.1} {unit}")
        } else {
            write!(f, "{value:.0} {unit}")
        }
    }
}

/// The step a call was in when its deadline passed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Phase {
    /// Opening the TCP connection.
    Connect,
    /// The TLS handshake.
    Tls,
    /// The websocket upgrade.
    Upgrade,
    /// Waiting for the server's answer (history pages, a live engine command's reply).
    Answer,
    /// An HTTPS request (sign-in, search).
    Http,
}

impl fmt::Display for Phase {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Connect => "connecting",
            Self::Tls => "the tls handshake",
            Self::Upgrade => "the websocket upgrade",
            Self::Answer => "waiting for the answer",
            Self::Http => "the https request",
        })
    }
}
