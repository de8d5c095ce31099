//! Websocket endpoints: `ws://` or `wss://`, host, port, path and query.
#![forbid(unsafe_code)]

use std::{fmt, str::FromStr};

/// A websocket endpoint.
///
/// # Examples
///
/// ```
/// use tvdatafeed::Endpoint;
///
/// let e: Endpoint = "ws://127.0.0.1:8080/socket.io/websocket?type=chart".parse()?;
/// assert!(!e.is_tls());
/// assert_eq!((e.host(), e.port()), ("127.0.0.1", 8080));
/// assert_eq!(Endpoint::data().to_string(), "wss://data.tradingview.com/socket.io/websocket?from=chart&type=chart");
/// # Ok::<(), tvdatafeed::EndpointError>(())
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Endpoint {
    tls: bool,
    host: String,
    port: u16,
    path: String,
}

/// Why a string is not a websocket endpoint.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum EndpointError {
    /// Not `ws://` or `wss://`. Holds the input, cut to 80 characters.
    #[error("endpoint {0:?} is not a ws:// or wss:// url")]
    Scheme(String),
    /// The host or port is missing or invalid. Holds the input, cut to 80 characters.
    #[error("endpoint {0:?} has no valid host and port")]
    Authority(String),
}

impl Endpoint {
    /// `wss://data.tradingview.com/…`: anonymous and free accounts.
    pub fn data() -> Self {
        Self::tradingview("data")
    }

    /// `wss://prodata.tradingview.com/…`: paid accounts (history up to the plan's depth).
    pub fn prodata() -> Self {
        Self::tradingview("prodata")
    }

    fn tradingview(sub: &str) -> Self {
        Self {
            tls: true,
            host: format!("{sub}.tradingview.com"),
            port: 443,
            path: "/socket.io/websocket?from=chart&type=chart".to_owned(),
        }
    }

    /// Whether the endpoint uses TLS (`wss`).
    pub fn is_tls(&self) -> bool {
        self.tls
    }

    /// Host name or address.
    pub fn host(&self) -> &str {
        &self.host
    }

    /// Port.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Path and query.
    pub fn path(&self) -> &str {
        &self.path
    }
}

impl FromStr for Endpoint {
    type Err = EndpointError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let (tls, rest) = if let Some(r) = s.strip_prefix("wss://") {
            (true, r)
        } else if let Some(r) = s.strip_prefix("ws://") {
            (false, r)
        } else {
            return Err(EndpointError::Scheme(crate::vocab::echo(s)));
        };
        let (authority, path) = match rest.find(['/', '?']) {
            Some(i) => (&rest[..i], &rest[i..]),
            None => (rest, "/"),
        };
        let bad = || EndpointError::Authority(crate::vocab::echo(s));
        let (host, port) = if let Some(v6) = authority.strip_prefix('[') {
            let (h, after) = v6.split_once(']').ok_or_else(bad)?;
            let port = match after.strip_prefix(':') {
                Some(p) => p.parse().map_err(|_| bad())?,
                None if after.is_empty() => default_port(tls),
                None => return Err(bad()),
            };
            (h.to_owned(), port)
        } else {
            match authority.rsplit_once(':') {
                Some((h, p)) => (h.to_owned(), p.parse().map_err(|_| bad())?),
                None => (authority.to_owned(), default_port(tls)),
            }
        };
        if host.is_empty() || host.contains(|c: char| c.is_whitespace() || c == '@') {
            return Err(bad());
        }
        let path = if path.starts_with('?') {
            format!("/{path}")
        } else {
            path.to_owned()
        };
        Ok(Self {
            tls,
            host,
            port,
            path,
        })
    }
}

impl TryFrom<&str> for Endpoint {
    type Error = EndpointError;

    fn try_from(s: &str) -> Result<Self, Self::Error> {
        s.parse()
    }
}

impl TryFrom<String> for Endpoint {
    type Error = EndpointError;

    fn try_from(s: String) -> Result<Self, Self::Error> {
        s.parse()
    }
}

impl TryFrom<&String> for Endpoint {
    type Error = EndpointError;

    fn try_from(s: &String) -> Result<Self, Self::Error> {
        s.parse()
    }
}

fn default_port(tls: bool) -> u16 {
    if tls { 443 } else { 80 }
}

impl fmt::Display for Endpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let scheme = if self.tls { "wss" } else { "ws" };
        let host = if self.host.contains(':') {
            format!("[{}]", self.host)
        } else {
            self.host.clone()
        };
        if self.port == default_port(self.tls) {
            write!(f, "{scheme}://{host}{}", self.path)
        } else {
            write!(f, "{scheme}://{host}:{}{}", self.port, self.path)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoints_parse_and_print() {
        for (s, tls, host, port, path) in [
            (
                "wss://data.tradingview.com/socket.io/websocket",
                true,
                "data.tradingview.com",
                443,
                "/socket.io/websocket",
            ),
            (
                "ws://127.0.0.1:9/socket.io/websocket?a=b",
                false,
                "127.0.0.1",
                9,
                "/socket.io/websocket?a=b",
            ),
            ("ws://localhost", false, "localhost", 80, "/"),
            ("ws://[::1]:7/x", false, "::1", 7, "/x"),
            ("wss://h?q", true, "h", 443, "/?q"),
        ] {
            let e: Endpoint = s.parse().unwrap();
            assert_eq!(
                (e.is_tls(), e.host(), e.port(), e.path()),
                (tls, host, port, path),
                "{s}"
            );
            assert_eq!(e.to_string().parse::<Endpoint>().unwrap(), e);
        }
        for bad in [
            "http://x",
            "ws://",
            "ws://:80/",
            "ws://h:port/",
            "ws://[::1/",
            "wss://a b/",
        ] {
            assert!(bad.parse::<Endpoint>().is_err(), "{bad}");
        }
    }
}
