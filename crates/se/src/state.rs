//! The persistent state of a simulated card: everything a real card keeps in non-volatile
//! memory (registry, key metadata, counters, life cycles, application data). It serializes to
//! JSON; key *values* never appear in it in clear: live states carry only key metadata (type,
//! version, id, KCV), and [`SimCard::sealed_state`](crate::SimCard::sealed_state) adds each
//! value sealed with `tsm_gp::crypto::seal` under the caller's storage key.

use crate::rng::RngState;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use tsm_gp::crypto::KeyAlg;
use tsm_gp::gp::{Aid, Privileges};
use tsm_gp::profile::CardProfile;
use tsm_gp::scp::Scp;

/// Format tag of state files written by this version.
pub const STATE_FORMAT: &str = "tsm-se/state/1";

/// The whole persistent state of a card.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CardState {
    /// [`STATE_FORMAT`].
    pub format: String,
    pub profile: CardProfile,
    /// Card life cycle state (GPCS Table 11-6).
    pub life_cycle: u8,
    pub settings: Settings,
    /// Issuer identification number (GET DATA `42`).
    #[serde(default, skip_serializing_if = "Option::is_none", with = "opt_hex")]
    pub iin: Option<Vec<u8>>,
    /// Card image number (GET DATA `45`).
    #[serde(default, skip_serializing_if = "Option::is_none", with = "opt_hex")]
    pub cin: Option<Vec<u8>>,
    /// Executable load files, in load order (the built-in security domain package first).
    pub load_files: Vec<LoadFileRecord>,
    /// Applications and security domains, in registry order (the ISD first).
    pub apps: Vec<AppRecord>,
    pub rng: RngState,
    /// The EID of an eUICC (profile quirk `euicc`, GSMA SGP.22 GetEuiccData).
    #[serde(default, skip_serializing_if = "Option::is_none", with = "opt_hex")]
    pub eid: Option<Vec<u8>>,
    /// What the card declares about itself in GET DATA `66` and `67`.
    #[serde(default)]
    pub identity: CardIdentity,
    /// Delegated management: the confirmation counter of the receipts the ISD generated
    /// (GPCS 2.3 §C.5, GET DATA `C2`); the last value used, 0 before the first receipt.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub confirmation_counter: u16,
}

fn is_zero(v: &u16) -> bool {
    *v == 0
}

/// What a card declares about itself beyond what follows from its profile and secure
/// channel: the manufacturer's part of the Card Recognition Data (GPCS 2.3 §H.2, GET DATA `66`
/// and the SELECT FCI) and of the Card Capability Information (§H.4, GET DATA `67`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct CardIdentity {
    /// The GP version of the card management type and version OID (`60`), e.g. `[2, 3, 1]`.
    pub gp_version: Vec<u32>,
    /// The card configuration details OID (`65`), content bytes of the `06` (absent: no `65`).
    #[serde(skip_serializing_if = "Option::is_none", with = "opt_hex")]
    pub card_config_details: Option<Vec<u8>>,
    /// The card / chip details OID (`66`), content bytes of the `06` (absent: no `66`).
    #[serde(skip_serializing_if = "Option::is_none", with = "opt_hex")]
    pub card_chip_details: Option<Vec<u8>>,
    /// A Card Capability Information object (`67 …`) as the manufacturer declares it; the card
    /// replaces its SCP templates (`A0`) with its own (from the profile). Absent: the card
    /// describes itself (every privilege for SSDs, SHA-1 and SHA-256 LFDB hashes).
    #[serde(skip_serializing_if = "Option::is_none", with = "opt_hex")]
    pub capabilities: Option<Vec<u8>>,
}

impl Default for CardIdentity {
    fn default() -> Self {
        CardIdentity { gp_version: vec![2, 3, 1], card_config_details: None, card_chip_details: None, capabilities: None }
    }
}

