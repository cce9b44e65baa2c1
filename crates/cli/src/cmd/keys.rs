//! `tsm keys`: key check values and diversified card keys.

use crate::error::CliError;
use clap::{Args, Subcommand, ValueEnum};
use tsm_gp::crypto::diversify::{Diversification, KeyRole, diversify};
use tsm_gp::crypto::{KeyAlg, SecretKey};
use tsm_gp::hex;
use zeroize::Zeroizing;

#[derive(Subcommand, Debug)]
pub enum KeysCmd {
    /// Key check value of one or more keys (3DES: first 3 bytes of 3DES(key, 00*8);
    /// AES/SM4: first 3 bytes of AES(key, 01*16), GP Amendment D §7.2).
    ///
    /// Example: tsm keys kcv --alg aes 404142434445464748494A4B4C4D4E4F
    #[command(verbatim_doc_comment)]
    Kcv(KcvArgs),
    /// Derive a card's ENC/MAC/DEK keys from an issuer master key and the card's Key
    /// Diversification Data (KDD: the first 10 bytes of its INITIALIZE UPDATE response, or GET
    /// DATA CF). Prints key check values; the keys themselves only with --reveal.
    ///
    /// Example: tsm keys diversify --method emv --master env:ISSUER_MK --kdd 00010203040506070809
    #[command(verbatim_doc_comment)]
    Diversify(DiversifyArgs),
}

#[derive(Copy, Clone, Debug, ValueEnum)]
pub enum AlgArg {
    /// 2- or 3-key triple DES (by key length)
    Des3,
    /// AES-128/192/256 (by key length)
    Aes,
    Sm4,
}

#[derive(Args, Debug)]
pub struct KcvArgs {
    /// Algorithm of the keys.
    #[arg(long, value_enum)]
    alg: AlgArg,
    /// Keys: HEX, env:VARIABLE or file:PATH (a file holding hex).
    #[arg(required = true)]
    keys: Vec<String>,
    #[arg(long)]
    json: bool,
}

#[derive(Args, Debug)]
pub struct DiversifyArgs {
    /// emv (EMV CPS 1.1), visa2 or kdf3 (AES-CMAC counter KDF).
    #[arg(long)]
    method: Diversification,
    /// Master key: HEX, env:VARIABLE or file:PATH. Prefer env: or file: so the key does not
    /// appear in the process list or shell history.
    #[arg(long)]
    master: String,
    /// Key Diversification Data, 10 bytes hex.
    #[arg(long)]
    kdd: String,
    /// Print the derived key values, not only their check values.
    #[arg(long)]
    reveal: bool,
    #[arg(long)]
    json: bool,
}

/// Resolves a key argument: literal hex, `env:NAME` or `file:PATH`.
pub fn key_bytes(spec: &str) -> Result<Zeroizing<Vec<u8>>, CliError> {
    let text: Zeroizing<String> = if let Some(var) = spec.strip_prefix("env:") {
        Zeroizing::new(std::env::var(var).map_err(|_| CliError::new("input.key", format!("environment variable {var} is not set")))?)
    } else if let Some(path) = spec.strip_prefix("file:") {
        Zeroizing::new(
            std::fs::read_to_string(path).map_err(|e| CliError::new("input.key", format!("cannot read key file {path}: {e}")))?,
        )
    } else {
        Zeroizing::new(spec.to_string())
    };
    Ok(Zeroizing::new(hex::decode(text.trim()).map_err(|e| CliError::new("input.key", format!("key is not hex: {e}")))?))
}

