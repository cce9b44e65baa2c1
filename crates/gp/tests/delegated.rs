//! Delegated management in the core: token signature inputs of every INSTALL form and of
//! DELETE against the kaoh/globalplatform vectors (`testdata/vectors/gp_data/
//! install_params_and_tokens.txt`), ECDSA P-256 against the RFC 6979 known answer, tokens
//! bound to their command, and receipt layouts and MACs.

use tsm_gp::codec::Codec;
use tsm_gp::crypto::ecc::{P256PublicKey, P256SigningKey, TokenSigner};
use tsm_gp::crypto::{CryptoError, SecretKey, cmac, pad80, retail_mac};
use tsm_gp::gp::delegated::{self, ConfirmationData, Receipt, ReceiptSubject};
use tsm_gp::gp::delete::{Delete, DeleteTarget};
use tsm_gp::gp::install::InstallBody;
use tsm_gp::gp::put_key::{PutKey, PutKeyComponent};
use tsm_gp::gp::{Aid, Install, Privilege, Privileges};
use tsm_gp::hex::{decode, encode};
use tsm_gp::recording::{Section, parse_ini};
use tsm_gp::CommandApdu;

fn aid(s: &str) -> Aid {
    s.trim().parse().unwrap()
}

fn vectors() -> Vec<Section> {
    let path = tsm_gp::testdata_dir().join("vectors/gp_data/install_params_and_tokens.txt");
    parse_ini(&std::fs::read_to_string(path).unwrap()).unwrap()
}

fn section<'a>(v: &'a [Section], name: &str) -> &'a Section {
    v.iter().find(|s| s.name == name).unwrap_or_else(|| panic!("no section [{name}]"))
}

fn expected(s: &Section) -> Vec<u8> {
    s.hex("expected").unwrap().unwrap()
}

/// P1 ‖ P2 ‖ Lc' ‖ data without the token length byte (and token), Lc' = Lc − 1: what GPCS
/// 2.3 §C.4 says a token over a token-less INSTALL command signs, taken from the command bytes.
fn signature_input_from_wire(apdu: &[u8]) -> Vec<u8> {
    let a = CommandApdu::from_bytes(apdu).unwrap();
    assert_eq!(*a.data.last().unwrap(), 0x00, "the vector carries no token");
    let data = &a.data[..a.data.len() - 1];
    [vec![a.p1, a.p2, data.len() as u8], data.to_vec()].concat()
}

#[test]
fn token_signature_inputs_match_the_kaoh_vectors() {
    let v = vectors();

    // Extradition and delete: the signature data kaoh/globalplatform computes.
    let s = section(&v, "extradition-token-signature-data");
    let ext = Install::for_extradition(aid(s.get("sd_aid").unwrap()), aid(s.get("app_aid").unwrap()));
    assert_eq!(encode(&ext.token_signature_data()), encode(&expected(s)));

    let s = section(&v, "delete-token-signature-data");
    let aids: Vec<Aid> = s.get("aids").unwrap().split(',').map(aid).collect();
    let mut d = Delete::object(aids[0], true);
    d.target = DeleteTarget::Objects(aids);
    assert_eq!(encode(&d.token_signature_data()), encode(&expected(s)));

    // INSTALL [for load] (the Load Token) and [for install and make selectable] (the Install
    // Token): the commands of kaoh's recorded session, parsed from the wire; what a token
    // over them signs is the command without its (empty) token field.
    for name in ["kaoh-trace-install-for-load", "kaoh-trace-install-for-install-and-make-selectable"] {
        let wire = expected(section(&v, name));
        let i = Install::from_apdu(&CommandApdu::from_bytes(&wire).unwrap()).unwrap();
        assert_eq!(encode(&i.token_signature_data()), encode(&signature_input_from_wire(&wire)), "{name}");
        // The token does not sign itself.
        let signed = i.clone().with_token(vec![0x5A; 64]);
        assert_eq!(signed.token_signature_data(), i.token_signature_data(), "{name}");
        assert_eq!(Install::from_apdu(&signed.to_apdu()).unwrap(), signed, "{name}");
    }
    let load = Install::from_apdu(&CommandApdu::from_bytes(&expected(section(&v, "kaoh-trace-install-for-load"))).unwrap()).unwrap();
    assert_eq!(&load.token_signature_data()[..3], &[0x02, 0x00, 0x1D]);

    // Make selectable and registry update: the field layout kaoh/globalplatform signs
    // (empty load file and module fields; registry update: SD, empty, app, privileges,
    // empty parameters).
    let app = aid("D0D1D2D3D4D50101");
    let ms = Install::for_make_selectable(app, Privileges::from_bytes(&[0x00]).unwrap());
    assert_eq!(encode(&ms.token_signature_data()), "08000E000008D0D1D2D3D4D50101010000");
    let ru = Install::for_registry_update(Some(aid("D4D4D4D4D4010101")), Some(app), Some(Privileges::from_bytes(&[0x80, 0x00, 0x00]).unwrap()));
    assert_eq!(encode(&ru.token_signature_data()), "40001808D4D4D4D4D40101010008D0D1D2D3D4D5010103800000 00".replace(' ', ""));
}

