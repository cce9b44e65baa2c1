//! Session tests: recorded sessions replayed through `GpSession` with a scripted transport
//! (the wire bytes must be the recorded ones), and a small card built from the core's card
//! side of SCP02/SCP03 for what no recording covers (PUT KEY, paging, 61xx under R-MAC).

use super::*;
use crate::cap::CapFile;
use crate::gp::lifecycle::{AppLifeCycle, ElfLifeCycle, SdLifeCycle};
use crate::gp::status::{StatusFormat, encode_status_response};
use crate::hex::{decode, encode};
use crate::recording::{Section, parse_ini};
use crate::scp::{CardChannel, StaticKeys};
use crate::transport::TransportError;
use std::collections::VecDeque;

fn h(s: &str) -> Vec<u8> {
    decode(s).unwrap()
}

fn aid(s: &str) -> Aid {
    s.parse().unwrap()
}

fn section(file: &str, name: &str) -> Section {
    let text = std::fs::read_to_string(crate::testdata_dir().join("vectors").join(file)).unwrap();
    parse_ini(&text).unwrap().into_iter().find(|s| s.name == name).unwrap_or_else(|| panic!("no section {name}"))
}

/// Replies from a list and checks every command against the recording.
#[derive(Default)]
struct Script {
    steps: VecDeque<(Vec<u8>, Vec<u8>)>,
    sent: Vec<Vec<u8>>,
}

impl Script {
    fn from_section(s: &Section) -> Self {
        let steps = s.exchanges().unwrap().into_iter().map(|x| (x.command, x.response.unwrap())).collect();
        Script { steps, sent: Vec::new() }
    }
    fn push(&mut self, cmd: &str, resp: &str) {
        self.steps.push_back((h(cmd), h(resp)));
    }
    fn done(&self) -> bool {
        self.steps.is_empty()
    }
}

impl Transport for Script {
    fn transmit(&mut self, apdu: &[u8]) -> Result<Vec<u8>, TransportError> {
        self.sent.push(apdu.to_vec());
        let n = self.sent.len();
        let (expected, reply) = self.steps.pop_front().unwrap_or_else(|| panic!("command #{n} {} is not in the script", encode(apdu)));
        assert_eq!(encode(apdu), encode(&expected), "command #{n}");
        Ok(reply)
    }
}

/// Keys, host challenge and level of a recorded session.
fn session_keys(s: &Section) -> (CardKeys, Vec<u8>, SecurityLevel) {
    let ex = s.exchanges().unwrap();
    let kvn = ex[0].command[2];
    let keys = CardKeys::bytes(&s.hex("key_enc").unwrap().unwrap(), &s.hex("key_mac").unwrap().unwrap(), &s.hex("key_dek").unwrap().unwrap(), kvn);
    (keys, s.hex("host_challenge").unwrap().unwrap(), SecurityLevel(ex[1].command[2]))
}

fn open_replay<'a>(
    s: &Section,
    script: &'a mut Script,
    options: OpenOptions,
) -> GpSession<&'a mut Script, Secure> {
    let (keys, hc, level) = session_keys(s);
    let session = GpSession::new(script, SessionConfig::default());
    session.open_secure_channel(keys, Some(level), &options.host_challenge(&hc)).map_err(|(_, e)| e).unwrap()
}

#[test]
fn kaoh_scp03_get_status_of_every_scope() {
    let s = section("scp03/scp03_traces_kaoh.txt", "kaoh-scp03-aes128-i70-get-status-all");
    let mut script = Script::from_section(&s);
    // The vector's invoking AID: the pseudo-random card challenge is checked against it.
    let opts = OpenOptions::new().scp03(Some(0x70)).sd_aid(aid(s.get("invoking_aid").unwrap()));
    let mut session = open_replay(&s, &mut script, opts);
    let info = session.channel_info().clone();
    assert_eq!((info.scp, info.level, info.key_version, info.sequence_counter), (Scp::Scp03 { i: 0x70 }, SecurityLevel(0x03), 0x30, Some(0x85)));

    // c3: P1=20, "8 entries, last A0000000090005FFFFFFFF8912000064 LCS 01 version 01 00, assoc SD A000000151".
    let elfs = session.get_status(StatusScope::LOAD_FILES).unwrap();
    assert_eq!(elfs.len(), 8);
    let last = &elfs[7];
    assert_eq!(last.aid, aid("A0000000090005FFFFFFFF8912000064"));
    assert_eq!(last.lifecycle, LifeCycle::LoadFile(ElfLifeCycle(0x01)));
    assert_eq!(last.version.as_deref(), Some(&[1, 0][..]));
    assert_eq!(last.associated_sd, Some(aid("A000000151")));
    // c4: P1=40, "entry[0] A0000005591010FFFFFFFF8900001000 LCS 3F privileges 80C000".
    let apps = session.get_status(StatusScope::APPLICATIONS).unwrap();
    assert_eq!(apps.len(), 4);
    assert_eq!(apps[0].aid, aid("A0000005591010FFFFFFFF8900001000"));
    assert_eq!(apps[0].lifecycle.value(), 0x3F);
    assert_eq!(apps[0].privileges, Some(Privileges::from_bytes(&h("80C000")).unwrap()));
    // c5: P1=80, "A000000151000000 LCS 0F (SECURED), privileges 82FC80".
    let isd = session.get_status(StatusScope::ISD).unwrap();
    assert_eq!(isd.len(), 1);
    assert_eq!(isd[0].aid, Aid::GP_ISD);
    assert_eq!(isd[0].lifecycle, LifeCycle::Card(CardLifeCycle::SECURED));
    assert_eq!(isd[0].privileges, Some(Privileges::from_bytes(&h("82FC80")).unwrap()));
    // c6: P1=10, same bytes as P1=20.
    assert_eq!(session.get_status(StatusScope::LOAD_FILES_AND_MODULES).unwrap().len(), 8);
    drop(session);
    assert!(script.done());
}

