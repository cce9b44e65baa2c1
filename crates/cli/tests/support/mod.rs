//! Shared by the `process_*` tests: real `tsm serve` and `tsm agent` processes on loopback.
//!
//! - [`Server`]: a `tsm serve` child on a free port with its own TOML file and log; SIGKILL,
//!   SIGTERM, restart on the same port and database; killed when dropped.
//! - [`Phone`]: a simulated card made with `tsm card new` (state file + `.key`), the SE
//!   registration the TSM gets for it, and [`Phone::agent`] to run `tsm agent` on it with an
//!   APDU log (`--apdu-log`): the card's own record of what it received.
//! - [`Forwarder`]: an HTTP forwarder between the agents and the servers: each session's
//!   requests to the servers in turn, answers dropped or servers killed (SIGKILL, SIGTERM) at
//!   chosen requests by a [`controller`] that restarts them; [`timed_kills`] kills at random
//!   times instead.
//! - [`Api`]: the provider and admin API over HTTP, for onboarding and for reading processes.
//! - [`verify_phone`]: everything "nothing lost, nothing applied twice" means for one card.
//!
//! Every child process is killed when its guard drops (also when a test panics); the logs of
//! servers and agents are printed when a test fails, and `TSM_KEEP_TEST_DIRS=1` keeps them.
#![allow(dead_code)]

use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tsm_gp::crypto::SecretKey;
use tsm_server::store::testing::{self, TestDb};
use tsm_server::testkit::{self, RegistryRow};

pub const ADMIN: &str = "process-tests-admin-token-0123456789";
/// The software key store's master key of every server of a test (the nodes share keys).
pub const MASTER_KEY: &str = "6b1c8a3d5e7f90a1b2c3d4e5f60718293a4b5c6d7e8f90a1b2c3d4e5f6071829";
pub const SSD_AID: &str = "A00000015153504101";
pub const ELF_AID: &str = "D0D1D2D3D4D501";
pub const MODULE_AID: &str = "D0D1D2D3D4D50101";
pub const CLEAR_DGI: &str = "01010447114711";
pub const SECRET_DGI: &str = "800110C0FFEE5EC2E7C0FFEE5EC2E7C0FFEE5E";

pub fn tsm() -> &'static str {
    env!("CARGO_BIN_EXE_tsm")
}

pub fn testdata(rel: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../testdata").join(rel)
}

/// A small deterministic generator (splitmix64): kill points and pauses from a fixed seed.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed ^ 0x9E37_79B9_7F4A_7C15)
    }
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    /// Uniform in `lo..hi`.
    pub fn range(&mut self, lo: u64, hi: u64) -> u64 {
        lo + self.next_u64() % (hi - lo).max(1)
    }
    pub fn millis(&mut self, lo: u64, hi: u64) -> Duration {
        Duration::from_millis(self.range(lo, hi))
    }
}

// ---- databases ------------------------------------------------------------------------------

/// A fresh PostgreSQL database (`TSM_TEST_DATABASE_URL` as in `tsm_server::store::testing`);
/// `None` (the caller skips) when the tests run on SQLite only, or PostgreSQL is absent and
/// `TSM_TEST_ALLOW_NO_POSTGRES=1`.
pub async fn postgres() -> Option<TestDb> {
    let Some(server) = testing::selected().1 else {
        eprintln!("skipped: TSM_TEST_DATABASE_URL={} (this test needs PostgreSQL)", std::env::var("TSM_TEST_DATABASE_URL").unwrap_or_default());
        return None;
    };
    testing::postgres_or_skip(&server).await
}

pub async fn sqlite() -> TestDb {
    TestDb::sqlite().await.expect("SQLite test database")
}

/// Runs a test body on its own task so that a panic in it still lets the database be dropped
/// (the body's process guards have been dropped by then: every child is dead).
pub async fn with_db<F, Fut>(db: TestDb, body: F)
where
    F: FnOnce(Arc<TestDb>) -> Fut,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    let db = Arc::new(db);
    let result = tokio::spawn(body(db.clone())).await;
    if let Ok(db) = Arc::try_unwrap(db) {
        db.finish().await;
    }
    if let Err(e) = result {
        std::panic::resume_unwind(e.try_into_panic().unwrap_or_else(|e| Box::new(e.to_string())));
    }
}

// ---- ports and files --------------------------------------------------------------------------

/// A temporary directory for a test's configuration, logs and cards; kept (and its path
/// printed) with `TSM_KEEP_TEST_DIRS=1`.
pub fn test_dir(name: &str) -> tempfile::TempDir {
    let mut d = tempfile::Builder::new().prefix(&format!("tsm-{name}-")).tempdir().unwrap();
    if std::env::var("TSM_KEEP_TEST_DIRS").as_deref() == Ok("1") {
        eprintln!("{name}: files in {}", d.path().display());
        d.disable_cleanup(true);
    }
    d
}

/// A port that was free a moment ago, outside the kernel's ephemeral range (32768–60999), so
/// that no outgoing connection of another test takes it between a kill and a restart.
pub fn free_port() -> u16 {
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    let mut rng = Rng::new(std::process::id() as u64 ^ (NEXT.fetch_add(1, Ordering::SeqCst) as u64) << 32 ^ now_nanos());
    for _ in 0..200 {
        let port = rng.range(20_000, 32_000) as u16;
        if std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
    panic!("no free port in 20000..32000");
}

fn now_nanos() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_nanos() as u64).unwrap_or(0)
}

/// The last `n` lines of a file (for failure reports).
pub fn tail(path: &Path, n: usize) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

fn send_signal(pid: u32, sig: i32) {
    unsafe extern "C" {
        fn kill(pid: i32, sig: i32) -> i32;
    }
    // SAFETY: kill(2) with a child's pid; no memory is involved.
    unsafe {
        kill(pid as i32, sig);
    }
}
const SIGTERM: i32 = 15;

