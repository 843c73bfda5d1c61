//! Terminal recordings of commands (SSH exec and shell channels,
//! Kubernetes exec and attach streams) as asciicast v2
//! (<https://docs.asciinema.org/manual/asciicast/v2/>): a header line, then
//! one JSON array per event — `[seconds, "o", text]` for what the host
//! sent (stdout and stderr, as the client's terminal shows them), `"i"`
//! for what the client sent (its keystrokes or standard input), `"r"` for
//! a resize (`"COLSxROWS"`), and a marker `"m"` where recording stopped at
//! the target's limit.
//!
//! Data arrives in chunks that may cut a UTF-8 character in two: the cut
//! bytes are carried over to the next chunk of the same direction; bytes
//! that are not UTF-8 at all are recorded as U+FFFD. The lines are sent to
//! the audit store in chunks of about [`CHUNK_BYTES`], so a long shell is
//! stored while it runs.

use std::time::Instant;

use crate::store::{CastChunk, Record};

/// Lines gathered before they are sent to the audit store.
pub const CHUNK_BYTES: usize = 64 * 1024;

/// How a recording starts: what the header says.
pub struct Header<'a> {
    /// Terminal columns (80 without a terminal).
    pub width: u32,
    /// Terminal rows (24 without a terminal).
    pub height: u32,
    /// `TERM` of the client's terminal, if it asked for one.
    pub term: Option<&'a str>,
    /// Unix seconds at the start.
    pub timestamp: i64,
    /// The command line (`exec`) or `None` for a shell.
    pub command: Option<&'a str>,
    /// A title for players.
    pub title: &'a str,
}

/// One direction's undecoded tail (the start of a cut UTF-8 character).
#[derive(Default)]
struct Carry(Vec<u8>);

impl Carry {
    /// `data` after what was carried, as text: a cut character at the end
    /// is kept for next time, invalid bytes become U+FFFD.
    fn decode(&mut self, data: &[u8]) -> String {
        let mut bytes = std::mem::take(&mut self.0);
        bytes.extend_from_slice(data);
        let mut out = String::with_capacity(bytes.len());
        let mut rest = &bytes[..];
        loop {
            match std::str::from_utf8(rest) {
                Ok(text) => {
                    out.push_str(text);
                    break;
                }
                Err(e) => {
                    let (valid, after) = rest.split_at(e.valid_up_to());
                    // `valid` is UTF-8 up to `valid_up_to` by definition.
                    out.push_str(std::str::from_utf8(valid).unwrap_or_default());
                    match e.error_len() {
                        Some(bad) => {
                            out.push('\u{FFFD}');
                            rest = &after[bad..];
                        }
                        None => {
                            // A character cut at the end: wait for the rest.
                            self.0 = after.to_vec();
                            break;
                        }
                    }
                }
            }
        }
        out
    }
}

/// The recording of one channel's command.
pub struct Cast {
    session_id: u64,
    event_seq: u64,
    started: Instant,
    lines: String,
    index: u32,
    output: Carry,
    input: Carry,
    /// Bytes of event lines stored so far.
    recorded: u64,
    /// Bytes of event lines it may store (one event may cross it).
    limit: u64,
    /// The limit was reached: nothing more is recorded.
    stopped: bool,
}

impl Cast {
    /// Starts the recording of command event `event_seq` of a session,
    /// keeping up to `limit` bytes of terminal data.
    pub fn start(session_id: u64, event_seq: u64, header: &Header<'_>, limit: u64) -> Self {
        let mut h = serde_json::json!({
            "version": 2,
            "width": header.width,
            "height": header.height,
            "timestamp": header.timestamp,
            "title": header.title,
        });
        if let Some(term) = header.term {
            h["env"] = serde_json::json!({ "TERM": term });
        }
        if let Some(command) = header.command {
            h["command"] = serde_json::json!(command);
        }
        let mut lines = h.to_string();
        lines.push('\n');
        Self {
            session_id,
            event_seq,
            started: Instant::now(),
            lines,
            index: 0,
            output: Carry::default(),
            input: Carry::default(),
            recorded: 0,
            limit,
            stopped: false,
        }
    }

