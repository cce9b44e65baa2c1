//! The store against SQLite and PostgreSQL (see `tsm_server::store::testing` for the choice
//! of backends): migrations, CRUD per entity, tenancy isolation, SE lease exclusivity and
//! expiry, optimistic process updates and the atomicity of a process commit.

use serde_json::json;
use std::time::Duration;
use tsm_gp::crypto::KeyAlg;
use tsm_gp::crypto::diversify::Diversification;
use tsm_server::domain::*;
use tsm_server::store::log::NewAuditEntry;
use tsm_server::store::processes::ProcessCommit;
use tsm_server::store::testing::{TestDb, databases};
use tsm_server::store::{Store, StoreError, migrator};

fn aid(s: &str) -> Aid {
    s.parse().unwrap()
}
fn se(s: &str) -> SeId {
    SeId::new(s).unwrap()
}

/// Runs `f` on every selected backend, naming the backend when it fails.
macro_rules! on_each_backend {
    (|$db:ident| $body:expr) => {
        for $db in databases().await {
            eprintln!("-- backend: {}", $db.label);
            $body;
            $db.finish().await;
        }
    };
}

/// A provider with a whole catalog, an SE with an instance, ready for processes.
struct World {
    provider: ServiceProvider,
    load_file: LoadFile,
    service: Service,
    version: ServiceVersion,
    flavor: Flavor,
    app: ApplicationConfig,
    perso: PersonalizationScript,
    se: SecureElement,
    instance: ServiceInstance,
}

fn sample_se(id: &str) -> SecureElement {
    let t = now_ms();
    SecureElement {
        id: se(id),
        iccid: Some(format!("8949{id}").chars().filter(|c| c.is_ascii_alphanumeric()).collect()),
        carrier: Carrier::Uicc,
        profile: "uicc".into(),
        issuer_id: None,
        isd_aid: aid("A000000151000000"),
        isd_keyset_id: None,
        scp: Some(3),
        scp_i: Some(0x70),
        sequence_counter: Some(5),
        sequence_counter_current: true,
        kdd: Some(vec![0, 1, 2, 3, 4, 5, 6, 7, 8, 9]),
        registry: Some(json!({"applications": []})),
        registry_read_at: Some(t),
        created_at: t,
        updated_at: t,
    }
}

async fn world(s: &Store, name: &str, se_id: &str) -> World {
    let t = now_ms();
    let provider = ServiceProvider { id: ProviderId::new(), name: name.into(), callback_url: Some(format!("https://{name}.example/cb")), created_at: t, updated_at: t };
    s.providers().create(&provider).await.unwrap();
    let load_file = LoadFile {
        id: LoadFileId::new(),
        provider_id: provider.id,
        package_aid: aid("A0000000620101"),
        version: "1.0".into(),
        size: 4,
        hashes: LoadFileHashes { sha1: vec![1; 20], sha256: vec![2; 32], sha1_without_descriptor: vec![3; 20], sha256_without_descriptor: vec![4; 32] },
        applet_aids: vec![aid("A000000062010101")],
        created_at: t,
    };
    s.load_files().create(&load_file, &[0xCA, 0xFE, 0xBA, 0xBE]).await.unwrap();
    let service = Service { id: ServiceId::new(), provider_id: provider.id, name: "wallet".into(), description: Some("a wallet".into()), created_at: t };
    s.services().create(&service).await.unwrap();
    let version = ServiceVersion { id: ServiceVersionId::new(), provider_id: provider.id, service_id: service.id, version: "1.0".into(), load_file_id: load_file.id, created_at: t };
    s.service_versions().create(&version).await.unwrap();
    let flavor = Flavor { id: FlavorId::new(), provider_id: provider.id, service_version_id: version.id, name: "uicc".into(), carrier: Some(Carrier::Uicc), profile: None, memory_quota: Some(65536), created_at: t };
    s.flavors().create(&flavor).await.unwrap();
    let app = ApplicationConfig {
        id: ApplicationConfigId::new(),
        provider_id: provider.id,
        flavor_id: flavor.id,
        ordinal: 0,
        module_aid: aid("A000000062010101"),
        instance_aid: aid("A00000006201010101"),
        privileges: vec![0x00],
        install_params: vec![0xC9, 0x00],
        make_selectable: true,
        created_at: t,
    };
    s.application_configs().create(&app).await.unwrap();
    let perso = PersonalizationScript {
        id: PersoScriptId::new(),
        provider_id: provider.id,
        application_config_id: app.id,
        ordinal: 0,
        name: "keys".into(),
        blocks: vec![PersoBlock { data: vec![0x01, 0x02], encrypt: false }, PersoBlock { data: vec![0x8F; 16], encrypt: true }],
        created_at: t,
    };
    s.personalization_scripts().create(&perso).await.unwrap();
    let se = match s.secure_elements().get(&se(se_id)).await.unwrap() {
        Some(e) => e,
        None => {
            let e = sample_se(se_id);
            s.secure_elements().create(&e).await.unwrap();
            e
        }
    };
    let instance = ServiceInstance {
        id: ServiceInstanceId::new(),
        provider_id: provider.id,
        service_id: service.id,
        service_version_id: version.id,
        flavor_id: flavor.id,
        se_id: se.id.clone(),
        state: ServiceInstanceState::NotDeployed,
        created_at: t,
        updated_at: t,
    };
    s.service_instances().create(&instance).await.unwrap();
    World { provider, load_file, service, version, flavor, app, perso, se, instance }
}

