//! The admin API (`/api/v1/admin/...`, admin bearer token): onboarding of service providers,
//! SE issuers (with master keys), secure elements (with their ISD key set) and of which
//! provider may use which SE (an SSD per provider, with its memory quota).
//!
//! Key values are accepted here on input only; they go straight into the key store and are
//! never returned, logged or stored in the database. Answers show key check values.

use super::auth::{Admin, issue_long_term};
use super::dto::*;
use super::error::{ApiError, ApiJson, ApiResult, parse_id};
use crate::app::AppState;
use crate::domain::*;
use crate::keys::KeyId;
use crate::store::StoreError;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use serde::{Deserialize, Serialize};
use tsm_gp::crypto::KeyAlg;
use utoipa::ToSchema;
use zeroize::Zeroizing;

/// A key value in hex: accepted on input only, wiped after use, never printed.
#[derive(Clone, ToSchema)]
#[schema(value_type = String, example = "404142434445464748494A4B4C4D4E4F")]
pub struct SecretHex(Zeroizing<String>);

impl std::fmt::Debug for SecretHex {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SecretHex(***)")
    }
}

impl<'de> Deserialize<'de> for SecretHex {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        Ok(SecretHex(Zeroizing::new(String::deserialize(d)?)))
    }
}

impl SecretHex {
    fn bytes(&self, what: &str) -> ApiResult<Zeroizing<Vec<u8>>> {
        tsm_gp::hex::decode(&self.0).map(Zeroizing::new).map_err(|_| ApiError::invalid(format!("{what}: not hex")))
    }
}

/// A key set given to the admin API.
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(tag = "kind", rename_all = "camelCase", deny_unknown_fields)]
pub enum KeysetInput {
    /// The key values themselves (imported into the key store).
    #[serde(rename_all = "camelCase")]
    Imported {
        /// Key version number.
        kvn: u8,
        /// `des3-2k`, `des3-3k`, `aes128`, `aes192`, `aes256` or `sm4`.
        alg: String,
        enc: SecretHex,
        mac: SecretHex,
        dek: SecretHex,
    },
    /// Diversified from the issuer's master keys with the card's KDD (SE key sets only).
    #[serde(rename_all = "camelCase")]
    Diversified {
        /// Key version number on the card (default: the master key set's).
        #[serde(default)]
        kvn: Option<u8>,
    },
}

fn alg(s: &str) -> ApiResult<KeyAlg> {
    parse_key_alg(s).map_err(|_| ApiError::invalid(format!("alg {s:?}: expected des3-2k, des3-3k, aes128, aes192, aes256 or sm4")))
}

#[allow(clippy::too_many_arguments)]
/// Imports ENC/MAC/DEK under `prefix/{enc,mac,dek}` and returns the stored key set (not yet
/// in the database). On failure the keys imported so far are removed.
async fn import_keys(state: &AppState, prefix: String, kvn: u8, alg_name: &str, enc: &SecretHex, mac: &SecretHex, dek: &SecretHex, id: KeysetId) -> ApiResult<Keyset> {
    let alg = alg(alg_name)?;
    let values = [("enc", enc.bytes("enc")?), ("mac", mac.bytes("mac")?), ("dek", dek.bytes("dek")?)];
    for (name, v) in &values {
        if v.len() != alg.key_len() {
            return Err(ApiError::invalid(format!("{name}: a {alg_name} key has {} bytes, got {}", alg.key_len(), v.len())));
        }
    }
    let ids: Vec<KeyId> = ["enc", "mac", "dek"].iter().map(|n| KeyId::new(format!("{prefix}/{n}"))).collect::<Result<_, _>>()?;
    let keys = state.keys.clone();
    let ids2 = ids.clone();
    let values: Vec<Zeroizing<Vec<u8>>> = values.into_iter().map(|(_, v)| v).collect();
    tokio::task::spawn_blocking(move || {
        for (i, id) in ids2.iter().enumerate() {
            if let Err(e) = keys.import(id, alg, &values[i]) {
                for done in &ids2[..i] {
                    let _ = keys.delete(done);
                }
                return Err(e);
            }
        }
        Ok(())
    })
    .await
    .map_err(|e| ApiError::internal("internal.task", e.to_string()))??;
    let [enc, mac, dek]: [KeyId; 3] = ids.try_into().expect("three ids");
    Ok(Keyset { id, kvn, alg, source: KeysetSource::Stored { enc, mac, dek }, created_at: now_ms() })
}

