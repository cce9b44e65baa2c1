//! Card side of SCP02, for the simulated secure element.
//!
//! **Sequence counter.** The card derives the session keys from its current counter and
//! increments it once a secure channel session has been initiated (GPCS 2.3 App. E, "Secure
//! Channel Sequence Counter"): for explicit initiation that is a successful EXTERNAL
//! AUTHENTICATE, for implicit initiation the first command whose C-MAC verifies. This module
//! keeps no persistent state: the caller reads [`Scp02Card::next_sequence_counter`] once
//! [`Scp02Card::initiated`] is true and stores it. A failed EXTERNAL AUTHENTICATE leaves the
//! counter as it was; the caller counts such failures (and blocks the key set per its policy)
//! and answers with [`ScpError::card_status`].

use super::host::check_level;
use super::session::Session;
use super::{
    INS_EXTERNAL_AUTHENTICATE, INS_INITIALIZE_UPDATE, IParam, InitUpdateResponse, SCP02_ID, SessionKcvs, SessionKeys,
    card_cryptogram, host_cryptogram, mac_over_aid,
};
use crate::apdu::{CommandApdu, ResponseApdu};
use crate::crypto::{self, ct_eq};
use crate::scp::{CardChannel, Scp, ScpError, SecurityLevel, StaticKeys};
use crate::sw::StatusWord;
use zeroize::Zeroizing;

/// What the card contributes to explicit initiation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CardParams {
    /// The card's `i` parameter.
    pub i: u8,
    /// The current secure channel sequence counter (before this session).
    pub sequence_counter: u16,
    /// Key diversification data returned in the response.
    pub kdd: [u8; 10],
    /// AID of the security domain (for the pseudo-random card challenge and the MAC over AID).
    pub sd_aid: Vec<u8>,
    /// A card challenge from the caller's random source. `None` is allowed when `i` has b7
    /// (pseudo-random card challenge): the card then derives it. `Some` always wins, which
    /// lets a test replay a trace of a card that announced b7 but did not derive the challenge.
    pub random_challenge: Option<[u8; 6]>,
}

/// Answers INITIALIZE UPDATE. `lookup` receives P1 as sent (00 means "any key set": the
/// closure returns the default one) and returns the static keys whose `version` goes into the
/// response.
pub fn on_init_update(
    lookup: &dyn Fn(u8) -> Option<StaticKeys>,
    cmd: &CommandApdu,
    params: CardParams,
) -> Result<(ResponseApdu, CardPending), ScpError> {
    let i = IParam(params.i);
    i.validate()?;
    if !i.explicit() {
        return Err(ScpError::Unsupported(format!("{i} uses implicit initiation; INITIALIZE UPDATE is not part of it")));
    }
    if cmd.ins != INS_INITIALIZE_UPDATE {
        return Err(ScpError::BadCommand(format!("INS {:02X} is not INITIALIZE UPDATE", cmd.ins)));
    }
    let host_challenge: [u8; 8] = cmd.data.as_slice().try_into().map_err(|_| {
        ScpError::BadCommand(format!("INITIALIZE UPDATE carries {} data bytes, the host challenge is 8", cmd.data.len()))
    })?;
    let keys = lookup(cmd.p1).ok_or_else(|| ScpError::UnknownKeyVersion {
        requested: cmd.p1,
        available: "no key set with that version".into(),
    })?;
    let skeys = SessionKeys::derive(&keys, i, params.sequence_counter)?;
    let card_challenge = match (params.random_challenge, i.pseudo_random_challenge()) {
        (Some(c), _) => c,
        (None, true) => {
            if params.sd_aid.is_empty() {
                return Err(ScpError::Unsupported(format!("{i}: the pseudo-random card challenge needs the SD AID")));
            }
            let m = mac_over_aid(&skeys.s_mac, &params.sd_aid)?;
            let mut c = [0u8; 6];
            c.copy_from_slice(&m[..6]);
            c
        }
        (None, false) => {
            return Err(ScpError::Unsupported(format!("{i} has no pseudo-random card challenge; pass a random one")));
        }
    };
    let iu = InitUpdateResponse {
        kdd: params.kdd,
        key_version: keys.version,
        scp_id: SCP02_ID,
        sequence_counter: params.sequence_counter,
        card_cryptogram: card_cryptogram(&skeys.s_enc, &host_challenge, params.sequence_counter, &card_challenge)?,
        card_challenge,
    };
    let resp = ResponseApdu::new(crate::codec::Codec::to_bytes(&iu), StatusWord::SUCCESS);
    // The level is not known before EXTERNAL AUTHENTICATE; C-MAC verifies that command.
    let session = Session::new(skeys, i, SecurityLevel::C_MAC, params.sequence_counter, Some(&params.sd_aid))?;
    Ok((resp, CardPending { session, host_challenge, iu }))
}

/// INITIALIZE UPDATE answered; EXTERNAL AUTHENTICATE is awaited.
#[derive(Debug)]
pub struct CardPending {
    session: Session,
    host_challenge: [u8; 8],
    iu: InitUpdateResponse,
}

impl CardPending {
    pub fn init_update(&self) -> &InitUpdateResponse {
        &self.iu
    }
    pub fn kcvs(&self) -> SessionKcvs {
        self.session.keys.kcvs()
    }

