//! A small CAP file built in memory, for demonstrations and tests that must not ship third-party
//! CAP files (the fixtures under `testdata/vectors/cap` are never built into a binary).
//!
//! The result is a structurally valid CAP (JCVM 2.2.2 §6, format 2.2): a JAR with a manifest
//! and one entry per component, every component laid out as the specification says, sizes and
//! counts consistent with the Directory component, so [`CapFile::parse`](super::CapFile::parse)
//! accepts it and a simulated card loads it. Its code is a placeholder: each applet class has
//! one method, `install`, whose body is `return`. It never registers an instance, so a real card
//! would refuse INSTALL [for install]; the simulated card (`tsm-se`) runs no bytecode and binds
//! the package to a native model instead.
//!
//! Everything is deterministic (fixed ZIP times, stored entries): the same builder gives the
//! same bytes, hence the same load file hashes.

use super::{ComponentKind, Version};

/// `java/lang` and `javacard/framework` (JC 2.2.x export versions), the imports of any applet.
const IMPORTS: [(&[u8], Version); 2] = [
    (&[0xA0, 0x00, 0x00, 0x00, 0x62, 0x00, 0x01], Version { major: 1, minor: 0 }),
    (&[0xA0, 0x00, 0x00, 0x00, 0x62, 0x01, 0x01], Version { major: 1, minor: 3 }),
];
/// Header flag `ACC_APPLET` (JCVM §6.4).
const ACC_APPLET: u8 = 0x04;
/// Bytecode `return` (JCVM §7.5.89).
const RETURN: u8 = 0x7A;
/// Token of `javacard.framework.Applet` in its export file, the applets' superclass.
const APPLET_CLASS_TOKEN: u8 = 0x03;
/// Size of one `class_info` as written here (no interfaces, empty method tables).
const CLASS_INFO_LEN: usize = 9;
/// Size of one `install` method: header (2 bytes) and `return`.
const METHOD_LEN: usize = 3;

/// Why a CAP cannot be built.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum BuildError {
    #[error("{what}: an AID has 5 to 16 bytes, got {len}")]
    BadAid { what: &'static str, len: usize },
    #[error("package name {name:?}: 1 to 255 bytes of letters, digits, '_' and '.' separators")]
    BadName { name: String },
    #[error("a CAP file built here has 1 to 15 applets, got {count}")]
    AppletCount { count: usize },
}

impl BuildError {
    pub fn code(&self) -> &'static str {
        match self {
            BuildError::BadAid { .. } => "cap.build.bad_aid",
            BuildError::BadName { .. } => "cap.build.bad_name",
            BuildError::AppletCount { .. } => "cap.build.applet_count",
        }
    }
}

/// Builds a CAP file with one package and its applets.
///
/// ```
/// use tsm_gp::cap::{CapFile, build::CapBuilder};
/// let cap = CapBuilder::new(&[0xF0, 0x54, 0x53, 0x4D, 0x01], "com.example.demo")
///     .applet(&[0xF0, 0x54, 0x53, 0x4D, 0x01, 0x01])
///     .build()
///     .unwrap();
/// let parsed = CapFile::parse(&cap).unwrap();
/// assert_eq!(parsed.package_name(), Some("com.example.demo"));
/// assert_eq!(parsed.applet_aids(), vec![&[0xF0, 0x54, 0x53, 0x4D, 0x01, 0x01][..]]);
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CapBuilder {
    package_aid: Vec<u8>,
    package_name: String,
    version: Version,
    applets: Vec<Vec<u8>>,
}

impl CapBuilder {
    /// A package (version 1.0) with no applet yet; `name` dotted (`com.example.wallet`).
    pub fn new(package_aid: &[u8], name: &str) -> CapBuilder {
        CapBuilder { package_aid: package_aid.to_vec(), package_name: name.to_string(), version: Version::new(1, 0), applets: Vec::new() }
    }

