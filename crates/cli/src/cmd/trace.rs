//! `tsm trace decode`: verify and explain a recorded secure-channel session.

use crate::cmd::keys::{key_bytes, key_triplet};
use crate::error::{CliError, read_file};
use clap::{Args, Subcommand};
use std::path::PathBuf;
use tsm_gp::crypto::diversify::Diversification;
use tsm_gp::hex;
use tsm_gp::recording::{parse_ini, parse_log};
use tsm_gp::scp::ChannelOptions;
use tsm_gp::trace::{DecodeOptions, KeyBytes, Outcome, SessionReport, decode_log, decode_section};

#[derive(Subcommand, Debug)]
pub enum TraceCmd {
    /// Re-derive the session keys of recorded SCP02/SCP03 sessions from the static keys, check
    /// every cryptogram and MAC, decrypt C-DEC and R-ENC data, and print each command by name
    /// with its decoded fields and the status word's meaning.
    ///
    /// FILE is either an INI vector file ([section] per session, cN = command, rN = response;
    /// keys from the section's key_enc/key_mac/key_dek lines unless --keys is given) or a plain
    /// log of "=> C-APDU" / "<= R-APDU" lines (or alternating command/response lines), split
    /// into sessions at each INITIALIZE UPDATE.
    ///
    /// Exit status: 0 all sessions verified, 1 a cryptogram or MAC did not verify (reported at
    /// its line), 2 bad input, 3 protected traffic that could not be checked (no keys,
    /// unsupported protocol).
    ///
    /// Examples:
    ///   tsm trace decode testdata/vectors/scp03/scp03_traces_pysim.txt
    ///   tsm trace decode --keys 404142434445464748494A4B4C4D4E4F session.log
    ///   tsm trace decode --master env:ISSUER_MK --diversify emv session.log
    #[command(verbatim_doc_comment)]
    Decode(DecodeArgs),
}

#[derive(Args, Debug)]
pub struct DecodeArgs {
    /// The recorded exchange.
    file: PathBuf,
    /// Static keys: one key for ENC, MAC and DEK, or enc=HEX,mac=HEX,dek=HEX; each value may
    /// also be env:VARIABLE or file:PATH. Overrides keys in the file.
    #[arg(long)]
    keys: Option<String>,
    /// Issuer master key (HEX, env:VAR or file:PATH): card keys are diversified per session
    /// with the KDD from its INITIALIZE UPDATE response. Needs --diversify.
    #[arg(long, requires = "diversify")]
    master: Option<String>,
    /// Diversification method for --master: emv, visa2 or kdf3.
    #[arg(long, requires = "master")]
    diversify: Option<Diversification>,
    /// AID of the security domain (hex), to check SCP03 pseudo-random card challenges.
    #[arg(long)]
    sd_aid: Option<String>,
    /// The card's SCP03 counter advances only on commands with data (a card quirk).
    #[arg(long)]
    counter_only_with_data: bool,
    /// Machine-readable report.
    #[arg(long)]
    json: bool,
    /// Only print the summary of each session and its problems.
    #[arg(long, short)]
    quiet: bool,
}

fn parse_keys(spec: &str) -> Result<KeyBytes, CliError> {
    let [enc, mac, dek] = key_triplet(spec)?;
    Ok(KeyBytes { enc, mac, dek })
}

pub fn run(cmd: TraceCmd) -> Result<(), CliError> {
    let TraceCmd::Decode(a) = cmd;
    let bytes = read_file(&a.file)?;
    let text = String::from_utf8(bytes).map_err(|_| CliError::new("input.not_text", format!("{} is not a text file", a.file.display())))?;
    let opts = DecodeOptions {
        keys: a.keys.as_deref().map(parse_keys).transpose()?,
        master: match (&a.master, a.diversify) {
            (Some(m), Some(d)) => Some((d, key_bytes(m)?)),
            _ => None,
        },
        sd_aid: a.sd_aid.as_deref().map(hex::decode).transpose()?,
        channel: ChannelOptions { scp03_counter_only_with_data: a.counter_only_with_data, ..Default::default() },
    };
    let is_ini = text.lines().any(|l| l.trim_start().starts_with('[') && l.trim_end().ends_with(']'));
    let reports: Vec<SessionReport> = if is_ini {
        parse_ini(&text)?.iter().map(|s| decode_section(s, &opts)).collect()
    } else {
        let name = a.file.file_name().map(|n| n.to_string_lossy().to_string()).unwrap_or_default();
        decode_log(&name, &parse_log(&text)?, &opts)
    };
    if reports.is_empty() {
        return Err(CliError::new("trace.empty", format!("{}: no sessions or APDUs found", a.file.display())));
    }
    if a.json {
        println!("{}", serde_json::to_string_pretty(&reports).expect("json"));
    } else {
        print_reports(&a.file.display().to_string(), &reports, a.quiet);
    }
    let failed = reports.iter().filter(|r| r.outcome == Outcome::Failed).count();
    let unverified = reports.iter().filter(|r| r.outcome == Outcome::Unverified).count();
    if failed > 0 {
        Err(CliError::failed("trace.verification_failed", format!("{failed} session(s) failed verification")))
    } else if unverified > 0 {
        Err(CliError { code: "trace.unverified".into(), message: format!("{unverified} session(s) could not be verified"), exit: 3 })
    } else {
        Ok(())
    }
}

fn print_reports(file: &str, reports: &[SessionReport], quiet: bool) {
    for r in reports {
        let status = match r.outcome {
            Outcome::Verified => "VERIFIED",
            Outcome::Failed => "FAILED",
            Outcome::Unverified => "UNVERIFIED",
            Outcome::Skipped => "skipped",
        };
        println!("[{}] {status}  ({file}:{})", r.name, r.line);
        let mut facts = Vec::new();
        if let Some(s) = &r.scp {
            facts.push(s.clone());
        }
        if let Some(l) = &r.level {
            facts.push(format!("level {l}"));
        }
        if !facts.is_empty() {
            println!("  {}", facts.join(", "));
        }
        if let Some(k) = &r.keys {
            println!("  keys {k}");
        }
        if !r.session_key_kcvs.is_empty() {
            let kcvs: Vec<String> = r.session_key_kcvs.iter().map(|(n, k)| format!("{n} {k}")).collect();
            println!("  session key KCVs: {}", kcvs.join(", "));
        }
        if let Some(n) = &r.note {
            println!("  note: {n}");
        }
        if !quiet {
            for e in &r.events {
                let arrow = if e.dir == "C" { "=>" } else { "<=" };
                println!("  {:>5} {arrow} {}", e.line, e.text);
                if let Some(p) = &e.plain {
                    println!("          plain {p}");
                }
                if !e.checks.is_empty() {
                    println!("           [{}]", e.checks.join("; "));
                }
                if let Some(p) = &e.problem {
                    println!("        !! line {}: error[{}]: {}", p.line, p.code, p.message);
                }
            }
        }
        for p in r.problems.iter().filter(|_| quiet) {
            println!("  !! line {}: error[{}]: {}", p.line, p.code, p.message);
        }
        println!();
    }
    let count = |o: Outcome| reports.iter().filter(|r| r.outcome == o).count();
    println!(
        "{} session(s): {} verified, {} failed, {} unverified, {} skipped",
        reports.len(),
        count(Outcome::Verified),
        count(Outcome::Failed),
        count(Outcome::Unverified),
        count(Outcome::Skipped)
    );
}
