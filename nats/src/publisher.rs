//! [`Publisher`]: a `LiveFeed`'s closed bars to JetStream.

use std::{
    collections::{HashMap, VecDeque},
    sync::{
        Arc, Mutex,
        atomic::{AtomicI64, AtomicU64, Ordering},
    },
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};

use async_nats::jetstream::{self, message::PublishMessage, publish::PublishAck};
use futures_util::{StreamExt, stream::FuturesUnordered};
use hdrhistogram::Histogram;
use tokio::sync::{mpsc, oneshot};
use tvdatafeed::{ConsumerId, LiveEvent, LiveFeed, Seis};

use crate::{
    BarKind, BarMessage, Error,
    error::redact,
    stream::{LinkCounters, NatsConfig, StreamSettings, connect, ensure_stream},
    subject::{bar_subject, status_subject},
};

/// How a [`Publisher`] behaves. By-value setters; every default is documented.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct PublisherConfig {
    /// How to reach NATS.
    pub nats: NatsConfig,
    /// The stream, created or checked at start.
    pub stream: StreamSettings,
    /// The most publishes awaiting their acknowledgement at once (never more than one per
    /// subject, which keeps each subject in order). Default 256.
    pub max_in_flight: usize,
    /// The most bars and connection events kept while NATS is slow or unreachable, not
    /// counting those in flight. Default 65,536 (a thousand 1-second seises for a minute).
    /// When it is full the consumer threads wait (the engine's own bounded backlog takes
    /// over); each time it is found full is counted ([`PublisherStats::buffer_full`]) and
    /// logged at most once a second.
    pub buffer: usize,
    /// Backoff between retries while publishes fail: from the first value, doubling, up to
    /// the second. Default 50 ms to 2 s.
    pub backoff: (Duration, Duration),
    /// This publisher's name in the status messages. Default `HOST-PID`.
    pub name: String,
}

impl PublisherConfig {
    /// Every default, publishing through `nats`.
    pub fn new(nats: NatsConfig) -> Self {
        let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
            .map(|h| h.trim().to_owned())
            .unwrap_or_else(|_| "host".into());
        Self {
            nats,
            stream: StreamSettings::default(),
            max_in_flight: 256,
            buffer: 65_536,
            backoff: (Duration::from_millis(50), Duration::from_secs(2)),
            name: format!("{host}-{}", std::process::id()),
        }
    }
    /// Sets [`PublisherConfig::stream`].
    #[must_use]
    pub fn stream(mut self, s: StreamSettings) -> Self {
        self.stream = s;
        self
    }
    /// Sets [`PublisherConfig::max_in_flight`] (at least 1).
    #[must_use]
    pub fn max_in_flight(mut self, n: usize) -> Self {
        self.max_in_flight = n.max(1);
        self
    }
    /// Sets [`PublisherConfig::buffer`] (at least 1).
    #[must_use]
    pub fn buffer(mut self, n: usize) -> Self {
        self.buffer = n.max(1);
        self
    }
    /// Sets [`PublisherConfig::name`].
    #[must_use]
    pub fn name(mut self, name: impl Into<String>) -> Self {
        self.name = name.into();
        self
    }
}

/// Counters of a [`Publisher`], from [`Publisher::stats`].
#[derive(Debug, Clone, Default)]
#[non_exhaustive]
pub struct PublisherStats {
    /// Bars and connection events taken from the feed.
    pub taken_in: u64,
    /// Bars stored by JetStream (acknowledged, not as a duplicate).
    pub published: u64,
    /// Bars acknowledged as duplicates: the other publisher of the pair (or an earlier try of
    /// ours whose acknowledgement was lost) stored them first.
    pub duplicates: u64,
    /// Connection events published on the status subjects.
    pub status_published: u64,
    /// Taken in and not acknowledged yet: buffered or in flight.
    pub buffered: u64,
    /// Times the buffer was found full.
    pub buffer_full: u64,
    /// Publishes that failed (and were retried).
    pub publish_errors: u64,
    /// Times the NATS connection came back after being lost.
    pub nats_reconnects: u64,
    /// Bar close (wall clock) to JetStream's acknowledgement, microseconds:
    /// `(p50, p99, max, count)` over closed bars.
    pub close_to_ack_us: (u64, u64, u64, u64),
    /// Bar close to the `LiveFeed` callback that took it in, microseconds, as above.
    pub close_to_callback_us: (u64, u64, u64, u64),
}

