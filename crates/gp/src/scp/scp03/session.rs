//! The session state every SCP03 role shares (keys, MAC chaining value, encryption counter,
//! level) and the one implementation of C-MAC, C-DEC, R-MAC and R-ENC that host, card and
//! monitor all call.

use super::{MAX_WIRE_DATA, SessionKeys};
use crate::apdu::CommandApdu;
use crate::apdu::ResponseApdu;
use crate::crypto::{SymmetricKey, cbc_decrypt, ct_eq, pad80, unpad80};
use crate::hex::encode as hex;
use crate::scp::{ChannelOptions, ScpError, SecurityLevel};
use std::sync::Arc;

pub(super) const BLOCK: usize = 16;

/// Chaining value and encryption counter a response is protected with: those of the command it
/// answers (Amd D §6.2.5, §6.2.7). They are also where the session stands after that command,
/// so a host can continue from it ([`Scp03Host::rewind`](super::Scp03Host::rewind)). Not
/// secret: the chaining value is a MAC and the counter counts commands; serde writes the
/// chaining value as hex.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ResponseContext {
    #[serde(with = "crate::scp::hex_array")]
    pub(super) chaining: [u8; 16],
    /// As a decimal string: serde's buffered formats (internally tagged enums) have no `u128`.
    #[serde(with = "counter_str")]
    pub(super) counter: u128,
}

mod counter_str {
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(v: &u128, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(v)
    }
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<u128, D::Error> {
        String::deserialize(d)?.parse().map_err(serde::de::Error::custom)
    }
}

impl ResponseContext {
    /// The full 16-byte C-MAC of the command (the MAC chaining value after it).
    pub fn chaining_value(&self) -> [u8; 16] {
        self.chaining
    }
    /// The encryption counter of the command.
    pub fn encryption_counter(&self) -> u128 {
        self.counter
    }
}

/// Result of checking the C-MAC of a received command against one chaining value.
pub(super) struct MacCheck {
    pub ok: bool,
    /// Full CMAC over the received command: the next chaining value if the MAC is accepted.
    pub computed: [u8; 16],
    /// The MAC bytes found at the end of the data field.
    pub received: Vec<u8>,
}

/// Key material and counters of one open (or opening) SCP03 session.
pub(super) struct Session {
    pub keys: SessionKeys,
    /// Static DEK: SCP03 has no session DEK; key data is encrypted under the static one.
    pub dek: Arc<dyn SymmetricKey>,
    pub chaining: [u8; 16],
    pub counter: u128,
    pub level: SecurityLevel,
    pub s16: bool,
    pub i: u8,
    pub options: ChannelOptions,
}

/// The class byte with the secure messaging indication set (ISO 7816-4 §5.4.1: b3 for the first
/// interindustry classes, b6 for the further ones).
pub(super) fn sm_cla(cla: u8) -> u8 {
    if cla & 0x40 == 0 { cla | 0x04 } else { cla | 0x20 }
}

/// The class byte with the secure messaging indication cleared.
pub(super) fn plain_cla(cla: u8) -> u8 {
    if cla & 0x40 == 0 { cla & !0x04 } else { cla & !0x20 }
}

/// The class byte that enters the C-MAC: the wire class without the logical channel number
/// (Amd D §6.2.4), in its first-interindustry form, so `84` for a GP command on any channel
/// (as GlobalPlatformPro, which always MACs `84`). The MAC is then independent of the channel;
/// the card binds a session to its channel separately.
pub(super) fn mac_cla(wire_cla: u8) -> u8 {
    if wire_cla & 0x40 == 0 { wire_cla & !0x03 } else { (wire_cla & 0x90) | 0x04 }
}

/// Lc as it is encoded on the wire, which is what the C-MAC covers: one byte, or `00 hi lo` for
/// extended-length APDUs.
fn lc_bytes(len: usize, extended: bool) -> Vec<u8> {
    if extended { vec![0, (len >> 8) as u8, len as u8] } else { vec![len as u8] }
}

