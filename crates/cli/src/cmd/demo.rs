//! `tsm demo`: the main job on embedded defaults. One TSM node in this process on loopback, a
//! service provider and an SE issuer onboarded, a CAP uploaded, simulated phones registered,
//! and a service deployed over the air to each phone through its local agent (GP SERAM over
//! HTTP); then every SE's registry as the card reports it beside the database's view.

use crate::cardfile::{storage_key, write_state};
use crate::error::CliError;
use serde_json::{Value, json};
use std::io::{IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Instant;
use tsm_gp::crypto::KeyAlg;
use tsm_gp::crypto::diversify::Diversification;
use tsm_server::agent::AgentEvent;
use tsm_server::testkit::{self, DbView, Entry, KitError, Node, Outcome, Phone, PhoneKeys, PhoneKind};

/// The long help of `tsm demo` (main.rs shows it).
pub const LONG_HELP: &str = "\
Run the TSM's main job end to end on this machine, with nothing to set up.

Starts a TSM node in this process on 127.0.0.1 (SQLite in a temporary directory, the software
key store under a master key made up for the run, an admin token made up too), onboards a
service provider and an SE issuer, uploads a CAP file (a small one generated on the spot, or
--cap), describes a service around it, registers simulated phones (by turns a UICC with SCP02
i=55, a microSD with SCP03, an eSE with SCP03 S16, each card with ISD keys of its own: the
UICCs' diversified from the issuer's master keys), and deploys the service to every phone over
the air: the TSM queues a process, and the phone's local agent runs its GP SERAM session over
HTTP against the node, relaying the TSM's APDU batches to the card.

Then, for each phone: the deployment's round trips and APDUs, and the SE's registry as the card
reports it (GET STATUS in a secure channel opened with the card's ISD keys) beside the
database's view of the same card. Exit status 0 when every deployment completed and every card
agrees with the database; otherwise error[code] on stderr and 1.

Examples:
  tsm demo
  tsm demo --phones 9 --json
  tsm demo --cap applet.cap --keep --dir ./demo
  tsm demo --postgres postgres://postgres@127.0.0.1:5432/tsm";

/// Arguments of `tsm demo`.
#[derive(clap::Args, Debug)]
pub struct DemoArgs {
    /// How many phones (taken in turn: UICC SCP02 i=55, microSD SCP03 i=70, eSE SCP03 S16).
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u32).range(1..=100))]
    phones: u32,
    /// Deploy this CAP file (its first applet) instead of the generated one.
    #[arg(long, value_name = "FILE")]
    cap: Option<PathBuf>,
    /// Keep the working directory: the database, the cards' state files, a tsm.toml to go on
    /// with `tsm serve`.
    #[arg(long)]
    keep: bool,
    /// Working directory (created if missing; kept). Default: a new temporary directory,
    /// removed at the end unless --keep.
    #[arg(long, value_name = "DIR")]
    dir: Option<PathBuf>,
    /// Use the PostgreSQL server at this URL (postgres://user[:password]@host:port/) instead of
    /// SQLite: the demo creates a database tsm_demo_XXXX there, dropped at the end unless --keep.
    #[arg(long, value_name = "URL")]
    postgres: Option<String>,
    /// Print the results as one JSON document on stdout.
    #[arg(long)]
    json: bool,
}

fn kit(e: KitError) -> CliError {
    CliError::failed(e.code, e.message)
}

fn io_err(what: &str, path: &Path, e: std::io::Error) -> CliError {
    CliError::failed("io.write", format!("{what} {}: {e}", path.display()))
}

pub fn run(args: DemoArgs) -> Result<(), CliError> {
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build().map_err(|e| CliError::failed("server.runtime", e.to_string()))?;
    let cap = match &args.cap {
        Some(p) => Some((p.file_name().map(|n| n.to_string_lossy().to_string()).unwrap_or_else(|| "applet.cap".into()), crate::error::read_file(p)?)),
        None => None,
    };
    let (dir, temporary) = match &args.dir {
        Some(d) => (d.clone(), false),
        None => (std::env::temp_dir().join(format!("tsm-demo-{}", run_tag())), true),
    };
    std::fs::create_dir_all(&dir).map_err(|e| io_err("cannot create", &dir, e))?;
    let result = rt.block_on(demo(&args, cap, &dir));
    if temporary && !args.keep {
        let _ = std::fs::remove_dir_all(&dir);
    }
    result
}