/// What [`Publisher::stop`] did.
#[derive(Debug, Clone, Default)]
#[non_exhaustive]
pub struct PublishReport {
    /// The counters at the end.
    pub stats: PublisherStats,
    /// How long the drain took.
    pub elapsed: Duration,
}

impl PublishReport {
    /// Whether everything taken in was acknowledged.
    pub fn is_complete(&self) -> bool {
        self.stats.buffered == 0
    }
}

#[derive(Debug, Default)]
struct Counters {
    taken_in: AtomicU64,
    published: AtomicU64,
    duplicates: AtomicU64,
    status_published: AtomicU64,
    acked: AtomicU64,
    buffer_full: AtomicU64,
    publish_errors: AtomicU64,
    /// Unix ms of the last "buffer full" and "publish failed" log lines (rate limits).
    full_logged_ms: AtomicI64,
    error_logged_ms: AtomicI64,
    close_to_ack: Mutex<Option<Histogram<u64>>>,
    close_to_callback: Mutex<Option<Histogram<u64>>>,
}

fn unix_us() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_micros()).unwrap_or(i64::MAX))
}

fn record(h: &Mutex<Option<Histogram<u64>>>, us: i64) {
    let Ok(us) = u64::try_from(us) else { return };
    let mut g = h.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
    let h =
        g.get_or_insert_with(|| Histogram::new_with_bounds(1, 3_600_000_000, 3).expect("valid"));
    h.saturating_record(us.max(1));
}

fn summary(h: &Mutex<Option<Histogram<u64>>>) -> (u64, u64, u64, u64) {
    let g = h.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
    g.as_ref().map_or((0, 0, 0, 0), |h| {
        (
            h.value_at_quantile(0.5),
            h.value_at_quantile(0.99),
            h.max(),
            h.len(),
        )
    })
}

/// Logs at most once a second per `slot`.
fn once_a_second(slot: &AtomicI64) -> bool {
    let now = unix_us() / 1000;
    // Relaxed: a rate limit; a lost race costs one line more or less.
    let last = slot.load(Ordering::Relaxed);
    now - last >= 1000
        && slot
            .compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed)
            .is_ok()
}

/// One message to publish.
#[derive(Debug)]
struct Item {
    subject: Arc<str>,
    msg_id: Option<String>,
    payload: bytes::Bytes,
    /// Unix µs of the bar's close, for a closed bar.
    close_us: Option<i64>,
    status: bool,
}

/// Publishes the closed and revised bars of a `LiveFeed`'s seises to JetStream.
///
/// [`Publisher::start`] connects and creates or checks the stream; [`Publisher::add`] attaches
/// a consumer to a seis; [`Publisher::stop`] detaches them and waits (bounded) until
/// everything taken in is acknowledged. `Send` and `Sync`.
///
/// Two publishers with the same seises, each on its own `LiveFeed` (on two machines), make a
/// redundant pair: each bar is stored once, the second copy acknowledged as a duplicate.
///
/// Its methods block (each bounded): call them from plain threads, not from inside an async
/// runtime, where a nested `block_on` panics.
pub struct Publisher {
    runtime: Option<tokio::runtime::Runtime>,
    task: Option<tokio::task::JoinHandle<()>>,
    intake: Option<mpsc::Sender<Item>>,
    stop: Option<oneshot::Sender<Instant>>,
    counters: Arc<Counters>,
    link: Arc<LinkCounters>,
    consumers: Mutex<Vec<(Arc<LiveFeed>, ConsumerId)>>,
    prefix: String,
    name: String,
    url: String,
    client: Option<async_nats::Client>,
}

