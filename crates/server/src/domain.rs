//! The TSM's entities as Rust types, shared by the API, the store and the planner
//! (`docs/design/server.md`, "Domain (tables)").
//!
//! JSON conventions: field names are `snake_case`; identifiers are UUID strings (the SE id is
//! the CIN/CPLC-derived `seId` of SERAM); byte strings (AIDs, hashes, KDD) are upper-case hex;
//! times are Unix milliseconds (`i64`). Lifecycle *states* are spelled as in the design note
//! (`NOT_DEPLOYED`, `QUEUED`...); other enumerations (carrier, operation, SD kind) are lower
//! case. Every enumeration rejects unknown values on input (serde and [`std::str::FromStr`]),
//! so that a typo in a request or a corrupt row is an error rather than a silent default.

use serde::{Deserialize, Serialize};
use std::fmt;
use std::str::FromStr;
use tsm_gp::crypto::KeyAlg;
use tsm_gp::crypto::diversify::Diversification;

pub use crate::keys::KeyId;

/// The current time as Unix milliseconds (the unit of every time column).
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// An input value that is not valid for a domain type.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid {what}: {detail}")]
pub struct DomainError {
    pub what: &'static str,
    pub detail: String,
}

impl DomainError {
    pub fn code(&self) -> &'static str {
        "domain.invalid"
    }
    fn new(what: &'static str, detail: impl Into<String>) -> Self {
        DomainError { what, detail: detail.into() }
    }
}

macro_rules! uuid_id {
    ($(#[$m:meta])* $name:ident) => {
        $(#[$m])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
        #[serde(transparent)]
        pub struct $name(pub uuid::Uuid);

        impl $name {
            /// A fresh random (v4) identifier.
            pub fn new() -> Self {
                $name(uuid::Uuid::new_v4())
            }
        }
        impl Default for $name {
            fn default() -> Self {
                Self::new()
            }
        }
        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                // Hyphenated lower case: the form stored in the database.
                fmt::Display::fmt(&self.0.hyphenated(), f)
            }
        }
        impl FromStr for $name {
            type Err = DomainError;
            fn from_str(s: &str) -> Result<Self, DomainError> {
                uuid::Uuid::parse_str(s).map($name).map_err(|e| DomainError::new(stringify!($name), e.to_string()))
            }
        }
    };
}

uuid_id!(/// A service provider (tenant).
    ProviderId);
uuid_id!(/// A provider API token.
    TokenId);
uuid_id!(/// An SE issuer.
    IssuerId);
uuid_id!(/// A security domain on an SE.
    SecurityDomainId);
uuid_id!(/// A keyset (references into the key store).
    KeysetId);
uuid_id!(/// An uploaded load file (CAP).
    LoadFileId);
uuid_id!(/// A service (BSI TR-03165).
    ServiceId);
uuid_id!(/// A version of a service.
    ServiceVersionId);
uuid_id!(/// A flavor of a service version.
    FlavorId);
uuid_id!(/// An application configuration of a flavor.
    ApplicationConfigId);
uuid_id!(/// A personalization script.
    PersoScriptId);
uuid_id!(/// A service instance (a service on one SE).
    ServiceInstanceId);
uuid_id!(/// A process (one requested operation).
    ProcessId);
uuid_id!(/// A SERAM session.
    SeramSessionId);
uuid_id!(/// An entry of the callbacks outbox.
    CallbackId);

/// The identifier of a secure element: the CIN/CPLC-derived `seId` of SERAM (1–64 characters
/// of `A–Z a–z 0–9 . _ : -`).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(transparent)]
pub struct SeId(String);

impl SeId {
    pub fn new(s: impl Into<String>) -> Result<Self, DomainError> {
        let s = s.into();
        let ok = !s.is_empty()
            && s.len() <= 64
            && s.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b':' | b'-'));
        if ok { Ok(SeId(s)) } else { Err(DomainError::new("se id", format!("{s:?}: 1-64 characters of A-Z a-z 0-9 . _ : -"))) }
    }
    pub fn as_str(&self) -> &str {
        &self.0
    }
}
impl fmt::Display for SeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}
impl FromStr for SeId {
    type Err = DomainError;
    fn from_str(s: &str) -> Result<Self, DomainError> {
        SeId::new(s)
    }
}
impl<'de> Deserialize<'de> for SeId {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        SeId::new(String::deserialize(d)?).map_err(serde::de::Error::custom)
    }
}

