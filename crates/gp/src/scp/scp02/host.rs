//! Host side of SCP02: explicit initiation as a typestate (each state consumes itself into the
//! next), implicit initiation, and the open channel.

use super::session::Session;
use super::{
    INS_EXTERNAL_AUTHENTICATE, INS_INITIALIZE_UPDATE, IParam, InitUpdateResponse, Scp02Options, SessionKcvs, SessionKeys,
    card_cryptogram, hex, host_cryptogram, predict_card_challenge, refused,
};
use crate::apdu::{CLA_GP, CommandApdu, ResponseApdu};
use crate::crypto;
use crate::scp::{ChannelOptions, HostChannel, Scp, ScpError, SecurityLevel, StaticKeys};
use crate::sw::StatusWord;

/// Levels this implementation can run: no R-MAC, and SCP02 has no R-ENC.
pub(crate) fn check_level(level: SecurityLevel, i: IParam) -> Result<(), ScpError> {
    level.validate()?;
    if level.r_mac() || level.r_enc() {
        return Err(ScpError::UnsupportedLevel { level, scp: format!("SCP02 {i} (R-MAC not implemented)") });
    }
    Ok(())
}

/// Start of explicit initiation: the INITIALIZE UPDATE has been built, the response is awaited.
#[derive(Debug)]
pub struct HostHandshake {
    keys: StaticKeys,
    host_challenge: [u8; 8],
    options: Scp02Options,
}

impl HostHandshake {
    /// Builds `80 50 KVN 00 08 host_challenge 00` (P1 = `keys.version`, 00 meaning "any key
    /// set"). The host challenge comes from the caller (no randomness in this crate).
    pub fn new(keys: StaticKeys, host_challenge: [u8; 8], options: Scp02Options) -> (HostHandshake, CommandApdu) {
        let cmd = CommandApdu::new(CLA_GP, INS_INITIALIZE_UPDATE, keys.version, 0x00)
            .with_data(host_challenge.to_vec())
            .with_le(256);
        (HostHandshake { keys, host_challenge, options }, cmd)
    }

    pub fn host_challenge(&self) -> [u8; 8] {
        self.host_challenge
    }

    /// Checks the INITIALIZE UPDATE response, derives the session keys, verifies the card
    /// cryptogram (and the pseudo-random card challenge when `i` has b7 and the SD AID is
    /// known), and prepares EXTERNAL AUTHENTICATE for `level`. `expected_key_version`, when
    /// given and not 00, must be the KVN the card used.
    pub fn on_init_update(
        self,
        resp: &ResponseApdu,
        level: SecurityLevel,
        expected_key_version: Option<u8>,
    ) -> Result<HostAuthenticating, ScpError> {
        let i = IParam(self.options.i);
        i.validate()?;
        if !i.explicit() {
            return Err(ScpError::Unsupported(format!(
                "{i} uses implicit initiation (no INITIALIZE UPDATE); use Scp02Host::implicit"
            )));
        }
        check_level(level, i)?;
        if resp.sw != StatusWord::SUCCESS {
            return Err(refused("INITIALIZE UPDATE", resp.sw));
        }
        let iu = InitUpdateResponse::parse(&resp.data)?;
        if let Some(v) = expected_key_version
            && v != 0
            && v != iu.key_version
        {
            return Err(ScpError::UnknownKeyVersion { requested: v, available: format!("card used {:02X}", iu.key_version) });
        }
        let keys = SessionKeys::derive(&self.keys, i, iu.sequence_counter)?;
        let expected = card_cryptogram(&keys.s_enc, &self.host_challenge, iu.sequence_counter, &iu.card_challenge)?;
        if !crypto::ct_eq(&expected, &iu.card_cryptogram) {
            return Err(ScpError::CardCryptogram { expected: hex(&expected), received: hex(&iu.card_cryptogram) });
        }
        if let (true, Some(aid)) = (i.pseudo_random_challenge(), self.options.sd_aid.as_deref()) {
            let predicted = predict_card_challenge(&self.keys, i.0, iu.sequence_counter, aid)?;
            if predicted != iu.card_challenge {
                return Err(ScpError::CardChallenge { expected: hex(&predicted), received: hex(&iu.card_challenge) });
            }
        }
        let (session, host_cryptogram, external_authenticate) =
            authenticate(keys, &self.options, level, &self.host_challenge, iu.sequence_counter, &iu.card_challenge)?;
        Ok(HostAuthenticating { session, options: self.options, iu, host_challenge: self.host_challenge, host_cryptogram, external_authenticate })
    }

