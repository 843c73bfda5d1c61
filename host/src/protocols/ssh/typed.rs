//! Lines typed in an interactive shell, reconstructed for `on-command-line`
//! from the client's keystrokes and the host's echo — best effort, which is
//! why a verdict on a typed line is advisory (an exec's is exact).
//!
//! The keystrokes give the line while they are plain typing: printable
//! characters, Backspace, Ctrl-U, Ctrl-W, Ctrl-C, and bracketed paste
//! (once the host turned it on). A key that moves the cursor, recalls
//! history, completes or yanks (arrows, Tab, Ctrl-R, Alt-…) makes the
//! keystrokes unreliable: the line is then read once the host's echo has
//! settled — the terminal line the shell drew, minus the prompt it showed
//! before the first key — as well as from the keystrokes, and marked
//! inexact; a line that cannot be read at all is refused. Enter, Ctrl-J,
//! Ctrl-O and Ctrl-D on a non-empty line all hand a line to the shell, and
//! all are judged. A command left open (a quote, a trailing backslash) is
//! judged again with its next line.
//!
//! A shell without a terminal reads a script from its input: there each
//! command — one line, or several while a quote is open or a line ends in
//! a backslash — is held until it is complete, judged as sent, and
//! forwarded only if allowed ([`Script`]); advisory too, since the gateway
//! does not read a shell's whole grammar (here-documents, input a command
//! reads itself).
//!
//! What is not a shell's command line is left alone: lines typed while a
//! full-screen program holds the terminal (its alternate screen), and the
//! answer to a prompt that asks for a password when the host did not echo
//! it (judged neither by plugins nor stored).

use std::ops::Range;
use std::time::{Duration, Instant};

/// The longest command kept, in bytes (keystrokes, a script's command) or
/// characters (echo); a longer one is refused, not read in part.
pub const MAX_TYPED: usize = 16 * 1024;

/// How long the host's output must pause before a line whose keystrokes
/// were unsure is read from the echo.
pub const SETTLED: Duration = Duration::from_millis(30);

/// How long a line waits for the echo to settle at most.
pub const ECHO_WAIT: Duration = Duration::from_secs(1);

/// A reading of a line, for the plugins.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TypedLine {
    /// The line's text (control sequences removed); with the lines of the
    /// command it continues, if one was left open.
    pub text: String,
    /// Whether it is what was typed, key by key.
    pub exact: bool,
}

/// What to do with a piece of the client's input.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    /// Forward these bytes of the input.
    Pass(Range<usize>),
    /// The byte at this index hands the line `Pending` describes to the
    /// shell: read it ([`Typed::read`], once the echo settled if
    /// [`Pending::needs_echo`]), judge it, then forward the byte or
    /// Ctrl-C in its place.
    Enter(usize, Pending),
    /// A whole command of a script (line ends included): forward it only
    /// if its readings are allowed (none: blank, nothing to judge).
    Line(Vec<u8>, Vec<TypedLine>),
    /// Script bytes the gateway drops itself, and why.
    Drop(&'static str),
}

/// A typed line at its Enter, before it is read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pending {
    keyed: String,
    unsure: bool,
    overflowed: bool,
    prompt: String,
    /// When its last key arrived.
    keyed_at: Instant,
}

impl Pending {
    /// Whether the line is read only once the host's echo settled (the
    /// keystrokes were unsure, or the prompt asked for a password).
    pub fn needs_echo(&self) -> bool {
        self.unsure || (asks_for_password(&self.prompt) && !self.keyed.is_empty())
    }
}

