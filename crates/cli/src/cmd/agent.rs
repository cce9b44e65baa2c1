//! `tsm agent`: the GP SERAM local agent on the command line — what a phone app does for a
//! TSM, with a simulated card or a PC/SC reader as the secure element.

use crate::cardfile::{pick_reader, se_error, storage_key, write_state};
use crate::error::CliError;
use std::io::Write;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tsm_gp::crypto::SecretKey;
use tsm_gp::hex;
use tsm_gp::profile::{CardProfile, Carrier};
use tsm_gp::transport::Transport;
use tsm_se::{CardConfig, SimCard};
use tsm_server::agent::{Agent, AgentEvent, AgentOptions, SeType, SecureElementInfo, Shared};

/// The long help of `tsm agent` (main.rs shows it).
pub const LONG_HELP: &str = "\
Run one GP SERAM management session as a phone's local agent.

The agent introduces itself and its secure element to the TSM (handshake), then polls the
TSM for orders and runs them on the card: Start, SE RAM commands (every C-APDU sent to the
card, the R-APDUs reported back), notifications, and finally Stop, which ends the session.

The session id comes from the TSM (it is returned when a process is queued for the SE). The
card is a simulated card's state file (saved after every order, so a crash loses nothing),
a PC/SC reader, or a fresh in-memory card of a built-in profile. The SE id offered in the
handshake must be the one the TSM registered: give --se-id, or let the agent derive it from
the card's CPLC (IC fabricator, IC type, IC serial number, IC batch id as 20 hex digits).

Lost connections are re-established at once, server errors retried with growing pauses for
up to 5 minutes (the same report is re-sent, so nothing runs twice); an unknown session
(404) or a refused report ends the run at once. Exit status 0 when the TSM ended the session
with Stop, 1 otherwise (error[code] on stderr). The timers are the binding's; --retry-for,
--request-timeout, --backoff-start and --backoff-max change them (tests, slow networks).

--apdu-log FILE records every APDU exchanged with the card (wire form, as the TSM logs it)
in the plain log format `tsm trace decode` reads.

Examples:
  tsm card new --state card.json
  tsm agent --server https://tsm.example.com --session 0f96af97-f879-45a2-a011-ee7439df3804 \\
      --card-state card.json
  tsm agent --server https://tsm.example.com/gp/seram --session $SESSION \\
      --reader \"Virtual PCD 00 00\" --se-id 47905040000000010000 --se-type uicc -v
  tsm agent --server https://tsm.test:8443 --session $SESSION --profile ese --ca-cert ca.pem
  tsm agent --server http://127.0.0.1:8080 --session $SESSION --profile uicc --se-id UICC-1";

/// Arguments of `tsm agent`.
#[derive(clap::Args, Debug)]
#[command(group = clap::ArgGroup::new("card").required(true).args(["card_state", "reader", "profile"]))]
pub struct AgentArgs {
    /// The TSM's SERAM endpoint: https://HOST[:PORT][/gp/seram] (without a path, /gp/seram is
    /// used). http:// only for tests on this machine.
    #[arg(long, env = "TSM_SERVER", value_name = "URL")]
    server: String,
    /// The session id the TSM gave for this SE.
    #[arg(long, value_name = "ID")]
    session: String,
    /// A simulated card's state file (made by `tsm card new`); saved after every order.
    #[arg(long, value_name = "FILE")]
    card_state: Option<PathBuf>,
    /// Storage key of the --card-state file (32 bytes: HEX, env:VAR or file:PATH). Default:
    /// the key file STATE.key next to it, as `tsm card new` writes it.
    #[arg(long, env = "TSM_CARD_KEY", hide_env_values = true, requires = "card_state")]
    card_key: Option<String>,
    /// A PC/SC reader: its exact name or a unique part of it (see `tsm card list-readers`).
    #[arg(long, value_name = "NAME")]
    reader: Option<String>,
    /// A fresh simulated card of this built-in profile, in memory only (uicc, microsd, ese).
    #[arg(long, value_name = "uicc|microsd|ese")]
    profile: Option<String>,
    /// The SE id offered in the handshake. Default: derived from the card's CPLC.
    #[arg(long, value_name = "ID")]
    se_id: Option<String>,
    /// The SE type offered: eSE, iSE, uicc, euicc, ieuicc or undefined. Default: from the
    /// simulated card's profile (uicc, eSE; undefined for microsd), undefined for a reader.
    #[arg(long, value_name = "TYPE")]
    se_type: Option<String>,
    /// PEM file with the CA certificate(s) to trust for https:// instead of the system's.
    #[arg(long, value_name = "PEM")]
    ca_cert: Option<PathBuf>,
    /// One line per APDU: header, lengths, status word and time (never the data fields).
    #[arg(short, long)]
    verbose: bool,
    /// Append every APDU exchanged with the card to FILE: "=> C-APDU" / "<= R-APDU" hex lines
    /// and "#" comments (a line per run and per order), the plain log `tsm trace decode`
    /// reads. Wire form (what travelled under secure messaging), created with mode 0600.
    #[arg(long, value_name = "FILE")]
    apdu_log: Option<PathBuf>,
    /// Seconds without an answer before a request is abandoned and sent again on a new
    /// connection (binding: 40; the TSM holds long polls for up to 30).
    #[arg(long, value_name = "SECONDS", default_value = "40", value_parser = seconds)]
    request_timeout: Duration,
    /// Seconds to keep retrying one request (server errors, no connection) before giving up
    /// with agent.unreachable (binding: 300).
    #[arg(long, value_name = "SECONDS", default_value = "300", value_parser = seconds)]
    retry_for: Duration,
    /// Seconds of the first pause between retries (after the immediate one); it doubles up
    /// to --backoff-max.
    #[arg(long, value_name = "SECONDS", default_value = "0.5", value_parser = seconds)]
    backoff_start: Duration,
    /// Longest pause between retries, in seconds.
    #[arg(long, value_name = "SECONDS", default_value = "30", value_parser = seconds)]
    backoff_max: Duration,
}

