//! The PKCS#11 key store (`cryptoki`), tested on SoftHSM2.
//!
//! - **Token and slot**: the token is found by label (slot ids change whenever a token is
//!   initialized); one login per application, kept alive by a session the store always holds.
//!   The library is loaded and `C_Initialize`d once per process and module path.
//! - **Objects**: each key is a token object (`CKA_TOKEN`, `CKA_PRIVATE`) labelled with its
//!   [`KeyId`], `CKA_SENSITIVE` (its value can never be read). Issuer master keys (`issuer/…`)
//!   are also non-extractable and cannot wrap. Other keys must be `CKA_EXTRACTABLE`, because
//!   PKCS#11 only lets `C_WrapKey` encrypt an extractable key and GP key rotation delivers new
//!   keys wrapped under the card's DEK; being sensitive, they leave the token only wrapped.
//!   (`CKA_WRAP_WITH_TRUSTED` + `CKA_TRUSTED` DEKs would narrow this further; it needs the SO.)
//! - **Handles** run every operation in the token: ECB/CBC with `CKM_AES_*`/`CKM_DES3_*`,
//!   CMAC with `CKM_AES_CMAC` (full 16 bytes; callers truncate). Decryption is refused.
//! - **Diversification**: EMV CPS 1.1 and VISA2 derive the card key *inside* the token with
//!   `CKM_DES3_ECB_ENCRYPT_DATA` into a session object (non-extractable); where a token lacks
//!   that mechanism the derivation data is ECB-encrypted in the token and the result imported
//!   as a session object. KDF3 has no PKCS#11 mechanism (SoftHSM2 has no SP 800-108 KDF): the
//!   CMACs run in the token, the result is imported as a non-extractable session object and
//!   the memory copy zeroized. Session objects are destroyed when their handle is dropped.
//! - **Wrapping**: SCP03 is `C_WrapKey(CKM_AES_CBC, zero IV)` under the static DEK. SCP02
//!   derives the session DEK inside the token (`CKM_DES3_CBC_ENCRYPT_DATA`, falling back to
//!   encrypt + import) and wraps with `C_WrapKey(CKM_DES3_ECB)`.
//!   SoftHSM2 2.6 implements neither DES3 wrapping nor AES-CBC wrapping of keys that are not a
//!   multiple of 16 bytes. For such tokens [`Pkcs11Options::allow_clear_rewrap`] (off by
//!   default) lets the store take the key out with `CKM_AES_KEY_WRAP` under an ephemeral key,
//!   unwrap it in process memory (zeroized after use) and encrypt it under the DEK in the
//!   token. Production HSMs that offer `CKM_DES3_ECB` wrapping never need it.
//!
//! cryptoki 0.12 has no variant for `CKM_DES3_ECB_ENCRYPT_DATA`/`CKM_DES3_CBC_ENCRYPT_DATA`;
//! they are passed as raw mechanisms (see [`raw_mechanism`]).

use super::{KeyId, KeyInfo, KeyStore, KeyStoreError, Wrapping, WrappingKey, check_value, scp02_dek_derivation_data, zero_pad};
use cryptoki::context::{CInitializeArgs, CInitializeFlags, Pkcs11};
use cryptoki::error::{Error as CkError, RvError};
use cryptoki::mechanism::vendor_defined::VendorDefinedMechanism;
use cryptoki::mechanism::{Mechanism, MechanismType};
use cryptoki::object::{Attribute, AttributeType, KeyType, ObjectClass, ObjectHandle};
use cryptoki::session::{Session, UserType};
use cryptoki::slot::Slot;
use cryptoki::types::AuthPin;
use std::collections::HashMap;
use std::os::raw::c_ulong;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock};
use tsm_gp::crypto::diversify::{Diversification, KeyRole, diversify};
use tsm_gp::crypto::{CryptoError, KeyAlg, SecretKey, SymmetricKey};
use zeroize::Zeroizing;

const CKM_DES3_ECB_ENCRYPT_DATA: c_ulong = 0x1102;
const CKM_DES3_CBC_ENCRYPT_DATA: c_ulong = 0x1103;

