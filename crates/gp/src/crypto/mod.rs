//! The symmetric cryptography of GP secure channels: DES/3DES, AES, SM4 in ECB and CBC,
//! ISO 9797-1 padding and MACs, AES-CMAC, key check values, the SP 800-108 KDF, SM3, and key
//! diversification. Keys are behind [`SymmetricKey`] so that an HSM can stand in for memory.

pub mod diversify;
pub mod ecc;
pub mod kdf;
pub mod seal;

use aes::{Aes128, Aes192, Aes256};
use cipher::{BlockCipherDecrypt, BlockCipherEncrypt, KeyInit};
use cmac::{Cmac, Mac};
use des::{TdesEde2, TdesEde3};
use sm4::Sm4;
use std::fmt;
use thiserror::Error;
use zeroize::{Zeroize, Zeroizing};

/// Errors of the crypto layer.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum CryptoError {
    #[error("key of {len} bytes is not valid for {alg:?}")]
    KeyLength { alg: KeyAlg, len: usize },
    #[error("data of {len} bytes is not a multiple of the {block}-byte block size")]
    NotBlockAligned { len: usize, block: usize },
    #[error("IV of {len} bytes, the block size is {block}")]
    IvLength { len: usize, block: usize },
    #[error("ISO 9797-1 method 2 padding not found")]
    BadPadding,
    #[error("{op} is not available for {alg:?} keys")]
    Unsupported { alg: KeyAlg, op: &'static str },
    #[error("key store: {0}")]
    KeyStore(String),
    #[error("sealed data does not verify: wrong storage key, or the data was altered")]
    BadSeal,
    /// An ECC public key that is not a point of the curve (or not SEC 1 encoded).
    #[error("not a valid P-256 public key (SEC 1 point on the curve)")]
    BadPublicKey,
    /// An ECC private key outside 1..n-1 or not 32 bytes.
    #[error("not a valid P-256 private key (32-byte scalar in 1..n-1)")]
    BadPrivateKey,
    /// A signature that does not verify, or is not 64 bytes `r ‖ s`.
    #[error("signature does not verify")]
    BadSignature,
}

impl CryptoError {
    pub fn code(&self) -> &'static str {
        match self {
            CryptoError::KeyLength { .. } => "crypto.key_length",
            CryptoError::NotBlockAligned { .. } => "crypto.not_block_aligned",
            CryptoError::IvLength { .. } => "crypto.iv_length",
            CryptoError::BadPadding => "crypto.bad_padding",
            CryptoError::Unsupported { .. } => "crypto.unsupported",
            CryptoError::KeyStore(_) => "crypto.key_store",
            CryptoError::BadSeal => "crypto.bad_seal",
            CryptoError::BadPublicKey => "crypto.bad_public_key",
            CryptoError::BadPrivateKey => "crypto.bad_private_key",
            CryptoError::BadSignature => "crypto.bad_signature",
        }
    }
}

/// Block-cipher algorithm and key size of a key.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum KeyAlg {
    /// Two-key triple DES (16 bytes), the GP SCP01/SCP02 key.
    Des3_2k,
    /// Three-key triple DES (24 bytes).
    Des3_3k,
    Aes128,
    Aes192,
    Aes256,
    /// SM4 (GM/T 0002-2012), 16-byte key and block: the Chinese commercial suite.
    Sm4,
}

impl KeyAlg {
    pub fn key_len(self) -> usize {
        match self {
            KeyAlg::Des3_2k | KeyAlg::Aes128 | KeyAlg::Sm4 => 16,
            KeyAlg::Des3_3k | KeyAlg::Aes192 => 24,
            KeyAlg::Aes256 => 32,
        }
    }
    pub fn block_len(self) -> usize {
        if self.is_des() { 8 } else { 16 }
    }
    pub fn is_des(self) -> bool {
        matches!(self, KeyAlg::Des3_2k | KeyAlg::Des3_3k)
    }
    pub fn is_aes(self) -> bool {
        matches!(self, KeyAlg::Aes128 | KeyAlg::Aes192 | KeyAlg::Aes256)
    }
    /// The AES algorithm for a key length.
    pub fn aes_for_len(len: usize) -> Option<KeyAlg> {
        match len {
            16 => Some(KeyAlg::Aes128),
            24 => Some(KeyAlg::Aes192),
            32 => Some(KeyAlg::Aes256),
            _ => None,
        }
    }
    /// The 3DES algorithm for a key length (8-byte single DES keys are expanded K1=K2).
    pub fn des_for_len(len: usize) -> Option<KeyAlg> {
        match len {
            16 => Some(KeyAlg::Des3_2k),
            24 => Some(KeyAlg::Des3_3k),
            _ => None,
        }
    }
}

