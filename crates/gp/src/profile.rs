//! Card profiles: what a kind of secure element is (carrier, ATR, ISD AID, memory, supported
//! secure channels, CPLC) and the named quirks in which it departs from the specifications.
//! Host code consults the quirks instead of special-casing card models; the simulated SE
//! reproduces them.

use crate::scp::{ChannelOptions, Scp};
use serde::{Deserialize, Serialize};

/// The physical form of the secure element.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Carrier {
    /// UICC / SIM, reached by the handset over SWP.
    Uicc,
    /// A secure microSD card.
    MicroSd,
    /// An embedded SE soldered into the handset.
    Ese,
}

impl Carrier {
    pub fn as_str(self) -> &'static str {
        match self {
            Carrier::Uicc => "uicc",
            Carrier::MicroSd => "microsd",
            Carrier::Ese => "ese",
        }
    }
}

impl std::str::FromStr for Carrier {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s.to_ascii_lowercase().as_str() {
            "uicc" | "sim" | "swp-sim" => Ok(Carrier::Uicc),
            "microsd" | "sd" => Ok(Carrier::MicroSd),
            "ese" | "embedded" => Ok(Carrier::Ese),
            o => Err(format!("unknown carrier {o:?} (uicc, microsd, ese)")),
        }
    }
}

/// Departures from the specifications seen on real cards, and optional card features (`euicc`).
/// Every flag defaults to off (`false`, `0`), the behaviour of the specifications; profile files
/// may leave any of them out. `docs/card-profiles.md` lists which recorded card needed which.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct Quirks {
    /// The SCP03 encryption counter advances only on commands with data.
    pub scp03_counter_only_with_data: bool,
    /// GET STATUS answers only the legacy format (P2 = 00); the tagged format gets 6A86.
    pub legacy_get_status_only: bool,
    /// SCP03 S16 mode is not supported.
    pub no_s16: bool,
    /// The card wants one encrypted padding block for empty C-DEC data.
    pub encrypt_empty_data: bool,
    /// The card rejects Le after the C-MAC.
    pub no_le_after_mac: bool,
    /// INSTALL [for install] (with or without make selectable) answers without data, where
    /// GPCS 2.3 §11.5.3 asks for a single `00` byte when no receipt is generated.
    pub install_for_install_without_data: bool,
    /// LOAD answers its `00` byte on the first block (block number `00`) and nothing on the
    /// others, the last included; GPCS 2.3 §11.6.3 puts it on the last block.
    pub load_00_on_first_block: bool,
    /// R-ENC pads response data (`80 00…`) to at least this many bytes, more than the one
    /// padding block Amd D §6.2.7 asks for (a multiple of 16; `0`: minimal padding). Hosts
    /// decrypt it anyway (the padding is stripped after the R-MAC has been checked).
    pub r_enc_min_padded_len: u16,
    /// The factory key set is numbered `00` (INITIALIZE UPDATE answers key version `00`)
    /// instead of `FF` (GPCS 2.3 §11.8.2.2); only INITIALIZE UPDATE P1 = `00` reaches it.
    pub key_version_00: bool,
    /// INITIALIZE UPDATE P1 (key version) is not checked: the card answers with its first key
    /// set whatever version is asked, where GPCS 2.3 §11.5.2 wants `6A88` for an unknown one.
    pub init_update_ignores_key_version: bool,
    /// GET STATUS P1 = `10` (load files and their modules) is not supported (`6A86`); hosts
    /// fall back to P1 = `20`.
    pub no_get_status_modules: bool,
    /// Tagged GET STATUS entries carry only `4F`, `9F70` and (for the ISD, applications and
    /// security domains) `C5`: no load file (`C4`), version (`CE`) or associated security
    /// domain (`CC`), as GP 2.1.1-era cards answer.
    pub status_minimal_entries: bool,
    /// Tagged GET STATUS entries give privileges (`C5`) in one byte when bytes 2 and 3 are
    /// zero (the GP 2.1.1 form).
    pub status_one_byte_privileges: bool,
    /// Tagged GET STATUS entries of the ISD, applications and security domains also carry
    /// `CE`, the version of their executable load file.
    pub status_load_file_version_in_apps: bool,
    /// Tagged GET STATUS entries of the ISD, applications and security domains also carry the
    /// UICC system specific parameters (`EA`, ETSI TS 102 226) of their install parameters,
    /// as UICCs report them.
    pub status_uicc_parameters: bool,
    /// SELECT of a security domain answers `6F { 84 AID, A5 { 9F65 max length } }`, without
    /// the security domain management data (`73`, optional in GPCS 2.3 §11.9.3.1).
    pub fci_without_management_data: bool,
    /// An eUICC (GSMA SGP.22): the ISD plays the ISD-R and answers the ES10c GetEuiccData
    /// request (STORE DATA `BF3E { 5C 01 5A }`) with the card's EID, `BF3E { 5A 10 EID }`.
    pub euicc: bool,
}

