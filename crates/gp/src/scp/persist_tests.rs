//! Persisted host sessions: snapshot → JSON → restore continues a session byte for byte (checked
//! against recorded traces), rewinding after a batch the card stopped early, handshakes
//! pipelined with the commands after EXTERNAL AUTHENTICATE, and the predicted SCP02 handshake.

use crate::apdu::{CommandApdu, ResponseApdu};
use crate::codec::Codec;
use crate::crypto::SecretKey;
use crate::hex::{decode, encode};
use crate::recording::{Section, parse_ini};
use crate::scp::scp02::{self, Scp02Host, Scp02HostState, Scp02Options};
use crate::scp::scp03::{self, Expect, PredictedSession, Scp03Host, Scp03HostState};
use crate::scp::{CardChannel, ChannelOptions, HostChannel, ScpError, SecurityLevel, StaticKeys};
use crate::sw::StatusWord;

fn section(file: &str, name: &str) -> Section {
    let text = std::fs::read_to_string(crate::testdata_dir().join("vectors").join(file)).unwrap();
    parse_ini(&text).unwrap().into_iter().find(|s| s.name == name).unwrap_or_else(|| panic!("[{name}] in {file}"))
}

fn h(s: &Section, k: &str) -> Vec<u8> {
    s.hex(k).unwrap().unwrap_or_else(|| panic!("[{}] has no {k}", s.name))
}

fn cmd(b: &[u8]) -> CommandApdu {
    CommandApdu::from_bytes(b).unwrap()
}

fn resp(b: &[u8]) -> ResponseApdu {
    ResponseApdu::from_bytes(b).unwrap()
}

fn json<T: serde::Serialize + serde::de::DeserializeOwned>(v: &T) -> T {
    serde_json::from_str(&serde_json::to_string(v).unwrap()).unwrap()
}

fn aes_keys(s: &Section, version: u8) -> StaticKeys {
    let k = |n: &str| SecretKey::aes(&h(s, n)).unwrap();
    StaticKeys::new(k("key_enc"), k("key_mac"), k("key_dek"), version)
}

/// kaoh get-status-all: predicted from counter 000085 (the challenge is derived), then continued
/// through JSON snapshots of the predicted session and of the channel, and by rewinding.
#[test]
fn scp03_predicted_session_survives_json_and_rewinds() {
    let s = section("scp03/scp03_traces_kaoh.txt", "kaoh-scp03-aes128-i70-get-status-all");
    let keys = aes_keys(&s, 0);
    let aid = h(&s, "invoking_aid");
    let level = SecurityLevel(0x03);
    let mut p = scp03::HostHandshake::predict(keys.clone(), &h(&s, "host_challenge"), 0x85, &aid, level, ChannelOptions::default()).unwrap();
    assert_eq!(p.init_update().to_bytes(), h(&s, "c1"));
    assert_eq!(p.external_authenticate().to_bytes(), h(&s, "c2"));
    let wire3 = p.host().wrap(&cmd(&h(&s, "c3.plain"))).unwrap();
    assert_eq!(wire3.to_bytes(), h(&s, "c3"));
    let after3 = p.host().response_context();
    assert_eq!(encode(&after3.chaining_value()), encode(&h(&s, "c3.mac_chaining_value")));

    // The prediction, persisted and restored elsewhere, verifies the card's answer and continues.
    let state = json(&p.snapshot());
    let text = serde_json::to_string(&state).unwrap();
    assert!(!text.contains(&encode(&h(&s, "key_enc"))) && !text.contains(&encode(&h(&s, "derived.s_mac"))), "{text}");
    let mut q = PredictedSession::restore(keys.clone(), &state).unwrap();
    q.verify_init_update(&resp(&h(&s, "r1"))).unwrap();
    assert_eq!(q.external_authenticate().to_bytes(), h(&s, "c2"));
    assert_eq!(q.host().wrap(&cmd(&h(&s, "c4.plain"))).unwrap().to_bytes(), h(&s, "c4"));

    // Another key set predicts another challenge: refused, not silently continued.
    let other = StaticKeys::single(SecretKey::aes(&[7; 16]).unwrap(), 0);
    assert!(matches!(PredictedSession::restore(other, &state), Err(ScpError::CardChallenge { .. })));

    // Rewind: c4 and c5 wrapped ahead but the card stopped after c3.
    let mut host = p.into_host();
    host.wrap(&cmd(&h(&s, "c4.plain"))).unwrap();
    host.wrap(&cmd(&h(&s, "c5.plain"))).unwrap();
    host.rewind(&after3);
    assert_eq!(host.wrap(&cmd(&h(&s, "c4.plain"))).unwrap().to_bytes(), h(&s, "c4"));

    // The channel alone, through JSON, after c4.
    let restored = Scp03Host::restore(keys.clone(), &json(&host.snapshot())).unwrap();
    for mut hst in [host, restored] {
        assert_eq!(hst.wrap(&cmd(&h(&s, "c5.plain"))).unwrap().to_bytes(), h(&s, "c5"));
        assert_eq!(hst.wrap(&cmd(&h(&s, "c6.plain"))).unwrap().to_bytes(), h(&s, "c6"));
    }
}

