//! `tsm card`: simulated secure elements and PC/SC readers.

use crate::cmd::keys::key_bytes;
use crate::cardfile::{se_error, storage_key, write_state};
use crate::error::CliError;
use clap::{Args, Subcommand};
use std::path::{Path, PathBuf};
use tsm_gp::crypto::SecretKey;
use tsm_gp::profile::CardProfile;
use tsm_gp::scp::Scp;
use tsm_se::vpcd::{self, Event, VpcdHooks, VpcdOptions};
use tsm_se::{CardConfig, CardState, GP_TEST_KEY, INITIAL_KEY_VERSION, KeySet, SimCard};
use zeroize::Zeroizing;

#[derive(Subcommand, Debug)]
pub enum CardCmd {
    /// List the PC/SC readers and the cards in them (ATR).
    ///
    /// Needs pcscd. A simulated card appears as a reader once `tsm card run` puts it into
    /// pcscd through vpcd.
    ///
    /// Examples:
    ///   tsm card list-readers
    ///   tsm card list-readers --json
    #[command(verbatim_doc_comment)]
    ListReaders(ListReadersArgs),
    /// Create a simulated card: a state file holding its registry, keys (sealed) and counters.
    ///
    /// The card's key values are sealed in the state file with a 32-byte storage key: from
    /// --card-key (HEX, env:VAR or file:PATH), or else from STATE.key next to the state file
    /// (e.g. card.json.key), which is created with mode 0600 and 32 random bytes. Keep that
    /// file with the state file: without it the card cannot be loaded.
    ///
    /// The ISD keys default to the GP test key 40..4F as an initial key set (version FF).
    ///
    /// Examples:
    ///   tsm card new --state card.json                      # UICC, SCP02 i=55, test key
    ///   tsm card new --profile ese --state ese.json --scp scp03 --keys env:ISD_KEY --kvn 30
    ///   tsm card new --state c.json --scp scp03:70 --enc-key file:enc.hex \
    ///       --mac-key file:mac.hex --dek-key file:dek.hex --kvn 01 --seed 42
    #[command(verbatim_doc_comment)]
    New(NewArgs),
    /// Run a simulated card in pcscd's virtual reader (vpcd), so that every PC/SC program —
    /// opensc-tool, pcsc_scan, GlobalPlatformPro, yubikit, Py-GP, `tsm gp` — sees it as a card.
    ///
    /// Loads the state file (creates it first, as `tsm card new` would, when missing), connects
    /// to vpcd (the card is the TCP client; vpcd must be loaded by pcscd), and serves APDUs until
    /// Ctrl-C or SIGTERM. The state is saved after every APDU that changed it (atomically: a
    /// temporary file, then rename) and on shutdown. When vpcd is absent or goes away the card
    /// retries with backoff (--once: exit instead). Power off and reset from the reader drop the
    /// secure channel and the selection, as on a real card.
    ///
    /// Debian's vpcd listens on all interfaces: keep it unreachable by running pcscd and the
    /// card inside a network namespace with only loopback. scripts/pcsc-sandbox.sh does all of
    /// the following for you (start|status|stop); by hand, as root:
    ///
    ///   # 1. pcscd with vpcd, in a namespace of its own
    ///   ip netns add pcsc && ip netns exec pcsc ip link set lo up
    ///   ip netns exec pcsc pcscd -f -a &
    ///   # 2. the card, in the same namespace, connecting to vpcd's reader 0
    ///   ip netns exec pcsc tsm card run --profile uicc --state card.json \
    ///       --vpcd 127.0.0.1:35963 -v &
    ///   # 3. clients in the normal namespace reach pcscd through /run/pcscd/pcscd.comm
    ///   opensc-tool -l                  # 0  Yes  Virtual PCD 00 00
    ///   tsm gp list --reader "Virtual PCD 00 00"
    ///   # 4. stop by PID (the card saves its state), then remove the namespace
    ///   kill %2 %1 && ip netns del pcsc
    ///
    /// -v logs one line per APDU on stderr: header, lengths, status word, time. Never the data
    /// fields, which may carry (wrapped) key material. See docs/simulated-card.md.
    #[command(verbatim_doc_comment)]
    Run(RunArgs),
}

#[derive(clap::Args, Debug)]
pub struct ListReadersArgs {
    /// Machine-readable output: [{"name", "card_present", "atr", "exclusive", "mute"}].
    #[arg(long)]
    json: bool,
}

