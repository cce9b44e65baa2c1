//! The HTTP server: the router (provider and admin APIs under `/api/v1`, the device API under
//! `/gp/seram`, `/health`, `/openapi.json`) and [`serve`], an accept loop on hyper-util for
//! plain HTTP or TLS (rustls with the ring provider, optional client certificates) with
//! graceful shutdown.
//!
//! Logs: one line per request (method, path, status, latency) through `tracing`; bodies and
//! headers are never logged, since they carry tokens, key values and personalization data.

use crate::api;
use crate::api::error::ApiError;
use crate::app::{AppState, LogFormat};
use crate::config::Config;
use axum::Router;
use axum::body::Body;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::{Request, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto::Builder;
use hyper_util::server::graceful::GracefulShutdown;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use std::future::Future;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;
use tower::ServiceExt;
use tower_http::trace::{DefaultOnFailure, DefaultOnResponse, TraceLayer};
use tracing::Level;

/// Installs rustls' ring provider as the process default (once; later calls are no-ops).
/// Only ring is in the build, so nothing else can be chosen by accident.
pub fn install_crypto_provider() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}

/// Sets up `tracing` output on stderr: text or JSON lines; the filter comes from `TSM_LOG`
/// (`tracing_subscriber::EnvFilter` syntax), default `info`. A second call is a no-op.
pub fn init_logging(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_env("TSM_LOG").unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let b = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).with_ansi(ansi);
    let _ = match format {
        LogFormat::Json => b.json().flatten_event(true).try_init(),
        LogFormat::Text => b.try_init(),
    };
}

/// The whole router of a node, with `state` applied.
pub fn router(state: AppState) -> Router {
    let (api_routes, doc) = api::router().split_for_parts();
    let doc = Arc::new(doc.to_json().unwrap_or_else(|_| "{}".into()));
    let cfg = &state.api.config;
    // The JSON extractor enforces api.json_max_bytes itself; this outer bound lets CAP
    // uploads (raw or multipart, with some form overhead) through.
    let limit = cfg.cap_max_bytes.max(cfg.json_max_bytes) + 64 * 1024;
    Router::new()
        .merge(api_routes.with_state(state.clone()))
        .merge(api::seram::routes(state.clone()))
        .route("/health", get(health).with_state(state.clone()))
        .route("/openapi.json", get(move || async move { ([(header::CONTENT_TYPE, "application/json")], doc.as_str().to_owned()) }))
        .fallback(no_route)
        .layer(axum::middleware::map_response(json_405))
        .layer(DefaultBodyLimit::max(limit))
        .layer(
            TraceLayer::new_for_http()
                .make_span_with(|req: &Request<Body>| tracing::info_span!("http", method = %req.method(), path = %req.uri().path()))
                .on_request(())
                .on_response(DefaultOnResponse::new().level(Level::INFO))
                .on_failure(DefaultOnFailure::new().level(Level::WARN)),
        )
}

async fn health(State(state): State<AppState>) -> Response {
    match sqlx::query("SELECT 1").execute(state.store.pool()).await {
        Ok(_) if !state.is_shutting_down() => axum::Json(serde_json::json!({"status": "ok", "node": &*state.node_id})).into_response(),
        Ok(_) => ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "server.shutting_down", "this node is shutting down").into_response(),
        Err(_) => ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "server.database_unavailable", "the database does not answer").into_response(),
    }
}

async fn no_route() -> ApiError {
    ApiError::new(StatusCode::NOT_FOUND, "request.no_route", "no such endpoint (see /openapi.json)")
}

/// axum answers a wrong method with an empty 405: give it the JSON error body.
async fn json_405(r: Response) -> Response {
    if r.status() == StatusCode::METHOD_NOT_ALLOWED && r.headers().get(header::CONTENT_TYPE).is_none() {
        let allow = r.headers().get(header::ALLOW).cloned();
        let mut e = ApiError::new(StatusCode::METHOD_NOT_ALLOWED, "request.method_not_allowed", "this endpoint does not take that method").into_response();
        if let Some(a) = allow {
            e.headers_mut().insert(header::ALLOW, a);
        }
        return e;
    }
    r
}

