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

fn print(value: serde_json::Value, output: Output, out: &mut dyn Write) -> Result<(), CliError> {
    if output == Output::Json {
        writeln!(
            out,
            "{}",
            serde_json::to_string_pretty(&value).unwrap_or_default()
        )?;
        return Ok(());
    }
    let list = match value.get("plugins") {
        Some(p) => p.clone(),
        None => value,
    };
    let plugins: Vec<PluginInfo> =
        serde_json::from_value(list).map_err(|e| CliError::Answer(e.to_string()))?;
    out.write_all(render(&plugins).as_bytes())?;
    Ok(())
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
