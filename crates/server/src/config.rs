//! Server configuration: a TOML file (`docs/configuration.md`, `examples/tsm.toml`) with
//! `TSM_…` environment overrides, validated as a whole before anything starts.
//!
//! Secrets never appear in the file: the software store's master key and the PKCS#11 PIN are
//! *sources* (`env:VARIABLE` or `file:PATH`), resolved when the key store is opened.
//! Environment overrides replace the file's value of one key each (see [`ENV_OVERRIDES`]);
//! the two secret keys take a source there too (`TSM_KEYS_MASTER=file:/run/secrets/master`).

use crate::keys::{KeyStore, KeyStoreError, Pkcs11KeyStore, Pkcs11Options, SoftwareKeyStore, software::parse_master_key};
use crate::store::DbKind;
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use zeroize::Zeroizing;

/// Configuration errors. `Invalid` names the offending key (or environment variable).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    #[error("cannot read configuration file {path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
    #[error("configuration {origin}: {message}")]
    Parse { origin: String, message: String },
    #[error("invalid configuration: {key}: {message}")]
    Invalid { key: String, message: String },
    #[error("key store: {0}")]
    KeyStore(#[from] KeyStoreError),
}

impl ConfigError {
    pub fn code(&self) -> &'static str {
        match self {
            ConfigError::Io { .. } => "config.io",
            ConfigError::Parse { .. } => "config.parse",
            ConfigError::Invalid { .. } => "config.invalid",
            ConfigError::KeyStore(_) => "config.key_store",
        }
    }
    fn invalid(key: impl Into<String>, message: impl Into<String>) -> Self {
        ConfigError::Invalid { key: key.into(), message: message.into() }
    }
}

/// The whole configuration.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct Config {
    #[serde(default)]
    pub server: ServerConfig,
    #[serde(default)]
    pub database: DatabaseConfig,
    #[serde(default)]
    pub keys: KeysConfig,
    #[serde(default)]
    pub seram: SeramConfig,
    #[serde(default)]
    pub callbacks: CallbacksConfig,
    #[serde(default)]
    pub planner: PlannerConfig,
}

/// `[server]`
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServerConfig {
    /// Socket address to listen on.
    #[serde(default = "default_listen")]
    pub listen: String,
    /// TLS certificate chain and private key (PEM); both or neither. Without them the server
    /// speaks plain HTTP (behind a TLS-terminating proxy, or in tests).
    pub tls_cert: Option<PathBuf>,
    pub tls_key: Option<PathBuf>,
    /// CA certificates (PEM) whose client certificates are accepted (mutual TLS), optional.
    pub tls_client_ca: Option<PathBuf>,
    /// This node's name in lease holders and logs; default: the host name, else random.
    pub node_id: Option<String>,
}

fn default_listen() -> String {
    "127.0.0.1:8443".into()
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig { listen: default_listen(), tls_cert: None, tls_key: None, tls_client_ca: None, node_id: None }
    }
}

/// `[database]`
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DatabaseConfig {
    /// `sqlite://PATH?mode=rwc` (one node) or `postgres://user@host:port/db` (production).
    #[serde(default = "default_db_url")]
    pub url: String,
    #[serde(default = "default_max_connections")]
    pub max_connections: u32,
}

fn default_db_url() -> String {
    "sqlite://tsm.db?mode=rwc".into()
}
fn default_max_connections() -> u32 {
    10
}

impl Default for DatabaseConfig {
    fn default() -> Self {
        DatabaseConfig { url: default_db_url(), max_connections: default_max_connections() }
    }
}

/// `[keys]`: where static keys live.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase", deny_unknown_fields)]
pub enum KeysConfig {
    /// Sealed values in the database under a 32-byte master key.
    Software {
        /// Source of the master key (64 hex digits or 32 raw bytes): `env:VAR` or `file:PATH`.
        #[serde(default = "default_master")]
        master: String,
    },
    /// Token objects in a PKCS#11 module.
    Pkcs11 {
        /// Path of the PKCS#11 module (e.g. `/usr/lib/softhsm/libsofthsm2.so`).
        module: PathBuf,
        /// Token label (the slot is found by label).
        token: String,
        /// Source of the user PIN: `env:VAR` or `file:PATH`.
        pin: String,
        /// Wrap through process memory where the token cannot wrap as GP requires.
        #[serde(default)]
        allow_clear_rewrap: bool,
        /// Let several threads use the token at once (thread-safe HSM modules only).
        #[serde(default)]
        concurrent_sessions: bool,
    },
}

