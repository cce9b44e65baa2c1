//! Status words (ISO/IEC 7816-4 §5.1.3 and GP Card Spec §11.1.3) as a type. Every value is
//! representable; the known ones have a name and a meaning.

use std::fmt;

/// A status word `SW1 SW2`.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct StatusWord(pub u16);

impl StatusWord {
    pub const SUCCESS: Self = Self(0x9000);
    pub const WARNING_NO_INFO: Self = Self(0x6200);
    pub const SELECTED_FILE_INVALIDATED: Self = Self(0x6283);
    pub const AUTHENTICATION_FAILED: Self = Self(0x6300);
    pub const MORE_DATA: Self = Self(0x6310);
    pub const EXECUTION_ERROR: Self = Self(0x6400);
    pub const MEMORY_FAILURE: Self = Self(0x6581);
    pub const WRONG_LENGTH: Self = Self(0x6700);
    pub const LOGICAL_CHANNEL_NOT_SUPPORTED: Self = Self(0x6881);
    pub const SECURE_MESSAGING_NOT_SUPPORTED: Self = Self(0x6882);
    pub const LAST_COMMAND_EXPECTED: Self = Self(0x6883);
    pub const CHAINING_NOT_SUPPORTED: Self = Self(0x6884);
    pub const COMMAND_NOT_ALLOWED: Self = Self(0x6900);
    pub const SECURITY_STATUS_NOT_SATISFIED: Self = Self(0x6982);
    pub const AUTHENTICATION_METHOD_BLOCKED: Self = Self(0x6983);
    pub const REFERENCED_DATA_INVALIDATED: Self = Self(0x6984);
    pub const CONDITIONS_NOT_SATISFIED: Self = Self(0x6985);
    pub const SM_DATA_MISSING: Self = Self(0x6987);
    pub const SM_DATA_INCORRECT: Self = Self(0x6988);
    pub const APPLET_SELECTION_FAILED: Self = Self(0x6999);
    pub const WRONG_DATA: Self = Self(0x6A80);
    pub const FUNCTION_NOT_SUPPORTED: Self = Self(0x6A81);
    pub const FILE_NOT_FOUND: Self = Self(0x6A82);
    pub const RECORD_NOT_FOUND: Self = Self(0x6A83);
    pub const NOT_ENOUGH_MEMORY: Self = Self(0x6A84);
    pub const INCORRECT_P1P2: Self = Self(0x6A86);
    pub const REFERENCED_DATA_NOT_FOUND: Self = Self(0x6A88);
    pub const WRONG_P1P2: Self = Self(0x6B00);
    pub const INS_NOT_SUPPORTED: Self = Self(0x6D00);
    pub const CLA_NOT_SUPPORTED: Self = Self(0x6E00);
    pub const NO_PRECISE_DIAGNOSIS: Self = Self(0x6F00);
    pub const ALGORITHM_NOT_SUPPORTED: Self = Self(0x9484);
    pub const INVALID_KEY_CHECK_VALUE: Self = Self(0x9485);

    pub fn new(sw1: u8, sw2: u8) -> Self {
        StatusWord(u16::from_be_bytes([sw1, sw2]))
    }
    pub fn sw1(self) -> u8 {
        (self.0 >> 8) as u8
    }
    pub fn sw2(self) -> u8 {
        self.0 as u8
    }
    pub fn to_bytes(self) -> [u8; 2] {
        self.0.to_be_bytes()
    }
    /// `9000`, or `61xx` (normal processing, more data available).
    pub fn is_success(self) -> bool {
        self.0 == 0x9000 || self.sw1() == 0x61
    }
    /// `62xx`/`63xx`: processing completed with a warning (data may be returned).
    pub fn is_warning(self) -> bool {
        matches!(self.sw1(), 0x62 | 0x63)
    }
    /// Errors: anything that is neither success nor warning.
    pub fn is_error(self) -> bool {
        !self.is_success() && !self.is_warning()
    }

