//! Presence in NATS JetStream: who is subscribed to the topics of
//! namespaces with presence.
//!
//! One stream per namespace with presence, `{prefix}_P_{namespace}`, in
//! memory, created by the first update: every entry is the last message of
//! its own subject `{prefix}-presence.{namespace}.{topic}.{client}` (the
//! client id escaped into one token), its JSON as the payload. The stream
//! keeps one message per subject (`max_messages_per_subject = 1`) for the
//! presence ttl (`max_age`):
//! - adding or refreshing an entry publishes it again;
//! - removing one publishes an empty message over it, which reads skip and
//!   which expires like an entry;
//! - an entry its node stops refreshing is removed by the server when it is
//!   older than the ttl, so a dead node's clients vanish by the server's
//!   clock;
//! - reading a topic reads the last message of each of its subjects with a
//!   consumer made for the read (the same reader as history).
//!
//! Presence needs JetStream like history (nats-server 2.9 or newer) and,
//! with permissions, publish rights on `{prefix}-presence.>`. A server
//! restart loses the streams (memory storage): the next update makes them
//! again and each node's next refresh, within a third of the ttl, writes its
//! entries back.

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use async_nats::jetstream::consumer::DeliverPolicy;
use bytes::Bytes;

use ferrocast_core::backplane::{BackplaneError, PresenceEntry};
use ferrocast_protocol::Topic;

use crate::history::History;

impl History {
    /// Writes one node's presence changes (see the module docs).
    pub(crate) async fn presence_update(
        &self,
        add: Vec<(Topic, PresenceEntry)>,
        remove: Vec<(Topic, String)>,
        ttl: Duration,
    ) -> Result<(), BackplaneError> {
        let namespaces: HashSet<&str> = add
            .iter()
            .map(|(topic, _)| topic.namespace())
            .chain(remove.iter().map(|(topic, _)| topic.namespace()))
            .collect();
        for namespace in &namespaces {
            self.streams
                .ensure(&self.context, self.names.presence_config(namespace, ttl))
                .await?;
        }
        let writes =
            add.iter()
                .map(|(topic, entry)| {
                    // Serializing strings and integers cannot fail.
                    let payload = Bytes::from(serde_json::to_vec(entry).unwrap_or_default());
                    (self.names.presence_subject(topic, &entry.client), payload)
                })
                .chain(remove.iter().map(|(topic, client)| {
                    (self.names.presence_subject(topic, client), Bytes::new())
                }));
        let mut acks = Vec::new();
        let mut outcome = Ok(());
        for (subject, payload) in writes {
            match self.context.publish(subject, payload).await {
                Ok(ack) => acks.push(ack),
                Err(error) => {
                    outcome = Err(self.failed("write presence", &error));
                    break;
                }
            }
        }
        for ack in acks {
            if let Err(error) = ack.await {
                outcome = Err(self.failed("write presence", &error));
            }
        }
        if outcome.is_err() {
            // The stream may be gone (a restarted server): make sure of it
            // again on the next update.
            for namespace in namespaces {
                self.streams.forget(&self.names.presence_stream(namespace));
            }
        }
        outcome
    }

    /// The entries of `topic` that are neither removed nor expired.
    pub(crate) async fn presence_read(
        &self,
        topic: &Topic,
    ) -> Result<Vec<PresenceEntry>, BackplaneError> {
        let stream = self
            .stream(&self.names.presence_stream(topic.namespace()))
            .await?;
        let payloads = self
            .messages(
                &stream,
                &self.names.presence_subjects(topic),
                DeliverPolicy::LastPerSubject,
                "read a presence list",
            )
            .await?;
        let mut entries: Vec<PresenceEntry> = Vec::with_capacity(payloads.len());
        let mut index: HashMap<String, usize> = HashMap::with_capacity(payloads.len());
        // A refresh written while the read runs may reach its consumer after
        // the subject's last message did: the later one stands for the client.
        for payload in payloads {
            if payload.is_empty() {
                continue;
            }
            let entry: PresenceEntry = serde_json::from_slice(&payload).map_err(|error| {
                BackplaneError::Rejected(format!("a presence entry is not valid: {error}"))
            })?;
            match index.get(&entry.client) {
                Some(&at) => entries[at] = entry,
                None => {
                    index.insert(entry.client.clone(), entries.len());
                    entries.push(entry);
                }
            }
        }
        Ok(entries)
    }
}
