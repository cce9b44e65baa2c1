//! GET STATUS (GPCS 2.3 §11.4): the command, the registry entries of its responses in the
//! tagged (`E3`, and `61` from the Amendment C CRS) and legacy formats, the response builder of
//! the card side, and a pager that follows `6310` "more data" continuations.

use super::{Aid, Context, Framing, GpError, LifeCycle, OptHex, Privileges, check_gp, ins};
use super::lifecycle::{AppLifeCycle, CardLifeCycle, ElfLifeCycle, SdLifeCycle};
use crate::apdu::{CommandApdu, ResponseApdu};
use crate::codec::{Codec, Reader};
use crate::hex::Hex;
use crate::sw::StatusWord;
use crate::tlv::{self, Tlv, TlvIter, TlvRef};
use std::fmt;

/// GET STATUS P1: which part of the registry.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub struct StatusScope(pub u8);

impl StatusScope {
    /// The issuer security domain (its life cycle is the card's).
    pub const ISD: Self = Self(0x80);
    /// Applications and supplementary security domains.
    pub const APPLICATIONS: Self = Self(0x40);
    /// Executable load files.
    pub const LOAD_FILES: Self = Self(0x20);
    /// Executable load files and their executable modules.
    pub const LOAD_FILES_AND_MODULES: Self = Self(0x10);

    pub fn name(self) -> &'static str {
        match self {
            Self::ISD => "ISD",
            Self::APPLICATIONS => "applications and SDs",
            Self::LOAD_FILES => "load files",
            Self::LOAD_FILES_AND_MODULES => "load files and modules",
            _ => "unknown scope",
        }
    }
}

/// GET STATUS P2 b2: response format.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub enum StatusFormat {
    /// P2 b2 = 0: the deprecated format (length ‖ AID ‖ LCS ‖ privilege byte).
    Legacy,
    /// P2 b2 = 1: `E3` templates.
    Tagged,
}

/// GET STATUS command.
///
/// The search criteria are kept as sent (`4F` AID or prefix, optional `5C` tag list, other
/// criteria): the data field re-encodes exactly even when a host got a length wrong (pySim's
/// test vectors send `5C 05` followed by four bytes). [`GetStatus::search`] decodes them and
/// fails on such data; the card answers that with `6A80`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GetStatus {
    pub scope: StatusScope,
    pub format: StatusFormat,
    /// P2 b1: get the next occurrence(s) after a `6310` response.
    pub next: bool,
    /// The data field: the search criteria (empty: no data field).
    pub criteria: Vec<u8>,
    pub framing: Framing,
}

/// Decoded GET STATUS search criteria.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct SearchCriteria {
    /// `4F`: AID or AID prefix (empty matches everything); `None` without a `4F`.
    pub aid_prefix: Option<Vec<u8>>,
    /// `5C`: the tags the card should return (GP 2.2+, Amendment C).
    pub tag_list: Option<Vec<u8>>,
    /// Further criteria.
    pub other: Vec<Tlv>,
}

impl SearchCriteria {
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut data = Vec::new();
        if let Some(p) = &self.aid_prefix {
            tlv::put(&mut data, 0x4F, p);
        }
        if let Some(t) = &self.tag_list {
            tlv::put(&mut data, 0x5C, t);
        }
        self.other.iter().for_each(|t| t.encode(&mut data));
        data
    }

    pub fn parse(data: &[u8]) -> Result<Self, GpError> {
        const C: &str = "GET STATUS search criteria";
        let mut c = SearchCriteria::default();
        for t in TlvIter::new(data) {
            let t = t.ctx(C)?;
            match t.tag.0 {
                0x4F if c.aid_prefix.is_none() => {
                    if t.value.len() > 16 {
                        return Err(GpError::AidLength { what: C, len: t.value.len() });
                    }
                    c.aid_prefix = Some(t.value.to_vec())
                }
                0x5C if c.tag_list.is_none() => c.tag_list = Some(t.value.to_vec()),
                _ => c.other.push(t.to_owned()),
            }
        }
        Ok(c)
    }

    /// Whether `aid` matches the `4F` criterion (prefix match; no `4F` matches all).
    pub fn matches(&self, aid: &Aid) -> bool {
        self.aid_prefix.as_ref().is_none_or(|p| aid.starts_with(p))
    }
}

