//! The host session (`tsm_gp::session::GpSession`) against the simulated card
//! (`tsm_se::SimCard`) in process, and the `tsm gp` commands against card state files.
//!
//! What is proved here: every CAP file of `testdata/vectors/cap` loads, installs, is listed,
//! selects and deletes under SCP02 and SCP03 at every security level the protocols allow
//! (S8 and S16); supplementary security domains work with their own keys only; PUT KEY adds
//! and replaces key sets (the card's KCVs checked); memory runs out cleanly; applications lock
//! and unlock; and a host never retries EXTERNAL AUTHENTICATE (the card counts them).

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use tsm_gp::apdu::CommandApdu;
use tsm_gp::cap::CapFile;
use tsm_gp::codec::Codec;
use tsm_gp::crypto::SecretKey;
use tsm_gp::gp::install::SdInstallParams;
use tsm_gp::gp::{Aid, InstallParams, LifeCycle, Privilege, Privileges};
use tsm_gp::profile::CardProfile;
use tsm_gp::scp::{Scp, SecurityLevel};
use tsm_gp::session::{CardContent, CardKeys, GpSession, InstallOptions, KeySet, Open, OpenOptions, Secure, SessionConfig, SessionError};
use tsm_gp::sw::StatusWord;
use tsm_gp::transport::{Transport, TransportError};
use tsm_se::{CardConfig, SimCard};

const TEST_KEY: &str = "404142434445464748494A4B4C4D4E4F";

fn h(s: &str) -> Vec<u8> {
    tsm_gp::hex::decode(s).unwrap()
}

fn aid(s: &str) -> Aid {
    s.parse().unwrap()
}

fn vectors() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../testdata/vectors")
}

fn caps() -> Vec<(String, CapFile)> {
    let mut v: Vec<(String, CapFile)> = std::fs::read_dir(vectors().join("cap"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "cap"))
        .map(|p| (p.file_name().unwrap().to_string_lossy().into_owned(), CapFile::parse(&std::fs::read(&p).unwrap()).unwrap()))
        .collect();
    v.sort_by(|a, b| a.0.cmp(&b.0));
    assert_eq!(v.len(), 9, "the CAP files of testdata/vectors/cap");
    v
}

/// Counts what the card saw, and can spoil the host cryptogram of EXTERNAL AUTHENTICATE
/// (what a card sees from a host with wrong keys that does not check the card cryptogram).
struct Probe<'a> {
    card: &'a mut SimCard,
    external_authenticates: usize,
    initialize_updates: usize,
    spoil_ea: bool,
}

impl<'a> Probe<'a> {
    fn new(card: &'a mut SimCard) -> Self {
        Probe { card, external_authenticates: 0, initialize_updates: 0, spoil_ea: false }
    }
}

impl Transport for Probe<'_> {
    fn transmit(&mut self, apdu: &[u8]) -> Result<Vec<u8>, TransportError> {
        let mut a = apdu.to_vec();
        match a.get(1) {
            Some(0x82) => {
                self.external_authenticates += 1;
                if self.spoil_ea {
                    a[5] ^= 0x01;
                }
            }
            Some(0x50) => self.initialize_updates += 1,
            _ => {}
        }
        Ok(self.card.transmit(&a))
    }
}

fn new_card(profile: &str, scp: Scp, seed: u64) -> SimCard {
    SimCard::new(CardProfile::builtin(profile).unwrap(), CardConfig::default().with_scp(scp).seeded(seed)).unwrap()
}

/// Deterministic host challenges (the sessions must not depend on them).
fn counter_random(seed: u8) -> impl FnMut(&mut [u8]) + Send {
    let mut n = seed;
    move |b: &mut [u8]| {
        n = n.wrapping_add(1);
        for (i, x) in b.iter_mut().enumerate() {
            *x = n.wrapping_mul(31).wrapping_add(i as u8);
        }
    }
}

