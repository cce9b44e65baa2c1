//! The trace decoder: takes a recorded APDU exchange and the static keys, re-derives the
//! session keys, checks every cryptogram and MAC, decrypts C-DEC and R-ENC data and describes
//! every command and response. It is what an operator runs when an over-the-air session fails.
//!
//! Input is either an INI vector file (every `[section]` one session; keys from the section's
//! `key_enc`/`key_mac`/`key_dek` lines when none are given) or a plain log, which is split into
//! sessions at every INITIALIZE UPDATE.

use crate::apdu::{CommandApdu, ResponseApdu};
use crate::codec::Codec;
use crate::crypto::diversify::{Diversification, KeyRole, diversify};
use crate::crypto::SecretKey;
use crate::gp::status::parse_status_response;
use crate::gp::data::GpDataObject;
use crate::gp::{self, GpCommand};
use crate::hex::{self, Hex};
use crate::recording::{Exchange, Section};
use crate::scp::scp02::Scp02Monitor;
use crate::scp::scp03::Scp03Monitor;
use crate::scp::{ChannelOptions, ScpError, StaticKeys};
use serde::Serialize;
use zeroize::Zeroizing;

/// Where the decoder takes keys from when a section does not name its own.
#[derive(Clone, Default)]
pub struct DecodeOptions {
    /// Static keys given by the operator; they take precedence over keys in the file. Raw
    /// bytes: whether they are 3DES or AES keys follows from the session's protocol.
    pub keys: Option<KeyBytes>,
    /// An issuer master key and method: card keys are diversified with each session's KDD.
    pub master: Option<(Diversification, Zeroizing<Vec<u8>>)>,
    /// AID of the security domain, to check SCP03 pseudo-random card challenges.
    pub sd_aid: Option<Vec<u8>>,
    /// Quirks of the card in the trace.
    pub channel: ChannelOptions,
}

/// ENC, MAC and DEK key values, zeroized on drop.
#[derive(Clone)]
pub struct KeyBytes {
    pub enc: Zeroizing<Vec<u8>>,
    pub mac: Zeroizing<Vec<u8>>,
    pub dek: Zeroizing<Vec<u8>>,
}

impl KeyBytes {
    /// One key for all three roles.
    pub fn single(k: &[u8]) -> Self {
        KeyBytes { enc: Zeroizing::new(k.to_vec()), mac: Zeroizing::new(k.to_vec()), dek: Zeroizing::new(k.to_vec()) }
    }
    /// The key set for SCP02 (3DES) or SCP03 (AES).
    pub fn to_static(&self, scp03: bool) -> Result<StaticKeys, String> {
        let mk = |b: &[u8]| if scp03 { SecretKey::aes(b) } else { SecretKey::des3(b) }.map_err(|e| e.to_string());
        Ok(StaticKeys::new(mk(&self.enc)?, mk(&self.mac)?, mk(&self.dek)?, 0))
    }
}

/// The result of one session.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    /// Every cryptogram and MAC verified (or there was nothing protected to verify).
    Verified,
    /// At least one cryptogram or MAC did not verify.
    Failed,
    /// Protected traffic that could not be checked (no keys, unsupported protocol).
    Unverified,
    /// No APDU exchange in this section (e.g. a list of key check values).
    Skipped,
}

/// A problem found at one line.
#[derive(Debug, Clone, Serialize)]
pub struct Problem {
    pub line: usize,
    pub code: String,
    pub message: String,
}

/// One command or response.
#[derive(Debug, Clone, Serialize)]
pub struct Event {
    pub line: usize,
    /// `"C"` for a command, `"R"` for a response.
    pub dir: &'static str,
    pub wire: String,
    /// The unprotected APDU, when it differs from the wire form.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub plain: Option<String>,
    /// What the APDU means.
    pub text: String,
    /// What was verified on this APDU (e.g. "C-MAC ok").
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub checks: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub problem: Option<Problem>,
}

/// One session.
#[derive(Debug, Clone, Serialize)]
pub struct SessionReport {
    pub name: String,
    pub line: usize,
    pub outcome: Outcome,
    /// Why the session was skipped or could not be verified.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub scp: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub level: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub keys: Option<String>,
    /// Check values of the derived session keys (never the keys).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub session_key_kcvs: Vec<(String, String)>,
    pub events: Vec<Event>,
    pub problems: Vec<Problem>,
}

impl SessionReport {
    fn new(name: &str, line: usize) -> Self {
        SessionReport {
            name: name.to_string(),
            line,
            outcome: Outcome::Verified,
            note: None,
            scp: None,
            level: None,
            keys: None,
            session_key_kcvs: Vec::new(),
            events: Vec::new(),
            problems: Vec::new(),
        }
    }
}

