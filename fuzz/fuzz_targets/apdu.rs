#![no_main]
//! Command and response APDU parsing must never panic; a parsed command re-encodes byte for byte.
use libfuzzer_sys::fuzz_target;
use tsm_gp::{Codec, CommandApdu, ResponseApdu};

fuzz_target!(|data: &[u8]| {
    if let Ok(c) = CommandApdu::from_bytes(data) {
        assert_eq!(c.to_bytes(), data);
        let _ = c.case();
    }
    if let Ok(r) = ResponseApdu::from_bytes(data) {
        assert_eq!(r.to_bytes(), data);
        let _ = r.sw.meaning();
    }
});