fn new_process(w: &World) -> Process {
    let t = now_ms();
    Process {
        id: ProcessId::new(),
        provider_id: w.provider.id,
        service_instance_id: Some(w.instance.id),
        se_id: w.se.id.clone(),
        operation: Operation::Deploy,
        state: ProcessState::Queued,
        progress: Progress { steps_done: 0, steps_total: 3, apdus: 0, round_trips: 0 },
        error: None,
        planner_state: None,
        seram_session_id: None,
        version: 0,
        created_at: t,
        updated_at: t,
        started_at: None,
        finished_at: None,
    }
}

fn step(p: ProcessId, ordinal: u32, name: &str, state: StepState) -> ProcessStep {
    ProcessStep { process_id: p, ordinal, name: name.into(), state, started_at: None, finished_at: None }
}

#[tokio::test]
async fn migrations_are_idempotent() {
    on_each_backend!(|db| {
        let s = &db.store;
        s.migrate().await.unwrap();
        s.migrate().await.unwrap();
        migrator(s.kind()).run(s.pool()).await.unwrap();
        // The schema is there and usable after the repeated runs.
        assert!(s.providers().list().await.unwrap().is_empty());
        // A second store on the same database migrates as a no-op too.
        let other = Store::connect(&db.url).await.unwrap();
        other.migrate().await.unwrap();
        other.close().await;
    });
}

