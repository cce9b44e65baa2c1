//! How a new simulated card starts: its ISD keys, secure channel, counters, randomness and
//! memory costs. The profile ([`CardProfile`]) says what kind of card it is; this says what this
//! card holds.

use crate::error::SeError;
use crate::state::CardIdentity;
use tsm_gp::crypto::{KeyAlg, SecretKey};
use tsm_gp::gp::CardLifeCycle;
use tsm_gp::profile::CardProfile;
use tsm_gp::scp::Scp;

/// The GP test key `40 41 … 4F`, the factory key of development cards.
pub const GP_TEST_KEY: [u8; 16] =
    [0x40, 0x41, 0x42, 0x43, 0x44, 0x45, 0x46, 0x47, 0x48, 0x49, 0x4A, 0x4B, 0x4C, 0x4D, 0x4E, 0x4F];

/// Key version number of an initial ("factory") key set (GPCS 2.3 §11.8.2.2: `FF` is reserved
/// for it). Adding a new key set with PUT KEY P1 = `00` replaces it.
pub const INITIAL_KEY_VERSION: u8 = 0xFF;

/// A security domain's secure channel key set: ENC (key id 1), MAC (2), DEK (3) and its version.
#[derive(Clone, Debug)]
pub struct KeySet {
    pub enc: SecretKey,
    pub mac: SecretKey,
    pub dek: SecretKey,
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
    /// `bytes` as the key type `scp` runs on: two- or three-key 3DES for SCP02, AES for SCP03.
    pub fn for_scp(scp: Scp, bytes: &[u8], version: u8) -> Result<Self, SeError> {
        let key = match scp {
            Scp::Scp02 { .. } => SecretKey::des3(bytes),
            Scp::Scp03 { .. } => SecretKey::aes(bytes),
        }
        .map_err(|e| SeError::Config(format!("key for {scp}: {e}")))?;
        Ok(KeySet::single(key, version))
    }
    /// The GP test key in the algorithm `scp` needs, as the initial key set (version `FF`).
    pub fn gp_test_key(scp: Scp) -> Self {
        // 16 bytes are valid for both 3DES-2k and AES-128.
        Self::for_scp(scp, &GP_TEST_KEY, INITIAL_KEY_VERSION).expect("16-byte test key fits both algorithms")
    }
    pub(crate) fn keys(&self) -> [&SecretKey; 3] {
        [&self.enc, &self.mac, &self.dek]
    }
}

/// How a new card starts. `CardConfig::default()` is a SECURED card with the GP test key
/// (version `FF`) on the profile's first secure channel, a random card, and unlimited
/// retries disabled (10 failed EXTERNAL AUTHENTICATE attempts block a key set).
#[derive(Clone, Debug)]
pub struct CardConfig {
    /// The ISD key set; `None` is the GP test key as the initial key set (version `FF`).
    pub isd_keys: Option<KeySet>,
    /// The ISD's secure channel, one of the profile's; `None` takes the profile's first.
    pub scp: Option<Scp>,
    /// Key diversification data (INITIALIZE UPDATE, GET DATA `CF`); `None` derives it from
    /// the CPLC: IC fabricator ‖ IC type ‖ IC serial number ‖ IC batch identifier.
    pub kdd: Option<[u8; 10]>,
    /// The ISD's secure channel sequence counter (SCP02: 2 bytes, SCP03: 3 bytes).
    pub sequence_counter: u32,
    /// Failed EXTERNAL AUTHENTICATE attempts after which a key set is blocked (INITIALIZE
    /// UPDATE then answers `6983`); 0 never blocks.
    pub auth_retry_limit: u32,
    /// Deterministic mode: card challenges and all other randomness from SplitMix64 seeded
    /// with this value. `None` takes operating system entropy.
    pub seed: Option<u64>,
    /// Card life cycle state at creation (`OP_READY`, `INITIALIZED` or `SECURED`).
    pub life_cycle: CardLifeCycle,
    /// Non-volatile memory charged per application instance when its install parameters name
    /// no quota (`C8`) or reservation (`D8`).
    pub instance_cost: u32,
    /// Non-volatile memory charged per supplementary security domain.
    pub sd_instance_cost: u32,
    /// Volatile memory (RAM) for applications, reported in GET DATA `FF21`; `C7` quotas are
    /// charged against it.
    pub volatile_memory: u32,
    /// Issuer identification number (GET DATA `42`); absent answers `6A88`.
    pub iin: Option<Vec<u8>>,
    /// Card image number (GET DATA `45`); absent answers `6A88`.
    pub cin: Option<Vec<u8>>,
    /// The initial key of a new supplementary security domain (version `FF`, one value for
    /// ENC, MAC and DEK, in the algorithm of the SSD's secure channel). Default: the GP test key.
    pub ssd_initial_key: Vec<u8>,
    /// The EID of an eUICC (profile quirk `euicc`; GSMA SGP.22 GetEuiccData). `None` on an
    /// eUICC derives one from the CPLC: `89` followed by zeros, the IC serial number in
    /// decimal and the ISO 7064 MOD 97-10 check digits (SGP.29 layout, not a registered issuer).
    pub eid: Option<[u8; 16]>,
    /// What the card declares in GET DATA `66` (and its FCI) and `67` beyond its profile.
    pub identity: CardIdentity,
}

