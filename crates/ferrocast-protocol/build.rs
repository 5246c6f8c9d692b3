//! Generates Rust types from `proto/` with protox (a protobuf compiler in
//! Rust), so that building needs no `protoc` on the machine.
//!
//! Each file gets a directory of its own under `OUT_DIR`: both are in the
//! package `ferrocast.v1`, and prost writes one `ferrocast.v1.rs` per package,
//! so generating them together would put the backplane envelope and the
//! client protocol in one module.

use std::path::PathBuf;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let root = "../../proto";
    let out_dir = PathBuf::from(std::env::var("OUT_DIR")?);
    let files = [
        ("ferrocast/v1/backplane.proto", "backplane"),
        ("ferrocast/v1/client.proto", "client"),
    ];
    for (file, dir) in files {
        println!("cargo:rerun-if-changed={root}/{file}");
        let out = out_dir.join(dir);
        std::fs::create_dir_all(&out)?;
        let descriptors = protox::compile([file], [root])?;
        prost_build::Config::new()
            .bytes(["."])
            .out_dir(&out)
            .compile_fds(descriptors)?;
    }
    Ok(())
}
