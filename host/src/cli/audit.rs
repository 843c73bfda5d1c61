//! `portcullis audit export`: statement events in a time range as JSON
//! lines, streamed from the API to standard output.

use std::io::Write;

use http_body_util::BodyExt;

use super::{encode, AdminClient, CliError};

/// `audit export --since --until`; returns the number of events written.
pub async fn export(
    client: &AdminClient,
    since: Option<&str>,
    until: Option<&str>,
    out: &mut dyn Write,
) -> Result<u64, CliError> {
    let mut params = Vec::new();
    if let Some(s) = since {
        params.push(format!("since={}", encode(s)));
    }
    if let Some(u) = until {
        params.push(format!("until={}", encode(u)));
    }
    let path = format!("/v1/audit/export?{}", params.join("&"));
    let resp = client.request(hyper::Method::GET, &path, None).await?;
    let mut body = resp.into_body();
    let mut lines = 0u64;
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|e| CliError::Answer(e.to_string()))?;
        if let Ok(data) = frame.into_data() {
            lines += data.iter().filter(|&&b| b == b'\n').count() as u64;
            out.write_all(&data)?;
        }
    }
    out.flush()?;
    Ok(lines)
}
