//! The card side of the `r_enc_min_padded_len` quirk: SCP03 R-ENC with padding longer than the
//! one block Amd D §6.2.7 asks for. The core's card channel pads minimally; this wrapper
//! protects the responses that the quirk makes longer itself (same ICV, encryption and R-MAC as
//! the core, only the padding differs) and hands everything else to the core's channel.

use tsm_gp::apdu::{CommandApdu, ResponseApdu};
use tsm_gp::crypto::kdf::{constant, scp03_kdf};
use tsm_gp::crypto::{SecretKey, SymmetricKey, pad80};
use tsm_gp::scp::scp03::card::Scp03Card;
use tsm_gp::scp::{CardChannel, Scp, ScpError, SecurityLevel, StaticKeys};
use zeroize::Zeroizing;

const BLOCK: usize = 16;

/// S-ENC and S-RMAC of a session (Amd D §6.2.1), derived again on the card side for the
/// wrapper; context = host challenge ‖ card challenge.
pub(crate) struct REncKeys {
    enc: SecretKey,
    rmac: SecretKey,
}

impl REncKeys {
    pub(crate) fn derive(keys: &StaticKeys, host_challenge: &[u8], card_challenge: &[u8]) -> Result<Self, ScpError> {
        let ctx = [host_challenge, card_challenge].concat();
        let derive = |k: &dyn SymmetricKey, c: u8| -> Result<SecretKey, ScpError> {
            let alg = k.alg();
            let bytes = scp03_kdf(k, c, &ctx, alg.key_len())?;
            Ok(SecretKey::new(alg, &bytes)?)
        };
        Ok(REncKeys { enc: derive(&*keys.enc, constant::S_ENC)?, rmac: derive(&*keys.mac, constant::S_RMAC)? })
    }
}

/// An SCP03 card channel whose R-ENC pads response data to at least `min_len` bytes.
pub(crate) struct PaddedREnc {
    inner: Scp03Card,
    keys: REncKeys,
    min_len: usize,
}

impl PaddedREnc {
    /// `min_len` is rounded up to whole blocks.
    pub(crate) fn new(inner: Scp03Card, keys: REncKeys, min_len: u16) -> Self {
        PaddedREnc { inner, keys, min_len: (min_len as usize).div_ceil(BLOCK) * BLOCK }
    }

    fn mac_len(&self) -> usize {
        match self.inner.scp() {
            Scp::Scp03 { i } if i & tsm_gp::scp::scp03::i_bits::S16 != 0 => 16,
            _ => 8,
        }
    }
}

impl CardChannel for PaddedREnc {
    fn scp(&self) -> Scp {
        self.inner.scp()
    }
    fn level(&self) -> SecurityLevel {
        self.inner.level()
    }
    fn unwrap_command(&mut self, cmd: &CommandApdu) -> Result<CommandApdu, ScpError> {
        self.inner.unwrap_command(cmd)
    }
    fn wrap_response(&mut self, resp: ResponseApdu) -> Result<ResponseApdu, ScpError> {
        let level = self.inner.level();
        let minimal = (resp.data.len() / BLOCK + 1) * BLOCK;
        if !self.inner.is_open()
            || !level.r_mac()
            || !level.r_enc()
            || resp.sw.is_error()
            || resp.data.is_empty()
            || minimal >= self.min_len
        {
            return self.inner.wrap_response(resp);
        }
        // Amd D §6.2.7: ICV = E(S-ENC, 80 ‖ counter of the command without its first byte).
        let mut block = self.inner.encryption_counter().to_be_bytes();
        block[0] = 0x80;
        let icv = self.keys.enc.encrypt_ecb(&block)?;
        let mut padded = Zeroizing::new(pad80(&resp.data, BLOCK));
        padded.resize(self.min_len, 0);
        let mut data = self.keys.enc.encrypt_cbc(&icv, &padded)?;
        // Amd D §6.2.5: R-MAC over the command's MAC chaining value ‖ data ‖ SW.
        let mut input = self.inner.mac_chaining_value().to_vec();
        input.extend_from_slice(&data);
        input.extend_from_slice(&resp.sw.to_bytes());
        let mac = self.keys.rmac.cmac(&input)?;
        data.extend_from_slice(&mac[..self.mac_len()]);
        Ok(ResponseApdu::new(data, resp.sw))
    }
    fn decrypt_sensitive(&self, data: &[u8]) -> Result<Zeroizing<Vec<u8>>, ScpError> {
        self.inner.decrypt_sensitive(data)
    }
}
