//! The device API by hand (reqwest as the phone, a simulated card), on SQLite and PostgreSQL:
//! unknown sessions, the handshake's checks, a repeated report (same order, nothing changes),
//! a stale one (409), a report that does not fit its order (400), a forged cookie, the order
//! provisioning interface and its authorization, long polls (the configured time, and early
//! when work is queued).

mod engine_support;
use engine_support::*;
use serde_json::{Value, json};
use std::time::{Duration, Instant};
use tsm_server::store::testing::{TestDb, databases};

const SE: &str = "CIN-PROTO-1";
const INST: &str = "D0D1D2D3D4D5010101";

/// The versions of the process and the session rows (what "nothing changed" compares).
async fn versions(db: &TestDb, pid: &str, sid: &str) -> (i64, i64, i64) {
    let p = db.store.processes().get_unscoped(pid.parse().unwrap()).await.unwrap().unwrap();
    let s = db.store.seram_sessions().get(sid.parse().unwrap()).await.unwrap().unwrap();
    let n = db.store.apdu_log().count_unscoped(p.id).await.unwrap();
    (p.version, s.version, n)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn handshake_replays_and_stale_reports() {
    for db in databases().await {
        let tag = db.label;
        let (ts, t) = acme_with_se(&db, SE).await;
        let iid = service_instance(&ts, &t, "wallet", INST, true, SE).await;
        let (pid, sid) = queue(&ts, &t, &iid, "deploy").await;
        let card = card(3);
        let http = reqwest::Client::new();
        let base = ts.base.clone();

        // Unknown and malformed session ids: 404.
        let other = uuid::Uuid::new_v4().to_string();
        for (path, body) in [("handshake", handshake_body(SE)), ("remoteManagement", polling())] {
            let (s, b, _) = seram(&http, &base, path, &other, &body, None).await;
            assert_eq!((s, b["code"].as_str()), (404, Some("seram.unknown_session")), "{tag}: {b}");
            let (s, b, _) = seram(&http, &base, path, "not-a-session", &body, None).await;
            assert_eq!((s, b["code"].as_str()), (404, Some("seram.unknown_session")), "{tag}: {b}");
        }
        // A report before the handshake.
        let (s, b, _) = seram(&http, &base, "remoteManagement", &sid, &polling(), None).await;
        assert_eq!((s, b["code"].as_str()), (409, Some("seram.no_handshake")), "{tag}: {b}");
        // The session's SE must be offered; the protocols must fit.
        let (s, b, _) = seram(&http, &base, "handshake", &sid, &handshake_body("CIN-SOMEONE-ELSE"), None).await;
        assert_eq!((s, b["code"].as_str()), (406, Some("seram.se_mismatch")), "{tag}: {b}");
        assert!(b["message"].as_str().unwrap().contains("CIN-SOMEONE-ELSE"), "{tag}: the message says what was offered: {b}");
        let (s, b, _) = seram(&http, &base, "handshake", &sid, &json!({"secureElements": [{"seType": "eSE", "seId": SE}], "supportedVersions": ["1.0.0"]}), None).await;
        assert_eq!((s, b["code"].as_str()), (406, Some("seram.not_acceptable")), "{tag}: {b}");
        // The spec's example spelling (supportedVersion) is fine.
        let (s, hs, c0) = seram(&http, &base, "handshake", &sid, &json!({"secureElements": [{"seType": "eSE", "seId": SE}], "supportedVersion": ["2.0.0"]}), None).await;
        assert_eq!(s, 200, "{tag}: {hs}");
        assert_eq!((hs["chosenTransportProtocol"].as_str(), hs["chosenDataFormat"].as_str(), hs["chosenVersion"].as_str()), (Some("HTTPS"), Some("application/json"), Some("2.0.0")));
        let c0 = c0.expect("the handshake sets the order cookie");

        // First order: Start and the first segment, for the session's SE.
        let (s, o1, c1) = seram(&http, &base, "remoteManagement", &sid, &polling(), Some(&c0)).await;
        assert_eq!(s, 200, "{tag}: {o1}");
        assert!(has_command(&o1, "ramStartCommand") && has_command(&o1, "seRamCommand"), "{tag}: {o1}");
        assert_eq!(o1["chosenSecureElement"]["seId"], SE);
        let c1 = c1.unwrap();
        let p = process(&ts, &t, &pid).await;
        assert_eq!(p["state"], "RUNNING", "{tag}: {p}");
        assert!(p["steps"].as_array().unwrap().iter().any(|s| s["state"] == "RUNNING"), "{tag}: the batch's steps run: {p}");
        assert!(!p["steps"].as_array().unwrap().iter().any(|s| s["state"] == "COMPLETED"), "{tag}: nothing is confirmed yet: {p}");
        // The same poll again (our answer lost): the same order.
        let (s, o1b, c1b) = seram(&http, &base, "remoteManagement", &sid, &polling(), Some(&c0)).await;
        assert_eq!((s, &o1b, c1b.as_deref()), (200, &o1, Some(c1.as_str())), "{tag}");

        let r1 = execute(&card, &o1);
        let (s, o2, c2) = seram(&http, &base, "remoteManagement", &sid, &r1, Some(&c1)).await;
        assert_eq!(s, 200, "{tag}: {o2}");
        let c2 = c2.unwrap();
        let before = versions(&db, &pid, &sid).await;
        // Replayed report with its cookie: the same order, nothing changes.
        let (s, o2b, c2b) = seram(&http, &base, "remoteManagement", &sid, &r1, Some(&c1)).await;
        assert_eq!((s, &o2b, c2b.as_deref()), (200, &o2, Some(c2.as_str())), "{tag}");
        // And without the cookie (matched by content).
        let (s, o2c, _) = seram(&http, &base, "remoteManagement", &sid, &r1, None).await;
        assert_eq!((s, &o2c), (200, &o2), "{tag}");
        assert_eq!(versions(&db, &pid, &sid).await, before, "{tag}: repeats change nothing");
        // A different report for the previous order: stale.
        let mut r1x = r1.clone();
        r1x["ramResponses"][0]["listOfRAPDU"][0] = Value::String("6F009000".into());
        let (s, b, _) = seram(&http, &base, "remoteManagement", &sid, &r1x, Some(&c1)).await;
        assert_eq!((s, b["code"].as_str()), (409, Some("seram.stale_report")), "{tag}: {b}");
        let (s, b, _) = seram(&http, &base, "remoteManagement", &sid, &r1, Some(&c0)).await;
        assert_eq!((s, b["code"].as_str()), (409, Some("seram.stale_report")), "{tag}: an older order: {b}");
        // A forged cookie.
        let forged = format!("{}.0011223344556677", c2.split('.').next().unwrap());
        let (s, b, _) = seram(&http, &base, "remoteManagement", &sid, &r1, Some(&forged)).await;
        assert_eq!((s, b["code"].as_str()), (400, Some("seram.bad_report")), "{tag}: {b}");
        assert_eq!(versions(&db, &pid, &sid).await, before, "{tag}: refused reports change nothing");

        // Reports that do not fit the outstanding order: 400, nothing changes, then the real one.
        let r2 = execute(&card, &o2);
        let mut wrong = r2.clone();
        wrong["localAgentStatus"]["executedSeRamCommands"] = json!(0);
        let (s, b, _) = seram(&http, &base, "remoteManagement", &sid, &wrong, Some(&c2)).await;
        assert_eq!((s, b["code"].as_str()), (400, Some("seram.bad_report")), "{tag}: executedSeRamCommands 0: {b}");
        let mut wrong = r2.clone();
        let list = wrong["ramResponses"][0]["listOfRAPDU"].as_array_mut().unwrap();
        list.push(json!("9000"));
        let (s, b, _) = seram(&http, &base, "remoteManagement", &sid, &wrong, Some(&c2)).await;
        assert_eq!((s, b["code"].as_str()), (400, Some("seram.bad_report")), "{tag}: more R-APDUs than C-APDUs: {b}");
        let mut wrong = r2.clone();
        wrong["ramResponses"][0]["listOfRAPDU"].as_array_mut().unwrap().pop();
        let (s, b, _) = seram(&http, &base, "remoteManagement", &sid, &wrong, Some(&c2)).await;
        assert_eq!((s, b["code"].as_str()), (400, Some("seram.bad_report")), "{tag}: fewer R-APDUs without a refusal: {b}");
        assert_eq!(versions(&db, &pid, &sid).await, before, "{tag}");

        // The session to its end by hand.
        let (mut cookie, mut report) = (c2, r2);
        let mut order: Value;
        let mut exchanges = 0;
        loop {
            let (s, o, c) = seram(&http, &base, "remoteManagement", &sid, &report, Some(&cookie)).await;
            assert_eq!(s, 200, "{tag}: {o}");
            exchanges += 1;
            assert!(exchanges < 20, "{tag}: no end");
            order = o;
            cookie = c.unwrap();
            if has_command(&order, "ramStopCommand") {
                break;
            }
            report = execute(&card, &order);
        }
        assert!(order["ramCommands"].as_array().unwrap().iter().any(|c| c["ramCommandType"] == "notificationCommand"), "{tag}: the result is notified: {order}");
        let p = process(&ts, &t, &pid).await;
        assert_eq!(p["state"], "COMPLETED", "{tag}: {p}");
        assert_eq!(instance_state(&ts, &t, &iid).await, "OPERATIONAL");
        assert_eq!(card_registry(&card), db_registry(&db, SE).await, "{tag}");
        // After Stop: the Stop again for a lost answer; the handshake is refused.
        let (s, o, _) = seram(&http, &base, "remoteManagement", &sid, &report, Some(&cookie)).await;
        assert_eq!(s, 200);
        assert!(has_command(&o, "ramStopCommand"), "{tag}: {o}");
        let (s, b, _) = seram(&http, &base, "handshake", &sid, &handshake_body(SE), None).await;
        assert_eq!((s, b["code"].as_str()), (404, Some("seram.session_closed")), "{tag}: {b}");
        ts.stop().await;
        db.finish().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn order_provisioning_and_long_polls() {
    for db in databases().await {
        let tag = db.label;
        let ts = node(&db, "node-a", 1).await;
        let t = ts.provider("acme").await;
        let other = ts.provider("other").await;
        onboard(&ts, &t, SE, 32_000).await;
        let se = json!({"secureElement": {"seType": "eSE", "seId": SE}});

        // Authorization: none → 401; a provider without an SSD on the SE → 404; raw orders → 422.
        let (s, b) = ts.call("POST", "/gp/seram/order", None, Some(se.clone())).await;
        assert_eq!(s, 401, "{tag}: {b}");
        assert_err(&ts.call("POST", "/gp/seram/order", Some(&other.token), Some(se.clone())).await, 404, "sp.not_found");
        assert_err(&ts.admin("POST", "/gp/seram/order", Some(json!({"secureElement": {"seType": "eSE", "seId": "CIN-NONE"}}))).await, 404, "sp.not_found");
        let raw = json!({"secureElement": {"seType": "eSE", "seId": SE}, "remoteManagementOrder": {"ramCommands": [{"ramCommandType": "seRamCommand", "listOfCAPDU": ["00A4040000"]}]}});
        assert_err(&ts.admin("POST", "/gp/seram/order", Some(raw)).await, 422, "seram.raw_orders_unsupported");
        // The provider with an SSD, and the admin; a session id chosen by the caller.
        let (s, b) = ts.call("POST", "/gp/seram/order", Some(&t.token), Some(se.clone())).await;
        assert_eq!(s, 201, "{tag}: {b}");
        let chosen = uuid::Uuid::new_v4().to_string();
        let (s, b) = ts.admin("POST", "/gp/seram/order", Some(json!({"secureElements": [{"seType": "eSE", "seId": SE}], "sessionId": chosen}))).await;
        assert_eq!((s, b["sessionId"].as_str()), (201, Some(chosen.as_str())), "{tag}: {b}");
        let (s, _) = ts.admin("POST", "/gp/seram/order", Some(json!({"secureElements": [{"seType": "eSE", "seId": SE}], "sessionId": chosen}))).await;
        assert_eq!(s, 201, "{tag}: the same request again");
        let sid = chosen;

        // Long poll: nothing to do, the request is held for the configured time (1 s).
        let http = reqwest::Client::new();
        let base = ts.base.clone();
        let (s, _, c0) = seram(&http, &base, "handshake", &sid, &handshake_body(SE), None).await;
        assert_eq!(s, 200);
        let t0 = Instant::now();
        let (s, start, c1) = seram(&http, &base, "remoteManagement", &sid, &polling(), c0.as_deref()).await;
        assert_eq!(s, 200);
        assert!(has_command(&start, "ramStartCommand") && !has_command(&start, "ramStopCommand"), "{tag}: {start}");
        assert!(t0.elapsed() < Duration::from_millis(800), "{tag}: Start is not held");
        let t0 = Instant::now();
        let done = processed_nothing();
        let (s, void, c2) = seram(&http, &base, "remoteManagement", &sid, &done, c1.as_deref()).await;
        let held = t0.elapsed();
        assert_eq!(s, 200, "{tag}: {void}");
        assert!(void.get("ramCommands").is_none(), "{tag}: an empty order: {void}");
        assert_eq!(void["delay"], 0);
        assert!(held >= Duration::from_millis(950) && held < Duration::from_secs(5), "{tag}: held {held:?}");

        // Early answer: a process queued while the request is held wakes it.
        let ts2 = node(&db, "node-b", 10).await;
        let t0 = Instant::now();
        let held_req = {
            let (http, base2, sid, c2) = (http.clone(), ts2.base.clone(), sid.clone(), c2.clone());
            tokio::spawn(async move { seram(&http, &base2, "remoteManagement", &sid, &polling(), c2.as_deref()).await })
        };
        tokio::time::sleep(Duration::from_millis(300)).await;
        let iid = service_instance(&ts2, &t, "wallet", INST, false, SE).await;
        let (pid, _) = queue(&ts2, &t, &iid, "deploy").await;
        let (s, order, mut cookie) = held_req.await.unwrap();
        assert_eq!(s, 200, "{tag}: {order}");
        assert!(has_command(&order, "seRamCommand"), "{tag}: {order}");
        assert!(t0.elapsed() < Duration::from_secs(5), "{tag}: answered when the work came, not after 10 s");
        // The provisioned session carries the process to its end.
        let card = card(5);
        let mut order = order;
        for _ in 0..20 {
            if has_command(&order, "ramStopCommand") {
                break;
            }
            let r = execute(&card, &order);
            let (s, o, c) = seram(&http, &ts2.base, "remoteManagement", &sid, &r, cookie.as_deref()).await;
            assert_eq!(s, 200, "{tag}: {o}");
            order = o;
            cookie = c;
            if !has_command(&order, "seRamCommand") && !has_command(&order, "ramStopCommand") {
                // Done with the work: the provisioned session waits for more; end the test here.
                break;
            }
        }
        let p = process(&ts2, &t, &pid).await;
        assert_eq!(p["state"], "COMPLETED", "{tag}: {p}");
        assert_eq!(p["sessionId"], sid.as_str(), "{tag}: run in the provisioned session");
        ts2.stop().await;
        ts.stop().await;
        db.finish().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_session_waits_for_the_se() {
    for db in databases().await {
        let tag = db.label;
        let (ts, t) = acme_with_se(&db, SE).await;
        let a = service(&ts, &t, "wallet", INST, false).await;
        let b = service(&ts, &t, "transit", "D0D1D2D3D4D5010102", false).await;
        let ia = instance(&ts, &t, &a, SE).await;
        let ib = instance(&ts, &t, &b, SE).await;
        let (pa, s1) = queue(&ts, &t, &ia, "deploy").await;
        let (pb, s2) = queue(&ts, &t, &ib, "deploy").await;
        let card = card(8);
        let http = reqwest::Client::new();
        let base = ts.base.clone();
        // Session 1 takes the SE.
        let (_, _, c) = seram(&http, &base, "handshake", &s1, &handshake_body(SE), None).await;
        let (_, mut o1, mut c1) = seram(&http, &base, "remoteManagement", &s1, &polling(), c.as_deref()).await;
        assert!(has_command(&o1, "seRamCommand"), "{tag}: {o1}");
        // Session 2: Start at once, then held (the SE is busy) until the long poll ends.
        let (_, _, c) = seram(&http, &base, "handshake", &s2, &handshake_body(SE), None).await;
        let (_, start, c2) = seram(&http, &base, "remoteManagement", &s2, &polling(), c.as_deref()).await;
        assert!(has_command(&start, "ramStartCommand") && !has_command(&start, "seRamCommand"), "{tag}: {start}");
        let t0 = Instant::now();
        let done = processed_nothing();
        let (s, void, c2) = seram(&http, &base, "remoteManagement", &s2, &done, c2.as_deref()).await;
        assert_eq!(s, 200, "{tag}: {void}");
        assert!(void.get("ramCommands").is_none(), "{tag}: {void}");
        assert!(t0.elapsed() >= Duration::from_millis(950), "{tag}: held while the SE is busy");
        // Session 1 runs both processes.
        for _ in 0..30 {
            if has_command(&o1, "ramStopCommand") {
                break;
            }
            let r = execute(&card, &o1);
            let (s, o, c) = seram(&http, &base, "remoteManagement", &s1, &r, c1.as_deref()).await;
            assert_eq!(s, 200, "{tag}: {o}");
            (o1, c1) = (o, c);
        }
        assert!(has_command(&o1, "ramStopCommand"), "{tag}");
        for pid in [&pa, &pb] {
            let p = process(&ts, &t, pid).await;
            assert_eq!((p["state"].as_str(), p["sessionId"].as_str()), (Some("COMPLETED"), Some(s1.as_str())), "{tag}: {p}");
        }
        // Session 2 finds nothing left: Stop.
        let (s, stop, _) = seram(&http, &base, "remoteManagement", &s2, &polling(), c2.as_deref()).await;
        assert_eq!(s, 200);
        assert!(has_command(&stop, "ramStopCommand") && !has_command(&stop, "seRamCommand"), "{tag}: {stop}");
        assert_eq!(card_registry(&card), db_registry(&db, SE).await, "{tag}");
        ts.stop().await;
        db.finish().await;
    }
}
