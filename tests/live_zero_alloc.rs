//! The live engine allocates nothing per live message in the steady state: after a warm-up,
//! the whole process (the engine's `tv-io` thread reading the socket, framing, parsing, the
//! chart session, the core, the registry, the fan-out into the rings, and the consumers' threads
//! taking the events and recording their statistics) makes no heap allocation while hundreds of
//! live messages (updates and bar closes) go through it.
//!
//! The simulator would allocate in the same process (it builds every message), so it runs in a
//! child process: this same test binary, started again with `TVDATAFEED_ZERO_ALLOC_SIM` set,
//! serves the simulator and prints its URL. Its own test binary, because it installs a counting
//! global allocator; one test, so no other test's threads run beside it.
//!
//! The window is measured twice: with no `tracing` subscriber (logging off), then with a
//! subscriber installed at `info` that writes to stderr, as `tvdatafeed --log info` does (the
//! engine logs nothing per live message above `trace`, and its spans cost no allocation).
#![allow(
    clippy::disallowed_types,
    reason = "the allocator's counter is a plain static atomic, outside the loom shim"
)]

use std::{
    alloc::{GlobalAlloc, Layout, System},
    io::{BufRead, BufReader, Read},
    process::{Command, Stdio},
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use tvdatafeed::{ConsumerOptions, LiveEvent, LiveFeed};

/// Counts every allocation and reallocation in the process.
struct Counting;

static ALLOCATIONS: AtomicU64 = AtomicU64::new(0);

// SAFETY: forwards every call to `System` unchanged; only counts.
unsafe impl GlobalAlloc for Counting {
    // SAFETY: the caller upholds `GlobalAlloc::alloc`'s contract; passed on unchanged.
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        // SAFETY: same contract as the caller's.
        unsafe { System.alloc(layout) }
    }
    // SAFETY: the caller upholds `GlobalAlloc::dealloc`'s contract; passed on unchanged.
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: same contract as the caller's.
        unsafe { System.dealloc(ptr, layout) }
    }
    // SAFETY: the caller upholds `GlobalAlloc::realloc`'s contract; passed on unchanged.
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        // SAFETY: same contract as the caller's.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

/// Events the subscriber let through (a formatted line each). Writing one to stderr does not
/// allocate once the formatter's buffer is warm, so the allocation count alone would not see
/// an event logged per message: this count does.
static LOGGED: AtomicU64 = AtomicU64::new(0);

struct CountEvents;

impl<S: tracing::Subscriber> tracing_subscriber::Layer<S> for CountEvents {
    fn on_event(&self, _: &tracing::Event<'_>, _: tracing_subscriber::layer::Context<'_, S>) {
        LOGGED.fetch_add(1, Ordering::Relaxed);
    }
}

const CHILD: &str = "TVDATAFEED_ZERO_ALLOC_SIM";
const SEISES: usize = 8;

#[expect(clippy::disallowed_methods, reason = "a test's own deadlines")]
fn now() -> Instant {
    Instant::now()
}

fn wait(d: Duration) {
    let end = now() + d;
    while now() < end {
        std::thread::park_timeout(end.saturating_duration_since(now()));
    }
}

/// The child: serves the simulator until its standard input closes (the parent is done).
#[expect(clippy::print_stdout, reason = "the URL goes to the parent")]
fn serve() {
    use tvdatafeed::sim::{Sim, SimConfig};
    // Heartbeats out of the window (their echo is a message to send: not the live path).
    let sim = Sim::start(
        SimConfig::default()
            .with_update_interval(Duration::from_millis(5))
            .with_heartbeat_interval(Duration::from_secs(60))
            .with_heartbeat_timeout(Duration::from_secs(120)),
    )
    .expect("sim");
    println!("URL {}", sim.url());
    let mut rest = Vec::new();
    let _ = std::io::stdin().read_to_end(&mut rest);
    sim.stop(Duration::from_secs(2));
}

