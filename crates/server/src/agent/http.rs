//! The HTTP side of the local agent: one reqwest client per session, a minimal cookie jar, and
//! the retry rules of the binding ("Transmission Errors").

use super::{AgentError, AgentEvent, AgentOptions};
use reqwest::header::{ACCEPT, CONTENT_TYPE, COOKIE, HeaderMap, SET_COOKIE};
use reqwest::{StatusCode, Url};
use serde::de::DeserializeOwned;
use std::time::{Duration, Instant};

/// Which endpoint a request goes to (for messages and events).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Endpoint {
    Handshake,
    RemoteManagement,
}

impl Endpoint {
    pub fn path(self) -> &'static str {
        match self {
            Endpoint::Handshake => crate::seram_types::HANDSHAKE_PATH,
            Endpoint::RemoteManagement => crate::seram_types::REMOTE_MANAGEMENT_PATH,
        }
    }
}

/// The cookies the server set during this session (RFC 6265, the part one origin needs).
///
/// The agent talks to a single origin under one base path, so `Domain` and `Path` are not
/// needed to choose cookies; `Max-Age` ≤ 0 and an empty value delete a cookie, as a server
/// does to clear one. `Expires` is not interpreted (a session lasts minutes).
#[derive(Debug, Default, Clone)]
pub struct CookieJar {
    cookies: Vec<(String, String)>,
}

impl CookieJar {
    /// Takes every `Set-Cookie` of a response.
    pub fn store(&mut self, headers: &HeaderMap) {
        for value in headers.get_all(SET_COOKIE) {
            let Ok(text) = value.to_str() else { continue };
            self.store_one(text);
        }
    }

    fn store_one(&mut self, set_cookie: &str) {
        let mut parts = set_cookie.split(';');
        let Some((name, value)) = parts.next().and_then(|nv| nv.split_once('=')) else { return };
        let (name, value) = (name.trim(), value.trim());
        if name.is_empty() {
            return;
        }
        let expired = parts.any(|attr| {
            let (k, v) = attr.split_once('=').unwrap_or((attr, ""));
            k.trim().eq_ignore_ascii_case("max-age") && v.trim().parse::<i64>().is_ok_and(|age| age <= 0)
        });
        self.cookies.retain(|(n, _)| n != name);
        if !expired {
            self.cookies.push((name.to_string(), value.to_string()));
        }
    }

    /// The `Cookie` header value, when there is a cookie.
    pub fn header(&self) -> Option<String> {
        (!self.cookies.is_empty()).then(|| self.cookies.iter().map(|(n, v)| format!("{n}={v}")).collect::<Vec<_>>().join("; "))
    }

    pub fn get(&self, name: &str) -> Option<&str> {
        self.cookies.iter().find(|(n, _)| n == name).map(|(_, v)| v.as_str())
    }
}

/// The session's HTTP client.
pub struct SeramClient {
    http: reqwest::Client,
    handshake_url: Url,
    remote_url: Url,
    pub cookies: CookieJar,
    retry_for: Duration,
    backoff_start: Duration,
    backoff_max: Duration,
    /// Retries made in the whole session.
    pub retries: u64,
}

/// A failure worth another attempt.
struct Transient(String);

