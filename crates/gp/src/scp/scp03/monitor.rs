//! SCP03 monitor: checks and decodes a recorded session with the static keys (`tsm trace
//! decode`, tests). It verifies everything the card and the host would, and keeps going after an
//! error so that one bad command does not hide the rest of a trace.

use super::session::{Session, missing_cmac};
use super::{InitUpdateInfo, SessionKeys, check_level, parse_init_update_response, verify_card};
use crate::apdu::{CommandApdu, ResponseApdu};
use crate::crypto::{SecretKey, SymmetricKey, ct_eq};
use crate::scp::{ChannelOptions, Scp, ScpError, SecurityLevel, StaticKeys};
use crate::sw::StatusWord;
use std::fmt;
use std::sync::Arc;

const INS_INITIALIZE_UPDATE: u8 = 0x50;
const INS_EXTERNAL_AUTHENTICATE: u8 = 0x82;

/// INITIALIZE UPDATE checked; EXTERNAL AUTHENTICATE next.
pub struct MonitorAuth {
    keys: SessionKeys,
    dek: Arc<dyn SymmetricKey>,
    info: InitUpdateInfo,
    host_cryptogram: Vec<u8>,
    options: ChannelOptions,
}

impl MonitorAuth {
    pub fn info(&self) -> &InitUpdateInfo {
        &self.info
    }
    pub fn host_cryptogram(&self) -> &[u8] {
        &self.host_cryptogram
    }
    /// KCVs of S-ENC, S-MAC, S-RMAC.
    pub fn session_key_kcvs(&self) -> [[u8; 3]; 3] {
        self.keys.kcvs()
    }
    /// S-ENC, S-MAC, S-RMAC. For tests against known-answer vectors only.
    #[doc(hidden)]
    pub fn session_keys(&self) -> (&SecretKey, &SecretKey, &SecretKey) {
        (&self.keys.enc, &self.keys.mac, &self.keys.rmac)
    }
    /// Follows a card with non-default behaviour: `scp03_counter_only_with_data` cannot be
    /// detected reliably from a trace (a wrong ICV garbles only the first decrypted block), so
    /// it must be known from the card profile.
    pub fn with_options(mut self, options: ChannelOptions) -> Self {
        self.options = options;
        self
    }

    /// Checks EXTERNAL AUTHENTICATE (level valid for `i`, host cryptogram, C-MAC over a zero
    /// chaining value) and the card's `9000`.
    pub fn external_authenticate(self, cmd: &CommandApdu, resp: &ResponseApdu) -> Result<Scp03Monitor, ScpError> {
        if cmd.ins != INS_EXTERNAL_AUTHENTICATE {
            return Err(ScpError::BadCommand(format!("expected EXTERNAL AUTHENTICATE, got INS {:02X}", cmd.ins)));
        }
        if !cmd.is_secure_messaging() {
            return Err(missing_cmac());
        }
        let level = SecurityLevel(cmd.p1);
        check_level(level, self.info.i)?;
        let mut session = Session {
            keys: self.keys,
            dek: self.dek,
            chaining: [0; 16],
            counter: 0,
            level,
            s16: self.info.s16,
            i: self.info.i,
            options: self.options,
        };
        let len = self.host_cryptogram.len();
        if cmd.data.len() != len + session.mac_len() {
            return Err(ScpError::BadCommand(format!(
                "EXTERNAL AUTHENTICATE with {} bytes of data, expected {}",
                cmd.data.len(),
                len + session.mac_len()
            )));
        }
        if !ct_eq(&cmd.data[..len], &self.host_cryptogram) {
            return Err(ScpError::HostCryptogram);
        }
        let check = session.check_mac(cmd, &[0; 16])?;
        if !check.ok {
            return Err(session.cmac_error(&check));
        }
        if resp.sw != StatusWord::SUCCESS {
            return Err(ScpError::CardRefused { command: "EXTERNAL AUTHENTICATE", sw: resp.sw, meaning: resp.sw.meaning() });
        }
        session.chaining = check.computed;
        Ok(Scp03Monitor {
            session,
            info: self.info,
            host_cryptogram: self.host_cryptogram,
            channel: cmd.logical_channel(),
            alt_chaining: None,
            pass_through: false,
        })
    }
}

impl fmt::Debug for MonitorAuth {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MonitorAuth").field("info", &self.info).finish()
    }
}

/// An authenticated SCP03 session being followed.
///
/// After a C-MAC mismatch the monitor cannot know whether the MAC or the data was damaged.
/// It continues with the chaining value computed over the received command (right when only the
/// MAC bytes were damaged); in S16 mode the received MAC *is* the host's full chaining value
/// (right when the data was damaged), so it is kept as a second candidate and whichever one
/// verifies the next command is adopted. In S8 mode a damaged data field loses the chain for good
/// (only 8 of its 16 bytes travel). (A real card closes the session on a bad C-MAC; this only
/// matters for damaged recordings.) A bad R-MAC affects only its response.
///
/// Commands without the secure messaging class bit, or on another logical channel, are passed
/// through unchanged with their responses and do not touch the session state.
pub struct Scp03Monitor {
    session: Session,
    info: InitUpdateInfo,
    host_cryptogram: Vec<u8>,
    channel: u8,
    alt_chaining: Option<[u8; 16]>,
    /// The last command was passed through: so is its response.
    pass_through: bool,
}

