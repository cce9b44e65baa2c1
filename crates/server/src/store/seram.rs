//! SERAM sessions, with optimistic versioning like processes.

use super::{Store, StoreError, col, db_err, json_opt, parsed, parsed_opt, to_json};
use crate::domain::*;
use sqlx::AnyConnection;
use sqlx::any::AnyRow;

pub struct SeramSessions<'a> {
    pub(crate) s: &'a Store,
}

fn session(r: &AnyRow) -> Result<SeramSession, StoreError> {
    Ok(SeramSession {
        id: parsed(r, "id")?,
        se_id: parsed(r, "se_id")?,
        process_id: parsed_opt(r, "process_id")?,
        state: parsed(r, "state")?,
        order: json_opt(r, "order_json")?,
        order_seq: col(r, "order_seq")?,
        last_report_hash: col(r, "last_report_hash")?,
        last_activity: col(r, "last_activity")?,
        created_at: col(r, "created_at")?,
        version: col(r, "version")?,
    })
}

impl SeramSessions<'_> {
    pub async fn create(&self, x: &SeramSession) -> Result<(), StoreError> {
        let mut c = self.s.pool().acquire().await.map_err(db_err("seram session"))?;
        insert_session(&mut c, x).await
    }

    pub async fn get(&self, id: SeramSessionId) -> Result<Option<SeramSession>, StoreError> {
        sqlx::query("SELECT * FROM seram_sessions WHERE id = $1")
            .bind(id.to_string())
            .fetch_optional(self.s.pool())
            .await
            .map_err(db_err("seram session"))?
            .map(|r| session(&r))
            .transpose()
    }

    /// Writes `x` if the stored version is still `x.version`; returns the new version.
    pub async fn update_if_version(&self, x: &SeramSession) -> Result<i64, StoreError> {
        let written = {
            let mut c = self.s.pool().acquire().await.map_err(db_err("seram session"))?;
            update_session(&mut c, x).await?
        };
        if written {
            return Ok(x.version + 1);
        }
        Err(match self.get(x.id).await? {
            Some(_) => StoreError::VersionConflict { entity: "seram session", id: x.id.to_string(), expected: x.version },
            None => StoreError::NotFound { entity: "seram session", id: x.id.to_string() },
        })
    }

    /// Sessions of an SE that are not closed or expired.
    pub async fn list_open_for_se(&self, se: &SeId) -> Result<Vec<SeramSession>, StoreError> {
        sqlx::query("SELECT * FROM seram_sessions WHERE se_id = $1 AND state IN ('CREATED', 'ACTIVE') ORDER BY created_at, id")
            .bind(se.as_str())
            .fetch_all(self.s.pool())
            .await
            .map_err(db_err("seram session"))?
            .iter()
            .map(session)
            .collect()
    }
}

pub(crate) async fn insert_session(c: &mut AnyConnection, x: &SeramSession) -> Result<(), StoreError> {
    sqlx::query(
        "INSERT INTO seram_sessions (id, se_id, process_id, state, order_json, order_seq, last_report_hash, last_activity, created_at, version) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)",
    )
    .bind(x.id.to_string())
    .bind(x.se_id.as_str())
    .bind(x.process_id.map(|p| p.to_string()))
    .bind(x.state.as_str())
    .bind(x.order.as_ref().map(to_json).transpose()?)
    .bind(x.order_seq)
    .bind(&x.last_report_hash)
    .bind(x.last_activity)
    .bind(x.created_at)
    .bind(x.version)
    .execute(&mut *c)
    .await
    .map_err(db_err("seram session"))?;
    Ok(())
}

/// Writes the session row if the stored version is still `x.version` (it then becomes
/// `x.version + 1`); `false` if no row was written (the version moved, or no such session).
pub(crate) async fn update_session(c: &mut AnyConnection, x: &SeramSession) -> Result<bool, StoreError> {
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
    .execute(&mut *c)
    .await
    .map_err(db_err("seram session"))?;
    Ok(r.rows_affected() == 1)
}