/// How a typed line reads.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reading {
    /// Nothing to judge (a blank line).
    Blank,
    /// The answer to a password prompt, not echoed: neither judged nor
    /// stored.
    Secret,
    /// Judge each reading (all must be allowed; the first is recorded).
    Judge(Vec<TypedLine>),
    /// Refuse it: the gateway cannot read it, and why.
    Unreadable(&'static str),
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

/// What a byte does to an escape sequence.
enum EscapeByte {
    /// The sequence goes on.
    More,
    /// `ESC [ params final`.
    Csi(String, u8),
    /// `ESC O x`, or ESC and a key (Alt-key).
    Other,
    /// The byte is no part of a sequence (a control character, or one
    /// that cannot be in one): the sequence is abandoned and the byte read
    /// on its own.
    Abandoned,
}

/// Feeds `b` to the escape state (which must be in a sequence).
fn escape_byte(state: &mut Escape, b: u8) -> EscapeByte {
    if !(0x20..0x7f).contains(&b) {
        *state = Escape::None;
        return EscapeByte::Abandoned;
    }
    match state {
        Escape::None => EscapeByte::Abandoned,
        Escape::Started => {
            *state = match b {
                b'[' => Escape::Csi(String::new()),
                b'O' => Escape::Ss3,
                _ => {
                    *state = Escape::None;
                    return EscapeByte::Other;
                }
            };
            EscapeByte::More
        }
        Escape::Csi(params) => match b {
            0x20..=0x3f => {
                if params.len() < 32 {
                    params.push(b as char);
                }
                EscapeByte::More
            }
            _ => {
                let params = std::mem::take(params);
                *state = Escape::None;
                EscapeByte::Csi(params, b)
            }
        },
        Escape::Ss3 => {
            *state = Escape::None;
            EscapeByte::Other
        }
    }
}

/// The line as the keystrokes say it.
#[derive(Debug, Default)]
struct Keys {
    line: Vec<u8>,
    /// A key made the keystrokes unreliable.
    unsure: bool,
    /// More was typed than [`MAX_TYPED`].
    overflowed: bool,
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
            self.overflowed = true;
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
        *self = Self::default();
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
    /// The program reading the terminal turned bracketed paste on.
    bracketed_paste: bool,
    /// Line feeds drawn so far.
    line_feeds: u64,
}

impl Screen {
    fn feed(&mut self, data: &[u8]) {
        for &b in data {
            if self.escape != Escape::None {
                match escape_byte(&mut self.escape, b) {
                    EscapeByte::Csi(params, end) => self.csi(&params, end),
                    EscapeByte::More | EscapeByte::Other => {}
                    EscapeByte::Abandoned => self.byte(b),
                }
                continue;
            }
            self.byte(b);
        }
    }

    /// Output that ends in a line feed: only its modes and line feeds
    /// matter (the line it draws is gone), so text is skipped unread —
    /// bulk output on a terminal costs a scan, not a drawing.
    fn skip_lines(&mut self, data: &[u8]) {
        let mut i = 0;
        while i < data.len() {
            if self.escape != Escape::None {
                let b = data[i];
                match escape_byte(&mut self.escape, b) {
                    EscapeByte::Csi(params, end) => self.csi(&params, end),
                    EscapeByte::Abandoned if b == b'\n' => self.line_feeds += 1,
                    EscapeByte::Abandoned if b == 0x1b => self.escape = Escape::Started,
                    _ => {}
                }
                i += 1;
                continue;
            }
            match data[i..].iter().position(|&b| b == 0x1b || b == b'\n') {
                None => break,
                Some(k) => {
                    i += k;
                    match data[i] {
                        b'\n' => self.line_feeds += 1,
                        _ => self.escape = Escape::Started,
                    }
                    i += 1;
                }
            }
        }
        self.line.clear();
        self.cursor = 0;
        self.partial.clear();
    }

    fn byte(&mut self, b: u8) {
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
            return;
        }
        match b {
            0x1b => self.escape = Escape::Started,
            b'\r' => self.cursor = 0,
            b'\n' => {
                self.line.clear();
                self.cursor = 0;
                self.line_feeds += 1;
            }
            0x08 => self.cursor = self.cursor.saturating_sub(1),
            0x20..=0x7e => self.put(b as char),
            _ => {}
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
            let on = match end {
                b'h' => true,
                b'l' => false,
                _ => return,
            };
            match mode {
                "1049" | "1047" | "47" => {
                    self.full_screen = on;
                    self.line.clear();
                    self.cursor = 0;
                }
                "2004" => self.bracketed_paste = on,
                _ => {}
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
#[derive(Debug)]
pub struct Typed {
    keys: Keys,
    screen: Screen,
    /// The terminal line when the line's first key was typed.
    prompt: String,
    /// When the host last sent output.
    last_output: Instant,
    /// When the client last sent a key.
    last_key: Instant,
    /// An allowed command left open (a quote, a trailing backslash): its
    /// next line is judged with it.
    open_command: String,
    /// A refused line whose Ctrl-C may not have reached the shell: it is
    /// judged with what follows until the terminal draws a new line
    /// (then at this many line feeds).
    refused: Option<(String, u64)>,
}

impl Default for Typed {
    fn default() -> Self {
        Self {
            keys: Keys::default(),
            screen: Screen::default(),
            prompt: String::new(),
            last_output: Instant::now(),
            last_key: Instant::now(),
            open_command: String::new(),
            refused: None,
        }
    }
}

impl Typed {
    /// The host's output (stdout or stderr), as the terminal draws it.
    pub fn output(&mut self, data: &[u8]) {
        match data.iter().rposition(|&b| b == b'\n') {
            Some(end) => {
                self.screen.skip_lines(&data[..=end]);
                self.screen.feed(&data[end + 1..]);
            }
            None => self.screen.feed(data),
        }
        self.last_output = Instant::now();
    }

    /// Whether the echo of `p`'s keys has settled: the host sent output
    /// after its last key and has paused for [`SETTLED`] since.
    pub fn settled(&self, p: &Pending) -> bool {
        self.last_output > p.keyed_at && self.last_output.elapsed() >= SETTLED
    }

    /// The client's input: what to forward, and the lines to judge first.
    pub fn input(&mut self, data: &[u8]) -> Vec<Step> {
        let mut steps = Vec::new();
        let mut from = 0;
        let now = Instant::now();
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
                    EscapeByte::More => continue,
                    EscapeByte::Csi(params, b'~')
                        if params == "200" && self.screen.bracketed_paste =>
                    {
                        self.keys.pasting = true;
                        continue;
                    }
                    EscapeByte::Csi(params, b'~') if params == "201" => {
                        self.keys.pasting = false;
                        continue;
                    }
                    EscapeByte::Csi(..) | EscapeByte::Other => {
                        self.keys.unsure = true;
                        continue;
                    }
                    // A control character ends the sequence and is read.
                    EscapeByte::Abandoned => self.keys.unsure = true,
                }
            }
            let hands_over = match b {
                b'\r' | b'\n' | b'\t' if self.keys.pasting => {
                    self.keys.push_char(if b == b'\t' { b'\t' } else { b'\n' });
                    false
                }
                // Inside a paste the shell takes editing keys as text.
                0x00..=0x02 | 0x04..=0x1a | 0x1c..=0x1f | 0x7f if self.keys.pasting => {
                    self.keys.push_char(b);
                    self.keys.unsure = true;
                    false
                }
                0x1b => {
                    self.keys.escape = Escape::Started;
                    false
                }
                // Enter, Ctrl-J, Ctrl-O (run and fetch the next), and
                // Ctrl-D on a non-empty line (a terminal's line discipline
                // hands the text over without a line end; a line editor
                // keeps it: either way it is judged now and stays the
                // start of the line).
                b'\r' | b'\n' | 0x0f => true,
                0x04 => !self.keys.line.is_empty(),
                0x7f | 0x08 => {
                    self.keys.backspace();
                    false
                }
                0x15 if !self.keys.unsure => {
                    self.keys.line.clear();
                    false
                }
                0x17 if !self.keys.unsure => {
                    self.keys.rub_out_word();
                    false
                }
                0x03 => {
                    self.keys.clear();
                    self.open_command.clear();
                    false
                }
                // Clear screen: the line stays as it is.
                0x0c => false,
                0x00..=0x1f => {
                    self.keys.unsure = true;
                    false
                }
                _ => {
                    self.keys.push_char(b);
                    false
                }
            };
            if !hands_over {
                self.last_key = now;
            }
            if hands_over {
                if from < i {
                    steps.push(Step::Pass(from..i));
                }
                let pending = Pending {
                    keyed: String::from_utf8_lossy(&self.keys.line).into_owned(),
                    // Bytes that are not UTF-8 may be keys to the shell.
                    unsure: self.keys.unsure || std::str::from_utf8(&self.keys.line).is_err(),
                    overflowed: self.keys.overflowed,
                    prompt: std::mem::take(&mut self.prompt),
                    keyed_at: self.last_key,
                };
                steps.push(Step::Enter(i, pending));
                from = i + 1;
                if b != 0x04 {
                    self.keys.clear();
                }
            }
        }
        if from < data.len() {
            steps.push(Step::Pass(from..data.len()));
        }
        steps
    }

    /// How the line `p` describes reads now.
    pub fn read(&self, p: &Pending) -> Reading {
        if p.overflowed {
            return Reading::Unreadable(
                "a typed line longer than 16 KiB is not read; run long commands as an exec (ssh TARGET 'command')",
            );
        }
        let drawn = self.screen.text();
        let prompt = p.prompt.trim_end();
        let echoed = match drawn.strip_prefix(prompt) {
            Some(rest) if !prompt.trim().is_empty() => blanks_trimmed(rest),
            _ => blanks_trimmed(&drawn),
        };
        let keyed = blanks_trimmed(&p.keyed);
        if asks_for_password(&p.prompt) && !p.unsure && echoed.is_empty() && !keyed.is_empty() {
            return Reading::Secret;
        }
        let mut texts = Vec::new();
        if p.unsure && !echoed.is_empty() {
            texts.push(echoed.clone());
        }
        let same_as_echo = p.unsure && keyed == echoed;
        if !keyed.is_empty() && !same_as_echo {
            texts.push(keyed);
        }
        let before = self.before();
        if texts.is_empty() {
            if p.unsure {
                return Reading::Unreadable(
                    "the gateway could not read this line from the terminal (editing keys, and no echo to read it from); type it again",
                );
            }
            if before.is_empty() {
                return Reading::Blank;
            }
            texts.push(String::new());
        }
        // A line that continues another is judged with it, and alone too
        // (what reads it may not be the shell: `read x` takes a line).
        let mut joined: Vec<String> = match before.is_empty() {
            true => texts.clone(),
            false => texts.iter().map(|t| format!("{before}\n{t}")).collect(),
        };
        if !before.is_empty() {
            joined.extend(texts.into_iter().filter(|t| !t.is_empty()));
        }
        let readings = joined
            .into_iter()
            .map(|text| TypedLine {
                text,
                exact: !p.unsure,
            })
            .collect();
        Reading::Judge(readings)
    }

    /// What a line is judged with: a refused line the shell may still
    /// hold, and an open command it continues.
    fn before(&self) -> String {
        let refused = match &self.refused {
            Some((text, feeds)) if *feeds == self.screen.line_feeds => text.as_str(),
            _ => "",
        };
        match (refused.is_empty(), self.open_command.is_empty()) {
            (true, _) => self.open_command.clone(),
            (false, true) => refused.to_string(),
            (false, false) => format!("{}\n{refused}", self.open_command),
        }
    }

    /// The verdict on a line read as `judged` (its first reading):
    /// `allowed` or not.
    pub fn judged(&mut self, judged: &str, allowed: bool) {
        if allowed {
            self.refused = None;
            self.open_command = match unfinished(judged) && judged.len() < MAX_TYPED {
                true => judged.to_string(),
                false => String::new(),
            };
        } else {
            self.open_command.clear();
            self.refused = Some((judged.to_string(), self.screen.line_feeds));
        }
    }
}

/// Whether a shell reading `text` would wait for more: a quote left open
/// or a last line that ends in a backslash. A quote the shell does not
/// see as one (in a here-document's body, in text a command reads) joins
/// lines the shell keeps apart: every joined command is also judged line
/// by line.
pub fn unfinished(text: &str) -> bool {
    #[derive(PartialEq)]
    enum In {
        Plain,
        Single,
        Double,
        AnsiC,
        Backtick,
        Comment,
    }
    let mut state = In::Plain;
    let mut word_start = true;
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        match state {
            In::Plain => {
                match c {
                    // A backslash last: the line goes on.
                    // A backslash last, or before the last line end: the
                    // line goes on.
                    '\\' => match chars.next() {
                        None => return true,
                        Some('\n') if chars.peek().is_none() => return true,
                        _ => {}
                    },
                    '\'' => state = In::Single,
                    '"' => state = In::Double,
                    '`' => state = In::Backtick,
                    '$' if chars.peek() == Some(&'\'') => {
                        chars.next();
                        state = In::AnsiC;
                    }
                    '#' if word_start => state = In::Comment,
                    _ => {}
                }
                // Only the shell's own blanks and operators start a word
                // (`x\r#` and `$(true)#` are one word; fewer comments
                // means more quotes seen, which only joins more).
                word_start = matches!(c, ' ' | '\t' | '\n' | ';' | '&' | '|');
            }
            In::Single if c == '\'' => state = In::Plain,
            In::Double | In::AnsiC | In::Backtick if c == '\\' => {
                chars.next();
            }
            In::Double if c == '"' => state = In::Plain,
            In::AnsiC if c == '\'' => state = In::Plain,
            In::Backtick if c == '`' => state = In::Plain,
            In::Comment if c == '\n' => {
                state = In::Plain;
                word_start = true;
            }
            _ => {}
        }
    }
    !matches!(state, In::Plain | In::Comment)
}

