//! The planner when things go wrong, against the simulated SE: stale counters, wrong keys, no
//! memory, a registry view the card contradicts, tampered answers, reports that do not fit the
//! batch, misuse.

mod planner_support;
use planner_support::*;
use tsm_gp::scp::Scp;
use tsm_server::planner::{Next, Operation, PlanOptions, Planner};

fn predictable(scp: Scp) -> bool {
    match scp {
        Scp::Scp03 { i } => i & 0x10 != 0,
        Scp::Scp02 { i } => i & 0x40 != 0,
    }
}

/// Another party opened a session since the TSM's last one, and the TSM knows its counter may
/// be stale: the first batch reads C1, so the one EXTERNAL AUTHENTICATE sent succeeds.
#[test]
fn stale_counter_is_read_first_never_a_failed_authentication() {
    for (profile, scp) in combos() {
        let tag = format!("{profile} {scp}");
        let mut card = card(profile, scp, 61);
        let mut keys = TestKeys::new(scp, 2);
        let mut view = known_view(&mut card, scp, &mut keys);
        other_party_session(&mut card, scp);
        view.counter_is_current = false;
        let d = deploy(hello(), None, 1, true);
        let (r, run, _) = plan(&mut card, view, Operation::Deploy(Box::new(d)), &mut keys, PlanOptions::default());
        let o = r.unwrap_or_else(|e| panic!("{tag}: {e}"));
        assert_eq!(run.round_trips, 2, "{tag}");
        assert_eq!(run.external_authenticates, 1, "{tag}: one EXTERNAL AUTHENTICATE");
        assert_eq!(isd_auth_failures(&card), 0, "{tag}: the card counted no failure");
        if predictable(scp) {
            assert_eq!(run.log[0].len(), 2, "{tag}: SELECT + GET DATA C1");
            assert_eq!(&run.log[0][1].0[..4], &[0x80, 0xCA, 0x00, 0xC1]);
        }
        assert_eq!(o.card.sequence_counter, Some(isd_counter(&card)));
        assert!(o.card.counter_is_current);
    }
}

/// A view that claims a current counter when it is not (the TSM was not told of another
/// session): the predicted handshake costs one failed EXTERNAL AUTHENTICATE, the plan ends with
/// `planner.stale_counter` and is not retried, and the view now holds the card's real counter,
/// so the next plan goes through in one round trip.
#[test]
fn counter_wrongly_believed_current() {
    for (profile, scp) in combos().into_iter().filter(|(_, s)| predictable(*s)) {
        let tag = format!("{profile} {scp}");
        let mut card = card(profile, scp, 62);
        let mut keys = TestKeys::new(scp, 3);
        let view = known_view(&mut card, scp, &mut keys);
        other_party_session(&mut card, scp);
        let (r, run, p) = plan(&mut card, view, Operation::Resync, &mut keys, PlanOptions::default());
        let e = r.expect_err(&tag);
        assert_eq!(e.code(), "planner.stale_counter", "{tag}: {e}");
        assert_eq!(run.round_trips, 1, "{tag}: not retried");
        assert_eq!(run.external_authenticates, 1);
        assert_eq!(isd_auth_failures(&card), 1);
        assert_eq!(p.state().error().map(|e| e.code.as_str()), Some("planner.stale_counter"));
        let learned = p.card().clone();
        assert!(learned.counter_is_current);
        assert_eq!(learned.sequence_counter, Some(isd_counter(&card)), "{tag}: the real counter, from INITIALIZE UPDATE");
        let (r, run, _) = plan(&mut card, learned, Operation::Resync, &mut keys, PlanOptions::default());
        r.unwrap_or_else(|e| panic!("{tag}: {e}"));
        assert_eq!(run.round_trips, 1, "{tag}");
    }
}

