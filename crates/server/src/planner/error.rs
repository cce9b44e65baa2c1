//! Why a plan failed, with stable codes.

use super::keys::KeyError;
use serde::{Deserialize, Serialize};
use thiserror::Error;
use tsm_gp::StatusWord;
use tsm_gp::scp::ScpError;

/// Planner errors. Returned as `Err` by [`Planner::on_responses`](super::Planner::on_responses)
/// they leave the state as it was (the call can be repeated); as [`Next::Failed`](super::Next)
/// they end the plan.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum PlanError {
    /// A command was answered with an error status word.
    #[error("{command}: card answered {sw:?} ({meaning})")]
    CardStatus { command: String, sw: StatusWord, meaning: String },
    /// `6A84`: the card (or the security domain's quota) has not enough memory.
    #[error("{command}: not enough memory on the card ({sw:?})")]
    NotEnoughMemory { command: String, sw: StatusWord },
    /// The card refused EXTERNAL AUTHENTICATE, or its cryptogram does not verify: wrong keys.
    /// Never retried by the planner (cards block a key set after a few failures).
    #[error("authentication with {sd} failed: {detail}; not retried")]
    AuthFailed { sd: String, detail: String },
    /// The card's sequence counter is not the one the handshake was predicted from: another
    /// party used the card. The TSM's counter must be read again (the next plan does so when
    /// told the counter is not current).
    #[error("sequence counter of {sd} is stale: {detail}")]
    StaleCounter { sd: String, detail: String },
    /// A response failed its R-MAC or could not be unwrapped.
    #[error("{command}: secure channel: {source}")]
    SecureChannel {
        command: String,
        #[source]
        source: ScpError,
    },
    /// A response whose data does not decode.
    #[error("{command}: unexpected response: {detail}")]
    BadResponse { command: String, detail: String },
    /// PUT KEY answered other key check values than the keys sent.
    #[error("{command}: the card reports KCV {received} for key {key_id}, the key store computed {expected}")]
    KcvMismatch { command: String, key_id: u8, expected: String, received: String },
    /// The report does not fit the batch: more answers than commands, none, or fewer without an
    /// error status word to explain why the agent stopped.
    #[error("report does not fit the batch: {0}")]
    BadReport(String),
    #[error(transparent)]
    Keys(#[from] KeyError),
    /// The operation cannot be planned (inconsistent with the card view or the options).
    #[error("cannot plan: {0}")]
    InvalidOperation(String),
    /// Building a command failed in the protocol core.
    #[error("cannot build {command}: {detail}")]
    Build { command: String, detail: String },
    /// `start` twice, answers when no batch is outstanding, or anything after the end.
    #[error("planner misuse: {0}")]
    Misuse(String),
}

impl PlanError {
    pub fn code(&self) -> &'static str {
        match self {
            PlanError::CardStatus { .. } => "planner.card_status",
            PlanError::NotEnoughMemory { .. } => "planner.not_enough_memory",
            PlanError::AuthFailed { .. } => "planner.auth_failed",
            PlanError::StaleCounter { .. } => "planner.stale_counter",
            PlanError::SecureChannel { .. } => "planner.secure_channel",
            PlanError::BadResponse { .. } => "planner.bad_response",
            PlanError::KcvMismatch { .. } => "planner.kcv_mismatch",
            PlanError::BadReport(_) => "planner.bad_report",
            PlanError::Keys(_) => "planner.keys",
            PlanError::InvalidOperation(_) => "planner.invalid_operation",
            PlanError::Build { .. } => "planner.build",
            PlanError::Misuse(_) => "planner.misuse",
        }
    }

    /// The status word the card answered, for errors that carry one.
    pub fn status_word(&self) -> Option<StatusWord> {
        match self {
            PlanError::CardStatus { sw, .. } | PlanError::NotEnoughMemory { sw, .. } => Some(*sw),
            _ => None,
        }
    }

    /// The error for a command answered with `sw` (not success).
    pub(crate) fn card(command: &str, sw: StatusWord) -> PlanError {
        if sw == StatusWord::NOT_ENOUGH_MEMORY {
            PlanError::NotEnoughMemory { command: command.to_string(), sw }
        } else {
            PlanError::CardStatus { command: command.to_string(), sw, meaning: sw.meaning() }
        }
    }

    /// The stable code and message, as the plan state keeps a terminal error.
    pub fn to_record(&self) -> ErrorRecord {
        ErrorRecord { code: self.code().to_string(), message: self.to_string(), sw: self.status_word().map(|s| s.0) }
    }
}

/// A terminal error as the plan state keeps it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorRecord {
    pub code: String,
    pub message: String,
    #[serde(default)]
    pub sw: Option<u16>,
}
