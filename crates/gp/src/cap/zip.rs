//! A minimal, defensive ZIP reader: just enough for CAP files (JCVM spec §6.2 stores CAP
//! components as entries of a JAR, i.e. a ZIP archive).
//!
//! Layout per PKWARE APPNOTE.TXT 6.3.x: the End Of Central Directory record (§4.3.16) is found
//! by searching backwards from the end (a comment of up to 65535 bytes may follow it); the
//! central directory (§4.3.12) lists the entries; each entry's data follows its local file
//! header (§4.3.7). Only stored (method 0) and deflated (method 8) entries are supported; the
//! central directory is authoritative for sizes and CRC, which makes data descriptors
//! (flag bit 3, §4.3.9) work without parsing them. ZIP64, multi-disk archives and encryption are
//! refused with a clear error. Everything is bounds-checked: no input can make it panic, and the
//! total decompressed size is capped by the caller's budget so a zip bomb is an error.

use thiserror::Error;

/// Default cap on the total number of decompressed bytes read from one archive (16 MiB).
pub const MAX_TOTAL_UNCOMPRESSED: usize = 16 << 20;

const SIG_LOCAL: u32 = 0x0403_4B50;
const SIG_CENTRAL: u32 = 0x0201_4B50;
const SIG_EOCD: u32 = 0x0605_4B50;
const SIG_ZIP64_LOCATOR: u32 = 0x0706_4B50;
const EOCD_LEN: usize = 22;
const CENTRAL_LEN: usize = 46;
const LOCAL_LEN: usize = 30;
const ZIP64_LOCATOR_LEN: usize = 20;

/// General purpose flag bits (APPNOTE §4.4.4).
const FLAG_ENCRYPTED: u16 = 1 << 0;
const FLAG_DATA_DESCRIPTOR: u16 = 1 << 3;
const FLAG_STRONG_ENCRYPTION: u16 = 1 << 6;

/// Compression methods (APPNOTE §4.4.5).
pub const METHOD_STORED: u16 = 0;
pub const METHOD_DEFLATED: u16 = 8;
/// WinZip AES encryption marker method (APPNOTE §4.4.5, appendix E).
const METHOD_AES: u16 = 99;

