//! Unit tests: the stripped plan state holds neither the load file nor the personalization
//! data, and comes back whole.

use super::state::{rehydrate_plan, strip_plan};
use crate::domain::PersoBlock;
use crate::planner::{CardView, Deploy, InstallSpec, LoadFileSpec, Operation, PersoScript, PlanOptions, PlanState, Planner};
use tsm_gp::gp::{Aid, Privileges};
use tsm_gp::profile::CardProfile;

fn deploy() -> (Deploy, Vec<u8>, Vec<u8>) {
    let cap = std::fs::read(tsm_gp::testdata_dir().join("vectors/cap/kaoh_helloworld.cap")).unwrap();
    let lf = LoadFileSpec::from_cap(&tsm_gp::cap::CapFile::parse(&cap).unwrap()).unwrap();
    let module = lf.modules[0];
    let inst = Aid::new(&[0xD0, 0xD1, 0xD2, 0xD3, 0xD4, 0xD5, 0x01, 0x77]).unwrap();
    let secret = tsm_gp::hex::decode("800110A5A5A5A5A5A5A5A5A5A5A5A5A5A5A5A5").unwrap();
    let clear = tsm_gp::hex::decode("01010447114711").unwrap();
    let perso = PersoScript { instance: inst, blocks: vec![PersoBlock { data: clear.clone(), encrypt: false }, PersoBlock { data: secret.clone(), encrypt: true }], ber_tlv: false };
    let load_file = lf.load_file.clone();
    let d = Deploy {
        load_file: lf,
        ssd: None,
        sd: None,
        install: vec![InstallSpec { module, instance: inst, privileges: Privileges::NONE, c9: Vec::new(), nv_quota: None, volatile_quota: None }],
        personalization: vec![perso],
        make_selectable: true,
    };
    (d, load_file, secret)
}

#[test]
fn stripped_plan_has_no_inputs_and_comes_back_whole() {
    let (d, load_file, secret) = deploy();
    let blocks = d.personalization[0].blocks.clone();
    let view = CardView::first_contact("CIN-1", CardProfile::builtin("ese").unwrap());
    let p = Planner::new(view, Operation::Deploy(Box::new(d)), PlanOptions::default()).unwrap();
    let full = serde_json::to_value(p.state()).unwrap();
    let stripped = strip_plan(full.clone());
    let text = stripped.to_string();
    assert!(!text.contains(&tsm_gp::hex::encode(&secret)), "personalization secret in the stripped state");
    assert!(!text.contains(&tsm_gp::hex::encode(&secret[3..])), "personalization secret value in the stripped state");
    assert!(!text.contains(&tsm_gp::hex::encode(&load_file[..64])), "load file bytes in the stripped state");
    let back = rehydrate_plan(stripped, &load_file, &[blocks]).unwrap();
    let a: PlanState = serde_json::from_value(full).unwrap();
    let b: PlanState = serde_json::from_value(back).unwrap();
    assert_eq!(a, b);
}

#[test]
fn rehydration_refuses_other_shapes() {
    let (d, load_file, _) = deploy();
    let view = CardView::first_contact("CIN-1", CardProfile::builtin("ese").unwrap());
    let p = Planner::new(view, Operation::Deploy(Box::new(d)), PlanOptions::default()).unwrap();
    let stripped = strip_plan(serde_json::to_value(p.state()).unwrap());
    assert!(rehydrate_plan(stripped.clone(), &load_file, &[]).is_err(), "a script missing");
    assert!(rehydrate_plan(stripped, &load_file, &[vec![]]).is_err(), "blocks missing");
}
