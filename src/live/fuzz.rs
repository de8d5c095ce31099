//! Fuzz harness of the live engine's core: arbitrary server bytes, interleaved with commands,
//! the passing of time, drops and refused connections, fed to [`Core`] exactly as `tv-io`
//! feeds it. Shared by the `engine_core` fuzz target (through `tvdatafeed::internal`) and the
//! property test below.
//!
//! What it asserts, whatever the server says: no panic; per seis, closed bars strictly
//! ascending (never one twice, never an older one after a newer one), a revision only of a bar
//! already delivered, `Disconnected` and `Reconnected` alternating, nothing after `Failed`;
//! the fetch queue never longer than the number of seises; every outgoing message bounded; and
//! deliveries bounded by the input's size (nothing is invented or multiplied).

use std::{
    collections::HashMap,
    time::{Duration, Instant},
};

use super::{
    LiveEvent, Seis, SeisKey,
    command::{self, Waiter},
    core::{Action, Core, CoreConfig},
};
use crate::{
    Error, HistOptions, History, Interval, Symbol, history::batch::BatchRequest, sync::Arc,
};

/// The wall clock the harness starts at: 2025-07-06 20:16:40 UTC.
pub(crate) const UNIX0_MS: i64 = 1_751_833_000_000;

/// The seises a run picks from.
const SEISES: [(&str, &str); 6] = [
    ("BINANCE:BTCUSDT", "1S"),
    ("BINANCE:ETHUSDT", "1S"),
    ("BINANCE:QUIET", "1S"),
    ("SP:SPX", "5S"),
    ("NYSE:IBM", "1"),
    ("BINANCE:INVALIDX", "1S"),
];

/// The core's settings in the harness (and in the seed recorder, so that seeds name the same
/// chart sessions).
pub(crate) fn config() -> CoreConfig {
    CoreConfig {
        stall_timeout: Duration::from_secs(5),
        connect_timeout: Duration::from_secs(3),
        backoff_base: Duration::from_millis(100),
        backoff_cap: Duration::from_secs(2),
        seed: 7,
        max_fetches: 2,
        rotate_chart_after: 4,
        ..CoreConfig::default()
    }
}

/// What the harness knows of one seis' event stream.
#[derive(Debug, Default)]
struct Stream {
    first_closed: Option<i64>,
    last_closed: Option<i64>,
    down: bool,
    failed: bool,
}

/// One op of the input: a code byte, a little-endian `u16` length, that many bytes (or what
/// is left).
fn ops(mut data: &[u8]) -> impl Iterator<Item = (u8, &[u8])> {
    std::iter::from_fn(move || {
        let (&op, rest) = data.split_first()?;
        let len = usize::from(u16::from_le_bytes([
            rest.first().copied().unwrap_or(0),
            rest.get(1).copied().unwrap_or(0),
        ]));
        let body = rest.get(2..).unwrap_or(&[]);
        let (chunk, tail) = body.split_at(len.min(body.len()));
        data = tail;
        Some((op, chunk))
    })
}

/// Appends one op to a seed.
#[cfg(test)]
pub(crate) fn push_op(out: &mut Vec<u8>, op: u8, chunk: &[u8]) {
    let len = u16::try_from(chunk.len()).unwrap_or(u16::MAX);
    out.push(op);
    out.extend_from_slice(&len.to_le_bytes());
    out.extend_from_slice(&chunk[..usize::from(len)]);
}

/// Op codes (the code byte modulo 8).
pub(crate) mod op {
    /// A websocket message from the server (codes 0 to 3).
    #[cfg_attr(not(test), allow(dead_code, reason = "named for the seed recorder"))]
    pub(crate) const MESSAGE: u8 = 0;
    /// Time passes: a little-endian `u16` of milliseconds (a missing byte is 0), then the
    /// core's timers run.
    pub(crate) const ADVANCE: u8 = 4;
    /// Subscribe seis `chunk[0] % 6`.
    pub(crate) const SUBSCRIBE: u8 = 5;
    /// Unsubscribe seis `chunk[0] % 6`.
    pub(crate) const UNSUBSCRIBE: u8 = 6;
    /// `chunk[0] % 4`: 0 the connection drops; 1 the next connection attempt is refused with
    /// a 429 and a `Retry-After` of `chunk[1]` seconds; 2 a `get_hist` of `chunk[1]` bars;
    /// 3 a shutdown (the run goes on: everything must be refused from then on).
    #[cfg_attr(not(test), allow(dead_code, reason = "named for the seed recorder"))]
    pub(crate) const CONNECTION: u8 = 7;
}

