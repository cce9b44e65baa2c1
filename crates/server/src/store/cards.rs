//! SE issuers, keysets, secure elements and their security domains. These are TSM-owned
//! (not provider-owned) except SSDs, whose provider-facing queries take the provider id.

use super::{Store, StoreError, b, col, db_err, flag, hex_opt, int, int_opt, json_opt, parsed, parsed_opt, to_json};
use crate::domain::*;
use sqlx::AnyConnection;
use sqlx::any::AnyRow;

pub struct Issuers<'a> {
    pub(crate) s: &'a Store,
}

fn issuer(r: &AnyRow) -> Result<SeIssuer, StoreError> {
    let d: String = col(r, "diversification")?;
    Ok(SeIssuer {
        id: parsed(r, "id")?,
        name: col(r, "name")?,
        master_keyset_id: parsed_opt(r, "master_keyset_id")?,
        diversification: parse_diversification(&d).map_err(|e| StoreError::Corrupt { column: "diversification", detail: e.to_string() })?,
        created_at: col(r, "created_at")?,
    })
}

impl Issuers<'_> {
    pub async fn create(&self, i: &SeIssuer) -> Result<(), StoreError> {
        sqlx::query("INSERT INTO se_issuers (id, name, master_keyset_id, diversification, created_at) VALUES ($1, $2, $3, $4, $5)")
            .bind(i.id.to_string())
            .bind(&i.name)
            .bind(i.master_keyset_id.map(|k| k.to_string()))
            .bind(diversification_str(i.diversification))
            .bind(i.created_at)
            .execute(self.s.pool())
            .await
            .map_err(db_err("issuer"))?;
        Ok(())
    }
    pub async fn get(&self, id: IssuerId) -> Result<Option<SeIssuer>, StoreError> {
        sqlx::query("SELECT * FROM se_issuers WHERE id = $1")
            .bind(id.to_string())
            .fetch_optional(self.s.pool())
            .await
            .map_err(db_err("issuer"))?
            .map(|r| issuer(&r))
            .transpose()
    }
    pub async fn list(&self) -> Result<Vec<SeIssuer>, StoreError> {
        sqlx::query("SELECT * FROM se_issuers ORDER BY name").fetch_all(self.s.pool()).await.map_err(db_err("issuer"))?.iter().map(issuer).collect()
    }
}

pub struct Keysets<'a> {
    pub(crate) s: &'a Store,
}

fn keyset(r: &AnyRow) -> Result<Keyset, StoreError> {
    let kind: KeysetKind = parsed(r, "kind")?;
    let alg: String = col(r, "alg")?;
    let source = match kind {
        KeysetKind::Stored => KeysetSource::Stored { enc: parsed(r, "enc_key_id")?, mac: parsed(r, "mac_key_id")?, dek: parsed(r, "dek_key_id")? },
        KeysetKind::Diversified => {
            let d: String = col(r, "diversification")?;
            KeysetSource::Diversified {
                master_keyset_id: parsed(r, "master_keyset_id")?,
                method: parse_diversification(&d).map_err(|e| StoreError::Corrupt { column: "diversification", detail: e.to_string() })?,
            }
        }
    };
    Ok(Keyset {
        id: parsed(r, "id")?,
        kvn: int(r, "kvn")?,
        alg: parse_key_alg(&alg).map_err(|e| StoreError::Corrupt { column: "alg", detail: e.to_string() })?,
        source,
        created_at: col(r, "created_at")?,
    })
}

impl Keysets<'_> {
    pub async fn create(&self, k: &Keyset) -> Result<(), StoreError> {
        let (enc, mac, dek, master, div) = match &k.source {
            KeysetSource::Stored { enc, mac, dek } => (Some(enc.to_string()), Some(mac.to_string()), Some(dek.to_string()), None, None),
            KeysetSource::Diversified { master_keyset_id, method } => (None, None, None, Some(master_keyset_id.to_string()), Some(diversification_str(*method))),
        };
        sqlx::query("INSERT INTO keysets (id, kvn, alg, kind, enc_key_id, mac_key_id, dek_key_id, master_keyset_id, diversification, created_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)")
            .bind(k.id.to_string())
            .bind(k.kvn as i64)
            .bind(key_alg_str(k.alg))
            .bind(k.source.kind().as_str())
            .bind(enc)
            .bind(mac)
            .bind(dek)
            .bind(master)
            .bind(div)
            .bind(k.created_at)
            .execute(self.s.pool())
            .await
            .map_err(db_err("keyset"))?;
        Ok(())
    }
    pub async fn get(&self, id: KeysetId) -> Result<Option<Keyset>, StoreError> {
        sqlx::query("SELECT * FROM keysets WHERE id = $1")
            .bind(id.to_string())
            .fetch_optional(self.s.pool())
            .await
            .map_err(db_err("keyset"))?
            .map(|r| keyset(&r))
            .transpose()
    }
}