/// A child's exit status within `timeout` (polling), `None` if it is still running.
async fn wait_child(child: &mut Child, timeout: Duration) -> Option<ExitStatus> {
    let t0 = Instant::now();
    loop {
        if let Some(s) = child.try_wait().expect("try_wait") {
            return Some(s);
        }
        if t0.elapsed() >= timeout {
            return None;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

// ---- servers ----------------------------------------------------------------------------------

#[derive(Debug, Clone)]
pub struct ServerOpts {
    pub long_poll_seconds: u64,
    pub order_delay_ms: u64,
    pub shutdown_grace_seconds: u64,
    pub max_connections: u32,
}

impl Default for ServerOpts {
    fn default() -> Self {
        ServerOpts { long_poll_seconds: 2, order_delay_ms: 0, shutdown_grace_seconds: 10, max_connections: 5 }
    }
}

/// A `tsm serve` process. Restarts keep the port, the configuration and the database.
pub struct Server {
    pub name: String,
    pub port: u16,
    pub config: PathBuf,
    pub log: PathBuf,
    child: Option<Child>,
    pub starts: u32,
    pub kills: u32,
}

impl Server {
    /// Writes `<dir>/<name>.toml` and starts the server (not waiting for it: see [`Server::ready`]).
    pub fn spawn(dir: &Path, name: &str, db_url: &str, o: &ServerOpts) -> Server {
        let port = free_port();
        let config = dir.join(format!("{name}.toml"));
        std::fs::write(
            &config,
            format!(
                "[server]\nlisten = \"127.0.0.1:{port}\"\nnode_id = \"{name}\"\n\n\
                 [database]\nurl = \"{db_url}\"\nmax_connections = {}\n\n\
                 [keys]\nkind = \"software\"\nmaster = \"env:TSM_MASTER_KEY\"\n\n\
                 [api]\nadmin_token = \"env:TSM_ADMIN_TOKEN\"\nallow_http_callbacks = true\nshutdown_grace_seconds = {}\n\n\
                 [seram]\nlong_poll_seconds = {}\norder_delay_ms = {}\n\n\
                 [callbacks]\ninitial_backoff_ms = 200\nmax_backoff_ms = 1000\ntimeout_ms = 1000\n",
                o.max_connections, o.shutdown_grace_seconds, o.long_poll_seconds, o.order_delay_ms
            ),
        )
        .unwrap();
        let mut s = Server { name: name.into(), port, log: dir.join(format!("{name}.log")), config, child: None, starts: 0, kills: 0 };
        s.start();
        s
    }

    pub fn base(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(|c| c.id())
    }

    pub fn is_running(&mut self) -> bool {
        self.child.as_mut().is_some_and(|c| c.try_wait().ok().flatten().is_none())
    }

    fn start(&mut self) {
        assert!(self.child.is_none(), "{} is running", self.name);
        self.starts += 1;
        let log = std::fs::OpenOptions::new().create(true).append(true).open(&self.log).unwrap();
        use std::io::Write;
        writeln!(&log, "==== start {} of {} ====", self.starts, self.name).unwrap();
        let mut cmd = Command::new(tsm());
        for (k, _) in std::env::vars() {
            if k.starts_with("TSM_") {
                cmd.env_remove(k);
            }
        }
        cmd.arg("serve")
            .arg("--config")
            .arg(&self.config)
            .env("TSM_MASTER_KEY", MASTER_KEY)
            .env("TSM_ADMIN_TOKEN", ADMIN)
            .env("TSM_LOG", "info")
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log);
        self.child = Some(cmd.spawn().expect("spawn tsm serve"));
    }

    /// Waits for `GET /health` to answer 200 (the process dying first is a failure).
    pub async fn ready(&mut self) {
        let http = client();
        let url = format!("{}/health", self.base());
        let t0 = Instant::now();
        loop {
            if let Ok(r) = http.get(&url).timeout(Duration::from_secs(2)).send().await
                && r.status().as_u16() == 200
            {
                return;
            }
            if let Some(c) = self.child.as_mut()
                && let Some(s) = c.try_wait().unwrap()
            {
                panic!("{} exited before it was ready ({s}):\n{}", self.name, tail(&self.log, 30));
            }
            assert!(t0.elapsed() < Duration::from_secs(30), "{} not ready after 30 s:\n{}", self.name, tail(&self.log, 30));
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    }

    /// SIGKILL (no chance to finish anything), and reap it.
    pub fn sigkill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
            self.kills += 1;
            use std::io::Write;
            if let Ok(f) = std::fs::OpenOptions::new().append(true).open(&self.log) {
                let _ = writeln!(&f, "==== SIGKILL ====");
            }
        }
    }

    pub fn sigterm(&mut self) {
        if let Some(pid) = self.pid() {
            send_signal(pid, SIGTERM);
        }
    }

    /// The exit status once the process ends (within `timeout`, else a failure).
    pub async fn wait_exit(&mut self, timeout: Duration) -> ExitStatus {
        let c = self.child.as_mut().expect("running");
        let s = wait_child(c, timeout).await.unwrap_or_else(|| panic!("{} still running after {timeout:?}:\n{}", self.name, tail(&self.log, 20)));
        self.child = None;
        s
    }

    /// Starts it again (same port, configuration and database) and waits until it is ready.
    pub async fn restart(&mut self) {
        if self.is_running() {
            self.sigkill();
        }
        self.child = None;
        self.start();
        self.ready().await;
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
        if std::thread::panicking() {
            eprintln!("---- {} log (last lines) ----\n{}", self.name, tail(&self.log, 40));
        }
    }
}

pub fn client() -> reqwest::Client {
    tsm_server::http::install_crypto_provider();
    reqwest::Client::builder().timeout(Duration::from_secs(30)).build().unwrap()
}

// ---- the provider and admin API -------------------------------------------------------------

#[derive(Clone)]
pub struct Api {
    pub http: reqwest::Client,
    pub base: String,
}

#[derive(Debug, Clone)]
pub struct Tenant {
    pub id: String,
    pub token: String,
}

#[derive(Debug, Clone)]
pub struct Catalog {
    pub service_id: String,
    pub instance_aid: String,
}

impl Api {
    pub fn new(base: impl Into<String>) -> Api {
        Api { http: client(), base: base.into() }
    }

    pub async fn call(&self, method: &str, path: &str, token: Option<&str>, body: Option<Value>) -> (u16, Value) {
        let mut r = self.http.request(method.parse().unwrap(), format!("{}{path}", self.base));
        if let Some(t) = token {
            r = r.bearer_auth(t);
        }
        if let Some(b) = body {
            r = r.json(&b);
        }
        let resp = r.send().await.unwrap_or_else(|e| panic!("{method} {path}: {e}"));
        let status = resp.status().as_u16();
        let text = resp.text().await.unwrap();
        (status, serde_json::from_str(&text).unwrap_or(Value::Null))
    }

    pub async fn admin(&self, method: &str, path: &str, body: Option<Value>) -> (u16, Value) {
        self.call(method, path, Some(ADMIN), body).await
    }

    /// A provider (with a callback URL, so that every process end is put in the outbox) and its
    /// short-term token.
    pub async fn provider(&self, name: &str) -> Tenant {
        let (s, b) = self.admin("POST", "/api/v1/admin/service-providers", Some(json!({"name": name, "callbackUrl": "http://127.0.0.1:9/tsm-callback"}))).await;
        assert_eq!(s, 201, "{b}");
        let long_term = b["longTermToken"].as_str().unwrap().to_string();
        let (s, t) = self.call("POST", "/api/v1/auth", Some(&long_term), None).await;
        assert_eq!(s, 200, "{t}");
        Tenant { id: b["serviceProvider"]["id"].as_str().unwrap().into(), token: t["accessToken"].as_str().unwrap().into() }
    }

    /// Registers the phone's SE (its ISD keys) and gives `t` an SSD on it.
    pub async fn register(&self, phone: &Phone, t: &Tenant) {
        let (s, b) = self.admin("POST", "/api/v1/admin/secure-elements", Some(phone.registration())).await;
        assert_eq!(s, 201, "{b}");
        let (s, sd) = self
            .admin("POST", &format!("/api/v1/admin/secure-elements/{}/security-domains", phone.se_id), Some(json!({"providerId": t.id, "aid": SSD_AID, "memoryQuota": 32000})))
            .await;
        assert_eq!(s, 201, "{sd}");
    }

    /// The helloworld ELF of `t` (uploaded once).
    pub async fn elf(&self, t: &Tenant) -> String {
        let cap = std::fs::read(testdata("vectors/cap/kaoh_helloworld.cap")).unwrap();
        let r = self
            .http
            .post(format!("{}/api/v1/executable-load-files?fileName=helloworld.cap", self.base))
            .bearer_auth(&t.token)
            .header("content-type", "application/octet-stream")
            .body(cap)
            .send()
            .await
            .unwrap();
        let status = r.status().as_u16();
        let b: Value = r.json().await.unwrap();
        if status == 201 {
            return b["id"].as_str().unwrap().into();
        }
        assert_eq!(status, 409, "{b}");
        let (_, l) = self.call("GET", "/api/v1/executable-load-files", Some(&t.token), None).await;
        l.as_array().unwrap().iter().find(|e| e["aid"] == ELF_AID).unwrap()["id"].as_str().unwrap().into()
    }

    /// A service installing the helloworld applet as `instance_aid`, with a personalization
    /// script (a clear and a sensitive DGI) when `perso`.
    pub async fn service(&self, t: &Tenant, name: &str, instance_aid: &str, perso: bool) -> Catalog {
        let tok = Some(t.token.as_str());
        let elf = self.elf(t).await;
        let (s, svc) = self.call("POST", "/api/v1/services", tok, Some(json!({"name": name}))).await;
        assert_eq!(s, 201, "{svc}");
        let sid = svc["id"].as_str().unwrap().to_string();
        let (s, v) = self.call("POST", &format!("/api/v1/services/{sid}/versions"), tok, Some(json!({"tag": "1.0", "elfId": elf}))).await;
        assert_eq!(s, 201, "{v}");
        let (s, f) = self.call("POST", &format!("/api/v1/services/{sid}/versions/1.0/flavors"), tok, Some(json!({"name": "default", "memoryQuota": 4000}))).await;
        assert_eq!(s, 201, "{f}");
        let fid = f["id"].as_str().unwrap();
        let (s, a) = self
            .call(
                "POST",
                &format!("/api/v1/services/{sid}/flavors/{fid}/application-configs"),
                tok,
                Some(json!({"moduleAid": MODULE_AID, "instanceAid": instance_aid, "privileges": "00", "nvQuota": 1024})),
            )
            .await;
        assert_eq!(s, 201, "{a}");
        if perso {
            let (s, p) = self
                .call(
                    "POST",
                    "/api/v1/personalization-scripts",
                    tok,
                    Some(json!({"applicationConfigId": a["id"], "name": "keys", "blocks": [{"data": CLEAR_DGI}, {"data": SECRET_DGI, "sensitive": true}]})),
                )
                .await;
            assert_eq!(s, 201, "{p}");
        }
        Catalog { service_id: sid, instance_aid: instance_aid.into() }
    }

    pub async fn instance(&self, t: &Tenant, c: &Catalog, se: &str) -> String {
        let (s, i) = self.call("POST", "/api/v1/service-instances", Some(&t.token), Some(json!({"serviceId": c.service_id, "seId": se}))).await;
        assert_eq!(s, 201, "{i}");
        i["id"].as_str().unwrap().into()
    }

    /// Queues an operation: (process id, session id).
    pub async fn queue(&self, t: &Tenant, instance: &str, op: &str) -> (String, String) {
        let (s, q) = self.call("POST", &format!("/api/v1/service-instances/{instance}/{op}"), Some(&t.token), None).await;
        assert_eq!(s, 202, "{op}: {q}");
        (q["processId"].as_str().unwrap().into(), q["sessionId"].as_str().unwrap().into())
    }

    pub async fn get(&self, t: &Tenant, path: &str) -> Value {
        let (s, v) = self.call("GET", path, Some(&t.token), None).await;
        assert_eq!(s, 200, "GET {path}: {v}");
        v
    }
}

// ---- phones: simulated cards and their agents -----------------------------------------------

/// What a phone's card is.
#[derive(Debug, Clone)]
pub struct CardSpec {
    pub profile: &'static str,
    /// `tsm card new --scp` (e.g. `scp02:55`).
    pub scp: &'static str,
    pub scp_id: u8,
    pub scp_i: u8,
    pub key: &'static str,
    /// The key algorithm for the admin API.
    pub alg: &'static str,
}

/// SCP02 i=55 on a UICC (predictable challenge: one round trip once the counter is known).
pub const UICC_SCP02: CardSpec = CardSpec { profile: "uicc", scp: "scp02:55", scp_id: 2, scp_i: 0x55, key: "404142434445464748494A4B4C4D4E4F", alg: "des3-2k" };
/// SCP02 i=15 on a microSD (random card challenge: INITIALIZE UPDATE is a round trip of its own).
pub const MICROSD_SCP02: CardSpec = CardSpec { profile: "microsd", scp: "scp02:15", scp_id: 2, scp_i: 0x15, key: "4A4B4C4D4E4F50515253545556575859", alg: "des3-2k" };
/// SCP03 i=70 on an eSE (pseudo-random challenge: a whole deployment in one order).
pub const ESE_SCP03: CardSpec = CardSpec { profile: "ese", scp: "scp03:70", scp_id: 3, scp_i: 0x70, key: "000102030405060708090A0B0C0D0E0F", alg: "aes128" };
/// SCP03 i=70 on a UICC with AES-256 keys.
pub const UICC_SCP03: CardSpec =
    CardSpec { profile: "uicc", scp: "scp03:70", scp_id: 3, scp_i: 0x70, key: "303132333435363738393A3B3C3D3E3F404142434445464748494A4B4C4D4E4F", alg: "aes256" };

pub struct Phone {
    pub name: String,
    pub se_id: String,
    pub spec: CardSpec,
    pub dir: PathBuf,
    pub state: PathBuf,
    pub apdu_log: PathBuf,
    /// Agent runs so far (each has its own stdout/stderr files).
    pub runs: u32,
}

impl Phone {
    /// `tsm card new` in `<dir>/<name>/`.
    pub fn new(dir: &Path, name: &str, spec: CardSpec, seed: u64) -> Phone {
        let pdir = dir.join(name);
        std::fs::create_dir_all(&pdir).unwrap();
        let state = pdir.join("card.json");
        let out = Command::new(tsm())
            .args(["card", "new", "--profile", spec.profile, "--scp", spec.scp, "--keys", spec.key, "--kvn", "30", "--seed", &seed.to_string(), "--state"])
            .arg(&state)
            .output()
            .unwrap();
        assert!(out.status.success(), "tsm card new: {}", String::from_utf8_lossy(&out.stderr));
        Phone { name: name.into(), se_id: format!("PROC-{name}"), spec, apdu_log: pdir.join("apdu.log"), state, dir: pdir, runs: 0 }
    }

    /// The body of `POST /api/v1/admin/secure-elements` for this card.
    pub fn registration(&self) -> Value {
        let s = &self.spec;
        json!({
            "seId": self.se_id, "carrier": s.profile, "profile": s.profile, "isdAid": "A000000151000000",
            "scp": s.scp_id, "scpI": s.scp_i,
            "isdKeys": {"kind": "imported", "kvn": 48, "alg": s.alg, "enc": s.key, "mac": s.key, "dek": s.key}
        })
    }

    /// Starts `tsm agent` for `session` at `server` on this card (with the APDU log), with
    /// test timers: retries start after 50 ms and are at most 300 ms apart; `retry_for` as given.
    pub fn agent(&mut self, server: &str, session: &str, retry_for: Duration) -> AgentRun {
        self.runs += 1;
        let out = self.dir.join(format!("agent-{}.out", self.runs));
        let err = self.dir.join(format!("agent-{}.err", self.runs));
        let mut cmd = Command::new(tsm());
        for (k, _) in std::env::vars() {
            if k.starts_with("TSM_") {
                cmd.env_remove(k);
            }
        }
        cmd.args(["agent", "--server", server, "--session", session, "--se-id", &self.se_id, "-v", "--card-state"])
            .arg(&self.state)
            .arg("--apdu-log")
            .arg(&self.apdu_log)
            .args(["--request-timeout", "20", "--backoff-start", "0.05", "--backoff-max", "0.3", "--retry-for"])
            .arg(format!("{:.3}", retry_for.as_secs_f64()))
            .stdin(Stdio::null())
            .stdout(std::fs::File::create(&out).unwrap())
            .stderr(std::fs::File::create(&err).unwrap());
        let child = cmd.spawn().expect("spawn tsm agent");
        AgentRun { name: format!("{} run {}", self.name, self.runs), child: Some(child), out, err, session: session.into() }
    }

    /// The card as its state file holds it now.
    pub fn card(&self) -> tsm_se::SimCard {
        let mut key_path = self.state.as_os_str().to_owned();
        key_path.push(".key");
        let hex = std::fs::read_to_string(PathBuf::from(key_path)).unwrap();
        let key = SecretKey::aes(&tsm_gp::hex::decode(hex.trim()).unwrap()).unwrap();
        tsm_se::SimCard::load(&self.state, &key).unwrap()
    }

    /// The card's registry as (kind, AID, life cycle, associated SD), sorted.
    pub fn registry(&self) -> Vec<RegistryRow> {
        testkit::sim_registry(&self.card())
    }

    /// Load files the card did not come with.
    pub fn loaded_files(&self) -> usize {
        self.card().state().load_files.iter().filter(|l| !l.builtin).count()
    }

    /// The APDU log: the agent runs, each a list of orders, each a list of (C-APDU, R-APDU).
    pub fn card_log(&self) -> Vec<Vec<Vec<(String, String)>>> {
        let text = std::fs::read_to_string(&self.apdu_log).unwrap_or_default();
        let mut runs: Vec<Vec<Vec<(String, String)>>> = Vec::new();
        let mut pending: Option<String> = None;
        for line in text.lines() {
            if line.starts_with("# tsm agent run") {
                runs.push(Vec::new());
            } else if line.starts_with("# order") {
                runs.last_mut().expect("a run").push(Vec::new());
            } else if let Some(c) = line.strip_prefix("=> ") {
                assert!(pending.is_none(), "two commands in a row in {}", self.apdu_log.display());
                pending = Some(c.to_string());
            } else if let Some(r) = line.strip_prefix("<= ") {
                let c = pending.take().expect("a response without a command");
                runs.last_mut().unwrap().last_mut().expect("an order").push((c, r.to_string()));
            }
        }
        assert!(pending.is_none(), "a command without a response in {}", self.apdu_log.display());
        runs
    }
}

/// A running `tsm agent`.
pub struct AgentRun {
    pub name: String,
    child: Option<Child>,
    pub out: PathBuf,
    pub err: PathBuf,
    pub session: String,
}

impl AgentRun {
    /// Waits for the agent to exit: (status, stdout, stderr). Fails after `timeout`.
    pub async fn wait(&mut self, timeout: Duration) -> (ExitStatus, String, String) {
        let c = self.child.as_mut().expect("running");
        let status = wait_child(c, timeout).await.unwrap_or_else(|| panic!("{}: still running after {timeout:?}:\n{}", self.name, tail(&self.err, 30)));
        self.child = None;
        (status, std::fs::read_to_string(&self.out).unwrap_or_default(), std::fs::read_to_string(&self.err).unwrap_or_default())
    }

    pub fn is_running(&mut self) -> bool {
        self.child.as_mut().is_some_and(|c| c.try_wait().ok().flatten().is_none())
    }
}

impl Drop for AgentRun {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
        if std::thread::panicking() {
            eprintln!("---- agent {} stderr (last lines) ----\n{}", self.name, tail(&self.err, 25));
        }
    }
}

