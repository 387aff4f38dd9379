//! Node assembly: opens the data dir, builds every layer, wires them through the
//! ports, restores the stored apps, and runs the gateway and admin servers until
//! shutdown (in-flight requests finish).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use async_trait::async_trait;
use nimbus_compute::{DataPorts, Runtime, RuntimeConfig};
use nimbus_core::api::{ComponentUploaded, FunctionStatus, TriggerStatus};
use nimbus_core::app::App;
use nimbus_core::bus::EventBus;
use nimbus_core::data::{DataError, UrlSigner};
use nimbus_core::ports::Invoker;
use nimbus_core::queue::QueueService;
use nimbus_core::topic::TopicService;
use nimbus_data::{DataService, Database, Durability, FileStore};
use nimbus_edge::{Gateway, GatewayConfig, ObjectAccess};
use nimbus_integration::{Invocations, Triggers};
use nimbus_ops::metered::Metered;
use nimbus_ops::{Control, DataApi, Platform};
use tokio::net::TcpListener;
use tokio::sync::watch;

#[derive(Debug, Clone)]
pub struct NodeConfig {
    pub listen: SocketAddr,
    pub admin_listen: SocketAddr,
    pub data_dir: PathBuf,
    pub max_body_bytes: u64,
    pub default_app: Option<String>,
    pub max_instances: u32,
    pub durability: Durability,
    /// Retention of the function logs.
    pub logs: nimbus_ops::logs::LogConfig,
    /// Lines of output per second per function (0: no limit).
    pub log_rate: u32,
    /// The price sheet file, if not the defaults.
    pub prices: Option<PathBuf>,
    /// The `tracing` layer's handle, to attach the log store to.
    pub capture: nimbus_ops::logs::capture::Capture,
}

/// The layers, as ops sees them.
struct NodePlatform {
    runtime: Arc<Runtime>,
    meters: Arc<nimbus_core::meter::Meters>,
    gateway: Arc<Gateway>,
    components: FileStore,
    triggers: Triggers,
    invocations: Invocations,
    bus: nimbus_integration::Bus,
    changes: nimbus_integration::Changes,
    schedules: nimbus_processing::Schedules,
}

fn to_string(err: nimbus_compute::Error) -> String {
    format!("{err:#}")
}

#[async_trait]
impl Platform for NodePlatform {
    async fn prepare(&self, digest: &str) -> Result<ComponentUploaded, String> {
        let runtime = self.runtime.clone();
        let components = self.components.clone();
        let owned = digest.to_string();
        let prepared = tokio::task::spawn_blocking(move || {
            runtime.prepare(&owned, || {
                components.read(&owned).map_err(nimbus_compute::Error::new)
            })
        })
        .await
        .map_err(|e| e.to_string())?
        .map_err(to_string)?;
        Ok(ComponentUploaded {
            digest: digest.to_string(),
            kind: prepared.kind.to_string(),
            compile_ms: prepared.elapsed.as_millis() as u64,
            cached: prepared.cached,
        })
    }

    async fn activate(&self, app: &App, deployment: u64) -> Result<(), String> {
        // Time zones are checked before anything changes.
        nimbus_processing::Schedules::check(app)?;
        let components = self.components.clone();
        let load = move |digest: &str| components.read(digest).map_err(nimbus_compute::Error::new);
        self.runtime
            .activate(app, deployment, &load)
            .await
            .map_err(to_string)?;
        self.meters.app(&app.name).set_quotas(app.quotas.clone());
        self.gateway.set_app(app, deployment);
        self.triggers.set_app(app, deployment);
        self.invocations.set_app(app, deployment);
        self.bus.set_app(app).await.map_err(|e| e.to_string())?;
        self.changes.set_app(app, deployment);
        self.schedules.set_app(app)?;
        Ok(())
    }

