//! The simulated card: construction, persistence, the APDU entry point, logical channels,
//! SELECT, and routing to the card manager (security domains) or the application models.

use crate::config::{CardConfig, KeySet, alg_fits};
use crate::device::CardDevice;
use crate::error::SeError;
use crate::models::{AppContext, AppModel, ModelRegistry};
use crate::rng::RngState;
use crate::state::{AppRecord, CardState, DomainRecord, KeyRecord, LoadFileRecord, SSD_INITIAL_KEY_AAD, STATE_FORMAT, Settings, key_aad};
use zeroize::Zeroizing;
use std::collections::{BTreeMap, VecDeque};
use std::path::Path;
use tsm_gp::apdu::{CommandApdu, ResponseApdu};
use tsm_gp::codec::Codec;
use tsm_gp::crypto::seal;
use tsm_gp::crypto::{KeyAlg, SecretKey};
use tsm_gp::gp::data::{CardRecognitionData, CrdEntry, Oid};
use tsm_gp::gp::lifecycle::{AppLifeCycle, CardLifeCycle, SdLifeCycle};
use tsm_gp::gp::load::LoadAssembler;
use tsm_gp::gp::status::{StatusFormat, StatusScope};
use tsm_gp::gp::{Aid, GpError, InstallParams, Privilege, Privileges};
use tsm_gp::profile::CardProfile;
use tsm_gp::scp::{CardChannel, Scp, scp02, scp03};
use tsm_gp::sw::StatusWord;
use tsm_gp::tlv;
use tsm_gp::transport::{Transport, TransportError};

/// AID of the built-in executable load file of security domains (in ROM, as on real cards).
pub const SD_PACKAGE_AID: Aid = Aid::from_array([0xA0, 0x00, 0x00, 0x01, 0x51, 0x53, 0x50]);
/// AID of its executable module: INSTALL [for install] of this module with the Security
/// Domain privilege creates a supplementary security domain.
pub const SD_MODULE_AID: Aid = Aid::from_array([0xA0, 0x00, 0x00, 0x01, 0x51, 0x53, 0x50, 0x41]);

/// Logical channels 0 (basic) to 3.
pub const LOGICAL_CHANNELS: usize = 4;

/// Privileges of the ISD: Security Domain, Card Lock, Card Terminate, Card Reset, CVM
/// Management; Trusted Path, Authorized Management, Token Verification, Global Delete, Global
/// Lock, Global Registry; Receipt Generation.
pub(crate) const ISD_PRIVILEGES: u32 = 0x9E_FC80;

pub(crate) type Sw<T> = Result<T, StatusWord>;

pub(crate) fn sw(v: u16) -> ResponseApdu {
    ResponseApdu::status(StatusWord(v))
}

pub(crate) fn ok(data: Vec<u8>) -> ResponseApdu {
    ResponseApdu::new(data, StatusWord::SUCCESS)
}

/// The status word a card gives for a command it cannot decode.
pub(crate) fn gp_sw(e: &GpError) -> StatusWord {
    match e {
        GpError::WrongClass { .. } => StatusWord::CLA_NOT_SUPPORTED,
        GpError::WrongInstruction { .. } => StatusWord::INS_NOT_SUPPORTED,
        GpError::BadParameters { .. } | GpError::LoadSequence { .. } => StatusWord::INCORRECT_P1P2,
        _ => StatusWord::WRONG_DATA,
    }
}

/// An open secure channel session on a logical channel.
pub(crate) struct Session {
    pub sd: Aid,
    pub channel: Box<dyn CardChannel>,
}

/// INITIALIZE UPDATE answered, EXTERNAL AUTHENTICATE awaited.
pub(crate) enum Pending {
    Scp02 { sd: Aid, kvn: u8, pending: scp02::card::CardPending },
    Scp03 { sd: Aid, kvn: u8, pending: scp03::card::CardPending, dek: SecretKey, renc: Option<crate::renc::REncKeys> },
}

/// A load in progress: INSTALL [for load] accepted, LOAD blocks arriving.
pub(crate) struct LoadInProgress {
    pub elf: Aid,
    pub target_sd: Aid,
    pub hash: Vec<u8>,
    pub nv_min: u32,
    pub assembler: LoadAssembler,
    pub received: usize,
    /// Authorized by a Load Token (delegated management): the last block answers a receipt.
    pub delegated: bool,
}

/// Where a GET STATUS answered `6310` stopped.
#[derive(Clone, PartialEq, Eq)]
pub(crate) struct StatusCursor {
    pub scope: StatusScope,
    pub format: StatusFormat,
    pub criteria: Vec<u8>,
    pub next: usize,
}

/// Volatile state of one logical channel.
#[derive(Default)]
pub(crate) struct Channel {
    pub open: bool,
    pub selected: Option<Aid>,
    pub session: Option<Session>,
    pub pending: Option<Pending>,
    pub load: Option<LoadInProgress>,
    pub status_cursor: Option<StatusCursor>,
    /// INSTALL [for personalization] target: STORE DATA goes there.
    pub perso_target: Option<Aid>,
    /// Next STORE DATA block number expected (None: a new sequence starts at 0).
    pub store_next: Option<u8>,
}