impl GetStatus {
    /// Everything in `scope`, tagged format, `4F 00`, `Le = 00`.
    pub fn new(scope: StatusScope) -> Self {
        GetStatus { scope, format: StatusFormat::Tagged, next: false, criteria: vec![0x4F, 0x00], framing: Framing::GP_LE }
    }
    pub fn legacy(mut self) -> Self {
        self.format = StatusFormat::Legacy;
        self
    }
    /// Sets the search criteria.
    pub fn with_search(mut self, search: &SearchCriteria) -> Self {
        self.criteria = search.to_bytes();
        self
    }
    /// Only entries whose AID starts with `prefix`.
    pub fn with_aid_prefix(self, prefix: &[u8]) -> Self {
        let mut s = SearchCriteria::parse(&self.criteria).unwrap_or_default();
        s.aid_prefix = Some(prefix.to_vec());
        self.with_search(&s)
    }
    /// Only these tags in the response.
    pub fn with_tag_list(self, tags: &[u8]) -> Self {
        let mut s = SearchCriteria::parse(&self.criteria).unwrap_or_default();
        s.tag_list = Some(tags.to_vec());
        self.with_search(&s)
    }
    /// The decoded search criteria.
    pub fn search(&self) -> Result<SearchCriteria, GpError> {
        SearchCriteria::parse(&self.criteria)
    }
    /// The same command asking for the next occurrences.
    pub fn next_occurrence(&self) -> Self {
        GetStatus { next: true, ..self.clone() }
    }

    pub fn p2(&self) -> u8 {
        (if self.format == StatusFormat::Tagged { 0x02 } else { 0 }) | self.next as u8
    }

    pub fn to_apdu(&self) -> CommandApdu {
        self.framing.apdu(ins::GET_STATUS, self.scope.0, self.p2(), self.criteria.clone())
    }

    pub fn from_apdu(apdu: &CommandApdu) -> Result<Self, GpError> {
        const C: &str = "GET STATUS";
        check_gp(apdu, C, ins::GET_STATUS)?;
        if apdu.p2 & !0x03 != 0 {
            return Err(GpError::params(C, apdu, "P2 bits other than b2 (format) and b1 (next) are RFU"));
        }
        if !matches!(apdu.p1, 0x80 | 0x40 | 0x20 | 0x10) {
            return Err(GpError::params(C, apdu, "P1 is 80 (ISD), 40 (applications), 20 (load files) or 10 (load files and modules)"));
        }
        Ok(GetStatus {
            scope: StatusScope(apdu.p1),
            format: if apdu.p2 & 0x02 != 0 { StatusFormat::Tagged } else { StatusFormat::Legacy },
            next: apdu.p2 & 0x01 != 0,
            criteria: apdu.data.clone(),
            framing: Framing::of(apdu),
        })
    }
}

impl fmt::Display for GetStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "GET STATUS [{}] P1={:02X} {}", self.scope.name(), self.scope.0, match self.format {
            StatusFormat::Tagged => "tagged",
            StatusFormat::Legacy => "legacy",
        })?;
        if self.next {
            write!(f, " next")?;
        }
        match self.search() {
            Ok(s) => {
                if let Some(p) = &s.aid_prefix {
                    write!(f, " AID={}", if p.is_empty() { "*".to_string() } else { format!("{}*", Hex(p)) })?;
                }
                if let Some(t) = &s.tag_list {
                    write!(f, " tags={}", Hex(t))?;
                }
                for t in &s.other {
                    write!(f, " {t:?}")?;
                }
                Ok(())
            }
            Err(e) => write!(f, " criteria={} (malformed: {e})", Hex(&self.criteria)),
        }
    }
}

