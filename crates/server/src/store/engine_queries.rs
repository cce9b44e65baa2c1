//! Queries the process engine needs beyond the repositories: **one transaction per engine
//! decision** that writes the process rows (each conditional on its version, as
//! [`Processes::commit`](super::processes::Processes::commit) does), their steps, APDU log
//! entries, instance states, audit records and callbacks, *and* the SE's card state, the SSD
//! rows and the SERAM session row (conditional on its version). A SERAM report is applied
//! exactly when its session row and its process row move together: a node that dies before
//! the commit changed nothing, one that dies after it changed everything, and a repeated
//! report finds the session already moved (`docs/design/server.md`, "Process engine").
//!
//! Kept in its own file (owned by the engine) and declared from `lib.rs`
//! (`store_engine_queries`) so that the repositories stay as they are. The statements are
//! those of the repositories (run-time queries, `$n` placeholders, plain column types).

use crate::domain::*;
use crate::store::log::{NewAuditEntry, insert_audit, insert_callback};
use crate::store::{Store, StoreError, b, db_err, parsed, to_json};
use sqlx::AnyConnection;

/// Everything written for one process in an [`EngineCommit`].
#[derive(Debug, Clone)]
pub struct ProcessWrite {
    /// The new row; written only if the stored version is still `process.version` (it then
    /// becomes `process.version + 1`).
    pub process: Process,
    /// Steps to insert or overwrite (by ordinal).
    pub steps: Vec<ProcessStep>,
    /// APDU log entries to append.
    pub apdus: Vec<ApduLogEntry>,
    pub instance_state: Option<(ServiceInstanceId, ServiceInstanceState)>,
    /// An update completed: the instance's new version and flavor.
    pub instance_flavor: Option<(ServiceInstanceId, ServiceVersionId, FlavorId)>,
    pub audit: Vec<NewAuditEntry>,
    pub callback: Option<CallbackOutboxEntry>,
}

impl ProcessWrite {
    pub fn new(process: Process) -> ProcessWrite {
        ProcessWrite { process, steps: Vec::new(), apdus: Vec::new(), instance_state: None, instance_flavor: None, audit: Vec::new(), callback: None }
    }
}

/// One engine decision, written atomically by [`Store::engine_commit`].
#[derive(Debug, Clone, Default)]
pub struct EngineCommit {
    pub processes: Vec<ProcessWrite>,
    /// What the TSM now knows of the card (counter, KDD, registry); unconditional (the SE
    /// lease serializes writers).
    pub secure_element: Option<SecureElement>,
    /// Security domain rows to update (keyset, life cycle).
    pub security_domains: Vec<SecurityDomain>,
    /// The SERAM session row; written only if its stored version is still `session.version`.
    pub session: Option<SeramSession>,
    pub audit: Vec<NewAuditEntry>,
}

impl EngineCommit {
    pub fn is_empty(&self) -> bool {
        self.processes.is_empty() && self.secure_element.is_none() && self.security_domains.is_empty() && self.session.is_none() && self.audit.is_empty()
    }
}

impl Store {
    /// Writes `c` in one transaction. `VersionConflict` (nothing written) when a process or the
    /// session was changed by someone else since it was read.
    pub async fn engine_commit(&self, c: &EngineCommit) -> Result<(), StoreError> {
        let mut tx = self.pool().begin().await.map_err(db_err("engine commit"))?;
        for w in &c.processes {
            write_process(&mut tx, w).await?;
        }
        if let Some(e) = &c.secure_element {
            sqlx::query(
                "UPDATE secure_elements SET isd_keyset_id = $1, scp = $2, scp_i = $3, sequence_counter = $4, sequence_counter_current = $5, kdd = $6, registry_json = $7, registry_read_at = $8, updated_at = $9 WHERE id = $10",
            )
            .bind(e.isd_keyset_id.map(|i| i.to_string()))
            .bind(e.scp.map(i64::from))
            .bind(e.scp_i.map(i64::from))
            .bind(e.sequence_counter.map(i64::from))
            .bind(b(e.sequence_counter_current))
            .bind(e.kdd.as_ref().map(|k| tsm_gp::hex::encode(k)))
            .bind(e.registry.as_ref().map(to_json).transpose()?)
            .bind(e.registry_read_at)
            .bind(now_ms())
            .bind(e.id.as_str())
            .execute(&mut *tx)
            .await
            .map_err(db_err("secure element"))?;
        }
        for d in &c.security_domains {
            let quota = d.memory_quota.map(|q| i64::try_from(q).map_err(|_| StoreError::Invalid("memory quota too large".into()))).transpose()?;
            sqlx::query("UPDATE security_domains SET keyset_id = $1, memory_quota = $2, life_cycle = $3, updated_at = $4 WHERE id = $5")
                .bind(d.keyset_id.map(|k| k.to_string()))
                .bind(quota)
                .bind(d.life_cycle.map(i64::from))
                .bind(now_ms())
                .bind(d.id.to_string())
                .execute(&mut *tx)
                .await
                .map_err(db_err("security domain"))?;
        }
        if let Some(x) = &c.session {
            let r = sqlx::query(
                "UPDATE seram_sessions SET process_id = $1, state = $2, order_json = $3, order_seq = $4, last_report_hash = $5, last_activity = $6, version = version + 1 \
                 WHERE id = $7 AND version = $8",
            )
            .bind(x.process_id.map(|p| p.to_string()))
            .bind(x.state.as_str())
            .bind(x.order.as_ref().map(to_json).transpose()?)
            .bind(x.order_seq)
            .bind(&x.last_report_hash)
            .bind(x.last_activity)
            .bind(x.id.to_string())
            .bind(x.version)
            .execute(&mut *tx)
            .await
            .map_err(db_err("seram session"))?;
            if r.rows_affected() != 1 {
                return Err(StoreError::VersionConflict { entity: "seram session", id: x.id.to_string(), expected: x.version });
            }
        }
        for a in &c.audit {
            insert_audit(&mut tx, a).await?;
        }
        tx.commit().await.map_err(db_err("engine commit"))?;
        Ok(())
    }

