//! Drives the whole TSM in one process: a node started as `tsm serve` starts one, on loopback;
//! the admin and provider REST API through HTTP; simulated phones (`tsm_se::SimCard` of the
//! built-in profiles, each with its own ISD keys) behind the local agent, which talks GP SERAM
//! to the node over HTTP; and the two views to compare afterwards, the registry as the card
//! reports it (GET STATUS through a host `GpSession`) and the database's.
//!
//! Shared by `tsm demo`, the end-to-end tests (`tests/e2e_*.rs`) and the deployment benchmark
//! (`benches/deploy.rs`), so that all three run exactly the same path. Not a stable API.

use crate::agent::{Agent, AgentEvent, AgentOptions, AgentSummary, SeType, SecureElementInfo, Shared};
use crate::app::{ApiConfig, ApiSettings, AppState};
use crate::config::Config;
use crate::domain::{SdKind, SeId, SecureElement, diversification_str, key_alg_str};
use crate::planner::CardView;
use crate::store::Store;
use serde::Serialize;
use serde_json::{Value, json};
use std::fmt;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tsm_gp::crypto::diversify::{Diversification, KeyRole, diversify};
use tsm_gp::crypto::{KeyAlg, SecretKey};
use tsm_gp::gp::{LifeCycle, RegistryEntry};
use tsm_gp::profile::CardProfile;
use tsm_gp::scp::{Scp, StaticKeys};
use tsm_gp::session::{GpSession, OpenOptions, SessionConfig};
use tsm_se::{CardConfig, KeySet, SimCard};

/// What went wrong, with a stable code (the server's own code for API errors).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KitError {
    pub code: String,
    pub message: String,
}

impl KitError {
    pub fn new(code: impl Into<String>, message: impl Into<String>) -> KitError {
        KitError { code: code.into(), message: message.into() }
    }
}

impl fmt::Display for KitError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for KitError {}

macro_rules! coded {
    ($($t:ty),*) => {$(
        impl From<$t> for KitError {
            fn from(e: $t) -> Self { KitError::new(e.code(), e.to_string()) }
        }
    )*};
}
coded!(crate::store::StoreError, crate::config::ConfigError, crate::http::ServeError, crate::agent::AgentError, tsm_gp::session::SessionError, tsm_se::SeError, tsm_gp::crypto::CryptoError);

pub type KitResult<T> = Result<T, KitError>;

fn random<const N: usize>() -> [u8; N] {
    let mut b = [0u8; N];
    getrandom::fill(&mut b).expect("the operating system's random generator");
    b
}

fn hex(b: &[u8]) -> String {
    tsm_gp::hex::encode(b)
}

// ---- the node ----------------------------------------------------------------------------

/// A server node in this process, started as `tsm serve` starts one: the database migrated,
/// the configured key store opened ([`Config::open_key_store`]), `config.server.listen` bound
/// (use `127.0.0.1:0`), `crate::http::serve` with the real router.
pub struct Node {
    /// `http://127.0.0.1:PORT`
    pub base: String,
    pub state: AppState,
    /// The admin API, with the admin token the node was started with.
    pub admin: Api,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<Result<(), crate::http::ServeError>>>,
}

impl Node {
    pub async fn start(config: Config, admin_token: &str) -> KitResult<Node> {
        let store = Store::connect_with(&config.database.url, config.database.max_connections).await?;
        store.migrate().await?;
        let config = Arc::new(config);
        let c2 = config.clone();
        let keys = tokio::task::spawn_blocking(move || c2.open_key_store()).await.map_err(|e| KitError::new("server.runtime", e.to_string()))??;
        let api = ApiConfig { allow_http_callbacks: true, shutdown_grace_seconds: 5, callbacks_worker: false, ..ApiConfig::default() };
        let grace = Duration::from_secs(api.shutdown_grace_seconds);
        let state = AppState::new(store, keys, config.clone(), ApiSettings::with_admin_token(api, admin_token));
        let listener = crate::http::Listener::bind(&config, grace).await?;
        let base = format!("http://{}", listener.local_addr().map_err(|e| KitError::new("server.bind", e.to_string()))?);
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let st = state.clone();
        let task = tokio::spawn(crate::http::serve(st, listener, async {
            let _ = rx.await;
        }));
        let admin = Api::new(&base, admin_token);
        Ok(Node { base, state, admin, stop: Some(tx), task: Some(task) })
    }

    pub fn store(&self) -> &Store {
        &self.state.store
    }

    /// Stops serving (requests in flight finish) and closes the database pool.
    pub async fn stop(mut self) {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
        if let Some(t) = self.task.take() {
            let _ = tokio::time::timeout(Duration::from_secs(10), t).await;
        }
        self.state.store.close().await;
    }
}