/// Hints a vector section may carry.
#[derive(Default, Clone)]
struct Hints {
    keys: Option<KeyBytes>,
    scp02_i: Option<u8>,
    sd_aid: Option<Vec<u8>>,
}

fn section_keys(s: &Section) -> Option<KeyBytes> {
    let get = |k: &str| s.hex(k).ok().flatten().map(Zeroizing::new);
    match (get("key_enc"), get("key_mac"), get("key_dek")) {
        (Some(enc), Some(mac), Some(dek)) => Some(KeyBytes { enc, mac, dek }),
        _ => None,
    }
}

/// Decodes one INI section.
pub fn decode_section(s: &Section, opts: &DecodeOptions) -> SessionReport {
    let exchanges = match s.exchanges() {
        Ok(x) => x,
        Err(e) => {
            let mut r = SessionReport::new(&s.name, s.line);
            r.outcome = Outcome::Failed;
            r.problems.push(Problem { line: s.line, code: e.code().into(), message: e.to_string() });
            return r;
        }
    };
    if exchanges.is_empty() {
        let mut r = SessionReport::new(&s.name, s.line);
        r.outcome = Outcome::Skipped;
        r.note = Some("no APDU exchange in this section".into());
        return r;
    }
    let hints = Hints {
        keys: section_keys(s),
        scp02_i: s.hex("scp_i").ok().flatten().and_then(|v| v.first().copied()),
        sd_aid: s.hex("invoking_aid").ok().flatten().or_else(|| s.hex("sd_aid").ok().flatten()),
    };
    let mut reports = decode_exchanges(&s.name, s.line, &exchanges, &hints, opts, false);
    reports.pop().expect("one report per section")
}

/// Decodes a plain log; a new session starts at every INITIALIZE UPDATE.
pub fn decode_log(name: &str, exchanges: &[Exchange], opts: &DecodeOptions) -> Vec<SessionReport> {
    decode_exchanges(name, 1, exchanges, &Hints::default(), opts, true)
}

enum Channel {
    None,
    Scp02Auth(crate::scp::scp02::MonitorAuth),
    Scp03Auth(crate::scp::scp03::MonitorAuth),
    Scp02(Box<Scp02Monitor>),
    Scp03(Box<Scp03Monitor>),
    /// Protected traffic that cannot be checked; the reason was reported.
    Opaque,
}

impl Channel {
    /// Unwraps a protected command through the open monitor (and the monitor's level);
    /// `None` when no monitor is open.
    fn command(&mut self, wire: &[u8], cmd: &CommandApdu) -> Option<(Result<CommandApdu, ScpError>, crate::scp::SecurityLevel)> {
        match self {
            Channel::Scp02(m) => Some((m.command(wire), m.level())),
            Channel::Scp03(m) => Some((m.command(cmd), m.level())),
            _ => None,
        }
    }
}

fn problem(line: usize, e: &ScpError) -> Problem {
    Problem { line, code: e.code().to_string(), message: e.to_string() }
}

fn keys_for(kdd: &[u8], hints: &Hints, opts: &DecodeOptions, scp03: bool) -> Result<(StaticKeys, String), String> {
    if let Some(k) = &opts.keys {
        return Ok((k.to_static(scp03)?, "given".into()));
    }
    if let Some((method, mk)) = &opts.master {
        let master = match method {
            Diversification::Kdf3 => SecretKey::aes(mk),
            _ => SecretKey::des3(mk),
        }
        .map_err(|e| format!("master key: {e}"))?;
        let d = |role| diversify(*method, &master, kdd, role).map_err(|e| e.to_string());
        let k = StaticKeys::new(d(KeyRole::Enc)?, d(KeyRole::Mac)?, d(KeyRole::Dek)?, 0);
        return Ok((k, format!("diversified ({method:?}) with KDD {}", Hex(kdd))));
    }
    if let Some(k) = &hints.keys {
        return Ok((k.to_static(scp03)?, "from the file".into()));
    }
    Err("no keys: give --keys (or --master with --diversify)".into())
}

/// The pySim vectors record INITIALIZE UPDATE responses without their status word: accept a
/// response whose length is exactly a known response data length, as if it ended in 9000.
fn fix_iu_response(resp: &[u8]) -> (Vec<u8>, bool) {
    if matches!(resp.len(), 28 | 29 | 32 | 45 | 48) {
        let mut v = resp.to_vec();
        v.extend_from_slice(&[0x90, 0x00]);
        (v, true)
    } else {
        (resp.to_vec(), false)
    }
}

