//! Recorded APDU exchanges as text: the INI-like vector format (`[section]`, `key = HEX`,
//! `cN`/`rN` for the N-th command and response) and plain logs (`=> C-APDU` / `<= R-APDU`
//! lines, or GlobalPlatformPro dumps of alternating command and response lines).

use crate::hex::{self, HexError};
use thiserror::Error;

/// A problem in a recording file, with the line it is on (1-based).
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum RecordingError {
    #[error("line {line}: {detail}")]
    Syntax { line: usize, detail: String },
    #[error("line {line}: key {key:?}: {source}")]
    Hex { line: usize, key: String, source: HexError },
}

impl RecordingError {
    pub fn code(&self) -> &'static str {
        match self {
            RecordingError::Syntax { .. } => "recording.syntax",
            RecordingError::Hex { .. } => "recording.hex",
        }
    }
}

/// One `key = value` line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    pub key: String,
    pub value: String,
    /// The text after `    # `, if any.
    pub comment: Option<String>,
    pub line: usize,
}

/// One `[section]`: a session or a test case.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Section {
    pub name: String,
    pub line: usize,
    pub entries: Vec<Entry>,
    /// Comment lines inside the section (without the leading `#`).
    pub comments: Vec<String>,
}

/// A command and, if recorded, its response.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Exchange {
    /// N of `cN`/`rN` (1-based), or the position in a plain log.
    pub index: usize,
    pub command: Vec<u8>,
    pub command_line: usize,
    pub response: Option<Vec<u8>>,
    pub response_line: Option<usize>,
}

impl Section {
    pub fn entry(&self, key: &str) -> Option<&Entry> {
        self.entries.iter().find(|e| e.key == key)
    }
    pub fn get(&self, key: &str) -> Option<&str> {
        self.entry(key).map(|e| e.value.as_str())
    }
    /// The value of `key` decoded from hex.
    pub fn hex(&self, key: &str) -> Result<Option<Vec<u8>>, RecordingError> {
        match self.entry(key) {
            None => Ok(None),
            Some(e) => hex::decode(&e.value)
                .map(Some)
                .map_err(|source| RecordingError::Hex { line: e.line, key: key.to_string(), source }),
        }
    }
    /// All `cN` commands with their `rN` responses, ordered by N.
    pub fn exchanges(&self) -> Result<Vec<Exchange>, RecordingError> {
        let mut out: Vec<Exchange> = Vec::new();
        for e in &self.entries {
            let Some(n) = e.key.strip_prefix('c').and_then(|n| n.parse::<usize>().ok()) else { continue };
            let command = self.hex(&e.key)?.unwrap_or_default();
            let rkey = format!("r{n}");
            let response = self.hex(&rkey)?;
            out.push(Exchange {
                index: n,
                command,
                command_line: e.line,
                response,
                response_line: self.entry(&rkey).map(|r| r.line),
            });
        }
        out.sort_by_key(|x| x.index);
        Ok(out)
    }
}

/// Parses the INI-like vector format. Lines before the first `[section]` go to a section with
/// an empty name (dropped if it holds no entries).
pub fn parse_ini(text: &str) -> Result<Vec<Section>, RecordingError> {
    let mut sections = vec![Section::default()];
    for (i, raw) in text.lines().enumerate() {
        let line = i + 1;
        let trimmed = raw.trim();
        if trimmed.is_empty() {
            continue;
        }
        let current = sections.last_mut().expect("at least one section");
        if let Some(c) = trimmed.strip_prefix('#') {
            current.comments.push(c.trim().to_string());
            continue;
        }
        if let Some(rest) = trimmed.strip_prefix('[') {
            let name = rest
                .strip_suffix(']')
                .ok_or_else(|| RecordingError::Syntax { line, detail: "section header without ']'".into() })?;
            sections.push(Section { name: name.trim().to_string(), line, ..Default::default() });
            continue;
        }
        let (body, comment) = match raw.find("    # ") {
            Some(p) => (&raw[..p], Some(raw[p + 6..].trim().to_string())),
            None => (raw, None),
        };
        let (k, v) = body
            .split_once('=')
            .ok_or_else(|| RecordingError::Syntax { line, detail: format!("expected 'key = value', got {trimmed:?}") })?;
        current.entries.push(Entry { key: k.trim().to_string(), value: v.trim().to_string(), comment, line });
    }
    if sections[0].entries.is_empty() {
        sections.remove(0);
    }
    Ok(sections)
}

