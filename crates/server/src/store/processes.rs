//! Service instances, processes (with optimistic versioning), process steps and the APDU log.
//!
//! [`Processes::commit`] is the engine's one write per state change: the process row (only if
//! its version is still the expected one), its steps, the new APDU log entries, the service
//! instance's state, an audit record and a callback, in one transaction.

use super::log::{NewAuditEntry, insert_audit, insert_callback};
use super::{Store, StoreError, col, db_err, int, int_opt, json_opt, parsed, parsed_opt, to_json};
use crate::domain::*;
use sqlx::any::AnyRow;
use sqlx::{AnyConnection, Row};

pub struct ServiceInstances<'a> {
    pub(crate) s: &'a Store,
}

fn instance(r: &AnyRow) -> Result<ServiceInstance, StoreError> {
    Ok(ServiceInstance {
        id: parsed(r, "id")?,
        provider_id: parsed(r, "provider_id")?,
        service_id: parsed(r, "service_id")?,
        service_version_id: parsed(r, "service_version_id")?,
        flavor_id: parsed(r, "flavor_id")?,
        se_id: parsed(r, "se_id")?,
        state: parsed(r, "state")?,
        created_at: col(r, "created_at")?,
        updated_at: col(r, "updated_at")?,
    })
}

impl ServiceInstances<'_> {
    /// Creates an instance; service, version and flavor must be the provider's.
    pub async fn create(&self, i: &ServiceInstance) -> Result<(), StoreError> {
        let r = sqlx::query(
            "INSERT INTO service_instances (id, provider_id, service_id, service_version_id, flavor_id, se_id, state, created_at, updated_at) \
             SELECT $1, $2, $3, $4, $5, $6, $7, $8, $9 \
             WHERE EXISTS (SELECT 1 FROM service_versions v JOIN flavors f ON f.service_version_id = v.id \
                           WHERE v.id = $4 AND v.service_id = $3 AND v.provider_id = $2 AND f.id = $5 AND f.provider_id = $2)",
        )
        .bind(i.id.to_string())
        .bind(i.provider_id.to_string())
        .bind(i.service_id.to_string())
        .bind(i.service_version_id.to_string())
        .bind(i.flavor_id.to_string())
        .bind(i.se_id.as_str())
        .bind(i.state.as_str())
        .bind(i.created_at)
        .bind(i.updated_at)
        .execute(self.s.pool())
        .await
        .map_err(db_err("service instance"))?;
        if r.rows_affected() == 0 {
            return Err(StoreError::Reference { entity: "service instance", detail: "service, version or flavor not found for this provider".into() });
        }
        Ok(())
    }

    pub async fn get(&self, provider: ProviderId, id: ServiceInstanceId) -> Result<Option<ServiceInstance>, StoreError> {
        sqlx::query("SELECT * FROM service_instances WHERE id = $1 AND provider_id = $2")
            .bind(id.to_string())
            .bind(provider.to_string())
            .fetch_optional(self.s.pool())
            .await
            .map_err(db_err("service instance"))?
            .map(|r| instance(&r))
            .transpose()
    }

    /// Engine use: the instance whatever its provider.
    pub async fn get_unscoped(&self, id: ServiceInstanceId) -> Result<Option<ServiceInstance>, StoreError> {
        sqlx::query("SELECT * FROM service_instances WHERE id = $1")
            .bind(id.to_string())
            .fetch_optional(self.s.pool())
            .await
            .map_err(db_err("service instance"))?
            .map(|r| instance(&r))
            .transpose()
    }

    pub async fn list(&self, provider: ProviderId) -> Result<Vec<ServiceInstance>, StoreError> {
        sqlx::query("SELECT * FROM service_instances WHERE provider_id = $1 ORDER BY created_at, id")
            .bind(provider.to_string())
            .fetch_all(self.s.pool())
            .await
            .map_err(db_err("service instance"))?
            .iter()
            .map(instance)
            .collect()
    }

    /// The provider's instances on one SE.
    pub async fn list_for_se(&self, provider: ProviderId, se: &SeId) -> Result<Vec<ServiceInstance>, StoreError> {
        sqlx::query("SELECT * FROM service_instances WHERE provider_id = $1 AND se_id = $2 ORDER BY created_at, id")
            .bind(provider.to_string())
            .bind(se.as_str())
            .fetch_all(self.s.pool())
            .await
            .map_err(db_err("service instance"))?
            .iter()
            .map(instance)
            .collect()
    }

    /// Engine use: sets the state; `false` if there is no such instance.
    pub async fn set_state_unscoped(&self, id: ServiceInstanceId, state: ServiceInstanceState) -> Result<bool, StoreError> {
        let mut c = self.s.pool().acquire().await.map_err(db_err("service instance"))?;
        set_instance_state(&mut c, id, state).await
    }
}