/// Runs the phone's agent for `session` until it ends with Stop. A run that gives up
/// (`agent.unreachable`: the server stayed away longer than `retry_for`) is started again with
/// the same session, as the phone app would be retriggered; returns the number of runs that
/// gave up. Any other failure fails the test.
pub async fn run_to_stop(phone: &mut Phone, server: &str, session: &str, retry_for: Duration, deadline: Duration) -> u32 {
    let t0 = Instant::now();
    let mut gave_up = 0;
    loop {
        let left = deadline.checked_sub(t0.elapsed()).unwrap_or_else(|| panic!("{}: no Stop within {deadline:?}", phone.name));
        let mut run = phone.agent(server, session, retry_for);
        let (status, out, err) = run.wait(left).await;
        if status.success() {
            assert!(out.contains("complete"), "{}: {out}", run.name);
            return gave_up;
        }
        assert!(err.contains("error[agent.unreachable]"), "{} failed ({status}):\n{}", run.name, tail(&run.err, 25));
        gave_up += 1;
        assert!(gave_up <= 10, "{}: gave up {gave_up} times", phone.name);
    }
}

// ---- the forwarder ------------------------------------------------------------------------

/// What the forwarder does with one request (counted from 1 in arrival order).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// Forward it and pass the answer back.
    Forward,
    /// Forward it, then answer `502` instead of the server's answer (lost on the way back).
    DropAnswer,
    /// Kill the server before forwarding it (the server never sees it).
    KillBefore,
    /// Forward it, kill the server once it answered, and answer `502` (it committed; the
    /// answer died with it).
    KillAfter,
    /// Forward it and kill the server after this many milliseconds, whatever it is doing.
    KillDuring(u64),
    /// Send the request but the last byte of its body, SIGTERM the server, wait, then send
    /// the last byte: a request surely in flight when the shutdown starts.
    TermWhileReceiving,
    /// [`Action::KillBefore`] on the first request from here on that reports R-APDUs (the
    /// card ran an order; its report never reaches the server).
    KillBeforeReport,
}

