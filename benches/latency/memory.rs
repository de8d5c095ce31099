//! What a seis costs in memory: each configuration runs in a fresh child process (this
//! program re-executed with `--memory-child`), so that memory freed by one run and kept by the
//! allocator does not hide the next one's. Per stage, the child reports its resident set
//! (`VmRSS`): the feed alone; `n` seises subscribed (the in-process simulator's series
//! included); one consumer per seis after bars flowed (pull handles, or callback threads);
//! after every consumer and seis was removed and the feed shut down.

use std::{process::Command, time::Duration};

use tvdatafeed::{LiveFeed, sim::Sim};

use crate::{Mode, common};

/// The child's argument.
pub(crate) const CHILD: &str = "--memory-child";

fn rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|v| v.parse().ok())
        })
        .unwrap_or(0)
}

/// The child: `--memory-child N RING pull|callback`; prints `stage kib` lines.
pub(crate) fn child(args: &[String]) {
    let n: usize = args[0].parse().expect("N");
    let ring: usize = args[1].parse().expect("RING");
    let callbacks = args[2] == "callback";
    let sim = Sim::start(common::sim_config(Duration::from_millis(200))).expect("sim");
    let feed = LiveFeed::builder()
        .endpoint(sim.url())
        .expect("url")
        .ring_capacity(ring)
        .command_timeout(Duration::from_secs(120))
        .build()
        .expect("feed");
    println!("feed {}", rss_kib());
    let seises = common::subscribe_all(&feed, &common::symbols(n), "1S".parse().expect("1S"));
    println!("subscribed {}", rss_kib());
    let mut subs = Vec::new();
    let mut ids = Vec::new();
    for s in &seises {
        if callbacks {
            ids.push(feed.new_consumer(s, |_| {}).expect("consumer"));
        } else {
            subs.push(feed.subscribe(s).expect("subscribe"));
        }
    }
    // Bars flow for a few seconds: every consumer receives (and records latencies).
    for _ in 0..30 {
        common::pause(Duration::from_millis(100));
        for sub in &mut subs {
            while sub.try_recv().is_ok() {}
        }
    }
    let delivered: u64 = feed.stats().consumers.iter().map(|c| c.delivered).sum();
    assert!(delivered > 0, "no bar reached a consumer");
    println!("consumers {}", rss_kib());
    drop(subs);
    for id in ids {
        feed.del_consumer(id).expect("del_consumer");
    }
    for s in &seises {
        feed.del_seis(s).expect("del_seis");
    }
    drop(seises);
    assert!(feed.shutdown(Duration::from_secs(10)).is_clean());
    drop(feed);
    println!("after {}", rss_kib());
}

fn run_child(n: usize, ring: usize, kind: &str) -> Vec<(String, u64)> {
    let exe = std::env::current_exe().expect("own path");
    let out = Command::new(exe)
        .args([CHILD, &n.to_string(), &ring.to_string(), kind])
        .output()
        .expect("run the child");
    assert!(
        out.status.success(),
        "memory child failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| {
            let (k, v) = l.split_once(' ')?;
            Some((k.to_owned(), v.parse().ok()?))
        })
        .collect()
}

pub(crate) fn section(mode: &Mode) {
    let n = if mode.full { 1_000 } else { 20 };
    let default_ring = tvdatafeed::LiveFeedBuilder::DEFAULT_RING_CAPACITY;
    println!("\n## Memory: what a seis costs ({n} seises, 1-second bars, one consumer each)\n");
    println!(
        "Each row is a fresh process. KiB per seis = the stage's resident set minus the \
         previous stage's, over {n}. \"subscribed\" includes the in-process simulator's series; \
         \"consumer\" is the engine's own (ring, histograms, and for callbacks a thread); \
         \"left after\" is the resident set after every consumer and seis was removed and the \
         feed shut down, over the feed alone.\n"
    );
    println!(
        "| consumer | ring | feed alone (KiB) | per seis subscribed | per consumer | left after (KiB) |"
    );
    println!("| --- | ---: | ---: | ---: | ---: | ---: |");
    let rings = [1024, 256];
    for kind in ["pull", "callback"] {
        for &ring in &rings {
            let r = run_child(n, ring, kind);
            let get = |k: &str| {
                r.iter()
                    .find(|(s, _)| s == k)
                    .map(|(_, v)| *v)
                    .unwrap_or_else(|| panic!("no {k} stage: {r:?}"))
            };
            let (feed, sub, cons, after) = (
                get("feed"),
                get("subscribed"),
                get("consumers"),
                get("after"),
            );
            let per = |a: u64, b: u64| a.saturating_sub(b) as f64 / n as f64;
            println!(
                "| {kind} | {ring}{} | {feed} | {:.1} | {:.1} | {} |",
                if ring == default_ring {
                    " (default)"
                } else {
                    ""
                },
                per(sub, feed),
                per(cons, sub),
                after.saturating_sub(feed)
            );
        }
    }
}
