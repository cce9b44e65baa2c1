//! The provider's catalog (BSI TR-03165 configuration model, trimmed): load files, services,
//! service versions, flavors, application configurations and personalization scripts.
//! Every query is scoped by provider.

use super::{Store, StoreError, col, db_err, flag, hex_col, int, int_opt, json_col, parsed, parsed_opt, to_json};
use crate::domain::*;
use sqlx::any::AnyRow;

fn quota(q: Option<u64>) -> Result<Option<i64>, StoreError> {
    q.map(|q| i64::try_from(q).map_err(|_| StoreError::Invalid("memory quota too large".into()))).transpose()
}

/// `DELETE ... WHERE id = $1 AND provider_id = $2` on one table.
async fn delete_scoped(s: &Store, sql: &'static str, entity: &'static str, id: String, provider: ProviderId) -> Result<bool, StoreError> {
    let r = sqlx::query(sql).bind(id).bind(provider.to_string()).execute(s.pool()).await.map_err(db_err(entity))?;
    Ok(r.rows_affected() == 1)
}

pub struct LoadFiles<'a> {
    pub(crate) s: &'a Store,
}

const LOAD_FILE_COLUMNS: &str = "id, provider_id, package_aid, version, size, hash_sha1, hash_sha256, hash_sha1_no_descriptor, hash_sha256_no_descriptor, applet_aids, created_at";

fn load_file(r: &AnyRow) -> Result<LoadFile, StoreError> {
    Ok(LoadFile {
        id: parsed(r, "id")?,
        provider_id: parsed(r, "provider_id")?,
        package_aid: parsed(r, "package_aid")?,
        version: col(r, "version")?,
        size: int(r, "size")?,
        hashes: LoadFileHashes {
            sha1: hex_col(r, "hash_sha1")?,
            sha256: hex_col(r, "hash_sha256")?,
            sha1_without_descriptor: hex_col(r, "hash_sha1_no_descriptor")?,
            sha256_without_descriptor: hex_col(r, "hash_sha256_no_descriptor")?,
        },
        applet_aids: json_col(r, "applet_aids")?,
        created_at: col(r, "created_at")?,
    })
}

impl LoadFiles<'_> {
    /// Stores a load file with its CAP bytes.
    pub async fn create(&self, f: &LoadFile, cap: &[u8]) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO load_files (id, provider_id, package_aid, version, cap, size, hash_sha1, hash_sha256, hash_sha1_no_descriptor, hash_sha256_no_descriptor, applet_aids, created_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)",
        )
        .bind(f.id.to_string())
        .bind(f.provider_id.to_string())
        .bind(f.package_aid.to_hex())
        .bind(&f.version)
        .bind(cap.to_vec())
        .bind(i64::try_from(f.size).map_err(|_| StoreError::Invalid("size too large".into()))?)
        .bind(tsm_gp::hex::encode(&f.hashes.sha1))
        .bind(tsm_gp::hex::encode(&f.hashes.sha256))
        .bind(tsm_gp::hex::encode(&f.hashes.sha1_without_descriptor))
        .bind(tsm_gp::hex::encode(&f.hashes.sha256_without_descriptor))
        .bind(to_json(&f.applet_aids)?)
        .bind(f.created_at)
        .execute(self.s.pool())
        .await
        .map_err(db_err("load file"))?;
        Ok(())
    }

    pub async fn get(&self, provider: ProviderId, id: LoadFileId) -> Result<Option<LoadFile>, StoreError> {
        sqlx::query(sqlx::AssertSqlSafe(format!("SELECT {LOAD_FILE_COLUMNS} FROM load_files WHERE id = $1 AND provider_id = $2")))
            .bind(id.to_string())
            .bind(provider.to_string())
            .fetch_optional(self.s.pool())
            .await
            .map_err(db_err("load file"))?
            .map(|r| load_file(&r))
            .transpose()
    }

    /// The CAP bytes of one of `provider`'s load files.
    pub async fn cap_bytes(&self, provider: ProviderId, id: LoadFileId) -> Result<Option<Vec<u8>>, StoreError> {
        sqlx::query("SELECT cap FROM load_files WHERE id = $1 AND provider_id = $2")
            .bind(id.to_string())
            .bind(provider.to_string())
            .fetch_optional(self.s.pool())
            .await
            .map_err(db_err("load file"))?
            .map(|r| col::<Vec<u8>>(&r, "cap"))
            .transpose()
    }

    pub async fn list(&self, provider: ProviderId) -> Result<Vec<LoadFile>, StoreError> {
        sqlx::query(sqlx::AssertSqlSafe(format!("SELECT {LOAD_FILE_COLUMNS} FROM load_files WHERE provider_id = $1 ORDER BY package_aid, version")))
            .bind(provider.to_string())
            .fetch_all(self.s.pool())
            .await
            .map_err(db_err("load file"))?
            .iter()
            .map(load_file)
            .collect()
    }

    /// Deletes one of `provider`'s load files (refused while a service version refers to it).
    pub async fn delete(&self, provider: ProviderId, id: LoadFileId) -> Result<bool, StoreError> {
        delete_scoped(self.s, "DELETE FROM load_files WHERE id = $1 AND provider_id = $2", "load file", id.to_string(), provider).await
    }
}

