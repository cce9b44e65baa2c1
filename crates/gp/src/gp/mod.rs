//! GlobalPlatform card content management as typed values (GPCS 2.3 chapter 11): data types
//! (AIDs, privileges, life cycle states, GET DATA objects), every command in both directions
//! (`to_apdu` for the host, `from_apdu` for the card) and the response parsers and builders.
//!
//! Commands keep their [`Framing`] (class byte and Le as sent) so that a parsed command
//! re-encodes byte for byte; constructors pick the usual framing for the command.

pub mod aid;
pub mod auth;
pub mod data;
pub mod delegated;
pub mod delete;
pub mod get_data;
pub mod install;
pub mod lifecycle;
pub mod load;
pub mod privileges;
pub mod put_key;
pub mod select;
pub mod set_status;
pub mod status;
pub mod store_data;

pub use aid::Aid;
pub use auth::{ExternalAuthenticate, InitUpdateResponse, InitializeUpdate};
pub use delete::{Delete, DeleteTarget};
pub use get_data::GetData;
pub use install::{Install, InstallBody, InstallParams, SystemParams};
pub use lifecycle::{AppLifeCycle, CardLifeCycle, ElfLifeCycle, LifeCycle, SdLifeCycle};
pub use load::{Load, LoadFile};
pub use privileges::{Privilege, Privileges};
pub use put_key::{PutKey, PutKeyComponent, PutKeyResponse};
pub use select::{Fci, Select};
pub use set_status::{SetStatus, SetStatusScope};
pub use status::{GetStatus, GetStatusPager, PagerStep, RegistryEntry, SearchCriteria, StatusFormat, StatusScope};
pub use store_data::StoreData;

use crate::apdu::CommandApdu;
use crate::codec::DecodeError;
use crate::hex::HexError;
use crate::sw::StatusWord;
use crate::tlv::Tag;
use std::fmt;
use thiserror::Error;

/// Instruction bytes of the commands in this module (GPCS 2.3 Table 11-10).
pub mod ins {
    pub const SELECT: u8 = 0xA4;
    pub const GET_RESPONSE: u8 = 0xC0;
    pub const GET_DATA: u8 = 0xCA;
    pub const GET_DATA_ODD: u8 = 0xCB;
    pub const GET_STATUS: u8 = 0xF2;
    pub const INSTALL: u8 = 0xE6;
    pub const LOAD: u8 = 0xE8;
    pub const DELETE: u8 = 0xE4;
    pub const PUT_KEY: u8 = 0xD8;
    pub const STORE_DATA: u8 = 0xE2;
    pub const SET_STATUS: u8 = 0xF0;
    pub const INITIALIZE_UPDATE: u8 = 0x50;
    pub const EXTERNAL_AUTHENTICATE: u8 = 0x82;
    pub const MANAGE_CHANNEL: u8 = 0x70;
    pub const BEGIN_RMAC_SESSION: u8 = 0x7A;
    pub const END_RMAC_SESSION: u8 = 0x78;
    pub const INTERNAL_AUTHENTICATE: u8 = 0x88;
    pub const PERFORM_SECURITY_OPERATION: u8 = 0x2A;
    pub const GET_CHALLENGE: u8 = 0x84;
}

/// The name of an instruction byte, for traces (`"INSTALL"`, `"UNKNOWN"`).
pub fn name(ins: u8) -> &'static str {
    match ins {
        ins::SELECT => "SELECT",
        ins::GET_RESPONSE => "GET RESPONSE",
        ins::GET_DATA | ins::GET_DATA_ODD => "GET DATA",
        ins::GET_STATUS => "GET STATUS",
        ins::INSTALL => "INSTALL",
        ins::LOAD => "LOAD",
        ins::DELETE => "DELETE",
        ins::PUT_KEY => "PUT KEY",
        ins::STORE_DATA => "STORE DATA",
        ins::SET_STATUS => "SET STATUS",
        ins::INITIALIZE_UPDATE => "INITIALIZE UPDATE",
        ins::EXTERNAL_AUTHENTICATE => "EXTERNAL AUTHENTICATE",
        ins::MANAGE_CHANNEL => "MANAGE CHANNEL",
        ins::BEGIN_RMAC_SESSION => "BEGIN R-MAC SESSION",
        ins::END_RMAC_SESSION => "END R-MAC SESSION",
        ins::INTERNAL_AUTHENTICATE => "INTERNAL AUTHENTICATE",
        ins::PERFORM_SECURITY_OPERATION => "PERFORM SECURITY OPERATION",
        ins::GET_CHALLENGE => "GET CHALLENGE",
        0xDA | 0xDB => "PUT DATA",
        0xB0 => "READ BINARY",
        0xB2 => "READ RECORD",
        0xD6 => "UPDATE BINARY",
        0xDC => "UPDATE RECORD",
        0x20 => "VERIFY",
        0x24 => "CHANGE REFERENCE DATA",
        0x2C => "RESET RETRY COUNTER",
        0xC2 => "ENVELOPE",
        0x10 => "TERMINAL PROFILE",
        0x12 => "FETCH",
        0x14 => "TERMINAL RESPONSE",
        _ => "UNKNOWN",
    }
}

