//! Failures during a session, on SQLite and PostgreSQL: the SE goes away mid-batch
//! (`UNAVAILABLE_SE`: the process waits for the next session, which reads the card first and
//! completes it); the agent fails (`UNKNOWN_FAILURE`: the process fails with a clear code, the
//! instance keeps its state); the agent disappears (the session expires, its lease is
//! released, the next session takes the process over and completes it).

mod engine_support;
use engine_support::*;
use serde_json::json;
use std::time::Duration;
use tsm_server::agent::Shared;
use tsm_server::domain::*;
use tsm_server::store::testing::databases;

const SE: &str = "CIN-FAIL-1";
const INST: &str = "D0D1D2D3D4D5010101";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn se_unavailable_mid_batch_then_resumed() {
    for db in databases().await {
        let tag = db.label;
        let (ts, t) = acme_with_se(&db, SE).await;
        let iid = service_instance(&ts, &t, "wallet", INST, true, SE).await;
        let card = card(11);
        let (pid, sid) = queue(&ts, &t, &iid, "deploy").await;
        // 8 APDUs read the card (counter, registry); the deployment's batch fails at its 9th:
        // the SSD exists, the load has begun.
        let flaky = Flaky { inner: Shared(card.clone()), sent: 0, fail_at: 17 };
        let (summary, _) = run_agent_with(&ts.base, &sid, SE, Box::new(flaky)).await.unwrap_or_else(|e| panic!("{tag}: {e}"));
        assert_eq!(summary.failed_se_ram_commands, 1, "{tag}: {summary:?}");
        let p = process(&ts, &t, &pid).await;
        assert_eq!(p["state"], "QUEUED", "{tag}: the process waits for the next session: {p}");
        assert!(p["error"].is_null(), "{tag}");
        let audit = db.store.audit_log().list_for_object_unscoped("process", &pid).await.unwrap();
        assert!(audit.iter().any(|a| a.action == "process_requeued" && a.detail.as_ref().unwrap()["reason"].as_str().unwrap().contains("UNAVAILABLE_SE")), "{tag}: {audit:?}");
        let se = db.store.secure_elements().get(&SeId::new(SE).unwrap()).await.unwrap().unwrap();
        assert!(se.registry.is_none(), "{tag}: the card is read again before anything else");
        assert!(db.store.leases().get(&SeId::new(SE).unwrap()).await.unwrap().is_none(), "{tag}: lease released");

        // The next session (provisioned by the admin) reads the card and completes the deployment.
        let sid2 = order_session(&ts, SE).await;
        let (_, events) = run_agent(&ts.base, &sid2, SE, &card).await.unwrap_or_else(|e| panic!("{tag}: {e}"));
        let p = process(&ts, &t, &pid).await;
        assert_eq!(p["state"], "COMPLETED", "{tag}: {p}");
        assert_eq!(p["sessionId"], sid2.as_str());
        assert_eq!(installs(&events), 1, "{tag}: the application installed once (the SSD was created by the first session)");
        assert_eq!(instance_state(&ts, &t, &iid).await, "OPERATIONAL", "{tag}");
        assert_eq!(app_life_cycle(&card, INST), Some(0x07), "{tag}");
        assert_eq!(card_registry(&card), db_registry(&db, SE).await, "{tag}");
        ts.stop().await;
        db.finish().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn agent_failure_fails_the_process() {
    for db in databases().await {
        let tag = db.label;
        let (ts, t) = acme_with_se(&db, SE).await;
        let iid = service_instance(&ts, &t, "wallet", INST, false, SE).await;
        let (pid, sid) = queue(&ts, &t, &iid, "deploy").await;
        let card = card(12);
        let http = reqwest::Client::new();
        let (_, _, c0) = seram(&http, &ts.base, "handshake", &sid, &handshake_body(SE), None).await;
        let (_, o1, c1) = seram(&http, &ts.base, "remoteManagement", &sid, &polling(), c0.as_deref()).await;
        let r1 = execute(&card, &o1);
        let (_, _o2, c2) = seram(&http, &ts.base, "remoteManagement", &sid, &r1, c1.as_deref()).await;
        // The agent fails on the second order's first C-APDU.
        let failed = json!({"localAgentStatus": {"localAgentStatusEnum": "UNKNOWN_FAILURE", "executedSeRamCommands": 0, "errorMsg": "SE RAM command 1, C-APDU 1 of 4: the OMAPI channel broke"},
                            "ramResponses": [{"ramResponseType": "seRamResponse", "listOfRAPDU": []}]});
        let (s, stop, _) = seram(&http, &ts.base, "remoteManagement", &sid, &failed, c2.as_deref()).await;
        assert_eq!(s, 200, "{tag}: {stop}");
        assert!(has_command(&stop, "ramStopCommand"), "{tag}: {stop}");
        let p = process(&ts, &t, &pid).await;
        assert_eq!(p["state"], "FAILED", "{tag}: {p}");
        assert_eq!(p["error"]["code"], "engine.agent_failure", "{tag}");
        assert!(p["error"]["message"].as_str().unwrap().contains("OMAPI channel broke"), "{tag}: {p}");
        assert_eq!(instance_state(&ts, &t, &iid).await, "NOT_DEPLOYED", "{tag}: nothing on the card changed");
        // The same deployment can be asked again (and the card is read again first).
        let (pid2, sid2) = queue(&ts, &t, &iid, "deploy").await;
        run_agent(&ts.base, &sid2, SE, &card).await.unwrap_or_else(|e| panic!("{tag}: {e}"));
        assert_eq!(process(&ts, &t, &pid2).await["state"], "COMPLETED", "{tag}");
        assert_eq!(card_registry(&card), db_registry(&db, SE).await, "{tag}");
        ts.stop().await;
        db.finish().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lost_agent_session_expires_and_the_process_is_taken_over() {
    for db in databases().await {
        let tag = db.label;
        let mut cfg = config("node-a", 1);
        cfg.seram.session_idle_seconds = 1;
        let ts = TestServer::start_with(&db, tsm_server::app::ApiConfig { allow_http_callbacks: true, shutdown_grace_seconds: 2, ..Default::default() }, cfg).await;
        let t = ts.provider("acme").await;
        onboard(&ts, &t, SE, 32_000).await;
        let iid = service_instance(&ts, &t, "wallet", INST, false, SE).await;
        let (pid, sid) = queue(&ts, &t, &iid, "deploy").await;
        let card = card(13);
        let http = reqwest::Client::new();
        let (_, _, c0) = seram(&http, &ts.base, "handshake", &sid, &handshake_body(SE), None).await;
        let (_, o1, c1) = seram(&http, &ts.base, "remoteManagement", &sid, &polling(), c0.as_deref()).await;
        let r1 = execute(&card, &o1);
        let (_, o2, c2) = seram(&http, &ts.base, "remoteManagement", &sid, &r1, c1.as_deref()).await;
        // The phone runs the next order and is never heard of again.
        let r2 = execute(&card, &o2);
        assert!(db.store.leases().get(&SeId::new(SE).unwrap()).await.unwrap().is_some(), "{tag}: the session holds the SE");
        tokio::time::sleep(Duration::from_millis(1300)).await;
        let (s, b, _) = seram(&http, &ts.base, "remoteManagement", &sid, &r2, c2.as_deref()).await;
        assert_eq!((s, b["code"].as_str()), (404, Some("seram.session_expired")), "{tag}: {b}");
        let session = db.store.seram_sessions().get(sid.parse().unwrap()).await.unwrap().unwrap();
        assert_eq!(session.state, SeramSessionState::Expired, "{tag}");
        assert!(db.store.leases().get(&SeId::new(SE).unwrap()).await.unwrap().is_none(), "{tag}: lease released");
        assert_eq!(process(&ts, &t, &pid).await["state"], "RUNNING", "{tag}: the process stays resumable");
        // The next session takes it over and completes it.
        let sid2 = order_session(&ts, SE).await;
        let (_, events) = run_agent(&ts.base, &sid2, SE, &card).await.unwrap_or_else(|e| panic!("{tag}: {e}"));
        let p = process(&ts, &t, &pid).await;
        assert_eq!(p["state"], "COMPLETED", "{tag}: {p}");
        assert_eq!(installs(&events), 2, "{tag}: the SSD and the application, once each");
        assert_eq!(instance_state(&ts, &t, &iid).await, "OPERATIONAL", "{tag}");
        assert_eq!(card_registry(&card), db_registry(&db, SE).await, "{tag}");
        ts.stop().await;
        db.finish().await;
    }
}
