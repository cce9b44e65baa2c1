//! Shared by the planner tests: a key provider over in-memory keys, an in-process agent that
//! runs batches against a `SimCard` the way the SERAM agent does (stop at the first answer
//! outside a command's `accept` list), and fixtures.
#![allow(dead_code)]

use std::collections::BTreeMap;
use tsm_gp::cap::CapFile;
use tsm_gp::crypto::{self, SecretKey};
use tsm_gp::gp::{Aid, Privileges, RegistryEntry};
use tsm_gp::profile::CardProfile;
use tsm_gp::scp::scp02::{IParam, SessionKeys};
use tsm_gp::scp::{Scp, StaticKeys};
use tsm_se::{CardConfig, GP_TEST_KEY, INITIAL_KEY_VERSION, KeySet, SimCard};
use tsm_server::planner::{
    Batch, CardView, Deploy, InstallSpec, KeyError, KeyProvider, KeyRole, KeysetRef, LoadFileSpec, Next, Outcome, PersoBlock, PersoScript,
    PlanError, PlanOptions, Planner, SsdSpec, WrappedKey, Wrapping,
};
use tsm_server::testkit::RegistryRow;

pub const ISD: Aid = Aid::GP_ISD;

pub fn aid(s: &str) -> Aid {
    s.parse().unwrap()
}

/// The combinations the tests run: every built-in profile with each of its secure channels.
pub fn combos() -> Vec<(&'static str, Scp)> {
    let mut v = Vec::new();
    for name in CardProfile::BUILTIN {
        for scp in CardProfile::builtin(name).unwrap().scp {
            v.push((name, scp));
        }
    }
    v
}

pub fn card_with(profile: &str, scp: Scp, seed: u64, tweak: impl FnOnce(&mut CardProfile, &mut CardConfig)) -> SimCard {
    let mut p = CardProfile::builtin(profile).unwrap();
    let mut c = CardConfig::default().seeded(seed).with_scp(scp);
    tweak(&mut p, &mut c);
    SimCard::new(p, c).unwrap()
}

pub fn card(profile: &str, scp: Scp, seed: u64) -> SimCard {
    card_with(profile, scp, seed, |_, _| {})
}

/// What the TSM knows of a card it has never talked to.
pub fn first_contact(card: &SimCard, scp: Scp) -> CardView {
    let mut v = CardView::first_contact(format!("se-{}", card.state().profile.name), card.state().profile.clone());
    v.scp = scp;
    v
}

fn key(scp: Scp, bytes: &[u8]) -> SecretKey {
    match scp {
        Scp::Scp02 { .. } => SecretKey::des3(bytes).unwrap(),
        Scp::Scp03 { .. } => SecretKey::aes(bytes).unwrap(),
    }
}

/// Keys in memory, as a key store would hold them; host challenges from a seeded generator.
#[derive(Clone)]
pub struct TestKeys {
    pub scp: Scp,
    /// Key sets on the card: (security domain, version) → ENC, MAC, DEK.
    pub card: Vec<(Aid, u8, [SecretKey; 3])>,
    /// New key sets by reference id.
    pub new: BTreeMap<String, [SecretKey; 3]>,
    rng: u64,
    pub wraps: usize,
}

