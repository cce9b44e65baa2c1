//! GET DATA (GPCS 2.3 §11.3): P1-P2 name the data object; the response is decoded by
//! [`GpDataObject`](super::data::GpDataObject).

use super::{Framing, GpError, OptHex, ins};
use crate::apdu::CommandApdu;
use std::fmt;

/// GET DATA command (GP class `80`/`84`, or ISO class `00` before a secure channel exists).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GetData {
    /// P1-P2: the tag of the object (`9F7F`, `0066`, `00E0`, …).
    pub tag: u16,
    /// Rarely used command data (e.g. a tag list).
    pub data: Vec<u8>,
    pub framing: Framing,
}

impl GetData {
    /// GET DATA in the GP class with `Le = 00`.
    pub fn new(tag: u16) -> Self {
        GetData { tag, data: Vec::new(), framing: Framing::GP_LE }
    }
    /// GET DATA in the ISO class (`00 CA`), as sent before authentication.
    pub fn iso(tag: u16) -> Self {
        GetData { tag, data: Vec::new(), framing: Framing::ISO_LE }
    }

    pub fn to_apdu(&self) -> CommandApdu {
        let [p1, p2] = self.tag.to_be_bytes();
        self.framing.apdu(ins::GET_DATA, p1, p2, self.data.clone())
    }

    pub fn from_apdu(apdu: &CommandApdu) -> Result<Self, GpError> {
        const C: &str = "GET DATA";
        super::check_ins(apdu, C, ins::GET_DATA)?;
        if apdu.cla == 0xFF {
            return Err(GpError::WrongClass { command: C, cla: apdu.cla, detail: "FF is not a class" });
        }
        Ok(GetData { tag: u16::from_be_bytes([apdu.p1, apdu.p2]), data: apdu.data.clone(), framing: Framing::of(apdu) })
    }
}

impl fmt::Display for GetData {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "GET DATA {:04X}", self.tag)?;
        if let Some(n) = super::data::tag_name(self.tag) {
            write!(f, " ({n})")?;
        }
        if !self.data.is_empty() {
            write!(f, " data={}", OptHex(&self.data))?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codec::Codec;
    use crate::hex::decode;

    #[test]
    fn round_trip() {
        for h in ["80CA9F7F00", "00CA006600", "80CA00A500"] {
            let a = CommandApdu::from_bytes(&decode(h).unwrap()).unwrap();
            let g = GetData::from_apdu(&a).unwrap();
            assert_eq!(g.to_apdu(), a);
        }
        assert_eq!(GetData::new(0x9F7F).to_apdu().to_bytes(), decode("80CA9F7F00").unwrap());
        assert_eq!(GetData::from_apdu(&GetData::iso(0xCF).to_apdu()).unwrap(), GetData::iso(0xCF));
        assert_eq!(GetData::new(0x66).to_string(), "GET DATA 0066 (Card Recognition Data)");
    }
}
