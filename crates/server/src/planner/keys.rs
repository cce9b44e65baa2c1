//! What the planner asks of the key store. Static keys come back as handles (their operations
//! may run in an HSM); new keys never come back in clear, only wrapped the way PUT KEY and
//! STORE DATA carry them, with their check values.

use super::model::KeysetRef;
use serde::{Deserialize, Serialize};
use thiserror::Error;
use tsm_gp::gp::Aid;
use tsm_gp::scp::StaticKeys;

/// A key of a key set (key identifiers 1, 2, 3 of an SCP key set).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum KeyRole {
    Enc,
    Mac,
    Dek,
}

impl KeyRole {
    pub const ALL: [KeyRole; 3] = [KeyRole::Enc, KeyRole::Mac, KeyRole::Dek];
    /// The key identifier on the card.
    pub fn key_id(self) -> u8 {
        match self {
            KeyRole::Enc => 1,
            KeyRole::Mac => 2,
            KeyRole::Dek => 3,
        }
    }
}

/// How a new key is to be encrypted for the card: under the data encryption key of the secure
/// channel it travels in.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "scheme", rename_all = "snake_case")]
pub enum Wrapping {
    /// SCP03 (Amd D §7.2): AES-CBC, zero ICV, under the static DEK of key set `kvn` of security
    /// domain `sd` (diversified with `kdd` when the issuer diversifies).
    Scp03 {
        sd: Aid,
        kvn: u8,
        #[serde(default, with = "super::model::opt_hex")]
        kdd: Option<Vec<u8>>,
    },
    /// SCP02 (GPCS 2.3 App. E): 3DES-ECB under the session DEK derived from that static DEK and
    /// the session's sequence counter.
    Scp02 {
        sd: Aid,
        kvn: u8,
        #[serde(default, with = "super::model::opt_hex")]
        kdd: Option<Vec<u8>>,
        sequence_counter: u16,
    },
}

/// A new key as the card receives it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WrappedKey {
    /// The key encrypted as [`Wrapping`] says.
    #[serde(with = "tsm_gp::hex::serde")]
    pub encrypted: Vec<u8>,
    /// Length of the clear key in bytes.
    pub key_len: u8,
    /// Key check value (3 bytes: AES of `01`×16, 3DES of `00`×8).
    #[serde(with = "tsm_gp::hex::serde")]
    pub kcv: Vec<u8>,
}

/// A key store failure.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum KeyError {
    #[error("no key set for {0}")]
    NotFound(String),
    /// The keys are diversified and the card's KDD is not known yet (the planner then reads it
    /// from INITIALIZE UPDATE before asking again).
    #[error("the keys of {0} are diversified: the card's KDD is needed")]
    KddRequired(String),
    #[error("key store: {0}")]
    Store(String),
    /// The key store cannot do what the plan needs, and asking again will not change that (a
    /// token without a wrapping mechanism, a key that may not be wrapped): the plan fails,
    /// where [`KeyError::Store`] is a failure worth retrying.
    #[error("key store: {0}")]
    Unsupported(String),
}

impl KeyError {
    pub fn code(&self) -> &'static str {
        match self {
            KeyError::NotFound(_) => "keys.not_found",
            KeyError::KddRequired(_) => "keys.kdd_required",
            KeyError::Store(_) => "keys.store",
            KeyError::Unsupported(_) => "keys.unsupported",
        }
    }
}

/// The key store as the planner sees it.
pub trait KeyProvider {
    /// Static keys of the ISD's key set `kvn` (0: the card's default one), diversified with the
    /// card's `kdd` when the issuer diversifies. `keys.version` is what INITIALIZE UPDATE asks for.
    fn isd_keys(&self, kvn: u8, kdd: Option<&[u8]>) -> Result<StaticKeys, KeyError>;
    /// Static keys of a supplementary security domain's key set `kvn`.
    fn sd_keys(&self, sd: &Aid, kvn: u8) -> Result<StaticKeys, KeyError>;
    /// One key of a new key set, encrypted for the card as `wrapping` says, with its KCV.
    fn wrap_new_key(&self, keyset: &KeysetRef, role: KeyRole, wrapping: &Wrapping) -> Result<WrappedKey, KeyError>;
    /// Unpredictable bytes (host challenges).
    fn random(&mut self, buf: &mut [u8]);
}
