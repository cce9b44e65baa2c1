//! What the planner is given: the TSM's view of one card, the operation to carry out on it, and
//! options. All of it serializes (the plan state holds it) and none of it is key material: keys
//! are named by [`KeysetRef`] and resolved through the [`KeyProvider`](super::KeyProvider).

use serde::{Deserialize, Serialize};
use tsm_gp::cap::{CapFile, HashAlgorithm};
use tsm_gp::crypto::KeyAlg;
use tsm_gp::gp::{Aid, LifeCycle, Privileges, RegistryEntry, StatusScope};
use tsm_gp::profile::CardProfile;
use tsm_gp::scp::Scp;

/// What the TSM knows of one card.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CardView {
    pub se_id: String,
    /// The card's profile: quirks, largest LOAD block.
    pub profile: CardProfile,
    pub isd_aid: Aid,
    /// The secure channel protocol the TSM uses with the ISD, with the card's `i`.
    pub scp: Scp,
    /// The ISD key version to open sessions with (0: the card's default key set).
    pub key_version: u8,
    /// Key diversification data (from an earlier INITIALIZE UPDATE), if known.
    #[serde(default, with = "opt_hex")]
    pub kdd: Option<Vec<u8>>,
    /// The ISD's secure channel sequence counter as GET DATA `C1` reads it: SCP03 cards report
    /// this value plus one in their next INITIALIZE UPDATE; SCP02 cards use it for their next
    /// session and count up once that session is authenticated.
    pub sequence_counter: Option<u32>,
    /// No other party can have opened a session since the counter was seen.
    pub counter_is_current: bool,
    /// The registry (GET STATUS) as last known; `None` when never read.
    #[serde(default, with = "registry_serde")]
    pub registry: Option<Vec<RegistryEntry>>,
}

impl CardView {
    /// A view of a card the TSM has never talked to, with the profile's first secure channel.
    pub fn first_contact(se_id: impl Into<String>, profile: CardProfile) -> CardView {
        CardView {
            se_id: se_id.into(),
            isd_aid: Aid::new(&profile.isd_aid).unwrap_or(Aid::GP_ISD),
            scp: profile.scp.first().copied().unwrap_or(Scp::Scp03 { i: 0x70 }),
            profile,
            key_version: 0,
            kdd: None,
            sequence_counter: None,
            counter_is_current: false,
            registry: None,
        }
    }

    pub(crate) fn find(&self, aid: &Aid) -> Option<&RegistryEntry> {
        self.registry.as_ref()?.iter().find(|e| &e.aid == aid)
    }
}

/// A key set the TSM holds (or will hold) in its key store: an opaque identifier the
/// [`KeyProvider`](super::KeyProvider) resolves, the key version number on the card and the
/// algorithm.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeysetRef {
    pub id: String,
    pub kvn: u8,
    pub alg: KeyAlg,
}

/// A load file to put on the card.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LoadFileSpec {
    /// Package (executable load file) AID.
    pub aid: Aid,
    /// The load file as LOAD carries it: `C4 len LFDB` (see `CapFile::load_file_tlv`).
    #[serde(with = "tsm_gp::hex::serde")]
    pub load_file: Vec<u8>,
    /// Load file data block hash for INSTALL [for load]; empty when the card does not ask for one.
    #[serde(with = "tsm_gp::hex::serde", default)]
    pub hash: Vec<u8>,
    /// Load parameters (INSTALL [for load] `EF`), as sent.
    #[serde(with = "tsm_gp::hex::serde", default)]
    pub load_params: Vec<u8>,
    /// Modules (applet classes) of the package.
    #[serde(default)]
    pub modules: Vec<Aid>,
}

impl Deploy {
    /// The security domain the service belongs to; `None` for the ISD.
    pub fn target_sd(&self) -> Option<Aid> {
        self.ssd.as_ref().map(|s| s.aid).or(self.sd)
    }
}

impl LoadFileSpec {
    /// From a parsed CAP file: package AID, applets, `C4` load file with the Descriptor
    /// component and its SHA-256 hash (GP 2.3 hash for INSTALL [for load]).
    pub fn from_cap(cap: &CapFile) -> Result<LoadFileSpec, tsm_gp::gp::GpError> {
        let aid = Aid::new(cap.package_aid())?;
        let modules = cap.applet_aids().into_iter().map(Aid::new).collect::<Result<_, _>>()?;
        Ok(LoadFileSpec {
            aid,
            load_file: cap.load_file_tlv(true),
            hash: cap.load_file_hash(HashAlgorithm::Sha256, true),
            load_params: Vec::new(),
            modules,
        })
    }
}

