//! CAP file parsing against the third-party CAP files in `testdata/vectors/cap/` and the
//! expected values in `testdata/vectors/README.md` (section "CAP files"), plus malformed input.

use std::path::PathBuf;

use proptest::prelude::*;
use tsm_gp::cap::{CapFile, CapForm, ComponentKind, HashAlgorithm, Version};
use tsm_gp::hex;

/// One row of the README's "Full SHA-1/SHA-256 for both variants" table.
struct Expected {
    file: &'static str,
    package_aid: &'static str,
    applets: &'static [&'static str],
    cap_version: (u8, u8),
    /// (bytes, SHA-1, SHA-256) of the LFDB without the Descriptor component.
    no_descriptor: (usize, &'static str, &'static str),
    /// Same, with the Descriptor component.
    with_descriptor: (usize, &'static str, &'static str),
}

const EXPECTED: &[Expected] = &[
    Expected {
        file: "gppro_Empty_0102030405_8d5ac9e2_2.2.1.cap",
        package_aid: "0102030405",
        applets: &["0102030405060708"],
        cap_version: (2, 1),
        no_descriptor: (
            211,
            "bd74ff188cff4d78d95a6ac1952166338c49f485",
            "8d5ac9e226e3f0a89457fb078470a9378daed8b96ba6cbe839513cdf08d27a38",
        ),
        with_descriptor: (
            283,
            "7d1c6b5640e52de37b4f7084c244bbd5a7678619",
            "32bd8f40d709c500204d3887f83fe4aa4440daf70e7268e6ecceced6fad86eef",
        ),
    },
    Expected {
        file: "kaoh_helloworld.cap",
        package_aid: "D0D1D2D3D4D501",
        applets: &["D0D1D2D3D4D50101"],
        cap_version: (2, 1),
        no_descriptor: (
            247,
            "ecfa1e52bb1290d1004f116cf4210d0735b8ea02",
            "9c8e7f3da89b91426b0f4293a23ddb639cabff9f68bf8c3e8eb8c9bb4f71f6a4",
        ),
        with_descriptor: (
            343,
            "258d12c1f5d76b3048dbf2135101dc83ff376905",
            "60a16fea3d7baf74dfe112abf645972d6869edee8a46f4109ce78f40d33e57b5",
        ),
    },
    Expected {
        file: "pysim_test_javacard.cap",
        package_aid: "D07002CA44",
        applets: &["D07002CA44900101"],
        cap_version: (2, 1),
        no_descriptor: (
            397,
            "3a2dc4008f5a8db8f7627b7833abccba40af1380",
            "2adb0cbbaf6e155764e504d8d2f37389619583883d3ad0ae28dbfb6e1e7bdecd",
        ),
        with_descriptor: (
            569,
            "0e304b27a47008a72a7bc7170bb163a25f116985",
            "84f2c32fded37eedf6e2d39d11b158400ec3422160f9a6fc5c8169eca118d420",
        ),
    },
    Expected {
        file: "javacardos_pyGlobalPlatform_javacardos.cap",
        package_aid: "1122334455",
        applets: &["112233445500"],
        cap_version: (2, 2),
        no_descriptor: (
            304,
            "d07c888e7827fa5696ae8f20fd88b66cc3489bd0",
            "38963c1c9a70b0132a74bddccad8692dc56892369b4f7d1a4e08082844d693a7",
        ),
        with_descriptor: (
            404,
            "a1b8f2e7a71cf0e25bad61369943edaecb1448cf",
            "2a39c6ad6bc432bf39f20d85537af726f86aba4026bd0440c41ca2251bb1ab06",
        ),
    },
    Expected {
        file: "openjavacard-ndef-full-plain.cap",
        package_aid: "D276000177100211010001",
        applets: &["D27600017710021101000101"],
        cap_version: (2, 1),
        no_descriptor: (
            1762,
            "bb95a5fe78c622f335621316467a2020a6e9eb23",
            "b446afb3c4d4d9313125e34fdaa2ba712872ddde79aac7e6ceccba508679d68f",
        ),
        with_descriptor: (
            2176,
            "5b9222709b8308e5da74cd9bcdb6804d9d4d4b0f",
            "0d2bfcf23e3fb5af8c0e6647247b36be0cf148966df239487494203e686430d8",
        ),
    },
    Expected {
        file: "openjavacard-ndef-stub-plain.cap",
        package_aid: "D276000177100211020001",
        applets: &["D27600017710021102000101"],
        cap_version: (2, 1),
        no_descriptor: (
            1054,
            "4a278f09417d4268fef0d36088c07a664e29d806",
            "357d63c2155dcbe2ebc8651eba1dbbaaa79110808abab5f127fdfc85ed7b0f35",
        ),
        with_descriptor: (
            1357,
            "b6e205fb4a6ea5728b319c5cc273dad45c3e34b2",
            "0291e822b7ea0f954a2af3da8da20452c27d94e01bcf9d1c4cf471c36f1001f4",
        ),
    },
    Expected {
        file: "openjavacard-ndef-tiny-plain.cap",
        package_aid: "D276000177100211030001",
        applets: &["D27600017710021103000101"],
        cap_version: (2, 1),
        no_descriptor: (
            869,
            "cca402773235abcb1251ebaa7f8b778af524d276",
            "600dd98a437dbd5b6ae4687269e998c94cf720cce5eafb05a3301ef6e8efbfdb",
        ),
        with_descriptor: (
            1074,
            "fca4f27f62e846ed9670cc5a24a96fd51600c964",
            "370fa20628682967dbbdb75493be6b76902da79ddaac9c9987d9a2f5c1fb353c",
        ),
    },
    Expected {
        file: "jcalgtest_AlgTest_v1.6_supportOnly_jc212.cap",
        package_aid: "6D797061636B616731",
        applets: &["6D7970616330303031"],
        cap_version: (2, 1),
        no_descriptor: (
            3142,
            "a753bee3f4a8dcf24e8c66f2145ecbd66a90798b",
            "4d862593bb2908dfea928c80f80e5dccd7bfe2fcbc6f7646ae777d402124894b",
        ),
        with_descriptor: (
            4062,
            "94b57fa2069fdc45431ea297dfed472f22bf1fb3",
            "8168c3a50b528dc32c7e84fde144f780c3185e34f9e32ea5da8138ffd4b63d1f",
        ),
    },
    Expected {
        file: "jcalgtest_AlgTest_v1.7.1_supportOnly_jc222.cap",
        package_aid: "4A43416C6754657374",
        applets: &["4A43416C675465737431"],
        cap_version: (2, 1),
        no_descriptor: (
            5366,
            "755fd184bb7b924d779cb8729f7ddbcb9ee7cc35",
            "f8cc763783f0a95cdc680ed497727d1bf1db0ae11fb594e3ede85d4e95a69178",
        ),
        with_descriptor: (
            6876,
            "9a59ef5f837831805b10d806b6fe34a5906339be",
            "2b446e1b3e6df650810b19d422af4745344a8bac1d91efe98ef653254ed27a87",
        ),
    },
];