pub struct Services<'a> {
    pub(crate) s: &'a Store,
}

fn service(r: &AnyRow) -> Result<Service, StoreError> {
    Ok(Service {
        id: parsed(r, "id")?,
        provider_id: parsed(r, "provider_id")?,
        name: col(r, "name")?,
        description: col(r, "description")?,
        created_at: col(r, "created_at")?,
    })
}

impl Services<'_> {
    pub async fn create(&self, v: &Service) -> Result<(), StoreError> {
        sqlx::query("INSERT INTO services (id, provider_id, name, description, created_at) VALUES ($1, $2, $3, $4, $5)")
            .bind(v.id.to_string())
            .bind(v.provider_id.to_string())
            .bind(&v.name)
            .bind(&v.description)
            .bind(v.created_at)
            .execute(self.s.pool())
            .await
            .map_err(db_err("service"))?;
        Ok(())
    }
    pub async fn get(&self, provider: ProviderId, id: ServiceId) -> Result<Option<Service>, StoreError> {
        sqlx::query("SELECT * FROM services WHERE id = $1 AND provider_id = $2")
            .bind(id.to_string())
            .bind(provider.to_string())
            .fetch_optional(self.s.pool())
            .await
            .map_err(db_err("service"))?
            .map(|r| service(&r))
            .transpose()
    }
    pub async fn list(&self, provider: ProviderId) -> Result<Vec<Service>, StoreError> {
        sqlx::query("SELECT * FROM services WHERE provider_id = $1 ORDER BY name")
            .bind(provider.to_string())
            .fetch_all(self.s.pool())
            .await
            .map_err(db_err("service"))?
            .iter()
            .map(service)
            .collect()
    }
    pub async fn update(&self, v: &Service) -> Result<bool, StoreError> {
        let r = sqlx::query("UPDATE services SET name = $1, description = $2 WHERE id = $3 AND provider_id = $4")
            .bind(&v.name)
            .bind(&v.description)
            .bind(v.id.to_string())
            .bind(v.provider_id.to_string())
            .execute(self.s.pool())
            .await
            .map_err(db_err("service"))?;
        Ok(r.rows_affected() == 1)
    }
    pub async fn delete(&self, provider: ProviderId, id: ServiceId) -> Result<bool, StoreError> {
        delete_scoped(self.s, "DELETE FROM services WHERE id = $1 AND provider_id = $2", "service", id.to_string(), provider).await
    }
}

pub struct ServiceVersions<'a> {
    pub(crate) s: &'a Store,
}