impl Channel {
    /// Ends the secure channel session and everything that hangs on it.
    pub(crate) fn end_session(&mut self) {
        self.session = None;
        self.pending = None;
        self.load = None;
        self.status_cursor = None;
        self.perso_target = None;
        self.store_next = None;
    }

    /// A command as it arrived, unwrapped by the session if there is one; else the answer to
    /// give. Secure messaging without a session is refused.
    pub(crate) fn unwrap_command(&mut self, cmd: &CommandApdu) -> Result<CommandApdu, ResponseApdu> {
        match self.session.as_mut() {
            Some(s) => s.channel.unwrap_command(cmd).map_err(|e| {
                // GPCS 2.3 §10.2.3 / Amd D §6.2.4: a secure messaging error ends the session.
                self.end_session();
                ResponseApdu::status(e.card_status())
            }),
            None if cmd.is_secure_messaging() => Err(ResponseApdu::status(StatusWord::SECURITY_STATUS_NOT_SATISFIED)),
            None => Ok(cmd.clone()),
        }
    }

    /// A response wrapped by the session if there is one (a failure ends the session).
    pub(crate) fn wrap_response(&mut self, resp: ResponseApdu) -> ResponseApdu {
        match self.session.as_mut() {
            Some(s) => s.channel.wrap_response(resp).unwrap_or_else(|e| {
                self.end_session();
                ResponseApdu::status(e.card_status())
            }),
            None => resp,
        }
    }
}

/// A simulated GlobalPlatform card. See the crate documentation.
pub struct SimCard {
    pub(crate) state: CardState,
    /// Key values by (security domain, key version, key id); metadata lives in the state.
    pub(crate) secrets: BTreeMap<(Aid, u8, u8), SecretKey>,
    pub(crate) models: ModelRegistry,
    pub(crate) live: BTreeMap<Aid, Box<dyn AppModel>>,
    pub(crate) channels: Vec<Channel>,
    pub(crate) powered: bool,
    pub(crate) scripted: VecDeque<Vec<u8>>,
    /// The initial key of new SSDs (sealed in sealed states only).
    pub(crate) ssd_initial_key: Zeroizing<Vec<u8>>,
    /// Applications to deselect once the current response is protected (the security domain
    /// that just locked the card, for instance).
    pub(crate) deferred_evict: Vec<Aid>,
    /// The command being processed carries a verified delegated management token (volatile,
    /// cleared after each INSTALL and DELETE).
    pub(crate) token_verified: bool,
}

impl std::fmt::Debug for SimCard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SimCard")
            .field("profile", &self.state.profile.name)
            .field("life_cycle", &CardLifeCycle(self.state.life_cycle))
            .field("apps", &self.state.apps.len())
            .field("load_files", &self.state.load_files.len())
            .finish_non_exhaustive()
    }
}

pub(crate) fn key_type_of(alg: KeyAlg) -> u8 {
    if alg.is_des() { tsm_gp::gp::put_key::KEY_TYPE_DES } else { tsm_gp::gp::put_key::KEY_TYPE_AES }
}

fn profile_err(p: &CardProfile, detail: impl Into<String>) -> SeError {
    SeError::Profile { profile: p.name.clone(), detail: detail.into() }
}

/// Checks that a profile describes a card this simulator can be; returns the ISD AID.
fn validate_profile(profile: &CardProfile) -> Result<Aid, SeError> {
    let isd = Aid::new(&profile.isd_aid).map_err(|e| profile_err(profile, format!("ISD AID: {e}")))?;
    if isd == SD_PACKAGE_AID || isd == SD_MODULE_AID {
        return Err(profile_err(profile, "the ISD AID collides with the built-in security domain package"));
    }
    if profile.scp.is_empty() {
        return Err(profile_err(profile, "no secure channel protocol"));
    }
    for s in &profile.scp {
        check_scp(*s).map_err(|e| profile_err(profile, e))?;
    }
    if profile.atr.len() < 2 || profile.atr.len() > 33 {
        return Err(profile_err(profile, format!("ATR of {} bytes", profile.atr.len())));
    }
    if profile.cplc.len() > 255 {
        return Err(profile_err(profile, "CPLC longer than 255 bytes"));
    }
    Ok(isd)
}

/// Checks that `scp` is a protocol and option set the card side implements.
pub(crate) fn check_scp(scp: Scp) -> Result<(), String> {
    match scp {
        Scp::Scp02 { i } => {
            let p = scp02::IParam(i);
            p.validate().map_err(|e| e.to_string())?;
            if !p.explicit() {
                return Err(format!("SCP02 i={i:02X}: implicit initiation is not simulated"));
            }
            Ok(())
        }
        Scp::Scp03 { i } => scp03::check_i(i).map_err(|e| e.to_string()),
    }
}

