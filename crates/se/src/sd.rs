//! The card manager on behalf of the selected security domain: secure channel handshake
//! (INITIALIZE UPDATE, EXTERNAL AUTHENTICATE), GET DATA, GET STATUS, SET STATUS, PUT KEY and
//! STORE DATA. Content management (INSTALL, LOAD, DELETE) is in `content.rs`.

use crate::card::{Pending, Session, SimCard, StatusCursor, Sw, gp_sw, ok, sw};
use crate::config::{INITIAL_KEY_VERSION, alg_fits};
use crate::models::StoreDataBlock;
use crate::state::{AppRecord, PublicKeyRecord};
use tsm_gp::apdu::{CommandApdu, ResponseApdu};
use tsm_gp::codec::{Codec, Reader};
use tsm_gp::crypto::SecretKey;
use tsm_gp::crypto::ecc::P256PublicKey;
use tsm_gp::gp::data::{CardCapabilities, ExtendedCardResources, KeyComponentInfo, KeyInfo, KeyInformation, ScpCapability};
use tsm_gp::gp::delegated::{RECEIPT_KEY_ID, RECEIPT_KEY_VERSION, TOKEN_KEY_VERSION};
use tsm_gp::gp::lifecycle::{AppLifeCycle, CardLifeCycle, ElfLifeCycle, SdLifeCycle};
use tsm_gp::gp::put_key::{ECC_PARAMETERS_P256, KEY_TYPE_AES, KEY_TYPE_DES, KEY_TYPE_ECC_PARAMETERS_REFERENCE, KEY_TYPE_ECC_PUBLIC};
use tsm_gp::gp::set_status::SetStatusScope;
use tsm_gp::gp::status::{RegistryEntry, SearchCriteria, StatusFormat, StatusScope, encode_status_response};
use tsm_gp::gp::store_data::{DGI_ENCRYPTED_AES_KEY, DGI_KEY_ATTRIBUTES, DataStructure, EncryptionInfo, KeyAttributes};
use tsm_gp::gp::{Aid, GetStatus, LifeCycle, Privilege, Privileges, PutKey, SetStatus, StoreData, ins};
use crate::renc::{PaddedREnc, REncKeys};
use tsm_gp::scp::{CardChannel, ChannelOptions, Scp, ScpError, StaticKeys, scp02, scp03};
use tsm_gp::sw::StatusWord;
use tsm_gp::tlv::{self, Tag, TlvIter};
use zeroize::Zeroizing;

/// Privileges only a security domain can hold.
pub(crate) fn sd_only_privileges() -> Privileges {
    [
        Privilege::DapVerification,
        Privilege::DelegatedManagement,
        Privilege::MandatedDapVerification,
        Privilege::AuthorizedManagement,
        Privilege::TokenVerification,
        Privilege::ReceiptGeneration,
        Privilege::CipheredLoadFileDataBlock,
    ]
    .into_iter()
    .collect()
}

/// Card-wide privileges that only the ISD grants: a supplementary security domain cannot give
/// them to what it installs, even when it holds them.
pub(crate) fn isd_only_grants() -> Privileges {
    [
        Privilege::CardLock,
        Privilege::CardTerminate,
        Privilege::CardReset,
        Privilege::CvmManagement,
        Privilege::GlobalDelete,
        Privilege::GlobalLock,
        Privilege::GlobalRegistry,
        Privilege::FinalApplication,
        Privilege::GlobalService,
        Privilege::AuthorizedManagement,
        Privilege::DelegatedManagement,
        Privilege::TokenVerification,
        Privilege::ReceiptGeneration,
        Privilege::MandatedDapVerification,
        Privilege::ContactlessActivation,
    ]
    .into_iter()
    .collect()
}

/// The 10-byte KDD of the INITIALIZE UPDATE response (a state file could hold another length).
fn kdd10(v: &[u8]) -> [u8; 10] {
    let mut k = [0u8; 10];
    let n = v.len().min(10);
    k[..n].copy_from_slice(&v[..n]);
    k
}

/// Decrypted sensitive data that is wiped when dropped.
type Secret = Zeroizing<Vec<u8>>;

impl SimCard {
    pub(crate) fn is_isd(&self, aid: &Aid) -> bool {
        *aid == self.state.isd()
    }

    pub(crate) fn privileges_of(&self, aid: &Aid) -> Privileges {
        self.state.app(aid).map(|a| a.privileges).unwrap_or_default()
    }

    /// Whether `perf` may grant `new` to an instance (an SD instance when `sd_instance`).
    pub(crate) fn check_grant(&self, perf: &Aid, new: Privileges, sd_instance: bool) -> Sw<()> {
        if new.rfu_bits() != 0 || new.is_security_domain() != sd_instance {
            return Err(StatusWord::WRONG_DATA);
        }
        if !sd_instance && new.bits() & sd_only_privileges().bits() != 0 {
            return Err(StatusWord::WRONG_DATA);
        }
        if self.is_isd(perf) {
            return Ok(());
        }
        let held = self.privileges_of(perf).bits();
        if new.bits() & isd_only_grants().bits() != 0 || new.bits() & !held != 0 {
            return Err(StatusWord::CONDITIONS_NOT_SATISFIED);
        }
        Ok(())
    }

    /// Whether `perf` may manage content owned by `owner` (GPCS 2.3 §9.1: the ISD, or an SSD
    /// with Authorized Management for its own content, or with Delegated Management for its
    /// own content when the command carried a verified token, `crate::delegated`).
    pub(crate) fn may_manage(&self, perf: &Aid, owner: &Aid) -> Sw<()> {
        if self.is_isd(perf) {
            return Ok(());
        }
        let p = self.privileges_of(perf);
        let delegated = p.contains(Privilege::DelegatedManagement) && self.token_verified;
        if (p.contains(Privilege::AuthorizedManagement) || delegated) && perf == owner {
            return Ok(());
        }
        Err(StatusWord::CONDITIONS_NOT_SATISFIED)
    }

