//! `tsm gp`: GlobalPlatform card management through a reader or a simulated card.

use crate::cardfile::pick_reader;
use crate::cmd::keys::{key_bytes, key_triplet};
use crate::error::{CliError, read_file};
use clap::{Args, Subcommand};
use serde_json::{Value, json};
use std::io::IsTerminal;
use tsm_gp::cap::{CapFile, HashAlgorithm};
use tsm_gp::crypto::SecretKey;
use tsm_gp::crypto::diversify::Diversification;
use tsm_gp::gp::{Aid, InstallParams, Privileges, RegistryEntry};
use tsm_gp::hex;
use tsm_gp::scp::SecurityLevel;
use tsm_gp::session::{CardContent, CardKeys, GpSession, InstallOptions, KeySet, OpenOptions, Secure, SessionConfig, SessionError};
use tsm_gp::transport::{Transport, TransportError};

/// The GP test key (GPCS 2.3 test key set `40..4F`), the default of every development card.
const GP_TEST_KEY: &str = "404142434445464748494A4B4C4D4E4F";

#[derive(Subcommand, Debug)]
pub enum GpCmd {
    /// What a card says about itself without keys: ATR, the issuer security domain, CPLC,
    /// Card Recognition Data (GP version, secure channels), key information, sequence
    /// counter, free memory.
    ///
    /// Examples:
    ///   tsm gp info
    ///   tsm gp info --reader "Gemalto" --json
    ///   tsm gp info --card-state card.json --card-key env:CARD_KEY
    #[command(verbatim_doc_comment)]
    Info(InfoArgs),
    /// List the card's registry (GET STATUS): issuer security domain, supplementary security
    /// domains, applications, load files and their modules.
    ///
    /// Opens a secure channel with the security domain's keys (default: the GP test key).
    ///
    /// Examples:
    ///   tsm gp list
    ///   tsm gp list --keys env:CARD_KEY --kvn 30 --json
    ///   tsm gp list --sd A000000151535041 --keys enc=HEX,mac=HEX,dek=HEX
    ///   tsm gp list --card-state card.json --card-key env:CARD_KEY     (a simulated card)
    #[command(verbatim_doc_comment)]
    List(ListArgs),
    /// Load a CAP file and install its applets (INSTALL [for load], LOAD, INSTALL [for
    /// install and make selectable]).
    ///
    /// A progress bar on stderr follows the LOAD blocks. Without --applet every applet of the
    /// CAP file is installed, each under its own AID unless --instance names one.
    ///
    /// Examples:
    ///   tsm gp install hello.cap
    ///   tsm gp install wallet.cap --applet D276000085010101 --instance D27600008501010101 \
    ///       --privileges card-reset --install-params 0102
    ///   tsm gp install --load-only library.cap
    ///   tsm gp install app.cap --sd A000000151535041 --keys env:SSD_KEY
    #[command(verbatim_doc_comment)]
    Install(InstallArgs),
    /// Delete an application, a security domain or a load file (DELETE).
    ///
    /// Examples:
    ///   tsm gp delete D0D1D2D3D4D50101
    ///   tsm gp delete --related D0D1D2D3D4D501     (the load file and its applications)
    #[command(verbatim_doc_comment)]
    Delete(DeleteArgs),
    /// Add or replace a key set of the security domain (PUT KEY); the card's key check values
    /// are verified.
    ///
    /// The new keys take the algorithm of the secure channel: 3DES over SCP02, AES over SCP03.
    ///
    /// Examples:
    ///   tsm gp put-key --new-keys env:NEW_KEY --new-kvn 30
    ///   tsm gp put-key --new-keys enc=HEX,mac=HEX,dek=HEX --new-kvn 31 --replace 30 --kvn 30 --keys env:OLD_KEY
    #[command(verbatim_doc_comment)]
    PutKey(PutKeyArgs),
    /// Lock an application or security domain (SET STATUS): it can no longer be selected.
    ///
    /// Example:
    ///   tsm gp lock D0D1D2D3D4D50101
    #[command(verbatim_doc_comment)]
    Lock(AidArgs),
    /// Unlock an application or security domain locked with `tsm gp lock`.
    ///
    /// Example:
    ///   tsm gp unlock D0D1D2D3D4D50101
    #[command(verbatim_doc_comment)]
    Unlock(AidArgs),
}