/// Options of the PKCS#11 store.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Pkcs11Options {
    /// Allow wrapping through process memory when the token cannot wrap as GP requires
    /// (module docs). Off by default; SoftHSM2 needs it for SCP02 wrapping.
    pub allow_clear_rewrap: bool,
    /// Let several threads use the token at once. Off by default: every call to the token is
    /// serialized, because some modules (SoftHSM2, softhsm/SoftHSMv2#573) fail intermittently
    /// with `CKR_GENERAL_ERROR` when objects are created while other sessions are active. Turn it
    /// on for HSMs whose modules are known to be thread-safe.
    pub concurrent_sessions: bool,
}

/// `CK_KEY_DERIVATION_STRING_DATA` (PKCS#11 2.40 §2.12.1).
#[repr(C)]
struct KeyDerivationStringData {
    data: *const u8,
    len: c_ulong,
}

/// `CK_DES_CBC_ENCRYPT_DATA_PARAMS` (PKCS#11 2.40 §2.12.1).
#[repr(C)]
struct DesCbcEncryptDataParams {
    iv: [u8; 8],
    data: *const u8,
    len: c_ulong,
}

/// A mechanism type that cryptoki has no constant for.
fn raw_mechanism(val: c_ulong) -> MechanismType {
    // SAFETY: `MechanismType` is `#[repr(transparent)]` over `CK_MECHANISM_TYPE` (= CK_ULONG,
    // `c_ulong`) and has no invariant beyond holding a mechanism number; the size equality is
    // checked by `transmute` at compile time.
    unsafe { std::mem::transmute::<c_ulong, MechanismType>(val) }
}

/// A loaded module and the lock that serializes calls into it.
type ModuleContext = (Pkcs11, Arc<Mutex<()>>);

/// One loaded and initialized module per path, for the whole process: `C_Initialize` may run
/// once, and a second `Pkcs11` on the same library would share its state anyway.
/// With it, the lock that serializes calls into that module: shared by every store of the
/// process on that module (two stores on one token are one module's state).
fn context(module: &Path) -> Result<ModuleContext, KeyStoreError> {
    static CONTEXTS: OnceLock<Mutex<HashMap<PathBuf, ModuleContext>>> = OnceLock::new();
    let mut map = CONTEXTS.get_or_init(Default::default).lock().unwrap_or_else(|p| p.into_inner());
    if let Some(c) = map.get(module) {
        return Ok(c.clone());
    }
    let ctx = Pkcs11::new(module).map_err(|e| KeyStoreError::Pkcs11(format!("cannot load {}: {e}", module.display())))?;
    match ctx.initialize(CInitializeArgs::new(CInitializeFlags::OS_LOCKING_OK)) {
        Ok(()) | Err(CkError::Pkcs11(RvError::CryptokiAlreadyInitialized, _)) => {}
        Err(e) => return Err(KeyStoreError::Pkcs11(format!("C_Initialize: {e}"))),
    }
    let serial = Arc::new(Mutex::new(()));
    map.insert(module.to_path_buf(), (ctx.clone(), serial.clone()));
    Ok((ctx, serial))
}

fn ck(e: CkError) -> KeyStoreError {
    KeyStoreError::Pkcs11(e.to_string())
}

fn rv(e: &CkError) -> Option<RvError> {
    match e {
        CkError::Pkcs11(rv, _) => Some(*rv),
        _ => None,
    }
}

struct Inner {
    ctx: Pkcs11,
    slot: Slot,
    token: String,
    options: Pkcs11Options,
    /// Idle sessions (a `Session` is `Send` but not `Sync`: one user at a time).
    idle: Mutex<Vec<Session>>,
    /// Holds the login, and owns the session objects (derived keys).
    keeper: Mutex<Session>,
    /// Held around every call into the module unless `concurrent_sessions` (per module, see
    /// [`context`]).
    serial: Arc<Mutex<()>>,
}

impl Inner {
    fn with_session<T>(&self, f: impl FnOnce(&Session) -> Result<T, CkError>) -> Result<T, CkError> {
        let s = self.idle.lock().unwrap_or_else(|p| p.into_inner()).pop();
        let s = match s {
            Some(s) => s,
            None => self.ctx.open_rw_session(self.slot)?,
        };
        let r = if self.options.concurrent_sessions {
            f(&s)
        } else {
            let _one_at_a_time = self.serial.lock().unwrap_or_else(|p| p.into_inner());
            f(&s)
        };
        self.idle.lock().unwrap_or_else(|p| p.into_inner()).push(s);
        r
    }

