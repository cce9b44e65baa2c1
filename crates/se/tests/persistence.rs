//! Save → load → identical behaviour; no key value in clear in the state file; deterministic
//! mode: same seed, same script → byte-identical responses.

mod common;
use common::*;
use tsm_gp::crypto::SecretKey;
use tsm_gp::gp::install::SdInstallParams;
use tsm_gp::gp::store_data::StoreData;
use tsm_gp::gp::{GetData, GetStatus, Install, InstallParams, Privilege, Privileges, Select, StatusScope};
use tsm_gp::profile::CardProfile;
use tsm_gp::scp::Scp;
use tsm_gp::scp::scp02::{HostHandshake as Hs02, Scp02Options};
use tsm_gp::scp::scp03::HostHandshake;
use tsm_gp::scp::{ChannelOptions, HostChannel};
use tsm_gp::tlv::Dgi;
use tsm_gp::{Codec, CommandApdu};
use tsm_se::{CardConfig, KeySet, SD_MODULE_AID, SD_PACKAGE_AID, SeError, SimCard};

const SSD: &str = "A0000005591010FFFFFFFF8900000100";

fn storage_key() -> SecretKey {
    SecretKey::aes(&[0x5A; 32]).unwrap()
}

fn tmp(name: &str) -> std::path::PathBuf {
    let d = std::env::temp_dir().join(format!("tsm-se-{}-{name}", std::process::id()));
    std::fs::create_dir_all(&d).unwrap();
    d.join("card.json")
}

/// A card with some of everything: ISD with its own keys, an SSD with PUT KEY keys, an
/// application with personalization data, counters moved. Returns the card and every key value
/// it holds.
fn populated() -> (SimCard, Vec<Vec<u8>>) {
    let isd_keys = KeySet::new(
        SecretKey::aes(&hexv("F995D0A069335C7DF42E590317FFEA6D")).unwrap(),
        SecretKey::aes(&hexv("58563362EC5A4541ABCD32B34B1EAE7D")).unwrap(),
        SecretKey::aes(&hexv("0A02A6D687406DCFA09DC70B3EDB7E38")).unwrap(),
        0x30,
    );
    let cfg = CardConfig::default().seeded(77).with_scp(Scp::Scp03 { i: 0x70 }).with_isd_keys(isd_keys.clone());
    let mut card = SimCard::new(CardProfile::builtin("uicc").unwrap(), cfg).unwrap();
    let mut values: Vec<Vec<u8>> = isd_keys_bytes(&isd_keys);
    values.push(tsm_se::GP_TEST_KEY.to_vec());
    assert_eq!(select(&mut card, ISD).sw.0, 0x9000);
    let mut h = open_scp03(&mut card, keyset_to_static(&isd_keys), 0x33);
    let v = cap_vectors().into_iter().find(|v| v.file == "pysim_test_javacard.cap").unwrap();
    let lfdb = tsm_gp::cap::CapFile::parse(&v.bytes()).unwrap().load_file_data_block(true);
    assert!(load(&mut h, &mut card, &v.package, None, &v.variants[1].2, &[], &lfdb, 200).iter().all(|s| *s == 0x9000));
    assert_eq!(install(&mut h, &mut card, &v.package, &v.applet, &v.applet, Privileges::NONE, &[0xC9, 0x02, 0xAB, 0xCD], true), 0x9000);
    assert_eq!(h.sw(&mut card, &Install::for_personalization(tsm_gp::gp::Aid::new(&v.applet).unwrap()).to_apdu()), 0x9000);
    assert_eq!(h.sw(&mut card, &StoreData::dgis(0, true, &[Dgi { id: 0x0201, value: vec![7; 20] }]).to_apdu()), 0x9000);
    let sdp = SdInstallParams { scp: vec![(0x03, 0x70)], ..Default::default() };
    let am: Privileges = [Privilege::SecurityDomain, Privilege::AuthorizedManagement].into_iter().collect();
    let params = InstallParams::application_specific(&sdp.to_value());
    assert_eq!(install(&mut h, &mut card, SD_PACKAGE_AID.as_bytes(), SD_MODULE_AID.as_bytes(), &hexv(SSD), am, params.as_bytes(), true), 0x9000);
    assert_eq!(select(&mut card, SSD).sw.0, 0x9000);
    let mut s = open_scp03(&mut card, aes_keys(tsm_gp::hex::encode(&tsm_se::GP_TEST_KEY).as_str(), 0xFF), 0x03);
    let new: Vec<SecretKey> = (0..3).map(|i| SecretKey::aes(&[0xC0 + i as u8; 32]).unwrap()).collect();
    assert_eq!(put_key_set(&mut s, &mut card, 0, 0x31, [&new[0], &new[1], &new[2]]).sw.0, 0x9000);
    values.extend(new.iter().map(|k| k.expose().to_vec()));
    (card, values)
}

