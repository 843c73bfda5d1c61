//! Where a direction's scan of its read buffer stands: the messages found,
//! the bytes already written or cut out, the rest of a message that did not
//! fit, carried into the next read; and how the buffer grows and shrinks.
//! Both directions scan with it, so the loop head (go on with a carried
//! message, find the next header, wait for a whole message) is written once.
//!
//! The buffer itself stays with the direction (a statement read out of it
//! is borrowed while the scan writes what is pending before it), so every
//! method is given the buffer it works on.
//!
//! Memory is bounded: a buffer grows only as bytes arrive (a read chunk,
//! or doubling what is there), never to a length announced on the wire,
//! and gives the memory back once a large message has gone through.

use bytes::{Buf, BytesMut};
use tokio::io::{AsyncWrite, AsyncWriteExt};

use super::super::budget::{BudgetError, BudgetShare};
use super::super::RelayError;
use crate::protocols::postgres::codec::{peek_frame, FrameHeader};

/// Read buffer growth step.
pub(super) const READ_CHUNK: usize = 32 * 1024;

/// What happens to the rest of a message that did not fit in the buffer.
#[derive(Clone, Copy)]
enum Carry {
    None,
    Forward(usize),
    Skip(usize),
}

/// The scan over one direction's read buffer.
pub(super) struct Scan {
    /// First byte not yet written or cut out.
    start: usize,
    /// First byte not yet examined: where the current message starts.
    pos: usize,
    /// The rest of the message at the end of the buffer.
    carry: Carry,
    /// Announced length of the incomplete message at `pos` (0: none).
    need: usize,
    /// Whether the buffer grew past a few chunks since it was last small.
    large: bool,
    /// Largest message accepted.
    max: usize,
}

impl Scan {
    /// A scan accepting messages up to `max` bytes.
    pub fn new(max: usize) -> Self {
        Self {
            start: 0,
            pos: 0,
            carry: Carry::None,
            need: 0,
            large: false,
            max,
        }
    }

    /// Whether no message is being carried into the next read (a message
    /// of the gateway's own may go out only between messages).
    pub fn between_messages(&self) -> bool {
        matches!(self.carry, Carry::None)
    }

    /// Covers the incomplete message at the front of the buffer with the
    /// session's budget share before the buffer grows for it; gives the
    /// share back once no message larger than a chunk is pending.
    pub fn cover_pending(
        &self,
        buf: &BytesMut,
        share: &mut BudgetShare,
    ) -> Result<(), BudgetError> {
        if self.need > READ_CHUNK {
            share.hold(self.need, next_capacity(buf.len(), self.need))
        } else {
            share.release();
            Ok(())
        }
    }

    /// Ensures room for the next read: the buffer grows toward the
    /// incomplete message at its front by [`next_capacity`], never to its
    /// announced length at once, so a length on the wire costs memory only
    /// as its bytes arrive.
    pub fn make_room(&mut self, buf: &mut BytesMut) {
        let want = next_capacity(buf.len(), self.need);
        if buf.capacity() < want || buf.capacity() - buf.len() < READ_CHUNK / 4 {
            buf.reserve(want.saturating_sub(buf.len()).max(READ_CHUNK));
        }
        self.large |= buf.capacity() > 8 * READ_CHUNK;
    }

    /// Starts a scan from the front of the buffer.
    pub fn begin(&mut self) {
        self.need = 0;
        self.start = 0;
        self.pos = 0;
    }

    /// The next message's header, after going on with a message begun in
    /// an earlier read (forwarded bytes join what is pending, skipped ones
    /// are cut out). `None`: the buffer is done, read more.
    pub async fn next<W: AsyncWrite + Unpin>(
        &mut self,
        wr: &mut W,
        buf: &[u8],
    ) -> Result<Option<FrameHeader>, RelayError> {
        let (n, skip) = match self.carry {
            Carry::None => return Ok(peek_frame(&buf[self.pos..], self.max)?),
            Carry::Forward(n) => (n, false),
            Carry::Skip(n) => (n, true),
        };
        let take = n.min(buf.len() - self.pos);
        if skip {
            write_out(wr, &buf[self.start..self.pos]).await?;
            self.start = self.pos + take;
        }
        self.pos += take;
        if n > take {
            self.carry = if skip {
                Carry::Skip(n - take)
            } else {
                Carry::Forward(n - take)
            };
            return Ok(None);
        }
        self.carry = Carry::None;
        Ok(peek_frame(&buf[self.pos..], self.max)?)
    }

    /// Where the current message starts in the buffer.
    pub fn at(&self) -> usize {
        self.pos
    }

    /// Bytes of the current message (and after it) in the buffer.
    pub fn available(&self, buf: &[u8]) -> usize {
        buf.len() - self.pos
    }

    /// Whether the whole message `h` is in the buffer; if not, the scan
    /// must stop here: the next read grows the buffer toward it.
    pub fn whole(&mut self, buf: &[u8], h: &FrameHeader) -> bool {
        if self.available(buf) < h.total_len {
            self.need = h.total_len;
            false
        } else {
            true
        }
    }