impl TestKeys {
    /// The card's factory keys (GP test key, version FF) for the ISD and any SSD.
    pub fn new(scp: Scp, seed: u64) -> TestKeys {
        let k = key(scp, &GP_TEST_KEY);
        TestKeys { scp, card: vec![(ISD, INITIAL_KEY_VERSION, [k.clone(), k.clone(), k])], new: BTreeMap::new(), rng: seed, wraps: 0 }
    }
    /// A new key set (distinct ENC, MAC, DEK derived from `seed`), referenced as `id`.
    pub fn new_set(&mut self, id: &str, kvn: u8, seed: u8) -> KeysetRef {
        let alg = match self.scp {
            Scp::Scp02 { .. } => tsm_gp::crypto::KeyAlg::Des3_2k,
            Scp::Scp03 { .. } => tsm_gp::crypto::KeyAlg::Aes128,
        };
        let ks = [1u8, 2, 3].map(|i| key(self.scp, &[seed.wrapping_mul(31).wrapping_add(i * 7); 16]));
        self.new.insert(id.to_string(), ks);
        KeysetRef { id: id.into(), kvn, alg }
    }
    /// Records that security domain `sd` now holds key set `id` as version `kvn`.
    pub fn assign(&mut self, sd: Aid, kvn: u8, id: &str) {
        let ks = self.new[id].clone();
        self.card.retain(|(a, v, _)| !(*a == sd && *v == kvn));
        self.card.push((sd, kvn, ks));
    }
    fn find(&self, sd: &Aid, kvn: u8) -> Result<StaticKeys, KeyError> {
        if let Some((_, v, k)) = self.card.iter().find(|(a, v, _)| a == sd && (*v == kvn || kvn == 0)) {
            return Ok(StaticKeys::new(k[0].clone(), k[1].clone(), k[2].clone(), *v));
        }
        if *sd != ISD && kvn == INITIAL_KEY_VERSION {
            // A new SSD's initial key set: the card's configured one (the GP test key).
            return Ok(StaticKeys::single(key(self.scp, &GP_TEST_KEY), INITIAL_KEY_VERSION));
        }
        Err(KeyError::NotFound(format!("{sd} v{kvn:02X}")))
    }
}

impl KeyProvider for TestKeys {
    fn isd_keys(&self, kvn: u8, _kdd: Option<&[u8]>) -> Result<StaticKeys, KeyError> {
        self.find(&ISD, kvn)
    }
    fn sd_keys(&self, sd: &Aid, kvn: u8) -> Result<StaticKeys, KeyError> {
        self.find(sd, kvn)
    }
    fn wrap_new_key(&self, keyset: &KeysetRef, role: KeyRole, wrapping: &Wrapping) -> Result<WrappedKey, KeyError> {
        let ks = self.new.get(&keyset.id).ok_or_else(|| KeyError::NotFound(keyset.id.clone()))?;
        let k = &ks[role.key_id() as usize - 1];
        let encrypted = match wrapping {
            Wrapping::Scp03 { sd, kvn, .. } => {
                let dek = self.find(sd, *kvn)?.dek;
                dek.encrypt_cbc(&[0u8; 16], k.expose()).map_err(|e| KeyError::Store(e.to_string()))?
            }
            Wrapping::Scp02 { sd, kvn, sequence_counter, .. } => {
                let s = SessionKeys::derive(&self.find(sd, *kvn)?, IParam(IParam::THREE_KEYS), *sequence_counter).map_err(|e| KeyError::Store(e.to_string()))?;
                crypto::ecb_encrypt(&s.s_dek, k.expose()).map_err(|e| KeyError::Store(e.to_string()))?
            }
        };
        Ok(WrappedKey { encrypted, key_len: k.expose().len() as u8, kcv: k.kcv().to_vec() })
    }
    fn random(&mut self, buf: &mut [u8]) {
        for b in buf.iter_mut() {
            // SplitMix64: deterministic host challenges make runs comparable byte for byte.
            self.rng = self.rng.wrapping_add(0x9E37_79B9_7F4A_7C15);
            let mut z = self.rng;
            z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
            *b = (z ^ (z >> 31)) as u8;
        }
    }
}

/// What the agent saw while running a plan.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Run {
    pub round_trips: u32,
    pub apdus: usize,
    /// EXTERNAL AUTHENTICATE commands sent to the card.
    pub external_authenticates: usize,
    /// Every exchange, batch by batch: (C-APDU, R-APDU).
    pub log: Vec<Vec<(Vec<u8>, Vec<u8>)>>,
    /// The plan state as JSON after every batch (when persisting).
    pub states: Vec<String>,
}

