//! SCP03 (GlobalPlatform Card Specification 2.3, Amendment D): host side, card side and a
//! monitor for recorded sessions.
//!
//! - Host: [`HostHandshake`] → [`HostAuthenticating`] → [`Scp03Host`] (a typestate: each step
//!   consumes the previous one), or [`HostHandshake::predict`] for one-round-trip deployments
//!   where the card challenge is predictable (i bit `10`).
//! - Card: [`card::on_init_update`] → [`card::CardPending`] → [`card::Scp03Card`].
//! - Monitor: [`Scp03Monitor::start`] → [`MonitorAuth`] → [`Scp03Monitor`].
//!
//! All three run on one session core (`session.rs`): one implementation of C-MAC, C-DEC, R-MAC
//! and R-ENC. S8 and S16 modes (i bit `01`), AES-128/192/256 and SM4 static keys.
//!
//! Choices where the specification leaves room, shared by all roles:
//! - The C-MAC covers the class byte without the logical channel number, in its
//!   first-interindustry form (`84` for GP commands on any channel), and Lc as encoded on the
//!   wire (3 bytes for extended-length APDUs). Le is outside the MAC (Amd D §6.2.4).
//! - With C-DEC, a command without data is sent without data (no padding block) unless
//!   [`ChannelOptions::encrypt_empty_data`](crate::scp::ChannelOptions::encrypt_empty_data);
//!   the card and the monitor accept both encodings.
//! - The encryption counter advances for every command after EXTERNAL AUTHENTICATE (the first
//!   uses 1) unless `scp03_counter_only_with_data`; R-ENC uses the counter of the command.
//! - Responses with an error status word carry no R-MAC (Amd D §6.2.5); the host also accepts
//!   a MACed error response from cards that MAC everything. Decryption accepts padding longer
//!   than one block (seen in the OpenSCP traces).
//! - The card closes the session on any secure messaging error; the MAC chain otherwise runs
//!   on across error status words.
//! - Sequence counter: the card increments its stored counter on INITIALIZE UPDATE and both
//!   derives the pseudo-random challenge from and reports the incremented value.

pub mod card;
mod host;
mod monitor;
mod session;

pub use host::{Expect, HostAuthenticating, HostHandshake, PredictedSession, PredictedSessionState, Scp03Host, Scp03HostState};
pub use monitor::{MonitorAuth, Scp03Monitor};
pub use session::ResponseContext;

use crate::apdu::ResponseApdu;
use crate::crypto::kdf::{constant, scp03_kdf};
use crate::crypto::{KeyAlg, SecretKey, SymmetricKey, ct_eq};
use crate::hex::encode as hex;
use crate::scp::{Scp, ScpError, SecurityLevel, StaticKeys};
use crate::sw::StatusWord;
use std::sync::Arc;

/// `i` bits (Amd D Table 5-1).
pub mod i_bits {
    /// S16 mode: 16-byte challenges, cryptograms and MACs.
    pub const S16: u8 = 0x01;
    /// Pseudo-random card challenge derived from the sequence counter.
    pub const PSEUDO_RANDOM_CHALLENGE: u8 = 0x10;
    pub const R_MAC: u8 = 0x20;
    pub const R_ENC: u8 = 0x40;
}

/// Largest data field of an extended-length command APDU.
pub(crate) const MAX_WIRE_DATA: usize = 65535;

/// Largest sequence counter (3 bytes).
pub const MAX_SEQUENCE_COUNTER: u32 = 0xFF_FFFF;

/// The S-ENC, S-MAC and S-RMAC session keys (Amd D §6.2.1).
pub(crate) struct SessionKeys {
    pub enc: SecretKey,
    pub mac: SecretKey,
    pub rmac: SecretKey,
}

impl SessionKeys {
    /// Derives the session keys from the static keys; context = host ‖ card challenge.
    pub(crate) fn derive(keys: &StaticKeys, context: &[u8]) -> Result<Self, ScpError> {
        check_keys(keys)?;
        let derive = |k: &Arc<dyn SymmetricKey>, c: u8| -> Result<SecretKey, ScpError> {
            let alg = k.alg();
            let bytes = scp03_kdf(&**k, c, context, alg.key_len())?;
            Ok(SecretKey::new(alg, &bytes)?)
        };
        Ok(SessionKeys { enc: derive(&keys.enc, constant::S_ENC)?, mac: derive(&keys.mac, constant::S_MAC)?, rmac: derive(&keys.mac, constant::S_RMAC)? })
    }

    fn kcvs(&self) -> [[u8; 3]; 3] {
        [self.enc.kcv(), self.mac.kcv(), self.rmac.kcv()]
    }

