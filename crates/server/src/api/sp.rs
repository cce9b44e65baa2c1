//! The provider's account and configuration (BSI TR-03165 §4.1.6): services, versions,
//! flavors, application configurations, personalization scripts, executable load files (CAP
//! upload), the provider's security domains and its audit log.
//!
//! Every query is scoped by the authenticated provider: another provider's ids answer
//! `404 sp.not_found` and change nothing.

use super::auth::Provider;
use super::dto::*;
use super::error::{ApiError, ApiJson, ApiResult, body_rejection, parse_id};
use crate::app::AppState;
use crate::domain::*;
use axum::body::Body;
use axum::extract::{FromRequest, Path, Query, Request, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use tsm_gp::cap::{CapFile, HashAlgorithm};
use utoipa::{IntoParams, ToSchema};

type Created<T> = ApiResult<(StatusCode, ApiJson<T>)>;

fn created<T>(v: T) -> Created<T> {
    Ok((StatusCode::CREATED, ApiJson(v)))
}

// ---- account -------------------------------------------------------------------------------

/// The authenticated provider's account (BSI `getAccountInformation`).
#[utoipa::path(get, path = "/api/v1/serviceproviders/current", tag = "serviceproviders", security(("bearer" = [])),
    responses((status = 200, body = ServiceProviderView), (status = 401, body = super::error::ErrorBody)))]
pub async fn get_current(p: Provider, State(state): State<AppState>) -> ApiResult<ApiJson<ServiceProviderView>> {
    let sp = state.store.providers().get(p.id).await?.ok_or_else(|| ApiError::not_found("service provider"))?;
    Ok(ApiJson(ServiceProviderView::from(&sp)))
}

#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct AccountUpdate {
    /// Where process results are posted; `null` stops callbacks.
    pub callback_url: Option<String>,
}

/// Set the callback URL of the authenticated provider.
#[utoipa::path(put, path = "/api/v1/serviceproviders/current", tag = "serviceproviders", security(("bearer" = [])),
    request_body = AccountUpdate, responses((status = 200, body = ServiceProviderView), (status = 400, body = super::error::ErrorBody)))]
pub async fn put_current(p: Provider, State(state): State<AppState>, ApiJson(req): ApiJson<AccountUpdate>) -> ApiResult<ApiJson<ServiceProviderView>> {
    super::admin::check_callback_url(&state, &req.callback_url)?;
    let mut sp = state.store.providers().get(p.id).await?.ok_or_else(|| ApiError::not_found("service provider"))?;
    sp.callback_url = req.callback_url;
    state.store.providers().update(&sp).await?;
    state.store.audit_log().append(&p.audit("update", "service_provider", p.id, Some(serde_json::json!({"callbackUrl": sp.callback_url})))).await?;
    Ok(ApiJson(ServiceProviderView::from(&sp)))
}

// ---- services ------------------------------------------------------------------------------

#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ServiceInput {
    /// Unique among the provider's services.
    pub name: String,
    #[serde(default)]
    pub description: Option<String>,
}

pub(crate) async fn service(state: &AppState, p: &Provider, id: &str) -> ApiResult<Service> {
    let id: ServiceId = parse_id(id, "service")?;
    state.store.services().get(p.id, id).await?.ok_or_else(|| ApiError::not_found("service"))
}

/// Create a service.
#[utoipa::path(post, path = "/api/v1/services", tag = "services", security(("bearer" = [])),
    request_body = ServiceInput, responses((status = 201, body = ServiceView), (status = 409, description = "`sp.conflict`", body = super::error::ErrorBody)))]
pub async fn create_service(p: Provider, State(state): State<AppState>, ApiJson(req): ApiJson<ServiceInput>) -> Created<ServiceView> {
    super::admin::check_name(&req.name, "name")?;
    let s = Service { id: ServiceId::new(), provider_id: p.id, name: req.name, description: req.description, created_at: now_ms() };
    state.store.services().create(&s).await?;
    state.store.audit_log().append(&p.audit("create", "service", s.id, Some(serde_json::json!({"name": s.name})))).await?;
    created(ServiceView::from(&s))
}

/// List the provider's services.
#[utoipa::path(get, path = "/api/v1/services", tag = "services", security(("bearer" = [])), responses((status = 200, body = [ServiceView])))]
pub async fn list_services(p: Provider, State(state): State<AppState>) -> ApiResult<ApiJson<Vec<ServiceView>>> {
    Ok(ApiJson(state.store.services().list(p.id).await?.iter().map(ServiceView::from).collect()))
}

/// A service.
#[utoipa::path(get, path = "/api/v1/services/{serviceId}", tag = "services", security(("bearer" = [])),
    params(("serviceId" = String, Path)), responses((status = 200, body = ServiceView), (status = 404, body = super::error::ErrorBody)))]
pub async fn get_service(p: Provider, State(state): State<AppState>, Path(id): Path<String>) -> ApiResult<ApiJson<ServiceView>> {
    Ok(ApiJson(ServiceView::from(&service(&state, &p, &id).await?)))
}

/// Rename or describe a service.
#[utoipa::path(put, path = "/api/v1/services/{serviceId}", tag = "services", security(("bearer" = [])),
    params(("serviceId" = String, Path)), request_body = ServiceInput, responses((status = 200, body = ServiceView), (status = 404, body = super::error::ErrorBody)))]