/// Errors of the GP command and data layer.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum GpError {
    /// The bytes of a command or data object do not decode.
    #[error("{context}: {source}")]
    Decode {
        context: &'static str,
        #[source]
        source: DecodeError,
    },
    /// `from_apdu` was given a command with another instruction byte.
    #[error("{command}: instruction byte is {ins:02X}, expected {expected:02X}")]
    WrongInstruction { command: &'static str, ins: u8, expected: u8 },
    /// The class byte does not belong to the class this command is defined in.
    #[error("{command}: class byte {cla:02X} is not valid ({detail})")]
    WrongClass { command: &'static str, cla: u8, detail: &'static str },
    /// P1/P2 hold a value this command does not define.
    #[error("{command}: P1={p1:02X} P2={p2:02X}: {detail}")]
    BadParameters { command: &'static str, p1: u8, p2: u8, detail: String },
    /// An AID of the wrong length (ISO/IEC 7816-5: 5 to 16 bytes).
    #[error("{what}: AID of {len} byte(s); an AID has 5 to 16 bytes")]
    AidLength { what: &'static str, len: usize },
    /// A mandatory data object is missing.
    #[error("{what}: mandatory tag {tag} is missing")]
    MissingTag { what: &'static str, tag: Tag },
    /// A data object with another tag than expected.
    #[error("{what}: expected tag {expected}, found {found}")]
    UnexpectedTag { what: &'static str, expected: Tag, found: Tag },
    /// A field has a value or length the specification does not allow.
    #[error("{what}: {detail}")]
    Invalid { what: &'static str, detail: String },
    /// An INITIALIZE UPDATE response whose length fits no secure channel protocol.
    #[error("INITIALIZE UPDATE response: {detail}")]
    InitUpdateResponse { detail: String },
    /// A privilege name that is not known.
    #[error("unknown privilege name {0:?}")]
    UnknownPrivilege(String),
    /// A hex string (AID, CLI input) that does not decode.
    #[error("{what}: {source}")]
    Hex {
        what: &'static str,
        #[source]
        source: HexError,
    },
    /// The card ended a multi-command exchange with an error status word.
    #[error("{command}: card returned {sw:?}: {meaning}")]
    CardStatus { command: &'static str, sw: StatusWord, meaning: String },
    /// LOAD blocks out of sequence, too many blocks, or data after the last block.
    #[error("LOAD: {detail}")]
    LoadSequence { detail: String },
}

impl GpError {
    /// Stable machine-readable code.
    pub fn code(&self) -> &'static str {
        match self {
            GpError::Decode { .. } => "gp.decode",
            GpError::WrongInstruction { .. } => "gp.wrong_instruction",
            GpError::WrongClass { .. } => "gp.wrong_class",
            GpError::BadParameters { .. } => "gp.bad_parameters",
            GpError::AidLength { .. } => "gp.aid_length",
            GpError::MissingTag { .. } => "gp.missing_tag",
            GpError::UnexpectedTag { .. } => "gp.unexpected_tag",
            GpError::Invalid { .. } => "gp.invalid",
            GpError::InitUpdateResponse { .. } => "gp.init_update_response",
            GpError::UnknownPrivilege(_) => "gp.unknown_privilege",
            GpError::Hex { .. } => "gp.hex",
            GpError::CardStatus { .. } => "gp.card_status",
            GpError::LoadSequence { .. } => "gp.load_sequence",
        }
    }

    pub(crate) fn invalid(what: &'static str, detail: impl Into<String>) -> Self {
        GpError::Invalid { what, detail: detail.into() }
    }

    pub(crate) fn params(command: &'static str, apdu: &CommandApdu, detail: impl Into<String>) -> Self {
        GpError::BadParameters { command, p1: apdu.p1, p2: apdu.p2, detail: detail.into() }
    }
}

impl From<DecodeError> for GpError {
    fn from(source: DecodeError) -> Self {
        GpError::Decode { context: "GP data", source }
    }
}

/// Attaches the command or object name to a decoding error.
pub(crate) trait Context<T> {
    fn ctx(self, context: &'static str) -> Result<T, GpError>;
}

impl<T> Context<T> for Result<T, DecodeError> {
    fn ctx(self, context: &'static str) -> Result<T, GpError> {
        self.map_err(|source| GpError::Decode { context, source })
    }
}

/// How a command travels apart from its meaning: the class byte (logical channel, secure
/// messaging indication) and Le, as sent. Kept so that parsing and re-encoding a recorded
/// command is byte-exact.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Framing {
    pub cla: u8,
    /// Ne: `Some(256)` is a short `Le = 00`.
    pub le: Option<usize>,
    /// The command used the extended length form.
    pub extended: bool,
}

impl Framing {
    /// GP proprietary class `80`, no Le (case 1/3 commands).
    pub const GP: Framing = Framing { cla: 0x80, le: None, extended: false };
    /// GP class with `Le = 00` (GPCS asks Le = 00 for commands that answer data).
    pub const GP_LE: Framing = Framing { cla: 0x80, le: Some(256), extended: false };
    /// ISO interindustry class `00` with `Le = 00`.
    pub const ISO_LE: Framing = Framing { cla: 0x00, le: Some(256), extended: false };

    pub fn of(apdu: &CommandApdu) -> Framing {
        Framing { cla: apdu.cla, le: apdu.le, extended: apdu.extended }
    }

    /// The same framing on logical channel `channel` (0..=19, ISO/IEC 7816-4 §5.4.1).
    pub fn on_channel(self, channel: u8) -> Framing {
        let sm = self.cla & 0x0C != 0 && self.cla & 0x40 == 0;
        let high = self.cla & 0x80;
        let cla = if channel < 4 {
            high | if sm { 0x04 } else { 0 } | channel
        } else {
            high | 0x40 | if sm { 0x20 } else { 0 } | ((channel - 4) & 0x0F)
        };
        Framing { cla, ..self }
    }

    pub(crate) fn apdu(&self, ins: u8, p1: u8, p2: u8, data: Vec<u8>) -> CommandApdu {
        CommandApdu { cla: self.cla, ins, p1, p2, data, le: self.le, extended: self.extended }
    }
}

/// Checks INS and that the class byte is the GP proprietary class (b8 set, not `FF`).
pub(crate) fn check_gp(apdu: &CommandApdu, command: &'static str, expected: u8) -> Result<(), GpError> {
    check_ins(apdu, command, expected)?;
    if apdu.cla & 0x80 == 0 || apdu.cla == 0xFF {
        return Err(GpError::WrongClass { command, cla: apdu.cla, detail: "expected the GP proprietary class 8x/Cx" });
    }
    Ok(())
}

/// Checks INS and that the class byte is an ISO interindustry class (b8 clear).
pub(crate) fn check_iso(apdu: &CommandApdu, command: &'static str, expected: u8) -> Result<(), GpError> {
    check_ins(apdu, command, expected)?;
    if apdu.cla & 0x80 != 0 {
        return Err(GpError::WrongClass { command, cla: apdu.cla, detail: "expected an ISO interindustry class 0x/4x/6x" });
    }
    Ok(())
}

pub(crate) fn check_ins(apdu: &CommandApdu, command: &'static str, expected: u8) -> Result<(), GpError> {
    if apdu.ins != expected {
        return Err(GpError::WrongInstruction { command, ins: apdu.ins, expected });
    }
    Ok(())
}

/// Requires an empty data field.
pub(crate) fn check_no_data(apdu: &CommandApdu, command: &'static str) -> Result<(), GpError> {
    if apdu.data.is_empty() {
        Ok(())
    } else {
        Err(GpError::invalid(command, format!("no command data expected, got {} byte(s)", apdu.data.len())))
    }
}

/// The commands of this module, parsed from an APDU. `Other` holds every command this module
/// does not decode, including commands still wrapped by a secure channel (their data carries a
/// MAC and possibly ciphertext), except EXTERNAL AUTHENTICATE whose MAC is part of it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum GpCommand {
    Select(Select),
    GetResponse(GetResponse),
    GetData(GetData),
    GetStatus(GetStatus),
    Install(Install),
    Load(Load),
    Delete(Delete),
    PutKey(PutKey),
    StoreData(StoreData),
    SetStatus(SetStatus),
    InitializeUpdate(InitializeUpdate),
    ExternalAuthenticate(ExternalAuthenticate),
    Other(CommandApdu),
}

impl GpCommand {
    /// Dispatches on INS and the class: SELECT and GET RESPONSE in the ISO class, GET DATA in
    /// both, the others in the GP class. An APDU that matches no command here is `Other`; one
    /// that matches but is malformed is an error.
    pub fn parse(apdu: &CommandApdu) -> Result<GpCommand, GpError> {
        let gp_class = apdu.cla & 0x80 != 0 && apdu.cla != 0xFF;
        let iso_class = apdu.cla & 0x80 == 0;
        if gp_class && apdu.is_secure_messaging() && apdu.ins != ins::EXTERNAL_AUTHENTICATE {
            return Ok(GpCommand::Other(apdu.clone()));
        }
        Ok(match (apdu.ins, gp_class, iso_class) {
            (ins::SELECT, _, true) => GpCommand::Select(Select::from_apdu(apdu)?),
            (ins::GET_RESPONSE, _, true) => GpCommand::GetResponse(GetResponse::from_apdu(apdu)?),
            (ins::GET_DATA, _, _) if gp_class || iso_class => GpCommand::GetData(GetData::from_apdu(apdu)?),
            (ins::GET_STATUS, true, _) => GpCommand::GetStatus(GetStatus::from_apdu(apdu)?),
            (ins::INSTALL, true, _) => GpCommand::Install(Install::from_apdu(apdu)?),
            (ins::LOAD, true, _) => GpCommand::Load(Load::from_apdu(apdu)?),
            (ins::DELETE, true, _) => GpCommand::Delete(Delete::from_apdu(apdu)?),
            (ins::PUT_KEY, true, _) => GpCommand::PutKey(PutKey::from_apdu(apdu)?),
            (ins::STORE_DATA, true, _) => GpCommand::StoreData(StoreData::from_apdu(apdu)?),
            (ins::SET_STATUS, true, _) => GpCommand::SetStatus(SetStatus::from_apdu(apdu)?),
            (ins::INITIALIZE_UPDATE, true, _) => GpCommand::InitializeUpdate(InitializeUpdate::from_apdu(apdu)?),
            (ins::EXTERNAL_AUTHENTICATE, true, _) => {
                GpCommand::ExternalAuthenticate(ExternalAuthenticate::from_apdu(apdu)?)
            }
            _ => GpCommand::Other(apdu.clone()),
        })
    }

    pub fn to_apdu(&self) -> CommandApdu {
        match self {
            GpCommand::Select(c) => c.to_apdu(),
            GpCommand::GetResponse(c) => c.to_apdu(),
            GpCommand::GetData(c) => c.to_apdu(),
            GpCommand::GetStatus(c) => c.to_apdu(),
            GpCommand::Install(c) => c.to_apdu(),
            GpCommand::Load(c) => c.to_apdu(),
            GpCommand::Delete(c) => c.to_apdu(),
            GpCommand::PutKey(c) => c.to_apdu(),
            GpCommand::StoreData(c) => c.to_apdu(),
            GpCommand::SetStatus(c) => c.to_apdu(),
            GpCommand::InitializeUpdate(c) => c.to_apdu(),
            GpCommand::ExternalAuthenticate(c) => c.to_apdu(),
            GpCommand::Other(a) => a.clone(),
        }
    }

    /// The command name (`"INSTALL"`), from INS for `Other`.
    pub fn name(&self) -> &'static str {
        name(self.to_apdu().ins)
    }
}

impl fmt::Display for GpCommand {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            GpCommand::Select(c) => c.fmt(f),
            GpCommand::GetResponse(c) => c.fmt(f),
            GpCommand::GetData(c) => c.fmt(f),
            GpCommand::GetStatus(c) => c.fmt(f),
            GpCommand::Install(c) => c.fmt(f),
            GpCommand::Load(c) => c.fmt(f),
            GpCommand::Delete(c) => c.fmt(f),
            GpCommand::PutKey(c) => c.fmt(f),
            GpCommand::StoreData(c) => c.fmt(f),
            GpCommand::SetStatus(c) => c.fmt(f),
            GpCommand::InitializeUpdate(c) => c.fmt(f),
            GpCommand::ExternalAuthenticate(c) => c.fmt(f),
            GpCommand::Other(a) => {
                write!(f, "{}", name(a.ins))?;
                if a.is_secure_messaging() {
                    write!(f, " (secure messaging)")?;
                }
                write!(f, " {:?}", a)
            }
        }
    }
}

/// GET RESPONSE (ISO/IEC 7816-4 §7.6.1): fetch the rest of a response after `61xx`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GetResponse {
    pub framing: Framing,
}

