//! The local agent (GP SERAM "Local Agent"): a SERAM client that relays a TSM's orders to a
//! secure element reached through a [`Transport`] (a simulated card, a PC/SC reader) and
//! reports the answers. `tsm agent` is this module on the command line.
//!
//! One [`Agent::run`] is one management session:
//!
//! 1. **Handshake** (`POST {base}/handshake?sessionId=…`): the SEs it can reach, HTTPS,
//!    `application/json`, version 2.0.0.
//! 2. **Command exchange** (`POST {base}/remoteManagement?sessionId=…`): the first report is
//!    void (`POLLING`); each answer is an order, whose commands run one by one — Start,
//!    SE RAM commands (every C-APDU to the SE, R-APDUs collected as upper-case hex),
//!    notifications (an [`AgentEvent::Notification`]) — and the next request reports their
//!    responses (`executedSeRamCommands`, `ramResponses`), until a Stop, after which nothing is
//!    sent. Between an answer and the next request the agent pauses for the order's `delay`
//!    (milliseconds), or [`AgentOptions::default_pause`] (1 s) when it has none.
//!
//! Failures (binding "Transmission Errors", Overview "Local Agent Behaviour"):
//! - A C-APDU that cannot be transmitted ends its SE RAM command: its response holds the
//!   R-APDUs received so far (none for the failed one), every later SE RAM command of the
//!   order is discarded, and the report says `UNAVAILABLE_SE` (the SE did not answer) or
//!   `UNKNOWN_FAILURE` (a C-APDU that is not hex, an unknown command type, a command before
//!   Start) with an `errorMsg`; `executedSeRamCommands` counts the commands completed.
//! - A closed connection or no answer within [`AgentOptions::request_timeout`] (40 s): the
//!   same request is sent again at once on a new connection, then with growing pauses, for at
//!   most [`AgentOptions::retry_for`] (5 min); `5xx` answers are retried the same way. The
//!   report is re-sent byte for byte, so a server that already took it answers with the same
//!   order and no command runs twice.
//! - `404` (unknown session), `406`, any other `4xx`, a server certificate that does not
//!   verify, or an answer that is not a SERAM message end the run with an [`AgentError`] at
//!   once.
//!
//! The transport is blocking (PC/SC calls may take seconds): each APDU runs on tokio's
//! blocking pool.

mod http;

pub use self::http::CookieJar;
use self::http::{Endpoint, SeramClient};
use crate::seram_types::{
    BASE_PATH, HandshakeCommand, HandshakeResponse, HexApdu, LocalAgentStatusEnum, RamCommand, RamResponse, RemoteManagementOrder,
    RemoteManagementReport, SERAM_VERSION,
};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use thiserror::Error;
use tsm_gp::transport::{Transport, TransportError};

/// The SE an agent offers in the handshake (`secureElement`: type, id, extra info).
pub use crate::seram_types::SecureElement as SecureElementInfo;
pub use crate::seram_types::SeType;

/// Timers and TLS settings. [`Default`] is the binding's values.
#[derive(Debug, Clone)]
pub struct AgentOptions {
    /// No answer within this → the request is abandoned (connection closed) and sent again.
    /// Binding: 40 s (above the server's 30 s long-poll bound).
    pub request_timeout: Duration,
    /// How long to keep retrying one request after its first failure. Binding: 5 minutes.
    pub retry_for: Duration,
    /// Pause between an answer and the next request when the order has no `delay`. Binding: 1 s.
    pub default_pause: Duration,
    /// Upper bound on an order's `delay` (a server asking for more is capped). Default 5 min:
    /// after that the server considers the agent lost anyway.
    pub max_pause: Duration,
    /// First pause between retries after the immediate one; doubles up to `backoff_max`.
    pub backoff_start: Duration,
    pub backoff_max: Duration,
    /// PEM certificate(s) to trust for `https://` instead of the system's roots (a private
    /// TSM CA; tests). `None`: the system's roots.
    pub root_ca_pem: Option<Vec<u8>>,
}