/// Server errors (start-up only: binding, certificates).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ServeError {
    #[error("cannot listen on {addr}: {source}")]
    Bind { addr: String, source: std::io::Error },
    #[error("TLS: {0}")]
    Tls(String),
    #[error("accept failed: {0}")]
    Accept(std::io::Error),
}

impl ServeError {
    pub fn code(&self) -> &'static str {
        match self {
            ServeError::Bind { .. } => "server.bind",
            ServeError::Tls(_) => "server.tls",
            ServeError::Accept(_) => "server.accept",
        }
    }
}

/// The peer's TLS client certificate chain, when mutual TLS is on (request extension).
#[derive(Debug, Clone)]
pub struct PeerCertificates(pub Arc<Vec<CertificateDer<'static>>>);

/// A bound listening socket, plain or TLS.
pub struct Listener {
    pub tcp: TcpListener,
    pub tls: Option<Arc<rustls::ServerConfig>>,
    /// How long in-flight requests may run on after the shutdown signal.
    pub grace: Duration,
}

impl Listener {
    /// Binds `server.listen` with the TLS settings of `config`.
    pub async fn bind(config: &Config, grace: Duration) -> Result<Listener, ServeError> {
        let tls = match (&config.server.tls_cert, &config.server.tls_key) {
            (Some(c), Some(k)) => Some(tls_config(c, k, config.server.tls_client_ca.as_deref())?),
            _ => None,
        };
        let addr = config.listen_addr();
        let tcp = TcpListener::bind(addr).await.map_err(|source| ServeError::Bind { addr: addr.to_string(), source })?;
        Ok(Listener { tcp, tls, grace })
    }

    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.tcp.local_addr()
    }
}

/// A rustls server configuration from PEM files (ring provider; TLS 1.2 and 1.3; HTTP/2 and
/// HTTP/1.1 by ALPN). With `client_ca`, clients must present a certificate it issued.
pub fn tls_config(cert: &Path, key: &Path, client_ca: Option<&Path>) -> Result<Arc<rustls::ServerConfig>, ServeError> {
    install_crypto_provider();
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert)
        .map_err(|e| ServeError::Tls(format!("{}: {e}", cert.display())))?
        .collect::<Result<_, _>>()
        .map_err(|e| ServeError::Tls(format!("{}: {e}", cert.display())))?;
    if certs.is_empty() {
        return Err(ServeError::Tls(format!("{}: no certificate", cert.display())));
    }
    let key = PrivateKeyDer::from_pem_file(key).map_err(|e| ServeError::Tls(format!("{}: {e}", key.display())))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ServerConfig::builder_with_provider(provider.clone()).with_safe_default_protocol_versions().map_err(|e| ServeError::Tls(e.to_string()))?;
    let builder = match client_ca {
        Some(ca) => {
            let mut roots = rustls::RootCertStore::empty();
            for c in CertificateDer::pem_file_iter(ca).map_err(|e| ServeError::Tls(format!("{}: {e}", ca.display())))? {
                roots.add(c.map_err(|e| ServeError::Tls(format!("{}: {e}", ca.display())))?).map_err(|e| ServeError::Tls(format!("{}: {e}", ca.display())))?;
            }
            let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider).build().map_err(|e| ServeError::Tls(e.to_string()))?;
            builder.with_client_cert_verifier(verifier)
        }
        None => builder.with_no_client_auth(),
    };
    let mut cfg = builder.with_single_cert(certs, key).map_err(|e| ServeError::Tls(e.to_string()))?;
    cfg.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(Arc::new(cfg))
}

