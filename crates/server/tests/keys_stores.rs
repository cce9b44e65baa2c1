//! One test suite over every key store: the software store on each database backend (see
//! `tsm_server::store::testing`) and the PKCS#11 store on SoftHSM2 (a token in a temporary
//! directory, initialized with `softhsm2-util`). Known answers come from
//! `testdata/vectors/kdf/gppro_key_diversification_and_session_keys.txt`.

mod support;

use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};
use tsm_gp::crypto::diversify::{Diversification, KeyRole};
use tsm_gp::crypto::kdf::{constant, scp03_kdf};
use tsm_gp::crypto::{KeyAlg, SecretKey, SymmetricKey, cbc_decrypt, ecb_decrypt};
use tsm_gp::hex::{decode, encode};
use tsm_gp::recording::{Section, parse_ini};
use tsm_gp::scp::StaticKeys;
use tsm_gp::scp::scp02::{IParam, SessionKeys};
use tsm_server::keys::*;
use tsm_server::store::testing::databases;

fn vectors() -> Vec<Section> {
    let p = tsm_gp::testdata_dir().join("vectors/kdf/gppro_key_diversification_and_session_keys.txt");
    parse_ini(&std::fs::read_to_string(p).unwrap()).unwrap()
}
fn section<'a>(v: &'a [Section], name: &str) -> &'a Section {
    v.iter().find(|s| s.name == name).unwrap_or_else(|| panic!("no section {name}"))
}
fn hx(s: &Section, key: &str) -> Vec<u8> {
    s.hex(key).unwrap().unwrap_or_else(|| panic!("{}: no {key}", s.name))
}
fn kcv3(v: &[u8]) -> [u8; 3] {
    v.try_into().unwrap()
}
fn id(s: String) -> KeyId {
    KeyId::new(s).unwrap()
}
/// Two blocks through a key, to compare a store's key with a known value.
fn fingerprint(k: &dyn SymmetricKey) -> Vec<u8> {
    k.encrypt_ecb(&vec![0x5A; k.alg().block_len() * 2]).unwrap()
}

/// What a store supports beyond the contract's common part.
struct Caps {
    sm4: bool,
}

