//! SCP03 host side: the handshake as a typestate, the predicted one-round-trip handshake, and
//! the open channel.

use super::session::{ResponseContext, Session, Wrap};
use super::{InitUpdateInfo, SessionKeys, check_level, i_bits, parse_init_update_response, verify_card};
use crate::apdu::{CLA_GP, CommandApdu, ResponseApdu};
use crate::crypto::SecretKey;
use crate::hex::encode as hex;
use crate::scp::{ChannelOptions, HostChannel, Scp, ScpError, SecurityLevel, StaticKeys};
use crate::sw::StatusWord;
use std::fmt;

const INS_INITIALIZE_UPDATE: u8 = 0x50;
const INS_EXTERNAL_AUTHENTICATE: u8 = 0x82;

/// What the host expects of the card's INITIALIZE UPDATE response beyond a valid cryptogram.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Expect {
    /// AID of the security domain: when set and the card announces i bit `10`, the card
    /// challenge must be the pseudo-random value KDF(ENC, 02, counter ‖ AID), else
    /// [`ScpError::CardChallenge`].
    pub sd_aid: Option<Vec<u8>>,
    /// Key version the card must use; 0 accepts any.
    pub key_version: u8,
}

impl Expect {
    /// No pseudo-random challenge check, any key version.
    pub fn any() -> Self {
        Expect::default()
    }
    /// Checks the pseudo-random card challenge against this SD AID.
    pub fn sd_aid(aid: &[u8]) -> Self {
        Expect { sd_aid: Some(aid.to_vec()), key_version: 0 }
    }
    pub fn with_key_version(mut self, version: u8) -> Self {
        self.key_version = version;
        self
    }
}

/// The INITIALIZE UPDATE command: `80 50 kvn 00 Lc host-challenge 00`.
fn init_update_command(keys: &StaticKeys, host_challenge: &[u8]) -> CommandApdu {
    CommandApdu::new(CLA_GP, INS_INITIALIZE_UPDATE, keys.version, 0x00).with_data(host_challenge).with_le(256)
}

fn s16_of(host_challenge: &[u8]) -> Result<bool, ScpError> {
    match host_challenge.len() {
        8 => Ok(false),
        16 => Ok(true),
        n => Err(ScpError::BadCommand(format!("host challenge of {n} bytes; SCP03 uses 8 (S8) or 16 (S16)"))),
    }
}

/// Builds EXTERNAL AUTHENTICATE (`84 82 level 00 Lc host-cryptogram C-MAC`, chaining value zero)
/// on `session`, leaving the session's chaining value at the EA's full C-MAC.
fn external_authenticate_command(session: &mut Session, host_cryptogram: &[u8]) -> Result<CommandApdu, ScpError> {
    let plain = CommandApdu::new(CLA_GP, INS_EXTERNAL_AUTHENTICATE, session.level.0, 0x00).with_data(host_cryptogram);
    session.wrap(&plain, Wrap::ExternalAuthenticate)
}

fn new_session(sk: SessionKeys, keys: &StaticKeys, level: SecurityLevel, info_i: u8, s16: bool, options: ChannelOptions) -> Session {
    Session { keys: sk, dek: keys.dek.clone(), chaining: [0; 16], counter: 0, level, s16, i: info_i, options }
}

/// Start of a host handshake: INITIALIZE UPDATE has been built, the response is awaited.
pub struct HostHandshake {
    keys: StaticKeys,
    host_challenge: Vec<u8>,
    options: ChannelOptions,
}

impl HostHandshake {
    /// Starts a handshake with a fresh host challenge (8 bytes for S8, 16 for S16) and returns
    /// the INITIALIZE UPDATE command for `keys.version` (0 = the card's default key set).
    pub fn new(keys: StaticKeys, host_challenge: &[u8], options: ChannelOptions) -> Result<(HostHandshake, CommandApdu), ScpError> {
        s16_of(host_challenge)?;
        super::check_keys(&keys)?;
        let cmd = init_update_command(&keys, host_challenge);
        Ok((HostHandshake { keys, host_challenge: host_challenge.to_vec(), options }, cmd))
    }