impl Default for AgentOptions {
    fn default() -> Self {
        AgentOptions {
            request_timeout: crate::seram_types::REQUEST_TIMEOUT,
            retry_for: crate::seram_types::RETRY_FOR,
            default_pause: crate::seram_types::DEFAULT_PAUSE,
            max_pause: crate::seram_types::RETRY_FOR,
            backoff_start: Duration::from_millis(500),
            backoff_max: Duration::from_secs(30),
            root_ca_pem: None,
        }
    }
}

/// What happens, as it happens (for progress output and for saving the card's state).
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum AgentEvent {
    /// The server chose these.
    Handshake { transport: String, data_format: String, version: String },
    /// An order arrived (1-based count), with its number of commands and SE RAM commands.
    OrderReceived { number: u64, commands: usize, se_ram_commands: usize, delay_ms: Option<u64> },
    /// The order chose an SE (`known`: the agent has it; if not, its SE RAM commands fail).
    SecureElementChosen { se_id: String, known: bool },
    /// Start command.
    Started,
    /// One C-APDU and its R-APDU. `command` is the 1-based SE RAM command of the order, `index`
    /// the 1-based APDU in it.
    Apdu { command: usize, index: usize, capdu: Vec<u8>, rapdu: Vec<u8>, elapsed: Duration },
    /// An SE RAM command completed.
    SeRamCommandDone { command: usize, apdus: usize },
    /// An SE RAM command stopped: the C-APDU `index` (1-based) was not transmitted.
    SeRamCommandFailed { command: usize, index: usize, status: LocalAgentStatusEnum, message: String },
    /// SE RAM commands of the order left out after a failure.
    Discarded { se_ram_commands: usize },
    /// A notification command for the device application.
    Notification(String),
    /// Something the server did that the protocol does not expect (the agent carries on).
    Warning(String),
    /// The order's commands have run (a good moment to persist the SE's state: the report
    /// has not been sent yet).
    OrderExecuted { number: u64 },
    /// A report is about to be sent (the first attempt).
    Reporting { status: LocalAgentStatusEnum, executed: u32, responses: usize },
    /// A request failed and is tried again after `wait`.
    Retrying { endpoint: &'static str, attempt: u32, error: String, wait: Duration },
    /// Stop command: the session is over.
    Stopped,
}

/// What a completed session did.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct AgentSummary {
    /// The server's handshake choices.
    pub handshake: Option<HandshakeResponse>,
    /// Orders received, void ones included.
    pub orders: u64,
    /// SE RAM commands completed.
    pub se_ram_commands: u64,
    /// SE RAM commands that stopped on a failure.
    pub failed_se_ram_commands: u64,
    /// SE RAM commands discarded after a failure.
    pub discarded_se_ram_commands: u64,
    /// C-APDUs answered by the SE.
    pub apdus: u64,
    /// Notification texts, in order.
    pub notifications: Vec<String>,
    /// Reports sent (each counted once, however many attempts it took).
    pub reports: u64,
    /// Requests sent again after a failure.
    pub retries: u64,
    pub elapsed: Duration,
}