/// One entry of the GP registry as GET STATUS reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RegistryEntry {
    /// `4F`
    pub aid: Aid,
    /// `9F70` first byte, typed by the kind of entry.
    pub lifecycle: LifeCycle,
    /// `9F70` second byte when present (Amendment C contactless activation state).
    pub contactless_state: Option<u8>,
    /// `C5` (legacy format: the privilege byte).
    pub privileges: Option<Privileges>,
    /// `CF`, one byte each: implicit selection parameters.
    pub implicit_selection: Vec<u8>,
    /// `C4`: the application's executable load file.
    pub elf_aid: Option<Aid>,
    /// `CE`: load file version number.
    pub version: Option<Vec<u8>>,
    /// `84`: executable modules (P1 = 10).
    pub modules: Vec<Aid>,
    /// `CC`: associated security domain.
    pub associated_sd: Option<Aid>,
    /// `EA` template, kept raw (not decoded here).
    pub ea: Option<Vec<u8>>,
    /// Other tags (e.g. the CRS tags `80 81 87 88 8A A4 A6`), in order, after the known ones.
    pub other: Vec<Tlv>,
}

impl RegistryEntry {
    /// A minimal entry: AID and life cycle.
    pub fn new(aid: Aid, lifecycle: LifeCycle) -> Self {
        RegistryEntry {
            aid,
            lifecycle,
            contactless_state: None,
            privileges: None,
            implicit_selection: Vec::new(),
            elf_aid: None,
            version: None,
            modules: Vec::new(),
            associated_sd: None,
            ea: None,
            other: Vec::new(),
        }
    }

    fn typed_lifecycle(scope: StatusScope, privileges: Option<Privileges>, v: u8) -> LifeCycle {
        match scope {
            StatusScope::ISD => LifeCycle::Card(CardLifeCycle(v)),
            StatusScope::LOAD_FILES | StatusScope::LOAD_FILES_AND_MODULES => LifeCycle::LoadFile(ElfLifeCycle(v)),
            _ if privileges.is_some_and(Privileges::is_security_domain) => LifeCycle::SecurityDomain(SdLifeCycle(v)),
            _ => LifeCycle::Application(AppLifeCycle(v)),
        }
    }

    /// Parses one tagged template (`E3`/`61`) value.
    pub fn from_tagged(scope: StatusScope, value: &[u8]) -> Result<Self, GpError> {
        const W: &str = "GET STATUS entry";
        let mut aid = None;
        let mut lcs: Option<&[u8]> = None;
        let mut e = RegistryEntry::new(Aid::GP_ISD, LifeCycle::Card(CardLifeCycle(0)));
        for t in TlvIter::new(value) {
            let t = t.ctx(W)?;
            let once = |present: bool| if present { Err(GpError::invalid(W, format!("tag {} repeated", t.tag))) } else { Ok(()) };
            match t.tag.0 {
                0x4F => {
                    once(aid.is_some())?;
                    aid = Some(Aid::from_slice_for(t.value, "GET STATUS entry AID (4F)")?);
                }
                0x9F70 => {
                    once(lcs.is_some())?;
                    if !(1..=2).contains(&t.value.len()) {
                        return Err(GpError::invalid(W, format!("life cycle state 9F70 of {} bytes", t.value.len())));
                    }
                    lcs = Some(t.value);
                }
                0xC5 => {
                    once(e.privileges.is_some())?;
                    e.privileges = Some(Privileges::from_bytes(t.value)?);
                }
                0xCF => {
                    let [b] = t.value else {
                        return Err(GpError::invalid(W, "implicit selection parameter CF must have 1 byte"));
                    };
                    e.implicit_selection.push(*b);
                }
                0xC4 => {
                    once(e.elf_aid.is_some())?;
                    e.elf_aid = Some(Aid::from_slice_for(t.value, "GET STATUS load file AID (C4)")?);
                }
                0xCE => {
                    once(e.version.is_some())?;
                    e.version = Some(t.value.to_vec());
                }
                0x84 => e.modules.push(Aid::from_slice_for(t.value, "GET STATUS module AID (84)")?),
                0xCC => {
                    once(e.associated_sd.is_some())?;
                    e.associated_sd = Some(Aid::from_slice_for(t.value, "GET STATUS associated SD AID (CC)")?);
                }
                0xEA => {
                    once(e.ea.is_some())?;
                    e.ea = Some(t.value.to_vec());
                }
                _ => e.other.push(t.to_owned()),
            }
        }
        e.aid = aid.ok_or(GpError::MissingTag { what: W, tag: crate::tlv::Tag(0x4F) })?;
        let lcs = lcs.ok_or(GpError::MissingTag { what: W, tag: crate::tlv::Tag(0x9F70) })?;
        e.lifecycle = Self::typed_lifecycle(scope, e.privileges, lcs[0]);
        e.contactless_state = lcs.get(1).copied();
        Ok(e)
    }