    fn remove(&self, app: &str) {
        let (bus, changes, name) = (self.bus.clone(), self.changes.clone(), app.to_string());
        let schedules = self.schedules.clone();
        tokio::spawn(async move {
            if let Err(err) = schedules.remove_app(&name).await {
                tracing::warn!("forgetting the schedules of `{name}` failed: {err}");
            }
            if let Err(err) = changes.remove_app(&name).await {
                tracing::warn!("forgetting the change cursors of `{name}` failed: {err}");
            }
            if let Err(err) = bus.remove_app(&name).await {
                tracing::warn!("forgetting the bus of `{name}` failed: {err}");
            }
        });
        self.triggers.remove_app(app);
        self.invocations.remove_app(app);
        self.gateway.remove_app(app);
        self.runtime.remove(app);
    }

    fn function_status(&self, app: &str) -> Vec<FunctionStatus> {
        self.runtime.status(app)
    }

    fn trigger_status(&self, app: &str) -> Vec<TriggerStatus> {
        let mut all = self.triggers.status(app);
        all.extend(self.changes.status(app));
        all.sort_by(|a, b| a.name.cmp(&b.name));
        all
    }

    async fn rule_status(&self, app: &str) -> Vec<nimbus_core::bus::RuleStatus> {
        use nimbus_core::bus::EventBus as _;
        self.bus.rules(app).await.unwrap_or_default()
    }

    async fn set_trigger(&self, app: &str, trigger: &str, enabled: bool) -> Result<(), DataError> {
        match self.triggers.set_enabled(app, trigger, enabled).await {
            Err(DataError::NotFound(_)) => self.changes.set_enabled(app, trigger, enabled).await,
            other => other,
        }
    }

    fn function_kind(&self, app: &str, function: &str) -> Option<(bool, bool)> {
        self.runtime.kind(app, function).map(|k| (k.http, k.event))
    }

    fn invoker(&self) -> Arc<dyn Invoker> {
        self.runtime.clone()
    }
}

/// A started node: listening, apps restored.
pub struct Node {
    pub control: Arc<Control>,
    pub gateway_addr: SocketAddr,
    pub admin_addr: SocketAddr,
    gateway_listener: TcpListener,
    admin_listener: TcpListener,
    gateway: Arc<Gateway>,
    token: String,
    data_api: DataApi,
    logs: Arc<nimbus_ops::logs::LogStore>,
    meters: Arc<nimbus_core::meter::Meters>,
    usage: Arc<nimbus_ops::usage::Usage>,
}

