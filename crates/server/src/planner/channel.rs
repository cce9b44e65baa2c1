//! Secure channel sessions between round trips: kept as their non-secret state
//! ([`HostState`]), continued with the static key handles ([`Live`]), and positioned per
//! command ([`ChainPoint`]) so that a batch the card stopped early continues after the last
//! command the card processed.

use serde::{Deserialize, Serialize};
use tsm_gp::scp::scp02::{Scp02Host, Scp02HostState};
use tsm_gp::scp::scp03::{ResponseContext, Scp03Host, Scp03HostState};
use tsm_gp::scp::{HostChannel, ScpError, StaticKeys};
use tsm_gp::{CommandApdu, ResponseApdu};

/// A host channel's non-secret state.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "scp", rename_all = "snake_case")]
pub(crate) enum HostState {
    Scp03(Scp03HostState),
    Scp02(Scp02HostState),
}

impl HostState {
    pub fn key_version(&self) -> u8 {
        match self {
            HostState::Scp03(s) => s.key_version,
            HostState::Scp02(s) => s.key_version,
        }
    }
}

/// Where a channel stands right after one command: what its response is checked with, and
/// where the session continues if that command is the last one the card processed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "scp", rename_all = "snake_case")]
pub(crate) enum ChainPoint {
    Scp03 { context: ResponseContext },
    /// SCP02 has no R-MAC here; the chain continues from the command's C-MAC.
    Scp02 {
        #[serde(with = "tsm_gp::hex::serde")]
        mac: Vec<u8>,
    },
}

/// An open host channel, live while a batch is built or a report checked.
pub(crate) enum Live {
    S03(Scp03Host),
    S02(Scp02Host),
}

impl Live {
    pub fn restore(keys: StaticKeys, state: &HostState) -> Result<Live, ScpError> {
        Ok(match state {
            HostState::Scp03(s) => Live::S03(Scp03Host::restore(keys, s)?),
            HostState::Scp02(s) => Live::S02(Scp02Host::restore(keys, s)?),
        })
    }

    pub fn snapshot(&self) -> HostState {
        match self {
            Live::S03(h) => HostState::Scp03(h.snapshot()),
            Live::S02(h) => HostState::Scp02(h.snapshot()),
        }
    }

    /// Where the channel stands now (after EXTERNAL AUTHENTICATE or the last wrapped command).
    pub fn position(&self) -> ChainPoint {
        match self {
            Live::S03(h) => ChainPoint::Scp03 { context: h.response_context() },
            Live::S02(h) => ChainPoint::Scp02 { mac: h.last_mac().map(|m| m.to_vec()).unwrap_or_default() },
        }
    }

    /// Wraps `plain`; returns the wire command and the channel's position after it.
    pub fn wrap(&mut self, plain: &CommandApdu) -> Result<(CommandApdu, ChainPoint), ScpError> {
        let wire = match self {
            Live::S03(h) => h.wrap(plain)?,
            Live::S02(h) => h.wrap(plain)?,
        };
        Ok((wire, self.position()))
    }

    /// Checks (R-MAC) and strips the protection of the response to the command at `at`.
    pub fn unwrap(&mut self, at: &ChainPoint, resp: &ResponseApdu) -> Result<ResponseApdu, ScpError> {
        match (self, at) {
            (Live::S03(h), ChainPoint::Scp03 { context }) => h.unwrap_with(context, resp),
            (Live::S02(h), ChainPoint::Scp02 { .. }) => h.unwrap(resp),
            _ => Err(ScpError::BadResponse("chain point of another protocol".into())),
        }
    }

    /// Continues after the command at `at` (the commands wrapped after it were not processed).
    pub fn rewind(&mut self, at: &ChainPoint) -> Result<(), ScpError> {
        match (self, at) {
            (Live::S03(h), ChainPoint::Scp03 { context }) => {
                h.rewind(context);
                Ok(())
            }
            (Live::S02(h), ChainPoint::Scp02 { mac }) => match <[u8; 8]>::try_from(mac.as_slice()) {
                Ok(m) => h.rewind(m),
                // No C-MAC yet: nothing was wrapped after the handshake.
                Err(_) => Ok(()),
            },
            _ => Err(ScpError::BadResponse("chain point of another protocol".into())),
        }
    }

    /// Encrypts key or personalization data under the channel's data encryption key.
    pub fn encrypt_sensitive(&self, data: &[u8]) -> Result<Vec<u8>, ScpError> {
        match self {
            Live::S03(h) => h.encrypt_sensitive(data),
            Live::S02(h) => h.encrypt_sensitive(data),
        }
    }
}
