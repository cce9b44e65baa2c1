//! The device API: GP SERAM HTTP REST binding 2.0.0 (the Remote Agent), under `/gp/seram`.
//!
//! - `POST /gp/seram/handshake?sessionId=` — the phone's SEs and protocols. Unknown session:
//!   `404 seram.unknown_session`; the session's SE not offered: `406 seram.se_mismatch`; no
//!   HTTPS, `application/json` or 2.x offered: `406 seram.not_acceptable`. Chooses `HTTPS`,
//!   `application/json`, `2.0.0`.
//! - `POST /gp/seram/remoteManagement?sessionId=` — a report answers the outstanding order; the
//!   answer is the next order: Start first (with the first batch when there is one), SE RAM
//!   commands (one per order, a segment of a planner batch, see [`crate::engine::segments`]),
//!   notifications of process results, Stop when the SE has no work left. With nothing to
//!   send yet the request is held (long poll, `seram.long_poll_seconds` ≤ 30 s) while the
//!   database is polled (work may be queued on another node) and this node's wake-up fires.
//! - `POST /gp/seram/order` — the order provisioning interface: a management session for an
//!   SE (admin token, or a provider token for an SE it has an SSD on); `201 {"sessionId"}`.
//!
//! **No node keeps a session in memory**: the session row holds the outstanding order, its
//! sequence number, the segment it carries, and the hash of the last accepted report; every
//! decision is committed with the engine's writes in one transaction.
//!
//! **Repeats and replays.** Each answer sets the cookie `seram-order=<seq>.<mac>` (the order's
//! sequence number, MAC'd with `tsm/seram/order-mac` from the key store, the same on every
//! node). A report whose cookie names the outstanding order is applied. One whose cookie names
//! the previous order and whose hash is the last accepted report's is a repeat (the phone lost
//! our answer): it gets the stored order again and changes nothing. Any other stale report is
//! `409 seram.stale_report`. Without the cookie: a report identical to the last accepted one
//! with R-APDUs is a repeat; a report without R-APDUs while the outstanding order carries
//! C-APDUs is a repeat of the request that fetched it (the agent has not run it); R-APDUs when
//! no C-APDU is outstanding are stale; anything else is taken as the answer to the outstanding
//! order and must fit it (`400 seram.bad_report` otherwise, nothing changed).
//!
//! **Timeouts.** A session whose agent has not been heard of for `min(seram.session_idle_seconds,
//! 5 min)` is expired (`404 seram.session_expired`) and its SE lease released; its process
//! stays resumable by the SE's next session.

use super::auth::{Admin, Provider};
use super::error::{ApiError, ApiResult};
use crate::app::AppState;
use crate::domain::*;
use crate::engine::{Decision, Engine, EngineError, Pending, SessionNext};
use crate::keys::{KeyId, KeyStoreError};
use crate::seram_types::{
    self, HandshakeCommand, HandshakeResponse, LocalAgentStatusEnum, RamCommand, RamResponse, RemoteManagementOrder, RemoteManagementReport, SeType,
};
use crate::store::StoreError;
use axum::Router;
use axum::body::Bytes;
use axum::extract::{FromRequestParts, Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::time::Duration;
use tsm_gp::crypto::KeyAlg;

/// The cookie carrying the order sequence number.
pub const ORDER_COOKIE: &str = "seram-order";
/// The key-store key the cookie MAC is computed with (AES-256 CMAC, generated on first use).
pub const COOKIE_KEY: &str = "tsm/seram/order-mac";
/// How often a held request looks at the database.
const POLL_EVERY: Duration = Duration::from_millis(200);

/// The `/gp/seram/...` routes (full paths), with their state applied.
pub fn routes(state: AppState) -> Router {
    Router::new()
        .route("/gp/seram/handshake", post(handshake))
        .route("/gp/seram/remoteManagement", post(remote_management))
        .route("/gp/seram/order", post(order))
        .with_state(state)
}

// ---- the session document --------------------------------------------------------------------

/// What the session row's `order_json` holds.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SessionDoc {
    /// The outstanding order, as sent.
    #[serde(default)]
    pub order: Option<RemoteManagementOrder>,
    /// The batch segment it carries.
    #[serde(default)]
    pub pending: Option<Pending>,
    /// The SE as the handshake named it (echoed as `chosenSecureElement`).
    #[serde(default)]
    pub se: Option<seram_types::SecureElement>,
    /// The Start command went out to the current agent run.
    #[serde(default)]
    pub started: bool,
    /// Created by `/gp/seram/order`: waits for its first work instead of stopping when there
    /// is none.
    #[serde(default)]
    pub provisioned: bool,
    /// A process ran in this session (once it is done, the session stops when idle).
    #[serde(default)]
    pub worked: bool,
    /// Since when a provisioned session has had nothing to do.
    #[serde(default)]
    pub idle_since: Option<i64>,
    /// A handshake (a new agent run) came while `pending` was outstanding: the previous run
    /// may or may not have run it, so the new run's first poll gets a fresh read of the card,
    /// not the stored order ([`Engine::on_new_agent_run`]).
    #[serde(default)]
    pub new_run: bool,
}