    /// Predicts a whole handshake for a card whose card challenge is pseudo-random (`i` b7),
    /// so that INITIALIZE UPDATE, EXTERNAL AUTHENTICATE and the commands after them can travel
    /// in one batch before the card answers.
    ///
    /// `sequence_counter` is the counter the card will use and report: its current one (GET
    /// DATA `C1`), which it increments only once the session is initiated (GPCS 2.3 App. E).
    /// `options.sd_aid` is required (the challenge is a MAC over it); `options.i` is the card's
    /// `i`, which an SCP02 INITIALIZE UPDATE response does not carry.
    pub fn predict(
        keys: StaticKeys,
        host_challenge: [u8; 8],
        sequence_counter: u16,
        level: SecurityLevel,
        options: Scp02Options,
    ) -> Result<PredictedSession, ScpError> {
        let i = IParam(options.i);
        i.validate()?;
        if !i.explicit() || !i.pseudo_random_challenge() {
            return Err(ScpError::Unsupported(format!("{i}: only explicit initiation with a pseudo-random card challenge can be predicted")));
        }
        check_level(level, i)?;
        let aid = options.sd_aid.clone().filter(|a| !a.is_empty()).ok_or_else(|| {
            ScpError::Unsupported(format!("{i}: predicting the card challenge needs the security domain AID"))
        })?;
        let card_challenge = predict_card_challenge(&keys, i.0, sequence_counter, &aid)?;
        let skeys = SessionKeys::derive(&keys, i, sequence_counter)?;
        let card_cryptogram = card_cryptogram(&skeys.s_enc, &host_challenge, sequence_counter, &card_challenge)?;
        let init_update = HostHandshake::new(keys.clone(), host_challenge, options.clone()).1;
        let (session, _, external_authenticate) = authenticate(skeys, &options, level, &host_challenge, sequence_counter, &card_challenge)?;
        let expected = InitUpdateResponse {
            kdd: [0; 10],
            key_version: keys.version,
            scp_id: super::SCP02_ID,
            sequence_counter,
            card_challenge,
            card_cryptogram,
        };
        let host = Scp02Host { session, options, key_version: keys.version };
        Ok(PredictedSession { init_update, external_authenticate, host, expected, host_challenge })
    }
}

/// Derives the host cryptogram and builds EXTERNAL AUTHENTICATE on a new session whose keys are
/// `keys`; returns the session with its chain after EXTERNAL AUTHENTICATE.
fn authenticate(
    keys: SessionKeys,
    options: &Scp02Options,
    level: SecurityLevel,
    host_challenge: &[u8; 8],
    seq: u16,
    card_challenge: &[u8; 6],
) -> Result<(Session, [u8; 8], CommandApdu), ScpError> {
    let host_cryptogram = host_cryptogram(&keys.s_enc, host_challenge, seq, card_challenge)?;
    let mut session = Session::new(keys, IParam(options.i), level, seq, options.sd_aid.as_deref())?;
    // EXTERNAL AUTHENTICATE always carries a C-MAC and is never encrypted, whatever the level.
    let plain = CommandApdu::new(CLA_GP, INS_EXTERNAL_AUTHENTICATE, level.0, 0x00).with_data(host_cryptogram.to_vec());
    let external_authenticate = session.protect(&plain, &options.channel, false)?;
    Ok((session, host_cryptogram, external_authenticate))
}

/// A handshake computed in advance from the pseudo-random card challenge (see
/// [`HostHandshake::predict`]).
#[derive(Debug)]
pub struct PredictedSession {
    init_update: CommandApdu,
    external_authenticate: CommandApdu,
    host: Scp02Host,
    /// The response the card should give (KDD unknown: not compared).
    expected: InitUpdateResponse,
    host_challenge: [u8; 8],
}

