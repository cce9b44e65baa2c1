//! The keys a session authenticates with, and the key sets PUT KEY loads.

use super::SessionError;
use crate::crypto::diversify::{Diversification, KeyRole, diversify};
use crate::crypto::{KeyAlg, SecretKey, SymmetricKey};
use crate::hex::encode as hex;
use crate::scp::StaticKeys;
use std::fmt;
use std::sync::Arc;
use zeroize::Zeroizing;

/// The static keys to open a secure channel with. A 16-byte key is a 3DES key for SCP02 and
/// an AES key for SCP03, and the protocol is only known from the card's INITIALIZE UPDATE
/// response; [`CardKeys::Bytes`] therefore types the key bytes late, and
/// [`CardKeys::Diversified`] derives them from the KDD of that response.
#[derive(Clone)]
pub enum CardKeys {
    /// Keys as given: their algorithm must suit the protocol the card answers with.
    Static(StaticKeys),
    /// Key bytes, typed once the protocol is known: 3DES for SCP02, AES for SCP03.
    Bytes { enc: Zeroizing<Vec<u8>>, mac: Zeroizing<Vec<u8>>, dek: Zeroizing<Vec<u8>>, version: u8 },
    /// Card keys diversified from an issuer master key with the card's Key Diversification
    /// Data (the first 10 bytes of the INITIALIZE UPDATE response).
    Diversified { master: Arc<dyn SymmetricKey>, method: Diversification, version: u8 },
}

impl CardKeys {
    /// The same key bytes for ENC, MAC and DEK (e.g. the GP test key `40..4F`).
    pub fn single(key: &[u8], version: u8) -> Self {
        CardKeys::Bytes {
            enc: Zeroizing::new(key.to_vec()),
            mac: Zeroizing::new(key.to_vec()),
            dek: Zeroizing::new(key.to_vec()),
            version,
        }
    }

    /// Three key values.
    pub fn bytes(enc: &[u8], mac: &[u8], dek: &[u8], version: u8) -> Self {
        CardKeys::Bytes { enc: Zeroizing::new(enc.to_vec()), mac: Zeroizing::new(mac.to_vec()), dek: Zeroizing::new(dek.to_vec()), version }
    }

    /// Diversified from `master`.
    pub fn diversified(master: SecretKey, method: Diversification, version: u8) -> Self {
        CardKeys::Diversified { master: Arc::new(master), method, version }
    }

    /// The key version number sent in INITIALIZE UPDATE (00: the card's default key set).
    pub fn version(&self) -> u8 {
        match self {
            CardKeys::Static(k) => k.version,
            CardKeys::Bytes { version, .. } | CardKeys::Diversified { version, .. } => *version,
        }
    }

    /// The same keys with another key version number.
    pub fn with_version(mut self, v: u8) -> Self {
        match &mut self {
            CardKeys::Static(k) => k.version = v,
            CardKeys::Bytes { version, .. } | CardKeys::Diversified { version, .. } => *version = v,
        }
        self
    }

    /// The static keys for protocol `scp_id` (`02` or `03`) on a card with this KDD.
    pub fn resolve(&self, scp_id: u8, kdd: &[u8]) -> Result<StaticKeys, SessionError> {
        match self {
            CardKeys::Static(k) => Ok(k.clone()),
            CardKeys::Bytes { enc, mac, dek, version } => {
                let make = |b: &[u8], role: &str| -> Result<SecretKey, SessionError> {
                    let k = if scp_id == 0x02 { SecretKey::des3(b) } else { SecretKey::aes(b) };
                    k.map_err(|e| {
                        SessionError::InvalidArgument(format!(
                            "{role} key of {} bytes does not suit SCP{scp_id:02X} ({e})",
                            b.len()
                        ))
                    })
                };
                Ok(StaticKeys::new(make(enc, "ENC")?, make(mac, "MAC")?, make(dek, "DEK")?, *version))
            }
            CardKeys::Diversified { master, method, version } => {
                let k = |role| diversify(*method, master.as_ref(), kdd, role);
                Ok(StaticKeys::new(k(KeyRole::Enc)?, k(KeyRole::Mac)?, k(KeyRole::Dek)?, *version))
            }
        }
    }
}

impl From<StaticKeys> for CardKeys {
    fn from(k: StaticKeys) -> Self {
        CardKeys::Static(k)
    }
}

impl From<&KeySet> for CardKeys {
    fn from(k: &KeySet) -> Self {
        CardKeys::Static(k.static_keys())
    }
}

impl fmt::Debug for CardKeys {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CardKeys::Static(k) => write!(f, "CardKeys::Static({k:?})"),
            CardKeys::Bytes { enc, mac, dek, version } => {
                write!(f, "CardKeys::Bytes(v{version:02X}, {}/{}/{} bytes)", enc.len(), mac.len(), dek.len())
            }
            CardKeys::Diversified { master, method, version } => {
                let kcv = master.kcv().map(|c| hex(&c)).unwrap_or_else(|_| "?".into());
                write!(f, "CardKeys::Diversified(v{version:02X}, {method:?}, master {:?} kcv {kcv})", master.alg())
            }
        }
    }
}

/// A key set in memory: what PUT KEY loads onto a card (the host must hold the key values to
/// encrypt them under the DEK).
#[derive(Clone, PartialEq, Eq)]
pub struct KeySet {
    pub enc: SecretKey,
    pub mac: SecretKey,
    pub dek: SecretKey,
    /// Key version number (01..7F).
    pub version: u8,
}

impl KeySet {
    pub fn new(enc: SecretKey, mac: SecretKey, dek: SecretKey, version: u8) -> Self {
        KeySet { enc, mac, dek, version }
    }

    /// One key for ENC, MAC and DEK.
    pub fn single(key: SecretKey, version: u8) -> Self {
        KeySet { enc: key.clone(), mac: key.clone(), dek: key, version }
    }

    /// Key bytes typed for protocol `scp_id`: 3DES for SCP02, AES for SCP03.
    pub fn for_scp(scp_id: u8, enc: &[u8], mac: &[u8], dek: &[u8], version: u8) -> Result<Self, SessionError> {
        let make = |b: &[u8]| if scp_id == 0x02 { SecretKey::des3(b) } else { SecretKey::aes(b) };
        Ok(KeySet { enc: make(enc)?, mac: make(mac)?, dek: make(dek)?, version })
    }

    pub fn static_keys(&self) -> StaticKeys {
        StaticKeys::new(self.enc.clone(), self.mac.clone(), self.dek.clone(), self.version)
    }

    pub fn keys(&self) -> [&SecretKey; 3] {
        [&self.enc, &self.mac, &self.dek]
    }

    /// The algorithm of the set when all three keys share it.
    pub fn alg(&self) -> Option<KeyAlg> {
        let a = self.enc.alg();
        (self.mac.alg() == a && self.dek.alg() == a).then_some(a)
    }
}

impl fmt::Debug for KeySet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "KeySet(v{:02X}, {:?}, kcv enc={} mac={} dek={})",
            self.version,
            self.enc.alg(),
            hex(&self.enc.kcv()),
            hex(&self.mac.kcv()),
            hex(&self.dek.kcv())
        )
    }
}
