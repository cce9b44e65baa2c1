//! Java Card CAP files: parsing, validation and the GlobalPlatform Load File Data Block.
//!
//! Two forms are accepted, both given as bytes (this crate does no I/O):
//! - the CAP file proper, a JAR (ZIP) holding one `<package path>/javacard/<Component>.cap`
//!   entry per component (JCVM spec 2.2.2 §6.1-6.2), optionally with `META-INF/MANIFEST.MF`;
//! - the `.ijc` form: the components concatenated, each `tag u1, size u2, info[size]`.
//!
//! CAP format versions 2.1 and 2.2 (the compact format) are supported. The Load File Data
//! Block is the concatenation of the components in the order JCVM §6.3 prescribes for
//! download; GPCS 2.3 §11.6.2.3 carries it in tag `C4` inside LOAD commands.

pub mod build;
pub mod zip;

use std::collections::BTreeMap;
use std::fmt;

use serde::Serialize;
use sha1::Sha1;
use sha2::{Digest, Sha256};
use thiserror::Error;

use crate::codec::Reader;
use crate::hex;
pub use zip::{ZipArchive, ZipEntry, ZipError};

/// Header component magic (JCVM §6.4).
pub const CAP_MAGIC: u32 = 0xDECA_FFED;
/// Cap on the bytes decompressed from one CAP zip (zip-bomb protection).
pub const MAX_DECOMPRESSED: usize = zip::MAX_TOTAL_UNCOMPRESSED;
/// A component's `size` is a u2, so no component is longer than this (tag + size + info).
pub const MAX_COMPONENT_LEN: usize = 3 + 0xFFFF;
const MANIFEST_PATH: &str = "META-INF/MANIFEST.MF";

