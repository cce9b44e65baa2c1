//! INSTALL (GPCS 2.3 §11.5) in all its forms, install/load parameters (`C9`, `EF` and its
//! system-specific tags), security domain install parameters, the ETSI TS 102 226 UICC/SIM
//! parameters, and the token signature input of delegated management.

use super::{Aid, Context, Framing, GpError, OptHex, Privileges, check_gp, ins, opt_aid, put_lv, read_lv};
use crate::apdu::CommandApdu;
use crate::codec::{Codec, DecodeError, Reader};
use crate::hex::Hex;
use crate::tlv::{self, Tlv, TlvIter, TlvRef};
use std::fmt;

/// INSTALL P1 bits (GPCS 2.3 Table 11-41).
pub mod p1 {
    /// b8: more INSTALL commands follow.
    pub const MORE: u8 = 0x80;
    pub const FOR_REGISTRY_UPDATE: u8 = 0x40;
    pub const FOR_PERSONALIZATION: u8 = 0x20;
    pub const FOR_EXTRADITION: u8 = 0x10;
    pub const FOR_MAKE_SELECTABLE: u8 = 0x08;
    pub const FOR_INSTALL: u8 = 0x04;
    pub const FOR_LOAD: u8 = 0x02;
    pub const FOR_INSTALL_AND_MAKE_SELECTABLE: u8 = 0x0C;
}

/// INSTALL P2 (GPCS 2.3 Table 11-42).
pub mod p2 {
    pub const NONE: u8 = 0x00;
    /// Beginning of a combined Load, Install and Make Selectable process.
    pub const COMBINED_BEGIN: u8 = 0x01;
    /// End of a combined Load, Install and Make Selectable process.
    pub const COMBINED_END: u8 = 0x03;
}

/// The data field of an INSTALL command, by P1.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum InstallBody {
    /// P1 `02`.
    Load {
        elf: Aid,
        /// Security domain to associate the load file with; `None` sends an empty field.
        sd: Option<Aid>,
        /// Load File Data Block hash (empty when not required).
        hash: Vec<u8>,
        /// Load parameters (`EF` system parameters).
        params: InstallParams,
        token: Vec<u8>,
    },
    /// P1 `04`, or `0C` with `make_selectable`.
    Install {
        elf: Aid,
        module: Aid,
        app: Aid,
        privileges: Privileges,
        params: InstallParams,
        token: Vec<u8>,
        make_selectable: bool,
    },
    /// P1 `08`.
    MakeSelectable { app: Aid, privileges: Privileges, params: InstallParams, token: Vec<u8> },
    /// P1 `10`: move `app` (or a load file) under security domain `sd`.
    Extradition { sd: Aid, app: Aid, params: InstallParams, token: Vec<u8> },
    /// P1 `20`: subsequent STORE DATA commands go to `app`.
    Personalization { app: Aid },
    /// P1 `40`.
    RegistryUpdate {
        sd: Option<Aid>,
        app: Option<Aid>,
        privileges: Option<Privileges>,
        params: InstallParams,
        token: Vec<u8>,
    },
}

impl InstallBody {
    /// P1 without the "more" bit.
    pub fn p1(&self) -> u8 {
        match self {
            InstallBody::Load { .. } => p1::FOR_LOAD,
            InstallBody::Install { make_selectable: true, .. } => p1::FOR_INSTALL_AND_MAKE_SELECTABLE,
            InstallBody::Install { .. } => p1::FOR_INSTALL,
            InstallBody::MakeSelectable { .. } => p1::FOR_MAKE_SELECTABLE,
            InstallBody::Extradition { .. } => p1::FOR_EXTRADITION,
            InstallBody::Personalization { .. } => p1::FOR_PERSONALIZATION,
            InstallBody::RegistryUpdate { .. } => p1::FOR_REGISTRY_UPDATE,
        }
    }

