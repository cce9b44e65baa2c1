//! The process engine: runs the processes queued for an SE, one after the other, as the SERAM
//! session of that SE (`api::seram`) hands it the phone's reports. Nothing here lives only in
//! memory: every decision reads the database and is written back in **one transaction**
//! together with the SERAM session row ([`crate::store_engine_queries`]), so any node can take
//! any request of any session and a node may die at any point.
//!
//! # Algorithm
//!
//! 1. **Lease.** A session works on its SE only while it holds the SE's lease
//!    (`se_leases`, holder `seram:<sessionId>`, TTL `seram.lease_ttl_seconds`, renewed with
//!    every report). Another session of the same SE waits (long polls) until it is free.
//! 2. **Pick.** The oldest unfinished process of the SE (RUNNING before QUEUED). A QUEUED one
//!    becomes RUNNING in this session. A RUNNING one whose session is gone (its lease expired)
//!    is *taken over*: its last exchange may or may not have reached the card, so the TSM's
//!    view of the card is marked stale and the process starts again with a resynchronization.
//! 3. **Phases.** A process is a list of planner runs ([`state::Phase`]): a resynchronization
//!    (GET STATUS of every scope) first when the registry is unknown or the sequence counter
//!    not current, then the operation (one plan per instance for suspend, resume, terminate;
//!    terminate then deploy for an update).
//!    Before an operation's plan the engine reconciles it with the registry: what is already
//!    done on the card is skipped, a half-done deployment fails (`engine.partially_applied`).
//! 4. **Batches.** The planner's batch goes out in segments ([`segments`]): SERAM agents do not
//!    stop at an unexpected status word, so an order ends after any command whose refusal lets
//!    the plan continue differently. Each report's answers are checked
//!    ([`segments::fit`]), logged, and — once the batch is complete or stopped — fed to the
//!    planner. The agent going on after a refusal ("ran on") makes the view stale; if the plan
//!    wanted to continue, it restarts with a resynchronization (at most three restarts).
//! 5. **Commit.** After every report: process row (version-checked), steps, APDU log (wire),
//!    progress, round trips, the instance's state, the SE's counter/KDD/registry, SSD rows,
//!    audit records, the callback when the process ends, and the session row — one
//!    transaction. A version conflict means another node got there first: the caller reloads
//!    and re-decides (the report is then a repeat).
//!
//! # What the process row keeps
//!
//! `planner_state` is the engine's [`state::ProcState`]: phases, steps, counters, and the
//! planner's state **stripped** of the load file and the personalization blocks, which are
//! found again through [`state::Inputs`] (ids and digests) when the plan resumes. Sensitive
//! blocks are sealed in `personalization_scripts` and opened only while a batch is built; the
//! planner keeps no key material. So no personalization secret and no key appears in clear in
//! any table (the test `engine_secrets` checks every table).
//!
//! # Crashes
//!
//! - Before the commit of a report: nothing changed; the phone sends the report again (to any
//!   node) and it is applied then.
//! - After the commit, before the answer reached the phone: the repeated report is recognized
//!   (hash of the last accepted report) and gets the stored order again.
//! - A session that disappears: its lease expires; the process stays RUNNING and the next
//!   session of the SE takes it over (resynchronizing first).

mod inputs;
mod keys;
pub mod segments;
pub mod state;

pub use keys::EngineKeys;
pub use state::{Phase, ProcState};

use crate::app::AppState;
use crate::domain::*;
use crate::planner::{Batch, KeysetRef, Next, Operation as PlanOp, PlanError, PlanOptions, PlanState, Planner};
use crate::seram_types::LocalAgentStatusEnum;
use crate::store::StoreError;
use crate::store::log::NewAuditEntry;
use crate::store_engine_queries::{EngineCommit, ProcessWrite};
use serde::{Deserialize, Serialize};
use std::ops::ControlFlow;
use std::time::Duration;
use tsm_gp::gp::{Aid, LifeCycle};

/// Engine errors (the request failed; nothing was written). A process that fails is not an
/// error: it is recorded in the process (`engine.*` and `planner.*` codes).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum EngineError {
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The report cannot be an answer to the outstanding order.
    #[error("{0}")]
    BadReport(String),
    /// The key store failed (the same report can be sent again).
    #[error("key store: {0}")]
    Keys(String),
    #[error("engine: {0}")]
    Internal(String),
}

impl EngineError {
    pub fn code(&self) -> &'static str {
        match self {
            EngineError::Store(StoreError::VersionConflict { .. }) => "engine.conflict",
            EngineError::Store(_) => "engine.store",
            EngineError::BadReport(_) => "seram.bad_report",
            EngineError::Keys(_) => "engine.keys",
            EngineError::Internal(_) => "engine.internal",
        }
    }
    pub fn is_conflict(&self) -> bool {
        matches!(self, EngineError::Store(StoreError::VersionConflict { .. }))
    }
}

/// Why a process cannot go on: it fails with this code (or the engine itself failed).
pub(crate) enum Fail {
    Process { code: &'static str, message: String },
    Engine(EngineError),
}

impl Fail {
    pub(crate) fn new(code: &'static str, message: impl Into<String>) -> Fail {
        Fail::Process { code, message: message.into() }
    }
}

impl From<StoreError> for Fail {
    fn from(e: StoreError) -> Self {
        Fail::Engine(EngineError::Store(e))
    }
}

impl From<EngineError> for Fail {
    fn from(e: EngineError) -> Self {
        Fail::Engine(e)
    }
}

/// A segment of a planner batch handed to a session (kept in the session row until answered).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Pending {
    pub process_id: ProcessId,
    /// The process row's version once this segment was committed: the answer applies to it only.
    pub process_version: i64,
    /// The whole batch as the planner made it (wire C-APDUs and their `accept` lists).
    pub batch: Batch,
    /// This order carries `batch.commands[from..to]`.
    pub from: usize,
    pub to: usize,
    /// Answers to `batch.commands[..from]` (earlier segments).
    #[serde(with = "hex_list")]
    pub answers: Vec<Vec<u8>>,
}

impl Pending {
    /// The C-APDUs of this order.
    pub fn capdus(&self) -> impl Iterator<Item = &[u8]> {
        self.batch.commands[self.from..self.to].iter().map(|c| c.apdu.as_slice())
    }
}

/// What the session does next.
#[derive(Debug, Clone, PartialEq)]
pub enum SessionNext {
    /// Send this segment.
    Send(Pending),
    /// Nothing queued for the SE.
    Idle,
    /// Work is queued but another session holds the SE.
    Blocked,
    /// End the session (the agent failed, or the session lost its SE).
    Stop(String),
}

/// An engine decision: the writes (the caller adds the session row and commits) and what the
/// session does next.
#[derive(Debug)]
pub struct Decision {
    pub commit: EngineCommit,
    pub next: SessionNext,
    /// Notifications for the device application (process results).
    pub notifications: Vec<String>,
    /// The process the session now works on.
    pub process: Option<ProcessId>,
}

/// The lease holder name of a SERAM session.
pub fn holder(sid: SeramSessionId) -> String {
    format!("seram:{sid}")
}

