//! Delegated Management (GPCS 2.3 §9.1.3, §9.3–§9.5, Appendix C.4 and C.5): the Card Issuer
//! authorizes each content management command of a Security Domain with the Delegated
//! Management privilege with a **token** (a signature over the command), and the card proves
//! what it did with a **receipt** (a MAC over confirmation data).
//!
//! - **Tokens** sign the *token signature data* of the command: `P1 ‖ P2 ‖ Lc ‖` the data field
//!   up to the token (GPCS 2.3 §C.4.1–C.4.5: INSTALL [for load] (the Load Token, which covers
//!   the Load File Data Block hash), [for install], [for make selectable], [for install and
//!   make selectable], [for extradition], [for registry update], and DELETE), built by
//!   [`Install::token_signature_data`] and [`Delete::token_signature_data`]. LOAD itself
//!   carries no token: the Load Token in INSTALL [for load] covers the hash of what LOAD
//!   brings. The scheme here is **ECDSA P-256 with SHA-256**, plain `r ‖ s` (64 bytes), the
//!   ECC token form of GPCS 2.3; **RSA tokens are not supported**. The Token Verification key
//!   is a P-256 public key in the ISD, key version [`TOKEN_KEY_VERSION`], id
//!   [`TOKEN_KEY_ID`] (PUT KEY type `B0` + `F0 00`, see [`super::put_key`]).
//! - **Receipts** (GPCS 2.3 §C.5): `MAC(Receipt Generation key, confirmation data ‖ command
//!   data)`. Confirmation data is `LV(confirmation counter, 2 bytes) ‖ LV(card unique data)`
//!   and, when the card includes them, `LV(token identifier) ‖ LV(token data digest)`; the
//!   command data is per [`ReceiptSubject`]. With a 3DES key the MAC is the "single DES plus
//!   final triple DES" MAC (ISO 9797-1 MAC algorithm 3, ICV zero, padding method 2, 8
//!   bytes, GPCS 2.3 §B.1.2.2); with an AES key AES-CMAC, 16 bytes. The key is key version
//!   [`RECEIPT_KEY_VERSION`], id [`RECEIPT_KEY_ID`] of the ISD. In a response the receipt
//!   travels as `LV(receipt) ‖ confirmation data` ([`Receipt::parse`]); a response of `00`
//!   has none.
//!
//! The field layouts of the receipt inputs and of the response follow GPCS 2.3 Appendix C as
//! implemented by kaoh/globalplatform (`validate_*_receipt`, `fillReceipt`), the only public
//! implementation at hand to compare with; the card unique data is the ISD's Issuer
//! Identification Number (`42`) followed by its Card Image Number (`45`).

use super::{Aid, Delete, GpError, Install, Privileges, put_lv};
use crate::codec::Reader;
use crate::crypto::ecc::{P256PublicKey, TokenSigner};
use crate::crypto::{CryptoError, KeyAlg, SecretKey, cmac, ct_eq, pad80, retail_mac};
use crate::hex::Hex;
use crate::tlv;
use std::fmt;
use thiserror::Error;

/// Key version number of the Token Verification key (`70`, the usual value; kaoh/globalplatform
/// uses it too).
pub const TOKEN_KEY_VERSION: u8 = 0x70;
/// Key identifier of the Token Verification key.
pub const TOKEN_KEY_ID: u8 = 0x01;
/// Key version number of the Receipt Generation key (`71`).
pub const RECEIPT_KEY_VERSION: u8 = 0x71;
/// Key identifier of the Receipt Generation key.
pub const RECEIPT_KEY_ID: u8 = 0x01;