#[test]
fn kaoh_scp03_aes192_and_delete() {
    let s = section("scp03/scp03_traces_kaoh.txt", "kaoh-scp03-aes192-i10-get-status");
    let mut script = Script::from_section(&s);
    let mut session = open_replay(&s, &mut script, OpenOptions::new().scp03(None).sd_aid(Aid::GP_ISD));
    // "one entry A0000001515350 LCS 01"
    let e = session.get_status(StatusScope::LOAD_FILES).unwrap();
    assert_eq!((e.len(), e[0].aid), (1, aid("A0000001515350")));
    assert_eq!(session.channel_info().key_version, 0x02);
    drop(session);
    assert!(script.done());

    let s = section("scp03/scp03_traces_kaoh.txt", "kaoh-scp03-aes128-i70-cdec-cmac-delete");
    let mut script = Script::from_section(&s);
    let mut session = open_replay(&s, &mut script, OpenOptions::new().scp03(None));
    // c3: "DELETE A00100015141434C" with P2=80 (related objects), answered 00 9000. This
    // recording sends DELETE without Le; `delete` sends Le = 00 (as the kaoh SCP02 recording
    // replayed through `delete` below), so the command goes through `send`.
    let mut del = Delete::object(aid("A00100015141434C"), true);
    del.framing = crate::gp::Framing::GP;
    let r = session.send(&del.to_apdu()).unwrap();
    assert_eq!((r.data, r.sw), (vec![0], StatusWord::SUCCESS));
    drop(session);
    assert!(script.done());
}

#[test]
fn kaoh_scp03_level_33_with_61xx_and_6cxx() {
    let s = section("scp03/scp03_traces_kaoh.txt", "kaoh-scp03-aes128-i70-level33-rmac-renc-echo");
    let ex = s.exchanges().unwrap();
    let mut script = Script::default();
    for x in &ex[..2] {
        script.steps.push_back((x.command.clone(), x.response.clone().unwrap()));
    }
    // c3: the card answers 61xx; GET RESPONSE (plain, class 00) fetches the protected response.
    let r3 = ex[2].response.clone().unwrap();
    let n3 = r3.len() - 2;
    script.steps.push_back((ex[2].command.clone(), vec![0x61, n3 as u8]));
    script.steps.push_back((vec![0x00, 0xC0, 0x00, 0x00, n3 as u8], r3));
    // c4 (no Le): the card answers 6Cxx; the same wire command goes again with that Le.
    let r4 = ex[3].response.clone().unwrap();
    let n4 = (r4.len() - 2) as u8;
    script.steps.push_back((ex[3].command.clone(), vec![0x6C, n4]));
    script.steps.push_back(([ex[3].command.as_slice(), &[n4]].concat(), r4));
    script.steps.push_back((ex[4].command.clone(), ex[4].response.clone().unwrap()));

    // The invoking AID does not give this card's challenge (see the vector): no AID, no check.
    let mut session = open_replay(&s, &mut script, OpenOptions::new().scp03(None));
    assert_eq!(session.channel_info().level, SecurityLevel::ALL);
    for n in 3..=5 {
        let plain = CommandApdu::from_bytes(&s.hex(&format!("c{n}.plain")).unwrap().unwrap()).unwrap();
        let resp = session.send(&plain).unwrap();
        let expected = s.hex(&format!("r{n}.plain")).unwrap().unwrap();
        assert_eq!(resp.to_bytes(), expected, "r{n}.plain");
    }
    drop(session);
    assert!(script.done());
}

