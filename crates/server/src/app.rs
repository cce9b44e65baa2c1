//! The application state every HTTP handler and background worker shares: the store, the key
//! store, the configuration, this node's id, and two in-process signals (a wake-up for
//! long-polls, and shutdown).
//!
//! Nothing here is state a deployment needs to survive: the database is the only shared state
//! (`docs/design/server.md`, "Principles"). The [`AppState::wake`] notifier only shortens the
//! wait of a long-poll on *this* node when something it may care about was written here; a
//! long-poll must still poll the database, because the write may happen on another node.

use crate::config::{Config, ConfigError, SecretSource};
use crate::keys::KeyStore;
use crate::store::Store;
use serde::{Deserialize, Serialize};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{Notify, watch};
use zeroize::Zeroizing;

/// Shared state of one server node. Cheap to clone (everything is behind `Arc` or a pool).
#[derive(Clone)]
pub struct AppState {
    pub store: Store,
    pub keys: Arc<dyn KeyStore>,
    pub config: Arc<Config>,
    /// Settings of the HTTP APIs (see [`ApiConfig`]).
    pub api: Arc<ApiSettings>,
    /// This node's id (lease holders, logs).
    pub node_id: Arc<str>,
    /// Woken (`notify_waiters`) whenever this node queued or advanced a process, so that a
    /// SERAM long-poll held on this node re-reads the database at once.
    pub wake: Arc<Notify>,
    shutdown: watch::Receiver<bool>,
    shutdown_tx: Arc<watch::Sender<bool>>,
}

impl std::fmt::Debug for AppState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AppState").field("store", &self.store.url_redacted()).field("node_id", &self.node_id).finish_non_exhaustive()
    }
}

impl AppState {
    /// State over an open store and key store. `api` holds the resolved API settings.
    pub fn new(store: Store, keys: Arc<dyn KeyStore>, config: Arc<Config>, api: ApiSettings) -> AppState {
        let node_id: Arc<str> = config.node_id().into();
        let (tx, rx) = watch::channel(false);
        AppState { store, keys, config, api: Arc::new(api), node_id, wake: Arc::new(Notify::new()), shutdown: rx, shutdown_tx: Arc::new(tx) }
    }

    /// Wakes every task waiting on [`wake`](Self::wake) on this node.
    pub fn wake_all(&self) {
        self.wake.notify_waiters();
    }

    /// Starts the shutdown of this node's background work and long-polls (idempotent).
    pub fn begin_shutdown(&self) {
        let _ = self.shutdown_tx.send(true);
        self.wake.notify_waiters();
    }

    pub fn is_shutting_down(&self) -> bool {
        *self.shutdown.borrow()
    }

    /// Completes when the node begins shutting down: long-polls answer early, workers stop.
    pub async fn shutting_down(&self) {
        let mut rx = self.shutdown.clone();
        let _ = rx.wait_for(|s| *s).await;
    }
}

/// Redaction of passwords in database URLs, for logs.
trait UrlRedacted {
    fn url_redacted(&self) -> String;
}
impl UrlRedacted for Store {
    fn url_redacted(&self) -> String {
        redact_url(self.url())
    }
}

/// `scheme://user:password@host/...` → `scheme://user:***@host/...`.
pub fn redact_url(url: &str) -> String {
    if let Some((scheme, rest)) = url.split_once("://")
        && let Some((cred, host)) = rest.split_once('@')
        && let Some((user, _)) = cred.split_once(':')
    {
        return format!("{scheme}://{user}:***@{host}");
    }
    url.to_string()
}

/// Log output format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    #[default]
    Text,
    Json,
}

/// The `[api]` section: settings of the provider and admin APIs and of the HTTP server.
///
/// Kept here (not in [`Config`], whose sections are closed with `deny_unknown_fields`) until
/// `config.rs` grows an `[api]` section; `tsm serve` reads it from the same TOML file
/// ([`ApiConfig::split_from_toml`]) with `TSM_…` overrides ([`API_ENV_OVERRIDES`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ApiConfig {
    /// Source of the admin bearer token (`env:VAR` or `file:PATH`); unset: no admin API.
    #[serde(default)]
    pub admin_token: Option<String>,
    /// Lifetime of the short-term bearer tokens `POST /api/v1/auth` hands out.
    #[serde(default = "default_token_ttl")]
    pub token_ttl_seconds: u64,
    /// Largest accepted CAP upload (raw or multipart body).
    #[serde(default = "default_cap_max")]
    pub cap_max_bytes: usize,
    /// Largest accepted JSON request body.
    #[serde(default = "default_json_max")]
    pub json_max_bytes: usize,
    /// How long in-flight requests may take to finish after a shutdown signal.
    #[serde(default = "default_grace")]
    pub shutdown_grace_seconds: u64,
    /// Log format on stderr.
    #[serde(default)]
    pub log_format: LogFormat,
    /// Run the callbacks worker on this node.
    #[serde(default = "default_true")]
    pub callbacks_worker: bool,
    /// Allow `http://` callback URLs (tests, internal networks); default: `https://` only.
    #[serde(default)]
    pub allow_http_callbacks: bool,
}

