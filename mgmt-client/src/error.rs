//! [`MgmtError`], the outcome of a failed Management API call, and [`classify`], which turns an
//! error response into one exactly as `aws-sdk-apigatewaymanagement` 1.120 does
//! (`json_errors.rs`): the error code is the `x-amzn-ErrorType` header, else the JSON body's `code`,
//! else its `__type`, cut at the first `:` and after a `#` namespace; a body that is not valid JSON
//! leaves the SDK with no code at all (even with the header), and so it does here. The four codes the
//! SDK models become their own variants; without a code, the status decides.

use http::{HeaderMap, StatusCode};

use crate::credentials::CredentialsError;

/// Why a Management API call did not succeed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MgmtError {
    /// `GoneException` (410): the connection no longer exists.
    #[error("connection is gone")]
    Gone,
    /// `LimitExceededException` (429): throttled; retry later.
    #[error("throttled (LimitExceededException)")]
    LimitExceeded,
    /// `ForbiddenException` (403): the caller may not post here (or the signature was refused).
    #[error("forbidden")]
    Forbidden,
    /// `PayloadTooLargeException` (413).
    #[error("payload too large")]
    PayloadTooLarge,
    /// A 5xx without one of the codes above.
    #[error("server error (status {0})")]
    Server(u16),
    /// The outer per-call timeout elapsed.
    #[error("timed out")]
    Timeout,
    /// Connecting, TLS, or the HTTP exchange failed.
    #[error("transport error: {0}")]
    Transport(String),
    /// No valid credentials to sign with.
    #[error("credentials error: {0}")]
    Credentials(String),
    /// The request could not be built (an empty connection id, say).
    #[error("invalid request: {0}")]
    InvalidRequest(&'static str),
    /// Any other error response.
    #[error("error response (status {status}, code {code:?})")]
    Other { status: u16, code: Option<String> },
}

impl MgmtError {
    /// A short, bounded label for metrics and logs.
    pub fn kind(&self) -> &'static str {
        match self {
            MgmtError::Gone => "gone",
            MgmtError::LimitExceeded => "limit_exceeded",
            MgmtError::Forbidden => "forbidden",
            MgmtError::PayloadTooLarge => "payload_too_large",
            MgmtError::Server(_) => "server",
            MgmtError::Timeout => "timeout",
            MgmtError::Transport(_) => "transport",
            MgmtError::Credentials(_) => "credentials",
            MgmtError::InvalidRequest(_) => "invalid_request",
            MgmtError::Other { .. } => "other",
        }
    }

    /// Whether trying the same call again later can succeed.
    pub fn is_retryable(&self) -> bool {
        matches!(
            self,
            MgmtError::LimitExceeded
                | MgmtError::Server(_)
                | MgmtError::Timeout
                | MgmtError::Transport(_)
                | MgmtError::Credentials(_)
        )
    }
}

impl From<CredentialsError> for MgmtError {
    fn from(error: CredentialsError) -> Self {
        MgmtError::Credentials(error.to_string())
    }
}

/// The error a non-2xx response stands for.
pub fn classify(status: StatusCode, headers: &HeaderMap, body: &[u8]) -> MgmtError {
    let code = error_code(headers, body);
    match code.as_deref() {
        Some("GoneException") => MgmtError::Gone,
        Some("LimitExceededException") => MgmtError::LimitExceeded,
        Some("ForbiddenException") => MgmtError::Forbidden,
        Some("PayloadTooLargeException") => MgmtError::PayloadTooLarge,
        Some(_) if status.is_server_error() => MgmtError::Server(status.as_u16()),
        Some(_) => MgmtError::Other {
            status: status.as_u16(),
            code,
        },
        None => match status.as_u16() {
            410 => MgmtError::Gone,
            429 => MgmtError::LimitExceeded,
            403 => MgmtError::Forbidden,
            413 => MgmtError::PayloadTooLarge,
            s if status.is_server_error() => MgmtError::Server(s),
            s => MgmtError::Other {
                status: s,
                code: None,
            },
        },
    }
}

/// The error code as the SDK's `parse_error_metadata` finds it, or `None` where it finds none.
pub fn error_code(headers: &HeaderMap, body: &[u8]) -> Option<String> {
    let body_code = match body_error_code(body) {
        Ok(code) => code,
        Err(()) => return None,
    };
    let header = headers
        .get("x-amzn-errortype")
        .and_then(|value| value.to_str().ok());
    match header {
        Some(header) => Some(sanitize_error_code(header).to_owned()),
        None => body_code.map(|code| sanitize_error_code(&code).to_owned()),
    }
}

fn sanitize_error_code(code: &str) -> &str {
    let code = match code.find(':') {
        Some(idx) => &code[..idx],
        None => code,
    };
    match code.find('#') {
        Some(idx) => &code[idx + 1..],
        None => code,
    }
}

