//! `tsm serve` killed with SIGKILL in the middle of deployments, and started again on the same
//! port and database, while `tsm agent` processes keep going.
//!
//! Each round onboards four new phones (UICC SCP02 i=55, microSD SCP02 i=15, eSE SCP03 i=70,
//! UICC SCP03 i=70 AES-256), queues two deployments on each (one personalized), and runs the
//! four agents at once while the server dies:
//!
//! - **at chosen requests** (PostgreSQL and SQLite): the agents talk through a forwarder that
//!   counts their requests; a seeded generator picks three request numbers of the round and,
//!   for each, whether the server dies before the request reaches it, after it answered (the
//!   report is committed, its answer dies with the server), or a few milliseconds into it
//!   (committed or not: a race, on purpose);
//! - **at random times** (seeded): the agents talk to the server directly (the kernel refuses
//!   their connections while it is down) and the server is killed every few hundred
//!   milliseconds;
//! - **for longer than the agents wait** (`agent_gives_up_and_is_run_again`): the agents give up
//!   (`agent.unreachable`) and are run again with the same session, as a phone app would be
//!   retriggered; one of them had run an order whose report never arrived.
//!
//! Some rounds go on with the same phones: the first service is suspended while the server
//! dies again (in the outage round, the suspend's report is the one that never arrives).
//!
//! After each round, for every phone (`support::verify_phone`): every process final, every
//! instance in the state its last operation gives (OPERATIONAL, SUSPENDED and locked on the
//! card; where an agent gave up, a failure may leave it IN_ERROR), the card's registry equal to
//! the database's, the card's APDU log equal to the database's APDU log, each INSTALL and LOAD
//! accepted once per registry entry it made and (while agents never gave up) never refused,
//! each process end audited and put in the callback outbox once, the session closed.

mod support;
use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};
use support::*;
use tsm_server::store::testing::TestDb;

const WALLET: &str = "D0D1D2D3D4D5010101";
const TRANSIT: &str = "D0D1D2D3D4D5010102";

/// How the server dies during a round.
#[derive(Debug, Clone, Copy)]
enum Kills {
    /// `n` kills at requests drawn from `1..=span` of the round.
    AtRequests { n: usize, span: usize },
    /// Every `every` ms (a range), down for `down` ms (a range).
    Timed { every: (u64, u64), down: (u64, u64) },
    /// The first report with R-APDUs after request `after` never arrives, and the server stays
    /// down for `down` ms, longer than the agents retry.
    Outage { after: usize, down: u64 },
}

struct Setup {
    db: Arc<TestDb>,
    dir: std::path::PathBuf,
    server: Arc<tokio::sync::Mutex<Server>>,
    api: Api,
    tenant: Tenant,
    services: Vec<Catalog>,
}

async fn setup(db: Arc<TestDb>, dir: &std::path::Path) -> Setup {
    // Orders carry a 40 ms delay: sessions last long enough for timed kills to land in them.
    let opts = ServerOpts { long_poll_seconds: 2, order_delay_ms: 40, ..ServerOpts::default() };
    let mut server = Server::spawn(dir, "tsm", &db.url, &opts);
    server.ready().await;
    let api = Api::new(server.base());
    let tenant = api.provider("acme").await;
    let services = vec![api.service(&tenant, "wallet", WALLET, true).await, api.service(&tenant, "transit", TRANSIT, false).await];
    Setup { db, dir: dir.to_path_buf(), server: Arc::new(tokio::sync::Mutex::new(server)), api, tenant, services }
}

/// A phone with the operations queued for it so far, the session of the latest ones, and how
/// often its agent gave up.
struct Work {
    phone: Phone,
    ops: Vec<Deployment>,
    session: String,
    gave_up: u32,
}

/// New phones, registered, with the two services' deployments queued on each.
async fn new_phones(s: &Setup, label: &str, seed: u64, specs: &[CardSpec]) -> Vec<Work> {
    let mut out = Vec::new();
    for (k, spec) in specs.iter().enumerate() {
        let phone = Phone::new(&s.dir, &format!("{label}-{k}-{}", spec.profile), spec.clone(), seed * 10 + k as u64);
        s.api.register(&phone, &s.tenant).await;
        let mut ops = Vec::new();
        let mut session = None;
        for c in &s.services {
            let iid = s.api.instance(&s.tenant, c, &phone.se_id).await;
            let (pid, sid) = s.api.queue(&s.tenant, &iid, "deploy").await;
            session.get_or_insert(sid);
            ops.push(Deployment { instance: iid, process: pid, instance_aid: c.instance_aid.clone(), op: "deploy".into() });
        }
        out.push(Work { phone, ops, session: session.unwrap(), gave_up: 0 });
    }
    out
}

