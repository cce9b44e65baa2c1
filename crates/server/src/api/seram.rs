//! The device API: GP SERAM HTTP REST binding (`/gp/seram/...`). Placeholder: the device-API
//! engineer fills it; `crate::http::router` mounts whatever [`routes`] returns.

use crate::app::AppState;
use axum::Router;

/// The `/gp/seram/...` routes (full paths), with their state applied.
pub fn routes(state: AppState) -> Router {
    Router::new().with_state(state)
}