impl Quirks {
    /// The secure channel options a host must use with such a card.
    pub fn channel_options(&self) -> ChannelOptions {
        ChannelOptions {
            scp03_counter_only_with_data: self.scp03_counter_only_with_data,
            encrypt_empty_data: self.encrypt_empty_data,
            drop_le: self.no_le_after_mac,
        }
    }
}

/// A kind of card.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CardProfile {
    pub name: String,
    pub carrier: Carrier,
    #[serde(with = "crate::hex::serde")]
    pub atr: Vec<u8>,
    #[serde(with = "crate::hex::serde")]
    pub isd_aid: Vec<u8>,
    /// Supported secure channels; the first is the default.
    pub scp: Vec<Scp>,
    /// Non-volatile memory available for content, in bytes.
    pub memory: u32,
    /// Largest LOAD block the card takes (data field bytes before secure messaging overhead).
    pub max_block: usize,
    /// Extended-length APDUs accepted.
    #[serde(default)]
    pub extended_length: bool,
    /// Card Production Life Cycle data (`9F7F`, 42 bytes).
    #[serde(with = "crate::hex::serde")]
    pub cplc: Vec<u8>,
    #[serde(default)]
    pub quirks: Quirks,
}

/// Builds an ATR `3B 8K 80 01 <historical bytes> TCK` (T=1; TCK = XOR of T0..last byte).
pub fn atr_with_historical_bytes(hist: &[u8]) -> Vec<u8> {
    let k = hist.len().min(15) as u8;
    let mut atr = vec![0x3B, 0x80 | k, 0x80, 0x01];
    atr.extend_from_slice(&hist[..k as usize]);
    let tck = atr[1..].iter().fold(0u8, |a, b| a ^ b);
    atr.push(tck);
    atr
}

fn cplc(ic_fabricator: u16, ic_type: u16, os_id: u16, serial: u32) -> Vec<u8> {
    let mut c = Vec::with_capacity(42);
    c.extend_from_slice(&ic_fabricator.to_be_bytes());
    c.extend_from_slice(&ic_type.to_be_bytes());
    c.extend_from_slice(&os_id.to_be_bytes());
    c.extend_from_slice(&[0x60, 0x12]); // OS release date, YDDD: 2016 day 012
    c.extend_from_slice(&[0x01, 0x00]); // OS release level
    c.extend_from_slice(&[0x61, 0x00]); // IC fabrication date
    c.extend_from_slice(&serial.to_be_bytes()); // IC serial number
    c.extend_from_slice(&[0x00, 0x01]); // IC batch identifier
    c.extend_from_slice(&[0x47, 0x90]); // IC module fabricator
    c.extend_from_slice(&[0x61, 0x20]); // IC module packaging date
    c.extend_from_slice(&[0x00, 0x01]); // ICC manufacturer
    c.extend_from_slice(&[0x61, 0x30]); // IC embedding date
    c.extend_from_slice(&[0x00, 0x01]); // IC pre-personalizer
    c.extend_from_slice(&[0x61, 0x40]); // pre-perso equipment date
    c.extend_from_slice(&[0x00, 0x00, 0x00, 0x01]); // pre-perso equipment id
    c.extend_from_slice(&[0x00, 0x01]); // IC personalizer
    c.extend_from_slice(&[0x61, 0x50]); // personalization date
    c.extend_from_slice(&[0x00, 0x00, 0x00, 0x01]); // personalization equipment id
    c
}