/// The SDK's `parse_error_body`, on the same tokenizer: `code` wins over `__type`; a body that is not
/// an object yields no code; a broken object is an error.
fn body_error_code(bytes: &[u8]) -> Result<Option<String>, ()> {
    use aws_smithy_json::deserialize::token::skip_value;
    use aws_smithy_json::deserialize::{Token, json_token_iter};

    let mut tokens = json_token_iter(bytes).peekable();
    let (mut typ, mut code) = (None, None);
    if let Some(Token::StartObject { .. }) = tokens.next().transpose().map_err(|_| ())? {
        loop {
            match tokens.next().transpose().map_err(|_| ())? {
                Some(Token::EndObject { .. }) => break,
                Some(Token::ObjectKey { key, .. }) => {
                    if let Some(Ok(Token::ValueString { value, .. })) = tokens.peek() {
                        match key.as_escaped_str() {
                            "code" => {
                                code = Some(value.to_unescaped().map_err(|_| ())?.into_owned())
                            }
                            "__type" => {
                                typ = Some(value.to_unescaped().map_err(|_| ())?.into_owned())
                            }
                            // The SDK unescapes the message too, so a bad escape there fails it.
                            "message" | "Message" | "errorMessage" => {
                                value.to_unescaped().map_err(|_| ())?;
                            }
                            _ => {}
                        }
                    }
                    skip_value(&mut tokens).map_err(|_| ())?;
                }
                _ => return Err(()),
            }
        }
        if tokens.next().is_some() {
            return Err(());
        }
    }
    Ok(code.or(typ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(status: u16, header: Option<&str>, body: &str, expected: MgmtError) {
        let mut headers = HeaderMap::new();
        if let Some(header) = header {
            headers.insert("x-amzn-ErrorType", header.parse().unwrap());
        }
        let status = StatusCode::from_u16(status).unwrap();
        assert_eq!(
            classify(status, &headers, body.as_bytes()),
            expected,
            "{status} {header:?} {body}"
        );
    }

    #[test]
    fn header_then_body_then_status() {
        check(
            410,
            Some("GoneException"),
            "{\"message\":\"Gone\"}",
            MgmtError::Gone,
        );
        check(
            400,
            Some("GoneException:http://internal/"),
            "",
            MgmtError::Gone,
        );
        check(
            400,
            Some("aws#LimitExceededException"),
            "",
            MgmtError::LimitExceeded,
        );
        check(
            400,
            None,
            r#"{"__type":"ForbiddenException"}"#,
            MgmtError::Forbidden,
        );
        check(
            400,
            None,
            r#"{"code":"GoneException","__type":"ForbiddenException"}"#,
            MgmtError::Gone,
        );
        check(413, None, "", MgmtError::PayloadTooLarge);
        check(502, Some("InternalFailure"), "{}", MgmtError::Server(502));
        check(
            400,
            Some("BadRequestException"),
            "{}",
            MgmtError::Other {
                status: 400,
                code: Some("BadRequestException".into()),
            },
        );
        // The SDK gives up on the code when the body is not JSON, header or not.
        check(
            400,
            Some("GoneException"),
            "<html>",
            MgmtError::Other {
                status: 400,
                code: None,
            },
        );
        check(
            418,
            None,
            "[1, 2",
            MgmtError::Other {
                status: 418,
                code: None,
            },
        );
    }

    #[test]
    fn a_bad_escape_in_the_message_leaves_no_code_as_in_the_sdk() {
        for key in ["message", "Message", "errorMessage"] {
            check(
                400,
                None,
                &format!(r#"{{"code":"GoneException","{key}":"\ud800"}}"#),
                MgmtError::Other {
                    status: 400,
                    code: None,
                },
            );
        }
        // Other keys are skipped unread.
        check(
            400,
            None,
            r#"{"code":"GoneException","detail":"\ud800"}"#,
            MgmtError::Gone,
        );
    }

    #[test]
    fn only_throttling_server_timeout_transport_and_credential_failures_are_retried() {
        let all = [
            (MgmtError::Gone, "gone", false),
            (MgmtError::LimitExceeded, "limit_exceeded", true),
            (MgmtError::Forbidden, "forbidden", false),
            (MgmtError::PayloadTooLarge, "payload_too_large", false),
            (MgmtError::Server(503), "server", true),
            (MgmtError::Timeout, "timeout", true),
            (MgmtError::Transport("reset".into()), "transport", true),
            (
                MgmtError::Credentials("expired".into()),
                "credentials",
                true,
            ),
            (
                MgmtError::InvalidRequest("empty id"),
                "invalid_request",
                false,
            ),
            (
                MgmtError::Other {
                    status: 400,
                    code: None,
                },
                "other",
                false,
            ),
        ];
        for (error, kind, retryable) in all {
            assert_eq!(error.kind(), kind, "{error:?}");
            assert_eq!(error.is_retryable(), retryable, "{error:?}");
        }
    }
}
