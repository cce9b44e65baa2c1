//! GP SERAM messages (HTTP REST binding 2.0.0, `gpseram.yaml`): the Handshake Command and
//! Response, the Order and the Report, shared by the device API (`api::seram`, the Remote
//! Agent) and the local agent (`agent`).
//!
//! **Tolerant on input, the schema's names on output.** The published specification
//! contradicts itself in places (the list is in `docs/seram.md`); every spelling it uses is
//! accepted when reading:
//!
//! | on output (schema)                 | also accepted on input                                   |
//! |------------------------------------|----------------------------------------------------------|
//! | `ramCommandType: ramStartCommand`  | `startCommand` (the examples); any letter case           |
//! | `ramCommandType: ramStopCommand`   | `stopCommand` (the examples); any letter case            |
//! | `supportedVersions` (array)        | `supportedVersion` (the example), a single string         |
//! | `supportedTransportProtocols`      | `supportedTransportProtocol` (the description), a string  |
//! | `supportedDataFormats`             | `supportedDataFormat` (the description), a string         |
//! | `chosenDataFormat` *and* `chosenDataProtocol` | either one (property vs. `required` list)      |
//! | `UNGRANTED_ACCESS`                 | `UNGRANDED_ACCESS` (the `errorMsg` description)          |
//! | `seType: eSE`, `uicc`, …           | any letter case; unknown types are kept ([`SeType::Other`]) |
//!
//! APDUs stay text ([`HexApdu`]) when read: one malformed C-APDU (the spec's own example
//! `00A40400OA…` is not hex) must not make the whole order unreadable; the agent reports it
//! when it reaches it. Unknown command and response types are kept
//! ([`RamCommand::Other`], [`RamResponse::Other`]) so the caller decides what to do.

use serde::de::{self, Deserializer};
use serde::ser::{SerializeMap, Serializer};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use std::fmt;
use std::time::Duration;

/// The protocol version this implementation speaks (`version`, gpseram.yaml `info.version`).
pub const SERAM_VERSION: &str = "2.0.0";
/// The one data format of the binding (`dataFormat`).
pub const DATA_FORMAT_JSON: &str = "application/json";
/// The one transport protocol of the binding (`transportProtocol`).
pub const TRANSPORT_HTTPS: &str = "HTTPS";

/// Base path of the endpoints (gpseram.yaml `servers`: `{protocol}://{domain}/gp/seram`).
pub const BASE_PATH: &str = "/gp/seram";
/// Handshake Step endpoint, relative to [`BASE_PATH`] (POST).
pub const HANDSHAKE_PATH: &str = "/handshake";
/// Command Exchange Step endpoint, relative to [`BASE_PATH`] (POST).
pub const REMOTE_MANAGEMENT_PATH: &str = "/remoteManagement";
/// Query parameter carrying the session id on both endpoints.
pub const SESSION_ID_PARAM: &str = "sessionId";

/// Binding "HTTP Polling": the pause before the next request when an order has no `delay`.
/// (The schema's `delay` says `default: 100`; the binding text's 1 s wins, see `docs/seram.md`.)
pub const DEFAULT_PAUSE: Duration = Duration::from_secs(1);
/// Binding "HTTP Polling": a Remote Agent should not hold a long-poll longer than this.
pub const MAX_LONG_POLL: Duration = Duration::from_secs(30);
/// Binding "Transmission Errors": a Local Agent without a response after this closes the
/// connection and opens a new one.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(40);
/// Binding "Transmission Errors": a Local Agent retries for at most this long; a Remote Agent
/// considers the Local Agent lost after the same delay.
pub const RETRY_FOR: Duration = Duration::from_secs(300);

// ---------------------------------------------------------------------------------------------
// Values

/// A hexadecimal APDU (`apdu`: pattern `([0-9A-F]{2})*`), a C-APDU in an order or an R-APDU
/// in a report.
///
/// Kept as text on input: [`HexApdu::decode`] says whether it is hex. Built from bytes it is
/// upper-case hex, as the schema's pattern wants.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(transparent)]
pub struct HexApdu(String);

