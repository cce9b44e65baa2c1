//! The key store: where static keys live and the only place their values are used
//! (`docs/design/server.md`, "Key store contract").
//!
//! Two implementations: [`SoftwareKeyStore`] (values sealed with `tsm_gp::crypto::seal` under a
//! 32-byte master key, kept in the database's `key_material` table) and [`Pkcs11KeyStore`]
//! (token objects in an HSM through `cryptoki`). Handles are `Arc<dyn SymmetricKey>` and plug
//! straight into [`tsm_gp::scp::StaticKeys`].
//!
//! ## Synchronous trait
//!
//! The trait is synchronous, as the design note fixes it: the planner is pure, synchronous
//! logic and asks for handles and wrapped keys in the middle of building a batch; PKCS#11 calls
//! block anyway. The software store's database access is therefore done by a dedicated worker
//! thread with its own small Tokio runtime and its own connection pool (see
//! [`software`]): a call sends a request and blocks on the answer, which is sound from plain
//! threads, from `spawn_blocking`, and even from inside a Tokio task on either runtime flavour
//! (it never blocks on the caller's runtime, so it cannot deadlock). From async code, prefer
//! `tokio::task::spawn_blocking` around key store calls so that a slow HSM or database does
//! not stall a runtime worker.

pub mod pkcs11;
pub mod software;

use std::fmt;
use std::sync::Arc;
use tsm_gp::crypto::diversify::{Diversification, KeyRole};
use tsm_gp::crypto::{CryptoError, KeyAlg, SymmetricKey};

pub use pkcs11::{Pkcs11KeyStore, Pkcs11Options};
pub use software::SoftwareKeyStore;

/// The name of a key in the store: `/`-separated segments of `A–Z a–z 0–9 . _ -`
/// (e.g. `se/<seId>/isd/30/enc`, `issuer/<id>/master/enc`), at most 200 characters.
/// The first segment is the scope; keys under `issuer/` are master keys (never wrapped out).
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize)]
#[serde(transparent)]
pub struct KeyId(String);

impl KeyId {
    pub const MAX_LEN: usize = 200;

    pub fn new(s: impl Into<String>) -> Result<Self, KeyStoreError> {
        let s = s.into();
        let bad = |why: &str| Err(KeyStoreError::InvalidKeyId { id: s.clone(), reason: why.to_string() });
        if s.is_empty() || s.len() > Self::MAX_LEN {
            return bad("must be 1 to 200 characters");
        }
        let segs: Vec<&str> = s.split('/').collect();
        if segs.len() < 2 {
            return bad("needs a scope and a name, e.g. se/<seId>/isd/30/enc");
        }
        if segs.iter().any(|g| g.is_empty() || *g == "." || *g == "..") {
            return bad("empty, '.' or '..' segment");
        }
        if !s.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'/' | b'.' | b'_' | b'-')) {
            return bad("only A-Z a-z 0-9 . _ - and / are allowed");
        }
        Ok(KeyId(s))
    }
    pub fn as_str(&self) -> &str {
        &self.0
    }
    /// The first segment (`se`, `issuer`, `sp`, `tsm`...).
    pub fn scope(&self) -> &str {
        self.0.split('/').next().unwrap_or("")
    }
    /// Issuer master keys only diversify: they are never wrapped out of the store.
    pub fn is_master(&self) -> bool {
        self.scope() == "issuer"
    }
}

impl fmt::Debug for KeyId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "KeyId({})", self.0)
    }
}
impl fmt::Display for KeyId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}
impl std::str::FromStr for KeyId {
    type Err = KeyStoreError;
    fn from_str(s: &str) -> Result<Self, KeyStoreError> {
        KeyId::new(s)
    }
}
impl<'de> serde::Deserialize<'de> for KeyId {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        KeyId::new(String::deserialize(d)?).map_err(serde::de::Error::custom)
    }
}

/// What the store tells about a key: never its value.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct KeyInfo {
    pub alg: KeyAlg,
    /// Key check value (GPCS 2.3 §11.8.2.3 for 3DES, Amd D §7.2 for AES).
    #[serde(with = "kcv_hex")]
    pub kcv: [u8; 3],
}

mod kcv_hex {
    use serde::{Deserialize, Deserializer, Serializer};
    pub fn serialize<S: Serializer>(k: &[u8; 3], s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&tsm_gp::hex::encode(k))
    }
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<[u8; 3], D::Error> {
        let v = tsm_gp::hex::decode(&String::deserialize(d)?).map_err(serde::de::Error::custom)?;
        v.try_into().map_err(|_| serde::de::Error::custom("a KCV has 3 bytes"))
    }
}

/// The key that encrypts a key value for the card.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WrappingKey {
    /// A key held in the store under this id.
    Stored(KeyId),
    /// A card key diversified from a master key with the card's KDD (the same derivation as
    /// [`KeyStore::diversify`]).
    Diversified { master: KeyId, method: Diversification, kdd: Vec<u8>, role: KeyRole },
}

/// How [`KeyStore::wrap`] encrypts a key value, as PUT KEY / STORE DATA carry it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Wrapping {
    /// SCP03 (Amd D §7.2): AES-CBC with a zero ICV under the static DEK. Values that are not a
    /// block multiple are padded with zero bytes (as PKCS#11 CKM_AES_CBC wrapping does); the
    /// key length travels in the PUT KEY key component.
    Scp03 { dek: WrappingKey },
    /// SCP02 (GPCS 2.3 App. E.4.1): 3DES-ECB under the session DEK, itself
    /// 3DES-CBC(static DEK, zero ICV, `0181 ‖ sequence counter ‖ 00*12`). With `i` b1 = 0 (one
    /// base key) the base key is the ENC key: pass it as `dek`.
    Scp02 { dek: WrappingKey, sequence_counter: u16 },
}