#[test]
fn kaoh_scp02_delete_load_install() {
    let s = section("scp02/scp02_traces_kaoh_pysim.txt", "kaoh-scp02-i15-cdec-cmac-delete-load-install");
    let mut script = Script::from_section(&s);
    let mut session = open_replay(&s, &mut script, OpenOptions::new().scp02(Some(0x15)));
    assert_eq!(session.channel_info().scp, Scp::Scp02 { i: 0x15 });
    assert_eq!(session.channel_info().sequence_counter, Some(0x06A1));
    // c3: "DELETE D0D1D2D3D4D50101 (fails 6A88: not present)"
    let e = session.delete(aid("D0D1D2D3D4D50101"), true).unwrap_err();
    assert_eq!((e.code(), e.status_word()), ("session.card_status", Some(StatusWord(0x6A88))));
    // c4, c5: the C-MAC chain goes on after the error.
    session.delete(aid("D0D1D2D3D4D501"), true).unwrap();
    let elf = aid("D0D1D2D3D4D501");
    session.install_for_load(elf, Some(Aid::CARD_MANAGER_LEGACY), &[], &InstallParams(h("EF08C6020160C80207D0"))).unwrap();
    // c6, c7: "the LOAD blocks decrypt to C4 82 0157 || LFDB of this CAP (Header..Descriptor, 343 bytes)";
    // 239 bytes is the largest block at C-MAC + C-DEC in a short APDU, and the default.
    let cap = CapFile::parse(&std::fs::read(crate::testdata_dir().join("vectors/cap/kaoh_helloworld.cap")).unwrap()).unwrap();
    let mut seen = Vec::new();
    session.load(&cap, None, true, &mut |done, total| seen.push((done, total))).unwrap();
    assert_eq!(seen, [(0, 347), (239, 347), (347, 347)]);
    // c8: "INSTALL [for install and make selectable] D0D1D2D3D4D50101, privilege 02, params C9 01 00"
    let app = aid("D0D1D2D3D4D50101");
    session.install_and_make_selectable(elf, app, app, Privileges::from_bytes(&[0x02]).unwrap(), &InstallParams(h("C90100EF04C80207D0"))).unwrap();
    drop(session);
    assert!(script.done());
}

#[test]
fn kaoh_scp02_get_status() {
    let s = section("scp02/scp02_traces_kaoh_pysim.txt", "kaoh-scp02-i15-cmac-get-status");
    let mut script = Script::from_section(&s);
    let mut session = open_replay(&s, &mut script, OpenOptions::new().scp02(Some(0x15)));
    assert_eq!(session.channel_info().level, SecurityLevel::C_MAC);
    // "6 E3 entries; entry[5] AID D0D1D2D3D4D501, life cycle 01 (LOADED)"
    let e = session.get_status(StatusScope::LOAD_FILES).unwrap();
    assert_eq!(e.len(), 6);
    assert_eq!((e[5].aid, e[5].lifecycle), (aid("D0D1D2D3D4D501"), LifeCycle::LoadFile(ElfLifeCycle::LOADED)));
    drop(session);
    assert!(script.done());
}

#[test]
fn refused_external_authenticate_is_not_retried() {
    let s = section("scp03/scp03_traces_kaoh.txt", "kaoh-scp03-aes128-i70-mutual-auth");
    let ex = s.exchanges().unwrap();
    let mut script = Script::default();
    script.steps.push_back((ex[0].command.clone(), ex[0].response.clone().unwrap()));
    script.steps.push_back((ex[1].command.clone(), h("6300")));
    let (keys, hc, level) = session_keys(&s);
    let session = GpSession::new(&mut script, SessionConfig::default());
    let (session, e) = session.open_secure_channel(keys, Some(level), &OpenOptions::new().scp03(None).host_challenge(&hc)).unwrap_err();
    assert_eq!(e.code(), "session.authentication_failed");
    assert_eq!(e.status_word(), Some(StatusWord::AUTHENTICATION_FAILED));
    drop(session);
    let eas = script.sent.iter().filter(|c| c[1] == 0x82).count();
    assert_eq!((script.sent.len(), eas), (2, 1));
    assert!(script.done());
}

#[test]
fn wrong_keys_stop_before_external_authenticate() {
    let s = section("scp03/scp03_traces_kaoh.txt", "kaoh-scp03-aes128-i70-mutual-auth");
    let ex = s.exchanges().unwrap();
    let mut script = Script::default();
    script.steps.push_back((ex[0].command.clone(), ex[0].response.clone().unwrap()));
    let hc = s.hex("host_challenge").unwrap().unwrap();
    let session = GpSession::new(&mut script, SessionConfig::default());
    let wrong = CardKeys::single(&h("404142434445464748494A4B4C4D4E4F"), 0);
    let (_, e) = session.open_secure_channel(wrong, None, &OpenOptions::new().scp03(None).host_challenge(&hc)).unwrap_err();
    assert_eq!(e.code(), "scp.card_cryptogram");
    assert_eq!(script.sent.len(), 1, "only INITIALIZE UPDATE was sent");
}

#[test]
fn card_refusals_and_missing_random() {
    // INITIALIZE UPDATE refused: key version not found. Without any hint the session first
    // reads the Card Recognition Data (SCP02's i is not in the response); this card has none.
    let mut script = Script::default();
    script.push("80CA006600", "6A88");
    script.push("8050300008000102030405060700", "6A88");
    let session = GpSession::new(&mut script, SessionConfig::default());
    let keys = CardKeys::single(&[0x40; 16], 0x30);
    let (_, e) = session.open_secure_channel(keys.clone(), None, &OpenOptions::new().host_challenge(&[0, 1, 2, 3, 4, 5, 6, 7])).unwrap_err();
    assert_eq!(e.status_word(), Some(StatusWord(0x6A88)));
    assert!(e.to_string().contains("INITIALIZE UPDATE"), "{e}");
    // No random source and no fixed challenge: nothing is sent (scp03 hint: no CRD read).
    let mut script = Script::default();
    let session = GpSession::new(&mut script, SessionConfig::default()).with_random(NoRandom);
    let (_, e) = session.open_secure_channel(keys, None, &OpenOptions::new().scp03(None)).unwrap_err();
    assert_eq!(e.code(), "session.no_random");
    assert!(script.sent.is_empty());
}