impl SessionDoc {
    pub fn of(s: &SeramSession) -> SessionDoc {
        s.order.as_ref().and_then(|v| serde_json::from_value(v.clone()).ok()).unwrap_or_default()
    }
}

// ---- errors ------------------------------------------------------------------------------------

fn unknown_session() -> ApiError {
    ApiError::new(StatusCode::NOT_FOUND, "seram.unknown_session", "no management session with this sessionId")
}

fn bad_report(m: impl Into<String>) -> ApiError {
    ApiError::new(StatusCode::BAD_REQUEST, "seram.bad_report", m)
}

fn stale(m: impl Into<String>) -> ApiError {
    ApiError::new(StatusCode::CONFLICT, "seram.stale_report", m)
}

fn engine_err(e: EngineError) -> ApiError {
    match e {
        EngineError::BadReport(m) => bad_report(format!("the report does not fit the outstanding order: {m}")),
        EngineError::Store(s) => s.into(),
        EngineError::Keys(m) => ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "engine.keys", format!("the key store failed; send the report again ({m})")),
        e @ EngineError::Internal(_) => ApiError::internal("engine.internal", e.to_string()),
    }
}

fn key_err(e: KeyStoreError) -> ApiError {
    ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "engine.keys", format!("the key store failed ({})", e.code()))
}

#[derive(Debug, Deserialize)]
struct SessionQuery {
    #[serde(rename = "sessionId")]
    session_id: Option<String>,
}

fn session_id(q: &SessionQuery) -> ApiResult<SeramSessionId> {
    let s = q.session_id.as_deref().ok_or_else(|| ApiError::invalid("the sessionId query parameter is required"))?;
    s.trim().parse().map_err(|_| unknown_session())
}

/// The session, if it can still take requests (`Err` otherwise).
async fn live_session(state: &AppState, sid: SeramSessionId) -> ApiResult<SeramSession> {
    let s = state.store.seram_sessions().get(sid).await?.ok_or_else(unknown_session)?;
    if s.state == SeramSessionState::Expired {
        return Err(ApiError::new(StatusCode::NOT_FOUND, "seram.session_expired", "the management session expired (its agent was not heard of); ask for a new one"));
    }
    if s.state != SeramSessionState::Closed && now_ms() - s.last_activity > lost_after(state).as_millis() as i64 {
        expire(state, s).await?;
        return Err(ApiError::new(StatusCode::NOT_FOUND, "seram.session_expired", "the management session expired (its agent was not heard of); ask for a new one"));
    }
    Ok(s)
}

/// How long a session lives without hearing from its agent (the binding: 5 minutes at most).
fn lost_after(state: &AppState) -> Duration {
    Duration::from_secs(state.config.seram.session_idle_seconds.max(1)).min(seram_types::RETRY_FOR)
}

async fn expire(state: &AppState, mut s: SeramSession) -> ApiResult<()> {
    let se = s.se_id.clone();
    let sid = s.id;
    s.state = SeramSessionState::Expired;
    match state.store.seram_sessions().update_if_version(&s).await {
        Ok(_) | Err(StoreError::VersionConflict { .. }) => {}
        Err(e) => return Err(e.into()),
    }
    Engine::new(state).release(sid, &se).await.map_err(engine_err)?;
    state
        .store
        .audit_log()
        .append(&crate::store::log::NewAuditEntry {
            actor: format!("node:{}", state.node_id),
            provider_id: None,
            action: "session_expired".into(),
            object_type: "seram_session".into(),
            object_id: sid.to_string(),
            detail: Some(serde_json::json!({"seId": se.as_str(), "processId": s.process_id})),
        })
        .await?;
    tracing::info!(session = %sid, "SERAM session expired");
    Ok(())
}

// ---- cookies -----------------------------------------------------------------------------------

/// Lease row that serializes the creation of the cookie key across nodes (the `se_leases`
/// table doubles as a general named lock; no SE id contains `/`... nor this name).
const COOKIE_KEY_LEASE: &str = "tsm:key:seram-order-mac";