/// Why a CAP file was refused.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum CapError {
    #[error("not a CAP file: {detail}")]
    NotACap { detail: String },
    #[error(transparent)]
    Zip(#[from] ZipError),
    #[error("missing required {component} component")]
    MissingComponent { component: &'static str },
    #[error("duplicate {component} component at offset {offset}")]
    DuplicateComponent { component: &'static str, offset: usize },
    #[error("entry {entry:?}: tag byte at offset 0 is {found}, expected {expected} for the {component} component")]
    TagMismatch { entry: String, component: &'static str, expected: u8, found: u8 },
    #[error(
        "{component} component: size field at offset 1 says {declared} byte(s), but {actual} byte(s) follow the 3-byte header"
    )]
    SizeMismatch { component: &'static str, declared: usize, actual: usize },
    #[error("entry {entry:?}: {size} byte(s) is more than a component can hold ({MAX_COMPONENT_LEN})")]
    ComponentTooLarge { entry: String, size: usize },
    #[error("{component} component: truncated at offset {offset} reading {what}")]
    Truncated { component: &'static str, offset: usize, what: &'static str },
    #[error(".ijc: {component} component at offset {offset} needs {needed} byte(s), {available} left in the file")]
    FileTruncated { component: &'static str, offset: usize, needed: usize, available: usize },
    #[error(".ijc: unknown component tag {tag} at offset {offset}")]
    UnknownComponentTag { tag: u8, offset: usize },
    #[error("{component} component: {left} unexpected trailing byte(s) at offset {offset}")]
    TrailingBytes { component: &'static str, offset: usize, left: usize },
    #[error("Header component: magic at offset 3 is {found:08X}, expected DECAFFED")]
    BadMagic { found: u32 },
    #[error("Header component: unsupported CAP format version {major}.{minor} (offset 7-8); 2.1 and 2.2 are supported")]
    UnsupportedVersion { major: u8, minor: u8 },
    #[error("{component} component: AID length {len} at offset {offset} is outside 5..=16")]
    BadAid { component: &'static str, offset: usize, len: u8 },
    #[error("components in different folders: {first:?} and {other:?}")]
    InconsistentPath { first: String, other: String },
    #[error("Directory component: {what} is {directory}, but the CAP file has {actual}")]
    DirectoryMismatch { what: String, directory: usize, actual: usize },
}

impl CapError {
    /// Stable machine-readable code.
    pub fn code(&self) -> &'static str {
        match self {
            CapError::NotACap { .. } => "cap.not_a_cap",
            CapError::Zip(e) => e.code(),
            CapError::MissingComponent { .. } => "cap.missing_component",
            CapError::DuplicateComponent { .. } => "cap.duplicate_component",
            CapError::TagMismatch { .. } => "cap.tag_mismatch",
            CapError::SizeMismatch { .. } => "cap.size_mismatch",
            CapError::ComponentTooLarge { .. } => "cap.component_too_large",
            CapError::Truncated { .. } | CapError::FileTruncated { .. } => "cap.truncated",
            CapError::UnknownComponentTag { .. } => "cap.unknown_component",
            CapError::TrailingBytes { .. } => "cap.trailing_bytes",
            CapError::BadMagic { .. } => "cap.bad_magic",
            CapError::UnsupportedVersion { .. } => "cap.unsupported_version",
            CapError::BadAid { .. } => "cap.bad_aid",
            CapError::InconsistentPath { .. } => "cap.inconsistent_path",
            CapError::DirectoryMismatch { .. } => "cap.directory_mismatch",
        }
    }
}

/// The twelve CAP components of JCVM 2.2.2 §6.1, with their tags (Table 6-1).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
pub enum ComponentKind {
    Header = 1,
    Directory = 2,
    Applet = 3,
    Import = 4,
    ConstantPool = 5,
    Class = 6,
    Method = 7,
    StaticField = 8,
    RefLocation = 9,
    Export = 10,
    Descriptor = 11,
    Debug = 12,
}

impl ComponentKind {
    /// All components, in tag order.
    pub const ALL: [ComponentKind; 12] = [
        ComponentKind::Header,
        ComponentKind::Directory,
        ComponentKind::Applet,
        ComponentKind::Import,
        ComponentKind::ConstantPool,
        ComponentKind::Class,
        ComponentKind::Method,
        ComponentKind::StaticField,
        ComponentKind::RefLocation,
        ComponentKind::Export,
        ComponentKind::Descriptor,
        ComponentKind::Debug,
    ];

    /// Download order (JCVM §6.3), which is also the Load File Data Block order. Debug is
    /// never downloaded.
    pub const LOAD_ORDER: [ComponentKind; 11] = [
        ComponentKind::Header,
        ComponentKind::Directory,
        ComponentKind::Import,
        ComponentKind::Applet,
        ComponentKind::Class,
        ComponentKind::Method,
        ComponentKind::StaticField,
        ComponentKind::Export,
        ComponentKind::ConstantPool,
        ComponentKind::RefLocation,
        ComponentKind::Descriptor,
    ];

    /// Components every CAP file must have (Applet, Export, Descriptor and Debug are optional
    /// here: Descriptor and Debug are often stripped, Applet/Export depend on the package).
    pub const REQUIRED: [ComponentKind; 8] = [
        ComponentKind::Header,
        ComponentKind::Directory,
        ComponentKind::Import,
        ComponentKind::Class,
        ComponentKind::Method,
        ComponentKind::StaticField,
        ComponentKind::ConstantPool,
        ComponentKind::RefLocation,
    ];

    pub fn tag(self) -> u8 {
        self as u8
    }

    pub fn from_tag(tag: u8) -> Option<Self> {
        Self::ALL.get(usize::from(tag).checked_sub(1)?).copied()
    }

    /// The component name as in its file name (`RefLocation` for `RefLocation.cap`).
    pub fn name(self) -> &'static str {
        match self {
            ComponentKind::Header => "Header",
            ComponentKind::Directory => "Directory",
            ComponentKind::Applet => "Applet",
            ComponentKind::Import => "Import",
            ComponentKind::ConstantPool => "ConstantPool",
            ComponentKind::Class => "Class",
            ComponentKind::Method => "Method",
            ComponentKind::StaticField => "StaticField",
            ComponentKind::RefLocation => "RefLocation",
            ComponentKind::Export => "Export",
            ComponentKind::Descriptor => "Descriptor",
            ComponentKind::Debug => "Debug",
        }
    }

    /// The component for a file name such as `Header.cap` (exact spelling, JCVM §6.2).
    pub fn from_file_name(file: &str) -> Option<Self> {
        let stem = file.strip_suffix(".cap")?;
        Self::ALL.into_iter().find(|k| k.name() == stem)
    }

    fn index(self) -> usize {
        self as usize - 1
    }
}

impl fmt::Display for ComponentKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A `major.minor` version (CAP format or package version).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Version {
    pub major: u8,
    pub minor: u8,
}

impl Version {
    pub const fn new(major: u8, minor: u8) -> Self {
        Version { major, minor }
    }
}

impl fmt::Display for Version {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}", self.major, self.minor)
    }
}

/// Header component flags (JCVM §6.4, Table 6-3).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct HeaderFlags(pub u8);

impl HeaderFlags {
    /// The package uses the `int` type.
    pub const ACC_INT: u8 = 0x01;
    /// The package has an Export component.
    pub const ACC_EXPORT: u8 = 0x02;
    /// The package has an Applet component.
    pub const ACC_APPLET: u8 = 0x04;

    pub fn uses_int(self) -> bool {
        self.0 & Self::ACC_INT != 0
    }
    pub fn exports(self) -> bool {
        self.0 & Self::ACC_EXPORT != 0
    }
    pub fn has_applets(self) -> bool {
        self.0 & Self::ACC_APPLET != 0
    }
    /// Names of the set flags (`int`, `export`, `applet`; unknown bits as `0xNN`).
    pub fn names(self) -> Vec<String> {
        let mut v = Vec::new();
        for (bit, name) in [(Self::ACC_INT, "int"), (Self::ACC_EXPORT, "export"), (Self::ACC_APPLET, "applet")] {
            if self.0 & bit != 0 {
                v.push(name.to_string());
            }
        }
        let unknown = self.0 & !(Self::ACC_INT | Self::ACC_EXPORT | Self::ACC_APPLET);
        if unknown != 0 {
            v.push(format!("0x{unknown:02X}"));
        }
        v
    }
}

/// Which form the bytes were in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum CapForm {
    /// A CAP file proper: a ZIP/JAR of component files.
    Zip,
    /// The `.ijc` form: components concatenated.
    Ijc,
}

/// An applet declared in the Applet component (JCVM §6.5).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Applet {
    pub aid: Vec<u8>,
    /// Offset of the applet's `install` method in the Method component.
    pub install_method_offset: u16,
}

