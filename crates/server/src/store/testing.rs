//! Fresh, migrated databases for tests, on SQLite and PostgreSQL, so that one test body runs
//! against both backends.
//!
//! `TSM_TEST_DATABASE_URL` chooses:
//! - unset: both — SQLite on a temporary file and PostgreSQL at
//!   `postgres://postgres@127.0.0.1:5432/`;
//! - `sqlite` (or any `sqlite:` URL): SQLite only, on a temporary file;
//! - `postgres://user@host:port/`: PostgreSQL only, on that server.
//!
//! Each PostgreSQL test database is new (`tsm_test_<random>`) and dropped by
//! [`TestDb::finish`]. An unreachable PostgreSQL server is a test failure, not a skip, unless
//! `TSM_TEST_ALLOW_NO_POSTGRES=1` (then SQLite runs alone, with a warning on stderr).
//! `scripts/test.sh` starts the local cluster when it is down.

use super::{DbKind, Store, StoreError};
use sqlx::migrate::MigrateDatabase;

pub const DEFAULT_POSTGRES: &str = "postgres://postgres@127.0.0.1:5432/";

/// One fresh, migrated test database.
pub struct TestDb {
    pub store: Store,
    pub url: String,
    /// `sqlite` or `postgres`, for messages.
    pub label: &'static str,
    sqlite_dir: Option<std::path::PathBuf>,
}

impl std::fmt::Debug for TestDb {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "TestDb({})", self.url)
    }
}

fn suffix() -> String {
    uuid::Uuid::new_v4().simple().to_string()[..16].to_string()
}

impl TestDb {
    /// SQLite on a file in a new temporary directory.
    pub async fn sqlite() -> Result<TestDb, StoreError> {
        let dir = std::env::temp_dir().join(format!("tsm_test_{}", suffix()));
        std::fs::create_dir_all(&dir).map_err(|e| StoreError::Invalid(format!("temp dir: {e}")))?;
        let url = format!("sqlite://{}?mode=rwc", dir.join("tsm.db").display());
        let store = Store::connect(&url).await?;
        store.migrate().await?;
        Ok(TestDb { store, url, label: "sqlite", sqlite_dir: Some(dir) })
    }

    /// A new database on the PostgreSQL server at `server` (a URL without database name,
    /// e.g. [`DEFAULT_POSTGRES`]).
    pub async fn postgres(server: &str) -> Result<TestDb, StoreError> {
        sqlx::any::install_default_drivers();
        let base = server.trim_end_matches('/');
        let url = format!("{base}/tsm_test_{}", suffix());
        sqlx::Any::create_database(&url).await.map_err(super::db_err("test database"))?;
        let store = Store::connect_with(&url, 10).await?;
        store.migrate().await?;
        Ok(TestDb { store, url, label: "postgres", sqlite_dir: None })
    }

    pub fn kind(&self) -> DbKind {
        self.store.kind()
    }

    /// Closes the pool and removes the database.
    pub async fn finish(self) {
        self.store.close().await;
        match self.sqlite_dir {
            Some(dir) => {
                let _ = std::fs::remove_dir_all(dir);
            }
            None => {
                if let Err(e) = sqlx::Any::force_drop_database(&self.url).await {
                    eprintln!("warning: could not drop test database {}: {e}", self.url);
                }
            }
        }
    }
}

/// The backends `TSM_TEST_DATABASE_URL` selects (see the module docs): whether SQLite, and the
/// PostgreSQL server if any. Panics (fails the test) on any other value.
pub fn selected() -> (bool, Option<String>) {
    let choice = std::env::var("TSM_TEST_DATABASE_URL").unwrap_or_default();
    if choice.is_empty() {
        (true, Some(DEFAULT_POSTGRES.to_string()))
    } else if choice == "sqlite" || choice.starts_with("sqlite:") {
        (true, None)
    } else if choice.starts_with("postgres://") || choice.starts_with("postgresql://") {
        (false, Some(choice))
    } else {
        panic!("TSM_TEST_DATABASE_URL={choice:?}: use sqlite or a postgres:// server URL");
    }
}

/// A fresh database on the PostgreSQL server `server`; `None` (with a warning on stderr) when it
/// is unreachable and `TSM_TEST_ALLOW_NO_POSTGRES=1`. Panics (fails the test) when it is
/// unreachable otherwise.
pub async fn postgres_or_skip(server: &str) -> Option<TestDb> {
    match TestDb::postgres(server).await {
        Ok(db) => Some(db),
        Err(e) if std::env::var("TSM_TEST_ALLOW_NO_POSTGRES").as_deref() == Ok("1") => {
            eprintln!("WARNING: PostgreSQL at {server} unreachable ({e}); skipped (TSM_TEST_ALLOW_NO_POSTGRES=1)");
            None
        }
        Err(e) => panic!(
            "PostgreSQL test database at {server} unavailable: {e}\n\
             start it (pg_ctlcluster --skip-systemctl-redirect $(ls /etc/postgresql) main start), \
             or set TSM_TEST_DATABASE_URL=sqlite, or TSM_TEST_ALLOW_NO_POSTGRES=1"
        ),
    }
}

/// The backends selected by `TSM_TEST_DATABASE_URL` (see the module docs), each fresh.
/// Panics (fails the test) when PostgreSQL is wanted and unreachable.
pub async fn databases() -> Vec<TestDb> {
    let (sqlite, pg) = selected();
    let mut out = Vec::new();
    if sqlite {
        out.push(TestDb::sqlite().await.expect("SQLite test database"));
    }
    if let Some(server) = pg
        && let Some(db) = postgres_or_skip(&server).await
    {
        out.push(db);
    }
    out
}

/// One fresh database for a test that needs any backend: SQLite when selected, else PostgreSQL.
/// (Taking the first of [`databases`] would create a PostgreSQL database and never drop it.)
pub async fn first_database() -> TestDb {
    let (sqlite, pg) = selected();
    if sqlite {
        return TestDb::sqlite().await.expect("SQLite test database");
    }
    let server = pg.expect("a backend is selected");
    match postgres_or_skip(&server).await {
        Some(db) => db,
        None => panic!("no test database: SQLite not selected and PostgreSQL at {server} unreachable"),
    }
}
