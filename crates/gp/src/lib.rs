//! # tsm-gp — the GlobalPlatform protocol core
//!
//! Everything the TSM says to a secure element, as data: TLV and APDU encoding, status words,
//! the cryptography of GP secure channels, SCP02 and SCP03 for both the host and the card side,
//! key diversification, typed GP commands and response parsers, and CAP files.
//!
//! This crate performs no I/O. Transports (PC/SC readers, the simulated SE, the SERAM device
//! API) live elsewhere and only move the bytes this crate produces.

pub mod apdu;
pub mod cap;
pub mod codec;
pub mod crypto;
pub mod gp;
pub mod hex;
pub mod profile;
pub mod recording;
pub mod scp;
pub mod session;
pub mod sw;
pub mod tlv;
pub mod trace;
pub mod transport;

pub use apdu::{CommandApdu, ResponseApdu};
pub use codec::{Codec, DecodeError, Reader};
pub use sw::StatusWord;

/// The repository's `testdata/` folder (third-party vectors used as test fixtures). For tests
/// and examples only; nothing in the library reads it.
#[doc(hidden)]
pub fn testdata_dir() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../testdata")
}
