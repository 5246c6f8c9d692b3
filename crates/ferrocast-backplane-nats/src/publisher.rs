//! The publish path: a bounded queue and one task that owns the sending side.
//!
//! [`Backplane::publish`](ferrocast_core::backplane::Backplane::publish) must
//! queue a publication before it returns so that publish calls keep their
//! order even when their futures are awaited together. `publish` therefore
//! encodes the envelope on the caller's thread (spreading that work over the
//! runtime) and `try_send`s it into [`QUEUE_CAPACITY`]; it never waits for
//! room: a full queue means NATS cannot keep up and the caller gets
//! `Unavailable` at once.
//!
//! The task takes up to [`MAX_BATCH`] queued publications at a time, hands
//! them to async-nats in order, flushes the socket once for the whole batch
//! and only then resolves their futures. Batches grow by themselves under load
//! (everything queued while a flush is in progress goes into the next batch),
//! which is what makes the rate high: one flush, one wake-up per batch, not per
//! publication.

use std::time::Duration;

use async_nats::client::PublishErrorKind;
use async_nats::{Client, Subject};
use bytes::Bytes;
use tokio::sync::{mpsc, oneshot, watch};

use ferrocast_core::backplane::BackplaneError;

/// Publications queued and not yet handed to NATS, at most.
pub(crate) const QUEUE_CAPACITY: usize = 64 * 1024;
/// Publications handed to NATS per flush, at most.
const MAX_BATCH: usize = 4096;

pub(crate) type Done = oneshot::Sender<Result<(), BackplaneError>>;

/// One encoded publication waiting in the queue.
#[derive(Debug)]
pub(crate) struct Outgoing {
    pub(crate) subject: Subject,
    pub(crate) payload: Bytes,
    pub(crate) done: Done,
}

/// Runs until the queue's sender is dropped (the backplane is dropped).
///
/// A batch fails as a whole with `Unavailable` when the connection is lost
/// while it is being sent (health goes false) and with `Timeout` when it takes
/// longer than `timeout`: async-nats stops taking commands while it
/// reconnects, and the callers must not wait for that. Publications of such a
/// batch that async-nats already took may still be sent after the reconnect
/// (they are never sent twice).
pub(crate) async fn run(
    client: Client,
    mut queue: mpsc::Receiver<Outgoing>,
    mut health: watch::Receiver<bool>,
    timeout: Duration,
) {
    let mut batch = Vec::with_capacity(MAX_BATCH);
    let mut accepted = Vec::with_capacity(MAX_BATCH);
    loop {
        if queue.recv_many(&mut batch, MAX_BATCH).await == 0 {
            return;
        }
        // Popped from the back below: reverse once to keep the call order.
        batch.reverse();
        let outcome = tokio::select! {
            biased;
            outcome = send_batch(&client, &mut batch, &mut accepted) => outcome,
            _ = health.wait_for(|up| !*up) => Err(BackplaneError::Unavailable(
                "NATS connection lost while publishing".to_string(),
            )),
            _ = tokio::time::sleep(timeout) => Err(BackplaneError::Timeout(timeout)),
        };
        match outcome {
            Ok(()) => {
                for done in accepted.drain(..) {
                    let _ = done.send(Ok(()));
                }
            }
            Err(error) => {
                let undone = batch.drain(..).map(|outgoing| outgoing.done);
                for done in accepted.drain(..).chain(undone) {
                    let _ = done.send(Err(error.clone()));
                }
            }
        }
    }
}

/// Hands `batch` (reversed: the next publication is last) to async-nats and
/// flushes. Cancel-safe in the sense the caller needs: every completion
/// sender is either still in `batch`, in `accepted`, or already resolved.
async fn send_batch(
    client: &Client,
    batch: &mut Vec<Outgoing>,
    accepted: &mut Vec<Done>,
) -> Result<(), BackplaneError> {
    while let Some(Outgoing {
        subject,
        payload,
        done,
    }) = batch.pop()
    {
        accepted.push(done);
        if let Err(error) = client.publish(subject, payload).await {
            let error = match error.kind() {
                PublishErrorKind::MaxPayloadExceeded | PublishErrorKind::InvalidSubject => {
                    BackplaneError::Rejected(format!("NATS refused the publication: {error}"))
                }
                PublishErrorKind::Send => {
                    BackplaneError::Unavailable("NATS client is closed".to_string())
                }
            };
            if let Some(done) = accepted.pop() {
                let _ = done.send(Err(error));
            }
        }
    }
    client
        .flush()
        .await
        .map_err(|error| BackplaneError::Unavailable(format!("NATS flush failed: {error}")))
}