/// Four hex digits that tell this run's objects from earlier runs' in a kept database.
fn run_tag() -> String {
    let mut b = [0u8; 2];
    getrandom_fill(&mut b);
    tsm_gp::hex::encode(&b)
}

fn getrandom_fill(b: &mut [u8]) {
    use tsm_gp::session::HostRandom;
    let _ = tsm_gp::session::OsRandom.fill(b);
}

/// One phone's line in the progress display.
struct Progress {
    lines: Mutex<Vec<String>>,
    redraw: bool,
    quiet: bool,
    drawn: Mutex<bool>,
}

impl Progress {
    fn new(lines: Vec<String>, quiet: bool) -> Arc<Progress> {
        let redraw = !quiet && std::io::stderr().is_terminal();
        let p = Arc::new(Progress { lines: Mutex::new(lines), redraw, quiet, drawn: Mutex::new(false) });
        if redraw {
            p.draw();
        }
        p
    }

    fn draw(&self) {
        let lines = self.lines.lock().unwrap_or_else(|e| e.into_inner());
        let mut drawn = self.drawn.lock().unwrap_or_else(|e| e.into_inner());
        let mut err = std::io::stderr().lock();
        if *drawn {
            let _ = write!(err, "\x1b[{}A", lines.len());
        }
        for l in lines.iter() {
            let _ = writeln!(err, "\x1b[2K{l}");
        }
        *drawn = true;
    }

    /// Sets phone `i`'s line: redrawn in place on a terminal, else printed when `milestone`.
    fn set(&self, i: usize, text: String, milestone: bool) {
        let prefix = {
            let mut lines = self.lines.lock().unwrap_or_else(|e| e.into_inner());
            let head = lines[i].split(" │ ").next().unwrap_or_default().to_string();
            lines[i] = format!("{head} │ {text}");
            lines[i].clone()
        };
        if self.redraw {
            self.draw();
        } else if milestone && !self.quiet {
            eprintln!("{prefix}");
        }
    }
}

/// What happened to one phone.
struct PhoneResult {
    phone: Phone,
    /// The wallet's deployment (first contact: the TSM reads the card first), then the
    /// transit card's.
    deploys: Vec<Outcome>,
    card: Vec<Entry>,
    db: DbView,
    instance_states: Vec<String>,
}

/// Another instance AID of the same module: the module AID with a byte `02` appended (or its
/// last byte changed when it has 16 already).
fn other_instance_aid(module: &str) -> String {
    if module.len() < 32 {
        format!("{module}02")
    } else {
        let last = u8::from_str_radix(&module[30..], 16).unwrap_or(0) ^ 0x01;
        format!("{}{last:02X}", &module[..30])
    }
}