    /// Commands addressed to a selected security domain.
    pub(crate) fn sd_process(&mut self, ch: u8, sd: Aid, cmd: &CommandApdu) -> ResponseApdu {
        let card = CardLifeCycle(self.state.life_cycle);
        if card == CardLifeCycle::TERMINATED && !matches!(cmd.ins, ins::GET_DATA | ins::GET_DATA_ODD) {
            // GPCS 2.3 §5.1.1.5: a terminated card only identifies itself.
            return sw(0x6985);
        }
        let gp_class = cmd.cla & 0x80 != 0;
        match cmd.ins {
            ins::INITIALIZE_UPDATE | ins::EXTERNAL_AUTHENTICATE if !gp_class => return sw(0x6E00),
            ins::INITIALIZE_UPDATE => return self.initialize_update(ch, sd, cmd),
            ins::EXTERNAL_AUTHENTICATE => return self.external_authenticate(ch, sd, cmd),
            _ => {}
        }
        let c = &mut self.channels[ch as usize];
        // Anything but EXTERNAL AUTHENTICATE abandons a handshake in progress.
        c.pending = None;
        if c.session.as_ref().is_some_and(|s| s.sd != sd) {
            c.end_session();
        }
        let plain = match c.unwrap_command(cmd) {
            Ok(p) => p,
            Err(r) => return r,
        };
        let resp = self.sd_dispatch(ch, sd, &plain).unwrap_or_else(ResponseApdu::status);
        let resp = self.channels[ch as usize].wrap_response(resp);
        for a in std::mem::take(&mut self.deferred_evict) {
            self.evict(&a);
        }
        if CardLifeCycle(self.state.life_cycle) == CardLifeCycle::TERMINATED {
            for c in self.channels.iter_mut() {
                c.end_session();
            }
        }
        resp
    }

    fn sd_dispatch(&mut self, ch: u8, sd: Aid, cmd: &CommandApdu) -> Sw<ResponseApdu> {
        if matches!(cmd.ins, ins::GET_DATA | ins::GET_DATA_ODD) {
            return self.get_data(sd, cmd);
        }
        let known = matches!(
            cmd.ins,
            ins::GET_STATUS | ins::INSTALL | ins::LOAD | ins::DELETE | ins::PUT_KEY | ins::STORE_DATA | ins::SET_STATUS
        );
        if !known {
            return Err(StatusWord::INS_NOT_SUPPORTED);
        }
        if cmd.cla & 0x80 == 0 {
            return Err(StatusWord::CLA_NOT_SUPPORTED);
        }
        if self.channels[ch as usize].session.is_none() {
            return Err(StatusWord::SECURITY_STATUS_NOT_SATISFIED);
        }
        if CardLifeCycle(self.state.life_cycle) == CardLifeCycle::CARD_LOCKED
            && !matches!(cmd.ins, ins::GET_STATUS | ins::SET_STATUS)
        {
            return Err(StatusWord::CONDITIONS_NOT_SATISFIED);
        }
        if cmd.ins != ins::GET_STATUS {
            self.channels[ch as usize].status_cursor = None;
        }
        match cmd.ins {
            ins::GET_STATUS => self.get_status(ch, sd, cmd),
            ins::SET_STATUS => self.set_status(ch, sd, cmd),
            ins::PUT_KEY => self.put_key(ch, sd, cmd),
            ins::STORE_DATA => self.store_data(ch, sd, cmd),
            ins::INSTALL => self.install(ch, sd, cmd),
            ins::LOAD => self.load_block(ch, sd, cmd),
            ins::DELETE => self.delete(ch, sd, cmd),
            _ => Err(StatusWord::INS_NOT_SUPPORTED),
        }
    }

    // ---- secure channel handshake ----

    /// The static key set for INITIALIZE UPDATE P1 (`00`: the lowest complete version).
    fn static_keys(&self, sd: &Aid, requested: u8, scp: Scp) -> Option<(u8, StaticKeys, SecretKey)> {
        let d = self.state.domain(sd)?;
        let mut versions: Vec<u8> = d.keys.iter().map(|k| k.version).collect();
        versions.dedup();
        let usable = |v: u8| -> Option<(u8, StaticKeys, SecretKey)> {
            // The Receipt Generation key is never a secure channel key.
            if self.is_receipt_key(sd, v, 1) {
                return None;
            }
            let enc = self.secrets.get(&(*sd, v, 1)).filter(|k| alg_fits(scp, k.alg()))?;
            let mac = self.secrets.get(&(*sd, v, 2)).unwrap_or(enc);
            let dek = self.secrets.get(&(*sd, v, 3)).unwrap_or(enc);
            if !alg_fits(scp, mac.alg()) || !alg_fits(scp, dek.alg()) {
                return None;
            }
            Some((v, StaticKeys::new(enc.clone(), mac.clone(), dek.clone(), v), dek.clone()))
        };
        if requested == 0 { versions.into_iter().find_map(usable) } else { usable(requested) }
    }

    fn next_challenge(&mut self, len: usize, derived: bool) -> Result<Option<[u8; 16]>, StatusWord> {
        if let Some(c) = self.scripted.pop_front() {
            let mut out = [0u8; 16];
            let n = c.len().min(16);
            out[..n].copy_from_slice(&c[..n]);
            return Ok(Some(out));
        }
        if derived {
            return Ok(None);
        }
        let mut out = [0u8; 16];
        if !self.random(&mut out[..len]) {
            return Err(StatusWord::NO_PRECISE_DIAGNOSIS);
        }
        Ok(Some(out))
    }

    fn blocked(&self, sd: &Aid, kvn: u8) -> bool {
        let limit = self.state.settings.auth_retry_limit;
        limit != 0 && self.state.domain(sd).is_some_and(|d| d.failures(kvn) >= limit)
    }

    /// INITIALIZE UPDATE (GPCS 2.3 §E.5.1, Amd D §7.1.1): ends any session on the channel and
    /// answers with the card challenge and cryptogram.
    pub(crate) fn initialize_update(&mut self, ch: u8, sd: Aid, cmd: &CommandApdu) -> ResponseApdu {
        self.channels[ch as usize].end_session();
        match self.init_update_inner(ch, sd, cmd) {
            Ok(r) => r,
            Err(s) => ResponseApdu::status(s),
        }
    }

