//! Authentication: providers exchange their long-term token for a short-term bearer token
//! (BSI TR-03165 §4.1.6.1.1 "Create Access Token"); every other provider call carries the
//! short-term token. The admin API takes the admin token from the configuration.
//!
//! Only SHA-256 hashes of tokens are stored ([`crate::app::token_hash`]); a token is shown once,
//! when it is made. Tokens are never logged.

use super::error::{ApiError, ApiResult};
use crate::app::{AppState, token_hash};
use crate::domain::{ApiToken, ProviderId, TokenId, now_ms};
use crate::store::log::NewAuditEntry;
use axum::extract::{FromRequestParts, State};
use axum::http::request::Parts;
use axum::http::{StatusCode, header};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// Label of a provider's long-term token (accepted only by `POST /api/v1/auth`).
pub const LONG_TERM: &str = "long-term";
/// Label of a short-term bearer token (accepted by every other provider call).
pub const SHORT_TERM: &str = "short-term";

/// A fresh random token: a prefix saying what it is, then 256 random bits in hex.
pub fn new_token(prefix: &str) -> ApiResult<String> {
    let mut b = [0u8; 32];
    getrandom::fill(&mut b).map_err(|e| ApiError::internal("internal.random", format!("random source: {e}")))?;
    Ok(format!("{prefix}{}", tsm_gp::hex::encode(&b).to_ascii_lowercase()))
}

fn bearer(headers: &axum::http::HeaderMap) -> ApiResult<&str> {
    let v = headers
        .get(header::AUTHORIZATION)
        .ok_or_else(|| ApiError::unauthorized("auth.missing_token", "send Authorization: Bearer <token>"))?;
    let v = v.to_str().map_err(|_| ApiError::unauthorized("auth.invalid_token", "the Authorization header is not text"))?;
    let (scheme, token) = v.split_once(' ').ok_or_else(|| ApiError::unauthorized("auth.invalid_token", "expected Authorization: Bearer <token>"))?;
    if !scheme.eq_ignore_ascii_case("bearer") || token.trim().is_empty() {
        return Err(ApiError::unauthorized("auth.invalid_token", "expected Authorization: Bearer <token>"));
    }
    Ok(token.trim())
}

fn invalid_token() -> ApiError {
    ApiError::unauthorized("auth.invalid_token", "the bearer token is unknown, expired or revoked")
}

/// The authenticated provider of a request (short-term bearer token).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Provider {
    pub id: ProviderId,
    pub token_id: TokenId,
}

impl Provider {
    /// The audit actor string.
    pub fn actor(&self) -> String {
        format!("provider:{}", self.id)
    }
    /// An audit record of a change by this provider.
    pub fn audit(&self, action: &str, object_type: &str, object_id: impl ToString, detail: Option<serde_json::Value>) -> NewAuditEntry {
        NewAuditEntry { actor: self.actor(), provider_id: Some(self.id), action: action.into(), object_type: object_type.into(), object_id: object_id.to_string(), detail }
    }
}

impl FromRequestParts<AppState> for Provider {
    type Rejection = ApiError;
    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Self::Rejection> {
        let token = bearer(&parts.headers)?;
        let t = state.store.api_tokens().find_live_by_hash(&token_hash(token), now_ms()).await?.ok_or_else(invalid_token)?;
        if t.label != SHORT_TERM {
            // A long-term token only buys short-term ones.
            return Err(ApiError::unauthorized("auth.invalid_token", "this is a long-term token: exchange it at POST /api/v1/auth"));
        }
        Ok(Provider { id: t.provider_id, token_id: t.id })
    }
}

/// The admin (operator) of the TSM, authenticated by the admin token of the configuration.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Admin;

impl Admin {
    pub fn audit(&self, action: &str, object_type: &str, object_id: impl ToString, provider: Option<ProviderId>, detail: Option<serde_json::Value>) -> NewAuditEntry {
        NewAuditEntry { actor: "admin".into(), provider_id: provider, action: action.into(), object_type: object_type.into(), object_id: object_id.to_string(), detail }
    }
}

impl FromRequestParts<AppState> for Admin {
    type Rejection = ApiError;
    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Self::Rejection> {
        let token = bearer(&parts.headers)?;
        let Some(expected) = &state.api.admin_token_hash else {
            return Err(ApiError::unauthorized("auth.invalid_token", "the admin API is disabled (no api.admin_token configured)"));
        };
        if ct_eq(token_hash(token).as_bytes(), expected.as_bytes()) { Ok(Admin) } else { Err(invalid_token()) }
    }
}

fn ct_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// A short-term bearer token.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct AccessToken {
    /// Send as `Authorization: Bearer <accessToken>`.
    pub access_token: String,
    #[schema(example = "Bearer")]
    pub token_type: String,
    /// Lifetime in seconds.
    pub expires_in: u64,
    /// Expiry, Unix milliseconds.
    pub expires_at: i64,
}

/// Exchange the long-term token (`Authorization: Bearer <long-term token>`) for a short-term
/// bearer token.
#[utoipa::path(post, path = "/api/v1/auth", tag = "auth",
    security(("longTermToken" = [])),
    responses(
        (status = 200, description = "A short-term bearer token", body = AccessToken),
        (status = 401, description = "`auth.missing_token`, `auth.invalid_token`", body = super::error::ErrorBody),
    ))]
pub async fn create_access_token(State(state): State<AppState>, headers: axum::http::HeaderMap) -> ApiResult<(StatusCode, axum::Json<AccessToken>)> {
    let token = bearer(&headers)?;
    let now = now_ms();
    let lt = state.store.api_tokens().find_live_by_hash(&token_hash(token), now).await?.ok_or_else(invalid_token)?;
    if lt.label != LONG_TERM {
        return Err(ApiError::unauthorized("auth.invalid_token", "POST /api/v1/auth takes the long-term token"));
    }
    let ttl = state.api.token_ttl();
    let access = new_token("tsm_st_")?;
    let expires_at = now + ttl.as_millis() as i64;
    state
        .store
        .api_tokens()
        .create(&ApiToken {
            id: TokenId::new(),
            provider_id: lt.provider_id,
            label: SHORT_TERM.into(),
            token_hash: token_hash(&access),
            created_at: now,
            expires_at: Some(expires_at),
            revoked_at: None,
            last_used_at: None,
        })
        .await?;
    state.store.api_tokens().touch(lt.id, now).await?;
    tracing::info!(provider = %lt.provider_id, "short-term token issued");
    Ok((StatusCode::OK, axum::Json(AccessToken { access_token: access, token_type: "Bearer".into(), expires_in: ttl.as_secs(), expires_at })))
}

/// Creates a long-term token for a provider; returns the token (shown once).
pub async fn issue_long_term(state: &AppState, provider: ProviderId) -> ApiResult<String> {
    let token = new_token("tsm_lt_")?;
    state
        .store
        .api_tokens()
        .create(&ApiToken {
            id: TokenId::new(),
            provider_id: provider,
            label: LONG_TERM.into(),
            token_hash: token_hash(&token),
            created_at: now_ms(),
            expires_at: None,
            revoked_at: None,
            last_used_at: None,
        })
        .await?;
    Ok(token)
}
