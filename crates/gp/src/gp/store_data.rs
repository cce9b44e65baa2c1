//! STORE DATA (GPCS 2.3 §11.11) and the key-loading DGIs `00B9` (key attributes and KCVs) and
//! `8113` (DEK-encrypted AES key) as kaoh/globalplatform and the GP personalization guides
//! build them.

use super::{Context, Framing, GpError, check_gp, ins};
use crate::apdu::CommandApdu;
use crate::codec::{Codec, Reader};
use crate::hex::Hex;
use crate::tlv::{self, Dgi, Tlv, TlvIter};
use std::fmt;

/// P1 b7..b6: encryption information.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum EncryptionInfo {
    /// `00`: no general encryption information, or data not encrypted.
    None,
    /// `01` (P1 `20`): application-dependent encryption.
    ApplicationDependent,
    /// `10` (P1 `40`): RFU.
    Rfu,
    /// `11` (P1 `60`): encrypted under the data encryption session key.
    Encrypted,
}

/// P1 b5..b4: data structure information.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DataStructure {
    /// `00`: no general data structure information.
    None,
    /// `01` (P1 `08`): DGI format.
    Dgi,
    /// `10` (P1 `10`): BER-TLV format.
    BerTlv,
    /// `11` (P1 `18`): RFU.
    Rfu,
}

/// STORE DATA command.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoreData {
    /// P1 b8.
    pub last: bool,
    pub encryption: EncryptionInfo,
    pub structure: DataStructure,
    /// P1 b1 (GP 2.3): the command is case 4, response data expected.
    pub response_expected: bool,
    /// P2.
    pub block: u8,
    pub data: Vec<u8>,
    pub framing: Framing,
}

impl StoreData {
    /// One block in `structure`, no encryption information.
    pub fn new(block: u8, last: bool, structure: DataStructure, data: Vec<u8>) -> Self {
        StoreData { last, encryption: EncryptionInfo::None, structure, response_expected: false, block, data, framing: Framing::GP }
    }
    /// A block of DGIs.
    pub fn dgis(block: u8, last: bool, dgis: &[Dgi]) -> Self {
        let mut data = Vec::new();
        dgis.iter().for_each(|d| d.encode(&mut data));
        StoreData::new(block, last, DataStructure::Dgi, data)
    }

    pub fn p1(&self) -> u8 {
        let enc = match self.encryption {
            EncryptionInfo::None => 0x00,
            EncryptionInfo::ApplicationDependent => 0x20,
            EncryptionInfo::Rfu => 0x40,
            EncryptionInfo::Encrypted => 0x60,
        };
        let st = match self.structure {
            DataStructure::None => 0x00,
            DataStructure::Dgi => 0x08,
            DataStructure::BerTlv => 0x10,
            DataStructure::Rfu => 0x18,
        };
        (if self.last { 0x80 } else { 0 }) | enc | st | self.response_expected as u8
    }

    pub fn to_apdu(&self) -> CommandApdu {
        self.framing.apdu(ins::STORE_DATA, self.p1(), self.block, self.data.clone())
    }

    pub fn from_apdu(apdu: &CommandApdu) -> Result<Self, GpError> {
        const C: &str = "STORE DATA";
        check_gp(apdu, C, ins::STORE_DATA)?;
        if apdu.p1 & 0x06 != 0 {
            return Err(GpError::params(C, apdu, "P1 b3..b2 are RFU"));
        }
        let encryption = match apdu.p1 & 0x60 {
            0x00 => EncryptionInfo::None,
            0x20 => EncryptionInfo::ApplicationDependent,
            0x40 => EncryptionInfo::Rfu,
            _ => EncryptionInfo::Encrypted,
        };
        let structure = match apdu.p1 & 0x18 {
            0x00 => DataStructure::None,
            0x08 => DataStructure::Dgi,
            0x10 => DataStructure::BerTlv,
            _ => DataStructure::Rfu,
        };
        Ok(StoreData {
            last: apdu.p1 & 0x80 != 0,
            encryption,
            structure,
            response_expected: apdu.p1 & 0x01 != 0,
            block: apdu.p2,
            data: apdu.data.clone(),
            framing: Framing::of(apdu),
        })
    }

    /// The data as DGIs (when not encrypted as a whole).
    pub fn parse_dgis(&self) -> Result<Vec<Dgi>, GpError> {
        tlv::parse_dgis(&self.data).ctx("STORE DATA DGIs")
    }
}