/// Errors of delegated management: tokens that do not verify, receipts that do not check.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum DelegatedError {
    /// The receipt is not the MAC of what the caller expected the card to have done.
    #[error("receipt does not verify: the card did not confirm {subject}")]
    ReceiptMismatch { subject: String },
    /// The response holds no receipt where one was required.
    #[error("{command}: the card returned no receipt")]
    NoReceipt { command: &'static str },
    #[error(transparent)]
    Crypto(#[from] CryptoError),
    #[error(transparent)]
    Gp(#[from] GpError),
}

impl DelegatedError {
    pub fn code(&self) -> &'static str {
        match self {
            DelegatedError::ReceiptMismatch { .. } => "dm.receipt_mismatch",
            DelegatedError::NoReceipt { .. } => "dm.no_receipt",
            DelegatedError::Crypto(e) => e.code(),
            DelegatedError::Gp(e) => e.code(),
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Tokens

/// The token for `install` (its token field is ignored: it is not part of what is signed).
pub fn install_token(install: &Install, signer: &dyn TokenSigner) -> Result<Vec<u8>, CryptoError> {
    signer.sign(&install.token_signature_data())
}

/// The token for `delete`.
pub fn delete_token(delete: &Delete, signer: &dyn TokenSigner) -> Result<Vec<u8>, CryptoError> {
    signer.sign(&delete.token_signature_data())
}

/// Signs `install` and puts the token in it (the issuer side).
pub fn sign_install(install: &mut Install, signer: &dyn TokenSigner) -> Result<(), CryptoError> {
    let t = install_token(install, signer)?;
    install.set_token(t);
    Ok(())
}

/// Signs `delete` and puts the token (`9E`) in it.
pub fn sign_delete(delete: &mut Delete, signer: &dyn TokenSigner) -> Result<(), CryptoError> {
    delete.token = Some(delete_token(delete, signer)?);
    Ok(())
}

/// Card side: whether `install`'s token verifies with the Token Verification key.
pub fn verify_install_token(install: &Install, key: &P256PublicKey) -> Result<(), CryptoError> {
    key.verify(&install.token_signature_data(), install.body.token())
}

/// Card side: whether `delete`'s token verifies.
pub fn verify_delete_token(delete: &Delete, key: &P256PublicKey) -> Result<(), CryptoError> {
    key.verify(&delete.token_signature_data(), delete.token.as_deref().unwrap_or(&[]))
}

// ---------------------------------------------------------------------------------------------
// Receipts

/// Confirmation data (GPCS 2.3 §C.5): what the card states about itself in a receipt.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ConfirmationData {
    /// The confirmation counter (2 bytes), incremented by the card for every receipt.
    pub counter: Vec<u8>,
    /// Card unique data (the ISD's IIN ‖ CIN here; empty when the card has neither).
    pub card_unique_data: Vec<u8>,
    /// Token identifier, when the card reports one.
    pub token_identifier: Option<Vec<u8>>,
    /// Token data digest, when the card reports one (only with a token identifier).
    pub token_data_digest: Option<Vec<u8>>,
}

impl ConfirmationData {
    /// Counter value `n` and card unique data, no optional fields.
    pub fn new(counter: u16, card_unique_data: Vec<u8>) -> Self {
        ConfirmationData { counter: counter.to_be_bytes().to_vec(), card_unique_data, token_identifier: None, token_data_digest: None }
    }

    /// The counter as a number (`None` when it is not 1 or 2 bytes).
    pub fn counter_value(&self) -> Option<u16> {
        match self.counter.as_slice() {
            [a] => Some(*a as u16),
            [a, b] => Some(u16::from_be_bytes([*a, *b])),
            _ => None,
        }
    }

    pub fn encode(&self, out: &mut Vec<u8>) {
        put_lv(out, &self.counter);
        put_lv(out, &self.card_unique_data);
        if let Some(t) = &self.token_identifier {
            put_lv(out, t);
        }
        if let Some(d) = &self.token_data_digest {
            put_lv(out, d);
        }
    }

    fn read(r: &mut Reader<'_>) -> Result<Self, GpError> {
        const W: &str = "confirmation data";
        let lv = |r: &mut Reader<'_>, what: &'static str| super::read_lv(r, what).map(<[u8]>::to_vec).map_err(GpError::from);
        let counter = lv(r, "confirmation counter")?;
        if !matches!(counter.len(), 1 | 2) {
            return Err(GpError::invalid(W, format!("confirmation counter of {} byte(s), expected 2", counter.len())));
        }
        let card_unique_data = lv(r, "card unique data")?;
        let token_identifier = if r.is_empty() { None } else { Some(lv(r, "token identifier")?) };
        let token_data_digest = if r.is_empty() { None } else { Some(lv(r, "token data digest")?) };
        r.expect_end(W).map_err(GpError::from)?;
        Ok(ConfirmationData { counter, card_unique_data, token_identifier, token_data_digest })
    }
}

/// What a receipt confirms: the command data that follows the confirmation data in the MAC
/// input (GPCS 2.3 §C.5.1–C.5.5).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReceiptSubject {
    /// Load receipt (last LOAD block): `LV(load file AID) ‖ LV(security domain AID)`.
    Load { elf: Aid, sd: Aid },
    /// Install receipt (INSTALL [for install], [for install and make selectable], and here
    /// also [for make selectable]): `LV(load file AID) ‖ LV(application AID)`.
    Install { elf: Aid, app: Aid },
    /// Delete receipt: `LV(AID)`.
    Delete { aid: Aid },
    /// Extradition receipt: `LV(previous SD) ‖ LV(application or load file) ‖ LV(new SD)`.
    Extradition { from_sd: Aid, object: Aid, to_sd: Aid },
    /// Registry update receipt: `LV(previous SD) ‖ LV(application) ‖ LV(new SD) ‖
    /// LV(privileges) ‖ LV(registry update parameters)` (empty fields when absent).
    RegistryUpdate { from_sd: Option<Aid>, app: Option<Aid>, to_sd: Option<Aid>, privileges: Option<Privileges>, params: Vec<u8> },
}

impl ReceiptSubject {
    pub fn encode(&self, out: &mut Vec<u8>) {
        let aid = |out: &mut Vec<u8>, a: &Option<Aid>| put_lv(out, a.as_ref().map(Aid::as_bytes).unwrap_or(&[]));
        match self {
            ReceiptSubject::Load { elf, sd } => {
                put_lv(out, elf.as_bytes());
                put_lv(out, sd.as_bytes());
            }
            ReceiptSubject::Install { elf, app } => {
                put_lv(out, elf.as_bytes());
                put_lv(out, app.as_bytes());
            }
            ReceiptSubject::Delete { aid } => put_lv(out, aid.as_bytes()),
            ReceiptSubject::Extradition { from_sd, object, to_sd } => {
                put_lv(out, from_sd.as_bytes());
                put_lv(out, object.as_bytes());
                put_lv(out, to_sd.as_bytes());
            }
            ReceiptSubject::RegistryUpdate { from_sd, app, to_sd, privileges, params } => {
                aid(out, from_sd);
                aid(out, app);
                aid(out, to_sd);
                put_lv(out, &privileges.map(Privileges::to_bytes).unwrap_or_default());
                tlv::encode_length(params.len(), out);
                out.extend_from_slice(params);
            }
        }
    }
}

impl fmt::Display for ReceiptSubject {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let o = |a: &Option<Aid>| a.map(|a| a.to_string()).unwrap_or_else(|| "-".into());
        match self {
            ReceiptSubject::Load { elf, sd } => write!(f, "the load of {elf} into {sd}"),
            ReceiptSubject::Install { elf, app } => write!(f, "the installation of {app} from {elf}"),
            ReceiptSubject::Delete { aid } => write!(f, "the deletion of {aid}"),
            ReceiptSubject::Extradition { from_sd, object, to_sd } => write!(f, "the extradition of {object} from {from_sd} to {to_sd}"),
            ReceiptSubject::RegistryUpdate { from_sd, app, to_sd, .. } => {
                write!(f, "the registry update of {} ({} -> {})", o(app), o(from_sd), o(to_sd))
            }
        }
    }
}

/// The MAC input of a receipt: confirmation data ‖ command data.
pub fn receipt_input(confirmation: &ConfirmationData, subject: &ReceiptSubject) -> Vec<u8> {
    let mut v = Vec::new();
    confirmation.encode(&mut v);
    subject.encode(&mut v);
    v
}

/// The receipt a card computes: retail MAC (3DES key, 8 bytes) or AES-CMAC (16 bytes).
pub fn compute_receipt(key: &SecretKey, confirmation: &ConfirmationData, subject: &ReceiptSubject) -> Result<Vec<u8>, CryptoError> {
    let input = receipt_input(confirmation, subject);
    match key.alg() {
        KeyAlg::Des3_2k | KeyAlg::Des3_3k => Ok(retail_mac(key, &[0; 8], &pad80(&input, 8))?.to_vec()),
        a if a.is_aes() => Ok(cmac(key, &input)?.to_vec()),
        alg => Err(CryptoError::Unsupported { alg, op: "receipt generation" }),
    }
}

/// A receipt as a card returns it: the MAC and the confirmation data it covers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Receipt {
    pub receipt: Vec<u8>,
    pub confirmation: ConfirmationData,
}

