//! Onboarding (admin API), provider authentication, error answers and the OpenAPI document,
//! over HTTP on loopback, on SQLite and PostgreSQL.

mod api_support;

use api_support::*;
use serde_json::{Value, json};
use tsm_server::app::token_hash;
use tsm_server::domain::{ApiToken, ProviderId, TokenId, now_ms};
use tsm_server::store::testing::{databases, first_database};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn onboarding_shows_kcvs_never_keys() {
    for db in databases().await {
        let ts = TestServer::start(&db).await;
        let t = ts.provider("acme").await;

        // Issuer with master keys (GPPro default key 40..4F as master).
        let master = "404142434445464748494A4B4C4D4E4F";
        let (s, issuer) = ts
            .admin("POST", "/api/v1/admin/issuers", Some(json!({"name": "issuer-1", "diversification": "emv-cps11", "masterKeys": {"kind": "imported", "kvn": 1, "alg": "des3-2k", "enc": master, "mac": master, "dek": master}})))
            .await;
        assert_eq!(s, 201, "{issuer}");
        assert!(!issuer.to_string().contains(master), "key values are never returned: {issuer}");
        // KCV of the GP default 3DES key 40..4F (GPCS KCV: 3DES-ECB of 8 zero bytes) is 8BAF47.
        assert_eq!(issuer["masterKeyset"]["kcvs"]["enc"], "8BAF47", "{issuer}");

        // SE with imported ISD keys: the pySim SCP03 vector keys, whose KCVs the vectors give
        // (testdata/vectors/README.md, SCP03_KCV_Test: ENC C35280, MAC 013808, DEK 840DE5).
        let sd = ts.se_for("CIN-0001", "uicc", "uicc", &t, Some(32_000)).await;
        assert_eq!(sd["kind"], "ssd");
        assert_eq!(sd["providerId"], t.id.as_str());
        assert_eq!(sd["memoryQuota"], 32_000);
        let (s, se) = ts.admin("GET", "/api/v1/admin/secure-elements/CIN-0001", None).await;
        assert_eq!(s, 200, "{se}");
        let k = &se["isdKeyset"];
        assert_eq!((k["kcvs"]["enc"].as_str(), k["kcvs"]["mac"].as_str(), k["kcvs"]["dek"].as_str()), (Some("C35280"), Some("013808"), Some("840DE5")), "{se}");
        assert!(!se.to_string().contains("000102030405060708090A0B0C0D0E0F"));
        assert_eq!(se["securityDomains"].as_array().unwrap().len(), 2, "ISD and the provider's SSD: {se}");

        // SE with keys diversified from the issuer's master keys.
        let iid = issuer["id"].as_str().unwrap();
        let (s, se2) = ts
            .admin("POST", "/api/v1/admin/secure-elements", Some(json!({"seId": "CIN-0002", "carrier": "ese", "profile": "ese", "issuerId": iid, "isdAid": "A000000151000000", "isdKeys": {"kind": "diversified"}, "cplc": "00".repeat(42)})))
            .await;
        assert_eq!(s, 201, "{se2}");
        assert_eq!(se2["isdKeyset"]["kind"], "diversified");
        assert_eq!(se2["isdKeyset"]["diversification"], "emv-cps11");
        // Diversified without an issuer's master keys: refused.
        let r = ts.admin("POST", "/api/v1/admin/secure-elements", Some(json!({"seId": "CIN-0003", "carrier": "ese", "profile": "ese", "isdAid": "A000000151000000", "isdKeys": {"kind": "diversified"}}))).await;
        assert_err(&r, 422, "admin.no_master_keys");
        // Bad key length, bad AID, duplicate SE, unknown provider for an SSD.
        let r = ts
            .admin("POST", "/api/v1/admin/secure-elements", Some(json!({"seId": "CIN-0004", "carrier": "ese", "profile": "ese", "isdAid": "A000000151000000", "isdKeys": {"kind": "imported", "kvn": 1, "alg": "aes128", "enc": "00", "mac": "00", "dek": "00"}})))
            .await;
        assert_err(&r, 400, "request.invalid");
        let r = ts.admin("POST", "/api/v1/admin/secure-elements", Some(json!({"seId": "CIN-0005", "carrier": "ese", "profile": "ese", "isdAid": "A0"}))).await;
        assert_err(&r, 400, "request.invalid");
        let r = ts.admin("POST", "/api/v1/admin/secure-elements", Some(json!({"seId": "CIN-0001", "carrier": "ese", "profile": "ese", "isdAid": "A000000151000000"}))).await;
        assert_err(&r, 409, "sp.conflict");
        // A profile the engine does not know, or one of another carrier: refused at once rather
        // than failing every later process on the SE.
        let r = ts.admin("POST", "/api/v1/admin/secure-elements", Some(json!({"seId": "CIN-0006", "carrier": "uicc", "profile": "generic-uicc", "isdAid": "A000000151000000"}))).await;
        assert_err(&r, 400, "request.invalid");
        assert!(r.1.to_string().contains("uicc, microsd, ese"), "{}", r.1);
        let r = ts.admin("POST", "/api/v1/admin/secure-elements", Some(json!({"seId": "CIN-0007", "carrier": "microsd", "profile": "ese", "isdAid": "A000000151000000"}))).await;
        assert_err(&r, 400, "request.invalid");
        assert!(db.store.secure_elements().get(&"CIN-0006".parse().unwrap()).await.unwrap().is_none(), "nothing stored for an unknown profile");
        let r = ts.admin("POST", "/api/v1/admin/secure-elements/CIN-0002/security-domains", Some(json!({"providerId": uuid::Uuid::new_v4(), "aid": "A00000015153504101"}))).await;
        assert_err(&r, 404, "sp.not_found");
        assert!(db.store.secure_elements().get(&"CIN-0004".parse().unwrap()).await.unwrap().is_none(), "nothing stored for a refused SE");

        // The provider sees its SSD; the audit log recorded the onboarding.
        let (s, sds) = ts.call("GET", "/api/v1/security-domains", Some(&t.token), None).await;
        assert_eq!(s, 200);
        assert_eq!(sds.as_array().unwrap().len(), 1, "{sds}");
        let audit = db.store.audit_log().list_for_object_unscoped("secure_element", "CIN-0001").await.unwrap();
        assert_eq!(audit.len(), 1);
        assert_eq!(audit[0].actor, "admin");
        // Duplicate provider name.
        let r = ts.admin("POST", "/api/v1/admin/service-providers", Some(json!({"name": "acme"}))).await;
        assert_err(&r, 409, "sp.conflict");
        ts.stop().await;
        db.finish().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn authentication() {
    for db in databases().await {
        let ts = TestServer::start(&db).await;
        let t = ts.provider("acme").await;
        let (s, me) = ts.call("GET", "/api/v1/serviceproviders/current", Some(&t.token), None).await;
        assert_eq!(s, 200, "{me}");
        assert_eq!(me["name"], "acme");
        assert_eq!(me["id"], t.id.as_str());

        // Missing, malformed, unknown tokens.
        assert_err(&ts.call("GET", "/api/v1/serviceproviders/current", None, None).await, 401, "auth.missing_token");
        assert_err(&ts.call("GET", "/api/v1/serviceproviders/current", Some("nope"), None).await, 401, "auth.invalid_token");
        let resp = ts.http.get(ts.url("/api/v1/serviceproviders/current")).header("authorization", format!("Basic {}", t.token)).send().await.unwrap();
        assert_eq!(resp.status().as_u16(), 401);
        assert_eq!(resp.headers().get("www-authenticate").unwrap(), "Bearer");
        // The long-term token only buys short-term ones; a short-term token buys nothing.
        assert_err(&ts.call("GET", "/api/v1/serviceproviders/current", Some(&t.long_term), None).await, 401, "auth.invalid_token");
        assert_err(&ts.call("POST", "/api/v1/auth", Some(&t.token), None).await, 401, "auth.invalid_token");
        assert_err(&ts.call("POST", "/api/v1/auth", Some("tsm_lt_00"), None).await, 401, "auth.invalid_token");
        // An expired short-term token.
        let expired = "tsm_st_expired-token-for-the-test";
        db.store
            .api_tokens()
            .create(&ApiToken {
                id: TokenId::new(),
                provider_id: t.id.parse::<ProviderId>().unwrap(),
                label: "short-term".into(),
                token_hash: token_hash(expired),
                created_at: now_ms() - 7_200_000,
                expires_at: Some(now_ms() - 1),
                revoked_at: None,
                last_used_at: None,
            })
            .await
            .unwrap();
        assert_err(&ts.call("GET", "/api/v1/services", Some(expired), None).await, 401, "auth.invalid_token");
        // Only hashes are stored.
        let tokens = db.store.api_tokens().list(t.id.parse().unwrap()).await.unwrap();
        assert!(tokens.iter().all(|x| x.token_hash != t.token && x.token_hash != t.long_term && x.token_hash.len() == 64));
        assert!(tokens.iter().any(|x| x.token_hash == token_hash(&t.token) && x.expires_at.is_some_and(|e| e > now_ms() + 3_000_000)));
        // The admin API wants the admin token, not a provider's.
        assert_err(&ts.call("GET", "/api/v1/admin/service-providers", Some(&t.token), None).await, 401, "auth.invalid_token");
        assert_err(&ts.call("GET", "/api/v1/admin/service-providers", None, None).await, 401, "auth.missing_token");
        let (s, l) = ts.admin("GET", "/api/v1/admin/service-providers", None).await;
        assert_eq!(s, 200);
        assert!(!l.to_string().contains("tsm_"), "no tokens in listings: {l}");
        // A rotated long-term token works, the first one still too.
        let (s, r) = ts.admin("POST", &format!("/api/v1/admin/service-providers/{}/tokens", t.id), None).await;
        assert_eq!(s, 201);
        let (s, _) = ts.call("POST", "/api/v1/auth", Some(r["longTermToken"].as_str().unwrap()), None).await;
        assert_eq!(s, 200);
        ts.stop().await;
        db.finish().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn error_answers() {
    for db in databases().await {
        let ts = TestServer::start(&db).await;
        let t = ts.provider("acme").await;
        let tok = Some(t.token.as_str());
        // Malformed JSON, wrong fields, unknown fields, wrong content type.
        let resp = ts.http.post(ts.url("/api/v1/services")).bearer_auth(&t.token).header("content-type", "application/json").body("{\"name\": ").send().await.unwrap();
        assert_eq!(resp.status().as_u16(), 400);
        let b: Value = resp.json().await.unwrap();
        assert_eq!(b["code"], "request.malformed_json", "{b}");
        assert_err(&ts.call("POST", "/api/v1/services", tok, Some(json!({"name": 5}))).await, 400, "request.invalid");
        assert_err(&ts.call("POST", "/api/v1/services", tok, Some(json!({"name": "x", "colour": "red"}))).await, 400, "request.invalid");
        assert_err(&ts.call("POST", "/api/v1/services", tok, Some(json!({}))).await, 400, "request.invalid");
        let resp = ts.http.post(ts.url("/api/v1/services")).bearer_auth(&t.token).header("content-type", "text/plain").body("{}").send().await.unwrap();
        assert_eq!(resp.status().as_u16(), 415);
        // Too large a JSON body (default limit 1 MiB).
        let big = json!({"name": "x".repeat(2 * 1024 * 1024)});
        assert_err(&ts.call("POST", "/api/v1/services", tok, Some(big)).await, 413, "request.too_large");
        // Unknown ids (well-formed or not), unknown routes, wrong methods.
        let u = uuid::Uuid::new_v4();
        assert_err(&ts.call("GET", &format!("/api/v1/services/{u}"), tok, None).await, 404, "sp.not_found");
        assert_err(&ts.call("GET", "/api/v1/services/not-a-uuid", tok, None).await, 404, "sp.not_found");
        assert_err(&ts.call("GET", &format!("/api/v1/processes/{u}"), tok, None).await, 404, "sp.not_found");
        assert_err(&ts.call("GET", &format!("/api/v1/executable-load-files/{u}"), tok, None).await, 404, "sp.not_found");
        assert_err(&ts.call("GET", "/api/v1/nothing-here", tok, None).await, 404, "request.no_route");
        assert_err(&ts.call("PATCH", "/api/v1/services", tok, None).await, 405, "request.method_not_allowed");
        // Nothing was created by the refused requests.
        assert!(db.store.services().list(t.id.parse().unwrap()).await.unwrap().is_empty());
        ts.stop().await;
        db.finish().await;
    }
}

/// Every route of the router is in `/openapi.json` and every operation of the document is
/// routed. (The document is generated from the handlers' declarations; this checks the
/// serving, and that no route was added around it.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn openapi_covers_every_route() {
    let db = first_database().await;
    let ts = TestServer::start(&db).await;
    let (s, doc) = ts.call("GET", "/openapi.json", None, None).await;
    assert_eq!(s, 200);
    assert!(doc["openapi"].as_str().unwrap().starts_with("3."));
    let paths = doc["paths"].as_object().unwrap();
    // The provider API's routes, as docs/provider-api.md lists them.
    let expected = [
        ("post", "/api/v1/auth"),
        ("get", "/api/v1/serviceproviders/current"),
        ("put", "/api/v1/serviceproviders/current"),
        ("get", "/api/v1/audit-log"),
        ("get", "/api/v1/services"),
        ("post", "/api/v1/services"),
        ("get", "/api/v1/services/{serviceId}"),
        ("put", "/api/v1/services/{serviceId}"),
        ("delete", "/api/v1/services/{serviceId}"),
        ("get", "/api/v1/services/{serviceId}/versions"),
        ("post", "/api/v1/services/{serviceId}/versions"),
        ("get", "/api/v1/services/{serviceId}/versions/{tag}"),
        ("delete", "/api/v1/services/{serviceId}/versions/{tag}"),
        ("get", "/api/v1/services/{serviceId}/versions/{tag}/flavors"),
        ("post", "/api/v1/services/{serviceId}/versions/{tag}/flavors"),
        ("get", "/api/v1/services/{serviceId}/flavors/{flavorId}"),
        ("delete", "/api/v1/services/{serviceId}/flavors/{flavorId}"),
        ("get", "/api/v1/services/{serviceId}/flavors/{flavorId}/application-configs"),
        ("post", "/api/v1/services/{serviceId}/flavors/{flavorId}/application-configs"),
        ("get", "/api/v1/application-configs/{applicationConfigId}"),
        ("delete", "/api/v1/application-configs/{applicationConfigId}"),
        ("get", "/api/v1/personalization-scripts"),
        ("post", "/api/v1/personalization-scripts"),
        ("get", "/api/v1/personalization-scripts/{personalizationScriptId}"),
        ("delete", "/api/v1/personalization-scripts/{personalizationScriptId}"),
        ("get", "/api/v1/executable-load-files"),
        ("post", "/api/v1/executable-load-files"),
        ("get", "/api/v1/executable-load-files/{elfId}"),
        ("delete", "/api/v1/executable-load-files/{elfId}"),
        ("get", "/api/v1/executable-load-files/{elfId}/binary"),
        ("get", "/api/v1/security-domains"),
        ("get", "/api/v1/security-domains/{sdId}"),
        ("get", "/api/v1/service-instances"),
        ("post", "/api/v1/service-instances"),
        ("get", "/api/v1/service-instances/{instanceId}"),
        ("post", "/api/v1/service-instances/{instanceId}/deploy"),
        ("post", "/api/v1/service-instances/{instanceId}/update"),
        ("post", "/api/v1/service-instances/{instanceId}/suspend"),
        ("post", "/api/v1/service-instances/{instanceId}/resume"),
        ("post", "/api/v1/service-instances/{instanceId}/terminate"),
        ("get", "/api/v1/processes"),
        ("get", "/api/v1/processes/{processId}"),
        ("get", "/api/v1/processes/{processId}/apdus"),
        ("get", "/api/v1/admin/service-providers"),
        ("post", "/api/v1/admin/service-providers"),
        ("post", "/api/v1/admin/service-providers/{spId}/tokens"),
        ("get", "/api/v1/admin/issuers"),
        ("post", "/api/v1/admin/issuers"),
        ("post", "/api/v1/admin/secure-elements"),
        ("get", "/api/v1/admin/secure-elements/{seId}"),
        ("post", "/api/v1/admin/secure-elements/{seId}/security-domains"),
        ("get", "/api/v1/admin/processes/{processId}"),
        ("get", "/api/v1/admin/processes/{processId}/apdus"),
        ("get", "/api/v1/admin/audit-log"),
    ];
    let mut documented = 0;
    for (path, item) in paths {
        for (method, op) in item.as_object().unwrap() {
            if !["get", "post", "put", "delete", "patch"].contains(&method.as_str()) {
                continue;
            }
            documented += 1;
            assert!(expected.contains(&(method.as_str(), path.as_str())), "documented but not expected: {method} {path}");
            assert!(op["responses"].as_object().is_some_and(|r| !r.is_empty()), "{method} {path} has responses");
            // The document's operation is routed: without credentials the answer is an auth
            // error (or 200 for nothing here), never "no route" or "method not allowed".
            let concrete = path
                .replace("{serviceId}", &uuid::Uuid::nil().to_string())
                .replace("{flavorId}", &uuid::Uuid::nil().to_string())
                .replace("{tag}", "1.0")
                .replace("{applicationConfigId}", &uuid::Uuid::nil().to_string())
                .replace("{personalizationScriptId}", &uuid::Uuid::nil().to_string())
                .replace("{elfId}", &uuid::Uuid::nil().to_string())
                .replace("{sdId}", &uuid::Uuid::nil().to_string())
                .replace("{instanceId}", &uuid::Uuid::nil().to_string())
                .replace("{processId}", &uuid::Uuid::nil().to_string())
                .replace("{spId}", &uuid::Uuid::nil().to_string())
                .replace("{seId}", "CIN-X");
            let (s, b) = ts.call(&method.to_uppercase(), &concrete, None, None).await;
            assert_eq!(s, 401, "{method} {path}: {b}");
            assert!(b["code"].as_str().unwrap().starts_with("auth."), "{method} {path}: {b}");
        }
    }
    assert_eq!(documented, expected.len(), "every expected route is documented");
    for scheme in ["bearer", "longTermToken", "adminToken"] {
        assert!(doc["components"]["securitySchemes"][scheme].is_object(), "{scheme}");
    }
    assert!(doc["components"]["schemas"]["ErrorBody"].is_object());
    // The health check and the document itself.
    let (s, h) = ts.call("GET", "/health", None, None).await;
    assert_eq!((s, h["status"].as_str()), (200, Some("ok")));
    ts.stop().await;
    db.finish().await;
}