impl std::fmt::Debug for Publisher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Publisher")
            .field("url", &self.url)
            .field("name", &self.name)
            .finish_non_exhaustive()
    }
}

impl Publisher {
    /// Connects to NATS and creates the stream or checks it, then starts publishing (nothing
    /// yet: [`Publisher::add`] attaches seises). Each step is bounded by
    /// [`NatsConfig::connect_timeout`].
    ///
    /// # Errors
    ///
    /// [`Error::BadUrl`], [`Error::Connect`], [`Error::JetStream`], [`Error::StreamConflict`],
    /// [`Error::Spawn`].
    pub fn start(cfg: PublisherConfig) -> Result<Self, Error> {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("tv-nats")
            .enable_all()
            .build()
            .map_err(|e| Error::Spawn {
                what: "the tv-nats runtime".into(),
                reason: e.to_string(),
            })?;
        let link = Arc::new(LinkCounters::default());
        let setup = async {
            let client = connect(&cfg.nats, Arc::clone(&link)).await?;
            let mut js = jetstream::new(client.clone());
            js.set_timeout(cfg.nats.ack_timeout);
            ensure_stream(&js, &cfg.stream, &cfg.nats.url, cfg.nats.connect_timeout).await?;
            Ok::<_, Error>((client, js))
        };
        let (client, js) = match runtime.block_on(setup) {
            Ok(x) => x,
            Err(e) => {
                runtime.shutdown_timeout(Duration::from_secs(1));
                return Err(e);
            }
        };
        let counters = Arc::new(Counters::default());
        let (intake, rx) = mpsc::channel(cfg.buffer);
        let (stop, stop_rx) = oneshot::channel();
        let ack_timeout = cfg.nats.ack_timeout;
        let task = runtime.spawn(run(
            move |item| publish(js.clone(), item, ack_timeout),
            rx,
            stop_rx,
            Arc::clone(&counters),
            Settings {
                max_in_flight: cfg.max_in_flight,
                buffer: cfg.buffer,
                backoff: cfg.backoff,
            },
        ));
        Ok(Self {
            runtime: Some(runtime),
            task: Some(task),
            intake: Some(intake),
            stop: Some(stop),
            counters,
            link,
            consumers: Mutex::new(Vec::new()),
            prefix: cfg.stream.prefix.clone(),
            name: cfg.name.clone(),
            url: redact(&cfg.nats.url),
            client: Some(client),
        })
    }

