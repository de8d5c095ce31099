//! loom model checks of `tvdatafeed`'s concurrent structures live in `tests/`.
//!
//! Run them with:
//!
//! ```text
//! RUSTFLAGS="--cfg tvdatafeed_loom" LOOM_MAX_PREEMPTIONS=2 \
//!     CARGO_TARGET_DIR=target/loom cargo test -p loom-tests --release
//! ```
//!
//! Without the cfg the test files compile to nothing.
