//! No personalization secret and no key appears in clear in any table, on SQLite and
//! PostgreSQL: after a deployment with a sensitive personalization block (and while one is in
//! flight, when the process row holds the plan), every column of every table is read and
//! searched for the secret's bytes (raw, and as hex in either case) and the ISD key values.

mod engine_support;
use engine_support::*;
use sqlx::{Column, Row};
use tsm_server::store::testing::{TestDb, databases};

const SE: &str = "CIN-SECRETS-1";
const INST: &str = "D0D1D2D3D4D5010101";

const TABLES: &[&str] = &[
    "service_providers",
    "api_tokens",
    "keysets",
    "se_issuers",
    "secure_elements",
    "security_domains",
    "load_files",
    "services",
    "service_versions",
    "flavors",
    "application_configs",
    "personalization_scripts",
    "service_instances",
    "seram_sessions",
    "processes",
    "process_steps",
    "apdu_log",
    "se_leases",
    "audit_log",
    "callbacks_outbox",
    "key_material",
];

/// Every value of every table: text as is, bytes raw.
async fn dump(db: &TestDb) -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    for t in TABLES {
        let rows = sqlx::query(sqlx::AssertSqlSafe(format!("SELECT * FROM {t}"))).fetch_all(db.store.pool()).await.unwrap_or_else(|e| panic!("{t}: {e}"));
        for r in &rows {
            for (i, c) in r.columns().iter().enumerate() {
                if let Ok(Some(s)) = r.try_get::<Option<String>, _>(i) {
                    out.push(s.into_bytes());
                } else if let Ok(Some(b)) = r.try_get::<Option<Vec<u8>>, _>(i) {
                    out.push(b);
                } else if r.try_get::<Option<i64>, _>(i).is_err() && r.try_get::<Option<f64>, _>(i).is_err() {
                    panic!("{t}.{}: a column of a type this test cannot read", c.name());
                }
            }
        }
    }
    out
}

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    hay.windows(needle.len()).any(|w| w == needle)
}

/// Panics if any value holds `secret` raw or in hex.
fn assert_absent(values: &[Vec<u8>], secret: &[u8], what: &str) {
    let upper = tsm_gp::hex::encode(secret);
    let lower = upper.to_ascii_lowercase();
    for v in values {
        assert!(!contains(v, secret), "{what} in clear (raw bytes) in a stored value");
        assert!(!contains(v, upper.as_bytes()) && !contains(v, lower.as_bytes()), "{what} in clear (hex) in: {}", String::from_utf8_lossy(v));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_secret_in_clear_in_any_table() {
    for db in databases().await {
        let tag = db.label;
        let (ts, t) = acme_with_se(&db, SE).await;
        let iid = service_instance(&ts, &t, "wallet", INST, true, SE).await;
        let card = card(31);
        let secret = tsm_gp::hex::decode(SECRET_VALUE).unwrap();
        let keys: Vec<Vec<u8>> = [ISD_ENC, ISD_MAC, ISD_DEK].iter().map(|k| tsm_gp::hex::decode(k).unwrap()).collect();

        // While the deployment's batch is in flight (by hand, up to the batch with STORE DATA).
        let (pid, sid) = queue(&ts, &t, &iid, "deploy").await;
        let http = reqwest::Client::new();
        let (_, _, mut cookie) = seram(&http, &ts.base, "handshake", &sid, &handshake_body(SE), None).await;
        let mut report = polling();
        let mut saw_store_data = false;
        for _ in 0..10 {
            let (s, order, c) = seram(&http, &ts.base, "remoteManagement", &sid, &report, cookie.as_deref()).await;
            assert_eq!(s, 200, "{tag}: {order}");
            cookie = c;
            if capdus(&order).iter().any(|a| a.get(1) == Some(&0xE2)) {
                saw_store_data = true;
                let values = dump(&db).await;
                assert_absent(&values, &secret, "the personalization secret (batch in flight)");
                for k in &keys {
                    assert_absent(&values, k, "an ISD key (batch in flight)");
                }
            }
            if has_command(&order, "ramStopCommand") {
                break;
            }
            report = execute(&card, &order);
        }
        assert!(saw_store_data, "{tag}: the personalization went out");
        assert_eq!(process(&ts, &t, &pid).await["state"], "COMPLETED", "{tag}");
        assert_eq!(app_dgis(&card, INST)["8001"], SECRET_VALUE, "{tag}: the card has it");

        // After it.
        let values = dump(&db).await;
        assert_absent(&values, &secret, "the personalization secret");
        for k in &keys {
            assert_absent(&values, k, "an ISD key");
        }
        // The test can fail: the clear (non-sensitive) DGI is found where the provider stored it.
        let clear = tsm_gp::hex::decode(CLEAR_DGI).unwrap();
        assert!(values.iter().any(|v| contains(v, tsm_gp::hex::encode(&clear).as_bytes())), "{tag}: the search finds stored values");
        ts.stop().await;
        db.finish().await;
    }
}
