//! The failure behaviour of a real card: life cycles (application lock, card lock,
//! termination), EXTERNAL AUTHENTICATE lockout persisted across save/load, reset and power
//! drop the secure channel, a bad C-MAC closes it, no secure channel → 6982.

mod common;
use common::*;
use tsm_gp::crypto::SecretKey;
use tsm_gp::gp::lifecycle::CardLifeCycle;
use tsm_gp::gp::{GetData, GetStatus, Privileges, SetStatus, StatusFormat, StatusScope};
use tsm_gp::profile::CardProfile;
use tsm_gp::scp::scp03::{Expect, HostHandshake};
use tsm_gp::scp::{ChannelOptions, SecurityLevel};
use tsm_gp::{CommandApdu, StatusWord};
use tsm_se::{CardConfig, CardDevice, SimCard};

const PKG: &str = "D0D1D2D3D4D501";
const APP: &str = "D0D1D2D3D4D50101";

fn isd(card: &mut SimCard) -> Host {
    assert_eq!(select(card, ISD).sw.0, 0x9000);
    open_scp03(card, aes_keys(TEST_KEY, 0xFF), 0x03)
}

fn with_app(seed: u64) -> SimCard {
    let mut card = scp03_card(seed);
    let mut h = isd(&mut card);
    let v = cap_vectors().into_iter().find(|v| v.file == "kaoh_helloworld.cap").unwrap();
    let lfdb = tsm_gp::cap::CapFile::parse(&v.bytes()).unwrap().load_file_data_block(false);
    assert!(load(&mut h, &mut card, &hexv(PKG), None, &v.variants[0].2, &[], &lfdb, 200).iter().all(|s| *s == 0x9000));
    assert_eq!(install(&mut h, &mut card, &hexv(PKG), &hexv(APP), &hexv(APP), Privileges::NONE, &[0xC9, 0x00], true), 0x9000);
    card
}

#[test]
fn application_lock_and_unlock() {
    let mut card = with_app(1);
    let mut h = isd(&mut card);
    assert_eq!(h.sw(&mut card, &SetStatus::application(aid(APP), 0x80).to_apdu()), 0x9000);
    assert_eq!(h.sw(&mut card, &SetStatus::application(aid(APP), 0x80).to_apdu()), 0x6985, "already locked");
    let apps = get_status(&mut h, &mut card, StatusScope::APPLICATIONS, StatusFormat::Legacy).unwrap();
    assert_eq!(apps[0].lifecycle.value(), 0x87, "LOCKED keeps the previous state bits");
    // GPCS 2.3 §11.9 / JCRE: selection of a locked application fails.
    assert_eq!(select(&mut card, APP).sw.0, 0x6999);
    assert_eq!(select(&mut card, "D0D1D2D3D4").sw.0, 0x6A82, "partial selection skips it");
    let mut h = isd(&mut card);
    assert_eq!(h.sw(&mut card, &SetStatus::application(aid(APP), 0x00).to_apdu()), 0x9000);
    assert_eq!(select(&mut card, APP).sw.0, 0x9000);
    assert_eq!(select(&mut card, "D0D1D2D3D4").sw.0, 0x9000, "partial AID");
    assert_eq!(card.selected(0), Some(aid(APP)));
    // Application-specific states are not the card manager's to set.
    let mut h = isd(&mut card);
    assert_eq!(h.sw(&mut card, &SetStatus::application(aid(APP), 0x0F).to_apdu()), 0x6A80);
    assert_eq!(h.sw(&mut card, &SetStatus::application(aid("D0D1D2D3D4D5FFFF"), 0x80).to_apdu()), 0x6A88);
}