    fn init_update_inner(&mut self, ch: u8, sd: Aid, cmd: &CommandApdu) -> Sw<ResponseApdu> {
        let d = self.state.domain(&sd).ok_or(StatusWord::CONDITIONS_NOT_SATISFIED)?.clone();
        let quirks = self.state.profile.quirks;
        let iu_err = |e: ScpError| match e {
            ScpError::Unsupported(_) => StatusWord::CONDITIONS_NOT_SATISFIED,
            e => e.card_status(),
        };
        // Quirk: a card that does not look at P1 answers with its first key set.
        let ignore_p1 = quirks.init_update_ignores_key_version;
        let requested = if ignore_p1 { 0 } else { cmd.p1 };
        match d.scp {
            Scp::Scp02 { i } => {
                if cmd.data.len() != 8 {
                    return Err(StatusWord::WRONG_LENGTH);
                }
                let (kvn, keys, _) = self.static_keys(&sd, requested, d.scp).ok_or(StatusWord::REFERENCED_DATA_NOT_FOUND)?;
                if self.blocked(&sd, kvn) {
                    return Err(StatusWord::AUTHENTICATION_METHOD_BLOCKED);
                }
                let seq = u16::try_from(d.sequence_counter).map_err(|_| StatusWord::CONDITIONS_NOT_SATISFIED)?;
                let derived = scp02::IParam(i).pseudo_random_challenge();
                let challenge = self.next_challenge(6, derived)?.map(|c| {
                    let mut x = [0u8; 6];
                    x.copy_from_slice(&c[..6]);
                    x
                });
                let kdd = kdd10(&d.kdd);
                let params = scp02::card::CardParams { i, sequence_counter: seq, kdd, sd_aid: sd.to_vec(), random_challenge: challenge };
                let lookup = move |v: u8| (ignore_p1 || v == 0 || v == kvn).then(|| keys.clone());
                let (resp, pending) = scp02::card::on_init_update(&lookup, cmd, params).map_err(iu_err)?;
                self.channels[ch as usize].pending = Some(Pending::Scp02 { sd, kvn, pending });
                Ok(resp)
            }
            Scp::Scp03 { i } => {
                let s16 = match cmd.data.len() {
                    8 => false,
                    16 if !quirks.no_s16 => true,
                    _ => return Err(StatusWord::WRONG_LENGTH),
                };
                // The mode follows the host challenge when the card offers both (profile lists
                // i with and without the S16 bit).
                let i = if s16 { i | 0x01 } else { i & !0x01 };
                if (Scp::Scp03 { i }) != d.scp && !self.state.profile.scp.contains(&Scp::Scp03 { i }) {
                    return Err(StatusWord::WRONG_LENGTH);
                }
                let (kvn, keys, dek) = self.static_keys(&sd, requested, d.scp).ok_or(StatusWord::REFERENCED_DATA_NOT_FOUND)?;
                if self.blocked(&sd, kvn) {
                    return Err(StatusWord::AUTHENTICATION_METHOD_BLOCKED);
                }
                let derived = i & scp03::i_bits::PSEUDO_RANDOM_CHALLENGE != 0;
                let challenge = self.next_challenge(if s16 { 16 } else { 8 }, derived)?;
                let kdd = kdd10(&d.kdd);
                let params = scp03::card::CardParams {
                    i,
                    sequence_counter: d.sequence_counter,
                    kdd,
                    sd_aid: sd.to_vec(),
                    random_challenge: challenge,
                    s16,
                };
                let static_keys = keys.clone();
                let lookup = move |v: u8| (ignore_p1 || v == 0 || v == kvn).then(|| keys.clone());
                let (resp, pending) = scp03::card::on_init_update_with(&lookup, cmd, params).map_err(iu_err)?;
                let renc = match quirks.r_enc_min_padded_len {
                    0 => None,
                    _ => Some(REncKeys::derive(&static_keys, pending.host_challenge(), pending.card_challenge()).map_err(iu_err)?),
                };
                let pending = pending.with_options(ChannelOptions {
                    scp03_counter_only_with_data: quirks.scp03_counter_only_with_data,
                    ..Default::default()
                });
                if let Some(n) = pending.sequence_counter()
                    && let Some(dm) = self.state.domain_mut(&sd)
                {
                    // Amd D §6.2.2.1: persisted before authentication, so a challenge never repeats.
                    dm.sequence_counter = n;
                }
                self.channels[ch as usize].pending = Some(Pending::Scp03 { sd, kvn, pending, dek, renc });
                Ok(resp)
            }
        }
    }

    fn count_failure(&mut self, sd: &Aid, kvn: u8, e: &ScpError) {
        if matches!(e, ScpError::HostCryptogram | ScpError::CMac { .. })
            && let Some(d) = self.state.domain_mut(sd)
        {
            let n = d.failures(kvn).saturating_add(1);
            d.set_failures(kvn, n);
        }
    }

    /// EXTERNAL AUTHENTICATE: consumes the pending handshake whatever the outcome; a wrong
    /// host cryptogram or C-MAC counts against the key set.
    pub(crate) fn external_authenticate(&mut self, ch: u8, sd: Aid, cmd: &CommandApdu) -> ResponseApdu {
        let Some(p) = self.channels[ch as usize].pending.take() else {
            self.channels[ch as usize].end_session();
            return ResponseApdu::status(StatusWord::CONDITIONS_NOT_SATISFIED);
        };
        self.channels[ch as usize].end_session();
        match p {
            Pending::Scp02 { sd: psd, kvn, pending } if psd == sd => match pending.on_external_authenticate(cmd) {
                Ok((resp, card)) => {
                    if let Some(d) = self.state.domain_mut(&sd) {
                        d.set_failures(kvn, 0);
                        if card.initiated() {
                            // GPCS 2.3 App. E: the counter moves once a session is initiated;
                            // an exhausted counter blocks further sessions until keys change.
                            d.sequence_counter = card.next_sequence_counter().map(u32::from).unwrap_or(0x1_0000);
                        }
                    }
                    self.channels[ch as usize].session = Some(Session { sd, channel: Box::new(card) });
                    resp
                }
                Err(e) => {
                    self.count_failure(&sd, kvn, &e);
                    ResponseApdu::status(e.card_status())
                }
            },
            Pending::Scp03 { sd: psd, kvn, pending, dek, renc } if psd == sd => match pending.on_external_authenticate(cmd) {
                Ok((resp, card)) => {
                    if let Some(d) = self.state.domain_mut(&sd) {
                        d.set_failures(kvn, 0);
                    }
                    let card = card.with_dek(dek);
                    let channel: Box<dyn CardChannel> = match renc {
                        Some(k) => Box::new(PaddedREnc::new(card, k, self.state.profile.quirks.r_enc_min_padded_len)),
                        None => Box::new(card),
                    };
                    self.channels[ch as usize].session = Some(Session { sd, channel });
                    resp
                }
                Err(e) => {
                    self.count_failure(&sd, kvn, &e);
                    ResponseApdu::status(e.card_status())
                }
            },
            _ => ResponseApdu::status(StatusWord::CONDITIONS_NOT_SATISFIED),
        }
    }

    // ---- GET DATA ----

