//! Sessions pinned to an upstream role, the backstop PostgreSQL enforces
//! itself (`[[targets.roles]]`, `default_role`): a hole in statement
//! analysis still meets the database's own privileges.
//!
//! The gateway sets the role as a start-up parameter of its upstream login,
//! so PostgreSQL checks that its login role may take it, and `RESET ROLE`,
//! `RESET ALL`, `DISCARD ALL` and `SET SESSION AUTHORIZATION DEFAULT` return
//! to it rather than to the gateway's login role. What could leave it is
//! refused before it is forwarded: a role switch in any spelling the parser
//! sees (`SET ROLE`, `SET SESSION AUTHORIZATION`, `set_config('role', ...)`,
//! also inside functions, triggers and rules it runs), a `DO` block or new
//! code (functions, procedures, triggers, rules, views) whose dynamic SQL
//! could run `SET ROLE NONE`, code whose effects the gateway cannot read
//! (dynamic SQL, other languages, an unreachable catalog), the
//! `FunctionCall` message (it can call `set_config` by OID), and SQL that
//! does not parse.
//!
//! Every session, pinned or not, is refused when its start-up packet asks
//! for a role itself ([`startup_violation`]): a switch there would pass no
//! plugin.

use crate::protocols::postgres::codec::startup::StartupMessage;
use crate::protocols::postgres::sql::QuerySummary;

/// Start-up settings that choose the upstream identity.
const IDENTITY_SETTINGS: &[&str] = &["role", "session_authorization"];

/// Why a session pinned to `role` may not run `summary`, if it may not.
pub fn violation(summary: &QuerySummary, role: &str) -> Option<String> {
    if let Some(e) = &summary.parse_error {
        return Some(format!(
            "the statement does not parse ({e}), so the gateway cannot tell that it keeps this session's role \"{role}\""
        ));
    }
    for s in &summary.statements {
        if s.switches_role {
            return Some(format!(
                "this session runs as role \"{role}\" upstream and may not switch roles"
            ));
        }
        if s.kind == "do" {
            return Some(format!(
                "this session runs as role \"{role}\" upstream: DO blocks are not allowed (their dynamic SQL could switch roles)"
            ));
        }
        if let Some(why) = s.unknown_effects.first() {
            return Some(format!(
                "this session runs as role \"{role}\" upstream: the statement runs code the gateway cannot check, which could switch roles ({why})"
            ));
        }
        if s.creates_code {
            return Some(format!(
                "this session runs as role \"{role}\" upstream: creating or changing functions, procedures, triggers or rules is not allowed (their code could switch roles)"
            ));
        }
    }
    None
}

/// Why a pinned session may not send a `FunctionCall` message.
pub fn function_call_violation(role: &str) -> String {
    format!(
        "this session runs as role \"{role}\" upstream: the FunctionCall protocol message is not allowed (it could call set_config); call functions in SQL instead"
    )
}

/// Why a session may not start with these start-up parameters, if it may
/// not: a `role` or `session_authorization` parameter, or an `options`
/// string that sets either (`-c role=...`, `--role=...`, any case, with
/// backslash escapes).
pub fn startup_violation(msg: &StartupMessage<'_>) -> Option<String> {
    let refuse = |how: &str| {
        Some(format!(
            "the start-up packet sets {how}; the gateway chooses the upstream role, so remove it (use SET for other settings)"
        ))
    };
    for (k, v) in &msg.params {
        let key = k.to_ascii_lowercase();
        if IDENTITY_SETTINGS.contains(&key.as_str()) {
            return refuse(&format!("\"{key}\""));
        }
        if key == "options" {
            let plain: String = v
                .chars()
                .filter(|c| *c != '\\')
                .collect::<String>()
                .to_ascii_lowercase();
            if IDENTITY_SETTINGS.iter().any(|s| plain.contains(s)) {
                return refuse("the role in \"options\"");
            }
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn startup(params: &[(&'static str, &'static str)]) -> StartupMessage<'static> {
        StartupMessage {
            major: 3,
            minor: 0,
            params: params.to_vec(),
        }
    }

    #[test]
    fn a_start_up_packet_may_not_choose_the_role() {
        for params in [
            &[("role", "postgres")][..],
            &[("ROLE", "postgres")],
            &[("Session_Authorization", "postgres")],
            &[("options", "-c role=postgres")],
            &[("options", "--ROLE=postgres")],
            &[("options", "-c r\\ole=postgres")],
            &[(
                "options",
                "-c statement_timeout=5 -csession_authorization=x",
            )],
        ] {
            assert!(startup_violation(&startup(params)).is_some(), "{params:?}");
        }
        for params in [
            &[("user", "a"), ("application_name", "role play")][..],
            &[("options", "-c statement_timeout=5")],
        ] {
            assert!(startup_violation(&startup(params)).is_none(), "{params:?}");
        }
    }

    #[test]
    fn what_could_leave_the_role_is_refused() {
        for sql in [
            "SET ROLE NONE",
            "SET SESSION AUTHORIZATION postgres",
            "SELECT set_config('role', 'none', false)",
            "SELECT set_config($1, $2, false)",
            "DO $$ BEGIN EXECUTE 'SET ROLE NONE'; END $$",
            "CREATE FUNCTION pg_temp.f() RETURNS void LANGUAGE plpgsql AS $$ BEGIN EXECUTE 'RESET ROLE'; END $$",
            "PREPARE p AS SELECT set_config('role', 'none', false)",
            "SELEC 1",
        ] {
            let summary = crate::protocols::postgres::sql::summarize(sql);
            assert!(violation(&summary, "shop_agent").is_some(), "{sql}");
        }
        for sql in [
            "SELECT 1",
            "DISCARD ALL",
            "RESET ALL",
            "SET search_path = public",
        ] {
            let summary = crate::protocols::postgres::sql::summarize(sql);
            assert!(violation(&summary, "shop_agent").is_none(), "{sql}");
        }
    }
}
