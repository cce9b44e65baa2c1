//! Every CAP of testdata/vectors/cap through the whole content life cycle on the card, under
//! SCP03 level 33 and SCP02 level 03: INSTALL [for load] with the README's load file hash,
//! LOAD in blocks, INSTALL [for install and make selectable], SELECT, personalization by
//! STORE DATA and read back with GET DATA, DELETE with related objects; GET STATUS before and
//! after in both formats. AIDs, sizes and hashes come from the README table, not from our
//! parser.

mod common;
use common::*;
use tsm_gp::gp::store_data::{DataStructure, StoreData};
use tsm_gp::gp::{Aid, Delete, Install, LifeCycle, Privileges, RegistryEntry, StatusFormat, StatusScope};
use tsm_gp::tlv::Dgi;
use tsm_gp::{CommandApdu, StatusWord};
use tsm_se::{SD_PACKAGE_AID, SimCard};

const FORMATS: [StatusFormat; 2] = [StatusFormat::Tagged, StatusFormat::Legacy];

fn aids(v: &[RegistryEntry]) -> Vec<Vec<u8>> {
    v.iter().map(|e| e.aid.to_vec()).collect()
}

/// The whole life cycle of one CAP on one card. `reopen` selects the ISD and opens a channel.
fn run(card: &mut SimCard, reopen: &mut dyn FnMut(&mut SimCard) -> Host, v: &CapVector, variant: usize, hash_sha1: bool) {
    let name = &v.file;
    let cap = tsm_gp::cap::CapFile::parse(&v.bytes()).unwrap();
    let lfdb = cap.load_file_data_block(variant == 1);
    let (size, sha1, sha256) = &v.variants[variant];
    assert_eq!(lfdb.len(), *size, "{name}: LFDB size per README");
    let mut h = reopen(card);

    // Before: only the built-in SD package; no application.
    for f in FORMATS {
        let elfs = get_status(&mut h, card, StatusScope::LOAD_FILES, f).unwrap();
        assert_eq!(aids(&elfs), vec![SD_PACKAGE_AID.to_vec()], "{name} {f:?}");
        assert_eq!(get_status(&mut h, card, StatusScope::APPLICATIONS, f), Err(0x6A88), "{name} {f:?}");
    }

    // A wrong hash is refused on the last block and nothing is loaded.
    let mut bad = sha256.clone();
    bad[0] ^= 1;
    let sws = load(&mut h, card, &v.package, None, &bad, &[], &lfdb, 180);
    assert_eq!(*sws.last().unwrap(), 0x6A80, "{name}: wrong hash");
    assert_eq!(get_status(&mut h, card, StatusScope::LOAD_FILES, StatusFormat::Tagged).unwrap().len(), 1);

    // Load with the README hash (SHA-256; SHA-1 in content_rules.rs), blocks small enough for
    // C-DEC + MAC.
    let hash = if hash_sha1 { sha1 } else { sha256 };
    let sws = load(&mut h, card, &v.package, Some(ISD), hash, &[], &lfdb, 180);
    assert!(sws.iter().all(|s| *s == 0x9000), "{name}: {sws:X?}");
    let tlv_len = 1 + if lfdb.len() < 128 { 1 } else if lfdb.len() < 256 { 2 } else { 3 } + lfdb.len();
    assert_eq!(sws.len(), 1 + tlv_len.div_ceil(180), "{name}: one INSTALL and one LOAD per block");

    for f in FORMATS {
        let elfs = get_status(&mut h, card, StatusScope::LOAD_FILES_AND_MODULES, f).unwrap();
        let e = elfs.iter().find(|e| e.aid.as_bytes() == v.package.as_slice()).unwrap_or_else(|| panic!("{name}: ELF listed"));
        assert_eq!(e.lifecycle, LifeCycle::LoadFile(tsm_gp::gp::ElfLifeCycle::LOADED));
        assert_eq!(aids_of(&e.modules), vec![v.applet.clone()], "{name} {f:?}: module = README applet AID");
        if f == StatusFormat::Tagged {
            assert_eq!(e.associated_sd.map(|a| a.to_string()), Some(ISD.to_string()));
        }
    }

    // Install and make selectable, instance AID = applet AID.
    let sw = install(&mut h, card, &v.package, &v.applet, &v.applet, Privileges::NONE, &[0xC9, 0x00], true);
    assert_eq!(sw, 0x9000, "{name}: install");
    for f in FORMATS {
        let apps = get_status(&mut h, card, StatusScope::APPLICATIONS, f).unwrap();
        assert_eq!(aids(&apps), vec![v.applet.clone()], "{name} {f:?}");
        assert_eq!(apps[0].lifecycle.value(), 0x07, "SELECTABLE");
    }

    // Personalization through the ISD: DGIs and a TLV.
    let app = Aid::new(&v.applet).unwrap();
    assert_eq!(h.sw(card, &Install::for_personalization(app).to_apdu()), 0x9000);
    let dgis = [Dgi { id: 0x0101, value: vec![1, 2, 3] }, Dgi { id: 0x0102, value: b"tsm".to_vec() }];
    assert_eq!(h.sw(card, &StoreData::dgis(0, false, &dgis).to_apdu()), 0x9000);
    let more = [Dgi { id: 0x0101, value: vec![4, 5] }];
    assert_eq!(h.sw(card, &StoreData::dgis(1, false, &more).to_apdu()), 0x9000);
    let tlv = StoreData::new(2, true, DataStructure::BerTlv, hexv("5F2003414243"));
    assert_eq!(h.sw(card, &tlv.to_apdu()), 0x9000);
    // After the last block the personalization target is gone: STORE DATA goes to the ISD.
    drop(h);

    // SELECT (ends the ISD session), GET DATA round trip.
    let r = select(card, &hex_of(&v.applet));
    assert_eq!(r.sw, StatusWord::SUCCESS, "{name}: SELECT");
    assert_eq!(r.data, [&[0x6F, (v.applet.len() + 2) as u8, 0x84, v.applet.len() as u8][..], &v.applet].concat());
    let get = |card: &mut SimCard, p1: u8, p2: u8| send_raw(card, &CommandApdu::new(0x80, 0xCA, p1, p2).with_le(256));
    let r = get(card, 0x01, 0x01);
    assert_eq!((r.sw.0, r.data), (0x9000, vec![1, 2, 3, 4, 5]), "{name}: DGI 0101 concatenated");
    assert_eq!(get(card, 0x01, 0x02).data, b"tsm".to_vec());
    let r = get(card, 0x5F, 0x20);
    assert_eq!((r.sw.0, r.data), (0x9000, hexv("5F2003414243")), "{name}: TLV 5F20");
    assert_eq!(get(card, 0x01, 0x03).sw.0, 0x6A88);
    assert_eq!(send_raw(card, &CommandApdu::new(0x80, 0x10, 0, 0)).sw.0, 0x6D00);

    // Back to the ISD: DELETE without related objects is refused, with them it works.
    let mut h = reopen(card);
    let pkg = Aid::new(&v.package).unwrap();
    assert_eq!(h.sw(card, &Delete::object(pkg, false).to_apdu()), 0x6985, "{name}: ELF with an instance");
    let r = h.send(card, &Delete::object(pkg, true).to_apdu());
    assert_eq!((r.sw.0, r.data), (0x9000, vec![0x00]), "{name}: DELETE related");
    for f in FORMATS {
        assert_eq!(aids(&get_status(&mut h, card, StatusScope::LOAD_FILES, f).unwrap()), vec![SD_PACKAGE_AID.to_vec()]);
        assert_eq!(get_status(&mut h, card, StatusScope::APPLICATIONS, f), Err(0x6A88));
    }
    assert_eq!(select(card, &hex_of(&v.applet)).sw.0, 0x6A82, "{name}: gone");
}