/// A configuration for a node on loopback: the database at `url`, the software key store
/// under `master` (a `env:`/`file:` source), short long polls.
pub fn loopback_config(url: &str, master: &str) -> Config {
    let mut c = Config::default();
    c.server.listen = "127.0.0.1:0".into();
    c.server.node_id = Some("tsm-demo".into());
    c.database.url = url.into();
    c.keys = crate::config::KeysConfig::Software { master: master.into() };
    c.seram.long_poll_seconds = 2;
    c
}

/// Creates the database `name` on the PostgreSQL server of `server_url`
/// (`postgres://user[:password]@host:port[/anything][?params]`; its database part is
/// replaced): the new database's URL.
pub async fn create_postgres_database(server_url: &str, name: &str) -> KitResult<String> {
    use sqlx::migrate::MigrateDatabase;
    let (main, query) = match server_url.split_once('?') {
        Some((m, q)) => (m, format!("?{q}")),
        None => (server_url, String::new()),
    };
    let Some((scheme, rest)) = main.split_once("://").filter(|(s, _)| *s == "postgres" || *s == "postgresql") else {
        return Err(KitError::new("config.invalid", format!("{}: not a postgres:// URL", crate::app::redact_url(server_url))));
    };
    let authority = rest.split('/').next().unwrap_or_default();
    let url = format!("{scheme}://{authority}/{name}{query}");
    sqlx::any::install_default_drivers();
    sqlx::Any::create_database(&url).await.map_err(|e| KitError::new("store.database", format!("creating database {name} on {}: {e}", crate::app::redact_url(server_url))))?;
    Ok(url)
}

/// Drops a database made by [`create_postgres_database`] (connections still open are closed).
pub async fn drop_postgres_database(url: &str) -> KitResult<()> {
    use sqlx::migrate::MigrateDatabase;
    sqlx::Any::force_drop_database(url).await.map_err(|e| KitError::new("store.database", format!("dropping {}: {e}", crate::app::redact_url(url))))
}

// ---- the REST API ------------------------------------------------------------------------

/// A client of the admin or provider API with one bearer token.
#[derive(Clone)]
pub struct Api {
    http: reqwest::Client,
    base: String,
    token: String,
}

impl fmt::Debug for Api {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Api({})", self.base)
    }
}

impl Api {
    pub fn new(base: &str, token: &str) -> Api {
        // reqwest is built without a default TLS provider: the server's (ring) first.
        crate::http::install_crypto_provider();
        Api { http: reqwest::Client::new(), base: base.trim_end_matches('/').to_string(), token: token.to_string() }
    }

    pub fn base(&self) -> &str {
        &self.base
    }

    async fn answer(resp: reqwest::Response, what: &str) -> KitResult<Value> {
        let status = resp.status();
        let text = resp.text().await.map_err(|e| KitError::new("http.read", format!("{what}: {e}")))?;
        let body: Value = serde_json::from_str(&text).unwrap_or(Value::Null);
        if status.is_success() {
            return Ok(body);
        }
        let code = body["code"].as_str().unwrap_or("http.status").to_string();
        let message = body["message"].as_str().map(str::to_string).unwrap_or(text);
        Err(KitError::new(code, format!("{what}: HTTP {}: {message}", status.as_u16())))
    }

    /// One JSON request; a non-2xx answer is an error with the server's code.
    pub async fn call(&self, method: &str, path: &str, body: Option<Value>) -> KitResult<Value> {
        let what = format!("{method} {path}");
        let m: reqwest::Method = method.parse().map_err(|_| KitError::new("http.method", what.clone()))?;
        let mut r = self.http.request(m, format!("{}{path}", self.base)).bearer_auth(&self.token);
        if let Some(b) = body {
            r = r.json(&b);
        }
        let resp = r.send().await.map_err(|e| KitError::new("http.send", format!("{what}: {e}")))?;
        Self::answer(resp, &what).await
    }

    pub async fn get(&self, path: &str) -> KitResult<Value> {
        self.call("GET", path, None).await
    }

    pub async fn post(&self, path: &str, body: Value) -> KitResult<Value> {
        self.call("POST", path, Some(body)).await
    }

    /// Uploads a CAP file as the raw body.
    pub async fn upload_cap(&self, file_name: &str, bytes: Vec<u8>) -> KitResult<Value> {
        let path = "/api/v1/executable-load-files";
        let resp = self
            .http
            .post(format!("{}{path}?fileName={}", self.base, url_component(file_name)))
            .bearer_auth(&self.token)
            .header("content-type", "application/octet-stream")
            .body(bytes)
            .send()
            .await
            .map_err(|e| KitError::new("http.send", format!("POST {path}: {e}")))?;
        Self::answer(resp, &format!("POST {path}")).await
    }
}

