//! Where host challenges come from.
//!
//! The protocol core draws no randomness of its own (docs/CONVENTIONS.md): a session takes a
//! [`HostRandom`] from its caller. Any `FnMut(&mut [u8])` is one (tests pass a fixed filler);
//! binaries enable the crate feature `os-random` for [`OsRandom`] (the operating system's
//! generator through `getrandom`), which [`GpSession::new`](super::GpSession::new) then uses by
//! default. Without that feature and without a source, opening a secure channel fails with
//! `session.no_random` unless [`OpenOptions::host_challenge`](super::OpenOptions) is fixed.

use super::SessionError;

/// A source of host challenges (8 or 16 bytes per secure channel).
pub trait HostRandom: Send {
    /// Fills `buf` with unpredictable bytes.
    fn fill(&mut self, buf: &mut [u8]) -> Result<(), SessionError>;
}

impl<F: FnMut(&mut [u8]) + Send> HostRandom for F {
    fn fill(&mut self, buf: &mut [u8]) -> Result<(), SessionError> {
        self(buf);
        Ok(())
    }
}

/// The operating system's random generator (crate feature `os-random`).
#[cfg(feature = "os-random")]
#[derive(Debug, Clone, Copy, Default)]
pub struct OsRandom;

#[cfg(feature = "os-random")]
impl HostRandom for OsRandom {
    fn fill(&mut self, buf: &mut [u8]) -> Result<(), SessionError> {
        getrandom::fill(buf).map_err(|e| SessionError::Random(format!("the operating system's generator failed: {e}")))
    }
}

/// The default source when the crate is built without `os-random`: always fails, naming the
/// two ways out.
#[derive(Debug, Clone, Copy, Default)]
pub struct NoRandom;

impl HostRandom for NoRandom {
    fn fill(&mut self, _buf: &mut [u8]) -> Result<(), SessionError> {
        Err(SessionError::Random(
            "tsm-gp was built without the `os-random` feature; give the session a source with GpSession::with_random".into(),
        ))
    }
}

/// The default source: [`OsRandom`] with `os-random`, else [`NoRandom`].
pub(super) fn default_random() -> Box<dyn HostRandom> {
    #[cfg(feature = "os-random")]
    {
        Box::new(OsRandom)
    }
    #[cfg(not(feature = "os-random"))]
    {
        Box::new(NoRandom)
    }
}
