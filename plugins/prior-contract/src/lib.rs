//! Test fixture: a plugin built for the previous contract version
//! `portcullis:policy@0.2.1` (its WIT is kept in `wit/`), which gateways
//! speaking a later 0.2.x must keep loading and running. It refuses `DROP`
//! statements, naming its rule through the 0.2.1 host function `note-rule`,
//! and allows everything else.

#[cfg(target_arch = "wasm32")]
mod component {
    wit_bindgen::generate!({ world: "policy-plugin", path: "wit" });

    use exports::portcullis::policy::plugin::Guest;
    use portcullis::policy::host::note_rule;
    use portcullis::policy::types::{
        Column, ColumnEdits, Event, Metadata, ResultPlan, RowBatch, Session, Verdict,
    };

    struct Prior;

    impl Guest for Prior {
        fn describe() -> Metadata {
            Metadata {
                name: "prior-contract".into(),
                version: "0.2.1".into(),
                config_schema: r#"{"type":"object"}"#.into(),
                wants_rows: false,
                query_kinds: Vec::new(),
                stable_result_plans: false,
            }
        }
        fn configure(_config: String) -> Result<(), String> {
            Ok(())
        }
        fn session_start(_session: Session) -> Verdict {
            Verdict::Allow
        }
        fn on_event(event: Event) -> Verdict {
            let Event::PgQuery(query) = event;
            if query.statements.iter().any(|s| s.kind == "drop") {
                note_rule("no-drop-0-2-1");
                return Verdict::Deny("refused by a 0.2.1 plugin: DROP is not allowed".into());
            }
            Verdict::Allow
        }
        fn result_columns(_columns: Vec<Column>) -> ResultPlan {
            ResultPlan::Pass
        }
        fn result_rows(_batch: RowBatch) -> Vec<ColumnEdits> {
            Vec::new()
        }
        fn session_end(_reason: String) {}
    }

    export!(Prior);
}
