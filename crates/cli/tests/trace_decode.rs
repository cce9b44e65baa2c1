//! `tsm trace decode` end to end: every recorded SCP02/SCP03 session verifies (exit 0), a
//! single flipped MAC bit is reported at its line (exit 1), bad input exits 2.

use std::path::PathBuf;
use std::process::{Command, Output};

fn vectors() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../testdata/vectors")
}

fn tsm(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_tsm")).args(args).output().unwrap()
}

#[test]
fn all_recorded_sessions_verify() {
    for dir in ["scp02", "scp03"] {
        for f in std::fs::read_dir(vectors().join(dir)).unwrap() {
            let f = f.unwrap().path();
            let out = tsm(&["trace", "decode", f.to_str().unwrap()]);
            let text = String::from_utf8_lossy(&out.stdout);
            assert!(out.status.success(), "{}: {text}{}", f.display(), String::from_utf8_lossy(&out.stderr));
            assert!(text.contains(" 0 failed, 0 unverified"), "{text}");
            assert!(!text.contains("FAILED"));
        }
    }
    // Real-card dumps carry no keys: the GP default key is given on the command line.
    for d in ["scp02-auth.dump", "scp03-auth-jcop4.dump"] {
        let f = vectors().join("gppro_nextgen_dumps").join(d);
        let out = tsm(&["trace", "decode", "--keys", "404142434445464748494A4B4C4D4E4F", f.to_str().unwrap()]);
        assert!(out.status.success(), "{d}: {}", String::from_utf8_lossy(&out.stdout));
        // Without keys the session cannot be checked: exit 3, not success.
        let out = tsm(&["trace", "decode", f.to_str().unwrap()]);
        assert_eq!(out.status.code(), Some(3), "{d}");
    }
}

#[test]
fn a_flipped_mac_bit_fails_at_its_line() {
    let src = std::fs::read_to_string(vectors().join("scp03/scp03_traces_pysim.txt")).unwrap();
    // c4 of the first session: "84F220020863A63F8959827FB2" — flip the lowest bit of its last MAC byte.
    let (line_no, line) = src.lines().enumerate().find(|(_, l)| l.starts_with("c4 = 84F220020863A63F8959827FB2")).unwrap();
    let tampered = src.replacen(line, &line.replacen("8959827FB2", "8959827FB3", 1), 1);
    let dir = std::env::temp_dir().join(format!("tsm-trace-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let f = dir.join("tampered.txt");
    std::fs::write(&f, tampered).unwrap();
    let out = tsm(&["trace", "decode", "-q", f.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains(&format!("line {}: error[scp.c_mac]", line_no + 1)), "{text}");
    assert!(String::from_utf8_lossy(&out.stderr).contains("error[trace.verification_failed]"));

    // JSON report says the same.
    let out = tsm(&["trace", "decode", "--json", f.to_str().unwrap()]);
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v[0]["outcome"], "failed");
    assert_eq!(v[0]["problems"][0]["line"], line_no + 1);
    assert_eq!(v[1]["outcome"], "verified", "the other sessions still verify");
    std::fs::remove_dir_all(dir).ok();
}

#[test]
fn plain_log_with_wrong_keys_fails_and_bad_input_exits_2() {
    let log = "=> 8050000008796B87A024C3EF5700\n<= 00008147580F3D2988D8FF020005BD1A6BE9D3D575BD9E5774FB6A259000\n";
    let dir = std::env::temp_dir().join(format!("tsm-trace-log-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let f = dir.join("s.log");
    std::fs::write(&f, log).unwrap();
    let ok = tsm(&["trace", "decode", "--keys", "404142434445464748494A4B4C4D4E4F", f.to_str().unwrap()]);
    assert!(ok.status.success(), "{}", String::from_utf8_lossy(&ok.stdout));
    let bad = tsm(&["trace", "decode", "--keys", "404142434445464748494A4B4C4D4E40", f.to_str().unwrap()]);
    assert_eq!(bad.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&bad.stdout).contains("error[scp.card_cryptogram]"));
    std::fs::write(&f, "=> 80ZZ\n").unwrap();
    let junk = tsm(&["trace", "decode", f.to_str().unwrap()]);
    assert_eq!(junk.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&junk.stderr).contains("error[recording.hex]"));
    let keys = tsm(&["trace", "decode", "--keys", "enc=00", f.to_str().unwrap()]);
    assert_eq!(keys.status.code(), Some(2));
    std::fs::remove_dir_all(dir).ok();
}