/// Asks the test's controller to kill the server; `done` when it is dead.
pub struct KillOrder {
    pub request: usize,
    pub action: Action,
    pub done: tokio::sync::oneshot::Sender<()>,
}

#[derive(Debug, Clone)]
pub struct Seen {
    pub n: usize,
    pub backend: usize,
    pub path: String,
    pub action: Action,
    /// The status passed to the agent (502 for failures and dropped answers).
    pub status: u16,
    /// The server's own status, when it answered.
    pub server_status: Option<u16>,
}

struct FwdInner {
    backends: Vec<String>,
    next: AtomicUsize,
    count: AtomicUsize,
    plan: Mutex<BTreeMap<usize, Action>>,
    kills: Option<tokio::sync::mpsc::UnboundedSender<KillOrder>>,
    seen: Mutex<Vec<Seen>>,
    /// Actions for the k-th request (from 1) of a session, and the requests of each so far.
    session_plan: Mutex<BTreeMap<(String, usize), Action>>,
    /// Per session: its first backend (a global rotation) and its requests so far.
    per_session: Mutex<BTreeMap<String, (usize, usize)>>,
    http: reqwest::Client,
    in_flight: AtomicUsize,
}

/// An HTTP forwarder between agents and servers. The requests of a session go to the backends
/// in turn (the session's first request to the next backend of a global rotation, each next
/// one to the following backend), so that every session alternates between them whatever the
/// other sessions do; a retry goes to the next backend too.
#[derive(Clone)]
pub struct Forwarder {
    pub base: String,
    inner: Arc<FwdInner>,
}