async fn forget_keys(state: &AppState, k: &Keyset) {
    if let KeysetSource::Stored { enc, mac, dek } = &k.source {
        let keys = state.keys.clone();
        let ids = [enc.clone(), mac.clone(), dek.clone()];
        let _ = tokio::task::spawn_blocking(move || ids.iter().for_each(|i| drop(keys.delete(i)))).await;
    }
}

/// The key set as answers show it: KCVs, never values.
pub async fn keyset_view(state: &AppState, k: &Keyset) -> ApiResult<KeysetView> {
    let (kcvs, master, method) = match &k.source {
        KeysetSource::Stored { enc, mac, dek } => {
            let keys = state.keys.clone();
            let ids = [enc.clone(), mac.clone(), dek.clone()];
            let infos = tokio::task::spawn_blocking(move || ids.iter().map(|i| keys.info(i)).collect::<Result<Vec<_>, _>>())
                .await
                .map_err(|e| ApiError::internal("internal.task", e.to_string()))??;
            let kcv = |i: usize| infos[i].map(|x| tsm_gp::hex::encode(&x.kcv)).unwrap_or_default();
            (Some(Kcvs { enc: kcv(0), mac: kcv(1), dek: kcv(2) }), None, None)
        }
        KeysetSource::Diversified { master_keyset_id, method } => (None, Some(master_keyset_id.0), Some(diversification_str(*method).to_string())),
    };
    Ok(KeysetView { id: k.id.0, kvn: k.kvn, alg: key_alg_str(k.alg).into(), kind: k.source.kind().as_str().into(), kcvs, master_keyset_id: master, diversification: method })
}

/// The view of the key set `id` names, if any and stored.
async fn keyset_view_of(state: &AppState, id: Option<KeysetId>) -> ApiResult<Option<KeysetView>> {
    match id {
        Some(k) => match state.store.keysets().get(k).await? {
            Some(k) => Ok(Some(keyset_view(state, &k).await?)),
            None => Ok(None),
        },
        None => Ok(None),
    }
}

/// Stores `keyset` (imported keys already in the key store), then what `rows` writes. If a
/// write fails, the imported key values are removed from the key store again (onboarding writes
/// are not one transaction).
async fn store_with_keyset(state: &AppState, keyset: Option<&Keyset>, rows: impl Future<Output = Result<(), StoreError>>) -> ApiResult<()> {
    let stored = async {
        if let Some(k) = keyset {
            state.store.keysets().create(k).await?;
        }
        rows.await
    }
    .await;
    if let Err(e) = stored {
        if let Some(k) = keyset {
            forget_keys(state, k).await;
        }
        return Err(e.into());
    }
    Ok(())
}

// ---- service providers --------------------------------------------------------------------

#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct NewServiceProvider {
    /// Unique name (1-255 characters).
    pub name: String,
    /// Where process results are posted (https://...).
    #[serde(default)]
    pub callback_url: Option<String>,
}

#[derive(Debug, Clone, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct CreatedServiceProvider {
    pub service_provider: ServiceProviderView,
    /// The provider's long-term token: shown this once, only its hash is kept.
    pub long_term_token: String,
}

pub(crate) fn check_name(name: &str, what: &str) -> ApiResult<()> {
    if name.trim().is_empty() || name.len() > 255 {
        return Err(ApiError::invalid(format!("{what}: 1 to 255 characters")));
    }
    Ok(())
}

pub(crate) fn check_callback_url(state: &AppState, url: &Option<String>) -> ApiResult<()> {
    if let Some(u) = url {
        let ok = u.starts_with("https://") || (state.api.config.allow_http_callbacks && u.starts_with("http://"));
        if !ok || u.len() > 2048 || u.parse::<axum::http::Uri>().is_err() {
            let schemes = if state.api.config.allow_http_callbacks { "https:// or http://" } else { "https://" };
            return Err(ApiError::invalid(format!("callbackUrl: an absolute {schemes} URL of at most 2048 characters")));
        }
    }
    Ok(())
}