/// The shared suite. `p` makes key ids unique per run (stores may be shared).
fn suite(ks: &dyn KeyStore, p: &str, caps: Caps) {
    let v = vectors();
    let test_key = decode("404142434445464748494A4B4C4D4E4F").unwrap();

    // --- import / info / handle / delete, error codes ---
    let k1 = id(format!("se/{p}/isd/30/enc"));
    assert!(ks.info(&k1).unwrap().is_none());
    assert_eq!(ks.handle(&k1).err().unwrap().code(), "keys.not_found");
    let info = ks.import(&k1, KeyAlg::Des3_2k, &test_key).unwrap();
    // SCP01 vector: the static DEK 40..4F has KCV 8BAF47 (3DES-ECB of zeros).
    assert_eq!(info, KeyInfo { alg: KeyAlg::Des3_2k, kcv: kcv3(&hx(section(&v, "gppro-scp01-session-keys-zero-context"), "source.kcv_dek")) });
    assert_eq!(ks.info(&k1).unwrap(), Some(info));
    assert_eq!(ks.import(&k1, KeyAlg::Des3_2k, &test_key).unwrap_err().code(), "keys.already_exists");
    assert_eq!(ks.generate(&k1, KeyAlg::Des3_2k).unwrap_err().code(), "keys.already_exists");
    assert_eq!(ks.import(&id(format!("se/{p}/short")), KeyAlg::Aes128, &[0; 15]).unwrap_err().code(), "keys.invalid_value");
    let h = ks.handle(&k1).unwrap();
    assert_eq!(fingerprint(&*h), fingerprint(&SecretKey::des3(&test_key).unwrap()));
    assert_eq!(h.kcv().unwrap(), info.kcv);
    ks.delete(&k1).unwrap();
    assert!(ks.info(&k1).unwrap().is_none());
    ks.delete(&k1).unwrap(); // deleting a missing key is fine

    // --- generate every algorithm ---
    let mut algs = vec![KeyAlg::Des3_2k, KeyAlg::Des3_3k, KeyAlg::Aes128, KeyAlg::Aes192, KeyAlg::Aes256];
    if caps.sm4 {
        algs.push(KeyAlg::Sm4);
    }
    for alg in algs {
        let g = id(format!("se/{p}/gen/{alg:?}"));
        let info = ks.generate(&g, alg).unwrap();
        assert_eq!(info.alg, alg);
        let h = ks.handle(&g).unwrap();
        assert_eq!((h.alg(), h.kcv().unwrap()), (alg, info.kcv));
        let bs = alg.block_len();
        let data = vec![7u8; bs * 2];
        assert_ne!(h.encrypt_cbc(&vec![0; bs], &data).unwrap(), data);
        assert!(matches!(h.encrypt_ecb(&data[..bs - 1]), Err(tsm_gp::crypto::CryptoError::NotBlockAligned { .. })));
        assert_eq!(h.cmac(&data).is_ok(), !alg.is_des());
    }
    if !caps.sm4 {
        assert_eq!(ks.generate(&id(format!("se/{p}/gen/sm4")), KeyAlg::Sm4).unwrap_err().code(), "keys.unsupported");
    }

    // --- diversification: KCVs and key values of the GPPro vectors ---
    for (name, alg_of) in [
        ("gppro-diversify-emv-cps11", Diversification::EmvCps11),
        ("gppro-diversify-visa2", Diversification::Visa2),
        ("gppro-diversify-kdf3-aes128", Diversification::Kdf3),
        ("gppro-diversify-kdf3-aes192", Diversification::Kdf3),
        ("gppro-diversify-kdf3-aes256", Diversification::Kdf3),
    ] {
        let s = section(&v, name);
        let mk = hx(s, "master_key");
        let alg = if alg_of == Diversification::Kdf3 { KeyAlg::aes_for_len(mk.len()).unwrap() } else { KeyAlg::Des3_2k };
        let master = id(format!("issuer/{p}/{name}/master"));
        ks.import(&master, alg, &mk).unwrap();
        let kdd = hx(s, "kdd");
        for (role, tag) in [(KeyRole::Enc, "enc"), (KeyRole::Mac, "mac"), (KeyRole::Dek, "dek")] {
            let k = ks.diversify(&master, alg_of, &kdd, role).unwrap();
            assert_eq!(k.kcv().unwrap(), kcv3(&hx(s, &format!("source.kcv_{tag}"))), "{name} {tag}");
            let expected = SecretKey::new(k.alg(), &hx(s, &format!("derived.{tag}"))).unwrap();
            assert_eq!(fingerprint(&*k), fingerprint(&expected), "{name} {tag}");
        }
    }
    let s = section(&v, "gppro-diversify-kdf3-external-vector");
    let master = id(format!("issuer/{p}/kdf3-external/master"));
    ks.import(&master, KeyAlg::Aes256, &hx(s, "master_key")).unwrap();
    let enc = ks.diversify(&master, Diversification::Kdf3, &hx(s, "kdd"), KeyRole::Enc).unwrap();
    assert_eq!(fingerprint(&*enc), fingerprint(&SecretKey::aes(&hx(s, "source.enc")).unwrap()));

    // --- session keys through handles, as the secure channels derive them ---
    // SCP02 (GPPro seq 0000): StaticKeys made of store handles.
    let s = section(&v, "gppro-scp02-session-keys-seq0000");
    let st = id(format!("se/{p}/scp02/static"));
    ks.import(&st, KeyAlg::Des3_2k, &hx(s, "static_key")).unwrap();
    let h = ks.handle(&st).unwrap();
    let keys = StaticKeys { enc: h.clone(), mac: h.clone(), dek: h.clone(), version: 0x20 };
    let seq = u16::from_be_bytes(hx(s, "sequence_counter").try_into().unwrap());
    let sk = SessionKeys::derive(&keys, IParam(0x55), seq).unwrap();
    let kcvs = sk.kcvs();
    assert_eq!(kcvs.s_enc, kcv3(&hx(s, "source.kcv_s_enc")));
    assert_eq!(kcvs.s_mac, kcv3(&hx(s, "source.kcv_s_mac")));
    assert_eq!(kcvs.s_rmac, kcv3(&hx(s, "source.kcv_s_rmac")));
    assert_eq!(kcvs.s_dek, kcv3(&hx(s, "source.kcv_s_dek")));
    let soft = StaticKeys::single(SecretKey::des3(&hx(s, "static_key")).unwrap(), 0x20);
    assert_eq!(SessionKeys::derive(&soft, IParam(0x55), seq).unwrap().s_enc, sk.s_enc, "handle = software");
    // SCP03 (GPPro, context = KDD): the Amendment D KDF through a handle.
    let s = section(&v, "gppro-scp03-session-keys-context-kdd");
    let st = id(format!("se/{p}/scp03/static"));
    let info = ks.import(&st, KeyAlg::Aes128, &hx(s, "static_key")).unwrap();
    assert_eq!(info.kcv, kcv3(&hx(s, "source.kcv_dek")));
    let h = ks.handle(&st).unwrap();
    let soft = SecretKey::aes(&hx(s, "static_key")).unwrap();
    let ctx = hx(s, "context");
    for (c, tag) in [(constant::S_ENC, "s_enc"), (constant::S_MAC, "s_mac"), (constant::S_RMAC, "s_rmac")] {
        let derived = scp03_kdf(&*h, c, &ctx, 16).unwrap();
        assert_eq!(&derived[..], &scp03_kdf(&soft, c, &ctx, 16).unwrap()[..], "{tag}: handle = software");
        assert_eq!(SecretKey::aes(&derived).unwrap().kcv(), kcv3(&hx(s, &format!("source.kcv_{tag}"))), "{tag}");
    }
    let _ = StaticKeys { enc: h.clone(), mac: h.clone(), dek: h, version: 0x30 };

    // --- wrapping ---
    // SCP02 PUT KEY vector: key and DEK 40..4F, sequence counter 0000.
    let s = section(&v, "gppro-put-key-encryption");
    let dek = id(format!("se/{p}/isd/20/dek"));
    let newk = id(format!("se/{p}/isd/21/enc"));
    ks.import(&dek, KeyAlg::Des3_2k, &test_key).unwrap();
    ks.import(&newk, KeyAlg::Des3_2k, &test_key).unwrap();
    let scp02 = Wrapping::Scp02 { dek: WrappingKey::Stored(dek.clone()), sequence_counter: 0 };
    assert_eq!(ks.wrap(&newk, &scp02).unwrap(), hx(s, "source.scp02_encrypted_key"));
    // A generated key wrapped for SCP02 decrypts (software) to a key with the store's KCV.
    let g2 = id(format!("se/{p}/gen/Des3_2k"));
    let w = ks.wrap(&g2, &Wrapping::Scp02 { dek: WrappingKey::Stored(dek.clone()), sequence_counter: 0x0102 }).unwrap();
    let sdek = SecretKey::des3(&SecretKey::des3(&test_key).unwrap().encrypt_cbc(&[0; 8], &decode("01810102000000000000000000000000").unwrap()).unwrap()).unwrap();
    let clear = ecb_decrypt(&sdek, &w).unwrap();
    assert_eq!(SecretKey::des3(&clear).unwrap().kcv(), ks.info(&g2).unwrap().unwrap().kcv);

    // SCP03: AES-CBC, zero ICV, under the static DEK; checked by decrypting in software.
    let dek_value = decode("000102030405060708090A0B0C0D0E0F").unwrap();
    let dek3 = id(format!("se/{p}/isd/30/dek"));
    ks.import(&dek3, KeyAlg::Aes128, &dek_value).unwrap();
    let soft_dek = SecretKey::aes(&dek_value).unwrap();
    let known = decode("11223344556677889900AABBCCDDEEFF").unwrap();
    let k3 = id(format!("se/{p}/isd/31/enc"));
    ks.import(&k3, KeyAlg::Aes128, &known).unwrap();
    let scp03 = Wrapping::Scp03 { dek: WrappingKey::Stored(dek3.clone()) };
    let w = ks.wrap(&k3, &scp03).unwrap();
    assert_eq!(w, soft_dek.encrypt_cbc(&[0; 16], &known).unwrap());
    assert_eq!(cbc_decrypt(&soft_dek, &[0; 16], &w).unwrap(), known);
    for alg in [KeyAlg::Aes128, KeyAlg::Aes192, KeyAlg::Aes256] {
        let g = id(format!("se/{p}/gen/{alg:?}"));
        let w = ks.wrap(&g, &scp03).unwrap();
        assert_eq!(w.len(), alg.key_len().div_ceil(16) * 16, "{alg:?}: zero padded to the block");
        let clear = cbc_decrypt(&soft_dek, &[0; 16], &w).unwrap();
        assert!(clear[alg.key_len()..].iter().all(|&b| b == 0));
        assert_eq!(SecretKey::new(alg, &clear[..alg.key_len()]).unwrap().kcv(), ks.info(&g).unwrap().unwrap().kcv, "{alg:?}");
    }

    // Wrapping under a diversified DEK equals wrapping under the derived key itself.
    let s = section(&v, "gppro-diversify-emv-cps11");
    let master = id(format!("issuer/{p}/gppro-diversify-emv-cps11/master"));
    let via_div = Wrapping::Scp02 { dek: WrappingKey::Diversified { master: master.clone(), method: Diversification::EmvCps11, kdd: hx(s, "kdd"), role: KeyRole::Dek }, sequence_counter: 7 };
    let derived_dek = id(format!("se/{p}/isd/emv/dek"));
    ks.import(&derived_dek, KeyAlg::Des3_2k, &hx(s, "derived.dek")).unwrap();
    let via_stored = Wrapping::Scp02 { dek: WrappingKey::Stored(derived_dek), sequence_counter: 7 };
    assert_eq!(ks.wrap(&newk, &via_div).unwrap(), ks.wrap(&newk, &via_stored).unwrap());

    // Master keys never leave the store, not even wrapped.
    assert_eq!(ks.wrap(&master, &scp02).unwrap_err().code(), "keys.not_wrappable");
    // SCP02 needs a 3DES DEK.
    assert_eq!(ks.wrap(&newk, &Wrapping::Scp02 { dek: WrappingKey::Stored(dek3), sequence_counter: 0 }).unwrap_err().code(), "keys.unsupported");
    assert_eq!(ks.wrap(&id(format!("se/{p}/missing")), &scp02).unwrap_err().code(), "keys.not_found");
}

