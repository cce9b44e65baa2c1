//! Secure channel protocols: the parts SCP02 and SCP03 share. Each protocol module offers the
//! host side (a handshake that consumes itself into a session), the card side, and a monitor
//! that checks a recorded exchange with the static keys (used by `tsm trace decode`).

pub mod scp02;
pub mod scp03;

#[cfg(test)]
mod persist_tests;

use crate::apdu::{CommandApdu, ResponseApdu};
use crate::crypto::{CryptoError, SecretKey, SymmetricKey};
use crate::sw::StatusWord;
use std::sync::Arc;
use thiserror::Error;
use zeroize::Zeroizing;

/// Security level of a session: the P1 of EXTERNAL AUTHENTICATE (GPCS 2.3 Table 11-?; Amd D
/// Table 7-?). C-DEC requires C-MAC; R-ENC requires R-MAC and C-DEC.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct SecurityLevel(pub u8);

impl SecurityLevel {
    pub const AUTHENTICATED: Self = Self(0x00);
    pub const C_MAC: Self = Self(0x01);
    pub const C_DEC_C_MAC: Self = Self(0x03);
    pub const C_MAC_R_MAC: Self = Self(0x11);
    pub const C_DEC_C_MAC_R_MAC: Self = Self(0x13);
    pub const ALL: Self = Self(0x33);

    pub fn c_mac(self) -> bool {
        self.0 & 0x01 != 0
    }
    pub fn c_dec(self) -> bool {
        self.0 & 0x02 != 0
    }
    pub fn r_mac(self) -> bool {
        self.0 & 0x10 != 0
    }
    pub fn r_enc(self) -> bool {
        self.0 & 0x20 != 0
    }
    /// Checks the combination rules (C-DEC ⇒ C-MAC, R-ENC ⇒ R-MAC ∧ C-DEC, no unknown bits).
    pub fn validate(self) -> Result<(), ScpError> {
        let ok = self.0 & !0x33 == 0
            && (!self.c_dec() || self.c_mac())
            && (!self.r_enc() || (self.r_mac() && self.c_dec()));
        if ok { Ok(()) } else { Err(ScpError::InvalidSecurityLevel(self.0)) }
    }
}

impl std::fmt::Debug for SecurityLevel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut parts = Vec::new();
        if self.c_mac() { parts.push("C-MAC") }
        if self.c_dec() { parts.push("C-DEC") }
        if self.r_mac() { parts.push("R-MAC") }
        if self.r_enc() { parts.push("R-ENC") }
        if parts.is_empty() { parts.push("AUTHENTICATED") }
        write!(f, "{:02X}({})", self.0, parts.join("+"))
    }
}

impl std::fmt::Display for SecurityLevel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        std::fmt::Debug::fmt(self, f)
    }
}

/// A secure channel protocol with its `i` parameter.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub enum Scp {
    Scp02 { i: u8 },
    Scp03 { i: u8 },
}

impl Scp {
    pub fn id(self) -> u8 {
        match self {
            Scp::Scp02 { .. } => 0x02,
            Scp::Scp03 { .. } => 0x03,
        }
    }
    pub fn i(self) -> u8 {
        match self {
            Scp::Scp02 { i } | Scp::Scp03 { i } => i,
        }
    }
}

impl std::fmt::Display for Scp {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "SCP{:02X} i={:02X}", self.id(), self.i())
    }
}

/// The static key set of a security domain (ENC, MAC, DEK) and its key version number. The keys
/// may live in memory or in an HSM.
#[derive(Clone)]
pub struct StaticKeys {
    pub enc: Arc<dyn SymmetricKey>,
    pub mac: Arc<dyn SymmetricKey>,
    pub dek: Arc<dyn SymmetricKey>,
    pub version: u8,
}

impl StaticKeys {
    pub fn new(enc: SecretKey, mac: SecretKey, dek: SecretKey, version: u8) -> Self {
        StaticKeys { enc: Arc::new(enc), mac: Arc::new(mac), dek: Arc::new(dek), version }
    }
    /// The same key for ENC, MAC and DEK (e.g. the GP test key 40..4F).
    pub fn single(key: SecretKey, version: u8) -> Self {
        StaticKeys::new(key.clone(), key.clone(), key, version)
    }
}

impl std::fmt::Debug for StaticKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let kcv = |k: &Arc<dyn SymmetricKey>| k.kcv().map(|c| crate::hex::encode(&c)).unwrap_or_else(|_| "?".into());
        write!(f, "StaticKeys(v{:02X}, {:?}, kcv enc={} mac={} dek={})", self.version, self.enc.alg(), kcv(&self.enc), kcv(&self.mac), kcv(&self.dek))
    }
}

/// Card behaviours that differ between real cards and hosts, named so that a card profile can
/// switch them. Defaults follow the specifications.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
#[serde(default)]
pub struct ChannelOptions {
    /// SCP03 encryption counter advances only for commands that carry data (some cards);
    /// Amd D says it advances for every command.
    pub scp03_counter_only_with_data: bool,
    /// Host side: with C-DEC and an empty data field, send one encrypted padding block instead
    /// of no data (both are seen in the field; a card accepts both).
    pub encrypt_empty_data: bool,
    /// Host side: keep Le after the MAC when the plain command had one (the default), or drop it.
    pub drop_le: bool,
}

