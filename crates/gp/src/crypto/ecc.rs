//! ECDSA on NIST P-256 with SHA-256: the signature of delegated management tokens (GPCS 2.3
//! §C.4 with an ECC Token Verification key). Signatures are the plain `r ‖ s` form (64
//! bytes, BSI TR-03111), the form GlobalPlatform uses for ECC tokens and DAPs; nonces are
//! deterministic (RFC 6979), so this module needs no random source. RSA tokens are not
//! supported.
//!
//! The card side holds a [`P256PublicKey`]; the issuer signs through a [`TokenSigner`], so that
//! a key store can keep the private key in an HSM. [`P256SigningKey`] is the software signer.

use super::CryptoError;
use p256::ecdsa::signature::{Signer, Verifier};
use p256::ecdsa::{Signature, SigningKey, VerifyingKey};
use std::fmt;

/// Length of an uncompressed SEC 1 point on P-256 (`04 ‖ X ‖ Y`).
pub const P256_POINT_LEN: usize = 65;
/// Length of a plain `r ‖ s` ECDSA P-256 signature.
pub const P256_SIGNATURE_LEN: usize = 64;

/// A P-256 public key (a Token Verification key on the card).
#[derive(Clone, PartialEq, Eq)]
pub struct P256PublicKey(VerifyingKey);

impl P256PublicKey {
    /// From a SEC 1 encoded point (uncompressed `04 ‖ X ‖ Y`, or compressed); a point not on
    /// the curve is refused.
    pub fn from_sec1(bytes: &[u8]) -> Result<Self, CryptoError> {
        VerifyingKey::from_sec1_bytes(bytes).map(P256PublicKey).map_err(|_| CryptoError::BadPublicKey)
    }

    /// The uncompressed SEC 1 point (65 bytes), as PUT KEY carries it (key type `B0`).
    pub fn to_sec1_uncompressed(&self) -> Vec<u8> {
        self.0.to_sec1_point(false).as_bytes().to_vec()
    }

    /// Verifies a plain `r ‖ s` signature over `data` (SHA-256 inside).
    pub fn verify(&self, data: &[u8], signature: &[u8]) -> Result<(), CryptoError> {
        let sig = Signature::from_slice(signature).map_err(|_| CryptoError::BadSignature)?;
        self.0.verify(data, &sig).map_err(|_| CryptoError::BadSignature)
    }

    /// A short fingerprint for logs: the first 3 bytes of SHA-256 over the uncompressed point.
    pub fn fingerprint(&self) -> [u8; 3] {
        let h = super::sha256(&self.to_sec1_uncompressed());
        [h[0], h[1], h[2]]
    }
}

impl fmt::Debug for P256PublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let k = self.fingerprint();
        write!(f, "P256PublicKey(fingerprint={:02X}{:02X}{:02X})", k[0], k[1], k[2])
    }
}

/// Signs delegated management tokens (the Card Issuer's side). Implemented in memory by
/// [`P256SigningKey`]; a key store can implement it over an HSM.
pub trait TokenSigner: Send + Sync {
    /// The public key the card verifies with (loaded into the ISD as the Token Verification
    /// key).
    fn public_key(&self) -> Result<P256PublicKey, CryptoError>;
    /// ECDSA P-256 / SHA-256 over `data`, plain `r ‖ s` (64 bytes).
    fn sign(&self, data: &[u8]) -> Result<Vec<u8>, CryptoError>;
}

/// A P-256 private key in memory. The scalar is zeroized on drop (the `ecdsa` crate's
/// `SigningKey` does it); `Debug` shows the public key's fingerprint only.
#[derive(Clone)]
pub struct P256SigningKey(SigningKey);

impl P256SigningKey {
    /// From the 32-byte big-endian private scalar (zero or ≥ the group order is refused).
    pub fn from_bytes(scalar: &[u8]) -> Result<Self, CryptoError> {
        SigningKey::from_slice(scalar).map(P256SigningKey).map_err(|_| CryptoError::BadPrivateKey)
    }

    pub fn public_key(&self) -> P256PublicKey {
        P256PublicKey(*self.0.verifying_key())
    }
}

impl fmt::Debug for P256SigningKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let k = self.public_key().fingerprint();
        write!(f, "P256SigningKey(public fingerprint={:02X}{:02X}{:02X})", k[0], k[1], k[2])
    }
}

impl TokenSigner for P256SigningKey {
    fn public_key(&self) -> Result<P256PublicKey, CryptoError> {
        Ok(P256SigningKey::public_key(self))
    }
    fn sign(&self, data: &[u8]) -> Result<Vec<u8>, CryptoError> {
        let sig: Signature = self.0.try_sign(data).map_err(|_| CryptoError::BadSignature)?;
        Ok(sig.to_bytes().to_vec())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(b: u8) -> P256SigningKey {
        P256SigningKey::from_bytes(&[b; 32]).unwrap()
    }

    #[test]
    fn sign_verify_and_tamper() {
        let k = key(7);
        let pk = k.public_key();
        let sig = k.sign(b"token data").unwrap();
        assert_eq!(sig.len(), P256_SIGNATURE_LEN);
        assert_eq!(sig, k.sign(b"token data").unwrap(), "RFC 6979: deterministic");
        pk.verify(b"token data", &sig).unwrap();
        assert_eq!(pk.verify(b"token datA", &sig), Err(CryptoError::BadSignature));
        assert_eq!(key(8).public_key().verify(b"token data", &sig), Err(CryptoError::BadSignature));
        assert_eq!(pk.verify(b"token data", &sig[..63]), Err(CryptoError::BadSignature));
        let point = pk.to_sec1_uncompressed();
        assert_eq!((point.len(), point[0]), (P256_POINT_LEN, 0x04));
        assert_eq!(P256PublicKey::from_sec1(&point).unwrap(), pk);
        let mut off = point.clone();
        off[64] ^= 1;
        assert_eq!(P256PublicKey::from_sec1(&off), Err(CryptoError::BadPublicKey));
        assert!(P256SigningKey::from_bytes(&[0; 32]).is_err());
        assert!(!format!("{k:?}").contains("0707"), "no scalar in Debug");
    }
}
