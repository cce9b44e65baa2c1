//! PUT KEY (GPCS 2.3 §11.8; AES keys per Amendment D §7.2): the command carries keys already
//! encrypted under the DEK (the secure channel layer encrypts, not this module) and their KCVs.
//! The response is the key version number followed by the KCVs.

use super::{Context, Framing, GpError, check_gp, ins};
use crate::apdu::CommandApdu;
use crate::codec::Reader;
use crate::hex::Hex;
use crate::tlv;
use std::fmt;

/// Key type of AES keys (GPCS 2.3 Table 11-16).
pub const KEY_TYPE_AES: u8 = 0x88;
/// Key type of (3)DES keys as SCP02 loads them.
pub const KEY_TYPE_DES: u8 = 0x80;

/// One key in the PUT KEY data field.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PutKeyComponent {
    pub key_type: u8,
    /// AES keys (Amd D §7.2) carry the clear key length as the first byte of the key data,
    /// because the ciphertext may be padded; `None` for the other key types.
    pub key_length: Option<u8>,
    /// The key, encrypted under the DEK.
    pub encrypted: Vec<u8>,
    /// Key check value (usually 3 bytes; may be empty).
    pub kcv: Vec<u8>,
}

impl PutKeyComponent {
    /// An AES key of `key_length` bytes.
    pub fn aes(key_length: u8, encrypted: Vec<u8>, kcv: Vec<u8>) -> Self {
        PutKeyComponent { key_type: KEY_TYPE_AES, key_length: Some(key_length), encrypted, kcv }
    }
    /// A (3)DES key (type `80`).
    pub fn des(encrypted: Vec<u8>, kcv: Vec<u8>) -> Self {
        PutKeyComponent { key_type: KEY_TYPE_DES, key_length: None, encrypted, kcv }
    }

    fn encode(&self, out: &mut Vec<u8>) {
        out.push(self.key_type);
        let mut kd = Vec::new();
        kd.extend(self.key_length);
        kd.extend_from_slice(&self.encrypted);
        tlv::encode_length(kd.len(), out);
        out.extend_from_slice(&kd);
        out.push(self.kcv.len() as u8);
        out.extend_from_slice(&self.kcv);
    }
}

impl fmt::Display for PutKeyComponent {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}({:02X})", super::data::key_type_name(self.key_type as u16), self.key_type)?;
        if let Some(l) = self.key_length {
            write!(f, " {l} bytes")?;
        }
        write!(f, " encrypted={}", Hex(&self.encrypted))?;
        if !self.kcv.is_empty() {
            write!(f, " KCV={}", Hex(&self.kcv))?;
        }
        Ok(())
    }
}

/// PUT KEY command.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PutKey {
    /// P1 b7..b1: version of the key set replaced; 0 adds a new key set.
    pub replace_version: u8,
    /// P1 b8: more PUT KEY commands follow.
    pub more: bool,
    /// P2 b7..b1: identifier of the (first) key.
    pub key_id: u8,
    /// P2 b8: several keys in this command.
    pub multiple: bool,
    /// First data byte: the new key version number.
    pub new_version: u8,
    pub components: Vec<PutKeyComponent>,
    pub framing: Framing,
}

impl PutKey {
    /// Keys starting at identifier `key_id` (1 for an ENC/MAC/DEK set), `replace_version` 0 to
    /// add a key set.
    pub fn new(replace_version: u8, key_id: u8, new_version: u8, components: Vec<PutKeyComponent>) -> Self {
        let multiple = components.len() > 1;
        PutKey { replace_version, more: false, key_id, multiple, new_version, components, framing: Framing::GP_LE }
    }

    pub fn to_apdu(&self) -> CommandApdu {
        let mut data = vec![self.new_version];
        self.components.iter().for_each(|c| c.encode(&mut data));
        let p1 = (self.replace_version & 0x7F) | if self.more { 0x80 } else { 0 };
        let p2 = (self.key_id & 0x7F) | if self.multiple { 0x80 } else { 0 };
        self.framing.apdu(ins::PUT_KEY, p1, p2, data)
    }