impl Receipt {
    /// The response data: `LV(receipt) ‖ confirmation data`.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut v = Vec::new();
        put_lv(&mut v, &self.receipt);
        self.confirmation.encode(&mut v);
        v
    }

    /// Reads the response data of a delegated command: `None` for no data or `00` (no
    /// receipt). Accepts an outer length around the whole receipt, which some cards add
    /// (kaoh/globalplatform `parse_receipt_from_response`).
    pub fn parse(data: &[u8]) -> Result<Option<Receipt>, GpError> {
        const W: &str = "receipt";
        if data.is_empty() || data == [0x00] {
            return Ok(None);
        }
        let mut r = Reader::new(data);
        let n = tlv::read_length(&mut r)?;
        let rest = r.remaining();
        let body = if n == rest && n > 0 && Self::parse_body(&data[data.len() - rest..]).is_ok() { &data[data.len() - rest..] } else { data };
        match Self::parse_body(body) {
            Ok(Some(x)) => Ok(Some(x)),
            Ok(None) => Err(GpError::invalid(W, "empty receipt with confirmation data")),
            Err(e) => Err(e),
        }
    }

    fn parse_body(data: &[u8]) -> Result<Option<Receipt>, GpError> {
        let mut r = Reader::new(data);
        let n = tlv::read_length(&mut r)?;
        let receipt = r.take(n, "receipt")?.to_vec();
        if receipt.is_empty() {
            return Ok(None);
        }
        let confirmation = ConfirmationData::read(&mut r)?;
        Ok(Some(Receipt { receipt, confirmation }))
    }

    /// Checks the receipt against what the card was asked to do, with the Receipt
    /// Generation key (the issuer's copy).
    pub fn verify(&self, key: &SecretKey, subject: &ReceiptSubject) -> Result<(), DelegatedError> {
        let expected = compute_receipt(key, &self.confirmation, subject)?;
        if ct_eq(&expected, &self.receipt) {
            Ok(())
        } else {
            Err(DelegatedError::ReceiptMismatch { subject: subject.to_string() })
        }
    }
}