/// A query value: letters, digits and `-._~` as they are, everything else percent-encoded.
fn url_component(s: &str) -> String {
    s.bytes().map(|b| if b.is_ascii_alphanumeric() || b"-._~".contains(&b) { (b as char).to_string() } else { format!("%{b:02X}") }).collect()
}

fn id_of(v: &Value, what: &str) -> KitResult<String> {
    v["id"].as_str().map(str::to_string).ok_or_else(|| KitError::new("http.unexpected", format!("{what}: no id in {v}")))
}

// ---- onboarding ----------------------------------------------------------------------------

/// A service provider with its short-term token.
#[derive(Debug, Clone)]
pub struct Provider {
    pub id: String,
    pub name: String,
    pub api: Api,
}

/// Onboards a provider (admin) and logs it in (long-term → short-term token).
pub async fn provider(admin: &Api, name: &str) -> KitResult<Provider> {
    let p = admin.post("/api/v1/admin/service-providers", json!({"name": name})).await?;
    let id = p["serviceProvider"]["id"].as_str().unwrap_or_default().to_string();
    let long_term = p["longTermToken"].as_str().unwrap_or_default();
    let t = Api::new(admin.base(), long_term).post("/api/v1/auth", Value::Null).await?;
    let token = t["accessToken"].as_str().ok_or_else(|| KitError::new("http.unexpected", "no access token"))?;
    Ok(Provider { id, name: name.to_string(), api: Api::new(admin.base(), token) })
}

/// An SE issuer with master keys: its cards' ISD keys are diversified from them with each
/// card's KDD.
#[derive(Clone)]
pub struct Issuer {
    pub id: String,
    pub name: String,
    pub method: Diversification,
    master: [SecretKey; 3],
}

impl fmt::Debug for Issuer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Issuer({}, {:?})", self.name, self.method)
    }
}

/// Onboards an issuer with fresh random master keys of `alg` (3DES for `emv-cps11`/`visa2`,
/// AES for `kdf3`), key version `kvn`.
pub async fn issuer(admin: &Api, name: &str, alg: KeyAlg, method: Diversification, kvn: u8) -> KitResult<Issuer> {
    let values: Vec<Vec<u8>> = (0..3).map(|_| random::<32>()[..alg.key_len()].to_vec()).collect();
    let key = |v: &[u8]| -> KitResult<SecretKey> { Ok(SecretKey::new(alg, v)?) };
    let master = [key(&values[0])?, key(&values[1])?, key(&values[2])?];
    let v = admin
        .post(
            "/api/v1/admin/issuers",
            json!({"name": name, "diversification": diversification_str(method),
                   "masterKeys": {"kind": "imported", "kvn": kvn, "alg": key_alg_str(alg), "enc": hex(&values[0]), "mac": hex(&values[1]), "dek": hex(&values[2])}}),
        )
        .await?;
    Ok(Issuer { id: id_of(&v, "issuer")?, name: name.to_string(), method, master })
}

// ---- phones ------------------------------------------------------------------------------

/// A kind of phone: the carrier of its SE (a built-in card profile) and the secure channel its
/// ISD runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PhoneKind {
    /// `uicc`, `microsd` or `ese` (the built-in profile of that name).
    pub carrier: &'static str,
    pub scp: Scp,
}

impl PhoneKind {
    pub const UICC_SCP02_55: PhoneKind = PhoneKind { carrier: "uicc", scp: Scp::Scp02 { i: 0x55 } };
    pub const UICC_SCP03_70: PhoneKind = PhoneKind { carrier: "uicc", scp: Scp::Scp03 { i: 0x70 } };
    pub const MICROSD_SCP02_15: PhoneKind = PhoneKind { carrier: "microsd", scp: Scp::Scp02 { i: 0x15 } };
    pub const MICROSD_SCP03_70: PhoneKind = PhoneKind { carrier: "microsd", scp: Scp::Scp03 { i: 0x70 } };
    pub const ESE_SCP03_S8: PhoneKind = PhoneKind { carrier: "ese", scp: Scp::Scp03 { i: 0x70 } };
    pub const ESE_SCP03_S16: PhoneKind = PhoneKind { carrier: "ese", scp: Scp::Scp03 { i: 0x71 } };
    /// Every carrier under every secure channel its profile offers.
    pub const ALL: [PhoneKind; 6] = [Self::UICC_SCP02_55, Self::UICC_SCP03_70, Self::MICROSD_SCP02_15, Self::MICROSD_SCP03_70, Self::ESE_SCP03_S8, Self::ESE_SCP03_S16];
    /// The demo's phones: one per carrier.
    pub const DEMO: [PhoneKind; 3] = [Self::UICC_SCP02_55, Self::MICROSD_SCP03_70, Self::ESE_SCP03_S16];

