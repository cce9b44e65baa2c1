//! Application and security domain privileges (GPCS 2.3 §11.1.2, Tables 11-7 to 11-9): three
//! bytes, or the single first byte of GP 2.1.1 and older cards.

use super::GpError;
use std::fmt;
use std::str::FromStr;

/// One named privilege. Its [`mask`](Privilege::mask) is the bit in the 24-bit value
/// (byte 1 in bits 23..16).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Privilege {
    SecurityDomain,
    /// Byte 1 b7; only meaningful together with SecurityDomain (`C0`).
    DapVerification,
    /// Byte 1 b6; only meaningful together with SecurityDomain (`A0`).
    DelegatedManagement,
    CardLock,
    CardTerminate,
    /// Byte 1 b3: Card Reset since GP 2.2, Default Selected in GP 2.1.1.
    CardReset,
    /// Byte 1 b2: CVM Management (global PIN change).
    CvmManagement,
    /// Byte 1 b1; only meaningful with SecurityDomain and DapVerification (`C1`).
    MandatedDapVerification,
    TrustedPath,
    AuthorizedManagement,
    TokenVerification,
    GlobalDelete,
    GlobalLock,
    GlobalRegistry,
    FinalApplication,
    GlobalService,
    ReceiptGeneration,
    CipheredLoadFileDataBlock,
    ContactlessActivation,
    ContactlessSelfActivation,
}

impl Privilege {
    pub const ALL: [Privilege; 20] = [
        Privilege::SecurityDomain,
        Privilege::DapVerification,
        Privilege::DelegatedManagement,
        Privilege::CardLock,
        Privilege::CardTerminate,
        Privilege::CardReset,
        Privilege::CvmManagement,
        Privilege::MandatedDapVerification,
        Privilege::TrustedPath,
        Privilege::AuthorizedManagement,
        Privilege::TokenVerification,
        Privilege::GlobalDelete,
        Privilege::GlobalLock,
        Privilege::GlobalRegistry,
        Privilege::FinalApplication,
        Privilege::GlobalService,
        Privilege::ReceiptGeneration,
        Privilege::CipheredLoadFileDataBlock,
        Privilege::ContactlessActivation,
        Privilege::ContactlessSelfActivation,
    ];

    /// The bit of this privilege in the 24-bit privileges value.
    pub const fn mask(self) -> u32 {
        match self {
            Privilege::SecurityDomain => 0x80_0000,
            Privilege::DapVerification => 0x40_0000,
            Privilege::DelegatedManagement => 0x20_0000,
            Privilege::CardLock => 0x10_0000,
            Privilege::CardTerminate => 0x08_0000,
            Privilege::CardReset => 0x04_0000,
            Privilege::CvmManagement => 0x02_0000,
            Privilege::MandatedDapVerification => 0x01_0000,
            Privilege::TrustedPath => 0x00_8000,
            Privilege::AuthorizedManagement => 0x00_4000,
            Privilege::TokenVerification => 0x00_2000,
            Privilege::GlobalDelete => 0x00_1000,
            Privilege::GlobalLock => 0x00_0800,
            Privilege::GlobalRegistry => 0x00_0400,
            Privilege::FinalApplication => 0x00_0200,
            Privilege::GlobalService => 0x00_0100,
            Privilege::ReceiptGeneration => 0x00_0080,
            Privilege::CipheredLoadFileDataBlock => 0x00_0040,
            Privilege::ContactlessActivation => 0x00_0020,
            Privilege::ContactlessSelfActivation => 0x00_0010,
        }
    }

    /// Bits that must also be set for this privilege to be encoded as the spec defines it
    /// (the security-domain-only privileges of byte 1).
    const fn implied(self) -> u32 {
        match self {
            Privilege::DapVerification | Privilege::DelegatedManagement => 0x80_0000,
            Privilege::MandatedDapVerification => 0xC0_0000,
            _ => 0,
        }
    }