/// An instantiated block cipher.
enum Engine {
    Des2(TdesEde2),
    Des3(TdesEde3),
    Aes128(Aes128),
    Aes192(Aes192),
    Aes256(Aes256),
    Sm4(Sm4),
}

macro_rules! each_engine {
    ($e:expr, $c:ident => $body:expr) => {
        match $e {
            Engine::Des2($c) => $body,
            Engine::Des3($c) => $body,
            Engine::Aes128($c) => $body,
            Engine::Aes192($c) => $body,
            Engine::Aes256($c) => $body,
            Engine::Sm4($c) => $body,
        }
    };
}

impl Engine {
    fn new(alg: KeyAlg, key: &[u8]) -> Result<Self, CryptoError> {
        let bad = || CryptoError::KeyLength { alg, len: key.len() };
        if key.len() != alg.key_len() {
            return Err(bad());
        }
        Ok(match alg {
            KeyAlg::Des3_2k => Engine::Des2(TdesEde2::new_from_slice(key).map_err(|_| bad())?),
            KeyAlg::Des3_3k => Engine::Des3(TdesEde3::new_from_slice(key).map_err(|_| bad())?),
            KeyAlg::Aes128 => Engine::Aes128(Aes128::new_from_slice(key).map_err(|_| bad())?),
            KeyAlg::Aes192 => Engine::Aes192(Aes192::new_from_slice(key).map_err(|_| bad())?),
            KeyAlg::Aes256 => Engine::Aes256(Aes256::new_from_slice(key).map_err(|_| bad())?),
            KeyAlg::Sm4 => Engine::Sm4(Sm4::new_from_slice(key).map_err(|_| bad())?),
        })
    }

    fn encrypt_block(&self, block: &mut [u8]) {
        each_engine!(self, c => c.encrypt_block(block.try_into().expect("one whole block")))
    }

    fn decrypt_block(&self, block: &mut [u8]) {
        each_engine!(self, c => c.decrypt_block(block.try_into().expect("one whole block")))
    }
}

/// Single DES in ECB on one 8-byte block: SCP02 i=55/15 ICV encryption and the retail MAC
/// need the first key half alone.
pub fn des_encrypt_block(key8: &[u8], block: &mut [u8; 8]) -> Result<(), CryptoError> {
    let c = des::Des::new_from_slice(key8).map_err(|_| CryptoError::KeyLength { alg: KeyAlg::Des3_2k, len: key8.len() })?;
    c.encrypt_block(block.into());
    Ok(())
}

fn des_decrypt_block(key8: &[u8], block: &mut [u8; 8]) -> Result<(), CryptoError> {
    let c = des::Des::new_from_slice(key8).map_err(|_| CryptoError::KeyLength { alg: KeyAlg::Des3_2k, len: key8.len() })?;
    c.decrypt_block(block.into());
    Ok(())
}

/// A key in memory. Zeroized on drop; `Debug` shows the algorithm and KCV only.
#[derive(Clone)]
pub struct SecretKey {
    alg: KeyAlg,
    bytes: Zeroizing<Vec<u8>>,
}