/// An imported package from the Import component (JCVM §6.6).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImportedPackage {
    pub aid: Vec<u8>,
    pub version: Version,
}

/// Hash used for the Load File Data Block hash (GPCS 2.3 §11.5.2.3, INSTALL [for load]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum HashAlgorithm {
    Sha1,
    Sha256,
}

impl HashAlgorithm {
    pub fn digest(self, data: &[u8]) -> Vec<u8> {
        match self {
            HashAlgorithm::Sha1 => Sha1::digest(data).to_vec(),
            HashAlgorithm::Sha256 => Sha256::digest(data).to_vec(),
        }
    }
}

/// A parsed and validated CAP file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CapFile {
    form: CapForm,
    /// Component bytes (tag, size and info), indexed by `tag - 1`.
    components: [Option<Vec<u8>>; 12],
    cap_version: Version,
    flags: HeaderFlags,
    package_aid: Vec<u8>,
    package_version: Version,
    package_name: Option<String>,
    package_path: Option<String>,
    applets: Vec<Applet>,
    imports: Vec<ImportedPackage>,
    manifest: Option<BTreeMap<String, String>>,
}

impl CapFile {
    /// Parses a CAP file (ZIP, detected by its `PK\x03\x04` signature; an empty archive
    /// `PK\x05\x06` is also treated as a ZIP) or an `.ijc` file.
    pub fn parse(bytes: &[u8]) -> Result<CapFile, CapError> {
        if bytes.is_empty() {
            return Err(CapError::NotACap { detail: "empty input".into() });
        }
        if bytes.starts_with(b"PK\x03\x04") || bytes.starts_with(b"PK\x05\x06") {
            Self::parse_zip(bytes)
        } else if bytes.first() == Some(&ComponentKind::Header.tag()) {
            Self::parse_ijc(bytes)
        } else {
            let n = bytes.len().min(4);
            Err(CapError::NotACap {
                detail: format!(
                    "starts with {}: neither a ZIP archive nor an .ijc starting with a Header component",
                    hex::encode(bytes.get(..n).unwrap_or_default())
                ),
            })
        }
    }

    fn parse_zip(bytes: &[u8]) -> Result<CapFile, CapError> {
        let archive = ZipArchive::parse(bytes)?;
        let mut budget = MAX_DECOMPRESSED;
        let mut components: [Option<Vec<u8>>; 12] = Default::default();
        let mut path: Option<String> = None;
        let mut manifest = None;
        for entry in archive.entries() {
            if entry.name == MANIFEST_PATH {
                manifest = Some(parse_manifest(&archive.read(entry, &mut budget)?));
                continue;
            }
            let Some((prefix, kind)) = component_entry(&entry.name) else { continue };
            match &path {
                None => path = Some(prefix.to_string()),
                Some(p) if p != prefix => {
                    return Err(CapError::InconsistentPath { first: p.clone(), other: entry.name.clone() });
                }
                Some(_) => {}
            }
            if entry.uncompressed_size > MAX_COMPONENT_LEN {
                return Err(CapError::ComponentTooLarge { entry: entry.name.clone(), size: entry.uncompressed_size });
            }
            let data = archive.read(entry, &mut budget)?;
            // Zip names are unique (the reader refuses duplicates) and the folder is fixed, so
            // each component appears at most once here.
            let found = data.first().copied();
            if found != Some(kind.tag()) {
                return Err(CapError::TagMismatch {
                    entry: entry.name.clone(),
                    component: kind.name(),
                    expected: kind.tag(),
                    found: found.unwrap_or(0),
                });
            }
            components[kind.index()] = Some(data);
        }
        if path.is_none() {
            return Err(CapError::MissingComponent { component: ComponentKind::Header.name() });
        }
        Self::from_components(CapForm::Zip, components, path.filter(|p| !p.is_empty()), manifest)
    }

    fn parse_ijc(bytes: &[u8]) -> Result<CapFile, CapError> {
        let mut components: [Option<Vec<u8>>; 12] = Default::default();
        let mut pos = 0usize;
        while let Some(rest) = bytes.get(pos..).filter(|r| !r.is_empty()) {
            let tag = rest[0];
            let kind = ComponentKind::from_tag(tag).ok_or(CapError::UnknownComponentTag { tag, offset: pos })?;
            let Some(size) = rest.get(1..3).map(|s| usize::from(u16::from_be_bytes([s[0], s[1]]))) else {
                return Err(CapError::FileTruncated {
                    component: kind.name(),
                    offset: pos,
                    needed: 3,
                    available: rest.len(),
                });
            };
            let total = 3 + size;
            let Some(data) = rest.get(..total) else {
                return Err(CapError::FileTruncated {
                    component: kind.name(),
                    offset: pos,
                    needed: total,
                    available: rest.len(),
                });
            };
            let slot = &mut components[kind.index()];
            if slot.is_some() {
                return Err(CapError::DuplicateComponent { component: kind.name(), offset: pos });
            }
            *slot = Some(data.to_vec());
            pos += total;
        }
        Self::from_components(CapForm::Ijc, components, None, None)
    }