/// Serves `router(state)` on `listener` until `shutdown` completes; then stops accepting,
/// signals long-polls and workers ([`AppState::begin_shutdown`]), and lets in-flight requests
/// finish for up to `listener.grace` before returning (connections still open then are
/// dropped: nothing that matters lives in memory).
pub async fn serve(state: AppState, listener: Listener, shutdown: impl Future<Output = ()>) -> Result<(), ServeError> {
    install_crypto_provider();
    let app = router(state.clone());
    let graceful = GracefulShutdown::new();
    let acceptor = listener.tls.clone().map(tokio_rustls::TlsAcceptor::from);
    let scheme = if acceptor.is_some() { "https" } else { "http" };
    if let Ok(a) = listener.local_addr() {
        tracing::info!(%scheme, addr = %a, node = %state.node_id, "listening");
    }
    tokio::pin!(shutdown);
    loop {
        let (stream, peer) = tokio::select! {
            r = listener.tcp.accept() => match r {
                Ok(x) => x,
                Err(e) => {
                    // Out of file descriptors and the like: log, pause, go on.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
            _ = &mut shutdown => break,
        };
        let _ = stream.set_nodelay(true);
        let app = app.clone();
        let acceptor = acceptor.clone();
        let watcher = graceful.watcher();
        tokio::spawn(async move {
            let builder = Builder::new(TokioExecutor::new());
            match acceptor {
                None => {
                    let svc = service(app, peer, None);
                    let conn = builder.serve_connection_with_upgrades(TokioIo::new(stream), svc);
                    if let Err(e) = watcher.watch(conn.into_owned()).await {
                        tracing::debug!(%peer, error = %e, "connection ended with an error");
                    }
                }
                Some(acceptor) => {
                    let tls = match tokio::time::timeout(Duration::from_secs(10), acceptor.accept(stream)).await {
                        Ok(Ok(s)) => s,
                        Ok(Err(e)) => {
                            tracing::debug!(%peer, error = %e, "TLS handshake failed");
                            return;
                        }
                        Err(_) => {
                            tracing::debug!(%peer, "TLS handshake timed out");
                            return;
                        }
                    };
                    let certs = tls.get_ref().1.peer_certificates().map(|c| PeerCertificates(Arc::new(c.iter().map(|c| c.clone().into_owned()).collect())));
                    let svc = service(app, peer, certs);
                    let conn = builder.serve_connection_with_upgrades(TokioIo::new(tls), svc);
                    if let Err(e) = watcher.watch(conn.into_owned()).await {
                        tracing::debug!(%peer, error = %e, "connection ended with an error");
                    }
                }
            }
        });
    }
    drop(listener.tcp);
    tracing::info!(in_flight = graceful.count(), grace_s = listener.grace.as_secs(), "shutting down: no new connections");
    state.begin_shutdown();
    tokio::select! {
        _ = graceful.shutdown() => tracing::info!("all connections closed"),
        _ = tokio::time::sleep(listener.grace) => tracing::warn!("grace period over; dropping the connections still open"),
    }
    Ok(())
}

fn service(
    app: Router,
    peer: SocketAddr,
    certs: Option<PeerCertificates>,
) -> hyper_util::service::TowerToHyperService<impl tower::Service<Request<hyper::body::Incoming>, Response = Response, Error = std::convert::Infallible, Future: Send> + Clone> {
    let svc = app.map_request(move |req: Request<hyper::body::Incoming>| {
        let mut req = req.map(Body::new);
        req.extensions_mut().insert(axum::extract::ConnectInfo(peer));
        if let Some(c) = &certs {
            req.extensions_mut().insert(c.clone());
        }
        req
    });
    hyper_util::service::TowerToHyperService::new(svc)
}

/// Completes on SIGTERM or Ctrl-C (SIGINT).
pub async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => tracing::info!("Ctrl-C: shutting down"),
        _ = term => tracing::info!("SIGTERM: shutting down"),
    }
}