/// What kind of command `Session::wrap` protects.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(super) enum Wrap {
    /// EXTERNAL AUTHENTICATE: C-MAC only whatever the level, and the encryption counter does not
    /// move (Amd D §7.1.2: the counter starts at 1 with the first command after it).
    ExternalAuthenticate,
    Command,
}

impl Session {
    pub fn mac_len(&self) -> usize {
        if self.s16 { 16 } else { 8 }
    }

    pub fn context(&self) -> ResponseContext {
        ResponseContext { chaining: self.chaining, counter: self.counter }
    }

    /// Advances the encryption counter for a command whose data field (before the MAC) is
    /// `body_len` bytes. Amd D §6.2.6 increments it for every command; some cards only for
    /// commands that carry data (`scp03_counter_only_with_data`).
    pub fn advance_counter(&mut self, body_len: usize) {
        if !self.options.scp03_counter_only_with_data || body_len > 0 {
            self.counter = self.counter.wrapping_add(1);
        }
    }

    fn icv(&self, counter: u128, response: bool) -> Result<Vec<u8>, ScpError> {
        let mut block = counter.to_be_bytes();
        if response {
            // Amd D §6.2.7: the R-ENC ICV is the counter with its first byte set to 80.
            block[0] = 0x80;
        }
        Ok(self.keys.enc.encrypt_ecb(&block)?)
    }

    /// C-DEC (Amd D §6.2.6): pad 80 00.., AES-CBC under S-ENC, ICV = E(S-ENC, counter).
    pub fn encrypt_command_data(&self, data: &[u8]) -> Result<Vec<u8>, ScpError> {
        let icv = self.icv(self.counter, false)?;
        Ok(self.keys.enc.encrypt_cbc(&icv, &pad80(data, BLOCK))?)
    }

    pub fn decrypt_command_data(&self, enc: &[u8], counter: u128) -> Result<Vec<u8>, ScpError> {
        self.decrypt(enc, counter, false, "command")
    }

    fn decrypt(&self, enc: &[u8], counter: u128, response: bool, what: &str) -> Result<Vec<u8>, ScpError> {
        if !enc.len().is_multiple_of(BLOCK) {
            let detail = format!("encrypted {what} data of {} bytes is not a multiple of {BLOCK}", enc.len());
            return Err(if response { ScpError::BadResponse(detail) } else { ScpError::BadCommand(detail) });
        }
        let icv = self.icv(counter, response)?;
        let padded = cbc_decrypt(&self.keys.enc, &icv, enc)?;
        strip_padding(&padded)
    }

    /// Full CMAC over `chaining ‖ class (no channel) ‖ INS P1 P2 ‖ Lc ‖ data` (Amd D §6.2.4).
    fn command_mac(&self, chaining: &[u8; 16], wire: &CommandApdu, body: &[u8], extended: bool) -> Result<[u8; 16], ScpError> {
        let lc = body.len() + self.mac_len();
        let mut input = Vec::with_capacity(16 + 7 + body.len());
        input.extend_from_slice(chaining);
        input.extend_from_slice(&[mac_cla(wire.cla), wire.ins, wire.p1, wire.p2]);
        input.extend_from_slice(&lc_bytes(lc, extended));
        input.extend_from_slice(body);
        Ok(self.keys.mac.cmac(&input)?)
    }