// Well-known package AIDs (Java Card API specification) for the package names the README's
// "imports" column uses.
const JAVA_LANG: &str = "A0000000620001";
const FRAMEWORK: &str = "A0000000620101";
const SECURITY: &str = "A0000000620102";
const JAVACARDX_CRYPTO: &str = "A0000000620201";

/// README "imports" column: (AID, version if the README states one), in component order.
/// An imported package: AID and (major, minor) if the README gives it.
type Import = (&'static str, Option<(u8, u8)>);

const EXPECTED_IMPORTS: &[(&str, &[Import])] = &[
    ("kaoh_helloworld.cap", &[(FRAMEWORK, Some((1, 0)))]),
    (
        "gppro_Empty_0102030405_8d5ac9e2_2.2.1.cap",
        &[(FRAMEWORK, Some((1, 2))), (SECURITY, Some((1, 2))), (JAVA_LANG, Some((1, 0)))],
    ),
    (
        "pysim_test_javacard.cap",
        &[(FRAMEWORK, Some((1, 2))), ("A0000000090003FFFFFFFF8910710002", Some((2, 6))), (JAVA_LANG, None)],
    ),
    ("javacardos_pyGlobalPlatform_javacardos.cap", &[(FRAMEWORK, Some((1, 5))), (JAVA_LANG, None)]),
    ("openjavacard-ndef-stub-plain.cap", &[(JAVA_LANG, None), (FRAMEWORK, Some((1, 3)))]),
    (
        "jcalgtest_AlgTest_v1.6_supportOnly_jc212.cap",
        &[(JAVA_LANG, None), (JAVACARDX_CRYPTO, Some((1, 1))), (SECURITY, Some((1, 1))), (FRAMEWORK, Some((1, 0)))],
    ),
];

fn cap_dir() -> PathBuf {
    tsm_gp::testdata_dir().join("vectors/cap")
}

fn read_cap(file: &str) -> Vec<u8> {
    std::fs::read(cap_dir().join(file)).unwrap_or_else(|e| panic!("{file}: {e}"))
}

fn parse(file: &str) -> CapFile {
    CapFile::parse(&read_cap(file)).unwrap_or_else(|e| panic!("{file}: {e} ({})", e.code()))
}

fn check_against_table(cap: &CapFile, x: &Expected) {
    let f = x.file;
    assert_eq!(hex::encode(cap.package_aid()), x.package_aid, "{f}: package AID");
    let applets: Vec<String> = cap.applet_aids().iter().map(|a| hex::encode(a)).collect();
    assert_eq!(applets, x.applets, "{f}: applet AIDs");
    assert_eq!(cap.cap_version(), Version::new(x.cap_version.0, x.cap_version.1), "{f}: CAP format");
    for (include, (len, sha1, sha256)) in [(false, x.no_descriptor), (true, x.with_descriptor)] {
        assert_eq!(cap.load_file_data_block(include).len(), len, "{f}: LFDB length, descriptor={include}");
        assert_eq!(hex::encode(&cap.load_file_hash(HashAlgorithm::Sha1, include)), sha1.to_uppercase(), "{f}: SHA-1");
        assert_eq!(
            hex::encode(&cap.load_file_hash(HashAlgorithm::Sha256, include)),
            sha256.to_uppercase(),
            "{f}: SHA-256, descriptor={include}"
        );
    }
}

#[test]
fn every_vector_file_is_in_the_table() {
    let mut on_disk: Vec<String> = std::fs::read_dir(cap_dir())
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .filter(|n| n.ends_with(".cap"))
        .collect();
    on_disk.sort();
    let mut listed: Vec<&str> = EXPECTED.iter().map(|x| x.file).collect();
    listed.sort();
    assert_eq!(on_disk, listed);
}

#[test]
fn cap_files_match_readme_table() {
    for x in EXPECTED {
        let cap = parse(x.file);
        assert_eq!(cap.form(), CapForm::Zip);
        check_against_table(&cap, x);
        // Every vector has a Descriptor (the two LFDB variants differ) and no Export.
        assert!(cap.has_descriptor() && !cap.has_export(), "{}", x.file);
        assert!(cap.flags().has_applets(), "{}", x.file);
    }
}

#[test]
fn imports_match_readme_table() {
    for (file, imports) in EXPECTED_IMPORTS {
        let cap = parse(file);
        let got: Vec<(String, Version)> = cap.imports().iter().map(|i| (hex::encode(&i.aid), i.version)).collect();
        assert_eq!(got.len(), imports.len(), "{file}: {got:?}");
        for ((aid, version), (want_aid, want_version)) in got.iter().zip(imports.iter()) {
            assert_eq!(aid, want_aid, "{file}");
            if let Some((major, minor)) = want_version {
                assert_eq!(*version, Version::new(*major, *minor), "{file}: {aid}");
            }
        }
    }
}

#[test]
fn package_names_debug_and_manifest() {
    // README: the javacardos CAP is format 2.2 with package name `com/javacardos` and a Debug
    // component; Debug is never part of the LFDB (the table's byte counts check that).
    let cap = parse("javacardos_pyGlobalPlatform_javacardos.cap");
    assert_eq!(cap.package_name(), Some("com.javacardos"));
    assert!(cap.has_debug());
    // Format 2.1: the name comes from the ZIP folder.
    let cap = parse("kaoh_helloworld.cap");
    assert_eq!(cap.package_name(), Some("net.sourceforge.globalplatform.jc.helloworld"));
    assert!(!cap.has_debug());
    // README: the AlgTest v1.6 CAP has no MANIFEST.
    assert!(parse("jcalgtest_AlgTest_v1.6_supportOnly_jc212.cap").manifest().is_none());
    // The manifest of the openjavacard CAP (deflated, with a data descriptor) carries the
    // package AID in its own notation, folded over two lines.
    let cap = parse("openjavacard-ndef-full-plain.cap");
    let m = cap.manifest().expect("manifest");
    assert_eq!(m["Java-Card-Package-AID"], "0xd2:0x76:0x00:0x01:0x77:0x10:0x02:0x11:0x01:0x00:0x01");
}

#[test]
fn info_serialises_table_values() {
    let x = &EXPECTED[1];
    let cap = parse(x.file);
    let info = cap.info();
    assert_eq!(info.package_aid, x.package_aid);
    assert_eq!(info.applets[0].aid, x.applets[0]);
    assert_eq!(info.cap_version, "2.1");
    assert_eq!(info.load_file.without_descriptor.size, x.no_descriptor.0);
    assert_eq!(info.load_file.without_descriptor.sha1, x.no_descriptor.1.to_uppercase());
    assert_eq!(info.load_file.with_descriptor.size, x.with_descriptor.0);
    assert_eq!(info.load_file.with_descriptor.sha256, x.with_descriptor.2.to_uppercase());
    let json = serde_json::to_value(&info).unwrap();
    assert_eq!(json["package_aid"], "D0D1D2D3D4D501");
    assert_eq!(json["form"], "zip");
    assert_eq!(json["load_file"]["with_descriptor"]["sha256"], x.with_descriptor.2.to_uppercase());
    assert_eq!(json["imports"][0]["aid"], FRAMEWORK);
    let total: u64 = json["components"].as_array().unwrap().iter().map(|c| c["size"].as_u64().unwrap()).sum();
    assert_eq!(total as usize, x.with_descriptor.0, "no Debug here, so all components = LFDB with Descriptor");
}

/// The kaoh SCP02 trace loads helloworld with two LOAD blocks whose unwrapped plaintexts
/// (`c6.plain`, `c7.plain`) are in the vector file; their data fields, concatenated, must be
/// `C4 82 0157 ‖ LFDB with Descriptor` (README, scp02_traces_kaoh_pysim.txt).
#[test]
fn kaoh_load_blocks_carry_the_lfdb_with_descriptor() {
    let text =
        std::fs::read_to_string(tsm_gp::testdata_dir().join("vectors/scp02/scp02_traces_kaoh_pysim.txt")).unwrap();
    let sections = tsm_gp::recording::parse_ini(&text).unwrap();
    let s = sections.iter().find(|s| s.name == "kaoh-scp02-i15-cdec-cmac-delete-load-install").expect("section");
    assert_eq!(s.get("cap_file"), Some("cap/kaoh_helloworld.cap"));
    let mut load_data = Vec::new();
    let mut blocks = 0;
    for n in 1..=20 {
        let Some(plain) = s.hex(&format!("c{n}.plain")).unwrap() else { continue };
        if plain.get(1) != Some(&0xE8) {
            continue; // not a LOAD command
        }
        assert_eq!(plain[3], blocks, "LOAD block number (P2)");
        let lc = plain[4] as usize;
        load_data.extend_from_slice(&plain[5..5 + lc]);
        blocks += 1;
    }
    assert_eq!(blocks, 2);
    assert_eq!(&load_data[..4], &[0xC4, 0x82, 0x01, 0x57]);
    let cap = parse("kaoh_helloworld.cap");
    assert_eq!(cap.load_file_tlv(true), load_data);
    assert_ne!(cap.load_file_tlv(false), load_data);
}

#[test]
fn ijc_built_from_lfdb_parses_to_the_same_values() {
    for x in EXPECTED {
        let cap = parse(x.file);
        let ijc = cap.load_file_data_block(true);
        let parsed = CapFile::parse(&ijc).unwrap_or_else(|e| panic!("{}: {e}", x.file));
        assert_eq!(parsed.form(), CapForm::Ijc);
        assert_eq!(parsed.manifest(), None);
        check_against_table(&parsed, x);
        assert_eq!(parsed.imports(), cap.imports());
        // Without the Descriptor the .ijc is still a valid CAP, but only one LFDB variant exists.
        let short = CapFile::parse(&cap.load_file_data_block(false)).unwrap();
        assert!(!short.has_descriptor());
        let (len, sha1, _) = x.no_descriptor;
        assert_eq!(short.load_file_data_block(true).len(), len);
        assert_eq!(hex::encode(&short.load_file_hash(HashAlgorithm::Sha1, true)), sha1.to_uppercase());
    }
}

// ---- malformed input ----

/// Writes a stored-only ZIP (PKWARE APPNOTE §4.3) so tests can build CAP files with chosen
/// components.
fn stored_zip(entries: &[(String, Vec<u8>)]) -> Vec<u8> {
    let mut out = Vec::new();
    let mut central = Vec::new();
    for (name, data) in entries {
        let crc = crc32fast::hash(data);
        let offset = out.len() as u32;
        let mut common = Vec::new();
        common.extend_from_slice(&[0, 0, 0, 0, 0, 0, 0, 0]); // flags, method, time, date
        common.extend_from_slice(&crc.to_le_bytes());
        common.extend_from_slice(&(data.len() as u32).to_le_bytes());
        common.extend_from_slice(&(data.len() as u32).to_le_bytes());
        common.extend_from_slice(&(name.len() as u16).to_le_bytes());
        common.extend_from_slice(&[0, 0]); // extra length
        out.extend_from_slice(b"PK\x03\x04\x0A\x00");
        out.extend_from_slice(&common);
        out.extend_from_slice(name.as_bytes());
        out.extend_from_slice(data);
        central.extend_from_slice(b"PK\x01\x02\x0A\x00\x0A\x00");
        central.extend_from_slice(&common);
        central.extend_from_slice(&[0; 10]); // comment length, disk, internal and external attributes
        central.extend_from_slice(&offset.to_le_bytes());
        central.extend_from_slice(name.as_bytes());
    }
    let cd_offset = out.len() as u32;
    out.extend_from_slice(&central);
    out.extend_from_slice(b"PK\x05\x06\0\0\0\0");
    out.extend_from_slice(&(entries.len() as u16).to_le_bytes());
    out.extend_from_slice(&(entries.len() as u16).to_le_bytes());
    out.extend_from_slice(&(central.len() as u32).to_le_bytes());
    out.extend_from_slice(&cd_offset.to_le_bytes());
    out.extend_from_slice(&[0, 0]);
    out
}

/// The components of a parsed CAP as ZIP entries under `pkg/javacard/`.
fn component_entries(cap: &CapFile) -> Vec<(String, Vec<u8>)> {
    cap.component_sizes()
        .into_iter()
        .map(|(k, _)| (format!("pkg/javacard/{}.cap", k.name()), cap.component(k).unwrap().to_vec()))
        .collect()
}

#[test]
fn rebuilt_stored_zip_parses_like_the_original() {
    // Guards the fixture builder: the negative tests below must fail for the reason they name.
    let x = &EXPECTED[2];
    let cap = parse(x.file);
    let rebuilt = CapFile::parse(&stored_zip(&component_entries(&cap))).unwrap();
    check_against_table(&rebuilt, x);
    assert_eq!(rebuilt.package_name(), Some("pkg"));
}

#[test]
fn missing_header_component() {
    let cap = parse("kaoh_helloworld.cap");
    for missing in [ComponentKind::Header, ComponentKind::Method, ComponentKind::ConstantPool] {
        let entries: Vec<_> = component_entries(&cap)
            .into_iter()
            .filter(|(n, _)| !n.ends_with(&format!("/{}.cap", missing.name())))
            .collect();
        let err = CapFile::parse(&stored_zip(&entries)).unwrap_err();
        assert_eq!(err.code(), "cap.missing_component", "{missing}: {err}");
        assert!(err.to_string().contains(missing.name()), "{err}");
    }
    // Applet is optional as far as the parser goes, but then the Directory's applet_count lies.
    let entries: Vec<_> = component_entries(&cap).into_iter().filter(|(n, _)| !n.ends_with("/Applet.cap")).collect();
    assert_eq!(CapFile::parse(&stored_zip(&entries)).unwrap_err().code(), "cap.directory_mismatch");
}

#[test]
fn component_size_field_lies() {
    let cap = parse("kaoh_helloworld.cap");
    let mut entries = component_entries(&cap);
    let method = entries.iter_mut().find(|(n, _)| n.ends_with("/Method.cap")).unwrap();
    method.1[2] = method.1[2].wrapping_add(1);
    let err = CapFile::parse(&stored_zip(&entries)).unwrap_err();
    assert_eq!(err.code(), "cap.size_mismatch");
    assert!(err.to_string().contains("Method"), "{err}");

    // The same lie in an .ijc shifts the walk: it must still be an error.
    let mut ijc = cap.load_file_data_block(true);
    ijc[2] = ijc[2].wrapping_add(1); // Header size
    assert!(CapFile::parse(&ijc).is_err());
    // An .ijc Header whose size covers a byte too few.
    let mut ijc = cap.load_file_data_block(true);
    ijc[2] -= 1;
    assert!(CapFile::parse(&ijc).is_err());
}

#[test]
fn component_in_the_wrong_file() {
    let cap = parse("kaoh_helloworld.cap");
    let mut entries = component_entries(&cap);
    for (name, _) in entries.iter_mut() {
        if name.ends_with("/Class.cap") {
            *name = name.replace("/Class.cap", "/Export.cap");
        }
    }
    assert_eq!(CapFile::parse(&stored_zip(&entries)).unwrap_err().code(), "cap.tag_mismatch");
}

#[test]
fn every_prefix_is_an_error() {
    for file in ["kaoh_helloworld.cap", "gppro_Empty_0102030405_8d5ac9e2_2.2.1.cap"] {
        let bytes = read_cap(file);
        for n in 0..bytes.len() {
            assert!(CapFile::parse(&bytes[..n]).is_err(), "{file}: prefix of {n} bytes accepted");
        }
        // An .ijc cut right before the (optional, last) Descriptor is a valid CAP; every other
        // prefix is not.
        let cap = parse(file);
        let ijc = cap.load_file_data_block(true);
        let without_descriptor = cap.load_file_data_block(false).len();
        for n in 0..ijc.len() {
            let r = CapFile::parse(&ijc[..n]);
            assert_eq!(r.is_ok(), n == without_descriptor, "{file}: .ijc prefix of {n} bytes");
        }
    }
}

#[test]
fn flipped_bytes_are_crc_errors() {
    let bytes = read_cap("kaoh_helloworld.cap");
    // The components are stored: flip a byte of the Header's data (the CAP magic).
    let magic = bytes.windows(4).position(|w| w == [0xDE, 0xCA, 0xFF, 0xED]).unwrap();
    for at in [magic, magic + 4, magic + 10] {
        let mut b = bytes.clone();
        b[at] ^= 0x20;
        assert_eq!(CapFile::parse(&b).unwrap_err().code(), "cap.zip.bad_crc", "flip at {at}");
    }
    // A deflated MANIFEST: a flipped bit breaks the stream or its CRC.
    let bytes = read_cap("openjavacard-ndef-full-plain.cap");
    let data = 30 + "META-INF/MANIFEST.MF".len() + 4; // local header, name, 4-byte JAR extra field
    for at in [data + 10, data + 100, data + 300] {
        let mut b = bytes.clone();
        b[at] ^= 0x01;
        let code = CapFile::parse(&b).unwrap_err().code();
        assert!(
            ["cap.zip.bad_crc", "cap.zip.inflate", "cap.zip.size_mismatch"].contains(&code),
            "flip at {at}: {code}"
        );
    }
}

#[test]
fn empty_and_random_input() {
    assert_eq!(CapFile::parse(&[]).unwrap_err().code(), "cap.not_a_cap");
    // Deterministic pseudo-random bytes (xorshift), also with a ZIP or Header-tag start.
    let mut s: u64 = 0x9E37_79B9_7F4A_7C15;
    for round in 0..300 {
        let len = (round * 7) % 700;
        let mut v: Vec<u8> = (0..len)
            .map(|_| {
                s ^= s << 13;
                s ^= s >> 7;
                s ^= s << 17;
                s as u8
            })
            .collect();
        match round % 3 {
            1 if len >= 4 => v[..4].copy_from_slice(b"PK\x03\x04"),
            2 if len >= 1 => v[0] = 1,
            _ => {}
        }
        assert!(CapFile::parse(&v).is_err(), "random input {round} accepted");
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn never_panics_on_arbitrary_bytes(bytes in proptest::collection::vec(any::<u8>(), 0..2048)) {
        let _ = CapFile::parse(&bytes);
        let mut zip = b"PK\x03\x04".to_vec();
        zip.extend_from_slice(&bytes);
        let _ = CapFile::parse(&zip);
        let mut ijc = vec![1u8];
        ijc.extend_from_slice(&bytes);
        let _ = CapFile::parse(&ijc);
    }

    #[test]
    fn never_panics_on_mutated_cap(
        file in 0..EXPECTED.len(),
        edits in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..8),
        cut in proptest::option::of(any::<prop::sample::Index>()),
    ) {
        let mut bytes = read_cap(EXPECTED[file].file);
        for (at, value) in &edits {
            let i = at.index(bytes.len());
            bytes[i] = *value;
        }
        if let Some(cut) = cut {
            bytes.truncate(cut.index(bytes.len()));
        }
        if let Ok(cap) = CapFile::parse(&bytes) {
            // Whatever parsed must be usable.
            let _ = cap.info();
        }
    }

    #[test]
    fn never_panics_on_mutated_ijc(
        edits in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..6),
    ) {
        let mut bytes = parse("pysim_test_javacard.cap").load_file_data_block(true);
        for (at, value) in &edits {
            let i = at.index(bytes.len());
            bytes[i] = *value;
        }
        if let Ok(cap) = CapFile::parse(&bytes) {
            let _ = cap.info();
        }
    }
}