/// Secure channel errors.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum ScpError {
    #[error("card cryptogram does not verify (expected {expected}, card sent {received}): wrong static keys or key version?")]
    CardCryptogram { expected: String, received: String },
    #[error("host cryptogram does not verify")]
    HostCryptogram,
    #[error("card challenge is not the pseudo-random value derived from the sequence counter (expected {expected}, got {received})")]
    CardChallenge { expected: String, received: String },
    #[error("C-MAC does not verify (expected {expected}, got {received})")]
    CMac { expected: String, received: String },
    #[error("R-MAC does not verify (expected {expected}, got {received})")]
    RMac { expected: String, received: String },
    #[error("security level {0:02X} is not valid")]
    InvalidSecurityLevel(u8),
    #[error("security level {level} is not supported by {scp}")]
    UnsupportedLevel { level: SecurityLevel, scp: String },
    #[error("unsupported secure channel: {0}")]
    Unsupported(String),
    #[error("malformed INITIALIZE UPDATE response: {0}")]
    BadInitUpdateResponse(String),
    #[error("card refused {command} with {sw:?}: {meaning}")]
    CardRefused { command: &'static str, sw: StatusWord, meaning: String },
    #[error("command cannot be wrapped: {0}")]
    BadCommand(String),
    #[error("response cannot be unwrapped: {0}")]
    BadResponse(String),
    #[error("decrypted data has no valid padding")]
    BadPadding,
    #[error("key version {requested:02X} not found (card has {available})")]
    UnknownKeyVersion { requested: u8, available: String },
    #[error("secure channel is closed")]
    Closed,
    #[error(transparent)]
    Crypto(#[from] CryptoError),
}

impl ScpError {
    pub fn code(&self) -> &'static str {
        match self {
            ScpError::CardCryptogram { .. } => "scp.card_cryptogram",
            ScpError::HostCryptogram => "scp.host_cryptogram",
            ScpError::CardChallenge { .. } => "scp.card_challenge",
            ScpError::CMac { .. } => "scp.c_mac",
            ScpError::RMac { .. } => "scp.r_mac",
            ScpError::InvalidSecurityLevel(_) => "scp.invalid_level",
            ScpError::UnsupportedLevel { .. } => "scp.unsupported_level",
            ScpError::Unsupported(_) => "scp.unsupported",
            ScpError::BadInitUpdateResponse(_) => "scp.bad_init_update_response",
            ScpError::CardRefused { .. } => "scp.card_refused",
            ScpError::BadCommand(_) => "scp.bad_command",
            ScpError::BadResponse(_) => "scp.bad_response",
            ScpError::BadPadding => "scp.bad_padding",
            ScpError::UnknownKeyVersion { .. } => "scp.unknown_key_version",
            ScpError::Closed => "scp.closed",
            ScpError::Crypto(e) => e.code(),
        }
    }
    /// The status word a card answers with for this error (GPCS / Amd D).
    pub fn card_status(&self) -> StatusWord {
        match self {
            ScpError::HostCryptogram => StatusWord::AUTHENTICATION_FAILED,
            ScpError::CMac { .. } | ScpError::BadPadding => StatusWord::SECURITY_STATUS_NOT_SATISFIED,
            ScpError::InvalidSecurityLevel(_) | ScpError::UnsupportedLevel { .. } => StatusWord::INCORRECT_P1P2,
            ScpError::UnknownKeyVersion { .. } => StatusWord::REFERENCED_DATA_NOT_FOUND,
            ScpError::BadCommand(_) => StatusWord::WRONG_LENGTH,
            _ => StatusWord::SECURITY_STATUS_NOT_SATISFIED,
        }
    }
}

/// Serde for fixed-size byte arrays as hex strings (MAC chaining values in persisted session
/// states).
pub(crate) mod hex_array {
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer, const N: usize>(bytes: &[u8; N], s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&crate::hex::encode(bytes))
    }
    pub fn deserialize<'de, D: Deserializer<'de>, const N: usize>(d: D) -> Result<[u8; N], D::Error> {
        let s = String::deserialize(d)?;
        let v = crate::hex::decode(&s).map_err(serde::de::Error::custom)?;
        v.as_slice().try_into().map_err(|_| serde::de::Error::custom(format!("{} bytes of hex, expected {N}", v.len())))
    }
}

/// Host side of an open secure channel.
pub trait HostChannel: Send {
    fn scp(&self) -> Scp;
    fn level(&self) -> SecurityLevel;
    /// Protects a plain command (class byte gets the secure messaging bit).
    fn wrap(&mut self, cmd: &CommandApdu) -> Result<CommandApdu, ScpError>;
    /// Verifies and strips R-MAC, decrypts R-ENC data. Error status words without data pass through.
    fn unwrap(&mut self, resp: &ResponseApdu) -> Result<ResponseApdu, ScpError>;
    /// Encrypts sensitive data (key values for PUT KEY / STORE DATA) as this protocol requires
    /// (SCP02: 3DES-ECB under the session DEK; SCP03: AES-CBC, zero ICV, under the static DEK).
    /// `data` must be block aligned.
    fn encrypt_sensitive(&self, data: &[u8]) -> Result<Vec<u8>, ScpError>;
}

/// Card side of an open secure channel.
pub trait CardChannel: Send {
    fn scp(&self) -> Scp;
    fn level(&self) -> SecurityLevel;
    /// Verifies C-MAC and decrypts C-DEC data. Commands without the secure messaging class bit
    /// are refused while the level requires C-MAC.
    fn unwrap_command(&mut self, cmd: &CommandApdu) -> Result<CommandApdu, ScpError>;
    /// Adds R-MAC / R-ENC as the level requires.
    fn wrap_response(&mut self, resp: ResponseApdu) -> Result<ResponseApdu, ScpError>;
    /// Decrypts sensitive data sent with `HostChannel::encrypt_sensitive`.
    fn decrypt_sensitive(&self, data: &[u8]) -> Result<Zeroizing<Vec<u8>>, ScpError>;
}
