//! One module per `tsm` subcommand group.

pub mod cap;
pub mod keys;
pub mod trace;
