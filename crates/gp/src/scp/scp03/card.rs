//! SCP03 card side, for the simulated secure element: answers INITIALIZE UPDATE, checks
//! EXTERNAL AUTHENTICATE, then unwraps commands and protects responses.
//!
//! The card never decides for its caller: errors come back as [`ScpError`] whose
//! [`ScpError::card_status`] is the status word to answer with; counting failed EXTERNAL
//! AUTHENTICATE attempts and persisting the sequence counter are the caller's job.

use super::session::{Session, missing_cmac};
use super::{SessionKeys, check_i, check_level, challenge_len, i_bits, pseudo_random_challenge};
use crate::apdu::{CommandApdu, ResponseApdu};
use crate::crypto::kdf::constant;
use crate::crypto::{SecretKey, cbc_decrypt, ct_eq};
use crate::hex::encode as hex;
use crate::scp::{CardChannel, Scp, ScpError, SecurityLevel, StaticKeys};
use crate::sw::StatusWord;
use std::fmt;
use zeroize::Zeroizing;

const INS_INITIALIZE_UPDATE: u8 = 0x50;
const INS_EXTERNAL_AUTHENTICATE: u8 = 0x82;

/// The security domain's SCP03 configuration and state for one INITIALIZE UPDATE.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct CardParams {
    /// The `i` parameter the card announces (`70`, `71`, `10`, ...).
    pub i: u8,
    /// The counter as stored *before* this INITIALIZE UPDATE (3 bytes). With i bit `10` the card
    /// increments it, derives the card challenge from the new value and reports that value in the
    /// response; [`CardPending::sequence_counter`] gives it back for the caller to persist.
    pub sequence_counter: u32,
    /// Key diversification data, first 10 bytes of the response.
    pub kdd: [u8; 10],
    /// AID of the security domain (context of the pseudo-random challenge).
    pub sd_aid: Vec<u8>,
    /// The card challenge to use when i lacks bit `10` (the core has no randomness source); when
    /// set it also overrides the derived challenge (cards that do not derive it, test replays).
    /// S8 uses the first 8 bytes.
    pub random_challenge: Option<[u8; 16]>,
    /// S16 mode; must agree with i bit `01`.
    pub s16: bool,
}

/// Answers INITIALIZE UPDATE with a single key set. Key version 00 in P1 means "the default",
/// any other version must be `keys.version`, else [`ScpError::UnknownKeyVersion`].
pub fn on_init_update(keys: &StaticKeys, cmd: &CommandApdu, params: CardParams) -> Result<(ResponseApdu, CardPending), ScpError> {
    let lookup = |v: u8| (v == 0 || v == keys.version).then(|| keys.clone());
    init_update(&lookup, &format!("{:02X}", keys.version), cmd, params)
}

/// Answers INITIALIZE UPDATE choosing the key set with `lookup(P1)`: the card decides which set
/// P1 = 00 ("any") selects. `lookup` returns `None` for versions it does not hold.
pub fn on_init_update_with(lookup: &dyn Fn(u8) -> Option<StaticKeys>, cmd: &CommandApdu, params: CardParams) -> Result<(ResponseApdu, CardPending), ScpError> {
    init_update(lookup, "other versions", cmd, params)
}

