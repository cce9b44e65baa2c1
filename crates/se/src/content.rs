//! Card content management on behalf of the selected security domain: INSTALL in all its
//! forms, LOAD, DELETE (GPCS 2.3 §9, §11.2, §11.5, §11.6).

use crate::card::{LoadInProgress, SD_MODULE_AID, SimCard, Sw, gp_sw, ok};
use crate::config::{INITIAL_KEY_VERSION, KeySet};
use crate::models::InstallInfo;
use crate::state::{AppRecord, DomainRecord, LoadFileRecord, ModelRecord};
use std::collections::BTreeMap;
use tsm_gp::apdu::{CommandApdu, ResponseApdu};
use tsm_gp::cap::{CapFile, HashAlgorithm};
use tsm_gp::gp::install::{SdInstallParams, SystemParams};
use tsm_gp::gp::lifecycle::{AppLifeCycle, ElfLifeCycle, SdLifeCycle};
use tsm_gp::gp::load::{LoadAssembler, LoadFile};
use tsm_gp::gp::delegated::{ReceiptSubject, verify_delete_token, verify_install_token};
use tsm_gp::gp::{Aid, Delete, DeleteTarget, Install, InstallBody, InstallParams, Load, Privilege, Privileges};
use tsm_gp::scp::Scp;
use tsm_gp::sw::StatusWord;
use tsm_gp::tlv;

/// The system parameters (`EF`) of install or load parameters; `6A80` when malformed.
fn system_params(p: &InstallParams) -> Sw<SystemParams> {
    match tlv::find(p.as_bytes(), 0xEF).map_err(|_| StatusWord::WRONG_DATA)? {
        Some(t) => SystemParams::parse(t.value).map_err(|_| StatusWord::WRONG_DATA),
        None => Ok(SystemParams::default()),
    }
}

impl SimCard {
    /// Whether an application, security domain or load file already has this AID.
    fn aid_in_use(&self, aid: &Aid) -> bool {
        self.state.app(aid).is_some() || self.state.load_file(aid).is_some()
    }

    fn selected_anywhere(&self, aid: &Aid) -> bool {
        self.channels.iter().any(|c| c.open && c.selected == Some(*aid))
    }

    /// Whether security domain `sd` has associated content (load files or instances).
    fn has_content(&self, sd: &Aid) -> bool {
        self.state.apps.iter().any(|a| a.associated_sd == *sd && a.aid != *sd)
            || self.state.load_files.iter().any(|l| l.associated_sd == *sd && !l.builtin)
    }

    /// Quotas only (the card total does not change when content moves between domains).
    fn quotas_fit(&self, sd: &Aid, cost: u64) -> bool {
        self.state.sd_chain(sd).iter().all(|s| match self.state.domain(s).and_then(|d| d.nv_quota) {
            Some(q) => self.state.sd_nv_used(s) + cost <= q as u64,
            None => true,
        })
    }

    fn target_sd(&self, aid: &Aid) -> Sw<()> {
        match self.state.app(aid) {
            Some(a) if a.is_sd() && a.life_cycle & 0x80 == 0 => Ok(()),
            Some(a) if a.is_sd() => Err(StatusWord::CONDITIONS_NOT_SATISFIED),
            _ => Err(StatusWord::REFERENCED_DATA_NOT_FOUND),
        }
    }

    /// INSTALL (GPCS 2.3 §11.5). Every accepted form answers `00` (no receipt), INSTALL [for
    /// install] nothing on cards with the `install_for_install_without_data` quirk; a
    /// delegated one (verified token) answers its receipt instead (`crate::delegated`).
    pub(crate) fn install(&mut self, ch: u8, perf: Aid, cmd: &CommandApdu) -> Sw<ResponseApdu> {
        let r = self.install_inner(ch, perf, cmd);
        self.token_verified = false;
        r
    }

