//! # tsm-server — the Trusted Service Manager
//!
//! See `docs/design/server.md` for the module boundaries and contracts.

pub mod api;
pub mod app;
pub mod config;
pub mod domain;
pub mod keys;
pub mod store;
pub mod planner;
pub mod seram_types;