fn init_update(lookup: &dyn Fn(u8) -> Option<StaticKeys>, available: &str, cmd: &CommandApdu, params: CardParams) -> Result<(ResponseApdu, CardPending), ScpError> {
    if cmd.ins != INS_INITIALIZE_UPDATE {
        return Err(ScpError::BadCommand(format!("expected INITIALIZE UPDATE (INS 50), got INS {:02X}", cmd.ins)));
    }
    check_i(params.i)?;
    if (params.i & i_bits::S16 != 0) != params.s16 {
        return Err(ScpError::Unsupported(format!("card configuration: i={:02X} and s16={} disagree", params.i, params.s16)));
    }
    let len = challenge_len(params.s16);
    if cmd.data.len() != len {
        return Err(ScpError::BadCommand(format!(
            "host challenge of {} bytes; this card runs SCP03 {} with {len}-byte challenges",
            cmd.data.len(),
            if params.s16 { "S16" } else { "S8" }
        )));
    }
    let keys = lookup(cmd.p1).ok_or_else(|| ScpError::UnknownKeyVersion { requested: cmd.p1, available: available.to_string() })?;
    super::check_keys(&keys)?;
    let pseudo = params.i & i_bits::PSEUDO_RANDOM_CHALLENGE != 0;
    let sequence_counter = if pseudo {
        if params.sequence_counter >= super::MAX_SEQUENCE_COUNTER {
            // Amd D §6.2.2.1: the counter must never wrap; the key set has to be replaced.
            return Err(ScpError::Unsupported("sequence counter exhausted; load new keys".into()));
        }
        Some(params.sequence_counter + 1)
    } else {
        None
    };
    let card_challenge = match (params.random_challenge, sequence_counter) {
        (Some(r), _) => r[..len].to_vec(),
        (None, Some(seq)) => pseudo_random_challenge(&*keys.enc, seq, &params.sd_aid, len)?,
        (None, None) => {
            return Err(ScpError::Unsupported(format!("i={:02X} needs a random card challenge from the caller", params.i)));
        }
    };
    let host_challenge = cmd.data.clone();
    let ctx = [host_challenge.as_slice(), &card_challenge].concat();
    let sk = SessionKeys::derive(&keys, &ctx)?;
    let card_cryptogram = sk.cryptogram(constant::CARD_CRYPTOGRAM, &ctx, len)?;
    let host_cryptogram = sk.cryptogram(constant::HOST_CRYPTOGRAM, &ctx, len)?;
    let mut data = params.kdd.to_vec();
    data.extend_from_slice(&[keys.version, 0x03, params.i]);
    data.extend_from_slice(&card_challenge);
    data.extend_from_slice(&card_cryptogram);
    if let Some(seq) = sequence_counter {
        data.extend_from_slice(&seq.to_be_bytes()[1..]);
    }
    let session = Session {
        keys: sk,
        dek: keys.dek.clone(),
        chaining: [0; 16],
        counter: 0,
        level: SecurityLevel::AUTHENTICATED,
        s16: params.s16,
        i: params.i,
        options: Default::default(),
    };
    let pending = CardPending { session, host_cryptogram, host_challenge, card_challenge, sequence_counter };
    Ok((ResponseApdu::new(data, StatusWord::SUCCESS), pending))
}

/// INITIALIZE UPDATE answered; EXTERNAL AUTHENTICATE expected next.
pub struct CardPending {
    session: Session,
    host_cryptogram: Vec<u8>,
    host_challenge: Vec<u8>,
    card_challenge: Vec<u8>,
    sequence_counter: Option<u32>,
}

impl CardPending {
    /// The counter the card reported (already incremented): persist it *now*, whether or not
    /// authentication succeeds, so that a card challenge is never reused.
    pub fn sequence_counter(&self) -> Option<u32> {
        self.sequence_counter
    }
    pub fn host_challenge(&self) -> &[u8] {
        &self.host_challenge
    }
    pub fn card_challenge(&self) -> &[u8] {
        &self.card_challenge
    }

    /// Card-side options (e.g. `scp03_counter_only_with_data` to emulate such cards); the
    /// host-only options are ignored.
    pub fn with_options(mut self, options: crate::scp::ChannelOptions) -> Self {
        self.session.options = options;
        self
    }