    /// Publishes `seis`' closed and revised bars, and its connection events on its status
    /// subject, from now on (a consumer on `feed`).
    ///
    /// Build `feed` with
    /// [`callback_threads`](tvdatafeed::LiveFeedBuilder::callback_threads) when it carries
    /// many seises: the consumer's callback only hands a bar to the publishing task, and a
    /// thread per seis waking at every bar boundary takes the cores that task needs (as
    /// `tvdatafeed publish` does; BENCHMARKS.md, issue 21).
    ///
    /// # Errors
    ///
    /// [`Error::Feed`] when the engine refuses the consumer; [`Error::Stopped`].
    pub fn add(&self, feed: &Arc<LiveFeed>, seis: &Seis) -> Result<(), Error> {
        let intake = self.intake.clone().ok_or(Error::Stopped)?;
        let counters = Arc::clone(&self.counters);
        let (symbol, interval) = (seis.symbol().clone(), seis.interval());
        let bars: Arc<str> = bar_subject(&self.prefix, &symbol, interval).into();
        let status: Arc<str> = status_subject(&self.prefix, &symbol, interval).into();
        let name = self.name.clone();
        let id = feed
            .new_consumer(seis, move |event| {
                let now_us = unix_us();
                let status_item = |body: serde_json::Value| Item {
                    subject: Arc::clone(&status),
                    msg_id: None,
                    payload: body.to_string().into(),
                    close_us: None,
                    status: true,
                };
                let item = match event {
                    LiveEvent::Closed(bar) | LiveEvent::Revised(bar) => {
                        let closed = !matches!(event, LiveEvent::Revised(_));
                        let msg = BarMessage {
                            symbol: symbol.clone(),
                            interval,
                            bar,
                            kind: if closed {
                                BarKind::Closed
                            } else {
                                BarKind::Revised
                            },
                        };
                        let close_us = closed.then(|| {
                            interval
                                .next_bar_open(msg.bar.time)
                                .saturating_mul(1_000_000)
                        });
                        if let Some(c) = close_us {
                            record(&counters.close_to_callback, now_us - c);
                        }
                        Item {
                            subject: Arc::clone(&bars),
                            msg_id: Some(msg.msg_id()),
                            payload: msg.to_json().into(),
                            close_us,
                            status: false,
                        }
                    }
                    LiveEvent::Disconnected { cause } => status_item(serde_json::json!({
                        "event": "disconnected", "symbol": symbol.as_str(),
                        "interval": interval.to_string(), "publisher": name,
                        "cause": cause, "at_ms": now_us / 1000,
                    })),
                    LiveEvent::Reconnected { down, gap_bars } => status_item(serde_json::json!({
                        "event": "reconnected", "symbol": symbol.as_str(),
                        "interval": interval.to_string(), "publisher": name,
                        "down_ms": u64::try_from(down.as_millis()).unwrap_or(u64::MAX),
                        "gap_bars": gap_bars, "at_ms": now_us / 1000,
                    })),
                    LiveEvent::Lagged {
                        lost_closed,
                        first_time,
                        ..
                    } if lost_closed > 0 => {
                        tracing::error!(%symbol, %interval, lost_closed, ?first_time,
                            "closed bars lost before publishing: the buffer stayed full");
                        status_item(serde_json::json!({
                            "event": "lost", "symbol": symbol.as_str(),
                            "interval": interval.to_string(), "publisher": name,
                            "lost_closed": lost_closed, "first_time": first_time,
                            "at_ms": now_us / 1000,
                        }))
                    }
                    LiveEvent::Failed(tvdatafeed::Error::Shutdown) => return,
                    LiveEvent::Failed(e) => {
                        tracing::error!(%symbol, %interval, error = %e, "seis ended");
                        status_item(serde_json::json!({
                            "event": "failed", "symbol": symbol.as_str(),
                            "interval": interval.to_string(), "publisher": name,
                            "error": e.to_string(), "at_ms": now_us / 1000,
                        }))
                    }
                    _ => return,
                };
                // Relaxed: counters read for metrics only.
                counters.taken_in.fetch_add(1, Ordering::Relaxed);
                match intake.try_send(item) {
                    Ok(()) => {}
                    Err(mpsc::error::TrySendError::Full(item)) => {
                        counters.buffer_full.fetch_add(1, Ordering::Relaxed);
                        if once_a_second(&counters.full_logged_ms) {
                            tracing::warn!(
                                "publish buffer full: NATS is slow or unreachable; the feed's \
                                 consumers wait (their own backlog is bounded)"
                            );
                        }
                        // Waits for room; ends at once if the publisher stopped.
                        if intake.blocking_send(item).is_err() {
                            counters.taken_in.fetch_sub(1, Ordering::Relaxed);
                        }
                    }
                    Err(mpsc::error::TrySendError::Closed(_)) => {
                        counters.taken_in.fetch_sub(1, Ordering::Relaxed);
                    }
                }
            })
            .map_err(|source| Error::Feed {
                seis: format!("{} {}", seis.symbol(), seis.interval()),
                source,
            })?;
        self.consumers
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .push((Arc::clone(feed), id));
        Ok(())
    }