/// An application identifier (ISO 7816-5: 5 to 16 bytes), hex in JSON.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(transparent)]
pub struct Aid(#[serde(with = "tsm_gp::hex::serde")] Vec<u8>);

impl Aid {
    pub fn new(bytes: &[u8]) -> Result<Self, DomainError> {
        if (5..=16).contains(&bytes.len()) {
            Ok(Aid(bytes.to_vec()))
        } else {
            Err(DomainError::new("AID", format!("{} bytes, an AID has 5 to 16", bytes.len())))
        }
    }
    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }
    pub fn to_hex(&self) -> String {
        tsm_gp::hex::encode(&self.0)
    }
}
impl fmt::Debug for Aid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Aid({})", self.to_hex())
    }
}
impl fmt::Display for Aid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_hex())
    }
}
impl FromStr for Aid {
    type Err = DomainError;
    fn from_str(s: &str) -> Result<Self, DomainError> {
        let b = tsm_gp::hex::decode(s).map_err(|e| DomainError::new("AID", e.to_string()))?;
        Aid::new(&b)
    }
}
impl<'de> Deserialize<'de> for Aid {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        String::deserialize(d)?.parse().map_err(serde::de::Error::custom)
    }
}

/// An enumeration stored as text: serde names, `as_str` and a strict `FromStr` from one table.
macro_rules! text_enum {
    ($(#[$m:meta])* $name:ident { $($(#[$vm:meta])* $variant:ident = $text:literal),+ $(,)? }) => {
        $(#[$m])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
        pub enum $name {
            $($(#[$vm])* #[serde(rename = $text)] $variant),+
        }
        impl $name {
            pub const ALL: &'static [$name] = &[$($name::$variant),+];
            pub fn as_str(self) -> &'static str {
                match self { $($name::$variant => $text),+ }
            }
        }
        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.as_str())
            }
        }
        impl FromStr for $name {
            type Err = DomainError;
            fn from_str(s: &str) -> Result<Self, DomainError> {
                match s {
                    $($text => Ok($name::$variant),)+
                    other => Err(DomainError::new(stringify!($name), format!("unknown value {other:?} (expected one of: {})", [$($text),+].join(", ")))),
                }
            }
        }
    };
}

text_enum!(
    /// Where the SE sits.
    Carrier { Uicc = "uicc", Microsd = "microsd", Ese = "ese" }
);

text_enum!(
    /// Issuer or supplementary security domain.
    SdKind { Isd = "isd", Ssd = "ssd" }
);

text_enum!(
    /// The state of a service instance (BSI TR-03165 life cycle, trimmed).
    ServiceInstanceState {
        NotDeployed = "NOT_DEPLOYED",
        Installed = "INSTALLED",
        Personalized = "PERSONALIZED",
        Activated = "ACTIVATED",
        Operational = "OPERATIONAL",
        Suspended = "SUSPENDED",
        InError = "IN_ERROR",
    }
);

text_enum!(
    /// The operation a process carries out.
    Operation { Deploy = "deploy", Update = "update", Suspend = "suspend", Resume = "resume", Terminate = "terminate", Resync = "resync" }
);

text_enum!(
    /// The state of a process.
    ProcessState { Queued = "QUEUED", Running = "RUNNING", Completed = "COMPLETED", Failed = "FAILED" }
);

impl ProcessState {
    /// A process in a final state never changes again.
    pub fn is_final(self) -> bool {
        matches!(self, ProcessState::Completed | ProcessState::Failed)
    }
}

text_enum!(
    /// The state of one step of a process.
    StepState { Pending = "PENDING", Running = "RUNNING", Completed = "COMPLETED", Failed = "FAILED", Skipped = "SKIPPED" }
);