fn list_readers(a: ListReadersArgs) -> Result<(), CliError> {
    let readers = tsm_pcsc::reader_status().map_err(|e| CliError::failed(e.code(), e.to_string()))?;
    if a.json {
        let v: Vec<_> = readers
            .iter()
            .map(|r| {
                serde_json::json!({
                    "name": r.name,
                    "card_present": r.card_present,
                    "atr": (!r.atr.is_empty()).then(|| tsm_gp::hex::encode(&r.atr)),
                    "exclusive": r.exclusive,
                    "mute": r.mute,
                })
            })
            .collect();
        println!("{}", serde_json::to_string_pretty(&v).expect("json"));
        return Ok(());
    }
    if readers.is_empty() {
        eprintln!("{}", tsm_pcsc::PcscError::NoReaders);
    }
    for r in readers {
        let card = match (r.card_present, r.mute) {
            (_, true) => "mute card".to_string(),
            (true, _) => format!("ATR {}", tsm_gp::hex::encode(&r.atr)),
            _ => "no card".to_string(),
        };
        println!("{}  {card}{}", r.name, if r.exclusive { " (in exclusive use)" } else { "" });
    }
    Ok(())
}

pub fn run(cmd: CardCmd) -> Result<(), CliError> {
    match cmd {
        CardCmd::ListReaders(a) => list_readers(a),
        CardCmd::New(a) => card_new(a),
        CardCmd::Run(a) => card_run(a),
    }
}

// ---- simulated cards: `tsm card new` and `tsm card run` ----

/// Arguments of `tsm card new`.
#[derive(Args, Debug)]
pub struct NewArgs {
    #[command(flatten)]
    card: CardArgs,
    /// Overwrite an existing state file.
    #[arg(long)]
    force: bool,
}

/// Arguments of `tsm card run`.
#[derive(Args, Debug)]
pub struct RunArgs {
    #[command(flatten)]
    card: CardArgs,
    /// Where vpcd listens (HOST:PORT). Port 35963 is reader `Virtual PCD 00 00`, 35964 is
    /// `Virtual PCD 00 01`.
    #[arg(long, value_name = "HOST:PORT", default_value = "127.0.0.1:35963")]
    vpcd: String,
    /// Exit when vpcd is not there or goes away, instead of retrying with backoff.
    #[arg(long)]
    once: bool,
    /// One line per APDU on stderr (header, lengths, status word and time: never data fields,
    /// which may carry wrapped keys), plus power and reset events.
    #[arg(short, long)]
    verbose: bool,
}

/// What makes a card: profile, state file, storage key, and the settings of a new card.
#[derive(Args, Debug)]
pub struct CardArgs {
    /// Card profile: uicc, microsd, ese, or a JSON file with a CardProfile. Default uicc. With
    /// `run` and an existing state file, the state's own profile is used (naming a different
    /// one is an error).
    #[arg(long, value_name = "uicc|microsd|ese|FILE")]
    profile: Option<String>,
    /// The card's state file (JSON; key values in it are sealed with the storage key).
    #[arg(long, value_name = "FILE")]
    state: PathBuf,
    /// Storage key sealing the card's keys in the state file: 32 bytes as HEX, env:VAR or
    /// file:PATH (a file holding hex). Without it, the key is read from STATE.key next to the
    /// state file, which is created (mode 0600, 32 random bytes as hex) with a new state.
    #[arg(long, value_name = "env:VAR|file:PATH|HEX")]
    card_key: Option<String>,
    /// New card: ISD key, one value for ENC, MAC and DEK (HEX, env:VAR or file:PATH): 16/24
    /// bytes 3DES for SCP02, 16/24/32 bytes AES for SCP03. Default: the GP test key 40..4F.
    #[arg(long, value_name = "KEY")]
    keys: Option<String>,
    /// New card: ISD ENC key (overrides --keys for ENC).
    #[arg(long, value_name = "KEY")]
    enc_key: Option<String>,
    /// New card: ISD MAC key (overrides --keys for MAC).
    #[arg(long, value_name = "KEY")]
    mac_key: Option<String>,
    /// New card: ISD DEK key (overrides --keys for DEK).
    #[arg(long, value_name = "KEY")]
    dek_key: Option<String>,
    /// New card: key version number of the ISD key set, hex. Default FF (an initial key set)
    /// without --keys, 30 with them.
    #[arg(long, value_name = "HEX")]
    kvn: Option<String>,
    /// New card: the ISD's secure channel protocol, one the profile supports: scp02 or scp03,
    /// optionally with the implementation option (scp02:55, scp03:70). Default: the profile's
    /// first.
    #[arg(long, value_name = "scp02|scp03[:I]")]
    scp: Option<String>,
    /// New card: deterministic mode; card challenges and all other randomness come from this
    /// seed (reproducible sessions). Default: operating system randomness.
    #[arg(long, value_name = "N")]
    seed: Option<u64>,
}

