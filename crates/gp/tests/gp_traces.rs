//! The typed commands and response parsers against recorded exchanges: the plaintext commands
//! and GET STATUS / INITIALIZE UPDATE responses of the SCP01/02/03 traces, the LOAD blocks of
//! the kaoh SCP02 install session, and the GlobalPlatformPro real-card dumps (incl. a `6310`
//! continuation driven through the pager).

use sha2::Digest;
use tsm_gp::codec::Codec;
use tsm_gp::gp::data::GpDataObject;
use tsm_gp::gp::load::{self, LoadFile};
use tsm_gp::gp::set_status::SetStatusScope;
use tsm_gp::gp::status::{self, StatusFormat, StatusScope};
use tsm_gp::gp::{
    Fci, GetStatus, GetStatusPager, GpCommand, InitUpdateResponse, InstallBody, LifeCycle, PagerStep, RegistryEntry,
};
use tsm_gp::hex::{decode, encode};
use tsm_gp::recording::{Section, parse_ini, parse_log};
use tsm_gp::{CommandApdu, ResponseApdu, StatusWord};

/// INS bytes `GpCommand::parse` decodes (in the right class).
const IMPLEMENTED: [u8; 12] = [0xA4, 0xC0, 0xCA, 0xF2, 0xE6, 0xE8, 0xE4, 0xD8, 0xE2, 0xF0, 0x50, 0x82];

fn vector_files(dir: &str) -> Vec<(String, Vec<Section>)> {
    let d = tsm_gp::testdata_dir().join("vectors").join(dir);
    let mut files: Vec<_> = std::fs::read_dir(&d)
        .unwrap_or_else(|e| panic!("{}: {e}", d.display()))
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "txt"))
        .collect();
    files.sort();
    files
        .into_iter()
        .map(|p| (p.file_name().unwrap().to_string_lossy().into_owned(), parse_ini(&std::fs::read_to_string(&p).unwrap()).unwrap()))
        .collect()
}

fn all_trace_files() -> Vec<(String, Vec<Section>)> {
    ["scp01", "scp02", "scp03"].iter().flat_map(|d| vector_files(d)).collect()
}

/// Parses `bytes` as a command, checks the variant and the byte-exact re-encoding.
fn check_command(ctx: &str, bytes: &[u8]) -> GpCommand {
    let apdu = CommandApdu::from_bytes(bytes).unwrap_or_else(|e| panic!("{ctx}: {e}"));
    let cmd = GpCommand::parse(&apdu).unwrap_or_else(|e| panic!("{ctx}: {} {e}", encode(bytes)));
    let plain_gp = apdu.cla & 0x80 != 0 && !apdu.is_secure_messaging();
    let plain_iso = apdu.cla & 0x80 == 0 && matches!(apdu.ins, 0xA4 | 0xC0 | 0xCA);
    if IMPLEMENTED.contains(&apdu.ins) && (plain_gp || plain_iso || apdu.ins == 0x82) {
        assert!(!matches!(cmd, GpCommand::Other(_)), "{ctx}: {} decoded as Other", encode(bytes));
    }
    assert_eq!(encode(&cmd.to_apdu().to_bytes()), encode(bytes), "{ctx}: re-encoding of {cmd}");
    assert!(!cmd.to_string().is_empty());
    cmd
}

#[test]
fn every_plain_command_in_the_traces_parses_and_reencodes() {
    let mut n = 0;
    for (file, sections) in all_trace_files() {
        for s in &sections {
            for e in &s.entries {
                let is_plain = e.key.ends_with(".plain") && e.key.starts_with('c');
                // The wire INITIALIZE UPDATE and EXTERNAL AUTHENTICATE are decodable as they are.
                let is_auth = (e.key == "c1" || e.key == "c2") && s.get(&format!("{}.plain", e.key)).is_none();
                if !(is_plain || is_auth) {
                    continue;
                }
                let ctx = format!("{file} [{}] {}", s.name, e.key);
                let cmd = check_command(&ctx, &decode(&e.value).unwrap());
                if is_auth {
                    assert!(matches!(cmd, GpCommand::InitializeUpdate(_) | GpCommand::ExternalAuthenticate(_)), "{ctx}: {cmd}");
                }
                n += 1;
            }
        }
    }
    assert!(n > 130, "only {n} commands");
}