    /// Host side: protects a plain command as the level requires.
    pub fn wrap(&mut self, plain: &CommandApdu, kind: Wrap) -> Result<CommandApdu, ScpError> {
        if plain.is_secure_messaging() {
            return Err(ScpError::BadCommand(format!(
                "class byte {:02X} already indicates secure messaging; pass the plain command",
                plain.cla
            )));
        }
        if kind == Wrap::Command && !self.level.c_mac() {
            // Level 00 (AUTHENTICATED): commands travel unprotected.
            return Ok(plain.clone());
        }
        let encrypt = kind == Wrap::Command
            && self.level.c_dec()
            && (!plain.data.is_empty() || self.options.encrypt_empty_data);
        let body_len = if encrypt { (plain.data.len() / BLOCK + 1) * BLOCK } else { plain.data.len() };
        if kind == Wrap::Command {
            self.advance_counter(body_len);
        }
        let body = if encrypt { self.encrypt_command_data(&plain.data)? } else { plain.data.clone() };
        let total = body.len() + self.mac_len();
        if total > MAX_WIRE_DATA {
            return Err(ScpError::BadCommand(format!(
                "{} bytes of data become {total} bytes once protected, more than an APDU carries",
                plain.data.len()
            )));
        }
        let le = if self.options.drop_le { None } else { plain.le };
        let extended = plain.extended || total > 255 || le.is_some_and(|l| l > 256);
        let mut wire = CommandApdu { cla: sm_cla(plain.cla), ins: plain.ins, p1: plain.p1, p2: plain.p2, data: Vec::new(), le, extended };
        let mac = self.command_mac(&self.chaining, &wire, &body, extended)?;
        self.chaining = mac;
        wire.data = body;
        wire.data.extend_from_slice(&mac[..self.mac_len()]);
        Ok(wire)
    }

    /// Checks the C-MAC of a received secure messaging command against `chaining`, without
    /// changing any state.
    pub fn check_mac(&self, wire: &CommandApdu, chaining: &[u8; 16]) -> Result<MacCheck, ScpError> {
        let n = self.mac_len();
        if wire.data.len() < n {
            return Err(ScpError::CMac {
                expected: format!("a {n}-byte C-MAC"),
                received: format!("{} byte(s) of data", wire.data.len()),
            });
        }
        let (body, received) = wire.data.split_at(wire.data.len() - n);
        let extended = wire.extended || wire.needs_extended();
        let computed = self.command_mac(chaining, wire, body, extended)?;
        Ok(MacCheck { ok: ct_eq(&computed[..n], received), computed, received: received.to_vec() })
    }

    pub fn cmac_error(&self, check: &MacCheck) -> ScpError {
        ScpError::CMac { expected: hex(&check.computed[..self.mac_len()]), received: hex(&check.received) }
    }

    /// The plain command once the MAC is stripped and the data (`body`) decrypted.
    pub fn plain_command(wire: &CommandApdu, data: Vec<u8>) -> CommandApdu {
        let mut c = CommandApdu { cla: plain_cla(wire.cla), ins: wire.ins, p1: wire.p1, p2: wire.p2, data, le: wire.le, extended: false };
        c.extended = c.needs_extended();
        c
    }

    /// Card side: verifies the C-MAC, advances the counter and decrypts. On error the state is
    /// unchanged (the card closes the session anyway).
    pub fn unwrap_command(&mut self, wire: &CommandApdu) -> Result<CommandApdu, ScpError> {
        if !wire.is_secure_messaging() {
            if self.level.c_mac() {
                return Err(missing_cmac());
            }
            return Ok(wire.clone());
        }
        let check = self.check_mac(wire, &self.chaining)?;
        if !check.ok {
            return Err(self.cmac_error(&check));
        }
        let body = &wire.data[..wire.data.len() - self.mac_len()];
        let mut counter = self.counter;
        if !self.options.scp03_counter_only_with_data || !body.is_empty() {
            counter = counter.wrapping_add(1);
        }
        // Amd D §6.2.6: with C-DEC an empty data field is sent as is, but hosts that encrypt a
        // lone padding block are common; both decode to "no data".
        let data = if self.level.c_dec() && !body.is_empty() { self.decrypt_command_data(body, counter)? } else { body.to_vec() };
        self.chaining = check.computed;
        self.counter = counter;
        Ok(Self::plain_command(wire, data))
    }

