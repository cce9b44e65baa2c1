//! The quirks and features the recorded cards needed (`tests/replay.rs`), each on its own with
//! a host from the core: what changes with the flag, what does not without it, and that hosts
//! still work with such a card.

mod common;
use common::*;
use tsm_gp::codec::Codec;
use tsm_gp::crypto::SecretKey;
use tsm_gp::gp::data::{CardCapabilities, CardRecognitionData, KeyInformation};
use tsm_gp::gp::{
    Aid, GetStatus, GetStatusPager, Install, LoadFile, PagerStep, Privileges, RegistryEntry, StatusFormat, StatusScope,
};
use tsm_gp::profile::{CardProfile, Quirks};
use tsm_gp::scp::Scp;
use tsm_gp::{CommandApdu, ResponseApdu, StatusWord};
use tsm_se::{AppRecord, CardConfig, CardIdentity, EchoModel, KeySet, LoadFileRecord, SD_PACKAGE_AID, SimCard};

fn card_with(quirks: Quirks, scp: Scp, seed: u64) -> SimCard {
    let mut p = CardProfile::builtin("ese").unwrap();
    p.scp = vec![scp];
    p.quirks = quirks;
    SimCard::new(p, CardConfig::default().seeded(seed).with_scp(scp)).unwrap()
}

const SCP03: Scp = Scp::Scp03 { i: 0x70 };

fn test_keys() -> tsm_gp::scp::StaticKeys {
    aes_keys(TEST_KEY, 0xFF)
}

fn helloworld() -> (CapVector, Vec<u8>) {
    let v = cap_vectors().into_iter().find(|v| v.file == "kaoh_helloworld.cap").unwrap();
    let lfdb = tsm_gp::cap::CapFile::parse(&v.bytes()).unwrap().load_file_data_block(true);
    (v, lfdb)
}

// ---- EchoModel and the GP API secure channel ----

#[test]
fn echo_model_answers_over_its_security_domains_channel() {
    let mut card = scp03_card(3);
    let (v, lfdb) = helloworld();
    card.models_mut().bind(Aid::new(&v.package).unwrap(), EchoModel::NAME).unwrap();
    let mut isd = open_scp03(&mut card, test_keys(), 0x03);
    assert!(load(&mut isd, &mut card, &v.package, None, &[], &[], &lfdb, 200).iter().all(|s| *s == 0x9000));
    assert_eq!(install(&mut isd, &mut card, &v.package, &v.applet, &v.applet, Privileges::NONE, &[0xC9, 0x00], true), 0x9000);
    let app = tsm_gp::hex::encode(&v.applet);
    assert_eq!(card.state().app(&Aid::new(&v.applet).unwrap()).unwrap().model.as_ref().unwrap().name, "echo");

    // Without a secure channel: plain echo; a protected command is refused.
    assert_eq!(select(&mut card, &app).sw, StatusWord::SUCCESS);
    let data: Vec<u8> = b"Hello World".repeat(15);
    let echo = CommandApdu::new(0x80, 0x40, 0, 0).with_data(data.clone());
    assert_eq!(send_raw(&mut card, &echo), ResponseApdu::new(data.clone(), StatusWord::SUCCESS));
    assert_eq!(send_raw(&mut card, &CommandApdu::new(0x84, 0x40, 0, 0).with_data(vec![0; 8])).sw.0, 0x6982);

    // Selected, it takes the handshake with the ISD's keys: level 33 (C-DEC, C-MAC, R-ENC, R-MAC).
    let mut h = open_scp03(&mut card, test_keys(), 0x33);
    assert!(card.has_secure_channel(0));
    assert_eq!(card.selected(0), Some(Aid::new(&v.applet).unwrap()), "the application stays selected");
    let r = h.send(&mut card, &echo);
    assert_eq!(r, ResponseApdu::new(data.clone(), StatusWord::SUCCESS), "decrypted and R-MAC verified by the host");
    assert_eq!(h.send(&mut card, &CommandApdu::new(0x80, 0x41, 0, 0)).sw.0, 0x6D00);
    // A plain command while C-MAC is required ends the session.
    assert_eq!(send_raw(&mut card, &echo).sw.0, 0x6982);
    assert!(!card.has_secure_channel(0));
    // The ISD's counter moved: the handshake was the ISD's.
    assert_eq!(card.state().domain(&card.state().isd()).unwrap().sequence_counter, 2);
}