/// Card-wide settings fixed at creation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Settings {
    pub auth_retry_limit: u32,
    pub instance_cost: u32,
    pub sd_instance_cost: u32,
    pub volatile_memory: u32,
    /// The initial key of new supplementary security domains, sealed (aad
    /// `tsm-se/ssd-initial-key`) in sealed states, absent in live ones.
    #[serde(default, skip_serializing_if = "Option::is_none", with = "opt_hex")]
    pub ssd_initial_key_sealed: Option<Vec<u8>>,
}

/// Associated data of the sealed SSD initial key.
pub(crate) const SSD_INITIAL_KEY_AAD: &str = "tsm-se/ssd-initial-key";

/// An executable load file and its modules.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LoadFileRecord {
    pub aid: Aid,
    pub life_cycle: u8,
    pub associated_sd: Aid,
    pub modules: Vec<Aid>,
    /// Package version (major, minor), `CE` in GET STATUS.
    #[serde(with = "tsm_gp::hex::serde")]
    pub version: Vec<u8>,
    /// Non-volatile memory charged: the Load File Data Block size (or the `C6` minimum).
    pub nv_cost: u32,
    /// In ROM: not deletable, costs nothing.
    #[serde(default)]
    pub builtin: bool,
    /// SHA-256 of the Load File Data Block as received.
    #[serde(default, with = "tsm_gp::hex::serde")]
    pub lfdb_sha256: Vec<u8>,
    /// Not listed by GET STATUS (ROM packages that a card keeps out of its registry listing,
    /// e.g. its own security domain package); everything else treats it as present.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub hidden: bool,
    /// Second byte of `9F70` in tagged GET STATUS entries, when the card reports one (GP
    /// Amendment C: contactless activation state; some cards report `00` for every entry).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub contactless_state: Option<u8>,
}

impl LoadFileRecord {
    /// A loaded (`01`), non built-in, listed load file without modules, version `01 00`,
    /// costing nothing: fill in the rest. For seeding a card's registry
    /// ([`SimCard::registry_mut`](crate::SimCard::registry_mut)).
    pub fn new(aid: Aid, associated_sd: Aid) -> Self {
        LoadFileRecord {
            aid,
            life_cycle: tsm_gp::gp::ElfLifeCycle::LOADED.0,
            associated_sd,
            modules: Vec::new(),
            version: vec![1, 0],
            nv_cost: 0,
            builtin: false,
            lfdb_sha256: Vec::new(),
            hidden: false,
            contactless_state: None,
        }
    }
}

/// An application or security domain instance.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AppRecord {
    pub aid: Aid,
    pub elf: Aid,
    pub module: Aid,
    #[serde(with = "privileges_hex")]
    pub privileges: Privileges,
    /// Application (Table 11-4) or security domain (Table 11-5) life cycle state. For the ISD
    /// this field is unused: the ISD reports the card life cycle.
    pub life_cycle: u8,
    pub associated_sd: Aid,
    /// Install parameters as received.
    #[serde(with = "tsm_gp::hex::serde")]
    pub install_params: Vec<u8>,
    pub nv_cost: u32,
    pub volatile_cost: u32,
    /// The native application model and its state (applications only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model: Option<ModelRecord>,
    /// Security domain state (security domains only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub domain: Option<DomainRecord>,
    /// Second byte of `9F70` in tagged GET STATUS entries, when the card reports one (GP
    /// Amendment C: contactless activation state).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub contactless_state: Option<u8>,
}

impl AppRecord {
    pub fn is_sd(&self) -> bool {
        self.domain.is_some()
    }

