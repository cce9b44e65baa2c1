//! Shared by the engine and SERAM tests: nodes (routers over one database) on loopback, an
//! onboarded SE with a simulated card, a deployable catalog, the local agent driving the card,
//! a proxy that sends each request of a session to the next node in turn, and comparisons of
//! the card's registry with the database's.
#![allow(dead_code)]

#[path = "../api_support/mod.rs"]
mod api_support;
pub use api_support::*;

use serde_json::{Value, json};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tsm_gp::crypto::SecretKey;
use tsm_gp::gp::Aid;
use tsm_gp::profile::CardProfile;
use tsm_gp::scp::Scp;
use tsm_gp::transport::Transport;
use tsm_se::{CardConfig, KeySet, SimCard};
use tsm_server::agent::{Agent, AgentError, AgentEvent, AgentOptions, AgentSummary, SeType, SecureElementInfo, Shared};
use tsm_server::app::ApiConfig;
use tsm_server::config::Config;
use tsm_server::domain::*;
use tsm_server::store::testing::TestDb;
use tsm_server::testkit::{self, RegistryRow};

pub const ISD_ENC: &str = "000102030405060708090A0B0C0D0E0F";
pub const ISD_MAC: &str = "101112131415161718191A1B1C1D1E1F";
pub const ISD_DEK: &str = "202122232425262728292A2B2C2D2E2F";
pub const SSD_AID: &str = "A00000015153504101";
pub const ELF_AID: &str = "D0D1D2D3D4D501";
pub const MODULE_AID: &str = "D0D1D2D3D4D50101";
/// A personalization secret (DGI 8001, sensitive): must never be stored in clear.
pub const SECRET_DGI: &str = "800110C0FFEE5EC2E7C0FFEE5EC2E7C0FFEE5E";
pub const SECRET_VALUE: &str = "C0FFEE5EC2E7C0FFEE5EC2E7C0FFEE5E";
pub const CLEAR_DGI: &str = "01010447114711";

/// A node's configuration for tests: long polls of `long_poll` seconds, a node id.
pub fn config(node: &str, long_poll: u64) -> Config {
    let mut c = Config::default();
    c.server.node_id = Some(node.into());
    c.seram.long_poll_seconds = long_poll;
    c
}

pub async fn node(db: &TestDb, name: &str, long_poll: u64) -> TestServer {
    TestServer::start_with(db, ApiConfig { allow_http_callbacks: true, shutdown_grace_seconds: 2, ..ApiConfig::default() }, config(name, long_poll)).await
}

/// The simulated card of an SE registered with [`onboard`]: profile `ese`, SCP03 i=70, the ISD
/// keys (version 30) the TSM was given.
pub fn card(seed: u64) -> Arc<Mutex<SimCard>> {
    let k = |h: &str| SecretKey::aes(&tsm_gp::hex::decode(h).unwrap()).unwrap();
    let cfg = CardConfig::default().seeded(seed).with_scp(Scp::Scp03 { i: 0x70 }).with_isd_keys(KeySet::new(k(ISD_ENC), k(ISD_MAC), k(ISD_DEK), 0x30));
    Arc::new(Mutex::new(SimCard::new(CardProfile::builtin("ese").unwrap(), cfg).unwrap()))
}

/// Registers `se_id` (profile `ese`, SCP03 i=70, ISD keys imported) and gives `t` an SSD on it.
pub async fn onboard(ts: &TestServer, t: &Tenant, se_id: &str, quota: u64) {
    let (s, b) = ts
        .admin(
            "POST",
            "/api/v1/admin/secure-elements",
            Some(json!({
                "seId": se_id, "carrier": "ese", "profile": "ese", "isdAid": "A000000151000000", "scp": 3, "scpI": 112,
                "isdKeys": {"kind": "imported", "kvn": 48, "alg": "aes128", "enc": ISD_ENC, "mac": ISD_MAC, "dek": ISD_DEK}
            })),
        )
        .await;
    assert_eq!(s, 201, "{b}");
    let (s, sd) = ts.admin("POST", &format!("/api/v1/admin/secure-elements/{se_id}/security-domains"), Some(json!({"providerId": t.id, "aid": SSD_AID, "memoryQuota": quota}))).await;
    assert_eq!(s, 201, "{sd}");
}