    pub(crate) fn card_capabilities(&self) -> CardCapabilities {
        let mut scp: Vec<ScpCapability> = Vec::new();
        for s in &self.state.profile.scp {
            let idx = match scp.iter().position(|c| c.id == s.id()) {
                Some(i) => i,
                None => {
                    scp.push(ScpCapability {
                        id: s.id(),
                        key_sizes: (s.id() == 0x03).then_some(0x07),
                        ..Default::default()
                    });
                    scp.len() - 1
                }
            };
            if !scp[idx].options.contains(&s.i()) {
                scp[idx].options.push(s.i());
            }
        }
        for c in scp.iter_mut() {
            c.options.sort_unstable();
        }
        let all: Privileges = Privilege::ALL.into_iter().collect();
        let app = Privileges::from_bits(all.bits() & !sd_only_privileges().bits() & !Privilege::SecurityDomain.mask());
        CardCapabilities {
            scp,
            ssd_privileges: Some(all),
            app_privileges: Some(app),
            lfdb_hash_algorithms: Some(vec![0x01, 0x02]),
            ..Default::default()
        }
    }

    /// GET DATA (GPCS 2.3 §11.3) of the card and the selected security domain.
    fn get_data(&mut self, sd: Aid, cmd: &CommandApdu) -> Sw<ResponseApdu> {
        let d = self.state.domain(&sd).ok_or(StatusWord::REFERENCED_DATA_NOT_FOUND)?;
        let mut out = Vec::new();
        match u16::from_be_bytes([cmd.p1, cmd.p2]) {
            0x9F7F => tlv::put(&mut out, 0x9F7F, &self.state.profile.cplc),
            0x0066 => self.card_recognition(d.scp).encode(&mut out),
            0x0067 => {
                let own = self.card_capabilities();
                // A declared object (checked when the card was created) keeps everything but
                // the SCP templates, which are always the card's own.
                let declared = self.state.identity.capabilities.as_deref().and_then(|c| CardCapabilities::parse(c).ok());
                match declared {
                    Some(mut c) => {
                        c.scp = own.scp;
                        c.double_wrapped = false;
                        c.encode(&mut out)
                    }
                    None => own.encode(&mut out),
                }
            }
            0x00E0 => {
                let mut keys: Vec<KeyInfo> =
                    d.keys.iter().map(|k| KeyInfo::basic(k.id, k.version, k.key_type, k.alg.key_len() as u8)).collect();
                for k in &d.public_keys {
                    let mut info = KeyInfo::basic(k.id, k.version, k.key_type, k.point.len() as u8);
                    info.components.push(KeyComponentInfo { key_type: KEY_TYPE_ECC_PARAMETERS_REFERENCE as u16, length: 1 });
                    keys.push(info);
                }
                keys.sort_by_key(|k| (k.version, k.id));
                KeyInformation { keys }.encode(&mut out)
            }
            // GPCS 2.3 §11.3.3: the confirmation counter of delegated management receipts.
            0x00C2 if self.is_isd(&sd) => tlv::put(&mut out, 0xC2, &self.state.confirmation_counter.to_be_bytes()),
            0x00C1 => {
                let c = d.sequence_counter.to_be_bytes();
                tlv::put(&mut out, 0xC1, if matches!(d.scp, Scp::Scp02 { .. }) { &c[2..] } else { &c[1..] });
            }
            0x00CF => tlv::put(&mut out, 0xCF, &d.kdd),
            0x0042 => tlv::put(&mut out, 0x42, self.state.iin.as_deref().ok_or(StatusWord::REFERENCED_DATA_NOT_FOUND)?),
            0x0045 => tlv::put(&mut out, 0x45, self.state.cin.as_deref().ok_or(StatusWord::REFERENCED_DATA_NOT_FOUND)?),
            0x004F => tlv::put(&mut out, 0x4F, sd.as_bytes()),
            0xFF21 => {
                let mut free = self.state.nv_free();
                if let Some(q) = d.nv_quota {
                    free = free.min((q as u64).saturating_sub(self.state.sd_nv_used(&sd)));
                }
                ExtendedCardResources {
                    installed_applications: (self.state.apps.len() - 1) as u32,
                    free_non_volatile_memory: free.min(u32::MAX as u64) as u32,
                    free_volatile_memory: self.state.volatile_free().min(u32::MAX as u64) as u32,
                    other: Vec::new(),
                }
                .encode(&mut out)
            }
            _ => return Err(StatusWord::REFERENCED_DATA_NOT_FOUND),
        }
        Ok(ok(out))
    }

    // ---- GET STATUS ----

    /// Whether `sd` sees every registry entry (the ISD, or Global Registry privilege).
    fn sees_all(&self, sd: &Aid) -> bool {
        self.is_isd(sd) || self.privileges_of(sd).contains(Privilege::GlobalRegistry)
    }

    /// The registry entry of an application, security domain or the ISD (`lc`) as this card
    /// reports it: the profile's quirks choose which tags the tagged format carries.
    fn app_entry(&self, a: &AppRecord, lc: LifeCycle) -> RegistryEntry {
        let q = self.state.profile.quirks;
        let mut e = RegistryEntry::new(a.aid, lc);
        e.contactless_state = a.contactless_state;
        e.privileges = Some(if q.status_one_byte_privileges { a.privileges.one_byte() } else { a.privileges.three_bytes() });
        if !q.status_minimal_entries {
            e.elf_aid = Some(a.elf);
            if q.status_load_file_version_in_apps {
                e.version = self.state.load_file(&a.elf).map(|l| l.version.clone());
            }
            e.associated_sd = Some(a.associated_sd);
        }
        if q.status_uicc_parameters {
            // ETSI TS 102 226: the UICC system specific parameters given at installation.
            e.ea = tlv::find(&a.install_params, 0xEA).ok().flatten().map(|t| t.value.to_vec());
        }
        e
    }

    fn status_entries(&self, sd: &Aid, scope: StatusScope, crit: &SearchCriteria) -> Vec<RegistryEntry> {
        let all = self.sees_all(sd);
        let isd = self.state.isd();
        let minimal = self.state.profile.quirks.status_minimal_entries;
        let mut out = Vec::new();
        match scope {
            StatusScope::ISD => {
                if self.is_isd(sd) && crit.matches(&isd) {
                    let a = &self.state.apps[0];
                    out.push(self.app_entry(a, LifeCycle::Card(CardLifeCycle(self.state.life_cycle))));
                }
            }
            StatusScope::APPLICATIONS => {
                for a in self.state.apps.iter().skip(1) {
                    if !(all || a.associated_sd == *sd || a.aid == *sd) || !crit.matches(&a.aid) {
                        continue;
                    }
                    let lc = if a.is_sd() {
                        LifeCycle::SecurityDomain(SdLifeCycle(a.life_cycle))
                    } else {
                        LifeCycle::Application(AppLifeCycle(a.life_cycle))
                    };
                    out.push(self.app_entry(a, lc));
                }
            }
            _ => {
                for l in &self.state.load_files {
                    if l.hidden || !(all || l.associated_sd == *sd) || !crit.matches(&l.aid) {
                        continue;
                    }
                    let mut e = RegistryEntry::new(l.aid, LifeCycle::LoadFile(ElfLifeCycle(l.life_cycle)));
                    e.contactless_state = l.contactless_state;
                    if !minimal {
                        e.version = Some(l.version.clone());
                        e.associated_sd = Some(l.associated_sd);
                    }
                    if scope == StatusScope::LOAD_FILES_AND_MODULES {
                        e.modules = l.modules.clone();
                    }
                    out.push(e);
                }
            }
        }
        out
    }

