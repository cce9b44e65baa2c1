//! `tsm cap`: inspect CAP files before accepting them for over-the-air loading.

use crate::error::{CliError, read_file};
use clap::{Args, Subcommand};
use std::path::PathBuf;
use tsm_gp::cap::{CapFile, CapInfo};

#[derive(Subcommand, Debug)]
pub enum CapCmd {
    /// What a TSM operator needs to know before accepting a CAP file: package and applet AIDs,
    /// versions, imported packages (with their well-known names), component sizes, and the
    /// load file size and SHA-1/SHA-256 hashes with and without the Descriptor component
    /// (GlobalPlatformPro leaves Descriptor out; others include it: the hash a DAP or an
    /// INSTALL [for load] carries depends on which).
    ///
    /// Accepts compact CAP files (zip, formats 2.1 and 2.2) and the .ijc form.
    ///
    /// Example: tsm cap info applet.cap --json
    #[command(verbatim_doc_comment)]
    Info(InfoArgs),
}

#[derive(Args, Debug)]
pub struct InfoArgs {
    /// CAP (.cap zip) or .ijc files.
    #[arg(required = true)]
    files: Vec<PathBuf>,
    /// Machine-readable output (one JSON object per file, in an array when several).
    #[arg(long)]
    json: bool,
}

/// Well-known package AIDs (Java Card API, GlobalPlatform API, ETSI/3GPP SIM APIs).
pub fn package_name(aid_hex: &str) -> Option<&'static str> {
    Some(match aid_hex {
        "A0000000620001" => "java.lang",
        "A0000000620002" => "java.io",
        "A0000000620003" => "java.rmi",
        "A0000000620101" => "javacard.framework",
        "A000000062010101" => "javacard.framework.service",
        "A0000000620102" => "javacard.security",
        "A0000000620201" => "javacardx.crypto",
        "A0000000620202" => "javacardx.biometry",
        "A0000000620203" => "javacardx.external",
        "A0000000620209" => "javacardx.apdu",
        "A000000062020801" => "javacardx.framework.util",
        "A00000006202080101" => "javacardx.framework.util.intx",
        "A000000062020802" => "javacardx.framework.math",
        "A000000062020803" => "javacardx.framework.tlv",
        "A00000015100" => "org.globalplatform",
        "A0000000090003FFFFFFFF8910710001" => "sim.access (3GPP TS 43.019)",
        "A0000000090003FFFFFFFF8910710002" => "sim.toolkit (3GPP TS 43.019)",
        "A0000000090005FFFFFFFF8911000000" => "uicc.access (ETSI TS 102 241)",
        "A0000000090005FFFFFFFF8912000000" => "uicc.toolkit (ETSI TS 102 241)",
        "A0000000090005FFFFFFFF8913000000" => "uicc.system (ETSI TS 102 241)",
        "A0000000090005FFFFFFFF8911010000" => "uicc.access.fileadministration (ETSI TS 102 241)",
        _ => return None,
    })
}

/// Observations an operator should see before accepting the file.
fn remarks(info: &CapInfo) -> Vec<String> {
    let mut r = Vec::new();
    if info.applets.is_empty() {
        r.push("no Applet component: a library package, nothing to install from it".into());
    }
    if info.has_debug {
        r.push("has a Debug component: it is never loaded onto a card".into());
    }
    if info.imports.iter().any(|i| i.aid.starts_with("A0000000090003") || i.aid.starts_with("A0000000090005")) {
        r.push("imports SIM/UICC toolkit APIs: loadable only onto a UICC".into());
    }
    if info.imports.iter().any(|i| i.aid == "A00000015100") {
        r.push("imports the GlobalPlatform API".into());
    }
    r
}

pub fn run(cmd: CapCmd) -> Result<(), CliError> {
    match cmd {
        CapCmd::Info(a) => {
            let mut all = Vec::new();
            for f in &a.files {
                let bytes = read_file(f)?;
                let cap = CapFile::parse(&bytes)
                    .map_err(|e| CliError::new(e.code(), format!("{}: {e}", f.display())))?;
                all.push((f, cap.info()));
            }
            if a.json {
                let v: Vec<serde_json::Value> = all
                    .iter()
                    .map(|(f, info)| {
                        let mut v = serde_json::to_value(info).expect("CapInfo serializes");
                        v["file"] = f.display().to_string().into();
                        v["remarks"] = remarks(info).into();
                        v
                    })
                    .collect();
                let out = if v.len() == 1 { v.into_iter().next().unwrap() } else { serde_json::Value::Array(v) };
                println!("{}", serde_json::to_string_pretty(&out).expect("json"));
            } else {
                for (i, (f, info)) in all.iter().enumerate() {
                    if i > 0 {
                        println!();
                    }
                    print_info(f, info);
                }
            }
            Ok(())
        }
    }
}

fn print_info(file: &std::path::Path, i: &CapInfo) {
    println!("{}", file.display());
    println!("  CAP format        {} ({:?} form)", i.cap_version, i.form);
    println!("  package           {}  {}  version {}", i.package_aid, i.package_name.as_deref().unwrap_or("(unnamed)"), i.package_version);
    if !i.flag_names.is_empty() {
        println!("  flags             {}", i.flag_names.join(" "));
    }
    if i.applets.is_empty() {
        println!("  applets           none");
    }
    for a in &i.applets {
        println!("  applet            {}", a.aid);
    }
    for imp in &i.imports {
        println!("  imports           {}  {:<40} {}", imp.aid, package_name(&imp.aid).unwrap_or("?"), imp.version);
    }
    let comps: Vec<String> = i.components.iter().map(|c| format!("{} {}", c.name, c.size)).collect();
    println!("  components        {}", comps.join(", "));
    let lf = &i.load_file;
    println!("  load file         {} bytes without Descriptor, {} with", lf.without_descriptor.size, lf.with_descriptor.size);
    println!("  SHA-1             {}  (without Descriptor)", lf.without_descriptor.sha1);
    println!("                    {}  (with Descriptor)", lf.with_descriptor.sha1);
    println!("  SHA-256           {}  (without Descriptor)", lf.without_descriptor.sha256);
    println!("                    {}  (with Descriptor)", lf.with_descriptor.sha256);
    for r in remarks(i) {
        println!("  note              {r}");
    }
}