impl SimCard {
    /// A new card of `profile` configured by `config`, powered on, the ISD selected on the basic
    /// channel.
    pub fn new(profile: CardProfile, config: CardConfig) -> Result<SimCard, SeError> {
        let isd = validate_profile(&profile)?;
        let scp = config.scp.unwrap_or(profile.scp[0]);
        if !profile.scp.contains(&scp) {
            return Err(SeError::Config(format!("{scp} is not among the profile's secure channels")));
        }
        if profile.quirks.no_s16 && matches!(scp, Scp::Scp03 { i } if i & 0x01 != 0) {
            return Err(SeError::Config(format!("{scp} is S16 but the profile has the no_s16 quirk")));
        }
        let keys = config.isd_keys.clone().unwrap_or_else(|| KeySet::gp_test_key(scp));
        for k in keys.keys() {
            if !alg_fits(scp, k.alg()) {
                return Err(SeError::Config(format!("ISD key of type {:?} cannot run {scp}", k.alg())));
            }
        }
        let v00 = keys.version == 0 && profile.quirks.key_version_00;
        if !(1..=0x7F).contains(&keys.version) && keys.version != crate::config::INITIAL_KEY_VERSION && !v00 {
            return Err(SeError::Config(format!(
                "key version {:02X} outside 01..7F and FF (00 only with the key_version_00 quirk)",
                keys.version
            )));
        }
        if config.identity.gp_version.is_empty() {
            return Err(SeError::Config("identity: empty GP version".into()));
        }
        if let Some(c) = &config.identity.capabilities {
            tsm_gp::gp::data::CardCapabilities::parse(c)
                .map_err(|e| SeError::Config(format!("identity: card capabilities: {e}")))?;
        }
        let eid = match config.eid {
            Some(e) => Some(e.to_vec()),
            None if profile.quirks.euicc => Some(crate::config::default_eid(&profile.cplc).to_vec()),
            None => None,
        };
        let max_seq = match scp {
            Scp::Scp02 { .. } => 0xFFFF,
            Scp::Scp03 { .. } => scp03::MAX_SEQUENCE_COUNTER,
        };
        if config.sequence_counter > max_seq {
            return Err(SeError::Config(format!("sequence counter {:X} does not fit {scp}", config.sequence_counter)));
        }
        let lc = config.life_cycle;
        if lc.name().is_none() {
            return Err(SeError::Config(format!("card life cycle {:02X} is not a GP state", lc.0)));
        }
        let ssd_key_ok = SecretKey::des3(&config.ssd_initial_key).is_ok() || SecretKey::aes(&config.ssd_initial_key).is_ok();
        if !ssd_key_ok {
            return Err(SeError::Config("the SSD initial key has no valid 3DES or AES length".into()));
        }
        let kdd = config.kdd_for(&profile).to_vec();
        let domain = DomainRecord {
            scp,
            kdd,
            sequence_counter: config.sequence_counter,
            keys: Vec::new(),
            auth_failures: BTreeMap::new(),
            nv_quota: None,
            data: BTreeMap::new(),
            public_keys: Vec::new(),
        };
        let isd_record = AppRecord {
            aid: isd,
            elf: SD_PACKAGE_AID,
            module: SD_MODULE_AID,
            privileges: Privileges::from_bits(ISD_PRIVILEGES),
            life_cycle: SdLifeCycle::PERSONALIZED.0,
            associated_sd: isd,
            install_params: Vec::new(),
            nv_cost: 0,
            volatile_cost: 0,
            model: None,
            domain: Some(domain),
            contactless_state: None,
        };
        let sd_elf = LoadFileRecord {
            aid: SD_PACKAGE_AID,
            life_cycle: tsm_gp::gp::ElfLifeCycle::LOADED.0,
            associated_sd: isd,
            modules: vec![SD_MODULE_AID],
            version: vec![1, 0],
            nv_cost: 0,
            builtin: true,
            lfdb_sha256: Vec::new(),
            hidden: false,
            contactless_state: None,
        };
        let state = CardState {
            format: STATE_FORMAT.to_string(),
            profile,
            life_cycle: lc.0,
            settings: Settings {
                auth_retry_limit: config.auth_retry_limit,
                instance_cost: config.instance_cost,
                sd_instance_cost: config.sd_instance_cost,
                volatile_memory: config.volatile_memory,
                ssd_initial_key_sealed: None,
            },
            iin: config.iin.clone(),
            cin: config.cin.clone(),
            load_files: vec![sd_elf],
            apps: vec![isd_record],
            rng: RngState::new(config.seed),
            eid,
            identity: config.identity.clone(),
            confirmation_counter: 0,
        };
        let mut card = SimCard::empty(state, ModelRegistry::new());
        card.ssd_initial_key = Zeroizing::new(config.ssd_initial_key.clone());
        for (id, k) in (1u8..).zip(keys.keys()) {
            card.put_secret(&isd, keys.version, id, (*k).clone());
        }
        Ok(card)
    }

    fn empty(state: CardState, models: ModelRegistry) -> SimCard {
        let mut card = SimCard {
            state,
            secrets: BTreeMap::new(),
            models,
            live: BTreeMap::new(),
            channels: (0..LOGICAL_CHANNELS).map(|_| Channel::default()).collect(),
            powered: true,
            scripted: VecDeque::new(),
            ssd_initial_key: Zeroizing::new(Vec::new()),
            deferred_evict: Vec::new(),
            token_verified: false,
        };
        card.fresh_channels();
        card
    }

    /// A card from a state whose key values are sealed under `storage_key` (a state file, or
    /// [`SimCard::sealed_state`]). Application models come from the default
    /// [`ModelRegistry`]; use [`SimCard::from_state_with_models`] for others.
    pub fn from_state(state: CardState, storage_key: &SecretKey) -> Result<SimCard, SeError> {
        Self::from_state_with_models(state, storage_key, ModelRegistry::new())
    }