fn open_session<T: Transport>(t: T, config: &SessionConfig) -> GpSession<T, Open> {
    GpSession::new(t, config.clone()).with_random(counter_random(7))
}

/// Selects `sd` (the ISD when `None`) and opens a secure channel.
fn secure<T: Transport>(
    t: T,
    config: &SessionConfig,
    sd: Option<Aid>,
    keys: impl Into<CardKeys>,
    level: Option<SecurityLevel>,
    opts: &OpenOptions,
) -> Result<GpSession<T, Secure>, SessionError> {
    let mut s = open_session(t, config);
    match sd {
        Some(a) => {
            s.select(a.as_bytes())?;
        }
        None => {
            s.select_isd()?;
        }
    }
    s.open_secure_channel(keys, level, opts).map_err(|(_, e)| e)
}

fn test_keys() -> CardKeys {
    CardKeys::single(&h(TEST_KEY), 0)
}

fn config_of(card: &SimCard) -> SessionConfig {
    SessionConfig::from_profile(&card.state().profile)
}

fn has(content: &CardContent, a: &Aid) -> bool {
    content.find(a).is_some()
}

/// The secure channels of the built-in profiles, with the levels each allows.
fn channels() -> Vec<(&'static str, Scp, bool, Vec<u8>)> {
    let scp03 = vec![0x01, 0x03, 0x11, 0x13, 0x33];
    vec![
        ("uicc", Scp::Scp02 { i: 0x55 }, false, vec![0x01, 0x03]),
        ("microsd", Scp::Scp02 { i: 0x15 }, false, vec![0x01, 0x03]),
        ("uicc", Scp::Scp03 { i: 0x70 }, false, scp03.clone()),
        ("ese", Scp::Scp03 { i: 0x70 }, true, scp03),
    ]
}

#[test]
fn every_cap_under_every_channel_and_level() {
    let caps = caps();
    let mut cycles = 0;
    for (n, (profile, scp, s16, levels)) in channels().into_iter().enumerate() {
        for level in levels {
            let what = format!("{profile} {scp} {} level {level:02X}", if s16 { "S16" } else { "S8" });
            let mut card = new_card(profile, scp, 100 + n as u64);
            let config = config_of(&card);
            let opts = OpenOptions { s16, ..Default::default() };
            for (name, cap) in &caps {
                let elf = Aid::new(cap.package_aid()).unwrap();
                let app = Aid::new(cap.applet_aids()[0]).unwrap();
                let mut s = secure(&mut card, &config, None, test_keys(), Some(SecurityLevel(level)), &opts)
                    .unwrap_or_else(|e| panic!("{what}: open: {e}"));
                let info = s.channel_info().clone();
                assert_eq!(info.level, SecurityLevel(level), "{what}");
                assert_eq!(info.scp.id(), scp.id(), "{what}");
                if s16 {
                    assert_eq!(info.scp, Scp::Scp03 { i: 0x71 }, "{what}: S16 mode");
                }
                let mut calls = 0;
                let installed = s
                    .load_and_install(cap, &InstallOptions::default(), &mut |_, _| calls += 1)
                    .unwrap_or_else(|e| panic!("{what} {name}: install: {e}"));
                assert_eq!(installed, [app], "{what} {name}");
                assert!(calls >= 2, "{what} {name}: progress");
                let content = s.list().unwrap();
                let e = content.apps.iter().find(|e| e.aid == app).unwrap_or_else(|| panic!("{what} {name}: app not listed"));
                assert!(matches!(e.lifecycle, LifeCycle::Application(l) if l.is_selectable()), "{what} {name}: {e}");
                let lf = content.load_files.iter().find(|e| e.aid == elf).unwrap_or_else(|| panic!("{what} {name}: no load file"));
                assert_eq!(lf.modules, [app], "{what} {name}");
                // Selecting the application ends the channel; a new session deletes it.
                let mut o = s.close();
                assert_eq!(o.select(app.as_bytes()).unwrap().sw, StatusWord::SUCCESS, "{what} {name}: select");
                drop(o);
                let mut s = secure(&mut card, &config, None, test_keys(), Some(SecurityLevel(level)), &opts).unwrap();
                s.delete(elf, true).unwrap_or_else(|e| panic!("{what} {name}: delete: {e}"));
                let content = s.list().unwrap();
                assert!(!has(&content, &elf) && !has(&content, &app), "{what} {name}: still listed after DELETE");
                let mut o = s.close();
                let e = o.select(app.as_bytes()).unwrap_err();
                assert_eq!(e.status_word(), Some(StatusWord::FILE_NOT_FOUND), "{what} {name}");
                cycles += 1;
            }
        }
    }
    // 9 CAP files × (SCP02: 2 cards × 2 levels + SCP03: S8 and S16 × 5 levels).
    assert_eq!(cycles, 9 * (2 * 2 + 2 * 5));
}

