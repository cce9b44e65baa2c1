//! The append-only audit log and the callbacks outbox.
//!
//! The audit repository only inserts and reads: there is deliberately no update or delete
//! path for `audit_log` anywhere in the code.

use super::{Store, StoreError, col, db_err, int, json_col, json_opt, parsed, parsed_opt, to_json};
use crate::domain::*;
use sqlx::AnyConnection;
use sqlx::any::AnyRow;

/// An audit record to append (the id and time are assigned by the store).
#[derive(Debug, Clone, PartialEq)]
pub struct NewAuditEntry {
    pub actor: String,
    pub provider_id: Option<ProviderId>,
    pub action: String,
    pub object_type: String,
    pub object_id: String,
    pub detail: Option<serde_json::Value>,
}

pub(crate) async fn insert_audit(c: &mut AnyConnection, a: &NewAuditEntry) -> Result<(), StoreError> {
    sqlx::query("INSERT INTO audit_log (at, actor, provider_id, action, object_type, object_id, detail) VALUES ($1, $2, $3, $4, $5, $6, $7)")
        .bind(now_ms())
        .bind(&a.actor)
        .bind(a.provider_id.map(|p| p.to_string()))
        .bind(&a.action)
        .bind(&a.object_type)
        .bind(&a.object_id)
        .bind(a.detail.as_ref().map(to_json).transpose()?)
        .execute(&mut *c)
        .await
        .map_err(db_err("audit log"))?;
    Ok(())
}

fn audit(r: &AnyRow) -> Result<AuditEntry, StoreError> {
    Ok(AuditEntry {
        id: col(r, "id")?,
        at: col(r, "at")?,
        actor: col(r, "actor")?,
        provider_id: parsed_opt(r, "provider_id")?,
        action: col(r, "action")?,
        object_type: col(r, "object_type")?,
        object_id: col(r, "object_id")?,
        detail: json_opt(r, "detail")?,
    })
}

pub struct AuditLog<'a> {
    pub(crate) s: &'a Store,
}

impl AuditLog<'_> {
    pub async fn append(&self, a: &NewAuditEntry) -> Result<(), StoreError> {
        let mut c = self.s.pool().acquire().await.map_err(db_err("audit log"))?;
        insert_audit(&mut c, a).await
    }

    /// A provider's audit records, oldest first, after id `after` (paging).
    pub async fn list(&self, provider: ProviderId, after: i64, limit: u32) -> Result<Vec<AuditEntry>, StoreError> {
        self.page(Some(provider), after, limit).await
    }

    /// Every provider's records and the operator-wide ones, oldest first, after id `after`
    /// (operator use).
    pub async fn list_all(&self, after: i64, limit: u32) -> Result<Vec<AuditEntry>, StoreError> {
        self.page(None, after, limit).await
    }

    async fn page(&self, provider: Option<ProviderId>, after: i64, limit: u32) -> Result<Vec<AuditEntry>, StoreError> {
        let q = match provider {
            Some(p) => sqlx::query("SELECT * FROM audit_log WHERE provider_id = $1 AND id > $2 ORDER BY id LIMIT $3").bind(p.to_string()),
            None => sqlx::query("SELECT * FROM audit_log WHERE id > $1 ORDER BY id LIMIT $2"),
        };
        q.bind(after)
            .bind(i64::from(limit))
            .fetch_all(self.s.pool())
            .await
            .map_err(db_err("audit log"))?
            .iter()
            .map(audit)
            .collect()
    }

    /// Every record about one object (operator use).
    pub async fn list_for_object_unscoped(&self, object_type: &str, object_id: &str) -> Result<Vec<AuditEntry>, StoreError> {
        sqlx::query("SELECT * FROM audit_log WHERE object_type = $1 AND object_id = $2 ORDER BY id")
            .bind(object_type)
            .bind(object_id)
            .fetch_all(self.s.pool())
            .await
            .map_err(db_err("audit log"))?
            .iter()
            .map(audit)
            .collect()
    }
}