    /// The counters now.
    pub fn stats(&self) -> PublisherStats {
        let c = &self.counters;
        let taken_in = c.taken_in.load(Ordering::Relaxed);
        PublisherStats {
            taken_in,
            published: c.published.load(Ordering::Relaxed),
            duplicates: c.duplicates.load(Ordering::Relaxed),
            status_published: c.status_published.load(Ordering::Relaxed),
            buffered: taken_in.saturating_sub(c.acked.load(Ordering::Relaxed)),
            buffer_full: c.buffer_full.load(Ordering::Relaxed),
            publish_errors: c.publish_errors.load(Ordering::Relaxed),
            nats_reconnects: self.link.reconnects.load(Ordering::Relaxed),
            close_to_ack_us: summary(&c.close_to_ack),
            close_to_callback_us: summary(&c.close_to_callback),
        }
    }

    /// Stops taking bars in (detaching every consumer), then waits up to `timeout` for
    /// everything taken in to be acknowledged. [`PublishReport::is_complete`] says whether
    /// it was.
    pub fn stop(mut self, timeout: Duration) -> PublishReport {
        self.stop_inner(timeout)
    }

    fn stop_inner(&mut self, timeout: Duration) -> PublishReport {
        let started = Instant::now();
        let deadline = started + timeout;
        let consumers = std::mem::take(
            &mut *self
                .consumers
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner),
        );
        for (feed, id) in consumers {
            // After it returns the callback never runs again; a feed already shut down has
            // no consumers left.
            let _ = feed.del_consumer(id);
        }
        self.intake = None;
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(deadline);
        }
        if let (Some(rt), Some(task)) = (self.runtime.as_ref(), self.task.take()) {
            let left =
                deadline.saturating_duration_since(Instant::now()) + Duration::from_millis(500);
            let _ = rt.block_on(async { tokio::time::timeout(left, task).await });
            if let Some(client) = self.client.take() {
                let _ = rt.block_on(async {
                    tokio::time::timeout(Duration::from_secs(1), client.flush()).await
                });
            }
        }
        if let Some(rt) = self.runtime.take() {
            rt.shutdown_timeout(Duration::from_secs(1));
        }
        PublishReport {
            stats: self.stats(),
            elapsed: started.elapsed(),
        }
    }
}

impl Drop for Publisher {
    fn drop(&mut self) {
        if self.runtime.is_some() {
            let _ = self.stop_inner(Duration::from_secs(1));
        }
    }
}

#[derive(Debug, Clone, Copy)]
struct Settings {
    max_in_flight: usize,
    buffer: usize,
    backoff: (Duration, Duration),
}

type Outcome = (Item, Result<PublishAck, String>);

/// Items the publishing loop takes from its intake in one turn at most.
const INTAKE_BATCH: usize = 256;

async fn publish(js: jetstream::Context, item: Item, ack_timeout: Duration) -> Outcome {
    let mut msg = PublishMessage::build().payload(item.payload.clone());
    if let Some(id) = &item.msg_id {
        msg = msg.message_id(id);
    }
    let attempt = async {
        let ack = js
            .send_publish(item.subject.to_string(), msg)
            .await
            .map_err(|e| e.to_string())?;
        ack.await.map_err(|e| e.to_string())
    };
    // The context bounds each half by `ack_timeout`; this bounds the whole.
    let r = match tokio::time::timeout(ack_timeout * 2, attempt).await {
        Ok(r) => r,
        Err(_) => Err(format!("no acknowledgement within {:?}", ack_timeout * 2)),
    };
    (item, r)
}