    /// Short symbolic name of a known status word, e.g. `NOT_ENOUGH_MEMORY`.
    pub fn name(self) -> Option<&'static str> {
        KNOWN.iter().find(|(sw, _, _)| *sw == self.0).map(|(_, n, _)| *n).or(match self.sw1() {
            0x61 => Some("MORE_DATA_AVAILABLE"),
            0x6C => Some("WRONG_LE"),
            0x63 if self.sw2() & 0xF0 == 0xC0 => Some("COUNTER"),
            _ => None,
        })
    }

    /// Human meaning per ISO 7816-4 / GP; unknown values are described by their class.
    pub fn meaning(self) -> String {
        if let Some((_, _, m)) = KNOWN.iter().find(|(sw, _, _)| *sw == self.0) {
            return (*m).to_string();
        }
        match (self.sw1(), self.sw2()) {
            (0x61, n) => format!("{n} more byte(s) available (GET RESPONSE)"),
            (0x6C, n) => format!("wrong Le; exact length is {n}"),
            (0x63, n) if n & 0xF0 == 0xC0 => format!("verification failed, {} tries left", n & 0x0F),
            (0x62, _) => "warning: non-volatile memory unchanged".into(),
            (0x63, _) => "warning: non-volatile memory changed".into(),
            (0x64, _) => "execution error: non-volatile memory unchanged".into(),
            (0x65, _) => "execution error: non-volatile memory changed".into(),
            (0x66, _) => "security-related issue".into(),
            (0x67, _) => "wrong length".into(),
            (0x68, _) => "functions in CLA not supported".into(),
            (0x69, _) => "command not allowed".into(),
            (0x6A, _) => "wrong parameters P1-P2".into(),
            (0x6F, _) => "no precise diagnosis".into(),
            (0x90..=0x9F, _) => "application-specific status".into(),
            _ => "unknown status word".into(),
        }
    }
}

const KNOWN: &[(u16, &str, &str)] = &[
    (0x9000, "SUCCESS", "success"),
    (0x6200, "WARNING", "warning, no information given"),
    (0x6281, "DATA_CORRUPTED", "part of returned data may be corrupted"),
    (0x6282, "END_OF_FILE", "end of file or record reached before reading Le bytes"),
    (0x6283, "SELECTED_FILE_INVALIDATED", "selected file invalidated (GP: card life cycle is CARD_LOCKED)"),
    (0x6284, "FCI_NOT_FORMATTED", "FCI not formatted"),
    (0x6300, "AUTHENTICATION_FAILED", "verification failed (GP: host cryptogram verification failed)"),
    (0x6310, "MORE_DATA", "more data available (GP GET STATUS: send again with P2 'next occurrence')"),
    (0x6400, "EXECUTION_ERROR", "execution error, non-volatile memory unchanged"),
    (0x6500, "MEMORY_CHANGED", "execution error, non-volatile memory changed"),
    (0x6581, "MEMORY_FAILURE", "memory failure"),
    (0x6700, "WRONG_LENGTH", "wrong length in Lc"),
    (0x6881, "LOGICAL_CHANNEL_NOT_SUPPORTED", "logical channel not supported or not active"),
    (0x6882, "SECURE_MESSAGING_NOT_SUPPORTED", "secure messaging not supported"),
    (0x6883, "LAST_COMMAND_EXPECTED", "last command of the chain expected"),
    (0x6884, "CHAINING_NOT_SUPPORTED", "command chaining not supported"),
    (0x6900, "COMMAND_NOT_ALLOWED", "command not allowed"),
    (0x6981, "INCOMPATIBLE_FILE_STRUCTURE", "command incompatible with file structure"),
    (0x6982, "SECURITY_STATUS_NOT_SATISFIED", "security status not satisfied (no or wrong secure channel)"),
    (0x6983, "AUTHENTICATION_METHOD_BLOCKED", "authentication method blocked"),
    (0x6984, "REFERENCED_DATA_INVALIDATED", "referenced data invalidated"),
    (0x6985, "CONDITIONS_NOT_SATISFIED", "conditions of use not satisfied"),
    (0x6986, "COMMAND_NOT_ALLOWED_NO_EF", "command not allowed (no current EF)"),
    (0x6987, "SM_DATA_MISSING", "expected secure messaging data objects missing"),
    (0x6988, "SM_DATA_INCORRECT", "incorrect secure messaging data objects (MAC verification failed)"),
    (0x6999, "APPLET_SELECTION_FAILED", "applet selection failed"),
    (0x6A80, "WRONG_DATA", "incorrect values in command data"),
    (0x6A81, "FUNCTION_NOT_SUPPORTED", "function not supported"),
    (0x6A82, "FILE_NOT_FOUND", "application or file not found"),
    (0x6A83, "RECORD_NOT_FOUND", "record not found"),
    (0x6A84, "NOT_ENOUGH_MEMORY", "not enough memory space"),
    (0x6A85, "LC_INCONSISTENT_WITH_TLV", "Nc inconsistent with TLV structure"),
    (0x6A86, "INCORRECT_P1P2", "incorrect parameters P1-P2"),
    (0x6A87, "LC_INCONSISTENT_WITH_P1P2", "Nc inconsistent with parameters P1-P2"),
    (0x6A88, "REFERENCED_DATA_NOT_FOUND", "referenced data not found"),
    (0x6A89, "FILE_ALREADY_EXISTS", "file already exists"),
    (0x6B00, "WRONG_P1P2", "wrong parameters P1-P2"),
    (0x6D00, "INS_NOT_SUPPORTED", "instruction not supported or invalid"),
    (0x6E00, "CLA_NOT_SUPPORTED", "class not supported"),
    (0x6F00, "NO_PRECISE_DIAGNOSIS", "no precise diagnosis"),
    (0x9484, "ALGORITHM_NOT_SUPPORTED", "algorithm not supported"),
    (0x9485, "INVALID_KEY_CHECK_VALUE", "invalid key check value"),
];

