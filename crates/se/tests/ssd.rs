//! Supplementary security domains: creation by the ISD, their own keys (PUT KEY add and
//! replace, STORE DATA key DGIs), their own secure channel, content management with
//! Authorized Management, and the privilege rules.

mod common;
use common::*;
use tsm_gp::crypto::SecretKey;
use tsm_gp::gp::install::{SdInstallParams, SystemParams};
use tsm_gp::gp::store_data::{KeyAttributes, KeyCheck, KeyLoad, StoreData};
use tsm_gp::gp::{
    Aid, Delete, GetData, Install, InstallParams, Privilege, Privileges, SetStatus, StatusFormat, StatusScope,
};
use tsm_gp::gp::data::{GpDataObject, KeyInformation};
use tsm_gp::gp::lifecycle::CardLifeCycle;
use tsm_gp::scp::StaticKeys;
use tsm_se::{SD_MODULE_AID, SD_PACKAGE_AID, SimCard};

const SSD: &str = "A0000005591010FFFFFFFF8900000100";
const SSD2: &str = "A0000005591010FFFFFFFF8900000200";
const HELLO_PKG: &str = "D0D1D2D3D4D501";
const HELLO_APP: &str = "D0D1D2D3D4D50101";

fn isd(card: &mut SimCard) -> Host {
    assert_eq!(select(card, ISD).sw.0, 0x9000);
    open_scp03(card, aes_keys(TEST_KEY, 0xFF), 0x33)
}

fn ssd_params(quota: Option<u32>) -> Vec<u8> {
    let sd = SdInstallParams { scp: vec![(0x03, 0x70)], ..Default::default() };
    let mut p = InstallParams::application_specific(&sd.to_value());
    if let Some(q) = quota {
        p = p.with_system(&SystemParams::new().nv_quota(q));
    }
    p.0
}

fn create_ssd(card: &mut SimCard, h: &mut Host, aid_hex: &str, privileges: Privileges, quota: Option<u32>) -> u16 {
    install(h, card, SD_PACKAGE_AID.as_bytes(), SD_MODULE_AID.as_bytes(), &hexv(aid_hex), privileges, &ssd_params(quota), true)
}

fn am() -> Privileges {
    [Privilege::SecurityDomain, Privilege::AuthorizedManagement].into_iter().collect()
}

fn new_keys(seed: u8) -> [SecretKey; 3] {
    [1u8, 2, 3].map(|i| SecretKey::aes(&[seed.wrapping_mul(i).wrapping_add(i); 16]).unwrap())
}

fn static_of(k: &[SecretKey; 3], v: u8) -> StaticKeys {
    StaticKeys::new(k[0].clone(), k[1].clone(), k[2].clone(), v)
}

fn open_ssd(card: &mut SimCard, keys: StaticKeys) -> Result<Host, (u16, Option<tsm_gp::scp::ScpError>)> {
    assert_eq!(select(card, SSD).sw.0, 0x9000);
    try_open_scp03(card, keys, 0x33, 0, &[0x33; 8])
}

fn helloworld() -> Vec<u8> {
    let v = cap_vectors().into_iter().find(|v| v.file == "kaoh_helloworld.cap").unwrap();
    tsm_gp::cap::CapFile::parse(&v.bytes()).unwrap().load_file_data_block(true)
}