impl Default for CardConfig {
    fn default() -> Self {
        CardConfig {
            isd_keys: None,
            scp: None,
            kdd: None,
            sequence_counter: 0,
            auth_retry_limit: 10,
            seed: None,
            life_cycle: CardLifeCycle::SECURED,
            instance_cost: 2048,
            sd_instance_cost: 1024,
            volatile_memory: 8192,
            iin: None,
            cin: None,
            ssd_initial_key: GP_TEST_KEY.to_vec(),
            eid: None,
            identity: CardIdentity::default(),
        }
    }
}

impl CardConfig {
    /// Deterministic mode with this seed.
    pub fn seeded(mut self, seed: u64) -> Self {
        self.seed = Some(seed);
        self
    }
    pub fn with_isd_keys(mut self, keys: KeySet) -> Self {
        self.isd_keys = Some(keys);
        self
    }
    pub fn with_scp(mut self, scp: Scp) -> Self {
        self.scp = Some(scp);
        self
    }

    /// The KDD this configuration gives a card of `profile`.
    pub(crate) fn kdd_for(&self, profile: &CardProfile) -> [u8; 10] {
        if let Some(k) = self.kdd {
            return k;
        }
        let c = &profile.cplc;
        let mut kdd = [0u8; 10];
        let src: Vec<u8> = [c.get(0..4), c.get(12..16), c.get(16..18)].into_iter().flatten().flatten().copied().collect();
        kdd[..src.len().min(10)].copy_from_slice(&src[..src.len().min(10)]);
        kdd
    }
}

/// The EID a card without a configured one gets: `89`, zeros, the CPLC's IC serial number
/// (bytes 12..16) as up to 10 decimal digits, and the two ISO 7064 MOD 97-10 check digits
/// over the 32-digit number (GSMA SGP.29 §2.2).
pub(crate) fn default_eid(cplc: &[u8]) -> [u8; 16] {
    let serial = cplc.get(12..16).map(|b| u32::from_be_bytes([b[0], b[1], b[2], b[3]])).unwrap_or(0);
    let mut digits = format!("89{:0>28}", serial);
    let mut rem: u32 = 0;
    for c in digits.chars().chain("00".chars()) {
        rem = (rem * 10 + c.to_digit(10).unwrap_or(0)) % 97;
    }
    digits.push_str(&format!("{:02}", 98 - rem));
    let mut eid = [0u8; 16];
    for (i, pair) in digits.as_bytes().chunks(2).enumerate() {
        eid[i] = ((pair[0] - b'0') << 4) | (pair[1] - b'0');
    }
    eid
}

/// Whether `key` can serve `scp`'s secure channel (3DES for SCP02; AES or SM4 for SCP03).
pub(crate) fn alg_fits(scp: Scp, alg: KeyAlg) -> bool {
    match scp {
        Scp::Scp02 { .. } => alg.is_des(),
        Scp::Scp03 { .. } => alg.is_aes() || alg == KeyAlg::Sm4,
    }
}
