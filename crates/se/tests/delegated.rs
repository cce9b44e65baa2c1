//! Delegated Management end to end, in process: the host session of `tsm_gp` against the
//! simulated card, under SCP03 (AES receipt key) and SCP02 (3DES receipt key).
//!
//! The Card Issuer (ISD keys) creates a supplementary security domain with the Delegated
//! Management privilege and loads the Token Verification key (ECDSA P-256) and the Receipt
//! Generation key into the ISD. The service provider, with nothing but the SSD's keys and the
//! tokens the issuer signs, loads, installs and deletes a CAP file of `testdata/vectors/cap` in
//! its SSD; every receipt verifies with the issuer's receipt key. A command without a token,
//! with a token made for another command (other AID, other P1, other SD) or signed by another
//! key is refused and changes nothing; an SSD without Delegated (or Authorized) Management is
//! refused even with a valid token; a replayed DELETE token after the object is gone finds
//! nothing. The keys survive a state save and load (public key in clear, receipt key sealed).

use tsm_gp::cap::{CapFile, HashAlgorithm};
use tsm_gp::crypto::SecretKey;
use tsm_gp::crypto::ecc::P256SigningKey;
use tsm_gp::gp::data::{GpDataObject, KeyInformation};
use tsm_gp::gp::delegated::ReceiptSubject;
use tsm_gp::gp::{Aid, InstallParams, Privilege, Privileges};
use tsm_gp::profile::CardProfile;
use tsm_gp::scp::Scp;
use tsm_gp::session::{CardKeys, GpSession, OpenOptions, Secure, SessionConfig, SessionError, TokenIssuer, check_receipt};
use tsm_se::{CardConfig, CardState, SimCard};

const TEST_KEY: [u8; 16] = tsm_se::GP_TEST_KEY;
const SSD: &str = "A0000005591010FFFFFFFF8900000100";
const PLAIN_SSD: &str = "A0000005591010FFFFFFFF8900000200";
const AM_SSD: &str = "A0000005591010FFFFFFFF8900000300";

type Card<'a> = GpSession<&'a mut SimCard, Secure>;

fn aid(s: &str) -> Aid {
    s.parse().unwrap()
}

fn helloworld() -> CapFile {
    let p = tsm_gp::testdata_dir().join("vectors/cap/kaoh_helloworld.cap");
    CapFile::parse(&std::fs::read(p).unwrap()).unwrap()
}

fn counter_random(seed: u8) -> impl FnMut(&mut [u8]) + Send {
    let mut n = seed;
    move |b: &mut [u8]| {
        n = n.wrapping_add(1);
        b.iter_mut().enumerate().for_each(|(i, x)| *x = n.wrapping_mul(29).wrapping_add(i as u8));
    }
}

fn new_card(scp: Scp) -> SimCard {
    let cfg = CardConfig { iin: Some(vec![0x42, 0x01, 0x02]), cin: Some(vec![0x45, 0x0A, 0x0B, 0x0C]), ..CardConfig::default() };
    SimCard::new(CardProfile::builtin("uicc").unwrap(), cfg.with_scp(scp).seeded(11)).unwrap()
}

/// Selects `sd` (the ISD when `None`) and opens a secure channel with the GP test key.
fn open<'a>(card: &'a mut SimCard, sd: Option<&str>) -> Card<'a> {
    let config = SessionConfig::from_profile(&card.state().profile);
    let mut s = GpSession::new(card, config).with_random(counter_random(3));
    match sd {
        Some(a) => {
            s.select(aid(a).as_bytes()).unwrap();
        }
        None => {
            s.select_isd().unwrap();
        }
    }
    s.open_secure_channel(CardKeys::single(&TEST_KEY, 0), None, &OpenOptions::new()).map_err(|(_, e)| e).unwrap()
}

fn state(s: &Card<'_>) -> CardState {
    s.transport().state().clone()
}

fn sw(r: Result<impl Sized, SessionError>) -> u16 {
    match r {
        Ok(_) => 0x9000,
        Err(e) => e.status_word().unwrap_or_else(|| panic!("not a card refusal: {e}")).0,
    }
}

/// Runs `f`, which the card must refuse with `expected`, and checks that the card state
/// did not change.
fn refused<T>(s: &mut Card<'_>, expected: u16, what: &str, f: impl FnOnce(&mut Card<'_>) -> Result<T, SessionError>) {
    let before = state(s);
    let got = sw(f(s));
    assert_eq!(got, expected, "{what}: status {got:04X}");
    assert!(state(s) == before, "{what}: the card state changed");
}

