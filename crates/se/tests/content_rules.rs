//! The rules of content management one by one: load sequence and package AID, duplicates,
//! INSTALL [for make selectable], [for registry update], DELETE of keys, the built-in package.

mod common;
use common::*;
use tsm_gp::gp::{Delete, GetData, Install, InstallBody, Load, LoadFile, Privilege, Privileges, StatusFormat, StatusScope};
use tsm_se::{SD_MODULE_AID, SD_PACKAGE_AID, SimCard};

const PKG: &str = "D0D1D2D3D4D501";
const APP: &str = "D0D1D2D3D4D50101";

fn hello() -> Vec<u8> {
    let v = cap_vectors().into_iter().find(|v| v.file == "kaoh_helloworld.cap").unwrap();
    tsm_gp::cap::CapFile::parse(&v.bytes()).unwrap().load_file_data_block(true)
}

fn card() -> (SimCard, Host) {
    let mut c = scp03_card(21);
    let h = open_scp03(&mut c, aes_keys(TEST_KEY, 0xFF), 0x03);
    (c, h)
}

#[test]
fn load_sequence_and_package_aid() {
    let (mut c, mut h) = card();
    let before = c.state().clone();
    // LOAD without INSTALL [for load].
    let blocks = LoadFile::new(hello()).blocks(100).unwrap();
    assert_eq!(h.sw(&mut c, &blocks[0].to_apdu()), 0x6985);
    // Blocks out of order: 6A86 and the load is over.
    assert_eq!(h.sw(&mut c, &Install::for_load(aid(PKG), None).to_apdu()), 0x9000);
    assert_eq!(h.sw(&mut c, &blocks[0].to_apdu()), 0x9000);
    assert_eq!(h.sw(&mut c, &blocks[2].to_apdu()), 0x6A86);
    assert_eq!(h.sw(&mut c, &blocks[1].to_apdu()), 0x6985);
    // A load file whose package AID is not the one announced.
    let sws = load(&mut h, &mut c, &hexv("D0D1D2D3D4D502"), None, &[], &[], &hello(), 100);
    assert_eq!(*sws.last().unwrap(), 0x6A80);
    // Not a load file at all (no C4), and a CAP that does not parse.
    assert_eq!(h.sw(&mut c, &Install::for_load(aid(PKG), None).to_apdu()), 0x9000);
    assert_eq!(h.sw(&mut c, &Load { last: true, block: 0, data: vec![0xE2, 0x00], framing: tsm_gp::gp::Framing::GP }.to_apdu()), 0x6A80);
    let sws = load(&mut h, &mut c, &hexv(PKG), None, &[], &[], &[0x01, 0x00, 0x02, 0xAA, 0xBB], 100);
    assert_eq!(*sws.last().unwrap(), 0x6A80);
    // A hash of a length no algorithm has.
    let sws = load(&mut h, &mut c, &hexv(PKG), None, &[0; 19], &[], &hello(), 100);
    assert_eq!(sws, vec![0x6A80]);
    // An unknown associated SD.
    let sws = load(&mut h, &mut c, &hexv(PKG), Some("A0000001519999"), &[], &[], &hello(), 100);
    assert_eq!(sws, vec![0x6A88]);
    assert_eq!(c.state().load_files, before.load_files, "nothing loaded");
    // SHA-1 of the LFDB as received (README: 258d12c1…).
    let sws = load(&mut h, &mut c, &hexv(PKG), None, &hexv("258d12c1f5d76b3048dbf2135101dc83ff376905"), &[], &hello(), 100);
    assert!(sws.iter().all(|s| *s == 0x9000), "{sws:X?}");
    // The same load file again, or an instance with its AID: 6985.
    assert_eq!(load(&mut h, &mut c, &hexv(PKG), None, &[], &[], &hello(), 100), vec![0x6985]);
    assert_eq!(install(&mut h, &mut c, &hexv(PKG), &hexv(APP), &hexv(PKG), Privileges::NONE, &[0xC9, 0x00], true), 0x6985);
    // A module the load file does not have, a load file that is not there.
    assert_eq!(install(&mut h, &mut c, &hexv(PKG), &hexv("D0D1D2D3D4D50199"), &hexv(APP), Privileges::NONE, &[0xC9, 0x00], true), 0x6A88);
    assert_eq!(install(&mut h, &mut c, &hexv("D0D1D2D3D4D599"), &hexv(APP), &hexv(APP), Privileges::NONE, &[0xC9, 0x00], true), 0x6A88);
    // Malformed install parameters.
    assert_eq!(install(&mut h, &mut c, &hexv(PKG), &hexv(APP), &hexv(APP), Privileges::NONE, &[0xC9, 0x05, 0x00], true), 0x6A80);
    // SD-only privileges for an application; an SD module without the SD privilege.
    let am: Privileges = [Privilege::AuthorizedManagement].into_iter().collect();
    assert_eq!(install(&mut h, &mut c, &hexv(PKG), &hexv(APP), &hexv(APP), am, &[0xC9, 0x00], true), 0x6A80);
    assert_eq!(install(&mut h, &mut c, SD_PACKAGE_AID.as_bytes(), SD_MODULE_AID.as_bytes(), &hexv("A000000559101001"), Privileges::NONE, &[0xC9, 0x00], true), 0x6A80);
    // Installed twice.
    assert_eq!(install(&mut h, &mut c, &hexv(PKG), &hexv(APP), &hexv(APP), Privileges::NONE, &[0xC9, 0x00], true), 0x9000);
    assert_eq!(install(&mut h, &mut c, &hexv(PKG), &hexv(APP), &hexv(APP), Privileges::NONE, &[0xC9, 0x00], true), 0x6985);
    // The built-in package and the ISD cannot be deleted; an unknown AID is not found.
    assert_eq!(h.sw(&mut c, &Delete::object(SD_PACKAGE_AID, true).to_apdu()), 0x6985);
    assert_eq!(h.sw(&mut c, &Delete::object(aid(ISD), true).to_apdu()), 0x6985);
    assert_eq!(h.sw(&mut c, &Delete::object(aid("A0000001519999"), false).to_apdu()), 0x6A88);
    // An application selected on another channel cannot be deleted.
    assert_eq!(c.transmit(&hexv("0070000001")), hexv("019000"));
    assert_eq!(c.transmit(&[&hexv("01A4040008")[..], &hexv(APP)].concat()), hexv(&format!("6F0A8408{APP}9000")));
    assert_eq!(h.sw(&mut c, &Delete::object(aid(APP), false).to_apdu()), 0x6985);
    assert_eq!(c.transmit(&hexv("00708001")), hexv("9000"));
    assert_eq!(h.sw(&mut c, &Delete::object(aid(APP), false).to_apdu()), 0x9000);
}