    /// Checks the card's INITIALIZE UPDATE response: status, layout, SCP id, S8/S16 mode,
    /// that `i` supports `level`, the key version, the card cryptogram (constant time) and, with
    /// `expected.sd_aid`, the pseudo-random card challenge.
    pub fn on_init_update(self, resp: &ResponseApdu, level: SecurityLevel, expected: Expect) -> Result<HostAuthenticating, ScpError> {
        level.validate()?;
        let mut info = parse_init_update_response(resp, &self.host_challenge)?;
        check_level(level, info.i)?;
        if expected.key_version != 0 && info.key_version != expected.key_version {
            return Err(ScpError::BadInitUpdateResponse(format!(
                "the card used key version {:02X}, {:02X} was expected",
                info.key_version, expected.key_version
            )));
        }
        let aid = expected.sd_aid.as_deref();
        if aid.is_some() && info.i & i_bits::PSEUDO_RANDOM_CHALLENGE != 0 && info.sequence_counter.is_none() {
            return Err(ScpError::BadInitUpdateResponse(format!(
                "i={:02X} announces a pseudo-random card challenge but the response has no sequence counter",
                info.i
            )));
        }
        let (sk, host_cryptogram) = verify_card(&self.keys, &mut info, aid)?;
        if info.pseudo_random_challenge_ok == Some(false) {
            let derived = super::pseudo_random_challenge(&*self.keys.enc, info.sequence_counter.unwrap_or(0), aid.unwrap_or(&[]), info.card_challenge.len())?;
            return Err(ScpError::CardChallenge { expected: hex(&derived), received: hex(&info.card_challenge) });
        }
        let mut session = new_session(sk, &self.keys, level, info.i, info.s16, self.options);
        let ea = external_authenticate_command(&mut session, &host_cryptogram)?;
        Ok(HostAuthenticating { session, info, host_cryptogram, ea })
    }

    /// Predicts a whole handshake for a card whose card challenge is pseudo-random (i bit `10`),
    /// so that INITIALIZE UPDATE, EXTERNAL AUTHENTICATE and the following wrapped commands can
    /// be sent in one batch before any answer is seen.
    ///
    /// `next_sequence_counter` is the value the card will *report* in its INITIALIZE UPDATE
    /// response, which is the one the challenge is derived from: the card increments its stored
    /// counter on INITIALIZE UPDATE and uses the incremented value (the kaoh traces carry both:
    /// counter `000015` in the response ↔ challenge derived from `000015`). If the host last saw
    /// counter `n` (in a response), pass `n + 1`.
    pub fn predict(
        keys: StaticKeys,
        host_challenge: &[u8],
        next_sequence_counter: u32,
        sd_aid: &[u8],
        level: SecurityLevel,
        options: ChannelOptions,
    ) -> Result<PredictedSession, ScpError> {
        level.validate()?;
        let s16 = s16_of(host_challenge)?;
        super::check_keys(&keys)?;
        if next_sequence_counter > super::MAX_SEQUENCE_COUNTER {
            return Err(ScpError::BadCommand(format!("sequence counter {next_sequence_counter:X} does not fit 3 bytes")));
        }
        let init_update = init_update_command(&keys, host_challenge);
        let len = host_challenge.len();
        let card_challenge = super::pseudo_random_challenge(&*keys.enc, next_sequence_counter, sd_aid, len)?;
        // The smallest i this prediction needs; the card's real i is checked by verify_init_update.
        let mut i = i_bits::PSEUDO_RANDOM_CHALLENGE | if s16 { i_bits::S16 } else { 0 };
        if level.r_mac() {
            i |= i_bits::R_MAC;
        }
        if level.r_enc() {
            i |= i_bits::R_ENC;
        }
        let mut info = InitUpdateInfo {
            kdd: [0; 10],
            key_version: keys.version,
            i,
            s16,
            host_challenge: host_challenge.to_vec(),
            card_challenge,
            card_cryptogram: Vec::new(),
            sequence_counter: Some(next_sequence_counter),
            pseudo_random_challenge_ok: Some(true),
        };
        let ctx = info.context();
        let sk = SessionKeys::derive(&keys, &ctx)?;
        info.card_cryptogram = sk.cryptogram(crate::crypto::kdf::constant::CARD_CRYPTOGRAM, &ctx, len)?;
        let host_cryptogram = sk.cryptogram(crate::crypto::kdf::constant::HOST_CRYPTOGRAM, &ctx, len)?;
        let mut session = new_session(sk, &keys, level, i, s16, options);
        let external_authenticate = external_authenticate_command(&mut session, &host_cryptogram)?;
        Ok(PredictedSession {
            init_update,
            external_authenticate,
            host: Scp03Host::new(session),
            info,
            host_cryptogram,
        })
    }
}

