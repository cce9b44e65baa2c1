//! From the database to the planner's inputs and back: the card view of an SE row, the
//! deployment of a service instance (load file, applications, personalization, the provider's
//! SSD), the rehydration of a stripped plan, and the card state an SE row takes from a view.

use super::Fail;
use super::state::{Inputs, PersoRef};
use crate::domain::{PersoBlock, SecureElement, SecurityDomain, ServiceInstance, now_ms};
use crate::keys::KeyStore;
use crate::planner::{CardView, Deploy, InstallSpec, KeysetRef, LoadFileSpec, PersoScript, SsdSpec};
use crate::store::Store;
use std::sync::Arc;
use tsm_gp::cap::CapFile;
use tsm_gp::gp::{Aid, LifeCycle, Privilege, Privileges, RegistryEntry};
use tsm_gp::profile::CardProfile;
use tsm_gp::scp::Scp;

/// The card's secure channel as the SE row names it, else the profile's first.
pub fn scp_of(se: &SecureElement, profile: &CardProfile) -> Scp {
    match (se.scp, se.scp_i) {
        (Some(2), Some(i)) => Scp::Scp02 { i },
        (Some(3), Some(i)) => Scp::Scp03 { i },
        (Some(2), None) => profile.scp.iter().copied().find(|s| matches!(s, Scp::Scp02 { .. })).unwrap_or(Scp::Scp02 { i: 0x55 }),
        (Some(3), None) => profile.scp.iter().copied().find(|s| matches!(s, Scp::Scp03 { .. })).unwrap_or(Scp::Scp03 { i: 0x70 }),
        _ => profile.scp.first().copied().unwrap_or(Scp::Scp03 { i: 0x70 }),
    }
}

/// What the TSM knows of the card, as the planner takes it.
pub fn card_view(se: &SecureElement, isd_kvn: u8) -> Result<CardView, Fail> {
    let profile = CardProfile::builtin(&se.profile).ok_or_else(|| Fail::new("engine.unknown_profile", format!("card profile {:?} of {} is not known to the engine (built-in: uicc, microsd, ese)", se.profile, se.id)))?;
    let isd_aid = Aid::new(se.isd_aid.as_bytes()).map_err(|e| Fail::new("engine.invalid_input", format!("ISD AID of {}: {e}", se.id)))?;
    let mut v = CardView::first_contact(se.id.as_str(), profile);
    v.scp = scp_of(se, &v.profile);
    v.isd_aid = isd_aid;
    v.key_version = isd_kvn;
    v.kdd.clone_from(&se.kdd);
    v.sequence_counter = se.sequence_counter;
    v.counter_is_current = se.sequence_counter_current && se.sequence_counter.is_some();
    if let Some(reg) = &se.registry {
        // The registry is stored in the planner's own form; go through serde to read it.
        let mut j = serde_json::to_value(&v).map_err(|e| Fail::new("engine.internal", e.to_string()))?;
        j["registry"] = reg.clone();
        v = serde_json::from_value(j).map_err(|e| Fail::new("engine.invalid_input", format!("stored registry of {} does not read: {e}", se.id)))?;
    }
    Ok(v)
}

/// Copies what a plan learned of the card into the SE row.
pub fn apply_view(se: &mut SecureElement, v: &CardView, registry_read: bool) {
    se.sequence_counter = v.sequence_counter;
    se.sequence_counter_current = v.counter_is_current && v.sequence_counter.is_some();
    if v.kdd.is_some() {
        se.kdd.clone_from(&v.kdd);
    }
    se.scp = Some(v.scp.id());
    se.scp_i = Some(v.scp.i());
    se.registry = serde_json::to_value(v).ok().and_then(|j| j.get("registry").cloned()).filter(|r| !r.is_null());
    if registry_read {
        se.registry_read_at = Some(now_ms());
    }
}

/// Forget what may no longer be true after an exchange whose outcome is unknown: the registry
/// (read again before the next operation) and whether the counter is current.
pub fn mark_stale(se: &mut SecureElement) {
    se.registry = None;
    se.sequence_counter_current = false;
}