    /// The tagged template value (without the `E3`/`61` header); known tags in GPCS order.
    pub fn tagged_value(&self) -> Vec<u8> {
        let mut v = Vec::new();
        tlv::put(&mut v, 0x4F, self.aid.as_bytes());
        let mut lcs = vec![self.lifecycle.value()];
        lcs.extend(self.contactless_state);
        tlv::put(&mut v, 0x9F70, &lcs);
        if let Some(p) = self.privileges {
            tlv::put(&mut v, 0xC5, &p.to_bytes());
        }
        for &c in &self.implicit_selection {
            tlv::put(&mut v, 0xCF, &[c]);
        }
        if let Some(a) = &self.elf_aid {
            tlv::put(&mut v, 0xC4, a.as_bytes());
        }
        if let Some(x) = &self.version {
            tlv::put(&mut v, 0xCE, x);
        }
        for m in &self.modules {
            tlv::put(&mut v, 0x84, m.as_bytes());
        }
        if let Some(a) = &self.associated_sd {
            tlv::put(&mut v, 0xCC, a.as_bytes());
        }
        if let Some(x) = &self.ea {
            tlv::put(&mut v, 0xEA, x);
        }
        self.other.iter().for_each(|t| t.encode(&mut v));
        v
    }
}

impl fmt::Display for RegistryEntry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {} {}", self.lifecycle.kind(), self.aid, self.lifecycle)?;
        if let Some(c) = self.contactless_state {
            write!(f, " contactless={c:02X}")?;
        }
        if let Some(p) = self.privileges {
            write!(f, " privileges={p}")?;
        }
        if let Some(a) = &self.elf_aid {
            write!(f, " ELF={a}")?;
        }
        if let Some(v) = &self.version {
            write!(f, " version={}", OptHex(v))?;
        }
        for m in &self.modules {
            write!(f, " module={m}")?;
        }
        if let Some(a) = &self.associated_sd {
            write!(f, " SD={a}")?;
        }
        for c in &self.implicit_selection {
            write!(f, " implicit={c:02X}")?;
        }
        if let Some(x) = &self.ea {
            write!(f, " EA={}", Hex(x))?;
        }
        for t in &self.other {
            write!(f, " {t:?}")?;
        }
        Ok(())
    }
}

/// Parses a GET STATUS response data field. The tagged form is recognised by its first byte
/// (`E3`, or `61` from the CRS) whatever P2 asked for, since a legacy entry starts with an AID
/// length of 5..=16; `format` only matters for empty data and error messages.
pub fn parse_status_response(scope: StatusScope, format: StatusFormat, data: &[u8]) -> Result<Vec<RegistryEntry>, GpError> {
    const W: &str = "GET STATUS response";
    match data.first() {
        None => Ok(Vec::new()),
        Some(0xE3 | 0x61) => {
            let mut out = Vec::new();
            for t in TlvIter::new(data) {
                let t = t.ctx(W)?;
                if t.tag.0 != 0xE3 && t.tag.0 != 0x61 {
                    return Err(GpError::invalid(W, format!("expected E3 or 61 templates, found tag {}", t.tag)));
                }
                out.push(RegistryEntry::from_tagged(scope, t.value)?);
            }
            Ok(out)
        }
        Some(&b) if format == StatusFormat::Tagged => {
            Err(GpError::invalid(W, format!("tagged format asked, but data starts with {b:02X}, not E3")))
        }
        Some(_) => parse_legacy(scope, data),
    }
}

fn parse_legacy(scope: StatusScope, data: &[u8]) -> Result<Vec<RegistryEntry>, GpError> {
    const W: &str = "GET STATUS legacy response";
    let mut r = Reader::new(data);
    let mut out = Vec::new();
    while !r.is_empty() {
        let aid = Aid::from_slice_for(super::read_lv(&mut r, W).ctx(W)?, "GET STATUS legacy AID")?;
        let lcs = r.u8(W).ctx(W)?;
        let privs = Privileges::from_bytes(&[r.u8(W).ctx(W)?])?;
        let mut e = RegistryEntry::new(aid, RegistryEntry::typed_lifecycle(scope, Some(privs), lcs));
        e.privileges = Some(privs);
        if scope == StatusScope::LOAD_FILES_AND_MODULES {
            let n = r.u8(W).ctx(W)?;
            for _ in 0..n {
                e.modules.push(Aid::from_slice_for(super::read_lv(&mut r, W).ctx(W)?, "GET STATUS legacy module AID")?);
            }
        }
        out.push(e);
    }
    Ok(out)
}