pub async fn put_service(p: Provider, State(state): State<AppState>, Path(id): Path<String>, ApiJson(req): ApiJson<ServiceInput>) -> ApiResult<ApiJson<ServiceView>> {
    super::admin::check_name(&req.name, "name")?;
    let mut s = service(&state, &p, &id).await?;
    s.name = req.name;
    s.description = req.description;
    if !state.store.services().update(&s).await? {
        return Err(ApiError::not_found("service"));
    }
    state.store.audit_log().append(&p.audit("update", "service", s.id, None)).await?;
    Ok(ApiJson(ServiceView::from(&s)))
}

/// Delete a service (only without versions: `409 sp.in_use`).
#[utoipa::path(delete, path = "/api/v1/services/{serviceId}", tag = "services", security(("bearer" = [])),
    params(("serviceId" = String, Path)), responses((status = 204), (status = 404, body = super::error::ErrorBody), (status = 409, body = super::error::ErrorBody)))]
pub async fn delete_service(p: Provider, State(state): State<AppState>, Path(id): Path<String>) -> ApiResult<StatusCode> {
    let s = service(&state, &p, &id).await?;
    if !state.store.service_versions().list(p.id, s.id).await?.is_empty() {
        return Err(ApiError::conflict("sp.in_use", "the service has versions; delete them first"));
    }
    if !state.store.services().delete(p.id, s.id).await? {
        return Err(ApiError::not_found("service"));
    }
    state.store.audit_log().append(&p.audit("delete", "service", s.id, None)).await?;
    Ok(StatusCode::NO_CONTENT)
}

// ---- versions ------------------------------------------------------------------------------

#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct VersionInput {
    /// Version tag, unique within the service (e.g. `1.0.0`).
    pub tag: String,
    /// The executable load file this version deploys.
    pub elf_id: uuid::Uuid,
}

async fn version(state: &AppState, p: &Provider, s: &Service, tag: &str) -> ApiResult<ServiceVersion> {
    state.store.service_versions().list(p.id, s.id).await?.into_iter().find(|v| v.version == tag).ok_or_else(|| ApiError::not_found("version"))
}

/// Create a version of a service, bound to an executable load file.
#[utoipa::path(post, path = "/api/v1/services/{serviceId}/versions", tag = "services", security(("bearer" = [])),
    params(("serviceId" = String, Path)), request_body = VersionInput,
    responses((status = 201, body = VersionView), (status = 404, body = super::error::ErrorBody), (status = 409, body = super::error::ErrorBody)))]
pub async fn create_version(p: Provider, State(state): State<AppState>, Path(id): Path<String>, ApiJson(req): ApiJson<VersionInput>) -> Created<VersionView> {
    let s = service(&state, &p, &id).await?;
    if req.tag.is_empty() || req.tag.len() > 64 || !req.tag.bytes().all(|b| b.is_ascii_alphanumeric() || b".-_+".contains(&b)) {
        return Err(ApiError::invalid("tag: 1-64 characters of A-Z a-z 0-9 . - _ +"));
    }
    let elf = LoadFileId(req.elf_id);
    state.store.load_files().get(p.id, elf).await?.ok_or_else(|| ApiError::not_found("executable load file"))?;
    let v = ServiceVersion { id: ServiceVersionId::new(), provider_id: p.id, service_id: s.id, version: req.tag, load_file_id: elf, created_at: now_ms() };
    state.store.service_versions().create(&v).await.map_err(|e| match e {
        crate::store::StoreError::Reference { .. } => ApiError::not_found("executable load file"),
        e => e.into(),
    })?;
    state.store.audit_log().append(&p.audit("create", "service_version", v.id, Some(serde_json::json!({"serviceId": s.id, "tag": v.version, "elfId": elf})))).await?;
    created(VersionView::from(&v))
}

/// List the versions of a service.
#[utoipa::path(get, path = "/api/v1/services/{serviceId}/versions", tag = "services", security(("bearer" = [])),
    params(("serviceId" = String, Path)), responses((status = 200, body = [VersionView]), (status = 404, body = super::error::ErrorBody)))]
pub async fn list_versions(p: Provider, State(state): State<AppState>, Path(id): Path<String>) -> ApiResult<ApiJson<Vec<VersionView>>> {
    let s = service(&state, &p, &id).await?;
    Ok(ApiJson(state.store.service_versions().list(p.id, s.id).await?.iter().map(VersionView::from).collect()))
}

/// A version of a service, by tag.
#[utoipa::path(get, path = "/api/v1/services/{serviceId}/versions/{tag}", tag = "services", security(("bearer" = [])),
    params(("serviceId" = String, Path), ("tag" = String, Path)), responses((status = 200, body = VersionView), (status = 404, body = super::error::ErrorBody)))]
pub async fn get_version(p: Provider, State(state): State<AppState>, Path((id, tag)): Path<(String, String)>) -> ApiResult<ApiJson<VersionView>> {
    let s = service(&state, &p, &id).await?;
    Ok(ApiJson(VersionView::from(&version(&state, &p, &s, &tag).await?)))
}

/// Delete a version (only without flavors and instances: `409 sp.in_use`).
#[utoipa::path(delete, path = "/api/v1/services/{serviceId}/versions/{tag}", tag = "services", security(("bearer" = [])),
    params(("serviceId" = String, Path), ("tag" = String, Path)), responses((status = 204), (status = 404, body = super::error::ErrorBody), (status = 409, body = super::error::ErrorBody)))]
pub async fn delete_version(p: Provider, State(state): State<AppState>, Path((id, tag)): Path<(String, String)>) -> ApiResult<StatusCode> {
    let s = service(&state, &p, &id).await?;
    let v = version(&state, &p, &s, &tag).await?;
    if !state.store.flavors().list(p.id, v.id).await?.is_empty() {
        return Err(ApiError::conflict("sp.in_use", "the version has flavors; delete them first"));
    }
    if !state.store.service_versions().delete(p.id, v.id).await? {
        return Err(ApiError::not_found("version"));
    }
    state.store.audit_log().append(&p.audit("delete", "service_version", v.id, None)).await?;
    Ok(StatusCode::NO_CONTENT)
}