/// Everything one decision reads and changes.
struct Ctx {
    sid: SeramSessionId,
    se: SecureElement,
    se_dirty: bool,
    sds: Vec<SecurityDomain>,
    sds_dirty: Vec<SecurityDomainId>,
    writes: Vec<ProcessWrite>,
    notifications: Vec<String>,
    audit: Vec<NewAuditEntry>,
    keys: Option<EngineKeys>,
}

/// One process being decided on.
struct Run {
    p: Process,
    ps: ProcState,
    instance: Option<ServiceInstance>,
    /// The instance's state as it will be written.
    instance_state: Option<ServiceInstanceState>,
    planner: Option<Planner>,
    /// The step of each command of the batch being answered (from the plan state), and the
    /// step of the command the card refused, when a plan fails on an answer.
    answered_steps: Vec<Option<usize>>,
    failed_step: Option<usize>,
    w: ProcessWrite,
}

/// How the steps of the current phase stand after a planner call.
#[derive(Clone, Copy, PartialEq, Eq)]
enum StepMode {
    /// A batch went out: its steps are running, earlier ones completed.
    Sent,
    /// The phase completed.
    Done,
    /// The plan failed on an answer.
    Failed,
}

/// The step of each command of a plan's outstanding batch (`PlanState` records the instruction
/// of each command sent, and the step of each instruction).
fn batch_steps(plan: &serde_json::Value) -> Vec<Option<usize>> {
    let program = plan.get("program").and_then(|p| p.as_array());
    plan.pointer("/inflight/sent")
        .and_then(|s| s.as_array())
        .map(|sent| {
            sent.iter()
                .map(|c| {
                    let pc = c.get("pc")?.as_u64()? as usize;
                    Some(program?.get(pc)?.get("step")?.as_u64()? as usize)
                })
                .collect()
        })
        .unwrap_or_default()
}

/// The engine over one node's state.
#[derive(Clone)]
pub struct Engine {
    st: AppState,
}

const MAX_RESTARTS: u32 = 3;

impl Engine {
    pub fn new(st: &AppState) -> Engine {
        Engine { st: st.clone() }
    }

    fn lease_ttl(&self) -> Duration {
        Duration::from_secs(self.st.config.seram.lease_ttl_seconds.max(1))
    }

    fn actor(&self) -> String {
        format!("node:{}", self.st.node_id)
    }

    async fn ctx(&self, sid: SeramSessionId, se: &SeId) -> Result<Ctx, EngineError> {
        let row = self.st.store.secure_elements().get(se).await?.ok_or_else(|| EngineError::Internal(format!("secure element {se} is gone")))?;
        let sds = self.st.store.security_domains().list_for_se_unscoped(se).await?;
        Ok(Ctx { sid, se: row, se_dirty: false, sds, sds_dirty: Vec::new(), writes: Vec::new(), notifications: Vec::new(), audit: Vec::new(), keys: None })
    }

    /// Holds (takes or renews) the SE lease for session `sid`; `false` if another holds it.
    ///
    /// A lease still held by a session that is over (CLOSED or EXPIRED: a node died between
    /// committing the session's end and releasing the lease) is freed and taken at once rather
    /// than after its TTL. Such a session never works on its SE again, and the release is
    /// conditional on its holder name, so a live holder is never displaced.
    async fn hold(&self, sid: SeramSessionId, se: &SeId) -> Result<bool, EngineError> {
        if self.st.store.acquire_se_lease(se, &holder(sid), self.lease_ttl()).await?.is_some() {
            return Ok(true);
        }
        let Some(lease) = self.st.store.leases().get(se).await? else { return Ok(false) };
        let Some(other) = lease.holder.strip_prefix("seram:").and_then(|s| s.parse::<SeramSessionId>().ok()) else { return Ok(false) };
        let over = self.st.store.seram_sessions().get(other).await?.is_some_and(|s| matches!(s.state, SeramSessionState::Closed | SeramSessionState::Expired));
        if !over {
            return Ok(false);
        }
        tracing::info!(se = %se, holder = %lease.holder, "the SE's lease was left by a session that is over: taken over");
        self.st.store.release_se_lease(se, &lease.holder).await?;
        Ok(self.st.store.acquire_se_lease(se, &holder(sid), self.lease_ttl()).await?.is_some())
    }

    /// Gives the SE up (session over, or nothing to do).
    pub async fn release(&self, sid: SeramSessionId, se: &SeId) -> Result<(), EngineError> {
        self.st.store.release_se_lease(se, &holder(sid)).await?;
        Ok(())
    }

    /// The decision of `ctx`: its writes (callback URLs resolved) and what comes next.
    async fn decision(&self, ctx: Ctx, next: SessionNext) -> Result<Decision, EngineError> {
        let process = match &next {
            SessionNext::Send(p) => Some(p.process_id),
            _ => None,
        };
        let Ctx { se, se_dirty, sds, sds_dirty, mut writes, notifications, audit, .. } = ctx;
        for w in &mut writes {
            if let Some(cb) = w.callback.as_mut() {
                match self.st.store.providers().get(cb.provider_id).await?.and_then(|sp| sp.callback_url) {
                    Some(url) => cb.url = url,
                    None => w.callback = None,
                }
            }
        }
        let commit = EngineCommit {
            processes: writes,
            secure_element: se_dirty.then_some(se),
            security_domains: sds.into_iter().filter(|d| sds_dirty.contains(&d.id)).collect(),
            session: None,
            audit,
        };
        Ok(Decision { commit, next, notifications, process })
    }

    // ---- entry points -----------------------------------------------------------------------

    /// The session has nothing outstanding: find the next process of its SE and its first
    /// segment.
    pub async fn next_work(&self, sid: SeramSessionId, se: &SeId) -> Result<Decision, EngineError> {
        let mut ctx = self.ctx(sid, se).await?;
        let next = self.find_work(&mut ctx).await?;
        self.decision(ctx, next).await
    }