    /// Of several token objects with one label (two nodes created a key at once), the one
    /// created first: `CKA_ID` holds the creation time and a random tie-breaker, and objects
    /// created before ids were set (empty id) count as oldest. Every node picks the same one.
    fn oldest(&self, objs: &[ObjectHandle]) -> Result<ObjectHandle, KeyStoreError> {
        let mut best: Option<(Vec<u8>, ObjectHandle)> = None;
        for &o in objs {
            // An object its creator has just removed (it lost the race) is skipped.
            let attrs = match self.with_session(|s| s.get_attributes(o, &[AttributeType::Id])) {
                Ok(a) => a,
                Err(e) if matches!(rv(&e), Some(RvError::ObjectHandleInvalid)) => continue,
                Err(e) => return Err(ck(e)),
            };
            let id = attrs.into_iter().find_map(|a| if let Attribute::Id(v) = a { Some(v) } else { None }).unwrap_or_default();
            if best.as_ref().is_none_or(|(b, _)| id < *b) {
                best = Some((id, o));
            }
        }
        best.map(|(_, o)| o).ok_or_else(|| KeyStoreError::Pkcs11("no object to choose from".into()))
    }

    fn find(&self, id: &KeyId) -> Result<Option<ObjectHandle>, KeyStoreError> {
        let found = self
            .with_session(|s| s.find_objects(&[Attribute::Class(ObjectClass::SECRET_KEY), Attribute::Token(true), Attribute::Label(id.as_str().as_bytes().to_vec())]))
            .map_err(ck)?;
        match found.len() {
            0 => Ok(None),
            1 => Ok(Some(found[0])),
            // A concurrent creation not settled yet: the oldest is the one that stays.
            _ => self.oldest(&found).map(Some),
        }
    }

    fn alg_of(&self, obj: ObjectHandle) -> Result<KeyAlg, KeyStoreError> {
        let attrs = self.with_session(|s| s.get_attributes(obj, &[AttributeType::KeyType])).map_err(ck)?;
        let kt = attrs.iter().find_map(|a| if let Attribute::KeyType(k) = a { Some(*k) } else { None });
        match kt {
            Some(k) if k == KeyType::DES2 => Ok(KeyAlg::Des3_2k),
            Some(k) if k == KeyType::DES3 => Ok(KeyAlg::Des3_3k),
            Some(k) if k == KeyType::AES => {
                let attrs = self.with_session(|s| s.get_attributes(obj, &[AttributeType::ValueLen])).map_err(ck)?;
                let len = attrs.iter().find_map(|a| if let Attribute::ValueLen(l) = a { Some(u64::from(*l) as usize) } else { None });
                len.and_then(KeyAlg::aes_for_len).ok_or_else(|| KeyStoreError::Pkcs11("AES key without a valid CKA_VALUE_LEN".into()))
            }
            other => Err(KeyStoreError::Unsupported { op: "key type", detail: format!("{other:?}") }),
        }
    }

    /// A session object (destroyed with its handle) holding `value`.
    fn import_session_key(self: &Arc<Self>, alg: KeyAlg, value: &[u8]) -> Result<Pkcs11Key, KeyStoreError> {
        let mut t = session_template(alg)?;
        t.push(Attribute::Value(value.to_vec()));
        let obj = self.keeper.lock().unwrap_or_else(|p| p.into_inner()).create_object(&t).map_err(ck)?;
        Ok(Pkcs11Key { inner: self.clone(), obj, alg, session_object: true })
    }

    /// Derives a DES2 session object from `base` with a raw `*_ENCRYPT_DATA` mechanism.
    fn derive_des(self: &Arc<Self>, base: ObjectHandle, mech: &Mechanism) -> Result<Pkcs11Key, CkError> {
        let t = session_template(KeyAlg::Des3_2k).expect("DES2 is supported");
        let obj = self.keeper.lock().unwrap_or_else(|p| p.into_inner()).derive_key(mech, base, &t)?;
        Ok(Pkcs11Key { inner: self.clone(), obj, alg: KeyAlg::Des3_2k, session_object: true })
    }
}