    fn install_inner(&mut self, ch: u8, perf: Aid, cmd: &CommandApdu) -> Sw<ResponseApdu> {
        let inst = Install::from_apdu(cmd).map_err(|e| gp_sw(&e))?;
        let without_data = self.state.profile.quirks.install_for_install_without_data && matches!(inst.body, InstallBody::Install { .. });
        let delegated = match inst.body {
            InstallBody::Personalization { .. } => false,
            _ => self.check_token(&perf, !inst.body.token().is_empty(), |k| verify_install_token(&inst, k))?,
        };
        let mut subject = None;
        match inst.body {
            InstallBody::Load { elf, sd, hash, params, .. } => {
                // The Load Token signs the hash: under delegation it is what binds the LOAD
                // blocks to the token (GPCS 2.3 §9.3.3).
                if delegated && hash.is_empty() {
                    return Err(StatusWord::WRONG_DATA);
                }
                self.install_for_load(ch, perf, elf, sd, hash, params)?;
                if let Some(l) = self.channels[ch as usize].load.as_mut() {
                    l.delegated = delegated;
                }
            }
            InstallBody::Install { elf, module, app, privileges, params, make_selectable, .. } => {
                self.install_for_install(perf, elf, module, app, privileges, params, make_selectable)?;
                subject = Some(ReceiptSubject::Install { elf, app });
            }
            InstallBody::MakeSelectable { app, privileges, .. } => {
                self.make_selectable(perf, app, privileges)?;
                let elf = self.state.app(&app).map(|a| a.elf).ok_or(StatusWord::REFERENCED_DATA_NOT_FOUND)?;
                subject = Some(ReceiptSubject::Install { elf, app });
            }
            InstallBody::Extradition { sd, app, .. } => {
                let from_sd = self.owner_of(&app).ok_or(StatusWord::REFERENCED_DATA_NOT_FOUND)?;
                self.extradite(perf, app, sd)?;
                subject = Some(ReceiptSubject::Extradition { from_sd, object: app, to_sd: sd });
            }
            InstallBody::Personalization { app } => {
                let rec = self.state.app(&app).ok_or(StatusWord::REFERENCED_DATA_NOT_FOUND)?;
                if rec.life_cycle & 0x80 != 0 && !self.is_isd(&app) {
                    return Err(StatusWord::CONDITIONS_NOT_SATISFIED);
                }
                if !(self.is_isd(&perf) || rec.associated_sd == perf || app == perf) {
                    return Err(StatusWord::CONDITIONS_NOT_SATISFIED);
                }
                let c = &mut self.channels[ch as usize];
                c.perso_target = Some(app);
                c.store_next = None;
            }
            InstallBody::RegistryUpdate { sd, app, privileges, ref params, .. } => {
                let privileged = self.is_isd(&perf) || self.privileges_of(&perf).contains(Privilege::GlobalRegistry);
                if !(privileged || delegated) {
                    return Err(StatusWord::CONDITIONS_NOT_SATISFIED);
                }
                let app = app.ok_or(StatusWord::WRONG_DATA)?;
                if self.is_isd(&app) {
                    return Err(StatusWord::CONDITIONS_NOT_SATISFIED);
                }
                let rec = self.state.app(&app).ok_or(StatusWord::REFERENCED_DATA_NOT_FOUND)?.clone();
                // A delegated registry update concerns the SD's own applications only.
                if !privileged && rec.associated_sd != perf {
                    return Err(StatusWord::CONDITIONS_NOT_SATISFIED);
                }
                subject = Some(ReceiptSubject::RegistryUpdate {
                    from_sd: Some(rec.associated_sd),
                    app: Some(app),
                    to_sd: sd,
                    privileges,
                    params: params.as_bytes().to_vec(),
                });
                if let Some(p) = privileges {
                    self.check_grant(&perf, p, rec.is_sd())?;
                }
                if let Some(sd) = sd {
                    self.extradite(perf, app, sd)?;
                }
                if let (Some(p), Some(r)) = (privileges, self.state.app_mut(&app)) {
                    r.privileges = p;
                }
            }
        }
        if let (true, Some(subject)) = (delegated, subject) {
            return Ok(ok(self.receipt(&subject)?));
        }
        Ok(ok(if without_data { Vec::new() } else { vec![0x00] }))
    }

