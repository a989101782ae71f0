//! tally-fuzz's `csv_import` target under libFuzzer (see `tally_fuzz::targets::csv_import`).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| tally_fuzz::targets::csv_import(data));
