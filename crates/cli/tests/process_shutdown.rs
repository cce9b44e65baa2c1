//! Graceful shutdown of `tsm serve` (SIGTERM) in the middle of SERAM sessions: the server
//! answers the requests in flight, exits 0, and the agents' deployments complete once it is
//! started again on the same port and database.
//!
//! - A long poll in flight: an agent waits on a provisioned session (`/gp/seram/order`) with
//!   nothing to do; on SIGTERM the held request is answered at once (a void order), the server
//!   exits 0 well within its grace period; the agent keeps retrying while the server is down,
//!   a deployment is queued after the restart, and the same agent run carries it out.
//! - A report in flight: the forwarder sends a report but its last byte, the server gets
//!   SIGTERM, then the last byte follows: the report is applied and answered (200), the server
//!   exits 0, and the deployment completes after the restart.

mod support;
use serde_json::json;
use std::collections::BTreeMap;
use std::time::{Duration, Instant};
use support::*;

const WALLET: &str = "D0D1D2D3D4D5010101";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_answers_the_long_poll_and_the_session_goes_on() {
    let db = sqlite().await;
    with_db(db, |db| async move {
        let tmp = test_dir("sigterm-poll");
        let dir = tmp.path();
        let opts = ServerOpts { long_poll_seconds: 20, shutdown_grace_seconds: 10, ..ServerOpts::default() };
        let mut server = Server::spawn(dir, "tsm", &db.url, &opts);
        server.ready().await;
        let api = Api::new(server.base());
        let t = api.provider("acme").await;
        let mut phone = Phone::new(dir, "ese", ESE_SCP03, 5);
        api.register(&phone, &t).await;
        let c = api.service(&t, "wallet", WALLET, true).await;
        let iid = api.instance(&t, &c, &phone.se_id).await;
        let (s, b) = api.admin("POST", "/gp/seram/order", Some(json!({"secureElement": {"seType": "eSE", "seId": phone.se_id}}))).await;
        assert_eq!(s, 201, "{b}");
        let sid = b["sessionId"].as_str().unwrap().to_string();

        let fwd = Forwarder::start(vec![server.base()], BTreeMap::new(), None).await;
        let mut agent = phone.agent(&fwd.base, &sid, Duration::from_secs(30));
        // Handshake, the first poll (answered with Start), then a poll held by the server.
        let t0 = Instant::now();
        while !(fwd.count() >= 3 && fwd.in_flight() == 1) {
            assert!(t0.elapsed() < Duration::from_secs(15), "no long poll: {:?}", fwd.seen());
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert_eq!(fwd.in_flight(), 1, "the poll is still held");
        let held = fwd.count();

        let t1 = Instant::now();
        server.sigterm();
        let status = server.wait_exit(Duration::from_secs(15)).await;
        assert!(status.success(), "exit status {status}:\n{}", tail(&server.log, 20));
        // Held to its end, the poll would have kept the server for the whole grace period (10 s).
        assert!(t1.elapsed() < Duration::from_secs(8), "the held poll did not delay the shutdown: {:.1?}", t1.elapsed());
        let answer = fwd.seen().into_iter().find(|s| s.n == held).expect("the held poll was answered");
        assert_eq!(answer.server_status, Some(200), "the held poll was answered by the server: {answer:?}");
        assert!(std::fs::read_to_string(&server.log).unwrap().contains("SIGTERM: shutting down"));

        // The agent keeps trying; the server comes back; work arrives for the session.
        tokio::time::sleep(Duration::from_millis(500)).await;
        assert!(agent.is_running(), "the agent waits for the server");
        server.restart().await;
        let (pid, _) = api.queue(&t, &iid, "deploy").await;
        let (status, out, _) = agent.wait(Duration::from_secs(40)).await;
        assert!(status.success(), "agent: {status}\n{}", tail(&agent.err, 30));
        assert!(out.contains("complete"), "{out}");
        assert!(fwd.seen().iter().any(|s| s.server_status.is_none()), "requests were refused while the server was down");

        let deps = [Deployment { instance: iid, process: pid, instance_aid: WALLET.into(), op: "deploy".into() }];
        let v = verify_phone(&db, &api, &t, &phone, &deps, LogMatch::Exact).await;
        assert_eq!(v.installs, 2, "the SSD and the application");
        verify_session_closed(&db, &phone, &sid).await;
        eprintln!("sigterm during a long poll: {:.1?}", t0.elapsed());
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_finishes_the_report_in_flight() {
    let Some(db) = postgres().await else { return };
    with_db(db, |db| async move {
        let tmp = test_dir("sigterm-report");
        let dir = tmp.path();
        let opts = ServerOpts { long_poll_seconds: 2, shutdown_grace_seconds: 10, ..ServerOpts::default() };
        let server = Server::spawn(dir, "tsm", &db.url, &opts);
        let server = std::sync::Arc::new(tokio::sync::Mutex::new(server));
        server.lock().await.ready().await;
        let api = Api::new(server.lock().await.base());
        let t = api.provider("acme").await;
        let mut phone = Phone::new(dir, "uicc", UICC_SCP02, 6);
        api.register(&phone, &t).await;
        let c = api.service(&t, "wallet", WALLET, true).await;
        let iid = api.instance(&t, &c, &phone.se_id).await;
        let (pid, sid) = api.queue(&t, &iid, "deploy").await;

        let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
        let fwd = Forwarder::start(vec![server.lock().await.base()], BTreeMap::new(), Some(tx)).await;
        // Request 4 of the session: the report of its second order (R-APDUs to apply).
        fwd.plan_session(&sid, 4, Action::TermWhileReceiving);
        let (task, incidents) = controller(server.clone(), rx, 3, (300, 301));
        let t0 = Instant::now();
        let gave_up = run_to_stop(&mut phone, &fwd.base, &sid, Duration::from_secs(30), Duration::from_secs(40)).await;
        assert_eq!(gave_up, 0);
        {
            let _s = server.lock().await;
            task.abort();
        }
        let incidents = incidents.lock().unwrap().clone();
        assert_eq!(incidents.len(), 1, "{incidents:?}");
        let exit = incidents[0].exit.expect("SIGTERM: the exit was awaited");
        assert!(exit.success(), "exit status {exit}:\n{}", tail(&server.lock().await.log, 20));
        let seen = fwd.seen();
        let report = seen.iter().find(|s| s.action == Action::TermWhileReceiving).expect("the report in flight");
        assert_eq!(report.server_status, Some(200), "the report in flight was applied and answered: {report:?}");
        assert_eq!(report.status, 200);

        let deps = [Deployment { instance: iid, process: pid, instance_aid: WALLET.into(), op: "deploy".into() }];
        let v = verify_phone(&db, &api, &t, &phone, &deps, LogMatch::Exact).await;
        assert_eq!(v.installs, 2, "the SSD and the application");
        verify_session_closed(&db, &phone, &sid).await;
        eprintln!("sigterm during a report: {:.1?}", t0.elapsed());
    })
    .await;
}
