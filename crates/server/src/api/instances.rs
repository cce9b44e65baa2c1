//! Service instances and processes: the TSM-API operations (BSI TR-03165 §4.2) as REST.
//!
//! Creating an instance checks eligibility (the SE exists, the provider has an SSD on it, a
//! flavor fits the SE's carrier and profile, the memory quota holds). `deploy`, `update`,
//! `suspend`, `resume` and `terminate` each queue a **process** (state `QUEUED`) and a SERAM
//! session, and answer `202` with both ids; the engine carries the process out when the
//! phone's local agent connects with the session id. An instance has at most one process in
//! flight; an operation its state does not allow is `409 sp.invalid_transition`.

use super::auth::Provider;
use super::dto::*;
use super::error::{ApiError, ApiJson, ApiResult, parse_id};
use crate::app::AppState;
use crate::domain::*;
use crate::store_api_queries::QueueOutcome;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use serde::Deserialize;
use utoipa::{IntoParams, ToSchema};

use ServiceInstanceState as S;

/// The instance states from which an operation may start.
pub fn allowed_from(op: Operation) -> &'static [ServiceInstanceState] {
    match op {
        Operation::Deploy => &[S::NotDeployed, S::InError],
        Operation::Update => &[S::Operational, S::Suspended],
        Operation::Suspend => &[S::Operational],
        Operation::Resume => &[S::Suspended],
        Operation::Terminate => &[S::Installed, S::Personalized, S::Activated, S::Operational, S::Suspended, S::InError],
        Operation::Resync => ServiceInstanceState::ALL,
    }
}

#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct NewServiceInstance {
    pub service_id: uuid::Uuid,
    /// The SE (`seId`, as the phone reports it).
    pub se_id: String,
    /// The flavor to deploy; absent: the first flavor of the version that fits the SE.
    #[serde(default)]
    pub flavor_id: Option<uuid::Uuid>,
    /// The version (tag) when no flavor is given; absent: the newest version.
    #[serde(default)]
    pub version_tag: Option<String>,
}

fn fits(f: &Flavor, se: &SecureElement) -> bool {
    f.carrier.is_none_or(|c| c == se.carrier) && f.profile.as_deref().is_none_or(|p| p == se.profile)
}

/// The provider's SSD on the SE, or `404` (an SE the provider may not use looks like no SE).
async fn provider_sd(state: &AppState, p: &Provider, se: &SeId) -> ApiResult<(SecureElement, SecurityDomain)> {
    let sd = state.store.security_domains().list(p.id).await?.into_iter().find(|d| d.se_id == *se && d.kind == SdKind::Ssd).ok_or_else(|| ApiError::not_found("secure element"))?;
    let se = state.store.secure_elements().get(se).await?.ok_or_else(|| ApiError::not_found("secure element"))?;
    Ok((se, sd))
}

/// Checks carrier/profile and the memory quota of `flavor` on the SE for one of `p`'s
/// instances (`except` is not counted: it is the one being deployed or replaced).
async fn check_eligible(state: &AppState, p: &Provider, se: &SecureElement, sd: &SecurityDomain, flavor: &Flavor, except: Option<ServiceInstanceId>) -> ApiResult<()> {
    if !fits(flavor, se) {
        return Err(ApiError::unprocessable(
            "sp.not_eligible",
            format!(
                "flavor {} is for {}/{}, the SE is {}/{}",
                flavor.name,
                flavor.carrier.map(|c| c.as_str()).unwrap_or("any carrier"),
                flavor.profile.as_deref().unwrap_or("any profile"),
                se.carrier,
                se.profile
            ),
        ));
    }
    if let Some(quota) = sd.memory_quota {
        let mut used = 0u64;
        for i in state.store.service_instances().list_for_se(p.id, &se.id).await? {
            if Some(i.id) == except || i.state == S::NotDeployed {
                continue;
            }
            if let Some(f) = state.store.flavors().get(p.id, i.flavor_id).await? {
                used = used.saturating_add(f.memory_quota.unwrap_or(0));
            }
        }
        let need = flavor.memory_quota.unwrap_or(0);
        if used.saturating_add(need) > quota {
            return Err(ApiError::unprocessable("sp.quota_exceeded", format!("the flavor needs {need} bytes; {used} of the SSD's {quota} are taken on {}", se.id)));
        }
    }
    Ok(())
}

