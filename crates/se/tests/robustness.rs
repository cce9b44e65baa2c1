//! Arbitrary input never panics and always gets a status word; GP commands without a secure
//! channel get 6982 and change nothing; fuzzing inside an open session never panics either.

mod common;
use common::*;
use proptest::prelude::*;
use tsm_gp::CommandApdu;
use tsm_gp::profile::CardProfile;
use tsm_se::{CardConfig, CardDevice, SimCard};

fn card(profile: &str) -> SimCard {
    SimCard::new(CardProfile::builtin(profile).unwrap(), CardConfig::default().seeded(3)).unwrap()
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn arbitrary_bytes_never_panic(inputs in prop::collection::vec(prop::collection::vec(any::<u8>(), 0..300), 1..12), p in 0usize..3) {
        let mut c = card(["uicc", "microsd", "ese"][p]);
        for i in &inputs {
            let r = c.transmit(i);
            prop_assert!(r.len() >= 2, "{:?} -> {:?}", i, r);
        }
    }

    /// Valid-looking GP commands (GP class, with or without the secure messaging bit, any
    /// logical channel that is open) without a secure channel: 6982, state unchanged.
    #[test]
    fn gp_commands_without_channel(
        ins in prop::sample::select(vec![0xE6u8, 0xE8, 0xE4, 0xD8, 0xE2, 0xF0, 0xF2]),
        sm in any::<bool>(),
        p1 in any::<u8>(), p2 in any::<u8>(),
        data in prop::collection::vec(any::<u8>(), 0..200),
        le in prop::option::of(1usize..=256),
    ) {
        let mut c = card("uicc");
        let before = c.state().clone();
        let cmd = CommandApdu { cla: if sm { 0x84 } else { 0x80 }, ins, p1, p2, data, le, extended: false };
        let r = send_raw(&mut c, &cmd);
        prop_assert_eq!(r.sw.0, 0x6982, "{:?}", cmd);
        prop_assert!(r.data.is_empty());
        prop_assert_eq!(c.state(), &before);
    }

    /// Random commands inside an open SCP03 session (wrapped by the host, so they reach the
    /// card manager): never a panic, always a status word, the registry stays consistent.
    #[test]
    fn fuzz_inside_a_session(cmds in prop::collection::vec(
        (prop::sample::select(vec![0xE6u8, 0xE8, 0xE4, 0xD8, 0xE2, 0xF0, 0xF2, 0xCA, 0x70, 0xA4, 0x50, 0x82, 0x00]),
         any::<u8>(), any::<u8>(), prop::collection::vec(any::<u8>(), 0..120)), 1..10)) {
        let mut c = scp03_card(4);
        let mut h = open_scp03(&mut c, aes_keys(TEST_KEY, 0xFF), 0x33);
        for (ins, p1, p2, data) in cmds {
            let cmd = CommandApdu::new(0x80, ins, p1, p2).with_data(data);
            if let Ok(r) = h.try_send(&mut c, &cmd) {
                prop_assert!(r.sw.0 != 0);
            }
        }
        let st = c.state();
        prop_assert_eq!(st.apps[0].aid.to_string(), ISD);
        prop_assert!(st.nv_used() <= st.profile.memory as u64);
        c.reset();
        prop_assert_eq!(c.transmit(&[0x00, 0xA4, 0x04, 0x00, 0x00])[..].ends_with(&[0x90, 0x00]), true);
    }
}

#[test]
fn status_words_of_malformed_commands() {
    let mut c = card("uicc");
    let cases: &[(&str, u16)] = &[
        ("", 0x6700),
        ("80", 0x6700),
        ("80CA9F", 0x6700),
        ("80CA9F7F05AA", 0x6700),         // Lc says 5, one byte follows
        ("FFCA9F7F00", 0x6E00),           // PPS class
        ("A0A4000002", 0x6E00),           // GSM class on a UICC in UICC mode
        ("90CA9F7F00", 0x6884),           // command chaining
        ("81CA9F7F00", 0x6881),           // channel 1 not open
        ("40CA9F7F00", 0x6881),           // further interindustry class: channel 4
        ("80CA9F7F0000FF", 0x6700),       // extended Le on a card without extended length
        ("80CAFFFF00", 0x6A88),           // unknown GET DATA tag
        ("80AA000000", 0x6D00),           // unknown instruction
        ("0050000008010203040506070800", 0x6E00), // INITIALIZE UPDATE in the ISO class
        ("8082000010000102030405060708090A0B0C0D0E0F", 0x6985), // EXTERNAL AUTHENTICATE without INITIALIZE UPDATE
        ("00A4040011A000000000000000000000000000000000", 0x6A80), // 17-byte AID
        ("00A4041000", 0x6A86),
        ("00A4000C023F00", 0x6A82),       // select by file ID: a security domain has no files
        ("00700100", 0x6A86),             // MANAGE CHANNEL P1 01
        ("00708000", 0x6A86),             // closing the basic channel
    ];
    for (hex, want) in cases {
        let r = c.transmit(&hexv(hex));
        assert_eq!(tsm_gp::hex::encode(&r[r.len() - 2..]), format!("{want:04X}"), "{hex}");
    }
}

