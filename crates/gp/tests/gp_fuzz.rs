//! Robustness: arbitrary and truncated input to every command and response parser of the GP
//! module returns an error or a value, never a panic; what parses re-parses to the same value.

use proptest::prelude::*;
use tsm_gp::codec::Codec;
use tsm_gp::gp::auth::InitUpdateResponse;
use tsm_gp::gp::data::{self, CardCapabilities, CardRecognitionData, Cplc, ExtendedCardResources, GpDataObject, KeyInformation};
use tsm_gp::gp::install::{InstallParams, SdInstallParams, SimParams, UiccSystemParams};
use tsm_gp::gp::load::LoadFile;
use tsm_gp::gp::put_key::PutKeyResponse;
use tsm_gp::gp::status::{self, StatusFormat, StatusScope};
use tsm_gp::gp::store_data::KeyLoad;
use tsm_gp::gp::{Fci, GpCommand, Install, Privileges};
use tsm_gp::hex::decode;
use tsm_gp::{CommandApdu, ResponseApdu};

const INS: [u8; 13] = [0xA4, 0xC0, 0xCA, 0xF2, 0xE6, 0xE8, 0xE4, 0xD8, 0xE2, 0xF0, 0x50, 0x82, 0x70];
const CLA: [u8; 6] = [0x00, 0x80, 0x84, 0x81, 0xC0, 0x01];

/// A parsed command re-encodes to an APDU that parses to the same command.
fn check_command(apdu: &CommandApdu) {
    if let Ok(cmd) = GpCommand::parse(apdu) {
        let again = GpCommand::parse(&cmd.to_apdu()).expect("re-parse of a re-encoded command");
        assert_eq!(again, cmd);
        let _ = cmd.to_string();
    }
}

fn all_response_parsers(data: &[u8]) {
    for scope in [0x80, 0x40, 0x20, 0x10] {
        for format in [StatusFormat::Legacy, StatusFormat::Tagged] {
            if let Ok(v) = status::parse_status_response(StatusScope(scope), format, data) {
                v.iter().for_each(|e| drop(e.to_string()));
            }
        }
        let _ = status::parse_tagged_entry(StatusScope(scope), data);
    }
    let _ = InitUpdateResponse::parse(data);
    if let Ok(o) = GpDataObject::parse(data) {
        assert_eq!(GpDataObject::parse(&o.to_bytes()).unwrap(), o);
        let _ = o.to_string();
    }
    let _ = Cplc::parse(data);
    let _ = CardRecognitionData::parse(data).map(|c| (c.gp_version(), c.scps(), c.to_string()));
    let _ = CardCapabilities::parse(data).map(|c| c.to_string());
    let _ = KeyInformation::parse(data).map(|c| c.to_string());
    let _ = ExtendedCardResources::parse(data);
    let _ = PutKeyResponse::parse(data);
    let _ = LoadFile::parse(data);
    let _ = Fci::parse(data).map(|f| f.max_command_data_length());
    let _ = SdInstallParams::parse(data);
    let _ = UiccSystemParams::parse(data);
    let _ = SimParams::parse(data);
    let _ = KeyLoad::parse(data);
    let _ = Privileges::from_bytes(data);
    let p = InstallParams(data.to_vec());
    let _ = (p.c9(), p.system(), p.sd_params(), p.to_string());
    let _ = data::signature_cipher_suites(data);
    if data.len() >= 2 {
        let _ = data::decode_cplc_date([data[0], data[1]], "2024-06-30".parse().unwrap());
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(3000))]

    #[test]
    fn arbitrary_apdu_bytes(bytes in proptest::collection::vec(any::<u8>(), 0..300)) {
        if let Ok(apdu) = CommandApdu::from_bytes(&bytes) {
            check_command(&apdu);
        }
    }

    #[test]
    fn arbitrary_bodies_of_known_commands(
        cla in proptest::sample::select(CLA.to_vec()),
        ins in proptest::sample::select(INS.to_vec()),
        p1 in any::<u8>(),
        p2 in any::<u8>(),
        data in proptest::collection::vec(any::<u8>(), 0..300),
        le in proptest::option::of(1usize..=256),
    ) {
        let apdu = CommandApdu { cla, ins, p1, p2, data, le, extended: false };
        check_command(&apdu);
    }

    #[test]
    fn arbitrary_response_data(data in proptest::collection::vec(any::<u8>(), 0..300)) {
        all_response_parsers(&data);
    }

    /// Structured garbage: a plausible tag in front of arbitrary content.
    #[test]
    fn tagged_garbage(tag in proptest::sample::select(vec![0x66u32, 0x67, 0xE0, 0xE3, 0x61, 0x9F7F, 0xFF21, 0x6F, 0xC4, 0xE2, 0x73]),
                      body in proptest::collection::vec(any::<u8>(), 0..200)) {
        let mut data = Vec::new();
        tsm_gp::tlv::put(&mut data, tag, &body);
        all_response_parsers(&data);
    }
}