impl fmt::Display for Receipt {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "receipt {} counter {} card {}", Hex(&self.receipt), Hex(&self.confirmation.counter), Hex(&self.confirmation.card_unique_data))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crypto::ecc::P256SigningKey;

    fn aid(s: &str) -> Aid {
        s.parse().unwrap()
    }

    #[test]
    fn tokens_bind_the_command() {
        let k = P256SigningKey::from_bytes(&[3; 32]).unwrap();
        let pk = k.public_key();
        let mut i = Install::for_load(aid("D0D1D2D3D4D501"), Some(aid("A000000151535041")));
        sign_install(&mut i, &k).unwrap();
        verify_install_token(&i, &pk).unwrap();
        // Parsed back from the APDU, the token still verifies.
        verify_install_token(&Install::from_apdu(&i.to_apdu()).unwrap(), &pk).unwrap();
        let mut other = i.clone();
        other.p2 = 0x01;
        assert_eq!(verify_install_token(&other, &pk), Err(CryptoError::BadSignature));
        let mut d = Delete::object(aid("D0D1D2D3D4D501"), true);
        sign_delete(&mut d, &k).unwrap();
        verify_delete_token(&d, &pk).unwrap();
        d.related = false;
        assert_eq!(verify_delete_token(&d, &pk), Err(CryptoError::BadSignature));
        assert_eq!(verify_delete_token(&Delete::object(aid("D0D1D2D3D4D501"), true), &pk), Err(CryptoError::BadSignature));
    }

    #[test]
    fn receipt_round_trip_and_layout() {
        let conf = ConfirmationData::new(1, vec![0x11, 0x22]);
        let subject = ReceiptSubject::Delete { aid: aid("D0D1D2D3D4D501") };
        assert_eq!(receipt_input(&conf, &subject), crate::hex::decode("02 0001 02 1122 07 D0D1D2D3D4D501").unwrap());
        for key in [SecretKey::aes(&[9; 16]).unwrap(), SecretKey::des3(&[9; 16]).unwrap()] {
            let mac = compute_receipt(&key, &conf, &subject).unwrap();
            assert_eq!(mac.len(), if key.alg().is_des() { 8 } else { 16 });
            let r = Receipt { receipt: mac, confirmation: conf.clone() };
            let bytes = r.to_bytes();
            assert_eq!(Receipt::parse(&bytes).unwrap(), Some(r.clone()));
            let mut outer = vec![bytes.len() as u8];
            outer.extend_from_slice(&bytes);
            assert_eq!(Receipt::parse(&outer).unwrap(), Some(r.clone()), "outer length accepted");
            r.verify(&key, &subject).unwrap();
            let wrong = ReceiptSubject::Delete { aid: aid("D0D1D2D3D4D502") };
            assert_eq!(r.verify(&key, &wrong).unwrap_err().code(), "dm.receipt_mismatch");
        }
        assert_eq!(Receipt::parse(&[0x00]).unwrap(), None);
        assert_eq!(Receipt::parse(&[]).unwrap(), None);
        assert!(Receipt::parse(&[0x02, 0xAA]).is_err());
        assert!(Receipt::parse(&[0x01, 0xAA, 0x03, 1, 2, 3, 0x00]).is_err(), "3-byte counter");
    }
}
