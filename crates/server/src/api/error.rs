//! API errors: every error answer is JSON `{"code": "...", "message": "..."}` with a stable
//! dotted code and the matching HTTP status. Also the JSON body extractor whose rejections
//! (malformed JSON, wrong content type, unknown fields, body too large) map to such errors.

use crate::keys::KeyStoreError;
use crate::store::StoreError;
use crate::app::AppState;
use axum::extract::{FromRequest, Request};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use serde::de::DeserializeOwned;
use utoipa::ToSchema;

/// The body of every error answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, serde::Deserialize, ToSchema)]
pub struct ErrorBody {
    /// Stable machine-readable code, e.g. `sp.not_found`, `cap.truncated`.
    #[schema(example = "sp.not_found")]
    pub code: String,
    /// What was wrong, for a developer.
    pub message: String,
}

/// An error answer: status, code and message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiError {
    pub status: StatusCode,
    pub code: &'static str,
    pub message: String,
}

impl std::fmt::Display for ApiError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {}: {}", self.status.as_u16(), self.code, self.message)
    }
}

impl std::error::Error for ApiError {}

pub type ApiResult<T> = Result<T, ApiError>;

impl ApiError {
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        ApiError { status, code, message: message.into() }
    }
    /// `404 sp.not_found`: also what another provider's ids answer (never 403, so that ids
    /// of other tenants cannot be probed).
    pub fn not_found(what: &str) -> Self {
        Self::new(StatusCode::NOT_FOUND, "sp.not_found", format!("{what} not found"))
    }
    pub fn invalid(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "request.invalid", message)
    }
    pub fn conflict(code: &'static str, message: impl Into<String>) -> Self {
        Self::new(StatusCode::CONFLICT, code, message)
    }
    pub fn unprocessable(code: &'static str, message: impl Into<String>) -> Self {
        Self::new(StatusCode::UNPROCESSABLE_ENTITY, code, message)
    }
    pub fn unauthorized(code: &'static str, message: impl Into<String>) -> Self {
        Self::new(StatusCode::UNAUTHORIZED, code, message)
    }
    pub fn internal(code: &'static str, message: impl Into<String>) -> Self {
        Self::new(StatusCode::INTERNAL_SERVER_ERROR, code, message)
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        if self.status.is_server_error() {
            tracing::error!(code = self.code, message = %self.message, "request failed");
        } else {
            tracing::debug!(code = self.code, status = self.status.as_u16(), "request refused");
        }
        let mut r = (self.status, axum::Json(ErrorBody { code: self.code.to_string(), message: self.message })).into_response();
        if self.status == StatusCode::UNAUTHORIZED {
            r.headers_mut().insert(axum::http::header::WWW_AUTHENTICATE, axum::http::HeaderValue::from_static("Bearer"));
        }
        r
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        match &e {
            StoreError::NotFound { entity, .. } => ApiError::not_found(entity),
            StoreError::Conflict { entity, .. } => ApiError::conflict("sp.conflict", format!("{entity}: an object with the same name, AID or version exists")),
            StoreError::Reference { entity, .. } => {
                ApiError::conflict("sp.in_use", format!("{entity}: it refers to an object that does not exist, or other objects still refer to it"))
            }
            StoreError::VersionConflict { entity, .. } => ApiError::conflict("sp.concurrent_update", format!("{entity} was changed concurrently; retry")),
            StoreError::Invalid(m) => ApiError::invalid(m.clone()),
            // Database details stay in the server log.
            _ => {
                tracing::error!(code = e.code(), error = %e, "store error");
                ApiError::internal("internal.store", "the database failed; the request was not carried out")
            }
        }
    }
}

impl From<KeyStoreError> for ApiError {
    fn from(e: KeyStoreError) -> Self {
        match &e {
            KeyStoreError::InvalidValue { .. } | KeyStoreError::InvalidKeyId { .. } => ApiError::invalid(e.to_string()),
            KeyStoreError::AlreadyExists(_) => ApiError::conflict("keys.already_exists", e.to_string()),
            _ => {
                tracing::error!(code = e.code(), error = %e, "key store error");
                ApiError::internal("internal.keys", format!("the key store failed ({})", e.code()))
            }
        }
    }
}

impl From<tsm_gp::cap::CapError> for ApiError {
    fn from(e: tsm_gp::cap::CapError) -> Self {
        ApiError::new(StatusCode::BAD_REQUEST, e.code(), e.to_string())
    }
}

impl From<crate::domain::DomainError> for ApiError {
    fn from(e: crate::domain::DomainError) -> Self {
        ApiError::invalid(e.to_string())
    }
}

/// A body that could not be read: too large, or the connection broke.
pub fn body_rejection(status: StatusCode, text: String) -> ApiError {
    if status == StatusCode::PAYLOAD_TOO_LARGE {
        ApiError::new(status, "request.too_large", "the request body is larger than this endpoint accepts")
    } else {
        ApiError::new(status, "request.body", text)
    }
}

/// A JSON body (`Content-Type: application/json`, at most `api.json_max_bytes`), parsed
/// with serde: syntax errors are `400 request.malformed_json`, a body that does not fit the
/// type (missing or unknown fields, wrong types) `400 request.invalid`, another content type
/// `415 request.unsupported_media_type`, a larger body `413 request.too_large`.
#[derive(Debug, Clone, Copy, Default)]
pub struct ApiJson<T>(pub T);

impl<T: DeserializeOwned> FromRequest<AppState> for ApiJson<T> {
    type Rejection = ApiError;
    async fn from_request(req: Request, state: &AppState) -> Result<Self, Self::Rejection> {
        let ctype = req.headers().get(axum::http::header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).unwrap_or("");
        let mime = ctype.split(';').next().unwrap_or("").trim().to_ascii_lowercase();
        if mime != "application/json" && !(mime.starts_with("application/") && mime.ends_with("+json")) {
            return Err(ApiError::new(StatusCode::UNSUPPORTED_MEDIA_TYPE, "request.unsupported_media_type", "expected Content-Type: application/json"));
        }
        let bytes = axum::body::to_bytes(req.into_body(), state.api.config.json_max_bytes)
            .await
            .map_err(|_| body_rejection(StatusCode::PAYLOAD_TOO_LARGE, String::new()))?;
        serde_json::from_slice(&bytes).map(ApiJson).map_err(|e| match e.classify() {
            serde_json::error::Category::Data => ApiError::invalid(format!("the JSON body does not fit: {e}")),
            _ => ApiError::new(StatusCode::BAD_REQUEST, "request.malformed_json", format!("the body is not valid JSON: {e}")),
        })
    }
}

impl<T: Serialize> IntoResponse for ApiJson<T> {
    fn into_response(self) -> Response {
        axum::Json(self.0).into_response()
    }
}

/// A path parameter parsed with `FromStr`; a malformed id answers `404 sp.not_found` (it
/// cannot name anything), not a 400 that would differ from an unknown id.
pub fn parse_id<T: std::str::FromStr>(s: &str, what: &str) -> ApiResult<T> {
    s.parse().map_err(|_| ApiError::not_found(what))
}
