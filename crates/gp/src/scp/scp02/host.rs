//! Host side of SCP02: explicit initiation as a typestate (each state consumes itself into the
//! next), implicit initiation, and the open channel.

use super::session::Session;
use super::{
    INS_EXTERNAL_AUTHENTICATE, INS_INITIALIZE_UPDATE, IParam, InitUpdateResponse, Scp02Options, SessionKcvs, SessionKeys,
    card_cryptogram, hex, host_cryptogram, predict_card_challenge, refused,
};
use crate::apdu::{CLA_GP, CommandApdu, ResponseApdu};
use crate::crypto;
use crate::scp::{HostChannel, Scp, ScpError, SecurityLevel, StaticKeys};
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
        let host_cryptogram = host_cryptogram(&keys.s_enc, &self.host_challenge, iu.sequence_counter, &iu.card_challenge)?;
        let mut session = Session::new(keys, i, level, iu.sequence_counter, self.options.sd_aid.as_deref())?;
        // EXTERNAL AUTHENTICATE always carries a C-MAC and is never encrypted, whatever the level.
        let plain = CommandApdu::new(CLA_GP, INS_EXTERNAL_AUTHENTICATE, level.0, 0x00).with_data(host_cryptogram.to_vec());
        let external_authenticate = session.protect(&plain, &self.options.channel, false)?;
        Ok(HostAuthenticating { session, options: self.options, iu, host_challenge: self.host_challenge, host_cryptogram, external_authenticate })
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
        Ok(Scp02Host { session: self.session, options: self.options })
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
        let keys = SessionKeys::derive(&keys, i, sequence_counter)?;
        let session = Session::new(keys, i, level, sequence_counter, Some(sd_aid))?;
        Ok(Scp02Host { session, options })
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