/// Why a session did not end with a Stop.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum AgentError {
    #[error("bad server URL {url:?}: {reason}")]
    Url { url: String, reason: String },
    #[error("{0}")]
    Client(String),
    #[error("the server does not know this session ({endpoint} answered 404){}", detail(body))]
    SessionNotFound { endpoint: &'static str, body: String },
    #[error("the server accepts none of the protocols offered (handshake answered 406){}", detail(body))]
    NotAcceptable { body: String },
    #[error("{endpoint} answered HTTP {status}{}", detail(body))]
    Rejected { endpoint: &'static str, status: u16, body: String },
    #[error("no answer from {endpoint} after {attempts} attempts in {tried_for:.0?}: {last_error}")]
    Unreachable { endpoint: &'static str, attempts: u32, tried_for: Duration, last_error: String },
    #[error("TLS: {0}")]
    Tls(String),
    #[error("protocol: {0}")]
    Protocol(String),
    #[error("cannot start the agent's runtime: {0}")]
    Runtime(String),
}

fn detail(body: &str) -> String {
    if body.trim().is_empty() { String::new() } else { format!(": {}", body.trim()) }
}

impl AgentError {
    /// Stable code (`tsm agent` prints `error[code]`).
    pub fn code(&self) -> &'static str {
        match self {
            AgentError::Url { .. } => "agent.url",
            AgentError::Client(_) => "agent.client",
            AgentError::SessionNotFound { .. } => "agent.session_not_found",
            AgentError::NotAcceptable { .. } => "agent.not_acceptable",
            AgentError::Rejected { .. } => "agent.rejected",
            AgentError::Unreachable { .. } => "agent.unreachable",
            AgentError::Tls(_) => "agent.tls",
            AgentError::Protocol(_) => "agent.protocol",
            AgentError::Runtime(_) => "agent.runtime",
        }
    }
}

/// A transport shared with its owner, so that the owner can read or save the card while the
/// agent holds it (`tsm agent` saves a simulated card after every order through its own
/// handle).
pub struct Shared<T>(pub Arc<Mutex<T>>);

impl<T> Shared<T> {
    pub fn new(inner: T) -> (Shared<T>, Arc<Mutex<T>>) {
        let arc = Arc::new(Mutex::new(inner));
        (Shared(arc.clone()), arc)
    }
}

impl<T: Transport> Transport for Shared<T> {
    fn transmit(&mut self, apdu: &[u8]) -> Result<Vec<u8>, TransportError> {
        let mut guard = self.0.lock().map_err(|_| TransportError::Other("the card's lock was poisoned by a panic".into()))?;
        guard.transmit(apdu)
    }
}

struct SeSlot {
    info: SecureElementInfo,
    /// `None` after the transport panicked.
    transport: Option<Box<dyn Transport + Send>>,
}

/// One management session's local agent. See the module documentation.
pub struct Agent {
    base: reqwest::Url,
    session_id: String,
    slots: Vec<SeSlot>,
    /// The SE that SE RAM commands go to: an index, or the unknown id an order chose.
    current: Result<usize, String>,
    options: AgentOptions,
    started: bool,
}

impl std::fmt::Debug for Agent {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Agent")
            .field("base", &self.base.as_str())
            .field("session_id", &self.session_id)
            .field("secure_elements", &self.slots.iter().map(|s| &s.info.se_id).collect::<Vec<_>>())
            .finish_non_exhaustive()
    }
}

/// How an order ended.
enum Outcome {
    Report(RemoteManagementReport),
    Stop,
}

impl Agent {
    /// An agent for session `session_id` at the RA endpoint `server_base_url`
    /// (`https://host/gp/seram`; a URL without a path gets `/gp/seram`, the spec's base path;
    /// `http://` is for loopback tests), offering the SE `se` reached through `transport`.
    pub fn new(
        server_base_url: &str,
        session_id: impl Into<String>,
        se: SecureElementInfo,
        transport: Box<dyn Transport + Send>,
        options: AgentOptions,
    ) -> Result<Agent, AgentError> {
        let bad = |reason: &str| AgentError::Url { url: server_base_url.to_string(), reason: reason.to_string() };
        let mut base = reqwest::Url::parse(server_base_url).map_err(|e| bad(&e.to_string()))?;
        if !matches!(base.scheme(), "https" | "http") {
            return Err(bad("the scheme must be https (or http for tests)"));
        }
        if base.host_str().is_none_or(str::is_empty) {
            return Err(bad("no host"));
        }
        if base.path() == "/" || base.path().is_empty() {
            base.set_path(BASE_PATH);
        }
        base.set_fragment(None);
        let session_id = session_id.into();
        if session_id.is_empty() {
            return Err(AgentError::Protocol("empty session id".into()));
        }
        Ok(Agent { base, session_id, slots: vec![SeSlot { info: se, transport: Some(transport) }], current: Ok(0), options, started: false })
    }