// ---------------------------------------------------------------------------------------
// Software store

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn software_store_suite_and_storage() {
    let master = SecretKey::aes(&decode("A0A1A2A3A4A5A6A7A8A9AAABACADAEAFB0B1B2B3B4B5B6B7B8B9BABBBCBDBEBF").unwrap()).unwrap();
    for db in databases().await {
        eprintln!("-- software key store on {}", db.label);
        let ks = SoftwareKeyStore::connect(&db.url, master.clone()).unwrap();
        // The trait is synchronous: run it off the async worker, as the server would.
        let ks = Arc::new(ks);
        let k = ks.clone();
        tokio::task::spawn_blocking(move || suite(&*k, "soft", Caps { sm4: true })).await.unwrap();

        // Another node (another store on the same database) sees the same keys.
        let other = SoftwareKeyStore::connect(&db.url, master.clone()).unwrap();
        let kid = id("se/soft/isd/31/enc".into());
        assert_eq!(other.info(&kid).unwrap(), ks.info(&kid).unwrap());
        // A store with another master key cannot open them.
        let wrong = SoftwareKeyStore::connect(&db.url, SecretKey::aes(&[9; 32]).unwrap()).unwrap();
        assert_eq!(wrong.handle(&kid).err().unwrap().code(), "keys.bad_seal");

        // Nothing in clear in the table: no imported value, in bytes or hex, in any column.
        let known: Vec<Vec<u8>> = ["404142434445464748494A4B4C4D4E4F", "11223344556677889900AABBCCDDEEFF", "000102030405060708090A0B0C0D0E0F", "8C72C72CF908411653018807950D82FBAD947562F0828A0B10B8B9606ABF3BCD"]
            .iter()
            .map(|h| decode(h).unwrap())
            .collect();
        let rows = sqlx::query("SELECT key_id, alg, kcv, sealed FROM key_material").fetch_all(db.store.pool()).await.unwrap();
        assert!(rows.len() > 15, "{}", rows.len());
        for r in &rows {
            use sqlx::Row;
            let text = format!("{}|{}|{}", r.get::<String, _>("key_id"), r.get::<String, _>("alg"), r.get::<String, _>("kcv"));
            let sealed: Vec<u8> = r.get("sealed");
            for k in &known {
                assert!(!sealed.windows(8).any(|w| k.windows(8).any(|x| x == w)), "clear key bytes in a sealed value");
                let h = encode(k);
                assert!(!text.to_uppercase().contains(&h[..16]), "clear key hex in {text}");
            }
        }
        // A sealed value moved to another key's row does not open (AAD = key id and alg).
        let a = "se/soft/isd/31/enc";
        let b = "se/soft/isd/30/dek";
        sqlx::query("UPDATE key_material SET sealed = (SELECT sealed FROM key_material WHERE key_id = $1) WHERE key_id = $2").bind(a).bind(b).execute(db.store.pool()).await.unwrap();
        assert_eq!(ks.handle(&id(b.into())).err().unwrap().code(), "keys.bad_seal");
        drop((ks, other, wrong));
        db.finish().await;
    }
}

