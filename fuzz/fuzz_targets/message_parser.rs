//! Fuzz target: the properties are asserted in `tvdatafeed::internal::fuzzing::message_parser`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    tvdatafeed::internal::fuzzing::message_parser(data);
});
