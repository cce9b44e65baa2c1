//! ISD key management under SCP02 (3DES keys, session DEK) and SCP03 (AES keys, static DEK):
//! PUT KEY add, replace, algorithm checks; SET STATUS on a security domain and its
//! applications.

mod common;
use common::*;
use tsm_gp::crypto::SecretKey;
use tsm_gp::gp::{GetData, GetStatus, Privilege, Privileges, PutKey, PutKeyComponent, SetStatus, StatusFormat, StatusScope};
use tsm_gp::scp::StaticKeys;
use tsm_se::{SD_MODULE_AID, SD_PACKAGE_AID};

fn des(b: u8) -> SecretKey {
    SecretKey::des3(&[b; 16]).unwrap()
}

#[test]
fn scp02_put_key_add_and_replace() {
    for i in [0x15u8, 0x55] {
        let mut c = scp02_card(31, i);
        let mut h = open_scp02(&mut c, des_keys(TEST_KEY, 0xFF), i, 0x03);
        let (k1, k2, k3) = (des(0x11), des(0x22), des(0x33));
        let r = put_key_set(&mut h, &mut c, 0, 0x20, [&k1, &k2, &k3]);
        assert_eq!(r.data, [vec![0x20], k1.kcv().to_vec(), k2.kcv().to_vec(), k3.kcv().to_vec()].concat(), "i={i:02X}");
        // The factory set is gone; the new one opens the channel (P1 = 20, and P1 = 00).
        assert_eq!(try_open_scp02(&mut c, des_keys(TEST_KEY, 0xFF), i, 0x01, 0, &hexv(ISD)).err().map(|e| e.0), Some(0x6A88));
        let new = StaticKeys::new(k1.clone(), k2.clone(), k3.clone(), 0x20);
        let h = try_open_scp02(&mut c, new.clone(), i, 0x03, 0, &hexv(ISD)).unwrap();
        let any = StaticKeys { version: 0, ..new.clone() };
        assert!(try_open_scp02(&mut c, any, i, 0x01, 0, &hexv(ISD)).is_ok());
        let mut h2 = try_open_scp02(&mut c, new, i, 0x03, 0, &hexv(ISD)).unwrap();
        // Replace 20 by 21; an AES key for an SCP02 key set is refused.
        let (n1, n2, n3) = (des(0x44), des(0x55), des(0x66));
        assert_eq!(put_key_set(&mut h2, &mut c, 0x20, 0x21, [&n1, &n2, &n3]).sw.0, 0x9000);
        let ki = h2.send(&mut c, &GetData::new(0xE0).to_apdu());
        assert_eq!(ki.data, hexv("E012C00401218010C00402218010C00403218010"));
        let aes = SecretKey::aes(&[0x77; 16]).unwrap();
        assert_eq!(put_key_set(&mut h2, &mut c, 0, 0x22, [&aes, &aes, &aes]).sw.0, 0x9484);
        // Replacing a version that does not exist, adding one that does.
        assert_eq!(put_key_set(&mut h2, &mut c, 0x30, 0x31, [&n1, &n2, &n3]).sw.0, 0x6A88);
        assert_eq!(put_key_set(&mut h2, &mut c, 0, 0x21, [&n1, &n2, &n3]).sw.0, 0x6A80);
        // An unknown key type.
        let pk = PutKey::new(0, 1, 0x40, vec![PutKeyComponent { key_type: 0xA1, key_length: None, encrypted: vec![0; 16], kcv: vec![], more: vec![] }]);
        assert_eq!(h2.sw(&mut c, &pk.to_apdu()), 0x9484);
        let _ = h;
    }
}

#[test]
fn scp03_put_key_aes256_and_des_refused() {
    let mut c = scp03_card(32);
    let mut h = open_scp03(&mut c, aes_keys(TEST_KEY, 0xFF), 0x33);
    let k: Vec<SecretKey> = (0..3).map(|i| SecretKey::aes(&[0x90 + i; 32]).unwrap()).collect();
    let r = put_key_set(&mut h, &mut c, 0, 0x30, [&k[0], &k[1], &k[2]]);
    assert_eq!(r.sw.0, 0x9000);
    let mut h = open_scp03(&mut c, StaticKeys::new(k[0].clone(), k[1].clone(), k[2].clone(), 0x30), 0x33);
    assert_eq!(put_key_set(&mut h, &mut c, 0, 0x31, [&des(1), &des(2), &des(3)]).sw.0, 0x9484);
    let ki = h.send(&mut c, &GetData::new(0xE0).to_apdu());
    assert_eq!(ki.data, hexv("E012C00401308820C00402308820C00403308820"), "three AES-256 keys, version 30");
}

