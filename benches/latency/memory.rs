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

/// The child: `--memory-child N RING KIND [idle]`, KIND one of `pull`, `callback`,
/// `dispatch` (callbacks on 2 dispatcher threads), `many` (one many-seis pull consumer),
/// `many-callback`; prints `stage value` lines. With `idle`, 1-minute bars and no updates:
/// it prints the process' threads and the engine threads' CPU over 5 s instead of the
/// memory stages.
pub(crate) fn child(args: &[String]) {
    let n: usize = args[0].parse().expect("N");
    let ring: usize = args[1].parse().expect("RING");
    let kind = args[2].as_str();
    let idle = args.get(3).is_some_and(|a| a == "idle");
    let update = if idle {
        Duration::from_secs(3_600)
    } else {
        Duration::from_millis(200)
    };
    let sim = Sim::start(common::sim_config(update)).expect("sim");
    let mut builder = LiveFeed::builder()
        .endpoint(sim.url())
        .expect("url")
        .ring_capacity(ring)
        .command_timeout(Duration::from_secs(120));
    if kind == "dispatch" {
        builder = builder.callback_threads(2);
    }
    let feed = builder.build().expect("feed");
    println!("feed {}", rss_kib());
    let interval = if idle { "1" } else { "1S" };
    let seises = common::subscribe_all(&feed, &common::symbols(n), interval.parse().expect("iv"));
    println!("subscribed {}", rss_kib());
    let mut subs = Vec::new();
    let mut many = None;
    let mut ids = Vec::new();
    match kind {
        "pull" => {
            for s in &seises {
                subs.push(feed.subscribe(s).expect("subscribe"));
            }
        }
        "callback" | "dispatch" => {
            for s in &seises {
                ids.push(feed.new_consumer(s, |_| {}).expect("consumer"));
            }
        }
        "many" => {
            let refs: Vec<&tvdatafeed::Seis> = seises.iter().map(|s| &**s).collect();
            many = Some(feed.subscribe_many(&refs).expect("subscribe_many"));
        }
        "many-callback" => {
            let refs: Vec<&tvdatafeed::Seis> = seises.iter().map(|s| &**s).collect();
            ids.push(
                feed.new_consumer_many(&refs, tvdatafeed::ConsumerOptions::default(), |_| {})
                    .expect("consumer"),
            );
        }
        other => panic!("unknown kind {other}"),
    }
    if idle {
        common::pause(Duration::from_secs(1));
        let before = common::thread_cpu();
        common::pause(Duration::from_secs(5));
        let after = common::thread_cpu();
        let cpu = common::cpu_between(&before, &after, &["tv-io", "tv-consumer", "tv-dispatch"]);
        println!("threads {}", after.len());
        println!("idle_cpu_us {}", cpu / 1_000);
    } else {
        // Bars flow for a few seconds: every consumer receives (and records latencies).
        for _ in 0..30 {
            common::pause(Duration::from_millis(100));
            for sub in &mut subs {
                while sub.try_recv().is_ok() {}
            }
            if let Some(m) = many.as_mut() {
                while m.try_recv().is_ok() {}
            }
        }
        let delivered: u64 = feed.stats().consumers.iter().map(|c| c.delivered).sum();
        assert!(delivered > 0, "no bar reached a consumer");
        println!("consumers {}", rss_kib());
    }
    drop(subs);
    drop(many);
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

fn run_child(n: usize, ring: usize, kind: &str, idle: bool) -> Vec<(String, u64)> {
    let exe = std::env::current_exe().expect("own path");
    let mut args = vec![
        CHILD.to_owned(),
        n.to_string(),
        ring.to_string(),
        kind.to_owned(),
    ];
    if idle {
        args.push("idle".to_owned());
    }
    let out = Command::new(exe)
        .args(&args)
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
         \"consumer\" is the engine's own (ring, histograms, and for callbacks a thread; \
         `dispatch` callbacks share 2 dispatcher threads; `many` and `many-callback` are one \
         consumer for every seis, over n); \
         \"left after\" is the resident set after every consumer and seis was removed and the \
         feed shut down, over the feed alone.\n"
    );
    println!(
        "| consumer | ring | feed alone (KiB) | per seis subscribed | per consumer | left after (KiB) |"
    );
    println!("| --- | ---: | ---: | ---: | ---: | ---: |");
    let rings = [1024, 256];
    for kind in ["pull", "callback", "dispatch", "many", "many-callback"] {
        for &ring in &rings {
            if ring != default_ring && !matches!(kind, "pull" | "callback") {
                continue;
            }
            let r = run_child(n, ring, kind, false);
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
    println!(
        "\nIdle, per consumer mode ({n} seises of 1-minute bars, no updates; fresh process \
         each): the process' threads, and the engine's threads' CPU (tv-io, consumers, \
         dispatchers) over 5 s. Kinds: `dispatch` is a callback per seis on 2 dispatcher \
         threads; `many` one many-seis pull consumer; `many-callback` one many-seis callback \
         consumer.\n"
    );
    println!("| consumer | threads | engine CPU over 5 s | share of one core |");
    println!("| --- | ---: | ---: | ---: |");
    for kind in ["pull", "callback", "dispatch", "many", "many-callback"] {
        let r = run_child(n, default_ring, kind, true);
        let get = |k: &str| {
            r.iter()
                .find(|(s, _)| s == k)
                .map(|(_, v)| *v)
                .unwrap_or_else(|| panic!("no {k} stage: {r:?}"))
        };
        let (threads, us) = (get("threads"), get("idle_cpu_us"));
        println!(
            "| {kind} | {threads} | {:.1} ms | {:.2} % |",
            us as f64 / 1_000.0,
            us as f64 / 5_000_000.0 * 100.0
        );
    }
}
