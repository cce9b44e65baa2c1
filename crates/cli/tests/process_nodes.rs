//! Two `tsm serve` processes on one PostgreSQL database, phones served by both.
//!
//! Onboarding goes through either node (the provider on one, the SEs and services on the
//! other, instances and deployments alternating). Four phones — a UICC on SCP02 i=55, a microSD
//! on SCP02 i=15, an eSE on SCP03 i=70 and a UICC on SCP03 i=70 with AES-256 keys — each get
//! two deployments (one with a personalization script) and run `tsm agent` at the same time.
//! A forwarder sends every request to the other node in turn, so each session's requests
//! alternate between the two processes:
//!
//! - `two_serve_processes_on_one_postgres`: some answers are lost on the way back (the agent
//!   sends the same report again, to the other node);
//! - `a_node_dies_while_agents_alternate`: node A is killed (SIGKILL) three times — after it
//!   answered a request (the answer dies with it), 5 ms into one, and before one reaches it —
//!   and comes back after a pause (seeded); meanwhile its requests fail and the agents'
//!   retries go to node B.
//!
//! Exactly once: each card accepted one INSTALL per SD/application and one LOAD, refused none;
//! its APDU log is the database's APDU log of its processes, exchange for exchange; its
//! registry is the one the database holds; every process COMPLETED (audited and in the
//! callback outbox once), every instance OPERATIONAL, every session closed.

mod support;
use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};
use support::*;
use tsm_server::store::testing::TestDb;

const WALLET: &str = "D0D1D2D3D4D5010101";
const TRANSIT: &str = "D0D1D2D3D4D5010102";

/// Onboards four phones through both nodes and queues two deployments on each: the phones and,
/// per phone, its deployments and the session that runs them.
async fn onboard(dir: &Path, nodes: &[Api; 2], seed: u64) -> (Tenant, Vec<Phone>, Vec<(Vec<Deployment>, String)>) {
    let t = nodes[0].provider("acme").await;
    let specs = [("uicc02", UICC_SCP02), ("microsd02", MICROSD_SCP02), ("ese03", ESE_SCP03), ("uicc03", UICC_SCP03)];
    let phones: Vec<Phone> = specs.iter().enumerate().map(|(k, (name, spec))| Phone::new(dir, name, spec.clone(), seed + k as u64)).collect();
    for (k, p) in phones.iter().enumerate() {
        nodes[(k + 1) % 2].register(p, &t).await;
    }
    let wallet = nodes[1].service(&t, "wallet", WALLET, true).await;
    let transit = nodes[0].service(&t, "transit", TRANSIT, false).await;
    let mut work = Vec::new();
    for (k, p) in phones.iter().enumerate() {
        let mut deps = Vec::new();
        let mut session = None;
        for (j, c) in [&wallet, &transit].into_iter().enumerate() {
            let iid = nodes[(k + j) % 2].instance(&t, c, &p.se_id).await;
            let (pid, sid) = nodes[(k + j + 1) % 2].queue(&t, &iid, "deploy").await;
            session.get_or_insert(sid);
            deps.push(Deployment { instance: iid, process: pid, instance_aid: c.instance_aid.clone(), op: "deploy".into() });
        }
        // The session of the first deployment runs both (the SE's work, oldest first).
        work.push((deps, session.unwrap()));
    }
    (t, phones, work)
}

/// Runs every phone's agent through the forwarder until Stop.
async fn run_agents(phones: &mut [Phone], work: &[(Vec<Deployment>, String)], url: &str) {
    let mut runs = Vec::new();
    for (p, (_, sid)) in phones.iter_mut().zip(work) {
        runs.push(p.agent(url, sid, Duration::from_secs(30)));
    }
    for r in &mut runs {
        let (status, out, _) = r.wait(Duration::from_secs(45)).await;
        assert!(status.success(), "{}: {status}\n{}", r.name, tail(&r.err, 30));
        assert!(out.contains("complete"), "{out}");
    }
}