impl Node {
    pub async fn start(config: NodeConfig) -> anyhow::Result<Self> {
        std::fs::create_dir_all(&config.data_dir)
            .with_context(|| format!("cannot create data dir `{}`", config.data_dir.display()))?;
        let gateway_listener = TcpListener::bind(config.listen)
            .await
            .with_context(|| format!("cannot listen on {} (--listen)", config.listen))?;
        let admin_listener = TcpListener::bind(config.admin_listen)
            .await
            .with_context(|| {
                format!("cannot listen on {} (--admin-listen)", config.admin_listen)
            })?;
        let gateway_addr = gateway_listener.local_addr()?;
        let admin_addr = admin_listener.local_addr()?;
        let token = nimbus_ops::load_or_create_token(&config.data_dir)
            .context("cannot create the admin token")?;
        let logs = nimbus_ops::logs::LogStore::open(&config.data_dir, config.logs)
            .map_err(|e| anyhow::anyhow!("cannot open the log store: {e}"))?;
        config.capture.attach(logs.clone());
        let db = Database::open_with(&config.data_dir, config.durability)?;
        let data = DataService::open(db.clone(), &config.data_dir)
            .map_err(|e| anyhow::anyhow!("cannot open the data stores: {e}"))?;
        data.spawn_upkeep();
        let meters = nimbus_core::meter::Meters::new();
        let mut data_ports = nimbus_data::ports(&data);
        // Every user of a store goes through its meter (and the stored-bytes quota).
        data_ports.kv = Metered::new(data_ports.kv, meters.clone());
        data_ports.docs = Metered::new(data_ports.docs, meters.clone());
        data_ports.blobs = Metered::new(data_ports.blobs, meters.clone());
        let queues = nimbus_integration::Queues::open(db.clone())
            .map_err(|e| anyhow::anyhow!("cannot open the queues: {e}"))?;
        {
            // Messages past their queue's retention.
            let queues = queues.clone();
            spawn_every(
                Duration::from_secs(60),
                "expiring queue messages",
                move || {
                    let queues = queues.clone();
                    async move { queues.expire().await }
                },
            );
        }
        let queues: Arc<dyn QueueService> = Arc::new(queues);
        let queues: Arc<dyn QueueService> = Metered::new(queues, meters.clone());
        let signer = UrlSigner::new(
            nimbus_ops::load_or_create_secret(&config.data_dir, nimbus_ops::URL_KEY_FILE)
                .context("cannot create the URL signing key")?
                .as_bytes(),
        );
        let components = FileStore::open(config.data_dir.join("components"), "wasm")?;
        let cache = FileStore::open(config.data_dir.join("cache").join("compiled"), "cwasm")?;
        // Compute's host bindings need the bus, which needs async invocations,
        // which need compute: the bus is bound once it exists.
        let late_bus = LateBus::default();
        let late_topics: Arc<dyn TopicService> = Metered::new(
            Arc::new(late_bus.clone()) as Arc<dyn TopicService>,
            meters.clone(),
        );
        let late_events: Arc<dyn EventBus> = Metered::new(
            Arc::new(late_bus.clone()) as Arc<dyn EventBus>,
            meters.clone(),
        );
        let runtime = Runtime::new(
            RuntimeConfig {
                max_instances: config.max_instances,
                log_lines_per_second: config.log_rate,
                ..RuntimeConfig::default()
            },
            Arc::new(cache),
            DataPorts {
                kv: data_ports.kv.clone(),
                docs: data_ports.docs.clone(),
                blobs: data_ports.blobs.clone(),
                queues: queues.clone(),
                topics: late_topics,
                bus: late_events,
            },
            meters.clone(),
        )
        .map_err(|e| anyhow::anyhow!("cannot start the WebAssembly runtime: {e:#}"))?;
        let gateway = Gateway::new(
            runtime.clone(),
            meters.clone(),
            Some(ObjectAccess {
                blobs: data_ports.blobs.clone(),
                signer: signer.clone(),
            }),
            GatewayConfig {
                max_body_bytes: config.max_body_bytes,
                default_app: config.default_app.clone(),
            },
        );
        let triggers =
            nimbus_integration::Triggers::open(db.clone(), queues.clone(), runtime.clone())
                .map_err(|e| anyhow::anyhow!("cannot open the triggers: {e}"))?;
        let invocations = Invocations::open(db.clone(), runtime.clone(), queues.clone())
            .map_err(|e| anyhow::anyhow!("cannot open the async invocations: {e}"))?;
        let bus = nimbus_integration::Bus::open(
            db.clone(),
            queues.clone(),
            Arc::new(invocations.clone()),
        )
        .map_err(|e| anyhow::anyhow!("cannot open the event bus: {e}"))?;
        let _ = late_bus.0.set(bus.clone());
        invocations.bind_events(Arc::new(bus.clone()), Arc::new(bus.clone()));
        let changes = nimbus_integration::Changes::open(
            db.clone(),
            data_ports.catalog.clone(),
            runtime.clone(),
            bus.clone(),
        )
        .map_err(|e| anyhow::anyhow!("cannot open the change feeds: {e}"))?;
        let topics: Arc<dyn TopicService> = Metered::new(
            Arc::new(bus.clone()) as Arc<dyn TopicService>,
            meters.clone(),
        );
        let events: Arc<dyn EventBus> =
            Metered::new(Arc::new(bus.clone()) as Arc<dyn EventBus>, meters.clone());
        let schedules = nimbus_processing::Schedules::open(
            db.clone(),
            nimbus_processing::Targets {
                invocations: Arc::new(invocations.clone()),
                queues: queues.clone(),
                topics: topics.clone(),
                bus: events.clone(),
            },
        )
        .map_err(|e| anyhow::anyhow!("cannot open the schedules: {e}"))?;
        let platform = Arc::new(NodePlatform {
            runtime,
            meters: meters.clone(),
            gateway: gateway.clone(),
            components: components.clone(),
            triggers,
            invocations: invocations.clone(),
            bus: bus.clone(),
            changes,
            schedules: schedules.clone(),
        });
        let gateway_url = format!("http://{gateway_addr}");
        let control = Control::new(
            db.clone(),
            components,
            platform,
            data_ports.catalog.clone(),
            queues.clone(),
            gateway_url.clone(),
        )?;
        let data_api = DataApi {
            kv: data_ports.kv,
            docs: data_ports.docs,
            blobs: data_ports.blobs,
            catalog: data_ports.catalog,
            queues,
            invocations: Arc::new(invocations.clone()),
            bus: events,
            topics,
            schedules: Arc::new(schedules),
            signer,
            gateway_url,
        };
        let prices = match &config.prices {
            None => nimbus_ops::usage::Prices::default(),
            Some(path) => {
                let text = std::fs::read_to_string(path).with_context(|| {
                    format!(
                        "cannot read the price sheet `{}` (--prices)",
                        path.display()
                    )
                })?;
                nimbus_ops::usage::Prices::from_toml(&text)
                    .with_context(|| format!("invalid price sheet `{}`", path.display()))?
            }
        };
        let usage = nimbus_ops::usage::Usage::open(db.clone(), meters.clone(), prices)
            .map_err(|e| anyhow::anyhow!("cannot open the usage meters: {e}"))?;
        let restored = control.restore().await?;
        let names: Vec<String> = control.list().await.into_iter().map(|a| a.name).collect();
        usage
            .roll_day(&names)
            .await
            .map_err(|e| anyhow::anyhow!("cannot read today's usage: {e}"))?;
        usage
            .sample_stores(&*data_api.catalog, &names, 0)
            .await
            .map_err(|e| anyhow::anyhow!("cannot measure the stores: {e}"))?;
        {
            let control = control.clone();
            usage.start(data_api.catalog.clone(), move || {
                let control = control.clone();
                async move { control.list().await.into_iter().map(|a| a.name).collect() }
            });
        }
        // After the restore: every deployed app's functions are known to it.
        invocations.start();
        bus.start();
        {
            // Archived bus events past their app's archive retention.
            let bus = bus.clone();
            spawn_every(
                Duration::from_secs(600),
                "expiring archived events",
                move || {
                    let bus = bus.clone();
                    async move { bus.expire().await }
                },
            );
        }
        {
            // Records of async invocations that ended a day ago.
            let invocations = invocations.clone();
            spawn_every(
                Duration::from_secs(3600),
                "expiring invocation records",
                move || {
                    let invocations = invocations.clone();
                    async move { invocations.expire().await }
                },
            );
        }
        if restored > 0 {
            tracing::info!(
                "restored {restored} app(s) from {}",
                config.data_dir.display()
            );
        }
        Ok(Self {
            control,
            gateway_addr,
            admin_addr,
            gateway_listener,
            admin_listener,
            gateway,
            token,
            data_api,
            logs,
            meters,
            usage,
        })
    }

