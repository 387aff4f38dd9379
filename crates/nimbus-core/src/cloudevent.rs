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
            let text = self
                .datacontenttype
                .as_deref()
                .is_some_and(|t| t.starts_with("text/"))
                .then(|| std::str::from_utf8(data).ok())
                .flatten();
            match (json, text) {
                (Some(v), _) => map.insert("data".into(), v),
                (None, Some(text)) => map.insert("data".into(), text.into()),
                (None, None) => map.insert(
                    "data_base64".into(),
                    base64::engine::general_purpose::STANDARD
                        .encode(data)
                        .into(),
                ),
            };
        }
        serde_json::Value::Object(map)
    }

    /// Reads the structured-mode JSON form: `specversion` 1.0, `id`, `source`
    /// and `type` required; `data` (any JSON, or a string for a non-JSON
    /// `datacontenttype`) or `data_base64`; other attributes become extensions.
    pub fn from_json(value: &serde_json::Value) -> Result<Self, String> {
        use base64::Engine as _;
        use serde_json::Value;
        let Value::Object(map) = value else {
            return Err("a CloudEvent is a JSON object".into());
        };
        let text = |key: &str| -> Result<Option<String>, String> {
            match map.get(key) {
                None | Some(Value::Null) => Ok(None),
                Some(Value::String(s)) => Ok(Some(s.clone())),
                Some(_) => Err(format!("`{key}` must be a string")),
            }
        };
        let required = |key: &str| -> Result<String, String> {
            match text(key)? {
                Some(s) if !s.is_empty() => Ok(s),
                _ => Err(format!("`{key}` is required")),
            }
        };
        match text("specversion")?.as_deref() {
            Some("1.0") => {}
            Some(other) => return Err(format!("`specversion` {other} is not supported (1.0 is)")),
            None => return Err("`specversion` is required (\"1.0\")".into()),
        }
        let mut event = Self::new(required("id")?, required("source")?, required("type")?);
        event.subject = text("subject")?;
        event.time = text("time")?;
        event.datacontenttype = text("datacontenttype")?;
        match (map.get("data"), map.get("data_base64")) {
            (Some(_), Some(_)) => return Err("`data` and `data_base64` exclude each other".into()),
            (Some(Value::Null), None) | (None, None) => {}
            (Some(data), None) => {
                let json = event
                    .datacontenttype
                    .as_deref()
                    .is_none_or(|t| t.starts_with("application/json") || t.ends_with("+json"));
                event.data = Some(match (json, data) {
                    (false, Value::String(s)) => s.clone().into_bytes(),
                    _ => {
                        event
                            .datacontenttype
                            .get_or_insert_with(|| "application/json".into());
                        data.to_string().into_bytes()
                    }
                });
            }
            (None, Some(Value::String(b64))) => {
                event.data = Some(
                    base64::engine::general_purpose::STANDARD
                        .decode(b64)
                        .map_err(|e| format!("`data_base64` is not base64: {e}"))?,
                );
            }
            (None, Some(_)) => return Err("`data_base64` must be a string".into()),
        }
        for (key, value) in map {
            if matches!(
                key.as_str(),
                "specversion"
                    | "id"
                    | "source"
                    | "type"
                    | "subject"
                    | "time"
                    | "datacontenttype"
                    | "data"
                    | "data_base64"
                    | "dataschema"
            ) {
                continue;
            }
            if key.is_empty()
                || key.len() > 20
                || !key
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
            {
                return Err(format!(
                    "extension attribute `{key}`: names are 1-20 lower-case letters or digits"
                ));
            }
            let value = match value {
                Value::String(s) => s.clone(),
                Value::Number(n) => n.to_string(),
                Value::Bool(b) => b.to_string(),
                _ => {
                    return Err(format!(
                        "extension attribute `{key}` must be a string, number or boolean"
                    ));
                }
            };
            event.extensions.insert(key.clone(), value);
        }
        Ok(event)
    }
}