    fn event(&mut self, code: &str, text: &str) {
        let t = self.started.elapsed().as_secs_f64();
        // Microseconds are enough for players; keeps lines short.
        let t = (t * 1e6).round() / 1e6;
        let line = serde_json::json!([t, code, text]).to_string();
        self.recorded += line.len() as u64 + 1;
        self.lines.push_str(&line);
        self.lines.push('\n');
    }

    /// Whether another event may be recorded: `false` once what is stored
    /// (every event line, escapes and resizes included) reached the limit
    /// (the first time, a marker says so).
    fn admit(&mut self) -> bool {
        if self.stopped {
            return false;
        }
        if self.recorded >= self.limit {
            self.stopped = true;
            let mib = self.limit >> 20;
            self.event(
                "m",
                &format!("recording stopped: the target records at most {mib} MiB per command"),
            );
            return false;
        }
        true
    }

    /// The lines gathered, as a chunk to store, when there are enough.
    fn ready(&mut self) -> Option<Record> {
        (self.lines.len() >= CHUNK_BYTES).then(|| self.chunk())
    }

    fn chunk(&mut self) -> Record {
        let chunk = CastChunk {
            session_id: self.session_id,
            event_seq: self.event_seq,
            index: self.index,
            data: std::mem::take(&mut self.lines),
        };
        self.index += 1;
        Record::CastChunk(chunk)
    }

