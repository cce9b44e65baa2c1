//! Seeding a card's registry: the content a card holds before anything is said to it (ROM
//! packages, pre-issued applications and security domains), set as card state rather than
//! loaded and installed. It is how a simulated card becomes a copy of a real one, e.g. from the
//! GET STATUS responses of a recorded session; the card then reports that content in its own
//! encoding.

use crate::card::SimCard;
use crate::config::{KeySet, alg_fits};
use crate::error::SeError;
use crate::models::InstallInfo;
use crate::state::{AppRecord, DomainRecord, LoadFileRecord, ModelRecord};
use std::collections::BTreeMap;
use tsm_gp::gp::{Aid, InstallParams, Privileges};

/// Write access to a card's registry, from [`SimCard::registry_mut`]. Every method checks what
/// the card would otherwise never hold (an AID used twice, a model nobody registered, keys its
/// secure channel cannot use) and leaves the card unchanged on error. What a record says is
/// otherwise taken as is: life cycle states, privileges and associated security domains are
/// whatever the seeded card reports (a real card's registry may name a security domain that
/// GET STATUS does not list).
pub struct RegistryMut<'a> {
    card: &'a mut SimCard,
}

impl SimCard {
    /// Seeds the registry (load files, applications, security domains). See [`RegistryMut`].
    ///
    /// ```
    /// use tsm_gp::profile::CardProfile;
    /// use tsm_se::{AppRecord, CardConfig, LoadFileRecord, SimCard};
    ///
    /// let mut card = SimCard::new(CardProfile::builtin("uicc").unwrap(), CardConfig::default()).unwrap();
    /// let isd = card.state().isd();
    /// let pkg = "A0000000620001".parse().unwrap();
    /// let app = "D0D1D2D3D4D50101".parse().unwrap();
    /// let mut r = card.registry_mut();
    /// r.add_load_file(LoadFileRecord { builtin: true, ..LoadFileRecord::new(pkg, isd) }).unwrap();
    /// r.add_application(AppRecord::new(app, pkg, app, isd), None).unwrap();
    /// assert_eq!(card.transmit(&[0x00, 0xA4, 0x04, 0x00, 0x08, 0xD0, 0xD1, 0xD2, 0xD3, 0xD4, 0xD5, 0x01, 0x01]), [0x6F, 0x0A, 0x84, 0x08, 0xD0, 0xD1, 0xD2, 0xD3, 0xD4, 0xD5, 0x01, 0x01, 0x90, 0x00]);
    /// ```
    pub fn registry_mut(&mut self) -> RegistryMut<'_> {
        RegistryMut { card: self }
    }
}

fn taken(card: &SimCard, aid: &Aid) -> Result<(), SeError> {
    if card.state.app(aid).is_some() || card.state.load_file(aid).is_some() {
        return Err(SeError::State(format!("{aid} is already in the registry")));
    }
    Ok(())
}

fn check_params(params: &[u8]) -> Result<InstallParams, SeError> {
    SimCard::parse_params(params).map_err(|_| SeError::State(format!("install parameters {} do not decode", tsm_gp::hex::encode(params))))
}