/// The publishing loop. Each subject's items wait in a FIFO queue; a subject has at most one
/// publish in flight, so a failed publish is retried before anything after it on its subject
/// (order per subject holds across NATS outages). Invariant: a subject is in `ready` exactly
/// when it has queued items and none in flight.
async fn run<P, F>(
    publish: P,
    mut rx: mpsc::Receiver<Item>,
    mut stop: oneshot::Receiver<Instant>,
    counters: Arc<Counters>,
    cfg: Settings,
) where
    P: Fn(Item) -> F,
    F: std::future::Future<Output = Outcome>,
{
    let mut queues: HashMap<Arc<str>, VecDeque<Item>> = HashMap::new();
    let mut ready: VecDeque<Arc<str>> = VecDeque::new();
    let mut busy: std::collections::HashSet<Arc<str>> = std::collections::HashSet::new();
    let mut queued = 0usize;
    let mut in_flight = FuturesUnordered::new();
    let mut backoff = cfg.backoff.0;
    let mut retry_at: Option<tokio::time::Instant> = None;
    let mut deadline: Option<tokio::time::Instant> = None;
    let mut intake_done = false;
    let mut batch = Vec::with_capacity(INTAKE_BATCH);
    loop {
        if retry_at.is_none() {
            while in_flight.len() < cfg.max_in_flight {
                let Some(subject) = ready.pop_front() else {
                    break;
                };
                let item = queues
                    .get_mut(&subject)
                    .and_then(VecDeque::pop_front)
                    .expect("a ready subject has a queued item");
                queued -= 1;
                busy.insert(subject);
                in_flight.push(publish(item));
            }
        }
        if intake_done && queued == 0 && in_flight.is_empty() {
            break;
        }
        tokio::select! {
            biased;
            Some((item, result)) = in_flight.next(), if !in_flight.is_empty() => {
                let subject = Arc::clone(&item.subject);
                busy.remove(&subject);
                match result {
                    Ok(ack) => {
                        backoff = cfg.backoff.0;
                        // Relaxed: counters read for metrics only.
                        counters.acked.fetch_add(1, Ordering::Relaxed);
                        if item.status {
                            counters.status_published.fetch_add(1, Ordering::Relaxed);
                        } else if ack.duplicate {
                            counters.duplicates.fetch_add(1, Ordering::Relaxed);
                        } else {
                            counters.published.fetch_add(1, Ordering::Relaxed);
                        }
                        if let Some(close) = item.close_us {
                            record(&counters.close_to_ack, unix_us() - close);
                        }
                        if queues.get(&subject).is_some_and(|q| !q.is_empty()) {
                            ready.push_back(subject);
                        } else {
                            queues.remove(&subject);
                        }
                    }
                    Err(e) => {
                        counters.publish_errors.fetch_add(1, Ordering::Relaxed);
                        if once_a_second(&counters.error_logged_ms) {
                            tracing::warn!(subject = %subject, error = %e,
                                retry_in = ?backoff, "publish failed; retrying in order");
                        }
                        queues.entry(Arc::clone(&subject)).or_default().push_front(item);
                        queued += 1;
                        ready.push_front(subject);
                        let now = tokio::time::Instant::now();
                        retry_at = Some(retry_at.map_or(now + backoff, |t| t.max(now + backoff)));
                        backoff = (backoff * 2).min(cfg.backoff.1);
                    }
                }
            }
            () = async { tokio::time::sleep_until(retry_at.expect("guarded")).await },
                if retry_at.is_some() => {
                retry_at = None;
            }
            // A burst (every seis closes at the same boundary) is taken in one wake-up, not
            // one loop turn per bar; never past the buffer. Saturating: `select!` builds this
            // future even when the guard disables the branch, and `queued` exceeds the buffer
            // when failed publishes come back to it; at least 1, since a limit of 0 would read
            // as a closed intake.
            got = rx.recv_many(&mut batch, cfg.buffer.saturating_sub(queued).clamp(1, INTAKE_BATCH)),
                if !intake_done && queued < cfg.buffer => {
                // 0 only once the intake is closed and empty (the limit is at least 1).
                intake_done = got == 0;
                for item in batch.drain(..) {
                    let subject = Arc::clone(&item.subject);
                    let q = queues.entry(Arc::clone(&subject)).or_default();
                    q.push_back(item);
                    queued += 1;
                    if q.len() == 1 && !busy.contains(&subject) {
                        ready.push_back(subject);
                    }
                }
            },
            at = &mut stop, if deadline.is_none() => {
                // Takes what is in the intake still, then ends (`recv` gives `None`).
                rx.close();
                let at = at.unwrap_or_else(|_| Instant::now());
                deadline = Some(tokio::time::Instant::from_std(at));
            }
            () = async { tokio::time::sleep_until(deadline.expect("guarded")).await },
                if deadline.is_some() => {
                tracing::warn!(queued, in_flight = in_flight.len(),
                    "stopping with messages not acknowledged");
                break;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashSet;

    use super::*;

    /// What the stand-in stored, in order, and the ids it holds.
    type Store = (Vec<(Arc<str>, String)>, HashSet<String>);

    /// A JetStream stand-in: stores by message id (a repeat is a duplicate), and makes some
    /// publishes fail: lost before the server (nothing stored) or stored with the
    /// acknowledgement lost. Returns each subject's stored ids in order.
    #[test]
    fn failed_publishes_are_retried_in_order_per_subject() {
        retried_in_order_per_subject(1000);
    }

    /// With a buffer smaller than what is in flight, failed publishes come back to a full
    /// buffer (`queued` above it): the loop must go on, never underflow.
    #[test]
    fn failed_publishes_coming_back_to_a_full_buffer_are_retried_in_order() {
        retried_in_order_per_subject(4);
    }

    fn retried_in_order_per_subject(buffer: usize) {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let store: Arc<Mutex<Store>> = Arc::default();
        let calls = Arc::new(AtomicU64::new(0));
        let (tx, rx) = mpsc::channel(1000);
        let subjects: Vec<Arc<str>> = ["a", "b", "c"].iter().map(|s| Arc::from(*s)).collect();
        for k in 0..50 {
            for s in &subjects {
                tx.try_send(Item {
                    subject: Arc::clone(s),
                    msg_id: Some(format!("{s}-{k:03}")),
                    payload: bytes::Bytes::new(),
                    close_us: None,
                    status: false,
                })
                .unwrap();
            }
        }
        drop(tx);
        let (stop_tx, stop_rx) = oneshot::channel();
        let counters = Arc::new(Counters::default());
        let fake = {
            let (store, calls) = (Arc::clone(&store), Arc::clone(&calls));
            move |item: Item| {
                let (store, calls) = (Arc::clone(&store), Arc::clone(&calls));
                async move {
                    let n = calls.fetch_add(1, Ordering::Relaxed);
                    // Replies come back out of order.
                    tokio::time::sleep(Duration::from_micros(n * 7919 % 500)).await;
                    let id = item.msg_id.clone().unwrap();
                    if n % 5 == 1 {
                        return (item, Err("lost before the server".to_owned()));
                    }
                    let mut g = store.lock().unwrap();
                    let duplicate = !g.1.insert(id.clone());
                    if !duplicate {
                        g.0.push((Arc::clone(&item.subject), id));
                    }
                    drop(g);
                    if n % 7 == 3 {
                        return (item, Err("acknowledgement lost".to_owned()));
                    }
                    let ack = PublishAck {
                        duplicate,
                        ..PublishAck::default()
                    };
                    (item, Ok(ack))
                }
            }
        };
        let cfg = Settings {
            max_in_flight: 8,
            buffer,
            backoff: (Duration::from_millis(1), Duration::from_millis(4)),
        };
        let _ = stop_tx.send(Instant::now() + Duration::from_secs(30));
        rt.block_on(run(fake, rx, stop_rx, Arc::clone(&counters), cfg));
        let g = store.lock().unwrap();
        for s in &subjects {
            let ids: Vec<&String> =
                g.0.iter()
                    .filter(|(x, _)| x == s)
                    .map(|(_, id)| id)
                    .collect();
            let want: Vec<String> = (0..50).map(|k| format!("{s}-{k:03}")).collect();
            assert_eq!(ids, want.iter().collect::<Vec<_>>(), "subject {s}");
        }
        assert_eq!(counters.acked.load(Ordering::Relaxed), 150);
        assert!(counters.publish_errors.load(Ordering::Relaxed) > 20);
        assert!(counters.duplicates.load(Ordering::Relaxed) > 0);
    }
}
