//! Responses plugins watch, object by object: a whole JSON document (a
//! `get`, or a list whose items are each shown), or a watch stream (one
//! JSON event after another, each event's object shown). The gateway asks
//! the API server for plain JSON when a plugin watches; what it cannot
//! read as JSON objects is withheld, never passed.

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;
use hyper::body::{Frame, SizeHint};
use serde_json::Value;

use super::upstream::Body;
use crate::policy::ObjectEdit;

/// Largest response read whole for watching plugins.
pub const MAX_DOCUMENT: usize = 32 << 20;

/// Largest watch event held while it arrives.
pub const MAX_EVENT: usize = 8 << 20;

/// Shows one object (JSON text) to the watching plugins.
pub type Editor = Arc<dyn Fn(&str) -> ObjectEdit + Send + Sync>;

/// A document's objects edited: the bytes to send, or why none are.
pub fn edit_document(bytes: &[u8], edit: &Editor) -> Result<Vec<u8>, String> {
    let mut doc: Value = serde_json::from_slice(bytes)
        .map_err(|e| format!("the API server's answer is not JSON ({e})"))?;
    let Some(object) = doc.as_object_mut() else {
        return Err("the API server's answer is not a JSON object".into());
    };
    if object.get("kind").and_then(Value::as_str) == Some("Table") {
        return Err(
            "the API server answered with a table, whose rows plugins cannot read as objects"
                .into(),
        );
    }
    match object.get_mut("items") {
        Some(Value::Array(items)) => {
            for item in items.iter_mut() {
                edit_value(item, edit)?;
            }
        }
        Some(Value::Null) => {}
        Some(_) => return Err("the list's items are not a list".into()),
        None => edit_value(&mut doc, edit)?,
    }
    serde_json::to_vec(&doc).map_err(|e| e.to_string())
}

/// Replaces `value` with what the plugins make of it.
fn edit_value(value: &mut Value, edit: &Editor) -> Result<(), String> {
    match edit(&value.to_string()) {
        ObjectEdit::Unchanged => Ok(()),
        ObjectEdit::Replaced(json) => {
            let replaced: Value = serde_json::from_str(&json)
                .map_err(|e| format!("a plugin's replacement is not JSON ({e})"))?;
            if !replaced.is_object() {
                return Err("a plugin's replacement is not a JSON object".into());
            }
            *value = replaced;
            Ok(())
        }
        ObjectEdit::Withheld(why) => Err(why),
    }
}

/// One watch event edited (its `object`), as a line.
fn edit_event(mut event: Value, edit: &Editor) -> Result<Vec<u8>, String> {
    let Some(object) = event.get_mut("object") else {
        return Err("a watch event without an object".into());
    };
    edit_value(object, edit)?;
    let mut line = serde_json::to_vec(&event).map_err(|e| e.to_string())?;
    line.push(b'\n');
    Ok(line)
}

/// The `ERROR` watch event that ends a withheld watch, with a `Status`
/// saying why.
fn error_event(why: &str) -> Vec<u8> {
    let status: Value = serde_json::from_slice(&super::status::failure(
        super::status::Reason::Forbidden,
        &format!("portcullis: the watch was ended: {why}"),
        None,
        None,
    ))
    .unwrap_or(Value::Null);
    let mut line = serde_json::json!({ "type": "ERROR", "object": status })
        .to_string()
        .into_bytes();
    line.push(b'\n');
    line
}

/// A watch stream whose events' objects are shown to the plugins as they
/// arrive; it ends (the client's watch with it) at the first event it
/// cannot read or a plugin withholds.
pub struct WatchedStream {
    inner: Body,
    pending: Vec<u8>,
    edit: Editor,
    ended: bool,
}

impl WatchedStream {
    /// Watches `inner`'s events with `edit`.
    pub fn new(inner: Body, edit: Editor) -> Self {
        Self {
            inner,
            pending: Vec::new(),
            edit,
            ended: false,
        }
    }

    /// The complete events in `pending`, edited; what is left stays.
    fn drain(&mut self) -> Result<Vec<u8>, String> {
        let mut out = Vec::new();
        let mut consumed = 0;
        {
            let mut events =
                serde_json::Deserializer::from_slice(&self.pending).into_iter::<Value>();
            loop {
                match events.next() {
                    Some(Ok(event)) => {
                        out.extend(edit_event(event, &self.edit)?);
                        consumed = events.byte_offset();
                    }
                    Some(Err(e)) if e.is_eof() => break,
                    Some(Err(e)) => return Err(format!("a watch event is not JSON ({e})")),
                    None => {
                        consumed = events.byte_offset();
                        break;
                    }
                }
            }
        }
        self.pending.drain(..consumed);
        if self.pending.len() > MAX_EVENT {
            return Err(format!(
                "a watch event is larger than {} MiB",
                MAX_EVENT >> 20
            ));
        }
        Ok(out)
    }
}

