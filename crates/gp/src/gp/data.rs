//! GET DATA objects (GPCS 2.3 §11.3 and Appendix H): CPLC, Card Recognition Data, Card
//! Capability Information, Key Information Template, sequence counter, KDD, IIN, CIN and the
//! Extended Card Resources of ETSI TS 102 226; parsers for the host and builders for the card.

use super::{GpError, Privileges};
use crate::codec::{Codec, DecodeError, Reader};
use crate::hex::Hex;
use crate::tlv::{self, Tag, Tlv, TlvIter, TlvRef};
use std::fmt;

/// GET DATA tags (P1-P2) of the objects in this module.
pub mod tags {
    pub const CPLC: u16 = 0x9F7F;
    pub const CARD_RECOGNITION_DATA: u16 = 0x0066;
    pub const CARD_CAPABILITY_INFORMATION: u16 = 0x0067;
    pub const KEY_INFORMATION_TEMPLATE: u16 = 0x00E0;
    pub const SEQUENCE_COUNTER: u16 = 0x00C1;
    pub const CONFIRMATION_COUNTER: u16 = 0x00C2;
    pub const KDD: u16 = 0x00CF;
    pub const IIN: u16 = 0x0042;
    pub const CIN: u16 = 0x0045;
    pub const ISD_AID: u16 = 0x004F;
    pub const EXTENDED_CARD_RESOURCES: u16 = 0xFF21;
    pub const FCI_DISCRETIONARY: u16 = 0xBF0C;
    /// GP Amendment C: CRS contactless protocol parameters.
    pub const CRS_PARAMETERS: u16 = 0x00A5;
}

/// The name of a GET DATA object, for traces.
pub fn tag_name(tag: u16) -> Option<&'static str> {
    Some(match tag {
        tags::CPLC => "CPLC",
        tags::CARD_RECOGNITION_DATA => "Card Recognition Data",
        tags::CARD_CAPABILITY_INFORMATION => "Card Capability Information",
        tags::KEY_INFORMATION_TEMPLATE => "Key Information Template",
        tags::SEQUENCE_COUNTER => "sequence counter",
        tags::CONFIRMATION_COUNTER => "confirmation counter",
        tags::KDD => "key diversification data",
        tags::IIN => "IIN",
        tags::CIN => "CIN",
        tags::ISD_AID => "ISD AID",
        tags::EXTENDED_CARD_RESOURCES => "Extended Card Resources",
        tags::FCI_DISCRETIONARY => "FCI discretionary data",
        0x9F66..=0x9F6A => "CPLC part",
        0x2F00 => "list of applications",
        0x00C6 => "free non-volatile memory",
        0x00C7 => "free volatile memory",
        _ => return None,
    })
}

/// Reads one TLV that must have tag `tag`.
fn expect_tlv<'a>(r: &mut Reader<'a>, tag: u32, what: &'static str) -> Result<TlvRef<'a>, DecodeError> {
    let t = TlvRef::read(r)?;
    if t.tag.0 != tag {
        return Err(DecodeError::invalid(what, format!("expected tag {}, found {}", Tag(tag), t.tag)));
    }
    Ok(t)
}

fn be_uint(b: &[u8], what: &'static str) -> Result<u32, DecodeError> {
    if b.len() > 4 {
        return Err(DecodeError::invalid(what, format!("{} bytes do not fit 32 bits", b.len())));
    }
    Ok(b.iter().fold(0u32, |a, &x| a << 8 | x as u32))
}

// ---------------------------------------------------------------------------------------------
// Calendar dates (CPLC dates are year digit + day of year)

/// A calendar date (proleptic Gregorian), for CPLC date decoding.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct CalendarDate {
    pub year: u16,
    pub month: u8,
    pub day: u8,
}

impl CalendarDate {
    pub fn is_leap(year: u16) -> bool {
        (year.is_multiple_of(4) && !year.is_multiple_of(100)) || year.is_multiple_of(400)
    }
    fn month_lengths(year: u16) -> [u16; 12] {
        [31, if Self::is_leap(year) { 29 } else { 28 }, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31]
    }
    /// Day `ordinal` (1-based) of `year`, or `None` past the end of the year.
    pub fn from_ordinal(year: u16, ordinal: u16) -> Option<Self> {
        let mut left = ordinal;
        if left == 0 {
            return None;
        }
        for (m, len) in Self::month_lengths(year).into_iter().enumerate() {
            if left <= len {
                return Some(CalendarDate { year, month: m as u8 + 1, day: left as u8 });
            }
            left -= len;
        }
        None
    }
    /// Day of the year, 1-based.
    pub fn ordinal(self) -> u16 {
        let before: u16 = Self::month_lengths(self.year).iter().take(self.month.saturating_sub(1) as usize).sum();
        before + self.day as u16
    }
}

impl fmt::Display for CalendarDate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:04}-{:02}-{:02}", self.year, self.month, self.day)
    }
}

impl std::str::FromStr for CalendarDate {
    type Err = GpError;
    /// `YYYY-MM-DD`.
    fn from_str(s: &str) -> Result<Self, GpError> {
        let bad = || GpError::invalid("date", format!("{s:?} is not YYYY-MM-DD"));
        let mut it = s.trim().split('-');
        let (y, m, d) = (it.next().ok_or_else(bad)?, it.next().ok_or_else(bad)?, it.next().ok_or_else(bad)?);
        if it.next().is_some() {
            return Err(bad());
        }
        let date = CalendarDate {
            year: y.parse().map_err(|_| bad())?,
            month: m.parse().map_err(|_| bad())?,
            day: d.parse().map_err(|_| bad())?,
        };
        if date.month == 0 || date.month > 12 || date.day == 0 || date.day as u16 > Self::month_lengths(date.year)[date.month as usize - 1] {
            return Err(bad());
        }
        Ok(date)
    }
}