// ---------------------------------------------------------------------------------------
// PKCS#11 store on SoftHSM2

const MODULE: &str = support::SOFTHSM_MODULE;
const TOKEN: &str = "tsm-test";
const PIN: &str = "4711-user";

/// One SoftHSM2 token directory per test process, shared by every test of this binary (with
/// distinct key ids); those of earlier runs whose process is gone are removed.
fn softhsm() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let dir = support::process_dir("tsm_softhsm_");
        support::init_softhsm_token(&dir, TOKEN, "4711-so", PIN);
        dir
    })
}

fn pkcs11(allow_clear_rewrap: bool) -> Pkcs11KeyStore {
    softhsm();
    Pkcs11KeyStore::open(Path::new(MODULE), TOKEN, PIN, Pkcs11Options { allow_clear_rewrap, concurrent_sessions: false }).unwrap()
}

#[test]
fn pkcs11_store_suite() {
    let ks = pkcs11(true);
    suite(&ks, "hsm", Caps { sm4: false });
    // A second store (another node) on the same token sees the same keys.
    let other = pkcs11(true);
    let kid = id("se/hsm/isd/31/enc".into());
    assert_eq!(other.info(&kid).unwrap(), ks.info(&kid).unwrap());
}

#[test]
fn pkcs11_keys_are_sensitive_and_policy_holds() {
    use cryptoki::context::Pkcs11;
    use cryptoki::object::{Attribute, AttributeType, ObjectClass};
    let ks = pkcs11(false);
    let master = id("issuer/policy/master/enc".into());
    let card = id("se/policy/isd/30/enc".into());
    let dek = id("se/policy/isd/30/dek".into());
    ks.import(&master, KeyAlg::Des3_2k, &[0x11; 16]).unwrap();
    ks.import(&card, KeyAlg::Des3_2k, &[0x22; 16]).unwrap();
    ks.generate(&dek, KeyAlg::Des3_2k).unwrap();

    // Without allow_clear_rewrap, SoftHSM2 (no CKM_DES3_ECB wrapping) cannot do SCP02 wraps,
    // and says so instead of taking the key out.
    let e = ks.wrap(&card, &Wrapping::Scp02 { dek: WrappingKey::Stored(dek.clone()), sequence_counter: 1 }).unwrap_err();
    assert_eq!(e.code(), "keys.unsupported", "{e}");
    assert!(e.to_string().contains("allow_clear_rewrap"), "{e}");
    assert_eq!(ks.wrap(&master, &Wrapping::Scp02 { dek: WrappingKey::Stored(dek), sequence_counter: 1 }).unwrap_err().code(), "keys.not_wrappable");

    // Read the objects with a plain PKCS#11 session: values are not readable, masters are
    // not extractable, card keys are (wrap only).
    let ctx = Pkcs11::new(MODULE).unwrap();
    let slot = ctx.get_slots_with_token().unwrap().into_iter().find(|s| ctx.get_token_info(*s).unwrap().label().trim_end() == TOKEN).unwrap();
    let s = ctx.open_ro_session(slot).unwrap();
    let _ = s.login(cryptoki::session::UserType::User, Some(&cryptoki::types::AuthPin::from(PIN.to_string())));
    for (kid, extractable) in [(&master, false), (&card, true)] {
        let objs = s.find_objects(&[Attribute::Class(ObjectClass::SECRET_KEY), Attribute::Label(kid.as_str().as_bytes().to_vec())]).unwrap();
        assert_eq!(objs.len(), 1);
        let attrs = s.get_attributes(objs[0], &[AttributeType::Sensitive, AttributeType::Extractable, AttributeType::Token, AttributeType::Value]).unwrap();
        assert!(attrs.contains(&Attribute::Sensitive(true)), "{kid}: {attrs:?}");
        assert!(attrs.contains(&Attribute::Token(true)), "{kid}: {attrs:?}");
        assert!(attrs.contains(&Attribute::Extractable(extractable)), "{kid}: {attrs:?}");
        assert!(!attrs.iter().any(|a| matches!(a, Attribute::Value(_))), "{kid}: the value must not be readable");
    }

    // The token is found by label; a wrong label is a clear error.
    let e = Pkcs11KeyStore::open(Path::new(MODULE), "no-such-token", PIN, Pkcs11Options::default()).unwrap_err();
    assert!(e.to_string().contains("no-such-token"), "{e}");
}

