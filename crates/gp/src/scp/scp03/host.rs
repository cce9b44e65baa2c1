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
        let host = Scp03Host::new(session, keys.version, ctx);
        Ok(PredictedSession { init_update, external_authenticate, host, info, host_cryptogram, sd_aid: sd_aid.to_vec() })
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
        Ok(self.pipelined().1)
    }

    /// EXTERNAL AUTHENTICATE and the channel that follows it, before the card has answered, so
    /// that commands can travel in the same batch as EXTERNAL AUTHENTICATE (the caller checks
    /// its `9000` with the other answers). With a random card challenge this makes a session two
    /// round trips: INITIALIZE UPDATE, then EXTERNAL AUTHENTICATE with everything else.
    pub fn pipelined(self) -> (CommandApdu, Scp03Host) {
        let host = Scp03Host::new(self.session, self.info.key_version, self.info.context());
        (self.ea, host)
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
    sd_aid: Vec<u8>,
}

/// The non-secret state of a [`PredictedSession`]: the prediction's inputs and its channel.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct PredictedSessionState {
    /// The counter the prediction expects the card to report.
    pub sequence_counter: u32,
    #[serde(with = "crate::hex::serde")]
    pub sd_aid: Vec<u8>,
    pub host: Scp03HostState,
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

    /// The non-secret state of the prediction and of its channel (see [`Scp03HostState`]).
    pub fn snapshot(&self) -> PredictedSessionState {
        PredictedSessionState {
            sequence_counter: self.info.sequence_counter.unwrap_or(0),
            sd_aid: self.sd_aid.clone(),
            host: self.host.snapshot(),
        }
    }

    /// Recomputes the prediction from `keys` and continues its channel where the snapshot
    /// stood. Fails with [`ScpError::CardChallenge`] when `keys` predict another card
    /// challenge than the snapshot recorded (not the keys it was made with).
    pub fn restore(keys: StaticKeys, state: &PredictedSessionState) -> Result<PredictedSession, ScpError> {
        let h = &state.host;
        let mut p = HostHandshake::predict(keys.clone(), &h.host_challenge, state.sequence_counter, &state.sd_aid, SecurityLevel(h.level), h.options)?;
        if p.info.card_challenge != h.card_challenge {
            return Err(ScpError::CardChallenge { expected: hex(&h.card_challenge), received: hex(&p.info.card_challenge) });
        }
        p.host = Scp03Host::restore(keys, h)?;
        Ok(p)
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
    /// What [`Scp03Host::snapshot`] needs to re-derive the session keys: the key version and
    /// host challenge ‖ card challenge.
    key_version: u8,
    challenges: Vec<u8>,
}

/// The non-secret state of an open SCP03 host channel: enough to continue the session in
/// another process given the same static keys, which re-derive the session keys from the
/// challenges. Holds no key material (challenges travel in clear, the chaining value is a MAC).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Scp03HostState {
    /// Version of the static key set the session was opened with (checked on restore when
    /// both are non-zero).
    pub key_version: u8,
    pub i: u8,
    /// Security level (EXTERNAL AUTHENTICATE P1).
    pub level: u8,
    #[serde(with = "crate::hex::serde")]
    pub host_challenge: Vec<u8>,
    #[serde(with = "crate::hex::serde")]
    pub card_challenge: Vec<u8>,
    pub options: ChannelOptions,
    /// Where the session stands: chaining value and encryption counter after the last command.
    pub position: ResponseContext,
}

impl Scp03Host {
    fn new(session: Session, key_version: u8, challenges: Vec<u8>) -> Self {
        let last = session.context();
        Scp03Host { session, last, key_version, challenges }
    }

    /// The session's non-secret state (see [`Scp03HostState`]).
    pub fn snapshot(&self) -> Scp03HostState {
        let n = self.challenges.len() / 2;
        Scp03HostState {
            key_version: self.key_version,
            i: self.session.i,
            level: self.session.level.0,
            host_challenge: self.challenges[..n].to_vec(),
            card_challenge: self.challenges[n..].to_vec(),
            options: self.session.options,
            position: self.session.context(),
        }
    }

    /// Continues a session from its [`snapshot`](Self::snapshot): re-derives the session keys
    /// from `keys` and the challenges. Wrong static keys are not detected here (nothing to check
    /// them against); the card will refuse the next C-MAC.
    pub fn restore(keys: StaticKeys, state: &Scp03HostState) -> Result<Scp03Host, ScpError> {
        let s16 = s16_of(&state.host_challenge)?;
        if state.card_challenge.len() != state.host_challenge.len() {
            return Err(ScpError::BadCommand(format!(
                "session state with a {}-byte host challenge and a {}-byte card challenge",
                state.host_challenge.len(),
                state.card_challenge.len()
            )));
        }
        if state.key_version != 0 && keys.version != 0 && state.key_version != keys.version {
            return Err(ScpError::UnknownKeyVersion {
                requested: state.key_version,
                available: format!("keys given have version {:02X}", keys.version),
            });
        }
        let level = SecurityLevel(state.level);
        check_level(level, state.i)?;
        let challenges = [state.host_challenge.as_slice(), &state.card_challenge].concat();
        let sk = SessionKeys::derive(&keys, &challenges)?;
        let mut session = new_session(sk, &keys, level, state.i, s16, state.options);
        session.chaining = state.position.chaining;
        session.counter = state.position.counter;
        Ok(Scp03Host::new(session, state.key_version, challenges))
    }

    /// Continues the session after the command whose context is `ctx`, as if the commands
    /// wrapped after it had never been: for a batch the card stopped processing early, those
    /// commands were never sent and the card's chain stands at `ctx`.
    pub fn rewind(&mut self, ctx: &ResponseContext) {
        self.session.chaining = ctx.chaining;
        self.session.counter = ctx.counter;
        self.last = *ctx;
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
