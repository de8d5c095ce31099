//! Live bars as an async `Stream` on a current-thread tokio runtime, from the simulator on
//! loopback: `cargo run --features sim,async --example async_stream`.
//!
//! The library depends on no runtime (the `async` feature adds `futures-core` only); tokio is
//! this example's choice. A `Subscription` is a `Stream` of `LiveEvent`s: a poll never blocks,
//! an empty ring registers the task's waker, and the engine wakes the task with the next event
//! or the end.
#![allow(clippy::print_stdout, reason = "an example prints its result")]
use std::time::Duration;

use futures_util::StreamExt;
use tvdatafeed::{
    LiveEvent, LiveFeed,
    sim::{Sim, SimConfig},
};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let sim = Sim::start(SimConfig::default())?; // a TradingView-protocol server on 127.0.0.1
    let feed = LiveFeed::builder().endpoint(sim.url())?.build()?;
    let btc = feed.new_seis("BINANCE:BTCUSDT", "1S")?; // blocking: before the runtime starts
    let mut bars = feed.subscribe(&btc)?;

    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()?;
    runtime.block_on(async {
        // Three closed bars, each awaited: the task sleeps in between (no thread of ours spins).
        let mut closed = 0;
        while closed < 3 {
            match tokio::time::timeout(Duration::from_secs(10), bars.next()).await {
                Ok(Some(LiveEvent::Closed(bar))) => {
                    closed += 1;
                    println!("{} closed at {}", bar.time, bar.close);
                }
                Ok(Some(other)) => println!("{other:?}"), // Disconnected, Reconnected, ...
                Ok(None) => break,                        // removed or shut down
                Err(_) => return Err("no bar within 10 s"),
            }
        }
        Ok(())
    })?;

    // Shutting down ends the stream: what was delivered comes out, then `Failed`, then `None`.
    let report = feed.shutdown(Duration::from_secs(5));
    let rest: Vec<LiveEvent> = runtime.block_on(bars.collect());
    println!("after shutdown ({report:?}): {rest:?}");
    Ok(())
}
