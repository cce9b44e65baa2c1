//! Over-the-air deployments through HTTP with simulated SEs: deployments per second, latency,
//! and HTTP round trips per deployment, against the naive baseline of one APDU per round trip
//! (`[planner] one_apdu_per_round_trip`), measured in the same run through the same path.
//!
//! Run: `cargo bench -p tsm-server --bench deploy` (`-- --quick` for a short run,
//! `-- --sqlite-only` to leave PostgreSQL out). Per database (SQLite on a temporary file;
//! PostgreSQL at `postgres://postgres@127.0.0.1:5432/` when reachable, or
//! `TSM_TEST_DATABASE_URL`) and per planner mode, a node is started as `tsm serve` starts one
//! (software key store) on loopback; phones of the six kinds (UICC SCP02 i=55 / SCP03 i=70,
//! microSD SCP02 i=15 / SCP03 i=70, eSE SCP03 S8 / S16) are registered untimed; then each
//! phone's local agent runs two deployments over GP SERAM: the wallet at *first contact* (the
//! TSM reads the card's counter and registry first) and the transit card once the TSM *knows
//! the card*. Each phase is timed twice: one phone at a time (latency) and `C` phones at a time
//! (throughput; the agents share one thread, the node the runtime's workers).
//!
//! A deployment is timed from the provider's `POST .../deploy` to the agent's Stop and the
//! process read back COMPLETED. Round trips are the server's count (SERAM exchanges that carried
//! the process's APDUs); HTTP requests are the agent's (handshake and reports). Loopback has no
//! network delay: on a phone, each round trip adds the mobile network's RTT on top.

#[path = "../tests/support/mod.rs"]
mod support;

use std::time::{Duration, Instant};
use support::{Backend, KeyStoreKind};
use tsm_server::testkit::{self, Node, Outcome, Phone, PhoneKeys, PhoneKind, Provider, Service};

struct Plan {
    /// Phones deployed one at a time, then phones deployed `concurrency` at a time.
    sequential: usize,
    concurrent: usize,
    concurrency: usize,
}

/// What one phase of one mode measured.
#[derive(Default, Clone)]
struct Phase {
    /// Median ms per deployment, one at a time.
    latency_ms: f64,
    /// Deployments per second, `concurrency` at a time.
    per_second: f64,
    round_trips: f64,
    apdus: f64,
    http_requests: f64,
}

fn mean(v: &[u64]) -> f64 {
    v.iter().sum::<u64>() as f64 / v.len().max(1) as f64
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    v.get(v.len() / 2).copied().unwrap_or(0.0)
}

struct Fleet {
    node: Node,
    provider: Provider,
    wallet: Service,
    transit: Service,
}

async fn fleet(db: &tsm_server::store::testing::TestDb, naive: bool) -> Fleet {
    let mut config = support::config(db, KeyStoreKind::Software);
    config.planner.one_apdu_per_round_trip = naive;
    config.database.max_connections = 16;
    let node = Node::start(config, support::ADMIN_TOKEN).await.expect("node");
    let provider = testkit::provider(&node.admin, "bench-pay").await.expect("provider");
    let elf = testkit::upload(&provider, "tsm-demo.cap", testkit::demo_cap()).await.expect("CAP");
    let (w, t) = (tsm_gp::hex::encode(&testkit::DEMO_WALLET_AID), tsm_gp::hex::encode(&testkit::DEMO_TRANSIT_AID));
    let wallet = testkit::service(&provider, "wallet", &elf, &w, &w, 8192).await.expect("wallet");
    let transit = testkit::service(&provider, "transit", &elf, &t, &t, 8192).await.expect("transit");
    Fleet { node, provider, wallet, transit }
}

async fn phones(f: &Fleet, prefix: &str, n: usize) -> Vec<Phone> {
    let mut v = Vec::with_capacity(n);
    for i in 0..n {
        let kind = PhoneKind::ALL[i % PhoneKind::ALL.len()];
        let p = Phone::new(&format!("{prefix}-{i:04}"), kind, PhoneKeys::Own, Some(i as u64 + 1)).expect("phone");
        p.register(&f.node.admin, &f.provider, testkit::DEMO_SSD_AID, 32 * 1024).await.expect("register");
        v.push(p);
    }
    v
}