/// Valid samples, every strict prefix of which is malformed (one self-delimiting object).
const SINGLE_OBJECTS: [&str; 6] = [
    "9F7F2A4790D60047000000000032443429762084480000000000000000150F8234323937360000000000000000",
    "664D734B06072A864886FC6B01600B06092A864886FC6B020203630906072A864886FC6B03640B06092A864886FC6B040370650D060B2A864886FC6B0507020000660C060A2B060104012A026E0103",
    "672CA00D800103810500102060708201078103E5BEC082031E030083010284010285017B86010C87017B89020101",
    "E012C00401018810C00402018810C00403018810",
    "FF211081020002820400016DB483040000086A",
    "E3264F08A0000001510000009F700101C5039AFE80C407A0000001515350CC08A000000151000000",
];

#[test]
fn truncated_objects_are_errors() {
    for hex in SINGLE_OBJECTS {
        let full = decode(hex).unwrap();
        assert!(GpDataObject::parse(&full).is_ok() || status::parse_tagged_entry(StatusScope::ISD, &full).is_ok(), "{hex}");
        for n in 0..full.len() {
            let p = &full[..n];
            assert!(GpDataObject::parse(p).is_err(), "{hex} cut at {n}");
            assert!(status::parse_tagged_entry(StatusScope::ISD, p).is_err(), "{hex} cut at {n}");
            assert!(status::parse_status_response(StatusScope::ISD, StatusFormat::Tagged, p).is_err() || n == 0, "{hex} cut at {n}");
        }
    }
    // INITIALIZE UPDATE: every length below 28 is refused.
    let iu = decode("00003244342976208448010370734ECDCA19E446A30BC253BCE97DB991000436").unwrap();
    assert!(InitUpdateResponse::parse(&iu).is_ok());
    for n in (0..28).chain([30, 31, 33]) {
        let mut v = iu.clone();
        v.resize(n, 0);
        assert!(InitUpdateResponse::parse(&v).is_err(), "length {n}");
    }
    // Legacy GET STATUS: cut inside an entry.
    let legacy = decode("07A00000006200010100 07A00000006201010100").unwrap();
    assert_eq!(status::parse_status_response(StatusScope::LOAD_FILES, StatusFormat::Legacy, &legacy).unwrap().len(), 2);
    for n in [1, 5, 8, 9, 11, 17] {
        assert!(status::parse_status_response(StatusScope::LOAD_FILES, StatusFormat::Legacy, &legacy[..n]).is_err(), "cut at {n}");
    }
}

#[test]
fn truncated_install_commands_are_errors() {
    for hex in [
        "80E602001E07D0D1D2D3D4D50108A000000003000000000AEF08C6020160C80207D00000",
        "80E60C002707D0D1D2D3D4D50108D0D1D2D3D4D5010108D0D1D2D3D4D50101010209C90100EF04C80207D00000",
    ] {
        let a = CommandApdu::from_bytes(&decode(hex).unwrap()).unwrap();
        assert!(Install::from_apdu(&a).is_ok());
        for n in 0..a.data.len() {
            let cut = CommandApdu { data: a.data[..n].to_vec(), ..a.clone() };
            assert!(Install::from_apdu(&cut).is_err(), "{hex} cut at {n}");
            assert!(GpCommand::parse(&cut).is_err(), "{hex} cut at {n}");
        }
        // Trailing garbage too.
        let mut long = a.clone();
        long.data.push(0);
        assert!(GpCommand::parse(&long).is_err());
    }
}

