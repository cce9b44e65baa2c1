//! BER-TLV (ISO/IEC 7816-4 §5.2, as GP Card Spec §11 uses it), DGI (EMV CPS / GP STORE DATA)
//! and simple TLV. Tags of up to 4 bytes, lengths of up to 4 bytes after `84`.

use crate::codec::{Codec, DecodeError, Reader};
use crate::hex::Hex;

/// A BER-TLV tag, kept as its encoded bytes packed big-endian into a `u32` (`0x9F70`, `0xBF3E`).
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Tag(pub u32);

impl Tag {
    /// Number of bytes in the encoded tag.
    #[allow(clippy::len_without_is_empty)] // a tag is never empty
    pub fn len(self) -> usize {
        match self.0 {
            0..=0xFF => 1,
            0x100..=0xFFFF => 2,
            0x1_0000..=0xFF_FFFF => 3,
            _ => 4,
        }
    }
    fn first_byte(self) -> u8 {
        (self.0 >> (8 * (self.len() - 1))) as u8
    }
    /// Bit 6 of the first byte: the value is itself a sequence of TLVs.
    pub fn is_constructed(self) -> bool {
        self.first_byte() & 0x20 != 0
    }
    /// Class bits (b8-b7 of the first byte): 0 universal, 1 application, 2 context, 3 private.
    pub fn class(self) -> u8 {
        self.first_byte() >> 6
    }
    pub fn encode(self, out: &mut Vec<u8>) {
        let n = self.len();
        out.extend_from_slice(&self.0.to_be_bytes()[4 - n..]);
    }
    /// Reads a tag. A `00` first byte is padding, not a tag (ISO 7816-4 §5.2.2.1). `FF` is
    /// padding in ISO records too, but GP uses private constructed tags such as `FF21`
    /// (Extended Card Resources), so it is read as the start of a multi-byte tag.
    pub fn read(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        let first = r.u8("BER-TLV tag")?;
        if first == 0x00 {
            return Err(DecodeError::invalid("BER-TLV tag", "00 is padding, not a tag"));
        }
        let mut v = first as u32;
        if first & 0x1F == 0x1F {
            // Subsequent bytes: b8 set means another byte follows.
            loop {
                let b = r.u8("BER-TLV tag")?;
                if v > 0xFF_FFFF {
                    return Err(DecodeError::invalid("BER-TLV tag", "tag longer than 4 bytes"));
                }
                v = v << 8 | b as u32;
                if b & 0x80 == 0 {
                    break;
                }
                if v > 0xFF_FFFF {
                    return Err(DecodeError::invalid("BER-TLV tag", "tag longer than 4 bytes"));
                }
            }
        }
        Ok(Tag(v))
    }
}

impl std::fmt::Debug for Tag {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut b = Vec::new();
        self.encode(&mut b);
        write!(f, "Tag({})", Hex(&b))
    }
}

impl std::fmt::Display for Tag {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut b = Vec::new();
        self.encode(&mut b);
        write!(f, "{}", Hex(&b))
    }
}

/// Encodes a BER length: short form below 128, else `81`..`84` followed by the length bytes.
pub fn encode_length(len: usize, out: &mut Vec<u8>) {
    match len {
        0..=0x7F => out.push(len as u8),
        0x80..=0xFF => out.extend_from_slice(&[0x81, len as u8]),
        0x100..=0xFFFF => {
            out.push(0x82);
            out.extend_from_slice(&(len as u16).to_be_bytes());
        }
        0x1_0000..=0xFF_FFFF => {
            out.push(0x83);
            out.extend_from_slice(&(len as u32).to_be_bytes()[1..]);
        }
        _ => {
            out.push(0x84);
            out.extend_from_slice(&(len as u32).to_be_bytes());
        }
    }
}

