//! Host-side helpers for driving a `SimCard` in process with the core's host handshakes.
#![allow(dead_code, clippy::too_many_arguments)]

use tsm_gp::crypto::SecretKey;
use tsm_gp::hex::decode;
use tsm_gp::profile::CardProfile;
use tsm_gp::scp::scp02::{self, Scp02Options};
use tsm_gp::scp::scp03::{self, Expect};
use tsm_gp::scp::{ChannelOptions, HostChannel, ScpError, SecurityLevel, StaticKeys};
use tsm_gp::{Codec, CommandApdu, ResponseApdu, StatusWord};
use tsm_se::{CardConfig, KeySet, SimCard};

pub const ISD: &str = "A000000151000000";

pub fn hexv(s: &str) -> Vec<u8> {
    decode(s).unwrap()
}

pub fn aid(s: &str) -> tsm_gp::gp::Aid {
    s.parse().unwrap()
}

/// Sends raw bytes and parses the response.
pub fn send_raw(card: &mut SimCard, cmd: &CommandApdu) -> ResponseApdu {
    let r = card.transmit(&cmd.to_bytes());
    ResponseApdu::from_bytes(&r).unwrap()
}

pub fn sw(r: &ResponseApdu) -> u16 {
    r.sw.0
}

/// An open secure channel, host side, on logical channel `channel`.
pub struct Host {
    pub chan: Box<dyn HostChannel>,
    pub channel: u8,
}

impl Host {
    /// Wraps (on this host's logical channel), sends and unwraps.
    pub fn send(&mut self, card: &mut SimCard, cmd: &CommandApdu) -> ResponseApdu {
        self.try_send(card, cmd).unwrap()
    }
    pub fn try_send(&mut self, card: &mut SimCard, cmd: &CommandApdu) -> Result<ResponseApdu, ScpError> {
        let mut c = cmd.clone();
        c.cla = (c.cla & !0x03) | self.channel;
        let wire = self.chan.wrap(&c)?;
        let r = send_raw(card, &wire);
        self.chan.unwrap(&r)
    }
    pub fn sw(&mut self, card: &mut SimCard, cmd: &CommandApdu) -> u16 {
        self.send(card, cmd).sw.0
    }
}

pub fn aes_keys(hex: &str, version: u8) -> StaticKeys {
    let k = SecretKey::aes(&decode(hex).unwrap()).unwrap();
    StaticKeys::single(k, version)
}

pub fn des_keys(hex: &str, version: u8) -> StaticKeys {
    let k = SecretKey::des3(&decode(hex).unwrap()).unwrap();
    StaticKeys::single(k, version)
}

pub fn keyset_to_static(k: &KeySet) -> StaticKeys {
    StaticKeys::new(k.enc.clone(), k.mac.clone(), k.dek.clone(), k.version)
}

/// Opens SCP03 with `keys` (P1 = their version) to the SD selected on `channel`.
pub fn try_open_scp03(card: &mut SimCard, keys: StaticKeys, level: u8, channel: u8, host_challenge: &[u8]) -> Result<Host, (u16, Option<ScpError>)> {
    let (hs, mut iu) = scp03::HostHandshake::new(keys, host_challenge, ChannelOptions::default()).unwrap();
    iu.cla |= channel;
    let r = send_raw(card, &iu);
    if r.sw != StatusWord::SUCCESS {
        return Err((r.sw.0, None));
    }
    let auth = hs.on_init_update(&r, SecurityLevel(level), Expect::any()).map_err(|e| (0, Some(e)))?;
    let mut ea = auth.external_authenticate();
    ea.cla |= channel;
    let r2 = send_raw(card, &ea);
    if r2.sw != StatusWord::SUCCESS {
        return Err((r2.sw.0, None));
    }
    let host = auth.on_external_authenticate(&r2).unwrap();
    Ok(Host { chan: Box::new(host), channel })
}