/// The script a shell without a terminal reads from its input, cut into
/// commands: a command is held until it is complete (its line ends with
/// no quote left open), at most [`MAX_TYPED`] bytes.
#[derive(Debug, Default)]
pub struct Script {
    held: Vec<u8>,
    /// The rest of a refused line is dropped up to its line end.
    dropping: bool,
}

/// Why a command longer than the limit was dropped.
const TOO_LONG: &str = "a command longer than 16 KiB (or a quote left open that long) is not read, so it was not run; run long commands as an exec (ssh TARGET 'command')";

impl Script {
    /// The client's input: the whole commands it completes.
    pub fn push(&mut self, data: &[u8]) -> Vec<Step> {
        let mut steps = Vec::new();
        let mut rest = data;
        while let Some(end) = rest.iter().position(|&b| b == b'\n') {
            let line = &rest[..=end];
            rest = &rest[end + 1..];
            if self.dropping {
                self.dropping = false;
                continue;
            }
            self.held.extend_from_slice(line);
            if self.held.len() > MAX_TYPED {
                self.held.clear();
                steps.push(Step::Drop(TOO_LONG));
                continue;
            }
            if let Some(step) = self.complete(false) {
                steps.push(step);
            }
        }
        if !self.dropping {
            self.held.extend_from_slice(rest);
            if self.held.len() > MAX_TYPED {
                self.held.clear();
                self.dropping = true;
                steps.push(Step::Drop(TOO_LONG));
            }
        }
        steps
    }

