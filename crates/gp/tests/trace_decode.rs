//! The trace decoder over every recorded session in testdata/vectors/scp02 and scp03: every
//! session verifies, and a single flipped bit in any cryptogram, C-MAC or R-MAC is reported at
//! the line of the APDU that carries it.

use tsm_gp::recording::{Section, parse_ini};
use tsm_gp::trace::{DecodeOptions, Outcome, decode_section};
use tsm_gp::{Codec, CommandApdu};

fn sections() -> Vec<(String, Section)> {
    let mut out = Vec::new();
    for dir in ["scp02", "scp03"] {
        let d = tsm_gp::testdata_dir().join("vectors").join(dir);
        let mut files: Vec<_> = std::fs::read_dir(&d).unwrap().map(|e| e.unwrap().path()).collect();
        files.sort();
        for f in files {
            for s in parse_ini(&std::fs::read_to_string(&f).unwrap()).unwrap() {
                out.push((f.file_name().unwrap().to_string_lossy().to_string(), s));
            }
        }
    }
    out
}

#[test]
fn every_recorded_session_verifies() {
    let mut verified = 0;
    for (file, s) in sections() {
        let r = decode_section(&s, &DecodeOptions::default());
        if s.exchanges().unwrap().is_empty() {
            assert_eq!(r.outcome, Outcome::Skipped, "{file} [{}]", s.name);
            continue;
        }
        assert_eq!(r.outcome, Outcome::Verified, "{file} [{}]: {:#?}", s.name, r.problems);
        assert!(r.scp.is_some(), "{file} [{}]", s.name);
        // Every command and response got a description.
        assert!(r.events.iter().all(|e| !e.text.is_empty()), "{file} [{}]", s.name);
        verified += 1;
    }
    assert_eq!(verified, 2 + 3 + 6 + 9 + 6, "sessions in scp02 (5) and scp03 (21)");
}

/// Replaces the value of `key` in a section with `value`.
fn with_value(s: &Section, key: &str, value: Vec<u8>) -> Section {
    let mut s = s.clone();
    let e = s.entries.iter_mut().find(|e| e.key == key).unwrap();
    e.value = tsm_gp::hex::encode(&value);
    s
}

#[test]
fn every_flipped_mac_or_cryptogram_bit_is_reported_at_its_line() {
    let mut flips = 0;
    for (file, s) in sections() {
        let base = decode_section(&s, &DecodeOptions::default());
        if base.outcome != Outcome::Verified {
            continue;
        }
        let r_mac = base.level.as_deref().is_some_and(|l| l.contains("R-MAC"));
        for x in s.exchanges().unwrap() {
            let cmd = CommandApdu::from_bytes(&x.command).unwrap();
            let key = format!("c{}", x.index);
            // Byte ranges holding a MAC or cryptogram in this command: the last 8 bytes of the
            // data field of protected commands (C-MAC; host cryptogram for EXTERNAL AUTHENTICATE).
            let mut targets: Vec<(String, Vec<u8>, std::ops::Range<usize>, usize)> = Vec::new();
            if cmd.is_secure_messaging() && cmd.data.len() >= 8 {
                let data_end = x.command.len() - cmd.le.map_or(0, |_| if cmd.extended { 2 } else { 1 });
                targets.push((key.clone(), x.command.clone(), data_end - 8..data_end, x.command_line));
                if cmd.ins == 0x82 {
                    targets.push((key.clone(), x.command.clone(), data_end - 16..data_end - 8, x.command_line));
                }
            }
            if let (Some(resp), Some(rline)) = (&x.response, x.response_line) {
                let sw_ok = resp.len() >= 2 && resp[resp.len() - 2..] == [0x90, 0x00];
                if cmd.ins == 0x50 && resp.len() >= 28 {
                    // Card cryptogram: SCP02 bytes 20..28; SCP03 bytes 21..29 (S8) or 29..45 (S16).
                    let range = match (resp[11], resp.len()) {
                        (2, _) => 20..28,
                        (3, n) if n >= 45 => 29..45,
                        _ => 21..29,
                    };
                    targets.push((format!("r{}", x.index), resp.clone(), range, rline));
                } else if r_mac && sw_ok && resp.len() >= 10 && cmd.is_secure_messaging() && cmd.ins != 0x82 {
                    targets.push((format!("r{}", x.index), resp.clone(), resp.len() - 10..resp.len() - 2, rline));
                }
            }
            for (key, bytes, range, line) in targets {
                // All bits of the first and last byte of each MAC, one bit of the others.
                for pos in range.clone() {
                    let bits: Vec<u8> = if pos == range.start || pos + 1 == range.end { (0..8).collect() } else { vec![(pos % 8) as u8] };
                    for bit in bits {
                        let mut b = bytes.clone();
                        b[pos] ^= 1 << bit;
                        let r = decode_section(&with_value(&s, &key, b), &DecodeOptions::default());
                        flips += 1;
                        assert_eq!(r.outcome, Outcome::Failed, "{file} [{}] {key} byte {pos} bit {bit} not detected", s.name);
                        assert_eq!(
                            r.problems.first().map(|p| p.line),
                            Some(line),
                            "{file} [{}] {key} byte {pos} bit {bit}: first problem {:?}",
                            s.name,
                            r.problems.first()
                        );
                    }
                }
            }
        }
    }
    assert!(flips > 3000, "only {flips} flips");
}
