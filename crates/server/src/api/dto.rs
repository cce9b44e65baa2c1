//! Answer bodies shared by the provider and admin APIs. JSON names are camelCase as in the
//! BSI TR-03165 REST API (`spId`, `elfId`, `instanceAid`...); ids are UUIDs; byte strings
//! (AIDs, hashes, APDUs) are upper-case hex; times are Unix milliseconds.

use crate::domain::*;
use serde::Serialize;
use utoipa::ToSchema;

#[derive(Debug, Clone, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ServiceProviderView {
    pub id: uuid::Uuid,
    pub name: String,
    pub callback_url: Option<String>,
    pub created_at: i64,
}

impl From<&ServiceProvider> for ServiceProviderView {
    fn from(p: &ServiceProvider) -> Self {
        ServiceProviderView { id: p.id.0, name: p.name.clone(), callback_url: p.callback_url.clone(), created_at: p.created_at }
    }
}

/// Key check values (hex) of a stored key set.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct Kcvs {
    pub enc: String,
    pub mac: String,
    pub dek: String,
}

/// A key set as answers show it: never key values.
#[derive(Debug, Clone, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct KeysetView {
    pub id: uuid::Uuid,
    pub kvn: u8,
    pub alg: String,
    /// `stored` (key values in the key store) or `diversified`.
    pub kind: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub kcvs: Option<Kcvs>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub master_keyset_id: Option<uuid::Uuid>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub diversification: Option<String>,
}

#[derive(Debug, Clone, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct SecurityDomainView {
    pub id: uuid::Uuid,
    pub se_id: String,
    pub aid: String,
    /// `isd` or `ssd`.
    pub kind: String,
    pub provider_id: Option<uuid::Uuid>,
    pub keyset: Option<KeysetView>,
    pub memory_quota: Option<u64>,
    pub life_cycle: Option<u8>,
}

#[derive(Debug, Clone, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ServiceView {
    pub id: uuid::Uuid,
    pub sp_id: uuid::Uuid,
    pub name: String,
    pub description: Option<String>,
    pub created_at: i64,
}

impl From<&Service> for ServiceView {
    fn from(s: &Service) -> Self {
        ServiceView { id: s.id.0, sp_id: s.provider_id.0, name: s.name.clone(), description: s.description.clone(), created_at: s.created_at }
    }
}

#[derive(Debug, Clone, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct VersionView {
    pub id: uuid::Uuid,
    pub service_id: uuid::Uuid,
    /// The version's tag (e.g. `1.0.0`).
    pub tag: String,
    pub elf_id: uuid::Uuid,
    pub created_at: i64,
}

impl From<&ServiceVersion> for VersionView {
    fn from(v: &ServiceVersion) -> Self {
        VersionView { id: v.id.0, service_id: v.service_id.0, tag: v.version.clone(), elf_id: v.load_file_id.0, created_at: v.created_at }
    }
}

#[derive(Debug, Clone, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct FlavorView {
    pub id: uuid::Uuid,
    pub service_id: uuid::Uuid,
    pub version_id: uuid::Uuid,
    pub name: String,
    /// Carrier this flavor fits (`uicc`, `microsd`, `ese`); none: any.
    pub carrier: Option<String>,
    /// Card profile this flavor fits; none: any.
    pub profile: Option<String>,
    /// Memory the flavor needs in the provider's SSD, in bytes.
    pub memory_quota: Option<u64>,
    pub created_at: i64,
}

impl FlavorView {
    pub fn new(f: &Flavor, service: ServiceId) -> Self {
        FlavorView {
            id: f.id.0,
            service_id: service.0,
            version_id: f.service_version_id.0,
            name: f.name.clone(),
            carrier: f.carrier.map(|c| c.as_str().to_string()),
            profile: f.profile.clone(),
            memory_quota: f.memory_quota,
            created_at: f.created_at,
        }
    }
}

#[derive(Debug, Clone, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ApplicationConfigView {
    pub id: uuid::Uuid,
    pub sp_id: uuid::Uuid,
    pub flavor_id: uuid::Uuid,
    pub ordinal: u32,
    /// Executable module (applet class) AID in the ELF.
    pub module_aid: String,
    pub instance_aid: String,
    /// Privileges (1 or 3 bytes, hex).
    pub privileges: String,
    /// Application-specific install parameters (the `C9` value, hex).
    pub application_specific_install_parameter: String,
    /// System-specific parameters (the `EF` value, hex), carrying the memory quotas.
    pub system_specific_install_parameter: Option<String>,
    /// The whole install parameters field as INSTALL [for install] carries it (hex).
    pub install_parameters: String,
    pub make_selectable: bool,
    pub created_at: i64,
}