    /// The current message, whole (see [`Scan::whole`]).
    pub fn frame<'b>(&self, buf: &'b [u8], h: &FrameHeader) -> &'b [u8] {
        &buf[self.pos..self.pos + h.total_len]
    }

    /// The largest message accepted.
    pub fn max(&self) -> usize {
        self.max
    }

    /// Replaces the current (whole) message with `with` in the buffer, so
    /// everything after sees it as the peer's; `h` takes its length.
    pub fn splice(&self, buf: &mut BytesMut, h: &mut FrameHeader, with: &[u8]) {
        let tail = buf.split_off(self.pos + h.total_len);
        buf.truncate(self.pos);
        buf.extend_from_slice(with);
        buf.extend_from_slice(&tail);
        h.total_len = with.len();
    }

    /// Passes message `h` on: its bytes join what is pending, and what has
    /// not arrived follows as it arrives.
    pub fn forward(&mut self, buf: &[u8], h: &FrameHeader) {
        let take = h.total_len.min(self.available(buf));
        self.pos += take;
        if take < h.total_len {
            self.carry = Carry::Forward(h.total_len - take);
        }
    }

    /// Passes the whole messages up to `end` on.
    pub fn forward_to(&mut self, end: usize) {
        self.pos = end;
    }

    /// Writes what is pending before the current message.
    pub async fn send_pending<W: AsyncWrite + Unpin>(
        &mut self,
        wr: &mut W,
        buf: &[u8],
    ) -> std::io::Result<()> {
        write_out(wr, &buf[self.start..self.pos]).await?;
        self.start = self.pos;
        Ok(())
    }

    /// Writes what is pending and flushes it (before the relay waits).
    pub async fn flush_pending<W: AsyncWrite + Unpin>(
        &mut self,
        wr: &mut W,
        buf: &[u8],
    ) -> std::io::Result<()> {
        self.send_pending(wr, buf).await?;
        wr.flush().await
    }

    /// Cuts message `h` out (what is pending before it is written first);
    /// what has not arrived is cut as it arrives.
    pub async fn drop_message<W: AsyncWrite + Unpin>(
        &mut self,
        wr: &mut W,
        buf: &[u8],
        h: &FrameHeader,
    ) -> std::io::Result<()> {
        self.send_pending(wr, buf).await?;
        self.skip(buf, h);
        Ok(())
    }

    /// Moves past message `h` without writing it (nothing is pending
    /// before it); what has not arrived is cut as it arrives.
    fn skip(&mut self, buf: &[u8], h: &FrameHeader) {
        let take = h.total_len.min(self.available(buf));
        self.pos += take;
        self.start = self.pos;
        if take < h.total_len {
            self.carry = Carry::Skip(h.total_len - take);
        }
    }

    /// Writes `with` in place of message `h`.
    pub async fn replace<W: AsyncWrite + Unpin>(
        &mut self,
        wr: &mut W,
        buf: &[u8],
        h: &FrameHeader,
        with: &[u8],
    ) -> std::io::Result<()> {
        self.send_pending(wr, buf).await?;
        wr.write_all(with).await?;
        self.skip(buf, h);
        Ok(())
    }

    /// Writes `with` in place of the whole messages up to `end`.
    pub async fn replace_to<W: AsyncWrite + Unpin>(
        &mut self,
        wr: &mut W,
        buf: &[u8],
        end: usize,
        with: &[u8],
    ) -> std::io::Result<()> {
        self.send_pending(wr, buf).await?;
        wr.write_all(with).await?;
        self.pos = end;
        self.start = end;
        Ok(())
    }

    /// Ends a scan: writes what is pending, flushes, and drops what was
    /// consumed from the buffer.
    pub async fn finish<W: AsyncWrite + Unpin>(
        &mut self,
        wr: &mut W,
        buf: &mut BytesMut,
    ) -> std::io::Result<()> {
        self.flush_pending(wr, buf).await?;
        buf.advance(self.pos);
        self.start = 0;
        self.pos = 0;
        Ok(())
    }

    /// Gives back memory after a large message has gone through, so a
    /// session holds only small read buffers between messages — also when
    /// the bytes of the next message already arrived behind it (they are
    /// moved to a small buffer; the budget no longer counts the large one,
    /// so it must not stay).
    pub fn shrink_if_idle(&mut self, buf: &mut BytesMut) {
        if self.large && buf.len() < 8 * READ_CHUNK {
            let mut small = BytesMut::with_capacity(buf.len().max(READ_CHUNK));
            small.extend_from_slice(buf);
            *buf = small;
            self.large = false;
        }
    }
}

/// Capacity wanted before the next read when `len` bytes are buffered and
/// the message at the front is `need` bytes long: room for one read chunk,
/// or for as many bytes again as have arrived (doubling, so a large message
/// is copied a bounded number of times), but no more than the message needs.
/// Messages up to a chunk get their whole length at once (the fast path).
fn next_capacity(len: usize, need: usize) -> usize {
    let step = len.max(READ_CHUNK);
    need.min(len.saturating_add(step)).max(len + READ_CHUNK / 4)
}

/// Writes `bytes` unless there are none.
pub(super) async fn write_out<W: AsyncWrite + Unpin>(
    w: &mut W,
    bytes: &[u8],
) -> std::io::Result<()> {
    if !bytes.is_empty() {
        w.write_all(bytes).await?;
    }
    Ok(())
}
