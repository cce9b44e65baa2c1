//! DELETE (GPCS 2.3 §11.2): card content (`4F` AIDs, optional delegated-management `B6`
//! control reference template and `9E` token) or keys (`D0` key identifier, `D2` key version).

use super::{Aid, Context, Framing, GpError, check_gp, ins};
use crate::apdu::CommandApdu;
use crate::hex::Hex;
use crate::tlv::{self, TlvIter};
use std::fmt;

/// What DELETE removes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DeleteTarget {
    /// Load files, applications or security domains by AID (`4F`; normally one).
    Objects(Vec<Aid>),
    /// Keys: by identifier, version or both (at least one).
    Key { id: Option<u8>, version: Option<u8> },
}

/// DELETE command.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Delete {
    pub target: DeleteTarget,
    /// P2 b8: delete the object and its related objects (a load file and its applications).
    pub related: bool,
    /// P1 b8: more DELETE commands follow.
    pub more: bool,
    /// `B6` control reference template for a delegated-management token.
    pub crt: Option<Vec<u8>>,
    /// `9E` delete token.
    pub token: Option<Vec<u8>>,
    pub framing: Framing,
}

impl Delete {
    /// Delete one object (`related` also deletes a load file's applications).
    pub fn object(aid: Aid, related: bool) -> Self {
        Delete { target: DeleteTarget::Objects(vec![aid]), related, more: false, crt: None, token: None, framing: Framing::GP_LE }
    }
    pub fn key(id: Option<u8>, version: Option<u8>) -> Self {
        Delete { target: DeleteTarget::Key { id, version }, related: false, more: false, crt: None, token: None, framing: Framing::GP_LE }
    }

    fn data_without_token(&self) -> Vec<u8> {
        let mut d = Vec::new();
        match &self.target {
            DeleteTarget::Objects(aids) => aids.iter().for_each(|a| tlv::put(&mut d, 0x4F, a.as_bytes())),
            DeleteTarget::Key { id, version } => {
                if let Some(i) = id {
                    tlv::put(&mut d, 0xD0, &[*i]);
                }
                if let Some(v) = version {
                    tlv::put(&mut d, 0xD2, &[*v]);
                }
            }
        }
        if let Some(c) = &self.crt {
            tlv::put(&mut d, 0xB6, c);
        }
        d
    }

    pub fn p1(&self) -> u8 {
        if self.more { 0x80 } else { 0x00 }
    }
    pub fn p2(&self) -> u8 {
        if self.related { 0x80 } else { 0x00 }
    }

    pub fn to_apdu(&self) -> CommandApdu {
        let mut d = self.data_without_token();
        if let Some(t) = &self.token {
            tlv::put(&mut d, 0x9E, t);
        }
        self.framing.apdu(ins::DELETE, self.p1(), self.p2(), d)
    }

    pub fn from_apdu(apdu: &CommandApdu) -> Result<Self, GpError> {
        const C: &str = "DELETE";
        check_gp(apdu, C, ins::DELETE)?;
        if apdu.p1 & 0x7F != 0 || apdu.p2 & 0x7F != 0 {
            return Err(GpError::params(C, apdu, "only P1 b8 (more) and P2 b8 (related objects) are defined"));
        }
        let (mut aids, mut id, mut version, mut crt, mut token) = (Vec::new(), None, None, None, None);
        let one = |v: &[u8], what: &str| match v {
            [b] => Ok(*b),
            _ => Err(GpError::invalid(C, format!("{what} must have 1 byte, has {}", v.len()))),
        };
        for t in TlvIter::new(&apdu.data) {
            let t = t.ctx(C)?;
            if token.is_some() {
                return Err(GpError::invalid(C, format!("tag {} after the token 9E", t.tag)));
            }
            match t.tag.0 {
                0x4F if crt.is_none() => aids.push(Aid::from_slice_for(t.value, "DELETE AID (4F)")?),
                0xD0 if id.is_none() && version.is_none() && crt.is_none() => id = Some(one(t.value, "key identifier D0")?),
                0xD2 if version.is_none() && crt.is_none() => version = Some(one(t.value, "key version D2")?),
                0xB6 if crt.is_none() => crt = Some(t.value.to_vec()),
                0x9E => token = Some(t.value.to_vec()),
                _ => return Err(GpError::invalid(C, format!("unexpected or repeated tag {}", t.tag))),
            }
        }
        let target = match (aids.is_empty(), id.is_some() || version.is_some()) {
            (false, false) => DeleteTarget::Objects(aids),
            (true, true) => DeleteTarget::Key { id, version },
            (true, false) => return Err(GpError::MissingTag { what: C, tag: tlv::Tag(0x4F) }),
            (false, true) => return Err(GpError::invalid(C, "both AIDs (4F) and key references (D0/D2)")),
        };
        Ok(Delete { target, related: apdu.p2 & 0x80 != 0, more: apdu.p1 & 0x80 != 0, crt, token, framing: Framing::of(apdu) })
    }

    /// What a delete token signs (GPCS 2.3 §C.4.1): P1 ‖ P2 ‖ Lc ‖ the data field without the
    /// token TLV.
    pub fn token_signature_data(&self) -> Vec<u8> {
        super::install::signature_input(self.p1(), self.p2(), &self.data_without_token())
    }
}

impl fmt::Display for Delete {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "DELETE")?;
        match &self.target {
            DeleteTarget::Objects(aids) => {
                for a in aids {
                    write!(f, " {a}")?;
                }
                if self.related {
                    write!(f, " and related objects")?;
                }
            }
            DeleteTarget::Key { id, version } => {
                write!(f, " key")?;
                if let Some(i) = id {
                    write!(f, " id={i:02X}")?;
                }
                if let Some(v) = version {
                    write!(f, " version={v:02X}")?;
                }
            }
        }
        if self.more {
            write!(f, " (more)")?;
        }
        if let Some(c) = &self.crt {
            write!(f, " CRT={}", Hex(c))?;
        }
        if let Some(t) = &self.token {
            write!(f, " token={}", Hex(t))?;
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
    fn forms() {
        let a = CommandApdu::from_bytes(&decode("80E400800A4F08A00100015141434C").unwrap()).unwrap();
        let d = Delete::from_apdu(&a).unwrap();
        assert!(d.related);
        assert_eq!(d.to_apdu(), a);
        for d in [Delete::object(Aid::GP_ISD, false), Delete::key(Some(1), Some(0x30)), Delete::key(None, Some(0x30))] {
            assert_eq!(Delete::from_apdu(&d.to_apdu()).unwrap(), d);
        }
        let mut t = Delete::object(Aid::GP_ISD, true);
        t.token = Some(vec![1, 2, 3]);
        assert_eq!(Delete::from_apdu(&t.to_apdu()).unwrap(), t);
        assert_eq!(t.token_signature_data(), decode("0080 0A 4F08A000000151000000").unwrap());
        for bad in ["80E40000", "80E40000039E0101", "80E40000064F0412345678", "80E4000003D00201"] {
            let a = CommandApdu::from_bytes(&decode(bad).unwrap()).unwrap();
            assert!(Delete::from_apdu(&a).is_err(), "{bad}");
        }
    }
}