/// Decodes a CPLC date `YDDD` (BCD: last digit of the year, day of the year). The decade is the
/// latest one that does not put the date after `today` (the caller passes today's date: this
/// crate reads no clock). `0000` and `FFFF` mean "not set" and give `None`.
pub fn decode_cplc_date(raw: [u8; 2], today: CalendarDate) -> Result<Option<CalendarDate>, GpError> {
    if raw == [0, 0] || raw == [0xFF, 0xFF] {
        return Ok(None);
    }
    let digits = [raw[0] >> 4, raw[0] & 0x0F, raw[1] >> 4, raw[1] & 0x0F];
    if digits.iter().any(|&d| d > 9) {
        return Err(GpError::invalid("CPLC date", format!("{} is not BCD", Hex(&raw))));
    }
    let y = digits[0] as u16;
    let ordinal = digits[1] as u16 * 100 + digits[2] as u16 * 10 + digits[3] as u16;
    if ordinal == 0 || ordinal > 366 {
        return Err(GpError::invalid("CPLC date", format!("{}: day {ordinal} of the year does not exist", Hex(&raw))));
    }
    let mut year = today.year - today.year % 10 + y;
    if (year, ordinal) > (today.year, today.ordinal()) {
        year = year.saturating_sub(10);
    }
    CalendarDate::from_ordinal(year, ordinal)
        .map(Some)
        .ok_or_else(|| GpError::invalid("CPLC date", format!("{}: {year} has no day {ordinal}", Hex(&raw))))
}

// ---------------------------------------------------------------------------------------------
// CPLC

/// Card Production Life Cycle data (GET DATA `9F7F`, 42 bytes; field layout per GPCS 2.3
/// Table H-? "CPLC", as issued by the chip and OS makers). Values stay raw.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct Cplc {
    pub ic_fabricator: [u8; 2],
    pub ic_type: [u8; 2],
    pub os_id: [u8; 2],
    pub os_release_date: [u8; 2],
    pub os_release_level: [u8; 2],
    pub ic_fabrication_date: [u8; 2],
    pub ic_serial_number: [u8; 4],
    pub ic_batch_identifier: [u8; 2],
    pub ic_module_fabricator: [u8; 2],
    pub ic_module_packaging_date: [u8; 2],
    pub icc_manufacturer: [u8; 2],
    pub ic_embedding_date: [u8; 2],
    pub ic_pre_personalizer: [u8; 2],
    pub ic_pre_perso_equipment_date: [u8; 2],
    pub ic_pre_perso_equipment_id: [u8; 4],
    pub ic_personalizer: [u8; 2],
    pub ic_personalization_date: [u8; 2],
    pub ic_perso_equipment_id: [u8; 4],
}

impl Cplc {
    pub const LEN: usize = 42;

    /// All fields by name, in wire order.
    pub fn fields(&self) -> [(&'static str, &[u8]); 18] {
        [
            ("ic_fabricator", &self.ic_fabricator),
            ("ic_type", &self.ic_type),
            ("os_id", &self.os_id),
            ("os_release_date", &self.os_release_date),
            ("os_release_level", &self.os_release_level),
            ("ic_fabrication_date", &self.ic_fabrication_date),
            ("ic_serial_number", &self.ic_serial_number),
            ("ic_batch_identifier", &self.ic_batch_identifier),
            ("ic_module_fabricator", &self.ic_module_fabricator),
            ("ic_module_packaging_date", &self.ic_module_packaging_date),
            ("icc_manufacturer", &self.icc_manufacturer),
            ("ic_embedding_date", &self.ic_embedding_date),
            ("ic_pre_personalizer", &self.ic_pre_personalizer),
            ("ic_pre_perso_equipment_date", &self.ic_pre_perso_equipment_date),
            ("ic_pre_perso_equipment_id", &self.ic_pre_perso_equipment_id),
            ("ic_personalizer", &self.ic_personalizer),
            ("ic_personalization_date", &self.ic_personalization_date),
            ("ic_perso_equipment_id", &self.ic_perso_equipment_id),
        ]
    }

    /// The date fields by name.
    pub fn dates(&self) -> [(&'static str, [u8; 2]); 6] {
        [
            ("os_release_date", self.os_release_date),
            ("ic_fabrication_date", self.ic_fabrication_date),
            ("ic_module_packaging_date", self.ic_module_packaging_date),
            ("ic_embedding_date", self.ic_embedding_date),
            ("ic_pre_perso_equipment_date", self.ic_pre_perso_equipment_date),
            ("ic_personalization_date", self.ic_personalization_date),
        ]
    }

    fn read_fields(r: &mut Reader<'_>) -> Result<Cplc, DecodeError> {
        const W: &str = "CPLC";
        Ok(Cplc {
            ic_fabricator: r.array(W)?,
            ic_type: r.array(W)?,
            os_id: r.array(W)?,
            os_release_date: r.array(W)?,
            os_release_level: r.array(W)?,
            ic_fabrication_date: r.array(W)?,
            ic_serial_number: r.array(W)?,
            ic_batch_identifier: r.array(W)?,
            ic_module_fabricator: r.array(W)?,
            ic_module_packaging_date: r.array(W)?,
            icc_manufacturer: r.array(W)?,
            ic_embedding_date: r.array(W)?,
            ic_pre_personalizer: r.array(W)?,
            ic_pre_perso_equipment_date: r.array(W)?,
            ic_pre_perso_equipment_id: r.array(W)?,
            ic_personalizer: r.array(W)?,
            ic_personalization_date: r.array(W)?,
            ic_perso_equipment_id: r.array(W)?,
        })
    }

    /// Parses a GET DATA `9F7F` response (with the tag), or the bare 42 bytes.
    pub fn parse(data: &[u8]) -> Result<Cplc, GpError> {
        Cplc::from_bytes(data).map_err(|source| GpError::Decode { context: "CPLC", source })
    }
}

impl Codec for Cplc {
    fn encode(&self, out: &mut Vec<u8>) {
        let mut v = Vec::with_capacity(Self::LEN);
        for (_, f) in self.fields() {
            v.extend_from_slice(f);
        }
        tlv::put(out, tags::CPLC as u32, &v);
    }
    /// Tagged `9F7F 2A …`; also the bare 42 bytes some cards return. Anything else is
    /// "not a CPLC object".
    fn read(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        let rest = r.peek_rest();
        if rest.starts_with(&[0x9F, 0x7F]) {
            let t = TlvRef::read(r)?;
            if t.value.len() != Self::LEN {
                return Err(DecodeError::invalid("CPLC", format!("{} bytes of data, expected {}", t.value.len(), Self::LEN)));
            }
            Cplc::read_fields(&mut Reader::new(t.value))
        } else if rest.len() == Self::LEN {
            Cplc::read_fields(r)
        } else {
            Err(DecodeError::invalid("CPLC", format!("not a CPLC object (no tag 9F7F and {} bytes, not {})", rest.len(), Self::LEN)))
        }
    }
}

impl fmt::Display for Cplc {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "CPLC")?;
        for (n, v) in self.fields() {
            write!(f, " {n}={}", Hex(v))?;
        }
        Ok(())
    }
}