// ---- flavors -------------------------------------------------------------------------------

#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct FlavorInput {
    /// Unique within the version.
    pub name: String,
    /// Only SEs of this carrier (`uicc`, `microsd`, `ese`); absent: any.
    #[serde(default)]
    pub carrier: Option<String>,
    /// Only SEs of this card profile; absent: any.
    #[serde(default)]
    pub profile: Option<String>,
    /// Memory the flavor takes in the provider's SSD, in bytes.
    #[serde(default)]
    pub memory_quota: Option<u64>,
}

/// A flavor of the service `service` (any of its versions).
pub(crate) async fn flavor_of(state: &AppState, p: &Provider, s: &Service, id: &str) -> ApiResult<(Flavor, ServiceVersion)> {
    let id: FlavorId = parse_id(id, "flavor")?;
    let f = state.store.flavors().get(p.id, id).await?.ok_or_else(|| ApiError::not_found("flavor"))?;
    let v = state.store.service_versions().get(p.id, f.service_version_id).await?.ok_or_else(|| ApiError::not_found("flavor"))?;
    if v.service_id != s.id {
        return Err(ApiError::not_found("flavor"));
    }
    Ok((f, v))
}

/// Create a flavor of a version (per carrier / card profile).
#[utoipa::path(post, path = "/api/v1/services/{serviceId}/versions/{tag}/flavors", tag = "services", security(("bearer" = [])),
    params(("serviceId" = String, Path), ("tag" = String, Path)), request_body = FlavorInput,
    responses((status = 201, body = FlavorView), (status = 404, body = super::error::ErrorBody), (status = 409, body = super::error::ErrorBody)))]
pub async fn create_flavor(p: Provider, State(state): State<AppState>, Path((id, tag)): Path<(String, String)>, ApiJson(req): ApiJson<FlavorInput>) -> Created<FlavorView> {
    let s = service(&state, &p, &id).await?;
    let v = version(&state, &p, &s, &tag).await?;
    super::admin::check_name(&req.name, "name")?;
    let carrier = req.carrier.as_deref().map(str::parse::<Carrier>).transpose()?;
    if let Some(pr) = &req.profile {
        super::admin::check_name(pr, "profile")?;
    }
    let f = Flavor { id: FlavorId::new(), provider_id: p.id, service_version_id: v.id, name: req.name, carrier, profile: req.profile, memory_quota: req.memory_quota, created_at: now_ms() };
    state.store.flavors().create(&f).await?;
    state.store.audit_log().append(&p.audit("create", "flavor", f.id, Some(serde_json::json!({"versionId": v.id, "name": f.name})))).await?;
    created(FlavorView::new(&f, s.id))
}

/// List the flavors of a version.
#[utoipa::path(get, path = "/api/v1/services/{serviceId}/versions/{tag}/flavors", tag = "services", security(("bearer" = [])),
    params(("serviceId" = String, Path), ("tag" = String, Path)), responses((status = 200, body = [FlavorView]), (status = 404, body = super::error::ErrorBody)))]
pub async fn list_flavors(p: Provider, State(state): State<AppState>, Path((id, tag)): Path<(String, String)>) -> ApiResult<ApiJson<Vec<FlavorView>>> {
    let s = service(&state, &p, &id).await?;
    let v = version(&state, &p, &s, &tag).await?;
    Ok(ApiJson(state.store.flavors().list(p.id, v.id).await?.iter().map(|f| FlavorView::new(f, s.id)).collect()))
}

/// A flavor.
#[utoipa::path(get, path = "/api/v1/services/{serviceId}/flavors/{flavorId}", tag = "services", security(("bearer" = [])),
    params(("serviceId" = String, Path), ("flavorId" = String, Path)), responses((status = 200, body = FlavorView), (status = 404, body = super::error::ErrorBody)))]
pub async fn get_flavor(p: Provider, State(state): State<AppState>, Path((id, fid)): Path<(String, String)>) -> ApiResult<ApiJson<FlavorView>> {
    let s = service(&state, &p, &id).await?;
    let (f, _) = flavor_of(&state, &p, &s, &fid).await?;
    Ok(ApiJson(FlavorView::new(&f, s.id)))
}

/// Delete a flavor (only without application configs and instances: `409 sp.in_use`).
#[utoipa::path(delete, path = "/api/v1/services/{serviceId}/flavors/{flavorId}", tag = "services", security(("bearer" = [])),
    params(("serviceId" = String, Path), ("flavorId" = String, Path)), responses((status = 204), (status = 404, body = super::error::ErrorBody), (status = 409, body = super::error::ErrorBody)))]
pub async fn delete_flavor(p: Provider, State(state): State<AppState>, Path((id, fid)): Path<(String, String)>) -> ApiResult<StatusCode> {
    let s = service(&state, &p, &id).await?;
    let (f, _) = flavor_of(&state, &p, &s, &fid).await?;
    if !state.store.application_configs().list(p.id, f.id).await?.is_empty() {
        return Err(ApiError::conflict("sp.in_use", "the flavor has application configs; delete them first"));
    }
    if !state.store.flavors().delete(p.id, f.id).await? {
        return Err(ApiError::not_found("flavor"));
    }
    state.store.audit_log().append(&p.audit("delete", "flavor", f.id, None)).await?;
    Ok(StatusCode::NO_CONTENT)
}

// ---- application configs -------------------------------------------------------------------