#[test]
fn ecdsa_p256_sha256_rfc6979_known_answer() {
    // RFC 6979 §A.2.5 (P-256, SHA-256, message "sample" and "test"): a deterministic nonce
    // makes the signature a known answer.
    let k = P256SigningKey::from_bytes(&decode("C9AFA9D845BA75166B5C215767B1D6934E50C3DB36E89B127B8A622B120F6721").unwrap()).unwrap();
    let pk = k.public_key();
    assert_eq!(
        encode(&pk.to_sec1_uncompressed()),
        "0460FED4BA255A9D31C961EB74C6356D68C049B8923B61FA6CE669622E60F29FB67903FE1008B8BC99A41AE9E95628BC64F2F1B20C2D7E9F5177A3C294D4462299"
    );
    let sample = k.sign(b"sample").unwrap();
    assert_eq!(
        encode(&sample),
        "EFD48B2AACB6A8FD1140DD9CD45E81D69D2C877B56AAF991C34D0EA84EAF3716F7CB1C942D657C41D436C7A1B6E29F65F3E900DBB9AFF4064DC4AB2F843ACDA8"
    );
    let test = k.sign(b"test").unwrap();
    assert_eq!(
        encode(&test),
        "F1ABB023518351CD71D881567B1EA663ED3EFCF6C5132B354F28D3B0B7D38367019F4113742A2B14BD25926B49C649155F267E60D3814B4C0CC84250E46F0083"
    );
    pk.verify(b"sample", &sample).unwrap();
    assert_eq!(pk.verify(b"test", &sample), Err(CryptoError::BadSignature));
    assert_eq!(P256PublicKey::from_sec1(&pk.to_sec1_uncompressed()).unwrap(), pk);
}

#[test]
fn tokens_refuse_another_command_or_key() {
    let issuer = P256SigningKey::from_bytes(&[0x42; 32]).unwrap();
    let other = P256SigningKey::from_bytes(&[0x43; 32]).unwrap();
    let pk = issuer.public_key();
    let (elf, module, app) = (aid("D0D1D2D3D4D501"), aid("D0D1D2D3D4D50101"), aid("D0D1D2D3D4D50102"));
    let priv0 = Privileges::NONE;
    let params = tsm_gp::gp::InstallParams::application_specific(&[]);
    let mut inst = Install::for_install(elf, module, app, priv0, params.clone(), true);
    delegated::sign_install(&mut inst, &issuer).unwrap();
    delegated::verify_install_token(&inst, &pk).unwrap();
    // The same token on another P1 (install only), another AID, other privileges, another
    // key: refused.
    let token = inst.body.token().to_vec();
    let variants = [
        Install::for_install(elf, module, app, priv0, params.clone(), false),
        Install::for_install(elf, module, aid("D0D1D2D3D4D50103"), priv0, params.clone(), true),
        Install::for_install(elf, module, app, [Privilege::CardReset].into_iter().collect(), params.clone(), true),
    ];
    for v in variants {
        assert_eq!(delegated::verify_install_token(&v.with_token(token.clone()), &pk), Err(CryptoError::BadSignature));
    }
    assert_eq!(delegated::verify_install_token(&inst, &other.public_key()), Err(CryptoError::BadSignature));
    let mut forged = inst.clone();
    delegated::sign_install(&mut forged, &other).unwrap();
    assert_eq!(delegated::verify_install_token(&forged, &pk), Err(CryptoError::BadSignature));
    // An empty token.
    assert_eq!(delegated::verify_install_token(&Install::for_load(elf, None), &pk), Err(CryptoError::BadSignature));
    if let InstallBody::Install { token, .. } = &inst.body {
        assert_eq!(token.len(), 64);
    }
}