    /// `uicc SCP02 i=55`, `ese SCP03 S16 i=71`.
    pub fn label(&self) -> String {
        match self.scp {
            Scp::Scp02 { i } => format!("{} SCP02 i={i:02X}", self.carrier),
            Scp::Scp03 { i } => format!("{} SCP03 {} i={i:02X}", self.carrier, if i & 1 != 0 { "S16" } else { "S8" }),
        }
    }

    /// The key algorithm of the ISD keys: 3DES for SCP02, AES-128 for SCP03.
    pub fn key_alg(&self) -> KeyAlg {
        match self.scp {
            Scp::Scp02 { .. } => KeyAlg::Des3_2k,
            Scp::Scp03 { .. } => KeyAlg::Aes128,
        }
    }

    pub fn se_type(&self) -> SeType {
        match self.carrier {
            "uicc" => SeType::Uicc,
            "ese" => SeType::Ese,
            _ => SeType::Undefined,
        }
    }

    pub fn profile(&self) -> CardProfile {
        CardProfile::builtin(self.carrier).expect("a built-in profile")
    }
}

/// Where a phone's ISD keys come from.
pub enum PhoneKeys<'a> {
    /// Its own random keys, imported into the TSM when the SE is registered.
    Own,
    /// Diversified from the issuer's master keys with the card's KDD.
    Issuer(&'a Issuer),
}

/// Key version of the ISD key sets made here.
pub const ISD_KVN: u8 = 0x30;

/// A phone: its SE (a simulated card, shared with the agent while a session runs) and what
/// the TSM is told about it.
#[derive(Clone)]
pub struct Phone {
    pub se_id: String,
    pub kind: PhoneKind,
    pub card: Arc<Mutex<SimCard>>,
    pub kdd: [u8; 10],
    pub issuer_id: Option<String>,
    pub iccid: Option<String>,
    keys: KeySet,
}

impl fmt::Debug for Phone {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Phone({}, {})", self.se_id, self.kind.label())
    }
}

impl Phone {
    /// A new simulated card of `kind` with a random KDD and ISD keys (version 30) of its own
    /// or diversified from `keys`'s issuer. `seed` makes the card deterministic.
    pub fn new(se_id: &str, kind: PhoneKind, keys: PhoneKeys<'_>, seed: Option<u64>) -> KitResult<Phone> {
        let kdd: [u8; 10] = random();
        let alg = kind.key_alg();
        let (set, issuer_id) = match keys {
            PhoneKeys::Own => {
                let k = || -> KitResult<SecretKey> { Ok(SecretKey::new(alg, &random::<32>()[..alg.key_len()])?) };
                (KeySet::new(k()?, k()?, k()?, ISD_KVN), None)
            }
            PhoneKeys::Issuer(i) => {
                let d = |r: KeyRole| -> KitResult<SecretKey> { Ok(diversify(i.method, &i.master[r as usize - 1], &kdd, r)?) };
                if i.master[0].alg() != alg {
                    return Err(KitError::new("testkit.keys", format!("issuer {} has {:?} master keys; a {} card needs {alg:?}", i.name, i.master[0].alg(), kind.label())));
                }
                (KeySet::new(d(KeyRole::Enc)?, d(KeyRole::Mac)?, d(KeyRole::Dek)?, ISD_KVN), Some(i.id.clone()))
            }
        };
        let mut cfg = CardConfig::default().with_scp(kind.scp).with_isd_keys(set.clone());
        cfg.kdd = Some(kdd);
        if let Some(s) = seed {
            cfg = cfg.seeded(s);
        }
        let card = SimCard::new(kind.profile(), cfg)?;
        let iccid = (kind.carrier == "uicc").then(|| format!("8949{}", tsm_gp::hex::encode(&random::<8>()).chars().filter(|c| c.is_ascii_digit()).chain(std::iter::repeat('0')).take(15).collect::<String>()));
        Ok(Phone { se_id: se_id.to_string(), kind, card: Arc::new(Mutex::new(card)), kdd, issuer_id, iccid, keys: set })
    }