    /// Applies a report's R-APDUs (`answers`, of the one SE RAM command) to `pending`.
    pub async fn on_answers(&self, sid: SeramSessionId, se: &SeId, pending: &Pending, answers: &[Vec<u8>]) -> Result<Decision, EngineError> {
        let fit = segments::fit(&pending.batch, pending.from, pending.to, answers).map_err(EngineError::BadReport)?;
        let (mut ctx, mut run) = match self.resume_or_move_on(self.ctx(sid, se).await?, pending).await? {
            ControlFlow::Continue(r) => r,
            ControlFlow::Break(d) => return Ok(d),
        };
        self.log_segment(&mut run, pending, answers);
        let mut combined = pending.answers.clone();
        combined.extend_from_slice(answers);
        if fit.stop.is_none() && pending.to < pending.batch.len() {
            // The batch goes on in the next order; the planner has not seen anything yet.
            let to = segments::segment_end(&pending.batch, pending.to, view_trusted(&ctx.se));
            let next = Pending { process_id: run.p.id, process_version: run.p.version + 1, batch: pending.batch.clone(), from: pending.to, to, answers: combined };
            self.finish_run(&mut ctx, run);
            return self.decision(ctx, SessionNext::Send(next)).await;
        }
        let upto = fit.stop.map_or(combined.len(), |s| s + 1);
        combined.truncate(upto);
        run.answered_steps = run.ps.plan.as_ref().map(batch_steps).unwrap_or_default();
        // If the plan fails, it is on the refused command (or, all accepted, on the last one:
        // an answer that did not verify).
        run.failed_step = run.answered_steps.get(upto.saturating_sub(1)).copied().flatten();
        let planner = run.planner.take().ok_or_else(|| EngineError::Internal(format!("process {} has no plan to feed", run.p.id)))?;
        let keys = self.keys(&mut ctx).await?;
        let (planner, result) = blocking(move || {
            let mut planner = planner;
            let mut keys = keys;
            let r = planner.on_responses(&mut keys, &combined);
            (planner, r)
        })
        .await?;
        let next = match result {
            Ok(n) => n,
            Err(PlanError::BadReport(m)) => return Err(EngineError::BadReport(m)),
            Err(PlanError::Keys(crate::planner::KeyError::Store(m))) => return Err(EngineError::Keys(m)),
            // The planner refuses the answers for another reason: the plan ends with it.
            Err(e) => Next::Failed(e),
        };
        run.planner = Some(planner);
        let pending = if fit.ran_on {
            inputs::mark_stale(&mut ctx.se);
            ctx.se_dirty = true;
            run.ps.notes.push("the agent ran commands past a refusal: the card is read again".into());
            if matches!(next, Next::Send(_)) {
                // The plan would go on from a point the card has left behind.
                self.restart(&mut ctx, &mut run, "the agent went on past a refusal").await?
            } else {
                let p = self.on_next(&mut ctx, &mut run, next).await?;
                inputs::mark_stale(&mut ctx.se);
                p
            }
        } else {
            self.on_next(&mut ctx, &mut run, next).await?
        };
        self.conclude(ctx, run, pending).await
    }

    /// The agent reported a failure (`UNAVAILABLE_SE`, `UNKNOWN_FAILURE`, `UNGRANTED_ACCESS`)
    /// while running `pending`, with the R-APDUs it got (`partial`).
    pub async fn on_agent_error(&self, sid: SeramSessionId, se: &SeId, pending: &Pending, status: &LocalAgentStatusEnum, message: &str, partial: &[Vec<u8>]) -> Result<Decision, EngineError> {
        let mut ctx = self.ctx(sid, se).await?;
        let stop = SessionNext::Stop(format!("the local agent reported {status}"));
        let mut run = match self.resume_run(&mut ctx, pending).await? {
            Resumed::Run(r) => *r,
            Resumed::Gone | Resumed::Ended => return self.decision(ctx, stop).await,
        };
        let partial = &partial[..partial.len().min(pending.to - pending.from)];
        self.log_segment(&mut run, pending, partial);
        if !partial.is_empty() || !pending.answers.is_empty() || pending.from > 0 {
            // Part of the batch ran: the secure channel and the registry are uncertain.
            inputs::mark_stale(&mut ctx.se);
            ctx.se_dirty = true;
        }
        let detail = format!("the local agent reported {status}: {}", if message.is_empty() { "(no errorMsg)" } else { message });
        match status {
            LocalAgentStatusEnum::UnavailableSe => {
                // Transient: the process waits for the next session (which reads the card first).
                run.p.state = ProcessState::Queued;
                run.ps.plan = None;
                run.ps.inputs = None;
                run.planner = None;
                run.ps.notes.push(format!("{detail}; queued again"));
                mark_current_step(&mut run.ps, StepState::Pending);
                run.w.audit.push(self.audit(&run.p, "process_requeued", serde_json::json!({"reason": detail, "sessionId": sid})));
                self.finish_run(&mut ctx, run);
            }
            LocalAgentStatusEnum::UngrantedAccess => self.fail(&mut ctx, run, Fail::new("engine.agent_access_denied", detail)),
            _ => self.fail(&mut ctx, run, Fail::new("engine.agent_failure", detail)),
        }
        // The session stops: the caller releases the lease once this is committed.
        self.decision(ctx, stop).await
    }

    /// A new run of the session's local agent (a handshake after `pending` went out) asks for
    /// work: the previous run may have executed `pending` on the card or not, and the card's
    /// secure channel is gone either way, so sending the stored order again could fail (an
    /// EXTERNAL AUTHENTICATE without its INITIALIZE UPDATE) while the card holds what the lost
    /// run did. The segment is logged unanswered, the view of the card dropped, and the
    /// process starts again from a read of the card in this session (what the card shows is
    /// then skipped, or a half-done deployment reported).
    pub async fn on_new_agent_run(&self, sid: SeramSessionId, se: &SeId, pending: &Pending) -> Result<Decision, EngineError> {
        let (mut ctx, mut run) = match self.resume_or_move_on(self.ctx(sid, se).await?, pending).await? {
            ControlFlow::Continue(r) => r,
            ControlFlow::Break(d) => return Ok(d),
        };
        self.log_segment(&mut run, pending, &[]);
        inputs::mark_stale(&mut ctx.se);
        ctx.se_dirty = true;
        let next = self.restart(&mut ctx, &mut run, "a new run of the local agent; the previous one may have run the outstanding order").await?;
        self.conclude(ctx, run, next).await
    }

    // ---- picking and starting processes -----------------------------------------------------

    async fn find_work(&self, ctx: &mut Ctx) -> Result<SessionNext, EngineError> {
        if !self.hold(ctx.sid, &ctx.se.id).await? {
            return Ok(SessionNext::Blocked);
        }
        for p in self.st.store.unfinished_processes_for_se(&ctx.se.id).await? {
            if ctx.writes.iter().any(|w| w.process.id == p.id) {
                continue; // decided in this request already
            }
            if let Some(pend) = self.begin(ctx, p).await? {
                return Ok(SessionNext::Send(pend));
            }
            // Ended while planning (failed, or nothing to do): the next one.
        }
        self.release(ctx.sid, &ctx.se.id).await?;
        Ok(SessionNext::Idle)
    }