fn isd_keys_bytes(k: &KeySet) -> Vec<Vec<u8>> {
    vec![k.enc.expose().to_vec(), k.mac.expose().to_vec(), k.dek.expose().to_vec()]
}

/// A fixed script: selections, GET DATA, a full SCP03 session with fixed host challenges, and
/// some garbage. Returns every response.
fn script(card: &mut SimCard) -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    let mut tx = |card: &mut SimCard, b: Vec<u8>| {
        let r = card.transmit(&b);
        out.push(r.clone());
        r
    };
    for a in [ISD, SSD, "D07002CA44900101", ISD] {
        tx(card, Select::by_name(&hexv(a)).to_apdu().to_bytes());
    }
    for tag in [0x9F7Fu16, 0x66, 0x67, 0xE0, 0xC1, 0xCF, 0xFF21, 0x42] {
        tx(card, GetData::new(tag).to_apdu().to_bytes());
    }
    let keys = keyset_to_static(&KeySet::new(
        SecretKey::aes(&hexv("F995D0A069335C7DF42E590317FFEA6D")).unwrap(),
        SecretKey::aes(&hexv("58563362EC5A4541ABCD32B34B1EAE7D")).unwrap(),
        SecretKey::aes(&hexv("0A02A6D687406DCFA09DC70B3EDB7E38")).unwrap(),
        0x30,
    ));
    let (hs, iu) = HostHandshake::new(keys, &[0x42; 8], ChannelOptions::default()).unwrap();
    let r = tx(card, iu.to_bytes());
    if let Ok(auth) = hs.on_init_update(&tsm_gp::ResponseApdu::from_bytes(&r).unwrap(), tsm_gp::scp::SecurityLevel(0x33), tsm_gp::scp::scp03::Expect::any()) {
        let ea = auth.external_authenticate();
        let r2 = tx(card, ea.to_bytes());
        let mut host = auth.on_external_authenticate(&tsm_gp::ResponseApdu::from_bytes(&r2).unwrap()).unwrap();
        for scope in [StatusScope::ISD, StatusScope::APPLICATIONS, StatusScope::LOAD_FILES_AND_MODULES] {
            let w = host.wrap(&GetStatus::new(scope).to_apdu()).unwrap();
            tx(card, w.to_bytes());
        }
    }
    for garbage in [vec![], vec![0x80], vec![0x00, 0xA4, 0x04], vec![0xFF; 7], vec![0x80, 0x50, 0, 0, 8, 1, 2, 3, 4, 5, 6, 7, 8]] {
        tx(card, garbage);
    }
    out
}