#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ApplicationConfigInput {
    /// Order of installation within the flavor (default: after the last one).
    #[serde(default)]
    pub ordinal: Option<u32>,
    /// Executable module (applet class) AID in the flavor's ELF.
    pub module_aid: String,
    /// AID of the application instance to create (BSI `instanceAid`).
    pub instance_aid: String,
    /// Privileges, 1 or 3 bytes hex (GPCS 2.3 §11.1.2); default `00`.
    #[serde(default)]
    pub privileges: Option<String>,
    /// Application-specific install parameters: the value of tag `C9`, hex.
    #[serde(default)]
    pub application_specific_install_parameter: Option<String>,
    /// Further system-specific parameters inside tag `EF` (TLVs, hex), besides the quotas.
    #[serde(default)]
    pub system_specific_install_parameter: Option<String>,
    /// Non-volatile memory quota of the instance (`EF`/`C8`), bytes.
    #[serde(default)]
    pub nv_quota: Option<u32>,
    /// Volatile memory quota of the instance (`EF`/`C7`), bytes.
    #[serde(default)]
    pub volatile_quota: Option<u32>,
    /// INSTALL [for install and make selectable] (default) or [for install] only.
    #[serde(default = "yes")]
    pub make_selectable: bool,
}

fn yes() -> bool {
    true
}

fn hex_field(v: &Option<String>, what: &str) -> ApiResult<Vec<u8>> {
    match v {
        Some(s) => tsm_gp::hex::decode(s).map_err(|_| ApiError::invalid(format!("{what}: not hex"))),
        None => Ok(Vec::new()),
    }
}

/// The install parameters field (GPCS 2.3 §11.5.2.3.7): `C9` (always, possibly empty) and
/// `EF` with the memory quotas (`C8` non-volatile, `C7` volatile) and further TLVs.
pub fn install_parameters(c9: &[u8], ef_extra: &[u8], nv: Option<u32>, volatile: Option<u32>) -> ApiResult<Vec<u8>> {
    let quota = |q: u32, what: &str| -> ApiResult<Vec<u8>> {
        if q <= 0xFFFF { Ok((q as u16).to_be_bytes().to_vec()) } else { Err(ApiError::invalid(format!("{what}: at most 65535 in a 2-byte quota"))) }
    };
    let mut ef = Vec::new();
    if let Some(q) = nv {
        tsm_gp::tlv::put(&mut ef, 0xC8, &quota(q, "nvQuota")?);
    }
    if let Some(q) = volatile {
        tsm_gp::tlv::put(&mut ef, 0xC7, &quota(q, "volatileQuota")?);
    }
    if !ef_extra.is_empty() {
        tsm_gp::tlv::parse_all(ef_extra).map_err(|e| ApiError::invalid(format!("systemSpecificInstallParameter: not BER-TLV: {e}")))?;
        ef.extend_from_slice(ef_extra);
    }
    let mut out = Vec::new();
    tsm_gp::tlv::put(&mut out, 0xC9, c9);
    if !ef.is_empty() {
        tsm_gp::tlv::put(&mut out, 0xEF, &ef);
    }
    if out.len() > 255 {
        return Err(ApiError::invalid("install parameters longer than 255 bytes"));
    }
    Ok(out)
}

fn app_config_view(a: &ApplicationConfig) -> ApplicationConfigView {
    let hex = tsm_gp::hex::encode;
    let c9 = tsm_gp::tlv::find(&a.install_params, 0xC9).ok().flatten().map(|t| hex(t.value)).unwrap_or_default();
    let ef = tsm_gp::tlv::find(&a.install_params, 0xEF).ok().flatten().map(|t| hex(t.value));
    ApplicationConfigView {
        id: a.id.0,
        sp_id: a.provider_id.0,
        flavor_id: a.flavor_id.0,
        ordinal: a.ordinal,
        module_aid: a.module_aid.to_hex(),
        instance_aid: a.instance_aid.to_hex(),
        privileges: hex(&a.privileges),
        application_specific_install_parameter: c9,
        system_specific_install_parameter: ef,
        install_parameters: hex(&a.install_params),
        make_selectable: a.make_selectable,
        created_at: a.created_at,
    }
}

/// Add an application (instance AID, module AID, privileges, install parameters) to a flavor.
#[utoipa::path(post, path = "/api/v1/services/{serviceId}/flavors/{flavorId}/application-configs", tag = "application-configs", security(("bearer" = [])),
    params(("serviceId" = String, Path), ("flavorId" = String, Path)), request_body = ApplicationConfigInput,
    responses((status = 201, body = ApplicationConfigView), (status = 400, body = super::error::ErrorBody), (status = 404, body = super::error::ErrorBody)))]