    /// A SELECTABLE (`07`) application without privileges, install parameters or memory cost:
    /// fill in the rest. For seeding a card's registry
    /// ([`SimCard::registry_mut`](crate::SimCard::registry_mut)); a security domain gets its
    /// domain state there.
    pub fn new(aid: Aid, elf: Aid, module: Aid, associated_sd: Aid) -> Self {
        AppRecord {
            aid,
            elf,
            module,
            privileges: Privileges::NONE,
            life_cycle: tsm_gp::gp::lifecycle::AppLifeCycle::SELECTABLE.0,
            associated_sd,
            install_params: Vec::new(),
            nv_cost: 0,
            volatile_cost: 0,
            model: None,
            domain: None,
            contactless_state: None,
        }
    }
}

/// The model an application runs on and its state.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ModelRecord {
    pub name: String,
    pub state: serde_json::Value,
}

/// A security domain's own state.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DomainRecord {
    pub scp: Scp,
    #[serde(with = "tsm_gp::hex::serde")]
    pub kdd: Vec<u8>,
    /// Secure channel sequence counter.
    pub sequence_counter: u32,
    pub keys: Vec<KeyRecord>,
    /// Failed EXTERNAL AUTHENTICATE attempts per key version (reset by a success).
    #[serde(default)]
    pub auth_failures: BTreeMap<String, u32>,
    /// Non-volatile memory quota for the content associated with this SD (`C8`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nv_quota: Option<u32>,
    /// Personalization data received by STORE DATA that is not key material, by DGI or tag
    /// (hex), values concatenated per record.
    #[serde(default)]
    pub data: BTreeMap<String, String>,
    /// Public keys (the Token Verification key of delegated management): public, so kept in
    /// clear, in the state itself.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub public_keys: Vec<PublicKeyRecord>,
}

/// An ECC public key of a security domain (PUT KEY type `B0` with parameters reference `F0`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PublicKeyRecord {
    pub version: u8,
    pub id: u8,
    /// GP key type of the key (`B0`, ECC public key).
    pub key_type: u8,
    /// Key parameters reference (`00`: NIST P-256).
    pub parameters: u8,
    /// The uncompressed SEC 1 point.
    #[serde(with = "tsm_gp::hex::serde")]
    pub point: Vec<u8>,
}

impl DomainRecord {
    pub(crate) fn failures(&self, version: u8) -> u32 {
        self.auth_failures.get(&format!("{version:02X}")).copied().unwrap_or(0)
    }
    pub(crate) fn set_failures(&mut self, version: u8, n: u32) {
        let k = format!("{version:02X}");
        if n == 0 {
            self.auth_failures.remove(&k);
        } else {
            self.auth_failures.insert(k, n);
        }
    }
}

/// One key's metadata and, in sealed states, its sealed value.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeyRecord {
    pub version: u8,
    pub id: u8,
    /// GP key type (`80` DES, `88` AES).
    pub key_type: u8,
    pub alg: KeyAlg,
    #[serde(with = "tsm_gp::hex::serde")]
    pub kcv: Vec<u8>,
    /// `seal(storage key, iv, aad = "tsm-se/key/<SD AID>/<version>/<id>", value)`.
    #[serde(default, skip_serializing_if = "Option::is_none", with = "opt_hex")]
    pub sealed: Option<Vec<u8>>,
    /// The Receipt Generation key of delegated management (never a secure channel key).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub receipt: bool,
}

/// The associated data that binds a sealed key to its place.
pub(crate) fn key_aad(sd: &Aid, version: u8, id: u8) -> String {
    format!("tsm-se/key/{sd}/{version:02X}/{id:02X}")
}

mod privileges_hex {
    use serde::{Deserialize, Deserializer, Serializer};
    use tsm_gp::gp::Privileges;

    pub fn serialize<S: Serializer>(p: &Privileges, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&tsm_gp::hex::encode(&p.three_bytes().to_bytes()))
    }
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Privileges, D::Error> {
        let s = String::deserialize(d)?;
        let b = tsm_gp::hex::decode(&s).map_err(serde::de::Error::custom)?;
        Privileges::from_bytes(&b).map_err(serde::de::Error::custom)
    }
}