pub struct SecureElements<'a> {
    pub(crate) s: &'a Store,
}

fn secure_element(r: &AnyRow) -> Result<SecureElement, StoreError> {
    Ok(SecureElement {
        id: parsed(r, "id")?,
        iccid: col(r, "iccid")?,
        carrier: parsed(r, "carrier")?,
        profile: col(r, "profile")?,
        issuer_id: parsed_opt(r, "issuer_id")?,
        isd_aid: parsed(r, "isd_aid")?,
        isd_keyset_id: parsed_opt(r, "isd_keyset_id")?,
        scp: int_opt(r, "scp")?,
        scp_i: int_opt(r, "scp_i")?,
        sequence_counter: int_opt(r, "sequence_counter")?,
        sequence_counter_current: flag(r, "sequence_counter_current")?,
        kdd: hex_opt(r, "kdd")?,
        registry: json_opt(r, "registry_json")?,
        registry_read_at: col(r, "registry_read_at")?,
        created_at: col(r, "created_at")?,
        updated_at: col(r, "updated_at")?,
    })
}

impl SecureElements<'_> {
    pub async fn create(&self, e: &SecureElement) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO secure_elements (id, iccid, carrier, profile, issuer_id, isd_aid, isd_keyset_id, scp, scp_i, sequence_counter, sequence_counter_current, kdd, registry_json, registry_read_at, created_at, updated_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16)",
        )
        .bind(e.id.as_str())
        .bind(&e.iccid)
        .bind(e.carrier.as_str())
        .bind(&e.profile)
        .bind(e.issuer_id.map(|i| i.to_string()))
        .bind(e.isd_aid.to_hex())
        .bind(e.isd_keyset_id.map(|i| i.to_string()))
        .bind(e.scp.map(i64::from))
        .bind(e.scp_i.map(i64::from))
        .bind(e.sequence_counter.map(i64::from))
        .bind(b(e.sequence_counter_current))
        .bind(e.kdd.as_ref().map(|k| tsm_gp::hex::encode(k)))
        .bind(e.registry.as_ref().map(to_json).transpose()?)
        .bind(e.registry_read_at)
        .bind(e.created_at)
        .bind(e.updated_at)
        .execute(self.s.pool())
        .await
        .map_err(db_err("secure element"))?;
        Ok(())
    }

    pub async fn get(&self, id: &SeId) -> Result<Option<SecureElement>, StoreError> {
        sqlx::query("SELECT * FROM secure_elements WHERE id = $1")
            .bind(id.as_str())
            .fetch_optional(self.s.pool())
            .await
            .map_err(db_err("secure element"))?
            .map(|r| secure_element(&r))
            .transpose()
    }

    pub async fn get_by_iccid(&self, iccid: &str) -> Result<Option<SecureElement>, StoreError> {
        sqlx::query("SELECT * FROM secure_elements WHERE iccid = $1")
            .bind(iccid)
            .fetch_optional(self.s.pool())
            .await
            .map_err(db_err("secure element"))?
            .map(|r| secure_element(&r))
            .transpose()
    }

    /// Writes what the TSM learned of the card (SCP, counter, KDD, registry) and its keyset.
    pub async fn update_card_state(&self, e: &SecureElement) -> Result<bool, StoreError> {
        let mut c = self.s.pool().acquire().await.map_err(db_err("secure element"))?;
        update_card_state(&mut c, e).await
    }

    /// Records the sequence counter and whether it is known to be current.
    pub async fn set_sequence_counter(&self, id: &SeId, counter: u32, current: bool) -> Result<bool, StoreError> {
        let r = sqlx::query("UPDATE secure_elements SET sequence_counter = $1, sequence_counter_current = $2, updated_at = $3 WHERE id = $4")
            .bind(i64::from(counter))
            .bind(b(current))
            .bind(now_ms())
            .bind(id.as_str())
            .execute(self.s.pool())
            .await
            .map_err(db_err("secure element"))?;
        Ok(r.rows_affected() == 1)
    }
}

/// See [`SecureElements::update_card_state`]; `false` if there is no such SE.
pub(crate) async fn update_card_state(c: &mut AnyConnection, e: &SecureElement) -> Result<bool, StoreError> {
    let r = sqlx::query(
        "UPDATE secure_elements SET isd_keyset_id = $1, scp = $2, scp_i = $3, sequence_counter = $4, sequence_counter_current = $5, kdd = $6, registry_json = $7, registry_read_at = $8, updated_at = $9 WHERE id = $10",
    )
    .bind(e.isd_keyset_id.map(|i| i.to_string()))
    .bind(e.scp.map(i64::from))
    .bind(e.scp_i.map(i64::from))
    .bind(e.sequence_counter.map(i64::from))
    .bind(b(e.sequence_counter_current))
    .bind(e.kdd.as_ref().map(|k| tsm_gp::hex::encode(k)))
    .bind(e.registry.as_ref().map(to_json).transpose()?)
    .bind(e.registry_read_at)
    .bind(now_ms())
    .bind(e.id.as_str())
    .execute(&mut *c)
    .await
    .map_err(db_err("secure element"))?;
    Ok(r.rows_affected() == 1)
}