#[tokio::test]
async fn crud_catalog_and_cards() {
    on_each_backend!(|db| {
        let s = &db.store;
        let w = world(s, "acme", "SE-0001").await;
        let p = w.provider.id;

        // providers
        assert_eq!(s.providers().get(p).await.unwrap().unwrap(), w.provider);
        assert_eq!(s.providers().get_by_name("acme").await.unwrap().unwrap().id, p);
        let mut renamed = w.provider.clone();
        renamed.callback_url = None;
        assert!(s.providers().update(&renamed).await.unwrap());
        assert_eq!(s.providers().get(p).await.unwrap().unwrap().callback_url, None);
        let dup = ServiceProvider { id: ProviderId::new(), ..w.provider.clone() };
        assert_eq!(s.providers().create(&dup).await.unwrap_err().code(), "store.conflict");

        // API tokens: hash only, revocation, expiry
        let t = now_ms();
        let tok = ApiToken { id: TokenId::new(), provider_id: p, label: "ci".into(), token_hash: "ab".repeat(32), created_at: t, expires_at: Some(t + 60_000), revoked_at: None, last_used_at: None };
        s.api_tokens().create(&tok).await.unwrap();
        assert_eq!(s.api_tokens().find_live_by_hash(&tok.token_hash, t).await.unwrap().unwrap(), tok);
        assert!(s.api_tokens().find_live_by_hash(&tok.token_hash, t + 60_000).await.unwrap().is_none(), "expired");
        s.api_tokens().touch(tok.id, t + 1).await.unwrap();
        assert_eq!(s.api_tokens().list(p).await.unwrap()[0].last_used_at, Some(t + 1));
        assert!(s.api_tokens().revoke(p, tok.id, t + 2).await.unwrap());
        assert!(!s.api_tokens().revoke(p, tok.id, t + 3).await.unwrap());
        assert!(s.api_tokens().find_live_by_hash(&tok.token_hash, t).await.unwrap().is_none(), "revoked");

        // catalog
        assert_eq!(s.load_files().get(p, w.load_file.id).await.unwrap().unwrap(), w.load_file);
        assert_eq!(s.load_files().cap_bytes(p, w.load_file.id).await.unwrap().unwrap(), vec![0xCA, 0xFE, 0xBA, 0xBE]);
        assert_eq!(s.load_files().list(p).await.unwrap(), vec![w.load_file.clone()]);
        assert_eq!(s.services().get(p, w.service.id).await.unwrap().unwrap(), w.service);
        let mut svc = w.service.clone();
        svc.description = None;
        assert!(s.services().update(&svc).await.unwrap());
        assert_eq!(s.services().list(p).await.unwrap(), vec![svc]);
        assert_eq!(s.service_versions().get(p, w.version.id).await.unwrap().unwrap(), w.version);
        assert_eq!(s.service_versions().list(p, w.service.id).await.unwrap(), vec![w.version.clone()]);
        assert_eq!(s.flavors().get(p, w.flavor.id).await.unwrap().unwrap(), w.flavor);
        assert_eq!(s.flavors().list(p, w.version.id).await.unwrap(), vec![w.flavor.clone()]);
        assert_eq!(s.application_configs().get(p, w.app.id).await.unwrap().unwrap(), w.app);
        assert_eq!(s.application_configs().list(p, w.flavor.id).await.unwrap(), vec![w.app.clone()]);
        assert_eq!(s.personalization_scripts().get(p, w.perso.id).await.unwrap().unwrap(), w.perso);
        assert_eq!(s.personalization_scripts().list(p, w.app.id).await.unwrap(), vec![w.perso.clone()]);
        // A load file in use by a version cannot go; unused catalog rows can, bottom-up.
        assert_eq!(s.load_files().delete(p, w.load_file.id).await.unwrap_err().code(), "store.reference");
        assert!(s.personalization_scripts().delete(p, w.perso.id).await.unwrap());
        assert!(s.personalization_scripts().get(p, w.perso.id).await.unwrap().is_none());
        assert!(s.application_configs().delete(p, w.app.id).await.unwrap());

        // secure elements, keysets, issuers, security domains
        assert_eq!(s.secure_elements().get(&w.se.id).await.unwrap().unwrap(), w.se);
        assert_eq!(s.secure_elements().get_by_iccid(w.se.iccid.as_deref().unwrap()).await.unwrap().unwrap().id, w.se.id);
        let key = |n: &str| KeyId::new(format!("se/SE-0001/isd/30/{n}")).unwrap();
        let master = Keyset { id: KeysetId::new(), kvn: 0x30, alg: KeyAlg::Des3_2k, source: KeysetSource::Stored { enc: key("enc"), mac: key("mac"), dek: key("dek") }, created_at: now_ms() };
        s.keysets().create(&master).await.unwrap();
        let div = Keyset { id: KeysetId::new(), kvn: 0x01, alg: KeyAlg::Des3_2k, source: KeysetSource::Diversified { master_keyset_id: master.id, method: Diversification::Visa2 }, created_at: now_ms() };
        s.keysets().create(&div).await.unwrap();
        assert_eq!(s.keysets().get(master.id).await.unwrap().unwrap(), master);
        assert_eq!(s.keysets().get(div.id).await.unwrap().unwrap(), div);
        let issuer = SeIssuer { id: IssuerId::new(), name: "MNO".into(), master_keyset_id: Some(master.id), diversification: Diversification::EmvCps11, created_at: now_ms() };
        s.issuers().create(&issuer).await.unwrap();
        assert_eq!(s.issuers().get(issuer.id).await.unwrap().unwrap(), issuer);
        assert_eq!(s.issuers().list().await.unwrap(), vec![issuer.clone()]);
        let mut card = w.se.clone();
        card.isd_keyset_id = Some(div.id);
        card.sequence_counter = Some(6);
        card.sequence_counter_current = false;
        card.kdd = None;
        card.registry = Some(json!({"applications": [{"aid": "A000000062010101"}]}));
        assert!(s.secure_elements().update_card_state(&card).await.unwrap());
        let back = s.secure_elements().get(&card.id).await.unwrap().unwrap();
        assert_eq!((back.isd_keyset_id, back.sequence_counter, back.sequence_counter_current, back.kdd.clone(), back.registry.clone()), (card.isd_keyset_id, Some(6), false, None, card.registry.clone()));
        assert!(s.secure_elements().set_sequence_counter(&card.id, 7, true).await.unwrap());
        let back = s.secure_elements().get(&card.id).await.unwrap().unwrap();
        assert_eq!((back.sequence_counter, back.sequence_counter_current), (Some(7), true));
        assert!(!s.secure_elements().set_sequence_counter(&se("SE-none"), 1, true).await.unwrap());

        let t = now_ms();
        let isd = SecurityDomain { id: SecurityDomainId::new(), se_id: w.se.id.clone(), aid: aid("A000000151000000"), kind: SdKind::Isd, provider_id: None, keyset_id: Some(div.id), memory_quota: None, life_cycle: Some(0x0F), created_at: t, updated_at: t };
        let ssd = SecurityDomain { id: SecurityDomainId::new(), se_id: w.se.id.clone(), aid: aid("A000000151535344"), kind: SdKind::Ssd, provider_id: Some(p), keyset_id: None, memory_quota: Some(65536), life_cycle: None, created_at: t, updated_at: t };
        s.security_domains().create(&isd).await.unwrap();
        s.security_domains().create(&ssd).await.unwrap();
        assert_eq!(s.security_domains().create(&SecurityDomain { id: SecurityDomainId::new(), ..ssd.clone() }).await.unwrap_err().code(), "store.conflict", "one AID per SE");
        assert_eq!(s.security_domains().get(p, ssd.id).await.unwrap().unwrap(), ssd);
        assert!(s.security_domains().get(p, isd.id).await.unwrap().is_none(), "the ISD is not the provider's");
        assert_eq!(s.security_domains().list(p).await.unwrap(), vec![ssd.clone()]);
        assert_eq!(s.security_domains().list_for_se_unscoped(&w.se.id).await.unwrap().len(), 2);
        let mut ssd2 = ssd.clone();
        ssd2.life_cycle = Some(0x0F);
        ssd2.keyset_id = Some(master.id);
        assert!(s.security_domains().update_unscoped(&ssd2).await.unwrap());
        let back = s.security_domains().get(p, ssd.id).await.unwrap().unwrap();
        assert_eq!((back.life_cycle, back.keyset_id), (Some(0x0F), Some(master.id)));
        assert!(s.security_domains().delete_unscoped(ssd.id).await.unwrap());
        assert!(s.security_domains().get(p, ssd.id).await.unwrap().is_none());
    });
}