    /// Takes `p` into this session and plans it: its first segment, or `None` when it ended
    /// already. Either way its write is in `ctx`.
    async fn begin(&self, ctx: &mut Ctx, p: Process) -> Result<Option<Pending>, EngineError> {
        let instance = match p.service_instance_id {
            Some(i) => self.st.store.service_instances().get_unscoped(i).await?,
            None => None,
        };
        let existing = ProcState::from_row(p.planner_state.as_ref());
        let takeover = existing.is_some();
        let was_queued = p.state == ProcessState::Queued;
        let before = instance.as_ref().map(|i| i.state);
        let mut run = Run::new(p, existing.unwrap_or_else(|| ProcState::new(Vec::new(), before)), instance);
        run.p.state = ProcessState::Running;
        run.p.seram_session_id = Some(ctx.sid);
        run.p.error = None;
        run.p.started_at.get_or_insert_with(now_ms);
        if was_queued {
            run.w.audit.push(self.audit(&run.p, "process_started", serde_json::json!({"sessionId": ctx.sid, "node": &*self.st.node_id})));
        }
        if takeover {
            // The last exchange of this process may or may not have reached the card.
            inputs::mark_stale(&mut ctx.se);
            ctx.se_dirty = true;
            run.ps.restarts += 1;
            mark_current_step(&mut run.ps, StepState::Failed);
            run.ps.step_base = run.ps.steps.len();
            let at = run.ps.phase.min(run.ps.phases.len());
            run.ps.phases = run.ps.phases[at..].iter().filter(|p| **p != Phase::Resync).cloned().collect();
            run.ps.phase = 0;
            run.ps.plan = None;
            run.ps.inputs = None;
            run.ps.notes.push(format!("resumed in session {} with a fresh read of the card", ctx.sid));
            if run.ps.restarts > MAX_RESTARTS {
                self.fail(ctx, run, Fail::new("engine.restarts", "the process was interrupted too often without finishing"));
                return Ok(None);
            }
        } else {
            run.ps.request = run.p.planner_state.as_ref().and_then(|v| v.get("request").cloned());
            match self.op_phases(&run).await {
                Ok(ph) => run.ps.phases = ph,
                Err(Fail::Engine(e)) => return Err(e),
                Err(f) => {
                    self.fail(ctx, run, f);
                    return Ok(None);
                }
            }
        }
        if needs_resync(&ctx.se) && run.ps.current() != Some(&Phase::Resync) {
            let at = run.ps.phase;
            run.ps.phases.insert(at, Phase::Resync);
        }
        match self.advance_phases(ctx, &mut run).await {
            Ok(Some(mut pend)) => {
                pend.process_version = run.p.version + 1;
                self.finish_run(ctx, run);
                Ok(Some(pend))
            }
            Ok(None) => {
                self.finish_run(ctx, run);
                Ok(None)
            }
            Err(Fail::Engine(e)) => Err(e),
            Err(f @ Fail::Process { .. }) => {
                self.fail(ctx, run, f);
                Ok(None)
            }
        }
    }

    /// The planner runs of an operation: one per application for suspend, resume, terminate
    /// (the load file is deleted with the last instance); an update terminates the old
    /// flavor's applications and deploys the target.
    async fn op_phases(&self, run: &Run) -> Result<Vec<Phase>, Fail> {
        if run.p.operation == Operation::Resync {
            return Ok(vec![Phase::Resync]);
        }
        let inst = run.instance.as_ref().ok_or_else(|| Fail::new("engine.invalid_input", "the process has no service instance"))?;
        Ok(match run.p.operation {
            Operation::Deploy => vec![Phase::Deploy { target: None }],
            Operation::Suspend | Operation::Resume | Operation::Terminate => {
                let (aids, elf) = self.instance_aids(inst).await?;
                let n = aids.len();
                aids.into_iter()
                    .enumerate()
                    .map(|(k, a)| match run.p.operation {
                        Operation::Suspend => Phase::Suspend { instance: a },
                        Operation::Resume => Phase::Resume { instance: a },
                        _ => Phase::Terminate { instance: a, elf: if k + 1 == n { elf } else { None } },
                    })
                    .collect()
            }
            Operation::Update => {
                // The old flavor's applications go (with the old load file when the version
                // brings another), then the target is deployed.
                let req = run.ps.request.as_ref().and_then(|r| r.get("request").or(Some(r)));
                let id = |k: &str| req.and_then(|r| r.get(k)).and_then(|v| v.as_str()).and_then(|s| s.parse().ok());
                let (Some(version), Some(flavor)) = (id("serviceVersionId").map(ServiceVersionId), id("flavorId").map(FlavorId)) else {
                    return Err(Fail::new("engine.invalid_input", "the update names no target version and flavor"));
                };
                let new_lf = self.st.store.service_versions().get(inst.provider_id, version).await?.ok_or_else(|| Fail::new("engine.invalid_input", "the update's target version is gone"))?.load_file_id;
                let old_lf = self.st.store.service_versions().get(inst.provider_id, inst.service_version_id).await?.map(|v| v.load_file_id);
                let (aids, elf) = self.instance_aids(inst).await?;
                let n = aids.len();
                let drop_elf = old_lf != Some(new_lf);
                let mut phases: Vec<Phase> = aids.into_iter().enumerate().map(|(k, a)| Phase::Terminate { instance: a, elf: if k + 1 == n && drop_elf { elf } else { None } }).collect();
                phases.push(Phase::Deploy { target: Some(state::Target { version, flavor }) });
                phases
            }
            Operation::Resync => unreachable!("handled above"),
        })
    }

    /// The instance AIDs of a service instance (its flavor's applications, in order) and the
    /// load file AID of its version.
    async fn instance_aids(&self, inst: &ServiceInstance) -> Result<(Vec<Aid>, Option<Aid>), Fail> {
        let apps = self.st.store.application_configs().list(inst.provider_id, inst.flavor_id).await?;
        let aids = apps.iter().map(|a| Aid::new(a.instance_aid.as_bytes()).map_err(|e| Fail::new("engine.invalid_input", e.to_string()))).collect::<Result<Vec<_>, _>>()?;
        let elf = match self.st.store.service_versions().get(inst.provider_id, inst.service_version_id).await? {
            Some(v) => self.st.store.load_files().get(inst.provider_id, v.load_file_id).await?.map(|lf| Aid::new(lf.package_aid.as_bytes())).transpose().map_err(|e| Fail::new("engine.invalid_input", e.to_string()))?,
            None => None,
        };
        if aids.is_empty() {
            return Err(Fail::new("engine.invalid_input", "the instance's flavor has no application"));
        }
        Ok((aids, elf))
    }