/// The non-secret state of an SCP02 [`PredictedSession`]: the host challenge and the channel
/// (whose counter, `i`, level and SD AID are the prediction's other inputs).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct PredictedSessionState {
    #[serde(with = "crate::scp::hex_array")]
    pub host_challenge: [u8; 8],
    pub host: Scp02HostState,
}

impl PredictedSession {
    pub fn init_update(&self) -> &CommandApdu {
        &self.init_update
    }
    pub fn external_authenticate(&self) -> &CommandApdu {
        &self.external_authenticate
    }
    /// The channel, already able to wrap the commands that follow EXTERNAL AUTHENTICATE.
    pub fn host(&mut self) -> &mut Scp02Host {
        &mut self.host
    }
    pub fn into_host(self) -> Scp02Host {
        self.host
    }
    /// The INITIALIZE UPDATE response the card should give (its KDD is not predicted).
    pub fn expected(&self) -> &InitUpdateResponse {
        &self.expected
    }

    /// Checks that the card's INITIALIZE UPDATE response is the predicted one: status, key
    /// version (when the keys named one), sequence counter, card challenge and cryptogram. On a
    /// mismatch nothing sent after INITIALIZE UPDATE is valid.
    pub fn verify_init_update(&self, resp: &ResponseApdu) -> Result<(), ScpError> {
        if resp.sw != StatusWord::SUCCESS {
            return Err(refused("INITIALIZE UPDATE", resp.sw));
        }
        let got = InitUpdateResponse::parse(&resp.data)?;
        let p = &self.expected;
        if p.key_version != 0 && got.key_version != p.key_version {
            return Err(ScpError::BadInitUpdateResponse(format!(
                "the card used key version {:02X}, the prediction used {:02X}",
                got.key_version, p.key_version
            )));
        }
        if got.sequence_counter != p.sequence_counter {
            return Err(ScpError::BadInitUpdateResponse(format!(
                "the card reports sequence counter {:04X}, the prediction used {:04X}",
                got.sequence_counter, p.sequence_counter
            )));
        }
        if got.card_challenge != p.card_challenge {
            return Err(ScpError::CardChallenge { expected: hex(&p.card_challenge), received: hex(&got.card_challenge) });
        }
        if !crypto::ct_eq(&got.card_cryptogram, &p.card_cryptogram) {
            return Err(ScpError::CardCryptogram { expected: hex(&p.card_cryptogram), received: hex(&got.card_cryptogram) });
        }
        Ok(())
    }

    /// Checks the card's answer to the predicted EXTERNAL AUTHENTICATE.
    pub fn verify_external_authenticate(&self, resp: &ResponseApdu) -> Result<(), ScpError> {
        if resp.sw != StatusWord::SUCCESS {
            return Err(refused("EXTERNAL AUTHENTICATE", resp.sw));
        }
        Ok(())
    }

    pub fn snapshot(&self) -> PredictedSessionState {
        PredictedSessionState { host_challenge: self.host_challenge, host: self.host.snapshot() }
    }

    /// Recomputes the prediction from `keys` and continues its channel where the snapshot
    /// stood.
    pub fn restore(keys: StaticKeys, state: &PredictedSessionState) -> Result<PredictedSession, ScpError> {
        let h = &state.host;
        let mut p = HostHandshake::predict(keys.clone(), state.host_challenge, h.sequence_counter, SecurityLevel(h.level), h.options())?;
        p.host = Scp02Host::restore(keys, h)?;
        Ok(p)
    }
}

/// The card cryptogram verified; EXTERNAL AUTHENTICATE is ready to send.
#[derive(Debug)]
pub struct HostAuthenticating {
    session: Session,
    options: Scp02Options,
    iu: InitUpdateResponse,
    host_challenge: [u8; 8],
    host_cryptogram: [u8; 8],
    external_authenticate: CommandApdu,
}