impl fmt::Display for StoreData {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "STORE DATA block {}{}", self.block, if self.last { " (last)" } else { "" })?;
        match self.encryption {
            EncryptionInfo::None => {}
            EncryptionInfo::ApplicationDependent => write!(f, " app-encrypted")?,
            EncryptionInfo::Rfu => write!(f, " encryption=RFU")?,
            EncryptionInfo::Encrypted => write!(f, " encrypted")?,
        }
        if self.response_expected {
            write!(f, " (response expected)")?;
        }
        match self.structure {
            DataStructure::Dgi if self.encryption == EncryptionInfo::None => match tlv::parse_dgis(&self.data) {
                Ok(d) => {
                    for x in d {
                        write!(f, " DGI {:04X}={}", x.id, Hex(&x.value))?;
                    }
                    Ok(())
                }
                Err(_) => write!(f, " DGI? {}", Hex(&self.data)),
            },
            DataStructure::BerTlv if self.encryption == EncryptionInfo::None => match tlv::parse_all(&self.data) {
                Ok(ts) => {
                    for t in ts {
                        write!(f, " {t:?}")?;
                    }
                    Ok(())
                }
                Err(_) => write!(f, " TLV? {}", Hex(&self.data)),
            },
            DataStructure::Dgi => write!(f, " DGI data {}", Hex(&self.data)),
            DataStructure::BerTlv => write!(f, " TLV data {}", Hex(&self.data)),
            _ => write!(f, " {}", Hex(&self.data)),
        }
    }
}

/// DGI of the key attributes and check values.
pub const DGI_KEY_ATTRIBUTES: u16 = 0x00B9;
/// DGI of an AES key encrypted under the DEK.
pub const DGI_ENCRYPTED_AES_KEY: u16 = 0x8113;

/// Key check value of one key of the set (`B9 { 82 id, 84 KCV }`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyCheck {
    pub id: u8,
    pub kcv: Vec<u8>,
}

/// The content of DGI `00B9`: the key attributes control reference template `B7` and one `B9`
/// template per key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyAttributes {
    /// `80`: key type (`88` AES).
    pub key_type: u8,
    /// `81`: key length in bytes.
    pub key_length: u8,
    /// `83`: key version number.
    pub version: u8,
    /// `95`: key usage, when given.
    pub usage: Option<Vec<u8>>,
    /// `96`: key access (`00` SD and applications, `01` SD only, `02` applications only).
    pub access: Option<u8>,
    /// `97`: key purpose (e.g. `0003` SCP03, `7003` DAP verification).
    pub purpose: Option<Vec<u8>>,
    /// Other `B7` tags, after the known ones.
    pub other: Vec<Tlv>,
    pub keys: Vec<KeyCheck>,
}

impl KeyAttributes {
    pub fn to_dgi(&self) -> Dgi {
        let mut b7 = Vec::new();
        tlv::put(&mut b7, 0x80, &[self.key_type]);
        tlv::put(&mut b7, 0x81, &[self.key_length]);
        tlv::put(&mut b7, 0x83, &[self.version]);
        if let Some(u) = &self.usage {
            tlv::put(&mut b7, 0x95, u);
        }
        if let Some(a) = self.access {
            tlv::put(&mut b7, 0x96, &[a]);
        }
        if let Some(p) = &self.purpose {
            tlv::put(&mut b7, 0x97, p);
        }
        self.other.iter().for_each(|t| t.encode(&mut b7));
        let mut v = Vec::new();
        tlv::put(&mut v, 0xB7, &b7);
        for k in &self.keys {
            let mut b9 = Vec::new();
            tlv::put(&mut b9, 0x82, &[k.id]);
            tlv::put(&mut b9, 0x84, &k.kcv);
            tlv::put(&mut v, 0xB9, &b9);
        }
        Dgi { id: DGI_KEY_ATTRIBUTES, value: v }
    }

