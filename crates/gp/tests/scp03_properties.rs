//! SCP03 host ↔ card round trips (proptest) and the behaviours the traces do not cover:
//! both empty-data encodings, the counter-only-with-data quirk, key versions, wrong keys,
//! INITIALIZE UPDATE responses of every length, logical channels, SM4 keys, R-MAC leniency.

use proptest::prelude::*;
use tsm_gp::crypto::{KeyAlg, SecretKey, SymmetricKey};
use tsm_gp::hex::decode;
use tsm_gp::scp::scp03::{Expect, HostHandshake, Scp03Host, Scp03Monitor, card};
use tsm_gp::scp::{CardChannel, ChannelOptions, HostChannel, ScpError, SecurityLevel, StaticKeys};
use tsm_gp::{Codec, CommandApdu, ResponseApdu, StatusWord};

const LEVELS: [u8; 6] = [0x00, 0x01, 0x03, 0x11, 0x13, 0x33];

#[derive(Debug, Clone)]
struct Setup {
    alg: KeyAlg,
    key_bytes: [Vec<u8>; 3],
    version: u8,
    level: SecurityLevel,
    i: u8,
    host_challenge: Vec<u8>,
    card_random: [u8; 16],
    sequence_counter: u32,
    sd_aid: Vec<u8>,
    kdd: [u8; 10],
    host_options: ChannelOptions,
}

impl Setup {
    fn s16(&self) -> bool {
        self.i & 0x01 != 0
    }
    fn keys(&self) -> StaticKeys {
        let k = |b: &[u8]| SecretKey::new(self.alg, b).unwrap();
        StaticKeys::new(k(&self.key_bytes[0]), k(&self.key_bytes[1]), k(&self.key_bytes[2]), self.version)
    }
    fn params(&self) -> card::CardParams {
        card::CardParams {
            i: self.i,
            sequence_counter: self.sequence_counter,
            kdd: self.kdd,
            sd_aid: self.sd_aid.clone(),
            random_challenge: (self.i & 0x10 == 0).then_some(self.card_random),
            s16: self.s16(),
        }
    }
    fn card_options(&self) -> ChannelOptions {
        ChannelOptions { scp03_counter_only_with_data: self.host_options.scp03_counter_only_with_data, ..Default::default() }
    }
}

fn supported(level: u8, i: u8) -> bool {
    (level & 0x10 == 0 || i & 0x20 != 0) && (level & 0x20 == 0 || i & 0x40 != 0)
}

fn setup_strategy() -> impl Strategy<Value = Setup> {
    (
        prop::sample::select(vec![KeyAlg::Aes128, KeyAlg::Aes192, KeyAlg::Aes256]),
        prop::sample::select(LEVELS.to_vec()),
        prop::sample::select(vec![0x10u8, 0x30, 0x60, 0x70, 0x00]),
        any::<bool>(),
        (any::<[u8; 32]>(), any::<[u8; 32]>(), any::<[u8; 32]>()),
        (1u8..=0x7F, any::<[u8; 16]>(), any::<[u8; 16]>(), 0u32..0xFF_FFFE, prop::collection::vec(any::<u8>(), 5..=16), any::<[u8; 10]>()),
        (any::<bool>(), any::<bool>(), any::<bool>()),
    )
        .prop_filter("level supported by i", |(_, level, i, ..)| supported(*level, *i))
        .prop_map(|(alg, level, i, s16, (k1, k2, k3), (version, hc, cr, seq, aid, kdd), (empty, drop_le, quirk))| {
            let n = alg.key_len();
            let i = i | u8::from(s16);
            Setup {
                alg,
                key_bytes: [k1[..n].to_vec(), k2[..n].to_vec(), k3[..n].to_vec()],
                version,
                level: SecurityLevel(level),
                i,
                host_challenge: hc[..if s16 { 16 } else { 8 }].to_vec(),
                card_random: cr,
                sequence_counter: seq,
                sd_aid: aid,
                kdd,
                host_options: ChannelOptions { encrypt_empty_data: empty, drop_le, scp03_counter_only_with_data: quirk },
            }
        })
}

#[derive(Debug, Clone)]
struct Exchange {
    cmd: CommandApdu,
    resp: ResponseApdu,
}