/// Parses a plain log: `=> HEX` / `<= HEX` lines (also `>>`/`<<`, `C:`/`R:`, with optional
/// spaces inside the hex), or, when no line has such a marker, a GlobalPlatformPro dump of
/// alternating command and response lines. `#` lines are comments.
pub fn parse_log(text: &str) -> Result<Vec<Exchange>, RecordingError> {
    let lines: Vec<(usize, &str)> = text
        .lines()
        .enumerate()
        .map(|(i, l)| (i + 1, l.trim()))
        .filter(|(_, l)| !l.is_empty() && !l.starts_with('#') && !l.starts_with("//"))
        .collect();
    let marked = |l: &str| -> Option<(bool, String)> {
        for (p, is_cmd) in [("=>", true), (">>", true), ("C:", true), ("<=", false), ("<<", false), ("R:", false)] {
            if let Some(rest) = l.strip_prefix(p) {
                return Some((is_cmd, rest.trim().to_string()));
            }
        }
        None
    };
    let decode = |line: usize, key: &str, s: &str| {
        hex::decode(s).map_err(|source| RecordingError::Hex { line, key: key.to_string(), source })
    };
    let any_marked = lines.iter().any(|(_, l)| marked(l).is_some());
    let mut out: Vec<Exchange> = Vec::new();
    if any_marked {
        for (line, l) in lines {
            let Some((is_cmd, hexpart)) = marked(l) else { continue };
            // Logs often append timing or comments after the hex, separated by two spaces, a
            // tab or a comment marker: cut there; what is left must be hex.
            let end = ["  ", "\t", "#", "//", "("].iter().filter_map(|m| hexpart.find(m)).min().unwrap_or(hexpart.len());
            let hexpart = &hexpart[..end];
            let bytes = decode(line, if is_cmd { "command" } else { "response" }, hexpart)?;
            if is_cmd {
                out.push(Exchange { index: out.len() + 1, command: bytes, command_line: line, response: None, response_line: None });
            } else {
                match out.last_mut() {
                    Some(x) if x.response.is_none() => {
                        x.response = Some(bytes);
                        x.response_line = Some(line);
                    }
                    _ => return Err(RecordingError::Syntax { line, detail: "response without a preceding command".into() }),
                }
            }
        }
    } else {
        for pair in lines.chunks(2) {
            let (cl, c) = pair[0];
            let command = decode(cl, "command", c)?;
            let (response, response_line) = match pair.get(1) {
                Some(&(rl, r)) => (Some(decode(rl, "response", r)?), Some(rl)),
                None => (None, None),
            };
            out.push(Exchange { index: out.len() + 1, command, command_line: cl, response, response_line });
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ini_sections_entries_and_comments() {
        let t = "# top\n[a]\nkey_enc = 4041    # static\nc1 = 8050\nr1 = 9000\nc2 = 80F2\n[b]\nx = y\n";
        let s = parse_ini(t).unwrap();
        assert_eq!(s.len(), 2);
        assert_eq!(s[0].get("key_enc"), Some("4041"));
        assert_eq!(s[0].entry("key_enc").unwrap().comment.as_deref(), Some("static"));
        let x = s[0].exchanges().unwrap();
        assert_eq!(x.len(), 2);
        assert_eq!(x[0].response, Some(vec![0x90, 0]));
        assert_eq!(x[1].response, None);
        assert!(parse_ini("[a\n").is_err());
        assert!(parse_ini("[a]\nnovalue\n").is_err());
    }

    #[test]
    fn plain_logs_both_styles() {
        let x = parse_log("=> 80 50 00 00 08 0102030405060708 00\n<= 9000\n").unwrap();
        assert_eq!(x[0].command.len(), 14);
        let d = parse_log("# dump\n80CA00CF00\n6A88\n00A4040000\n").unwrap();
        assert_eq!(d.len(), 2);
        assert_eq!(d[1].response, None);
        assert!(parse_log("<= 9000\n").is_err());
    }
}
