//! `portcullis sessions list|show`: who connected, and a session replayed
//! as a timeline of its statements.

use std::io::Write;

use super::{encode, human_micros, table, AdminClient, CliError, Output};
use crate::admin::routes::SessionDetail;
use crate::store::{format_time, Action, EventRecord, EventStatus, SessionRecord};

/// Filters of `sessions list`.
#[derive(Debug, Clone, Default)]
pub struct ListFilter {
    /// Only this user.
    pub user: Option<String>,
    /// Only this target.
    pub target: Option<String>,
    /// Only open sessions.
    pub active: bool,
    /// At most this many.
    pub limit: Option<usize>,
}

/// `sessions list`.
pub async fn list(
    client: &AdminClient,
    filter: &ListFilter,
    output: Output,
    out: &mut dyn Write,
) -> Result<(), CliError> {
    let mut params = Vec::new();
    if let Some(u) = &filter.user {
        params.push(format!("user={}", encode(u)));
    }
    if let Some(t) = &filter.target {
        params.push(format!("target={}", encode(t)));
    }
    if filter.active {
        params.push("active=true".into());
    }
    if let Some(l) = filter.limit {
        params.push(format!("limit={l}"));
    }
    let path = if params.is_empty() {
        "/v1/sessions".to_string()
    } else {
        format!("/v1/sessions?{}", params.join("&"))
    };
    let value = client.json(hyper::Method::GET, &path, None).await?;
    super::print(value, output, out, |s: &Vec<SessionRecord>| render_list(s))
}

/// The table of `sessions list`.
pub fn render_list(sessions: &[SessionRecord]) -> String {
    let rows: Vec<Vec<String>> = sessions
        .iter()
        .map(|s| {
            vec![
                s.id.to_string(),
                format_time(s.started_at),
                s.identity.chain_text(),
                s.target.clone(),
                s.client_addr.clone(),
                match s.ended_at {
                    Some(e) => format!("ended {}", format_time(e)),
                    None => "open".into(),
                },
            ]
        })
        .collect();
    if rows.is_empty() {
        return "no sessions\n".into();
    }
    table::render(
        &["ID", "STARTED (UTC)", "WHO", "TARGET", "CLIENT", "STATE"],
        &rows,
    )
}

/// `sessions show <id>`.
pub async fn show(
    client: &AdminClient,
    id: u64,
    output: Output,
    out: &mut dyn Write,
) -> Result<(), CliError> {
    let value = client
        .json(hyper::Method::GET, &format!("/v1/sessions/{id}"), None)
        .await?;
    super::print(value, output, out, render_show)
}

/// One event's outcome in words: `ok`, `error 22012`, `refused by block (no-drop)`.
fn outcome(e: &EventRecord) -> String {
    match e.status {
        EventStatus::Refused => {
            let by = e.decided_by.as_deref().unwrap_or("the gateway");
            let what = if e.verdict == "require-approval" {
                "held for approval by"
            } else {
                "refused by"
            };
            match &e.rule {
                Some(rule) => format!("{what} {by} ({rule})"),
                None => format!("{what} {by}"),
            }
        }
        EventStatus::Error => match (&e.sqlstate, &e.error) {
            (Some(code), _) => format!("error {code}"),
            // A command's failure: "exit status 3", "killed by signal KILL".
            (None, Some(error)) => error.clone(),
            (None, None) => "error".into(),
        },
        EventStatus::Withheld => "result withheld".into(),
        EventStatus::NotRun => "not run".into(),
        EventStatus::Started => "started (no outcome recorded)".into(),
        EventStatus::Unknown => "no answer (session ended)".into(),
        EventStatus::Ok => "ok".into(),
    }
}

