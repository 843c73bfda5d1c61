//! Output that plugins watch (`ssh-output`), cut into whole lines first:
//! a secret is judged whole, not in the pieces the host happened to send.
//!
//! Each stream (stdout, stderr) keeps what follows its last line end until
//! the rest arrives. A line longer than [`MAX_LINE`] is passed on in
//! pieces of that size (cut where a UTF-8 character starts). What is held
//! is passed on when the command ends — and, on a terminal, when no more
//! output follows it within [`QUIET`] (a shell's prompt has no line end).

use std::time::Duration;

use crate::policy::SshStream;

/// The longest piece of output judged at once.
pub const MAX_LINE: usize = 16 * 1024;

/// How long a terminal's partial line waits for the rest of its line.
pub const QUIET: Duration = Duration::from_millis(50);

/// The two streams' partial lines.
#[derive(Debug, Default)]
pub struct Lines {
    stdout: Vec<u8>,
    stderr: Vec<u8>,
}

impl Lines {
    fn held(&mut self, stream: SshStream) -> &mut Vec<u8> {
        match stream {
            SshStream::Stdout => &mut self.stdout,
            SshStream::Stderr => &mut self.stderr,
        }
    }

    /// Adds `data` of `stream`; what is ready to be judged: through the
    /// last line end, or pieces of [`MAX_LINE`] of a longer line. The
    /// rest is held.
    pub fn push(&mut self, stream: SshStream, data: &[u8]) -> Option<Vec<u8>> {
        let held = self.held(stream);
        held.extend_from_slice(data);
        let cut = match held.iter().rposition(|&b| b == b'\n') {
            Some(end) => end + 1,
            None if held.len() >= MAX_LINE => char_start(held, held.len() - held.len() % MAX_LINE),
            None => return None,
        };
        if cut == 0 {
            return None;
        }
        let rest = held.split_off(cut);
        Some(std::mem::replace(held, rest))
    }

    /// Everything held for `stream`.
    pub fn take(&mut self, stream: SshStream) -> Option<Vec<u8>> {
        let held = std::mem::take(self.held(stream));
        (!held.is_empty()).then_some(held)
    }

    /// Whether a partial line is held.
    pub fn holding(&self) -> bool {
        !self.stdout.is_empty() || !self.stderr.is_empty()
    }
}

/// The last place at or before `at` in `bytes` where a UTF-8 character
/// starts (at most three bytes back), or `at` when none is near.
fn char_start(bytes: &[u8], at: usize) -> usize {
    (at.saturating_sub(3)..=at)
        .rev()
        .find(|&i| i == bytes.len() || (bytes[i] & 0xC0) != 0x80)
        .unwrap_or(at)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn whole_lines_are_ready_and_the_rest_waits() {
        let mut lines = Lines::default();
        assert_eq!(lines.push(SshStream::Stdout, b"AKIAIOSF"), None);
        assert!(lines.holding());
        assert_eq!(
            lines.push(SshStream::Stdout, b"ODNN7EXAMPLE\nnext"),
            Some(b"AKIAIOSFODNN7EXAMPLE\n".to_vec())
        );
        // Streams are held apart.
        assert_eq!(
            lines.push(SshStream::Stderr, b"err\n"),
            Some(b"err\n".to_vec())
        );
        assert_eq!(lines.take(SshStream::Stdout), Some(b"next".to_vec()));
        assert_eq!(lines.take(SshStream::Stdout), None);
        assert!(!lines.holding());
    }

    #[test]
    fn a_long_line_is_judged_in_pieces_cut_between_characters() {
        let mut lines = Lines::default();
        let mut long = vec![b'a'; MAX_LINE - 1];
        long.extend_from_slice("é".as_bytes());
        long.extend_from_slice(b"tail");
        let ready = lines.push(SshStream::Stdout, &long).expect("a piece");
        assert_eq!(
            ready.len(),
            MAX_LINE - 1,
            "cut before the two-byte character"
        );
        assert_eq!(
            lines.take(SshStream::Stdout),
            Some(["é".as_bytes(), b"tail".as_slice()].concat())
        );
    }
}