    /// What of `data` may still be recorded: no more bytes than the
    /// budget left (each becomes at least one byte of a line), so one huge
    /// chunk cannot cross the limit many times over.
    fn within_budget<'a>(&self, data: &'a [u8]) -> &'a [u8] {
        let room = self.limit.saturating_sub(self.recorded);
        &data[..data.len().min(usize::try_from(room).unwrap_or(usize::MAX))]
    }

    /// The host sent `data` (stdout or stderr).
    pub fn output(&mut self, data: &[u8]) -> Option<Record> {
        if self.admit() {
            let data = self.within_budget(data);
            let text = self.output.decode(data);
            if !text.is_empty() {
                self.event("o", &text);
            }
        }
        self.ready()
    }

    /// The client sent `data`.
    pub fn input(&mut self, data: &[u8]) -> Option<Record> {
        if self.admit() {
            let data = self.within_budget(data);
            let text = self.input.decode(data);
            if !text.is_empty() {
                self.event("i", &text);
            }
        }
        self.ready()
    }

    /// The client's terminal was resized.
    pub fn resize(&mut self, columns: u32, rows: u32) -> Option<Record> {
        if self.admit() {
            self.event("r", &format!("{columns}x{rows}"));
        }
        self.ready()
    }

    /// The channel ended: what is left to store (a cut character at the
    /// very end is recorded as U+FFFD).
    pub fn finish(mut self) -> Option<Record> {
        if !self.stopped {
            for (code, carry) in [
                ("o", std::mem::take(&mut self.output)),
                ("i", std::mem::take(&mut self.input)),
            ] {
                if !carry.0.is_empty() {
                    self.event(code, &String::from_utf8_lossy(&carry.0));
                }
            }
        }
        (!self.lines.is_empty()).then(|| self.chunk())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header() -> Header<'static> {
        Header {
            width: 80,
            height: 24,
            term: None,
            timestamp: 1_700_000_000,
            command: Some("cat"),
            title: "t",
        }
    }

    /// The recording's lines, from its chunks.
    fn text(chunks: impl IntoIterator<Item = Option<Record>>) -> String {
        chunks
            .into_iter()
            .flatten()
            .map(|r| match r {
                Record::CastChunk(c) => c.data,
                _ => String::new(),
            })
            .collect()
    }

    fn events(cast: &str) -> Vec<(String, String)> {
        cast.lines()
            .skip(1)
            .map(|l| {
                let v: serde_json::Value = serde_json::from_str(l).expect("JSON line");
                (
                    v[1].as_str().unwrap_or_default().to_string(),
                    v[2].as_str().unwrap_or_default().to_string(),
                )
            })
            .collect()
    }

    #[test]
    fn a_character_cut_between_chunks_is_recorded_whole() {
        let mut c = Cast::start(1, 2, &header(), 1 << 20);
        let snow = "déjà ☃ 🐢".as_bytes();
        let mut out = Vec::new();
        // Cut after every byte.
        for b in snow {
            out.push(c.output(std::slice::from_ref(b)));
        }
        out.push(c.input(b"\xff typed"));
        out.push(c.resize(100, 40));
        out.push(c.finish());
        let cast = text(out);
        let header: serde_json::Value =
            serde_json::from_str(cast.lines().next().expect("header")).expect("header JSON");
        assert_eq!(
            (header["version"].as_i64(), header["command"].as_str()),
            (Some(2), Some("cat"))
        );
        let ev = events(&cast);
        let output: String = ev
            .iter()
            .filter(|(k, _)| k == "o")
            .map(|(_, t)| t.as_str())
            .collect();
        assert_eq!(output, "déjà ☃ 🐢");
        assert!(ev.contains(&("i".into(), "\u{FFFD} typed".into())));
        assert!(ev.contains(&("r".into(), "100x40".into())));
    }

    #[test]
    fn recording_stops_at_the_limit_with_a_marker() {
        let mut c = Cast::start(1, 2, &header(), 10);
        let mut out = vec![c.output(b"0123456789"), c.output(b"more"), c.input(b"late")];
        out.push(c.finish());
        let ev = events(&text(out));
        assert_eq!(ev[0], ("o".into(), "0123456789".into()));
        assert_eq!(ev[1].0, "m");
        assert_eq!(ev.len(), 2, "{ev:?}");
    }

    #[test]
    fn the_limit_counts_what_is_stored_resizes_and_escapes_included() {
        let mut c = Cast::start(1, 2, &header(), 1000);
        let mut out = Vec::new();
        for _ in 0..10_000 {
            out.push(c.resize(80, 24));
            out.push(c.output(&[1u8])); // stored as \u0001: six bytes
        }
        out.push(c.finish());
        let cast = text(out);
        let header_len = cast.lines().next().map_or(0, str::len) + 1;
        let marker_len = cast.lines().last().map_or(0, str::len) + 1;
        // The events before the marker: the limit and at most the one
        // line that crossed it (timestamps vary in length with time).
        let events_len = cast.len() - header_len - marker_len;
        assert!(
            (1000..1000 + 40).contains(&events_len),
            "{events_len} bytes of events stored"
        );
        assert_eq!(events(&cast).last().map(|e| e.0.as_str()), Some("m"));
    }

    #[test]
    fn one_huge_chunk_is_cut_to_what_the_limit_leaves() {
        let mut c = Cast::start(1, 2, &header(), 1000);
        let out = vec![c.input(&vec![1u8; 1 << 20]), c.finish()];
        let cast = text(out);
        // At most the 1000 bytes left, each stored as `\u0001`.
        assert!(cast.len() < 6 * 1000 + 500, "{} bytes stored", cast.len());
    }

    #[test]
    fn long_recordings_are_stored_in_chunks_in_order() {
        let mut c = Cast::start(7, 3, &header(), u64::MAX);
        let mut chunks = Vec::new();
        for _ in 0..100 {
            chunks.extend(c.output(&[b'x'; 4096]));
        }
        chunks.extend(c.finish());
        assert!(chunks.len() > 2);
        for (i, r) in chunks.iter().enumerate() {
            match r {
                Record::CastChunk(ch) => {
                    assert_eq!((ch.session_id, ch.event_seq, ch.index), (7, 3, i as u32));
                    assert!(ch.data.ends_with('\n'));
                }
                other => panic!("{other:?}"),
            }
        }
    }
}