    /// Card (constant 00) or host (constant 01) cryptogram, 8 or 16 bytes.
    fn cryptogram(&self, constant: u8, context: &[u8], len: usize) -> Result<Vec<u8>, ScpError> {
        Ok(scp03_kdf(&self.mac, constant, context, len)?.to_vec())
    }
}

/// The pseudo-random card challenge (Amd D §6.2.2.1): KDF(static ENC, constant 02,
/// sequence counter (3 bytes) ‖ AID of the security domain, `len` = 8 (S8) or 16 (S16) bytes).
pub fn pseudo_random_challenge(enc: &dyn SymmetricKey, sequence_counter: u32, sd_aid: &[u8], len: usize) -> Result<Vec<u8>, ScpError> {
    let mut ctx = sequence_counter.to_be_bytes()[1..].to_vec();
    ctx.extend_from_slice(sd_aid);
    Ok(scp03_kdf(enc, constant::CARD_CHALLENGE, &ctx, len)?.to_vec())
}

/// Checks a level against the combination rules and against what `i` supports: R-MAC needs
/// i bit `20`, R-ENC i bit `40` (Amd D Table 5-1).
pub fn check_level(level: SecurityLevel, i: u8) -> Result<(), ScpError> {
    level.validate()?;
    if level.r_mac() && !level.c_mac() {
        // The R-MAC covers the command's MAC chaining value: no R-MAC without C-MAC (Amd D
        // Table 7-4 lists 00, 01, 03, 11, 13, 33).
        return Err(ScpError::InvalidSecurityLevel(level.0));
    }
    if (level.r_mac() && i & i_bits::R_MAC == 0) || (level.r_enc() && i & i_bits::R_ENC == 0) {
        return Err(ScpError::UnsupportedLevel { level, scp: Scp::Scp03 { i }.to_string() });
    }
    Ok(())
}

/// SCP03 runs on AES (or SM4) static keys only.
pub(crate) fn check_keys(keys: &StaticKeys) -> Result<(), ScpError> {
    for k in [&keys.enc, &keys.mac, &keys.dek] {
        let alg = k.alg();
        if !(alg.is_aes() || alg == KeyAlg::Sm4) {
            return Err(ScpError::Unsupported(format!("SCP03 needs AES (or SM4) static keys, not {alg:?}")));
        }
    }
    Ok(())
}

/// Checks that `i` is an SCP03 option set a card can announce: no reserved bits, R-ENC only
/// with R-MAC.
pub fn check_i(i: u8) -> Result<(), ScpError> {
    if i & !(i_bits::S16 | i_bits::PSEUDO_RANDOM_CHALLENGE | i_bits::R_MAC | i_bits::R_ENC) != 0 {
        return Err(ScpError::Unsupported(format!("SCP03 i={i:02X} has reserved bits set")));
    }
    if i & i_bits::R_ENC != 0 && i & i_bits::R_MAC == 0 {
        return Err(ScpError::Unsupported(format!("SCP03 i={i:02X} announces R-ENC without R-MAC")));
    }
    Ok(())
}

fn challenge_len(s16: bool) -> usize {
    if s16 { 16 } else { 8 }
}

/// What an INITIALIZE UPDATE exchange established: the parsed response fields and the
/// challenges (Amd D §7.1.1, Table 7-3).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InitUpdateInfo {
    /// Key diversification data (10 bytes).
    pub kdd: [u8; 10],
    /// Key version number the card used.
    pub key_version: u8,
    pub i: u8,
    pub s16: bool,
    pub host_challenge: Vec<u8>,
    pub card_challenge: Vec<u8>,
    pub card_cryptogram: Vec<u8>,
    /// Present when the card sent one (cards with i bit `10`).
    pub sequence_counter: Option<u32>,
    /// Whether the card challenge is the pseudo-random value derived from the sequence counter
    /// and the SD AID: `None` when it was not checked (no AID given, no counter, or i without
    /// bit `10`).
    pub pseudo_random_challenge_ok: Option<bool>,
}

impl InitUpdateInfo {
    pub fn scp(&self) -> Scp {
        Scp::Scp03 { i: self.i }
    }
    /// Context of the session key and cryptogram derivations: host ‖ card challenge.
    pub fn context(&self) -> Vec<u8> {
        [self.host_challenge.as_slice(), &self.card_challenge].concat()
    }
}