fn command_strategy() -> impl Strategy<Value = CommandApdu> {
    let data = prop_oneof![
        3 => prop::collection::vec(any::<u8>(), 0..=40),
        1 => prop::collection::vec(any::<u8>(), 200..=300),
        1 => Just(Vec::new()),
    ];
    let le = prop_oneof![2 => Just(None), 2 => (1usize..=256).prop_map(Some), 1 => (257usize..=65536).prop_map(Some)];
    (prop::sample::select(vec![0x00u8, 0x80, 0x90]), any::<u8>(), any::<u8>(), any::<u8>(), data, le)
        .prop_map(|(cla, ins, p1, p2, data, le)| CommandApdu { cla, ins, p1, p2, data, le, extended: false })
}

fn response_strategy() -> impl Strategy<Value = ResponseApdu> {
    prop_oneof![
        3 => (prop::collection::vec(any::<u8>(), 0..=300), prop::sample::select(vec![0x9000u16, 0x6283, 0x6310, 0x6200]))
            .prop_map(|(d, sw)| ResponseApdu::new(d, StatusWord(sw))),
        1 => prop::sample::select(vec![0x6A88u16, 0x6982, 0x6D00, 0x6A80, 0x6700]).prop_map(|sw| ResponseApdu::status(StatusWord(sw))),
    ]
}

fn exchanges_strategy() -> impl Strategy<Value = Vec<Exchange>> {
    prop::collection::vec((command_strategy(), response_strategy()).prop_map(|(cmd, resp)| Exchange { cmd, resp }), 1..6)
}

/// Runs a handshake; returns the host, the card and the wire bytes of IU/EA for a monitor.
fn open(s: &Setup) -> (Scp03Host, card::Scp03Card, [(CommandApdu, ResponseApdu); 2]) {
    let keys = s.keys();
    let (hs, iu) = HostHandshake::new(keys.clone(), &s.host_challenge, s.host_options).unwrap();
    let (r1, pending) = card::on_init_update(&keys, &iu, s.params()).unwrap();
    let pending = pending.with_options(s.card_options());
    let expect = if s.i & 0x10 != 0 { Expect::sd_aid(&s.sd_aid) } else { Expect::any() };
    let auth = hs.on_init_update(&r1, s.level, expect.with_key_version(s.version)).unwrap();
    let ea = auth.external_authenticate();
    let (r2, card) = pending.on_external_authenticate(&ea).unwrap();
    let host = auth.on_external_authenticate(&r2).unwrap();
    (host, card, [(iu, r1), (ea, r2)])
}

/// The plain command as the card should see it.
fn expected_plain(s: &Setup, cmd: &CommandApdu) -> CommandApdu {
    let mut c = cmd.clone();
    if s.level.c_mac() && s.host_options.drop_le {
        c.le = None;
    }
    c.extended = c.needs_extended();
    c
}

fn expected_response(s: &Setup, r: &ResponseApdu) -> ResponseApdu {
    if s.level.r_mac() && r.sw.is_error() { ResponseApdu::status(r.sw) } else { r.clone() }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    /// Host ↔ card at every level, key size, S8/S16 and i, with both host option sets: every
    /// command and response comes through unchanged; a monitor following the wire agrees.
    #[test]
    fn host_card_round_trip(s in setup_strategy(), xs in exchanges_strategy()) {
        let (mut host, mut card, hs) = open(&s);
        let keys = s.keys();
        let aid = (s.i & 0x10 != 0).then_some(s.sd_aid.as_slice());
        let mut monitor = Scp03Monitor::start(&keys, &hs[0].0, &hs[0].1, aid).unwrap()
            .with_options(s.card_options())
            .external_authenticate(&hs[1].0, &hs[1].1).unwrap();
        for x in &xs {
            let wire = host.wrap(&x.cmd).unwrap();
            // Through the byte encoding, as a transport would carry it.
            let wire = CommandApdu::from_bytes(&wire.to_bytes()).unwrap();
            prop_assert_eq!(wire.extended, wire.data.len() > 255 || wire.le.is_some_and(|l| l > 256));
            let plain = card.unwrap_command(&wire).unwrap();
            prop_assert_eq!(&plain, &expected_plain(&s, &x.cmd));
            prop_assert_eq!(&monitor.command(&wire).unwrap(), &plain);
            let rwire = card.wrap_response(x.resp.clone()).unwrap();
            let back = host.unwrap(&rwire).unwrap();
            prop_assert_eq!(&back, &expected_response(&s, &x.resp));
            prop_assert_eq!(&monitor.response(&rwire).unwrap(), &back);
        }
        prop_assert_eq!(monitor.options().scp03_counter_only_with_data, s.host_options.scp03_counter_only_with_data);
        let mut ks = vec![0x5Au8; 32];
        ks.truncate(16 * (1 + usize::from(s.alg == KeyAlg::Aes256)));
        let card = card.with_dek(SecretKey::new(s.alg, &s.key_bytes[2]).unwrap());
        prop_assert_eq!(card.decrypt_sensitive(&host.encrypt_sensitive(&ks).unwrap()).unwrap().to_vec(), ks);
    }

    /// Any damaged byte of a protected command (header, Lc, data, MAC; not Le, which Amd D
    /// leaves outside the MAC) makes the card refuse it.
    #[test]
    fn tampered_command_is_rejected(s in setup_strategy(), cmd in command_strategy(), pos in any::<prop::sample::Index>(), x in 1u8..=255) {
        prop_assume!(s.level.c_mac());
        let (mut host, mut card, _) = open(&s);
        let wire = host.wrap(&cmd).unwrap();
        let mut bytes = wire.to_bytes();
        let le_len = match (wire.le, wire.extended) {
            (None, _) => 0,
            (Some(_), false) => 1,
            (Some(_), true) => 2,
        };
        let at = pos.index(bytes.len() - le_len);
        bytes[at] ^= x;
        if let Ok(tampered) = CommandApdu::from_bytes(&bytes) {
            let r = card.unwrap_command(&tampered);
            prop_assert!(r.is_err(), "byte {} ^ {:02X} accepted: {:?}", at, x, r);
            let sw = r.unwrap_err().card_status();
            prop_assert!(sw.is_error());
        }
    }
}