/// Queues `op` on the first service's instance of every phone (the next round runs it).
async fn queue_op(s: &Setup, work: &mut [Work], op: &str) {
    for w in work {
        let d = w.ops[0].clone();
        let (pid, sid) = s.api.queue(&s.tenant, &d.instance, op).await;
        w.ops.push(Deployment { process: pid, op: op.into(), ..d });
        w.session = sid;
    }
}

/// One round: the phones' agents run their sessions while the server dies as `kills` says;
/// then every phone is verified. Returns the phones and what happened to the server.
async fn round(s: &Setup, label: &str, seed: u64, kills: Kills, work: Vec<Work>) -> (Vec<Work>, Vec<Incident>) {
    let t0 = Instant::now();
    let mut rng = Rng::new(seed);
    let stop = Arc::new(AtomicBool::new(false));
    let (url, retry_for, _fwd, (task, incidents)) = match kills {
        Kills::AtRequests { n, span } => {
            let mut plan = BTreeMap::new();
            while plan.len() < n {
                let at = rng.range(2, span as u64 + 1) as usize;
                let action = match rng.range(0, 3) {
                    0 => Action::KillBefore,
                    1 => Action::KillAfter,
                    _ => Action::KillDuring(rng.range(0, 15)),
                };
                plan.insert(at, action);
            }
            eprintln!("{label}: kill plan {plan:?}");
            let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
            let fwd = Forwarder::start(vec![s.server.lock().await.base()], plan, Some(tx)).await;
            (fwd.base.clone(), Duration::from_secs(30), Some(fwd), controller(s.server.clone(), rx, seed, (100, 600)))
        }
        Kills::Timed { every, down } => {
            let base = s.server.lock().await.base();
            (base, Duration::from_secs(30), None, timed_kills(s.server.clone(), seed, every, down, stop.clone()))
        }
        Kills::Outage { after, down } => {
            let plan = BTreeMap::from([(after, Action::KillBeforeReport)]);
            let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
            let fwd = Forwarder::start(vec![s.server.lock().await.base()], plan, Some(tx)).await;
            (fwd.base.clone(), Duration::from_millis(1200), Some(fwd), controller(s.server.clone(), rx, seed, (down, down + 1)))
        }
    };

    // The agents, each until its session ends with Stop (run again after giving up).
    let mut runs = Vec::new();
    for mut w in work {
        let url = url.clone();
        runs.push(tokio::spawn(async move {
            w.gave_up += run_to_stop(&mut w.phone, &url, &w.session, retry_for, Duration::from_secs(50)).await;
            w
        }));
    }
    let mut done = Vec::new();
    for r in runs {
        done.push(r.await.unwrap_or_else(|e| std::panic::resume_unwind(e.into_panic())));
    }
    stop.store(true, Ordering::SeqCst);
    {
        // Not in the middle of a restart: the server is up when the controller goes.
        let mut server = s.server.lock().await;
        task.abort();
        if !server.is_running() {
            server.restart().await;
        }
    }
    let incidents = incidents.lock().unwrap().clone();

    let mut failed = Vec::new();
    for w in &done {
        let mode = if w.gave_up > 0 { LogMatch::AllowUnreported } else { LogMatch::Exact };
        failed.extend(verify_phone(&s.db, &s.api, &s.tenant, &w.phone, &w.ops, mode).await.failed);
        verify_session_closed(&s.db, &w.phone, &w.session).await;
    }
    eprintln!(
        "{label}: {} kill(s) {:?}, {} agent run(s) gave up, failed processes {failed:?}, {:.1?}",
        incidents.len(),
        incidents.iter().map(|i| (i.request, i.action)).collect::<Vec<_>>(),
        done.iter().map(|w| w.gave_up).sum::<u32>(),
        t0.elapsed()
    );
    (done, incidents)
}

const ALL: [CardSpec; 4] = [UICC_SCP02, MICROSD_SCP02, ESE_SCP03, UICC_SCP03];