    pub fn name(&self) -> &'static str {
        match self {
            InstallBody::Load { .. } => "for load",
            InstallBody::Install { make_selectable: true, .. } => "for install and make selectable",
            InstallBody::Install { .. } => "for install",
            InstallBody::MakeSelectable { .. } => "for make selectable",
            InstallBody::Extradition { .. } => "for extradition",
            InstallBody::Personalization { .. } => "for personalization",
            InstallBody::RegistryUpdate { .. } => "for registry update",
        }
    }

    /// Replaces the token (INSTALL [for personalization] has none: nothing changes).
    pub fn set_token(&mut self, new: Vec<u8>) {
        match self {
            InstallBody::Load { token, .. }
            | InstallBody::Install { token, .. }
            | InstallBody::MakeSelectable { token, .. }
            | InstallBody::Extradition { token, .. }
            | InstallBody::RegistryUpdate { token, .. } => *token = new,
            InstallBody::Personalization { .. } => {}
        }
    }

    /// The token, if this form carries one.
    pub fn token(&self) -> &[u8] {
        match self {
            InstallBody::Load { token, .. }
            | InstallBody::Install { token, .. }
            | InstallBody::MakeSelectable { token, .. }
            | InstallBody::Extradition { token, .. }
            | InstallBody::RegistryUpdate { token, .. } => token,
            InstallBody::Personalization { .. } => &[],
        }
    }

    /// The data field without the token length and token: what a token signs after P1, P2, Lc.
    fn encode_without_token(&self, out: &mut Vec<u8>) {
        let aid = |out: &mut Vec<u8>, a: &Option<Aid>| put_lv(out, a.as_ref().map(Aid::as_bytes).unwrap_or(&[]));
        match self {
            InstallBody::Load { elf, sd, hash, params, .. } => {
                put_lv(out, elf.as_bytes());
                aid(out, sd);
                put_lv(out, hash);
                put_ber_lv(out, params.as_bytes());
            }
            InstallBody::Install { elf, module, app, privileges, params, .. } => {
                put_lv(out, elf.as_bytes());
                put_lv(out, module.as_bytes());
                put_lv(out, app.as_bytes());
                put_lv(out, &privileges.to_bytes());
                put_ber_lv(out, params.as_bytes());
            }
            InstallBody::MakeSelectable { app, privileges, params, .. } => {
                out.extend_from_slice(&[0, 0]);
                put_lv(out, app.as_bytes());
                put_lv(out, &privileges.to_bytes());
                put_ber_lv(out, params.as_bytes());
            }
            InstallBody::Extradition { sd, app, params, .. } => {
                put_lv(out, sd.as_bytes());
                out.push(0);
                put_lv(out, app.as_bytes());
                out.push(0);
                put_ber_lv(out, params.as_bytes());
            }
            InstallBody::Personalization { app } => {
                out.extend_from_slice(&[0, 0]);
                put_lv(out, app.as_bytes());
                out.extend_from_slice(&[0, 0]);
            }
            InstallBody::RegistryUpdate { sd, app, privileges, params, .. } => {
                aid(out, sd);
                out.push(0);
                aid(out, app);
                put_lv(out, &privileges.map(Privileges::to_bytes).unwrap_or_default());
                put_ber_lv(out, params.as_bytes());
            }
        }
    }

    fn encode(&self, out: &mut Vec<u8>) {
        self.encode_without_token(out);
        put_ber_lv(out, self.token());
    }

    fn parse(kind: u8, data: &[u8]) -> Result<InstallBody, GpError> {
        const C: &str = "INSTALL";
        let mut r = Reader::new(data);
        fn lv<'a>(r: &mut Reader<'a>, what: &'static str) -> Result<&'a [u8], GpError> {
            read_lv(r, what).ctx("INSTALL")
        }
        fn ber<'a>(r: &mut Reader<'a>, what: &'static str) -> Result<&'a [u8], GpError> {
            read_ber_lv(r, what).ctx("INSTALL")
        }
        let empty = |b: &[u8], what: &'static str| {
            if b.is_empty() { Ok(()) } else { Err(GpError::invalid(C, format!("{what} must be empty, has {} byte(s)", b.len()))) }
        };
        let aid = |b: &[u8], what: &'static str| Aid::from_slice_for(b, what);
        let body = match kind {
            p1::FOR_LOAD => {
                let elf = aid(lv(&mut r, "load file AID")?, "INSTALL load file AID")?;
                let sd = opt_aid(lv(&mut r, "security domain AID")?, "INSTALL security domain AID")?;
                let hash = lv(&mut r, "load file data block hash")?.to_vec();
                let params = InstallParams(ber(&mut r, "load parameters")?.to_vec());
                let token = ber(&mut r, "load token")?.to_vec();
                InstallBody::Load { elf, sd, hash, params, token }
            }
            p1::FOR_INSTALL | p1::FOR_INSTALL_AND_MAKE_SELECTABLE => {
                let elf = aid(lv(&mut r, "load file AID")?, "INSTALL load file AID")?;
                let module = aid(lv(&mut r, "module AID")?, "INSTALL module AID")?;
                let app = aid(lv(&mut r, "application AID")?, "INSTALL application AID")?;
                let privileges = Privileges::from_bytes(lv(&mut r, "privileges")?)?;
                let params = InstallParams(ber(&mut r, "install parameters")?.to_vec());
                let token = ber(&mut r, "install token")?.to_vec();
                InstallBody::Install { elf, module, app, privileges, params, token, make_selectable: kind == p1::FOR_INSTALL_AND_MAKE_SELECTABLE }
            }
            p1::FOR_MAKE_SELECTABLE => {
                empty(lv(&mut r, "load file AID")?, "load file AID field")?;
                empty(lv(&mut r, "module AID")?, "module AID field")?;
                let app = aid(lv(&mut r, "application AID")?, "INSTALL application AID")?;
                let privileges = Privileges::from_bytes(lv(&mut r, "privileges")?)?;
                let params = InstallParams(ber(&mut r, "make selectable parameters")?.to_vec());
                let token = ber(&mut r, "make selectable token")?.to_vec();
                InstallBody::MakeSelectable { app, privileges, params, token }
            }
            p1::FOR_EXTRADITION => {
                let sd = aid(lv(&mut r, "security domain AID")?, "INSTALL security domain AID")?;
                empty(lv(&mut r, "second field")?, "second field")?;
                let app = aid(lv(&mut r, "application AID")?, "INSTALL application or load file AID")?;
                empty(lv(&mut r, "privileges")?, "privileges field")?;
                let params = InstallParams(ber(&mut r, "extradition parameters")?.to_vec());
                let token = ber(&mut r, "extradition token")?.to_vec();
                InstallBody::Extradition { sd, app, params, token }
            }
            p1::FOR_PERSONALIZATION => {
                empty(lv(&mut r, "first field")?, "first field")?;
                empty(lv(&mut r, "second field")?, "second field")?;
                let app = aid(lv(&mut r, "application AID")?, "INSTALL application AID")?;
                empty(lv(&mut r, "privileges")?, "privileges field")?;
                empty(ber(&mut r, "parameters")?, "parameters field")?;
                empty(ber(&mut r, "token")?, "token field")?;
                InstallBody::Personalization { app }
            }
            p1::FOR_REGISTRY_UPDATE => {
                let sd = opt_aid(lv(&mut r, "security domain AID")?, "INSTALL security domain AID")?;
                empty(lv(&mut r, "second field")?, "second field")?;
                let app = opt_aid(lv(&mut r, "application AID")?, "INSTALL application AID")?;
                let p = lv(&mut r, "privileges")?;
                let privileges = if p.is_empty() { None } else { Some(Privileges::from_bytes(p)?) };
                let params = InstallParams(ber(&mut r, "registry update parameters")?.to_vec());
                let token = ber(&mut r, "registry update token")?.to_vec();
                InstallBody::RegistryUpdate { sd, app, privileges, params, token }
            }
            _ => unreachable!("kind checked by the caller"),
        };
        r.expect_end(C).ctx(C)?;
        Ok(body)
    }
}