fn service_version(r: &AnyRow) -> Result<ServiceVersion, StoreError> {
    Ok(ServiceVersion {
        id: parsed(r, "id")?,
        provider_id: parsed(r, "provider_id")?,
        service_id: parsed(r, "service_id")?,
        version: col(r, "version")?,
        load_file_id: parsed(r, "load_file_id")?,
        created_at: col(r, "created_at")?,
    })
}

impl ServiceVersions<'_> {
    /// Creates a version; the service and the load file must be the same provider's.
    pub async fn create(&self, v: &ServiceVersion) -> Result<(), StoreError> {
        let r = sqlx::query(
            "INSERT INTO service_versions (id, provider_id, service_id, version, load_file_id, created_at) \
             SELECT $1, $2, $3, $4, $5, $6 WHERE EXISTS (SELECT 1 FROM services WHERE id = $3 AND provider_id = $2) \
             AND EXISTS (SELECT 1 FROM load_files WHERE id = $5 AND provider_id = $2)",
        )
        .bind(v.id.to_string())
        .bind(v.provider_id.to_string())
        .bind(v.service_id.to_string())
        .bind(&v.version)
        .bind(v.load_file_id.to_string())
        .bind(v.created_at)
        .execute(self.s.pool())
        .await
        .map_err(db_err("service version"))?;
        if r.rows_affected() == 0 {
            return Err(StoreError::Reference { entity: "service version", detail: "service or load file not found for this provider".into() });
        }
        Ok(())
    }
    pub async fn get(&self, provider: ProviderId, id: ServiceVersionId) -> Result<Option<ServiceVersion>, StoreError> {
        sqlx::query("SELECT * FROM service_versions WHERE id = $1 AND provider_id = $2")
            .bind(id.to_string())
            .bind(provider.to_string())
            .fetch_optional(self.s.pool())
            .await
            .map_err(db_err("service version"))?
            .map(|r| service_version(&r))
            .transpose()
    }
    pub async fn list(&self, provider: ProviderId, service: ServiceId) -> Result<Vec<ServiceVersion>, StoreError> {
        sqlx::query("SELECT * FROM service_versions WHERE provider_id = $1 AND service_id = $2 ORDER BY created_at, version")
            .bind(provider.to_string())
            .bind(service.to_string())
            .fetch_all(self.s.pool())
            .await
            .map_err(db_err("service version"))?
            .iter()
            .map(service_version)
            .collect()
    }
    pub async fn delete(&self, provider: ProviderId, id: ServiceVersionId) -> Result<bool, StoreError> {
        delete_scoped(self.s, "DELETE FROM service_versions WHERE id = $1 AND provider_id = $2", "service version", id.to_string(), provider).await
    }
}

pub struct Flavors<'a> {
    pub(crate) s: &'a Store,
}

fn flavor(r: &AnyRow) -> Result<Flavor, StoreError> {
    Ok(Flavor {
        id: parsed(r, "id")?,
        provider_id: parsed(r, "provider_id")?,
        service_version_id: parsed(r, "service_version_id")?,
        name: col(r, "name")?,
        carrier: parsed_opt(r, "carrier")?,
        profile: col(r, "profile")?,
        memory_quota: int_opt(r, "memory_quota")?,
        created_at: col(r, "created_at")?,
    })
}