/// Wrong ISD keys: the plan fails with `planner.auth_failed` after at most one EXTERNAL
/// AUTHENTICATE (none when the card cryptogram is checked before it is sent), never retried.
#[test]
fn wrong_keys_fail_once() {
    for (profile, scp) in combos() {
        let tag = format!("{profile} {scp}");
        let mut card = card(profile, scp, 63);
        let mut keys = TestKeys::new(scp, 4);
        let wrong = keys.new_set("wrong", 0xFF, 99);
        keys.assign(ISD, wrong.kvn, "wrong");
        let view = first_contact(&card, scp);
        let (r, run, p) = plan(&mut card, view, Operation::Resync, &mut keys, PlanOptions::default());
        let e = r.expect_err(&tag);
        assert_eq!(e.code(), "planner.auth_failed", "{tag}: {e}");
        assert!(e.to_string().contains("not retried"));
        let ea = run.external_authenticates;
        assert!(ea <= 1, "{tag}: {ea} EXTERNAL AUTHENTICATE");
        assert_eq!(isd_auth_failures(&card), ea as u32);
        if predictable(scp) {
            // C1, then the predicted session: its EXTERNAL AUTHENTICATE went with the batch.
            assert_eq!((run.round_trips, ea), (2, 1), "{tag}");
        } else {
            // INITIALIZE UPDATE alone: the card cryptogram does not verify, nothing more is sent.
            assert_eq!((run.round_trips, ea), (1, 0), "{tag}");
        }
        assert!(p.state().error().is_some());
    }
}

#[test]
fn card_out_of_memory() {
    for (profile, scp) in combos() {
        let tag = format!("{profile} {scp}");
        // An instance asking for more than the card has.
        let mut card = card(profile, scp, 64);
        let mut keys = TestKeys::new(scp, 5);
        let mut d = deploy(hello(), None, 1, false);
        d.install[0].nv_quota = Some(card.state().profile.memory + 1);
        let view = first_contact(&card, scp);
        let (r, run, _) = plan(&mut card, view, Operation::Deploy(Box::new(d)), &mut keys, PlanOptions::default());
        let e = r.expect_err(&tag);
        assert_eq!(e.code(), "planner.not_enough_memory", "{tag}: {e}");
        assert_eq!(e.status_word().map(|s| s.0), Some(0x6A84));
        assert!(e.to_string().contains("INSTALL"), "{tag}: {e}");
        let last = run.log.last().unwrap().last().unwrap();
        assert!(last.1.ends_with(&[0x6A, 0x84]), "{tag}: the batch stopped at the failing command");
        // A card too small for the load file itself.
        let mut card = card_with(profile, scp, 65, |p, _| p.memory = 200);
        let view = first_contact(&card, scp);
        let d = deploy(hello(), None, 1, false);
        let (r, _, _) = plan(&mut card, view, Operation::Deploy(Box::new(d)), &mut keys, PlanOptions::default());
        let e = r.expect_err(&tag);
        assert_eq!(e.code(), "planner.not_enough_memory", "{tag}: {e}");
        assert!(e.to_string().contains("LOAD"), "{tag}: {e}");
    }
}

/// The view says the load file is missing, the card has it: INSTALL [for load] is refused, the
/// planner reads the load files and goes on without LOAD.
#[test]
fn stale_registry_view_is_corrected() {
    for (profile, scp) in combos() {
        let tag = format!("{profile} {scp}");
        let mut card = card(profile, scp, 66);
        let mut keys = TestKeys::new(scp, 6);
        let view = known_view(&mut card, scp, &mut keys);
        let (r, _, _) = plan(&mut card, view.clone(), Operation::Deploy(Box::new(deploy(hello(), None, 1, false))), &mut keys, PlanOptions::default());
        let o = r.unwrap();
        // The TSM lost that outcome: it still believes the card has no load file.
        let mut stale = o.card.clone();
        stale.registry = view.registry.clone();
        let mut d = deploy(hello(), None, 2, true);
        d.install.remove(0);
        d.personalization.remove(0);
        let (r, run, _) = plan(&mut card, stale, Operation::Deploy(Box::new(d)), &mut keys, PlanOptions::default());
        let o = r.unwrap_or_else(|e| panic!("{tag}: {e}\n{:#?}", run.log));
        assert!(o.resynced && o.load_skipped, "{tag}");
        let rt = if predictable(scp) { 1 } else { 2 };
        assert_eq!(run.round_trips, rt + 1, "{tag}: one round trip to resynchronize");
        assert!(run.log.iter().flatten().any(|(c, r)| c[1] == 0xE6 && c[2] == 0x02 && r.ends_with(&[0x69, 0x85])), "{tag}");
        assert!(!run.log.iter().flatten().any(|(c, _)| c[1] == 0xE8), "{tag}: no LOAD");
        assert_eq!(view_registry(o.card.registry.as_ref().unwrap()), card_registry(&card), "{tag}");
        assert_eq!(isd_auth_failures(&card), 0);
    }
}