/// Picks the flavor: the given one (of this service), or the first of the version that fits.
async fn choose_flavor(state: &AppState, p: &Provider, service: &Service, flavor_id: Option<uuid::Uuid>, tag: Option<&str>, se: &SecureElement) -> ApiResult<(Flavor, ServiceVersion)> {
    if let Some(fid) = flavor_id {
        return super::sp::flavor_of(state, p, service, &fid.to_string()).await;
    }
    let versions = state.store.service_versions().list(p.id, service.id).await?;
    let v = match tag {
        Some(t) => versions.into_iter().find(|v| v.version == t).ok_or_else(|| ApiError::not_found("version"))?,
        None => versions.into_iter().max_by_key(|v| v.created_at).ok_or_else(|| ApiError::unprocessable("sp.not_eligible", "the service has no version"))?,
    };
    let f = state
        .store
        .flavors()
        .list(p.id, v.id)
        .await?
        .into_iter()
        .find(|f| fits(f, se))
        .ok_or_else(|| ApiError::unprocessable("sp.not_eligible", format!("no flavor of version {} fits the SE ({}/{})", v.version, se.carrier, se.profile)))?;
    Ok((f, v))
}

/// Create a service instance (state `NOT_DEPLOYED`) after the eligibility check.
#[utoipa::path(post, path = "/api/v1/service-instances", tag = "service-instances", security(("bearer" = [])),
    request_body = NewServiceInstance,
    responses(
        (status = 201, body = ServiceInstanceView),
        (status = 404, description = "`sp.not_found`: service, flavor, or an SE the provider may not use", body = super::error::ErrorBody),
        (status = 422, description = "`sp.not_eligible`, `sp.quota_exceeded`", body = super::error::ErrorBody),
    ))]
pub async fn create_instance(p: Provider, State(state): State<AppState>, ApiJson(req): ApiJson<NewServiceInstance>) -> ApiResult<(StatusCode, ApiJson<ServiceInstanceView>)> {
    let service = super::sp::service(&state, &p, &req.service_id.to_string()).await?;
    let se_id: SeId = parse_id(&req.se_id, "secure element")?;
    let (se, sd) = provider_sd(&state, &p, &se_id).await?;
    let (flavor, version) = choose_flavor(&state, &p, &service, req.flavor_id, req.version_tag.as_deref(), &se).await?;
    check_eligible(&state, &p, &se, &sd, &flavor, None).await?;
    let now = now_ms();
    let i = ServiceInstance { id: ServiceInstanceId::new(), provider_id: p.id, service_id: service.id, service_version_id: version.id, flavor_id: flavor.id, se_id, state: S::NotDeployed, created_at: now, updated_at: now };
    state.store.service_instances().create(&i).await?;
    state.store.audit_log().append(&p.audit("create", "service_instance", i.id, Some(serde_json::json!({"serviceId": service.id, "flavorId": flavor.id, "seId": i.se_id.as_str()})))).await?;
    Ok((StatusCode::CREATED, ApiJson(ServiceInstanceView::new(&i, None))))
}

/// List the provider's service instances.
#[utoipa::path(get, path = "/api/v1/service-instances", tag = "service-instances", security(("bearer" = [])), responses((status = 200, body = [ServiceInstanceView])))]
pub async fn list_instances(p: Provider, State(state): State<AppState>) -> ApiResult<ApiJson<Vec<ServiceInstanceView>>> {
    let mut out = Vec::new();
    for i in state.store.service_instances().list(p.id).await? {
        let f = state.store.in_flight_process(p.id, i.id).await?;
        out.push(ServiceInstanceView::new(&i, f));
    }
    Ok(ApiJson(out))
}

async fn instance(state: &AppState, p: &Provider, id: &str) -> ApiResult<ServiceInstance> {
    let id: ServiceInstanceId = parse_id(id, "service instance")?;
    state.store.service_instances().get(p.id, id).await?.ok_or_else(|| ApiError::not_found("service instance"))
}

/// A service instance and its state.
#[utoipa::path(get, path = "/api/v1/service-instances/{instanceId}", tag = "service-instances", security(("bearer" = [])),
    params(("instanceId" = String, Path)), responses((status = 200, body = ServiceInstanceView), (status = 404, body = super::error::ErrorBody)))]
pub async fn get_instance(p: Provider, State(state): State<AppState>, Path(id): Path<String>) -> ApiResult<ApiJson<ServiceInstanceView>> {
    let i = instance(&state, &p, &id).await?;
    let f = state.store.in_flight_process(p.id, i.id).await?;
    Ok(ApiJson(ServiceInstanceView::new(&i, f)))
}

/// Body of `update`: the flavor (or version) to move to.
#[derive(Debug, Clone, Deserialize, ToSchema, Default)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct UpdateRequest {
    #[serde(default)]
    pub flavor_id: Option<uuid::Uuid>,
    #[serde(default)]
    pub version_tag: Option<String>,
}