impl Flavors<'_> {
    pub async fn create(&self, f: &Flavor) -> Result<(), StoreError> {
        let r = sqlx::query(
            "INSERT INTO flavors (id, provider_id, service_version_id, name, carrier, profile, memory_quota, created_at) \
             SELECT $1, $2, $3, $4, $5, $6, $7, $8 WHERE EXISTS (SELECT 1 FROM service_versions WHERE id = $3 AND provider_id = $2)",
        )
        .bind(f.id.to_string())
        .bind(f.provider_id.to_string())
        .bind(f.service_version_id.to_string())
        .bind(&f.name)
        .bind(f.carrier.map(|c| c.as_str()))
        .bind(&f.profile)
        .bind(quota(f.memory_quota)?)
        .bind(f.created_at)
        .execute(self.s.pool())
        .await
        .map_err(db_err("flavor"))?;
        if r.rows_affected() == 0 {
            return Err(StoreError::Reference { entity: "flavor", detail: "service version not found for this provider".into() });
        }
        Ok(())
    }
    pub async fn get(&self, provider: ProviderId, id: FlavorId) -> Result<Option<Flavor>, StoreError> {
        sqlx::query("SELECT * FROM flavors WHERE id = $1 AND provider_id = $2")
            .bind(id.to_string())
            .bind(provider.to_string())
            .fetch_optional(self.s.pool())
            .await
            .map_err(db_err("flavor"))?
            .map(|r| flavor(&r))
            .transpose()
    }
    pub async fn list(&self, provider: ProviderId, version: ServiceVersionId) -> Result<Vec<Flavor>, StoreError> {
        sqlx::query("SELECT * FROM flavors WHERE provider_id = $1 AND service_version_id = $2 ORDER BY name")
            .bind(provider.to_string())
            .bind(version.to_string())
            .fetch_all(self.s.pool())
            .await
            .map_err(db_err("flavor"))?
            .iter()
            .map(flavor)
            .collect()
    }
    pub async fn delete(&self, provider: ProviderId, id: FlavorId) -> Result<bool, StoreError> {
        delete_scoped(self.s, "DELETE FROM flavors WHERE id = $1 AND provider_id = $2", "flavor", id.to_string(), provider).await
    }
}

pub struct ApplicationConfigs<'a> {
    pub(crate) s: &'a Store,
}

fn application_config(r: &AnyRow) -> Result<ApplicationConfig, StoreError> {
    Ok(ApplicationConfig {
        id: parsed(r, "id")?,
        provider_id: parsed(r, "provider_id")?,
        flavor_id: parsed(r, "flavor_id")?,
        ordinal: int(r, "ordinal")?,
        module_aid: parsed(r, "module_aid")?,
        instance_aid: parsed(r, "instance_aid")?,
        privileges: hex_col(r, "privileges")?,
        install_params: hex_col(r, "install_params")?,
        make_selectable: flag(r, "make_selectable")?,
        created_at: col(r, "created_at")?,
    })
}

impl ApplicationConfigs<'_> {
    pub async fn create(&self, a: &ApplicationConfig) -> Result<(), StoreError> {
        let r = sqlx::query(
            "INSERT INTO application_configs (id, provider_id, flavor_id, ordinal, module_aid, instance_aid, privileges, install_params, make_selectable, created_at) \
             SELECT $1, $2, $3, $4, $5, $6, $7, $8, $9, $10 WHERE EXISTS (SELECT 1 FROM flavors WHERE id = $3 AND provider_id = $2)",
        )
        .bind(a.id.to_string())
        .bind(a.provider_id.to_string())
        .bind(a.flavor_id.to_string())
        .bind(i64::from(a.ordinal))
        .bind(a.module_aid.to_hex())
        .bind(a.instance_aid.to_hex())
        .bind(tsm_gp::hex::encode(&a.privileges))
        .bind(tsm_gp::hex::encode(&a.install_params))
        .bind(super::b(a.make_selectable))
        .bind(a.created_at)
        .execute(self.s.pool())
        .await
        .map_err(db_err("application config"))?;
        if r.rows_affected() == 0 {
            return Err(StoreError::Reference { entity: "application config", detail: "flavor not found for this provider".into() });
        }
        Ok(())
    }
    pub async fn get(&self, provider: ProviderId, id: ApplicationConfigId) -> Result<Option<ApplicationConfig>, StoreError> {
        sqlx::query("SELECT * FROM application_configs WHERE id = $1 AND provider_id = $2")
            .bind(id.to_string())
            .bind(provider.to_string())
            .fetch_optional(self.s.pool())
            .await
            .map_err(db_err("application config"))?
            .map(|r| application_config(&r))
            .transpose()
    }
    pub async fn list(&self, provider: ProviderId, flavor: FlavorId) -> Result<Vec<ApplicationConfig>, StoreError> {
        sqlx::query("SELECT * FROM application_configs WHERE provider_id = $1 AND flavor_id = $2 ORDER BY ordinal")
            .bind(provider.to_string())
            .bind(flavor.to_string())
            .fetch_all(self.s.pool())
            .await
            .map_err(db_err("application config"))?
            .iter()
            .map(application_config)
            .collect()
    }
    pub async fn delete(&self, provider: ProviderId, id: ApplicationConfigId) -> Result<bool, StoreError> {
        delete_scoped(self.s, "DELETE FROM application_configs WHERE id = $1 AND provider_id = $2", "application config", id.to_string(), provider).await
    }
}