impl HostAuthenticating {
    /// `84 82 level 00 10 host_cryptogram C-MAC`.
    pub fn external_authenticate(&self) -> CommandApdu {
        self.external_authenticate.clone()
    }

    pub fn on_external_authenticate(self, resp: &ResponseApdu) -> Result<Scp02Host, ScpError> {
        if resp.sw != StatusWord::SUCCESS {
            return Err(refused("EXTERNAL AUTHENTICATE", resp.sw));
        }
        Ok(self.pipelined().1)
    }

    /// EXTERNAL AUTHENTICATE and the channel that follows it, before the card has answered, so
    /// that commands can travel in the same batch (the caller checks its `9000`).
    pub fn pipelined(self) -> (CommandApdu, Scp02Host) {
        let key_version = self.iu.key_version;
        (self.external_authenticate, Scp02Host { session: self.session, options: self.options, key_version })
    }

    /// The parsed INITIALIZE UPDATE response.
    pub fn init_update(&self) -> &InitUpdateResponse {
        &self.iu
    }
    pub fn host_challenge(&self) -> [u8; 8] {
        self.host_challenge
    }
    pub fn host_cryptogram(&self) -> [u8; 8] {
        self.host_cryptogram
    }
    pub fn kcvs(&self) -> SessionKcvs {
        self.session.keys.kcvs()
    }
    /// The session keys (for tests and diagnostics).
    pub fn session_keys(&self) -> &SessionKeys {
        &self.session.keys
    }
}

/// An open SCP02 channel, host side.
#[derive(Debug)]
pub struct Scp02Host {
    session: Session,
    options: Scp02Options,
    key_version: u8,
}

/// The non-secret state of an open SCP02 host channel: the session keys derive from the static
/// keys and the sequence counter, and the C-MAC chain continues from the last C-MAC (sent in
/// clear). Holds no key material, nor the encrypted ICV.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Scp02HostState {
    /// Version of the static key set (checked on restore when both are non-zero).
    pub key_version: u8,
    pub i: u8,
    /// Security level (EXTERNAL AUTHENTICATE P1).
    pub level: u8,
    pub sequence_counter: u16,
    /// AID of the security domain (empty when not known).
    #[serde(with = "crate::hex::serde")]
    pub sd_aid: Vec<u8>,
    pub channel: ChannelOptions,
    /// The last C-MAC of the chain (`None` at its start).
    #[serde(default, skip_serializing_if = "Option::is_none", with = "opt_mac")]
    pub last_mac: Option<[u8; 8]>,
}

impl Scp02HostState {
    fn options(&self) -> Scp02Options {
        Scp02Options { i: self.i, channel: self.channel, sd_aid: (!self.sd_aid.is_empty()).then(|| self.sd_aid.clone()) }
    }
}

mod opt_mac {
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(mac: &Option<[u8; 8]>, s: S) -> Result<S::Ok, S::Error> {
        match mac {
            Some(m) => crate::scp::hex_array::serialize(m, s),
            None => s.serialize_none(),
        }
    }
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<[u8; 8]>, D::Error> {
        let Some(s) = Option::<String>::deserialize(d)? else { return Ok(None) };
        let v = crate::hex::decode(&s).map_err(serde::de::Error::custom)?;
        let mac = v.as_slice().try_into().map_err(|_| serde::de::Error::custom(format!("C-MAC of {} bytes, expected 8", v.len())))?;
        Ok(Some(mac))
    }
}

impl Scp02Host {
    /// Implicit initiation (`i` b3 = 0): no INITIALIZE UPDATE. The host knows the sequence
    /// counter (GET DATA tag `C1`) and the AID of the selected security domain; the first
    /// C-MAC's ICV is the MAC over that AID. GPCS 2.3 App. E: an implicitly opened session runs
    /// at C-MAC (there is no EXTERNAL AUTHENTICATE to ask for more), so `level` must be 01.
    pub fn implicit(
        keys: StaticKeys,
        sequence_counter: u16,
        sd_aid: &[u8],
        level: SecurityLevel,
        options: Scp02Options,
    ) -> Result<Scp02Host, ScpError> {
        let i = IParam(options.i);
        i.validate()?;
        if i.explicit() {
            return Err(ScpError::Unsupported(format!("{i} uses explicit initiation; use HostHandshake")));
        }
        check_level(level, i)?;
        if level != SecurityLevel::C_MAC {
            return Err(ScpError::UnsupportedLevel { level, scp: format!("SCP02 {i} with implicit initiation (C-MAC only)") });
        }
        let key_version = keys.version;
        let keys = SessionKeys::derive(&keys, i, sequence_counter)?;
        let session = Session::new(keys, i, level, sequence_counter, Some(sd_aid))?;
        Ok(Scp02Host { session, options, key_version })
    }

