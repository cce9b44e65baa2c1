//! The host side of a GlobalPlatform session: one object per card with a method per card
//! operation, over any [`Transport`].
//!
//! A typestate keeps privileged commands behind a secure channel: a
//! [`GpSession<T, Open>`](GpSession) can select, read GET DATA objects and open a secure channel;
//! only the [`GpSession<T, Secure>`](GpSession) that [`GpSession::open_secure_channel`] returns
//! can manage content (GET STATUS, INSTALL, LOAD, DELETE, PUT KEY, STORE DATA, SET STATUS).
//!
//! ```compile_fail
//! # use tsm_gp::session::{GpSession, SessionConfig};
//! # fn f<T: tsm_gp::transport::Transport>(t: T) {
//! let mut s = GpSession::new(t, SessionConfig::default());
//! s.delete("A000000001".parse().unwrap(), false); // no secure channel: does not compile
//! # }
//! ```
//!
//! What the session does for every command:
//! - wraps it with the channel (C-MAC, C-DEC) and unwraps the response (R-MAC, R-ENC);
//! - answers `61xx` with GET RESPONSE (never wrapped: the concatenated response is what the
//!   channel unwraps) and `6Cxx` by resending the same wire command with the exact Le (Le is
//!   outside the C-MAC in SCP02 and SCP03, and `6Cxx` means the card did not process it,
//!   ISO 7816-3 §10.3.3);
//! - turns any status word but `9000` into [`SessionError::CardStatus`] with its meaning.
//!
//! Opening a secure channel sends INITIALIZE UPDATE with a host challenge from the session's
//! [`HostRandom`], picks SCP02 or SCP03 from the SCP identifier in the card's answer (byte 11),
//! verifies the card cryptogram and sends EXTERNAL AUTHENTICATE once. It is **never retried**:
//! cards count failed authentications and block the key set. With wrong keys the card
//! cryptogram does not verify and EXTERNAL AUTHENTICATE is not even sent.
//!
//! Only the basic logical channel is used.

mod delegated;
mod error;
mod keys;
mod random;
#[cfg(test)]
mod tests;

pub use delegated::{TokenIssuer, check_receipt};
pub use error::SessionError;
pub use keys::{CardKeys, KeySet};
#[cfg(feature = "os-random")]
pub use random::OsRandom;
pub use random::{HostRandom, NoRandom};

use crate::apdu::{CLA_GP, CommandApdu, ResponseApdu};
use crate::cap::{CapFile, HashAlgorithm};
use crate::codec::Codec;
use crate::crypto::SecretKey;
use crate::gp::data::{CardRecognitionData, Cplc, ExtendedCardResources, GpDataObject, KeyInformation};
use crate::gp::load::split_load_file;
use crate::gp::put_key::{PutKey, PutKeyComponent, PutKeyResponse};
use crate::gp::store_data::{DataStructure, StoreData};
use crate::gp::{
    Aid, CardLifeCycle, Delete, Fci, GetData, GetStatus, GetStatusPager, GpError, Install, InstallBody, InstallParams, LifeCycle,
    PagerStep, Privilege, Privileges, RegistryEntry, Select, SetStatus, StatusScope,
};
use crate::profile::{CardProfile, Quirks};
use crate::scp::{HostChannel, Scp, ScpError, SecurityLevel, scp02, scp03};
use crate::sw::{self, FollowUp, StatusWord};
use crate::transport::Transport;
use std::fmt;
use zeroize::Zeroizing;

/// The state of a session without a secure channel.
#[derive(Debug, Default)]
pub struct Open;

/// The state of a session with an open secure channel.
pub struct Secure {
    channel: Box<dyn HostChannel>,
    info: ChannelInfo,
}

impl fmt::Debug for Secure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Secure").field("info", &self.info).finish()
    }
}

mod sealed {
    pub trait Sealed {}
    impl Sealed for super::Open {}
    impl Sealed for super::Secure {}
}

/// [`Open`] or [`Secure`]: how commands travel. Sealed.
pub trait SessionState: sealed::Sealed {
    #[doc(hidden)]
    fn protect(&mut self, cmd: &CommandApdu) -> Result<CommandApdu, SessionError>;
    #[doc(hidden)]
    fn unprotect(&mut self, resp: &ResponseApdu) -> Result<ResponseApdu, SessionError>;
}

impl SessionState for Open {
    fn protect(&mut self, cmd: &CommandApdu) -> Result<CommandApdu, SessionError> {
        Ok(cmd.clone())
    }
    fn unprotect(&mut self, resp: &ResponseApdu) -> Result<ResponseApdu, SessionError> {
        Ok(resp.clone())
    }
}

impl SessionState for Secure {
    fn protect(&mut self, cmd: &CommandApdu) -> Result<CommandApdu, SessionError> {
        Ok(self.channel.wrap(cmd)?)
    }
    fn unprotect(&mut self, resp: &ResponseApdu) -> Result<ResponseApdu, SessionError> {
        Ok(self.channel.unwrap(resp)?)
    }
}

/// What was agreed when the secure channel opened.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChannelInfo {
    /// Protocol and `i` (for SCP03 the `i` the card announced).
    pub scp: Scp,
    pub level: SecurityLevel,
    /// The key version the card used.
    pub key_version: u8,
    /// Key diversification data from the INITIALIZE UPDATE response.
    pub kdd: [u8; 10],
    /// The sequence counter the card reported (SCP02 always; SCP03 with i bit `10`).
    pub sequence_counter: Option<u32>,
    /// The security domain the channel was opened with, when known.
    pub sd_aid: Option<Aid>,
}

/// What the session knows of the card before talking to it (from a [`CardProfile`]).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SessionConfig {
    pub quirks: Quirks,
    /// AID to try first in [`GpSession::select_isd`].
    pub isd_aid: Option<Aid>,
    /// Secure channels the card supports (supplies SCP02's `i`, which the card does not send).
    pub scp: Vec<Scp>,
    /// Largest LOAD / STORE DATA block (plain data bytes); also capped by what fits one APDU.
    pub max_block: Option<usize>,
    /// The card takes extended-length APDUs.
    pub extended_length: bool,
}

