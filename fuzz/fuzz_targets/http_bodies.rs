//! Fuzz target: the properties are asserted in `tvdatafeed::internal::http_bodies`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    tvdatafeed::internal::http_bodies(data);
});
