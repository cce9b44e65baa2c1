//! The software key store: key values sealed with `tsm_gp::crypto::seal` under a 32-byte
//! master key, persisted in the `key_material` table so that every node sees the same keys.
//!
//! - **At rest**: only the sealed value (`01 ‖ IV ‖ AES-256-CBC ciphertext ‖ CMAC`), the
//!   algorithm and the KCV are stored. The associated data binds the key id and algorithm, so
//!   a sealed value copied onto another row does not open. A fresh random IV per seal.
//! - **In memory**: a handle is an `Arc<SecretKey>` (zeroized on drop); values opened for
//!   wrapping or diversification live in `Zeroizing` buffers for the duration of the call.
//! - **Sync trait, async database** (see the module docs of [`crate::keys`]): a dedicated
//!   worker thread runs a current-thread Tokio runtime with its own small pool on the same
//!   database URL. Trait calls send a job and block on a std channel for the answer. This never
//!   blocks the caller's runtime on itself (so no deadlock on a current-thread runtime, no
//!   `block_in_place` panics) and there is no cache to go stale across nodes: every call reads
//!   the row (one indexed lookup).
//!   An in-memory SQLite URL is *not* shared with the worker's pool: use a file.

use super::{KeyId, KeyInfo, KeyStore, KeyStoreError, Wrapping, WrappingKey, check_value, scp02_dek_derivation_data, zero_pad};
use crate::domain::{key_alg_str, now_ms, parse_key_alg};
use sqlx::any::AnyPoolOptions;
use sqlx::{AnyPool, Row};
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use tsm_gp::crypto::diversify::{Diversification, KeyRole, diversify};
use tsm_gp::crypto::seal::{open, seal};
use tsm_gp::crypto::{KeyAlg, SecretKey, SymmetricKey, ecb_encrypt};
use zeroize::Zeroizing;

type Job = Box<dyn FnOnce(AnyPool) -> Pin<Box<dyn Future<Output = ()> + Send>> + Send>;

/// The software key store. Cheap to share behind an `Arc`; dropping it stops its worker.
pub struct SoftwareKeyStore {
    master: SecretKey,
    jobs: tokio::sync::mpsc::UnboundedSender<Job>,
}

impl std::fmt::Debug for SoftwareKeyStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "SoftwareKeyStore(master {:?})", self.master)
    }
}

/// Parses a master key: 64 hex digits (whitespace ignored), or exactly 32 raw bytes.
pub fn parse_master_key(bytes: &[u8]) -> Result<SecretKey, KeyStoreError> {
    let text = std::str::from_utf8(bytes).ok().map(|s| s.split_whitespace().collect::<String>());
    if let Some(t) = text.as_deref().filter(|t| t.len() == 64 && t.bytes().all(|b| b.is_ascii_hexdigit())) {
        let v = Zeroizing::new(tsm_gp::hex::decode(t).map_err(|e| KeyStoreError::Backend(format!("master key: {e}")))?);
        return Ok(SecretKey::aes(&v)?);
    }
    if bytes.len() == 32 {
        return Ok(SecretKey::aes(bytes)?);
    }
    Err(KeyStoreError::InvalidValue { alg: KeyAlg::Aes256, expected: 32, got: bytes.len() })
}

fn aad(id: &KeyId, alg: KeyAlg) -> Vec<u8> {
    let mut a = id.as_str().as_bytes().to_vec();
    a.push(0);
    a.extend_from_slice(key_alg_str(alg).as_bytes());
    a
}

fn random(n: usize) -> Result<Zeroizing<Vec<u8>>, KeyStoreError> {
    let mut v = Zeroizing::new(vec![0u8; n]);
    getrandom::fill(&mut v).map_err(|e| KeyStoreError::Backend(format!("random source: {e}")))?;
    Ok(v)
}

/// Odd parity on every byte: DES keys as GP cards and HSMs expect them (DES ignores the bit).
pub(crate) fn des_parity(v: &mut [u8]) {
    for b in v.iter_mut() {
        *b = (*b & 0xFE) | (((*b >> 1).count_ones() as u8 + 1) & 1);
    }
}

struct Row_ {
    alg: KeyAlg,
    kcv: [u8; 3],
    sealed: Vec<u8>,
}

