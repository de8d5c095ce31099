//! The cost of logging on the live path: the default engine setup end to end with no
//! `tracing` subscriber, then with one installed at `info` writing to stderr (as
//! `tvdatafeed --log info` does), then with that subscriber's filter turned off, then at
//! `info` again, in one process. A subscriber cannot be removed once installed, so the runs
//! with it are interleaved by reloading its filter; the section runs last.

use std::time::Duration;

use tracing_subscriber::EnvFilter;
use tvdatafeed::{IoWait, WaitStrategy};

use crate::{
    Mode,
    e2e::{Outcome, Setup, Take, engine, row},
};

fn q(o: &Outcome, q: f64) -> u64 {
    o.hist.value_at_quantile(q)
}

pub(crate) fn section(mode: &Mode) {
    let (warm, run) = if mode.full {
        (Duration::from_secs(2), Duration::from_secs(10))
    } else {
        (Duration::from_millis(300), Duration::from_millis(500))
    };
    let sizes: &[usize] = if mode.full { &[1, 100] } else { &[1] };
    let setup = Setup {
        io: IoWait::Block,
        wait: WaitStrategy::default(),
        take: Take::Callback,
    };
    println!("\n## Logging: the default setup end to end, without and with a subscriber\n");
    println!(
        "Per run: {} s warm-up, {} s measured, as in the end-to-end section (1-minute bars, \
         every update delivered). Phases in this order: no subscriber; a `tracing-subscriber` \
         fmt subscriber at `info` on stderr; the same with its filter reloaded to `off`; at \
         `info` again. \"ratio\" = this row over the no-subscriber row of the same size, at p50 \
         / p99.\n",
        warm.as_secs_f64(),
        run.as_secs_f64()
    );
    println!(
        "| seises | phase | p50 | p99 | p99.9 | max | samples | ratio p50 / p99 | CPU/1k | \
         written | unmatched | lagged |"
    );
    println!(
        "| ---: | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"
    );
    let mut base = Vec::new();
    let print = |n: usize, phase: &str, o: &Outcome, base: Option<&Outcome>| {
        assert!(!o.hist.is_empty(), "{phase}: no update matched");
        let ratio = base.map_or_else(
            || "1.00 / 1.00".to_owned(),
            |b| {
                format!(
                    "{:.2} / {:.2}",
                    q(o, 0.5) as f64 / q(b, 0.5).max(1) as f64,
                    q(o, 0.99) as f64 / q(b, 0.99).max(1) as f64
                )
            },
        );
        // The end-to-end row, with the phase for the reader and the ratio for "added".
        let r =
            row(n, o, None)
                .replacen(&o.name, phase, 1)
                .replacen(" - |", &format!(" {ratio} |"), 1);
        println!("{r}");
    };
    for &n in sizes {
        let o = engine(n, setup, warm, run);
        print(n, "no subscriber", &o, None);
        base.push(o);
    }
    let builder = tracing_subscriber::fmt()
        .with_env_filter(EnvFilter::new("info"))
        .with_writer(std::io::stderr)
        .with_ansi(false)
        .with_thread_names(true)
        .with_thread_ids(true)
        .with_filter_reloading();
    let handle = builder.reload_handle();
    builder.init();
    for (phase, filter) in [
        ("subscriber at info", "info"),
        ("subscriber, filter off", "off"),
        ("subscriber at info, again", "info"),
    ] {
        handle
            .reload(EnvFilter::new(filter))
            .expect("the subscriber is installed");
        for (i, &n) in sizes.iter().enumerate() {
            let o = engine(n, setup, warm, run);
            print(n, phase, &o, Some(&base[i]));
        }
    }
}
