//! The local agent against a scripted SERAM server (hyper, in this file) and simulated cards:
//! the whole session, long polls, lost connections and answers, server errors, transport
//! failures, unknown sessions, the spec's alternative names, several SEs, and TLS.

use axum::body::Body;
use hyper::body::Incoming;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use serde_json::{Value, json};
use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tsm_gp::profile::CardProfile;
use tsm_gp::transport::{Transport, TransportError};
use tsm_se::{CardConfig, SimCard};
use tsm_server::agent::{Agent, AgentError, AgentEvent, AgentOptions, AgentSummary, SeType, SecureElementInfo};

const SESSION: &str = "0f96af97-f879-45a2-a011-ee7439df3804";
const SELECT_ISD: &str = "00A4040008A000000151000000";
const GET_CPLC: &str = "80CA9F7F00";

// ---------------------------------------------------------------------------------------------
// The scripted remote agent

/// One request as the server saw it.
#[derive(Debug, Clone)]
struct Exchange {
    path: String,
    session_id: Option<String>,
    cookie: Option<String>,
    content_type: Option<String>,
    body: Value,
    at: Instant,
}

/// What the server does with a request.
enum Reply {
    Json(Value),
    Status(u16, String),
    /// Close the connection without answering.
    Drop,
    /// Answer after a while (a long poll, or longer than the agent waits).
    After(Duration, Box<Reply>),
    WithCookie(String, Box<Reply>),
    /// From a hook: the script takes the request (its state moves on), but the answer is lost
    /// (the connection closes).
    LoseAnswer,
    /// From a hook: the script takes the request, and answers after this long.
    LateAnswer(Duration),
}

/// Runs before the script: `Some` replaces the scripted answer to request `n` (0-based).
type Hook = Box<dyn FnMut(usize, &Exchange) -> Option<Reply> + Send>;

struct Script {
    session: String,
    handshake: Value,
    orders: VecDeque<Value>,
    /// The last report taken, the order that answered it and its sequence number: a repeated
    /// report gets the same order again (as the real server does).
    last: Option<(Value, Value, u32)>,
    seq: u32,
    hook: Hook,
    log: Vec<Exchange>,
}

impl Script {
    fn answer(&mut self, ex: &Exchange) -> Reply {
        let n = self.log.len();
        self.log.push(ex.clone());
        match (self.hook)(n, ex) {
            Some(Reply::LoseAnswer) => {
                let _ = self.scripted(ex);
                return Reply::Drop;
            }
            Some(Reply::LateAnswer(d)) => return Reply::After(d, Box::new(self.scripted(ex))),
            Some(r) => return r,
            None => {}
        }
        self.scripted(ex)
    }

    fn scripted(&mut self, ex: &Exchange) -> Reply {
        if ex.session_id.as_deref() != Some(self.session.as_str()) {
            return Reply::Status(404, "sessionId not found".into());
        }
        match ex.path.as_str() {
            "/gp/seram/handshake" => Reply::WithCookie("seram-order=0; Path=/gp/seram; HttpOnly".into(), Box::new(Reply::Json(self.handshake.clone()))),
            "/gp/seram/remoteManagement" => {
                // A repeat carries the cookie of the order before the last one (the agent never
                // got the last) and the same body. The body alone does not tell: reports to
                // different orders can be equal (Start, then a notification: PROCESSED, 0).
                if let Some((report, order, seq)) = &self.last {
                    let previous = format!("seram-order={}", seq - 1);
                    if *report == ex.body && ex.cookie.as_deref() == Some(previous.as_str()) {
                        return Reply::WithCookie(format!("seram-order={seq}"), Box::new(Reply::Json(order.clone())));
                    }
                }
                self.seq += 1;
                let order = self.orders.pop_front().unwrap_or_else(|| json!({"delay": 20}));
                self.last = Some((ex.body.clone(), order.clone(), self.seq));
                Reply::WithCookie(format!("seram-order={}", self.seq), Box::new(Reply::Json(order)))
            }
            _ => Reply::Status(404, "no such endpoint".into()),
        }
    }
}

struct Server {
    addr: SocketAddr,
    script: Arc<Mutex<Script>>,
}

impl Server {
    fn url(&self) -> String {
        format!("http://{}/gp/seram", self.addr)
    }
    fn log(&self) -> Vec<Exchange> {
        self.script.lock().unwrap().log.clone()
    }
    /// The bodies of the /remoteManagement requests, in order.
    fn reports(&self) -> Vec<Exchange> {
        self.log().into_iter().filter(|e| e.path.ends_with("/remoteManagement")).collect()
    }
}

fn standard_handshake() -> Value {
    json!({"chosenTransportProtocol": "HTTPS", "chosenDataFormat": "application/json", "chosenVersion": "2.0.0"})
}

async fn serve(orders: Vec<Value>, hook: Hook) -> Server {
    serve_with(orders, hook, standard_handshake(), None).await
}

