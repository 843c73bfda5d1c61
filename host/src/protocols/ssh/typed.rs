//! Lines typed in an interactive shell, reconstructed for `on-command-line`
//! from the client's keystrokes and the host's echo — best effort, which is
//! why a verdict on a typed line is advisory (an exec's is exact).
//!
//! The keystrokes give the line while they are plain typing: printable
//! characters, Backspace, Ctrl-U, Ctrl-W, Ctrl-C, and bracketed paste. A
//! key that moves the cursor, recalls history, completes or yanks (arrows,
//! Tab, Ctrl-R, Alt-…) makes the keystrokes unreliable: the line is then
//! read from the host's echo instead — the terminal line the shell drew,
//! minus the prompt it showed before the first key — and marked inexact.
//!
//! A shell without a terminal reads a script from its input: there every
//! line is held until its line end, judged exactly, and forwarded only if
//! allowed ([`Script`]).
//!
//! What is not a shell's command line is left alone: lines typed while a
//! full-screen program holds the terminal (its alternate screen), and the
//! line after a prompt that asks for a password is judged but flagged
//! [`TypedLine::secret`], so that its text is never stored.

use std::ops::Range;

/// The longest line kept, in bytes (keystrokes) or characters (echo);
/// beyond it the line is cut and marked inexact.
pub const MAX_TYPED: usize = 16 * 1024;

/// A line at its Enter, for the plugins.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TypedLine {
    /// The line's text (control sequences removed).
    pub text: String,
    /// Whether it is what was typed, key by key.
    pub exact: bool,
    /// Typed at a prompt that asked for a password: judged, never stored.
    pub secret: bool,
}

/// What to do with a piece of the client's input.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    /// Forward these bytes of the input.
    Pass(Range<usize>),
    /// The byte at this index is the Enter that ends a line: judge each
    /// reading of it (all must be allowed; the first is the one to
    /// record), then forward the Enter (or not).
    Enter(usize, Vec<TypedLine>),
    /// A whole line of a script (its line end included): forward it only
    /// if its readings are allowed (none: nothing to judge).
    Line(Vec<u8>, Vec<TypedLine>),
}

/// Where an escape sequence stands, between messages.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
enum Escape {
    #[default]
    None,
    /// After ESC.
    Started,
    /// After `ESC [`: the parameters so far (kept short).
    Csi(String),
    /// After `ESC O`: one more byte.
    Ss3,
}

/// An escape sequence read whole.
enum Sequence {
    /// `ESC [ params final`.
    Csi(String, u8),
    /// `ESC O x`, or ESC and a key (Alt-key).
    Other,
}

/// Feeds `b` to the escape state; the sequence when `b` ends one.
fn escape_byte(state: &mut Escape, b: u8) -> Option<Sequence> {
    match state {
        Escape::None => None,
        Escape::Started => {
            *state = match b {
                b'[' => Escape::Csi(String::new()),
                b'O' => Escape::Ss3,
                _ => {
                    *state = Escape::None;
                    return Some(Sequence::Other);
                }
            };
            None
        }
        Escape::Csi(params) => {
            if (0x40..=0x7e).contains(&b) {
                let params = std::mem::take(params);
                *state = Escape::None;
                Some(Sequence::Csi(params, b))
            } else {
                if params.len() < 32 {
                    params.push(b as char);
                }
                None
            }
        }
        Escape::Ss3 => {
            *state = Escape::None;
            Some(Sequence::Other)
        }
    }
}

/// The line as the keystrokes say it.
#[derive(Debug, Default)]
struct Keys {
    line: Vec<u8>,
    /// A key made the keystrokes unreliable.
    unsure: bool,
    escape: Escape,
    /// Inside a bracketed paste (its line ends are part of the line).
    pasting: bool,
    /// Any key since the last Enter (the prompt is taken at the first).
    started: bool,
}

impl Keys {
    fn push_char(&mut self, b: u8) {
        if self.line.len() < MAX_TYPED {
            self.line.push(b);
        } else {
            self.unsure = true;
        }
    }

    /// Removes the last character (a UTF-8 sequence whole).
    fn backspace(&mut self) {
        while let Some(b) = self.line.pop() {
            if b & 0xc0 != 0x80 {
                break;
            }
        }
    }

