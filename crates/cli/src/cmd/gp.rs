//! `tsm gp`: GlobalPlatform card management through a reader or a simulated card.

use crate::error::CliError;
use clap::Subcommand;

#[derive(Subcommand, Debug)]
pub enum GpCmd {}

pub fn run(cmd: GpCmd) -> Result<(), CliError> {
    match cmd {}
}
