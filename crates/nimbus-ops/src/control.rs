//! The control plane: validates deploy requests, computes plans, stores
//! deployments and asks the [`Platform`] to run them; restores them at start.

use std::collections::BTreeMap;
use std::sync::Arc;

use async_trait::async_trait;
use nimbus_core::api::{
    AppDetail, AppStatus, AppSummary, ComponentUploaded, DeployRequest, DeployResponse,
    FunctionStatus, RouteStatus, StatusReport, TriggerStatus,
};
use nimbus_core::app::App;
use nimbus_core::app::StoreKind;
use nimbus_core::data::{DataError, DataResult, StoreCatalog, StoreRef};
use nimbus_core::manifest::Manifest;
use nimbus_core::plan::Plan;
use nimbus_core::ports::Invoker;
use nimbus_core::queue::QueueService;
use nimbus_data::{Database, DbError, FileStore, sha256_hex};
use tokio::sync::{Mutex, RwLock};

use crate::registry::{Registry, StoredApp};

/// What the node does for ops: compile, run and observe functions.
#[async_trait]
pub trait Platform: Send + Sync + 'static {
    /// Validates and compiles the component stored under `digest`.
    async fn prepare(&self, digest: &str) -> Result<ComponentUploaded, String>;
    /// Serves `deployment` of `app` (atomically replacing what served it before).
    async fn activate(&self, app: &App, deployment: u64) -> Result<(), String>;
    /// Stops serving `app`.
    fn remove(&self, app: &str);
    fn function_status(&self, app: &str) -> Vec<FunctionStatus>;
    fn trigger_status(&self, app: &str) -> Vec<TriggerStatus>;
    /// The app's bus rules with their delivery counts.
    async fn rule_status(&self, app: &str) -> Vec<nimbus_core::bus::RuleStatus>;
    /// Turns a queue trigger on or off (and remembers it).
    async fn set_trigger(&self, app: &str, trigger: &str, enabled: bool) -> Result<(), DataError>;
    /// `(http, event)`: what a deployed function can be invoked as.
    fn function_kind(&self, app: &str, function: &str) -> Option<(bool, bool)>;
    fn invoker(&self) -> Arc<dyn Invoker>;
}

#[derive(Debug, thiserror::Error)]
pub enum ControlError {
    #[error("{0}")]
    InvalidManifest(String),
    #[error("{0}")]
    BadRequest(String),
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    Activation(String),
    /// The deploy deletes stored data and was not confirmed.
    #[error("{0}")]
    ConfirmationRequired(String),
    #[error("storage error: {0}")]
    Storage(String),
}

impl From<DbError> for ControlError {
    fn from(e: DbError) -> Self {
        Self::Storage(e.to_string())
    }
}

impl From<std::io::Error> for ControlError {
    fn from(e: std::io::Error) -> Self {
        Self::Storage(e.to_string())
    }
}

struct Deployed {
    stored: StoredApp,
    app: App,
}

pub struct Control {
    registry: Registry,
    components: FileStore,
    platform: Arc<dyn Platform>,
    stores: Arc<dyn StoreCatalog>,
    queues: Arc<dyn QueueService>,
    apps: RwLock<BTreeMap<String, Deployed>>,
    deploy_lock: Mutex<()>,
    gateway_url: String,
}

impl Control {
    pub fn new(
        db: Database,
        components: FileStore,
        platform: Arc<dyn Platform>,
        stores: Arc<dyn StoreCatalog>,
        queues: Arc<dyn QueueService>,
        gateway_url: String,
    ) -> Result<Arc<Self>, ControlError> {
        Ok(Arc::new(Self {
            registry: Registry::open(db)?,
            components,
            platform,
            stores,
            queues,
            apps: RwLock::new(BTreeMap::new()),
            deploy_lock: Mutex::new(()),
            gateway_url,
        }))
    }

    pub fn platform(&self) -> &Arc<dyn Platform> {
        &self.platform
    }