impl Forwarder {
    pub async fn start(backends: Vec<String>, plan: BTreeMap<usize, Action>, kills: Option<tokio::sync::mpsc::UnboundedSender<KillOrder>>) -> Forwarder {
        let http = reqwest::Client::builder().timeout(Duration::from_secs(60)).pool_max_idle_per_host(0).build().unwrap();
        let inner = Arc::new(FwdInner {
            backends,
            next: AtomicUsize::new(0),
            count: AtomicUsize::new(0),
            plan: Mutex::new(plan),
            kills,
            seen: Mutex::new(Vec::new()),
            session_plan: Mutex::new(BTreeMap::new()),
            per_session: Mutex::new(BTreeMap::new()),
            http,
            in_flight: AtomicUsize::new(0),
        });
        let i2 = inner.clone();
        let app = axum::Router::new().fallback(move |req: axum::extract::Request| {
            let inner = i2.clone();
            async move { forward(inner, req).await }
        });
        let tcp = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", tcp.local_addr().unwrap());
        tokio::spawn(async move {
            axum::serve(tcp, app).await.unwrap();
        });
        Forwarder { base, inner }
    }

    pub fn seen(&self) -> Vec<Seen> {
        self.inner.seen.lock().unwrap().clone()
    }

    pub fn count(&self) -> usize {
        self.inner.count.load(Ordering::SeqCst)
    }

    pub fn in_flight(&self) -> usize {
        self.inner.in_flight.load(Ordering::SeqCst)
    }

    /// Adds actions for later requests.
    pub fn plan(&self, n: usize, a: Action) {
        self.inner.plan.lock().unwrap().insert(n, a);
    }

    /// An action for the `k`-th request (from 1: the handshake) of session `sid`.
    pub fn plan_session(&self, sid: &str, k: usize, a: Action) {
        self.inner.session_plan.lock().unwrap().insert((sid.to_string(), k), a);
    }
}

/// [`Action::TermWhileReceiving`] by hand over TCP: the request but its last byte, the
/// SIGTERM, a pause, the last byte, then the whole answer (`Connection: close`).
async fn trickle(inner: &FwdInner, n: usize, backend: &str, parts: &axum::http::request::Parts, body: &[u8]) -> std::io::Result<(u16, reqwest::header::HeaderMap, axum::body::Bytes)> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let addr = backend.trim_start_matches("http://");
    let mut tcp = tokio::net::TcpStream::connect(addr).await?;
    let path = parts.uri.path_and_query().map(|p| p.as_str()).unwrap_or("/");
    let mut head = format!("{} {path} HTTP/1.1\r\nhost: {addr}\r\n", parts.method);
    for (k, v) in parts.headers.iter() {
        if k != axum::http::header::HOST && k != axum::http::header::CONTENT_LENGTH && k != axum::http::header::CONNECTION {
            head.push_str(&format!("{k}: {}\r\n", v.to_str().unwrap_or_default()));
        }
    }
    head.push_str(&format!("content-length: {}\r\nconnection: close\r\n\r\n", body.len()));
    let split = body.len().saturating_sub(1);
    tcp.write_all(head.as_bytes()).await?;
    tcp.write_all(&body[..split]).await?;
    tcp.flush().await?;
    // Let the server read the headers: the request is in progress (hyper lets it finish).
    tokio::time::sleep(Duration::from_millis(300)).await;
    kill_server(inner, n, Action::TermWhileReceiving).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    tcp.write_all(&body[split..]).await?;
    let mut raw = Vec::new();
    tcp.read_to_end(&mut raw).await?;
    let bad = |m: &str| std::io::Error::new(std::io::ErrorKind::InvalidData, m.to_string());
    let end = raw.windows(4).position(|w| w == b"\r\n\r\n").ok_or_else(|| bad("no end of headers"))?;
    let text = String::from_utf8_lossy(&raw[..end]).to_string();
    let mut lines = text.split("\r\n");
    let status: u16 = lines.next().and_then(|l| l.split(' ').nth(1)).and_then(|c| c.parse().ok()).ok_or_else(|| bad("no status line"))?;
    let mut headers = reqwest::header::HeaderMap::new();
    let mut chunked = false;
    for l in lines {
        if let Some((k, v)) = l.split_once(':') {
            let (k, v) = (k.trim().to_ascii_lowercase(), v.trim().to_string());
            chunked |= k == "transfer-encoding" && v.eq_ignore_ascii_case("chunked");
            if let (Ok(k), Ok(v)) = (reqwest::header::HeaderName::from_bytes(k.as_bytes()), reqwest::header::HeaderValue::from_str(&v)) {
                headers.append(k, v);
            }
        }
    }
    let mut rest = &raw[end + 4..];
    let body = if chunked {
        let mut out = Vec::new();
        loop {
            let eol = rest.windows(2).position(|w| w == b"\r\n").ok_or_else(|| bad("bad chunk"))?;
            let size = usize::from_str_radix(String::from_utf8_lossy(&rest[..eol]).trim(), 16).map_err(|_| bad("bad chunk size"))?;
            rest = &rest[eol + 2..];
            if size == 0 {
                break;
            }
            out.extend_from_slice(rest.get(..size).ok_or_else(|| bad("short chunk"))?);
            rest = &rest[size + 2..];
        }
        out
    } else {
        rest.to_vec()
    };
    Ok((status, headers, axum::body::Bytes::from(body)))
}