impl SessionConfig {
    pub fn from_profile(p: &CardProfile) -> Self {
        SessionConfig {
            quirks: p.quirks,
            isd_aid: Aid::new(&p.isd_aid).ok(),
            scp: p.scp.clone(),
            max_block: Some(p.max_block),
            extended_length: p.extended_length,
        }
    }
}

impl From<Quirks> for SessionConfig {
    fn from(quirks: Quirks) -> Self {
        SessionConfig { quirks, ..Default::default() }
    }
}

impl From<&CardProfile> for SessionConfig {
    fn from(p: &CardProfile) -> Self {
        SessionConfig::from_profile(p)
    }
}

/// How to open a secure channel. `Default` lets the card decide everything it can.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct OpenOptions {
    /// Require this protocol (`02` or `03`); `None` takes what the card answers.
    pub scp: Option<u8>,
    /// The card's `i`. SCP02 needs it (it is not in the INITIALIZE UPDATE response): from here,
    /// else the Card Recognition Data, else the [`SessionConfig`], else `55`. For SCP03 only
    /// bit `01` (S16) is used here; the card's own `i` is authoritative.
    pub i: Option<u8>,
    /// SCP03 S16 mode (16-byte challenge, cryptograms and MACs).
    pub s16: bool,
    /// A fixed host challenge (8 bytes, 16 for S16), for replays and tests; else drawn from
    /// the session's [`HostRandom`].
    pub host_challenge: Option<Vec<u8>>,
    /// The security domain AID for the pseudo-random card challenge check; default: the AID
    /// selected last.
    pub sd_aid: Option<Aid>,
    /// Do not check a pseudo-random card challenge.
    pub skip_card_challenge_check: bool,
}

impl OpenOptions {
    pub fn new() -> Self {
        Self::default()
    }
    pub fn scp02(mut self, i: Option<u8>) -> Self {
        self.scp = Some(0x02);
        self.i = i.or(self.i);
        self
    }
    pub fn scp03(mut self, i: Option<u8>) -> Self {
        self.scp = Some(0x03);
        self.i = i.or(self.i);
        self
    }
    pub fn s16(mut self) -> Self {
        self.s16 = true;
        self
    }
    pub fn host_challenge(mut self, challenge: &[u8]) -> Self {
        self.host_challenge = Some(challenge.to_vec());
        self
    }
    pub fn sd_aid(mut self, aid: Aid) -> Self {
        self.sd_aid = Some(aid);
        self
    }
}

/// The result of SELECT.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Selected {
    /// The AID from the FCI (`84`), else the one selected.
    pub aid: Option<Aid>,
    pub fci: Option<Fci>,
    /// `9000`, or `6283` when the card is locked (GPCS 2.3 §11.9.3).
    pub sw: StatusWord,
}

/// Everything GET STATUS reports, by kind.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CardContent {
    /// The issuer security domain (absent when the channel's SD may not see it).
    pub isd: Option<RegistryEntry>,
    /// Supplementary security domains.
    pub domains: Vec<RegistryEntry>,
    /// Applications.
    pub apps: Vec<RegistryEntry>,
    /// Executable load files (with their modules when the card reports them).
    pub load_files: Vec<RegistryEntry>,
}

impl CardContent {
    /// Every entry: ISD, domains, applications, load files.
    pub fn entries(&self) -> impl Iterator<Item = &RegistryEntry> {
        self.isd.iter().chain(&self.domains).chain(&self.apps).chain(&self.load_files)
    }
    /// The entry with this AID (an application or SD before a load file of the same AID).
    pub fn find(&self, aid: &Aid) -> Option<&RegistryEntry> {
        self.entries().find(|e| &e.aid == aid)
    }
}

/// How [`GpSession::load_and_install`] loads and installs a CAP file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InstallOptions {
    /// Security domain to associate the load file with (INSTALL [for load]); `None` sends an
    /// empty field: the card uses the SD of the channel.
    pub sd: Option<Aid>,
    /// Load parameters (`EF` system parameters) of INSTALL [for load].
    pub load_params: InstallParams,
    /// Hash of the Load File Data Block in INSTALL [for load] (required by cards with DAP).
    pub hash: Option<HashAlgorithm>,
    /// Include the Descriptor component in the load file.
    pub include_descriptor: bool,
    /// LOAD block size (plain data bytes); `None`: the largest that fits.
    pub block_size: Option<usize>,
    /// The applet (module) to instantiate; `None`: every applet of the CAP.
    pub applet: Option<Aid>,
    /// Instance AID (only with one applet); default: the module AID.
    pub instance: Option<Aid>,
    pub privileges: Privileges,
    /// Install parameters; `C9 00` when nothing is given (GPCS 2.3 §11.5.2.3.7).
    pub params: InstallParams,
    /// INSTALL [for install and make selectable] (default) or [for install] only.
    pub make_selectable: bool,
}

impl Default for InstallOptions {
    fn default() -> Self {
        InstallOptions {
            sd: None,
            load_params: InstallParams::default(),
            hash: None,
            include_descriptor: false,
            block_size: None,
            applet: None,
            instance: None,
            privileges: Privileges::NONE,
            params: InstallParams::application_specific(&[]),
            make_selectable: true,
        }
    }
}

/// Load file of the GP security domain package (GPCS 2.3 §11.5.2.3: SSDs are instances of it).
pub const SSD_PACKAGE: Aid = Aid::from_array([0xA0, 0x00, 0x00, 0x01, 0x51, 0x53, 0x50]);
/// Its security domain module.
pub const SSD_MODULE: Aid = Aid::from_array([0xA0, 0x00, 0x00, 0x01, 0x51, 0x53, 0x50, 0x41]);

