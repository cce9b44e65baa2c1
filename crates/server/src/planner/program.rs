//! From an operation to a program: the GP steps in order, each a few instructions. An
//! instruction becomes one command APDU (or two: a predicted handshake) when a batch is built;
//! the program itself holds no wire bytes, so it stays small and independent of the session
//! it runs in.

use super::error::PlanError;
use super::model::{CardView, KeysetRef, Operation, PlanOptions};
use serde::{Deserialize, Serialize};
use tsm_gp::gp::{Aid, LifeCycle, Privileges};
use tsm_gp::scp::Scp;

/// Whose static keys open a channel.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "of", rename_all = "snake_case")]
pub(crate) enum KeySource {
    /// The ISD's key set `kvn` (0: the card's default), through `KeyProvider::isd_keys`.
    Isd { kvn: u8 },
    /// A supplementary security domain's key set, through `KeyProvider::sd_keys`.
    Sd { kvn: u8 },
}

/// What a GET STATUS is for.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "for", rename_all = "snake_case")]
pub(crate) enum StatusPurpose {
    /// Refresh the registry view.
    Resync,
    /// INSTALL [for load] was refused with `sw`, as it is when the load file is already there:
    /// read the load files and skip LOAD if it is, else fail with `sw`.
    CheckLoadFile { elf: Aid, sw: u16 },
}

/// A GP command under the secure channel.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "cmd", rename_all = "snake_case")]
pub(crate) enum GpCmd {
    InstallSsd,
    InstallForLoad,
    /// LOAD block `block` of the deployment's load file.
    Load { block: u16, last: bool },
    /// INSTALL [for install] of the deployment's instance `index`.
    Install { index: usize, make_selectable: bool },
    /// INSTALL [for extradition]: `app` moves under security domain `sd`.
    Extradite { app: Aid, sd: Aid },
    Personalize { app: Aid },
    /// STORE DATA block `block` of personalization script `script`.
    StoreData { script: usize, block: usize },
    /// STORE DATA of a key set (DGIs 00B9, 8113) into the personalized SD.
    StoreKeys { keyset: KeysetRef },
    MakeSelectable { app: Aid, privileges: Vec<u8> },
    SetStatus { app: Aid, lock: bool },
    /// DELETE; `tolerate` lists status words that mean "nothing to do" (already gone, still used).
    Delete { aid: Aid, related: bool, tolerate: Vec<u16> },
    /// PUT KEY: `keyset` replaces key set `replace` (0: adds it).
    PutKey { keyset: KeysetRef, replace: u8 },
}

/// One instruction of a program.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "instr", rename_all = "snake_case")]
pub(crate) enum Instr {
    /// SELECT by AID, in clear; closes any secure channel on the basic channel.
    Select { aid: Aid },
    /// GET DATA `C1` in clear: the selected SD's sequence counter. The next instruction waits
    /// for its answer.
    ReadCounter { sd: Aid },
    /// INITIALIZE UPDATE and EXTERNAL AUTHENTICATE with the selected SD: predicted (one batch
    /// with what follows) when its counter is known to be current, else INITIALIZE UPDATE alone
    /// and EXTERNAL AUTHENTICATE with what follows in the next batch.
    Open { sd: Aid, keys: KeySource },
    Cmd { cmd: GpCmd },
    /// GET STATUS of one scope (P1), all pages.
    Status { scope: u8, purpose: StatusPurpose },
}

/// An instruction and the step it belongs to.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Planned {
    pub step: usize,
    #[serde(flatten)]
    pub instr: Instr,
}

/// The steps (for progress) and the instructions.
#[derive(Debug, Default)]
pub(crate) struct Program {
    pub steps: Vec<String>,
    pub instrs: Vec<Planned>,
}

impl Program {
    fn step(&mut self, name: impl Into<String>) -> usize {
        self.steps.push(name.into());
        self.steps.len() - 1
    }
    fn push(&mut self, step: usize, instr: Instr) {
        self.instrs.push(Planned { step, instr });
    }
    fn cmd(&mut self, step: usize, cmd: GpCmd) {
        self.push(step, Instr::Cmd { cmd });
    }
    /// SELECT `sd` and open a channel with it; with `read_counter`, read its counter first and
    /// select it again, so that the predicted session's batch does not depend on what the
    /// card kept selected between round trips.
    fn select_and_open(&mut self, step: usize, sd: Aid, read_counter: bool, keys: KeySource) {
        self.push(step, Instr::Select { aid: sd });
        if read_counter {
            self.push(step, Instr::ReadCounter { sd });
            self.push(step, Instr::Select { aid: sd });
        }
        self.push(step, Instr::Open { sd, keys });
    }
}