/// Reads a length in BER form (GP 2.2+ codes parameter and token lengths on 1 to 3 bytes).
fn read_ber_lv<'a>(r: &mut Reader<'a>, what: &'static str) -> Result<&'a [u8], DecodeError> {
    let n = tlv::read_length(r)?;
    r.take(n, what)
}

fn put_ber_lv(out: &mut Vec<u8>, v: &[u8]) {
    tlv::encode_length(v.len(), out);
    out.extend_from_slice(v);
}

/// INSTALL command.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Install {
    pub body: InstallBody,
    /// P1 b8: more INSTALL commands follow.
    pub more: bool,
    /// P2 (see [`p2`]).
    pub p2: u8,
    pub framing: Framing,
}

impl Install {
    fn with(body: InstallBody) -> Self {
        Install { body, more: false, p2: p2::NONE, framing: Framing::GP_LE }
    }
    /// INSTALL [for load] without hash, parameters and token.
    pub fn for_load(elf: Aid, sd: Option<Aid>) -> Self {
        Install::with(InstallBody::Load { elf, sd, hash: Vec::new(), params: InstallParams::default(), token: Vec::new() })
    }
    /// INSTALL [for install] (or [for install and make selectable]) without token.
    pub fn for_install(elf: Aid, module: Aid, app: Aid, privileges: Privileges, params: InstallParams, make_selectable: bool) -> Self {
        Install::with(InstallBody::Install { elf, module, app, privileges, params, token: Vec::new(), make_selectable })
    }
    pub fn for_make_selectable(app: Aid, privileges: Privileges) -> Self {
        Install::with(InstallBody::MakeSelectable { app, privileges, params: InstallParams::default(), token: Vec::new() })
    }
    pub fn for_extradition(sd: Aid, app: Aid) -> Self {
        Install::with(InstallBody::Extradition { sd, app, params: InstallParams::default(), token: Vec::new() })
    }
    pub fn for_personalization(app: Aid) -> Self {
        Install::with(InstallBody::Personalization { app })
    }
    pub fn for_registry_update(sd: Option<Aid>, app: Option<Aid>, privileges: Option<Privileges>) -> Self {
        Install::with(InstallBody::RegistryUpdate { sd, app, privileges, params: InstallParams::default(), token: Vec::new() })
    }

    pub fn p1(&self) -> u8 {
        self.body.p1() | if self.more { p1::MORE } else { 0 }
    }