async fn demo(args: &DemoArgs, cap: Option<(String, Vec<u8>)>, dir: &Path) -> Result<(), CliError> {
    let started = Instant::now();
    let quiet = args.json;
    let say = |s: String| {
        if !quiet {
            eprintln!("{s}");
        }
    };
    let tag = run_tag().to_ascii_uppercase();

    // The node: the database, a master key of its own (kept in the directory: a database made
    // in an earlier run with --dir needs the same one), an admin token made up for the run.
    let master_path = dir.join("master.key");
    if !master_path.exists() {
        let mut master = [0u8; 32];
        getrandom_fill(&mut master);
        write_secret(&master_path, tsm_gp::hex::encode(&master).as_bytes())?;
    }
    let mut token = [0u8; 16];
    getrandom_fill(&mut token);
    let admin_token = format!("demo-{}", tsm_gp::hex::encode(&token).to_ascii_lowercase());
    let db_url = match &args.postgres {
        Some(server) => testkit::create_postgres_database(server, &format!("tsm_demo_{}", tag.to_ascii_lowercase())).await.map_err(kit)?,
        None => format!("sqlite://{}?mode=rwc", dir.join("tsm.db").display()),
    };
    let node = Node::start(testkit_config(&db_url, &master_path), &admin_token).await;
    let node = match node {
        Ok(n) => n,
        Err(e) => {
            drop_database(args, &db_url).await;
            return Err(kit(e));
        }
    };
    let where_db = if args.postgres.is_some() { tsm_server::app::redact_url(&db_url) } else { dir.join("tsm.db").display().to_string() };
    say(format!("tsm demo: TSM node at {} (database {where_db}, software key store)", node.base));

    let result = scenario(args, cap, &node, &tag, started).await;
    let kept = if args.keep || (args.dir.is_some() && args.postgres.is_none()) { keep(dir, &node, &admin_token, &db_url, result.as_ref().ok()) } else { Ok(None) };
    node.stop().await;
    drop_database(args, &db_url).await;
    let results = result?;
    let kept = kept?;

    if args.json {
        let phones: Vec<Value> = results
            .iter()
            .map(|r| {
                json!({"seId": r.phone.se_id, "kind": r.phone.kind.label(), "carrier": r.phone.kind.carrier, "issuer": r.phone.issuer_id,
                       "deployments": [{"service": "wallet", "outcome": r.deploys.first()}, {"service": "transit", "outcome": r.deploys.get(1)}], "instanceStates": r.instance_states, "card": r.card, "database": r.db,
                       "consistent": testkit::differences(&r.card, &r.db).is_empty()})
            })
            .collect();
        let doc = json!({"node": node_summary(&db_url, args.postgres.is_some()), "phones": phones, "summary": summary_json(&results, started), "kept": kept.as_ref().map(|p| p.display().to_string())});
        println!("{}", serde_json::to_string_pretty(&doc).unwrap_or_default());
    } else {
        print_results(&results, started);
        if let Some(d) = &kept {
            println!(
                "\nkept: the database {}; in {}: master.key, admin.token, cards/*.json (tsm agent --card-state), tsm.toml\n  go on with: tsm serve --config {}",
                tsm_server::app::redact_url(&db_url),
                d.display(),
                d.join("tsm.toml").display()
            );
        }
    }
    let bad: Vec<String> = results.iter().flat_map(|r| testkit::differences(&r.card, &r.db).into_iter().map(move |d| format!("{}: {d}", r.phone.se_id))).collect();
    if !bad.is_empty() {
        return Err(CliError::failed("demo.registry_mismatch", format!("the card and the database disagree: {}", bad.join("; "))));
    }
    Ok(())
}

fn testkit_config(db_url: &str, master: &Path) -> tsm_server::config::Config {
    let mut config = testkit::loopback_config(db_url, &format!("file:{}", master.display()));
    config.database.max_connections = 8;
    config
}

/// The PostgreSQL database made for this run goes, unless --keep.
async fn drop_database(args: &DemoArgs, db_url: &str) {
    if args.postgres.is_some()
        && !args.keep
        && let Err(e) = testkit::drop_postgres_database(db_url).await
    {
        eprintln!("warning: {e}");
    }
}

fn node_summary(db_url: &str, postgres: bool) -> Value {
    json!({"database": if postgres { "postgres" } else { "sqlite" }, "url": tsm_server::app::redact_url(db_url), "keyStore": "software"})
}

