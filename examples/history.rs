//! Download the last 300 hourly bars of BINANCE:BTCUSDT from the simulator on loopback.
//!
//! `cargo run --example history`. Point `with_endpoint` at TradingView (the default) to use it
//! for real.
#![allow(clippy::print_stdout, reason = "an example prints its result")]
use tvdatafeed::{
    Client, ClientConfig, HistOptions,
    sim::{Sim, SimConfig},
};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let sim = Sim::start(SimConfig::default())?; // a TradingView-protocol server on 127.0.0.1
    let client = Client::new(ClientConfig::from_env()?.with_endpoint(sim.url())?);
    let history = client.get_hist("BINANCE:BTCUSDT", "1H", 300, &HistOptions::default())?;
    for bar in history.bars.iter().rev().take(5) {
        println!(
            "{} o={} h={} l={} c={} v={:?}",
            bar.time, bar.open, bar.high, bar.low, bar.close, bar.volume
        );
    }
    println!(
        "{} closed bars; forming: {:?}",
        history.bars.len(),
        history.forming
    );
    Ok(())
}