/// Deploys `service` to every phone, `at_once` at a time: the outcomes and the wall time.
async fn deploy_all(f: &Fleet, service: &Service, phones: &[Phone], at_once: usize) -> (Vec<Outcome>, Duration) {
    let t = Instant::now();
    let mut out = Vec::with_capacity(phones.len());
    for group in phones.chunks(at_once) {
        let local = tokio::task::LocalSet::new();
        let mut tasks = tokio::task::JoinSet::new();
        for phone in group.iter().cloned() {
            let (base, p, s) = (f.node.base.clone(), f.provider.clone(), service.clone());
            tasks.spawn_local_on(
                async move {
                    let instance = testkit::instance(&p, &s, &phone.se_id).await.expect("instance");
                    let o = testkit::run_operation(&base, &p, &phone, &instance, "deploy", |_| {}).await.expect("deploy");
                    assert_eq!(o.state, "COMPLETED", "{}: {:?}", phone.kind.label(), o.error);
                    o
                },
                &local,
            );
        }
        local
            .run_until(async {
                while let Some(r) = tasks.join_next().await {
                    out.push(r.expect("deployment task"));
                }
            })
            .await;
    }
    (out, t.elapsed())
}

async fn measure(db: &tsm_server::store::testing::TestDb, naive: bool, plan: &Plan) -> [Phase; 2] {
    let f = fleet(db, naive).await;
    let seq = phones(&f, if naive { "NAIVE-SEQ" } else { "SEQ" }, plan.sequential).await;
    let conc = phones(&f, if naive { "NAIVE-CONC" } else { "CONC" }, plan.concurrent).await;
    let mut phases: [Phase; 2] = Default::default();
    for (i, service) in [&f.wallet, &f.transit].into_iter().enumerate() {
        let (one, _) = deploy_all(&f, service, &seq, 1).await;
        let (many, wall) = deploy_all(&f, service, &conc, plan.concurrency).await;
        let all: Vec<&Outcome> = one.iter().chain(&many).collect();
        phases[i] = Phase {
            latency_ms: median(one.iter().map(|o| o.elapsed_ms as f64).collect()),
            per_second: many.len() as f64 / wall.as_secs_f64(),
            round_trips: mean(&all.iter().map(|o| o.round_trips).collect::<Vec<_>>()),
            apdus: mean(&all.iter().map(|o| o.apdus).collect::<Vec<_>>()),
            http_requests: mean(&all.iter().map(|o| o.http_requests).collect::<Vec<_>>()),
        };
    }
    f.node.stop().await;
    phases
}

fn row(mode: &str, phase: &str, p: &Phase) {
    println!("{mode:<26} {phase:<14} {:>9.1} {:>10.1} {:>12.1} {:>7.1} {:>9.1}", p.per_second, p.latency_ms, p.round_trips, p.apdus, p.http_requests);
}

async fn run(backend: Backend, plan: &Plan) {
    // A fresh database per mode, so that neither measures the other's rows.
    let mut results = Vec::new();
    for naive in [false, true] {
        let Some(db) = support::database(backend).await else {
            println!("\n{backend:?}: skipped");
            return;
        };
        results.push(measure(&db, naive, plan).await);
        db.finish().await;
    }
    let (batched, naive) = (results[0].clone(), results[1].clone());
    println!(
        "\n{} — {} phones one at a time, {} phones {} at a time, per phase; software key store\n",
        match backend {
            Backend::Sqlite => "SQLite",
            Backend::Postgres => "PostgreSQL",
        },
        plan.sequential,
        plan.concurrent,
        plan.concurrency
    );
    println!("{:<26} {:<14} {:>9} {:>10} {:>12} {:>7} {:>9}", "planner", "deployment", "deploy/s", "ms/deploy", "round trips", "APDUs", "HTTP req");
    for (mode, phases) in [("batched (default)", &batched), ("one APDU per round trip", &naive)] {
        row(mode, "first contact", &phases[0]);
        row(mode, "known card", &phases[1]);
    }
    for (i, phase) in ["first contact", "known card"].into_iter().enumerate() {
        let (b, n) = (&batched[i], &naive[i]);
        println!(
            "{phase}: {:.1}x the deployments per second, {:.1}x less latency, {:.1}x fewer round trips than the baseline",
            b.per_second / n.per_second,
            n.latency_ms / b.latency_ms,
            n.round_trips / b.round_trips
        );
    }
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let quick = args.iter().any(|a| a == "--quick");
    let sqlite_only = args.iter().any(|a| a == "--sqlite-only");
    let plan = if quick { Plan { sequential: 6, concurrent: 12, concurrency: 6 } } else { Plan { sequential: 24, concurrent: 96, concurrency: 12 } };
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build().unwrap();
    println!("deployments over the air through HTTP on loopback (GP SERAM, local agents, simulated SEs of six kinds)");
    rt.block_on(async {
        run(Backend::Sqlite, &plan).await;
        if !sqlite_only {
            run(Backend::Postgres, &plan).await;
        }
    });
    println!(
        "\ndeploy/s: concurrent deployments per second; ms/deploy: median, one at a time; round trips: SERAM exchanges carrying \
         the process's APDUs (server count); HTTP req: the agent's requests per session (handshake, reports)."
    );
}