/// Onboarding, the catalog, the phones, and one deployment per phone (in parallel).
async fn scenario(args: &DemoArgs, cap: Option<(String, Vec<u8>)>, node: &Node, tag: &str, started: Instant) -> Result<Vec<PhoneResult>, CliError> {
    let quiet = args.json;
    let say = |s: String| {
        if !quiet {
            eprintln!("{s}");
        }
    };
    let provider = testkit::provider(&node.admin, &format!("acme-pay-{tag}")).await.map_err(kit)?;
    let issuer = testkit::issuer(&node.admin, &format!("acme-mobile-{tag}"), KeyAlg::Des3_2k, Diversification::EmvCps11, 0x30).await.map_err(kit)?;
    say(format!("onboarded: service provider {} ({}), SE issuer {} (3DES master keys, EMV CPS 1.1 diversification)", provider.name, provider.id, issuer.name));

    let (cap_name, cap_bytes) = cap.unwrap_or_else(|| ("tsm-demo.cap".into(), testkit::demo_cap()));
    let elf = testkit::upload(&provider, &cap_name, cap_bytes).await.map_err(kit)?;
    let applets = testkit::applets(&elf);
    let Some(first) = applets.first().cloned() else {
        return Err(CliError::new("demo.no_applet", format!("{cap_name} has no applet to install")));
    };
    // Two services on the same load file: the wallet (the first applet) and a transit card
    // (the second applet, or another instance of the first).
    let (transit_module, transit_instance) = match applets.get(1) {
        Some(a) => (a.clone(), a.clone()),
        None => (first.clone(), other_instance_aid(&first)),
    };
    say(format!(
        "uploaded {cap_name}: package {} {} version {}, applets {}, load file {} bytes (SHA-256 {}…)",
        elf["aid"].as_str().unwrap_or_default(),
        elf["packageName"].as_str().unwrap_or("-"),
        elf["packageVersion"].as_str().unwrap_or_default(),
        applets.join(" "),
        elf["loadFileSize"],
        elf["hashes"]["sha256"].as_str().unwrap_or_default().get(..16).unwrap_or_default(),
    ));
    let wallet = testkit::service(&provider, "wallet", &elf, &first, &first, 8192).await.map_err(kit)?;
    let transit = testkit::service(&provider, "transit", &elf, &transit_module, &transit_instance, 8192).await.map_err(kit)?;
    say(format!("services 'wallet' ({}) and 'transit' ({}), version 1.0: personalization with a clear and a sensitive DGI", wallet.instance_aid, transit.instance_aid));

    let mut phones = Vec::new();
    for n in 0..args.phones as usize {
        let kind = PhoneKind::DEMO[n % PhoneKind::DEMO.len()];
        let se_id = format!("{}-{tag}-{:02}", kind.carrier.to_ascii_uppercase(), n + 1);
        let keys = if kind.carrier == "uicc" { PhoneKeys::Issuer(&issuer) } else { PhoneKeys::Own };
        let phone = Phone::new(&se_id, kind, keys, None).map_err(kit)?;
        phone.register(&node.admin, &provider, testkit::DEMO_SSD_AID, 32 * 1024).await.map_err(kit)?;
        phones.push(phone);
    }
    say(format!("registered {} phone(s), each SE with its own ISD keys; deploying over the air (GP SERAM over HTTP, local agents):", phones.len()));

    let width = phones.iter().map(|p| p.kind.label().len()).max().unwrap_or(0);
    let id_width = phones.iter().map(|p| p.se_id.len()).max().unwrap_or(0);
    let lines = phones.iter().map(|p| format!("  {:<id_width$} {:<width$} │ waiting", p.se_id, p.kind.label())).collect();
    let progress = Progress::new(lines, quiet);
    // The agent's session future is not Send (its progress callback is a plain FnMut): the
    // phones run side by side on this thread, the node on the runtime's workers.
    let local = tokio::task::LocalSet::new();
    let mut tasks = tokio::task::JoinSet::new();
    for (i, phone) in phones.into_iter().enumerate() {
        let (provider, services, base, progress) = (provider.clone(), [wallet.clone(), transit.clone()], node.base.clone(), progress.clone());
        tasks.spawn_local_on(
            async move {
                let mut outcomes = Vec::new();
                let mut instances = Vec::new();
                for s in &services {
                    let instance = testkit::instance(&provider, s, &phone.se_id).await?;
                    let (mut orders, mut apdus) = (0u64, 0u64);
                    let name = s.name.clone();
                    let before: String = outcomes.iter().map(|o: &Outcome| format!("{} ✓ ", o.round_trips)).collect();
                    let outcome = testkit::run_operation(&base, &provider, &phone, &instance, "deploy", |e| {
                        let text = match e {
                            AgentEvent::Handshake { .. } => "handshake".to_string(),
                            AgentEvent::OrderReceived { number, .. } => {
                                orders = *number;
                                format!("order {number}")
                            }
                            AgentEvent::Apdu { .. } => {
                                apdus += 1;
                                format!("order {orders}, {apdus} APDUs")
                            }
                            AgentEvent::Notification(n) => format!("{apdus} APDUs, {}", n.rsplit('/').next().unwrap_or_default()),
                            _ => return,
                        };
                        progress.set(i, format!("{before}{name}: {text}"), false);
                    })
                    .await?;
                    let failed = outcome.state != "COMPLETED";
                    outcomes.push(outcome);
                    instances.push(instance);
                    if failed {
                        break;
                    }
                }
                let text: Vec<String> = services.iter().zip(&outcomes).map(|(s, o)| format!("{} {} in {} round trip(s), {} APDUs, {} ms", s.name, o.state, o.round_trips, o.apdus, o.elapsed_ms)).collect();
                progress.set(i, text.join(" · "), true);
                Ok::<_, KitError>((i, phone, instances, outcomes))
            },
            &local,
        );
    }
    let mut done = Vec::new();
    local
        .run_until(async {
            while let Some(r) = tasks.join_next().await {
                done.push(r.map_err(|e| CliError::failed("demo.task", e.to_string()))?.map_err(kit)?);
            }
            Ok::<_, CliError>(())
        })
        .await?;
    done.sort_by_key(|d| d.0);
    say(format!("deployed in {:.2} s", started.elapsed().as_secs_f64()));

    let mut results = Vec::new();
    for (_, phone, instances, deploys) in done {
        for d in &deploys {
            if d.state != "COMPLETED" {
                let (code, msg) = d.error.as_ref().map(|e| (e["code"].as_str().unwrap_or("demo.deploy_failed").to_string(), e["message"].as_str().unwrap_or_default().to_string())).unwrap_or(("demo.deploy_failed".into(), String::new()));
                return Err(CliError::failed(code, format!("deployment {} to {} ({}) ended {}: {msg}", d.process_id, phone.se_id, phone.kind.label(), d.state)));
            }
        }
        let card = phone.registry().map_err(kit)?;
        let db = testkit::db_view(node.store(), &phone.se_id).await.map_err(kit)?;
        let mut instance_states = Vec::new();
        for i in &instances {
            instance_states.push(testkit::instance_state(&provider, i).await.map_err(kit)?);
        }
        results.push(PhoneResult { phone, deploys, card, db, instance_states });
    }
    Ok(results)
}