/// Builds a GET STATUS response data field (the card side). Tagged entries use template
/// `E3`; use [`encode_tagged_entries`] for the CRS `61` templates.
pub fn encode_status_response(scope: StatusScope, format: StatusFormat, entries: &[RegistryEntry]) -> Vec<u8> {
    match format {
        StatusFormat::Tagged => encode_tagged_entries(0xE3, entries),
        StatusFormat::Legacy => {
            let mut out = Vec::new();
            for e in entries {
                super::put_lv(&mut out, e.aid.as_bytes());
                out.push(e.lifecycle.value());
                out.push(e.privileges.map(Privileges::first_byte).unwrap_or(0));
                if scope == StatusScope::LOAD_FILES_AND_MODULES {
                    out.push(e.modules.len().min(255) as u8);
                    e.modules.iter().take(255).for_each(|m| super::put_lv(&mut out, m.as_bytes()));
                }
            }
            out
        }
    }
}

/// Tagged entries under template `tag` (`E3` for GP, `61` for the CRS).
pub fn encode_tagged_entries(tag: u8, entries: &[RegistryEntry]) -> Vec<u8> {
    let mut out = Vec::new();
    for e in entries {
        tlv::put(&mut out, tag as u32, &e.tagged_value());
    }
    out
}

/// What to do after a GET STATUS response.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PagerStep {
    /// Send this command (P2 "next occurrence" set) and feed its response.
    Next(GetStatus),
    /// All entries.
    Done(Vec<RegistryEntry>),
}

/// Follows GET STATUS `6310` continuations (GPCS 2.3 §11.4.2.1). Entries may be split across
/// responses, so the data is collected and parsed once the card answers `9000`.
#[derive(Debug, Clone)]
pub struct GetStatusPager {
    command: GetStatus,
    data: Vec<u8>,
    pages: usize,
    finished: bool,
    /// Fallbacks already taken: the format (tagged → legacy) and the scope (10 → 20).
    fell_back_format: bool,
    fell_back_scope: bool,
}

impl GetStatusPager {
    /// Stops a card that keeps answering `6310`.
    pub const MAX_PAGES: usize = 255;

    pub fn new(command: GetStatus) -> Self {
        GetStatusPager { command: GetStatus { next: false, ..command }, data: Vec::new(), pages: 0, finished: false, fell_back_format: false, fell_back_scope: false }
    }

    /// The command whose responses are being collected (after any fallback).
    pub fn command(&self) -> &GetStatus {
        &self.command
    }

    /// Fallback rules for cards that do not know what was asked (`6A86` incorrect P1-P2, or
    /// `6A81`/`6D00` on old cards), each taken at most once, on the first page: "load files and
    /// modules" (P1 = 10) falls back to "load files" (P1 = 20), and the tagged format to the
    /// legacy one (GP 2.1.1 cards).
    fn fallback(&mut self, sw: StatusWord) -> Option<GetStatus> {
        if self.pages != 1 || !matches!(sw.0, 0x6A86 | 0x6A81 | 0x6D00 | 0x6B00) {
            return None;
        }
        // "Load files and modules" is the scope old cards lack: drop the modules first, keeping
        // the format, so a card that has the tagged format still answers in it.
        if self.command.scope == StatusScope::LOAD_FILES_AND_MODULES && !self.fell_back_scope {
            self.fell_back_scope = true;
            return Some(GetStatus { scope: StatusScope::LOAD_FILES, next: false, ..self.command.clone() });
        }
        if self.command.format == StatusFormat::Tagged && !self.fell_back_format {
            self.fell_back_format = true;
            return Some(GetStatus { format: StatusFormat::Legacy, next: false, ..self.command.clone() });
        }
        None
    }

    /// The first command to send.
    pub fn first(&self) -> &GetStatus {
        &self.command
    }