pub async fn create_application_config(
    p: Provider,
    State(state): State<AppState>,
    Path((id, fid)): Path<(String, String)>,
    ApiJson(req): ApiJson<ApplicationConfigInput>,
) -> Created<ApplicationConfigView> {
    let s = service(&state, &p, &id).await?;
    let (f, v) = flavor_of(&state, &p, &s, &fid).await?;
    let module_aid: Aid = req.module_aid.parse()?;
    let instance_aid: Aid = req.instance_aid.parse()?;
    let privileges = match &req.privileges {
        Some(_) => hex_field(&req.privileges, "privileges")?,
        None => vec![0x00],
    };
    if privileges.len() != 1 && privileges.len() != 3 {
        return Err(ApiError::invalid("privileges: 1 or 3 bytes"));
    }
    // The module must be in the version's load file.
    let elf = state.store.load_files().get(p.id, v.load_file_id).await?.ok_or_else(|| ApiError::not_found("executable load file"))?;
    if !elf.applet_aids.contains(&module_aid) {
        return Err(ApiError::unprocessable("sp.module_not_in_elf", format!("module {module_aid} is not an applet of the version's ELF {} (applets: {})", elf.package_aid, elf.applet_aids.iter().map(|a| a.to_hex()).collect::<Vec<_>>().join(", "))));
    }
    let existing = state.store.application_configs().list(p.id, f.id).await?;
    let ordinal = req.ordinal.unwrap_or_else(|| existing.iter().map(|a| a.ordinal + 1).max().unwrap_or(0));
    let install_params = install_parameters(&hex_field(&req.application_specific_install_parameter, "applicationSpecificInstallParameter")?, &hex_field(&req.system_specific_install_parameter, "systemSpecificInstallParameter")?, req.nv_quota, req.volatile_quota)?;
    let a = ApplicationConfig { id: ApplicationConfigId::new(), provider_id: p.id, flavor_id: f.id, ordinal, module_aid, instance_aid, privileges, install_params, make_selectable: req.make_selectable, created_at: now_ms() };
    state.store.application_configs().create(&a).await?;
    state.store.audit_log().append(&p.audit("create", "application_config", a.id, Some(serde_json::json!({"flavorId": f.id, "instanceAid": a.instance_aid.to_hex()})))).await?;
    created(app_config_view(&a))
}

/// List the application configs of a flavor.
#[utoipa::path(get, path = "/api/v1/services/{serviceId}/flavors/{flavorId}/application-configs", tag = "application-configs", security(("bearer" = [])),
    params(("serviceId" = String, Path), ("flavorId" = String, Path)), responses((status = 200, body = [ApplicationConfigView]), (status = 404, body = super::error::ErrorBody)))]
pub async fn list_application_configs(p: Provider, State(state): State<AppState>, Path((id, fid)): Path<(String, String)>) -> ApiResult<ApiJson<Vec<ApplicationConfigView>>> {
    let s = service(&state, &p, &id).await?;
    let (f, _) = flavor_of(&state, &p, &s, &fid).await?;
    Ok(ApiJson(state.store.application_configs().list(p.id, f.id).await?.iter().map(app_config_view).collect()))
}

async fn app_config(state: &AppState, p: &Provider, id: &str) -> ApiResult<ApplicationConfig> {
    let id: ApplicationConfigId = parse_id(id, "application config")?;
    state.store.application_configs().get(p.id, id).await?.ok_or_else(|| ApiError::not_found("application config"))
}

/// An application config.
#[utoipa::path(get, path = "/api/v1/application-configs/{applicationConfigId}", tag = "application-configs", security(("bearer" = [])),
    params(("applicationConfigId" = String, Path)), responses((status = 200, body = ApplicationConfigView), (status = 404, body = super::error::ErrorBody)))]
pub async fn get_application_config(p: Provider, State(state): State<AppState>, Path(id): Path<String>) -> ApiResult<ApiJson<ApplicationConfigView>> {
    Ok(ApiJson(app_config_view(&app_config(&state, &p, &id).await?)))
}

/// Delete an application config (only without personalization scripts: `409 sp.in_use`).
#[utoipa::path(delete, path = "/api/v1/application-configs/{applicationConfigId}", tag = "application-configs", security(("bearer" = [])),
    params(("applicationConfigId" = String, Path)), responses((status = 204), (status = 404, body = super::error::ErrorBody), (status = 409, body = super::error::ErrorBody)))]
pub async fn delete_application_config(p: Provider, State(state): State<AppState>, Path(id): Path<String>) -> ApiResult<StatusCode> {
    let a = app_config(&state, &p, &id).await?;
    if !state.store.personalization_scripts().list(p.id, a.id).await?.is_empty() {
        return Err(ApiError::conflict("sp.in_use", "the application config has personalization scripts; delete them first"));
    }
    if !state.store.application_configs().delete(p.id, a.id).await? {
        return Err(ApiError::not_found("application config"));
    }
    state.store.audit_log().append(&p.audit("delete", "application_config", a.id, None)).await?;
    Ok(StatusCode::NO_CONTENT)
}

// ---- personalization scripts ---------------------------------------------------------------

#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PersoBlockInput {
    /// One STORE DATA block: DGIs (2-byte tag, length, value), hex.
    pub data: String,
    /// The block holds secrets: stored sealed, never returned, and encrypted under the SD's
    /// data key when sent.
    #[serde(default)]
    pub sensitive: bool,
}

#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PersoScriptInput {
    pub application_config_id: uuid::Uuid,
    pub name: String,
    /// Order among the application's scripts (default: after the last one).
    #[serde(default)]
    pub ordinal: Option<u32>,
    pub blocks: Vec<PersoBlockInput>,
}

fn perso_view(s: &PersonalizationScript) -> PersoScriptView {
    PersoScriptView {
        id: s.id.0,
        sp_id: s.provider_id.0,
        application_config_id: s.application_config_id.0,
        ordinal: s.ordinal,
        name: s.name.clone(),
        blocks: s
            .blocks
            .iter()
            .map(|b| PersoBlockView {
                data: (!b.encrypt).then(|| tsm_gp::hex::encode(&b.data)),
                sensitive: b.encrypt,
                // Sealed: version, nonce and tag around the ciphertext of the same length.
                length: if b.encrypt { b.data.len().saturating_sub(1 + 12 + 16) } else { b.data.len() },
            })
            .collect(),
        created_at: s.created_at,
    }
}

/// Add a personalization script (STORE DATA blocks of DGIs) to an application config.
#[utoipa::path(post, path = "/api/v1/personalization-scripts", tag = "personalization-scripts", security(("bearer" = [])),
    request_body = PersoScriptInput, responses((status = 201, body = PersoScriptView), (status = 400, body = super::error::ErrorBody), (status = 404, body = super::error::ErrorBody)))]
