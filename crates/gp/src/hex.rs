//! Hexadecimal text <-> bytes, the notation every GP log, vector file and API uses.

use std::fmt::Write as _;

/// Upper-case hex, no separators (the form GP tools and our vector files print).
pub fn encode(bytes: &[u8]) -> String {
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        let _ = write!(s, "{b:02X}");
    }
    s
}

/// Why a hex string was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum HexError {
    #[error("hex string has an odd number of digits ({0})")]
    OddLength(usize),
    #[error("invalid hex character {ch:?} at position {pos}")]
    InvalidChar { ch: char, pos: usize },
}

/// Decodes hex, case-insensitive; ASCII whitespace and ':' separators are skipped so that
/// `"80 50 00 00"` and `"80:50"` from logs can be pasted as they are.
pub fn decode(text: &str) -> Result<Vec<u8>, HexError> {
    let mut out = Vec::with_capacity(text.len() / 2);
    let mut hi: Option<u8> = None;
    let mut digits = 0usize;
    for (pos, ch) in text.char_indices() {
        if ch.is_ascii_whitespace() || ch == ':' {
            continue;
        }
        let v = ch.to_digit(16).ok_or(HexError::InvalidChar { ch, pos })? as u8;
        digits += 1;
        match hi.take() {
            None => hi = Some(v),
            Some(h) => out.push(h << 4 | v),
        }
    }
    if hi.is_some() {
        return Err(HexError::OddLength(digits));
    }
    Ok(out)
}

/// Hex for `Display` without allocating twice.
pub struct Hex<'a>(pub &'a [u8]);

impl std::fmt::Display for Hex<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        for b in self.0 {
            write!(f, "{b:02X}")?;
        }
        Ok(())
    }
}

impl std::fmt::Debug for Hex<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        std::fmt::Display::fmt(self, f)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_separators() {
        assert_eq!(decode("80 50:0a").unwrap(), vec![0x80, 0x50, 0x0A]);
        assert_eq!(encode(&[0x00, 0xAB, 0xff]), "00ABFF");
        assert_eq!(decode("ABC"), Err(HexError::OddLength(3)));
        assert!(matches!(decode("0G"), Err(HexError::InvalidChar { ch: 'G', pos: 1 })));
    }
}

/// `#[serde(with = "tsm_gp::hex::serde")]` for `Vec<u8>` fields written as hex strings.
pub mod serde {
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(bytes: &[u8], s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&super::encode(bytes))
    }
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<u8>, D::Error> {
        let s = String::deserialize(d)?;
        super::decode(&s).map_err(serde::de::Error::custom)
    }
}
