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
//! (`store_engine_queries`). The statements are the repositories' own (`store::processes`,
//! `store::cards`, `store::seram`), run here in one transaction.

use crate::domain::*;
use crate::store::cards::{update_card_state, update_security_domain};
use crate::store::log::{NewAuditEntry, insert_audit, insert_callback};
use crate::store::processes::{update_process, write_parts};
use crate::store::seram::update_session;
use crate::store::{Store, StoreError, db_err, parsed};
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
            update_card_state(&mut tx, e).await?;
        }
        for d in &c.security_domains {
            update_security_domain(&mut tx, d).await?;
        }
        if let Some(x) = &c.session
            && !update_session(&mut tx, x).await?
        {
            return Err(StoreError::VersionConflict { entity: "seram session", id: x.id.to_string(), expected: x.version });
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
    if !update_process(c, p).await? {
        return Err(StoreError::VersionConflict { entity: "process", id: p.id.to_string(), expected: p.version });
    }
    write_parts(c, p.id, &w.steps, &w.apdus, w.instance_state).await?;
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
