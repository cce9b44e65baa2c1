//! The planner: turns a service operation on one SE into GP commands, batched to need as few
//! round trips as the protocol allows; checks every answer; yields the next batch. Pure logic:
//! no I/O, no database, no clock. Its whole state ([`PlanState`]) serializes to JSON and holds
//! no key material, so a plan can be persisted after every batch and resumed on any node with
//! the key store's handles ([`KeyProvider`]).
//!
//! # Use
//!
//! ```text
//! let mut p = Planner::new(card_view, operation, PlanOptions::default())?;
//! let mut next = p.start(&mut keys)?;                 // Next::Send(batch)
//! loop {
//!     match next {
//!         Next::Send(batch) => { /* persist p.state(); send; collect answers */
//!                                next = p.on_responses(&mut keys, &answers)?; }
//!         Next::Done(outcome) => break,                 // outcome.card: the updated view
//!         Next::Failed(error) => break,                 // error.code(): planner.*
//!     }
//! }
//! ```
//!
//! # Batching
//!
//! A batch holds every command whose bytes do not depend on an answer the card has not given
//! yet. Secure messaging does not stop a batch: each command is wrapped ahead and keeps its own
//! MAC chaining value and encryption counter, against which its answer's R-MAC is checked. The
//! agent stops at the first answer outside a command's `accept` list; the channel then
//! continues after the last command the card processed (GP cards keep the MAC chain across
//! error status words).
//!
//! What needs an answer first:
//! - the handshake, unless the card challenge is predictable: SCP03 with `i` bit `10` and SCP02
//!   with `i` b7 (e.g. `55`) derive it from the sequence counter, so when the counter the TSM
//!   holds is current, SELECT, INITIALIZE UPDATE, EXTERNAL AUTHENTICATE and the whole operation
//!   travel in one batch. When it may not be current (first contact, another party used the
//!   card), the first batch is SELECT + GET DATA `C1` (in clear), so a stale counter never costs
//!   a failed EXTERNAL AUTHENTICATE. Without a predictable challenge (SCP02 `i=15`, SCP03
//!   without bit `10`) the first batch ends with INITIALIZE UPDATE and the second starts with
//!   EXTERNAL AUTHENTICATE: one extra round trip.
//! - GET STATUS paging (`6310`) and format fallbacks: one round trip per extra page.
//! - a registry view the card contradicts: INSTALL [for load] refused as for a present load file
//!   (`6985`/`6A80`/`6A89`) triggers a GET STATUS of the load files and, if the file is there,
//!   the plan goes on without LOAD.
//! - a second security domain's channel (rotating an SSD's initial keys): its counter is read
//!   first unless [`PlanOptions::new_sd_sequence_counter`] says what a new SSD starts with.
//!
//! Round trips per operation (SCP03 `i=70`, or SCP02 `i=55`): 1 with a current counter, 2
//! otherwise; SCP02 `i=15`: 2. [`PlanOptions::one_apdu_per_round_trip`] is the baseline of one
//! APDU per round trip (a handshake never predicted).
//!
//! EXTERNAL AUTHENTICATE is never retried: a refusal (or a card cryptogram that does not verify)
//! ends the plan with `planner.auth_failed`, a counter that moved with `planner.stale_counter`.
//!
//! # What the state holds
//!
//! The card view, the operation (load file bytes, personalization blocks as the provider gave
//! them), the program of GP steps, the position in it, and for a secure channel its non-secret
//! state (challenges, sequence counter, MAC chaining value, encryption counter, level). Session
//! keys are derived again from the static key handles each time a batch is built or checked.
//! Personalization blocks marked secret are encrypted under the channel's DEK only when their
//! batch is built; in the state they are as stored with the service configuration.

mod batch;
mod channel;
mod error;
mod keys;
mod machine;
mod model;
mod program;

pub use batch::{Batch, BatchCommand, Next, Outcome, Progress};
pub use error::{ErrorRecord, PlanError};
pub use keys::{KeyError, KeyProvider, KeyRole, WrappedKey, Wrapping};
pub use machine::PlanState;
pub use model::{CardView, Deploy, InstallSpec, KeysetRef, LoadFileSpec, Operation, PersoBlock, PersoScript, PlanOptions, SsdSpec};

/// A plan for one operation on one SE. See the module documentation.
#[derive(Debug, Clone)]
pub struct Planner {
    state: PlanState,
}

impl Planner {
    /// Plans `op` on the card as `card` describes it. Fails when the operation cannot be carried
    /// out as described (e.g. an instance whose module the load file lacks).
    pub fn new(card: CardView, op: Operation, opts: PlanOptions) -> Result<Planner, PlanError> {
        Ok(Planner { state: PlanState::new(card, op, opts)? })
    }

    /// The first batch. Errors leave the planner as it was.
    pub fn start(&mut self, keys: &mut dyn KeyProvider) -> Result<Next, PlanError> {
        self.transact(|s| s.start(keys))
    }

    /// Checks the answers (wire R-APDUs, in order) to the outstanding batch and returns what to
    /// do next. `Err` leaves the planner as it was (e.g. a report that does not fit the batch,
    /// the key store unavailable); [`Next::Failed`] ends the plan.
    pub fn on_responses(&mut self, keys: &mut dyn KeyProvider, rapdus: &[Vec<u8>]) -> Result<Next, PlanError> {
        self.transact(|s| s.on_responses(keys, rapdus))
    }

    /// The state to persist (after every batch).
    pub fn state(&self) -> &PlanState {
        &self.state
    }

    /// Continues a persisted plan.
    pub fn resume(state: PlanState) -> Planner {
        Planner { state }
    }

    /// The card as the plan knows it now (also after a failure: e.g. the counter it saw).
    pub fn card(&self) -> &CardView {
        self.state.card()
    }

    pub fn round_trips(&self) -> u32 {
        self.state.round_trips()
    }

    pub fn progress(&self) -> Progress {
        self.state.progress()
    }

    fn transact<T>(&mut self, f: impl FnOnce(&mut PlanState) -> Result<T, PlanError>) -> Result<T, PlanError> {
        let mut s = self.state.clone();
        let r = f(&mut s)?;
        self.state = s;
        Ok(r)
    }
}

#[cfg(test)]
mod tests;