/// kaoh level 33 (R-MAC, R-ENC, random challenge): EXTERNAL AUTHENTICATE pipelined, the channel
/// restored from JSON wraps and unwraps as the original.
#[test]
fn scp03_restored_host_wraps_and_unwraps_like_the_original() {
    let s = section("scp03/scp03_traces_kaoh.txt", "kaoh-scp03-aes128-i70-level33-rmac-renc-echo");
    let keys = aes_keys(&s, 0);
    let (hs, iu) = scp03::HostHandshake::new(keys.clone(), &h(&s, "host_challenge"), ChannelOptions::default()).unwrap();
    assert_eq!(iu.to_bytes(), h(&s, "c1"));
    let auth = hs.on_init_update(&resp(&h(&s, "r1")), SecurityLevel(0x33), Expect::any()).unwrap();
    let (ea, mut host) = auth.pipelined();
    assert_eq!(ea.to_bytes(), h(&s, "c2"));
    assert_eq!(host.wrap(&cmd(&h(&s, "c3.plain"))).unwrap().to_bytes(), h(&s, "c3"));
    let ctx3 = host.response_context();
    let state: Scp03HostState = json(&host.snapshot());
    assert_eq!(state.position.encryption_counter(), 1);
    let mut restored = Scp03Host::restore(keys.clone(), &state).unwrap();
    for hst in [&mut host, &mut restored] {
        assert_eq!(encode(&hst.unwrap_with(&ctx3, &resp(&h(&s, "r3"))).unwrap().to_bytes()), encode(&h(&s, "r3.plain")));
        assert_eq!(hst.wrap(&cmd(&h(&s, "c4.plain"))).unwrap().to_bytes(), h(&s, "c4"));
        assert_eq!(encode(&hst.unwrap(&resp(&h(&s, "r4"))).unwrap().to_bytes()), encode(&h(&s, "r4.plain")));
    }
    // The response context itself survives JSON (kept per command while a batch is out), also
    // inside an internally tagged enum (serde buffers those and has no u128 there).
    assert_eq!(json(&ctx3), ctx3);
    #[derive(Debug, PartialEq, serde::Serialize, serde::Deserialize)]
    #[serde(tag = "kind")]
    enum Tagged {
        At { ctx: scp03::ResponseContext },
    }
    assert_eq!(json(&Tagged::At { ctx: ctx3 }), Tagged::At { ctx: ctx3 });
    // Restore checks what it can: key version, challenge lengths, level against i.
    let mut bad = state.clone();
    bad.key_version = 0x30;
    let v31 = StaticKeys { version: 0x31, ..keys.clone() };
    assert!(matches!(Scp03Host::restore(v31, &bad), Err(ScpError::UnknownKeyVersion { .. })));
    let mut bad = state.clone();
    bad.card_challenge.truncate(4);
    assert!(Scp03Host::restore(keys.clone(), &bad).is_err());
    let mut bad = state;
    bad.i = 0x10;
    assert!(matches!(Scp03Host::restore(keys, &bad), Err(ScpError::UnsupportedLevel { .. })));
}

