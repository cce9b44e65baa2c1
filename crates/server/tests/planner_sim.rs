//! The planner against the simulated SE in process, for every built-in profile and each of its
//! secure channels: a service's life (resynchronization, deployment with an SSD, a second
//! instance, suspend, resume, terminate) checked against the card's own state, round trips,
//! key rotation in an SSD's channel, persistence between batches, the naive baseline.

mod planner_support;
use planner_support::*;
use tsm_gp::gp::{Aid, LifeCycle};
use tsm_gp::scp::Scp;
use tsm_se::INITIAL_KEY_VERSION;
use tsm_server::planner::{CardView, Operation, Outcome, PlanOptions};

/// Round trips a plan takes once the TSM's counter is current: one when the card challenge
/// is predictable (SCP03 i bit 10, SCP02 i b7), else two (INITIALIZE UPDATE first).
fn expected_rt(scp: Scp) -> u32 {
    match scp {
        Scp::Scp03 { i } if i & 0x10 != 0 => 1,
        Scp::Scp02 { i } if i & 0x40 != 0 => 1,
        _ => 2,
    }
}

fn ins_sent(run: &Run, ins: u8) -> usize {
    run.log.iter().flatten().filter(|(c, _)| c.get(1) == Some(&ins)).count()
}

fn generic_dgis(card: &tsm_se::SimCard, app: &Aid) -> serde_json::Value {
    card.state().app(app).unwrap().model.as_ref().unwrap().state["dgis"].clone()
}

/// The outcome's view of the registry is the card's.
fn assert_view_matches(card: &tsm_se::SimCard, o: &Outcome, what: &str) {
    assert_eq!(view_registry(o.card.registry.as_ref().unwrap()), card_registry(card), "{what}");
}