    pub fn from_dgi(dgi: &Dgi) -> Result<Self, GpError> {
        const W: &str = "key attributes DGI 00B9";
        if dgi.id != DGI_KEY_ATTRIBUTES {
            return Err(GpError::invalid(W, format!("DGI {:04X}", dgi.id)));
        }
        let one = |v: &[u8], tag: u32| match v {
            [b] => Ok(*b),
            _ => Err(GpError::invalid(W, format!("tag {} must have 1 byte", tlv::Tag(tag)))),
        };
        let mut r = Reader::new(&dgi.value);
        let b7 = tlv::TlvRef::read(&mut r).ctx(W)?;
        if b7.tag.0 != 0xB7 {
            return Err(GpError::UnexpectedTag { what: W, expected: tlv::Tag(0xB7), found: b7.tag });
        }
        let (mut key_type, mut key_length, mut version) = (None, None, None);
        let mut a = KeyAttributes { key_type: 0, key_length: 0, version: 0, usage: None, access: None, purpose: None, other: Vec::new(), keys: Vec::new() };
        for t in b7.children() {
            let t = t.ctx(W)?;
            match t.tag.0 {
                0x80 => key_type = Some(one(t.value, 0x80)?),
                0x81 => key_length = Some(one(t.value, 0x81)?),
                0x83 => version = Some(one(t.value, 0x83)?),
                0x95 => a.usage = Some(t.value.to_vec()),
                0x96 => a.access = Some(one(t.value, 0x96)?),
                0x97 => a.purpose = Some(t.value.to_vec()),
                _ => a.other.push(t.to_owned()),
            }
        }
        a.key_type = key_type.ok_or(GpError::MissingTag { what: W, tag: tlv::Tag(0x80) })?;
        a.key_length = key_length.ok_or(GpError::MissingTag { what: W, tag: tlv::Tag(0x81) })?;
        a.version = version.ok_or(GpError::MissingTag { what: W, tag: tlv::Tag(0x83) })?;
        for t in TlvIter::new(r.take_rest()) {
            let t = t.ctx(W)?;
            if t.tag.0 != 0xB9 {
                return Err(GpError::UnexpectedTag { what: W, expected: tlv::Tag(0xB9), found: t.tag });
            }
            let id = t.find(0x82).ctx(W)?.ok_or(GpError::MissingTag { what: W, tag: tlv::Tag(0x82) })?;
            let kcv = t.find(0x84).ctx(W)?.map(|k| k.value.to_vec()).unwrap_or_default();
            a.keys.push(KeyCheck { id: one(id.value, 0x82)?, kcv });
        }
        Ok(a)
    }
}

/// A key set loaded by STORE DATA: the attributes DGI and one `8113` DGI per key, in key order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyLoad {
    pub attributes: KeyAttributes,
    /// Keys encrypted under the DEK (AES-CBC, zero IV, no padding for block-sized keys).
    pub encrypted_keys: Vec<Vec<u8>>,
}

impl KeyLoad {
    pub fn to_dgis(&self) -> Vec<Dgi> {
        let mut v = vec![self.attributes.to_dgi()];
        v.extend(self.encrypted_keys.iter().map(|k| Dgi { id: DGI_ENCRYPTED_AES_KEY, value: k.clone() }));
        v
    }
    /// The STORE DATA data field.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = Vec::new();
        self.to_dgis().iter().for_each(|d| d.encode(&mut out));
        out
    }
    pub fn parse(data: &[u8]) -> Result<Self, GpError> {
        const W: &str = "key loading DGIs";
        let dgis = tlv::parse_dgis(data).ctx(W)?;
        let (first, rest) = dgis.split_first().ok_or_else(|| GpError::invalid(W, "no DGI"))?;
        let attributes = KeyAttributes::from_dgi(first)?;
        let mut encrypted_keys = Vec::new();
        for d in rest {
            if d.id != DGI_ENCRYPTED_AES_KEY {
                return Err(GpError::invalid(W, format!("unexpected DGI {:04X} after 00B9", d.id)));
            }
            encrypted_keys.push(d.value.clone());
        }
        if encrypted_keys.len() != attributes.keys.len() {
            return Err(GpError::invalid(W, format!("{} key check(s) but {} encrypted key(s)", attributes.keys.len(), encrypted_keys.len())));
        }
        Ok(KeyLoad { attributes, encrypted_keys })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hex::decode;

    #[test]
    fn p1_bits() {
        let s = StoreData { response_expected: true, ..StoreData::new(0, true, DataStructure::BerTlv, decode("BF3E035C015A").unwrap()) };
        assert_eq!(s.p1(), 0x91);
        let a = CommandApdu::from_bytes(&decode("80E2910006BF3E035C015A00").unwrap()).unwrap();
        let parsed = StoreData::from_apdu(&a).unwrap();
        assert_eq!(parsed.to_apdu(), a);
        assert!(parsed.response_expected && parsed.last && parsed.structure == DataStructure::BerTlv);
        let enc = StoreData { encryption: EncryptionInfo::Encrypted, ..StoreData::new(3, false, DataStructure::Dgi, vec![1]) };
        assert_eq!(enc.p1(), 0x68);
        assert_eq!(StoreData::from_apdu(&enc.to_apdu()).unwrap(), enc);
        let a = CommandApdu::from_bytes(&decode("80E2820001AA").unwrap()).unwrap();
        assert!(StoreData::from_apdu(&a).is_err());
    }
}