#[test]
fn save_load_same_behaviour_and_no_clear_keys() {
    let (mut card, values) = populated();
    let path = tmp("persist");
    card.save(&path, &storage_key()).unwrap();
    let text = std::fs::read_to_string(&path).unwrap();
    for v in &values {
        let up = tsm_gp::hex::encode(v);
        let low = up.to_lowercase();
        assert!(!text.contains(&up) && !text.contains(&low), "key value {up} in clear in the state file");
        // Also no 8-byte window of it (partial leaks).
        for w in up.as_bytes().chunks(16).filter(|c| c.len() == 16) {
            assert!(!text.contains(std::str::from_utf8(w).unwrap()), "part of a key value in clear");
        }
    }
    assert!(text.contains("\"sealed\""));
    let mut loaded = SimCard::load(&path, &storage_key()).unwrap();
    assert_eq!(loaded.state(), card.state(), "the same persistent state");
    let a = script(&mut card);
    let b = script(&mut loaded);
    assert_eq!(a, b, "identical responses after save and load");
    assert!(a.iter().any(|r| r.ends_with(&[0x90, 0x00]) && r.len() > 40), "the script exercised real work");
    // And again after both ran the script (counters, RNG state moved).
    let path2 = tmp("persist2");
    card.save(&path2, &storage_key()).unwrap();
    let mut again = SimCard::load(&path2, &storage_key()).unwrap();
    assert_eq!(script(&mut card), script(&mut again));
    // A wrong storage key or an altered file does not load.
    let wrong = SecretKey::aes(&[0x5B; 32]).unwrap();
    assert!(matches!(SimCard::load(&path, &wrong), Err(SeError::Seal { .. })));
    let tampered = text.replacen("\"sealed\": \"01", "\"sealed\": \"02", 1);
    std::fs::write(&path, tampered).unwrap();
    assert!(matches!(SimCard::load(&path, &storage_key()), Err(SeError::Seal { .. })));
    // A live state has no sealed values and cannot be restored as is.
    assert!(matches!(SimCard::from_state(card.state().clone(), &storage_key()), Err(SeError::MissingKey { .. })));
    std::fs::remove_dir_all(path.parent().unwrap()).ok();
    std::fs::remove_dir_all(path2.parent().unwrap()).ok();
}

#[test]
fn deterministic_mode_same_seed_same_bytes() {
    // SCP02 i=15 has a random card challenge: the seed decides it.
    let run = |seed: u64| {
        let p = CardProfile::builtin("microsd").unwrap();
        let mut card = SimCard::new(p, CardConfig::default().seeded(seed)).unwrap();
        let mut out = Vec::new();
        out.push(card.transmit(&Select::by_name(&hexv(ISD)).to_apdu().to_bytes()));
        for hc in [[1u8; 8], [2u8; 8]] {
            let (hs, iu) = Hs02::new(des_keys(TEST_KEY, 0xFF), hc, Scp02Options::new(0x15));
            let r = card.transmit(&iu.to_bytes());
            out.push(r.clone());
            let auth = hs.on_init_update(&tsm_gp::ResponseApdu::from_bytes(&r).unwrap(), tsm_gp::scp::SecurityLevel(0x03), None).unwrap();
            out.push(card.transmit(&auth.external_authenticate().to_bytes()));
            let mut host = auth.on_external_authenticate(&tsm_gp::ResponseApdu::from_bytes(out.last().unwrap()).unwrap()).unwrap();
            out.push(card.transmit(&host.wrap(&GetStatus::new(StatusScope::LOAD_FILES).to_apdu()).unwrap().to_bytes()));
        }
        out.push(card.transmit(&CommandApdu::new(0x80, 0xCA, 0x00, 0xC1).with_le(256).to_bytes()));
        out
    };
    assert_eq!(run(11), run(11));
    assert_ne!(run(11)[1], run(12)[1], "another seed, another card challenge");
    // Forced challenges and counter for replays.
    let p = CardProfile::builtin("microsd").unwrap();
    let mut card = SimCard::new(p, CardConfig::default()).unwrap();
    card.script_challenges([hexv("0A0B0C0D0E0F")]);
    card.force_sequence_counter(None, 0x1234).unwrap();
    let (_, iu) = Hs02::new(des_keys(TEST_KEY, 0xFF), [9; 8], Scp02Options::new(0x15));
    let r = card.transmit(&iu.to_bytes());
    assert_eq!(&r[12..20], &hexv("12340A0B0C0D0E0F")[..], "counter ‖ challenge as forced");
}