/// Which card.
#[derive(Args, Debug, Clone)]
pub struct CardArgs {
    /// PC/SC reader: its exact name or a unique part of it. Default: the first reader with a
    /// card (see `tsm card list-readers`).
    #[arg(long, env = "TSM_READER")]
    reader: Option<String>,
    /// A simulated card's state file instead of a reader: the card runs inside this command
    /// and the file is written back afterwards (also after a failure: a failed
    /// authentication counts). Made by `tsm card new`.
    #[arg(long, value_name = "FILE", conflicts_with = "reader")]
    card_state: Option<std::path::PathBuf>,
    /// Storage key of the --card-state file (32 bytes: HEX, env:VAR or file:PATH). Default:
    /// the key file STATE.key next to it, as `tsm card new` writes it.
    #[arg(long, env = "TSM_CARD_KEY", hide_env_values = true)]
    card_key: Option<String>,
    /// Print every APDU on stderr as "=> command" / "<= response" lines (a log `tsm trace
    /// decode` verifies).
    #[arg(long, short)]
    verbose: bool,
}

/// How to authenticate.
#[derive(Args, Debug, Clone)]
pub struct KeyArgs {
    /// Static keys of the security domain: one key for ENC, MAC and DEK, or
    /// enc=HEX,mac=HEX,dek=HEX; each value may be env:VARIABLE or file:PATH (better than hex
    /// on the command line). Default: the GP test key 404142434445464748494A4B4C4D4E4F.
    #[arg(long, env = "TSM_KEYS", hide_env_values = true)]
    keys: Option<String>,
    /// Key version number to authenticate with (hex); 00 lets the card take its default set.
    #[arg(long, value_parser = parse_u8_hex, default_value = "00")]
    kvn: u8,
    /// Security level: hex (01, 03, 11, 13, 33) or names joined by "+" (c-mac, c-dec, r-mac,
    /// r-enc). Default: c-mac+c-dec+r-mac on SCP03 cards that offer R-MAC, else c-mac+c-dec.
    #[arg(long, value_parser = parse_level)]
    level: Option<SecurityLevel>,
    /// Require this secure channel protocol: 02 or 03. Default: what the card answers.
    #[arg(long, value_parser = parse_scp)]
    scp: Option<u8>,
    /// The card's "i" parameter (hex), e.g. 15 or 55 for SCP02, whose answer does not carry
    /// it. Default: from the card's recognition data, else 55.
    #[arg(long = "i", value_parser = parse_u8_hex)]
    i: Option<u8>,
    /// SCP03 S16 mode (16-byte challenges and MACs).
    #[arg(long)]
    s16: bool,
    /// Issuer master key (HEX, env:VAR or file:PATH): the card keys are diversified with the
    /// KDD from the card's INITIALIZE UPDATE answer. Needs --diversify.
    #[arg(long, requires = "diversify", conflicts_with = "keys")]
    master: Option<String>,
    /// Diversification method for --master: emv, visa2 or kdf3.
    #[arg(long, requires = "master")]
    diversify: Option<Diversification>,
    /// Security domain to work through (selected, then authenticated with these keys), hex
    /// AID. Default: the issuer security domain.
    #[arg(long)]
    sd: Option<Aid>,
}

#[derive(Args, Debug)]
pub struct InfoArgs {
    #[command(flatten)]
    card: CardArgs,
    /// Security domain to select (hex AID). Default: the issuer security domain.
    #[arg(long)]
    sd: Option<Aid>,
    /// Machine-readable output.
    #[arg(long)]
    json: bool,
}