/// Makes sure the cookie key exists. Key stores have no atomic create-if-absent that holds
/// across nodes (two PKCS#11 sessions can each create an object with the same label), so the
/// first creation is serialized by a database lease: the holder creates the key if it is still
/// missing, the others wait for it.
async fn ensure_cookie_key(state: &AppState) -> ApiResult<()> {
    let exists = |keys: std::sync::Arc<dyn crate::keys::KeyStore>| async move {
        tokio::task::spawn_blocking(move || -> Result<bool, KeyStoreError> { Ok(keys.info(&KeyId::new(COOKIE_KEY)?)?.is_some()) })
            .await
            .map_err(|e| ApiError::internal("engine.internal", e.to_string()))?
            .map_err(key_err)
    };
    if exists(state.keys.clone()).await? {
        return Ok(());
    }
    let lease = SeId::new(COOKIE_KEY_LEASE).map_err(|e| ApiError::internal("engine.internal", e.to_string()))?;
    let holder = format!("{}:{}", state.node_id, uuid::Uuid::new_v4());
    for _ in 0..200 {
        if state.store.leases().acquire(&lease, &holder, std::time::Duration::from_secs(30)).await?.is_some() {
            let keys = state.keys.clone();
            let made = tokio::task::spawn_blocking(move || -> Result<(), KeyStoreError> {
                let id = KeyId::new(COOKIE_KEY)?;
                if keys.info(&id)?.is_none() {
                    match keys.generate(&id, KeyAlg::Aes256) {
                        Ok(_) | Err(KeyStoreError::AlreadyExists(_)) => {}
                        Err(e) => return Err(e),
                    }
                }
                Ok(())
            })
            .await
            .map_err(|e| ApiError::internal("engine.internal", e.to_string()));
            let _ = state.store.leases().release(&lease, &holder).await;
            return made?.map_err(key_err);
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        if exists(state.keys.clone()).await? {
            return Ok(());
        }
    }
    Err(ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "engine.keys", "the SERAM cookie key is being created by another node; try again"))
}

async fn cookie_mac(state: &AppState, sid: SeramSessionId, seq: i64) -> ApiResult<String> {
    ensure_cookie_key(state).await?;
    let keys = state.keys.clone();
    let msg = format!("{ORDER_COOKIE}|{sid}|{seq}").into_bytes();
    let mac = tokio::task::spawn_blocking(move || -> Result<[u8; 16], KeyStoreError> {
        let id = KeyId::new(COOKIE_KEY)?;
        Ok(keys.handle(&id)?.cmac(&msg)?)
    })
    .await
    .map_err(|e| ApiError::internal("engine.internal", e.to_string()))?
    .map_err(key_err)?;
    Ok(tsm_gp::hex::encode(&mac[..8]))
}

async fn set_cookie(state: &AppState, sid: SeramSessionId, seq: i64) -> ApiResult<HeaderValue> {
    let mac = cookie_mac(state, sid, seq).await?;
    let secure = if state.config.server.tls_cert.is_some() { "; Secure" } else { "" };
    HeaderValue::from_str(&format!("{ORDER_COOKIE}={seq}.{mac}; Path={}; HttpOnly; SameSite=Strict{secure}", seram_types::BASE_PATH)).map_err(|e| ApiError::internal("engine.internal", e.to_string()))
}

/// The order sequence number the request's cookie names (`Ok(None)` without the cookie).
async fn cookie_seq(state: &AppState, sid: SeramSessionId, headers: &HeaderMap) -> ApiResult<Option<i64>> {
    let Some(value) = headers.get_all(header::COOKIE).iter().filter_map(|v| v.to_str().ok()).flat_map(|v| v.split(';')).find_map(|c| {
        let (n, v) = c.split_once('=')?;
        (n.trim() == ORDER_COOKIE).then(|| v.trim().to_string())
    }) else {
        return Ok(None);
    };
    let bad = || bad_report(format!("the {ORDER_COOKIE} cookie does not verify"));
    let (seq, mac) = value.split_once('.').ok_or_else(bad)?;
    let seq: i64 = seq.parse().map_err(|_| bad())?;
    let expect = cookie_mac(state, sid, seq).await?;
    if !ct_eq(expect.as_bytes(), mac.to_ascii_uppercase().as_bytes()) {
        return Err(bad());
    }
    Ok(Some(seq))
}

fn ct_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

fn with_cookie(body: impl Serialize, cookie: HeaderValue) -> Response {
    let mut r = (StatusCode::OK, axum::Json(body)).into_response();
    r.headers_mut().insert(header::SET_COOKIE, cookie);
    r.headers_mut().insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    r
}

// ---- handshake ---------------------------------------------------------------------------------