/// Onboard a service provider; answers its long-term token once.
#[utoipa::path(post, path = "/api/v1/admin/service-providers", tag = "admin", security(("adminToken" = [])),
    request_body = NewServiceProvider,
    responses((status = 201, body = CreatedServiceProvider), (status = 409, description = "`sp.conflict`: the name is taken", body = super::error::ErrorBody)))]
pub async fn create_service_provider(admin: Admin, State(state): State<AppState>, ApiJson(req): ApiJson<NewServiceProvider>) -> ApiResult<(StatusCode, ApiJson<CreatedServiceProvider>)> {
    check_name(&req.name, "name")?;
    check_callback_url(&state, &req.callback_url)?;
    let now = now_ms();
    let p = ServiceProvider { id: ProviderId::new(), name: req.name, callback_url: req.callback_url, created_at: now, updated_at: now };
    state.store.providers().create(&p).await?;
    let token = issue_long_term(&state, p.id).await?;
    state.store.audit_log().append(&admin.audit("create", "service_provider", p.id, Some(p.id), Some(serde_json::json!({"name": p.name})))).await?;
    Ok((StatusCode::CREATED, ApiJson(CreatedServiceProvider { service_provider: ServiceProviderView::from(&p), long_term_token: token })))
}

/// List the service providers.
#[utoipa::path(get, path = "/api/v1/admin/service-providers", tag = "admin", security(("adminToken" = [])),
    responses((status = 200, body = [ServiceProviderView])))]
pub async fn list_service_providers(_: Admin, State(state): State<AppState>) -> ApiResult<ApiJson<Vec<ServiceProviderView>>> {
    Ok(ApiJson(state.store.providers().list().await?.iter().map(ServiceProviderView::from).collect()))
}

#[derive(Debug, Clone, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct LongTermToken {
    /// Shown this once.
    pub long_term_token: String,
}

/// Issue another long-term token for a provider (rotation: the old ones stay valid).
#[utoipa::path(post, path = "/api/v1/admin/service-providers/{spId}/tokens", tag = "admin", security(("adminToken" = [])),
    params(("spId" = String, Path)),
    responses((status = 201, body = LongTermToken), (status = 404, body = super::error::ErrorBody)))]
pub async fn create_long_term_token(admin: Admin, State(state): State<AppState>, Path(sp): Path<String>) -> ApiResult<(StatusCode, ApiJson<LongTermToken>)> {
    let id: ProviderId = parse_id(&sp, "service provider")?;
    state.store.providers().get(id).await?.ok_or_else(|| ApiError::not_found("service provider"))?;
    let token = issue_long_term(&state, id).await?;
    state.store.audit_log().append(&admin.audit("create_token", "service_provider", id, Some(id), None)).await?;
    Ok((StatusCode::CREATED, ApiJson(LongTermToken { long_term_token: token })))
}

// ---- issuers ------------------------------------------------------------------------------

#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct NewIssuer {
    pub name: String,
    /// How card keys derive from the master keys: `none`, `emv-cps11`, `visa2`, `kdf3`.
    #[serde(default = "none_str")]
    pub diversification: String,
    /// Master keys (imported into the key store; never returned).
    #[serde(default)]
    pub master_keys: Option<KeysetInput>,
}

fn none_str() -> String {
    "none".into()
}

#[derive(Debug, Clone, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct IssuerView {
    pub id: uuid::Uuid,
    pub name: String,
    pub diversification: String,
    pub master_keyset: Option<KeysetView>,
    pub created_at: i64,
}

async fn issuer_view(state: &AppState, i: &SeIssuer) -> ApiResult<IssuerView> {
    let master_keyset = keyset_view_of(state, i.master_keyset_id).await?;
    Ok(IssuerView { id: i.id.0, name: i.name.clone(), diversification: diversification_str(i.diversification).into(), master_keyset, created_at: i.created_at })
}

/// Onboard an SE issuer, with its master keys (or none).
#[utoipa::path(post, path = "/api/v1/admin/issuers", tag = "admin", security(("adminToken" = [])),
    request_body = NewIssuer, responses((status = 201, body = IssuerView), (status = 400, body = super::error::ErrorBody)))]
