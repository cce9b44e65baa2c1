//! Native application models. The simulated card runs no Java Card bytecode: a load file is
//! bound by its package AID to a model, and each instance of it is an [`AppModel`] whose state
//! serializes into the card state. Packages without a binding run the [`GenericModel`].
//!
//! See `docs/card-models.md` for how to write and register a model.

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::sync::Arc;
use tsm_gp::gp::store_data::DataStructure;
use tsm_gp::gp::{Aid, Privileges};
use tsm_gp::tlv::{self, Tag};
use tsm_gp::{CommandApdu, ResponseApdu, StatusWord};

/// What an application knows about itself when the card calls it.
#[derive(Debug, Clone)]
pub struct AppContext {
    pub aid: Aid,
    pub elf: Aid,
    pub module: Aid,
    pub privileges: Privileges,
    /// The logical channel of the command.
    pub channel: u8,
    /// Application life cycle state (GPCS Table 11-4).
    pub life_cycle: u8,
}

/// What INSTALL [for install] gives a new instance.
#[derive(Debug, Clone)]
pub struct InstallInfo<'a> {
    pub aid: &'a Aid,
    pub elf: &'a Aid,
    pub module: &'a Aid,
    pub privileges: Privileges,
    /// The application-specific parameters (value of `C9`; empty when absent).
    pub app_params: &'a [u8],
}

/// One STORE DATA block for an application, after the security domain has checked and, when
/// P1 says so, decrypted it.
#[derive(Debug, Clone)]
pub struct StoreDataBlock<'a> {
    pub structure: DataStructure,
    pub last: bool,
    pub block: u8,
    pub data: &'a [u8],
}