    /// Registers the SE with the TSM (admin: profile, ISD, its key set, the SCP) and gives the
    /// provider an SSD on it with `quota` bytes.
    pub async fn register(&self, admin: &Api, provider: &Provider, ssd_aid: &str, quota: u64) -> KitResult<Value> {
        let (scp, i) = match self.kind.scp {
            Scp::Scp02 { i } => (2, i),
            Scp::Scp03 { i } => (3, i),
        };
        let isd_keys = match &self.issuer_id {
            Some(_) => json!({"kind": "diversified", "kvn": ISD_KVN}),
            None => {
                let v = |k: &SecretKey| hex(k.expose());
                json!({"kind": "imported", "kvn": ISD_KVN, "alg": key_alg_str(self.kind.key_alg()), "enc": v(&self.keys.enc), "mac": v(&self.keys.mac), "dek": v(&self.keys.dek)})
            }
        };
        let profile = self.kind.profile();
        let se = admin
            .post(
                "/api/v1/admin/secure-elements",
                json!({"seId": self.se_id, "carrier": self.kind.carrier, "profile": profile.name, "isdAid": hex(&profile.isd_aid),
                       "issuerId": self.issuer_id, "iccid": self.iccid, "isdKeys": isd_keys, "scp": scp, "scpI": i}),
            )
            .await?;
        admin.post(&format!("/api/v1/admin/secure-elements/{}/security-domains", self.se_id), json!({"providerId": provider.id, "aid": ssd_aid, "memoryQuota": quota})).await?;
        Ok(se)
    }

    /// The local agent runs session `session` against the node at `base` with this phone's SE,
    /// until the TSM says Stop. `progress` sees every event.
    pub async fn run_agent(&self, base: &str, session: &str, mut progress: impl FnMut(&AgentEvent) + Send) -> KitResult<AgentSummary> {
        let options = AgentOptions { default_pause: Duration::ZERO, backoff_start: Duration::from_millis(50), backoff_max: Duration::from_secs(1), retry_for: Duration::from_secs(30), ..AgentOptions::default() };
        let info = SecureElementInfo::new(self.kind.se_type(), self.se_id.clone());
        let mut agent = Agent::new(base, session, info, Box::new(Shared(self.card.clone())), options)?;
        Ok(agent.run(|e| progress(&e)).await?)
    }

    /// The card's registry as the card reports it: GET STATUS (ISD, applications and SDs, load
    /// files) in a secure channel with the ISD, opened by a host [`GpSession`] with the ISD keys.
    /// It runs on a copy of the card's state, so that reading does not move the card's
    /// sequence counter under the TSM (another party's session would).
    pub fn registry(&self) -> KitResult<Vec<Entry>> {
        let storage = SecretKey::aes(&random::<32>())?;
        let copy = {
            let card = self.card.lock().map_err(|_| KitError::new("testkit.card", "the card panicked"))?;
            SimCard::from_state(card.sealed_state(&storage)?, &storage)?
        };
        let profile = self.kind.profile();
        let session = GpSession::new(copy, SessionConfig::from_profile(&profile)).with_random(|b: &mut [u8]| b.copy_from_slice(&random::<32>()[..b.len()]));
        let mut session = session;
        session.select_isd()?;
        let options = match self.kind.scp {
            Scp::Scp02 { i } => OpenOptions::new().scp02(Some(i)),
            Scp::Scp03 { i } if i & 1 != 0 => OpenOptions::new().scp03(Some(i)).s16(),
            Scp::Scp03 { i } => OpenOptions::new().scp03(Some(i)),
        };
        let keys = StaticKeys::new(self.keys.enc.clone(), self.keys.mac.clone(), self.keys.dek.clone(), ISD_KVN);
        let mut secure = session.open_secure_channel(keys, None, &options).map_err(|(_, e)| e)?;
        let content = secure.list()?;
        Ok(entries(content.entries()))
    }

    /// Saves the card's state (key values sealed under `storage_key`), e.g. for `tsm gp`.
    pub fn save(&self, path: &std::path::Path, storage_key: &SecretKey) -> KitResult<()> {
        let card = self.card.lock().map_err(|_| KitError::new("testkit.card", "the card panicked"))?;
        Ok(card.save(path, storage_key)?)
    }
}

// ---- the two views of a card ----------------------------------------------------------------

/// One registry entry, as compared between the card and the database: kind (`sd`, `app`,
/// `elf`), AID, life cycle byte, associated security domain, privileges (3 bytes, hex).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Entry {
    pub kind: &'static str,
    pub aid: String,
    pub life_cycle: u8,
    pub sd: Option<String>,
    pub privileges: Option<String>,
}