fn key_type(alg: KeyAlg) -> Result<KeyType, KeyStoreError> {
    match alg {
        KeyAlg::Des3_2k => Ok(KeyType::DES2),
        KeyAlg::Des3_3k => Ok(KeyType::DES3),
        KeyAlg::Aes128 | KeyAlg::Aes192 | KeyAlg::Aes256 => Ok(KeyType::AES),
        KeyAlg::Sm4 => Err(KeyStoreError::Unsupported { op: "SM4 keys", detail: "PKCS#11 tokens here have no SM4; keep SM4 keys in the software store".into() }),
    }
}

/// Attributes of a token key (see the module docs for the policy).
/// `CKA_ID` of a new token object: creation time (ms, big-endian) ‖ 8 random bytes, so that
/// concurrent creations of one label resolve to the same survivor on every node.
fn creation_id() -> Vec<u8> {
    let mut id = (crate::domain::now_ms() as u64).to_be_bytes().to_vec();
    let mut r = [0u8; 8];
    let _ = getrandom::fill(&mut r);
    id.extend_from_slice(&r);
    id
}

fn token_template(id: &KeyId, alg: KeyAlg) -> Result<Vec<Attribute>, KeyStoreError> {
    let master = id.is_master();
    Ok(vec![
        Attribute::Class(ObjectClass::SECRET_KEY),
        Attribute::KeyType(key_type(alg)?),
        Attribute::Token(true),
        Attribute::Private(true),
        Attribute::Label(id.as_str().as_bytes().to_vec()),
        Attribute::Id(creation_id()),
        Attribute::Sensitive(true),
        Attribute::Extractable(!master),
        Attribute::Encrypt(true),
        Attribute::Decrypt(false),
        Attribute::Sign(alg.is_aes()),
        Attribute::Verify(false),
        Attribute::Wrap(!master),
        Attribute::Unwrap(false),
        Attribute::Derive(alg.is_des()),
    ])
}

/// Attributes of a derived or imported session key: never extractable.
fn session_template(alg: KeyAlg) -> Result<Vec<Attribute>, KeyStoreError> {
    Ok(vec![
        Attribute::Class(ObjectClass::SECRET_KEY),
        Attribute::KeyType(key_type(alg)?),
        Attribute::Token(false),
        Attribute::Private(true),
        Attribute::Sensitive(true),
        Attribute::Extractable(false),
        Attribute::Encrypt(true),
        Attribute::Decrypt(false),
        Attribute::Sign(alg.is_aes()),
        Attribute::Wrap(true),
        Attribute::Derive(alg.is_des()),
    ])
}

/// A key in the token; operations run there.
pub struct Pkcs11Key {
    inner: Arc<Inner>,
    obj: ObjectHandle,
    alg: KeyAlg,
    session_object: bool,
}

impl std::fmt::Debug for Pkcs11Key {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Pkcs11Key({:?}, token {:?}, object {})", self.alg, self.inner.token, self.obj)
    }
}

impl Drop for Pkcs11Key {
    fn drop(&mut self) {
        if self.session_object {
            let obj = self.obj;
            if let Err(e) = self.inner.with_session(|s| s.destroy_object(obj)) {
                tracing::warn!(error = %e, "could not destroy a derived PKCS#11 session key");
            }
        }
    }
}

impl Pkcs11Key {
    fn run(&self, what: &'static str, f: impl FnOnce(&Session) -> Result<Vec<u8>, CkError>) -> Result<Vec<u8>, CryptoError> {
        self.inner.with_session(f).map_err(|e| CryptoError::KeyStore(format!("PKCS#11 {what}: {e}")))
    }
    fn check(&self, iv: Option<&[u8]>, data: &[u8]) -> Result<(), CryptoError> {
        let block = self.alg.block_len();
        if !data.len().is_multiple_of(block) {
            return Err(CryptoError::NotBlockAligned { len: data.len(), block });
        }
        if let Some(iv) = iv.filter(|iv| iv.len() != block) {
            return Err(CryptoError::IvLength { len: iv.len(), block });
        }
        Ok(())
    }
}

