//! The end-to-end tests' and the deployment benchmark's environment: a database of either
//! backend (`tsm_server::store::testing`, with its `TSM_TEST_DATABASE_URL` rules) and a key
//! store of either kind (the software store under a master key file, or PKCS#11 on a SoftHSM2
//! token in a temporary directory), configured as `tsm serve` reads them, for a
//! `tsm_server::testkit::Node`. The flow itself (onboarding, phones, deployments, the card's and
//! the database's registries) is `tsm_server::testkit`, shared with `tsm demo`. The key store
//! tests (`keys_stores.rs`) make their SoftHSM2 token with [`init_softhsm_token`] too.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use tsm_server::config::{Config, KeysConfig};
use tsm_server::store::testing::{self, TestDb};
use tsm_server::testkit::{self, KitResult, Node};

pub const ADMIN_TOKEN: &str = "e2e-admin-token-0123456789abcdef";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyStoreKind {
    Software,
    SoftHsm,
}

/// A fresh database of `backend`, or `None` when `TSM_TEST_DATABASE_URL` selects the other
/// backend only (or PostgreSQL is unreachable and `TSM_TEST_ALLOW_NO_POSTGRES=1`): the caller
/// skips, saying so.
pub async fn database(backend: Backend) -> Option<TestDb> {
    let (sqlite, pg_server) = testing::selected();
    match backend {
        Backend::Sqlite if !sqlite => None,
        Backend::Sqlite => Some(TestDb::sqlite().await.expect("SQLite test database")),
        Backend::Postgres => testing::postgres_or_skip(&pg_server?).await,
    }
}

pub const SOFTHSM_MODULE: &str = "/usr/lib/softhsm/libsofthsm2.so";
const SOFTHSM_TOKEN: &str = "tsm-e2e";
const SOFTHSM_PIN: &str = "e2e-user-pin";

/// A new directory `<temp>/<prefix><pid>` of this test process; those of earlier test
/// processes that are gone are removed first.
pub fn process_dir(prefix: &str) -> PathBuf {
    let tmp = std::env::temp_dir();
    if let Ok(entries) = std::fs::read_dir(&tmp) {
        for e in entries.flatten() {
            let name = e.file_name().to_string_lossy().to_string();
            if let Some(pid) = name.strip_prefix(prefix)
                && !Path::new("/proc").join(pid).exists()
            {
                let _ = std::fs::remove_dir_all(e.path());
            }
        }
    }
    let dir = tmp.join(format!("{prefix}{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// A scratch directory of this test process (removed by the next run once the process is gone).
pub fn scratch() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| process_dir("tsm_e2e_"))
}

/// Makes `dir` a SoftHSM2 token directory holding one token, `label` (SO PIN `so_pin`, user PIN
/// `pin`), and points this process at it: SoftHSM reads `SOFTHSM2_CONF` once per process (at
/// `C_Initialize`), so this runs once, before any PKCS#11 call.
pub fn init_softhsm_token(dir: &Path, label: &str, so_pin: &str, pin: &str) {
    assert!(Path::new(SOFTHSM_MODULE).exists(), "SoftHSM2 is not installed ({SOFTHSM_MODULE}); run scripts/install-deps.sh");
    std::fs::create_dir_all(dir.join("tokens")).unwrap();
    let conf = dir.join("softhsm2.conf");
    std::fs::write(&conf, format!("directories.tokendir = {}\nobjectstore.backend = file\nlog.level = ERROR\n", dir.join("tokens").display())).unwrap();
    // SAFETY (edition 2024): set before the first PKCS#11 call of the process.
    unsafe { std::env::set_var("SOFTHSM2_CONF", &conf) };
    let out = std::process::Command::new("softhsm2-util")
        .args(["--init-token", "--free", "--label", label, "--so-pin", so_pin, "--pin", pin])
        .env("SOFTHSM2_CONF", &conf)
        .output()
        .expect("softhsm2-util");
    assert!(out.status.success(), "softhsm2-util --init-token: {}", String::from_utf8_lossy(&out.stderr));
}

/// The SoftHSM2 token of this test process: every test of the binary shares one token (see
/// [`init_softhsm_token`]), with distinct key ids.
fn softhsm() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let dir = scratch().join("softhsm");
        init_softhsm_token(&dir, SOFTHSM_TOKEN, "e2e-so-pin", SOFTHSM_PIN);
        std::fs::write(dir.join("pin"), SOFTHSM_PIN).unwrap();
        dir
    })
}

/// The `[keys]` section for `kind`, with its secret as a `file:` source (as in production).
pub fn keys_config(kind: KeyStoreKind) -> KeysConfig {
    match kind {
        KeyStoreKind::Software => {
            let master = scratch().join("master.key");
            if !master.exists() {
                std::fs::write(&master, "5A".repeat(32)).unwrap();
            }
            KeysConfig::Software { master: format!("file:{}", master.display()) }
        }
        KeyStoreKind::SoftHsm => {
            let dir = softhsm();
            // SoftHSM2 cannot wrap as SCP02 PUT KEY / STORE DATA need (docs/configuration.md).
            KeysConfig::Pkcs11 { module: SOFTHSM_MODULE.into(), token: SOFTHSM_TOKEN.into(), pin: format!("file:{}", dir.join("pin").display()), allow_clear_rewrap: true, concurrent_sessions: false }
        }
    }
}

/// A node's configuration on loopback over `db` with the `keys` store.
pub fn config(db: &TestDb, keys: KeyStoreKind) -> Config {
    let mut c = testkit::loopback_config(&db.url, "env:UNUSED");
    c.server.node_id = Some("e2e".into());
    c.keys = keys_config(keys);
    c
}

/// Starts a node over `db` with the `keys` store (the real `tsm serve` path: migrations, the
/// configured key store, the listener and the router).
pub async fn node(db: &TestDb, keys: KeyStoreKind) -> KitResult<Node> {
    Node::start(config(db, keys), ADMIN_TOKEN).await
}
