//! CAP upload over HTTP: every CAP of testdata/vectors/cap, with the load file hashes the
//! vectors' README gives; invalid CAPs refused with the parser's `cap.*` code and nothing
//! stored; size limit; multipart form; binary download. SQLite and PostgreSQL.

mod api_support;

use api_support::*;
use serde_json::Value;
use tsm_server::app::ApiConfig;
use tsm_server::config::Config;
use tsm_server::store::testing::databases;

/// One row of the README's CAP table: file, package AID, applet AID, and the load file data
/// block (size, SHA-1, SHA-256) without and with the Descriptor component.
struct Row {
    file: String,
    package: String,
    applet: String,
    without: (usize, String, String),
    with: (usize, String, String),
}

fn readme_rows() -> Vec<Row> {
    let text = std::fs::read_to_string(tsm_gp::testdata_dir().join("vectors/README.md")).unwrap();
    let triple = |s: &str| {
        let p: Vec<&str> = s.split(',').map(str::trim).collect();
        (p[0].parse().unwrap(), p[1].to_ascii_uppercase(), p[2].to_ascii_uppercase())
    };
    text.lines()
        .filter(|l| l.starts_with("| ") && l.contains(".cap |") && l.matches(',').count() >= 4)
        .map(|l| {
            let c: Vec<&str> = l.trim_matches('|').split('|').map(str::trim).collect();
            Row { file: c[0].to_string(), package: c[1].to_string(), applet: c[2].to_string(), without: triple(c[4]), with: triple(c[5]) }
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_vector_cap_uploads_with_the_readme_hashes() {
    let rows = readme_rows();
    let files: Vec<_> = std::fs::read_dir(tsm_gp::testdata_dir().join("vectors/cap")).unwrap().map(|e| e.unwrap().file_name().into_string().unwrap()).collect();
    assert_eq!(rows.len(), files.len(), "one README row per CAP file");
    for db in databases().await {
        let ts = TestServer::start(&db).await;
        let t = ts.provider("acme").await;
        for r in &rows {
            let (s, b) = ts.upload(&t, &r.file).await;
            assert_eq!(s, 201, "{}: {b}", r.file);
            assert_eq!(b["type"], "CAP");
            assert_eq!(b["aid"], r.package.as_str(), "{}", r.file);
            assert!(b["appletAids"].as_array().unwrap().iter().any(|a| a == r.applet.as_str()), "{}: {b}", r.file);
            let h = &b["hashes"];
            assert_eq!((b["loadFileSizeWithoutDescriptor"].as_u64().unwrap() as usize, h["sha1WithoutDescriptor"].as_str().unwrap().to_string(), h["sha256WithoutDescriptor"].as_str().unwrap().to_string()), r.without, "{}", r.file);
            assert_eq!((b["loadFileSize"].as_u64().unwrap() as usize, h["sha1"].as_str().unwrap().to_string(), h["sha256"].as_str().unwrap().to_string()), r.with, "{}", r.file);
            // Stored: the same bytes come back, the same hashes on GET.
            let id = b["id"].as_str().unwrap();
            let bin = ts.http.get(ts.url(&format!("/api/v1/executable-load-files/{id}/binary"))).bearer_auth(&t.token).send().await.unwrap();
            assert_eq!(bin.headers()["content-type"], "application/octet-stream");
            let bytes = bin.bytes().await.unwrap();
            assert_eq!(bytes.as_ref(), std::fs::read(tsm_gp::testdata_dir().join("vectors/cap").join(&r.file)).unwrap().as_slice());
            let (s, g) = ts.call("GET", &format!("/api/v1/executable-load-files/{id}"), Some(&t.token), None).await;
            assert_eq!(s, 200);
            assert_eq!(g["hashes"], b["hashes"]);
            assert_eq!(g["importedPackages"], b["importedPackages"]);
        }
        // Package name of the CAP 2.2 file (README: "package name com/javacardos"; the parser
    // gives it in dotted form).
        let (_, list) = ts.call("GET", "/api/v1/executable-load-files", Some(&t.token), None).await;
        assert_eq!(list.as_array().unwrap().len(), rows.len());
        let jc = list.as_array().unwrap().iter().find(|e| e["aid"] == "1122334455").unwrap();
        let (_, g) = ts.call("GET", &format!("/api/v1/executable-load-files/{}", jc["id"].as_str().unwrap()), Some(&t.token), None).await;
        assert_eq!(g["packageName"].as_str().map(|n| n.replace('.', "/")).as_deref(), Some("com/javacardos"), "{g}");
        // The same package version again: conflict.
        assert_err(&ts.upload(&t, "kaoh_helloworld.cap").await, 409, "sp.conflict");
        // Audit: one record per upload.
        let audit = db.store.audit_log().list(t.id.parse().unwrap(), 0, 100).await.unwrap();
        assert_eq!(audit.iter().filter(|a| a.object_type == "load_file").count(), rows.len());
        ts.stop().await;
        db.finish().await;
    }
}

/// A zip archive with STORED entries (for a CAP without a Header component).
fn zip(entries: &[(&str, &[u8])]) -> Vec<u8> {
    fn crc32(d: &[u8]) -> u32 {
        let mut c = 0xFFFF_FFFFu32;
        for &b in d {
            c ^= b as u32;
            for _ in 0..8 {
                c = if c & 1 != 0 { (c >> 1) ^ 0xEDB8_8320 } else { c >> 1 };
            }
        }
        !c
    }
    let (mut out, mut central) = (Vec::new(), Vec::new());
    for (name, data) in entries {
        let off = out.len() as u32;
        let crc = crc32(data);
        let mut h = Vec::new();
        h.extend_from_slice(&0x0403_4b50u32.to_le_bytes());
        h.extend_from_slice(&[20, 0, 0, 0, 0, 0, 0, 0, 0, 0]);
        h.extend_from_slice(&crc.to_le_bytes());
        h.extend_from_slice(&(data.len() as u32).to_le_bytes());
        h.extend_from_slice(&(data.len() as u32).to_le_bytes());
        h.extend_from_slice(&(name.len() as u16).to_le_bytes());
        h.extend_from_slice(&0u16.to_le_bytes());
        out.extend_from_slice(&h);
        out.extend_from_slice(name.as_bytes());
        out.extend_from_slice(data);
        central.extend_from_slice(&0x0201_4b50u32.to_le_bytes());
        central.extend_from_slice(&[20, 0, 20, 0, 0, 0, 0, 0, 0, 0, 0, 0]);
        central.extend_from_slice(&crc.to_le_bytes());
        central.extend_from_slice(&(data.len() as u32).to_le_bytes());
        central.extend_from_slice(&(data.len() as u32).to_le_bytes());
        central.extend_from_slice(&(name.len() as u16).to_le_bytes());
        central.extend_from_slice(&[0; 12]);
        central.extend_from_slice(&off.to_le_bytes());
        central.extend_from_slice(name.as_bytes());
    }
    let cd_off = out.len() as u32;
    out.extend_from_slice(&central);
    out.extend_from_slice(&0x0605_4b50u32.to_le_bytes());
    out.extend_from_slice(&[0, 0, 0, 0]);
    out.extend_from_slice(&(entries.len() as u16).to_le_bytes());
    out.extend_from_slice(&(entries.len() as u16).to_le_bytes());
    out.extend_from_slice(&(central.len() as u32).to_le_bytes());
    out.extend_from_slice(&cd_off.to_le_bytes());
    out.extend_from_slice(&0u16.to_le_bytes());
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_caps_are_refused_and_nothing_is_stored() {
    let good = std::fs::read(tsm_gp::testdata_dir().join("vectors/cap/kaoh_helloworld.cap")).unwrap();
    let mut random = vec![0u8; 3000];
    let mut x = 0x1234_5678u32;
    for b in random.iter_mut() {
        x ^= x << 13;
        x ^= x >> 17;
        x ^= x << 5;
        *b = x as u8;
    }
    // A directory component alone, in a well-formed zip.
    let no_header = zip(&[("com/example/javacard/Directory.cap", &[0x02, 0x00, 0x01, 0x00])]);
    let cases: Vec<(&str, Vec<u8>)> = vec![("truncated", good[..good.len() / 2].to_vec()), ("random bytes", random), ("zip without Header", no_header), ("empty", Vec::new())];
    for db in databases().await {
        let ts = TestServer::start(&db).await;
        let t = ts.provider("acme").await;
        for (what, bytes) in &cases {
            let (s, b) = ts.upload_bytes(&t, bytes.clone()).await;
            assert_eq!(s, 400, "{what}: {b}");
            let code = b["code"].as_str().unwrap();
            assert!(code.starts_with("cap."), "{what}: {b}");
            assert!(!b["message"].as_str().unwrap().is_empty());
            // The parser's own code for the same bytes.
            if !bytes.is_empty() {
                assert_eq!(code, tsm_gp::cap::CapFile::parse(bytes).unwrap_err().code(), "{what}");
            }
            if *what == "zip without Header" {
                assert_eq!(code, "cap.missing_component", "{b}");
            }
        }
        // Wrong content type.
        let resp = ts.http.post(ts.url("/api/v1/executable-load-files")).bearer_auth(&t.token).header("content-type", "text/plain").body(good.clone()).send().await.unwrap();
        assert_eq!(resp.status().as_u16(), 415);
        assert!(db.store.load_files().list(t.id.parse().unwrap()).await.unwrap().is_empty(), "nothing stored");
        assert!(db.store.audit_log().list(t.id.parse().unwrap(), 0, 100).await.unwrap().iter().all(|a| a.object_type != "load_file"));
        ts.stop().await;
        db.finish().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn multipart_upload_and_size_limit() {
    let cap = std::fs::read(tsm_gp::testdata_dir().join("vectors/cap/pysim_test_javacard.cap")).unwrap();
    for db in databases().await {
        let api = ApiConfig { cap_max_bytes: 4096, ..api_config() };
        let ts = TestServer::start_with(&db, api, Config::default()).await;
        let t = ts.provider("acme").await;
        // pysim_test_javacard.cap has 6173 bytes: over the 4096-byte limit, raw and multipart.
        assert_err(&ts.upload_bytes(&t, cap.clone()).await, 413, "request.too_large");
        let boundary = "----tsmtestboundary";
        let form = |file: &[u8]| {
            let mut body = Vec::new();
            body.extend_from_slice(format!("--{boundary}\r\nContent-Disposition: form-data; name=\"elfFilename\"\r\n\r\nhello.cap\r\n").as_bytes());
            body.extend_from_slice(format!("--{boundary}\r\nContent-Disposition: form-data; name=\"elfFile\"; filename=\"x.cap\"\r\nContent-Type: application/octet-stream\r\n\r\n").as_bytes());
            body.extend_from_slice(file);
            body.extend_from_slice(format!("\r\n--{boundary}--\r\n").as_bytes());
            body
        };
        let post = |body: Vec<u8>| {
            ts.http.post(ts.url("/api/v1/executable-load-files")).bearer_auth(&t.token).header("content-type", format!("multipart/form-data; boundary={boundary}")).body(body).send()
        };
        let r = post(form(&cap)).await.unwrap();
        assert_eq!(r.status().as_u16(), 413);
        let small = std::fs::read(tsm_gp::testdata_dir().join("vectors/cap/kaoh_helloworld.cap")).unwrap();
        let r = post(form(&small)).await.unwrap();
        assert_eq!(r.status().as_u16(), 201);
        let b: Value = r.json().await.unwrap();
        assert_eq!(b["fileName"], "hello.cap");
        assert_eq!(b["aid"], "D0D1D2D3D4D501");
        assert_eq!(db.store.load_files().list(t.id.parse().unwrap()).await.unwrap().len(), 1);
        ts.stop().await;
        db.finish().await;
    }
}
