//! Card profiles: the built-in carriers, the example profile file, and the quirks a profile
//! switches on (legacy-only GET STATUS, no S16, SCP03 counter only with data).

mod common;
use common::*;
use tsm_gp::gp::{GetData, GetStatus, StatusScope};
use tsm_gp::profile::{CardProfile, Quirks};
use tsm_gp::scp::scp03::{Expect, HostHandshake};
use tsm_gp::scp::{ChannelOptions, HostChannel, Scp, SecurityLevel};
use tsm_gp::{Codec, CommandApdu, ResponseApdu};
use tsm_se::{CardConfig, CardDevice, SimCard};

#[test]
fn builtin_profiles_identify_themselves() {
    for name in CardProfile::BUILTIN {
        let p = CardProfile::builtin(name).unwrap();
        let mut c = SimCard::new(p.clone(), CardConfig::default().seeded(1)).unwrap();
        assert_eq!(c.atr(), p.atr);
        let r = send_raw(&mut c, &GetData::new(0x9F7F).to_apdu());
        assert_eq!(r.data[3..], p.cplc[..], "{name}: CPLC as in the profile");
        let crd = send_raw(&mut c, &GetData::new(0x66).to_apdu());
        let crd = tsm_gp::gp::data::CardRecognitionData::parse(&crd.data).unwrap();
        assert_eq!(crd.gp_version().as_deref(), Some("2.3.1"));
        let s = crd.scps();
        assert_eq!((s[0].id, s[0].i as u8), (p.scp[0].id(), p.scp[0].i()), "{name}: the ISD runs the profile's first SCP");
        let cc = send_raw(&mut c, &GetData::new(0x67).to_apdu());
        let cc = tsm_gp::gp::data::CardCapabilities::parse(&cc.data).unwrap();
        let listed: Vec<(u8, u8)> = cc.scp.iter().flat_map(|s| s.options.iter().map(move |i| (s.id, *i))).collect();
        assert_eq!(listed, p.scp.iter().map(|s| (s.id(), s.i())).collect::<Vec<_>>());
        let fci = select(&mut c, &tsm_gp::hex::encode(&p.isd_aid));
        let fci = tsm_gp::gp::Fci::parse(&fci.data).unwrap();
        assert_eq!(fci.aid.as_deref(), Some(&p.isd_aid[..]));
    }
}

#[test]
fn example_profile_file() {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/profiles/example-ese.json");
    let p: CardProfile = serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    assert_eq!(p.isd_aid, hexv("A000000151000000"));
    let mut c = SimCard::new(p.clone(), CardConfig::default().seeded(1)).unwrap();
    assert_eq!(c.atr(), p.atr);
    assert!(p.quirks.legacy_get_status_only);
    let mut h = open_scp03(&mut c, aes_keys(TEST_KEY, 0xFF), 0x03);
    assert_eq!(h.sw(&mut c, &GetStatus::new(StatusScope::ISD).to_apdu()), 0x6A86);
    assert_eq!(h.sw(&mut c, &GetStatus::new(StatusScope::ISD).legacy().to_apdu()), 0x9000);
}

fn quirky(q: Quirks, scp: Vec<Scp>) -> SimCard {
    let mut p = CardProfile::builtin("ese").unwrap();
    p.quirks = q;
    p.scp = scp;
    SimCard::new(p, CardConfig::default().seeded(9)).unwrap()
}

#[test]
fn legacy_get_status_only() {
    let mut c = quirky(Quirks { legacy_get_status_only: true, ..Quirks::default() }, vec![Scp::Scp03 { i: 0x70 }]);
    let mut h = open_scp03(&mut c, aes_keys(TEST_KEY, 0xFF), 0x03);
    // The pager of the core falls back to the legacy format on 6A86.
    let list = get_status(&mut h, &mut c, StatusScope::LOAD_FILES, tsm_gp::gp::StatusFormat::Legacy).unwrap();
    assert_eq!(list.len(), 1);
    assert_eq!(h.sw(&mut c, &GetStatus::new(StatusScope::LOAD_FILES).to_apdu()), 0x6A86);
}