/// Response data without a trailing `9000` (pySim's recorded INITIALIZE UPDATE has no SW).
fn without_sw(r: &[u8]) -> &[u8] {
    if r.ends_with(&[0x90, 0x00]) { &r[..r.len() - 2] } else { r }
}

#[test]
fn initialize_update_responses_match_the_recorded_fields() {
    let mut n = 0;
    for (file, sections) in all_trace_files() {
        for s in &sections {
            let Some(r1) = s.hex("r1").unwrap() else { continue };
            let iu_keys: Vec<_> = s.entries.iter().filter(|e| e.key.starts_with("iu.")).collect();
            if iu_keys.is_empty() {
                continue;
            }
            let ctx = format!("{file} [{}]", s.name);
            let data = without_sw(&r1);
            let r = InitUpdateResponse::parse(data).unwrap_or_else(|e| panic!("{ctx}: {e}"));
            for e in iu_keys {
                let want = decode(&e.value).unwrap();
                let got = match e.key.as_str() {
                    "iu.kdd" => r.kdd.to_vec(),
                    "iu.kvn" => vec![r.key_version],
                    "iu.scp" => vec![r.scp],
                    "iu.i" => vec![r.i.unwrap()],
                    "iu.card_challenge" => r.card_challenge.clone(),
                    "iu.card_cryptogram" => r.card_cryptogram.clone(),
                    "iu.sequence_counter" => r.sequence_counter.clone().unwrap(),
                    k => panic!("{ctx}: unknown key {k}"),
                };
                assert_eq!(encode(&got), encode(&want), "{ctx}: {}", e.key);
            }
            assert_eq!(r.to_bytes(), data, "{ctx}: re-encoding");
            n += 1;
        }
    }
    assert!(n >= 20, "only {n} responses");
}

/// Parses a GET STATUS response for `cmd` and checks that re-encoding gives the same bytes.
fn parse_status(ctx: &str, cmd: &CommandApdu, data: &[u8]) -> Vec<RegistryEntry> {
    let scope = StatusScope(cmd.p1);
    let format = if cmd.p2 & 0x02 != 0 { StatusFormat::Tagged } else { StatusFormat::Legacy };
    let entries = status::parse_status_response(scope, format, data).unwrap_or_else(|e| panic!("{ctx}: {e}"));
    let again = match data.first() {
        Some(0x61) => status::encode_tagged_entries(0x61, &entries),
        Some(0xE3) => status::encode_status_response(scope, StatusFormat::Tagged, &entries),
        _ => status::encode_status_response(scope, StatusFormat::Legacy, &entries),
    };
    assert_eq!(encode(&again), encode(data), "{ctx}: re-encoding");
    for e in &entries {
        assert!(!e.to_string().is_empty());
    }
    entries
}