fn decode_exchanges(
    name: &str,
    first_line: usize,
    exchanges: &[Exchange],
    hints: &Hints,
    opts: &DecodeOptions,
    split_sessions: bool,
) -> Vec<SessionReport> {
    let mut reports = Vec::new();
    let mut rep = SessionReport::new(name, first_line);
    let mut channel = Channel::None;
    let mut last_cmd: Option<GpCommand>;
    let mut session_no = 1;
    for x in exchanges {
        let is_iu = x.command.len() >= 4 && x.command[1] == gp::ins::INITIALIZE_UPDATE && x.command[0] & 0x80 != 0;
        if is_iu && split_sessions && !matches!(channel, Channel::None) {
            reports.push(finish(rep));
            session_no += 1;
            rep = SessionReport::new(&format!("{name} session {session_no}"), x.command_line);
            channel = Channel::None;
        }
        let cmd = match CommandApdu::from_bytes(&x.command) {
            Ok(c) => c,
            Err(e) => {
                let p = Problem { line: x.command_line, code: e.code().into(), message: format!("malformed command APDU: {e}") };
                rep.events.push(Event { line: x.command_line, dir: "C", wire: hex::encode(&x.command), plain: None, text: "?".into(), checks: vec![], problem: Some(p.clone()) });
                rep.problems.push(p);
                continue;
            }
        };
        let resp_bytes = x.response.clone();
        let mut cmd_event = Event { line: x.command_line, dir: "C", wire: hex::encode(&x.command), plain: None, text: String::new(), checks: vec![], problem: None };
        let mut resp_event = resp_bytes.as_ref().map(|r| Event {
            line: x.response_line.unwrap_or(x.command_line),
            dir: "R",
            wire: hex::encode(r),
            plain: None,
            text: String::new(),
            checks: vec![],
            problem: None,
        });

        if is_iu {
            cmd_event.text = describe_command(&cmd);
            let Some(rb) = &resp_bytes else {
                cmd_event.problem = Some(Problem { line: x.command_line, code: "trace.no_response".into(), message: "INITIALIZE UPDATE without a recorded response".into() });
                rep.events.push(cmd_event);
                channel = Channel::Opaque;
                continue;
            };
            let (rb, added_sw) = fix_iu_response(rb);
            let resp = ResponseApdu::from_bytes(&rb).expect("at least 2 bytes");
            let re = resp_event.as_mut().expect("response present");
            if added_sw {
                re.checks.push("recorded without status word; read as 9000".into());
            }
            re.text = describe_iu_response(&resp);
            let scp_id = resp.data.get(11).copied();
            let kdd = resp.data.get(..10).unwrap_or(&[]).to_vec();
            let keys = keys_for(&kdd, hints, opts, scp_id == Some(3));
            channel = match (scp_id, keys) {
                (_, _) if !resp.sw.is_success() => {
                    re.checks.push(format!("card refused: {}", resp.sw.meaning()));
                    Channel::None
                }
                (Some(2) | Some(3), Err(why)) => {
                    rep.note = Some(why);
                    Channel::Opaque
                }
                (Some(2), Ok((keys, src))) => {
                    rep.keys = Some(format!("{src}; {keys:?}"));
                    let started = match hints.scp02_i {
                        Some(i) => Scp02Monitor::start_with_i(&keys, i, &x.command, &rb),
                        None => Scp02Monitor::start(&keys, &x.command, &rb),
                    };
                    match started {
                        Ok(m) => {
                            re.checks.push("card cryptogram ok".into());
                            let k = m.kcvs();
                            rep.session_key_kcvs = vec![
                                ("S-ENC".into(), hex::encode(&k.s_enc)),
                                ("S-MAC".into(), hex::encode(&k.s_mac)),
                                ("S-RMAC".into(), hex::encode(&k.s_rmac)),
                                ("S-DEK".into(), hex::encode(&k.s_dek)),
                            ];
                            rep.scp = Some(format!("SCP02 i={}", hints.scp02_i.map(|i| format!("{i:02X}")).unwrap_or_else(|| "?".into())));
                            Channel::Scp02Auth(m)
                        }
                        Err(e) => {
                            re.problem = Some(problem(re.line, &e));
                            Channel::Opaque
                        }
                    }
                }
                (Some(3), Ok((keys, src))) => {
                    rep.keys = Some(format!("{src}; {keys:?}"));
                    let sd = opts.sd_aid.as_deref().or(hints.sd_aid.as_deref());
                    match Scp03Monitor::start(&keys, &cmd, &resp, sd) {
                        Ok(m) => {
                            let m = m.with_options(opts.channel);
                            re.checks.push("card cryptogram ok".into());
                            let info = m.info();
                            match info.pseudo_random_challenge_ok {
                                Some(true) => re.checks.push("pseudo-random card challenge ok".into()),
                                Some(false) => re.checks.push("card challenge is not the pseudo-random value for the given SD AID".into()),
                                None => {}
                            }
                            rep.scp = Some(format!("SCP03 i={:02X}{}", info.i, if info.s16 { " (S16)" } else { "" }));
                            let k = m.session_key_kcvs();
                            rep.session_key_kcvs = vec![
                                ("S-ENC".into(), hex::encode(&k[0])),
                                ("S-MAC".into(), hex::encode(&k[1])),
                                ("S-RMAC".into(), hex::encode(&k[2])),
                            ];
                            Channel::Scp03Auth(m)
                        }
                        Err(e) => {
                            re.problem = Some(problem(re.line, &e));
                            Channel::Opaque
                        }
                    }
                }
                (Some(other), _) => {
                    rep.note = Some(format!("SCP{other:02X} is not supported by the decoder; commands are shown as recorded"));
                    rep.scp = Some(format!("SCP{other:02X}"));
                    Channel::Opaque
                }
                (None, _) => Channel::Opaque,
            };
            push(&mut rep, cmd_event, resp_event);
            continue;
        }

        let is_ea = cmd.ins == gp::ins::EXTERNAL_AUTHENTICATE && cmd.cla & 0x80 != 0;
        if is_ea && matches!(channel, Channel::Scp02Auth(_) | Channel::Scp03Auth(_)) {
            cmd_event.text = describe_command(&cmd);
            let resp = resp_bytes.as_ref().and_then(|r| ResponseApdu::from_bytes(r).ok()).unwrap_or(ResponseApdu::status(crate::StatusWord::SUCCESS));
            if let Some(re) = resp_event.as_mut() {
                re.text = describe_response(None, &resp);
            }
            let prev = std::mem::replace(&mut channel, Channel::Opaque);
            channel = match prev {
                Channel::Scp02Auth(m) => match m.external_authenticate(&x.command, &resp.to_bytes()) {
                    Ok(mon) => {
                        cmd_event.checks.push("host cryptogram ok, C-MAC ok".into());
                        rep.level = Some(mon.level().to_string());
                        // Options that differ only in what the card does (a pseudo-random
                        // challenge, i=15 vs 55) look the same on the wire: name all that fit.
                        let fit: Vec<String> = mon.i_candidates().iter().map(|i| format!("{i:02X}")).collect();
                        if !fit.is_empty() {
                            rep.scp = Some(format!("SCP02 i={}", fit.join(" or ")));
                        }
                        Channel::Scp02(Box::new(mon))
                    }
                    Err(e) => {
                        cmd_event.problem = Some(problem(x.command_line, &e));
                        Channel::Opaque
                    }
                },
                Channel::Scp03Auth(m) => match m.external_authenticate(&cmd, &resp) {
                    Ok(mon) => {
                        cmd_event.checks.push("host cryptogram ok, C-MAC ok".into());
                        rep.level = Some(mon.level().to_string());
                        Channel::Scp03(Box::new(mon))
                    }
                    Err(e) => {
                        cmd_event.problem = Some(problem(x.command_line, &e));
                        Channel::Opaque
                    }
                },
                other => other,
            };
            push(&mut rep, cmd_event, resp_event);
            continue;
        }

        // Any other command: unwrap when a channel is open.
        let protected = cmd.cla & 0x80 != 0 && cmd.is_secure_messaging();
        let plain_cmd: Option<CommandApdu> = match (protected, channel.command(&x.command, &cmd)) {
            (true, Some((Ok(p), level))) => {
                cmd_event.checks.push(if level.c_dec() && !p.data.is_empty() { "C-MAC ok, decrypted" } else { "C-MAC ok" }.into());
                Some(p)
            }
            (true, Some((Err(e), _))) => {
                cmd_event.problem = Some(problem(x.command_line, &e));
                None
            }
            (true, None) if matches!(channel, Channel::Opaque) => None,
            _ => Some(cmd.clone()),
        };
        match &plain_cmd {
            Some(p) => {
                if p.to_bytes() != x.command {
                    cmd_event.plain = Some(hex::encode(&p.to_bytes()));
                }
                cmd_event.text = describe_command(p);
                last_cmd = GpCommand::parse(p).ok();
            }
            None => {
                cmd_event.text = format!("{} (protected; not decoded)", gp::name(cmd.ins));
                last_cmd = None;
            }
        }
        if let (Some(rb), Some(re)) = (&resp_bytes, resp_event.as_mut()) {
            match ResponseApdu::from_bytes(rb) {
                Err(e) => re.problem = Some(Problem { line: re.line, code: e.code().into(), message: format!("malformed response APDU: {e}") }),
                Ok(wire) => {
                    let plain = match &mut channel {
                        Channel::Scp03(m) if protected && plain_cmd.is_some() => match m.response(&wire) {
                            Ok(p) => {
                                if m.level().r_mac() && (wire.data.len() > p.data.len() || wire.sw.is_success()) {
                                    re.checks.push(if m.level().r_enc() && !p.data.is_empty() { "R-MAC ok, decrypted" } else { "R-MAC ok" }.into());
                                }
                                Some(p)
                            }
                            Err(e) => {
                                re.problem = Some(problem(re.line, &e));
                                None
                            }
                        },
                        Channel::Scp02(m) if protected && plain_cmd.is_some() => match m.response(rb) {
                            Ok(p) => Some(p),
                            Err(e) => {
                                re.problem = Some(problem(re.line, &e));
                                None
                            }
                        },
                        Channel::Opaque if protected => None,
                        _ => Some(wire.clone()),
                    };
                    match plain {
                        Some(p) => {
                            if p != wire {
                                re.plain = Some(hex::encode(&p.to_bytes()));
                            }
                            re.text = describe_response(last_cmd.as_ref(), &p);
                        }
                        None => re.text = format!("{} {}", wire.sw, wire.sw.meaning()),
                    }
                }
            }
        }
        push(&mut rep, cmd_event, resp_event);
    }
    if matches!(channel, Channel::Opaque) && rep.outcome == Outcome::Verified && rep.problems.is_empty() {
        rep.outcome = Outcome::Unverified;
    }
    reports.push(finish(rep));
    reports
}