impl SymmetricKey for Pkcs11Key {
    fn alg(&self) -> KeyAlg {
        self.alg
    }
    fn encrypt_cbc(&self, iv: &[u8], data: &[u8]) -> Result<Vec<u8>, CryptoError> {
        self.check(Some(iv), data)?;
        let mech = if self.alg.is_des() { Mechanism::Des3Cbc(iv.try_into().expect("checked")) } else { Mechanism::AesCbc(iv.try_into().expect("checked")) };
        self.run("CBC encryption", |s| s.encrypt(&mech, self.obj, data))
    }
    fn encrypt_ecb(&self, data: &[u8]) -> Result<Vec<u8>, CryptoError> {
        self.check(None, data)?;
        let mech = if self.alg.is_des() { Mechanism::Des3Ecb } else { Mechanism::AesEcb };
        self.run("ECB encryption", |s| s.encrypt(&mech, self.obj, data))
    }
    fn cmac(&self, data: &[u8]) -> Result<[u8; 16], CryptoError> {
        if !self.alg.is_aes() {
            return Err(CryptoError::Unsupported { alg: self.alg, op: "CMAC" });
        }
        let mac = self.run("CMAC", |s| s.sign(&Mechanism::AesCMac, self.obj, data))?;
        mac.as_slice().try_into().map_err(|_| CryptoError::KeyStore(format!("PKCS#11 CMAC of {} bytes", mac.len())))
    }
}

/// The PKCS#11 key store.
pub struct Pkcs11KeyStore {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Pkcs11KeyStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Pkcs11KeyStore(token {:?}, {:?})", self.inner.token, self.inner.options)
    }
}

impl Pkcs11KeyStore {
    /// Loads `module`, finds the token labelled `token_label` and logs in with the user PIN.
    pub fn open(module: &Path, token_label: &str, pin: &str, options: Pkcs11Options) -> Result<Self, KeyStoreError> {
        let (ctx, serial) = context(module)?;
        let mut slot = None;
        for s in ctx.get_slots_with_token().map_err(ck)? {
            if ctx.get_token_info(s).is_ok_and(|info| info.label().trim_end() == token_label) {
                slot = Some(s);
                break;
            }
        }
        let slot = slot.ok_or_else(|| KeyStoreError::Pkcs11(format!("no token labelled {token_label:?} in {}", module.display())))?;
        let keeper = ctx.open_rw_session(slot).map_err(ck)?;
        match keeper.login(UserType::User, Some(&AuthPin::from(pin.to_string()))) {
            Ok(()) | Err(CkError::Pkcs11(RvError::UserAlreadyLoggedIn, _)) => {}
            Err(e) => return Err(KeyStoreError::Pkcs11(format!("login to token {token_label:?}: {e}"))),
        }
        Ok(Pkcs11KeyStore { inner: Arc::new(Inner { ctx, slot, token: token_label.to_string(), options, idle: Mutex::new(Vec::new()), keeper: Mutex::new(keeper), serial }) })
    }

    fn object(&self, id: &KeyId) -> Result<ObjectHandle, KeyStoreError> {
        self.inner.find(id)?.ok_or_else(|| KeyStoreError::NotFound(id.clone()))
    }

    fn token_key(&self, id: &KeyId) -> Result<Pkcs11Key, KeyStoreError> {
        let obj = self.object(id)?;
        Ok(Pkcs11Key { inner: self.inner.clone(), obj, alg: self.inner.alg_of(obj)?, session_object: false })
    }

    /// After creating `obj` under `id`: if another node created the same id concurrently,
    /// remove ours and report the conflict.
    fn settle(&self, id: &KeyId, obj: ObjectHandle) -> Result<KeyInfo, KeyStoreError> {
        let all = self
            .inner
            .with_session(|s| s.find_objects(&[Attribute::Class(ObjectClass::SECRET_KEY), Attribute::Token(true), Attribute::Label(id.as_str().as_bytes().to_vec())]))
            .map_err(ck)?;
        // Another node created the same id concurrently: the oldest object stays (every node
        // agrees on it), the others are removed by their creators.
        if all.len() > 1 && self.inner.oldest(&all)? != obj {
            let _ = self.inner.with_session(|s| s.destroy_object(obj));
            return Err(KeyStoreError::AlreadyExists(id.clone()));
        }
        let alg = self.inner.alg_of(obj)?;
        let key = Pkcs11Key { inner: self.inner.clone(), obj, alg, session_object: false };
        Ok(KeyInfo { alg, kcv: key.kcv()? })
    }