#[test]
fn service_life_on_every_profile() {
    for (profile, scp) in combos() {
        let tag = format!("{profile} {scp}");
        let mut card = card(profile, scp, 11);
        let mut keys = TestKeys::new(scp, 3);
        let rt = expected_rt(scp);

        // First contact: the registry and the counter are unknown. Resync reads both.
        let view = first_contact(&card, scp);
        let (r, run, _) = plan(&mut card, view, Operation::Resync, &mut keys, PlanOptions::default());
        let o = r.unwrap_or_else(|e| panic!("{tag}: resync: {e}"));
        assert_eq!(run.round_trips, 2, "{tag}: first contact reads the counter (or INITIALIZE UPDATE) first");
        assert_eq!(run.external_authenticates, 1);
        assert!(o.card.counter_is_current);
        assert_eq!(o.card.sequence_counter, Some(isd_counter(&card)), "{tag}: the plan knows the card's counter");
        assert_view_matches(&card, &o, &tag);
        let isd = o.card.registry.as_ref().unwrap().iter().find(|e| matches!(e.lifecycle, LifeCycle::Card(_))).unwrap();
        assert_eq!(isd.aid, ISD);

        // Deploy: SSD with its keys, load, two instances, one personalized, all selectable.
        let ssd_keys = keys.new_set("ssd", 0x30, 1);
        let mut d = deploy(hello(), Some(ssd(ssd_keys, None, scp)), 2, false);
        d.personalization = vec![perso(d.install[0].instance)];
        let inst: Vec<Aid> = d.install.iter().map(|i| i.instance).collect();
        let (r, run, _) = plan(&mut card, o.card.clone(), Operation::Deploy(Box::new(d)), &mut keys, PlanOptions::default());
        let o = r.unwrap_or_else(|e| panic!("{tag}: deploy: {e}\n{:#?}", run.log));
        assert_eq!(run.round_trips, rt, "{tag}: deploy round trips");
        assert!(!o.load_skipped);
        assert_view_matches(&card, &o, &format!("{tag}: after deploy"));
        for a in &inst {
            assert_eq!(card.state().app(a).unwrap().life_cycle, 0x07, "{tag}: {a} selectable");
        }
        // The clear DGI as sent, the secret one decrypted by the card (b16 DGIs under the DEK).
        let dgis = generic_dgis(&card, &inst[0]);
        assert_eq!(dgis["0101"], "CAFEBABE", "{tag}");
        assert_eq!(dgis["8001"], "5A".repeat(16), "{tag}");
        // The SSD holds the new key set (the initial one retired) and its quota.
        let ssd_rec = card.state().app(&aid(SSD_AID)).unwrap();
        let dom = ssd_rec.domain.as_ref().unwrap();
        let kvns: Vec<u8> = dom.keys.iter().map(|k| k.version).collect();
        assert_eq!(kvns, vec![0x30; 3], "{tag}");
        assert_eq!(dom.keys[0].kcv, keys.new["ssd"][0].kcv().to_vec(), "{tag}");
        assert_eq!(dom.nv_quota, Some(64 * 1024));
        keys.assign(aid(SSD_AID), 0x30, "ssd");

        // A second deployment of the same load file: no LOAD.
        let mut d2 = deploy(hello(), None, 3, false);
        d2.install.drain(..2);
        let third = d2.install[0].instance;
        let (r, run, _) = plan(&mut card, o.card.clone(), Operation::Deploy(Box::new(d2)), &mut keys, PlanOptions::default());
        let o = r.unwrap_or_else(|e| panic!("{tag}: second deploy: {e}"));
        assert!(o.load_skipped, "{tag}");
        assert_eq!(ins_sent(&run, 0xE8), 0, "{tag}: no LOAD");
        assert_eq!(run.round_trips, rt);
        assert_view_matches(&card, &o, &format!("{tag}: after the second deploy"));

        // Suspend, resume.
        let (r, run, _) = plan(&mut card, o.card.clone(), Operation::Suspend { instance: inst[1] }, &mut keys, PlanOptions::default());
        let o = r.unwrap_or_else(|e| panic!("{tag}: suspend: {e}"));
        assert_eq!(run.round_trips, rt);
        assert_eq!(card.state().app(&inst[1]).unwrap().life_cycle, 0x87, "{tag}: locked");
        assert_view_matches(&card, &o, &format!("{tag}: after suspend"));
        let (r, _, _) = plan(&mut card, o.card.clone(), Operation::Resume { instance: inst[1] }, &mut keys, PlanOptions::default());
        let o = r.unwrap_or_else(|e| panic!("{tag}: resume: {e}"));
        assert_eq!(card.state().app(&inst[1]).unwrap().life_cycle, 0x07, "{tag}: unlocked");
        assert_view_matches(&card, &o, &format!("{tag}: after resume"));

        // Terminate one instance (the load file stays: others use it), then the others with the
        // load file; the SSD goes with the last one.
        let elf = hello().aid;
        let (r, _, _) = plan(&mut card, o.card.clone(), Operation::Terminate { instance: inst[0], elf: Some(elf), delete_ssd: false }, &mut keys, PlanOptions::default());
        let o = r.unwrap_or_else(|e| panic!("{tag}: terminate: {e}"));
        assert!(card.state().app(&inst[0]).is_none());
        assert!(card.state().load_file(&elf).is_some(), "{tag}: the load file is still used");
        let (r, _, _) = plan(&mut card, o.card.clone(), Operation::Terminate { instance: inst[1], elf: None, delete_ssd: false }, &mut keys, PlanOptions::default());
        let o = r.unwrap();
        let (r, run, _) = plan(&mut card, o.card.clone(), Operation::Terminate { instance: third, elf: Some(elf), delete_ssd: false }, &mut keys, PlanOptions::default());
        let o = r.unwrap_or_else(|e| panic!("{tag}: last terminate: {e}\n{:#?}", run.log));
        assert!(card.state().load_file(&elf).is_none(), "{tag}: load file deleted with its last instance");
        assert_view_matches(&card, &o, &format!("{tag}: after terminate"));

        // A fresh read of the registry agrees with the view the plans kept up to date.
        let (r, run, _) = plan(&mut card, o.card.clone(), Operation::Resync, &mut keys, PlanOptions::default());
        let fresh = r.unwrap();
        assert_eq!(run.round_trips, rt);
        assert_eq!(view_registry(fresh.card.registry.as_ref().unwrap()), view_registry(o.card.registry.as_ref().unwrap()), "{tag}");
        assert_eq!(isd_auth_failures(&card), 0, "{tag}: no failed authentication in the whole life");
    }
}