/// The ISD AID of GP 2.2+ cards.
pub const GP_ISD_AID: [u8; 8] = [0xA0, 0x00, 0x00, 0x01, 0x51, 0x00, 0x00, 0x00];

impl CardProfile {
    /// Built-in profiles: `uicc`, `microsd`, `ese`.
    pub fn builtin(name: &str) -> Option<CardProfile> {
        let p = match name {
            "uicc" => CardProfile {
                name: "uicc".into(),
                carrier: Carrier::Uicc,
                atr: atr_with_historical_bytes(b"tsm-uicc"),
                isd_aid: GP_ISD_AID.to_vec(),
                scp: vec![Scp::Scp02 { i: 0x55 }, Scp::Scp03 { i: 0x70 }],
                memory: 256 * 1024,
                max_block: 239,
                extended_length: false,
                cplc: cplc(0x4790, 0x5040, 0x4791, 0x0000_0001),
                quirks: Quirks::default(),
            },
            "microsd" => CardProfile {
                name: "microsd".into(),
                carrier: Carrier::MicroSd,
                atr: atr_with_historical_bytes(b"tsm-microsd"),
                isd_aid: GP_ISD_AID.to_vec(),
                scp: vec![Scp::Scp02 { i: 0x15 }, Scp::Scp03 { i: 0x70 }],
                memory: 1024 * 1024,
                max_block: 239,
                extended_length: true,
                cplc: cplc(0x4090, 0x7321, 0x4091, 0x0000_0002),
                quirks: Quirks::default(),
            },
            "ese" => CardProfile {
                name: "ese".into(),
                carrier: Carrier::Ese,
                atr: atr_with_historical_bytes(b"tsm-ese"),
                isd_aid: GP_ISD_AID.to_vec(),
                scp: vec![Scp::Scp03 { i: 0x70 }, Scp::Scp03 { i: 0x71 }],
                memory: 512 * 1024,
                max_block: 239,
                extended_length: true,
                cplc: cplc(0x4790, 0xD321, 0x4791, 0x0000_0003),
                quirks: Quirks::default(),
            },
            _ => return None,
        };
        Some(p)
    }
    pub const BUILTIN: [&'static str; 3] = ["uicc", "microsd", "ese"];
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn atr_tck_is_xor_from_t0() {
        let atr = atr_with_historical_bytes(b"ab");
        assert_eq!(&atr[..4], &[0x3B, 0x82, 0x80, 0x01]);
        assert_eq!(atr[1..].iter().fold(0, |a, b| a ^ b), 0, "T0..TCK XOR to zero");
    }

    #[test]
    fn quirks_default_when_absent_and_round_trip() {
        let q: Quirks = serde_json::from_str(r#"{"legacy_get_status_only": true}"#).unwrap();
        assert_eq!(q, Quirks { legacy_get_status_only: true, ..Quirks::default() });
        let all = Quirks {
            install_for_install_without_data: true,
            load_00_on_first_block: true,
            r_enc_min_padded_len: 32,
            key_version_00: true,
            init_update_ignores_key_version: true,
            no_get_status_modules: true,
            status_minimal_entries: true,
            status_one_byte_privileges: true,
            status_load_file_version_in_apps: true,
            status_uicc_parameters: true,
            fci_without_management_data: true,
            euicc: true,
            ..Quirks::default()
        };
        let json = serde_json::to_string(&all).unwrap();
        assert_eq!(serde_json::from_str::<Quirks>(&json).unwrap(), all);
        // Card-side behaviour only: the host's channel options do not change.
        assert_eq!(all.channel_options(), Quirks::default().channel_options());
    }

    #[test]
    fn builtins_are_consistent() {
        for n in CardProfile::BUILTIN {
            let p = CardProfile::builtin(n).unwrap();
            assert_eq!(p.cplc.len(), 42, "{n}");
            assert_eq!(p.name, n);
            assert!(!p.scp.is_empty());
        }
    }
}