fn fixed(level: u8, i: u8) -> Setup {
    Setup {
        alg: KeyAlg::Aes128,
        key_bytes: [vec![0x40; 16], vec![0x41; 16], vec![0x42; 16]],
        version: 0x30,
        level: SecurityLevel(level),
        i,
        host_challenge: vec![7; if i & 1 != 0 { 16 } else { 8 }],
        card_random: [9; 16],
        sequence_counter: 41,
        sd_aid: decode("A000000151000000").unwrap(),
        kdd: [1; 10],
        host_options: ChannelOptions::default(),
    }
}

/// Every level × key size × S8/S16 × i × host option set, with fixed commands of all four
/// cases (short and extended) and responses with and without data, warnings and errors.
#[test]
fn every_combination_round_trips() {
    let cmds: Vec<CommandApdu> = vec![
        CommandApdu::new(0x80, 0xF2, 0x20, 0x02),
        CommandApdu::new(0x80, 0xCA, 0x00, 0x66).with_le(256),
        CommandApdu::new(0x80, 0xE2, 0x90, 0x00).with_data(vec![0x11; 16]),
        CommandApdu::new(0x00, 0xA4, 0x04, 0x00).with_data(vec![0xA0, 0, 0, 1, 0x51]).with_le(256),
        CommandApdu::new(0x80, 0xE8, 0x00, 0x00).with_data(vec![0x22; 300]),
        CommandApdu::new(0x80, 0xE8, 0x80, 0x01).with_data(vec![0x33; 250]).with_le(65536),
        CommandApdu::new(0x80, 0xCA, 0x00, 0xFF).with_le(1000),
    ];
    let resps = [
        ResponseApdu::status(StatusWord::SUCCESS),
        ResponseApdu::new(vec![0x44; 16], StatusWord::SUCCESS),
        ResponseApdu::status(StatusWord::REFERENCED_DATA_NOT_FOUND),
        ResponseApdu::new(vec![0x55; 3], StatusWord(0x6310)),
        ResponseApdu::new(vec![0x66; 280], StatusWord::SUCCESS),
        ResponseApdu::status(StatusWord::SECURITY_STATUS_NOT_SATISFIED),
        ResponseApdu::new(vec![0x77; 1], StatusWord::WARNING_NO_INFO),
    ];
    let mut runs = 0;
    for alg in [KeyAlg::Aes128, KeyAlg::Aes192, KeyAlg::Aes256] {
        for i in [0x00u8, 0x10, 0x30, 0x60, 0x70] {
            for s16 in [false, true] {
                for level in LEVELS {
                    let i = i | u8::from(s16);
                    if !supported(level, i) {
                        continue;
                    }
                    for opts in 0..8u8 {
                        let mut s = fixed(level, i);
                        s.alg = alg;
                        s.key_bytes = [vec![0x40; alg.key_len()], vec![0x41; alg.key_len()], vec![0x42; alg.key_len()]];
                        s.host_options = ChannelOptions {
                            encrypt_empty_data: opts & 1 != 0,
                            drop_le: opts & 2 != 0,
                            scp03_counter_only_with_data: opts & 4 != 0,
                        };
                        let (mut host, mut card, _) = open(&s);
                        for (c, r) in cmds.iter().zip(&resps) {
                            let w = host.wrap(c).unwrap();
                            let w = CommandApdu::from_bytes(&w.to_bytes()).unwrap();
                            assert_eq!(card.unwrap_command(&w).unwrap(), expected_plain(&s, c), "{s:?} {c:?}");
                            let rw = card.wrap_response(r.clone()).unwrap();
                            assert_eq!(host.unwrap(&rw).unwrap(), expected_response(&s, r), "{s:?} {r:?}");
                        }
                        runs += 1;
                    }
                }
            }
        }
    }
    assert_eq!(runs, 3 * 8 * 2 * (3 + 3 + 5 + 6 + 6));
}