fn default_master() -> String {
    "env:TSM_MASTER_KEY".into()
}

impl Default for KeysConfig {
    fn default() -> Self {
        KeysConfig::Software { master: default_master() }
    }
}

/// `[seram]`: the device API's timers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SeramConfig {
    /// How long `remoteManagement` holds a request with nothing to do (0–30 s).
    #[serde(default = "default_long_poll")]
    pub long_poll_seconds: u64,
    /// Pause before answering an order (milliseconds; throttling, tests).
    #[serde(default)]
    pub order_delay_ms: u64,
    /// Lifetime of an SE lease; the engine renews it while it works.
    #[serde(default = "default_lease_ttl")]
    pub lease_ttl_seconds: u64,
    /// A session without activity for this long is expired.
    #[serde(default = "default_session_idle")]
    pub session_idle_seconds: u64,
}

fn default_long_poll() -> u64 {
    25
}
fn default_lease_ttl() -> u64 {
    60
}
fn default_session_idle() -> u64 {
    900
}

impl Default for SeramConfig {
    fn default() -> Self {
        SeramConfig { long_poll_seconds: default_long_poll(), order_delay_ms: 0, lease_ttl_seconds: default_lease_ttl(), session_idle_seconds: default_session_idle() }
    }
}

/// `[callbacks]`: delivery of process results to providers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CallbacksConfig {
    /// Attempts before giving up (the entry stays in the outbox, undelivered).
    #[serde(default = "default_attempts")]
    pub max_attempts: u32,
    /// First retry delay; doubled per attempt up to `max_backoff_ms`.
    #[serde(default = "default_initial_backoff")]
    pub initial_backoff_ms: u64,
    #[serde(default = "default_max_backoff")]
    pub max_backoff_ms: u64,
    /// Timeout of one HTTP attempt.
    #[serde(default = "default_timeout")]
    pub timeout_ms: u64,
}

fn default_attempts() -> u32 {
    10
}
fn default_initial_backoff() -> u64 {
    1_000
}
fn default_max_backoff() -> u64 {
    600_000
}
fn default_timeout() -> u64 {
    10_000
}

impl Default for CallbacksConfig {
    fn default() -> Self {
        CallbacksConfig { max_attempts: default_attempts(), initial_backoff_ms: default_initial_backoff(), max_backoff_ms: default_max_backoff(), timeout_ms: default_timeout() }
    }
}

impl CallbacksConfig {
    /// The delay before attempt `n + 1` after `n` failed attempts (n ≥ 1).
    pub fn backoff_ms(&self, failed_attempts: u32) -> u64 {
        let shift = failed_attempts.saturating_sub(1).min(32);
        self.initial_backoff_ms.saturating_mul(1u64 << shift).min(self.max_backoff_ms)
    }
}

/// `[planner]`: how operations become APDU batches.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PlannerConfig {
    /// The naive baseline of the deployment benchmark: every APDU in its own round trip to the
    /// phone, the handshake never predicted (`PlanOptions::one_apdu_per_round_trip`). Never
    /// for production: it multiplies the round trips of every operation.
    #[serde(default)]
    pub one_apdu_per_round_trip: bool,
}

/// The kind of value an environment override carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EnvKind {
    Text,
    Integer,
    Boolean,
}