    /// The package version (`CE` in the registry, "packageVersion" in the API).
    pub fn version(mut self, major: u8, minor: u8) -> CapBuilder {
        self.version = Version::new(major, minor);
        self
    }

    /// Adds an applet (executable module) with this AID.
    pub fn applet(mut self, aid: &[u8]) -> CapBuilder {
        self.applets.push(aid.to_vec());
        self
    }

    fn check(&self) -> Result<(), BuildError> {
        let aid_ok = |a: &[u8]| (5..=16).contains(&a.len());
        if !aid_ok(&self.package_aid) {
            return Err(BuildError::BadAid { what: "package AID", len: self.package_aid.len() });
        }
        if let Some(a) = self.applets.iter().find(|a| !aid_ok(a)) {
            return Err(BuildError::BadAid { what: "applet AID", len: a.len() });
        }
        if self.applets.is_empty() || self.applets.len() > 15 {
            return Err(BuildError::AppletCount { count: self.applets.len() });
        }
        let n = &self.package_name;
        let part_ok = |p: &str| !p.is_empty() && p.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_');
        if n.len() > 255 || !n.split('.').all(part_ok) {
            return Err(BuildError::BadName { name: n.clone() });
        }
        Ok(())
    }

    /// The components (tag, size, info), in tag order.
    pub fn components(&self) -> Result<Vec<(ComponentKind, Vec<u8>)>, BuildError> {
        self.check()?;
        let n = self.applets.len();
        let internal_name = self.package_name.replace('.', "/");

        // Header (§6.4), format 2.2: magic, minor, major, flags, package_info, package_name_info.
        let mut header = vec![0xDE, 0xCA, 0xFF, 0xED, 2, 2, ACC_APPLET, self.version.minor, self.version.major];
        header.push(self.package_aid.len() as u8);
        header.extend_from_slice(&self.package_aid);
        header.push(internal_name.len() as u8);
        header.extend_from_slice(internal_name.as_bytes());

        // Import (§6.6): count, package_info per import.
        let mut import = vec![IMPORTS.len() as u8];
        for (aid, v) in IMPORTS {
            import.extend_from_slice(&[v.minor, v.major, aid.len() as u8]);
            import.extend_from_slice(aid);
        }

        // Method (§6.9): handler_count 0, then one `install(byte[], short, byte)` per applet:
        // method_header_info {flags 0 | max_stack 0, nargs 3 | max_locals 0}, `return`.
        let mut method = vec![0u8];
        let mut install_offsets = Vec::with_capacity(n);
        for _ in 0..n {
            install_offsets.push(method.len() as u16);
            method.extend_from_slice(&[0x00, 0x30, RETURN]);
        }
        debug_assert_eq!(method.len(), 1 + n * METHOD_LEN);

        // Applet (§6.5): count, AID and install_method_offset per applet.
        let mut applet = vec![n as u8];
        for (aid, off) in self.applets.iter().zip(&install_offsets) {
            applet.push(aid.len() as u8);
            applet.extend_from_slice(aid);
            applet.extend_from_slice(&off.to_be_bytes());
        }

        // Class (§6.8, format 2.2): signature_pool_length 0, then one class_info per applet:
        // no flags or interfaces, superclass javacard.framework.Applet (external reference:
        // high bit, import index 1, class token), no fields, empty method tables.
        let mut class = vec![0u8, 0u8];
        for _ in 0..n {
            class.extend_from_slice(&[0x00, 0x80 | 1, APPLET_CLASS_TOKEN, 0, 0xFF, 0, 0, 0, 0]);
        }
        debug_assert_eq!(class.len(), 2 + n * CLASS_INFO_LEN);

        // StaticField (§6.10): no image, references, array initializers or values.
        let static_field = vec![0u8; 10];
        // ConstantPool (§6.7): no entries (the placeholder code references nothing).
        let constant_pool = vec![0u8, 0u8];
        // RefLocation (§6.11): no offsets to fix up.
        let ref_location = vec![0u8; 4];

        // Descriptor (§6.13): one class_descriptor_info per applet class with its install
        // method, then type_descriptor_info with the one signature: (byte[], short, byte) void.
        let classes_len = n * (1 + 2 + 2 + 1 + 2 + 2 + 12);
        let type_offset = (1 + classes_len + 2) as u16;
        let mut descriptor = vec![n as u8];
        for (i, off) in install_offsets.iter().enumerate() {
            let this_class = (2 + i * CLASS_INFO_LEN) as u16;
            descriptor.push(i as u8); // class token
            descriptor.extend_from_slice(&0x0001u16.to_be_bytes()); // ACC_PUBLIC
            descriptor.extend_from_slice(&this_class.to_be_bytes());
            descriptor.push(0); // interface_count
            descriptor.extend_from_slice(&0u16.to_be_bytes()); // field_count
            descriptor.extend_from_slice(&1u16.to_be_bytes()); // method_count
            descriptor.push(0xFF); // static methods have no virtual method token
            descriptor.push(0x09); // ACC_PUBLIC | ACC_STATIC
            descriptor.extend_from_slice(&off.to_be_bytes());
            descriptor.extend_from_slice(&type_offset.to_be_bytes());
            descriptor.extend_from_slice(&1u16.to_be_bytes()); // bytecode_count
            descriptor.extend_from_slice(&[0, 0, 0, 0]); // exception handler count and index
        }
        descriptor.extend_from_slice(&0u16.to_be_bytes()); // constant_pool_count
        descriptor.extend_from_slice(&[4, 0xB4, 0x31]); // nibbles: byte[] short byte -> void
        debug_assert_eq!(descriptor.len(), type_offset as usize + 3);

        let infos = [
            (ComponentKind::Header, header),
            (ComponentKind::Applet, applet),
            (ComponentKind::Import, import),
            (ComponentKind::ConstantPool, constant_pool),
            (ComponentKind::Class, class),
            (ComponentKind::Method, method),
            (ComponentKind::StaticField, static_field),
            (ComponentKind::RefLocation, ref_location),
            (ComponentKind::Descriptor, descriptor),
        ];
        // Directory (§6.7, format 2.2): the info sizes of all twelve components (0 when
        // absent; its own is 33), static_field_size_info, import, applet and custom counts.
        let size_of = |k: ComponentKind| -> u16 {
            if k == ComponentKind::Directory {
                return 12 * 2 + 6 + 3;
            }
            infos.iter().find(|(kind, _)| *kind == k).map_or(0, |(_, v)| v.len() as u16)
        };
        let mut directory = Vec::with_capacity(33);
        for k in ComponentKind::ALL {
            directory.extend_from_slice(&size_of(k).to_be_bytes());
        }
        directory.extend_from_slice(&[0; 6]);
        directory.extend_from_slice(&[IMPORTS.len() as u8, n as u8, 0]);

        let mut all: Vec<(ComponentKind, Vec<u8>)> = infos.into_iter().chain([(ComponentKind::Directory, directory)]).collect();
        all.sort_by_key(|(k, _)| k.tag());
        Ok(all
            .into_iter()
            .map(|(k, info)| {
                let mut c = Vec::with_capacity(info.len() + 3);
                c.push(k.tag());
                c.extend_from_slice(&(info.len() as u16).to_be_bytes());
                c.extend_from_slice(&info);
                (k, c)
            })
            .collect())
    }