    /// GET STATUS (GPCS 2.3 §11.4) with `6310` paging: entries are whole, at most 256 bytes of
    /// response data (less the R-MAC/R-ENC overhead) per response; P2 b1 continues.
    fn get_status(&mut self, ch: u8, sd: Aid, cmd: &CommandApdu) -> Sw<ResponseApdu> {
        let gs = GetStatus::from_apdu(cmd).map_err(|e| gp_sw(&e))?;
        if gs.format == StatusFormat::Tagged && self.state.profile.quirks.legacy_get_status_only {
            return Err(StatusWord::INCORRECT_P1P2);
        }
        if gs.scope == StatusScope::LOAD_FILES_AND_MODULES && self.state.profile.quirks.no_get_status_modules {
            return Err(StatusWord::INCORRECT_P1P2);
        }
        let crit = if gs.criteria.is_empty() {
            SearchCriteria::default()
        } else {
            gs.search().map_err(|_| StatusWord::WRONG_DATA)?
        };
        let tag_filter: Option<Vec<u32>> = match &crit.tag_list {
            Some(list) => {
                let mut r = Reader::new(list);
                let mut tags = Vec::new();
                while !r.is_empty() {
                    tags.push(Tag::read(&mut r).map_err(|_| StatusWord::WRONG_DATA)?.0);
                }
                Some(tags)
            }
            None => None,
        };
        let cursor_key = StatusCursor { scope: gs.scope, format: gs.format, criteria: gs.criteria.clone(), next: 0 };
        let start = if gs.next {
            match &self.channels[ch as usize].status_cursor {
                Some(c) if StatusCursor { next: 0, ..c.clone() } == cursor_key => c.next,
                _ => return Err(StatusWord::CONDITIONS_NOT_SATISFIED),
            }
        } else {
            0
        };
        self.channels[ch as usize].status_cursor = None;
        let entries = self.status_entries(&sd, gs.scope, &crit);
        if entries.is_empty() {
            return Err(StatusWord::REFERENCED_DATA_NOT_FOUND);
        }
        let r_mac = self.channels[ch as usize].session.as_ref().is_some_and(|s| s.channel.level().r_mac());
        let budget = if r_mac { 256 - 32 } else { 256 };
        let mut out = Vec::new();
        let mut i = start;
        while i < entries.len() {
            let mut one = encode_status_response(gs.scope, gs.format, std::slice::from_ref(&entries[i]));
            if let (Some(tags), StatusFormat::Tagged) = (&tag_filter, gs.format) {
                let value = entries[i].tagged_value();
                let mut v = Vec::new();
                for t in TlvIter::new(&value).flatten() {
                    if tags.contains(&t.tag.0) {
                        t.to_owned().encode(&mut v);
                    }
                }
                one.clear();
                tlv::put(&mut one, 0xE3, &v);
            }
            if i > start && out.len() + one.len() > budget {
                break;
            }
            out.extend_from_slice(&one);
            i += 1;
        }
        if i < entries.len() {
            self.channels[ch as usize].status_cursor = Some(StatusCursor { next: i, ..cursor_key });
            return Ok(ResponseApdu::new(out, StatusWord::MORE_DATA));
        }
        Ok(ok(out))
    }

    // ---- SET STATUS ----

    /// SET STATUS (GPCS 2.3 §11.10) with the transitions of §5.1 (card) and §5.3 (applications
    /// and security domains).
    fn set_status(&mut self, _ch: u8, perf: Aid, cmd: &CommandApdu) -> Sw<ResponseApdu> {
        let s = SetStatus::from_apdu(cmd).map_err(|e| gp_sw(&e))?;
        let isd = self.state.isd();
        let pp = self.privileges_of(&perf);
        let card = CardLifeCycle(self.state.life_cycle);
        match s.scope {
            SetStatusScope::ISD => {
                if s.aid().is_some_and(|a| a != isd) {
                    return Err(StatusWord::WRONG_DATA);
                }
                let to = CardLifeCycle(s.state);
                if to.name().is_none() || to == CardLifeCycle::OP_READY {
                    return Err(StatusWord::WRONG_DATA);
                }
                let by_isd = perf == isd;
                let allowed = match (card, to) {
                    (_, CardLifeCycle::TERMINATED) => by_isd || pp.contains(Privilege::CardTerminate),
                    (CardLifeCycle::OP_READY, CardLifeCycle::INITIALIZED) => by_isd,
                    (CardLifeCycle::OP_READY | CardLifeCycle::INITIALIZED, CardLifeCycle::SECURED) => by_isd,
                    (CardLifeCycle::SECURED, CardLifeCycle::CARD_LOCKED) => by_isd || pp.contains(Privilege::CardLock),
                    // GPCS 2.3 §5.1.2: only the ISD unlocks the card.
                    (CardLifeCycle::CARD_LOCKED, CardLifeCycle::SECURED) => by_isd,
                    _ => false,
                };
                if !allowed {
                    return Err(StatusWord::CONDITIONS_NOT_SATISFIED);
                }
                self.state.life_cycle = to.0;
                if matches!(to, CardLifeCycle::CARD_LOCKED | CardLifeCycle::TERMINATED) {
                    let evict: Vec<Aid> = self
                        .state
                        .apps
                        .iter()
                        .skip(1)
                        .filter(|a| to == CardLifeCycle::TERMINATED || !a.privileges.contains(Privilege::FinalApplication))
                        .map(|a| a.aid)
                        .collect();
                    for a in evict {
                        if a == perf {
                            // After its response has been protected.
                            self.deferred_evict.push(a);
                        } else {
                            self.evict(&a);
                        }
                    }
                }
                Ok(ok(Vec::new()))
            }
            SetStatusScope::APPLICATION | SetStatusScope::SD_AND_APPLICATIONS => {
                let aid = s.aid().ok_or(StatusWord::WRONG_DATA)?;
                if aid == isd {
                    return Err(StatusWord::CONDITIONS_NOT_SATISFIED);
                }
                let rec = self.state.app(&aid).ok_or(StatusWord::REFERENCED_DATA_NOT_FOUND)?.clone();
                if s.scope == SetStatusScope::SD_AND_APPLICATIONS && !rec.is_sd() {
                    return Err(StatusWord::WRONG_DATA);
                }
                let manager = perf == isd
                    || pp.contains(Privilege::GlobalLock)
                    || (rec.associated_sd == perf && pp.contains(Privilege::AuthorizedManagement));
                let locked = rec.life_cycle & 0x80 != 0;
                let new = if s.state & 0x80 != 0 {
                    if locked || !manager || aid == perf {
                        return Err(StatusWord::CONDITIONS_NOT_SATISFIED);
                    }
                    rec.life_cycle | 0x80
                } else if locked {
                    if !manager {
                        return Err(StatusWord::CONDITIONS_NOT_SATISFIED);
                    }
                    rec.life_cycle & 0x7F
                } else if rec.is_sd() && s.state == SdLifeCycle::PERSONALIZED.0 {
                    // An SD becomes PERSONALIZED by itself or its manager, from SELECTABLE.
                    if rec.life_cycle != SdLifeCycle::SELECTABLE.0 || !(manager || aid == perf) {
                        return Err(StatusWord::CONDITIONS_NOT_SATISFIED);
                    }
                    SdLifeCycle::PERSONALIZED.0
                } else {
                    // Application-specific states are the application's own business.
                    return Err(StatusWord::WRONG_DATA);
                };
                let mut targets = vec![aid];
                if s.scope == SetStatusScope::SD_AND_APPLICATIONS && (new & 0x80) != (rec.life_cycle & 0x80) {
                    targets.extend(self.state.apps.iter().filter(|a| a.associated_sd == aid && a.aid != aid).map(|a| a.aid));
                }
                let lock = new & 0x80 != 0;
                for t in &targets {
                    if let Some(a) = self.state.app_mut(t) {
                        a.life_cycle = if *t == aid { new } else if lock { a.life_cycle | 0x80 } else { a.life_cycle & 0x7F };
                    }
                }
                if lock {
                    for t in targets {
                        self.evict(&t);
                    }
                }
                Ok(ok(Vec::new()))
            }
            _ => Err(StatusWord::INCORRECT_P1P2),
        }
    }

