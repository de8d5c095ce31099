//! Fuzz target: the properties are asserted in `tvdatafeed::internal::fuzzing::session`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    tvdatafeed::internal::fuzzing::session(data);
});