    fn from_components(
        form: CapForm,
        components: [Option<Vec<u8>>; 12],
        package_path: Option<String>,
        manifest: Option<BTreeMap<String, String>>,
    ) -> Result<CapFile, CapError> {
        for kind in ComponentKind::REQUIRED {
            if components[kind.index()].is_none() {
                return Err(CapError::MissingComponent { component: kind.name() });
            }
        }
        for kind in ComponentKind::ALL {
            if let Some(c) = &components[kind.index()] {
                check_size(kind, c)?;
            }
        }
        let get = |k: ComponentKind| components[k.index()].as_deref().unwrap_or_default();

        let header = parse_header(get(ComponentKind::Header))?;
        let imports = parse_imports(get(ComponentKind::Import))?;
        let applets = match &components[ComponentKind::Applet.index()] {
            Some(c) => parse_applets(c)?,
            None => Vec::new(),
        };
        check_directory(get(ComponentKind::Directory), header.cap_version, &components, imports.len(), applets.len())?;

        let package_name = header
            .package_name
            .or_else(|| package_path.as_ref().map(|p| p.replace('/', ".")))
            .filter(|n| !n.is_empty());
        Ok(CapFile {
            form,
            components,
            cap_version: header.cap_version,
            flags: header.flags,
            package_aid: header.package_aid,
            package_version: header.package_version,
            package_name,
            package_path,
            applets,
            imports,
            manifest,
        })
    }

    pub fn form(&self) -> CapForm {
        self.form
    }
    /// CAP file format version from the Header component (2.1 or 2.2).
    pub fn cap_version(&self) -> Version {
        self.cap_version
    }
    pub fn flags(&self) -> HeaderFlags {
        self.flags
    }
    pub fn package_aid(&self) -> &[u8] {
        &self.package_aid
    }
    pub fn package_version(&self) -> Version {
        self.package_version
    }
    /// Dotted package name: from the Header component (CAP 2.2) or else the ZIP folder.
    pub fn package_name(&self) -> Option<&str> {
        self.package_name.as_deref()
    }
    /// The ZIP folder holding `javacard/` (`com/example/pkg`), for the ZIP form.
    pub fn package_path(&self) -> Option<&str> {
        self.package_path.as_deref()
    }
    pub fn applets(&self) -> &[Applet] {
        &self.applets
    }
    pub fn applet_aids(&self) -> Vec<&[u8]> {
        self.applets.iter().map(|a| a.aid.as_slice()).collect()
    }
    pub fn imports(&self) -> &[ImportedPackage] {
        &self.imports
    }
    /// Attributes of `META-INF/MANIFEST.MF`, all sections merged (the first value of a
    /// repeated name wins). `None` when the ZIP has no manifest or for `.ijc` input.
    pub fn manifest(&self) -> Option<&BTreeMap<String, String>> {
        self.manifest.as_ref()
    }
    /// A component's bytes (tag, size and info), if present.
    pub fn component(&self, kind: ComponentKind) -> Option<&[u8]> {
        self.components[kind.index()].as_deref()
    }
    /// Present components in tag order with their total length (including the 3-byte
    /// tag/size header).
    pub fn component_sizes(&self) -> Vec<(ComponentKind, usize)> {
        ComponentKind::ALL.into_iter().filter_map(|k| self.component(k).map(|c| (k, c.len()))).collect()
    }
    pub fn has_export(&self) -> bool {
        self.component(ComponentKind::Export).is_some()
    }
    pub fn has_descriptor(&self) -> bool {
        self.component(ComponentKind::Descriptor).is_some()
    }
    pub fn has_debug(&self) -> bool {
        self.component(ComponentKind::Debug).is_some()
    }

    /// The Load File Data Block: components in download order (JCVM §6.3), absent optional
    /// ones skipped, Debug never included, Descriptor only if asked. Tools differ here
    /// (GlobalPlatformPro leaves Descriptor out, GPShell and pySim include it), and the load
    /// file hash differs with it.
    pub fn load_file_data_block(&self, include_descriptor: bool) -> Vec<u8> {
        let mut out = Vec::new();
        for kind in ComponentKind::LOAD_ORDER {
            if kind == ComponentKind::Descriptor && !include_descriptor {
                continue;
            }
            if let Some(c) = self.component(kind) {
                out.extend_from_slice(c);
            }
        }
        out
    }

    /// Hash of the Load File Data Block (INSTALL [for load] hash, DAP input; GPCS 2.3
    /// §11.5.2.3, §C.2).
    pub fn load_file_hash(&self, alg: HashAlgorithm, include_descriptor: bool) -> Vec<u8> {
        alg.digest(&self.load_file_data_block(include_descriptor))
    }

    /// `C4 <BER length> LFDB`, the Load File as the LOAD command blocks carry it (GPCS 2.3
    /// §11.6.2.3; a DAP block `E2`, if any, goes before it).
    pub fn load_file_tlv(&self, include_descriptor: bool) -> Vec<u8> {
        let lfdb = self.load_file_data_block(include_descriptor);
        let mut out = Vec::with_capacity(lfdb.len() + 5);
        out.push(0xC4);
        crate::tlv::encode_length(lfdb.len(), &mut out);
        out.extend_from_slice(&lfdb);
        out
    }

