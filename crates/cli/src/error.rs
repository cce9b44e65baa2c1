//! The CLI's error: a stable code, a message for the operator, and an exit status.

use std::fmt;

#[derive(Debug)]
pub struct CliError {
    pub code: String,
    pub message: String,
    /// Process exit status: 1 = the input did not verify / operation failed, 2 = usage or input error.
    pub exit: u8,
}

impl CliError {
    pub fn new(code: impl Into<String>, message: impl Into<String>) -> Self {
        CliError { code: code.into(), message: message.into(), exit: 2 }
    }
    pub fn failed(code: impl Into<String>, message: impl Into<String>) -> Self {
        CliError { code: code.into(), message: message.into(), exit: 1 }
    }
}

impl fmt::Display for CliError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "error[{}]: {}", self.code, self.message)
    }
}

/// Anything with a stable `code()` converts into a CLI error.
pub trait Coded: fmt::Display {
    fn code(&self) -> &'static str;
}

macro_rules! coded {
    ($($t:ty),*) => {$(
        impl Coded for $t { fn code(&self) -> &'static str { <$t>::code(self) } }
        impl From<$t> for CliError {
            fn from(e: $t) -> Self { CliError::new(Coded::code(&e), e.to_string()) }
        }
    )*};
}

coded!(
    tsm_gp::crypto::CryptoError,
    tsm_gp::DecodeError,
    tsm_gp::recording::RecordingError,
    tsm_gp::scp::ScpError
);

impl From<tsm_gp::hex::HexError> for CliError {
    fn from(e: tsm_gp::hex::HexError) -> Self {
        CliError::new("input.hex", e.to_string())
    }
}

/// Reads a file, with the path in the error.
pub fn read_file(path: &std::path::Path) -> Result<Vec<u8>, CliError> {
    std::fs::read(path).map_err(|e| CliError::new("io.read", format!("cannot read {}: {e}", path.display())))
}