text_enum!(
    /// The state of a SERAM session.
    SeramSessionState {
        /// Created by the server, the phone has not shaken hands yet.
        Created = "CREATED",
        /// Handshake done; orders and reports flow.
        Active = "ACTIVE",
        Closed = "CLOSED",
        Expired = "EXPIRED",
    }
);

text_enum!(
    /// How a keyset's keys are found.
    KeysetKind {
        /// ENC/MAC/DEK are key ids in the key store.
        Stored = "stored",
        /// The card keys are diversified from a master keyset with the card's KDD.
        Diversified = "diversified",
    }
);

/// The text form of a diversification method (database column and JSON).
pub fn diversification_str(d: Diversification) -> &'static str {
    match d {
        Diversification::None => "none",
        Diversification::EmvCps11 => "emv-cps11",
        Diversification::Visa2 => "visa2",
        Diversification::Kdf3 => "kdf3",
    }
}

/// The text form of a key algorithm (the serde name of [`KeyAlg`]).
pub fn key_alg_str(alg: KeyAlg) -> &'static str {
    match alg {
        KeyAlg::Des3_2k => "des3-2k",
        KeyAlg::Des3_3k => "des3-3k",
        KeyAlg::Aes128 => "aes128",
        KeyAlg::Aes192 => "aes192",
        KeyAlg::Aes256 => "aes256",
        KeyAlg::Sm4 => "sm4",
    }
}

/// Parses [`key_alg_str`]'s output.
pub fn parse_key_alg(s: &str) -> Result<KeyAlg, DomainError> {
    [KeyAlg::Des3_2k, KeyAlg::Des3_3k, KeyAlg::Aes128, KeyAlg::Aes192, KeyAlg::Aes256, KeyAlg::Sm4]
        .into_iter()
        .find(|a| key_alg_str(*a) == s)
        .ok_or_else(|| DomainError::new("key algorithm", format!("unknown value {s:?}")))
}

/// Parses [`diversification_str`]'s output (strictly).
pub fn parse_diversification(s: &str) -> Result<Diversification, DomainError> {
    [Diversification::None, Diversification::EmvCps11, Diversification::Visa2, Diversification::Kdf3]
        .into_iter()
        .find(|d| diversification_str(*d) == s)
        .ok_or_else(|| DomainError::new("diversification", format!("unknown value {s:?} (none, emv-cps11, visa2, kdf3)")))
}

/// A service provider (tenant). Its API tokens are [`ApiToken`]s (hashes only).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServiceProvider {
    pub id: ProviderId,
    pub name: String,
    pub callback_url: Option<String>,
    pub created_at: i64,
    pub updated_at: i64,
}

/// A provider API token: only its hash is kept (SHA-256, hex); the token itself is shown once.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ApiToken {
    pub id: TokenId,
    pub provider_id: ProviderId,
    pub label: String,
    #[serde(skip_serializing)]
    pub token_hash: String,
    pub created_at: i64,
    pub expires_at: Option<i64>,
    pub revoked_at: Option<i64>,
    pub last_used_at: Option<i64>,
}

/// An SE issuer: its master keyset and how card keys are diversified from it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SeIssuer {
    pub id: IssuerId,
    pub name: String,
    pub master_keyset_id: Option<KeysetId>,
    pub diversification: Diversification,
    pub created_at: i64,
}

/// A secure element and what the TSM knows of it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SecureElement {
    pub id: SeId,
    pub iccid: Option<String>,
    pub carrier: Carrier,
    /// Card profile name (`tsm_gp::profile`).
    pub profile: String,
    pub issuer_id: Option<IssuerId>,
    pub isd_aid: Aid,
    pub isd_keyset_id: Option<KeysetId>,
    /// Secure channel protocol (2 or 3) and its `i` parameter, once known.
    pub scp: Option<u8>,
    pub scp_i: Option<u8>,
    /// The last sequence counter seen, and whether it is known to be current (no other party
    /// used the card since).
    pub sequence_counter: Option<u32>,
    pub sequence_counter_current: bool,
    /// Key diversification data (first 10 bytes of INITIALIZE UPDATE's answer).
    #[serde(with = "opt_hex", default)]
    pub kdd: Option<Vec<u8>>,
    /// The registry as last read from the card (GET STATUS), as JSON.
    pub registry: Option<serde_json::Value>,
    pub registry_read_at: Option<i64>,
    pub created_at: i64,
    pub updated_at: i64,
}