#[tokio::test]
async fn crud_instances_processes_sessions_logs() {
    on_each_backend!(|db| {
        let s = &db.store;
        let w = world(s, "acme", "SE-0002").await;
        let p = w.provider.id;

        assert_eq!(s.service_instances().get(p, w.instance.id).await.unwrap().unwrap(), w.instance);
        assert_eq!(s.service_instances().list(p).await.unwrap(), vec![w.instance.clone()]);
        assert_eq!(s.service_instances().list_for_se(p, &w.se.id).await.unwrap(), vec![w.instance.clone()]);
        assert!(s.service_instances().set_state_unscoped(w.instance.id, ServiceInstanceState::Installed).await.unwrap());
        assert_eq!(s.service_instances().get_unscoped(w.instance.id).await.unwrap().unwrap().state, ServiceInstanceState::Installed);

        // processes and their steps
        let proc_ = new_process(&w);
        let steps = [step(proc_.id, 0, "select-isd", StepState::Pending), step(proc_.id, 1, "load", StepState::Pending), step(proc_.id, 2, "install", StepState::Pending)];
        s.processes().create(&proc_, &steps).await.unwrap();
        assert_eq!(s.processes().get(p, proc_.id).await.unwrap().unwrap(), proc_);
        assert_eq!(s.processes().get_unscoped(proc_.id).await.unwrap().unwrap(), proc_);
        assert_eq!(s.processes().list(p, 10).await.unwrap(), vec![proc_.clone()]);
        assert_eq!(s.processes().steps(p, proc_.id).await.unwrap(), steps.to_vec());
        assert_eq!(s.processes().next_for_se(&w.se.id).await.unwrap().unwrap().id, proc_.id);

        // a commit: running, one step done, APDUs logged, instance state, audit, callback
        let mut running = proc_.clone();
        running.state = ProcessState::Running;
        running.started_at = Some(now_ms());
        running.progress.steps_done = 1;
        running.progress.apdus = 2;
        running.progress.round_trips = 1;
        running.planner_state = Some(json!({"phase": "load", "counter": 5}));
        let done = [ProcessStep { state: StepState::Completed, started_at: Some(1), finished_at: Some(2), ..steps[0].clone() }];
        let apdus = [
            ApduLogEntry { process_id: proc_.id, batch: 0, seq: 0, command: vec![0x00, 0xA4, 0x04, 0x00], response: Some(vec![0x90, 0x00]), sw: Some(0x9000), at: now_ms() },
            ApduLogEntry { process_id: proc_.id, batch: 0, seq: 1, command: vec![0x80, 0xCA, 0x00, 0xC1], response: None, sw: None, at: now_ms() },
        ];
        let cb = CallbackOutboxEntry {
            id: CallbackId::new(),
            provider_id: p,
            process_id: proc_.id,
            url: "https://acme.example/cb".into(),
            payload: json!({"process": proc_.id.to_string(), "state": "RUNNING"}),
            attempts: 0,
            next_attempt_at: 0,
            delivered_at: None,
            last_error: None,
            created_at: now_ms(),
        };
        let audit = NewAuditEntry { actor: "node:test".into(), provider_id: Some(p), action: "process.start".into(), object_type: "process".into(), object_id: proc_.id.to_string(), detail: Some(json!({"step": 0})) };
        let v = s
            .processes()
            .commit(&running, ProcessCommit { steps: &done, apdus: &apdus, instance_state: Some((w.instance.id, ServiceInstanceState::Installed)), audit: Some(audit.clone()), callback: Some(&cb) })
            .await
            .unwrap();
        assert_eq!(v, 1);
        let back = s.processes().get(p, proc_.id).await.unwrap().unwrap();
        assert_eq!((back.state, back.progress, back.planner_state.clone(), back.version), (ProcessState::Running, running.progress, running.planner_state.clone(), 1));
        assert_eq!(s.processes().steps(p, proc_.id).await.unwrap()[0], done[0]);
        assert_eq!(s.apdu_log().list(p, proc_.id).await.unwrap(), apdus.to_vec());
        assert_eq!(s.apdu_log().count_unscoped(proc_.id).await.unwrap(), 2);
        assert_eq!(s.callbacks().list_for_process(p, proc_.id).await.unwrap(), vec![cb.clone()]);
        let a = s.audit_log().list(p, 0, 10).await.unwrap();
        assert_eq!((a.len(), a[0].action.as_str(), a[0].detail.clone()), (1, "process.start", audit.detail.clone()));
        assert_eq!(s.audit_log().list_for_object_unscoped("process", &proc_.id.to_string()).await.unwrap().len(), 1);

        // the APDU log also takes appends outside a commit
        s.apdu_log().append(&[ApduLogEntry { process_id: proc_.id, batch: 1, seq: 0, command: vec![0x80, 0xE6], response: Some(vec![0x90, 0x00]), sw: Some(0x9000), at: 0 }]).await.unwrap();
        assert_eq!(s.apdu_log().count_unscoped(proc_.id).await.unwrap(), 3);

        // finishing with an error
        let mut failed = back.clone();
        failed.state = ProcessState::Failed;
        failed.error = Some(ProcessError { code: "planner.card_error".into(), message: "6A80 on INSTALL".into() });
        failed.finished_at = Some(now_ms());
        assert_eq!(s.processes().update_if_version(&failed).await.unwrap(), 2);
        let back = s.processes().get(p, proc_.id).await.unwrap().unwrap();
        assert_eq!((back.state, back.error.clone()), (ProcessState::Failed, failed.error.clone()));
        assert!(s.processes().next_for_se(&w.se.id).await.unwrap().is_none(), "final processes are not picked");

        // callbacks outbox: due, failure with backoff (once per attempt), delivery
        assert_eq!(s.callbacks().due(now_ms(), 10).await.unwrap().len(), 1);
        assert!(s.callbacks().record_failure(cb.id, 0, i64::MAX / 2, "HTTP 503").await.unwrap());
        assert!(!s.callbacks().record_failure(cb.id, 0, 0, "counted twice").await.unwrap());
        assert!(s.callbacks().due(now_ms(), 10).await.unwrap().is_empty());
        let c = &s.callbacks().list_for_process(p, proc_.id).await.unwrap()[0];
        assert_eq!((c.attempts, c.last_error.as_deref()), (1, Some("HTTP 503")));
        assert!(s.callbacks().mark_delivered(cb.id, now_ms()).await.unwrap());
        assert!(!s.callbacks().mark_delivered(cb.id, now_ms()).await.unwrap());

        // SERAM sessions
        let t = now_ms();
        let sess = SeramSession { id: SeramSessionId::new(), se_id: w.se.id.clone(), process_id: Some(proc_.id), state: SeramSessionState::Created, order: None, order_seq: 0, last_report_hash: None, last_activity: t, created_at: t, version: 0 };
        s.seram_sessions().create(&sess).await.unwrap();
        assert_eq!(s.seram_sessions().get(sess.id).await.unwrap().unwrap(), sess);
        let mut active = sess.clone();
        active.state = SeramSessionState::Active;
        active.order = Some(json!({"seramCommands": ["00A4040000"]}));
        active.order_seq = 1;
        active.last_report_hash = Some("ff".repeat(32));
        assert_eq!(s.seram_sessions().update_if_version(&active).await.unwrap(), 1);
        assert_eq!(s.seram_sessions().update_if_version(&active).await.unwrap_err().code(), "store.version_conflict");
        let back = s.seram_sessions().get(sess.id).await.unwrap().unwrap();
        assert_eq!((back.state, back.order.clone(), back.order_seq, back.version), (SeramSessionState::Active, active.order.clone(), 1, 1));
        assert_eq!(s.seram_sessions().list_open_for_se(&w.se.id).await.unwrap().len(), 1);
        let missing = SeramSession { id: SeramSessionId::new(), ..sess.clone() };
        assert_eq!(s.seram_sessions().update_if_version(&missing).await.unwrap_err().code(), "store.not_found");
    });
}