/// Why a ZIP archive (or one of its entries) was refused.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum ZipError {
    #[error("ZIP: no End Of Central Directory record found in {len} byte(s)")]
    NoEndOfCentralDirectory { len: usize },
    #[error("ZIP: {what} at offset {offset} is truncated (needs {needed} byte(s), file has {len})")]
    Truncated { what: &'static str, offset: usize, needed: usize, len: usize },
    #[error("ZIP: bad {what} signature {found:08X} at offset {offset}")]
    BadSignature { what: &'static str, offset: usize, found: u32 },
    #[error("ZIP: ZIP64 archives are not supported ({detail})")]
    Zip64 { detail: String },
    #[error("ZIP: multi-disk (spanned) archives are not supported")]
    MultiDisk,
    #[error("ZIP: central directory has {declared} entries but ends after {parsed} at offset {offset}")]
    CentralDirectoryMismatch { declared: usize, parsed: usize, offset: usize },
    #[error("ZIP: central directory at offset {offset} ({size} bytes) overlaps the end record at offset {eocd}")]
    CentralDirectoryBounds { offset: usize, size: usize, eocd: usize },
    #[error("ZIP entry {name:?}: encrypted entries are not supported")]
    Encrypted { name: String },
    #[error("ZIP entry {name:?}: unsupported compression method {method}")]
    UnsupportedMethod { name: String, method: u16 },
    #[error("ZIP entry {name:?}: local header at offset {offset} disagrees with the central directory on {field}")]
    LocalHeaderMismatch { name: String, offset: usize, field: &'static str },
    #[error("ZIP entry {name:?}: duplicate entry name")]
    DuplicateEntry { name: String },
    #[error("ZIP entry {name:?}: decompressed size {size} exceeds the remaining budget of {limit} byte(s)")]
    TooLarge { name: String, size: usize, limit: usize },
    #[error("ZIP entry {name:?}: size mismatch, central directory says {expected} byte(s), data gives {actual}")]
    SizeMismatch { name: String, expected: usize, actual: usize },
    #[error("ZIP entry {name:?}: corrupt deflate stream: {detail}")]
    Inflate { name: String, detail: String },
    #[error("ZIP entry {name:?}: CRC-32 mismatch, expected {expected:08X}, computed {actual:08X}")]
    BadCrc { name: String, expected: u32, actual: u32 },
}

impl ZipError {
    /// Stable machine-readable code.
    pub fn code(&self) -> &'static str {
        match self {
            ZipError::NoEndOfCentralDirectory { .. } => "cap.zip.no_eocd",
            ZipError::Truncated { .. } => "cap.zip.truncated",
            ZipError::BadSignature { .. } => "cap.zip.bad_signature",
            ZipError::Zip64 { .. } => "cap.zip.zip64",
            ZipError::MultiDisk => "cap.zip.multi_disk",
            ZipError::CentralDirectoryMismatch { .. } => "cap.zip.central_directory_mismatch",
            ZipError::CentralDirectoryBounds { .. } => "cap.zip.central_directory_mismatch",
            ZipError::Encrypted { .. } => "cap.zip.encrypted",
            ZipError::UnsupportedMethod { .. } => "cap.zip.unsupported_method",
            ZipError::LocalHeaderMismatch { .. } => "cap.zip.local_header_mismatch",
            ZipError::DuplicateEntry { .. } => "cap.zip.duplicate_entry",
            ZipError::TooLarge { .. } => "cap.zip.too_large",
            ZipError::SizeMismatch { .. } => "cap.zip.size_mismatch",
            ZipError::Inflate { .. } => "cap.zip.inflate",
            ZipError::BadCrc { .. } => "cap.zip.bad_crc",
        }
    }
}

/// One entry of the central directory, with its local header already checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ZipEntry {
    /// The entry name (UTF-8, or lossily converted from the legacy code page).
    pub name: String,
    /// Compression method: [`METHOD_STORED`] or [`METHOD_DEFLATED`] (others are refused).
    pub method: u16,
    /// General purpose flags from the central directory.
    pub flags: u16,
    pub crc32: u32,
    pub compressed_size: usize,
    pub uncompressed_size: usize,
    /// Offset of the local file header in the archive.
    pub local_header_offset: usize,
    /// Offset of the (compressed) data in the archive.
    data_offset: usize,
}

impl ZipEntry {
    /// Directory entries (names ending in `/`) carry no data.
    pub fn is_dir(&self) -> bool {
        self.name.ends_with('/')
    }
    /// Whether the entry uses a trailing data descriptor (flag bit 3).
    pub fn has_data_descriptor(&self) -> bool {
        self.flags & FLAG_DATA_DESCRIPTOR != 0
    }
}

/// A parsed archive borrowing the caller's bytes. Entry data is only decompressed on
/// [`ZipArchive::read`].
#[derive(Debug, Clone)]
pub struct ZipArchive<'a> {
    data: &'a [u8],
    entries: Vec<ZipEntry>,
    comment: &'a [u8],
}

/// Little-endian field access with bounds checks; `what` names the structure for errors.
fn slice<'a>(data: &'a [u8], offset: usize, len: usize, what: &'static str) -> Result<&'a [u8], ZipError> {
    offset.checked_add(len).and_then(|end| data.get(offset..end)).ok_or(ZipError::Truncated {
        what,
        offset,
        needed: len,
        len: data.len(),
    })
}

fn le16(b: &[u8], at: usize) -> u16 {
    // Callers pass a slice already checked to hold the fixed-size record.
    match b.get(at..at + 2) {
        Some(s) => u16::from_le_bytes([s[0], s[1]]),
        None => 0,
    }
}

fn le32(b: &[u8], at: usize) -> u32 {
    match b.get(at..at + 4) {
        Some(s) => u32::from_le_bytes([s[0], s[1], s[2], s[3]]),
        None => 0,
    }
}

fn name_string(raw: &[u8]) -> String {
    String::from_utf8_lossy(raw).into_owned()
}