const SERVICES: [&str; 2] = ["wallet", "transit"];

fn print_results(results: &[PhoneResult], started: Instant) {
    for r in results {
        println!("\n{} · {}{}", r.phone.se_id, r.phone.kind.label(), if r.phone.issuer_id.is_some() { " · ISD keys diversified from the issuer's" } else { " · ISD keys of its own" });
        for (n, d) in r.deploys.iter().enumerate() {
            let why = if n == 0 { " (first contact: the TSM reads the card's counter and registry first)" } else { "" };
            println!(
                "  deploy {:<8} {} in {} round trip(s){why}: {} APDUs, {} SERAM orders with Start and Stop, {} ms; instance {}",
                SERVICES[n],
                d.state,
                d.round_trips,
                d.apdus,
                d.orders,
                d.elapsed_ms,
                r.instance_states.get(n).map(String::as_str).unwrap_or("?")
            );
        }
        let reg = r.db.registry.clone().unwrap_or_default();
        let mut aids: Vec<(&'static str, String)> = r.card.iter().map(|e| (e.kind, e.aid.clone())).chain(reg.iter().map(|e| (e.kind, e.aid.clone()))).collect();
        aids.sort_by_key(|(k, a)| (kind_order(k), a.clone()));
        aids.dedup();
        println!("  {:<4} {:<34} {:<20} {:<18} {:<18}", "", "AID", "associated SD", "card (GET STATUS)", "database");
        for (kind, aid) in aids {
            let c = r.card.iter().find(|e| e.aid == aid);
            let b = reg.iter().find(|e| e.aid == aid);
            let sd = c.or(b).and_then(|e| e.sd.clone()).unwrap_or_default();
            let show = |e: Option<&Entry>| e.map(|e| e.life_cycle_name()).unwrap_or_else(|| "—".into());
            let mark = if c == b { "✓" } else { "✗" };
            println!("  {kind:<4} {aid:<34} {sd:<20} {:<18} {:<18} {mark}", show(c), show(b));
        }
    }
    let per = |n: usize| results.iter().filter_map(|r| r.deploys.get(n).map(|d| d.round_trips)).collect::<Vec<u64>>();
    let apdus: u64 = results.iter().flat_map(|r| &r.deploys).map(|d| d.apdus).sum();
    let count: usize = results.iter().map(|r| r.deploys.len()).sum();
    let agree = results.iter().filter(|r| testkit::differences(&r.card, &r.db).is_empty()).count();
    println!(
        "\n{count} deployments on {} phone(s) in {:.2} s. Round trips per deployment: {} at first contact, {} once the TSM knows the card; \
         {apdus} APDUs in all (one APDU per round trip: {apdus} round trips). {agree} of {} cards agree with the database.",
        results.len(),
        started.elapsed().as_secs_f64(),
        range(&per(0)),
        range(&per(1)),
        results.len()
    );
}

fn kind_order(k: &str) -> u8 {
    match k {
        "sd" => 0,
        "elf" => 1,
        _ => 2,
    }
}

fn range(v: &[u64]) -> String {
    match (v.iter().min(), v.iter().max()) {
        (Some(a), Some(b)) if a == b => a.to_string(),
        (Some(a), Some(b)) => format!("{a}–{b}"),
        _ => "-".into(),
    }
}

fn summary_json(results: &[PhoneResult], started: Instant) -> Value {
    let per = |n: usize| results.iter().filter_map(|r| r.deploys.get(n).map(|d| d.round_trips)).collect::<Vec<u64>>();
    let all: Vec<&Outcome> = results.iter().flat_map(|r| &r.deploys).collect();
    json!({"deployments": all.len(), "completed": all.iter().filter(|d| d.state == "COMPLETED").count(),
           "roundTripsFirstContact": per(0), "roundTripsKnownCard": per(1), "apdus": all.iter().map(|d| d.apdus).sum::<u64>(),
           "consistent": results.iter().all(|r| testkit::differences(&r.card, &r.db).is_empty()),
           "elapsedMs": started.elapsed().as_millis() as u64})
}

/// Writes a file only its owner reads.
fn write_secret(path: &Path, bytes: &[u8]) -> Result<(), CliError> {
    let mut o = std::fs::OpenOptions::new();
    o.write(true).create(true).truncate(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut o, 0o600);
    let mut f = o.open(path).map_err(|e| io_err("cannot write", path, e))?;
    f.write_all(bytes).map_err(|e| io_err("cannot write", path, e))
}

/// `--keep`: the cards' state files (with their storage keys), the admin token and a
/// configuration to go on with `tsm serve`.
fn keep(dir: &Path, _node: &Node, admin_token: &str, db_url: &str, results: Option<&Vec<PhoneResult>>) -> Result<Option<PathBuf>, CliError> {
    write_secret(&dir.join("admin.token"), admin_token.as_bytes())?;
    let cards = dir.join("cards");
    std::fs::create_dir_all(&cards).map_err(|e| io_err("cannot create", &cards, e))?;
    for r in results.into_iter().flatten() {
        let path = cards.join(format!("{}.json", r.phone.se_id));
        let key = storage_key(&path, None, true)?;
        let card = r.phone.card.lock().map_err(|_| CliError::failed("se.state", "the card panicked"))?;
        write_state(&card, &path, &key)?;
    }
    let toml = format!(
        "# Written by `tsm demo --keep`: the demo's node, to go on with `tsm serve --config {}`.\n\
         [server]\nlisten = \"127.0.0.1:8080\"\nnode_id = \"tsm-demo\"\n\n[database]\nurl = \"{}\"\n\n\
         [keys]\nkind = \"software\"\nmaster = \"file:{}\"\n\n[api]\nadmin_token = \"file:{}\"\nallow_http_callbacks = true\n",
        dir.join("tsm.toml").display(),
        db_url,
        dir.join("master.key").display(),
        dir.join("admin.token").display()
    );
    std::fs::write(dir.join("tsm.toml"), toml).map_err(|e| io_err("cannot write", &dir.join("tsm.toml"), e))?;
    Ok(Some(dir.to_path_buf()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn another_instance_of_the_same_module() {
        assert_eq!(other_instance_aid("D0D1D2D3D4D50101"), "D0D1D2D3D4D5010102");
        assert_eq!(other_instance_aid("A0000000000000000000000000000001"), "A0000000000000000000000000000000");
    }

    /// The whole demo, as `tsm demo --phones 3 --json` runs it (SQLite, a temporary directory):
    /// every deployment completes and every card agrees with the database.
    #[test]
    fn the_demo_runs_end_to_end() {
        let args = DemoArgs { phones: 3, cap: None, keep: false, dir: None, postgres: None, json: true };
        run(args).unwrap_or_else(|e| panic!("{e}"));
    }
}