impl SoftwareKeyStore {
    /// Starts the store on `database_url` (already migrated: it needs the `key_material`
    /// table) with a 32-byte master key.
    pub fn connect(database_url: &str, master: SecretKey) -> Result<Self, KeyStoreError> {
        if master.alg() != KeyAlg::Aes256 {
            return Err(KeyStoreError::InvalidValue { alg: KeyAlg::Aes256, expected: 32, got: master.expose().len() });
        }
        sqlx::any::install_default_drivers();
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<Job>();
        let (ready_tx, ready_rx) = std::sync::mpsc::sync_channel::<Result<(), String>>(1);
        let url = database_url.to_string();
        std::thread::Builder::new()
            .name("tsm-keystore-db".into())
            .spawn(move || {
                let rt = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
                    Ok(rt) => rt,
                    Err(e) => {
                        let _ = ready_tx.send(Err(e.to_string()));
                        return;
                    }
                };
                rt.block_on(async move {
                    let pool = match AnyPoolOptions::new().max_connections(4).connect(&url).await {
                        Ok(p) => p,
                        Err(e) => {
                            let _ = ready_tx.send(Err(e.to_string()));
                            return;
                        }
                    };
                    let _ = ready_tx.send(Ok(()));
                    while let Some(job) = rx.recv().await {
                        tokio::spawn(job(pool.clone()));
                    }
                    pool.close().await;
                });
            })
            .map_err(|e| KeyStoreError::Backend(format!("cannot start the key store worker: {e}")))?;
        match ready_rx.recv() {
            Ok(Ok(())) => Ok(SoftwareKeyStore { master, jobs: tx }),
            Ok(Err(e)) => Err(KeyStoreError::Backend(format!("key store database: {e}"))),
            Err(_) => Err(KeyStoreError::Backend("key store worker stopped".into())),
        }
    }

    /// Runs one database job on the worker and waits for its result.
    fn call<T, F, Fut>(&self, f: F) -> Result<T, KeyStoreError>
    where
        T: Send + 'static,
        F: FnOnce(AnyPool) -> Fut + Send + 'static,
        Fut: Future<Output = Result<T, sqlx::Error>> + Send + 'static,
    {
        let (tx, rx) = std::sync::mpsc::sync_channel(1);
        let job: Job = Box::new(move |pool| {
            Box::pin(async move {
                let _ = tx.send(f(pool).await);
            })
        });
        self.jobs.send(job).map_err(|_| KeyStoreError::Backend("key store worker stopped".into()))?;
        rx.recv()
            .map_err(|_| KeyStoreError::Backend("key store worker stopped".into()))?
            .map_err(|e| KeyStoreError::Backend(e.to_string()))
    }

    fn load(&self, id: &KeyId) -> Result<Option<Row_>, KeyStoreError> {
        let key = id.as_str().to_string();
        let row = self.call(move |pool| async move {
            sqlx::query("SELECT alg, kcv, sealed FROM key_material WHERE key_id = $1").bind(key).fetch_optional(&pool).await?.map(|r| {
                Ok::<_, sqlx::Error>((r.try_get::<String, _>("alg")?, r.try_get::<String, _>("kcv")?, r.try_get::<Vec<u8>, _>("sealed")?))
            }).transpose()
        })?;
        let Some((alg, kcv, sealed)) = row else { return Ok(None) };
        let alg = parse_key_alg(&alg).map_err(|_| KeyStoreError::BadSeal(id.clone()))?;
        let kcv: [u8; 3] = tsm_gp::hex::decode(&kcv).ok().and_then(|v| v.try_into().ok()).ok_or_else(|| KeyStoreError::BadSeal(id.clone()))?;
        Ok(Some(Row_ { alg, kcv, sealed }))
    }

    /// Opens a stored key into memory.
    fn secret(&self, id: &KeyId) -> Result<SecretKey, KeyStoreError> {
        let row = self.load(id)?.ok_or_else(|| KeyStoreError::NotFound(id.clone()))?;
        let value = open(&self.master, &aad(id, row.alg), &row.sealed).map_err(|_| KeyStoreError::BadSeal(id.clone()))?;
        let key = SecretKey::new(row.alg, &value).map_err(|_| KeyStoreError::BadSeal(id.clone()))?;
        if key.kcv() != row.kcv {
            return Err(KeyStoreError::BadSeal(id.clone()));
        }
        Ok(key)
    }

    fn store(&self, id: &KeyId, key: &SecretKey) -> Result<KeyInfo, KeyStoreError> {
        let iv: [u8; 16] = random(16)?.as_slice().try_into().expect("16 bytes");
        let sealed = seal(&self.master, &iv, &aad(id, key.alg()), key.expose())?;
        let info = KeyInfo { alg: key.alg(), kcv: key.kcv() };
        let (kid, alg, kcv) = (id.as_str().to_string(), key_alg_str(key.alg()), tsm_gp::hex::encode(&info.kcv));
        let inserted = self.call(move |pool| async move {
            let r = sqlx::query("INSERT INTO key_material (key_id, alg, kcv, sealed, created_at) VALUES ($1, $2, $3, $4, $5) ON CONFLICT (key_id) DO NOTHING")
                .bind(kid)
                .bind(alg)
                .bind(kcv)
                .bind(sealed)
                .bind(now_ms())
                .execute(&pool)
                .await?;
            Ok(r.rows_affected() == 1)
        })?;
        if !inserted {
            return Err(KeyStoreError::AlreadyExists(id.clone()));
        }
        Ok(info)
    }

    fn wrapping_key(&self, w: &WrappingKey) -> Result<SecretKey, KeyStoreError> {
        match w {
            WrappingKey::Stored(id) => self.secret(id),
            WrappingKey::Diversified { master, method, kdd, role } => Ok(diversify(*method, &self.secret(master)?, kdd, *role)?),
        }
    }
}