    /// Plans phases until one has a batch to send (`Some`), or the process is complete
    /// (`None`, the run completed).
    async fn advance_phases(&self, ctx: &mut Ctx, run: &mut Run) -> Result<Option<Pending>, Fail> {
        loop {
            let Some(phase) = run.ps.current().cloned() else {
                self.complete(ctx, run);
                return Ok(None);
            };
            let view = inputs::card_view(&ctx.se, self.isd_kvn(ctx).await?)?;
            let reconciled = self.reconcile(run, &phase, &view).await;
            if matches!(reconciled, Err(Fail::Process { code: "engine.partially_applied", .. })) {
                run.ps.touched = true;
            }
            if let Some(skip) = reconciled? {
                run.ps.steps.push(state::StepRec { name: format!("{}: {skip}", phase.name()), state: StepState::Skipped, started_at: Some(now_ms()), finished_at: Some(now_ms()) });
                run.ps.step_base = run.ps.steps.len();
                run.ps.notes.push(format!("{}: {skip}", phase.name()));
                // The card shows the phase done (by an attempt whose answer was lost): the
                // instance is where the phase would have left it.
                run.instance_state = match &phase {
                    Phase::Deploy { .. } | Phase::Resume { .. } => Some(ServiceInstanceState::Operational),
                    Phase::Suspend { .. } => Some(ServiceInstanceState::Suspended),
                    Phase::Resync | Phase::Terminate { .. } => run.instance_state,
                };
                run.ps.phase += 1;
                continue;
            }
            let (op, ins) = match &phase {
                Phase::Resync => (PlanOp::Resync, None),
                Phase::Deploy { target } => {
                    let inst = targeted(run.instance.as_ref(), target).ok_or_else(|| Fail::new("engine.invalid_input", "deploy without an instance"))?;
                    let ssd = ctx.sds.iter().find(|d| d.kind == SdKind::Ssd && d.provider_id == Some(inst.provider_id)).cloned().ok_or_else(|| Fail::new("engine.no_ssd", format!("the provider has no security domain on {}", ctx.se.id)))?;
                    let ssd_aid = Aid::new(ssd.aid.as_bytes()).map_err(|e| Fail::new("engine.invalid_input", e.to_string()))?;
                    let keyset = if inputs::entry(&view, &ssd_aid).is_some() { None } else { Some(self.ssd_keyset(ctx, &ssd, &view).await?) };
                    let d = inputs::deploy(&self.st.store, &self.st.keys, &inst, &view, &ssd, keyset).await?;
                    (PlanOp::Deploy(Box::new(d.deploy)), Some(d.inputs))
                }
                Phase::Suspend { instance } => (PlanOp::Suspend { instance: *instance }, None),
                Phase::Resume { instance } => (PlanOp::Resume { instance: *instance }, None),
                Phase::Terminate { instance, elf } => (PlanOp::Terminate { instance: *instance, elf: *elf, delete_ssd: false }, None),
            };
            let options = PlanOptions { one_apdu_per_round_trip: self.st.config.planner.one_apdu_per_round_trip, ..PlanOptions::default() };
            let planner = Planner::new(view, op, options).map_err(|e| Fail::new(e.code(), e.to_string()))?;
            run.ps.inputs = ins;
            let keys = self.keys(ctx).await?;
            let (planner, result) = blocking(move || {
                let mut planner = planner;
                let mut keys = keys;
                let r = planner.start(&mut keys);
                (planner, r)
            })
            .await?;
            let next = match result {
                Ok(n) => n,
                Err(PlanError::Keys(crate::planner::KeyError::Store(m))) => return Err(Fail::Engine(EngineError::Keys(m))),
                Err(e) => Next::Failed(e),
            };
            run.planner = Some(planner);
            match self.on_next_inner(ctx, run, next).await? {
                Step::Send(p) => return Ok(Some(p)),
                Step::PhaseDone => continue,
            }
        }
    }

    /// What the card already shows for a phase: `Some(reason)` to skip it. Fails a deployment
    /// the card shows half done.
    async fn reconcile(&self, run: &Run, phase: &Phase, view: &crate::planner::CardView) -> Result<Option<String>, Fail> {
        if view.registry.is_none() {
            return Ok(None);
        }
        let app = |aid: &Aid| inputs::entry(view, aid).filter(|e| matches!(e.lifecycle, LifeCycle::Application(_)));
        match phase {
            Phase::Resync => Ok(None),
            Phase::Deploy { target } => {
                let Some(inst) = targeted(run.instance.as_ref(), target) else { return Ok(None) };
                let (aids, _) = self.instance_aids(&inst).await?;
                let present: Vec<&Aid> = aids.iter().filter(|a| app(a).is_some()).collect();
                if present.is_empty() {
                    return Ok(None);
                }
                let selectable = |a: &Aid| app(a).is_some_and(|e| e.lifecycle.value() & 0x80 == 0 && e.lifecycle.value() & 0x07 == 0x07);
                if present.len() == aids.len() && aids.iter().all(selectable) {
                    return Ok(Some("the applications are on the card already".into()));
                }
                let list: Vec<String> = present.iter().map(|a| a.to_string()).collect();
                Err(Fail::new("engine.partially_applied", format!("the card holds {} of the service's applications ({}) from an earlier attempt; terminate the instance, then deploy it again", present.len(), list.join(", "))))
            }
            Phase::Suspend { instance } => match app(instance) {
                None => Err(Fail::new("engine.instance_missing", format!("{instance} is not on the card"))),
                Some(e) if e.lifecycle.value() & 0x80 != 0 => Ok(Some(format!("{instance} is locked already"))),
                Some(_) => Ok(None),
            },
            Phase::Resume { instance } => match app(instance) {
                None => Err(Fail::new("engine.instance_missing", format!("{instance} is not on the card"))),
                Some(e) if e.lifecycle.value() & 0x80 == 0 => Ok(Some(format!("{instance} is unlocked already"))),
                Some(_) => Ok(None),
            },
            Phase::Terminate { .. } => Ok(None),
        }
    }

    /// The SSD's keyset; generated in the key store (never seen in clear) when the SD has none.
    async fn ssd_keyset(&self, ctx: &mut Ctx, sd: &SecurityDomain, view: &crate::planner::CardView) -> Result<KeysetRef, Fail> {
        if let Some(kid) = sd.keyset_id {
            let ks = self.st.store.keysets().get(kid).await?.ok_or_else(|| Fail::new("engine.keys", format!("keyset {kid} of the SSD {} is gone", sd.aid)))?;
            return Ok(KeysetRef { id: kid.to_string(), kvn: ks.kvn, alg: ks.alg });
        }
        let alg = match view.scp {
            tsm_gp::scp::Scp::Scp02 { .. } => tsm_gp::crypto::KeyAlg::Des3_2k,
            tsm_gp::scp::Scp::Scp03 { .. } => tsm_gp::crypto::KeyAlg::Aes128,
        };
        const KVN: u8 = 0x30;
        let ids = ["enc", "mac", "dek"].map(|r| crate::keys::KeyId::new(format!("sd/{}/{KVN:02x}/{r}", sd.id)));
        let [enc, mac, dek] = ids;
        let (enc, mac, dek) = (enc.map_err(|e| Fail::new("engine.keys", e.to_string()))?, mac.map_err(|e| Fail::new("engine.keys", e.to_string()))?, dek.map_err(|e| Fail::new("engine.keys", e.to_string()))?);
        let store = self.st.keys.clone();
        let ids = [enc.clone(), mac.clone(), dek.clone()];
        blocking(move || -> Result<(), crate::keys::KeyStoreError> {
            for id in &ids {
                match store.generate(id, alg) {
                    Ok(_) | Err(crate::keys::KeyStoreError::AlreadyExists(_)) => {}
                    Err(e) => return Err(e),
                }
            }
            Ok(())
        })
        .await?
        .map_err(|e| Fail::Engine(EngineError::Keys(format!("{e} ({})", e.code()))))?;
        let ks = Keyset { id: KeysetId::new(), kvn: KVN, alg, source: KeysetSource::Stored { enc, mac, dek }, created_at: now_ms() };
        self.st.store.keysets().create(&ks).await?;
        let mut row = sd.clone();
        row.keyset_id = Some(ks.id);
        self.st.store.security_domains().update_unscoped(&row).await?;
        if let Some(d) = ctx.sds.iter_mut().find(|d| d.id == sd.id) {
            d.keyset_id = Some(ks.id);
        }
        ctx.keys = None; // resolve again with the new keyset
        ctx.audit.push(NewAuditEntry {
            actor: self.actor(),
            provider_id: sd.provider_id,
            action: "generate_keys".into(),
            object_type: "security_domain".into(),
            object_id: sd.id.to_string(),
            detail: Some(serde_json::json!({"keysetId": ks.id, "kvn": KVN, "seId": ctx.se.id.as_str()})),
        });
        Ok(KeysetRef { id: ks.id.to_string(), kvn: KVN, alg })
    }