impl hyper::body::Body for WatchedStream {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        loop {
            if self.ended {
                return Poll::Ready(None);
            }
            match Pin::new(&mut self.inner).poll_frame(cx) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(None) => {
                    self.ended = true;
                    return Poll::Ready(None);
                }
                Poll::Ready(Some(Err(e))) => return Poll::Ready(Some(Err(e))),
                Poll::Ready(Some(Ok(frame))) => {
                    let Ok(data) = frame.into_data() else {
                        continue;
                    };
                    self.pending.extend_from_slice(&data);
                    match self.drain() {
                        Ok(out) if out.is_empty() => continue,
                        Ok(out) => return Poll::Ready(Some(Ok(Frame::data(Bytes::from(out))))),
                        Err(why) => {
                            tracing::warn!(reason = %why, "watch ended: its events could not be shown to the plugins");
                            self.ended = true;
                            // The client learns why, as the API server
                            // tells a watch it ends: an ERROR event.
                            return Poll::Ready(Some(Ok(Frame::data(Bytes::from(error_event(
                                &why,
                            ))))));
                        }
                    }
                }
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.ended
    }

    fn size_hint(&self) -> SizeHint {
        SizeHint::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::BodyExt;

    fn masker() -> Editor {
        Arc::new(|object: &str| {
            let mut v: Value = serde_json::from_str(object).expect("JSON");
            if v["kind"] == "Secret" {
                v["data"] = serde_json::json!({"password": "KioqKg=="});
                ObjectEdit::Replaced(v.to_string())
            } else {
                ObjectEdit::Unchanged
            }
        })
    }

    #[test]
    fn each_item_of_a_list_and_a_single_object_are_shown() {
        let list = br#"{"kind":"SecretList","items":[{"kind":"Secret","data":{"password":"aHVudGVyMg=="}},{"kind":"Secret","data":{"k":"dg=="}}]}"#;
        let out =
            String::from_utf8(edit_document(list, &masker()).expect("edited")).expect("UTF-8");
        assert!(
            !out.contains("aHVudGVyMg==") && !out.contains("dg=="),
            "{out}"
        );
        let one = br#"{"kind":"Secret","data":{"password":"aHVudGVyMg=="}}"#;
        let out = String::from_utf8(edit_document(one, &masker()).expect("edited")).expect("UTF-8");
        assert!(out.contains("KioqKg=="), "{out}");
        // What cannot be read is withheld.
        assert!(edit_document(b"\x0a\x0bk8s\x00protobuf", &masker()).is_err());
        assert!(edit_document(br#"{"kind":"Table","rows":[]}"#, &masker()).is_err());
        let withhold: Editor = Arc::new(|_| ObjectEdit::Withheld("no".into()));
        assert!(edit_document(one, &withhold).is_err());
    }

    #[tokio::test]
    async fn a_watch_stream_is_edited_event_by_event_across_any_cut() {
        let events = concat!(
            r#"{"type":"ADDED","object":{"kind":"Secret","data":{"password":"aHVudGVyMg=="}}}"#,
            "\n",
            r#"{"type":"MODIFIED","object":{"kind":"Secret","data":{"password":"aHVudGVyMw=="}}}"#,
            r#"{"type":"ADDED","object":{"kind":"ConfigMap","data":{"a":"b"}}}"#,
        );
        for cut in [1, 7, 40, 90, events.len() - 1] {
            let chunks: Vec<Result<Frame<Bytes>, hyper::Error>> = vec![
                Ok(Frame::data(Bytes::copy_from_slice(
                    &events.as_bytes()[..cut],
                ))),
                Ok(Frame::data(Bytes::copy_from_slice(
                    &events.as_bytes()[cut..],
                ))),
            ];
            let inner = http_body_util::StreamBody::new(futures_util::stream::iter(chunks)).boxed();
            let out = WatchedStream::new(inner, masker())
                .collect()
                .await
                .expect("body")
                .to_bytes();
            let text = String::from_utf8(out.to_vec()).expect("UTF-8");
            assert!(!text.contains("aHVudGVy"), "{cut}: {text}");
            assert_eq!(text.lines().count(), 3, "{cut}: {text}");
            assert!(text.contains("ConfigMap"), "{text}");
        }
        // A withheld event ends the watch with an ERROR event saying why.
        let withhold: Editor = Arc::new(|_| ObjectEdit::Withheld("plugin \"mask\" failed".into()));
        let chunks: Vec<Result<Frame<Bytes>, hyper::Error>> =
            vec![Ok(Frame::data(Bytes::copy_from_slice(events.as_bytes())))];
        let inner = http_body_util::StreamBody::new(futures_util::stream::iter(chunks)).boxed();
        let out = WatchedStream::new(inner, withhold)
            .collect()
            .await
            .expect("body")
            .to_bytes();
        let text = String::from_utf8(out.to_vec()).expect("UTF-8");
        assert!(!text.contains("aHVudGVy"), "{text}");
        let event: Value = serde_json::from_str(text.trim()).expect("one event");
        assert_eq!(event["type"], "ERROR");
        assert!(
            event["object"]["message"]
                .as_str()
                .unwrap_or("")
                .contains("mask"),
            "{text}"
        );
    }
}
