//! Authenticated encryption of secrets at rest ("sealing"): key values in state files and the
//! software key store are never written in clear. AES-256-CBC then AES-CMAC over the version,
//! the associated data, the IV and the ciphertext (encrypt-then-MAC), under two keys derived
//! from one 32-byte storage key with the SP 800-108 KDF.
//!
//! Format: `01 ‖ IV (16) ‖ ciphertext (padded, 16·n) ‖ tag (16)`. The caller supplies the IV
//! (this crate has no randomness source); it must be unpredictable and never reused.

use super::kdf::kdf_counter_cmac;
use super::{CryptoError, SecretKey, cbc_decrypt, cbc_encrypt, cmac, ct_eq, pad80, unpad80};
use zeroize::Zeroizing;

const VERSION: u8 = 0x01;

fn subkeys(storage_key: &SecretKey) -> Result<(SecretKey, SecretKey), CryptoError> {
    let enc = kdf_counter_cmac(storage_key, b"tsm seal enc\0", &[1, 0], 32)?;
    let mac = kdf_counter_cmac(storage_key, b"tsm seal mac\0", &[1, 0], 32)?;
    Ok((SecretKey::aes(&enc)?, SecretKey::aes(&mac)?))
}

/// Encrypts and authenticates `plain`; `aad` is bound to the result but not stored in it
/// (e.g. the name of the key, so that two sealed values cannot be swapped).
pub fn seal(storage_key: &SecretKey, iv: &[u8; 16], aad: &[u8], plain: &[u8]) -> Result<Vec<u8>, CryptoError> {
    let (ke, km) = subkeys(storage_key)?;
    let padded = Zeroizing::new(pad80(plain, 16));
    let ct = cbc_encrypt(&ke, iv, &padded)?;
    let mut out = Vec::with_capacity(1 + 16 + ct.len() + 16);
    out.push(VERSION);
    out.extend_from_slice(iv);
    out.extend_from_slice(&ct);
    let tag = cmac(&km, &mac_input(aad, &out))?;
    out.extend_from_slice(&tag);
    Ok(out)
}

/// Verifies and decrypts a sealed value. Any change to it, or a wrong key or `aad`, is
/// `CryptoError::BadSeal`.
pub fn open(storage_key: &SecretKey, aad: &[u8], sealed: &[u8]) -> Result<Zeroizing<Vec<u8>>, CryptoError> {
    if sealed.len() < 1 + 16 + 16 + 16 || !(sealed.len() - 33).is_multiple_of(16) || sealed[0] != VERSION {
        return Err(CryptoError::BadSeal);
    }
    let (ke, km) = subkeys(storage_key)?;
    let (body, tag) = sealed.split_at(sealed.len() - 16);
    if !ct_eq(&cmac(&km, &mac_input(aad, body))?, tag) {
        return Err(CryptoError::BadSeal);
    }
    let plain = Zeroizing::new(cbc_decrypt(&ke, &body[1..17], &body[17..])?);
    Ok(Zeroizing::new(unpad80(&plain).map_err(|_| CryptoError::BadSeal)?.to_vec()))
}

fn mac_input(aad: &[u8], body: &[u8]) -> Vec<u8> {
    let mut m = Vec::with_capacity(4 + aad.len() + body.len());
    m.extend_from_slice(&(aad.len() as u32).to_be_bytes());
    m.extend_from_slice(aad);
    m.extend_from_slice(body);
    m
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_tamper() {
        let k = SecretKey::aes(&[7; 32]).unwrap();
        let s = seal(&k, &[1; 16], b"isd/enc", b"0123456789ABCDEF").unwrap();
        assert_eq!(&open(&k, b"isd/enc", &s).unwrap()[..], b"0123456789ABCDEF");
        assert!(!s.windows(16).any(|w| w == b"0123456789ABCDEF"), "no clear text in the sealed value");
        assert_eq!(open(&k, b"isd/mac", &s), Err(CryptoError::BadSeal), "aad is bound");
        for i in 0..s.len() {
            let mut t = s.clone();
            t[i] ^= 0x01;
            assert_eq!(open(&k, b"isd/enc", &t), Err(CryptoError::BadSeal), "byte {i}");
        }
        assert_eq!(open(&SecretKey::aes(&[8; 32]).unwrap(), b"isd/enc", &s), Err(CryptoError::BadSeal));
        assert_eq!(open(&k, b"", &s[..20]), Err(CryptoError::BadSeal));
    }
}