/// A supplementary security domain to create before the applications are installed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SsdSpec {
    pub aid: Aid,
    /// The card's security domain package and module (GP: `A0000001515350`,
    /// `A000000151535041`).
    pub elf: Aid,
    pub module: Aid,
    /// Privileges; the Security Domain privilege is added when missing.
    #[serde(with = "privileges_serde")]
    pub privileges: Privileges,
    /// Application-specific parameters (`C9` value; SD install parameters).
    #[serde(with = "tsm_gp::hex::serde", default)]
    pub c9: Vec<u8>,
    /// Non-volatile and volatile memory quotas (`EF` `C8` / `C7`), in bytes.
    #[serde(default)]
    pub nv_quota: Option<u32>,
    #[serde(default)]
    pub volatile_quota: Option<u32>,
    /// The key set the SSD ends up with.
    pub keys: KeysetRef,
    /// Keys the SSD starts with, replaced by `keys` with PUT KEY in the SSD's own secure channel:
    /// key version `FF` names the card's initial key set of a new SSD (nothing provisioned),
    /// another version a key set the ISD provisions first (STORE DATA). `None` provisions
    /// `keys` directly (STORE DATA through the ISD: no second channel, no extra round trip).
    #[serde(default)]
    pub initial_keys: Option<KeysetRef>,
}

impl SsdSpec {
    /// GP's security domain package and module (GPCS 2.3 §H).
    pub const GP_SD_ELF: Aid = Aid::from_array([0xA0, 0x00, 0x00, 0x01, 0x51, 0x53, 0x50]);
    pub const GP_SD_MODULE: Aid = Aid::from_array([0xA0, 0x00, 0x00, 0x01, 0x51, 0x53, 0x50, 0x41]);
}

/// One application instance to install.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InstallSpec {
    pub module: Aid,
    pub instance: Aid,
    #[serde(with = "privileges_serde", default = "no_privileges")]
    pub privileges: Privileges,
    /// Application-specific install parameters (the `C9` value; `C9 00` when empty).
    #[serde(with = "tsm_gp::hex::serde", default)]
    pub c9: Vec<u8>,
    #[serde(default)]
    pub nv_quota: Option<u32>,
    #[serde(default)]
    pub volatile_quota: Option<u32>,
}

fn no_privileges() -> Privileges {
    Privileges::NONE
}

/// One STORE DATA block of a personalization script (the domain's type): blocks marked
/// `encrypt` hold secrets; the planner encrypts them under the channel's DEK (DGIs with b16 set,
/// or the whole field for BER-TLV) and says so in STORE DATA P1 (b7..b6 = 11).
pub use crate::domain::PersoBlock;

/// The personalization of one instance: STORE DATA blocks in order, sent under C-DEC after
/// INSTALL [for personalization].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PersoScript {
    pub instance: Aid,
    pub blocks: Vec<PersoBlock>,
    /// The blocks are BER-TLV (P1 b5..b4 = 10) instead of DGIs.
    #[serde(default)]
    pub ber_tlv: bool,
}

/// A deployment: the load file (loaded only when missing), an optional SSD, instances,
/// personalization, selectability. The load file and the instances belong to the new SSD, or to
/// `sd`, or to the ISD: the load file is associated with it by INSTALL [for load], the instances
/// (installed by the ISD) are moved under it by INSTALL [for extradition].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Deploy {
    pub load_file: LoadFileSpec,
    #[serde(default)]
    pub ssd: Option<SsdSpec>,
    /// An existing security domain the service belongs to (when `ssd` is not given).
    #[serde(default)]
    pub sd: Option<Aid>,
    pub install: Vec<InstallSpec>,
    #[serde(default)]
    pub personalization: Vec<PersoScript>,
    pub make_selectable: bool,
}

/// A service operation on one card.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Operation {
    Deploy(Box<Deploy>),
    /// Lock an instance (SET STATUS).
    Suspend { instance: Aid },
    /// Unlock an instance.
    Resume { instance: Aid },
    /// Delete an instance; then its load file when `elf` is given and no other instance uses
    /// it; then the SSD it is associated with (per the registry) when `delete_ssd`.
    Terminate {
        instance: Aid,
        #[serde(default)]
        elf: Option<Aid>,
        #[serde(default)]
        delete_ssd: bool,
    },
    /// Read the whole registry (GET STATUS, every scope, with 6310 paging).
    Resync,
    /// PUT KEY in the security domain's own secure channel: `new_keys` replace key set `kvn`
    /// (0: the one the session opened with) when `replace`, or are added.
    RotateKeys { sd: Aid, kvn: u8, new_keys: KeysetRef, replace: bool },
}