    pub fn from_apdu(apdu: &CommandApdu) -> Result<Self, GpError> {
        const C: &str = "PUT KEY";
        check_gp(apdu, C, ins::PUT_KEY)?;
        let mut r = Reader::new(&apdu.data);
        let new_version = r.u8("PUT KEY new key version").ctx(C)?;
        if new_version == 0 || new_version > 0x7F {
            return Err(GpError::invalid(C, format!("new key version {new_version:02X} outside 01..7F")));
        }
        let mut components = Vec::new();
        while !r.is_empty() {
            let key_type = r.u8("PUT KEY key type").ctx(C)?;
            if key_type == 0xFF {
                return Err(GpError::invalid(C, "extended key data format (key type FF) is not supported"));
            }
            let len = tlv::read_length(&mut r).ctx(C)?;
            let kd = r.take(len, "PUT KEY key data").ctx(C)?;
            let (key_length, encrypted) = match (key_type, kd.split_first()) {
                (KEY_TYPE_AES, Some((&l, rest))) => (Some(l), rest.to_vec()),
                (KEY_TYPE_AES, None) => return Err(GpError::invalid(C, "AES key data without its length byte")),
                _ => (None, kd.to_vec()),
            };
            let kcv = super::read_lv(&mut r, "PUT KEY check value").ctx(C)?.to_vec();
            components.push(PutKeyComponent { key_type, key_length, encrypted, kcv });
        }
        if components.is_empty() {
            return Err(GpError::invalid(C, "no key data"));
        }
        Ok(PutKey {
            replace_version: apdu.p1 & 0x7F,
            more: apdu.p1 & 0x80 != 0,
            key_id: apdu.p2 & 0x7F,
            multiple: apdu.p2 & 0x80 != 0,
            new_version,
            components,
            framing: Framing::of(apdu),
        })
    }

    /// The response a card gives when it accepts this command.
    pub fn expected_response(&self) -> PutKeyResponse {
        PutKeyResponse { version: self.new_version, kcvs: self.components.iter().filter(|c| !c.kcv.is_empty()).map(|c| c.kcv.clone()).collect() }
    }
}

impl fmt::Display for PutKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PUT KEY ")?;
        if self.replace_version == 0 {
            write!(f, "add")?;
        } else {
            write!(f, "replace version {:02X}", self.replace_version)?;
        }
        write!(f, " -> version {:02X} key id {:02X}", self.new_version, self.key_id)?;
        if self.multiple {
            write!(f, " (multiple)")?;
        }
        if self.more {
            write!(f, " (more)")?;
        }
        for c in &self.components {
            write!(f, " [{c}]")?;
        }
        Ok(())
    }
}

/// PUT KEY response data: key version number ‖ the KCVs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PutKeyResponse {
    pub version: u8,
    pub kcvs: Vec<Vec<u8>>,
}

impl PutKeyResponse {
    /// Parses with 3-byte KCVs.
    pub fn parse(data: &[u8]) -> Result<Self, GpError> {
        Self::parse_with(data, 3)
    }
    pub fn parse_with(data: &[u8], kcv_len: usize) -> Result<Self, GpError> {
        const W: &str = "PUT KEY response";
        let (&version, rest) = data.split_first().ok_or_else(|| GpError::invalid(W, "empty"))?;
        if kcv_len == 0 || rest.len() % kcv_len != 0 {
            return Err(GpError::invalid(W, format!("{} byte(s) after the key version are not {kcv_len}-byte KCVs", rest.len())));
        }
        Ok(PutKeyResponse { version, kcvs: rest.chunks(kcv_len).map(<[u8]>::to_vec).collect() })
    }
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut v = vec![self.version];
        self.kcvs.iter().for_each(|k| v.extend_from_slice(k));
        v
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codec::Codec;
    use crate::hex::decode;

    #[test]
    fn aes_key_set_layout() {
        let enc = decode("D533E59B45A153ED7E5E9C5DFCFD4AAA").unwrap();
        let k = |e: &[u8]| PutKeyComponent::aes(16, e.to_vec(), decode("504A77").unwrap());
        let pk = PutKey::new(0, 1, 0x30, vec![k(&enc), k(&enc), k(&enc)]);
        let a = pk.to_apdu();
        assert_eq!(&a.header(), &[0x80, 0xD8, 0x00, 0x81]);
        assert_eq!(&a.data[..5], &[0x30, 0x88, 0x11, 0x10, 0xD5]);
        assert_eq!(a.data.len(), 1 + 3 * (2 + 17 + 4));
        assert_eq!(PutKey::from_apdu(&a).unwrap(), pk);
        let r = pk.expected_response();
        assert_eq!(PutKeyResponse::parse(&r.to_bytes()).unwrap(), r);
        assert!(PutKeyResponse::parse(&[0x30, 1, 2]).is_err());
        let des = PutKey::new(0x20, 1, 0x21, vec![PutKeyComponent::des(vec![0; 16], vec![1, 2, 3])]);
        assert_eq!(PutKey::from_apdu(&des.to_apdu()).unwrap(), des);
        for bad in ["80D800810130", "80D8008104308801AA", "80D8008103308800"] {
            let a = CommandApdu::from_bytes(&decode(bad).unwrap()).unwrap();
            assert!(PutKey::from_apdu(&a).is_err(), "{bad}");
        }
    }
}
