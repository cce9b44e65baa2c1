#![no_main]
//! INITIALIZE UPDATE responses reach the host from the card (or from a phone relaying it): the
//! SCP02 and SCP03 host handshakes and the response parsers must never panic on them.
use libfuzzer_sys::fuzz_target;
use tsm_gp::crypto::SecretKey;
use tsm_gp::scp::{ChannelOptions, SecurityLevel, StaticKeys, scp02, scp03};
use tsm_gp::{Codec, ResponseApdu};

const KEY: [u8; 16] = *b"@ABCDEFGHIJKLMNO";

fuzz_target!(|data: &[u8]| {
    let _ = tsm_gp::gp::InitUpdateResponse::parse(data);
    let _ = scp02::InitUpdateResponse::parse(data);
    let Ok(resp) = ResponseApdu::from_bytes(data) else { return };

    let aes = StaticKeys::single(SecretKey::aes(&KEY).unwrap(), 0);
    for challenge in [&[1u8; 8][..], &[1u8; 16][..]] {
        let (hs, _) = scp03::HostHandshake::new(aes.clone(), challenge, ChannelOptions::default()).unwrap();
        if let Ok(auth) = hs.on_init_update(&resp, SecurityLevel(0x33), scp03::Expect::any()) {
            let _ = auth.external_authenticate();
        }
    }
    let des = StaticKeys::single(SecretKey::des3(&KEY).unwrap(), 0);
    for i in [0x15u8, 0x55] {
        let opts = scp02::Scp02Options { i, channel: ChannelOptions::default(), sd_aid: None };
        let (hs, _) = scp02::HostHandshake::new(des.clone(), [1; 8], opts);
        if let Ok(auth) = hs.on_init_update(&resp, SecurityLevel(0x03), None) {
            let _ = auth.external_authenticate();
        }
    }
});
