//! The crate's one error type.

use std::time::Duration;

/// What went wrong talking to NATS. `Display` never shows credentials: a URL is shown
/// without its user information.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The NATS URL is malformed. Fatal: fix the URL.
    #[error("bad NATS URL {url}: {reason}")]
    BadUrl {
        /// The URL, credentials removed.
        url: String,
        /// Why.
        reason: String,
    },
    /// No NATS server answered at the URL within the connect timeout. Fatal at start: check
    /// the address and that the server runs.
    #[error("cannot connect to NATS at {url}: {reason}")]
    Connect {
        /// The URL, credentials removed.
        url: String,
        /// Why.
        reason: String,
    },
    /// The server has no JetStream (started without `-js`), or it did not answer a JetStream
    /// request. Fatal at start.
    #[error("JetStream at {url}: {reason}")]
    JetStream {
        /// The URL, credentials removed.
        url: String,
        /// Why.
        reason: String,
    },
    /// The stream exists with settings that conflict with what publishing needs (its
    /// subjects do not cover ours, or its duplicate window is shorter than asked). Fatal:
    /// change the stream (`nats stream edit`) or publish to another with `--stream`.
    #[error("stream {stream} conflicts: {reason}")]
    StreamConflict {
        /// The stream's name.
        stream: String,
        /// What conflicts.
        reason: String,
    },
    /// The stream does not exist (reading back).
    #[error("stream {stream} not found")]
    NoStream {
        /// The stream's name.
        stream: String,
    },
    /// A bounded wait ended.
    #[error("{what} timed out after {after:?}")]
    Timeout {
        /// What was waited for.
        what: String,
        /// How long.
        after: Duration,
    },
    /// A read-back consumer failed.
    #[error("reading stream {stream}: {reason}")]
    Read {
        /// The stream's name.
        stream: String,
        /// Why.
        reason: String,
    },
    /// The engine refused to attach a consumer to a seis.
    #[error("subscribing {seis}: {source}")]
    Feed {
        /// `SYMBOL INTERVAL`.
        seis: String,
        /// The engine's error.
        source: tvdatafeed::Error,
    },
    /// The publisher already stopped (or its runtime ended).
    #[error("publisher stopped")]
    Stopped,
    /// A runtime or thread could not start.
    #[error("cannot start {what}: {reason}")]
    Spawn {
        /// What.
        what: String,
        /// Why.
        reason: String,
    },
}

/// `url` without user information (`nats://user:pass@host` → `nats://***@host`), for errors
/// and logs.
pub(crate) fn redact(url: &str) -> String {
    let mut out = Vec::new();
    for part in url.split(',') {
        let part = part.trim();
        let (scheme, rest) = part.split_once("://").map_or(("", part), |(s, r)| (s, r));
        let rest = match rest.rsplit_once('@') {
            Some((_, host)) => format!("***@{host}"),
            None => rest.to_owned(),
        };
        out.push(if scheme.is_empty() {
            rest
        } else {
            format!("{scheme}://{rest}")
        });
    }
    out.join(",")
}

#[cfg(test)]
mod tests {
    #[test]
    fn credentials_are_redacted() {
        assert_eq!(
            super::redact("nats://bob:s3cret@10.0.0.1:4222"),
            "nats://***@10.0.0.1:4222"
        );
        assert_eq!(
            super::redact("tok@host:1,nats://h2"),
            "***@host:1,nats://h2"
        );
        assert_eq!(
            super::redact("nats://127.0.0.1:4222"),
            "nats://127.0.0.1:4222"
        );
    }
}
