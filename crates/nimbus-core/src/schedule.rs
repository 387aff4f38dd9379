//! The schedule port: what `nimbus schedule ls` shows. Schedules run in
//! `nimbus-processing`.

use async_trait::async_trait;
use serde::{Deserialize, Serialize};

use crate::data::DataResult;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ScheduleStatus {
    pub name: String,
    /// `cron 0 3 * * * (Europe/Paris)` or `rate 5m`.
    pub when: String,
    pub target: String,
    pub enabled: bool,
    pub catch_up: bool,
    /// RFC 3339, in UTC.
    pub next_run: Option<String>,
    pub last_run: Option<String>,
    /// Runs fired since the node started, and hand-offs to the target that failed.
    pub fired: u64,
    pub failed: u64,
}

#[async_trait]
pub trait ScheduleService: Send + Sync + 'static {
    async fn schedules(&self, app: &str) -> DataResult<Vec<ScheduleStatus>>;
}