#[derive(Debug, Clone, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct PersoBlockView {
    /// The DGIs of this STORE DATA block (hex); absent for sensitive blocks, which are
    /// stored sealed and never returned.
    pub data: Option<String>,
    pub sensitive: bool,
    /// Length of the block's data in bytes.
    pub length: usize,
}

#[derive(Debug, Clone, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct PersoScriptView {
    pub id: uuid::Uuid,
    pub sp_id: uuid::Uuid,
    pub application_config_id: uuid::Uuid,
    pub ordinal: u32,
    pub name: String,
    pub blocks: Vec<PersoBlockView>,
    pub created_at: i64,
}

/// Load file data block hashes (hex), with and without the Descriptor component.
#[derive(Debug, Clone, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ElfHashes {
    pub sha1: String,
    pub sha256: String,
    pub sha1_without_descriptor: String,
    pub sha256_without_descriptor: String,
}

/// An executable load file (a CAP), BSI `ExecutableLoadFile` + `CAP`.
#[derive(Debug, Clone, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ElfView {
    pub id: uuid::Uuid,
    pub sp_id: uuid::Uuid,
    /// Package AID.
    pub aid: String,
    /// Always `CAP`.
    #[serde(rename = "type")]
    pub elf_type: String,
    /// Package version (`major.minor`).
    pub package_version: String,
    /// Package name (`com/example/app`), when the CAP says.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub package_name: Option<String>,
    /// Imported package AIDs.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub imported_packages: Option<Vec<String>>,
    /// Applet (executable module) AIDs.
    pub applet_aids: Vec<String>,
    /// Size of the uploaded CAP file in bytes.
    pub size: u64,
    /// Load file data block sizes, with and without the Descriptor component.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub load_file_size: Option<usize>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub load_file_size_without_descriptor: Option<usize>,
    pub hashes: ElfHashes,
    /// File name as uploaded (answered on upload only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub file_name: Option<String>,
    pub creation_date: i64,
}

impl ElfView {
    pub fn new(f: &LoadFile, cap: Option<&tsm_gp::cap::CapFile>) -> Self {
        let hex = tsm_gp::hex::encode;
        ElfView {
            id: f.id.0,
            sp_id: f.provider_id.0,
            aid: f.package_aid.to_hex(),
            elf_type: "CAP".into(),
            package_version: f.version.clone(),
            package_name: cap.and_then(|c| c.package_name().map(str::to_string)),
            imported_packages: cap.map(|c| c.imports().iter().map(|i| hex(&i.aid)).collect()),
            applet_aids: f.applet_aids.iter().map(|a| a.to_hex()).collect(),
            size: f.size,
            load_file_size: cap.map(|c| c.load_file_data_block(true).len()),
            load_file_size_without_descriptor: cap.map(|c| c.load_file_data_block(false).len()),
            hashes: ElfHashes {
                sha1: hex(&f.hashes.sha1),
                sha256: hex(&f.hashes.sha256),
                sha1_without_descriptor: hex(&f.hashes.sha1_without_descriptor),
                sha256_without_descriptor: hex(&f.hashes.sha256_without_descriptor),
            },
            file_name: None,
            creation_date: f.created_at,
        }
    }
}

#[derive(Debug, Clone, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ServiceInstanceView {
    pub id: uuid::Uuid,
    pub sp_id: uuid::Uuid,
    pub service_id: uuid::Uuid,
    pub version_id: uuid::Uuid,
    pub flavor_id: uuid::Uuid,
    pub se_id: String,
    /// `NOT_DEPLOYED`, `INSTALLED`, `PERSONALIZED`, `ACTIVATED`, `OPERATIONAL`, `SUSPENDED`,
    /// `IN_ERROR`.
    pub state: String,
    /// The QUEUED or RUNNING process of this instance, if any.
    pub process_in_flight: Option<uuid::Uuid>,
    pub created_at: i64,
    pub updated_at: i64,
}

impl ServiceInstanceView {
    pub fn new(i: &ServiceInstance, in_flight: Option<ProcessId>) -> Self {
        ServiceInstanceView {
            id: i.id.0,
            sp_id: i.provider_id.0,
            service_id: i.service_id.0,
            version_id: i.service_version_id.0,
            flavor_id: i.flavor_id.0,
            se_id: i.se_id.to_string(),
            state: i.state.as_str().into(),
            process_in_flight: in_flight.map(|p| p.0),
            created_at: i.created_at,
            updated_at: i.updated_at,
        }
    }
}

