//! Service instances and processes over HTTP: eligibility, queuing (202 with process and SERAM
//! session ids), one process in flight, invalid transitions (409), progress and APDU log as the
//! engine records them, update targets, sealed personalization data. SQLite and PostgreSQL.

mod api_support;

use api_support::*;
use serde_json::json;
use tsm_server::domain::*;
use tsm_server::store::processes::ProcessCommit;
use tsm_server::store::testing::databases;

/// What the engine does when a process ends: the process row, APDU log and instance state in
/// one commit.
async fn finish(db: &tsm_server::store::Store, process: &str, ok: bool, instance_state: ServiceInstanceState) {
    let mut p = db.processes().get_unscoped(process.parse().unwrap()).await.unwrap().unwrap();
    p.state = if ok { ProcessState::Completed } else { ProcessState::Failed };
    p.progress = Progress { steps_done: 5, steps_total: 5, apdus: 2, round_trips: 1 };
    if !ok {
        p.error = Some(ProcessError { code: "planner.card_error".into(), message: "INSTALL answered 6A80".into() });
    }
    p.started_at = Some(now_ms());
    p.finished_at = Some(now_ms());
    let apdus = [
        ApduLogEntry { process_id: p.id, batch: 0, seq: 0, command: tsm_gp::hex::decode("00A4040008A000000151000000").unwrap(), response: Some(tsm_gp::hex::decode("6F109000").unwrap()), sw: Some(0x9000), at: now_ms() },
        ApduLogEntry { process_id: p.id, batch: 0, seq: 1, command: tsm_gp::hex::decode("80CA00C100").unwrap(), response: Some(tsm_gp::hex::decode("6A88").unwrap()), sw: Some(0x6A88), at: now_ms() },
    ];
    let inst = p.service_instance_id.unwrap();
    db.processes().commit(&p, ProcessCommit { apdus: &apdus, instance_state: Some((inst, instance_state)), ..Default::default() }).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn instance_lifecycle_and_processes() {
    for db in databases().await {
        let ts = TestServer::start(&db).await;
        let t = ts.provider("acme").await;
        let tok = Some(t.token.as_str());
        ts.se_for("CIN-1", "uicc", "uicc", &t, Some(10_000)).await;
        let c = ts.catalog(&t, "wallet", Some("uicc"), Some(6_000)).await;

        // Create (eligibility passes): NOT_DEPLOYED, nothing in flight.
        let (s, inst) = ts.call("POST", "/api/v1/service-instances", tok, Some(json!({"serviceId": c.service_id, "seId": "CIN-1"}))).await;
        assert_eq!(s, 201, "{inst}");
        assert_eq!(inst["state"], "NOT_DEPLOYED");
        assert_eq!(inst["flavorId"], c.flavor_id.as_str(), "the fitting flavor was chosen");
        let iid = inst["id"].as_str().unwrap().to_string();

        // Invalid transitions from NOT_DEPLOYED.
        for op in ["resume", "suspend", "terminate"] {
            assert_err(&ts.call("POST", &format!("/api/v1/service-instances/{iid}/{op}"), tok, None).await, 409, "sp.invalid_transition");
        }
        assert_err(&ts.call("POST", &format!("/api/v1/service-instances/{iid}/update"), tok, Some(json!({"versionTag": "1.0"}))).await, 409, "sp.invalid_transition");
        assert!(db.store.processes().list(t.id.parse().unwrap(), 100).await.unwrap().is_empty(), "refused operations queue nothing");

        // Deploy: 202 with process and session; the session row names the process.
        let (s, q) = ts.call("POST", &format!("/api/v1/service-instances/{iid}/deploy"), tok, None).await;
        assert_eq!(s, 202, "{q}");
        assert_eq!(q["state"], "QUEUED");
        assert_eq!(q["operation"], "deploy");
        let pid = q["processId"].as_str().unwrap().to_string();
        let sid: SeramSessionId = q["sessionId"].as_str().unwrap().parse().unwrap();
        let session = db.store.seram_sessions().get(sid).await.unwrap().expect("SERAM session created");
        assert_eq!(session.process_id.unwrap().to_string(), pid);
        assert_eq!(session.se_id.as_str(), "CIN-1");
        assert_eq!(session.state, SeramSessionState::Created);
        let (s, p) = ts.call("GET", &format!("/api/v1/processes/{pid}"), tok, None).await;
        assert_eq!(s, 200, "{p}");
        assert_eq!((p["state"].as_str(), p["operation"].as_str(), p["sessionId"].as_str()), (Some("QUEUED"), Some("deploy"), Some(sid.to_string().as_str())));
        let (_, i) = ts.call("GET", &format!("/api/v1/service-instances/{iid}"), tok, None).await;
        assert_eq!(i["processInFlight"], pid.as_str());

        // One process in flight: a second deploy (or anything) is refused.
        assert_err(&ts.call("POST", &format!("/api/v1/service-instances/{iid}/deploy"), tok, None).await, 409, "sp.process_in_flight");
        // Concurrent deploys of one instance: exactly one is queued (after the first ends).
        finish(&db.store, &pid, false, ServiceInstanceState::InError).await;
        let (s, p) = ts.call("GET", &format!("/api/v1/processes/{pid}"), tok, None).await;
        assert_eq!(s, 200);
        assert_eq!(p["state"], "FAILED");
        assert_eq!(p["error"]["code"], "planner.card_error");
        assert_eq!(p["progress"], json!({"stepsDone": 5, "stepsTotal": 5, "apdus": 2, "roundTrips": 1}));
        let (s, apdus) = ts.call("GET", &format!("/api/v1/processes/{pid}/apdus"), tok, None).await;
        assert_eq!(s, 200);
        assert_eq!(apdus[0]["command"], "00A4040008A000000151000000");
        assert_eq!(apdus[1]["sw"], "6A88");
        // The operator reads the same process and APDU log without the provider's token; a
        // provider's token is not an admin token, and an unknown process is 404.
        let (s, ap) = ts.admin("GET", &format!("/api/v1/admin/processes/{pid}"), None).await;
        assert_eq!(s, 200, "{ap}");
        assert_eq!(ap, p, "the operator's view of a process is the provider's");
        assert_eq!(ap["spId"], t.id.as_str());
        let (s, aapdus) = ts.admin("GET", &format!("/api/v1/admin/processes/{pid}/apdus"), None).await;
        assert_eq!((s, &aapdus), (200, &apdus));
        assert_eq!(ts.call("GET", &format!("/api/v1/admin/processes/{pid}"), tok, None).await.0, 401);
        assert_err(&ts.admin("GET", &format!("/api/v1/admin/processes/{}", uuid::Uuid::new_v4()), None).await, 404, "sp.not_found");
        assert_err(&ts.admin("GET", "/api/v1/admin/processes/not-a-uuid/apdus", None).await, 404, "sp.not_found");
        let calls: Vec<_> = (0..4)
            .map(|_| {
                let (http, url, token) = (ts.http.clone(), ts.url(&format!("/api/v1/service-instances/{iid}/deploy")), t.token.clone());
                async move {
                    let r = http.post(url).bearer_auth(token).send().await.unwrap();
                    (r.status().as_u16(), r.json::<serde_json::Value>().await.unwrap())
                }
            })
            .collect();
        let results = futures_join(calls).await;
        assert_eq!(results.iter().filter(|r| r.0 == 202).count(), 1, "{results:?}");
        assert!(results.iter().filter(|r| r.0 != 202).all(|r| r.0 == 409 && r.1["code"] == "sp.process_in_flight"), "{results:?}");
        let pid2 = results.iter().find(|r| r.0 == 202).unwrap().1["processId"].as_str().unwrap().to_string();
        finish(&db.store, &pid2, true, ServiceInstanceState::Operational).await;

        // OPERATIONAL: resume is invalid, suspend works, then resume.
        assert_err(&ts.call("POST", &format!("/api/v1/service-instances/{iid}/resume"), tok, None).await, 409, "sp.invalid_transition");
        let (s, q) = ts.call("POST", &format!("/api/v1/service-instances/{iid}/suspend"), tok, None).await;
        assert_eq!(s, 202, "{q}");
        finish(&db.store, q["processId"].as_str().unwrap(), true, ServiceInstanceState::Suspended).await;
        let (s, q) = ts.call("POST", &format!("/api/v1/service-instances/{iid}/resume"), tok, None).await;
        assert_eq!(s, 202, "{q}");
        finish(&db.store, q["processId"].as_str().unwrap(), true, ServiceInstanceState::Operational).await;
        // Update: the target flavor travels in the process for the engine.
        let (s, q) = ts.call("POST", &format!("/api/v1/service-instances/{iid}/update"), tok, Some(json!({"flavorId": c.flavor_id}))).await;
        assert_eq!(s, 202, "{q}");
        let up = db.store.processes().get_unscoped(q["processId"].as_str().unwrap().parse().unwrap()).await.unwrap().unwrap();
        assert_eq!(up.operation, Operation::Update);
        assert_eq!(up.planner_state.unwrap()["request"]["flavorId"], c.flavor_id.as_str());
        finish(&db.store, q["processId"].as_str().unwrap(), true, ServiceInstanceState::Operational).await;
        let (s, q) = ts.call("POST", &format!("/api/v1/service-instances/{iid}/terminate"), tok, None).await;
        assert_eq!(s, 202, "{q}");

        // Processes list, audit trail of every operation.
        let (_, list) = ts.call("GET", "/api/v1/processes", tok, None).await;
        assert_eq!(list.as_array().unwrap().len(), 6, "{list}");
        let audit = db.store.audit_log().list_for_object_unscoped("service_instance", &iid).await.unwrap();
        let actions: Vec<&str> = audit.iter().map(|a| a.action.as_str()).collect();
        assert_eq!(actions, ["create", "deploy", "deploy", "suspend", "resume", "update", "terminate"]);
        assert!(audit.iter().all(|a| a.actor == format!("provider:{}", t.id)));
        // The operator's audit log holds the provider's records (with spId) and the operator's
        // own (the SE registration, no spId), in order; paging by id works.
        let (s, all) = ts.admin("GET", "/api/v1/admin/audit-log?limit=1000", None).await;
        assert_eq!(s, 200, "{all}");
        let all = all.as_array().unwrap();
        let (_, own) = ts.call("GET", "/api/v1/audit-log?limit=1000", tok, None).await;
        let own = own.as_array().unwrap();
        assert!(all.len() > own.len(), "operator records too: {all:?}");
        assert!(own.iter().all(|r| all.contains(r)), "every provider record is in the operator's log");
        assert!(all.iter().any(|r| r["spId"].is_null() && r["objectType"] == "secure_element"), "{all:?}");
        assert!(all.windows(2).all(|w| w[0]["id"].as_i64() < w[1]["id"].as_i64()));
        let after = all[0]["id"].as_i64().unwrap();
        let (_, page) = ts.admin("GET", &format!("/api/v1/admin/audit-log?after={after}&limit=2"), None).await;
        assert_eq!(page.as_array().unwrap().as_slice(), &all[1..3]);
        assert_err(&ts.admin("GET", "/api/v1/admin/audit-log?limit=x", None).await, 400, "request.invalid");
        ts.stop().await;
        db.finish().await;
    }
}

async fn futures_join<F: std::future::Future<Output = T> + Send + 'static, T: Send + 'static>(fs: Vec<F>) -> Vec<T> {
    let hs: Vec<_> = fs.into_iter().map(tokio::spawn).collect();
    let mut out = Vec::new();
    for h in hs {
        out.push(h.await.unwrap());
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn eligibility() {
    for db in databases().await {
        let ts = TestServer::start(&db).await;
        let t = ts.provider("acme").await;
        let tok = Some(t.token.as_str());
        ts.se_for("CIN-ESE", "ese", "ese", &t, Some(10_000)).await;
        ts.se_for("CIN-UICC", "uicc", "uicc", &t, Some(10_000)).await;
        // An SE the provider has no SSD on, and one that does not exist: the same 404.
        let (s, _) = ts.admin("POST", "/api/v1/admin/secure-elements", Some(json!({"seId": "CIN-OTHER", "carrier": "uicc", "profile": "uicc", "isdAid": "A000000151000000"}))).await;
        assert_eq!(s, 201);
        let c = ts.catalog(&t, "wallet", Some("uicc"), Some(6_000)).await;
        for se in ["CIN-OTHER", "CIN-NONE", "bad id with spaces"] {
            assert_err(&ts.call("POST", "/api/v1/service-instances", tok, Some(json!({"serviceId": c.service_id, "seId": se}))).await, 404, "sp.not_found");
        }
        // The only flavor is for UICCs.
        assert_err(&ts.call("POST", "/api/v1/service-instances", tok, Some(json!({"serviceId": c.service_id, "seId": "CIN-ESE"}))).await, 422, "sp.not_eligible");
        assert_err(&ts.call("POST", "/api/v1/service-instances", tok, Some(json!({"serviceId": c.service_id, "seId": "CIN-ESE", "flavorId": c.flavor_id}))).await, 422, "sp.not_eligible");
        // Quota: 6000 of 10000 per instance; the second deployed one does not fit.
        let (s, a) = ts.call("POST", "/api/v1/service-instances", tok, Some(json!({"serviceId": c.service_id, "seId": "CIN-UICC"}))).await;
        assert_eq!(s, 201, "{a}");
        let (s, b) = ts.call("POST", "/api/v1/service-instances", tok, Some(json!({"serviceId": c.service_id, "seId": "CIN-UICC"}))).await;
        assert_eq!(s, 201, "{b}");
        let (s, q) = ts.call("POST", &format!("/api/v1/service-instances/{}/deploy", a["id"].as_str().unwrap()), tok, None).await;
        assert_eq!(s, 202, "{q}");
        finish(&db.store, q["processId"].as_str().unwrap(), true, ServiceInstanceState::Operational).await;
        assert_err(&ts.call("POST", &format!("/api/v1/service-instances/{}/deploy", b["id"].as_str().unwrap()), tok, None).await, 422, "sp.quota_exceeded");
        assert_err(&ts.call("POST", "/api/v1/service-instances", tok, Some(json!({"serviceId": c.service_id, "seId": "CIN-UICC"}))).await, 422, "sp.quota_exceeded");
        // A module that is not in the version's ELF.
        let (s, f) = ts.call("POST", &format!("/api/v1/services/{}/versions/1.0/flavors", c.service_id), tok, Some(json!({"name": "ese"}))).await;
        assert_eq!(s, 201);
        let r = ts
            .call("POST", &format!("/api/v1/services/{}/flavors/{}/application-configs", c.service_id, f["id"].as_str().unwrap()), tok, Some(json!({"moduleAid": "A0000000010101", "instanceAid": "A0000000010101"})))
            .await;
        assert_err(&r, 422, "sp.module_not_in_elf");
        ts.stop().await;
        db.finish().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn personalization_scripts_seal_sensitive_blocks() {
    for db in databases().await {
        let ts = TestServer::start(&db).await;
        let t = ts.provider("acme").await;
        let tok = Some(t.token.as_str());
        let c = ts.catalog(&t, "wallet", None, None).await;
        let (s, a) = ts.call("GET", &format!("/api/v1/application-configs/{}", c.app_config_id), tok, None).await;
        assert_eq!(s, 200);
        // C9 empty, EF with C8 (nv quota 1024 = 0400).
        assert_eq!(a["installParameters"], "C900EF04C8020400", "{a}");
        let secret = "8F0110112233445566778899AABBCCDDEEFF00";
        let (s, p) = ts
            .call(
                "POST",
                "/api/v1/personalization-scripts",
                tok,
                Some(json!({"applicationConfigId": c.app_config_id, "name": "keys", "blocks": [{"data": "0101035A0102"}, {"data": secret, "sensitive": true}]})),
            )
            .await;
        assert_eq!(s, 201, "{p}");
        assert!(!p.to_string().contains(&secret[6..]), "sensitive data never returned: {p}");
        assert_eq!(p["blocks"][0]["data"], "0101035A0102");
        assert_eq!(p["blocks"][1]["data"], serde_json::Value::Null);
        assert_eq!(p["blocks"][1]["length"], 19);
        // Stored sealed; the engine opens it with the key store.
        let id: PersoScriptId = p["id"].as_str().unwrap().parse().unwrap();
        let stored = db.store.personalization_scripts().get(t.id.parse().unwrap(), id).await.unwrap().unwrap();
        let plain = tsm_gp::hex::decode(secret).unwrap();
        assert!(stored.blocks[1].encrypt);
        assert!(!stored.blocks[1].data.windows(8).any(|w| plain.windows(8).any(|p| p == w)), "no plaintext at rest");
        let keys = ts.state.keys.clone();
        let opened = tokio::task::spawn_blocking(move || tsm_server::api::sealing::open_script(keys.as_ref(), &stored).unwrap()).await.unwrap();
        assert_eq!(opened[1].data, plain);
        assert_eq!(opened[0].data, tsm_gp::hex::decode("0101035A0102").unwrap());
        // Not DGIs, not hex: refused.
        for bad in ["0101", "zz"] {
            let r = ts.call("POST", "/api/v1/personalization-scripts", tok, Some(json!({"applicationConfigId": c.app_config_id, "name": "bad", "blocks": [{"data": bad}]}))).await;
            assert_err(&r, 400, "request.invalid");
        }
        let (s, l) = ts.call("GET", &format!("/api/v1/personalization-scripts?applicationConfigId={}", c.app_config_id), tok, None).await;
        assert_eq!((s, l.as_array().unwrap().len()), (200, 1));
        ts.stop().await;
        db.finish().await;
    }
}