    /// Card side: R-ENC then R-MAC as the level requires (Amd D §6.2.5, §6.2.7).
    pub fn wrap_response(&self, plain: &ResponseApdu) -> Result<ResponseApdu, ScpError> {
        if !self.level.r_mac() {
            return Ok(plain.clone());
        }
        if plain.sw.is_error() {
            // Amd D §6.2.5: no R-MAC (and no encryption) on a response with an error status
            // word; such responses carry no data (ISO 7816-4 §5.1.3).
            return Ok(ResponseApdu::status(plain.sw));
        }
        let mut data = if self.level.r_enc() && !plain.data.is_empty() {
            let icv = self.icv(self.counter, true)?;
            self.keys.enc.encrypt_cbc(&icv, &pad80(&plain.data, BLOCK))?
        } else {
            plain.data.clone()
        };
        let mac = self.response_mac(&self.context(), &data, plain.sw.to_bytes())?;
        data.extend_from_slice(&mac[..self.mac_len()]);
        Ok(ResponseApdu::new(data, plain.sw))
    }

    fn response_mac(&self, ctx: &ResponseContext, data: &[u8], sw: [u8; 2]) -> Result<[u8; 16], ScpError> {
        let mut input = Vec::with_capacity(18 + data.len());
        input.extend_from_slice(&ctx.chaining);
        input.extend_from_slice(data);
        input.extend_from_slice(&sw);
        Ok(self.keys.rmac.cmac(&input)?)
    }

    /// Host and monitor side: verifies the R-MAC and decrypts R-ENC data of a response to the
    /// command whose context is `ctx`.
    pub fn unwrap_response(&self, ctx: &ResponseContext, wire: &ResponseApdu) -> Result<ResponseApdu, ScpError> {
        if !self.level.r_mac() {
            return Ok(wire.clone());
        }
        if wire.sw.is_error() && wire.data.is_empty() {
            // Amd D §6.2.5: error status words come without R-MAC. A card that MACs them anyway
            // sends data, which is checked below.
            return Ok(wire.clone());
        }
        let n = self.mac_len();
        if wire.data.len() < n {
            return Err(ScpError::RMac {
                expected: format!("a {n}-byte R-MAC"),
                received: format!("{} byte(s) of data with {:?}", wire.data.len(), wire.sw),
            });
        }
        let (body, received) = wire.data.split_at(wire.data.len() - n);
        let computed = self.response_mac(ctx, body, wire.sw.to_bytes())?;
        if !ct_eq(&computed[..n], received) {
            return Err(ScpError::RMac { expected: hex(&computed[..n]), received: hex(received) });
        }
        let data = if self.level.r_enc() && !body.is_empty() { self.decrypt(body, ctx.counter, true, "response")? } else { body.to_vec() };
        Ok(ResponseApdu::new(data, wire.sw))
    }

    /// AES-CBC with a zero ICV under the static DEK (key values in PUT KEY / STORE DATA).
    pub fn encrypt_sensitive(&self, data: &[u8]) -> Result<Vec<u8>, ScpError> {
        let iv = vec![0u8; self.dek.alg().block_len()];
        Ok(self.dek.encrypt_cbc(&iv, data)?)
    }
}

/// The error for a plain command received while the level requires C-MAC.
pub(super) fn missing_cmac() -> ScpError {
    ScpError::CMac { expected: "a C-MAC".into(), received: "a command without the secure messaging class bit".into() }
}

/// Removes ISO 9797-1 method 2 padding. Padding longer than one block is accepted: the
/// Samsung OpenSCP card emulation pads R-ENC data to 32-byte multiples (11 bytes → 32), and the
/// MAC has already authenticated the data.
fn strip_padding(padded: &[u8]) -> Result<Vec<u8>, ScpError> {
    unpad80(padded).map(<[u8]>::to_vec).map_err(|_| ScpError::BadPadding)
}