/// Sends a batch as the agent does: in order, stopping after the first answer whose status
/// word the command does not accept.
pub fn execute(card: &mut SimCard, batch: &Batch, run: &mut Run) -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    let mut log = Vec::new();
    for (i, c) in batch.commands.iter().enumerate() {
        if c.apdu.get(1) == Some(&0x82) {
            run.external_authenticates += 1;
        }
        let r = card.transmit(&c.apdu);
        let sw = u16::from_be_bytes([r[r.len() - 2], r[r.len() - 1]]);
        log.push((c.apdu.clone(), r.clone()));
        out.push(r);
        run.apdus += 1;
        if !batch.accepts(i, sw) {
            break;
        }
    }
    run.round_trips += 1;
    run.log.push(log);
    out
}

/// Runs a plan to its end. With `persist`, the state goes through JSON after every batch and
/// the planner is dropped and resumed from it.
pub fn drive(card: &mut SimCard, mut planner: Planner, keys: &mut TestKeys, persist: bool) -> (Result<Outcome, PlanError>, Run, Planner) {
    let mut run = Run::default();
    let mut next = planner.start(keys).expect("start");
    loop {
        match next {
            Next::Send(batch) => {
                if persist {
                    let json = serde_json::to_string(planner.state()).unwrap();
                    run.states.push(json.clone());
                    drop(planner);
                    planner = Planner::resume(serde_json::from_str(&json).unwrap());
                }
                let answers = execute(card, &batch, &mut run);
                next = planner.on_responses(keys, &answers).expect("on_responses");
            }
            Next::Done(o) => return (Ok(o), run, planner),
            Next::Failed(e) => return (Err(e), run, planner),
        }
    }
}

/// Plans `op` and runs it.
pub fn plan(card: &mut SimCard, view: CardView, op: tsm_server::planner::Operation, keys: &mut TestKeys, opts: PlanOptions) -> (Result<Outcome, PlanError>, Run, Planner) {
    let p = Planner::new(view, op, opts).expect("plan");
    drive(card, p, keys, false)
}

// ---- fixtures ----

pub fn cap(file: &str) -> CapFile {
    let bytes = std::fs::read(tsm_gp::testdata_dir().join("vectors/cap").join(file)).unwrap();
    CapFile::parse(&bytes).unwrap()
}

pub fn hello() -> LoadFileSpec {
    LoadFileSpec::from_cap(&cap("kaoh_helloworld.cap")).unwrap()
}

/// Instance `n` of the load file's first module.
pub fn instance(lf: &LoadFileSpec, n: u8) -> InstallSpec {
    let module = lf.modules[0];
    let mut a = module.to_vec();
    a.push(0x10 + n);
    InstallSpec { module, instance: Aid::new(&a).unwrap(), privileges: Privileges::NONE, c9: Vec::new(), nv_quota: None, volatile_quota: None }
}

/// Personalization: a clear DGI and a secret one (b16 set, encrypted under the DEK).
pub fn perso(inst: Aid) -> PersoScript {
    let clear = [0x01, 0x01, 0x04, 0xCA, 0xFE, 0xBA, 0xBE].to_vec();
    let mut secret = vec![0x80, 0x01, 0x10];
    secret.extend_from_slice(&[0x5A; 16]);
    PersoScript { instance: inst, blocks: vec![PersoBlock { data: clear, encrypt: false }, PersoBlock { data: secret, encrypt: true }], ber_tlv: false }
}

pub const SSD_AID: &str = "A0000005591010FFFFFFFF8900000100";

pub fn ssd(keys: KeysetRef, initial: Option<KeysetRef>, scp: Scp) -> SsdSpec {
    let c9 = tsm_gp::gp::install::SdInstallParams { scp: vec![(scp.id(), scp.i())], ..Default::default() }.to_value();
    SsdSpec {
        aid: aid(SSD_AID),
        elf: SsdSpec::GP_SD_ELF,
        module: SsdSpec::GP_SD_MODULE,
        privileges: [tsm_gp::gp::Privilege::SecurityDomain, tsm_gp::gp::Privilege::AuthorizedManagement].into_iter().collect(),
        c9,
        nv_quota: Some(64 * 1024),
        volatile_quota: None,
        keys,
        initial_keys: initial,
    }
}