pub struct SecurityDomains<'a> {
    pub(crate) s: &'a Store,
}

fn security_domain(r: &AnyRow) -> Result<SecurityDomain, StoreError> {
    Ok(SecurityDomain {
        id: parsed(r, "id")?,
        se_id: parsed(r, "se_id")?,
        aid: parsed(r, "aid")?,
        kind: parsed(r, "kind")?,
        provider_id: parsed_opt(r, "provider_id")?,
        keyset_id: parsed_opt(r, "keyset_id")?,
        memory_quota: int_opt(r, "memory_quota")?,
        life_cycle: int_opt(r, "life_cycle")?,
        created_at: col(r, "created_at")?,
        updated_at: col(r, "updated_at")?,
    })
}

impl SecurityDomains<'_> {
    pub async fn create(&self, d: &SecurityDomain) -> Result<(), StoreError> {
        let quota = d.memory_quota.map(|q| i64::try_from(q).map_err(|_| StoreError::Invalid("memory quota too large".into()))).transpose()?;
        sqlx::query("INSERT INTO security_domains (id, se_id, aid, kind, provider_id, keyset_id, memory_quota, life_cycle, created_at, updated_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)")
            .bind(d.id.to_string())
            .bind(d.se_id.as_str())
            .bind(d.aid.to_hex())
            .bind(d.kind.as_str())
            .bind(d.provider_id.map(|p| p.to_string()))
            .bind(d.keyset_id.map(|k| k.to_string()))
            .bind(quota)
            .bind(d.life_cycle.map(i64::from))
            .bind(d.created_at)
            .bind(d.updated_at)
            .execute(self.s.pool())
            .await
            .map_err(db_err("security domain"))?;
        Ok(())
    }

    /// A provider's SSD.
    pub async fn get(&self, provider: ProviderId, id: SecurityDomainId) -> Result<Option<SecurityDomain>, StoreError> {
        sqlx::query("SELECT * FROM security_domains WHERE id = $1 AND provider_id = $2")
            .bind(id.to_string())
            .bind(provider.to_string())
            .fetch_optional(self.s.pool())
            .await
            .map_err(db_err("security domain"))?
            .map(|r| security_domain(&r))
            .transpose()
    }

    /// Every SD the TSM knows on an SE (engine use).
    pub async fn list_for_se_unscoped(&self, se: &SeId) -> Result<Vec<SecurityDomain>, StoreError> {
        sqlx::query("SELECT * FROM security_domains WHERE se_id = $1 ORDER BY kind, aid")
            .bind(se.as_str())
            .fetch_all(self.s.pool())
            .await
            .map_err(db_err("security domain"))?
            .iter()
            .map(security_domain)
            .collect()
    }

    /// A provider's SSDs.
    pub async fn list(&self, provider: ProviderId) -> Result<Vec<SecurityDomain>, StoreError> {
        sqlx::query("SELECT * FROM security_domains WHERE provider_id = $1 ORDER BY se_id, aid")
            .bind(provider.to_string())
            .fetch_all(self.s.pool())
            .await
            .map_err(db_err("security domain"))?
            .iter()
            .map(security_domain)
            .collect()
    }

    /// Updates keyset, quota and life cycle (engine use).
    pub async fn update_unscoped(&self, d: &SecurityDomain) -> Result<bool, StoreError> {
        let mut c = self.s.pool().acquire().await.map_err(db_err("security domain"))?;
        update_security_domain(&mut c, d).await
    }

    /// Forgets an SD that is no longer on the card (engine use, after DELETE).
    pub async fn delete_unscoped(&self, id: SecurityDomainId) -> Result<bool, StoreError> {
        let r = sqlx::query("DELETE FROM security_domains WHERE id = $1").bind(id.to_string()).execute(self.s.pool()).await.map_err(db_err("security domain"))?;
        Ok(r.rows_affected() == 1)
    }
}

/// See [`SecurityDomains::update_unscoped`]; `false` if there is no such SD.
pub(crate) async fn update_security_domain(c: &mut AnyConnection, d: &SecurityDomain) -> Result<bool, StoreError> {
    let quota = d.memory_quota.map(|q| i64::try_from(q).map_err(|_| StoreError::Invalid("memory quota too large".into()))).transpose()?;
    let r = sqlx::query("UPDATE security_domains SET keyset_id = $1, memory_quota = $2, life_cycle = $3, updated_at = $4 WHERE id = $5")
        .bind(d.keyset_id.map(|k| k.to_string()))
        .bind(quota)
        .bind(d.life_cycle.map(i64::from))
        .bind(now_ms())
        .bind(d.id.to_string())
        .execute(&mut *c)
        .await
        .map_err(db_err("security domain"))?;
    Ok(r.rows_affected() == 1)
}