impl HexApdu {
    /// Upper-case hex of `bytes`.
    pub fn from_bytes(bytes: &[u8]) -> HexApdu {
        HexApdu(tsm_gp::hex::encode(bytes))
    }
    /// The text as received (may not be hex: see [`HexApdu::decode`]).
    pub fn from_text(text: impl Into<String>) -> HexApdu {
        HexApdu(text.into())
    }
    pub fn as_str(&self) -> &str {
        &self.0
    }
    /// The bytes. Lower-case digits are accepted; anything else that is not hex is an error.
    pub fn decode(&self) -> Result<Vec<u8>, tsm_gp::hex::HexError> {
        tsm_gp::hex::decode(&self.0)
    }
    /// Whether the text matches the schema's pattern exactly (upper-case pairs).
    pub fn is_canonical(&self) -> bool {
        self.0.len() & 1 == 0 && self.0.bytes().all(|b| b.is_ascii_digit() || (b'A'..=b'F').contains(&b))
    }
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl fmt::Display for HexApdu {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl From<&[u8]> for HexApdu {
    fn from(b: &[u8]) -> Self {
        HexApdu::from_bytes(b)
    }
}

impl From<Vec<u8>> for HexApdu {
    fn from(b: Vec<u8>) -> Self {
        HexApdu::from_bytes(&b)
    }
}

/// Compares ignoring ASCII case and the characters `_`, `-` and space, so that `eSE`, `ESE`,
/// `UNGRANTED_ACCESS` and `ungrantedAccess` meet.
fn loose_eq(a: &str, b: &str) -> bool {
    let norm = |s: &str| s.chars().filter(|c| !matches!(c, '_' | '-' | ' ')).map(|c| c.to_ascii_lowercase()).collect::<String>();
    norm(a) == norm(b)
}

macro_rules! text_enum {
    (
        $(#[$meta:meta])*
        pub enum $name:ident { $( $(#[$vmeta:meta])* $variant:ident = $wire:literal $(| $alias:literal)* ),* $(,)? }
    ) => {
        $(#[$meta])*
        #[derive(Debug, Clone, PartialEq, Eq, Hash)]
        #[non_exhaustive]
        pub enum $name {
            $( $(#[$vmeta])* $variant, )*
            /// A value this version does not know, kept as received.
            Other(String),
        }

        impl $name {
            /// The schema's spelling.
            pub fn as_str(&self) -> &str {
                match self { $( $name::$variant => $wire, )* $name::Other(s) => s }
            }
            /// Reads any known spelling (letter case, `_`/`-` ignored); unknown text is kept.
            pub fn parse(s: &str) -> $name {
                $( if loose_eq(s, $wire) $(|| loose_eq(s, $alias))* { return $name::$variant; } )*
                $name::Other(s.to_string())
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result { f.write_str(self.as_str()) }
        }

        impl Serialize for $name {
            fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> { s.serialize_str(self.as_str()) }
        }

        impl<'de> Deserialize<'de> for $name {
            fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                Ok($name::parse(&String::deserialize(d)?))
            }
        }
    };
}

text_enum! {
    /// Type of Secure Element (`seType`).
    pub enum SeType {
        /// Embedded SE.
        Ese = "eSE",
        /// Integrated SE.
        Ise = "iSE",
        Uicc = "uicc",
        Euicc = "euicc",
        Ieuicc = "ieuicc",
        Undefined = "undefined",
    }
}

text_enum! {
    /// What the Local Agent says in each report (`localAgentStatusEnum`).
    pub enum LocalAgentStatusEnum {
        /// At least one RAM command of the order was executed.
        Processed = "PROCESSED",
        /// The first request, or the order carried no command.
        Polling = "POLLING",
        /// The SE could not be reached (transmission error, SE gone).
        UnavailableSe = "UNAVAILABLE_SE",
        /// Any other failure.
        UnknownFailure = "UNKNOWN_FAILURE",
        /// The SE Access API refused access.
        UngrantedAccess = "UNGRANTED_ACCESS" | "UNGRANDED_ACCESS",
    }
}

impl LocalAgentStatusEnum {
    /// `UNAVAILABLE_SE`, `UNKNOWN_FAILURE`, `UNGRANTED_ACCESS` (and unknown values).
    pub fn is_error(&self) -> bool {
        !matches!(self, LocalAgentStatusEnum::Processed | LocalAgentStatusEnum::Polling)
    }
}

/// A Secure Element: its type and identifier (`secureElement`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SecureElement {
    pub se_type: SeType,
    /// The identifier of the SE (the TSM's `seId`: CIN/CPLC-derived, or the ICCID).
    pub se_id: String,
    /// A comma-separated list of features supported by the SE (e.g. `SAM`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub se_extra_info: Option<String>,
}

impl SecureElement {
    pub fn new(se_type: SeType, se_id: impl Into<String>) -> SecureElement {
        SecureElement { se_type, se_id: se_id.into(), se_extra_info: None }
    }
}

// ---------------------------------------------------------------------------------------------
// Handshake

/// The Handshake Command (`ramHandshakeCommand`), body of `POST /handshake?sessionId=…`.
///
/// Absent lists mean the spec's defaults ([`HandshakeCommand::transport_protocols`] and the
/// other accessors apply them); an empty list means "none".
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct HandshakeCommand {
    /// The SEs the Local Agent can reach, ordered by preference.
    pub secure_elements: Vec<SecureElement>,
    pub supported_transport_protocols: Option<Vec<String>>,
    pub supported_data_formats: Option<Vec<String>>,
    pub supported_versions: Option<Vec<String>>,
}

impl HandshakeCommand {
    /// What this implementation sends: HTTPS, application/json, 2.0.0.
    pub fn new(secure_elements: Vec<SecureElement>) -> HandshakeCommand {
        HandshakeCommand {
            secure_elements,
            supported_transport_protocols: Some(vec![TRANSPORT_HTTPS.into()]),
            supported_data_formats: Some(vec![DATA_FORMAT_JSON.into()]),
            supported_versions: Some(vec![SERAM_VERSION.into()]),
        }
    }
    /// The transport protocols offered; `["HTTPS"]` when absent.
    pub fn transport_protocols(&self) -> Vec<String> {
        self.supported_transport_protocols.clone().unwrap_or_else(|| vec![TRANSPORT_HTTPS.into()])
    }
    /// The data formats offered; `["application/json"]` when absent.
    pub fn data_formats(&self) -> Vec<String> {
        self.supported_data_formats.clone().unwrap_or_else(|| vec![DATA_FORMAT_JSON.into()])
    }
    /// The versions offered; `["2.0.0"]` when absent.
    pub fn versions(&self) -> Vec<String> {
        self.supported_versions.clone().unwrap_or_else(|| vec![SERAM_VERSION.into()])
    }
}

/// A list that may arrive as one string (`"supportedVersion": "2.0.0"`).
#[derive(Deserialize)]
#[serde(untagged)]
enum OneOrMany {
    One(String),
    Many(Vec<String>),
}

impl OneOrMany {
    fn into_vec(self) -> Vec<String> {
        match self {
            OneOrMany::One(s) => vec![s],
            OneOrMany::Many(v) => v,
        }
    }
}

/// Merges two spellings of one list property; `None` when neither was given.
fn merge_lists(a: Option<OneOrMany>, b: Option<OneOrMany>) -> Option<Vec<String>> {
    match (a, b) {
        (None, None) => None,
        (a, b) => {
            let mut out: Vec<String> = Vec::new();
            for s in a.into_iter().chain(b).flat_map(OneOrMany::into_vec) {
                if !out.contains(&s) {
                    out.push(s);
                }
            }
            Some(out)
        }
    }
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawHandshakeCommand {
    #[serde(default, deserialize_with = "null_as_default")]
    secure_elements: Vec<SecureElement>,
    #[serde(default)]
    supported_transport_protocols: Option<OneOrMany>,
    #[serde(default)]
    supported_transport_protocol: Option<OneOrMany>,
    #[serde(default)]
    supported_data_formats: Option<OneOrMany>,
    #[serde(default)]
    supported_data_format: Option<OneOrMany>,
    #[serde(default)]
    supported_versions: Option<OneOrMany>,
    #[serde(default)]
    supported_version: Option<OneOrMany>,
}

impl<'de> Deserialize<'de> for HandshakeCommand {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let r = RawHandshakeCommand::deserialize(d)?;
        Ok(HandshakeCommand {
            secure_elements: r.secure_elements,
            supported_transport_protocols: merge_lists(r.supported_transport_protocols, r.supported_transport_protocol),
            supported_data_formats: merge_lists(r.supported_data_formats, r.supported_data_format),
            supported_versions: merge_lists(r.supported_versions, r.supported_version),
        })
    }
}

impl Serialize for HandshakeCommand {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut m = s.serialize_map(None)?;
        m.serialize_entry("secureElements", &self.secure_elements)?;
        if let Some(v) = &self.supported_transport_protocols {
            m.serialize_entry("supportedTransportProtocols", v)?;
        }
        if let Some(v) = &self.supported_data_formats {
            m.serialize_entry("supportedDataFormats", v)?;
        }
        if let Some(v) = &self.supported_versions {
            m.serialize_entry("supportedVersions", v)?;
        }
        m.end()
    }
}

/// The Handshake Response (`ramHandshakeResponse`).
///
/// Written with the data format under both `chosenDataFormat` (the property, the example) and
/// `chosenDataProtocol` (the schema's `required` list), so that a client written from either
/// finds it. Read with either; a missing value means the binding's only choice.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HandshakeResponse {
    pub chosen_transport_protocol: String,
    pub chosen_data_format: String,
    pub chosen_version: String,
}

impl Default for HandshakeResponse {
    /// HTTPS, application/json, 2.0.0.
    fn default() -> Self {
        HandshakeResponse {
            chosen_transport_protocol: TRANSPORT_HTTPS.into(),
            chosen_data_format: DATA_FORMAT_JSON.into(),
            chosen_version: SERAM_VERSION.into(),
        }
    }
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawHandshakeResponse {
    #[serde(default)]
    chosen_transport_protocol: Option<String>,
    #[serde(default)]
    chosen_data_format: Option<String>,
    #[serde(default)]
    chosen_data_protocol: Option<String>,
    #[serde(default)]
    chosen_version: Option<String>,
}

impl<'de> Deserialize<'de> for HandshakeResponse {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let r = RawHandshakeResponse::deserialize(d)?;
        let dflt = HandshakeResponse::default();
        Ok(HandshakeResponse {
            chosen_transport_protocol: r.chosen_transport_protocol.unwrap_or(dflt.chosen_transport_protocol),
            chosen_data_format: r.chosen_data_format.or(r.chosen_data_protocol).unwrap_or(dflt.chosen_data_format),
            chosen_version: r.chosen_version.unwrap_or(dflt.chosen_version),
        })
    }
}

impl Serialize for HandshakeResponse {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut m = s.serialize_map(Some(4))?;
        m.serialize_entry("chosenTransportProtocol", &self.chosen_transport_protocol)?;
        m.serialize_entry("chosenDataFormat", &self.chosen_data_format)?;
        m.serialize_entry("chosenDataProtocol", &self.chosen_data_format)?;
        m.serialize_entry("chosenVersion", &self.chosen_version)?;
        m.end()
    }
}

// ---------------------------------------------------------------------------------------------
// Commands and responses

/// One Command of an order (`ramCommand` and its discriminated subtypes).
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum RamCommand {
    /// `ramStartCommand`: the Remote Agent starts the management session. First command.
    Start,
    /// `seRamCommand`: C-APDUs to send to the SE, in order.
    SeRam { list_of_capdu: Vec<HexApdu> },
    /// `notificationCommand`: a UTF-8 string for the Device Application; needs no response.
    Notification { device_app_notification: String },
    /// `ramStopCommand`: the end of the session. No report follows it.
    Stop,
    /// A `ramCommandType` this version does not know, with its other properties.
    Other { ram_command_type: String, properties: Map<String, Value> },
}

impl RamCommand {
    /// The schema's discriminator value.
    pub fn type_name(&self) -> &str {
        match self {
            RamCommand::Start => "ramStartCommand",
            RamCommand::SeRam { .. } => "seRamCommand",
            RamCommand::Notification { .. } => "notificationCommand",
            RamCommand::Stop => "ramStopCommand",
            RamCommand::Other { ram_command_type, .. } => ram_command_type,
        }
    }
    /// An SE RAM command from wire C-APDUs.
    pub fn se_ram<I, B>(capdus: I) -> RamCommand
    where
        I: IntoIterator<Item = B>,
        B: AsRef<[u8]>,
    {
        RamCommand::SeRam { list_of_capdu: capdus.into_iter().map(|b| HexApdu::from_bytes(b.as_ref())).collect() }
    }
    pub fn notification(text: impl Into<String>) -> RamCommand {
        RamCommand::Notification { device_app_notification: text.into() }
    }
}

/// Removes a property by name, ignoring ASCII letter case (`listOfCApdu` finds `listOfCAPDU`).
fn take_prop(map: &mut Map<String, Value>, name: &str) -> Option<Value> {
    if let Some(v) = map.remove(name) {
        return Some(v);
    }
    let key = map.keys().find(|k| k.eq_ignore_ascii_case(name))?.clone();
    map.remove(&key)
}

fn take_string<E: de::Error>(map: &mut Map<String, Value>, name: &str, what: &str) -> Result<String, E> {
    match take_prop(map, name) {
        Some(Value::String(s)) => Ok(s),
        Some(v) => Err(E::custom(format!("{what}: {name} must be a string, got {v}"))),
        None => Err(E::custom(format!("{what}: missing {name}"))),
    }
}

fn take_apdus<E: de::Error>(map: &mut Map<String, Value>, name: &str, what: &str) -> Result<Vec<HexApdu>, E> {
    match take_prop(map, name) {
        Some(Value::Array(items)) => items
            .into_iter()
            .enumerate()
            .map(|(i, v)| match v {
                Value::String(s) => Ok(HexApdu(s)),
                v => Err(E::custom(format!("{what}: {name}[{i}] must be a hex string, got {v}"))),
            })
            .collect(),
        Some(v) => Err(E::custom(format!("{what}: {name} must be an array, got {v}"))),
        None => Err(E::custom(format!("{what}: missing {name}"))),
    }
}

impl<'de> Deserialize<'de> for RamCommand {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let mut map = Map::<String, Value>::deserialize(d)?;
        let ty = take_string::<D::Error>(&mut map, "ramCommandType", "ramCommand")?;
        // The discriminator mapping says ramStartCommand/ramStopCommand, the examples
        // startCommand/stopCommand (docs/seram.md).
        let any = |names: &[&str]| names.iter().any(|n| loose_eq(&ty, n));
        Ok(if any(&["ramStartCommand", "startCommand"]) {
            RamCommand::Start
        } else if any(&["ramStopCommand", "stopCommand"]) {
            RamCommand::Stop
        } else if any(&["seRamCommand", "ramSeCommand"]) {
            RamCommand::SeRam { list_of_capdu: take_apdus(&mut map, "listOfCAPDU", "seRamCommand")? }
        } else if any(&["notificationCommand", "ramNotificationCommand"]) {
            RamCommand::Notification { device_app_notification: take_string(&mut map, "deviceAppNotification", "notificationCommand")? }
        } else {
            RamCommand::Other { ram_command_type: ty, properties: map }
        })
    }
}

impl Serialize for RamCommand {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut m = s.serialize_map(None)?;
        m.serialize_entry("ramCommandType", self.type_name())?;
        match self {
            RamCommand::Start | RamCommand::Stop => {}
            RamCommand::SeRam { list_of_capdu } => m.serialize_entry("listOfCAPDU", list_of_capdu)?,
            RamCommand::Notification { device_app_notification } => m.serialize_entry("deviceAppNotification", device_app_notification)?,
            RamCommand::Other { properties, .. } => {
                for (k, v) in properties {
                    m.serialize_entry(k, v)?;
                }
            }
        }
        m.end()
    }
}

/// One Response of a report (`ramResponse` and its discriminated subtypes).
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum RamResponse {
    /// `seRamResponse`: the R-APDUs answering one SE RAM command, in order (upper-case hex;
    /// an empty string where the SE Access API gave no response).
    SeRam { list_of_rapdu: Vec<HexApdu> },
    /// A `ramResponseType` this version does not know, with its other properties.
    Other { ram_response_type: String, properties: Map<String, Value> },
}

impl RamResponse {
    pub fn type_name(&self) -> &str {
        match self {
            RamResponse::SeRam { .. } => "seRamResponse",
            RamResponse::Other { ram_response_type, .. } => ram_response_type,
        }
    }
    /// An SE RAM response from wire R-APDUs.
    pub fn se_ram<I, B>(rapdus: I) -> RamResponse
    where
        I: IntoIterator<Item = B>,
        B: AsRef<[u8]>,
    {
        RamResponse::SeRam { list_of_rapdu: rapdus.into_iter().map(|b| HexApdu::from_bytes(b.as_ref())).collect() }
    }
    /// The R-APDUs of an SE RAM response.
    pub fn rapdus(&self) -> Option<&[HexApdu]> {
        match self {
            RamResponse::SeRam { list_of_rapdu } => Some(list_of_rapdu),
            RamResponse::Other { .. } => None,
        }
    }
}

impl<'de> Deserialize<'de> for RamResponse {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let mut map = Map::<String, Value>::deserialize(d)?;
        let ty = take_string::<D::Error>(&mut map, "ramResponseType", "ramResponse")?;
        Ok(if loose_eq(&ty, "seRamResponse") {
            RamResponse::SeRam { list_of_rapdu: take_apdus(&mut map, "listOfRAPDU", "seRamResponse")? }
        } else {
            RamResponse::Other { ram_response_type: ty, properties: map }
        })
    }
}

impl Serialize for RamResponse {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut m = s.serialize_map(None)?;
        m.serialize_entry("ramResponseType", self.type_name())?;
        match self {
            RamResponse::SeRam { list_of_rapdu } => m.serialize_entry("listOfRAPDU", list_of_rapdu)?,
            RamResponse::Other { properties, .. } => {
                for (k, v) in properties {
                    m.serialize_entry(k, v)?;
                }
            }
        }
        m.end()
    }
}

// ---------------------------------------------------------------------------------------------
// Order and report

/// The Order (`remoteManagementOrder`): the body of a `/remoteManagement` response. Every
/// property is optional; `{}` or `{"delay": 500}` is a void order (polling).
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RemoteManagementOrder {
    /// Milliseconds the Local Agent waits between this response and its next request; 0 for
    /// none. Absent: [`DEFAULT_PAUSE`]. (Read tolerantly: a negative number is 0, a fraction
    /// is rounded.)
    #[serde(default, skip_serializing_if = "Option::is_none", deserialize_with = "tolerant_delay")]
    pub delay: Option<u64>,
    /// The SE the Local Agent shall send C-APDUs to, from now on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub chosen_secure_element: Option<SecureElement>,
    /// Commands to execute one by one, in order.
    #[serde(default, skip_serializing_if = "Vec::is_empty", deserialize_with = "null_as_default")]
    pub ram_commands: Vec<RamCommand>,
}

impl RemoteManagementOrder {
    /// An order carrying `commands`, with no delay (the Local Agent answers at once).
    pub fn commands(commands: Vec<RamCommand>) -> RemoteManagementOrder {
        RemoteManagementOrder { delay: Some(0), chosen_secure_element: None, ram_commands: commands }
    }
    /// A void order (nothing to do yet) asking for the next poll after `delay_ms`.
    pub fn void(delay_ms: Option<u64>) -> RemoteManagementOrder {
        RemoteManagementOrder { delay: delay_ms, ..Default::default() }
    }
    /// The pause before the next request: `delay` milliseconds, or `default` when absent.
    pub fn pause(&self, default: Duration) -> Duration {
        self.delay.map(Duration::from_millis).unwrap_or(default)
    }
    /// Whether the order carries no command.
    pub fn is_void(&self) -> bool {
        self.ram_commands.is_empty()
    }
    /// The number of SE RAM commands (what `executedSeRamCommands` is compared with).
    pub fn se_ram_count(&self) -> usize {
        self.ram_commands.iter().filter(|c| matches!(c, RamCommand::SeRam { .. })).count()
    }
}

fn tolerant_delay<'de, D: Deserializer<'de>>(d: D) -> Result<Option<u64>, D::Error> {
    Ok(match Option::<Value>::deserialize(d)? {
        None | Some(Value::Null) => None,
        Some(Value::Number(n)) => Some(match (n.as_u64(), n.as_i64(), n.as_f64()) {
            (Some(u), _, _) => u,
            (None, Some(_), _) => 0,
            (None, None, Some(f)) if f > 0.0 => f.round() as u64,
            _ => 0,
        }),
        Some(Value::String(s)) => Some(s.trim().parse::<u64>().map_err(|_| de::Error::custom(format!("delay {s:?} is not a number of milliseconds")))?),
        Some(v) => return Err(de::Error::custom(format!("delay must be a number of milliseconds, got {v}"))),
    })
}

fn null_as_default<'de, D, T>(d: D) -> Result<T, D::Error>
where
    D: Deserializer<'de>,
    T: Deserialize<'de> + Default,
{
    Ok(Option::<T>::deserialize(d)?.unwrap_or_default())
}

/// The status part of a report (`localAgentStatus`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct LocalAgentStatus {
    pub local_agent_status_enum: LocalAgentStatusEnum,
    /// Number of SE RAM commands executed completely; 0 when polling. Smaller than the order's
    /// count when one failed (its partial response is still in `ramResponses`, see
    /// `docs/seram.md`).
    #[serde(default, deserialize_with = "null_as_default")]
    pub executed_se_ram_commands: u32,
    /// What went wrong, with an error status.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error_msg: Option<String>,
}