/// A security domain on an SE.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SecurityDomain {
    pub id: SecurityDomainId,
    pub se_id: SeId,
    pub aid: Aid,
    pub kind: SdKind,
    /// The provider owning an SSD; `None` for the ISD and TSM-owned SSDs.
    pub provider_id: Option<ProviderId>,
    pub keyset_id: Option<KeysetId>,
    pub memory_quota: Option<u64>,
    /// GP life cycle byte (GPCS 2.3 §11.1.1), once known.
    pub life_cycle: Option<u8>,
    pub created_at: i64,
    pub updated_at: i64,
}

/// Where a keyset's keys are.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum KeysetSource {
    /// The card keys themselves are in the key store.
    Stored { enc: KeyId, mac: KeyId, dek: KeyId },
    /// The card keys are diversified from a master keyset with the SE's KDD.
    Diversified {
        master_keyset_id: KeysetId,
        #[serde(with = "diversification_serde")]
        method: Diversification,
    },
}

impl KeysetSource {
    pub fn kind(&self) -> KeysetKind {
        match self {
            KeysetSource::Stored { .. } => KeysetKind::Stored,
            KeysetSource::Diversified { .. } => KeysetKind::Diversified,
        }
    }
}

/// A keyset: key version number, algorithm and where the keys are.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Keyset {
    pub id: KeysetId,
    pub kvn: u8,
    pub alg: KeyAlg,
    pub source: KeysetSource,
    pub created_at: i64,
}

/// Load file data block hashes, with and without the Descriptor component.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LoadFileHashes {
    #[serde(with = "tsm_gp::hex::serde")]
    pub sha1: Vec<u8>,
    #[serde(with = "tsm_gp::hex::serde")]
    pub sha256: Vec<u8>,
    #[serde(with = "tsm_gp::hex::serde")]
    pub sha1_without_descriptor: Vec<u8>,
    #[serde(with = "tsm_gp::hex::serde")]
    pub sha256_without_descriptor: Vec<u8>,
}

/// An uploaded load file. The CAP bytes are fetched separately
/// (`store.load_files().cap_bytes(..)`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LoadFile {
    pub id: LoadFileId,
    pub provider_id: ProviderId,
    pub package_aid: Aid,
    pub version: String,
    pub size: u64,
    pub hashes: LoadFileHashes,
    pub applet_aids: Vec<Aid>,
    pub created_at: i64,
}

/// A service (BSI TR-03165): what a provider offers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Service {
    pub id: ServiceId,
    pub provider_id: ProviderId,
    pub name: String,
    pub description: Option<String>,
    pub created_at: i64,
}

/// A version of a service, bound to one load file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServiceVersion {
    pub id: ServiceVersionId,
    pub provider_id: ProviderId,
    pub service_id: ServiceId,
    pub version: String,
    pub load_file_id: LoadFileId,
    pub created_at: i64,
}

/// A flavor: a variant of a service version for some SEs (carrier, profile), with the SSD
/// quota it needs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Flavor {
    pub id: FlavorId,
    pub provider_id: ProviderId,
    pub service_version_id: ServiceVersionId,
    pub name: String,
    pub carrier: Option<Carrier>,
    pub profile: Option<String>,
    pub memory_quota: Option<u64>,
    pub created_at: i64,
}