#[derive(Args, Debug)]
pub struct ListArgs {
    #[command(flatten)]
    card: CardArgs,
    #[command(flatten)]
    keys: KeyArgs,
    /// Machine-readable output.
    #[arg(long)]
    json: bool,
}

#[derive(Args, Debug)]
pub struct InstallArgs {
    /// The CAP file (.cap or .ijc).
    file: std::path::PathBuf,
    #[command(flatten)]
    card: CardArgs,
    #[command(flatten)]
    keys: KeyArgs,
    /// Application-specific install parameters: the value of tag C9, hex (GPCS 2.3
    /// §11.5.2.3.7). Default: none (C9 00).
    #[arg(long, value_name = "HEX", conflicts_with = "install_params_raw")]
    install_params: Option<String>,
    /// The whole install parameter field, hex (C9 and EF templates), sent as is.
    #[arg(long, value_name = "HEX")]
    install_params_raw: Option<String>,
    /// Privileges of the new instances: names separated by commas (card-reset, cvm,
    /// card-lock, card-terminate, global-delete, ...), or hex (1 or 3 bytes).
    #[arg(long, value_parser = parse_privileges, default_value = "none")]
    privileges: Privileges,
    /// The applet (module AID, hex) to install. Default: every applet of the CAP file.
    #[arg(long)]
    applet: Option<Aid>,
    /// Instance AID (hex), with one applet. Default: the module AID.
    #[arg(long)]
    instance: Option<Aid>,
    /// Only INSTALL [for load] and LOAD (libraries, or install later).
    #[arg(long, conflicts_with_all = ["applet", "instance", "install_params", "install_params_raw"])]
    load_only: bool,
    /// LOAD block size in bytes. Default: the largest that fits a short APDU.
    #[arg(long)]
    block_size: Option<usize>,
    /// Include the Descriptor component in the load file.
    #[arg(long)]
    include_descriptor: bool,
    /// Send the load file hash in INSTALL [for load]: sha1 or sha256 (cards with DAP need it).
    #[arg(long, value_parser = parse_hash)]
    hash: Option<HashAlgorithm>,
}

#[derive(Args, Debug)]
pub struct DeleteArgs {
    /// AID (hex) of the application, security domain or load file.
    aid: Aid,
    /// Also delete what depends on it (a load file's applications).
    #[arg(long)]
    related: bool,
    #[command(flatten)]
    card: CardArgs,
    #[command(flatten)]
    keys: KeyArgs,
}

#[derive(Args, Debug)]
pub struct PutKeyArgs {
    /// The new keys: one key for ENC, MAC and DEK, or enc=HEX,mac=HEX,dek=HEX (each HEX,
    /// env:VAR or file:PATH).
    #[arg(long)]
    new_keys: String,
    /// Version number of the new key set (hex, 01..7F).
    #[arg(long, value_parser = parse_u8_hex)]
    new_kvn: u8,
    /// Replace this key set version (hex). Default: add a key set.
    #[arg(long, value_parser = parse_u8_hex)]
    replace: Option<u8>,
    #[command(flatten)]
    card: CardArgs,
    #[command(flatten)]
    keys: KeyArgs,
}

#[derive(Args, Debug)]
pub struct AidArgs {
    /// AID (hex) of the application or security domain.
    aid: Aid,
    #[command(flatten)]
    card: CardArgs,
    #[command(flatten)]
    keys: KeyArgs,
}

// ---------------------------------------------------------------------------------------------
// Argument parsers

fn parse_u8_hex(s: &str) -> Result<u8, String> {
    let t = s.trim().trim_start_matches("0x");
    if t.is_empty() || t.len() > 2 {
        return Err(format!("{s:?} is not one hex byte (e.g. 30)"));
    }
    u8::from_str_radix(t, 16).map_err(|_| format!("{s:?} is not one hex byte (e.g. 30)"))
}

fn parse_scp(s: &str) -> Result<u8, String> {
    match s.trim().to_ascii_lowercase().trim_start_matches("scp") {
        "02" | "2" => Ok(0x02),
        "03" | "3" => Ok(0x03),
        _ => Err(format!("{s:?}: the protocol is 02 or 03")),
    }
}