#[test]
fn card_lock_unlock_and_terminate() {
    let mut card = with_app(2);
    let mut h = isd(&mut card);
    assert_eq!(h.sw(&mut card, &SetStatus::card(CardLifeCycle::INITIALIZED).to_apdu()), 0x6985, "no way back");
    assert_eq!(h.sw(&mut card, &SetStatus::card(CardLifeCycle::CARD_LOCKED).to_apdu()), 0x9000);
    let isd_entry = h.send(&mut card, &GetStatus::new(StatusScope::ISD).to_apdu());
    assert_eq!(isd_entry.sw.0, 0x9000);
    assert!(isd_entry.data.windows(4).any(|w| w == [0x9F, 0x70, 0x01, 0x7F]), "ISD reports CARD_LOCKED");
    // Content management stops; only the ISD is selectable, with the 6283 warning.
    assert_eq!(h.sw(&mut card, &tsm_gp::gp::Delete::object(aid(APP), false).to_apdu()), 0x6985);
    assert_eq!(select(&mut card, APP).sw.0, 0x6A82);
    let r = select(&mut card, ISD);
    assert_eq!(r.sw, StatusWord::SELECTED_FILE_INVALIDATED);
    assert_eq!(r.data[0], 0x6F, "FCI still returned");
    // Unlock (ISD only), the application is back.
    let mut h = open_scp03(&mut card, aes_keys(TEST_KEY, 0xFF), 0x03);
    assert_eq!(h.sw(&mut card, &SetStatus::card(CardLifeCycle::SECURED).to_apdu()), 0x9000);
    assert_eq!(select(&mut card, APP).sw.0, 0x9000);

    // Terminate: irreversible; the card only identifies itself.
    let mut h = isd(&mut card);
    assert_eq!(h.sw(&mut card, &SetStatus::card(CardLifeCycle::TERMINATED).to_apdu()), 0x9000);
    assert!(!card.has_secure_channel(0), "session ends with the card");
    assert_eq!(select(&mut card, APP).sw.0, 0x6A82);
    assert_eq!(select(&mut card, ISD).sw.0, 0x6283);
    let cplc = send_raw(&mut card, &GetData::new(0x9F7F).to_apdu());
    assert_eq!((cplc.sw.0, cplc.data.len()), (0x9000, 45));
    let (_, iu) = HostHandshake::new(aes_keys(TEST_KEY, 0xFF), &[1; 8], ChannelOptions::default()).unwrap();
    assert_eq!(send_raw(&mut card, &iu).sw.0, 0x6985);
    assert_eq!(send_raw(&mut card, &GetStatus::new(StatusScope::ISD).to_apdu()).sw.0, 0x6985);
    card.reset();
    assert_eq!(select(&mut card, ISD).sw.0, 0x6283, "still terminated after reset");
}

/// INITIALIZE UPDATE with the right keys, then an EXTERNAL AUTHENTICATE whose host cryptogram
/// is damaged: the status word of the EA.
fn failed_auth(card: &mut SimCard, challenge: u8) -> u16 {
    let (hs, iu) = HostHandshake::new(aes_keys(TEST_KEY, 0xFF), &[challenge; 8], ChannelOptions::default()).unwrap();
    let r = send_raw(card, &iu);
    if r.sw.0 != 0x9000 {
        return r.sw.0;
    }
    let auth = hs.on_init_update(&r, SecurityLevel(0x01), Expect::any()).unwrap();
    let mut ea = auth.external_authenticate();
    ea.data[0] ^= 0x01;
    let s = send_raw(card, &ea).sw.0;
    // The card never retries on its own: the handshake is gone, a second EA is refused
    // without counting.
    assert_eq!(send_raw(card, &ea).sw.0, 0x6985);
    s
}

