//! loom model checks of `tvdatafeed`'s concurrent structures live in `tests/`.
//!
//! Run them with:
//!
//! ```text
//! RUSTFLAGS="--cfg tvdatafeed_loom" CARGO_TARGET_DIR=target/loom \
//!     cargo test -p loom-tests --release
//! ```
//!
//! No preemption bound is set: loom explores every interleaving of every model. Without the
//! cfg the test files compile to nothing.
//!
//! `loom-tests/mutations.sh` checks the models themselves: it applies each of a list of
//! mutations (a weakened ordering, a dropped unpark, a stale thread registration, a snapshot
//! loaded outside the writer lock...) to a scratch copy of the sources and requires a model to
//! fail on each one, with the message expected for it.
