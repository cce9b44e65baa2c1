//! Replays of third-party recorded sessions (testdata/vectors, kaoh/globalplatform): the
//! simulated card, configured with the recorded keys, KDD, key version and sequence counter
//! (and, where the recorded card's challenge was random, that challenge scripted), must answer
//! INITIALIZE UPDATE and EXTERNAL AUTHENTICATE byte for byte as the recorded card did, and the
//! content management that follows with the recorded status words.

mod common;
use common::*;
use tsm_gp::crypto::SecretKey;
use tsm_gp::gp::Privileges;
use tsm_gp::profile::CardProfile;
use tsm_gp::recording::{Section, parse_ini};
use tsm_gp::scp::Scp;
use tsm_se::{CardConfig, KeySet, SimCard};

fn sections(file: &str) -> Vec<Section> {
    let text = std::fs::read_to_string(tsm_gp::testdata_dir().join("vectors").join(file)).unwrap();
    parse_ini(&text).unwrap()
}

fn h(s: &Section, k: &str) -> Vec<u8> {
    s.hex(k).unwrap().unwrap_or_else(|| panic!("{}: no {k}", s.name))
}

fn be(b: &[u8]) -> u32 {
    b.iter().fold(0, |a, &x| a << 8 | x as u32)
}

/// A card that is the recorded one as far as the handshake can tell.
fn card_for(s: &Section, scp: Scp, isd: &[u8], des: bool) -> SimCard {
    let key = |k: &str| if des { SecretKey::des3(&h(s, k)).unwrap() } else { SecretKey::aes(&h(s, k)).unwrap() };
    let keys = KeySet::new(key("key_enc"), key("key_mac"), key("key_dek"), h(s, "iu.kvn")[0]);
    let mut p = CardProfile::builtin("uicc").unwrap();
    p.scp = vec![scp];
    p.isd_aid = isd.to_vec();
    let mut kdd = [0u8; 10];
    kdd.copy_from_slice(&h(s, "iu.kdd"));
    let cfg = CardConfig { kdd: Some(kdd), ..CardConfig::default().with_scp(scp).with_isd_keys(keys) };
    SimCard::new(p, cfg).unwrap()
}

/// Prepares the counter (and challenge) so that the next INITIALIZE UPDATE is the recorded one.
fn arm(card: &mut SimCard, s: &Section, scp: Scp) {
    let seq = be(&h(s, "iu.sequence_counter"));
    match scp {
        // SCP02 answers with the stored counter, SCP03 increments it first.
        Scp::Scp02 { .. } => card.force_sequence_counter(None, seq).unwrap(),
        Scp::Scp03 { .. } => card.force_sequence_counter(None, seq - 1).unwrap(),
    }
    let derived = s.hex("derived.pseudo_random_card_challenge").unwrap();
    if derived.as_deref() != Some(&h(s, "iu.card_challenge")[..]) {
        card.script_challenges([h(s, "iu.card_challenge")]);
    }
}

fn replay(card: &mut SimCard, s: &Section, upto: usize, exact: &[usize]) {
    for x in s.exchanges().unwrap().iter().filter(|x| x.index <= upto) {
        let got = card.transmit(&x.command);
        let want = x.response.clone().unwrap();
        if exact.contains(&x.index) {
            assert_eq!(tsm_gp::hex::encode(&got), tsm_gp::hex::encode(&want), "{} r{}", s.name, x.index);
        } else {
            assert_eq!(&got[got.len() - 2..], &want[want.len() - 2..], "{} r{}: status word", s.name, x.index);
        }
    }
}

#[test]
fn scp03_handshakes_of_the_kaoh_traces() {
    let mut n = 0;
    for s in sections("scp03/scp03_traces_kaoh.txt") {
        let kvn = h(&s, "iu.kvn")[0];
        if kvn == 0 {
            // A card whose key set is numbered 00: not a configuration this card accepts.
            continue;
        }
        let i = h(&s, "iu.i")[0];
        let scp = Scp::Scp03 { i };
        let mut card = card_for(&s, scp, &h(&s, "invoking_aid"), false);
        arm(&mut card, &s, scp);
        assert_eq!(select(&mut card, &tsm_gp::hex::encode(&h(&s, "invoking_aid"))).sw.0, 0x9000);
        replay(&mut card, &s, 2, &[1, 2]);
        n += 1;
    }
    assert_eq!(n, 5);
}

