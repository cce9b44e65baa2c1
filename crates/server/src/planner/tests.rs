//! Unit tests of the pure parts: serde of the view and operations, programs built for a view,
//! error codes. The planner against a card is in `tests/planner_*.rs`.

use super::program::{self, GpCmd, Instr, KeySource};
use super::*;
use tsm_gp::crypto::KeyAlg;
use tsm_gp::gp::lifecycle::{AppLifeCycle, CardLifeCycle, ElfLifeCycle, SdLifeCycle};
use tsm_gp::gp::{Aid, LifeCycle, Privilege, Privileges, RegistryEntry};
use tsm_gp::profile::CardProfile;
use tsm_gp::scp::Scp;
use tsm_gp::StatusWord;

fn aid(s: &str) -> Aid {
    s.parse().unwrap()
}

fn view(scp: Scp) -> CardView {
    let mut v = CardView::first_contact("se-1", CardProfile::builtin("uicc").unwrap());
    v.scp = scp;
    v
}

fn lf() -> LoadFileSpec {
    LoadFileSpec { aid: aid("D0D1D2D3D4D501"), load_file: vec![0xC4; 600], hash: vec![], load_params: vec![], modules: vec![aid("D0D1D2D3D4D50101")] }
}

fn deploy(n: usize) -> Deploy {
    let install = (0..n)
        .map(|i| InstallSpec {
            module: aid("D0D1D2D3D4D50101"),
            instance: Aid::new(&[0xD0, 0xD1, 0xD2, 0xD3, 0xD4, 0xD5, 0x01, 0x01, i as u8]).unwrap(),
            privileges: Privileges::NONE,
            c9: vec![],
            nv_quota: None,
            volatile_quota: None,
        })
        .collect();
    Deploy { load_file: lf(), ssd: None, sd: None, install, personalization: vec![], make_selectable: true }
}

fn instrs(v: &CardView, op: &Operation, opts: &PlanOptions) -> Vec<Instr> {
    program::build(v, op, opts).unwrap().instrs.into_iter().map(|p| p.instr).collect()
}

#[test]
fn card_view_round_trips_through_json_with_its_registry() {
    let mut v = view(Scp::Scp03 { i: 0x70 });
    v.kdd = Some(vec![1; 10]);
    v.sequence_counter = Some(0x1234);
    let mut isd = RegistryEntry::new(Aid::GP_ISD, LifeCycle::Card(CardLifeCycle::SECURED));
    isd.privileges = Some(Privileges::from_bits(0x9E_FC80));
    // An SD listed without privileges (legacy answers may omit them) keeps its kind.
    let sd = RegistryEntry::new(aid("A0000005591010FFFFFFFF8900000100"), LifeCycle::SecurityDomain(SdLifeCycle::PERSONALIZED));
    let mut app = RegistryEntry::new(aid("D0D1D2D3D4D5010110"), LifeCycle::Application(AppLifeCycle(0x87)));
    app.elf_aid = Some(aid("D0D1D2D3D4D501"));
    app.associated_sd = Some(sd.aid);
    let mut elf = RegistryEntry::new(aid("D0D1D2D3D4D501"), LifeCycle::LoadFile(ElfLifeCycle::LOADED));
    elf.modules = vec![aid("D0D1D2D3D4D50101")];
    elf.version = Some(vec![1, 0]);
    v.registry = Some(vec![isd, sd, app, elf]);
    let json = serde_json::to_string(&v).unwrap();
    let back: CardView = serde_json::from_str(&json).unwrap();
    assert_eq!(back, v);
    let mut none = v.clone();
    none.registry = None;
    none.kdd = None;
    assert_eq!(serde_json::from_str::<CardView>(&serde_json::to_string(&none).unwrap()).unwrap(), none);
}