async fn set_instance_state(c: &mut AnyConnection, id: ServiceInstanceId, state: ServiceInstanceState) -> Result<bool, StoreError> {
    let r = sqlx::query("UPDATE service_instances SET state = $1, updated_at = $2 WHERE id = $3")
        .bind(state.as_str())
        .bind(now_ms())
        .bind(id.to_string())
        .execute(&mut *c)
        .await
        .map_err(db_err("service instance"))?;
    Ok(r.rows_affected() == 1)
}

pub struct Processes<'a> {
    pub(crate) s: &'a Store,
}

fn process(r: &AnyRow) -> Result<Process, StoreError> {
    let code: Option<String> = col(r, "error_code")?;
    let message: Option<String> = col(r, "error_message")?;
    Ok(Process {
        id: parsed(r, "id")?,
        provider_id: parsed(r, "provider_id")?,
        service_instance_id: parsed_opt(r, "service_instance_id")?,
        se_id: parsed(r, "se_id")?,
        operation: parsed(r, "operation")?,
        state: parsed(r, "state")?,
        progress: Progress {
            steps_done: int(r, "steps_done")?,
            steps_total: int(r, "steps_total")?,
            apdus: int(r, "apdus")?,
            round_trips: int(r, "round_trips")?,
        },
        error: code.map(|code| ProcessError { code, message: message.unwrap_or_default() }),
        planner_state: json_opt(r, "planner_state")?,
        seram_session_id: parsed_opt(r, "seram_session_id")?,
        version: col(r, "version")?,
        created_at: col(r, "created_at")?,
        updated_at: col(r, "updated_at")?,
        started_at: col(r, "started_at")?,
        finished_at: col(r, "finished_at")?,
    })
}

fn step(r: &AnyRow) -> Result<ProcessStep, StoreError> {
    Ok(ProcessStep {
        process_id: parsed(r, "process_id")?,
        ordinal: int(r, "ordinal")?,
        name: col(r, "name")?,
        state: parsed(r, "state")?,
        started_at: col(r, "started_at")?,
        finished_at: col(r, "finished_at")?,
    })
}

/// Everything the engine writes for one state change of a process (see [`Processes::commit`]).
#[derive(Debug, Clone, Default)]
pub struct ProcessCommit<'a> {
    /// Steps to insert or overwrite (by ordinal).
    pub steps: &'a [ProcessStep],
    /// APDU log entries to append.
    pub apdus: &'a [ApduLogEntry],
    /// A new state for the process's service instance.
    pub instance_state: Option<(ServiceInstanceId, ServiceInstanceState)>,
    pub audit: Option<NewAuditEntry>,
    pub callback: Option<&'a CallbackOutboxEntry>,
}

