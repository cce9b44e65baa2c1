//! End to end over HTTP on loopback, through the real serve path (`tsm_server::testkit::Node`:
//! migrations, the configured key store, the listener, the router): onboard a provider and two
//! SE issuers, upload a CAP, describe a service; register one phone of each carrier under each
//! secure channel its profile offers (UICC: SCP02 i=55, SCP03 i=70; microSD: SCP02 i=15, SCP03
//! i=70; eSE: SCP03 S8 i=70, S16 i=71) with ISD keys of its own or diversified from an issuer's;
//! then deploy → suspend → resume → terminate on every phone, each through its local agent over
//! GP SERAM. After each step the card's registry, read from the simulated card through a host
//! `GpSession` (GET STATUS in a secure channel with the ISD), is the database's: instances,
//! SSDs, load files, life cycles, associated SDs, privileges; and the SSD rows and the
//! instance's state agree.
//!
//! One test per database × key store, so that a failure names its combination; the six phones of
//! a combination run side by side on one node, on SoftHSM2 too (whose token does not take
//! concurrent calls: the PKCS#11 store serializes them, `concurrent_sessions = false`), and the
//! combinations run in parallel. A last test runs the same lifecycle with the naive baseline of
//! the benchmark (`[planner] one_apdu_per_round_trip`).

mod support;