async fn handshake(State(state): State<AppState>, Query(q): Query<SessionQuery>, body: Bytes) -> ApiResult<Response> {
    let sid = session_id(&q)?;
    let hello: HandshakeCommand = serde_json::from_slice(&body).map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, "seram.bad_handshake", format!("not a Handshake Command: {e}")))?;
    for _ in 0..5 {
        let mut s = live_session(&state, sid).await?;
        if s.state == SeramSessionState::Closed {
            return Err(ApiError::new(StatusCode::NOT_FOUND, "seram.session_closed", "the management session is over (it ended with a Stop command)"));
        }
        let offered = |list: Vec<String>, want: &str| list.iter().any(|v| v.trim().eq_ignore_ascii_case(want));
        if !offered(hello.transport_protocols(), seram_types::TRANSPORT_HTTPS) {
            return Err(ApiError::new(StatusCode::NOT_ACCEPTABLE, "seram.not_acceptable", format!("this Remote Agent speaks HTTPS only; offered: {:?}", hello.transport_protocols())));
        }
        if !offered(hello.data_formats(), seram_types::DATA_FORMAT_JSON) {
            return Err(ApiError::new(StatusCode::NOT_ACCEPTABLE, "seram.not_acceptable", format!("this Remote Agent speaks application/json only; offered: {:?}", hello.data_formats())));
        }
        if !hello.versions().iter().any(|v| v.trim().split('.').next() == Some("2")) {
            return Err(ApiError::new(StatusCode::NOT_ACCEPTABLE, "seram.not_acceptable", format!("this Remote Agent speaks GP SERAM {}; offered: {:?}", seram_types::SERAM_VERSION, hello.versions())));
        }
        let se = hello
            .secure_elements
            .iter()
            .find(|e| e.se_id == s.se_id.as_str())
            .or_else(|| hello.secure_elements.iter().find(|e| e.se_id.eq_ignore_ascii_case(s.se_id.as_str())))
            .cloned()
            .ok_or_else(|| {
                let ids: Vec<&str> = hello.secure_elements.iter().map(|e| e.se_id.as_str()).collect();
                ApiError::new(StatusCode::NOT_ACCEPTABLE, "seram.se_mismatch", format!("this session manages another secure element than the {} offered ({})", ids.len(), ids.join(", ")))
            })?;
        let mut doc = SessionDoc::of(&s);
        doc.se = Some(se);
        // A new agent run (or the same one, whose handshake answer was lost): it needs a Start
        // before SE RAM commands.
        doc.started = false;
        doc.new_run = doc.pending.is_some();
        if let Some(o) = doc.order.as_mut()
            && doc.pending.is_some()
            && !o.ram_commands.iter().any(|c| matches!(c, RamCommand::Start))
        {
            o.ram_commands.insert(0, RamCommand::Start);
            doc.started = true;
        }
        s.state = SeramSessionState::Active;
        s.order = Some(serde_json::to_value(&doc).map_err(|e| ApiError::internal("engine.internal", e.to_string()))?);
        s.last_activity = now_ms();
        match state.store.seram_sessions().update_if_version(&s).await {
            Ok(_) => {}
            Err(StoreError::VersionConflict { .. }) => continue,
            Err(e) => return Err(e.into()),
        }
        tracing::info!(session = %sid, se = %s.se_id, "SERAM handshake");
        let cookie = set_cookie(&state, sid, s.order_seq).await?;
        return Ok(with_cookie(HandshakeResponse::default(), cookie));
    }
    Err(ApiError::conflict("engine.conflict", "the session changed concurrently; send the handshake again"))
}

// ---- remote management -------------------------------------------------------------------------

/// How a report relates to the outstanding order.
#[derive(Debug, PartialEq, Eq)]
enum Class {
    /// The answer to the outstanding order.
    Fresh,
    /// A repeat: answer with the stored order, change nothing.
    Repeat,
    /// The first poll of a new agent run while an order is outstanding: read the card again.
    NewRun,
    Stale(String),
}

fn classify(report: &RemoteManagementReport, cookie: Option<i64>, s: &SeramSession, doc: &SessionDoc, hash: &str) -> Class {
    let has_resp = !report.ram_responses.is_empty();
    let outstanding_apdus = doc.pending.is_some();
    let same_as_last = s.last_report_hash.as_deref() == Some(hash);
    let polling = *report.status() == LocalAgentStatusEnum::Polling;
    if doc.new_run && outstanding_apdus && polling && !has_resp && cookie.is_none_or(|seq| seq == s.order_seq) {
        return Class::NewRun;
    }
    match cookie {
        Some(seq) if seq == s.order_seq => {
            if outstanding_apdus && !has_resp && polling {
                // A new agent run polls before it has seen the order: give it the order.
                Class::Repeat
            } else {
                Class::Fresh
            }
        }
        Some(seq) if seq + 1 == s.order_seq && same_as_last => Class::Repeat,
        Some(seq) => Class::Stale(format!("the report answers order {seq}; the outstanding order is {}", s.order_seq)),
        None if has_resp && same_as_last && s.order_seq > 0 => Class::Repeat,
        None if !has_resp && outstanding_apdus && polling => Class::Repeat,
        None if has_resp && !outstanding_apdus => Class::Stale("the report carries R-APDUs but no C-APDU is outstanding".into()),
        None => Class::Fresh,
    }
}