#[test]
fn ssd_keys_rotation_and_own_content() {
    let mut card = scp03_card(7);
    let mut h = isd(&mut card);
    assert_eq!(create_ssd(&mut card, &mut h, SSD, am(), None), 0x9000);
    let apps = get_status(&mut h, &mut card, StatusScope::APPLICATIONS, StatusFormat::Tagged).unwrap();
    assert_eq!(apps.len(), 1);
    assert_eq!(apps[0].privileges, Some(am()));
    assert_eq!(apps[0].lifecycle.value(), 0x07);
    assert_eq!(apps[0].elf_aid, Some(SD_PACKAGE_AID));

    // A fresh SSD holds the initial key (GP test key, version FF).
    let mut s = open_ssd(&mut card, aes_keys(TEST_KEY, 0xFF)).unwrap();
    let k1 = new_keys(1);
    let r = put_key_set(&mut s, &mut card, 0, 0x30, [&k1[0], &k1[1], &k1[2]]);
    let expected: Vec<u8> = [vec![0x30], k1[0].kcv().to_vec(), k1[1].kcv().to_vec(), k1[2].kcv().to_vec()].concat();
    assert_eq!((r.sw.0, r.data), (0x9000, expected), "PUT KEY answers KVN ‖ KCVs");
    let ki = s.send(&mut card, &GetData::new(0xE0).to_apdu());
    let GpDataObject::KeyInformation(KeyInformation { keys }) = GpDataObject::parse(&ki.data).unwrap() else { panic!() };
    assert_eq!(keys.iter().map(|k| (k.version, k.id)).collect::<Vec<_>>(), vec![(0x30, 1), (0x30, 2), (0x30, 3)], "initial set retired");

    // The initial keys and the ISD keys no longer open the SSD; the new ones do.
    assert_eq!(open_ssd(&mut card, aes_keys(TEST_KEY, 0xFF)).err().map(|e| e.0), Some(0x6A88));
    let isd_keys_any = aes_keys(TEST_KEY, 0x00);
    let e = open_ssd(&mut card, isd_keys_any).err().unwrap();
    assert!(matches!(e.1, Some(tsm_gp::scp::ScpError::CardCryptogram { .. })), "{e:?}");
    let mut s = open_ssd(&mut card, static_of(&k1, 0x30)).unwrap();

    // Rotate: replace version 30 by 31.
    let k2 = new_keys(9);
    let r = put_key_set(&mut s, &mut card, 0x30, 0x31, [&k2[0], &k2[1], &k2[2]]);
    assert_eq!(r.sw.0, 0x9000);
    assert_eq!(open_ssd(&mut card, static_of(&k1, 0x30)).err().map(|e| e.0), Some(0x6A88));
    let mut s = open_ssd(&mut card, static_of(&k2, 0x31)).unwrap();

    // A wrong KCV is refused and changes nothing.
    let bad = SecretKey::aes(&[0x77; 16]).unwrap();
    let mut pk = tsm_gp::gp::PutKey::new(0, 1, 0x40, vec![tsm_gp::gp::PutKeyComponent::aes(16, s.chan.encrypt_sensitive(bad.expose()).unwrap(), vec![0, 0, 0])]);
    pk.multiple = false;
    assert_eq!(s.sw(&mut card, &pk.to_apdu()), 0x9485);

    // The SSD manages its own content with its own keys: load, install, list, delete.
    let lfdb = helloworld();
    let sws = load(&mut s, &mut card, &hexv(HELLO_PKG), None, &[], &[], &lfdb, 200);
    assert!(sws.iter().all(|x| *x == 0x9000), "{sws:X?}");
    assert_eq!(install(&mut s, &mut card, &hexv(HELLO_PKG), &hexv(HELLO_APP), &hexv(HELLO_APP), Privileges::NONE, &[0xC9, 0x00], true), 0x9000);
    let elfs = get_status(&mut s, &mut card, StatusScope::LOAD_FILES, StatusFormat::Tagged).unwrap();
    assert_eq!(elfs.iter().map(|e| e.aid.to_string()).collect::<Vec<_>>(), vec![HELLO_PKG], "the SSD sees only its own load files");
    let apps = get_status(&mut s, &mut card, StatusScope::APPLICATIONS, StatusFormat::Tagged).unwrap();
    let app = apps.iter().find(|e| e.aid.to_string() == HELLO_APP).unwrap();
    assert_eq!(app.associated_sd.map(|a| a.to_string()), Some(SSD.to_string()));
    // It may not grant card-wide privileges, nor touch the card life cycle.
    let lockp: Privileges = [Privilege::CardLock].into_iter().collect();
    assert_eq!(install(&mut s, &mut card, &hexv(HELLO_PKG), &hexv(HELLO_APP), &hexv("D0D1D2D3D4D50102"), lockp, &[0xC9, 0x00], true), 0x6985);
    assert_eq!(s.sw(&mut card, &SetStatus::card(CardLifeCycle::CARD_LOCKED).to_apdu()), 0x6985);
    assert_eq!(s.sw(&mut card, &Delete::object(Aid::new(&hexv(HELLO_PKG)).unwrap(), true).to_apdu()), 0x9000);
    // Nor delete what is not its own, nor the ISD.
    assert_eq!(s.sw(&mut card, &Delete::object(SD_PACKAGE_AID, false).to_apdu()), 0x6985);
    assert_eq!(s.sw(&mut card, &Delete::object(aid(ISD), false).to_apdu()), 0x6985);

    // GET DATA C1 shows the SSD's own counter, CF its KDD.
    let seq = s.send(&mut card, &GetData::new(0xC1).to_apdu());
    assert_eq!(GpDataObject::parse(&seq.data).unwrap().sequence_counter(), Some(4), "one per INITIALIZE UPDATE the SSD answered (four; the 6A88 ones do not count)");
}