/// Two nodes (two stores on one token) generating the same key id at the same moment: the
/// token has no atomic create-if-absent, so both objects may exist for a while, but once both
/// creations returned, every lookup on either node resolves to the same key (the oldest by
/// creation id), and a losing creator that saw the other object removed its own. The server
/// serializes first creations of shared keys with a database lease on top of this.
#[test]
fn pkcs11_concurrent_creation_of_one_id_resolves_to_one_key_on_both_nodes() {
    let a = std::sync::Arc::new(pkcs11(false));
    let b = std::sync::Arc::new(pkcs11(false));
    for round in 0..12 {
        let kid = id(format!("tsm/race/{round}"));
        let barrier = std::sync::Arc::new(std::sync::Barrier::new(2));
        let run = |ks: std::sync::Arc<Pkcs11KeyStore>| {
            let (kid, barrier) = (kid.clone(), barrier.clone());
            std::thread::spawn(move || {
                barrier.wait();
                match ks.generate(&kid, KeyAlg::Aes128) {
                    Ok(_) | Err(KeyStoreError::AlreadyExists(_)) => {}
                    Err(e) => panic!("round {round}: {e}"),
                }
            })
        };
        let (ta, tb) = (run(a.clone()), run(b.clone()));
        ta.join().unwrap();
        tb.join().unwrap();
        let fa = fingerprint(a.handle(&kid).expect("a key under the id").as_ref());
        let fb = fingerprint(b.handle(&kid).expect("a key under the id").as_ref());
        assert_eq!(fa, fb, "round {round}: both nodes resolve the id to the same key");
        assert_eq!(fingerprint(a.handle(&kid).unwrap().as_ref()), fa, "round {round}: stable");
    }
}
