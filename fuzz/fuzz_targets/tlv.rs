#![no_main]
//! BER-TLV, DGI and simple-TLV parsing must never panic, and what parses re-encodes to the same bytes.
use libfuzzer_sys::fuzz_target;
use tsm_gp::Codec;
use tsm_gp::tlv::{self, Dgi, SimpleTlv, Tlv};

fuzz_target!(|data: &[u8]| {
    if let Ok(items) = tlv::parse_all(data) {
        let mut out = Vec::new();
        for t in &items {
            let _ = t.children().count();
            // Non-minimal length encodings are accepted on input, so compare structure, not bytes.
            let owned = t.to_owned();
            let re = Tlv::from_bytes(&owned.to_bytes()).expect("re-encoded TLV parses");
            assert_eq!(re, owned);
            owned.encode(&mut out);
        }
        assert!(out.len() <= data.len());
    }
    let _ = tlv::parse_dgis(data);
    let _ = Dgi::from_bytes(data);
    let _ = SimpleTlv::from_bytes(data);
});
