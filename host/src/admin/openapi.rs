//! The admin API's OpenAPI document, generated from the endpoint functions'
//! attributes; `docs/openapi.json` is this document (a test keeps them equal).

use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi};

use super::routes;

#[derive(OpenApi)]
#[openapi(
    info(
        title = "Portcullis admin API",
        description = "Health, metrics, sessions, audit export and plugins of a Portcullis gateway. `/v1` endpoints need a bearer token: an OIDC token of a member of an admin or approver group, or the static admin token."
    ),
    paths(
        routes::healthz,
        routes::readyz,
        routes::metrics,
        routes::list_sessions,
        routes::show_session,
        routes::show_recording,
        routes::export_audit,
        routes::list_plugins,
        routes::reload_plugins,
        routes::list_approvals,
        routes::show_approval,
        routes::approve_doc,
        routes::deny_doc,
        routes::token_exchange,
        routes::ssh_certificate,
        routes::revoke_token,
    ),
    modifiers(&Bearer)
)]
struct ApiDoc;

struct Bearer;

impl Modify for Bearer {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build()),
        );
    }
}

/// The document as pretty-printed JSON.
pub fn document() -> String {
    let mut doc = ApiDoc::openapi();
    // The version is the gateway's; the crate version is not a stable API version.
    doc.info.version = "1".into();
    doc.to_pretty_json()
        .unwrap_or_else(|e| format!("{{\"error\": \"{e}\"}}"))
}

#[cfg(test)]
mod tests {
    /// `docs/openapi.json` is the generated document. To update it after
    /// changing the API: `PORTCULLIS_WRITE_OPENAPI=1 cargo test -p portcullis openapi`.
    #[test]
    fn openapi_document_in_docs_is_current() {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../docs/openapi.json");
        let generated = format!("{}\n", super::document());
        if std::env::var_os("PORTCULLIS_WRITE_OPENAPI").is_some() {
            std::fs::write(path, &generated).expect("write docs/openapi.json");
        }
        let checked_in = std::fs::read_to_string(path).unwrap_or_default();
        assert!(
            checked_in == generated,
            "docs/openapi.json is out of date; regenerate it with PORTCULLIS_WRITE_OPENAPI=1 cargo test -p portcullis openapi"
        );
    }
}
