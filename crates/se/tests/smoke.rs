mod common;
use common::*;

#[test]
fn isd_handshakes() {
    let mut c = scp03_card(1);
    assert_eq!(sw(&select(&mut c, ISD)), 0x9000);
    let mut h = open_scp03(&mut c, aes_keys(TEST_KEY, 0xFF), 0x33);
    let r = h.send(&mut c, &tsm_gp::gp::GetStatus::new(tsm_gp::gp::StatusScope::ISD).to_apdu());
    assert_eq!(r.sw.0, 0x9000, "{r:?}");
    let mut c = scp02_card(1, 0x55);
    assert_eq!(sw(&select(&mut c, ISD)), 0x9000);
    let mut h = open_scp02(&mut c, des_keys(TEST_KEY, 0xFF), 0x55, 0x03);
    let r = h.send(&mut c, &tsm_gp::gp::GetStatus::new(tsm_gp::gp::StatusScope::ISD).to_apdu());
    assert_eq!(r.sw.0, 0x9000, "{r:?}");
}
