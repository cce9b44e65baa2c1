//! The server itself: TLS with a generated certificate (rcgen), graceful shutdown (in-flight
//! requests finish, new connections are refused, stuck connections are dropped after the
//! grace period), and the `[api]` configuration section.

mod api_support;

use api_support::*;
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tsm_server::config::Config;
use tsm_server::http::{Listener, serve, tls_config};
use tsm_server::store::testing::first_database;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serves_tls_with_a_generated_certificate() {
    let db = first_database().await;
    let ck = rcgen::generate_simple_self_signed(vec!["localhost".to_string()]).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let (cert, key) = (dir.path().join("server.crt"), dir.path().join("server.key"));
    std::fs::write(&cert, ck.cert.pem()).unwrap();
    std::fs::write(&key, ck.signing_key.serialize_pem()).unwrap();

    let state = api_support::state(&db, api_config(), Config::default());
    let tcp = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = tcp.local_addr().unwrap().port();
    let listener = Listener { tcp, tls: Some(tls_config(&cert, &key, None).unwrap()), grace: Duration::from_secs(2) };
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(serve(state, listener, async {
        let _ = rx.await;
    }));

    let client = reqwest::Client::builder().tls_certs_only([reqwest::Certificate::from_pem(ck.cert.pem().as_bytes()).unwrap()]).build().unwrap();
    let r = client.get(format!("https://localhost:{port}/health")).send().await.unwrap();
    assert_eq!(r.status().as_u16(), 200);
    let r = client.get(format!("https://localhost:{port}/api/v1/serviceproviders/current")).send().await.unwrap();
    assert_eq!(r.status().as_u16(), 401);
    let b: serde_json::Value = r.json().await.unwrap();
    assert_eq!(b["code"], "auth.missing_token");
    // A client that does not trust the certificate gets no answer.
    let untrusting = reqwest::Client::builder().tls_certs_only(Vec::<reqwest::Certificate>::new()).build().unwrap();
    assert!(untrusting.get(format!("https://localhost:{port}/health")).send().await.is_err());
    // Plain HTTP on the TLS port: no HTTP answer.
    let mut s = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
    s.write_all(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n").await.unwrap();
    let mut buf = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut buf)).await;
    assert!(!buf.starts_with(b"HTTP/1.1 200"));
    // A missing key file is a start-up error with its code.
    let e = tls_config(&cert, &dir.path().join("missing.key"), None).unwrap_err();
    assert_eq!(e.code(), "server.tls");

    tx.send(()).unwrap();
    tokio::time::timeout(Duration::from_secs(5), server).await.unwrap().unwrap().unwrap();
    db.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn graceful_shutdown_finishes_in_flight_requests() {
    let db = first_database().await;
    let ts = TestServer::start(&db).await;
    let t = ts.provider("acme").await;
    let addr = ts.base.trim_start_matches("http://").to_string();
    let body = br#"{"name": "created during shutdown"}"#;
    // A request in flight: headers and half of the body sent.
    let mut inflight = TcpStream::connect(&addr).await.unwrap();
    let head = format!("POST /api/v1/services HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n", t.token, body.len());
    inflight.write_all(head.as_bytes()).await.unwrap();
    inflight.write_all(&body[..10]).await.unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;

    // Shutdown begins: no new connections; the long-poll signal is set.
    let state = ts.state.clone();
    let stop = tokio::spawn(ts.stop());
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(state.is_shutting_down());
    assert!(TcpStream::connect(&addr).await.is_err(), "no new connections after the signal");
    assert!(!stop.is_finished(), "the server waits for the request in flight");

    // The request completes normally.
    inflight.write_all(&body[10..]).await.unwrap();
    let mut resp = Vec::new();
    tokio::time::timeout(Duration::from_secs(5), inflight.read_to_end(&mut resp)).await.unwrap().unwrap();
    let text = String::from_utf8_lossy(&resp);
    assert!(text.starts_with("HTTP/1.1 201"), "{text}");
    tokio::time::timeout(Duration::from_secs(5), stop).await.expect("server stopped after the last request").unwrap();
    assert_eq!(db.store.services().list(t.id.parse().unwrap()).await.unwrap()[0].name, "created during shutdown");
    db.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stuck_connections_are_dropped_after_the_grace_period() {
    let db = first_database().await;
    let api = tsm_server::app::ApiConfig { shutdown_grace_seconds: 1, ..api_config() };
    let ts = TestServer::start_with(&db, api, Config::default()).await;
    let t = ts.provider("acme").await;
    let addr = ts.base.trim_start_matches("http://").to_string();
    // Authenticated, so that the handler waits for the body that never comes.
    let mut stuck = TcpStream::connect(&addr).await.unwrap();
    let head = format!("POST /api/v1/services HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {}\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{{", t.token);
    stuck.write_all(head.as_bytes()).await.unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;
    let t0 = Instant::now();
    ts.stop().await;
    let took = t0.elapsed();
    assert!(took >= Duration::from_millis(900) && took < Duration::from_secs(4), "stopped after the 1 s grace period: {took:?}");
    db.finish().await;
}

#[test]
fn api_section_of_the_configuration_file() {
    let text = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../../examples/tsm.toml")).unwrap();
    let text = format!("{text}\n[api]\ntoken_ttl_seconds = 900\ncap_max_bytes = 1048576\nlog_format = \"json\"\n");
    let (api, rest) = tsm_server::app::ApiConfig::split_from_toml(&text, |_| None).unwrap();
    assert_eq!(api.token_ttl_seconds, 900);
    assert_eq!(api.cap_max_bytes, 1_048_576);
    let config = Config::from_toml_with_env(&rest, "example", |_| None).unwrap();
    assert_eq!(config.server.listen, "0.0.0.0:8443");
    let e = tsm_server::app::ApiConfig::split_from_toml("[api]\ntoken_ttl_seconds = 5\n", |_| None).unwrap_err();
    assert_eq!(e.code(), "config.invalid");
    assert!(e.to_string().contains("api.token_ttl_seconds"), "{e}");
}
