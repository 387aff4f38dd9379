//! The usage tables: hourly meters per app, resource and meter (added to, never
//! rewritten), and per-minute function figures (merged as they come).

use nimbus_core::data::DataError;
use nimbus_core::meter::{FunctionCounts, MB_MS_PER_GB_SECOND};
use nimbus_data::Database;
use rusqlite::OptionalExtension as _;
use serde::{Deserialize, Serialize};

use super::{GroupBy, Increment, meter};

pub(super) const MIGRATIONS: &[&str] = &["
    CREATE TABLE usage_meters (
        hour     INTEGER NOT NULL,
        app      TEXT NOT NULL,
        resource TEXT NOT NULL,
        meter    TEXT NOT NULL,
        value    INTEGER NOT NULL,
        PRIMARY KEY (app, hour, resource, meter)
    ) WITHOUT ROWID;
    CREATE TABLE function_minutes (
        app      TEXT NOT NULL,
        function TEXT NOT NULL,
        minute   INTEGER NOT NULL,
        counts   TEXT NOT NULL,
        PRIMARY KEY (app, function, minute)
    ) WITHOUT ROWID;
"];

/// One minute of one function.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MinuteRow {
    /// Unix seconds of the minute's start.
    pub minute: u64,
    pub app: String,
    pub function: String,
    pub counts: FunctionCounts,
}

/// One line of a usage report.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct UsageLine {
    pub app: String,
    /// What the line is for: the app, a function, a resource or a day.
    pub key: String,
    pub requests: u64,
    pub invocations: u64,
    pub errors: u64,
    /// Memory (MB) times billed milliseconds: exact; `gb_seconds` derives from it.
    pub mb_ms: u64,
    pub gb_seconds: f64,
    pub messages: u64,
    pub events: u64,
    pub stored_gb_hours: f64,
    pub transfer_out_bytes: u64,
    /// In the price sheet's currency.
    pub cost: f64,
}

const GB: f64 = 1024.0 * 1024.0 * 1024.0;

impl UsageLine {
    /// Adds another line's figures to this one (for a total).
    pub fn absorb(&mut self, other: &Self) {
        self.requests += other.requests;
        self.invocations += other.invocations;
        self.errors += other.errors;
        self.mb_ms += other.mb_ms;
        self.gb_seconds = self.mb_ms as f64 / MB_MS_PER_GB_SECOND;
        self.messages += other.messages;
        self.events += other.events;
        self.stored_gb_hours += other.stored_gb_hours;
        self.transfer_out_bytes += other.transfer_out_bytes;
        self.cost += other.cost;
    }

    fn add(&mut self, meter: &str, value: u64) {
        match meter {
            meter::REQUESTS => self.requests += value,
            meter::INVOCATIONS => self.invocations += value,
            meter::ERRORS => self.errors += value,
            meter::MB_MS => {
                self.mb_ms += value;
                self.gb_seconds = self.mb_ms as f64 / MB_MS_PER_GB_SECOND;
            }
            meter::MESSAGES => self.messages += value,
            meter::EVENTS => self.events += value,
            meter::TRANSFER_OUT_BYTES => self.transfer_out_bytes += value,
            meter::STORED_BYTE_SECONDS => self.stored_gb_hours += value as f64 / GB / 3600.0,
            _ => {}
        }
    }
}

pub(super) async fn add(
    db: &Database,
    increments: Vec<Increment>,
    minutes: Vec<MinuteRow>,
) -> Result<(), DataError> {
    if increments.is_empty() && minutes.is_empty() {
        return Ok(());
    }
    db.write(move |conn| {
        let mut add = conn
            .prepare_cached(
                "INSERT INTO usage_meters (hour, app, resource, meter, value)
                 VALUES (?1, ?2, ?3, ?4, ?5)
                 ON CONFLICT (app, hour, resource, meter) DO UPDATE SET value = value + ?5",
            )
            .map_err(DataError::storage)?;
        for i in &increments {
            add.execute((i.hour as i64, &i.app, &i.resource, i.meter, i.value as i64))
                .map_err(DataError::storage)?;
        }
        let mut read = conn
            .prepare_cached(
                "SELECT counts FROM function_minutes WHERE app = ?1 AND function = ?2 AND minute = ?3",
            )
            .map_err(DataError::storage)?;
        let mut write = conn
            .prepare_cached(
                "INSERT OR REPLACE INTO function_minutes (app, function, minute, counts)
                 VALUES (?1, ?2, ?3, ?4)",
            )
            .map_err(DataError::storage)?;
        for row in &minutes {
            let key = (&row.app, &row.function, row.minute as i64);
            let before: Option<String> = read
                .query_row(key, |r| r.get(0))
                .optional()
                .map_err(DataError::storage)?;
            let mut counts = before
                .and_then(|text| serde_json::from_str::<FunctionCounts>(&text).ok())
                .unwrap_or_default();
            counts.add(&row.counts);
            let text = serde_json::to_string(&counts).map_err(DataError::storage)?;
            write
                .execute((key.0, key.1, key.2, text))
                .map_err(DataError::storage)?;
        }
        Ok::<_, DataError>(((), None))
    })
    .await
}

