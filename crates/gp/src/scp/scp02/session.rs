//! The one SCP02 session state that the host, the card and the monitor share: session keys,
//! `i`, security level and the C-MAC chain (GPCS 2.3 App. E, "APDU command C-MAC generation and
//! verification", "ICV encryption", "APDU data confidentiality").

use super::{IParam, SessionKeys};
use crate::apdu::CommandApdu;
use crate::crypto::{self, ct_eq};
use crate::scp::{ChannelOptions, ScpError, SecurityLevel};

/// Length of an SCP02 C-MAC.
pub(crate) const MAC_LEN: usize = 8;

/// The class byte with the secure messaging indication set (ISO 7816-4 §5.4.1: bit 3 for
/// the first interindustry classes, bit 6 for the further ones).
pub(crate) fn with_sm(cla: u8) -> u8 {
    if cla & 0x40 == 0 { cla | 0x04 } else { cla | 0x20 }
}

pub(crate) fn without_sm(cla: u8) -> u8 {
    if cla & 0x40 == 0 { cla & !0x04 } else { cla & !0x20 }
}

/// A command as the card (or a monitor) sees it after taking the C-MAC off and decrypting:
/// the plain command, the MAC it should carry and the MAC it carries.
#[derive(Debug, Clone)]
pub(crate) struct Opened {
    pub plain: CommandApdu,
    pub expected: [u8; 8],
    pub received: [u8; 8],
}

impl Opened {
    pub fn verified(&self) -> bool {
        ct_eq(&self.expected, &self.received)
    }
    pub fn mac_error(&self) -> ScpError {
        ScpError::CMac { expected: super::hex(&self.expected), received: super::hex(&self.received) }
    }
}

#[derive(Debug, Clone)]
pub(crate) struct Session {
    pub i: IParam,
    pub level: SecurityLevel,
    pub seq: u16,
    pub keys: SessionKeys,
    /// The ICV for the next C-MAC, already encrypted when `i` asks for ICV encryption.
    pub icv: [u8; 8],
    /// The C-MAC the ICV was made from (`None` while the chain is at its start): what a
    /// persisted host state keeps instead of the encrypted ICV, which is not on the wire.
    pub last_mac: Option<[u8; 8]>,
}

impl Session {
    /// A session whose chain starts as `i` says: zero ICV for explicit initiation, the MAC over
    /// the AID otherwise (treated as the C-MAC preceding the first command, so that ICV
    /// encryption applies to it like to any other chaining value, as GPShell and asterix do).
    pub fn new(keys: SessionKeys, i: IParam, level: SecurityLevel, seq: u16, sd_aid: Option<&[u8]>) -> Result<Self, ScpError> {
        let mut s = Session { i, level, seq, keys, icv: [0; 8], last_mac: None };
        if i.icv_mac_over_aid() {
            let aid = sd_aid.filter(|a| !a.is_empty()).ok_or_else(|| {
                ScpError::Unsupported(format!("{i} starts the C-MAC chain with a MAC over the security domain AID, which was not given"))
            })?;
            let m = super::mac_over_aid(&s.keys.s_mac, aid)?;
            s.advance(m)?;
        }
        Ok(s)
    }

    /// ICV for the command after the one that carried `mac`.
    pub fn chain_icv(&self, mac: [u8; 8]) -> Result<[u8; 8], ScpError> {
        let mut icv = mac;
        if self.i.icv_encryption() {
            // Single DES with the left half of the C-MAC session key (GPCS 2.3 App. E, "ICV
            // encryption"); the retail MAC shares that half as its single-DES key.
            crypto::des_encrypt_block(&self.keys.s_mac.expose()[..8], &mut icv)?;
        }
        Ok(icv)
    }

    pub fn advance(&mut self, mac: [u8; 8]) -> Result<(), ScpError> {
        self.icv = self.chain_icv(mac)?;
        self.last_mac = Some(mac);
        Ok(())
    }

    /// Retail MAC (S-MAC, current ICV) over header ‖ Lc ‖ data, padded. Lc is one byte, or
    /// `00 Lc1 Lc2` when the command travels in extended form (as GPShell does); it is present
    /// even when the data field is empty (as GlobalPlatformPro does). Le is never MACed.
    pub fn mac(&self, header: [u8; 4], lc: usize, extended: bool, data: &[u8]) -> Result<[u8; 8], ScpError> {
        let mut m = Vec::with_capacity(7 + data.len() + 8);
        m.extend_from_slice(&header);
        if extended {
            m.push(0);
            m.extend_from_slice(&(lc as u16).to_be_bytes());
        } else {
            m.push(lc as u8);
        }
        m.extend_from_slice(data);
        Ok(crypto::retail_mac(&self.keys.s_mac, &self.icv, &crypto::pad80(&m, 8))?)
    }

