//! The planner's [`KeyProvider`] over the TSM's [`KeyStore`]: the keysets an SE's plan may
//! need are resolved from the database first (async), then the planner runs (on the blocking
//! pool) and asks for handles and wrapped keys synchronously. Key values never leave the key
//! store: handles run their operations there, new keys come out wrapped as GP carries them.

use crate::domain::{Keyset, KeysetSource, SeId, SecurityDomain};
use crate::keys::{KeyId, KeyStore, KeyStoreError, WrappingKey};
use crate::planner::{KeyError, KeyProvider, KeyRole, KeysetRef, WrappedKey, Wrapping};
use crate::store::Store;
use std::sync::Arc;
use tsm_gp::crypto::diversify::{Diversification, KeyRole as DivRole};
use tsm_gp::gp::Aid;
use tsm_gp::scp::StaticKeys;

/// Where one keyset's three keys are.
#[derive(Debug, Clone)]
pub enum Resolved {
    Stored { kvn: u8, enc: KeyId, mac: KeyId, dek: KeyId },
    Diversified { kvn: u8, method: Diversification, enc: KeyId, mac: KeyId, dek: KeyId },
}

impl Resolved {
    pub fn kvn(&self) -> u8 {
        match self {
            Resolved::Stored { kvn, .. } | Resolved::Diversified { kvn, .. } => *kvn,
        }
    }
    fn id(&self, role: KeyRole) -> &KeyId {
        let (Resolved::Stored { enc, mac, dek, .. } | Resolved::Diversified { enc, mac, dek, .. }) = self;
        match role {
            KeyRole::Enc => enc,
            KeyRole::Mac => mac,
            KeyRole::Dek => dek,
        }
    }
}

fn div_role(r: KeyRole) -> DivRole {
    match r {
        KeyRole::Enc => DivRole::Enc,
        KeyRole::Mac => DivRole::Mac,
        KeyRole::Dek => DivRole::Dek,
    }
}

/// Resolves a keyset row (following a diversified keyset to its master's key ids).
pub async fn resolve(store: &Store, ks: &Keyset) -> Result<Resolved, String> {
    match &ks.source {
        KeysetSource::Stored { enc, mac, dek } => Ok(Resolved::Stored { kvn: ks.kvn, enc: enc.clone(), mac: mac.clone(), dek: dek.clone() }),
        KeysetSource::Diversified { master_keyset_id, method } => {
            let m = store.keysets().get(*master_keyset_id).await.map_err(|e| e.to_string())?.ok_or_else(|| format!("master keyset {master_keyset_id} not found"))?;
            match m.source {
                KeysetSource::Stored { enc, mac, dek } => Ok(Resolved::Diversified { kvn: ks.kvn, method: *method, enc, mac, dek }),
                KeysetSource::Diversified { .. } => Err(format!("master keyset {master_keyset_id} is itself diversified")),
            }
        }
    }
}

/// The keys one SE's plans may use.
#[derive(Clone)]
pub struct EngineKeys {
    pub store: Arc<dyn KeyStore>,
    pub se: SeId,
    pub isd_aid: Aid,
    pub isd: Option<Resolved>,
    /// Supplementary security domains with a keyset.
    pub sds: Vec<(Aid, Resolved)>,
    /// Keysets a plan may provision (by `KeysetRef::id`, the keyset row id).
    pub new_keysets: Vec<(String, Resolved)>,
}

impl EngineKeys {
    /// Resolves the ISD keyset and every SD keyset of the SE.
    pub async fn load(store: &Store, keys: Arc<dyn KeyStore>, se: &crate::domain::SecureElement, sds: &[SecurityDomain]) -> Result<EngineKeys, String> {
        let isd_aid = Aid::new(se.isd_aid.as_bytes()).map_err(|e| e.to_string())?;
        let isd = match se.isd_keyset_id {
            Some(id) => {
                let ks = store.keysets().get(id).await.map_err(|e| e.to_string())?.ok_or_else(|| format!("ISD keyset {id} not found"))?;
                Some(resolve(store, &ks).await?)
            }
            None => None,
        };
        let mut out = EngineKeys { store: keys, se: se.id.clone(), isd_aid, isd, sds: Vec::new(), new_keysets: Vec::new() };
        for d in sds.iter().filter(|d| d.kind == crate::domain::SdKind::Ssd) {
            let Some(kid) = d.keyset_id else { continue };
            let Some(ks) = store.keysets().get(kid).await.map_err(|e| e.to_string())? else { continue };
            let r = resolve(store, &ks).await?;
            let aid = Aid::new(d.aid.as_bytes()).map_err(|e| e.to_string())?;
            out.new_keysets.push((kid.to_string(), r.clone()));
            out.sds.push((aid, r));
        }
        Ok(out)
    }

    fn handles(&self, r: &Resolved, kdd: Option<&[u8]>, what: &str) -> Result<StaticKeys, KeyError> {
        let h = |role: KeyRole| -> Result<_, KeyError> {
            match r {
                Resolved::Stored { .. } => self.store.handle(r.id(role)).map_err(store_err),
                Resolved::Diversified { method, .. } => {
                    let kdd = kdd.ok_or_else(|| KeyError::KddRequired(what.to_string()))?;
                    self.store.diversify(r.id(role), *method, kdd, div_role(role)).map_err(store_err)
                }
            }
        };
        Ok(StaticKeys { enc: h(KeyRole::Enc)?, mac: h(KeyRole::Mac)?, dek: h(KeyRole::Dek)?, version: r.kvn() })
    }