    pub fn from_state_with_models(state: CardState, storage_key: &SecretKey, models: ModelRegistry) -> Result<SimCard, SeError> {
        if state.format != STATE_FORMAT {
            return Err(SeError::State(format!("format {:?}, this version reads {STATE_FORMAT:?}", state.format)));
        }
        validate_profile(&state.profile)?;
        if state.apps.first().is_none_or(|a| !a.is_sd()) {
            return Err(SeError::State("the first registry entry must be the ISD".into()));
        }
        if Aid::new(&state.profile.isd_aid).ok() != Some(state.apps[0].aid) {
            return Err(SeError::State("the ISD entry does not carry the profile's ISD AID".into()));
        }
        let mut secrets = BTreeMap::new();
        for app in &state.apps {
            let Some(d) = &app.domain else { continue };
            check_scp(d.scp).map_err(|e| SeError::State(format!("security domain {}: {e}", app.aid)))?;
            for k in &d.keys {
                let name = key_aad(&app.aid, k.version, k.id);
                let sealed = k.sealed.as_ref().ok_or_else(|| SeError::MissingKey { key: name.clone() })?;
                let plain = seal::open(storage_key, name.as_bytes(), sealed).map_err(|_| SeError::Seal { key: name.clone() })?;
                let key = SecretKey::new(k.alg, &plain).map_err(|e| SeError::State(format!("{name}: {e}")))?;
                if key.kcv().as_slice() != k.kcv.as_slice() {
                    return Err(SeError::State(format!("{name}: KCV of the unsealed key does not match the record")));
                }
                secrets.insert((app.aid, k.version, k.id), key);
            }
            for k in &d.public_keys {
                if tsm_gp::crypto::ecc::P256PublicKey::from_sec1(&k.point).is_err() {
                    return Err(SeError::State(format!("security domain {}: public key {:02X}/{:02X} is not a P-256 point", app.aid, k.version, k.id)));
                }
            }
        }
        let mut live: BTreeMap<Aid, Box<dyn AppModel>> = BTreeMap::new();
        for app in &state.apps {
            let Some(m) = &app.model else { continue };
            let f = models.by_name(&m.name).ok_or_else(|| SeError::Model { model: m.name.clone(), detail: "not registered".into() })?;
            let inst = f.restore(&m.state).map_err(|detail| SeError::Model { model: m.name.clone(), detail })?;
            live.insert(app.aid, inst);
        }
        let sealed_ssd_key = state.settings.ssd_initial_key_sealed.as_ref().ok_or_else(|| SeError::MissingKey { key: SSD_INITIAL_KEY_AAD.into() })?;
        let ssd_initial_key = seal::open(storage_key, SSD_INITIAL_KEY_AAD.as_bytes(), sealed_ssd_key)
            .map_err(|_| SeError::Seal { key: SSD_INITIAL_KEY_AAD.into() })?;
        let mut card = SimCard::empty(state, models);
        card.ssd_initial_key = ssd_initial_key;
        card.state.settings.ssd_initial_key_sealed = None;
        for k in card.state.apps.iter_mut().filter_map(|a| a.domain.as_mut()).flat_map(|d| d.keys.iter_mut()) {
            k.sealed = None;
        }
        card.secrets = secrets;
        card.live = live;
        Ok(card)
    }

    /// The persistent state. Key records carry metadata only (type, version, id, KCV); see
    /// [`SimCard::sealed_state`] for a state that can be restored.
    pub fn state(&self) -> &CardState {
        &self.state
    }

    /// The persistent state with every key value sealed under `storage_key`
    /// (`tsm_gp::crypto::seal::seal`, a fresh random IV each, the key's place as associated
    /// data): what [`SimCard::save`] writes and [`SimCard::from_state`] reads.
    pub fn sealed_state(&self, storage_key: &SecretKey) -> Result<CardState, SeError> {
        let mut st = self.state.clone();
        let fresh_iv = || -> Result<[u8; 16], SeError> {
            let mut iv = [0u8; 16];
            // The IV comes from the OS even in deterministic mode: sealing is not part of
            // what a card answers, and an IV must never repeat.
            getrandom::fill(&mut iv).map_err(|e| SeError::State(format!("no randomness for sealing: {e}")))?;
            Ok(iv)
        };
        st.settings.ssd_initial_key_sealed =
            Some(seal::seal(storage_key, &fresh_iv()?, SSD_INITIAL_KEY_AAD.as_bytes(), &self.ssd_initial_key)?);
        for app in st.apps.iter_mut() {
            let aid = app.aid;
            let Some(d) = app.domain.as_mut() else { continue };
            for k in d.keys.iter_mut() {
                let name = key_aad(&aid, k.version, k.id);
                let key = self.secrets.get(&(aid, k.version, k.id)).ok_or_else(|| SeError::MissingKey { key: name.clone() })?;
                k.sealed = Some(seal::seal(storage_key, &fresh_iv()?, name.as_bytes(), key.expose())?);
            }
        }
        Ok(st)
    }