#[test]
fn levels_the_protocol_does_not_allow_are_refused_before_authentication() {
    let mut card = new_card("uicc", Scp::Scp02 { i: 0x55 }, 3);
    let config = config_of(&card);
    let mut probe = Probe::new(&mut card);
    let e = secure(&mut probe, &config, None, test_keys(), Some(SecurityLevel(0x13)), &OpenOptions::new()).unwrap_err();
    assert_eq!(e.code(), "scp.unsupported_level");
    assert_eq!(probe.external_authenticates, 0);
    let mut card = new_card("uicc", Scp::Scp03 { i: 0x70 }, 3);
    let e = secure(&mut card, &config, None, test_keys(), Some(SecurityLevel(0x02)), &OpenOptions::new()).unwrap_err();
    assert_eq!(e.code(), "scp.invalid_level");
}

fn ssd_params(scp: Scp) -> InstallParams {
    let p = SdInstallParams { scp: vec![(scp.id(), scp.i())], ..Default::default() };
    InstallParams::application_specific(&p.to_value())
}

#[test]
fn supplementary_security_domains_with_their_own_keys() {
    let ssd = aid("A000000151535041AA");
    let hello = CapFile::parse(&std::fs::read(vectors().join("cap/kaoh_helloworld.cap")).unwrap()).unwrap();
    let hello_app = aid("D0D1D2D3D4D50101");
    // ISD on SCP03; one SSD on SCP03, one on SCP02 (the uicc profile has both).
    for ssd_scp in [Scp::Scp03 { i: 0x70 }, Scp::Scp02 { i: 0x55 }] {
        let mut card = new_card("uicc", Scp::Scp03 { i: 0x70 }, 11);
        let config = config_of(&card);
        let isd_keys = KeySet::for_scp(3, &[0x11; 16], &[0x12; 16], &[0x13; 16], 0x20).unwrap();
        let ssd_keys = KeySet::for_scp(ssd_scp.id(), &[0x21; 16], &[0x22; 16], &[0x23; 16], 0x30).unwrap();
        {
            // The ISD's test key becomes its own key set 20.
            let mut s = secure(&mut card, &config, None, test_keys(), None, &OpenOptions::new()).unwrap();
            let r = s.put_key(&isd_keys, None).unwrap();
            assert_eq!(r.version, 0x20);
            // The SSD may manage its own content.
            let privileges = Privileges::NONE.with(Privilege::AuthorizedManagement);
            s.create_ssd(ssd, privileges, &ssd_params(ssd_scp)).unwrap();
            let c = s.list().unwrap();
            let e = c.domains.iter().find(|e| e.aid == ssd).expect("SSD listed");
            assert!(e.privileges.unwrap().contains(Privilege::SecurityDomain));
        }
        // The old test key of the ISD is gone.
        let e = secure(&mut card, &config, None, test_keys(), None, &OpenOptions::new()).unwrap_err();
        assert!(matches!(e.code(), "scp.card_cryptogram" | "session.card_status"), "{e}");
        {
            // The new SSD answers with its initial key (the GP test key), in its own protocol;
            // PUT KEY replaces it by its own set.
            let mut s = secure(&mut card, &config, Some(ssd), test_keys(), None, &OpenOptions::new()).unwrap();
            assert_eq!(s.channel_info().scp, ssd_scp);
            assert_eq!(s.channel_info().sd_aid, Some(ssd));
            s.put_key(&ssd_keys, None).unwrap();
        }
        // ISD keys are refused by the SSD, and its initial key is retired.
        // (The ISD key values, typed for the SSD's protocol: the card's cryptogram gives them away.)
        let isd_values = CardKeys::bytes(&[0x11; 16], &[0x12; 16], &[0x13; 16], 0);
        for keys in [isd_values.clone(), test_keys()] {
            let e = secure(&mut card, &config, Some(ssd), keys, None, &OpenOptions::new()).unwrap_err();
            assert_eq!(e.code(), "scp.card_cryptogram", "{e}");
        }
        // Asking for the ISD's key version: the SSD has no such set.
        let e = secure(&mut card, &config, Some(ssd), isd_values.with_version(0x20), None, &OpenOptions::new()).unwrap_err();
        assert_eq!(e.status_word(), Some(StatusWord::REFERENCED_DATA_NOT_FOUND), "{e}");
        {
            // Content management through the SSD with its own keys.
            let mut s = secure(&mut card, &config, Some(ssd), &ssd_keys, None, &OpenOptions::new()).unwrap();
            assert_eq!(s.load_and_install(&hello, &InstallOptions::default(), &mut |_, _| {}).unwrap(), [hello_app]);
            let c = s.list().unwrap();
            assert!(c.isd.is_none(), "an SSD does not see the ISD entry");
            assert!(has(&c, &hello_app));
            // Key rotation: replace set 30 by 31.
            let rotated = KeySet::for_scp(ssd_scp.id(), &[0x31; 16], &[0x32; 16], &[0x33; 16], 0x31).unwrap();
            s.put_key(&rotated, Some(0x30)).unwrap();
            drop(s);
            assert!(secure(&mut card, &config, Some(ssd), &ssd_keys, None, &OpenOptions::new()).is_err());
            let mut s = secure(&mut card, &config, Some(ssd), &rotated, None, &OpenOptions::new()).unwrap();
            assert_eq!(s.channel_info().key_version, 0x31);
            s.lock_app(hello_app).unwrap();
        }
        // The ISD sees the SSD's application, associated with the SSD.
        let mut s = secure(&mut card, &config, None, &isd_keys, None, &OpenOptions::new()).unwrap();
        let c = s.list().unwrap();
        let e = c.apps.iter().find(|e| e.aid == hello_app).unwrap();
        assert_eq!(e.associated_sd, Some(ssd));
        assert!(matches!(e.lifecycle, LifeCycle::Application(l) if l.is_locked()));
        // An SD with content stays (the card refuses); once its content is gone, it goes.
        assert_eq!(s.delete(ssd, false).unwrap_err().status_word(), Some(StatusWord::CONDITIONS_NOT_SATISFIED));
        s.delete(Aid::new(hello.package_aid()).unwrap(), true).unwrap();
        s.delete(ssd, false).unwrap_or_else(|e| panic!("{ssd_scp}: delete SSD: {e}"));
        assert!(!has(&s.list().unwrap(), &ssd));
    }
}

