//! The durable store: the schema (one migrations folder per database type,
//! `migrations/sqlite` and `migrations/postgres`, embedded in the binary), an `sqlx::Any` pool
//! and typed repositories, one per entity group: `store.processes().create(..)`,
//! `store.load_files().get(provider, id)`...
//!
//! Rules every repository follows:
//! - **Tenancy**: a query over provider-owned rows takes the provider id and filters on it, so
//!   it never returns another provider's rows. Methods without a provider id
//!   (`*_unscoped`, `next_*`) are for the engine and the SERAM API, which act for the TSM.
//! - **Portability**: run-time queries only (`sqlx::query`, no `query!` macros), `$n`
//!   placeholders (PostgreSQL and SQLite both take them), plain column types: UUIDs as text,
//!   times as Unix milliseconds (`BIGINT`), booleans as 0/1 integers, JSON as text.
//! - **Atomicity**: changes that belong together are one transaction
//!   ([`processes::Processes::commit`]); SE leases are one conditional statement
//!   ([`leases::Leases::acquire`]); processes and SERAM sessions carry a `version` for
//!   optimistic updates.
//! - **Audit log** is append-only: the repository has no update or delete.

pub mod cards;
pub mod catalog;
pub mod leases;
pub mod log;
pub mod processes;
pub mod seram;
pub mod tenants;
pub mod testing;

use sqlx::any::{AnyPoolOptions, AnyRow};
use sqlx::migrate::{Migration, MigrationType, Migrator};
use sqlx::{AnyPool, Row, SqlSafeStr};
use std::str::FromStr;
use std::time::Duration;

pub use leases::Leases;