impl Entry {
    /// `INSTALLED`, `SELECTABLE`, `LOCKED`, `PERSONALIZED`, `LOADED`...
    pub fn life_cycle_name(&self) -> String {
        let lc = self.life_cycle;
        let base = match (self.kind, lc & 0x7F) {
            ("elf", 0x01) => "LOADED",
            (_, 0x03) => "INSTALLED",
            (_, 0x07) => "SELECTABLE",
            ("sd", 0x0F) => "PERSONALIZED",
            _ => "",
        };
        match (base, lc & 0x80 != 0 && self.kind != "elf") {
            ("", _) => format!("{lc:02X}"),
            (b, true) => format!("LOCKED ({b})"),
            (b, false) => b.to_string(),
        }
    }
}

/// The kind of a registry entry as compared here (`sd`, `app`, `elf`); `None` for the card
/// itself, whose entry is the ISD's (the ISD's life cycle is the card's).
fn entry_kind(e: &RegistryEntry) -> Option<&'static str> {
    match e.lifecycle {
        LifeCycle::Card(_) => None,
        LifeCycle::SecurityDomain(_) => Some("sd"),
        LifeCycle::Application(_) => Some("app"),
        LifeCycle::LoadFile(_) => Some("elf"),
    }
}

/// Registry entries in comparable form, sorted; the card itself and the ISD left out (the
/// ISD's life cycle is the card's).
pub fn entries<'a>(list: impl Iterator<Item = &'a RegistryEntry>) -> Vec<Entry> {
    let mut v: Vec<Entry> = list
        .filter_map(|e| {
            let kind = entry_kind(e)?;
            Some(Entry {
                kind,
                aid: e.aid.to_string(),
                life_cycle: e.lifecycle.value(),
                sd: e.associated_sd.map(|a| a.to_string()),
                // Three bytes (GPCS 2.3 §11.1.2): cards and the TSM's records may give one.
                privileges: e.privileges.map(|p| {
                    let mut b = p.to_bytes();
                    b.resize(3, 0);
                    hex(&b)
                }),
            })
        })
        .collect();
    v.sort();
    v
}

/// A registry entry in the short form the engine, planner and process tests compare: kind
/// (`sd`, `app`, `elf`), AID, life cycle byte, associated security domain (empty when none).
pub type RegistryRow = (String, String, u8, String);

/// Registry entries as sorted [`RegistryRow`]s; the card itself and the ISD left out.
pub fn registry_rows<'a>(list: impl IntoIterator<Item = &'a RegistryEntry>) -> Vec<RegistryRow> {
    let mut v: Vec<RegistryRow> = list
        .into_iter()
        .filter_map(|e| Some((entry_kind(e)?.to_string(), e.aid.to_string(), e.lifecycle.value(), e.associated_sd.map(|a| a.to_string()).unwrap_or_default())))
        .collect();
    v.sort();
    v
}

/// A simulated card's registry read from its state (not through GET STATUS), as sorted
/// [`RegistryRow`]s; the ISD left out.
pub fn sim_registry(card: &SimCard) -> Vec<RegistryRow> {
    let st = card.state();
    let mut v: Vec<RegistryRow> = st
        .apps
        .iter()
        .skip(1)
        .map(|a| (if a.is_sd() { "sd" } else { "app" }.to_string(), a.aid.to_string(), a.life_cycle, a.associated_sd.to_string()))
        .collect();
    v.extend(st.load_files.iter().map(|l| ("elf".to_string(), l.aid.to_string(), l.life_cycle, l.associated_sd.to_string())));
    v.sort();
    v
}

/// The registry the database holds for an SE (its `registry_json`, as the planner reads it);
/// `None` before the first contact.
pub fn stored_registry(se: &SecureElement) -> KitResult<Option<Vec<RegistryEntry>>> {
    let Some(reg) = &se.registry else { return Ok(None) };
    let profile = CardProfile::builtin(&se.profile).unwrap_or_else(|| CardProfile::builtin("ese").expect("built-in"));
    let mut view = serde_json::to_value(CardView::first_contact(se.id.as_str(), profile)).map_err(|e| KitError::new("testkit.json", e.to_string()))?;
    view["registry"] = reg.clone();
    let view: CardView = serde_json::from_value(view).map_err(|e| KitError::new("testkit.json", format!("the stored registry: {e}")))?;
    Ok(view.registry)
}

/// What the database says about an SE.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct DbView {
    /// The registry as the TSM last knew it (GET STATUS answers and what it did since);
    /// `None` before the first contact.
    pub registry: Option<Vec<Entry>>,
    /// The SSD rows: AID and life cycle.
    pub ssds: Vec<(String, Option<u8>)>,
    pub sequence_counter: Option<u32>,
    pub counter_current: bool,
}