    /// Sets the delegated-management token (see [`super::delegated`]).
    pub fn set_token(&mut self, token: Vec<u8>) {
        self.body.set_token(token);
    }

    /// This command with `token`.
    pub fn with_token(mut self, token: Vec<u8>) -> Self {
        self.set_token(token);
        self
    }

    pub fn to_apdu(&self) -> CommandApdu {
        let mut data = Vec::new();
        self.body.encode(&mut data);
        self.framing.apdu(ins::INSTALL, self.p1(), self.p2, data)
    }

    pub fn from_apdu(apdu: &CommandApdu) -> Result<Self, GpError> {
        const C: &str = "INSTALL";
        check_gp(apdu, C, ins::INSTALL)?;
        let kind = apdu.p1 & !p1::MORE;
        if !matches!(
            kind,
            p1::FOR_LOAD
                | p1::FOR_INSTALL
                | p1::FOR_INSTALL_AND_MAKE_SELECTABLE
                | p1::FOR_MAKE_SELECTABLE
                | p1::FOR_EXTRADITION
                | p1::FOR_PERSONALIZATION
                | p1::FOR_REGISTRY_UPDATE
        ) {
            return Err(GpError::params(C, apdu, "P1 names no INSTALL variant this implementation knows"));
        }
        let body = InstallBody::parse(kind, &apdu.data)?;
        Ok(Install { body, more: apdu.p1 & p1::MORE != 0, p2: apdu.p2, framing: Framing::of(apdu) })
    }

    /// What a delegated-management token signs (GPCS 2.3 §C.4): P1 ‖ P2 ‖ Lc ‖ the data
    /// field up to and excluding the token length, Lc being the length of that data.
    pub fn token_signature_data(&self) -> Vec<u8> {
        let mut data = Vec::new();
        self.body.encode_without_token(&mut data);
        signature_input(self.p1(), self.p2, &data)
    }
}

/// P1 ‖ P2 ‖ Lc ‖ data, Lc on one byte (three, `00 hi lo`, past 255).
pub(crate) fn signature_input(p1: u8, p2: u8, data: &[u8]) -> Vec<u8> {
    let mut v = vec![p1, p2];
    if data.len() <= 255 {
        v.push(data.len() as u8);
    } else {
        v.push(0);
        v.extend_from_slice(&(data.len().min(0xFFFF) as u16).to_be_bytes());
    }
    v.extend_from_slice(data);
    v
}

impl fmt::Display for Install {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "INSTALL [{}]", self.body.name())?;
        if self.more {
            write!(f, " (more)")?;
        }
        match self.p2 {
            p2::NONE => {}
            p2::COMBINED_BEGIN => write!(f, " (begin combined load-install)")?,
            p2::COMBINED_END => write!(f, " (end combined load-install)")?,
            x => write!(f, " P2={x:02X}")?,
        }
        match &self.body {
            InstallBody::Load { elf, sd, hash, params, .. } => {
                write!(f, " ELF={elf} SD={}", sd.map(|a| a.to_string()).unwrap_or("-".into()))?;
                if !hash.is_empty() {
                    write!(f, " hash={}", Hex(hash))?;
                }
                write!(f, " params {params}")?;
            }
            InstallBody::Install { elf, module, app, privileges, params, .. } => {
                write!(f, " ELF={elf} module={module} app={app} privileges={privileges} params {params}")?
            }
            InstallBody::MakeSelectable { app, privileges, params, .. } => {
                write!(f, " app={app} privileges={privileges} params {params}")?
            }
            InstallBody::Extradition { sd, app, params, .. } => write!(f, " SD={sd} app={app} params {params}")?,
            InstallBody::Personalization { app } => write!(f, " app={app}")?,
            InstallBody::RegistryUpdate { sd, app, privileges, params, .. } => {
                write!(f, " SD={} app={}", sd.map(|a| a.to_string()).unwrap_or("-".into()), app.map(|a| a.to_string()).unwrap_or("-".into()))?;
                if let Some(p) = privileges {
                    write!(f, " privileges={p}")?;
                }
                write!(f, " params {params}")?;
            }
        }
        let token = self.body.token();
        if !token.is_empty() {
            write!(f, " token={}", Hex(token))?;
        }
        Ok(())
    }
}

// ---------------------------------------------------------------------------------------------
// Install / load parameters

/// The install (or load) parameters field, kept as sent so that it re-encodes exactly; typed
/// views decode it on demand. Usually `C9` application-specific parameters (mandatory for
/// [for install], possibly empty) and an `EF` system-specific template.
#[derive(Clone, PartialEq, Eq, Default)]
pub struct InstallParams(pub Vec<u8>);