/// The engine's input for an `update` process before it is planned, in `planner_state`:
/// `{"request": {"serviceVersionId": "...", "flavorId": "..."}}`. The engine replaces it with
/// the planner's state once it has planned the update.
pub fn update_request_state(version: ServiceVersionId, flavor: FlavorId) -> serde_json::Value {
    serde_json::json!({"request": {"serviceVersionId": version, "flavorId": flavor}})
}

async fn queue(state: &AppState, p: &Provider, id: &str, op: Operation, update: Option<UpdateRequest>) -> ApiResult<(StatusCode, ApiJson<QueuedProcess>)> {
    let i = instance(state, p, id).await?;
    let mut planner_state = None;
    if matches!(op, Operation::Deploy | Operation::Update) {
        let (se, sd) = provider_sd(state, p, &i.se_id).await?;
        let service = state.store.services().get(p.id, i.service_id).await?.ok_or_else(|| ApiError::not_found("service"))?;
        let (flavor, version) = match &update {
            Some(u) if u.flavor_id.is_some() || u.version_tag.is_some() => choose_flavor(state, p, &service, u.flavor_id, u.version_tag.as_deref(), &se).await?,
            Some(_) => return Err(ApiError::invalid("update needs flavorId or versionTag")),
            None => {
                let f = state.store.flavors().get(p.id, i.flavor_id).await?.ok_or_else(|| ApiError::not_found("flavor"))?;
                let v = state.store.service_versions().get(p.id, i.service_version_id).await?.ok_or_else(|| ApiError::not_found("version"))?;
                (f, v)
            }
        };
        check_eligible(state, p, &se, &sd, &flavor, Some(i.id)).await?;
        if op == Operation::Update {
            planner_state = Some(update_request_state(version.id, flavor.id));
        }
    }
    let now = now_ms();
    let process_id = ProcessId::new();
    let session_id = SeramSessionId::new();
    let process = Process {
        id: process_id,
        provider_id: p.id,
        service_instance_id: Some(i.id),
        se_id: i.se_id.clone(),
        operation: op,
        state: ProcessState::Queued,
        progress: Progress::default(),
        error: None,
        planner_state,
        seram_session_id: Some(session_id),
        version: 0,
        created_at: now,
        updated_at: now,
        started_at: None,
        finished_at: None,
    };
    let session = SeramSession {
        id: session_id,
        se_id: i.se_id.clone(),
        process_id: Some(process_id),
        state: SeramSessionState::Created,
        order: None,
        order_seq: 0,
        last_report_hash: None,
        last_activity: now,
        created_at: now,
        version: 0,
    };
    let audit = p.audit(op.as_str(), "service_instance", i.id, Some(serde_json::json!({"processId": process_id, "sessionId": session_id})));
    match state.store.queue_instance_process(&process, &session, allowed_from(op), &audit).await? {
        QueueOutcome::Queued => {}
        QueueOutcome::InstanceNotFound => return Err(ApiError::not_found("service instance")),
        QueueOutcome::InvalidState(s) => {
            let allowed: Vec<&str> = allowed_from(op).iter().map(|s| s.as_str()).collect();
            return Err(ApiError::conflict("sp.invalid_transition", format!("cannot {op} an instance in state {s} (allowed from: {})", allowed.join(", "))));
        }
        QueueOutcome::InFlight(other) => return Err(ApiError::conflict("sp.process_in_flight", format!("process {other} of this instance is not finished yet"))),
    }
    state.wake_all();
    tracing::info!(provider = %p.id, instance = %i.id, process = %process_id, operation = %op, "process queued");
    Ok((StatusCode::ACCEPTED, ApiJson(QueuedProcess { process_id: process_id.0, session_id: session_id.0, service_instance_id: i.id.0, operation: op.as_str().into(), state: ProcessState::Queued.as_str().into() })))
}

macro_rules! operation {
    ($fn:ident, $op:expr, $path:literal, $doc:literal) => {
        #[doc = $doc]
        #[utoipa::path(post, path = $path, tag = "service-instances", security(("bearer" = [])),
            params(("instanceId" = String, Path)),
            responses(
                (status = 202, description = "Queued: pass `sessionId` to the phone app", body = QueuedProcess),
                (status = 404, body = super::error::ErrorBody),
                (status = 409, description = "`sp.invalid_transition`, `sp.process_in_flight`", body = super::error::ErrorBody),
                (status = 422, description = "`sp.not_eligible`, `sp.quota_exceeded`", body = super::error::ErrorBody),
            ))]
        pub async fn $fn(p: Provider, State(state): State<AppState>, Path(id): Path<String>) -> ApiResult<(StatusCode, ApiJson<QueuedProcess>)> {
            queue(&state, &p, &id, $op, None).await
        }
    };
}

