//! Sealing of sensitive personalization data at rest.
//!
//! A personalization block marked sensitive is stored sealed: AES-256-CTR then AES-CMAC
//! (encrypt-then-MAC) under two TSM keys in the key store (`tsm/perso-seal/enc`,
//! `tsm/perso-seal/mac`, generated on first use). CTR is built on the key's ECB encryption and
//! CMAC on the key's CMAC, the two operations every key store offers (an HSM key may refuse
//! CBC *decryption*), so the values never leave the HSM.
//!
//! Format: `01 ‖ nonce (12) ‖ ciphertext ‖ tag (16)`; the tag covers the version, the
//! associated data (the script id and the block's position, so sealed blocks cannot be moved),
//! the nonce and the ciphertext. Invariant: **every block with `encrypt = true` in
//! `personalization_scripts.blocks` is sealed**; the engine opens it with [`open_block`] just
//! before the planner encrypts it under the SD's DEK.

use crate::domain::PersoScriptId;
use crate::keys::{KeyId, KeyStore, KeyStoreError};
use std::sync::Arc;
use tsm_gp::crypto::{KeyAlg, SymmetricKey};
use zeroize::Zeroizing;

const VERSION: u8 = 0x01;
pub const ENC_KEY: &str = "tsm/perso-seal/enc";
pub const MAC_KEY: &str = "tsm/perso-seal/mac";

fn key(keys: &dyn KeyStore, name: &str) -> Result<Arc<dyn SymmetricKey>, KeyStoreError> {
    let id = KeyId::new(name)?;
    if keys.info(&id)?.is_none() {
        match keys.generate(&id, KeyAlg::Aes256) {
            Ok(_) | Err(KeyStoreError::AlreadyExists(_)) => {} // another node made it first
            Err(e) => return Err(e),
        }
    }
    keys.handle(&id)
}

/// The associated data of block `index` of script `script`.
pub fn block_aad(script: PersoScriptId, index: usize) -> Vec<u8> {
    format!("perso/{script}/{index}").into_bytes()
}

fn keystream_xor(enc: &dyn SymmetricKey, nonce: &[u8; 12], data: &[u8]) -> Result<Zeroizing<Vec<u8>>, KeyStoreError> {
    let blocks = data.len().div_ceil(16);
    let mut counters = Vec::with_capacity(blocks * 16);
    for i in 0..blocks {
        counters.extend_from_slice(nonce);
        counters.extend_from_slice(&(i as u32 + 1).to_be_bytes());
    }
    let ks = Zeroizing::new(enc.encrypt_ecb(&counters)?);
    Ok(Zeroizing::new(data.iter().zip(ks.iter()).map(|(d, k)| d ^ k).collect()))
}

fn tag(mac: &dyn SymmetricKey, aad: &[u8], body: &[u8]) -> Result<[u8; 16], KeyStoreError> {
    let mut m = Vec::with_capacity(4 + aad.len() + body.len());
    m.extend_from_slice(&(aad.len() as u32).to_be_bytes());
    m.extend_from_slice(aad);
    m.extend_from_slice(body);
    Ok(mac.cmac(&m)?)
}

/// Seals `plain` (blocking: call from `spawn_blocking`).
pub fn seal_block(keys: &dyn KeyStore, aad: &[u8], plain: &[u8]) -> Result<Vec<u8>, KeyStoreError> {
    let enc = key(keys, ENC_KEY)?;
    let mac = key(keys, MAC_KEY)?;
    let mut nonce = [0u8; 12];
    getrandom::fill(&mut nonce).map_err(|e| KeyStoreError::Backend(format!("random source: {e}")))?;
    let ct = keystream_xor(enc.as_ref(), &nonce, plain)?;
    let mut out = Vec::with_capacity(1 + 12 + ct.len() + 16);
    out.push(VERSION);
    out.extend_from_slice(&nonce);
    out.extend_from_slice(&ct);
    let t = tag(mac.as_ref(), aad, &out)?;
    out.extend_from_slice(&t);
    Ok(out)
}

/// Opens a sealed block (blocking). A changed value, a wrong key or `aad` is `BadSeal`.
pub fn open_block(keys: &dyn KeyStore, aad: &[u8], sealed: &[u8]) -> Result<Zeroizing<Vec<u8>>, KeyStoreError> {
    let bad = || KeyStoreError::BadSeal(KeyId::new(ENC_KEY).expect("valid id"));
    if sealed.len() < 1 + 12 + 16 || sealed[0] != VERSION {
        return Err(bad());
    }
    let enc = key(keys, ENC_KEY)?;
    let mac = key(keys, MAC_KEY)?;
    let (body, t) = sealed.split_at(sealed.len() - 16);
    let expect = tag(mac.as_ref(), aad, body)?;
    if expect.iter().zip(t).fold(0u8, |a, (x, y)| a | (x ^ y)) != 0 {
        return Err(bad());
    }
    let nonce: [u8; 12] = body[1..13].try_into().expect("12 bytes");
    keystream_xor(enc.as_ref(), &nonce, &body[13..])
}

/// The blocks of a stored script with sensitive blocks opened (engine use, blocking).
pub fn open_script(keys: &dyn KeyStore, script: &crate::domain::PersonalizationScript) -> Result<Vec<crate::domain::PersoBlock>, KeyStoreError> {
    script
        .blocks
        .iter()
        .enumerate()
        .map(|(i, b)| {
            if b.encrypt {
                let plain = open_block(keys, &block_aad(script.id, i), &b.data)?;
                Ok(crate::domain::PersoBlock { data: plain.to_vec(), encrypt: true })
            } else {
                Ok(b.clone())
            }
        })
        .collect()
}