fn bad_gateway(why: &str) -> axum::response::Response {
    axum::response::Response::builder().status(502).body(axum::body::Body::from(why.to_string())).unwrap()
}

async fn kill_server(inner: &FwdInner, n: usize, action: Action) {
    let tx = inner.kills.as_ref().expect("a kill plan needs a controller");
    let (done, wait) = tokio::sync::oneshot::channel();
    let _ = tx.send(KillOrder { request: n, action, done });
    let _ = wait.await;
}

async fn forward(inner: Arc<FwdInner>, req: axum::extract::Request) -> axum::response::Response {
    let n = inner.count.fetch_add(1, Ordering::SeqCst) + 1;
    let (parts, body) = req.into_parts();
    let path = parts.uri.path_and_query().map(|p| p.as_str().to_string()).unwrap_or_else(|| "/".into());
    let mut action = inner.plan.lock().unwrap().get(&n).copied().unwrap_or(Action::Forward);
    let mut backend = None;
    if let Some(sid) = parts.uri.query().and_then(|q| q.split('&').find_map(|kv| kv.strip_prefix("sessionId="))) {
        let (first, k) = {
            let mut m = inner.per_session.lock().unwrap();
            let e = m.entry(sid.to_string()).or_insert_with(|| (inner.next.fetch_add(1, Ordering::SeqCst), 0));
            e.1 += 1;
            *e
        };
        backend = Some((first + k - 1) % inner.backends.len());
        if let Some(a) = inner.session_plan.lock().unwrap().get(&(sid.to_string(), k)) {
            action = *a;
        }
    }
    let backend = backend.unwrap_or_else(|| inner.next.fetch_add(1, Ordering::SeqCst) % inner.backends.len());
    let body = axum::body::to_bytes(body, 16 * 1024 * 1024).await.unwrap_or_default();
    let action = match action {
        Action::KillBeforeReport if !String::from_utf8_lossy(&body).contains("listOfRAPDU") => {
            let next = inner.count.load(Ordering::SeqCst) + 1;
            inner.plan.lock().unwrap().insert(next, Action::KillBeforeReport);
            Action::Forward
        }
        Action::KillBeforeReport => Action::KillBefore,
        a => a,
    };
    let record = |status: u16, server_status: Option<u16>| {
        inner.seen.lock().unwrap().push(Seen { n, backend, path: path.clone(), action, status, server_status });
    };
    if action == Action::KillBefore {
        kill_server(&inner, n, action).await;
    }
    let url = format!("{}{}", inner.backends[backend], path);
    let mut r = inner.http.request(parts.method.clone(), url).body(body.clone());
    for (k, v) in parts.headers.iter() {
        if k != axum::http::header::HOST && k != axum::http::header::CONTENT_LENGTH {
            r = r.header(k, v);
        }
    }
    inner.in_flight.fetch_add(1, Ordering::SeqCst);
    let killer = if let Action::KillDuring(ms) = action {
        let i2 = inner.clone();
        Some(tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(ms)).await;
            kill_server(&i2, n, action).await;
        }))
    } else {
        None
    };
    let result = if action == Action::TermWhileReceiving {
        drop(r);
        trickle(&inner, n, &inner.backends[backend], &parts, &body).await.map_err(|e| e.to_string())
    } else {
        async {
            let resp = r.send().await?;
            let status = resp.status().as_u16();
            let headers = resp.headers().clone();
            let bytes = resp.bytes().await?;
            Ok::<_, reqwest::Error>((status, headers, bytes))
        }
        .await
        .map_err(|e| e.to_string())
    };
    inner.in_flight.fetch_sub(1, Ordering::SeqCst);
    if let Some(k) = killer {
        let _ = k.await;
    }
    let (status, headers, bytes) = match result {
        Ok(x) => x,
        Err(e) => {
            if action == Action::KillAfter {
                // The server was down already: kill it after the next request it answers.
                let next = inner.count.load(Ordering::SeqCst) + 1;
                inner.plan.lock().unwrap().insert(next, Action::KillAfter);
            }
            record(502, None);
            return bad_gateway(&format!("forwarder: {e}"));
        }
    };
    match action {
        Action::DropAnswer => {
            record(502, Some(status));
            return bad_gateway("answer lost");
        }
        Action::KillAfter => {
            kill_server(&inner, n, action).await;
            record(502, Some(status));
            return bad_gateway("the server died before its answer left");
        }
        _ => {}
    }
    record(status, Some(status));
    let mut out = axum::response::Response::builder().status(status);
    for (k, v) in headers.iter() {
        if k != reqwest::header::CONTENT_LENGTH && k != reqwest::header::TRANSFER_ENCODING && k != reqwest::header::CONNECTION {
            out = out.header(k.as_str(), v.as_bytes());
        }
    }
    out.body(axum::body::Body::from(bytes)).unwrap()
}

// ---- verification -------------------------------------------------------------------------

/// An operation queued for a phone (a deployment, a suspend...): instance, process, the
/// instance AID, and the operation (`deploy`, `suspend`, `resume`).
#[derive(Debug, Clone)]
pub struct Deployment {
    pub instance: String,
    pub process: String,
    pub instance_aid: String,
    pub op: String,
}

/// How strictly the card's APDU log must match the database's.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogMatch {
    /// Every agent run ended with Stop: the database holds exactly what the card saw.
    Exact,
    /// Some runs gave up: the last order of each such run may be missing from the database
    /// (its report never arrived), nothing else.
    AllowUnreported,
}

/// The stored registry of an SE in the form of [`Phone::registry`].
pub async fn db_registry(db: &TestDb, se: &str) -> Vec<RegistryRow> {
    let row = db.store.secure_elements().get(&tsm_server::domain::SeId::new(se).unwrap()).await.unwrap().unwrap();
    let reg = testkit::stored_registry(&row).unwrap().expect("the SE's registry is known");
    testkit::registry_rows(&reg)
}

fn ins(c: &str) -> (u8, u8) {
    let b = tsm_gp::hex::decode(c).unwrap();
    (b[1], b[2])
}

fn sw(r: &str) -> &str {
    &r[r.len().saturating_sub(4)..]
}

