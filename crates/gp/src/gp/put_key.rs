//! PUT KEY (GPCS 2.3 §11.8; AES keys per Amendment D §7.2): the command carries keys already
//! encrypted under the DEK (the secure channel layer encrypts, not this module) and their KCVs.
//! The response is the key version number followed by the KCVs.
//!
//! An asymmetric key travels as several components, the key check value after the last one
//! (GPCS 2.3 §11.8.2.3): an ECC public key is `B0` (the SEC 1 point, in clear) followed by
//! `F0` (the key parameters reference: `00` = NIST P-256 in GPCS 2.3's list of key parameter
//! references) or by explicit curve parameters `B2`..`B7`; an RSA public key is `A1` (modulus) then `A0`
//! (exponent). [`PutKeyComponent::more`] holds the components after the first.

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
/// ECC public key (GPCS 2.3 Table 11-16): the SEC 1 point, not encrypted.
pub const KEY_TYPE_ECC_PUBLIC: u8 = 0xB0;
/// ECC key parameters reference (GPCS 2.3 Table 11-16): one byte naming the curve.
pub const KEY_TYPE_ECC_PARAMETERS_REFERENCE: u8 = 0xF0;
/// Key parameters reference of NIST P-256 (secp256r1).
pub const ECC_PARAMETERS_P256: u8 = 0x00;
/// RSA public exponent, the component after the modulus `A1`.
pub const KEY_TYPE_RSA_PUBLIC_EXPONENT: u8 = 0xA0;
/// RSA public modulus.
pub const KEY_TYPE_RSA_PUBLIC_MODULUS: u8 = 0xA1;

/// Whether a component of type `next` continues the key that began with a component of type
/// `first` (rather than a key check value length following it).
fn continues(first: u8, next: u8) -> bool {
    match first {
        // ECC public or private key: explicit curve parameters or their reference.
        0xB0 | 0xB1 => matches!(next, 0xB2..=0xB7 | KEY_TYPE_ECC_PARAMETERS_REFERENCE),
        KEY_TYPE_RSA_PUBLIC_MODULUS => next == KEY_TYPE_RSA_PUBLIC_EXPONENT,
        _ => false,
    }
}

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
    /// Further components of the same key (type, value), before the key check value: the
    /// curve of an ECC key, the exponent of an RSA key. Empty for symmetric keys.
    pub more: Vec<(u8, Vec<u8>)>,
}

impl PutKeyComponent {
    /// An AES key of `key_length` bytes.
    pub fn aes(key_length: u8, encrypted: Vec<u8>, kcv: Vec<u8>) -> Self {
        PutKeyComponent { key_type: KEY_TYPE_AES, key_length: Some(key_length), encrypted, kcv, more: Vec::new() }
    }
    /// A (3)DES key (type `80`).
    pub fn des(encrypted: Vec<u8>, kcv: Vec<u8>) -> Self {
        PutKeyComponent { key_type: KEY_TYPE_DES, key_length: None, encrypted, kcv, more: Vec::new() }
    }
    /// An ECC public key on NIST P-256: `B0` with the uncompressed SEC 1 point (in clear, it
    /// is public), then `F0 01 00` (key parameters reference P-256), no key check value.
    pub fn ecc_public_p256(point: Vec<u8>) -> Self {
        PutKeyComponent {
            key_type: KEY_TYPE_ECC_PUBLIC,
            key_length: None,
            encrypted: point,
            kcv: Vec::new(),
            more: vec![(KEY_TYPE_ECC_PARAMETERS_REFERENCE, vec![ECC_PARAMETERS_P256])],
        }
    }

    fn encode(&self, out: &mut Vec<u8>) {
        out.push(self.key_type);
        let mut kd = Vec::new();
        kd.extend(self.key_length);
        kd.extend_from_slice(&self.encrypted);
        tlv::encode_length(kd.len(), out);
        out.extend_from_slice(&kd);
        for (t, v) in &self.more {
            out.push(*t);
            tlv::encode_length(v.len(), out);
            out.extend_from_slice(v);
        }
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
        let what = if matches!(self.key_type, 0xA0 | 0xA1 | 0xB0) { "value" } else { "encrypted" };
        write!(f, " {what}={}", Hex(&self.encrypted))?;
        for (t, v) in &self.more {
            write!(f, " {}({t:02X})={}", super::data::key_type_name(*t as u16), Hex(v))?;
        }
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
            let mut more = Vec::new();
            while let Some(next) = r.peek_u8().filter(|&n| continues(key_type, n)) {
                r.u8("PUT KEY key type").ctx(C)?;
                let len = tlv::read_length(&mut r).ctx(C)?;
                more.push((next, r.take(len, "PUT KEY key component").ctx(C)?.to_vec()));
            }
            let kcv = super::read_lv(&mut r, "PUT KEY check value").ctx(C)?.to_vec();
            components.push(PutKeyComponent { key_type, key_length, encrypted, kcv, more });
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
        // An ECC public key: B0 point, F0 01 00, then the KCV length 00 (GPCS 2.3 §11.8.2.3).
        let point: Vec<u8> = std::iter::once(0x04).chain(1..=64).collect();
        let ecc = PutKey::new(0, 1, 0x70, vec![PutKeyComponent::ecc_public_p256(point.clone())]);
        let a = ecc.to_apdu();
        assert_eq!(&a.data[..3], &[0x70, 0xB0, 0x41]);
        assert_eq!(&a.data[3 + 65..], &[0xF0, 0x01, 0x00, 0x00]);
        assert_eq!(PutKey::from_apdu(&a).unwrap(), ecc);
        assert_eq!(ecc.expected_response().to_bytes(), vec![0x70], "no KCV for a public key");
        for bad in ["80D800810130", "80D8008104308801AA", "80D8008103308800", "80D8000106 70 B0 01 04 F0 01"] {
            let a = CommandApdu::from_bytes(&decode(bad).unwrap()).unwrap();
            assert!(PutKey::from_apdu(&a).is_err(), "{bad}");
        }
    }
}