/// The R-APDUs of a report's SE RAM response (at most one per order).
fn answers(report: &RemoteManagementReport) -> Result<Vec<Vec<u8>>, String> {
    let se_ram: Vec<&RamResponse> = report.ram_responses.iter().filter(|r| matches!(r, RamResponse::SeRam { .. })).collect();
    if se_ram.len() > 1 {
        return Err(format!("{} seRamResponses to an order with one seRamCommand", se_ram.len()));
    }
    let Some(r) = se_ram.first() else { return Ok(Vec::new()) };
    // An empty string is "no response available" (binding): the command was not answered, and
    // neither were the ones after it.
    r.rapdus()
        .unwrap_or_default()
        .iter()
        .take_while(|h| !h.is_empty())
        .enumerate()
        .map(|(i, h)| h.decode().map_err(|e| format!("R-APDU {} is not hex: {e}", i + 1)))
        .collect()
}

fn canonical_hash(v: &serde_json::Value) -> String {
    // serde_json maps are ordered by key: the same report gives the same bytes.
    tsm_gp::hex::encode(&tsm_gp::crypto::sha256(&serde_json::to_vec(v).unwrap_or_default()))
}

/// An order to send and what goes with it.
struct OrderReply {
    order: RemoteManagementOrder,
    pending: Option<Pending>,
    stop: bool,
    idle_since: Option<i64>,
    decision: Option<Decision>,
}

fn order_reply(order: RemoteManagementOrder, pending: Option<Pending>, stop: bool, idle_since: Option<i64>, decision: Option<Decision>) -> Reply {
    Reply::Order(Box::new(OrderReply { order, pending, stop, idle_since, decision }))
}

/// What the session sends next, once the engine decided.
enum Reply {
    /// An order (with the engine's writes to commit).
    Order(Box<OrderReply>),
    /// Hold the request: nothing to send yet.
    Wait,
}

async fn remote_management(State(state): State<AppState>, Query(q): Query<SessionQuery>, headers: HeaderMap, body: Bytes) -> ApiResult<Response> {
    let sid = session_id(&q)?;
    let value: serde_json::Value = serde_json::from_slice(&body).map_err(|e| bad_report(format!("the body is not JSON: {e}")))?;
    let report: RemoteManagementReport = serde_json::from_value(value.clone()).map_err(|e| bad_report(format!("not a Report message: {e}")))?;
    let hash = canonical_hash(&value);
    let cookie = cookie_seq(&state, sid, &headers).await?;
    let engine = Engine::new(&state);
    let long_poll = Duration::from_secs(state.config.seram.long_poll_seconds.min(30));
    let deadline = tokio::time::Instant::now() + long_poll;
    for _attempt in 0..8 {
        let s = live_session(&state, sid).await?;
        match s.state {
            SeramSessionState::Created => return Err(ApiError::conflict("seram.no_handshake", "the session has not shaken hands: POST /gp/seram/handshake first")),
            SeramSessionState::Closed => {
                // The Stop that ended the session, again (its answer may have been lost).
                let doc = SessionDoc::of(&s);
                let order = doc.order.unwrap_or_else(|| RemoteManagementOrder::commands(vec![RamCommand::Stop]));
                return Ok(with_cookie(order, set_cookie(&state, sid, s.order_seq).await?));
            }
            _ => {}
        }
        let doc = SessionDoc::of(&s);
        let class = classify(&report, cookie, &s, &doc, &hash);
        match &class {
            Class::Repeat => {
                tracing::info!(session = %sid, seq = s.order_seq, "repeated report: the stored order again");
                let order = doc.order.clone().unwrap_or_else(|| RemoteManagementOrder::void(Some(0)));
                return Ok(with_cookie(order, set_cookie(&state, sid, s.order_seq).await?));
            }
            Class::Stale(m) => return Err(stale(m)),
            Class::Fresh | Class::NewRun => {}
        }
        let mut reply = match (&class, &doc.pending) {
            (Class::NewRun, Some(p)) => {
                tracing::info!(session = %sid, seq = s.order_seq, "new agent run with an order outstanding: the card is read again");
                let d = engine.on_new_agent_run(s.id, &s.se_id, p).await.map_err(engine_err)?;
                // The new run has had no Start yet (the stored order, which had it, is dropped).
                render(&state, &SessionDoc { started: false, ..doc.clone() }, d)
            }
            _ => decide(&state, &engine, &s, &doc, &report).await?,
        };
        // Long poll: nothing to send and nothing written; look again until the deadline.
        while matches!(reply, Reply::Wait) {
            if tokio::time::Instant::now() >= deadline || state.is_shutting_down() {
                reply = order_reply(void_order(&doc), None, false, doc.idle_since.or(Some(now_ms())), None);
                break;
            }
            tokio::select! {
                _ = tokio::time::sleep(POLL_EVERY.min(deadline - tokio::time::Instant::now())) => {}
                _ = state.wake.notified() => {}
                _ = state.shutting_down() => {}
            }
            let now = state.store.seram_sessions().get(sid).await?.ok_or_else(unknown_session)?;
            if now.version != s.version {
                break; // another request of this session moved it: decide again
            }
            reply = poll_work(&state, &engine, &s, &doc).await?;
        }
        let Reply::Order(r) = reply else { continue };
        let OrderReply { order, pending, stop, idle_since, decision } = *r;
        let mut commit = decision.map(|d| d.commit).unwrap_or_default();
        let mut row = s.clone();
        let mut new_doc = doc.clone();
        new_doc.started = new_doc.started || order.ram_commands.iter().any(|c| matches!(c, RamCommand::Start));
        new_doc.order = Some(order.clone());
        new_doc.pending.clone_from(&pending);
        new_doc.worked = doc.worked || pending.is_some();
        new_doc.idle_since = idle_since;
        new_doc.new_run = false;
        row.order = Some(serde_json::to_value(&new_doc).map_err(|e| ApiError::internal("engine.internal", e.to_string()))?);
        row.order_seq = s.order_seq + 1;
        row.last_report_hash = Some(hash.clone());
        row.last_activity = now_ms();
        row.process_id = pending.as_ref().map(|p| p.process_id).or(s.process_id);
        if stop {
            row.state = SeramSessionState::Closed;
        }
        let wrote_processes = !commit.processes.is_empty();
        commit.session = Some(row);
        match state.store.engine_commit(&commit).await {
            Ok(()) => {}
            Err(StoreError::VersionConflict { entity, .. }) => {
                tracing::info!(session = %sid, entity, "concurrent update: deciding again");
                continue;
            }
            Err(e) => return Err(e.into()),
        }
        if stop {
            engine.release(sid, &s.se_id).await.map_err(engine_err)?;
        }
        if wrote_processes || stop {
            state.wake_all();
        }
        return Ok(with_cookie(order, set_cookie(&state, sid, s.order_seq + 1).await?));
    }
    Err(ApiError::conflict("engine.conflict", "the session kept changing concurrently; send the report again"))
}

