//! `tsm card`: simulated secure elements and PC/SC readers.

use crate::error::CliError;
use clap::Subcommand;

#[derive(Subcommand, Debug)]
pub enum CardCmd {}

pub fn run(cmd: CardCmd) -> Result<(), CliError> {
    match cmd {}
}