    /// The security domain an application, security domain or load file is associated with.
    fn owner_of(&self, aid: &Aid) -> Option<Aid> {
        self.state.app(aid).map(|a| a.associated_sd).or_else(|| self.state.load_file(aid).map(|l| l.associated_sd))
    }

    fn install_for_load(&mut self, ch: u8, perf: Aid, elf: Aid, sd: Option<Aid>, hash: Vec<u8>, params: InstallParams) -> Sw<()> {
        self.channels[ch as usize].load = None;
        if self.aid_in_use(&elf) {
            return Err(StatusWord::CONDITIONS_NOT_SATISFIED);
        }
        let target = sd.unwrap_or(perf);
        self.target_sd(&target)?;
        self.may_manage(&perf, &target)?;
        if !matches!(hash.len(), 0 | 20 | 32) {
            return Err(StatusWord::WRONG_DATA);
        }
        let p = Self::parse_params(params.as_bytes())?;
        let nv_min = system_params(&p)?.get_nv_code_min().unwrap_or(0);
        if nv_min > 0 && !self.state.nv_fits(&target, nv_min as u64) {
            return Err(StatusWord::NOT_ENOUGH_MEMORY);
        }
        self.channels[ch as usize].load =
            Some(LoadInProgress { elf, target_sd: target, hash, nv_min, assembler: LoadAssembler::new(), received: 0, delegated: false });
        Ok(())
    }

    /// LOAD (GPCS 2.3 §11.6): blocks in sequence after INSTALL [for load]; on the last one the
    /// load file is checked (hash, CAP structure, package AID) and registered. Any error ends
    /// the load.
    pub(crate) fn load_block(&mut self, ch: u8, _perf: Aid, cmd: &CommandApdu) -> Sw<ResponseApdu> {
        let l = Load::from_apdu(cmd).map_err(|e| gp_sw(&e))?;
        let Some(mut lp) = self.channels[ch as usize].load.take() else {
            return Err(StatusWord::CONDITIONS_NOT_SATISFIED);
        };
        // GPCS 2.3 §11.6.3: `00` after the last block; quirk: after the first one instead.
        let first_block_00 = self.state.profile.quirks.load_00_on_first_block;
        let answer = |last: bool| match (first_block_00, last) {
            (true, _) if l.block == 0 => vec![0x00],
            (false, true) => vec![0x00],
            _ => Vec::new(),
        };
        let done = lp.assembler.push(&l).map_err(|_| StatusWord::INCORRECT_P1P2)?;
        lp.received += l.data.len();
        if !self.state.nv_fits(&lp.target_sd, lp.received.saturating_sub(8) as u64) {
            return Err(StatusWord::NOT_ENOUGH_MEMORY);
        }
        let Some(file) = done else {
            self.channels[ch as usize].load = Some(lp);
            return Ok(ok(answer(false)));
        };
        let lf = LoadFile::parse(&file).map_err(|_| StatusWord::WRONG_DATA)?;
        if lf.ciphered {
            return Err(StatusWord::WRONG_DATA);
        }
        for dap in &lf.dap_blocks {
            // DAP signatures are not verified (documented); the SD must exist.
            if !self.state.app(&dap.sd).is_some_and(AppRecord::is_sd) {
                return Err(StatusWord::REFERENCED_DATA_NOT_FOUND);
            }
        }
        if !lp.hash.is_empty() {
            let alg = if lp.hash.len() == 20 { HashAlgorithm::Sha1 } else { HashAlgorithm::Sha256 };
            if alg.digest(&lf.lfdb) != lp.hash {
                return Err(StatusWord::WRONG_DATA);
            }
        }
        let cap = CapFile::parse(&lf.lfdb).map_err(|_| StatusWord::WRONG_DATA)?;
        if cap.package_aid() != lp.elf.as_bytes() {
            return Err(StatusWord::WRONG_DATA);
        }
        if self.aid_in_use(&lp.elf) {
            return Err(StatusWord::CONDITIONS_NOT_SATISFIED);
        }
        let modules = cap.applet_aids().into_iter().map(Aid::new).collect::<Result<Vec<_>, _>>().map_err(|_| StatusWord::WRONG_DATA)?;
        let cost = (lf.lfdb.len() as u32).max(lp.nv_min);
        if !self.state.nv_fits(&lp.target_sd, cost as u64) {
            return Err(StatusWord::NOT_ENOUGH_MEMORY);
        }
        let v = cap.package_version();
        self.state.load_files.push(LoadFileRecord {
            aid: lp.elf,
            life_cycle: ElfLifeCycle::LOADED.0,
            associated_sd: lp.target_sd,
            modules,
            version: vec![v.major, v.minor],
            nv_cost: cost,
            builtin: false,
            lfdb_sha256: HashAlgorithm::Sha256.digest(&lf.lfdb),
            hidden: false,
            contactless_state: None,
        });
        if lp.delegated {
            // GPCS 2.3 §11.6.3: the Load Receipt comes with the last LOAD block.
            return Ok(ok(self.receipt(&ReceiptSubject::Load { elf: lp.elf, sd: lp.target_sd })?));
        }
        Ok(ok(answer(true)))
    }

