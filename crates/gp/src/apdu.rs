//! Command and response APDUs (ISO/IEC 7816-3 §12.1, ISO/IEC 7816-4 §5.1): cases 1 to 4 in
//! short and extended form.

use crate::codec::{Codec, DecodeError, Reader};
use crate::hex::Hex;
use crate::sw::StatusWord;
use std::fmt;

/// Class byte bits: GP proprietary class, secure messaging indication.
pub const CLA_GP: u8 = 0x80;
pub const CLA_SECURE_MESSAGING: u8 = 0x04;

/// A command APDU. `le` is the number of bytes expected (`Ne`): `Some(256)` is short `Le=00`,
/// `Some(65536)` extended `Le=0000`. `extended` keeps the wire form a parsed APDU had, so that
/// re-encoding a received command is byte-exact.
#[derive(Clone, PartialEq, Eq, Default)]
pub struct CommandApdu {
    pub cla: u8,
    pub ins: u8,
    pub p1: u8,
    pub p2: u8,
    pub data: Vec<u8>,
    pub le: Option<usize>,
    pub extended: bool,
}

/// ISO 7816-3 command cases.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Case {
    /// No data, no Le.
    One,
    /// Le only.
    Two,
    /// Data only.
    Three,
    /// Data and Le.
    Four,
}

impl CommandApdu {
    pub fn new(cla: u8, ins: u8, p1: u8, p2: u8) -> Self {
        CommandApdu { cla, ins, p1, p2, ..Default::default() }
    }
    pub fn with_data(mut self, data: impl Into<Vec<u8>>) -> Self {
        self.data = data.into();
        self
    }
    pub fn with_le(mut self, le: usize) -> Self {
        self.le = Some(le);
        self
    }
    pub fn case(&self) -> Case {
        match (self.data.is_empty(), self.le.is_some()) {
            (true, false) => Case::One,
            (true, true) => Case::Two,
            (false, false) => Case::Three,
            (false, true) => Case::Four,
        }
    }
    /// True when the encoding must use the extended form.
    pub fn needs_extended(&self) -> bool {
        self.data.len() > 255 || self.le.is_some_and(|le| le > 256)
    }
    pub fn header(&self) -> [u8; 4] {
        [self.cla, self.ins, self.p1, self.p2]
    }
    /// Logical channel number from the class byte (ISO 7816-4 §5.4.1), 0..=19.
    pub fn logical_channel(&self) -> u8 {
        if self.cla & 0x40 == 0 { self.cla & 0x03 } else { 4 + (self.cla & 0x0F) }
    }
    /// True for a GP secure-messaging class byte (bit 3 for first interindustry classes,
    /// bit 6 for further ones).
    pub fn is_secure_messaging(&self) -> bool {
        if self.cla & 0x40 == 0 { self.cla & 0x04 != 0 } else { self.cla & 0x20 != 0 }
    }
}

impl Codec for CommandApdu {
    fn encode(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.header());
        let ext = self.extended || self.needs_extended();
        let nc = self.data.len();
        if nc > 0 {
            if ext {
                out.push(0);
                out.extend_from_slice(&(nc as u16).to_be_bytes());
            } else {
                out.push(nc as u8);
            }
            out.extend_from_slice(&self.data);
        }
        if let Some(le) = self.le {
            if ext {
                if nc == 0 {
                    out.push(0);
                }
                out.extend_from_slice(&((le.min(65536) & 0xFFFF) as u16).to_be_bytes());
            } else {
                out.push((le.min(256) & 0xFF) as u8);
            }
        }
    }

    fn read(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        const W: &str = "command APDU";
        let b = r.take_rest();
        if b.len() < 4 {
            return Err(DecodeError::Truncated { what: W, needed: 4 - b.len(), available: b.len() });
        }
        let mut c = CommandApdu::new(b[0], b[1], b[2], b[3]);
        let body = &b[4..];
        let short_le = |x: u8| if x == 0 { 256 } else { x as usize };
        let ext_le = |hi: u8, lo: u8| match u16::from_be_bytes([hi, lo]) {
            0 => 65536,
            n => n as usize,
        };
        match body.len() {
            0 => {}
            1 => c.le = Some(short_le(body[0])),
            _ if body[0] != 0 => {
                let lc = body[0] as usize;
                match body.len() - 1 {
                    n if n == lc => c.data = body[1..].to_vec(),
                    n if n == lc + 1 => {
                        c.data = body[1..=lc].to_vec();
                        c.le = Some(short_le(body[lc + 1]));
                    }
                    n => {
                        return Err(DecodeError::invalid(W, format!("Lc={lc} but {n} byte(s) follow")));
                    }
                }
            }
            3 => {
                c.extended = true;
                c.le = Some(ext_le(body[1], body[2]));
            }
            n if n > 3 => {
                c.extended = true;
                let lc = u16::from_be_bytes([body[1], body[2]]) as usize;
                if lc == 0 {
                    return Err(DecodeError::invalid(W, "extended Lc of zero"));
                }
                match n - 3 {
                    m if m == lc => c.data = body[3..].to_vec(),
                    m if m == lc + 2 => {
                        c.data = body[3..3 + lc].to_vec();
                        c.le = Some(ext_le(body[3 + lc], body[4 + lc]));
                    }
                    m => return Err(DecodeError::invalid(W, format!("extended Lc={lc} but {m} byte(s) follow"))),
                }
            }
            n => return Err(DecodeError::invalid(W, format!("{n} byte(s) after the header fit no APDU case"))),
        }
        Ok(c)
    }
}