/// Reads the SE's row and its security domain rows.
pub async fn db_view(store: &Store, se_id: &str) -> KitResult<DbView> {
    let id = SeId::new(se_id).map_err(|e| KitError::new("testkit.se_id", e.to_string()))?;
    let se = store.secure_elements().get(&id).await?.ok_or_else(|| KitError::new("sp.not_found", format!("no SE {se_id}")))?;
    let registry = stored_registry(&se)?.map(|r| entries(r.iter()));
    let mut ssds: Vec<(String, Option<u8>)> = store.security_domains().list_for_se_unscoped(&id).await?.into_iter().filter(|d| d.kind == SdKind::Ssd).map(|d| (d.aid.to_string(), d.life_cycle)).collect();
    ssds.sort();
    Ok(DbView { registry, ssds, sequence_counter: se.sequence_counter, counter_current: se.sequence_counter_current })
}

/// The differences between the card's registry and the database's view (empty: they agree):
/// entries on one side only or with other values, and SSD rows whose life cycle is not the
/// card's.
pub fn differences(card: &[Entry], db: &DbView) -> Vec<String> {
    let mut out = Vec::new();
    match &db.registry {
        None => out.push("the database has no registry for the SE".to_string()),
        Some(reg) => {
            for e in card.iter().filter(|e| !reg.contains(e)) {
                out.push(format!("card has {} {} {:02X} (sd {:?}, privileges {:?}); database: {:?}", e.kind, e.aid, e.life_cycle, e.sd, e.privileges, reg.iter().find(|d| d.aid == e.aid)));
            }
            for e in reg.iter().filter(|e| !card.iter().any(|c| c.aid == e.aid)) {
                out.push(format!("database has {} {} {:02X}, the card does not", e.kind, e.aid, e.life_cycle));
            }
        }
    }
    for (aid, lc) in &db.ssds {
        let on_card = card.iter().find(|e| e.kind == "sd" && &e.aid == aid).map(|e| e.life_cycle);
        if on_card != *lc && !(on_card.is_none() && lc.is_none()) {
            out.push(format!("SSD row {aid}: life cycle {lc:?} in the database, {on_card:?} on the card"));
        }
    }
    out
}

// ---- the service -------------------------------------------------------------------------

/// The package AID of the demo CAP: `F0` (ISO 7816-5 proprietary, unregistered) "TSMDEMO".
pub const DEMO_PACKAGE_AID: [u8; 8] = [0xF0, 0x54, 0x53, 0x4D, 0x44, 0x45, 0x4D, 0x4F];
/// Its two applets (modules): a wallet and a transit card.
pub const DEMO_WALLET_AID: [u8; 9] = [0xF0, 0x54, 0x53, 0x4D, 0x44, 0x45, 0x4D, 0x4F, 0x01];
pub const DEMO_TRANSIT_AID: [u8; 9] = [0xF0, 0x54, 0x53, 0x4D, 0x44, 0x45, 0x4D, 0x4F, 0x02];
/// The provider's SSD on every phone.
pub const DEMO_SSD_AID: &str = "A00000015153504101";

/// The demo's CAP file, generated (`tsm_gp::cap::build`): package `org.tsm.demo` 1.0 with the
/// two applets.
pub fn demo_cap() -> Vec<u8> {
    tsm_gp::cap::build::CapBuilder::new(&DEMO_PACKAGE_AID, "org.tsm.demo").applet(&DEMO_WALLET_AID).applet(&DEMO_TRANSIT_AID).build().expect("valid constants")
}

/// Uploads a CAP file: the ELF as the API describes it (`id`, `aid`, `appletAids`, hashes...).
pub async fn upload(p: &Provider, cap_name: &str, cap: Vec<u8>) -> KitResult<Value> {
    p.api.upload_cap(cap_name, cap).await
}

/// The applets of an uploaded ELF.
pub fn applets(elf: &Value) -> Vec<String> {
    elf["appletAids"].as_array().map(|a| a.iter().filter_map(|x| x.as_str().map(str::to_string)).collect()).unwrap_or_default()
}

/// A deployable service of one provider.
#[derive(Debug, Clone)]
pub struct Service {
    pub id: String,
    pub name: String,
    pub elf_id: String,
    pub flavor_id: String,
    pub app_config_id: String,
    pub package_aid: String,
    pub module_aid: String,
    pub instance_aid: String,
}