fn void_order(_doc: &SessionDoc) -> RemoteManagementOrder {
    RemoteManagementOrder::void(Some(0))
}

/// The next order for a fresh report.
async fn decide(state: &AppState, engine: &Engine, s: &SeramSession, doc: &SessionDoc, report: &RemoteManagementReport) -> ApiResult<Reply> {
    let status = report.status().clone();
    let executed = report.executed();
    let decision = match &doc.pending {
        Some(p) => {
            let rapdus = answers(report).map_err(bad_report)?;
            if status.is_error() {
                let msg = report.local_agent_status.error_msg.clone().unwrap_or_default();
                engine.on_agent_error(s.id, &s.se_id, p, &status, &msg, &rapdus).await.map_err(engine_err)?
            } else {
                if status != LocalAgentStatusEnum::Processed {
                    return Err(bad_report(format!("an order with an SE RAM command is answered {status} (PROCESSED, or an error status)")));
                }
                if executed != 1 {
                    return Err(bad_report(format!("executedSeRamCommands is {executed}; the order carried 1 SE RAM command and the status is PROCESSED")));
                }
                engine.on_answers(s.id, &s.se_id, p, &rapdus).await.map_err(engine_err)?
            }
        }
        None => {
            if !report.ram_responses.is_empty() || executed > 0 {
                return Err(bad_report("the report carries SE RAM responses, but the outstanding order had no SE RAM command"));
            }
            if status.is_error() {
                // The agent cannot reach the SE at all: end the session.
                tracing::info!(session = %s.id, %status, "local agent error without work outstanding");
                let order = stop_order(doc, &[]);
                return Ok(order_reply(order, None, true, None, None));
            }
            engine.next_work(s.id, &s.se_id).await.map_err(engine_err)?
        }
    };
    Ok(render(state, doc, decision))
}

/// Looks for work while a request is held.
async fn poll_work(state: &AppState, engine: &Engine, s: &SeramSession, doc: &SessionDoc) -> ApiResult<Reply> {
    let d = engine.next_work(s.id, &s.se_id).await.map_err(engine_err)?;
    Ok(render(state, doc, d))
}

fn stop_order(doc: &SessionDoc, notifications: &[String]) -> RemoteManagementOrder {
    let mut cmds = Vec::new();
    if !doc.started {
        cmds.push(RamCommand::Start);
    }
    cmds.extend(notifications.iter().map(RamCommand::notification));
    cmds.push(RamCommand::Stop);
    RemoteManagementOrder { delay: None, chosen_secure_element: None, ram_commands: cmds }
}

