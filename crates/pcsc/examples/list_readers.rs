//! Lists the PC/SC readers with their cards' ATRs.
//!
//! ```text
//! cargo run -p tsm-pcsc --example list_readers
//! ```

use std::process::ExitCode;

fn main() -> ExitCode {
    match tsm_pcsc::reader_status() {
        Ok(readers) if readers.is_empty() => {
            eprintln!("{}", tsm_pcsc::PcscError::NoReaders);
            ExitCode::SUCCESS
        }
        Ok(readers) => {
            for r in readers {
                let card = if r.mute {
                    "mute card".to_string()
                } else if r.card_present {
                    format!("ATR {}", tsm_gp::hex::encode(&r.atr))
                } else {
                    "no card".to_string()
                };
                println!("{}: {card}{}", r.name, if r.exclusive { " (in exclusive use)" } else { "" });
            }
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("error[{}]: {e}", e.code());
            ExitCode::FAILURE
        }
    }
}
