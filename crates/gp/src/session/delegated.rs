//! Delegated management on the host session (GPCS 2.3 §9.1.3, Appendix C; formats in
//! [`crate::gp::delegated`]).
//!
//! Two parties: the **Card Issuer** owns the ISD, loads the Token Verification key (a P-256
//! public key) and the Receipt Generation key into it ([`GpSession::put_token_key`],
//! [`GpSession::put_receipt_key`]), and signs each command a service provider may send with
//! a [`TokenIssuer`]; the **service provider** opens a secure channel with its own SSD (which
//! has the Delegated Management privilege) and sends the commands with the tokens it got
//! (`*_delegated` methods). The card answers with receipts, which whoever holds the Receipt
//! Generation key checks with [`check_receipt`].
//!
//! The [`TokenIssuer`] and the session methods build each command the same way (same
//! constructor functions below), so a token made for `install_for_load_delegated(elf, sd,
//! hash, params, …)` fits exactly that call.

use super::{GpSession, Secure, SessionError};
use crate::cap::CapFile;
use crate::crypto::SecretKey;
use crate::crypto::ecc::{P256PublicKey, TokenSigner};
use crate::gp::delegated::{DelegatedError, RECEIPT_KEY_ID, RECEIPT_KEY_VERSION, Receipt, ReceiptSubject, TOKEN_KEY_ID, TOKEN_KEY_VERSION};
use crate::gp::put_key::{PutKey, PutKeyComponent, PutKeyResponse};
use crate::gp::{Aid, Delete, Install, InstallBody, InstallParams, Privileges};
use crate::transport::Transport;

// The commands, built once for both parties.

fn load_cmd(elf: Aid, sd: Option<Aid>, hash: &[u8], params: &InstallParams) -> Install {
    let mut install = Install::for_load(elf, sd);
    if let InstallBody::Load { hash: h, params: p, .. } = &mut install.body {
        *h = hash.to_vec();
        *p = params.clone();
    }
    install
}

fn install_cmd(elf: Aid, module: Aid, app: Aid, privileges: Privileges, params: &InstallParams, make_selectable: bool) -> Install {
    Install::for_install(elf, module, app, privileges, params.clone(), make_selectable)
}

/// The Card Issuer's side: tokens for the commands a Security Domain with Delegated
/// Management will send (GPCS 2.3 §C.4). Each method takes the arguments of the matching
/// `GpSession::*_delegated` method.
pub struct TokenIssuer<'a> {
    signer: &'a dyn TokenSigner,
}

impl<'a> TokenIssuer<'a> {
    pub fn new(signer: &'a dyn TokenSigner) -> Self {
        TokenIssuer { signer }
    }

    /// The token of any INSTALL command (its token field is not signed).
    pub fn install(&self, install: &Install) -> Result<Vec<u8>, SessionError> {
        Ok(crate::gp::delegated::install_token(install, self.signer)?)
    }
    /// The token of any DELETE command.
    pub fn delete(&self, delete: &Delete) -> Result<Vec<u8>, SessionError> {
        Ok(crate::gp::delegated::delete_token(delete, self.signer)?)
    }

    /// Load Token for [`GpSession::install_for_load_delegated`] (covers the LFDB hash).
    pub fn load_token(&self, elf: Aid, sd: Option<Aid>, hash: &[u8], params: &InstallParams) -> Result<Vec<u8>, SessionError> {
        self.install(&load_cmd(elf, sd, hash, params))
    }
    /// Install Token for [`GpSession::install_delegated`].
    pub fn install_token(
        &self,
        elf: Aid,
        module: Aid,
        app: Aid,
        privileges: Privileges,
        params: &InstallParams,
        make_selectable: bool,
    ) -> Result<Vec<u8>, SessionError> {
        self.install(&install_cmd(elf, module, app, privileges, params, make_selectable))
    }
    /// Make Selectable Token for [`GpSession::make_selectable_delegated`].
    pub fn make_selectable_token(&self, app: Aid, privileges: Privileges) -> Result<Vec<u8>, SessionError> {
        self.install(&Install::for_make_selectable(app, privileges))
    }
    /// Extradition Token for [`GpSession::extradite_delegated`].
    pub fn extradition_token(&self, sd: Aid, object: Aid) -> Result<Vec<u8>, SessionError> {
        self.install(&Install::for_extradition(sd, object))
    }
    /// Registry Update Token for [`GpSession::registry_update_delegated`].
    pub fn registry_update_token(&self, sd: Option<Aid>, app: Option<Aid>, privileges: Option<Privileges>) -> Result<Vec<u8>, SessionError> {
        self.install(&Install::for_registry_update(sd, app, privileges))
    }
    /// Delete Token for [`GpSession::delete_delegated`].
    pub fn delete_token(&self, aid: Aid, related: bool) -> Result<Vec<u8>, SessionError> {
        self.delete(&Delete::object(aid, related))
    }
}

/// Checks the receipt a delegated command returned against what it should confirm, with the
/// Receipt Generation key: [`DelegatedError::NoReceipt`] when the card gave none,
/// [`DelegatedError::ReceiptMismatch`] when it does not verify.
pub fn check_receipt(receipt: Option<&Receipt>, key: &SecretKey, subject: &ReceiptSubject, command: &'static str) -> Result<(), SessionError> {
    let r = receipt.ok_or(DelegatedError::NoReceipt { command })?;
    Ok(r.verify(key, subject)?)
}

