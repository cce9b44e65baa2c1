//! SCP03 against third-party traces (testdata/vectors/scp03: kaoh/globalplatform, osmocom/pysim,
//! Samsung/OpenSCP-Java; gppro_nextgen_dumps: a real NXP JCOP4). Every section is replayed
//! generically by the host, by the card and by the monitor; the expected bytes are the recorded
//! wire bytes and the researcher-derived plaintexts, counters and chaining values.

use tsm_gp::crypto::SecretKey;
use tsm_gp::hex::{decode, encode};
use tsm_gp::recording::{Section, parse_ini, parse_log};
use tsm_gp::scp::scp03::{self, Expect, HostHandshake, Scp03Monitor, card};
use tsm_gp::scp::{CardChannel, ChannelOptions, HostChannel, ScpError, SecurityLevel, StaticKeys};
use tsm_gp::{Codec, CommandApdu, ResponseApdu};

const FILES: [&str; 3] = ["scp03_traces_kaoh.txt", "scp03_traces_pysim.txt", "scp03_traces_samsung_openscp.txt"];

/// One command after EXTERNAL AUTHENTICATE with what the trace says about it.
#[derive(Clone)]
struct Step {
    n: usize,
    wire: Vec<u8>,
    plain: Vec<u8>,
    counter: Option<Vec<u8>>,
    chaining: Option<Vec<u8>>,
    resp: Option<Vec<u8>>,
    /// `rN.plain`, or `rN` itself when the level has no R-MAC.
    resp_plain: Option<Vec<u8>>,
    rmac: Option<Vec<u8>>,
}

#[derive(Clone)]
struct Trace {
    name: String,
    s: Section,
    /// Static keys, version = P1 of the recorded INITIALIZE UPDATE.
    keys: StaticKeys,
    host_challenge: Vec<u8>,
    c1: Vec<u8>,
    r1: Vec<u8>,
    c2: Vec<u8>,
    r2: Vec<u8>,
    level: SecurityLevel,
    steps: Vec<Step>,
    /// Host behaviour read off the wire bytes.
    options: ChannelOptions,
    sd_aid: Option<Vec<u8>>,
    /// The trace's card challenge is the pseudo-random derivation (per `derived.*`).
    pseudo: bool,
    s16: bool,
}

impl Trace {
    fn opt(&self, k: &str) -> Option<Vec<u8>> {
        self.s.hex(k).unwrap()
    }
    fn req(&self, k: &str) -> Vec<u8> {
        self.opt(k).unwrap_or_else(|| panic!("[{}] has no {k}", self.name))
    }
    fn mac_len(&self) -> usize {
        if self.s16 { 16 } else { 8 }
    }
    fn cmd(&self, b: &[u8]) -> CommandApdu {
        CommandApdu::from_bytes(b).unwrap_or_else(|e| panic!("[{}] {e}", self.name))
    }
    fn resp(&self, b: &[u8]) -> ResponseApdu {
        ResponseApdu::from_bytes(b).unwrap()
    }
    /// Keys as the card holds them: version = the one it reports.
    fn card_keys(&self) -> StaticKeys {
        let mut k = self.keys.clone();
        k.version = self.req("iu.kvn")[0];
        k
    }
}

fn aes(b: &[u8]) -> SecretKey {
    SecretKey::aes(b).unwrap()
}