/// Parses an INITIALIZE UPDATE response: KDD (10) ‖ KVN ‖ SCP id 03 ‖ i ‖ card challenge ‖
/// card cryptogram (8 or 16 each) ‖ optional sequence counter (3).
pub(crate) fn parse_init_update_response(resp: &ResponseApdu, host_challenge: &[u8]) -> Result<InitUpdateInfo, ScpError> {
    if resp.sw != StatusWord::SUCCESS {
        return Err(ScpError::CardRefused { command: "INITIALIZE UPDATE", sw: resp.sw, meaning: resp.sw.meaning() });
    }
    let d = &resp.data;
    let s16 = host_challenge.len() == 16;
    let cl = challenge_len(s16);
    let base = 13 + 2 * cl;
    let mode = if s16 { "S16" } else { "S8" };
    if d.len() >= 12 && d[11] != 0x03 {
        return Err(ScpError::Unsupported(format!("the card answered INITIALIZE UPDATE for SCP{:02X}, not SCP03", d[11])));
    }
    if d.len() != base && d.len() != base + 3 {
        let hint = match d.len() {
            29 | 32 if s16 => " (an S8 response to an S16 request)",
            45 | 48 if !s16 => " (an S16 response to an S8 request)",
            28 => " (an SCP02 response?)",
            _ => "",
        };
        return Err(ScpError::BadInitUpdateResponse(format!(
            "{} bytes of data; SCP03 {mode} answers {base} or {} bytes{hint}",
            d.len(),
            base + 3
        )));
    }
    let i = d[12];
    if (i & i_bits::S16 != 0) != s16 {
        return Err(ScpError::BadInitUpdateResponse(format!(
            "i={i:02X} says {} but the host challenge has {} bytes",
            if i & i_bits::S16 != 0 { "S16" } else { "S8" },
            host_challenge.len()
        )));
    }
    let mut kdd = [0u8; 10];
    kdd.copy_from_slice(&d[..10]);
    let sequence_counter = (d.len() == base + 3).then(|| u32::from_be_bytes([0, d[base], d[base + 1], d[base + 2]]));
    Ok(InitUpdateInfo {
        kdd,
        key_version: d[10],
        i,
        s16,
        host_challenge: host_challenge.to_vec(),
        card_challenge: d[13..13 + cl].to_vec(),
        card_cryptogram: d[13 + cl..13 + 2 * cl].to_vec(),
        sequence_counter,
        pseudo_random_challenge_ok: None,
    })
}

/// Derives the session keys for `info` and checks the card cryptogram (constant time), then
/// the pseudo-random challenge when an SD AID is given. Returns the keys and the host cryptogram.
pub(crate) fn verify_card(keys: &StaticKeys, info: &mut InitUpdateInfo, sd_aid: Option<&[u8]>) -> Result<(SessionKeys, Vec<u8>), ScpError> {
    let ctx = info.context();
    let len = challenge_len(info.s16);
    let sk = SessionKeys::derive(keys, &ctx)?;
    let expected = sk.cryptogram(constant::CARD_CRYPTOGRAM, &ctx, len)?;
    if !ct_eq(&expected, &info.card_cryptogram) {
        return Err(ScpError::CardCryptogram { expected: hex(&expected), received: hex(&info.card_cryptogram) });
    }
    if let (Some(aid), Some(seq), true) = (sd_aid, info.sequence_counter, info.i & i_bits::PSEUDO_RANDOM_CHALLENGE != 0) {
        let derived = pseudo_random_challenge(&*keys.enc, seq, aid, len)?;
        info.pseudo_random_challenge_ok = Some(derived == info.card_challenge);
    }
    let host_cryptogram = sk.cryptogram(constant::HOST_CRYPTOGRAM, &ctx, len)?;
    Ok((sk, host_cryptogram))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::apdu::ResponseApdu;

    #[test]
    fn level_and_i_rules() {
        for i in [0x00, 0x10, 0x30, 0x60, 0x70, 0x71] {
            assert!(check_i(i).is_ok(), "{i:02X}");
        }
        assert!(check_i(0x40).is_err());
        assert!(check_i(0x80).is_err());
        assert!(check_level(SecurityLevel(0x33), 0x70).is_ok());
        assert!(matches!(check_level(SecurityLevel(0x33), 0x30), Err(ScpError::UnsupportedLevel { .. })));
        assert!(matches!(check_level(SecurityLevel(0x11), 0x10), Err(ScpError::UnsupportedLevel { .. })));
        assert!(matches!(check_level(SecurityLevel(0x02), 0x70), Err(ScpError::InvalidSecurityLevel(2))));
    }

    #[test]
    fn init_update_response_lengths_never_panic() {
        for s16 in [false, true] {
            let hc = vec![0u8; challenge_len(s16)];
            for n in 0..80 {
                let mut d = vec![0u8; n];
                if n > 12 {
                    d[11] = 3;
                    d[12] = if s16 { 0x71 } else { 0x70 };
                }
                let r = parse_init_update_response(&ResponseApdu::new(d, StatusWord::SUCCESS), &hc);
                let ok = if s16 { n == 45 || n == 48 } else { n == 29 || n == 32 };
                assert_eq!(r.is_ok(), ok, "s16={s16} n={n}: {r:?}");
            }
        }
    }
}