impl fmt::Display for StatusWord {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:04X}", self.0)
    }
}

impl fmt::Debug for StatusWord {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.name() {
            Some(n) => write!(f, "{:04X}({n})", self.0),
            None => write!(f, "{:04X}", self.0),
        }
    }
}

/// What the transport should do after a response, for T=0-style `61xx`/`6Cxx` handling
/// (ISO 7816-3 §12.2, ISO 7816-4 §5.1.3).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FollowUp {
    /// Nothing more: the response is complete.
    Done,
    /// Send GET RESPONSE (`00 C0 00 00 Le`) with this Le (0 means 256) and append its data.
    GetResponse(u8),
    /// Re-send the same command with this Le.
    Resend(u8),
}

impl FollowUp {
    pub fn for_sw(sw: StatusWord) -> Self {
        match sw.sw1() {
            0x61 => FollowUp::GetResponse(sw.sw2()),
            0x6C => FollowUp::Resend(sw.sw2()),
            _ => FollowUp::Done,
        }
    }
}

/// The GET RESPONSE command for `le` (class byte keeps the logical channel of `cla`).
pub fn get_response(cla: u8, le: u8) -> [u8; 5] {
    [cla & 0x03, 0xC0, 0x00, 0x00, le]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_classes() {
        assert_eq!(StatusWord(0x6A84).name(), Some("NOT_ENOUGH_MEMORY"));
        assert_eq!(StatusWord(0x6110).meaning(), "16 more byte(s) available (GET RESPONSE)");
        assert_eq!(StatusWord(0x63C2).meaning(), "verification failed, 2 tries left");
        assert!(StatusWord(0x6310).is_warning());
        assert!(StatusWord(0x6A88).is_error());
        assert_eq!(StatusWord(0x1234).meaning(), "unknown status word");
        assert_eq!(FollowUp::for_sw(StatusWord(0x6C10)), FollowUp::Resend(0x10));
        assert_eq!(FollowUp::for_sw(StatusWord(0x6100)), FollowUp::GetResponse(0));
    }
}