    #[allow(clippy::too_many_arguments)]
    fn install_for_install(
        &mut self,
        perf: Aid,
        elf: Aid,
        module: Aid,
        app: Aid,
        privileges: Privileges,
        params: InstallParams,
        make_selectable: bool,
    ) -> Sw<()> {
        let lf = self.state.load_file(&elf).ok_or(StatusWord::REFERENCED_DATA_NOT_FOUND)?.clone();
        if !lf.modules.contains(&module) {
            return Err(StatusWord::REFERENCED_DATA_NOT_FOUND);
        }
        if self.aid_in_use(&app) {
            return Err(StatusWord::CONDITIONS_NOT_SATISFIED);
        }
        self.may_manage(&perf, &perf)?;
        let sd_instance = lf.builtin && module == SD_MODULE_AID;
        self.check_grant(&perf, privileges, sd_instance)?;
        let p = Self::parse_params(params.as_bytes())?;
        let sys = system_params(&p)?;
        let settings = self.state.settings.clone();
        let nv_cost = if sd_instance {
            settings.sd_instance_cost
        } else {
            sys.get_nv_quota().or(sys.get_nv_reserved()).unwrap_or(settings.instance_cost)
        };
        let volatile_cost = sys.get_volatile_quota().or(sys.get_volatile_reserved()).unwrap_or(0);
        if !self.state.nv_fits(&perf, nv_cost as u64) || volatile_cost as u64 > self.state.volatile_free() {
            return Err(StatusWord::NOT_ENOUGH_MEMORY);
        }
        let c9 = p.c9().unwrap_or(&[]).to_vec();
        let mut rec = AppRecord {
            aid: app,
            elf,
            module,
            privileges,
            life_cycle: if make_selectable { AppLifeCycle::SELECTABLE.0 } else { AppLifeCycle::INSTALLED.0 },
            associated_sd: perf,
            install_params: params.as_bytes().to_vec(),
            nv_cost,
            volatile_cost,
            model: None,
            domain: None,
            contactless_state: None,
        };
        if sd_instance {
            let sdp = if c9.is_empty() { SdInstallParams::default() } else { SdInstallParams::parse(&c9).map_err(|_| StatusWord::WRONG_DATA)? };
            let isd_dom = self.state.domain(&self.state.isd()).ok_or(StatusWord::CONDITIONS_NOT_SATISFIED)?.clone();
            let scp = match sdp.scp.first() {
                Some(&(0x02, i)) => Scp::Scp02 { i },
                Some(&(0x03, i)) => Scp::Scp03 { i },
                Some(_) => return Err(StatusWord::WRONG_DATA),
                None => isd_dom.scp,
            };
            if !self.state.profile.scp.contains(&scp) {
                return Err(StatusWord::WRONG_DATA);
            }
            let keys = KeySet::for_scp(scp, &self.ssd_initial_key, INITIAL_KEY_VERSION).map_err(|_| StatusWord::WRONG_DATA)?;
            rec.life_cycle = if make_selectable { SdLifeCycle::SELECTABLE.0 } else { SdLifeCycle::INSTALLED.0 };
            rec.domain = Some(DomainRecord {
                scp,
                kdd: isd_dom.kdd.clone(),
                sequence_counter: 0,
                keys: Vec::new(),
                auth_failures: BTreeMap::new(),
                nv_quota: sys.get_nv_quota(),
                data: BTreeMap::new(),
            public_keys: Vec::new(),
            });
            self.state.apps.push(rec);
            for (id, k) in (1u8..).zip(keys.keys()) {
                self.put_secret(&app, INITIAL_KEY_VERSION, id, k.clone());
            }
        } else {
            let f = self.models.for_package(&elf);
            let info = InstallInfo { aid: &app, elf: &elf, module: &module, privileges, app_params: &c9 };
            let m = f.install(&info)?;
            rec.model = Some(ModelRecord { name: f.name().to_string(), state: m.snapshot() });
            self.state.apps.push(rec);
            self.live.insert(app, m);
        }
        Ok(())
    }

