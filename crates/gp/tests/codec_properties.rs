//! Property tests: encode/decode round trips of the wire types, and parsers that never panic.

use proptest::prelude::*;
use tsm_gp::tlv::{self, Dgi, SimpleTlv, Tag, Tlv};
use tsm_gp::{Codec, CommandApdu, ResponseApdu, StatusWord};

/// Valid BER tags of 1 to 3 bytes.
fn tag() -> impl Strategy<Value = u32> {
    prop_oneof![
        (1u8..=0xFE).prop_filter("not multi-byte", |b| b & 0x1F != 0x1F).prop_map(|b| b as u32),
        (0u8..=7, 0u8..=0x7F).prop_map(|(cls, t)| (((cls << 5) | 0x1F) as u32) << 8 | t as u32),
        (0u8..=7, 0x81u8..=0xFF, 0u8..=0x7F).prop_map(|(cls, a, b)| ((((cls << 5) | 0x1F) as u32) << 16) | (a as u32) << 8 | b as u32),
    ]
}

fn command() -> impl Strategy<Value = CommandApdu> {
    (any::<[u8; 4]>(), prop::collection::vec(any::<u8>(), 0..600), prop::option::of(1usize..=65536), any::<bool>()).prop_map(
        |(h, data, le, ext)| {
            let mut c = CommandApdu::new(h[0], h[1], h[2], h[3]).with_data(data);
            c.le = le;
            c.extended = ext;
            c
        },
    )
}

proptest! {
    #[test]
    fn tlv_round_trip(items in prop::collection::vec((tag(), prop::collection::vec(any::<u8>(), 0..300)), 0..6)) {
        let tlvs: Vec<Tlv> = items.into_iter().map(|(t, v)| Tlv::new(t, v)).collect();
        let mut buf = Vec::new();
        for t in &tlvs { t.encode(&mut buf); }
        let parsed = tlv::parse_all(&buf).unwrap();
        prop_assert_eq!(parsed.len(), tlvs.len());
        for (p, t) in parsed.iter().zip(&tlvs) {
            prop_assert_eq!(p.to_owned(), t.clone());
            prop_assert_eq!(Tag(t.tag.0).len(), { let mut b = Vec::new(); t.tag.encode(&mut b); b.len() });
        }
    }

    #[test]
    fn constructed_tlv_children_round_trip(children in prop::collection::vec((tag(), prop::collection::vec(any::<u8>(), 0..40)), 1..5)) {
        let kids: Vec<Tlv> = children.into_iter().map(|(t, v)| Tlv::new(t, v)).collect();
        let parent = Tlv::constructed(0xE3, &kids);
        let bytes = parent.to_bytes();
        let back = Tlv::from_bytes(&bytes).unwrap();
        let got: Vec<Tlv> = back.as_ref().children().map(|c| c.unwrap().to_owned()).collect();
        prop_assert_eq!(got, kids);
    }

    #[test]
    fn dgi_and_simple_tlv_round_trip(id in any::<u16>(), t in 1u8..=0xFE, v in prop::collection::vec(any::<u8>(), 0..600)) {
        let d = Dgi { id, value: v.clone() };
        prop_assert_eq!(Dgi::from_bytes(&d.to_bytes()).unwrap(), d);
        let s = SimpleTlv { tag: t, value: v };
        prop_assert_eq!(SimpleTlv::from_bytes(&s.to_bytes()).unwrap(), s);
    }

    #[test]
    fn command_apdu_round_trip(c in command()) {
        let bytes = c.to_bytes();
        let back = CommandApdu::from_bytes(&bytes).unwrap();
        prop_assert_eq!(back.to_bytes(), bytes);
        prop_assert_eq!(back.header(), c.header());
        prop_assert_eq!(&back.data, &c.data);
        prop_assert_eq!(back.le, c.le);
    }

    #[test]
    fn response_apdu_round_trip(data in prop::collection::vec(any::<u8>(), 0..300), sw in any::<u16>()) {
        let r = ResponseApdu::new(data, StatusWord(sw));
        prop_assert_eq!(ResponseApdu::from_bytes(&r.to_bytes()).unwrap(), r);
    }

    #[test]
    fn parsers_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..400)) {
        let _ = tlv::parse_all(&bytes);
        let _ = tlv::parse_dgis(&bytes);
        let _ = CommandApdu::from_bytes(&bytes);
        let _ = ResponseApdu::from_bytes(&bytes);
        let _ = SimpleTlv::from_bytes(&bytes);
        let _ = tsm_gp::recording::parse_log(&String::from_utf8_lossy(&bytes));
        let _ = tsm_gp::recording::parse_ini(&String::from_utf8_lossy(&bytes));
    }
}