#[test]
fn level_matrix() {
    for i in [0x00, 0x10, 0x30, 0x60, 0x70, 0x01, 0x11, 0x31, 0x61, 0x71] {
        for level in 0u8..=0x3F {
            let s = fixed(level, i);
            let keys = s.keys();
            let (hs, iu) = HostHandshake::new(keys.clone(), &s.host_challenge, s.host_options).unwrap();
            let (r1, pending) = card::on_init_update(&keys, &iu, s.params()).unwrap();
            let host = hs.on_init_update(&r1, s.level, Expect::any());
            // Amd D Table 7-4: 00, 01, 03, 11, 13, 33 (R-MAC needs C-MAC, R-ENC needs C-DEC).
            match (LEVELS.contains(&level), supported(level, i)) {
                (false, _) => assert!(matches!(host, Err(ScpError::InvalidSecurityLevel(_))), "{level:02X}"),
                (true, false) => assert!(matches!(host, Err(ScpError::UnsupportedLevel { .. })), "{level:02X} i={i:02X}"),
                (true, true) => {
                    let ea = host.unwrap().external_authenticate();
                    assert!(pending.on_external_authenticate(&ea).is_ok(), "{level:02X} i={i:02X}");
                    continue;
                }
            }
            // The card refuses such a level in EXTERNAL AUTHENTICATE too (6A86).
            let ok = fixed(0x01, i);
            let (hs, iu) = HostHandshake::new(keys.clone(), &ok.host_challenge, ok.host_options).unwrap();
            let (r1, pending) = card::on_init_update(&keys, &iu, ok.params()).unwrap();
            let mut ea = hs.on_init_update(&r1, ok.level, Expect::any()).unwrap().external_authenticate();
            ea.p1 = level;
            let e = pending.on_external_authenticate(&ea).map(|_| ()).unwrap_err();
            assert_eq!(e.card_status(), StatusWord::INCORRECT_P1P2, "{level:02X} i={i:02X}: {e}");
        }
    }
}

#[test]
fn card_accepts_both_empty_data_encodings() {
    for level in [0x03, 0x13, 0x33] {
        for encrypt_empty_data in [false, true] {
            let mut s = fixed(level, 0x70);
            s.host_options.encrypt_empty_data = encrypt_empty_data;
            let (mut host, mut card, _) = open(&s);
            for cmd in ["80F22002", "80CA006600", "80F28002024F0000"] {
                let plain = CommandApdu::from_bytes(&decode(cmd).unwrap()).unwrap();
                let wire = host.wrap(&plain).unwrap();
                let expected_len = if plain.data.is_empty() && encrypt_empty_data { 16 + 8 } else if plain.data.is_empty() { 8 } else { 16 + 8 };
                assert_eq!(wire.data.len(), expected_len, "{cmd} {encrypt_empty_data}");
                assert_eq!(card.unwrap_command(&wire).unwrap(), plain);
                let r = card.wrap_response(ResponseApdu::new(vec![1, 2, 3], StatusWord::SUCCESS)).unwrap();
                assert_eq!(host.unwrap(&r).unwrap().data, vec![1, 2, 3]);
            }
        }
    }
}

