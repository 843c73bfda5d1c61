//! `portcullis sessions play` and `sessions cast`: a session's terminal
//! recordings (asciicast v2, SSH exec and shell channels) from the admin
//! API, replayed in the terminal with their timing, or written out whole
//! for `asciinema play` / `asciinema cat`.

use std::io::{IsTerminal, Write};
use std::time::Duration;

use http_body_util::BodyExt;

use super::{AdminClient, CliError};

/// One output event of a recording.
#[derive(Debug, Clone, PartialEq)]
pub struct Frame {
    /// Seconds since the recording started.
    pub at: f64,
    /// What the terminal showed.
    pub text: String,
}

/// A recording read for playing.
#[derive(Debug, Clone, PartialEq)]
pub struct Recording {
    /// The header's title.
    pub title: String,
    /// Whether the client had a terminal (then output is played as is;
    /// without one, lone newlines are played as new lines).
    pub terminal: bool,
    /// Its output, in order.
    pub frames: Vec<Frame>,
}

/// Reads an asciicast v2 text; an error names the line that is wrong.
pub fn parse(cast: &str) -> Result<Recording, CliError> {
    let mut lines = cast.lines();
    let header: serde_json::Value = lines
        .next()
        .and_then(|l| serde_json::from_str(l).ok())
        .ok_or_else(|| CliError::Answer("the recording has no header line".into()))?;
    if header["version"].as_i64() != Some(2) {
        return Err(CliError::Answer(format!(
            "the recording is not asciicast version 2: {header}"
        )));
    }
    let mut frames = Vec::new();
    for (n, line) in lines.enumerate() {
        let bad = || CliError::Answer(format!("line {} of the recording is not an event", n + 2));
        let v: serde_json::Value = serde_json::from_str(line).map_err(|_| bad())?;
        let (Some(at), Some(code)) = (v[0].as_f64(), v[1].as_str()) else {
            return Err(bad());
        };
        if code == "o" {
            frames.push(Frame {
                at,
                text: v[2].as_str().unwrap_or_default().to_string(),
            });
        }
    }
    Ok(Recording {
        title: header["title"].as_str().unwrap_or_default().to_string(),
        terminal: header["env"]["TERM"].is_string(),
        frames,
    })
}

/// The recording of command `seq` of session `id`, as stored.
pub async fn cast(client: &AdminClient, id: u64, seq: u64) -> Result<String, CliError> {
    let resp = client
        .request(
            hyper::Method::GET,
            &format!("/v1/sessions/{id}/recordings/{seq}"),
            None,
        )
        .await?;
    let bytes = resp
        .into_body()
        .collect()
        .await
        .map_err(|e| CliError::Answer(e.to_string()))?
        .to_bytes();
    String::from_utf8(bytes.to_vec()).map_err(|e| CliError::Answer(e.to_string()))
}

/// The events of session `id` that may have recordings (SSH exec and
/// shell commands), in order.
async fn recorded_events(client: &AdminClient, id: u64) -> Result<Vec<u64>, CliError> {
    let detail = client
        .json(hyper::Method::GET, &format!("/v1/sessions/{id}"), None)
        .await?;
    Ok(detail["events"]
        .as_array()
        .map(|events| {
            events
                .iter()
                .filter(|e| {
                    e["action"] == "command"
                        && matches!(e["protocol"].as_str(), Some("exec" | "shell"))
                })
                .filter_map(|e| e["seq"].as_u64())
                .collect()
        })
        .unwrap_or_default())
}

/// How to play.
#[derive(Debug, Clone, Copy)]
pub struct Pace {
    /// Faster (2.0) or slower (0.5) than it happened.
    pub speed: f64,
    /// The longest pause played, in seconds.
    pub max_idle: f64,
}

/// `sessions play <id> [--event N]`: plays the session's recordings (or
/// one) on `out`, each after a line naming it; returns how many played.
pub async fn play(
    client: &AdminClient,
    id: u64,
    event: Option<u64>,
    pace: Pace,
    out: &mut dyn Write,
) -> Result<usize, CliError> {
    let events = match event {
        Some(seq) => vec![seq],
        None => recorded_events(client, id).await?,
    };
    let to_terminal = std::io::stdout().is_terminal();
    let mut played = 0;
    for seq in events {
        let text = match cast(client, id, seq).await {
            Ok(t) => t,
            // A command whose recording was not kept (limit 0, refused).
            Err(CliError::Api { status: 404, .. }) if event.is_none() => continue,
            Err(e) => return Err(e),
        };
        let recording = parse(&text)?;
        // The title is the client's command line: printed without its
        // control characters, so it cannot rewrite the operator's screen.
        let title: String = recording
            .title
            .chars()
            .map(|c| if c.is_control() { '?' } else { c })
            .collect();
        writeln!(out, "\r\n── session {id}, event {seq}: {title} ──\r")?;
        let mut last = 0.0;
        for f in &recording.frames {
            let pause = ((f.at - last).max(0.0) / pace.speed.max(0.01))
                .min(pace.max_idle.clamp(0.0, 3600.0));
            last = f.at;
            if pause > 0.0 {
                out.flush()?;
                tokio::time::sleep(Duration::from_secs_f64(pause)).await;
            }
            if to_terminal && !recording.terminal {
                out.write_all(
                    f.text
                        .replace("\r\n", "\n")
                        .replace('\n', "\r\n")
                        .as_bytes(),
                )?;
            } else {
                out.write_all(f.text.as_bytes())?;
            }
        }
        out.flush()?;
        played += 1;
    }
    Ok(played)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_output_events_and_refuses_what_is_not_a_recording() {
        let cast = "{\"version\":2,\"width\":80,\"height\":24,\"title\":\"exec: ls\"}\n\
                    [0.1,\"o\",\"a\\n\"]\n[0.2,\"i\",\"typed\"]\n[0.3,\"r\",\"100x40\"]\n[1.5,\"o\",\"b\"]\n";
        let r = parse(cast).expect("a recording");
        assert_eq!(r.title, "exec: ls");
        assert!(!r.terminal);
        assert_eq!(
            r.frames,
            vec![
                Frame {
                    at: 0.1,
                    text: "a\n".into()
                },
                Frame {
                    at: 1.5,
                    text: "b".into()
                }
            ]
        );
        assert!(parse("").is_err());
        assert!(parse("{\"version\":1}\n").is_err());
        assert!(parse("{\"version\":2}\nnot json\n").is_err());
    }
}
