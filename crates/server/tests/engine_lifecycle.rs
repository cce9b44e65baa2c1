//! The engine end to end over HTTP on loopback, on SQLite and PostgreSQL: onboarding, CAP
//! upload, a service with personalization, deploy → the local agent runs the SERAM session to
//! Stop against a simulated card → process COMPLETED, instance OPERATIONAL, the card's
//! registry is the database's; suspend, resume, terminate, a deployment again with a current
//! counter in one round trip, an update to another version; several processes queued for one SE run in one session.

mod engine_support;
use engine_support::*;
use tsm_server::domain::*;
use tsm_server::store::testing::databases;

const SE: &str = "CIN-LIFE-1";
const INST: &str = "D0D1D2D3D4D5010101";
const INST2: &str = "D0D1D2D3D4D5010103";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deploy_suspend_resume_terminate() {
    for db in databases().await {
        let tag = db.label;
        let ts = node(&db, "node-a", 2).await;
        // A callback URL nobody listens on: the outbox keeps the results.
        let t = ts.provider_with("acme", Some("http://127.0.0.1:9/tsm-callback")).await;
        onboard(&ts, &t, SE, 32_000).await;
        let c = service(&ts, &t, "wallet", INST, true).await;
        let iid = instance(&ts, &t, &c, SE).await;
        let card = card(7);

        // Deploy: the first contact reads the card (counter, registry), then deploys.
        let (pid, sid) = queue(&ts, &t, &iid, "deploy").await;
        let (summary, events) = run_agent(&ts.base, &sid, SE, &card).await.unwrap_or_else(|e| panic!("{tag}: agent: {e}"));
        let p = process(&ts, &t, &pid).await;
        assert_eq!(p["state"], "COMPLETED", "{tag}: {p}");
        eprintln!("{tag}: first deployment: {} round trips, {} APDUs, {} orders", p["progress"]["roundTrips"], p["progress"]["apdus"], summary.orders);
        assert_eq!(instance_state(&ts, &t, &iid).await, "OPERATIONAL", "{tag}");
        assert_eq!(app_life_cycle(&card, INST), Some(0x07), "{tag}: selectable on the card");
        assert_eq!(app_dgis(&card, INST)["0101"], "47114711", "{tag}: clear DGI");
        assert_eq!(app_dgis(&card, INST)["8001"], SECRET_VALUE, "{tag}: the sensitive DGI, decrypted by the card");
        assert_eq!(card_registry(&card), db_registry(&db, SE).await, "{tag}: the database's registry is the card's");
        let se = db.store.secure_elements().get(&SeId::new(SE).unwrap()).await.unwrap().unwrap();
        assert_eq!(se.sequence_counter, Some(isd_counter(&card)), "{tag}");
        assert!(se.sequence_counter_current, "{tag}");
        assert!(p["steps"].as_array().unwrap().iter().all(|s| s["state"] == "COMPLETED"), "{tag}: {p}");
        assert_eq!(p["progress"]["stepsDone"], p["progress"]["stepsTotal"]);
        assert!(summary.notifications.iter().any(|n| n.contains(&pid) && n.ends_with("COMPLETED")), "{tag}: {:?}", summary.notifications);
        assert_eq!(installs(&events), 2, "{tag}: the SSD and the application, once each");
        assert_eq!(sent_ins(&events, 0xE6, Some(0x08)), 1, "{tag}: made selectable after personalization");
        let (_, apdus) = ts.call("GET", &format!("/api/v1/processes/{pid}/apdus"), Some(&t.token), None).await;
        assert_eq!(apdus.as_array().unwrap().len() as u64, p["progress"]["apdus"].as_u64().unwrap(), "{tag}: every APDU logged");
        let cbs = db.store.callbacks().list_for_process(t.id.parse().unwrap(), pid.parse().unwrap()).await.unwrap();
        assert_eq!(cbs.len(), 1, "{tag}: the result is queued for the provider");
        assert_eq!(cbs[0].payload["state"], "COMPLETED");
        assert_eq!(cbs[0].payload["progress"]["roundTrips"], p["progress"]["roundTrips"]);
        // The SSD was created with keys the TSM generated (the SD row knows them now).
        let sds = db.store.security_domains().list(t.id.parse().unwrap()).await.unwrap();
        assert!(sds[0].keyset_id.is_some() && sds[0].life_cycle.is_some(), "{tag}: {sds:?}");
        let session = db.store.seram_sessions().get(sid.parse().unwrap()).await.unwrap().unwrap();
        assert_eq!(session.state, SeramSessionState::Closed, "{tag}");
        assert!(db.store.leases().get(&SeId::new(SE).unwrap()).await.unwrap().is_none(), "{tag}: the lease is released");

        // Suspend and resume: the counter is current and the view trusted: one round trip each.
        for (op, state, lc) in [("suspend", "SUSPENDED", 0x87u8), ("resume", "OPERATIONAL", 0x07)] {
            let (pid, sid) = queue(&ts, &t, &iid, op).await;
            run_agent(&ts.base, &sid, SE, &card).await.unwrap_or_else(|e| panic!("{tag}: {op}: {e}"));
            let p = process(&ts, &t, &pid).await;
            assert_eq!(p["state"], "COMPLETED", "{tag}: {op}: {p}");
            assert_eq!(p["progress"]["roundTrips"], 1, "{tag}: {op}");
            assert_eq!(instance_state(&ts, &t, &iid).await, state, "{tag}: {op}");
            assert_eq!(app_life_cycle(&card, INST), Some(lc), "{tag}: {op}");
            assert_eq!(card_registry(&card), db_registry(&db, SE).await, "{tag}: {op}");
        }

        // Another party uses the card: the TSM's counter is stale. The predicted handshake fails
        // (planner.stale_counter, nothing done), the engine reads the card and goes on.
        other_party_session(&card);
        // Terminate: the instance and its load file leave the card.
        let (pid, sid) = queue(&ts, &t, &iid, "terminate").await;
        run_agent(&ts.base, &sid, SE, &card).await.unwrap_or_else(|e| panic!("{tag}: terminate: {e}"));
        let p = process(&ts, &t, &pid).await;
        assert_eq!(p["state"], "COMPLETED", "{tag}: {p}");
        assert!(p["progress"]["roundTrips"].as_u64().unwrap() > 1, "{tag}: the stale counter cost round trips: {p}");
        assert!(p["steps"].as_array().unwrap().iter().any(|s| s["state"] == "FAILED"), "{tag}: the refused attempt is a failed step: {p}");
        let se = db.store.secure_elements().get(&SeId::new(SE).unwrap()).await.unwrap().unwrap();
        assert_eq!(se.sequence_counter, Some(isd_counter(&card)), "{tag}: the counter is the card's again");
        assert_eq!(instance_state(&ts, &t, &iid).await, "NOT_DEPLOYED", "{tag}");
        assert_eq!(app_life_cycle(&card, INST), None, "{tag}");
        assert!(!card_registry(&card).iter().any(|e| e.1 == ELF_AID), "{tag}: load file deleted");
        assert_eq!(card_registry(&card), db_registry(&db, SE).await, "{tag}");

        // Deploy again: current counter, trusted view: LOAD and all in one round trip.
        let (pid, sid) = queue(&ts, &t, &iid, "deploy").await;
        let (_, events) = run_agent(&ts.base, &sid, SE, &card).await.unwrap_or_else(|e| panic!("{tag}: deploy again: {e}"));
        let p = process(&ts, &t, &pid).await;
        assert_eq!(p["state"], "COMPLETED", "{tag}: {p}");
        assert_eq!(p["progress"]["roundTrips"], 1, "{tag}: a deployment with a current SCP03 counter is one round trip");
        assert!(sent_ins(&events, 0xE8, None) > 0, "{tag}: loaded again");
        assert_eq!(instance_state(&ts, &t, &iid).await, "OPERATIONAL");
        assert_eq!(card_registry(&card), db_registry(&db, SE).await, "{tag}");

        // Update to version 2.0 (the same load file, another application instance): the old
        // instance goes, the new one comes, the load file stays; the instance row moves.
        let tok = Some(t.token.as_str());
        let (s, v) = ts.call("POST", &format!("/api/v1/services/{}/versions", c.service_id), tok, Some(serde_json::json!({"tag": "2.0", "elfId": c.elf_id}))).await;
        assert_eq!(s, 201, "{v}");
        let (s, f) = ts.call("POST", &format!("/api/v1/services/{}/versions/2.0/flavors", c.service_id), tok, Some(serde_json::json!({"name": "v2", "memoryQuota": 4000}))).await;
        assert_eq!(s, 201, "{f}");
        let fid = f["id"].as_str().unwrap().to_string();
        let (s, a) = ts
            .call("POST", &format!("/api/v1/services/{}/flavors/{fid}/application-configs", c.service_id), tok, Some(serde_json::json!({"moduleAid": MODULE_AID, "instanceAid": INST2, "nvQuota": 1024})))
            .await;
        assert_eq!(s, 201, "{a}");
        let (s, q) = ts.call("POST", &format!("/api/v1/service-instances/{iid}/update"), tok, Some(serde_json::json!({"versionTag": "2.0"}))).await;
        assert_eq!(s, 202, "{q}");
        let (pid, sid) = (q["processId"].as_str().unwrap().to_string(), q["sessionId"].as_str().unwrap().to_string());
        let (_, events) = run_agent(&ts.base, &sid, SE, &card).await.unwrap_or_else(|e| panic!("{tag}: update: {e}"));
        let p = process(&ts, &t, &pid).await;
        assert_eq!(p["state"], "COMPLETED", "{tag}: {p}");
        assert_eq!(sent_ins(&events, 0xE8, None), 0, "{tag}: the load file stays");
        assert_eq!(app_life_cycle(&card, INST), None, "{tag}: the old instance is gone");
        assert_eq!(app_life_cycle(&card, INST2), Some(0x07), "{tag}: the new one is selectable");
        let (_, i) = ts.call("GET", &format!("/api/v1/service-instances/{iid}"), tok, None).await;
        assert_eq!((i["state"].as_str(), i["flavorId"].as_str()), (Some("OPERATIONAL"), Some(fid.as_str())), "{tag}: {i}");
        assert_eq!(card_registry(&card), db_registry(&db, SE).await, "{tag}");

        ts.stop().await;
        db.finish().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn queued_processes_run_in_one_session() {
    for db in databases().await {
        let tag = db.label;
        let (ts, t) = acme_with_se(&db, SE).await;
        let a = service(&ts, &t, "wallet", INST, false).await;
        let b = service(&ts, &t, "transit", "D0D1D2D3D4D5010102", false).await;
        let ia = instance(&ts, &t, &a, SE).await;
        let ib = instance(&ts, &t, &b, SE).await;
        let card = card(9);
        let (pa, sa) = queue(&ts, &t, &ia, "deploy").await;
        let (pb, sb) = queue(&ts, &t, &ib, "deploy").await;
        // The first session carries both deployments, one after the other.
        run_agent(&ts.base, &sa, SE, &card).await.unwrap_or_else(|e| panic!("{tag}: {e}"));
        for pid in [&pa, &pb] {
            let p = process(&ts, &t, pid).await;
            assert_eq!(p["state"], "COMPLETED", "{tag}: {p}");
            assert_eq!(p["sessionId"], sa.as_str(), "{tag}: run in the first session");
        }
        let p = process(&ts, &t, &pb).await;
        assert_eq!(p["progress"]["roundTrips"], 1, "{tag}: the second deployment skips LOAD and is one round trip");
        assert_eq!(app_life_cycle(&card, "D0D1D2D3D4D5010102"), Some(0x07));
        assert_eq!(card_registry(&card), db_registry(&db, SE).await, "{tag}");
        // The second session finds nothing left: Start, Stop.
        let (summary, _) = run_agent(&ts.base, &sb, SE, &card).await.unwrap();
        assert_eq!(summary.apdus, 0, "{tag}");
        ts.stop().await;
        db.finish().await;
    }
}