#[test]
fn steady_state_live_messages_allocate_nothing_in_the_whole_engine() {
    if std::env::var_os(CHILD).is_some() {
        return serve();
    }
    let mut child = Command::new(std::env::current_exe().expect("test binary"))
        .args([
            "--exact",
            "steady_state_live_messages_allocate_nothing_in_the_whole_engine",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(CHILD, "1")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("start the simulator process");
    let mut lines = BufReader::new(child.stdout.take().expect("stdout")).lines();
    let url = lines
        .by_ref()
        .map_while(Result::ok)
        // libtest may print its own words before it on the same line.
        .find_map(|l| l.split_once("URL ").map(|(_, u)| u.trim().to_owned()))
        .expect("the simulator's URL");
    // The child's test harness prints its result after the URL, when the parent is done: keep
    // its stdout open and read, or libtest there reports a broken pipe as an error. Blocked in
    // `read` until then, so it allocates nothing in the measured window.
    let drain = std::thread::Builder::new()
        .name("test-child-stdout".into())
        .spawn(move || lines.for_each(drop))
        .expect("spawn the drain");

    // Bars are closed by the stream here, never by a confirmation fetch: a fetch is a request
    // (its message is built, so it allocates), not a live message, and on a loaded machine a
    // stream close later than the learned grace would start one in the middle of a window (CI
    // saw ~12 allocations per close that way). A grace far past the stream's lateness keeps
    // the windows on the live path this test is about.
    let feed = LiveFeed::builder()
        .endpoint(url.as_str())
        .expect("url")
        .close_grace_fixed(Duration::from_millis(800))
        .build()
        .expect("feed");
    let events = Arc::new(AtomicU64::new(0));
    let closes = Arc::new(AtomicU64::new(0));
    for i in 0..SEISES {
        let seis = feed
            .new_seis(format!("BINANCE:SYM{i}"), "1S")
            .expect("subscribe");
        let (events, closes) = (Arc::clone(&events), Arc::clone(&closes));
        feed.new_consumer_with(
            &seis,
            ConsumerOptions::default().with_updates(true),
            move |e| {
                events.fetch_add(1, Ordering::Relaxed);
                match e {
                    LiveEvent::Update(_) => {}
                    LiveEvent::Closed(_) => {
                        closes.fetch_add(1, Ordering::Relaxed);
                    }
                    LiveEvent::Failed(tvdatafeed::Error::Shutdown) => {}
                    other => panic!("unexpected event in the steady state: {other:?}"),
                }
            },
        )
        .expect("consumer");
    }
    // One window: (allocations, events, closes) while live traffic goes through.
    let window = || {
        let (e0, c0) = (
            events.load(Ordering::Relaxed),
            closes.load(Ordering::Relaxed),
        );
        let (before, logged) = (
            ALLOCATIONS.load(Ordering::Relaxed),
            LOGGED.load(Ordering::Relaxed),
        );
        wait(Duration::from_millis(2_500));
        let allocated = ALLOCATIONS.load(Ordering::Relaxed) - before;
        (
            allocated,
            LOGGED.load(Ordering::Relaxed) - logged,
            events.load(Ordering::Relaxed) - e0,
            closes.load(Ordering::Relaxed) - c0,
        )
    };
    // Warm-up: every seis streaming, a few bars closed, every buffer at its working size.
    wait(Duration::from_secs(3));
    let off = window();
    // Logging on at `info`, as the command line installs it; a second of warm-up for the
    // threads' first look at the new subscriber.
    tracing::subscriber::set_global_default(tracing_subscriber::layer::SubscriberExt::with(
        tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::new("info"))
            .with_writer(std::io::stderr)
            .with_thread_names(true)
            .finish(),
        CountEvents,
    ))
    .expect("the only subscriber");
    wait(Duration::from_secs(1));
    let info = window();
    let stats = feed.stats();
    feed.shutdown(Duration::from_secs(5));
    drop(child.stdin.take());
    let _ = child.wait();
    let _ = drain.join();

    assert_eq!(stats.reconnects, 0);
    for (logging, (allocated, logged, taken, closed)) in [("off", off), ("at info", info)] {
        assert!(
            taken >= 500 && closed >= SEISES as u64,
            "enough live traffic in the window (logging {logging}): {taken} events, {closed} \
             closes"
        );
        assert_eq!(
            logged, 0,
            "logging {logging}: {logged} events logged in the steady state (none per message \
             above trace)"
        );
        assert_eq!(
            allocated, 0,
            "logging {logging}: {allocated} allocations while {taken} live events ({closed} bar \
             closes) went through the engine"
        );
    }
}