/// A security level: two hex digits, or names joined by `+` or `,`.
pub fn parse_level(s: &str) -> Result<SecurityLevel, String> {
    let t = s.trim();
    let level = if t.len() == 2 && t.chars().all(|c| c.is_ascii_hexdigit()) {
        SecurityLevel(u8::from_str_radix(t, 16).map_err(|e| e.to_string())?)
    } else {
        let mut v = 0u8;
        for part in t.split(['+', ',']).map(|p| p.trim().to_ascii_lowercase().replace('_', "-")) {
            v |= match part.as_str() {
                "c-mac" | "cmac" | "mac" => 0x01,
                "c-dec" | "cdec" | "c-enc" | "cenc" | "enc" => 0x02,
                "r-mac" | "rmac" => 0x10,
                "r-enc" | "renc" => 0x20,
                "none" | "auth" | "authenticated" => 0x00,
                other => return Err(format!("unknown security level part {other:?} (c-mac, c-dec, r-mac, r-enc, or hex such as 33)")),
            };
        }
        SecurityLevel(v)
    };
    level.validate().map_err(|e| format!("{e} (C-DEC needs C-MAC, R-ENC needs R-MAC and C-DEC)"))?;
    Ok(level)
}

fn parse_privileges(s: &str) -> Result<Privileges, String> {
    let t = s.trim();
    if (t.len() == 2 || t.len() == 6) && t.chars().all(|c| c.is_ascii_hexdigit()) {
        return Privileges::from_bytes(&hex::decode(t).map_err(|e| e.to_string())?).map_err(|e| e.to_string());
    }
    t.parse::<Privileges>().map_err(|e| e.to_string())
}

fn parse_hash(s: &str) -> Result<HashAlgorithm, String> {
    match s.to_ascii_lowercase().replace('-', "").as_str() {
        "sha1" => Ok(HashAlgorithm::Sha1),
        "sha256" => Ok(HashAlgorithm::Sha256),
        _ => Err(format!("{s:?}: sha1 or sha256")),
    }
}

impl KeyArgs {
    fn card_keys(&self) -> Result<CardKeys, CliError> {
        if let (Some(m), Some(method)) = (&self.master, self.diversify) {
            let bytes = key_bytes(m)?;
            let master = match method {
                Diversification::Kdf3 => SecretKey::aes(&bytes),
                _ => SecretKey::des3(&bytes),
            }
            .map_err(|e| CliError::new("input.key", format!("master key: {e}")))?;
            return Ok(CardKeys::diversified(master, method, self.kvn));
        }
        let [enc, mac, dek] = key_triplet(self.keys.as_deref().unwrap_or(GP_TEST_KEY))?;
        Ok(CardKeys::bytes(&enc, &mac, &dek, self.kvn))
    }

    fn open_options(&self) -> OpenOptions {
        OpenOptions { scp: self.scp, i: self.i, s16: self.s16, ..Default::default() }
    }
}

// ---------------------------------------------------------------------------------------------
// Errors

fn session_error(e: SessionError) -> CliError {
    let code = e.code().to_string();
    let mut message = e.to_string();
    match e.status_word().map(|sw| sw.0) {
        Some(0x6985) if message.starts_with("DELETE") => message.push_str(" (does something depend on it? see --related)"),
        Some(0x6A88) if message.starts_with("INITIALIZE UPDATE") => message.push_str(" (no key set with that version: check --kvn)"),
        Some(0x6983) => message.push_str(" (the key set is blocked after too many failed authentications)"),
        _ => {}
    }
    if code == "scp.card_cryptogram" {
        message.push_str("; EXTERNAL AUTHENTICATE was not sent, so the card counted no failure");
    }
    match e {
        SessionError::InvalidArgument(_) => CliError::new(code, message),
        _ => CliError::failed(code, message),
    }
}

fn pcsc_error(e: tsm_pcsc::PcscError) -> CliError {
    CliError::failed(e.code(), e.to_string())
}

