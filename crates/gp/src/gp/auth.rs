//! INITIALIZE UPDATE and EXTERNAL AUTHENTICATE (GPCS 2.3 §E.5 for SCP02, Amendment D §7.1 for
//! SCP03, GP 2.1.1 §D.4 for SCP01): the commands and the INITIALIZE UPDATE response. The
//! cryptography is the secure channel layer's.

use super::{Framing, GpError, check_gp, ins};
use crate::apdu::CommandApdu;
use crate::codec::{Codec, DecodeError, Reader};
use crate::hex::Hex;
use crate::scp::SecurityLevel;
use std::fmt;

/// INITIALIZE UPDATE command: P1 key version (0 = any), P2 key identifier, host challenge of
/// 8 bytes (16 in SCP03 S16 mode), `Le = 00`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InitializeUpdate {
    pub key_version: u8,
    pub key_id: u8,
    pub host_challenge: Vec<u8>,
    pub framing: Framing,
}

impl InitializeUpdate {
    pub fn new(key_version: u8, host_challenge: &[u8]) -> Self {
        InitializeUpdate { key_version, key_id: 0, host_challenge: host_challenge.to_vec(), framing: Framing::GP_LE }
    }

    pub fn to_apdu(&self) -> CommandApdu {
        self.framing.apdu(ins::INITIALIZE_UPDATE, self.key_version, self.key_id, self.host_challenge.clone())
    }

    pub fn from_apdu(apdu: &CommandApdu) -> Result<Self, GpError> {
        const C: &str = "INITIALIZE UPDATE";
        check_gp(apdu, C, ins::INITIALIZE_UPDATE)?;
        if apdu.data.len() != 8 && apdu.data.len() != 16 {
            return Err(GpError::invalid(C, format!("host challenge of {} bytes; it has 8 (or 16 in SCP03 S16)", apdu.data.len())));
        }
        Ok(InitializeUpdate { key_version: apdu.p1, key_id: apdu.p2, host_challenge: apdu.data.clone(), framing: Framing::of(apdu) })
    }
}

impl fmt::Display for InitializeUpdate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "INITIALIZE UPDATE key version {:02X} id {:02X} host challenge {}", self.key_version, self.key_id, Hex(&self.host_challenge))
    }
}

/// The INITIALIZE UPDATE response. Layouts (offsets in bytes):
/// - SCP01 (28): KDD 0..10, key version 10, SCP 11, card challenge 12..20, cryptogram 20..28.
/// - SCP02 (28): KDD, key version, SCP, sequence counter 12..14, card challenge 14..20,
///   cryptogram 20..28.
/// - SCP03 S8 (29, or 32 with the sequence counter): KDD, key version, SCP, `i` 12, card
///   challenge 13..21, cryptogram 21..29, sequence counter 29..32 (pseudo-random challenge).
/// - SCP03 S16 (45 or 48): as S8 with 16-byte challenge and cryptogram.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InitUpdateResponse {
    pub kdd: [u8; 10],
    pub key_version: u8,
    /// SCP identifier (`01`, `02`, `03`).
    pub scp: u8,
    /// SCP03 only: the `i` parameter.
    pub i: Option<u8>,
    /// SCP02: 2 bytes; SCP03: 3 bytes when present.
    pub sequence_counter: Option<Vec<u8>>,
    pub card_challenge: Vec<u8>,
    pub card_cryptogram: Vec<u8>,
}

impl InitUpdateResponse {
    /// SCP03 S16 mode (16-byte challenges and cryptograms).
    pub fn is_s16(&self) -> bool {
        self.card_cryptogram.len() == 16
    }

