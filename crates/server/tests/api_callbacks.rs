//! Callbacks: a process's end is posted to the provider's callback URL and retried with
//! backoff until a 2xx, against a local HTTP receiver that fails twice then accepts; an
//! unreachable URL is given up after `max_attempts`. SQLite and PostgreSQL.

mod api_support;

use api_support::*;
use axum::http::{HeaderMap, StatusCode};
use serde_json::{Value, json};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tsm_server::config::{CallbacksConfig, Config};
use tsm_server::domain::*;
use tsm_server::store::processes::ProcessCommit;
use tsm_server::store::testing::{databases, first_database};

#[derive(Default)]
struct Received {
    calls: Vec<(HeaderMap, Value)>,
}

/// A receiver answering 500 twice, then 200.
async fn receiver() -> (String, Arc<Mutex<Received>>) {
    let rec = Arc::new(Mutex::new(Received::default()));
    let r2 = rec.clone();
    let app = axum::Router::new().route(
        "/cb",
        axum::routing::post(move |headers: HeaderMap, axum::Json(body): axum::Json<Value>| {
            let rec = r2.clone();
            async move {
                let mut g = rec.lock().unwrap();
                g.calls.push((headers, body));
                if g.calls.len() <= 2 { StatusCode::INTERNAL_SERVER_ERROR } else { StatusCode::OK }
            }
        }),
    );
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/cb", l.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(l, app).await.unwrap() });
    (url, rec)
}

async fn wait_for<F: AsyncFnMut() -> bool>(mut f: F) {
    for _ in 0..200 {
        if f().await {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("condition not reached in 10 s");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn callbacks_are_retried_until_accepted() {
    for db in databases().await {
        let (url, rec) = receiver().await;
        let config = Config { callbacks: CallbacksConfig { max_attempts: 3, initial_backoff_ms: 50, max_backoff_ms: 200, timeout_ms: 2000 }, ..Config::default() };
        let ts = TestServer::start_with(&db, api_config(), config).await;
        let t = ts.provider_with("acme", Some(&url)).await;
        ts.se_for("CIN-1", "uicc", "uicc", &t, None).await;
        let c = ts.catalog(&t, "wallet", None, None).await;
        let (_, inst) = ts.call("POST", "/api/v1/service-instances", Some(&t.token), Some(json!({"serviceId": c.service_id, "seId": "CIN-1"}))).await;
        let (s, q) = ts.call("POST", &format!("/api/v1/service-instances/{}/deploy", inst["id"].as_str().unwrap()), Some(&t.token), None).await;
        assert_eq!(s, 202);

        // The engine ends the process and queues the callback in the same commit.
        let mut p = db.store.processes().get_unscoped(q["processId"].as_str().unwrap().parse().unwrap()).await.unwrap().unwrap();
        p.state = ProcessState::Completed;
        p.finished_at = Some(now_ms());
        let entry = tsm_server::callbacks::entry_for(&db.store, &p).await.unwrap().expect("provider has a callback URL");
        db.store.processes().commit(&p, ProcessCommit { instance_state: Some((p.service_instance_id.unwrap(), ServiceInstanceState::Operational)), callback: Some(&entry), ..Default::default() }).await.unwrap();

        // A process of a provider that stopped listening: given up after 3 attempts.
        let mut gone = p.clone();
        gone.id = ProcessId::new();
        let dead = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            format!("http://{}/cb", l.local_addr().unwrap())
        };
        let (s, _) = ts.call("PUT", "/api/v1/serviceproviders/current", Some(&t.token), Some(json!({"callbackUrl": dead}))).await;
        assert_eq!(s, 200);
        db.store.processes().create(&Process { state: ProcessState::Failed, version: 0, ..gone.clone() }, &[]).await.unwrap();
        let dead_id = tsm_server::callbacks::enqueue(&db.store, &gone).await.unwrap().unwrap();

        let worker = tokio::spawn(tsm_server::callbacks::run(ts.state.clone()));
        let store = db.store.clone();
        let pid = p.id;
        let provider: ProviderId = t.id.parse().unwrap();
        wait_for(async || store.callbacks().list_for_process(provider, pid).await.unwrap()[0].delivered_at.is_some()).await;
        wait_for(async || store.callbacks().list_for_process(provider, gone.id).await.unwrap()[0].attempts == 3).await;

        let calls = std::mem::take(&mut rec.lock().unwrap().calls);
        assert_eq!(calls.len(), 3, "two failures, then accepted");
        for (i, (h, body)) in calls.iter().enumerate() {
            assert_eq!(h["x-tsm-callback-id"], entry.id.to_string().as_str());
            assert_eq!(h["x-tsm-attempt"], (i + 1).to_string().as_str());
            assert_eq!(body["processId"], p.id.to_string().as_str());
            assert_eq!(body["state"], "COMPLETED");
            assert_eq!(body["operation"], "deploy");
            assert_eq!(body["seId"], "CIN-1");
            assert_eq!(body["callbackId"], entry.id.to_string().as_str());
        }
        let done = &db.store.callbacks().list_for_process(provider, p.id).await.unwrap()[0];
        assert_eq!(done.attempts, 3);
        assert_eq!(done.last_error.as_deref(), Some("HTTP 500"));
        let given_up = &db.store.callbacks().list_for_process(provider, gone.id).await.unwrap()[0];
        assert_eq!(given_up.id, dead_id);
        assert!(given_up.delivered_at.is_none());
        assert_eq!(given_up.next_attempt_at, i64::MAX, "no further attempts");
        assert!(given_up.last_error.as_deref().is_some_and(|e| e.contains("connect")), "{:?}", given_up.last_error);

        // The worker stops with the node.
        ts.state.begin_shutdown();
        tokio::time::timeout(Duration::from_secs(5), worker).await.expect("worker stops on shutdown").unwrap();
        ts.stop().await;
        db.finish().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn callback_urls_are_checked() {
    let db = first_database().await;
    let api = tsm_server::app::ApiConfig { allow_http_callbacks: false, ..api_config() };
    let ts = TestServer::start_with(&db, api, Config::default()).await;
    let r = ts.admin("POST", "/api/v1/admin/service-providers", Some(json!({"name": "x", "callbackUrl": "http://example.invalid/cb"}))).await;
    assert_err(&r, 400, "request.invalid");
    let r = ts.admin("POST", "/api/v1/admin/service-providers", Some(json!({"name": "x", "callbackUrl": "ftp://example.invalid/cb"}))).await;
    assert_err(&r, 400, "request.invalid");
    let t = ts.provider_with("y", Some("https://example.invalid/cb")).await;
    let (s, me) = ts.call("GET", "/api/v1/serviceproviders/current", Some(&t.token), None).await;
    assert_eq!((s, me["callbackUrl"].as_str()), (200, Some("https://example.invalid/cb")));
    ts.stop().await;
    db.finish().await;
}