fn traces() -> Vec<Trace> {
    let mut out = Vec::new();
    for f in FILES {
        let p = tsm_gp::testdata_dir().join("vectors/scp03").join(f);
        let text = std::fs::read_to_string(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
        for s in parse_ini(&text).unwrap() {
            if s.get("c1").is_none() {
                continue; // e.g. the pysim KCV section
            }
            out.push(trace(s));
        }
    }
    assert_eq!(out.len(), 6 + 9 + 6, "sections with traces");
    out
}

fn trace(s: Section) -> Trace {
    let h = |k: &str| s.hex(k).unwrap().unwrap_or_else(|| panic!("[{}] has no {k}", s.name));
    let c1 = h("c1");
    let mut r1 = h("r1");
    // pysim records the INITIALIZE UPDATE response without its status word; these data lengths
    // (S8 29/32, S16 45/48) cannot be a full response with one.
    if [29, 32, 45, 48].contains(&r1.len()) {
        r1.extend_from_slice(&[0x90, 0x00]);
    }
    let c2 = h("c2");
    let level = SecurityLevel(c2[2]);
    let host_challenge = h("host_challenge");
    let s16 = host_challenge.len() == 16;
    let keys = StaticKeys::new(aes(&h("key_enc")), aes(&h("key_mac")), aes(&h("key_dek")), c1[2]);
    let mut steps = Vec::new();
    let mut options = ChannelOptions::default();
    let mac_len = if s16 { 16 } else { 8 };
    for x in s.exchanges().unwrap().into_iter().filter(|x| x.index >= 3) {
        let n = x.index;
        let plain = s.hex(&format!("c{n}.plain")).unwrap().unwrap_or_else(|| panic!("[{}] c{n}.plain", s.name));
        let (pc, wc) = (CommandApdu::from_bytes(&plain).unwrap(), CommandApdu::from_bytes(&x.command).unwrap());
        if level.c_dec() && pc.data.is_empty() && wc.data.len() > mac_len {
            options.encrypt_empty_data = true;
        }
        if pc.le.is_some() && wc.le.is_none() {
            options.drop_le = true;
        }
        let resp_plain = s.hex(&format!("r{n}.plain")).unwrap().or_else(|| if level.r_mac() { None } else { x.response.clone() });
        steps.push(Step {
            n,
            wire: x.command,
            plain,
            counter: s.hex(&format!("c{n}.encryption_counter")).unwrap(),
            chaining: s.hex(&format!("c{n}.mac_chaining_value")).unwrap(),
            resp: x.response,
            resp_plain,
            rmac: s.hex(&format!("r{n}.rmac")).unwrap(),
        });
    }
    let derived = s.hex("derived.pseudo_random_card_challenge").unwrap();
    let pseudo = derived.is_some() && derived == s.hex("iu.card_challenge").unwrap();
    Trace {
        name: s.name.clone(),
        sd_aid: s.hex("invoking_aid").unwrap(),
        keys,
        host_challenge,
        c1,
        r1,
        r2: h("r2"),
        c2,
        level,
        steps,
        options,
        pseudo,
        s16,
        s,
    }
}

fn expect_for(t: &Trace) -> Expect {
    match (&t.sd_aid, t.pseudo) {
        (Some(aid), true) => Expect::sd_aid(aid).with_key_version(t.req("iu.kvn")[0]),
        _ => Expect::any(),
    }
}

fn check_keys(t: &Trace, keys: (&SecretKey, &SecretKey, &SecretKey)) -> usize {
    let mut checked = 0;
    for (name, k) in [("s_enc", keys.0), ("s_mac", keys.1), ("s_rmac", keys.2)] {
        for prefix in ["source.", "derived."] {
            if let Some(v) = t.opt(&format!("{prefix}{name}")) {
                assert_eq!(encode(k.expose()), encode(&v), "[{}] {prefix}{name}", t.name);
                checked += 1;
            }
        }
    }
    checked
}

/// (1) The host reproduces every command byte for byte and decodes every response.
#[test]
fn host_replays_every_trace() {
    let mut commands = 0;
    for t in traces() {
        let (hs, iu) = HostHandshake::new(t.keys.clone(), &t.host_challenge, t.options).unwrap();
        assert_eq!(encode(&iu.to_bytes()), encode(&t.c1), "[{}] c1", t.name);
        let auth = hs.on_init_update(&t.resp(&t.r1), t.level, expect_for(&t)).unwrap_or_else(|e| panic!("[{}] r1: {e}", t.name));
        let info = auth.info();
        assert_eq!(encode(&info.kdd), encode(&t.req("iu.kdd")), "[{}]", t.name);
        assert_eq!(auth.key_version(), t.req("iu.kvn")[0]);
        assert_eq!(auth.i(), t.req("iu.i")[0]);
        assert_eq!(info.card_challenge, t.req("iu.card_challenge"));
        assert_eq!(info.card_cryptogram, t.req("iu.card_cryptogram"));
        let seq = t.opt("iu.sequence_counter").map(|b| u32::from_be_bytes([0, b[0], b[1], b[2]]));
        assert_eq!(auth.sequence_counter(), seq, "[{}]", t.name);
        assert_eq!(encode(auth.host_cryptogram()), encode(&t.req("derived.host_cryptogram")), "[{}]", t.name);
        assert!(check_keys(&t, auth.session_keys()) >= 3, "[{}] session keys checked", t.name);
        assert_eq!(encode(&auth.external_authenticate().to_bytes()), encode(&t.c2), "[{}] c2", t.name);
        let mut host = auth.on_external_authenticate(&t.resp(&t.r2)).unwrap();
        if let Some(cv) = t.opt("c2.mac_chaining_value") {
            assert_eq!(encode(&host.mac_chaining_value()), encode(&cv), "[{}] c2 chaining", t.name);
        }
        for st in &t.steps {
            let wire = host.wrap(&t.cmd(&st.plain)).unwrap();
            assert_eq!(encode(&wire.to_bytes()), encode(&st.wire), "[{}] c{}", t.name, st.n);
            if let Some(c) = &st.counter {
                assert_eq!(encode(&host.encryption_counter().to_be_bytes()), encode(c), "[{}] c{} counter", t.name, st.n);
            }
            if let Some(c) = &st.chaining {
                assert_eq!(encode(&host.mac_chaining_value()), encode(c), "[{}] c{} chaining", t.name, st.n);
            }
            if let Some(r) = &st.resp {
                let plain = host.unwrap(&t.resp(r)).unwrap_or_else(|e| panic!("[{}] r{}: {e}", t.name, st.n));
                if let Some(p) = &st.resp_plain {
                    assert_eq!(encode(&plain.to_bytes()), encode(p), "[{}] r{} plain", t.name, st.n);
                }
            }
            commands += 1;
        }
    }
    assert_eq!(commands, 3 + 5 + 1 + 3 + 9 * 5 + 6 * 3 - 2, "commands replayed");
}

/// The pseudo-random challenge derivation against every `derived.pseudo_random_card_challenge`
/// (matching and non-matching ones), and the host's check of it.
#[test]
fn pseudo_random_card_challenge() {
    let mut seen = (0, 0);
    for t in traces() {
        let Some(derived) = t.opt("derived.pseudo_random_card_challenge") else { continue };
        let seq = t.req("iu.sequence_counter");
        let seq = u32::from_be_bytes([0, seq[0], seq[1], seq[2]]);
        let aid = t.sd_aid.clone().unwrap();
        let got = scp03::pseudo_random_challenge(&*t.keys.enc, seq, &aid, derived.len()).unwrap();
        assert_eq!(encode(&got), encode(&derived), "[{}]", t.name);
        // With the SD AID, the host accepts the matching sessions and refuses the other one.
        let (hs, _) = HostHandshake::new(t.keys.clone(), &t.host_challenge, t.options).unwrap();
        let r = hs.on_init_update(&t.resp(&t.r1), t.level, Expect::sd_aid(&aid));
        if t.pseudo {
            assert_eq!(r.unwrap().info().pseudo_random_challenge_ok, Some(true));
            seen.0 += 1;
        } else {
            assert!(matches!(r, Err(ScpError::CardChallenge { .. })), "[{}] {r:?}", t.name);
            seen.1 += 1;
        }
    }
    assert_eq!(seen, (5, 1), "kaoh sessions 1-5 match, 6 does not");
}

/// Predicted one-round-trip handshake: everything the host sends is computed before any answer,
/// from the counter the card reports in its response (kaoh 1-5, whose challenges are derived).
#[test]
fn predicted_handshake_matches_traces() {
    let mut n = 0;
    for t in traces().into_iter().filter(|t| t.pseudo) {
        let seq = t.req("iu.sequence_counter");
        let seq = u32::from_be_bytes([0, seq[0], seq[1], seq[2]]);
        let aid = t.sd_aid.clone().unwrap();
        let mut p = HostHandshake::predict(t.keys.clone(), &t.host_challenge, seq, &aid, t.level, t.options).unwrap();
        assert_eq!(encode(&p.init_update().to_bytes()), encode(&t.c1), "[{}]", t.name);
        assert_eq!(encode(&p.external_authenticate().to_bytes()), encode(&t.c2), "[{}]", t.name);
        let wires: Vec<Vec<u8>> = t.steps.iter().map(|st| p.host().wrap(&t.cmd(&st.plain)).unwrap().to_bytes()).collect();
        for (w, st) in wires.iter().zip(&t.steps) {
            assert_eq!(encode(w), encode(&st.wire), "[{}] c{}", t.name, st.n);
        }
        p.verify_init_update(&t.resp(&t.r1)).unwrap();
        p.verify_external_authenticate(&t.resp(&t.r2)).unwrap();
        // Off by one: the counter the card had *before* the INITIALIZE UPDATE predicts wrongly.
        let wrong = HostHandshake::predict(t.keys.clone(), &t.host_challenge, seq - 1, &aid, t.level, t.options).unwrap();
        let e = wrong.verify_init_update(&t.resp(&t.r1)).unwrap_err();
        assert!(matches!(e, ScpError::BadInitUpdateResponse(ref m) if m.contains("sequence counter")), "{e}");
        n += 1;
    }
    assert_eq!(n, 5);
}

fn card_params(t: &Trace) -> card::CardParams {
    let seq = t.opt("iu.sequence_counter").map(|b| u32::from_be_bytes([0, b[0], b[1], b[2]]));
    let mut kdd = [0u8; 10];
    kdd.copy_from_slice(&t.req("iu.kdd"));
    let random_challenge = (!t.pseudo).then(|| {
        let mut c = [0u8; 16];
        let cc = t.req("iu.card_challenge");
        c[..cc.len()].copy_from_slice(&cc);
        c
    });
    card::CardParams {
        i: t.req("iu.i")[0],
        // The card increments its stored counter and reports the new value.
        sequence_counter: seq.map_or(0, |s| s - 1),
        kdd,
        sd_aid: t.sd_aid.clone().unwrap_or_default(),
        random_challenge,
        s16: t.s16,
    }
}

/// (2) The card answers INITIALIZE UPDATE with the recorded bytes, accepts EXTERNAL AUTHENTICATE,
/// decodes every command and reproduces every protected response.
#[test]
fn card_replays_every_trace() {
    let mut responses = 0;
    let mut padded_quirk = Vec::new();
    for t in traces() {
        let params = card_params(&t);
        let (r1, pending) = card::on_init_update(&t.card_keys(), &t.cmd(&t.c1), params).unwrap_or_else(|e| panic!("[{}] {e}", t.name));
        assert_eq!(encode(&r1.to_bytes()), encode(&t.r1), "[{}] r1", t.name);
        if let Some(seq) = t.opt("iu.sequence_counter") {
            assert_eq!(pending.sequence_counter(), Some(u32::from_be_bytes([0, seq[0], seq[1], seq[2]])));
        }
        let (r2, mut c) = pending.on_external_authenticate(&t.cmd(&t.c2)).unwrap_or_else(|e| panic!("[{}] c2: {e}", t.name));
        assert_eq!(encode(&r2.to_bytes()), encode(&t.r2));
        assert_eq!(c.level(), t.level);
        for st in &t.steps {
            let plain = c.unwrap_command(&t.cmd(&st.wire)).unwrap_or_else(|e| panic!("[{}] c{}: {e}", t.name, st.n));
            assert_eq!(encode(&plain.to_bytes()), encode(&st.plain), "[{}] c{}", t.name, st.n);
            assert_eq!(plain, t.cmd(&st.plain));
            if let (Some(r), Some(p)) = (&st.resp, &st.resp_plain) {
                let wire = c.wrap_response(t.resp(p)).unwrap();
                let plain_len = p.len() - 2;
                let enc_len = r.len() - 2 - if t.level.r_mac() { t.mac_len() } else { 0 };
                if t.level.r_enc() && plain_len > 0 && enc_len != (plain_len / 16 + 1) * 16 {
                    // Non-minimal R-ENC padding in the recording (OpenSCP emulation: 11 bytes
                    // padded to 32, in 5 of the 6 sessions); we pad minimally, so only lengths compare.
                    padded_quirk.push(format!("{} r{}", t.name, st.n));
                    assert_eq!(wire.data.len(), (plain_len / 16 + 1) * 16 + t.mac_len());
                } else {
                    assert_eq!(encode(&wire.to_bytes()), encode(r), "[{}] r{}", t.name, st.n);
                    responses += 1;
                }
            }
        }
    }
    assert_eq!(responses + padded_quirk.len(), 10 + 9 + 18);
    assert_eq!(padded_quirk.len(), 5, "{padded_quirk:?}");
    assert!(padded_quirk.iter().all(|q| q.starts_with("openscp") && q.ends_with("r5")), "{padded_quirk:?}");
}

struct MonitorRun {
    /// Index in the trace of the first failure: 1 = INITIALIZE UPDATE, 2 = EA, N = cN, with
    /// `true` for the response.
    failures: Vec<(usize, bool, ScpError)>,
}

/// Runs the monitor over a (possibly altered) trace, comparing every decoded APDU with the
/// trace's plaintext when it succeeds.
fn monitor_run(t: &Trace) -> MonitorRun {
    let mut failures = Vec::new();
    let auth = match Scp03Monitor::start(&t.keys, &t.cmd(&t.c1), &t.resp(&t.r1), t.sd_aid.as_deref()) {
        Ok(a) => a,
        Err(e) => {
            failures.push((1, true, e));
            return MonitorRun { failures };
        }
    };
    let mut m = match auth.external_authenticate(&t.cmd(&t.c2), &t.resp(&t.r2)) {
        Ok(m) => m,
        Err(e) => {
            failures.push((2, false, e));
            return MonitorRun { failures };
        }
    };
    for st in &t.steps {
        match m.command(&t.cmd(&st.wire)) {
            Ok(p) => assert_eq!(encode(&p.to_bytes()), encode(&st.plain), "[{}] c{}", t.name, st.n),
            Err(e) => failures.push((st.n, false, e)),
        }
        if let Some(r) = &st.resp {
            match m.response(&t.resp(r)) {
                Ok(p) => {
                    if let Some(pl) = &st.resp_plain {
                        assert_eq!(encode(&p.to_bytes()), encode(pl), "[{}] r{}", t.name, st.n)
                    }
                }
                Err(e) => failures.push((st.n, true, e)),
            }
        }
    }
    MonitorRun { failures }
}

/// (3a) The monitor decodes every session, with the pseudo-random check result and the session
/// key KCVs.
#[test]
fn monitor_decodes_every_trace() {
    for t in traces() {
        let run = monitor_run(&t);
        assert!(run.failures.is_empty(), "[{}] {:?}", t.name, run.failures);
        let auth = Scp03Monitor::start(&t.keys, &t.cmd(&t.c1), &t.resp(&t.r1), t.sd_aid.as_deref()).unwrap();
        let expected = t.opt("derived.pseudo_random_card_challenge").map(|_| t.pseudo);
        assert_eq!(auth.info().pseudo_random_challenge_ok, expected, "[{}]", t.name);
        assert_eq!(encode(auth.host_cryptogram()), encode(&t.req("derived.host_cryptogram")));
        check_keys(&t, auth.session_keys());
        let kcv = auth.session_key_kcvs();
        assert_eq!(kcv[0], auth.session_keys().0.kcv());
        let m = auth.external_authenticate(&t.cmd(&t.c2), &t.resp(&t.r2)).unwrap();
        assert_eq!(m.level(), t.level);
    }
}

fn flip(b: &[u8], byte: usize, bit: u8) -> Vec<u8> {
    let mut v = b.to_vec();
    v[byte] ^= 1 << bit;
    v
}

/// (3b) Every single-bit flip of every C-MAC, R-MAC and cryptogram in every trace is reported
/// on exactly that APDU; everything else still decodes.
#[test]
fn monitor_pinpoints_every_flipped_mac_bit() {
    let mut flips = 0;
    for t in traces() {
        let ml = t.mac_len();
        // Card cryptogram in r1 (it sits before the optional 3-byte counter and the SW).
        let cc_at = 13 + ml;
        for byte in cc_at..cc_at + ml {
            for bit in 0..8 {
                let mut a = t.clone();
                a.r1 = flip(&t.r1, byte, bit);
                let run = monitor_run(&a);
                assert!(matches!(run.failures.as_slice(), [(1, _, ScpError::CardCryptogram { .. })]), "[{}] {:?}", t.name, run.failures);
                flips += 1;
            }
        }
        // Host cryptogram and C-MAC of EXTERNAL AUTHENTICATE.
        for byte in 5..5 + 2 * ml {
            for bit in 0..8 {
                let mut a = t.clone();
                a.c2 = flip(&t.c2, byte, bit);
                let run = monitor_run(&a);
                let ok = match run.failures.as_slice() {
                    [(2, false, ScpError::HostCryptogram)] => byte < 5 + ml,
                    [(2, false, ScpError::CMac { .. })] => byte >= 5 + ml,
                    _ => false,
                };
                assert!(ok, "[{}] c2 byte {byte} bit {bit}: {:?}", t.name, run.failures);
                flips += 1;
            }
        }
        for (k, st) in t.steps.iter().enumerate() {
            // The C-MAC: the last mac_len bytes of the data field (before Le, if any).
            let le_len = usize::from(t.cmd(&st.wire).le.is_some());
            let end = st.wire.len() - le_len;
            for byte in end - ml..end {
                for bit in 0..8 {
                    let mut a = t.clone();
                    a.steps[k].wire = flip(&st.wire, byte, bit);
                    let run = monitor_run(&a);
                    assert!(
                        matches!(run.failures.as_slice(), [(n, false, ScpError::CMac { .. })] if *n == st.n),
                        "[{}] c{} byte {byte} bit {bit}: {:?}",
                        t.name,
                        st.n,
                        run.failures
                    );
                    flips += 1;
                }
            }
            if let (Some(r), Some(rmac)) = (&st.resp, &st.rmac) {
                let end = r.len() - 2;
                assert_eq!(encode(&r[end - ml..end]), encode(rmac), "[{}] r{}.rmac", t.name, st.n);
                for byte in end - ml..end {
                    for bit in 0..8 {
                        let mut a = t.clone();
                        a.steps[k].resp = Some(flip(r, byte, bit));
                        let run = monitor_run(&a);
                        assert!(
                            matches!(run.failures.as_slice(), [(n, true, ScpError::RMac { .. })] if *n == st.n),
                            "[{}] r{} byte {byte} bit {bit}: {:?}",
                            t.name,
                            st.n,
                            run.failures
                        );
                        flips += 1;
                    }
                }
            }
        }
    }
    assert!(flips > 10_000, "{flips}");
}

/// (3c) A damaged data field: S16 recovers the chain from the received MAC (which is the host's
/// full chaining value) and decodes the next commands; S8 cannot.
#[test]
fn monitor_after_damaged_command_data() {
    for t in traces() {
        if t.steps.len() < 2 {
            continue;
        }
        let mut a = t.clone();
        a.steps[0].wire = flip(&t.steps[0].wire, 6, 0);
        let run = monitor_run(&a);
        let n0 = t.steps[0].n;
        if t.s16 {
            let fails: Vec<_> = run.failures.iter().map(|f| (f.0, f.1)).collect();
            // The damaged command fails; its response R-MAC (over the host's chaining value)
            // cannot be verified with the value computed over the damaged data either.
            assert!(fails.iter().all(|&(n, _)| n == n0), "[{}] {:?}", t.name, run.failures);
            assert!(fails.contains(&(n0, false)));
        } else {
            assert!(run.failures.iter().any(|f| f.0 == t.steps[1].n), "[{}] S8 cannot recover: {:?}", t.name, run.failures);
        }
    }
}

/// The host side checks errors a card could cause, on real trace bytes.
#[test]
fn host_rejects_bad_init_update_responses() {
    let t = traces().into_iter().next().unwrap();
    let hs = || HostHandshake::new(t.keys.clone(), &t.host_challenge, t.options).unwrap().0;
    // Wrong key: the card cryptogram does not verify.
    let mut wrong = t.keys.clone();
    wrong.mac = std::sync::Arc::new(aes(&[0x11; 16]));
    let (h, _) = HostHandshake::new(wrong, &t.host_challenge, t.options).unwrap();
    let e = h.on_init_update(&t.resp(&t.r1), t.level, Expect::any()).unwrap_err();
    assert!(matches!(e, ScpError::CardCryptogram { .. }), "{e}");
    assert_eq!(e.code(), "scp.card_cryptogram");
    // Refused.
    let e = hs().on_init_update(&t.resp(&decode("6A88").unwrap()), t.level, Expect::any()).unwrap_err();
    assert!(matches!(e, ScpError::CardRefused { command: "INITIALIZE UPDATE", .. }), "{e}");
    // Another SCP.
    let mut other = t.r1.clone();
    other[11] = 0x02;
    let e = hs().on_init_update(&t.resp(&other), t.level, Expect::any()).unwrap_err();
    assert!(matches!(e, ScpError::Unsupported(ref m) if m.contains("SCP02")), "{e}");
    // Every truncation and extension of the data field: a clear error, never a panic.
    let data = &t.r1[..t.r1.len() - 2];
    for n in 0..data.len() + 40 {
        let mut d: Vec<u8> = data.iter().copied().chain(std::iter::repeat(0)).take(n).collect();
        d.extend_from_slice(&[0x90, 0x00]);
        let r = hs().on_init_update(&t.resp(&d), t.level, Expect::any());
        match n {
            29 | 32 => {} // S8 lengths: decided by the cryptogram
            _ => assert!(matches!(r, Err(ScpError::BadInitUpdateResponse(_)) | Err(ScpError::Unsupported(_))), "{n}: {r:?}"),
        }
    }
    // A level the card's i does not support (kaoh session 5 is i=10: no R-MAC).
    let t5 = traces().into_iter().find(|t| t.req("iu.i")[0] == 0x10).unwrap();
    let (h, _) = HostHandshake::new(t5.keys.clone(), &t5.host_challenge, t5.options).unwrap();
    let e = h.on_init_update(&t5.resp(&t5.r1), SecurityLevel::C_MAC_R_MAC, Expect::any()).unwrap_err();
    assert!(matches!(e, ScpError::UnsupportedLevel { .. }), "{e}");
    // Unexpected key version.
    let e = hs().on_init_update(&t.resp(&t.r1), t.level, Expect::any().with_key_version(0x31)).unwrap_err();
    assert!(matches!(e, ScpError::BadInitUpdateResponse(ref m) if m.contains("key version")), "{e}");
}

/// The card refuses a wrong host cryptogram, a wrong key version and a bad EA C-MAC with the
/// status words GP prescribes.
#[test]
fn card_rejects_bad_handshakes() {
    let t = traces().into_iter().next().unwrap();
    let fresh = || card::on_init_update(&t.card_keys(), &t.cmd(&t.c1), card_params(&t)).unwrap().1;
    let mut c2 = t.c2.clone();
    c2[6] ^= 1;
    let e = fresh().on_external_authenticate(&t.cmd(&c2)).unwrap_err();
    assert_eq!((e.clone(), e.card_status().0), (ScpError::HostCryptogram, 0x6300));
    let mut c2 = t.c2.clone();
    *c2.last_mut().unwrap() ^= 1;
    let e = fresh().on_external_authenticate(&t.cmd(&c2)).unwrap_err();
    assert!(matches!(e, ScpError::CMac { .. }));
    assert_eq!(e.card_status().0, 0x6982);
    let mut c1 = t.c1.clone();
    c1[2] = 0x42;
    let e = card::on_init_update(&t.card_keys(), &t.cmd(&c1), card_params(&t)).map(|_| ()).unwrap_err();
    assert!(matches!(e, ScpError::UnknownKeyVersion { requested: 0x42, .. }), "{e}");
    assert_eq!(e.card_status().0, 0x6A88);
    // Key version 00 means "any".
    let mut c1 = t.c1.clone();
    c1[2] = 0x00;
    assert!(card::on_init_update(&t.card_keys(), &t.cmd(&c1), card_params(&t)).is_ok());
}

/// A real card (NXP JCOP4, GPPro dump): host, predicted handshake and monitor.
#[test]
fn jcop4_real_card_dump() {
    let text = std::fs::read_to_string(tsm_gp::testdata_dir().join("vectors/gppro_nextgen_dumps/scp03-auth-jcop4.dump")).unwrap();
    let x = parse_log(&text).unwrap();
    assert_eq!(x.len(), 3);
    let key = aes(&decode("404142434445464748494A4B4C4D4E4F").unwrap());
    let keys = StaticKeys::single(key, 0);
    let hc = decode("0102030405060708").unwrap();
    let aid = decode("A000000151000000").unwrap();
    let c = |i: usize| CommandApdu::from_bytes(&x[i].command).unwrap();
    let r = |i: usize| ResponseApdu::from_bytes(x[i].response.as_ref().unwrap()).unwrap();
    let level = SecurityLevel(x[1].command[2]);
    let (hs, iu) = HostHandshake::new(keys.clone(), &hc, ChannelOptions::default()).unwrap();
    assert_eq!(iu.to_bytes(), x[0].command);
    let auth = hs.on_init_update(&r(0), level, Expect::sd_aid(&aid)).unwrap();
    assert_eq!(auth.sequence_counter(), Some(0x000436));
    assert_eq!(encode(auth.session_keys().0.expose()), "72790CA8EDDD33FF607B2EA804E25344");
    assert_eq!(encode(auth.session_keys().1.expose()), "F7062FB6554BB7B140A7336658C4178E");
    assert_eq!(encode(auth.session_keys().2.expose()), "D6E86D640A74CAF2DAB8894C64A358E8");
    assert_eq!(auth.external_authenticate().to_bytes(), x[1].command);
    let mut host = auth.on_external_authenticate(&r(1)).unwrap();
    // The plain GET STATUS: the wire command without the MAC and the secure messaging bit.
    let plain = CommandApdu::from_bytes(&decode("80F28002024F0000").unwrap()).unwrap();
    assert_eq!(host.wrap(&plain).unwrap().to_bytes(), x[2].command);
    let mut p = HostHandshake::predict(keys.clone(), &hc, 0x000436, &aid, level, ChannelOptions::default()).unwrap();
    assert_eq!(p.external_authenticate().to_bytes(), x[1].command);
    assert_eq!(p.host().wrap(&plain).unwrap().to_bytes(), x[2].command);
    p.verify_init_update(&r(0)).unwrap();
    let mut m = Scp03Monitor::start(&keys, &c(0), &r(0), Some(&aid)).unwrap().external_authenticate(&c(1), &r(1)).unwrap();
    assert_eq!(m.command(&c(2)).unwrap(), plain);
    assert_eq!(m.response(&r(2)).unwrap(), r(2));
}

/// Sensitive data (key values) under the static DEK, AES-CBC with a zero ICV, against the
/// ciphertexts of kaoh's STORE DATA key loading test (source-asserted `expected_output`).
#[test]
fn encrypt_sensitive_matches_kaoh_store_data() {
    let p = tsm_gp::testdata_dir().join("vectors/gp_data/kaoh_store_data_put_key_dgi.txt");
    let mut checked = 0;
    for s in parse_ini(&std::fs::read_to_string(p).unwrap()).unwrap() {
        let dek = aes(&s.hex("dek").unwrap().unwrap());
        let keys = StaticKeys::new(aes(&[1; 16]), aes(&[2; 16]), dek.clone(), 0x30);
        let (hs, iu) = HostHandshake::new(keys.clone(), &[3; 8], ChannelOptions::default()).unwrap();
        let params = card::CardParams { i: 0x70, sd_aid: vec![0xA0, 0, 0, 1, 0x51], ..Default::default() };
        let (r1, pending) = card::on_init_update(&keys, &iu, params).unwrap();
        let auth = hs.on_init_update(&r1, SecurityLevel::C_MAC, Expect::any()).unwrap();
        let (r2, c) = pending.on_external_authenticate(&auth.external_authenticate()).unwrap();
        let host = auth.on_external_authenticate(&r2).unwrap();
        let c = c.with_dek(dek);
        let expected_output = s.get("expected_output").unwrap().to_string();
        for n in 1..=3 {
            let Some(key) = s.hex(&format!("key{n}")).unwrap() else { continue };
            let enc = host.encrypt_sensitive(&key).unwrap();
            assert_eq!(encode(&enc), encode(&s.hex(&format!("derived.key{n}_encrypted")).unwrap().unwrap()), "[{}] key{n}", s.name);
            assert!(expected_output.contains(&encode(&enc)), "[{}] key{n} in the source's STORE DATA", s.name);
            assert_eq!(c.decrypt_sensitive(&enc).unwrap().to_vec(), key);
            checked += 1;
        }
        assert!(host.encrypt_sensitive(&[0; 15]).is_err(), "not block aligned");
    }
    assert_eq!(checked, 3 + 1 + 2 + 1);
}