    /// Serves every stored app again (after a restart). An app that cannot be
    /// served is logged and skipped, never deleted.
    pub async fn restore(&self) -> Result<usize, ControlError> {
        let mut restored = 0;
        for stored in self.registry.all().await? {
            let resolved = match self.resolve(&stored.name, &stored.request) {
                // A crash between storing a deploy and creating its stores is finished here.
                Ok(app) => match self.ensure_stores(&app).await {
                    Ok(()) => Ok(app),
                    Err(err) => Err(ControlError::Storage(err.to_string())),
                },
                Err(err) => Err(err),
            };
            match resolved {
                Ok(app) => match self.platform.activate(&app, stored.deployment).await {
                    Ok(()) => {
                        self.apps
                            .write()
                            .await
                            .insert(stored.name.clone(), Deployed { stored, app });
                        restored += 1;
                    }
                    Err(err) => tracing::error!(app = %stored.name, "cannot restore app: {err}"),
                },
                Err(err) => tracing::error!(app = %stored.name, "cannot restore app: {err}"),
            }
        }
        Ok(restored)
    }

    /// Stores an uploaded component and compiles it.
    pub async fn upload(
        &self,
        digest: &str,
        bytes: &[u8],
    ) -> Result<ComponentUploaded, ControlError> {
        let actual = sha256_hex(bytes);
        if actual != digest {
            return Err(ControlError::BadRequest(format!(
                "the body's SHA-256 is {actual}, not {digest}"
            )));
        }
        let known = self.components.contains(digest);
        let store = self.components.clone();
        let owned = bytes.to_vec();
        tokio::task::spawn_blocking(move || store.put_content(&owned))
            .await
            .map_err(|e| ControlError::Storage(e.to_string()))??;
        match self.platform.prepare(digest).await {
            Ok(prepared) => Ok(prepared),
            Err(err) => {
                // Keep no bytes that can never be deployed.
                if !known && let Err(e) = self.components.remove(digest) {
                    tracing::warn!("cannot remove rejected component {digest}: {e}");
                }
                Err(ControlError::BadRequest(err))
            }
        }
    }

    pub fn has_component(&self, digest: &str) -> bool {
        self.components.contains(digest)
    }

    /// Resolves a deploy request into an app with component digests attached.
    fn resolve(&self, name: &str, request: &DeployRequest) -> Result<App, ControlError> {
        let manifest = Manifest::parse(&request.manifest_file, &request.manifest)
            .map_err(|e| ControlError::InvalidManifest(e.to_plain()))?;
        let mut app = manifest.app;
        if app.name != name {
            return Err(ControlError::BadRequest(format!(
                "the manifest names app `{}`, but the request is for app `{name}`",
                app.name
            )));
        }
        for (fname, function) in &mut app.functions {
            let digest = request.components.get(fname).ok_or_else(|| {
                ControlError::BadRequest(format!("no component given for function `{fname}`"))
            })?;
            if !self.components.contains(digest) {
                return Err(ControlError::BadRequest(format!(
                    "component {digest} of function `{fname}` was not uploaded; PUT /v1/components/{digest} first"
                )));
            }
            function.digest = digest.clone();
        }
        Ok(app)
    }

    /// The plan a deploy would apply.
    pub async fn plan(&self, name: &str, request: &DeployRequest) -> Result<Plan, ControlError> {
        let app = self.resolve(name, request)?;
        let apps = self.apps.read().await;
        Ok(Plan::between(apps.get(name).map(|d| &d.app), &app))
    }