/// Terminate with `delete_ssd`: instance, load file and the SSD the registry associates it with.
#[test]
fn terminate_deletes_instance_load_file_and_ssd() {
    for (profile, scp) in combos() {
        let tag = format!("{profile} {scp}");
        let mut card = card(profile, scp, 5);
        let mut keys = TestKeys::new(scp, 9);
        let view = known_view(&mut card, scp, &mut keys);
        let ks = keys.new_set("ssd", 0x30, 4);
        let d = deploy(hello(), Some(ssd(ks, None, scp)), 1, false);
        let inst = d.install[0].instance;
        let (r, _, _) = plan(&mut card, view, Operation::Deploy(Box::new(d)), &mut keys, PlanOptions::default());
        let o = r.unwrap_or_else(|e| panic!("{tag}: {e}"));
        // The service belongs to the SSD: its load file and (extradited) instance.
        assert_eq!(card.state().load_file(&hello().aid).unwrap().associated_sd, aid(SSD_AID));
        assert_eq!(card.state().app(&inst).unwrap().associated_sd, aid(SSD_AID));
        assert_view_matches(&card, &o, &tag);
        let op = Operation::Terminate { instance: inst, elf: Some(hello().aid), delete_ssd: true };
        let (r, run, _) = plan(&mut card, o.card.clone(), op, &mut keys, PlanOptions::default());
        let o = r.unwrap_or_else(|e| panic!("{tag}: {e}\n{:#?}", run.log));
        assert!(card.state().app(&aid(SSD_AID)).is_none(), "{tag}: SSD deleted");
        assert!(card.state().load_file(&hello().aid).is_none());
        assert!(card.state().app(&inst).is_none());
        assert_eq!(run.round_trips, expected_rt(scp));
        assert_view_matches(&card, &o, &tag);
    }
}

/// An SSD that starts with the card's initial key set (FF) gets its own keys by PUT KEY in its
/// own secure channel, in the same plan; afterwards only the new keys open it.
#[test]
fn ssd_initial_keys_rotated_in_its_own_channel() {
    for (profile, scp) in combos() {
        for known_counter in [false, true] {
            let tag = format!("{profile} {scp} new SSD counter known: {known_counter}");
            let mut card = card(profile, scp, 21);
            let mut keys = TestKeys::new(scp, 4);
            let view = known_view(&mut card, scp, &mut keys);
            let ks = keys.new_set("ssd", 0x30, 7);
            let initial = tsm_server::planner::KeysetRef { id: "factory".into(), kvn: INITIAL_KEY_VERSION, alg: ks.alg };
            let d = deploy(hello(), Some(ssd(ks, Some(initial), scp)), 1, false);
            let opts = PlanOptions { new_sd_sequence_counter: known_counter.then_some(0), ..Default::default() };
            let (r, run, _) = plan(&mut card, view, Operation::Deploy(Box::new(d)), &mut keys, opts);
            let o = r.unwrap_or_else(|e| panic!("{tag}: {e}\n{:#?}", run.log));
            // ISD part, then the SSD's channel: its counter read first unless known.
            let predictable = expected_rt(scp) == 1;
            let want = match (predictable, known_counter) {
                (true, true) => 1,
                (true, false) => 2,
                (false, _) => 3,
            };
            assert_eq!(run.round_trips, want, "{tag}");
            assert_eq!(ins_sent(&run, 0xD8), 1, "{tag}: one PUT KEY");
            let dom = card.state().app(&aid(SSD_AID)).unwrap().domain.clone().unwrap();
            assert_eq!(dom.keys.iter().map(|k| k.version).collect::<Vec<_>>(), vec![0x30; 3], "{tag}: FF retired");
            assert_eq!(view_registry(o.card.registry.as_ref().unwrap()), card_registry(&card), "{tag}");

            // Rotate again, in the SSD's channel, with the keys of the previous plan.
            keys.assign(aid(SSD_AID), 0x30, "ssd");
            let ks2 = keys.new_set("ssd2", 0x31, 8);
            let op = Operation::RotateKeys { sd: aid(SSD_AID), kvn: 0x30, new_keys: ks2, replace: true };
            let (r, run, _) = plan(&mut card, o.card.clone(), op, &mut keys, PlanOptions::default());
            r.unwrap_or_else(|e| panic!("{tag}: rotate: {e}\n{:#?}", run.log));
            let dom = card.state().app(&aid(SSD_AID)).unwrap().domain.clone().unwrap();
            assert_eq!(dom.keys.iter().map(|k| (k.version, k.kcv.clone())).collect::<Vec<_>>(), (0..3).map(|i| (0x31, keys.new["ssd2"][i].kcv().to_vec())).collect::<Vec<_>>());
        }
    }
}

