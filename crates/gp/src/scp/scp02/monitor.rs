//! Checks a recorded SCP02 exchange with the static keys and recovers the plain commands
//! (`tsm trace decode`).
//!
//! **Unknown `i`.** A trace does not say which `i` the card uses. Unless it is given
//! ([`Scp02Monitor::start_with_i`]), the monitor follows every explicit-initiation variant the
//! bytes can tell apart — one or three keys (b1), C-MAC on the modified or unmodified APDU
//! (b2), ICV encryption (b5) — and drops a hypothesis as soon as a C-MAC contradicts it;
//! [`Scp02Monitor::i_candidates`] lists the survivors. (b6 and b7 do not change any byte of
//! the session; b1 cannot be told apart when the three static keys are equal.)
//!
//! **After a C-MAC mismatch** the command is reported and decoding goes on. A real card would
//! have closed the session, but a trace is more useful decoded to the end. The chain continues
//! from both candidates: the MAC the monitor computed (right if the MAC bytes were damaged)
//! and the MAC on the wire (right if the header or data were damaged, since the host chained
//! from what it sent); the next command that verifies settles which one was right. So a
//! single damaged command is reported once, at that command.

use super::host::check_level;
use super::session::{MAC_LEN, Opened, Session};
use super::{INS_EXTERNAL_AUTHENTICATE, INS_INITIALIZE_UPDATE, IParam, InitUpdateResponse, SessionKcvs, SessionKeys, hex, refused};
use crate::apdu::{CommandApdu, ResponseApdu};
use crate::codec::Codec;
use crate::crypto::ct_eq;
use crate::scp::{ScpError, SecurityLevel, StaticKeys};
use crate::sw::StatusWord;

/// Bound on the chain hypotheses kept after repeated C-MAC failures.
const MAX_HYPOTHESES: usize = 16;

/// Explicit-initiation variants tried when `i` is unknown, most common first.
const EXPLICIT_VARIANTS: [u8; 8] = [0x15, 0x05, 0x14, 0x04, 0x17, 0x07, 0x16, 0x06];

fn parse_command(wire: &[u8]) -> Result<CommandApdu, ScpError> {
    CommandApdu::from_bytes(wire).map_err(|e| ScpError::BadCommand(e.to_string()))
}

fn parse_response(wire: &[u8]) -> Result<ResponseApdu, ScpError> {
    ResponseApdu::from_bytes(wire).map_err(|e| ScpError::BadResponse(e.to_string()))
}

fn dedup(hyps: &mut Vec<Session>) {
    let mut seen: Vec<(u8, [u8; 8])> = Vec::new();
    hyps.retain(|h| {
        let k = (h.i.0, h.icv);
        if seen.contains(&k) {
            false
        } else {
            seen.push(k);
            true
        }
    });
    hyps.truncate(MAX_HYPOTHESES);
}

/// Checks one protected command against every hypothesis. On success the verified
/// hypotheses advance; on failure both successor chains are kept (see the module docs).
fn check_command(hyps: &mut Vec<Session>, cmd: &CommandApdu, decrypt: bool) -> Result<CommandApdu, ScpError> {
    let results: Vec<Result<Opened, ScpError>> = hyps.iter().map(|h| h.open(cmd, decrypt)).collect();
    let mut verified = Vec::new();
    for (h, r) in hyps.iter().zip(&results) {
        if let Ok(o) = r
            && o.verified()
        {
            let mut h = h.clone();
            h.advance(o.received)?;
            verified.push((h, o.plain.clone()));
        }
    }
    if let Some((_, plain)) = verified.first() {
        let plain = plain.clone();
        *hyps = verified.into_iter().map(|(h, _)| h).collect();
        dedup(hyps);
        return Ok(plain);
    }
    let mut next = Vec::new();
    for (h, r) in hyps.iter().zip(&results) {
        if let Ok(o) = r {
            let mut h = h.clone();
            h.advance(o.expected)?;
            next.push(h);
        }
    }
    if cmd.data.len() >= MAC_LEN {
        let mut wire_mac = [0u8; 8];
        wire_mac.copy_from_slice(&cmd.data[cmd.data.len() - MAC_LEN..]);
        for h in hyps.iter() {
            let mut h = h.clone();
            h.advance(wire_mac)?;
            next.push(h);
        }
    }
    let err = match results.into_iter().next() {
        Some(Ok(o)) => o.mac_error(),
        Some(Err(e)) => e,
        None => ScpError::Closed,
    };
    if !next.is_empty() {
        *hyps = next;
        dedup(hyps);
    }
    Err(err)
}