#[test]
fn select_isd_falls_back_to_the_legacy_aid_then_the_default_application() {
    let mut script = Script::default();
    script.push("00A4040008A00000015100000000", "6A82");
    script.push("00A4040008A00000000300000000", "6F108408A000000003000000A5049F6501FF9000");
    let mut session = GpSession::new(&mut script, SessionConfig::default());
    assert_eq!(session.select_isd().unwrap(), Aid::CARD_MANAGER_LEGACY);
    assert_eq!(session.fci().unwrap().max_command_data_length(), Some(0xFF));
    drop(session);
    assert!(script.done());

    let mut script = Script::default();
    script.push("00A4040008A00000015100000000", "6A82");
    script.push("00A4040008A00000000300000000", "6A82");
    script.push("00A4040000", "6F0C8408A000000151000000A5009000");
    let mut session = GpSession::new(&mut script, SessionConfig::default());
    assert_eq!(session.select_isd().unwrap(), Aid::GP_ISD);
    assert_eq!(session.selected_aid(), Some(&Aid::GP_ISD));
    drop(session);

    let mut script = Script::default();
    script.push("00A4040008A00000015100000000", "6A82");
    script.push("00A4040008A00000000300000000", "6A82");
    script.push("00A4040000", "6A82");
    let e = GpSession::new(&mut script, SessionConfig::default()).select_isd().unwrap_err();
    assert_eq!(e.code(), "session.no_isd");
    // A locked card answers 6283 and is selected.
    let mut script = Script::default();
    script.push("00A4040008A00000015100000000", "6283");
    let mut session = GpSession::new(&mut script, SessionConfig::default());
    assert_eq!(session.select(Aid::GP_ISD.as_bytes()).unwrap().sw, StatusWord::SELECTED_FILE_INVALIDATED);
}

#[test]
fn get_data_objects_with_6cxx_and_61xx() {
    let v = section("gp_data/gp_data_parsing.txt", "cplc-1");
    let cplc = v.get("data").unwrap();
    let crd_vector = section("gp_data/gp_data_parsing.txt", "card-recognition-data-2");
    let crd = crd_vector.get("data").unwrap().to_string();
    let ecr = section("gp_data/gp_data_parsing.txt", "extended-card-resources").get("data").unwrap().to_string();
    let mut script = Script::default();
    script.push("80CA9F7F00", "6C2D");
    script.push("80CA9F7F2D", &format!("{cplc}9000"));
    script.push("80CA006600", "6140");
    script.push("00C0000040", &format!("{}610F", &crd[..128]));
    script.push("00C000000F", &format!("{}9000", &crd[128..]));
    script.push("80CA00E000", "6A88");
    script.push("80CAFF2100", &format!("{ecr}9000"));
    script.push("80CA00C100", "C103000085 9000");
    let mut session = GpSession::new(&mut script, SessionConfig::default());
    let c = session.cplc().unwrap().unwrap();
    assert_eq!((c.ic_fabricator, c.ic_serial_number), ([0x47, 0x90], [0x34, 0x29, 0x52, 0x20]));
    let crd = session.card_recognition_data().unwrap().unwrap();
    let scp = crd_vector.hex("expect.scp").unwrap().unwrap()[0];
    let i = crd_vector.hex("expect.scp_i").unwrap().unwrap()[0];
    assert_eq!((crd.scps()[0].id, crd.scps()[0].i), (scp, i as u32));
    // Cached: no second GET DATA.
    assert!(session.card_recognition_data().unwrap().is_some());
    assert_eq!(session.key_information().unwrap(), None);
    let e = session.extended_card_resources().unwrap().unwrap();
    assert_eq!((e.installed_applications, e.free_non_volatile_memory, e.free_volatile_memory), (2, 0x16DB4, 0x86A));
    assert_eq!(session.sequence_counter().unwrap(), Some(0x85));
    drop(session);
    assert!(script.done());
}

// ---------------------------------------------------------------------------------------------
// A small card from the core's card side: handshake, unwrap/wrap, and a handler for the plain
// commands. Responses longer than `t0_chunk` come T=0 style, through 61xx and GET RESPONSE.

type Handler<'a> = Box<dyn FnMut(&CommandApdu, &dyn CardChannel) -> ResponseApdu + 'a>;

enum Pending {
    None,
    Scp02(scp02::card::CardPending),
    Scp03(scp03::card::CardPending),
}

struct FakeCard<'a> {
    keys: StaticKeys,
    scp02: Option<scp02::card::CardParams>,
    scp03: Option<scp03::card::CardParams>,
    crd: Option<Vec<u8>>,
    pending: Pending,
    channel: Option<Box<dyn CardChannel>>,
    handler: Handler<'a>,
    t0_chunk: Option<usize>,
    waiting: Option<ResponseApdu>,
    wire: Vec<CommandApdu>,
    /// SCP03: the static DEK in memory, to decrypt PUT KEY data.
    dek: Option<SecretKey>,
}

