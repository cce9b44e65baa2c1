//! Service providers (tenants) and their API tokens (hashes only).

use super::{Store, StoreError, col, db_err, int_opt, parsed};
use crate::domain::{ApiToken, ProviderId, ServiceProvider, TokenId, now_ms};
use sqlx::any::AnyRow;

pub struct Providers<'a> {
    pub(crate) s: &'a Store,
}

fn provider(r: &AnyRow) -> Result<ServiceProvider, StoreError> {
    Ok(ServiceProvider {
        id: parsed(r, "id")?,
        name: col(r, "name")?,
        callback_url: col(r, "callback_url")?,
        created_at: col(r, "created_at")?,
        updated_at: col(r, "updated_at")?,
    })
}

impl Providers<'_> {
    pub async fn create(&self, p: &ServiceProvider) -> Result<(), StoreError> {
        sqlx::query("INSERT INTO service_providers (id, name, callback_url, created_at, updated_at) VALUES ($1, $2, $3, $4, $5)")
            .bind(p.id.to_string())
            .bind(&p.name)
            .bind(&p.callback_url)
            .bind(p.created_at)
            .bind(p.updated_at)
            .execute(self.s.pool())
            .await
            .map_err(db_err("service provider"))?;
        Ok(())
    }

    pub async fn get(&self, id: ProviderId) -> Result<Option<ServiceProvider>, StoreError> {
        sqlx::query("SELECT * FROM service_providers WHERE id = $1")
            .bind(id.to_string())
            .fetch_optional(self.s.pool())
            .await
            .map_err(db_err("service provider"))?
            .map(|r| provider(&r))
            .transpose()
    }

    pub async fn get_by_name(&self, name: &str) -> Result<Option<ServiceProvider>, StoreError> {
        sqlx::query("SELECT * FROM service_providers WHERE name = $1")
            .bind(name)
            .fetch_optional(self.s.pool())
            .await
            .map_err(db_err("service provider"))?
            .map(|r| provider(&r))
            .transpose()
    }

    pub async fn list(&self) -> Result<Vec<ServiceProvider>, StoreError> {
        sqlx::query("SELECT * FROM service_providers ORDER BY name")
            .fetch_all(self.s.pool())
            .await
            .map_err(db_err("service provider"))?
            .iter()
            .map(provider)
            .collect()
    }

    /// Updates name and callback URL; `false` if there is no such provider.
    pub async fn update(&self, p: &ServiceProvider) -> Result<bool, StoreError> {
        let r = sqlx::query("UPDATE service_providers SET name = $1, callback_url = $2, updated_at = $3 WHERE id = $4")
            .bind(&p.name)
            .bind(&p.callback_url)
            .bind(now_ms())
            .bind(p.id.to_string())
            .execute(self.s.pool())
            .await
            .map_err(db_err("service provider"))?;
        Ok(r.rows_affected() == 1)
    }
}

pub struct ApiTokens<'a> {
    pub(crate) s: &'a Store,
}

fn token(r: &AnyRow) -> Result<ApiToken, StoreError> {
    Ok(ApiToken {
        id: parsed(r, "id")?,
        provider_id: parsed(r, "provider_id")?,
        label: col(r, "label")?,
        token_hash: col(r, "token_hash")?,
        created_at: col(r, "created_at")?,
        expires_at: int_opt(r, "expires_at")?,
        revoked_at: int_opt(r, "revoked_at")?,
        last_used_at: int_opt(r, "last_used_at")?,
    })
}

impl ApiTokens<'_> {
    /// Stores a token record. `token_hash` must be a hash (the store never sees tokens).
    pub async fn create(&self, t: &ApiToken) -> Result<(), StoreError> {
        sqlx::query("INSERT INTO api_tokens (id, provider_id, label, token_hash, created_at, expires_at, revoked_at, last_used_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8)")
            .bind(t.id.to_string())
            .bind(t.provider_id.to_string())
            .bind(&t.label)
            .bind(&t.token_hash)
            .bind(t.created_at)
            .bind(t.expires_at)
            .bind(t.revoked_at)
            .bind(t.last_used_at)
            .execute(self.s.pool())
            .await
            .map_err(db_err("api token"))?;
        Ok(())
    }

    /// The live (not revoked, not expired at `now`) token with this hash: authentication.
    pub async fn find_live_by_hash(&self, token_hash: &str, now: i64) -> Result<Option<ApiToken>, StoreError> {
        sqlx::query("SELECT * FROM api_tokens WHERE token_hash = $1 AND revoked_at IS NULL AND (expires_at IS NULL OR expires_at > $2)")
            .bind(token_hash)
            .bind(now)
            .fetch_optional(self.s.pool())
            .await
            .map_err(db_err("api token"))?
            .map(|r| token(&r))
            .transpose()
    }

    pub async fn list(&self, provider: ProviderId) -> Result<Vec<ApiToken>, StoreError> {
        sqlx::query("SELECT * FROM api_tokens WHERE provider_id = $1 ORDER BY created_at, id")
            .bind(provider.to_string())
            .fetch_all(self.s.pool())
            .await
            .map_err(db_err("api token"))?
            .iter()
            .map(token)
            .collect()
    }

    /// Revokes one of `provider`'s tokens; `false` if it has no such live token.
    pub async fn revoke(&self, provider: ProviderId, id: TokenId, now: i64) -> Result<bool, StoreError> {
        let r = sqlx::query("UPDATE api_tokens SET revoked_at = $1 WHERE id = $2 AND provider_id = $3 AND revoked_at IS NULL")
            .bind(now)
            .bind(id.to_string())
            .bind(provider.to_string())
            .execute(self.s.pool())
            .await
            .map_err(db_err("api token"))?;
        Ok(r.rows_affected() == 1)
    }

    pub async fn touch(&self, id: TokenId, now: i64) -> Result<(), StoreError> {
        sqlx::query("UPDATE api_tokens SET last_used_at = $1 WHERE id = $2")
            .bind(now)
            .bind(id.to_string())
            .execute(self.s.pool())
            .await
            .map_err(db_err("api token"))?;
        Ok(())
    }
}