    /// Host side: adds the C-MAC (over the modified or unmodified command, as `i` says) and,
    /// when `encrypt`, C-DEC; advances the chain.
    pub fn protect(&mut self, plain: &CommandApdu, opts: &ChannelOptions, encrypt: bool) -> Result<CommandApdu, ScpError> {
        if plain.is_secure_messaging() {
            return Err(ScpError::BadCommand(format!(
                "class byte {:02X} already indicates secure messaging; pass the plain command",
                plain.cla
            )));
        }
        // SCP02 MACs the plaintext and then encrypts the data field (GPCS 2.3 App. E, "APDU
        // data confidentiality"); an empty data field is not encrypted unless the host asks.
        let mut body = if encrypt && (!plain.data.is_empty() || opts.encrypt_empty_data) {
            self.keys.s_enc_cbc(&crypto::pad80(&plain.data, 8))?
        } else {
            plain.data.clone()
        };
        let wire_lc = body.len() + MAC_LEN;
        if wire_lc > 0xFFFF {
            return Err(ScpError::BadCommand(format!("{} data bytes do not fit an APDU once protected", plain.data.len())));
        }
        let extended = plain.extended || wire_lc > 255 || plain.le.is_some_and(|le| le > 256);
        let wire_cla = with_sm(plain.cla);
        let (mac_cla, mac_lc) = if self.i.cmac_on_unmodified_apdu() {
            (plain.cla, plain.data.len())
        } else {
            (wire_cla, plain.data.len() + MAC_LEN)
        };
        let mac = self.mac([mac_cla, plain.ins, plain.p1, plain.p2], mac_lc, extended, &plain.data)?;
        self.advance(mac)?;
        body.extend_from_slice(&mac);
        Ok(CommandApdu {
            cla: wire_cla,
            ins: plain.ins,
            p1: plain.p1,
            p2: plain.p2,
            data: body,
            le: if opts.drop_le { None } else { plain.le },
            extended,
        })
    }

    /// Card/monitor side: splits off the C-MAC, decrypts when `decrypt` (an empty data field
    /// and one encrypted padding block both mean "no data"), and computes the MAC the command
    /// should carry. Does not touch the chain.
    pub fn open(&self, wire: &CommandApdu, decrypt: bool) -> Result<Opened, ScpError> {
        if wire.data.len() < MAC_LEN {
            return Err(ScpError::BadCommand(format!(
                "secure messaging command {:02X}{:02X} has {} data byte(s), too few for a C-MAC",
                wire.cla,
                wire.ins,
                wire.data.len()
            )));
        }
        let (body, mac) = wire.data.split_at(wire.data.len() - MAC_LEN);
        let data = if decrypt && !body.is_empty() {
            if !body.len().is_multiple_of(8) {
                return Err(ScpError::BadPadding);
            }
            let clear = zeroize::Zeroizing::new(crypto::cbc_decrypt(&self.keys.s_enc, &[0; 8], body)?);
            crypto::unpad80(&clear).map_err(|_| ScpError::BadPadding)?.to_vec()
        } else {
            body.to_vec()
        };
        let plain_cla = without_sm(wire.cla);
        let (mac_cla, mac_lc) =
            if self.i.cmac_on_unmodified_apdu() { (plain_cla, data.len()) } else { (wire.cla, data.len() + MAC_LEN) };
        let expected = self.mac([mac_cla, wire.ins, wire.p1, wire.p2], mac_lc, wire.extended, &data)?;
        let mut received = [0u8; 8];
        received.copy_from_slice(mac);
        let plain = CommandApdu { cla: plain_cla, ins: wire.ins, p1: wire.p1, p2: wire.p2, data, le: wire.le, extended: false };
        Ok(Opened { plain, expected, received })
    }
}

impl SessionKeys {
    /// 3DES-CBC under S-ENC with a zero ICV (C-DEC).
    pub(crate) fn s_enc_cbc(&self, padded: &[u8]) -> Result<Vec<u8>, ScpError> {
        Ok(crypto::cbc_encrypt(&self.s_enc, &[0; 8], padded)?)
    }
}