/// Status words that say a GET DATA object does not exist on this card.
const ABSENT: [StatusWord; 6] = [
    StatusWord::REFERENCED_DATA_NOT_FOUND,
    StatusWord::FILE_NOT_FOUND,
    StatusWord::INCORRECT_P1P2,
    StatusWord::FUNCTION_NOT_SUPPORTED,
    StatusWord::INS_NOT_SUPPORTED,
    StatusWord::WRONG_P1P2,
];

/// Status words of a card that does not know a GET STATUS scope.
const SCOPE_UNKNOWN: [StatusWord; 6] = [
    StatusWord::INCORRECT_P1P2,
    StatusWord::FUNCTION_NOT_SUPPORTED,
    StatusWord::INS_NOT_SUPPORTED,
    StatusWord::WRONG_P1P2,
    StatusWord::SECURITY_STATUS_NOT_SATISFIED,
    StatusWord::CONDITIONS_NOT_SATISFIED,
];

/// One card, one session. `S` is [`Open`] or [`Secure`].
pub struct GpSession<T: Transport, S: SessionState = Open> {
    transport: T,
    config: SessionConfig,
    random: Box<dyn HostRandom>,
    selected: Option<Aid>,
    fci: Option<Fci>,
    /// Card Recognition Data: `None` not read yet, `Some(None)` the card has none.
    crd: Option<Option<CardRecognitionData>>,
    state: S,
}

impl<T: Transport, S: SessionState + fmt::Debug> fmt::Debug for GpSession<T, S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("GpSession").field("selected", &self.selected).field("config", &self.config).field("state", &self.state).finish()
    }
}

// ---------------------------------------------------------------------------------------------
// Both states

impl<T: Transport, S: SessionState> GpSession<T, S> {
    fn with_state<S2: SessionState>(self, state: S2) -> GpSession<T, S2> {
        GpSession {
            transport: self.transport,
            config: self.config,
            random: self.random,
            selected: self.selected,
            fci: self.fci,
            crd: self.crd,
            state,
        }
    }

    pub fn config(&self) -> &SessionConfig {
        &self.config
    }
    /// The AID selected last (from its FCI when it had one).
    pub fn selected_aid(&self) -> Option<&Aid> {
        self.selected.as_ref()
    }
    /// The FCI of the last SELECT.
    pub fn fci(&self) -> Option<&Fci> {
        self.fci.as_ref()
    }
    pub fn transport(&self) -> &T {
        &self.transport
    }
    /// The transport. Commands sent directly bypass the secure channel.
    pub fn transport_mut(&mut self) -> &mut T {
        &mut self.transport
    }
    pub fn into_transport(self) -> T {
        self.transport
    }

    /// Sends one wire APDU and completes the response: `61xx` → GET RESPONSE (repeated, data
    /// concatenated), `6Cxx` → the same command again with Le = xx (once).
    fn exchange(&mut self, wire: &CommandApdu, command: &'static str) -> Result<ResponseApdu, SessionError> {
        let mut resp = self.raw(&wire.to_bytes(), command)?;
        if let FollowUp::Resend(le) = FollowUp::for_sw(resp.sw) {
            let mut again = wire.clone();
            again.le = Some(if le == 0 { 256 } else { le as usize });
            resp = self.raw(&again.to_bytes(), command)?;
        }
        let FollowUp::GetResponse(mut le) = FollowUp::for_sw(resp.sw) else {
            return Ok(resp);
        };
        let mut data = std::mem::take(&mut resp.data);
        // 256 rounds of up to 256 bytes: more than any extended response.
        for _ in 0..256 {
            let r = self.raw(&sw::get_response(wire.cla, le), "GET RESPONSE")?;
            data.extend_from_slice(&r.data);
            match FollowUp::for_sw(r.sw) {
                FollowUp::GetResponse(n) | FollowUp::Resend(n) => le = n,
                FollowUp::Done => return Ok(ResponseApdu::new(data, r.sw)),
            }
        }
        Err(SessionError::BadResponse { command, detail: "the card keeps answering 61xx to GET RESPONSE".into() })
    }

    fn raw(&mut self, apdu: &[u8], command: &'static str) -> Result<ResponseApdu, SessionError> {
        let bytes = self.transport.transmit(apdu)?;
        ResponseApdu::from_bytes(&bytes)
            .map_err(|_| SessionError::BadResponse { command, detail: format!("{} byte(s); a response has at least SW1 SW2", bytes.len()) })
    }

    /// Sends a plain command through the session: wrapped by the secure channel when there is
    /// one, `61xx`/`6Cxx` completed, the response unwrapped (R-MAC checked, R-ENC decrypted).
    /// The status word is returned as the card gave it.
    pub fn send(&mut self, cmd: &CommandApdu) -> Result<ResponseApdu, SessionError> {
        let name = crate::gp::name(cmd.ins);
        let wire = self.state.protect(cmd)?;
        let resp = self.exchange(&wire, name)?;
        self.state.unprotect(&resp)
    }

    /// [`send`](Self::send), requiring `9000`; returns the response data.
    fn command(&mut self, command: &'static str, cmd: &CommandApdu) -> Result<Vec<u8>, SessionError> {
        let resp = self.send(cmd)?;
        if resp.sw != StatusWord::SUCCESS {
            return Err(SessionError::card(command, resp.sw));
        }
        Ok(resp.data)
    }

    /// GET DATA (GP class) for `tag` (`9F7F`, `0066`, `00E0`, `00C1`, `00CF`, `FF21`, …): the
    /// response data.
    pub fn get_data(&mut self, tag: u16) -> Result<Vec<u8>, SessionError> {
        self.command("GET DATA", &GetData::new(tag).to_apdu())
    }

    /// GET DATA decoded; `None` when the card says it has no such object.
    fn get_data_object(&mut self, tag: u16) -> Result<Option<GpDataObject>, SessionError> {
        match self.get_data(tag) {
            Ok(d) => Ok(Some(GpDataObject::parse(&d)?)),
            Err(SessionError::CardStatus { sw, .. }) if ABSENT.contains(&sw) => Ok(None),
            Err(e) => Err(e),
        }
    }