    // ---- keys ----

    fn decrypt_sensitive(&self, ch: u8, data: &[u8]) -> Sw<Secret> {
        let s = self.channels[ch as usize].session.as_ref().ok_or(StatusWord::SECURITY_STATUS_NOT_SATISFIED)?;
        s.channel.decrypt_sensitive(data).map_err(|_| StatusWord::WRONG_DATA)
    }

    /// The version of factory key sets: `FF`, or `00` on cards with the `key_version_00` quirk.
    fn initial_key_version(&self) -> u8 {
        if self.state.profile.quirks.key_version_00 { 0x00 } else { INITIAL_KEY_VERSION }
    }

    /// The initial key set (`FF`, or `00`) goes once a complete secure channel key set (ids 1 to 3) of
    /// another version is present (GPCS 2.3 §11.8.2.2).
    fn retire_initial_keys(&mut self, sd: &Aid) {
        let Some(d) = self.state.domain(sd) else { return };
        let scp = d.scp;
        let initial = self.initial_key_version();
        let has_other = d
            .keys
            .iter()
            .filter(|k| k.version != initial && !k.receipt)
            .any(|k| (1..=3).all(|id| self.secrets.get(&(*sd, k.version, id)).is_some_and(|x| alg_fits(scp, x.alg()))));
        if !has_other {
            return;
        }
        let ids: Vec<u8> = d.keys.iter().filter(|k| k.version == initial).map(|k| k.id).collect();
        for id in ids {
            self.remove_secret(sd, initial, id);
        }
        if let Some(d) = self.state.domain_mut(sd) {
            d.set_failures(initial, 0);
        }
    }

    /// Turns a decrypted key value and its GP key type into a key.
    fn make_key(key_type: u8, length: Option<u8>, plain: &[u8]) -> Sw<SecretKey> {
        match key_type {
            KEY_TYPE_DES => {
                let n = match length {
                    Some(l) => l as usize,
                    None if plain.len() == 24 => 24,
                    None => 16,
                };
                let v = plain.get(..n).ok_or(StatusWord::WRONG_DATA)?;
                SecretKey::des3(v).map_err(|_| StatusWord::WRONG_DATA)
            }
            KEY_TYPE_AES => {
                let n = length.ok_or(StatusWord::WRONG_DATA)? as usize;
                let v = plain.get(..n).ok_or(StatusWord::WRONG_DATA)?;
                SecretKey::aes(v).map_err(|_| StatusWord::WRONG_DATA)
            }
            _ => Err(StatusWord::ALGORITHM_NOT_SUPPORTED),
        }
    }

    fn check_kcv(key: &SecretKey, kcv: &[u8]) -> Sw<()> {
        if kcv.is_empty() {
            return Ok(());
        }
        let mine = key.kcv();
        if kcv.len() > 3 || mine[..kcv.len()] != *kcv {
            return Err(StatusWord::INVALID_KEY_CHECK_VALUE);
        }
        Ok(())
    }