// ---------------------------------------------------------------------------------------------
// Card access

/// Prints each exchange on stderr.
struct Logged<'a> {
    inner: &'a mut dyn Transport,
    verbose: bool,
}

impl Transport for Logged<'_> {
    fn transmit(&mut self, apdu: &[u8]) -> Result<Vec<u8>, TransportError> {
        if self.verbose {
            eprintln!("=> {}", hex::encode(apdu));
        }
        let r = self.inner.transmit(apdu);
        if self.verbose {
            match &r {
                Ok(resp) => eprintln!("<= {}", hex::encode(resp)),
                Err(e) => eprintln!("<= ({e})"),
            }
        }
        r
    }
}

/// What `with_card` reports besides the transport.
struct CardMeta {
    reader: String,
    atr: Vec<u8>,
    config: SessionConfig,
}

/// Runs `f` on a simulated card loaded from its state file, then saves the state.
fn with_sim_card<R>(
    card: &CardArgs,
    path: &std::path::Path,
    f: impl FnOnce(&mut dyn Transport, &CardMeta) -> Result<R, CliError>,
) -> Result<R, CliError> {
    let (mut sim, key) = crate::cardfile::load(path, card.card_key.as_deref())?;
    let meta = CardMeta {
        reader: format!("simulated card {}", path.display()),
        atr: tsm_se::CardDevice::atr(&sim),
        config: SessionConfig::from_profile(&sim.state().profile),
    };
    let result = f(&mut Logged { inner: &mut sim, verbose: card.verbose }, &meta);
    let saved = crate::cardfile::write_state(&sim, path, &key);
    match (result, saved) {
        (Ok(r), Ok(())) => Ok(r),
        (Ok(_), Err(e)) | (Err(e), _) => Err(e),
    }
}

/// Runs `f` on the card: a PC/SC card inside one exclusive transaction, or a simulated card.
fn with_card<R>(card: &CardArgs, f: impl FnOnce(&mut dyn Transport, &CardMeta) -> Result<R, CliError>) -> Result<R, CliError> {
    if let Some(path) = &card.card_state {
        return with_sim_card(card, path, f);
    }
    let mut pc = match &card.reader {
        Some(r) => tsm_pcsc::PcscCard::connect(&pick_reader(r)?, tsm_pcsc::ShareMode::Shared),
        None => tsm_pcsc::PcscCard::connect_first(tsm_pcsc::ShareMode::Shared),
    }
    .map_err(pcsc_error)?;
    let meta = CardMeta { reader: pc.reader().to_string(), atr: pc.atr().to_vec(), config: SessionConfig::default() };
    let mut tx = pc.transaction().map_err(pcsc_error)?;
    let mut t = Logged { inner: &mut tx, verbose: card.verbose };
    f(&mut t, &meta)
}

type Secured<'a> = GpSession<&'a mut dyn Transport, Secure>;

