//! The plan state and its two transitions: build the next batch, and check a batch's answers.

use super::batch::{Batch, BatchCommand, Next, Outcome, Progress};
use super::channel::{ChainPoint, HostState, Live};
use super::error::{ErrorRecord, PlanError};
use super::keys::{KeyError, KeyProvider, KeyRole, WrappedKey, Wrapping};
use super::model::{CardView, Deploy, KeysetRef, Operation, PlanOptions};
use super::program::{self, GpCmd, Instr, KeySource, Planned, REPLACE_SESSION_KEYS, StatusPurpose, predictable};
use serde::{Deserialize, Serialize};
use tsm_gp::gp::data::GpDataObject;
use tsm_gp::gp::lifecycle::{AppLifeCycle, ElfLifeCycle, SdLifeCycle};
use tsm_gp::gp::put_key::{KEY_TYPE_AES, KEY_TYPE_DES};
use tsm_gp::gp::status::{GetStatusPager, PagerStep, StatusFormat};
use tsm_gp::gp::store_data::{DataStructure, EncryptionInfo, KeyAttributes, KeyCheck, KeyLoad};
use tsm_gp::gp::{
    Aid, Delete, GetData, GetStatus, Install, InstallBody, InstallParams, LifeCycle, Load, Privileges, PutKey, PutKeyComponent,
    PutKeyResponse, RegistryEntry, Select, SetStatus, StatusScope, StoreData, SystemParams,
};
use tsm_gp::scp::scp02::{self, Scp02Options};
use tsm_gp::scp::scp03::{self, Expect};
use tsm_gp::scp::{Scp, ScpError, SecurityLevel, StaticKeys};
use tsm_gp::{Codec, CommandApdu, ResponseApdu, StatusWord};

const STATE_VERSION: u32 = 1;
const OK: u16 = 0x9000;
/// What cards answer to INSTALL [for load] of a load file they already have (GPCS 2.3 §11.5.5:
/// 6985 conditions not satisfied, 6A80 wrong data; ISO 6A89 file already exists).
const ELF_EXISTS: [u16; 3] = [0x6985, 0x6A80, 0x6A89];

/// The whole state of a plan: serializable, no key material. See [`super::Planner`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PlanState {
    version: u32,
    /// The card as known, updated as the plan learns (counter, KDD, registry, key version).
    card: CardView,
    op: Operation,
    opts: PlanOptions,
    steps: Vec<String>,
    program: Vec<Planned>,
    /// The next instruction to turn into commands.
    pc: usize,
    session: Session,
    /// Sequence counters of supplementary SDs known to be current.
    #[serde(default)]
    sd_counters: Vec<SdCounter>,
    /// GET STATUS answers collected so far for the instruction at `pc`.
    #[serde(default)]
    pager: Option<PagerProgress>,
    /// The batch handed out and not answered yet.
    #[serde(default)]
    inflight: Option<InFlight>,
    stats: Stats,
    #[serde(default)]
    load_skipped: bool,
    #[serde(default)]
    resynced: bool,
    #[serde(default)]
    started: bool,
    #[serde(default)]
    end: Option<End>,
}