    /// PUT KEY (GPCS 2.3 §11.8, Amd D §7.2): add (P1 = 00) or replace (P1 = version) keys of the
    /// selected security domain, values decrypted under the session's DEK, KCVs checked.
    fn put_key(&mut self, ch: u8, sd: Aid, cmd: &CommandApdu) -> Sw<ResponseApdu> {
        let pk = PutKey::from_apdu(cmd).map_err(|e| gp_sw(&e))?;
        if pk.components.iter().any(|c| c.key_type == KEY_TYPE_ECC_PUBLIC || !c.more.is_empty()) {
            return self.put_public_key(&sd, &pk);
        }
        let scp = self.state.domain(&sd).ok_or(StatusWord::CONDITIONS_NOT_SATISFIED)?.scp;
        // The Receipt Generation key of delegated management: one key, version 71, id 01, in
        // an SD with the Receipt Generation privilege (another key set may use version 71
        // elsewhere, as some cards use 70 for their secure channel keys).
        let dm_key = pk.new_version == RECEIPT_KEY_VERSION
            && (pk.replace_version == 0 || pk.replace_version == RECEIPT_KEY_VERSION)
            && pk.key_id.max(1) == RECEIPT_KEY_ID
            && pk.components.len() == 1
            && self.privileges_of(&sd).contains(Privilege::ReceiptGeneration);
        let first_id = pk.key_id.max(1);
        let mut keys = Vec::new();
        for (n, c) in pk.components.iter().enumerate() {
            let id = first_id.checked_add(n as u8).filter(|i| *i <= 0x7F).ok_or(StatusWord::WRONG_DATA)?;
            let plain = self.decrypt_sensitive(ch, &c.encrypted)?;
            let key = Self::make_key(c.key_type, c.key_length, &plain)?;
            Self::check_kcv(&key, &c.kcv)?;
            if (1..=3).contains(&id) && !dm_key && !alg_fits(scp, key.alg()) {
                return Err(StatusWord::ALGORITHM_NOT_SUPPORTED);
            }
            keys.push((id, key));
        }
        let d = self.state.domain(&sd).ok_or(StatusWord::CONDITIONS_NOT_SATISFIED)?;
        let v_new = pk.new_version;
        if pk.replace_version == 0 {
            if keys.iter().any(|(id, _)| d.keys.iter().any(|k| k.version == v_new && k.id == *id)) {
                return Err(StatusWord::WRONG_DATA);
            }
        } else {
            let v_old = pk.replace_version;
            if !d.keys.iter().any(|k| k.version == v_old) {
                return Err(StatusWord::REFERENCED_DATA_NOT_FOUND);
            }
            if v_new != v_old && d.keys.iter().any(|k| k.version == v_new) {
                return Err(StatusWord::WRONG_DATA);
            }
            // The whole set takes the new version; the keys named in the command get new values.
            let others: Vec<u8> = d.keys.iter().filter(|k| k.version == v_old).map(|k| k.id).collect();
            for id in others {
                let Some(k) = self.secrets.get(&(sd, v_old, id)).cloned() else { continue };
                self.remove_secret(&sd, v_old, id);
                if !keys.iter().any(|(i, _)| *i == id) {
                    self.put_secret(&sd, v_new, id, k);
                }
            }
            if let Some(d) = self.state.domain_mut(&sd) {
                d.set_failures(v_old, 0);
            }
        }
        for (id, k) in &keys {
            if dm_key {
                self.put_receipt_key(&sd, k.clone());
            } else {
                self.put_secret(&sd, v_new, *id, k.clone());
            }
        }
        if let Some(d) = self.state.domain_mut(&sd) {
            d.set_failures(v_new, 0);
        }
        if !pk.more {
            self.retire_initial_keys(&sd);
        }
        let mut out = vec![v_new];
        for ((_, k), c) in keys.iter().zip(&pk.components) {
            if !c.kcv.is_empty() {
                out.extend_from_slice(&k.kcv()[..c.kcv.len()]);
            }
        }
        Ok(ok(out))
    }

    /// PUT KEY of an ECC public key (`B0` with parameters reference `F0 00`, P-256): the Token
    /// Verification key of delegated management, key version `70`, in an SD with the Token
    /// Verification privilege. Stored in clear (it is public). Explicit curve parameters and
    /// other curves: `9484`.
    fn put_public_key(&mut self, sd: &Aid, pk: &PutKey) -> Sw<ResponseApdu> {
        let [c] = pk.components.as_slice() else { return Err(StatusWord::WRONG_DATA) };
        if c.key_type != KEY_TYPE_ECC_PUBLIC || c.more != [(KEY_TYPE_ECC_PARAMETERS_REFERENCE, vec![ECC_PARAMETERS_P256])] {
            return Err(StatusWord::ALGORITHM_NOT_SUPPORTED);
        }
        if pk.new_version != TOKEN_KEY_VERSION || !(pk.replace_version == 0 || pk.replace_version == TOKEN_KEY_VERSION) {
            return Err(StatusWord::WRONG_DATA);
        }
        if !self.privileges_of(sd).contains(Privilege::TokenVerification) {
            return Err(StatusWord::CONDITIONS_NOT_SATISFIED);
        }
        if !c.kcv.is_empty() {
            return Err(StatusWord::WRONG_DATA);
        }
        let key = P256PublicKey::from_sec1(&c.encrypted).map_err(|_| StatusWord::WRONG_DATA)?;
        let id = pk.key_id.max(1);
        let d = self.state.domain_mut(sd).ok_or(StatusWord::CONDITIONS_NOT_SATISFIED)?;
        let present = d.public_keys.iter().any(|k| k.version == TOKEN_KEY_VERSION);
        match pk.replace_version {
            0 if d.public_keys.iter().any(|k| k.version == TOKEN_KEY_VERSION && k.id == id) => return Err(StatusWord::WRONG_DATA),
            0 => {}
            _ if !present => return Err(StatusWord::REFERENCED_DATA_NOT_FOUND),
            _ => d.public_keys.retain(|k| k.version != TOKEN_KEY_VERSION),
        }
        d.public_keys.push(PublicKeyRecord {
            version: TOKEN_KEY_VERSION,
            id,
            key_type: KEY_TYPE_ECC_PUBLIC,
            parameters: ECC_PARAMETERS_P256,
            point: key.to_sec1_uncompressed(),
        });
        d.public_keys.sort_by_key(|k| (k.version, k.id));
        Ok(ok(vec![TOKEN_KEY_VERSION]))
    }

    // ---- STORE DATA ----

    /// STORE DATA (GPCS 2.3 §11.11): to the selected security domain (keys in DGIs 00B9/8113,
    /// IIN/CIN, other personalization data kept), or, after INSTALL [for personalization], to
    /// that application (or security domain).
    fn store_data(&mut self, ch: u8, sd: Aid, cmd: &CommandApdu) -> Sw<ResponseApdu> {
        let s = StoreData::from_apdu(cmd).map_err(|e| gp_sw(&e))?;
        let chan = &mut self.channels[ch as usize];
        let expected = chan.store_next.unwrap_or(0);
        if s.block != expected && s.block != 0 {
            return Err(StatusWord::INCORRECT_P1P2);
        }
        chan.store_next = if s.last { None } else { Some(s.block.wrapping_add(1)) };
        let target = chan.perso_target.unwrap_or(sd);
        if s.last {
            chan.perso_target = None;
        }
        let rec = self.state.app(&target).ok_or(StatusWord::REFERENCED_DATA_NOT_FOUND)?.clone();
        if rec.is_sd() {
            if let Some(answer) = self.es10(&target, &s)? {
                return Ok(ok(answer));
            }
            self.store_data_to_domain(ch, &target, &s)?;
        } else {
            self.store_data_to_app(ch, &rec, &s)?;
        }
        Ok(ok(Vec::new()))
    }