#[test]
fn operations_round_trip_through_json() {
    let keys = KeysetRef { id: "k".into(), kvn: 0x30, alg: KeyAlg::Aes128 };
    let mut d = deploy(2);
    d.ssd = Some(SsdSpec {
        aid: aid("A0000005591010FFFFFFFF8900000100"),
        elf: SsdSpec::GP_SD_ELF,
        module: SsdSpec::GP_SD_MODULE,
        privileges: [Privilege::SecurityDomain, Privilege::AuthorizedManagement].into_iter().collect(),
        c9: vec![0x81, 0x02, 0x03, 0x70],
        nv_quota: Some(1000),
        volatile_quota: None,
        keys: keys.clone(),
        initial_keys: None,
    });
    d.personalization = vec![PersoScript { instance: d.install[0].instance, blocks: vec![PersoBlock { data: vec![1, 1, 1, 9], encrypt: true }], ber_tlv: false }];
    for op in [
        Operation::Deploy(Box::new(d)),
        Operation::Suspend { instance: aid("D0D1D2D3D4D5010110") },
        Operation::Resume { instance: aid("D0D1D2D3D4D5010110") },
        Operation::Terminate { instance: aid("D0D1D2D3D4D5010110"), elf: Some(aid("D0D1D2D3D4D501")), delete_ssd: false },
        Operation::Resync,
        Operation::RotateKeys { sd: Aid::GP_ISD, kvn: 0, new_keys: keys.clone(), replace: true },
    ] {
        let json = serde_json::to_string(&op).unwrap();
        assert_eq!(serde_json::from_str::<Operation>(&json).unwrap(), op, "{json}");
    }
}

#[test]
fn the_counter_is_read_only_when_it_may_be_stale_and_the_challenge_predictable() {
    let reads = |v: &CardView, opts: &PlanOptions| instrs(v, &Operation::Resync, opts).iter().filter(|i| matches!(i, Instr::ReadCounter { .. })).count();
    let d = PlanOptions::default();
    let naive = PlanOptions { one_apdu_per_round_trip: true, ..Default::default() };
    for (scp, predictable) in [(Scp::Scp03 { i: 0x70 }, true), (Scp::Scp03 { i: 0x60 }, false), (Scp::Scp02 { i: 0x55 }, true), (Scp::Scp02 { i: 0x15 }, false)] {
        let mut v = view(scp);
        assert_eq!(reads(&v, &d), usize::from(predictable), "{scp} first contact");
        v.sequence_counter = Some(5);
        assert_eq!(reads(&v, &d), usize::from(predictable), "{scp} counter not current");
        v.counter_is_current = true;
        assert_eq!(reads(&v, &d), 0, "{scp} counter current");
        v.counter_is_current = false;
        assert_eq!(reads(&v, &naive), 0, "{scp} naive: never");
        let open = instrs(&v, &Operation::Resync, &d);
        assert!(matches!(open.last(), Some(Instr::Status { scope: 0x10, .. })));
        assert!(open.iter().any(|i| matches!(i, Instr::Open { keys: KeySource::Isd { kvn: 0 }, .. })));
    }
    assert!(program::build(&view(Scp::Scp02 { i: 0x11 }), &Operation::Resync, &d).is_err(), "implicit initiation");
}

#[test]
fn load_only_when_the_view_lacks_the_load_file() {
    let d = PlanOptions::default();
    let op = Operation::Deploy(Box::new(deploy(2)));
    let mut v = view(Scp::Scp03 { i: 0x70 });
    let loads = |v: &CardView| instrs(v, &op, &d).iter().filter(|i| matches!(i, Instr::Cmd { cmd: GpCmd::Load { .. } })).count();
    // Unknown registry: loaded (a card that has it refuses INSTALL [for load]; see the tests).
    assert_eq!(loads(&v), 600usize.div_ceil(v.profile.max_block));
    v.registry = Some(vec![RegistryEntry::new(aid("D0D1D2D3D4D501"), LifeCycle::LoadFile(ElfLifeCycle::LOADED))]);
    assert_eq!(loads(&v), 0);
    // The same AID as an application is not the load file.
    v.registry = Some(vec![RegistryEntry::new(aid("D0D1D2D3D4D501"), LifeCycle::Application(AppLifeCycle::SELECTABLE))]);
    assert!(loads(&v) > 0);
    assert!(program::load_blocks(257 * 10, 10).is_err());
    assert_eq!(program::load_blocks(256 * 10, 10).unwrap(), 256);
    let p = Planner::new(view(Scp::Scp03 { i: 0x70 }), op, d).unwrap();
    let pr = p.progress();
    assert_eq!((pr.steps_done, pr.round_trips, pr.bytes_loaded, pr.bytes_total), (0, 0, 0, 600));
    assert_eq!(pr.steps_total, 4, "channel, load, two instances");
}