    /// Writes the sealed state as JSON.
    pub fn save(&self, path: &Path, storage_key: &SecretKey) -> Result<(), SeError> {
        let st = self.sealed_state(storage_key)?;
        let json = serde_json::to_string_pretty(&st).map_err(|e| SeError::Json(e.to_string()))?;
        std::fs::write(path, json).map_err(|source| SeError::Io { path: path.display().to_string(), source })
    }

    /// Reads a state file written by [`SimCard::save`].
    pub fn load(path: &Path, storage_key: &SecretKey) -> Result<SimCard, SeError> {
        Self::load_with_models(path, storage_key, ModelRegistry::new())
    }

    pub fn load_with_models(path: &Path, storage_key: &SecretKey, models: ModelRegistry) -> Result<SimCard, SeError> {
        let text = std::fs::read_to_string(path).map_err(|source| SeError::Io { path: path.display().to_string(), source })?;
        let st: CardState = serde_json::from_str(&text).map_err(|e| SeError::Json(e.to_string()))?;
        Self::from_state_with_models(st, storage_key, models)
    }

    /// The model registry (to bind packages to models before they are installed).
    pub fn models_mut(&mut self) -> &mut ModelRegistry {
        &mut self.models
    }

    /// Replays: the next INITIALIZE UPDATEs use these card challenges, in order, instead of
    /// random or derived ones (SCP02 takes the first 6 bytes, SCP03 the first 8 or 16; shorter
    /// values are padded with zeros). Volatile: not saved. For tests and trace replays.
    pub fn script_challenges<I, B>(&mut self, challenges: I)
    where
        I: IntoIterator<Item = B>,
        B: AsRef<[u8]>,
    {
        self.scripted.extend(challenges.into_iter().map(|c| c.as_ref().to_vec()));
    }

    /// Replays: sets the stored secure channel sequence counter of security domain `sd` (the
    /// ISD when `None`). SCP02 uses it for the next session as is; SCP03 increments it on the
    /// next INITIALIZE UPDATE and reports the incremented value.
    pub fn force_sequence_counter(&mut self, sd: Option<&Aid>, counter: u32) -> Result<(), SeError> {
        let aid = sd.copied().unwrap_or(self.state.isd());
        let d = self.state.domain_mut(&aid).ok_or_else(|| SeError::State(format!("{aid} is not a security domain")))?;
        d.sequence_counter = counter;
        Ok(())
    }

    /// The application selected on a logical channel (`None` when the channel is closed or
    /// nothing is selected).
    pub fn selected(&self, channel: u8) -> Option<Aid> {
        self.channels.get(channel as usize).filter(|c| c.open).and_then(|c| c.selected)
    }

    /// Whether a secure channel session is open on a logical channel.
    pub fn has_secure_channel(&self, channel: u8) -> bool {
        self.channels.get(channel as usize).is_some_and(|c| c.session.is_some())
    }

    /// Whether the card is powered.
    pub fn is_powered(&self) -> bool {
        self.powered
    }

    // ---- key store ----

    pub(crate) fn put_secret(&mut self, sd: &Aid, version: u8, id: u8, key: SecretKey) {
        let rec =
            KeyRecord { version, id, key_type: key_type_of(key.alg()), alg: key.alg(), kcv: key.kcv().to_vec(), sealed: None, receipt: false };
        if let Some(d) = self.state.domain_mut(sd) {
            d.keys.retain(|k| !(k.version == version && k.id == id));
            d.keys.push(rec);
            d.keys.sort_by_key(|k| (k.version, k.id));
        }
        self.secrets.insert((*sd, version, id), key);
    }

    pub(crate) fn remove_secret(&mut self, sd: &Aid, version: u8, id: u8) {
        if let Some(d) = self.state.domain_mut(sd) {
            d.keys.retain(|k| !(k.version == version && k.id == id));
        }
        self.secrets.remove(&(*sd, version, id));
    }

    pub(crate) fn random(&mut self, out: &mut [u8]) -> bool {
        self.state.rng.fill(out)
    }

    // ---- channels and power ----

    fn fresh_channels(&mut self) {
        let isd = self.state.isd();
        for (i, c) in self.channels.iter_mut().enumerate() {
            *c = Channel::default();
            if i == 0 {
                c.open = true;
                c.selected = Some(isd);
            }
        }
    }

    fn deselect_models(&mut self) {
        let selected: Vec<(u8, Aid)> =
            self.channels.iter().enumerate().filter_map(|(i, c)| c.selected.map(|a| (i as u8, a))).collect();
        for (ch, aid) in selected {
            self.call_deselect(ch, &aid);
        }
    }

    fn cold(&mut self) {
        self.deselect_models();
        self.fresh_channels();
    }

    pub(crate) fn app_context(&self, aid: &Aid, channel: u8) -> Option<AppContext> {
        let a = self.state.app(aid)?;
        Some(AppContext { aid: a.aid, elf: a.elf, module: a.module, privileges: a.privileges, channel, life_cycle: a.life_cycle })
    }

    /// Copies a model's state into the registry record.
    pub(crate) fn sync_model(&mut self, aid: &Aid) {
        let snap = self.live.get(aid).map(|m| m.snapshot());
        if let (Some(s), Some(rec)) = (snap, self.state.app_mut(aid))
            && let Some(m) = rec.model.as_mut()
        {
            m.state = s;
        }
    }