    /// Ctrl-W: the word before the cursor, and the blanks after it.
    fn rub_out_word(&mut self) {
        while self.line.last().is_some_and(|b| *b == b' ' || *b == b'\t') {
            self.line.pop();
        }
        while self.line.last().is_some_and(|b| *b != b' ' && *b != b'\t') {
            self.line.pop();
        }
    }

    fn clear(&mut self) {
        self.line.clear();
        self.unsure = false;
        self.pasting = false;
        self.escape = Escape::None;
        self.started = false;
    }
}

/// The terminal line the host's output draws (one line: enough for a
/// shell's prompt and what it echoes).
#[derive(Debug, Default)]
struct Screen {
    line: Vec<char>,
    cursor: usize,
    escape: Escape,
    /// A UTF-8 character cut between messages.
    partial: Vec<u8>,
    /// A full-screen program holds the terminal (alternate screen).
    full_screen: bool,
}

impl Screen {
    fn feed(&mut self, data: &[u8]) {
        for &b in data {
            if self.escape != Escape::None {
                if let Some(Sequence::Csi(params, end)) = escape_byte(&mut self.escape, b) {
                    self.csi(&params, end);
                }
                continue;
            }
            if !self.partial.is_empty() || b >= 0x80 {
                self.partial.push(b);
                match std::str::from_utf8(&self.partial) {
                    Ok(s) => {
                        let c = s.chars().next().unwrap_or(char::REPLACEMENT_CHARACTER);
                        self.partial.clear();
                        self.put(c);
                    }
                    Err(e) if e.error_len().is_some() || self.partial.len() >= 4 => {
                        self.partial.clear();
                        self.put(char::REPLACEMENT_CHARACTER);
                    }
                    Err(_) => {}
                }
                continue;
            }
            match b {
                0x1b => self.escape = Escape::Started,
                b'\r' => self.cursor = 0,
                b'\n' => {
                    self.line.clear();
                    self.cursor = 0;
                }
                0x08 => self.cursor = self.cursor.saturating_sub(1),
                0x20..=0x7e => self.put(b as char),
                _ => {}
            }
        }
    }

    fn put(&mut self, c: char) {
        if self.cursor >= MAX_TYPED {
            return;
        }
        while self.line.len() < self.cursor {
            self.line.push(' ');
        }
        match self.line.get_mut(self.cursor) {
            Some(at) => *at = c,
            None => self.line.push(c),
        }
        self.cursor += 1;
    }

    fn csi(&mut self, params: &str, end: u8) {
        if let Some(mode) = params.strip_prefix('?') {
            if matches!(mode, "1049" | "1047" | "47") {
                match end {
                    b'h' => self.full_screen = true,
                    b'l' => {
                        self.full_screen = false;
                        self.line.clear();
                        self.cursor = 0;
                    }
                    _ => {}
                }
            }
            return;
        }
        let n = params.parse::<usize>().unwrap_or(1).clamp(1, MAX_TYPED);
        match end {
            b'C' => self.cursor = (self.cursor + n).min(MAX_TYPED),
            b'D' => self.cursor = self.cursor.saturating_sub(n),
            b'G' => self.cursor = n - 1,
            // Erase in line: to the end (0), to the start (1), all (2).
            b'K' => match params {
                "1" => {
                    let end = self.cursor.min(self.line.len());
                    self.line[..end].fill(' ');
                }
                "2" => self.line.clear(),
                _ => self.line.truncate(self.cursor),
            },
            // Delete and insert characters at the cursor.
            b'P' => {
                let from = self.cursor.min(self.line.len());
                let to = (from + n).min(self.line.len());
                self.line.drain(from..to);
            }
            b'@' => {
                let at = self.cursor.min(self.line.len());
                let room = MAX_TYPED.saturating_sub(self.line.len()).min(n);
                self.line.splice(at..at, std::iter::repeat_n(' ', room));
            }
            // Moves to other lines (a redraw, a wrapped line): the line is
            // drawn again from here.
            b'A' | b'B' | b'H' | b'f' | b'J' => {
                self.line.clear();
                self.cursor = 0;
            }
            _ => {}
        }
    }

    fn text(&self) -> String {
        self.line.iter().collect()
    }
}