impl SeramClient {
    pub fn new(base: &Url, session_id: &str, options: &AgentOptions) -> Result<SeramClient, AgentError> {
        // reqwest is built without a default crypto provider: the ring provider is the only
        // one in the build (docs: shared stack notes). Installing twice is harmless.
        let _ = rustls::crypto::ring::default_provider().install_default();
        let mut builder = reqwest::Client::builder()
            // Binding: no response within 40 s → close the connection and open a new one
            // (a timed-out request's connection is dropped, not returned to the pool).
            .timeout(options.request_timeout)
            .connect_timeout(options.request_timeout.min(Duration::from_secs(15)))
            // A redirected POST would turn into a GET: a redirect is an error here.
            .redirect(reqwest::redirect::Policy::none())
            .user_agent(concat!("tsm-agent/", env!("CARGO_PKG_VERSION")));
        if let Some(pem) = &options.root_ca_pem {
            let certs = reqwest::Certificate::from_pem_bundle(pem).map_err(|e| AgentError::Client(format!("root CA: {e}")))?;
            if certs.is_empty() {
                return Err(AgentError::Client("root CA: no certificate in the PEM data".into()));
            }
            // The TSM's own CA replaces the system roots: the agent talks to one server.
            builder = builder.tls_certs_only(certs);
        }
        let http = builder.build().map_err(|e| AgentError::Client(format!("HTTP client: {e}")))?;
        let url = |ep: Endpoint| {
            let mut u = base.clone();
            let path = format!("{}{}", u.path().trim_end_matches('/'), ep.path());
            u.set_path(&path);
            u.query_pairs_mut().append_pair(crate::seram_types::SESSION_ID_PARAM, session_id);
            u
        };
        Ok(SeramClient {
            http,
            handshake_url: url(Endpoint::Handshake),
            remote_url: url(Endpoint::RemoteManagement),
            cookies: CookieJar::default(),
            retry_for: options.retry_for,
            backoff_start: options.backoff_start,
            backoff_max: options.backoff_max,
            retries: 0,
        })
    }

    pub fn url(&self, ep: Endpoint) -> &Url {
        match ep {
            Endpoint::Handshake => &self.handshake_url,
            Endpoint::RemoteManagement => &self.remote_url,
        }
    }

    /// POSTs `body` (the same bytes on every attempt: a report whose answer was lost is sent
    /// again unchanged, and the server answers a repeated report with the same order) and
    /// reads the JSON answer.
    ///
    /// Retries (binding "Transmission Errors"): at once after the first failure (a closed
    /// connection, no answer within the request timeout), then with doubling pauses, for at
    /// most `retry_for` from the first failure. A `5xx`, `408` or `429` is retried the same way.
    /// `404` (unknown session), `406` and every other status are final.
    pub async fn post<T: DeserializeOwned>(
        &mut self,
        ep: Endpoint,
        body: &[u8],
        progress: &mut dyn FnMut(AgentEvent),
    ) -> Result<T, AgentError> {
        let mut first_failure: Option<Instant> = None;
        let mut attempt: u32 = 0;
        loop {
            attempt += 1;
            let error = match self.attempt(ep, body).await {
                Ok(Ok(bytes)) => return parse(ep, &bytes),
                Ok(Err(Transient(e))) => e,
                Err(fatal) => return Err(fatal),
            };
            let since = *first_failure.get_or_insert_with(Instant::now);
            let elapsed = since.elapsed();
            if elapsed >= self.retry_for {
                return Err(AgentError::Unreachable { endpoint: ep.path(), attempts: attempt, tried_for: elapsed, last_error: error });
            }
            let wait = if attempt == 1 { Duration::ZERO } else { self.backoff(attempt - 1) }.min(self.retry_for - elapsed);
            self.retries += 1;
            progress(AgentEvent::Retrying { endpoint: ep.path(), attempt, error, wait });
            tokio::time::sleep(wait).await;
        }
    }

    /// backoff_start · 2^(n-1), at most backoff_max.
    fn backoff(&self, n: u32) -> Duration {
        let factor = 1u32.checked_shl(n.saturating_sub(1).min(20)).unwrap_or(u32::MAX);
        self.backoff_start.saturating_mul(factor).min(self.backoff_max)
    }