#[test]
fn get_status_responses_in_the_traces() {
    let mut parsed = 0;
    let mut checked = 0;
    for (file, sections) in all_trace_files() {
        for s in &sections {
            // Security level: the P1 of EXTERNAL AUTHENTICATE. Without R-MAC/R-ENC the wire
            // response is the plaintext.
            let level = s.hex("c2").unwrap().map(|c| c[2]).unwrap_or(0);
            for x in s.exchanges().unwrap() {
                let n = x.index;
                let cmd_bytes = s.hex(&format!("c{n}.plain")).unwrap().unwrap_or(x.command.clone());
                let cmd = CommandApdu::from_bytes(&cmd_bytes).unwrap();
                if cmd.ins != 0xF2 {
                    continue;
                }
                let resp = match (s.hex(&format!("r{n}.plain")).unwrap(), &x.response) {
                    (Some(p), _) => p,
                    (None, Some(r)) if level & 0x30 == 0 => r.clone(),
                    _ => continue,
                };
                let r = ResponseApdu::from_bytes(&resp).unwrap();
                if r.sw != StatusWord::SUCCESS {
                    assert!(r.sw.is_error(), "{file} [{}] r{n}: {:?}", s.name, r.sw);
                    continue;
                }
                let ctx = format!("{file} [{}] r{n}", s.name);
                let v = parse_status(&ctx, &cmd, &r.data);
                parsed += 1;
                // What the vector files say about these responses.
                let lcs = |e: &RegistryEntry| e.lifecycle.value();
                let privs = |e: &RegistryEntry| encode(&e.privileges.unwrap().to_bytes());
                match (s.name.as_str(), n) {
                    ("kaoh-scp03-aes128-i70-get-status-apps", 3) | ("kaoh-scp03-aes128-i70-get-status-all", 4) => {
                        assert_eq!(v.len(), 4, "{ctx}");
                        assert_eq!((v[3].aid.len(), lcs(&v[3]), privs(&v[3]).as_str()), (9, 0x07, "000000"), "{ctx}");
                        assert_eq!((v[0].aid.to_string().as_str(), lcs(&v[0]), privs(&v[0]).as_str()), ("A0000005591010FFFFFFFF8900001000", 0x3F, "80C000"));
                        assert!(matches!(v[0].lifecycle, LifeCycle::SecurityDomain(_)));
                        checked += 1;
                    }
                    ("kaoh-scp03-aes128-i70-get-status-all", 3 | 6) => {
                        assert_eq!(v.len(), 8, "{ctx}");
                        let last = &v[7];
                        assert_eq!(last.aid.to_string(), "A0000000090005FFFFFFFF8912000064");
                        assert_eq!((lcs(last), last.version.as_deref()), (0x01, Some(&[1, 0][..])));
                        assert_eq!(last.associated_sd.unwrap().to_string(), "A000000151");
                        checked += 1;
                    }
                    ("kaoh-scp03-aes128-i70-get-status-all", 5) => {
                        assert_eq!(v.len(), 1);
                        assert_eq!((v[0].aid.to_string().as_str(), v[0].lifecycle.to_string().as_str()), ("A000000151000000", "SECURED"));
                        assert_eq!(privs(&v[0]), "82FC80");
                        checked += 1;
                    }
                    ("kaoh-scp03-aes192-i10-get-status", 3) => {
                        assert_eq!(v.len(), 1);
                        assert_eq!((v[0].aid.to_string().as_str(), lcs(&v[0])), ("A0000001515350", 0x01));
                        checked += 1;
                    }
                    ("kaoh-scp02-i15-cmac-get-status", 3) => {
                        assert_eq!(v.len(), 6);
                        assert_eq!((v[5].aid.to_string().as_str(), v[5].lifecycle.to_string().as_str()), ("D0D1D2D3D4D501", "LOADED"));
                        checked += 1;
                    }
                    ("gppro-issue80-gd-smartcafe-scp02-legacy-get-status", 3) => {
                        assert_eq!((v[0].aid.to_string().as_str(), lcs(&v[0]), privs(&v[0]).as_str()), ("A000000003000000", 0x0F, "9E"));
                        checked += 1;
                    }
                    ("gppro-issue80-gd-smartcafe-scp02-legacy-get-status", 5) => {
                        assert_eq!((v[0].aid.to_string().as_str(), lcs(&v[0]), privs(&v[0]).as_str()), ("A0000001515350", 0x01, "00"));
                        checked += 1;
                    }
                    ("kaoh-scp01-static-get-status-legacy", 3) => {
                        assert_eq!(v.len(), 6);
                        assert_eq!((v[5].aid.to_string().as_str(), lcs(&v[5])), ("D0D1D2D3D4D501", 0x01));
                        checked += 1;
                    }
                    ("kaoh-scp01-static-get-status-legacy", 4) => {
                        assert_eq!((v[0].aid.to_string().as_str(), lcs(&v[0]), privs(&v[0]).as_str()), ("D0D1D2D3D4D50101", 0x07, "02"));
                        checked += 1;
                    }
                    ("kaoh-scp01-static-get-status-legacy", 5) => {
                        assert_eq!((v[0].aid.to_string().as_str(), lcs(&v[0]), privs(&v[0]).as_str()), ("A0000000030000", 0x07, "00"));
                        checked += 1;
                    }
                    (name, 5) if name.starts_with("openscp-") => {
                        assert_eq!((v[0].aid, v[0].lifecycle.to_string().as_str()), (tsm_gp::gp::Aid::GP_ISD, "SECURED"));
                        checked += 1;
                    }
                    _ => {}
                }
            }
        }
    }
    assert!(parsed >= 25, "only {parsed} GET STATUS responses");
    assert!(checked >= 16, "only {checked} responses checked against stated values");
}

fn plain(s: &Section, key: &str) -> CommandApdu {
    CommandApdu::from_bytes(&s.hex(key).unwrap().unwrap()).unwrap()
}

