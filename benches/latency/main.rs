//! The latency harness: end to end, bar close, cost and throughput, each against its baseline
//! measured in the same run. Figures and commands go in BENCHMARKS.md.
//!
//! ```text
//! cargo bench --bench latency                 # everything (about 20 minutes with Python)
//! cargo bench --bench latency -- e2e close    # only these sections
//! cargo bench --bench latency -- --test       # test mode: each section once, in seconds
//! ```
//!
//! Sections: `e2e` (simulator write → consumer, with bare tungstenite and bare TCP readers;
//! callback, pull and async `Stream` consumers),
//! `close` (interval boundary → callback on both close paths, and the close grace), `python`
//! (the same against Python `TvDatafeedLive` 2.1.1 at 3 and 30 seises; skipped with a message
//! when Python or the package is missing), `cost` (CPU per message, idle CPU, the cost of the
//! built-in stats), `throughput` (most live messages per second through the engine against a
//! decode-only reader), `hist` (`get_hist` of 5,000 bars against Python `TvDatafeed`),
//! `logging` (the end-to-end figures without and with a `tracing` subscriber at `info`; last,
//! since it installs the process' subscriber).
//!
//! `cargo test --benches` runs it in test mode (no `--bench` argument): the sections run once
//! with tiny sizes, and check only that every measurement matched what the simulator wrote.
//! Output is Markdown on stdout.
#![allow(
    missing_docs,
    unreachable_pub,
    clippy::print_stdout,
    clippy::print_stderr,
    clippy::disallowed_types,
    reason = "a benchmark program reports on stdout and shares plain std types between its threads"
)]

mod bare;
mod close;
mod common;
mod cost;
mod e2e;
mod logging;
mod memory;

/// How the harness was asked to run.
pub(crate) struct Mode {
    /// `cargo bench` (not `--test`): full sizes and durations.
    pub(crate) full: bool,
    /// Sections named on the command line (all when empty).
    sections: Vec<String>,
}

impl Mode {
    fn wants(&self, section: &str) -> bool {
        self.sections.is_empty() || self.sections.iter().any(|s| s == section)
    }
}

const SECTIONS: &[&str] = &[
    "e2e",
    "many",
    "close",
    "realistic",
    "realistic-1000",
    "realistic-modes",
    "python",
    "python-realistic",
    "cost",
    "throughput",
    "hist",
    "logging",
    "memory",
];

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.first().map(String::as_str) == Some(memory::CHILD) {
        memory::child(&args[1..]);
        return;
    }
    // `cargo bench` passes `--bench`; `cargo test --benches` does not; `-- --test` asks for
    // test mode under `cargo bench` too.
    let full = args.iter().any(|a| a == "--bench") && !args.iter().any(|a| a == "--test");
    let sections: Vec<String> = args
        .iter()
        .filter(|a| SECTIONS.contains(&a.as_str()))
        .cloned()
        .collect();
    let mode = Mode { full, sections };
    println!(
        "# latency harness ({})\n",
        if full { "full" } else { "test mode" }
    );
    println!("- machine: {}", common::machine());
    println!("- load average at start: {}", common::load());
    if mode.wants("e2e") {
        e2e::section(&mode);
    }
    if mode.wants("many") {
        e2e::many_section(&mode);
    }
    if mode.wants("close") {
        close::section(&mode);
    }
    if mode.wants("realistic") {
        close::realistic_section(&mode);
    }
    if mode.wants("realistic-1000") {
        close::realistic_many_section(&mode);
    }
    if mode.wants("realistic-modes") {
        close::realistic_modes_section(&mode);
    }
    if mode.wants("python") {
        close::python_section(&mode);
    }
    if mode.wants("python-realistic") {
        close::python_realistic_section(&mode);
    }
    if mode.wants("cost") {
        cost::section(&mode);
    }
    if mode.wants("throughput") {
        cost::throughput_section(&mode);
    }
    if mode.wants("hist") {
        cost::hist_section(&mode);
    }
    if mode.wants("memory") {
        memory::section(&mode);
    }
    // Last: it installs the process' tracing subscriber.
    if mode.wants("logging") {
        logging::section(&mode);
    }
    println!("\n- load average at end: {}", common::load());
}