    async fn isd_kvn(&self, ctx: &Ctx) -> Result<u8, Fail> {
        match ctx.se.isd_keyset_id {
            Some(k) => Ok(self.st.store.keysets().get(k).await?.map(|k| k.kvn).unwrap_or(0)),
            None => Err(Fail::new("engine.no_isd_keys", format!("{} has no ISD key set", ctx.se.id))),
        }
    }

    async fn keys(&self, ctx: &mut Ctx) -> Result<EngineKeys, EngineError> {
        if ctx.keys.is_none() {
            let k = EngineKeys::load(&self.st.store, self.st.keys.clone(), &ctx.se, &ctx.sds).await.map_err(EngineError::Keys)?;
            ctx.keys = Some(k);
        }
        Ok(ctx.keys.clone().expect("loaded above"))
    }

    // ---- answers ----------------------------------------------------------------------------

    /// The run of `pending`'s process with its planner resumed; `Gone` if the process is no
    /// longer this session's to answer (its version moved, it ended, another session took it);
    /// `Ended` if it failed now (its inputs changed; the write is in `ctx`).
    async fn resume_run(&self, ctx: &mut Ctx, pending: &Pending) -> Result<Resumed, EngineError> {
        if !self.hold(ctx.sid, &ctx.se.id).await? {
            return Ok(Resumed::Gone);
        }
        let Some(p) = self.st.store.processes().get_unscoped(pending.process_id).await? else { return Ok(Resumed::Gone) };
        if p.version != pending.process_version || p.state != ProcessState::Running || p.seram_session_id != Some(ctx.sid) {
            return Ok(Resumed::Gone);
        }
        let ps = ProcState::from_row(p.planner_state.as_ref()).ok_or_else(|| EngineError::Internal(format!("process {} has no engine state", p.id)))?;
        let instance = match p.service_instance_id {
            Some(i) => self.st.store.service_instances().get_unscoped(i).await?,
            None => None,
        };
        let run = Run::new(p, ps, instance);
        let Some(plan) = run.ps.plan.clone() else {
            return Err(EngineError::Internal(format!("process {} has no plan", run.p.id)));
        };
        let plan = match &run.ps.inputs {
            Some(ins) => match inputs::rehydrate(&self.st.store, &self.st.keys, ins).await {
                Ok((lf, perso)) => state::rehydrate_plan(plan, &lf, &perso).map_err(EngineError::Internal)?,
                Err(Fail::Engine(e)) => return Err(e),
                Err(f @ Fail::Process { .. }) => {
                    // The inputs changed under the plan: it cannot go on as planned.
                    self.fail(ctx, run, f);
                    return Ok(Resumed::Ended);
                }
            },
            None => plan,
        };
        let state: PlanState = serde_json::from_value(plan).map_err(|e| EngineError::Internal(format!("plan state of process {}: {e}", pending.process_id)))?;
        let mut run = run;
        run.planner = Some(Planner::resume(state));
        Ok(Resumed::Run(Box::new(run)))
    }

    /// The run of `pending`'s process resumed ([`Self::resume_run`]); or, when there is none to
    /// resume, the session's decision: Stop when the process is no longer this session's, the
    /// next work when it ended here.
    async fn resume_or_move_on(&self, mut ctx: Ctx, pending: &Pending) -> Result<ControlFlow<Decision, (Ctx, Run)>, EngineError> {
        let next = match self.resume_run(&mut ctx, pending).await? {
            Resumed::Run(r) => return Ok(ControlFlow::Continue((ctx, *r))),
            Resumed::Gone => SessionNext::Stop("the process was taken over by another session".into()),
            Resumed::Ended => self.find_work(&mut ctx).await?,
        };
        Ok(ControlFlow::Break(self.decision(ctx, next).await?))
    }

    /// Appends a segment's exchanges to the run's APDU log (unanswered commands without a
    /// response) and counts the round trip.
    fn log_segment(&self, run: &mut Run, pending: &Pending, answers: &[Vec<u8>]) {
        run.ps.round_trips += 1;
        run.ps.apdus += answers.len() as u32;
        let at = now_ms();
        for (k, c) in pending.batch.commands[pending.from..pending.to].iter().enumerate() {
            let r = answers.get(k);
            // A command that changes the card and was accepted: the card is no longer as before.
            if r.and_then(|r| segments::sw(r)).is_some_and(|sw| c.accept.contains(&sw)) && segments::changes_card(&c.name) {
                run.ps.touched = true;
            }
            run.w.apdus.push(ApduLogEntry { process_id: run.p.id, batch: run.ps.round_trips, seq: k as u32, command: c.apdu.clone(), response: r.cloned(), sw: r.and_then(|r| segments::sw(r)), at });
        }
    }

    async fn on_next(&self, ctx: &mut Ctx, run: &mut Run, next: Next) -> Result<Option<Pending>, EngineError> {
        let r = match self.on_next_inner(ctx, run, next).await {
            Ok(Step::Send(p)) => Ok(Some(p)),
            Ok(Step::PhaseDone) => self.advance_phases(ctx, run).await,
            Err(e) => Err(e),
        };
        match r {
            Ok(p) => Ok(p),
            Err(Fail::Engine(e)) => Err(e),
            Err(Fail::Process { code: "planner.stale_counter", message }) if run.ps.restarts < MAX_RESTARTS => {
                // Another party used the card since the TSM last saw its counter: nothing was
                // done (the card refused EXTERNAL AUTHENTICATE); read the card and plan again.
                inputs::mark_stale(&mut ctx.se);
                ctx.se_dirty = true;
                self.restart(ctx, run, &format!("planner.stale_counter: {message}")).await
            }
            Err(f @ Fail::Process { .. }) => {
                self.fail_in_place(ctx, run, f);
                Ok(None)
            }
        }
    }