    /// Checks the host cryptogram, then the C-MAC (ICV as `i` says), and opens the channel at
    /// the level in P1.
    pub fn on_external_authenticate(mut self, cmd: &CommandApdu) -> Result<(ResponseApdu, Scp02Card), ScpError> {
        if cmd.ins != INS_EXTERNAL_AUTHENTICATE {
            return Err(ScpError::BadCommand(format!("INS {:02X} is not EXTERNAL AUTHENTICATE", cmd.ins)));
        }
        if !cmd.is_secure_messaging() {
            return Err(ScpError::CMac { expected: "a C-MAC".into(), received: "class byte without secure messaging".into() });
        }
        if cmd.data.len() != 16 {
            return Err(ScpError::BadCommand(format!(
                "EXTERNAL AUTHENTICATE carries {} data bytes, expected 16 (host cryptogram, C-MAC)",
                cmd.data.len()
            )));
        }
        let level = SecurityLevel(cmd.p1);
        check_level(level, self.session.i)?;
        let iu = &self.iu;
        let expected =
            host_cryptogram(&self.session.keys.s_enc, &self.host_challenge, iu.sequence_counter, &iu.card_challenge)?;
        if !ct_eq(&expected, &cmd.data[..8]) {
            return Err(ScpError::HostCryptogram);
        }
        let opened = self.session.open(cmd, false)?;
        if !opened.verified() {
            return Err(opened.mac_error());
        }
        self.session.advance(opened.received)?;
        self.session.level = level;
        let card = Scp02Card { session: self.session, closed: false, initiated: true };
        Ok((ResponseApdu::status(StatusWord::SUCCESS), card))
    }
}

/// Implicit initiation on the card (`i` b3 = 0): the session exists from the selection of
/// the security domain and starts with the first command carrying a C-MAC, whose ICV is the
/// MAC over `sd_aid`. C-MAC level only.
pub fn implicit(keys: &StaticKeys, i: u8, sequence_counter: u16, sd_aid: &[u8]) -> Result<Scp02Card, ScpError> {
    let i = IParam(i);
    i.validate()?;
    if i.explicit() {
        return Err(ScpError::Unsupported(format!("{i} uses explicit initiation; use on_init_update")));
    }
    let skeys = SessionKeys::derive(keys, i, sequence_counter)?;
    let session = Session::new(skeys, i, SecurityLevel::C_MAC, sequence_counter, Some(sd_aid))?;
    Ok(Scp02Card { session, closed: false, initiated: false })
}

/// An SCP02 channel, card side. After a security error (C-MAC, padding, an unprotected command
/// while C-MAC is required) the session is closed and every further command is refused with
/// [`ScpError::Closed`] (GPCS 2.3 App. E: a verification failure terminates the session).
#[derive(Debug)]
pub struct Scp02Card {
    session: Session,
    closed: bool,
    initiated: bool,
}

impl Scp02Card {
    /// The counter the session keys were derived from.
    pub fn sequence_counter(&self) -> u16 {
        self.session.seq
    }
    /// True once the session counts as initiated (see the module documentation).
    pub fn initiated(&self) -> bool {
        self.initiated
    }
    /// The counter value to store once [`initiated`](Self::initiated); `None` when the counter
    /// is exhausted (the key set must then be replaced).
    pub fn next_sequence_counter(&self) -> Option<u16> {
        self.session.seq.checked_add(1)
    }
    pub fn is_closed(&self) -> bool {
        self.closed
    }
    pub fn kcvs(&self) -> SessionKcvs {
        self.session.keys.kcvs()
    }
    /// The session keys (for tests and diagnostics).
    pub fn session_keys(&self) -> &SessionKeys {
        &self.session.keys
    }

    fn fail(&mut self, e: ScpError) -> ScpError {
        self.closed = true;
        e
    }
}

impl CardChannel for Scp02Card {
    fn scp(&self) -> Scp {
        Scp::Scp02 { i: self.session.i.0 }
    }

    fn level(&self) -> SecurityLevel {
        self.session.level
    }

    /// Verifies the C-MAC and decrypts. Accepts C-DEC commands with an empty data field either
    /// unencrypted or as one encrypted padding block, with or without Le. At level 00 plain
    /// commands pass; a command with the secure messaging bit is still verified. Before an
    /// implicit session has started, plain commands pass too.
    fn unwrap_command(&mut self, cmd: &CommandApdu) -> Result<CommandApdu, ScpError> {
        if self.closed {
            return Err(ScpError::Closed);
        }
        if !cmd.is_secure_messaging() {
            // Before an implicit session starts, plain commands are simply not part of it.
            if self.session.level.c_mac() && self.initiated {
                return Err(self.fail(ScpError::CMac {
                    expected: "a C-MAC".into(),
                    received: format!("class byte {:02X} without secure messaging", cmd.cla),
                }));
            }
            return Ok(cmd.clone());
        }
        let opened = match self.session.open(cmd, self.session.level.c_dec()) {
            Ok(o) => o,
            Err(e @ ScpError::BadCommand(_)) => return Err(e),
            Err(e) => return Err(self.fail(e)),
        };
        if !opened.verified() {
            return Err(self.fail(opened.mac_error()));
        }
        self.session.advance(opened.received)?;
        self.initiated = true;
        Ok(opened.plain)
    }

    fn wrap_response(&mut self, resp: ResponseApdu) -> Result<ResponseApdu, ScpError> {
        Ok(resp)
    }

    /// 3DES-ECB decryption under the session DEK.
    fn decrypt_sensitive(&self, data: &[u8]) -> Result<Zeroizing<Vec<u8>>, ScpError> {
        Ok(Zeroizing::new(crypto::ecb_decrypt(&self.session.keys.s_dek, data)?))
    }
}