/// Where most engine and SERAM tests start: node `node-a` (long polls of 1 s), provider `acme`,
/// and `se` onboarded with an SSD of 32000 bytes for it.
pub async fn acme_with_se(db: &TestDb, se: &str) -> (TestServer, Tenant) {
    let ts = node(db, "node-a", 1).await;
    let t = ts.provider("acme").await;
    onboard(&ts, &t, se, 32_000).await;
    (ts, t)
}

/// A service deploying `instance` of the helloworld applet, with a personalization script (a
/// clear DGI and a sensitive one) when `perso`.
pub async fn service(ts: &TestServer, t: &Tenant, name: &str, instance: &str, perso: bool) -> Catalog {
    let tok = Some(t.token.as_str());
    let (s, elf) = ts.upload(t, "kaoh_helloworld.cap").await;
    let elf_id = if s == 201 {
        elf["id"].as_str().unwrap().to_string()
    } else {
        let (_, l) = ts.call("GET", "/api/v1/executable-load-files", tok, None).await;
        l.as_array().unwrap().iter().find(|e| e["aid"] == ELF_AID).unwrap()["id"].as_str().unwrap().to_string()
    };
    let (s, svc) = ts.call("POST", "/api/v1/services", tok, Some(json!({"name": name}))).await;
    assert_eq!(s, 201, "{svc}");
    let sid = svc["id"].as_str().unwrap().to_string();
    let (s, v) = ts.call("POST", &format!("/api/v1/services/{sid}/versions"), tok, Some(json!({"tag": "1.0", "elfId": elf_id}))).await;
    assert_eq!(s, 201, "{v}");
    let (s, f) = ts.call("POST", &format!("/api/v1/services/{sid}/versions/1.0/flavors"), tok, Some(json!({"name": "default", "memoryQuota": 4000}))).await;
    assert_eq!(s, 201, "{f}");
    let fid = f["id"].as_str().unwrap().to_string();
    let (s, a) = ts
        .call(
            "POST",
            &format!("/api/v1/services/{sid}/flavors/{fid}/application-configs"),
            tok,
            Some(json!({"moduleAid": MODULE_AID, "instanceAid": instance, "privileges": "00", "nvQuota": 1024})),
        )
        .await;
    assert_eq!(s, 201, "{a}");
    let app = a["id"].as_str().unwrap().to_string();
    if perso {
        let (s, p) = ts
            .call(
                "POST",
                "/api/v1/personalization-scripts",
                tok,
                Some(json!({"applicationConfigId": app, "name": "keys", "blocks": [{"data": CLEAR_DGI}, {"data": SECRET_DGI, "sensitive": true}]})),
            )
            .await;
        assert_eq!(s, 201, "{p}");
    }
    Catalog { service_id: sid, flavor_id: fid, elf_id, app_config_id: app }
}

/// Creates an instance of `c` on `se` (201) and returns its id.
pub async fn instance(ts: &TestServer, t: &Tenant, c: &Catalog, se: &str) -> String {
    let (s, i) = ts.call("POST", "/api/v1/service-instances", Some(&t.token), Some(json!({"serviceId": c.service_id, "seId": se}))).await;
    assert_eq!(s, 201, "{i}");
    i["id"].as_str().unwrap().to_string()
}

/// A [`service`] and its [`instance`] on `se`: the instance id.
pub async fn service_instance(ts: &TestServer, t: &Tenant, name: &str, instance_aid: &str, perso: bool, se: &str) -> String {
    let c = service(ts, t, name, instance_aid, perso).await;
    instance(ts, t, &c, se).await
}

/// Queues an operation (`deploy`, `suspend`...): (process id, session id).
pub async fn queue(ts: &TestServer, t: &Tenant, instance: &str, op: &str) -> (String, String) {
    let (s, q) = ts.call("POST", &format!("/api/v1/service-instances/{instance}/{op}"), Some(&t.token), None).await;
    assert_eq!(s, 202, "{op}: {q}");
    (q["processId"].as_str().unwrap().to_string(), q["sessionId"].as_str().unwrap().to_string())
}