    pub fn parse(data: &[u8]) -> Result<Self, GpError> {
        let err = |detail: String| GpError::InitUpdateResponse { detail };
        if data.len() < 12 {
            return Err(err(format!("{} bytes; at least 12 are needed for KDD, key version and SCP", data.len())));
        }
        let mut kdd = [0u8; 10];
        kdd.copy_from_slice(&data[..10]);
        let (key_version, scp) = (data[10], data[11]);
        let mut r = Reader::new(&data[12..]);
        let take = |r: &mut Reader<'_>, n: usize| -> Vec<u8> { r.take(n, "INITIALIZE UPDATE response").map(<[u8]>::to_vec).unwrap_or_default() };
        let mut resp = InitUpdateResponse { kdd, key_version, scp, i: None, sequence_counter: None, card_challenge: vec![], card_cryptogram: vec![] };
        match scp {
            0x01 | 0x02 => {
                if data.len() != 28 {
                    return Err(err(format!("{} bytes; an SCP{scp:02X} response has 28", data.len())));
                }
                if scp == 0x02 {
                    resp.sequence_counter = Some(take(&mut r, 2));
                    resp.card_challenge = take(&mut r, 6);
                } else {
                    resp.card_challenge = take(&mut r, 8);
                }
                resp.card_cryptogram = take(&mut r, 8);
            }
            0x03 => {
                let (n, with_seq) = match data.len() {
                    29 => (8, false),
                    32 => (8, true),
                    45 => (16, false),
                    48 => (16, true),
                    l => return Err(err(format!("{l} bytes; an SCP03 response has 29 or 32 (S8) or 45 or 48 (S16)"))),
                };
                let i = take(&mut r, 1)[0];
                // i b1 announces S16 (Amd D §5.1); a response of the other size is inconsistent.
                if (i & 0x01 == 1) != (n == 16) {
                    return Err(err(format!("{} bytes do not match i={i:02X} ({} mode)", data.len(), if i & 1 == 1 { "S16" } else { "S8" })));
                }
                resp.i = Some(i);
                resp.card_challenge = take(&mut r, n);
                resp.card_cryptogram = take(&mut r, n);
                if with_seq {
                    resp.sequence_counter = Some(take(&mut r, 3));
                }
            }
            s => return Err(err(format!("secure channel protocol {s:02X} is not SCP01, SCP02 or SCP03"))),
        }
        Ok(resp)
    }

    pub fn to_bytes(&self) -> Vec<u8> {
        let mut v = self.kdd.to_vec();
        v.push(self.key_version);
        v.push(self.scp);
        if self.scp == 0x03 {
            v.extend(self.i);
            v.extend_from_slice(&self.card_challenge);
            v.extend_from_slice(&self.card_cryptogram);
            v.extend(self.sequence_counter.iter().flatten());
        } else {
            v.extend(self.sequence_counter.iter().flatten());
            v.extend_from_slice(&self.card_challenge);
            v.extend_from_slice(&self.card_cryptogram);
        }
        v
    }
}

impl Codec for InitUpdateResponse {
    fn encode(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.to_bytes());
    }
    /// Takes the rest of the reader: the response has no length of its own.
    fn read(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        Self::parse(r.take_rest()).map_err(|e| DecodeError::invalid("INITIALIZE UPDATE response", e.to_string()))
    }
}

impl fmt::Display for InitUpdateResponse {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "KDD {} key version {:02X} SCP{:02X}", Hex(&self.kdd), self.key_version, self.scp)?;
        if let Some(i) = self.i {
            write!(f, " i={i:02X}")?;
        }
        if let Some(s) = &self.sequence_counter {
            write!(f, " sequence counter {}", Hex(s))?;
        }
        write!(f, " card challenge {} card cryptogram {}", Hex(&self.card_challenge), Hex(&self.card_cryptogram))
    }
}

/// EXTERNAL AUTHENTICATE: P1 security level, data = host cryptogram, followed by the C-MAC once
/// the secure channel wrapped it (class byte with the secure messaging bit, `84`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExternalAuthenticate {
    pub level: SecurityLevel,
    pub host_cryptogram: Vec<u8>,
    /// The C-MAC, present on a wrapped command.
    pub mac: Option<Vec<u8>>,
    pub framing: Framing,
}

impl ExternalAuthenticate {
    /// The unwrapped command (class `80`); the secure channel sets `84` and appends the MAC.
    pub fn new(level: SecurityLevel, host_cryptogram: &[u8]) -> Self {
        ExternalAuthenticate { level, host_cryptogram: host_cryptogram.to_vec(), mac: None, framing: Framing::GP }
    }

