//! Errors of the simulated secure element's host-facing API (construction, state files).
//! Card-level problems are never errors: the card answers them with a status word.

use thiserror::Error;

/// What went wrong building, saving or loading a simulated card.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum SeError {
    /// The card profile cannot describe a working card (no SCP, bad ISD AID, …).
    #[error("card profile {profile:?}: {detail}")]
    Profile { profile: String, detail: String },
    /// The card configuration contradicts itself or the profile.
    #[error("card configuration: {0}")]
    Config(String),
    /// Reading or writing a state file.
    #[error("{path}: {source}")]
    Io {
        path: String,
        #[source]
        source: std::io::Error,
    },
    /// A state file that is not valid JSON or not a card state.
    #[error("state file: {0}")]
    Json(String),
    /// A sealed key value that does not open with the storage key (wrong key or altered file).
    #[error("sealed key {key} does not open: wrong storage key, or the state file was altered")]
    Seal { key: String },
    /// A key that has no sealed value (e.g. a state taken with `state()` instead of `sealed_state()`).
    #[error("key {key} has no sealed value in this state")]
    MissingKey { key: String },
    /// A state whose content is inconsistent (unknown format, dangling references, KCV mismatch).
    #[error("card state: {0}")]
    State(String),
    /// An application model that is not registered or cannot restore its state.
    #[error("application model {model:?}: {detail}")]
    Model { model: String, detail: String },
    /// A cryptographic failure while sealing.
    #[error(transparent)]
    Crypto(#[from] tsm_gp::crypto::CryptoError),
}

impl SeError {
    /// Stable machine-readable code.
    pub fn code(&self) -> &'static str {
        match self {
            SeError::Profile { .. } => "se.profile",
            SeError::Config(_) => "se.config",
            SeError::Io { .. } => "se.io",
            SeError::Json(_) => "se.json",
            SeError::Seal { .. } => "se.seal",
            SeError::MissingKey { .. } => "se.missing_key",
            SeError::State(_) => "se.state",
            SeError::Model { .. } => "se.model",
            SeError::Crypto(e) => e.code(),
        }
    }
}