// ---------------------------------------------------------------------------------------------
// OIDs and Card Recognition Data

/// An object identifier as its DER content bytes (no tag and length).
#[derive(Clone, PartialEq, Eq, Hash, Default)]
pub struct Oid(pub Vec<u8>);

impl Oid {
    /// `{iso(1) member-body(2) us(840) globalPlatform(114283)}`, the prefix of the GP OIDs.
    pub const GP_PREFIX: [u8; 6] = [0x2A, 0x86, 0x48, 0x86, 0xFC, 0x6B];

    /// Encodes arcs (the first two combine into one byte group).
    pub fn from_arcs(arcs: &[u64]) -> Oid {
        let mut out = Vec::new();
        match arcs {
            [] => {}
            [a] => out.extend(base128(a * 40)),
            [a, b, rest @ ..] => {
                out.extend(base128(a * 40 + b));
                rest.iter().for_each(|&x| out.extend(base128(x)));
            }
        }
        Oid(out)
    }

    /// The arcs; fails on a truncated base-128 group or an arc beyond 64 bits.
    pub fn arcs(&self) -> Result<Vec<u64>, GpError> {
        let groups = base128_groups(&self.0).ok_or_else(|| GpError::invalid("OID", format!("{} is not a valid OID encoding", Hex(&self.0))))?;
        let mut out = Vec::with_capacity(groups.len() + 1);
        for (i, g) in groups.into_iter().enumerate() {
            if i == 0 {
                let (a, b) = if g < 40 { (0, g) } else if g < 80 { (1, g - 40) } else { (2, g - 80) };
                out.push(a);
                out.push(b);
            } else {
                out.push(g);
            }
        }
        Ok(out)
    }

    pub fn starts_with(&self, prefix: &[u8]) -> bool {
        self.0.starts_with(prefix)
    }
}

/// One base-128 group (b8 set on all but the last byte).
fn base128(mut v: u64) -> Vec<u8> {
    let mut tmp = vec![(v & 0x7F) as u8];
    v >>= 7;
    while v > 0 {
        tmp.push((v & 0x7F) as u8 | 0x80);
        v >>= 7;
    }
    tmp.reverse();
    tmp
}

/// Splits base-128 groups (b8 = more bytes follow).
fn base128_groups(b: &[u8]) -> Option<Vec<u64>> {
    let mut out = Vec::new();
    let mut acc: u64 = 0;
    let mut open = false;
    for &x in b {
        if acc > (u64::MAX >> 7) {
            return None;
        }
        acc = acc << 7 | (x & 0x7F) as u64;
        open = x & 0x80 != 0;
        if !open {
            out.push(acc);
            acc = 0;
        }
    }
    if open { None } else { Some(out) }
}

impl fmt::Display for Oid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.arcs() {
            Ok(a) if !a.is_empty() => {
                let s: Vec<String> = a.iter().map(u64::to_string).collect();
                write!(f, "{}", s.join("."))
            }
            _ => write!(f, "{}", Hex(&self.0)),
        }
    }
}

impl fmt::Debug for Oid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Oid({self})")
    }
}

/// One secure channel protocol a card announces in its Card Recognition Data.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ScpOption {
    /// The SCP identifier byte (`02`, `03`, `80` for ETSI OTA, …).
    pub id: u8,
    /// The implementation option `i`, decoded base-128 when it takes more than one byte.
    pub i: u32,
    /// `i` as it appears in the OID.
    pub i_bytes: Vec<u8>,
}

/// A `6x` template of the Card Recognition Data: an OID and possibly further data.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CrdEntry {
    /// `60` card management type and version, `63` card identification scheme, `64` SCP,
    /// `65` card configuration details, `66` card/chip details, `67`/`68` trust point and
    /// ISD certificate information.
    pub tag: u8,
    pub oid: Oid,
    /// Bytes after the `06` OID inside the template.
    pub extra: Vec<u8>,
}

/// Card Recognition Data (GPCS 2.3 §H.2; GET DATA `66` → `73`).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct CardRecognitionData {
    /// The `06` directly in `73`: `{globalPlatform 1}` for card recognition data.
    pub oid: Option<Oid>,
    pub entries: Vec<CrdEntry>,
}

impl CardRecognitionData {
    /// The recognition data of a GP card of `version` (e.g. `[2, 3, 1]` for 2.3.1) with the given
    /// `(scp, i)` options.
    pub fn gp(version: &[u32], scps: &[(u8, u8)]) -> Self {
        let gp = |tail: &[u8]| Oid([&Oid::GP_PREFIX[..], tail].concat());
        let mut ver = vec![0x02];
        ver.extend(version.iter().flat_map(|&v| base128(v as u64)));
        let mut entries = vec![
            CrdEntry { tag: 0x60, oid: gp(&ver), extra: vec![] },
            CrdEntry { tag: 0x63, oid: gp(&[0x03]), extra: vec![] },
        ];
        for &(id, i) in scps {
            entries.push(CrdEntry { tag: 0x64, oid: gp(&[0x04, id, i]), extra: vec![] });
        }
        CardRecognitionData { oid: Some(gp(&[0x01])), entries }
    }