/// A pipelined SCP03 handshake against the card side: EXTERNAL AUTHENTICATE and the commands
/// after it built before the card answers EXTERNAL AUTHENTICATE.
#[test]
fn scp03_pipelined_handshake_is_accepted_by_the_card() {
    let keys = StaticKeys::single(SecretKey::aes(&[0x42; 16]).unwrap(), 0x30);
    let params = scp03::card::CardParams { i: 0x30, sequence_counter: 9, sd_aid: vec![0xA0, 0, 0, 1, 0x51, 0, 0, 0], random_challenge: Some([3; 16]), ..Default::default() };
    let (hs, iu) = scp03::HostHandshake::new(keys.clone(), &[1; 8], ChannelOptions::default()).unwrap();
    let (r1, pending) = scp03::card::on_init_update(&keys, &iu, params).unwrap();
    let (ea, mut host) = hs.on_init_update(&r1, SecurityLevel(0x13), Expect::any()).unwrap().pipelined();
    let plain = CommandApdu::new(0x80, 0xE2, 0x88, 0).with_data(vec![1, 2, 3]);
    let wire = host.wrap(&plain).unwrap();
    let ctx = host.response_context();
    let (r2, mut card) = pending.on_external_authenticate(&ea).unwrap();
    assert_eq!(r2.sw, StatusWord::SUCCESS);
    assert_eq!(card.unwrap_command(&wire).unwrap(), plain);
    let r = card.wrap_response(ResponseApdu::new(vec![9], StatusWord::SUCCESS)).unwrap();
    assert_eq!(host.unwrap_with(&ctx, &r).unwrap().data, vec![9]);
}

fn des_keys(s: &Section, version: u8) -> StaticKeys {
    let k = |n: &str| SecretKey::des3(&h(s, n)).unwrap();
    StaticKeys::new(k("key_enc"), k("key_mac"), k("key_dek"), version)
}

/// GPPro issue #80 (G&D, i=55, counter 001B, ISD A000000003000000): the predicted handshake is
/// the recorded one byte for byte, and its channel continues through JSON.
#[test]
fn scp02_predicted_handshake_matches_issue80_trace() {
    let s = section("scp02/scp02_traces_gppro_issue_logs.txt", "gppro-issue80-gd-smartcafe-scp02-legacy-get-status");
    let keys = des_keys(&s, 0);
    let hc: [u8; 8] = h(&s, "host_challenge").try_into().unwrap();
    let aid = decode("A000000003000000").unwrap();
    let opts = Scp02Options::new(0x55).with_sd_aid(&aid);
    let mut p = scp02::HostHandshake::predict(keys.clone(), hc, 0x001B, SecurityLevel::C_MAC, opts.clone()).unwrap();
    assert_eq!(p.init_update().to_bytes(), h(&s, "c1"));
    assert_eq!(p.external_authenticate().to_bytes(), h(&s, "c2"));
    assert_eq!(encode(&p.expected().card_challenge), encode(&h(&s, "iu.card_challenge")));
    p.verify_init_update(&resp(&h(&s, "r1"))).unwrap();
    p.verify_external_authenticate(&resp(&h(&s, "r2"))).unwrap();
    assert_eq!(p.host().wrap(&cmd(&h(&s, "c3.plain"))).unwrap().to_bytes(), h(&s, "c3"));
    assert_eq!(p.host().last_mac().map(|m| encode(&m)), Some(encode(&h(&s, "c3.cmac"))));

    let state = json(&p.snapshot());
    let mut q = scp02::PredictedSession::restore(keys.clone(), &state).unwrap();
    q.verify_init_update(&resp(&h(&s, "r1"))).unwrap();
    assert_eq!(q.host().wrap(&cmd(&h(&s, "c4.plain"))).unwrap().to_bytes(), h(&s, "c4"));

    // Counter moved on (another party opened a session): the prediction is refused.
    let p2 = scp02::HostHandshake::predict(keys.clone(), hc, 0x001A, SecurityLevel::C_MAC, opts).unwrap();
    let e = p2.verify_init_update(&resp(&h(&s, "r1"))).unwrap_err();
    assert!(matches!(e, ScpError::BadInitUpdateResponse(ref m) if m.contains("sequence counter")), "{e}");
    // Random challenges (i=15) and an unknown SD AID cannot be predicted.
    assert!(scp02::HostHandshake::predict(keys.clone(), hc, 1, SecurityLevel::C_MAC, Scp02Options::new(0x15).with_sd_aid(&aid)).is_err());
    assert!(scp02::HostHandshake::predict(keys, hc, 1, SecurityLevel::C_MAC, Scp02Options::new(0x55)).is_err());
}

