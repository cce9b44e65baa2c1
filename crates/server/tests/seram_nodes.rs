//! Two nodes (two `AppState`s, two routers) on one PostgreSQL database; the local agent's
//! requests alternate between them within one session (a proxy sends each request to the next
//! node), and some answers are lost on the way back (the agent sends the same report again, to
//! the other node). The deployment completes exactly once: the card receives each INSTALL
//! once, and the registry both nodes see is the card's.

mod engine_support;
use engine_support::*;
use std::sync::atomic::Ordering;
use tsm_server::store::DbKind;
use tsm_server::store::testing::databases;

const SE: &str = "CIN-NODES-1";
const INST: &str = "D0D1D2D3D4D5010101";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_session_alternating_between_two_nodes() {
    let mut ran = false;
    for db in databases().await {
        if db.kind() != DbKind::Postgres {
            db.finish().await;
            continue;
        }
        ran = true;
        let a = node(&db, "node-a", 1).await;
        let b = node(&db, "node-b", 1).await;
        let t = a.provider("acme").await;
        onboard(&a, &t, SE, 32_000).await;
        let c = service(&b, &t, "wallet", INST, true).await;
        let iid = instance(&a, &t, &c, SE).await;
        let card = card(21);
        let (pid, sid) = queue(&b, &t, &iid, "deploy").await;
        // Requests 0 (handshake), 1, 2, ...: the answers to 3 and 6 are lost after the node took
        // the report; the agent sends each again (to the other node).
        let (proxy, counts) = alternating_proxy(vec![a.base.clone(), b.base.clone()], vec![3, 6]).await;
        let (summary, events) = run_agent(&proxy, &sid, SE, &card).await.unwrap_or_else(|e| panic!("agent: {e}"));
        assert!(summary.retries >= 2, "lost answers were retried: {summary:?}");
        assert!(counts[0].load(Ordering::SeqCst) >= 3 && counts[1].load(Ordering::SeqCst) >= 3, "both nodes served the session");
        let p = process(&a, &t, &pid).await;
        assert_eq!(p["state"], "COMPLETED", "{p}");
        assert_eq!(installs(&events), 2, "the SSD and the application, each installed once");
        assert_eq!(sent_ins(&events, 0xE6, Some(0x02)), 1, "one INSTALL [for load]");
        let audit = db.store.audit_log().list_for_object_unscoped("process", &pid).await.unwrap();
        assert_eq!(audit.iter().filter(|x| x.action == "process_completed").count(), 1, "completed once: {audit:?}");
        assert_eq!(instance_state(&b, &t, &iid).await, "OPERATIONAL");
        assert_eq!(card_registry(&card), db_registry(&db, SE).await);
        // The APDU log holds each exchange once.
        let (_, apdus) = b.call("GET", &format!("/api/v1/processes/{pid}/apdus"), Some(&t.token), None).await;
        assert_eq!(apdus.as_array().unwrap().len() as u64, summary.apdus, "every APDU the card saw, logged once");

        // Suspend through the proxy too: one round trip.
        let (pid, sid) = queue(&a, &t, &iid, "suspend").await;
        let (proxy, _) = alternating_proxy(vec![b.base.clone(), a.base.clone()], vec![2]).await;
        run_agent(&proxy, &sid, SE, &card).await.unwrap_or_else(|e| panic!("agent: {e}"));
        let p = process(&b, &t, &pid).await;
        assert_eq!(p["state"], "COMPLETED", "{p}");
        assert_eq!(p["progress"]["roundTrips"], 1);
        assert_eq!(app_life_cycle(&card, INST), Some(0x87));
        a.stop().await;
        b.stop().await;
        db.finish().await;
    }
    assert!(ran || std::env::var("TSM_TEST_DATABASE_URL").is_ok_and(|v| v.starts_with("sqlite")), "PostgreSQL is needed for this test");
}
