//! Known-answer tests of the crypto layer against third-party vectors (testdata/vectors:
//! NIST SP 800-38B and SP 800-108 CAVP, GlobalPlatformPro, kaoh/globalplatform, GmSSL).

use tsm_gp::crypto::diversify::{Diversification, KeyRole, diversify};
use tsm_gp::crypto::kdf::{kdf_counter_cmac, scp03_kdf};
use tsm_gp::crypto::{self, KeyAlg, SecretKey, SymmetricKey};
use tsm_gp::hex::{decode, encode};
use tsm_gp::recording::{Section, parse_ini};

fn ini(rel: &str) -> Vec<Section> {
    let p = tsm_gp::testdata_dir().join("vectors").join(rel);
    parse_ini(&std::fs::read_to_string(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))).unwrap()
}

fn h(s: &Section, k: &str) -> Vec<u8> {
    s.hex(k).unwrap().unwrap_or_else(|| panic!("[{}] has no {k}", s.name))
}

#[test]
fn nist_sp800_38b_aes_cmac() {
    let secs = ini("nist/SP800-38B_AES-CMAC.txt");
    assert_eq!(secs.len(), 12);
    for s in &secs {
        let key = SecretKey::aes(&h(s, "key")).unwrap();
        let msg = s.hex("msg").unwrap().unwrap_or_default();
        assert_eq!(encode(&crypto::cmac(&key, &msg).unwrap()), s.get("tag").unwrap(), "[{}]", s.name);
    }
}

/// All 360 CMAC-AES cases of the NIST CAVP SP 800-108 counter-mode file, every counter location.
#[test]
fn nist_sp800_108_counter_kdf_cmac() {
    let text = std::fs::read_to_string(tsm_gp::testdata_dir().join("vectors/nist/SP800-108_KDFCTR_CMAC-AES_r8.rsp")).unwrap();
    let mut location = String::new();
    let mut case: std::collections::HashMap<String, String> = Default::default();
    let mut checked = 0;
    let mut run = |location: &str, case: &std::collections::HashMap<String, String>| {
        if !case.contains_key("KO") {
            return;
        }
        let key = SecretKey::aes(&decode(&case["KI"]).unwrap()).unwrap();
        let l_bits: usize = case["L"].parse().unwrap();
        assert_eq!(l_bits % 8, 0);
        let (before, after) = match location {
            "BEFORE_FIXED" => (vec![], decode(&case["FixedInputData"]).unwrap()),
            "AFTER_FIXED" => (decode(&case["FixedInputData"]).unwrap(), vec![]),
            "MIDDLE_FIXED" => (decode(&case["DataBeforeCtrData"]).unwrap(), decode(&case["DataAfterCtrData"]).unwrap()),
            other => panic!("unknown location {other}"),
        };
        let out = kdf_counter_cmac(&key, &before, &after, l_bits / 8).unwrap();
        assert_eq!(encode(&out), case["KO"].to_uppercase(), "{location} {case:?}");
        checked += 1;
    };
    for line in text.lines().map(str::trim) {
        if let Some(loc) = line.strip_prefix("[CTRLOCATION=") {
            run(&location, &case);
            case.clear();
            location = loc.trim_end_matches(']').to_string();
        } else if line.starts_with("COUNT=") {
            run(&location, &case);
            case.clear();
        } else if let Some((k, v)) = line.split_once(" = ") {
            case.insert(k.to_string(), v.to_string());
        }
    }
    run(&location, &case);
    assert_eq!(checked, 360);
}

fn kcv_hex(k: &SecretKey) -> String {
    encode(&k.kcv())
}

#[test]
fn gppro_key_diversification() {
    let secs = ini("kdf/gppro_key_diversification_and_session_keys.txt");
    let mut checked = 0;
    for s in secs.iter().filter(|s| s.name.starts_with("gppro-diversify-")) {
        let method = if s.name.contains("emv") {
            Diversification::EmvCps11
        } else if s.name.contains("visa2") {
            Diversification::Visa2
        } else {
            Diversification::Kdf3
        };
        let mk = h(s, "master_key");
        let master = if method == Diversification::Kdf3 { SecretKey::aes(&mk) } else { SecretKey::des3(&mk) }.unwrap();
        let kdd = h(s, "kdd");
        for (role, name) in [(KeyRole::Enc, "enc"), (KeyRole::Mac, "mac"), (KeyRole::Dek, "dek")] {
            let key = diversify(method, &master, &kdd, role).unwrap();
            if let Some(kcv) = s.get(&format!("source.kcv_{name}")) {
                assert_eq!(kcv_hex(&key), kcv, "[{}] {name} KCV", s.name);
                checked += 1;
            }
            for full in [format!("source.{name}"), format!("derived.{name}")] {
                if let Some(v) = s.get(&full) {
                    assert_eq!(encode(key.expose()), v, "[{}] {full}", s.name);
                    checked += 1;
                }
            }
        }
    }
    assert!(checked >= 30, "only {checked} values checked");
}

