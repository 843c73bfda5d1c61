//! `ReadyForQuery`: the end of every request cycle, with the transaction status.

use bytes::BytesMut;

use super::{frame, CodecError, MessageWriter};

/// Transaction status reported in `ReadyForQuery`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TransactionStatus {
    /// Not in a transaction block (`I`).
    Idle,
    /// In a transaction block (`T`).
    InTransaction,
    /// In a failed transaction block (`E`).
    Failed,
}

/// Decodes a complete `Z` frame.
pub fn decode(frame_bytes: &[u8]) -> Result<TransactionStatus, CodecError> {
    match frame::body(frame_bytes, b'Z')? {
        [b'I'] => Ok(TransactionStatus::Idle),
        [b'T'] => Ok(TransactionStatus::InTransaction),
        [b'E'] => Ok(TransactionStatus::Failed),
        _ => Err(CodecError::Invalid("transaction status")),
    }
}

/// Encodes a `Z` frame.
pub fn encode(buf: &mut BytesMut, status: TransactionStatus) {
    let b = match status {
        TransactionStatus::Idle => b'I',
        TransactionStatus::InTransaction => b'T',
        TransactionStatus::Failed => b'E',
    };
    MessageWriter::start(buf, Some(b'Z')).u8(b);
}