fn aids_of(v: &[Aid]) -> Vec<Vec<u8>> {
    v.iter().map(Aid::to_vec).collect()
}

fn hex_of(b: &[u8]) -> String {
    tsm_gp::hex::encode(b)
}

#[test]
fn every_cap_under_scp03_level_33() {
    for (n, v) in cap_vectors().iter().enumerate() {
        let mut card = scp03_card(n as u64);
        let mut reopen = |c: &mut SimCard| {
            assert_eq!(select(c, ISD).sw.0, 0x9000);
            open_scp03(c, aes_keys(TEST_KEY, 0xFF), 0x33)
        };
        run(&mut card, &mut reopen, v, n % 2, false);
        assert_eq!(card.state().nv_used(), 0, "{}: all memory back", v.file);
    }
}

#[test]
fn every_cap_under_scp02_level_03() {
    for (n, v) in cap_vectors().iter().enumerate() {
        let i = if n % 2 == 0 { 0x55 } else { 0x15 };
        let mut card = scp02_card(100 + n as u64, i);
        let mut reopen = |c: &mut SimCard| {
            assert_eq!(select(c, ISD).sw.0, 0x9000);
            open_scp02(c, des_keys(TEST_KEY, 0xFF), i, 0x03)
        };
        run(&mut card, &mut reopen, v, (n + 1) % 2, false);
        assert_eq!(card.state().nv_used(), 0);
    }
}