#[test]
fn load_and_install_of_the_kaoh_scp02_session() {
    let sections = parse_ini(&std::fs::read_to_string(tsm_gp::testdata_dir().join("vectors/scp02/scp02_traces_kaoh_pysim.txt")).unwrap()).unwrap();
    let s = sections.iter().find(|s| s.name == "kaoh-scp02-i15-cdec-cmac-delete-load-install").unwrap();
    let GpCommand::Load(b0) = GpCommand::parse(&plain(s, "c6.plain")).unwrap() else { panic!() };
    let GpCommand::Load(b1) = GpCommand::parse(&plain(s, "c7.plain")).unwrap() else { panic!() };
    assert_eq!((b0.block, b0.last, b1.block, b1.last), (0, false, 1, true));
    let mut asm = load::LoadAssembler::new();
    assert_eq!(asm.push(&b0).unwrap(), None);
    let file = asm.push(&b1).unwrap().unwrap();
    let lf = LoadFile::parse(&file).unwrap();
    assert!(lf.dap_blocks.is_empty() && !lf.ciphered);
    // testdata README: the LFDB of kaoh_helloworld.cap with Descriptor, 343 bytes, SHA-256 60a16fea…
    assert_eq!(lf.lfdb.len(), 343);
    assert_eq!(encode(&sha2::Sha256::digest(&lf.lfdb)), "60A16FEA3D7BAF74DFE112ABF645972D6869EDEE8A46F4109CE78F40D33E57B5");
    // Re-splitting with the trace's block size gives the same blocks.
    let again = lf.blocks(b0.data.len()).unwrap();
    assert_eq!(again.len(), 2);
    for (a, b) in again.iter().zip([&b0, &b1]) {
        assert_eq!((a.block, a.last, &a.data), (b.block, b.last, &b.data));
    }
    // The INSTALL commands around it.
    let GpCommand::Install(i) = GpCommand::parse(&plain(s, "c5.plain")).unwrap() else { panic!() };
    let InstallBody::Load { elf, sd, hash, params, token } = &i.body else { panic!("{i}") };
    assert_eq!((elf.to_string().as_str(), sd.unwrap().to_string().as_str()), ("D0D1D2D3D4D501", "A000000003000000"));
    assert!(hash.is_empty() && token.is_empty());
    let sys = params.system().unwrap();
    assert_eq!((sys.get_nv_code_min(), sys.get_nv_quota()), (Some(0x160), Some(2000)));
    let GpCommand::Install(i) = GpCommand::parse(&plain(s, "c8.plain")).unwrap() else { panic!() };
    let InstallBody::Install { app, privileges, params, make_selectable, .. } = &i.body else { panic!("{i}") };
    assert_eq!((app.to_string().as_str(), privileges.to_bytes(), *make_selectable), ("D0D1D2D3D4D50101", vec![0x02], true));
    assert_eq!(params.c9(), Some(&[0x00][..]));
    // The two DELETEs.
    let GpCommand::Delete(d) = GpCommand::parse(&plain(s, "c3.plain")).unwrap() else { panic!() };
    assert!(d.related && d.to_string().contains("D0D1D2D3D4D50101"));
}

// ---------------------------------------------------------------------------------------------
// GlobalPlatformPro dumps

fn dump(name: &str) -> Vec<tsm_gp::recording::Exchange> {
    let p = tsm_gp::testdata_dir().join("vectors/gppro_nextgen_dumps").join(name);
    parse_log(&std::fs::read_to_string(&p).unwrap()).unwrap()
}