#[test]
fn pager_rejects_garbage_at_the_end() {
    use tsm_gp::gp::{GetStatus, GetStatusPager, PagerStep};
    let mut p = GetStatusPager::new(GetStatus::new(StatusScope::APPLICATIONS));
    let page1 = ResponseApdu::new(decode("E30D4F07A00000015153509F70").unwrap(), tsm_gp::StatusWord::MORE_DATA);
    assert!(matches!(p.feed(&page1).unwrap(), PagerStep::Next(g) if g.next));
    let page2 = ResponseApdu::new(vec![], tsm_gp::StatusWord::SUCCESS);
    assert!(p.feed(&page2).is_err(), "the split entry never completes");
}

#[test]
fn one_of_every_command_round_trips() {
    use tsm_gp::gp::delete::Delete;
    use tsm_gp::gp::put_key::{PutKey, PutKeyComponent};
    use tsm_gp::gp::set_status::SetStatus;
    use tsm_gp::gp::store_data::{DataStructure, StoreData};
    use tsm_gp::gp::{
        Aid, CardLifeCycle, ExternalAuthenticate, GetData, GetResponse, GetStatus, InitializeUpdate, Load, Select,
    };
    let app: Aid = "D0D1D2D3D4D50101".parse().unwrap();
    let cmds = vec![
        GpCommand::Select(Select::by_name(Aid::GP_ISD.as_bytes())),
        GpCommand::GetResponse(GetResponse::new(0x20)),
        GpCommand::GetData(GetData::new(0x9F7F)),
        GpCommand::GetStatus(GetStatus::new(StatusScope::LOAD_FILES_AND_MODULES).legacy().with_aid_prefix(&[0xD0, 0xD1])),
        GpCommand::Install(Install::for_make_selectable(app, "CardReset".parse().unwrap())),
        GpCommand::Load(Load { last: true, block: 7, data: vec![0xC4, 0x01, 0x00], framing: tsm_gp::gp::Framing::GP }),
        GpCommand::Delete(Delete::object(app, false)),
        GpCommand::PutKey(PutKey::new(0, 1, 0x31, vec![PutKeyComponent::aes(16, vec![0xAA; 16], vec![1, 2, 3]); 3])),
        GpCommand::StoreData(StoreData::new(0, true, DataStructure::BerTlv, decode("BF3E035C015A").unwrap())),
        GpCommand::SetStatus(SetStatus::card(CardLifeCycle::CARD_LOCKED)),
        GpCommand::InitializeUpdate(InitializeUpdate::new(0x30, &[7; 8])),
        GpCommand::ExternalAuthenticate(ExternalAuthenticate::new(tsm_gp::scp::SecurityLevel(0x03), &[9; 8])),
    ];
    for c in cmds {
        let a = c.to_apdu();
        assert_eq!(GpCommand::parse(&a).unwrap(), c, "{c}");
        assert_eq!(GpCommand::parse(&CommandApdu::from_bytes(&a.to_bytes()).unwrap()).unwrap(), c, "{c}");
        assert_eq!(c.name(), tsm_gp::gp::name(a.ins));
    }
}

#[test]
fn display_lines() {
    let a = CommandApdu::from_bytes(&decode("80E60C002707D0D1D2D3D4D50108D0D1D2D3D4D5010108D0D1D2D3D4D50101010209C90100EF04C80207D00000").unwrap()).unwrap();
    assert_eq!(
        GpCommand::parse(&a).unwrap().to_string(),
        "INSTALL [for install and make selectable] ELF=D0D1D2D3D4D501 module=D0D1D2D3D4D50101 app=D0D1D2D3D4D50101 \
         privileges=[CvmManagement] params C9=00 EF{C8(non-volatile memory quota)=07D0}"
    );
    let a = CommandApdu::from_bytes(&decode("80F24000024F0000").unwrap()).unwrap();
    assert_eq!(GpCommand::parse(&a).unwrap().to_string(), "GET STATUS [applications and SDs] P1=40 legacy AID=*");
    let a = CommandApdu::from_bytes(&decode("84F280020A4F004ACBBBAD77F0346A00").unwrap()).unwrap();
    assert!(GpCommand::parse(&a).unwrap().to_string().starts_with("GET STATUS (secure messaging) 84F28002"));
}
