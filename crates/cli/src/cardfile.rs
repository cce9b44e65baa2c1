//! Simulated card state files as the CLI keeps them: `card.json` (sealed state) beside
//! `card.json.key` (its 32-byte storage key, hex, mode 0600), saved atomically.

use crate::cmd::keys::key_bytes;
use crate::error::CliError;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use tsm_gp::crypto::SecretKey;
use tsm_gp::hex;
use tsm_se::SimCard;
use zeroize::Zeroizing;

/// An error of the simulated card, with its code.
pub fn se_error(e: tsm_se::SeError) -> CliError {
    CliError::failed(e.code(), e.to_string())
}

/// The default storage key file of a state file: `card.json` → `card.json.key`.
pub fn default_key_path(state: &Path) -> PathBuf {
    let mut s = state.as_os_str().to_owned();
    s.push(".key");
    PathBuf::from(s)
}

fn storage_key_from(bytes: &[u8], origin: &str) -> Result<SecretKey, CliError> {
    if bytes.len() != 32 {
        return Err(CliError::new("input.card_key", format!("storage key from {origin} must be 32 bytes, got {}", bytes.len())));
    }
    Ok(SecretKey::aes(bytes)?)
}

/// The storage key of `state`: `spec` (`--card-key`: HEX, `env:VAR` or `file:PATH`), else the
/// key file beside the state file; when `create` and there is none, a new random key is
/// written there (mode 0600).
pub fn storage_key(state: &Path, spec: Option<&str>, create: bool) -> Result<SecretKey, CliError> {
    if let Some(spec) = spec {
        let what = if spec.starts_with("env:") || spec.starts_with("file:") { spec } else { "--card-key" };
        return storage_key_from(&key_bytes(spec)?, what);
    }
    let path = default_key_path(state);
    if path.exists() {
        let text = Zeroizing::new(std::fs::read_to_string(&path).map_err(|e| CliError::new("io.read", format!("cannot read {}: {e}", path.display())))?);
        let bytes = Zeroizing::new(hex::decode(text.trim()).map_err(|e| CliError::new("input.card_key", format!("{}: not hex: {e}", path.display())))?);
        return storage_key_from(&bytes, &path.display().to_string());
    }
    if !create {
        return Err(CliError::new(
            "input.card_key",
            format!("no storage key for {}: give --card-key (or TSM_CARD_KEY) or put it in {}", state.display(), path.display()),
        ));
    }
    let mut bytes = Zeroizing::new([0u8; 32]);
    // The OS generator, read directly (no extra dependency); Linux and the BSDs have it.
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut bytes[..]))
        .map_err(|e| CliError::failed("io.random", format!("cannot read /dev/urandom: {e}")))?;
    let text = Zeroizing::new(format!("{}\n", hex::encode(&bytes[..])));
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut opts, 0o600);
    let mut f = opts.open(&path).map_err(|e| CliError::new("io.write", format!("cannot create {}: {e}", path.display())))?;
    f.write_all(text.as_bytes()).map_err(|e| CliError::new("io.write", format!("cannot write {}: {e}", path.display())))?;
    eprintln!("created storage key file {} (mode 0600): keep it with the state file", path.display());
    storage_key_from(&bytes[..], &path.display().to_string())
}

/// Loads a simulated card and its storage key.
pub fn load(state: &Path, spec: Option<&str>) -> Result<(SimCard, SecretKey), CliError> {
    let key = storage_key(state, spec, false)?;
    let card = SimCard::load(state, &key).map_err(se_error)?;
    Ok((card, key))
}

/// Writes the sealed state atomically (temporary file, then rename; mode 0600): a crash while
/// saving leaves the previous state, never half a file.
pub fn write_state(card: &SimCard, path: &Path, key: &SecretKey) -> Result<(), CliError> {
    let st = card.sealed_state(key).map_err(se_error)?;
    let json = serde_json::to_string_pretty(&st).map_err(|e| CliError::failed("se.json", e.to_string()))?;
    let dir = path.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
    let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_else(|| "state".into());
    let tmp = dir.join(format!(".{name}.tmp{}", std::process::id()));
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create(true).truncate(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut opts, 0o600);
    let result = opts.open(&tmp).and_then(|mut f| {
        f.write_all(json.as_bytes())?;
        f.write_all(b"\n")?;
        f.sync_all()
    });
    if let Err(e) = result.and_then(|()| std::fs::rename(&tmp, path)) {
        let _ = std::fs::remove_file(&tmp);
        return Err(CliError::failed("io.write", format!("cannot write {}: {e}", path.display())));
    }
    Ok(())
}

/// The PC/SC reader named `want`: exact, or a unique case-insensitive part of a name.
pub fn pick_reader(want: &str) -> Result<String, CliError> {
    let pcsc = |e: tsm_pcsc::PcscError| CliError::failed(e.code(), e.to_string());
    let readers = tsm_pcsc::list_readers().map_err(pcsc)?;
    if readers.is_empty() {
        return Err(pcsc(tsm_pcsc::PcscError::NoReaders));
    }
    if let Some(r) = readers.iter().find(|r| r.as_str() == want) {
        return Ok(r.clone());
    }
    let quote = |v: &[&String]| v.iter().map(|r| format!("{r:?}")).collect::<Vec<_>>().join(", ");
    let lw = want.to_lowercase();
    let matches: Vec<&String> = readers.iter().filter(|r| r.to_lowercase().contains(&lw)).collect();
    match matches.as_slice() {
        [one] => Ok((*one).clone()),
        [] => Err(CliError::new("pcsc.unknown_reader", format!("no reader matches {want:?} (readers: {})", quote(&readers.iter().collect::<Vec<_>>())))),
        many => Err(CliError::new("pcsc.ambiguous_reader", format!("{want:?} matches {} readers: {}", many.len(), quote(many)))),
    }
}