#[test]
fn every_gppro_dump_exchange_decodes() {
    let dir = tsm_gp::testdata_dir().join("vectors/gppro_nextgen_dumps");
    let mut names: Vec<String> = std::fs::read_dir(&dir).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect();
    names.sort();
    let mut responses = 0;
    for name in names.iter().filter(|n| n.ends_with(".dump")) {
        let xs = dump(name);
        for (i, x) in xs.iter().enumerate() {
            let ctx = format!("{name} #{}", i + 1);
            let cmd = check_command(&ctx, &x.command);
            let Some(r) = &x.response else { continue };
            let r = ResponseApdu::from_bytes(r).unwrap();
            if r.sw != StatusWord::SUCCESS || r.data.is_empty() {
                continue;
            }
            let apdu = CommandApdu::from_bytes(&x.command).unwrap();
            match (&cmd, apdu.ins) {
                (GpCommand::Select(_), _) => {
                    let fci = Fci::parse(&r.data).unwrap_or_else(|e| panic!("{ctx}: {e}"));
                    assert_eq!(fci.to_bytes(), r.data, "{ctx}");
                }
                (GpCommand::GetData(g), _) => {
                    let o = GpDataObject::parse(&r.data).unwrap_or_else(|e| panic!("{ctx}: {e}"));
                    assert_eq!(encode(&o.to_bytes()), encode(&r.data), "{ctx}: {o}");
                    assert!(g.tag == 0x9F7F || !matches!(o, GpDataObject::Cplc(_)));
                }
                (GpCommand::InitializeUpdate(_), _) => {
                    let iu = InitUpdateResponse::parse(&r.data).unwrap_or_else(|e| panic!("{ctx}: {e}"));
                    assert_eq!(iu.to_bytes(), r.data);
                }
                // GET STATUS, plain or wrapped with a C-MAC only (the response is plain); a
                // "next occurrence" response continues the previous one (see crs_dumps).
                (_, 0xF2) if apdu.p2 & 0x01 == 0 => {
                    parse_status(&ctx, &apdu, &r.data);
                }
                _ => continue,
            }
            responses += 1;
        }
    }
    assert!(responses >= 18, "only {responses} responses decoded");
}

#[test]
fn jcop4_discovery_data_objects() {
    let xs = dump("discover-jcop4.dump");
    let get = |tag: u16| -> GpDataObject {
        let x = xs.iter().find(|x| x.command[1] == 0xCA && u16::from_be_bytes([x.command[2], x.command[3]]) == tag).unwrap();
        let r = ResponseApdu::from_bytes(x.response.as_ref().unwrap()).unwrap();
        assert_eq!(r.sw, StatusWord::SUCCESS);
        GpDataObject::parse(&r.data).unwrap()
    };
    let GpDataObject::Cplc(c) = get(0x9F7F) else { panic!() };
    assert_eq!((encode(&c.ic_fabricator), encode(&c.ic_type), encode(&c.ic_serial_number)), ("4790".into(), "D600".into(), "34297620".into()));
    // The KDD is the CPLC fabrication date, serial number and batch (JCOP).
    let GpDataObject::Kdd(kdd) = get(0xCF) else { panic!() };
    assert_eq!(encode(&kdd), "00003244342976208448");
    assert_eq!(get(0xC1).sequence_counter(), Some(0x0427));
    let GpDataObject::CardRecognition(crd) = get(0x66) else { panic!() };
    assert_eq!(crd.gp_version().as_deref(), Some("2.3"));
    assert_eq!((crd.scps()[0].id, crd.scps()[0].i), (0x03, 0x70));
    let GpDataObject::CardCapabilities(cc) = get(0x67) else { panic!() };
    assert_eq!((cc.scp[0].id, cc.scp[0].options.clone(), cc.scp[0].key_sizes), (0x03, decode("0010206070").unwrap(), Some(0x07)));
    assert_eq!(encode(&cc.ssd_privileges.unwrap().to_bytes()), "E5BEC0");
    assert_eq!(encode(&cc.other[0].to_bytes()), "89020101");
    // README: Key Information Template, 3 x AES-128 KVN 01.
    let GpDataObject::KeyInformation(k) = get(0xE0) else { panic!() };
    assert_eq!(k.keys.len(), 3);
    for (i, key) in k.keys.iter().enumerate() {
        assert_eq!((key.id as usize, key.version, key.components[0].key_type, key.components[0].length), (i + 1, 1, 0x88, 16));
    }
    // The INITIALIZE UPDATE of the same card (README: SCP03 i=70, KVN 01, sequence 000436).
    let auth = dump("scp03-auth-jcop4.dump");
    let iu = InitUpdateResponse::parse(without_sw(auth[0].response.as_ref().unwrap())).unwrap();
    assert_eq!((iu.key_version, iu.scp, iu.i, iu.sequence_counter.as_deref()), (1, 3, Some(0x70), Some(&[0x00, 0x04, 0x36][..])));
    assert_eq!(iu.kdd.to_vec(), kdd);
}