#[test]
fn counter_only_with_data_quirk() {
    let cmds: Vec<CommandApdu> = ["80F22002", "80E2910006BF3E035C015A00", "80CA006600", "80F28002024F0000"]
        .iter()
        .map(|c| CommandApdu::from_bytes(&decode(c).unwrap()).unwrap())
        .collect();
    // Both sides with the quirk: round trip, and the counter only moved for the two data commands.
    let mut s = fixed(0x33, 0x70);
    s.host_options.scp03_counter_only_with_data = true;
    let (mut host, mut card, hs) = open(&s);
    let mut m = Scp03Monitor::start(&s.keys(), &hs[0].0, &hs[0].1, None)
        .unwrap()
        .with_options(s.card_options())
        .external_authenticate(&hs[1].0, &hs[1].1)
        .unwrap();
    for c in &cmds {
        let w = host.wrap(c).unwrap();
        assert_eq!(&card.unwrap_command(&w).unwrap(), c);
        assert_eq!(&m.command(&w).unwrap(), c);
        let r = card.wrap_response(ResponseApdu::new(vec![0xAB; 20], StatusWord::SUCCESS)).unwrap();
        assert_eq!(host.unwrap(&r).unwrap().data, vec![0xAB; 20]);
        assert_eq!(m.response(&r).unwrap().data, vec![0xAB; 20]);
    }
    assert_eq!(host.encryption_counter(), 2);
    assert_eq!(card.encryption_counter(), 2);
    assert!(m.options().scp03_counter_only_with_data);
    // Only the host has the quirk: the card decrypts the second command with the wrong ICV.
    let keys = s.keys();
    let (hs, iu) = HostHandshake::new(keys.clone(), &s.host_challenge, s.host_options).unwrap();
    let (r1, pending) = card::on_init_update(&keys, &iu, s.params()).unwrap();
    let auth = hs.on_init_update(&r1, s.level, Expect::any()).unwrap();
    let (r2, mut strict_card) = pending.on_external_authenticate(&auth.external_authenticate()).unwrap();
    let mut quirky_host = auth.on_external_authenticate(&r2).unwrap();
    strict_card.unwrap_command(&quirky_host.wrap(&cmds[0]).unwrap()).unwrap();
    let e = strict_card.unwrap_command(&quirky_host.wrap(&cmds[1]).unwrap()).unwrap_err();
    assert!(matches!(e, ScpError::BadPadding), "{e}");
    assert!(!strict_card.is_open());
    assert_eq!(strict_card.unwrap_command(&quirky_host.wrap(&cmds[0]).unwrap()).unwrap_err(), ScpError::Closed);
}

#[test]
fn key_versions_and_wrong_keys() {
    let s = fixed(0x03, 0x70);
    let keys = s.keys();
    // A card holding versions 30 and 31, default 31.
    let mut k31 = fixed(0x03, 0x70);
    k31.key_bytes = [vec![0x51; 16], vec![0x52; 16], vec![0x53; 16]];
    k31.version = 0x31;
    let keys31 = k31.keys();
    let lookup = |v: u8| match v {
        0x30 => Some(keys.clone()),
        0x00 | 0x31 => Some(keys31.clone()),
        _ => None,
    };
    for (v, ok) in [(0x30, true), (0x31, true), (0x00, true), (0x32, false)] {
        let mut k = if v == 0x30 { keys.clone() } else { keys31.clone() };
        k.version = v;
        let (hs, iu) = HostHandshake::new(k, &s.host_challenge, s.host_options).unwrap();
        match card::on_init_update_with(&lookup, &iu, s.params()) {
            Ok((r1, _)) => {
                assert!(ok);
                let auth = hs.on_init_update(&r1, s.level, Expect::sd_aid(&s.sd_aid)).unwrap();
                assert_eq!(auth.key_version(), if v == 0x30 { 0x30 } else { 0x31 });
            }
            Err(e) => {
                assert!(!ok);
                assert!(matches!(e, ScpError::UnknownKeyVersion { requested: 0x32, .. }), "{e}");
                assert_eq!(e.code(), "scp.unknown_key_version");
            }
        }
    }
    // Wrong MAC key on the host: the card cryptogram fails.
    let mut wrong = keys.clone();
    wrong.mac = std::sync::Arc::new(SecretKey::aes(&[0x99; 16]).unwrap());
    let (hs, iu) = HostHandshake::new(wrong, &s.host_challenge, s.host_options).unwrap();
    let (r1, _) = card::on_init_update(&keys, &iu, s.params()).unwrap();
    assert!(matches!(hs.on_init_update(&r1, s.level, Expect::any()), Err(ScpError::CardCryptogram { .. })));
    // Wrong ENC key only: the cryptograms use S-MAC, so only the pseudo-random challenge check
    // (or the first encrypted command) can tell.
    let mut wrong = keys.clone();
    wrong.enc = std::sync::Arc::new(SecretKey::aes(&[0x99; 16]).unwrap());
    let (hs, iu) = HostHandshake::new(wrong.clone(), &s.host_challenge, s.host_options).unwrap();
    let (r1, _) = card::on_init_update(&keys, &iu, s.params()).unwrap();
    assert!(matches!(hs.on_init_update(&r1, s.level, Expect::sd_aid(&s.sd_aid)), Err(ScpError::CardChallenge { .. })));
    let (hs, iu) = HostHandshake::new(wrong, &s.host_challenge, s.host_options).unwrap();
    let (r1, pending) = card::on_init_update(&keys, &iu, s.params()).unwrap();
    let auth = hs.on_init_update(&r1, s.level, Expect::any()).unwrap();
    let (r2, mut c) = pending.on_external_authenticate(&auth.external_authenticate()).unwrap();
    let mut host = auth.on_external_authenticate(&r2).unwrap();
    let cmd = CommandApdu::from_bytes(&decode("80F28002024F0000").unwrap()).unwrap();
    assert!(c.unwrap_command(&host.wrap(&cmd).unwrap()).is_err());
    // Wrong keys on the card side: the host cryptogram fails (6300).
    let (hs, iu) = HostHandshake::new(keys.clone(), &s.host_challenge, s.host_options).unwrap();
    let (r1, _) = card::on_init_update(&keys, &iu, s.params()).unwrap();
    let ea = hs.on_init_update(&r1, s.level, Expect::any()).unwrap().external_authenticate();
    let (_, pending) = card::on_init_update(&keys31, &{
        let mut c = iu.clone();
        c.p1 = 0x31;
        c
    }, s.params())
    .unwrap();
    let e = pending.on_external_authenticate(&ea).map(|_| ()).unwrap_err();
    assert_eq!(e.card_status(), StatusWord::AUTHENTICATION_FAILED);
}

