//! tally-fuzz's `events_body` target under libFuzzer (see `tally_fuzz::targets::events_body`).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| tally_fuzz::targets::events_body(data));