impl<'a> ZipArchive<'a> {
    /// Parses the end record, the central directory and every local header. Does not
    /// decompress anything.
    pub fn parse(data: &'a [u8]) -> Result<Self, ZipError> {
        let eocd_at = find_eocd(data)?;
        let eocd = slice(data, eocd_at, EOCD_LEN, "end of central directory")?;
        let disk = le16(eocd, 4);
        let cd_disk = le16(eocd, 6);
        let entries_here = le16(eocd, 8);
        let entries_total = le16(eocd, 10);
        let cd_size = le32(eocd, 12);
        let cd_offset = le32(eocd, 16);
        let comment_len = le16(eocd, 20) as usize;
        let comment = slice(data, eocd_at + EOCD_LEN, comment_len, "archive comment")?;

        // A ZIP64 archive either has an end-of-central-directory locator right before the EOCD
        // or 0xFFFF/0xFFFFFFFF placeholders in it (APPNOTE §4.3.14-4.3.15, §4.4.1.4).
        if eocd_at >= ZIP64_LOCATOR_LEN && le32(data, eocd_at - ZIP64_LOCATOR_LEN) == SIG_ZIP64_LOCATOR {
            return Err(ZipError::Zip64 { detail: format!("ZIP64 locator at offset {}", eocd_at - ZIP64_LOCATOR_LEN) });
        }
        if entries_here == 0xFFFF || entries_total == 0xFFFF || cd_size == u32::MAX || cd_offset == u32::MAX {
            return Err(ZipError::Zip64 {
                detail: format!("placeholder values in the end record at offset {eocd_at}"),
            });
        }
        if disk != 0 || cd_disk != 0 || entries_here != entries_total {
            return Err(ZipError::MultiDisk);
        }

        let cd_offset = cd_offset as usize;
        let cd_size = cd_size as usize;
        let cd = slice(data, cd_offset, cd_size, "central directory")?;
        if cd_offset.saturating_add(cd_size) > eocd_at {
            return Err(ZipError::CentralDirectoryBounds { offset: cd_offset, size: cd_size, eocd: eocd_at });
        }

        let mut entries: Vec<ZipEntry> = Vec::with_capacity(entries_total as usize);
        // A set, not a scan: up to 65535 entries would make a linear search quadratic.
        let mut names = std::collections::HashSet::new();
        let mut pos = 0usize;
        for i in 0..entries_total as usize {
            let abs = cd_offset.saturating_add(pos);
            let fixed = slice(cd, pos, CENTRAL_LEN, "central directory entry").map_err(|_| {
                ZipError::CentralDirectoryMismatch { declared: entries_total as usize, parsed: i, offset: abs }
            })?;
            let sig = le32(fixed, 0);
            if sig != SIG_CENTRAL {
                return Err(ZipError::BadSignature { what: "central directory entry", offset: abs, found: sig });
            }
            let flags = le16(fixed, 8);
            let method = le16(fixed, 10);
            let crc32 = le32(fixed, 16);
            let csize = le32(fixed, 20);
            let usize_ = le32(fixed, 24);
            let name_len = le16(fixed, 28) as usize;
            let extra_len = le16(fixed, 30) as usize;
            let comment_len = le16(fixed, 32) as usize;
            let disk_start = le16(fixed, 34);
            let local = le32(fixed, 42);
            let name_raw = slice(cd, pos + CENTRAL_LEN, name_len, "central directory entry name")?;
            let name = name_string(name_raw);
            if csize == u32::MAX || usize_ == u32::MAX || local == u32::MAX || disk_start == 0xFFFF {
                return Err(ZipError::Zip64 { detail: format!("entry {name:?} uses ZIP64 size/offset fields") });
            }
            if disk_start != 0 {
                return Err(ZipError::MultiDisk);
            }
            let var_len = name_len + extra_len + comment_len;
            slice(cd, pos + CENTRAL_LEN, var_len, "central directory entry")?;
            pos += CENTRAL_LEN + var_len;

            if flags & (FLAG_ENCRYPTED | FLAG_STRONG_ENCRYPTION) != 0 || method == METHOD_AES {
                return Err(ZipError::Encrypted { name });
            }
            if method != METHOD_STORED && method != METHOD_DEFLATED {
                return Err(ZipError::UnsupportedMethod { name, method });
            }
            if !names.insert(name_raw) {
                // Two entries with one name make "which Header.cap?" ambiguous: refuse.
                return Err(ZipError::DuplicateEntry { name });
            }

            let local = local as usize;
            let data_offset = check_local_header(data, local, name_raw, &name, method, flags, crc32, csize, usize_)?;
            let csize = csize as usize;
            slice(data, data_offset, csize, "entry data")?;
            entries.push(ZipEntry {
                name,
                method,
                flags,
                crc32,
                compressed_size: csize,
                uncompressed_size: usize_ as usize,
                local_header_offset: local,
                data_offset,
            });
        }
        Ok(ZipArchive { data, entries, comment })
    }