    fn unexpected(tag: u16, o: &GpDataObject) -> SessionError {
        SessionError::BadResponse { command: "GET DATA", detail: format!("asked for {tag:04X}, the card answered {o}") }
    }

    /// Card Production Life Cycle data (`9F7F`).
    pub fn cplc(&mut self) -> Result<Option<Cplc>, SessionError> {
        match self.get_data_object(0x9F7F)? {
            None => Ok(None),
            Some(GpDataObject::Cplc(c)) => Ok(Some(c)),
            Some(o) => Err(Self::unexpected(0x9F7F, &o)),
        }
    }

    /// Card Recognition Data (`66`); read once and cached.
    pub fn card_recognition_data(&mut self) -> Result<Option<CardRecognitionData>, SessionError> {
        if let Some(c) = &self.crd {
            return Ok(c.clone());
        }
        let crd = match self.get_data_object(0x66)? {
            None => None,
            Some(GpDataObject::CardRecognition(c)) => Some(c),
            Some(o) => return Err(Self::unexpected(0x66, &o)),
        };
        self.crd = Some(crd.clone());
        Ok(crd)
    }

    /// Key Information Template (`E0`).
    pub fn key_information(&mut self) -> Result<Option<KeyInformation>, SessionError> {
        match self.get_data_object(0xE0)? {
            None => Ok(None),
            Some(GpDataObject::KeyInformation(k)) => Ok(Some(k)),
            Some(o) => Err(Self::unexpected(0xE0, &o)),
        }
    }

    /// Secure channel sequence counter (`C1`).
    pub fn sequence_counter(&mut self) -> Result<Option<u32>, SessionError> {
        match self.get_data_object(0xC1)? {
            None => Ok(None),
            Some(o @ GpDataObject::SequenceCounter(_)) => Ok(o.sequence_counter()),
            Some(o) => Err(Self::unexpected(0xC1, &o)),
        }
    }

    /// Key diversification data (`CF`).
    pub fn kdd(&mut self) -> Result<Option<Vec<u8>>, SessionError> {
        match self.get_data_object(0xCF)? {
            None => Ok(None),
            Some(GpDataObject::Kdd(k)) => Ok(Some(k)),
            Some(o) => Err(Self::unexpected(0xCF, &o)),
        }
    }

