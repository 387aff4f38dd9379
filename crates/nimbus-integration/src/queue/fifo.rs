//! Which messages a receive on a FIFO queue may take: per group, in send order,
//! and nothing from a group that has a message in flight.
//!
//! The scan walks the queue in send order (the partial `queue_messages_fifo`
//! index) and stops once it has `max` messages, so its cost is the messages ahead
//! of the first deliverable ones: mostly the few in flight.

use std::collections::HashSet;

use rusqlite::Connection;

use super::store::Candidate;

/// What the scan found: messages to deliver, in send order, and messages past
/// `max_receives` to move to the dead-letter queue instead.
#[derive(Debug, Default)]
pub(super) struct Plan {
    pub deliver: Vec<Candidate>,
    pub dead: Vec<i64>,
}

pub(super) fn plan(
    conn: &Connection,
    queue_id: i64,
    now: u64,
    max: usize,
    max_receives: Option<u32>,
) -> rusqlite::Result<Plan> {
    // Groups with a message in flight are closed, wherever that message sits
    // in the group (change_visibility can make an earlier one visible again).
    let mut blocked: HashSet<String> = conn
        .prepare_cached(
            "SELECT DISTINCT group_id FROM queue_messages
             WHERE queue_id = ?1 AND visible_at > ?2 AND receive_count > 0 AND group_id IS NOT NULL",
        )?
        .query_map((queue_id, now as i64), |r| r.get(0))?
        .collect::<rusqlite::Result<_>>()?;
    let mut plan = Plan::default();
    let mut stmt = conn.prepare_cached(
        "SELECT id, group_id, visible_at, receive_count FROM queue_messages
         WHERE queue_id = ?1 AND group_id IS NOT NULL ORDER BY id",
    )?;
    let mut rows = stmt.query([queue_id])?;
    while let Some(row) = rows.next()? {
        let group: String = row.get(1)?;
        if blocked.contains(&group) {
            continue;
        }
        let visible_at = row.get::<_, i64>(2)? as u64;
        let candidate = Candidate {
            id: row.get(0)?,
            receive_count: row.get(3)?,
        };
        if visible_at > now {
            // A delayed head holds back the rest of its group.
            blocked.insert(group);
            continue;
        }
        if max_receives.is_some_and(|m| candidate.receive_count >= m) {
            plan.dead.push(candidate.id);
            continue;
        }
        plan.deliver.push(candidate);
        if plan.deliver.len() == max {
            break;
        }
    }
    Ok(plan)
}
