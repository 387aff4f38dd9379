//! The compute runtime: the engine, the linker with every host interface, the
//! compiled-component cache and the function pools of each deployed app.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use nimbus_core::api::FunctionStatus;
use nimbus_core::app::App;
use nimbus_core::meter::Meters;
use nimbus_core::ports::ArtifactCache;
use wasmtime::Engine;
use wasmtime::component::Linker;
use wasmtime::error::Context as _;

use crate::compile::{Compiler, ComponentKind};
use crate::engine::{EpochTicker, new_engine};
use crate::host::{DataPorts, HostState, add_data_to_linker};
use crate::pool::{AppContext, FunctionPool};

/// Node-wide compute settings.
#[derive(Debug, Clone)]
pub struct RuntimeConfig {
    /// Instances alive at once across all functions (pooling allocator slots).
    pub max_instances: u32,
    /// The largest `memory_mb` any function may use.
    pub max_memory_mb: u64,
    /// Lines of output per second each function may write (0: no limit).
    pub log_lines_per_second: u32,
}

impl Default for RuntimeConfig {
    fn default() -> Self {
        Self {
            max_instances: 1000,
            max_memory_mb: nimbus_core::manifest::defaults::MAX_MEMORY_MB,
            log_lines_per_second: 1000,
        }
    }
}

/// The pools of one deployment of an app.
pub(crate) struct AppPools {
    pub deployment: u64,
    pub functions: HashMap<String, Arc<FunctionPool>>,
}

/// The deployment serving an app and the one before it, kept so requests routed
/// just before a swap still find the code they were routed to.
struct Deployed {
    current: Arc<AppPools>,
    previous: Option<Arc<AppPools>>,
}

pub struct Runtime {
    engine: Engine,
    linker: Linker<HostState>,
    compiler: Compiler,
    data: DataPorts,
    apps: RwLock<HashMap<String, Deployed>>,
    log_lines_per_second: u32,
    meters: Arc<Meters>,
    _ticker: EpochTicker,
}

/// Result of preparing a component at upload time.
#[derive(Debug, Clone)]
pub struct Prepared {
    pub kind: ComponentKind,
    pub cached: bool,
    pub elapsed: Duration,
}

