//! SCP02 (GPCS 2.3 Appendix E): two-key 3DES session keys derived from the static keys and the
//! secure channel sequence counter, card/host cryptograms as full 3DES CBC-MACs, C-MAC as an
//! ISO 9797-1 MAC algorithm 3 ("retail MAC") chained from command to command, and C-DEC as
//! 3DES-CBC with a zero ICV.
//!
//! - Host side: [`HostHandshake`] → [`HostAuthenticating`] → [`Scp02Host`] for explicit
//!   initiation (INITIALIZE UPDATE / EXTERNAL AUTHENTICATE); [`Scp02Host::implicit`] for
//!   implicit initiation.
//! - Card side: [`card`].
//! - Monitor for recorded traces: [`Scp02Monitor`].
//!
//! All three run on one session state ([`session::Session`]), so the C-MAC, ICV chaining and
//! C-DEC code exists once. Behaviour follows the bits of the `i` parameter ([`IParam`],
//! GPCS 2.3 Table E-1), not a list of known values.
//!
//! Not implemented: R-MAC (levels 11/13 give [`ScpError::UnsupportedLevel`]); R-ENC does not
//! exist in SCP02.

pub mod card;
mod host;
mod monitor;
mod session;

pub use host::{HostAuthenticating, HostHandshake, PredictedSession, PredictedSessionState, Scp02Host, Scp02HostState};
pub use monitor::{MonitorAuth, Scp02Monitor};

use super::{ChannelOptions, ScpError, StaticKeys};
use crate::codec::{Codec, DecodeError, Reader};
use crate::crypto::{self, KeyAlg, SecretKey, SymmetricKey};
use crate::hex::Hex;
use std::fmt;
use zeroize::Zeroizing;

/// SCP identifier of SCP02 in the INITIALIZE UPDATE response.
pub const SCP02_ID: u8 = 0x02;
/// INS of INITIALIZE UPDATE and EXTERNAL AUTHENTICATE.
pub const INS_INITIALIZE_UPDATE: u8 = 0x50;
pub const INS_EXTERNAL_AUTHENTICATE: u8 = 0x82;

/// The SCP02 implementation parameter `i` (GPCS 2.3 Table E-1). Each option is one bit.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct IParam(pub u8);

impl IParam {
    /// b1: three secure channel keys (ENC, MAC, DEK) instead of one base key.
    pub const THREE_KEYS: u8 = 0x01;
    /// b2: C-MAC on the unmodified APDU (original CLA and Lc) instead of the modified one.
    pub const CMAC_ON_UNMODIFIED_APDU: u8 = 0x02;
    /// b3: explicit initiation (INITIALIZE UPDATE / EXTERNAL AUTHENTICATE) instead of implicit.
    pub const EXPLICIT: u8 = 0x04;
    /// b4: the first ICV is a MAC over the AID instead of zero.
    pub const ICV_MAC_OVER_AID: u8 = 0x08;
    /// b5: each ICV after the first is the previous C-MAC encrypted (single DES, left half of S-MAC).
    pub const ICV_ENCRYPTION: u8 = 0x10;
    /// b6: R-MAC supported.
    pub const RMAC_SUPPORT: u8 = 0x20;
    /// b7: the card challenge is the well-known pseudo-random value (a MAC over the AID).
    pub const PSEUDO_RANDOM_CHALLENGE: u8 = 0x40;

    pub fn three_keys(self) -> bool {
        self.0 & Self::THREE_KEYS != 0
    }
    pub fn cmac_on_unmodified_apdu(self) -> bool {
        self.0 & Self::CMAC_ON_UNMODIFIED_APDU != 0
    }
    pub fn explicit(self) -> bool {
        self.0 & Self::EXPLICIT != 0
    }
    pub fn icv_mac_over_aid(self) -> bool {
        self.0 & Self::ICV_MAC_OVER_AID != 0
    }
    pub fn icv_encryption(self) -> bool {
        self.0 & Self::ICV_ENCRYPTION != 0
    }
    pub fn rmac_support(self) -> bool {
        self.0 & Self::RMAC_SUPPORT != 0
    }
    pub fn pseudo_random_challenge(self) -> bool {
        self.0 & Self::PSEUDO_RANDOM_CHALLENGE != 0
    }
    /// Refuses bit b8, which Table E-1 leaves RFU.
    pub fn validate(self) -> Result<(), ScpError> {
        if self.0 & 0x80 != 0 {
            return Err(ScpError::Unsupported(format!("SCP02 i={:02X}: bit b8 is reserved", self.0)));
        }
        Ok(())
    }
}

impl fmt::Debug for IParam {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut parts = vec![
            if self.three_keys() { "3 keys" } else { "1 base key" },
            if self.cmac_on_unmodified_apdu() { "C-MAC on unmodified APDU" } else { "C-MAC on modified APDU" },
            if self.explicit() { "explicit" } else { "implicit" },
            if self.icv_mac_over_aid() { "ICV = MAC over AID" } else { "ICV zero" },
        ];
        if self.icv_encryption() {
            parts.push("ICV encryption");
        }
        if self.rmac_support() {
            parts.push("R-MAC");
        }
        if self.pseudo_random_challenge() {
            parts.push("pseudo-random card challenge");
        }
        write!(f, "i={:02X}({})", self.0, parts.join(", "))
    }
}

