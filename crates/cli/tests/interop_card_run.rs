//! `tsm card new` / `tsm card run` against a fake vpcd (a TCP listener in the test speaking
//! vpcd's protocol): no root, no pcscd. Checks what reaches the state file and when.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

fn tsm() -> Command {
    Command::new(env!("CARGO_BIN_EXE_tsm"))
}

fn workdir(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("tsm-card-run-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

struct Vpcd(TcpStream);

impl Vpcd {
    fn send(&mut self, payload: &[u8]) {
        let mut b = (payload.len() as u16).to_be_bytes().to_vec();
        b.extend_from_slice(payload);
        self.0.write_all(&b).unwrap();
    }
    fn recv(&mut self) -> Vec<u8> {
        let mut h = [0u8; 2];
        self.0.read_exact(&mut h).unwrap();
        let mut p = vec![0u8; u16::from_be_bytes(h) as usize];
        self.0.read_exact(&mut p).unwrap();
        p
    }
    fn apdu(&mut self, hex: &str) -> Vec<u8> {
        self.send(&tsm_gp::hex::decode(hex).unwrap());
        self.recv()
    }
}

fn state(path: &Path) -> serde_json::Value {
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

fn counter(path: &Path) -> u64 {
    state(path)["apps"][0]["domain"]["sequence_counter"].as_u64().unwrap()
}

#[test]
fn card_new_writes_sealed_state_and_a_private_key_file() {
    let d = workdir("new");
    let st = d.join("card.json");
    let out = tsm()
        .args(["card", "new", "--profile", "uicc", "--scp", "scp03", "--keys", "000102030405060708090A0B0C0D0E0F", "--kvn", "31"])
        .arg("--state")
        .arg(&st)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let key = d.join("card.json.key");
    assert_eq!(std::fs::metadata(&key).unwrap().permissions().mode() & 0o777, 0o600);
    assert_eq!(std::fs::read_to_string(&key).unwrap().trim().len(), 64, "32 bytes as hex");
    let s = state(&st);
    let keys = s["apps"][0]["domain"]["keys"].as_array().unwrap();
    assert_eq!(keys.len(), 3);
    assert!(keys.iter().all(|k| k["version"] == 0x31 && k["sealed"].is_string()));
    assert!(!std::fs::read_to_string(&st).unwrap().contains("000102030405060708090A0B0C0D0E0F"));

    // Not overwritten without --force; a wrong storage key does not open it.
    let again = tsm().args(["card", "new", "--state"]).arg(&st).output().unwrap();
    assert_eq!(again.status.code(), Some(2));
    let wrong = tsm()
        .args(["card", "run", "--once", "--vpcd", "127.0.0.1:1", "--card-key", &"11".repeat(32), "--state"])
        .arg(&st)
        .output()
        .unwrap();
    assert!(!wrong.status.success());
    assert!(String::from_utf8_lossy(&wrong.stderr).contains("se.seal"), "{}", String::from_utf8_lossy(&wrong.stderr));
    // A profile that is not the card's is refused.
    let other = tsm().args(["card", "run", "--once", "--vpcd", "127.0.0.1:1", "--profile", "ese", "--state"]).arg(&st).output().unwrap();
    assert!(String::from_utf8_lossy(&other.stderr).contains("holds a uicc card"), "{}", String::from_utf8_lossy(&other.stderr));
    let _ = std::fs::remove_dir_all(&d);
}

#[test]
fn card_run_saves_after_each_change_and_on_sigterm() {
    let d = workdir("run");
    let st = d.join("card.json");
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap().to_string();
    // The state does not exist yet: `run` creates it (SCP03 test key, deterministic).
    let mut child = tsm()
        .args(["card", "run", "--scp", "scp03", "--seed", "7", "-v", "--vpcd", &addr, "--state"])
        .arg(&st)
        .stdin(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let (s, _) = l.accept().unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut v = Vpcd(s);
    v.send(&[0x04]);
    let atr = v.recv();
    assert_eq!(tsm_gp::hex::encode(&atr), state(&st)["profile"]["atr"].as_str().unwrap());
    v.send(&[0x01]);
    assert!(v.apdu("00A4040008A000000151000000").ends_with(&[0x90, 0x00]));
    let c0 = counter(&st);
    let ino0 = std::fs::metadata(&st).unwrap().ino();

    // INITIALIZE UPDATE advances the SCP03 (i=70) sequence counter: saved before the answer.
    let r = v.apdu("8050000008A1B2C3D4E5F6A7B800");
    assert_eq!(r.len(), 32 + 2, "INITIALIZE UPDATE answer");
    assert_eq!(&r[r.len() - 2..], [0x90, 0x00]);
    assert_eq!(counter(&st), c0 + 1, "state file written before the response went out");
    let ino1 = std::fs::metadata(&st).unwrap().ino();
    assert_ne!(ino0, ino1, "saved by rename of a new file");

    // A command that changes nothing does not rewrite the file.
    assert!(v.apdu("80CA9F7F00").ends_with(&[0x90, 0x00]));
    assert_eq!(std::fs::metadata(&st).unwrap().ino(), ino1, "no save without a change");

    // SIGTERM: the card leaves the reader, saves and exits 0.
    let term = Command::new("kill").args(["-TERM", &child.id().to_string()]).status().unwrap();
    assert!(term.success());
    let mut b = [0u8; 1];
    assert_eq!(v.0.read(&mut b).unwrap(), 0, "connection closed on SIGTERM");
    let status = child.wait().unwrap();
    let mut err = String::new();
    child.stderr.take().unwrap().read_to_string(&mut err).unwrap();
    assert!(status.success(), "{status}: {err}");
    assert!(err.contains("apdu 80 50 00 00 +10B -> 9000 32B"), "one line per APDU:\n{err}");
    assert!(!err.contains("A1B2C3D4") && !err.to_uppercase().contains("A1 B2 C3"), "APDU data in the log:\n{err}");
    assert!(err.contains("state saved"), "{err}");
    assert_eq!(counter(&st), c0 + 1);
    let _ = std::fs::remove_dir_all(&d);
}