/// The Report (`remoteManagementReport`): the body of every `POST /remoteManagement`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RemoteManagementReport {
    pub local_agent_status: LocalAgentStatus,
    #[serde(default, skip_serializing_if = "Vec::is_empty", deserialize_with = "null_as_default")]
    pub ram_responses: Vec<RamResponse>,
}

impl RemoteManagementReport {
    /// A void report: `POLLING`, 0 executed (the first request, and the answer to a void order).
    pub fn polling() -> RemoteManagementReport {
        RemoteManagementReport {
            local_agent_status: LocalAgentStatus {
                local_agent_status_enum: LocalAgentStatusEnum::Polling,
                executed_se_ram_commands: 0,
                error_msg: None,
            },
            ram_responses: Vec::new(),
        }
    }
    /// `PROCESSED` with the responses of `executed` SE RAM commands.
    pub fn processed(executed: u32, ram_responses: Vec<RamResponse>) -> RemoteManagementReport {
        RemoteManagementReport {
            local_agent_status: LocalAgentStatus {
                local_agent_status_enum: LocalAgentStatusEnum::Processed,
                executed_se_ram_commands: executed,
                error_msg: None,
            },
            ram_responses,
        }
    }
    /// An error status with its message and whatever responses were collected.
    pub fn failed(status: LocalAgentStatusEnum, executed: u32, ram_responses: Vec<RamResponse>, error_msg: impl Into<String>) -> RemoteManagementReport {
        RemoteManagementReport {
            local_agent_status: LocalAgentStatus { local_agent_status_enum: status, executed_se_ram_commands: executed, error_msg: Some(error_msg.into()) },
            ram_responses,
        }
    }
    pub fn status(&self) -> &LocalAgentStatusEnum {
        &self.local_agent_status.local_agent_status_enum
    }
    pub fn executed(&self) -> u32 {
        self.local_agent_status.executed_se_ram_commands
    }
}