#[test]
fn memory_runs_out_cleanly() {
    let mut profile = CardProfile::builtin("uicc").unwrap();
    profile.memory = 4000;
    let config = CardConfig { instance_cost: 2000, ..CardConfig::default() }.with_scp(Scp::Scp03 { i: 0x70 }).seeded(5);
    let mut card = SimCard::new(profile, config).unwrap();
    let cfg = config_of(&card);
    let caps = caps();
    let big = &caps.iter().find(|c| c.0.contains("AlgTest_v1.7.1")).unwrap().1;
    let small = &caps.iter().find(|c| c.0.contains("kaoh_helloworld")).unwrap().1;
    let mut s = secure(&mut card, &cfg, None, test_keys(), None, &OpenOptions::new()).unwrap();
    let free = s.extended_card_resources().unwrap().unwrap().free_non_volatile_memory;
    // 5366 bytes do not fit: LOAD answers NOT ENOUGH MEMORY, nothing is registered.
    let e = s.load_and_install(big, &InstallOptions::default(), &mut |_, _| {}).unwrap_err();
    assert_eq!((e.code(), e.status_word()), ("session.card_status", Some(StatusWord::NOT_ENOUGH_MEMORY)), "{e}");
    assert!(e.to_string().starts_with("LOAD"), "{e}");
    let c = s.list().unwrap();
    assert!(!has(&c, &Aid::new(big.package_aid()).unwrap()));
    assert_eq!(s.extended_card_resources().unwrap().unwrap().free_non_volatile_memory, free);
    // A small one fits; its first instance too, the second does not.
    let first = s.load_and_install(small, &InstallOptions::default(), &mut |_, _| {}).unwrap();
    let elf = Aid::new(small.package_aid()).unwrap();
    let second = InstallOptions { instance: Some(aid("D0D1D2D3D4D50102")), ..Default::default() };
    let e = s.install_and_make_selectable(elf, first[0], second.instance.unwrap(), Privileges::NONE, &second.params).unwrap_err();
    assert_eq!(e.status_word(), Some(StatusWord::NOT_ENOUGH_MEMORY), "{e}");
    // Deleting gives the memory back.
    s.delete(elf, true).unwrap();
    assert_eq!(s.extended_card_resources().unwrap().unwrap().free_non_volatile_memory, free);
}