/// A transport that fails (`CardReset`) from its `fail_at`-th APDU on (1-based), as a phone
/// whose SE went away.
pub struct Flaky {
    pub inner: Shared<SimCard>,
    pub sent: usize,
    pub fail_at: usize,
}

impl Transport for Flaky {
    fn transmit(&mut self, apdu: &[u8]) -> Result<Vec<u8>, tsm_gp::transport::TransportError> {
        self.sent += 1;
        if self.sent >= self.fail_at {
            return Err(tsm_gp::transport::TransportError::CardReset);
        }
        self.inner.transmit(apdu)
    }
}

pub fn agent_options() -> AgentOptions {
    AgentOptions { default_pause: Duration::ZERO, retry_for: Duration::from_secs(20), backoff_start: Duration::from_millis(50), backoff_max: Duration::from_millis(500), ..AgentOptions::default() }
}

/// The local agent runs session `sid` against `base` (`http://host:port`) with the card.
pub async fn run_agent(base: &str, sid: &str, se_id: &str, card: &Arc<Mutex<SimCard>>) -> Result<(AgentSummary, Vec<AgentEvent>), AgentError> {
    run_agent_with(base, sid, se_id, Box::new(Shared(card.clone()))).await
}

/// The same with any transport.
pub async fn run_agent_with(base: &str, sid: &str, se_id: &str, transport: Box<dyn tsm_gp::transport::Transport + Send>) -> Result<(AgentSummary, Vec<AgentEvent>), AgentError> {
    let mut agent = Agent::new(base, sid, SecureElementInfo::new(SeType::Ese, se_id), transport, agent_options())?;
    let mut events = Vec::new();
    let summary = agent.run(|e| events.push(e)).await?;
    Ok((summary, events))
}

/// INSTALL [for install] commands the agent sent (P1 b3 set: SSDs and applications alike).
pub fn installs(events: &[AgentEvent]) -> usize {
    events.iter().filter(|e| matches!(e, AgentEvent::Apdu { capdu, .. } if capdu.get(1) == Some(&0xE6) && capdu.get(2).is_some_and(|p1| p1 & 0x04 != 0))).count()
}

/// The C-APDUs the agent sent with INS `ins` (e.g. `E6` INSTALL).
pub fn sent_ins(events: &[AgentEvent], ins: u8, p1: Option<u8>) -> usize {
    events.iter().filter(|e| matches!(e, AgentEvent::Apdu { capdu, .. } if capdu.get(1) == Some(&ins) && p1.is_none_or(|p| capdu.get(2) == Some(&p)))).count()
}

pub async fn process(ts: &TestServer, t: &Tenant, pid: &str) -> Value {
    let (s, p) = ts.call("GET", &format!("/api/v1/processes/{pid}"), Some(&t.token), None).await;
    assert_eq!(s, 200, "{p}");
    p
}

pub async fn instance_state(ts: &TestServer, t: &Tenant, iid: &str) -> String {
    let (s, i) = ts.call("GET", &format!("/api/v1/service-instances/{iid}"), Some(&t.token), None).await;
    assert_eq!(s, 200, "{i}");
    i["state"].as_str().unwrap().to_string()
}

/// The card's registry as (kind, AID, life cycle, associated SD), sorted, from its state.
pub fn card_registry(card: &Arc<Mutex<SimCard>>) -> Vec<RegistryRow> {
    testkit::sim_registry(&card.lock().unwrap())
}

/// The SE's stored registry in the same form.
pub async fn db_registry(db: &TestDb, se: &str) -> Vec<RegistryRow> {
    let row = db.store.secure_elements().get(&SeId::new(se).unwrap()).await.unwrap().unwrap();
    let reg = testkit::stored_registry(&row).unwrap().expect("the SE's registry is known");
    testkit::registry_rows(&reg)
}