    pub const fn name(self) -> &'static str {
        match self {
            Privilege::SecurityDomain => "SecurityDomain",
            Privilege::DapVerification => "DapVerification",
            Privilege::DelegatedManagement => "DelegatedManagement",
            Privilege::CardLock => "CardLock",
            Privilege::CardTerminate => "CardTerminate",
            Privilege::CardReset => "CardReset",
            Privilege::CvmManagement => "CvmManagement",
            Privilege::MandatedDapVerification => "MandatedDapVerification",
            Privilege::TrustedPath => "TrustedPath",
            Privilege::AuthorizedManagement => "AuthorizedManagement",
            Privilege::TokenVerification => "TokenVerification",
            Privilege::GlobalDelete => "GlobalDelete",
            Privilege::GlobalLock => "GlobalLock",
            Privilege::GlobalRegistry => "GlobalRegistry",
            Privilege::FinalApplication => "FinalApplication",
            Privilege::GlobalService => "GlobalService",
            Privilege::ReceiptGeneration => "ReceiptGeneration",
            Privilege::CipheredLoadFileDataBlock => "CipheredLoadFileDataBlock",
            Privilege::ContactlessActivation => "ContactlessActivation",
            Privilege::ContactlessSelfActivation => "ContactlessSelfActivation",
        }
    }
}

impl fmt::Display for Privilege {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Privilege {
    type Err = GpError;
    /// Case-insensitive; `-`/`_`/spaces ignored; accepts the GP 2.1.1 names `DefaultSelected`,
    /// `PinChange`, `CardManagerLock` and the GPPro-style snake case.
    fn from_str(s: &str) -> Result<Self, GpError> {
        let norm: String = s.chars().filter(|c| c.is_ascii_alphanumeric()).collect::<String>().to_ascii_lowercase();
        let alias = match norm.as_str() {
            "sd" => Some(Privilege::SecurityDomain),
            "defaultselected" | "default" => Some(Privilege::CardReset),
            "pinchange" | "cvm" | "globalpin" => Some(Privilege::CvmManagement),
            "cardmanagerlock" | "lock" => Some(Privilege::CardLock),
            "cardmanagerterminate" | "terminate" => Some(Privilege::CardTerminate),
            "dap" => Some(Privilege::DapVerification),
            "dm" => Some(Privilege::DelegatedManagement),
            "mandateddap" => Some(Privilege::MandatedDapVerification),
            "am" => Some(Privilege::AuthorizedManagement),
            "tokenmanagement" => Some(Privilege::TokenVerification),
            "ciphered" | "cipheredloadfile" => Some(Privilege::CipheredLoadFileDataBlock),
            _ => None,
        };
        alias
            .or_else(|| Privilege::ALL.into_iter().find(|p| p.name().to_ascii_lowercase() == norm))
            .ok_or_else(|| GpError::UnknownPrivilege(s.to_string()))
    }
}

/// A privileges value (24 bits; the RFU bits stay representable). Equality ignores whether it
/// came in the 1-byte or the 3-byte form; [`to_bytes`](Privileges::to_bytes) reproduces that form.
#[derive(Clone, Copy, Default)]
pub struct Privileges {
    bits: u32,
    one_byte: bool,
}

impl PartialEq for Privileges {
    fn eq(&self, other: &Self) -> bool {
        self.bits == other.bits
    }
}
impl Eq for Privileges {}
impl std::hash::Hash for Privileges {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.bits.hash(state)
    }
}

impl Privileges {
    pub const NONE: Privileges = Privileges { bits: 0, one_byte: false };

    /// From the 24-bit value (byte 1 in bits 23..16). Higher bits are dropped.
    pub const fn from_bits(bits: u32) -> Self {
        Privileges { bits: bits & 0xFF_FFFF, one_byte: false }
    }
    pub const fn bits(self) -> u32 {
        self.bits
    }
    /// From the privileges field: 1 byte (GP 2.1.1) or 3 bytes (GP 2.2+).
    pub fn from_bytes(b: &[u8]) -> Result<Self, GpError> {
        match *b {
            [b1] => Ok(Privileges { bits: (b1 as u32) << 16, one_byte: true }),
            [b1, b2, b3] => Ok(Privileges { bits: u32::from_be_bytes([0, b1, b2, b3]), one_byte: false }),
            _ => Err(GpError::invalid("privileges", format!("{} byte(s); privileges have 1 or 3 bytes", b.len()))),
        }
    }
    /// The encoding: 1 byte if it was parsed from (or set to) the 1-byte form and bytes 2 and
    /// 3 are zero, else 3 bytes.
    pub fn to_bytes(self) -> Vec<u8> {
        let b = self.bits.to_be_bytes();
        if self.one_byte && self.bits & 0xFFFF == 0 { vec![b[1]] } else { b[1..].to_vec() }
    }
    /// The first byte only (the legacy GET STATUS format carries just this byte).
    pub fn first_byte(self) -> u8 {
        (self.bits >> 16) as u8
    }
    /// Prefer the 1-byte form when encoding (for GP 2.1.1 cards).
    pub fn one_byte(mut self) -> Self {
        self.one_byte = true;
        self
    }
    /// Encode in the 3-byte form.
    pub fn three_bytes(mut self) -> Self {
        self.one_byte = false;
        self
    }
    pub fn is_one_byte(self) -> bool {
        self.one_byte && self.bits & 0xFFFF == 0
    }