#[test]
fn init_update_responses_of_every_length() {
    for i in [0x70, 0x71, 0x60, 0x61] {
        let s = fixed(0x01, i);
        let keys = s.keys();
        let (_, iu) = HostHandshake::new(keys.clone(), &s.host_challenge, s.host_options).unwrap();
        let (r1, _) = card::on_init_update(&keys, &iu, s.params()).unwrap();
        let good = r1.data.len();
        assert_eq!(good, if i & 1 != 0 { 45 } else { 29 } + if i & 0x10 != 0 { 3 } else { 0 });
        for n in 0..good + 30 {
            let mut d = r1.data.clone();
            d.resize(n, 0x00);
            let (hs, _) = HostHandshake::new(keys.clone(), &s.host_challenge, s.host_options).unwrap();
            let r = hs.on_init_update(&ResponseApdu::new(d, StatusWord::SUCCESS), s.level, Expect::any());
            // The layout allows the 3-byte sequence counter or not, whatever i says (lenient:
            // it is only used for the pseudo-random challenge check).
            let base = if i & 1 != 0 { 45 } else { 29 };
            if n == base || n == base + 3 {
                assert!(r.is_ok(), "i={i:02X} n={n}");
            } else {
                let e = r.unwrap_err();
                assert!(!e.to_string().is_empty());
                assert!(
                    matches!(e, ScpError::BadInitUpdateResponse(_) | ScpError::Unsupported(_) | ScpError::CardCryptogram { .. }),
                    "i={i:02X} n={n}: {e}"
                );
            }
        }
        // The other mode's host refuses this response with a hint.
        let other = vec![7; if i & 1 != 0 { 8 } else { 16 }];
        let (hs, _) = HostHandshake::new(keys.clone(), &other, s.host_options).unwrap();
        let e = hs.on_init_update(&r1, s.level, Expect::any()).unwrap_err();
        assert!(matches!(e, ScpError::BadInitUpdateResponse(ref m) if m.contains("response to an")), "{e}");
    }
    // Host challenges of other lengths are refused up front.
    assert!(HostHandshake::new(fixed(0, 0x70).keys(), &[0; 9], ChannelOptions::default()).is_err());
}