    /// Offers one more SE in the handshake (after the first: they are listed by preference).
    /// An order's `chosenSecureElement` picks which one SE RAM commands go to.
    pub fn add_secure_element(&mut self, se: SecureElementInfo, transport: Box<dyn Transport + Send>) {
        self.slots.push(SeSlot { info: se, transport: Some(transport) });
    }

    /// The RA endpoint (base URL) in use.
    pub fn endpoint(&self) -> &str {
        self.base.as_str()
    }

    /// Runs the session on a runtime of its own (for callers without one, like the CLI).
    pub fn run_blocking(&mut self, progress: impl FnMut(AgentEvent)) -> Result<AgentSummary, AgentError> {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().map_err(|e| AgentError::Runtime(e.to_string()))?;
        rt.block_on(self.run(progress))
    }

    /// Runs one management session: handshake, then orders until Stop.
    pub async fn run(&mut self, mut progress: impl FnMut(AgentEvent)) -> Result<AgentSummary, AgentError> {
        let progress: &mut dyn FnMut(AgentEvent) = &mut progress;
        let t0 = Instant::now();
        let mut client = SeramClient::new(&self.base, &self.session_id, &self.options)?;
        let mut summary = AgentSummary::default();
        self.started = false;

        let hello = HandshakeCommand::new(self.slots.iter().map(|s| s.info.clone()).collect());
        let body = serde_json::to_vec(&hello).map_err(|e| AgentError::Protocol(e.to_string()))?;
        let chosen: HandshakeResponse = client.post(Endpoint::Handshake, &body, progress).await?;
        check_handshake(&hello, &chosen)?;
        progress(AgentEvent::Handshake {
            transport: chosen.chosen_transport_protocol.clone(),
            data_format: chosen.chosen_data_format.clone(),
            version: chosen.chosen_version.clone(),
        });
        summary.handshake = Some(chosen);

        // The first request of the command exchange is always void (binding "HTTP Polling").
        let mut report = RemoteManagementReport::polling();
        loop {
            // Serialized once: every attempt carries the same bytes.
            let body = serde_json::to_vec(&report).map_err(|e| AgentError::Protocol(e.to_string()))?;
            progress(AgentEvent::Reporting {
                status: report.status().clone(),
                executed: report.executed(),
                responses: report.ram_responses.len(),
            });
            let order: RemoteManagementOrder = client.post(Endpoint::RemoteManagement, &body, progress).await?;
            let answered = Instant::now();
            summary.reports += 1;
            summary.orders += 1;
            summary.retries = client.retries;
            progress(AgentEvent::OrderReceived {
                number: summary.orders,
                commands: order.ram_commands.len(),
                se_ram_commands: order.se_ram_count(),
                delay_ms: order.delay,
            });
            let outcome = self.execute(&order, &mut summary, progress).await;
            if !order.is_void() {
                progress(AgentEvent::OrderExecuted { number: summary.orders });
            }
            match outcome {
                Outcome::Stop => {
                    progress(AgentEvent::Stopped);
                    summary.elapsed = t0.elapsed();
                    return Ok(summary);
                }
                Outcome::Report(r) => report = r,
            }
            // The pause runs from the answer, so time spent on the SE counts towards it.
            let pause = order.pause(self.options.default_pause).min(self.options.max_pause);
            tokio::time::sleep_until((answered + pause).into()).await;
        }
    }