/// Each session was served by both nodes (when `both`); then every phone verified.
async fn verify_all(db: &TestDb, nodes: &[Api; 2], t: &Tenant, phones: &[Phone], work: &[(Vec<Deployment>, String)], seen: &[Seen], both: bool) {
    for (p, (_, sid)) in phones.iter().zip(work).filter(|_| both) {
        let mine: Vec<&Seen> = seen.iter().filter(|s| s.path.contains(sid.as_str()) && s.server_status == Some(200)).collect();
        assert!(mine.iter().any(|s| s.backend == 0) && mine.iter().any(|s| s.backend == 1), "{}: both nodes served the session: {mine:?}", p.name);
    }
    for (p, (deps, sid)) in phones.iter().zip(work) {
        let v = verify_phone(db, &nodes[0], t, p, deps, LogMatch::Exact).await;
        assert_eq!(v.installs, 3, "{}: the SSD and the two applications, each installed once", p.name);
        verify_session_closed(db, p, sid).await;
    }
    // Both nodes answer the same about every process.
    for d in work.iter().flat_map(|(d, _)| d) {
        let x = nodes[0].get(t, &format!("/api/v1/processes/{}", d.process)).await;
        let y = nodes[1].get(t, &format!("/api/v1/processes/{}", d.process)).await;
        assert_eq!(x, y);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_serve_processes_on_one_postgres() {
    let Some(db) = postgres().await else { return };
    with_db(db, |db| async move {
        let t0 = Instant::now();
        let tmp = test_dir("nodes");
        let dir = tmp.path();
        let opts = ServerOpts { long_poll_seconds: 2, ..ServerOpts::default() };
        let mut a = Server::spawn(dir, "node-a", &db.url, &opts);
        let mut b = Server::spawn(dir, "node-b", &db.url, &opts);
        a.ready().await;
        b.ready().await;
        let nodes = [Api::new(a.base()), Api::new(b.base())];
        let (t, mut phones, work) = onboard(dir, &nodes, 100).await;

        // Every request to the other node; a few answers lost.
        let lost: BTreeMap<usize, Action> = [4, 9, 15, 22, 30].into_iter().map(|n| (n, Action::DropAnswer)).collect();
        let fwd = Forwarder::start(vec![a.base(), b.base()], lost, None).await;
        run_agents(&mut phones, &work, &fwd.base).await;

        let seen = fwd.seen();
        let dropped: Vec<&Seen> = seen.iter().filter(|s| s.action == Action::DropAnswer).collect();
        assert!(dropped.len() >= 4, "answers were lost: {dropped:?}");
        assert!(seen.iter().all(|s| s.server_status.is_none_or(|c| c == 200)), "every request answered 200: {seen:?}");
        verify_all(&db, &nodes, &t, &phones, &work, &seen, true).await;
        eprintln!("two nodes: {} requests, {} lost answers, {:.1?}", seen.len(), dropped.len(), t0.elapsed());
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_dies_while_agents_alternate() {
    let Some(db) = postgres().await else { return };
    with_db(db, |db| async move {
        let t0 = Instant::now();
        let tmp = test_dir("node-dies");
        let dir = tmp.path();
        let opts = ServerOpts { long_poll_seconds: 2, order_delay_ms: 30, ..ServerOpts::default() };
        let mut a = Server::spawn(dir, "node-a", &db.url, &opts);
        let mut b = Server::spawn(dir, "node-b", &db.url, &opts);
        a.ready().await;
        b.ready().await;
        let nodes = [Api::new(a.base()), Api::new(b.base())];
        let (t, mut phones, work) = onboard(dir, &nodes, 200).await;

        // One kill of each kind; a kill at a request that goes to B kills A all the same.
        let plan = BTreeMap::from([(5, Action::KillAfter), (14, Action::KillDuring(5)), (24, Action::KillBefore)]);
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
        let fwd = Forwarder::start(vec![a.base(), b.base()], plan.clone(), Some(tx)).await;
        let a = Arc::new(tokio::sync::Mutex::new(a));
        let (task, incidents) = controller(a.clone(), rx, 9, (300, 1200));
        run_agents(&mut phones, &work, &fwd.base).await;
        {
            let mut a = a.lock().await;
            task.abort();
            if !a.is_running() {
                a.restart().await;
            }
        }
        let incidents = incidents.lock().unwrap().clone();
        assert!(!incidents.is_empty(), "node A was killed: plan {plan:?}");
        assert!(b.is_running(), "node B kept running");
        let seen = fwd.seen();
        // While A was down its requests failed and the retries went to B: a session may then
        // have been served by B alone.
        assert!(seen.iter().any(|s| s.backend == 0 && s.server_status.is_none()), "requests to the dead node failed");
        assert!(seen.iter().any(|s| s.backend == 0 && s.server_status == Some(200)), "node A served requests");
        verify_all(&db, &nodes, &t, &phones, &work, &seen, false).await;
        eprintln!("node A killed {} time(s) {:?}; {} requests; {:.1?}", incidents.len(), incidents.iter().map(|i| (i.request, i.action)).collect::<Vec<_>>(), seen.len(), t0.elapsed());
    })
    .await;
}
