//! The JetStream stream: its settings, created or checked at start, and the connection.

use std::{
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    time::Duration,
};

use async_nats::jetstream::{
    self, ErrorCode,
    context::GetStreamErrorKind,
    stream::{Config, RetentionPolicy, StorageType},
};

use crate::{Error, error::redact, subject::DEFAULT_PREFIX};

/// The shortest duplicate window accepted: two minutes. Two publishers of a pair store a close
/// once only when the second copy arrives inside the window.
pub const MIN_DUPLICATE_WINDOW: Duration = Duration::from_secs(120);

/// The stream's settings, created with these when it does not exist and checked against them
/// when it does. By-value setters; every default is documented.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct StreamSettings {
    /// The stream's name. Default `TVDATAFEED`.
    pub name: String,
    /// The subject prefix: bars go to `<prefix>.bars.…`, connection events to
    /// `<prefix>.status.…`. Default `tvdatafeed`.
    pub prefix: String,
    /// The `Nats-Msg-Id` duplicate window. Default 2 minutes, the least accepted
    /// ([`MIN_DUPLICATE_WINDOW`]); an existing stream with a shorter one is refused.
    pub duplicate_window: Duration,
    /// How long messages are kept (retention by limits). Default 7 days.
    pub max_age: Duration,
    /// The most bytes kept, oldest dropped first. Default 0: no limit but `max_age`.
    pub max_bytes: i64,
    /// File storage (the default) or memory.
    pub memory: bool,
    /// Replicas (in a cluster). Default 1.
    pub replicas: usize,
}

impl Default for StreamSettings {
    fn default() -> Self {
        Self {
            name: "TVDATAFEED".into(),
            prefix: DEFAULT_PREFIX.into(),
            duplicate_window: MIN_DUPLICATE_WINDOW,
            max_age: Duration::from_secs(7 * 24 * 3600),
            max_bytes: 0,
            memory: false,
            replicas: 1,
        }
    }
}

impl StreamSettings {
    /// Sets [`StreamSettings::name`].
    #[must_use]
    pub fn name(mut self, name: impl Into<String>) -> Self {
        self.name = name.into();
        self
    }
    /// Sets [`StreamSettings::prefix`].
    #[must_use]
    pub fn prefix(mut self, prefix: impl Into<String>) -> Self {
        self.prefix = prefix.into();
        self
    }
    /// Sets [`StreamSettings::duplicate_window`].
    #[must_use]
    pub fn duplicate_window(mut self, d: Duration) -> Self {
        self.duplicate_window = d;
        self
    }
    /// Sets [`StreamSettings::max_age`].
    #[must_use]
    pub fn max_age(mut self, d: Duration) -> Self {
        self.max_age = d;
        self
    }

    /// The subjects the stream must hold.
    pub fn subjects(&self) -> Vec<String> {
        vec![
            format!("{}.bars.>", self.prefix),
            format!("{}.status.>", self.prefix),
        ]
    }

    fn config(&self) -> Config {
        Config {
            name: self.name.clone(),
            subjects: self.subjects(),
            retention: RetentionPolicy::Limits,
            storage: if self.memory {
                StorageType::Memory
            } else {
                StorageType::File
            },
            duplicate_window: self.duplicate_window,
            max_age: self.max_age,
            max_bytes: if self.max_bytes > 0 {
                self.max_bytes
            } else {
                -1
            },
            num_replicas: self.replicas,
            description: Some("tvdatafeed closed bars".into()),
            ..Default::default()
        }
    }
}

/// How to reach NATS. The URL may hold credentials (`nats://user:pass@host:4222`): this crate
/// never logs them nor shows them in an error. async-nats itself logs each connection attempt
/// at `debug` with the URL, password included: cap its target (`async_nats=info`) in any
/// subscriber that shows debug events (the `tvdatafeed` CLI does).
#[derive(Clone)]
#[non_exhaustive]
pub struct NatsConfig {
    /// One URL, or several separated by commas.
    pub url: String,
    /// How long the first connection (and each JetStream request at start) may take.
    /// Default 5 s.
    pub connect_timeout: Duration,
    /// How long a publish waits for its acknowledgement before it is retried. Default 5 s.
    pub ack_timeout: Duration,
}

impl std::fmt::Debug for NatsConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NatsConfig")
            .field("url", &redact(&self.url))
            .field("connect_timeout", &self.connect_timeout)
            .field("ack_timeout", &self.ack_timeout)
            .finish()
    }
}

impl NatsConfig {
    /// `url` with every default.
    pub fn new(url: impl Into<String>) -> Self {
        Self {
            url: url.into(),
            connect_timeout: Duration::from_secs(5),
            ack_timeout: Duration::from_secs(5),
        }
    }
    /// Sets [`NatsConfig::connect_timeout`].
    #[must_use]
    pub fn connect_timeout(mut self, d: Duration) -> Self {
        self.connect_timeout = d;
        self
    }
    /// Sets [`NatsConfig::ack_timeout`].
    #[must_use]
    pub fn ack_timeout(mut self, d: Duration) -> Self {
        self.ack_timeout = d;
        self
    }
}

/// Connection events, counted by the client's event callback.
#[derive(Debug, Default)]
pub(crate) struct LinkCounters {
    pub(crate) reconnects: AtomicU64,
    pub(crate) down: AtomicBool,
}