/// Whether the card's challenge can be computed from its sequence counter, so that a whole
/// session can be sent before the card answers: SCP03 i bit `10`; SCP02 explicit initiation
/// (b3) with a pseudo-random challenge (b7).
pub(crate) fn predictable(scp: Scp) -> bool {
    match scp {
        Scp::Scp03 { i } => i & 0x10 != 0,
        Scp::Scp02 { i } => i & 0x04 != 0 && i & 0x40 != 0,
    }
}

/// Statuses a DELETE may answer when there is nothing to delete.
const NOT_FOUND: u16 = 0x6A88;
/// What cards answer to a DELETE of a load file that instances still use.
const IN_USE: u16 = 0x6985;

/// Builds the program of `op` on `card`.
pub(crate) fn build(card: &CardView, op: &Operation, opts: &PlanOptions) -> Result<Program, PlanError> {
    if let Scp::Scp02 { i } = card.scp
        && i & 0x04 == 0
    {
        return Err(PlanError::InvalidOperation(format!("SCP02 i={i:02X} uses implicit initiation, which the planner does not run")));
    }
    let mut p = Program::default();
    let isd = card.isd_aid;
    let open_isd = |p: &mut Program, kvn: u8| {
        let s = p.step(format!("open a secure channel with the ISD {isd}"));
        let read = predictable(card.scp) && !opts.one_apdu_per_round_trip && !(card.counter_is_current && card.sequence_counter.is_some());
        p.select_and_open(s, isd, read, KeySource::Isd { kvn });
    };
    match op {
        Operation::Deploy(d) => {
            if let (Some(ssd), Some(sd)) = (&d.ssd, d.sd)
                && ssd.aid != sd
            {
                return Err(PlanError::InvalidOperation(format!("the deployment creates {} but names {sd} as its security domain", ssd.aid)));
            }
            open_isd(&mut p, card.key_version);
            if let Some(ssd) = &d.ssd {
                let s = p.step(format!("create the security domain {}", ssd.aid));
                p.cmd(s, GpCmd::InstallSsd);
                match &ssd.initial_keys {
                    // The card's own initial key set: nothing to provision.
                    Some(k) if k.kvn == INITIAL_KEY_VERSION => {}
                    initial => {
                        p.cmd(s, GpCmd::Personalize { app: ssd.aid });
                        p.cmd(s, GpCmd::StoreKeys { keyset: initial.clone().unwrap_or_else(|| ssd.keys.clone()) });
                    }
                }
            }
            let present = card.find(&d.load_file.aid).is_some_and(|e| matches!(e.lifecycle, LifeCycle::LoadFile(_)));
            if !present {
                let s = p.step(format!("load {}", d.load_file.aid));
                p.cmd(s, GpCmd::InstallForLoad);
                let n = load_blocks(d.load_file.load_file.len(), card.profile.max_block)?;
                for b in 0..n {
                    p.cmd(s, GpCmd::Load { block: b as u16, last: b + 1 == n });
                }
            }
            let perso: Vec<Aid> = d.personalization.iter().map(|s| s.instance).collect();
            for (index, spec) in d.install.iter().enumerate() {
                if !d.load_file.modules.is_empty() && !d.load_file.modules.contains(&spec.module) {
                    return Err(PlanError::InvalidOperation(format!("module {} is not in load file {}", spec.module, d.load_file.aid)));
                }
                let s = p.step(format!("install {}", spec.instance));
                p.cmd(s, GpCmd::Install { index, make_selectable: d.make_selectable && !perso.contains(&spec.instance) });
                if let Some(sd) = d.target_sd().filter(|sd| *sd != isd) {
                    p.cmd(s, GpCmd::Extradite { app: spec.instance, sd });
                }
            }
            for (script, ps) in d.personalization.iter().enumerate() {
                if !d.install.iter().any(|i| i.instance == ps.instance) {
                    return Err(PlanError::InvalidOperation(format!("personalization of {}, which the deployment does not install", ps.instance)));
                }
                if ps.blocks.len() > 256 {
                    return Err(PlanError::InvalidOperation(format!("{} STORE DATA blocks for {}; P2 numbers 256", ps.blocks.len(), ps.instance)));
                }
                let s = p.step(format!("personalize {}", ps.instance));
                p.cmd(s, GpCmd::Personalize { app: ps.instance });
                for block in 0..ps.blocks.len() {
                    p.cmd(s, GpCmd::StoreData { script, block });
                }
            }
            if d.make_selectable {
                for spec in d.install.iter().filter(|i| perso.contains(&i.instance)) {
                    let s = p.step(format!("make {} selectable", spec.instance));
                    p.cmd(s, GpCmd::MakeSelectable { app: spec.instance, privileges: spec.privileges.to_bytes() });
                }
            }
            if let Some(ssd) = &d.ssd
                && let Some(initial) = &ssd.initial_keys
            {
                let s = p.step(format!("replace the initial keys of {}", ssd.aid));
                let read = predictable(card.scp) && !opts.one_apdu_per_round_trip && opts.new_sd_sequence_counter.is_none();
                p.select_and_open(s, ssd.aid, read, KeySource::Sd { kvn: initial.kvn });
                // An initial key set (FF) is replaced by adding one (GPCS 2.3 §11.8.2.2; P1 has 7 bits).
                let replace = if initial.kvn == INITIAL_KEY_VERSION { 0 } else { initial.kvn };
                p.cmd(s, GpCmd::PutKey { keyset: ssd.keys.clone(), replace });
            }
        }
        Operation::Suspend { instance } | Operation::Resume { instance } => {
            let lock = matches!(op, Operation::Suspend { .. });
            open_isd(&mut p, card.key_version);
            let s = p.step(format!("{} {instance}", if lock { "lock" } else { "unlock" }));
            p.cmd(s, GpCmd::SetStatus { app: *instance, lock });
        }
        Operation::Terminate { instance, elf, delete_ssd } => {
            let ssd = if *delete_ssd {
                let e = card.find(instance).ok_or_else(|| {
                    PlanError::InvalidOperation(format!("the SSD of {instance} is not known: the registry view does not list {instance}"))
                })?;
                Some(e.associated_sd.ok_or_else(|| PlanError::InvalidOperation(format!("the registry lists no security domain for {instance}")))?)
            } else {
                None
            };
            if ssd == Some(isd) {
                return Err(PlanError::InvalidOperation(format!("{instance} is associated with the ISD, which cannot be deleted")));
            }
            open_isd(&mut p, card.key_version);
            let s = p.step(format!("delete {instance}"));
            p.cmd(s, GpCmd::Delete { aid: *instance, related: false, tolerate: vec![NOT_FOUND] });
            if let Some(elf) = elf {
                // Other instances of the load file keep it (the card answers 6985 then).
                let used = card.registry.as_ref().is_some_and(|r| r.iter().any(|e| e.elf_aid.as_ref() == Some(elf) && &e.aid != instance));
                if !used {
                    let s = p.step(format!("delete the load file {elf}"));
                    p.cmd(s, GpCmd::Delete { aid: *elf, related: false, tolerate: vec![NOT_FOUND, IN_USE] });
                }
            }
            if let Some(sd) = ssd {
                let s = p.step(format!("delete the security domain {sd}"));
                p.cmd(s, GpCmd::Delete { aid: sd, related: false, tolerate: vec![NOT_FOUND] });
            }
        }
        Operation::Resync => {
            open_isd(&mut p, card.key_version);
            let s = p.step("read the registry");
            for scope in [0x80, 0x40, 0x10] {
                p.push(s, Instr::Status { scope, purpose: StatusPurpose::Resync });
            }
        }
        Operation::RotateKeys { sd, kvn, new_keys, replace } => {
            if *sd == isd {
                open_isd(&mut p, if *kvn == 0 { card.key_version } else { *kvn });
            } else {
                let s = p.step(format!("open a secure channel with {sd}"));
                let read = predictable(card.scp) && !opts.one_apdu_per_round_trip;
                p.select_and_open(s, *sd, read, KeySource::Sd { kvn: *kvn });
            }
            let s = p.step(format!("put key set {:02X} into {sd}", new_keys.kvn));
            let replace = match (*replace, *kvn) {
                (false, _) => 0,
                (true, 0) => REPLACE_SESSION_KEYS,
                (true, v) => v,
            };
            p.cmd(s, GpCmd::PutKey { keyset: new_keys.clone(), replace });
        }
    }
    Ok(p)
}

/// Key version of an initial ("factory") key set (GPCS 2.3 §11.8.2.2).
pub(crate) const INITIAL_KEY_VERSION: u8 = 0xFF;

/// `GpCmd::PutKey::replace` value meaning "the key set the session was opened with".
pub(crate) const REPLACE_SESSION_KEYS: u8 = 0xFF;

/// How many LOAD blocks a load file of `len` bytes takes with blocks of `max_block` bytes.
pub(crate) fn load_blocks(len: usize, max_block: usize) -> Result<usize, PlanError> {
    if len == 0 || max_block == 0 {
        return Err(PlanError::InvalidOperation("empty load file or block size 0".into()));
    }
    let n = len.div_ceil(max_block);
    if n > 256 {
        return Err(PlanError::InvalidOperation(format!("{len} bytes need {n} LOAD blocks of {max_block}; P2 numbers 256")));
    }
    Ok(n)
}

/// The privileges of an SSD: the Security Domain privilege is implied.
pub(crate) fn sd_privileges(p: Privileges) -> Privileges {
    p.with(tsm_gp::gp::Privilege::SecurityDomain)
}