/// INITIALIZE UPDATE checked; EXTERNAL AUTHENTICATE comes next.
#[derive(Debug)]
pub struct MonitorAuth {
    hyps: Vec<Session>,
    iu: InitUpdateResponse,
    host_challenge: [u8; 8],
}

/// A monitored SCP02 session.
#[derive(Debug)]
pub struct Scp02Monitor {
    hyps: Vec<Session>,
    level: SecurityLevel,
    iu: Option<InitUpdateResponse>,
}

impl Scp02Monitor {
    /// Starts from a recorded INITIALIZE UPDATE command and response (wire bytes), `i`
    /// unknown. Verifies the card cryptogram.
    pub fn start(keys: &StaticKeys, iu_cmd: &[u8], iu_resp: &[u8]) -> Result<MonitorAuth, ScpError> {
        Self::start_variants(keys, &EXPLICIT_VARIANTS, iu_cmd, iu_resp)
    }

    /// As [`start`](Self::start) with a known `i`.
    pub fn start_with_i(keys: &StaticKeys, i: u8, iu_cmd: &[u8], iu_resp: &[u8]) -> Result<MonitorAuth, ScpError> {
        let ip = IParam(i);
        ip.validate()?;
        if !ip.explicit() {
            return Err(ScpError::Unsupported(format!("{ip} uses implicit initiation; use Scp02Monitor::implicit")));
        }
        Self::start_variants(keys, &[i], iu_cmd, iu_resp)
    }

    fn start_variants(keys: &StaticKeys, variants: &[u8], iu_cmd: &[u8], iu_resp: &[u8]) -> Result<MonitorAuth, ScpError> {
        let cmd = parse_command(iu_cmd)?;
        if cmd.ins != INS_INITIALIZE_UPDATE {
            return Err(ScpError::BadCommand(format!("INS {:02X} is not INITIALIZE UPDATE", cmd.ins)));
        }
        let host_challenge: [u8; 8] = cmd.data.as_slice().try_into().map_err(|_| {
            ScpError::BadCommand(format!("INITIALIZE UPDATE carries {} data bytes, the host challenge is 8", cmd.data.len()))
        })?;
        let resp = parse_response(iu_resp)?;
        if resp.sw != StatusWord::SUCCESS {
            return Err(refused("INITIALIZE UPDATE", resp.sw));
        }
        let iu = InitUpdateResponse::parse(&resp.data)?;
        let mut hyps = Vec::new();
        for &i in variants {
            let sk = SessionKeys::derive(keys, IParam(i), iu.sequence_counter)?;
            // The SD AID is not in the trace; variants needing it cannot be followed.
            if let Ok(s) = Session::new(sk, IParam(i), SecurityLevel::C_MAC, iu.sequence_counter, None) {
                hyps.push(s);
            }
        }
        let first = hyps.first().ok_or_else(|| ScpError::Unsupported("no SCP02 variant can be followed without the SD AID".into()))?;
        let expected = super::card_cryptogram(&first.keys.s_enc, &host_challenge, iu.sequence_counter, &iu.card_challenge)?;
        if !ct_eq(&expected, &iu.card_cryptogram) {
            return Err(ScpError::CardCryptogram { expected: hex(&expected), received: hex(&iu.card_cryptogram) });
        }
        Ok(MonitorAuth { hyps, iu, host_challenge })
    }

    /// A session opened by implicit initiation (`i` b3 = 0), at C-MAC.
    pub fn implicit(keys: &StaticKeys, i: u8, sequence_counter: u16, sd_aid: &[u8]) -> Result<Scp02Monitor, ScpError> {
        let ip = IParam(i);
        ip.validate()?;
        if ip.explicit() {
            return Err(ScpError::Unsupported(format!("{ip} uses explicit initiation; use Scp02Monitor::start")));
        }
        let sk = SessionKeys::derive(keys, ip, sequence_counter)?;
        let s = Session::new(sk, ip, SecurityLevel::C_MAC, sequence_counter, Some(sd_aid))?;
        Ok(Scp02Monitor { hyps: vec![s], level: SecurityLevel::C_MAC, iu: None })
    }