impl GetResponse {
    /// GET RESPONSE for `le` bytes (256 for `Le = 00`).
    pub fn new(le: usize) -> Self {
        GetResponse { framing: Framing { cla: 0x00, le: Some(le), extended: false } }
    }
    pub fn to_apdu(&self) -> CommandApdu {
        self.framing.apdu(ins::GET_RESPONSE, 0, 0, Vec::new())
    }
    pub fn from_apdu(apdu: &CommandApdu) -> Result<Self, GpError> {
        const C: &str = "GET RESPONSE";
        check_iso(apdu, C, ins::GET_RESPONSE)?;
        if apdu.p1 != 0 || apdu.p2 != 0 {
            return Err(GpError::params(C, apdu, "P1-P2 must be 0000"));
        }
        check_no_data(apdu, C)?;
        Ok(GetResponse { framing: Framing::of(apdu) })
    }
}

impl fmt::Display for GetResponse {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "GET RESPONSE Le={}", self.framing.le.unwrap_or(0))
    }
}

// ---- helpers shared by the command modules ----

/// Reads a one-byte length followed by that many bytes (the LV fields of INSTALL).
pub(crate) fn read_lv<'a>(r: &mut crate::codec::Reader<'a>, what: &'static str) -> Result<&'a [u8], DecodeError> {
    let n = r.u8(what)? as usize;
    r.take(n, what)
}

