//! Delegated Management on the card (GPCS 2.3 §9.1.3, §9.3–§9.5, Appendix C): token
//! verification with the ISD's Token Verification key and receipts with its Receipt
//! Generation key. Formats: `tsm_gp::gp::delegated`.
//!
//! Rules (see the crate documentation):
//! - The ISD ignores tokens (it needs none).
//! - A supplementary SD with Delegated Management and without Authorized Management must
//!   send a token with every INSTALL (but [for personalization]) and every DELETE of card
//!   content: a missing or invalid token is `6A80`.
//! - A token from an SD without Delegated Management is `6985`, valid or not.
//! - A verified token lets the SD manage its own content, as Authorized Management would, for
//!   that one command; the card then answers with a receipt when the ISD holds a Receipt
//!   Generation key (else `00`, as without delegation).

use crate::card::{SimCard, Sw};
use tsm_gp::crypto::CryptoError;
use tsm_gp::crypto::ecc::P256PublicKey;
use tsm_gp::gp::delegated::{
    ConfirmationData, RECEIPT_KEY_ID, RECEIPT_KEY_VERSION, Receipt, ReceiptSubject, TOKEN_KEY_ID, TOKEN_KEY_VERSION, compute_receipt,
};
use tsm_gp::gp::{Aid, Privilege};
use tsm_gp::sw::StatusWord;

impl SimCard {
    /// Whether key (`version`, `id`) of `sd` is a Receipt Generation key (never used for a
    /// secure channel).
    pub(crate) fn is_receipt_key(&self, sd: &Aid, version: u8, id: u8) -> bool {
        self.state.domain(sd).is_some_and(|d| d.keys.iter().any(|k| k.version == version && k.id == id && k.receipt))
    }

    /// Stores the Receipt Generation key of `sd` (sealed with the other keys).
    pub(crate) fn put_receipt_key(&mut self, sd: &Aid, key: tsm_gp::crypto::SecretKey) {
        self.put_secret(sd, RECEIPT_KEY_VERSION, RECEIPT_KEY_ID, key);
        if let Some(k) = self.state.domain_mut(sd).and_then(|d| d.keys.iter_mut().find(|k| k.version == RECEIPT_KEY_VERSION && k.id == RECEIPT_KEY_ID)) {
            k.receipt = true;
        }
    }

    /// The ISD's Token Verification key.
    pub(crate) fn token_key(&self) -> Option<P256PublicKey> {
        let d = self.state.domain(&self.state.isd())?;
        let k = d.public_keys.iter().find(|k| k.version == TOKEN_KEY_VERSION && k.id == TOKEN_KEY_ID)?;
        P256PublicKey::from_sec1(&k.point).ok()
    }

    /// Decides whether a command of `perf` that carries a token (`token_present`) is a
    /// delegated one, verifying the token with `verify`. `Ok(true)`: a verified delegated
    /// command (receipt due); `Ok(false)`: no token needed or given.
    pub(crate) fn check_token(
        &mut self,
        perf: &Aid,
        token_present: bool,
        verify: impl FnOnce(&P256PublicKey) -> Result<(), CryptoError>,
    ) -> Sw<bool> {
        self.token_verified = false;
        if self.is_isd(perf) {
            return Ok(false);
        }
        let p = self.privileges_of(perf);
        let dm = p.contains(Privilege::DelegatedManagement);
        if !token_present {
            // GPCS 2.3 §9.1.3: without Authorized Management, every content change of a
            // Delegated Management SD is authorized by a token.
            return if dm && !p.contains(Privilege::AuthorizedManagement) { Err(StatusWord::WRONG_DATA) } else { Ok(false) };
        }
        if !dm {
            return Err(StatusWord::CONDITIONS_NOT_SATISFIED);
        }
        let key = self.token_key().ok_or(StatusWord::CONDITIONS_NOT_SATISFIED)?;
        if self.receipt_key_present() && self.state.confirmation_counter == u16::MAX {
            // No receipt could be numbered: the issuer must change the receipt key first.
            return Err(StatusWord::CONDITIONS_NOT_SATISFIED);
        }
        verify(&key).map_err(|_| StatusWord::WRONG_DATA)?;
        self.token_verified = true;
        Ok(true)
    }

    fn receipt_key_present(&self) -> bool {
        self.is_receipt_key(&self.state.isd(), RECEIPT_KEY_VERSION, RECEIPT_KEY_ID)
    }

    /// The answer to a delegated command that succeeded: a receipt over `subject` when the ISD
    /// has a Receipt Generation key (the confirmation counter moves and is saved), else `00`.
    pub(crate) fn receipt(&mut self, subject: &ReceiptSubject) -> Sw<Vec<u8>> {
        let isd = self.state.isd();
        if !self.receipt_key_present() {
            return Ok(vec![0x00]);
        }
        let key = self.secrets.get(&(isd, RECEIPT_KEY_VERSION, RECEIPT_KEY_ID)).cloned().ok_or(StatusWord::NO_PRECISE_DIAGNOSIS)?;
        let counter = self.state.confirmation_counter.checked_add(1).ok_or(StatusWord::CONDITIONS_NOT_SATISFIED)?;
        let cud: Vec<u8> = [self.state.iin.as_deref(), self.state.cin.as_deref()].into_iter().flatten().flatten().copied().collect();
        let confirmation = ConfirmationData::new(counter, cud);
        let mac = compute_receipt(&key, &confirmation, subject).map_err(|_| StatusWord::NO_PRECISE_DIAGNOSIS)?;
        self.state.confirmation_counter = counter;
        Ok(Receipt { receipt: mac, confirmation }.to_bytes())
    }
}
