//! The client's identification line (`SSH-2.0-OpenSSH_9.2p1 ...`), kept as
//! it passes: the session records it as its application name, as the
//! PostgreSQL side records `application_name`. The SSH library reads it
//! first thing and hands the protocol handler no copy, so the connection's
//! stream is wrapped and the line noted on its way through.

use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// The longest identification line SSH allows (RFC 4253: 255 bytes).
const MAX_IDENT: usize = 255;

/// The client's version, once its identification line has been read.
pub type Ident = Arc<Mutex<Option<String>>>;

/// A stream whose first line read is noted in an [`Ident`].
pub struct Sniffed<S> {
    inner: S,
    ident: Ident,
    line: Vec<u8>,
    done: bool,
}

impl<S> Sniffed<S> {
    /// Wraps `inner`; the version lands in the returned [`Ident`].
    pub fn new(inner: S) -> (Self, Ident) {
        let ident = Ident::default();
        let this = Self {
            inner,
            ident: ident.clone(),
            line: Vec::new(),
            done: false,
        };
        (this, ident)
    }

    fn note(&mut self, read: &[u8]) {
        for &b in read {
            if b == b'\n' || self.line.len() >= MAX_IDENT {
                self.done = true;
                break;
            }
            self.line.push(b);
        }
        if self.done {
            let text = String::from_utf8_lossy(&self.line);
            let text = text.trim_end_matches('\r');
            // `SSH-2.0-softwareversion comments`: the part after the
            // protocol version; only printable characters.
            let version = text.strip_prefix("SSH-2.0-").unwrap_or(text);
            let clean: String = version.chars().filter(|c| !c.is_control()).collect();
            *self.ident.lock().unwrap_or_else(|p| p.into_inner()) =
                (!clean.is_empty()).then_some(clean);
            self.line = Vec::new();
        }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Sniffed<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let polled = Pin::new(&mut self.inner).poll_read(cx, buf);
        if !self.done {
            let read = buf.filled()[before..].to_vec();
            self.note(&read);
        }
        polled
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Sniffed<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, data)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncReadExt;

    #[tokio::test]
    async fn the_first_line_is_noted_and_everything_passes() {
        let data = b"SSH-2.0-OpenSSH_9.2p1 Debian-2\r\n\x00\x00binary".to_vec();
        let (mut s, ident) = Sniffed::new(&data[..]);
        let mut got = Vec::new();
        let mut buf = [0u8; 5];
        loop {
            let n = s.read(&mut buf).await.unwrap();
            if n == 0 {
                break;
            }
            got.extend_from_slice(&buf[..n]);
        }
        assert_eq!(got, data);
        assert_eq!(
            ident.lock().unwrap().as_deref(),
            Some("OpenSSH_9.2p1 Debian-2")
        );
        let long = [b'a'; 400];
        let (mut s, ident) = Sniffed::new(&long[..]);
        let mut sink = Vec::new();
        s.read_to_end(&mut sink).await.unwrap();
        assert_eq!(
            ident.lock().unwrap().as_ref().map(String::len),
            Some(MAX_IDENT)
        );
    }
}
