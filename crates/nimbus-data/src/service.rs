//! The data layer as the node runs it: the catalog, the key-value, document and
//! object backends on one database and data dir, the [`StoreCatalog`] that deploys
//! create and drop stores through, and the background upkeep (TTL expiry,
//! abandoned multipart uploads).

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use nimbus_core::app::{App, StoreKind};
use nimbus_core::data::{ChangeRecord, DataError, DataResult, StoreCatalog, StoreRef, StoreStatus};

use crate::Database;
use crate::blobs::Blobs;
use crate::catalog::Catalog;
use crate::docs::Docs;
use crate::kv::Kv;

/// Every data service of a node. Cheap to clone.
#[derive(Clone)]
pub struct DataService {
    catalog: Catalog,
    pub kv: Kv,
    pub docs: Docs,
    pub blobs: Blobs,
}

impl DataService {
    /// Opens the services on `db`, with object bodies under `data_dir/blobs`.
    pub fn open(db: Database, data_dir: &Path) -> Result<Self, DataError> {
        let catalog = Catalog::open(db).map_err(DataError::storage)?;
        Ok(Self {
            kv: Kv::open(catalog.clone())?,
            docs: Docs::open(catalog.clone())?,
            blobs: Blobs::open(catalog.clone(), data_dir.join("blobs"))?,
            catalog,
        })
    }

    /// Starts the upkeep tasks (needs a Tokio runtime): expired keys every
    /// second, abandoned multipart uploads every minute.
    pub fn spawn_upkeep(&self) {
        let kv = self.kv.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_secs(1));
            loop {
                tick.tick().await;
                if let Err(err) = kv.sweep_expired().await {
                    tracing::warn!("expiring keys failed: {err}");
                }
            }
        });
        let blobs = self.blobs.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_secs(60));
            loop {
                tick.tick().await;
                if let Err(err) = blobs.expire_uploads().await {
                    tracing::warn!("expiring multipart uploads failed: {err}");
                }
            }
        });
    }
}

#[async_trait]
impl StoreCatalog for DataService {
    async fn ensure(&self, app: &App) -> DataResult<()> {
        // Queues belong to the integration layer.
        for (kind, name) in app.stores() {
            if kind == StoreKind::Queues {
                continue;
            }
            let store = self.catalog.create(kind, StoreRef::new(&app.name, name))?;
            if kind == StoreKind::Docs {
                self.docs
                    .apply_indexes(&store, &app.docs[name].indexes)
                    .await?;
            }
        }
        Ok(())
    }

    async fn drop_store(&self, app: &str, kind: StoreKind, name: &str) -> DataResult<()> {
        let store = match self.catalog.lookup(kind, StoreRef::new(app, name)) {
            Ok(store) => store,
            Err(DataError::NoSuchStore { .. }) => return Ok(()),
            Err(err) => return Err(err),
        };
        match kind {
            StoreKind::Kv => self.kv.drop_store(&store).await,
            StoreKind::Docs => self.docs.drop_store(&store).await,
            StoreKind::Buckets => self.blobs.drop_store(&store).await,
            // Never in this catalog (see `ensure`).
            StoreKind::Queues | StoreKind::Topics | StoreKind::Bus => Ok(()),
        }
    }

    async fn stores(&self, app: &str) -> DataResult<Vec<StoreStatus>> {
        let mut out = Vec::new();
        for store in self.catalog.of_app(app) {
            let (items, bytes) = match store.kind {
                StoreKind::Kv => self.kv.stats(&store),
                StoreKind::Docs => self.docs.stats(&store).await?,
                StoreKind::Buckets => self.blobs.stats(&store).await?,
                StoreKind::Queues | StoreKind::Topics | StoreKind::Bus => continue,
            };
            out.push(StoreStatus {
                kind: store.kind,
                name: store.name.to_string(),
                items,
                bytes,
            });
        }
        Ok(out)
    }

    async fn changes(
        &self,
        app: &str,
        kind: StoreKind,
        name: &str,
        after: u64,
        limit: usize,
    ) -> DataResult<Vec<ChangeRecord>> {
        let store = self.catalog.lookup(kind, StoreRef::new(app, name))?;
        self.catalog.changes(&store, after, limit).await
    }

    async fn latest_change(&self, app: &str, kind: StoreKind, name: &str) -> DataResult<u64> {
        let store = self.catalog.lookup(kind, StoreRef::new(app, name))?;
        self.catalog.latest_change(&store).await
    }
}

/// The service as the ports compute, ops and edge take.
pub fn ports(service: &DataService) -> DataPortSet {
    DataPortSet {
        kv: Arc::new(service.kv.clone()),
        docs: Arc::new(service.docs.clone()),
        blobs: Arc::new(service.blobs.clone()),
        catalog: Arc::new(service.clone()),
    }
}

/// The data layer's ports, as trait objects.
#[derive(Clone)]
pub struct DataPortSet {
    pub kv: Arc<dyn nimbus_core::data::KvStore>,
    pub docs: Arc<dyn nimbus_core::data::DocStore>,
    pub blobs: Arc<dyn nimbus_core::data::BlobStore>,
    pub catalog: Arc<dyn StoreCatalog>,
}