impl<'a> FakeCard<'a> {
    fn scp03(keys: StaticKeys, i: u8, handler: Handler<'a>) -> Self {
        let params = scp03::card::CardParams { i, sequence_counter: 7, kdd: [1; 10], sd_aid: Aid::GP_ISD.to_vec(), random_challenge: None, s16: i & 1 != 0 };
        FakeCard { keys, scp02: None, scp03: Some(params), crd: None, pending: Pending::None, channel: None, handler, t0_chunk: None, waiting: None, wire: Vec::new(), dek: None }
    }
    fn scp02(keys: StaticKeys, i: u8, handler: Handler<'a>) -> Self {
        let params = scp02::card::CardParams { i, sequence_counter: 0x0101, kdd: [2; 10], sd_aid: Aid::GP_ISD.to_vec(), random_challenge: Some([9; 6]) };
        FakeCard { keys, scp02: Some(params), scp03: None, crd: None, pending: Pending::None, channel: None, handler, t0_chunk: None, waiting: None, wire: Vec::new(), dek: None }
    }

    fn answer(&mut self, cmd: &CommandApdu) -> ResponseApdu {
        let fail = |e: ScpError| ResponseApdu::status(e.card_status());
        match cmd.ins {
            0x50 => {
                self.channel = None;
                if let Some(p) = &self.scp03 {
                    match scp03::card::on_init_update(&self.keys, cmd, p.clone()) {
                        Ok((r, pending)) => {
                            self.pending = Pending::Scp03(pending);
                            r
                        }
                        Err(e) => fail(e),
                    }
                } else {
                    let keys = self.keys.clone();
                    match scp02::card::on_init_update(&|_| Some(keys.clone()), cmd, self.scp02.clone().unwrap()) {
                        Ok((r, pending)) => {
                            self.pending = Pending::Scp02(pending);
                            r
                        }
                        Err(e) => fail(e),
                    }
                }
            }
            0x82 => match std::mem::replace(&mut self.pending, Pending::None) {
                Pending::Scp03(p) => match p.on_external_authenticate(cmd) {
                    Ok((r, c)) => {
                        let c = match &self.dek {
                            Some(d) => c.with_dek(d.clone()),
                            None => c,
                        };
                        self.channel = Some(Box::new(c));
                        r
                    }
                    Err(e) => fail(e),
                },
                Pending::Scp02(p) => match p.on_external_authenticate(cmd) {
                    Ok((r, c)) => {
                        self.channel = Some(Box::new(c));
                        r
                    }
                    Err(e) => fail(e),
                },
                Pending::None => ResponseApdu::status(StatusWord::CONDITIONS_NOT_SATISFIED),
            },
            0xCA if cmd.p2 == 0x66 && self.channel.is_none() => match &self.crd {
                Some(c) => ResponseApdu::new(c.clone(), StatusWord::SUCCESS),
                None => ResponseApdu::status(StatusWord::REFERENCED_DATA_NOT_FOUND),
            },
            _ => match self.channel.as_mut() {
                None => ResponseApdu::status(StatusWord::SECURITY_STATUS_NOT_SATISFIED),
                Some(ch) => match ch.unwrap_command(cmd) {
                    Err(e) => fail(e),
                    Ok(plain) => {
                        let r = (self.handler)(&plain, ch.as_ref());
                        ch.wrap_response(r).unwrap()
                    }
                },
            },
        }
    }
}

impl Transport for FakeCard<'_> {
    fn transmit(&mut self, apdu: &[u8]) -> Result<Vec<u8>, TransportError> {
        let cmd = CommandApdu::from_bytes(apdu).unwrap();
        self.wire.push(cmd.clone());
        if cmd.cla == 0x00 && cmd.ins == 0xC0 {
            let mut w = self.waiting.take().expect("GET RESPONSE without pending data");
            let n = cmd.le.unwrap_or(256).min(w.data.len());
            let rest = w.data.split_off(n);
            let head = std::mem::replace(&mut w.data, rest);
            if w.data.is_empty() {
                return Ok(ResponseApdu::new(head, w.sw).to_bytes());
            }
            let left = w.data.len().min(255) as u8;
            self.waiting = Some(w);
            return Ok(ResponseApdu::new(head, StatusWord::new(0x61, left)).to_bytes());
        }
        let r = self.answer(&cmd);
        if let Some(chunk) = self.t0_chunk
            && r.data.len() > chunk
        {
            let n = r.data.len().min(255) as u8;
            self.waiting = Some(r);
            return Ok(vec![0x61, n]);
        }
        Ok(r.to_bytes())
    }
}

fn test_keys() -> KeySet {
    KeySet::for_scp(3, &h("404142434445464748494A4B4C4D4E4F"), &h("404142434445464748494A4B4C4D4E4F"), &h("404142434445464748494A4B4C4D4E4F"), 0x30).unwrap()
}

fn counter_random() -> impl HostRandom {
    let mut n = 0u8;
    move |buf: &mut [u8]| {
        n = n.wrapping_add(1);
        buf.fill(n)
    }
}