#[test]
fn an_application_without_a_security_domain_gets_no_channel() {
    let mut card = scp03_card(4);
    let app: Aid = "A00000003000020007".parse().unwrap();
    let nowhere: Aid = "A0000000FFFFFF".parse().unwrap();
    card.registry_mut().add_application(AppRecord::new(app, app, app, nowhere), Some("echo")).unwrap();
    assert_eq!(select(&mut card, "A00000003000020007").sw, StatusWord::SUCCESS);
    let iu = CommandApdu::new(0x80, 0x50, 0, 0).with_data(vec![1; 8]).with_le(256);
    assert_eq!(send_raw(&mut card, &iu).sw.0, 0x6985);
}

// ---- registry seeding ----

#[test]
fn a_seeded_registry_is_reported_and_saved() {
    let q = Quirks { status_uicc_parameters: true, status_load_file_version_in_apps: true, ..Quirks::default() };
    let mut card = card_with(q, SCP03, 5);
    let isd = card.state().isd();
    let pkg: Aid = "A0000000620001".parse().unwrap();
    let rom: Aid = "A000000087100201".parse().unwrap();
    let app: Aid = "A0000000871002FF".parse().unwrap();
    let ssd: Aid = "A0000005591010FFFFFFFF8900001000".parse().unwrap();
    let mut r = card.registry_mut();
    r.add_load_file(LoadFileRecord { version: vec![1, 5], contactless_state: Some(0), ..LoadFileRecord::new(pkg, isd) }).unwrap();
    r.add_load_file(LoadFileRecord { builtin: true, hidden: true, version: vec![2, 1], ..LoadFileRecord::new(rom, isd) }).unwrap();
    let rec = AppRecord { install_params: tsm_gp::hex::decode("C900EA028000").unwrap(), contactless_state: Some(1), ..AppRecord::new(app, rom, app, isd) };
    r.add_application(rec, None).unwrap();
    let sd = AppRecord { privileges: Privileges::from_bits(0x80C000), life_cycle: 0x3F, ..AppRecord::new(ssd, SD_PACKAGE_AID, tsm_se::SD_MODULE_AID, isd) };
    let keys = KeySet::single(SecretKey::aes(&hexv(TEST_KEY)).unwrap(), 0x30);
    r.add_security_domain(sd, Some(keys)).unwrap();
    r.set_hidden(&SD_PACKAGE_AID, true).unwrap();
    // What the card would never hold.
    assert!(r.add_load_file(LoadFileRecord::new(pkg, isd)).is_err(), "AID in use");
    assert!(r.add_application(AppRecord::new("D0D1D2D3D4D50101".parse().unwrap(), pkg, pkg, isd), Some("no-such-model")).is_err());
    let with_domain = AppRecord { domain: card.state().app(&isd).unwrap().domain.clone(), ..AppRecord::new("D0D1D2D3D4D50102".parse().unwrap(), pkg, pkg, isd) };
    assert!(card.registry_mut().add_application(with_domain, None).is_err());
    let des = KeySet::single(SecretKey::des3(&hexv(TEST_KEY)).unwrap(), 0x31);
    assert!(card.registry_mut().add_security_domain(AppRecord::new("D0D1D2D3D4D50103".parse().unwrap(), pkg, pkg, isd), Some(des)).is_err());
    assert!(card.registry_mut().set_install_params(&app, vec![0xC9, 0x05]).is_err());

    let mut h = open_scp03(&mut card, test_keys(), 0x01);
    let elfs = get_status(&mut h, &mut card, StatusScope::LOAD_FILES, StatusFormat::Tagged).unwrap();
    assert_eq!(elfs.iter().map(|e| e.aid).collect::<Vec<_>>(), vec![pkg], "hidden load files are not listed");
    assert_eq!((elfs[0].contactless_state, elfs[0].version.as_deref()), (Some(0), Some(&[1, 5][..])));
    let apps = get_status(&mut h, &mut card, StatusScope::APPLICATIONS, StatusFormat::Tagged).unwrap();
    assert_eq!(apps.len(), 2);
    assert_eq!(apps[0].version.as_deref(), Some(&[2, 1][..]), "CE: the version of the (hidden) load file");
    assert_eq!(apps[0].ea.as_deref(), Some(&[0x80, 0x00][..]), "EA: the UICC parameters");
    assert_eq!(apps[0].contactless_state, Some(1));
    assert_eq!((apps[1].lifecycle.value(), apps[1].ea.as_deref()), (0x3F, None));

    // The seeded SD has its keys and runs the ISD's secure channel.
    assert_eq!(select(&mut card, "A0000005591010FFFFFFFF8900001000").sw, StatusWord::SUCCESS);
    open_scp03(&mut card, aes_keys(TEST_KEY, 0x30), 0x01);
    // And everything survives a save.
    let key = SecretKey::aes(&[7; 16]).unwrap();
    let back = SimCard::from_state(card.sealed_state(&key).unwrap(), &key).unwrap();
    assert_eq!(back.state(), card.state());
}