    fn call_deselect(&mut self, ch: u8, aid: &Aid) {
        let Some(ctx) = self.app_context(aid, ch) else { return };
        if let Some(m) = self.live.get_mut(aid) {
            m.deselect(&ctx);
            self.sync_model(aid);
        }
    }

    /// Drops `aid` from every channel it is selected on (it was locked or deleted).
    pub(crate) fn evict(&mut self, aid: &Aid) {
        for i in 0..self.channels.len() {
            if self.channels[i].selected == Some(*aid) {
                self.call_deselect(i as u8, aid);
                self.channels[i].selected = None;
                self.channels[i].end_session();
            }
        }
    }

    // ---- APDU processing ----

    /// Processes one command APDU and returns the response (data ‖ SW1 SW2). Every input,
    /// including garbage, gets a status word. An unpowered card is powered on first.
    pub fn transmit(&mut self, apdu: &[u8]) -> Vec<u8> {
        if !self.powered {
            self.power_on();
        }
        let r = self.process(apdu);
        let mut out = r.data;
        out.extend_from_slice(&r.sw.to_bytes());
        out
    }

    fn process(&mut self, bytes: &[u8]) -> ResponseApdu {
        let Ok(cmd) = CommandApdu::from_bytes(bytes) else {
            return ResponseApdu::status(StatusWord::WRONG_LENGTH);
        };
        if cmd.extended && !self.state.profile.extended_length {
            return ResponseApdu::status(StatusWord::WRONG_LENGTH);
        }
        // ISO 7816-4 §5.4.1: 0x and 8x-9x use the first interindustry coding (b5 chaining,
        // b4-b3 SM, b2-b1 channel); 4x-7x and Cx-Fx the further coding (channels 4-19);
        // 2x-3x and Ax-Bx are RFU (and FF is PPS).
        if cmd.cla == 0xFF || matches!(cmd.cla & 0x60, 0x20) {
            return ResponseApdu::status(StatusWord::CLA_NOT_SUPPORTED);
        }
        if cmd.cla & 0x40 == 0 && cmd.cla & 0x10 != 0 {
            return ResponseApdu::status(StatusWord::CHAINING_NOT_SUPPORTED);
        }
        let ch = cmd.logical_channel();
        if ch as usize >= LOGICAL_CHANNELS || !self.channels[ch as usize].open {
            return ResponseApdu::status(StatusWord::LOGICAL_CHANNEL_NOT_SUPPORTED);
        }
        let iso = cmd.cla & 0x80 == 0;
        if iso && cmd.ins == tsm_gp::gp::ins::MANAGE_CHANNEL {
            return self.manage_channel(ch, &cmd);
        }
        if iso && cmd.ins == tsm_gp::gp::ins::SELECT && cmd.p1 == 0x04 {
            return self.select(ch, &cmd);
        }
        let Some(aid) = self.channels[ch as usize].selected else {
            return ResponseApdu::status(StatusWord::FILE_NOT_FOUND);
        };
        let is_sd = self.state.app(&aid).is_some_and(AppRecord::is_sd);
        if is_sd {
            if iso && cmd.ins == tsm_gp::gp::ins::SELECT {
                // Selection by file identifier or path: a security domain has no files.
                return ResponseApdu::status(if matches!(cmd.p1, 0x00..=0x03 | 0x08 | 0x09) {
                    StatusWord::FILE_NOT_FOUND
                } else {
                    StatusWord::INCORRECT_P1P2
                });
            }
            self.sd_process(ch, aid, &cmd)
        } else {
            self.app_process(ch, aid, &cmd)
        }
    }

    fn app_process(&mut self, ch: u8, aid: Aid, cmd: &CommandApdu) -> ResponseApdu {
        let Some(ctx) = self.app_context(&aid, ch) else { return ResponseApdu::status(StatusWord::FILE_NOT_FOUND) };
        let Some(m) = self.live.get_mut(&aid) else { return ResponseApdu::status(StatusWord::INS_NOT_SUPPORTED) };
        if m.secure_channel() {
            return self.app_secure_process(ch, aid, cmd);
        }
        let r = m.process(&ctx, cmd);
        self.sync_model(&aid);
        r
    }

    /// An application that uses its security domain's secure channel (GP API
    /// `SecureChannel.processSecurity`, `unwrap`, `wrap`; GPCS 2.3 §10.1.2): the handshake runs
    /// with the associated security domain's keys, commands are unwrapped before the model
    /// sees them and responses protected after.
    fn app_secure_process(&mut self, ch: u8, aid: Aid, cmd: &CommandApdu) -> ResponseApdu {
        let Some(sd) = self.state.app(&aid).map(|a| a.associated_sd).filter(|s| self.state.domain(s).is_some()) else {
            return ResponseApdu::status(StatusWord::CONDITIONS_NOT_SATISFIED);
        };
        if cmd.cla & 0x80 != 0 {
            match cmd.ins {
                tsm_gp::gp::ins::INITIALIZE_UPDATE => return self.initialize_update(ch, sd, cmd),
                tsm_gp::gp::ins::EXTERNAL_AUTHENTICATE => return self.external_authenticate(ch, sd, cmd),
                _ => {}
            }
        }
        let c = &mut self.channels[ch as usize];
        c.pending = None;
        let plain = match c.unwrap_command(cmd) {
            Ok(p) => p,
            Err(r) => return r,
        };
        let Some(ctx) = self.app_context(&aid, ch) else { return ResponseApdu::status(StatusWord::FILE_NOT_FOUND) };
        let Some(m) = self.live.get_mut(&aid) else { return ResponseApdu::status(StatusWord::INS_NOT_SUPPORTED) };
        let resp = m.process(&ctx, &plain);
        self.sync_model(&aid);
        self.channels[ch as usize].wrap_response(resp)
    }