#[test]
fn crs_dumps() {
    // crs-list-rich: the card answers 6310 and the rest comes with P2 = 01; the last entry of
    // the first page is cut in the middle of its 61 template.
    let xs = dump("crs-list-rich.dump");
    let (first, second) = (&xs[1], &xs[2]);
    let cmd = CommandApdu::from_bytes(&first.command).unwrap();
    let GpCommand::GetStatus(gs) = GpCommand::parse(&cmd).unwrap() else { panic!() };
    let mut pager = GetStatusPager::new(gs);
    assert_eq!(pager.first().to_apdu().to_bytes(), first.command);
    let r1 = ResponseApdu::from_bytes(first.response.as_ref().unwrap()).unwrap();
    assert_eq!(r1.sw, StatusWord::MORE_DATA);
    let PagerStep::Next(next) = pager.feed(&r1).unwrap() else { panic!("expected a follow-up") };
    assert_eq!(encode(&next.to_apdu().to_bytes()), encode(&second.command));
    let r2 = ResponseApdu::from_bytes(second.response.as_ref().unwrap()).unwrap();
    let PagerStep::Done(entries) = pager.feed(&r2).unwrap() else { panic!("expected the end") };
    assert_eq!(entries.len(), 8);
    assert_eq!(entries[0].aid, tsm_gp::gp::Aid::GP_ISD);
    assert_eq!((entries[0].lifecycle.value(), entries[0].contactless_state), (0x0F, Some(0x01)));
    assert_eq!(entries[7].aid.to_string(), "D233000000775041592D303101");
    assert!(entries[7].other.iter().any(|t| t.tag.0 == 0xA6));
    assert!(pager.feed(&r2).is_err(), "a finished pager takes no more responses");
    // The same entries as the non-paged listing plus the last two.
    let list = dump("crs-list.dump");
    let r = ResponseApdu::from_bytes(list[1].response.as_ref().unwrap()).unwrap();
    let listed = parse_status("crs-list", &CommandApdu::from_bytes(&list[1].command).unwrap(), &r.data);
    assert_eq!(listed.len(), 6);
    for (a, b) in listed.iter().zip(&entries) {
        assert_eq!(a.aid, b.aid);
    }

    // crs-list-prefix: partial AID search.
    let xs = dump("crs-list-prefix.dump");
    let GpCommand::GetStatus(gs) = GpCommand::parse(&CommandApdu::from_bytes(&xs[1].command).unwrap()).unwrap() else { panic!() };
    let search = gs.search().unwrap();
    assert_eq!(search.aid_prefix.as_deref(), Some(&decode("D233000000").unwrap()[..]));
    let r = ResponseApdu::from_bytes(xs[1].response.as_ref().unwrap()).unwrap();
    let found = parse_status("crs-list-prefix", &gs.to_apdu(), &r.data);
    assert_eq!(found.len(), 2);
    assert!(found.iter().all(|e| search.matches(&e.aid)));

    // crs-list-crel: tag list filter; the card returns only those tags.
    let xs = dump("crs-list-crel.dump");
    let GpCommand::GetStatus(gs) = GpCommand::parse(&CommandApdu::from_bytes(&xs[1].command).unwrap()).unwrap() else { panic!() };
    assert_eq!(gs.search().unwrap().tag_list.as_deref(), Some(&decode("4F9F70A4").unwrap()[..]));

    // crs-activate / crs-deactivate: SET STATUS P1 = 01 with a 4F TLV.
    for (name, state) in [("crs-activate.dump", 1), ("crs-deactivate.dump", 0)] {
        let xs = dump(name);
        let GpCommand::SetStatus(st) = GpCommand::parse(&CommandApdu::from_bytes(&xs[1].command).unwrap()).unwrap() else { panic!() };
        assert_eq!((st.scope, st.state), (SetStatusScope::AVAILABILITY, state));
        assert_eq!(st.aid().unwrap().to_string(), "A000000003143117140617005643");
    }
}

#[test]
fn pager_with_a_plain_single_page() {
    let xs = dump("scp03-auth-jcop4.dump");
    let wrapped = CommandApdu::from_bytes(&xs[2].command).unwrap();
    let mut p = GetStatusPager::new(GetStatus::new(StatusScope(wrapped.p1)));
    let r = ResponseApdu::from_bytes(xs[2].response.as_ref().unwrap()).unwrap();
    let PagerStep::Done(v) = p.feed(&r).unwrap() else { panic!() };
    assert_eq!(v.len(), 1);
    assert_eq!((v[0].aid, v[0].lifecycle.to_string().as_str()), (tsm_gp::gp::Aid::GP_ISD, "OP_READY"));
    assert_eq!(encode(&v[0].privileges.unwrap().to_bytes()), "9AFE80");
}