impl RegistryMut<'_> {
    /// Adds a load file, listed last. Its memory cost (`nv_cost`) counts against the card.
    pub fn add_load_file(&mut self, rec: LoadFileRecord) -> Result<&mut Self, SeError> {
        taken(self.card, &rec.aid)?;
        let st = &self.card.state;
        if !rec.builtin && st.nv_used() + rec.nv_cost as u64 > st.profile.memory as u64 {
            return Err(SeError::State(format!("{}: {} bytes do not fit the card's memory", rec.aid, rec.nv_cost)));
        }
        self.card.state.load_files.push(rec);
        Ok(self)
    }

    /// Adds an application (not a security domain: `rec.domain` must be `None`), listed last.
    /// It runs model `model` (a registered name) or, when `None`, the model bound to its load
    /// file (see [`ModelRegistry`](crate::ModelRegistry)), created as INSTALL [for install]
    /// creates it, with the `C9` value of `rec.install_params`.
    pub fn add_application(&mut self, mut rec: AppRecord, model: Option<&str>) -> Result<&mut Self, SeError> {
        taken(self.card, &rec.aid)?;
        if rec.domain.is_some() {
            return Err(SeError::State(format!("{}: a security domain goes through add_security_domain", rec.aid)));
        }
        let params = check_params(&rec.install_params)?;
        let f = match model {
            Some(name) => self.card.models.by_name(name).ok_or_else(|| SeError::Model { model: name.into(), detail: "not registered".into() })?,
            None => self.card.models.for_package(&rec.elf),
        };
        let info = InstallInfo {
            aid: &rec.aid,
            elf: &rec.elf,
            module: &rec.module,
            privileges: rec.privileges,
            app_params: params.c9().unwrap_or(&[]),
        };
        let m = f.install(&info).map_err(|sw| SeError::Model { model: f.name().into(), detail: format!("install refused with {sw:?}") })?;
        rec.model = Some(ModelRecord { name: f.name().to_string(), state: m.snapshot() });
        let aid = rec.aid;
        self.card.state.apps.push(rec);
        self.card.live.insert(aid, m);
        Ok(self)
    }

    /// Adds a supplementary security domain, listed last. Its domain state is `rec.domain` when
    /// given (its key records are ignored), else the ISD's secure channel and KDD with a
    /// sequence counter of 0; `keys` become its key set (none: it has no keys yet).
    pub fn add_security_domain(&mut self, mut rec: AppRecord, keys: Option<KeySet>) -> Result<&mut Self, SeError> {
        taken(self.card, &rec.aid)?;
        check_params(&rec.install_params)?;
        let isd = self.card.state.isd();
        let isd_dom = self.card.state.domain(&isd).cloned().ok_or_else(|| SeError::State("the ISD has no domain state".into()))?;
        let mut dom = rec.domain.take().unwrap_or(DomainRecord {
            scp: isd_dom.scp,
            kdd: isd_dom.kdd.clone(),
            sequence_counter: 0,
            keys: Vec::new(),
            auth_failures: BTreeMap::new(),
            nv_quota: None,
            data: BTreeMap::new(),
            public_keys: Vec::new(),
        });
        dom.keys.clear();
        if !self.card.state.profile.scp.contains(&dom.scp) {
            return Err(SeError::Config(format!("{}: {} is not among the profile's secure channels", rec.aid, dom.scp)));
        }
        if let Some(k) = &keys
            && k.keys().iter().any(|x| !alg_fits(dom.scp, x.alg()))
        {
            return Err(SeError::Config(format!("{}: keys cannot run {}", rec.aid, dom.scp)));
        }
        rec.model = None;
        rec.domain = Some(dom);
        let aid = rec.aid;
        self.card.state.apps.push(rec);
        if let Some(k) = keys {
            for (id, key) in (1u8..).zip(k.keys()) {
                self.card.put_secret(&aid, k.version, id, key.clone());
            }
        }
        Ok(self)
    }

    /// Sets the privileges of an application, security domain or the ISD.
    pub fn set_privileges(&mut self, aid: &Aid, privileges: Privileges) -> Result<&mut Self, SeError> {
        let a = self.card.state.app_mut(aid).ok_or_else(|| SeError::State(format!("{aid} is not in the registry")))?;
        a.privileges = privileges;
        Ok(self)
    }

    /// Sets the install parameters an application, security domain or the ISD was installed
    /// with (as the INSTALL command's install parameters field: `C9 …`, `EF …`, `EA …`). Its
    /// model keeps the state it has.
    pub fn set_install_params(&mut self, aid: &Aid, params: Vec<u8>) -> Result<&mut Self, SeError> {
        check_params(&params)?;
        let a = self.card.state.app_mut(aid).ok_or_else(|| SeError::State(format!("{aid} is not in the registry")))?;
        a.install_params = params;
        Ok(self)
    }

    /// Sets the second byte of `9F70` that GET STATUS reports for an entry (application,
    /// security domain, the ISD or a load file); `None`: a one-byte life cycle state.
    pub fn set_contactless_state(&mut self, aid: &Aid, state: Option<u8>) -> Result<&mut Self, SeError> {
        if let Some(a) = self.card.state.app_mut(aid) {
            a.contactless_state = state;
        } else if let Some(l) = self.card.state.load_files.iter_mut().find(|l| l.aid == *aid) {
            l.contactless_state = state;
        } else {
            return Err(SeError::State(format!("{aid} is not in the registry")));
        }
        Ok(self)
    }

    /// Keeps a load file out of GET STATUS (e.g. the built-in security domain package
    /// [`SD_PACKAGE_AID`](crate::SD_PACKAGE_AID) on cards that do not list it).
    pub fn set_hidden(&mut self, load_file: &Aid, hidden: bool) -> Result<&mut Self, SeError> {
        let l = self
            .card
            .state
            .load_files
            .iter_mut()
            .find(|l| l.aid == *load_file)
            .ok_or_else(|| SeError::State(format!("{load_file} is not a load file")))?;
        l.hidden = hidden;
        Ok(self)
    }
}
