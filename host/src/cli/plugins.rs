//! `portcullis plugins list|reload`.

use std::io::Write;

use super::{table, AdminClient, CliError, Output};
use crate::server::PluginInfo;
use crate::store::format_time;

fn render(plugins: &[PluginInfo]) -> String {
    if plugins.is_empty() {
        return "no plugins loaded\n".into();
    }
    let rows: Vec<Vec<String>> = plugins
        .iter()
        .map(|p| {
            vec![
                p.name.clone(),
                p.version.clone(),
                p.sha256.chars().take(12).collect(),
                format_time(p.loaded_at),
                p.path.clone(),
            ]
        })
        .collect();
    table::render(
        &["NAME", "VERSION", "SHA256", "LOADED (UTC)", "FILE"],
        &rows,
    )
}

/// The plugins of an answer (a list, or a reload's `{"plugins": [...]}`).
fn print(value: serde_json::Value, output: Output, out: &mut dyn Write) -> Result<(), CliError> {
    let value = match (output, value.get("plugins")) {
        (Output::Table, Some(list)) => list.clone(),
        _ => value,
    };
    super::print(value, output, out, |p: &Vec<PluginInfo>| render(p))
}

/// `plugins list`.
pub async fn list(
    client: &AdminClient,
    output: Output,
    out: &mut dyn Write,
) -> Result<(), CliError> {
    let value = client.json(hyper::Method::GET, "/v1/plugins", None).await?;
    print(value, output, out)
}

/// `plugins reload`.
pub async fn reload(
    client: &AdminClient,
    output: Output,
    out: &mut dyn Write,
) -> Result<(), CliError> {
    let value = client
        .json(hyper::Method::POST, "/v1/plugins/reload", None)
        .await?;
    if output == Output::Table {
        writeln!(out, "plugins reloaded; new sessions use them")?;
    }
    print(value, output, out)
}