/// A duration in seconds (decimals allowed: 0.25), from 0 to one day.
fn seconds(s: &str) -> Result<Duration, String> {
    let v: f64 = s.trim().parse().map_err(|_| format!("{s:?} is not a number of seconds"))?;
    if !(0.0..=86_400.0).contains(&v) {
        return Err(format!("{s:?}: between 0 and 86400 seconds"));
    }
    Ok(Duration::from_secs_f64(v))
}

/// The card behind the agent, and how to save it.
struct Card {
    transport: Box<dyn Transport + Send>,
    /// A simulated card to save after every order: the card, its file and its storage key.
    persist: Option<(Arc<Mutex<SimCard>>, PathBuf, SecretKey)>,
    describe: String,
    se_type: SeType,
}

pub fn run(a: AgentArgs) -> Result<(), CliError> {
    let mut card = open_card(&a)?;
    let se_type = match &a.se_type {
        Some(t) => match SeType::parse(t) {
            SeType::Other(o) => return Err(CliError::new("input.se_type", format!("unknown SE type {o:?} (eSE, iSE, uicc, euicc, ieuicc, undefined)"))),
            t => t,
        },
        None => card.se_type.clone(),
    };
    let se_id = match &a.se_id {
        Some(id) => id.clone(),
        None => {
            let id = se_id_from_cplc(card.transport.as_mut())?;
            eprintln!("se-id {id} (from the card's CPLC; give --se-id to use another)");
            id
        }
    };
    let root_ca_pem = a.ca_cert.as_deref().map(crate::error::read_file).transpose()?;
    if a.backoff_start > a.backoff_max {
        return Err(CliError::new("input.backoff", "--backoff-start is longer than --backoff-max"));
    }
    let options = AgentOptions {
        root_ca_pem,
        request_timeout: a.request_timeout.max(Duration::from_millis(100)),
        retry_for: a.retry_for,
        backoff_start: a.backoff_start,
        backoff_max: a.backoff_max,
        ..AgentOptions::default()
    };
    let mut apdu_log = a.apdu_log.as_deref().map(ApduLog::open).transpose()?;
    let se = SecureElementInfo::new(se_type.clone(), se_id.clone());
    let persist = card.persist.take();
    let mut agent = Agent::new(&a.server, a.session.clone(), se, card.transport, options).map_err(agent_error)?;
    eprintln!("agent: session {} at {}, SE {se_id} ({se_type}), {}", a.session, agent.endpoint(), card.describe);
    if let Some(log) = &mut apdu_log {
        log.line(&format!("# tsm agent run: session {}, SE {se_id}, {}", a.session, card.describe));
    }

    let mut save_error: Option<CliError> = None;
    let mut save = |why: &str| {
        if let Some((sim, path, key)) = &persist {
            let result = sim.lock().map_err(|_| CliError::failed("se.state", "the card panicked".to_string())).and_then(|c| write_state(&c, path, key));
            if let Err(e) = result {
                eprintln!("warning: cannot save the card after {why}: {e}");
                save_error.get_or_insert(e);
            }
        }
    };
    let verbose = a.verbose;
    let result = agent.run_blocking(|event| {
        if let Some(log) = &mut apdu_log {
            log.event(&event);
        }
        if let AgentEvent::OrderExecuted { number } = event {
            save(&format!("order {number}"));
            return;
        }
        if let Some(line) = describe(&event, verbose) {
            eprintln!("{line}");
        }
    });
    save("the session");
    let summary = result.map_err(agent_error)?;
    if let Some(e) = save_error {
        return Err(e);
    }
    let mut out = std::io::stdout().lock();
    let _ = writeln!(
        out,
        "session {} complete: {} order(s), {} SE RAM command(s) ({} failed, {} discarded), {} APDU(s), {} notification(s), {} retr{} in {:.1?}",
        a.session,
        summary.orders,
        summary.se_ram_commands,
        summary.failed_se_ram_commands,
        summary.discarded_se_ram_commands,
        summary.apdus,
        summary.notifications.len(),
        summary.retries,
        if summary.retries == 1 { "y" } else { "ies" },
        summary.elapsed
    );
    if let Some((_, path, _)) = &persist {
        let _ = writeln!(out, "card state saved to {}", path.display());
    }
    Ok(())
}