#[test]
fn lock_and_unlock_an_application() {
    let mut card = new_card("microsd", Scp::Scp02 { i: 0x15 }, 9);
    let config = config_of(&card);
    let cap = CapFile::parse(&std::fs::read(vectors().join("cap/pysim_test_javacard.cap")).unwrap()).unwrap();
    let app = Aid::new(cap.applet_aids()[0]).unwrap();
    let mut s = secure(&mut card, &config, None, test_keys(), None, &OpenOptions::new()).unwrap();
    s.load_and_install(&cap, &InstallOptions::default(), &mut |_, _| {}).unwrap();
    s.lock_app(app).unwrap();
    let e = s.list().unwrap().apps.into_iter().find(|e| e.aid == app).unwrap();
    assert!(matches!(e.lifecycle, LifeCycle::Application(l) if l.is_locked()), "{e}");
    // Locking twice is refused; a locked application does not select.
    assert_eq!(s.lock_app(app).unwrap_err().status_word(), Some(StatusWord::CONDITIONS_NOT_SATISFIED));
    let mut o = s.close();
    assert!(o.select(app.as_bytes()).is_err(), "a locked application must not select");
    drop(o);
    let mut s = secure(&mut card, &config, None, test_keys(), None, &OpenOptions::new()).unwrap();
    s.unlock_app(app).unwrap();
    let e = s.list().unwrap().apps.into_iter().find(|e| e.aid == app).unwrap();
    assert!(matches!(e.lifecycle, LifeCycle::Application(l) if l.is_selectable() && !l.is_locked()), "{e}");
    let mut o = s.close();
    assert_eq!(o.select(app.as_bytes()).unwrap().sw, StatusWord::SUCCESS);
}

