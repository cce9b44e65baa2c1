//! What the planner hands out: batches of wire APDUs for one round trip, and the result.

use super::error::PlanError;
use super::model::CardView;
use serde::{Deserialize, Serialize};

/// One command of a batch.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BatchCommand {
    /// The command APDU as it goes to the card (secure messaging applied).
    #[serde(with = "tsm_gp::hex::serde")]
    pub apdu: Vec<u8>,
    /// What it is, for logs (`INSTALL [for load]`, `LOAD block 3`).
    pub name: String,
    /// Status words after which the next command is sent; after any other the agent stops and
    /// reports what it has (that answer last).
    pub accept: Vec<u16>,
}

/// The commands of one round trip, in order. The agent sends them one after the other and
/// stops after the first answer whose status word is not in the command's `accept` list; the
/// report carries the answers (wire R-APDUs: data ‖ SW1 SW2) of the commands sent.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Batch {
    pub commands: Vec<BatchCommand>,
}

impl Batch {
    pub fn len(&self) -> usize {
        self.commands.len()
    }
    pub fn is_empty(&self) -> bool {
        self.commands.is_empty()
    }
    /// The wire APDUs.
    pub fn apdus(&self) -> impl Iterator<Item = &[u8]> {
        self.commands.iter().map(|c| c.apdu.as_slice())
    }
    /// Whether the agent goes on after answer `sw` to command `i`.
    pub fn accepts(&self, i: usize, sw: u16) -> bool {
        self.commands.get(i).is_some_and(|c| c.accept.contains(&sw))
    }
}

/// What to do next.
#[derive(Debug, Clone, PartialEq)]
// Returned once per batch and matched at once, never stored: boxing the outcome buys nothing.
#[allow(clippy::large_enum_variant)]
pub enum Next {
    /// Send this batch and report its answers.
    Send(Batch),
    /// The operation is complete.
    Done(Outcome),
    /// The operation ended in failure (the plan is over; nothing is retried).
    Failed(PlanError),
}

/// The result of a completed operation.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Outcome {
    pub operation: String,
    /// The card as the plan leaves it: sequence counter (current), KDD, key version, registry
    /// (updated with what the plan changed, or read afresh by a resynchronization).
    pub card: CardView,
    /// The load file was found on the card and not loaded again.
    pub load_skipped: bool,
    /// The card's registry was read because it contradicted the view.
    pub resynced: bool,
    pub round_trips: u32,
    pub apdus: u32,
}

/// How far the plan is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Progress {
    pub steps_done: u32,
    pub steps_total: u32,
    /// Command APDUs sent (in batches handed out) and answered.
    pub apdus_sent: u32,
    pub apdus_answered: u32,
    pub round_trips: u32,
    /// LOAD data acknowledged by the card and to load in all.
    pub bytes_loaded: u64,
    pub bytes_total: u64,
}