/// `--apdu-log`: the card's side of the session as a plain `=>`/`<=` log, appended.
struct ApduLog {
    file: std::fs::File,
    path: PathBuf,
    failed: bool,
}

impl ApduLog {
    fn open(path: &std::path::Path) -> Result<ApduLog, CliError> {
        let mut opts = std::fs::OpenOptions::new();
        opts.append(true).create(true);
        // Wire-form APDUs carry wrapped keys and encrypted data: not for other users.
        #[cfg(unix)]
        std::os::unix::fs::OpenOptionsExt::mode(&mut opts, 0o600);
        let file = opts.open(path).map_err(|e| CliError::new("io.write", format!("cannot open {}: {e}", path.display())))?;
        Ok(ApduLog { file, path: path.to_path_buf(), failed: false })
    }

    fn event(&mut self, event: &AgentEvent) {
        match event {
            AgentEvent::OrderReceived { number, se_ram_commands, .. } if *se_ram_commands > 0 => self.line(&format!("# order {number}")),
            AgentEvent::Apdu { capdu, rapdu, .. } => self.line(&format!("=> {}\n<= {}", hex::encode(capdu), hex::encode(rapdu))),
            _ => {}
        }
    }

    /// Writes at once (no buffer): the log is complete whenever the agent stops.
    fn line(&mut self, text: &str) {
        if self.failed {
            return;
        }
        if let Err(e) = writeln!(self.file, "{text}") {
            eprintln!("warning: cannot write the APDU log {}: {e} (no more APDUs are logged)", self.path.display());
            self.failed = true;
        }
    }
}

fn agent_error(e: tsm_server::agent::AgentError) -> CliError {
    let mut err = CliError::failed(e.code(), e.to_string());
    if matches!(e, tsm_server::agent::AgentError::Url { .. }) {
        err.exit = 2;
    }
    err
}