#[tokio::test]
async fn tenancy_isolation() {
    on_each_backend!(|db| {
        let s = &db.store;
        let a = world(s, "alpha", "SE-0003").await;
        let b = world(s, "beta", "SE-0003").await; // both providers on the same SE
        let (pa, pb) = (a.provider.id, b.provider.id);
        let pa_proc = new_process(&a);
        s.processes().create(&pa_proc, &[step(pa_proc.id, 0, "x", StepState::Pending)]).await.unwrap();
        s.apdu_log().append(&[ApduLogEntry { process_id: pa_proc.id, batch: 0, seq: 0, command: vec![0], response: None, sw: None, at: 0 }]).await.unwrap();

        // B sees none of A's rows through any provider-scoped read ...
        assert!(s.load_files().get(pb, a.load_file.id).await.unwrap().is_none());
        assert!(s.load_files().cap_bytes(pb, a.load_file.id).await.unwrap().is_none());
        assert!(s.services().get(pb, a.service.id).await.unwrap().is_none());
        assert!(s.service_versions().get(pb, a.version.id).await.unwrap().is_none());
        assert!(s.service_versions().list(pb, a.service.id).await.unwrap().is_empty());
        assert!(s.flavors().get(pb, a.flavor.id).await.unwrap().is_none());
        assert!(s.flavors().list(pb, a.version.id).await.unwrap().is_empty());
        assert!(s.application_configs().get(pb, a.app.id).await.unwrap().is_none());
        assert!(s.application_configs().list(pb, a.flavor.id).await.unwrap().is_empty());
        assert!(s.personalization_scripts().get(pb, a.perso.id).await.unwrap().is_none());
        assert!(s.personalization_scripts().list(pb, a.app.id).await.unwrap().is_empty());
        assert!(s.service_instances().get(pb, a.instance.id).await.unwrap().is_none());
        assert_eq!(s.service_instances().list_for_se(pb, &a.se.id).await.unwrap(), vec![b.instance.clone()]);
        assert!(s.processes().get(pb, pa_proc.id).await.unwrap().is_none());
        assert!(s.processes().list(pb, 100).await.unwrap().is_empty());
        assert!(s.processes().steps(pb, pa_proc.id).await.unwrap().is_empty());
        assert!(s.apdu_log().list(pb, pa_proc.id).await.unwrap().is_empty());
        assert_eq!(s.apdu_log().list(pa, pa_proc.id).await.unwrap().len(), 1);
        // ... lists hold only B's own rows ...
        assert_eq!(s.load_files().list(pb).await.unwrap(), vec![b.load_file.clone()]);
        assert_eq!(s.services().list(pb).await.unwrap(), vec![b.service.clone()]);
        assert_eq!(s.service_instances().list(pb).await.unwrap(), vec![b.instance.clone()]);
        // ... and B can neither change nor delete A's rows ...
        let mut hijack = a.service.clone();
        hijack.provider_id = pb;
        hijack.name = "hijacked".into();
        assert!(!s.services().update(&hijack).await.unwrap());
        assert_eq!(s.services().get(pa, a.service.id).await.unwrap().unwrap().name, "wallet");
        assert!(!s.services().delete(pb, a.service.id).await.unwrap());
        assert!(!s.load_files().delete(pb, a.load_file.id).await.unwrap());
        assert!(!s.personalization_scripts().delete(pb, a.perso.id).await.unwrap());
        // ... nor build on them.
        let t = now_ms();
        let cross = ServiceVersion { id: ServiceVersionId::new(), provider_id: pb, service_id: b.service.id, version: "2.0".into(), load_file_id: a.load_file.id, created_at: t };
        assert_eq!(s.service_versions().create(&cross).await.unwrap_err().code(), "store.reference");
        let cross = Flavor { id: FlavorId::new(), provider_id: pb, service_version_id: a.version.id, name: "x".into(), carrier: None, profile: None, memory_quota: None, created_at: t };
        assert_eq!(s.flavors().create(&cross).await.unwrap_err().code(), "store.reference");
        let cross = ServiceInstance { id: ServiceInstanceId::new(), provider_id: pb, flavor_id: a.flavor.id, ..b.instance.clone() };
        assert_eq!(s.service_instances().create(&cross).await.unwrap_err().code(), "store.reference");
        let mut cross = new_process(&b);
        cross.service_instance_id = Some(a.instance.id);
        assert_eq!(s.processes().create(&cross, &[]).await.unwrap_err().code(), "store.reference");
        let cb = CallbackOutboxEntry { id: CallbackId::new(), provider_id: pb, process_id: pa_proc.id, url: "https://x".into(), payload: json!({}), attempts: 0, next_attempt_at: 0, delivered_at: None, last_error: None, created_at: t };
        assert_eq!(s.callbacks().enqueue(&cb).await.unwrap_err().code(), "store.reference");
        // audit records are per provider too
        s.audit_log().append(&NewAuditEntry { actor: "provider:a".into(), provider_id: Some(pa), action: "x".into(), object_type: "service".into(), object_id: a.service.id.to_string(), detail: None }).await.unwrap();
        assert!(s.audit_log().list(pb, 0, 10).await.unwrap().is_empty());
        assert_eq!(s.audit_log().list(pa, 0, 10).await.unwrap().len(), 1);
    });
}

