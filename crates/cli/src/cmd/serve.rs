//! `tsm serve`: runs a TSM server node (provider and admin APIs, the GP SERAM device API, the
//! callbacks worker) until SIGTERM or Ctrl-C.

use crate::error::CliError;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
use tsm_server::app::{ApiConfig, AppState};
use tsm_server::config::Config;
use tsm_server::store::Store;

/// Run a TSM server node.
///
/// Reads the TOML configuration (docs/configuration.md; `[api]` settings in
/// docs/provider-api.md), applies TSM_* environment overrides, migrates the database, opens
/// the key store and serves until SIGTERM or Ctrl-C, letting in-flight requests finish.
#[derive(clap::Args, Debug)]
pub struct ServeArgs {
    /// Configuration file (TOML); without it every setting has its default.
    #[arg(long, short, env = "TSM_CONFIG")]
    pub config: Option<PathBuf>,
}

fn cfg_err(e: tsm_server::config::ConfigError) -> CliError {
    CliError::new(e.code(), e.to_string())
}

pub fn run(args: ServeArgs) -> Result<(), CliError> {
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build().map_err(|e| CliError::failed("server.runtime", e.to_string()))?;
    rt.block_on(serve(args))
}

async fn serve(args: ServeArgs) -> Result<(), CliError> {
    let (text, origin) = match &args.config {
        Some(p) => (String::from_utf8(crate::error::read_file(p)?).map_err(|_| CliError::new("config.parse", format!("{} is not UTF-8", p.display())))?, p.display().to_string()),
        None => (String::new(), "defaults".to_string()),
    };
    let env = |k: &str| std::env::var(k).ok();
    let (api, rest) = ApiConfig::split_from_toml(&text, env).map_err(cfg_err)?;
    let config = Config::from_toml_with_env(&rest, &origin, env).map_err(cfg_err)?;
    tsm_server::http::init_logging(api.log_format);
    let settings = api.resolve().map_err(cfg_err)?;
    let store = Store::connect_with(&config.database.url, config.database.max_connections).await.map_err(|e| CliError::failed(e.code(), e.to_string()))?;
    store.migrate().await.map_err(|e| CliError::failed(e.code(), e.to_string()))?;
    let config = Arc::new(config);
    let c2 = config.clone();
    let keys = tokio::task::spawn_blocking(move || c2.open_key_store()).await.map_err(|e| CliError::failed("server.runtime", e.to_string()))?.map_err(cfg_err)?;
    let grace = Duration::from_secs(api.shutdown_grace_seconds);
    let state = AppState::new(store.clone(), keys, config.clone(), settings);
    let listener = tsm_server::http::Listener::bind(&config, grace).await.map_err(|e| CliError::failed(e.code(), e.to_string()))?;
    let worker = api.callbacks_worker.then(|| tokio::spawn(tsm_server::callbacks::run(state.clone())));
    tsm_server::http::serve(state, listener, tsm_server::http::shutdown_signal()).await.map_err(|e| CliError::failed(e.code(), e.to_string()))?;
    if let Some(w) = worker {
        let _ = tokio::time::timeout(Duration::from_secs(5), w).await;
    }
    store.close().await;
    Ok(())
}