pub fn open_scp03(card: &mut SimCard, keys: StaticKeys, level: u8) -> Host {
    try_open_scp03(card, keys, level, 0, &[0x11; 8]).unwrap_or_else(|e| panic!("SCP03 handshake failed: {e:?}"))
}

pub fn try_open_scp02(card: &mut SimCard, keys: StaticKeys, i: u8, level: u8, channel: u8, sd_aid: &[u8]) -> Result<Host, (u16, Option<ScpError>)> {
    let opts = Scp02Options::new(i).with_sd_aid(sd_aid);
    let (hs, mut iu) = scp02::HostHandshake::new(keys, [0x22; 8], opts);
    iu.cla |= channel;
    let r = send_raw(card, &iu);
    if r.sw != StatusWord::SUCCESS {
        return Err((r.sw.0, None));
    }
    let auth = hs.on_init_update(&r, SecurityLevel(level), None).map_err(|e| (0, Some(e)))?;
    let mut ea = auth.external_authenticate();
    ea.cla |= channel;
    let r2 = send_raw(card, &ea);
    if r2.sw != StatusWord::SUCCESS {
        return Err((r2.sw.0, None));
    }
    let host = auth.on_external_authenticate(&r2).unwrap();
    Ok(Host { chan: Box::new(host), channel })
}

pub fn open_scp02(card: &mut SimCard, keys: StaticKeys, i: u8, level: u8) -> Host {
    try_open_scp02(card, keys, i, level, 0, &decode(ISD).unwrap()).unwrap_or_else(|e| panic!("SCP02 handshake failed: {e:?}"))
}

pub fn select(card: &mut SimCard, aid_hex: &str) -> ResponseApdu {
    let a = decode(aid_hex).unwrap();
    send_raw(card, &tsm_gp::gp::Select::by_name(&a).to_apdu())
}

/// A uicc card (SCP02 i=55 first) configured for SCP03 i=70 with the GP test key as AES.
pub fn scp03_card(seed: u64) -> SimCard {
    let p = CardProfile::builtin("uicc").unwrap();
    let cfg = CardConfig::default().seeded(seed).with_scp(tsm_gp::scp::Scp::Scp03 { i: 0x70 });
    SimCard::new(p, cfg).unwrap()
}

pub fn scp02_card(seed: u64, i: u8) -> SimCard {
    let p = CardProfile::builtin(if i == 0x55 { "uicc" } else { "microsd" }).unwrap();
    let cfg = CardConfig::default().seeded(seed).with_scp(tsm_gp::scp::Scp::Scp02 { i });
    SimCard::new(p, cfg).unwrap()
}

pub const TEST_KEY: &str = "404142434445464748494A4B4C4D4E4F";

// ---- CAP vectors (testdata/vectors/README.md, second CAP table) ----

/// One row of the README's CAP table: package and applet AIDs, and for the Load File Data
/// Block without / with the Descriptor component: size, SHA-1, SHA-256.
#[derive(Debug, Clone)]
pub struct CapVector {
    pub file: String,
    pub package: Vec<u8>,
    pub applet: Vec<u8>,
    pub variants: [(usize, Vec<u8>, Vec<u8>); 2],
}

impl CapVector {
    pub fn bytes(&self) -> Vec<u8> {
        std::fs::read(tsm_gp::testdata_dir().join("vectors/cap").join(&self.file)).unwrap()
    }
}

pub fn cap_vectors() -> Vec<CapVector> {
    let text = std::fs::read_to_string(tsm_gp::testdata_dir().join("vectors/README.md")).unwrap();
    let mut out = Vec::new();
    for line in text.lines() {
        let cells: Vec<&str> = line.split('|').map(str::trim).collect();
        // | file | pkg | applet | fmt | noD | withD |  → 8 pieces with the empty ends
        if cells.len() != 8 || !cells[1].ends_with(".cap") || !cells[5].contains(',') {
            continue;
        }
        let variant = |c: &str| {
            let p: Vec<&str> = c.split(',').map(str::trim).collect();
            (p[0].parse::<usize>().unwrap(), hexv(p[1]), hexv(p[2]))
        };
        out.push(CapVector {
            file: cells[1].to_string(),
            package: hexv(cells[2]),
            applet: hexv(cells[3]),
            variants: [variant(cells[5]), variant(cells[6])],
        });
    }
    assert_eq!(out.len(), 9, "the README lists nine CAP files");
    out
}

