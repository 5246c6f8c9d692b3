//! Embeds what the node serves to browsers, so that a new file needs no
//! Rust edit:
//!
//! - the browser SDK: every top-level `*.js` file of `js/` and `index.d.ts`
//!   (not `test/`, `node_modules/` or `package.json`);
//! - the admin UI: every top-level `.html`, `.css`, `.js` and `.svg` file of
//!   `admin/`.
//!
//! Writes `$OUT_DIR/embedded.rs`: `FILES` and `ADMIN_FILES`, `(name, bytes)`
//! sorted by name, and `VERSION` and `ADMIN_VERSION`, the first 12 hex
//! digits of a SHA-256 over every file's name, length and bytes.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::{env, fs};

use sha2::{Digest, Sha256};

fn main() {
    let manifest = PathBuf::from(env::var_os("CARGO_MANIFEST_DIR").expect("set by cargo"));
    let mut out = String::new();
    embed(&mut out, &manifest, "js", "FILES", "VERSION", |name| {
        name.ends_with(".js") || name == "index.d.ts"
    });
    embed(
        &mut out,
        &manifest,
        "admin",
        "ADMIN_FILES",
        "ADMIN_VERSION",
        |name| {
            [".html", ".css", ".js", ".svg"]
                .iter()
                .any(|ext| name.ends_with(ext))
        },
    );
    let path = PathBuf::from(env::var_os("OUT_DIR").expect("set by cargo")).join("embedded.rs");
    fs::write(&path, out).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
}

/// Appends to `out` the table `files` of the files of `dir` that `wanted`
/// names, and their content hash `version`.
fn embed(
    out: &mut String,
    manifest: &Path,
    dir: &str,
    files: &str,
    version: &str,
    wanted: impl Fn(&str) -> bool,
) {
    let root = manifest.join(dir);
    // The directory's own mtime changes when a file is added or removed.
    println!("cargo:rerun-if-changed={dir}");
    let mut names = embedded_files(&root, wanted);
    names.sort();
    let mut hash = Sha256::new();
    let _ = writeln!(out, "pub(crate) const {files}: &[(&str, &[u8])] = &[");
    for name in &names {
        let path = root.join(name);
        println!("cargo:rerun-if-changed={dir}/{name}");
        let bytes = fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        hash.update(name.as_bytes());
        hash.update((bytes.len() as u64).to_le_bytes());
        hash.update(&bytes);
        let _ = writeln!(
            out,
            "    ({name:?}, include_bytes!({:?})),",
            path.display().to_string()
        );
    }
    out.push_str("];\n");
    let digest = hash.finalize();
    let hex: String = digest[..6].iter().map(|b| format!("{b:02x}")).collect();
    let _ = writeln!(out, "pub(crate) const {version}: &str = {hex:?};");
}

/// The names of the files to embed; none while the directory does not exist.
fn embedded_files(dir: &Path, wanted: impl Fn(&str) -> bool) -> Vec<String> {
    let Ok(entries) = fs::read_dir(dir) else {
        return Vec::new();
    };
    entries
        .filter_map(Result::ok)
        .filter(|entry| entry.file_type().is_ok_and(|t| t.is_file()))
        .filter_map(|entry| entry.file_name().into_string().ok())
        .filter(|name| wanted(name))
        .collect()
}
