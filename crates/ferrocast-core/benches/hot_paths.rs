//! Hot paths of a node, without I/O: topic matching, encoding one publication
//! for the JSON protocol, and fan-out of one publication to N local queues.
//!
//! `cargo bench -p ferrocast-core --bench hot_paths`

#![allow(clippy::unwrap_used, missing_docs)]

use std::sync::Arc;

use bytes::Bytes;
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use ferrocast_core::backplane::memory::MemoryBus;
use ferrocast_core::{Delivery, Hub, Namespaces, OutboundQueue, Publication, SubscriptionRegistry};
use ferrocast_protocol::{Topic, TopicFilter, MAX_TOPIC_LEN};

fn topic(s: &str) -> Topic {
    Topic::parse(s, MAX_TOPIC_LEN).unwrap()
}

fn filter(s: &str) -> TopicFilter {
    TopicFilter::parse(s, MAX_TOPIC_LEN).unwrap()
}

fn payload() -> Bytes {
    Bytes::from(format!("{{\"seq\":1,\"pad\":\"{}\"}}", "x".repeat(100)))
}

fn matching(c: &mut Criterion) {
    let t = topic("chat.eu.room42.typing");
    let mut group = c.benchmark_group("topic");
    group.bench_function("parse", |b| {
        b.iter(|| Topic::parse("chat.eu.room42.typing", MAX_TOPIC_LEN))
    });
    for f in ["chat.eu.room42.typing", "chat.*.room42.*", "chat.>"] {
        let f = filter(f);
        group.bench_with_input(BenchmarkId::new("matches", f.as_str()), &f, |b, f| {
            b.iter(|| f.matches(&t))
        });
    }
    group.finish();
}

fn encoding(c: &mut Criterion) {
    let publication = Publication::new(topic("chat.room1"), payload(), Arc::from("node"));
    let mut group = c.benchmark_group("encode");
    group.throughput(Throughput::Elements(1));
    group.bench_function("json_message_128B", |b| {
        b.iter(|| {
            let delivery = Delivery::new(publication.clone());
            delivery.json_frame().len()
        })
    });
    group.finish();
}

fn fan_out(c: &mut Criterion) {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let _guard = runtime.enter();
    let mut group = c.benchmark_group("fan_out");
    for subscribers in [1usize, 100, 1_000] {
        let registry = Arc::new(SubscriptionRegistry::new());
        let bus = MemoryBus::new();
        let backplane = Arc::new(bus.attach(registry.clone()));
        let tasks = TaskTracker::new();
        let shutdown = CancellationToken::new();
        let hub = Hub::start(
            Arc::from("n"),
            registry,
            backplane,
            Namespaces::default(),
            &tasks,
            shutdown.clone(),
        );
        // Queues big enough that the benchmark never closes one as slow; they
        // are drained between iterations by being replaced.
        let queues: Vec<Arc<OutboundQueue>> = (0..subscribers)
            .map(|_| Arc::new(OutboundQueue::new(usize::MAX / 2)))
            .collect();
        for (conn, q) in queues.iter().enumerate() {
            runtime
                .block_on(hub.subscribe(&filter("bench.t"), conn as u64, q.clone()))
                .unwrap();
        }
        group.throughput(Throughput::Elements(subscribers as u64));
        group.bench_with_input(
            BenchmarkId::new("publish_to_local_queues", subscribers),
            &subscribers,
            |b, _| b.iter(|| hub.publish(topic("bench.t"), payload())),
        );
        shutdown.cancel();
    }
    group.finish();
}

criterion_group!(benches, matching, encoding, fan_out);
criterion_main!(benches);