#[tokio::test]
async fn optimistic_process_updates() {
    on_each_backend!(|db| {
        let s = &db.store;
        let w = world(s, "acme", "SE-0004").await;
        let proc_ = new_process(&w);
        s.processes().create(&proc_, &[step(proc_.id, 0, "a", StepState::Pending)]).await.unwrap();

        // Two nodes read version 0; the first write wins, the second is refused.
        let mut node1 = proc_.clone();
        let mut node2 = proc_.clone();
        node1.state = ProcessState::Running;
        node2.state = ProcessState::Failed;
        assert_eq!(s.processes().update_if_version(&node1).await.unwrap(), 1);
        let e = s.processes().update_if_version(&node2).await.unwrap_err();
        assert!(matches!(e, StoreError::VersionConflict { expected: 0, .. }), "{e}");
        assert_eq!(e.code(), "store.version_conflict");
        assert_eq!(s.processes().get(w.provider.id, proc_.id).await.unwrap().unwrap().state, ProcessState::Running);

        // A refused commit writes nothing of its extras.
        let apdus = [ApduLogEntry { process_id: proc_.id, batch: 0, seq: 0, command: vec![1], response: None, sw: None, at: 0 }];
        let steps = [step(proc_.id, 0, "a", StepState::Completed)];
        let audit = NewAuditEntry { actor: "node:2".into(), provider_id: Some(w.provider.id), action: "x".into(), object_type: "process".into(), object_id: proc_.id.to_string(), detail: None };
        let e = s
            .processes()
            .commit(&node2, ProcessCommit { steps: &steps, apdus: &apdus, instance_state: Some((w.instance.id, ServiceInstanceState::InError)), audit: Some(audit), callback: None })
            .await
            .unwrap_err();
        assert_eq!(e.code(), "store.version_conflict");
        assert_eq!(s.apdu_log().count_unscoped(proc_.id).await.unwrap(), 0);
        assert_eq!(s.processes().steps(w.provider.id, proc_.id).await.unwrap()[0].state, StepState::Pending);
        assert_eq!(s.service_instances().get(w.provider.id, w.instance.id).await.unwrap().unwrap().state, ServiceInstanceState::NotDeployed);
        assert!(s.audit_log().list(w.provider.id, 0, 10).await.unwrap().is_empty());

        // A commit that fails half-way (duplicate APDU log key) rolls back the version bump.
        let mut next = node1.clone();
        next.version = 1;
        next.progress.apdus = 2;
        let dup = [apdus[0].clone(), apdus[0].clone()];
        assert_eq!(s.processes().commit(&next, ProcessCommit { apdus: &dup, ..Default::default() }).await.unwrap_err().code(), "store.conflict");
        let back = s.processes().get(w.provider.id, proc_.id).await.unwrap().unwrap();
        assert_eq!((back.version, back.progress.apdus), (1, 0));
        assert_eq!(s.apdu_log().count_unscoped(proc_.id).await.unwrap(), 0);

        // Concurrent updaters from the same version: exactly one wins.
        let mut handles = Vec::new();
        for i in 0..8u32 {
            let store = s.clone();
            let mut mine = back.clone();
            mine.progress.steps_done = i;
            handles.push(tokio::spawn(async move { store.processes().update_if_version(&mine).await }));
        }
        let mut wins = 0;
        for h in handles {
            match h.await.unwrap() {
                Ok(v) => {
                    assert_eq!(v, 2);
                    wins += 1
                }
                Err(StoreError::VersionConflict { .. }) => {}
                Err(e) => panic!("unexpected {e}"),
            }
        }
        assert_eq!(wins, 1);
        let missing = Process { id: ProcessId::new(), ..node1 };
        assert_eq!(s.processes().update_if_version(&missing).await.unwrap_err().code(), "store.not_found");
    });
}