    /// Applies a deploy: store it, create its new stores, swap it in, then delete
    /// the stores it no longer declares (only with `confirm`). A deploy without
    /// changes changes nothing.
    pub async fn deploy(
        &self,
        name: &str,
        request: &DeployRequest,
        confirm: bool,
    ) -> Result<DeployResponse, ControlError> {
        let _serial = self.deploy_lock.lock().await;
        let app = self.resolve(name, request)?;
        let previous = self
            .apps
            .read()
            .await
            .get(name)
            .map(|d| (d.stored.clone(), d.app.clone()));
        let plan = Plan::between(previous.as_ref().map(|(_, a)| a), &app);
        if let Some((stored, _)) = &previous
            && plan.is_empty()
        {
            return Ok(DeployResponse {
                plan,
                deployment: stored.deployment,
                applied: false,
            });
        }
        let deleted = plan.deleted_stores();
        if !deleted.is_empty() && !confirm {
            return Err(ControlError::ConfirmationRequired(format!(
                "this deploy deletes {} with all {} data: {}; confirm with `--yes` (API: `?confirm=true`)",
                plural(deleted.len(), "store"),
                if deleted.len() == 1 { "its" } else { "their" },
                deleted.join(", ")
            )));
        }
        let stored = self.registry.put(name, request, now()).await?;
        let activated = match self.ensure_stores(&app).await {
            Ok(()) => self.platform.activate(&app, stored.deployment).await,
            Err(err) => Err(err.to_string()),
        };
        if let Err(err) = activated {
            self.registry
                .restore(previous.as_ref().map(|(s, _)| s.clone()), name)
                .await?;
            // Stores this deploy created hold nothing anyone acknowledged yet.
            let old = previous.as_ref().map(|(_, a)| a);
            for (kind, store) in app.stores() {
                if !old.is_some_and(|a| a.has_store(kind, store)) {
                    let _ = self.drop_store(name, kind, store).await;
                }
            }
            return Err(ControlError::Activation(err));
        }
        if let Some((_, old)) = &previous {
            self.drop_stores_not_in(old, Some(&app)).await;
        }
        let deployment = stored.deployment;
        self.apps
            .write()
            .await
            .insert(name.to_string(), Deployed { stored, app });
        tracing::info!(app = name, deployment, "deployed");
        Ok(DeployResponse {
            plan,
            deployment,
            applied: true,
        })
    }

    /// Removes an app; if it has stores, only with `confirm`, and their data goes too.
    pub async fn delete(&self, name: &str, confirm: bool) -> Result<Plan, ControlError> {
        let _serial = self.deploy_lock.lock().await;
        let Some(deployed) = self.apps.read().await.get(name).map(|d| d.app.clone()) else {
            return Err(ControlError::NotFound(format!(
                "app `{name}` is not deployed"
            )));
        };
        let plan = Plan::removal(&deployed);
        let deleted = plan.deleted_stores();
        if !deleted.is_empty() && !confirm {
            return Err(ControlError::ConfirmationRequired(format!(
                "deleting app `{name}` deletes {} with all data: {}; confirm with `--yes` (API: `?confirm=true`)",
                plural(deleted.len(), "store"),
                deleted.join(", ")
            )));
        }
        self.registry.delete(name).await?;
        self.platform.remove(name);
        self.apps.write().await.remove(name);
        self.drop_stores_not_in(&deployed, None).await;
        Ok(plan)
    }

    /// Creates the stores and queues `app` declares (never deletes any).
    async fn ensure_stores(&self, app: &App) -> DataResult<()> {
        self.stores.ensure(app).await?;
        self.queues.ensure(app).await
    }

    /// Deletes one store or queue with its data.
    async fn drop_store(&self, app: &str, kind: StoreKind, name: &str) -> DataResult<()> {
        match kind {
            StoreKind::Queues => self.queues.drop_queue(app, name).await,
            _ => self.stores.drop_store(app, kind, name).await,
        }
    }

    /// Deletes the stores of `old` that `next` does not declare. A failure is
    /// logged: the data stays, and the next deploy or restart tries nothing
    /// else with it.
    async fn drop_stores_not_in(&self, old: &App, next: Option<&App>) {
        for (kind, store) in old.stores() {
            if next.is_some_and(|n| n.has_store(kind, store)) {
                continue;
            }
            match self.drop_store(&old.name, kind, store).await {
                Ok(()) => tracing::info!(app = %old.name, "deleted {} `{store}`", kind.noun()),
                Err(err) => {
                    tracing::error!(app = %old.name, "cannot delete {} `{store}`: {err}", kind.noun())
                }
            }
        }
    }