impl InstallParams {
    /// `C9` with `value` (GPCS asks for `C9 00` when there is nothing to pass).
    pub fn application_specific(value: &[u8]) -> Self {
        let mut v = Vec::new();
        tlv::put(&mut v, 0xC9, value);
        InstallParams(v)
    }
    /// Appends the `EF` system-specific template.
    pub fn with_system(self, system: &SystemParams) -> Self {
        self.with_tlv(0xEF, &system.to_value())
    }
    /// Appends any TLV.
    pub fn with_tlv(mut self, tag: u32, value: &[u8]) -> Self {
        tlv::put(&mut self.0, tag, value);
        self
    }
    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
    pub fn tlvs(&self) -> Result<Vec<TlvRef<'_>>, DecodeError> {
        tlv::parse_all(&self.0)
    }
    /// The `C9` value.
    pub fn c9(&self) -> Option<&[u8]> {
        tlv::find(&self.0, 0xC9).ok().flatten().map(|t| t.value)
    }
    /// The `EF` template, decoded.
    pub fn system(&self) -> Option<SystemParams> {
        let ef = tlv::find(&self.0, 0xEF).ok().flatten()?;
        SystemParams::parse(ef.value).ok()
    }
    /// The security domain install parameters carried in `C9`.
    pub fn sd_params(&self) -> Option<SdInstallParams> {
        SdInstallParams::parse(self.c9()?).ok()
    }
}

impl fmt::Debug for InstallParams {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "InstallParams({})", Hex(&self.0))
    }
}

impl fmt::Display for InstallParams {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.0.is_empty() {
            return write!(f, "-");
        }
        match self.tlvs() {
            Ok(ts) => {
                let mut first = true;
                for t in ts {
                    if !first {
                        write!(f, " ")?;
                    }
                    first = false;
                    match (t.tag.0, SystemParams::parse(t.value)) {
                        (0xEF, Ok(s)) => write!(f, "EF{{{s}}}")?,
                        _ => write!(f, "{}={}", t.tag, OptHex(t.value))?,
                    }
                }
                Ok(())
            }
            Err(_) => write!(f, "raw {}", Hex(&self.0)),
        }
    }
}

/// System-specific parameters (the `EF` template, GPCS 2.3 Table 11-49 and ETSI TS 102 226),
/// in the order given.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct SystemParams(pub Vec<Tlv>);

/// Tags of the `EF` template.
pub mod sys {
    pub const NV_CODE_MIN: u32 = 0xC6;
    pub const VOLATILE_QUOTA: u32 = 0xC7;
    pub const NV_QUOTA: u32 = 0xC8;
    /// ETSI TS 102 226: SIM file access and toolkit application specific parameters.
    pub const SIM_TOOLKIT: u32 = 0xCA;
    pub const GLOBAL_SERVICE: u32 = 0xCB;
    pub const LFDB_FORMAT: u32 = 0xCD;
    pub const IMPLICIT_SELECTION: u32 = 0xCF;
    pub const VOLATILE_RESERVED: u32 = 0xD7;
    pub const NV_RESERVED: u32 = 0xD8;
    pub const RESTRICT: u32 = 0xD9;
    pub const LFDB_PARAMETERS: u32 = 0xDD;
    /// ETSI TS 102 226: UICC system specific parameters.
    pub const UICC: u32 = 0xEA;
}

/// Name of an `EF` tag.
pub fn system_param_name(tag: u32) -> Option<&'static str> {
    Some(match tag {
        sys::NV_CODE_MIN => "non-volatile code minimum",
        sys::VOLATILE_QUOTA => "volatile memory quota",
        sys::NV_QUOTA => "non-volatile memory quota",
        sys::SIM_TOOLKIT => "SIM toolkit parameters",
        sys::GLOBAL_SERVICE => "global service parameters",
        sys::LFDB_FORMAT => "LFDB format",
        sys::IMPLICIT_SELECTION => "implicit selection",
        sys::VOLATILE_RESERVED => "volatile reserved memory",
        sys::NV_RESERVED => "non-volatile reserved memory",
        sys::RESTRICT => "restrict",
        sys::LFDB_PARAMETERS => "LFDB parameters",
        sys::UICC => "UICC system parameters",
        _ => return None,
    })
}

/// Memory sizes go on 2 bytes, or 4 when larger (GPCS 2.3 Table 11-49).
fn size_bytes(n: u32) -> Vec<u8> {
    if n <= 0xFFFF { (n as u16).to_be_bytes().to_vec() } else { n.to_be_bytes().to_vec() }
}