/// Every environment override: variable, configuration key (`section.key`), value kind.
pub const ENV_OVERRIDES: &[(&str, &str, EnvKind)] = &[
    ("TSM_LISTEN", "server.listen", EnvKind::Text),
    ("TSM_NODE_ID", "server.node_id", EnvKind::Text),
    ("TSM_TLS_CERT", "server.tls_cert", EnvKind::Text),
    ("TSM_TLS_KEY", "server.tls_key", EnvKind::Text),
    ("TSM_TLS_CLIENT_CA", "server.tls_client_ca", EnvKind::Text),
    ("TSM_DATABASE_URL", "database.url", EnvKind::Text),
    ("TSM_DATABASE_MAX_CONNECTIONS", "database.max_connections", EnvKind::Integer),
    ("TSM_KEYS_KIND", "keys.kind", EnvKind::Text),
    ("TSM_KEYS_MASTER", "keys.master", EnvKind::Text),
    ("TSM_PKCS11_MODULE", "keys.module", EnvKind::Text),
    ("TSM_PKCS11_TOKEN", "keys.token", EnvKind::Text),
    ("TSM_PKCS11_PIN", "keys.pin", EnvKind::Text),
    ("TSM_PKCS11_ALLOW_CLEAR_REWRAP", "keys.allow_clear_rewrap", EnvKind::Boolean),
    ("TSM_PKCS11_CONCURRENT_SESSIONS", "keys.concurrent_sessions", EnvKind::Boolean),
    ("TSM_SERAM_LONG_POLL_SECONDS", "seram.long_poll_seconds", EnvKind::Integer),
    ("TSM_SERAM_ORDER_DELAY_MS", "seram.order_delay_ms", EnvKind::Integer),
    ("TSM_SERAM_LEASE_TTL_SECONDS", "seram.lease_ttl_seconds", EnvKind::Integer),
    ("TSM_SERAM_SESSION_IDLE_SECONDS", "seram.session_idle_seconds", EnvKind::Integer),
    ("TSM_CALLBACKS_MAX_ATTEMPTS", "callbacks.max_attempts", EnvKind::Integer),
    ("TSM_CALLBACKS_INITIAL_BACKOFF_MS", "callbacks.initial_backoff_ms", EnvKind::Integer),
    ("TSM_CALLBACKS_MAX_BACKOFF_MS", "callbacks.max_backoff_ms", EnvKind::Integer),
    ("TSM_CALLBACKS_TIMEOUT_MS", "callbacks.timeout_ms", EnvKind::Integer),
    ("TSM_PLANNER_ONE_APDU_PER_ROUND_TRIP", "planner.one_apdu_per_round_trip", EnvKind::Boolean),
];

/// A secret's source: `env:VARIABLE` or `file:PATH`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SecretSource {
    Env(String),
    File(PathBuf),
}

impl SecretSource {
    /// Parses a source; `key` names the setting in errors. A literal secret is refused.
    pub fn parse(key: &str, s: &str) -> Result<Self, ConfigError> {
        if let Some(v) = s.strip_prefix("env:").filter(|v| !v.is_empty()) {
            Ok(SecretSource::Env(v.to_string()))
        } else if let Some(p) = s.strip_prefix("file:").filter(|p| !p.is_empty()) {
            Ok(SecretSource::File(PathBuf::from(p)))
        } else {
            Err(ConfigError::invalid(key, "expected env:VARIABLE or file:PATH (secrets are never written into the configuration)"))
        }
    }

    /// The secret's bytes (a file's content as is; an environment variable's value).
    pub fn resolve(&self, key: &str) -> Result<Zeroizing<Vec<u8>>, ConfigError> {
        match self {
            SecretSource::Env(v) => std::env::var(v)
                .map(|s| Zeroizing::new(s.into_bytes()))
                .map_err(|_| ConfigError::invalid(key, format!("environment variable {v} is not set"))),
            SecretSource::File(p) => std::fs::read(p).map(Zeroizing::new).map_err(|e| ConfigError::invalid(key, format!("cannot read {}: {e}", p.display()))),
        }
    }
}

fn set_path(root: &mut toml::Table, path: &str, value: toml::Value) {
    let (section, key) = path.split_once('.').expect("section.key");
    let entry = root.entry(section.to_string()).or_insert_with(|| toml::Value::Table(toml::Table::new()));
    if !entry.is_table() {
        *entry = toml::Value::Table(toml::Table::new());
    }
    entry.as_table_mut().expect("table").insert(key.to_string(), value);
}

impl Config {
    /// Reads `path` (if given; otherwise every setting has its default), applies the process
    /// environment's overrides and validates.
    pub fn load(path: Option<&Path>) -> Result<Config, ConfigError> {
        let text = match path {
            Some(p) => std::fs::read_to_string(p).map_err(|source| ConfigError::Io { path: p.to_path_buf(), source })?,
            None => String::new(),
        };
        let origin = path.map(|p| p.display().to_string()).unwrap_or_else(|| "defaults".into());
        Self::from_toml_with_env(&text, &origin, |k| std::env::var(k).ok())
    }

