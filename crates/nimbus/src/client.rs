//! The admin API client used by the client verbs (`deploy`, `invoke`, `status`):
//! server from `--server`/`NIMBUS_SERVER`, token from `NIMBUS_TOKEN` or the data dir.

use std::path::Path;

use anyhow::{Context as _, bail};
use nimbus_core::api::{ComponentUploaded, DeployRequest, DeployResponse, ErrorBody, StatusReport};
use nimbus_core::plan::Plan;
use reqwest::StatusCode;

pub struct Client {
    base: String,
    token: String,
    http: reqwest::Client,
}

impl Client {
    pub fn new(server: &str, token: Option<String>, data_dir: &Path) -> anyhow::Result<Self> {
        let token = match token {
            Some(t) => t,
            None => {
                let path = data_dir.join("admin-token");
                std::fs::read_to_string(&path)
                    .with_context(|| {
                        format!(
                            "no admin token: set NIMBUS_TOKEN, or point --data-dir at the node's data dir (`{}` not readable)",
                            path.display()
                        )
                    })?
                    .trim()
                    .to_string()
            }
        };
        Ok(Self {
            base: server.trim_end_matches('/').to_string(),
            token,
            // The admin API is local or named explicitly: never through an HTTP proxy.
            http: reqwest::Client::builder().no_proxy().build()?,
        })
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    pub fn request(&self, method: reqwest::Method, path: &str) -> reqwest::RequestBuilder {
        self.http
            .request(method, self.url(path))
            .bearer_auth(&self.token)
    }

    pub async fn send(&self, req: reqwest::RequestBuilder) -> anyhow::Result<reqwest::Response> {
        let response = req.send().await.with_context(|| {
            format!(
                "cannot reach the Nimbus node at {}; is it running?",
                self.base
            )
        })?;
        if response.status().is_success() {
            return Ok(response);
        }
        Err(api_error(response).await)
    }

    /// Sends a request and reads its JSON answer.
    pub async fn send_json<T: serde::de::DeserializeOwned>(
        &self,
        req: reqwest::RequestBuilder,
    ) -> anyhow::Result<T> {
        let response = self.send(req).await?;
        response
            .json()
            .await
            .context("the node's answer is not the JSON expected")
    }

    pub async fn upload(
        &self,
        digest: &str,
        bytes: Vec<u8>,
    ) -> anyhow::Result<Option<ComponentUploaded>> {
        let exists = self
            .request(reqwest::Method::GET, &format!("/v1/components/{digest}"))
            .send()
            .await
            .with_context(|| {
                format!(
                    "cannot reach the Nimbus node at {}; is it running?",
                    self.base
                )
            })?;
        if exists.status() == StatusCode::NO_CONTENT {
            return Ok(None);
        }
        let response = self
            .send(
                self.request(reqwest::Method::PUT, &format!("/v1/components/{digest}"))
                    .body(bytes),
            )
            .await?;
        Ok(Some(response.json().await?))
    }

    pub async fn plan(&self, app: &str, request: &DeployRequest) -> anyhow::Result<Plan> {
        let r = self
            .send(
                self.request(reqwest::Method::POST, &format!("/v1/apps/{app}/plan"))
                    .json(request),
            )
            .await?;
        Ok(r.json().await?)
    }

    pub async fn deploy(
        &self,
        app: &str,
        request: &DeployRequest,
        confirm: bool,
    ) -> anyhow::Result<DeployResponse> {
        let r = self
            .send(
                self.request(reqwest::Method::PUT, &format!("/v1/apps/{app}"))
                    .query(&[("confirm", confirm)])
                    .json(request),
            )
            .await?;
        Ok(r.json().await?)
    }

    pub async fn status(&self) -> anyhow::Result<StatusReport> {
        let r = self
            .send(self.request(reqwest::Method::GET, "/v1/status"))
            .await?;
        Ok(r.json().await?)
    }

    pub async fn delete(&self, app: &str, confirm: bool) -> anyhow::Result<Plan> {
        let r = self
            .send(
                self.request(reqwest::Method::DELETE, &format!("/v1/apps/{app}"))
                    .query(&[("confirm", confirm)]),
            )
            .await?;
        Ok(r.json().await?)
    }
}

/// The error a failed admin call reports: the server's message, or the status.
pub async fn api_error(response: reqwest::Response) -> anyhow::Error {
    let status = response.status();
    let text = response.text().await.unwrap_or_default();
    match serde_json::from_str::<ErrorBody>(&text) {
        Ok(body) => anyhow::anyhow!("{} ({status}, {})", body.message, body.code),
        Err(_) if status == StatusCode::UNAUTHORIZED => {
            anyhow::anyhow!("the node refused the admin token ({status})")
        }
        Err(_) => anyhow::anyhow!("the node answered {status}: {text}"),
    }
}

pub fn check_app_function(target: &str) -> anyhow::Result<(&str, &str)> {
    match target.split_once('/') {
        Some((app, function)) if !app.is_empty() && !function.is_empty() => Ok((app, function)),
        _ => bail!("expected APP/FUNCTION, got `{target}`"),
    }
}