/// Selects the security domain and opens the secure channel, then runs `f`.
fn with_secure<R>(card: &CardArgs, keys: &KeyArgs, f: impl FnOnce(&mut Secured<'_>) -> Result<R, CliError>) -> Result<R, CliError> {
    let card_keys = keys.card_keys()?;
    with_card(card, |t, meta| {
        let mut s = GpSession::new(t, meta.config.clone()).with_random(tsm_gp::session::OsRandom);
        match keys.sd {
            Some(aid) => {
                s.select(aid.as_bytes()).map_err(session_error)?;
            }
            None => {
                s.select_isd().map_err(session_error)?;
            }
        }
        let mut secure = s.open_secure_channel(card_keys, keys.level, &keys.open_options()).map_err(|(_, e)| session_error(e))?;
        f(&mut secure)
    })
}

// ---------------------------------------------------------------------------------------------
// Output

fn entry_json(e: &RegistryEntry) -> Value {
    let mut v = json!({
        "aid": e.aid.to_string(),
        "kind": e.lifecycle.kind(),
        "life_cycle": format!("{:02X}", e.lifecycle.value()),
        "life_cycle_name": e.lifecycle.to_string(),
    });
    if let Some(p) = e.privileges {
        v["privileges"] = hex::encode(&p.to_bytes()).into();
        v["privilege_names"] = json!(p.names());
    }
    if let Some(a) = &e.elf_aid {
        v["load_file"] = a.to_string().into();
    }
    if let Some(a) = &e.associated_sd {
        v["security_domain"] = a.to_string().into();
    }
    if let Some(x) = &e.version {
        v["version"] = hex::encode(x).into();
    }
    if !e.modules.is_empty() {
        v["modules"] = json!(e.modules.iter().map(Aid::to_string).collect::<Vec<_>>());
    }
    v
}

fn content_json(c: &CardContent) -> Value {
    json!({
        "isd": c.isd.as_ref().map(entry_json),
        "domains": c.domains.iter().map(entry_json).collect::<Vec<_>>(),
        "apps": c.apps.iter().map(entry_json).collect::<Vec<_>>(),
        "load_files": c.load_files.iter().map(entry_json).collect::<Vec<_>>(),
    })
}

fn entry_line(tag: &str, e: &RegistryEntry) -> String {
    let mut s = format!("{tag:<4}{} {}", e.aid, e.lifecycle);
    if let Some(p) = e.privileges
        && p != Privileges::NONE
    {
        s.push_str(&format!(" {p}"));
    }
    if let Some(v) = &e.version {
        s.push_str(&format!(" version {}", v.iter().map(|b| b.to_string()).collect::<Vec<_>>().join(".")));
    }
    if let Some(a) = &e.associated_sd {
        s.push_str(&format!(" SD {a}"));
    }
    if let Some(a) = &e.elf_aid {
        s.push_str(&format!(" from {a}"));
    }
    for m in &e.modules {
        s.push_str(&format!("\n      module {m}"));
    }
    s
}

fn print_content(c: &CardContent) {
    if let Some(isd) = &c.isd {
        println!("{}", entry_line("ISD", isd));
    }
    for e in &c.domains {
        println!("{}", entry_line("SSD", e));
    }
    for e in &c.apps {
        println!("{}", entry_line("APP", e));
    }
    for e in &c.load_files {
        println!("{}", entry_line("PKG", e));
    }
    if c.entries().next().is_none() {
        println!("(empty)");
    }
}

/// A progress bar on stderr (only when stderr is a terminal).
struct Progress {
    on: bool,
    label: &'static str,
}

impl Progress {
    fn new(label: &'static str) -> Self {
        Progress { on: std::io::stderr().is_terminal(), label }
    }
    fn update(&mut self, done: usize, total: usize) {
        if !self.on || total == 0 {
            return;
        }
        const W: usize = 30;
        let filled = done * W / total;
        eprint!("\r{} [{}{}] {done}/{total} bytes {:3}%", self.label, "#".repeat(filled), "-".repeat(W - filled), done * 100 / total);
        if done >= total {
            eprintln!();
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Commands

pub fn run(cmd: GpCmd) -> Result<(), CliError> {
    match cmd {
        GpCmd::Info(a) => info(a),
        GpCmd::List(a) => with_secure(&a.card, &a.keys, |s| {
            let content = s.list().map_err(session_error)?;
            if a.json {
                println!("{}", serde_json::to_string_pretty(&content_json(&content)).expect("json"));
            } else {
                print_content(&content);
            }
            Ok(())
        }),
        GpCmd::Install(a) => install(a),
        GpCmd::Delete(a) => with_secure(&a.card, &a.keys, |s| {
            s.delete(a.aid, a.related).map_err(session_error)?;
            println!("deleted {}{}", a.aid, if a.related { " and related objects" } else { "" });
            Ok(())
        }),
        GpCmd::PutKey(a) => put_key(a),
        GpCmd::Lock(a) => with_secure(&a.card, &a.keys, |s| {
            s.lock_app(a.aid).map_err(session_error)?;
            println!("locked {}", a.aid);
            Ok(())
        }),
        GpCmd::Unlock(a) => with_secure(&a.card, &a.keys, |s| {
            s.unlock_app(a.aid).map_err(session_error)?;
            println!("unlocked {}", a.aid);
            Ok(())
        }),
    }
}

fn info(a: InfoArgs) -> Result<(), CliError> {
    with_card(&a.card, |t, meta| {
        let mut s = GpSession::new(t, meta.config.clone());
        let sd = match a.sd {
            Some(aid) => s.select(aid.as_bytes()).map_err(session_error)?.aid.unwrap_or(aid),
            None => s.select_isd().map_err(session_error)?,
        };
        let fci = s.fci().cloned();
        let cplc = s.cplc().map_err(session_error)?;
        let crd = s.card_recognition_data().map_err(session_error)?;
        let keys = s.key_information().map_err(session_error)?;
        let seq = s.sequence_counter().map_err(session_error)?;
        let kdd = s.kdd().map_err(session_error)?;
        let ecr = s.extended_card_resources().map_err(session_error)?;
        if a.json {
            let v = json!({
                "reader": meta.reader,
                "atr": hex::encode(&meta.atr),
                "security_domain": sd.to_string(),
                "max_command_data": fci.as_ref().and_then(|f| f.max_command_data_length()),
                "cplc": cplc.as_ref().map(|c| c.fields().iter().map(|(n, v)| (n.to_string(), Value::from(hex::encode(v)))).collect::<serde_json::Map<_, _>>()),
                "card_recognition_data": crd.as_ref().map(|c| json!({
                    "gp_version": c.gp_version(),
                    "scp": c.scps().iter().map(|s| json!({"scp": format!("{:02X}", s.id), "i": format!("{:02X}", s.i)})).collect::<Vec<_>>(),
                })),
                "keys": keys.as_ref().map(|k| k.keys.iter().map(|k| json!({
                    "id": format!("{:02X}", k.id),
                    "version": format!("{:02X}", k.version),
                    "components": k.components.iter().map(|c| json!({
                        "type": tsm_gp::gp::data::key_type_name(c.key_type), "length": c.length})).collect::<Vec<_>>(),
                })).collect::<Vec<_>>()),
                "sequence_counter": seq,
                "kdd": kdd.as_deref().map(hex::encode),
                "free_non_volatile_memory": ecr.as_ref().map(|e| e.free_non_volatile_memory),
                "free_volatile_memory": ecr.as_ref().map(|e| e.free_volatile_memory),
                "installed_applications": ecr.as_ref().map(|e| e.installed_applications),
            });
            println!("{}", serde_json::to_string_pretty(&v).expect("json"));
            return Ok(());
        }
        println!("Reader:  {}", meta.reader);
        println!("ATR:     {}", hex::encode(&meta.atr));
        println!("SD:      {sd}");
        if let Some(n) = fci.as_ref().and_then(|f| f.max_command_data_length()) {
            println!("         maximum command data {n} bytes");
        }
        match &cplc {
            Some(c) => {
                println!("CPLC:");
                for (n, v) in c.fields() {
                    println!("  {n:<32} {}", hex::encode(v));
                }
            }
            None => println!("CPLC:    (none)"),
        }
        match &crd {
            Some(c) => {
                println!("GP:      version {}", c.gp_version().unwrap_or_else(|| "?".into()));
                for s in c.scps() {
                    println!("         SCP{:02X} i={:02X}", s.id, s.i);
                }
            }
            None => println!("GP:      (no card recognition data)"),
        }
        match &keys {
            Some(k) if !k.keys.is_empty() => {
                println!("Keys:");
                for k in &k.keys {
                    println!("  {k}");
                }
            }
            _ => println!("Keys:    (no key information)"),
        }
        if let Some(c) = seq {
            println!("Sequence counter: {c:06X}");
        }
        if let Some(k) = kdd {
            println!("KDD:     {}", hex::encode(&k));
        }
        if let Some(e) = ecr {
            println!(
                "Memory:  {} bytes free non-volatile, {} bytes free volatile, {} application(s)",
                e.free_non_volatile_memory, e.free_volatile_memory, e.installed_applications
            );
        }
        Ok(())
    })
}

fn install(a: InstallArgs) -> Result<(), CliError> {
    let bytes = read_file(&a.file)?;
    let cap = CapFile::parse(&bytes).map_err(|e| CliError::new(e.code(), format!("{}: {e}", a.file.display())))?;
    let params = match (&a.install_params, &a.install_params_raw) {
        (Some(c9), _) => InstallParams::application_specific(&hex::decode(c9)?),
        (_, Some(raw)) => InstallParams(hex::decode(raw)?),
        _ => InstallParams::application_specific(&[]),
    };
    let options = InstallOptions {
        sd: a.keys.sd,
        hash: a.hash,
        include_descriptor: a.include_descriptor,
        block_size: a.block_size,
        applet: a.applet,
        instance: a.instance,
        privileges: a.privileges,
        params,
        ..Default::default()
    };
    let elf = Aid::new(cap.package_aid()).map_err(|e| CliError::new(e.code(), e.to_string()))?;
    with_secure(&a.card, &a.keys, |s| {
        let mut progress = Progress::new("LOAD");
        let mut report = |d, t| progress.update(d, t);
        if a.load_only {
            let hash = a.hash.map(|h| cap.load_file_hash(h, a.include_descriptor)).unwrap_or_default();
            s.install_for_load(elf, options.sd, &hash, &options.load_params).map_err(session_error)?;
            s.load(&cap, a.block_size, a.include_descriptor, &mut report).map_err(session_error)?;
            println!("loaded {elf}");
            return Ok(());
        }
        let apps = s.load_and_install(&cap, &options, &mut report).map_err(session_error)?;
        println!("loaded {elf}");
        for app in apps {
            println!("installed {app}");
        }
        Ok(())
    })
}

fn put_key(a: PutKeyArgs) -> Result<(), CliError> {
    let [enc, mac, dek] = key_triplet(&a.new_keys)?;
    with_secure(&a.card, &a.keys, |s| {
        let scp = s.channel_info().scp.id();
        let new = KeySet::for_scp(scp, &enc, &mac, &dek, a.new_kvn).map_err(session_error)?;
        let r = s.put_key(&new, a.replace).map_err(session_error)?;
        let kcvs: Vec<String> = r.kcvs.iter().map(|k| hex::encode(k)).collect();
        match a.replace {
            Some(old) => println!("replaced key set {old:02X} by {:02X}: KCVs {} (verified)", r.version, kcvs.join(" ")),
            None => println!("added key set {:02X}: KCVs {} (verified)", r.version, kcvs.join(" ")),
        }
        Ok(())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn levels() {
        assert_eq!(parse_level("33").unwrap(), SecurityLevel::ALL);
        assert_eq!(parse_level("c-mac+c-dec").unwrap(), SecurityLevel::C_DEC_C_MAC);
        assert_eq!(parse_level("C-MAC,R-MAC").unwrap(), SecurityLevel::C_MAC_R_MAC);
        assert!(parse_level("c-dec").is_err());
        assert!(parse_level("x").is_err());
    }

    #[test]
    fn small_parsers() {
        assert_eq!(parse_u8_hex("30"), Ok(0x30));
        assert!(parse_u8_hex("300").is_err());
        assert_eq!(parse_scp("SCP03"), Ok(3));
        assert_eq!(parse_privileges("04").unwrap(), Privileges::from_bytes(&[4]).unwrap());
        assert!(parse_privileges("card-reset,cvm").unwrap().bits() != 0);
        assert!(parse_hash("SHA-256").is_ok());
        let [e, m, d] = key_triplet("enc=00,mac=01,dek=02").unwrap();
        assert_eq!((e.to_vec(), m.to_vec(), d.to_vec()), (vec![0], vec![1], vec![2]));
        assert!(key_triplet("enc=00,mac=01").is_err());
    }
}