pub async fn create_issuer(admin: Admin, State(state): State<AppState>, ApiJson(req): ApiJson<NewIssuer>) -> ApiResult<(StatusCode, ApiJson<IssuerView>)> {
    check_name(&req.name, "name")?;
    let diversification = parse_diversification(&req.diversification)?;
    let id = IssuerId::new();
    let keyset = match &req.master_keys {
        None => None,
        Some(KeysetInput::Diversified { .. }) => return Err(ApiError::invalid("masterKeys: an issuer's master keys are imported (kind \"imported\")")),
        Some(KeysetInput::Imported { kvn, alg, enc, mac, dek }) => Some(import_keys(&state, format!("issuer/{id}/master/{kvn}"), *kvn, alg, enc, mac, dek, KeysetId::new()).await?),
    };
    let issuer = SeIssuer { id, name: req.name, master_keyset_id: keyset.as_ref().map(|k| k.id), diversification, created_at: now_ms() };
    store_with_keyset(&state, keyset.as_ref(), state.store.issuers().create(&issuer)).await?;
    state.store.audit_log().append(&admin.audit("create", "issuer", id, None, Some(serde_json::json!({"name": issuer.name, "masterKeys": keyset.is_some()})))).await?;
    Ok((StatusCode::CREATED, ApiJson(issuer_view(&state, &issuer).await?)))
}

/// List the SE issuers.
#[utoipa::path(get, path = "/api/v1/admin/issuers", tag = "admin", security(("adminToken" = [])), responses((status = 200, body = [IssuerView])))]
pub async fn list_issuers(_: Admin, State(state): State<AppState>) -> ApiResult<ApiJson<Vec<IssuerView>>> {
    let mut out = Vec::new();
    for i in state.store.issuers().list().await? {
        out.push(issuer_view(&state, &i).await?);
    }
    Ok(ApiJson(out))
}

// ---- secure elements ----------------------------------------------------------------------

#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct NewSecureElement {
    /// The SE's id as the phone reports it in SERAM (`seId`, CIN/CPLC-derived): 1-64 of
    /// `A-Z a-z 0-9 . _ : -`.
    pub se_id: String,
    /// Card Production Life Cycle data (GET DATA 9F7F, 42 bytes, hex), if known.
    #[serde(default)]
    pub cplc: Option<String>,
    /// ICCID of a UICC (digits; unique).
    #[serde(default)]
    pub iccid: Option<String>,
    /// `uicc`, `microsd` or `ese`.
    pub carrier: String,
    /// Card profile: one of the built-in profiles `uicc`, `microsd`, `ese` (`tsm_gp::profile`), of the same carrier.
    pub profile: String,
    #[serde(default)]
    pub issuer_id: Option<uuid::Uuid>,
    /// AID of the issuer security domain.
    #[schema(example = "A000000151000000")]
    pub isd_aid: String,
    /// The ISD key set: key values, or diversified from the issuer's master keys.
    #[serde(default)]
    pub isd_keys: Option<KeysetInput>,
    /// Secure channel protocol (2 or 3) and its `i` parameter, if known.
    #[serde(default)]
    pub scp: Option<u8>,
    #[serde(default)]
    pub scp_i: Option<u8>,
}

#[derive(Debug, Clone, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct SecureElementView {
    pub se_id: String,
    pub iccid: Option<String>,
    pub carrier: String,
    pub profile: String,
    pub issuer_id: Option<uuid::Uuid>,
    pub isd_aid: String,
    pub isd_keyset: Option<KeysetView>,
    pub scp: Option<u8>,
    pub scp_i: Option<u8>,
    pub sequence_counter: Option<u32>,
    pub security_domains: Vec<SecurityDomainView>,
    pub created_at: i64,
}

async fn se_view(state: &AppState, e: &SecureElement) -> ApiResult<SecureElementView> {
    let isd_keyset = keyset_view_of(state, e.isd_keyset_id).await?;
    let mut sds = Vec::new();
    for d in state.store.security_domains().list_for_se_unscoped(&e.id).await? {
        sds.push(sd_view(state, &d).await?);
    }
    Ok(SecureElementView {
        se_id: e.id.to_string(),
        iccid: e.iccid.clone(),
        carrier: e.carrier.as_str().into(),
        profile: e.profile.clone(),
        issuer_id: e.issuer_id.map(|i| i.0),
        isd_aid: e.isd_aid.to_hex(),
        isd_keyset,
        scp: e.scp,
        scp_i: e.scp_i,
        sequence_counter: e.sequence_counter,
        security_domains: sds,
        created_at: e.created_at,
    })
}

