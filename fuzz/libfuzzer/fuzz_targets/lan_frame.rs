//! tally-fuzz's `lan_frame` target under libFuzzer (see `tally_fuzz::targets::lan_frame`).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| tally_fuzz::targets::lan_frame(data));