impl Processes<'_> {
    /// Creates a process (with `version` as given, normally 0) and its initial steps in one
    /// transaction. A service instance, if named, must be the provider's and on the same SE.
    pub async fn create(&self, p: &Process, steps: &[ProcessStep]) -> Result<(), StoreError> {
        let mut tx = self.s.pool().begin().await.map_err(db_err("process"))?;
        if let Some(inst) = p.service_instance_id {
            let ok = sqlx::query("SELECT 1 AS one FROM service_instances WHERE id = $1 AND provider_id = $2 AND se_id = $3")
                .bind(inst.to_string())
                .bind(p.provider_id.to_string())
                .bind(p.se_id.as_str())
                .fetch_optional(&mut *tx)
                .await
                .map_err(db_err("process"))?;
            if ok.is_none() {
                return Err(StoreError::Reference { entity: "process", detail: "service instance not found for this provider and SE".into() });
            }
        }
        insert_process(&mut tx, p).await?;
        for s in steps {
            upsert_step(&mut tx, p.id, s).await?;
        }
        tx.commit().await.map_err(db_err("process"))?;
        Ok(())
    }

    pub async fn get(&self, provider: ProviderId, id: ProcessId) -> Result<Option<Process>, StoreError> {
        sqlx::query("SELECT * FROM processes WHERE id = $1 AND provider_id = $2")
            .bind(id.to_string())
            .bind(provider.to_string())
            .fetch_optional(self.s.pool())
            .await
            .map_err(db_err("process"))?
            .map(|r| process(&r))
            .transpose()
    }

    /// Engine and SERAM use: the process whatever its provider.
    pub async fn get_unscoped(&self, id: ProcessId) -> Result<Option<Process>, StoreError> {
        sqlx::query("SELECT * FROM processes WHERE id = $1")
            .bind(id.to_string())
            .fetch_optional(self.s.pool())
            .await
            .map_err(db_err("process"))?
            .map(|r| process(&r))
            .transpose()
    }

    /// The provider's processes, newest first.
    pub async fn list(&self, provider: ProviderId, limit: u32) -> Result<Vec<Process>, StoreError> {
        sqlx::query("SELECT * FROM processes WHERE provider_id = $1 ORDER BY created_at DESC, id LIMIT $2")
            .bind(provider.to_string())
            .bind(i64::from(limit))
            .fetch_all(self.s.pool())
            .await
            .map_err(db_err("process"))?
            .iter()
            .map(process)
            .collect()
    }

    /// Engine use: the oldest unfinished (RUNNING before QUEUED) process of an SE.
    pub async fn next_for_se(&self, se: &SeId) -> Result<Option<Process>, StoreError> {
        sqlx::query("SELECT * FROM processes WHERE se_id = $1 AND state IN ('RUNNING', 'QUEUED') ORDER BY CASE state WHEN 'RUNNING' THEN 0 ELSE 1 END, created_at, id LIMIT 1")
            .bind(se.as_str())
            .fetch_optional(self.s.pool())
            .await
            .map_err(db_err("process"))?
            .map(|r| process(&r))
            .transpose()
    }

    /// Writes `p` if the stored version is still `p.version`; returns the new version
    /// (`p.version + 1`). `VersionConflict` if someone else updated it first.
    pub async fn update_if_version(&self, p: &Process) -> Result<i64, StoreError> {
        self.commit(p, ProcessCommit::default()).await
    }

    /// One state change, atomically: the process row (conditional on its version), then the
    /// steps, APDU log entries, instance state, audit record and callback of `extra`. Nothing
    /// is written if the version moved.
    pub async fn commit(&self, p: &Process, extra: ProcessCommit<'_>) -> Result<i64, StoreError> {
        let mut tx = self.s.pool().begin().await.map_err(db_err("process"))?;
        if !update_process(&mut tx, p).await? {
            let exists = sqlx::query("SELECT version FROM processes WHERE id = $1")
                .bind(p.id.to_string())
                .fetch_optional(&mut *tx)
                .await
                .map_err(db_err("process"))?;
            return Err(match exists {
                Some(_) => StoreError::VersionConflict { entity: "process", id: p.id.to_string(), expected: p.version },
                None => StoreError::NotFound { entity: "process", id: p.id.to_string() },
            });
        }
        write_parts(&mut tx, p.id, extra.steps, extra.apdus, extra.instance_state).await?;
        if let Some(a) = &extra.audit {
            insert_audit(&mut tx, a).await?;
        }
        if let Some(c) = extra.callback {
            insert_callback(&mut tx, c).await?;
        }
        tx.commit().await.map_err(db_err("process"))?;
        Ok(p.version + 1)
    }

    /// The steps of one of `provider`'s processes, in order.
    pub async fn steps(&self, provider: ProviderId, id: ProcessId) -> Result<Vec<ProcessStep>, StoreError> {
        sqlx::query("SELECT s.* FROM process_steps s JOIN processes p ON p.id = s.process_id WHERE p.provider_id = $1 AND s.process_id = $2 ORDER BY s.ordinal")
            .bind(provider.to_string())
            .bind(id.to_string())
            .fetch_all(self.s.pool())
            .await
            .map_err(db_err("process step"))?
            .iter()
            .map(step)
            .collect()
    }
}

/// Inserts a process row as given (its version included).
pub(crate) async fn insert_process(c: &mut AnyConnection, p: &Process) -> Result<(), StoreError> {
    sqlx::query(
        "INSERT INTO processes (id, provider_id, service_instance_id, se_id, operation, state, steps_done, steps_total, apdus, round_trips, error_code, error_message, planner_state, seram_session_id, version, created_at, updated_at, started_at, finished_at) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $18, $19)",
    )
    .bind(p.id.to_string())
    .bind(p.provider_id.to_string())
    .bind(p.service_instance_id.map(|i| i.to_string()))
    .bind(p.se_id.as_str())
    .bind(p.operation.as_str())
    .bind(p.state.as_str())
    .bind(i64::from(p.progress.steps_done))
    .bind(i64::from(p.progress.steps_total))
    .bind(i64::from(p.progress.apdus))
    .bind(i64::from(p.progress.round_trips))
    .bind(p.error.as_ref().map(|e| e.code.clone()))
    .bind(p.error.as_ref().map(|e| e.message.clone()))
    .bind(p.planner_state.as_ref().map(to_json).transpose()?)
    .bind(p.seram_session_id.map(|s| s.to_string()))
    .bind(p.version)
    .bind(p.created_at)
    .bind(p.updated_at)
    .bind(p.started_at)
    .bind(p.finished_at)
    .execute(&mut *c)
    .await
    .map_err(db_err("process"))?;
    Ok(())
}

