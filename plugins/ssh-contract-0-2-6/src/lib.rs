//! Test fixture: an SSH-guarding plugin built for contract
//! `portcullis:policy@0.2.6` (its WIT is kept in `wit/`): it exports
//! `ssh-plugin` but not `ssh-output`, which came in 0.2.7. Gateways
//! speaking a later 0.2.x must keep loading it on SSH targets and calling
//! its hooks. It refuses exec lines that contain `forbidden-0-2-6`, allows
//! every other request and every statement.

#[cfg(target_arch = "wasm32")]
mod component {
    wit_bindgen::generate!({ world: "guard-plugin", path: "wit" });

    use exports::portcullis::policy::plugin::Guest;
    use exports::portcullis::policy::ssh_plugin::Guest as SshGuest;
    use portcullis::policy::ssh_types::{CommandLine, FileOperation, SshRequest};
    use portcullis::policy::types::{
        Column, ColumnEdits, Event, Metadata, ResultPlan, RowBatch, Session, Verdict,
    };

    struct Prior;

    impl Guest for Prior {
        fn describe() -> Metadata {
            Metadata {
                name: "ssh-contract-0-2-6".into(),
                version: "0.2.6".into(),
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
        fn on_event(_event: Event) -> Verdict {
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

    impl SshGuest for Prior {
        fn on_ssh_request(request: SshRequest) -> Verdict {
            match request {
                SshRequest::Exec(line) if line.contains("forbidden-0-2-6") => {
                    Verdict::Deny("refused by a 0.2.6 plugin".into())
                }
                _ => Verdict::Allow,
            }
        }
        fn on_command_line(_line: CommandLine) -> Verdict {
            Verdict::Allow
        }
        fn on_file_operation(_operation: FileOperation) -> Verdict {
            Verdict::Allow
        }
    }

    export!(Prior);
}
