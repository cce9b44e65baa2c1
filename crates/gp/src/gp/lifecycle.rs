//! Life cycle states (GPCS 2.3 §11.1.1, Tables 11-3 to 11-6) of the card, applications,
//! security domains and executable load files. Every byte value is representable.

use std::fmt;

/// Card life cycle state (GPCS Table 11-6), as GET STATUS P1=80 reports for the ISD.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub struct CardLifeCycle(pub u8);

impl CardLifeCycle {
    pub const OP_READY: Self = Self(0x01);
    pub const INITIALIZED: Self = Self(0x07);
    pub const SECURED: Self = Self(0x0F);
    pub const CARD_LOCKED: Self = Self(0x7F);
    pub const TERMINATED: Self = Self(0xFF);

    pub fn name(self) -> Option<&'static str> {
        Some(match self {
            Self::OP_READY => "OP_READY",
            Self::INITIALIZED => "INITIALIZED",
            Self::SECURED => "SECURED",
            Self::CARD_LOCKED => "CARD_LOCKED",
            Self::TERMINATED => "TERMINATED",
            _ => return None,
        })
    }
}

/// Application life cycle state (GPCS Table 11-4): `03` INSTALLED, `07` SELECTABLE, `07` with
/// application-specific bits b7..b4, and b8 set for LOCKED (the other bits are kept).
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub struct AppLifeCycle(pub u8);

impl AppLifeCycle {
    pub const INSTALLED: Self = Self(0x03);
    pub const SELECTABLE: Self = Self(0x07);
    /// Locked from SELECTABLE (any state with b8 set is locked).
    pub const LOCKED: Self = Self(0x87);

    pub fn is_locked(self) -> bool {
        self.0 & 0x80 != 0
    }
    pub fn is_selectable(self) -> bool {
        self.0 & 0x07 == 0x07
    }
    /// The application-specific bits b7..b4 of a SELECTABLE application.
    pub fn application_specific(self) -> u8 {
        if self.is_selectable() { (self.0 >> 3) & 0x0F } else { 0 }
    }
    /// A SELECTABLE state with application-specific bits (0..=15).
    pub fn selectable_with(app_bits: u8) -> Self {
        Self(0x07 | (app_bits & 0x0F) << 3)
    }
    /// Same state with the lock bit set (SET STATUS P2 for locking).
    pub fn locked(self) -> Self {
        Self(self.0 | 0x80)
    }
}

/// Security domain life cycle state (GPCS Table 11-5).
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub struct SdLifeCycle(pub u8);

impl SdLifeCycle {
    pub const INSTALLED: Self = Self(0x03);
    pub const SELECTABLE: Self = Self(0x07);
    pub const PERSONALIZED: Self = Self(0x0F);
    pub const LOCKED: Self = Self(0x83);

    pub fn is_locked(self) -> bool {
        self.0 & 0x80 != 0
    }
    pub fn name(self) -> Option<&'static str> {
        if self.is_locked() {
            return Some("LOCKED");
        }
        Some(match self {
            Self::INSTALLED => "INSTALLED",
            Self::SELECTABLE => "SELECTABLE",
            Self::PERSONALIZED => "PERSONALIZED",
            _ => return None,
        })
    }
}

/// Executable load file life cycle state (GPCS Table 11-3).
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub struct ElfLifeCycle(pub u8);

impl ElfLifeCycle {
    pub const LOADED: Self = Self(0x01);
}

/// A life cycle state with the kind of registry entry it belongs to.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub enum LifeCycle {
    /// The ISD entry of GET STATUS P1=80 reports the card life cycle.
    Card(CardLifeCycle),
    SecurityDomain(SdLifeCycle),
    Application(AppLifeCycle),
    LoadFile(ElfLifeCycle),
}

impl LifeCycle {
    pub fn value(self) -> u8 {
        match self {
            LifeCycle::Card(v) => v.0,
            LifeCycle::SecurityDomain(v) => v.0,
            LifeCycle::Application(v) => v.0,
            LifeCycle::LoadFile(v) => v.0,
        }
    }
    /// The kind of entry (`card`, `security domain`, `application`, `load file`).
    pub fn kind(self) -> &'static str {
        match self {
            LifeCycle::Card(_) => "card",
            LifeCycle::SecurityDomain(_) => "security domain",
            LifeCycle::Application(_) => "application",
            LifeCycle::LoadFile(_) => "load file",
        }
    }
}

impl fmt::Display for CardLifeCycle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.name() {
            Some(n) => write!(f, "{n}"),
            None => write!(f, "UNKNOWN({:02X})", self.0),
        }
    }
}

impl fmt::Display for AppLifeCycle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let base = self.0 & 0x7F;
        let name = match base {
            0x03 => "INSTALLED".to_string(),
            0x07 => "SELECTABLE".to_string(),
            b if b & 0x07 == 0x07 => format!("SELECTABLE+APP({:X})", (b >> 3) & 0x0F),
            b => format!("UNKNOWN({b:02X})"),
        };
        if self.is_locked() { write!(f, "LOCKED({name})") } else { write!(f, "{name}") }
    }
}

impl fmt::Display for SdLifeCycle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.name() {
            Some(n) => write!(f, "{n}"),
            None => write!(f, "UNKNOWN({:02X})", self.0),
        }
    }
}

impl fmt::Display for ElfLifeCycle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if *self == Self::LOADED { write!(f, "LOADED") } else { write!(f, "UNKNOWN({:02X})", self.0) }
    }
}

impl fmt::Display for LifeCycle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            LifeCycle::Card(v) => v.fmt(f),
            LifeCycle::SecurityDomain(v) => v.fmt(f),
            LifeCycle::Application(v) => v.fmt(f),
            LifeCycle::LoadFile(v) => v.fmt(f),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_bits() {
        assert_eq!(CardLifeCycle(0x0F).to_string(), "SECURED");
        assert_eq!(CardLifeCycle(0x03).to_string(), "UNKNOWN(03)");
        assert_eq!(AppLifeCycle(0x87).to_string(), "LOCKED(SELECTABLE)");
        assert_eq!(AppLifeCycle(0x3F).to_string(), "SELECTABLE+APP(7)");
        assert_eq!(AppLifeCycle::selectable_with(7), AppLifeCycle(0x3F));
        assert_eq!(AppLifeCycle(0x3F).application_specific(), 7);
        assert_eq!(SdLifeCycle(0x83).to_string(), "LOCKED");
        assert_eq!(SdLifeCycle(0x8F).to_string(), "LOCKED");
        assert_eq!(LifeCycle::LoadFile(ElfLifeCycle(1)).to_string(), "LOADED");
    }
}
