//! Shared helpers of the API tests: a server on loopback over a fresh test database (SQLite
//! and PostgreSQL, `tsm_server::store::testing`), an HTTP client, and onboarding shortcuts.
#![allow(dead_code)]

use serde_json::{Value, json};
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;
use tsm_gp::crypto::SecretKey;
use tsm_server::app::{ApiConfig, ApiSettings, AppState};
use tsm_server::config::Config;
use tsm_server::http::{Listener, serve};
use tsm_server::keys::SoftwareKeyStore;
use tsm_server::store::testing::TestDb;

pub const ADMIN: &str = "admin-token-for-tests-0123456789";

pub struct TestServer {
    pub base: String,
    pub state: AppState,
    pub http: reqwest::Client,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    pub handle: Option<tokio::task::JoinHandle<()>>,
}

pub fn api_config() -> ApiConfig {
    ApiConfig { allow_http_callbacks: true, shutdown_grace_seconds: 5, ..ApiConfig::default() }
}

pub fn state(db: &TestDb, api: ApiConfig, config: Config) -> AppState {
    let master = SecretKey::aes(&[0x42; 32]).unwrap();
    let keys = Arc::new(SoftwareKeyStore::connect(&db.url, master).unwrap());
    AppState::new(db.store.clone(), keys, Arc::new(config), ApiSettings::with_admin_token(api, ADMIN))
}

impl TestServer {
    pub async fn start(db: &TestDb) -> TestServer {
        Self::start_with(db, api_config(), Config::default()).await
    }

    pub async fn start_with(db: &TestDb, api: ApiConfig, config: Config) -> TestServer {
        let grace = Duration::from_secs(api.shutdown_grace_seconds);
        let state = state(db, api, config);
        let tcp = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", tcp.local_addr().unwrap());
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let st = state.clone();
        let handle = tokio::spawn(async move {
            serve(st, Listener { tcp, tls: None, grace }, async {
                let _ = rx.await;
            })
            .await
            .unwrap();
        });
        tsm_server::http::install_crypto_provider();
        TestServer { base, state, http: reqwest::Client::new(), stop: Some(tx), handle: Some(handle) }
    }