/// A native application. Every method answers like an applet would: with a response APDU
/// (or status word), never a panic.
pub trait AppModel: Send {
    /// The application was selected; the answer is the SELECT response (FCI).
    fn select(&mut self, ctx: &AppContext) -> ResponseApdu {
        let mut fci = Vec::new();
        tlv::put(&mut fci, 0x84, ctx.aid.as_bytes());
        let mut out = Vec::new();
        tlv::put(&mut out, 0x6F, &fci);
        ResponseApdu::new(out, StatusWord::SUCCESS)
    }
    /// Another application was selected on the channel, or the card was reset.
    fn deselect(&mut self, _ctx: &AppContext) {}
    /// A command to the selected application (everything but SELECT and MANAGE CHANNEL).
    fn process(&mut self, ctx: &AppContext, apdu: &CommandApdu) -> ResponseApdu;
    /// Personalization data forwarded by its security domain (INSTALL [for personalization]
    /// then STORE DATA).
    fn store_data(&mut self, ctx: &AppContext, block: &StoreDataBlock<'_>) -> StatusWord;
    /// The state to persist (called after every call that may change it).
    fn snapshot(&self) -> serde_json::Value;
    /// Whether the application secures its commands with its security domain's secure channel
    /// (the GP Java Card API `org.globalplatform.SecureChannel`, GPCS 2.3 §10.1.2): when it is
    /// selected, INITIALIZE UPDATE and EXTERNAL AUTHENTICATE (class `80`/`84`) open a session
    /// with the keys of its associated security domain, and the card unwraps every protected
    /// command (C-MAC, C-DEC) before [`AppModel::process`] sees it and protects the response
    /// (R-MAC, R-ENC) as the session's level asks. Default: no.
    fn secure_channel(&self) -> bool {
        false
    }
}

/// Creates instances of one model and restores them from saved states.
pub trait ModelFactory: Send + Sync {
    /// Stable name, stored in the card state.
    fn name(&self) -> &'static str;
    /// A new instance for INSTALL [for install]; an error status word refuses the install
    /// (e.g. `6A80` for parameters the application does not accept).
    fn install(&self, info: &InstallInfo<'_>) -> Result<Box<dyn AppModel>, StatusWord>;
    /// An instance from its saved [`AppModel::snapshot`].
    fn restore(&self, state: &serde_json::Value) -> Result<Box<dyn AppModel>, String>;
}

/// The models a card knows and which package each one serves.
#[derive(Clone)]
pub struct ModelRegistry {
    factories: BTreeMap<&'static str, Arc<dyn ModelFactory>>,
    bindings: Vec<(Aid, &'static str)>,
}

impl Default for ModelRegistry {
    fn default() -> Self {
        Self::new()
    }
}

impl std::fmt::Debug for ModelRegistry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ModelRegistry")
            .field("models", &self.factories.keys().collect::<Vec<_>>())
            .field("bindings", &self.bindings.iter().map(|(a, n)| format!("{a}={n}")).collect::<Vec<_>>())
            .finish()
    }
}

impl ModelRegistry {
    /// The built-in models: the generic model (serving every package nobody bound) and the
    /// [`EchoModel`] (serving no package until bound).
    pub fn new() -> Self {
        let mut r = ModelRegistry { factories: BTreeMap::new(), bindings: Vec::new() };
        r.register(Arc::new(GenericFactory));
        r.register(Arc::new(EchoFactory));
        r
    }
    /// Adds (or replaces) a model.
    pub fn register(&mut self, factory: Arc<dyn ModelFactory>) -> &mut Self {
        self.factories.insert(factory.name(), factory);
        self
    }
    /// Runs instances of the load file `package` on model `name` (registered before).
    pub fn bind(&mut self, package: Aid, name: &str) -> Result<&mut Self, String> {
        let (&n, _) = self.factories.get_key_value(name).ok_or_else(|| format!("no model named {name:?}"))?;
        self.bindings.retain(|(a, _)| *a != package);
        self.bindings.push((package, n));
        Ok(self)
    }
    /// The model for instances of `package`: its binding, else the generic model.
    pub fn for_package(&self, package: &Aid) -> Arc<dyn ModelFactory> {
        let name = self.bindings.iter().find(|(a, _)| a == package).map(|(_, n)| *n).unwrap_or(GenericModel::NAME);
        self.factories.get(name).cloned().unwrap_or_else(|| Arc::new(GenericFactory))
    }
    pub fn by_name(&self, name: &str) -> Option<Arc<dyn ModelFactory>> {
        self.factories.get(name).cloned()
    }
}

// ---------------------------------------------------------------------------------------------
// The generic model

/// The model of any package nobody wrote a model for: SELECT answers `9000` with an FCI
/// (`6F { 84 AID }`); STORE DATA keeps what it receives (DGIs by identifier, BER-TLVs by tag,
/// anything else as raw records), a repeated DGI or tag gets its values concatenated; GET DATA
/// (`CA`/`CB`) with P1-P2 = a tag returns the stored TLV (`tag len value`), with P1-P2 = a DGI
/// identifier the stored DGI value; every other instruction is `6D00`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct GenericModel {
    /// DGI identifier (4 hex digits) → concatenated values (hex).
    #[serde(default)]
    pub dgis: BTreeMap<String, String>,
    /// BER tag (hex) → concatenated values (hex).
    #[serde(default)]
    pub tlvs: BTreeMap<String, String>,
    /// Data stored without structure information, concatenated (hex).
    #[serde(default)]
    pub raw: String,
    /// The application-specific install parameters (hex).
    #[serde(default)]
    pub install_params: String,
}

impl GenericModel {
    pub const NAME: &'static str = "generic";

    fn append(map: &mut BTreeMap<String, String>, key: String, value: &[u8]) {
        map.entry(key).or_default().push_str(&tsm_gp::hex::encode(value));
    }

    fn get(&self, p1: u8, p2: u8) -> Option<Vec<u8>> {
        let tag = if p1 == 0 { p2 as u32 } else { u16::from_be_bytes([p1, p2]) as u32 };
        if let Some(v) = self.tlvs.get(&format!("{tag:X}")) {
            let mut out = Vec::new();
            tlv::put(&mut out, tag, &tsm_gp::hex::decode(v).ok()?);
            return Some(out);
        }
        let dgi = format!("{:04X}", u16::from_be_bytes([p1, p2]));
        self.dgis.get(&dgi).and_then(|v| tsm_gp::hex::decode(v).ok())
    }
}

