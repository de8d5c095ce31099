//! Download 300 hourly bars of 20 symbols over one connection from the simulator on loopback,
//! printing each result as it completes; one unknown symbol fails alone.
//!
//! `cargo run --example history_many`. Point `with_endpoint` at TradingView (the default) to
//! use it for real.
#![allow(clippy::print_stdout, reason = "an example prints its result")]
use tvdatafeed::{
    Client, ClientConfig, HistRequest,
    sim::{Sim, SimConfig},
};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let sim = Sim::start(SimConfig::default())?; // a TradingView-protocol server on 127.0.0.1
    let config = ClientConfig::from_env()?
        .with_endpoint(sim.url())?
        .with_max_in_flight(8); // series loading at once on the one connection (default 16)
    let client = Client::new(config);
    let mut requests = (0..19)
        .map(|i| HistRequest::new(format!("BINANCE:SYM{i}"), "1H", 300))
        .collect::<Result<Vec<_>, _>>()?;
    requests.push(HistRequest::new("BINANCE:INVALIDX", "1H", 300)?);
    // Results come in completion order; each request is given back with its own result.
    for (request, result) in client.get_hist_many(requests) {
        match result {
            Ok(h) => println!(
                "{}: {} bars, last close {}",
                request.symbol,
                h.bars.len(),
                h.bars.last().map_or(f64::NAN, |b| b.close)
            ),
            Err(e) => println!("{e}"), // names the symbol and interval
        }
    }
    println!("connections opened: {}", sim.counters().connections);
    Ok(())
}