fn default_token_ttl() -> u64 {
    3600
}
fn default_cap_max() -> usize {
    4 * 1024 * 1024
}
fn default_json_max() -> usize {
    1024 * 1024
}
fn default_grace() -> u64 {
    30
}
fn default_true() -> bool {
    true
}

impl Default for ApiConfig {
    fn default() -> Self {
        ApiConfig {
            admin_token: None,
            token_ttl_seconds: default_token_ttl(),
            cap_max_bytes: default_cap_max(),
            json_max_bytes: default_json_max(),
            shutdown_grace_seconds: default_grace(),
            log_format: LogFormat::Text,
            callbacks_worker: true,
            allow_http_callbacks: false,
        }
    }
}

/// Environment overrides of `[api]` (same rules as `config::ENV_OVERRIDES`).
pub const API_ENV_OVERRIDES: &[(&str, &str)] = &[
    ("TSM_ADMIN_TOKEN_SOURCE", "admin_token"),
    ("TSM_API_TOKEN_TTL_SECONDS", "token_ttl_seconds"),
    ("TSM_API_CAP_MAX_BYTES", "cap_max_bytes"),
    ("TSM_API_JSON_MAX_BYTES", "json_max_bytes"),
    ("TSM_SHUTDOWN_GRACE_SECONDS", "shutdown_grace_seconds"),
    ("TSM_LOG_FORMAT", "log_format"),
    ("TSM_CALLBACKS_WORKER", "callbacks_worker"),
    ("TSM_ALLOW_HTTP_CALLBACKS", "allow_http_callbacks"),
];

impl ApiConfig {
    /// Takes the `[api]` table out of a TOML document (so that the rest parses as [`Config`]),
    /// applies the `TSM_…` overrides from `env` and validates. Returns the settings and the
    /// remaining TOML text.
    pub fn split_from_toml(text: &str, env: impl Fn(&str) -> Option<String>) -> Result<(ApiConfig, String), ConfigError> {
        let mut root: toml::Table = text.parse().map_err(|e: toml::de::Error| ConfigError::Parse { origin: "configuration".into(), message: e.to_string() })?;
        let mut api = match root.remove("api") {
            Some(toml::Value::Table(t)) => t,
            Some(_) => return Err(invalid("api", "must be a table ([api])")),
            None => toml::Table::new(),
        };
        for (var, key) in API_ENV_OVERRIDES {
            let Some(raw) = env(var) else { continue };
            let v = match *key {
                "admin_token" | "log_format" => toml::Value::String(raw),
                "callbacks_worker" | "allow_http_callbacks" => toml::Value::Boolean(match raw.trim() {
                    "1" | "true" | "yes" => true,
                    "0" | "false" | "no" => false,
                    _ => return Err(invalid(format!("{var} (api.{key})"), format!("{raw:?} is not a boolean"))),
                }),
                _ => toml::Value::Integer(raw.trim().parse().map_err(|_| invalid(format!("{var} (api.{key})"), format!("{raw:?} is not an integer")))?),
            };
            api.insert(key.to_string(), v);
        }
        // `TSM_ADMIN_TOKEN` alone (the common case) is the default source.
        if !api.contains_key("admin_token") && env("TSM_ADMIN_TOKEN").is_some() {
            api.insert("admin_token".into(), toml::Value::String("env:TSM_ADMIN_TOKEN".into()));
        }
        let cfg = ApiConfig::deserialize(toml::Value::Table(api)).map_err(|e| ConfigError::Parse { origin: "[api]".into(), message: e.to_string() })?;
        cfg.validate()?;
        let rest = toml::to_string(&root).map_err(|e| ConfigError::Parse { origin: "configuration".into(), message: e.to_string() })?;
        Ok((cfg, rest))
    }

