//! Embeds the browser SDK: every top-level `*.js` file of `js/` and
//! `index.d.ts` (not `test/`, `node_modules/` or `package.json`), so that a
//! new module needs no Rust edit, and a content version over all of them.
//!
//! Writes `$OUT_DIR/embedded.rs`: `FILES`, `(name, bytes)` sorted by name,
//! and `VERSION`, the first 12 hex digits of a SHA-256 over every file's
//! name, length and bytes.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::{env, fs};

use sha2::{Digest, Sha256};

fn main() {
    let manifest = PathBuf::from(env::var_os("CARGO_MANIFEST_DIR").expect("set by cargo"));
    let js = manifest.join("js");
    // The directory's own mtime changes when a file is added or removed.
    println!("cargo:rerun-if-changed=js");
    let mut files = embedded_files(&js);
    files.sort();
    let mut hash = Sha256::new();
    let mut table = String::from("pub(crate) const FILES: &[(&str, &[u8])] = &[\n");
    for name in &files {
        let path = js.join(name);
        println!("cargo:rerun-if-changed=js/{name}");
        let bytes = fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        hash.update(name.as_bytes());
        hash.update((bytes.len() as u64).to_le_bytes());
        hash.update(&bytes);
        let _ = writeln!(
            table,
            "    ({name:?}, include_bytes!({:?})),",
            path.display().to_string()
        );
    }
    table.push_str("];\n");
    let digest = hash.finalize();
    let version: String = digest[..6].iter().map(|b| format!("{b:02x}")).collect();
    let _ = writeln!(table, "pub(crate) const VERSION: &str = {version:?};");
    let out = PathBuf::from(env::var_os("OUT_DIR").expect("set by cargo")).join("embedded.rs");
    fs::write(&out, table).unwrap_or_else(|e| panic!("{}: {e}", out.display()));
}

/// The names of the files to embed; none while `js/` does not exist yet.
fn embedded_files(js: &Path) -> Vec<String> {
    let Ok(entries) = fs::read_dir(js) else {
        return Vec::new();
    };
    entries
        .filter_map(Result::ok)
        .filter(|entry| entry.file_type().is_ok_and(|t| t.is_file()))
        .filter_map(|entry| entry.file_name().into_string().ok())
        .filter(|name| name.ends_with(".js") || name == "index.d.ts")
        .collect()
}