/// The registry entry of `aid` in a view.
pub fn entry<'a>(v: &'a CardView, aid: &Aid) -> Option<&'a RegistryEntry> {
    v.registry.as_ref()?.iter().find(|e| &e.aid == aid)
}

/// `C9` value and the `EF` quotas (`C8`, `C7`) of an install parameters field.
fn split_install_params(p: &[u8]) -> (Vec<u8>, Option<u32>, Option<u32>) {
    let c9 = tsm_gp::tlv::find(p, 0xC9).ok().flatten().map(|t| t.value.to_vec()).unwrap_or_default();
    let quota = |ef: &[u8], tag: u32| -> Option<u32> {
        let v = tsm_gp::tlv::find(ef, tag).ok().flatten()?.value;
        (!v.is_empty() && v.len() <= 4).then(|| v.iter().fold(0u32, |a, b| (a << 8) | u32::from(*b)))
    };
    match tsm_gp::tlv::find(p, 0xEF).ok().flatten() {
        Some(ef) => (c9, quota(ef.value, 0xC8), quota(ef.value, 0xC7)),
        None => (c9, None, None),
    }
}

/// SHA-256 hex of bytes.
pub fn sha256_hex(b: &[u8]) -> String {
    tsm_gp::hex::encode(&tsm_gp::crypto::sha256(b))
}

/// A deployment built from the catalog.
pub struct DeployInputs {
    pub deploy: Deploy,
    pub inputs: Inputs,
}

/// The C4 load file of a stored CAP.
async fn load_file(store: &Store, provider: crate::domain::ProviderId, id: crate::domain::LoadFileId) -> Result<LoadFileSpec, Fail> {
    let cap = store.load_files().cap_bytes(provider, id).await?.ok_or_else(|| Fail::new("engine.invalid_input", format!("load file {id} is gone")))?;
    let cap = CapFile::parse(&cap).map_err(|e| Fail::new("engine.invalid_input", format!("stored CAP {id} does not parse: {e}")))?;
    LoadFileSpec::from_cap(&cap).map_err(|e| Fail::new("engine.invalid_input", format!("stored CAP {id}: {e}")))
}

/// The blocks of personalization scripts as stored (sealed where sensitive), opened.
async fn open_scripts(keys: &Arc<dyn KeyStore>, scripts: Vec<crate::domain::PersonalizationScript>) -> Result<(Vec<PersoBlock>, String), Fail> {
    let mut stored = Vec::new();
    for s in &scripts {
        stored.extend(s.blocks.iter().cloned());
    }
    let digest = sha256_hex(&serde_json::to_vec(&stored).unwrap_or_default());
    let keys = keys.clone();
    let opened = tokio::task::spawn_blocking(move || -> Result<Vec<PersoBlock>, crate::keys::KeyStoreError> {
        let mut out = Vec::new();
        for s in &scripts {
            out.extend(crate::api::sealing::open_script(keys.as_ref(), s)?);
        }
        Ok(out)
    })
    .await
    .map_err(|e| Fail::new("engine.internal", e.to_string()))?
    .map_err(|e| Fail::new("engine.keys", format!("personalization data cannot be opened: {e} ({})", e.code())))?;
    Ok((opened, digest))
}