    pub async fn list(&self) -> Vec<AppSummary> {
        self.apps
            .read()
            .await
            .values()
            .map(|d| AppSummary {
                name: d.app.name.clone(),
                deployment: d.stored.deployment,
                functions: d.app.functions.keys().cloned().collect(),
                routes: d.app.routes.len(),
                deployed_at: d.stored.deployed_at.clone(),
            })
            .collect()
    }

    pub async fn get(&self, name: &str) -> Result<AppDetail, ControlError> {
        let apps = self.apps.read().await;
        let d = apps
            .get(name)
            .ok_or_else(|| ControlError::NotFound(format!("app `{name}` is not deployed")))?;
        Ok(AppDetail {
            name: name.to_string(),
            deployment: d.stored.deployment,
            deployed_at: d.stored.deployed_at.clone(),
            manifest_file: d.stored.request.manifest_file.clone(),
            manifest: d.stored.request.manifest.clone(),
            app: d.app.clone(),
        })
    }

    /// The deployment serving `app`, and whether it has `function`.
    pub async fn has_function(&self, app: &str, function: &str) -> Option<u64> {
        let apps = self.apps.read().await;
        let d = apps.get(app)?;
        d.app
            .functions
            .contains_key(function)
            .then_some(d.stored.deployment)
    }

    pub async fn status(&self) -> StatusReport {
        let apps = self.apps.read().await;
        let mut report = StatusReport {
            gateway: self.gateway_url.clone(),
            apps: Vec::new(),
        };
        for d in apps.values() {
            let stores = match self.stores.stores(&d.app.name).await {
                Ok(stores) => stores,
                Err(err) => {
                    tracing::error!(app = %d.app.name, "cannot read store sizes: {err}");
                    Vec::new()
                }
            };
            let mut queues = Vec::new();
            for name in d.app.queues.keys() {
                match self.queues.stats(StoreRef::new(&d.app.name, name)).await {
                    Ok(stats) => queues.push(stats),
                    Err(err) => {
                        tracing::error!(app = %d.app.name, "cannot read queue `{name}`: {err}")
                    }
                }
            }
            report.apps.push(AppStatus {
                name: d.app.name.clone(),
                deployment: d.stored.deployment,
                hosts: d.app.all_hosts(),
                functions: self.platform.function_status(&d.app.name),
                routes: d
                    .app
                    .routes
                    .iter()
                    .map(|r| RouteStatus {
                        method: r.method.clone().unwrap_or_else(|| "*".into()),
                        path: r.path.clone(),
                        function: r.function.clone(),
                    })
                    .collect(),
                stores,
                queues,
                triggers: self.platform.trigger_status(&d.app.name),
                rules: self.platform.rule_status(&d.app.name).await,
            });
        }
        report
    }

    /// The app named `name` as deployed now, if it is.
    pub async fn app(&self, name: &str) -> Option<App> {
        self.apps.read().await.get(name).map(|d| d.app.clone())
    }
}

fn plural(n: usize, noun: &str) -> String {
    if n == 1 {
        format!("1 {noun}")
    } else {
        format!("{n} {noun}s")
    }
}

/// Seconds since the Unix epoch, as text (RFC 3339 needs a date library we do not
/// otherwise carry).
fn now() -> String {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or_default();
    format_unix(secs)
}

/// Formats Unix seconds as `YYYY-MM-DDTHH:MM:SSZ` (proleptic Gregorian, UTC).
fn format_unix(secs: u64) -> String {
    let days = (secs / 86_400) as i64;
    let rem = secs % 86_400;
    // Howard Hinnant's days-from-civil inverse.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        (rem % 3600) / 60,
        rem % 60
    )
}

#[cfg(test)]
mod tests {
    use super::format_unix;

    #[test]
    fn formats_unix_time() {
        assert_eq!(format_unix(0), "1970-01-01T00:00:00Z");
        assert_eq!(format_unix(1_795_000_000), "2026-11-18T11:06:40Z");
        assert_eq!(format_unix(951_782_400), "2000-02-29T00:00:00Z");
    }
}