impl Wrapping {
    pub fn dek(&self) -> &WrappingKey {
        match self {
            Wrapping::Scp03 { dek } | Wrapping::Scp02 { dek, .. } => dek,
        }
    }
}

/// Key store errors. Messages name the key and never show key values.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum KeyStoreError {
    #[error("invalid key id {id:?}: {reason}")]
    InvalidKeyId { id: String, reason: String },
    #[error("no key {0} in the key store")]
    NotFound(KeyId),
    #[error("key {0} already exists")]
    AlreadyExists(KeyId),
    #[error("a {alg:?} key has {expected} bytes, got {got}")]
    InvalidValue { alg: KeyAlg, expected: usize, got: usize },
    #[error("{op} is not supported: {detail}")]
    Unsupported { op: &'static str, detail: String },
    #[error("key {0} may not leave the store, not even wrapped")]
    NotWrappable(KeyId),
    #[error("stored value of key {0} does not verify (wrong master key, or the row was altered)")]
    BadSeal(KeyId),
    #[error("key store backend: {0}")]
    Backend(String),
    #[error("PKCS#11: {0}")]
    Pkcs11(String),
    #[error(transparent)]
    Crypto(#[from] CryptoError),
}

impl KeyStoreError {
    pub fn code(&self) -> &'static str {
        match self {
            KeyStoreError::InvalidKeyId { .. } => "keys.invalid_id",
            KeyStoreError::NotFound(_) => "keys.not_found",
            KeyStoreError::AlreadyExists(_) => "keys.already_exists",
            KeyStoreError::InvalidValue { .. } => "keys.invalid_value",
            KeyStoreError::Unsupported { .. } => "keys.unsupported",
            KeyStoreError::NotWrappable(_) => "keys.not_wrappable",
            KeyStoreError::BadSeal(_) => "keys.bad_seal",
            KeyStoreError::Backend(_) => "keys.backend",
            KeyStoreError::Pkcs11(_) => "keys.pkcs11",
            KeyStoreError::Crypto(_) => "keys.crypto",
        }
    }
}

/// The key store contract (design note). Every method is synchronous and may block on the
/// database or the HSM; see the module documentation.
pub trait KeyStore: Send + Sync {
    /// Stores `value` under `id` (which must not exist yet).
    fn import(&self, id: &KeyId, alg: KeyAlg, value: &[u8]) -> Result<KeyInfo, KeyStoreError>;
    /// Generates a random key under `id` (which must not exist yet).
    fn generate(&self, id: &KeyId, alg: KeyAlg) -> Result<KeyInfo, KeyStoreError>;
    /// A handle whose operations run in the store.
    fn handle(&self, id: &KeyId) -> Result<Arc<dyn SymmetricKey>, KeyStoreError>;
    /// Algorithm and KCV, or `None` if there is no such key.
    fn info(&self, id: &KeyId) -> Result<Option<KeyInfo>, KeyStoreError>;
    /// Removes a key; removing a missing key is not an error.
    fn delete(&self, id: &KeyId) -> Result<(), KeyStoreError>;
    /// The value of `key` encrypted as PUT KEY / STORE DATA carries it:
    /// SCP03: AES-CBC, zero ICV, under the static DEK; SCP02: 3DES-ECB under the session DEK
    /// derived from the static DEK and the sequence counter.
    fn wrap(&self, key: &KeyId, wrapping: &Wrapping) -> Result<Vec<u8>, KeyStoreError>;
    /// A card key diversified from a master key with the card's KDD (EMV CPS 1.1, VISA2, KDF3).
    fn diversify(&self, master: &KeyId, method: Diversification, kdd: &[u8], role: KeyRole)
        -> Result<Arc<dyn SymmetricKey>, KeyStoreError>;
}

/// The SCP02 session DEK derivation data: `0181 ‖ sequence counter ‖ 00*12` (GPCS App. E.4.1).
pub(crate) fn scp02_dek_derivation_data(sequence_counter: u16) -> [u8; 16] {
    let mut d = [0u8; 16];
    d[..2].copy_from_slice(&tsm_gp::scp::scp02::SessionKeys::DEK);
    d[2..4].copy_from_slice(&sequence_counter.to_be_bytes());
    d
}

/// Checks a value's length against the algorithm.
pub(crate) fn check_value(alg: KeyAlg, value: &[u8]) -> Result<(), KeyStoreError> {
    if value.len() != alg.key_len() {
        return Err(KeyStoreError::InvalidValue { alg, expected: alg.key_len(), got: value.len() });
    }
    Ok(())
}

/// Zero padding to a block multiple (the PKCS#11 CBC wrapping convention).
pub(crate) fn zero_pad(value: &[u8], block: usize) -> zeroize::Zeroizing<Vec<u8>> {
    let mut v = zeroize::Zeroizing::new(value.to_vec());
    while !v.len().is_multiple_of(block) {
        v.push(0);
    }
    v
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_ids() {
        let k = KeyId::new("se/CIN-1/isd/30/enc").unwrap();
        assert_eq!(k.scope(), "se");
        assert!(!k.is_master());
        assert!(KeyId::new("issuer/abc/master/enc").unwrap().is_master());
        for bad in ["", "enc", "se//enc", "se/../x", "se/a b", "se/ä", &"a/".repeat(101)] {
            let e = KeyId::new(bad).unwrap_err();
            assert_eq!(e.code(), "keys.invalid_id", "{bad}");
        }
        assert!(serde_json::from_str::<KeyId>("\"se/x/../y\"").is_err());
    }

    #[test]
    fn scp02_dek_data() {
        assert_eq!(tsm_gp::hex::encode(&scp02_dek_derivation_data(0x1234)), "01811234000000000000000000000000");
    }
}