/// A service around an uploaded ELF: version 1.0, one flavor for every carrier
/// (`memory_quota` bytes), one application (`module` installed as `instance`, `C8` quota
/// 1024), and a personalization script with a clear DGI and a sensitive one (random).
pub async fn service(p: &Provider, name: &str, elf: &Value, module: &str, instance: &str, memory_quota: u64) -> KitResult<Service> {
    let elf_id = id_of(elf, "ELF")?;
    let svc = p.api.post("/api/v1/services", json!({"name": name, "description": "deployed by tsm's testkit"})).await?;
    let id = id_of(&svc, "service")?;
    p.api.post(&format!("/api/v1/services/{id}/versions"), json!({"tag": "1.0", "elfId": elf_id})).await?;
    let flavor = p.api.post(&format!("/api/v1/services/{id}/versions/1.0/flavors"), json!({"name": "any-se", "memoryQuota": memory_quota})).await?;
    let flavor_id = id_of(&flavor, "flavor")?;
    let app = p
        .api
        .post(&format!("/api/v1/services/{id}/flavors/{flavor_id}/application-configs"), json!({"moduleAid": module, "instanceAid": instance, "privileges": "00", "nvQuota": 1024}))
        .await?;
    let app_config_id = id_of(&app, "application config")?;
    p.api
        .post(
            "/api/v1/personalization-scripts",
            json!({"applicationConfigId": app_config_id, "name": "card data",
                   "blocks": [{"data": "01010A5A084711000000000001"}, {"data": format!("800110{}", hex(&random::<16>())), "sensitive": true}]}),
        )
        .await?;
    let package_aid = elf["aid"].as_str().unwrap_or_default().to_string();
    Ok(Service { id, name: name.to_string(), elf_id, flavor_id, app_config_id, package_aid, module_aid: module.to_string(), instance_aid: instance.to_string() })
}

/// A service instance of `s` on `se_id`: its id.
pub async fn instance(p: &Provider, s: &Service, se_id: &str) -> KitResult<String> {
    id_of(&p.api.post("/api/v1/service-instances", json!({"serviceId": s.id, "seId": se_id})).await?, "service instance")
}

/// Queues `op` (`deploy`, `suspend`, `resume`, `terminate`) on an instance: (process id,
/// SERAM session id).
pub async fn operate(p: &Provider, instance: &str, op: &str) -> KitResult<(String, String)> {
    let q = p.api.post(&format!("/api/v1/service-instances/{instance}/{op}"), Value::Null).await?;
    let pid = q["processId"].as_str().unwrap_or_default().to_string();
    let sid = q["sessionId"].as_str().unwrap_or_default().to_string();
    Ok((pid, sid))
}

/// A process as the provider API shows it.
pub async fn process(p: &Provider, pid: &str) -> KitResult<Value> {
    p.api.get(&format!("/api/v1/processes/{pid}")).await
}

/// The state of an instance (`OPERATIONAL`, `SUSPENDED`, `NOT_DEPLOYED`...).
pub async fn instance_state(p: &Provider, instance: &str) -> KitResult<String> {
    Ok(p.api.get(&format!("/api/v1/service-instances/{instance}")).await?["state"].as_str().unwrap_or_default().to_string())
}

/// What one operation on one phone took.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Outcome {
    pub process_id: String,
    pub state: String,
    pub error: Option<Value>,
    /// SERAM exchanges that carried the process's APDUs (the server's count).
    pub round_trips: u64,
    pub apdus: u64,
    /// Orders the agent received in the session (Start, notifications, Stop included).
    pub orders: u64,
    /// HTTP requests the agent made in the session: the handshake and every report (the
    /// first, void one included), retries included.
    pub http_requests: u64,
    pub elapsed_ms: u64,
}

/// Queues `op` and runs the phone's agent for its session: the process as it ended.
pub async fn run_operation(node_base: &str, p: &Provider, phone: &Phone, instance: &str, op: &str, progress: impl FnMut(&AgentEvent) + Send) -> KitResult<Outcome> {
    let t = std::time::Instant::now();
    let (pid, sid) = operate(p, instance, op).await?;
    let summary = phone.run_agent(node_base, &sid, progress).await?;
    let pr = process(p, &pid).await?;
    Ok(Outcome {
        process_id: pid,
        state: pr["state"].as_str().unwrap_or_default().to_string(),
        error: pr.get("error").filter(|e| !e.is_null()).cloned(),
        round_trips: pr["progress"]["roundTrips"].as_u64().unwrap_or(0),
        apdus: pr["progress"]["apdus"].as_u64().unwrap_or(0),
        orders: summary.orders,
        http_requests: 1 + summary.reports + summary.retries,
        elapsed_ms: t.elapsed().as_millis() as u64,
    })
}