#[test]
fn logical_channel_session() {
    let s = fixed(0x33, 0x70);
    let keys = s.keys();
    let (hs, mut iu) = HostHandshake::new(keys.clone(), &s.host_challenge, s.host_options).unwrap();
    iu.cla = 0xC1; // further interindustry, channel 5
    let (r1, pending) = card::on_init_update(&keys, &iu, s.params()).unwrap();
    let auth = hs.on_init_update(&r1, s.level, Expect::any()).unwrap();
    let mut ea = auth.external_authenticate();
    assert_eq!(ea.cla, 0x84);
    ea.cla = 0xE1; // secure messaging bit of further interindustry classes is b6
    let (r2, mut c) = pending.on_external_authenticate(&ea).unwrap();
    assert_eq!(c.logical_channel(), 5);
    let mut host = auth.on_external_authenticate(&r2).unwrap();
    let plain = CommandApdu::new(0xC1, 0xCA, 0x00, 0x66).with_le(256);
    let wire = host.wrap(&plain).unwrap();
    assert_eq!(wire.cla, 0xE1);
    assert_eq!(c.unwrap_command(&wire).unwrap(), plain);
    let r = c.wrap_response(ResponseApdu::new(vec![1; 5], StatusWord::SUCCESS)).unwrap();
    assert_eq!(host.unwrap(&r).unwrap().data, vec![1; 5]);
    // The same command on the basic channel is not this session's.
    let w0 = host.wrap(&CommandApdu::new(0x80, 0xCA, 0x00, 0x66).with_le(256)).unwrap();
    assert!(matches!(c.unwrap_command(&w0), Err(ScpError::BadCommand(_))));
}

#[test]
fn sm4_static_keys() {
    let k = |b: u8| SecretKey::new(KeyAlg::Sm4, &[b; 16]).unwrap();
    let keys = StaticKeys::new(k(1), k(2), k(3), 0x30);
    let s = fixed(0x33, 0x70);
    let (hs, iu) = HostHandshake::new(keys.clone(), &s.host_challenge, s.host_options).unwrap();
    let (r1, pending) = card::on_init_update(&keys, &iu, s.params()).unwrap();
    let auth = hs.on_init_update(&r1, s.level, Expect::sd_aid(&s.sd_aid)).unwrap();
    assert_eq!(auth.session_keys().0.alg(), KeyAlg::Sm4);
    let (r2, mut c) = pending.on_external_authenticate(&auth.external_authenticate()).unwrap();
    let mut host = auth.on_external_authenticate(&r2).unwrap();
    let plain = CommandApdu::new(0x80, 0xE2, 0x90, 0x00).with_data(vec![0x42; 33]);
    assert_eq!(c.unwrap_command(&host.wrap(&plain).unwrap()).unwrap(), plain);
    let r = c.wrap_response(ResponseApdu::new(vec![7; 17], StatusWord::SUCCESS)).unwrap();
    assert_eq!(host.unwrap(&r).unwrap().data, vec![7; 17]);
    // 3DES keys are not SCP03 keys.
    let des = StaticKeys::single(SecretKey::des3(&[1; 16]).unwrap(), 0x30);
    assert!(matches!(HostHandshake::new(des.clone(), &s.host_challenge, s.host_options), Err(ScpError::Unsupported(_))));
    let iu = CommandApdu::new(0x80, 0x50, 0x30, 0).with_data(s.host_challenge.clone()).with_le(256);
    assert!(matches!(card::on_init_update(&des, &iu, s.params()).map(|_| ()), Err(ScpError::Unsupported(_))));
    assert!(matches!(Scp03Monitor::start(&des, &iu, &r1, None), Err(ScpError::Unsupported(_))));
}

/// Amd D: no R-MAC on error status words. The host also accepts a card that MACs them, and
/// refuses a missing R-MAC on success.
#[test]
fn rmac_on_error_status_words() {
    let s = fixed(0x13, 0x70);
    let keys = s.keys();
    let (hs, iu) = HostHandshake::new(keys.clone(), &s.host_challenge, s.host_options).unwrap();
    let (r1, pending) = card::on_init_update(&keys, &iu, s.params()).unwrap();
    let auth = hs.on_init_update(&r1, s.level, Expect::any()).unwrap();
    let s_rmac = auth.session_keys().2.clone();
    let (r2, mut c) = pending.on_external_authenticate(&auth.external_authenticate()).unwrap();
    let mut host = auth.on_external_authenticate(&r2).unwrap();
    let cmd = CommandApdu::new(0x80, 0xCA, 0x00, 0x66).with_le(256);
    c.unwrap_command(&host.wrap(&cmd).unwrap()).unwrap();
    // The card sends 6A88 bare, even if the application returned data with it.
    let r = c.wrap_response(ResponseApdu::new(vec![1, 2], StatusWord::REFERENCED_DATA_NOT_FOUND)).unwrap();
    assert_eq!(r, ResponseApdu::status(StatusWord::REFERENCED_DATA_NOT_FOUND));
    assert_eq!(host.unwrap(&r).unwrap(), r);
    // A card that MACs error responses: accepted when the R-MAC verifies, refused otherwise.
    let mut input = host.mac_chaining_value().to_vec();
    input.extend_from_slice(&[0x6A, 0x88]);
    let mac = s_rmac.cmac(&input).unwrap();
    let maced = ResponseApdu::new(mac[..8].to_vec(), StatusWord::REFERENCED_DATA_NOT_FOUND);
    assert_eq!(host.unwrap(&maced).unwrap(), ResponseApdu::status(StatusWord::REFERENCED_DATA_NOT_FOUND));
    let mut bad = maced.clone();
    bad.data[0] ^= 1;
    assert!(matches!(host.unwrap(&bad), Err(ScpError::RMac { .. })));
    // Success without R-MAC is refused.
    assert!(host.unwrap(&ResponseApdu::status(StatusWord::SUCCESS)).is_err());
    // The chain continues across the error: the next command and response still verify.
    let w = host.wrap(&cmd).unwrap();
    assert_eq!(c.unwrap_command(&w).unwrap(), cmd);
    let r = c.wrap_response(ResponseApdu::new(vec![5; 3], StatusWord::SUCCESS)).unwrap();
    assert_eq!(host.unwrap(&r).unwrap().data, vec![5; 3]);
}

