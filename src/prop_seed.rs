//! The configuration of every property test: its case count and a seed that is printed, so
//! that any failure (in CI too, where the regression file written next to the source is lost
//! with the clone) can be re-run exactly: `PROPTEST_RNG_SEED=<seed> cargo test <name>`.
//!
//! Shared by the library's unit tests and the integration tests (`#[path]`-included there).

use proptest::test_runner::{Config, RngSeed};

/// `cases` cases unless `PROPTEST_CASES` says otherwise (a longer hunt), on the seed in
/// `PROPTEST_RNG_SEED` or else a fresh random one; either way the seed is printed (the test
/// harness shows it with the failure).
#[expect(
    clippy::print_stderr,
    reason = "the seed must reach the log of a failed run"
)]
pub(crate) fn config(cases: u32) -> Config {
    let base = Config::default();
    let cases = std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(cases);
    let seed = match base.rng_seed {
        RngSeed::Fixed(seed) => seed,
        RngSeed::Random => {
            use std::hash::{BuildHasher, Hasher};
            let mut h = std::collections::hash_map::RandomState::new().build_hasher();
            h.write_u64(u64::from(std::process::id()));
            h.finish()
        }
    };
    eprintln!("proptest: PROPTEST_RNG_SEED={seed} PROPTEST_CASES={cases} reproduces this run");
    Config {
        cases,
        rng_seed: RngSeed::Fixed(seed),
        ..base
    }
}