/// The order for an engine decision.
fn render(state: &AppState, doc: &SessionDoc, d: Decision) -> Reply {
    let wrote = !d.commit.is_empty();
    let start = if doc.started { vec![] } else { vec![RamCommand::Start] };
    let notes = || d.notifications.iter().map(RamCommand::notification).collect::<Vec<_>>();
    match &d.next {
        SessionNext::Send(p) => {
            let mut cmds = start;
            cmds.extend(notes());
            cmds.push(RamCommand::se_ram(p.capdus()));
            let order = RemoteManagementOrder {
                delay: Some(state.config.seram.order_delay_ms),
                chosen_secure_element: Some(doc.se.clone().unwrap_or_else(|| seram_types::SecureElement::new(SeType::Undefined, p.process_id.to_string()))),
                ram_commands: cmds,
            };
            let pending = Some(p.clone());
            order_reply(order, pending, false, None, Some(d))
        }
        SessionNext::Stop(why) => {
            tracing::info!(reason = %why, "SERAM session stops");
            let order = stop_order(doc, &d.notifications);
            order_reply(order, None, true, None, Some(d))
        }
        SessionNext::Idle | SessionNext::Blocked => {
            let blocked = matches!(d.next, SessionNext::Blocked);
            let idle_since = doc.idle_since.unwrap_or_else(now_ms);
            let waiting_allowed = blocked || (doc.provisioned && !doc.worked && now_ms() - idle_since < lost_after(state).as_millis() as i64);
            if !waiting_allowed {
                let order = stop_order(doc, &d.notifications);
                return order_reply(order, None, true, None, Some(d));
            }
            if wrote || !d.notifications.is_empty() {
                // Something was written (a process ended): answer now, the agent polls again.
                let mut cmds = start;
                cmds.extend(notes());
                let order = RemoteManagementOrder { delay: Some(0), chosen_secure_element: None, ram_commands: cmds };
                return order_reply(order, None, false, Some(idle_since), Some(d));
            }
            if !doc.started {
                // Start goes out at once; waiting comes after.
                let order = RemoteManagementOrder { delay: Some(0), chosen_secure_element: None, ram_commands: start };
                return order_reply(order, None, false, Some(idle_since), None);
            }
            Reply::Wait
        }
    }
}

// ---- order provisioning ------------------------------------------------------------------------

/// Who may provision a session: the admin, or a provider for an SE it has an SSD on.
enum Orderer {
    Admin(Admin),
    Provider(Provider),
}

impl FromRequestParts<AppState> for Orderer {
    type Rejection = ApiError;
    async fn from_request_parts(parts: &mut axum::http::request::Parts, state: &AppState) -> Result<Self, Self::Rejection> {
        if let Ok(a) = Admin::from_request_parts(parts, state).await {
            return Ok(Orderer::Admin(a));
        }
        Provider::from_request_parts(parts, state).await.map(Orderer::Provider)
    }
}

/// The body of `POST /gp/seram/order` (Order Provisioning Interface): every property optional
/// in the example; here one SE is required.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct OrderRequest {
    #[serde(default)]
    secure_element: Option<seram_types::SecureElement>,
    #[serde(default)]
    secure_elements: Option<Vec<seram_types::SecureElement>>,
    #[serde(default, alias = "sessionID")]
    session_id: Option<String>,
    #[serde(default)]
    remote_management_order: Option<serde_json::Value>,
    #[serde(flatten)]
    _other: HashMap<String, serde_json::Value>,
}

