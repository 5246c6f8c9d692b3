//! Server API publish rate: `CALLERS` concurrent callers on one HTTP/2
//! connection send `COUNT` unary Publish calls (128-byte JSON payloads) to a
//! running node's gRPC listener; prints calls/s and the latency percentiles.
//!
//! ```text
//! cargo run --release -p ferrocast-api --example api_publish_rate -- http://127.0.0.1:50051 [count] [callers] [topic]
//! ```
//!
//! The node must serve the API without a key (a loopback listener without
//! `--api-key`).

use std::time::{Duration, Instant};

use bytes::Bytes;
use futures::stream::{self, StreamExt};
use hdrhistogram::Histogram;
use tonic::transport::Channel;

use ferrocast_api::pb;
use ferrocast_api::pb::ferrocast_api_client::FerrocastApiClient;

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let url = args
        .next()
        .unwrap_or_else(|| "http://127.0.0.1:50051".into());
    let count: usize = args.next().map_or(Ok(100_000), |a| a.parse())?;
    let callers: usize = args.next().map_or(Ok(64), |a| a.parse())?;
    let topic = args.next().unwrap_or_else(|| "bench.api".into());
    let channel = Channel::from_shared(url)?.connect().await?;
    let client = FerrocastApiClient::new(channel);
    let data = Bytes::from(format!("\"{}\"", "x".repeat(126)));

    let started = Instant::now();
    let latencies: Vec<Result<Duration, tonic::Status>> = stream::iter(0..count)
        .map(|_| {
            let mut client = client.clone();
            let request = pb::PublishRequest {
                topic: topic.clone(),
                data: data.clone(),
                ..Default::default()
            };
            async move {
                let sent = Instant::now();
                client.publish(request).await.map(|_| sent.elapsed())
            }
        })
        .buffer_unordered(callers)
        .collect()
        .await;
    let elapsed = started.elapsed();

    let mut histogram = Histogram::<u64>::new(3)?;
    let mut failed = 0;
    for latency in latencies {
        match latency {
            Ok(latency) => histogram.record(latency.as_micros() as u64)?,
            Err(_) => failed += 1,
        }
    }
    let ms = |q: f64| histogram.value_at_quantile(q) as f64 / 1000.0;
    println!(
        "{count} calls, {callers} callers: {:.0} calls/s, {failed} failed; latency ms p50 {:.2} p99 {:.2} p99.9 {:.2} max {:.2}",
        count as f64 / elapsed.as_secs_f64(),
        ms(0.5),
        ms(0.99),
        ms(0.999),
        histogram.max() as f64 / 1000.0
    );
    Ok(())
}
