//! The PKCS#11 key store (work in progress).

/// Options of the PKCS#11 store.
#[derive(Debug, Clone, Default)]
pub struct Pkcs11Options {}

/// Keys in an HSM token.
pub struct Pkcs11KeyStore {}