/// Store errors, each with a stable code.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    #[error("{entity} {id} not found")]
    NotFound { entity: &'static str, id: String },
    #[error("{entity}: a row with the same unique key exists ({detail})")]
    Conflict { entity: &'static str, detail: String },
    #[error("{entity}: a referenced row does not exist or is still referenced ({detail})")]
    Reference { entity: &'static str, detail: String },
    #[error("{entity} {id} was changed by someone else (expected version {expected})")]
    VersionConflict { entity: &'static str, id: String, expected: i64 },
    #[error("unsupported database URL {0:?}: use sqlite:// or postgres://")]
    UnsupportedUrl(String),
    #[error("database error on {entity}: {source}")]
    Database { entity: &'static str, source: sqlx::Error },
    #[error("migration failed: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    #[error("corrupt value in column {column}: {detail}")]
    Corrupt { column: &'static str, detail: String },
    #[error("invalid input: {0}")]
    Invalid(String),
}

impl StoreError {
    pub fn code(&self) -> &'static str {
        match self {
            StoreError::NotFound { .. } => "store.not_found",
            StoreError::Conflict { .. } => "store.conflict",
            StoreError::Reference { .. } => "store.reference",
            StoreError::VersionConflict { .. } => "store.version_conflict",
            StoreError::UnsupportedUrl(_) => "store.unsupported_url",
            StoreError::Database { .. } => "store.database",
            StoreError::Migrate(_) => "store.migrate",
            StoreError::Corrupt { .. } => "store.corrupt",
            StoreError::Invalid(_) => "store.invalid",
        }
    }
}

/// Maps an sqlx error, classifying constraint violations.
pub(crate) fn db_err(entity: &'static str) -> impl Fn(sqlx::Error) -> StoreError {
    move |e| {
        if let sqlx::Error::Database(d) = &e {
            match d.kind() {
                sqlx::error::ErrorKind::UniqueViolation => return StoreError::Conflict { entity, detail: d.message().to_string() },
                sqlx::error::ErrorKind::ForeignKeyViolation => return StoreError::Reference { entity, detail: d.message().to_string() },
                _ => {}
            }
        }
        StoreError::Database { entity, source: e }
    }
}

/// Which database a URL points at.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DbKind {
    Sqlite,
    Postgres,
}

impl DbKind {
    pub fn from_url(url: &str) -> Result<DbKind, StoreError> {
        if url.starts_with("sqlite:") {
            Ok(DbKind::Sqlite)
        } else if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            Ok(DbKind::Postgres)
        } else {
            Err(StoreError::UnsupportedUrl(url.to_string()))
        }
    }
}

/// The migrations of one database type, embedded at compile time.
pub fn migrator(kind: DbKind) -> Migrator {
    let sql: &'static str = match kind {
        DbKind::Sqlite => include_str!("../../migrations/sqlite/0001_init.sql"),
        DbKind::Postgres => include_str!("../../migrations/postgres/0001_init.sql"),
    };
    Migrator::with_migrations(vec![Migration::new(1, "init".into(), MigrationType::Simple, sql.into_sql_str(), false)])
}

/// The store: a pool and the repositories over it. Cheap to clone.
#[derive(Clone, Debug)]
pub struct Store {
    pool: AnyPool,
    url: String,
    kind: DbKind,
}

impl Store {
    /// Connects with up to 10 connections.
    pub async fn connect(url: &str) -> Result<Store, StoreError> {
        Self::connect_with(url, 10).await
    }

    /// Connects (installing sqlx's `Any` drivers once). An in-memory SQLite URL gets a single
    /// connection: every pooled connection would otherwise see its own empty database.
    pub async fn connect_with(url: &str, max_connections: u32) -> Result<Store, StoreError> {
        sqlx::any::install_default_drivers();
        let kind = DbKind::from_url(url)?;
        let memory = kind == DbKind::Sqlite && url.contains(":memory:");
        let pool = AnyPoolOptions::new()
            .max_connections(if memory { 1 } else { max_connections.max(1) })
            .acquire_timeout(Duration::from_secs(30))
            .connect(url)
            .await
            .map_err(db_err("connection"))?;
        if kind == DbKind::Sqlite && !memory {
            // WAL lets readers proceed while one connection writes (several nodes or pools on
            // one file); the setting is persistent in the file.
            sqlx::query("PRAGMA journal_mode=WAL").execute(&pool).await.map_err(db_err("connection"))?;
        }
        Ok(Store { pool, url: url.to_string(), kind })
    }

    /// Applies the migrations that are not applied yet (idempotent).
    pub async fn migrate(&self) -> Result<(), StoreError> {
        migrator(self.kind).run(&self.pool).await?;
        Ok(())
    }

    pub fn pool(&self) -> &AnyPool {
        &self.pool
    }
    pub fn url(&self) -> &str {
        &self.url
    }
    pub fn kind(&self) -> DbKind {
        self.kind
    }
    /// Closes the pool (waits for connections to be returned).
    pub async fn close(&self) {
        self.pool.close().await
    }

    pub fn providers(&self) -> tenants::Providers<'_> {
        tenants::Providers { s: self }
    }
    pub fn api_tokens(&self) -> tenants::ApiTokens<'_> {
        tenants::ApiTokens { s: self }
    }
    pub fn issuers(&self) -> cards::Issuers<'_> {
        cards::Issuers { s: self }
    }
    pub fn keysets(&self) -> cards::Keysets<'_> {
        cards::Keysets { s: self }
    }
    pub fn secure_elements(&self) -> cards::SecureElements<'_> {
        cards::SecureElements { s: self }
    }
    pub fn security_domains(&self) -> cards::SecurityDomains<'_> {
        cards::SecurityDomains { s: self }
    }
    pub fn load_files(&self) -> catalog::LoadFiles<'_> {
        catalog::LoadFiles { s: self }
    }
    pub fn services(&self) -> catalog::Services<'_> {
        catalog::Services { s: self }
    }
    pub fn service_versions(&self) -> catalog::ServiceVersions<'_> {
        catalog::ServiceVersions { s: self }
    }
    pub fn flavors(&self) -> catalog::Flavors<'_> {
        catalog::Flavors { s: self }
    }
    pub fn application_configs(&self) -> catalog::ApplicationConfigs<'_> {
        catalog::ApplicationConfigs { s: self }
    }
    pub fn personalization_scripts(&self) -> catalog::PersonalizationScripts<'_> {
        catalog::PersonalizationScripts { s: self }
    }
    pub fn service_instances(&self) -> processes::ServiceInstances<'_> {
        processes::ServiceInstances { s: self }
    }
    pub fn processes(&self) -> processes::Processes<'_> {
        processes::Processes { s: self }
    }
    pub fn apdu_log(&self) -> processes::ApduLog<'_> {
        processes::ApduLog { s: self }
    }
    pub fn seram_sessions(&self) -> seram::SeramSessions<'_> {
        seram::SeramSessions { s: self }
    }
    pub fn leases(&self) -> Leases<'_> {
        Leases { s: self }
    }
    pub fn audit_log(&self) -> log::AuditLog<'_> {
        log::AuditLog { s: self }
    }
    pub fn callbacks(&self) -> log::CallbacksOutbox<'_> {
        log::CallbacksOutbox { s: self }
    }

    /// Takes the lease on an SE for `holder` if it is free, expired, or already `holder`'s.
    /// `None` if another holder has it. See [`Leases::acquire`].
    pub async fn acquire_se_lease(&self, se_id: &crate::domain::SeId, holder: &str, ttl: Duration) -> Result<Option<crate::domain::SeLease>, StoreError> {
        self.leases().acquire(se_id, holder, ttl).await
    }
    /// Extends `holder`'s lease; `false` if it no longer holds it.
    pub async fn renew_se_lease(&self, se_id: &crate::domain::SeId, holder: &str, ttl: Duration) -> Result<bool, StoreError> {
        self.leases().renew(se_id, holder, ttl).await
    }
    /// Gives the lease up; `false` if `holder` did not hold it.
    pub async fn release_se_lease(&self, se_id: &crate::domain::SeId, holder: &str) -> Result<bool, StoreError> {
        self.leases().release(se_id, holder).await
    }
}

