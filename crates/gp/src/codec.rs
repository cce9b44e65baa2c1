//! The `Codec` trait for wire types and a bounds-checked `Reader` over received bytes.
//!
//! Every type that travels in an APDU encodes itself into a `Vec<u8>` and reads itself from a
//! `Reader`; reading never panics and never reads past the end, whatever the input.

use thiserror::Error;

/// A decoding failure: what was being read and why it failed.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum DecodeError {
    #[error("{what}: truncated, needed {needed} more byte(s), {available} available")]
    Truncated { what: &'static str, needed: usize, available: usize },
    #[error("{what}: {left} unexpected trailing byte(s)")]
    TrailingBytes { what: &'static str, left: usize },
    #[error("{what}: invalid value: {detail}")]
    Invalid { what: &'static str, detail: String },
}

impl DecodeError {
    pub fn invalid(what: &'static str, detail: impl Into<String>) -> Self {
        DecodeError::Invalid { what, detail: detail.into() }
    }
    /// Stable machine-readable code.
    pub fn code(&self) -> &'static str {
        match self {
            DecodeError::Truncated { .. } => "decode.truncated",
            DecodeError::TrailingBytes { .. } => "decode.trailing_bytes",
            DecodeError::Invalid { .. } => "decode.invalid",
        }
    }
}

/// A cursor over a byte slice.
#[derive(Debug, Clone)]
pub struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    pub fn new(buf: &'a [u8]) -> Self {
        Reader { buf, pos: 0 }
    }
    pub fn remaining(&self) -> usize {
        self.buf.len() - self.pos
    }
    pub fn is_empty(&self) -> bool {
        self.remaining() == 0
    }
    pub fn position(&self) -> usize {
        self.pos
    }
    /// The bytes not yet read, without consuming them.
    pub fn peek_rest(&self) -> &'a [u8] {
        &self.buf[self.pos..]
    }
    pub fn peek_u8(&self) -> Option<u8> {
        self.buf.get(self.pos).copied()
    }
    pub fn take(&mut self, n: usize, what: &'static str) -> Result<&'a [u8], DecodeError> {
        if self.remaining() < n {
            return Err(DecodeError::Truncated { what, needed: n - self.remaining(), available: self.remaining() });
        }
        let s = &self.buf[self.pos..self.pos + n];
        self.pos += n;
        Ok(s)
    }
    pub fn take_rest(&mut self) -> &'a [u8] {
        let s = &self.buf[self.pos..];
        self.pos = self.buf.len();
        s
    }
    pub fn u8(&mut self, what: &'static str) -> Result<u8, DecodeError> {
        Ok(self.take(1, what)?[0])
    }
    pub fn u16(&mut self, what: &'static str) -> Result<u16, DecodeError> {
        let b = self.take(2, what)?;
        Ok(u16::from_be_bytes([b[0], b[1]]))
    }
    pub fn array<const N: usize>(&mut self, what: &'static str) -> Result<[u8; N], DecodeError> {
        let b = self.take(N, what)?;
        let mut a = [0u8; N];
        a.copy_from_slice(b);
        Ok(a)
    }
    /// Fails when bytes are left over: used at the end of a fixed-layout structure.
    pub fn expect_end(&self, what: &'static str) -> Result<(), DecodeError> {
        if self.is_empty() { Ok(()) } else { Err(DecodeError::TrailingBytes { what, left: self.remaining() }) }
    }
}

/// A wire type: encodes to bytes and reads back from a [`Reader`].
pub trait Codec: Sized {
    fn encode(&self, out: &mut Vec<u8>);
    fn read(r: &mut Reader<'_>) -> Result<Self, DecodeError>;

    fn to_bytes(&self) -> Vec<u8> {
        let mut v = Vec::new();
        self.encode(&mut v);
        v
    }
    /// Reads exactly one value from `bytes`; trailing bytes are an error.
    fn from_bytes(bytes: &[u8]) -> Result<Self, DecodeError> {
        let mut r = Reader::new(bytes);
        let v = Self::read(&mut r)?;
        r.expect_end(std::any::type_name::<Self>())?;
        Ok(v)
    }
}
