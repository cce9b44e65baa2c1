//! The session layer's error: what went wrong between the host and one card.

use crate::cap::CapError;
use crate::crypto::CryptoError;
use crate::gp::delegated::DelegatedError;
use crate::gp::GpError;
use crate::scp::ScpError;
use crate::sw::StatusWord;
use crate::transport::TransportError;
use thiserror::Error;

/// Errors of a [`GpSession`](super::GpSession).
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum SessionError {
    /// The card did not answer (no card, reader gone, reset).
    #[error(transparent)]
    Transport(#[from] TransportError),
    /// The secure channel refused to open, or a response failed its R-MAC.
    #[error(transparent)]
    Scp(#[from] ScpError),
    /// A command could not be built or a response did not decode.
    #[error(transparent)]
    Gp(#[from] GpError),
    /// A CAP file could not be used.
    #[error(transparent)]
    Cap(#[from] CapError),
    #[error(transparent)]
    Crypto(#[from] CryptoError),
    /// Delegated management: a receipt missing or not verifying.
    #[error(transparent)]
    Delegated(#[from] DelegatedError),
    /// The card answered a command with a status word other than success.
    #[error("{command}: card returned {sw:?}: {meaning}")]
    CardStatus { command: &'static str, sw: StatusWord, meaning: String },
    /// The card refused EXTERNAL AUTHENTICATE (host cryptogram not accepted, or blocked). The
    /// session never retries: real cards block the key set after a few failures.
    #[error(
        "EXTERNAL AUTHENTICATE refused with {sw:?}: {meaning}; not retried (cards block their keys after a few failed attempts)"
    )]
    AuthenticationFailed { sw: StatusWord, meaning: String },
    /// The card answered with bytes that are not a response APDU.
    #[error("{command}: malformed response: {detail}")]
    BadResponse { command: &'static str, detail: String },
    /// PUT KEY: the card reported other key check values (or another version) than sent.
    #[error("PUT KEY: the card reports {received}, expected {expected}: the keys on the card are not the ones sent")]
    KeyCheckMismatch { expected: String, received: String },
    /// No host challenge could be drawn.
    #[error("no random source: {0}")]
    Random(String),
    /// An argument the session cannot work with (block size, AIDs, key types).
    #[error("{0}")]
    InvalidArgument(String),
    /// No application answered SELECT for the issuer security domain.
    #[error("no issuer security domain found (tried {tried}): {meaning}")]
    NoIsd { tried: String, meaning: String },
}

impl SessionError {
    /// Stable machine-readable code (`session.card_status`, or the wrapped layer's code).
    pub fn code(&self) -> &'static str {
        match self {
            SessionError::Transport(e) => e.code(),
            SessionError::Scp(e) => e.code(),
            SessionError::Gp(e) => e.code(),
            SessionError::Cap(e) => e.code(),
            SessionError::Crypto(e) => e.code(),
            SessionError::Delegated(e) => e.code(),
            SessionError::CardStatus { .. } => "session.card_status",
            SessionError::AuthenticationFailed { .. } => "session.authentication_failed",
            SessionError::BadResponse { .. } => "session.bad_response",
            SessionError::KeyCheckMismatch { .. } => "session.key_check_mismatch",
            SessionError::Random(_) => "session.no_random",
            SessionError::InvalidArgument(_) => "session.invalid_argument",
            SessionError::NoIsd { .. } => "session.no_isd",
        }
    }

    /// The status word the card answered with, when the error is a card refusal.
    pub fn status_word(&self) -> Option<StatusWord> {
        match self {
            SessionError::CardStatus { sw, .. } | SessionError::AuthenticationFailed { sw, .. } => Some(*sw),
            SessionError::Scp(ScpError::CardRefused { sw, .. }) => Some(*sw),
            SessionError::Gp(GpError::CardStatus { sw, .. }) => Some(*sw),
            _ => None,
        }
    }

    pub(crate) fn card(command: &'static str, sw: StatusWord) -> Self {
        SessionError::CardStatus { command, sw, meaning: sw.meaning() }
    }
}