#[test]
fn s16_and_the_no_s16_quirk() {
    // ese offers i=70 and i=71: the host challenge length picks S8 or S16.
    let mut c = quirky(Quirks::default(), vec![Scp::Scp03 { i: 0x70 }, Scp::Scp03 { i: 0x71 }]);
    let mut h = try_open_scp03(&mut c, aes_keys(TEST_KEY, 0xFF), 0x33, 0, &[5; 16]).unwrap();
    assert_eq!(h.chan.scp(), Scp::Scp03 { i: 0x71 });
    assert_eq!(h.sw(&mut c, &GetStatus::new(StatusScope::ISD).to_apdu()), 0x9000);
    let mut h = try_open_scp03(&mut c, aes_keys(TEST_KEY, 0xFF), 0x33, 0, &[5; 8]).unwrap();
    assert_eq!(h.sw(&mut c, &GetStatus::new(StatusScope::ISD).to_apdu()), 0x9000);
    // A card without S16 refuses a 16-byte host challenge.
    let mut c = quirky(Quirks { no_s16: true, ..Quirks::default() }, vec![Scp::Scp03 { i: 0x70 }, Scp::Scp03 { i: 0x71 }]);
    assert_eq!(try_open_scp03(&mut c, aes_keys(TEST_KEY, 0xFF), 0x33, 0, &[5; 16]).err().map(|e| e.0), Some(0x6700));
    assert!(try_open_scp03(&mut c, aes_keys(TEST_KEY, 0xFF), 0x33, 0, &[5; 8]).is_ok());
    // A profile offering S8 only does the same.
    let mut c = quirky(Quirks::default(), vec![Scp::Scp03 { i: 0x70 }]);
    assert_eq!(try_open_scp03(&mut c, aes_keys(TEST_KEY, 0xFF), 0x33, 0, &[5; 16]).err().map(|e| e.0), Some(0x6700));
}

/// A session at C-DEC level: a command without data, then one with data.
fn counter_script(card: &mut SimCard, host_quirk: bool) -> Vec<u16> {
    card.reset();
    let opts = ChannelOptions { scp03_counter_only_with_data: host_quirk, ..Default::default() };
    let (hs, iu) = HostHandshake::new(aes_keys(TEST_KEY, 0xFF), &[3; 8], opts).unwrap();
    let r = ResponseApdu::from_bytes(&card.transmit(&iu.to_bytes())).unwrap();
    let auth = hs.on_init_update(&r, SecurityLevel(0x03), Expect::any()).unwrap();
    let r = ResponseApdu::from_bytes(&card.transmit(&auth.external_authenticate().to_bytes())).unwrap();
    let mut host = auth.on_external_authenticate(&r).unwrap();
    let mut sws = Vec::new();
    for cmd in [CommandApdu::new(0x80, 0xCA, 0x00, 0x66).with_le(256), GetStatus::new(StatusScope::ISD).to_apdu()] {
        let w = host.wrap(&cmd).unwrap();
        sws.push(ResponseApdu::from_bytes(&card.transmit(&w.to_bytes())).unwrap().sw.0);
    }
    sws
}

#[test]
fn scp03_counter_only_with_data() {
    let mut quirk = quirky(Quirks { scp03_counter_only_with_data: true, ..Quirks::default() }, vec![Scp::Scp03 { i: 0x70 }]);
    assert_eq!(counter_script(&mut quirk, true), vec![0x9000, 0x9000]);
    // A host that counts every command decrypts nothing right on such a card.
    assert_eq!(counter_script(&mut quirk, false), vec![0x9000, 0x6982]);
    let mut normal = quirky(Quirks::default(), vec![Scp::Scp03 { i: 0x70 }]);
    assert_eq!(counter_script(&mut normal, false), vec![0x9000, 0x9000]);
    assert_eq!(counter_script(&mut normal, true), vec![0x9000, 0x6982]);
}