    fn entry(&self, tag: u8) -> Option<&CrdEntry> {
        self.entries.iter().find(|e| e.tag == tag)
    }
    /// The GP version from the card management type and version OID `{globalPlatform 2 v}`
    /// (GPCS 2.3 Table H-1): `2A864886FC6B 02 02 03` is version `"2.3"`.
    pub fn gp_version(&self) -> Option<String> {
        let e = self.entry(0x60)?;
        let tail = e.oid.0.strip_prefix(&[0x2A, 0x86, 0x48, 0x86, 0xFC, 0x6B, 0x02][..])?;
        let parts: Vec<String> = base128_groups(tail)?.iter().map(u64::to_string).collect();
        Some(parts.join("."))
    }
    /// The SCP options (`64` templates with OID `{globalPlatform 4 scp i}`). The SCP byte is
    /// read raw (an SCP80 entry is `…04 80 00`, not a two-byte arc).
    pub fn scps(&self) -> Vec<ScpOption> {
        self.entries
            .iter()
            .filter(|e| e.tag == 0x64)
            .filter_map(|e| {
                let tail = e.oid.0.strip_prefix(&[0x2A, 0x86, 0x48, 0x86, 0xFC, 0x6B, 0x04][..])?;
                let (&id, i_bytes) = tail.split_first()?;
                // One base-128 group normally; a malformed tail falls back to its last byte.
                let i = match base128_groups(i_bytes).as_deref() {
                    Some([g]) => u32::try_from(*g).unwrap_or(u32::MAX),
                    _ => i_bytes.last().copied().unwrap_or(0) as u32,
                };
                Some(ScpOption { id, i, i_bytes: i_bytes.to_vec() })
            })
            .collect()
    }
    pub fn card_identification_scheme(&self) -> Option<&Oid> {
        self.entry(0x63).map(|e| &e.oid)
    }
    pub fn card_config_details(&self) -> Option<&Oid> {
        self.entry(0x65).map(|e| &e.oid)
    }
    pub fn card_chip_details(&self) -> Option<&Oid> {
        self.entry(0x66).map(|e| &e.oid)
    }

    pub fn parse(data: &[u8]) -> Result<Self, GpError> {
        Self::from_bytes(data).map_err(|source| GpError::Decode { context: "Card Recognition Data", source })
    }
}

impl Codec for CardRecognitionData {
    fn encode(&self, out: &mut Vec<u8>) {
        let mut inner = Vec::new();
        if let Some(o) = &self.oid {
            tlv::put(&mut inner, 0x06, &o.0);
        }
        for e in &self.entries {
            let mut v = Vec::new();
            tlv::put(&mut v, 0x06, &e.oid.0);
            v.extend_from_slice(&e.extra);
            tlv::put(&mut inner, e.tag as u32, &v);
        }
        let mut t73 = Vec::new();
        tlv::put(&mut t73, 0x73, &inner);
        tlv::put(out, 0x66, &t73);
    }
    fn read(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        const W: &str = "Card Recognition Data";
        let outer = expect_tlv(r, 0x66, W)?;
        let mut r73 = Reader::new(outer.value);
        let t73 = expect_tlv(&mut r73, 0x73, W)?;
        r73.expect_end(W)?;
        let mut crd = CardRecognitionData::default();
        for t in TlvIter::new(t73.value) {
            let t = t?;
            match t.tag.0 {
                0x06 if crd.oid.is_none() && crd.entries.is_empty() => crd.oid = Some(Oid(t.value.to_vec())),
                tag @ 0x60..=0x7F => {
                    let mut rr = Reader::new(t.value);
                    let o = expect_tlv(&mut rr, 0x06, W)?;
                    crd.entries.push(CrdEntry { tag: tag as u8, oid: Oid(o.value.to_vec()), extra: rr.take_rest().to_vec() });
                }
                _ => return Err(DecodeError::invalid(W, format!("unexpected tag {} in 73", t.tag))),
            }
        }
        Ok(crd)
    }
}

impl fmt::Display for CardRecognitionData {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Card Recognition Data: GP {}", self.gp_version().unwrap_or_else(|| "?".into()))?;
        for s in self.scps() {
            write!(f, ", SCP{:02X} i={:02X}", s.id, s.i)?;
        }
        if let Some(o) = self.card_config_details() {
            write!(f, ", config {o}")?;
        }
        if let Some(o) = self.card_chip_details() {
            write!(f, ", chip {o}")?;
        }
        Ok(())
    }
}

// ---------------------------------------------------------------------------------------------
// Card Capability Information

/// Names of the signature cipher suites bits (tokens, receipts, DAP; GPCS 2.3 Table H-?): the
/// first byte then the second.
pub fn signature_cipher_suites(v: &[u8]) -> Vec<&'static str> {
    const B1: [&str; 8] = [
        "RSA-1024 SHA-1 PKCS#1",
        "RSASSA-PSS SHA-256",
        "DES MAC 16-byte key",
        "AES-CMAC-128",
        "AES-CMAC-192",
        "AES-CMAC-256",
        "ECDSA P-256 SHA-256",
        "ECDSA P-384 SHA-384",
    ];
    const B2: [&str; 3] = ["ECDSA P-512 SHA-512", "ECDSA P-521 SHA-512", "SM2"];
    let mut out = Vec::new();
    if let Some(&b) = v.first() {
        out.extend((0..8).filter(|i| b & (1 << i) != 0).map(|i| B1[i]));
    }
    if let Some(&b) = v.get(1) {
        out.extend((0..8).filter(|i| b & (1 << i) != 0).map(|i| B2.get(i).copied().unwrap_or("RFU")));
    }
    out
}

