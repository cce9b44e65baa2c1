//! Application models: a custom model bound to a package, its state through save/load; the
//! generic model's install parameters; GET STATUS paging with many instances; IIN/CIN.

mod common;
use common::*;
use std::sync::Arc;
use tsm_gp::crypto::SecretKey;
use tsm_gp::gp::store_data::{DataStructure, StoreData};
use tsm_gp::gp::{GetData, GetStatus, Install, Privilege, Privileges, SetStatus, StatusFormat, StatusScope};
use tsm_gp::gp::lifecycle::CardLifeCycle;
use tsm_gp::{CommandApdu, ResponseApdu, StatusWord};
use tsm_se::{AppContext, AppModel, InstallInfo, ModelFactory, ModelRegistry, SeError, SimCard, StoreDataBlock};

/// A counter: INS 01 increments and returns it (2 bytes); STORE DATA sets it from 2 bytes.
#[derive(serde::Serialize, serde::Deserialize)]
struct Counter {
    n: u16,
}

impl AppModel for Counter {
    fn process(&mut self, _ctx: &AppContext, apdu: &CommandApdu) -> ResponseApdu {
        match apdu.ins {
            0x01 => {
                self.n = self.n.wrapping_add(1);
                ResponseApdu::new(self.n.to_be_bytes().to_vec(), StatusWord::SUCCESS)
            }
            _ => ResponseApdu::status(StatusWord::INS_NOT_SUPPORTED),
        }
    }
    fn store_data(&mut self, _ctx: &AppContext, block: &StoreDataBlock<'_>) -> StatusWord {
        match block.data {
            [a, b] => {
                self.n = u16::from_be_bytes([*a, *b]);
                StatusWord::SUCCESS
            }
            _ => StatusWord::WRONG_DATA,
        }
    }
    fn snapshot(&self) -> serde_json::Value {
        serde_json::to_value(self).unwrap()
    }
}

struct CounterFactory;

impl ModelFactory for CounterFactory {
    fn name(&self) -> &'static str {
        "counter"
    }
    fn install(&self, info: &InstallInfo<'_>) -> Result<Box<dyn AppModel>, StatusWord> {
        // The install parameters (C9) give the start value, or 0.
        match info.app_params {
            [] => Ok(Box::new(Counter { n: 0 })),
            [a, b] => Ok(Box::new(Counter { n: u16::from_be_bytes([*a, *b]) })),
            _ => Err(StatusWord::WRONG_DATA),
        }
    }
    fn restore(&self, state: &serde_json::Value) -> Result<Box<dyn AppModel>, String> {
        serde_json::from_value::<Counter>(state.clone()).map(|c| Box::new(c) as Box<dyn AppModel>).map_err(|e| e.to_string())
    }
}

const PKG: &str = "D0D1D2D3D4D501";
const APP: &str = "D0D1D2D3D4D50101";

fn registry() -> ModelRegistry {
    let mut r = ModelRegistry::new();
    r.register(Arc::new(CounterFactory));
    r.bind(aid(PKG), "counter").unwrap();
    r
}

fn hello() -> Vec<u8> {
    let v = cap_vectors().into_iter().find(|v| v.file == "kaoh_helloworld.cap").unwrap();
    tsm_gp::cap::CapFile::parse(&v.bytes()).unwrap().load_file_data_block(true)
}