fn push(rep: &mut SessionReport, c: Event, r: Option<Event>) {
    for e in std::iter::once(c).chain(r) {
        if let Some(p) = &e.problem {
            rep.problems.push(p.clone());
        }
        rep.events.push(e);
    }
}

fn finish(mut rep: SessionReport) -> SessionReport {
    if rep.problems.iter().any(|p| p.code.starts_with("scp.") || p.code.starts_with("decode") || p.code.starts_with("trace")) {
        rep.outcome = Outcome::Failed;
    }
    rep
}

/// One line describing a plain command.
pub fn describe_command(cmd: &CommandApdu) -> String {
    match GpCommand::parse(cmd) {
        Ok(GpCommand::Other(_)) => format!("{} (INS {:02X})", gp::name(cmd.ins), cmd.ins),
        Ok(c) => c.to_string(),
        Err(e) => format!("{} (does not parse: {e})", gp::name(cmd.ins)),
    }
}

fn describe_iu_response(resp: &ResponseApdu) -> String {
    if !resp.sw.is_success() {
        return format!("{} {}", resp.sw, resp.sw.meaning());
    }
    match gp::InitUpdateResponse::parse(&resp.data) {
        Ok(r) => format!("{r}; {}", resp.sw),
        Err(e) => format!("malformed INITIALIZE UPDATE response: {e}"),
    }
}