    fn make_selectable(&mut self, perf: Aid, app: Aid, privileges: Privileges) -> Sw<()> {
        if self.is_isd(&app) {
            return Err(StatusWord::CONDITIONS_NOT_SATISFIED);
        }
        let rec = self.state.app(&app).ok_or(StatusWord::REFERENCED_DATA_NOT_FOUND)?.clone();
        self.may_manage(&perf, &rec.associated_sd)?;
        if rec.life_cycle != AppLifeCycle::INSTALLED.0 {
            return Err(StatusWord::CONDITIONS_NOT_SATISFIED);
        }
        if privileges != Privileges::NONE {
            self.check_grant(&perf, privileges, rec.is_sd())?;
        }
        if let Some(r) = self.state.app_mut(&app) {
            r.life_cycle = AppLifeCycle::SELECTABLE.0;
            if privileges != Privileges::NONE {
                r.privileges = privileges;
            }
        }
        Ok(())
    }

    /// INSTALL [for extradition]: an application, security domain or load file moves under
    /// another security domain (the ISD, or its owner with Authorized Management, may do it).
    fn extradite(&mut self, perf: Aid, obj: Aid, to: Aid) -> Sw<()> {
        self.target_sd(&to)?;
        if self.is_isd(&obj) {
            return Err(StatusWord::CONDITIONS_NOT_SATISFIED);
        }
        if let Some(rec) = self.state.app(&obj).cloned() {
            self.may_manage(&perf, &rec.associated_sd)?;
            let mut cost = rec.nv_cost as u64;
            if rec.is_sd() {
                if self.state.sd_chain(&to).contains(&obj) {
                    return Err(StatusWord::CONDITIONS_NOT_SATISFIED);
                }
                cost += self.state.sd_nv_used(&obj);
            }
            if rec.associated_sd != to && !self.quotas_fit(&to, cost) {
                return Err(StatusWord::NOT_ENOUGH_MEMORY);
            }
            if let Some(r) = self.state.app_mut(&obj) {
                r.associated_sd = to;
            }
            Ok(())
        } else if let Some(lf) = self.state.load_file(&obj).cloned() {
            if lf.builtin {
                return Err(StatusWord::CONDITIONS_NOT_SATISFIED);
            }
            self.may_manage(&perf, &lf.associated_sd)?;
            if lf.associated_sd != to && !self.quotas_fit(&to, lf.nv_cost as u64) {
                return Err(StatusWord::NOT_ENOUGH_MEMORY);
            }
            if let Some(l) = self.state.load_files.iter_mut().find(|l| l.aid == obj) {
                l.associated_sd = to;
            }
            Ok(())
        } else {
            Err(StatusWord::REFERENCED_DATA_NOT_FOUND)
        }
    }

    /// DELETE (GPCS 2.3 §11.2): objects (with their related objects on request) or keys of the
    /// selected security domain. All objects are checked before anything is removed.
    pub(crate) fn delete(&mut self, ch: u8, perf: Aid, cmd: &CommandApdu) -> Sw<ResponseApdu> {
        let r = self.delete_inner(ch, perf, cmd);
        self.token_verified = false;
        r
    }