    /// The end of input: what is held, judged as it is.
    pub fn finish(&mut self) -> Option<Step> {
        if self.held.is_empty() {
            return None;
        }
        self.complete(true)
    }

    /// The held command, if complete (or `at_end`): dropped when the
    /// shell would not read it as the plugins would.
    fn complete(&mut self, at_end: bool) -> Option<Step> {
        let Ok(text) = std::str::from_utf8(&self.held) else {
            self.held.clear();
            return Some(Step::Drop(
                "a line that is not valid UTF-8 was not run: the gateway runs only what its plugins can read",
            ));
        };
        if text.contains('\0') {
            self.held.clear();
            return Some(Step::Drop(
                "a line with a NUL byte was not run (the shell would read it otherwise than the plugins)",
            ));
        }
        if !at_end && unfinished(text) {
            return None;
        }
        // Control characters other than tab, line end and carriage return
        // are keys to a shell that edits lines, not text.
        if text
            .chars()
            .any(|c| c.is_control() && !matches!(c, '\t' | '\n' | '\r'))
        {
            self.held.clear();
            return Some(Step::Drop(
                "a line with control characters was not run (the shell may read them as editing keys)",
            ));
        }
        let mut texts = vec![blanks_trimmed(text)];
        if text.trim_end_matches('\n').contains('\n') {
            texts.extend(text.split('\n').map(blanks_trimmed));
        }
        let readings = texts
            .into_iter()
            .filter(|t| !t.is_empty())
            .map(|text| TypedLine { text, exact: true })
            .collect();
        Some(Step::Line(std::mem::take(&mut self.held), readings))
    }
}