/// A cipher-suites field as the 16-bit value (a 1-byte field is the first byte).
pub fn cipher_suites_u16(v: &[u8]) -> u16 {
    u16::from_be_bytes([v.first().copied().unwrap_or(0), v.get(1).copied().unwrap_or(0)])
}

/// Load File Data Block hash algorithm names (GPCS 2.3 §H.4: a list of identifiers).
pub fn hash_algorithm_name(id: u8) -> Option<&'static str> {
    Some(match id {
        0x01 => "SHA-1",
        0x02 => "SHA-256",
        0x03 => "SHA-384",
        0x04 => "SHA-512",
        0x05 => "SM3",
        _ => return None,
    })
}

/// One SCP of the Card Capability Information (`A0`).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ScpCapability {
    /// `80`
    pub id: u8,
    /// `81`: the supported `i` values.
    pub options: Vec<u8>,
    /// `91`: options given as a mask.
    pub options_mask: Option<Vec<u8>>,
    /// `82`: supported AES key sizes, bits 01 = 128, 02 = 192, 04 = 256.
    pub key_sizes: Option<u8>,
    /// `83`: TLS cipher suites (SCP81).
    pub tls_cipher_suites: Option<Vec<u8>>,
    /// `84`: maximum PSK length (SCP81).
    pub max_psk_length: Option<u8>,
    pub other: Vec<Tlv>,
}

/// Card Capability Information (GPCS 2.3 §H.4; GET DATA `67`).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct CardCapabilities {
    pub scp: Vec<ScpCapability>,
    /// `81`: privileges that may be given to supplementary security domains.
    pub ssd_privileges: Option<Privileges>,
    /// `82`: privileges that may be given to applications.
    pub app_privileges: Option<Privileges>,
    /// `83`: LFDB hash algorithm identifiers (see [`hash_algorithm_name`]).
    pub lfdb_hash_algorithms: Option<Vec<u8>>,
    /// `84`: LFDB encryption cipher suites.
    pub lfdb_encryption_cipher_suites: Option<Vec<u8>>,
    /// `85`: token signature cipher suites (see [`signature_cipher_suites`]).
    pub token_cipher_suites: Option<Vec<u8>>,
    /// `86`: receipt cipher suites.
    pub receipt_cipher_suites: Option<Vec<u8>>,
    /// `87`: DAP cipher suites.
    pub dap_cipher_suites: Option<Vec<u8>>,
    /// `88`: key parameter reference list.
    pub key_parameter_references: Option<Vec<u8>>,
    /// `89` ELF upgrade, `8A` token identifier deny list, `8B` SD self-removal, and unknown tags.
    pub other: Vec<Tlv>,
    /// The card wrapped the object twice (`67 len 67 len …`), a known broken encoding.
    pub double_wrapped: bool,
}

impl CardCapabilities {
    pub fn parse(data: &[u8]) -> Result<Self, GpError> {
        Self::from_bytes(data).map_err(|source| GpError::Decode { context: "Card Capability Information", source })
    }
}

impl Codec for CardCapabilities {
    fn encode(&self, out: &mut Vec<u8>) {
        let mut v = Vec::new();
        for s in &self.scp {
            let mut a = Vec::new();
            tlv::put(&mut a, 0x80, &[s.id]);
            tlv::put(&mut a, 0x81, &s.options);
            if let Some(m) = &s.options_mask {
                tlv::put(&mut a, 0x91, m);
            }
            if let Some(k) = s.key_sizes {
                tlv::put(&mut a, 0x82, &[k]);
            }
            if let Some(t) = &s.tls_cipher_suites {
                tlv::put(&mut a, 0x83, t);
            }
            if let Some(p) = s.max_psk_length {
                tlv::put(&mut a, 0x84, &[p]);
            }
            s.other.iter().for_each(|t| t.encode(&mut a));
            tlv::put(&mut v, 0xA0, &a);
        }
        if let Some(p) = self.ssd_privileges {
            tlv::put(&mut v, 0x81, &p.to_bytes());
        }
        if let Some(p) = self.app_privileges {
            tlv::put(&mut v, 0x82, &p.to_bytes());
        }
        let opt = [
            (0x83, &self.lfdb_hash_algorithms),
            (0x84, &self.lfdb_encryption_cipher_suites),
            (0x85, &self.token_cipher_suites),
            (0x86, &self.receipt_cipher_suites),
            (0x87, &self.dap_cipher_suites),
            (0x88, &self.key_parameter_references),
        ];
        for (tag, val) in opt {
            if let Some(x) = val {
                tlv::put(&mut v, tag, x);
            }
        }
        self.other.iter().for_each(|t| t.encode(&mut v));
        if self.double_wrapped {
            let mut inner = Vec::new();
            tlv::put(&mut inner, 0x67, &v);
            v = inner;
        }
        tlv::put(out, 0x67, &v);
    }