impl SystemParams {
    pub fn new() -> Self {
        Self::default()
    }
    pub fn with(mut self, tag: u32, value: &[u8]) -> Self {
        self.0.push(Tlv::new(tag, value.to_vec()));
        self
    }
    pub fn nv_code_min(self, n: u32) -> Self {
        self.with(sys::NV_CODE_MIN, &size_bytes(n))
    }
    pub fn volatile_quota(self, n: u32) -> Self {
        self.with(sys::VOLATILE_QUOTA, &size_bytes(n))
    }
    pub fn nv_quota(self, n: u32) -> Self {
        self.with(sys::NV_QUOTA, &size_bytes(n))
    }
    pub fn volatile_reserved(self, n: u32) -> Self {
        self.with(sys::VOLATILE_RESERVED, &size_bytes(n))
    }
    pub fn nv_reserved(self, n: u32) -> Self {
        self.with(sys::NV_RESERVED, &size_bytes(n))
    }
    pub fn implicit_selection(self, p: u8) -> Self {
        self.with(sys::IMPLICIT_SELECTION, &[p])
    }
    pub fn sim_toolkit(self, v: &[u8]) -> Self {
        self.with(sys::SIM_TOOLKIT, v)
    }
    pub fn uicc(self, v: &[u8]) -> Self {
        self.with(sys::UICC, v)
    }

    pub fn get(&self, tag: u32) -> Option<&[u8]> {
        self.0.iter().find(|t| t.tag.0 == tag).map(|t| t.value.as_slice())
    }
    fn get_size(&self, tag: u32) -> Option<u32> {
        let v = self.get(tag)?;
        (v.len() <= 4).then(|| v.iter().fold(0u32, |a, &b| a << 8 | b as u32))
    }
    pub fn get_nv_code_min(&self) -> Option<u32> {
        self.get_size(sys::NV_CODE_MIN)
    }
    pub fn get_volatile_quota(&self) -> Option<u32> {
        self.get_size(sys::VOLATILE_QUOTA)
    }
    pub fn get_nv_quota(&self) -> Option<u32> {
        self.get_size(sys::NV_QUOTA)
    }
    pub fn get_volatile_reserved(&self) -> Option<u32> {
        self.get_size(sys::VOLATILE_RESERVED)
    }
    pub fn get_nv_reserved(&self) -> Option<u32> {
        self.get_size(sys::NV_RESERVED)
    }

    /// The `EF` value.
    pub fn to_value(&self) -> Vec<u8> {
        let mut v = Vec::new();
        self.0.iter().for_each(|t| t.encode(&mut v));
        v
    }
    pub fn parse(value: &[u8]) -> Result<Self, GpError> {
        let ts = tlv::parse_all(value).ctx("system parameters EF")?;
        Ok(SystemParams(ts.iter().map(TlvRef::to_owned).collect()))
    }
}

impl fmt::Display for SystemParams {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let parts: Vec<String> = self
            .0
            .iter()
            .map(|t| match system_param_name(t.tag.0) {
                Some(n) => format!("{}({n})={}", t.tag, OptHex(&t.value)),
                None => format!("{}={}", t.tag, OptHex(&t.value)),
            })
            .collect();
        write!(f, "{}", parts.join(" "))
    }
}

// ---------------------------------------------------------------------------------------------
// Security domain install parameters (carried in C9)

/// Security domain install parameters (GPCS 2.3 §11.5.2.3.7 "SD install parameters" within
/// `C9`): SCP entries, extradition and deletion acceptance, personalized state, CASD
/// capability.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct SdInstallParams {
    /// `81`: (SCP identifier, implementation option `i`), one TLV each.
    pub scp: Vec<(u8, u8)>,
    /// `82`: accept extradition to this SD (1 or 2 bytes of policy).
    pub accept_extradition_here: Option<Vec<u8>>,
    /// `83`: accept deletion.
    pub accept_deletion: Option<Vec<u8>>,
    /// `84` (empty): the SD is created PERSONALIZED only by an explicit command.
    pub personalized: bool,
    /// `86`: CASD capability information.
    pub casd_capability: Option<Vec<u8>>,
    /// `87`: accept extradition away from this SD.
    pub accept_extradition_away: Option<Vec<u8>>,
    pub other: Vec<Tlv>,
}

impl SdInstallParams {
    /// The `C9` value.
    pub fn to_value(&self) -> Vec<u8> {
        let mut v = Vec::new();
        for &(id, i) in &self.scp {
            tlv::put(&mut v, 0x81, &[id, i]);
        }
        if let Some(x) = &self.accept_extradition_here {
            tlv::put(&mut v, 0x82, x);
        }
        if let Some(x) = &self.accept_deletion {
            tlv::put(&mut v, 0x83, x);
        }
        if self.personalized {
            tlv::put(&mut v, 0x84, &[]);
        }
        if let Some(x) = &self.casd_capability {
            tlv::put(&mut v, 0x86, x);
        }
        if let Some(x) = &self.accept_extradition_away {
            tlv::put(&mut v, 0x87, x);
        }
        self.other.iter().for_each(|t| t.encode(&mut v));
        v
    }

