//! Application identifiers (ISO/IEC 7816-5): 5 to 16 bytes, a 5-byte RID and a PIX.

use super::GpError;
use crate::hex::Hex;
use std::fmt;
use std::str::FromStr;

/// An AID of 5 to 16 bytes. `Display` and `FromStr` use hex; serde writes a hex string.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Aid {
    len: u8,
    bytes: [u8; 16],
}

impl Aid {
    pub const MIN_LEN: usize = 5;
    pub const MAX_LEN: usize = 16;

    /// The Issuer Security Domain AID of GPCS 2.2+ (`A000000151000000`).
    pub const GP_ISD: Aid = Aid::from_array([0xA0, 0x00, 0x00, 0x01, 0x51, 0x00, 0x00, 0x00]);
    /// The ISD AID of GP 2.1.1 cards (`A0000001510000`).
    pub const GP_ISD_211: Aid = Aid::from_array([0xA0, 0x00, 0x00, 0x01, 0x51, 0x00, 0x00]);
    /// The Visa / Open Platform card manager AID still used by many cards (`A000000003000000`).
    pub const CARD_MANAGER_LEGACY: Aid = Aid::from_array([0xA0, 0x00, 0x00, 0x00, 0x03, 0x00, 0x00, 0x00]);
    /// The Contactless Registry Service (GPCS Amendment C, `A00000015143525300`).
    pub const CRS: Aid = Aid::from_array([0xA0, 0x00, 0x00, 0x01, 0x51, 0x43, 0x52, 0x53, 0x00]);

    /// An AID from a fixed array; fails to compile in const context when `N` is not 5..=16.
    pub const fn from_array<const N: usize>(a: [u8; N]) -> Aid {
        assert!(N >= Self::MIN_LEN && N <= Self::MAX_LEN, "an AID has 5 to 16 bytes");
        let mut bytes = [0u8; 16];
        let mut i = 0;
        while i < N {
            bytes[i] = a[i];
            i += 1;
        }
        Aid { len: N as u8, bytes }
    }

    pub fn new(bytes: &[u8]) -> Result<Aid, GpError> {
        Aid::from_slice_for(bytes, "AID")
    }

    /// Like [`Aid::new`], naming the field in the error.
    pub(crate) fn from_slice_for(bytes: &[u8], what: &'static str) -> Result<Aid, GpError> {
        if !(Self::MIN_LEN..=Self::MAX_LEN).contains(&bytes.len()) {
            return Err(GpError::AidLength { what, len: bytes.len() });
        }
        let mut a = [0u8; 16];
        a[..bytes.len()].copy_from_slice(bytes);
        Ok(Aid { len: bytes.len() as u8, bytes: a })
    }

    pub fn as_bytes(&self) -> &[u8] {
        &self.bytes[..self.len as usize]
    }
    pub fn len(&self) -> usize {
        self.len as usize
    }
    /// Always false (an AID has at least 5 bytes); present for API symmetry.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
    /// Registered application provider identifier: the first 5 bytes.
    pub fn rid(&self) -> &[u8] {
        &self.bytes[..5]
    }
    /// Proprietary application identifier extension: the bytes after the RID.
    pub fn pix(&self) -> &[u8] {
        &self.bytes[5..self.len as usize]
    }
    pub fn starts_with(&self, prefix: &[u8]) -> bool {
        self.as_bytes().starts_with(prefix)
    }
    pub fn to_vec(&self) -> Vec<u8> {
        self.as_bytes().to_vec()
    }
}

impl AsRef<[u8]> for Aid {
    fn as_ref(&self) -> &[u8] {
        self.as_bytes()
    }
}

impl TryFrom<&[u8]> for Aid {
    type Error = GpError;
    fn try_from(b: &[u8]) -> Result<Self, GpError> {
        Aid::new(b)
    }
}

impl fmt::Display for Aid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", Hex(self.as_bytes()))
    }
}

impl fmt::Debug for Aid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Aid({})", Hex(self.as_bytes()))
    }
}

impl FromStr for Aid {
    type Err = GpError;
    fn from_str(s: &str) -> Result<Self, GpError> {
        let b = crate::hex::decode(s).map_err(|source| GpError::Hex { what: "AID", source })?;
        Aid::new(&b)
    }
}

impl serde::Serialize for Aid {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.to_string())
    }
}

impl<'de> serde::Deserialize<'de> for Aid {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = <String as serde::Deserialize>::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lengths_hex_and_parts() {
        assert_eq!(Aid::GP_ISD.to_string(), "A000000151000000");
        assert_eq!(Aid::CARD_MANAGER_LEGACY.to_string(), "A000000003000000");
        let a: Aid = "d0d1d2d3d4d50101".parse().unwrap();
        assert_eq!(a.rid(), &[0xD0, 0xD1, 0xD2, 0xD3, 0xD4]);
        assert_eq!(a.pix(), &[0xD5, 0x01, 0x01]);
        assert!(Aid::new(&[1, 2, 3, 4]).is_err());
        assert!(Aid::new(&[0; 17]).is_err());
        assert!(Aid::new(&[0; 16]).is_ok());
        assert_eq!("A0000001".parse::<Aid>().unwrap_err().code(), "gp.aid_length");
        assert_eq!("A00000015G".parse::<Aid>().unwrap_err().code(), "gp.hex");
    }

    #[test]
    fn serde_as_hex_string() {
        let j = serde_json::to_string(&Aid::GP_ISD).unwrap();
        assert_eq!(j, "\"A000000151000000\"");
        let back: Aid = serde_json::from_str(&j).unwrap();
        assert_eq!(back, Aid::GP_ISD);
        assert!(serde_json::from_str::<Aid>("\"A0\"").is_err());
    }
}
