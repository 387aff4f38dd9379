//! The destination record: what `on_success` / `on_failure` receive, shaped
//! like an AWS Lambda destination record.

use nimbus_core::cloudevent::CloudEvent;
use nimbus_data::catalog::rfc3339;
use serde_json::{Value, json};

/// Why a record was sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Condition {
    Success,
    RetriesExhausted,
    EventAgeExceeded,
}

impl Condition {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Success => "Success",
            Self::RetriesExhausted => "RetriesExhausted",
            Self::EventAgeExceeded => "EventAgeExceeded",
        }
    }
}

/// How an invocation ended, for its record.
pub(super) enum Outcome<'a> {
    /// The handler's output, if any.
    Success(Option<&'a [u8]>),
    Failure {
        condition: Condition,
        /// The last attempt's error message.
        message: &'a str,
        /// `Handled` (the handler returned an error) or `Unhandled`.
        function_error: Option<&'static str>,
        /// The stable error code (`handler_error`, `timeout`, ...).
        code: Option<&'static str>,
    },
}

pub(super) struct Record<'a> {
    pub request_id: &'a str,
    pub app: &'a str,
    pub function: &'a str,
    pub attempts: u32,
    pub event: &'a CloudEvent,
    pub now: u64,
    pub outcome: Outcome<'a>,
}

impl Record<'_> {
    pub fn condition(&self) -> Condition {
        match &self.outcome {
            Outcome::Success(_) => Condition::Success,
            Outcome::Failure { condition, .. } => *condition,
        }
    }

    pub fn to_json(&self) -> Value {
        let mut record = json!({
            "version": "1.0",
            "timestamp": rfc3339(self.now),
            "requestContext": {
                "requestId": self.request_id,
                "function": format!("{}/{}", self.app, self.function),
                "condition": self.condition().as_str(),
                "approximateInvokeCount": self.attempts,
            },
            "requestPayload": self.event.to_json(),
        });
        let map = record.as_object_mut().expect("an object");
        match &self.outcome {
            Outcome::Success(output) => {
                map.insert("responseContext".into(), json!({ "statusCode": 200 }));
                map.insert(
                    "responsePayload".into(),
                    output.map_or(Value::Null, payload_json),
                );
            }
            Outcome::Failure {
                message,
                function_error,
                code,
                ..
            } => {
                let mut context = json!({ "statusCode": 500 });
                if let Some(fe) = function_error {
                    context["functionError"] = (*fe).into();
                }
                map.insert("responseContext".into(), context);
                let mut payload = json!({ "errorMessage": message });
                if let Some(code) = code {
                    payload["errorType"] = (*code).into();
                }
                map.insert("responsePayload".into(), payload);
                map.insert("errorMessage".into(), (*message).into());
            }
        }
        record
    }
}

/// Output as the record shows it: its JSON if it parses, else its text (or
/// `base64:…` for bytes that are not UTF-8).
fn payload_json(output: &[u8]) -> Value {
    serde_json::from_slice(output).unwrap_or_else(|_| Value::String(output_text(output)))
}

/// Output as the invocation record keeps it: text when UTF-8, else `base64:` and
/// the base64 of the bytes (text that itself starts with `base64:` too).
pub(super) fn output_text(output: &[u8]) -> String {
    use base64::Engine as _;
    match std::str::from_utf8(output) {
        Ok(text) if !text.starts_with("base64:") => text.to_string(),
        _ => format!(
            "base64:{}",
            base64::engine::general_purpose::STANDARD.encode(output)
        ),
    }
}