pub async fn sd_view(state: &AppState, d: &SecurityDomain) -> ApiResult<SecurityDomainView> {
    let keyset = keyset_view_of(state, d.keyset_id).await?;
    Ok(SecurityDomainView {
        id: d.id.0,
        se_id: d.se_id.to_string(),
        aid: d.aid.to_hex(),
        kind: d.kind.as_str().into(),
        provider_id: d.provider_id.map(|p| p.0),
        keyset,
        memory_quota: d.memory_quota,
        life_cycle: d.life_cycle,
    })
}

async fn keyset_for(state: &AppState, input: &KeysetInput, issuer: Option<&SeIssuer>, key_prefix: String) -> ApiResult<Keyset> {
    match input {
        KeysetInput::Imported { kvn, alg, enc, mac, dek } => {
            let id = KeysetId::new();
            import_keys(state, format!("{key_prefix}/{id}"), *kvn, alg, enc, mac, dek, id).await
        }
        KeysetInput::Diversified { kvn } => {
            let issuer = issuer.ok_or_else(|| ApiError::unprocessable("admin.no_master_keys", "diversified keys need an issuer (issuerId) with master keys"))?;
            let master_id = issuer.master_keyset_id.ok_or_else(|| ApiError::unprocessable("admin.no_master_keys", format!("issuer {} has no master keys", issuer.id)))?;
            let master = state.store.keysets().get(master_id).await?.ok_or_else(|| ApiError::internal("internal.store", "issuer master key set missing"))?;
            Ok(Keyset {
                id: KeysetId::new(),
                kvn: kvn.unwrap_or(master.kvn),
                alg: master.alg,
                source: KeysetSource::Diversified { master_keyset_id: master_id, method: issuer.diversification },
                created_at: now_ms(),
            })
        }
    }
}

/// Register a secure element with its ISD (and the ISD's key set).
#[utoipa::path(post, path = "/api/v1/admin/secure-elements", tag = "admin", security(("adminToken" = [])),
    request_body = NewSecureElement,
    responses((status = 201, body = SecureElementView), (status = 409, description = "`sp.conflict`: the seId or ICCID exists", body = super::error::ErrorBody)))]
