//! Errors as a Kubernetes client reads them: a `Status` object (`kind:
//! Status`, `apiVersion: v1`) with the HTTP code, the reason kubectl and
//! client libraries switch on, and a message that says what went wrong and
//! what to do — never a bare HTTP error page.

use serde_json::json;

/// Why a request was not served, as a `Status` reason and HTTP code.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reason {
    /// 400: the request cannot be read as the API server would read it.
    BadRequest,
    /// 401: no valid token.
    Unauthorized,
    /// 403: a rule, an approver or the target's groups refused it.
    Forbidden,
    /// 404: no such target.
    NotFound,
    /// 413: a body too large to judge.
    RequestEntityTooLarge,
    /// 429: retry later (an approval to wait for in retry mode).
    TooManyRequests,
    /// 503: the API server could not be reached.
    ServiceUnavailable,
}

impl Reason {
    /// The HTTP status code.
    pub fn code(self) -> u16 {
        match self {
            Reason::BadRequest => 400,
            Reason::Unauthorized => 401,
            Reason::Forbidden => 403,
            Reason::NotFound => 404,
            Reason::RequestEntityTooLarge => 413,
            Reason::TooManyRequests => 429,
            Reason::ServiceUnavailable => 503,
        }
    }

    /// The `reason` field (`metav1.StatusReason`).
    pub fn name(self) -> &'static str {
        match self {
            Reason::BadRequest => "BadRequest",
            Reason::Unauthorized => "Unauthorized",
            Reason::Forbidden => "Forbidden",
            Reason::NotFound => "NotFound",
            Reason::RequestEntityTooLarge => "RequestEntityTooLarge",
            Reason::TooManyRequests => "TooManyRequests",
            Reason::ServiceUnavailable => "ServiceUnavailable",
        }
    }
}

/// A `Status` failure as JSON: `reason`, `message`, and `details` naming
/// the resource and object the request was about, when it named them.
pub fn failure(
    reason: Reason,
    message: &str,
    resource: Option<&str>,
    name: Option<&str>,
) -> Vec<u8> {
    let mut status = json!({
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Failure",
        "message": message,
        "reason": reason.name(),
        "code": reason.code(),
    });
    if resource.is_some() || name.is_some() {
        status["details"] = json!({ "kind": resource, "name": name });
    }
    status.to_string().into_bytes()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_refusal_is_a_status_a_client_can_read() {
        let body = failure(
            Reason::Forbidden,
            "blocked by portcullis rule \"no-exec-kube-system\"",
            Some("pods"),
            Some("coredns"),
        );
        let v: serde_json::Value = serde_json::from_slice(&body).expect("JSON");
        assert_eq!(v["kind"], "Status");
        assert_eq!(v["apiVersion"], "v1");
        assert_eq!(v["status"], "Failure");
        assert_eq!(v["reason"], "Forbidden");
        assert_eq!(v["code"], 403);
        assert_eq!(v["details"]["name"], "coredns");
        let plain: serde_json::Value =
            serde_json::from_slice(&failure(Reason::BadRequest, "x", None, None)).expect("JSON");
        assert!(plain.get("details").is_none());
        assert_eq!(plain["code"], 400);
    }
}