impl SecretKey {
    pub fn new(alg: KeyAlg, bytes: &[u8]) -> Result<Self, CryptoError> {
        if bytes.len() != alg.key_len() {
            return Err(CryptoError::KeyLength { alg, len: bytes.len() });
        }
        Ok(SecretKey { alg, bytes: Zeroizing::new(bytes.to_vec()) })
    }
    /// 3DES key from 16 or 24 bytes.
    pub fn des3(bytes: &[u8]) -> Result<Self, CryptoError> {
        let alg = KeyAlg::des_for_len(bytes.len()).ok_or(CryptoError::KeyLength { alg: KeyAlg::Des3_2k, len: bytes.len() })?;
        Self::new(alg, bytes)
    }
    /// AES key from 16, 24 or 32 bytes.
    pub fn aes(bytes: &[u8]) -> Result<Self, CryptoError> {
        let alg = KeyAlg::aes_for_len(bytes.len()).ok_or(CryptoError::KeyLength { alg: KeyAlg::Aes128, len: bytes.len() })?;
        Self::new(alg, bytes)
    }
    pub fn alg(&self) -> KeyAlg {
        self.alg
    }
    /// The key bytes. Callers must not copy them into anything that is not zeroized.
    pub fn expose(&self) -> &[u8] {
        &self.bytes
    }
    fn engine(&self) -> Result<Engine, CryptoError> {
        Engine::new(self.alg, &self.bytes)
    }
    pub fn kcv(&self) -> [u8; 3] {
        kcv(self).unwrap_or([0; 3])
    }
}

impl fmt::Debug for SecretKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let k = self.kcv();
        write!(f, "SecretKey({:?}, kcv={:02X}{:02X}{:02X})", self.alg, k[0], k[1], k[2])
    }
}

impl PartialEq for SecretKey {
    fn eq(&self, other: &Self) -> bool {
        // Constant-time enough for tests and config comparison; not used on attacker input.
        self.alg == other.alg && self.bytes.len() == other.bytes.len()
            && self.bytes.iter().zip(other.bytes.iter()).fold(0u8, |a, (x, y)| a | (x ^ y)) == 0
    }
}
impl Eq for SecretKey {}

/// The operations a secure channel needs from a static key. Implemented for keys in memory
/// ([`SecretKey`]) and by the server's PKCS#11 key store, so that static keys can stay in an HSM:
/// session keys are derived through these calls and only they reach process memory.
pub trait SymmetricKey: Send + Sync {
    fn alg(&self) -> KeyAlg;
    /// CBC encryption of whole blocks (no padding) with the given IV.
    fn encrypt_cbc(&self, iv: &[u8], data: &[u8]) -> Result<Vec<u8>, CryptoError>;
    /// ECB encryption of whole blocks.
    fn encrypt_ecb(&self, data: &[u8]) -> Result<Vec<u8>, CryptoError>;
    /// Full 16-byte CMAC (AES and SM4 keys only).
    fn cmac(&self, data: &[u8]) -> Result<[u8; 16], CryptoError>;
    /// CBC decryption of whole blocks. Key stores that only wrap keys may refuse it.
    fn decrypt_cbc(&self, iv: &[u8], data: &[u8]) -> Result<Vec<u8>, CryptoError> {
        let _ = (iv, data);
        Err(CryptoError::Unsupported { alg: self.alg(), op: "decryption" })
    }
    /// Key check value (GPCS 2.3 §11.8.2.3 / Amd D §7.2).
    fn kcv(&self) -> Result<[u8; 3], CryptoError> {
        let block = if self.alg().is_des() { vec![0u8; 8] } else { vec![1u8; 16] };
        let c = self.encrypt_ecb(&block)?;
        Ok([c[0], c[1], c[2]])
    }
}

impl SymmetricKey for SecretKey {
    fn alg(&self) -> KeyAlg {
        self.alg
    }
    fn encrypt_cbc(&self, iv: &[u8], data: &[u8]) -> Result<Vec<u8>, CryptoError> {
        cbc_encrypt(self, iv, data)
    }
    fn encrypt_ecb(&self, data: &[u8]) -> Result<Vec<u8>, CryptoError> {
        ecb_encrypt(self, data)
    }
    fn cmac(&self, data: &[u8]) -> Result<[u8; 16], CryptoError> {
        cmac(self, data)
    }
    fn decrypt_cbc(&self, iv: &[u8], data: &[u8]) -> Result<Vec<u8>, CryptoError> {
        cbc_decrypt(self, iv, data)
    }
}

/// Key check value of any key.
pub fn kcv(key: &dyn SymmetricKey) -> Result<[u8; 3], CryptoError> {
    key.kcv()
}

fn check_aligned(len: usize, block: usize) -> Result<(), CryptoError> {
    if !len.is_multiple_of(block) { Err(CryptoError::NotBlockAligned { len, block }) } else { Ok(()) }
}