#[test]
fn card_errors_name_the_command() {
    let scp = Scp::Scp03 { i: 0x70 };
    let mut card = card("ese", scp, 67);
    let mut keys = TestKeys::new(scp, 7);
    let view = known_view(&mut card, scp, &mut keys);
    let op = Operation::Suspend { instance: aid("D0D1D2D3D4D5010199") };
    let (r, _, p) = plan(&mut card, view, op, &mut keys, PlanOptions::default());
    let e = r.unwrap_err();
    assert_eq!(e.code(), "planner.card_status");
    assert_eq!(e.status_word().map(|s| s.0), Some(0x6A88));
    assert!(e.to_string().contains("SET STATUS lock D0D1D2D3D4D5010199"), "{e}");
    assert_eq!(p.state().error().unwrap().sw, Some(0x6A88));
    // Terminate of what is not there is nothing to do.
    let op = Operation::Terminate { instance: aid("D0D1D2D3D4D5010199"), elf: None, delete_ssd: false };
    let (r, _, _) = plan(&mut card, p.card().clone(), op, &mut keys, PlanOptions::default());
    r.unwrap();
}

/// Answers that do not fit the batch are refused and change nothing: the right answers are
/// then accepted.
#[test]
fn reports_that_do_not_fit_the_batch() {
    let scp = Scp::Scp03 { i: 0x70 };
    let mut card = card("uicc", scp, 68);
    let mut keys = TestKeys::new(scp, 8);
    let view = known_view(&mut card, scp, &mut keys);
    let mut p = Planner::new(view, Operation::Suspend { instance: aid("D0D1D2D3D4D5010199") }, PlanOptions::default()).unwrap();
    let Next::Send(batch) = p.start(&mut keys).unwrap() else { panic!() };
    assert!(p.start(&mut keys).is_err(), "start twice");
    let before = serde_json::to_string(p.state()).unwrap();
    let mut run = Run::default();
    let answers = execute(&mut card, &batch, &mut run);
    assert_eq!(answers.len(), batch.len(), "SELECT, INITIALIZE UPDATE, EXTERNAL AUTHENTICATE, SET STATUS");
    let unchanged = |p: &Planner| assert_eq!(serde_json::to_string(p.state()).unwrap(), before);
    for bad in [
        Vec::new(),
        [answers.clone(), vec![vec![0x90, 0x00]]].concat(),
        answers[..2].to_vec(),
        vec![vec![0x6A, 0x82], vec![0x90, 0x00]],
        vec![vec![0x90]],
    ] {
        let e = p.on_responses(&mut keys, &bad).unwrap_err();
        assert_eq!(e.code(), "planner.bad_report", "{e}");
        unchanged(&p);
    }
    let Next::Failed(e) = p.on_responses(&mut keys, &answers).unwrap() else { panic!() };
    assert_eq!(e.status_word().map(|s| s.0), Some(0x6A88));
    let e = p.on_responses(&mut keys, &answers).unwrap_err();
    assert_eq!(e.code(), "planner.misuse");
}

/// A response whose R-MAC does not verify ends the plan.
#[test]
fn tampered_r_mac() {
    let scp = Scp::Scp03 { i: 0x70 };
    let mut card = card("ese", scp, 69);
    let mut keys = TestKeys::new(scp, 9);
    let view = known_view(&mut card, scp, &mut keys);
    let mut p = Planner::new(view, Operation::Deploy(Box::new(deploy(hello(), None, 1, false))), PlanOptions::default()).unwrap();
    let Next::Send(batch) = p.start(&mut keys).unwrap() else { panic!() };
    let mut run = Run::default();
    let mut answers = execute(&mut card, &batch, &mut run);
    let k = batch.commands.iter().position(|c| c.name.starts_with("INSTALL [for install")).unwrap();
    let a = &mut answers[k];
    assert!(a.len() > 2 + 8, "INSTALL answers 00 with an R-MAC at level 13");
    let n = a.len();
    a[n - 3] ^= 1;
    let Next::Failed(e) = p.on_responses(&mut keys, &answers).unwrap() else { panic!() };
    assert_eq!(e.code(), "planner.secure_channel", "{e}");
    assert!(e.to_string().contains("INSTALL"), "{e}");
}

