//! `tsm`: the Trusted Service Manager command.

mod cardfile;
mod cmd;
mod error;

use clap::{Parser, Subcommand};
use std::process::ExitCode;

/// tsm — an open Trusted Service Manager for GlobalPlatform secure elements.
///
/// Puts payment, transit and ID applications onto the secure elements of phones over the air
/// and manages them for life. This command also carries the tools an SE engineer reaches for.
#[derive(Parser, Debug)]
#[command(name = "tsm", version, about, long_about, propagate_version = true)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// The main job end to end on this machine: a TSM node, a provider, a CAP, simulated phones
    /// and deployments over the air through their local agents, then each card's registry.
    #[command(long_about = cmd::demo::LONG_HELP)]
    Demo(cmd::demo::DemoArgs),
    /// Inspect CAP files (package, applets, imports, load file hashes).
    #[command(subcommand)]
    Cap(cmd::cap::CapCmd),
    /// Verify and explain recorded secure-channel sessions.
    #[command(subcommand)]
    Trace(cmd::trace::TraceCmd),
    /// Simulated secure elements (put one into pcscd with `tsm card run`) and PC/SC readers.
    #[command(subcommand)]
    Card(cmd::card::CardCmd),
    /// GlobalPlatform card management (list, install, delete, keys) on a reader or a simulated card.
    #[command(subcommand)]
    Gp(cmd::gp::GpCmd),
    /// Key check values and key diversification.
    #[command(subcommand)]
    Keys(cmd::keys::KeysCmd),
    /// Run a TSM server node (provider, admin and SERAM APIs) until SIGTERM or Ctrl-C.
    Serve(cmd::serve::ServeArgs),
    /// Be a phone's local agent (GP SERAM) for one session: run a TSM's orders on a card.
    #[command(long_about = cmd::agent::LONG_HELP)]
    Agent(cmd::agent::AgentArgs),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Agent(a) => cmd::agent::run(a),
        Command::Cap(c) => cmd::cap::run(c),
        Command::Demo(a) => cmd::demo::run(a),
        Command::Card(c) => cmd::card::run(c),
        Command::Gp(c) => cmd::gp::run(c),
        Command::Keys(c) => cmd::keys::run(c),
        Command::Serve(a) => cmd::serve::run(a),
        Command::Trace(c) => cmd::trace::run(c),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("{e}");
            ExitCode::from(e.exit)
        }
    }
}