    /// MANAGE CHANNEL (ISO 7816-4 §11.1.2): open (P1 `00`, P2 `00` for "any" or the channel
    /// number) and close (P1 `80`, P2 the channel). A new channel starts with the ISD selected.
    fn manage_channel(&mut self, ch: u8, cmd: &CommandApdu) -> ResponseApdu {
        if cmd.is_secure_messaging() {
            return ResponseApdu::status(StatusWord::SECURE_MESSAGING_NOT_SUPPORTED);
        }
        if !cmd.data.is_empty() {
            return ResponseApdu::status(StatusWord::WRONG_LENGTH);
        }
        match cmd.p1 {
            0x00 => {
                let n = if cmd.p2 == 0 {
                    match (1..LOGICAL_CHANNELS).find(|&i| !self.channels[i].open) {
                        Some(i) => i,
                        None => return ResponseApdu::status(StatusWord::FUNCTION_NOT_SUPPORTED),
                    }
                } else {
                    let n = cmd.p2 as usize;
                    if n >= LOGICAL_CHANNELS {
                        return ResponseApdu::status(StatusWord::LOGICAL_CHANNEL_NOT_SUPPORTED);
                    }
                    if self.channels[n].open {
                        return ResponseApdu::status(StatusWord::INCORRECT_P1P2);
                    }
                    n
                };
                let isd = self.state.isd();
                self.channels[n] = Channel { open: true, selected: Some(isd), ..Channel::default() };
                if cmd.p2 == 0 { ok(vec![n as u8]) } else { ok(Vec::new()) }
            }
            0x80 => {
                let n = if cmd.p2 == 0 { ch as usize } else { cmd.p2 as usize };
                if n == 0 {
                    return ResponseApdu::status(StatusWord::INCORRECT_P1P2);
                }
                if n >= LOGICAL_CHANNELS || !self.channels[n].open {
                    return ResponseApdu::status(StatusWord::LOGICAL_CHANNEL_NOT_SUPPORTED);
                }
                if let Some(a) = self.channels[n].selected {
                    self.call_deselect(n as u8, &a);
                }
                self.channels[n] = Channel::default();
                ok(Vec::new())
            }
            _ => ResponseApdu::status(StatusWord::INCORRECT_P1P2),
        }
    }

    /// Whether `app` can be selected now (life cycle of the card and of the application).
    fn selectable(&self, app: &AppRecord) -> bool {
        let card = CardLifeCycle(self.state.life_cycle);
        if app.aid == self.state.isd() {
            return true;
        }
        if card == CardLifeCycle::TERMINATED {
            return false;
        }
        if card == CardLifeCycle::CARD_LOCKED && !app.privileges.contains(Privilege::FinalApplication) {
            return false;
        }
        AppLifeCycle(app.life_cycle).is_selectable() && !AppLifeCycle(app.life_cycle).is_locked()
    }