impl fmt::Debug for CommandApdu {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", Hex(&self.to_bytes()))
    }
}

/// A response APDU: data and status word.
#[derive(Clone, PartialEq, Eq)]
pub struct ResponseApdu {
    pub data: Vec<u8>,
    pub sw: StatusWord,
}

impl ResponseApdu {
    pub fn new(data: impl Into<Vec<u8>>, sw: StatusWord) -> Self {
        ResponseApdu { data: data.into(), sw }
    }
    pub fn status(sw: StatusWord) -> Self {
        ResponseApdu { data: Vec::new(), sw }
    }
    pub fn is_success(&self) -> bool {
        self.sw.is_success()
    }
}

impl Codec for ResponseApdu {
    fn encode(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.data);
        out.extend_from_slice(&self.sw.to_bytes());
    }
    fn read(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        let b = r.take_rest();
        if b.len() < 2 {
            return Err(DecodeError::Truncated { what: "response APDU", needed: 2 - b.len(), available: b.len() });
        }
        let (data, sw) = b.split_at(b.len() - 2);
        Ok(ResponseApdu { data: data.to_vec(), sw: StatusWord::new(sw[0], sw[1]) })
    }
}

impl fmt::Debug for ResponseApdu {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {:?}", Hex(&self.data), self.sw)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hex::decode;

    fn rt(hex: &str) -> CommandApdu {
        let b = decode(hex).unwrap();
        let c = CommandApdu::from_bytes(&b).unwrap();
        assert_eq!(c.to_bytes(), b, "round trip of {hex}");
        c
    }

    #[test]
    fn all_cases_short_and_extended() {
        assert_eq!(rt("80F22002").case(), Case::One);
        assert_eq!(rt("80CA006600").le, Some(256));
        let c3 = rt("80F220020A4F0212345C054F9F70C5");
        assert_eq!((c3.case(), c3.data.len()), (Case::Three, 10));
        let c4 = rt("80F28002024F0000");
        assert_eq!((c4.case(), c4.le), (Case::Four, Some(256)));
        let e2 = rt("80CA0066000000");
        assert_eq!((e2.case(), e2.le, e2.extended), (Case::Two, Some(65536), true));
        let e3 = rt("80E80000000003010203");
        assert_eq!((e3.case(), e3.data, e3.extended), (Case::Three, vec![1, 2, 3], true));
        let e4 = rt("80E800000000030102030100");
        assert_eq!((e4.case(), e4.le), (Case::Four, Some(256)));
    }

    #[test]
    fn malformed_commands() {
        for bad in ["80", "80F220", "80F2200203AA", "80F220020000", "80F22002000002AA", "80F220020001AA0000AA"] {
            assert!(CommandApdu::from_bytes(&decode(bad).unwrap()).is_err(), "{bad}");
        }
    }

    #[test]
    fn long_data_goes_extended() {
        let c = CommandApdu::new(0x80, 0xE8, 0, 0).with_data(vec![0xAA; 300]).with_le(256);
        let b = c.to_bytes();
        assert_eq!(&b[4..7], &[0x00, 0x01, 0x2C]);
        assert_eq!(&b[b.len() - 2..], &[0x01, 0x00]);
        assert_eq!(CommandApdu::from_bytes(&b).unwrap().data.len(), 300);
    }

    #[test]
    fn response() {
        let r = ResponseApdu::from_bytes(&decode("E3009000").unwrap()).unwrap();
        assert_eq!(r.data, vec![0xE3, 0]);
        assert_eq!(r.sw, StatusWord::SUCCESS);
        assert!(ResponseApdu::from_bytes(&[0x90]).is_err());
    }
}