/// Reads a BER length (definite form only; the indefinite form `80` is not used by GP).
pub fn read_length(r: &mut Reader<'_>) -> Result<usize, DecodeError> {
    let b = r.u8("BER-TLV length")?;
    if b < 0x80 {
        return Ok(b as usize);
    }
    let n = (b & 0x7F) as usize;
    if n == 0 || n > 4 {
        return Err(DecodeError::invalid("BER-TLV length", format!("unsupported length byte {b:02X}")));
    }
    let bytes = r.take(n, "BER-TLV length")?;
    Ok(bytes.iter().fold(0usize, |acc, &x| acc << 8 | x as usize))
}

/// A TLV borrowed from a received buffer (no allocation).
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct TlvRef<'a> {
    pub tag: Tag,
    pub value: &'a [u8],
}

impl<'a> TlvRef<'a> {
    pub fn read(r: &mut Reader<'a>) -> Result<Self, DecodeError> {
        let tag = Tag::read(r)?;
        let len = read_length(r)?;
        let value = r.take(len, "BER-TLV value")?;
        Ok(TlvRef { tag, value })
    }
    /// The nested TLVs of a constructed value.
    pub fn children(&self) -> TlvIter<'a> {
        TlvIter::new(self.value)
    }
    /// First direct child with `tag`.
    pub fn find(&self, tag: u32) -> Result<Option<TlvRef<'a>>, DecodeError> {
        find(self.value, tag)
    }
    pub fn to_owned(&self) -> Tlv {
        Tlv { tag: self.tag, value: self.value.to_vec() }
    }
}

impl std::fmt::Debug for TlvRef<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}[{}]", self.tag, Hex(self.value))
    }
}

/// Iterates over consecutive TLVs; yields an error once and then stops on malformed input.
#[derive(Clone)]
pub struct TlvIter<'a> {
    r: Reader<'a>,
    failed: bool,
}

impl<'a> TlvIter<'a> {
    pub fn new(buf: &'a [u8]) -> Self {
        TlvIter { r: Reader::new(buf), failed: false }
    }
}

impl<'a> Iterator for TlvIter<'a> {
    type Item = Result<TlvRef<'a>, DecodeError>;
    fn next(&mut self) -> Option<Self::Item> {
        if self.failed || self.r.is_empty() {
            return None;
        }
        let item = TlvRef::read(&mut self.r);
        self.failed = item.is_err();
        Some(item)
    }
}

/// First TLV with `tag` at the top level of `buf`.
pub fn find(buf: &[u8], tag: u32) -> Result<Option<TlvRef<'_>>, DecodeError> {
    for t in TlvIter::new(buf) {
        let t = t?;
        if t.tag.0 == tag {
            return Ok(Some(t));
        }
    }
    Ok(None)
}

/// Parses all top-level TLVs of `buf`.
pub fn parse_all(buf: &[u8]) -> Result<Vec<TlvRef<'_>>, DecodeError> {
    TlvIter::new(buf).collect()
}

/// An owned TLV, for building commands.
#[derive(Clone, PartialEq, Eq)]
pub struct Tlv {
    pub tag: Tag,
    pub value: Vec<u8>,
}

impl Tlv {
    pub fn new(tag: u32, value: impl Into<Vec<u8>>) -> Self {
        Tlv { tag: Tag(tag), value: value.into() }
    }
    /// A constructed TLV whose value is the encoding of `children`.
    pub fn constructed(tag: u32, children: &[Tlv]) -> Self {
        let mut value = Vec::new();
        for c in children {
            c.encode(&mut value);
        }
        Tlv { tag: Tag(tag), value }
    }
    pub fn as_ref(&self) -> TlvRef<'_> {
        TlvRef { tag: self.tag, value: &self.value }
    }
}

impl Codec for Tlv {
    fn encode(&self, out: &mut Vec<u8>) {
        self.tag.encode(out);
        encode_length(self.value.len(), out);
        out.extend_from_slice(&self.value);
    }
    fn read(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        Ok(TlvRef::read(r)?.to_owned())
    }
}

impl std::fmt::Debug for Tlv {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.as_ref().fmt(f)
    }
}

/// Convenience: encode `tag len value` into `out`.
pub fn put(out: &mut Vec<u8>, tag: u32, value: &[u8]) {
    Tag(tag).encode(out);
    encode_length(value.len(), out);
    out.extend_from_slice(value);
}

