//! What the engine keeps in `processes.planner_state`: its own bookkeeping around the
//! planner's state, which is stored **without** the load file bytes and the personalization
//! blocks (references and digests instead, see [`strip_plan`] and [`Inputs`]).

use crate::domain::{FlavorId, LoadFileId, PersoScriptId, ProviderId, ServiceInstanceState, ServiceVersionId, StepState};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use tsm_gp::gp::Aid;

/// Format of [`ProcState`].
pub const ENGINE_STATE_VERSION: u32 = 1;

/// One planner run within a process. A process is a list of phases: a resynchronization when
/// the TSM's view of the card cannot be trusted, then the operation's own plans (one per
/// instance for suspend, resume and terminate).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum Phase {
    Resync,
    /// Deploys the instance's version and flavor, or `target` (an update).
    Deploy {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        target: Option<Target>,
    },
    Suspend {
        instance: Aid,
    },
    Resume {
        instance: Aid,
    },
    Terminate {
        instance: Aid,
        #[serde(default)]
        elf: Option<Aid>,
    },
}

impl Phase {
    pub fn name(&self) -> &'static str {
        match self {
            Phase::Resync => "resync",
            Phase::Deploy { .. } => "deploy",
            Phase::Suspend { .. } => "suspend",
            Phase::Resume { .. } => "resume",
            Phase::Terminate { .. } => "terminate",
        }
    }
}

/// The version and flavor an update moves an instance to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Target {
    pub version: ServiceVersionId,
    pub flavor: FlavorId,
}

/// The personalization of one instance, by reference: the scripts (in order) and a digest of
/// their blocks *as stored* (sealed where sensitive), so that a changed script is noticed
/// without keeping anything secret here.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PersoRef {
    pub instance: Aid,
    pub scripts: Vec<PersoScriptId>,
    pub digest: String,
}

/// What a stripped deploy plan needs to be whole again.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Inputs {
    pub provider_id: ProviderId,
    pub load_file_id: LoadFileId,
    /// SHA-256 of the `C4` load file the plan was made with.
    pub load_file_sha256: String,
    pub perso: Vec<PersoRef>,
}

/// One step as the engine records it (the planner's steps of every phase, in order).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct StepRec {
    pub name: String,
    pub state: StepState,
    #[serde(default)]
    pub started_at: Option<i64>,
    #[serde(default)]
    pub finished_at: Option<i64>,
}

/// The engine's state of one process (JSON in `processes.planner_state`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ProcState {
    pub engine: u32,
    pub phases: Vec<Phase>,
    /// The phase being run (`phases.len()` when all are done).
    pub phase: usize,
    /// The planner's state of the current phase, stripped ([`strip_plan`]).
    #[serde(default)]
    pub plan: Option<Value>,
    #[serde(default)]
    pub inputs: Option<Inputs>,
    /// The instance's state when the process started (restored when it fails before the card
    /// changed).
    #[serde(default)]
    pub state_before: Option<ServiceInstanceState>,
    /// A command that changes the card may have run.
    #[serde(default)]
    pub touched: bool,
    /// SERAM exchanges that carried APDUs of this process, and APDUs answered.
    #[serde(default)]
    pub round_trips: u32,
    #[serde(default)]
    pub apdus: u32,
    /// Restarts after the agent went on past a stop (or a lost exchange), to bound them.
    #[serde(default)]
    pub restarts: u32,
    #[serde(default)]
    pub steps: Vec<StepRec>,
    /// Index in `steps` of the current phase's first step.
    #[serde(default)]
    pub step_base: usize,
    /// What happened that a reader of the process should know (load skipped, resynced, ...).
    #[serde(default)]
    pub notes: Vec<String>,
    /// The provider API's request (update), kept as given.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request: Option<Value>,
}

impl ProcState {
    pub fn new(phases: Vec<Phase>, state_before: Option<ServiceInstanceState>) -> ProcState {
        ProcState {
            engine: ENGINE_STATE_VERSION,
            phases,
            phase: 0,
            plan: None,
            inputs: None,
            state_before,
            touched: false,
            round_trips: 0,
            apdus: 0,
            restarts: 0,
            steps: Vec::new(),
            step_base: 0,
            notes: Vec::new(),
            request: None,
        }
    }

    /// The engine's state of a process row, if the engine wrote it.
    pub fn from_row(v: Option<&Value>) -> Option<ProcState> {
        let v = v?;
        if v.get("engine").and_then(Value::as_u64) != Some(u64::from(ENGINE_STATE_VERSION)) {
            return None;
        }
        serde_json::from_value(v.clone()).ok()
    }

    pub fn current(&self) -> Option<&Phase> {
        self.phases.get(self.phase)
    }
}

/// Removes the load file bytes and the personalization blocks from a serialized plan state
/// (`PlanState`): they are found again through [`Inputs`] when the plan resumes. What remains
/// holds no secret (the planner keeps no key material).
pub fn strip_plan(mut v: Value) -> Value {
    if let Some(op) = v.get_mut("op").filter(|op| op.get("kind").and_then(Value::as_str) == Some("deploy")) {
        if let Some(lf) = op.get_mut("load_file").and_then(Value::as_object_mut) {
            lf.insert("load_file".into(), Value::String(String::new()));
        }
        if let Some(scripts) = op.get_mut("personalization").and_then(Value::as_array_mut) {
            for s in scripts {
                if let Some(blocks) = s.get_mut("blocks").and_then(Value::as_array_mut) {
                    for b in blocks {
                        if let Some(o) = b.as_object_mut() {
                            o.insert("data".into(), Value::String(String::new()));
                        }
                    }
                }
            }
        }
    }
    v
}

/// Puts the load file and the personalization blocks back into a stripped plan state.
/// `perso[i]` are the blocks of the plan's personalization script `i`, in order.
pub fn rehydrate_plan(mut v: Value, load_file: &[u8], perso: &[Vec<crate::domain::PersoBlock>]) -> Result<Value, String> {
    let Some(op) = v.get_mut("op").filter(|op| op.get("kind").and_then(Value::as_str) == Some("deploy")) else {
        return Ok(v);
    };
    let lf = op.get_mut("load_file").and_then(Value::as_object_mut).ok_or("plan state without a load file")?;
    lf.insert("load_file".into(), Value::String(tsm_gp::hex::encode(load_file)));
    let scripts = op.get_mut("personalization").and_then(Value::as_array_mut);
    let n = scripts.as_ref().map_or(0, |s| s.len());
    if n != perso.len() {
        return Err(format!("the plan has {n} personalization script(s), {} were found", perso.len()));
    }
    if let Some(scripts) = scripts {
        for (s, blocks) in scripts.iter_mut().zip(perso) {
            let stored = s.get_mut("blocks").and_then(Value::as_array_mut).ok_or("personalization script without blocks")?;
            if stored.len() != blocks.len() {
                return Err(format!("the plan has {} personalization block(s), {} were found", stored.len(), blocks.len()));
            }
            for (b, blk) in stored.iter_mut().zip(blocks) {
                let o = b.as_object_mut().ok_or("personalization block is not an object")?;
                o.insert("data".into(), Value::String(tsm_gp::hex::encode(&blk.data)));
                o.insert("encrypt".into(), Value::Bool(blk.encrypt));
            }
        }
    }
    Ok(v)
}