// ---- eUICC ----

fn get_eid(h: &mut Host, card: &mut SimCard, tag_list: &[u8]) -> ResponseApdu {
    let mut req = vec![0x5C, tag_list.len() as u8];
    req.extend_from_slice(tag_list);
    let mut data = vec![0xBF, 0x3E, req.len() as u8];
    data.extend_from_slice(&req);
    h.send(card, &CommandApdu::new(0x80, 0xE2, 0x91, 0x00).with_data(data).with_le(256))
}

#[test]
fn an_euicc_answers_get_eid() {
    let mut card = card_with(Quirks { euicc: true, ..Quirks::default() }, SCP03, 6);
    let eid = card.state().eid.clone().unwrap();
    // The derived EID: 32 digits starting 89 whose ISO 7064 MOD 97-10 check holds.
    let digits = tsm_gp::hex::encode(&eid);
    assert!(digits.starts_with("89") && digits.chars().all(|c| c.is_ascii_digit()), "{digits}");
    assert_eq!(digits.chars().fold(0u32, |r, c| (r * 10 + c.to_digit(10).unwrap()) % 97), 1);
    let mut h = open_scp03(&mut card, test_keys(), 0x33);
    let mut want = vec![0xBF, 0x3E, 0x12, 0x5A, 0x10];
    want.extend_from_slice(&eid);
    assert_eq!(get_eid(&mut h, &mut card, &[0x5A]), ResponseApdu::new(want, StatusWord::SUCCESS));
    assert_eq!(get_eid(&mut h, &mut card, &[0x4F]).sw.0, 0x6A80, "only the EID is defined");

    // A configured EID; and a card that is no eUICC keeps the request as personalization data.
    let mut p = CardProfile::builtin("ese").unwrap();
    p.quirks.euicc = true;
    let mine = [0x89, 0x04, 0x90, 0x32, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x12, 0x34];
    let card2 = SimCard::new(p, CardConfig { eid: Some(mine), ..CardConfig::default().seeded(1) }).unwrap();
    assert_eq!(card2.state().eid.as_deref(), Some(&mine[..]));
    let mut plain = card_with(Quirks::default(), SCP03, 7);
    let mut h = open_scp03(&mut plain, test_keys(), 0x01);
    assert_eq!(get_eid(&mut h, &mut plain, &[0x5A]), ResponseApdu::new(Vec::new(), StatusWord::SUCCESS));
}

// ---- R-ENC padding ----

#[test]
fn r_enc_padding_to_32_bytes_still_decrypts() {
    let c1 = CommandApdu::new(0x80, 0xCA, 0x00, 0xC1).with_le(256);
    let mut lens = Vec::new();
    for pad in [0u16, 32, 30] {
        let mut card = card_with(Quirks { r_enc_min_padded_len: pad, ..Quirks::default() }, SCP03, 8);
        let mut h = open_scp03(&mut card, test_keys(), 0x33);
        // Wire length, then what the host makes of it.
        let mut wire = c1.clone();
        wire = h.chan.wrap(&wire).unwrap();
        let raw = send_raw(&mut card, &wire);
        lens.push(raw.data.len());
        let r = h.chan.unwrap(&raw).unwrap();
        assert_eq!(r, ResponseApdu::new(vec![0xC1, 0x03, 0x00, 0x00, 0x01], StatusWord::SUCCESS));
        // Longer data is padded minimally once it is past the minimum.
        let big = h.send(&mut card, &GetStatus::new(StatusScope::ISD).to_apdu());
        assert_eq!(big.sw, StatusWord::SUCCESS);
    }
    // 5 bytes: one block, or two with the quirk (30 rounds up to 32); plus the 8-byte R-MAC.
    assert_eq!(lens, vec![16 + 8, 32 + 8, 32 + 8]);
}

// ---- key versions ----