/// Describes a plain response in the light of the command it answers.
pub fn describe_response(cmd: Option<&GpCommand>, resp: &ResponseApdu) -> String {
    let sw = format!("{} {}", resp.sw, resp.sw.meaning());
    if resp.data.is_empty() {
        return sw;
    }
    let body = match cmd {
        Some(GpCommand::GetData(_)) => GpDataObject::parse(&resp.data).map(|o| o.to_string()).map_err(|e| e.to_string()),
        Some(GpCommand::GetStatus(g)) => parse_status_response(g.scope, g.format, &resp.data)
            .map(|v| v.iter().map(|e| e.to_string()).collect::<Vec<_>>().join("; "))
            .map_err(|e| e.to_string()),
        Some(GpCommand::Select(_)) => gp::Fci::parse(&resp.data).map(|f| format!("{f:?}")).map_err(|e| e.to_string()),
        Some(GpCommand::PutKey(_)) => gp::PutKeyResponse::parse(&resp.data).map(|r| format!("{r:?}")).map_err(|e| e.to_string()),
        _ => Err(String::new()),
    };
    match body {
        Ok(b) => format!("{b}; {sw}"),
        Err(e) if e.is_empty() => format!("{} bytes {}; {sw}", resp.data.len(), Hex(&resp.data)),
        Err(e) => format!("{} bytes {} (not decoded: {e}); {sw}", resp.data.len(), Hex(&resp.data)),
    }
}
