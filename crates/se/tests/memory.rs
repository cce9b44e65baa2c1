//! Memory accounting: the carrier's total (profile.memory), per-SD quotas (`C8`), instance
//! costs; `6A84` like a real card and nothing changed; GET DATA FF21 reports what is free.

mod common;
use common::*;
use tsm_gp::gp::data::{ExtendedCardResources, GpDataObject};
use tsm_gp::gp::install::{SdInstallParams, SystemParams};
use tsm_gp::gp::{GetData, InstallParams, Privilege, Privileges, StatusFormat, StatusScope};
use tsm_gp::profile::CardProfile;
use tsm_gp::scp::Scp;
use tsm_se::{CardConfig, SD_MODULE_AID, SD_PACKAGE_AID, SimCard};

fn lfdb(file: &str) -> (Vec<u8>, Vec<u8>, Vec<u8>, usize) {
    let v = cap_vectors().into_iter().find(|v| v.file == file).unwrap();
    let b = tsm_gp::cap::CapFile::parse(&v.bytes()).unwrap().load_file_data_block(false);
    assert_eq!(b.len(), v.variants[0].0);
    let n = b.len();
    (b, v.package, v.applet, n)
}

fn resources(h: &mut Host, card: &mut SimCard) -> ExtendedCardResources {
    let r = h.send(card, &GetData::new(0xFF21).to_apdu());
    match GpDataObject::parse(&r.data).unwrap() {
        GpDataObject::ExtendedCardResources(e) => e,
        o => panic!("{o:?}"),
    }
}

fn small_card(memory: u32) -> SimCard {
    let mut p = CardProfile::builtin("uicc").unwrap();
    p.memory = memory;
    let cfg = CardConfig { instance_cost: 500, ..CardConfig::default().seeded(1).with_scp(Scp::Scp03 { i: 0x70 }) };
    SimCard::new(p, cfg).unwrap()
}

fn isd(card: &mut SimCard) -> Host {
    assert_eq!(select(card, ISD).sw.0, 0x9000);
    open_scp03(card, aes_keys(TEST_KEY, 0xFF), 0x03)
}

#[test]
fn card_total_exhausted() {
    let (hello, hello_pkg, hello_app, hello_len) = lfdb("kaoh_helloworld.cap");
    let (ndef, ndef_pkg, _, ndef_len) = lfdb("openjavacard-ndef-full-plain.cap");
    let total = (hello_len + 500 + 1000) as u32;
    let mut card = small_card(total);
    let mut h = isd(&mut card);
    assert_eq!(resources(&mut h, &mut card).free_non_volatile_memory, total);
    assert!(load(&mut h, &mut card, &hello_pkg, None, &[], &[], &hello, 200).iter().all(|s| *s == 0x9000));
    let after_load = resources(&mut h, &mut card);
    assert_eq!(after_load.free_non_volatile_memory, total - hello_len as u32, "the LFDB size is charged");
    assert_eq!(install(&mut h, &mut card, &hello_pkg, &hello_app, &hello_app, Privileges::NONE, &[0xC9, 0x00], true), 0x9000);
    let after_install = resources(&mut h, &mut card);
    assert_eq!(after_install.free_non_volatile_memory, 1000);
    assert_eq!(after_install.installed_applications, 1);

    // The NDEF package (1762 bytes) does not fit: 6A84 during LOAD, nothing registered.
    let before = card.state().clone();
    let sws = load(&mut h, &mut card, &ndef_pkg, None, &[], &[], &ndef, 200);
    assert_eq!(*sws.last().unwrap(), 0x6A84, "{sws:X?}");
    assert!(ndef_len > 1000);
    assert_eq!(card.state(), &before, "nothing changed");
    assert_eq!(resources(&mut h, &mut card), after_install);
    // The load is over: a further LOAD block is out of sequence.
    assert_eq!(h.sw(&mut card, &tsm_gp::gp::Load { last: true, block: 5, data: vec![0; 10], framing: tsm_gp::gp::Framing::GP }.to_apdu()), 0x6985);
    // C6 (non-volatile code minimum) is checked at INSTALL [for load] already.
    let params = InstallParams::default().with_system(&SystemParams::new().nv_code_min(5000));
    let sws = load(&mut h, &mut card, &ndef_pkg, None, &[], params.as_bytes(), &ndef, 200);
    assert_eq!(sws, vec![0x6A84]);
    // An instance whose C8 quota exceeds what is free: 6A84.
    let big = InstallParams::application_specific(&[]).with_system(&SystemParams::new().nv_quota(1001));
    assert_eq!(install(&mut h, &mut card, &hello_pkg, &hello_app, &hexv("D0D1D2D3D4D50102"), Privileges::NONE, big.as_bytes(), true), 0x6A84);
    let fits = InstallParams::application_specific(&[]).with_system(&SystemParams::new().nv_quota(1000));
    assert_eq!(install(&mut h, &mut card, &hello_pkg, &hello_app, &hexv("D0D1D2D3D4D50102"), Privileges::NONE, fits.as_bytes(), true), 0x9000);
    assert_eq!(resources(&mut h, &mut card).free_non_volatile_memory, 0);
    // Volatile quota (C7) against the card's RAM.
    let ram = InstallParams::application_specific(&[]).with_system(&SystemParams::new().volatile_quota(100_000));
    let mut h2 = isd(&mut card);
    assert_eq!(h2.sw(&mut card, &tsm_gp::gp::Delete::object(aid("D0D1D2D3D4D50102"), false).to_apdu()), 0x9000);
    assert_eq!(install(&mut h2, &mut card, &hello_pkg, &hello_app, &hexv("D0D1D2D3D4D50103"), Privileges::NONE, ram.as_bytes(), true), 0x6A84);
    let _ = h;
}

