//! Interoperability through real PC/SC: pcscd with the vpcd virtual reader in a network
//! namespace (scripts/pcsc-sandbox.sh), the simulated card (`tsm card run`), and GlobalPlatform
//! hosts that nobody here wrote — yubikit's SCP03 and Py-GP's SCP02/SCP03 (tests/interop/*.py,
//! in the virtualenv of scripts/python-env.sh) — plus opensc-tool.
//!
//! Every step checks what the card's state file says afterwards (registry, sequence counter),
//! not only the client's exit code.
//!
//! Needs root (network namespaces, pcscd). Skipped, loudly, when not root or when network
//! namespaces are not available; any other missing piece (pcscd, vpcd, opensc, PyPI for the
//! first venv) is a failure with a remedy. One test function: pcscd is a single instance per
//! machine (/run/pcscd), so the steps run in order under a lock file.

use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::Instant;

const READER: &str = "Virtual PCD 00 00";
const ISD: &str = "A000000151000000";
/// Distinct ENC/MAC/DEK so that a client using one key in the wrong role fails.
const AES_ENC: &str = "101112131415161718191A1B1C1D1E1F";
const AES_MAC: &str = "202122232425262728292A2B2C2D2E2F";
const AES_DEK: &str = "303132333435363738393A3B3C3D3E3F";
const DES_ENC: &str = "404142434445464748494A4B4C4D4E4F";
const DES_MAC: &str = "505152535455565758595A5B5C5D5E5F";
const DES_DEK: &str = "606162636465666768696A6B6C6D6E6F";

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..").canonicalize().unwrap()
}

fn tsm() -> &'static str {
    env!("CARGO_BIN_EXE_tsm")
}