pub async fn create_secure_element(admin: Admin, State(state): State<AppState>, ApiJson(req): ApiJson<NewSecureElement>) -> ApiResult<(StatusCode, ApiJson<SecureElementView>)> {
    let se_id = SeId::new(req.se_id.clone())?;
    let carrier: Carrier = req.carrier.parse()?;
    let isd_aid: Aid = req.isd_aid.parse()?;
    check_name(&req.profile, "profile")?;
    // The engine plans with the built-in profile of this name (engine/inputs.rs); refusing an
    // unknown one here beats every later process on the SE failing with engine.unknown_profile.
    let profile = tsm_gp::profile::CardProfile::builtin(&req.profile).ok_or_else(|| {
        ApiError::invalid(format!("profile: {:?} is not a card profile the engine knows ({})", req.profile, tsm_gp::profile::CardProfile::BUILTIN.join(", ")))
    })?;
    if profile.carrier.as_str() != carrier.as_str() {
        return Err(ApiError::invalid(format!("profile: {:?} is a {} profile, the carrier is {}", req.profile, profile.carrier.as_str(), carrier.as_str())));
    }
    if let Some(c) = &req.cplc {
        let b = tsm_gp::hex::decode(c).map_err(|_| ApiError::invalid("cplc: not hex"))?;
        if b.len() != 42 {
            return Err(ApiError::invalid(format!("cplc: {} bytes, CPLC data has 42", b.len())));
        }
    }
    if let Some(i) = &req.iccid
        && !(i.len() >= 18 && i.len() <= 22 && i.bytes().all(|b| b.is_ascii_hexdigit()))
    {
        return Err(ApiError::invalid("iccid: 18 to 22 digits"));
    }
    if let Some(s) = req.scp
        && s != 2
        && s != 3
    {
        return Err(ApiError::invalid("scp: 2 or 3"));
    }
    if state.store.secure_elements().get(&se_id).await?.is_some() {
        return Err(ApiError::conflict("sp.conflict", format!("secure element {se_id} exists")));
    }
    let issuer = match req.issuer_id {
        Some(i) => Some(state.store.issuers().get(IssuerId(i)).await?.ok_or_else(|| ApiError::not_found("issuer"))?),
        None => None,
    };
    let keyset = match &req.isd_keys {
        Some(k) => Some(keyset_for(&state, k, issuer.as_ref(), "keyset".into()).await?),
        None => None,
    };
    let now = now_ms();
    let se = SecureElement {
        id: se_id.clone(),
        iccid: req.iccid.clone(),
        carrier,
        profile: req.profile.clone(),
        issuer_id: issuer.as_ref().map(|i| i.id),
        isd_aid: isd_aid.clone(),
        isd_keyset_id: keyset.as_ref().map(|k| k.id),
        scp: req.scp,
        scp_i: req.scp_i,
        sequence_counter: None,
        sequence_counter_current: false,
        kdd: None,
        registry: None,
        registry_read_at: None,
        created_at: now,
        updated_at: now,
    };
    let isd = SecurityDomain {
        id: SecurityDomainId::new(),
        se_id: se_id.clone(),
        aid: isd_aid,
        kind: SdKind::Isd,
        provider_id: None,
        keyset_id: se.isd_keyset_id,
        memory_quota: None,
        life_cycle: None,
        created_at: now,
        updated_at: now,
    };
    let rows = async {
        state.store.secure_elements().create(&se).await?;
        state.store.security_domains().create(&isd).await
    };
    store_with_keyset(&state, keyset.as_ref(), rows).await?;
    let detail = serde_json::json!({"carrier": se.carrier.as_str(), "profile": se.profile, "iccid": se.iccid, "cplc": req.cplc, "isdKeys": keyset.as_ref().map(|k| k.source.kind().as_str())});
    state.store.audit_log().append(&admin.audit("create", "secure_element", &se_id, None, Some(detail))).await?;
    Ok((StatusCode::CREATED, ApiJson(se_view(&state, &se).await?)))
}

/// A secure element, its key set KCVs and its security domains.
#[utoipa::path(get, path = "/api/v1/admin/secure-elements/{seId}", tag = "admin", security(("adminToken" = [])),
    params(("seId" = String, Path)), responses((status = 200, body = SecureElementView), (status = 404, body = super::error::ErrorBody)))]
pub async fn get_secure_element(_: Admin, State(state): State<AppState>, Path(se): Path<String>) -> ApiResult<ApiJson<SecureElementView>> {
    let id: SeId = parse_id(&se, "secure element")?;
    let se = state.store.secure_elements().get(&id).await?.ok_or_else(|| ApiError::not_found("secure element"))?;
    Ok(ApiJson(se_view(&state, &se).await?))
}

#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct NewSecurityDomain {
    /// The provider that may use this SE through this SSD.
    pub provider_id: uuid::Uuid,
    /// AID of the provider's SSD on this SE.
    #[schema(example = "A000000151535041")]
    pub aid: String,
    /// Non-volatile memory the provider's services may take on this SE, in bytes.
    #[serde(default)]
    pub memory_quota: Option<u64>,
    /// The SSD's key set (imported values), if the TSM is to manage it with given keys.
    #[serde(default)]
    pub keys: Option<KeysetInput>,
}

/// Let a provider use a secure element: its SSD there, with a memory quota.
#[utoipa::path(post, path = "/api/v1/admin/secure-elements/{seId}/security-domains", tag = "admin", security(("adminToken" = [])),
    params(("seId" = String, Path)), request_body = NewSecurityDomain,
    responses((status = 201, body = SecurityDomainView), (status = 404, body = super::error::ErrorBody), (status = 409, body = super::error::ErrorBody)))]