/// PUT KEY on the card side: decrypt each key, check its KCV, answer version ‖ KCVs (or
/// wrong KCVs with `lie`).
fn put_key_handler(lie: bool, received: &mut Vec<(u8, Vec<u8>)>) -> impl FnMut(&CommandApdu, &dyn CardChannel) -> ResponseApdu + '_ {
    move |cmd, ch| {
        let pk = PutKey::from_apdu(cmd).unwrap();
        let mut out = vec![pk.new_version];
        for c in &pk.components {
            let clear = ch.decrypt_sensitive(&c.encrypted).unwrap();
            let len = c.key_length.map_or(clear.len(), |l| l as usize);
            let key = if c.key_type == crate::gp::put_key::KEY_TYPE_AES { SecretKey::aes(&clear[..len]) } else { SecretKey::des3(&clear[..len]) }.unwrap();
            assert_eq!(key.kcv().to_vec(), c.kcv, "KCV in the command");
            received.push((c.key_type, key.expose().to_vec()));
            out.extend_from_slice(if lie { &[0, 0, 0] } else { &c.kcv });
        }
        ResponseApdu::new(out, StatusWord::SUCCESS)
    }
}

#[test]
fn put_key_scp03_and_scp02_check_the_kcvs() {
    let new = KeySet::for_scp(3, &h("000102030405060708090A0B0C0D0E0F"), &h("101112131415161718191A1B1C1D1E1F"), &h("202122232425262728292A2B2C2D2E2F3031323334353637"), 0x31).unwrap();
    for level in [SecurityLevel(0x03), SecurityLevel(0x13), SecurityLevel(0x33)] {
        let mut received = Vec::new();
        let mut card = FakeCard::scp03(test_keys().static_keys(), 0x70, Box::new(put_key_handler(false, &mut received)));
        card.dek = Some(test_keys().dek);
        card.t0_chunk = Some(0);
        let session = GpSession::new(&mut card, SessionConfig::default()).with_random(counter_random());
        let mut s = session.open_secure_channel(&test_keys(), Some(level), &OpenOptions::new()).map_err(|(_, e)| e).unwrap();
        let r = s.put_key(&new, Some(0x30)).unwrap();
        assert_eq!(r.version, 0x31);
        drop(s);
        let pk = card.wire.iter().find(|c| c.ins == 0xD8).unwrap();
        assert_eq!((pk.p1, pk.p2), (0x30, 0x81));
        drop(card);
        assert_eq!(received.iter().map(|(t, k)| (*t, k.clone())).collect::<Vec<_>>(), vec![
            (0x88, new.enc.expose().to_vec()),
            (0x88, new.mac.expose().to_vec()),
            (0x88, new.dek.expose().to_vec())
        ]);
    }
    // A card that reports other KCVs.
    let mut received = Vec::new();
    let mut card = FakeCard::scp03(test_keys().static_keys(), 0x70, Box::new(put_key_handler(true, &mut received)));
    card.dek = Some(test_keys().dek);
    let session = GpSession::new(&mut card, SessionConfig::default()).with_random(counter_random());
    let mut s = session.open_secure_channel(&test_keys(), None, &OpenOptions::new().scp03(None)).map_err(|(_, e)| e).unwrap();
    assert_eq!(s.channel_info().level, SecurityLevel::C_DEC_C_MAC_R_MAC, "the SCP03 default with an R-MAC card");
    assert_eq!(s.put_key(&new, None).unwrap_err().code(), "session.key_check_mismatch");

    // SCP02: 3DES keys under the session DEK.
    let des = KeySet::for_scp(2, &h("404142434445464748494A4B4C4D4E4F"), &h("404142434445464748494A4B4C4D4E4F"), &h("404142434445464748494A4B4C4D4E4F"), 1).unwrap();
    let new02 = KeySet::for_scp(2, &h("0123456789ABCDEFFEDCBA9876543210"), &h("1123456789ABCDEFFEDCBA9876543210"), &h("2123456789ABCDEFFEDCBA9876543210"), 2).unwrap();
    let mut received = Vec::new();
    let mut card = FakeCard::scp02(des.static_keys(), 0x55, Box::new(put_key_handler(false, &mut received)));
    let session = GpSession::new(&mut card, SessionConfig::default()).with_random(counter_random());
    let mut s = session.open_secure_channel(&des, None, &OpenOptions::new().scp02(Some(0x55))).map_err(|(_, e)| e).unwrap();
    assert_eq!(s.channel_info().level, SecurityLevel::C_DEC_C_MAC, "the SCP02 default");
    s.put_key(&new02, None).unwrap();
    drop(s);
    drop(card);
    assert_eq!(received.iter().map(|(t, _)| *t).collect::<Vec<_>>(), [0x80; 3]);
    assert_eq!(received[2].1, new02.dek.expose());
}

#[test]
fn scp02_i_comes_from_the_card_recognition_data() {
    let crd = h(section("gp_data/gp_data_parsing.txt", "card-recognition-data-2").get("data").unwrap());
    let des = KeySet::for_scp(2, &[0x40; 16], &[0x41; 16], &[0x42; 16], 1).unwrap();
    let mut card = FakeCard::scp02(des.static_keys(), 0x55, Box::new(|_, _| ResponseApdu::status(StatusWord::SUCCESS)));
    card.crd = Some(crd);
    let session = GpSession::new(&mut card, SessionConfig::default()).with_random(counter_random());
    let keys = CardKeys::bytes(&[0x40; 16], &[0x41; 16], &[0x42; 16], 0);
    let s = session.open_secure_channel(keys, None, &OpenOptions::new()).map_err(|(_, e)| e).unwrap();
    assert_eq!(s.channel_info().scp, Scp::Scp02 { i: 0x55 });
    drop(s);
    assert_eq!(card.wire.iter().map(|c| c.ins).collect::<Vec<_>>(), [0xCA, 0x50, 0x82]);
}