async fn race_for_lease(db: &TestDb, se_id: &SeId, contenders: usize) -> Vec<String> {
    // Separate pools (as separate nodes would have), released together.
    let mut stores = Vec::new();
    for _ in 0..contenders {
        stores.push(Store::connect_with(&db.url, 2).await.unwrap());
    }
    let barrier = std::sync::Arc::new(tokio::sync::Barrier::new(contenders));
    let mut handles = Vec::new();
    for (i, st) in stores.iter().enumerate() {
        let (st, se_id, barrier) = (st.clone(), se_id.clone(), barrier.clone());
        handles.push(tokio::spawn(async move {
            let holder = format!("node-{i}/session");
            barrier.wait().await;
            st.acquire_se_lease(&se_id, &holder, Duration::from_secs(30)).await.unwrap().map(|l| l.holder)
        }));
    }
    let mut winners = Vec::new();
    for h in handles {
        if let Some(w) = h.await.unwrap() {
            winners.push(w);
        }
    }
    for st in stores {
        st.close().await;
    }
    winners
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn se_lease_exclusivity_and_expiry() {
    on_each_backend!(|db| {
        let s = &db.store;
        let se_id = se("SE-LEASE");
        s.secure_elements().create(&sample_se("SE-LEASE")).await.unwrap();

        // Racing for a free lease (no row yet) and for an expired one: exactly one wins.
        let winners = race_for_lease(&db, &se_id, 8).await;
        assert_eq!(winners.len(), 1, "{winners:?}");
        let lease = s.leases().get(&se_id).await.unwrap().unwrap();
        assert_eq!(lease.holder, winners[0]);
        let past = s.leases().acquire_at(&se_id, &winners[0], Duration::from_millis(1), 1_000).await.unwrap();
        assert!(past.is_some(), "the holder re-acquires (and here shortens) its own lease");
        let winners2 = race_for_lease(&db, &se_id, 8).await;
        assert_eq!(winners2.len(), 1, "{winners2:?}");

        // A live lease excludes others; its holder may renew and re-acquire it.
        let other = se("SE-LEASE-2");
        s.secure_elements().create(&sample_se("SE-LEASE-2")).await.unwrap();
        let t = now_ms();
        let l = s.leases().acquire_at(&other, "node-a/1", Duration::from_secs(10), t).await.unwrap().unwrap();
        assert_eq!((l.holder.as_str(), l.acquired_at, l.expires_at), ("node-a/1", t, t + 10_000));
        assert!(s.leases().acquire_at(&other, "node-b/1", Duration::from_secs(10), t + 9_999).await.unwrap().is_none());
        let again = s.leases().acquire_at(&other, "node-a/1", Duration::from_secs(10), t + 5_000).await.unwrap().unwrap();
        assert_eq!((again.acquired_at, again.expires_at), (t, t + 15_000), "re-acquisition extends, keeps acquired_at");
        // Expiry lets another holder take it; the old holder can then neither renew nor release.
        let taken = s.leases().acquire_at(&other, "node-b/1", Duration::from_secs(10), t + 15_000).await.unwrap().unwrap();
        assert_eq!((taken.holder.as_str(), taken.acquired_at), ("node-b/1", t + 15_000));
        assert!(!s.renew_se_lease(&other, "node-a/1", Duration::from_secs(10)).await.unwrap());
        assert!(!s.release_se_lease(&other, "node-a/1").await.unwrap());
        assert!(s.renew_se_lease(&other, "node-b/1", Duration::from_secs(10)).await.unwrap());
        assert!(s.release_se_lease(&other, "node-b/1").await.unwrap());
        assert!(s.leases().get(&other).await.unwrap().is_none());
        assert!(s.acquire_se_lease(&other, "node-a/2", Duration::from_secs(10)).await.unwrap().is_some(), "free after release");
        assert_eq!(s.acquire_se_lease(&other, "x", Duration::ZERO).await.unwrap_err().code(), "store.invalid");
    });
}

#[test]
fn audit_log_is_append_only_in_code() {
    // No UPDATE or DELETE statement on audit_log anywhere in the server's sources.
    fn walk(dir: &std::path::Path, out: &mut Vec<(String, String)>) {
        for e in std::fs::read_dir(dir).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                walk(&p, out);
            } else if p.extension().is_some_and(|x| x == "rs") {
                out.push((p.display().to_string(), std::fs::read_to_string(&p).unwrap().to_ascii_uppercase()));
            }
        }
    }
    let mut files = Vec::new();
    walk(&std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("src"), &mut files);
    assert!(files.len() > 5);
    for (path, text) in files {
        let squashed: String = text.split_whitespace().collect::<Vec<_>>().join(" ");
        for bad in ["UPDATE AUDIT_LOG", "DELETE FROM AUDIT_LOG", "TRUNCATE AUDIT_LOG"] {
            assert!(!squashed.contains(bad), "{path} contains {bad}");
        }
    }
}