/// The timeline of `sessions show`.
pub fn render_show(d: &SessionDetail) -> String {
    let s = &d.session;
    let mut text = format!(
        "session {}\n  who:     {}\n  groups:  {}\n  target:  {} ({})\n  client:  {}{}\n  started: {}\n",
        s.id,
        s.identity.chain_text(),
        s.identity.groups.join(", "),
        s.target,
        s.protocol,
        s.client_addr,
        s.application_name
            .as_deref()
            .map(|a| format!(" ({a})"))
            .unwrap_or_default(),
        format_time(s.started_at),
    );
    match (&s.ended_at, &s.end_reason) {
        (Some(e), reason) => text.push_str(&format!(
            "  ended:   {} ({}); {} bytes in, {} bytes out\n",
            format_time(*e),
            reason.as_deref().unwrap_or("unknown reason"),
            s.bytes_from_client,
            s.bytes_to_client
        )),
        (None, _) => text.push_str("  ended:   (open)\n"),
    }
    text.push('\n');
    if d.events.is_empty() {
        text.push_str("no recorded statements\n");
        return text;
    }
    let rows: Vec<Vec<String>> = d
        .events
        .iter()
        .map(|e| {
            vec![
                format_time(e.at)
                    .split('T')
                    .nth(1)
                    .unwrap_or_default()
                    .trim_end_matches('Z')
                    .to_string(),
                outcome(e),
                e.rows.map(|r| r.to_string()).unwrap_or_else(|| "-".into()),
                e.duration_us
                    .map(human_micros)
                    .unwrap_or_else(|| "-".into()),
                one_line(&what(e), 100),
            ]
        })
        .collect();
    text.push_str(&table::render(
        &["TIME", "OUTCOME", "ROWS", "DURATION", "STATEMENT"],
        &rows,
    ));
    text
}

/// What an event did: the statement, or for a command its kind and text
/// (`exec: systemctl status nginx`, `shell`, `subsystem: sftp`).
fn what(e: &EventRecord) -> String {
    match e.action {
        Action::Command if e.sql.is_empty() => e.protocol.to_string(),
        Action::Command => format!("{}: {}", e.protocol, e.sql),
        Action::Statement | Action::Request => e.sql.to_string(),
    }
}

/// The statement on one line, shortened to `max` characters.
fn one_line(sql: &str, max: usize) -> String {
    let flat: String = sql.split_whitespace().collect::<Vec<_>>().join(" ");
    if flat.chars().count() <= max {
        return flat;
    }
    let cut: String = flat.chars().take(max - 1).collect();
    format!("{cut}…")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn command(kind: &str, text: &str, status: EventStatus, error: Option<&str>) -> EventRecord {
        EventRecord {
            session_id: 1,
            seq: 1,
            at: 0,
            action: Action::Command,
            protocol: kind.into(),
            sql: text.into(),
            fingerprint: "".into(),
            kinds: Vec::new().into(),
            tables_read: Vec::new().into(),
            tables_written: Vec::new().into(),
            verdict: "allow".into(),
            decided_by: None,
            rule: None,
            reason: None,
            status,
            duration_us: Some(1_500),
            rows: None,
            sqlstate: None,
            error: error.map(str::to_string),
            sample: None,
            approval_id: None,
        }
    }

    #[test]
    fn ssh_commands_show_their_kind_text_and_exit_status() {
        let session = SessionRecord {
            id: 1,
            started_at: 0,
            identity: crate::store::IdentityRecord {
                subject: "s".into(),
                user: "alice@example.com".into(),
                groups: vec!["ops".into()],
                issuer: "https://issuer".into(),
                actor_chain: Vec::new(),
            },
            target: "web-1".into(),
            protocol: "ssh".into(),
            client_addr: "127.0.0.1:5000".into(),
            application_name: None,
            ended_at: None,
            end_reason: None,
            bytes_from_client: 0,
            bytes_to_client: 0,
        };
        let text = render_show(&SessionDetail {
            session,
            events: vec![
                command(
                    "exec",
                    "systemctl restart nginx",
                    EventStatus::Error,
                    Some("exit status 3"),
                ),
                command("shell", "", EventStatus::Ok, None),
                command("subsystem", "sftp", EventStatus::Ok, None),
            ],
        });
        assert!(text.contains("target:  web-1 (ssh)"), "{text}");
        assert!(text.contains("exit status 3"), "{text}");
        assert!(text.contains("exec: systemctl restart nginx"), "{text}");
        assert!(text.contains("subsystem: sftp"), "{text}");
        assert!(
            text.lines().any(|l| l.trim_end().ends_with("shell")),
            "{text}"
        );
    }
}