/// `enc=…,mac=…,dek=…` or one key for all three, each HEX, `env:VAR` or `file:PATH`.
pub fn key_triplet(spec: &str) -> Result<[Zeroizing<Vec<u8>>; 3], CliError> {
    if !spec.contains('=') || spec.starts_with("env:") || spec.starts_with("file:") {
        let k = key_bytes(spec)?;
        return Ok([k.clone(), k.clone(), k]);
    }
    let (mut enc, mut mac, mut dek) = (None, None, None);
    for part in spec.split(',') {
        let (k, v) = part.split_once('=').ok_or_else(|| CliError::new("input.keys", format!("expected role=HEX in {part:?}")))?;
        let slot = match k.trim().to_ascii_lowercase().as_str() {
            "enc" => &mut enc,
            "mac" => &mut mac,
            "dek" => &mut dek,
            other => return Err(CliError::new("input.keys", format!("unknown key role {other:?} (enc, mac, dek)"))),
        };
        *slot = Some(key_bytes(v.trim())?);
    }
    match (enc, mac, dek) {
        (Some(e), Some(m), Some(d)) => Ok([e, m, d]),
        _ => Err(CliError::new("input.keys", "give all of enc=, mac= and dek= (or one key for all three)")),
    }
}

fn make_key(alg: AlgArg, bytes: &[u8]) -> Result<SecretKey, CliError> {
    Ok(match alg {
        AlgArg::Des3 => SecretKey::des3(bytes)?,
        AlgArg::Aes => SecretKey::aes(bytes)?,
        AlgArg::Sm4 => SecretKey::new(KeyAlg::Sm4, bytes)?,
    })
}

pub fn run(cmd: KeysCmd) -> Result<(), CliError> {
    match cmd {
        KeysCmd::Kcv(a) => {
            let mut rows = Vec::new();
            for spec in &a.keys {
                let k = make_key(a.alg, &key_bytes(spec)?)?;
                rows.push((format!("{:?}", k.alg()), hex::encode(&k.kcv())));
            }
            if a.json {
                let v: Vec<_> = rows.iter().map(|(alg, kcv)| serde_json::json!({"alg": alg, "kcv": kcv})).collect();
                println!("{}", serde_json::to_string_pretty(&v).expect("json"));
            } else {
                for (alg, kcv) in rows {
                    println!("{kcv}  {alg}");
                }
            }
            Ok(())
        }
        KeysCmd::Diversify(a) => {
            let mk = key_bytes(&a.master)?;
            let master = match a.method {
                Diversification::EmvCps11 | Diversification::Visa2 => SecretKey::des3(&mk)?,
                Diversification::Kdf3 => SecretKey::aes(&mk)?,
                Diversification::None => return Err(CliError::new("input.method", "method none derives nothing")),
            };
            let kdd = hex::decode(&a.kdd)?;
            if kdd.len() != 10 {
                return Err(CliError::new("input.kdd", format!("KDD must be 10 bytes, got {}", kdd.len())));
            }
            let mut out = Vec::new();
            for role in KeyRole::ALL {
                let k = diversify(a.method, &master, &kdd, role)?;
                out.push((role, k));
            }
            if a.reveal {
                eprintln!("warning: printing secret key values (--reveal)");
            }
            if a.json {
                let v: serde_json::Map<String, serde_json::Value> = out
                    .iter()
                    .map(|(role, k)| {
                        let mut o = serde_json::json!({"kcv": hex::encode(&k.kcv()), "alg": format!("{:?}", k.alg())});
                        if a.reveal {
                            o["key"] = hex::encode(k.expose()).into();
                        }
                        (format!("{role:?}").to_lowercase(), o)
                    })
                    .collect();
                println!("{}", serde_json::to_string_pretty(&v).expect("json"));
            } else {
                println!("master KCV {}  method {:?}  KDD {}", hex::encode(&master.kcv()), a.method, hex::encode(&kdd));
                for (role, k) in &out {
                    let name = format!("{role:?}").to_uppercase();
                    if a.reveal {
                        println!("{name:<4} KCV {}  key {}", hex::encode(&k.kcv()), hex::encode(k.expose()));
                    } else {
                        println!("{name:<4} KCV {}", hex::encode(&k.kcv()));
                    }
                }
            }
            Ok(())
        }
    }
}
