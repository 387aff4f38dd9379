//! CloudEvents 1.0: the envelope every trigger delivers to event functions.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// A CloudEvent with its payload as bytes. JSON payloads carry
/// `datacontenttype = "application/json"`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CloudEvent {
    pub id: String,
    pub source: String,
    pub specversion: String,
    #[serde(rename = "type")]
    pub ty: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subject: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub time: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub datacontenttype: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub data: Option<Vec<u8>>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub extensions: BTreeMap<String, String>,
}

impl CloudEvent {
    /// A new event with spec version 1.0 and no payload.
    pub fn new(id: impl Into<String>, source: impl Into<String>, ty: impl Into<String>) -> Self {
        Self {
            id: id.into(),
            source: source.into(),
            specversion: "1.0".into(),
            ty: ty.into(),
            subject: None,
            time: None,
            datacontenttype: None,
            data: None,
            extensions: BTreeMap::new(),
        }
    }

    /// Sets a payload with its content type.
    pub fn with_data(mut self, content_type: impl Into<String>, data: Vec<u8>) -> Self {
        self.datacontenttype = Some(content_type.into());
        self.data = Some(data);
        self
    }
}