    /// Runs an order's commands; the report to send, or Stop.
    async fn execute(&mut self, order: &RemoteManagementOrder, summary: &mut AgentSummary, progress: &mut dyn FnMut(AgentEvent)) -> Outcome {
        if let Some(se) = &order.chosen_secure_element {
            let found = self
                .slots
                .iter()
                .position(|s| s.info.se_id == se.se_id)
                .or_else(|| self.slots.iter().position(|s| s.info.se_id.eq_ignore_ascii_case(&se.se_id)));
            progress(AgentEvent::SecureElementChosen { se_id: se.se_id.clone(), known: found.is_some() });
            self.current = found.ok_or_else(|| se.se_id.clone());
        }
        if order.is_void() {
            return Outcome::Report(RemoteManagementReport::polling());
        }
        let mut responses: Vec<RamResponse> = Vec::new();
        let mut executed: u32 = 0;
        let mut failure: Option<(LocalAgentStatusEnum, String)> = None;
        let mut se_ram_no = 0usize;
        let mut discarded = 0usize;
        for (i, cmd) in order.ram_commands.iter().enumerate() {
            match cmd {
                RamCommand::Start => {
                    if self.started {
                        progress(AgentEvent::Warning("a second Start command (ignored)".into()));
                    }
                    self.started = true;
                    progress(AgentEvent::Started);
                }
                RamCommand::Stop => {
                    if i + 1 < order.ram_commands.len() {
                        progress(AgentEvent::Warning(format!("{} command(s) after Stop ignored", order.ram_commands.len() - i - 1)));
                    }
                    if discarded > 0 {
                        progress(AgentEvent::Discarded { se_ram_commands: discarded });
                    }
                    // ramStopCommand: no report follows; remaining responses are discarded.
                    return Outcome::Stop;
                }
                RamCommand::Notification { device_app_notification } => {
                    if !self.started {
                        progress(AgentEvent::Warning("a notification before the Start command".into()));
                    }
                    summary.notifications.push(device_app_notification.clone());
                    progress(AgentEvent::Notification(device_app_notification.clone()));
                }
                RamCommand::SeRam { list_of_capdu } => {
                    se_ram_no += 1;
                    if failure.is_some() {
                        // Overview "Local Agent Behaviour": after a transmission error the
                        // remaining C-APDUs are discarded.
                        discarded += 1;
                        summary.discarded_se_ram_commands += 1;
                        continue;
                    }
                    if !self.started {
                        let msg = format!("SE RAM command {se_ram_no} arrived before the Start command");
                        progress(AgentEvent::SeRamCommandFailed { command: se_ram_no, index: 1, status: LocalAgentStatusEnum::UnknownFailure, message: msg.clone() });
                        summary.failed_se_ram_commands += 1;
                        failure = Some((LocalAgentStatusEnum::UnknownFailure, msg));
                        continue;
                    }
                    let (rapdus, err) = self.run_se_ram(se_ram_no, list_of_capdu, summary, progress).await;
                    responses.push(RamResponse::SeRam { list_of_rapdu: rapdus });
                    match err {
                        None => {
                            executed += 1;
                            summary.se_ram_commands += 1;
                            progress(AgentEvent::SeRamCommandDone { command: se_ram_no, apdus: list_of_capdu.len() });
                        }
                        Some((index, status, message)) => {
                            summary.failed_se_ram_commands += 1;
                            progress(AgentEvent::SeRamCommandFailed { command: se_ram_no, index, status: status.clone(), message: message.clone() });
                            failure = Some((status, message));
                        }
                    }
                }
                RamCommand::Other { ram_command_type, .. } => {
                    if failure.is_none() {
                        let msg = format!("command {} of the order: unsupported ramCommandType {ram_command_type:?}", i + 1);
                        progress(AgentEvent::Warning(msg.clone()));
                        failure = Some((LocalAgentStatusEnum::UnknownFailure, msg));
                    }
                }
            }
        }
        if discarded > 0 {
            progress(AgentEvent::Discarded { se_ram_commands: discarded });
        }
        Outcome::Report(match failure {
            None => RemoteManagementReport::processed(executed, responses),
            Some((status, msg)) => {
                let msg = if discarded > 0 { format!("{msg}; {discarded} later SE RAM command(s) discarded") } else { msg };
                RemoteManagementReport::failed(status, executed, responses, msg)
            }
        })
    }

