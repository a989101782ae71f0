//! tally-fuzz's `frame_decoder` target under libFuzzer (see `tally_fuzz::targets::frame_decoder`).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| tally_fuzz::targets::frame_decoder(data));