#[test]
fn scp03_delete_session_of_kaoh() {
    let s = sections("scp03/scp03_traces_kaoh.txt").into_iter().find(|s| s.name == "kaoh-scp03-aes128-i70-cdec-cmac-delete").unwrap();
    let scp = Scp::Scp03 { i: 0x70 };
    let isd = h(&s, "invoking_aid");
    let mut card = card_for(&s, scp, &isd, false);
    // The recorded card had application A00100015141434C: install one under that AID.
    let keys = tsm_gp::scp::StaticKeys::new(
        SecretKey::aes(&h(&s, "key_enc")).unwrap(),
        SecretKey::aes(&h(&s, "key_mac")).unwrap(),
        SecretKey::aes(&h(&s, "key_dek")).unwrap(),
        0x30,
    );
    let mut host = open_scp03(&mut card, keys, 0x03);
    let v = cap_vectors().into_iter().find(|v| v.file == "kaoh_helloworld.cap").unwrap();
    let lfdb = tsm_gp::cap::CapFile::parse(&v.bytes()).unwrap().load_file_data_block(true);
    assert!(load(&mut host, &mut card, &v.package, None, &[], &[], &lfdb, 200).iter().all(|x| *x == 0x9000));
    assert_eq!(install(&mut host, &mut card, &v.package, &v.applet, &hexv("A00100015141434C"), Privileges::NONE, &[0xC9, 0x00], true), 0x9000);
    assert_eq!(select(&mut card, ISD).sw.0, 0x9000);
    arm(&mut card, &s, scp);
    replay(&mut card, &s, 3, &[1, 2, 3]);
    assert_eq!(select(&mut card, "A00100015141434C").sw.0, 0x6A82, "deleted");
}

#[test]
fn scp02_sessions_of_kaoh() {
    let all = sections("scp02/scp02_traces_kaoh_pysim.txt");
    // The GET STATUS session: handshake only (the recorded card held other content).
    let s = all.iter().find(|s| s.name == "kaoh-scp02-i15-cmac-get-status").unwrap();
    let scp = Scp::Scp02 { i: 0x15 };
    let mut card = card_for(s, scp, &hexv("A000000003000000"), true);
    arm(&mut card, s, scp);
    replay(&mut card, s, 2, &[1, 2]);

    // DELETE, INSTALL [for load], LOAD ×2 (C-DEC), INSTALL [for install and make selectable].
    let s = all.iter().find(|s| s.name == "kaoh-scp02-i15-cdec-cmac-delete-load-install").unwrap();
    let mut card = card_for(s, scp, &hexv("A000000003000000"), true);
    // The recorded card had package D0D1D2D3D4D501 (no instance) before the session.
    let mut host = open_scp02(&mut card, des_keys(TEST_KEY, 0x01), 0x15, 0x03);
    let v = cap_vectors().into_iter().find(|v| v.file == "kaoh_helloworld.cap").unwrap();
    let lfdb = tsm_gp::cap::CapFile::parse(&v.bytes()).unwrap().load_file_data_block(true);
    assert!(load(&mut host, &mut card, &v.package, None, &[], &[], &lfdb, 200).iter().all(|x| *x == 0x9000));
    assert_eq!(select(&mut card, "A000000003000000").sw.0, 0x9000);
    arm(&mut card, s, scp);
    // r1..r5 byte for byte (6A88, then "00 9000" for DELETE and INSTALL [for load]); the recorded
    // card put its "00" on the first LOAD and none on INSTALL [for install], where this card
    // follows GPCS 2.3 §11.5.3/§11.6.3 ("00" after the last LOAD and every INSTALL): status words only.
    replay(&mut card, s, 8, &[1, 2, 3, 4, 5]);
    assert_eq!(select(&mut card, "D0D1D2D3D4D50101").sw.0, 0x9000, "installed by the replayed session");
}