pub(crate) async fn insert_callback(c: &mut AnyConnection, e: &CallbackOutboxEntry) -> Result<(), StoreError> {
    sqlx::query(
        "INSERT INTO callbacks_outbox (id, provider_id, process_id, url, payload, attempts, next_attempt_at, delivered_at, last_error, created_at) \
         SELECT $1, $2, $3, $4, $5, $6, $7, $8, $9, $10 WHERE EXISTS (SELECT 1 FROM processes WHERE id = $3 AND provider_id = $2)",
    )
    .bind(e.id.to_string())
    .bind(e.provider_id.to_string())
    .bind(e.process_id.to_string())
    .bind(&e.url)
    .bind(to_json(&e.payload)?)
    .bind(i64::from(e.attempts))
    .bind(e.next_attempt_at)
    .bind(e.delivered_at)
    .bind(&e.last_error)
    .bind(e.created_at)
    .execute(&mut *c)
    .await
    .map_err(db_err("callback"))
    .and_then(|r| {
        if r.rows_affected() == 1 { Ok(()) } else { Err(StoreError::Reference { entity: "callback", detail: "process not found for this provider".into() }) }
    })
}

fn callback(r: &AnyRow) -> Result<CallbackOutboxEntry, StoreError> {
    Ok(CallbackOutboxEntry {
        id: parsed(r, "id")?,
        provider_id: parsed(r, "provider_id")?,
        process_id: parsed(r, "process_id")?,
        url: col(r, "url")?,
        payload: json_col(r, "payload")?,
        attempts: int(r, "attempts")?,
        next_attempt_at: col(r, "next_attempt_at")?,
        delivered_at: col(r, "delivered_at")?,
        last_error: col(r, "last_error")?,
        created_at: col(r, "created_at")?,
    })
}

pub struct CallbacksOutbox<'a> {
    pub(crate) s: &'a Store,
}

impl CallbacksOutbox<'_> {
    pub async fn enqueue(&self, e: &CallbackOutboxEntry) -> Result<(), StoreError> {
        let mut c = self.s.pool().acquire().await.map_err(db_err("callback"))?;
        insert_callback(&mut c, e).await
    }

    /// Undelivered entries due at `now`, oldest first (worker use).
    pub async fn due(&self, now: i64, limit: u32) -> Result<Vec<CallbackOutboxEntry>, StoreError> {
        sqlx::query("SELECT * FROM callbacks_outbox WHERE delivered_at IS NULL AND next_attempt_at <= $1 ORDER BY next_attempt_at, id LIMIT $2")
            .bind(now)
            .bind(i64::from(limit))
            .fetch_all(self.s.pool())
            .await
            .map_err(db_err("callback"))?
            .iter()
            .map(callback)
            .collect()
    }

    /// Records a failed attempt and when to try again. Conditional on the attempt count, so
    /// that two workers cannot both count the same attempt.
    pub async fn record_failure(&self, id: CallbackId, attempts_seen: u32, next_attempt_at: i64, error: &str) -> Result<bool, StoreError> {
        let r = sqlx::query("UPDATE callbacks_outbox SET attempts = attempts + 1, next_attempt_at = $1, last_error = $2 WHERE id = $3 AND attempts = $4 AND delivered_at IS NULL")
            .bind(next_attempt_at)
            .bind(error)
            .bind(id.to_string())
            .bind(i64::from(attempts_seen))
            .execute(self.s.pool())
            .await
            .map_err(db_err("callback"))?;
        Ok(r.rows_affected() == 1)
    }

    pub async fn mark_delivered(&self, id: CallbackId, now: i64) -> Result<bool, StoreError> {
        let r = sqlx::query("UPDATE callbacks_outbox SET delivered_at = $1, attempts = attempts + 1 WHERE id = $2 AND delivered_at IS NULL")
            .bind(now)
            .bind(id.to_string())
            .execute(self.s.pool())
            .await
            .map_err(db_err("callback"))?;
        Ok(r.rows_affected() == 1)
    }

    /// A provider's callbacks for one process.
    pub async fn list_for_process(&self, provider: ProviderId, process: ProcessId) -> Result<Vec<CallbackOutboxEntry>, StoreError> {
        sqlx::query("SELECT * FROM callbacks_outbox WHERE provider_id = $1 AND process_id = $2 ORDER BY created_at, id")
            .bind(provider.to_string())
            .bind(process.to_string())
            .fetch_all(self.s.pool())
            .await
            .map_err(db_err("callback"))?
            .iter()
            .map(callback)
            .collect()
    }
}