struct Issuer {
    signer: P256SigningKey,
    receipt_key: SecretKey,
}

/// The issuer's setup through the ISD: SSDs and the delegated management keys.
fn issue(card: &mut SimCard, issuer: &Issuer) {
    let mut s = open(card, None);
    let dm: Privileges = [Privilege::SecurityDomain, Privilege::DelegatedManagement].into_iter().collect();
    let am: Privileges = [Privilege::SecurityDomain, Privilege::AuthorizedManagement].into_iter().collect();
    let params = InstallParams::application_specific(&[]);
    s.create_ssd(aid(SSD), dm, &params).unwrap();
    s.create_ssd(aid(PLAIN_SSD), Privileges::NONE, &params).unwrap();
    s.create_ssd(aid(AM_SSD), am, &params).unwrap();
    let r = s.put_token_key(&issuer.signer.public_key(), false).unwrap();
    assert_eq!((r.version, r.kcvs.len()), (0x70, 0), "a public key has no KCV");
    let r = s.put_receipt_key(&issuer.receipt_key, false).unwrap();
    assert_eq!((r.version, r.kcvs.clone()), (0x71, vec![issuer.receipt_key.kcv().to_vec()]));
    // The ISD lists both keys: 70/01 as B0 (65 bytes) + F0 (1), 71/01 as the receipt key.
    let ki = match GpDataObject::parse(&s.get_data(0x00E0).unwrap()).unwrap() {
        GpDataObject::KeyInformation(KeyInformation { keys }) => keys,
        o => panic!("{o}"),
    };
    let token_key = ki.iter().find(|k| k.version == 0x70).unwrap();
    assert_eq!(token_key.components.iter().map(|c| (c.key_type, c.length)).collect::<Vec<_>>(), vec![(0xB0, 65), (0xF0, 1)]);
    assert!(ki.iter().any(|k| (k.version, k.id) == (0x71, 1)));
    // Replacing the token key with the same point works; adding it twice does not.
    assert_eq!(sw(s.put_token_key(&issuer.signer.public_key(), false)), 0x6A80);
    s.put_token_key(&issuer.signer.public_key(), true).unwrap();
}

fn confirmation_counter(card: &mut SimCard) -> u16 {
    let mut s = open(card, None);
    let d = s.get_data(0x00C2).unwrap();
    assert_eq!(&d[..2], &[0xC2, 0x02]);
    u16::from_be_bytes([d[2], d[3]])
}