impl AppModel for GenericModel {
    fn process(&mut self, _ctx: &AppContext, apdu: &CommandApdu) -> ResponseApdu {
        match apdu.ins {
            0xCA | 0xCB => match self.get(apdu.p1, apdu.p2) {
                Some(d) => ResponseApdu::new(d, StatusWord::SUCCESS),
                None => ResponseApdu::status(StatusWord::REFERENCED_DATA_NOT_FOUND),
            },
            _ => ResponseApdu::status(StatusWord::INS_NOT_SUPPORTED),
        }
    }

    fn store_data(&mut self, _ctx: &AppContext, block: &StoreDataBlock<'_>) -> StatusWord {
        match block.structure {
            DataStructure::Dgi => {
                let Ok(dgis) = tlv::parse_dgis(block.data) else { return StatusWord::WRONG_DATA };
                for d in dgis {
                    Self::append(&mut self.dgis, format!("{:04X}", d.id), &d.value);
                }
            }
            DataStructure::BerTlv => {
                let Ok(ts) = tlv::parse_all(block.data) else { return StatusWord::WRONG_DATA };
                for t in ts {
                    let Tag(tag) = t.tag;
                    Self::append(&mut self.tlvs, format!("{tag:X}"), t.value);
                }
            }
            _ => self.raw.push_str(&tsm_gp::hex::encode(block.data)),
        }
        StatusWord::SUCCESS
    }

    fn snapshot(&self) -> serde_json::Value {
        serde_json::to_value(self).unwrap_or(serde_json::Value::Null)
    }
}

struct GenericFactory;

impl ModelFactory for GenericFactory {
    fn name(&self) -> &'static str {
        GenericModel::NAME
    }
    fn install(&self, info: &InstallInfo<'_>) -> Result<Box<dyn AppModel>, StatusWord> {
        Ok(Box::new(GenericModel { install_params: tsm_gp::hex::encode(info.app_params), ..Default::default() }))
    }
    fn restore(&self, state: &serde_json::Value) -> Result<Box<dyn AppModel>, String> {
        let m: GenericModel = serde_json::from_value(state.clone()).map_err(|e| e.to_string())?;
        Ok(Box::new(m))
    }
}

// ---------------------------------------------------------------------------------------------
// The echo model

/// A test application that sends back what it receives, over its security domain's secure
/// channel: INS `40` (any class) answers the command's data field with `9000`; every other
/// instruction is `6D00`. It uses [`AppModel::secure_channel`], so selected it takes INITIALIZE
/// UPDATE and EXTERNAL AUTHENTICATE, and at security level `33` its answers come back R-ENC
/// encrypted and R-MACed: a loopback for testing secure messaging end to end (the kaoh/
/// globalplatform SCP03 "echo" session is such an exchange). No state.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct EchoModel {}

impl EchoModel {
    pub const NAME: &'static str = "echo";
    /// The instruction it echoes.
    pub const INS_ECHO: u8 = 0x40;
}

impl AppModel for EchoModel {
    fn process(&mut self, _ctx: &AppContext, apdu: &CommandApdu) -> ResponseApdu {
        match apdu.ins {
            Self::INS_ECHO => ResponseApdu::new(apdu.data.clone(), StatusWord::SUCCESS),
            _ => ResponseApdu::status(StatusWord::INS_NOT_SUPPORTED),
        }
    }
    fn store_data(&mut self, _ctx: &AppContext, _block: &StoreDataBlock<'_>) -> StatusWord {
        StatusWord::SUCCESS
    }
    fn snapshot(&self) -> serde_json::Value {
        serde_json::json!({})
    }
    fn secure_channel(&self) -> bool {
        true
    }
}

struct EchoFactory;

impl ModelFactory for EchoFactory {
    fn name(&self) -> &'static str {
        EchoModel::NAME
    }
    fn install(&self, _info: &InstallInfo<'_>) -> Result<Box<dyn AppModel>, StatusWord> {
        Ok(Box::new(EchoModel {}))
    }
    fn restore(&self, _state: &serde_json::Value) -> Result<Box<dyn AppModel>, String> {
        Ok(Box::new(EchoModel {}))
    }
}