#[test]
fn visa2_from_scp01_trace() {
    let s = ini("scp01/scp01_traces_kaoh.txt").into_iter().find(|s| s.name == "kaoh-scp01-visa2-mutual-auth").unwrap();
    let master = SecretKey::des3(&h(&s, "master_or_static_key")).unwrap();
    let kdd = h(&s, "iu.kdd");
    for (role, k) in [(KeyRole::Enc, "derived.card_key_enc"), (KeyRole::Mac, "derived.card_key_mac"), (KeyRole::Dek, "derived.card_key_dek")] {
        assert_eq!(encode(diversify(Diversification::Visa2, &master, &kdd, role).unwrap().expose()), s.get(k).unwrap());
    }
}

#[test]
fn gppro_session_keys_and_kdf() {
    let secs = ini("kdf/gppro_key_diversification_and_session_keys.txt");
    let get = |n: &str| secs.iter().find(|s| s.name == n).unwrap();

    // SCP02: 3DES-CBC(static, 0, const ‖ seq ‖ 00*12).
    let s = get("gppro-scp02-session-keys-seq0000");
    let k = SecretKey::des3(&h(s, "static_key")).unwrap();
    let seq = h(s, "sequence_counter");
    for (c, name) in [(0x0182u16, "s_enc"), (0x0101, "s_mac"), (0x0181, "s_dek"), (0x0102, "s_rmac")] {
        let mut d = vec![0u8; 16];
        d[0..2].copy_from_slice(&c.to_be_bytes());
        d[2..4].copy_from_slice(&seq);
        let sk = SecretKey::des3(&k.encrypt_cbc(&[0; 8], &d).unwrap()).unwrap();
        assert_eq!(kcv_hex(&sk), s.get(&format!("source.kcv_{name}")).unwrap(), "{name}");
        assert_eq!(encode(sk.expose()), s.get(&format!("derived.{name}")).unwrap(), "{name}");
    }

    // SCP03: Amendment D KDF with the KDD as context.
    let s = get("gppro-scp03-session-keys-context-kdd");
    let k = SecretKey::aes(&h(s, "static_key")).unwrap();
    let ctx = h(s, "context");
    for (c, name) in [(4u8, "s_enc"), (6, "s_mac"), (7, "s_rmac")] {
        let sk = SecretKey::aes(&scp03_kdf(&k, c, &ctx, 16).unwrap()).unwrap();
        assert_eq!(kcv_hex(&sk), s.get(&format!("source.kcv_{name}")).unwrap(), "{name}");
        assert_eq!(encode(sk.expose()), s.get(&format!("derived.{name}")).unwrap(), "{name}");
    }
    // SCP03's DEK is the static key: its KCV as the source states it.
    assert_eq!(kcv_hex(&k), s.get("source.kcv_dek").unwrap());

    let s = get("gppro-scp03-kdf-raw-zero-blocks");
    let k = SecretKey::aes(&h(s, "key")).unwrap();
    let out = kdf_counter_cmac(&k, &[0; 16], &[0; 16], 16).unwrap();
    assert_eq!(encode(&out), s.get("derived.output").unwrap());
    assert_eq!(kcv_hex(&SecretKey::aes(&out).unwrap()), s.get("source.kcv").unwrap());

    // SCP01 session keys for a zero context: ENC = MAC.
    let s = get("gppro-scp01-session-keys-zero-context");
    let k = SecretKey::des3(&h(s, "static_key")).unwrap();
    let ctx = h(s, "context");
    let d = [&ctx[12..16], &ctx[0..4], &ctx[8..12], &ctx[4..8]].concat();
    let sk = SecretKey::des3(&crypto::ecb_encrypt(&k, &d).unwrap()).unwrap();
    assert_eq!(kcv_hex(&sk), s.get("source.kcv_s_enc").unwrap());
    assert_eq!(encode(sk.expose()), s.get("derived.s_enc").unwrap());

    // PUT KEY key encryption: SCP01 under the static DEK, SCP02 under the session DEK (seq 0000).
    let s = get("gppro-put-key-encryption");
    let key = SecretKey::des3(&decode("404142434445464748494A4B4C4D4E4F").unwrap()).unwrap();
    assert_eq!(encode(&crypto::ecb_encrypt(&key, key.expose()).unwrap()), s.get("source.scp01_encrypted_key").unwrap());
    let mut d = vec![0u8; 16];
    d[0..2].copy_from_slice(&[0x01, 0x81]);
    let s_dek = SecretKey::des3(&key.encrypt_cbc(&[0; 8], &d).unwrap()).unwrap();
    assert_eq!(encode(&crypto::ecb_encrypt(&s_dek, key.expose()).unwrap()), s.get("source.scp02_encrypted_key").unwrap());

    // Yubico .NET SDK host cryptogram (KDF constant 01, L = 64 bits).
    let s = get("yubico-dotnet-scp03-host-cryptogram");
    let smac = SecretKey::aes(&h(s, "s_mac")).unwrap();
    let ctx = [h(s, "host_challenge"), h(s, "card_challenge")].concat();
    assert_eq!(encode(&scp03_kdf(&smac, 1, &ctx, 8).unwrap()), s.get("source.host_cryptogram").unwrap());
    assert_eq!(encode(&scp03_kdf(&smac, 0, &ctx, 8).unwrap()), s.get("derived.card_cryptogram").unwrap());
}

