//! Rust client of ferrocast, the clustered WebSocket publish/subscribe
//! broker.
//!
//! A [`Client`] keeps one WebSocket connection (native JSON protocol,
//! `ferrocast.v1.json`) to one of the nodes it is given, and keeps it up:
//! when the node crashes, drains for a deploy (close code 1012), or the
//! network path goes silent, it reconnects with jittered backoff to the next
//! node and restores every subscription from the last position the
//! application received. In namespaces that keep history the application
//! gets every message exactly once and in order across reconnects; where
//! that is impossible it gets an explicit [`Item::Gap`], never a silent
//! hole. docs/client.md describes the algorithm for clients in any language.
//!
//! ```no_run
//! use ferrocast_client::{Client, Event, Item};
//!
//! # async fn example() -> Result<(), ferrocast_client::Error> {
//! let client = Client::builder([
//!     "ws://node-a:8080/ws",
//!     "ws://node-b:8080/ws",
//!     "ws://node-c:8080/ws",
//! ])
//! .build()?;
//!
//! let mut events = client.events();
//! tokio::spawn(async move {
//!     while let Some(event) = events.recv().await {
//!         if let Event::Disconnected { url, code, reason, retry_in } = event {
//!             eprintln!("lost {url} ({code:?} {reason}); retrying in {retry_in:?}");
//!         }
//!     }
//! });
//!
//! let mut orders = client.subscribe("orders.eu").await?;
//! while let Some(item) = orders.recv().await {
//!     match item {
//!         Item::Message(message) => {
//!             let order: serde_json::Value = message.decode().expect("orders are JSON");
//!             println!("{order} at {:?}", message.position());
//!         }
//!         Item::Gap(_) => println!("orders may be missing: reload the order book"),
//!     }
//! }
//! # Ok(()) }
//! ```

mod backoff;
mod client;
mod driver;
mod error;
mod message;
mod tracker;
mod wire;

pub use client::{Client, ClientBuilder, Events, Subscription};
pub use error::Error;
pub use message::{Event, Gap, Item, Message};

pub use ferrocast_protocol::StreamPosition;
pub use ferrocast_protocol::{Topic, TopicError, TopicFilter};