pub async fn create_perso_script(p: Provider, State(state): State<AppState>, ApiJson(req): ApiJson<PersoScriptInput>) -> Created<PersoScriptView> {
    let app = ApplicationConfigId(req.application_config_id);
    state.store.application_configs().get(p.id, app).await?.ok_or_else(|| ApiError::not_found("application config"))?;
    super::admin::check_name(&req.name, "name")?;
    if req.blocks.is_empty() || req.blocks.len() > 255 {
        return Err(ApiError::invalid("blocks: 1 to 255 STORE DATA blocks"));
    }
    let id = PersoScriptId::new();
    let mut plain = Vec::with_capacity(req.blocks.len());
    for (i, b) in req.blocks.iter().enumerate() {
        let data = zeroize::Zeroizing::new(tsm_gp::hex::decode(&b.data).map_err(|_| ApiError::invalid(format!("blocks[{i}].data: not hex")))?);
        if data.is_empty() || data.len() > 239 {
            return Err(ApiError::invalid(format!("blocks[{i}].data: 1 to 239 bytes (one STORE DATA command under secure messaging)")));
        }
        tsm_gp::tlv::parse_dgis(&data).map_err(|e| ApiError::invalid(format!("blocks[{i}].data: not a sequence of DGIs: {e}")))?;
        plain.push((data, b.sensitive));
    }
    let keys = state.keys.clone();
    let blocks = tokio::task::spawn_blocking(move || {
        plain
            .iter()
            .enumerate()
            .map(|(i, (data, sensitive))| {
                let data = if *sensitive { super::sealing::seal_block(keys.as_ref(), &super::sealing::block_aad(id, i), data)? } else { data.to_vec() };
                Ok(PersoBlock { data, encrypt: *sensitive })
            })
            .collect::<Result<Vec<_>, crate::keys::KeyStoreError>>()
    })
    .await
    .map_err(|e| ApiError::internal("internal.task", e.to_string()))??;
    let existing = state.store.personalization_scripts().list(p.id, app).await?;
    let ordinal = req.ordinal.unwrap_or_else(|| existing.iter().map(|s| s.ordinal + 1).max().unwrap_or(0));
    let s = PersonalizationScript { id, provider_id: p.id, application_config_id: app, ordinal, name: req.name, blocks, created_at: now_ms() };
    state.store.personalization_scripts().create(&s).await?;
    let sensitive = s.blocks.iter().filter(|b| b.encrypt).count();
    state.store.audit_log().append(&p.audit("create", "personalization_script", s.id, Some(serde_json::json!({"applicationConfigId": app, "blocks": s.blocks.len(), "sensitiveBlocks": sensitive})))).await?;
    created(perso_view(&s))
}

#[derive(Debug, Clone, Deserialize, IntoParams)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PersoQuery {
    /// The application config whose scripts to list.
    pub application_config_id: uuid::Uuid,
}

/// List the personalization scripts of an application config.
#[utoipa::path(get, path = "/api/v1/personalization-scripts", tag = "personalization-scripts", security(("bearer" = [])),
    params(PersoQuery), responses((status = 200, body = [PersoScriptView]), (status = 404, body = super::error::ErrorBody)))]
pub async fn list_perso_scripts(p: Provider, State(state): State<AppState>, q: Result<Query<PersoQuery>, axum::extract::rejection::QueryRejection>) -> ApiResult<ApiJson<Vec<PersoScriptView>>> {
    let Query(q) = q.map_err(|e| ApiError::invalid(e.body_text()))?;
    let app = ApplicationConfigId(q.application_config_id);
    state.store.application_configs().get(p.id, app).await?.ok_or_else(|| ApiError::not_found("application config"))?;
    Ok(ApiJson(state.store.personalization_scripts().list(p.id, app).await?.iter().map(perso_view).collect()))
}

async fn perso(state: &AppState, p: &Provider, id: &str) -> ApiResult<PersonalizationScript> {
    let id: PersoScriptId = parse_id(id, "personalization script")?;
    state.store.personalization_scripts().get(p.id, id).await?.ok_or_else(|| ApiError::not_found("personalization script"))
}

/// A personalization script (sensitive blocks without their data).
#[utoipa::path(get, path = "/api/v1/personalization-scripts/{personalizationScriptId}", tag = "personalization-scripts", security(("bearer" = [])),
    params(("personalizationScriptId" = String, Path)), responses((status = 200, body = PersoScriptView), (status = 404, body = super::error::ErrorBody)))]
pub async fn get_perso_script(p: Provider, State(state): State<AppState>, Path(id): Path<String>) -> ApiResult<ApiJson<PersoScriptView>> {
    Ok(ApiJson(perso_view(&perso(&state, &p, &id).await?)))
}

/// Delete a personalization script.
#[utoipa::path(delete, path = "/api/v1/personalization-scripts/{personalizationScriptId}", tag = "personalization-scripts", security(("bearer" = [])),
    params(("personalizationScriptId" = String, Path)), responses((status = 204), (status = 404, body = super::error::ErrorBody)))]
pub async fn delete_perso_script(p: Provider, State(state): State<AppState>, Path(id): Path<String>) -> ApiResult<StatusCode> {
    let s = perso(&state, &p, &id).await?;
    if !state.store.personalization_scripts().delete(p.id, s.id).await? {
        return Err(ApiError::not_found("personalization script"));
    }
    state.store.audit_log().append(&p.audit("delete", "personalization_script", s.id, None)).await?;
    Ok(StatusCode::NO_CONTENT)
}