/// Writes a one-byte length and `v` (callers keep `v` below 256).
pub(crate) fn put_lv(out: &mut Vec<u8>, v: &[u8]) {
    out.push(v.len().min(255) as u8);
    out.extend_from_slice(&v[..v.len().min(255)]);
}

/// Reads an optional AID from an LV field: empty means absent.
pub(crate) fn opt_aid(bytes: &[u8], what: &'static str) -> Result<Option<Aid>, GpError> {
    if bytes.is_empty() { Ok(None) } else { Aid::from_slice_for(bytes, what).map(Some) }
}

/// Formats `v` as hex, or `-` when empty.
pub(crate) struct OptHex<'a>(pub &'a [u8]);

impl fmt::Display for OptHex<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.0.is_empty() { write!(f, "-") } else { write!(f, "{}", crate::hex::Hex(self.0)) }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codec::Codec;
    use crate::hex::decode;

    fn apdu(hex: &str) -> CommandApdu {
        CommandApdu::from_bytes(&decode(hex).unwrap()).unwrap()
    }

    #[test]
    fn dispatch_by_class_and_ins() {
        assert!(matches!(GpCommand::parse(&apdu("00A4040000")).unwrap(), GpCommand::Select(_)));
        assert!(matches!(GpCommand::parse(&apdu("80CA9F7F00")).unwrap(), GpCommand::GetData(_)));
        assert!(matches!(GpCommand::parse(&apdu("00CA006600")).unwrap(), GpCommand::GetData(_)));
        assert!(matches!(GpCommand::parse(&apdu("80F28002024F0000")).unwrap(), GpCommand::GetStatus(_)));
        // GET STATUS in the ISO class is not a GP command.
        assert!(matches!(GpCommand::parse(&apdu("00F28002024F0000")).unwrap(), GpCommand::Other(_)));
        // Wrapped commands stay opaque; EXTERNAL AUTHENTICATE is always wrapped.
        assert!(matches!(GpCommand::parse(&apdu("84F280020A4F004ACBBBAD77F0346A00")).unwrap(), GpCommand::Other(_)));
        assert!(matches!(
            GpCommand::parse(&apdu("848201001095F3FA1D8578123B2A9DDB6C69EF918A")).unwrap(),
            GpCommand::ExternalAuthenticate(_)
        ));
        assert!(matches!(GpCommand::parse(&apdu("00C0000010")).unwrap(), GpCommand::GetResponse(_)));
        assert!(GpCommand::parse(&apdu("80F2FF02024F0000")).is_err());
        assert_eq!(name(0xE6), "INSTALL");
        assert_eq!(name(0x01), "UNKNOWN");
    }

    #[test]
    fn framing_channels() {
        assert_eq!(Framing::GP.on_channel(2).cla, 0x82);
        assert_eq!(Framing { cla: 0x84, ..Framing::GP }.on_channel(1).cla, 0x85);
        assert_eq!(Framing::GP.on_channel(5).cla, 0xC1);
        assert_eq!(Framing::ISO_LE.on_channel(4).cla, 0x40);
    }

    #[test]
    fn error_codes() {
        let e = GpError::AidLength { what: "x", len: 3 };
        assert_eq!(e.code(), "gp.aid_length");
        assert!(e.to_string().contains("3 byte(s)"));
    }
}