    fn wrapping_key(&self, w: &WrappingKey) -> Result<Pkcs11Key, KeyStoreError> {
        match w {
            WrappingKey::Stored(id) => self.token_key(id),
            WrappingKey::Diversified { master, method, kdd, role } => self.diversified(master, *method, kdd, *role),
        }
    }

    fn diversified(&self, master: &KeyId, method: Diversification, kdd: &[u8], role: KeyRole) -> Result<Pkcs11Key, KeyStoreError> {
        let m = self.token_key(master)?;
        if matches!(method, Diversification::EmvCps11 | Diversification::Visa2) && m.alg.is_des() && kdd.len() >= 10 {
            let data = emv_derivation_data(method, kdd, role);
            let params = KeyDerivationStringData { data: data.as_ptr(), len: data.len() as c_ulong };
            let mech = Mechanism::VendorDefined(VendorDefinedMechanism::new(raw_mechanism(CKM_DES3_ECB_ENCRYPT_DATA), Some(&params)));
            match self.inner.derive_des(m.obj, &mech) {
                Ok(k) => return Ok(k),
                Err(e) if matches!(rv(&e), Some(RvError::MechanismInvalid)) => {} // fall back below
                Err(e) => return Err(ck(e)),
            }
        }
        // KDF3 (no PKCS#11 mechanism), or no ECB-encrypt-data derivation: compute with the
        // master's in-token operations, import the result as a session object.
        let k = diversify(method, &m, kdd, role)?;
        self.inner.import_session_key(k.alg(), k.expose())
    }

    /// The SCP02 session DEK, derived in the token where possible.
    fn scp02_session_dek(&self, dek: &Pkcs11Key, sequence_counter: u16) -> Result<Pkcs11Key, KeyStoreError> {
        if !dek.alg.is_des() {
            return Err(KeyStoreError::Unsupported { op: "SCP02 wrapping", detail: format!("the DEK is {:?}, SCP02 needs 3DES", dek.alg) });
        }
        let data = scp02_dek_derivation_data(sequence_counter);
        let params = DesCbcEncryptDataParams { iv: [0; 8], data: data.as_ptr(), len: data.len() as c_ulong };
        let mech = Mechanism::VendorDefined(VendorDefinedMechanism::new(raw_mechanism(CKM_DES3_CBC_ENCRYPT_DATA), Some(&params)));
        match self.inner.derive_des(dek.obj, &mech) {
            Ok(k) => Ok(k),
            Err(e) if matches!(rv(&e), Some(RvError::MechanismInvalid)) => {
                let v = Zeroizing::new(dek.encrypt_cbc(&[0; 8], &data)?);
                self.inner.import_session_key(KeyAlg::Des3_2k, &v)
            }
            Err(e) => Err(ck(e)),
        }
    }

    /// The clear value of an extractable key, through `CKM_AES_KEY_WRAP` under an ephemeral
    /// key (only with `allow_clear_rewrap`).
    fn extract(&self, key: &Pkcs11Key, why: &str) -> Result<Zeroizing<Vec<u8>>, KeyStoreError> {
        if !self.inner.options.allow_clear_rewrap {
            return Err(KeyStoreError::Unsupported { op: "wrapping", detail: format!("the token cannot {why}; set allow_clear_rewrap to wrap through process memory") });
        }
        tracing::warn!(token = %self.inner.token, "token cannot {why}: wrapping through process memory (allow_clear_rewrap)");
        let mut e = Zeroizing::new(vec![0u8; 32]);
        getrandom::fill(&mut e).map_err(|x| KeyStoreError::Backend(format!("random source: {x}")))?;
        let eph = self.inner.import_session_key(KeyAlg::Aes256, &e)?;
        let wrapped = self.inner.with_session(|s| s.wrap_key(&Mechanism::AesKeyWrap, eph.obj, key.obj)).map_err(|x| match rv(&x) {
            Some(RvError::KeyUnextractable) => KeyStoreError::Pkcs11("the key is not extractable".into()),
            _ => ck(x),
        })?;
        aes_key_unwrap(&SecretKey::aes(&e)?, &wrapped)
    }
}