/// `app`'s invocations and MB-ms since `since` (Unix seconds).
pub(super) async fn day_totals(
    db: &Database,
    app: &str,
    since: u64,
) -> Result<(u64, u64), DataError> {
    let app = app.to_string();
    db.call(move |conn| {
        let mut stmt = conn.prepare_cached(
            "SELECT meter, SUM(value) FROM usage_meters
             WHERE app = ?1 AND hour >= ?2 AND meter IN ('invocations', 'mb_ms') GROUP BY meter",
        )?;
        let mut totals = (0, 0);
        let rows = stmt.query_map((&app, since as i64), |r| {
            Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)?))
        })?;
        for row in rows {
            let (meter, value) = row?;
            if meter == meter::INVOCATIONS {
                totals.0 = value as u64;
            } else {
                totals.1 = value as u64;
            }
        }
        Ok(totals)
    })
    .await
    .map_err(DataError::storage)
}

pub(super) async fn query(
    db: &Database,
    app: Option<String>,
    since: u64,
    by: GroupBy,
) -> Result<Vec<UsageLine>, DataError> {
    // Hours that overlap the window count whole: meters are hourly.
    let since = since / 3600 * 3600;
    let rows: Vec<(u64, String, String, String, u64)> = db
        .call(move |conn| {
            let mut stmt = conn.prepare_cached(
                "SELECT hour, app, resource, meter, value FROM usage_meters
                 WHERE hour >= ?1 AND (?2 IS NULL OR app = ?2) ORDER BY app, hour",
            )?;
            let rows = stmt
                .query_map((since as i64, app.as_deref()), |r| {
                    Ok((
                        r.get::<_, i64>(0)? as u64,
                        r.get(1)?,
                        r.get(2)?,
                        r.get(3)?,
                        r.get::<_, i64>(4)? as u64,
                    ))
                })?
                .collect::<Result<Vec<_>, _>>()?;
            Ok(rows)
        })
        .await
        .map_err(DataError::storage)?;
    let mut lines: std::collections::BTreeMap<(String, String), UsageLine> = Default::default();
    for (hour, app, resource, meter, value) in rows {
        let key = match by {
            GroupBy::App => app.clone(),
            GroupBy::Resource => resource,
            GroupBy::Function => match resource.strip_prefix("function:") {
                Some(name) => name.to_string(),
                None => continue,
            },
            GroupBy::Day => day_of(hour),
        };
        let line = lines
            .entry((app.clone(), key.clone()))
            .or_insert_with(|| UsageLine {
                app,
                key,
                ..UsageLine::default()
            });
        line.add(&meter, value);
    }
    Ok(lines.into_values().collect())
}

/// `YYYY-MM-DD` (UTC) of a Unix time.
fn day_of(unix: u64) -> String {
    jiff::Timestamp::from_second(unix as i64)
        .map(|t| t.strftime("%Y-%m-%d").to_string())
        .unwrap_or_default()
}

pub(super) async fn minutes(
    db: &Database,
    app: String,
    function: String,
    since: u64,
) -> Result<Vec<MinuteRow>, DataError> {
    db.call(move |conn| {
        let mut stmt = conn.prepare_cached(
            "SELECT minute, counts FROM function_minutes
             WHERE app = ?1 AND function = ?2 AND minute >= ?3 ORDER BY minute",
        )?;
        let rows = stmt
            .query_map((&app, &function, (since / 60 * 60) as i64), |r| {
                Ok((r.get::<_, i64>(0)?, r.get::<_, String>(1)?))
            })?
            .collect::<Result<Vec<_>, _>>()?;
        Ok(rows
            .into_iter()
            .filter_map(|(minute, text)| {
                Some(MinuteRow {
                    minute: minute as u64,
                    app: app.clone(),
                    function: function.clone(),
                    counts: serde_json::from_str(&text).ok()?,
                })
            })
            .collect())
    })
    .await
    .map_err(DataError::storage)
}
