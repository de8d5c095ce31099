//! The loom shim: every synchronizing primitive the crate uses, from `std` or from `loom`.
//!
//! The engine imports atomics, `Arc`, `Mutex`, `Condvar`, threads, `spin_loop` and `UnsafeCell`
//! only from here, so that building with `RUSTFLAGS="--cfg tvdatafeed_loom"` lets loom see every
//! operation (loom only models what goes through its own types). `clippy.toml` forbids the
//! `std` originals everywhere else. The shape follows `crossbeam-utils`' private `primitive`
//! module, plus the `UnsafeCell` wrapper with loom's `with`/`with_mut` API that
//! `crossbeam-epoch` and the loom docs recommend.
//!
//! The cfg is crate-prefixed (`tvdatafeed_loom`, not `loom`), so a downstream crate that runs
//! its own `--cfg loom` does not switch this crate to loom types.
//!
//! On the `std` side the types are aliases and the functions thin `#[inline]` wrappers rather
//! than `pub use` re-exports: clippy's `disallowed_types`/`disallowed_methods` resolve through a
//! re-export to the original item, so only an alias or a wrapper confines the `#[expect]` to
//! this file.
//!
//! What this module may not do: hold state, or add behaviour that differs between the two
//! backends beyond what loom cannot model (see [`Deadline`] and [`thread::park_timeout`]).

#![allow(
    dead_code,
    unused_imports,
    unreachable_pub,
    reason = "a shim: not every backend item is used by every build (lib, loom, benches)"
)]

#[cfg(not(tvdatafeed_loom))]
pub(crate) use self::std_backend::*;

/// The `std` primitives for code loom does not model (the transport, the simulator, the
/// historical client, the engine's I/O driver), whatever the cfg: loom sees only the ring, the
/// registry and what goes through the switched items above. Libraries that take a `std::sync::Arc`
/// (rustls) get one from here under loom too.
pub(crate) mod plain {
    /// `std::sync::Arc`.
    #[expect(
        clippy::disallowed_types,
        reason = "the shim's unswitched std primitives, for code loom does not model"
    )]
    pub type Arc<T> = std::sync::Arc<T>;
    pub use std::sync::Weak;
    /// `std::sync::Mutex`.
    #[expect(
        clippy::disallowed_types,
        reason = "the shim's unswitched std primitives, for code loom does not model"
    )]
    pub type Mutex<T> = std::sync::Mutex<T>;
    /// `std::sync::Condvar`.
    #[expect(
        clippy::disallowed_types,
        reason = "the shim's unswitched std primitives, for code loom does not model"
    )]
    pub type Condvar = std::sync::Condvar;

    /// Atomics that loom does not model.
    pub mod atomic {
        pub use std::sync::atomic::Ordering;

        /// `std::sync::atomic::AtomicBool`.
        #[expect(
            clippy::disallowed_types,
            reason = "the shim's unswitched std primitives, for code loom does not model"
        )]
        pub type AtomicBool = std::sync::atomic::AtomicBool;
        /// `std::sync::atomic::AtomicU64`.
        #[expect(
            clippy::disallowed_types,
            reason = "the shim's unswitched std primitives, for code loom does not model"
        )]
        pub type AtomicU64 = std::sync::atomic::AtomicU64;
        /// `std::sync::atomic::AtomicUsize`.
        #[expect(
            clippy::disallowed_types,
            reason = "the shim's unswitched std primitives, for code loom does not model"
        )]
        pub type AtomicUsize = std::sync::atomic::AtomicUsize;
    }

    /// Threads loom does not model (always `std`).
    pub mod thread {
        pub use std::thread::{Builder, JoinHandle, Thread, current, park, park_timeout};
    }
}

#[cfg(tvdatafeed_loom)]
pub(crate) use self::loom_backend::*;

#[cfg(not(tvdatafeed_loom))]
mod std_backend {
    use std::time::{Duration, Instant};

    /// Atomics and fences (std backend).
    pub mod atomic {
        pub use std::sync::atomic::Ordering;