    /// Serves until `shutdown` flips to true, then drains in-flight requests.
    pub async fn run(self, mut shutdown: watch::Receiver<bool>) -> anyhow::Result<()> {
        let router = nimbus_ops::router(
            self.control.clone(),
            self.token.clone(),
            self.data_api,
            self.logs,
            self.meters,
            self.usage.clone(),
        );
        let mut admin_shutdown = shutdown.clone();
        let admin = tokio::spawn(nimbus_ops::serve(self.admin_listener, router, async move {
            let _ = admin_shutdown.wait_for(|stop| *stop).await;
        }));
        let gateway = nimbus_edge::serve(
            self.gateway_listener,
            self.gateway,
            async move {
                let _ = shutdown.wait_for(|stop| *stop).await;
            },
            Duration::from_secs(30),
        );
        gateway.await.context("gateway server failed")?;
        admin.await?.context("admin server failed")?;
        // What the last second counted.
        if let Err(err) = self.usage.flush().await {
            tracing::warn!("writing usage meters failed: {err}");
        }
        Ok(())
    }
}

/// The event bus and topics for compute's host bindings, bound after the node
/// has built them.
#[derive(Clone, Default)]
struct LateBus(Arc<std::sync::OnceLock<nimbus_integration::Bus>>);

impl LateBus {
    fn get(&self) -> Result<&nimbus_integration::Bus, DataError> {
        self.0
            .get()
            .ok_or_else(|| DataError::Storage("the event bus is starting".into()))
    }
}