/// All registry entries of `scope` in `format`, following `6310`; `Err(sw)` on an error status.
pub fn get_status(
    h: &mut Host,
    card: &mut SimCard,
    scope: tsm_gp::gp::StatusScope,
    format: tsm_gp::gp::StatusFormat,
) -> Result<Vec<tsm_gp::gp::RegistryEntry>, u16> {
    use tsm_gp::gp::{GetStatus, GetStatusPager, PagerStep};
    let mut pager = GetStatusPager::new(GetStatus { format, ..GetStatus::new(scope) });
    let mut cmd = pager.first().clone();
    loop {
        let r = h.send(card, &cmd.to_apdu());
        if r.sw.0 == 0x6A88 {
            // The pager reads "no entry" as an empty list; the tests want the status word.
            return Err(0x6A88);
        }
        match pager.feed(&r) {
            Ok(PagerStep::Next(c)) => {
                assert_eq!(c.format, format, "no fallback expected");
                cmd = c
            }
            Ok(PagerStep::Done(v)) => return Ok(v),
            Err(_) => return Err(r.sw.0),
        }
    }
}

/// Loads `lfdb` as load file `elf` (INSTALL [for load] with `hash`, LOAD in blocks of `block`).
/// Returns the status words of INSTALL and of every LOAD.
pub fn load(h: &mut Host, card: &mut SimCard, elf: &[u8], sd: Option<&str>, hash: &[u8], params: &[u8], lfdb: &[u8], block: usize) -> Vec<u16> {
    use tsm_gp::gp::{Install, InstallBody, InstallParams, LoadFile};
    let mut inst = Install::for_load(tsm_gp::gp::Aid::new(elf).unwrap(), sd.map(aid));
    if let InstallBody::Load { hash: h0, params: p0, .. } = &mut inst.body {
        *h0 = hash.to_vec();
        *p0 = InstallParams(params.to_vec());
    }
    let mut sws = vec![h.sw(card, &inst.to_apdu())];
    if sws[0] != 0x9000 {
        return sws;
    }
    for b in LoadFile::new(lfdb.to_vec()).blocks(block).unwrap() {
        let s = h.sw(card, &b.to_apdu());
        sws.push(s);
        if s != 0x9000 {
            break;
        }
    }
    sws
}

pub fn install(h: &mut Host, card: &mut SimCard, elf: &[u8], module: &[u8], app: &[u8], privileges: tsm_gp::gp::Privileges, params: &[u8], selectable: bool) -> u16 {
    use tsm_gp::gp::{Aid, Install, InstallParams};
    let i = Install::for_install(
        Aid::new(elf).unwrap(),
        Aid::new(module).unwrap(),
        Aid::new(app).unwrap(),
        privileges,
        InstallParams(params.to_vec()),
        selectable,
    );
    h.sw(card, &i.to_apdu())
}

/// PUT KEY of a full ENC/MAC/DEK set (key ids 1-3) with KCVs, values encrypted by the host
/// channel. `replace` 0 adds a set.
pub fn put_key_set(h: &mut Host, card: &mut SimCard, replace: u8, new_version: u8, keys: [&SecretKey; 3]) -> ResponseApdu {
    use tsm_gp::gp::{PutKey, PutKeyComponent};
    let comps = keys
        .iter()
        .map(|k| {
            let enc = h.chan.encrypt_sensitive(k.expose()).unwrap();
            let kcv = k.kcv().to_vec();
            if k.alg().is_des() { PutKeyComponent::des(enc, kcv) } else { PutKeyComponent::aes(k.expose().len() as u8, enc, kcv) }
        })
        .collect();
    h.send(card, &PutKey::new(replace, 1, new_version, comps).to_apdu())
}
