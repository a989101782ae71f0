//! Feeds arbitrary bytes to the LAN frame reader as a capture socket would hand them over. It
//! must never panic, and whatever it identifies must be a device's address (R29).
#![no_main]

use libfuzzer_sys::fuzz_target;
use tally_common::lan::identify;

fuzz_target!(|frame: &[u8]| {
    if let Some((mac, _)) = identify(frame) {
        assert!(mac.is_device(), "{mac} names no device");
    }
});