    /// The `.ijc` form: the components concatenated in tag order.
    pub fn build_ijc(&self) -> Result<Vec<u8>, BuildError> {
        Ok(self.components()?.into_iter().flat_map(|(_, c)| c).collect())
    }

    /// The CAP file proper: a JAR (ZIP, stored entries) with `META-INF/MANIFEST.MF` and
    /// `<package path>/javacard/<Component>.cap` per component (JCVM §6.2).
    pub fn build(&self) -> Result<Vec<u8>, BuildError> {
        let components = self.components()?;
        let path = self.package_name.replace('.', "/");
        let manifest = format!(
            "Manifest-Version: 1.0\r\nCreated-By: tsm (generated CAP)\r\nJava-Card-CAP-Creation-Time: 0\r\n\
             Java-Card-Package-Name: {}\r\nJava-Card-Package-AID: {}\r\nJava-Card-Package-Version: {}\r\n\r\n",
            self.package_name,
            aid_text(&self.package_aid),
            self.version
        );
        let mut entries: Vec<(String, Vec<u8>)> = vec![("META-INF/MANIFEST.MF".into(), manifest.into_bytes())];
        entries.extend(components.into_iter().map(|(k, c)| (format!("{path}/javacard/{}.cap", k.name()), c)));
        Ok(stored_zip(&entries))
    }
}