    fn read(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        const W: &str = "Card Capability Information";
        let outer = expect_tlv(r, 0x67, W)?;
        let mut cc = CardCapabilities::default();
        let mut body = outer.value;
        // Known broken encoding: the object wrapped in a second 67 (accept exactly that shape).
        match tlv::parse_all(body).as_deref() {
            Ok([only]) if only.tag.0 == 0x67 => {
                body = only.value;
                cc.double_wrapped = true;
            }
            _ => {}
        }
        let privs = |v: &[u8]| Privileges::from_bytes(v).map_err(|e| DecodeError::invalid(W, e.to_string()));
        for t in TlvIter::new(body) {
            let t = t?;
            match t.tag.0 {
                0xA0 => {
                    let mut s = ScpCapability::default();
                    let mut have_id = false;
                    for c in t.children() {
                        let c = c?;
                        let one = |v: &[u8]| -> Result<u8, DecodeError> {
                            if let [b] = v { Ok(*b) } else { Err(DecodeError::invalid(W, format!("tag {} in A0 must have 1 byte", c.tag))) }
                        };
                        match c.tag.0 {
                            0x80 => {
                                s.id = one(c.value)?;
                                have_id = true;
                            }
                            0x81 => s.options = c.value.to_vec(),
                            0x91 => s.options_mask = Some(c.value.to_vec()),
                            0x82 => s.key_sizes = Some(one(c.value)?),
                            0x83 => s.tls_cipher_suites = Some(c.value.to_vec()),
                            0x84 => s.max_psk_length = Some(one(c.value)?),
                            _ => s.other.push(c.to_owned()),
                        }
                    }
                    if !have_id {
                        return Err(DecodeError::invalid(W, "SCP information A0 without SCP identifier 80"));
                    }
                    cc.scp.push(s);
                }
                0x81 => cc.ssd_privileges = Some(privs(t.value)?),
                0x82 => cc.app_privileges = Some(privs(t.value)?),
                0x83 => cc.lfdb_hash_algorithms = Some(t.value.to_vec()),
                0x84 => cc.lfdb_encryption_cipher_suites = Some(t.value.to_vec()),
                0x85 => cc.token_cipher_suites = Some(t.value.to_vec()),
                0x86 => cc.receipt_cipher_suites = Some(t.value.to_vec()),
                0x87 => cc.dap_cipher_suites = Some(t.value.to_vec()),
                0x88 => cc.key_parameter_references = Some(t.value.to_vec()),
                _ => cc.other.push(t.to_owned()),
            }
        }
        Ok(cc)
    }
}

impl fmt::Display for CardCapabilities {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Card Capability Information:")?;
        for s in &self.scp {
            write!(f, " SCP{:02X} i=[{}]", s.id, s.options.iter().map(|o| format!("{o:02X}")).collect::<Vec<_>>().join(","))?;
            if let Some(k) = s.key_sizes {
                write!(f, " keys={k:02X}")?;
            }
            write!(f, ";")?;
        }
        if let Some(p) = self.ssd_privileges {
            write!(f, " SSD privileges {p};")?;
        }
        if let Some(p) = self.app_privileges {
            write!(f, " app privileges {p};")?;
        }
        if let Some(h) = &self.lfdb_hash_algorithms {
            let n: Vec<String> = h.iter().map(|&x| hash_algorithm_name(x).map(str::to_string).unwrap_or(format!("{x:02X}"))).collect();
            write!(f, " LFDB hash [{}];", n.join(", "))?;
        }
        for (n, v) in [("token", &self.token_cipher_suites), ("receipt", &self.receipt_cipher_suites), ("DAP", &self.dap_cipher_suites)] {
            if let Some(v) = v {
                write!(f, " {n} [{}];", signature_cipher_suites(v).join(", "))?;
            }
        }
        Ok(())
    }
}

// ---------------------------------------------------------------------------------------------
// Key Information Template

/// Key type names (GPCS 2.3 Table 11-16; two-byte `FFxx` types of the extended format kept
/// as numbers).
pub fn key_type_name(t: u16) -> &'static str {
    match t {
        0x80 => "DES",
        0x81 => "3DES (reserved)",
        0x82 => "3DES-CBC",
        0x83 => "DES-ECB",
        0x84 => "DES-CBC",
        0x85 => "TLS-PSK",
        0x88 => "AES",
        0x90 => "HMAC-SHA1",
        0x91 => "HMAC-SHA1-160",
        0xA0 => "RSA public e",
        0xA1 => "RSA public N",
        0xA2 => "RSA private N",
        0xA3 => "RSA private d",
        0xA4 => "RSA CRT P",
        0xA5 => "RSA CRT Q",
        0xA6 => "RSA CRT PQ",
        0xA7 => "RSA CRT DP1",
        0xA8 => "RSA CRT DQ1",
        0xB0 => "ECC public",
        0xB1 => "ECC private",
        0xB2 => "ECC field P",
        0xB3 => "ECC A",
        0xB4 => "ECC B",
        0xB5 => "ECC G",
        0xB6 => "ECC N",
        0xB7 => "ECC k",
        0xF0 => "ECC key parameters reference",
        _ => "?",
    }
}

/// One component of a key: type and length in bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct KeyComponentInfo {
    /// 1-byte key type, or `FFxx` for the 2-byte types of the extended format.
    pub key_type: u16,
    pub length: u16,
}

/// One key of the Key Information Template (`C0`, GPCS 2.3 §11.3.3.1): basic format, or the
/// extended format (third byte `FF`: 1/2-byte types, 2-byte lengths, key usage and access).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyInfo {
    pub id: u8,
    pub version: u8,
    pub components: Vec<KeyComponentInfo>,
    pub extended: bool,
    /// Extended format: key usage (without its length byte), when present.
    pub usage: Option<Vec<u8>>,
    /// Extended format: key access, when present.
    pub access: Option<Vec<u8>>,
}

impl KeyInfo {
    /// A basic-format entry with one component.
    pub fn basic(id: u8, version: u8, key_type: u8, length: u8) -> Self {
        KeyInfo {
            id,
            version,
            components: vec![KeyComponentInfo { key_type: key_type as u16, length: length as u16 }],
            extended: false,
            usage: None,
            access: None,
        }
    }

    fn encode_value(&self) -> Vec<u8> {
        let mut v = vec![self.id, self.version];
        if self.extended {
            v.push(0xFF);
            for c in &self.components {
                if c.key_type > 0xFF {
                    v.extend_from_slice(&c.key_type.to_be_bytes());
                } else {
                    v.push(c.key_type as u8);
                }
                v.extend_from_slice(&c.length.to_be_bytes());
            }
            if self.usage.is_some() || self.access.is_some() {
                let u = self.usage.as_deref().unwrap_or(&[]);
                v.push(u.len() as u8);
                v.extend_from_slice(u);
            }
            if let Some(a) = &self.access {
                v.push(a.len() as u8);
                v.extend_from_slice(a);
            }
        } else {
            for c in &self.components {
                v.push(c.key_type as u8);
                v.push(c.length as u8);
            }
        }
        v
    }

