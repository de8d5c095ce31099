//! Fuzz target: the live engine's core against arbitrary server bytes, commands, time, drops
//! and refusals; the properties are asserted in `tvdatafeed::internal::engine_core`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    tvdatafeed::internal::engine_core(data);
});