mod opt_hex {
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(v: &Option<Vec<u8>>, s: S) -> Result<S::Ok, S::Error> {
        match v {
            Some(b) => s.serialize_some(&tsm_gp::hex::encode(b)),
            None => s.serialize_none(),
        }
    }
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Vec<u8>>, D::Error> {
        let s = Option::<String>::deserialize(d)?;
        s.map(|s| tsm_gp::hex::decode(&s).map_err(serde::de::Error::custom)).transpose()
    }
}

impl CardState {
    pub fn app(&self, aid: &Aid) -> Option<&AppRecord> {
        self.apps.iter().find(|a| a.aid == *aid)
    }
    pub(crate) fn app_mut(&mut self, aid: &Aid) -> Option<&mut AppRecord> {
        self.apps.iter_mut().find(|a| a.aid == *aid)
    }
    pub fn load_file(&self, aid: &Aid) -> Option<&LoadFileRecord> {
        self.load_files.iter().find(|l| l.aid == *aid)
    }
    pub fn domain(&self, aid: &Aid) -> Option<&DomainRecord> {
        self.app(aid).and_then(|a| a.domain.as_ref())
    }
    pub(crate) fn domain_mut(&mut self, aid: &Aid) -> Option<&mut DomainRecord> {
        self.app_mut(aid).and_then(|a| a.domain.as_mut())
    }
    /// The ISD's AID (the first registry entry).
    pub fn isd(&self) -> Aid {
        self.apps[0].aid
    }

    /// Non-volatile memory in use by loaded content (built-in packages and the ISD excluded).
    pub fn nv_used(&self) -> u64 {
        let elfs: u64 = self.load_files.iter().filter(|l| !l.builtin).map(|l| l.nv_cost as u64).sum();
        let apps: u64 = self.apps.iter().skip(1).map(|a| a.nv_cost as u64).sum();
        elfs + apps
    }
    /// Free non-volatile memory of the card.
    pub fn nv_free(&self) -> u64 {
        (self.profile.memory as u64).saturating_sub(self.nv_used())
    }
    pub fn volatile_used(&self) -> u64 {
        self.apps.iter().map(|a| a.volatile_cost as u64).sum()
    }
    pub fn volatile_free(&self) -> u64 {
        (self.settings.volatile_memory as u64).saturating_sub(self.volatile_used())
    }
    /// Memory charged to security domain `sd`: load files and instances associated with it
    /// (not itself), and everything charged to the security domains below it.
    pub fn sd_nv_used(&self, sd: &Aid) -> u64 {
        let mut total = 0u64;
        for l in self.load_files.iter().filter(|l| !l.builtin && l.associated_sd == *sd) {
            total += l.nv_cost as u64;
        }
        for a in self.apps.iter().skip(1).filter(|a| a.associated_sd == *sd && a.aid != *sd) {
            total += a.nv_cost as u64;
            if a.is_sd() {
                total += self.sd_nv_used(&a.aid);
            }
        }
        total
    }
    /// The security domains `sd` is associated with, from `sd` itself up to the ISD.
    pub(crate) fn sd_chain(&self, sd: &Aid) -> Vec<Aid> {
        let mut out = vec![*sd];
        let mut cur = *sd;
        while let Some(a) = self.app(&cur) {
            if a.associated_sd == cur || out.len() > self.apps.len() {
                break;
            }
            cur = a.associated_sd;
            out.push(cur);
        }
        out
    }
    /// Whether `cost` more bytes fit the card and every quota from `sd` up: `6A84` otherwise.
    pub(crate) fn nv_fits(&self, sd: &Aid, cost: u64) -> bool {
        if self.nv_used() + cost > self.profile.memory as u64 {
            return false;
        }
        self.sd_chain(sd).iter().all(|s| match self.domain(s).and_then(|d| d.nv_quota) {
            Some(q) => self.sd_nv_used(s) + cost <= q as u64,
            None => true,
        })
    }
}