    fn delete_inner(&mut self, _ch: u8, perf: Aid, cmd: &CommandApdu) -> Sw<ResponseApdu> {
        let d = Delete::from_apdu(cmd).map_err(|e| gp_sw(&e))?;
        // Keys are the SD's own business: no token (GPCS 2.3 §11.2.2.2); one sent is checked.
        let delegated = match d.target {
            DeleteTarget::Objects(_) => self.check_token(&perf, d.token.is_some(), |k| verify_delete_token(&d, k))?,
            DeleteTarget::Key { .. } => {
                if d.token.is_some() {
                    self.check_token(&perf, true, |k| verify_delete_token(&d, k))?;
                }
                false
            }
        };
        match d.target {
            DeleteTarget::Objects(aids) => {
                let subject = ReceiptSubject::Delete { aid: aids[0] };
                let (mut apps, mut elfs) = (Vec::new(), Vec::new());
                for aid in &aids {
                    self.plan_delete(&perf, aid, d.related, &mut apps, &mut elfs)?;
                }
                for a in apps {
                    self.evict(&a);
                    self.live.remove(&a);
                    self.secrets.retain(|(sd, _, _), _| *sd != a);
                    self.state.apps.retain(|r| r.aid != a);
                }
                self.state.load_files.retain(|l| !elfs.contains(&l.aid));
                if delegated {
                    return Ok(ok(self.receipt(&subject)?));
                }
            }
            DeleteTarget::Key { id, version } => {
                let dom = self.state.domain(&perf).ok_or(StatusWord::CONDITIONS_NOT_SATISFIED)?;
                let matches = |kid: u8, kv: u8| id.is_none_or(|i| kid == i) && version.is_none_or(|v| kv == v);
                let hits: Vec<(u8, u8)> = dom.keys.iter().filter(|k| matches(k.id, k.version)).map(|k| (k.version, k.id)).collect();
                let public_hits = dom.public_keys.iter().filter(|k| matches(k.id, k.version)).count();
                if hits.is_empty() && public_hits == 0 {
                    return Err(StatusWord::REFERENCED_DATA_NOT_FOUND);
                }
                for (v, i) in hits {
                    self.remove_secret(&perf, v, i);
                }
                if let Some(d) = self.state.domain_mut(&perf) {
                    d.public_keys.retain(|k| !matches(k.id, k.version));
                }
            }
        }
        Ok(ok(vec![0x00]))
    }

    fn plan_delete(&self, perf: &Aid, aid: &Aid, related: bool, apps: &mut Vec<Aid>, elfs: &mut Vec<Aid>) -> Sw<()> {
        if self.is_isd(aid) {
            return Err(StatusWord::CONDITIONS_NOT_SATISFIED);
        }
        let pp = self.privileges_of(perf);
        let global = self.is_isd(perf) || pp.contains(Privilege::GlobalDelete);
        let own = pp.contains(Privilege::AuthorizedManagement) || (pp.contains(Privilege::DelegatedManagement) && self.token_verified);
        let may = |owner: &Aid| global || (own && owner == perf);
        let app_ok = |a: &AppRecord| -> Sw<()> {
            if !may(&a.associated_sd) || self.selected_anywhere(&a.aid) || (a.is_sd() && self.has_content(&a.aid)) {
                return Err(StatusWord::CONDITIONS_NOT_SATISFIED);
            }
            Ok(())
        };
        if let Some(a) = self.state.app(aid) {
            app_ok(a)?;
            apps.push(*aid);
        } else if let Some(l) = self.state.load_file(aid) {
            if l.builtin || !may(&l.associated_sd) {
                return Err(StatusWord::CONDITIONS_NOT_SATISFIED);
            }
            let instances: Vec<&AppRecord> = self.state.apps.iter().filter(|a| a.elf == *aid).collect();
            if !instances.is_empty() && !related {
                return Err(StatusWord::CONDITIONS_NOT_SATISFIED);
            }
            for a in instances {
                app_ok(a)?;
                apps.push(a.aid);
            }
            elfs.push(*aid);
        } else {
            return Err(StatusWord::REFERENCED_DATA_NOT_FOUND);
        }
        Ok(())
    }
}