impl fmt::Display for IParam {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self, f)
    }
}

/// Host-side SCP02 settings.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Scp02Options {
    /// The card's `i` parameter (from its Card Recognition Data or its profile).
    pub i: u8,
    pub channel: ChannelOptions,
    /// AID of the security domain the session is opened with. Needed when `i` sets the ICV to
    /// a MAC over the AID; when `i` announces a pseudo-random card challenge and this is
    /// known, the host also checks the card challenge.
    pub sd_aid: Option<Vec<u8>>,
}

impl Scp02Options {
    pub fn new(i: u8) -> Self {
        Scp02Options { i, ..Default::default() }
    }
    pub fn with_sd_aid(mut self, aid: &[u8]) -> Self {
        self.sd_aid = Some(aid.to_vec());
        self
    }
    pub fn with_channel(mut self, channel: ChannelOptions) -> Self {
        self.channel = channel;
        self
    }
}

/// The 28-byte INITIALIZE UPDATE response data of SCP02 (GPCS 2.3 App. E, INITIALIZE UPDATE response):
/// key diversification data, key information (KVN, SCP id), sequence counter, card challenge,
/// card cryptogram.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InitUpdateResponse {
    pub kdd: [u8; 10],
    pub key_version: u8,
    pub scp_id: u8,
    pub sequence_counter: u16,
    pub card_challenge: [u8; 6],
    pub card_cryptogram: [u8; 8],
}

impl InitUpdateResponse {
    pub const LEN: usize = 28;

    /// Parses the response data, with a message that says what kind of response it was when
    /// it is not SCP02.
    pub fn parse(data: &[u8]) -> Result<Self, ScpError> {
        Self::from_bytes(data).map_err(|e| ScpError::BadInitUpdateResponse(match e {
            DecodeError::Invalid { detail, .. } => detail,
            other => other.to_string(),
        }))
    }
}

impl Codec for InitUpdateResponse {
    fn encode(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.kdd);
        out.push(self.key_version);
        out.push(self.scp_id);
        out.extend_from_slice(&self.sequence_counter.to_be_bytes());
        out.extend_from_slice(&self.card_challenge);
        out.extend_from_slice(&self.card_cryptogram);
    }

    fn read(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        const W: &str = "SCP02 INITIALIZE UPDATE response";
        let all = r.peek_rest();
        // Byte 11 is the SCP identifier in SCP01, SCP02 and SCP03 responses alike.
        if let Some(&id) = all.get(11)
            && id != SCP02_ID
        {
            return Err(DecodeError::invalid(W, format!(
                "{} bytes with SCP identifier {id:02X} at offset 11: the card answered for SCP{id:02X}, not SCP02",
                all.len()
            )));
        }
        if all.len() != Self::LEN {
            return Err(DecodeError::invalid(W, format!(
                "{} bytes; SCP02 sends 28 (KDD 10, KVN 1, SCP id 1, sequence counter 2, card challenge 6, card cryptogram 8)",
                all.len()
            )));
        }
        Ok(InitUpdateResponse {
            kdd: r.array("key diversification data")?,
            key_version: r.u8("key version")?,
            scp_id: r.u8("SCP identifier")?,
            sequence_counter: r.u16("sequence counter")?,
            card_challenge: r.array("card challenge")?,
            card_cryptogram: r.array("card cryptogram")?,
        })
    }
}

/// The four SCP02 session keys (GPCS 2.3 App. E, "DES session keys"). In memory, zeroized on drop; `Debug` shows
/// KCVs only.
#[derive(Clone, Debug)]
pub struct SessionKeys {
    pub s_enc: SecretKey,
    pub s_mac: SecretKey,
    pub s_rmac: SecretKey,
    pub s_dek: SecretKey,
}

/// Key check values of the session keys (3DES-ECB of a zero block, first 3 bytes).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SessionKcvs {
    pub s_enc: [u8; 3],
    pub s_mac: [u8; 3],
    pub s_rmac: [u8; 3],
    pub s_dek: [u8; 3],
}

impl SessionKeys {
    /// Derivation constants (GPCS 2.3 App. E, "DES session keys").
    pub const C_MAC: [u8; 2] = [0x01, 0x01];
    pub const R_MAC: [u8; 2] = [0x01, 0x02];
    pub const S_ENC: [u8; 2] = [0x01, 0x82];
    pub const DEK: [u8; 2] = [0x01, 0x81];