/// The harness: a core, its clock, and what it delivered so far.
pub(crate) struct Harness {
    core: Core,
    t0: Instant,
    now_ms: u64,
    seises: Vec<Option<Arc<Seis>>>,
    waiters: Vec<Waiter<Result<(), Error>>>,
    hists: Vec<Waiter<Result<History, Error>>>,
    streams: HashMap<u64, Stream>,
    refuse_next: Option<Duration>,
    /// Connect actions answered (a new simulated connection each).
    pub(crate) connections: u64,
    delivered: usize,
    sent: Vec<Vec<u8>>,
    record_sent: bool,
}

impl Harness {
    pub(crate) fn new() -> Self {
        let t0 = crate::clock::monotonic();
        Self {
            core: Core::new(t0, UNIX0_MS, config()),
            t0,
            now_ms: 0,
            seises: vec![None; SEISES.len()],
            waiters: Vec::new(),
            hists: Vec::new(),
            streams: HashMap::new(),
            refuse_next: None,
            connections: 0,
            delivered: 0,
            sent: Vec::new(),
            record_sent: false,
        }
    }

    /// Keeps what the core sends (for the seed recorder, which hands it to a server).
    #[cfg(test)]
    pub(crate) fn recording(mut self) -> Self {
        self.record_sent = true;
        self
    }

    /// What the core sent since the last call (when recording).
    #[cfg(test)]
    pub(crate) fn take_sent(&mut self) -> Vec<Vec<u8>> {
        std::mem::take(&mut self.sent)
    }

    fn now(&self) -> Instant {
        self.t0 + Duration::from_millis(self.now_ms)
    }

    pub(crate) fn unix_ms(&self) -> i64 {
        UNIX0_MS + i64::try_from(self.now_ms).unwrap_or(i64::MAX)
    }

    /// Applies one op, then drains everything the core has for the driver, checking it.
    pub(crate) fn op(&mut self, code: u8, chunk: &[u8]) {
        let now = self.now();
        let byte = |i: usize| chunk.get(i).copied().unwrap_or(0);
        match code % 8 {
            0..=3 => {
                let mut msg = chunk.to_vec();
                let unix = self.unix_ms();
                self.core.handle_message(now, unix, &mut msg);
            }
            op::ADVANCE => {
                self.now_ms += u64::from(u16::from_le_bytes([byte(0), byte(1)]));
                let (now, unix) = (self.now(), self.unix_ms());
                self.core.handle_timeout(now, unix);
            }
            op::SUBSCRIBE => {
                let i = usize::from(byte(0)) % SEISES.len();
                if self.seises[i].is_none() {
                    let (symbol, interval) = SEISES[i];
                    let key = SeisKey {
                        symbol: symbol.parse::<Symbol>().unwrap_or_else(|_| unreachable!()),
                        interval: interval
                            .parse::<Interval>()
                            .unwrap_or_else(|_| unreachable!()),
                    };
                    let seis = Arc::new(Seis::new(key, i as u64 + 1));
                    let (reply, waiter) = command::reply();
                    self.core.subscribe(now, Arc::clone(&seis), reply);
                    self.waiters.push(waiter);
                    self.seises[i] = Some(seis);
                    self.streams.insert(i as u64 + 1, Stream::default());
                }
            }
            op::UNSUBSCRIBE => {
                let i = usize::from(byte(0)) % SEISES.len();
                if let Some(seis) = self.seises[i].take() {
                    let (reply, waiter) = command::reply();
                    self.core.unsubscribe(seis.id().get(), reply);
                    self.core.complete_acks();
                    while let Some(a) = self.core.poll_answer() {
                        a.send();
                    }
                    // Answered at once: an unsubscription never waits for the server.
                    assert!(matches!(waiter.wait(Some(now)), Some(Ok(()))));
                    self.streams.remove(&seis.id().get());
                }
            }
            _ => match byte(0) % 4 {
                0 => {
                    let unix = self.unix_ms();
                    self.core.handle_closed(
                        now,
                        unix,
                        Error::Protocol("the fuzzed connection dropped".into()),
                    );
                }
                1 => self.refuse_next = Some(Duration::from_secs(u64::from(byte(1)))),
                2 => {
                    if let Ok(req) = BatchRequest::new(
                        "BINANCE:BTCUSDT".parse().unwrap_or_else(|_| unreachable!()),
                        "1S".parse().unwrap_or_else(|_| unreachable!()),
                        u32::from(byte(1)),
                        &HistOptions::default(),
                    ) {
                        let (reply, waiter) = command::reply();
                        self.core.get_hist(now, req, Duration::from_secs(2), reply);
                        self.hists.push(waiter);
                    }
                }
                _ => self.core.shutdown(),
            },
        }
        self.drain();
    }