#[async_trait]
impl nimbus_core::bus::EventBus for LateBus {
    async fn put_events(
        &self,
        app: &str,
        events: Vec<nimbus_core::cloudevent::CloudEvent>,
    ) -> Result<Vec<Result<nimbus_core::bus::PutResult, DataError>>, DataError> {
        self.get()?.put_events(app, events).await
    }

    async fn rules(&self, app: &str) -> Result<Vec<nimbus_core::bus::RuleStatus>, DataError> {
        self.get()?.rules(app).await
    }

    async fn replay(&self, app: &str, from_ms: u64, to_ms: u64) -> Result<u64, DataError> {
        self.get()?.replay(app, from_ms, to_ms).await
    }
}

#[async_trait]
impl nimbus_core::topic::TopicService for LateBus {
    async fn publish(
        &self,
        app: &str,
        topic: &str,
        messages: Vec<nimbus_core::topic::Publish>,
    ) -> Result<Vec<Result<nimbus_core::topic::Published, DataError>>, DataError> {
        self.get()?.publish(app, topic, messages).await
    }

    async fn subscriptions(
        &self,
        app: &str,
        topic: &str,
    ) -> Result<Vec<nimbus_core::topic::SubscriptionStatus>, DataError> {
        self.get()?.subscriptions(app, topic).await
    }

    async fn subscribe(
        &self,
        app: &str,
        topic: &str,
        subscription: nimbus_core::app::Subscription,
    ) -> Result<String, DataError> {
        self.get()?.subscribe(app, topic, subscription).await
    }

    async fn unsubscribe(&self, app: &str, topic: &str, id: &str) -> Result<bool, DataError> {
        self.get()?.unsubscribe(app, topic, id).await
    }
}

/// Runs `task` every `period`, logging its failures as `what`.
fn spawn_every<F, Fut>(period: Duration, what: &'static str, task: F)
where
    F: Fn() -> Fut + Send + 'static,
    Fut: std::future::Future<Output = Result<u64, DataError>> + Send,
{
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(period);
        loop {
            tick.tick().await;
            if let Err(err) = task().await {
                tracing::warn!("{what} failed: {err}");
            }
        }
    });
}

/// A watch channel that flips on Ctrl-C or SIGTERM.
pub fn shutdown_signal() -> watch::Receiver<bool> {
    let (tx, rx) = watch::channel(false);
    tokio::spawn(async move {
        let ctrl_c = tokio::signal::ctrl_c();
        #[cfg(unix)]
        {
            let mut term =
                tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
                    .expect("install SIGTERM handler");
            tokio::select! {
                _ = ctrl_c => {}
                _ = term.recv() => {}
            }
        }
        #[cfg(not(unix))]
        let _ = ctrl_c.await;
        tracing::info!("shutting down: finishing in-flight requests");
        let _ = tx.send(true);
    });
    rx
}