/// Several commands in flight (predicted one-round-trip session at an R-MAC level): each
/// response is unwrapped with the context of its own command.
#[test]
fn batched_commands_with_response_contexts() {
    let s = fixed(0x33, 0x70);
    let keys = s.keys();
    let mut p = HostHandshake::predict(keys.clone(), &s.host_challenge, s.sequence_counter + 1, &s.sd_aid, s.level, s.host_options).unwrap();
    let cmds: Vec<CommandApdu> = (0..3u8).map(|n| CommandApdu::new(0x80, 0xCA, 0, n).with_data(vec![n; 5]).with_le(256)).collect();
    let mut batch = Vec::new();
    for c in &cmds {
        let w = p.host().wrap(c).unwrap();
        batch.push((w, p.host().response_context()));
    }
    // The card side, afterwards.
    let (r1, pending) = card::on_init_update(&keys, p.init_update(), s.params()).unwrap();
    p.verify_init_update(&r1).unwrap();
    let (r2, mut c) = pending.on_external_authenticate(p.external_authenticate()).unwrap();
    p.verify_external_authenticate(&r2).unwrap();
    let mut answers = Vec::new();
    for (w, _) in &batch {
        let plain = c.unwrap_command(w).unwrap();
        answers.push(c.wrap_response(ResponseApdu::new(plain.data.clone(), StatusWord::SUCCESS)).unwrap());
    }
    let host = p.into_host();
    for ((_, ctx), (a, cmd)) in batch.iter().zip(answers.iter().zip(&cmds)) {
        assert_eq!(host.unwrap_with(ctx, a).unwrap().data, cmd.data);
    }
    // A stale prediction (the card's counter moved on meanwhile) is detected.
    let (_, iu) = HostHandshake::new(keys.clone(), &s.host_challenge, s.host_options).unwrap();
    let mut moved = s.params();
    moved.sequence_counter += 1;
    let (r1, _) = card::on_init_update(&keys, &iu, moved).unwrap();
    let p2 = HostHandshake::predict(keys.clone(), &s.host_challenge, s.sequence_counter + 1, &s.sd_aid, s.level, s.host_options).unwrap();
    assert!(matches!(p2.verify_init_update(&r1), Err(ScpError::BadInitUpdateResponse(_))));
}

#[test]
fn sequence_counter_exhaustion_and_card_config() {
    let mut s = fixed(0x01, 0x70);
    s.sequence_counter = 0xFF_FFFF;
    let keys = s.keys();
    let (_, iu) = HostHandshake::new(keys.clone(), &s.host_challenge, s.host_options).unwrap();
    assert!(card::on_init_update(&keys, &iu, s.params()).is_err());
    // i without bit 10 and no challenge from the caller.
    let mut p = fixed(0x01, 0x60).params();
    p.random_challenge = None;
    assert!(card::on_init_update(&keys, &iu, p).is_err());
    // Reserved bits, R-ENC without R-MAC, S16 flag disagreeing with i.
    for (i, s16) in [(0x80, false), (0x40, false), (0x70, true)] {
        let mut p = fixed(0x01, 0x70).params();
        p.i = i;
        p.s16 = s16;
        assert!(matches!(card::on_init_update(&keys, &iu, p).map(|_| ()), Err(ScpError::Unsupported(_))), "{i:02X}");
    }
    // An S16 card given an 8-byte challenge.
    assert!(matches!(card::on_init_update(&keys, &iu, fixed(0x01, 0x71).params()).map(|_| ()), Err(ScpError::BadCommand(_))));
}