    fn parse_value(b: &[u8]) -> Result<KeyInfo, DecodeError> {
        const W: &str = "key information C0";
        let mut r = Reader::new(b);
        let id = r.u8(W)?;
        let version = r.u8(W)?;
        let extended = r.peek_u8() == Some(0xFF);
        let mut k = KeyInfo { id, version, components: Vec::new(), extended, usage: None, access: None };
        if extended {
            r.u8(W)?;
            // Components while the next byte is a key type (>= 80); then usage and access.
            while r.peek_u8().is_some_and(|t| t >= 0x80) {
                let t1 = r.u8(W)?;
                let key_type = if t1 == 0xFF { u16::from_be_bytes([t1, r.u8(W)?]) } else { t1 as u16 };
                let length = r.u16(W)?;
                k.components.push(KeyComponentInfo { key_type, length });
            }
            if !r.is_empty() {
                k.usage = Some(super::read_lv(&mut r, W)?.to_vec());
            }
            if !r.is_empty() {
                k.access = Some(super::read_lv(&mut r, W)?.to_vec());
            }
            r.expect_end(W)?;
        } else {
            while !r.is_empty() {
                let key_type = r.u8(W)? as u16;
                let length = r.u8(W)? as u16;
                k.components.push(KeyComponentInfo { key_type, length });
            }
        }
        Ok(k)
    }
}

impl fmt::Display for KeyInfo {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "key id {:02X} version {:02X}", self.id, self.version)?;
        for c in &self.components {
            write!(f, " {}({:02X})/{}", key_type_name(c.key_type), c.key_type, c.length)?;
        }
        if let Some(u) = &self.usage {
            write!(f, " usage={}", Hex(u))?;
        }
        if let Some(a) = &self.access {
            write!(f, " access={}", Hex(a))?;
        }
        Ok(())
    }
}

/// The Key Information Template (GET DATA `E0`).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct KeyInformation {
    pub keys: Vec<KeyInfo>,
}

impl KeyInformation {
    pub fn parse(data: &[u8]) -> Result<Self, GpError> {
        Self::from_bytes(data).map_err(|source| GpError::Decode { context: "Key Information Template", source })
    }
}

impl Codec for KeyInformation {
    fn encode(&self, out: &mut Vec<u8>) {
        let mut v = Vec::new();
        for k in &self.keys {
            tlv::put(&mut v, 0xC0, &k.encode_value());
        }
        tlv::put(out, 0xE0, &v);
    }
    fn read(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        const W: &str = "Key Information Template";
        let e0 = expect_tlv(r, 0xE0, W)?;
        let mut keys = Vec::new();
        for t in TlvIter::new(e0.value) {
            let t = t?;
            if t.tag.0 != 0xC0 {
                return Err(DecodeError::invalid(W, format!("unexpected tag {} in E0", t.tag)));
            }
            keys.push(KeyInfo::parse_value(t.value)?);
        }
        Ok(KeyInformation { keys })
    }
}

impl fmt::Display for KeyInformation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Key Information Template:")?;
        for k in &self.keys {
            write!(f, " [{k}]")?;
        }
        Ok(())
    }
}

// ---------------------------------------------------------------------------------------------
// Extended Card Resources (ETSI TS 102 226 §8.2.1.7.2)

/// Extended Card Resources Information (GET DATA `FF21`).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ExtendedCardResources {
    /// `81`
    pub installed_applications: u32,
    /// `82`
    pub free_non_volatile_memory: u32,
    /// `83`
    pub free_volatile_memory: u32,
    pub other: Vec<Tlv>,
}

impl ExtendedCardResources {
    pub fn parse(data: &[u8]) -> Result<Self, GpError> {
        Self::from_bytes(data).map_err(|source| GpError::Decode { context: "Extended Card Resources", source })
    }
}

impl Codec for ExtendedCardResources {
    fn encode(&self, out: &mut Vec<u8>) {
        let mut v = Vec::new();
        // Widths as cards send them: 2 bytes for the count, 4 for the memory sizes.
        tlv::put(&mut v, 0x81, &(self.installed_applications.min(0xFFFF) as u16).to_be_bytes());
        tlv::put(&mut v, 0x82, &self.free_non_volatile_memory.to_be_bytes());
        tlv::put(&mut v, 0x83, &self.free_volatile_memory.to_be_bytes());
        self.other.iter().for_each(|t| t.encode(&mut v));
        tlv::put(out, 0xFF21, &v);
    }
    fn read(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        const W: &str = "Extended Card Resources";
        let t = TlvRef::read(r)?;
        if t.tag.0 != 0xFF21 {
            return Err(DecodeError::invalid(W, format!("expected tag FF21, found {}", t.tag)));
        }
        let value = t.value;
        let mut e = ExtendedCardResources::default();
        let mut seen = [false; 3];
        for c in TlvIter::new(value) {
            let c = c?;
            match c.tag.0 {
                0x81 => (e.installed_applications, seen[0]) = (be_uint(c.value, W)?, true),
                0x82 => (e.free_non_volatile_memory, seen[1]) = (be_uint(c.value, W)?, true),
                0x83 => (e.free_volatile_memory, seen[2]) = (be_uint(c.value, W)?, true),
                _ => e.other.push(c.to_owned()),
            }
        }
        if let Some(i) = seen.iter().position(|s| !s) {
            return Err(DecodeError::invalid(W, format!("tag {:02X} missing", 0x81 + i)));
        }
        Ok(e)
    }
}

// ---------------------------------------------------------------------------------------------
// Any GET DATA object