/// One interactive shell's typing: keystrokes in, echo out.
#[derive(Debug, Default)]
pub struct Typed {
    keys: Keys,
    screen: Screen,
    /// The terminal line when the line's first key was typed.
    prompt: String,
}

impl Typed {
    /// The host's output (stdout or stderr), as the terminal draws it.
    pub fn output(&mut self, data: &[u8]) {
        self.screen.feed(data);
    }

    /// The client's input: what to forward, and the lines to judge first.
    pub fn input(&mut self, data: &[u8]) -> Vec<Step> {
        let mut steps = Vec::new();
        let mut from = 0;
        for (i, &b) in data.iter().enumerate() {
            if self.screen.full_screen {
                self.keys.clear();
                continue;
            }
            if !self.keys.started {
                self.keys.started = true;
                self.prompt = self.screen.text();
            }
            if self.keys.escape != Escape::None {
                match escape_byte(&mut self.keys.escape, b) {
                    Some(Sequence::Csi(params, b'~')) if params == "200" => {
                        self.keys.pasting = true
                    }
                    Some(Sequence::Csi(params, b'~')) if params == "201" => {
                        self.keys.pasting = false
                    }
                    Some(_) => self.keys.unsure = true,
                    None => {}
                }
                continue;
            }
            match b {
                0x1b => self.keys.escape = Escape::Started,
                b'\r' | b'\n' if self.keys.pasting => self.keys.push_char(b'\n'),
                b'\t' if self.keys.pasting => self.keys.push_char(b'\t'),
                b'\r' | b'\n' => {
                    let readings = self.readings();
                    if !readings.is_empty() {
                        if from < i {
                            steps.push(Step::Pass(from..i));
                        }
                        steps.push(Step::Enter(i, readings));
                        from = i + 1;
                    }
                    self.keys.clear();
                }
                0x7f | 0x08 => self.keys.backspace(),
                0x15 if !self.keys.unsure => self.keys.line.clear(),
                0x17 if !self.keys.unsure => self.keys.rub_out_word(),
                0x03 => self.keys.clear(),
                // Clear screen, end of input on an empty line: the line
                // stays as it is.
                0x0c | 0x04 => {}
                0x00..=0x1f => self.keys.unsure = true,
                _ => self.keys.push_char(b),
            }
        }
        if from < data.len() {
            steps.push(Step::Pass(from..data.len()));
        }
        steps
    }

    /// The readings of the line an Enter ends (none when there is nothing
    /// to judge): the keystrokes when they are sure; otherwise what the
    /// host drew after the prompt, then the keystrokes as far as they go
    /// (echo can lag behind fast input, so neither is trusted alone).
    fn readings(&self) -> Vec<TypedLine> {
        let secret = asks_for_password(&self.prompt);
        let keyed = String::from_utf8_lossy(&self.keys.line).trim().to_string();
        let reading = |text: String, exact: bool| TypedLine {
            text,
            exact,
            secret,
        };
        if !self.keys.unsure {
            return match keyed.is_empty() {
                true => Vec::new(),
                false => vec![reading(keyed, true)],
            };
        }
        let drawn = self.screen.text();
        let prompt = self.prompt.trim_end();
        let echoed = match drawn.strip_prefix(prompt) {
            Some(rest) if !prompt.trim().is_empty() => rest.trim().to_string(),
            _ => drawn.trim().to_string(),
        };
        let mut readings = Vec::new();
        if !echoed.is_empty() {
            readings.push(reading(echoed.clone(), false));
        }
        if !keyed.is_empty() && keyed != echoed {
            readings.push(reading(keyed, false));
        }
        readings
    }
}

/// The script a shell without a terminal reads from its input, cut into
/// lines; a line is held until its line end (or [`MAX_TYPED`] bytes).
#[derive(Debug, Default)]
pub struct Script {
    held: Vec<u8>,
}

impl Script {
    /// The client's input: the whole lines it completes.
    pub fn push(&mut self, data: &[u8]) -> Vec<Step> {
        let mut steps = Vec::new();
        let mut rest = data;
        while let Some(end) = rest.iter().position(|&b| b == b'\n') {
            let mut line = std::mem::take(&mut self.held);
            line.extend_from_slice(&rest[..=end]);
            rest = &rest[end + 1..];
            steps.push(script_line(line, true));
        }
        self.held.extend_from_slice(rest);
        if self.held.len() >= MAX_TYPED {
            steps.push(script_line(std::mem::take(&mut self.held), false));
        }
        steps
    }