// ---- executable load files -----------------------------------------------------------------

/// The multipart form of a CAP upload (BSI `binaryELF`).
#[derive(ToSchema)]
#[allow(dead_code)]
pub struct ElfUpload {
    /// File name of the ELF.
    #[schema(example = "applet.cap")]
    elf_filename: Option<String>,
    /// The CAP file.
    #[schema(value_type = String, format = Binary)]
    elf_file: Vec<u8>,
}

#[derive(Debug, Clone, Deserialize, IntoParams)]
#[serde(rename_all = "camelCase")]
pub struct UploadQuery {
    /// File name of a raw (`application/octet-stream`) upload.
    #[serde(default)]
    pub file_name: Option<String>,
}

/// Upload a CAP file: the raw bytes (`application/octet-stream`) or a multipart form with
/// `elfFile` (and `elfFilename`). The CAP is parsed; an invalid one is refused with its
/// parser's code (`400 cap.*`) and nothing is stored.
#[utoipa::path(post, path = "/api/v1/executable-load-files", tag = "executable-load-files", security(("bearer" = [])),
    params(UploadQuery),
    request_body(content(
        (Vec<u8> = "application/octet-stream"),
        (ElfUpload = "multipart/form-data"),
    )),
    responses(
        (status = 201, body = ElfView),
        (status = 400, description = "`cap.*` (the CAP parser's code), `request.invalid`", body = super::error::ErrorBody),
        (status = 409, description = "`sp.conflict`: the provider has this package AID and version already", body = super::error::ErrorBody),
        (status = 413, description = "`request.too_large`", body = super::error::ErrorBody),
        (status = 415, description = "`request.unsupported_media_type`", body = super::error::ErrorBody),
    ))]
pub async fn upload_elf(p: Provider, State(state): State<AppState>, Query(q): Query<UploadQuery>, req: Request) -> Created<ElfView> {
    let max = state.api.config.cap_max_bytes;
    let ctype = req.headers().get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).unwrap_or("").to_ascii_lowercase();
    let (bytes, file_name) = if ctype.starts_with("application/octet-stream") || ctype.starts_with("application/java-archive") || ctype.starts_with("application/zip") {
        let b = axum::body::to_bytes(req.into_body(), max).await.map_err(|_| body_rejection(StatusCode::PAYLOAD_TOO_LARGE, String::new()))?;
        (b.to_vec(), q.file_name)
    } else if ctype.starts_with("multipart/form-data") {
        let mut mp = axum::extract::Multipart::from_request(req, &state).await.map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, "request.invalid", e.body_text()))?;
        let (mut file, mut name) = (None, q.file_name);
        while let Some(field) = mp.next_field().await.map_err(multipart_err)? {
            match field.name().unwrap_or("") {
                "elfFile" | "file" => {
                    if name.is_none() {
                        name = field.file_name().map(str::to_string);
                    }
                    let b = field.bytes().await.map_err(multipart_err)?;
                    if b.len() > max {
                        return Err(body_rejection(StatusCode::PAYLOAD_TOO_LARGE, String::new()));
                    }
                    file = Some(b.to_vec());
                }
                "elfFilename" | "fileName" => name = Some(field.text().await.map_err(multipart_err)?),
                other => return Err(ApiError::invalid(format!("unknown form field {other:?} (elfFile, elfFilename)"))),
            }
        }
        (file.ok_or_else(|| ApiError::invalid("the form has no elfFile field"))?, name)
    } else {
        return Err(ApiError::new(StatusCode::UNSUPPORTED_MEDIA_TYPE, "request.unsupported_media_type", "send the CAP as application/octet-stream or multipart/form-data (elfFile)"));
    };
    if bytes.is_empty() {
        return Err(ApiError::new(StatusCode::BAD_REQUEST, "cap.not_a_cap", "the body is empty"));
    }
    let cap = CapFile::parse(&bytes)?;
    let package_aid = Aid::new(cap.package_aid())?;
    let applet_aids = cap.applet_aids().into_iter().map(Aid::new).collect::<Result<Vec<_>, _>>()?;
    let f = LoadFile {
        id: LoadFileId::new(),
        provider_id: p.id,
        package_aid,
        version: cap.package_version().to_string(),
        size: bytes.len() as u64,
        hashes: LoadFileHashes {
            sha1: cap.load_file_hash(HashAlgorithm::Sha1, true),
            sha256: cap.load_file_hash(HashAlgorithm::Sha256, true),
            sha1_without_descriptor: cap.load_file_hash(HashAlgorithm::Sha1, false),
            sha256_without_descriptor: cap.load_file_hash(HashAlgorithm::Sha256, false),
        },
        applet_aids,
        created_at: now_ms(),
    };
    state.store.load_files().create(&f, &bytes).await?;
    let detail = serde_json::json!({"aid": f.package_aid.to_hex(), "version": f.version, "sha256": tsm_gp::hex::encode(&f.hashes.sha256), "fileName": file_name});
    state.store.audit_log().append(&p.audit("create", "load_file", f.id, Some(detail))).await?;
    tracing::info!(provider = %p.id, elf = %f.id, aid = %f.package_aid, size = f.size, "CAP uploaded");
    let mut v = ElfView::new(&f, Some(&cap));
    v.file_name = file_name;
    created(v)
}

fn multipart_err(e: axum::extract::multipart::MultipartError) -> ApiError {
    let status = e.status();
    if status == StatusCode::PAYLOAD_TOO_LARGE { body_rejection(status, String::new()) } else { ApiError::new(StatusCode::BAD_REQUEST, "request.invalid", e.body_text()) }
}