#[test]
fn make_selectable_registry_update_and_keys() {
    let (mut c, mut h) = card();
    assert!(load(&mut h, &mut c, &hexv(PKG), None, &[], &[], &hello(), 200).iter().all(|s| *s == 0x9000));
    assert_eq!(install(&mut h, &mut c, &hexv(PKG), &hexv(APP), &hexv(APP), Privileges::NONE, &[0xC9, 0x00], false), 0x9000);
    let apps = get_status(&mut h, &mut c, StatusScope::APPLICATIONS, StatusFormat::Tagged).unwrap();
    assert_eq!(apps[0].lifecycle.value(), 0x03, "INSTALLED");
    assert_eq!(select(&mut c, APP).sw.0, 0x6A82, "not selectable yet");
    let mut h = open_scp03(&mut c, aes_keys(TEST_KEY, 0xFF), 0x03);
    assert_eq!(h.sw(&mut c, &Install::for_make_selectable(aid(APP), Privileges::NONE).to_apdu()), 0x9000);
    assert_eq!(h.sw(&mut c, &Install::for_make_selectable(aid(APP), Privileges::NONE).to_apdu()), 0x6985, "already selectable");
    // Registry update: new privileges.
    let p: Privileges = [Privilege::CardReset, Privilege::CvmManagement].into_iter().collect();
    assert_eq!(h.sw(&mut c, &Install::for_registry_update(None, Some(aid(APP)), Some(p)).to_apdu()), 0x9000);
    let apps = get_status(&mut h, &mut c, StatusScope::APPLICATIONS, StatusFormat::Tagged).unwrap();
    assert_eq!((apps[0].lifecycle.value(), apps[0].privileges), (0x07, Some(p)));
    assert_eq!(select(&mut c, APP).sw.0, 0x9000);

    // DELETE keys of the ISD by identifier and version.
    assert_eq!(select(&mut c, ISD).sw.0, 0x9000);
    let mut h = open_scp03(&mut c, aes_keys(TEST_KEY, 0xFF), 0x03);
    assert_eq!(h.sw(&mut c, &Delete::key(None, Some(0x7E)).to_apdu()), 0x6A88);
    assert_eq!(h.sw(&mut c, &Delete::key(Some(3), Some(0xFF)).to_apdu()), 0x9000);
    let ki = h.send(&mut c, &GetData::new(0xE0).to_apdu());
    assert_eq!(ki.data, hexv("E00CC00401FF8810C00402FF8810"), "keys 1 and 2 of version FF are left");
    // A token on an INSTALL from the ISD is accepted and ignored.
    let mut with_token = Install::for_load(aid("D0D1D2D3D4D5AA"), None);
    if let InstallBody::Load { token, .. } = &mut with_token.body {
        *token = vec![0x55; 8];
    }
    assert_eq!(h.sw(&mut c, &with_token.to_apdu()), 0x9000);
}