/// Another party (an MNO's OTA server, say) opens and authenticates a session with the ISD:
/// the card's sequence counter moves on without the TSM knowing.
pub fn other_party_session(card: &Arc<Mutex<SimCard>>) {
    use tsm_gp::scp::{ChannelOptions, SecurityLevel, StaticKeys};
    use tsm_gp::{Codec, CommandApdu, ResponseApdu};
    let k = |h: &str| SecretKey::aes(&tsm_gp::hex::decode(h).unwrap()).unwrap();
    let keys = StaticKeys::new(k(ISD_ENC), k(ISD_MAC), k(ISD_DEK), 0x30);
    let mut c = card.lock().unwrap();
    let mut send = |cmd: &CommandApdu| ResponseApdu::from_bytes(&c.transmit(&cmd.to_bytes())).unwrap();
    assert_eq!(send(&tsm_gp::gp::Select::by_name(&tsm_gp::hex::decode("A000000151000000").unwrap()).to_apdu()).sw.0, 0x9000);
    let (hs, iu) = tsm_gp::scp::scp03::HostHandshake::new(keys, &[0x5A; 8], ChannelOptions::default()).unwrap();
    let r = send(&iu);
    let a = hs.on_init_update(&r, SecurityLevel::C_MAC, tsm_gp::scp::scp03::Expect::any()).unwrap();
    assert_eq!(send(&a.external_authenticate()).sw.0, 0x9000);
}

pub fn isd_counter(card: &Arc<Mutex<SimCard>>) -> u32 {
    card.lock().unwrap().state().apps[0].domain.as_ref().unwrap().sequence_counter
}

/// The DGIs the card's generic application model `app` stored (personalization), by DGI.
pub fn app_dgis(card: &Arc<Mutex<SimCard>>, app: &str) -> Value {
    let a: Aid = app.parse().unwrap();
    card.lock().unwrap().state().app(&a).unwrap().model.as_ref().unwrap().state["dgis"].clone()
}

pub fn app_life_cycle(card: &Arc<Mutex<SimCard>>, aid: &str) -> Option<u8> {
    let a: Aid = aid.parse().unwrap();
    card.lock().unwrap().state().app(&a).map(|x| x.life_cycle)
}

/// A reverse proxy that sends each request to the next of `backends` in turn (so one session's
/// requests alternate between nodes). Requests whose 0-based number is in `drop_answers` are
/// forwarded, but their answer is replaced by `502` (an answer lost on the way back). Returns
/// its base URL and the per-backend request counts.
pub async fn alternating_proxy(backends: Vec<String>, drop_answers: Vec<usize>) -> (String, Arc<Vec<AtomicUsize>>) {
    let drop_answers = Arc::new(drop_answers);
    let counts: Arc<Vec<AtomicUsize>> = Arc::new(backends.iter().map(|_| AtomicUsize::new(0)).collect());
    let next = Arc::new(AtomicUsize::new(0));
    let client = reqwest::Client::new();
    let backends = Arc::new(backends);
    let c2 = counts.clone();
    let app = axum::Router::new().fallback(move |req: axum::extract::Request| {
        let (client, backends, next, counts, drops) = (client.clone(), backends.clone(), next.clone(), c2.clone(), drop_answers.clone());
        async move {
            let n = next.fetch_add(1, Ordering::SeqCst);
            let i = n % backends.len();
            counts[i].fetch_add(1, Ordering::SeqCst);
            let (parts, body) = req.into_parts();
            let body = axum::body::to_bytes(body, 16 * 1024 * 1024).await.unwrap();
            let url = format!("{}{}", backends[i], parts.uri.path_and_query().map(|p| p.as_str()).unwrap_or("/"));
            let mut r = client.request(parts.method.clone(), url).body(body);
            for (k, v) in parts.headers.iter() {
                if k != axum::http::header::HOST && k != axum::http::header::CONTENT_LENGTH {
                    r = r.header(k, v);
                }
            }
            let resp = r.send().await.unwrap();
            if drops.contains(&n) {
                let _ = resp.bytes().await;
                return axum::response::Response::builder().status(502).body(axum::body::Body::from("answer lost")).unwrap();
            }
            let mut out = axum::response::Response::builder().status(resp.status().as_u16());
            for (k, v) in resp.headers().iter() {
                if k != reqwest::header::CONTENT_LENGTH && k != reqwest::header::TRANSFER_ENCODING {
                    out = out.header(k.as_str(), v.as_bytes());
                }
            }
            let bytes = resp.bytes().await.unwrap();
            out.body(axum::body::Body::from(bytes)).unwrap()
        }
    });
    let tcp = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", tcp.local_addr().unwrap());
    tokio::spawn(async move {
        axum::serve(tcp, app).await.unwrap();
    });
    (base, counts)
}