    pub fn parse(value: &[u8]) -> Result<Self, GpError> {
        const W: &str = "SD install parameters";
        let mut p = SdInstallParams::default();
        for t in TlvIter::new(value) {
            let t = t.ctx(W)?;
            match t.tag.0 {
                0x81 => match t.value {
                    [id, i] => p.scp.push((*id, *i)),
                    _ => return Err(GpError::invalid(W, "SCP entry 81 must have 2 bytes")),
                },
                0x82 => p.accept_extradition_here = Some(t.value.to_vec()),
                0x83 => p.accept_deletion = Some(t.value.to_vec()),
                0x84 => p.personalized = true,
                0x86 => p.casd_capability = Some(t.value.to_vec()),
                0x87 => p.accept_extradition_away = Some(t.value.to_vec()),
                _ => p.other.push(t.to_owned()),
            }
        }
        Ok(p)
    }
}

// ---------------------------------------------------------------------------------------------
// ETSI TS 102 226 UICC / SIM parameters

/// Toolkit application parameters (ETSI TS 102 226 §8.2.1.3.2.2.1): priority, timers, menu
/// entries, channels, minimum security level, TAR values and, for the UICC variant, services.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ToolkitParams {
    pub priority: u8,
    pub max_timers: u8,
    pub max_text_length: u8,
    /// (position, identifier) per menu entry.
    pub menu_entries: Vec<(u8, u8)>,
    pub max_channels: u8,
    /// Minimum security level data.
    pub msl: Vec<u8>,
    pub tar: Vec<[u8; 3]>,
    /// UICC variant only (absent in the SIM `CA` parameters).
    pub max_services: Option<u8>,
}

impl ToolkitParams {
    pub fn encode(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&[self.priority, self.max_timers, self.max_text_length, self.menu_entries.len() as u8]);
        for &(pos, id) in &self.menu_entries {
            out.extend_from_slice(&[pos, id]);
        }
        out.push(self.max_channels);
        put_lv(out, &self.msl);
        out.push((self.tar.len() * 3) as u8);
        self.tar.iter().for_each(|t| out.extend_from_slice(t));
        out.extend(self.max_services);
    }

    /// Reads the fields; `with_services` for the UICC variant.
    pub fn read(r: &mut Reader<'_>, with_services: bool) -> Result<Self, DecodeError> {
        const W: &str = "toolkit parameters";
        let mut t = ToolkitParams { priority: r.u8(W)?, max_timers: r.u8(W)?, max_text_length: r.u8(W)?, ..Default::default() };
        let n = r.u8(W)?;
        for _ in 0..n {
            t.menu_entries.push((r.u8(W)?, r.u8(W)?));
        }
        t.max_channels = r.u8(W)?;
        t.msl = read_lv(r, W)?.to_vec();
        let tar = read_lv(r, W)?;
        if tar.len() % 3 != 0 {
            return Err(DecodeError::invalid(W, format!("TAR field of {} bytes is not a multiple of 3", tar.len())));
        }
        t.tar = tar.chunks(3).map(|c| [c[0], c[1], c[2]]).collect();
        if with_services {
            t.max_services = Some(r.u8(W)?);
        }
        Ok(t)
    }
}

/// One access rule of the UICC access parameters (ETSI TS 102 226 §8.2.1.3.2.2.2).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct AccessRule {
    /// ADF AID, or empty for the UICC shared file system.
    pub aid: Vec<u8>,
    /// Access domain parameter and data (`00` full access, `02 xxxxxx`, `FF` no access).
    pub access_domain: Vec<u8>,
    pub dap: Vec<u8>,
}

/// UICC System Specific Parameters (the value of `EA` in `EF`).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct UiccSystemParams {
    /// `80`
    pub toolkit: Option<ToolkitParams>,
    /// `C3`
    pub toolkit_dap: Option<Vec<u8>>,
    /// `81`
    pub access: Option<Vec<AccessRule>>,
    /// `82`
    pub admin_access: Option<Vec<AccessRule>>,
}

fn encode_rules(rules: &[AccessRule]) -> Vec<u8> {
    let mut v = Vec::new();
    for r in rules {
        put_lv(&mut v, &r.aid);
        put_lv(&mut v, &r.access_domain);
        put_lv(&mut v, &r.dap);
    }
    v
}

fn parse_rules(b: &[u8]) -> Result<Vec<AccessRule>, DecodeError> {
    const W: &str = "UICC access rule";
    let mut r = Reader::new(b);
    let mut out = Vec::new();
    while !r.is_empty() {
        out.push(AccessRule { aid: read_lv(&mut r, W)?.to_vec(), access_domain: read_lv(&mut r, W)?.to_vec(), dap: read_lv(&mut r, W)?.to_vec() });
    }
    Ok(out)
}