    /// `3DES-CBC(static, zero ICV, constant ‖ sequence counter ‖ 00*12)` for each key, through
    /// [`SymmetricKey::encrypt_cbc`] so that the static keys may stay in an HSM. With one base
    /// key (`i` b1 = 0) all four come from `keys.enc`; with three, C-MAC and R-MAC come from
    /// the MAC key and DEK from the DEK key.
    pub fn derive(keys: &StaticKeys, i: IParam, sequence_counter: u16) -> Result<Self, ScpError> {
        let (enc, mac, dek): (&dyn SymmetricKey, &dyn SymmetricKey, &dyn SymmetricKey) = if i.three_keys() {
            (keys.enc.as_ref(), keys.mac.as_ref(), keys.dek.as_ref())
        } else {
            (keys.enc.as_ref(), keys.enc.as_ref(), keys.enc.as_ref())
        };
        Ok(SessionKeys {
            s_enc: derive_one(enc, Self::S_ENC, sequence_counter)?,
            s_mac: derive_one(mac, Self::C_MAC, sequence_counter)?,
            s_rmac: derive_one(mac, Self::R_MAC, sequence_counter)?,
            s_dek: derive_one(dek, Self::DEK, sequence_counter)?,
        })
    }

    pub fn kcvs(&self) -> SessionKcvs {
        SessionKcvs { s_enc: self.s_enc.kcv(), s_mac: self.s_mac.kcv(), s_rmac: self.s_rmac.kcv(), s_dek: self.s_dek.kcv() }
    }
}

fn derive_one(base: &dyn SymmetricKey, constant: [u8; 2], seq: u16) -> Result<SecretKey, ScpError> {
    if !base.alg().is_des() {
        return Err(ScpError::Unsupported(format!("SCP02 needs 3DES static keys, got {:?}", base.alg())));
    }
    let mut input = [0u8; 16];
    input[..2].copy_from_slice(&constant);
    input[2..4].copy_from_slice(&seq.to_be_bytes());
    let out = Zeroizing::new(base.encrypt_cbc(&[0u8; 8], &input)?);
    if out.len() != 16 {
        return Err(ScpError::Unsupported(format!("key store returned {} bytes for a 16-byte derivation", out.len())));
    }
    Ok(SecretKey::new(KeyAlg::Des3_2k, &out)?)
}

/// Card cryptogram: full 3DES MAC under S-ENC, zero ICV, over host challenge ‖ sequence
/// counter ‖ card challenge, padded (GPCS 2.3 App. E, "card authentication cryptogram").
pub(crate) fn card_cryptogram(s_enc: &SecretKey, host_challenge: &[u8; 8], seq: u16, card_challenge: &[u8; 6]) -> Result<[u8; 8], ScpError> {
    let mut m = Vec::with_capacity(16);
    m.extend_from_slice(host_challenge);
    m.extend_from_slice(&seq.to_be_bytes());
    m.extend_from_slice(card_challenge);
    Ok(crypto::des3_cbc_mac(s_enc, &[0; 8], &crypto::pad80(&m, 8))?)
}

/// Host cryptogram: as the card cryptogram, over sequence counter ‖ card challenge ‖ host
/// challenge (GPCS 2.3 App. E, "host authentication cryptogram").
pub(crate) fn host_cryptogram(s_enc: &SecretKey, host_challenge: &[u8; 8], seq: u16, card_challenge: &[u8; 6]) -> Result<[u8; 8], ScpError> {
    let mut m = Vec::with_capacity(16);
    m.extend_from_slice(&seq.to_be_bytes());
    m.extend_from_slice(card_challenge);
    m.extend_from_slice(host_challenge);
    Ok(crypto::des3_cbc_mac(s_enc, &[0; 8], &crypto::pad80(&m, 8))?)
}

/// Retail MAC under the C-MAC session key with a zero ICV over the padded AID: the "MAC over
/// AID" that is both the well-known pseudo-random card challenge (first 6 bytes) and, with
/// implicit initiation, the start of the C-MAC chain (GPCS 2.3 App. E, "card challenge" and "ICV"; checked against the GlobalPlatformPro issue #80 trace).
pub(crate) fn mac_over_aid(s_mac: &SecretKey, aid: &[u8]) -> Result<[u8; 8], ScpError> {
    Ok(crypto::retail_mac(s_mac, &[0; 8], &crypto::pad80(aid, 8))?)
}

/// The well-known pseudo-random card challenge of a card whose `i` has b7 set: the first six
/// bytes of the retail MAC (C-MAC session key for `sequence_counter`, zero ICV) over the
/// security domain AID. A host can predict it before sending INITIALIZE UPDATE, e.g. to
/// prepare scripts offline.
pub fn predict_card_challenge(keys: &StaticKeys, i: u8, sequence_counter: u16, sd_aid: &[u8]) -> Result<[u8; 6], ScpError> {
    let sk = SessionKeys::derive(keys, IParam(i), sequence_counter)?;
    let m = mac_over_aid(&sk.s_mac, sd_aid)?;
    let mut c = [0u8; 6];
    c.copy_from_slice(&m[..6]);
    Ok(c)
}

pub(crate) fn hex(b: &[u8]) -> String {
    Hex(b).to_string()
}

pub(crate) fn refused(command: &'static str, sw: crate::sw::StatusWord) -> ScpError {
    ScpError::CardRefused { command, sw, meaning: sw.meaning() }
}
