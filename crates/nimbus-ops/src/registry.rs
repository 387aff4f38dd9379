//! The app registry: the deploy request of every app's serving deployment, kept in
//! the node's database so a restarted node serves the same apps.

use std::collections::BTreeMap;

use nimbus_core::api::DeployRequest;
use nimbus_data::{Database, DbError};

const MIGRATIONS: &[&str] = &["CREATE TABLE apps (
        name TEXT PRIMARY KEY,
        deployment INTEGER NOT NULL,
        manifest_file TEXT NOT NULL,
        manifest TEXT NOT NULL,
        components TEXT NOT NULL,
        deployed_at TEXT NOT NULL
    );
    CREATE TABLE deployment_seq (id INTEGER PRIMARY KEY CHECK (id = 1), last INTEGER NOT NULL);
    INSERT INTO deployment_seq VALUES (1, 0);"];

#[derive(Debug, Clone)]
pub struct StoredApp {
    pub name: String,
    pub deployment: u64,
    pub request: DeployRequest,
    pub deployed_at: String,
}

#[derive(Clone)]
pub struct Registry {
    db: Database,
}

impl Registry {
    pub fn open(db: Database) -> Result<Self, DbError> {
        db.migrate("ops.registry", MIGRATIONS)?;
        Ok(Self { db })
    }

    pub async fn all(&self) -> Result<Vec<StoredApp>, DbError> {
        self.db
            .call(|conn| {
                let mut stmt = conn.prepare(
                    "SELECT name, deployment, manifest_file, manifest, components, deployed_at
                     FROM apps ORDER BY name",
                )?;
                let rows = stmt.query_map([], |row| {
                    let components: String = row.get(4)?;
                    Ok(StoredApp {
                        name: row.get(0)?,
                        deployment: row.get::<_, i64>(1)? as u64,
                        request: DeployRequest {
                            manifest_file: row.get(2)?,
                            manifest: row.get(3)?,
                            components: serde_json::from_str::<BTreeMap<String, String>>(
                                &components,
                            )
                            .unwrap_or_default(),
                        },
                        deployed_at: row.get(5)?,
                    })
                })?;
                Ok(rows.collect::<Result<Vec<_>, _>>()?)
            })
            .await
    }

    /// Stores `request` as `name`'s serving deployment; returns its new number.
    pub async fn put(
        &self,
        name: &str,
        request: &DeployRequest,
        now: String,
    ) -> Result<StoredApp, DbError> {
        let name = name.to_string();
        let request = request.clone();
        self.db
            .call(move |conn| {
                let tx = conn.transaction()?;
                tx.execute("UPDATE deployment_seq SET last = last + 1 WHERE id = 1", [])?;
                let deployment: i64 =
                    tx.query_row("SELECT last FROM deployment_seq WHERE id = 1", [], |r| r.get(0))?;
                let components = serde_json::to_string(&request.components).expect("json map");
                tx.execute(
                    "INSERT INTO apps (name, deployment, manifest_file, manifest, components, deployed_at)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6)
                     ON CONFLICT(name) DO UPDATE SET deployment = ?2, manifest_file = ?3,
                        manifest = ?4, components = ?5, deployed_at = ?6",
                    (&name, deployment, &request.manifest_file, &request.manifest, &components, &now),
                )?;
                tx.commit()?;
                Ok(StoredApp {
                    name,
                    deployment: deployment as u64,
                    request,
                    deployed_at: now,
                })
            })
            .await
    }

    /// Puts back a previous record exactly (used to undo a failed activation).
    pub async fn restore(&self, previous: Option<StoredApp>, name: &str) -> Result<(), DbError> {
        let name = name.to_string();
        self.db
            .call(move |conn| {
                match previous {
                    Some(p) => {
                        let components =
                            serde_json::to_string(&p.request.components).expect("json map");
                        conn.execute(
                            "UPDATE apps SET deployment = ?2, manifest_file = ?3, manifest = ?4,
                                components = ?5, deployed_at = ?6 WHERE name = ?1",
                            (
                                &name,
                                p.deployment as i64,
                                &p.request.manifest_file,
                                &p.request.manifest,
                                &components,
                                &p.deployed_at,
                            ),
                        )?;
                    }
                    None => {
                        conn.execute("DELETE FROM apps WHERE name = ?1", [&name])?;
                    }
                }
                Ok(())
            })
            .await
    }

    pub async fn delete(&self, name: &str) -> Result<bool, DbError> {
        let name = name.to_string();
        self.db
            .call(move |conn| Ok(conn.execute("DELETE FROM apps WHERE name = ?1", [&name])? > 0))
            .await
    }
}