impl UiccSystemParams {
    pub fn to_value(&self) -> Vec<u8> {
        let mut v = Vec::new();
        if let Some(t) = &self.toolkit {
            let mut b = Vec::new();
            t.encode(&mut b);
            tlv::put(&mut v, 0x80, &b);
        }
        if let Some(d) = &self.toolkit_dap {
            tlv::put(&mut v, 0xC3, d);
        }
        if let Some(a) = &self.access {
            tlv::put(&mut v, 0x81, &encode_rules(a));
        }
        if let Some(a) = &self.admin_access {
            tlv::put(&mut v, 0x82, &encode_rules(a));
        }
        v
    }

    pub fn parse(value: &[u8]) -> Result<Self, GpError> {
        const W: &str = "UICC system parameters";
        let mut p = UiccSystemParams::default();
        for t in TlvIter::new(value) {
            let t = t.ctx(W)?;
            match t.tag.0 {
                0x80 => {
                    let mut r = Reader::new(t.value);
                    p.toolkit = Some(ToolkitParams::read(&mut r, true).ctx(W)?);
                    r.expect_end(W).ctx(W)?;
                }
                0xC3 => p.toolkit_dap = Some(t.value.to_vec()),
                0x81 => p.access = Some(parse_rules(t.value).ctx(W)?),
                0x82 => p.admin_access = Some(parse_rules(t.value).ctx(W)?),
                _ => return Err(GpError::invalid(W, format!("unknown tag {}", t.tag))),
            }
        }
        Ok(p)
    }
}

/// SIM file access and toolkit application specific parameters (the value of `CA`).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct SimParams {
    pub access_domain: Vec<u8>,
    pub toolkit: ToolkitParams,
}

impl SimParams {
    pub fn to_value(&self) -> Vec<u8> {
        let mut v = Vec::new();
        put_lv(&mut v, &self.access_domain);
        self.toolkit.encode(&mut v);
        v
    }
    pub fn parse(value: &[u8]) -> Result<Self, GpError> {
        const W: &str = "SIM toolkit parameters";
        let mut r = Reader::new(value);
        let access_domain = read_lv(&mut r, W).ctx(W)?.to_vec();
        let toolkit = ToolkitParams::read(&mut r, false).ctx(W)?;
        r.expect_end(W).ctx(W)?;
        Ok(SimParams { access_domain, toolkit })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hex::decode;

    fn aid(s: &str) -> Aid {
        s.parse().unwrap()
    }

    #[test]
    fn every_form_round_trips() {
        let p = Privileges::from_bytes(&[0x80, 0xC0, 0x00]).unwrap();
        let params = InstallParams::application_specific(&[0x01]).with_system(&SystemParams::new().nv_quota(0x1_0000).volatile_quota(256));
        let forms = vec![
            Install::for_load(aid("A0000000620001"), Some(Aid::GP_ISD)),
            Install::for_install(aid("D0D1D2D3D4D501"), aid("D0D1D2D3D4D50101"), aid("D0D1D2D3D4D50102"), p, params.clone(), false),
            Install::for_install(aid("D0D1D2D3D4D501"), aid("D0D1D2D3D4D50101"), aid("D0D1D2D3D4D50102"), p.one_byte(), params, true),
            Install::for_make_selectable(aid("D0D1D2D3D4D50102"), Privileges::NONE),
            Install::for_extradition(Aid::GP_ISD, aid("D0D1D2D3D4D50102")),
            Install::for_personalization(aid("D0D1D2D3D4D50102")),
            Install::for_registry_update(None, Some(aid("D0D1D2D3D4D50102")), Some(p)),
            Install { more: true, p2: p2::COMBINED_BEGIN, ..Install::for_load(aid("A0000000620001"), None) },
        ];
        for f in forms {
            let a = f.to_apdu();
            assert_eq!(Install::from_apdu(&a).unwrap(), f, "{f}");
            assert_eq!(Install::from_apdu(&a).unwrap().to_apdu(), a);
        }
    }

    #[test]
    fn long_token_uses_ber_length() {
        let mut i = Install::for_load(aid("A0000000620001"), None);
        if let InstallBody::Load { token, .. } = &mut i.body {
            *token = vec![0xAB; 128];
        }
        let a = i.to_apdu();
        assert_eq!(&a.data[a.data.len() - 130..a.data.len() - 128], &[0x81, 0x80]);
        assert_eq!(Install::from_apdu(&a).unwrap(), i);
    }

    #[test]
    fn malformed() {
        for bad in ["80E60200", "80E6020003070102", "80E60100020000", "80E6200007000005A000000001"] {
            let a = CommandApdu::from_bytes(&decode(bad).unwrap()).unwrap();
            assert!(Install::from_apdu(&a).is_err(), "{bad}");
        }
    }
}