        /// `std::sync::atomic::AtomicBool`.
        #[expect(
            clippy::disallowed_types,
            reason = "the loom shim is the one allowed use"
        )]
        pub type AtomicBool = std::sync::atomic::AtomicBool;
        /// `std::sync::atomic::AtomicUsize`.
        #[expect(
            clippy::disallowed_types,
            reason = "the loom shim is the one allowed use"
        )]
        pub type AtomicUsize = std::sync::atomic::AtomicUsize;
        /// `std::sync::atomic::AtomicU64`.
        #[expect(
            clippy::disallowed_types,
            reason = "the loom shim is the one allowed use"
        )]
        pub type AtomicU64 = std::sync::atomic::AtomicU64;

        /// `std::sync::atomic::fence`.
        #[inline(always)]
        pub fn fence(order: Ordering) {
            #[expect(
                clippy::disallowed_methods,
                reason = "the loom shim is the one allowed use"
            )]
            std::sync::atomic::fence(order);
        }
    }

    /// `std::sync::Arc`.
    #[expect(
        clippy::disallowed_types,
        reason = "the loom shim is the one allowed use"
    )]
    pub type Arc<T> = std::sync::Arc<T>;
    /// `std::sync::Mutex`.
    #[expect(
        clippy::disallowed_types,
        reason = "the loom shim is the one allowed use"
    )]
    pub type Mutex<T> = std::sync::Mutex<T>;
    pub use std::sync::MutexGuard;
    /// `std::sync::Condvar`.
    #[expect(
        clippy::disallowed_types,
        reason = "the loom shim is the one allowed use"
    )]
    pub type Condvar = std::sync::Condvar;

    /// Threads (std backend). Spawn through [`thread::Builder`] so every thread has a name.
    pub mod thread {
        pub use std::thread::{
            Builder, JoinHandle, Thread, ThreadId, current, park, park_timeout, yield_now,
        };
    }

    /// Spin-loop hint (std backend).
    pub mod hint {
        pub use std::hint::spin_loop;
    }

    /// `std::cell::UnsafeCell` with loom's closure-based access API.
    ///
    /// loom's `UnsafeCell` tracks every access to check that no read races a write; its API
    /// hands out raw pointers inside closures. This wrapper offers the same API over the `std`
    /// type, so the code using it compiles unchanged under both backends.
    #[derive(Debug)]
    #[repr(transparent)]
    pub struct UnsafeCell<T> {
        #[expect(
            clippy::disallowed_types,
            reason = "the loom shim is the one allowed use"
        )]
        inner: std::cell::UnsafeCell<T>,
    }

    impl<T> UnsafeCell<T> {
        /// Wraps `value`.
        #[inline]
        #[expect(
            clippy::disallowed_types,
            reason = "the loom shim is the one allowed use"
        )]
        pub const fn new(value: T) -> Self {
            Self {
                inner: std::cell::UnsafeCell::new(value),
            }
        }

        /// Runs `f` with a shared raw pointer to the contents.
        #[inline(always)]
        pub fn with<R>(&self, f: impl FnOnce(*const T) -> R) -> R {
            f(self.inner.get())
        }

        /// Runs `f` with an exclusive raw pointer to the contents.
        #[inline(always)]
        pub fn with_mut<R>(&self, f: impl FnOnce(*mut T) -> R) -> R {
            f(self.inner.get())
        }

        /// Unwraps the value.
        #[inline]
        pub fn into_inner(self) -> T {
            self.inner.into_inner()
        }
    }

    /// A point in time after which a blocking wait gives up.
    ///
    /// This is the crate's one read of the monotonic clock outside `live/`: blocking waits
    /// (the ring's `pop_timeout`, the registry's `wait_unused`) take a timeout, and this turns
    /// it into a deadline. Under loom the clock is frozen instead (see the loom backend).
    #[derive(Debug, Clone, Copy)]
    pub struct Deadline {
        /// `None`: the timeout is too large to represent, so the wait never times out.
        at: Option<Instant>,
    }

    impl Deadline {
        /// The deadline `timeout` from now.
        #[inline]
        pub fn after(timeout: Duration) -> Self {
            #[expect(
                clippy::disallowed_methods,
                reason = "the shim's one clock read, turning a wait's timeout into a deadline"
            )]
            let now = Instant::now();
            Self {
                at: now.checked_add(timeout),
            }
        }

        /// The time left, or `None` once the deadline has passed.
        #[inline]
        pub fn remaining(&self) -> Option<Duration> {
            match self.at {
                None => Some(Duration::MAX),
                Some(at) => {
                    #[expect(
                        clippy::disallowed_methods,
                        reason = "the shim's one clock read, checking a wait's deadline"
                    )]
                    let now = Instant::now();
                    at.checked_duration_since(now).filter(|d| !d.is_zero())
                }
            }
        }
    }
}

#[cfg(tvdatafeed_loom)]
mod loom_backend {
    use std::time::Duration;

    /// Atomics and fences (loom backend).
    pub mod atomic {
        pub use loom::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering, fence};
    }

    pub use loom::{
        cell::UnsafeCell,
        sync::{Arc, Condvar, Mutex, MutexGuard},
    };

    /// Threads (loom backend).
    pub mod thread {
        pub use loom::thread::{Builder, JoinHandle, Thread, ThreadId, current, park, yield_now};

        /// loom has no `park_timeout`: this parks without a timeout.
        ///
        /// That is deliberate, not a gap: a wait that only makes progress because its timeout
        /// fires would hide a lost wake-up in production; under loom it shows up as a
        /// deadlock instead.
        pub fn park_timeout(_timeout: std::time::Duration) {
            loom::thread::park();
        }
    }

    /// Spin-loop hint (loom backend: a `yield_now`, so spin loops let loom switch threads).
    pub mod hint {
        pub use loom::hint::spin_loop;
    }

    /// A deadline on a frozen clock: it expires at once for a zero timeout and never otherwise.
    ///
    /// loom replays each interleaving and needs every execution to be deterministic, so the
    /// real clock must not steer control flow. With the clock frozen, a blocking wait ends only
    /// through the event it waits for, which is what the models check.
    #[derive(Debug, Clone, Copy)]
    pub struct Deadline {
        timeout: Duration,
    }

    impl Deadline {
        /// The deadline `timeout` from now.
        pub fn after(timeout: Duration) -> Self {
            Self { timeout }
        }

        /// The time left, or `None` if the timeout was zero.
        pub fn remaining(&self) -> Option<Duration> {
            Some(self.timeout).filter(|d| !d.is_zero())
        }
    }
}