/// `0xa0:0x0:...` as the Java Card converter writes AIDs in manifests.
fn aid_text(aid: &[u8]) -> String {
    aid.iter().map(|b| format!("0x{b:x}")).collect::<Vec<_>>().join(":")
}

/// A ZIP archive of stored (uncompressed) entries, all dated 1980-01-01 00:00 (APPNOTE §4.3:
/// local headers with the data, then the central directory and its end record).
fn stored_zip(entries: &[(String, Vec<u8>)]) -> Vec<u8> {
    const VERSION: u16 = 10; // 1.0: stored entries need nothing newer
    const DOS_TIME: u16 = 0;
    const DOS_DATE: u16 = 0x21; // 1980-01-01
    let mut out = Vec::new();
    let mut central = Vec::new();
    for (name, data) in entries {
        let crc = crc32fast::hash(data);
        let offset = out.len() as u32;
        let fields = |v: &mut Vec<u8>| {
            v.extend_from_slice(&0u16.to_le_bytes()); // flags
            v.extend_from_slice(&0u16.to_le_bytes()); // method: stored
            v.extend_from_slice(&DOS_TIME.to_le_bytes());
            v.extend_from_slice(&DOS_DATE.to_le_bytes());
            v.extend_from_slice(&crc.to_le_bytes());
            v.extend_from_slice(&(data.len() as u32).to_le_bytes()); // compressed
            v.extend_from_slice(&(data.len() as u32).to_le_bytes()); // uncompressed
            v.extend_from_slice(&(name.len() as u16).to_le_bytes());
            v.extend_from_slice(&0u16.to_le_bytes()); // extra field length
        };
        out.extend_from_slice(&0x0403_4B50u32.to_le_bytes());
        out.extend_from_slice(&VERSION.to_le_bytes());
        fields(&mut out);
        out.extend_from_slice(name.as_bytes());
        out.extend_from_slice(data);

        central.extend_from_slice(&0x0201_4B50u32.to_le_bytes());
        central.extend_from_slice(&VERSION.to_le_bytes()); // made by
        central.extend_from_slice(&VERSION.to_le_bytes()); // needed
        fields(&mut central);
        central.extend_from_slice(&0u16.to_le_bytes()); // comment length
        central.extend_from_slice(&0u16.to_le_bytes()); // disk number
        central.extend_from_slice(&0u16.to_le_bytes()); // internal attributes
        central.extend_from_slice(&0u32.to_le_bytes()); // external attributes
        central.extend_from_slice(&offset.to_le_bytes());
        central.extend_from_slice(name.as_bytes());
    }
    let cd_offset = out.len() as u32;
    out.extend_from_slice(&central);
    out.extend_from_slice(&0x0605_4B50u32.to_le_bytes());
    out.extend_from_slice(&[0; 4]); // this disk, disk with the central directory
    out.extend_from_slice(&(entries.len() as u16).to_le_bytes());
    out.extend_from_slice(&(entries.len() as u16).to_le_bytes());
    out.extend_from_slice(&(central.len() as u32).to_le_bytes());
    out.extend_from_slice(&cd_offset.to_le_bytes());
    out.extend_from_slice(&0u16.to_le_bytes()); // comment length
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cap::{CapFile, CapForm, HashAlgorithm};
    use crate::hex;

    const PKG: [u8; 8] = [0xF0, 0x54, 0x53, 0x4D, 0x44, 0x45, 0x4D, 0x4F];

    fn demo() -> CapBuilder {
        CapBuilder::new(&PKG, "org.tsm.demo").version(1, 2).applet(&[0xF0, 0x54, 0x53, 0x4D, 0x44, 0x45, 0x4D, 0x4F, 0x01]).applet(&[0xF0, 0x54, 0x53, 0x4D, 0x44, 0x45, 0x4D, 0x4F, 0x02])
    }

    #[test]
    fn the_built_cap_parses_in_both_forms() {
        let zip = demo().build().unwrap();
        let cap = CapFile::parse(&zip).unwrap();
        assert_eq!(cap.form(), CapForm::Zip);
        assert_eq!(cap.package_aid(), &PKG);
        assert_eq!(cap.package_version(), Version::new(1, 2));
        assert_eq!(cap.package_name(), Some("org.tsm.demo"));
        assert_eq!(cap.package_path(), Some("org/tsm/demo"));
        assert_eq!(cap.cap_version(), Version::new(2, 2));
        assert!(cap.flags().has_applets());
        assert_eq!(cap.applets().len(), 2);
        assert_eq!(cap.applets()[1].install_method_offset, 4);
        assert_eq!(cap.imports().len(), 2);
        assert!(cap.has_descriptor() && !cap.has_export() && !cap.has_debug());
        assert_eq!(cap.manifest().unwrap()["Java-Card-Package-AID"], "0xf0:0x54:0x53:0x4d:0x44:0x45:0x4d:0x4f");

        let ijc = demo().build_ijc().unwrap();
        let from_ijc = CapFile::parse(&ijc).unwrap();
        assert_eq!(from_ijc.load_file_data_block(true), cap.load_file_data_block(true));
        // Without the Descriptor the load file is the components in download order.
        assert_eq!(CapFile::parse(&cap.load_file_data_block(false)).unwrap().package_aid(), &PKG);
    }

    #[test]
    fn the_build_is_deterministic_and_its_hashes_stable() {
        assert_eq!(demo().build().unwrap(), demo().build().unwrap());
        let cap = CapFile::parse(&demo().build().unwrap()).unwrap();
        // Computed from the archive by Python's zipfile and hashlib when the builder was
        // written (components concatenated in JCVM §6.3 order): a change here changes the load
        // file of every demo.
        assert_eq!(cap.load_file_data_block(true).len(), 233);
        assert_eq!(
            hex::encode(&cap.load_file_hash(HashAlgorithm::Sha256, true)),
            "D6AF9FBCC1FBD5D982ED0E6FD336FE136DAF32BA1EBD961DF7C5C51D0CD9F043"
        );
        assert_eq!(hex::encode(&cap.load_file_hash(HashAlgorithm::Sha1, false)), "1D1DC5AF4DB7FF920A4C2F3A02A2F2881D3FE16F");
    }

    #[test]
    fn invalid_input_is_refused() {
        assert_eq!(CapBuilder::new(&[1, 2, 3], "a.b").applet(&PKG).build().unwrap_err().code(), "cap.build.bad_aid");
        assert_eq!(CapBuilder::new(&PKG, "a.b").applet(&[1; 17]).build().unwrap_err().code(), "cap.build.bad_aid");
        assert_eq!(CapBuilder::new(&PKG, "a..b").applet(&PKG).build().unwrap_err().code(), "cap.build.bad_name");
        assert_eq!(CapBuilder::new(&PKG, "a.b").build().unwrap_err().code(), "cap.build.applet_count");
    }
}
