//! NIST SP 800-108 key derivation in counter mode with CMAC and an 8-bit counter, and the
//! SCP03 instance of it (GP Amendment D §6.2.2: label ‖ 00 ‖ L ‖ i ‖ context).

use super::{CryptoError, SymmetricKey};
use zeroize::Zeroizing;

/// SP 800-108 counter-mode KDF with CMAC as PRF and a 1-byte counter starting at 1:
/// `K(i) = CMAC(key, before ‖ i ‖ after)`, output truncated to `out_len` bytes.
/// The counter position covers all three CAVP layouts (before, middle, after the fixed data).
pub fn kdf_counter_cmac(
    key: &dyn SymmetricKey,
    before: &[u8],
    after: &[u8],
    out_len: usize,
) -> Result<Zeroizing<Vec<u8>>, CryptoError> {
    let blocks = out_len.div_ceil(16);
    if blocks > 255 {
        return Err(CryptoError::Unsupported { alg: key.alg(), op: "KDF output longer than 255 blocks" });
    }
    let mut out = Zeroizing::new(Vec::with_capacity(blocks * 16));
    let mut input = Zeroizing::new(Vec::with_capacity(before.len() + 1 + after.len()));
    for i in 1..=blocks as u8 {
        input.clear();
        input.extend_from_slice(before);
        input.push(i);
        input.extend_from_slice(after);
        out.extend_from_slice(&key.cmac(&input)?);
    }
    out.truncate(out_len);
    Ok(out)
}

/// Derivation constants of SCP03 (Amd D Table 6-1).
pub mod constant {
    pub const CARD_CRYPTOGRAM: u8 = 0x00;
    pub const HOST_CRYPTOGRAM: u8 = 0x01;
    pub const CARD_CHALLENGE: u8 = 0x02;
    pub const S_ENC: u8 = 0x04;
    pub const S_MAC: u8 = 0x06;
    pub const S_RMAC: u8 = 0x07;
}

/// The SCP03 KDF: label = 11 zero bytes ‖ constant, separator 00, L (bits, 2 bytes), counter,
/// context. `out_len` in bytes (L = 8·out_len).
pub fn scp03_kdf(
    key: &dyn SymmetricKey,
    derivation_constant: u8,
    context: &[u8],
    out_len: usize,
) -> Result<Zeroizing<Vec<u8>>, CryptoError> {
    let mut before = [0u8; 15];
    before[11] = derivation_constant;
    // before[12] = 0x00 separation indicator
    let l_bits = (out_len * 8) as u16;
    before[13..15].copy_from_slice(&l_bits.to_be_bytes());
    kdf_counter_cmac(key, &before, context, out_len)
}
