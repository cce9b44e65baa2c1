//! SELECT by name (ISO/IEC 7816-4 §11.2.2, GPCS 2.3 §11.9) and the FCI a security domain
//! answers with.

use super::{Context, Framing, GpError, check_iso, ins};
use crate::apdu::CommandApdu;
use crate::codec::Reader;
use crate::hex::Hex;
use crate::tlv::{self, Tlv, TlvIter, TlvRef};
use std::fmt;

/// SELECT command. GP uses P1 = `04` (select by DF name / AID); P2 `00` first or only
/// occurrence, `02` next occurrence.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Select {
    pub p1: u8,
    pub p2: u8,
    /// The AID or AID prefix; empty selects the default application (the ISD).
    pub name: Vec<u8>,
    pub framing: Framing,
}

impl Select {
    pub const BY_NAME: u8 = 0x04;
    pub const FIRST: u8 = 0x00;
    pub const NEXT: u8 = 0x02;

    /// SELECT by AID (or AID prefix), first occurrence, `Le = 00`.
    pub fn by_name(name: &[u8]) -> Self {
        Select { p1: Self::BY_NAME, p2: Self::FIRST, name: name.to_vec(), framing: Framing::ISO_LE }
    }
    /// SELECT with no AID: the card selects its default application.
    pub fn default_application() -> Self {
        Self::by_name(&[])
    }
    /// The same selection asking for the next occurrence of a partial name.
    pub fn next(&self) -> Self {
        Select { p2: Self::NEXT, ..self.clone() }
    }

    pub fn to_apdu(&self) -> CommandApdu {
        self.framing.apdu(ins::SELECT, self.p1, self.p2, self.name.clone())
    }

    pub fn from_apdu(apdu: &CommandApdu) -> Result<Self, GpError> {
        const C: &str = "SELECT";
        check_iso(apdu, C, ins::SELECT)?;
        if apdu.p1 == Self::BY_NAME && apdu.data.len() > 16 {
            return Err(GpError::AidLength { what: "SELECT by name", len: apdu.data.len() });
        }
        Ok(Select { p1: apdu.p1, p2: apdu.p2, name: apdu.data.clone(), framing: Framing::of(apdu) })
    }
}

impl fmt::Display for Select {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SELECT")?;
        if self.p1 != Self::BY_NAME {
            write!(f, " P1={:02X}", self.p1)?;
        }
        if self.name.is_empty() {
            write!(f, " (default application)")?;
        } else {
            write!(f, " {}", Hex(&self.name))?;
        }
        match self.p2 & 0x03 {
            0x00 => {}
            0x02 => write!(f, " next occurrence")?,
            x => write!(f, " occurrence={x:02X}")?,
        }
        if self.p2 & 0xFC != 0 {
            write!(f, " P2={:02X}", self.p2)?;
        }
        Ok(())
    }
}

/// File control information returned by SELECT (`6F`: `84` DF name, `A5` proprietary data).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Fci {
    /// `84`: the AID of the selected application.
    pub aid: Option<Vec<u8>>,
    /// `A5` children (e.g. `73` security domain management data, `9F65` maximum length of
    /// command data, `9F6E` application production life cycle data).
    pub proprietary: Vec<Tlv>,
    /// Other tags of the `6F` template.
    pub other: Vec<Tlv>,
}

impl Fci {
    pub fn parse(data: &[u8]) -> Result<Self, GpError> {
        const W: &str = "FCI";
        let mut r = Reader::new(data);
        let t = TlvRef::read(&mut r).ctx(W)?;
        r.expect_end(W).ctx(W)?;
        if t.tag.0 != 0x6F {
            return Err(GpError::UnexpectedTag { what: W, expected: tlv::Tag(0x6F), found: t.tag });
        }
        let mut fci = Fci::default();
        for c in TlvIter::new(t.value) {
            let c = c.ctx(W)?;
            match c.tag.0 {
                0x84 if fci.aid.is_none() => fci.aid = Some(c.value.to_vec()),
                0xA5 if fci.proprietary.is_empty() => {
                    fci.proprietary = tlv::parse_all(c.value).ctx(W)?.iter().map(TlvRef::to_owned).collect()
                }
                _ => fci.other.push(c.to_owned()),
            }
        }
        Ok(fci)
    }

    pub fn to_bytes(&self) -> Vec<u8> {
        let mut v = Vec::new();
        if let Some(a) = &self.aid {
            tlv::put(&mut v, 0x84, a);
        }
        if !self.proprietary.is_empty() {
            let mut p = Vec::new();
            self.proprietary.iter().for_each(|t| tlv::put(&mut p, t.tag.0, &t.value));
            tlv::put(&mut v, 0xA5, &p);
        }
        self.other.iter().for_each(|t| tlv::put(&mut v, t.tag.0, &t.value));
        let mut out = Vec::new();
        tlv::put(&mut out, 0x6F, &v);
        out
    }

    /// `9F65`: maximum length of data field in a command message.
    pub fn max_command_data_length(&self) -> Option<u32> {
        let t = self.proprietary.iter().find(|t| t.tag.0 == 0x9F65)?;
        (t.value.len() <= 4).then(|| t.value.iter().fold(0u32, |a, &b| a << 8 | b as u32))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codec::Codec;
    use crate::hex::decode;

    #[test]
    fn select_and_fci() {
        let a = CommandApdu::from_bytes(&decode("00A4040009A0000001514352530000").unwrap()).unwrap();
        let s = Select::from_apdu(&a).unwrap();
        assert_eq!(s, Select::by_name(&decode("A00000015143525300").unwrap()));
        assert_eq!(s.to_apdu(), a);
        let d = CommandApdu::from_bytes(&decode("00A4040000").unwrap()).unwrap();
        assert_eq!(Select::from_apdu(&d).unwrap(), Select::default_application());
        assert!(Select::from_apdu(&CommandApdu::new(0x80, 0xA4, 4, 0)).is_err());
        let r = decode("6F108408A000000151000000A5049F6501FF").unwrap();
        let fci = Fci::parse(&r).unwrap();
        assert_eq!(fci.aid.as_deref(), Some(&decode("A000000151000000").unwrap()[..]));
        assert_eq!(fci.max_command_data_length(), Some(0xFF));
        assert_eq!(fci.to_bytes(), r);
    }
}