    /// A planner result: the next batch, the end of the phase, or the end of the process.
    async fn on_next_inner(&self, ctx: &mut Ctx, run: &mut Run, next: Next) -> Result<Step, Fail> {
        let phase = run.ps.current().cloned().unwrap_or(Phase::Resync);
        match next {
            Next::Send(batch) => {
                let planner = run.planner.as_ref().expect("a plan sent a batch");
                inputs::apply_view(&mut ctx.se, planner.card(), false);
                ctx.se_dirty = true;
                let trusted = view_trusted_view(planner.card());
                run.ps.plan = Some(state::strip_plan(serde_json::to_value(planner.state()).map_err(|e| Fail::Engine(EngineError::Internal(e.to_string())))?));
                self.record_steps(run, StepMode::Sent);
                self.progress_state(run, &phase);
                let to = segments::segment_end(&batch, 0, trusted);
                Ok(Step::Send(Pending { process_id: run.p.id, process_version: run.p.version + 1, batch, from: 0, to, answers: Vec::new() }))
            }
            Next::Done(outcome) => {
                let resync = phase == Phase::Resync;
                inputs::apply_view(&mut ctx.se, &outcome.card, resync || outcome.resynced);
                ctx.se_dirty = true;
                self.update_sds(ctx, &outcome.card);
                self.record_steps(run, StepMode::Done);
                if outcome.load_skipped {
                    run.ps.notes.push("the load file was on the card already: not loaded again".into());
                }
                if outcome.resynced {
                    run.ps.notes.push("the card contradicted the registry view: read again".into());
                }
                self.phase_done_state(run, &phase);
                run.ps.phase += 1;
                run.ps.plan = None;
                run.ps.inputs = None;
                run.planner = None;
                run.ps.step_base = run.ps.steps.len();
                Ok(Step::PhaseDone)
            }
            Next::Failed(e) => {
                if let Some(planner) = run.planner.as_ref() {
                    inputs::apply_view(&mut ctx.se, planner.card(), false);
                    ctx.se_dirty = true;
                    run.ps.plan = serde_json::to_value(planner.state()).ok().map(state::strip_plan);
                    self.record_steps(run, StepMode::Failed);
                }
                Err(Fail::new(e.code(), e.to_string()))
            }
        }
    }

    /// The plan of the current phase cannot go on (the card left it behind): start again from
    /// a resynchronization, keeping the phases still to do.
    async fn restart(&self, ctx: &mut Ctx, run: &mut Run, why: &str) -> Result<Option<Pending>, EngineError> {
        run.ps.restarts += 1;
        if run.ps.restarts > MAX_RESTARTS {
            self.fail_in_place(ctx, run, Fail::new("engine.restarts", format!("{why}; restarted {} times without finishing", run.ps.restarts - 1)));
            return Ok(None);
        }
        mark_current_step(&mut run.ps, StepState::Failed);
        run.ps.step_base = run.ps.steps.len();
        let rest: Vec<Phase> = run.ps.phases[run.ps.phase..].iter().filter(|p| **p != Phase::Resync).cloned().collect();
        run.ps.phases.truncate(run.ps.phase);
        run.ps.phases.push(Phase::Resync);
        run.ps.phases.extend(rest);
        run.ps.plan = None;
        run.ps.inputs = None;
        run.planner = None;
        run.ps.notes.push(format!("{why}: restarted with a fresh read of the card"));
        match self.advance_phases(ctx, run).await {
            Ok(p) => Ok(p),
            Err(Fail::Engine(e)) => Err(e),
            Err(f @ Fail::Process { .. }) => {
                self.fail_in_place(ctx, run, f);
                Ok(None)
            }
        }
    }

    /// After a report: the process goes on (`pending`), or it ended and the session looks for
    /// the next one.
    async fn conclude(&self, mut ctx: Ctx, run: Run, pending: Option<Pending>) -> Result<Decision, EngineError> {
        self.finish_run(&mut ctx, run);
        if let Some(p) = pending {
            return self.decision(ctx, SessionNext::Send(p)).await;
        }
        let next = self.find_work(&mut ctx).await?;
        self.decision(ctx, next).await
    }

    // ---- states, steps, endings -------------------------------------------------------------

    /// The steps of the current phase from its planner.
    fn record_steps(&self, run: &mut Run, mode: StepMode) {
        let Some(planner) = run.planner.as_ref() else { return };
        let now = now_ms();
        let base = run.ps.step_base.min(run.ps.steps.len());
        let old: Vec<state::StepRec> = run.ps.steps.split_off(base);
        // The planner counts a step done once its commands are in a batch; the engine counts
        // it completed once the card's answers to them were accepted.
        let running: Vec<usize> = match mode {
            StepMode::Sent => serde_json::to_value(planner.state()).map(|v| batch_steps(&v)).unwrap_or_default().into_iter().flatten().collect(),
            _ => Vec::new(),
        };
        let answered: Vec<usize> = run.answered_steps.iter().flatten().copied().collect();
        for (i, (name, d)) in planner.state().steps().into_iter().enumerate() {
            let prev = old.get(i).filter(|s| s.name == name);
            let was_completed = prev.is_some_and(|s| s.state == StepState::Completed);
            let state = match mode {
                StepMode::Done => StepState::Completed,
                StepMode::Sent if running.contains(&i) => StepState::Running,
                StepMode::Sent if d => StepState::Completed,
                StepMode::Sent => StepState::Pending,
                StepMode::Failed => match run.failed_step {
                    Some(f) if f == i => StepState::Failed,
                    _ if was_completed => StepState::Completed,
                    Some(f) if answered.contains(&i) && i < f => StepState::Completed,
                    None if answered.first() == Some(&i) => StepState::Failed,
                    _ => StepState::Pending,
                },
            };
            let started_at = prev.and_then(|s| s.started_at).or((state != StepState::Pending).then_some(now));
            let finished_at = prev.and_then(|s| s.finished_at).or(matches!(state, StepState::Completed | StepState::Failed).then_some(now));
            run.ps.steps.push(state::StepRec { name, state, started_at, finished_at });
        }
    }

    /// The instance's state while a deployment runs: INSTALLED once an instance is installed,
    /// PERSONALIZED once every personalization step is done.
    fn progress_state(&self, run: &mut Run, phase: &Phase) {
        if !matches!(phase, Phase::Deploy { .. }) {
            return;
        }
        let cur = &run.ps.steps[run.ps.step_base.min(run.ps.steps.len())..];
        let done = |prefix: &str| cur.iter().filter(|s| s.name.starts_with(prefix)).map(|s| s.state == StepState::Completed).collect::<Vec<_>>();
        let installed = done("install ");
        let perso = done("personalize ");
        if !perso.is_empty() && perso.iter().all(|d| *d) {
            run.instance_state = Some(ServiceInstanceState::Personalized);
        } else if installed.iter().any(|d| *d) {
            run.instance_state = Some(ServiceInstanceState::Installed);
        }
    }

    /// The instance's state once a phase completed.
    fn phase_done_state(&self, run: &mut Run, phase: &Phase) {
        run.instance_state = match phase {
            Phase::Resync => run.instance_state,
            Phase::Deploy { .. } => match run.planner.as_ref().map(|p| p.state().operation()) {
                Some(PlanOp::Deploy(d)) if d.make_selectable => Some(ServiceInstanceState::Operational),
                Some(PlanOp::Deploy(d)) if !d.personalization.is_empty() => Some(ServiceInstanceState::Personalized),
                _ => Some(ServiceInstanceState::Installed),
            },
            Phase::Suspend { .. } => Some(ServiceInstanceState::Suspended),
            Phase::Resume { .. } => Some(ServiceInstanceState::Operational),
            Phase::Terminate { .. } => Some(ServiceInstanceState::NotDeployed),
        };
    }