    pub fn validate(&self) -> Result<(), ConfigError> {
        if let Some(s) = &self.admin_token {
            SecretSource::parse("api.admin_token", s)?;
        }
        if !(60..=86_400).contains(&self.token_ttl_seconds) {
            return Err(invalid("api.token_ttl_seconds", "must be 60 to 86400"));
        }
        if !(1024..=256 * 1024 * 1024).contains(&self.cap_max_bytes) {
            return Err(invalid("api.cap_max_bytes", "must be 1 KiB to 256 MiB"));
        }
        if !(1024..=64 * 1024 * 1024).contains(&self.json_max_bytes) {
            return Err(invalid("api.json_max_bytes", "must be 1 KiB to 64 MiB"));
        }
        if self.shutdown_grace_seconds > 600 {
            return Err(invalid("api.shutdown_grace_seconds", "at most 600"));
        }
        Ok(())
    }

    /// Resolves the admin token source into its hash.
    pub fn resolve(&self) -> Result<ApiSettings, ConfigError> {
        let admin_token_hash = match &self.admin_token {
            Some(s) => {
                let raw = SecretSource::parse("api.admin_token", s)?.resolve("api.admin_token")?;
                let text = Zeroizing::new(String::from_utf8_lossy(&raw).trim().to_string());
                if text.len() < 16 {
                    return Err(invalid("api.admin_token", "the admin token must have at least 16 characters"));
                }
                Some(token_hash(&text))
            }
            None => None,
        };
        Ok(ApiSettings { config: self.clone(), admin_token_hash })
    }
}

fn invalid(key: impl Into<String>, message: impl Into<String>) -> ConfigError {
    ConfigError::Invalid { key: key.into(), message: message.into() }
}

/// [`ApiConfig`] with its secret resolved (only a hash of the admin token is kept).
#[derive(Debug, Clone, Default)]
pub struct ApiSettings {
    pub config: ApiConfig,
    /// SHA-256 (hex) of the admin token; `None`: the admin API answers 401 to everyone.
    pub admin_token_hash: Option<String>,
}

impl ApiSettings {
    /// Settings for tests: an admin token given in clear.
    pub fn with_admin_token(config: ApiConfig, admin_token: &str) -> ApiSettings {
        ApiSettings { config, admin_token_hash: Some(token_hash(admin_token)) }
    }
    pub fn token_ttl(&self) -> Duration {
        Duration::from_secs(self.config.token_ttl_seconds)
    }
}

/// The hash under which a bearer token is stored and looked up: SHA-256, lower-case hex.
/// Tokens are 256-bit random values, so an unsalted hash suffices (no dictionary to attack).
pub fn token_hash(token: &str) -> String {
    tsm_gp::hex::encode(&tsm_gp::crypto::sha256(token.as_bytes())).to_ascii_lowercase()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn api_section_split_and_overrides() {
        let text = "[server]\nlisten = \"127.0.0.1:1\"\n[api]\ntoken_ttl_seconds = 120\nlog_format = \"json\"\n";
        let (api, rest) = ApiConfig::split_from_toml(text, |k| (k == "TSM_API_CAP_MAX_BYTES").then(|| "2048".to_string())).unwrap();
        assert_eq!(api.token_ttl_seconds, 120);
        assert_eq!(api.log_format, LogFormat::Json);
        assert_eq!(api.cap_max_bytes, 2048);
        assert!(!rest.contains("api"), "{rest}");
        assert!(rest.contains("listen"));
        let e = ApiConfig::split_from_toml("[api]\ntoken_ttl = 1\n", |_| None).unwrap_err();
        assert_eq!(e.code(), "config.parse");
        let e = ApiConfig::split_from_toml("[api]\nadmin_token = \"secret\"\n", |_| None).unwrap_err();
        assert_eq!(e.code(), "config.invalid");
        let (api, _) = ApiConfig::split_from_toml("", |k| (k == "TSM_ADMIN_TOKEN").then(|| "x".repeat(20))).unwrap();
        assert_eq!(api.admin_token.as_deref(), Some("env:TSM_ADMIN_TOKEN"));
    }

    #[test]
    fn redaction() {
        assert_eq!(redact_url("postgres://u:pw@h:5432/db"), "postgres://u:***@h:5432/db");
        assert_eq!(redact_url("sqlite://x.db"), "sqlite://x.db");
    }
}