    /// Answers the core's actions, takes its output, and checks every delivery.
    fn drain(&mut self) {
        let (now, unix) = (self.now(), self.unix_ms());
        while let Some(a) = self.core.poll_action() {
            match a {
                Action::Connect => match self.refuse_next.take() {
                    Some(after) => self.core.handle_connect_failed(
                        now,
                        unix,
                        Error::RateLimited {
                            host: "fuzz".into(),
                            retry_after: Some(after),
                        },
                    ),
                    None => {
                        self.connections += 1;
                        self.core.handle_connected(now, unix);
                    }
                },
                Action::Disconnect { cause } => self.core.handle_closed(now, unix, cause),
            }
        }
        while let Some(m) = self.core.poll_transmit() {
            assert!(
                m.len() <= 1 << 20,
                "an outgoing message of {} bytes",
                m.len()
            );
            if self.record_sent {
                self.sent.push(m);
            }
        }
        self.core.complete_acks();
        while let Some(a) = self.core.poll_answer() {
            a.send();
        }
        while let Some((id, event)) = self.core.poll_delivery() {
            self.delivered += 1;
            let s = self
                .streams
                .get_mut(&id)
                .unwrap_or_else(|| panic!("a delivery for seis {id}, not subscribed"));
            assert!(!s.failed, "seis {id}: {event:?} after Failed");
            match event {
                LiveEvent::Closed(b) => {
                    if let Some(last) = s.last_closed {
                        assert!(b.time > last, "seis {id}: closed {} after {last}", b.time);
                    }
                    s.last_closed = Some(b.time);
                    s.first_closed.get_or_insert(b.time);
                }
                LiveEvent::Revised(b) => {
                    // A revision of a bar from before the first closed one (the baseline the
                    // subscription started from) is the fanout's to drop; any other must be
                    // of a bar already delivered.
                    if s.first_closed.is_some_and(|f| b.time >= f) {
                        assert!(
                            s.last_closed.is_some_and(|l| b.time <= l),
                            "seis {id}: revision of {} not delivered (last {:?})",
                            b.time,
                            s.last_closed
                        );
                    }
                }
                LiveEvent::Disconnected { .. } => {
                    assert!(!s.down, "seis {id}: Disconnected twice");
                    s.down = true;
                }
                LiveEvent::Reconnected { .. } => {
                    assert!(s.down, "seis {id}: Reconnected while connected");
                    s.down = false;
                }
                LiveEvent::Failed(_) => s.failed = true,
                LiveEvent::Update(_) | LiveEvent::Lagged { .. } => {}
            }
        }
        assert!(self.core.pending_fetches() <= SEISES.len());
    }

    /// After the run: every command was answered or is still legitimately pending.
    pub(crate) fn finish(self, input_len: usize) {
        // Nothing invented: each delivery stems from input bytes (a bar needs at least a
        // handful; a connection op yields at most two events per seis).
        assert!(
            self.delivered <= 64 + 4 * input_len,
            "{} deliveries from {input_len} bytes",
            self.delivered
        );
        drop(self.waiters);
        drop(self.hists);
    }
}

