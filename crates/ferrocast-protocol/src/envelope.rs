//! The backplane envelope (`proto/ferrocast/v1/backplane.proto`), generated
//! with prost. See the `.proto` file for the compatibility rules.

#![allow(missing_docs, unreachable_pub, clippy::all)]

include!(concat!(env!("OUT_DIR"), "/backplane/ferrocast.v1.rs"));

/// The layout version this build writes.
pub const ENVELOPE_VERSION: u32 = 1;