impl fmt::Debug for HostHandshake {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "HostHandshake({:?}, host challenge {})", self.keys, hex(&self.host_challenge))
    }
}

/// The card is authenticated; EXTERNAL AUTHENTICATE is ready and its answer awaited.
pub struct HostAuthenticating {
    session: Session,
    info: InitUpdateInfo,
    host_cryptogram: Vec<u8>,
    ea: CommandApdu,
}

impl HostAuthenticating {
    /// EXTERNAL AUTHENTICATE: `84 82 level 00 Lc host-cryptogram C-MAC`.
    pub fn external_authenticate(&self) -> CommandApdu {
        self.ea.clone()
    }

    /// Opens the channel when the card accepted EXTERNAL AUTHENTICATE (`9000`).
    pub fn on_external_authenticate(self, resp: &ResponseApdu) -> Result<Scp03Host, ScpError> {
        if resp.sw != StatusWord::SUCCESS {
            return Err(ScpError::CardRefused { command: "EXTERNAL AUTHENTICATE", sw: resp.sw, meaning: resp.sw.meaning() });
        }
        Ok(Scp03Host::new(self.session))
    }

    /// The parsed INITIALIZE UPDATE response and the challenges.
    pub fn info(&self) -> &InitUpdateInfo {
        &self.info
    }
    pub fn sequence_counter(&self) -> Option<u32> {
        self.info.sequence_counter
    }
    pub fn kdd(&self) -> &[u8; 10] {
        &self.info.kdd
    }
    pub fn key_version(&self) -> u8 {
        self.info.key_version
    }
    pub fn i(&self) -> u8 {
        self.info.i
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

impl fmt::Debug for HostAuthenticating {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HostAuthenticating").field("info", &self.info).field("level", &self.session.level).finish()
    }
}

/// A handshake computed in advance from the predictable card challenge (see
/// [`HostHandshake::predict`]).
pub struct PredictedSession {
    init_update: CommandApdu,
    external_authenticate: CommandApdu,
    host: Scp03Host,
    info: InitUpdateInfo,
    host_cryptogram: Vec<u8>,
}

impl PredictedSession {
    pub fn init_update(&self) -> &CommandApdu {
        &self.init_update
    }
    pub fn external_authenticate(&self) -> &CommandApdu {
        &self.external_authenticate
    }
    /// The host channel, already able to wrap the commands that follow EXTERNAL AUTHENTICATE.
    /// For R-MAC levels with several commands in flight, keep each command's
    /// [`Scp03Host::response_context`] and unwrap with [`Scp03Host::unwrap_with`].
    pub fn host(&mut self) -> &mut Scp03Host {
        &mut self.host
    }
    pub fn into_host(self) -> Scp03Host {
        self.host
    }
    /// The predicted challenges, card cryptogram and counter (KDD and the card's own `i` are
    /// unknown until the card answers).
    pub fn info(&self) -> &InitUpdateInfo {
        &self.info
    }
    pub fn host_cryptogram(&self) -> &[u8] {
        &self.host_cryptogram
    }