    /// Feeds the response to the last command sent. `6A88` (referenced data not found) on the
    /// first response means no entry matches and ends with an empty list; any other status
    /// than `9000`/`6310` is returned as [`GpError::CardStatus`].
    pub fn feed(&mut self, response: &ResponseApdu) -> Result<PagerStep, GpError> {
        const C: &str = "GET STATUS";
        if self.finished {
            return Err(GpError::invalid(C, "pager already finished"));
        }
        self.pages += 1;
        match response.sw {
            StatusWord::MORE_DATA => {
                if self.pages >= Self::MAX_PAGES {
                    self.finished = true;
                    return Err(GpError::invalid(C, format!("card still answers 6310 after {} commands", self.pages)));
                }
                self.data.extend_from_slice(&response.data);
                Ok(PagerStep::Next(self.command.next_occurrence()))
            }
            StatusWord::SUCCESS => {
                self.finished = true;
                self.data.extend_from_slice(&response.data);
                parse_status_response(self.command.scope, self.command.format, &self.data).map(PagerStep::Done)
            }
            StatusWord::REFERENCED_DATA_NOT_FOUND if self.pages == 1 => {
                self.finished = true;
                Ok(PagerStep::Done(Vec::new()))
            }
            sw => match self.fallback(sw) {
                Some(cmd) => {
                    self.pages = 0;
                    self.data.clear();
                    self.command = cmd.clone();
                    Ok(PagerStep::Next(cmd))
                }
                None => {
                    self.finished = true;
                    Err(GpError::CardStatus { command: C, sw, meaning: sw.meaning() })
                }
            },
        }
    }
}

/// The response data of one tagged entry, for tests and the card: `E3 len value`.
pub fn tagged_entry_bytes(e: &RegistryEntry) -> Vec<u8> {
    Tlv::new(0xE3, e.tagged_value()).to_bytes()
}