/// A Data Grouping Identifier record (EMV CPS §5, GP STORE DATA): 2-byte DGI, length in one
/// byte, or `FF` and two bytes for 255 and more.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct Dgi {
    pub id: u16,
    pub value: Vec<u8>,
}

impl Codec for Dgi {
    fn encode(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.id.to_be_bytes());
        encode_short_or_ff(self.value.len(), out);
        out.extend_from_slice(&self.value);
    }
    fn read(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        let id = r.u16("DGI identifier")?;
        let len = read_short_or_ff(r, "DGI length")?;
        let value = r.take(len, "DGI value")?.to_vec();
        Ok(Dgi { id, value })
    }
}

/// Parses a sequence of DGIs.
pub fn parse_dgis(buf: &[u8]) -> Result<Vec<Dgi>, DecodeError> {
    let mut r = Reader::new(buf);
    let mut v = Vec::new();
    while !r.is_empty() {
        v.push(Dgi::read(&mut r)?);
    }
    Ok(v)
}

/// A simple TLV (ISO 7816-4 §5.2.1): 1-byte tag `01`..`FE`, length as for DGIs.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct SimpleTlv {
    pub tag: u8,
    pub value: Vec<u8>,
}

impl Codec for SimpleTlv {
    fn encode(&self, out: &mut Vec<u8>) {
        out.push(self.tag);
        encode_short_or_ff(self.value.len(), out);
        out.extend_from_slice(&self.value);
    }
    fn read(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        let tag = r.u8("simple TLV tag")?;
        if tag == 0x00 || tag == 0xFF {
            return Err(DecodeError::invalid("simple TLV tag", format!("{tag:02X} is not a valid tag")));
        }
        let len = read_short_or_ff(r, "simple TLV length")?;
        let value = r.take(len, "simple TLV value")?.to_vec();
        Ok(SimpleTlv { tag, value })
    }
}

fn encode_short_or_ff(len: usize, out: &mut Vec<u8>) {
    if len < 0xFF {
        out.push(len as u8);
    } else {
        out.push(0xFF);
        out.extend_from_slice(&(len.min(0xFFFF) as u16).to_be_bytes());
    }
}

fn read_short_or_ff(r: &mut Reader<'_>, what: &'static str) -> Result<usize, DecodeError> {
    let b = r.u8(what)?;
    if b == 0xFF { Ok(r.u16(what)? as usize) } else { Ok(b as usize) }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hex::decode;

    #[test]
    fn multi_byte_tags_and_lengths() {
        let buf = decode("9F7001 07 BF3E03 5C015A").unwrap();
        let v = parse_all(&buf).unwrap();
        assert_eq!(v[0].tag, Tag(0x9F70));
        assert_eq!(v[0].value, &[0x07]);
        assert!(v[1].tag.is_constructed());
        assert_eq!(v[1].children().next().unwrap().unwrap().tag, Tag(0x5C));
        let long = Tlv::new(0xC4, vec![0u8; 300]).to_bytes();
        assert_eq!(&long[..4], &[0xC4, 0x82, 0x01, 0x2C]);
        assert_eq!(Tlv::from_bytes(&long).unwrap().value.len(), 300);
    }

    #[test]
    fn truncation_is_an_error() {
        assert!(parse_all(&decode("4F05A0000000").unwrap()).is_err());
        assert!(parse_all(&decode("9F").unwrap()).is_err());
        assert!(parse_all(&decode("4F85").unwrap()).is_err());
        assert!(parse_all(&decode("1FFFFFFFFF01").unwrap()).is_err());
    }

    #[test]
    fn dgi_long_form() {
        let d = Dgi { id: 0x8113, value: vec![1; 300] };
        let b = d.to_bytes();
        assert_eq!(&b[..5], &[0x81, 0x13, 0xFF, 0x01, 0x2C]);
        assert_eq!(Dgi::from_bytes(&b).unwrap(), d);
    }
}