    /// The session's non-secret state (see [`Scp02HostState`]).
    pub fn snapshot(&self) -> Scp02HostState {
        Scp02HostState {
            key_version: self.key_version,
            i: self.session.i.0,
            level: self.session.level.0,
            sequence_counter: self.session.seq,
            sd_aid: self.options.sd_aid.clone().unwrap_or_default(),
            channel: self.options.channel,
            last_mac: self.session.last_mac,
        }
    }

    /// Continues a session from its [`snapshot`](Self::snapshot), re-deriving the session keys
    /// from `keys`. Wrong static keys are not detected here; the card refuses the next C-MAC.
    pub fn restore(keys: StaticKeys, state: &Scp02HostState) -> Result<Scp02Host, ScpError> {
        if state.key_version != 0 && keys.version != 0 && state.key_version != keys.version {
            return Err(ScpError::UnknownKeyVersion {
                requested: state.key_version,
                available: format!("keys given have version {:02X}", keys.version),
            });
        }
        let options = state.options();
        let i = IParam(options.i);
        i.validate()?;
        let level = SecurityLevel(state.level);
        check_level(level, i)?;
        let skeys = SessionKeys::derive(&keys, i, state.sequence_counter)?;
        let mut session = Session::new(skeys, i, level, state.sequence_counter, options.sd_aid.as_deref())?;
        if let Some(mac) = state.last_mac {
            session.advance(mac)?;
        }
        Ok(Scp02Host { session, options, key_version: state.key_version })
    }

    /// The C-MAC of the command wrapped last (`None` before the first C-MAC).
    pub fn last_mac(&self) -> Option<[u8; 8]> {
        self.session.last_mac
    }

    /// Continues the chain after the command that carried C-MAC `mac`, as if the commands
    /// wrapped after it had never been (they were not sent: the card stopped the batch early).
    pub fn rewind(&mut self, mac: [u8; 8]) -> Result<(), ScpError> {
        self.session.advance(mac)
    }

    pub fn sequence_counter(&self) -> u16 {
        self.session.seq
    }
    pub fn kcvs(&self) -> SessionKcvs {
        self.session.keys.kcvs()
    }
    /// The session keys (for tests and diagnostics).
    pub fn session_keys(&self) -> &SessionKeys {
        &self.session.keys
    }
}

impl HostChannel for Scp02Host {
    fn scp(&self) -> Scp {
        Scp::Scp02 { i: self.session.i.0 }
    }

    fn level(&self) -> SecurityLevel {
        self.session.level
    }

    /// The chain does not depend on responses: it continues across error status words (the
    /// GlobalPlatformPro issue #80 trace shows a card doing so).
    fn wrap(&mut self, cmd: &CommandApdu) -> Result<CommandApdu, ScpError> {
        if !self.session.level.c_mac() {
            return Ok(cmd.clone());
        }
        let encrypt = self.session.level.c_dec();
        self.session.protect(cmd, &self.options.channel, encrypt)
    }

    fn unwrap(&mut self, resp: &ResponseApdu) -> Result<ResponseApdu, ScpError> {
        Ok(resp.clone())
    }

    /// 3DES-ECB under the session DEK (GPCS 2.3 App. E, "sensitive data encryption").
    fn encrypt_sensitive(&self, data: &[u8]) -> Result<Vec<u8>, ScpError> {
        Ok(crypto::ecb_encrypt(&self.session.keys.s_dek, data)?)
    }
}