    /// Checks that the card's real INITIALIZE UPDATE response is the predicted one: same key
    /// version, an `i` with a pseudo-random challenge and support for the level, same card
    /// challenge, cryptogram and sequence counter. On a mismatch nothing sent after INITIALIZE
    /// UPDATE is valid and the caller must start over (normally with a fresh counter reading).
    pub fn verify_init_update(&self, resp: &ResponseApdu) -> Result<(), ScpError> {
        let got = parse_init_update_response(resp, &self.info.host_challenge)?;
        let p = &self.info;
        if p.key_version != 0 && got.key_version != p.key_version {
            return Err(ScpError::BadInitUpdateResponse(format!(
                "the card used key version {:02X}, the prediction used {:02X}",
                got.key_version, p.key_version
            )));
        }
        if got.i & i_bits::PSEUDO_RANDOM_CHALLENGE == 0 {
            return Err(ScpError::BadInitUpdateResponse(format!(
                "i={:02X}: the card challenge is random, it could not be predicted",
                got.i
            )));
        }
        check_level(self.host.level(), got.i)?;
        if got.sequence_counter != p.sequence_counter {
            let show = |c: Option<u32>| c.map_or_else(|| "none".to_string(), |c| format!("{c:06X}"));
            return Err(ScpError::BadInitUpdateResponse(format!(
                "the card reports sequence counter {}, the prediction used {}",
                show(got.sequence_counter),
                show(p.sequence_counter)
            )));
        }
        if got.card_challenge != p.card_challenge {
            return Err(ScpError::CardChallenge { expected: hex(&p.card_challenge), received: hex(&got.card_challenge) });
        }
        if !crate::crypto::ct_eq(&got.card_cryptogram, &p.card_cryptogram) {
            return Err(ScpError::CardCryptogram { expected: hex(&p.card_cryptogram), received: hex(&got.card_cryptogram) });
        }
        Ok(())
    }

    /// Checks the card's answer to the predicted EXTERNAL AUTHENTICATE.
    pub fn verify_external_authenticate(&self, resp: &ResponseApdu) -> Result<(), ScpError> {
        if resp.sw != StatusWord::SUCCESS {
            return Err(ScpError::CardRefused { command: "EXTERNAL AUTHENTICATE", sw: resp.sw, meaning: resp.sw.meaning() });
        }
        Ok(())
    }
}

impl fmt::Debug for PredictedSession {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PredictedSession").field("info", &self.info).field("host", &self.host).finish()
    }
}

/// An open SCP03 channel, host side.
pub struct Scp03Host {
    session: Session,
    /// Chaining value and counter of the last wrapped command, for its response.
    last: ResponseContext,
}

impl Scp03Host {
    fn new(session: Session) -> Self {
        let last = session.context();
        Scp03Host { session, last }
    }

    /// Chaining value and counter of the command wrapped last: with several commands in flight,
    /// take it after each `wrap` and unwrap each response with [`Scp03Host::unwrap_with`].
    pub fn response_context(&self) -> ResponseContext {
        self.last
    }

    /// Unwraps the response to the command whose context is `ctx`.
    pub fn unwrap_with(&self, ctx: &ResponseContext, resp: &ResponseApdu) -> Result<ResponseApdu, ScpError> {
        self.session.unwrap_response(ctx, resp)
    }

    /// The current MAC chaining value (full 16-byte CMAC of the last MACed command).
    pub fn mac_chaining_value(&self) -> [u8; 16] {
        self.session.chaining
    }
    /// The encryption counter of the last command (the first command after EXTERNAL
    /// AUTHENTICATE uses 1).
    pub fn encryption_counter(&self) -> u128 {
        self.session.counter
    }
    pub fn options(&self) -> ChannelOptions {
        self.session.options
    }
    /// KCVs of S-ENC, S-MAC, S-RMAC.
    pub fn session_key_kcvs(&self) -> [[u8; 3]; 3] {
        self.session.keys.kcvs()
    }
}

impl HostChannel for Scp03Host {
    fn scp(&self) -> Scp {
        Scp::Scp03 { i: self.session.i }
    }
    fn level(&self) -> SecurityLevel {
        self.session.level
    }
    fn wrap(&mut self, cmd: &CommandApdu) -> Result<CommandApdu, ScpError> {
        let wire = self.session.wrap(cmd, Wrap::Command)?;
        self.last = self.session.context();
        Ok(wire)
    }
    fn unwrap(&mut self, resp: &ResponseApdu) -> Result<ResponseApdu, ScpError> {
        self.session.unwrap_response(&self.last, resp)
    }
    fn encrypt_sensitive(&self, data: &[u8]) -> Result<Vec<u8>, ScpError> {
        self.session.encrypt_sensitive(data)
    }
}

impl fmt::Debug for Scp03Host {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Scp03Host(i={:02X}, level {:?}, counter {})", self.session.i, self.session.level, self.session.counter)
    }
}