#[test]
fn sd_quota_exhausted() {
    let (hello, hello_pkg, hello_app, hello_len) = lfdb("kaoh_helloworld.cap");
    let mut card = small_card(256 * 1024);
    let mut h = isd(&mut card);
    const SSD: &str = "A0000005591010FFFFFFFF8900000100";
    let quota = (hello_len + 200) as u32;
    let sdp = SdInstallParams { scp: vec![(0x03, 0x70)], ..Default::default() };
    let params = InstallParams::application_specific(&sdp.to_value()).with_system(&SystemParams::new().nv_quota(quota));
    let am: Privileges = [Privilege::SecurityDomain, Privilege::AuthorizedManagement].into_iter().collect();
    assert_eq!(install(&mut h, &mut card, SD_PACKAGE_AID.as_bytes(), SD_MODULE_AID.as_bytes(), &hexv(SSD), am, params.as_bytes(), true), 0x9000);
    assert_eq!(select(&mut card, SSD).sw.0, 0x9000);
    let mut s = open_scp03(&mut card, aes_keys(TEST_KEY, 0xFF), 0x03);
    assert_eq!(resources(&mut s, &mut card).free_non_volatile_memory, quota, "FF21 through the SSD shows its quota");
    assert!(load(&mut s, &mut card, &hello_pkg, None, &[], &[], &hello, 200).iter().all(|x| *x == 0x9000));
    assert_eq!(resources(&mut s, &mut card).free_non_volatile_memory, 200);
    let before = card.state().clone();
    // Default instance cost (500) is over the 200 left in the quota, though the card has room.
    assert_eq!(install(&mut s, &mut card, &hello_pkg, &hello_app, &hello_app, Privileges::NONE, &[0xC9, 0x00], true), 0x6A84);
    assert_eq!(card.state(), &before);
    let small = InstallParams::application_specific(&[]).with_system(&SystemParams::new().nv_quota(200));
    assert_eq!(install(&mut s, &mut card, &hello_pkg, &hello_app, &hello_app, Privileges::NONE, small.as_bytes(), true), 0x9000);
    // The ISD cannot load into the full SSD either.
    let mut h = isd(&mut card);
    let (tiny, tiny_pkg, _, _) = lfdb("gppro_Empty_0102030405_8d5ac9e2_2.2.1.cap");
    let sws = load(&mut h, &mut card, &tiny_pkg, Some(SSD), &[], &[], &tiny, 200);
    assert_eq!(*sws.last().unwrap(), 0x6A84);
    let elfs = get_status(&mut h, &mut card, StatusScope::LOAD_FILES, StatusFormat::Tagged).unwrap();
    assert_eq!(elfs.len(), 2, "built-in SD package and helloworld only");
}