/// The ISD's own keys rotated (replace the factory set FF by adding 01), then used.
#[test]
fn isd_key_rotation() {
    for (profile, scp) in combos() {
        let tag = format!("{profile} {scp}");
        let mut card = card(profile, scp, 8);
        let mut keys = TestKeys::new(scp, 6);
        let ks = keys.new_set("isd1", 0x01, 3);
        let op = Operation::RotateKeys { sd: ISD, kvn: 0, new_keys: ks, replace: false };
        let view = first_contact(&card, scp);
        let (r, run, _) = plan(&mut card, view, op, &mut keys, PlanOptions::default());
        let o = r.unwrap_or_else(|e| panic!("{tag}: {e}\n{:#?}", run.log));
        keys.assign(ISD, 0x01, "isd1");
        keys.card.retain(|(a, v, _)| !(*a == ISD && *v == INITIAL_KEY_VERSION));
        let mut v = o.card.clone();
        v.key_version = 0x01;
        let (r, run, _) = plan(&mut card, v, Operation::Resync, &mut keys, PlanOptions::default());
        r.unwrap_or_else(|e| panic!("{tag}: with the new keys: {e}"));
        assert_eq!(run.round_trips, expected_rt(scp), "{tag}: the counter stayed current across the rotation");
    }
}

/// The state goes through JSON after every batch and the planner is dropped and resumed:
/// the same batches, byte for byte, and the same outcome as a run kept in memory. No key
/// material in any state.
#[test]
fn persisted_between_batches_same_outcome() {
    for (profile, scp) in combos() {
        let tag = format!("{profile} {scp}");
        type Registry = Vec<(String, String, u8, String)>;
        let runs: Vec<(Outcome, Run, Registry)> = [false, true]
            .into_iter()
            .map(|persist| {
                let mut card = card(profile, scp, 31);
                let mut keys = TestKeys::new(scp, 77);
                let ks = keys.new_set("ssd", 0x30, 2);
                let initial = tsm_server::planner::KeysetRef { id: "factory".into(), kvn: INITIAL_KEY_VERSION, alg: ks.alg };
                let d = deploy(hello(), Some(ssd(ks, Some(initial), scp)), 2, true);
                let p = tsm_server::planner::Planner::new(first_contact(&card, scp), Operation::Deploy(Box::new(d)), PlanOptions::default()).unwrap();
                let (r, run, _) = drive(&mut card, p, &mut keys, persist);
                (r.unwrap_or_else(|e| panic!("{tag}: {e}")), run, card_registry(&card))
            })
            .collect();
        let (a, b) = (&runs[0], &runs[1]);
        assert_eq!(a.1.log, b.1.log, "{tag}: identical exchanges");
        assert_eq!(a.0, b.0, "{tag}: identical outcome");
        assert_eq!(a.2, b.2);
        assert!(b.1.states.len() >= 2, "{tag}");
        let secrets = [tsm_gp::hex::encode(&tsm_se::GP_TEST_KEY)];
        for s in &b.1.states {
            for k in &secrets {
                assert!(!s.contains(k.as_str()), "{tag}: key material in the state");
            }
        }
    }
}

/// Baseline: one APDU per round trip. Same result on the card, many more round trips.
#[test]
fn naive_baseline_one_apdu_per_round_trip() {
    for (profile, scp) in combos() {
        let tag = format!("{profile} {scp}");
        let mut results = Vec::new();
        for naive in [false, true] {
            let mut card = card(profile, scp, 41);
            let mut keys = TestKeys::new(scp, 1);
            let mut view = first_contact(&card, scp);
            view.sequence_counter = Some(0);
            view.counter_is_current = true;
            let d = deploy(hello(), None, 2, true);
            let opts = PlanOptions { one_apdu_per_round_trip: naive, ..Default::default() };
            let (r, run, p) = plan(&mut card, view, Operation::Deploy(Box::new(d)), &mut keys, opts);
            let o = r.unwrap_or_else(|e| panic!("{tag} naive={naive}: {e}"));
            if naive {
                assert_eq!(run.round_trips as usize, run.apdus, "{tag}");
                assert!(run.log.iter().all(|b| b.len() == 1));
            } else {
                assert_eq!(run.round_trips, expected_rt(scp), "{tag}");
            }
            assert_eq!(p.progress().round_trips, run.round_trips);
            assert_eq!(o.round_trips, run.round_trips);
            assert_eq!(o.apdus as usize, run.apdus);
            let pr = p.progress();
            assert_eq!(pr.steps_done, pr.steps_total, "{tag}");
            assert_eq!(pr.bytes_loaded, pr.bytes_total);
            assert_eq!(pr.bytes_total as usize, hello().load_file.len());
            results.push((card_registry(&card), run.apdus));
        }
        assert_eq!(results[0].0, results[1].0, "{tag}: same card content");
        eprintln!("{tag}: deploy in {} round trip(s) batched, {} naive", expected_rt(scp), results[1].1);
    }
}

