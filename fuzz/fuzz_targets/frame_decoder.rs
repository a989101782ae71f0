//! Feeds arbitrary bytes to the frame decoder as both peers would read them, frame after frame.
//! It must never panic; "incomplete" must only ever ask for more bytes than it was given.
#![no_main]

use libfuzzer_sys::fuzz_target;
use tally_common::wire::frame::{DecodeError, decode, encode};
use tally_common::wire::{AgentMessage, CollectorMessage};

fuzz_target!(|data: &[u8]| {
    let mut rest = data;
    while let Ok((message, used)) = decode::<AgentMessage>(rest) {
        // Whatever decodes must encode back to the same message.
        let again = encode(&message).expect("a decoded message re-encodes");
        assert_eq!(decode::<AgentMessage>(&again).map(|(m, _)| m), Ok(message));
        rest = &rest[used..];
    }
    if let Err(DecodeError::Incomplete { needed }) = decode::<AgentMessage>(rest) {
        assert!(needed > rest.len());
    }
    let _ = decode::<CollectorMessage>(data);
});