impl<T: Transport> GpSession<T, Secure> {
    /// Sends an INSTALL (with its token, for a Security Domain with Delegated Management);
    /// returns the receipt when the card gives one.
    pub fn send_install_delegated(&mut self, install: &Install) -> Result<Option<Receipt>, SessionError> {
        let data = self.send_install(install)?;
        Ok(Receipt::parse(&data)?)
    }

    /// INSTALL [for load] with a Load Token. The card answers without a receipt: the Load
    /// Receipt comes with the last LOAD block ([`load_delegated`](Self::load_delegated)).
    /// `hash` must be the Load File Data Block hash the token signed (cards require it under
    /// Delegated Management).
    pub fn install_for_load_delegated(
        &mut self,
        elf: Aid,
        sd: Option<Aid>,
        hash: &[u8],
        params: &InstallParams,
        token: Vec<u8>,
    ) -> Result<Option<Receipt>, SessionError> {
        self.send_install_delegated(&load_cmd(elf, sd, hash, params).with_token(token))
    }

    /// LOAD of a load file after [`install_for_load_delegated`](Self::install_for_load_delegated):
    /// returns the Load Receipt from the last block's answer.
    pub fn load_file_delegated(
        &mut self,
        load_file: &[u8],
        block_size: Option<usize>,
        progress: &mut dyn FnMut(usize, usize),
    ) -> Result<Option<Receipt>, SessionError> {
        let last = self.load_blocks(load_file, block_size, progress)?;
        Ok(Receipt::parse(&last)?)
    }

    /// [`load_file_delegated`](Self::load_file_delegated) of a CAP file's load file.
    pub fn load_delegated(
        &mut self,
        cap: &CapFile,
        block_size: Option<usize>,
        include_descriptor: bool,
        progress: &mut dyn FnMut(usize, usize),
    ) -> Result<Option<Receipt>, SessionError> {
        self.load_file_delegated(&cap.load_file_tlv(include_descriptor), block_size, progress)
    }

    /// INSTALL [for install] (or [for install and make selectable]) with an Install Token;
    /// the Install Receipt.
    #[allow(clippy::too_many_arguments)]
    pub fn install_delegated(
        &mut self,
        elf: Aid,
        module: Aid,
        app: Aid,
        privileges: Privileges,
        params: &InstallParams,
        make_selectable: bool,
        token: Vec<u8>,
    ) -> Result<Option<Receipt>, SessionError> {
        self.send_install_delegated(&install_cmd(elf, module, app, privileges, params, make_selectable).with_token(token))
    }

    /// INSTALL [for make selectable] with its token.
    pub fn make_selectable_delegated(&mut self, app: Aid, privileges: Privileges, token: Vec<u8>) -> Result<Option<Receipt>, SessionError> {
        self.send_install_delegated(&Install::for_make_selectable(app, privileges).with_token(token))
    }

    /// INSTALL [for extradition] of `object` (application or load file) to security domain
    /// `sd`, with its token.
    pub fn extradite_delegated(&mut self, sd: Aid, object: Aid, token: Vec<u8>) -> Result<Option<Receipt>, SessionError> {
        self.send_install_delegated(&Install::for_extradition(sd, object).with_token(token))
    }

    /// INSTALL [for registry update] with its token.
    pub fn registry_update_delegated(
        &mut self,
        sd: Option<Aid>,
        app: Option<Aid>,
        privileges: Option<Privileges>,
        token: Vec<u8>,
    ) -> Result<Option<Receipt>, SessionError> {
        self.send_install_delegated(&Install::for_registry_update(sd, app, privileges).with_token(token))
    }

    /// DELETE of an object with a Delete Token; the Delete Receipt.
    pub fn delete_delegated(&mut self, aid: Aid, related: bool, token: Vec<u8>) -> Result<Option<Receipt>, SessionError> {
        let mut d = Delete::object(aid, related);
        d.token = Some(token);
        let data = self.command("DELETE", &d.to_apdu())?;
        Ok(Receipt::parse(&data)?)
    }

    /// PUT KEY of the Token Verification key (the Card Issuer, through the ISD): key version
    /// `70`, id `01`, type `B0` (SEC 1 point) with parameters reference `F0 00` (P-256).
    /// `replace`: replace an existing key version `70` rather than add it.
    pub fn put_token_key(&mut self, key: &P256PublicKey, replace: bool) -> Result<PutKeyResponse, SessionError> {
        let component = PutKeyComponent::ecc_public_p256(key.to_sec1_uncompressed());
        self.put_single_key(TOKEN_KEY_VERSION, TOKEN_KEY_ID, component, replace)
    }

    /// PUT KEY of the Receipt Generation key (a 3DES or AES key): key version `71`, id `01`,
    /// encrypted under the channel's DEK, KCV checked.
    pub fn put_receipt_key(&mut self, key: &SecretKey, replace: bool) -> Result<PutKeyResponse, SessionError> {
        let component = self.key_component(key)?;
        self.put_single_key(RECEIPT_KEY_VERSION, RECEIPT_KEY_ID, component, replace)
    }

    fn put_single_key(&mut self, version: u8, id: u8, component: PutKeyComponent, replace: bool) -> Result<PutKeyResponse, SessionError> {
        let cmd = PutKey::new(if replace { version } else { 0 }, id, version, vec![component]);
        let data = self.command("PUT KEY", &cmd.to_apdu())?;
        let kcv_len = cmd.components[0].kcv.len().max(1);
        let got = PutKeyResponse::parse_with(&data, kcv_len)?;
        let expected = cmd.expected_response();
        if got != expected {
            return Err(SessionError::KeyCheckMismatch { expected: format!("{expected:?}"), received: format!("{got:?}") });
        }
        Ok(got)
    }
}
