//! Frames: a 4-byte big-endian payload length, then the postcard-encoded message.
//!
//! [`decode`] tells "need more bytes" ([`DecodeError::Incomplete`]) from input that can never
//! become a frame ([`DecodeError::TooLarge`], [`DecodeError::Invalid`]); it never panics, and it
//! refuses an oversized length as soon as the 4 length bytes are in, before any payload arrives.

use serde::Serialize;
use serde::de::DeserializeOwned;

/// The largest payload a frame may carry: 1 MiB.
pub const MAX_FRAME_LEN: usize = 1 << 20;
/// Bytes of the length prefix.
pub const HEADER_LEN: usize = 4;

#[derive(Debug, thiserror::Error)]
pub enum EncodeError {
    #[error("message of {0} bytes is over the 1 MiB frame limit")]
    TooLarge(usize),
    #[error("message could not be encoded: {0}")]
    Postcard(#[from] postcard::Error),
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    /// Not an error of the peer: at least `needed` bytes in all are required before a frame can
    /// be decoded.
    #[error("incomplete frame: {needed} bytes needed")]
    Incomplete { needed: usize },
    #[error("frame of {len} bytes is over the 1 MiB limit")]
    TooLarge { len: u64 },
    #[error("invalid frame: {0}")]
    Invalid(String),
}

/// Appends `message` as one frame to `out`.
pub fn encode_into<T: Serialize>(message: &T, out: &mut Vec<u8>) -> Result<(), EncodeError> {
    let payload = postcard::to_allocvec(message)?;
    if payload.len() > MAX_FRAME_LEN {
        return Err(EncodeError::TooLarge(payload.len()));
    }
    out.extend_from_slice(&(payload.len() as u32).to_be_bytes());
    out.extend_from_slice(&payload);
    Ok(())
}

/// `message` as one frame.
pub fn encode<T: Serialize>(message: &T) -> Result<Vec<u8>, EncodeError> {
    let mut out = Vec::new();
    encode_into(message, &mut out)?;
    Ok(out)
}

/// Decodes the frame at the start of `buf`; returns the message and the bytes it took.
pub fn decode<T: DeserializeOwned>(buf: &[u8]) -> Result<(T, usize), DecodeError> {
    let Some(header) = buf.first_chunk::<HEADER_LEN>() else {
        return Err(DecodeError::Incomplete { needed: HEADER_LEN });
    };
    let len = u32::from_be_bytes(*header) as usize;
    if len > MAX_FRAME_LEN {
        return Err(DecodeError::TooLarge { len: len as u64 });
    }
    if len == 0 {
        return Err(DecodeError::Invalid("empty frame".into()));
    }
    let total = HEADER_LEN + len;
    let Some(payload) = buf.get(HEADER_LEN..total) else {
        return Err(DecodeError::Incomplete { needed: total });
    };
    match postcard::take_from_bytes::<T>(payload) {
        Ok((message, [])) => Ok((message, total)),
        Ok((_, rest)) => Err(DecodeError::Invalid(format!("{} bytes left over after the message", rest.len()))),
        Err(e) => Err(DecodeError::Invalid(e.to_string())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_header_is_the_big_endian_payload_length() {
        let frame = encode(&(7u8, 300u16)).unwrap();
        assert_eq!(frame, [0, 0, 0, 3, 7, 0xac, 0x02]);
        assert_eq!(decode::<(u8, u16)>(&frame), Ok(((7, 300), 7)));
    }

    #[test]
    fn an_oversized_length_is_refused_before_the_payload_arrives() {
        assert_eq!(decode::<u8>(&[0, 0x10, 0, 1]), Err(DecodeError::TooLarge { len: (1 << 20) + 1 }));
        assert_eq!(decode::<u8>(&[0, 0x10, 0, 0]), Err(DecodeError::Incomplete { needed: 4 + (1 << 20) }));
    }

    #[test]
    fn encoding_over_the_limit_fails_and_leaves_the_buffer_as_it_was() {
        let mut out = vec![1, 2, 3];
        let big = vec![0u8; MAX_FRAME_LEN];
        assert!(matches!(encode_into(&big, &mut out), Err(EncodeError::TooLarge(_))));
        assert_eq!(out, [1, 2, 3]);
    }
}