/// Writes the process row if the stored version is still `p.version` (it then becomes
/// `p.version + 1`); `false` if no row was written (the version moved, or no such process).
pub(crate) async fn update_process(c: &mut AnyConnection, p: &Process) -> Result<bool, StoreError> {
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
    Ok(r.rows_affected() == 1)
}

/// What goes with a process row in its transaction, in this order: its steps (inserted or
/// overwritten by ordinal), new APDU log entries, and its service instance's new state. Steps
/// and entries of another process are refused, as is an instance that does not exist.
pub(crate) async fn write_parts(
    c: &mut AnyConnection,
    process: ProcessId,
    steps: &[ProcessStep],
    apdus: &[ApduLogEntry],
    instance_state: Option<(ServiceInstanceId, ServiceInstanceState)>,
) -> Result<(), StoreError> {
    for s in steps {
        upsert_step(c, process, s).await?;
    }
    for a in apdus {
        if a.process_id != process {
            return Err(StoreError::Invalid("APDU log entry of another process".into()));
        }
        insert_apdu(c, a).await?;
    }
    if let Some((inst, state)) = instance_state
        && !set_instance_state(c, inst, state).await?
    {
        return Err(StoreError::NotFound { entity: "service instance", id: inst.to_string() });
    }
    Ok(())
}

async fn upsert_step(c: &mut AnyConnection, process: ProcessId, s: &ProcessStep) -> Result<(), StoreError> {
    if s.process_id != process {
        return Err(StoreError::Invalid("step of another process".into()));
    }
    sqlx::query(
        "INSERT INTO process_steps (process_id, ordinal, name, state, started_at, finished_at) VALUES ($1, $2, $3, $4, $5, $6) \
         ON CONFLICT (process_id, ordinal) DO UPDATE SET name = excluded.name, state = excluded.state, started_at = excluded.started_at, finished_at = excluded.finished_at",
    )
    .bind(process.to_string())
    .bind(i64::from(s.ordinal))
    .bind(&s.name)
    .bind(s.state.as_str())
    .bind(s.started_at)
    .bind(s.finished_at)
    .execute(&mut *c)
    .await
    .map_err(db_err("process step"))?;
    Ok(())
}

async fn insert_apdu(c: &mut AnyConnection, a: &ApduLogEntry) -> Result<(), StoreError> {
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
    Ok(())
}

fn apdu(r: &AnyRow) -> Result<ApduLogEntry, StoreError> {
    Ok(ApduLogEntry {
        process_id: parsed(r, "process_id")?,
        batch: int(r, "batch")?,
        seq: int(r, "seq")?,
        command: col(r, "command")?,
        response: col(r, "response")?,
        sw: int_opt(r, "sw")?,
        at: col(r, "at")?,
    })
}

pub struct ApduLog<'a> {
    pub(crate) s: &'a Store,
}

impl ApduLog<'_> {
    /// Appends entries in one transaction (the engine normally uses [`Processes::commit`]).
    pub async fn append(&self, entries: &[ApduLogEntry]) -> Result<(), StoreError> {
        let mut tx = self.s.pool().begin().await.map_err(db_err("apdu log"))?;
        for a in entries {
            insert_apdu(&mut tx, a).await?;
        }
        tx.commit().await.map_err(db_err("apdu log"))
    }

    /// The exchanges of one of `provider`'s processes, in order.
    pub async fn list(&self, provider: ProviderId, process: ProcessId) -> Result<Vec<ApduLogEntry>, StoreError> {
        sqlx::query("SELECT a.* FROM apdu_log a JOIN processes p ON p.id = a.process_id WHERE p.provider_id = $1 AND a.process_id = $2 ORDER BY a.batch, a.seq")
            .bind(provider.to_string())
            .bind(process.to_string())
            .fetch_all(self.s.pool())
            .await
            .map_err(db_err("apdu log"))?
            .iter()
            .map(apdu)
            .collect()
    }

    /// Number of entries of a process (engine use).
    pub async fn count_unscoped(&self, process: ProcessId) -> Result<i64, StoreError> {
        let r = sqlx::query("SELECT COUNT(*) AS n FROM apdu_log WHERE process_id = $1")
            .bind(process.to_string())
            .fetch_one(self.s.pool())
            .await
            .map_err(db_err("apdu log"))?;
        r.try_get::<i64, _>("n").map_err(|e| StoreError::Corrupt { column: "n", detail: e.to_string() })
    }
}
