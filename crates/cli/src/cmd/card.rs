//! `tsm card`: simulated secure elements and PC/SC readers.

use crate::error::CliError;
use clap::Subcommand;

#[derive(Subcommand, Debug)]
pub enum CardCmd {
    /// List the PC/SC readers and the cards in them (ATR).
    ///
    /// Needs pcscd. A simulated card appears as a reader once `tsm card run` puts it into
    /// pcscd through vpcd.
    ///
    /// Examples:
    ///   tsm card list-readers
    ///   tsm card list-readers --json
    #[command(verbatim_doc_comment)]
    ListReaders(ListReadersArgs),
}

#[derive(clap::Args, Debug)]
pub struct ListReadersArgs {
    /// Machine-readable output: [{"name", "card_present", "atr", "exclusive", "mute"}].
    #[arg(long)]
    json: bool,
}

fn list_readers(a: ListReadersArgs) -> Result<(), CliError> {
    let readers = tsm_pcsc::reader_status().map_err(|e| CliError::failed(e.code(), e.to_string()))?;
    if a.json {
        let v: Vec<_> = readers
            .iter()
            .map(|r| {
                serde_json::json!({
                    "name": r.name,
                    "card_present": r.card_present,
                    "atr": (!r.atr.is_empty()).then(|| tsm_gp::hex::encode(&r.atr)),
                    "exclusive": r.exclusive,
                    "mute": r.mute,
                })
            })
            .collect();
        println!("{}", serde_json::to_string_pretty(&v).expect("json"));
        return Ok(());
    }
    if readers.is_empty() {
        eprintln!("{}", tsm_pcsc::PcscError::NoReaders);
    }
    for r in readers {
        let card = match (r.card_present, r.mute) {
            (_, true) => "mute card".to_string(),
            (true, _) => format!("ATR {}", tsm_gp::hex::encode(&r.atr)),
            _ => "no card".to_string(),
        };
        println!("{}  {card}{}", r.name, if r.exclusive { " (in exclusive use)" } else { "" });
    }
    Ok(())
}

pub fn run(cmd: CardCmd) -> Result<(), CliError> {
    match cmd {
        CardCmd::ListReaders(a) => list_readers(a),
    }
}