impl Operation {
    pub fn name(&self) -> &'static str {
        match self {
            Operation::Deploy(_) => "deploy",
            Operation::Suspend { .. } => "suspend",
            Operation::Resume { .. } => "resume",
            Operation::Terminate { .. } => "terminate",
            Operation::Resync => "resync",
            Operation::RotateKeys { .. } => "rotate_keys",
        }
    }
}

/// How to plan.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct PlanOptions {
    /// Baseline for benchmarks: one APDU per round trip, the handshake never predicted.
    pub one_apdu_per_round_trip: bool,
    /// Security level of the sessions (EXTERNAL AUTHENTICATE P1). Default: C-MAC + C-DEC, plus
    /// R-MAC when the card's SCP03 `i` offers it.
    pub level: Option<u8>,
    /// The sequence counter a newly created SSD starts with (as GET DATA `C1` would read it),
    /// when the card's behaviour is known; `None` reads it before opening the SSD's channel.
    pub new_sd_sequence_counter: Option<u32>,
}

/// Hex for `Option<Vec<u8>>`.
pub(crate) mod opt_hex {
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(v: &Option<Vec<u8>>, s: S) -> Result<S::Ok, S::Error> {
        match v {
            Some(b) => s.serialize_str(&tsm_gp::hex::encode(b)),
            None => s.serialize_none(),
        }
    }
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Vec<u8>>, D::Error> {
        Option::<String>::deserialize(d)?.map(|s| tsm_gp::hex::decode(&s).map_err(serde::de::Error::custom)).transpose()
    }
}

/// Privileges as the hex bytes INSTALL carries.
pub(crate) mod privileges_serde {
    use serde::{Deserialize, Deserializer, Serializer};
    use tsm_gp::gp::Privileges;

    pub fn serialize<S: Serializer>(p: &Privileges, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&tsm_gp::hex::encode(&p.to_bytes()))
    }
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Privileges, D::Error> {
        let b = tsm_gp::hex::decode(&String::deserialize(d)?).map_err(serde::de::Error::custom)?;
        Privileges::from_bytes(&b).map_err(serde::de::Error::custom)
    }
}

/// Registry entries as `{ "kind": ..., "tlv": "<E3 value as GET STATUS answers it>" }`, so that
/// every field survives (the kind keeps the typed life cycle).
pub(crate) mod registry_serde {
    use super::*;
    use serde::{Deserializer, Serializer};
    use tsm_gp::gp::lifecycle::{AppLifeCycle, CardLifeCycle, ElfLifeCycle, SdLifeCycle};

    #[derive(Serialize, Deserialize)]
    struct Stored {
        kind: String,
        #[serde(with = "tsm_gp::hex::serde")]
        tlv: Vec<u8>,
    }

    fn kind(e: &RegistryEntry) -> &'static str {
        match e.lifecycle {
            LifeCycle::Card(_) => "card",
            LifeCycle::SecurityDomain(_) => "sd",
            LifeCycle::Application(_) => "app",
            LifeCycle::LoadFile(_) => "elf",
        }
    }

    pub(crate) fn to_stored(entries: &[RegistryEntry]) -> Vec<impl Serialize> {
        entries.iter().map(|e| Stored { kind: kind(e).into(), tlv: e.tagged_value() }).collect()
    }

    pub fn serialize<S: Serializer>(v: &Option<Vec<RegistryEntry>>, s: S) -> Result<S::Ok, S::Error> {
        v.as_ref().map(|e| to_stored(e)).serialize(s)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Vec<RegistryEntry>>, D::Error> {
        let Some(stored) = Option::<Vec<Stored>>::deserialize(d)? else { return Ok(None) };
        let mut out = Vec::with_capacity(stored.len());
        for s in stored {
            let scope = match s.kind.as_str() {
                "card" => StatusScope::ISD,
                "sd" | "app" => StatusScope::APPLICATIONS,
                "elf" => StatusScope::LOAD_FILES_AND_MODULES,
                k => return Err(serde::de::Error::custom(format!("unknown registry entry kind {k:?}"))),
            };
            let mut e = RegistryEntry::from_tagged(scope, &s.tlv).map_err(serde::de::Error::custom)?;
            let v = e.lifecycle.value();
            e.lifecycle = match s.kind.as_str() {
                "card" => LifeCycle::Card(CardLifeCycle(v)),
                "sd" => LifeCycle::SecurityDomain(SdLifeCycle(v)),
                "app" => LifeCycle::Application(AppLifeCycle(v)),
                _ => LifeCycle::LoadFile(ElfLifeCycle(v)),
            };
            out.push(e);
        }
        Ok(Some(out))
    }
}