#[test]
fn authentication_lockout_persists() {
    let p = CardProfile::builtin("ese").unwrap();
    let cfg = CardConfig { auth_retry_limit: 3, ..CardConfig::default().seeded(5) };
    let mut card = SimCard::new(p, cfg).unwrap();
    assert_eq!(failed_auth(&mut card, 1), 0x6300);
    assert_eq!(failed_auth(&mut card, 2), 0x6300);
    // A success resets the counter.
    let _ = open_scp03(&mut card, aes_keys(TEST_KEY, 0xFF), 0x01);
    assert_eq!(failed_auth(&mut card, 3), 0x6300);
    assert_eq!(failed_auth(&mut card, 4), 0x6300);
    assert_eq!(card.state().apps[0].domain.as_ref().unwrap().auth_failures.get("FF"), Some(&2));
    // Persisted across save and load.
    let dir = std::env::temp_dir().join(format!("tsm-se-lockout-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("card.json");
    let sk = SecretKey::aes(&[9; 32]).unwrap();
    card.save(&path, &sk).unwrap();
    let mut card = SimCard::load(&path, &sk).unwrap();
    assert_eq!(failed_auth(&mut card, 5), 0x6300);
    // Limit reached: the key set is blocked.
    let (_, iu) = HostHandshake::new(aes_keys(TEST_KEY, 0xFF), &[6; 8], ChannelOptions::default()).unwrap();
    assert_eq!(send_raw(&mut card, &iu).sw.0, 0x6983);
    card.save(&path, &sk).unwrap();
    let mut card = SimCard::load(&path, &sk).unwrap();
    assert_eq!(send_raw(&mut card, &iu).sw.0, 0x6983, "blocked after reload too");
    card.power_off();
    card.power_on();
    assert_eq!(send_raw(&mut card, &iu).sw.0, 0x6983, "and after power cycling");
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn no_channel_reset_and_bad_mac() {
    let mut card = with_app(3);
    // Without a secure channel.
    assert_eq!(select(&mut card, ISD).sw.0, 0x9000);
    for cmd in [
        GetStatus::new(StatusScope::APPLICATIONS).to_apdu(),
        SetStatus::card(CardLifeCycle::CARD_LOCKED).to_apdu(),
        tsm_gp::gp::Delete::object(aid(APP), true).to_apdu(),
        CommandApdu::new(0x84, 0xF2, 0x40, 0x02).with_data(hexv("4F000102030405060708")),
    ] {
        assert_eq!(send_raw(&mut card, &cmd).sw.0, 0x6982, "{cmd:?}");
    }
    // GET DATA needs none.
    assert_eq!(send_raw(&mut card, &GetData::new(0x66).to_apdu()).sw.0, 0x9000);

    // Reset drops the channel.
    let mut h = open_scp03(&mut card, aes_keys(TEST_KEY, 0xFF), 0x03);
    assert_eq!(h.sw(&mut card, &GetStatus::new(StatusScope::ISD).to_apdu()), 0x9000);
    card.reset();
    assert!(!card.has_secure_channel(0));
    assert_eq!(card.selected(0), Some(aid(ISD)), "the ISD is selected after reset");
    assert_eq!(h.sw(&mut card, &GetStatus::new(StatusScope::ISD).to_apdu()), 0x6982);
    // Power off too.
    let mut h = open_scp03(&mut card, aes_keys(TEST_KEY, 0xFF), 0x03);
    card.power_off();
    assert_eq!(h.sw(&mut card, &GetStatus::new(StatusScope::ISD).to_apdu()), 0x6982, "transmit powers the card on, without the session");

    // A damaged C-MAC closes the channel: that command and the following ones get 6982.
    let mut h = open_scp03(&mut card, aes_keys(TEST_KEY, 0xFF), 0x01);
    let mut wire = h.chan.wrap(&GetStatus::new(StatusScope::ISD).to_apdu()).unwrap();
    let n = wire.data.len();
    wire.data[n - 1] ^= 0x80;
    assert_eq!(send_raw(&mut card, &wire).sw.0, 0x6982);
    assert!(!card.has_secure_channel(0));
    assert_eq!(h.sw(&mut card, &GetStatus::new(StatusScope::ISD).to_apdu()), 0x6982);
    // A command without secure messaging during a C-MAC session closes it as well.
    let mut h = open_scp03(&mut card, aes_keys(TEST_KEY, 0xFF), 0x01);
    assert_eq!(send_raw(&mut card, &GetStatus::new(StatusScope::ISD).to_apdu()).sw.0, 0x6982);
    assert_eq!(h.sw(&mut card, &GetStatus::new(StatusScope::ISD).to_apdu()), 0x6982);
    // Selecting anything (even the ISD again) ends the session.
    let mut h = open_scp03(&mut card, aes_keys(TEST_KEY, 0xFF), 0x01);
    assert_eq!(select(&mut card, ISD).sw.0, 0x9000);
    assert_eq!(h.sw(&mut card, &GetStatus::new(StatusScope::ISD).to_apdu()), 0x6982);
}
