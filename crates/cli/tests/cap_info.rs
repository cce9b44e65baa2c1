//! `tsm cap info` against every CAP in testdata/vectors/cap, checked against the table in
//! testdata/vectors/README.md (written by the people who collected the files).

use std::path::PathBuf;
use std::process::Command;

fn vectors() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../testdata/vectors")
}

/// Rows of the README's full hash table: file, package AID, applet AID, then "n, sha1, sha256"
/// without and with Descriptor.
fn readme_rows() -> Vec<Vec<String>> {
    let text = std::fs::read_to_string(vectors().join("README.md")).unwrap();
    let start = text.find("Full SHA-1/SHA-256 for both variants").expect("table heading");
    text[start..]
        .lines()
        .filter(|l| l.starts_with("| ") && l.contains(".cap |"))
        .map(|l| l.trim_matches('|').split('|').map(|c| c.trim().to_string()).collect())
        .collect()
}

#[test]
fn cap_info_matches_readme_for_every_cap() {
    let rows = readme_rows();
    assert_eq!(rows.len(), 9, "README table rows");
    for row in rows {
        let file = vectors().join("cap").join(&row[0]);
        let out = Command::new(env!("CARGO_BIN_EXE_tsm")).args(["cap", "info", "--json"]).arg(&file).output().unwrap();
        assert!(out.status.success(), "{}: {}", row[0], String::from_utf8_lossy(&out.stderr));
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        assert_eq!(v["package_aid"], row[1], "{}", row[0]);
        assert_eq!(v["applets"][0]["aid"], row[2], "{}", row[0]);
        let fmt = row[3].trim_matches('*');
        assert!(fmt.starts_with(v["cap_version"].as_str().unwrap()), "{}: {} vs {}", row[0], fmt, v["cap_version"]);
        for (col, key) in [(4, "without_descriptor"), (5, "with_descriptor")] {
            let parts: Vec<&str> = row[col].split(", ").collect();
            let lf = &v["load_file"][key];
            assert_eq!(lf["size"].as_u64().unwrap().to_string(), parts[0], "{} {key}", row[0]);
            assert_eq!(lf["sha1"].as_str().unwrap().to_lowercase(), parts[1], "{} {key}", row[0]);
            assert_eq!(lf["sha256"].as_str().unwrap().to_lowercase(), parts[2], "{} {key}", row[0]);
        }
        // The human form carries the same facts.
        let text = Command::new(env!("CARGO_BIN_EXE_tsm")).args(["cap", "info"]).arg(&file).output().unwrap();
        let text = String::from_utf8(text.stdout).unwrap();
        assert!(text.contains(&row[1]) && text.contains(&row[2]), "{text}");
        assert!(text.to_lowercase().contains(row[5].split(", ").nth(2).unwrap()), "{text}");
    }
}

#[test]
fn cap_info_rejects_non_cap_with_code_and_exit_2() {
    let out = Command::new(env!("CARGO_BIN_EXE_tsm"))
        .args(["cap", "info"])
        .arg(vectors().join("README.md"))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.starts_with("error[cap.not_a_cap]"), "{err}");
    let missing = Command::new(env!("CARGO_BIN_EXE_tsm")).args(["cap", "info", "/nonexistent.cap"]).output().unwrap();
    assert_eq!(missing.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&missing.stderr).contains("error[io.read]"));
}

#[test]
fn keys_kcv_and_diversify_match_gppro_vectors() {
    // KCVs from testdata/vectors/kdf/gppro_key_diversification_and_session_keys.txt
    let out = Command::new(env!("CARGO_BIN_EXE_tsm"))
        .args(["keys", "diversify", "--method", "emv", "--master", "env:TEST_MK", "--kdd", "00010203040506070809", "--json"])
        .env("TEST_MK", "404142434445464748494A4B4C4D4E4F")
        .output()
        .unwrap();
    assert!(out.status.success());
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["enc"]["kcv"], "C33013");
    assert_eq!(v["mac"]["kcv"], "6F4CA6");
    assert_eq!(v["dek"]["kcv"], "BB8179");
    assert!(v["enc"].get("key").is_none(), "keys are not printed without --reveal");

    let out = Command::new(env!("CARGO_BIN_EXE_tsm"))
        .args(["keys", "diversify", "--method", "kdf3", "--master", "404142434445464748494A4B4C4D4E4F", "--kdd", "00010203040506070809", "--reveal", "--json"])
        .output()
        .unwrap();
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["enc"]["key"], "808BC985A1069AD2A9AC94E0FE7B8843");

    let out = Command::new(env!("CARGO_BIN_EXE_tsm")).args(["keys", "kcv", "--alg", "aes", "000102030405060708090A0B0C0D0E0F"]).output().unwrap();
    assert!(String::from_utf8_lossy(&out.stdout).starts_with("C35280"));
    let bad = Command::new(env!("CARGO_BIN_EXE_tsm")).args(["keys", "kcv", "--alg", "aes", "0001"]).output().unwrap();
    assert_eq!(bad.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&bad.stderr).contains("error[crypto.key_length]"));
}