    /// A serialisable summary (for `--json` output).
    pub fn info(&self) -> CapInfo {
        let digest = |include: bool| {
            let lfdb = self.load_file_data_block(include);
            LoadFileDigest {
                size: lfdb.len(),
                sha1: hex::encode(&HashAlgorithm::Sha1.digest(&lfdb)),
                sha256: hex::encode(&HashAlgorithm::Sha256.digest(&lfdb)),
            }
        };
        CapInfo {
            form: self.form,
            cap_version: self.cap_version.to_string(),
            package_aid: hex::encode(&self.package_aid),
            package_name: self.package_name.clone(),
            package_version: self.package_version.to_string(),
            flags: self.flags.0,
            flag_names: self.flags.names(),
            applets: self
                .applets
                .iter()
                .map(|a| AppletSummary { aid: hex::encode(&a.aid), install_method_offset: a.install_method_offset })
                .collect(),
            imports: self
                .imports
                .iter()
                .map(|i| ImportSummary { aid: hex::encode(&i.aid), version: i.version.to_string() })
                .collect(),
            components: self
                .component_sizes()
                .into_iter()
                .map(|(k, size)| ComponentSummary { name: k.name(), tag: k.tag(), size })
                .collect(),
            has_export: self.has_export(),
            has_descriptor: self.has_descriptor(),
            has_debug: self.has_debug(),
            load_file: LoadFileSummary { without_descriptor: digest(false), with_descriptor: digest(true) },
            manifest: self.manifest.clone(),
        }
    }
}