#[test]
fn set_status_of_a_domain_and_its_applications() {
    const SSD: &str = "A0000005591010FFFFFFFF8900000100";
    let mut c = scp03_card(33);
    let mut h = open_scp03(&mut c, aes_keys(TEST_KEY, 0xFF), 0x03);
    let am: Privileges = [Privilege::SecurityDomain, Privilege::AuthorizedManagement].into_iter().collect();
    assert_eq!(install(&mut h, &mut c, SD_PACKAGE_AID.as_bytes(), SD_MODULE_AID.as_bytes(), &hexv(SSD), am, &[0xC9, 0x00], true), 0x9000);
    assert_eq!(select(&mut c, SSD).sw.0, 0x9000);
    let mut s = open_scp03(&mut c, aes_keys(TEST_KEY, 0xFF), 0x03);
    let v = cap_vectors().into_iter().find(|v| v.file == "gppro_Empty_0102030405_8d5ac9e2_2.2.1.cap").unwrap();
    let lfdb = tsm_gp::cap::CapFile::parse(&v.bytes()).unwrap().load_file_data_block(false);
    assert!(load(&mut s, &mut c, &v.package, None, &v.variants[0].2, &[], &lfdb, 200).iter().all(|x| *x == 0x9000));
    assert_eq!(install(&mut s, &mut c, &v.package, &v.applet, &v.applet, Privileges::NONE, &[0xC9, 0x00], true), 0x9000);
    // The SSD becomes PERSONALIZED by itself.
    assert_eq!(s.sw(&mut c, &SetStatus::application(aid(SSD), 0x0F).to_apdu()), 0x9000);
    // The ISD locks the SSD and its applications at once (P1 = 60), then unlocks them.
    assert_eq!(select(&mut c, ISD).sw.0, 0x9000);
    let mut h = open_scp03(&mut c, aes_keys(TEST_KEY, 0xFF), 0x03);
    assert_eq!(h.sw(&mut c, &SetStatus::security_domain_and_applications(aid(SSD), 0x80).to_apdu()), 0x9000);
    let apps = get_status(&mut h, &mut c, StatusScope::APPLICATIONS, StatusFormat::Tagged).unwrap();
    let states: Vec<(String, u8)> = apps.iter().map(|e| (e.aid.to_string(), e.lifecycle.value())).collect();
    assert_eq!(states, vec![(SSD.to_string(), 0x8F), (tsm_gp::hex::encode(&v.applet), 0x87)]);
    assert_eq!(select(&mut c, SSD).sw.0, 0x6999);
    assert_eq!(select(&mut c, &tsm_gp::hex::encode(&v.applet)).sw.0, 0x6999);
    let mut h = open_scp03(&mut c, aes_keys(TEST_KEY, 0xFF), 0x03);
    assert_eq!(h.sw(&mut c, &SetStatus::security_domain_and_applications(aid(SSD), 0x00).to_apdu()), 0x9000);
    let apps = get_status(&mut h, &mut c, StatusScope::APPLICATIONS, StatusFormat::Legacy).unwrap();
    assert_eq!(apps.iter().map(|e| e.lifecycle.value()).collect::<Vec<_>>(), vec![0x0F, 0x07]);
    // P1 = 60 names a security domain; the ISD's own state is the card's (P1 = 80).
    assert_eq!(h.sw(&mut c, &SetStatus::security_domain_and_applications(aid(&tsm_gp::hex::encode(&v.applet)), 0x80).to_apdu()), 0x6A80);
    assert_eq!(h.sw(&mut c, &SetStatus::application(aid(ISD), 0x80).to_apdu()), 0x6985);
    assert_eq!(h.sw(&mut c, &GetStatus::new(StatusScope::ISD).to_apdu()), 0x9000);
}