    /// The end of input: the last line, if it had no line end.
    pub fn finish(&mut self) -> Option<Step> {
        let rest = std::mem::take(&mut self.held);
        (!rest.is_empty()).then(|| script_line(rest, true))
    }
}

/// A script's line, with its reading unless it is blank.
fn script_line(bytes: Vec<u8>, whole: bool) -> Step {
    let text = String::from_utf8_lossy(&bytes).trim().to_string();
    let readings = match text.is_empty() {
        true => Vec::new(),
        false => vec![TypedLine {
            exact: whole && text.len() <= MAX_TYPED,
            text,
            secret: false,
        }],
    };
    Step::Line(bytes, readings)
}

/// Whether a prompt asks for a secret (`[sudo] password for alice:`,
/// `Enter passphrase for key:`).
fn asks_for_password(prompt: &str) -> bool {
    let p = prompt.trim_end().to_lowercase();
    (p.contains("password") || p.contains("passphrase") || p.contains("pin"))
        && (p.ends_with(':') || p.ends_with('>'))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Types `keys` after the host drew `prompt`; the lines judged.
    fn lines(t: &mut Typed, prompt: &str, keys: &[u8]) -> Vec<TypedLine> {
        t.output(prompt.as_bytes());
        t.input(keys)
            .into_iter()
            .filter_map(|s| match s {
                Step::Enter(_, mut readings) => Some(readings.remove(0)),
                Step::Pass(_) | Step::Line(..) => None,
            })
            .collect()
    }

    fn exact(text: &str) -> TypedLine {
        TypedLine {
            text: text.into(),
            exact: true,
            secret: false,
        }
    }

    #[test]
    fn plain_typing_with_corrections_is_exact() {
        let mut t = Typed::default();
        assert_eq!(
            lines(&mut t, "$ ", b"rm -rf /tmq\x7fp/x\r"),
            [exact("rm -rf /tmp/x")]
        );
        assert_eq!(
            lines(&mut t, "$ ", b"ls junk\x17/etc\r"),
            [exact("ls /etc")]
        );
        assert_eq!(lines(&mut t, "$ ", b"whoami\x15id\r"), [exact("id")]);
        assert_eq!(lines(&mut t, "$ ", b"rm x\x03uptime\n"), [exact("uptime")]);
        // Backspace removes a whole character, not a byte of one.
        assert_eq!(
            lines(&mut t, "$ ", "echo é\x7fe\r".as_bytes()),
            [exact("echo e")]
        );
    }

    #[test]
    fn every_line_of_a_paste_is_judged_and_the_enter_is_where_it_was() {
        let mut t = Typed::default();
        t.output(b"$ ");
        let steps = t.input(b"ls\nrm -rf /\nx");
        assert_eq!(
            steps,
            [
                Step::Pass(0..2),
                Step::Enter(2, vec![exact("ls")]),
                Step::Pass(3..11),
                Step::Enter(11, vec![exact("rm -rf /")]),
                Step::Pass(12..13),
            ]
        );
        // A bracketed paste is one line, run at the Enter that follows.
        let mut t = Typed::default();
        assert_eq!(
            lines(&mut t, "$ ", b"\x1b[200~cd /\nrm -rf x\x1b[201~\r"),
            [exact("cd /\nrm -rf x")]
        );
    }

    #[test]
    fn empty_lines_are_not_judged() {
        let mut t = Typed::default();
        assert_eq!(t.input(b"\r\r  \r"), [Step::Pass(0..5)]);
    }

    #[test]
    fn history_and_completion_are_read_from_the_echo_and_marked_inexact() {
        let mut t = Typed::default();
        t.output(b"alice@web-1:~$ ");
        // Up-arrow: the shell draws the recalled line after the prompt.
        t.input(b"\x1b[A");
        t.output(b"rm -rf /tmp/x");
        let steps = t.input(b"\r");
        let line = TypedLine {
            text: "rm -rf /tmp/x".into(),
            exact: false,
            secret: false,
        };
        assert_eq!(steps, [Step::Enter(0, vec![line])]);
        // Tab completion, then a redraw by backspaces and erase-to-end.
        t.output(b"\r\nalice@web-1:~$ ");
        t.input(b"rm /tmp/sec\t");
        t.output(b"rm /tmp/sec");
        t.output(b"ret.txt ");
        t.input(b"\x7f");
        t.output(b"\x08\x1b[K");
        let steps = t.input(b"\r");
        let Step::Enter(_, readings) = &steps[0] else {
            panic!("the line is judged")
        };
        let read: Vec<_> = readings
            .iter()
            .map(|l| (l.text.as_str(), l.exact))
            .collect();
        assert_eq!(read, [("rm /tmp/secret.txt", false), ("rm /tmp/se", false)]);
    }

    #[test]
    fn a_full_screen_program_is_not_judged_and_the_shell_is_again_after_it() {
        let mut t = Typed::default();
        t.output(b"$ ");
        assert_eq!(lines(&mut t, "", b"vim notes\r"), [exact("vim notes")]);
        t.output(b"\x1b[?1049h\x1b[H~\r\n~");
        assert_eq!(t.input(b"irm -rf /\r\x1b:wq\r"), [Step::Pass(0..15)]);
        t.output(b"\x1b[?1049l$ ");
        assert_eq!(lines(&mut t, "", b"id\r"), [exact("id")]);
    }

    #[test]
    fn a_line_after_a_password_prompt_is_secret() {
        let mut t = Typed::default();
        let l = lines(&mut t, "[sudo] password for alice: ", b"hunter2\r");
        assert!(l[0].secret && l[0].text == "hunter2");
        let l = lines(&mut t, "\r\n$ ", b"passwd --help\r");
        assert!(!l[0].secret);
    }

    #[test]
    fn an_escape_cut_between_messages_is_read_whole() {
        let mut t = Typed::default();
        t.output(b"$ ");
        assert_eq!(t.input(b"ls\x1b"), [Step::Pass(0..3)]);
        t.output(b"ls");
        t.input(b"[D");
        t.output(b"\x08");
        t.input(b"a");
        t.output(b"as\x08");
        let steps = t.input(b"\r");
        let Step::Enter(_, readings) = &steps[0] else {
            panic!("judged")
        };
        assert_eq!(
            (readings[0].text.as_str(), readings[0].exact),
            ("las", false)
        );
    }

    #[test]
    fn a_line_longer_than_the_limit_is_cut_and_inexact() {
        let mut t = Typed::default();
        let mut keys = vec![b'a'; MAX_TYPED + 10];
        keys.push(b'\r');
        let steps = t.input(&keys);
        let Some(Step::Enter(_, readings)) = steps.last() else {
            panic!("judged")
        };
        assert!(!readings[0].exact && readings[0].text.len() == MAX_TYPED);
    }

    #[test]
    fn a_script_is_judged_line_by_line_and_held_until_each_line_ends() {
        let mut s = Script::default();
        assert_eq!(
            s.push(b"uptime\nrm -r"),
            [Step::Line(b"uptime\n".to_vec(), vec![exact("uptime")])]
        );
        assert_eq!(
            s.push(b"f /x\n\n"),
            [
                Step::Line(b"rm -rf /x\n".to_vec(), vec![exact("rm -rf /x")]),
                Step::Line(b"\n".to_vec(), vec![]),
            ]
        );
        s.push(b"id");
        assert_eq!(
            s.finish(),
            Some(Step::Line(b"id".to_vec(), vec![exact("id")]))
        );
        // A line that never ends is judged in pieces, none of them exact.
        let steps = s.push(&vec![b'a'; MAX_TYPED]);
        assert!(matches!(&steps[..], [Step::Line(_, r)] if !r[0].exact));
    }

    #[test]
    fn keys_that_arrive_ahead_of_their_echo_are_still_judged() {
        // A paste with an arrow key, in one message: no echo yet.
        let mut t = Typed::default();
        t.output(b"$ ");
        let steps = t.input(b"rm -rf /tmp/x\x1b[D\r");
        let Some(Step::Enter(_, readings)) = steps.last() else {
            panic!("judged")
        };
        assert_eq!(readings.len(), 1);
        assert_eq!(
            (readings[0].text.as_str(), readings[0].exact),
            ("rm -rf /tmp/x", false)
        );
    }
}