use std::time::Instant;
use support::{Backend, KeyStoreKind};
use tsm_gp::crypto::KeyAlg;
use tsm_gp::crypto::diversify::Diversification;
use tsm_gp::scp::Scp;
use tsm_server::testkit::{self, Entry, Node, Phone, PhoneKeys, PhoneKind, Provider, Service};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_software() {
    matrix(Backend::Sqlite, KeyStoreKind::Software, false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_softhsm() {
    matrix(Backend::Sqlite, KeyStoreKind::SoftHsm, false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_software() {
    matrix(Backend::Postgres, KeyStoreKind::Software, false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_softhsm() {
    matrix(Backend::Postgres, KeyStoreKind::SoftHsm, false).await;
}

/// The naive baseline of the deployment benchmark goes the same way, one APDU per round trip.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_software_one_apdu_per_round_trip() {
    matrix(Backend::Sqlite, KeyStoreKind::Software, true).await;
}

async fn matrix(backend: Backend, keys: KeyStoreKind, naive: bool) {
    let combo = format!("{backend:?}/{keys:?}{}", if naive { "/one-APDU-per-round-trip" } else { "" }).to_lowercase();
    let Some(db) = support::database(backend).await else {
        eprintln!("{combo}: skipped (TSM_TEST_DATABASE_URL selects the other backend)");
        return;
    };
    if std::env::var("E2E_LOG").is_ok() {
        tsm_server::http::init_logging(tsm_server::app::LogFormat::Text);
    }
    let t0 = Instant::now();
    let mut config = support::config(&db, keys);
    config.planner.one_apdu_per_round_trip = naive;
    let node = Node::start(config, support::ADMIN_TOKEN).await.unwrap_or_else(|e| panic!("{combo}: node: {e}"));
    let provider = testkit::provider(&node.admin, "acme-pay").await.unwrap_or_else(|e| panic!("{combo}: {e}"));
    // The UICCs' keys come from issuers (3DES EMV CPS 1.1 for SCP02, AES KDF3 for SCP03); the
    // other cards have keys of their own.
    let mno_3des = testkit::issuer(&node.admin, "mno-3des", KeyAlg::Des3_2k, Diversification::EmvCps11, 0x30).await.unwrap_or_else(|e| panic!("{combo}: {e}"));
    let mno_aes = testkit::issuer(&node.admin, "mno-aes", KeyAlg::Aes128, Diversification::Kdf3, 0x30).await.unwrap_or_else(|e| panic!("{combo}: {e}"));
    let elf = testkit::upload(&provider, "tsm-demo.cap", testkit::demo_cap()).await.unwrap_or_else(|e| panic!("{combo}: {e}"));
    let module = tsm_gp::hex::encode(&testkit::DEMO_WALLET_AID);
    let service = testkit::service(&provider, "wallet", &elf, &module, &module, 8192).await.unwrap_or_else(|e| panic!("{combo}: {e}"));

    let mut phones = Vec::new();
    for (n, kind) in PhoneKind::ALL.into_iter().enumerate() {
        let keys = match kind {
            PhoneKind { carrier: "uicc", scp: Scp::Scp02 { .. } } => PhoneKeys::Issuer(&mno_3des),
            PhoneKind { carrier: "uicc", .. } => PhoneKeys::Issuer(&mno_aes),
            _ => PhoneKeys::Own,
        };
        let phone = Phone::new(&format!("E2E-{n}-{}", kind.carrier.to_uppercase()), kind, keys, Some(n as u64 + 1)).unwrap_or_else(|e| panic!("{combo}: {}: {e}", kind.label()));
        phone.register(&node.admin, &provider, testkit::DEMO_SSD_AID, 32 * 1024).await.unwrap_or_else(|e| panic!("{combo}: {}: {e}", kind.label()));
        let db_view = testkit::db_view(node.store(), &phone.se_id).await.unwrap();
        assert!(db_view.registry.is_none(), "{combo}: {}: nothing known before the first contact", kind.label());
        phones.push(phone);
    }

    // Every phone's lifecycle, side by side (the agent's session future is not Send: they share
    // this thread).
    let mut report = Vec::new();
    let local = tokio::task::LocalSet::new();
    let mut tasks = tokio::task::JoinSet::new();
    for phone in phones {
        let (node_base, provider, service, store, combo) = (node.base.clone(), provider.clone(), service.clone(), node.store().clone(), combo.clone());
        tasks.spawn_local_on(async move { lifecycle(&combo, &node_base, &store, &provider, &service, &phone, naive).await }, &local);
    }
    local
        .run_until(async {
            while let Some(r) = tasks.join_next().await {
                match r {
                    Ok(line) => report.push(line),
                    Err(e) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
                    Err(e) => panic!("{combo}: {e}"),
                }
            }
        })
        .await;
    report.sort();
    eprintln!("{combo}: 6 phones × deploy, suspend, resume, terminate in {:.1} s (round trips per operation):\n  {}", t0.elapsed().as_secs_f64(), report.join("\n  "));
    node.stop().await;
    db.finish().await;
}

/// deploy → suspend → resume → terminate on one phone, the card checked against the database
/// after each. Returns a line for the report.
async fn lifecycle(combo: &str, base: &str, store: &tsm_server::store::Store, p: &Provider, s: &Service, phone: &Phone, naive: bool) -> String {
    let tag = format!("{combo}: {} ({})", phone.kind.label(), phone.se_id);
    let instance = testkit::instance(p, s, &phone.se_id).await.unwrap_or_else(|e| panic!("{tag}: {e}"));
    let mut line = format!("{:<24}", phone.kind.label());
    for (op, state, app_lc) in [("deploy", "OPERATIONAL", Some(0x07u8)), ("suspend", "SUSPENDED", Some(0x87)), ("resume", "OPERATIONAL", Some(0x07)), ("terminate", "NOT_DEPLOYED", None)] {
        let o = testkit::run_operation(base, p, phone, &instance, op, |_| {}).await.unwrap_or_else(|e| panic!("{tag}: {op}: {e}"));
        assert_eq!(o.state, "COMPLETED", "{tag}: {op}: {:?}", o.error);
        line.push_str(&format!(" {op} {}", o.round_trips));
        if naive {
            assert_eq!(o.round_trips, o.apdus, "{tag}: {op}: one APDU per round trip");
        } else if op != "deploy" {
            // The TSM knows the card now: the counter is current and the registry trusted. A
            // predictable card challenge (SCP03, SCP02 i=55) puts the whole operation in one
            // batch; SCP02 i=15 needs INITIALIZE UPDATE's answer first.
            let expected = if phone.kind.scp == (Scp::Scp02 { i: 0x15 }) { 2 } else { 1 };
            assert_eq!(o.round_trips, expected, "{tag}: {op}: round trips");
        }
        assert_eq!(testkit::instance_state(p, &instance).await.unwrap(), state, "{tag}: {op}: instance state");
        check(&tag, op, store, s, phone, app_lc).await;
    }
    line
}

/// The card's registry (GET STATUS through a host session) is the database's, and shows the
/// application with life cycle `app_lc` (absent with its load file when `None`) and the SSD.
async fn check(tag: &str, op: &str, store: &tsm_server::store::Store, s: &Service, phone: &Phone, app_lc: Option<u8>) {
    let card = phone.registry().unwrap_or_else(|e| panic!("{tag}: {op}: reading the card: {e}"));
    let db = testkit::db_view(store, &phone.se_id).await.unwrap_or_else(|e| panic!("{tag}: {op}: {e}"));
    let diff = testkit::differences(&card, &db);
    assert!(diff.is_empty(), "{tag}: after {op} the card and the database disagree:\n  {}\ncard: {card:#?}\ndatabase: {db:#?}", diff.join("\n  "));
    let find = |kind: &str, aid: &str| card.iter().find(|e: &&Entry| e.kind == kind && e.aid == aid).cloned();
    let app = find("app", &s.instance_aid);
    assert_eq!(app.as_ref().map(|e| e.life_cycle), app_lc, "{tag}: after {op}: the application on the card: {card:#?}");
    if let Some(a) = &app {
        assert_eq!(a.sd.as_deref(), Some(testkit::DEMO_SSD_AID), "{tag}: after {op}: the application belongs to the provider's SSD");
    }
    let elf = find("elf", &s.package_aid);
    assert_eq!(elf.is_some(), app_lc.is_some(), "{tag}: after {op}: the load file goes with the last application: {card:#?}");
    let ssd = find("sd", testkit::DEMO_SSD_AID).unwrap_or_else(|| panic!("{tag}: after {op}: the provider's SSD stays on the card: {card:#?}"));
    assert_eq!(db.ssds, vec![(testkit::DEMO_SSD_AID.to_string(), Some(ssd.life_cycle))], "{tag}: after {op}: the SSD row");
    assert!(db.counter_current, "{tag}: after {op}: the TSM's sequence counter is current");
}