/// The secure channel state between round trips.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "state", rename_all = "snake_case")]
enum Session {
    None,
    Selected { sd: Aid },
    /// INITIALIZE UPDATE answered: EXTERNAL AUTHENTICATE goes first in the next batch.
    Authenticating {
        sd: Aid,
        keys: KeySource,
        #[serde(with = "tsm_gp::hex::serde")]
        ea: Vec<u8>,
        host: HostState,
    },
    Open { sd: Aid, keys: KeySource, host: HostState },
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct SdCounter {
    sd: Aid,
    value: u32,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct PagerProgress {
    pc: usize,
    /// The first page was asked in the legacy format.
    #[serde(default)]
    legacy: bool,
    /// Unwrapped answers (data ‖ SW), replayed through `GetStatusPager`.
    #[serde(with = "hex_list")]
    responses: Vec<Vec<u8>>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct InFlight {
    sent: Vec<Sent>,
    segs: Vec<Seg>,
}

/// A secure channel session used in a batch: its state once every command of the batch is
/// wrapped; commands carry their own position in it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct Seg {
    sd: Aid,
    keys: KeySource,
    end: HostState,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct Sent {
    pc: usize,
    name: String,
    accept: Vec<u16>,
    kind: SentKind,
    /// PUT KEY: the key version and KCVs the card must answer.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    keys: Option<ExpectedKeys>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
enum SentKind {
    Select { aid: Aid },
    ReadCounter { sd: Aid },
    InitUpdate { sd: Aid, keys: KeySource, check: IuCheck },
    ExternalAuthenticate { sd: Aid, seg: usize, at: ChainPoint },
    Wrapped { seg: usize, at: ChainPoint },
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "mode", rename_all = "snake_case")]
enum IuCheck {
    Predicted03 { state: scp03::PredictedSessionState },
    Predicted02 { state: scp02::PredictedSessionState },
    Fresh {
        #[serde(with = "tsm_gp::hex::serde")]
        host_challenge: Vec<u8>,
    },
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct ExpectedKeys {
    kvn: u8,
    #[serde(with = "hex_list")]
    kcvs: Vec<Vec<u8>>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
struct Stats {
    round_trips: u32,
    apdus_sent: u32,
    apdus_answered: u32,
    bytes_loaded: u64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "end", rename_all = "snake_case")]
enum End {
    Done(Box<Outcome>),
    Failed(ErrorRecord),
}

/// A command being assembled into a batch.
struct Built {
    name: String,
    plain: CommandApdu,
    accept: Vec<u16>,
    keys: Option<ExpectedKeys>,
}

impl Built {
    fn new(name: impl Into<String>, plain: CommandApdu) -> Built {
        Built { name: name.into(), plain, accept: vec![OK], keys: None }
    }
}

/// The batch under construction.
#[derive(Default)]
struct Builder {
    commands: Vec<BatchCommand>,
    sent: Vec<Sent>,
    segs: Vec<Seg>,
    live: Option<(usize, Live)>,
}

impl Builder {
    fn push(&mut self, pc: usize, name: String, wire: &CommandApdu, accept: Vec<u16>, kind: SentKind, keys: Option<ExpectedKeys>) {
        self.commands.push(BatchCommand { apdu: wire.to_bytes(), name: name.clone(), accept: accept.clone() });
        self.sent.push(Sent { pc, name, accept, kind, keys });
    }
    fn open(&mut self, sd: Aid, keys: KeySource, live: Live) -> usize {
        self.close();
        self.segs.push(Seg { sd, keys, end: live.snapshot() });
        self.live = Some((self.segs.len() - 1, live));
        self.segs.len() - 1
    }
    /// Ends the current session segment (SELECT, another session, end of batch).
    fn close(&mut self) {
        if let Some((seg, live)) = self.live.take() {
            self.segs[seg].end = live.snapshot();
        }
    }
}

fn scp_err(command: &str) -> impl Fn(ScpError) -> PlanError + '_ {
    move |e| PlanError::Build { command: command.to_string(), detail: e.to_string() }
}

impl PlanState {
    pub(crate) fn new(card: CardView, op: Operation, opts: PlanOptions) -> Result<PlanState, PlanError> {
        let prog = program::build(&card, &op, &opts)?;
        let load_skipped = matches!(op, Operation::Deploy(_)) && !prog.instrs.iter().any(|p| matches!(p.instr, Instr::Cmd { cmd: GpCmd::InstallForLoad }));
        // The SSD this plan creates starts with a counter the options may know: then its
        // handshake is predicted in the batch that creates it.
        let sd_counters = match (&op, opts.new_sd_sequence_counter) {
            (Operation::Deploy(d), Some(value)) => d.ssd.iter().map(|s| SdCounter { sd: s.aid, value }).collect(),
            _ => Vec::new(),
        };
        Ok(PlanState {
            version: STATE_VERSION,
            card,
            op,
            opts,
            steps: prog.steps,
            program: prog.instrs,
            pc: 0,
            session: Session::None,
            sd_counters,
            pager: None,
            inflight: None,
            stats: Stats::default(),
            load_skipped,
            resynced: false,
            started: false,
            end: None,
        })
    }

    pub fn card(&self) -> &CardView {
        &self.card
    }
    pub fn operation(&self) -> &Operation {
        &self.op
    }
    pub fn round_trips(&self) -> u32 {
        self.stats.round_trips
    }
    /// Whether a batch is out and its answers awaited.
    pub fn awaiting_answers(&self) -> bool {
        self.inflight.is_some()
    }
    /// The terminal error, once the plan failed.
    pub fn error(&self) -> Option<&ErrorRecord> {
        match &self.end {
            Some(End::Failed(e)) => Some(e),
            _ => None,
        }
    }
    pub fn outcome(&self) -> Option<&Outcome> {
        match &self.end {
            Some(End::Done(o)) => Some(o.as_ref()),
            _ => None,
        }
    }
    /// Names of the steps and whether each is done.
    pub fn steps(&self) -> Vec<(String, bool)> {
        self.steps.iter().enumerate().map(|(i, n)| (n.clone(), self.step_done(i))).collect()
    }

    fn step_done(&self, step: usize) -> bool {
        matches!(self.end, Some(End::Done(_))) || self.program.iter().enumerate().all(|(i, p)| p.step != step || i < self.pc)
    }

    pub fn progress(&self) -> Progress {
        let bytes_total = match &self.op {
            Operation::Deploy(d) => {
                let blocks = self.program.iter().filter(|p| matches!(p.instr, Instr::Cmd { cmd: GpCmd::Load { .. } })).count();
                (blocks.saturating_mul(self.card.profile.max_block)).min(d.load_file.load_file.len()) as u64
            }
            _ => 0,
        };
        Progress {
            steps_done: (0..self.steps.len()).filter(|&s| self.step_done(s)).count() as u32,
            steps_total: self.steps.len() as u32,
            apdus_sent: self.stats.apdus_sent,
            apdus_answered: self.stats.apdus_answered,
            round_trips: self.stats.round_trips,
            bytes_loaded: self.stats.bytes_loaded,
            bytes_total,
        }
    }

    // ---- starting and building batches ----

    pub(crate) fn start(&mut self, keys: &mut dyn KeyProvider) -> Result<Next, PlanError> {
        if self.started {
            return Err(PlanError::Misuse("start called twice".into()));
        }
        self.started = true;
        self.next_batch(keys)
    }

    fn deploy(&self) -> Result<&Deploy, PlanError> {
        match &self.op {
            Operation::Deploy(d) => Ok(d),
            _ => Err(PlanError::InvalidOperation("deployment command in another operation".into())),
        }
    }

    fn level(&self) -> SecurityLevel {
        if let Some(l) = self.opts.level {
            return SecurityLevel(l);
        }
        match self.card.scp {
            Scp::Scp03 { i } if i & scp03::i_bits::R_MAC != 0 => SecurityLevel::C_DEC_C_MAC_R_MAC,
            _ => SecurityLevel::C_DEC_C_MAC,
        }
    }

    fn static_keys(&self, provider: &dyn KeyProvider, sd: &Aid, src: KeySource) -> Result<StaticKeys, KeyError> {
        match src {
            KeySource::Isd { kvn } => provider.isd_keys(kvn, self.card.kdd.as_deref()),
            KeySource::Sd { kvn } => provider.sd_keys(sd, kvn),
        }
    }

    fn current_counter(&self, sd: &Aid) -> Option<u32> {
        if *sd == self.card.isd_aid {
            self.card.sequence_counter.filter(|_| self.card.counter_is_current)
        } else {
            self.sd_counters.iter().find(|c| c.sd == *sd).map(|c| c.value)
        }
    }

    fn set_counter(&mut self, sd: &Aid, value: u32) {
        if *sd == self.card.isd_aid {
            self.card.sequence_counter = Some(value);
            self.card.counter_is_current = true;
        } else if let Some(c) = self.sd_counters.iter_mut().find(|c| c.sd == *sd) {
            c.value = value;
        } else {
            self.sd_counters.push(SdCounter { sd: *sd, value });
        }
    }

    fn host_challenge(&self, provider: &mut dyn KeyProvider) -> Vec<u8> {
        let s16 = matches!(self.card.scp, Scp::Scp03 { i } if i & scp03::i_bits::S16 != 0) && !self.card.profile.quirks.no_s16;
        let mut hc = vec![0u8; if s16 { 16 } else { 8 }];
        provider.random(&mut hc);
        hc
    }

    /// Builds the next batch, or ends the plan when nothing is left.
    fn next_batch(&mut self, provider: &mut dyn KeyProvider) -> Result<Next, PlanError> {
        if self.pc >= self.program.len() {
            return Ok(self.finish());
        }
        let naive = self.opts.one_apdu_per_round_trip;
        let mut b = Builder::default();
        match self.session.clone() {
            Session::Open { sd, keys, host } => {
                let live = Live::restore(self.static_keys(provider, &sd, keys)?, &host).map_err(scp_err("secure channel"))?;
                b.open(sd, keys, live);
            }
            Session::Authenticating { sd, keys, ea, host } => {
                let live = Live::restore(self.static_keys(provider, &sd, keys)?, &host).map_err(scp_err("secure channel"))?;
                let at = live.position();
                let seg = b.open(sd, keys, live);
                let ea = CommandApdu::from_bytes(&ea).map_err(|e| PlanError::Build { command: "EXTERNAL AUTHENTICATE".into(), detail: e.to_string() })?;
                b.push(self.pc, format!("EXTERNAL AUTHENTICATE ({sd})"), &ea, vec![OK], SentKind::ExternalAuthenticate { sd, seg, at }, None);
            }
            Session::None | Session::Selected { .. } => {}
        }
        while self.pc < self.program.len() {
            if naive && !b.commands.is_empty() {
                break;
            }
            let pc = self.pc;
            match self.program[pc].instr.clone() {
                Instr::Select { aid } => {
                    b.close();
                    let cmd = Select::by_name(aid.as_bytes()).to_apdu();
                    b.push(pc, format!("SELECT {aid}"), &cmd, vec![OK], SentKind::Select { aid }, None);
                    self.pc += 1;
                }
                Instr::ReadCounter { sd } => {
                    let cmd = GetData::new(tsm_gp::gp::data::tags::SEQUENCE_COUNTER).to_apdu();
                    b.push(pc, "GET DATA C1 (sequence counter)".into(), &cmd, vec![OK], SentKind::ReadCounter { sd }, None);
                    self.pc += 1;
                    break;
                }
                Instr::Open { sd, keys } => {
                    b.close();
                    self.pc += 1;
                    if !self.open(provider, &mut b, pc, sd, keys, naive)? {
                        break;
                    }
                }
                instr @ (Instr::Cmd { .. } | Instr::Status { .. }) => {
                    let Some((seg, live)) = b.live.as_mut() else {
                        return Err(PlanError::InvalidOperation(format!("{instr:?} without a secure channel")));
                    };
                    let seg = *seg;
                    let built = match &instr {
                        Instr::Cmd { cmd } => self.build_cmd(provider, cmd, &b.segs[seg].sd, live)?,
                        Instr::Status { scope, .. } => {
                            let gs = self.status_command(pc, *scope)?;
                            let mut built = Built::new(gs.to_string(), gs.to_apdu());
                            // No entry matches: an answer, not an error (GPCS 2.3 §11.4.3).
                            built.accept.push(StatusWord::REFERENCED_DATA_NOT_FOUND.0);
                            built
                        }
                        _ => unreachable!("matched above"),
                    };
                    let (wire, at) = live.wrap(&built.plain).map_err(scp_err(&built.name))?;
                    b.push(pc, built.name, &wire, built.accept, SentKind::Wrapped { seg, at }, built.keys);
                    self.pc += 1;
                }
            }
        }
        b.close();
        if b.commands.is_empty() {
            return Ok(self.finish());
        }
        self.stats.round_trips += 1;
        self.stats.apdus_sent += b.commands.len() as u32;
        self.inflight = Some(InFlight { sent: b.sent, segs: b.segs });
        Ok(Next::Send(Batch { commands: b.commands }))
    }

    /// Emits the handshake of `Open`. Predicted (INITIALIZE UPDATE, EXTERNAL AUTHENTICATE and a
    /// live channel for what follows) when the counter is current: returns true. Otherwise
    /// INITIALIZE UPDATE alone: returns false, the batch ends there.
    fn open(&mut self, provider: &mut dyn KeyProvider, b: &mut Builder, pc: usize, sd: Aid, src: KeySource, naive: bool) -> Result<bool, PlanError> {
        let keys = match self.static_keys(provider, &sd, src) {
            Ok(k) => Some(k),
            // Diversified keys and no KDD yet: INITIALIZE UPDATE's answer brings it.
            Err(KeyError::KddRequired(_)) => None,
            Err(e) => return Err(e.into()),
        };
        let level = self.level();
        let channel = self.card.profile.quirks.channel_options();
        let hc = self.host_challenge(provider);
        let counter = self.current_counter(&sd).filter(|_| !naive && predictable(self.card.scp));
        let iu_name = format!("INITIALIZE UPDATE ({sd})");
        let ea_name = format!("EXTERNAL AUTHENTICATE ({sd})");
        let predicted = match (keys, counter, self.card.scp) {
            (Some(keys), Some(counter), Scp::Scp03 { .. }) => {
                let p = scp03::HostHandshake::predict(keys, &hc, counter + 1, sd.as_bytes(), level, channel).map_err(scp_err(&iu_name))?;
                let check = IuCheck::Predicted03 { state: p.snapshot() };
                Ok((p.init_update().clone(), p.external_authenticate().clone(), check, Live::S03(p.into_host())))
            }
            (Some(keys), Some(counter), Scp::Scp02 { i }) if counter <= 0xFFFF => {
                let hc: [u8; 8] = hc[..8].try_into().expect("8-byte host challenge");
                let opts = Scp02Options { i, channel, sd_aid: Some(sd.to_vec()) };
                let p = scp02::HostHandshake::predict(keys, hc, counter as u16, level, opts).map_err(scp_err(&iu_name))?;
                let check = IuCheck::Predicted02 { state: p.snapshot() };
                Ok((p.init_update().clone(), p.external_authenticate().clone(), check, Live::S02(p.into_host())))
            }
            (keys, _, _) => Err(keys),
        };
        match predicted {
            Ok((iu, ea, check, live)) => {
                b.push(pc, iu_name, &iu, vec![OK], SentKind::InitUpdate { sd, keys: src, check }, None);
                let at = live.position();
                let seg = b.open(sd, src, live);
                b.push(pc, ea_name, &ea, vec![OK], SentKind::ExternalAuthenticate { sd, seg, at }, None);
                Ok(true)
            }
            Err(keys) => {
                let kvn = keys.map_or(match src {
                    KeySource::Isd { kvn } | KeySource::Sd { kvn } => kvn,
                }, |k| k.version);
                let iu = tsm_gp::gp::InitializeUpdate::new(kvn, &hc).to_apdu();
                b.push(pc, iu_name, &iu, vec![OK], SentKind::InitUpdate { sd, keys: src, check: IuCheck::Fresh { host_challenge: hc } }, None);
                Ok(false)
            }
        }
    }

    /// The GET STATUS to send for the instruction at `pc`: the first page, or where the answers
    /// collected so far lead (next page, fallback format or scope).
    fn status_command(&self, pc: usize, scope: u8) -> Result<GetStatus, PlanError> {
        let progress = self.pager.as_ref().filter(|p| p.pc == pc);
        let legacy = progress.map_or(self.card.profile.quirks.legacy_get_status_only, |p| p.legacy);
        let mut pager = GetStatusPager::new(first_status(scope, legacy));
        let mut cmd = pager.first().clone();
        if let Some(p) = progress {
            for r in &p.responses {
                let r = ResponseApdu::from_bytes(r).map_err(|e| PlanError::BadResponse { command: "GET STATUS".into(), detail: e.to_string() })?;
                match pager.feed(&r) {
                    Ok(PagerStep::Next(c)) => cmd = c,
                    Ok(PagerStep::Done(_)) => return Err(PlanError::Misuse("GET STATUS pages already complete".into())),
                    Err(e) => return Err(PlanError::BadResponse { command: "GET STATUS".into(), detail: e.to_string() }),
                }
            }
        }
        Ok(cmd)
    }

    /// The plain command of `cmd`, in the session with `sd`.
    fn build_cmd(&self, provider: &dyn KeyProvider, cmd: &GpCmd, sd: &Aid, live: &Live) -> Result<Built, PlanError> {
        Ok(match cmd {
            GpCmd::InstallSsd => {
                let ssd = self.deploy()?.ssd.as_ref().ok_or_else(|| PlanError::InvalidOperation("no SSD in the deployment".into()))?;
                let params = install_params(&ssd.c9, ssd.nv_quota, ssd.volatile_quota);
                let privileges = program::sd_privileges(ssd.privileges);
                let i = Install::for_install(ssd.elf, ssd.module, ssd.aid, privileges, params, true);
                Built::new(format!("INSTALL [for install and make selectable] SSD {}", ssd.aid), i.to_apdu())
            }
            GpCmd::InstallForLoad => {
                let d = self.deploy()?;
                let lf = &d.load_file;
                let mut i = Install::for_load(lf.aid, d.target_sd().filter(|sd| *sd != self.card.isd_aid));
                if let InstallBody::Load { hash, params, .. } = &mut i.body {
                    hash.clone_from(&lf.hash);
                    *params = InstallParams(lf.load_params.clone());
                }
                Built::new(format!("INSTALL [for load] {}", lf.aid), i.to_apdu())
            }
            GpCmd::Load { block, last } => {
                let d = self.deploy()?;
                let max = self.card.profile.max_block;
                let data = d.load_file.load_file.chunks(max).nth(*block as usize).unwrap_or_default().to_vec();
                let n = d.load_file.load_file.len().div_ceil(max);
                let l = Load { last: *last, block: *block as u8, data, framing: tsm_gp::gp::Framing::GP_LE };
                Built::new(format!("LOAD block {}/{n}", block + 1), l.to_apdu())
            }
            GpCmd::Install { index, make_selectable } => {
                let d = self.deploy()?;
                let spec = d.install.get(*index).ok_or_else(|| PlanError::InvalidOperation(format!("no instance {index}")))?;
                let params = install_params(&spec.c9, spec.nv_quota, spec.volatile_quota);
                let i = Install::for_install(d.load_file.aid, spec.module, spec.instance, spec.privileges, params, *make_selectable);
                Built::new(format!("INSTALL [{}] {}", i.body.name(), spec.instance), i.to_apdu())
            }
            GpCmd::Extradite { app, sd } => Built::new(format!("INSTALL [for extradition] {app} to {sd}"), Install::for_extradition(*sd, *app).to_apdu()),
            GpCmd::Personalize { app } => Built::new(format!("INSTALL [for personalization] {app}"), Install::for_personalization(*app).to_apdu()),
            GpCmd::StoreData { script, block } => {
                let ps = self.deploy()?.personalization.get(*script).ok_or_else(|| PlanError::InvalidOperation(format!("no script {script}")))?;
                let blk = ps.blocks.get(*block).ok_or_else(|| PlanError::InvalidOperation(format!("no block {block}")))?;
                let name = format!("STORE DATA {} block {}/{}", ps.instance, block + 1, ps.blocks.len());
                let structure = if ps.ber_tlv { DataStructure::BerTlv } else { DataStructure::Dgi };
                let mut sd_cmd = StoreData::new(*block as u8, block + 1 == ps.blocks.len(), structure, blk.data.clone());
                if blk.encrypt {
                    sd_cmd.data = self.encrypt_perso(&blk.data, ps.ber_tlv, live).map_err(|detail| PlanError::Build { command: name.clone(), detail })?;
                    sd_cmd.encryption = EncryptionInfo::Encrypted;
                }
                Built::new(name, sd_cmd.to_apdu())
            }
            GpCmd::StoreKeys { keyset } => {
                let name = format!("STORE DATA key set {:02X}", keyset.kvn);
                let wrapped = self.wrap_keys(provider, keyset, sd, live)?;
                let load = KeyLoad {
                    attributes: KeyAttributes {
                        key_type: key_type(keyset),
                        key_length: keyset.alg.key_len() as u8,
                        version: keyset.kvn,
                        usage: None,
                        access: None,
                        purpose: None,
                        other: Vec::new(),
                        keys: KeyRole::ALL.iter().zip(&wrapped).map(|(r, w)| KeyCheck { id: r.key_id(), kcv: w.kcv.clone() }).collect(),
                    },
                    encrypted_keys: wrapped.into_iter().map(|w| w.encrypted).collect(),
                };
                let mut s = StoreData::new(0, true, DataStructure::Dgi, load.to_bytes());
                s.encryption = EncryptionInfo::Encrypted;
                Built::new(name, s.to_apdu())
            }
            GpCmd::MakeSelectable { app, privileges } => {
                let p = Privileges::from_bytes(privileges).map_err(|e| PlanError::InvalidOperation(e.to_string()))?;
                Built::new(format!("INSTALL [for make selectable] {app}"), Install::for_make_selectable(*app, p).to_apdu())
            }
            GpCmd::SetStatus { app, lock } => {
                // GPCS 2.3 §11.10.2.2: P2 b8 set locks, cleared unlocks (back to the state before).
                let s = SetStatus::application(*app, if *lock { 0x80 } else { 0x00 });
                Built::new(format!("SET STATUS {} {app}", if *lock { "lock" } else { "unlock" }), s.to_apdu())
            }
            GpCmd::Delete { aid, related, tolerate } => {
                let mut b = Built::new(format!("DELETE {aid}{}", if *related { " and related objects" } else { "" }), Delete::object(*aid, *related).to_apdu());
                b.accept.extend_from_slice(tolerate);
                b
            }
            GpCmd::PutKey { keyset, replace } => {
                let replace = if *replace == REPLACE_SESSION_KEYS { live.snapshot().key_version() } else { *replace };
                let wrapped = self.wrap_keys(provider, keyset, sd, live)?;
                let kcvs = wrapped.iter().map(|w| w.kcv.clone()).collect();
                let components = wrapped
                    .into_iter()
                    .map(|w| if keyset.alg.is_des() { PutKeyComponent::des(w.encrypted, w.kcv) } else { PutKeyComponent::aes(w.key_len, w.encrypted, w.kcv) })
                    .collect();
                let pk = PutKey::new(replace, 1, keyset.kvn, components);
                let mut b = Built::new(format!("PUT KEY {:02X} -> {:02X} ({sd})", replace, keyset.kvn), pk.to_apdu());
                b.keys = Some(ExpectedKeys { kvn: keyset.kvn, kcvs });
                b
            }
        })
    }

    /// Personalization secrets under the channel's DEK, on top of C-DEC (GPCS 2.3 §11.11.2.1,
    /// STORE DATA P1 b7..b6 = 11): in DGI form each DGI whose identifier has b16 set (EMV CPS
    /// §5.2: the others stay in clear), else the whole field. Values are padded with `80 00..`
    /// when not block aligned.
    fn encrypt_perso(&self, data: &[u8], ber_tlv: bool, live: &Live) -> Result<Vec<u8>, String> {
        let bl = if matches!(self.card.scp, Scp::Scp03 { .. }) { 16 } else { 8 };
        let enc = |v: &[u8]| -> Result<Vec<u8>, String> {
            let v = if v.len().is_multiple_of(bl) && !v.is_empty() { v.to_vec() } else { tsm_gp::crypto::pad80(v, bl) };
            live.encrypt_sensitive(&v).map_err(|e| e.to_string())
        };
        if ber_tlv {
            return enc(data);
        }
        let dgis = tsm_gp::tlv::parse_dgis(data).map_err(|e| format!("personalization data is not in DGI form: {e}"))?;
        let mut out = Vec::with_capacity(data.len() + 16);
        for mut d in dgis {
            if d.id & 0x8000 != 0 {
                d.value = enc(&d.value)?;
            }
            d.encode(&mut out);
        }
        Ok(out)
    }

    /// ENC, MAC and DEK of `keyset` wrapped for the session with `sd`.
    fn wrap_keys(&self, provider: &dyn KeyProvider, keyset: &KeysetRef, sd: &Aid, live: &Live) -> Result<Vec<WrappedKey>, PlanError> {
        let kdd = (*sd == self.card.isd_aid).then(|| self.card.kdd.clone()).flatten();
        let wrapping = match live.snapshot() {
            HostState::Scp03(s) => Wrapping::Scp03 { sd: *sd, kvn: s.key_version, kdd },
            HostState::Scp02(s) => Wrapping::Scp02 { sd: *sd, kvn: s.key_version, kdd, sequence_counter: s.sequence_counter },
        };
        KeyRole::ALL.iter().map(|r| provider.wrap_new_key(keyset, *r, &wrapping).map_err(PlanError::from)).collect()
    }

    // ---- answers ----

    pub(crate) fn on_responses(&mut self, provider: &mut dyn KeyProvider, raw: &[Vec<u8>]) -> Result<Next, PlanError> {
        if self.end.is_some() {
            return Err(PlanError::Misuse("the plan is over".into()));
        }
        let flight = self.inflight.take().ok_or_else(|| PlanError::Misuse("no batch is awaiting answers".into()))?;
        let (n, m) = (raw.len(), flight.sent.len());
        if n == 0 || n > m {
            return Err(PlanError::BadReport(format!("{n} answer(s) to a batch of {m} command(s)")));
        }
        let mut resps = Vec::with_capacity(n);
        for (k, r) in raw.iter().enumerate() {
            let resp = ResponseApdu::from_bytes(r).map_err(|e| PlanError::BadReport(format!("answer {} to {}: {e}", k + 1, flight.sent[k].name)))?;
            let accepted = flight.sent[k].accept.contains(&resp.sw.0);
            if k + 1 < n && !accepted {
                return Err(PlanError::BadReport(format!("the agent went on after {} answered {:?}", flight.sent[k].name, resp.sw)));
            }
            if k + 1 == n && n < m && accepted {
                return Err(PlanError::BadReport(format!("{n} answer(s) to a batch of {m}, but {} was answered {:?}", flight.sent[k].name, resp.sw)));
            }
            resps.push(resp);
        }
        self.stats.apdus_answered += n as u32;
        let mut hosts: Vec<Option<Live>> = flight.segs.iter().map(|_| None).collect();
        let mut last_at: Option<(usize, ChainPoint)> = None;
        for (s, resp) in flight.sent.iter().zip(&resps) {
            let accepted = s.accept.contains(&resp.sw.0);
            match &s.kind {
                SentKind::Select { aid } => {
                    if !accepted {
                        return Ok(self.fail(PlanError::card(&s.name, resp.sw)));
                    }
                    self.session = Session::Selected { sd: *aid };
                }
                SentKind::ReadCounter { sd } => {
                    if accepted {
                        match GpDataObject::parse(&resp.data).ok().and_then(|o| o.sequence_counter()) {
                            Some(c) => self.set_counter(sd, c),
                            None => return Ok(self.fail(PlanError::BadResponse { command: s.name.clone(), detail: "no sequence counter in the answer".into() })),
                        }
                    }
                    // A card without GET DATA C1: the handshake is not predicted (INITIALIZE UPDATE first).
                    self.pc = s.pc + 1;
                }
                SentKind::InitUpdate { sd, keys, check } => {
                    if !accepted {
                        return Ok(self.fail(PlanError::card(&s.name, resp.sw)));
                    }
                    if let Err(e) = self.on_init_update(provider, sd, *keys, check, resp) {
                        return Ok(self.fail(e));
                    }
                }
                SentKind::ExternalAuthenticate { sd, seg, at } => {
                    if !accepted {
                        let detail = format!("EXTERNAL AUTHENTICATE answered {:?} ({})", resp.sw, resp.sw.meaning());
                        return Ok(self.fail(PlanError::AuthFailed { sd: sd.to_string(), detail }));
                    }
                    if let HostState::Scp02(h) = &flight.segs[*seg].end {
                        // SCP02 counts a session once it is authenticated (GPCS 2.3 App. E).
                        self.set_counter(sd, u32::from(h.sequence_counter) + 1);
                    }
                    let g = &flight.segs[*seg];
                    self.session = Session::Open { sd: g.sd, keys: g.keys, host: g.end.clone() };
                    last_at = Some((*seg, at.clone()));
                }
                SentKind::Wrapped { seg, at } => {
                    let g = &flight.segs[*seg];
                    if hosts[*seg].is_none() {
                        hosts[*seg] = Some(Live::restore(self.static_keys(provider, &g.sd, g.keys)?, &g.end).map_err(scp_err("secure channel"))?);
                    }
                    let live = hosts[*seg].as_mut().expect("restored above");
                    let plain = match live.unwrap(at, resp) {
                        Ok(p) => p,
                        Err(source) => return Ok(self.fail(PlanError::SecureChannel { command: s.name.clone(), source })),
                    };
                    self.session = Session::Open { sd: g.sd, keys: g.keys, host: g.end.clone() };
                    last_at = Some((*seg, at.clone()));
                    let outcome = if accepted { self.acknowledge(s, &plain) } else { self.stopped(s, &plain) };
                    if let Err(e) = outcome {
                        return Ok(self.fail(e));
                    }
                }
            }
        }
        // The session continues after the last command the card processed.
        if let (Some((seg, at)), Session::Open { sd, keys, host }) = (last_at, self.session.clone()) {
            let mut live = match hosts[seg].take() {
                Some(l) => l,
                None => Live::restore(self.static_keys(provider, &sd, keys)?, &host).map_err(scp_err("secure channel"))?,
            };
            live.rewind(&at).map_err(scp_err("secure channel"))?;
            self.session = Session::Open { sd, keys, host: live.snapshot() };
        }
        // `pc` stands after the batch when everything ran; the handler of the answer that stopped
        // the agent has set it otherwise.
        self.next_batch(provider)
    }

    fn on_init_update(&mut self, provider: &dyn KeyProvider, sd: &Aid, src: KeySource, check: &IuCheck, resp: &ResponseApdu) -> Result<(), PlanError> {
        let name = format!("INITIALIZE UPDATE ({sd})");
        let is_isd = *sd == self.card.isd_aid;
        // Key diversification data: the first 10 bytes for SCP02 and SCP03 alike.
        if is_isd && resp.data.len() >= 10 {
            self.card.kdd = Some(resp.data[..10].to_vec());
        }
        let auth = |e: ScpError| match e {
            ScpError::BadInitUpdateResponse(ref m) if m.contains("sequence counter") => PlanError::StaleCounter { sd: sd.to_string(), detail: e.to_string() },
            ScpError::CardCryptogram { .. } | ScpError::CardChallenge { .. } | ScpError::UnknownKeyVersion { .. } => {
                PlanError::AuthFailed { sd: sd.to_string(), detail: e.to_string() }
            }
            e => PlanError::BadResponse { command: name.clone(), detail: e.to_string() },
        };
        let keys = self.static_keys(provider, sd, src)?;
        match (check, self.card.scp) {
            (IuCheck::Predicted03 { state }, _) => {
                // The counter the card reports is the truth, whatever the prediction said.
                if let Some(c) = scp03_counter(resp) {
                    self.set_counter(sd, c);
                }
                let p = scp03::PredictedSession::restore(keys, state).map_err(scp_err(&name))?;
                p.verify_init_update(resp).map_err(auth)?;
            }
            (IuCheck::Predicted02 { state }, _) => {
                if let Ok(iu) = scp02::InitUpdateResponse::parse(&resp.data) {
                    self.set_counter(sd, iu.sequence_counter.into());
                }
                let p = scp02::PredictedSession::restore(keys, state).map_err(scp_err(&name))?;
                p.verify_init_update(resp).map_err(auth)?;
            }
            (IuCheck::Fresh { host_challenge }, Scp::Scp03 { .. }) => {
                if let Some(c) = scp03_counter(resp) {
                    self.set_counter(sd, c);
                }
                let channel = self.card.profile.quirks.channel_options();
                let (hs, _) = scp03::HostHandshake::new(keys, host_challenge, channel).map_err(scp_err(&name))?;
                let a = hs.on_init_update(resp, self.level(), Expect::sd_aid(sd.as_bytes())).map_err(auth)?;
                let (ea, host) = a.pipelined();
                self.session = Session::Authenticating { sd: *sd, keys: src, ea: ea.to_bytes(), host: HostState::Scp03(host.snapshot()) };
            }
            (IuCheck::Fresh { host_challenge }, Scp::Scp02 { i }) => {
                let hc: [u8; 8] = host_challenge.as_slice().try_into().map_err(|_| PlanError::Misuse("SCP02 host challenge of another length".into()))?;
                if let Ok(iu) = scp02::InitUpdateResponse::parse(&resp.data) {
                    self.set_counter(sd, iu.sequence_counter.into());
                }
                let opts = Scp02Options { i, channel: self.card.profile.quirks.channel_options(), sd_aid: Some(sd.to_vec()) };
                let (hs, _) = scp02::HostHandshake::new(keys, hc, opts);
                let a = hs.on_init_update(resp, self.level(), None).map_err(auth)?;
                let (ea, host) = a.pipelined();
                self.session = Session::Authenticating { sd: *sd, keys: src, ea: ea.to_bytes(), host: HostState::Scp02(host.snapshot()) };
            }
        }
        Ok(())
    }

    /// A command answered with an accepted status word: check the answer, record what changed.
    fn acknowledge(&mut self, s: &Sent, plain: &ResponseApdu) -> Result<(), PlanError> {
        let instr = self.program[s.pc].instr.clone();
        match instr {
            Instr::Status { .. } => return self.status_answer(s, plain),
            Instr::Cmd { cmd } => self.apply(&cmd, s, plain)?,
            _ => {}
        }
        Ok(())
    }

    /// The answer that made the agent stop the batch.
    fn stopped(&mut self, s: &Sent, plain: &ResponseApdu) -> Result<(), PlanError> {
        let instr = self.program[s.pc].instr.clone();
        match instr {
            Instr::Status { .. } => self.status_answer(s, plain),
            Instr::Cmd { cmd: GpCmd::InstallForLoad } if ELF_EXISTS.contains(&plain.sw.0) && !self.resynced => {
                // The view said the load file is missing; the card may know better. Go on without
                // LOAD, in the same batch as GET STATUS of the load files that confirms it (if the
                // file is not there after all, the INSTALL that follows fails harmlessly and the
                // plan ends with this answer) and of the rest of the registry, which the view may
                // have wrong too. Once per plan.
                let elf = self.deploy()?.load_file.aid;
                let step = self.program[s.pc].step;
                let purpose = StatusPurpose::CheckLoadFile { elf, sw: plain.sw.0 };
                self.program.retain(|p| !matches!(p.instr, Instr::Cmd { cmd: GpCmd::Load { .. } }));
                let reads = [
                    Instr::Status { scope: StatusScope::LOAD_FILES_AND_MODULES.0, purpose },
                    Instr::Status { scope: StatusScope::ISD.0, purpose: StatusPurpose::Resync },
                    Instr::Status { scope: StatusScope::APPLICATIONS.0, purpose: StatusPurpose::Resync },
                ];
                for (k, instr) in reads.into_iter().enumerate() {
                    self.program.insert(s.pc + 1 + k, Planned { step, instr });
                }
                self.resynced = true;
                self.load_skipped = true;
                self.pc = s.pc + 1;
                Ok(())
            }
            _ => Err(PlanError::card(&s.name, plain.sw)),
        }
    }

    fn status_answer(&mut self, s: &Sent, plain: &ResponseApdu) -> Result<(), PlanError> {
        let Instr::Status { scope, purpose } = self.program[s.pc].instr.clone() else { unreachable!("called for GET STATUS") };
        let legacy = self.card.profile.quirks.legacy_get_status_only;
        let mut progress = self.pager.take().filter(|p| p.pc == s.pc).unwrap_or(PagerProgress { pc: s.pc, legacy, responses: Vec::new() });
        progress.responses.push(plain.to_bytes());
        let mut pager = GetStatusPager::new(first_status(scope, progress.legacy));
        let mut step = None;
        for r in &progress.responses {
            let r = ResponseApdu::from_bytes(r).map_err(|e| PlanError::BadResponse { command: s.name.clone(), detail: e.to_string() })?;
            step = Some(pager.feed(&r).map_err(|e| match e {
                tsm_gp::gp::GpError::CardStatus { sw, .. } => PlanError::card(&s.name, sw),
                e => PlanError::BadResponse { command: s.name.clone(), detail: e.to_string() },
            })?);
        }
        match step {
            Some(PagerStep::Next(next)) => {
                // Another page (6310) or a fallback: the same instruction again. A card that
                // refused the tagged format answers only the legacy one: later scopes start there.
                if next.format == StatusFormat::Legacy {
                    self.card.profile.quirks.legacy_get_status_only = true;
                }
                self.pager = Some(progress);
                self.pc = s.pc;
            }
            Some(PagerStep::Done(entries)) => {
                let scope = pager.command().scope;
                match purpose {
                    StatusPurpose::Resync => self.merge_registry(scope, entries),
                    StatusPurpose::CheckLoadFile { elf, sw } => {
                        let present = entries.iter().any(|e| e.aid == elf);
                        self.merge_registry(scope, entries);
                        if !present {
                            return Err(PlanError::card(&format!("INSTALL [for load] {elf}"), StatusWord(sw)));
                        }
                    }
                }
                self.pc = self.pc.max(s.pc + 1);
            }
            None => unreachable!("one answer was fed"),
        }
        Ok(())
    }

    /// Replaces the entries of `scope`'s kind in the registry view.
    fn merge_registry(&mut self, scope: StatusScope, entries: Vec<RegistryEntry>) {
        let reg = self.card.registry.get_or_insert_with(Vec::new);
        reg.retain(|e| match scope {
            StatusScope::ISD => !matches!(e.lifecycle, LifeCycle::Card(_)),
            StatusScope::APPLICATIONS => !matches!(e.lifecycle, LifeCycle::Application(_) | LifeCycle::SecurityDomain(_)),
            _ => !matches!(e.lifecycle, LifeCycle::LoadFile(_)),
        });
        reg.extend(entries);
    }

    /// Effects of a GP command the card accepted, on the registry view and the counters.
    fn apply(&mut self, cmd: &GpCmd, s: &Sent, plain: &ResponseApdu) -> Result<(), PlanError> {
        let isd = self.card.isd_aid;
        match cmd {
            GpCmd::InstallSsd => {
                let ssd = self.deploy()?.ssd.clone().expect("checked when built");
                let mut e = RegistryEntry::new(ssd.aid, LifeCycle::SecurityDomain(SdLifeCycle::SELECTABLE));
                e.privileges = Some(program::sd_privileges(ssd.privileges));
                e.elf_aid = Some(ssd.elf);
                e.associated_sd = Some(isd);
                self.upsert(e);
            }
            GpCmd::Load { block, last } => {
                let d = self.deploy()?;
                let max = self.card.profile.max_block;
                let len = d.load_file.load_file.chunks(max).nth(*block as usize).map_or(0, <[u8]>::len);
                let mut e = RegistryEntry::new(d.load_file.aid, LifeCycle::LoadFile(ElfLifeCycle::LOADED));
                e.modules.clone_from(&d.load_file.modules);
                e.associated_sd = Some(d.target_sd().unwrap_or(isd));
                self.stats.bytes_loaded += len as u64;
                if *last {
                    self.upsert(e);
                }
            }
            GpCmd::Install { index, make_selectable } => {
                let d = self.deploy()?;
                let spec = &d.install[*index];
                let lc = if *make_selectable { AppLifeCycle::SELECTABLE } else { AppLifeCycle::INSTALLED };
                let mut e = RegistryEntry::new(spec.instance, LifeCycle::Application(lc));
                e.privileges = Some(spec.privileges);
                e.elf_aid = Some(d.load_file.aid);
                e.associated_sd = Some(isd);
                self.upsert(e);
            }
            GpCmd::Extradite { app, sd } => {
                if let Some(e) = self.card.registry.as_mut().and_then(|r| r.iter_mut().find(|e| e.aid == *app)) {
                    e.associated_sd = Some(*sd);
                }
            }
            GpCmd::MakeSelectable { app, .. } => self.set_lifecycle(app, |_| AppLifeCycle::SELECTABLE.0),
            GpCmd::SetStatus { app, lock } => {
                let lock = *lock;
                self.set_lifecycle(app, |v| if lock { v | 0x80 } else { v & 0x7F });
            }
            GpCmd::Delete { aid, related, .. } => {
                if plain.sw.0 == OK || plain.sw == StatusWord::REFERENCED_DATA_NOT_FOUND {
                    let related = *related;
                    if let Some(r) = self.card.registry.as_mut() {
                        r.retain(|e| e.aid != *aid && !(related && e.elf_aid.as_ref() == Some(aid)));
                    }
                }
            }
            GpCmd::PutKey { .. } => {
                let expected = s.keys.as_ref().expect("PUT KEY carries its expected KCVs");
                let got = PutKeyResponse::parse(&plain.data).map_err(|e| PlanError::BadResponse { command: s.name.clone(), detail: e.to_string() })?;
                if got.version != expected.kvn {
                    return Err(PlanError::BadResponse { command: s.name.clone(), detail: format!("key version {:02X} in the answer, {:02X} sent", got.version, expected.kvn) });
                }
                if got.kcvs.len() != expected.kcvs.len() {
                    return Err(PlanError::BadResponse { command: s.name.clone(), detail: format!("{} KCVs in the answer, {} keys sent", got.kcvs.len(), expected.kcvs.len()) });
                }
                for (i, (g, e)) in got.kcvs.iter().zip(&expected.kcvs).enumerate() {
                    if g != e {
                        let key_id = (i + 1) as u8;
                        return Err(PlanError::KcvMismatch { command: s.name.clone(), key_id, expected: tsm_gp::hex::encode(e), received: tsm_gp::hex::encode(g) });
                    }
                }
                if let Operation::RotateKeys { sd, .. } = &self.op
                    && *sd == isd
                {
                    self.card.key_version = expected.kvn;
                }
            }
            GpCmd::InstallForLoad | GpCmd::Personalize { .. } | GpCmd::StoreData { .. } | GpCmd::StoreKeys { .. } => {}
        }
        Ok(())
    }

    fn upsert(&mut self, e: RegistryEntry) {
        if let Some(r) = self.card.registry.as_mut() {
            r.retain(|x| x.aid != e.aid);
            r.push(e);
        }
    }

    fn set_lifecycle(&mut self, app: &Aid, f: impl Fn(u8) -> u8) {
        if let Some(e) = self.card.registry.as_mut().and_then(|r| r.iter_mut().find(|e| e.aid == *app)) {
            e.lifecycle = match e.lifecycle {
                LifeCycle::Application(v) => LifeCycle::Application(AppLifeCycle(f(v.0))),
                LifeCycle::SecurityDomain(v) => LifeCycle::SecurityDomain(SdLifeCycle(f(v.0))),
                other => other,
            };
        }
    }

    fn fail(&mut self, e: PlanError) -> Next {
        self.end = Some(End::Failed(e.to_record()));
        Next::Failed(e)
    }

    fn finish(&mut self) -> Next {
        self.pc = self.program.len();
        let o = Outcome {
            operation: self.op.name().to_string(),
            card: self.card.clone(),
            load_skipped: self.load_skipped,
            resynced: self.resynced,
            round_trips: self.stats.round_trips,
            apdus: self.stats.apdus_sent,
        };
        self.end = Some(End::Done(Box::new(o.clone())));
        Next::Done(o)
    }
}

/// The first GET STATUS of a scope, in the tagged or the legacy format.
fn first_status(scope: u8, legacy: bool) -> GetStatus {
    let gs = GetStatus::new(StatusScope(scope));
    if legacy { gs.legacy() } else { gs }
}

/// The sequence counter in an SCP03 INITIALIZE UPDATE answer (its last 3 bytes when present).
fn scp03_counter(resp: &ResponseApdu) -> Option<u32> {
    let d = &resp.data;
    matches!(d.len(), 32 | 48).then(|| u32::from_be_bytes([0, d[d.len() - 3], d[d.len() - 2], d[d.len() - 1]]))
}

fn key_type(k: &KeysetRef) -> u8 {
    if k.alg.is_des() { KEY_TYPE_DES } else { KEY_TYPE_AES }
}

/// `C9` (always present, GPCS 2.3 §11.5.2.3) and the memory quotas in `EF`.
fn install_params(c9: &[u8], nv: Option<u32>, volatile: Option<u32>) -> InstallParams {
    let params = InstallParams::application_specific(c9);
    if nv.is_none() && volatile.is_none() {
        return params;
    }
    let mut sys = SystemParams::new();
    if let Some(v) = volatile {
        sys = sys.volatile_quota(v);
    }
    if let Some(n) = nv {
        sys = sys.nv_quota(n);
    }
    params.with_system(&sys)
}

mod hex_list {
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(v: &[Vec<u8>], s: S) -> Result<S::Ok, S::Error> {
        s.collect_seq(v.iter().map(|b| tsm_gp::hex::encode(b)))
    }
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<Vec<u8>>, D::Error> {
        Vec::<String>::deserialize(d)?.iter().map(|s| tsm_gp::hex::decode(s).map_err(serde::de::Error::custom)).collect()
    }
}
