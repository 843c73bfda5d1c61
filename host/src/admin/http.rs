//! Bodies, JSON replies and JSON errors of the admin API, and the limit
//! on request bodies that every route is held to.

use std::convert::Infallible;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body::Frame;
use http_body_util::{BodyExt, Full, LengthLimitError, Limited};
use hyper::body::Incoming;
use hyper::{Request, Response, StatusCode};
use serde::Serialize;

/// A response body: whole, or streamed from a channel.
pub type Body = http_body_util::combinators::BoxBody<Bytes, Infallible>;

/// A request body, cut off at the listener's `max_body_bytes`: no route
/// can read more than that, whatever it does with the body.
pub type RequestBody = Limited<Incoming>;

/// Holds a request to the body limit `max`: a `Content-Length` over it is
/// answered `413` at once (no route sees the request); a body without
/// one is limited as it is read.
// The error is the reply itself, built once per refused request.
#[allow(clippy::result_large_err)]
pub fn limit_body(
    req: Request<Incoming>,
    max: usize,
) -> Result<Request<RequestBody>, Response<Body>> {
    let declared = req
        .headers()
        .get(hyper::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok());
    if declared.is_some_and(|n| n > max as u64) {
        return Err(too_large(max));
    }
    Ok(req.map(|b| Limited::new(b, max)))
}

/// The `413` of a body over `max` bytes.
pub fn too_large(max: usize) -> Response<Body> {
    error(
        StatusCode::PAYLOAD_TOO_LARGE,
        format!("the request body is larger than {max} bytes (the admin API's max_body_bytes); send less"),
    )
}

/// Reads a whole (limited) body: `413` when it is over the limit, `400`
/// when the connection fails while it is read.
pub async fn read_body(body: RequestBody) -> Result<Bytes, Response<Body>> {
    match body.collect().await {
        Ok(b) => Ok(b.to_bytes()),
        Err(e) if e.is::<LengthLimitError>() => Err(error(
            StatusCode::PAYLOAD_TOO_LARGE,
            "the request body is larger than the admin API's max_body_bytes; send less",
        )),
        Err(e) => Err(error(
            StatusCode::BAD_REQUEST,
            format!("the request body could not be read: {e}"),
        )),
    }
}

/// A whole body.
pub fn full(bytes: impl Into<Bytes>) -> Body {
    Full::new(bytes.into()).boxed()
}

/// A `200` JSON reply.
pub fn json<T: Serialize>(value: &T) -> Response<Body> {
    json_status(StatusCode::OK, value)
}

/// A JSON reply with `status`.
pub fn json_status<T: Serialize>(status: StatusCode, value: &T) -> Response<Body> {
    match serde_json::to_vec_pretty(value) {
        Ok(body) => reply(status, "application/json", full(body)),
        Err(e) => error(
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("cannot encode the reply: {e}"),
        ),
    }
}

/// A reply with a content type.
pub fn reply(status: StatusCode, content_type: &str, body: Body) -> Response<Body> {
    let mut r = Response::new(body);
    *r.status_mut() = status;
    if let Ok(v) = hyper::header::HeaderValue::from_str(content_type) {
        r.headers_mut().insert(hyper::header::CONTENT_TYPE, v);
    }
    r
}

/// The JSON body of every error.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct ErrorBody {
    /// The error.
    pub error: ErrorDetail,
}

/// What went wrong.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct ErrorDetail {
    /// HTTP status code.
    pub status: u16,
    /// What went wrong and what to do.
    pub message: String,
}

/// A JSON error reply.
pub fn error(status: StatusCode, message: impl Into<String>) -> Response<Body> {
    let body = ErrorBody {
        error: ErrorDetail {
            status: status.as_u16(),
            message: message.into(),
        },
    };
    let bytes = serde_json::to_vec(&body).unwrap_or_default();
    reply(status, "application/json", full(bytes))
}

/// A body streamed from a channel of chunks; ends when the sender is
/// dropped.
pub struct ChannelBody(pub tokio::sync::mpsc::Receiver<Bytes>);

impl http_body::Body for ChannelBody {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        self.0.poll_recv(cx).map(|c| c.map(|b| Ok(Frame::data(b))))
    }
}