    /// Extended Card Resources (`FF21`): applications installed, free memory.
    pub fn extended_card_resources(&mut self) -> Result<Option<ExtendedCardResources>, SessionError> {
        match self.get_data_object(0xFF21)? {
            None => Ok(None),
            Some(GpDataObject::ExtendedCardResources(e)) => Ok(Some(e)),
            Some(o) => Err(Self::unexpected(0xFF21, &o)),
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Open

impl<T: Transport> GpSession<T, Open> {
    /// A session over `transport`. The host challenge source is `OsRandom` with the crate
    /// feature `os-random`, else none (see [`GpSession::with_random`]).
    pub fn new(transport: T, config: impl Into<SessionConfig>) -> Self {
        GpSession {
            transport,
            config: config.into(),
            random: random::default_random(),
            selected: None,
            fci: None,
            crd: None,
            state: Open,
        }
    }

    /// Uses `random` for host challenges.
    pub fn with_random(mut self, random: impl HostRandom + 'static) -> Self {
        self.random = Box::new(random);
        self
    }

    /// Sends a command as is (no secure channel), completing `61xx`/`6Cxx`.
    pub fn transmit(&mut self, cmd: &CommandApdu) -> Result<ResponseApdu, SessionError> {
        self.exchange(cmd, crate::gp::name(cmd.ins))
    }

    /// SELECT by AID (empty: the card's default application). `9000` and `6283` (card locked)
    /// select; anything else is an error.
    pub fn select(&mut self, aid: &[u8]) -> Result<Selected, SessionError> {
        let resp = self.transmit(&Select::by_name(aid).to_apdu())?;
        if resp.sw != StatusWord::SUCCESS && resp.sw != StatusWord::SELECTED_FILE_INVALIDATED {
            return Err(SessionError::card("SELECT", resp.sw));
        }
        let fci = Fci::parse(&resp.data).ok();
        let from_fci = fci.as_ref().and_then(|f| f.aid.as_deref()).and_then(|a| Aid::new(a).ok());
        let aid = from_fci.or_else(|| Aid::new(aid).ok());
        self.selected = aid;
        self.fci = fci.clone();
        Ok(Selected { aid, fci, sw: resp.sw })
    }

    /// Selects the issuer security domain: the configured ISD AID, then `A000000151000000`,
    /// then the legacy `A000000003000000`, then the default application (its AID from the FCI).
    pub fn select_isd(&mut self) -> Result<Aid, SessionError> {
        let mut candidates: Vec<Aid> = self.config.isd_aid.into_iter().collect();
        for a in [Aid::GP_ISD, Aid::CARD_MANAGER_LEGACY] {
            if !candidates.contains(&a) {
                candidates.push(a);
            }
        }
        let mut tried = Vec::new();
        let mut last = StatusWord::FILE_NOT_FOUND;
        for aid in candidates {
            match self.select(aid.as_bytes()) {
                Ok(s) => return Ok(s.aid.unwrap_or(aid)),
                Err(SessionError::CardStatus { sw, .. }) => {
                    tried.push(format!("{aid}: {sw}"));
                    last = sw;
                }
                Err(e) => return Err(e),
            }
        }
        match self.select(&[]) {
            Ok(Selected { aid: Some(aid), .. }) => Ok(aid),
            Ok(_) => {
                tried.push("default application: FCI without AID".into());
                Err(SessionError::NoIsd { tried: tried.join(", "), meaning: "no AID to use".into() })
            }
            Err(SessionError::CardStatus { sw, .. }) => {
                tried.push(format!("default application: {sw}"));
                Err(SessionError::NoIsd { tried: tried.join(", "), meaning: last.meaning() })
            }
            Err(e) => Err(e),
        }
    }

    /// Opens a secure channel with the selected security domain (see the module
    /// documentation). `level` `None` takes the protocol's default: C-MAC + C-DEC + R-MAC for
    /// SCP03 cards whose `i` offers R-MAC (C-MAC + C-DEC otherwise), C-MAC + C-DEC for SCP02.
    ///
    /// On failure the open session comes back with the error, so that the caller decides
    /// whether to try again; this method never retries EXTERNAL AUTHENTICATE.
    #[allow(clippy::result_large_err)]
    pub fn open_secure_channel(
        mut self,
        keys: impl Into<CardKeys>,
        level: Option<SecurityLevel>,
        options: &OpenOptions,
    ) -> Result<GpSession<T, Secure>, (Self, SessionError)> {
        match self.handshake(&keys.into(), level, options) {
            Ok(state) => Ok(self.with_state(state)),
            Err(e) => Err((self, e)),
        }
    }

    /// SCP options the card announces (Card Recognition Data) and the configuration knows.
    fn known_scps(&self) -> Vec<(u8, u8)> {
        let mut v: Vec<(u8, u8)> = Vec::new();
        if let Some(Some(crd)) = &self.crd {
            v.extend(crd.scps().iter().filter(|s| s.i <= 0xFF).map(|s| (s.id, s.i as u8)));
        }
        v.extend(self.config.scp.iter().map(|s| (s.id(), s.i())));
        v
    }

    fn handshake(&mut self, keys: &CardKeys, level: Option<SecurityLevel>, o: &OpenOptions) -> Result<Secure, SessionError> {
        if let Some(s) = o.scp
            && s != 0x02
            && s != 0x03
        {
            return Err(SessionError::InvalidArgument(format!("SCP{s:02X} is not supported (SCP02, SCP03)")));
        }
        // SCP02's i is not in the INITIALIZE UPDATE response: read the Card Recognition Data
        // first when nothing else tells it (once per session; cards without it answer 6A88).
        if o.i.is_none() && o.scp != Some(0x03) && self.config.scp.is_empty() && self.crd.is_none() {
            self.card_recognition_data()?;
        }
        let known = self.known_scps();
        let no_s16 = self.config.quirks.no_s16;
        let hinted_s16 = o.scp == Some(0x03) && o.i.is_some_and(|i| i & scp03::i_bits::S16 != 0);
        let scp03_known: Vec<u8> = known.iter().filter(|s| s.0 == 0x03).map(|s| s.1).collect();
        let only_s16 = o.i.is_none()
            && !scp03_known.is_empty()
            && scp03_known.iter().all(|i| i & scp03::i_bits::S16 != 0)
            && !known.iter().any(|s| s.0 == 0x02);
        let mut s16 = o.s16 || hinted_s16 || only_s16;
        if no_s16 && o.s16 {
            return Err(SessionError::InvalidArgument("S16 requested, but the card profile says the card has no S16 mode".into()));
        }
        s16 &= !no_s16;
        let host_challenge = match &o.host_challenge {
            Some(h) if h.len() == 8 || h.len() == 16 => h.clone(),
            Some(h) => return Err(SessionError::InvalidArgument(format!("host challenge of {} bytes; 8 or 16 (S16)", h.len()))),
            None => {
                let mut h = vec![0u8; if s16 { 16 } else { 8 }];
                self.random.fill(&mut h)?;
                h
            }
        };
        let kvn = keys.version();
        let iu = CommandApdu::new(CLA_GP, crate::gp::ins::INITIALIZE_UPDATE, kvn, 0x00).with_data(host_challenge.clone()).with_le(256);
        let resp = self.exchange(&iu, "INITIALIZE UPDATE")?;
        if resp.sw != StatusWord::SUCCESS {
            return Err(SessionError::card("INITIALIZE UPDATE", resp.sw));
        }
        let (Some(kdd), Some(&scp_id)) = (resp.data.get(..10), resp.data.get(11)) else {
            return Err(SessionError::BadResponse {
                command: "INITIALIZE UPDATE",
                detail: format!("{} data byte(s); at least 12 expected", resp.data.len()),
            });
        };
        if let Some(want) = o.scp
            && want != scp_id
        {
            return Err(ScpError::Unsupported(format!("the card answered INITIALIZE UPDATE for SCP{scp_id:02X}, SCP{want:02X} was asked")).into());
        }
        let static_keys = keys.resolve(scp_id, kdd)?;
        let sd_aid = if o.skip_card_challenge_check { None } else { o.sd_aid.or(self.selected) };
        let channel_options = self.config.quirks.channel_options();
        let mut kdd_arr = [0u8; 10];
        kdd_arr.copy_from_slice(kdd);
        match scp_id {
            0x02 => {
                let hc: [u8; 8] = host_challenge.as_slice().try_into().map_err(|_| {
                    SessionError::InvalidArgument("SCP02 uses an 8-byte host challenge; the card answered SCP02 to a 16-byte one".into())
                })?;
                let i = o.i.or_else(|| known.iter().find(|s| s.0 == 0x02).map(|s| s.1)).unwrap_or(0x55);
                let level = level.unwrap_or(SecurityLevel::C_DEC_C_MAC);
                let mut opts = scp02::Scp02Options::new(i);
                opts.channel = channel_options;
                opts.sd_aid = sd_aid.map(|a| a.to_vec());
                let (hs, _) = scp02::HostHandshake::new(static_keys, hc, opts);
                let auth = hs.on_init_update(&resp, level, Some(kvn))?;
                let iu = auth.init_update().clone();
                let ea = self.exchange(&auth.external_authenticate(), "EXTERNAL AUTHENTICATE")?;
                if ea.sw != StatusWord::SUCCESS {
                    return Err(SessionError::AuthenticationFailed { sw: ea.sw, meaning: ea.sw.meaning() });
                }
                let host = auth.on_external_authenticate(&ea)?;
                let info = ChannelInfo {
                    scp: host.scp(),
                    level,
                    key_version: iu.key_version,
                    kdd: kdd_arr,
                    sequence_counter: Some(iu.sequence_counter as u32),
                    sd_aid: self.selected,
                };
                Ok(Secure { channel: Box::new(host), info })
            }
            0x03 => {
                let card_i = resp.data.get(12).copied().unwrap_or(0);
                let level = level.unwrap_or(if card_i & scp03::i_bits::R_MAC != 0 {
                    SecurityLevel::C_DEC_C_MAC_R_MAC
                } else {
                    SecurityLevel::C_DEC_C_MAC
                });
                let (hs, _) = scp03::HostHandshake::new(static_keys, &host_challenge, channel_options)?;
                let expect = scp03::Expect { sd_aid: sd_aid.map(|a| a.to_vec()), key_version: kvn };
                let auth = hs.on_init_update(&resp, level, expect)?;
                let (key_version, sequence_counter) = (auth.key_version(), auth.sequence_counter());
                let ea = self.exchange(&auth.external_authenticate(), "EXTERNAL AUTHENTICATE")?;
                if ea.sw != StatusWord::SUCCESS {
                    return Err(SessionError::AuthenticationFailed { sw: ea.sw, meaning: ea.sw.meaning() });
                }
                let host = auth.on_external_authenticate(&ea)?;
                let info = ChannelInfo { scp: host.scp(), level, key_version, kdd: kdd_arr, sequence_counter, sd_aid: self.selected };
                Ok(Secure { channel: Box::new(host), info })
            }
            other => Err(ScpError::Unsupported(format!("the card answered INITIALIZE UPDATE for SCP{other:02X}; SCP02 and SCP03 are supported")).into()),
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Secure

impl<T: Transport> GpSession<T, Secure> {
    /// What the secure channel runs with.
    pub fn channel_info(&self) -> &ChannelInfo {
        &self.state.info
    }

    /// Ends the session on the host side (the card ends it at the next SELECT or reset).
    pub fn close(self) -> GpSession<T, Open> {
        self.with_state(Open)
    }

    /// The largest plain data field one command can carry at this level: `capacity` minus the
    /// C-MAC and, with C-DEC, the padding (ISO 9797-1 method 2 always adds at least one byte).
    fn max_plain_data(&self, capacity: usize) -> usize {
        let level = self.state.info.level;
        let (mac, block) = match self.state.info.scp {
            Scp::Scp02 { .. } => (8, 8),
            Scp::Scp03 { i } => (if i & scp03::i_bits::S16 != 0 { 16 } else { 8 }, 16),
        };
        match (level.c_mac(), level.c_dec()) {
            (false, _) => capacity,
            (true, false) => capacity - mac,
            (true, true) => (capacity - mac) / block * block - 1,
        }
    }

    /// The block size for LOAD and STORE DATA: `requested`, checked against what fits one
    /// APDU (extended length when the card takes it), or by default the largest short-APDU
    /// block, capped by the configured `max_block`.
    pub fn block_size(&self, requested: Option<usize>) -> Result<usize, SessionError> {
        let short = self.max_plain_data(255);
        let max = if self.config.extended_length { self.max_plain_data(65535) } else { short };
        match requested {
            Some(0) => Err(SessionError::InvalidArgument("block size of 0".into())),
            Some(n) if n > max => Err(SessionError::InvalidArgument(format!(
                "block size {n} does not fit one APDU at level {} (at most {max}{})",
                self.state.info.level,
                if self.config.extended_length { "" } else { " without extended length" }
            ))),
            Some(n) => Ok(n),
            None => Ok(self.config.max_block.map_or(short, |m| m.clamp(1, short))),
        }
    }

    /// GET STATUS of one scope, following `6310` continuations, with the pager's fallbacks
    /// (tagged → legacy format, load files and modules → load files). With the
    /// `legacy_get_status_only` quirk the legacy format is asked for directly.
    pub fn get_status(&mut self, scope: StatusScope) -> Result<Vec<RegistryEntry>, SessionError> {
        let mut cmd = GetStatus::new(scope);
        if self.config.quirks.legacy_get_status_only {
            cmd = cmd.legacy();
        }
        let mut pager = GetStatusPager::new(cmd);
        let mut next = pager.first().to_apdu();
        loop {
            let resp = self.send(&next)?;
            match pager.feed(&resp) {
                Ok(PagerStep::Next(c)) => next = c.to_apdu(),
                Ok(PagerStep::Done(entries)) => return Ok(entries),
                Err(GpError::CardStatus { command, sw, meaning }) => return Err(SessionError::CardStatus { command, sw, meaning }),
                Err(e) => return Err(e.into()),
            }
        }
    }

    /// The whole registry: ISD, security domains, applications, load files (with modules when
    /// the card reports them).
    pub fn list(&mut self) -> Result<CardContent, SessionError> {
        let isd = match self.get_status(StatusScope::ISD) {
            Ok(v) => v.into_iter().next(),
            // A supplementary SD may not see the ISD.
            Err(SessionError::CardStatus { sw, .. }) if SCOPE_UNKNOWN.contains(&sw) => None,
            Err(e) => return Err(e),
        };
        let (domains, apps) = self.get_status(StatusScope::APPLICATIONS)?.into_iter().partition(|e| {
            matches!(e.lifecycle, LifeCycle::SecurityDomain(_)) || e.privileges.is_some_and(Privileges::is_security_domain)
        });
        // The pager falls back to P1 = 20 (and to the legacy format) on cards without P1 = 10.
        let load_files = self.get_status(StatusScope::LOAD_FILES_AND_MODULES)?;
        Ok(CardContent { isd, domains, apps, load_files })
    }

    /// Sends one INSTALL command; returns the response data (usually `00` or empty).
    pub fn send_install(&mut self, install: &Install) -> Result<Vec<u8>, SessionError> {
        self.command("INSTALL", &install.to_apdu())
    }

    /// INSTALL [for load] of load file `elf` into security domain `sd` (`None`: empty field,
    /// the channel's SD), with the Load File Data Block `hash` (empty: none) and load
    /// parameters.
    pub fn install_for_load(&mut self, elf: Aid, sd: Option<Aid>, hash: &[u8], params: &InstallParams) -> Result<(), SessionError> {
        let mut install = Install::for_load(elf, sd);
        if let InstallBody::Load { hash: h, params: p, .. } = &mut install.body {
            *h = hash.to_vec();
            *p = params.clone();
        }
        self.send_install(&install).map(drop)
    }

    /// LOAD of a CAP file's load file (`C4` TLV) in blocks of `block_size` (see
    /// [`block_size`](Self::block_size)); `progress(done, total)` in bytes after each block.
    /// Follows INSTALL [for load].
    pub fn load(
        &mut self,
        cap: &CapFile,
        block_size: Option<usize>,
        include_descriptor: bool,
        progress: &mut dyn FnMut(usize, usize),
    ) -> Result<(), SessionError> {
        self.load_file(&cap.load_file_tlv(include_descriptor), block_size, progress)
    }

    /// LOAD of a load file as LOAD carries it (optional `E2` DAP blocks, then `C4`).
    pub fn load_file(&mut self, load_file: &[u8], block_size: Option<usize>, progress: &mut dyn FnMut(usize, usize)) -> Result<(), SessionError> {
        self.load_blocks(load_file, block_size, progress).map(drop)
    }

    /// The LOAD commands of a load file; returns the last block's response data.
    fn load_blocks(&mut self, load_file: &[u8], block_size: Option<usize>, progress: &mut dyn FnMut(usize, usize)) -> Result<Vec<u8>, SessionError> {
        let size = self.block_size(block_size)?;
        let blocks = split_load_file(load_file, size)?;
        let total = load_file.len();
        let mut done = 0;
        progress(0, total);
        for mut b in blocks {
            // Le only on the last block, the one that answers (a '00' or a receipt, GPCS 2.3
            // §11.6.3), as kaoh/globalplatform sends it: it keeps 239-byte blocks within a
            // short APDU at every level.
            if !b.last {
                b.framing.le = None;
            }
            let data = self.command("LOAD", &b.to_apdu())?;
            done += b.data.len();
            progress(done, total);
            if b.last {
                return Ok(data);
            }
        }
        Ok(Vec::new())
    }

    /// INSTALL [for install]: instance `app` of module `module` in load file `elf`.
    pub fn install(&mut self, elf: Aid, module: Aid, app: Aid, privileges: Privileges, params: &InstallParams) -> Result<(), SessionError> {
        self.send_install(&Install::for_install(elf, module, app, privileges, params.clone(), false)).map(drop)
    }

    /// INSTALL [for install and make selectable].
    pub fn install_and_make_selectable(
        &mut self,
        elf: Aid,
        module: Aid,
        app: Aid,
        privileges: Privileges,
        params: &InstallParams,
    ) -> Result<(), SessionError> {
        self.send_install(&Install::for_install(elf, module, app, privileges, params.clone(), true)).map(drop)
    }

    /// INSTALL [for make selectable].
    pub fn make_selectable(&mut self, app: Aid, privileges: Privileges) -> Result<(), SessionError> {
        self.send_install(&Install::for_make_selectable(app, privileges)).map(drop)
    }

    /// INSTALL [for personalization]: the following STORE DATA commands go to `app`.
    pub fn install_for_personalization(&mut self, app: Aid) -> Result<(), SessionError> {
        self.send_install(&Install::for_personalization(app)).map(drop)
    }

    /// INSTALL [for load], LOAD, then INSTALL [for install (and make selectable)] of each
    /// applet (or the one in `options.applet`). Returns the instance AIDs.
    pub fn load_and_install(
        &mut self,
        cap: &CapFile,
        options: &InstallOptions,
        progress: &mut dyn FnMut(usize, usize),
    ) -> Result<Vec<Aid>, SessionError> {
        let elf = Aid::new(cap.package_aid())?;
        let modules: Vec<Aid> = match options.applet {
            Some(a) => {
                if !cap.applets().iter().any(|x| x.aid == a.as_bytes()) {
                    return Err(SessionError::InvalidArgument(format!("the CAP file has no applet {a}")));
                }
                vec![a]
            }
            None => cap.applets().iter().map(|a| Aid::new(&a.aid)).collect::<Result<_, _>>()?,
        };
        if options.instance.is_some() && modules.len() != 1 {
            return Err(SessionError::InvalidArgument(format!(
                "an instance AID needs exactly one applet; the CAP file has {} (choose one)",
                modules.len()
            )));
        }
        self.block_size(options.block_size)?;
        let hash = options.hash.map(|alg| cap.load_file_hash(alg, options.include_descriptor)).unwrap_or_default();
        self.install_for_load(elf, options.sd, &hash, &options.load_params)?;
        self.load(cap, options.block_size, options.include_descriptor, progress)?;
        let mut installed = Vec::new();
        for module in modules {
            let app = options.instance.unwrap_or(module);
            let install = Install::for_install(elf, module, app, options.privileges, options.params.clone(), options.make_selectable);
            self.send_install(&install)?;
            installed.push(app);
        }
        Ok(installed)
    }

    /// DELETE of an application, security domain or load file (`related`: with its
    /// applications).
    pub fn delete(&mut self, aid: Aid, related: bool) -> Result<(), SessionError> {
        self.command("DELETE", &Delete::object(aid, related).to_apdu()).map(drop)
    }

    /// DELETE of a key set by version.
    pub fn delete_key(&mut self, version: u8) -> Result<(), SessionError> {
        self.command("DELETE", &Delete::key(None, Some(version)).to_apdu()).map(drop)
    }

    /// One key as PUT KEY carries it: encrypted with the channel's sensitive-data encryption
    /// (SCP02: 3DES-ECB under S-DEK; SCP03: AES-CBC under the static DEK), with its KCV.
    fn key_component(&self, key: &SecretKey) -> Result<PutKeyComponent, SessionError> {
        let block = match self.state.info.scp {
            Scp::Scp02 { .. } => 8,
            Scp::Scp03 { .. } => 16,
        };
        let mut clear = Zeroizing::new(key.expose().to_vec());
        // AES-192 under an AES DEK: pad to the block; the length byte tells the card where the
        // key ends (Amd D §7.2).
        while !clear.len().is_multiple_of(block) {
            clear.push(0);
        }
        let encrypted = self.state.channel.encrypt_sensitive(&clear)?;
        let kcv = key.kcv().to_vec();
        match key.alg() {
            a if a.is_des() => Ok(PutKeyComponent::des(encrypted, kcv)),
            a if a.is_aes() => Ok(PutKeyComponent::aes(key.expose().len() as u8, encrypted, kcv)),
            _ => Err(SessionError::InvalidArgument(format!("PUT KEY of {:?} keys is not supported", key.alg()))),
        }
    }

    /// PUT KEY of a whole ENC/MAC/DEK set (key identifiers 1 to 3): adds key version
    /// `new_keys.version`, or replaces `replace_version`. The card's answer must report that
    /// version and the KCVs of the keys sent, else [`SessionError::KeyCheckMismatch`].
    pub fn put_key(&mut self, new_keys: &KeySet, replace_version: Option<u8>) -> Result<PutKeyResponse, SessionError> {
        if !(1..=0x7F).contains(&new_keys.version) {
            return Err(SessionError::InvalidArgument(format!("key version {:02X} outside 01..7F", new_keys.version)));
        }
        if replace_version.is_some_and(|v| !(1..=0x7F).contains(&v)) {
            return Err(SessionError::InvalidArgument("the key version to replace must be 01..7F".into()));
        }
        let components = new_keys.keys().into_iter().map(|k| self.key_component(k)).collect::<Result<Vec<_>, _>>()?;
        let cmd = PutKey::new(replace_version.unwrap_or(0), 1, new_keys.version, components);
        let data = self.command("PUT KEY", &cmd.to_apdu())?;
        let got = PutKeyResponse::parse(&data)?;
        let expected = cmd.expected_response();
        if got != expected {
            let show = |r: &PutKeyResponse| {
                format!("version {:02X} KCVs {}", r.version, r.kcvs.iter().map(|k| crate::hex::encode(k)).collect::<Vec<_>>().join(" "))
            };
            return Err(SessionError::KeyCheckMismatch { expected: show(&expected), received: show(&got) });
        }
        Ok(got)
    }

    /// One STORE DATA command; returns the response data.
    pub fn store_data(&mut self, cmd: &StoreData) -> Result<Vec<u8>, SessionError> {
        self.command("STORE DATA", &cmd.to_apdu())
    }

    /// STORE DATA of `data` in numbered blocks (the last one flagged), after INSTALL [for
    /// personalization] or to the SD itself. DGI or TLV `data` is split at block boundaries,
    /// which GPCS 2.3 §11.11.2 allows.
    pub fn store_data_blocks(&mut self, structure: DataStructure, data: &[u8], block_size: Option<usize>) -> Result<(), SessionError> {
        let size = self.block_size(block_size)?;
        let chunks: Vec<&[u8]> = if data.is_empty() { vec![&[]] } else { data.chunks(size).collect() };
        if chunks.len() > 256 {
            return Err(SessionError::InvalidArgument(format!("{} bytes need {} STORE DATA blocks; P2 numbers 256", data.len(), chunks.len())));
        }
        let n = chunks.len();
        for (i, c) in chunks.into_iter().enumerate() {
            self.store_data(&StoreData::new(i as u8, i + 1 == n, structure, c.to_vec()))?;
        }
        Ok(())
    }

    /// SET STATUS.
    pub fn set_status(&mut self, cmd: &SetStatus) -> Result<(), SessionError> {
        self.command("SET STATUS", &cmd.to_apdu()).map(drop)
    }

    /// Locks an application or security domain (SET STATUS P1 `40`, P2 `80`).
    pub fn lock_app(&mut self, aid: Aid) -> Result<(), SessionError> {
        self.set_status(&SetStatus::application(aid, 0x80))
    }

    /// Unlocks it (P2 `00`: the card restores the state it had before locking).
    pub fn unlock_app(&mut self, aid: Aid) -> Result<(), SessionError> {
        self.set_status(&SetStatus::application(aid, 0x00))
    }

    /// Card life cycle CARD_LOCKED (needs the Card Lock privilege).
    pub fn lock_card(&mut self) -> Result<(), SessionError> {
        self.set_status(&SetStatus::card(CardLifeCycle::CARD_LOCKED))
    }

    /// Card life cycle back to SECURED.
    pub fn unlock_card(&mut self) -> Result<(), SessionError> {
        self.set_status(&SetStatus::card(CardLifeCycle::SECURED))
    }

    /// Creates a supplementary security domain `aid` from the GP SD package
    /// ([`SSD_PACKAGE`]/[`SSD_MODULE`]); the Security Domain privilege is added to
    /// `privileges`. `params` are its install parameters (`C9` SD parameters).
    pub fn create_ssd(&mut self, aid: Aid, privileges: Privileges, params: &InstallParams) -> Result<(), SessionError> {
        self.create_ssd_from(SSD_PACKAGE, SSD_MODULE, aid, privileges, params)
    }

    /// [`create_ssd`](Self::create_ssd) from another SD load file and module.
    pub fn create_ssd_from(&mut self, elf: Aid, module: Aid, aid: Aid, privileges: Privileges, params: &InstallParams) -> Result<(), SessionError> {
        let params = if params.is_empty() { InstallParams::application_specific(&[]) } else { params.clone() };
        self.install_and_make_selectable(elf, module, aid, privileges.with(Privilege::SecurityDomain), &params)
    }
}
