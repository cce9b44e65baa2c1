//! SE leases: operations on one SE are serialized by a row per SE, taken with one conditional
//! statement that is atomic on SQLite and PostgreSQL alike (design note, "Principles").

use super::{Store, StoreError, col, db_err, parsed};
use crate::domain::{SeId, SeLease, now_ms};
use std::time::Duration;

pub struct Leases<'a> {
    pub(crate) s: &'a Store,
}

fn ttl_ms(ttl: Duration) -> Result<i64, StoreError> {
    let ms = i64::try_from(ttl.as_millis()).map_err(|_| StoreError::Invalid("lease TTL too long".into()))?;
    if ms <= 0 {
        return Err(StoreError::Invalid("lease TTL must be positive".into()));
    }
    Ok(ms)
}

impl Leases<'_> {
    /// Takes the lease if it is free, expired, or already `holder`'s (then it is extended).
    /// Returns the lease, or `None` if another holder has a live one.
    ///
    /// One `INSERT ... ON CONFLICT DO UPDATE ... WHERE` statement: PostgreSQL locks the
    /// conflicting row and re-evaluates the condition on its latest version; SQLite runs the
    /// statement under its single writer lock. Either way exactly one of several racing
    /// holders changes the row, which `rows_affected` tells.
    pub async fn acquire(&self, se_id: &SeId, holder: &str, ttl: Duration) -> Result<Option<SeLease>, StoreError> {
        self.acquire_at(se_id, holder, ttl, now_ms()).await
    }

    /// [`acquire`](Self::acquire) with an explicit clock (tests).
    pub async fn acquire_at(&self, se_id: &SeId, holder: &str, ttl: Duration, now: i64) -> Result<Option<SeLease>, StoreError> {
        let expires = now + ttl_ms(ttl)?;
        let r = sqlx::query(
            "INSERT INTO se_leases (se_id, holder, acquired_at, expires_at) VALUES ($1, $2, $3, $4) \
             ON CONFLICT (se_id) DO UPDATE SET holder = excluded.holder, \
                 acquired_at = CASE WHEN se_leases.holder = excluded.holder THEN se_leases.acquired_at ELSE excluded.acquired_at END, \
                 expires_at = excluded.expires_at \
             WHERE se_leases.expires_at <= $3 OR se_leases.holder = $2",
        )
        .bind(se_id.as_str())
        .bind(holder)
        .bind(now)
        .bind(expires)
        .execute(self.s.pool())
        .await
        .map_err(db_err("se lease"))?;
        if r.rows_affected() == 0 {
            return Ok(None);
        }
        // The row is ours now; read it back for acquired_at (kept on re-acquisition).
        Ok(self.get(se_id).await?.filter(|l| l.holder == holder))
    }

    /// Extends `holder`'s lease to now + `ttl`; `false` if it does not hold it any more.
    /// An expired lease that nobody took is still `holder`'s and is renewed.
    pub async fn renew(&self, se_id: &SeId, holder: &str, ttl: Duration) -> Result<bool, StoreError> {
        let r = sqlx::query("UPDATE se_leases SET expires_at = $1 WHERE se_id = $2 AND holder = $3")
            .bind(now_ms() + ttl_ms(ttl)?)
            .bind(se_id.as_str())
            .bind(holder)
            .execute(self.s.pool())
            .await
            .map_err(db_err("se lease"))?;
        Ok(r.rows_affected() == 1)
    }

    /// Gives the lease up; `false` if `holder` did not hold it.
    pub async fn release(&self, se_id: &SeId, holder: &str) -> Result<bool, StoreError> {
        let r = sqlx::query("DELETE FROM se_leases WHERE se_id = $1 AND holder = $2")
            .bind(se_id.as_str())
            .bind(holder)
            .execute(self.s.pool())
            .await
            .map_err(db_err("se lease"))?;
        Ok(r.rows_affected() == 1)
    }

    /// The lease row of an SE, live or expired.
    pub async fn get(&self, se_id: &SeId) -> Result<Option<SeLease>, StoreError> {
        sqlx::query("SELECT * FROM se_leases WHERE se_id = $1")
            .bind(se_id.as_str())
            .fetch_optional(self.s.pool())
            .await
            .map_err(db_err("se lease"))?
            .map(|r| {
                Ok(SeLease { se_id: parsed(&r, "se_id")?, holder: col(&r, "holder")?, acquired_at: col(&r, "acquired_at")?, expires_at: col(&r, "expires_at")? })
            })
            .transpose()
    }
}
