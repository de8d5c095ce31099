//! A global allocator that counts allocations per thread, for the zero-allocation test and the
//! decode bench. Included with `#[path]` by the binaries that want it (never from
//! `util/mod.rs`: it replaces the allocator of whatever includes it).
//!
//! Counts are per thread so that the test harness's own threads (output capture, the runner)
//! cannot add to what a measured thread does.

use std::{
    alloc::{GlobalAlloc, Layout, System},
    cell::Cell,
};

/// Counts allocations and reallocations, forwards everything to `System`.
pub(crate) struct Counting;

thread_local! {
    // `const` initialisation: no lazy init, no destructor, so no allocation inside the
    // allocator.
    static ALLOCS: Cell<u64> = const { Cell::new(0) };
}

fn bump() {
    // `try_with`: a thread being torn down may allocate after its locals are gone.
    let _ = ALLOCS.try_with(|n| n.set(n.get() + 1));
}

/// Allocations (and reallocations) made so far by the calling thread.
pub(crate) fn allocations() -> u64 {
    ALLOCS.with(Cell::get)
}

// SAFETY: forwards every call to `System` unchanged; only counts.
unsafe impl GlobalAlloc for Counting {
    // SAFETY: the caller upholds `GlobalAlloc::alloc`'s contract; passed on unchanged.
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        bump();
        // SAFETY: same contract as the caller's.
        unsafe { System.alloc(layout) }
    }
    // SAFETY: the caller upholds `GlobalAlloc::dealloc`'s contract; passed on unchanged.
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: same contract as the caller's.
        unsafe { System.dealloc(ptr, layout) }
    }
    // SAFETY: the caller upholds `GlobalAlloc::realloc`'s contract; passed on unchanged.
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        bump();
        // SAFETY: same contract as the caller's.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;
