//! Host-side helpers for driving a `SimCard` in process with the core's host handshakes.
#![allow(dead_code)]

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
