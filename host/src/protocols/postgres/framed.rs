//! Reading whole messages during the start-up phase, where every message is
//! small and the relay needs it decoded. (After start-up, `pump` streams.)

use bytes::{Buf, BytesMut};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use super::RelayError;
use crate::protocols::postgres::codec::{peek_frame, startup};

/// Reads one untagged start-up packet.
pub async fn read_startup_packet<S: AsyncRead + Unpin>(s: &mut S) -> Result<Vec<u8>, RelayError> {
    let mut len = [0u8; 4];
    match s.read_exact(&mut len).await {
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => {
            return Err(RelayError::ClientGone)
        }
        Err(e) => return Err(e.into()),
    }
    let n = startup::peek_startup_len(&len)?.ok_or(RelayError::ClientGone)?;
    let mut packet = vec![0u8; n];
    packet[..4].copy_from_slice(&len);
    s.read_exact(&mut packet[4..]).await?;
    Ok(packet)
}

/// Reads one complete tagged message, returning its bytes; `None` at EOF
/// before a message started.
pub async fn read_message<S: AsyncRead + Unpin>(
    s: &mut S,
    buf: &mut BytesMut,
    max: usize,
) -> Result<Option<BytesMut>, RelayError> {
    loop {
        if let Some(h) = peek_frame(buf, max)? {
            if buf.len() >= h.total_len {
                return Ok(Some(buf.split_to(h.total_len)));
            }
            buf.reserve(h.total_len - buf.len());
        } else {
            buf.reserve(1024);
        }
        if s.read_buf(buf).await? == 0 {
            if buf.is_empty() {
                return Ok(None);
            }
            return Err(RelayError::Io(std::io::ErrorKind::UnexpectedEof.into()));
        }
    }
}

/// Writes and flushes a buffer, then clears it.
pub async fn send<S: AsyncWrite + Unpin>(s: &mut S, buf: &mut BytesMut) -> std::io::Result<()> {
    s.write_all(buf).await?;
    s.flush().await?;
    buf.advance(buf.len());
    Ok(())
}
