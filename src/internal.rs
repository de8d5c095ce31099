//! Internals reachable by the crate's own benches, fuzz targets and loom tests.
//!
//! Not public API: nothing here follows semver, and it may change in any release.

pub use crate::protocol::fuzzing;
pub use crate::registry::{ConsumerId, Entry, Registry, Removed, Snapshot};