    /// The entries in central directory order.
    pub fn entries(&self) -> &[ZipEntry] {
        &self.entries
    }

    /// The entry called `name`, if any.
    pub fn entry(&self, name: &str) -> Option<&ZipEntry> {
        self.entries.iter().find(|e| e.name == name)
    }

    /// The archive comment.
    pub fn comment(&self) -> &'a [u8] {
        self.comment
    }

    /// Decompresses one entry and checks its size and CRC-32. `budget` is the number of
    /// decompressed bytes the caller still allows; it is decreased by the entry's size, and an
    /// entry that would exceed it is an error (zip-bomb protection).
    pub fn read(&self, entry: &ZipEntry, budget: &mut usize) -> Result<Vec<u8>, ZipError> {
        let name = || entry.name.clone();
        if entry.uncompressed_size > *budget {
            return Err(ZipError::TooLarge { name: name(), size: entry.uncompressed_size, limit: *budget });
        }
        let raw = slice(self.data, entry.data_offset, entry.compressed_size, "entry data")?;
        let out = match entry.method {
            METHOD_STORED => {
                if entry.compressed_size != entry.uncompressed_size {
                    return Err(ZipError::SizeMismatch {
                        name: name(),
                        expected: entry.uncompressed_size,
                        actual: entry.compressed_size,
                    });
                }
                raw.to_vec()
            }
            METHOD_DEFLATED => {
                // The limit is the declared size: a stream inflating to more is a lie (or a bomb)
                // and stops there instead of allocating without bound.
                match miniz_oxide::inflate::decompress_to_vec_with_limit(raw, entry.uncompressed_size) {
                    Ok(v) => v,
                    Err(e) if e.status == miniz_oxide::inflate::TINFLStatus::HasMoreOutput => {
                        return Err(ZipError::SizeMismatch {
                            name: name(),
                            expected: entry.uncompressed_size,
                            actual: entry.uncompressed_size.saturating_add(1),
                        });
                    }
                    Err(e) => return Err(ZipError::Inflate { name: name(), detail: format!("{:?}", e.status) }),
                }
            }
            method => return Err(ZipError::UnsupportedMethod { name: name(), method }),
        };
        if out.len() != entry.uncompressed_size {
            return Err(ZipError::SizeMismatch { name: name(), expected: entry.uncompressed_size, actual: out.len() });
        }
        let actual = crc32fast::hash(&out);
        if actual != entry.crc32 {
            return Err(ZipError::BadCrc { name: name(), expected: entry.crc32, actual });
        }
        *budget -= out.len();
        Ok(out)
    }
}

/// Searches backwards for the EOCD signature whose comment length reaches exactly the end of
/// the data (so a signature inside the comment is not mistaken for the record).
fn find_eocd(data: &[u8]) -> Result<usize, ZipError> {
    if data.len() < EOCD_LEN {
        return Err(ZipError::NoEndOfCentralDirectory { len: data.len() });
    }
    let last = data.len() - EOCD_LEN;
    let first = last.saturating_sub(0xFFFF);
    for at in (first..=last).rev() {
        if le32(data, at) == SIG_EOCD {
            let comment_len = le16(data, at + 20) as usize;
            if at + EOCD_LEN + comment_len == data.len() {
                return Ok(at);
            }
        }
    }
    Err(ZipError::NoEndOfCentralDirectory { len: data.len() })
}