/// One SERAM request by hand: (status, body, `Set-Cookie` value of `seram-order`).
pub async fn seram(http: &reqwest::Client, base: &str, path: &str, sid: &str, body: &Value, cookie: Option<&str>) -> (u16, Value, Option<String>) {
    let mut r = http.post(format!("{base}/gp/seram/{path}?sessionId={sid}")).json(body);
    if let Some(c) = cookie {
        r = r.header("cookie", format!("seram-order={c}"));
    }
    let resp = r.send().await.unwrap();
    let status = resp.status().as_u16();
    let set = resp.headers().get_all("set-cookie").iter().filter_map(|v| v.to_str().ok()).find_map(|v| v.strip_prefix("seram-order=").map(|x| x.split(';').next().unwrap().to_string()));
    let text = resp.text().await.unwrap();
    (status, serde_json::from_str(&text).unwrap_or(Value::Null), set)
}

/// A session for `se` through `POST /gp/seram/order` with the admin token.
pub async fn order_session(ts: &TestServer, se: &str) -> String {
    let (s, b) = ts.admin("POST", "/gp/seram/order", Some(json!({"secureElement": {"seType": "eSE", "seId": se}}))).await;
    assert_eq!(s, 201, "{b}");
    b["sessionId"].as_str().unwrap().to_string()
}

pub fn handshake_body(se_id: &str) -> Value {
    json!({"secureElements": [{"seType": "eSE", "seId": se_id}], "supportedTransportProtocols": ["HTTPS"], "supportedDataFormats": ["application/json"], "supportedVersions": ["2.0.0"]})
}

pub fn polling() -> Value {
    json!({"localAgentStatus": {"localAgentStatusEnum": "POLLING", "executedSeRamCommands": 0}})
}

/// A PROCESSED report of an order without SE RAM commands.
pub fn processed_nothing() -> Value {
    json!({"localAgentStatus": {"localAgentStatusEnum": "PROCESSED", "executedSeRamCommands": 0}})
}

/// The C-APDUs of an order's SE RAM command.
pub fn capdus(order: &Value) -> Vec<Vec<u8>> {
    order["ramCommands"]
        .as_array()
        .map(|cs| cs.iter().filter(|c| c["ramCommandType"] == "seRamCommand").flat_map(|c| c["listOfCAPDU"].as_array().unwrap().iter().map(|h| tsm_gp::hex::decode(h.as_str().unwrap()).unwrap())).collect())
        .unwrap_or_default()
}

pub fn has_command(order: &Value, ty: &str) -> bool {
    order["ramCommands"].as_array().is_some_and(|cs| cs.iter().any(|c| c["ramCommandType"] == ty))
}

/// Runs an order's C-APDUs on the card (all of them, as a SERAM agent does) and builds the
/// PROCESSED report.
pub fn execute(card: &Arc<Mutex<SimCard>>, order: &Value) -> Value {
    let rs: Vec<String> = capdus(order).iter().map(|c| tsm_gp::hex::encode(&card.lock().unwrap().transmit(c))).collect();
    if rs.is_empty() {
        return processed_nothing();
    }
    json!({"localAgentStatus": {"localAgentStatusEnum": "PROCESSED", "executedSeRamCommands": 1}, "ramResponses": [{"ramResponseType": "seRamResponse", "listOfRAPDU": rs}]})
}