#[test]
fn custom_model_runs_and_persists() {
    let mut card = scp03_card(1);
    *card.models_mut() = registry();
    let mut h = open_scp03(&mut card, aes_keys(TEST_KEY, 0xFF), 0x03);
    assert!(load(&mut h, &mut card, &hexv(PKG), None, &[], &[], &hello(), 200).iter().all(|s| *s == 0x9000));
    assert_eq!(install(&mut h, &mut card, &hexv(PKG), &hexv(APP), &hexv("D0D1D2D3D4D50199"), Privileges::NONE, &[0xC9, 0x01, 0x00], true), 0x6A80, "the model refuses bad parameters");
    assert_eq!(install(&mut h, &mut card, &hexv(PKG), &hexv(APP), &hexv(APP), Privileges::NONE, &[0xC9, 0x02, 0x00, 0x10], true), 0x9000);
    assert_eq!(h.sw(&mut card, &Install::for_personalization(aid(APP)).to_apdu()), 0x9000);
    assert_eq!(h.sw(&mut card, &StoreData::new(0, true, DataStructure::None, vec![0x01, 0x00]).to_apdu()), 0x9000);
    assert_eq!(select(&mut card, APP).sw.0, 0x9000);
    assert_eq!(send_raw(&mut card, &CommandApdu::new(0x80, 0x01, 0, 0)).data, vec![0x01, 0x01]);
    assert_eq!(card.state().app(&aid(APP)).unwrap().model.as_ref().unwrap().name, "counter");

    let dir = std::env::temp_dir().join(format!("tsm-se-models-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("card.json");
    let sk = SecretKey::aes(&[3; 32]).unwrap();
    card.save(&path, &sk).unwrap();
    // Without the model registered the state cannot run.
    assert!(matches!(SimCard::load(&path, &sk), Err(SeError::Model { .. })));
    let mut back = SimCard::load_with_models(&path, &sk, registry()).unwrap();
    assert_eq!(select(&mut back, APP).sw.0, 0x9000);
    assert_eq!(send_raw(&mut back, &CommandApdu::new(0x80, 0x01, 0, 0)).data, vec![0x01, 0x02], "the counter went on");
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn get_status_pages_with_6310() {
    let mut card = scp03_card(2);
    let mut h = open_scp03(&mut card, aes_keys(TEST_KEY, 0xFF), 0x33);
    assert!(load(&mut h, &mut card, &hexv(PKG), None, &[], &[], &hello(), 200).iter().all(|s| *s == 0x9000));
    let n = 20;
    for i in 0..n {
        let app = format!("D0D1D2D3D4D501{i:02X}");
        let p = tsm_gp::gp::InstallParams::application_specific(&[]).with_system(&tsm_gp::gp::SystemParams::new().nv_quota(64));
        assert_eq!(install(&mut h, &mut card, &hexv(PKG), &hexv(APP), &hexv(&app), Privileges::NONE, p.as_bytes(), true), 0x9000);
    }
    for format in [StatusFormat::Tagged, StatusFormat::Legacy] {
        let first = GetStatus { format, ..GetStatus::new(StatusScope::APPLICATIONS) };
        let mut r = h.send(&mut card, &first.to_apdu());
        let mut pages = 1;
        let mut data = r.data.clone();
        if format == StatusFormat::Tagged {
            assert_eq!(r.sw, StatusWord::MORE_DATA, "20 tagged entries do not fit 256 bytes");
        }
        while r.sw == StatusWord::MORE_DATA {
            assert!(r.data.len() <= 256);
            r = h.send(&mut card, &first.next_occurrence().to_apdu());
            data.extend_from_slice(&r.data);
            pages += 1;
        }
        assert_eq!(r.sw, StatusWord::SUCCESS);
        let entries = tsm_gp::gp::status::parse_status_response(StatusScope::APPLICATIONS, format, &data).unwrap();
        assert_eq!(entries.len(), n, "{format:?}: {pages} pages");
        assert_eq!(entries.iter().map(|e| e.aid.to_string()).collect::<Vec<_>>(), (0..n).map(|i| format!("D0D1D2D3D4D501{i:02X}")).collect::<Vec<_>>());
    }
    // "Next" without a previous 6310 is refused.
    assert_eq!(h.sw(&mut card, &GetStatus::new(StatusScope::APPLICATIONS).next_occurrence().to_apdu()), 0x6985);
    // A prefix search and a tag list.
    let r = h.send(&mut card, &GetStatus::new(StatusScope::APPLICATIONS).with_aid_prefix(&hexv("D0D1D2D3D4D50113")).with_tag_list(&hexv("4F9F70")).to_apdu());
    assert_eq!(r.sw.0, 0x9000);
    assert_eq!(r.data, hexv("E30E4F08D0D1D2D3D4D501139F700107"));
}

#[test]
fn iin_cin_and_card_lock_privilege() {
    let mut card = scp03_card(3);
    assert_eq!(send_raw(&mut card, &GetData::new(0x42).to_apdu()).sw.0, 0x6A88);
    let mut h = open_scp03(&mut card, aes_keys(TEST_KEY, 0xFF), 0x03);
    let tlvs = StoreData::new(0, true, DataStructure::BerTlv, hexv("42031234564502ABCD"));
    assert_eq!(h.sw(&mut card, &tlvs.to_apdu()), 0x9000);
    assert_eq!(h.send(&mut card, &GetData::new(0x42).to_apdu()).data, hexv("4203123456"));
    // Without secure messaging during a C-MAC session the command is refused and the session
    // ends; after that GET DATA works in the clear.
    assert_eq!(send_raw(&mut card, &GetData::new(0x45).to_apdu()).sw.0, 0x6982);
    assert_eq!(send_raw(&mut card, &GetData::new(0x45).to_apdu()).data, hexv("4502ABCD"));

    // An SSD with the Card Lock privilege may lock the card; only the ISD unlocks it.
    let mut h = open_scp03(&mut card, aes_keys(TEST_KEY, 0xFF), 0x03);
    let ssd = "A0000005591010FFFFFFFF8900000100";
    let p: Privileges = [Privilege::SecurityDomain, Privilege::CardLock].into_iter().collect();
    assert_eq!(install(&mut h, &mut card, tsm_se::SD_PACKAGE_AID.as_bytes(), tsm_se::SD_MODULE_AID.as_bytes(), &hexv(ssd), p, &[0xC9, 0x00], true), 0x9000);
    assert_eq!(select(&mut card, ssd).sw.0, 0x9000);
    let mut s = open_scp03(&mut card, aes_keys(TEST_KEY, 0xFF), 0x03);
    assert_eq!(s.sw(&mut card, &SetStatus::card(CardLifeCycle::TERMINATED).to_apdu()), 0x6985, "no Card Terminate privilege");
    assert_eq!(s.sw(&mut card, &SetStatus::card(CardLifeCycle::CARD_LOCKED).to_apdu()), 0x9000);
    assert_eq!(card.state().life_cycle, 0x7F);
    assert_eq!(card.selected(0), None, "the SSD itself is no longer selected on a locked card");
    assert_eq!(select(&mut card, ssd).sw.0, 0x6A82);
    assert_eq!(select(&mut card, ISD).sw.0, 0x6283);
    let mut h = open_scp03(&mut card, aes_keys(TEST_KEY, 0xFF), 0x03);
    assert_eq!(h.sw(&mut card, &SetStatus::card(CardLifeCycle::SECURED).to_apdu()), 0x9000);
}