pub fn ecb_encrypt(key: &SecretKey, data: &[u8]) -> Result<Vec<u8>, CryptoError> {
    let bs = key.alg.block_len();
    check_aligned(data.len(), bs)?;
    let e = key.engine()?;
    let mut out = data.to_vec();
    out.chunks_mut(bs).for_each(|b| e.encrypt_block(b));
    Ok(out)
}

pub fn ecb_decrypt(key: &SecretKey, data: &[u8]) -> Result<Vec<u8>, CryptoError> {
    let bs = key.alg.block_len();
    check_aligned(data.len(), bs)?;
    let e = key.engine()?;
    let mut out = data.to_vec();
    out.chunks_mut(bs).for_each(|b| e.decrypt_block(b));
    Ok(out)
}

/// The engine and block size for a CBC operation, after checking alignment and IV length.
fn cbc_engine(key: &SecretKey, iv: &[u8], data: &[u8]) -> Result<(Engine, usize), CryptoError> {
    let bs = key.alg.block_len();
    check_aligned(data.len(), bs)?;
    if iv.len() != bs {
        return Err(CryptoError::IvLength { len: iv.len(), block: bs });
    }
    Ok((key.engine()?, bs))
}

pub fn cbc_encrypt(key: &SecretKey, iv: &[u8], data: &[u8]) -> Result<Vec<u8>, CryptoError> {
    let (e, bs) = cbc_engine(key, iv, data)?;
    let mut out = data.to_vec();
    let mut prev = iv.to_vec();
    for b in out.chunks_mut(bs) {
        b.iter_mut().zip(&prev).for_each(|(x, p)| *x ^= p);
        e.encrypt_block(b);
        prev.copy_from_slice(b);
    }
    Ok(out)
}

pub fn cbc_decrypt(key: &SecretKey, iv: &[u8], data: &[u8]) -> Result<Vec<u8>, CryptoError> {
    let (e, bs) = cbc_engine(key, iv, data)?;
    let mut out = data.to_vec();
    let mut prev = iv.to_vec();
    let mut cur = vec![0u8; bs];
    for b in out.chunks_mut(bs) {
        cur.copy_from_slice(b);
        e.decrypt_block(b);
        b.iter_mut().zip(&prev).for_each(|(x, p)| *x ^= p);
        std::mem::swap(&mut prev, &mut cur);
    }
    Ok(out)
}

/// ISO/IEC 9797-1 padding method 2: append `80`, then `00` up to a block multiple (always pads).
pub fn pad80(data: &[u8], block: usize) -> Vec<u8> {
    let mut v = Vec::with_capacity(data.len() + block);
    v.extend_from_slice(data);
    v.push(0x80);
    while v.len() % block != 0 {
        v.push(0);
    }
    v
}

/// Removes ISO 9797-1 method 2 padding.
pub fn unpad80(data: &[u8]) -> Result<&[u8], CryptoError> {
    let end = data.iter().rposition(|&b| b != 0).ok_or(CryptoError::BadPadding)?;
    if data[end] != 0x80 {
        return Err(CryptoError::BadPadding);
    }
    Ok(&data[..end])
}

/// ISO/IEC 9797-1 MAC algorithm 3 ("retail MAC") with a 16-byte key, over data already padded
/// to 8 bytes: single-DES CBC with K1, then decrypt with K2 and encrypt with K1 on the last block.
pub fn retail_mac(key: &SecretKey, iv: &[u8; 8], padded: &[u8]) -> Result<[u8; 8], CryptoError> {
    check_aligned(padded.len(), 8)?;
    if key.alg != KeyAlg::Des3_2k && key.alg != KeyAlg::Des3_3k {
        return Err(CryptoError::Unsupported { alg: key.alg, op: "retail MAC" });
    }
    let k = key.expose();
    let mut state = *iv;
    for chunk in padded.chunks(8) {
        state.iter_mut().zip(chunk).for_each(|(s, c)| *s ^= c);
        des_encrypt_block(&k[0..8], &mut state)?;
    }
    des_decrypt_block(&k[8..16], &mut state)?;
    des_encrypt_block(&k[0..8], &mut state)?;
    Ok(state)
}

