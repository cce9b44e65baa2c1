//! # tsm-server — the Trusted Service Manager
//!
//! See `docs/design/server.md` for the module boundaries and contracts.

pub mod api;
pub mod app;
pub mod callbacks;
pub mod config;
pub mod domain;
pub mod engine;
pub mod http;
pub mod keys;
pub mod store;
#[path = "store/api_queries.rs"]
pub mod store_api_queries;
#[path = "store/engine_queries.rs"]
pub mod store_engine_queries;
pub mod planner;
pub mod seram_types;
pub mod agent;
/// One process drives the whole TSM: `tsm demo`, the end-to-end tests and the deployment
/// benchmark (not a stable API).
#[doc(hidden)]
pub mod testkit;
