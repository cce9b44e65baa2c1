//! One module per `tsm` subcommand group.

pub mod agent;
pub mod cap;
pub mod card;
pub mod demo;
pub mod gp;
pub mod keys;
pub mod serve;
pub mod trace;