#[test]
fn authentication_is_never_retried_and_the_card_blocks() {
    let limit = 3;
    let config = CardConfig { auth_retry_limit: limit, ..CardConfig::default() }.with_scp(Scp::Scp03 { i: 0x70 }).seeded(21);
    let mut card = SimCard::new(CardProfile::builtin("uicc").unwrap(), config).unwrap();
    let cfg = config_of(&card);
    let wrong = CardKeys::single(&[0x55; 16], 0);
    // Wrong keys: the card cryptogram does not verify, EXTERNAL AUTHENTICATE is never sent,
    // the card counts nothing, however often it is tried.
    let mut probe = Probe::new(&mut card);
    for _ in 0..2 * limit {
        let e = secure(&mut probe, &cfg, None, wrong.clone(), None, &OpenOptions::new()).unwrap_err();
        assert_eq!(e.code(), "scp.card_cryptogram");
    }
    assert_eq!((probe.initialize_updates, probe.external_authenticates), (2 * limit as usize, 0));
    assert!(secure(&mut probe, &cfg, None, test_keys(), None, &OpenOptions::new()).is_ok());
    // A host cryptogram the card refuses: one EXTERNAL AUTHENTICATE per attempt, no retry.
    probe.spoil_ea = true;
    probe.external_authenticates = 0;
    for n in 1..=limit as usize {
        let e = secure(&mut probe, &cfg, None, test_keys(), None, &OpenOptions::new()).unwrap_err();
        assert_eq!(e.code(), "session.authentication_failed", "{e}");
        assert_eq!(probe.external_authenticates, n, "exactly one EXTERNAL AUTHENTICATE per attempt");
    }
    // Blocked: even the right keys fail, at INITIALIZE UPDATE, with no EXTERNAL AUTHENTICATE.
    probe.spoil_ea = false;
    let e = secure(&mut probe, &cfg, None, test_keys(), None, &OpenOptions::new()).unwrap_err();
    assert_eq!(e.status_word(), Some(StatusWord::AUTHENTICATION_METHOD_BLOCKED), "{e}");
    assert!(e.to_string().contains("INITIALIZE UPDATE"), "{e}");
    assert_eq!(probe.external_authenticates, limit as usize);
}

#[test]
fn diversified_keys_and_card_data() {
    use tsm_gp::crypto::diversify::{Diversification, KeyRole, diversify};
    let master = SecretKey::aes(&[0x4D; 16]).unwrap();
    let probe_card = new_card("ese", Scp::Scp03 { i: 0x70 }, 1);
    let kdd = probe_card.state().apps[0].domain.as_ref().unwrap().kdd.clone();
    let k = |r| diversify(Diversification::Kdf3, &master, &kdd, r).unwrap();
    let keys = tsm_se::KeySet::new(k(KeyRole::Enc), k(KeyRole::Mac), k(KeyRole::Dek), 0x01);
    let mut card = SimCard::new(CardProfile::builtin("ese").unwrap(), CardConfig::default().with_isd_keys(keys).seeded(1)).unwrap();
    let config = config_of(&card);
    let mut o = open_session(&mut card, &config);
    o.select_isd().unwrap();
    assert_eq!(o.kdd().unwrap().as_deref(), Some(&kdd[..]));
    let crd = o.card_recognition_data().unwrap().unwrap();
    assert_eq!(crd.scps().first().map(|s| (s.id, s.i)), Some((0x03, 0x70)));
    assert_eq!(o.cplc().unwrap().unwrap().to_bytes()[3..], CardProfile::builtin("ese").unwrap().cplc[..]);
    let s = o.open_secure_channel(CardKeys::diversified(master, Diversification::Kdf3, 0), None, &OpenOptions::new()).map_err(|(_, e)| e).unwrap();
    assert_eq!(s.channel_info().key_version, 0x01);
    assert_eq!(s.channel_info().level, SecurityLevel::C_DEC_C_MAC_R_MAC, "the SCP03 default");
}

// ---------------------------------------------------------------------------------------------
// The CLI against card state files

const CARD_KEY: &str = "000102030405060708090A0B0C0D0E0F101112131415161718191A1B1C1D1E1F";

