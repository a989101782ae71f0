//! Messages on an agent's stream: frames read and written, a refusal said before the connection
//! closes, the collectors an agent may use (R30).

use std::time::Duration;

use tally_common::wire::frame::{self, DecodeError};
use tally_common::wire::{AgentMessage, CollectorList, CollectorMessage, ErrorCode, ErrorMessage};

use crate::metrics;

/// Reads frames from a QUIC stream.
pub(super) struct Frames {
    pub(super) recv: quinn::RecvStream,
    pub(super) buf: Vec<u8>,
}

impl Frames {
    /// The next message; `Ok(None)` at the end of the stream.
    pub(super) async fn next(&mut self) -> Result<Option<AgentMessage>, ErrorCode> {
        loop {
            match frame::decode::<AgentMessage>(&self.buf) {
                Ok((message, used)) => {
                    self.buf.drain(..used);
                    return Ok(Some(message));
                }
                Err(DecodeError::Incomplete { .. }) => {}
                Err(DecodeError::TooLarge { .. }) => return Err(ErrorCode::FrameTooLarge),
                Err(DecodeError::Invalid(_)) => return Err(ErrorCode::ProtocolViolation),
            }
            match self.recv.read_chunk(64 * 1024, true).await {
                Ok(Some(chunk)) => self.buf.extend_from_slice(&chunk.bytes),
                Ok(None) if self.buf.is_empty() => return Ok(None),
                Ok(None) => return Err(ErrorCode::ProtocolViolation),
                Err(_) => return Ok(None),
            }
        }
    }
}

pub(super) async fn send(stream: &mut quinn::SendStream, message: &CollectorMessage) -> Result<(), ()> {
    let bytes = frame::encode(message).map_err(|_| ())?;
    stream.write_all(&bytes).await.map_err(|_| ())
}

/// Tells the peer why, then closes the connection with the same code.
pub(super) async fn refuse(
    conn: &quinn::Connection,
    stream: Option<&mut quinn::SendStream>,
    code: ErrorCode,
    message: String,
) {
    metrics::get().refused(code);
    if let Some(stream) = stream {
        let _ = send(stream, &CollectorMessage::Error(ErrorMessage { code, message: message.clone() })).await;
        let _ = stream.finish();
        let _ = tokio::time::timeout(Duration::from_secs(1), stream.stopped()).await;
    }
    conn.close(u32::from(code).into(), message.as_bytes());
}

/// Tells a version-3 agent the collectors it may use, when they are configured (R30).
pub(super) async fn tell_collectors(tx: &mut quinn::SendStream, addresses: &[String]) -> Result<(), ()> {
    if addresses.is_empty() {
        return Ok(());
    }
    send(tx, &CollectorMessage::Collectors(CollectorList { addresses: addresses.to_vec() })).await.map_err(|_| ())
}