#[test]
fn factory_keys_numbered_00() {
    let mut p = CardProfile::builtin("ese").unwrap();
    let keys = KeySet::single(SecretKey::aes(&hexv(TEST_KEY)).unwrap(), 0x00);
    let cfg = CardConfig::default().seeded(9).with_scp(SCP03).with_isd_keys(keys);
    assert!(SimCard::new(p.clone(), cfg.clone()).is_err(), "version 00 only with the quirk");
    p.quirks.key_version_00 = true;
    let mut card = SimCard::new(p, cfg).unwrap();
    let mut h = open_scp03(&mut card, aes_keys(TEST_KEY, 0x00), 0x01);
    // A new key set replaces the factory set numbered 00.
    let k = SecretKey::aes(&[0x21; 16]).unwrap();
    assert_eq!(put_key_set(&mut h, &mut card, 0, 0x01, [&k, &k, &k]).sw, StatusWord::SUCCESS);
    let e0 = h.send(&mut card, &CommandApdu::new(0x80, 0xCA, 0x00, 0xE0).with_le(256));
    let info = KeyInformation::from_bytes(&e0.data).unwrap();
    assert!(info.keys.iter().all(|k| k.version == 0x01), "{info:?}");
}

#[test]
fn init_update_key_version_ignored() {
    let iu = |p1: u8| CommandApdu::new(0x80, 0x50, p1, 0x00).with_data(vec![0x11; 8]).with_le(256);
    let mut strict = card_with(Quirks::default(), SCP03, 10);
    assert_eq!(send_raw(&mut strict, &iu(0x20)).sw.0, 0x6A88);
    let mut lax = card_with(Quirks { init_update_ignores_key_version: true, ..Quirks::default() }, SCP03, 10);
    let r = send_raw(&mut lax, &iu(0x20));
    assert_eq!((r.sw, r.data[10]), (StatusWord::SUCCESS, 0xFF), "answered with the card's key set");
}

// ---- INSTALL and LOAD response data ----

/// The response data of INSTALL [for load], each LOAD block (120-byte blocks) and INSTALL
/// [for install and make selectable].
fn content_answers(quirks: Quirks) -> Vec<Vec<u8>> {
    let mut card = card_with(quirks, SCP03, 11);
    let (v, lfdb) = helloworld();
    let mut h = open_scp03(&mut card, test_keys(), 0x03);
    let elf = Aid::new(&v.package).unwrap();
    let mut out = Vec::new();
    let r = h.send(&mut card, &Install::for_load(elf, None).to_apdu());
    out.push(r.data);
    for b in LoadFile::new(lfdb).blocks(120).unwrap() {
        let r = h.send(&mut card, &b.to_apdu());
        assert_eq!(r.sw, StatusWord::SUCCESS);
        out.push(r.data);
    }
    let app = Aid::new(&v.applet).unwrap();
    let i = Install::for_install(elf, app, app, Privileges::NONE, tsm_gp::gp::InstallParams(vec![0xC9, 0x00]), true);
    let r = h.send(&mut card, &i.to_apdu());
    assert_eq!(r.sw, StatusWord::SUCCESS);
    out.push(r.data);
    out
}

#[test]
fn install_and_load_answer_their_00_where_the_card_does() {
    let none: Vec<u8> = Vec::new();
    let z = vec![0x00];
    // 4 + 343 bytes in 120-byte blocks: three LOAD blocks.
    assert_eq!(content_answers(Quirks::default()), vec![z.clone(), none.clone(), none.clone(), z.clone(), z.clone()]);
    let q = Quirks { install_for_install_without_data: true, load_00_on_first_block: true, ..Quirks::default() };
    assert_eq!(content_answers(q), vec![z.clone(), z.clone(), none.clone(), none.clone(), none.clone()]);
}

// ---- GET STATUS formats ----

