//! Test support for ferrocast integration tests (not published).
//!
//! - [`Node`]: a real `ferrocast` process on free loopback ports, killed on drop.
//! - [`JsonClient`]: a WebSocket client of the native JSON protocol.
//! - [`http_get`] and [`metric`]: read the admin listener.

mod client;
mod http;
mod node;

pub use client::{ClientError, JsonClient};
pub use http::{http_get, metric};
pub use node::Node;

/// How long a test waits for something that should happen promptly.
pub const WAIT: std::time::Duration = std::time::Duration::from_secs(10);