#[test]
fn gm_sm4_sm3() {
    let secs = ini("gm/sm4_sm3.txt");
    let get = |n: &str| secs.iter().find(|s| s.name == n).unwrap();
    let s = get("sm4-ecb-appendix-a-example1");
    let k = SecretKey::new(KeyAlg::Sm4, &h(s, "key")).unwrap();
    assert_eq!(encode(&crypto::ecb_encrypt(&k, &h(s, "plaintext")).unwrap()), s.get("ciphertext").unwrap());
    assert_eq!(crypto::ecb_decrypt(&k, &h(s, "ciphertext")).unwrap(), h(s, "plaintext"));

    let s = get("sm4-ecb-appendix-a-example2-1000000-iterations");
    let k = SecretKey::new(KeyAlg::Sm4, &h(s, "key")).unwrap();
    let n: usize = s.get("iterations").unwrap().parse().unwrap();
    // One million single-block encryptions through CBC with a zero IV (chaining equals iterating).
    let mut block = h(s, "plaintext");
    let mut buf = Vec::with_capacity(16 * 1000);
    for _ in 0..n / 1000 {
        buf.clear();
        buf.extend(std::iter::repeat_n(0u8, 16 * 1000));
        buf[..16].copy_from_slice(&block);
        // Encrypting zeros in CBC after the first block re-encrypts the previous ciphertext.
        let ct = crypto::cbc_encrypt(&k, &[0; 16], &buf).unwrap();
        block = ct[ct.len() - 16..].to_vec();
    }
    assert_eq!(encode(&block), s.get("ciphertext").unwrap());

    let s = get("sm4-cmac-bouncycastle");
    let k = SecretKey::new(KeyAlg::Sm4, &h(s, "key")).unwrap();
    assert_eq!(encode(&crypto::cmac(&k, &h(s, "msg")).unwrap()), s.get("tag").unwrap());

    for n in ["sm3-appendix-a-example1-abc", "sm3-appendix-a-example2-abcd-x16"] {
        let s = get(n);
        assert_eq!(encode(&crypto::sm3(&h(s, "msg"))), s.get("digest").unwrap());
    }
}

#[test]
fn retail_mac_matches_full_3des_on_equal_halves() {
    // With K1 = K2 the retail MAC degenerates to single-DES CBC-MAC, which equals the
    // 3DES CBC-MAC with K1 = K2: an identity the two implementations must agree on.
    let k = SecretKey::des3(&decode("0123456789ABCDEF0123456789ABCDEF").unwrap()).unwrap();
    let data = crypto::pad80(b"GlobalPlatform", 8);
    assert_eq!(crypto::retail_mac(&k, &[0; 8], &data).unwrap(), crypto::des3_cbc_mac(&k, &[0; 8], &data).unwrap());
}
