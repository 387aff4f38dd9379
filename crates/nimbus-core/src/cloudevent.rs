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

    /// The structured-mode JSON form (CloudEvents JSON format): a JSON payload
    /// appears as `data`, any other as `data_base64`.
    pub fn to_json(&self) -> serde_json::Value {
        use base64::Engine as _;
        let mut map = serde_json::Map::new();
        map.insert("specversion".into(), self.specversion.clone().into());
        map.insert("id".into(), self.id.clone().into());
        map.insert("source".into(), self.source.clone().into());
        map.insert("type".into(), self.ty.clone().into());
        for (key, value) in [
            ("subject", &self.subject),
            ("time", &self.time),
            ("datacontenttype", &self.datacontenttype),
        ] {
            if let Some(v) = value {
                map.insert(key.into(), v.clone().into());
            }
        }
        for (key, value) in &self.extensions {
            map.insert(key.clone(), value.clone().into());
        }
        if let Some(data) = &self.data {
            let json = self
                .datacontenttype
                .as_deref()
                .is_some_and(|t| t.starts_with("application/json"))
                .then(|| serde_json::from_slice::<serde_json::Value>(data).ok())
                .flatten();
            match json {
                Some(v) => map.insert("data".into(), v),
                None => map.insert(
                    "data_base64".into(),
                    base64::engine::general_purpose::STANDARD
                        .encode(data)
                        .into(),
                ),
            };
        }
        serde_json::Value::Object(map)
    }
}