    /// Sends one SE RAM command's C-APDUs. The R-APDUs received, and where and why it stopped.
    #[allow(clippy::type_complexity)]
    async fn run_se_ram(
        &mut self,
        command: usize,
        capdus: &[HexApdu],
        summary: &mut AgentSummary,
        progress: &mut dyn FnMut(AgentEvent),
    ) -> (Vec<HexApdu>, Option<(usize, LocalAgentStatusEnum, String)>) {
        let mut rapdus = Vec::with_capacity(capdus.len());
        let slot = match &self.current {
            Ok(i) => *i,
            Err(unknown) => {
                let msg = format!("SE RAM command {command}: the order chose the secure element {unknown:?}, which this agent does not have");
                return (rapdus, Some((1, LocalAgentStatusEnum::UnavailableSe, msg)));
            }
        };
        let total = capdus.len();
        for (j, capdu) in capdus.iter().enumerate() {
            let at = format!("SE RAM command {command}, C-APDU {} of {total}", j + 1);
            let bytes = match capdu.decode() {
                Ok(b) if b.len() >= 4 => b,
                Ok(b) => return (rapdus, Some((j + 1, LocalAgentStatusEnum::UnknownFailure, format!("{at}: {} byte(s), not an APDU", b.len())))),
                Err(e) => return (rapdus, Some((j + 1, LocalAgentStatusEnum::UnknownFailure, format!("{at}: not hex ({e})")))),
            };
            let started = Instant::now();
            match transmit(&mut self.slots[slot].transport, bytes.clone()).await {
                Ok(r) => {
                    summary.apdus += 1;
                    rapdus.push(HexApdu::from_bytes(&r));
                    progress(AgentEvent::Apdu { command, index: j + 1, capdu: bytes, rapdu: r, elapsed: started.elapsed() });
                }
                Err((status, e)) => return (rapdus, Some((j + 1, status, format!("{at}: {e}")))),
            }
        }
        (rapdus, None)
    }
}

/// One APDU on the blocking pool; the transport goes there and comes back.
async fn transmit(slot: &mut Option<Box<dyn Transport + Send>>, apdu: Vec<u8>) -> Result<Vec<u8>, (LocalAgentStatusEnum, String)> {
    let Some(mut t) = slot.take() else {
        return Err((LocalAgentStatusEnum::UnavailableSe, "the SE's transport is gone (it panicked earlier)".into()));
    };
    match tokio::task::spawn_blocking(move || {
        let r = t.transmit(&apdu);
        (t, r)
    })
    .await
    {
        Ok((t, r)) => {
            *slot = Some(t);
            // Any transmission failure means the SE did not answer.
            r.map_err(|e| (LocalAgentStatusEnum::UnavailableSe, format!("{e} [{}]", e.code())))
        }
        Err(e) => Err((LocalAgentStatusEnum::UnknownFailure, format!("the SE transport failed: {e}"))),
    }
}

/// The server must choose among what was offered; a major version other than 2 is refused.
fn check_handshake(offer: &HandshakeCommand, chosen: &HandshakeResponse) -> Result<(), AgentError> {
    let offered = |list: Vec<String>, value: &str| list.iter().any(|v| v.eq_ignore_ascii_case(value));
    if !offered(offer.transport_protocols(), &chosen.chosen_transport_protocol) {
        return Err(AgentError::Protocol(format!("the server chose transport {:?}, which was not offered", chosen.chosen_transport_protocol)));
    }
    if !offered(offer.data_formats(), &chosen.chosen_data_format) {
        return Err(AgentError::Protocol(format!("the server chose data format {:?}, which was not offered", chosen.chosen_data_format)));
    }
    let major = |v: &str| v.split('.').next().map(str::trim).map(str::to_string);
    if major(&chosen.chosen_version) != major(SERAM_VERSION) {
        return Err(AgentError::Protocol(format!("the server chose version {:?}; this agent speaks {SERAM_VERSION}", chosen.chosen_version)));
    }
    Ok(())
}