async fn serve_with(orders: Vec<Value>, hook: Hook, handshake: Value, tls: Option<tokio_rustls::TlsAcceptor>) -> Server {
    let script = Arc::new(Mutex::new(Script {
        session: SESSION.into(),
        handshake,
        orders: orders.into(),
        last: None,
        seq: 0,
        hook,
        log: Vec::new(),
    }));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let s = script.clone();
    tokio::spawn(async move {
        loop {
            let Ok((tcp, _)) = listener.accept().await else { continue };
            let script = s.clone();
            let tls = tls.clone();
            tokio::spawn(async move {
                let service = hyper::service::service_fn(move |req| handle(req, script.clone()));
                let http = hyper::server::conn::http1::Builder::new();
                match tls {
                    Some(acceptor) => {
                        if let Ok(stream) = acceptor.accept(tcp).await {
                            let _ = http.serve_connection(TokioIo::new(stream), service).await;
                        }
                    }
                    None => {
                        let _ = http.serve_connection(TokioIo::new(tcp), service).await;
                    }
                }
            });
        }
    });
    Server { addr, script }
}

async fn handle(req: Request<Incoming>, script: Arc<Mutex<Script>>) -> Result<Response<Body>, std::io::Error> {
    let (parts, body) = req.into_parts();
    let bytes = axum::body::to_bytes(Body::new(body), 1 << 20).await.map_err(std::io::Error::other)?;
    let session_id = parts.uri.query().and_then(|q| {
        q.split('&').find_map(|kv| kv.strip_prefix("sessionId=").map(|v| v.replace("%2D", "-")))
    });
    let header = |name: &str| parts.headers.get(name).and_then(|v| v.to_str().ok()).map(str::to_string);
    let ex = Exchange {
        path: parts.uri.path().to_string(),
        session_id,
        cookie: header("cookie"),
        content_type: header("content-type"),
        body: serde_json::from_slice(&bytes).unwrap_or(Value::Null),
        at: Instant::now(),
    };
    let reply = script.lock().unwrap().answer(&ex);
    respond(reply).await
}

async fn respond(reply: Reply) -> Result<Response<Body>, std::io::Error> {
    let mut reply = reply;
    let mut cookies = Vec::new();
    loop {
        reply = match reply {
            Reply::After(d, r) => {
                tokio::time::sleep(d).await;
                *r
            }
            Reply::WithCookie(c, r) => {
                cookies.push(c);
                *r
            }
            Reply::Drop | Reply::LoseAnswer => return Err(std::io::Error::other("scripted: connection dropped")),
            Reply::LateAnswer(d) => Reply::After(d, Box::new(Reply::Json(json!({})))),
            Reply::Json(v) => {
                let mut b = Response::builder().status(200).header("content-type", "application/json");
                for c in &cookies {
                    b = b.header("set-cookie", c);
                }
                return Ok(b.body(Body::from(v.to_string())).unwrap());
            }
            Reply::Status(code, text) => return Ok(Response::builder().status(code).body(Body::from(text)).unwrap()),
        }
    }
}

fn no_hook() -> Hook {
    Box::new(|_, _| None)
}

// ---------------------------------------------------------------------------------------------
// Cards

/// A simulated card that records the C-APDUs it got and can fail one transmission.
struct Recorder {
    card: SimCard,
    seen: Arc<Mutex<Vec<String>>>,
    /// Fail the n-th transmission (1-based) with this error, without reaching the card.
    fail_at: Option<(usize, TransportError)>,
    count: usize,
}

impl Transport for Recorder {
    fn transmit(&mut self, apdu: &[u8]) -> Result<Vec<u8>, TransportError> {
        self.count += 1;
        if let Some((_, e)) = self.fail_at.as_ref().filter(|(n, _)| *n == self.count) {
            return Err(e.clone());
        }
        self.seen.lock().unwrap().push(tsm_gp::hex::encode(apdu));
        Ok(self.card.transmit(apdu))
    }
}

fn card(profile: &str) -> SimCard {
    SimCard::new(CardProfile::builtin(profile).unwrap(), CardConfig::default()).unwrap()
}

fn recorder(profile: &str, fail_at: Option<(usize, TransportError)>) -> (Box<Recorder>, Arc<Mutex<Vec<String>>>) {
    let seen = Arc::new(Mutex::new(Vec::new()));
    (Box::new(Recorder { card: card(profile), seen: seen.clone(), fail_at, count: 0 }), seen)
}

/// What GET DATA 9F7F answers: the profile's CPLC with its tag, then 9000 (from the profile,
/// not from the card).
fn cplc_answer(profile: &str) -> String {
    let cplc = CardProfile::builtin(profile).unwrap().cplc;
    format!("9F7F{:02X}{}9000", cplc.len(), tsm_gp::hex::encode(&cplc))
}

fn se(id: &str) -> SecureElementInfo {
    SecureElementInfo::new(SeType::Uicc, id)
}

fn fast() -> AgentOptions {
    AgentOptions {
        request_timeout: Duration::from_secs(10),
        retry_for: Duration::from_secs(10),
        default_pause: Duration::from_millis(150),
        backoff_start: Duration::from_millis(50),
        backoff_max: Duration::from_millis(200),
        ..AgentOptions::default()
    }
}