impl KeyStore for SoftwareKeyStore {
    fn import(&self, id: &KeyId, alg: KeyAlg, value: &[u8]) -> Result<KeyInfo, KeyStoreError> {
        check_value(alg, value)?;
        self.store(id, &SecretKey::new(alg, value)?)
    }

    fn generate(&self, id: &KeyId, alg: KeyAlg) -> Result<KeyInfo, KeyStoreError> {
        let mut v = random(alg.key_len())?;
        if alg.is_des() {
            des_parity(&mut v);
        }
        self.store(id, &SecretKey::new(alg, &v)?)
    }

    fn handle(&self, id: &KeyId) -> Result<Arc<dyn SymmetricKey>, KeyStoreError> {
        Ok(Arc::new(self.secret(id)?))
    }

    fn info(&self, id: &KeyId) -> Result<Option<KeyInfo>, KeyStoreError> {
        Ok(self.load(id)?.map(|r| KeyInfo { alg: r.alg, kcv: r.kcv }))
    }

    fn delete(&self, id: &KeyId) -> Result<(), KeyStoreError> {
        let kid = id.as_str().to_string();
        self.call(move |pool| async move {
            sqlx::query("DELETE FROM key_material WHERE key_id = $1").bind(kid).execute(&pool).await?;
            Ok(())
        })
    }

    fn wrap(&self, key: &KeyId, wrapping: &Wrapping) -> Result<Vec<u8>, KeyStoreError> {
        if key.is_master() {
            return Err(KeyStoreError::NotWrappable(key.clone()));
        }
        let k = self.secret(key)?;
        let dek = self.wrapping_key(wrapping.dek())?;
        match wrapping {
            Wrapping::Scp03 { .. } => {
                let bs = dek.alg().block_len();
                Ok(dek.encrypt_cbc(&vec![0u8; bs], &zero_pad(k.expose(), bs))?)
            }
            Wrapping::Scp02 { sequence_counter, .. } => {
                if !dek.alg().is_des() {
                    return Err(KeyStoreError::Unsupported { op: "SCP02 wrapping", detail: format!("the DEK is {:?}, SCP02 needs 3DES", dek.alg()) });
                }
                let sdek = Zeroizing::new(dek.encrypt_cbc(&[0u8; 8], &scp02_dek_derivation_data(*sequence_counter))?);
                let sdek = SecretKey::new(KeyAlg::Des3_2k, &sdek)?;
                Ok(ecb_encrypt(&sdek, &zero_pad(k.expose(), 8))?)
            }
        }
    }

    fn diversify(&self, master: &KeyId, method: Diversification, kdd: &[u8], role: KeyRole) -> Result<Arc<dyn SymmetricKey>, KeyStoreError> {
        Ok(Arc::new(diversify(method, &self.secret(master)?, kdd, role)?))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn master_key_forms() {
        let hex = "000102030405060708090A0B0C0D0E0F101112131415161718191A1B1C1D1E1F";
        let a = parse_master_key(hex.as_bytes()).unwrap();
        let b = parse_master_key(format!("{hex}\n").as_bytes()).unwrap();
        let c = parse_master_key(&tsm_gp::hex::decode(hex).unwrap()).unwrap();
        assert_eq!(a, b);
        assert_eq!(a, c);
        assert_eq!(parse_master_key(b"short").unwrap_err().code(), "keys.invalid_value");
    }

    #[test]
    fn parity() {
        let mut v = [0x00, 0x01, 0xFE, 0xFF, 0x40];
        des_parity(&mut v);
        assert_eq!(v, [0x01, 0x01, 0xFE, 0xFE, 0x40]);
    }
}