#[test]
fn ssd_without_authorized_management_cannot_install() {
    let mut card = scp03_card(8);
    let mut h = isd(&mut card);
    let plain_sd: Privileges = [Privilege::SecurityDomain].into_iter().collect();
    assert_eq!(create_ssd(&mut card, &mut h, SSD, plain_sd, None), 0x9000);
    let lfdb = helloworld();
    // The ISD loads a package for it; the SSD may not install from it nor load its own.
    let sws = load(&mut h, &mut card, &hexv(HELLO_PKG), Some(SSD), &[], &[], &lfdb, 200);
    assert!(sws.iter().all(|x| *x == 0x9000));
    let mut s = open_ssd(&mut card, aes_keys(TEST_KEY, 0xFF)).unwrap();
    assert_eq!(install(&mut s, &mut card, &hexv(HELLO_PKG), &hexv(HELLO_APP), &hexv(HELLO_APP), Privileges::NONE, &[0xC9, 0x00], true), 0x6985);
    let inst = Install::for_load(Aid::new(&hexv("D0D1D2D3D4D5FF")).unwrap(), None);
    assert_eq!(s.sw(&mut card, &inst.to_apdu()), 0x6985);
    // Delegated management needs tokens, which this card does not verify: refused.
    let dm: Privileges = [Privilege::SecurityDomain, Privilege::DelegatedManagement].into_iter().collect();
    let mut h = isd(&mut card);
    assert_eq!(create_ssd(&mut card, &mut h, SSD2, dm, None), 0x9000);
    assert_eq!(select(&mut card, SSD2).sw.0, 0x9000);
    let mut d = try_open_scp03(&mut card, aes_keys(TEST_KEY, 0xFF), 0x03, 0, &[1; 8]).unwrap();
    let mut with_token = Install::for_load(Aid::new(&hexv("D0D1D2D3D4D5FE")).unwrap(), None);
    if let tsm_gp::gp::InstallBody::Load { token, .. } = &mut with_token.body {
        *token = vec![0xAA; 16];
    }
    assert_eq!(d.sw(&mut card, &with_token.to_apdu()), 0x6985);
}

#[test]
fn ssd_keys_by_store_data_dgis_and_extradition() {
    let mut card = scp03_card(9);
    let mut h = isd(&mut card);
    assert_eq!(create_ssd(&mut card, &mut h, SSD, am(), None), 0x9000);
    // STORE DATA 00B9 + 8113 on the SSD's own channel (kaoh layout), version 01.
    let mut s = open_ssd(&mut card, aes_keys(TEST_KEY, 0xFF)).unwrap();
    let k = new_keys(3);
    let load_keys = KeyLoad {
        attributes: KeyAttributes {
            key_type: 0x88,
            key_length: 16,
            version: 0x01,
            usage: None,
            access: Some(0x01),
            purpose: Some(vec![0x00, 0x03]),
            other: vec![],
            keys: (0..3).map(|i| KeyCheck { id: i as u8 + 1, kcv: k[i].kcv().to_vec() }).collect(),
        },
        encrypted_keys: k.iter().map(|x| s.chan.encrypt_sensitive(x.expose()).unwrap()).collect(),
    };
    let sd = StoreData::dgis(0, true, &load_keys.to_dgis());
    assert_eq!(s.sw(&mut card, &sd.to_apdu()), 0x9000);
    assert_eq!(open_ssd(&mut card, aes_keys(TEST_KEY, 0xFF)).err().map(|e| e.0), Some(0x6A88), "initial keys retired");
    let mut s = open_ssd(&mut card, static_of(&k, 0x01)).unwrap();
    // A KCV that does not match is refused.
    let mut bad = load_keys.clone();
    bad.attributes.version = 0x02;
    bad.attributes.keys[0].kcv = vec![1, 2, 3];
    bad.encrypted_keys = k.iter().map(|x| s.chan.encrypt_sensitive(x.expose()).unwrap()).collect();
    assert_eq!(s.sw(&mut card, &StoreData::dgis(0, true, &bad.to_dgis()).to_apdu()), 0x9485);

    // Extradition: the ISD moves an application of its own under the SSD.
    let mut h = isd(&mut card);
    let lfdb = helloworld();
    assert!(load(&mut h, &mut card, &hexv(HELLO_PKG), None, &[], &[], &lfdb, 200).iter().all(|x| *x == 0x9000));
    assert_eq!(install(&mut h, &mut card, &hexv(HELLO_PKG), &hexv(HELLO_APP), &hexv(HELLO_APP), Privileges::NONE, &[0xC9, 0x00], true), 0x9000);
    let ex = Install::for_extradition(aid(SSD), aid(HELLO_APP));
    assert_eq!(h.sw(&mut card, &ex.to_apdu()), 0x9000);
    let apps = get_status(&mut h, &mut card, StatusScope::APPLICATIONS, StatusFormat::Tagged).unwrap();
    let app = apps.iter().find(|e| e.aid.to_string() == HELLO_APP).unwrap();
    assert_eq!(app.associated_sd, Some(aid(SSD)));
    // Now the SSD manages it: it can lock it, the ISD too.
    let mut s = open_ssd(&mut card, static_of(&k, 0x01)).unwrap();
    assert_eq!(s.sw(&mut card, &SetStatus::application(aid(HELLO_APP), 0x80).to_apdu()), 0x9000);
    assert_eq!(s.sw(&mut card, &SetStatus::application(aid(HELLO_APP), 0x00).to_apdu()), 0x9000);
    // An SSD cannot be deleted while it has content.
    let mut h = isd(&mut card);
    assert_eq!(h.sw(&mut card, &Delete::object(aid(SSD), false).to_apdu()), 0x6985);
    assert_eq!(h.sw(&mut card, &Delete::object(aid(HELLO_APP), false).to_apdu()), 0x9000);
    assert_eq!(h.sw(&mut card, &Delete::object(aid(SSD), false).to_apdu()), 0x9000);
    assert_eq!(select(&mut card, SSD).sw.0, 0x6A82);
}