pub fn deploy(lf: LoadFileSpec, ssd: Option<SsdSpec>, n: u8, with_perso: bool) -> Deploy {
    let install: Vec<InstallSpec> = (0..n).map(|i| instance(&lf, i)).collect();
    let personalization = if with_perso { install.iter().map(|i| perso(i.instance)).collect() } else { Vec::new() };
    Deploy { load_file: lf, ssd, sd: None, install, personalization, make_selectable: true }
}

/// What the TSM knows after a resynchronization: registry and a current counter.
pub fn known_view(card: &mut SimCard, scp: Scp, keys: &mut TestKeys) -> CardView {
    let view = first_contact(card, scp);
    let (r, _, _) = plan(card, view, tsm_server::planner::Operation::Resync, keys, PlanOptions::default());
    r.expect("resync").card
}

/// The card's registry as (kind, AID, life cycle, associated SD), sorted: from the card state.
pub fn card_registry(card: &SimCard) -> Vec<RegistryRow> {
    tsm_server::testkit::sim_registry(card)
}

/// The same from a planner registry view.
pub fn view_registry(entries: &[RegistryEntry]) -> Vec<RegistryRow> {
    tsm_server::testkit::registry_rows(entries)
}

/// Failed EXTERNAL AUTHENTICATE attempts the card counted for the ISD.
pub fn isd_auth_failures(card: &SimCard) -> u32 {
    card.state().apps[0].domain.as_ref().unwrap().auth_failures.values().sum()
}

/// Another party opens (and authenticates) a session with the ISD: the counter moves on.
pub fn other_party_session(card: &mut SimCard, scp: Scp) {
    use tsm_gp::scp::{ChannelOptions, SecurityLevel};
    use tsm_gp::{Codec, CommandApdu, ResponseApdu};
    let k = key(scp, &GP_TEST_KEY);
    let keys = StaticKeys::single(k, 0);
    let send = |card: &mut SimCard, c: &CommandApdu| ResponseApdu::from_bytes(&card.transmit(&c.to_bytes())).unwrap();
    assert!(card.transmit(&tsm_gp::gp::Select::by_name(ISD.as_bytes()).to_apdu().to_bytes()).ends_with(&[0x90, 0]));
    match scp {
        Scp::Scp03 { i } => {
            let hc = if i & 1 != 0 { vec![0x77; 16] } else { vec![0x77; 8] };
            let (hs, iu) = tsm_gp::scp::scp03::HostHandshake::new(keys, &hc, ChannelOptions::default()).unwrap();
            let r = send(card, &iu);
            let a = hs.on_init_update(&r, SecurityLevel::C_MAC, tsm_gp::scp::scp03::Expect::any()).unwrap();
            assert_eq!(send(card, &a.external_authenticate()).sw.0, 0x9000);
        }
        Scp::Scp02 { i } => {
            let (hs, iu) = tsm_gp::scp::scp02::HostHandshake::new(keys, [0x77; 8], tsm_gp::scp::scp02::Scp02Options::new(i));
            let r = send(card, &iu);
            let a = hs.on_init_update(&r, SecurityLevel::C_MAC, None).unwrap();
            assert_eq!(send(card, &a.external_authenticate()).sw.0, 0x9000);
        }
    }
}

pub fn isd_counter(card: &SimCard) -> u32 {
    card.state().apps[0].domain.as_ref().unwrap().sequence_counter
}

pub fn keyset_for(scp: Scp, bytes: &[u8], v: u8) -> KeySet {
    KeySet::for_scp(scp, bytes, v).unwrap()
}