fn ok(mut cmd: Command, what: &str) -> Output {
    let started = Instant::now();
    let out = cmd.stdin(Stdio::null()).output().unwrap_or_else(|e| panic!("{what}: cannot run {cmd:?}: {e}"));
    eprintln!("[interop] {what}: {:?} in {:.1}s", out.status, started.elapsed().as_secs_f64());
    if !out.status.success() {
        panic!(
            "{what} failed ({}):\n--- stdout\n{}\n--- stderr\n{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    out
}

fn stdout_json(out: &Output) -> Value {
    let text = String::from_utf8_lossy(&out.stdout);
    if let Ok(v) = serde_json::from_str(&text) {
        return v;
    }
    let line = text.lines().rev().find(|l| l.starts_with('{')).unwrap_or_else(|| panic!("no JSON in output:\n{text}"));
    serde_json::from_str(line).unwrap_or_else(|e| panic!("bad JSON {line}: {e}"))
}

/// Why the test cannot run here (not a failure), if it cannot.
fn skip_reason() -> Option<String> {
    let uid = Command::new("id").arg("-u").output().ok().map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string());
    if uid.as_deref() != Some("0") {
        return Some("not running as root (pcscd and network namespaces need root)".into());
    }
    let probe = format!("tsm-probe-{}", std::process::id());
    let added = Command::new("ip").args(["netns", "add", &probe]).stderr(Stdio::null()).status();
    match added {
        Ok(s) if s.success() => {
            let _ = Command::new("ip").args(["netns", "del", &probe]).status();
            None
        }
        Ok(_) => Some("`ip netns add` fails here (no network namespaces in this container?)".into()),
        Err(e) => Some(format!("cannot run `ip` ({e}): install iproute2")),
    }
}

fn require_tools() {
    let mut missing = Vec::new();
    for tool in ["pcscd", "opensc-tool", "python3"] {
        let found = Command::new("sh").args(["-c", &format!("command -v {tool}")]).stdout(Stdio::null()).status().is_ok_and(|s| s.success());
        if !found {
            missing.push(tool);
        }
    }
    if !Path::new("/usr/lib/pcsc/drivers/serial/libifdvpcd.so").exists() && !Path::new("/etc/reader.conf.d/vpcd").exists() {
        missing.push("vsmartcard-vpcd");
    }
    assert!(missing.is_empty(), "interop test needs {missing:?}: run `bash scripts/install-deps.sh`");
}

/// An exclusive lock on a file for the whole test: one pcscd per machine.
struct Lock(#[allow(dead_code)] std::fs::File);

fn lock() -> Lock {
    use std::os::fd::AsRawFd;
    unsafe extern "C" {
        fn flock(fd: i32, op: i32) -> i32;
    }
    const LOCK_EX: i32 = 2;
    let f = std::fs::OpenOptions::new().create(true).truncate(false).write(true).open("/tmp/tsm-pcsc-interop.lock").unwrap();
    // SAFETY: flock on a descriptor we own; blocks until the lock is ours.
    let rc = unsafe { flock(f.as_raw_fd(), LOCK_EX) };
    assert_eq!(rc, 0, "flock /tmp/tsm-pcsc-interop.lock");
    Lock(f)
}

/// pcscd + one card in the namespace; stopped (and the namespace deleted) on drop, whatever
/// happened.
struct Sandbox {
    dir: PathBuf,
}

impl Sandbox {
    fn script(&self, action: &str, state: Option<&Path>) -> Command {
        let mut c = Command::new("bash");
        c.arg(root().join("scripts/pcsc-sandbox.sh"))
            .arg(action)
            .env("TSM_NETNS", "tsm-interop")
            .env("TSM_SANDBOX_DIR", &self.dir)
            .env("TSM_BIN", tsm())
            .env("TSM_CARD_ARGS", "-v");
        if let Some(s) = state {
            c.env("TSM_CARD_STATE", s);
        }
        c
    }

    /// (Re)starts pcscd and a card on `state`.
    fn start(&self, state: &Path) {
        let _ = self.script("stop", None).output();
        ok(self.script("start", Some(state)), "pcsc-sandbox.sh start");
    }

    fn log(&self, name: &str) -> String {
        std::fs::read_to_string(self.dir.join(name)).unwrap_or_default()
    }
}

impl Drop for Sandbox {
    fn drop(&mut self) {
        let out = self.script("stop", None).output();
        if std::thread::panicking() {
            eprintln!("--- card.log (tail)\n{}", tail(&self.log("card.log"), 40));
            eprintln!("--- pcscd.log (tail)\n{}", tail(&self.log("pcscd.log"), 40));
        }
        if let Ok(o) = out {
            eprint!("{}", String::from_utf8_lossy(&o.stderr));
        }
    }
}

fn tail(s: &str, n: usize) -> String {
    let lines: Vec<&str> = s.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

/// The card's state file as JSON (the registry is plain; key values are sealed).
fn state(path: &Path) -> Value {
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

fn aids(st: &Value, list: &str) -> Vec<String> {
    st[list].as_array().unwrap().iter().map(|e| e["aid"].as_str().unwrap().to_uppercase()).collect()
}

fn isd_counter(st: &Value) -> u64 {
    st["apps"][0]["domain"]["sequence_counter"].as_u64().expect("ISD sequence counter in the state file")
}

fn listed(report: &Value, list: &str) -> Vec<String> {
    report[list].as_array().unwrap_or_else(|| panic!("no {list} in {report}")).iter().map(|e| e["aid"].as_str().unwrap().to_string()).collect()
}

struct Py {
    python: PathBuf,
    dir: PathBuf,
}

impl Py {
    fn run(&self, script: &str, args: &[&str], what: &str) -> Value {
        let mut c = Command::new(&self.python);
        c.arg(self.dir.join(script)).args(args).current_dir(&self.dir);
        stdout_json(&ok(c, what))
    }
}

#[test]
fn pcsc_interop_yubikit_pygp_opensc() {
    if let Some(why) = skip_reason() {
        eprintln!("\n{0}\n!! SKIPPED interop_pcsc: {why}\n!! The PC/SC interop tests (yubikit, Py-GP, opensc through pcscd+vpcd) did NOT run.\n{0}\n", "!".repeat(78));
        return;
    }
    require_tools();
    let started = Instant::now();
    let _lock = lock();
    let root = root();

    let venv = ok(
        {
            let mut c = Command::new("bash");
            c.arg(root.join("scripts/python-env.sh"));
            c
        },
        "python-env.sh",
    );
    let python = PathBuf::from(String::from_utf8_lossy(&venv.stdout).lines().last().expect("python path").trim());
    let py = Py { python, dir: root.join("tests/interop") };

    let work = std::env::temp_dir().join(format!("tsm-interop-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&work);
    std::fs::create_dir_all(&work).unwrap();
    let sandbox = Sandbox { dir: work.join("sandbox") };
    let cap_dir = root.join("testdata/vectors/cap");

    // ---- SCP03 card (AES-128, key version 30, i=70) ----
    let st03 = work.join("scp03.json");
    let mut c = Command::new(tsm());
    c.args(["card", "new", "--profile", "uicc", "--scp", "scp03", "--kvn", "30"])
        .args(["--enc-key", AES_ENC, "--mac-key", AES_MAC, "--dek-key", AES_DEK])
        .arg("--state")
        .arg(&st03);
    ok(c, "tsm card new (scp03)");
    // Without --card-key the storage key goes next to the state, readable by its owner only.
    let key_file = work.join("scp03.json.key");
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&key_file).expect("scp03.json.key created").permissions().mode();
        assert_eq!(mode & 0o777, 0o600, "storage key file mode");
    }
    let s0 = state(&st03);
    assert_eq!(aids(&s0, "apps")[0], ISD);
    assert_eq!(s0["apps"][0]["domain"]["scp"]["Scp03"]["i"], 0x70, "{}", s0["apps"][0]["domain"]["scp"]);
    // No key value in clear in the state file.
    let text = std::fs::read_to_string(&st03).unwrap();
    for k in [AES_ENC, AES_MAC, AES_DEK] {
        assert!(!text.to_uppercase().contains(k), "key in clear in the state file");
    }

    sandbox.start(&st03);

    // opensc-tool sees the reader with the card in it, and its ATR.
    let out = ok(
        {
            let mut c = Command::new("opensc-tool");
            c.arg("-l");
            c
        },
        "opensc-tool -l",
    );
    let listing = String::from_utf8_lossy(&out.stdout);
    assert!(
        listing.lines().any(|l| l.contains(READER) && l.split_whitespace().nth(1) == Some("Yes")),
        "opensc-tool -l does not show a card in {READER}:\n{listing}"
    );
    let atr = ok(
        {
            let mut c = Command::new("opensc-tool");
            c.args(["-r", "0", "-a"]);
            c
        },
        "opensc-tool -a",
    );
    let atr = String::from_utf8_lossy(&atr.stdout).replace([':', ' ', '\n'], "").to_uppercase();
    let want_atr = s0["profile"]["atr"].as_str().unwrap().to_uppercase();
    assert_eq!(atr, want_atr, "ATR through pcscd");

    let aes_keys = ["--kvn", "30", "--enc", AES_ENC, "--mac", AES_MAC, "--dek", AES_DEK];

    // yubikit: SCP03 level 33 with static keys and the card's key version, GET STATUS through it.
    let c0 = isd_counter(&state(&st03));
    let mut a = aes_keys.to_vec();
    a.push("--reset-check");
    let r = py.run("yubikit_scp03.py", &a, "yubikit SCP03 list, then reset and power cycle");
    assert_eq!(listed(&r, "isd"), [ISD], "{r}");
    // A warm reset and a power cycle through PC/SC reach the card and end the session: the
    // next command on the old channel is refused.
    for k in ["after_reset", "after_unpower"] {
        let sw = r[k].as_str().unwrap_or_default();
        assert!(sw.starts_with("69"), "{k}: the card answered {sw:?} on a channel that a reset must have closed");
    }
    let log = sandbox.log("card.log");
    assert!(log.contains("\nreset\n") && log.contains("\npower off\n"), "reset and power off did not reach the card:\n{log}");
    let s = state(&st03);
    assert_eq!(isd_counter(&s), c0 + 1, "one SCP03 session (i=70 counts INITIALIZE UPDATEs)");
    // What the card said through the channel (GET DATA C1) is what its state file holds.
    assert_eq!(r["sequence_counter"].as_u64(), Some(isd_counter(&s)), "{r}");
    assert_eq!(s["apps"][0]["domain"]["auth_failures"], serde_json::json!({}), "no failed authentication");
    // Key version 00 means "any": the card answers with its own.
    let mut any = aes_keys;
    any[1] = "00";
    let r = py.run("yubikit_scp03.py", &any, "yubikit SCP03 list, key version 00");
    assert_eq!(listed(&r, "isd"), [ISD]);
    assert_eq!(isd_counter(&state(&st03)), c0 + 2);

    // Py-GP SCP03: every level it offers lists; level 33 installs and deletes a CAP.
    for level in ["01", "03", "13", "33"] {
        let mut a = vec!["--scp", "03", "--level", level];
        a.extend_from_slice(&aes_keys);
        a.push("list");
        let r = py.run("pygp_client.py", &a, &format!("Py-GP SCP03 level {level} list"));
        assert_eq!(listed(&r, "isd"), [ISD], "{r}");
    }
    assert_eq!(isd_counter(&state(&st03)), c0 + 6);

    // Py-GP cannot install at level 33: with R-ENC it decrypts every answer, also the empty ones
    // of LOAD blocks, and fails (IndexError). A card sends no R-ENC block without data (Amd D
    // §6.2.7), so the install runs at level 13 and the delete at 33.
    let cap = cap_dir.join("kaoh_helloworld.cap");
    let mut a = vec!["--scp", "03", "--level", "13"];
    a.extend_from_slice(&aes_keys);
    a.extend(["install", cap.to_str().unwrap()]);
    let r = py.run("pygp_client.py", &a, "Py-GP SCP03 level 13 install kaoh_helloworld.cap");
    assert!(listed(&r, "apps").contains(&"D0D1D2D3D4D50101".to_string()), "{r}");
    let s = state(&st03);
    assert!(aids(&s, "load_files").contains(&"D0D1D2D3D4D501".to_string()), "load file not in the card's registry: {}", s["load_files"]);
    let app = s["apps"].as_array().unwrap().iter().find(|a| a["aid"].as_str().unwrap().eq_ignore_ascii_case("D0D1D2D3D4D50101")).expect("applet instance in the card's registry");
    assert_eq!(app["life_cycle"], 0x07, "installed and made selectable");
    assert!(app["elf"].as_str().unwrap().eq_ignore_ascii_case("D0D1D2D3D4D501"));

    let mut a = vec!["--scp", "03", "--level", "33"];
    a.extend_from_slice(&aes_keys);
    a.extend(["delete-package", "D0D1D2D3D4D501"]);
    let r = py.run("pygp_client.py", &a, "Py-GP SCP03 level 33 delete package and applet");
    assert!(!listed(&r, "apps").contains(&"D0D1D2D3D4D50101".to_string()), "{r}");
    let s = state(&st03);
    assert!(!aids(&s, "load_files").contains(&"D0D1D2D3D4D501".to_string()), "load file still in the registry");
    assert!(!aids(&s, "apps").contains(&"D0D1D2D3D4D50101".to_string()), "applet still in the registry");

    // The project's own host through pcscd: tsm gp install / list / delete on the reader.
    let gp_keys = format!("enc={AES_ENC},mac={AES_MAC},dek={AES_DEK}");
    let gp = |args: &[&str], what: &str| {
        let mut c = Command::new(tsm());
        c.arg("gp").args(args).args(["--reader", READER, "--keys", &gp_keys, "--kvn", "30"]);
        ok(c, what)
    };
    let cap = cap_dir.join("openjavacard-ndef-tiny-plain.cap");
    gp(&["install", cap.to_str().unwrap()], "tsm gp install openjavacard-ndef-tiny");
    let s = state(&st03);
    assert!(aids(&s, "load_files").contains(&"D276000177100211030001".to_string()), "{}", s["load_files"]);
    assert!(aids(&s, "apps").contains(&"D27600017710021103000101".to_string()), "{}", s["apps"]);
    let r = stdout_json(&gp(&["list", "--json"], "tsm gp list --json"));
    assert!(r.to_string().contains("D27600017710021103000101"), "{r}");
    gp(&["delete", "--related", "D276000177100211030001"], "tsm gp delete --related");
    let s = state(&st03);
    assert!(!aids(&s, "load_files").contains(&"D276000177100211030001".to_string()));
    assert!(!aids(&s, "apps").contains(&"D27600017710021103000101".to_string()));
    assert_eq!(s["apps"][0]["domain"]["auth_failures"], serde_json::json!({}), "no failed authentication");

    // ---- SCP02 card (3DES, key version 20, i=55) ----
    let st02 = work.join("scp02.json");
    let mut c = Command::new(tsm());
    c.args(["card", "new", "--profile", "uicc", "--scp", "scp02", "--kvn", "20"])
        .args(["--enc-key", DES_ENC, "--mac-key", DES_MAC, "--dek-key", DES_DEK])
        .arg("--state")
        .arg(&st02);
    ok(c, "tsm card new (scp02)");
    sandbox.start(&st02);
    let des_keys = ["--scp", "02", "--scpi", "55", "--kvn", "20", "--enc", DES_ENC, "--mac", DES_MAC, "--dek", DES_DEK];
    let c0 = isd_counter(&state(&st02));
    for level in ["01", "03"] {
        let mut a = vec!["--level", level];
        a.extend_from_slice(&des_keys);
        a.push("list");
        let r = py.run("pygp_client.py", &a, &format!("Py-GP SCP02 level {level} list"));
        assert_eq!(listed(&r, "isd"), [ISD], "{r}");
    }
    assert_eq!(isd_counter(&state(&st02)), c0 + 2, "two SCP02 sessions");

    let cap = cap_dir.join("gppro_Empty_0102030405_8d5ac9e2_2.2.1.cap");
    let mut a = vec!["--level", "03"];
    a.extend_from_slice(&des_keys);
    a.extend(["install", cap.to_str().unwrap()]);
    let r = py.run("pygp_client.py", &a, "Py-GP SCP02 level 03 install Empty.cap");
    assert!(listed(&r, "apps").contains(&"0102030405060708".to_string()), "{r}");
    let s = state(&st02);
    assert!(aids(&s, "load_files").contains(&"0102030405".to_string()));
    assert!(aids(&s, "apps").contains(&"0102030405060708".to_string()));

    // Applet first, then its load file (DELETE P2 00 each).
    let mut a = vec!["--level", "03"];
    a.extend_from_slice(&des_keys);
    a.extend(["delete", "0102030405060708", "0102030405"]);
    py.run("pygp_client.py", &a, "Py-GP SCP02 level 03 delete applet, then load file");
    let s = state(&st02);
    assert!(!aids(&s, "load_files").contains(&"0102030405".to_string()));
    assert!(!aids(&s, "apps").contains(&"0102030405060708".to_string()));

    drop(sandbox);
    // Nothing left behind: no namespace, no pcscd socket.
    let ns = String::from_utf8_lossy(&Command::new("ip").args(["netns", "list"]).output().unwrap().stdout).to_string();
    assert!(!ns.lines().any(|l| l.split_whitespace().next() == Some("tsm-interop")), "namespace left: {ns}");
    assert!(!Path::new("/run/pcscd/pcscd.comm").exists(), "pcscd socket left behind");
    let _ = std::fs::remove_dir_all(&work);
    eprintln!("[interop] all steps passed in {:.1}s", started.elapsed().as_secs_f64());
}
