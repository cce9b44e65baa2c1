//! The card's randomness. In deterministic mode (a seed in [`CardConfig`](crate::CardConfig))
//! every random byte comes from SplitMix64 (Steele, Lea, Flood: "Fast splittable pseudorandom
//! number generators", OOPSLA 2014), whose 64-bit state is part of the persistent card state,
//! so that a saved and reloaded card goes on with the same sequence. Otherwise the bytes come
//! from the operating system (`getrandom`). SplitMix64 is not a cryptographic generator: it
//! only makes simulated sessions reproducible.

use serde::{Deserialize, Serialize};

/// Where the card's random bytes come from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "mode", rename_all = "lowercase")]
pub enum RngState {
    /// Operating system entropy.
    Os,
    /// SplitMix64 with this state (hex in state files: JSON numbers lose precision past 2^53).
    Seeded {
        #[serde(with = "u64_hex")]
        state: u64,
    },
}

impl RngState {
    pub fn new(seed: Option<u64>) -> Self {
        match seed {
            Some(state) => RngState::Seeded { state },
            None => RngState::Os,
        }
    }

    /// Fills `out`; `false` if the operating system refused (the caller answers with an error
    /// status word rather than use weak bytes).
    pub fn fill(&mut self, out: &mut [u8]) -> bool {
        match self {
            RngState::Os => getrandom::fill(out).is_ok(),
            RngState::Seeded { state } => {
                for chunk in out.chunks_mut(8) {
                    let v = splitmix64(state).to_be_bytes();
                    chunk.copy_from_slice(&v[..chunk.len()]);
                }
                true
            }
        }
    }
}

/// One SplitMix64 step: advances `state` by the golden-ratio increment and mixes it.
pub fn splitmix64(state: &mut u64) -> u64 {
    *state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
    let mut z = *state;
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

mod u64_hex {
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(v: &u64, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&format!("{v:016X}"))
    }
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<u64, D::Error> {
        let s = String::deserialize(d)?;
        u64::from_str_radix(&s, 16).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splitmix64_reference_values() {
        // First outputs for seed 1234567 (the values of the reference implementation in
        // Vigna's splitmix64.c).
        let mut s = 1234567u64;
        let got: Vec<u64> = (0..3).map(|_| splitmix64(&mut s)).collect();
        assert_eq!(got, [6457827717110365317, 3203168211198807973, 9817491932198370423]);
    }

    #[test]
    fn seeded_fill_is_reproducible_and_serializes() {
        let mut a = RngState::new(Some(42));
        let mut b = a;
        let (mut x, mut y) = ([0u8; 13], [0u8; 13]);
        assert!(a.fill(&mut x) && b.fill(&mut y));
        assert_eq!(x, y);
        let j = serde_json::to_string(&a).unwrap();
        let back: RngState = serde_json::from_str(&j).unwrap();
        assert_eq!(back, a);
        let mut os = RngState::new(None);
        assert!(os.fill(&mut x));
    }
}