/// Checks the local file header against the central directory entry and returns the offset
/// of the entry's data.
#[allow(clippy::too_many_arguments)]
fn check_local_header(
    data: &[u8],
    offset: usize,
    name_raw: &[u8],
    name: &str,
    method: u16,
    flags: u16,
    crc32: u32,
    csize: u32,
    usize_: u32,
) -> Result<usize, ZipError> {
    let fixed = slice(data, offset, LOCAL_LEN, "local file header")?;
    let sig = le32(fixed, 0);
    if sig != SIG_LOCAL {
        return Err(ZipError::BadSignature { what: "local file header", offset, found: sig });
    }
    let mismatch = |field| ZipError::LocalHeaderMismatch { name: name.to_string(), offset, field };
    let l_flags = le16(fixed, 6);
    let l_method = le16(fixed, 8);
    let l_crc = le32(fixed, 14);
    let l_csize = le32(fixed, 18);
    let l_usize = le32(fixed, 22);
    let l_name_len = le16(fixed, 26) as usize;
    let l_extra_len = le16(fixed, 28) as usize;
    if l_method != method {
        return Err(mismatch("compression method"));
    }
    if (l_flags ^ flags) & (FLAG_ENCRYPTED | FLAG_STRONG_ENCRYPTION) != 0 {
        return Err(mismatch("encryption flag"));
    }
    // With a data descriptor (bit 3) the local CRC and sizes may be zero (APPNOTE §4.4.4);
    // otherwise, and whenever they are filled in, they must agree.
    let descriptor = (l_flags | flags) & FLAG_DATA_DESCRIPTOR != 0;
    let agrees = |local: u32, central: u32| local == central || (descriptor && local == 0);
    if !agrees(l_crc, crc32) {
        return Err(mismatch("CRC-32"));
    }
    if !agrees(l_csize, csize) {
        return Err(mismatch("compressed size"));
    }
    if !agrees(l_usize, usize_) {
        return Err(mismatch("uncompressed size"));
    }
    let l_name = slice(data, offset + LOCAL_LEN, l_name_len, "local file header name")?;
    if l_name != name_raw {
        return Err(mismatch("name"));
    }
    let data_offset = offset + LOCAL_LEN + l_name_len + l_extra_len;
    if data_offset > data.len() {
        return Err(ZipError::Truncated {
            what: "local file header extra field",
            offset,
            needed: LOCAL_LEN + l_name_len + l_extra_len,
            len: data.len(),
        });
    }
    Ok(data_offset)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// How a test entry is written.
    pub(crate) struct TestEntry<'a> {
        pub name: &'a str,
        pub data: &'a [u8],
        pub deflate: bool,
        pub descriptor: bool,
    }

    /// Writes a ZIP archive by hand, following APPNOTE §4.3 (test fixture only).
    pub(crate) fn build_zip(entries: &[TestEntry<'_>], comment: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        let mut central = Vec::new();
        for e in entries {
            let stored = if e.deflate { miniz_oxide::deflate::compress_to_vec(e.data, 6) } else { e.data.to_vec() };
            let crc = crc32fast::hash(e.data);
            let method: u16 = if e.deflate { 8 } else { 0 };
            let flags: u16 = if e.descriptor { FLAG_DATA_DESCRIPTOR } else { 0 };
            let offset = out.len() as u32;
            let (l_crc, l_c, l_u) =
                if e.descriptor { (0, 0, 0) } else { (crc, stored.len() as u32, e.data.len() as u32) };
            out.extend_from_slice(&SIG_LOCAL.to_le_bytes());
            out.extend_from_slice(&20u16.to_le_bytes());
            out.extend_from_slice(&flags.to_le_bytes());
            out.extend_from_slice(&method.to_le_bytes());
            out.extend_from_slice(&[0; 4]); // time, date
            out.extend_from_slice(&l_crc.to_le_bytes());
            out.extend_from_slice(&l_c.to_le_bytes());
            out.extend_from_slice(&l_u.to_le_bytes());
            out.extend_from_slice(&(e.name.len() as u16).to_le_bytes());
            out.extend_from_slice(&0u16.to_le_bytes());
            out.extend_from_slice(e.name.as_bytes());
            out.extend_from_slice(&stored);
            if e.descriptor {
                out.extend_from_slice(&0x0807_4B50u32.to_le_bytes());
                out.extend_from_slice(&crc.to_le_bytes());
                out.extend_from_slice(&(stored.len() as u32).to_le_bytes());
                out.extend_from_slice(&(e.data.len() as u32).to_le_bytes());
            }
            central.extend_from_slice(&SIG_CENTRAL.to_le_bytes());
            central.extend_from_slice(&20u16.to_le_bytes());
            central.extend_from_slice(&20u16.to_le_bytes());
            central.extend_from_slice(&flags.to_le_bytes());
            central.extend_from_slice(&method.to_le_bytes());
            central.extend_from_slice(&[0; 4]);
            central.extend_from_slice(&crc.to_le_bytes());
            central.extend_from_slice(&(stored.len() as u32).to_le_bytes());
            central.extend_from_slice(&(e.data.len() as u32).to_le_bytes());
            central.extend_from_slice(&(e.name.len() as u16).to_le_bytes());
            central.extend_from_slice(&[0; 4]); // extra, comment lengths
            central.extend_from_slice(&[0; 4]); // disk, internal attributes
            central.extend_from_slice(&[0; 4]); // external attributes
            central.extend_from_slice(&offset.to_le_bytes());
            central.extend_from_slice(e.name.as_bytes());
        }
        let cd_offset = out.len() as u32;
        out.extend_from_slice(&central);
        out.extend_from_slice(&SIG_EOCD.to_le_bytes());
        out.extend_from_slice(&[0; 4]);
        out.extend_from_slice(&(entries.len() as u16).to_le_bytes());
        out.extend_from_slice(&(entries.len() as u16).to_le_bytes());
        out.extend_from_slice(&(central.len() as u32).to_le_bytes());
        out.extend_from_slice(&cd_offset.to_le_bytes());
        out.extend_from_slice(&(comment.len() as u16).to_le_bytes());
        out.extend_from_slice(comment);
        out
    }

    fn e<'a>(name: &'a str, data: &'a [u8], deflate: bool, descriptor: bool) -> TestEntry<'a> {
        TestEntry { name, data, deflate, descriptor }
    }

    fn read_all(zip: &ZipArchive<'_>) -> Result<Vec<(String, Vec<u8>)>, ZipError> {
        let mut budget = MAX_TOTAL_UNCOMPRESSED;
        zip.entries().iter().map(|en| Ok((en.name.clone(), zip.read(en, &mut budget)?))).collect()
    }

    const TEXT: &[u8] = b"Java Card CAP components are stored in a JAR. Java Card CAP components are stored in a JAR.";

    #[test]
    fn stored_and_deflated_entries_with_comment() {
        let bytes = build_zip(
            &[e("a/stored.bin", b"\x01\x00\x02hi", false, false), e("b/deflated.txt", TEXT, true, false)],
            b"a comment PK\x05\x06 with a fake signature",
        );
        let zip = ZipArchive::parse(&bytes).unwrap();
        assert_eq!(zip.entries().len(), 2);
        assert_eq!(zip.entries()[0].method, METHOD_STORED);
        assert_eq!(zip.entries()[1].method, METHOD_DEFLATED);
        assert!(zip.entries()[1].compressed_size < TEXT.len(), "test data must really be compressed");
        assert_eq!(zip.comment(), b"a comment PK\x05\x06 with a fake signature");
        let all = read_all(&zip).unwrap();
        assert_eq!(all[0], ("a/stored.bin".to_string(), b"\x01\x00\x02hi".to_vec()));
        assert_eq!(all[1].1, TEXT);
    }

    #[test]
    fn data_descriptor_uses_central_sizes() {
        let bytes = build_zip(&[e("x", TEXT, true, true), e("y", b"plain", false, true)], b"");
        let zip = ZipArchive::parse(&bytes).unwrap();
        assert!(zip.entries()[0].has_data_descriptor());
        let all = read_all(&zip).unwrap();
        assert_eq!(all[0].1, TEXT);
        assert_eq!(all[1].1, b"plain");
    }

    #[test]
    fn empty_archive_has_no_entries() {
        let bytes = build_zip(&[], b"");
        assert_eq!(bytes.len(), 22);
        assert!(ZipArchive::parse(&bytes).unwrap().entries().is_empty());
    }

    #[test]
    fn crc_and_local_header_errors() {
        let mut bytes = build_zip(&[e("f", b"hello world", false, false)], b"");
        bytes[LOCAL_LEN + 1] ^= 0x01; // a data byte
        let zip = ZipArchive::parse(&bytes).unwrap();
        let mut budget = MAX_TOTAL_UNCOMPRESSED;
        assert_eq!(zip.read(&zip.entries()[0], &mut budget).unwrap_err().code(), "cap.zip.bad_crc");

        let mut bytes = build_zip(&[e("f", b"hello world", false, false)], b"");
        bytes[LOCAL_LEN] = b'g'; // local name differs from the central one
        assert_eq!(ZipArchive::parse(&bytes).unwrap_err().code(), "cap.zip.local_header_mismatch");

        let mut bytes = build_zip(&[e("f", b"hello world", false, false)], b"");
        bytes[18] ^= 0x01; // local compressed size
        assert_eq!(ZipArchive::parse(&bytes).unwrap_err().code(), "cap.zip.local_header_mismatch");
    }

    #[test]
    fn refuses_encryption_unknown_methods_zip64_duplicates() {
        let base = build_zip(&[e("f", b"hello", false, false)], b"");
        let cd = base.len() - 22 - (CENTRAL_LEN + 1);

        let mut b = base.clone();
        b[6] |= 1; // local flags
        b[cd + 8] |= 1; // central flags
        assert_eq!(ZipArchive::parse(&b).unwrap_err().code(), "cap.zip.encrypted");

        let mut b = base.clone();
        b[8] = 12; // bzip2, local
        b[cd + 10] = 12; // central
        assert_eq!(ZipArchive::parse(&b).unwrap_err().code(), "cap.zip.unsupported_method");

        let mut b = base.clone();
        b[cd + 20..cd + 24].copy_from_slice(&[0xFF; 4]);
        assert_eq!(ZipArchive::parse(&b).unwrap_err().code(), "cap.zip.zip64");

        let mut b = base.clone();
        let eocd = b.len() - 22;
        b[eocd + 8..eocd + 12].copy_from_slice(&[0xFF; 4]);
        assert_eq!(ZipArchive::parse(&b).unwrap_err().code(), "cap.zip.zip64");

        let dup = build_zip(&[e("f", b"1", false, false), e("f", b"2", false, false)], b"");
        assert_eq!(ZipArchive::parse(&dup).unwrap_err().code(), "cap.zip.duplicate_entry");
    }

    #[test]
    fn bomb_and_lying_sizes() {
        let zeros = vec![0u8; 1 << 20];
        let bytes = build_zip(&[e("bomb", &zeros, true, false)], b"");
        assert!(bytes.len() < 4096);
        let zip = ZipArchive::parse(&bytes).unwrap();
        let mut budget = 1000;
        assert_eq!(zip.read(&zip.entries()[0], &mut budget).unwrap_err().code(), "cap.zip.too_large");
        assert_eq!(budget, 1000);

        // Central and local sizes claim 100 bytes but the stream inflates to 1 MiB.
        let mut b = bytes.clone();
        let cd = b.len() - 22 - (CENTRAL_LEN + 4);
        b[cd + 24..cd + 28].copy_from_slice(&100u32.to_le_bytes());
        b[22..26].copy_from_slice(&100u32.to_le_bytes());
        let zip = ZipArchive::parse(&b).unwrap();
        let mut budget = MAX_TOTAL_UNCOMPRESSED;
        assert_eq!(zip.read(&zip.entries()[0], &mut budget).unwrap_err().code(), "cap.zip.size_mismatch");

        // Corrupt deflate data: an invalid block type (BTYPE = 11).
        let mut b = build_zip(&[e("d", TEXT, true, false)], b"");
        b[LOCAL_LEN + 1] = 0x07;
        let zip = ZipArchive::parse(&b).unwrap();
        let mut budget = MAX_TOTAL_UNCOMPRESSED;
        let err = zip.read(&zip.entries()[0], &mut budget).unwrap_err().code();
        assert!(err == "cap.zip.inflate" || err == "cap.zip.bad_crc" || err == "cap.zip.size_mismatch", "{err}");
    }

    #[test]
    fn truncations_and_garbage_are_errors() {
        let bytes = build_zip(&[e("a", TEXT, true, true), e("b", b"xyz", false, false)], b"c");
        for n in 0..bytes.len() {
            let r = ZipArchive::parse(&bytes[..n]).and_then(|z| read_all(&z));
            assert!(r.is_err(), "prefix of {n} bytes accepted");
        }
        assert_eq!(ZipArchive::parse(b"").unwrap_err().code(), "cap.zip.no_eocd");
        assert_eq!(ZipArchive::parse(&[0x50; 100]).unwrap_err().code(), "cap.zip.no_eocd");
        // The central directory points past the end record.
        let mut b = build_zip(&[e("b", b"xyz", false, false)], b"");
        let eocd = b.len() - 22;
        b[eocd + 16..eocd + 20].copy_from_slice(&0x7FFF_0000u32.to_le_bytes());
        assert_eq!(ZipArchive::parse(&b).unwrap_err().code(), "cap.zip.truncated");
    }
}