#[test]
fn list_pages_through_6310_and_sorts_the_registry() {
    let sd = |a: &str| {
        let mut e = RegistryEntry::new(aid(a), LifeCycle::SecurityDomain(SdLifeCycle::PERSONALIZED));
        e.privileges = Some(Privileges::NONE.with(Privilege::SecurityDomain));
        e
    };
    let app = |a: &str| {
        let mut e = RegistryEntry::new(aid(a), LifeCycle::Application(AppLifeCycle::SELECTABLE));
        e.privileges = Some(Privileges::NONE);
        e
    };
    let mut isd = RegistryEntry::new(Aid::GP_ISD, LifeCycle::Card(CardLifeCycle::SECURED));
    isd.privileges = Some(Privileges::from_bytes(&h("9EFE80")).unwrap());
    let apps = [sd("A000000151535041"), app("D0D1D2D3D4D50101"), app("D0D1D2D3D4D50102")];
    let elf = RegistryEntry::new(aid("D0D1D2D3D4D501"), LifeCycle::LoadFile(ElfLifeCycle::LOADED));
    let mut asked = Vec::new();
    let handler = |cmd: &CommandApdu, _: &dyn CardChannel| {
        let gs = GetStatus::from_apdu(cmd).unwrap();
        asked.push((gs.scope.0, gs.p2()));
        let format = gs.format;
        match (gs.scope, gs.next) {
            (StatusScope::ISD, _) => ResponseApdu::new(encode_status_response(gs.scope, format, std::slice::from_ref(&isd)), StatusWord::SUCCESS),
            // Two pages: one entry, then the rest.
            (StatusScope::APPLICATIONS, false) => ResponseApdu::new(encode_status_response(gs.scope, format, &apps[..1]), StatusWord::MORE_DATA),
            (StatusScope::APPLICATIONS, true) => ResponseApdu::new(encode_status_response(gs.scope, format, &apps[1..]), StatusWord::SUCCESS),
            // No "load files and modules" on this card.
            (StatusScope::LOAD_FILES_AND_MODULES, _) => ResponseApdu::status(StatusWord::INCORRECT_P1P2),
            (StatusScope::LOAD_FILES, _) => ResponseApdu::new(encode_status_response(gs.scope, format, std::slice::from_ref(&elf)), StatusWord::SUCCESS),
            _ => ResponseApdu::status(StatusWord::INCORRECT_P1P2),
        }
    };
    let mut card = FakeCard::scp03(test_keys().static_keys(), 0x70, Box::new(handler));
    let session = GpSession::new(&mut card, SessionConfig::default()).with_random(counter_random());
    let mut s = session.open_secure_channel(&test_keys(), Some(SecurityLevel::ALL), &OpenOptions::new()).map_err(|(_, e)| e).unwrap();
    let content = s.list().unwrap();
    assert_eq!(content.isd.as_ref().map(|e| e.aid), Some(Aid::GP_ISD));
    assert_eq!(content.domains.iter().map(|e| e.aid).collect::<Vec<_>>(), [aid("A000000151535041")]);
    assert_eq!(content.apps.iter().map(|e| e.aid).collect::<Vec<_>>(), [aid("D0D1D2D3D4D50101"), aid("D0D1D2D3D4D50102")]);
    assert_eq!(content.load_files.iter().map(|e| e.aid).collect::<Vec<_>>(), [aid("D0D1D2D3D4D501")]);
    assert!(content.find(&aid("D0D1D2D3D4D50102")).is_some());
    drop(s);
    drop(card);
    // 80; 40, 40 next; 10 refused, then 20 in the same (tagged) format: the pager's fallback.
    assert_eq!(asked, [(0x80, 2), (0x40, 2), (0x40, 3), (0x10, 2), (0x20, 2)]);
}

#[test]
fn legacy_get_status_quirk_and_block_sizes() {
    let mut formats = Vec::new();
    let handler = |cmd: &CommandApdu, _: &dyn CardChannel| {
        let gs = GetStatus::from_apdu(cmd).unwrap();
        formats.push(gs.format);
        ResponseApdu::status(StatusWord::REFERENCED_DATA_NOT_FOUND)
    };
    let mut card = FakeCard::scp03(test_keys().static_keys(), 0x71, Box::new(handler));
    let config = SessionConfig { quirks: Quirks { legacy_get_status_only: true, ..Default::default() }, extended_length: true, ..Default::default() };
    let session = GpSession::new(&mut card, config).with_random(counter_random());
    let mut s = session.open_secure_channel(&test_keys(), Some(SecurityLevel::C_DEC_C_MAC), &OpenOptions::new().scp03(Some(0x71))).map_err(|(_, e)| e).unwrap();
    assert_eq!(s.channel_info().scp, Scp::Scp03 { i: 0x71 }, "S16 from the i hint");
    assert_eq!(s.get_status(StatusScope::APPLICATIONS).unwrap(), vec![]);
    // S16 C-MAC of 16 bytes, C-DEC padding: 255 - 16 = 239 → 224 - 1.
    assert_eq!(s.block_size(None).unwrap(), 223);
    assert_eq!(s.block_size(Some(1000)).unwrap(), 1000, "extended length");
    assert_eq!(s.block_size(Some(0)).unwrap_err().code(), "session.invalid_argument");
    drop(s);
    drop(card);
    assert_eq!(formats, [StatusFormat::Legacy]);
}