    pub async fn stop(mut self) {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
        if let Some(h) = self.handle.take() {
            let _ = tokio::time::timeout(Duration::from_secs(10), h).await;
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{}", self.base, path)
    }

    /// A request with a bearer token; returns (status, JSON body or Null).
    pub async fn call(&self, method: &str, path: &str, token: Option<&str>, body: Option<Value>) -> (u16, Value) {
        let mut r = self.http.request(method.parse().unwrap(), self.url(path));
        if let Some(t) = token {
            r = r.bearer_auth(t);
        }
        if let Some(b) = body {
            r = r.json(&b);
        }
        let resp = r.send().await.unwrap();
        let status = resp.status().as_u16();
        let text = resp.text().await.unwrap();
        (status, serde_json::from_str(&text).unwrap_or(Value::Null))
    }

    pub async fn admin(&self, method: &str, path: &str, body: Option<Value>) -> (u16, Value) {
        self.call(method, path, Some(ADMIN), body).await
    }

    /// Onboards a provider and logs it in: (provider id, long-term token, short-term token).
    pub async fn provider(&self, name: &str) -> Tenant {
        self.provider_with(name, None).await
    }

    pub async fn provider_with(&self, name: &str, callback: Option<&str>) -> Tenant {
        let (s, b) = self.admin("POST", "/api/v1/admin/service-providers", Some(json!({"name": name, "callbackUrl": callback}))).await;
        assert_eq!(s, 201, "{b}");
        let long_term = b["longTermToken"].as_str().unwrap().to_string();
        let id = b["serviceProvider"]["id"].as_str().unwrap().to_string();
        let (s, t) = self.call("POST", "/api/v1/auth", Some(&long_term), None).await;
        assert_eq!(s, 200, "{t}");
        Tenant { id, long_term, token: t["accessToken"].as_str().unwrap().to_string() }
    }

    /// Registers an SE (AES-128 ISD keys of the pySim SCP03 vectors) and gives `tenant` an
    /// SSD on it with `quota` bytes.
    pub async fn se_for(&self, se_id: &str, carrier: &str, profile: &str, tenant: &Tenant, quota: Option<u64>) -> Value {
        let (s, b) = self
            .admin(
                "POST",
                "/api/v1/admin/secure-elements",
                Some(json!({
                    "seId": se_id, "carrier": carrier, "profile": profile, "isdAid": "A000000151000000",
                    "isdKeys": {"kind": "imported", "kvn": 48, "alg": "aes128",
                        "enc": "000102030405060708090A0B0C0D0E0F", "mac": "101112131415161718191A1B1C1D1E1F", "dek": "202122232425262728292A2B2C2D2E2F"}
                })),
            )
            .await;
        assert_eq!(s, 201, "{b}");
        let (s, sd) = self
            .admin("POST", &format!("/api/v1/admin/secure-elements/{se_id}/security-domains"), Some(json!({"providerId": tenant.id, "aid": "A00000015153504101", "memoryQuota": quota})))
            .await;
        assert_eq!(s, 201, "{sd}");
        sd
    }

    /// Uploads a CAP of testdata/vectors/cap as raw bytes.
    pub async fn upload(&self, t: &Tenant, file: &str) -> (u16, Value) {
        let bytes = std::fs::read(tsm_gp::testdata_dir().join("vectors/cap").join(file)).unwrap();
        self.upload_bytes(t, bytes).await
    }

    pub async fn upload_bytes(&self, t: &Tenant, bytes: Vec<u8>) -> (u16, Value) {
        let resp = self
            .http
            .post(self.url("/api/v1/executable-load-files"))
            .bearer_auth(&t.token)
            .header("content-type", "application/octet-stream")
            .body(bytes)
            .send()
            .await
            .unwrap();
        let s = resp.status().as_u16();
        (s, resp.json().await.unwrap_or(Value::Null))
    }

    /// A deployable catalog for `t`: kaoh helloworld CAP, service, version 1.0, a flavor for
    /// `carrier` (any profile) needing `quota` bytes, one application.
    pub async fn catalog(&self, t: &Tenant, name: &str, carrier: Option<&str>, quota: Option<u64>) -> Catalog {
        let (s, elf) = self.upload(t, "kaoh_helloworld.cap").await;
        let elf_id = if s == 201 {
            elf["id"].as_str().unwrap().to_string()
        } else {
            // Uploaded before by this provider: find it.
            let (_, l) = self.call("GET", "/api/v1/executable-load-files", Some(&t.token), None).await;
            l.as_array().unwrap().iter().find(|e| e["aid"] == "D0D1D2D3D4D501").unwrap()["id"].as_str().unwrap().to_string()
        };
        let (s, svc) = self.call("POST", "/api/v1/services", Some(&t.token), Some(json!({"name": name}))).await;
        assert_eq!(s, 201, "{svc}");
        let sid = svc["id"].as_str().unwrap().to_string();
        let (s, v) = self.call("POST", &format!("/api/v1/services/{sid}/versions"), Some(&t.token), Some(json!({"tag": "1.0", "elfId": elf_id}))).await;
        assert_eq!(s, 201, "{v}");
        let (s, f) = self.call("POST", &format!("/api/v1/services/{sid}/versions/1.0/flavors"), Some(&t.token), Some(json!({"name": "default", "carrier": carrier, "memoryQuota": quota}))).await;
        assert_eq!(s, 201, "{f}");
        let fid = f["id"].as_str().unwrap().to_string();
        let (s, a) = self
            .call(
                "POST",
                &format!("/api/v1/services/{sid}/flavors/{fid}/application-configs"),
                Some(&t.token),
                Some(json!({"moduleAid": "D0D1D2D3D4D50101", "instanceAid": "D0D1D2D3D4D50101", "privileges": "00", "applicationSpecificInstallParameter": "", "nvQuota": 1024})),
            )
            .await;
        assert_eq!(s, 201, "{a}");
        Catalog { service_id: sid, flavor_id: fid, elf_id, app_config_id: a["id"].as_str().unwrap().to_string() }
    }
}

#[derive(Debug, Clone)]
pub struct Tenant {
    pub id: String,
    pub long_term: String,
    pub token: String,
}

#[derive(Debug, Clone)]
pub struct Catalog {
    pub service_id: String,
    pub flavor_id: String,
    pub elf_id: String,
    pub app_config_id: String,
}

/// Asserts an error answer's status and code.
#[track_caller]
pub fn assert_err(r: &(u16, Value), status: u16, code: &str) {
    assert_eq!(r.0, status, "{}", r.1);
    assert_eq!(r.1["code"], code, "{}", r.1);
    assert!(r.1["message"].as_str().is_some_and(|m| !m.is_empty()), "{}", r.1);
}