/// PUT KEY answers are checked against the KCVs of the keys sent (SCP02: no R-MAC to catch a
/// changed answer first).
#[test]
fn put_key_kcv_checked() {
    let scp = Scp::Scp02 { i: 0x55 };
    let mut card = card("uicc", scp, 70);
    let mut keys = TestKeys::new(scp, 10);
    let view = known_view(&mut card, scp, &mut keys);
    let ks = keys.new_set("isd1", 0x01, 5);
    let op = Operation::RotateKeys { sd: ISD, kvn: 0, new_keys: ks, replace: false };
    let mut p = Planner::new(view, op, PlanOptions::default()).unwrap();
    let Next::Send(batch) = p.start(&mut keys).unwrap() else { panic!() };
    let mut run = Run::default();
    let mut answers = execute(&mut card, &batch, &mut run);
    let last = answers.last_mut().unwrap();
    assert_eq!(last.len(), 1 + 9 + 2, "version and three KCVs");
    last[2] ^= 0xFF;
    let Next::Failed(e) = p.on_responses(&mut keys, &answers).unwrap() else { panic!() };
    assert_eq!(e.code(), "planner.kcv_mismatch", "{e}");
}

/// Plans the view makes impossible are refused before anything is sent.
#[test]
fn invalid_operations() {
    let scp = Scp::Scp03 { i: 0x70 };
    let card = card("ese", scp, 71);
    let view = first_contact(&card, scp);
    let op = Operation::Terminate { instance: aid("D0D1D2D3D4D5010110"), elf: None, delete_ssd: true };
    assert_eq!(Planner::new(view.clone(), op, PlanOptions::default()).unwrap_err().code(), "planner.invalid_operation");
    let mut d = deploy(hello(), None, 1, false);
    d.install[0].module = aid("A0000000010203");
    assert_eq!(Planner::new(view.clone(), Operation::Deploy(Box::new(d)), PlanOptions::default()).unwrap_err().code(), "planner.invalid_operation");
    let mut v = view;
    v.scp = Scp::Scp02 { i: 0x15 & !0x04 };
    assert!(Planner::new(v, Operation::Resync, PlanOptions::default()).is_err(), "implicit initiation");
}


/// INSTALL [for load] refused for another reason than a present load file (its security domain
/// is locked): the check finds no load file and the plan ends with the card's answer.
#[test]
fn install_for_load_refused_for_another_reason() {
    for (profile, scp) in combos() {
        let tag = format!("{profile} {scp}");
        let mut card = card_with(profile, scp, 72, |p, _| p.memory = 2 * 1024 * 1024);
        let mut keys = TestKeys::new(scp, 11);
        let view = known_view(&mut card, scp, &mut keys);
        let ks = keys.new_set("ssd", 0x30, 1);
        let (r, _, _) = plan(&mut card, view, Operation::Deploy(Box::new(deploy(hello(), Some(ssd(ks, None, scp)), 1, false))), &mut keys, PlanOptions::default());
        let o = r.unwrap();
        let (r, _, _) = plan(&mut card, o.card.clone(), Operation::Suspend { instance: aid(SSD_AID) }, &mut keys, PlanOptions::default());
        let o = r.unwrap_or_else(|e| panic!("{tag}: lock the SSD: {e}"));
        let ndef = tsm_server::planner::LoadFileSpec::from_cap(&cap("openjavacard-ndef-tiny-plain.cap")).unwrap();
        let mut d = deploy(ndef.clone(), None, 1, false);
        d.sd = Some(aid(SSD_AID));
        let (r, run, _) = plan(&mut card, o.card.clone(), Operation::Deploy(Box::new(d)), &mut keys, PlanOptions::default());
        let e = r.expect_err(&tag);
        assert_eq!((e.code(), e.status_word().map(|s| s.0)), ("planner.card_status", Some(0x6985)), "{tag}: {e}");
        assert!(e.to_string().contains("INSTALL [for load]"), "{tag}: {e}");
        assert!(card.state().load_file(&ndef.aid).is_none());
        assert!(card.state().app(&instance(&ndef, 0).instance).is_none(), "{tag}: nothing installed");
        assert!(run.round_trips <= 3, "{tag}");
    }
}