/// Connects (bounded by the connect timeout), reconnecting for ever afterwards with a backoff
/// from 50 ms up to 2 s.
pub(crate) async fn connect(
    cfg: &NatsConfig,
    link: Arc<LinkCounters>,
) -> Result<async_nats::Client, Error> {
    let url = redact(&cfg.url);
    let opts = async_nats::ConnectOptions::new()
        .connection_timeout(cfg.connect_timeout)
        .request_timeout(Some(cfg.connect_timeout))
        .max_reconnects(None)
        .reconnect_delay_callback(|attempts| {
            let shift = u32::try_from(attempts.min(6)).unwrap_or(6);
            Duration::from_millis(50 << shift).min(Duration::from_secs(2))
        })
        .event_callback(move |event| {
            let link = Arc::clone(&link);
            async move {
                match event {
                    async_nats::Event::Disconnected => {
                        // Relaxed: a flag and a counter read for metrics, ordering nothing.
                        link.down.store(true, Ordering::Relaxed);
                        tracing::warn!("NATS connection lost; reconnecting");
                    }
                    async_nats::Event::Connected => {
                        if link.down.swap(false, Ordering::Relaxed) {
                            link.reconnects.fetch_add(1, Ordering::Relaxed);
                            tracing::info!("NATS connection back");
                        }
                    }
                    other => tracing::debug!(event = %other, "NATS event"),
                }
            }
        });
    let attempt = tokio::time::timeout(cfg.connect_timeout, opts.connect(cfg.url.as_str())).await;
    match attempt {
        Err(_) => Err(Error::Connect {
            url,
            reason: format!("no answer within {:?}", cfg.connect_timeout),
        }),
        Ok(Err(e)) => {
            let reason = e.to_string();
            if matches!(e.kind(), async_nats::ConnectErrorKind::ServerParse) {
                Err(Error::BadUrl { url, reason })
            } else {
                Err(Error::Connect { url, reason })
            }
        }
        Ok(Ok(client)) => Ok(client),
    }
}

/// Creates the stream, or checks an existing one: its subjects must cover ours and its
/// duplicate window must be at least the one asked for.
pub(crate) async fn ensure_stream(
    js: &jetstream::Context,
    settings: &StreamSettings,
    url: &str,
    timeout: Duration,
) -> Result<(), Error> {
    if settings.duplicate_window < MIN_DUPLICATE_WINDOW {
        return Err(Error::StreamConflict {
            stream: settings.name.clone(),
            reason: format!(
                "a duplicate window of {:?} is asked for; at least {MIN_DUPLICATE_WINDOW:?} is needed",
                settings.duplicate_window
            ),
        });
    }
    let js_err = |reason: String| Error::JetStream {
        url: redact(url),
        reason,
    };
    let timed_out = || js_err(format!("no answer within {timeout:?}"));
    let got = tokio::time::timeout(timeout, js.get_stream(&settings.name))
        .await
        .map_err(|_| timed_out())?;
    match got {
        Ok(mut stream) => {
            let info = tokio::time::timeout(timeout, stream.info())
                .await
                .map_err(|_| timed_out())?
                .map_err(|e| js_err(e.to_string()))?;
            check(&info.config, settings)
        }
        Err(e) => match e.kind() {
            GetStreamErrorKind::JetStream(j) if j.error_code() == ErrorCode::STREAM_NOT_FOUND => {
                tokio::time::timeout(timeout, js.create_stream(settings.config()))
                    .await
                    .map_err(|_| timed_out())?
                    .map_err(|e| js_err(format!("creating stream {}: {e}", settings.name)))?;
                tracing::info!(stream = %settings.name, "stream created");
                Ok(())
            }
            _ => Err(js_err(e.to_string())),
        },
    }
}

fn check(have: &Config, want: &StreamSettings) -> Result<(), Error> {
    let conflict = |reason: String| Error::StreamConflict {
        stream: want.name.clone(),
        reason,
    };
    for subject in want.subjects() {
        if !have.subjects.iter().any(|f| covers(f, &subject)) {
            return Err(conflict(format!(
                "its subjects {:?} do not hold {subject}",
                have.subjects
            )));
        }
    }
    if have.duplicate_window < want.duplicate_window {
        return Err(conflict(format!(
            "its duplicate window is {:?}, under the {:?} needed",
            have.duplicate_window, want.duplicate_window
        )));
    }
    Ok(())
}

/// Whether the subject filter `filter` matches every subject `pattern` matches.
fn covers(filter: &str, pattern: &str) -> bool {
    let (mut f, mut p) = (filter.split('.'), pattern.split('.'));
    loop {
        match (f.next(), p.next()) {
            (Some(">"), Some(_)) => return true,
            (Some(a), Some(b)) if a == b || (a == "*" && b != ">") => {}
            (None, None) => return true,
            _ => return false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::covers;

    #[test]
    fn subject_cover() {
        assert!(covers(">", "tvdatafeed.bars.>"));
        assert!(covers("tvdatafeed.>", "tvdatafeed.bars.>"));
        assert!(covers("tvdatafeed.bars.>", "tvdatafeed.bars.>"));
        assert!(covers("tvdatafeed.*.>", "tvdatafeed.bars.>"));
        assert!(!covers("tvdatafeed.bars.*", "tvdatafeed.bars.>"));
        assert!(!covers("tvdatafeed.status.>", "tvdatafeed.bars.>"));
        assert!(!covers("other.>", "tvdatafeed.bars.>"));
    }
}