    /// The ES10 functions of an eUICC's ISD-R (GSMA SGP.22 §5.7) that this card implements:
    /// GetEuiccData (ES10c.GetEID), `BF3E { 5C 01 5A }` → `BF3E { 5A 10 EID }`. `None` when the
    /// STORE DATA is not such a request (or the card is no eUICC): it is personalization data.
    fn es10(&self, target: &Aid, s: &StoreData) -> Sw<Option<Vec<u8>>> {
        if !self.state.profile.quirks.euicc
            || !self.is_isd(target)
            || s.structure != DataStructure::BerTlv
            || s.encryption != EncryptionInfo::None
        {
            return Ok(None);
        }
        let Ok(Some(req)) = tlv::find(&s.data, 0xBF3E) else { return Ok(None) };
        // GetEuiccDataRequest ::= [62] { tagList [APPLICATION 28] }: only the EID ('5A') is
        // defined.
        let tags = tlv::find(req.value, 0x5C).map_err(|_| StatusWord::WRONG_DATA)?.ok_or(StatusWord::WRONG_DATA)?;
        if tags.value != [0x5A] {
            return Err(StatusWord::WRONG_DATA);
        }
        let eid = self.state.eid.as_deref().ok_or(StatusWord::REFERENCED_DATA_NOT_FOUND)?;
        let mut v = Vec::new();
        tlv::put(&mut v, 0x5A, eid);
        let mut out = Vec::new();
        tlv::put(&mut out, 0xBF3E, &v);
        Ok(Some(out))
    }

    /// The data with P1 "encrypted" undone: each DGI whose identifier has b16 set, or the whole
    /// field when it is not in DGIs.
    fn decrypt_store_data(&self, ch: u8, s: &StoreData, skip_key_dgis: bool) -> Sw<Secret> {
        if s.encryption != EncryptionInfo::Encrypted {
            return Ok(Zeroizing::new(s.data.clone()));
        }
        if s.structure != DataStructure::Dgi {
            return self.decrypt_sensitive(ch, &s.data);
        }
        let dgis = s.parse_dgis().map_err(|_| StatusWord::WRONG_DATA)?;
        let mut out = Zeroizing::new(Vec::new());
        for mut d in dgis {
            if d.id & 0x8000 != 0 && !(skip_key_dgis && d.id == DGI_ENCRYPTED_AES_KEY) {
                d.value = self.decrypt_sensitive(ch, &d.value)?.to_vec();
            }
            d.encode(&mut out);
        }
        Ok(out)
    }

    fn store_data_to_app(&mut self, ch: u8, rec: &AppRecord, s: &StoreData) -> Sw<()> {
        let data = self.decrypt_store_data(ch, s, false)?;
        let ctx = self.app_context(&rec.aid, ch).ok_or(StatusWord::REFERENCED_DATA_NOT_FOUND)?;
        let m = self.live.get_mut(&rec.aid).ok_or(StatusWord::CONDITIONS_NOT_SATISFIED)?;
        let block = StoreDataBlock { structure: s.structure, last: s.last, block: s.block, data: &data };
        let r = m.store_data(&ctx, &block);
        self.sync_model(&rec.aid);
        if r == StatusWord::SUCCESS { Ok(()) } else { Err(r) }
    }

    fn store_data_to_domain(&mut self, ch: u8, target: &Aid, s: &StoreData) -> Sw<()> {
        let data = self.decrypt_store_data(ch, s, true)?;
        let is_isd = self.is_isd(target);
        match s.structure {
            DataStructure::Dgi => {
                let dgis = tsm_gp::tlv::parse_dgis(&data).map_err(|_| StatusWord::WRONG_DATA)?;
                let mut i = 0;
                // Validate and decode everything first: a bad DGI changes nothing.
                let mut keys: Vec<(u8, u8, SecretKey)> = Vec::new();
                let mut other: Vec<(u16, Vec<u8>)> = Vec::new();
                while i < dgis.len() {
                    let d = &dgis[i];
                    i += 1;
                    if d.id != DGI_KEY_ATTRIBUTES {
                        other.push((d.id, d.value.clone()));
                        continue;
                    }
                    let attrs = KeyAttributes::from_dgi(d).map_err(|_| StatusWord::WRONG_DATA)?;
                    if attrs.version == 0 || attrs.version > 0x7F {
                        return Err(StatusWord::WRONG_DATA);
                    }
                    for kc in &attrs.keys {
                        let enc = dgis.get(i).filter(|x| x.id == DGI_ENCRYPTED_AES_KEY).ok_or(StatusWord::WRONG_DATA)?;
                        i += 1;
                        let plain = self.decrypt_sensitive(ch, &enc.value)?;
                        let key = Self::make_key(attrs.key_type, Some(attrs.key_length), &plain)?;
                        Self::check_kcv(&key, &kc.kcv)?;
                        let scp = self.state.domain(target).map(|d| d.scp).ok_or(StatusWord::CONDITIONS_NOT_SATISFIED)?;
                        if (1..=3).contains(&kc.id) && !alg_fits(scp, key.alg()) {
                            return Err(StatusWord::ALGORITHM_NOT_SUPPORTED);
                        }
                        keys.push((attrs.version, kc.id, key));
                    }
                }
                for (v, id, k) in keys {
                    self.put_secret(target, v, id, k);
                    if let Some(d) = self.state.domain_mut(target) {
                        d.set_failures(v, 0);
                    }
                }
                for (id, v) in other {
                    match id {
                        0x0042 if is_isd => self.state.iin = Some(v),
                        0x0045 if is_isd => self.state.cin = Some(v),
                        _ => self.append_sd_data(target, format!("DGI:{id:04X}"), &v),
                    }
                }
                self.retire_initial_keys(target);
            }
            DataStructure::BerTlv => {
                let ts = tlv::parse_all(&data).map_err(|_| StatusWord::WRONG_DATA)?;
                let ts: Vec<(u32, Vec<u8>)> = ts.iter().map(|t| (t.tag.0, t.value.to_vec())).collect();
                for (tag, v) in ts {
                    match tag {
                        0x42 if is_isd => self.state.iin = Some(v),
                        0x45 if is_isd => self.state.cin = Some(v),
                        _ => self.append_sd_data(target, format!("TAG:{tag:X}"), &v),
                    }
                }
            }
            _ => self.append_sd_data(target, "RAW".into(), &data),
        }
        Ok(())
    }

    fn append_sd_data(&mut self, sd: &Aid, key: String, value: &[u8]) {
        if let Some(d) = self.state.domain_mut(sd) {
            d.data.entry(key).or_default().push_str(&tsm_gp::hex::encode(value));
        }
    }
}
