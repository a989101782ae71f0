//! tally-fuzz's `agent_config` target under libFuzzer (see `tally_fuzz::targets::agent_config`).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| tally_fuzz::targets::agent_config(data));