/// One application instance to create for a flavor: INSTALL [for install and make selectable].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ApplicationConfig {
    pub id: ApplicationConfigId,
    pub provider_id: ProviderId,
    pub flavor_id: FlavorId,
    /// Order of installation within the flavor.
    pub ordinal: u32,
    /// Executable module (applet class) AID in the load file.
    pub module_aid: Aid,
    pub instance_aid: Aid,
    #[serde(with = "tsm_gp::hex::serde")]
    pub privileges: Vec<u8>,
    #[serde(with = "tsm_gp::hex::serde")]
    pub install_params: Vec<u8>,
    pub make_selectable: bool,
    pub created_at: i64,
}

/// One STORE DATA block of a personalization script.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PersoBlock {
    #[serde(with = "tsm_gp::hex::serde")]
    pub data: Vec<u8>,
    /// The block holds secrets: encrypted under the SD's data key before it leaves the TSM.
    #[serde(default)]
    pub encrypt: bool,
}

/// A personalization script of an application: STORE DATA blocks in order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PersonalizationScript {
    pub id: PersoScriptId,
    pub provider_id: ProviderId,
    pub application_config_id: ApplicationConfigId,
    pub ordinal: u32,
    pub name: String,
    pub blocks: Vec<PersoBlock>,
    pub created_at: i64,
}

/// A service on one SE.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServiceInstance {
    pub id: ServiceInstanceId,
    pub provider_id: ProviderId,
    pub service_id: ServiceId,
    pub service_version_id: ServiceVersionId,
    pub flavor_id: FlavorId,
    pub se_id: SeId,
    pub state: ServiceInstanceState,
    pub created_at: i64,
    pub updated_at: i64,
}

/// Progress counters of a process.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Progress {
    pub steps_done: u32,
    pub steps_total: u32,
    pub apdus: u32,
    pub round_trips: u32,
}

/// Why a process failed: a stable code and a message.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProcessError {
    pub code: String,
    pub message: String,
}

/// One requested operation on one SE.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Process {
    pub id: ProcessId,
    pub provider_id: ProviderId,
    pub service_instance_id: Option<ServiceInstanceId>,
    pub se_id: SeId,
    pub operation: Operation,
    pub state: ProcessState,
    pub progress: Progress,
    pub error: Option<ProcessError>,
    /// The planner's serialized state (no secrets).
    pub planner_state: Option<serde_json::Value>,
    pub seram_session_id: Option<SeramSessionId>,
    /// Optimistic concurrency: incremented by every update.
    pub version: i64,
    pub created_at: i64,
    pub updated_at: i64,
    pub started_at: Option<i64>,
    pub finished_at: Option<i64>,
}

/// One step of a process.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProcessStep {
    pub process_id: ProcessId,
    pub ordinal: u32,
    pub name: String,
    pub state: StepState,
    pub started_at: Option<i64>,
    pub finished_at: Option<i64>,
}

/// One exchange with the SE, in wire form only.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ApduLogEntry {
    pub process_id: ProcessId,
    /// Round trip (batch) number within the process.
    pub batch: u32,
    /// Position within the batch.
    pub seq: u32,
    #[serde(with = "tsm_gp::hex::serde")]
    pub command: Vec<u8>,
    #[serde(with = "opt_hex", default)]
    pub response: Option<Vec<u8>>,
    pub sw: Option<u16>,
    pub at: i64,
}

/// A SERAM session between the server and a phone's local agent.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SeramSession {
    pub id: SeramSessionId,
    pub se_id: SeId,
    pub process_id: Option<ProcessId>,
    pub state: SeramSessionState,
    /// The outstanding order (JSON as sent) and its sequence number.
    pub order: Option<serde_json::Value>,
    pub order_seq: i64,
    /// Hash (hex) of the last accepted report.
    pub last_report_hash: Option<String>,
    pub last_activity: i64,
    pub created_at: i64,
    /// Optimistic concurrency, as for processes.
    pub version: i64,
}

/// The lease that serializes operations on one SE.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SeLease {
    pub se_id: SeId,
    /// Node id + session (e.g. `node-1/3f2a...`).
    pub holder: String,
    pub acquired_at: i64,
    pub expires_at: i64,
}