pub async fn create_security_domain(
    admin: Admin,
    State(state): State<AppState>,
    Path(se): Path<String>,
    ApiJson(req): ApiJson<NewSecurityDomain>,
) -> ApiResult<(StatusCode, ApiJson<SecurityDomainView>)> {
    let se_id: SeId = parse_id(&se, "secure element")?;
    let se = state.store.secure_elements().get(&se_id).await?.ok_or_else(|| ApiError::not_found("secure element"))?;
    let provider = ProviderId(req.provider_id);
    state.store.providers().get(provider).await?.ok_or_else(|| ApiError::not_found("service provider"))?;
    let aid: Aid = req.aid.parse()?;
    if state.store.security_domains().list(provider).await?.iter().any(|d| d.se_id == se_id) {
        return Err(ApiError::conflict("sp.conflict", format!("the provider has an SSD on {se_id} already")));
    }
    let issuer = match se.issuer_id {
        Some(i) => state.store.issuers().get(i).await?,
        None => None,
    };
    let keyset = match &req.keys {
        Some(k) => Some(keyset_for(&state, k, issuer.as_ref(), "keyset".into()).await?),
        None => None,
    };
    let now = now_ms();
    let sd = SecurityDomain {
        id: SecurityDomainId::new(),
        se_id: se_id.clone(),
        aid,
        kind: SdKind::Ssd,
        provider_id: Some(provider),
        keyset_id: keyset.as_ref().map(|k| k.id),
        memory_quota: req.memory_quota,
        life_cycle: None,
        created_at: now,
        updated_at: now,
    };
    store_with_keyset(&state, keyset.as_ref(), state.store.security_domains().create(&sd)).await?;
    let detail = serde_json::json!({"seId": se_id.as_str(), "aid": sd.aid.to_hex(), "memoryQuota": sd.memory_quota});
    state.store.audit_log().append(&admin.audit("create", "security_domain", sd.id, Some(provider), Some(detail))).await?;
    Ok((StatusCode::CREATED, ApiJson(sd_view(&state, &sd).await?)))
}

/// A process of any provider, with its steps: what an operator reads when a provider or a phone
/// reports a failed deployment (the provider's own view is `GET /api/v1/processes/{processId}`).
#[utoipa::path(get, path = "/api/v1/admin/processes/{processId}", tag = "admin", security(("adminToken" = [])),
    params(("processId" = String, Path)), responses((status = 200, body = ProcessView), (status = 404, body = super::error::ErrorBody)))]
pub async fn get_process(_: Admin, State(state): State<AppState>, Path(id): Path<String>) -> ApiResult<ApiJson<ProcessView>> {
    let pr = any_process(&state, &id).await?;
    let steps = state.store.processes().steps(pr.provider_id, pr.id).await?;
    Ok(ApiJson(ProcessView::new(&pr, Some(&steps))))
}

/// The APDU log of a process of any provider, in wire form (for `tsm trace decode`).
#[utoipa::path(get, path = "/api/v1/admin/processes/{processId}/apdus", tag = "admin", security(("adminToken" = [])),
    params(("processId" = String, Path)), responses((status = 200, body = [ApduView]), (status = 404, body = super::error::ErrorBody)))]
pub async fn get_process_apdus(_: Admin, State(state): State<AppState>, Path(id): Path<String>) -> ApiResult<ApiJson<Vec<ApduView>>> {
    let pr = any_process(&state, &id).await?;
    Ok(ApiJson(state.store.apdu_log().list(pr.provider_id, pr.id).await?.iter().map(ApduView::from).collect()))
}

async fn any_process(state: &AppState, id: &str) -> ApiResult<Process> {
    let id: ProcessId = parse_id(id, "process")?;
    state.store.processes().get_unscoped(id).await?.ok_or_else(|| ApiError::not_found("process"))
}

/// The whole audit log, every provider's records and the operator's, oldest first.
#[utoipa::path(get, path = "/api/v1/admin/audit-log", tag = "admin", security(("adminToken" = [])), params(super::sp::AuditQuery), responses((status = 200, body = [AuditView])))]
pub async fn list_audit(_: Admin, State(state): State<AppState>, q: Result<axum::extract::Query<super::sp::AuditQuery>, axum::extract::rejection::QueryRejection>) -> ApiResult<ApiJson<Vec<AuditView>>> {
    let axum::extract::Query(q) = q.map_err(|e| ApiError::invalid(e.body_text()))?;
    let rows = state.store.audit_log().list_all(q.after.unwrap_or(0), q.limit.unwrap_or(100).min(1000)).await?;
    Ok(ApiJson(rows.iter().map(AuditView::from).collect()))
}