fn lifecycle(scp: Scp, receipt_key: SecretKey) {
    let issuer = Issuer { signer: P256SigningKey::from_bytes(&[0x5E; 32]).unwrap(), receipt_key };
    let rogue = P256SigningKey::from_bytes(&[0x66; 32]).unwrap();
    let tokens = TokenIssuer::new(&issuer.signer);
    let forged = TokenIssuer::new(&rogue);
    let mut card = new_card(scp);
    issue(&mut card, &issuer);

    let cap = helloworld();
    let elf = Aid::new(cap.package_aid()).unwrap();
    let module = Aid::new(&cap.applets()[0].aid).unwrap();
    let app = module;
    let ssd = aid(SSD);
    let hash = cap.load_file_hash(HashAlgorithm::Sha256, false);
    let load_params = InstallParams::default();
    let inst_params = InstallParams::application_specific(&[]);
    let cud = [vec![0x42, 0x01, 0x02], vec![0x45, 0x0A, 0x0B, 0x0C]].concat();

    // ---- The service provider, with the SSD's own keys. ----
    let mut s = open(&mut card, Some(SSD));
    // No token, a token for another SD field, signed by another key, without the hash: 6A80.
    refused(&mut s, 0x6A80, "INSTALL [for load] without token", |s| s.install_for_load(elf, Some(ssd), &hash, &load_params));
    let for_other_sd = tokens.load_token(elf, None, &hash, &load_params).unwrap();
    refused(&mut s, 0x6A80, "load token for another SD field", |s| {
        s.install_for_load_delegated(elf, Some(ssd), &hash, &load_params, for_other_sd)
    });
    let rogue_token = forged.load_token(elf, Some(ssd), &hash, &load_params).unwrap();
    refused(&mut s, 0x6A80, "load token of another key", |s| s.install_for_load_delegated(elf, Some(ssd), &hash, &load_params, rogue_token));
    let no_hash = tokens.load_token(elf, Some(ssd), &[], &load_params).unwrap();
    refused(&mut s, 0x6A80, "delegated load without hash", |s| s.install_for_load_delegated(elf, Some(ssd), &[], &load_params, no_hash));

    // The load: no receipt for INSTALL [for load], the Load Receipt with the last block.
    let t = tokens.load_token(elf, Some(ssd), &hash, &load_params).unwrap();
    assert_eq!(s.install_for_load_delegated(elf, Some(ssd), &hash, &load_params, t).unwrap(), None);
    let receipt = s.load_delegated(&cap, None, false, &mut |_, _| {}).unwrap().expect("a load receipt");
    check_receipt(Some(&receipt), &issuer.receipt_key, &ReceiptSubject::Load { elf, sd: ssd }, "LOAD").unwrap();
    assert_eq!(receipt.confirmation.counter_value(), Some(1));
    assert_eq!(receipt.confirmation.card_unique_data, cud, "IIN ‖ CIN");
    assert_eq!(receipt.receipt.len(), if scp.id() == 0x03 { 16 } else { 8 });
    // The receipt proves this load and nothing else.
    assert!(check_receipt(Some(&receipt), &issuer.receipt_key, &ReceiptSubject::Load { elf, sd: aid(AM_SSD) }, "LOAD").is_err());

    // Install: a token for another instance AID, or for [for install] only (P1 04 vs 0C).
    let other_app = tokens.install_token(elf, module, aid("D0D1D2D3D4D50199"), Privileges::NONE, &inst_params, true).unwrap();
    refused(&mut s, 0x6A80, "install token for another AID", |s| s.install_delegated(elf, module, app, Privileges::NONE, &inst_params, true, other_app));
    let other_p1 = tokens.install_token(elf, module, app, Privileges::NONE, &inst_params, false).unwrap();
    refused(&mut s, 0x6A80, "install token for another P1", |s| {
        s.install_delegated(elf, module, app, Privileges::NONE, &inst_params, true, other_p1)
    });
    refused(&mut s, 0x6A80, "install without token", |s| s.install_and_make_selectable(elf, module, app, Privileges::NONE, &inst_params));
    let t = tokens.install_token(elf, module, app, Privileges::NONE, &inst_params, true).unwrap();
    let r = s.install_delegated(elf, module, app, Privileges::NONE, &inst_params, true, t).unwrap();
    check_receipt(r.as_ref(), &issuer.receipt_key, &ReceiptSubject::Install { elf, app }, "INSTALL").unwrap();
    assert_eq!(r.unwrap().confirmation.counter_value(), Some(2));
    let listed = s.list().unwrap();
    assert_eq!(listed.find(&app).and_then(|e| e.associated_sd), Some(ssd));
    assert_eq!(listed.find(&elf).and_then(|e| e.associated_sd), Some(ssd));

    // Delete: without a token, with a token for the load file instead of the instance, with
    // one of another key.
    refused(&mut s, 0x6A80, "delete without token", |s| s.delete(app, false));
    let for_elf = tokens.delete_token(elf, false).unwrap();
    refused(&mut s, 0x6A80, "delete token for another AID", |s| s.delete_delegated(app, false, for_elf));
    let rogue_delete = forged.delete_token(app, false).unwrap();
    refused(&mut s, 0x6A80, "delete token of another key", |s| s.delete_delegated(app, false, rogue_delete));
    let t = tokens.delete_token(app, false).unwrap();
    let r = s.delete_delegated(app, false, t.clone()).unwrap();
    check_receipt(r.as_ref(), &issuer.receipt_key, &ReceiptSubject::Delete { aid: app }, "DELETE").unwrap();
    // Replayed once the instance is gone: the token verifies, there is nothing to delete.
    refused(&mut s, 0x6A88, "replayed delete token", |s| s.delete_delegated(app, false, t));
    let t = tokens.delete_token(elf, true).unwrap();
    let r = s.delete_delegated(elf, true, t).unwrap().unwrap();
    r.verify(&issuer.receipt_key, &ReceiptSubject::Delete { aid: elf }).unwrap();
    assert_eq!(r.confirmation.counter_value(), Some(4));
    assert!(s.list().unwrap().find(&elf).is_none());
    drop(s);
    assert_eq!(confirmation_counter(&mut card), 4, "GET DATA C2 on the ISD");

    // ---- An SSD without Delegated or Authorized Management: refused, token or not. ----
    let plain = aid(PLAIN_SSD);
    let mut s = open(&mut card, Some(PLAIN_SSD));
    let t = tokens.load_token(elf, Some(plain), &hash, &load_params).unwrap();
    refused(&mut s, 0x6985, "SSD without DM, valid token", |s| s.install_for_load_delegated(elf, Some(plain), &hash, &load_params, t));
    refused(&mut s, 0x6985, "SSD without DM, no token", |s| s.install_for_load(elf, Some(plain), &hash, &load_params));
    drop(s);

    // ---- Authorized Management needs no token and gets no receipt. ----
    let am = aid(AM_SSD);
    let mut s = open(&mut card, Some(AM_SSD));
    s.install_for_load(elf, Some(am), &hash, &load_params).unwrap();
    s.load(&cap, None, false, &mut |_, _| {}).unwrap();
    s.delete(elf, true).unwrap();
    drop(s);
    assert_eq!(confirmation_counter(&mut card), 4);

    // ---- The state saves and loads: the public key in clear, the receipt key sealed. ----
    let storage = SecretKey::aes(&[0x21; 32]).unwrap();
    let sealed = card.sealed_state(&storage).unwrap();
    let json = serde_json::to_string(&sealed).unwrap();
    let point = tsm_gp::hex::encode(&issuer.signer.public_key().to_sec1_uncompressed());
    assert!(json.contains(&point), "the token key is public: stored in clear");
    assert!(!json.contains(&tsm_gp::hex::encode(issuer.receipt_key.expose())), "the receipt key is sealed");
    assert_eq!(sealed.confirmation_counter, 4);
    let mut card = SimCard::from_state(sealed, &storage).unwrap();
    let mut s = open(&mut card, Some(SSD));
    let t = tokens.load_token(elf, Some(ssd), &hash, &load_params).unwrap();
    s.install_for_load_delegated(elf, Some(ssd), &hash, &load_params, t).unwrap();
    let r = s.load_delegated(&cap, None, false, &mut |_, _| {}).unwrap();
    check_receipt(r.as_ref(), &issuer.receipt_key, &ReceiptSubject::Load { elf, sd: ssd }, "LOAD").unwrap();
    assert_eq!(r.unwrap().confirmation.counter_value(), Some(5), "the counter survived the reload");
}