/// Full triple-DES CBC-MAC (ISO 9797-1 MAC algorithm 1 with 3DES): the last block of
/// 3DES-CBC over padded data. SCP01/SCP02 card and host cryptograms use it (GPCS E.4.2.1).
pub fn des3_cbc_mac(key: &dyn SymmetricKey, iv: &[u8], padded: &[u8]) -> Result<[u8; 8], CryptoError> {
    let c = key.encrypt_cbc(iv, padded)?;
    let mut m = [0u8; 8];
    m.copy_from_slice(&c[c.len() - 8..]);
    Ok(m)
}

/// CMAC (NIST SP 800-38B) with AES or SM4, full 16 bytes.
pub fn cmac(key: &SecretKey, data: &[u8]) -> Result<[u8; 16], CryptoError> {
    macro_rules! run {
        ($c:ty, $k:expr) => {{
            let mut m = <Cmac<$c> as KeyInit>::new_from_slice($k).expect("length checked by SecretKey");
            m.update(data);
            let out = m.finalize().into_bytes();
            let mut r = [0u8; 16];
            r.copy_from_slice(&out);
            r
        }};
    }
    let k = key.expose();
    Ok(match key.alg {
        KeyAlg::Aes128 => run!(Aes128, k),
        KeyAlg::Aes192 => run!(Aes192, k),
        KeyAlg::Aes256 => run!(Aes256, k),
        KeyAlg::Sm4 => run!(Sm4, k),
        alg => return Err(CryptoError::Unsupported { alg, op: "CMAC" }),
    })
}

/// SM3 hash (GM/T 0004-2012).
pub fn sm3(data: &[u8]) -> [u8; 32] {
    use sm3::Digest;
    let out = sm3::Sm3::digest(data);
    let mut r = [0u8; 32];
    r.copy_from_slice(&out);
    r
}

/// SHA-1 and SHA-256, for load file hashes and DAP.
pub fn sha1(data: &[u8]) -> [u8; 20] {
    use sha1::Digest;
    sha1::Sha1::digest(data).into()
}
pub fn sha256(data: &[u8]) -> [u8; 32] {
    use sha2::Digest;
    sha2::Sha256::digest(data).into()
}

/// Constant-time comparison for MACs and cryptograms.
pub fn ct_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// Zeroize helper for buffers that held key material.
pub fn wipe(buf: &mut [u8]) {
    buf.zeroize();
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hex::decode;

    #[test]
    fn padding() {
        assert_eq!(pad80(&[1, 2], 8), vec![1, 2, 0x80, 0, 0, 0, 0, 0]);
        assert_eq!(pad80(&[0; 8], 8).len(), 16);
        assert_eq!(unpad80(&pad80(&[1, 0, 0x80], 16)).unwrap(), &[1, 0, 0x80]);
        assert!(unpad80(&[0, 0]).is_err());
        assert!(unpad80(&[1, 0]).is_err());
    }

    #[test]
    fn cbc_round_trip_all_algs() {
        for (alg, len) in [(KeyAlg::Des3_2k, 16), (KeyAlg::Des3_3k, 24), (KeyAlg::Aes128, 16), (KeyAlg::Aes256, 32), (KeyAlg::Sm4, 16)] {
            let k = SecretKey::new(alg, &(0..len as u8).collect::<Vec<_>>()).unwrap();
            let bs = alg.block_len();
            let iv = vec![7u8; bs];
            let pt: Vec<u8> = (0..(bs * 3) as u8).collect();
            let ct = cbc_encrypt(&k, &iv, &pt).unwrap();
            assert_ne!(ct, pt);
            assert_eq!(cbc_decrypt(&k, &iv, &ct).unwrap(), pt);
            assert_eq!(ecb_decrypt(&k, &ecb_encrypt(&k, &pt).unwrap()).unwrap(), pt);
        }
        let k = SecretKey::aes(&[0; 16]).unwrap();
        assert!(matches!(cbc_encrypt(&k, &[0; 16], &[0; 15]), Err(CryptoError::NotBlockAligned { .. })));
        assert!(SecretKey::aes(&[0; 15]).is_err());
    }

    #[test]
    fn debug_never_shows_key_bytes() {
        let k = SecretKey::aes(&decode("404142434445464748494A4B4C4D4E4F").unwrap()).unwrap();
        let s = format!("{k:?}");
        assert!(!s.contains("4041") && s.contains("kcv="), "{s}");
    }
}
