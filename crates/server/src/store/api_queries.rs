//! Queries the provider API needs beyond the repositories: queuing a process for a service
//! instance atomically (state check, one process in flight, the SERAM session and the audit
//! record in one transaction), and the in-flight lookup.
//!
//! Kept in its own file (owned by the API) so that the repositories stay as they are; the same
//! portability rules hold (run-time queries, `$n` placeholders, plain column types).
//! Declared from `lib.rs` (`store_api_queries`) so that `store/mod.rs` stays untouched; the
//! store's owner may move it under `store` with one `pub mod` line.

use crate::store::log::{NewAuditEntry, insert_audit};
use crate::store::processes::insert_process;
use crate::store::seram::insert_session;
use crate::store::{Store, StoreError, db_err, parsed};
use crate::domain::*;

/// What [`Store::queue_instance_process`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum QueueOutcome {
    Queued,
    /// No such instance for this provider.
    InstanceNotFound,
    /// The instance's state does not allow the operation.
    InvalidState(ServiceInstanceState),
    /// Another process of the instance is QUEUED or RUNNING.
    InFlight(ProcessId),
}

impl Store {
    /// Queues `process` (state QUEUED, its `seram_session_id` set) for its service instance,
    /// with `session` (the SERAM session the phone app will open) and an audit record, in one
    /// transaction, if the instance is the provider's, is in one of `allowed` states, and has
    /// no process in flight.
    ///
    /// Concurrent requests for one instance are serialized by a write to the instance row
    /// first (a row lock on PostgreSQL, the write lock on SQLite), so that two of them cannot
    /// both see "nothing in flight".
    pub async fn queue_instance_process(
        &self,
        process: &Process,
        session: &SeramSession,
        allowed: &[ServiceInstanceState],
        audit: &NewAuditEntry,
    ) -> Result<QueueOutcome, StoreError> {
        let Some(instance_id) = process.service_instance_id else {
            return Err(StoreError::Invalid("a process for an instance needs its id".into()));
        };
        let mut tx = self.pool().begin().await.map_err(db_err("process"))?;
        let locked = sqlx::query("UPDATE service_instances SET updated_at = updated_at WHERE id = $1 AND provider_id = $2 AND se_id = $3")
            .bind(instance_id.to_string())
            .bind(process.provider_id.to_string())
            .bind(process.se_id.as_str())
            .execute(&mut *tx)
            .await
            .map_err(db_err("service instance"))?;
        if locked.rows_affected() != 1 {
            return Ok(QueueOutcome::InstanceNotFound);
        }
        let row = sqlx::query("SELECT state FROM service_instances WHERE id = $1")
            .bind(instance_id.to_string())
            .fetch_one(&mut *tx)
            .await
            .map_err(db_err("service instance"))?;
        let state: ServiceInstanceState = parsed(&row, "state")?;
        if !allowed.contains(&state) {
            return Ok(QueueOutcome::InvalidState(state));
        }
        if let Some(r) = sqlx::query("SELECT id FROM processes WHERE service_instance_id = $1 AND state IN ('QUEUED', 'RUNNING') LIMIT 1")
            .bind(instance_id.to_string())
            .fetch_optional(&mut *tx)
            .await
            .map_err(db_err("process"))?
        {
            return Ok(QueueOutcome::InFlight(parsed(&r, "id")?));
        }
        insert_process(&mut tx, process).await?;
        insert_session(&mut tx, session).await?;
        insert_audit(&mut tx, audit).await?;
        tx.commit().await.map_err(db_err("process"))?;
        Ok(QueueOutcome::Queued)
    }

    /// The QUEUED or RUNNING process of one of `provider`'s instances, if any.
    pub async fn in_flight_process(&self, provider: ProviderId, instance: ServiceInstanceId) -> Result<Option<ProcessId>, StoreError> {
        sqlx::query("SELECT id FROM processes WHERE provider_id = $1 AND service_instance_id = $2 AND state IN ('QUEUED', 'RUNNING') LIMIT 1")
            .bind(provider.to_string())
            .bind(instance.to_string())
            .fetch_optional(self.pool())
            .await
            .map_err(db_err("process"))?
            .map(|r| parsed(&r, "id"))
            .transpose()
    }
}
