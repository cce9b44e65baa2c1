#![no_main]
//! CAP parsing (zip and .ijc) must never panic or allocate without bound; what parses yields
//! a load file that parses again as .ijc with the same package AID.
use libfuzzer_sys::fuzz_target;
use tsm_gp::cap::CapFile;

fuzz_target!(|data: &[u8]| {
    if let Ok(cap) = CapFile::parse(data) {
        let lfdb = cap.load_file_data_block(true);
        let again = CapFile::parse(&lfdb).expect("a parsed CAP's load file is a valid .ijc");
        assert_eq!(again.package_aid(), cap.package_aid());
        let _ = cap.info();
    }
});