/// Whether an exec runs a shell that may read a script from its input:
/// any shell not given a command as text (`-c`), so that its input is
/// judged like a shell's without a terminal (a script file's input is
/// then judged too: over-judging, never under).
pub fn reads_a_script(command: &str) -> bool {
    let mut words = command.split_whitespace();
    let Some(program) = words.next() else {
        return false;
    };
    let name = program.rsplit('/').next().unwrap_or(program);
    matches!(
        name,
        "sh" | "bash" | "dash" | "zsh" | "ksh" | "mksh" | "ash" | "posh" | "yash"
    ) && !words.any(|w| w.starts_with(['-', '+']) && !w.starts_with("--") && w.contains('c'))
}

/// `text` without the blanks a shell skips around a command (space, tab,
/// line end — not `\r` or other spaces, which are part of a word to it).
fn blanks_trimmed(text: &str) -> String {
    text.trim_matches([' ', '\t', '\n']).to_string()
}

/// Whether a prompt asks for a secret (`[sudo] password for alice:`,
/// `Enter passphrase for key:`, `Enter PIN:`).
fn asks_for_password(prompt: &str) -> bool {
    let p = prompt.trim_end().to_lowercase();
    let asks = p.contains("password")
        || p.contains("passphrase")
        || p.contains("passcode")
        || p.split(|c: char| !c.is_alphanumeric()).any(|w| w == "pin");
    asks && (p.ends_with(':') || p.ends_with('>') || p.ends_with('?'))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Types `keys` after the host drew `prompt`: every step, each Enter
    /// read at once (and allowed).
    fn typed(
        t: &mut Typed,
        prompt: &str,
        keys: &[u8],
    ) -> Vec<Result<Range<usize>, (usize, Reading)>> {
        t.output(prompt.as_bytes());
        let steps = t.input(keys);
        steps
            .into_iter()
            .map(|s| match s {
                Step::Pass(r) => Ok(r),
                Step::Enter(at, p) => {
                    let reading = t.read(&p);
                    if let Reading::Judge(r) = &reading {
                        t.judged(&r[0].text, true);
                    }
                    Err((at, reading))
                }
                other => panic!("a terminal made {other:?}"),
            })
            .collect()
    }

    /// The first reading of each line judged.
    fn lines(t: &mut Typed, prompt: &str, keys: &[u8]) -> Vec<Reading> {
        typed(t, prompt, keys)
            .into_iter()
            .filter_map(|s| s.err().map(|(_, r)| r))
            .collect()
    }

    /// Readings of `texts`, all `exact` or not.
    fn judge(texts: &[&str], exact: bool) -> Reading {
        Reading::Judge(
            texts
                .iter()
                .map(|t| TypedLine {
                    text: t.to_string(),
                    exact,
                })
                .collect(),
        )
    }

    fn exact(text: &str) -> Reading {
        judge(&[text], true)
    }

    fn exacts(texts: &[&str]) -> Reading {
        judge(texts, true)
    }

    fn inexact(texts: &[&str]) -> Reading {
        judge(texts, false)
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
    fn every_key_that_hands_a_line_over_is_judged_where_it_is() {
        let mut t = Typed::default();
        let steps = typed(&mut t, "$ ", b"ls\nrm -rf /\x0fid\x04\x04x");
        assert_eq!(
            steps,
            [
                Ok(0..2),
                Err((2, exact("ls"))),
                Ok(3..11),
                Err((11, exact("rm -rf /"))),
                Ok(12..14),
                Err((14, exact("id"))),
                // The text stays: the next Ctrl-D (the end of input, which
                // runs what the shell holds) is judged with it too.
                Err((15, exact("id"))),
                Ok(16..17),
            ]
        );
    }

    #[test]
    fn a_bracketed_paste_is_one_line_once_the_host_turned_it_on() {
        let mut t = Typed::default();
        t.output(b"\x1b[?2004h");
        assert_eq!(
            lines(&mut t, "$ ", b"\x1b[200~cd /\nrm -rf x\x1b[201~\r"),
            [exact("cd /\nrm -rf x")]
        );
        // Without it, the markers are keys and every line end counts.
        let mut t = Typed::default();
        let read = lines(&mut t, "$ ", b"\x1b[200~;rm -rf /x\r");
        assert!(
            matches!(&read[0], Reading::Judge(r) if r.iter().any(|l| l.text == ";rm -rf /x")),
            "{read:?}"
        );
    }

    #[test]
    fn a_control_character_ends_an_escape_and_is_read() {
        let mut t = Typed::default();
        for keys in [
            &b"rm -rf /x #\x1b\r"[..],
            b"rm -rf /x #\x1b[\r",
            b"rm -rf /x #\x1bO\r",
        ] {
            let read = lines(&mut t, "$ ", keys);
            assert_eq!(read.len(), 1, "{keys:?}");
            assert!(
                matches!(&read[0], Reading::Judge(r) if r.iter().any(|l| l.text.starts_with("rm -rf /x"))),
                "{read:?}"
            );
        }
    }

    #[test]
    fn empty_lines_are_blank() {
        let mut t = Typed::default();
        assert_eq!(
            lines(&mut t, "$ ", b"\r  \r"),
            [Reading::Blank, Reading::Blank]
        );
    }

    #[test]
    fn history_and_completion_are_read_from_the_echo_and_marked_inexact() {
        let mut t = Typed::default();
        t.output(b"alice@web-1:~$ ");
        // Up-arrow: the shell draws the recalled line after the prompt.
        let steps = t.input(b"\x1b[A\r");
        let Some(Step::Enter(0.., p)) = steps.last() else {
            panic!("{steps:?}")
        };
        assert!(p.needs_echo());
        // Read before the echo: nothing to read, so it is refused.
        assert!(matches!(t.read(p), Reading::Unreadable(_)));
        t.output(b"rm -rf /tmp/x");
        assert_eq!(t.read(p), inexact(&["rm -rf /tmp/x"]));
        // Tab completion, then a redraw by backspaces and erase-to-end.
        t.output(b"\r\nalice@web-1:~$ ");
        t.input(b"rm /tmp/sec\t");
        t.output(b"rm /tmp/sec");
        t.output(b"ret.txt ");
        t.input(b"\x7f");
        t.output(b"\x08\x1b[K");
        let steps = t.input(b"\r");
        let Some(Step::Enter(_, p)) = steps.last() else {
            panic!("{steps:?}")
        };
        assert_eq!(t.read(p), inexact(&["rm /tmp/secret.txt", "rm /tmp/se"]));
    }

    #[test]
    fn a_full_screen_program_is_not_judged_and_the_shell_is_again_after_it() {
        let mut t = Typed::default();
        assert_eq!(lines(&mut t, "$ ", b"vim notes\r"), [exact("vim notes")]);
        t.output(b"\x1b[?1049h\x1b[H~\r\n~");
        assert_eq!(t.input(b"irm -rf /\r\x1b:wq\r"), [Step::Pass(0..15)]);
        t.output(b"\x1b[?1049l");
        assert_eq!(lines(&mut t, "$ ", b"id\r"), [exact("id")]);
    }

    #[test]
    fn an_unechoed_answer_to_a_password_prompt_is_secret_and_an_echoed_one_is_not() {
        let mut t = Typed::default();
        assert_eq!(
            lines(&mut t, "[sudo] password for alice: ", b"hunter2\r"),
            [Reading::Secret]
        );
        // A prompt that only looks like one: the typing is echoed.
        t.output(b"\r\nPassword: ");
        let steps = t.input(b"rm -rf /x\r");
        t.output(b"rm -rf /x");
        let Some(Step::Enter(_, p)) = steps.last() else {
            panic!("{steps:?}")
        };
        assert!(p.needs_echo());
        assert_eq!(t.read(p), exact("rm -rf /x"));
        assert!(!asks_for_password("spinning:"));
        assert!(asks_for_password("Enter PIN:"));
    }

    #[test]
    fn an_open_quote_or_backslash_joins_the_next_line() {
        let mut t = Typed::default();
        assert_eq!(lines(&mut t, "$ ", b"echo \"\r"), [exact("echo \"")]);
        // Judged with the line it continues, and alone (`read x` would
        // take the first line, and the shell run the second).
        assert_eq!(
            lines(&mut t, "> ", b"\"; rm -rf /x\r"),
            [exacts(&["echo \"\n\"; rm -rf /x", "\"; rm -rf /x"])]
        );
        assert_eq!(lines(&mut t, "$ ", b"r\\\r"), [exact("r\\")]);
        assert_eq!(
            lines(&mut t, "> ", b"m -rf /x\r"),
            [exacts(&["r\\\nm -rf /x", "m -rf /x"])]
        );
        assert_eq!(lines(&mut t, "$ ", b"id\r"), [exact("id")]);
        assert!(!unfinished("echo it\\'s # don't"));
        assert!(unfinished("echo $'it\\'s"));
    }

    #[test]
    fn a_refused_line_is_judged_again_until_the_shell_draws_a_new_line() {
        let mut t = Typed::default();
        let steps = t.input(b"rm -rf /x #\r");
        let Some(Step::Enter(_, p)) = steps.last() else {
            panic!("{steps:?}")
        };
        t.judged("rm -rf /x #", false);
        // The Ctrl-C in its place did nothing (no new line): a bare Enter
        // would run the line the shell still holds.
        let _ = p;
        assert_eq!(lines(&mut t, "", b"\r"), [exact("rm -rf /x #\n")]);
        t.judged("rm -rf /x #", false);
        t.output(b"^C\r\n$ ");
        assert_eq!(lines(&mut t, "", b"\r"), [Reading::Blank]);
    }

    #[test]
    fn a_line_longer_than_the_limit_is_unreadable() {
        let mut t = Typed::default();
        let mut keys = vec![b' '; MAX_TYPED + 10];
        keys.extend_from_slice(b"rm -rf /x\r");
        let read = lines(&mut t, "$ ", &keys);
        assert!(matches!(read[..], [Reading::Unreadable(_)]), "{read:?}");
    }

    #[test]
    fn a_script_is_judged_command_by_command_and_held_until_each_is_complete() {
        let line = |text: &str| {
            vec![TypedLine {
                text: text.into(),
                exact: true,
            }]
        };
        let mut s = Script::default();
        assert_eq!(
            s.push(b"uptime\nrm -r"),
            [Step::Line(b"uptime\n".to_vec(), line("uptime"))]
        );
        assert_eq!(
            s.push(b"f /x\n\necho \"\n\"; rm -rf /y\n"),
            [
                Step::Line(b"rm -rf /x\n".to_vec(), line("rm -rf /x")),
                Step::Line(b"\n".to_vec(), vec![]),
                Step::Line(
                    b"echo \"\n\"; rm -rf /y\n".to_vec(),
                    ["echo \"\n\"; rm -rf /y", "echo \"", "\"; rm -rf /y"]
                        .map(|t| line(t).remove(0))
                        .to_vec()
                ),
            ]
        );
        // A backslash before the line end continues the command.
        let mut s = Script::default();
        let steps = s.push(b"r\\\nm -rf /x\n");
        assert!(
            matches!(&steps[..], [Step::Line(_, r)] if r[0].text == "r\\\nm -rf /x" && r.len() == 3),
            "{steps:?}"
        );
        // `x\r#` is one word to the shell: its quote opens.
        assert!(unfinished("echo x\r#'\n"));
        assert!(unfinished("echo $(true)#'\n"));
        s.push(b"id");
        assert_eq!(s.finish(), Some(Step::Line(b"id".to_vec(), line("id"))));
        // What the shell would read otherwise than the plugins is dropped.
        assert!(matches!(&s.push(b"mr\x14 x\n")[..], [Step::Drop(_)]));
        // A leading carriage return is part of a word to the shell.
        let steps = s.push(b"\r#'\n'; r\\\nm -f /x #'\n");
        assert!(
            matches!(&steps[..], [Step::Line(_, r)] if r[0].text.starts_with('\r')),
            "{steps:?}"
        );
        assert!(matches!(&s.push(b"r\0m -rf /x\n")[..], [Step::Drop(_)]));
        assert!(matches!(&s.push(b"\xff\n")[..], [Step::Drop(_)]));
        // A command that never ends is dropped whole, and the script goes on.
        let mut long = vec![b' '; MAX_TYPED];
        long.extend_from_slice(b"rm -rf /x\nid\n");
        let steps = s.push(&long);
        assert!(
            matches!(&steps[..], [Step::Drop(_), Step::Line(_, r)] if r[0].text == "id"),
            "{steps:?}"
        );
        let mut s = Script::default();
        let steps = s.push(&vec![b'a'; MAX_TYPED + 1]);
        assert!(matches!(&steps[..], [Step::Drop(_)]));
        assert_eq!(
            s.push(b"aaa\nid\n"),
            [Step::Line(b"id\n".to_vec(), line("id"))]
        );
    }

    #[test]
    fn an_exec_of_a_bare_shell_reads_a_script() {
        for command in [
            "sh",
            "bash -s",
            "/bin/dash -e -x",
            "bash --norc -s",
            "sh -s arg",
            "bash -",
            "bash -o posix",
            "bash --verbose 2>&1",
            "bash -i",
            "sh script.sh",
        ] {
            assert!(reads_a_script(command), "{command}");
        }
        for command in ["bash -c 'rm x'", "bash -ec x", "cat", "", "env sh"] {
            assert!(!reads_a_script(command), "{command}");
        }
    }

    #[test]
    fn keys_that_arrive_ahead_of_their_echo_are_read_once_it_settles() {
        // A paste with an arrow key, in one message: no echo yet.
        let mut t = Typed::default();
        t.output(b"$ ");
        let steps = t.input(b"rm -rf /tmp/x\x1b[D\r");
        let Some(Step::Enter(_, p)) = steps.last() else {
            panic!("{steps:?}")
        };
        assert!(p.needs_echo());
        assert_eq!(t.read(p), inexact(&["rm -rf /tmp/x"]));
    }
}