fn resolve_profile(spec: &str) -> Result<CardProfile, CliError> {
    if let Some(p) = CardProfile::builtin(spec) {
        return Ok(p);
    }
    let path = Path::new(spec);
    if !path.exists() {
        return Err(CliError::new(
            "input.profile",
            format!("unknown profile {spec:?}: not one of {} and no such file", CardProfile::BUILTIN.join(", ")),
        ));
    }
    let text = crate::error::read_file(path)?;
    serde_json::from_slice(&text).map_err(|e| CliError::new("input.profile", format!("{spec}: not a card profile: {e}")))
}

fn parse_scp(spec: &str, profile: &CardProfile) -> Result<Scp, CliError> {
    let (name, i) = match spec.split_once(':') {
        Some((n, i)) => (n, Some(u8::from_str_radix(i, 16).map_err(|_| CliError::new("input.scp", format!("bad i {i:?}: hex byte expected")))?)),
        None => (spec, None),
    };
    let id = match name.to_ascii_lowercase().as_str() {
        "scp02" | "02" => 0x02,
        "scp03" | "03" => 0x03,
        _ => return Err(CliError::new("input.scp", format!("unknown secure channel {spec:?} (scp02, scp03)"))),
    };
    let supported = || profile.scp.iter().map(|s| s.to_string()).collect::<Vec<_>>().join(", ");
    match i {
        // An explicit i need not be in the profile: the card checks what it implements.
        Some(i) => Ok(if id == 2 { Scp::Scp02 { i } } else { Scp::Scp03 { i } }),
        None => profile.scp.iter().copied().find(|s| s.id() == id).ok_or_else(|| {
            CliError::new("input.scp", format!("profile {} has no SCP{id:02X} (it has {})", profile.name, supported()))
        }),
    }
}

fn parse_kvn(s: &str) -> Result<u8, CliError> {
    u8::from_str_radix(s.trim_start_matches("0x"), 16).map_err(|_| CliError::new("input.kvn", format!("key version {s:?}: hex byte expected")))
}

fn card_config(args: &CardArgs, profile: &CardProfile) -> Result<CardConfig, CliError> {
    let mut config = CardConfig::default();
    let scp = match &args.scp {
        Some(s) => parse_scp(s, profile)?,
        None => *profile.scp.first().ok_or_else(|| CliError::new("input.profile", format!("profile {} has no secure channel", profile.name)))?,
    };
    config.scp = Some(scp);
    config.seed = args.seed;
    let any_key = args.keys.is_some() || args.enc_key.is_some() || args.mac_key.is_some() || args.dek_key.is_some();
    let kvn = match &args.kvn {
        Some(k) => parse_kvn(k)?,
        None if any_key => 0x30,
        None => INITIAL_KEY_VERSION,
    };
    if any_key || args.kvn.is_some() {
        let base: Option<Zeroizing<Vec<u8>>> = args.keys.as_deref().map(key_bytes).transpose()?;
        let one = |spec: &Option<String>, role: &str| -> Result<SecretKey, CliError> {
            let bytes = match (spec, &base) {
                (Some(s), _) => key_bytes(s)?,
                (None, Some(b)) => b.clone(),
                (None, None) if !any_key => Zeroizing::new(GP_TEST_KEY.to_vec()),
                (None, None) => return Err(CliError::new("input.key", format!("no {role} key: give --keys or --{role}-key"))),
            };
            let key = match scp {
                Scp::Scp02 { .. } => SecretKey::des3(&bytes),
                Scp::Scp03 { .. } => SecretKey::aes(&bytes),
            };
            key.map_err(|e| CliError::new("input.key", format!("{role} key for {scp}: {e}")))
        };
        config.isd_keys = Some(KeySet::new(one(&args.enc_key, "enc")?, one(&args.mac_key, "mac")?, one(&args.dek_key, "dek")?, kvn));
    }
    Ok(config)
}

fn describe_card(card: &SimCard) -> String {
    let st = card.state();
    let isd = st.isd();
    let (scp, keys) = st
        .domain(&isd)
        .map(|d| {
            let mut versions: Vec<u8> = d.keys.iter().map(|k| k.version).collect();
            versions.dedup();
            (d.scp.to_string(), versions.iter().map(|v| format!("{v:02X}")).collect::<Vec<_>>().join(","))
        })
        .unwrap_or_default();
    format!(
        "profile {}, ISD {isd} ({scp}, key version {keys}), {} load file(s), {} application(s)",
        st.profile.name,
        st.load_files.len(),
        st.apps.len()
    )
}

fn new_card(args: &CardArgs) -> Result<SimCard, CliError> {
    let profile = resolve_profile(args.profile.as_deref().unwrap_or("uicc"))?;
    let config = card_config(args, &profile)?;
    SimCard::new(profile, config).map_err(se_error)
}