    /// Parses TOML text, applies overrides from `env` and validates.
    pub fn from_toml_with_env(text: &str, origin: &str, env: impl Fn(&str) -> Option<String>) -> Result<Config, ConfigError> {
        let mut root: toml::Table = text.parse().map_err(|e: toml::de::Error| ConfigError::Parse { origin: origin.to_string(), message: e.to_string() })?;
        for (var, path, kind) in ENV_OVERRIDES {
            let Some(raw) = env(var) else { continue };
            let key = format!("{var} ({path})");
            let value = match kind {
                EnvKind::Text => toml::Value::String(raw),
                EnvKind::Integer => toml::Value::Integer(raw.trim().parse().map_err(|_| ConfigError::invalid(&key, format!("{raw:?} is not an integer")))?),
                EnvKind::Boolean => toml::Value::Boolean(match raw.trim() {
                    "1" | "true" | "yes" => true,
                    "0" | "false" | "no" => false,
                    _ => return Err(ConfigError::invalid(&key, format!("{raw:?} is not a boolean (true/false)"))),
                }),
            };
            set_path(&mut root, path, value);
        }
        let config = Config::deserialize(toml::Value::Table(root)).map_err(|e| ConfigError::Parse { origin: origin.to_string(), message: e.to_string() })?;
        config.validate()?;
        Ok(config)
    }

    /// Checks every value; the error names the key.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let s = &self.server;
        s.listen.parse::<std::net::SocketAddr>().map_err(|e| ConfigError::invalid("server.listen", format!("{:?}: {e} (expected host:port, e.g. 0.0.0.0:8443)", s.listen)))?;
        match (&s.tls_cert, &s.tls_key) {
            (Some(_), None) => return Err(ConfigError::invalid("server.tls_key", "required when server.tls_cert is set")),
            (None, Some(_)) => return Err(ConfigError::invalid("server.tls_cert", "required when server.tls_key is set")),
            _ => {}
        }
        if s.tls_client_ca.is_some() && s.tls_cert.is_none() {
            return Err(ConfigError::invalid("server.tls_client_ca", "mutual TLS needs server.tls_cert and server.tls_key"));
        }
        if let Some(n) = &s.node_id {
            valid_node_id(n).map_err(|m| ConfigError::invalid("server.node_id", m))?;
        }
        DbKind::from_url(&self.database.url).map_err(|_| ConfigError::invalid("database.url", format!("{:?}: use sqlite://PATH?mode=rwc or postgres://user@host:port/db", redact_url(&self.database.url))))?;
        if !(1..=1000).contains(&self.database.max_connections) {
            return Err(ConfigError::invalid("database.max_connections", "must be 1 to 1000"));
        }
        match &self.keys {
            KeysConfig::Software { master } => {
                SecretSource::parse("keys.master", master)?;
            }
            KeysConfig::Pkcs11 { module, token, pin, .. } => {
                if module.as_os_str().is_empty() {
                    return Err(ConfigError::invalid("keys.module", "the PKCS#11 module path is empty"));
                }
                if token.trim().is_empty() {
                    return Err(ConfigError::invalid("keys.token", "the token label is empty"));
                }
                SecretSource::parse("keys.pin", pin)?;
            }
        }
        if self.seram.long_poll_seconds > 30 {
            return Err(ConfigError::invalid("seram.long_poll_seconds", format!("{} s is above the 30 s maximum", self.seram.long_poll_seconds)));
        }
        if self.seram.order_delay_ms > 60_000 {
            return Err(ConfigError::invalid("seram.order_delay_ms", "at most 60000"));
        }
        if self.seram.lease_ttl_seconds == 0 {
            return Err(ConfigError::invalid("seram.lease_ttl_seconds", "must be at least 1"));
        }
        if self.seram.session_idle_seconds == 0 {
            return Err(ConfigError::invalid("seram.session_idle_seconds", "must be at least 1"));
        }
        let c = &self.callbacks;
        if c.max_attempts == 0 {
            return Err(ConfigError::invalid("callbacks.max_attempts", "must be at least 1"));
        }
        if c.initial_backoff_ms == 0 {
            return Err(ConfigError::invalid("callbacks.initial_backoff_ms", "must be at least 1"));
        }
        if c.max_backoff_ms < c.initial_backoff_ms {
            return Err(ConfigError::invalid("callbacks.max_backoff_ms", "must not be below callbacks.initial_backoff_ms"));
        }
        if c.timeout_ms == 0 {
            return Err(ConfigError::invalid("callbacks.timeout_ms", "must be at least 1"));
        }
        Ok(())
    }

    /// `server.listen` as a socket address (validated).
    pub fn listen_addr(&self) -> std::net::SocketAddr {
        self.server.listen.parse().expect("validated")
    }

    /// This node's id: `server.node_id`, else the host name, else `node-<random>`.
    pub fn node_id(&self) -> String {
        if let Some(n) = &self.server.node_id {
            return n.clone();
        }
        let host = std::fs::read_to_string("/etc/hostname").ok().map(|h| h.trim().to_string());
        match host.filter(|h| valid_node_id(h).is_ok()) {
            Some(h) => h,
            None => format!("node-{}", &uuid::Uuid::new_v4().simple().to_string()[..8]),
        }
    }

    /// Opens the configured key store (resolving its secret). The software store uses
    /// `database.url` (its `key_material` table must be migrated).
    pub fn open_key_store(&self) -> Result<Arc<dyn KeyStore>, ConfigError> {
        match &self.keys {
            KeysConfig::Software { master } => {
                let raw = SecretSource::parse("keys.master", master)?.resolve("keys.master")?;
                let key = parse_master_key(&raw).map_err(|_| ConfigError::invalid("keys.master", "the master key must be 64 hex digits or 32 raw bytes"))?;
                Ok(Arc::new(SoftwareKeyStore::connect(&self.database.url, key)?))
            }
            KeysConfig::Pkcs11 { module, token, pin, allow_clear_rewrap, concurrent_sessions } => {
                let raw = SecretSource::parse("keys.pin", pin)?.resolve("keys.pin")?;
                let text = Zeroizing::new(String::from_utf8(raw.to_vec()).map_err(|_| ConfigError::invalid("keys.pin", "the PIN is not UTF-8"))?);
                let pin = text.trim_end_matches(['\r', '\n']);
                Ok(Arc::new(Pkcs11KeyStore::open(module, token, pin, Pkcs11Options { allow_clear_rewrap: *allow_clear_rewrap, concurrent_sessions: *concurrent_sessions })?))
            }
        }
    }
}