/// Checks one phone after its agents stopped:
/// - every process ended (COMPLETED or FAILED, nothing QUEUED or RUNNING), its end audited and
///   put in the callback outbox exactly once; with [`LogMatch::Exact`], COMPLETED;
/// - each instance's state follows from its last process (OPERATIONAL after a deployment,
///   SUSPENDED after a suspend; IN_ERROR or the state before after a failure) with no process
///   in flight; an OPERATIONAL instance is on the card, a SUSPENDED one there and locked, a
///   NOT_DEPLOYED one not there;
/// - the card's registry equals the one the database holds for the SE;
/// - the card's APDU log equals the database's APDU log of the SE's processes (see
///   [`LogMatch`]): every exchange the card saw is logged once, none is invented;
/// - INSTALL [for install], INSTALL [for load] and the last LOAD block were accepted by the
///   card exactly as often as the registry gained an entry from them (nothing applied twice);
///   with [`LogMatch::Exact`] the card refused none of them either.
///
/// What [`verify_phone`] found.
#[derive(Debug, Clone, Default)]
pub struct Verdict {
    /// INSTALL [for install] commands the card accepted.
    pub installs: usize,
    /// Failed processes: (instance state, error code).
    pub failed: Vec<(String, String)>,
}

pub async fn verify_phone(db: &TestDb, api: &Api, t: &Tenant, phone: &Phone, deployments: &[Deployment], mode: LogMatch) -> Verdict {
    let mut verdict = Verdict::default();
    let who = &phone.name;
    let mut db_logs: Vec<Vec<(String, Option<String>)>> = Vec::new();
    // (instance AID, state) of each instance after its last operation.
    let mut finals: Vec<(String, String)> = Vec::new();
    for (k, d) in deployments.iter().enumerate() {
        let p = api.get(t, &format!("/api/v1/processes/{}", d.process)).await;
        let state = p["state"].as_str().unwrap();
        let i = api.get(t, &format!("/api/v1/service-instances/{}", d.instance)).await;
        let istate = i["state"].as_str().unwrap();
        assert!(i["processInFlight"].is_null(), "{who}: instance still has a process in flight: {i}");
        let last = deployments.iter().rposition(|x| x.instance == d.instance) == Some(k);
        match state {
            "COMPLETED" => {
                let want = if d.op == "suspend" { "SUSPENDED" } else { "OPERATIONAL" };
                if last {
                    assert_eq!(istate, want, "{who}: {p}");
                    finals.push((d.instance_aid.clone(), want.to_string()));
                }
            }
            "FAILED" if mode == LogMatch::AllowUnreported => {
                let before = if d.op == "deploy" { "NOT_DEPLOYED" } else { "OPERATIONAL" };
                if last {
                    assert!(istate == "IN_ERROR" || istate == before, "{who}: instance {istate} after {p}");
                    if istate == "NOT_DEPLOYED" {
                        let on_card = phone.registry().iter().any(|(k, a, _, _)| k == "app" && *a == d.instance_aid);
                        assert!(!on_card, "{who}: the instance is NOT_DEPLOYED but {} is on the card ({p})", d.instance_aid);
                    }
                }
                verdict.failed.push((istate.to_string(), p["error"]["code"].as_str().unwrap_or_default().to_string()));
            }
            _ => panic!("{who}: process not final (or failed): {p}\ninstance {i}"),
        }
        let audit = db.store.audit_log().list_for_object_unscoped("process", &d.process).await.unwrap();
        let ends = audit.iter().filter(|a| a.action == "process_completed" || a.action == "process_failed").count();
        assert_eq!(ends, 1, "{who}: the process ended once: {:?}", audit.iter().map(|a| &a.action).collect::<Vec<_>>());
        let pid: tsm_server::domain::ProcessId = d.process.parse().unwrap();
        let cbs = db.store.callbacks().list_for_process(t.id.parse().unwrap(), pid).await.unwrap();
        assert_eq!(cbs.len(), 1, "{who}: one callback per process end");
        let apdus = api.get(t, &format!("/api/v1/processes/{}/apdus", d.process)).await;
        let log: Vec<(String, Option<String>)> = apdus.as_array().unwrap().iter().map(|a| (a["command"].as_str().unwrap().to_string(), a["response"].as_str().map(str::to_string))).collect();
        if mode == LogMatch::Exact {
            assert!(log.iter().all(|(_, r)| r.is_some()), "{who}: unanswered APDUs in the log of {}", d.process);
        }
        db_logs.push(log);
    }

    // Registry: the card and the database agree; OPERATIONAL instances are on the card,
    // SUSPENDED ones there and locked.
    let card_reg = phone.registry();
    assert_eq!(card_reg, db_registry(db, &phone.se_id).await, "{who}: card and database registries");
    for (aid, state) in &finals {
        let lc = card_reg.iter().find(|(k, a, _, _)| k == "app" && a == aid).map(|(_, _, lc, _)| *lc);
        let locked = lc.is_some_and(|lc| lc & 0x80 != 0);
        assert!(lc.is_some() && locked == (state == "SUSPENDED"), "{who}: {aid} is {state}, on the card with life cycle {lc:02X?}");
    }

    // APDU logs.
    let runs = phone.card_log();
    let card: Vec<(String, String)> = runs.iter().flatten().flatten().cloned().collect();
    let optional: Vec<Vec<(String, String)>> = match mode {
        LogMatch::Exact => vec![],
        // The last order of every run but the last one (which ended with Stop).
        LogMatch::AllowUnreported => runs.iter().take(runs.len().saturating_sub(1)).filter_map(|r| r.last().cloned()).filter(|o| !o.is_empty()).collect(),
    };
    assert!(log_matches(&card, &db_logs, &optional), "{who}: the card's APDU log ({} APDUs, {} runs) is not the database's ({:?} per process; optional {:?})", card.len(), runs.len(), db_logs.iter().map(Vec::len).collect::<Vec<_>>(), optional.iter().map(Vec::len).collect::<Vec<_>>());

    // Content management commands: accepted as often as the registry grew, refused never.
    let accepted = |f: &dyn Fn(u8, u8) -> bool| card.iter().filter(|(c, r)| f(ins(c).0, ins(c).1) && sw(r) == "9000").count();
    let refused = |f: &dyn Fn(u8, u8) -> bool| card.iter().filter(|(c, r)| f(ins(c).0, ins(c).1) && sw(r) != "9000").count();
    let for_install = |i: u8, p1: u8| i == 0xE6 && p1 & 0x04 != 0;
    let for_load = |i: u8, p1: u8| i == 0xE6 && p1 == 0x02;
    let last_load = |i: u8, p1: u8| i == 0xE8 && p1 & 0x80 != 0;
    let created = card_reg.iter().filter(|(k, _, _, _)| k != "elf").count();
    let elfs = phone.loaded_files();
    assert_eq!(accepted(&for_install), created, "{who}: INSTALL [for install] accepted once per SD/application on the card");
    assert_eq!(accepted(&for_load), elfs, "{who}: INSTALL [for load] accepted once per load file");
    assert_eq!(accepted(&last_load), elfs, "{who}: one complete LOAD per load file");
    if mode == LogMatch::Exact {
        for (what, f) in [("INSTALL [for install]", &for_install as &dyn Fn(u8, u8) -> bool), ("INSTALL [for load]", &for_load), ("LOAD", &|i: u8, _| i == 0xE8)] {
            assert_eq!(refused(f), 0, "{who}: the card refused a {what}");
        }
        assert!(verdict.failed.is_empty(), "{who}: {:?}", verdict.failed);
    }
    verdict.installs = accepted(&for_install);
    verdict
}