/// The 16 bytes EMV CPS 1.1 / VISA2 encrypt with the master key (as `tsm_gp::crypto::diversify`).
fn emv_derivation_data(method: Diversification, kdd: &[u8], role: KeyRole) -> Zeroizing<Vec<u8>> {
    let seed: Vec<u8> = if method == Diversification::EmvCps11 { kdd[4..10].to_vec() } else { [&kdd[0..2], &kdd[4..8]].concat() };
    let k = role as u8;
    let mut d = Zeroizing::new(Vec::with_capacity(16));
    d.extend_from_slice(&seed);
    d.extend_from_slice(&[0xF0, k]);
    d.extend_from_slice(&seed);
    d.extend_from_slice(&[0x0F, k]);
    d
}

/// AES key unwrap (RFC 3394 §2.2.2) with the default IV.
fn aes_key_unwrap(kek: &SecretKey, wrapped: &[u8]) -> Result<Zeroizing<Vec<u8>>, KeyStoreError> {
    if wrapped.len() < 24 || !wrapped.len().is_multiple_of(8) {
        return Err(KeyStoreError::Pkcs11(format!("AES key wrap output of {} bytes", wrapped.len())));
    }
    let n = wrapped.len() / 8 - 1;
    let mut a: [u8; 8] = wrapped[..8].try_into().expect("8 bytes");
    let mut r = Zeroizing::new(wrapped[8..].to_vec());
    let mut block = Zeroizing::new([0u8; 16]);
    for j in (0..6u64).rev() {
        for i in (1..=n).rev() {
            let t = (n as u64) * j + i as u64;
            for (x, y) in a.iter_mut().zip(t.to_be_bytes()) {
                *x ^= y;
            }
            block[..8].copy_from_slice(&a);
            block[8..].copy_from_slice(&r[(i - 1) * 8..i * 8]);
            let b = Zeroizing::new(tsm_gp::crypto::ecb_decrypt(kek, &block[..])?);
            a.copy_from_slice(&b[..8]);
            r[(i - 1) * 8..i * 8].copy_from_slice(&b[8..]);
        }
    }
    if a != [0xA6; 8] {
        return Err(KeyStoreError::Pkcs11("AES key unwrap integrity check failed".into()));
    }
    Ok(r)
}

impl KeyStore for Pkcs11KeyStore {
    fn import(&self, id: &KeyId, alg: KeyAlg, value: &[u8]) -> Result<KeyInfo, KeyStoreError> {
        check_value(alg, value)?;
        if self.inner.find(id)?.is_some() {
            return Err(KeyStoreError::AlreadyExists(id.clone()));
        }
        let mut t = token_template(id, alg)?;
        t.push(Attribute::Value(value.to_vec()));
        let obj = self.inner.with_session(|s| s.create_object(&t)).map_err(ck)?;
        // The template held a copy of the value: wipe it.
        for a in t.iter_mut() {
            if let Attribute::Value(v) = a {
                zeroize::Zeroize::zeroize(v);
            }
        }
        self.settle(id, obj)
    }

    fn generate(&self, id: &KeyId, alg: KeyAlg) -> Result<KeyInfo, KeyStoreError> {
        if self.inner.find(id)?.is_some() {
            return Err(KeyStoreError::AlreadyExists(id.clone()));
        }
        let mut t = token_template(id, alg)?;
        let mech = match alg {
            KeyAlg::Des3_2k => Mechanism::Des2KeyGen,
            KeyAlg::Des3_3k => Mechanism::Des3KeyGen,
            _ => {
                t.push(Attribute::ValueLen((alg.key_len() as c_ulong).into()));
                Mechanism::AesKeyGen
            }
        };
        let obj = self.inner.with_session(|s| s.generate_key(&mech, &t)).map_err(ck)?;
        self.settle(id, obj)
    }

    fn handle(&self, id: &KeyId) -> Result<Arc<dyn SymmetricKey>, KeyStoreError> {
        Ok(Arc::new(self.token_key(id)?))
    }

    fn info(&self, id: &KeyId) -> Result<Option<KeyInfo>, KeyStoreError> {
        let Some(obj) = self.inner.find(id)? else { return Ok(None) };
        let alg = self.inner.alg_of(obj)?;
        let key = Pkcs11Key { inner: self.inner.clone(), obj, alg, session_object: false };
        Ok(Some(KeyInfo { alg, kcv: key.kcv()? }))
    }