fn tsm(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_tsm")).args(args).env_remove("TSM_READER").env_remove("TSM_KEYS").output().unwrap()
}

fn state_file(dir: &Path, name: &str, profile: &str, scp: Scp) -> PathBuf {
    let card = new_card(profile, scp, 77);
    let f = dir.join(name);
    card.save(&f, &SecretKey::aes(&h(CARD_KEY)).unwrap()).unwrap();
    f
}

fn ok(out: &Output) -> String {
    assert!(out.status.success(), "exit {:?}\nstdout: {}\nstderr: {}", out.status.code(), String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn cli_against_card_state_files() {
    let dir = std::env::temp_dir().join(format!("tsm-gp-cli-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let cap = vectors().join("cap/openjavacard-ndef-tiny-plain.cap");
    let cap = cap.to_str().unwrap();
    for (name, profile, scp) in [("scp03.json", "ese", Scp::Scp03 { i: 0x70 }), ("scp02.json", "uicc", Scp::Scp02 { i: 0x55 })] {
        let f = state_file(&dir, name, profile, scp);
        let f = f.to_str().unwrap();
        let card = ["--card-state", f, "--card-key", CARD_KEY];
        let with = |args: &[&str]| -> Vec<String> { args.iter().chain(card.iter()).map(|s| s.to_string()).collect() };
        let run = |args: &[&str]| tsm(&with(args).iter().map(String::as_str).collect::<Vec<_>>());

        let info = ok(&run(&["gp", "info", "--json"]));
        let v: serde_json::Value = serde_json::from_str(&info).unwrap();
        assert_eq!(v["security_domain"], "A000000151000000");
        assert_eq!(v["card_recognition_data"]["scp"][0]["scp"], format!("{:02X}", scp.id()));
        assert!(v["cplc"]["ic_fabricator"].is_string(), "{info}");
        let text = ok(&run(&["gp", "info"]));
        assert!(text.contains("CPLC:") && text.contains(&format!("SCP{:02X} i={:02X}", scp.id(), scp.i())), "{text}");

        let out = ok(&run(&["gp", "install", cap, "--privileges", "card-reset"]));
        assert!(out.contains("installed D27600017710021103000101"), "{out}");
        let list: serde_json::Value = serde_json::from_str(&ok(&run(&["gp", "list", "--json"]))).unwrap();
        let apps = list["apps"].as_array().unwrap();
        let app = apps.iter().find(|a| a["aid"] == "D27600017710021103000101").expect("installed app listed");
        assert!(app["privilege_names"].as_array().unwrap().iter().any(|p| p == "CardReset"), "{app}");
        assert!(list["load_files"].as_array().unwrap().iter().any(|l| l["aid"] == "D276000177100211030001"));

        ok(&run(&["gp", "lock", "D27600017710021103000101"]));
        let text = ok(&run(&["gp", "list"]));
        assert!(text.lines().any(|l| l.starts_with("APP D27600017710021103000101 LOCKED")), "{text}");
        ok(&run(&["gp", "unlock", "D27600017710021103000101", "--level", "c-mac"]));

        // Key rotation, then the old key no longer works (exit 1) and the new one does.
        let out = ok(&run(&["gp", "put-key", "--new-keys", "enc=505152535455565758595A5B5C5D5E5F,mac=606162636465666768696A6B6C6D6E6F,dek=707172737475767778797A7B7C7D7E7F", "--new-kvn", "30"]));
        assert!(out.contains("added key set 30") && out.contains("(verified)"), "{out}");
        let fail = run(&["gp", "list"]);
        assert_eq!(fail.status.code(), Some(1));
        let err = String::from_utf8_lossy(&fail.stderr);
        assert!(err.starts_with("error[") && err.contains("EXTERNAL AUTHENTICATE was not sent"), "{err}");
        let new_keys = "enc=505152535455565758595A5B5C5D5E5F,mac=606162636465666768696A6B6C6D6E6F,dek=707172737475767778797A7B7C7D7E7F";
        let text = ok(&run(&["gp", "list", "--keys", new_keys, "--kvn", "30"]));
        assert!(text.contains("D27600017710021103000101"));

        // A verbose run prints an APDU log that `tsm trace decode` verifies with the keys.
        let out = run(&["gp", "delete", "--related", "D276000177100211030001", "--keys", new_keys, "-v"]);
        ok(&out);
        let log = dir.join(format!("{name}.log"));
        std::fs::write(&log, &out.stderr).unwrap();
        let decoded = ok(&tsm(&["trace", "decode", "--keys", new_keys, "--sd-aid", "A000000151000000", log.to_str().unwrap()]));
        assert!(decoded.contains("VERIFIED") && decoded.contains("DELETE"), "{decoded}");
        let text = ok(&run(&["gp", "list", "--keys", new_keys]));
        assert!(!text.contains("D276000177100211030001"), "{text}");
    }
    // Usage errors exit 2; a missing storage key is named.
    let f = state_file(&dir, "x.json", "uicc", Scp::Scp03 { i: 0x70 });
    let out = tsm(&["gp", "list", "--card-state", f.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).starts_with("error[input.card_key]"));
    let out = tsm(&["gp", "list", "--card-state", f.to_str().unwrap(), "--card-key", CARD_KEY, "--level", "c-dec"]);
    assert_eq!(out.status.code(), Some(2));
    let out = tsm(&["gp", "list", "--card-state", f.to_str().unwrap(), "--card-key", &CARD_KEY.replace('0', "1")]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).starts_with("error[se."), "{}", String::from_utf8_lossy(&out.stderr));
    // The key file next to the state file, as `tsm card new` writes it, is the default.
    let key_file = dir.join("x.json.key");
    std::fs::write(&key_file, format!("{CARD_KEY}\n")).unwrap();
    let text = ok(&tsm(&["gp", "list", "--card-state", f.to_str().unwrap()]));
    assert!(text.starts_with("ISD A000000151000000"), "{text}");
    // A card made by `tsm card new` (its key file included).
    let made = dir.join("made.json");
    ok(&tsm(&["card", "new", "--state", made.to_str().unwrap(), "--profile", "ese"]));
    ok(&tsm(&["gp", "install", cap, "--card-state", made.to_str().unwrap()]));
    let text = ok(&tsm(&["gp", "list", "--card-state", made.to_str().unwrap()]));
    assert!(text.contains("APP D27600017710021103000101 SELECTABLE"), "{text}");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn raw_commands_through_the_session() {
    // GET DATA through the secure channel at level 33 (R-MAC and R-ENC on the response).
    let mut card = new_card("uicc", Scp::Scp03 { i: 0x70 }, 2);
    let config = config_of(&card);
    let mut s = secure(&mut card, &config, None, test_keys(), Some(SecurityLevel::ALL), &OpenOptions::new()).unwrap();
    let cplc = s.send(&CommandApdu::new(0x80, 0xCA, 0x9F, 0x7F).with_le(256)).unwrap();
    assert_eq!(cplc.sw, StatusWord::SUCCESS);
    assert_eq!(&cplc.data[3..], &CardProfile::builtin("uicc").unwrap().cplc[..]);
    assert!(s.key_information().unwrap().unwrap().keys.iter().all(|k| k.version == 0xFF));
    // STORE DATA to the ISD: DGI 0042 is the issuer identification number (GET DATA 42).
    assert_eq!(s.get_data(0x42).unwrap_err().status_word(), Some(StatusWord::REFERENCED_DATA_NOT_FOUND));
    s.store_data_blocks(tsm_gp::gp::store_data::DataStructure::Dgi, &h("0042 03 123456"), None).unwrap();
    assert_eq!(s.get_data(0x42).unwrap(), h("42 03 123456"));
}