/// The database's per-process logs, concatenated in some order, are the card's log, where
/// - any of the `optional` orders (contiguous exchanges of the card's log: orders whose report
///   may never have arrived) may be missing from the database;
/// - commands the database logged without an answer (sent, never answered: a later agent run
///   may or may not have run them) stand for the same commands in the card's log, or for none.
fn log_matches(card: &[(String, String)], db: &[Vec<(String, Option<String>)>], optional: &[Vec<(String, String)>]) -> bool {
    // Where each optional order sits in the card's log (it is unique: it carries MACs).
    let mut skip_from: BTreeMap<usize, usize> = BTreeMap::new();
    for o in optional {
        if let Some(at) = card.windows(o.len()).position(|w| w == o.as_slice()) {
            skip_from.insert(at, at + o.len());
        }
    }
    permutations(db.len()).iter().any(|perm| {
        let seq: Vec<(String, Option<String>)> = perm.iter().flat_map(|&i| db[i].iter().cloned()).collect();
        let mut memo = std::collections::HashSet::new();
        walk(card, &seq, &skip_from, 0, 0, &mut memo)
    })
}

/// Does `card[i..]` match `db[j..]` (see [`log_matches`])? `memo` holds the pairs that do not.
fn walk(card: &[(String, String)], db: &[(String, Option<String>)], skip: &BTreeMap<usize, usize>, i: usize, j: usize, memo: &mut std::collections::HashSet<(usize, usize)>) -> bool {
    if i == card.len() && j == db.len() {
        return true;
    }
    if memo.contains(&(i, j)) {
        return false;
    }
    let mut ok = false;
    if let Some(&end) = skip.get(&i) {
        ok = walk(card, db, skip, end, j, memo);
    }
    if !ok && j < db.len() {
        match &db[j].1 {
            Some(r) => ok = i < card.len() && card[i].0 == db[j].0 && &card[i].1 == r && walk(card, db, skip, i + 1, j + 1, memo),
            None => {
                let k = j + db[j..].iter().take_while(|(_, r)| r.is_none()).count();
                let n = k - j;
                ok = walk(card, db, skip, i, k, memo)
                    || (i + n <= card.len() && card[i..i + n].iter().zip(&db[j..k]).all(|(c, d)| c.0 == d.0) && walk(card, db, skip, i + n, k, memo));
            }
        }
    }
    if !ok {
        memo.insert((i, j));
    }
    ok
}

fn permutations(n: usize) -> Vec<Vec<usize>> {
    if n == 0 {
        return vec![vec![]];
    }
    let mut out = Vec::new();
    for p in permutations(n - 1) {
        for at in 0..=p.len() {
            let mut q = p.clone();
            q.insert(at, n - 1);
            out.push(q);
        }
    }
    out
}

/// The SE's lease is free and the session ended with Stop.
pub async fn verify_session_closed(db: &TestDb, phone: &Phone, session: &str) {
    let s = db.store.seram_sessions().get(session.parse().unwrap()).await.unwrap().unwrap();
    assert_eq!(s.state, tsm_server::domain::SeramSessionState::Closed, "{}: session {session}", phone.name);
    // The lease is released right after the Stop is committed; a node killed in between leaves
    // it to expire (lease_ttl_seconds), still held by the closed session.
    let lease = db.store.leases().get(&tsm_server::domain::SeId::new(&phone.se_id).unwrap()).await.unwrap();
    if let Some(l) = lease {
        assert_eq!(l.holder, format!("seram:{session}"), "{}: the SE's lease: {l:?}", phone.name);
        eprintln!("note: {}: the lease of closed session {session} was not released (a node died after the Stop); it expires", phone.name);
    }
}

// ---- killing and restarting a server ------------------------------------------------------

/// What a controller did to its server.
#[derive(Debug, Clone)]
pub struct Incident {
    pub request: Option<usize>,
    pub action: Action,
    pub downtime: Duration,
    /// The exit status after SIGTERM.
    pub exit: Option<ExitStatus>,
}

/// Serves the forwarder's kill orders on `server`: SIGKILL (or SIGTERM, then the exit
/// awaited) as the action says, the forwarder told when it is dead, the server restarted after
/// a pause drawn from `downtime_ms` with `seed`. The test aborts it once the agents are done,
/// after taking the server's lock (so never in the middle of a restart).
pub fn controller(
    server: Arc<tokio::sync::Mutex<Server>>,
    mut orders: tokio::sync::mpsc::UnboundedReceiver<KillOrder>,
    seed: u64,
    downtime_ms: (u64, u64),
) -> (tokio::task::JoinHandle<()>, Arc<Mutex<Vec<Incident>>>) {
    let log = Arc::new(Mutex::new(Vec::new()));
    let log2 = log.clone();
    let task = tokio::spawn(async move {
        let mut rng = Rng::new(seed);
        while let Some(o) = orders.recv().await {
            let mut s = server.lock().await;
            let downtime = rng.millis(downtime_ms.0, downtime_ms.1);
            let mut exit = None;
            match o.action {
                Action::TermWhileReceiving => {
                    s.sigterm();
                    let _ = o.done.send(());
                    exit = Some(s.wait_exit(Duration::from_secs(20)).await);
                }
                _ => {
                    s.sigkill();
                    let _ = o.done.send(());
                }
            }
            log2.lock().unwrap().push(Incident { request: Some(o.request), action: o.action, downtime, exit });
            tokio::time::sleep(downtime).await;
            s.restart().await;
        }
    });
    (task, log)
}

/// Kills `server` at random times (seeded): every `every_ms` a SIGKILL, a pause of
/// `downtime_ms`, a restart; until `stop` is set. The test stops it once the agents are done.
pub fn timed_kills(server: Arc<tokio::sync::Mutex<Server>>, seed: u64, every_ms: (u64, u64), downtime_ms: (u64, u64), stop: Arc<std::sync::atomic::AtomicBool>) -> (tokio::task::JoinHandle<()>, Arc<Mutex<Vec<Incident>>>) {
    let log = Arc::new(Mutex::new(Vec::new()));
    let log2 = log.clone();
    let task = tokio::spawn(async move {
        let mut rng = Rng::new(seed);
        loop {
            tokio::time::sleep(rng.millis(every_ms.0, every_ms.1)).await;
            if stop.load(Ordering::SeqCst) {
                return;
            }
            let mut s = server.lock().await;
            let downtime = rng.millis(downtime_ms.0, downtime_ms.1);
            s.sigkill();
            log2.lock().unwrap().push(Incident { request: None, action: Action::KillBefore, downtime, exit: None });
            tokio::time::sleep(downtime).await;
            s.restart().await;
        }
    });
    (task, log)
}