#[test]
fn get_status_without_modules_scope_and_minimal_entries() {
    let q = Quirks { no_get_status_modules: true, status_minimal_entries: true, status_one_byte_privileges: true, ..Quirks::default() };
    let mut card = card_with(q, SCP03, 12);
    let isd = card.state().isd();
    card.registry_mut().set_privileges(&isd, Privileges::from_bits(0x9E0000)).unwrap();
    let mut h = open_scp03(&mut card, test_keys(), 0x01);
    let modules = GetStatus::new(StatusScope::LOAD_FILES_AND_MODULES);
    assert_eq!(h.send(&mut card, &modules.to_apdu()).sw.0, 0x6A86);
    // The core's pager falls back to P1 = 20 (in the legacy format, as the G&D card of
    // GlobalPlatformPro issue #80 was asked).
    let mut pager = GetStatusPager::new(modules.legacy());
    let r = h.send(&mut card, &pager.first().to_apdu());
    let PagerStep::Next(next) = pager.feed(&r).unwrap() else { panic!("fallback expected") };
    assert_eq!(next.scope, StatusScope::LOAD_FILES);
    let r = h.send(&mut card, &next.to_apdu());
    let PagerStep::Done(elfs) = pager.feed(&r).unwrap() else { panic!() };
    assert_eq!(elfs[0].aid, SD_PACKAGE_AID);
    let tagged = h.send(&mut card, &GetStatus::new(StatusScope::LOAD_FILES).to_apdu());
    assert_eq!(tsm_gp::hex::encode(&tagged.data), "E30D4F07A00000015153509F700101", "minimal entries");
    let isd = h.send(&mut card, &GetStatus::new(StatusScope::ISD).to_apdu());
    // E3 { 4F ISD, 9F70 0F, C5 9E }.
    assert_eq!(tsm_gp::hex::encode(&isd.data), "E3114F08A0000001510000009F70010FC5019E");
    let legacy = h.send(&mut card, &GetStatus::new(StatusScope::ISD).legacy().to_apdu());
    assert_eq!(tsm_gp::hex::encode(&legacy.data), "08A0000001510000000F9E");
    let parsed: Vec<RegistryEntry> = tsm_gp::gp::status::parse_status_response(StatusScope::ISD, StatusFormat::Tagged, &isd.data).unwrap();
    assert!(parsed[0].privileges.unwrap().is_one_byte());
}

// ---- FCI and card identity ----

#[test]
fn fci_without_management_data_and_declared_identity() {
    let mut p = CardProfile::builtin("ese").unwrap();
    p.scp = vec![SCP03, Scp::Scp03 { i: 0x00 }, Scp::Scp03 { i: 0x60 }];
    p.quirks.fci_without_management_data = true;
    // Declared: privileges and cipher suites; an SCP template the card replaces with its own.
    let declared = tsm_gp::hex::decode("6710A0068001028101158103E5BEC0830102").unwrap();
    let identity = CardIdentity {
        gp_version: vec![2, 3],
        card_config_details: Some(tsm_gp::hex::decode("2A864886FC6B0507020000").unwrap()),
        card_chip_details: Some(tsm_gp::hex::decode("2B060104012A026E0103").unwrap()),
        capabilities: Some(declared.clone()),
    };
    let cfg = CardConfig { identity: identity.clone(), ..CardConfig::default().seeded(13).with_scp(SCP03) };
    let mut card = SimCard::new(p.clone(), cfg.clone()).unwrap();
    assert_eq!(tsm_gp::hex::encode(&select(&mut card, ISD).data), "6F118408A000000151000000A5059F65027FFF");
    let crd = send_raw(&mut card, &CommandApdu::new(0x80, 0xCA, 0x00, 0x66).with_le(256));
    let crd = CardRecognitionData::from_bytes(&crd.data).unwrap();
    assert_eq!(crd.gp_version().as_deref(), Some("2.3"));
    assert_eq!(crd.card_config_details().unwrap().0, identity.card_config_details.clone().unwrap());
    assert_eq!(crd.card_chip_details().unwrap().0, identity.card_chip_details.clone().unwrap());
    assert_eq!(crd.scps().iter().map(|s| s.i).collect::<Vec<_>>(), vec![0x70]);
    let caps = send_raw(&mut card, &CommandApdu::new(0x80, 0xCA, 0x00, 0x67).with_le(256));
    let caps = CardCapabilities::parse(&caps.data).unwrap();
    let mine = CardCapabilities::parse(&declared).unwrap();
    assert_eq!(caps.ssd_privileges, mine.ssd_privileges);
    assert_eq!(caps.lfdb_hash_algorithms, mine.lfdb_hash_algorithms);
    assert_eq!((caps.scp.len(), caps.scp[0].id, caps.scp[0].options.clone()), (1, 0x03, vec![0x00, 0x60, 0x70]), "the card's own SCP part, options ascending");
    // Something that is no Card Capability Information is refused when the card is made.
    let bad = CardConfig { identity: CardIdentity { capabilities: Some(vec![0x67, 0x05, 0x01]), ..identity }, ..cfg };
    assert!(SimCard::new(p, bad).is_err());
}