// ---- row decoding helpers -------------------------------------------------------------

pub(crate) fn col<'r, T>(row: &'r AnyRow, column: &'static str) -> Result<T, StoreError>
where
    T: sqlx::Decode<'r, sqlx::Any> + sqlx::Type<sqlx::Any>,
{
    row.try_get(column).map_err(|e| StoreError::Corrupt { column, detail: e.to_string() })
}

/// A text column parsed with `FromStr` (ids, enums, AIDs).
pub(crate) fn parsed<T>(row: &AnyRow, column: &'static str) -> Result<T, StoreError>
where
    T: FromStr,
    T::Err: std::fmt::Display,
{
    let s: String = col(row, column)?;
    s.parse().map_err(|e: T::Err| StoreError::Corrupt { column, detail: e.to_string() })
}

pub(crate) fn parsed_opt<T>(row: &AnyRow, column: &'static str) -> Result<Option<T>, StoreError>
where
    T: FromStr,
    T::Err: std::fmt::Display,
{
    let s: Option<String> = col(row, column)?;
    s.map(|s| s.parse().map_err(|e: T::Err| StoreError::Corrupt { column, detail: e.to_string() })).transpose()
}

/// An integer column narrowed to a smaller type.
pub(crate) fn int<T: TryFrom<i64>>(row: &AnyRow, column: &'static str) -> Result<T, StoreError> {
    let v: i64 = col(row, column)?;
    T::try_from(v).map_err(|_| StoreError::Corrupt { column, detail: format!("{v} out of range") })
}

pub(crate) fn int_opt<T: TryFrom<i64>>(row: &AnyRow, column: &'static str) -> Result<Option<T>, StoreError> {
    let v: Option<i64> = col(row, column)?;
    v.map(|v| T::try_from(v).map_err(|_| StoreError::Corrupt { column, detail: format!("{v} out of range") })).transpose()
}

pub(crate) fn flag(row: &AnyRow, column: &'static str) -> Result<bool, StoreError> {
    Ok(col::<i64>(row, column)? != 0)
}

pub(crate) fn hex_col(row: &AnyRow, column: &'static str) -> Result<Vec<u8>, StoreError> {
    let s: String = col(row, column)?;
    tsm_gp::hex::decode(&s).map_err(|e| StoreError::Corrupt { column, detail: e.to_string() })
}

pub(crate) fn hex_opt(row: &AnyRow, column: &'static str) -> Result<Option<Vec<u8>>, StoreError> {
    let s: Option<String> = col(row, column)?;
    s.map(|s| tsm_gp::hex::decode(&s).map_err(|e| StoreError::Corrupt { column, detail: e.to_string() })).transpose()
}

pub(crate) fn json_col<T: serde::de::DeserializeOwned>(row: &AnyRow, column: &'static str) -> Result<T, StoreError> {
    let s: String = col(row, column)?;
    serde_json::from_str(&s).map_err(|e| StoreError::Corrupt { column, detail: e.to_string() })
}

pub(crate) fn json_opt<T: serde::de::DeserializeOwned>(row: &AnyRow, column: &'static str) -> Result<Option<T>, StoreError> {
    let s: Option<String> = col(row, column)?;
    s.map(|s| serde_json::from_str(&s).map_err(|e| StoreError::Corrupt { column, detail: e.to_string() })).transpose()
}

pub(crate) fn to_json<T: serde::Serialize>(v: &T) -> Result<String, StoreError> {
    serde_json::to_string(v).map_err(|e| StoreError::Invalid(e.to_string()))
}

pub(crate) fn b(v: bool) -> i64 {
    v as i64
}
