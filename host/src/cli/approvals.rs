//! `portcullis approvals list|show|approve|deny`.

use std::io::Write;

use super::{encode, table, AdminClient, CliError, Output};
use crate::store::{format_time, ApprovalRecord};

fn who(a: &ApprovalRecord) -> String {
    a.requester.chain_text()
}

fn render_list(list: &[ApprovalRecord]) -> String {
    if list.is_empty() {
        return "no approval requests\n".into();
    }
    let rows: Vec<Vec<String>> = list
        .iter()
        .map(|a| {
            let approvals = a.votes.iter().filter(|v| v.approve).count();
            vec![
                a.id.clone(),
                a.status.as_str().to_string(),
                format!("{approvals}/{}", a.min_approvals),
                format_time(a.created_at),
                who(a),
                a.target.clone(),
                a.rule.clone().unwrap_or_default(),
                a.sql.split_whitespace().collect::<Vec<_>>().join(" "),
            ]
        })
        .collect();
    table::render(
        &[
            "ID",
            "STATUS",
            "APPROVALS",
            "REQUESTED (UTC)",
            "WHO",
            "TARGET",
            "RULE",
            "STATEMENT",
        ],
        &rows,
    )
}

/// The detail view of one request.
pub fn render_one(a: &ApprovalRecord) -> String {
    let mut text = format!(
        "approval {}\n  status:    {}\n  requested: {} by {} (session {})\n  target:    {} ({})\n  reason:    {}\n  rule:      {}{}\n  mode:      {}; {} approval(s) needed; open until {}\n  statement: {}\n",
        a.id,
        a.status.as_str(),
        format_time(a.created_at),
        who(a),
        a.session_id,
        a.target,
        a.protocol,
        a.reason,
        a.rule.as_deref().unwrap_or("-"),
        a.plugin.as_deref().map(|p| format!(" (plugin {p})")).unwrap_or_default(),
        a.mode,
        a.min_approvals,
        format_time(a.expires_at),
        a.sql,
    );
    if let Some(until) = a.grant_until {
        text.push_str(&format!(
            "  grant:     {} run(s) left until {}\n",
            a.grant_uses_left,
            format_time(until)
        ));
    }
    for v in &a.votes {
        text.push_str(&format!(
            "  {} by {} at {}{}\n",
            if v.approve { "approved" } else { "denied" },
            v.chain_text(),
            format_time(v.at),
            v.comment
                .as_deref()
                .map(|c| format!(": {c}"))
                .unwrap_or_default()
        ));
    }
    text
}

fn print(value: serde_json::Value, output: Output, out: &mut dyn Write) -> Result<(), CliError> {
    if value.is_array() {
        super::print(value, output, out, |l: &Vec<ApprovalRecord>| render_list(l))
    } else {
        super::print(value, output, out, render_one)
    }
}

/// `approvals list [--status]`.
pub async fn list(
    client: &AdminClient,
    status: Option<&str>,
    output: Output,
    out: &mut dyn Write,
) -> Result<(), CliError> {
    let path = match status {
        Some(s) => format!("/v1/approvals?status={}", encode(s)),
        None => "/v1/approvals".into(),
    };
    let value = client.json(hyper::Method::GET, &path, None).await?;
    print(value, output, out)
}

/// `approvals show <id>`.
pub async fn show(
    client: &AdminClient,
    id: &str,
    output: Output,
    out: &mut dyn Write,
) -> Result<(), CliError> {
    let value = client
        .json(
            hyper::Method::GET,
            &format!("/v1/approvals/{}", encode(id)),
            None,
        )
        .await?;
    print(value, output, out)
}

/// `approvals approve|deny <id> [--comment]`.
pub async fn decide(
    client: &AdminClient,
    id: &str,
    approve: bool,
    comment: Option<&str>,
    output: Output,
    out: &mut dyn Write,
) -> Result<(), CliError> {
    let verb = if approve { "approve" } else { "deny" };
    let body = serde_json::json!({ "comment": comment });
    let value = client
        .json(
            hyper::Method::POST,
            &format!("/v1/approvals/{}/{verb}", encode(id)),
            Some(body),
        )
        .await?;
    print(value, output, out)
}