/// One append-only audit record.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AuditEntry {
    pub id: i64,
    pub at: i64,
    /// Who: `provider:<id>`, `admin:<name>`, `node:<id>`...
    pub actor: String,
    pub provider_id: Option<ProviderId>,
    pub action: String,
    pub object_type: String,
    pub object_id: String,
    pub detail: Option<serde_json::Value>,
}

/// A process result to post to a provider until acknowledged.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CallbackOutboxEntry {
    pub id: CallbackId,
    pub provider_id: ProviderId,
    pub process_id: ProcessId,
    pub url: String,
    pub payload: serde_json::Value,
    pub attempts: u32,
    pub next_attempt_at: i64,
    pub delivered_at: Option<i64>,
    pub last_error: Option<String>,
    pub created_at: i64,
}

mod opt_hex {
    use serde::{Deserialize, Deserializer, Serializer};
    pub fn serialize<S: Serializer>(v: &Option<Vec<u8>>, s: S) -> Result<S::Ok, S::Error> {
        match v {
            Some(b) => s.serialize_str(&tsm_gp::hex::encode(b)),
            None => s.serialize_none(),
        }
    }
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Vec<u8>>, D::Error> {
        Option::<String>::deserialize(d)?
            .map(|s| tsm_gp::hex::decode(&s).map_err(serde::de::Error::custom))
            .transpose()
    }
}

/// Serde for [`Diversification`] with the strict names of [`diversification_str`].
pub mod diversification_serde {
    use super::*;
    pub fn serialize<S: serde::Serializer>(d: &Diversification, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(diversification_str(*d))
    }
    pub fn deserialize<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Diversification, D::Error> {
        parse_diversification(&String::deserialize(d)?).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn states_round_trip_and_reject_unknown() {
        for s in ServiceInstanceState::ALL {
            assert_eq!(s.as_str().parse::<ServiceInstanceState>().unwrap(), *s);
            let j = serde_json::to_string(s).unwrap();
            assert_eq!(j, format!("\"{}\"", s.as_str()));
            assert_eq!(serde_json::from_str::<ServiceInstanceState>(&j).unwrap(), *s);
        }
        assert!("DEPLOYED".parse::<ServiceInstanceState>().is_err());
        assert!(serde_json::from_str::<ProcessState>("\"queued\"").is_err());
        assert!(serde_json::from_str::<Operation>("\"install\"").is_err());
        assert_eq!(serde_json::to_string(&Carrier::Microsd).unwrap(), "\"microsd\"");
    }

    #[test]
    fn ids_and_aids() {
        let p = ProviderId::new();
        assert_eq!(p.to_string().parse::<ProviderId>().unwrap(), p);
        assert!("nope".parse::<ProviderId>().is_err());
        assert!(SeId::new("").is_err() && SeId::new("a b").is_err() && SeId::new("CIN-4711:x").is_ok());
        let a: Aid = "A000000151000000".parse().unwrap();
        assert_eq!(serde_json::to_string(&a).unwrap(), "\"A000000151000000\"");
        assert!("A0000001".parse::<Aid>().is_err());
        assert!(serde_json::from_str::<Aid>("\"A0\"").is_err());
    }

    #[test]
    fn keyset_source_json() {
        let s = KeysetSource::Diversified { master_keyset_id: KeysetId::new(), method: Diversification::EmvCps11 };
        let j = serde_json::to_value(&s).unwrap();
        assert_eq!(j["kind"], "diversified");
        assert_eq!(j["method"], "emv-cps11");
        assert_eq!(serde_json::from_value::<KeysetSource>(j).unwrap(), s);
        assert!(serde_json::from_str::<KeysetSource>(r#"{"kind":"diversified","master_keyset_id":"00000000-0000-0000-0000-000000000000","method":"emv"}"#).is_err());
        for a in [KeyAlg::Des3_2k, KeyAlg::Aes256, KeyAlg::Sm4] {
            assert_eq!(parse_key_alg(key_alg_str(a)).unwrap(), a);
            assert_eq!(serde_json::to_string(&a).unwrap(), format!("\"{}\"", key_alg_str(a)));
        }
    }
}