/// One progress line per event worth telling (None: say nothing).
fn describe(event: &AgentEvent, verbose: bool) -> Option<String> {
    Some(match event {
        AgentEvent::Handshake { transport, data_format, version } => format!("handshake: {transport}, {data_format}, SERAM {version}"),
        AgentEvent::OrderReceived { number, commands, se_ram_commands, .. } if *commands > 0 => {
            format!("order {number}: {commands} command(s), {se_ram_commands} SE RAM")
        }
        AgentEvent::OrderReceived { .. } => return None,
        AgentEvent::SecureElementChosen { se_id, known: true } => format!("  SE {se_id} chosen"),
        AgentEvent::SecureElementChosen { se_id, known: false } => format!("  the TSM chose SE {se_id}, which this agent does not have"),
        AgentEvent::Started => "  start".into(),
        AgentEvent::Apdu { command, index, capdu, rapdu, elapsed } if verbose => {
            format!("    {command}.{index} {}", tsm_se::vpcd::describe_apdu(capdu, rapdu, *elapsed))
        }
        AgentEvent::Apdu { .. } => return None,
        AgentEvent::SeRamCommandDone { command, apdus } => format!("  SE RAM command {command}: {apdus} APDU(s)"),
        AgentEvent::SeRamCommandFailed { status, message, .. } => format!("  {status}: {message}"),
        AgentEvent::Discarded { se_ram_commands } => format!("  {se_ram_commands} SE RAM command(s) discarded"),
        AgentEvent::Notification(text) => format!("  notification: {text}"),
        AgentEvent::Warning(text) => format!("  warning: {text}"),
        AgentEvent::Retrying { endpoint, attempt, error, wait } => {
            let when = if wait.is_zero() { "now".to_string() } else { format!("in {:.1} s", wait.as_secs_f64()) };
            format!("retrying {endpoint} {when} (attempt {attempt} failed: {error})")
        }
        AgentEvent::Stopped => "  stop".into(),
        _ => return None,
    })
}

fn open_card(a: &AgentArgs) -> Result<Card, CliError> {
    if let Some(path) = &a.card_state {
        let key = storage_key(path, a.card_key.as_deref(), false)?;
        let sim = SimCard::load(path, &key).map_err(se_error)?;
        let se_type = se_type_of(&sim.state().profile);
        let describe = format!("simulated card {} (profile {})", path.display(), sim.state().profile.name);
        let (shared, handle) = Shared::new(sim);
        return Ok(Card { transport: Box::new(shared), persist: Some((handle, path.clone(), key)), describe, se_type });
    }
    if let Some(name) = &a.profile {
        let profile = CardProfile::builtin(name).ok_or_else(|| {
            CliError::new("input.profile", format!("unknown profile {name:?}: one of {}", CardProfile::BUILTIN.join(", ")))
        })?;
        let se_type = se_type_of(&profile);
        let sim = SimCard::new(profile, CardConfig::default()).map_err(se_error)?;
        return Ok(Card { transport: Box::new(sim), persist: None, describe: format!("a fresh in-memory {name} card (not saved)"), se_type });
    }
    let want = a.reader.as_deref().unwrap_or_default();
    let reader = pick_reader(want)?;
    let card = tsm_pcsc::PcscCard::connect(&reader, tsm_pcsc::ShareMode::Exclusive).map_err(|e| CliError::failed(e.code(), e.to_string()))?;
    Ok(Card { transport: Box::new(card), persist: None, describe: format!("reader {reader:?}"), se_type: SeType::Undefined })
}

fn se_type_of(p: &CardProfile) -> SeType {
    match p.carrier {
        Carrier::Uicc => SeType::Uicc,
        Carrier::Ese => SeType::Ese,
        _ => SeType::Undefined,
    }
}

/// The default SE id: IC fabricator ‖ IC type ‖ IC serial number ‖ IC batch identifier of the
/// CPLC (GET DATA 9F7F after selecting the ISD), as 20 upper-case hex digits.
fn se_id_from_cplc(t: &mut dyn Transport) -> Result<String, CliError> {
    let fail = |detail: String| CliError::failed("agent.se_id", format!("cannot derive the SE id from the CPLC ({detail}): give --se-id"));
    let transmit = |t: &mut dyn Transport, apdu: &str| -> Result<Vec<u8>, CliError> {
        let r = t.transmit(&hex::decode(apdu).expect("constant")).map_err(|e| fail(e.to_string()))?;
        match r.len().checked_sub(2).map(|n| r.split_at(n)) {
            Some((data, [0x90, 0x00])) => Ok(data.to_vec()),
            _ => Err(fail(format!("{apdu} answered {}", hex::encode(&r)))),
        }
    };
    // SELECT with an empty AID selects the ISD (GPCS 2.3 §11.9.2.1).
    transmit(t, "00A4040000")?;
    let data = transmit(t, "80CA9F7F00")?;
    let cplc = tsm_gp::gp::data::Cplc::parse(&data).map_err(|e| fail(e.to_string()))?;
    let mut id = Vec::with_capacity(10);
    id.extend_from_slice(&cplc.ic_fabricator);
    id.extend_from_slice(&cplc.ic_type);
    id.extend_from_slice(&cplc.ic_serial_number);
    id.extend_from_slice(&cplc.ic_batch_identifier);
    Ok(hex::encode(&id))
}
