//! Tenancy: provider A reading, changing, deleting or deploying provider B's services,
//! versions, flavors, application configs, personalization scripts, ELFs, SDs, instances and
//! processes gets `404 sp.not_found`, and the database is unchanged. SQLite and PostgreSQL.

mod api_support;

use api_support::*;
use serde_json::{Value, json};
use tsm_server::domain::ProviderId;
use tsm_server::store::Store;
use tsm_server::store::testing::databases;

/// Everything the store holds for provider `p`, as JSON (for before/after comparison).
async fn snapshot(s: &Store, p: ProviderId) -> Value {
    let services = s.services().list(p).await.unwrap();
    let mut versions = Vec::new();
    let mut flavors = Vec::new();
    let mut apps = Vec::new();
    let mut scripts = Vec::new();
    for sv in &services {
        for v in s.service_versions().list(p, sv.id).await.unwrap() {
            for f in s.flavors().list(p, v.id).await.unwrap() {
                for a in s.application_configs().list(p, f.id).await.unwrap() {
                    scripts.extend(s.personalization_scripts().list(p, a.id).await.unwrap());
                    apps.push(a);
                }
                flavors.push(f);
            }
            versions.push(v);
        }
    }
    let processes = s.processes().list(p, 1000).await.unwrap();
    let mut steps = Vec::new();
    let mut apdus = Vec::new();
    for pr in &processes {
        steps.extend(s.processes().steps(p, pr.id).await.unwrap());
        apdus.extend(s.apdu_log().list(p, pr.id).await.unwrap());
    }
    json!({
        "provider": s.providers().get(p).await.unwrap(),
        "services": services, "versions": versions, "flavors": flavors, "apps": apps, "scripts": scripts,
        "elfs": s.load_files().list(p).await.unwrap(),
        "sds": s.security_domains().list(p).await.unwrap(),
        "instances": s.service_instances().list(p).await.unwrap(),
        "processes": processes, "steps": steps, "apdus": apdus,
        "audit": s.audit_log().list(p, 0, 1000).await.unwrap(),
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn another_providers_objects_are_not_found_and_unchanged() {
    for db in databases().await {
        let ts = TestServer::start(&db).await;
        let a = ts.provider("provider-a").await;
        let b = ts.provider("provider-b").await;
        ts.se_for("CIN-B", "uicc", "uicc", &b, None).await;
        let cb = ts.catalog(&b, "b-wallet", None, None).await;
        let (s, script) = ts
            .call("POST", "/api/v1/personalization-scripts", Some(&b.token), Some(json!({"applicationConfigId": cb.app_config_id, "name": "p", "blocks": [{"data": "0101035A0102"}]})))
            .await;
        assert_eq!(s, 201);
        let script_id = script["id"].as_str().unwrap().to_string();
        let (s, inst) = ts.call("POST", "/api/v1/service-instances", Some(&b.token), Some(json!({"serviceId": cb.service_id, "seId": "CIN-B"}))).await;
        assert_eq!(s, 201, "{inst}");
        let iid = inst["id"].as_str().unwrap().to_string();
        let (s, q) = ts.call("POST", &format!("/api/v1/service-instances/{iid}/deploy"), Some(&b.token), None).await;
        assert_eq!(s, 202);
        let pid = q["processId"].as_str().unwrap().to_string();
        let (_, sds) = ts.call("GET", "/api/v1/security-domains", Some(&b.token), None).await;
        let sd_id = sds[0]["id"].as_str().unwrap().to_string();
        // A has its own catalog, so that mixing A's and B's ids is tried too.
        let ca = ts.catalog(&a, "a-wallet", None, None).await;

        let pb: ProviderId = b.id.parse().unwrap();
        let pa: ProviderId = a.id.parse().unwrap();
        let before_b = snapshot(&db.store, pb).await;
        let before_a = snapshot(&db.store, pa).await;
        let (sid, fid, elf, app) = (&cb.service_id, &cb.flavor_id, &cb.elf_id, &cb.app_config_id);
        let tok = Some(a.token.as_str());
        let attempts: Vec<(&str, String, Option<Value>)> = vec![
            ("GET", format!("/api/v1/services/{sid}"), None),
            ("PUT", format!("/api/v1/services/{sid}"), Some(json!({"name": "stolen"}))),
            ("DELETE", format!("/api/v1/services/{sid}"), None),
            ("GET", format!("/api/v1/services/{sid}/versions"), None),
            ("POST", format!("/api/v1/services/{sid}/versions"), Some(json!({"tag": "9.9", "elfId": ca.elf_id}))),
            ("POST", format!("/api/v1/services/{}/versions", ca.service_id), Some(json!({"tag": "9.9", "elfId": elf}))),
            ("GET", format!("/api/v1/services/{sid}/versions/1.0"), None),
            ("DELETE", format!("/api/v1/services/{sid}/versions/1.0"), None),
            ("GET", format!("/api/v1/services/{sid}/versions/1.0/flavors"), None),
            ("POST", format!("/api/v1/services/{sid}/versions/1.0/flavors"), Some(json!({"name": "x"}))),
            ("GET", format!("/api/v1/services/{sid}/flavors/{fid}"), None),
            ("GET", format!("/api/v1/services/{}/flavors/{fid}", ca.service_id), None),
            ("DELETE", format!("/api/v1/services/{}/flavors/{fid}", ca.service_id), None),
            ("GET", format!("/api/v1/services/{sid}/flavors/{fid}/application-configs"), None),
            ("POST", format!("/api/v1/services/{}/flavors/{fid}/application-configs", ca.service_id), Some(json!({"moduleAid": "D0D1D2D3D4D50101", "instanceAid": "D0D1D2D3D4D50102"}))),
            ("GET", format!("/api/v1/application-configs/{app}"), None),
            ("DELETE", format!("/api/v1/application-configs/{app}"), None),
            ("GET", format!("/api/v1/personalization-scripts?applicationConfigId={app}"), None),
            ("POST", "/api/v1/personalization-scripts".into(), Some(json!({"applicationConfigId": app, "name": "x", "blocks": [{"data": "0101035A0102"}]}))),
            ("GET", format!("/api/v1/personalization-scripts/{script_id}"), None),
            ("DELETE", format!("/api/v1/personalization-scripts/{script_id}"), None),
            ("GET", format!("/api/v1/executable-load-files/{elf}"), None),
            ("GET", format!("/api/v1/executable-load-files/{elf}/binary"), None),
            ("DELETE", format!("/api/v1/executable-load-files/{elf}"), None),
            ("GET", format!("/api/v1/security-domains/{sd_id}"), None),
            ("GET", format!("/api/v1/service-instances/{iid}"), None),
            ("POST", format!("/api/v1/service-instances/{iid}/deploy"), None),
            ("POST", format!("/api/v1/service-instances/{iid}/suspend"), None),
            ("POST", format!("/api/v1/service-instances/{iid}/resume"), None),
            ("POST", format!("/api/v1/service-instances/{iid}/terminate"), None),
            ("POST", format!("/api/v1/service-instances/{iid}/update"), Some(json!({"versionTag": "1.0"}))),
            ("POST", "/api/v1/service-instances".into(), Some(json!({"serviceId": sid, "seId": "CIN-B"}))),
            ("POST", "/api/v1/service-instances".into(), Some(json!({"serviceId": ca.service_id, "seId": "CIN-B"}))),
            ("GET", format!("/api/v1/processes/{pid}"), None),
            ("GET", format!("/api/v1/processes/{pid}/apdus"), None),
        ];
        for (m, path, body) in &attempts {
            let r = ts.call(m, path, tok, body.clone()).await;
            assert_eq!((r.0, r.1["code"].as_str()), (404, Some("sp.not_found")), "A {m} {path}: {}", r.1);
            assert!(!r.1.to_string().contains(&b.id), "no trace of B in the answer: {}", r.1);
        }
        // A's listings hold nothing of B's.
        for path in ["/api/v1/services", "/api/v1/executable-load-files", "/api/v1/service-instances", "/api/v1/processes", "/api/v1/security-domains", "/api/v1/audit-log"] {
            let (s, l) = ts.call("GET", path, tok, None).await;
            assert_eq!(s, 200, "{path}");
            for x in [sid, elf, &iid, &pid, &sd_id] {
                assert!(!l.to_string().contains(x.as_str()), "{path} shows B's {x}: {l}");
            }
        }
        assert_eq!(snapshot(&db.store, pb).await, before_b, "B's data unchanged");
        assert_eq!(snapshot(&db.store, pa).await, before_a, "nothing created for A either");
        ts.stop().await;
        db.finish().await;
    }
}