#[test]
fn receipts_layout_and_mac() {
    let conf = ConfirmationData::new(0x0102, decode("0102030405060708090A").unwrap());
    let (elf, sd, app) = (aid("D0D1D2D3D4D501"), aid("A000000151000000"), aid("D0D1D2D3D4D50101"));
    // The MAC inputs, written out field by field (GPCS 2.3 §C.5, as kaoh/globalplatform's
    // validate_*_receipt build them).
    let head = "02 0102 0A 0102030405060708090A";
    let cases = [
        (ReceiptSubject::Load { elf, sd }, format!("{head} 07 D0D1D2D3D4D501 08 A000000151000000")),
        (ReceiptSubject::Install { elf, app }, format!("{head} 07 D0D1D2D3D4D501 08 D0D1D2D3D4D50101")),
        (ReceiptSubject::Delete { aid: app }, format!("{head} 08 D0D1D2D3D4D50101")),
        (
            ReceiptSubject::Extradition { from_sd: sd, object: app, to_sd: aid("D4D4D4D4D4010101") },
            format!("{head} 08 A000000151000000 08 D0D1D2D3D4D50101 08 D4D4D4D4D4010101"),
        ),
        (
            ReceiptSubject::RegistryUpdate { from_sd: Some(sd), app: Some(app), to_sd: None, privileges: None, params: vec![] },
            format!("{head} 08 A000000151000000 08 D0D1D2D3D4D50101 00 00 00"),
        ),
    ];
    let aes = SecretKey::aes(&decode("101112131415161718191A1B1C1D1E1F").unwrap()).unwrap();
    let des = SecretKey::des3(&decode("404142434445464748494A4B4C4D4E4F").unwrap()).unwrap();
    for (subject, layout) in cases {
        let input = decode(&layout.replace(' ', "")).unwrap();
        assert_eq!(encode(&delegated::receipt_input(&conf, &subject)), encode(&input), "{subject}");
        // AES: CMAC over the input, 16 bytes; 3DES: retail MAC over the padded input, ICV 0.
        let r_aes = delegated::compute_receipt(&aes, &conf, &subject).unwrap();
        assert_eq!(r_aes, cmac(&aes, &input).unwrap().to_vec());
        let r_des = delegated::compute_receipt(&des, &conf, &subject).unwrap();
        assert_eq!(r_des, retail_mac(&des, &[0; 8], &pad80(&input, 8)).unwrap().to_vec());
        let receipt = Receipt { receipt: r_aes, confirmation: conf.clone() };
        receipt.verify(&aes, &subject).unwrap();
        assert!(receipt.verify(&SecretKey::aes(&[0; 16]).unwrap(), &subject).is_err());
        let mut changed = receipt.clone();
        changed.confirmation.counter = vec![0x01, 0x03];
        assert_eq!(changed.verify(&aes, &subject).unwrap_err().code(), "dm.receipt_mismatch");
    }
    // On the wire: LV(receipt) ‖ LV(counter) ‖ LV(card unique data).
    let r = Receipt { receipt: vec![0xAA; 8], confirmation: conf };
    assert_eq!(encode(&r.to_bytes()), format!("08{}020102 0A0102030405060708090A", "AA".repeat(8)).replace(' ', ""));
}

#[test]
fn put_key_of_the_dm_keys() {
    let k = P256SigningKey::from_bytes(&[0x42; 32]).unwrap();
    let point = k.public_key().to_sec1_uncompressed();
    let pk = PutKey::new(0, delegated::TOKEN_KEY_ID, delegated::TOKEN_KEY_VERSION, vec![PutKeyComponent::ecc_public_p256(point.clone())]);
    let a = pk.to_apdu();
    // 80 D8 00 01: add, key id 1, one key; data: version 70, B0 41 <point>, F0 01 00, KCV length 00.
    assert_eq!(encode(&a.header()), "80D80001");
    assert_eq!(encode(&a.data), format!("70B041{}F0010000", encode(&point)));
    let back = PutKey::from_apdu(&a).unwrap();
    assert_eq!(P256PublicKey::from_sec1(&back.components[0].encrypted).unwrap(), k.public_key());
}
