//! SET STATUS (GPCS 2.3 §11.10; availability of the Amendment C CRS): change the life cycle
//! state of the card, an application or security domain, or a security domain and its
//! applications.

use super::lifecycle::{AppLifeCycle, CardLifeCycle, SdLifeCycle};
use super::{Aid, Context, Framing, GpError, check_gp, ins};
use crate::apdu::CommandApdu;
use crate::hex::Hex;
use crate::tlv::{self, Tlv};
use std::fmt;

/// SET STATUS P1: what changes state.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub struct SetStatusScope(pub u8);

impl SetStatusScope {
    /// The issuer security domain / the card.
    pub const ISD: Self = Self(0x80);
    /// An application or a supplementary security domain.
    pub const APPLICATION: Self = Self(0x40);
    /// A security domain and its associated applications.
    pub const SD_AND_APPLICATIONS: Self = Self(0x60);
    /// GP Amendment C: availability state on the contactless interface (CRS).
    pub const AVAILABILITY: Self = Self(0x01);

    fn is_gp(self) -> bool {
        self.0 & 0xE0 != 0
    }
}

/// The data field of SET STATUS.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SetStatusTarget {
    /// No data (the card itself with P1 = 80).
    None,
    /// The AID, as raw data (GP scopes).
    Aid(Aid),
    /// TLVs (the CRS takes `4F` and further tags).
    Tlvs(Vec<Tlv>),
}

/// SET STATUS command.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SetStatus {
    pub scope: SetStatusScope,
    /// P2: the new state.
    pub state: u8,
    pub target: SetStatusTarget,
    pub framing: Framing,
}

impl SetStatus {
    /// New card life cycle state (P1 = 80, no data).
    pub fn card(state: CardLifeCycle) -> Self {
        SetStatus { scope: SetStatusScope::ISD, state: state.0, target: SetStatusTarget::None, framing: Framing::GP }
    }
    /// New state of an application or SD.
    pub fn application(aid: Aid, state: u8) -> Self {
        SetStatus { scope: SetStatusScope::APPLICATION, state, target: SetStatusTarget::Aid(aid), framing: Framing::GP }
    }
    /// New state of an SD and its applications.
    pub fn security_domain_and_applications(aid: Aid, state: u8) -> Self {
        SetStatus { scope: SetStatusScope::SD_AND_APPLICATIONS, state, target: SetStatusTarget::Aid(aid), framing: Framing::GP }
    }
    /// CRS: activate (`true`) or deactivate an application on the contactless interface.
    pub fn availability(aid: Aid, activate: bool) -> Self {
        SetStatus {
            scope: SetStatusScope::AVAILABILITY,
            state: activate as u8,
            target: SetStatusTarget::Tlvs(vec![Tlv::new(0x4F, aid.to_vec())]),
            framing: Framing::GP_LE,
        }
    }

    /// The AID concerned (raw or in `4F`).
    pub fn aid(&self) -> Option<Aid> {
        match &self.target {
            SetStatusTarget::Aid(a) => Some(*a),
            SetStatusTarget::Tlvs(ts) => ts.iter().find(|t| t.tag.0 == 0x4F).and_then(|t| Aid::new(&t.value).ok()),
            SetStatusTarget::None => None,
        }
    }

    pub fn to_apdu(&self) -> CommandApdu {
        let data = match &self.target {
            SetStatusTarget::None => Vec::new(),
            SetStatusTarget::Aid(a) => a.to_vec(),
            SetStatusTarget::Tlvs(ts) => {
                let mut v = Vec::new();
                ts.iter().for_each(|t| tlv::put(&mut v, t.tag.0, &t.value));
                v
            }
        };
        self.framing.apdu(ins::SET_STATUS, self.scope.0, self.state, data)
    }

    pub fn from_apdu(apdu: &CommandApdu) -> Result<Self, GpError> {
        const C: &str = "SET STATUS";
        check_gp(apdu, C, ins::SET_STATUS)?;
        let scope = SetStatusScope(apdu.p1);
        if !matches!(scope, SetStatusScope::ISD | SetStatusScope::APPLICATION | SetStatusScope::SD_AND_APPLICATIONS) && scope.is_gp() {
            return Err(GpError::params(C, apdu, "P1 is 80 (ISD), 40 (application/SD), 60 (SD and its applications) or an Amendment C value"));
        }
        let target = if apdu.data.is_empty() {
            SetStatusTarget::None
        } else if scope.is_gp() {
            SetStatusTarget::Aid(Aid::from_slice_for(&apdu.data, "SET STATUS AID")?)
        } else {
            SetStatusTarget::Tlvs(tlv::parse_all(&apdu.data).ctx(C)?.iter().map(|t| t.to_owned()).collect())
        };
        Ok(SetStatus { scope, state: apdu.p2, target, framing: Framing::of(apdu) })
    }
}

impl fmt::Display for SetStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SET STATUS ")?;
        match self.scope {
            SetStatusScope::ISD => write!(f, "[card] -> {} ({:02X})", CardLifeCycle(self.state), self.state)?,
            SetStatusScope::APPLICATION => write!(f, "[application/SD] -> {} ({:02X})", AppLifeCycle(self.state), self.state)?,
            SetStatusScope::SD_AND_APPLICATIONS => {
                write!(f, "[SD and its applications] -> {} ({:02X})", SdLifeCycle(self.state), self.state)?
            }
            SetStatusScope::AVAILABILITY => write!(f, "[contactless availability] -> {}", match self.state {
                0x00 => "deactivated".to_string(),
                0x01 => "activated".to_string(),
                x => format!("{x:02X}"),
            })?,
            s => write!(f, "[P1={:02X}] P2={:02X}", s.0, self.state)?,
        }
        match &self.target {
            SetStatusTarget::None => Ok(()),
            SetStatusTarget::Aid(a) => write!(f, " {a}"),
            SetStatusTarget::Tlvs(ts) => ts.iter().try_for_each(|t| write!(f, " {}={}", t.tag, Hex(&t.value))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codec::Codec;
    use crate::hex::decode;

    #[test]
    fn forms_and_crs() {
        for s in [
            SetStatus::card(CardLifeCycle::SECURED),
            SetStatus::application(Aid::GP_ISD, AppLifeCycle::LOCKED.0),
            SetStatus::security_domain_and_applications(Aid::GP_ISD, 0x83),
            SetStatus::availability(Aid::CRS, true),
        ] {
            assert_eq!(SetStatus::from_apdu(&s.to_apdu()).unwrap(), s);
        }
        let a = CommandApdu::from_bytes(&decode("80F00101104F0EA00000000314311714061700564300").unwrap()).unwrap();
        let s = SetStatus::from_apdu(&a).unwrap();
        assert_eq!(s.aid().unwrap().to_string(), "A000000003143117140617005643");
        assert_eq!(s.to_apdu(), a);
        assert!(SetStatus::from_apdu(&CommandApdu::new(0x80, 0xF0, 0x41, 0x07)).is_err());
        assert!(SetStatus::from_apdu(&CommandApdu::new(0x80, 0xF0, 0x40, 0x07).with_data(vec![1, 2])).is_err());
    }
}