fn start() -> Value {
    json!({"delay": 0, "ramCommands": [{"ramCommandType": "ramStartCommand"}]})
}
fn stop() -> Value {
    json!({"delay": 0, "ramCommands": [{"ramCommandType": "ramStopCommand"}]})
}
fn se_ram(lists: &[&[&str]]) -> Value {
    json!({"delay": 0, "ramCommands": lists.iter().map(|l| json!({"ramCommandType": "seRamCommand", "listOfCAPDU": l})).collect::<Vec<_>>()})
}

async fn run(agent: &mut Agent) -> (Result<AgentSummary, AgentError>, Vec<AgentEvent>) {
    let mut events = Vec::new();
    let r = tokio::time::timeout(Duration::from_secs(60), agent.run(|e| { if std::env::var("AGENT_DEBUG").is_ok() { eprintln!("{e:?}"); } events.push(e) })).await.expect("the agent did not finish within 60 s");
    (r, events)
}

fn status(report: &Value) -> (&str, u64) {
    let s = &report["localAgentStatus"];
    (s["localAgentStatusEnum"].as_str().unwrap(), s["executedSeRamCommands"].as_u64().unwrap())
}

fn rapdus(report: &Value) -> Vec<Vec<String>> {
    report["ramResponses"]
        .as_array()
        .map(|a| {
            a.iter()
                .map(|r| {
                    assert_eq!(r["ramResponseType"], "seRamResponse");
                    r["listOfRAPDU"].as_array().unwrap().iter().map(|x| x.as_str().unwrap().to_string()).collect()
                })
                .collect()
        })
        .unwrap_or_default()
}

