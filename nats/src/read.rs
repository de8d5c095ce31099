//! [`BarStream`]: a seis' bars read back from the stream, on any host.

use std::{sync::Arc, time::Duration};

use async_nats::jetstream::{
    self,
    consumer::{DeliverPolicy, pull::OrderedConfig},
};
use futures_util::StreamExt;
use tokio::sync::mpsc;
use tvdatafeed::{Interval, Symbol};

use crate::{
    BarMessage, Error,
    error::redact,
    stream::{LinkCounters, NatsConfig, connect},
    subject::{bar_subject, parse_subject},
};

/// Where a [`BarStream`] starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StartAt {
    /// Everything the stream holds.
    All,
    /// Bars whose open time is at or after this (UTC seconds), then every new one.
    Since(i64),
    /// The last message of each seis, then every new one.
    Latest,
    /// Only messages stored from now on (what `tvdatafeed live` prints from TradingView).
    New,
}

/// A bar read from the stream.
#[derive(Debug, Clone, PartialEq)]
pub struct StreamBar {
    /// The bar, its seis, and whether it is a close or a revision.
    pub message: BarMessage,
    /// Its sequence number in the stream.
    pub sequence: u64,
}

/// The bars of some seises, read from JetStream: an iterator that ends after
/// [`BarStream::idle`] without a message (or call [`BarStream::recv_timeout`]).
///
/// Each seis' bars come in the order they were stored (ascending by time for closes); the
/// seises are interleaved as they arrive. It runs its own small runtime (one worker thread)
/// and reconnects by itself. Its methods block (each bounded): call them from plain threads,
/// not from inside an async runtime.
pub struct BarStream {
    runtime: Option<tokio::runtime::Runtime>,
    rx: mpsc::Receiver<Result<StreamBar, Error>>,
    idle: Duration,
    _client: async_nats::Client,
    /// The connection's state, kept by its event callback.
    link: Arc<LinkCounters>,
}

/// The NATS connection as a [`BarStream`] sees it ([`BarStream::link`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct LinkStatus {
    /// Whether the connection is up (bars stored meanwhile come once it is back: the
    /// stream's consumers resume where they were).
    pub connected: bool,
    /// Connections lost and made again since the stream opened.
    pub reconnects: u64,
}

impl std::fmt::Debug for BarStream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BarStream")
            .field("idle", &self.idle)
            .finish_non_exhaustive()
    }
}

fn runtime() -> Result<tokio::runtime::Runtime, Error> {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .thread_name("tv-nats-read")
        .enable_all()
        .build()
        .map_err(|e| Error::Spawn {
            what: "the tv-nats-read runtime".into(),
            reason: e.to_string(),
        })
}

/// Ordered consumers on `filters` of `stream`, merged into one channel of raw messages.
async fn open_raw(
    cfg: &NatsConfig,
    stream: &str,
    filters: Vec<String>,
    deliver: DeliverPolicy,
    capacity: usize,
    link: Arc<LinkCounters>,
) -> Result<
    (
        async_nats::Client,
        mpsc::Receiver<Result<(String, bytes::Bytes, u64), Error>>,
    ),
    Error,
> {
    let client = connect(cfg, link).await?;
    let js = jetstream::new(client.clone());
    let t = cfg.connect_timeout;
    let timed_out = || Error::Timeout {
        what: format!("opening stream {stream}"),
        after: t,
    };
    let s = tokio::time::timeout(t, js.get_stream(stream))
        .await
        .map_err(|_| timed_out())?
        .map_err(|e| {
            if e.to_string().contains("not found") {
                Error::NoStream {
                    stream: stream.into(),
                }
            } else {
                Error::JetStream {
                    url: redact(&cfg.url),
                    reason: e.to_string(),
                }
            }
        })?;
    let (tx, rx) = mpsc::channel(capacity);
    for filter in filters {
        let consumer = tokio::time::timeout(
            t,
            s.create_consumer(OrderedConfig {
                filter_subject: filter.clone(),
                deliver_policy: deliver,
                ..Default::default()
            }),
        )
        .await
        .map_err(|_| timed_out())?
        .map_err(|e| Error::Read {
            stream: stream.into(),
            reason: e.to_string(),
        })?;
        let mut messages = tokio::time::timeout(t, consumer.messages())
            .await
            .map_err(|_| timed_out())?
            .map_err(|e| Error::Read {
                stream: stream.into(),
                reason: e.to_string(),
            })?;
        let (tx, stream) = (tx.clone(), stream.to_owned());
        tokio::spawn(async move {
            while let Some(m) = messages.next().await {
                let item = match m {
                    Ok(m) => {
                        let seq = m.info().map_or(0, |i| i.stream_sequence);
                        Ok((m.subject.to_string(), m.payload.clone(), seq))
                    }
                    Err(e) => Err(Error::Read {
                        stream: stream.clone(),
                        reason: e.to_string(),
                    }),
                };
                if tx.send(item).await.is_err() {
                    break;
                }
            }
        });
    }
    Ok((client, rx))
}