pub struct PersonalizationScripts<'a> {
    pub(crate) s: &'a Store,
}

fn perso(r: &AnyRow) -> Result<PersonalizationScript, StoreError> {
    Ok(PersonalizationScript {
        id: parsed(r, "id")?,
        provider_id: parsed(r, "provider_id")?,
        application_config_id: parsed(r, "application_config_id")?,
        ordinal: int(r, "ordinal")?,
        name: col(r, "name")?,
        blocks: json_col(r, "blocks")?,
        created_at: col(r, "created_at")?,
    })
}

impl PersonalizationScripts<'_> {
    pub async fn create(&self, p: &PersonalizationScript) -> Result<(), StoreError> {
        let r = sqlx::query(
            "INSERT INTO personalization_scripts (id, provider_id, application_config_id, ordinal, name, blocks, created_at) \
             SELECT $1, $2, $3, $4, $5, $6, $7 WHERE EXISTS (SELECT 1 FROM application_configs WHERE id = $3 AND provider_id = $2)",
        )
        .bind(p.id.to_string())
        .bind(p.provider_id.to_string())
        .bind(p.application_config_id.to_string())
        .bind(i64::from(p.ordinal))
        .bind(&p.name)
        .bind(to_json(&p.blocks)?)
        .bind(p.created_at)
        .execute(self.s.pool())
        .await
        .map_err(db_err("personalization script"))?;
        if r.rows_affected() == 0 {
            return Err(StoreError::Reference { entity: "personalization script", detail: "application config not found for this provider".into() });
        }
        Ok(())
    }
    pub async fn get(&self, provider: ProviderId, id: PersoScriptId) -> Result<Option<PersonalizationScript>, StoreError> {
        sqlx::query("SELECT * FROM personalization_scripts WHERE id = $1 AND provider_id = $2")
            .bind(id.to_string())
            .bind(provider.to_string())
            .fetch_optional(self.s.pool())
            .await
            .map_err(db_err("personalization script"))?
            .map(|r| perso(&r))
            .transpose()
    }
    pub async fn list(&self, provider: ProviderId, app: ApplicationConfigId) -> Result<Vec<PersonalizationScript>, StoreError> {
        sqlx::query("SELECT * FROM personalization_scripts WHERE provider_id = $1 AND application_config_id = $2 ORDER BY ordinal")
            .bind(provider.to_string())
            .bind(app.to_string())
            .fetch_all(self.s.pool())
            .await
            .map_err(db_err("personalization script"))?
            .iter()
            .map(perso)
            .collect()
    }
    pub async fn delete(&self, provider: ProviderId, id: PersoScriptId) -> Result<bool, StoreError> {
        delete_scoped(self.s, "DELETE FROM personalization_scripts WHERE id = $1 AND provider_id = $2", "personalization script", id.to_string(), provider).await
    }
}