    fn sd(&self, sd: &Aid, kvn: u8) -> Result<&Resolved, KeyError> {
        if *sd == self.isd_aid {
            let r = self.isd.as_ref().ok_or_else(|| KeyError::NotFound(format!("ISD keys of {}", self.se)))?;
            return if kvn == 0 || kvn == r.kvn() { Ok(r) } else { Err(KeyError::NotFound(format!("ISD key set {kvn:02X} of {}", self.se))) };
        }
        self.sds
            .iter()
            .find(|(a, r)| a == sd && (kvn == 0 || r.kvn() == kvn))
            .map(|(_, r)| r)
            .ok_or_else(|| KeyError::NotFound(format!("key set {kvn:02X} of {sd} on {}", self.se)))
    }

    fn wrapping_key(&self, sd: &Aid, kvn: u8, kdd: Option<&[u8]>) -> Result<WrappingKey, KeyError> {
        let r = self.sd(sd, kvn)?;
        match r {
            Resolved::Stored { dek, .. } => Ok(WrappingKey::Stored(dek.clone())),
            Resolved::Diversified { method, dek, .. } => {
                let kdd = kdd.ok_or_else(|| KeyError::KddRequired(sd.to_string()))?;
                Ok(WrappingKey::Diversified { master: dek.clone(), method: *method, kdd: kdd.to_vec(), role: DivRole::Dek })
            }
        }
    }
}

fn store_err(e: KeyStoreError) -> KeyError {
    match e {
        KeyStoreError::NotFound(id) => KeyError::NotFound(id.to_string()),
        // Permanent: the same report again would meet the same refusal (e.g. SoftHSM2 and an
        // SCP02 card without allow_clear_rewrap), so the process fails with the reason
        // instead of the agent retrying until its session expires.
        e @ (KeyStoreError::Unsupported { .. } | KeyStoreError::NotWrappable(_)) => KeyError::Unsupported(format!("{} ({})", e, e.code())),
        e => KeyError::Store(format!("{} ({})", e, e.code())),
    }
}

impl KeyProvider for EngineKeys {
    fn isd_keys(&self, kvn: u8, kdd: Option<&[u8]>) -> Result<StaticKeys, KeyError> {
        let isd = self.isd_aid;
        let r = self.sd(&isd, kvn)?.clone();
        self.handles(&r, kdd, &format!("the ISD of {}", self.se))
    }

    fn sd_keys(&self, sd: &Aid, kvn: u8) -> Result<StaticKeys, KeyError> {
        let r = self.sd(sd, kvn)?.clone();
        self.handles(&r, None, &sd.to_string())
    }

    fn wrap_new_key(&self, keyset: &KeysetRef, role: KeyRole, wrapping: &Wrapping) -> Result<WrappedKey, KeyError> {
        let (_, new) = self.new_keysets.iter().find(|(id, _)| *id == keyset.id).ok_or_else(|| KeyError::NotFound(format!("keyset {}", keyset.id)))?;
        let Resolved::Stored { .. } = new else {
            return Err(KeyError::Store(format!("keyset {} is diversified: it cannot be provisioned", keyset.id)));
        };
        let key = new.id(role);
        let w = match wrapping {
            Wrapping::Scp03 { sd, kvn, kdd } => crate::keys::Wrapping::Scp03 { dek: self.wrapping_key(sd, *kvn, kdd.as_deref())? },
            Wrapping::Scp02 { sd, kvn, kdd, sequence_counter } => crate::keys::Wrapping::Scp02 { dek: self.wrapping_key(sd, *kvn, kdd.as_deref())?, sequence_counter: *sequence_counter },
        };
        let encrypted = self.store.wrap(key, &w).map_err(store_err)?;
        let info = self.store.info(key).map_err(store_err)?.ok_or_else(|| KeyError::NotFound(key.to_string()))?;
        Ok(WrappedKey { encrypted, key_len: info.alg.key_len() as u8, kcv: info.kcv.to_vec() })
    }

    fn random(&mut self, buf: &mut [u8]) {
        // Host challenges must be unpredictable; a failing OS source is not survivable here.
        getrandom::fill(buf).expect("the operating system's random source failed");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn permanent_refusals_fail_the_plan_transient_failures_are_retried() {
        let e = store_err(KeyStoreError::Unsupported { op: "wrapping", detail: "the token cannot wrap with CKM_DES3_ECB".into() });
        assert_eq!(e, KeyError::Unsupported("wrapping is not supported: the token cannot wrap with CKM_DES3_ECB (keys.unsupported)".into()));
        assert_eq!(e.code(), "keys.unsupported");
        assert_eq!(store_err(KeyStoreError::NotWrappable(KeyId::new("issuer/x/master/1/enc").unwrap())).code(), "keys.unsupported");
        assert_eq!(store_err(KeyStoreError::Backend("database unavailable".into())).code(), "keys.store");
        assert_eq!(store_err(KeyStoreError::Pkcs11("CKR_DEVICE_ERROR".into())).code(), "keys.store");
    }
}