impl BarStream {
    /// Reads `seises`' bars from `stream` (subjects under `prefix`), starting at `start`.
    /// Connecting and opening a consumer per seis are each bounded by
    /// [`NatsConfig::connect_timeout`].
    ///
    /// # Errors
    ///
    /// [`Error::BadUrl`], [`Error::Connect`], [`Error::NoStream`], [`Error::JetStream`],
    /// [`Error::Read`], [`Error::Timeout`], [`Error::Spawn`].
    pub fn open(
        cfg: &NatsConfig,
        stream: &str,
        prefix: &str,
        seises: &[(Symbol, Interval)],
        start: StartAt,
    ) -> Result<Self, Error> {
        let rt = runtime()?;
        let deliver = match start {
            StartAt::All => DeliverPolicy::All,
            StartAt::Latest => DeliverPolicy::LastPerSubject,
            StartAt::New => DeliverPolicy::New,
            // A bar is stored after it closes, so every bar open at or after `t` was stored
            // at or after `t`: start there and drop the earlier bars stored later (gap fills).
            StartAt::Since(t) => DeliverPolicy::ByStartTime {
                start_time: async_nats::datetime::from_nanos(i128::from(t) * 1_000_000_000)
                    .map_err(|e| Error::Read {
                        stream: stream.into(),
                        reason: format!("start time {t}: {e}"),
                    })?,
            },
        };
        let filters = seises
            .iter()
            .map(|(s, i)| bar_subject(prefix, s, *i))
            .collect();
        let link = Arc::new(LinkCounters::default());
        let opened = rt.block_on(open_raw(
            cfg,
            stream,
            filters,
            deliver,
            4096,
            Arc::clone(&link),
        ));
        let (client, mut raw) = match opened {
            Ok(x) => x,
            Err(e) => {
                rt.shutdown_timeout(Duration::from_secs(1));
                return Err(e);
            }
        };
        let (tx, rx) = mpsc::channel(4096);
        let stream_name = stream.to_owned();
        rt.spawn(async move {
            while let Some(item) = raw.recv().await {
                let out = item.and_then(|(subject, payload, sequence)| {
                    let message = BarMessage::from_json(&payload).ok_or_else(|| Error::Read {
                        stream: stream_name.clone(),
                        reason: format!("a message on {subject} is not a bar"),
                    })?;
                    Ok(StreamBar { message, sequence })
                });
                if let (Ok(b), StartAt::Since(t)) = (&out, start)
                    && b.message.bar.time < t
                {
                    continue;
                }
                if tx.send(out).await.is_err() {
                    break;
                }
            }
        });
        Ok(Self {
            runtime: Some(rt),
            rx,
            idle: Duration::from_secs(60),
            _client: client,
            link,
        })
    }

    /// The NATS connection: up or not, and how often it came back. Cheap (two atomic loads):
    /// poll it to report an outage, as `tvdatafeed live --nats` does on stderr.
    pub fn link(&self) -> LinkStatus {
        // Relaxed: two independent readings for a report, ordering nothing else.
        LinkStatus {
            connected: !self.link.down.load(std::sync::atomic::Ordering::Relaxed),
            reconnects: self
                .link
                .reconnects
                .load(std::sync::atomic::Ordering::Relaxed),
        }
    }

    /// How long the iterator waits for a message before it ends. Default 60 s.
    #[must_use]
    pub fn idle(mut self, d: Duration) -> Self {
        self.idle = d;
        self
    }

    /// The next bar, waiting up to `timeout`: `Ok(None)` when none came.
    ///
    /// # Errors
    ///
    /// [`Error::Read`] when a consumer failed or a message is not a bar.
    pub fn recv_timeout(&mut self, timeout: Duration) -> Result<Option<StreamBar>, Error> {
        let Some(rt) = self.runtime.as_ref() else {
            return Err(Error::Stopped);
        };
        let rx = &mut self.rx;
        match rt.block_on(async { tokio::time::timeout(timeout, rx.recv()).await }) {
            Err(_) | Ok(None) => Ok(None),
            Ok(Some(r)) => r.map(Some),
        }
    }
}

impl Iterator for BarStream {
    type Item = Result<StreamBar, Error>;

    fn next(&mut self) -> Option<Self::Item> {
        self.recv_timeout(self.idle).transpose()
    }
}

impl Drop for BarStream {
    fn drop(&mut self) {
        if let Some(rt) = self.runtime.take() {
            rt.shutdown_timeout(Duration::from_secs(1));
        }
    }
}

/// A message of a status subject: a connection event of a publisher's feed.
#[derive(Debug, Clone, PartialEq)]
pub struct StatusMessage {
    /// The seis.
    pub symbol: Symbol,
    /// Its interval.
    pub interval: Interval,
    /// `disconnected`, `reconnected`, `lost` or `failed`.
    pub event: String,
    /// The whole JSON body.
    pub body: String,
}

/// Every status message the stream holds now, read until none comes for `idle`.
///
/// # Errors
///
/// As [`BarStream::open`].
pub fn read_status(
    cfg: &NatsConfig,
    stream: &str,
    prefix: &str,
    idle: Duration,
) -> Result<Vec<StatusMessage>, Error> {
    let rt = runtime()?;
    let filters = vec![format!("{prefix}.status.>")];
    let result = rt.block_on(async {
        let (_client, mut raw) = open_raw(
            cfg,
            stream,
            filters,
            DeliverPolicy::All,
            4096,
            Arc::new(LinkCounters::default()),
        )
        .await?;
        let mut out = Vec::new();
        while let Ok(Some(item)) = tokio::time::timeout(idle, raw.recv()).await {
            let (subject, payload, _) = item?;
            let Some((symbol, interval)) = parse_subject(prefix, &subject) else {
                continue;
            };
            let body = String::from_utf8_lossy(&payload).into_owned();
            let event = serde_json::from_str::<serde_json::Value>(&body)
                .ok()
                .and_then(|v| v.get("event")?.as_str().map(str::to_owned))
                .unwrap_or_default();
            out.push(StatusMessage {
                symbol,
                interval,
                event,
                body,
            });
        }
        Ok(out)
    });
    rt.shutdown_timeout(Duration::from_secs(1));
    result
}