fn valid_node_id(n: &str) -> Result<(), String> {
    if !n.is_empty() && n.len() <= 64 && n.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-')) {
        Ok(())
    } else {
        Err(format!("{n:?}: 1-64 characters of A-Z a-z 0-9 . _ -"))
    }
}

/// A database URL without its password, for messages.
fn redact_url(url: &str) -> String {
    match (url.find("://"), url.find('@')) {
        (Some(s), Some(at)) if at > s => {
            let userinfo = &url[s + 3..at];
            match userinfo.split_once(':') {
                Some((user, _)) => format!("{}{user}:***{}", &url[..s + 3], &url[at..]),
                None => url.to_string(),
            }
        }
        _ => url.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn parse(text: &str, env: &[(&str, &str)]) -> Result<Config, ConfigError> {
        let env: HashMap<String, String> = env.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        Config::from_toml_with_env(text, "test", |k| env.get(k).cloned())
    }

    fn invalid_key(r: Result<Config, ConfigError>) -> String {
        match r {
            Err(ConfigError::Invalid { key, .. }) => key,
            other => panic!("expected config.invalid, got {other:?}"),
        }
    }

    #[test]
    fn defaults() {
        let c = parse("", &[]).unwrap();
        assert_eq!(c, Config::default());
        assert_eq!(c.database.url, "sqlite://tsm.db?mode=rwc");
        assert_eq!(c.seram.long_poll_seconds, 25);
        assert_eq!(c.keys, KeysConfig::Software { master: "env:TSM_MASTER_KEY".into() });
        assert_eq!(c.listen_addr().port(), 8443);
    }

    #[test]
    fn the_example_file_is_valid() {
        let text = std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/tsm.toml")).unwrap();
        let c = parse(&text, &[]).unwrap();
        assert!(c.database.url.starts_with("postgres://"));
        assert!(matches!(c.keys, KeysConfig::Pkcs11 { .. }));
    }

    #[test]
    fn environment_overrides() {
        let env = [
            ("TSM_DATABASE_URL", "postgres://postgres@127.0.0.1:5432/tsm"),
            ("TSM_LISTEN", "0.0.0.0:9000"),
            ("TSM_SERAM_LONG_POLL_SECONDS", "5"),
            ("TSM_KEYS_KIND", "pkcs11"),
            ("TSM_PKCS11_MODULE", "/usr/lib/softhsm/libsofthsm2.so"),
            ("TSM_PKCS11_TOKEN", "tsm"),
            ("TSM_PKCS11_PIN", "file:/run/secrets/pin"),
            ("TSM_PKCS11_ALLOW_CLEAR_REWRAP", "true"),
        ];
        let c = parse("[database]\nurl = \"sqlite://a.db\"\n[keys]\nkind = \"software\"\nmaster = \"env:X\"\n", &env);
        // keys.master from the file is not a pkcs11 field: switching the kind needs the file's
        // software-only key gone, and serde says which.
        assert!(matches!(c, Err(ConfigError::Parse { ref message, .. }) if message.contains("master")), "{c:?}");
        // The same environment without the file's software-only key.
        let c = parse("[database]\nurl = \"sqlite://a.db\"\n", &env).unwrap();
        assert_eq!(c.database.url, "postgres://postgres@127.0.0.1:5432/tsm");
        assert_eq!(c.server.listen, "0.0.0.0:9000");
        assert_eq!(c.seram.long_poll_seconds, 5);
        assert_eq!(
            c.keys,
            KeysConfig::Pkcs11 { module: "/usr/lib/softhsm/libsofthsm2.so".into(), token: "tsm".into(), pin: "file:/run/secrets/pin".into(), allow_clear_rewrap: true, concurrent_sessions: false }
        );
        assert_eq!(invalid_key(parse("", &[("TSM_SERAM_LONG_POLL_SECONDS", "soon")])), "TSM_SERAM_LONG_POLL_SECONDS (seram.long_poll_seconds)");
        // Every override names an existing key: applying all of them parses.
        for (var, path, _) in ENV_OVERRIDES {
            assert!(var.starts_with("TSM_") && path.contains('.'));
        }
    }

    #[test]
    fn validation_names_the_key() {
        assert_eq!(invalid_key(parse("[seram]\nlong_poll_seconds = 31\n", &[])), "seram.long_poll_seconds");
        assert_eq!(invalid_key(parse("[server]\nlisten = \"localhost\"\n", &[])), "server.listen");
        assert_eq!(invalid_key(parse("[server]\ntls_cert = \"/c.pem\"\n", &[])), "server.tls_key");
        assert_eq!(invalid_key(parse("[server]\nnode_id = \"a b\"\n", &[])), "server.node_id");
        assert_eq!(invalid_key(parse("[database]\nurl = \"mysql://x\"\n", &[])), "database.url");
        assert_eq!(invalid_key(parse("[keys]\nkind = \"software\"\nmaster = \"00112233\"\n", &[])), "keys.master");
        assert_eq!(invalid_key(parse("[keys]\nkind = \"pkcs11\"\nmodule = \"/m.so\"\ntoken = \"t\"\npin = \"1234\"\n", &[])), "keys.pin");
        assert_eq!(invalid_key(parse("[callbacks]\ninitial_backoff_ms = 10\nmax_backoff_ms = 5\n", &[])), "callbacks.max_backoff_ms");
        let e = parse("[server]\nlissten = \"x\"\n", &[]).unwrap_err();
        assert_eq!(e.code(), "config.parse");
        assert!(e.to_string().contains("lissten"), "{e}");
        let e = parse("[keys]\nkind = \"vault\"\n", &[]).unwrap_err();
        assert!(e.to_string().contains("vault"), "{e}");
        assert_eq!(parse("[server\n", &[]).unwrap_err().code(), "config.parse");
        let e = parse("[database]\nurl = \"mysql://u:secret@h/db\"\n", &[]).unwrap_err();
        assert!(!e.to_string().contains("secret"), "passwords are redacted: {e}");
    }

    #[test]
    fn secrets_resolve_from_env_and_file() {
        let dir = std::env::temp_dir().join(format!("tsm_cfg_{}", uuid::Uuid::new_v4().simple()));
        std::fs::create_dir_all(&dir).unwrap();
        let f = dir.join("master");
        std::fs::write(&f, "000102030405060708090A0B0C0D0E0F101112131415161718191A1B1C1D1E1F\n").unwrap();
        let src = SecretSource::parse("keys.master", &format!("file:{}", f.display())).unwrap();
        let raw = src.resolve("keys.master").unwrap();
        assert!(parse_master_key(&raw).is_ok());
        let e = SecretSource::parse("keys.master", "env:TSM_TEST_SURELY_UNSET_VARIABLE").unwrap().resolve("keys.master").unwrap_err();
        assert!(e.to_string().contains("TSM_TEST_SURELY_UNSET_VARIABLE"), "{e}");
        assert_eq!(SecretSource::parse("k", "env:").unwrap_err().code(), "config.invalid");
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn backoff() {
        let c = CallbacksConfig { max_attempts: 5, initial_backoff_ms: 100, max_backoff_ms: 1000, timeout_ms: 1 };
        assert_eq!([1, 2, 3, 4, 5, 40].map(|n| c.backoff_ms(n)), [100, 200, 400, 800, 1000, 1000]);
    }
}