    /// Adds `p` and the bits it implies (DAP Verification and Delegated Management are
    /// security-domain privileges: `C0`, `A0`, Mandated DAP `C1`).
    pub fn with(mut self, p: Privilege) -> Self {
        self.bits |= p.mask() | p.implied();
        self
    }
    pub fn contains(self, p: Privilege) -> bool {
        self.bits & p.mask() != 0
    }
    pub fn is_security_domain(self) -> bool {
        self.contains(Privilege::SecurityDomain)
    }
    /// The named privileges present, in table order.
    pub fn list(self) -> Vec<Privilege> {
        Privilege::ALL.into_iter().filter(|p| self.contains(*p)).collect()
    }
    pub fn names(self) -> Vec<&'static str> {
        self.list().into_iter().map(Privilege::name).collect()
    }
    /// Bits set that no privilege defines (byte 3 b4..b1).
    pub fn rfu_bits(self) -> u32 {
        let known = Privilege::ALL.iter().fold(0, |a, p| a | p.mask());
        self.bits & !known
    }
    /// From privilege names (see [`Privilege::from_str`]).
    pub fn from_names<I, S>(names: I) -> Result<Self, GpError>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<str>,
    {
        names.into_iter().try_fold(Privileges::NONE, |acc, n| Ok(acc.with(n.as_ref().parse()?)))
    }
}

impl FromIterator<Privilege> for Privileges {
    fn from_iter<T: IntoIterator<Item = Privilege>>(iter: T) -> Self {
        iter.into_iter().fold(Privileges::NONE, Privileges::with)
    }
}

impl FromStr for Privileges {
    type Err = GpError;
    /// A comma- or space-separated list of names, or `none`/empty.
    fn from_str(s: &str) -> Result<Self, GpError> {
        let parts = s.split([',', ' ', '|', '+']).map(str::trim).filter(|p| !p.is_empty() && !p.eq_ignore_ascii_case("none"));
        Privileges::from_names(parts)
    }
}

impl fmt::Display for Privileges {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "[{}", self.names().join(", "))?;
        let rfu = self.rfu_bits();
        if rfu != 0 {
            if self.bits != rfu {
                write!(f, ", ")?;
            }
            write!(f, "RFU {rfu:06X}")?;
        }
        write!(f, "]")
    }
}

impl fmt::Debug for Privileges {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Privileges({}{})", crate::hex::Hex(&self.to_bytes()), self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_and_three_byte_forms() {
        let p = Privileges::from_bytes(&[0x9E]).unwrap();
        assert_eq!(p.to_bytes(), vec![0x9E]);
        assert_eq!(p, Privileges::from_bytes(&[0x9E, 0, 0]).unwrap());
        assert_eq!(Privileges::from_bytes(&[0x9E, 0, 0]).unwrap().to_bytes(), vec![0x9E, 0, 0]);
        assert!(Privileges::from_bytes(&[0x9E, 0]).is_err());
        assert_eq!(p.names(), ["SecurityDomain", "CardLock", "CardTerminate", "CardReset", "CvmManagement"]);
    }

    #[test]
    fn names_parse() {
        let p: Privileges = "SecurityDomain, trusted-path,AUTHORIZED_MANAGEMENT".parse().unwrap();
        assert_eq!(p.to_bytes(), vec![0x80, 0xC0, 0x00]);
        let dm: Privileges = "DelegatedManagement".parse().unwrap();
        assert_eq!(dm.first_byte(), 0xA0);
        let mandated: Privileges = "MandatedDapVerification".parse().unwrap();
        assert_eq!(mandated.first_byte(), 0xC1);
        assert!("Wizard".parse::<Privileges>().is_err());
        assert_eq!("none".parse::<Privileges>().unwrap(), Privileges::NONE);
        assert_eq!("DefaultSelected".parse::<Privilege>().unwrap(), Privilege::CardReset);
        assert_eq!(Privileges::from_bits(0x00_0001).to_string(), "[RFU 000001]");
    }
}