    /// The unfinished processes of an SE in the order the engine runs them: RUNNING before
    /// QUEUED, then oldest first.
    pub async fn unfinished_processes_for_se(&self, se: &SeId) -> Result<Vec<Process>, StoreError> {
        let ids = sqlx::query("SELECT id FROM processes WHERE se_id = $1 AND state IN ('RUNNING', 'QUEUED') ORDER BY CASE state WHEN 'RUNNING' THEN 0 ELSE 1 END, created_at, id")
            .bind(se.as_str())
            .fetch_all(self.pool())
            .await
            .map_err(db_err("process"))?;
        let mut out = Vec::with_capacity(ids.len());
        for r in &ids {
            let id: ProcessId = parsed(r, "id")?;
            if let Some(p) = self.processes().get_unscoped(id).await? {
                out.push(p);
            }
        }
        Ok(out)
    }
}

async fn write_process(c: &mut AnyConnection, w: &ProcessWrite) -> Result<(), StoreError> {
    let p = &w.process;
    let r = sqlx::query(
        "UPDATE processes SET state = $1, steps_done = $2, steps_total = $3, apdus = $4, round_trips = $5, error_code = $6, error_message = $7, \
         planner_state = $8, seram_session_id = $9, updated_at = $10, started_at = $11, finished_at = $12, version = version + 1 \
         WHERE id = $13 AND version = $14",
    )
    .bind(p.state.as_str())
    .bind(i64::from(p.progress.steps_done))
    .bind(i64::from(p.progress.steps_total))
    .bind(i64::from(p.progress.apdus))
    .bind(i64::from(p.progress.round_trips))
    .bind(p.error.as_ref().map(|e| e.code.clone()))
    .bind(p.error.as_ref().map(|e| e.message.clone()))
    .bind(p.planner_state.as_ref().map(to_json).transpose()?)
    .bind(p.seram_session_id.map(|s| s.to_string()))
    .bind(now_ms())
    .bind(p.started_at)
    .bind(p.finished_at)
    .bind(p.id.to_string())
    .bind(p.version)
    .execute(&mut *c)
    .await
    .map_err(db_err("process"))?;
    if r.rows_affected() != 1 {
        return Err(StoreError::VersionConflict { entity: "process", id: p.id.to_string(), expected: p.version });
    }
    for s in &w.steps {
        if s.process_id != p.id {
            return Err(StoreError::Invalid("step of another process".into()));
        }
        sqlx::query(
            "INSERT INTO process_steps (process_id, ordinal, name, state, started_at, finished_at) VALUES ($1, $2, $3, $4, $5, $6) \
             ON CONFLICT (process_id, ordinal) DO UPDATE SET name = excluded.name, state = excluded.state, started_at = excluded.started_at, finished_at = excluded.finished_at",
        )
        .bind(p.id.to_string())
        .bind(i64::from(s.ordinal))
        .bind(&s.name)
        .bind(s.state.as_str())
        .bind(s.started_at)
        .bind(s.finished_at)
        .execute(&mut *c)
        .await
        .map_err(db_err("process step"))?;
    }
    for a in &w.apdus {
        if a.process_id != p.id {
            return Err(StoreError::Invalid("APDU log entry of another process".into()));
        }
        sqlx::query("INSERT INTO apdu_log (process_id, batch, seq, command, response, sw, at) VALUES ($1, $2, $3, $4, $5, $6, $7)")
            .bind(a.process_id.to_string())
            .bind(i64::from(a.batch))
            .bind(i64::from(a.seq))
            .bind(a.command.clone())
            .bind(a.response.clone())
            .bind(a.sw.map(i64::from))
            .bind(a.at)
            .execute(&mut *c)
            .await
            .map_err(db_err("apdu log"))?;
    }
    if let Some((inst, state)) = w.instance_state {
        let r = sqlx::query("UPDATE service_instances SET state = $1, updated_at = $2 WHERE id = $3")
            .bind(state.as_str())
            .bind(now_ms())
            .bind(inst.to_string())
            .execute(&mut *c)
            .await
            .map_err(db_err("service instance"))?;
        if r.rows_affected() != 1 {
            return Err(StoreError::NotFound { entity: "service instance", id: inst.to_string() });
        }
    }
    if let Some((inst, version, flavor)) = w.instance_flavor {
        sqlx::query("UPDATE service_instances SET service_version_id = $1, flavor_id = $2, updated_at = $3 WHERE id = $4")
            .bind(version.to_string())
            .bind(flavor.to_string())
            .bind(now_ms())
            .bind(inst.to_string())
            .execute(&mut *c)
            .await
            .map_err(db_err("service instance"))?;
    }
    for a in &w.audit {
        insert_audit(c, a).await?;
    }
    if let Some(cb) = &w.callback {
        insert_callback(c, cb).await?;
    }
    Ok(())
}