// ---------------------------------------------------------------------------------------------
// Tests

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn whole_session_on_a_simulated_card() {
    let orders = vec![
        // A void order without delay first: the agent pauses default_pause.
        json!({}),
        start(),
        se_ram(&[&[SELECT_ISD, GET_CPLC], &[GET_CPLC]]),
        json!({"delay": 300, "ramCommands": [{"ramCommandType": "notificationCommand", "deviceAppNotification": "step1/action2/OK"}]}),
        stop(),
    ];
    let server = serve(orders, no_hook()).await;
    let (t, seen) = recorder("uicc", None);
    let opts = AgentOptions { default_pause: Duration::from_secs(1), ..fast() };
    let mut agent = Agent::new(&server.url(), SESSION, SecureElementInfo { se_type: SeType::Uicc, se_id: "CPLC-4790504000000001".into(), se_extra_info: None }, t, opts).unwrap();
    let (result, events) = run(&mut agent).await;
    let summary = result.unwrap();

    // The handshake: the session in the query, JSON, our SE and capabilities under the
    // schema's names.
    let log = server.log();
    assert_eq!(log[0].path, "/gp/seram/handshake");
    assert_eq!(log[0].session_id.as_deref(), Some(SESSION));
    assert_eq!(log[0].content_type.as_deref(), Some("application/json"));
    assert_eq!(
        log[0].body,
        json!({
            "secureElements": [{"seType": "uicc", "seId": "CPLC-4790504000000001"}],
            "supportedTransportProtocols": ["HTTPS"],
            "supportedDataFormats": ["application/json"],
            "supportedVersions": ["2.0.0"],
        })
    );

    // One report per order but the last (Stop): void, void, Start, SE RAM, notification.
    let reports = server.reports();
    assert_eq!(reports.len(), 5, "{reports:#?}");
    assert_eq!(reports[0].body, json!({"localAgentStatus": {"localAgentStatusEnum": "POLLING", "executedSeRamCommands": 0}}));
    assert_eq!(reports[1].body, reports[0].body, "a void order is answered by polling");
    assert_eq!(reports[2].body, json!({"localAgentStatus": {"localAgentStatusEnum": "PROCESSED", "executedSeRamCommands": 0}}));
    assert_eq!(status(&reports[3].body), ("PROCESSED", 2));
    let r = rapdus(&reports[3].body);
    assert_eq!(r.len(), 2);
    assert!(r[0][0].starts_with("6F") && r[0][0].ends_with("9000"), "SELECT answers an FCI: {}", r[0][0]);
    assert_eq!(r[0][1], cplc_answer("uicc"));
    assert_eq!(r[1], vec![cplc_answer("uicc")]);
    assert_eq!(reports[4].body, json!({"localAgentStatus": {"localAgentStatusEnum": "PROCESSED", "executedSeRamCommands": 0}}));

    // Every session id, every cookie of the previous answer.
    for (k, rep) in reports.iter().enumerate() {
        assert_eq!(rep.session_id.as_deref(), Some(SESSION));
        assert_eq!(rep.cookie.as_deref(), Some(format!("seram-order={k}").as_str()), "report {k}");
    }

    // Pauses, counted from each answer: default_pause after the order without delay, none
    // after delay 0, the order's delay (300 ms) after the notification order.
    let gap = |k: usize| reports[k].at.duration_since(reports[k - 1].at);
    assert!(gap(1) >= Duration::from_secs(1), "{:?}", gap(1));
    assert!(gap(2) < Duration::from_millis(700), "delay 0: {:?}", gap(2));
    assert!(gap(3) < Duration::from_millis(700), "delay 0: {:?}", gap(3));
    assert!(gap(4) >= Duration::from_millis(300), "delay 300: {:?}", gap(4));

    assert_eq!(*seen.lock().unwrap(), vec![SELECT_ISD, GET_CPLC, GET_CPLC]);
    assert_eq!(summary.orders, 5);
    assert_eq!(summary.se_ram_commands, 2);
    assert_eq!(summary.apdus, 3);
    assert_eq!(summary.notifications, vec!["step1/action2/OK"]);
    assert_eq!(summary.retries, 0);
    assert!(events.contains(&AgentEvent::Started) && events.contains(&AgentEvent::Stopped));
    assert!(events.contains(&AgentEvent::Notification("step1/action2/OK".into())));
    assert_eq!(events.iter().filter(|e| matches!(e, AgentEvent::Apdu { .. })).count(), 3);
    assert_eq!(events.iter().filter(|e| matches!(e, AgentEvent::OrderExecuted { .. })).count(), 4);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_order_delay_is_honoured() {
    let orders = vec![start(), json!({"delay": 400, "ramCommands": [{"ramCommandType": "notificationCommand", "deviceAppNotification": "n"}]}), stop()];
    let server = serve(orders, no_hook()).await;
    let (t, _) = recorder("uicc", None);
    let mut agent = Agent::new(&server.url(), SESSION, se("A"), t, fast()).unwrap();
    run(&mut agent).await.0.unwrap();
    let reports = server.reports();
    assert_eq!(reports.len(), 3);
    let gap = reports[2].at.duration_since(reports[1].at);
    assert!(gap >= Duration::from_millis(400) && gap < Duration::from_millis(2000), "{gap:?}");
    let gap = reports[1].at.duration_since(reports[0].at);
    assert!(gap < Duration::from_millis(400), "delay 0 means no pause: {gap:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn long_polls_are_waited_for() {
    // The server holds the first two polls for 2 s each before a void answer.
    let hook: Hook = Box::new(|n, _| (n == 1 || n == 2).then(|| Reply::After(Duration::from_secs(2), Box::new(Reply::Json(json!({"delay": 0}))))));
    let server = serve(vec![start(), se_ram(&[&[GET_CPLC]]), stop()], hook).await;
    let (t, _) = recorder("uicc", None);
    let opts = AgentOptions { request_timeout: Duration::from_secs(5), ..fast() };
    let mut agent = Agent::new(&server.url(), SESSION, se("A"), t, opts).unwrap();
    let t0 = Instant::now();
    let summary = run(&mut agent).await.0.unwrap();
    assert!(t0.elapsed() >= Duration::from_secs(4));
    assert_eq!(summary.retries, 0, "a long poll inside the request timeout is not a failure");
    let reports = server.reports();
    // Two held polls, then the reports to Start and to the SE RAM command.
    assert_eq!(reports[1].body, reports[0].body);
    assert_eq!(status(&reports[4].body), ("PROCESSED", 1));
    assert_eq!(rapdus(&reports[4].body), vec![vec![cplc_answer("uicc")]]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dropped_connection_gets_the_same_report_again() {
    // Request 3 is the report carrying the SE RAM responses; the server takes it (its next
    // order is chosen), then the connection closes before the answer, once.
    let hook: Hook = Box::new(move |n, _| (n == 3).then_some(Reply::LoseAnswer));
    let server = serve(vec![start(), se_ram(&[&[SELECT_ISD, GET_CPLC]]), json!({"delay": 0, "ramCommands": [{"ramCommandType": "seRamCommand", "listOfCAPDU": [GET_CPLC]}]}), stop()], hook).await;
    let (t, seen) = recorder("uicc", None);
    // A long backoff, so that an immediate reconnection is told apart from a backed-off one.
    let opts = AgentOptions { backoff_start: Duration::from_secs(3), backoff_max: Duration::from_secs(3), ..fast() };
    let mut agent = Agent::new(&server.url(), SESSION, se("A"), t, opts).unwrap();
    let (result, events) = run(&mut agent).await;
    let summary = result.unwrap();
    let reports = server.reports();
    // polling, Start's report, SE RAM report (dropped), the same again, the last SE RAM report.
    assert_eq!(reports.len(), 5, "{reports:#?}");
    assert_eq!(reports[2].body, reports[3].body, "the same report is sent again");
    assert_eq!(reports[2].cookie, reports[3].cookie, "with the same cookie");
    assert_eq!(status(&reports[2].body), ("PROCESSED", 1));
    // The reconnection is immediate.
    assert!(reports[3].at.duration_since(reports[2].at) < Duration::from_secs(2));
    // The order answering the repeat is not executed twice: the card saw each APDU once.
    assert_eq!(*seen.lock().unwrap(), vec![SELECT_ISD, GET_CPLC, GET_CPLC]);
    assert_eq!(summary.retries, 1);
    assert!(events.iter().any(|e| matches!(e, AgentEvent::Retrying { attempt: 1, wait, .. } if wait.is_zero())));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_answer_within_the_timeout_sends_the_report_again() {
    // The server takes the report to Start but answers later than the agent waits: the agent
    // gives up on the request and repeats it; the repeat gets the same order (the SE RAM one).
    let hook: Hook = Box::new(move |n, _| (n == 2).then_some(Reply::LateAnswer(Duration::from_secs(5))));
    let server = serve(vec![start(), se_ram(&[&[GET_CPLC]]), stop()], hook).await;
    let (t, seen) = recorder("uicc", None);
    let opts = AgentOptions { request_timeout: Duration::from_millis(800), ..fast() };
    let mut agent = Agent::new(&server.url(), SESSION, se("A"), t, opts).unwrap();
    let summary = run(&mut agent).await.0.unwrap();
    let reports = server.reports();
    // Request 2 of the log is the report of Start; the repeat is request 3.
    assert_eq!(reports[1].body, reports[2].body);
    assert_eq!(reports[1].cookie, reports[2].cookie);
    let gap = reports[2].at.duration_since(reports[1].at);
    assert!(gap >= Duration::from_millis(800) && gap < Duration::from_secs(3), "{gap:?}");
    assert_eq!(summary.retries, 1);
    assert_eq!(*seen.lock().unwrap(), vec![GET_CPLC], "the SE RAM order ran once");
    assert_eq!(rapdus(&reports[3].body), vec![vec![cplc_answer("uicc")]]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_errors_are_retried_with_backoff() {
    // The first two attempts of the report after Start get 500, then the server recovers.
    let hook: Hook = Box::new(|n, _| (n == 2 || n == 3).then(|| Reply::Status(500, "database unavailable".into())));
    let server = serve(vec![start(), se_ram(&[&[GET_CPLC]]), stop()], hook).await;
    let (t, seen) = recorder("uicc", None);
    let mut agent = Agent::new(&server.url(), SESSION, se("A"), t, fast()).unwrap();
    let (result, events) = run(&mut agent).await;
    let summary = result.unwrap();
    let reports = server.reports();
    assert_eq!(reports[1].body, reports[2].body);
    assert_eq!(reports[1].body, reports[3].body);
    assert_eq!(summary.retries, 2);
    let waits: Vec<Duration> = events.iter().filter_map(|e| if let AgentEvent::Retrying { wait, error, .. } = e { assert!(error.contains("500"), "{error}"); Some(*wait) } else { None }).collect();
    assert_eq!(waits, vec![Duration::ZERO, Duration::from_millis(50)]);
    assert_eq!(*seen.lock().unwrap(), vec![GET_CPLC]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_agent_gives_up_after_retry_for() {
    let hook: Hook = Box::new(|n, _| (n >= 1).then(|| Reply::Status(503, String::new())));
    let server = serve(vec![start()], hook).await;
    let (t, _) = recorder("uicc", None);
    let opts = AgentOptions { retry_for: Duration::from_millis(1200), backoff_start: Duration::from_millis(100), backoff_max: Duration::from_millis(300), ..fast() };
    let mut agent = Agent::new(&server.url(), SESSION, se("A"), t, opts).unwrap();
    let t0 = Instant::now();
    let err = run(&mut agent).await.0.unwrap_err();
    let took = t0.elapsed();
    assert!(took >= Duration::from_millis(1200) && took < Duration::from_secs(4), "{took:?}");
    assert_eq!(err.code(), "agent.unreachable");
    let AgentError::Unreachable { attempts, last_error, .. } = &err else { panic!("{err:?}") };
    assert!(*attempts >= 4, "{attempts}");
    assert!(last_error.contains("503"), "{last_error}");
    // The same report every time.
    let reports = server.reports();
    assert!(reports.windows(2).all(|w| w[0].body == w[1].body));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_that_is_not_there_is_retried_then_given_up() {
    // Bind and close a port, so that nothing listens there.
    let addr = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap().local_addr().unwrap();
    let (t, _) = recorder("uicc", None);
    let opts = AgentOptions { retry_for: Duration::from_millis(600), backoff_start: Duration::from_millis(100), ..fast() };
    let mut agent = Agent::new(&format!("http://{addr}"), SESSION, se("A"), t, opts).unwrap();
    assert_eq!(agent.endpoint(), format!("http://{addr}/gp/seram"));
    let err = run(&mut agent).await.0.unwrap_err();
    assert_eq!(err.code(), "agent.unreachable");
    assert!(err.to_string().contains("/handshake"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_session_fails_at_once() {
    let server = serve(vec![], no_hook()).await;
    let (t, _) = recorder("uicc", None);
    let mut agent = Agent::new(&server.url(), "no-such-session", se("A"), t, fast()).unwrap();
    let t0 = Instant::now();
    let err = run(&mut agent).await.0.unwrap_err();
    assert!(t0.elapsed() < Duration::from_secs(2));
    assert_eq!(err.code(), "agent.session_not_found");
    assert!(err.to_string().contains("does not know this session"), "{err}");
    assert_eq!(server.log().len(), 1, "no retry on 404");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn session_gone_mid_session_fails_at_once() {
    let hook: Hook = Box::new(|n, _| (n == 3).then(|| Reply::Status(404, "session expired".into())));
    let server = serve(vec![start(), json!({})], hook).await;
    let (t, _) = recorder("uicc", None);
    let mut agent = Agent::new(&server.url(), SESSION, se("A"), t, fast()).unwrap();
    let err = run(&mut agent).await.0.unwrap_err();
    assert!(matches!(err, AgentError::SessionNotFound { endpoint: "/remoteManagement", .. }), "{err:?}");
    assert_eq!(server.log().len(), 4);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn other_client_errors_are_final() {
    let hook: Hook = Box::new(|n, _| (n == 2).then(|| Reply::Status(409, "seram.stale_report".into())));
    let server = serve(vec![start()], hook).await;
    let (t, _) = recorder("uicc", None);
    let mut agent = Agent::new(&server.url(), SESSION, se("A"), t, fast()).unwrap();
    let err = run(&mut agent).await.0.unwrap_err();
    assert!(matches!(&err, AgentError::Rejected { status: 409, body, .. } if body == "seram.stale_report"), "{err:?}");
    assert_eq!(err.code(), "agent.rejected");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_transmission_error_stops_the_order() {
    // The card fails the second APDU of the first SE RAM command (card reset).
    let orders = vec![
        start(),
        json!({"delay": 0, "ramCommands": [
            {"ramCommandType": "seRamCommand", "listOfCAPDU": [SELECT_ISD, GET_CPLC, GET_CPLC]},
            {"ramCommandType": "notificationCommand", "deviceAppNotification": "between"},
            {"ramCommandType": "seRamCommand", "listOfCAPDU": [SELECT_ISD]},
        ]}),
        se_ram(&[&[GET_CPLC]]),
        stop(),
    ];
    let server = serve(orders, no_hook()).await;
    let (t, seen) = recorder("uicc", Some((2, TransportError::CardReset)));
    let mut agent = Agent::new(&server.url(), SESSION, se("A"), t, fast()).unwrap();
    let (result, events) = run(&mut agent).await;
    let summary = result.unwrap();
    let reports = server.reports();
    let failed = &reports[2].body;
    assert_eq!(status(failed), ("UNAVAILABLE_SE", 0));
    // The R-APDUs so far, none for the failed transmission, nothing for the discarded command.
    assert_eq!(rapdus(failed).len(), 1);
    assert_eq!(rapdus(failed)[0].len(), 1);
    assert!(rapdus(failed)[0][0].ends_with("9000"));
    let msg = failed["localAgentStatus"]["errorMsg"].as_str().unwrap();
    assert!(msg.contains("SE RAM command 1, C-APDU 2 of 3") && msg.contains("reset"), "{msg}");
    assert!(msg.contains("1 later SE RAM command(s) discarded"), "{msg}");
    // The rest of the order never reached the card; the next order works again.
    assert_eq!(*seen.lock().unwrap(), vec![SELECT_ISD, GET_CPLC]);
    assert_eq!(status(&reports[3].body), ("PROCESSED", 1));
    assert_eq!(rapdus(&reports[3].body), vec![vec![cplc_answer("uicc")]]);
    assert_eq!(summary.failed_se_ram_commands, 1);
    assert_eq!(summary.discarded_se_ram_commands, 1);
    assert!(events.contains(&AgentEvent::Discarded { se_ram_commands: 1 }));
    // A notification is not a C-APDU: it is still delivered.
    assert_eq!(summary.notifications, vec!["between"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_card_is_unavailable_se_from_the_first_apdu() {
    let server = serve(vec![start(), se_ram(&[&[SELECT_ISD], &[GET_CPLC]]), stop()], no_hook()).await;
    let (t, seen) = recorder("uicc", Some((1, TransportError::NoCard)));
    let mut agent = Agent::new(&server.url(), SESSION, se("A"), t, fast()).unwrap();
    run(&mut agent).await.0.unwrap();
    let r = &server.reports()[2].body;
    assert_eq!(status(r), ("UNAVAILABLE_SE", 0));
    assert_eq!(rapdus(r), vec![Vec::<String>::new()]);
    assert!(seen.lock().unwrap().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_spec_example_apdu_that_is_not_hex_is_reported() {
    let server = serve(vec![start(), se_ram(&[&["00A40400OA0001020304050607080900A"], &[GET_CPLC]]), stop()], no_hook()).await;
    let (t, seen) = recorder("uicc", None);
    let mut agent = Agent::new(&server.url(), SESSION, se("A"), t, fast()).unwrap();
    run(&mut agent).await.0.unwrap();
    let r = &server.reports()[2].body;
    assert_eq!(status(r), ("UNKNOWN_FAILURE", 0));
    let msg = r["localAgentStatus"]["errorMsg"].as_str().unwrap();
    assert!(msg.contains("C-APDU 1 of 1: not hex"), "{msg}");
    assert!(seen.lock().unwrap().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn se_ram_before_start_is_refused() {
    let server = serve(vec![se_ram(&[&[GET_CPLC]]), start(), stop()], no_hook()).await;
    let (t, seen) = recorder("uicc", None);
    let mut agent = Agent::new(&server.url(), SESSION, se("A"), t, fast()).unwrap();
    run(&mut agent).await.0.unwrap();
    let r = &server.reports()[1].body;
    assert_eq!(status(r), ("UNKNOWN_FAILURE", 0));
    assert!(r["localAgentStatus"]["errorMsg"].as_str().unwrap().contains("before the Start command"));
    assert!(seen.lock().unwrap().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_examples_spellings_are_accepted() {
    // The handshake answer names the data format as the `required` list does; orders use the
    // examples' startCommand/stopCommand, other letter cases and lower-case hex.
    let handshake = json!({"chosenTransportProtocol": "HTTPS", "chosenDataProtocol": "application/json", "chosenVersion": "2.0.0"});
    let orders = vec![
        json!({"ramCommands": [{"ramCommandType": "startCommand"}], "delay": 0}),
        json!({"ramCommands": [{"ramCommandType": "SeRamCommand", "listOfCApdu": ["80ca9f7f00"]}], "delay": "0"}),
        json!({"ramCommands": [{"ramCommandType": "stopCommand"}]}),
    ];
    let server = serve_with(orders, no_hook(), handshake, None).await;
    let (t, seen) = recorder("uicc", None);
    let mut agent = Agent::new(&server.url(), SESSION, se("A"), t, fast()).unwrap();
    let (result, events) = run(&mut agent).await;
    let summary = result.unwrap();
    assert_eq!(summary.handshake.unwrap().chosen_data_format, "application/json");
    assert!(events.contains(&AgentEvent::Started));
    assert_eq!(*seen.lock().unwrap(), vec![GET_CPLC]);
    assert_eq!(rapdus(&server.reports()[2].body), vec![vec![cplc_answer("uicc")]]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_version_not_offered_is_refused() {
    let handshake = json!({"chosenTransportProtocol": "HTTPS", "chosenDataFormat": "application/json", "chosenVersion": "3.0.0"});
    let server = serve_with(vec![], no_hook(), handshake, None).await;
    let (t, _) = recorder("uicc", None);
    let mut agent = Agent::new(&server.url(), SESSION, se("A"), t, fast()).unwrap();
    let err = run(&mut agent).await.0.unwrap_err();
    assert_eq!(err.code(), "agent.protocol");
    assert!(err.to_string().contains("3.0.0"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_answer_that_is_not_seram_fails() {
    let hook: Hook = Box::new(|n, _| (n == 1).then(|| Reply::Json(json!({"ramCommands": [{"listOfCAPDU": []}]}))));
    let server = serve(vec![], hook).await;
    let (t, _) = recorder("uicc", None);
    let mut agent = Agent::new(&server.url(), SESSION, se("A"), t, fast()).unwrap();
    let err = run(&mut agent).await.0.unwrap_err();
    assert_eq!(err.code(), "agent.protocol");
    assert!(err.to_string().contains("ramCommandType"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stop_in_the_same_order_ends_without_a_report() {
    // gpseram.yaml's allCommandsOrder shape: Start, SE RAM, notification and Stop at once.
    let orders = vec![json!({"delay": 0, "ramCommands": [
        {"ramCommandType": "startCommand"},
        {"ramCommandType": "seRamCommand", "listOfCAPDU": [SELECT_ISD]},
        {"ramCommandType": "notificationCommand", "deviceAppNotification": "step1/action2/OK"},
        {"ramCommandType": "stopCommand"},
    ]})];
    let server = serve(orders, no_hook()).await;
    let (t, seen) = recorder("uicc", None);
    let mut agent = Agent::new(&server.url(), SESSION, se("A"), t, fast()).unwrap();
    let (result, events) = run(&mut agent).await;
    let summary = result.unwrap();
    assert_eq!(server.reports().len(), 1, "only the first, void report");
    assert_eq!(*seen.lock().unwrap(), vec![SELECT_ISD]);
    assert_eq!(summary.se_ram_commands, 1);
    assert!(events.contains(&AgentEvent::OrderExecuted { number: 1 }), "the card is saved before the end");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_order_chooses_among_several_secure_elements() {
    let choose = |id: &str| json!({"seType": "eSE", "seId": id});
    let orders = vec![
        start(),
        // No choice yet: the first SE (uicc).
        se_ram(&[&[GET_CPLC]]),
        json!({"delay": 0, "chosenSecureElement": choose("ESE-2"), "ramCommands": [{"ramCommandType": "seRamCommand", "listOfCAPDU": [GET_CPLC]}]}),
        // The choice stays for later orders.
        se_ram(&[&[GET_CPLC]]),
        json!({"delay": 0, "chosenSecureElement": choose("nope"), "ramCommands": [{"ramCommandType": "seRamCommand", "listOfCAPDU": [GET_CPLC]}]}),
        stop(),
    ];
    let server = serve(orders, no_hook()).await;
    let (uicc, seen_uicc) = recorder("uicc", None);
    let (ese, seen_ese) = recorder("ese", None);
    let mut agent = Agent::new(&server.url(), SESSION, se("UICC-1"), uicc, fast()).unwrap();
    agent.add_secure_element(SecureElementInfo::new(SeType::Ese, "ESE-2"), ese);
    run(&mut agent).await.0.unwrap();
    let log = server.log();
    assert_eq!(log[0].body["secureElements"], json!([{"seType": "uicc", "seId": "UICC-1"}, {"seType": "eSE", "seId": "ESE-2"}]));
    let reports = server.reports();
    assert_eq!(rapdus(&reports[2].body), vec![vec![cplc_answer("uicc")]]);
    assert_eq!(rapdus(&reports[3].body), vec![vec![cplc_answer("ese")]]);
    assert_eq!(rapdus(&reports[4].body), vec![vec![cplc_answer("ese")]]);
    assert_eq!(status(&reports[5].body), ("UNAVAILABLE_SE", 0));
    assert!(reports[5].body["localAgentStatus"]["errorMsg"].as_str().unwrap().contains("\"nope\""));
    assert_eq!(seen_uicc.lock().unwrap().len(), 1);
    assert_eq!(seen_ese.lock().unwrap().len(), 2);
}

#[test]
fn bad_urls_are_refused() {
    for url in ["ftp://host/x", "not a url", "http://"] {
        let (t, _) = recorder("uicc", None);
        let err = Agent::new(url, SESSION, se("A"), t, AgentOptions::default()).unwrap_err();
        assert_eq!(err.code(), "agent.url", "{url}");
    }
    let (t, _) = recorder("uicc", None);
    let a = Agent::new("https://tsm.example:8443/custom/base/", SESSION, se("A"), t, AgentOptions::default()).unwrap();
    assert_eq!(a.endpoint(), "https://tsm.example:8443/custom/base/");
}

#[test]
fn run_blocking_works_without_a_runtime() {
    // The CLI's way: no runtime of its own. The server runs on a separate runtime thread.
    let rt = tokio::runtime::Runtime::new().unwrap();
    let server = rt.block_on(serve(vec![start(), se_ram(&[&[GET_CPLC]]), stop()], no_hook()));
    let (t, _) = recorder("uicc", None);
    let mut agent = Agent::new(&server.url(), SESSION, se("A"), t, fast()).unwrap();
    let summary = agent.run_blocking(|_| {}).unwrap();
    assert_eq!(summary.apdus, 1);
    drop(rt);
}

// ---------------------------------------------------------------------------------------------
// TLS

fn test_pki() -> (String, tokio_rustls::TlsAcceptor) {
    use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, IsCa, KeyPair};
    let _ = rustls::crypto::ring::default_provider().install_default();
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca = CertifiedIssuer::self_signed(ca_params, KeyPair::generate().unwrap()).unwrap();
    let leaf_key = KeyPair::generate().unwrap();
    let leaf = CertificateParams::new(vec!["localhost".to_string()]).unwrap().signed_by(&leaf_key, &ca).unwrap();
    let key = rustls_pki_types::PrivateKeyDer::Pkcs8(leaf_key.serialize_der().into());
    let config = rustls::ServerConfig::builder().with_no_client_auth().with_single_cert(vec![leaf.der().clone(), ca.der().clone()], key).unwrap();
    (ca.pem(), tokio_rustls::TlsAcceptor::from(Arc::new(config)))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn https_with_the_tsm_ca() {
    let (ca_pem, acceptor) = test_pki();
    let server = serve_with(vec![start(), se_ram(&[&[GET_CPLC]]), stop()], no_hook(), standard_handshake(), Some(acceptor)).await;
    let url = format!("https://localhost:{}/gp/seram", server.addr.port());
    let (t, _) = recorder("uicc", None);
    let opts = AgentOptions { root_ca_pem: Some(ca_pem.into_bytes()), ..fast() };
    let mut agent = Agent::new(&url, SESSION, se("A"), t, opts).unwrap();
    let summary = run(&mut agent).await.0.unwrap();
    assert_eq!(summary.apdus, 1);
    assert_eq!(rapdus(&server.reports()[2].body), vec![vec![cplc_answer("uicc")]]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn https_with_an_unknown_ca_fails_at_once() {
    let (_, acceptor) = test_pki();
    let (other_ca, _) = test_pki();
    let server = serve_with(vec![start()], no_hook(), standard_handshake(), Some(acceptor)).await;
    let url = format!("https://localhost:{}/gp/seram", server.addr.port());
    let (t, _) = recorder("uicc", None);
    let opts = AgentOptions { root_ca_pem: Some(other_ca.into_bytes()), ..fast() };
    let mut agent = Agent::new(&url, SESSION, se("A"), t, opts).unwrap();
    let t0 = Instant::now();
    let err = run(&mut agent).await.0.unwrap_err();
    assert_eq!(err.code(), "agent.tls", "{err}");
    assert!(t0.elapsed() < Duration::from_secs(2), "a certificate the agent does not trust is not retried");
    assert!(server.log().is_empty());
}