#[test]
fn delegated_lifecycle_scp03_aes_receipts() {
    lifecycle(Scp::Scp03 { i: 0x70 }, SecretKey::aes(&[0x71; 16]).unwrap());
}

#[test]
fn delegated_lifecycle_scp02_des_receipts() {
    lifecycle(Scp::Scp02 { i: 0x55 }, SecretKey::des3(&[0x17, 0x28, 0x39, 0x4A, 0x5B, 0x6C, 0x7D, 0x8E, 0x9F, 0xA1, 0xB2, 0xC3, 0xD4, 0xE5, 0xF6, 0x07]).unwrap());
}

#[test]
fn make_selectable_extradition_and_registry_update_under_delegation() {
    let issuer = Issuer { signer: P256SigningKey::from_bytes(&[0x5E; 32]).unwrap(), receipt_key: SecretKey::aes(&[0x33; 32]).unwrap() };
    let tokens = TokenIssuer::new(&issuer.signer);
    let mut card = new_card(Scp::Scp03 { i: 0x70 });
    issue(&mut card, &issuer);
    let cap = helloworld();
    let elf = Aid::new(cap.package_aid()).unwrap();
    let module = Aid::new(&cap.applets()[0].aid).unwrap();
    let (ssd, app) = (aid(SSD), aid("D0D1D2D3D4D50142"));
    let hash = cap.load_file_hash(HashAlgorithm::Sha1, false);
    let params = InstallParams::application_specific(&[]);

    let mut s = open(&mut card, Some(SSD));
    let t = tokens.load_token(elf, None, &hash, &InstallParams::default()).unwrap();
    s.install_for_load_delegated(elf, None, &hash, &InstallParams::default(), t).unwrap();
    s.load_delegated(&cap, None, false, &mut |_, _| {}).unwrap().unwrap().verify(&issuer.receipt_key, &ReceiptSubject::Load { elf, sd: ssd }).unwrap();
    let t = tokens.install_token(elf, module, app, Privileges::NONE, &params, false).unwrap();
    s.install_delegated(elf, module, app, Privileges::NONE, &params, false, t).unwrap();
    // INSTALL [for make selectable]: its own token; the Install Receipt names the load file.
    refused(&mut s, 0x6A80, "make selectable without token", |s| s.make_selectable(app, Privileges::NONE));
    let t = tokens.make_selectable_token(app, Privileges::NONE).unwrap();
    let r = s.make_selectable_delegated(app, Privileges::NONE, t).unwrap();
    check_receipt(r.as_ref(), &issuer.receipt_key, &ReceiptSubject::Install { elf, app }, "INSTALL").unwrap();

    // Registry update of its own application (no change of SD, no privileges).
    let t = tokens.registry_update_token(None, Some(app), None).unwrap();
    let r = s.registry_update_delegated(None, Some(app), None, t).unwrap();
    let subject = ReceiptSubject::RegistryUpdate { from_sd: Some(ssd), app: Some(app), to_sd: None, privileges: None, params: vec![] };
    check_receipt(r.as_ref(), &issuer.receipt_key, &subject, "INSTALL").unwrap();

    // Extradition of the application to the AM SSD: the token names the target SD.
    let am = aid(AM_SSD);
    let wrong_target = tokens.extradition_token(aid(PLAIN_SSD), app).unwrap();
    refused(&mut s, 0x6A80, "extradition token for another SD", |s| s.extradite_delegated(am, app, wrong_target));
    let t = tokens.extradition_token(am, app).unwrap();
    let r = s.extradite_delegated(am, app, t).unwrap();
    check_receipt(r.as_ref(), &issuer.receipt_key, &ReceiptSubject::Extradition { from_sd: ssd, object: app, to_sd: am }, "INSTALL").unwrap();
    // The application is no longer the SSD's: a valid token does not make it so.
    let t = tokens.delete_token(app, false).unwrap();
    refused(&mut s, 0x6985, "delete of another SD's application", |s| s.delete_delegated(app, false, t));
    drop(s);
    assert_eq!(confirmation_counter(&mut card), 5, "load, install, make selectable, registry update, extradition");
}