/// A GET DATA response decoded by its tag.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum GpDataObject {
    Cplc(Cplc),
    CardRecognition(CardRecognitionData),
    CardCapabilities(CardCapabilities),
    KeyInformation(KeyInformation),
    /// `C1`: 2 bytes (SCP02) or 3 bytes (SCP03).
    SequenceCounter(Vec<u8>),
    /// `CF`: key diversification data, usually 10 bytes.
    Kdd(Vec<u8>),
    /// `42`: issuer identification number.
    Iin(Vec<u8>),
    /// `45`: card image number.
    Cin(Vec<u8>),
    ExtendedCardResources(ExtendedCardResources),
    /// Any other object, kept as its TLV.
    Other(Tlv),
}

impl GpDataObject {
    /// Decodes a GET DATA response (the data field, without SW).
    pub fn parse(data: &[u8]) -> Result<Self, GpError> {
        let mut r = Reader::new(data);
        let first_tag =
            TlvRef::read(&mut r.clone()).map_err(|source| GpError::Decode { context: "GET DATA response", source })?.tag.0;
        let obj = match first_tag {
            0x9F7F => GpDataObject::Cplc(Cplc::read(&mut r)?),
            0x66 => GpDataObject::CardRecognition(CardRecognitionData::read(&mut r)?),
            0x67 => GpDataObject::CardCapabilities(CardCapabilities::read(&mut r)?),
            0xE0 => GpDataObject::KeyInformation(KeyInformation::read(&mut r)?),
            0xFF21 => GpDataObject::ExtendedCardResources(ExtendedCardResources::read(&mut r)?),
            tag => {
                let t = TlvRef::read(&mut r)?;
                let v = t.value.to_vec();
                match tag {
                    0xC1 => {
                        if !(1..=4).contains(&v.len()) {
                            return Err(GpError::invalid("sequence counter C1", format!("{} bytes", v.len())));
                        }
                        GpDataObject::SequenceCounter(v)
                    }
                    0xCF => GpDataObject::Kdd(v),
                    0x42 => GpDataObject::Iin(v),
                    0x45 => GpDataObject::Cin(v),
                    _ => GpDataObject::Other(t.to_owned()),
                }
            }
        };
        r.expect_end("GET DATA response").map_err(|source| GpError::Decode { context: "GET DATA response", source })?;
        Ok(obj)
    }

    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = Vec::new();
        match self {
            GpDataObject::Cplc(c) => c.encode(&mut out),
            GpDataObject::CardRecognition(c) => c.encode(&mut out),
            GpDataObject::CardCapabilities(c) => c.encode(&mut out),
            GpDataObject::KeyInformation(c) => c.encode(&mut out),
            GpDataObject::ExtendedCardResources(c) => c.encode(&mut out),
            GpDataObject::SequenceCounter(v) => tlv::put(&mut out, 0xC1, v),
            GpDataObject::Kdd(v) => tlv::put(&mut out, 0xCF, v),
            GpDataObject::Iin(v) => tlv::put(&mut out, 0x42, v),
            GpDataObject::Cin(v) => tlv::put(&mut out, 0x45, v),
            GpDataObject::Other(t) => t.encode(&mut out),
        }
        out
    }

    /// The sequence counter value, for [`GpDataObject::SequenceCounter`].
    pub fn sequence_counter(&self) -> Option<u32> {
        match self {
            GpDataObject::SequenceCounter(v) => be_uint(v, "sequence counter").ok(),
            _ => None,
        }
    }
}

impl fmt::Display for GpDataObject {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            GpDataObject::Cplc(c) => c.fmt(f),
            GpDataObject::CardRecognition(c) => c.fmt(f),
            GpDataObject::CardCapabilities(c) => c.fmt(f),
            GpDataObject::KeyInformation(c) => c.fmt(f),
            GpDataObject::ExtendedCardResources(e) => write!(
                f,
                "Extended Card Resources: {} application(s), {} bytes free non-volatile, {} bytes free volatile",
                e.installed_applications, e.free_non_volatile_memory, e.free_volatile_memory
            ),
            GpDataObject::SequenceCounter(v) => write!(f, "sequence counter {}", Hex(v)),
            GpDataObject::Kdd(v) => write!(f, "KDD {}", Hex(v)),
            GpDataObject::Iin(v) => write!(f, "IIN {}", Hex(v)),
            GpDataObject::Cin(v) => write!(f, "CIN {}", Hex(v)),
            GpDataObject::Other(t) => write!(f, "{t:?}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hex::decode;

    #[test]
    fn oid_round_trip() {
        let o = Oid(decode("2A864886FC6B0507020000").unwrap());
        assert_eq!(o.to_string(), "1.2.840.114283.5.7.2.0.0");
        assert_eq!(Oid::from_arcs(&o.arcs().unwrap()), o);
        assert_eq!(Oid(vec![0x2A, 0x86]).to_string(), "2A86");
    }

    #[test]
    fn crd_builder_matches_card_layout() {
        // {globalPlatform 2 v} with v = 2.3 (GPCS 2.3 Table H-1): 2A864886FC6B 02 02 03.
        let crd = CardRecognitionData::gp(&[2, 3], &[(3, 0x70)]);
        assert_eq!(crd.gp_version().as_deref(), Some("2.3"));
        let b = crd.to_bytes();
        // The first 4 templates of the kaoh vector (66 4D … up to the SCP entry).
        let v = decode("06072A864886FC6B01600B06092A864886FC6B020203630906072A864886FC6B03640B06092A864886FC6B040370").unwrap();
        assert_eq!(&b[4..], &v[..]);
        assert_eq!(CardRecognitionData::from_bytes(&b).unwrap(), crd);
    }

    #[test]
    fn dates() {
        let d = |s: &str| s.parse::<CalendarDate>().unwrap();
        assert_eq!(CalendarDate::from_ordinal(2024, 60), Some(d("2024-02-29")));
        assert_eq!(d("2024-12-31").ordinal(), 366);
        assert_eq!(decode_cplc_date([0, 0], d("2024-01-01")).unwrap(), None);
        assert!(decode_cplc_date([0x3A, 0x01], d("2024-01-01")).is_err());
        assert!("2023-02-29".parse::<CalendarDate>().is_err());
    }
}