/// Summary of a CAP file for display and JSON output; AIDs and hashes are upper-case hex.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct CapInfo {
    pub form: CapForm,
    pub cap_version: String,
    pub package_aid: String,
    pub package_name: Option<String>,
    pub package_version: String,
    pub flags: u8,
    pub flag_names: Vec<String>,
    pub applets: Vec<AppletSummary>,
    pub imports: Vec<ImportSummary>,
    /// Present components in tag order; `size` includes the 3-byte tag/size header.
    pub components: Vec<ComponentSummary>,
    pub has_export: bool,
    pub has_descriptor: bool,
    pub has_debug: bool,
    pub load_file: LoadFileSummary,
    pub manifest: Option<BTreeMap<String, String>>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct AppletSummary {
    pub aid: String,
    pub install_method_offset: u16,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ImportSummary {
    pub aid: String,
    pub version: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ComponentSummary {
    pub name: &'static str,
    pub tag: u8,
    pub size: usize,
}

/// The Load File Data Block with and without the Descriptor component.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct LoadFileSummary {
    pub without_descriptor: LoadFileDigest,
    pub with_descriptor: LoadFileDigest,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct LoadFileDigest {
    pub size: usize,
    pub sha1: String,
    pub sha256: String,
}

/// `prefix/javacard/Name.cap` -> (`prefix`, kind). Other entries (manifest, `APPLET-INF/`,
/// custom components) are not components.
fn component_entry(name: &str) -> Option<(&str, ComponentKind)> {
    let (dir, file) = name.rsplit_once('/')?;
    let kind = ComponentKind::from_file_name(file)?;
    let prefix = if dir == "javacard" { "" } else { dir.strip_suffix("/javacard")? };
    Some((prefix, kind))
}

/// Tag and u2 size of one component (JCVM §6.1: `u1 tag; u2 size; u1 info[size]`).
fn check_size(kind: ComponentKind, c: &[u8]) -> Result<(), CapError> {
    let Some(s) = c.get(1..3) else {
        return Err(CapError::Truncated { component: kind.name(), offset: c.len(), what: "component size" });
    };
    let declared = usize::from(u16::from_be_bytes([s[0], s[1]]));
    let actual = c.len() - 3;
    if declared != actual {
        return Err(CapError::SizeMismatch { component: kind.name(), declared, actual });
    }
    Ok(())
}

/// A [`Reader`] over one component that reports errors with the component name and offset.
struct ComponentReader<'a> {
    r: Reader<'a>,
    component: &'static str,
}

impl<'a> ComponentReader<'a> {
    /// Starts after the 3-byte tag/size header (already checked by [`check_size`]).
    fn new(kind: ComponentKind, c: &'a [u8]) -> Result<Self, CapError> {
        let mut r = ComponentReader { r: Reader::new(c), component: kind.name() };
        r.take(3, "component header")?;
        Ok(r)
    }
    fn pos(&self) -> usize {
        self.r.position()
    }
    fn truncated(&self, what: &'static str) -> CapError {
        CapError::Truncated { component: self.component, offset: self.pos(), what }
    }
    fn u8(&mut self, what: &'static str) -> Result<u8, CapError> {
        self.r.u8(what).map_err(|_| self.truncated(what))
    }
    fn u16(&mut self, what: &'static str) -> Result<u16, CapError> {
        self.r.u16(what).map_err(|_| self.truncated(what))
    }
    fn u32(&mut self, what: &'static str) -> Result<u32, CapError> {
        self.r.array::<4>(what).map(u32::from_be_bytes).map_err(|_| self.truncated(what))
    }
    fn take(&mut self, n: usize, what: &'static str) -> Result<&'a [u8], CapError> {
        self.r.take(n, what).map_err(|_| self.truncated(what))
    }
    /// `u1 AID_length; u1 AID[AID_length]` with 5 <= length <= 16 (JCVM §6.4; ISO 7816-5).
    fn aid(&mut self, what: &'static str) -> Result<Vec<u8>, CapError> {
        let offset = self.pos();
        let len = self.u8(what)?;
        if !(5..=16).contains(&len) {
            return Err(CapError::BadAid { component: self.component, offset, len });
        }
        Ok(self.take(usize::from(len), what)?.to_vec())
    }
    fn end(&self) -> Result<(), CapError> {
        match self.r.remaining() {
            0 => Ok(()),
            left => Err(CapError::TrailingBytes { component: self.component, offset: self.pos(), left }),
        }
    }
}

struct Header {
    cap_version: Version,
    flags: HeaderFlags,
    package_aid: Vec<u8>,
    package_version: Version,
    package_name: Option<String>,
}

/// Header component (JCVM 2.2.2 §6.4): magic, minor, major, flags, package_info (minor,
/// major, AID_length, AID) and, from format 2.2 on, package_name_info (name_length, name).
fn parse_header(c: &[u8]) -> Result<Header, CapError> {
    let mut r = ComponentReader::new(ComponentKind::Header, c)?;
    let magic = r.u32("magic")?;
    if magic != CAP_MAGIC {
        return Err(CapError::BadMagic { found: magic });
    }
    let minor = r.u8("minor_version")?;
    let major = r.u8("major_version")?;
    if major != 2 || !(1..=2).contains(&minor) {
        return Err(CapError::UnsupportedVersion { major, minor });
    }
    let flags = HeaderFlags(r.u8("flags")?);
    let pkg_minor = r.u8("package minor_version")?;
    let pkg_major = r.u8("package major_version")?;
    let package_aid = r.aid("package AID")?;
    let mut package_name = None;
    // package_name_info exists only in format 2.2; tolerate its absence (name_length may be 0).
    if minor >= 2 && r.r.remaining() > 0 {
        let len = r.u8("package name_length")?;
        let name = r.take(usize::from(len), "package name")?;
        if !name.is_empty() {
            // Internal form uses '/' separators (JCVM §6.4); present it dotted.
            package_name = Some(String::from_utf8_lossy(name).replace('/', "."));
        }
    }
    r.end()?;
    Ok(Header {
        cap_version: Version::new(major, minor),
        flags,
        package_aid,
        package_version: Version::new(pkg_major, pkg_minor),
        package_name,
    })
}

/// Import component (JCVM §6.6): count, then package_info (minor, major, AID) per import.
fn parse_imports(c: &[u8]) -> Result<Vec<ImportedPackage>, CapError> {
    let mut r = ComponentReader::new(ComponentKind::Import, c)?;
    let count = r.u8("count")?;
    let mut v = Vec::with_capacity(usize::from(count));
    for _ in 0..count {
        let minor = r.u8("imported package minor_version")?;
        let major = r.u8("imported package major_version")?;
        let aid = r.aid("imported package AID")?;
        v.push(ImportedPackage { aid, version: Version::new(major, minor) });
    }
    r.end()?;
    Ok(v)
}

/// Applet component (JCVM §6.5): count, then AID and install_method_offset per applet.
fn parse_applets(c: &[u8]) -> Result<Vec<Applet>, CapError> {
    let mut r = ComponentReader::new(ComponentKind::Applet, c)?;
    let count = r.u8("count")?;
    let mut v = Vec::with_capacity(usize::from(count));
    for _ in 0..count {
        let aid = r.aid("applet AID")?;
        let install_method_offset = r.u16("install_method_offset")?;
        v.push(Applet { aid, install_method_offset });
    }
    r.end()?;
    Ok(v)
}

/// Directory component (JCVM §6.7): `component_sizes` (11 entries in format 2.1, 12 in 2.2
/// with Debug), static_field_size_info (3 × u2), import_count, applet_count, custom_count and
/// the custom components. The sizes of the components that are present, and the two counts,
/// must agree with the file (components may have been stripped, so absent ones are not
/// checked).
fn check_directory(
    c: &[u8],
    cap_version: Version,
    components: &[Option<Vec<u8>>; 12],
    import_count: usize,
    applet_count: usize,
) -> Result<(), CapError> {
    let mut r = ComponentReader::new(ComponentKind::Directory, c)?;
    let listed = if cap_version.minor >= 2 { 12 } else { 11 };
    for kind in ComponentKind::ALL.into_iter().take(listed) {
        let declared = usize::from(r.u16("component_sizes")?);
        if let Some(comp) = &components[kind.index()] {
            let actual = comp.len() - 3;
            if declared != actual {
                return Err(CapError::DirectoryMismatch {
                    what: format!("the size of the {kind} component (offset {})", r.pos() - 2),
                    directory: declared,
                    actual,
                });
            }
        }
    }
    r.take(6, "static_field_size_info")?;
    let imports = r.u8("import_count")?;
    if usize::from(imports) != import_count {
        return Err(CapError::DirectoryMismatch {
            what: "import_count".into(),
            directory: imports.into(),
            actual: import_count,
        });
    }
    let applets = r.u8("applet_count")?;
    if usize::from(applets) != applet_count {
        return Err(CapError::DirectoryMismatch {
            what: "applet_count".into(),
            directory: applets.into(),
            actual: applet_count,
        });
    }
    let custom = r.u8("custom_count")?;
    for _ in 0..custom {
        r.u8("custom component tag")?;
        r.u16("custom component size")?;
        r.aid("custom component AID")?;
    }
    r.end()
}

/// JAR manifest (JAR File Specification, "Manifest Specification"): `Name: value` lines,
/// continuation lines starting with one space, sections separated by blank lines. All
/// sections are merged; the first value of a repeated name wins. Best effort: lines without
/// a colon are skipped.
fn parse_manifest(bytes: &[u8]) -> BTreeMap<String, String> {
    let text = String::from_utf8_lossy(bytes);
    let mut lines: Vec<(String, String)> = Vec::new();
    let mut current: Option<(String, String)> = None;
    for line in text.split('\n').map(|l| l.strip_suffix('\r').unwrap_or(l)) {
        if let Some(cont) = line.strip_prefix(' ') {
            if let Some((_, v)) = current.as_mut() {
                v.push_str(cont);
            }
            continue;
        }
        if let Some(done) = current.take() {
            lines.push(done);
        }
        if let Some((k, v)) = line.split_once(':') {
            let k = k.trim();
            if !k.is_empty() {
                current = Some((k.to_string(), v.strip_prefix(' ').unwrap_or(v).to_string()));
            }
        }
    }
    if let Some(done) = current.take() {
        lines.push(done);
    }
    let mut map = BTreeMap::new();
    for (k, v) in lines {
        map.entry(k).or_insert(v);
    }
    map
}

#[cfg(test)]
mod tests {
    use super::zip::tests::{TestEntry, build_zip};
    use super::*;

    /// A minimal format-2.1 package: Header, Directory, Import (1 import), Applet (1 applet)
    /// and empty-bodied Class, Method, StaticField, ConstantPool, RefLocation components
    /// (byte layouts per JCVM §6; the bodies are not interpreted by the parser).
    fn components(header_extra: &[u8], minor: u8) -> Vec<(ComponentKind, Vec<u8>)> {
        let comp = |kind: ComponentKind, info: &[u8]| {
            let mut v = vec![kind.tag()];
            v.extend_from_slice(&(info.len() as u16).to_be_bytes());
            v.extend_from_slice(info);
            (kind, v)
        };
        let mut header = vec![0xDE, 0xCA, 0xFF, 0xED, minor, 2, 0x04, 0, 1, 5, 1, 2, 3, 4, 5];
        header.extend_from_slice(header_extra);
        let import = [1, 2, 1, 7, 0xA0, 0, 0, 0, 0x62, 1, 1];
        let applet = [1, 6, 1, 2, 3, 4, 5, 6, 0, 0];
        let body = [0u8; 2];
        let sizes = [
            header.len(),
            0, // directory, patched below
            applet.len(),
            import.len(),
            2,
            2,
            2,
            2,
            2,
            0,
            0,
            0,
        ];
        let listed = if minor >= 2 { 12 } else { 11 };
        let mut dir = Vec::new();
        let dir_len = 2 * listed + 6 + 3;
        for (i, s) in sizes.iter().take(listed).enumerate() {
            let s = if i == 1 { dir_len } else { *s };
            dir.extend_from_slice(&(s as u16).to_be_bytes());
        }
        dir.extend_from_slice(&[0, 0, 0, 0, 0, 0, 1, 1, 0]);
        vec![
            comp(ComponentKind::Header, &header),
            comp(ComponentKind::Directory, &dir),
            comp(ComponentKind::Import, &import),
            comp(ComponentKind::Applet, &applet),
            comp(ComponentKind::Class, &body),
            comp(ComponentKind::Method, &body),
            comp(ComponentKind::StaticField, &body),
            comp(ComponentKind::ConstantPool, &body),
            comp(ComponentKind::RefLocation, &body),
        ]
    }

    fn zip_of(comps: &[(ComponentKind, Vec<u8>)], prefix: &str) -> Vec<u8> {
        let names: Vec<String> = comps.iter().map(|(k, _)| format!("{prefix}javacard/{}.cap", k.name())).collect();
        let entries: Vec<TestEntry<'_>> = comps
            .iter()
            .zip(&names)
            .map(|((_, data), name)| TestEntry { name, data, deflate: true, descriptor: false })
            .collect();
        build_zip(&entries, b"")
    }

    #[test]
    fn synthetic_zip_and_ijc() {
        let comps = components(&[], 1);
        let cap = CapFile::parse(&zip_of(&comps, "com/example/pkg/")).unwrap();
        assert_eq!(cap.cap_version(), Version::new(2, 1));
        assert_eq!(cap.package_aid(), &[1, 2, 3, 4, 5]);
        assert_eq!(cap.package_version(), Version::new(1, 0));
        assert_eq!(cap.package_name(), Some("com.example.pkg"));
        assert_eq!(cap.applet_aids(), vec![&[1u8, 2, 3, 4, 5, 6][..]]);
        assert_eq!(cap.imports()[0].aid, [0xA0, 0, 0, 0, 0x62, 1, 1]);
        assert_eq!(cap.imports()[0].version, Version::new(1, 2));
        assert!(cap.flags().has_applets() && !cap.has_descriptor());
        // `components` lists them in download order already (no Export, Descriptor, Debug).
        let order: Vec<u8> = comps.iter().flat_map(|(_, c)| c.clone()).collect();
        assert_eq!(cap.load_file_data_block(true), order);
        let ijc = CapFile::parse(&cap.load_file_data_block(true)).unwrap();
        assert_eq!(ijc.form(), CapForm::Ijc);
        assert_eq!(ijc.package_name(), None);
        assert_eq!(ijc.load_file_data_block(false), cap.load_file_data_block(false));
        // Root-level javacard/ folder: no package path.
        let cap = CapFile::parse(&zip_of(&comps, "")).unwrap();
        assert_eq!(cap.package_name(), None);
    }

    #[test]
    fn format_2_2_package_name() {
        let comps = components(b"\x0Bcom/example", 2);
        let cap = CapFile::parse(&zip_of(&comps, "other/path/")).unwrap();
        assert_eq!(cap.cap_version(), Version::new(2, 2));
        assert_eq!(cap.package_name(), Some("com.example"));
        assert_eq!(cap.package_path(), Some("other/path"));
    }

    #[test]
    fn header_errors() {
        let mut comps = components(&[], 1);
        comps[0].1[3] = 0xDF;
        assert_eq!(CapFile::parse(&zip_of(&comps, "p/")).unwrap_err().code(), "cap.bad_magic");

        let mut comps = components(&[], 1);
        comps[0].1[7] = 3;
        assert_eq!(CapFile::parse(&zip_of(&comps, "p/")).unwrap_err().code(), "cap.unsupported_version");

        let mut comps = components(&[], 1);
        comps[0].1[12] = 4; // package AID length
        assert_eq!(CapFile::parse(&zip_of(&comps, "p/")).unwrap_err().code(), "cap.bad_aid");

        // A 2.1 header with a trailing name is not a 2.1 header.
        let comps = components(b"\x01a", 1);
        assert_eq!(CapFile::parse(&zip_of(&comps, "p/")).unwrap_err().code(), "cap.trailing_bytes");
    }

    #[test]
    fn structural_errors() {
        let comps = components(&[], 1);
        let without_method: Vec<_> = comps.iter().filter(|(k, _)| *k != ComponentKind::Method).cloned().collect();
        let err = CapFile::parse(&zip_of(&without_method, "p/")).unwrap_err();
        assert_eq!(err.code(), "cap.missing_component");
        assert!(err.to_string().contains("Method"), "{err}");

        let mut swapped = comps.clone();
        swapped[4].1[0] = ComponentKind::Method.tag(); // Class.cap carrying a Method tag
        assert_eq!(CapFile::parse(&zip_of(&swapped, "p/")).unwrap_err().code(), "cap.tag_mismatch");

        let mut lying = comps.clone();
        lying[4].1.push(0); // one byte more than the size field says
        assert_eq!(CapFile::parse(&zip_of(&lying, "p/")).unwrap_err().code(), "cap.size_mismatch");

        let mixed = build_zip(
            &[
                TestEntry { name: "a/javacard/Header.cap", data: &comps[0].1, deflate: false, descriptor: false },
                TestEntry { name: "b/javacard/Directory.cap", data: &comps[1].1, deflate: false, descriptor: false },
            ],
            b"",
        );
        assert_eq!(CapFile::parse(&mixed).unwrap_err().code(), "cap.inconsistent_path");

        let mut dir = comps.clone();
        let n = dir[1].1.len();
        dir[1].1[n - 2] = 2; // applet_count
        assert_eq!(CapFile::parse(&zip_of(&dir, "p/")).unwrap_err().code(), "cap.directory_mismatch");

        let ijc: Vec<u8> = comps.iter().flat_map(|(_, c)| c.clone()).collect();
        let mut dup = ijc.clone();
        dup.extend_from_slice(&comps[4].1);
        assert_eq!(CapFile::parse(&dup).unwrap_err().code(), "cap.duplicate_component");
        let mut bad = ijc.clone();
        bad.extend_from_slice(&[13, 0, 0]);
        assert_eq!(CapFile::parse(&bad).unwrap_err().code(), "cap.unknown_component");
        assert_eq!(CapFile::parse(&ijc[..ijc.len() - 1]).unwrap_err().code(), "cap.truncated");
        assert_eq!(CapFile::parse(b"").unwrap_err().code(), "cap.not_a_cap");
        assert_eq!(CapFile::parse(b"\x7FELF").unwrap_err().code(), "cap.not_a_cap");
        assert_eq!(CapFile::parse(&build_zip(&[], b"")).unwrap_err().code(), "cap.missing_component");
    }

    #[test]
    fn manifest_parsing() {
        let m = parse_manifest(
            b"Manifest-Version: 1.0\r\nJava-Card-Package-AID: 0xd2:0x76:\r\n 0x00\r\n\r\nName: a/b\r\nManifest-Version: 9\r\nbogus\n",
        );
        assert_eq!(m["Manifest-Version"], "1.0");
        assert_eq!(m["Java-Card-Package-AID"], "0xd2:0x76:0x00");
        assert_eq!(m["Name"], "a/b");
        assert_eq!(m.len(), 3);
    }

    #[test]
    fn tlv_lengths() {
        let cap = CapFile::parse(&zip_of(&components(&[], 1), "p/")).unwrap();
        let lfdb = cap.load_file_data_block(false);
        assert!(lfdb.len() < 128);
        let tlv = cap.load_file_tlv(false);
        assert_eq!(tlv[..2], [0xC4, lfdb.len() as u8]);
        assert_eq!(&tlv[2..], &lfdb[..]);
    }
}