#[test]
fn without_keys_the_card_refuses_tokens_and_gives_no_receipt() {
    let signer = P256SigningKey::from_bytes(&[0x5E; 32]).unwrap();
    let tokens = TokenIssuer::new(&signer);
    let mut card = new_card(Scp::Scp03 { i: 0x70 });
    {
        let mut s = open(&mut card, None);
        let dm: Privileges = [Privilege::SecurityDomain, Privilege::DelegatedManagement].into_iter().collect();
        s.create_ssd(aid(SSD), dm, &InstallParams::application_specific(&[])).unwrap();
        // An SSD cannot take the delegated management keys (it lacks the privileges).
        let mut ssd = open(s.into_transport(), Some(SSD));
        assert_eq!(sw(ssd.put_token_key(&signer.public_key(), false)), 0x6985);
    }
    let cap = helloworld();
    let elf = Aid::new(cap.package_aid()).unwrap();
    let hash = cap.load_file_hash(HashAlgorithm::Sha256, false);
    let ssd = aid(SSD);
    // No Token Verification key in the ISD: tokens cannot be checked.
    let mut s = open(&mut card, Some(SSD));
    let t = tokens.load_token(elf, Some(ssd), &hash, &InstallParams::default()).unwrap();
    refused(&mut s, 0x6985, "no token key", |s| s.install_for_load_delegated(elf, Some(ssd), &hash, &InstallParams::default(), t.clone()));
    drop(s);
    // With the token key but no receipt key: the command goes through, answering 00.
    let mut s = open(&mut card, None);
    s.put_token_key(&signer.public_key(), false).unwrap();
    drop(s);
    let mut s = open(&mut card, Some(SSD));
    assert_eq!(s.install_for_load_delegated(elf, Some(ssd), &hash, &InstallParams::default(), t).unwrap(), None);
    assert_eq!(s.load_delegated(&cap, None, false, &mut |_, _| {}).unwrap(), None);
    assert!(matches!(check_receipt(None, &SecretKey::aes(&[1; 16]).unwrap(), &ReceiptSubject::Load { elf, sd: ssd }, "LOAD"), Err(e) if e.code() == "dm.no_receipt"));
}