    fn delete(&self, id: &KeyId) -> Result<(), KeyStoreError> {
        let all = self
            .inner
            .with_session(|s| s.find_objects(&[Attribute::Class(ObjectClass::SECRET_KEY), Attribute::Token(true), Attribute::Label(id.as_str().as_bytes().to_vec())]))
            .map_err(ck)?;
        for o in all {
            self.inner.with_session(|s| s.destroy_object(o)).map_err(ck)?;
        }
        Ok(())
    }

    fn wrap(&self, key: &KeyId, wrapping: &Wrapping) -> Result<Vec<u8>, KeyStoreError> {
        if key.is_master() {
            return Err(KeyStoreError::NotWrappable(key.clone()));
        }
        let k = self.token_key(key)?;
        let dek = self.wrapping_key(wrapping.dek())?;
        match wrapping {
            Wrapping::Scp03 { .. } => {
                let bs = dek.alg.block_len();
                if dek.alg.is_aes() && k.alg.key_len() % bs == 0 {
                    return self.inner.with_session(|s| s.wrap_key(&Mechanism::AesCbc([0; 16]), dek.obj, k.obj)).map_err(|e| match rv(&e) {
                        Some(RvError::KeyUnextractable) => KeyStoreError::NotWrappable(key.clone()),
                        _ => ck(e),
                    });
                }
                let v = self.extract(&k, "AES-CBC-wrap a key that is not a multiple of the block size")?;
                Ok(dek.encrypt_cbc(&vec![0u8; bs], &zero_pad(&v, bs))?)
            }
            Wrapping::Scp02 { sequence_counter, .. } => {
                let sdek = self.scp02_session_dek(&dek, *sequence_counter)?;
                match self.inner.with_session(|s| s.wrap_key(&Mechanism::Des3Ecb, sdek.obj, k.obj)) {
                    Ok(w) => Ok(w),
                    Err(e) if matches!(rv(&e), Some(RvError::MechanismInvalid)) => {
                        let v = self.extract(&k, "wrap with CKM_DES3_ECB")?;
                        Ok(sdek.encrypt_ecb(&zero_pad(&v, 8))?)
                    }
                    Err(e) if matches!(rv(&e), Some(RvError::KeyUnextractable)) => Err(KeyStoreError::NotWrappable(key.clone())),
                    Err(e) => Err(ck(e)),
                }
            }
        }
    }

    fn diversify(&self, master: &KeyId, method: Diversification, kdd: &[u8], role: KeyRole) -> Result<Arc<dyn SymmetricKey>, KeyStoreError> {
        Ok(Arc::new(self.diversified(master, method, kdd, role)?))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc3394_unwrap_vector() {
        // RFC 3394 §4.1: 128 bits of key data with a 128-bit KEK.
        let kek = SecretKey::aes(&tsm_gp::hex::decode("000102030405060708090A0B0C0D0E0F").unwrap()).unwrap();
        let c = tsm_gp::hex::decode("1FA68B0A8112B447AEF34BD8FB5A7B829D3E862371D2CFE5").unwrap();
        assert_eq!(tsm_gp::hex::encode(&aes_key_unwrap(&kek, &c).unwrap()), "00112233445566778899AABBCCDDEEFF");
        let mut bad = c.clone();
        bad[3] ^= 1;
        assert!(aes_key_unwrap(&kek, &bad).is_err());
    }

    #[test]
    fn emv_data_matches_the_core() {
        // The in-token derivation must encrypt exactly what tsm_gp's diversify encrypts.
        let master = SecretKey::des3(&tsm_gp::hex::decode("404142434445464748494A4B4C4D4E4F").unwrap()).unwrap();
        let kdd = tsm_gp::hex::decode("00010203040506070809").unwrap();
        for method in [Diversification::EmvCps11, Diversification::Visa2] {
            for role in KeyRole::ALL {
                let core = diversify(method, &master, &kdd, role).unwrap();
                let ours = master.encrypt_ecb(&emv_derivation_data(method, &kdd, role)).unwrap();
                assert_eq!(core.expose(), &ours[..]);
            }
        }
    }
}