operation!(deploy, Operation::Deploy, "/api/v1/service-instances/{instanceId}/deploy", "Deploy the instance onto its SE (from `NOT_DEPLOYED` or `IN_ERROR`).");
operation!(suspend, Operation::Suspend, "/api/v1/service-instances/{instanceId}/suspend", "Suspend (lock) an `OPERATIONAL` instance.");
operation!(resume, Operation::Resume, "/api/v1/service-instances/{instanceId}/resume", "Resume (unlock) a `SUSPENDED` instance.");
operation!(terminate, Operation::Terminate, "/api/v1/service-instances/{instanceId}/terminate", "Terminate (delete from the SE) a deployed instance.");

/// Update an `OPERATIONAL` or `SUSPENDED` instance to another flavor or version.
#[utoipa::path(post, path = "/api/v1/service-instances/{instanceId}/update", tag = "service-instances", security(("bearer" = [])),
    params(("instanceId" = String, Path)), request_body = UpdateRequest,
    responses(
        (status = 202, description = "Queued: pass `sessionId` to the phone app", body = QueuedProcess),
        (status = 404, body = super::error::ErrorBody),
        (status = 409, description = "`sp.invalid_transition`, `sp.process_in_flight`", body = super::error::ErrorBody),
        (status = 422, description = "`sp.not_eligible`, `sp.quota_exceeded`", body = super::error::ErrorBody),
    ))]
pub async fn update(p: Provider, State(state): State<AppState>, Path(id): Path<String>, ApiJson(req): ApiJson<UpdateRequest>) -> ApiResult<(StatusCode, ApiJson<QueuedProcess>)> {
    queue(&state, &p, &id, Operation::Update, Some(req)).await
}

#[derive(Debug, Clone, Deserialize, IntoParams)]
pub struct ProcessQuery {
    /// At most this many, newest first (default 100, at most 1000).
    #[serde(default)]
    pub limit: Option<u32>,
}

/// The provider's processes, newest first.
#[utoipa::path(get, path = "/api/v1/processes", tag = "processes", security(("bearer" = [])), params(ProcessQuery), responses((status = 200, body = [ProcessView])))]
pub async fn list_processes(p: Provider, State(state): State<AppState>, q: Result<Query<ProcessQuery>, axum::extract::rejection::QueryRejection>) -> ApiResult<ApiJson<Vec<ProcessView>>> {
    let Query(q) = q.map_err(|e| ApiError::invalid(e.body_text()))?;
    let rows = state.store.processes().list(p.id, q.limit.unwrap_or(100).min(1000)).await?;
    Ok(ApiJson(rows.iter().map(|r| ProcessView::new(r, None)).collect()))
}

async fn process(state: &AppState, p: &Provider, id: &str) -> ApiResult<Process> {
    let id: ProcessId = parse_id(id, "process")?;
    state.store.processes().get(p.id, id).await?.ok_or_else(|| ApiError::not_found("process"))
}

/// A process: state, progress (steps, APDUs, round trips), steps, error.
#[utoipa::path(get, path = "/api/v1/processes/{processId}", tag = "processes", security(("bearer" = [])),
    params(("processId" = String, Path)), responses((status = 200, body = ProcessView), (status = 404, body = super::error::ErrorBody)))]
pub async fn get_process(p: Provider, State(state): State<AppState>, Path(id): Path<String>) -> ApiResult<ApiJson<ProcessView>> {
    let pr = process(&state, &p, &id).await?;
    let steps = state.store.processes().steps(p.id, pr.id).await?;
    Ok(ApiJson(ProcessView::new(&pr, Some(&steps))))
}

/// The APDU log of a process, in wire form.
#[utoipa::path(get, path = "/api/v1/processes/{processId}/apdus", tag = "processes", security(("bearer" = [])),
    params(("processId" = String, Path)), responses((status = 200, body = [ApduView]), (status = 404, body = super::error::ErrorBody)))]
pub async fn get_process_apdus(p: Provider, State(state): State<AppState>, Path(id): Path<String>) -> ApiResult<ApiJson<Vec<ApduView>>> {
    let pr = process(&state, &p, &id).await?;
    Ok(ApiJson(state.store.apdu_log().list(p.id, pr.id).await?.iter().map(ApduView::from).collect()))
}