/// The fuzz body: see the module docs.
#[cfg_attr(
    not(fuzzing),
    expect(
        unreachable_pub,
        reason = "exported through `internal` under cargo fuzz only"
    )
)]
pub fn engine_core(data: &[u8]) {
    let mut h = Harness::new();
    // The first connection, as `LiveFeed::build` waits for it.
    h.op(op::ADVANCE, &[0, 0]);
    for (code, chunk) in ops(data) {
        h.op(code, chunk);
    }
    h.finish(data.len());
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;
    use crate::sim::{SimConfig, session::ServerSession};

    /// A seed: the harness against the simulator's server session for `ms` of virtual time,
    /// with `script` applied at its times, recorded as ops.
    fn record(script: &[(u64, u8, Vec<u8>)], ms: u64) -> Vec<u8> {
        let cfg = SimConfig::default()
            .with_update_interval(Duration::from_millis(300))
            .with_quiet_symbols(vec!["BINANCE:QUIET".into()])
            .with_revise_every(5);
        let shared = crate::sim::Shared::default();
        let mut h = Harness::new().recording();
        let mut seed = Vec::new();
        let mut server: Option<ServerSession> = None;
        let mut conns = h.connections;
        let mut step = 0;
        let advance = |h: &mut Harness, seed: &mut Vec<u8>, d: u16| {
            let b = d.to_le_bytes();
            h.op(op::ADVANCE, &b);
            push_op(seed, op::ADVANCE, &b);
        };
        advance(&mut h, &mut seed, 0);
        while h.now_ms < ms {
            while let Some((at, code, chunk)) = script.get(step)
                && *at <= h.now_ms
            {
                h.op(*code, chunk);
                push_op(&mut seed, *code, chunk);
                step += 1;
            }
            if h.connections != conns {
                conns = h.connections;
                server = Some(ServerSession::new(&cfg, h.unix_ms() as u64, conns));
            }
            if let Some(s) = server.as_mut() {
                let unix = h.unix_ms() as u64;
                for mut m in h.take_sent() {
                    s.handle_text(&cfg, &shared, unix, &mut m);
                }
                s.tick(&cfg, &shared, unix);
                for m in std::mem::take(&mut s.out) {
                    h.op(op::MESSAGE, &m);
                    push_op(&mut seed, op::MESSAGE, &m);
                }
                s.sent(&cfg, unix);
            }
            advance(&mut h, &mut seed, 50);
        }
        seed
    }

    fn scenario(name: &str) -> Vec<u8> {
        let sub = |at, i: u8| (at, op::SUBSCRIBE, vec![i]);
        match name {
            "stream" => record(&[sub(0, 0), sub(0, 2), sub(0, 5), sub(1_000, 3)], 6_000),
            "reconnect" => record(
                &[
                    sub(0, 0),
                    sub(0, 1),
                    (2_500, op::CONNECTION, vec![1, 1]),
                    (2_500, op::CONNECTION, vec![0]),
                    (5_000, op::CONNECTION, vec![2, 20]),
                    (6_000, op::UNSUBSCRIBE, vec![1]),
                ],
                9_000,
            ),
            _ => unreachable!(),
        }
    }

    /// Writes the seeds of `fuzz/seeds/engine_core` (run by hand after a protocol change:
    /// `cargo test --features sim --lib write_engine_core_seeds -- --ignored`).
    #[test]
    #[ignore = "writes files under fuzz/seeds"]
    fn write_engine_core_seeds() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/seeds/engine_core");
        std::fs::create_dir_all(&dir).unwrap();
        for name in ["stream", "reconnect"] {
            std::fs::write(dir.join(name), scenario(name)).unwrap();
        }
    }

    #[test]
    fn recorded_sessions_pass_and_deliver_bars() {
        for name in ["stream", "reconnect"] {
            let seed = scenario(name);
            engine_core(&seed);
            // The seed really streams: replayed, it delivers closed bars.
            let mut h = Harness::new();
            h.op(op::ADVANCE, &[0, 0]);
            for (code, chunk) in ops(&seed) {
                h.op(code, chunk);
            }
            assert!(h.delivered > 10, "{name}: {} deliveries", h.delivered);
        }
    }

    #[test]
    fn the_checked_in_seeds_pass() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/seeds/engine_core");
        for entry in std::fs::read_dir(dir).unwrap() {
            engine_core(&std::fs::read(entry.unwrap().path()).unwrap());
        }
    }

    proptest! {
        #![proptest_config(crate::prop_seed::config(256))]

        /// Mutated recordings: the properties hold whatever the server (or the fuzzer) sends.
        #[test]
        fn mutated_sessions_keep_the_contract(
            flips in proptest::collection::vec((any::<usize>(), any::<u8>()), 0..64),
            which in 0..2usize,
        ) {
            let mut seed = scenario(["stream", "reconnect"][which]);
            for (at, b) in flips {
                if !seed.is_empty() {
                    let n = seed.len();
                    seed[at % n] = b;
                }
            }
            engine_core(&seed);
        }

        #[test]
        fn random_bytes_keep_the_contract(data in proptest::collection::vec(any::<u8>(), 0..2048)) {
            engine_core(&data);
        }
    }
}