/// Parses a single tagged template (`E3 …`), e.g. one entry from a vector file.
pub fn parse_tagged_entry(scope: StatusScope, data: &[u8]) -> Result<RegistryEntry, GpError> {
    const W: &str = "GET STATUS entry";
    let mut r = Reader::new(data);
    let t = TlvRef::read(&mut r).ctx(W)?;
    r.expect_end(W).ctx(W)?;
    if t.tag.0 != 0xE3 && t.tag.0 != 0x61 {
        return Err(GpError::UnexpectedTag { what: W, expected: crate::tlv::Tag(0xE3), found: t.tag });
    }
    RegistryEntry::from_tagged(scope, t.value)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hex::decode;

    #[test]
    fn pager_falls_back_to_legacy_then_reads_legacy_entries() {
        let mut p = GetStatusPager::new(GetStatus::new(StatusScope::APPLICATIONS));
        let step = p.feed(&ResponseApdu::status(StatusWord::INCORRECT_P1P2)).unwrap();
        let PagerStep::Next(cmd) = step else { panic!("expected a retry") };
        assert_eq!(cmd.format, StatusFormat::Legacy);
        assert_eq!(cmd.to_apdu().p2, 0x00);
        // Legacy entry: length, AID, life cycle SELECTABLE, privilege byte.
        let r = ResponseApdu::new(decode("05A00000000107 00").unwrap(), StatusWord::SUCCESS);
        let PagerStep::Done(entries) = p.feed(&r).unwrap() else { panic!("expected entries") };
        assert_eq!(entries.len(), 1);
        assert_eq!(entries[0].aid.as_bytes(), &decode("A000000001").unwrap()[..]);
        // Only one fallback: a legacy refusal is final.
        let mut p = GetStatusPager::new(GetStatus::new(StatusScope::APPLICATIONS));
        p.feed(&ResponseApdu::status(StatusWord::INCORRECT_P1P2)).unwrap();
        assert!(p.feed(&ResponseApdu::status(StatusWord::INCORRECT_P1P2)).is_err());
    }

    #[test]
    fn pager_falls_back_from_tagged_modules_to_load_files_then_to_legacy() {
        let mut p = GetStatusPager::new(GetStatus::new(StatusScope::LOAD_FILES_AND_MODULES));
        let PagerStep::Next(c1) = p.feed(&ResponseApdu::status(StatusWord::INCORRECT_P1P2)).unwrap() else { panic!() };
        assert_eq!((c1.scope, c1.format), (StatusScope::LOAD_FILES, StatusFormat::Tagged));
        let PagerStep::Next(c2) = p.feed(&ResponseApdu::status(StatusWord::INCORRECT_P1P2)).unwrap() else { panic!() };
        assert_eq!((c2.scope, c2.format), (StatusScope::LOAD_FILES, StatusFormat::Legacy));
        assert!(p.feed(&ResponseApdu::status(StatusWord::INCORRECT_P1P2)).is_err(), "no third fallback");
    }

    #[test]
    fn pager_falls_back_from_modules_to_load_files() {
        let mut p = GetStatusPager::new(GetStatus::new(StatusScope::LOAD_FILES_AND_MODULES).legacy());
        let PagerStep::Next(cmd) = p.feed(&ResponseApdu::status(StatusWord::INCORRECT_P1P2)).unwrap() else { panic!() };
        assert_eq!(cmd.scope, StatusScope::LOAD_FILES);
        assert!(p.feed(&ResponseApdu::status(StatusWord::CONDITIONS_NOT_SATISFIED)).is_err());
    }

    #[test]
    fn command_round_trip() {
        let apdu = CommandApdu::from_bytes(&decode("80F220020A4F0212345C044F9F70C5").unwrap()).unwrap();
        let g = GetStatus::from_apdu(&apdu).unwrap();
        let s = g.search().unwrap();
        assert_eq!(s.aid_prefix.as_deref(), Some(&[0x12, 0x34][..]));
        assert_eq!(s.tag_list.as_deref(), Some(&decode("4F9F70C5").unwrap()[..]));
        assert_eq!(g.to_apdu(), apdu);
        assert_eq!(GetStatus::new(StatusScope::LOAD_FILES).with_aid_prefix(&[0x12, 0x34]).with_tag_list(&decode("4F9F70C5").unwrap()).criteria, apdu.data);
        // pySim's vector: 5C says 5 bytes, 4 follow. Kept as sent; decoding it fails.
        let bad = CommandApdu::from_bytes(&decode("80F220020A4F0212345C054F9F70C5").unwrap()).unwrap();
        let g = GetStatus::from_apdu(&bad).unwrap();
        assert_eq!(g.to_apdu(), bad);
        assert!(g.search().is_err());
        assert!(g.to_string().contains("malformed"));
        let g = GetStatus::new(StatusScope::ISD);
        assert_eq!(g.to_apdu().to_bytes(), decode("80F28002024F0000").unwrap());
        assert_eq!(GetStatus::from_apdu(&g.to_apdu()).unwrap(), g);
        let bare = CommandApdu::from_bytes(&decode("80F22002").unwrap()).unwrap();
        assert_eq!(GetStatus::from_apdu(&bare).unwrap().to_apdu(), bare);
    }

    #[test]
    fn legacy_with_modules_round_trip() {
        let mut e = RegistryEntry::new(Aid::new(&decode("A0000000620001").unwrap()).unwrap(), LifeCycle::LoadFile(ElfLifeCycle::LOADED));
        e.privileges = Some(Privileges::from_bytes(&[0]).unwrap());
        e.modules.push(Aid::new(&decode("A000000062000101").unwrap()).unwrap());
        let b = encode_status_response(StatusScope::LOAD_FILES_AND_MODULES, StatusFormat::Legacy, std::slice::from_ref(&e));
        assert_eq!(b, decode("07A0000000620001010001 08A000000062000101").unwrap());
        let back = parse_status_response(StatusScope::LOAD_FILES_AND_MODULES, StatusFormat::Legacy, &b).unwrap();
        assert_eq!(back, vec![e]);
    }

    #[test]
    fn pager_error_status() {
        let mut p = GetStatusPager::new(GetStatus::new(StatusScope::APPLICATIONS));
        let e = p.feed(&ResponseApdu::status(StatusWord(0x6982))).unwrap_err();
        assert_eq!(e.code(), "gp.card_status");
        let mut p = GetStatusPager::new(GetStatus::new(StatusScope::APPLICATIONS));
        assert_eq!(p.feed(&ResponseApdu::status(StatusWord(0x6A88))).unwrap(), PagerStep::Done(vec![]));
    }
}