/// The answer to an operation request (`202 Accepted`).
#[derive(Debug, Clone, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct QueuedProcess {
    pub process_id: uuid::Uuid,
    /// The SERAM session the phone's local agent opens (`sessionId` of the SERAM
    /// Initialization Step): pass it to the phone app.
    pub session_id: uuid::Uuid,
    pub service_instance_id: uuid::Uuid,
    pub operation: String,
    /// `QUEUED`.
    pub state: String,
}

#[derive(Debug, Clone, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ProgressView {
    pub steps_done: u32,
    pub steps_total: u32,
    pub apdus: u32,
    pub round_trips: u32,
}

#[derive(Debug, Clone, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct StepView {
    pub ordinal: u32,
    pub name: String,
    pub state: String,
    pub started_at: Option<i64>,
    pub finished_at: Option<i64>,
}

#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct ProcessErrorView {
    pub code: String,
    pub message: String,
}

#[derive(Debug, Clone, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ProcessView {
    pub id: uuid::Uuid,
    pub sp_id: uuid::Uuid,
    pub service_instance_id: Option<uuid::Uuid>,
    pub se_id: String,
    /// `deploy`, `update`, `suspend`, `resume`, `terminate`, `resync`.
    pub operation: String,
    /// `QUEUED`, `RUNNING`, `COMPLETED`, `FAILED`.
    pub state: String,
    pub progress: ProgressView,
    pub error: Option<ProcessErrorView>,
    pub session_id: Option<uuid::Uuid>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub steps: Option<Vec<StepView>>,
    pub created_at: i64,
    pub updated_at: i64,
    pub started_at: Option<i64>,
    pub finished_at: Option<i64>,
}

impl ProcessView {
    pub fn new(p: &Process, steps: Option<&[ProcessStep]>) -> Self {
        ProcessView {
            id: p.id.0,
            sp_id: p.provider_id.0,
            service_instance_id: p.service_instance_id.map(|i| i.0),
            se_id: p.se_id.to_string(),
            operation: p.operation.as_str().into(),
            state: p.state.as_str().into(),
            progress: ProgressView { steps_done: p.progress.steps_done, steps_total: p.progress.steps_total, apdus: p.progress.apdus, round_trips: p.progress.round_trips },
            error: p.error.as_ref().map(|e| ProcessErrorView { code: e.code.clone(), message: e.message.clone() }),
            session_id: p.seram_session_id.map(|s| s.0),
            steps: steps.map(|s| {
                s.iter().map(|s| StepView { ordinal: s.ordinal, name: s.name.clone(), state: s.state.as_str().into(), started_at: s.started_at, finished_at: s.finished_at }).collect()
            }),
            created_at: p.created_at,
            updated_at: p.updated_at,
            started_at: p.started_at,
            finished_at: p.finished_at,
        }
    }
}

/// One exchange with the SE, in wire form (as sent and received; secure messaging included).
#[derive(Debug, Clone, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ApduView {
    /// Round trip number within the process.
    pub batch: u32,
    pub seq: u32,
    pub command: String,
    pub response: Option<String>,
    /// Status word, hex (e.g. `9000`).
    pub sw: Option<String>,
    pub at: i64,
}

impl From<&ApduLogEntry> for ApduView {
    fn from(a: &ApduLogEntry) -> Self {
        ApduView {
            batch: a.batch,
            seq: a.seq,
            command: tsm_gp::hex::encode(&a.command),
            response: a.response.as_ref().map(|r| tsm_gp::hex::encode(r)),
            sw: a.sw.map(|s| format!("{s:04X}")),
            at: a.at,
        }
    }
}

#[derive(Debug, Clone, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct AuditView {
    pub id: i64,
    pub at: i64,
    /// The provider the record belongs to; absent for operator-wide records (issuers, SEs).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sp_id: Option<uuid::Uuid>,
    pub actor: String,
    pub action: String,
    pub object_type: String,
    pub object_id: String,
    pub detail: Option<serde_json::Value>,
}

impl From<&AuditEntry> for AuditView {
    fn from(a: &AuditEntry) -> Self {
        AuditView { id: a.id, at: a.at, sp_id: a.provider_id.map(|p| p.0), actor: a.actor.clone(), action: a.action.clone(), object_type: a.object_type.clone(), object_id: a.object_id.clone(), detail: a.detail.clone() }
    }
}