#[test]
fn ssd_keys_provisioned_or_rotated() {
    let keys = KeysetRef { id: "k".into(), kvn: 0x30, alg: KeyAlg::Aes128 };
    let factory = KeysetRef { id: "f".into(), kvn: 0xFF, alg: KeyAlg::Aes128 };
    let mut d = deploy(1);
    let ssd = |initial| SsdSpec {
        aid: aid("A0000005591010FFFFFFFF8900000100"),
        elf: SsdSpec::GP_SD_ELF,
        module: SsdSpec::GP_SD_MODULE,
        privileges: Privileges::NONE,
        c9: vec![],
        nv_quota: None,
        volatile_quota: None,
        keys: keys.clone(),
        initial_keys: initial,
    };
    let v = view(Scp::Scp03 { i: 0x70 });
    let cmds = |d: &Deploy| -> Vec<Instr> { instrs(&v, &Operation::Deploy(Box::new(d.clone())), &PlanOptions::default()) };
    d.ssd = Some(ssd(None));
    let c = cmds(&d);
    assert!(c.iter().any(|i| matches!(i, Instr::Cmd { cmd: GpCmd::StoreKeys { keyset } } if keyset.kvn == 0x30)));
    assert!(!c.iter().any(|i| matches!(i, Instr::Cmd { cmd: GpCmd::PutKey { .. } })), "no second channel");
    assert!(c.iter().any(|i| matches!(i, Instr::Cmd { cmd: GpCmd::Extradite { .. } })), "instances go to the SSD");
    d.ssd = Some(ssd(Some(factory)));
    let c = cmds(&d);
    assert!(!c.iter().any(|i| matches!(i, Instr::Cmd { cmd: GpCmd::StoreKeys { .. } })), "the card's initial keys");
    assert!(c.iter().any(|i| matches!(i, Instr::Cmd { cmd: GpCmd::PutKey { replace: 0, .. } })));
    assert!(c.iter().any(|i| matches!(i, Instr::Open { keys: KeySource::Sd { kvn: 0xFF }, .. })));
    // Creating one SSD and naming another is a contradiction.
    d.sd = Some(Aid::GP_ISD);
    assert!(program::build(&v, &Operation::Deploy(Box::new(d)), &PlanOptions::default()).is_err());
}

#[test]
fn error_codes_are_stable_and_distinct() {
    let errors = [
        PlanError::card("INSTALL", StatusWord::CONDITIONS_NOT_SATISFIED),
        PlanError::card("LOAD", StatusWord::NOT_ENOUGH_MEMORY),
        PlanError::AuthFailed { sd: "ISD".into(), detail: "6300".into() },
        PlanError::StaleCounter { sd: "ISD".into(), detail: "x".into() },
        PlanError::SecureChannel { command: "x".into(), source: tsm_gp::scp::ScpError::Closed },
        PlanError::BadResponse { command: "x".into(), detail: "x".into() },
        PlanError::KcvMismatch { command: "PUT KEY".into(), key_id: 1, expected: "A".into(), received: "B".into() },
        PlanError::BadReport("x".into()),
        PlanError::Keys(KeyError::NotFound("x".into())),
        PlanError::InvalidOperation("x".into()),
        PlanError::Build { command: "x".into(), detail: "x".into() },
        PlanError::Misuse("x".into()),
    ];
    let codes: std::collections::BTreeSet<&str> = errors.iter().map(PlanError::code).collect();
    assert_eq!(codes.len(), errors.len());
    assert!(codes.iter().all(|c| c.starts_with("planner.")));
    assert_eq!(errors[1].code(), "planner.not_enough_memory");
    assert_eq!(errors[1].status_word(), Some(StatusWord::NOT_ENOUGH_MEMORY));
    let r = errors[0].to_record();
    assert_eq!((r.code.as_str(), r.sw), ("planner.card_status", Some(0x6985)));
    assert!(r.message.contains("INSTALL"));
}