/// GET STATUS with many entries pages (6310); every page is read, with R-MAC levels too.
#[test]
fn resync_reads_every_page() {
    for (profile, scp) in combos() {
        let tag = format!("{profile} {scp}");
        let mut card = card_with(profile, scp, 51, |p, _| p.memory = 4 * 1024 * 1024);
        let mut keys = TestKeys::new(scp, 5);
        let mut view: CardView = first_contact(&card, scp);
        view.sequence_counter = Some(0);
        view.counter_is_current = true;
        let d = deploy(hello(), None, 14, false);
        let (r, _, _) = plan(&mut card, view, Operation::Deploy(Box::new(d)), &mut keys, PlanOptions::default());
        let o = r.unwrap_or_else(|e| panic!("{tag}: {e}"));
        let mut v = o.card.clone();
        v.registry = None;
        let (r, run, _) = plan(&mut card, v, Operation::Resync, &mut keys, PlanOptions::default());
        let fresh = r.unwrap_or_else(|e| panic!("{tag}: {e}"));
        let pages = run.log.iter().flatten().filter(|(_, r)| r.ends_with(&[0x63, 0x10])).count();
        assert!(pages >= 1, "{tag}: the apps did not page");
        assert_eq!(run.round_trips, expected_rt(scp) + pages as u32, "{tag}: one round trip per extra page");
        assert_eq!(view_registry(fresh.card.registry.as_ref().unwrap()), card_registry(&card), "{tag}");
    }
}

/// Card quirks: the planner follows the profile's (legacy GET STATUS, SCP03 counter only with
/// data); a card whose legacy-only GET STATUS the view does not know costs one fallback round
/// trip.
#[test]
fn quirks_followed() {
    for (profile, scp) in combos() {
        let tag = format!("{profile} {scp}");
        let quirky = |p: &mut tsm_gp::profile::CardProfile, _: &mut tsm_se::CardConfig| {
            p.quirks.legacy_get_status_only = true;
            p.quirks.scp03_counter_only_with_data = true;
        };
        let mut card = card_with(profile, scp, 81, quirky);
        let mut keys = TestKeys::new(scp, 12);
        let view = first_contact(&card, scp);
        assert!(view.profile.quirks.legacy_get_status_only);
        let (r, run, _) = plan(&mut card, view, Operation::Resync, &mut keys, PlanOptions::default());
        let o = r.unwrap_or_else(|e| panic!("{tag}: {e}"));
        assert_eq!(run.round_trips, 2, "{tag}");
        assert!(!run.log.iter().flatten().any(|(_, r)| r.ends_with(&[0x6A, 0x86])), "{tag}: no tagged GET STATUS sent");
        let d = deploy(hello(), None, 2, true);
        let (r, run, _) = plan(&mut card, o.card.clone(), Operation::Deploy(Box::new(d)), &mut keys, PlanOptions::default());
        let o = r.unwrap_or_else(|e| panic!("{tag}: {e}\n{:#?}", run.log));
        assert_eq!(run.round_trips, expected_rt(scp), "{tag}");
        // Legacy GET STATUS has no associated SD: compare kinds, AIDs and life cycles.
        let strip = |v: Vec<(String, String, u8, String)>| v.into_iter().map(|(k, a, l, _)| (k, a, l)).collect::<Vec<_>>();
        assert_eq!(strip(view_registry(o.card.registry.as_ref().unwrap())), strip(card_registry(&card)), "{tag}");

        // The view does not know the quirk: the tagged GET STATUS is refused once, then legacy.
        let mut blind = o.card.clone();
        blind.profile.quirks.legacy_get_status_only = false;
        let (r, run, _) = plan(&mut card, blind, Operation::Resync, &mut keys, PlanOptions::default());
        let o = r.unwrap_or_else(|e| panic!("{tag}: {e}"));
        assert_eq!(run.round_trips, expected_rt(scp) + 1, "{tag}: one fallback round trip");
        assert!(o.card.profile.quirks.legacy_get_status_only, "{tag}: the quirk is learned for the next plans");
    }
}