/// SCP02 i=15 and i=55 against the card side: pipelined EXTERNAL AUTHENTICATE, snapshot through
/// JSON, identical wraps, rewind after a batch the card stopped early.
#[test]
fn scp02_restore_and_rewind_against_the_card() {
    let aid = vec![0xA0, 0, 0, 1, 0x51, 0, 0, 0];
    for i in [0x15u8, 0x55] {
        let keys = StaticKeys::new(SecretKey::des3(&[0x11; 16]).unwrap(), SecretKey::des3(&[0x22; 16]).unwrap(), SecretKey::des3(&[0x33; 16]).unwrap(), 0x20);
        let opts = Scp02Options::new(i).with_sd_aid(&aid);
        let (hs, iu) = scp02::HostHandshake::new(keys.clone(), [5; 8], opts);
        let params = scp02::card::CardParams { i, sequence_counter: 7, kdd: [0; 10], sd_aid: aid.clone(), random_challenge: (i == 0x15).then_some([4; 6]) };
        let (r1, pending) = scp02::card::on_init_update(&|_| Some(keys.clone()), &iu, params).unwrap();
        let (ea, mut host) = hs.on_init_update(&r1, SecurityLevel::C_DEC_C_MAC, Some(0x20)).unwrap().pipelined();
        let cmds: Vec<CommandApdu> = (0..4u8).map(|n| CommandApdu::new(0x80, 0xE2, 0x88, n).with_data(vec![n; 20])).collect();
        let w0 = host.wrap(&cmds[0]).unwrap();
        let mac0 = host.last_mac().unwrap();
        let state: Scp02HostState = json(&host.snapshot());
        let mut restored = Scp02Host::restore(keys.clone(), &state).unwrap();
        let w1 = host.wrap(&cmds[1]).unwrap();
        assert_eq!(restored.wrap(&cmds[1]).unwrap(), w1, "i={i:02X}");
        // The card stops after w0: w1 was never sent.
        host.rewind(mac0).unwrap();
        let w1b = host.wrap(&cmds[2]).unwrap();
        let (r2, mut card) = pending.on_external_authenticate(&ea).unwrap();
        assert_eq!(r2.sw, StatusWord::SUCCESS);
        assert_eq!(card.unwrap_command(&w0).unwrap(), cmds[0]);
        assert_eq!(card.unwrap_command(&w1b).unwrap(), cmds[2], "i={i:02X}");
        let wrong_version = StaticKeys { version: 0x21, ..keys };
        assert!(matches!(Scp02Host::restore(wrong_version, &state), Err(ScpError::UnknownKeyVersion { .. })));
    }
}