    async fn attempt(&mut self, ep: Endpoint, body: &[u8]) -> Result<Result<Vec<u8>, Transient>, AgentError> {
        let mut req = self
            .http
            .post(self.url(ep).clone())
            .header(CONTENT_TYPE, crate::seram_types::DATA_FORMAT_JSON)
            .header(ACCEPT, crate::seram_types::DATA_FORMAT_JSON)
            .body(body.to_vec());
        if let Some(c) = self.cookies.header() {
            req = req.header(COOKIE, c);
        }
        let resp = match req.send().await {
            Ok(r) => r,
            Err(e) => {
                if let Some(tls) = certificate_failure(&e) {
                    return Err(AgentError::Tls(format!("{}: {tls}", self.url(ep).host_str().unwrap_or("server"))));
                }
                return Ok(Err(Transient(describe(&e))));
            }
        };
        let status = resp.status();
        if status.is_success() {
            let headers = resp.headers().clone();
            return Ok(match resp.bytes().await {
                Ok(b) => {
                    // Cookies only from a complete answer: when the body is cut short the
                    // request is sent again as it was, with the cookies it had (the server
                    // tells a repeat by its `seram-order` cookie).
                    self.cookies.store(&headers);
                    Ok(b.to_vec())
                }
                // The connection closed in the middle of the answer: send the same request again.
                Err(e) => Err(Transient(format!("answer cut short: {}", describe(&e)))),
            });
        }
        let text = resp.text().await.unwrap_or_default();
        let snippet: String = text.chars().take(300).collect();
        match status {
            StatusCode::NOT_FOUND => Err(AgentError::SessionNotFound { endpoint: ep.path(), body: snippet }),
            StatusCode::NOT_ACCEPTABLE => Err(AgentError::NotAcceptable { body: snippet }),
            s if s.is_server_error() || s == StatusCode::REQUEST_TIMEOUT || s == StatusCode::TOO_MANY_REQUESTS => {
                Ok(Err(Transient(format!("HTTP {s}{}", if snippet.is_empty() { String::new() } else { format!(": {snippet}") }))))
            }
            s => Err(AgentError::Rejected { endpoint: ep.path(), status: s.as_u16(), body: snippet }),
        }
    }
}

/// An empty body (or `204`) is an empty JSON object: a void order.
fn parse<T: DeserializeOwned>(ep: Endpoint, bytes: &[u8]) -> Result<T, AgentError> {
    let bytes: &[u8] = if bytes.iter().all(u8::is_ascii_whitespace) { b"{}" } else { bytes };
    serde_json::from_slice(bytes).map_err(|e| AgentError::Protocol(format!("{}: the answer is not a valid SERAM message: {e}", ep.path())))
}

/// A server certificate that does not verify: retrying cannot help.
fn certificate_failure(e: &reqwest::Error) -> Option<String> {
    let mut cause: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(c) = cause {
        if let Some(r @ (rustls::Error::InvalidCertificate(_) | rustls::Error::NoCertificatesPresented | rustls::Error::UnsupportedNameType)) =
            c.downcast_ref::<rustls::Error>()
        {
            return Some(format!("the server's certificate does not verify: {r}"));
        }
        // TLS errors travel inside io::Errors, whose source() skips the error they wrap.
        cause = match c.downcast_ref::<std::io::Error>().and_then(|io| io.get_ref()) {
            Some(inner) => Some(inner as &(dyn std::error::Error + 'static)),
            None => c.source(),
        };
    }
    None
}

/// reqwest's error with its causes (the top line alone says little: "error sending request").
fn describe(e: &reqwest::Error) -> String {
    let mut s = if e.is_timeout() { format!("no answer in time ({e})") } else { e.to_string() };
    let mut source = std::error::Error::source(e);
    while let Some(cause) = source {
        let c = cause.to_string();
        if !s.contains(&c) {
            s.push_str(": ");
            s.push_str(&c);
        }
        source = cause.source();
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use reqwest::header::HeaderValue;

    #[test]
    fn cookie_jar_keeps_replaces_and_deletes() {
        let mut jar = CookieJar::default();
        let mut h = HeaderMap::new();
        h.append(SET_COOKIE, HeaderValue::from_static("seram-order=1.abc; Path=/gp/seram; HttpOnly; Secure"));
        h.append(SET_COOKIE, HeaderValue::from_static("lb=node2"));
        jar.store(&h);
        assert_eq!(jar.header().as_deref(), Some("seram-order=1.abc; lb=node2"));
        let mut h = HeaderMap::new();
        h.append(SET_COOKIE, HeaderValue::from_static("seram-order=2.def; Max-Age=60"));
        jar.store(&h);
        assert_eq!(jar.get("seram-order"), Some("2.def"));
        let mut h = HeaderMap::new();
        h.append(SET_COOKIE, HeaderValue::from_static("lb=; Max-Age=0"));
        jar.store(&h);
        assert_eq!(jar.header().as_deref(), Some("seram-order=2.def"));
    }
}