    /// SSD rows take their life cycle from the registry.
    fn update_sds(&self, ctx: &mut Ctx, view: &crate::planner::CardView) {
        for d in ctx.sds.iter_mut().filter(|d| d.kind == SdKind::Ssd) {
            let Ok(aid) = Aid::new(d.aid.as_bytes()) else { continue };
            let lc = inputs::entry(view, &aid).map(|e| e.lifecycle.value());
            if view.registry.is_some() && lc != d.life_cycle {
                d.life_cycle = lc;
                if !ctx.sds_dirty.contains(&d.id) {
                    ctx.sds_dirty.push(d.id);
                }
            }
        }
    }

    fn complete(&self, ctx: &mut Ctx, run: &mut Run) {
        run.p.state = ProcessState::Completed;
        run.p.finished_at = Some(now_ms());
        run.p.error = None;
        if run.p.operation == Operation::Resync {
            run.instance_state = None;
        }
        if let (Some(inst), Some(t)) = (run.instance.as_ref(), run.ps.phases.iter().find_map(|p| match p {
            Phase::Deploy { target: Some(t) } => Some(*t),
            _ => None,
        })) {
            run.w.instance_flavor = Some((inst.id, t.version, t.flavor));
        }
        let detail = serde_json::json!({"roundTrips": run.ps.round_trips, "apdus": run.ps.apdus, "notes": run.ps.notes});
        run.w.audit.push(self.audit(&run.p, "process_completed", detail));
        ctx.notifications.push(format!("tsm/process/{}/{}/COMPLETED", run.p.id, run.p.operation));
    }

    /// Ends a run that is still owned by the caller (its write is made by `finish_run`).
    fn fail_in_place(&self, ctx: &mut Ctx, run: &mut Run, f: Fail) {
        let (code, message) = match f {
            Fail::Process { code, message } => (code, message),
            Fail::Engine(e) => (e.code(), e.to_string()),
        };
        mark_current_step(&mut run.ps, StepState::Failed);
        run.p.state = ProcessState::Failed;
        run.p.finished_at = Some(now_ms());
        run.p.error = Some(ProcessError { code: code.to_string(), message: message.clone() });
        run.planner = None;
        run.instance_state = if run.ps.touched { Some(ServiceInstanceState::InError) } else { run.ps.state_before };
        run.w.audit.push(self.audit(&run.p, "process_failed", serde_json::json!({"code": code, "message": message, "touched": run.ps.touched})));
        ctx.notifications.push(format!("tsm/process/{}/{}/FAILED/{code}", run.p.id, run.p.operation));
    }

    fn fail(&self, ctx: &mut Ctx, mut run: Run, f: Fail) {
        self.fail_in_place(ctx, &mut run, f);
        self.finish_run(ctx, run);
    }

    /// Turns a run into its write (process row, steps, instance state, callback) in `ctx`.
    fn finish_run(&self, ctx: &mut Ctx, run: Run) {
        let Run { mut p, mut ps, instance, instance_state, planner, mut w, .. } = run;
        if let Some(pl) = planner.as_ref()
            && !p.state.is_final()
            && let Ok(v) = serde_json::to_value(pl.state())
        {
            ps.plan = Some(state::strip_plan(v));
        }
        let done = ps.steps.iter().filter(|s| matches!(s.state, StepState::Completed | StepState::Skipped)).count() as u32;
        p.progress = Progress { steps_done: done, steps_total: ps.steps.len() as u32, apdus: ps.apdus, round_trips: ps.round_trips };
        w.steps = ps.steps.iter().enumerate().map(|(i, s)| ProcessStep { process_id: p.id, ordinal: i as u32, name: s.name.clone(), state: s.state, started_at: s.started_at, finished_at: s.finished_at }).collect();
        if let (Some(inst), Some(s)) = (instance.as_ref(), instance_state)
            && s != inst.state
        {
            w.instance_state = Some((inst.id, s));
        }
        p.planner_state = serde_json::to_value(&ps).ok();
        if p.state.is_final() {
            let id = CallbackId::new();
            // The provider's URL is filled in by `decision` (no URL: no callback).
            w.callback = Some(CallbackOutboxEntry {
                id,
                provider_id: p.provider_id,
                process_id: p.id,
                url: String::new(),
                payload: crate::callbacks::payload(&p, id),
                attempts: 0,
                next_attempt_at: now_ms(),
                delivered_at: None,
                last_error: None,
                created_at: now_ms(),
            });
        }
        w.process = p;
        ctx.writes.push(w);
    }

    fn audit(&self, p: &Process, action: &str, detail: serde_json::Value) -> NewAuditEntry {
        NewAuditEntry { actor: self.actor(), provider_id: Some(p.provider_id), action: action.into(), object_type: "process".into(), object_id: p.id.to_string(), detail: Some(detail) }
    }
}

enum Step {
    Send(Pending),
    PhaseDone,
}

enum Resumed {
    Run(Box<Run>),
    Gone,
    Ended,
}

impl Run {
    fn new(p: Process, ps: ProcState, instance: Option<ServiceInstance>) -> Run {
        let w = ProcessWrite::new(p.clone());
        Run { p, ps, instance, instance_state: None, planner: None, answered_steps: Vec::new(), failed_step: None, w }
    }
}

/// Closes the current phase's steps: the first one not completed takes `state` (unless one
/// failed already), the others still running go back to pending.
fn mark_current_step(ps: &mut ProcState, state: StepState) {
    let now = now_ms();
    let base = ps.step_base.min(ps.steps.len());
    let mut set = state != StepState::Failed || ps.steps[base..].iter().any(|s| s.state == StepState::Failed);
    for s in ps.steps.iter_mut().skip(base) {
        if !set && matches!(s.state, StepState::Running | StepState::Pending) {
            s.state = state;
            s.finished_at = Some(now);
            set = true;
        } else if s.state == StepState::Running {
            s.state = StepState::Pending;
        }
    }
}

/// The instance as a deployment sees it: moved to the update's target, if any.
fn targeted(inst: Option<&ServiceInstance>, target: &Option<state::Target>) -> Option<ServiceInstance> {
    let mut i = inst?.clone();
    if let Some(t) = target {
        i.service_version_id = t.version;
        i.flavor_id = t.flavor;
    }
    Some(i)
}

/// The registry is unknown or the counter may have moved: read the card before planning.
fn needs_resync(se: &SecureElement) -> bool {
    se.registry.is_none() || !se.sequence_counter_current
}

/// The TSM's view can be trusted to know which load files the card has.
fn view_trusted(se: &SecureElement) -> bool {
    !needs_resync(se)
}

fn view_trusted_view(v: &crate::planner::CardView) -> bool {
    v.registry.is_some() && v.counter_is_current
}

async fn blocking<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> Result<T, EngineError> {
    tokio::task::spawn_blocking(f).await.map_err(|e| EngineError::Internal(format!("blocking task: {e}")))
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

#[cfg(test)]
mod tests;