impl Runtime {
    /// Creates the runtime and starts its background reaper (needs a Tokio runtime).
    pub fn new(
        config: RuntimeConfig,
        cache: Arc<dyn ArtifactCache>,
        data: DataPorts,
        meters: Arc<Meters>,
    ) -> wasmtime::Result<Arc<Self>> {
        let engine = new_engine(config.max_instances, config.max_memory_mb)?;
        let mut linker = Linker::new(&engine);
        wasmtime_wasi::p2::add_to_linker_async(&mut linker)?;
        wasmtime_wasi_http::p2::add_only_http_to_linker_async(&mut linker)?;
        add_data_to_linker(&mut linker)?;
        let runtime = Arc::new(Self {
            compiler: Compiler::new(engine.clone(), cache),
            _ticker: EpochTicker::start(engine.clone()),
            engine,
            linker,
            data,
            apps: RwLock::new(HashMap::new()),
            log_lines_per_second: config.log_lines_per_second,
            meters,
        });
        let weak = Arc::downgrade(&runtime);
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_millis(250));
            loop {
                tick.tick().await;
                let Some(runtime) = weak.upgrade() else {
                    return;
                };
                runtime.maintain().await;
            }
        });
        Ok(runtime)
    }

    /// Validates and compiles a component (or finds it compiled in the cache).
    pub fn prepare(
        &self,
        digest: &str,
        bytes: impl FnOnce() -> wasmtime::Result<Vec<u8>>,
    ) -> wasmtime::Result<Prepared> {
        let report = self.compiler.get(digest, bytes)?;
        // Link now, so a component that needs imports we lack fails at upload, not deploy.
        self.linker
            .instantiate_pre(&report.compiled.component)
            .context("the component imports something Nimbus does not provide")?;
        Ok(Prepared {
            kind: report.compiled.kind,
            cached: report.cached,
            elapsed: report.elapsed,
        })
    }

    /// Makes `deployment` of `app` the one that serves it. Functions whose code
    /// and settings did not change keep their warm instances. `bytes` loads a
    /// component by digest when it is not compiled yet.
    pub async fn activate(
        &self,
        app: &App,
        deployment: u64,
        bytes: &(dyn Fn(&str) -> wasmtime::Result<Vec<u8>> + Sync),
    ) -> wasmtime::Result<()> {
        let current = self.current(&app.name);
        let app_meter = self.meters.app(&app.name);
        let mut functions = HashMap::new();
        for (name, config) in &app.functions {
            let unchanged = current
                .as_ref()
                .and_then(|c| c.functions.get(name))
                .filter(|pool| pool.config == *config);
            let pool = match unchanged {
                Some(pool) => pool.clone(),
                None => {
                    let report = self
                        .compiler
                        .get(&config.digest, || bytes(&config.digest))
                        .with_context(|| format!("function `{name}`"))?;
                    let cx = AppContext {
                        app: &app.name,
                        ports: &self.data,
                        lines_per_second: self.log_lines_per_second,
                        meters: &app_meter,
                    };
                    let pool = FunctionPool::new(
                        &self.engine,
                        &self.linker,
                        &cx,
                        config.clone(),
                        &report.compiled,
                    )?;
                    let pool = Arc::new(pool);
                    pool.fill_min()
                        .await
                        .with_context(|| format!("starting warm instances of `{name}`"))?;
                    pool
                }
            };
            functions.insert(name.clone(), pool);
        }
        let pools = Arc::new(AppPools {
            deployment,
            functions,
        });
        let mut apps = self.apps.write().unwrap();
        let previous = apps.remove(&app.name).map(|d| d.current);
        apps.insert(
            app.name.clone(),
            Deployed {
                current: pools,
                previous,
            },
        );
        Ok(())
    }

    /// Stops serving `app`; its instances are dropped once in-flight requests end.
    pub fn remove(&self, app: &str) {
        self.apps.write().unwrap().remove(app);
    }

    fn current(&self, app: &str) -> Option<Arc<AppPools>> {
        self.apps
            .read()
            .unwrap()
            .get(app)
            .map(|d| d.current.clone())
    }

    pub(crate) fn pool(
        &self,
        app: &str,
        function: &str,
        deployment: u64,
    ) -> Option<Arc<FunctionPool>> {
        let apps = self.apps.read().unwrap();
        let deployed = apps.get(app)?;
        let pools = if deployed.current.deployment == deployment {
            &deployed.current
        } else {
            match &deployed.previous {
                Some(p) if p.deployment == deployment => p,
                // Older than the previous deployment: serve with the current code.
                _ => &deployed.current,
            }
        };
        pools.functions.get(function).cloned()
    }

    /// What `function` of the serving deployment of `app` handles.
    pub fn kind(&self, app: &str, function: &str) -> Option<ComponentKind> {
        let current = self.current(app)?;
        current.functions.get(function).map(|p| p.kind)
    }

    /// The status of every function of `app`, sorted by name.
    pub fn status(&self, app: &str) -> Vec<FunctionStatus> {
        let Some(current) = self.current(app) else {
            return Vec::new();
        };
        let mut all: Vec<_> = current.functions.values().map(|p| p.status()).collect();
        all.sort_by(|a, b| a.name.cmp(&b.name));
        all
    }

    /// Frees one instance slot by dropping the least recently used idle instance
    /// on the node. Returns whether a slot was freed.
    pub(crate) fn evict_idle(&self) -> bool {
        let pools: Vec<Arc<FunctionPool>> = {
            let apps = self.apps.read().unwrap();
            apps.values()
                .flat_map(|d| {
                    d.current
                        .functions
                        .values()
                        .chain(d.previous.iter().flat_map(|p| p.functions.values()))
                        .cloned()
                        .collect::<Vec<_>>()
                })
                .collect()
        };
        pools
            .iter()
            .filter_map(|p| p.oldest_idle().map(|t| (t, p)))
            .min_by_key(|(t, _)| *t)
            .is_some_and(|(_, p)| p.evict_oldest())
    }

    /// Scale-to-zero and warm minimums, run periodically.
    async fn maintain(&self) {
        let pools: Vec<Arc<FunctionPool>> = {
            let apps = self.apps.read().unwrap();
            apps.values()
                .flat_map(|d| d.current.functions.values().cloned())
                .collect()
        };
        let now = Instant::now();
        for pool in pools {
            pool.reap(now);
            if let Err(err) = pool.fill_min().await {
                tracing::warn!(app = %pool.app, function = %pool.name, "cannot start warm instance: {err:#}");
            }
        }
    }
}