    /// SELECT by name (GPCS 2.3 §11.9): exact AID, else the first (P2 `x0`) or next (`x2`)
    /// application whose AID starts with the name, in registry order. A failed SELECT leaves
    /// the current selection as it was.
    fn select(&mut self, ch: u8, cmd: &CommandApdu) -> ResponseApdu {
        if cmd.is_secure_messaging() {
            return ResponseApdu::status(StatusWord::SECURE_MESSAGING_NOT_SUPPORTED);
        }
        let occurrence = cmd.p2 & 0x03;
        if cmd.p2 & 0xF0 != 0 || !matches!(occurrence, 0x00 | 0x02) {
            return ResponseApdu::status(StatusWord::INCORRECT_P1P2);
        }
        if cmd.data.len() > 16 {
            return ResponseApdu::status(StatusWord::WRONG_DATA);
        }
        let isd = self.state.isd();
        let target = if cmd.data.is_empty() {
            isd
        } else if occurrence == 0x02 {
            let cur = self.channels[ch as usize].selected;
            let start = cur.and_then(|c| self.state.apps.iter().position(|a| a.aid == c)).map(|i| i + 1).unwrap_or(0);
            match self.state.apps.iter().skip(start).find(|a| a.aid.starts_with(&cmd.data) && self.selectable(a)) {
                Some(a) => a.aid,
                None => return ResponseApdu::status(StatusWord::FILE_NOT_FOUND),
            }
        } else if let Some(a) = self.state.apps.iter().find(|a| a.aid.as_bytes() == cmd.data.as_slice()) {
            if !self.selectable(a) {
                let lcs = AppLifeCycle(a.life_cycle);
                let card_ok = matches!(CardLifeCycle(self.state.life_cycle), c if c != CardLifeCycle::CARD_LOCKED && c != CardLifeCycle::TERMINATED);
                // JCRE: a locked applet fails selection (6999); one not yet selectable, or any
                // application while the card is locked, is not found.
                return ResponseApdu::status(if card_ok && lcs.is_locked() {
                    StatusWord::APPLET_SELECTION_FAILED
                } else {
                    StatusWord::FILE_NOT_FOUND
                });
            }
            a.aid
        } else {
            match self.state.apps.iter().find(|a| a.aid.starts_with(&cmd.data) && self.selectable(a)) {
                Some(a) => a.aid,
                None => return ResponseApdu::status(StatusWord::FILE_NOT_FOUND),
            }
        };
        // The new selection ends the session and everything else of the previous one.
        if let Some(prev) = self.channels[ch as usize].selected {
            self.call_deselect(ch, &prev);
        }
        let chan = &mut self.channels[ch as usize];
        chan.end_session();
        chan.selected = Some(target);
        let is_sd = self.state.app(&target).is_some_and(AppRecord::is_sd);
        let mut resp = if is_sd {
            ok(self.sd_fci(&target))
        } else {
            let Some(ctx) = self.app_context(&target, ch) else { return ResponseApdu::status(StatusWord::FILE_NOT_FOUND) };
            let r = match self.live.get_mut(&target) {
                Some(m) => m.select(&ctx),
                None => ok(Vec::new()),
            };
            self.sync_model(&target);
            if r.sw != StatusWord::SUCCESS {
                // The applet refused selection: nothing is selected on the channel.
                self.channels[ch as usize].selected = None;
                return ResponseApdu::status(StatusWord::APPLET_SELECTION_FAILED);
            }
            r
        };
        if cmd.p2 & 0x0C == 0x0C {
            resp.data.clear();
        }
        if target == isd && matches!(CardLifeCycle(self.state.life_cycle), CardLifeCycle::CARD_LOCKED | CardLifeCycle::TERMINATED) {
            // GPCS 2.3 §11.9.3: warning "card life cycle state is CARD_LOCKED" (the ISD of a
            // terminated card answers the same way: it is selectable only to identify the card).
            resp.sw = StatusWord::SELECTED_FILE_INVALIDATED;
        }
        resp
    }

    /// The FCI of a security domain: `6F { 84 AID, A5 { 73 security domain management data
    /// (the card recognition data), 9F65 maximum command data length } }`.
    pub(crate) fn sd_fci(&self, sd: &Aid) -> Vec<u8> {
        let scp = self.state.domain(sd).map(|d| d.scp).unwrap_or(self.state.profile.scp[0]);
        let mut a5 = Vec::new();
        if !self.state.profile.quirks.fci_without_management_data {
            let crd = self.card_recognition(scp).to_bytes();
            // crd = 66 L 73 L …: keep the 73 template.
            a5 = tlv::find(&crd, 0x66).ok().flatten().map(|t| t.value.to_vec()).unwrap_or_default();
        }
        let max = if self.state.profile.extended_length { vec![0x7F, 0xFF] } else { vec![0xFF] };
        tlv::put(&mut a5, 0x9F65, &max);
        let mut v = Vec::new();
        tlv::put(&mut v, 0x84, sd.as_bytes());
        tlv::put(&mut v, 0xA5, &a5);
        let mut out = Vec::new();
        tlv::put(&mut out, 0x6F, &v);
        out
    }

    /// The Card Recognition Data (GPCS 2.3 §H.2) of a security domain running `scp`: the GP
    /// version and the manufacturer's details of [`CardIdentity`](crate::CardIdentity), the
    /// secure channel of the domain.
    pub(crate) fn card_recognition(&self, scp: Scp) -> CardRecognitionData {
        let id = &self.state.identity;
        let mut crd = CardRecognitionData::gp(&id.gp_version, &[(scp.id(), scp.i())]);
        for (tag, oid) in [(0x65, &id.card_config_details), (0x66, &id.card_chip_details)] {
            if let Some(o) = oid {
                crd.entries.push(CrdEntry { tag, oid: Oid(o.clone()), extra: Vec::new() });
            }
        }
        crd
    }

    /// Install parameters as the card reads them (`C9`, `EF`); `6A80` when they do not decode.
    pub(crate) fn parse_params(bytes: &[u8]) -> Sw<InstallParams> {
        let p = InstallParams(bytes.to_vec());
        p.tlvs().map_err(|_| StatusWord::WRONG_DATA)?;
        Ok(p)
    }
}

impl CardDevice for SimCard {
    fn atr(&self) -> Vec<u8> {
        self.state.profile.atr.clone()
    }
    fn power_on(&mut self) {
        self.cold();
        self.powered = true;
    }
    fn power_off(&mut self) {
        self.cold();
        self.powered = false;
    }
    fn reset(&mut self) {
        self.cold();
        self.powered = true;
    }
    fn transmit(&mut self, apdu: &[u8]) -> Vec<u8> {
        SimCard::transmit(self, apdu)
    }
}

impl Transport for SimCard {
    fn transmit(&mut self, apdu: &[u8]) -> Result<Vec<u8>, TransportError> {
        Ok(SimCard::transmit(self, apdu))
    }
}