async fn order(who: Orderer, State(state): State<AppState>, body: Bytes) -> ApiResult<Response> {
    let req: OrderRequest = serde_json::from_slice(&body).map_err(|e| ApiError::invalid(format!("not an order provisioning request: {e}")))?;
    if req.remote_management_order.as_ref().is_some_and(|o| !o.is_null()) {
        return Err(ApiError::unprocessable(
            "seram.raw_orders_unsupported",
            "this TSM does not relay raw orders: queue an operation through the provider API; the session then carries it",
        ));
    }
    let mut ses: Vec<seram_types::SecureElement> = req.secure_element.into_iter().collect();
    ses.extend(req.secure_elements.unwrap_or_default());
    let [se] = ses.as_slice() else {
        return Err(ApiError::invalid(format!("name exactly one secure element (secureElement or secureElements), got {}", ses.len())));
    };
    let se_id: SeId = se.se_id.parse().map_err(|_| ApiError::not_found("secure element"))?;
    let row = state.store.secure_elements().get(&se_id).await?.ok_or_else(|| ApiError::not_found("secure element"))?;
    let (actor, provider) = match &who {
        Orderer::Admin(_) => ("admin".to_string(), None),
        Orderer::Provider(p) => {
            let ok = state.store.security_domains().list(p.id).await?.iter().any(|d| d.se_id == row.id && d.kind == SdKind::Ssd);
            if !ok {
                return Err(ApiError::not_found("secure element"));
            }
            (p.actor(), Some(p.id))
        }
    };
    let now = now_ms();
    let sid = match &req.session_id {
        Some(s) => s.trim().parse::<SeramSessionId>().map_err(|_| ApiError::invalid("sessionId: this Remote Agent's session ids are UUIDs"))?,
        None => SeramSessionId::new(),
    };
    if let Some(existing) = state.store.seram_sessions().get(sid).await? {
        if existing.se_id == row.id && matches!(existing.state, SeramSessionState::Created | SeramSessionState::Active) {
            return Ok((StatusCode::CREATED, axum::Json(serde_json::json!({"sessionId": sid})) ).into_response());
        }
        return Err(ApiError::conflict("seram.session_exists", "a session with this sessionId exists (for another SE, or ended)"));
    }
    let doc = SessionDoc { provisioned: true, ..Default::default() };
    let s = SeramSession {
        id: sid,
        se_id: row.id.clone(),
        process_id: None,
        state: SeramSessionState::Created,
        order: Some(serde_json::to_value(&doc).map_err(|e| ApiError::internal("engine.internal", e.to_string()))?),
        order_seq: 0,
        last_report_hash: None,
        last_activity: now,
        created_at: now,
        version: 0,
    };
    state.store.seram_sessions().create(&s).await?;
    state
        .store
        .audit_log()
        .append(&crate::store::log::NewAuditEntry {
            actor,
            provider_id: provider,
            action: "create".into(),
            object_type: "seram_session".into(),
            object_id: sid.to_string(),
            detail: Some(serde_json::json!({"seId": row.id.as_str()})),
        })
        .await?;
    Ok((StatusCode::CREATED, axum::Json(serde_json::json!({"sessionId": sid}))).into_response())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn session(seq: i64, last: Option<&str>) -> SeramSession {
        SeramSession {
            id: SeramSessionId::new(),
            se_id: SeId::new("CIN-1").unwrap(),
            process_id: None,
            state: SeramSessionState::Active,
            order: None,
            order_seq: seq,
            last_report_hash: last.map(str::to_string),
            last_activity: 0,
            created_at: 0,
            version: 0,
        }
    }

    fn pending() -> Pending {
        Pending { process_id: ProcessId::new(), process_version: 1, batch: Default::default(), from: 0, to: 0, answers: vec![] }
    }

    #[test]
    fn classification() {
        let polling = RemoteManagementReport::polling();
        let answered = RemoteManagementReport::processed(1, vec![RamResponse::se_ram([[0x90u8, 0x00]])]);
        let idle = SessionDoc::default();
        let busy = SessionDoc { pending: Some(pending()), ..Default::default() };
        // With the cookie.
        assert_eq!(classify(&answered, Some(3), &session(3, Some("h")), &busy, "x"), Class::Fresh);
        assert_eq!(classify(&answered, Some(2), &session(3, Some("h")), &busy, "h"), Class::Repeat);
        assert!(matches!(classify(&answered, Some(2), &session(3, Some("h")), &busy, "other"), Class::Stale(_)));
        assert!(matches!(classify(&answered, Some(1), &session(3, Some("h")), &busy, "h"), Class::Stale(_)));
        assert_eq!(classify(&polling, Some(3), &session(3, None), &busy, "p"), Class::Repeat, "a new agent run polls");
        assert_eq!(classify(&polling, Some(0), &session(0, None), &idle, "p"), Class::Fresh);
        // Without.
        assert_eq!(classify(&answered, None, &session(3, Some("h")), &busy, "h"), Class::Repeat);
        assert_eq!(classify(&answered, None, &session(3, Some("h")), &busy, "x"), Class::Fresh);
        assert_eq!(classify(&polling, None, &session(3, Some("p")), &busy, "p"), Class::Repeat);
        assert_eq!(classify(&polling, None, &session(3, Some("p")), &idle, "p"), Class::Fresh, "void orders are answered by identical polls");
        assert!(matches!(classify(&answered, None, &session(3, Some("h")), &idle, "x"), Class::Stale(_)));
        // After a handshake with an order outstanding: the new run's first poll reads the card
        // again; an answer to the outstanding order (from the run that got it) still applies.
        let rerun = SessionDoc { pending: Some(pending()), new_run: true, ..Default::default() };
        assert_eq!(classify(&polling, Some(3), &session(3, Some("h")), &rerun, "p"), Class::NewRun);
        assert_eq!(classify(&polling, None, &session(3, Some("h")), &rerun, "p"), Class::NewRun);
        assert_eq!(classify(&answered, Some(3), &session(3, Some("h")), &rerun, "x"), Class::Fresh);
        assert_eq!(classify(&polling, Some(2), &session(3, Some("p")), &rerun, "p"), Class::Repeat, "the old run's lost poll");
    }

    #[test]
    fn report_answers() {
        let r = RemoteManagementReport::processed(1, vec![RamResponse::se_ram([vec![0x90u8, 0x00], vec![0x6A, 0x82]])]);
        assert_eq!(answers(&r).unwrap(), vec![vec![0x90, 0x00], vec![0x6A, 0x82]]);
        let two = RemoteManagementReport::processed(2, vec![RamResponse::se_ram([[0x90u8, 0x00]]), RamResponse::se_ram([[0x90u8, 0x00]])]);
        assert!(answers(&two).is_err());
    }
}
