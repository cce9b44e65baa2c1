//! Key diversification of issuer master keys with the card's Key Diversification Data (KDD,
//! the first 10 bytes of the INITIALIZE UPDATE response): EMV CPS 1.1, VISA2 and "KDF3"
//! (the AES-CMAC counter KDF used by GlobalPlatformPro and many AES card issuers).

use super::{CryptoError, KeyAlg, SecretKey, SymmetricKey, kdf::kdf_counter_cmac};
use zeroize::Zeroizing;

/// Which key of the ENC/MAC/DEK set is derived.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum KeyRole {
    Enc = 1,
    Mac = 2,
    Dek = 3,
}

impl KeyRole {
    pub const ALL: [KeyRole; 3] = [KeyRole::Enc, KeyRole::Mac, KeyRole::Dek];
}

/// A diversification method.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Diversification {
    /// No diversification: the card keys are the given keys.
    None,
    /// EMV CPS 1.1 §A.1 (3DES master): KDD[4..10] ‖ F0 ‖ k ‖ KDD[4..10] ‖ 0F ‖ k.
    EmvCps11,
    /// VISA2 (3DES master): KDD[0..2] ‖ KDD[4..8] ‖ F0 ‖ k ‖ KDD[0..2] ‖ KDD[4..8] ‖ 0F ‖ k.
    Visa2,
    /// AES-CMAC counter KDF: CMAC(master, i ‖ 00 00 00 ‖ k ‖ 00 ‖ KDD), i = 1, 2.
    Kdf3,
}

impl std::str::FromStr for Diversification {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s.to_ascii_lowercase().replace('_', "-").as_str() {
            "none" => Ok(Self::None),
            "emv" | "emv-cps11" | "emvcps11" | "emv-cps-1.1" => Ok(Self::EmvCps11),
            "visa2" => Ok(Self::Visa2),
            "kdf3" => Ok(Self::Kdf3),
            other => Err(format!("unknown diversification {other:?} (none, emv, visa2, kdf3)")),
        }
    }
}

/// Derives the card key for `role` from a master key and the card's 10-byte KDD.
/// The master key may live in an HSM: only `encrypt_ecb`/`cmac` are called on it.
pub fn diversify(
    method: Diversification,
    master: &dyn SymmetricKey,
    kdd: &[u8],
    role: KeyRole,
) -> Result<SecretKey, CryptoError> {
    let k = role as u8;
    let alg = master.alg();
    let need_kdd = |n: usize| {
        if kdd.len() < n {
            Err(CryptoError::Unsupported { alg, op: "diversification with a KDD shorter than 10 bytes" })
        } else {
            Ok(())
        }
    };
    match method {
        Diversification::None => Err(CryptoError::Unsupported { alg, op: "diversify with method none" }),
        Diversification::EmvCps11 | Diversification::Visa2 => {
            if !alg.is_des() {
                return Err(CryptoError::Unsupported { alg, op: "EMV CPS / VISA2 diversification" });
            }
            need_kdd(10)?;
            let mut seed: Vec<u8> = if method == Diversification::EmvCps11 {
                kdd[4..10].to_vec()
            } else {
                [&kdd[0..2], &kdd[4..8]].concat()
            };
            let mut data = Zeroizing::new(Vec::with_capacity(16));
            data.extend_from_slice(&seed);
            data.extend_from_slice(&[0xF0, k]);
            data.extend_from_slice(&seed);
            data.extend_from_slice(&[0x0F, k]);
            seed.fill(0);
            let out = Zeroizing::new(master.encrypt_ecb(&data)?);
            SecretKey::new(KeyAlg::Des3_2k, &out)
        }
        Diversification::Kdf3 => {
            if !alg.is_aes() && alg != KeyAlg::Sm4 {
                return Err(CryptoError::Unsupported { alg, op: "KDF3 diversification" });
            }
            let mut after = vec![0, 0, 0, k, 0];
            after.extend_from_slice(kdd);
            let out = kdf_counter_cmac(master, &[], &after, alg.key_len())?;
            SecretKey::new(alg, &out)
        }
    }
}