/// List the provider's executable load files.
#[utoipa::path(get, path = "/api/v1/executable-load-files", tag = "executable-load-files", security(("bearer" = [])), responses((status = 200, body = [ElfView])))]
pub async fn list_elfs(p: Provider, State(state): State<AppState>) -> ApiResult<ApiJson<Vec<ElfView>>> {
    Ok(ApiJson(state.store.load_files().list(p.id).await?.iter().map(|f| ElfView::new(f, None)).collect()))
}

async fn elf(state: &AppState, p: &Provider, id: &str) -> ApiResult<LoadFile> {
    let id: LoadFileId = parse_id(id, "executable load file")?;
    state.store.load_files().get(p.id, id).await?.ok_or_else(|| ApiError::not_found("executable load file"))
}

/// An executable load file (with package name, imports and load file sizes).
#[utoipa::path(get, path = "/api/v1/executable-load-files/{elfId}", tag = "executable-load-files", security(("bearer" = [])),
    params(("elfId" = String, Path)), responses((status = 200, body = ElfView), (status = 404, body = super::error::ErrorBody)))]
pub async fn get_elf(p: Provider, State(state): State<AppState>, Path(id): Path<String>) -> ApiResult<ApiJson<ElfView>> {
    let f = elf(&state, &p, &id).await?;
    let bytes = state.store.load_files().cap_bytes(p.id, f.id).await?;
    let cap = bytes.as_deref().and_then(|b| CapFile::parse(b).ok());
    Ok(ApiJson(ElfView::new(&f, cap.as_ref())))
}

/// The CAP file as uploaded.
#[utoipa::path(get, path = "/api/v1/executable-load-files/{elfId}/binary", tag = "executable-load-files", security(("bearer" = [])),
    params(("elfId" = String, Path)), responses((status = 200, content_type = "application/octet-stream", body = Vec<u8>), (status = 404, body = super::error::ErrorBody)))]
pub async fn get_elf_binary(p: Provider, State(state): State<AppState>, Path(id): Path<String>) -> ApiResult<Response> {
    let f = elf(&state, &p, &id).await?;
    let bytes = state.store.load_files().cap_bytes(p.id, f.id).await?.ok_or_else(|| ApiError::not_found("executable load file"))?;
    Ok(([(header::CONTENT_TYPE, "application/octet-stream")], Body::from(bytes)).into_response())
}

/// Delete an executable load file (only while no version uses it: `409 sp.in_use`).
#[utoipa::path(delete, path = "/api/v1/executable-load-files/{elfId}", tag = "executable-load-files", security(("bearer" = [])),
    params(("elfId" = String, Path)), responses((status = 204), (status = 404, body = super::error::ErrorBody), (status = 409, body = super::error::ErrorBody)))]
pub async fn delete_elf(p: Provider, State(state): State<AppState>, Path(id): Path<String>) -> ApiResult<StatusCode> {
    let f = elf(&state, &p, &id).await?;
    if !state.store.load_files().delete(p.id, f.id).await? {
        return Err(ApiError::not_found("executable load file"));
    }
    state.store.audit_log().append(&p.audit("delete", "load_file", f.id, None)).await?;
    Ok(StatusCode::NO_CONTENT)
}

// ---- security domains and audit log --------------------------------------------------------

/// The provider's security domains (one SSD per SE it may use).
#[utoipa::path(get, path = "/api/v1/security-domains", tag = "security-domains", security(("bearer" = [])), responses((status = 200, body = [SecurityDomainView])))]
pub async fn list_security_domains(p: Provider, State(state): State<AppState>) -> ApiResult<ApiJson<Vec<SecurityDomainView>>> {
    let mut out = Vec::new();
    for d in state.store.security_domains().list(p.id).await? {
        out.push(super::admin::sd_view(&state, &d).await?);
    }
    Ok(ApiJson(out))
}

/// One of the provider's security domains.
#[utoipa::path(get, path = "/api/v1/security-domains/{sdId}", tag = "security-domains", security(("bearer" = [])),
    params(("sdId" = String, Path)), responses((status = 200, body = SecurityDomainView), (status = 404, body = super::error::ErrorBody)))]
pub async fn get_security_domain(p: Provider, State(state): State<AppState>, Path(id): Path<String>) -> ApiResult<ApiJson<SecurityDomainView>> {
    let id: SecurityDomainId = parse_id(&id, "security domain")?;
    let d = state.store.security_domains().get(p.id, id).await?.ok_or_else(|| ApiError::not_found("security domain"))?;
    Ok(ApiJson(super::admin::sd_view(&state, &d).await?))
}

#[derive(Debug, Clone, Deserialize, IntoParams)]
pub struct AuditQuery {
    /// Records after this id (paging).
    #[serde(default)]
    pub after: Option<i64>,
    /// At most this many (default 100, at most 1000).
    #[serde(default)]
    pub limit: Option<u32>,
}

/// The provider's audit log: who changed what, when (oldest first).
#[utoipa::path(get, path = "/api/v1/audit-log", tag = "serviceproviders", security(("bearer" = [])), params(AuditQuery), responses((status = 200, body = [AuditView])))]
pub async fn list_audit(p: Provider, State(state): State<AppState>, q: Result<Query<AuditQuery>, axum::extract::rejection::QueryRejection>) -> ApiResult<ApiJson<Vec<AuditView>>> {
    let Query(q) = q.map_err(|e| ApiError::invalid(e.body_text()))?;
    let rows = state.store.audit_log().list(p.id, q.after.unwrap_or(0), q.limit.unwrap_or(100).min(1000)).await?;
    Ok(ApiJson(rows.iter().map(AuditView::from).collect()))
}
