//! Compiling components and caching the compiled artifacts on disk, keyed by the
//! component's SHA-256 and the engine's compatibility hash: a restart, or a
//! redeploy of the same bytes, loads machine code instead of compiling again.

use std::collections::HashMap;
use std::hash::{Hash, Hasher};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use nimbus_core::ports::ArtifactCache;
use wasmtime::Engine;
use wasmtime::bail;
use wasmtime::component::Component;
use wasmtime::error::Context as _;

/// What a component can be invoked as, from its exports.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ComponentKind {
    pub http: bool,
    pub event: bool,
}

impl ComponentKind {
    pub fn of(engine: &Engine, component: &Component) -> Self {
        let mut kind = Self {
            http: false,
            event: false,
        };
        for (name, _) in component.component_type().exports(engine) {
            if name.starts_with("wasi:http/incoming-handler@0.2") {
                kind.http = true;
            }
            if name.starts_with("nimbus:function/handler@") {
                kind.event = true;
            }
        }
        kind
    }
}

impl std::fmt::Display for ComponentKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match (self.http, self.event) {
            (true, true) => "http+event",
            (true, false) => "http",
            (false, true) => "event",
            (false, false) => "none",
        })
    }
}

/// A compiled component.
#[derive(Clone)]
pub struct Compiled {
    pub component: Component,
    pub kind: ComponentKind,
}

/// Compiled components in memory, backed by the on-disk artifact cache.
pub struct Compiler {
    engine: Engine,
    cache: Arc<dyn ArtifactCache>,
    engine_hash: String,
    loaded: Mutex<HashMap<String, Compiled>>,
}

/// How a component was obtained.
pub struct CompileReport {
    pub compiled: Compiled,
    pub cached: bool,
    pub elapsed: Duration,
}

impl Compiler {
    pub fn new(engine: Engine, cache: Arc<dyn ArtifactCache>) -> Self {
        let mut hasher = std::collections::hash_map::DefaultHasher::new();
        engine.precompile_compatibility_hash().hash(&mut hasher);
        Self {
            engine_hash: format!("{:016x}", hasher.finish()),
            engine,
            cache,
            loaded: Mutex::new(HashMap::new()),
        }
    }

    fn key(&self, digest: &str) -> String {
        format!("{digest}-{}", self.engine_hash)
    }

    /// The compiled component for `digest`: from memory, from the disk cache, or
    /// compiled from `bytes()` (and then cached).
    pub fn get(
        &self,
        digest: &str,
        bytes: impl FnOnce() -> wasmtime::Result<Vec<u8>>,
    ) -> wasmtime::Result<CompileReport> {
        let started = Instant::now();
        if let Some(compiled) = self.loaded.lock().unwrap().get(digest) {
            return Ok(CompileReport {
                compiled: compiled.clone(),
                cached: true,
                elapsed: started.elapsed(),
            });
        }
        let key = self.key(digest);
        let mut cached = false;
        let mut component = None;
        if let Some(path) = self.cache.lookup(&key) {
            // SAFETY: the file was written by `Component::serialize` of this same
            // engine configuration (the key includes its compatibility hash), into the
            // node's private data dir, atomically.
            #[allow(unsafe_code)]
            match unsafe { Component::deserialize_file(&self.engine, &path) } {
                Ok(c) => {
                    component = Some(c);
                    cached = true;
                }
                Err(err) => tracing::warn!(
                    path = %path.display(),
                    "ignoring unreadable compiled artifact, recompiling: {err:#}"
                ),
            }
        }
        let component = match component {
            Some(c) => c,
            None => {
                let bytes = bytes()?;
                check_component_header(&bytes)?;
                let component = Component::new(&self.engine, &bytes)
                    .context("invalid WebAssembly component")?;
                let artifact = component.serialize()?;
                if let Err(err) = self.cache.store(&key, &artifact) {
                    tracing::warn!("cannot cache compiled component {digest}: {err}");
                }
                component
            }
        };
        let kind = ComponentKind::of(&self.engine, &component);
        if !kind.http && !kind.event {
            bail!(
                "the component exports neither `wasi:http/incoming-handler` (an HTTP function) \
                 nor `nimbus:function/handler` (an event function)"
            );
        }
        let compiled = Compiled { component, kind };
        self.loaded
            .lock()
            .unwrap()
            .insert(digest.to_string(), compiled.clone());
        Ok(CompileReport {
            compiled,
            cached,
            elapsed: started.elapsed(),
        })
    }
}

/// Rejects bytes that are not a WebAssembly component, with a message that says
/// what they are instead.
pub fn check_component_header(bytes: &[u8]) -> wasmtime::Result<()> {
    match bytes {
        [0, b'a', b's', b'm', 0x0d, 0x00, 0x01, 0x00, ..] => Ok(()),
        [0, b'a', b's', b'm', 0x01, 0x00, 0x00, 0x00, ..] => bail!(
            "this is a core WebAssembly module, not a component; build for `wasm32-wasip2` \
             or wrap it with `wasm-tools component new`"
        ),
        _ => bail!("not a WebAssembly component (no `\\0asm` header)"),
    }
}