#[test]
fn load_and_install_every_applet_and_set_status() {
    let cap = CapFile::parse(&std::fs::read(crate::testdata_dir().join("vectors/cap/kaoh_helloworld.cap")).unwrap()).unwrap();
    let mut seen: Vec<CommandApdu> = Vec::new();
    let handler = |cmd: &CommandApdu, _: &dyn CardChannel| {
        seen.push(cmd.clone());
        ResponseApdu::new(vec![0], StatusWord::SUCCESS)
    };
    let mut card = FakeCard::scp03(test_keys().static_keys(), 0x70, Box::new(handler));
    let session = GpSession::new(&mut card, SessionConfig::default()).with_random(counter_random());
    let mut s = session.open_secure_channel(&test_keys(), None, &OpenOptions::new()).map_err(|(_, e)| e).unwrap();
    let opts = InstallOptions { hash: Some(HashAlgorithm::Sha256), block_size: Some(100), ..Default::default() };
    let mut last = (0, 0);
    let apps = s.load_and_install(&cap, &opts, &mut |d, t| last = (d, t)).unwrap();
    assert_eq!(apps, [aid("D0D1D2D3D4D50101")]);
    let bad = InstallOptions { instance: Some(aid("A0000000010203")), applet: Some(aid("A0000000010203")), ..Default::default() };
    assert_eq!(s.load_and_install(&cap, &bad, &mut |_, _| {}).unwrap_err().code(), "session.invalid_argument");
    s.lock_app(apps[0]).unwrap();
    s.unlock_app(apps[0]).unwrap();
    s.create_ssd(aid("A000000151535042"), Privileges::NONE, &InstallParams::default()).unwrap();
    s.lock_card().unwrap();
    drop(s);
    drop(card);
    let lfdb = cap.load_file_tlv(false);
    assert_eq!(last, (lfdb.len(), lfdb.len()));
    let ins: Vec<u8> = seen.iter().map(|c| c.ins).collect();
    let loads = lfdb.len().div_ceil(100);
    let mut expected = vec![0xE6];
    expected.extend(std::iter::repeat_n(0xE8, loads));
    expected.extend([0xE6, 0xF0, 0xF0, 0xE6, 0xF0]);
    assert_eq!(ins, expected);
    let Install { body: InstallBody::Load { hash, .. }, .. } = Install::from_apdu(&seen[0]).unwrap() else { panic!() };
    assert_eq!(hash, cap.load_file_hash(HashAlgorithm::Sha256, false));
    let mut reassembled = Vec::new();
    for c in &seen[1..=loads] {
        reassembled.extend_from_slice(&c.data);
    }
    assert_eq!(reassembled, lfdb);
    let status: Vec<(u8, u8)> = seen.iter().filter(|c| c.ins == 0xF0).map(|c| (c.p1, c.p2)).collect();
    assert_eq!(status, [(0x40, 0x80), (0x40, 0x00), (0x80, 0x7F)]);
    let Install { body: InstallBody::Install { elf, module, privileges, params, make_selectable, .. }, .. } = Install::from_apdu(&seen[loads + 4]).unwrap() else { panic!() };
    assert_eq!((elf, module, make_selectable), (SSD_PACKAGE, SSD_MODULE, true));
    assert!(privileges.is_security_domain());
    assert_eq!(params.as_bytes(), &[0xC9, 0x00]);
}

#[test]
fn diversified_keys_use_the_kdd_of_the_card() {
    use crate::crypto::diversify::{Diversification, KeyRole, diversify};
    let master = SecretKey::aes(&h("00112233445566778899AABBCCDDEEFF")).unwrap();
    // The fake card's KDD is 01*10; its keys are the KDF3 diversification of the master.
    let k = |r| diversify(Diversification::Kdf3, &master, &[1; 10], r).unwrap();
    let card_keys = StaticKeys::new(k(KeyRole::Enc), k(KeyRole::Mac), k(KeyRole::Dek), 0x30);
    let mut card = FakeCard::scp03(card_keys, 0x70, Box::new(|_, _| ResponseApdu::status(StatusWord::SUCCESS)));
    let session = GpSession::new(&mut card, SessionConfig::default()).with_random(counter_random());
    let keys = CardKeys::diversified(master, Diversification::Kdf3, 0x30);
    assert!(format!("{keys:?}").contains("Kdf3"));
    let s = session.open_secure_channel(keys, None, &OpenOptions::new().scp03(None)).map_err(|(_, e)| e).unwrap();
    assert_eq!(s.channel_info().kdd, [1; 10]);
}