    pub fn to_apdu(&self) -> CommandApdu {
        let mut data = self.host_cryptogram.clone();
        data.extend(self.mac.iter().flatten());
        self.framing.apdu(ins::EXTERNAL_AUTHENTICATE, self.level.0, 0x00, data)
    }

    pub fn from_apdu(apdu: &CommandApdu) -> Result<Self, GpError> {
        const C: &str = "EXTERNAL AUTHENTICATE";
        check_gp(apdu, C, ins::EXTERNAL_AUTHENTICATE)?;
        if apdu.p2 != 0 {
            return Err(GpError::params(C, apdu, "P2 must be 00"));
        }
        let d = &apdu.data;
        let (host_cryptogram, mac) = match (apdu.is_secure_messaging(), d.len()) {
            (true, 16 | 32) => (d[..d.len() / 2].to_vec(), Some(d[d.len() / 2..].to_vec())),
            (false, 8 | 16) => (d.clone(), None),
            (sm, n) => {
                return Err(GpError::invalid(
                    C,
                    format!("{n} data bytes; expected {}", if sm { "cryptogram and MAC of 8+8 or 16+16" } else { "a cryptogram of 8 or 16" }),
                ));
            }
        };
        Ok(ExternalAuthenticate { level: SecurityLevel(apdu.p1), host_cryptogram, mac, framing: Framing::of(apdu) })
    }
}

impl fmt::Display for ExternalAuthenticate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "EXTERNAL AUTHENTICATE level {} host cryptogram {}", self.level, Hex(&self.host_cryptogram))?;
        if let Some(m) = &self.mac {
            write!(f, " C-MAC {}", Hex(m))?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hex::decode;

    #[test]
    fn lengths_are_checked() {
        let ok28 = decode("000074746E6E6E6262620102069FAA2A0591E73367DD78794D04315E").unwrap();
        let r = InitUpdateResponse::parse(&ok28).unwrap();
        assert_eq!(r.sequence_counter.as_deref(), Some(&[0x06, 0x9F][..]));
        assert_eq!(r.to_bytes(), ok28);
        assert!(InitUpdateResponse::parse(&ok28[..27]).is_err());
        let s3 = decode("00000000000000000000300370C40932A6FEFEAEB2E127185170F45FCA000015").unwrap();
        let r = InitUpdateResponse::parse(&s3).unwrap();
        assert_eq!((r.i, r.sequence_counter.as_deref()), (Some(0x70), Some(&[0, 0, 0x15][..])));
        assert_eq!(r.to_bytes(), s3);
        assert!(InitUpdateResponse::parse(&s3[..30]).is_err());
        let mut s16 = s3[..13].to_vec();
        s16[12] = 0x71;
        s16.extend_from_slice(&[0xAA; 32]);
        let r = InitUpdateResponse::parse(&s16).unwrap();
        assert!(r.is_s16());
        assert_eq!(r.to_bytes(), s16);
        s16[12] = 0x70;
        assert!(InitUpdateResponse::parse(&s16).is_err());
        let mut bad_scp = ok28.clone();
        bad_scp[11] = 0x04;
        assert_eq!(InitUpdateResponse::parse(&bad_scp).unwrap_err().code(), "gp.init_update_response");
    }

    #[test]
    fn commands() {
        let iu = InitializeUpdate::new(0x30, &[1; 8]);
        assert_eq!(iu.to_apdu().to_bytes(), decode("8050300008010101010101010100").unwrap());
        assert_eq!(InitializeUpdate::from_apdu(&iu.to_apdu()).unwrap(), iu);
        assert!(InitializeUpdate::from_apdu(&InitializeUpdate::new(0, &[1; 9]).to_apdu()).is_err());
        let ea = ExternalAuthenticate::new(SecurityLevel(0x33), &[2; 16]);
        assert_eq!(ExternalAuthenticate::from_apdu(&ea.to_apdu()).unwrap(), ea);
        let wire = CommandApdu::from_bytes(&decode("848203001059D54D932423D29F6313C970875F8C2F").unwrap()).unwrap();
        let w = ExternalAuthenticate::from_apdu(&wire).unwrap();
        assert_eq!(w.mac.as_deref(), Some(&decode("6313C970875F8C2F").unwrap()[..]));
        assert_eq!(w.to_apdu(), wire);
    }
}