    /// Checks and unwraps one command (wire bytes). Commands without the secure messaging bit
    /// are returned as they are and leave the chain alone.
    pub fn command(&mut self, wire: &[u8]) -> Result<CommandApdu, ScpError> {
        let cmd = parse_command(wire)?;
        if !cmd.is_secure_messaging() {
            return Ok(cmd);
        }
        check_command(&mut self.hyps, &cmd, self.level.c_dec())
    }

    /// Parses one response (wire bytes). SCP02 without R-MAC leaves responses unprotected.
    pub fn response(&mut self, wire: &[u8]) -> Result<ResponseApdu, ScpError> {
        parse_response(wire)
    }

    pub fn level(&self) -> SecurityLevel {
        self.level
    }
    /// The parsed INITIALIZE UPDATE response (explicit initiation).
    pub fn init_update(&self) -> Option<&InitUpdateResponse> {
        self.iu.as_ref()
    }
    /// The `i` values (explicit variants) still consistent with the trace, most likely first.
    pub fn i_candidates(&self) -> Vec<u8> {
        let mut out: Vec<u8> = Vec::new();
        for h in &self.hyps {
            if !out.contains(&h.i.0) {
                out.push(h.i.0);
            }
        }
        out
    }
    pub fn kcvs(&self) -> SessionKcvs {
        self.hyps[0].keys.kcvs()
    }
    /// The session keys of the most likely hypothesis (for tests and diagnostics).
    pub fn session_keys(&self) -> &SessionKeys {
        &self.hyps[0].keys
    }
}

impl MonitorAuth {
    /// Checks EXTERNAL AUTHENTICATE (host cryptogram, C-MAC with the initial ICV) and the
    /// card's answer, and opens the monitored session at the level in P1.
    pub fn external_authenticate(self, cmd: &[u8], resp: &[u8]) -> Result<Scp02Monitor, ScpError> {
        let cmd = parse_command(cmd)?;
        if cmd.ins != INS_EXTERNAL_AUTHENTICATE {
            return Err(ScpError::BadCommand(format!("INS {:02X} is not EXTERNAL AUTHENTICATE", cmd.ins)));
        }
        if !cmd.is_secure_messaging() || cmd.data.len() != 16 {
            return Err(ScpError::BadCommand(format!(
                "EXTERNAL AUTHENTICATE must carry host cryptogram and C-MAC (16 bytes, CLA with secure messaging), got CLA {:02X} and {} bytes",
                cmd.cla,
                cmd.data.len()
            )));
        }
        let level = SecurityLevel(cmd.p1);
        check_level(level, self.hyps[0].i)?;
        let s = &self.hyps[0];
        let expected = super::host_cryptogram(&s.keys.s_enc, &self.host_challenge, self.iu.sequence_counter, &self.iu.card_challenge)?;
        if !ct_eq(&expected, &cmd.data[..8]) {
            return Err(ScpError::HostCryptogram);
        }
        let mut hyps = self.hyps;
        check_command(&mut hyps, &cmd, false)?;
        let resp = parse_response(resp)?;
        if resp.sw != StatusWord::SUCCESS {
            return Err(refused("EXTERNAL AUTHENTICATE", resp.sw));
        }
        for h in &mut hyps {
            h.level = level;
        }
        Ok(Scp02Monitor { hyps, level, iu: Some(self.iu) })
    }

    pub fn init_update(&self) -> &InitUpdateResponse {
        &self.iu
    }
    pub fn host_challenge(&self) -> [u8; 8] {
        self.host_challenge
    }
    pub fn kcvs(&self) -> SessionKcvs {
        self.hyps[0].keys.kcvs()
    }
    /// The session keys of the most likely hypothesis (for tests and diagnostics).
    pub fn session_keys(&self) -> &SessionKeys {
        &self.hyps[0].keys
    }
}