/// The deployment of `instance` on the card `view` describes: the service version's load
/// file, the flavor's applications (in order) with their personalization scripts, under the
/// provider's SSD (created with its keyset when the card does not have it).
pub async fn deploy(
    store: &Store,
    keys: &Arc<dyn KeyStore>,
    instance: &ServiceInstance,
    view: &CardView,
    ssd: &SecurityDomain,
    ssd_keyset: Option<KeysetRef>,
) -> Result<DeployInputs, Fail> {
    let pid = instance.provider_id;
    let version = store.service_versions().get(pid, instance.service_version_id).await?.ok_or_else(|| Fail::new("engine.invalid_input", "the instance's service version is gone"))?;
    let lf = load_file(store, pid, version.load_file_id).await?;
    let apps = store.application_configs().list(pid, instance.flavor_id).await?;
    if apps.is_empty() {
        return Err(Fail::new("engine.invalid_input", "the flavor has no application configuration: nothing to install"));
    }
    let mut install = Vec::new();
    let mut personalization = Vec::new();
    let mut perso_refs = Vec::new();
    for a in &apps {
        let module = Aid::new(a.module_aid.as_bytes()).map_err(|e| Fail::new("engine.invalid_input", e.to_string()))?;
        let inst = Aid::new(a.instance_aid.as_bytes()).map_err(|e| Fail::new("engine.invalid_input", e.to_string()))?;
        let privileges = Privileges::from_bytes(&a.privileges).map_err(|e| Fail::new("engine.invalid_input", format!("privileges of {inst}: {e}")))?;
        let (c9, nv_quota, volatile_quota) = split_install_params(&a.install_params);
        install.push(InstallSpec { module, instance: inst, privileges, c9, nv_quota, volatile_quota });
        let scripts = store.personalization_scripts().list(pid, a.id).await?;
        if !scripts.is_empty() {
            let ids = scripts.iter().map(|s| s.id).collect();
            let (blocks, digest) = open_scripts(keys, scripts).await?;
            personalization.push(PersoScript { instance: inst, blocks, ber_tlv: false });
            perso_refs.push(PersoRef { instance: inst, scripts: ids, digest });
        }
    }
    let ssd_aid = Aid::new(ssd.aid.as_bytes()).map_err(|e| Fail::new("engine.invalid_input", e.to_string()))?;
    let on_card = entry(view, &ssd_aid).is_some_and(|e| matches!(e.lifecycle, LifeCycle::SecurityDomain(_)));
    let (ssd_spec, sd) = if on_card {
        (None, Some(ssd_aid))
    } else {
        let keys = ssd_keyset.ok_or_else(|| Fail::new("engine.keys", format!("the SSD {ssd_aid} is not on the card and has no key set to create it with")))?;
        let c9 = tsm_gp::gp::install::SdInstallParams { scp: vec![(view.scp.id(), view.scp.i())], ..Default::default() }.to_value();
        let spec = SsdSpec {
            aid: ssd_aid,
            elf: SsdSpec::GP_SD_ELF,
            module: SsdSpec::GP_SD_MODULE,
            privileges: [Privilege::SecurityDomain, Privilege::AuthorizedManagement].into_iter().collect(),
            c9,
            nv_quota: ssd.memory_quota.map(|q| q.min(u64::from(u32::MAX)) as u32),
            volatile_quota: None,
            keys,
            initial_keys: None,
        };
        (Some(spec), None)
    };
    let inputs = Inputs { provider_id: pid, load_file_id: version.load_file_id, load_file_sha256: sha256_hex(&lf.load_file), perso: perso_refs };
    let make_selectable = apps.iter().all(|a| a.make_selectable);
    Ok(DeployInputs { deploy: Deploy { load_file: lf, ssd: ssd_spec, sd, install, personalization, make_selectable }, inputs })
}

/// The load file bytes and personalization blocks a stripped plan refers to, checked against
/// the digests taken when it was planned (`engine.inputs_changed` if the provider changed them
/// since).
pub async fn rehydrate(store: &Store, keys: &Arc<dyn KeyStore>, inputs: &Inputs) -> Result<(Vec<u8>, Vec<Vec<PersoBlock>>), Fail> {
    let lf = load_file(store, inputs.provider_id, inputs.load_file_id).await?;
    if sha256_hex(&lf.load_file) != inputs.load_file_sha256 {
        return Err(Fail::new("engine.inputs_changed", "the load file changed while the process ran"));
    }
    let mut perso = Vec::new();
    for r in &inputs.perso {
        let mut scripts = Vec::new();
        for id in &r.scripts {
            let s = store.personalization_scripts().get(inputs.provider_id, *id).await?.ok_or_else(|| Fail::new("engine.inputs_changed", format!("personalization script {id} was deleted while the process ran")))?;
            scripts.push(s);
        }
        let (blocks, digest) = open_scripts(keys, scripts).await?;
        if digest != r.digest {
            return Err(Fail::new("engine.inputs_changed", format!("the personalization of {} changed while the process ran", r.instance)));
        }
        perso.push(blocks);
    }
    Ok((lf.load_file, perso))
}
