//! Test fixture: a complete, working plugin for the retired contract
//! `portcullis:policy@0.1.0` (its WIT is kept in `wit/`). The gateway must
//! refuse to load it, naming the contract it speaks.

#[cfg(target_arch = "wasm32")]
mod component {
    wit_bindgen::generate!({ world: "policy-plugin", path: "wit" });

    use exports::portcullis::policy::plugin::Guest;
    use portcullis::policy::types::{Column, Event, Metadata, Session, ValueEdit, Verdict};

    struct Old;

    impl Guest for Old {
        fn describe() -> Metadata {
            Metadata {
                name: "old-contract".into(),
                version: "0.1.0".into(),
                config_schema: r#"{"type":"object"}"#.into(),
                wants_rows: false,
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
        fn result_columns(_columns: Vec<Column>) -> bool {
            false
        }
        fn result_rows(_rows: Vec<Vec<Option<Vec<u8>>>>) -> Vec<ValueEdit> {
            Vec::new()
        }
        fn session_end(_reason: String) {}
    }

    export!(Old);
}