impl Scp03Monitor {
    /// Checks INITIALIZE UPDATE and its response: layout, card cryptogram and, with `sd_aid`,
    /// records whether the card challenge is the pseudo-random one (not an error: see
    /// [`InitUpdateInfo::pseudo_random_challenge_ok`]).
    pub fn start(keys: &StaticKeys, init_update_cmd: &CommandApdu, init_update_resp: &ResponseApdu, sd_aid: Option<&[u8]>) -> Result<MonitorAuth, ScpError> {
        if init_update_cmd.ins != INS_INITIALIZE_UPDATE {
            return Err(ScpError::BadCommand(format!("expected INITIALIZE UPDATE, got INS {:02X}", init_update_cmd.ins)));
        }
        let hc = &init_update_cmd.data;
        if hc.len() != 8 && hc.len() != 16 {
            return Err(ScpError::BadCommand(format!("host challenge of {} bytes; SCP03 uses 8 or 16", hc.len())));
        }
        let mut info = parse_init_update_response(init_update_resp, hc)?;
        let (sk, host_cryptogram) = verify_card(keys, &mut info, sd_aid)?;
        Ok(MonitorAuth { keys: sk, dek: keys.dek.clone(), info, host_cryptogram, options: ChannelOptions::default() })
    }

    /// Verifies and decodes one command as sent on the wire; returns the plain command.
    pub fn command(&mut self, wire: &CommandApdu) -> Result<CommandApdu, ScpError> {
        if !wire.is_secure_messaging() || wire.logical_channel() != self.channel {
            self.pass_through = true;
            return Ok(wire.clone());
        }
        self.pass_through = false;
        let mut check = match self.session.check_mac(wire, &self.session.chaining) {
            Ok(c) => c,
            Err(e) => {
                // Too short to carry a MAC; the host still counted it.
                self.session.advance_counter(0);
                return Err(e);
            }
        };
        let alt = self.alt_chaining.filter(|_| !check.ok);
        if let Some(c) = alt.and_then(|alt| self.session.check_mac(wire, &alt).ok()).filter(|c| c.ok) {
            check = c;
        }
        let body = &wire.data[..wire.data.len() - self.session.mac_len()];
        self.session.advance_counter(body.len());
        self.session.chaining = check.computed;
        if !check.ok {
            self.alt_chaining = if self.session.s16 { check.received.as_slice().try_into().ok() } else { None };
            return Err(self.session.cmac_error(&check));
        }
        self.alt_chaining = None;
        let data = if self.session.level.c_dec() && !body.is_empty() {
            self.session.decrypt_command_data(body, self.session.counter)?
        } else {
            body.to_vec()
        };
        Ok(Session::plain_command(wire, data))
    }

    /// Verifies and decodes the response to the last command; returns the plain response.
    pub fn response(&mut self, wire: &ResponseApdu) -> Result<ResponseApdu, ScpError> {
        if self.pass_through {
            return Ok(wire.clone());
        }
        self.session.unwrap_response(&self.session.context(), wire)
    }

    pub fn info(&self) -> &InitUpdateInfo {
        &self.info
    }
    pub fn scp(&self) -> Scp {
        self.info.scp()
    }
    pub fn level(&self) -> SecurityLevel {
        self.session.level
    }
    pub fn host_cryptogram(&self) -> &[u8] {
        &self.host_cryptogram
    }
    pub fn logical_channel(&self) -> u8 {
        self.channel
    }
    /// The card behaviour the monitor follows.
    pub fn options(&self) -> ChannelOptions {
        self.session.options
    }
    pub fn mac_chaining_value(&self) -> [u8; 16] {
        self.session.chaining
    }
    pub fn encryption_counter(&self) -> u128 {
        self.session.counter
    }
    /// KCVs of S-ENC, S-MAC, S-RMAC.
    pub fn session_key_kcvs(&self) -> [[u8; 3]; 3] {
        self.session.keys.kcvs()
    }
    /// S-ENC, S-MAC, S-RMAC. For tests against known-answer vectors only.
    #[doc(hidden)]
    pub fn session_keys(&self) -> (&SecretKey, &SecretKey, &SecretKey) {
        (&self.session.keys.enc, &self.session.keys.mac, &self.session.keys.rmac)
    }
}

impl fmt::Debug for Scp03Monitor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Scp03Monitor({}, level {:?}, counter {})", self.info.scp(), self.session.level, self.session.counter)
    }
}