    /// Checks EXTERNAL AUTHENTICATE: secure messaging class, a level valid for `i`, the host
    /// cryptogram (constant time) and the C-MAC (chaining value zero). On success the session is
    /// open at that level and the answer is `9000`.
    pub fn on_external_authenticate(mut self, cmd: &CommandApdu) -> Result<(ResponseApdu, Scp03Card), ScpError> {
        if cmd.ins != INS_EXTERNAL_AUTHENTICATE {
            return Err(ScpError::Unsupported(format!(
                "expected EXTERNAL AUTHENTICATE after INITIALIZE UPDATE, got INS {:02X}",
                cmd.ins
            )));
        }
        if !cmd.is_secure_messaging() {
            return Err(missing_cmac());
        }
        let level = SecurityLevel(cmd.p1);
        check_level(level, self.session.i)?;
        let len = self.host_cryptogram.len();
        if cmd.data.len() != len + self.session.mac_len() {
            return Err(ScpError::BadCommand(format!(
                "EXTERNAL AUTHENTICATE with {} bytes of data, expected {}",
                cmd.data.len(),
                len + self.session.mac_len()
            )));
        }
        if !ct_eq(&cmd.data[..len], &self.host_cryptogram) {
            return Err(ScpError::HostCryptogram);
        }
        let check = self.session.check_mac(cmd, &[0; 16])?;
        if !check.ok {
            return Err(self.session.cmac_error(&check));
        }
        self.session.chaining = check.computed;
        self.session.level = level;
        let card = Scp03Card { session: self.session, channel: cmd.logical_channel(), closed: false, dek: None };
        Ok((ResponseApdu::status(StatusWord::SUCCESS), card))
    }
}

impl fmt::Debug for CardPending {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "CardPending(i={:02X}, card challenge {})", self.session.i, hex(&self.card_challenge))
    }
}

/// An open SCP03 channel, card side. Bound to the logical channel EXTERNAL AUTHENTICATE came
/// on. After a secure messaging error (bad C-MAC, bad padding) the session is closed, as GP
/// requires, and every further command gets [`ScpError::Closed`].
pub struct Scp03Card {
    session: Session,
    channel: u8,
    closed: bool,
    dek: Option<SecretKey>,
}

impl Scp03Card {
    /// `SymmetricKey` offers no decryption, so `decrypt_sensitive` needs the static DEK as an
    /// in-memory key (the simulated SE has it).
    pub fn with_dek(mut self, dek: SecretKey) -> Self {
        self.dek = Some(dek);
        self
    }
    pub fn is_open(&self) -> bool {
        !self.closed
    }
    /// Ends the session (e.g. on SELECT of another application, or card reset).
    pub fn close(&mut self) {
        self.closed = true;
    }
    pub fn logical_channel(&self) -> u8 {
        self.channel
    }
    pub fn mac_chaining_value(&self) -> [u8; 16] {
        self.session.chaining
    }
    pub fn encryption_counter(&self) -> u128 {
        self.session.counter
    }
}

impl CardChannel for Scp03Card {
    fn scp(&self) -> Scp {
        Scp::Scp03 { i: self.session.i }
    }
    fn level(&self) -> SecurityLevel {
        self.session.level
    }
    fn unwrap_command(&mut self, cmd: &CommandApdu) -> Result<CommandApdu, ScpError> {
        if self.closed {
            return Err(ScpError::Closed);
        }
        if cmd.logical_channel() != self.channel {
            return Err(ScpError::BadCommand(format!(
                "command on logical channel {}, the secure channel is on {}",
                cmd.logical_channel(),
                self.channel
            )));
        }
        self.session.unwrap_command(cmd).inspect_err(|_| self.closed = true)
    }
    fn wrap_response(&mut self, resp: ResponseApdu) -> Result<ResponseApdu, ScpError> {
        if self.closed {
            return Ok(resp);
        }
        self.session.wrap_response(&resp)
    }
    fn decrypt_sensitive(&self, data: &[u8]) -> Result<Zeroizing<Vec<u8>>, ScpError> {
        let dek = self.dek.as_ref().ok_or_else(|| {
            ScpError::Unsupported("decrypting sensitive data needs the static DEK in memory (Scp03Card::with_dek)".into())
        })?;
        Ok(Zeroizing::new(cbc_decrypt(dek, &vec![0u8; dek.alg().block_len()], data)?))
    }
}

impl fmt::Debug for Scp03Card {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "Scp03Card(i={:02X}, level {:?}, channel {}, counter {}{})",
            self.session.i,
            self.session.level,
            self.channel,
            self.session.counter,
            if self.closed { ", closed" } else { "" }
        )
    }
}