fn card_new(a: NewArgs) -> Result<(), CliError> {
    if a.card.state.exists() && !a.force {
        return Err(CliError::new("io.exists", format!("{} exists (use --force to replace it)", a.card.state.display())));
    }
    let card = new_card(&a.card)?;
    let key = storage_key(&a.card.state, a.card.card_key.as_deref(), true)?;
    write_state(&card, &a.card.state, &key)?;
    println!("{}: {}", a.card.state.display(), describe_card(&card));
    Ok(())
}

fn card_run(a: RunArgs) -> Result<(), CliError> {
    let args = &a.card;
    let (mut card, key) = if args.state.exists() {
        let key = storage_key(&args.state, args.card_key.as_deref(), false)?;
        let card = SimCard::load(&args.state, &key).map_err(se_error)?;
        if let Some(p) = &args.profile {
            let want = resolve_profile(p)?;
            if want.name != card.state().profile.name {
                return Err(CliError::new(
                    "input.profile",
                    format!("{} holds a {} card, not {}", args.state.display(), card.state().profile.name, want.name),
                ));
            }
        }
        if args.keys.is_some() || args.enc_key.is_some() || args.mac_key.is_some() || args.dek_key.is_some() || args.scp.is_some() || args.seed.is_some() || args.kvn.is_some() {
            eprintln!("note: {} exists; --keys/--kvn/--scp/--seed only apply to a new card", args.state.display());
        }
        (card, key)
    } else {
        let card = new_card(args)?;
        let key = storage_key(&args.state, args.card_key.as_deref(), true)?;
        write_state(&card, &args.state, &key)?;
        eprintln!("created {}", args.state.display());
        (card, key)
    };
    eprintln!("card: {}", describe_card(&card));
    eprintln!("card: connecting to vpcd at {} (Ctrl-C to stop)", a.vpcd);

    signals::install();
    let opts = VpcdOptions { reconnect: !a.once, ..VpcdOptions::default() };
    let mut hooks = Persist { path: &args.state, key: &key, saved: card.state().clone(), verbose: a.verbose };
    let result = vpcd::run_with(&mut card, &a.vpcd, opts, &signals::STOP, &mut hooks);
    // Whatever ended the loop, keep what the card holds.
    let saved = write_state(&card, &args.state, &key);
    eprintln!("card: stopped; state saved to {}", args.state.display());
    result.map_err(|e| CliError::failed(e.code(), e.to_string()))?;
    saved
}

/// Saves the state after every APDU that changed it, and logs.
struct Persist<'a> {
    path: &'a Path,
    key: &'a SecretKey,
    saved: CardState,
    verbose: bool,
}

impl VpcdHooks<SimCard> for Persist<'_> {
    fn after_apdu(&mut self, card: &mut SimCard, _command: &[u8], _response: &[u8]) -> Result<(), String> {
        if card.state() != &self.saved {
            write_state(card, self.path, self.key).map_err(|e| e.message)?;
            self.saved = card.state().clone();
        }
        Ok(())
    }

    fn event(&mut self, event: &Event<'_>) {
        match event {
            Event::Apdu { command, response, elapsed } if self.verbose => eprintln!("apdu {}", vpcd::describe_apdu(command, response, *elapsed)),
            Event::PowerOn if self.verbose => eprintln!("power on"),
            Event::PowerOff if self.verbose => eprintln!("power off"),
            Event::Reset if self.verbose => eprintln!("reset"),
            e => {
                if let Some(line) = vpcd::default_log_line(e) {
                    eprintln!("{line}");
                }
            }
        }
    }
}

/// Ctrl-C and SIGTERM set a flag that the vpcd loop polls; the card then saves and exits.
mod signals {
    use std::sync::atomic::{AtomicBool, Ordering};

    pub static STOP: AtomicBool = AtomicBool::new(false);

    #[cfg(unix)]
    extern "C" fn on_signal(_signum: i32) {
        // Only an atomic store: async-signal-safe.
        STOP.store(true, Ordering::SeqCst);
    }

    #[cfg(unix)]
    unsafe extern "C" {
        // POSIX signal(2) from the C library std already links; the return value (the
        // previous handler) is not needed.
        fn signal(signum: i32, handler: extern "C" fn(i32)) -> usize;
    }

    pub fn install() {
        #[cfg(unix)]
        {
            const SIGINT: i32 = 2;
            const SIGTERM: i32 = 15;
            // SAFETY: the handler only stores to an atomic, which is async-signal-safe.
            unsafe {
                signal(SIGINT, on_signal);
                signal(SIGTERM, on_signal);
            }
        }
    }
}
