//! The server API's Subscribe keeps the promise of docs/api.md — "without gap
//! or duplicate" — when several nodes publish to one history topic at once:
//! two nodes publish concurrently through the API, and a Subscribe on a third
//! node and one on a publishing node must each receive every offset once, in
//! order. A publishing node delivers its own publications locally once their
//! position is known, so they may overtake the other node's that come through
//! the backplane; the subscription component's gate puts them back in order
//! and fills holes from history. (Before the API used that component, the
//! Subscribe on the publishing node saw 435 publications out of order and
//! 611 holes over Redis in one run.)

#![allow(clippy::unwrap_used)]

use std::time::Duration;

use bytes::Bytes;
use futures::StreamExt;
use tonic::metadata::{Ascii, MetadataValue};
use tonic::service::interceptor::InterceptedService;
use tonic::transport::Channel;
use tonic::{Request, Status};

use ferrocast_api::pb;
use ferrocast_api::pb::ferrocast_api_client::FerrocastApiClient;
use ferrocast_testkit::{Cluster, ClusterBuilder, Node};

const KEY: &str = "api-key-of-the-order-tests-0123456789";
/// Publications per publishing node.
const PER_NODE: u64 = 3_000;
/// Publish calls each publishing node has in flight at once.
const IN_FLIGHT: usize = 16;

#[derive(Clone)]
struct Key(MetadataValue<Ascii>);

impl tonic::service::Interceptor for Key {
    fn call(&mut self, mut request: Request<()>) -> Result<Request<()>, Status> {
        request
            .metadata_mut()
            .insert("authorization", self.0.clone());
        Ok(request)
    }
}

type Client = FerrocastApiClient<InterceptedService<Channel, Key>>;

async fn client(node: &Node) -> Client {
    let channel = Channel::from_shared(format!("http://{}", node.grpc))
        .unwrap()
        .connect()
        .await
        .unwrap();
    let key = Key(format!("Bearer {KEY}").parse().unwrap());
    FerrocastApiClient::with_interceptor(channel, key)
}

/// Publishes `PER_NODE` messages on `topic` through `node`'s API, up to
/// `IN_FLIGHT` at a time.
async fn publish_all(node: &Node, topic: &'static str, name: &'static str) {
    let api = client(node).await;
    futures::stream::iter(0..PER_NODE)
        .map(|i| {
            let mut api = api.clone();
            async move {
                let request = pb::PublishRequest {
                    topic: topic.into(),
                    data: Bytes::from(format!("\"{name}-{i}\"")),
                    ..Default::default()
                };
                api.publish(request).await.unwrap();
            }
        })
        .buffer_unordered(IN_FLIGHT)
        .collect::<()>()
        .await;
}

/// Three nodes on `builder`'s backplane, whose `chat` namespace keeps the
/// whole run in its history: two publish, and Subscribe calls on the third
/// and on a publishing node receive.
async fn contiguous_offsets_across_nodes(builder: ClusterBuilder, backplane: &str) {
    let cluster = builder
        .nodes(&["a", "b", "c"])
        .args(&["--api-key", KEY, "--allow-anonymous"])
        .config("[namespaces.chat]\nhistory_size = 10000\nhistory_ttl = \"10m\"\n")
        .start()
        .await;
    let (a, b, c) = (&cluster[0], &cluster[1], &cluster[2]);
    let topic = "chat.order";

    // One subscription on the third node (everything arrives through the
    // backplane), one on a publishing node (its own publications are
    // delivered locally, and may overtake the other node's).
    let mut on_third = subscribe(c, topic).await;
    let mut on_publisher = subscribe(a, topic).await;

    let publishers = async {
        tokio::join!(publish_all(a, topic, "a"), publish_all(b, topic, "b"));
    };
    let ((), third, publisher) = tokio::join!(
        publishers,
        receive(&mut on_third, backplane, "third node"),
        receive(&mut on_publisher, backplane, "publishing node")
    );
    assert_eq!(third, publisher, "{backplane}: one history, one epoch");
}

type Publications = tonic::Streaming<pb::Publication>;

async fn subscribe(node: &Node, topic: &str) -> Publications {
    client(node)
        .await
        .subscribe(pb::SubscribeRequest {
            topic: topic.into(),
            since: None,
        })
        .await
        .unwrap()
        .into_inner()
}

/// Receives both nodes' publications from `stream` and checks that they
/// came each once, in offset order, without a hole; returns their epoch.
async fn receive(stream: &mut Publications, backplane: &str, on: &str) -> String {
    let total = 2 * PER_NODE;
    let mut offsets = Vec::with_capacity(total as usize);
    let mut epochs = std::collections::BTreeSet::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    while (offsets.len() as u64) < total {
        let item = tokio::time::timeout_at(deadline, stream.next())
            .await
            .unwrap_or_else(|_| {
                panic!(
                    "{backplane}, {on}: only {} of {total} publications arrived",
                    offsets.len()
                )
            })
            .expect("the stream ended early")
            .expect("the stream failed");
        let position = item
            .position
            .expect("a history topic's publication has a position");
        epochs.insert(position.epoch);
        offsets.push(position.offset);
    }
    assert_eq!(epochs.len(), 1, "{backplane}, {on}: one history, one epoch");
    let out_of_order = offsets.windows(2).filter(|w| w[1] <= w[0]).count();
    let holes = offsets.windows(2).filter(|w| w[1] > w[0] + 1).count();
    let expected: Vec<u64> = (1..=total).collect();
    assert!(
        out_of_order == 0 && holes == 0 && offsets == expected,
        "{backplane}, {on}: {out_of_order} publications out of order, {holes} holes; \
         every offset must come once, in order"
    );
    // Nothing more: no duplicate after the last one either.
    let extra = tokio::time::timeout(Duration::from_millis(300), stream.next()).await;
    assert!(
        extra.is_err(),
        "{backplane}, {on}: a publication came twice: {extra:?}"
    );
    epochs.into_iter().next().unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backend_subscription_gets_two_nodes_publications_in_order_over_redis() {
    contiguous_offsets_across_nodes(Cluster::redis(), "redis").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backend_subscription_gets_two_nodes_publications_in_order_over_nats() {
    contiguous_offsets_across_nodes(Cluster::nats(), "nats").await;
}