/// The seeds of the kill rounds: `default`, or `TSM_PROCESS_TEST_SEEDS` (comma-separated, e.g.
/// `TSM_PROCESS_TEST_SEEDS=$(seq -s, 100 160)` for a long soak run).
fn seeds(default: &[u64]) -> Vec<u64> {
    match std::env::var("TSM_PROCESS_TEST_SEEDS") {
        Ok(v) if !v.trim().is_empty() => v.split(',').map(|x| x.trim().parse().expect("TSM_PROCESS_TEST_SEEDS: numbers")).collect(),
        _ => default.to_vec(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_mid_deployments_postgres() {
    let Some(db) = postgres().await else { return };
    with_db(db, |db| async move {
        let tmp = test_dir("restart");
        let s = setup(db, tmp.path()).await;
        let mut kills = 0;
        let seeds = seeds(&[1, 2, 3]);
        for &seed in &seeds {
            let phones = new_phones(&s, &format!("pg-at-{seed}"), seed, &ALL).await;
            kills += round(&s, &format!("pg-at-{seed}"), seed, Kills::AtRequests { n: 3, span: 30 }, phones).await.1.len();
        }
        let phones = new_phones(&s, "pg-timed", seeds[0] + 6, &ALL).await;
        let (mut phones, k) = round(&s, "pg-timed", seeds[0] + 6, Kills::Timed { every: (150, 450), down: (50, 400) }, phones).await;
        kills += k.len();
        // The same phones suspend the first service, the server dying again.
        queue_op(&s, &mut phones, "suspend").await;
        kills += round(&s, "pg-suspend", seeds[0] + 7, Kills::AtRequests { n: 2, span: 12 }, phones).await.1.len();
        assert!(kills > seeds.len(), "the server was killed {kills} times");
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_mid_deployments_sqlite() {
    let db = sqlite().await;
    with_db(db, |db| async move {
        let tmp = test_dir("restart");
        let s = setup(db, tmp.path()).await;
        let mut kills = 0;
        let seeds = seeds(&[4, 5]);
        for &seed in &seeds {
            let phones = new_phones(&s, &format!("sqlite-at-{seed}"), seed, &ALL).await;
            kills += round(&s, &format!("sqlite-at-{seed}"), seed, Kills::AtRequests { n: 3, span: 30 }, phones).await.1.len();
        }
        let phones = new_phones(&s, "sqlite-timed", seeds[0] + 4, &ALL).await;
        kills += round(&s, "sqlite-timed", seeds[0] + 4, Kills::Timed { every: (150, 450), down: (50, 400) }, phones).await.1.len();
        assert!(kills > seeds.len(), "the server was killed {kills} times");
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn agent_gives_up_and_is_run_again() {
    let Some(db) = postgres().await else { return };
    with_db(db, |db| async move {
        let tmp = test_dir("restart");
        let s = setup(db, tmp.path()).await;
        for seed in seeds(&[21, 22]) {
            // The outage starts at the first report with R-APDUs from request 4..20 on.
            let after = 4 + (seed as usize * 7) % 17;
            let phones = new_phones(&s, &format!("outage-{seed}"), seed, &ALL[..3]).await;
            let (mut phones, incidents) = round(&s, &format!("outage-{seed}"), seed, Kills::Outage { after, down: 2500 }, phones).await;
            assert_eq!(incidents.len(), 1, "{incidents:?}");
            // Then a suspend whose first report never arrives: the run after the outage finds
            // the application locked already.
            queue_op(&s, &mut phones, "suspend").await;
            let (_, incidents) = round(&s, &format!("outage-{seed}-suspend"), seed, Kills::Outage { after: 1, down: 2500 }, phones).await;
            assert_eq!(incidents.len(), 1, "{incidents:?}");
        }
    })
    .await;
}

/// Regression: the card ran a deployment's order, its report never arrived (the server was
/// down for longer than the agent retries), and the phone's agent was started again with the
/// same session. The server used to send the stored order again to the new run: on this
/// microSD (SCP02 i=15, random challenge) that order starts with EXTERNAL AUTHENTICATE, which
/// the card refused without its INITIALIZE UPDATE; the process failed (`planner.auth_failed`)
/// and the instance went back to NOT_DEPLOYED while the card held the application. Now a new
/// agent run with an order outstanding makes the TSM read the card again: it finds the
/// application there and completes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lost_report_then_new_agent_run() {
    let db = sqlite().await;
    with_db(db, |db| async move {
        let tmp = test_dir("lost-report");
        let s = setup(db, tmp.path()).await;
        let mut phone = Phone::new(&s.dir, "msd", MICROSD_SCP02, 77);
        s.api.register(&phone, &s.tenant).await;
        let c = &s.services[0];
        let iid = s.api.instance(&s.tenant, c, &phone.se_id).await;
        let (pid, sid) = s.api.queue(&s.tenant, &iid, "deploy").await;
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
        let fwd = Forwarder::start(vec![s.server.lock().await.base()], BTreeMap::new(), Some(tx)).await;
        // Requests of the session: handshake, then reports: Start + [SELECT, INITIALIZE UPDATE],
        // [EXTERNAL AUTHENTICATE, GET STATUS 80], [GET STATUS 40], [GET STATUS 10] (the first
        // read of the card), [SELECT, INITIALIZE UPDATE], [EXTERNAL AUTHENTICATE, INSTALL,
        // LOAD, ... STORE DATA]: the 8th request reports that last order.
        fwd.plan_session(&sid, 8, Action::KillBefore);
        let (task, incidents) = controller(s.server.clone(), rx, 1, (2500, 2501));
        let gave_up = run_to_stop(&mut phone, &fwd.base, &sid, Duration::from_millis(1200), Duration::from_secs(40)).await;
        {
            let _server = s.server.lock().await;
            task.abort();
        }
        assert_eq!(incidents.lock().unwrap().len(), 1);
        assert!(gave_up >= 1, "the agent gave up during the outage");
        let runs = phone.card_log();
        let lost = runs[0].last().expect("the first run ran orders");
        assert!(lost.iter().any(|(c, r)| c.starts_with("84E60C") && r.ends_with("9000")), "the order whose report was lost installed the application: {lost:?}");
        let deps = [Deployment { instance: iid, process: pid.clone(), instance_aid: c.instance_aid.clone(), op: "deploy".into() }];
        let v = verify_phone(&s.db, &s.api, &s.tenant, &phone, &deps, LogMatch::AllowUnreported).await;
        assert!(v.failed.is_empty(), "{v:?}");
        let p = s.api.get(&s.tenant, &format!("/api/v1/processes/{pid}")).await;
        assert_eq!(p["state"], "COMPLETED", "{p}");
        verify_session_closed(&s.db, &phone, &sid).await;
    })
    .await;
}

/// Regression: a node killed after committing a session's Stop but before releasing the SE's
/// lease left the lease to a session that is over; the SE's next session then waited (long
/// polls) for the whole lease TTL (60 s) before it could work. Now a lease held by a CLOSED or
/// EXPIRED session is taken at once. The state such a kill leaves is made by hand here (the
/// window is microseconds wide): the lease row of the closed session.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lease_left_by_a_closed_session_is_taken_over() {
    let db = sqlite().await;
    with_db(db, |db| async move {
        let tmp = test_dir("stale-lease");
        let s = setup(db, tmp.path()).await;
        let mut work = new_phones(&s, "lease", 31, &[ESE_SCP03]).await;
        let base = s.server.lock().await.base();
        let w = &mut work[0];
        run_to_stop(&mut w.phone, &base, &w.session, Duration::from_secs(30), Duration::from_secs(30)).await;
        let se = tsm_server::domain::SeId::new(&work[0].phone.se_id).unwrap();
        let closed = format!("seram:{}", work[0].session);
        assert!(s.db.store.acquire_se_lease(&se, &closed, Duration::from_secs(60)).await.unwrap().is_some());

        queue_op(&s, &mut work, "suspend").await;
        let t0 = Instant::now();
        // Well below the lease's 60 s: the agent gives up (and fails the test) after 20 s.
        let w = &mut work[0];
        let gave_up = run_to_stop(&mut w.phone, &base, &w.session, Duration::from_secs(20), Duration::from_secs(20)).await;
        assert_eq!(gave_up, 0);
        assert!(t0.elapsed() < Duration::from_secs(10), "the suspend waited {:.1?} for the lease", t0.elapsed());
        let w = &work[0];
        verify_phone(&s.db, &s.api, &s.tenant, &w.phone, &w.ops, LogMatch::Exact).await;
        verify_session_closed(&s.db, &w.phone, &w.session).await;
    })
    .await;
}