#[test]
fn logical_channels() {
    let mut c = scp03_card(5);
    // Open channel 1 (card chooses), select the ISD there and run a session on it while the
    // basic channel keeps its own.
    let r = c.transmit(&hexv("0070000001"));
    assert_eq!(r, hexv("019000"));
    assert_eq!(c.selected(1), Some(aid(ISD)), "a new channel starts on the ISD");
    let mut h0 = open_scp03(&mut c, aes_keys(TEST_KEY, 0xFF), 0x03);
    let mut h1 = try_open_scp03(&mut c, aes_keys(TEST_KEY, 0xFF), 0x03, 1, &[7; 8]).unwrap();
    let gs = tsm_gp::gp::GetStatus::new(tsm_gp::gp::StatusScope::ISD).to_apdu();
    assert_eq!(h1.sw(&mut c, &gs), 0x9000);
    assert_eq!(h0.sw(&mut c, &gs), 0x9000);
    assert_eq!(h1.sw(&mut c, &gs), 0x9000);
    // Open channel 3 explicitly, then 2 is the only free one, then none.
    assert_eq!(c.transmit(&hexv("00700003")), hexv("9000"));
    assert_eq!(c.transmit(&hexv("0070000001")), hexv("029000"));
    assert_eq!(c.transmit(&hexv("0070000001")), hexv("6A81"));
    assert_eq!(c.transmit(&hexv("00700003")), hexv("6A86"), "already open");
    // Close channel 1 from channel 0: its session is gone, channel 0 goes on.
    assert_eq!(c.transmit(&hexv("00708001")), hexv("9000"));
    assert_eq!(c.transmit(&hexv("81CA006600"))[..], hexv("6881")[..]);
    assert_eq!(h0.sw(&mut c, &gs), 0x9000);
    // Close channel 2 from itself (P2 = 00).
    assert_eq!(c.transmit(&hexv("02708000")), hexv("9000"));
    assert_eq!(c.selected(2), None);
    // Reset closes all but the basic channel.
    c.reset();
    assert_eq!(c.transmit(&hexv("83CA006600")), hexv("6881"));
}

#[test]
fn extended_length_when_the_profile_allows_it() {
    // microsd allows extended APDUs: a 1000-byte LOAD block goes through.
    let p = CardProfile::builtin("microsd").unwrap();
    let cfg = CardConfig::default().seeded(2).with_scp(tsm_gp::scp::Scp::Scp03 { i: 0x70 });
    let mut c = SimCard::new(p, cfg).unwrap();
    let mut h = open_scp03(&mut c, aes_keys(TEST_KEY, 0xFF), 0x03);
    let v = cap_vectors().into_iter().find(|v| v.file == "openjavacard-ndef-full-plain.cap").unwrap();
    let lfdb = tsm_gp::cap::CapFile::parse(&v.bytes()).unwrap().load_file_data_block(false);
    let sws = load(&mut h, &mut c, &v.package, None, &v.variants[0].2, &[], &lfdb, 1000);
    assert_eq!(sws, vec![0x9000; 3]);
    // uicc does not: the same block is refused with 6700 before anything else.
    let mut c = scp03_card(2);
    let mut h = open_scp03(&mut c, aes_keys(TEST_KEY, 0xFF), 0x03);
    let sws = load(&mut h, &mut c, &v.package, None, &[], &[], &lfdb, 1000);
    assert_eq!(sws, vec![0x9000, 0x6700]);
}
